//! The delivery log and replay endpoints (list, inspect, retry, recover),
//! their tenant isolation, and retention, on SQLite and MariaDB.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};

use common::{assert_error, Answer, Received, Receiver, Reply, Store, TestApp, TestDb};
use webhook_broker::actors::janitor::{PruneNow, Pruned};
use webhook_broker::db::models::{AttemptRow, DeliveryRow, EventRow};
use webhook_broker::db::schema::{deliveries, delivery_attempts, events, resent_deliveries};
use webhook_broker::db::{now_ms, DbConn};
use webhook_broker::domain::DeliveryStatus;

const SETTLE: Duration = Duration::from_secs(10);

async fn list(app: &TestApp, key: &str, webhook: &str, query: &str) -> Reply {
    app.call(
        "GET",
        &format!("/v1/webhook/{webhook}/deliveries{query}"),
        Some(key),
        None,
    )
    .await
}

async fn retry(app: &TestApp, key: &str, webhook: &str, delivery: &str) -> Reply {
    app.call(
        "POST",
        &format!("/v1/webhook/{webhook}/deliveries/{delivery}/retry"),
        Some(key),
        None,
    )
    .await
}

async fn recover(app: &TestApp, key: &str, webhook: &str, body: &Value) -> Reply {
    app.call(
        "POST",
        &format!("/v1/webhook/{webhook}/recover"),
        Some(key),
        Some(body),
    )
    .await
}

/// The ids of a list answer's `data`, in order.
fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {page:?}"))
        .iter()
        .map(|d| d["id"].as_str().expect("string id").to_owned())
        .collect()
}

fn webhook_id_of(req: &Received) -> String {
    req.header("webhook-id").expect("webhook-id").to_owned()
}

/// (status, attempts) of every delivery of a webhook, by id.
fn states(app: &TestApp, webhook: &str) -> Vec<(String, String, i32)> {
    deliveries::table
        .filter(deliveries::webhook_id.eq(webhook))
        .order(deliveries::id)
        .select((deliveries::id, deliveries::status, deliveries::attempts))
        .load(&mut *app.conn())
        .unwrap()
}

fn state_of(app: &TestApp, id: &str) -> (String, i32) {
    deliveries::table
        .find(id)
        .select((deliveries::status, deliveries::attempts))
        .first(&mut *app.conn())
        .expect("delivery row")
}

fn count_of(states: &[(String, String, i32)], status: &str, attempts: i32) -> usize {
    states
        .iter()
        .filter(|(_, s, a)| s == status && *a == attempts)
        .count()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v:?}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const DELIVERY_FIELDS: [&str; 11] = [
    "id",
    "eventId",
    "event",
    "channelId",
    "status",
    "attempts",
    "lastStatusCode",
    "lastError",
    "nextAttemptAt",
    "createdAt",
    "deliveredAt",
];

/// One event sent for the log tests: what the broker answered and when.
struct Sent {
    event_id: String,
    delivery_id: String,
    before: i64,
    after: i64,
}

/// A webhook with four deliveries in every state, oldest first:
/// 0 succeeded (channel "a"), 1 failed (channel 7), 2 pending (503 with
/// Retry-After: 3600, channel "p"), 3 succeeded (no channel).
struct FourOutcomes {
    app: TestApp,
    key: String,
    webhook: String,
    sent: Vec<Sent>,
}

