//! The delivery guarantees that live in the delivery actors: order per
//! channel, Retry-After, 410 Gone, auto-disable and re-enable, and a clean
//! stop that leaves work pending for the next run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};

use common::{Answer, Receiver, Store, TestApp, TestDb};
use webhook_broker::db::schema::{deliveries, webhook_leases};

fn seq(req: &common::Received) -> i64 {
    req.json()["seq"].as_i64().expect("seq in body")
}

fn channel(req: &common::Received) -> String {
    req.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// The seqs of a channel in the order they first got a 2xx, given which
/// arrival numbers were answered with success.
fn delivered_order(got: &[common::Received], ok: &[bool], ch: &str) -> Vec<i64> {
    let mut order = Vec::new();
    for (req, ok) in got.iter().zip(ok) {
        if *ok && channel(req) == ch && !order.contains(&seq(req)) {
            order.push(seq(req));
        }
    }
    order
}

async fn a_failing_delivery_holds_back_its_channel_but_not_others(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(300); 5];
    })
    .await;
    // Channel "a"'s first event fails three times; everything else succeeds.
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (f, o) = (failures.clone(), outcomes.clone());
    let receiver = Receiver::start_with(move |req, _| {
        let fail = channel(req) == "a" && seq(req) == 1 && f.fetch_add(1, Ordering::SeqCst) < 3;
        o.lock().unwrap().push(!fail);
        Answer::status(if fail { 500 } else { 204 })
    });
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;

    for (ch, n) in [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2), ("a", 4)] {
        let r = app
            .send_event(&app_id, "channel_live", json!({"id": ch, "seq": n}))
            .await;
        assert_eq!(r.status, 202);
    }
    // "b" is not held up by "a"'s failures: both arrive before "a" recovers.
    let early = receiver.wait_for(4, Duration::from_secs(5)).await;
    let b_early: Vec<_> = early.iter().filter(|r| channel(r) == "b").collect();
    assert_eq!(b_early.len(), 2, "channel b waited for channel a");
    // While "a":1 is failing, no later "a" event has been sent.
    let a_first: Vec<i64> = early
        .iter()
        .filter(|r| channel(r) == "a")
        .map(seq)
        .collect();
    assert!(a_first.iter().all(|s| *s == 1), "{a_first:?}");

    let got = receiver.wait_for(4 + 2 + 3, Duration::from_secs(10)).await;
    let ok = outcomes.lock().unwrap().clone();
    assert_eq!(delivered_order(&got, &ok, "a"), vec![1, 2, 3, 4]);
    assert_eq!(delivered_order(&got, &ok, "b"), vec![1, 2]);
}

async fn a_delivery_that_fails_for_good_lets_its_channel_proceed(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver =
        Receiver::start_with(|req, _| Answer::status(if seq(req) == 1 { 500 } else { 204 }));
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    for n in 1..=3 {
        app.send_event(&app_id, "channel_stop", json!({"id": "c", "seq": n}))
            .await;
    }
    // 3 attempts of seq 1 (the test schedule), then 2 and 3 in order.
    let got = receiver.wait_for(5, Duration::from_secs(10)).await;
    let seqs: Vec<i64> = got.iter().map(seq).collect();
    assert_eq!(seqs, vec![1, 1, 1, 2, 3]);
}

async fn retry_after_on_429_sets_the_next_attempt(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(50); 3];
    })
    .await;
    let receiver = Receiver::start_with(|_, n| match n {
        0 => Answer::status(429).header("Retry-After", "2"),
        _ => Answer::status(204),
    });
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    app.send_event(&app_id, "channel_live", json!({"id": "x"}))
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(6)).await;
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, not 2 s"
    );
    assert!(gap < Duration::from_millis(3500), "retried after {gap:?}");
}

