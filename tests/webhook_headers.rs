//! Custom headers per webhook: validation, how every webhook answer shows
//! them, PUT replacing or keeping them, and a real receiver getting them on
//! every attempt (retries included), on SQLite and MariaDB.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use common::{assert_error, Receiver, Store, TestApp};

async fn create(app: &TestApp, key: &str, body: Value) -> common::Reply {
    app.call("POST", "/v1/webhook", Some(key), Some(&body))
        .await
}

async fn put(app: &TestApp, key: &str, id: &str, body: Value) -> common::Reply {
    app.call("PUT", &format!("/v1/webhook/{id}"), Some(key), Some(&body))
        .await
}

/// Asserts a 400 `invalid_headers` whose message names `name`.
fn assert_refused(r: &common::Reply, name: &str, context: &str) {
    assert_error(r, 400, context);
    assert_eq!(
        r.body["error"]["code"], "invalid_headers",
        "{context}: {:?}",
        r.body
    );
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(name),
        "{context}: the message does not name {name}: {message}"
    );
}

const REFUSED: [&str; 17] = [
    "webhook-id",
    "Webhook-Signature",
    "WEBHOOK-TIMESTAMP",
    "webhook-anything",
    "content-type",
    "Content-Length",
    "host",
    "User-Agent",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

async fn headers_round_trip_in_every_webhook_answer(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let headers = json!({"Authorization": "Bearer s3cr3t", "X-Tenant": "acme", "x-empty": ""});
    let r = create(
        &app,
        &key,
        json!({"uri": "https://example.com/a", "event": "all", "headers": headers}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["headers"], headers);
    let id = r.body["id"].as_str().unwrap().to_owned();

    let plain = app
        .create_webhook(&key, "https://example.com/b", json!("all"))
        .await;
    assert_eq!(plain["headers"], json!({}), "no headers show as {{}}");

    let got = app
        .call("GET", &format!("/v1/webhook/{id}"), Some(&key), None)
        .await;
    assert_eq!(got.body["headers"], headers);
    let page = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(page.body["data"][0]["headers"], headers);
    assert_eq!(page.body["data"][1]["headers"], json!({}));
    let r = put(
        &app,
        &key,
        &id,
        json!({"uri": "https://example.com/a", "event": "all", "status": "disabled"}),
    )
    .await;
    assert_eq!(
        r.body["headers"], headers,
        "a disabled webhook shows them too"
    );
}

async fn custom_headers_are_sent_on_every_attempt_including_a_retry(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[500]);
    let (app_id, key) = app.create_app("tv").await;
    let r = create(
        &app,
        &key,
        json!({"uri": receiver.url, "event": "all",
               "headers": {"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        app.send_event(&app_id, "channel_live", json!({"id": "c"}))
            .await
            .status,
        202
    );
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "a failure then its retry");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    for req in &got {
        assert_eq!(req.header("authorization"), Some("Bearer s3cr3t"));
        assert_eq!(req.header("x-tenant"), Some("acme"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert!(req.header("webhook-signature").unwrap().starts_with("v1,"));
    }
}

async fn each_refused_header_name_answers_400_naming_it(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let id = app
        .create_webhook(&key, "https://example.com/a", json!("all"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in REFUSED {
        let mut headers = Map::new();
        headers.insert("X-Fine".into(), json!("ok"));
        headers.insert(name.into(), json!("v"));
        let body = json!({"uri": "https://example.com/a", "event": "all", "headers": headers});
        assert_refused(&create(&app, &key, body.clone()).await, name, name);
        assert_refused(&put(&app, &key, &id, body).await, name, name);
    }
    let page = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(page.body["total"], 1, "nothing refused was created");
    assert_eq!(page.body["data"][0]["headers"], json!({}), "or changed");
}

async fn too_many_headers_a_1025_character_value_or_a_cr_lf_value_answer_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let many = |n: usize| -> Value {
        Value::Object((0..n).map(|i| (format!("x-h{i}"), json!("v"))).collect())
    };
    let with = |headers: Value| json!({"uri": "https://example.com/a", "event": "all", "headers": headers});

    assert_refused(
        &create(&app, &key, with(many(21))).await,
        "20",
        "21 entries",
    );
    let long = "a".repeat(1025);
    assert_refused(
        &create(&app, &key, with(json!({"X-Long": long}))).await,
        "X-Long",
        "1025 characters",
    );
    for value in ["a\r\nX-Injected: 1", "a\nb", "a\rb"] {
        assert_refused(
            &create(&app, &key, with(json!({"X-Split": value}))).await,
            "X-Split",
            &format!("{value:?}"),
        );
    }
    for name in ["bad name", "a:b", "x\"y", "é"] {
        assert_refused(
            &create(&app, &key, with(json!({ name: "v" }))).await,
            name,
            name,
        );
    }
    let r = create(&app, &key, with(json!({"X-Number": 5}))).await;
    assert_refused(&r, "X-Number", "a number value");

    // The limits themselves are fine.
    let r = create(&app, &key, with(many(20))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = create(&app, &key, with(json!({"X-Long": "é".repeat(1024)}))).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn put_with_headers_replaces_them_and_put_without_keeps_them(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("tv").await;
    let r = create(
        &app,
        &key,
        json!({"uri": receiver.url, "event": "all", "headers": {"X-A": "1", "X-B": "2"}}),
    )
    .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let uri = receiver.url.clone();
    // A running delivery actor, which each change must retarget.
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].header("x-a"), Some("1"));

    let r = put(
        &app,
        &key,
        &id,
        json!({"uri": uri, "event": "all", "headers": {"X-C": "3"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["headers"],
        json!({"X-C": "3"}),
        "replaced, not merged"
    );
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].header("x-c"), Some("3"));
    assert_eq!(got[1].header("x-a"), None);

    let r = put(
        &app,
        &key,
        &id,
        json!({"uri": uri, "event": "channel_live"}),
    )
    .await;
    assert_eq!(
        r.body["headers"],
        json!({"X-C": "3"}),
        "kept without headers"
    );
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got[2].header("x-c"), Some("3"));

    let r = put(
        &app,
        &key,
        &id,
        json!({"uri": uri, "event": "all", "headers": {}}),
    )
    .await;
    assert_eq!(r.body["headers"], json!({}), "an empty object removes them");
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(got[3].header("x-c"), None);
}

async fn headers_survive_a_restart(store: Store) {
    let Some(first) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = first.create_app("tv").await;
    let r = create(
        &first,
        &key,
        json!({"uri": "https://example.com/a", "event": "all", "headers": {"X-Tenant": "acme"}}),
    )
    .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let db = Arc::clone(&first.db);
    first.broker.shutdown(Duration::from_secs(1)).await;
    drop(first);
    let second = TestApp::spawn_with(db, |_| {}).await;
    let got = second
        .call("GET", &format!("/v1/webhook/{id}"), Some(&key), None)
        .await;
    assert_eq!(got.body["headers"], json!({"X-Tenant": "acme"}));
}

on_both_stores!(
    headers_round_trip_in_every_webhook_answer,
    custom_headers_are_sent_on_every_attempt_including_a_retry,
    each_refused_header_name_answers_400_naming_it,
    too_many_headers_a_1025_character_value_or_a_cr_lf_value_answer_400,
    put_with_headers_replaces_them_and_put_without_keeps_them,
    headers_survive_a_restart,
);
