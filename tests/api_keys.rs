//! API keys: several keys per app (created, listed and revoked by the
//! admin, at most 10 at once), ingest keys that may only send events
//! (optionally for some apps), a revoked key refused at once, and only
//! hashes stored; on SQLite and MariaDB.

mod common;

use std::time::Duration;

use actix_web::http::StatusCode;
use diesel::prelude::*;
use serde_json::{json, Value};

use common::{assert_error, Receiver, Reply, Store, TestApp, ADMIN_TOKEN};
use webhook_broker::db::apps::hash_api_key;
use webhook_broker::db::schema::api_keys;

async fn create_key(app: &TestApp, app_id: &str, body: Option<Value>) -> Reply {
    app.call(
        "POST",
        &format!("/v1/apps/{app_id}/keys"),
        Some(ADMIN_TOKEN),
        body.as_ref(),
    )
    .await
}

async fn list_keys(app: &TestApp, app_id: &str) -> Reply {
    app.call(
        "GET",
        &format!("/v1/apps/{app_id}/keys"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await
}

async fn revoke_key(app: &TestApp, app_id: &str, key_id: &str) -> Reply {
    app.call(
        "DELETE",
        &format!("/v1/apps/{app_id}/keys/{key_id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await
}

async fn create_ingest_key(app: &TestApp, body: Option<Value>) -> Reply {
    app.call("POST", "/v1/ingest-keys", Some(ADMIN_TOKEN), body.as_ref())
        .await
}

async fn ingest(app: &TestApp, token: &str, app_id: &str, channel: &str) -> Reply {
    app.call(
        "POST",
        "/v1/events",
        Some(token),
        Some(&json!({"event": "channel_live", "appId": app_id, "channel": {"id": channel}})),
    )
    .await
}

async fn webhooks_status(app: &TestApp, key: &str) -> StatusCode {
    app.call("GET", "/v1/webhook", Some(key), None).await.status
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

async fn an_app_key_is_shown_once_and_listed_by_id_prefix_and_times_never_in_full(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, first) = app.create_app("keys").await;

    let created = create_key(&app, &app_id, Some(json!({"name": "rotation"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let second = str_of(&created.body, "apiKey").to_owned();
    let second_id = str_of(&created.body, "id").to_owned();
    assert!(second.starts_with("wbk_") && second != first);
    assert!(second_id.starts_with("key_"));
    assert_eq!(created.body["name"], "rotation");
    assert!(created.body["createdAt"].as_i64().unwrap() > 0);
    assert_eq!(str_of(&created.body, "prefix"), &second[..12]);

    // Both keys speak for the app.
    assert_eq!(webhooks_status(&app, &first).await, StatusCode::OK);
    assert_eq!(webhooks_status(&app, &second).await, StatusCode::OK);

    let listed = list_keys(&app, &app_id).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let keys = listed.body["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let text = listed.body.to_string();
    assert!(!text.contains(&first[12..]) && !text.contains(&second[12..]));
    assert!(keys.iter().all(|k| k.get("apiKey").is_none()));
    assert_eq!(keys[1]["id"], second_id.as_str());
    assert_eq!(keys[1]["prefix"], &second[..12]);
    assert!(str_of(&keys[0], "prefix").starts_with("wbk_"));

    // Use is recorded (to within a minute), without a write per request.
    let mut last_used = Value::Null;
    for _ in 0..100 {
        let keys = list_keys(&app, &app_id).await.body;
        last_used = keys["data"][1]["lastUsedAt"].clone();
        if last_used.is_i64() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last_used.as_i64().unwrap() >= created.body["createdAt"].as_i64().unwrap(),
        "lastUsedAt: {last_used}"
    );

    // Only the hash is stored.
    let mut conn = app.conn();
    let hashes: Vec<String> = api_keys::table
        .select(api_keys::key_hash)
        .load(&mut *conn)
        .unwrap();
    assert!(hashes.contains(&hash_api_key(&second)));
    assert!(hashes.iter().all(|h| !h.contains(&second[4..])));
}

async fn a_revoked_key_is_refused_at_once_and_the_others_keep_working(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, first) = app.create_app("rotate").await;
    let (other_app, _) = app.create_app("other").await;
    let second = create_key(&app, &app_id, None).await.body;
    let first_id = list_keys(&app, &app_id).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another app's path does not reach this app's key.
    assert_error(
        &revoke_key(&app, &other_app, &first_id).await,
        404,
        "revoke through another app",
    );
    let r = revoke_key(&app, &app_id, &first_id).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, json!({}));

    let refused = app.call("GET", "/v1/webhook", Some(&first), None).await;
    assert_error(&refused, 401, "the revoked key");
    assert_eq!(
        webhooks_status(&app, str_of(&second, "apiKey")).await,
        StatusCode::OK
    );
    assert_error(
        &revoke_key(&app, &app_id, &first_id).await,
        404,
        "revoked twice",
    );
    let keys = list_keys(&app, &app_id).await.body;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys["data"][0]["id"], second["id"]);
}

async fn an_app_holds_at_most_ten_keys(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("ten").await;
    let mut ids = Vec::new();
    for _ in 1..10 {
        let r = create_key(&app, &app_id, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        ids.push(str_of(&r.body, "id").to_owned());
    }
    let over = create_key(&app, &app_id, None).await;
    assert_error(&over, 409, "the eleventh key");
    assert!(over.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("10"));
    assert_eq!(
        list_keys(&app, &app_id).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        revoke_key(&app, &app_id, &ids[0]).await.status,
        StatusCode::OK
    );
    let again = create_key(&app, &app_id, None).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
}

async fn key_endpoints_are_for_the_admin_only_and_name_what_is_wrong(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("admin-only").await;
    let path = format!("/v1/apps/{app_id}/keys");
    assert_error(
        &app.call("POST", &path, Some(&key), None).await,
        403,
        "an app key creating keys",
    );
    assert_error(
        &app.call("GET", &path, Some(&key), None).await,
        403,
        "an app key listing keys",
    );
    assert_error(&app.call("GET", &path, None, None).await, 401, "no token");
    assert_error(
        &app.call("GET", "/v1/ingest-keys", Some(&key), None).await,
        403,
        "an app key listing ingest keys",
    );
    assert_error(
        &create_key(&app, "app_missing", None).await,
        404,
        "create for an unknown app",
    );
    assert_error(
        &list_keys(&app, "app_missing").await,
        404,
        "list of an unknown app",
    );
    assert_error(
        &revoke_key(&app, &app_id, "key_missing").await,
        404,
        "revoke an unknown key",
    );
    let bad = create_key(&app, &app_id, Some(json!({"name": "  "}))).await;
    assert_error(&bad, 400, "a blank name");
    assert_eq!(bad.body["error"]["code"], "invalid_name");
    let bad = create_key(&app, &app_id, Some(json!({"name": 5}))).await;
    assert_error(&bad, 422, "a name of the wrong type");
    let bad = app
        .call_raw("POST", &path, ADMIN_TOKEN, b"{not json".to_vec())
        .await;
    assert_error(&bad, 400, "malformed JSON");
}

async fn an_ingest_key_may_send_events_and_nothing_else(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("ingest").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    let created = create_ingest_key(&app, Some(json!({"name": "eu-1"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let ingest_key = str_of(&created.body, "apiKey").to_owned();
    assert!(ingest_key.starts_with("wbi_"));
    assert_eq!(created.body["apps"], Value::Null);

    let accepted = ingest(&app, &ingest_key, &app_id, "ch-1").await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    assert_eq!(accepted.body["deliveries"], 1);
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["id"], "ch-1");

    // Its Idempotency-Keys are its own.
    let send = |token: String| {
        let app = &app;
        let app_id = app_id.clone();
        async move {
            let req = awc::Client::new()
                .post(format!("{}/v1/events", app.base))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .insert_header(("Idempotency-Key", "retry-1"));
            let mut res = req
                .send_json(
                    &json!({"event": "channel_stop", "appId": app_id, "channel": {"id": "ch-2"}}),
                )
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            (res.headers().contains_key("idempotent-replayed"), body)
        }
    };
    let (replayed, first) = send(ingest_key.clone()).await;
    assert!(!replayed);
    let (replayed, again) = send(ingest_key.clone()).await;
    assert!(replayed);
    assert_eq!(first["id"], again["id"]);
    let (replayed, admin) = send(ADMIN_TOKEN.to_owned()).await;
    assert!(!replayed, "the admin's keys are another caller's");
    assert_ne!(admin["id"], first["id"]);

    for (method, path, body) in [
        ("GET", "/v1/webhook".to_owned(), None),
        ("POST", "/v1/apps".to_owned(), Some(json!({"name": "x"}))),
        ("GET", "/v1/ingest-keys".to_owned(), None),
        ("POST", format!("/v1/apps/{app_id}/keys"), None),
        (
            "POST",
            "/v1/webhook".to_owned(),
            Some(json!({"uri": receiver.url, "event": "all"})),
        ),
    ] {
        let r = app
            .call(method, &path, Some(&ingest_key), body.as_ref())
            .await;
        assert_error(&r, 403, &format!("{method} {path} with an ingest key"));
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("POST /v1/events"),
            "{:?}",
            r.body
        );
    }
    // An app key still cannot ingest.
    assert_error(&ingest(&app, &key, &app_id, "ch-3").await, 403, "app key");
}

async fn an_ingest_key_limited_to_some_apps_refuses_events_for_the_others(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (allowed, _) = app.create_app("allowed").await;
    let (other, _) = app.create_app("other").await;
    let created = create_ingest_key(&app, Some(json!({"apps": [allowed]}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["apps"], json!([allowed]));
    let key = str_of(&created.body, "apiKey").to_owned();
    let key_id = str_of(&created.body, "id").to_owned();

    assert_eq!(
        ingest(&app, &key, &allowed, "c").await.status,
        StatusCode::ACCEPTED
    );
    let refused = ingest(&app, &key, &other, "c").await;
    assert_error(&refused, 403, "an app the key is not for");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&other));

    assert_error(
        &create_ingest_key(&app, Some(json!({"apps": ["app_nope"]}))).await,
        422,
        "an unknown app",
    );
    let empty = create_ingest_key(&app, Some(json!({"apps": []}))).await;
    assert_error(&empty, 400, "no apps");
    assert_eq!(empty.body["error"]["code"], "invalid_apps");
    assert_error(
        &create_ingest_key(&app, Some(json!({"apps": "all"}))).await,
        422,
        "apps of the wrong type",
    );

    let listed = app
        .call("GET", "/v1/ingest-keys", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let keys = listed.body["data"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["id"], key_id.as_str());
    assert_eq!(keys[0]["apps"], json!([allowed]));
    assert!(!listed.body.to_string().contains(&key[12..]));

    let path = format!("/v1/ingest-keys/{key_id}");
    let r = app.call("DELETE", &path, Some(ADMIN_TOKEN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_error(&ingest(&app, &key, &allowed, "c").await, 401, "revoked");
    assert_error(
        &app.call("DELETE", &path, Some(ADMIN_TOKEN), None).await,
        404,
        "revoked twice",
    );
}

on_both_stores!(
    an_app_key_is_shown_once_and_listed_by_id_prefix_and_times_never_in_full,
    a_revoked_key_is_refused_at_once_and_the_others_keep_working,
    an_app_holds_at_most_ten_keys,
    key_endpoints_are_for_the_admin_only_and_name_what_is_wrong,
    an_ingest_key_may_send_events_and_nothing_else,
    an_ingest_key_limited_to_some_apps_refuses_events_for_the_others,
);
