//! The app portal's API side, on SQLite and MariaDB: minting portal links,
//! what a link's token may do (exactly what the app's key may), expired
//! and foreign tokens, the page's security headers, and the webhook fields
//! and log filters the page needs.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{assert_error, Receiver, Reply, Store, TestApp, ADMIN_TOKEN};
use webhook_broker::db::now_ms;
use webhook_broker::portal_token::{mint, PortalKey};

const SETTLE: Duration = Duration::from_secs(10);

async fn mint_link(app: &TestApp, app_id: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    app.call(
        "POST",
        &format!("/v1/apps/{app_id}/portal-links"),
        token,
        body.as_ref(),
    )
    .await
}

/// The token of a fresh link for `app_id`.
async fn link_token(app: &TestApp, app_id: &str) -> String {
    let r = mint_link(app, app_id, Some(ADMIN_TOKEN), None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap();
    url.split_once("#token=").unwrap().1.to_owned()
}

/// GETs `path` until `done` holds of the body or SETTLE passes; the last body.
async fn poll(app: &TestApp, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let body = app.call("GET", path, Some(key), None).await.body;
        if done(&body) || Instant::now() >= deadline {
            return body;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A token signed as the broker signs them (the same admin token).
fn forged(app_id: &str, expires_at: i64, admin_token: &str) -> String {
    let key = PortalKey::derive(&webhook_broker::api::auth::digest(admin_token));
    mint(&key, app_id, expires_at)
}

async fn a_link_is_minted_by_the_admin_for_an_existing_app(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("portal").await;

    let before = now_ms();
    let r = mint_link(&app, &app_id, Some(ADMIN_TOKEN), None).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["url", "expiresAt"]);
    let url = r.body["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/portal#token=wbp_", app.base)),
        "{url}"
    );
    let expires = r.body["expiresAt"].as_i64().unwrap();
    assert!(
        (before + 3_600_000..=now_ms() + 3_600_000).contains(&expires),
        "an hour by default: {expires}"
    );

    let r = mint_link(
        &app,
        &app_id,
        Some(ADMIN_TOKEN),
        Some(json!({"ttl": "15m"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let expires = r.body["expiresAt"].as_i64().unwrap();
    assert!((before + 900_000..=now_ms() + 900_000).contains(&expires));

    // Only the admin mints links.
    let r = mint_link(&app, &app_id, Some(&key), None).await;
    assert_error(&r, 403, "an app key");
    let r = mint_link(&app, &app_id, None, None).await;
    assert_error(&r, 401, "no token");
    let token = link_token(&app, &app_id).await;
    let r = mint_link(&app, &app_id, Some(&token), None).await;
    assert_error(&r, 403, "a portal token cannot mint links");

    let r = mint_link(&app, "app_nope", Some(ADMIN_TOKEN), None).await;
    assert_error(&r, 404, "an unknown app");

    for ttl in ["soon", "8d", "0s", ""] {
        let r = mint_link(
            &app,
            &app_id,
            Some(ADMIN_TOKEN),
            Some(json!({ "ttl": ttl })),
        )
        .await;
        assert_error(&r, 400, ttl);
        assert_eq!(r.body["error"]["code"], "invalid_ttl");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("ttl"), "{message}");
    }
    let r = mint_link(&app, &app_id, Some(ADMIN_TOKEN), Some(json!({ "ttl": 60 }))).await;
    assert_error(&r, 422, "a number");
}

async fn a_link_token_acts_as_the_app_key_and_never_as_the_admin(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("portal").await;
    let token = link_token(&app, &app_id).await;

    let created = app
        .create_webhook(&token, "http://127.0.0.1:9/hook", json!("all"))
        .await;
    let id = created["id"].as_str().unwrap();
    let r = app.call("GET", "/v1/webhook", Some(&token), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["total"], 1);
    for (method, path) in [
        ("GET", format!("/v1/webhook/{id}")),
        ("GET", format!("/v1/webhook/{id}/secret")),
        ("GET", format!("/v1/webhook/{id}/deliveries")),
    ] {
        let r = app.call(method, &path, Some(&token), None).await;
        assert_eq!(r.status, 200, "{method} {path}: {:?}", r.body);
    }

    let r = app
        .call(
            "POST",
            "/v1/apps",
            Some(&token),
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_error(&r, 403, "create an app");
    let r = app
        .call(
            "POST",
            "/v1/events",
            Some(&token),
            Some(&json!({"event": "channel_live", "appId": app_id, "channel": {"id": "c"}})),
        )
        .await;
    assert_error(&r, 403, "ingest");
}

async fn an_expired_or_forged_token_is_refused_with_a_clear_message(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, _) = app.create_app("portal").await;

    let expired = forged(&app_id, now_ms() - 1, ADMIN_TOKEN);
    let r = app.call("GET", "/v1/webhook", Some(&expired), None).await;
    assert_error(&r, 401, "expired");
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("portal link expired"), "{message}");

    // A link minted with a tiny ttl expires too.
    let r = mint_link(&app, &app_id, Some(ADMIN_TOKEN), Some(json!({"ttl": "1s"}))).await;
    let url = r.body["url"].as_str().unwrap().to_owned();
    let token = url.split_once("#token=").unwrap().1;
    let ok = app.call("GET", "/v1/webhook", Some(token), None).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let r = app.call("GET", "/v1/webhook", Some(token), None).await;
    assert_error(&r, 401, "a 1s link, later");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));

    let live = link_token(&app, &app_id).await;
    let mut tampered = live.clone();
    tampered.pop();
    tampered.push(if live.ends_with('A') { 'B' } else { 'A' });
    for (token, why) in [
        (tampered, "a changed signature"),
        (
            forged(&app_id, now_ms() + 60_000, "another-admin-token-000"),
            "another broker's key",
        ),
        (
            forged("app_gone", now_ms() + 60_000, ADMIN_TOKEN),
            "an app that does not exist",
        ),
        ("wbp_garbage".to_owned(), "garbage"),
    ] {
        let r = app.call("GET", "/v1/webhook", Some(&token), None).await;
        assert_error(&r, 401, why);
        assert_eq!(r.body["error"]["message"], "invalid token", "{why}");
    }
}

