//! Deliveries end to end: what a receiver gets, signatures, retries, giving
//! up, matching, and resuming after a restart, on SQLite and MariaDB.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use common::{Receiver, Store, TestApp};
use webhook_broker::db::schema::{deliveries, delivery_attempts};

/// The signature a receiver computes with nothing but the secret: an
/// independent check of the broker's signing code.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

fn delivery_state(app: &TestApp, id: &str) -> (String, i32) {
    deliveries::table
        .find(id)
        .select((deliveries::status, deliveries::attempts))
        .first(&mut *app.conn())
        .expect("delivery row")
}

async fn a_delivery_carries_the_body_and_a_verifiable_signature(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app
        .create_webhook(&key, &receiver.url, json!("channel_live"))
        .await;
    let secret = webhook["secret"].as_str().unwrap();

    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(common::ADMIN_TOKEN),
            Some(&json!({
                "event": "channel_live",
                "appId": app_id,
                "eventTime": 1476697473034i64,
                "channel": {"id": "ch-1", "title": "Morning", "viewers": 3, "event": "spoofed"}
            })),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], 1);
    assert!(r.body["id"].as_str().unwrap().starts_with("evt_"));

    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "/hook");
    assert_eq!(
        req.json(),
        json!({"event": "channel_live", "eventTime": 1476697473034i64,
               "id": "ch-1", "title": "Morning", "viewers": 3})
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req
        .header("user-agent")
        .unwrap()
        .starts_with("webhook-broker/"));
    let id = req.header("webhook-id").unwrap();
    assert!(id.starts_with("msg_"));
    let ts = req.header("webhook-timestamp").unwrap();
    let now = webhook_broker::db::now_ms() / 1000;
    assert!((ts.parse::<i64>().unwrap() - now).abs() < 30);
    assert_eq!(
        req.header("webhook-signature").unwrap(),
        expected_signature(secret, id, ts, &req.body)
    );
    assert!(
        common::eventually(Duration::from_secs(5), || {
            delivery_state(&app, id) == ("succeeded".into(), 1)
        })
        .await
    );
}

async fn delivery_is_retried_after_a_500_with_the_same_webhook_id(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[500, 503]);
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let secret = webhook["secret"].as_str().unwrap();
    assert_eq!(
        app.send_event(&app_id, "channel_stop", json!({"id": 7}))
            .await
            .status,
        202
    );

    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "two failures then a success");
    let id = got[0].header("webhook-id").unwrap();
    for req in &got {
        assert_eq!(req.header("webhook-id"), Some(id));
        assert_eq!(req.body, got[0].body);
        let ts = req.header("webhook-timestamp").unwrap();
        assert_eq!(
            req.header("webhook-signature").unwrap(),
            expected_signature(secret, id, ts, &req.body)
        );
    }
    // The schedule's 200 ms delays are kept between attempts.
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(150));
    assert!(
        common::eventually(Duration::from_secs(5), || {
            delivery_state(&app, id) == ("succeeded".into(), 3)
        })
        .await
    );
    let codes: Vec<Option<i32>> = delivery_attempts::table
        .filter(delivery_attempts::delivery_id.eq(id))
        .order(delivery_attempts::attempt)
        .select(delivery_attempts::status_code)
        .load(&mut *app.conn())
        .unwrap();
    assert_eq!(codes, vec![Some(500), Some(503), Some(204)]);
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 3, "nothing after a success");
}

async fn a_delivery_is_marked_failed_after_the_schedule_is_used_up(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[500, 500, 500, 500]);
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    app.send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;

    // 1 attempt + 2 retries with the test schedule.
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    let id = got[0].header("webhook-id").unwrap().to_owned();
    assert!(
        common::eventually(Duration::from_secs(5), || {
            delivery_state(&app, &id) == ("failed".into(), 3)
        })
        .await
    );
    actix_web::rt::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 3, "no attempt after giving up");
    let last_error: Option<String> = deliveries::table
        .find(&id)
        .select(deliveries::last_error)
        .first(&mut *app.conn())
        .unwrap();
    assert!(last_error.unwrap().contains("500"));
}

async fn a_redirect_is_not_followed_and_counts_as_a_failure(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[302]);
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    app.send_event(&app_id, "channel_live", json!({})).await;

    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2, "the 302 was retried");
    assert!(
        got.iter().all(|r| r.path == "/hook"),
        "the redirect was never followed"
    );
}

async fn a_connection_error_is_retried(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &url, json!("all")).await;
    app.send_event(&app_id, "channel_live", json!({})).await;

    assert!(
        common::eventually(Duration::from_secs(5), || {
            let rows: Vec<(String, i32, Option<String>)> = deliveries::table
                .select((
                    deliveries::status,
                    deliveries::attempts,
                    deliveries::last_error,
                ))
                .load(&mut *app.conn())
                .unwrap();
            rows.len() == 1 && rows[0].0 == "failed" && rows[0].1 == 3 && rows[0].2.is_some()
        })
        .await
    );
}

