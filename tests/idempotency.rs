//! Idempotency keys: `Idempotency-Key` on POST /v1/events, /v1/webhook and
//! /v1/apps, and the idempotency key of an in-process ChannelEvent, on
//! SQLite and MariaDB; across a restart and across two instances on one
//! database; pruned by the janitor.

mod common;

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};

use common::{Receiver, Store, TestApp, TestDb, ADMIN_TOKEN};
use webhook_broker::actors::janitor::PruneNow;
use webhook_broker::db::idempotency::{self as keys, state, Claimed, IdempotencyRow};
use webhook_broker::db::now_ms;
use webhook_broker::db::schema::{apps, events, idempotency_keys, webhooks};
use webhook_broker::{BrokerError, ChannelEvent, EventKind};

/// A reply with its headers.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    replayed: Option<String>,
}

/// POSTs `body` to `path` with `token` and, if given, an `Idempotency-Key`
/// of these exact bytes.
async fn post(app: &TestApp, path: &str, token: &str, key: Option<&[u8]>, body: &Value) -> Reply {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut req = client
        .post(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {token}")));
    if let Some(k) = key {
        let value = awc::http::header::HeaderValue::from_bytes(k).expect("a sendable header");
        req = req.insert_header(("Idempotency-Key", value));
    }
    let mut res = req
        .send_json(body)
        .await
        .expect("request reaches the broker");
    let bytes = res.body().await.expect("body");
    Reply {
        status: res.status().as_u16(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        replayed: res
            .headers()
            .get("Idempotent-Replayed")
            .map(|v| v.to_str().unwrap().to_owned()),
    }
}

fn event_body(app_id: &str, title: &str) -> Value {
    json!({"event": "channel_live", "appId": app_id, "channel": {"id": "ch-1", "title": title}})
}

fn event_count(app: &TestApp) -> i64 {
    events::table.count().get_result(&mut *app.conn()).unwrap()
}

/// An in-flight row, as a request that is being processed leaves it.
fn in_flight(scope: &str, key: &str, created_at: i64) -> IdempotencyRow {
    IdempotencyRow {
        scope: scope.into(),
        idem_key: key.into(),
        request_hash: "0".repeat(64),
        state: state::IN_FLIGHT.into(),
        status: None,
        response_body: None,
        created_at,
        expires_at: created_at + 86_400_000,
    }
}

async fn an_event_sent_twice_with_one_key_is_stored_and_delivered_once(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    let body = event_body(&app_id, "Morning show");

    let first = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"evt-1"), &body).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.replayed, None);
    let again = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"evt-1"), &body).await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(again.body, first.body, "the same answer, the same event id");
    assert_eq!(again.replayed.as_deref(), Some("true"));

    assert_eq!(event_count(&app), 1);
    receiver.wait_for(1, Duration::from_secs(5)).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "exactly one delivery");
}

async fn the_same_key_with_a_different_body_answers_422(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    let first = post(
        &app,
        "/v1/events",
        ADMIN_TOKEN,
        Some(b"k"),
        &event_body(&app_id, "a"),
    )
    .await;
    assert_eq!(first.status, 202);
    let other = post(
        &app,
        "/v1/events",
        ADMIN_TOKEN,
        Some(b"k"),
        &event_body(&app_id, "b"),
    )
    .await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
    assert!(other.body["error"]["message"].as_str().unwrap().len() > 5);
    // The same key on another admin endpoint is another request too.
    let app_create = post(
        &app,
        "/v1/apps",
        ADMIN_TOKEN,
        Some(b"k"),
        &json!({"name": "x"}),
    )
    .await;
    assert_eq!(app_create.body["error"]["code"], "idempotency_key_reused");
    assert_eq!(event_count(&app), 1);
}

async fn a_key_in_flight_answers_409_until_it_is_abandoned(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    let body = event_body(&app_id, "a");
    // A request with this key is being processed (here or on another
    // instance): its in-flight row is there.
    let claimed = keys::claim(&mut app.conn(), &in_flight("admin", "busy", now_ms()), 0).unwrap();
    assert_eq!(claimed, Claimed::Won);
    let r = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"busy"), &body).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "idempotency_key_in_use");
    assert_eq!(event_count(&app), 0);

    // An in-flight row older than 60 s was left by a crashed instance: the
    // next request takes the key over.
    let old = in_flight("admin", "left", now_ms() - 61_000);
    keys::claim(&mut app.conn(), &old, 0).unwrap();
    let r = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"left"), &body).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.replayed, None);
    let again = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"left"), &body).await;
    assert_eq!(again.body, r.body);
    assert_eq!(event_count(&app), 1);
}