async fn another_apps_link_cannot_see_this_apps_webhook(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key_a) = app.create_app("a").await;
    let (app_b, _) = app.create_app("b").await;
    let theirs = app
        .create_webhook(&key_a, "http://127.0.0.1:9/hook", json!("all"))
        .await;
    let id = theirs["id"].as_str().unwrap();
    let token_b = link_token(&app, &app_b).await;
    for (method, path) in [
        ("GET", format!("/v1/webhook/{id}")),
        ("GET", format!("/v1/webhook/{id}/secret")),
        ("GET", format!("/v1/webhook/{id}/deliveries")),
        ("POST", format!("/v1/webhook/{id}/test")),
        ("POST", format!("/v1/webhook/{id}/secret/rotate")),
        ("DELETE", format!("/v1/webhook/{id}")),
    ] {
        let r = app.call(method, &path, Some(&token_b), None).await;
        assert_error(&r, 404, &format!("{method} {path}"));
    }
    let r = app.call("GET", "/v1/webhook", Some(&token_b), None).await;
    assert_eq!(r.body["total"], 0, "{:?}", r.body);
    // It is still there for its own app.
    let r = app
        .call("GET", &format!("/v1/webhook/{id}"), Some(&key_a), None)
        .await;
    assert_eq!(r.status, 200);
}