async fn retry_after_as_an_http_date_on_503_is_honoured(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(50); 3];
    })
    .await;
    let receiver = Receiver::start_with(|_, n| match n {
        0 => {
            let at = std::time::SystemTime::now() + Duration::from_secs(3);
            Answer::status(503).header("Retry-After", &httpdate::fmt_http_date(at))
        }
        _ => Answer::status(204),
    });
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(2, Duration::from_secs(8)).await;
    assert_eq!(got.len(), 2);
    // HTTP dates have whole-second precision.
    let gap = got[1].at.duration_since(got[0].at);
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
}

async fn webhook(app: &TestApp, key: &str, id: &str) -> Value {
    let r = app
        .call("GET", &format!("/v1/webhook/{id}"), Some(key), None)
        .await;
    assert_eq!(r.status, 200);
    r.body
}

async fn a_410_disables_the_webhook_at_once_and_keeps_its_delivery(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let gone = Arc::new(AtomicBool::new(true));
    let g = gone.clone();
    let receiver = Receiver::start_with(move |_, _| {
        Answer::status(if g.load(Ordering::SeqCst) { 410 } else { 204 })
    });
    let (app_id, key) = app.create_app("tv").await;
    let created = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "enabled");

    app.send_event(&app_id, "channel_live", json!({"id": "c", "seq": 1}))
        .await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    let mut disabled = Value::Null;
    for _ in 0..100 {
        disabled = webhook(&app, &key, &id).await;
        if disabled["status"] == "disabled" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(disabled["status"], "disabled");
    assert!(disabled["disabledReason"].as_str().unwrap().contains("410"));
    assert!(disabled["disabledAt"].as_i64().unwrap() > 0);

    // Disabled: receives nothing new, and the 410'd delivery is kept pending.
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "c", "seq": 2}))
        .await;
    assert_eq!(r.body["deliveries"], 0);
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing is sent to a disabled webhook"
    );
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let statuses: Vec<String> = deliveries::table
                .select(deliveries::status)
                .load(&mut *app.conn())
                .unwrap();
            statuses == vec!["pending".to_owned()]
        })
        .await
    );

    // Enabled again: what was kept goes out.
    gone.store(false, Ordering::SeqCst);
    let r = app
        .call(
            "PUT",
            &format!("/v1/webhook/{id}"),
            Some(&key),
            Some(&json!({"uri": receiver.url, "event": "all", "status": "enabled"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "enabled");
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(seq(&got[1]), 1);
    assert_eq!(got[1].header("webhook-id"), got[0].header("webhook-id"));
}

async fn a_webhook_failing_long_enough_is_disabled_when_a_delivery_gives_up(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.disable_after = Duration::ZERO;
        c.retry_schedule = vec![Duration::from_millis(100)];
    })
    .await;
    let receiver = Receiver::start_with(|_, _| Answer::status(500));
    let (app_id, key) = app.create_app("tv").await;
    let id = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&app_id, "channel_ended", json!({"id": "c"}))
        .await;
    assert_eq!(receiver.wait_for(2, Duration::from_secs(5)).await.len(), 2);
    let mut w = Value::Null;
    for _ in 0..100 {
        w = webhook(&app, &key, &id).await;
        if w["status"] == "disabled" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w["status"], "disabled");
    assert!(w["disabledReason"]
        .as_str()
        .unwrap()
        .contains("no successful delivery"));
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    assert_eq!(
        r.body["deliveries"], 0,
        "a disabled webhook receives nothing"
    );
}

async fn a_webhook_with_a_recent_success_stays_enabled_after_a_failure(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retry_schedule = vec![Duration::from_millis(100)];
    })
    .await;
    // Default BROKER_DISABLE_AFTER (5 days): a fresh webhook is never stale.
    let receiver = Receiver::start_with(|_, _| Answer::status(500));
    let (app_id, key) = app.create_app("tv").await;
    let id = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send_event(&app_id, "channel_live", json!({})).await;
    assert_eq!(receiver.wait_for(2, Duration::from_secs(5)).await.len(), 2);
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let s: Vec<String> = deliveries::table
                .select(deliveries::status)
                .load(&mut *app.conn())
                .unwrap();
            s == vec!["failed".to_owned()]
        })
        .await
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(webhook(&app, &key, &id).await["status"], "enabled");
}

