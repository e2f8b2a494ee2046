//! Admin and app authentication, app creation, event ingest validation, body
//! limits and the routes around them, on SQLite and MariaDB.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{assert_error, Receiver, Reply, Store, TestApp, ADMIN_TOKEN};

/// Asserts a reply is the broker's JSON error with `status`:
/// `{"error": {"code": "...", "message": "..."}}`.
/// Sends a request with an exact `Authorization` header value (or none).
async fn call_with_authorization(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut req = client.request(method, format!("{}{path}", app.base));
    if let Some(value) = authorization {
        req = req.insert_header(("Authorization", value));
    }
    let mut res = match body {
        Some(b) => req.send_json(b).await,
        None => req.send().await,
    }
    .expect("request reaches the broker");
    let bytes = res.body().limit(1024 * 1024).await.expect("body");
    Reply {
        status: res.status(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A webhook body every endpoint would accept.
fn webhook_body() -> Value {
    json!({"uri": "https://example.com/hook", "event": "all"})
}

/// Every endpoint with a body it would accept from the right caller.
fn endpoints(app_id: &str, webhook_id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("POST", "/v1/apps".into(), Some(json!({"name": "x"}))),
        (
            "POST",
            "/v1/events".into(),
            Some(json!({"event": "channel_live", "appId": app_id, "channel": {}})),
        ),
        ("POST", "/v1/webhook".into(), Some(webhook_body())),
        ("GET", "/v1/webhook".into(), None),
        ("GET", format!("/v1/webhook/{webhook_id}"), None),
        (
            "PUT",
            format!("/v1/webhook/{webhook_id}"),
            Some(webhook_body()),
        ),
        ("DELETE", format!("/v1/webhook/{webhook_id}"), None),
        ("GET", format!("/v1/webhook/{webhook_id}/secret"), None),
    ]
}

async fn a_request_without_authorization_answers_401_with_a_json_error(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app
        .create_webhook(&key, "https://example.com/a", json!("all"))
        .await;
    let webhook_id = webhook["id"].as_str().unwrap();
    for (method, path, body) in endpoints(&app_id, webhook_id) {
        let r = app.call(method, &path, None, body.as_ref()).await;
        assert_error(&r, 401, &format!("{method} {path}"));
        assert_eq!(r.body["error"]["code"], "unauthorized", "{method} {path}");
    }
    // Nothing was changed by the refused calls.
    let r = app
        .call(
            "GET",
            &format!("/v1/webhook/{webhook_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn a_wrong_token_answers_401(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app
        .create_webhook(&key, "https://example.com/a", json!("all"))
        .await;
    let webhook_id = webhook["id"].as_str().unwrap();
    let almost_admin = format!("{ADMIN_TOKEN}x");
    let almost_key = format!("{key}x");
    for token in ["wrong", almost_admin.as_str(), almost_key.as_str()] {
        for (method, path, body) in endpoints(&app_id, webhook_id) {
            let r = app.call(method, &path, Some(token), body.as_ref()).await;
            assert_error(&r, 401, &format!("{method} {path} with {token}"));
        }
    }
    let r = app
        .call(
            "GET",
            &format!("/v1/webhook/{webhook_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "the webhook is still there: {:?}", r.body);
}

async fn a_wrong_token_is_refused_before_the_body_is_read(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let w = app
        .create_webhook(&key, "https://example.com/a", json!("all"))
        .await;
    let put_path = format!("/v1/webhook/{}", w["id"].as_str().unwrap());
    let cases = [
        ("POST", "/v1/apps", b"{not json".to_vec()),
        ("POST", "/v1/events", b"{not json".to_vec()),
        ("POST", "/v1/webhook", b"{not json".to_vec()),
        ("PUT", put_path.as_str(), b"{not json".to_vec()),
        ("POST", "/v1/apps", br#"{"name": 1}"#.to_vec()),
        ("POST", "/v1/webhook", br#"{"uri": 1}"#.to_vec()),
    ];
    // A caller with a wrong token learns nothing about the body: every
    // answer is the 401, whatever the body holds.
    let mut answers = Vec::new();
    for (method, path, body) in &cases {
        let shown = String::from_utf8_lossy(body).into_owned();
        let r = app.call_raw(method, path, "wrong", body.clone()).await;
        answers.push((format!("{method} {path} {shown}"), r.status.as_u16()));
    }
    assert!(
        answers.iter().all(|(_, status)| *status == 401),
        "a wrong token with a bad body: {answers:?}"
    );
    // The right token with the same body is what gets the 400.
    let r = app
        .call_raw("POST", "/v1/webhook", &key, b"{not json".to_vec())
        .await;
    assert_error(&r, 400, "malformed body with a valid key");
}

async fn a_non_bearer_scheme_answers_401(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    let basic_admin = format!("Basic {ADMIN_TOKEN}");
    let token_admin = format!("Token {ADMIN_TOKEN}");
    let bare_admin = ADMIN_TOKEN.to_owned();
    let basic_key = format!("Basic {key}");
    let bare_key = key.clone();
    for value in [
        basic_admin.as_str(),
        token_admin.as_str(),
        bare_admin.as_str(),
        "Bearer",
        "Bearer ",
    ] {
        let r = call_with_authorization(
            &app,
            "POST",
            "/v1/apps",
            Some(value),
            Some(&json!({"name": "x"})),
        )
        .await;
        assert_error(&r, 401, &format!("POST /v1/apps with `{value}`"));
    }
    for value in [basic_key.as_str(), bare_key.as_str(), "Bearer", "Bearer "] {
        let r = call_with_authorization(&app, "GET", "/v1/webhook", Some(value), None).await;
        assert_error(&r, 401, &format!("GET /v1/webhook with `{value}`"));
    }
    // The scheme itself is case-insensitive.
    let lower = format!("bearer {key}");
    let r = call_with_authorization(&app, "GET", "/v1/webhook", Some(&lower), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn an_app_key_cannot_call_admin_endpoints(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let r = app
        .call(
            "POST",
            "/v1/apps",
            Some(&key),
            Some(&json!({"name": "sneaky"})),
        )
        .await;
    assert_error(&r, 403, "an app key on POST /v1/apps");
    assert_eq!(r.body["error"]["code"], "forbidden");
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(&key),
            Some(&json!({"event": "channel_live", "appId": app_id, "channel": {"id": 1}})),
        )
        .await;
    assert_error(&r, 403, "an app key on POST /v1/events");
    assert_eq!(r.body["error"]["code"], "forbidden");
}

async fn the_admin_token_is_not_an_app_key(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app
        .create_webhook(&key, "https://example.com/a", json!("all"))
        .await;
    let webhook_id = webhook["id"].as_str().unwrap();
    for (method, path, body) in endpoints(&app_id, webhook_id)
        .into_iter()
        .filter(|(_, path, _)| path.starts_with("/v1/webhook"))
    {
        let r = app
            .call(method, &path, Some(ADMIN_TOKEN), body.as_ref())
            .await;
        assert_error(&r, 403, &format!("the admin token on {method} {path}"));
        assert_eq!(r.body["error"]["code"], "forbidden");
    }
    // The admin's attempts changed nothing.
    let r = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(r.body["total"], 1, "{:?}", r.body);
    assert_eq!(r.body["data"][0]["uri"], "https://example.com/a");
}

async fn a_new_app_gets_an_id_a_name_and_a_working_api_key(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let r = app
        .call(
            "POST",
            "/v1/apps",
            Some(ADMIN_TOKEN),
            Some(&json!({"name": "Channel TV"})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().expect("id is a string");
    assert!(!id.is_empty());
    assert_eq!(r.body["name"], "Channel TV");
    let key = r.body["apiKey"].as_str().expect("apiKey is a string");
    assert!(key.len() >= 20, "a short key: {key}");
    assert_ne!(key, ADMIN_TOKEN);

    let r = app.call("GET", "/v1/webhook", Some(key), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["total"], 0);
    let r = app
        .call("POST", "/v1/webhook", Some(key), Some(&webhook_body()))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn an_app_name_is_trimmed_and_kept_exactly(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let r = app
        .call(
            "POST",
            "/v1/apps",
            Some(ADMIN_TOKEN),
            Some(&json!({"name": "  News 24  "})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["name"], "News 24");
    // 255 characters, many of them outside the BMP, fit on every store.
    let name: String = "📺é".repeat(127) + "x";
    assert_eq!(name.chars().count(), 255);
    let r = app
        .call(
            "POST",
            "/v1/apps",
            Some(ADMIN_TOKEN),
            Some(&json!({ "name": name })),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["name"], name.as_str());
}

async fn an_invalid_app_name_is_refused(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let too_long = "n".repeat(256);
    for (body, status) in [
        (json!({"name": ""}), 400),
        (json!({"name": "   "}), 400),
        (json!({"name": "\t\n"}), 400),
        (json!({ "name": too_long }), 400),
        (json!({}), 422),
        (json!({"name": null}), 422),
        (json!({"name": 42}), 422),
        (json!({"name": ["a"]}), 422),
    ] {
        let r = app
            .call("POST", "/v1/apps", Some(ADMIN_TOKEN), Some(&body))
            .await;
        assert_error(&r, status, &format!("POST /v1/apps {body}"));
    }
    let r = app
        .call_raw("POST", "/v1/apps", ADMIN_TOKEN, b"{\"name\": ".to_vec())
        .await;
    assert_error(&r, 400, "truncated JSON");
    let r = app
        .call_raw("POST", "/v1/apps", ADMIN_TOKEN, Vec::new())
        .await;
    assert!(r.status.is_client_error(), "an empty body: {:?}", r);
    assert!(r.body["error"]["code"].is_string(), "{:?}", r.body);
}

async fn two_apps_get_different_ids_and_keys(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (id_a, key_a) = app.create_app("same name").await;
    let (id_b, key_b) = app.create_app("same name").await;
    assert_ne!(id_a, id_b);
    assert_ne!(key_a, key_b);
    // Each key stands for its own app.
    app.create_webhook(&key_a, "https://example.com/a", json!("all"))
        .await;
    let r = app.call("GET", "/v1/webhook", Some(&key_a), None).await;
    assert_eq!(r.body["total"], 1, "{:?}", r.body);
    let r = app.call("GET", "/v1/webhook", Some(&key_b), None).await;
    assert_eq!(r.body["total"], 0, "{:?}", r.body);
}

async fn an_unknown_event_name_is_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    for event in [
        "channel_paused",
        "all",
        "",
        "CHANNEL_LIVE",
        "channel_live,channel_stop",
    ] {
        let r = app.send_event(&app_id, event, json!({"id": 1})).await;
        assert_error(&r, 400, &format!("event {event:?}"));
    }
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"event": 3, "appId": app_id, "channel": {}})),
        )
        .await;
    assert_error(&r, 422, "a numeric event");
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"appId": app_id, "channel": {}})),
        )
        .await;
    assert_error(&r, 422, "no event");
}

async fn an_event_for_an_unknown_app_is_refused_with_422(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let receiver = Receiver::start();
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    for unknown in ["app_doesnotexist", "", &format!("{app_id}x")] {
        let r = app
            .send_event(unknown, "channel_live", json!({"id": 1}))
            .await;
        assert_error(&r, 422, &format!("appId {unknown:?}"));
    }
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"event": "channel_live", "channel": {}})),
        )
        .await;
    assert_error(&r, 422, "no appId");
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty(), "nothing was delivered");
}