async fn concurrent_requests_with_one_key_make_one_event(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    let body = event_body(&app_id, "a");
    let replies = futures_util::future::join_all(
        (0..8).map(|_| post(&app, "/v1/events", ADMIN_TOKEN, Some(b"race"), &body)),
    )
    .await;
    let accepted: Vec<&Reply> = replies.iter().filter(|r| r.status == 202).collect();
    assert!(!accepted.is_empty(), "{replies:?}");
    for r in &replies {
        assert!(r.status == 202 || r.status == 409, "{r:?}");
        if r.status == 409 {
            assert_eq!(r.body["error"]["code"], "idempotency_key_in_use");
        }
    }
    assert!(accepted.iter().all(|r| r.body == accepted[0].body));
    assert_eq!(
        accepted.iter().filter(|r| r.replayed.is_none()).count(),
        1,
        "one original answer, the rest replays or 409: {replies:?}"
    );
    assert_eq!(event_count(&app), 1);
}

async fn a_failed_request_is_not_stored_so_the_key_can_be_used_again(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    // Rejected by validation (400), then by the dispatcher (unknown app, 422).
    let bad = json!({"event": "channel_gone", "appId": app_id, "channel": {}});
    let r = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"fix-me"), &bad).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let unknown = event_body("app_nope", "a");
    let r = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"fix-me"), &unknown).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_body");

    let fixed = event_body(&app_id, "a");
    let r = post(&app, "/v1/events", ADMIN_TOKEN, Some(b"fix-me"), &fixed).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.replayed, None);
    assert_eq!(event_count(&app), 1);
}

async fn an_invalid_key_answers_400_naming_the_header(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let long = vec![b'k'; 256];
    let bad: [&[u8]; 4] = [b"", b"   ", b"a\tb", &long];
    for k in bad {
        for (path, token, body) in [
            ("/v1/events", ADMIN_TOKEN, event_body(&app_id, "a")),
            ("/v1/apps", ADMIN_TOKEN, json!({"name": "x"})),
            (
                "/v1/webhook",
                key.as_str(),
                json!({"uri": "https://example.com/h", "event": "all"}),
            ),
        ] {
            let r = post(&app, path, token, Some(k), &body).await;
            assert_eq!(r.status, 400, "{path} {k:?}: {:?}", r.body);
            assert_eq!(r.body["error"]["code"], "invalid_idempotency_key");
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.contains("Idempotency-Key"), "{message}");
        }
    }
    // 255 characters are fine.
    let max = vec![b'k'; 255];
    let r = post(
        &app,
        "/v1/events",
        ADMIN_TOKEN,
        Some(&max),
        &event_body(&app_id, "a"),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(event_count(&app), 1);
}