async fn four_outcomes(store: Store) -> Option<FourOutcomes> {
    let db = Arc::new(TestDb::new(store)?);
    let app = TestApp::spawn_with(db, |c| {
        c.retry_schedule = vec![Duration::from_millis(100)];
    })
    .await;
    let receiver = Receiver::start_with(|req, _| match req.json()["mode"].as_str() {
        Some("fail") => Answer::status(500).body("broken"),
        Some("wait") => Answer::status(503).header("Retry-After", "3600"),
        _ => Answer::status(200).body("thanks"),
    });
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let specs = [
        ("channel_live", json!({"id": "a", "mode": "ok", "seq": 0})),
        ("channel_stop", json!({"id": 7, "mode": "fail", "seq": 1})),
        (
            "channel_ended",
            json!({"id": "p", "mode": "wait", "seq": 2}),
        ),
        ("channel_live", json!({"mode": "ok", "seq": 3})),
    ];
    let mut accepted = Vec::new();
    for (event, channel) in specs {
        let before = now_ms();
        let r = app.send_event(&app_id, event, channel).await;
        let after = now_ms();
        assert_eq!(r.status, 202, "{:?}", r.body);
        assert_eq!(r.body["deliveries"], 1);
        accepted.push((r.body["id"].as_str().unwrap().to_owned(), before, after));
        // Distinct creation times, so "newest first" has one answer.
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    // 1 + 2 + 1 + 1 requests.
    let got = receiver.wait_for(5, SETTLE).await;
    assert_eq!(got.len(), 5);
    let sent = accepted
        .into_iter()
        .enumerate()
        .map(|(seq, (event_id, before, after))| Sent {
            event_id,
            delivery_id: got
                .iter()
                .find(|r| r.json()["seq"] == seq)
                .map(webhook_id_of)
                .unwrap(),
            before,
            after,
        })
        .collect();
    assert!(
        common::eventually(SETTLE, || {
            let s = states(&app, &webhook);
            count_of(&s, "succeeded", 1) == 2
                && count_of(&s, "failed", 2) == 1
                && count_of(&s, "pending", 1) == 1
        })
        .await,
        "{:?}",
        states(&app, &webhook)
    );
    Some(FourOutcomes {
        app,
        key,
        webhook,
        sent,
    })
}

async fn the_log_lists_every_field_of_every_delivery_newest_first(store: Store) {
    let Some(FourOutcomes {
        app,
        key,
        webhook,
        sent,
    }) = four_outcomes(store).await
    else {
        return;
    };
    let r = list(&app, &key, &webhook, "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["total"], 4);
    assert_eq!(r.body["length"], 4);
    assert_eq!(r.body["page"], 0);
    let newest_first: Vec<String> = sent.iter().rev().map(|s| s.delivery_id.clone()).collect();
    assert_eq!(ids(&r.body), newest_first);

    let data = r.body["data"].as_array().unwrap();
    let item = |seq: usize| &data[3 - seq];
    for (seq, s) in sent.iter().enumerate() {
        let d = item(seq);
        assert_eq!(keys(d), set(&DELIVERY_FIELDS), "{d:?}");
        assert_eq!(d["id"], s.delivery_id.as_str());
        assert_eq!(d["eventId"], s.event_id.as_str());
        let created = d["createdAt"].as_i64().expect("createdAt is a number");
        assert!(
            (s.before..=s.after).contains(&created),
            "createdAt {created} not within the send [{}, {}]",
            s.before,
            s.after
        );
    }

    let now = now_ms();
    let (ok, failed, pending, no_channel) = (item(0), item(1), item(2), item(3));

    assert_eq!(ok["event"], "channel_live");
    assert_eq!(ok["channelId"], "a");
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["lastStatusCode"], 200);
    assert_eq!(ok["lastError"], Value::Null);
    assert_eq!(ok["nextAttemptAt"], Value::Null);
    let delivered = ok["deliveredAt"].as_i64().expect("deliveredAt set");
    assert!(delivered >= ok["createdAt"].as_i64().unwrap() && delivered <= now);

    assert_eq!(failed["event"], "channel_stop");
    assert_eq!(failed["channelId"], "7", "a numeric channel id as a string");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["lastStatusCode"], 500);
    assert!(
        failed["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{failed:?}"
    );
    assert_eq!(failed["nextAttemptAt"], Value::Null);
    assert_eq!(failed["deliveredAt"], Value::Null);

    assert_eq!(pending["event"], "channel_ended");
    assert_eq!(pending["channelId"], "p");
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["attempts"], 1);
    assert_eq!(pending["lastStatusCode"], 503);
    assert!(
        pending["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{pending:?}"
    );
    let next = pending["nextAttemptAt"]
        .as_i64()
        .expect("nextAttemptAt set");
    let created = pending["createdAt"].as_i64().unwrap();
    assert!(
        next >= created + 3_600_000 && next <= now + 3_600_000,
        "Retry-After: 3600 puts the next attempt an hour out, not at {next} (created {created})"
    );
    assert_eq!(pending["deliveredAt"], Value::Null);

    assert_eq!(no_channel["channelId"], Value::Null);
    assert_eq!(no_channel["status"], "succeeded");
    assert!(no_channel["deliveredAt"].is_i64());

    // Each delivery reads back the same on its own, plus its attempts.
    for d in data {
        let one = app
            .delivery(&key, &webhook, d["id"].as_str().unwrap())
            .await;
        assert_eq!(one.status, 200, "{:?}", one.body);
        let mut without = one.body.clone();
        let attempts = without.as_object_mut().unwrap().remove("attempts").unwrap();
        let mut listed = d.clone();
        listed.as_object_mut().unwrap().remove("attempts");
        assert_eq!(without, listed);
        assert_eq!(
            attempts.as_array().unwrap().len() as i64,
            d["attempts"].as_i64().unwrap()
        );
    }
}

async fn the_log_is_paginated_and_filtered_by_status(store: Store) {
    let Some(FourOutcomes {
        app,
        key,
        webhook,
        sent,
    }) = four_outcomes(store).await
    else {
        return;
    };
    let id = |seq: usize| sent[seq].delivery_id.clone();

    for (query, expected, total, page) in [
        ("?length=1", vec![id(3)], 4, 0),
        ("?length=1&page=3", vec![id(0)], 4, 3),
        ("?length=2&page=1", vec![id(1), id(0)], 4, 1),
        ("?length=3&page=1", vec![id(0)], 4, 1),
        ("?length=100", vec![id(3), id(2), id(1), id(0)], 4, 0),
        ("?length=1&page=4", vec![], 4, 4),
        ("?page=1000", vec![], 4, 1000),
        ("?status=pending", vec![id(2)], 1, 0),
        ("?status=failed", vec![id(1)], 1, 0),
        ("?status=succeeded", vec![id(3), id(0)], 2, 0),
        ("?status=succeeded&length=1&page=1", vec![id(0)], 2, 1),
        ("?status=failed&page=1", vec![], 1, 1),
    ] {
        let r = list(&app, &key, &webhook, query).await;
        assert_eq!(r.status, 200, "{query}: {:?}", r.body);
        assert_eq!(ids(&r.body), expected, "{query}");
        assert_eq!(r.body["length"], expected.len(), "{query}");
        assert_eq!(r.body["total"], total, "{query}");
        assert_eq!(r.body["page"], page, "{query}");
    }

    for query in [
        "?length=0",
        "?length=101",
        "?length=-1",
        "?length=abc",
        "?page=-1",
        "?page=abc",
        "?page=1.5",
        "?status=delivered",
        "?status=all",
        "?status=failed,pending",
    ] {
        let r = list(&app, &key, &webhook, query).await;
        assert_error(&r, 400, &format!("GET deliveries{query}"));
    }
}

async fn an_attempt_log_keeps_each_attempt_in_order_with_a_4_kib_response_body(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_with(|_, n| {
        if n == 0 {
            Answer::status(500)
                .body("x".repeat(10_000))
                .after(Duration::from_millis(60))
        } else {
            Answer::status(200).body("ok")
        }
    });
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = now_ms();
    app.send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    let got = receiver.wait_for(2, SETTLE).await;
    assert_eq!(got.len(), 2);
    let id = webhook_id_of(&got[0]);
    assert!(common::eventually(SETTLE, || state_of(&app, &id) == ("succeeded".into(), 2)).await);

    let r = app.delivery(&key, &webhook, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut fields = set(&DELIVERY_FIELDS);
    fields.insert("attempts".into());
    assert_eq!(keys(&r.body), fields);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(r.body["lastStatusCode"], 200);
    assert_eq!(r.body["lastError"], Value::Null);

    let attempts = r.body["attempts"].as_array().expect("attempts array");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let attempt_fields = set(&[
        "attempt",
        "at",
        "durationMs",
        "statusCode",
        "error",
        "responseBody",
    ]);
    for a in attempts {
        assert_eq!(keys(a), attempt_fields, "{a:?}");
    }
    let (first, second) = (&attempts[0], &attempts[1]);
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["statusCode"], 500);
    assert!(
        first["error"].as_str().is_some_and(|e| e.contains("500")),
        "{first:?}"
    );
    let kept = first["responseBody"].as_str().expect("response body kept");
    assert_eq!(kept.len(), 4096, "10 000 bytes are kept as 4 KiB");
    assert_eq!(kept, "x".repeat(4096));
    assert!(
        first["durationMs"].as_i64().unwrap() >= 50,
        "the receiver took 60 ms: {first:?}"
    );

    assert_eq!(second["attempt"], 2);
    assert_eq!(second["statusCode"], 200);
    assert_eq!(second["error"], Value::Null);
    assert_eq!(second["responseBody"], "ok");
    assert!(second["durationMs"].as_i64().unwrap() >= 0);

    let (at1, at2) = (
        first["at"].as_i64().unwrap(),
        second["at"].as_i64().unwrap(),
    );
    assert!(at1 >= before && at1 >= r.body["createdAt"].as_i64().unwrap());
    // 60 ms of answer, then the 200 ms (±20%) retry delay.
    assert!(at2 - at1 >= 150, "attempts at {at1} and {at2}");
    assert!(r.body["deliveredAt"].as_i64().unwrap() >= at2);
}

async fn a_multibyte_response_body_is_cut_to_at_most_4096_bytes_of_what_was_sent(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    // 3 333 three-byte characters and one byte: the 4 096th byte falls
    // inside a character.
    let body = format!("{}a", "€".repeat(3333));
    assert_eq!(body.len(), 10_000);
    let answer = body.clone();
    let receiver = Receiver::start_with(move |_, _| Answer::status(200).body(answer.clone()));
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(1, SETTLE).await;
    let id = webhook_id_of(&got[0]);
    assert!(common::eventually(SETTLE, || state_of(&app, &id) == ("succeeded".into(), 1)).await);
    let r = app.delivery(&key, &webhook, &id).await;
    let kept = r.body["attempts"][0]["responseBody"]
        .as_str()
        .expect("response body kept");
    assert!(
        kept.len() <= 4096,
        "kept {} bytes, more than 4 KiB (ends with {:?})",
        kept.len(),
        kept.chars().last()
    );
    assert!(
        body.starts_with(kept),
        "the kept body is not a prefix of what the receiver sent (ends with {:?})",
        kept.chars().last()
    );
    assert!(kept.len() >= 4094, "cut at the last whole character");
}

async fn a_connection_error_attempt_has_no_status_code_and_an_error(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(50)];
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    assert!(
        common::eventually(SETTLE, || {
            let s = states(&app, &webhook);
            s.len() == 1 && s[0].1 == "failed" && s[0].2 == 2
        })
        .await
    );
    let id = states(&app, &webhook)[0].0.clone();
    let r = app.delivery(&key, &webhook, &id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["lastStatusCode"], Value::Null);
    assert!(r.body["lastError"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(r.body["deliveredAt"], Value::Null);
    assert_eq!(r.body["nextAttemptAt"], Value::Null);
    let attempts = r.body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["statusCode"], Value::Null, "{a:?}");
        assert!(a["error"].as_str().is_some_and(|e| !e.is_empty()), "{a:?}");
        assert_eq!(a["responseBody"], Value::Null, "{a:?}");
    }
}