async fn a_channel_that_is_not_an_object_is_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    for channel in [
        json!([1, 2]),
        json!("ch-1"),
        json!(null),
        json!(7),
        json!(true),
    ] {
        let r = app
            .send_event(&app_id, "channel_live", channel.clone())
            .await;
        assert_error(&r, 400, &format!("channel {channel}"));
        assert_eq!(r.body["error"]["code"], "invalid_channel");
    }
    let r = app.send_event(&app_id, "channel_live", json!({})).await;
    assert_eq!(r.status, 202, "an empty object is a channel: {:?}", r.body);
}

async fn an_event_without_a_channel_is_refused_with_422(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"event": "channel_live", "appId": app_id})),
        )
        .await;
    assert_error(&r, 422, "no channel");
}

async fn malformed_json_is_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    let truncated = format!(r#"{{"event":"channel_live","appId":"{app_id}","channel":{{"id":1"#);
    let trailing = format!(r#"{{"event":"channel_live","appId":"{app_id}","channel":{{}}}} x"#);
    for body in [
        truncated.as_bytes().to_vec(),
        trailing.as_bytes().to_vec(),
        b"not json at all".to_vec(),
        b"{'event': 'channel_live'}".to_vec(),
        vec![0xff, 0xfe, 0x00],
    ] {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let r = app.call_raw("POST", "/v1/events", ADMIN_TOKEN, body).await;
        assert_error(&r, 400, &format!("body {shown:?}"));
    }
}

async fn event_time_defaults_to_now(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, &receiver.url, json!("channel_live"))
        .await;
    let before = webhook_broker::db::now_ms();
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "c1"}))
        .await;
    let after = webhook_broker::db::now_ms();
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], 1);
    assert!(r.body["id"].is_string());

    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let time = got[0].json()["eventTime"]
        .as_i64()
        .expect("eventTime is a number");
    assert!(
        (before..=after).contains(&time),
        "eventTime {time} is not between {before} and {after}"
    );
}