async fn the_page_is_served_with_a_strict_content_security_policy(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let client = awc::Client::default();
    for (path, kind) in [
        ("/portal", "text/html"),
        ("/portal/", "text/html"),
        ("/portal/app.js", "text/javascript"),
        ("/portal/style.css", "text/css"),
    ] {
        let mut res = client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(
            header("content-security-policy"),
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("cache-control"), "no-store");
        let body = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
        if kind == "text/html" {
            // One script, from a file; no inline script or style anywhere.
            assert_eq!(body.matches("<script").count(), 1, "{body}");
            assert!(body.contains(r#"<script type="module" src="/portal/app.js"></script>"#));
            assert!(!body.contains("<style") && !body.contains(" style="));
            assert!(!body.contains("javascript:"));
            // Nothing is fetched from another origin.
            for remote in [r#"src="http"#, r#"href="http"#, r#"src="//"#, r#"href="//"#] {
                assert!(!body.contains(remote), "{remote}");
            }
        }
    }
}

async fn webhooks_show_their_last_success_and_failing_count(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    // The first event succeeds; the second fails all three attempts.
    let receiver = Receiver::start_scripted(&[204, 500, 500, 500]);
    let (app_id, key) = app.create_app("health").await;
    let created = app
        .create_webhook(&key, &receiver.url, json!("channel_live"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["lastSuccessAt"], Value::Null);
    assert_eq!(created["failingCount"], 0);

    let before = now_ms();
    app.send_event(&app_id, "channel_live", json!({"id": "c1"}))
        .await;
    receiver.wait_for(1, SETTLE).await;
    let one = format!("/v1/webhook/{id}");
    let w = poll(&app, &key, &one, |w| w["lastSuccessAt"].is_i64()).await;
    let last = w["lastSuccessAt"].as_i64().expect("a last success");
    assert!(last >= before && last <= now_ms(), "{last}");
    assert_eq!(w["failingCount"], 0);

    app.send_event(&app_id, "channel_live", json!({"id": "c2"}))
        .await;
    let page = poll(&app, &key, "/v1/webhook", |p| {
        p["data"][0]["failingCount"] == 1
    })
    .await;
    assert_eq!(page["data"][0]["failingCount"], 1, "{page:?}");
    assert_eq!(
        page["data"][0]["lastSuccessAt"], last,
        "a failure does not move it"
    );
    let w = poll(&app, &key, &one, |_| true).await;
    assert_eq!(w["failingCount"], 1);

    // Sent again, it is not failing any more (whatever comes of it next).
    let failed = app
        .call(
            "GET",
            &format!("/v1/webhook/{id}/deliveries?status=failed"),
            Some(&key),
            None,
        )
        .await;
    let delivery = failed.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .call(
            "POST",
            &format!("/v1/webhook/{id}/deliveries/{delivery}/retry"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let settled = app.settled_delivery(&key, &id, &delivery).await;
    assert_eq!(settled.body["status"], "succeeded", "{:?}", settled.body);
    let w = poll(&app, &key, &one, |w| w["failingCount"] == 0).await;
    assert_eq!(w["failingCount"], 0);
    assert!(w["lastSuccessAt"].as_i64().unwrap() >= last);
}

async fn the_delivery_log_filters_by_event_and_channel_id(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("filters").await;
    let created = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let long = "x".repeat(300);
    for (event, channel) in [
        ("channel_live", json!("a")),
        ("channel_ended", json!("a")),
        ("channel_live", json!("b")),
        ("channel_stop", json!(long)),
    ] {
        let r = app
            .send_event(&app_id, event, json!({ "id": channel }))
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    receiver.wait_for(4, SETTLE).await;
    let list = |query: &str| {
        let (app, key, id) = (&app, key.clone(), id.clone());
        let query = query.to_owned();
        async move {
            app.call(
                "GET",
                &format!("/v1/webhook/{id}/deliveries{query}"),
                Some(&key),
                None,
            )
            .await
        }
    };
    let summary = |page: &Value| -> Vec<(String, String)> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["event"].as_str().unwrap().to_owned(),
                    d["channelId"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let pair = |e: &str, c: &str| (e.to_owned(), c.to_owned());
    let sha = format!(
        "sha256:{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(long.as_bytes())
    );
    for (query, expected) in [
        (
            "?event=channel_live",
            vec![pair("channel_live", "b"), pair("channel_live", "a")],
        ),
        (
            "?channelId=a",
            vec![pair("channel_ended", "a"), pair("channel_live", "a")],
        ),
        (
            "?event=channel_live&channelId=a",
            vec![pair("channel_live", "a")],
        ),
        ("?event=channel_live&channelId=a&status=failed", vec![]),
        (
            "?event=channel_live&channelId=a&status=succeeded",
            vec![pair("channel_live", "a")],
        ),
        ("?channelId=nope", vec![]),
        ("?channelId=A", vec![]),
        (
            &format!("?channelId={long}"),
            vec![pair("channel_stop", &sha)],
        ),
        (
            "?event=channel_live&length=1&page=1",
            vec![pair("channel_live", "a")],
        ),
    ] {
        let r = list(query).await;
        assert_eq!(r.status, 200, "{query}: {:?}", r.body);
        assert_eq!(summary(&r.body), expected, "{query}");
        let total = if query.contains("length=1") {
            2
        } else {
            expected.len()
        };
        assert_eq!(r.body["total"], total, "{query}");
    }
    let r = list("?event=channel_paused").await;
    assert_error(&r, 400, "an unknown event");
    assert_eq!(r.body["error"]["code"], "invalid_event");
}

on_both_stores!(
    a_link_is_minted_by_the_admin_for_an_existing_app,
    a_link_token_acts_as_the_app_key_and_never_as_the_admin,
    an_expired_or_forged_token_is_refused_with_a_clear_message,
    another_apps_link_cannot_see_this_apps_webhook,
    the_page_is_served_with_a_strict_content_security_policy,
    webhooks_show_their_last_success_and_failing_count,
    the_delivery_log_filters_by_event_and_channel_id,
);
