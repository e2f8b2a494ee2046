//! Throttling per webhook: `rateLimit` (deliveries per second) and
//! `maxConcurrency` (requests in flight), measured at the receiver. Held-back
//! deliveries wait, in order per channel, and nothing is lost.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{assert_error, most_within, Answer, Receiver, Store, TestApp};

fn seq(req: &common::Received) -> u64 {
    req.json()["seq"].as_u64().unwrap()
}

/// Asserts each channel's first arrivals came in increasing seq.
fn assert_in_order_per_channel(got: &[common::Received]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for req in got {
        let body = req.json();
        let channel = body["id"].as_str().unwrap().to_owned();
        let s = seq(req);
        if let Some(prev) = last.insert(channel.clone(), s) {
            assert!(prev < s, "{channel}: seq {s} after {prev}");
        }
    }
}

async fn a_webhook_shows_its_throttle_and_keeps_it_unless_told(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let plain = app
        .create_webhook(&key, "https://example.com/a", json!("all"))
        .await;
    assert_eq!(plain["rateLimit"], Value::Null, "unlimited by default");
    assert_eq!(plain["maxConcurrency"], 32);

    let body = json!({"uri": "https://example.com/b", "event": "all",
                      "rateLimit": 50, "maxConcurrency": 2});
    let r = app
        .call("POST", "/v1/webhook", Some(&key), Some(&body))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        (
            r.body["rateLimit"].clone(),
            r.body["maxConcurrency"].clone()
        ),
        (json!(50), json!(2))
    );
    let id = r.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhook/{id}");

    // A PUT without them keeps them.
    let keep = json!({"uri": "https://example.com/b2", "event": "all"});
    let r = app.call("PUT", &path, Some(&key), Some(&keep)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            r.body["rateLimit"].clone(),
            r.body["maxConcurrency"].clone()
        ),
        (json!(50), json!(2))
    );
    // `null` lifts the rate limit; a new cap replaces the old.
    let lift = json!({"uri": "https://example.com/b2", "event": "all",
                      "rateLimit": null, "maxConcurrency": 1000});
    let r = app.call("PUT", &path, Some(&key), Some(&lift)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = app.call("GET", &path, Some(&key), None).await;
    assert_eq!(
        (
            got.body["rateLimit"].clone(),
            got.body["maxConcurrency"].clone()
        ),
        (Value::Null, json!(1000))
    );
}

async fn a_bad_rate_limit_or_concurrency_is_refused_with_a_400_naming_it(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    for (field, value, code) in [
        ("rateLimit", json!(0), "invalid_rate_limit"),
        ("rateLimit", json!(-5), "invalid_rate_limit"),
        ("rateLimit", json!(2.5), "invalid_rate_limit"),
        ("rateLimit", json!("50"), "invalid_rate_limit"),
        ("maxConcurrency", json!(0), "invalid_max_concurrency"),
        ("maxConcurrency", json!(1001), "invalid_max_concurrency"),
        ("maxConcurrency", json!(-1), "invalid_max_concurrency"),
    ] {
        let mut body = json!({"uri": "https://example.com/a", "event": "all"});
        body[field] = value.clone();
        let r = app
            .call("POST", "/v1/webhook", Some(&key), Some(&body))
            .await;
        assert_error(&r, 400, &format!("{field}: {value}"));
        assert_eq!(r.body["error"]["code"], code, "{field}: {value}");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    let list = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(
        list.body["data"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
}

async fn a_rate_limit_of_50_spreads_a_burst_of_2000_over_time_in_order(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("tv").await;
    let body = json!({"uri": receiver.url, "event": "all", "rateLimit": 50});
    let r = app
        .call("POST", "/v1/webhook", Some(&key), Some(&body))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    const EVENTS: u64 = 2000;
    // Sent as fast as the broker accepts them, over 20 channels.
    let sends = (0..EVENTS).map(|s| {
        let app = &app;
        let app_id = &app_id;
        async move {
            let r = app
                .send_event(
                    app_id,
                    "channel_live",
                    json!({"id": format!("ch-{}", s % 20), "seq": s}),
                )
                .await;
            assert_eq!(r.status, 202, "{:?}", r.body);
        }
    });
    // One channel's events one after another, each after the previous 202.
    let mut by_channel: Vec<Vec<_>> = (0..20).map(|_| Vec::new()).collect();
    for (s, send) in sends.enumerate() {
        by_channel[s % 20].push(send);
    }
    futures_util::future::join_all(by_channel.into_iter().map(|sends| async move {
        for send in sends {
            send.await;
        }
    }))
    .await;
    let started = Instant::now();
    let got = receiver
        .wait_for(EVENTS as usize, Duration::from_secs(90))
        .await;
    assert_eq!(got.len(), EVENTS as usize, "every delivery arrives");
    let arrivals: Vec<Instant> = got.iter().map(|r| r.at).collect();
    let most = most_within(&arrivals, Duration::from_secs(1));
    eprintln!(
        "{store:?}: 2000 deliveries at rateLimit 50 in {:?}; at most {most} in any second",
        started.elapsed()
    );
    assert!(
        most <= 55,
        "{most} deliveries within one second, over 50 + 10%"
    );
    assert!(
        most >= 40,
        "{most} in the busiest second: the limit is not used"
    );
    assert_in_order_per_channel(&got);
    let throttled = webhook_broker::metrics::metrics()
        .deliveries_throttled
        .get();
    assert!(throttled >= 1000, "held-back deliveries are counted");
    // The wait was not an attempt: each delivery succeeded at its first.
    let d = app
        .settled_delivery(
            &key,
            r.body["id"].as_str().unwrap(),
            got[1999].header("webhook-id").unwrap(),
        )
        .await;
    assert_eq!(
        d.body["attempts"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        d.body
    );
}

async fn a_max_concurrency_of_2_keeps_at_most_2_requests_open(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let hold = Duration::from_millis(150);
    let receiver = Receiver::start_with(move |_, _| Answer::status(204).after(hold));
    let (app_id, key) = app.create_app("tv").await;
    let body = json!({"uri": receiver.url, "event": "all", "maxConcurrency": 2});
    let r = app
        .call("POST", "/v1/webhook", Some(&key), Some(&body))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // 30 channels: without the cap, 30 requests would be open at once.
    for s in 0..30u64 {
        let r = app
            .send_event(
                &app_id,
                "channel_live",
                json!({"id": format!("ch-{s}"), "seq": s}),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let got = receiver.wait_for(30, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 30);
    // Each request stays open for `hold`; a third can only arrive once one
    // of two open ones is answered.
    let arrivals: Vec<Instant> = got.iter().map(|r| r.at).collect();
    let most = most_within(&arrivals, hold - Duration::from_millis(20));
    assert!(
        most <= 2,
        "{most} requests open at once with maxConcurrency 2"
    );
    assert_eq!(most, 2, "the cap of 2 is used");
}

on_both_stores!(
    a_webhook_shows_its_throttle_and_keeps_it_unless_told,
    a_bad_rate_limit_or_concurrency_is_refused_with_a_400_naming_it,
    a_rate_limit_of_50_spreads_a_burst_of_2000_over_time_in_order,
    a_max_concurrency_of_2_keeps_at_most_2_requests_open,
);