async fn a_clean_stop_leaves_pending_work_released_for_the_next_run(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let db = Arc::new(db);
    let first = TestApp::spawn_with(db.clone(), |c| {
        c.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let receiver = Receiver::start_with(move |_, _| {
        Answer::status(if h.load(Ordering::SeqCst) { 204 } else { 500 })
    });
    let (app_id, key) = first.create_app("tv").await;
    first
        .create_webhook(&key, &receiver.url, json!("all"))
        .await;
    for n in 1..=3 {
        first
            .send_event(&app_id, "channel_live", json!({"id": "c", "seq": n}))
            .await;
    }
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    first.broker.shutdown(Duration::from_secs(5)).await;
    let r = first
        .send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    assert_eq!(r.status, 503, "a stopped broker takes no new events");

    let rows: Vec<String> = deliveries::table
        .select(deliveries::status)
        .load(&mut *first.conn())
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|s| s == "pending"), "{rows:?}");
    let owners: Vec<Option<String>> = webhook_leases::table
        .select(webhook_leases::owner)
        .load(&mut *first.conn())
        .unwrap();
    assert_eq!(owners, vec![None], "the webhook's lease is given back");

    // The next run takes them at once, oldest first.
    healthy.store(true, Ordering::SeqCst);
    diesel::update(deliveries::table)
        .set(deliveries::next_attempt_at.eq(0i64))
        .execute(&mut *first.conn())
        .unwrap();
    let _second = TestApp::spawn_with(db.clone(), |c| c.instance_id = "another".into()).await;
    let got = receiver.wait_for(4, Duration::from_secs(5)).await;
    let seqs: Vec<i64> = got.iter().skip(1).map(seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

async fn a_success_pruned_by_retention_still_counts_against_auto_disable(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.retention = Duration::ZERO;
        c.disable_after = Duration::from_secs(86_400);
        c.retry_schedule = vec![];
    })
    .await;
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let receiver = Receiver::start_with(move |_, _| {
        Answer::status(if h.load(Ordering::SeqCst) { 204 } else { 500 })
    });
    let (app_id, key) = app.create_app("tv").await;
    let id = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The webhook is old; its one success is recent.
    use webhook_broker::db::schema::webhooks;
    diesel::update(webhooks::table.find(&id))
        .set(webhooks::created_at.eq(0i64))
        .execute(&mut *app.conn())
        .unwrap();
    app.send_event(&app_id, "channel_live", json!({})).await;
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let s: Vec<String> = deliveries::table
                .select(deliveries::status)
                .load(&mut *app.conn())
                .unwrap();
            s == vec!["succeeded".to_owned()]
        })
        .await
    );
    // Retention takes the history of that success away...
    let pruned = app
        .broker
        .janitor
        .send(webhook_broker::actors::janitor::PruneNow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pruned.deliveries, 1);

    // ...and a delivery that now fails for good must not disable a webhook
    // that succeeded a moment ago.
    healthy.store(false, Ordering::SeqCst);
    app.send_event(&app_id, "channel_live", json!({})).await;
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let s: Vec<String> = deliveries::table
                .select(deliveries::status)
                .load(&mut *app.conn())
                .unwrap();
            s == vec!["failed".to_owned()]
        })
        .await
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(webhook(&app, &key, &id).await["status"], "enabled");
}

on_both_stores!(
    a_success_pruned_by_retention_still_counts_against_auto_disable,
    a_failing_delivery_holds_back_its_channel_but_not_others,
    a_delivery_that_fails_for_good_lets_its_channel_proceed,
    retry_after_on_429_sets_the_next_attempt,
    retry_after_as_an_http_date_on_503_is_honoured,
    a_410_disables_the_webhook_at_once_and_keeps_its_delivery,
    a_webhook_failing_long_enough_is_disabled_when_a_delivery_gives_up,
    a_webhook_with_a_recent_success_stays_enabled_after_a_failure,
    a_clean_stop_leaves_pending_work_released_for_the_next_run,
);