async fn creating_an_app_or_a_webhook_twice_with_one_key_replays_the_secret(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let name = json!({"name": "scripted"});
    let first = post(&app, "/v1/apps", ADMIN_TOKEN, Some(b"app-1"), &name).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = post(&app, "/v1/apps", ADMIN_TOKEN, Some(b"app-1"), &name).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the same app and API key");
    assert_eq!(again.replayed.as_deref(), Some("true"));
    let n: i64 = apps::table.count().get_result(&mut *app.conn()).unwrap();
    assert_eq!(n, 1);

    let key = first.body["apiKey"].as_str().unwrap().to_owned();
    let hook = json!({"uri": "https://example.com/h", "event": "channel_live,channel_ended"});
    let w1 = post(&app, "/v1/webhook", &key, Some(b"hook-1"), &hook).await;
    assert_eq!(w1.status, 201, "{:?}", w1.body);
    let w2 = post(&app, "/v1/webhook", &key, Some(b"hook-1"), &hook).await;
    assert_eq!(w2.status, 201);
    assert_eq!(w2.body, w1.body, "the same webhook and secret");
    assert!(w2.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(w2.replayed.as_deref(), Some("true"));

    // Keys are per app: another app's same key is its own request.
    let (_, other_key) = app.create_app("other").await;
    let w3 = post(&app, "/v1/webhook", &other_key, Some(b"hook-1"), &hook).await;
    assert_eq!(w3.status, 201);
    assert_eq!(w3.replayed, None);
    assert_ne!(w3.body["id"], w1.body["id"]);
    let n: i64 = webhooks::table
        .count()
        .get_result(&mut *app.conn())
        .unwrap();
    assert_eq!(n, 2);
}

async fn keys_survive_a_restart(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let db = Arc::new(db);
    let first = TestApp::spawn_with(db.clone(), |_| {}).await;
    let (app_id, _) = first.create_app("tv").await;
    let body = event_body(&app_id, "a");
    let r1 = post(&first, "/v1/events", ADMIN_TOKEN, Some(b"restart"), &body).await;
    assert_eq!(r1.status, 202);
    first.broker.shutdown(Duration::from_secs(1)).await;

    let second = TestApp::spawn_with(db.clone(), |_| {}).await;
    let r2 = post(&second, "/v1/events", ADMIN_TOKEN, Some(b"restart"), &body).await;
    assert_eq!(r2.status, 202);
    assert_eq!(r2.body, r1.body);
    assert_eq!(r2.replayed.as_deref(), Some("true"));
    assert_eq!(event_count(&second), 1);
}

async fn the_janitor_prunes_expired_keys(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let now = now_ms();
    let mut expired = in_flight("admin", "old", now - 100_000);
    expired.expires_at = now - 1;
    keys::claim(&mut app.conn(), &expired, 0).unwrap();
    keys::claim(&mut app.conn(), &in_flight("admin", "live", now), 0).unwrap();

    let pruned = app.broker.janitor.send(PruneNow).await.unwrap().unwrap();
    assert_eq!(pruned.idempotency_keys, 1);
    let left: Vec<String> = idempotency_keys::table
        .select(idempotency_keys::idem_key)
        .load(&mut *app.conn())
        .unwrap();
    assert_eq!(left, vec!["live".to_owned()]);
}

async fn an_in_process_event_with_a_key_is_accepted_once(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    let channel = json!({"id": "ch-7"}).as_object().unwrap().clone();
    let event = ChannelEvent::new(&app_id, EventKind::ChannelLive, channel.clone())
        .with_idempotency_key("in-1");
    let dispatcher = &app.broker.dispatcher;
    let first = dispatcher.send(event.clone()).await.unwrap().unwrap();
    let again = dispatcher.send(event).await.unwrap().unwrap();
    assert_eq!(again, first, "the same EventAccepted, the same id");
    assert_eq!(event_count(&app), 1);

    let different = ChannelEvent::new(&app_id, EventKind::ChannelEnded, channel.clone())
        .with_idempotency_key("in-1");
    let e = dispatcher.send(different).await.unwrap().unwrap_err();
    assert!(matches!(e, BrokerError::IdempotencyKeyReused(_)), "{e:?}");

    // In-process keys are not the admin's HTTP keys.
    let r = post(
        &app,
        "/v1/events",
        ADMIN_TOKEN,
        Some(b"in-1"),
        &event_body(&app_id, "a"),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.replayed, None);

    let bad = ChannelEvent::new(&app_id, EventKind::ChannelLive, channel).with_idempotency_key("");
    let e = dispatcher.send(bad).await.unwrap().unwrap_err();
    assert_eq!(e.code(), "invalid_idempotency_key");
    assert_eq!(event_count(&app), 2);
}

on_both_stores!(
    an_event_sent_twice_with_one_key_is_stored_and_delivered_once,
    the_same_key_with_a_different_body_answers_422,
    a_key_in_flight_answers_409_until_it_is_abandoned,
    concurrent_requests_with_one_key_make_one_event,
    a_failed_request_is_not_stored_so_the_key_can_be_used_again,
    an_invalid_key_answers_400_naming_the_header,
    creating_an_app_or_a_webhook_twice_with_one_key_replays_the_secret,
    keys_survive_a_restart,
    the_janitor_prunes_expired_keys,
    an_in_process_event_with_a_key_is_accepted_once,
);

/// Two instances on one MariaDB database: a key used on one replays on the
/// other, and a key in flight on one answers 409 on the other.
#[cfg(feature = "mysql")]
#[actix_web::test]
async fn a_key_used_on_one_instance_replays_on_another() {
    let Some(db) = TestDb::new(Store::Mysql) else {
        return;
    };
    let db = Arc::new(db);
    let a = TestApp::spawn_with(db.clone(), |c| c.instance_id = "a".into()).await;
    let b = TestApp::spawn_with(db.clone(), |c| c.instance_id = "b".into()).await;
    let (app_id, _) = a.create_app("tv").await;
    // The app must be known on B too (the change log brings it within 1 s).
    let body = event_body(&app_id, "a");
    let mut on_b = None;
    for _ in 0..50 {
        let r = post(
            &b,
            "/v1/events",
            ADMIN_TOKEN,
            None,
            &json!({"event": "channel_stop", "appId": app_id, "channel": {}}),
        )
        .await;
        if r.status == 202 {
            on_b = Some(r);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(on_b.is_some(), "the app reached instance b");

    let r1 = post(&a, "/v1/events", ADMIN_TOKEN, Some(b"shared"), &body).await;
    assert_eq!(r1.status, 202);
    let r2 = post(&b, "/v1/events", ADMIN_TOKEN, Some(b"shared"), &body).await;
    assert_eq!(r2.status, 202);
    assert_eq!(r2.body, r1.body);
    assert_eq!(r2.replayed.as_deref(), Some("true"));

    // In flight on A (its row), so 409 on B.
    keys::claim(&mut a.conn(), &in_flight("admin", "busy", now_ms()), 0).unwrap();
    let r = post(&b, "/v1/events", ADMIN_TOKEN, Some(b"busy"), &body).await;
    assert_eq!(r.status, 409);
    assert_eq!(event_count(&a), 2);
}