async fn a_negative_event_time_is_refused_with_400(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("tv").await;
    for time in [json!(-1), json!(i64::MIN)] {
        let r = app
            .call(
                "POST",
                "/v1/events",
                Some(ADMIN_TOKEN),
                Some(&json!({"event": "channel_live", "appId": app_id, "eventTime": time, "channel": {}})),
            )
            .await;
        assert_error(&r, 400, &format!("eventTime {time}"));
        assert_eq!(r.body["error"]["code"], "invalid_event_time");
    }
    for time in [json!("1476697473034"), json!(1.5), json!(u64::MAX)] {
        let r = app
            .call(
                "POST",
                "/v1/events",
                Some(ADMIN_TOKEN),
                Some(&json!({"event": "channel_live", "appId": app_id, "eventTime": time, "channel": {}})),
            )
            .await;
        assert!(r.status.is_client_error(), "eventTime {time}: {:?}", r);
        assert!(r.body["error"]["code"].is_string(), "{:?}", r.body);
    }
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"event": "channel_live", "appId": app_id, "eventTime": 0, "channel": {}})),
        )
        .await;
    assert_eq!(r.status, 202, "the epoch itself is a time: {:?}", r.body);
}

async fn a_channel_id_longer_than_255_characters_is_not_a_server_error(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    app.create_webhook(&key, "https://example.com/hook", json!("all"))
        .await;
    let long_id = "c".repeat(300);
    let r = app
        .send_event(&app_id, "channel_live", json!({ "id": long_id }))
        .await;
    assert!(
        r.status.is_success() || r.status.is_client_error(),
        "a 300-character channel id: {:?}",
        r
    );
    let r = app
        .send_event(
            &app_id,
            "channel_live",
            json!({ "id": {"nested": "x".repeat(300)} }),
        )
        .await;
    assert!(
        r.status.is_success() || r.status.is_client_error(),
        "a long non-string channel id: {:?}",
        r
    );
}