async fn retry_sends_a_failed_or_succeeded_delivery_again_with_the_same_id_and_body(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[500, 500, 500]);
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&app_id, "channel_stop", json!({"id": "r", "n": 1}))
        .await;
    let got = receiver.wait_for(3, SETTLE).await;
    assert_eq!(got.len(), 3);
    let id = webhook_id_of(&got[0]);
    assert!(common::eventually(SETTLE, || state_of(&app, &id) == ("failed".into(), 3)).await);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3, "nothing more unless asked");

    // A failed delivery.
    let r = retry(&app, &key, &webhook, &id).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let got = receiver.wait_for(4, SETTLE).await;
    assert_eq!(got.len(), 4);
    assert_eq!(webhook_id_of(&got[3]), id);
    assert_eq!(got[3].body, got[0].body);
    assert!(common::eventually(SETTLE, || state_of(&app, &id) == ("succeeded".into(), 4)).await);
    let d = app.delivery(&key, &webhook, &id).await.body;
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["lastStatusCode"], 204);
    assert_eq!(d["lastError"], Value::Null);
    let first_delivered = d["deliveredAt"].as_i64().expect("deliveredAt");
    let codes: Vec<Value> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["statusCode"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(500), json!(500), json!(204)]);

    // A succeeded one.
    let r = retry(&app, &key, &webhook, &id).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let got = receiver.wait_for(5, SETTLE).await;
    assert_eq!(got.len(), 5);
    assert_eq!(webhook_id_of(&got[4]), id);
    assert_eq!(got[4].body, got[0].body);
    assert!(common::eventually(SETTLE, || state_of(&app, &id) == ("succeeded".into(), 5)).await);
    let d = app.delivery(&key, &webhook, &id).await.body;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 5);
    assert!(d["deliveredAt"].as_i64().unwrap() >= first_delivered);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 5, "one attempt per retry");
}

