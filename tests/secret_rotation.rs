//! Secret rotation: a new secret at once, the previous one still signing
//! beside it for BROKER_SECRET_GRACE, as the Standard Webhooks spec allows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::{Receiver, Store, TestApp, TestDb};

async fn rotate(app: &TestApp, key: &str, id: &str) -> String {
    let r = app
        .call(
            "POST",
            &format!("/v1/webhook/{id}/secret/rotate"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["secret"].as_str().unwrap().to_owned()
}

async fn during_the_grace_both_secrets_sign_every_delivery(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("r").await;
    let created = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let (id, old) = (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );

    let new = rotate(&app, &key, &id).await;
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, old);
    let r = app
        .call("GET", &format!("/v1/webhook/{id}/secret"), Some(&key), None)
        .await;
    assert_eq!(r.body["secret"], new.as_str());

    app.send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let header = got[0].header("webhook-signature").unwrap();
    let parts: Vec<&str> = header.split(' ').collect();
    assert_eq!(
        parts,
        vec![got[0].signed_with(&new), got[0].signed_with(&old)]
    );
}

async fn after_the_grace_only_the_new_secret_signs(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.secret_grace = Duration::from_millis(300);
    })
    .await;
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("r").await;
    let id = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new = rotate(&app, &key, &id).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    app.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        got[0].header("webhook-signature").unwrap(),
        got[0].signed_with(&new)
    );
}

async fn a_rotation_outlives_a_restart(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let db = Arc::new(db);
    let first = TestApp::spawn_with(db.clone(), |_| {}).await;
    let receiver = Receiver::start();
    let (app_id, key) = first.create_app("r").await;
    let created = first
        .create_webhook(&key, &receiver.url, json!("all"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let old = created["secret"].as_str().unwrap().to_owned();
    let new = rotate(&first, &key, &id).await;

    let second = TestApp::spawn_with(db.clone(), |c| c.instance_id = "second".into()).await;
    second.send_event(&app_id, "channel_live", json!({})).await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        got[0].header("webhook-signature").unwrap(),
        format!("{} {}", got[0].signed_with(&new), got[0].signed_with(&old))
    );
}

async fn only_the_owning_app_can_rotate(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("a").await;
    let (_, other) = app.create_app("b").await;
    let created = app
        .create_webhook(&key, "https://example.com/h", json!("all"))
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/webhook/{id}/secret/rotate");
    assert_eq!(
        app.call("POST", &path, Some(&other), None).await.status,
        404
    );
    assert_eq!(
        app.call("POST", &path, Some(common::ADMIN_TOKEN), None)
            .await
            .status,
        403
    );
    assert_eq!(app.call("POST", &path, None, None).await.status, 401);
    assert_eq!(app.call("GET", &path, Some(&key), None).await.status, 405);
    let r = app
        .call("GET", &format!("/v1/webhook/{id}/secret"), Some(&key), None)
        .await;
    assert_eq!(
        r.body["secret"], created["secret"],
        "a refused rotation changed nothing"
    );
}

on_both_stores!(
    during_the_grace_both_secrets_sign_every_delivery,
    after_the_grace_only_the_new_secret_signs,
    a_rotation_outlives_a_restart,
    only_the_owning_app_can_rotate,
);