async fn a_body_over_the_limit_answers_413(store: Store) {
    let Some(db) = common::TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| c.max_body = 2048).await;
    let (app_id, key) = app.create_app("tv").await;
    let big = "x".repeat(4096);

    let r = app
        .call(
            "POST",
            "/v1/apps",
            Some(ADMIN_TOKEN),
            Some(&json!({ "name": big })),
        )
        .await;
    assert_error(&r, 413, "POST /v1/apps");
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"event": "channel_live", "appId": app_id, "channel": {"title": big}})),
        )
        .await;
    assert_error(&r, 413, "POST /v1/events");
    let r = app
        .call(
            "POST",
            "/v1/webhook",
            Some(&key),
            Some(&json!({"uri": format!("https://example.com/{big}"), "event": "all"})),
        )
        .await;
    assert_error(&r, 413, "POST /v1/webhook");

    // A body under the limit still goes through.
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({"event": "channel_live", "appId": app_id, "channel": {"title": "x".repeat(1500)}})),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let r = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(r.body["total"], 0, "{:?}", r.body);
}

async fn deeply_nested_json_is_refused_quickly_and_the_broker_keeps_answering(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("tv").await;
    let depth = 100_000;
    for closed in [false, true] {
        let mut body = format!(r#"{{"event":"channel_live","appId":"{app_id}","channel":{{"x":"#);
        body.push_str(&"[".repeat(depth));
        if closed {
            body.push_str(&"]".repeat(depth));
        }
        body.push_str("}}");
        let started = Instant::now();
        let r = app
            .call_raw("POST", "/v1/events", ADMIN_TOKEN, body.into_bytes())
            .await;
        assert_error(
            &r,
            400,
            &format!("{depth} nested arrays (closed: {closed})"),
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
    let mut body = r#"{"uri":"https://example.com/hook","event":"#.to_owned();
    body.push_str(&"[".repeat(depth));
    let r = app
        .call_raw("POST", "/v1/webhook", &key, body.into_bytes())
        .await;
    assert_error(&r, 400, "nested arrays in a webhook body");

    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": 1}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
}

async fn an_unknown_route_answers_404_with_a_json_error(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    for (method, path, token) in [
        ("GET", "/v1/nope", Some(ADMIN_TOKEN)),
        ("GET", "/", None),
        ("POST", "/v2/apps", Some(ADMIN_TOKEN)),
        ("GET", "/v1/webhooks", Some(key.as_str())),
        ("GET", "/v1/webhook/wh_x/secret/more", Some(key.as_str())),
    ] {
        let r = app.call(method, path, token, None).await;
        assert_error(&r, 404, &format!("{method} {path}"));
        assert_eq!(r.body["error"]["code"], "not_found");
    }
}

async fn a_wrong_method_answers_405_with_a_json_error(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("tv").await;
    for (method, path, token) in [
        ("GET", "/v1/apps", ADMIN_TOKEN),
        ("DELETE", "/v1/apps", ADMIN_TOKEN),
        ("GET", "/v1/events", ADMIN_TOKEN),
        ("DELETE", "/v1/webhook", key.as_str()),
        ("POST", "/v1/webhook/wh_x", key.as_str()),
        ("DELETE", "/v1/webhook/wh_x/secret", key.as_str()),
    ] {
        let r = app.call(method, path, Some(token), None).await;
        assert_error(&r, 405, &format!("{method} {path}"));
        assert_eq!(r.body["error"]["code"], "method_not_allowed");
    }
}

async fn the_health_check_answers_200(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "ok");
}

on_both_stores!(
    a_request_without_authorization_answers_401_with_a_json_error,
    a_wrong_token_answers_401,
    a_wrong_token_is_refused_before_the_body_is_read,
    a_non_bearer_scheme_answers_401,
    an_app_key_cannot_call_admin_endpoints,
    the_admin_token_is_not_an_app_key,
    a_new_app_gets_an_id_a_name_and_a_working_api_key,
    an_app_name_is_trimmed_and_kept_exactly,
    an_invalid_app_name_is_refused,
    two_apps_get_different_ids_and_keys,
    an_unknown_event_name_is_refused_with_400,
    an_event_for_an_unknown_app_is_refused_with_422,
    a_channel_that_is_not_an_object_is_refused_with_400,
    an_event_without_a_channel_is_refused_with_422,
    malformed_json_is_refused_with_400,
    event_time_defaults_to_now,
    a_negative_event_time_is_refused_with_400,
    a_channel_id_longer_than_255_characters_is_not_a_server_error,
    a_body_over_the_limit_answers_413,
    deeply_nested_json_is_refused_quickly_and_the_broker_keeps_answering,
    an_unknown_route_answers_404_with_a_json_error,
    a_wrong_method_answers_405_with_a_json_error,
    the_health_check_answers_200,
);