async fn retry_of_a_pending_delivery_answers_409_and_of_an_unknown_one_404(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let receiver = Receiver::start_scripted(&[500]);
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&app_id, "channel_live", json!({"id": "p"}))
        .await;
    let got = receiver.wait_for(1, SETTLE).await;
    let id = webhook_id_of(&got[0]);
    assert!(common::eventually(SETTLE, || state_of(&app, &id) == ("pending".into(), 1)).await);

    let r = retry(&app, &key, &webhook, &id).await;
    assert_error(&r, 409, "retry of a pending delivery");
    let r = retry(&app, &key, &webhook, "msg_0000000000000000000000000000").await;
    assert_error(&r, 404, "retry of an unknown delivery");
    let r = app
        .delivery(&key, &webhook, "msg_0000000000000000000000000000")
        .await;
    assert_error(&r, 404, "an unknown delivery");
    let r = retry(&app, &key, "wh_unknown", &id).await;
    assert_error(&r, 404, "retry under an unknown webhook");
    let r = list(&app, &key, "wh_unknown", "").await;
    assert_error(&r, 404, "the log of an unknown webhook");

    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a refused retry sends nothing"
    );
    assert_eq!(state_of(&app, &id), ("pending".into(), 1));
}

async fn recover_resends_only_failed_deliveries_since_then_in_channel_order(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(50)];
    })
    .await;
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let receiver = Receiver::start_with(move |req, _| {
        if req.json()["id"] == "ok" || h.load(Ordering::SeqCst) {
            Answer::status(200)
        } else {
            Answer::status(500)
        }
    });
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A failure from before `since`.
    app.send_event(&app_id, "channel_live", json!({"id": "old"}))
        .await;
    assert!(
        common::eventually(SETTLE, || count_of(&states(&app, &webhook), "failed", 2)
            == 1)
        .await
    );
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;

    // Five events of channel c1, all failing, and one success between them.
    let kinds = ["channel_live", "channel_stop", "channel_ended"];
    for seq in 0..5 {
        let r = app
            .send_event(&app_id, kinds[seq % 3], json!({"id": "c1", "seq": seq}))
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        if seq == 2 {
            app.send_event(&app_id, "channel_live", json!({"id": "ok"}))
                .await;
        }
    }
    assert!(
        common::eventually(SETTLE, || {
            let s = states(&app, &webhook);
            count_of(&s, "failed", 2) == 6 && count_of(&s, "succeeded", 1) == 1
        })
        .await,
        "{:?}",
        states(&app, &webhook)
    );
    let first_tries = receiver.received();
    let id_of_seq = |seq: usize| {
        first_tries
            .iter()
            .find(|r| r.json()["id"] == "c1" && r.json()["seq"] == seq)
            .map(webhook_id_of)
            .unwrap()
    };
    let since = app.delivery(&key, &webhook, &id_of_seq(0)).await.body["createdAt"]
        .as_i64()
        .unwrap();
    let old = webhook_id_of(&first_tries[0]);
    let old_created = app.delivery(&key, &webhook, &old).await.body["createdAt"]
        .as_i64()
        .unwrap();
    assert!(old_created < since);

    healthy.store(true, Ordering::SeqCst);
    let before = receiver.received().len();
    let r = recover(&app, &key, &webhook, &json!({ "since": since })).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body, json!({"requeued": 5}));
    receiver.wait_for(before + 5, SETTLE).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let again = receiver.received()[before..].to_vec();
    let seqs: Vec<Value> = again
        .iter()
        .map(|r| json!([r.json()["id"], r.json()["seq"]]))
        .collect();
    assert_eq!(
        seqs,
        (0..5).map(|s| json!(["c1", s])).collect::<Vec<_>>(),
        "only c1's failed events, in acceptance order"
    );
    for (seq, req) in again.iter().enumerate() {
        assert_eq!(webhook_id_of(req), id_of_seq(seq), "same webhook-id");
    }
    assert!(
        common::eventually(SETTLE, || {
            let s = states(&app, &webhook);
            count_of(&s, "succeeded", 3) == 5 && count_of(&s, "failed", 2) == 1
        })
        .await,
        "{:?}",
        states(&app, &webhook)
    );
    assert_eq!(state_of(&app, &old), ("failed".into(), 2));

    // Nothing failed since then any more; from 0 the old one counts.
    let r = recover(&app, &key, &webhook, &json!({ "since": since })).await;
    assert_eq!(
        (r.status.as_u16(), r.body.clone()),
        (202, json!({"requeued": 0}))
    );
    let r = recover(&app, &key, &webhook, &json!({ "since": 0 })).await;
    assert_eq!(
        (r.status.as_u16(), r.body.clone()),
        (202, json!({"requeued": 1}))
    );
    let got = receiver.wait_for(before + 6, SETTLE).await;
    assert_eq!(got.len(), before + 6);
    assert_eq!(webhook_id_of(&got[before + 5]), old);
}