async fn only_subscribed_webhooks_of_the_events_app_receive_it(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (live, ended, all, other) = (
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
    );
    let (app_id, key) = app.create_app("a").await;
    let (_, other_key) = app.create_app("b").await;
    app.create_webhook(&key, &live.url, json!("channel_live"))
        .await;
    app.create_webhook(&key, &ended.url, json!(["channel_ended"]))
        .await;
    app.create_webhook(&key, &all.url, json!("all")).await;
    app.create_webhook(&other_key, &other.url, json!("all"))
        .await;

    let r = app
        .send_event(&app_id, "channel_ended", json!({"id": "x"}))
        .await;
    assert_eq!(r.body["deliveries"], 2);
    assert_eq!(ended.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    assert_eq!(all.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(live.received().is_empty());
    assert!(other.received().is_empty());
    assert_eq!(ended.received()[0].json()["event"], "channel_ended");
}

async fn an_event_with_no_matching_webhook_is_accepted_with_zero_deliveries(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("a").await;
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": 1}))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["deliveries"], 0);
}

async fn pending_deliveries_are_resumed_after_a_restart_with_the_same_id(store: Store) {
    let Some(db) = common::TestDb::new(store) else {
        return;
    };
    let db = Arc::new(db);
    let receiver = Receiver::start_scripted(&[500]);
    let first = TestApp::spawn_with(db.clone(), |c| {
        c.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let (app_id, key) = first.create_app("a").await;
    first
        .create_webhook(&key, &receiver.url, json!("all"))
        .await;
    first
        .send_event(&app_id, "channel_live", json!({"id": "r"}))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let id = got[0].header("webhook-id").unwrap().to_owned();
    assert!(
        common::eventually(Duration::from_secs(5), || {
            delivery_state(&first, &id) == ("pending".into(), 1)
        })
        .await
    );

    // A second broker on the same database, as after a crash and restart,
    // with the retry already due.
    diesel::update(deliveries::table.find(&id))
        .set(deliveries::next_attempt_at.eq(0i64))
        .execute(&mut *first.conn())
        .unwrap();
    let second = TestApp::spawn_with(db.clone(), |_| {}).await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert!(got.len() >= 2);
    assert_eq!(got[1].header("webhook-id"), Some(id.as_str()));
    assert!(
        common::eventually(Duration::from_secs(5), || {
            delivery_state(&second, &id) == ("succeeded".into(), 2)
        })
        .await
    );
}

/// A channel whose head waits over 10 s for a retry holds no bodies
/// meanwhile (its head's nor those queued behind it); each is read again
/// from the database when due, and goes out byte for byte as first signed.
async fn deliveries_waiting_long_for_a_retry_are_sent_with_their_bodies_read_again(store: Store) {
    let Some(db) = common::TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(std::sync::Arc::new(db), |c| {
        // 13 s less 20% jitter is still over the 10 s a body is kept.
        c.retry_schedule = vec![Duration::from_secs(13)];
    })
    .await;
    let receiver = Receiver::start_scripted(&[500]);
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let secret = webhook["secret"].as_str().unwrap();
    let read_again = || webhook_broker::metrics::metrics().bodies_read_again.get();
    let before = read_again();
    for seq in 0..3 {
        let channel = json!({"id": "ch-long", "seq": seq, "title": format!("show {seq}")});
        assert_eq!(
            app.send_event(&app_id, "channel_live", channel)
                .await
                .status,
            202
        );
    }
    let got = receiver.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 4, "a failure, then all three in order");
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_secs(10));
    assert_eq!(got[1].body, got[0].body, "the retry sends the same bytes");
    for (req, seq) in got[1..].iter().zip(0..) {
        let body = req.json();
        assert_eq!(
            (body["seq"].clone(), body["title"].clone()),
            (json!(seq), json!(format!("show {seq}")))
        );
        let (id, ts) = (
            req.header("webhook-id").unwrap(),
            req.header("webhook-timestamp").unwrap(),
        );
        assert_eq!(
            req.header("webhook-signature").unwrap(),
            expected_signature(secret, id, ts, &req.body)
        );
    }
    assert!(
        read_again() - before >= 3,
        "the three bodies were read again, not held: {} reads",
        read_again() - before
    );
}

on_both_stores!(
    deliveries_waiting_long_for_a_retry_are_sent_with_their_bodies_read_again,
    a_delivery_carries_the_body_and_a_verifiable_signature,
    delivery_is_retried_after_a_500_with_the_same_webhook_id,
    a_delivery_is_marked_failed_after_the_schedule_is_used_up,
    a_redirect_is_not_followed_and_counts_as_a_failure,
    a_connection_error_is_retried,
    only_subscribed_webhooks_of_the_events_app_receive_it,
    an_event_with_no_matching_webhook_is_accepted_with_zero_deliveries,
    pending_deliveries_are_resumed_after_a_restart_with_the_same_id,
);

/// The reference `standardwebhooks` library (Python, from PyPI) verifies a
/// real delivery: what receivers will actually run.
#[actix_web::test]
async fn the_official_standard_webhooks_verifier_accepts_a_delivery() {
    const SCRIPT: &str = "
import json, sys
from standardwebhooks.webhooks import Webhook
d = json.load(sys.stdin)
Webhook(d['secret']).verify(d['body'].encode(), d['headers'])
print('verified')
";
    let probe = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install the standardwebhooks PyPI package"
        );
        eprintln!("skipping: python3 with the standardwebhooks package is not installed");
        return;
    }
    let app = TestApp::spawn(Store::Sqlite).await.unwrap();
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("py").await;
    let webhook = app.create_webhook(&key, &receiver.url, json!("all")).await;
    app.send_event(&app_id, "channel_live", json!({"id": "ü-1", "n": [1, 2]}))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let req = &got[0];
    let input = json!({
        "secret": webhook["secret"],
        "body": String::from_utf8(req.body.clone()).unwrap(),
        "headers": {
            "webhook-id": req.header("webhook-id"),
            "webhook-timestamp": req.header("webhook-timestamp"),
            "webhook-signature": req.header("webhook-signature"),
        },
    });
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verifier refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified");
}