async fn recover_refuses_a_negative_since_with_400_and_a_missing_one_with_422(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let webhook = app
        .create_webhook(&key, "https://example.com/hook", json!("all"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = recover(&app, &key, &webhook, &json!({"since": -1})).await;
    assert_error(&r, 400, "since -1");
    for body in [
        json!({}),
        json!({"since": "yesterday"}),
        json!({"since": null}),
    ] {
        let r = recover(&app, &key, &webhook, &body).await;
        assert_error(&r, 422, &format!("recover {body}"));
    }
    let r = recover(&app, &key, &webhook, &json!({"since": now_ms() + 60_000})).await;
    assert_eq!((r.status.as_u16(), r.body), (202, json!({"requeued": 0})));
    let r = recover(&app, &key, "wh_unknown", &json!({"since": 0})).await;
    assert_error(&r, 404, "recover of an unknown webhook");
}

async fn another_app_and_another_webhook_get_404_for_a_webhooks_deliveries(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(50)];
    })
    .await;
    let (failing, fine, other) = (
        Receiver::start_with(|_, _| Answer::status(500)),
        Receiver::start(),
        Receiver::start(),
    );
    let (a_id, a_key) = app.create_app("a").await;
    let (b_id, b_key) = app.create_app("b").await;
    let x = app.create_webhook(&a_key, &failing.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let y = app.create_webhook(&a_key, &fine.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let z = app.create_webhook(&b_key, &other.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&a_id, "channel_live", json!({"id": "a"}))
        .await;
    app.send_event(&b_id, "channel_live", json!({"id": "b"}))
        .await;
    assert!(
        common::eventually(SETTLE, || {
            count_of(&states(&app, &x), "failed", 2) == 1
                && count_of(&states(&app, &y), "succeeded", 1) == 1
                && count_of(&states(&app, &z), "succeeded", 1) == 1
        })
        .await
    );
    let dx = states(&app, &x)[0].0.clone();
    let dy = states(&app, &y)[0].0.clone();
    let sent_to_x = failing.received().len();

    // App B, on A's webhook.
    assert_error(&list(&app, &b_key, &x, "").await, 404, "B lists X");
    assert_error(&app.delivery(&b_key, &x, &dx).await, 404, "B reads dX");
    assert_error(&retry(&app, &b_key, &x, &dx).await, 404, "B retries dX");
    let r = recover(&app, &b_key, &x, &json!({"since": 0})).await;
    assert_error(&r, 404, "B recovers X");
    // App B, A's delivery under its own webhook.
    assert_error(
        &app.delivery(&b_key, &z, &dx).await,
        404,
        "B reads dX under Z",
    );
    assert_error(
        &retry(&app, &b_key, &z, &dx).await,
        404,
        "B retries dX under Z",
    );
    let r = list(&app, &b_key, &z, "").await;
    assert_eq!(r.body["total"], 1);
    assert!(!ids(&r.body).contains(&dx));

    // App A, X's delivery under its other webhook Y.
    assert_error(&app.delivery(&a_key, &y, &dx).await, 404, "dX under Y");
    assert_error(&retry(&app, &a_key, &y, &dx).await, 404, "retry dX under Y");
    let r = list(&app, &a_key, &y, "").await;
    assert_eq!(ids(&r.body), vec![dy.clone()]);
    let r = recover(&app, &a_key, &y, &json!({"since": 0})).await;
    assert_eq!(r.body, json!({"requeued": 0}), "X's failure is not Y's");

    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(failing.received().len(), sent_to_x, "nothing resent to X");
    assert_eq!(fine.received().len(), 1);
    assert_eq!(state_of(&app, &dx), ("failed".into(), 2));
    // The owner still sees it.
    assert_eq!(app.delivery(&a_key, &x, &dx).await.status, 200);
}

fn row_counts(app: &TestApp) -> (i64, i64, i64) {
    let mut conn = app.conn();
    (
        deliveries::table.count().get_result(&mut *conn).unwrap(),
        delivery_attempts::table
            .count()
            .get_result(&mut *conn)
            .unwrap(),
        events::table.count().get_result(&mut *conn).unwrap(),
    )
}

async fn retention_prunes_succeeded_deliveries_and_orphaned_events_but_keeps_failed_and_pending(
    store: Store,
) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retention = Duration::ZERO;
        c.retry_schedule = vec![Duration::from_millis(50)];
    })
    .await;
    let ok = Receiver::start();
    let failing = Receiver::start_with(|_, _| Answer::status(500));
    let waiting = Receiver::start_with(|_, _| Answer::status(503).header("Retry-After", "3600"));
    let (app_id, key) = app.create_app("a").await;
    let (lonely_app, _) = app.create_app("no webhooks").await;
    let ws = app.create_webhook(&key, &ok.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wf = app
        .create_webhook(&key, &failing.url, json!("channel_stop"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wp = app
        .create_webhook(&key, &waiting.url, json!("channel_ended"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut event_ids = Vec::new();
    for event in [
        "channel_live",
        "channel_live",
        "channel_stop",
        "channel_ended",
    ] {
        let r = app.send_event(&app_id, event, json!({"id": event})).await;
        event_ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let r = app
        .send_event(&lonely_app, "channel_live", json!({"id": 1}))
        .await;
    assert_eq!(r.body["deliveries"], 0);
    let orphan = r.body["id"].as_str().unwrap().to_owned();
    assert!(
        common::eventually(SETTLE, || {
            count_of(&states(&app, &ws), "succeeded", 1) == 4
                && count_of(&states(&app, &wf), "failed", 2) == 1
                && count_of(&states(&app, &wp), "pending", 1) == 1
        })
        .await
    );
    assert_eq!(row_counts(&app), (6, 4 + 2 + 1, 5));
    let kept_failed = states(&app, &wf)[0].0.clone();
    let kept_pending = states(&app, &wp)[0].0.clone();
    actix_web::rt::time::sleep(Duration::from_millis(10)).await;

    let pruned = app.broker.janitor.send(PruneNow).await.unwrap().unwrap();
    assert_eq!(
        pruned,
        Pruned {
            deliveries: 4,
            events: 3,
            idempotency_keys: 0,
        }
    );

    let mut conn = app.conn();
    let left: Vec<(String, String)> = deliveries::table
        .order(deliveries::id)
        .select((deliveries::id, deliveries::status))
        .load(&mut *conn)
        .unwrap();
    let mut expected = vec![
        (kept_failed.clone(), "failed".to_owned()),
        (kept_pending.clone(), "pending".to_owned()),
    ];
    expected.sort();
    assert_eq!(left, expected);
    let attempts: Vec<(String, i32)> = delivery_attempts::table
        .order((delivery_attempts::delivery_id, delivery_attempts::attempt))
        .select((delivery_attempts::delivery_id, delivery_attempts::attempt))
        .load(&mut *conn)
        .unwrap();
    let mut expected = vec![
        (kept_failed.clone(), 1),
        (kept_failed.clone(), 2),
        (kept_pending.clone(), 1),
    ];
    expected.sort();
    assert_eq!(attempts, expected);
    let mut left_events: Vec<String> = events::table.select(events::id).load(&mut *conn).unwrap();
    left_events.sort();
    let mut expected = vec![event_ids[2].clone(), event_ids[3].clone()];
    expected.sort();
    assert_eq!(left_events, expected, "the orphan {orphan} went too");
    drop(conn);

    // The log shows what is kept; the pending one still works.
    assert_eq!(list(&app, &key, &ws, "").await.body["total"], 0);
    let d = app.delivery(&key, &wf, &kept_failed).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(d.body["eventId"], event_ids[2].as_str());
    assert_eq!(
        app.delivery(&key, &wp, &kept_pending).await.body["status"],
        "pending"
    );

    let again = app.broker.janitor.send(PruneNow).await.unwrap().unwrap();
    assert_eq!(again, Pruned::default());
}

fn old_succeeded_rows(app: &TestApp, n: usize) {
    old_rows(app, 0, n, |_| DeliveryStatus::Succeeded);
}

/// `n` deliveries from 1970, numbered from `first` (the `i`th created at
/// `1_000 + i` ms, with its own event and one attempt), each in the state
/// `status(i)` says. Their sequence numbers come from the counter, as
/// ingest's do (on a fresh database the `i`th gets `i + 1`), so no two
/// events share one.
fn old_rows(app: &TestApp, first: usize, n: usize, status: impl Fn(usize) -> DeliveryStatus) {
    let mut conn = app.conn();
    conn.transaction(|conn| {
        let start = webhook_broker::db::leases::take_sequence(conn, n as i64)?;
        for i in first..first + n {
            let seq = start + (i - first) as i64;
            let state = status(i);
            let ok = state == DeliveryStatus::Succeeded;
            let event = EventRow {
                id: format!("evt_ancient_{i:05}"),
                app_id: "app_ancient".into(),
                event: "channel_live".into(),
                channel_id: None,
                event_time: 1_000,
                payload: "{}".into(),
                created_at: 1_000 + i as i64,
                seq,
            };
            diesel::insert_into(events::table)
                .values(&event)
                .execute(conn)?;
            let delivery = DeliveryRow {
                id: format!("msg_ancient_{i:05}"),
                event_id: event.id.clone(),
                webhook_id: "wh_ancient".into(),
                channel_id: None,
                status: state,
                attempts: 1,
                next_attempt_at: 1_000,
                last_status_code: Some(if ok { 200 } else { 500 }),
                last_error: (!ok).then(|| "receiver answered HTTP 500".into()),
                created_at: 1_000 + i as i64,
                delivered_at: ok.then_some(1_001 + i as i64),
                seq,
            };
            diesel::insert_into(deliveries::table)
                .values(&delivery)
                .execute(conn)?;
            let attempt = AttemptRow {
                delivery_id: delivery.id.clone(),
                attempt: 1,
                at: 1_000,
                duration_ms: 1,
                status_code: delivery.last_status_code,
                error: delivery.last_error.clone(),
                response_body: None,
            };
            diesel::insert_into(delivery_attempts::table)
                .values(&attempt)
                .execute(conn)?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
}

/// An event from 1970 younger than every [`old_rows`] one, numbered `seq`.
fn later_event(conn: &mut DbConn, seq: i64) {
    diesel::insert_into(events::table)
        .values(&EventRow {
            id: "evt_later".into(),
            app_id: "app_ancient".into(),
            event: "channel_live".into(),
            channel_id: None,
            event_time: 1_500,
            payload: "{}".into(),
            created_at: 1_500,
            seq,
        })
        .execute(conn)
        .unwrap();
}

async fn the_default_retention_prunes_only_history_older_than_30_days(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("a").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    for i in 0..3 {
        app.send_event(&app_id, "channel_live", json!({"id": i}))
            .await;
    }
    receiver.wait_for(3, SETTLE).await;
    assert!(
        common::eventually(SETTLE, || {
            deliveries::table
                .filter(deliveries::status.eq("succeeded"))
                .count()
                .get_result::<i64>(&mut *app.conn())
                .unwrap()
                == 3
        })
        .await
    );
    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        app.broker.janitor.send(PruneNow).await.unwrap().unwrap(),
        Pruned::default(),
        "nothing recent is pruned"
    );
    assert_eq!(row_counts(&app), (3, 3, 3));

    // More than one batch (500) of history from 1970.
    old_succeeded_rows(&app, 1_100);
    assert_eq!(row_counts(&app), (1_103, 1_103, 1_103));
    assert_eq!(
        app.broker.janitor.send(PruneNow).await.unwrap().unwrap(),
        Pruned {
            deliveries: 1_100,
            events: 1_100,
            idempotency_keys: 0,
        }
    );
    assert_eq!(row_counts(&app), (3, 3, 3));
}

async fn pruning_passes_thousands_of_kept_failed_rows_and_takes_every_old_success(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    // The oldest 3,000 failed (kept for ever), then 1,200 where every
    // third fails: the successes are more than two batches of 500, and
    // the first of them lies behind six batches' worth of kept rows.
    old_rows(&app, 0, 3_000, |_| DeliveryStatus::Failed);
    let fails = |i: usize| i.is_multiple_of(3);
    old_rows(&app, 3_000, 1_200, |i| {
        if fails(i) {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Succeeded
        }
    });
    assert_eq!(row_counts(&app), (4_200, 4_200, 4_200));
    assert_eq!(
        app.broker.janitor.send(PruneNow).await.unwrap().unwrap(),
        Pruned {
            deliveries: 800,
            events: 800,
            idempotency_keys: 0,
        }
    );
    assert_eq!(row_counts(&app), (3_400, 3_400, 3_400));
    let mut conn = app.conn();
    let left: Vec<(String, DeliveryStatus)> = deliveries::table
        .select((deliveries::id, deliveries::status))
        .load(&mut *conn)
        .unwrap();
    assert!(left.iter().all(|(_, s)| *s == DeliveryStatus::Failed));
    let kept: BTreeSet<String> = left.into_iter().map(|(id, _)| id).collect();
    let expected: BTreeSet<String> = (0..4_200)
        .filter(|&i| i < 3_000 || fails(i))
        .map(|i| format!("msg_ancient_{i:05}"))
        .collect();
    assert_eq!(kept, expected);
    drop(conn);
    assert_eq!(
        app.broker.janitor.send(PruneNow).await.unwrap().unwrap(),
        Pruned::default()
    );
}

async fn a_pruning_batch_resumes_past_the_kept_rows_it_walked(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    old_rows(&app, 0, 2_000, |_| DeliveryStatus::Failed);
    old_rows(&app, 2_000, 1_000, |_| DeliveryStatus::Succeeded);
    let mut conn = app.conn();
    let first =
        webhook_broker::db::deliveries::prune_succeeded(&mut conn, i64::MIN, 1_000_000, 500)
            .unwrap();
    // The 500 oldest successes are 2,000..2,499, numbered i + 1.
    assert_eq!(first.deleted, 500);
    assert_eq!(first.resume_from, 2_500);
    let second = webhook_broker::db::deliveries::prune_succeeded(
        &mut conn,
        first.resume_from,
        1_000_000,
        500,
    )
    .unwrap();
    assert_eq!((second.deleted, second.resume_from), (500, 3_000));
    let third = webhook_broker::db::deliveries::prune_succeeded(
        &mut conn,
        second.resume_from,
        1_000_000,
        500,
    )
    .unwrap();
    assert_eq!((third.deleted, third.resume_from), (0, second.resume_from));
    // Events: the first 2,000 are still referenced by failed deliveries.
    let events =
        webhook_broker::db::deliveries::prune_events(&mut conn, i64::MIN, 1_000_000, 600).unwrap();
    assert_eq!((events.deleted, events.resume_from), (600, 1_000 + 2_599));
    // Nothing at or after `before` goes.
    let none = webhook_broker::db::deliveries::prune_events(
        &mut conn,
        events.resume_from,
        1_000 + 2_600,
        600,
    )
    .unwrap();
    assert_eq!(none.deleted, 0);
}

/// Pruning goes by age, in sequence order, as far as the newest event
/// older than the limit. A delivery sent again by hand takes a new number
/// and keeps its age: it waits until an event numbered after it is old
/// too, a retention period after it was sent again.
async fn pruning_goes_by_age_and_looks_as_far_as_the_newest_old_event(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    old_succeeded_rows(&app, 10);
    let mut conn = app.conn();
    let renumber = |conn: &mut DbConn, id: &str, seq: i64| {
        diesel::update(deliveries::table.find(id))
            .set(deliveries::seq.eq(seq))
            .execute(conn)
            .unwrap();
    };
    // Sent again by hand: numbered after every event.
    renumber(&mut conn, "msg_ancient_00002", 100);
    // Numbered among the old ones, but younger than the limit below.
    renumber(&mut conn, "msg_ancient_00008", 1);
    let left = |conn: &mut DbConn| -> Vec<String> {
        deliveries::table
            .order(deliveries::id)
            .select(deliveries::id)
            .load(conn)
            .unwrap()
    };
    let ids = |is: &[usize]| -> Vec<String> {
        is.iter().map(|i| format!("msg_ancient_{i:05}")).collect()
    };

    let first =
        webhook_broker::db::deliveries::prune_succeeded(&mut conn, i64::MIN, 1_000 + 5, 500)
            .unwrap();
    assert_eq!(first.deleted, 4);
    assert_eq!(left(&mut conn), ids(&[2, 5, 6, 7, 8, 9]));

    // Nothing newer than its own number is old yet: it waits.
    let second =
        webhook_broker::db::deliveries::prune_succeeded(&mut conn, i64::MIN, 1_000_000, 500)
            .unwrap();
    assert_eq!(second.deleted, 5);
    assert_eq!(left(&mut conn), ids(&[2]));

    // An event numbered after it grows old: it goes.
    later_event(&mut conn, 101);
    let third =
        webhook_broker::db::deliveries::prune_succeeded(&mut conn, i64::MIN, 1_000_000, 500)
            .unwrap();
    assert_eq!((third.deleted, third.resume_from), (1, 100));
    assert!(left(&mut conn).is_empty());
}

/// A delivery sent again takes a new number, which no event has; its
/// event is kept all the same (on MySQL through `resent_deliveries`, as
/// the deliveries have no index by event there), until the delivery
/// itself is pruned.
async fn a_resent_delivery_keeps_its_event_until_it_is_pruned_itself(store: Store) {
    use webhook_broker::db::deliveries::{prune_events, prune_succeeded, requeue};
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    old_rows(&app, 0, 10, |i| {
        if i == 3 {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Succeeded
        }
    });
    let mut conn = app.conn();
    let resend = vec!["msg_ancient_00003".to_owned()];
    assert_eq!(requeue(&mut conn, "wh_ancient", &resend, 2_000).unwrap(), 1);
    // It fails again and is sent again: listed once.
    diesel::update(deliveries::table.find("msg_ancient_00003"))
        .set(deliveries::status.eq(DeliveryStatus::Failed))
        .execute(&mut *conn)
        .unwrap();
    assert_eq!(requeue(&mut conn, "wh_ancient", &resend, 2_000).unwrap(), 1);
    let listed = |conn: &mut DbConn| -> Vec<(String, String)> {
        resent_deliveries::table
            .select((resent_deliveries::delivery_id, resent_deliveries::event_id))
            .load(conn)
            .unwrap()
    };
    assert_eq!(
        listed(&mut conn),
        vec![(
            "msg_ancient_00003".to_owned(),
            "evt_ancient_00003".to_owned()
        )]
    );
    let seq: i64 = deliveries::table
        .find("msg_ancient_00003")
        .select(deliveries::seq)
        .first(&mut *conn)
        .unwrap();
    assert_eq!(seq, 12, "numbered after every event, once per resend");

    let successes = prune_succeeded(&mut conn, i64::MIN, 1_000_000, 500).unwrap();
    assert_eq!(successes.deleted, 9);
    let pruned = prune_events(&mut conn, i64::MIN, 1_000_000, 500).unwrap();
    assert_eq!(pruned.deleted, 9);
    let events_left =
        |conn: &mut DbConn| -> Vec<String> { events::table.select(events::id).load(conn).unwrap() };
    assert_eq!(events_left(&mut conn), vec!["evt_ancient_00003".to_owned()]);

    // It succeeds; once an event numbered after it is old, both go.
    diesel::update(deliveries::table.find("msg_ancient_00003"))
        .set(deliveries::status.eq(DeliveryStatus::Succeeded))
        .execute(&mut *conn)
        .unwrap();
    later_event(&mut conn, 13);
    assert_eq!(
        prune_succeeded(&mut conn, i64::MIN, 1_000_000, 500)
            .unwrap()
            .deleted,
        1
    );
    assert!(listed(&mut conn).is_empty());
    assert_eq!(
        prune_events(&mut conn, i64::MIN, 1_000_000, 500)
            .unwrap()
            .deleted,
        2
    );
    assert!(events_left(&mut conn).is_empty());
}

/// Deleting a webhook takes its resent deliveries' listing with them, so
/// their events do not stay for ever.
async fn a_deleted_webhook_leaves_no_resent_delivery_behind(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    old_rows(&app, 0, 3, |_| DeliveryStatus::Failed);
    let mut conn = app.conn();
    let ids: Vec<String> = (0..3).map(|i| format!("msg_ancient_{i:05}")).collect();
    assert_eq!(
        webhook_broker::db::deliveries::requeue(&mut conn, "wh_ancient", &ids, 2_000).unwrap(),
        3
    );
    let count =
        |conn: &mut DbConn| -> i64 { resent_deliveries::table.count().get_result(conn).unwrap() };
    assert_eq!(count(&mut conn), 3);
    webhook_broker::db::webhooks::delete(&mut conn, "wh_ancient").unwrap();
    assert_eq!(count(&mut conn), 0);
    let pruned =
        webhook_broker::db::deliveries::prune_events(&mut conn, i64::MIN, 1_000_000, 500).unwrap();
    assert_eq!(pruned.deleted, 3);
}

/// Migration 000016 lists the deliveries resent before it, whose events
/// only that listing keeps from pruning on MySQL.
async fn the_upgrade_lists_deliveries_resent_before_it(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let mut conn = app.conn();
    webhook_broker::db::revert_last_migration(&mut conn).unwrap();
    drop(conn);
    old_rows(&app, 0, 3, |_| DeliveryStatus::Failed);
    let mut conn = app.conn();
    // Sent again by an older broker: numbered past every event.
    diesel::update(deliveries::table.find("msg_ancient_00001"))
        .set(deliveries::seq.eq(50))
        .execute(&mut *conn)
        .unwrap();
    webhook_broker::db::run_migrations(&mut conn).unwrap();
    let listed: Vec<(String, String)> = resent_deliveries::table
        .select((resent_deliveries::delivery_id, resent_deliveries::event_id))
        .load(&mut *conn)
        .unwrap();
    assert_eq!(
        listed,
        vec![(
            "msg_ancient_00001".to_owned(),
            "evt_ancient_00001".to_owned()
        )]
    );
    let pruned =
        webhook_broker::db::deliveries::prune_events(&mut conn, i64::MIN, 1_000_000, 500).unwrap();
    assert_eq!(
        pruned.deleted, 0,
        "every event still has its failed delivery"
    );
}

on_both_stores!(
    the_log_lists_every_field_of_every_delivery_newest_first,
    the_log_is_paginated_and_filtered_by_status,
    an_attempt_log_keeps_each_attempt_in_order_with_a_4_kib_response_body,
    a_multibyte_response_body_is_cut_to_at_most_4096_bytes_of_what_was_sent,
    a_connection_error_attempt_has_no_status_code_and_an_error,
    retry_sends_a_failed_or_succeeded_delivery_again_with_the_same_id_and_body,
    retry_of_a_pending_delivery_answers_409_and_of_an_unknown_one_404,
    recover_resends_only_failed_deliveries_since_then_in_channel_order,
    recover_refuses_a_negative_since_with_400_and_a_missing_one_with_422,
    another_app_and_another_webhook_get_404_for_a_webhooks_deliveries,
    retention_prunes_succeeded_deliveries_and_orphaned_events_but_keeps_failed_and_pending,
    the_default_retention_prunes_only_history_older_than_30_days,
    pruning_passes_thousands_of_kept_failed_rows_and_takes_every_old_success,
    a_pruning_batch_resumes_past_the_kept_rows_it_walked,
    pruning_goes_by_age_and_looks_as_far_as_the_newest_old_event,
    a_resent_delivery_keeps_its_event_until_it_is_pruned_itself,
    a_deleted_webhook_leaves_no_resent_delivery_behind,
    the_upgrade_lists_deliveries_resent_before_it,
);
