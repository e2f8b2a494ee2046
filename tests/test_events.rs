//! `POST /v1/webhook/{id}/test`: a test event to one webhook, signed and
//! logged like any delivery; exactly one attempt to a disabled webhook,
//! which stays disabled; tenant isolation; on SQLite and MariaDB.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use common::{assert_error, eventually, Received, Receiver, Reply, Store, TestApp};

/// The signature a receiver computes with nothing but the secret.
fn expected_signature(secret: &str, req: &Received) -> String {
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            req.header("webhook-id").unwrap(),
            req.header("webhook-timestamp").unwrap()
        )
        .as_bytes(),
    );
    mac.update(&req.body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

async fn test_event(app: &TestApp, key: &str, id: &str, body: Option<Value>) -> Reply {
    app.call(
        "POST",
        &format!("/v1/webhook/{id}/test"),
        Some(key),
        body.as_ref(),
    )
    .await
}

/// Waits until the delivery's log shows `attempts` attempts and is no longer
/// pending; its detail.
async fn settled(app: &TestApp, key: &str, webhook: &str, id: &str, attempts: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = app.delivery(key, webhook, id).await.body;
        if last["status"] != "pending"
            && last["attempts"].as_array().map(Vec::len) == Some(attempts)
        {
            return last;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("delivery {id} did not settle with {attempts} attempts: {last}");
}

async fn a_test_event_arrives_signed_with_test_true_and_shows_in_the_delivery_log(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (_, key) = app.create_app("tv").await;
    let webhook = app
        .call(
            "POST",
            "/v1/webhook",
            Some(&key),
            Some(
                &json!({"uri": receiver.url, "event": "channel_ended,channel_stop",
                         "headers": {"X-Tenant": "acme"}}),
            ),
        )
        .await
        .body;
    let (id, secret) = (
        webhook["id"].as_str().unwrap(),
        webhook["secret"].as_str().unwrap(),
    );

    let r = test_event(&app, &key, id, None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let delivery_id = r.body["id"].as_str().unwrap().to_owned();
    let event_id = r.body["eventId"].as_str().unwrap().to_owned();
    assert!(delivery_id.starts_with("msg_"), "{delivery_id}");
    assert!(event_id.starts_with("evt_"), "{event_id}");

    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let req = &got[0];
    let body = req.json();
    assert_eq!(body["event"], "channel_stop", "the first subscribed event");
    assert_eq!(body["test"], true);
    assert_eq!(body["id"], "test-channel");
    assert!(body["eventTime"].is_i64());
    assert_eq!(req.header("webhook-id"), Some(delivery_id.as_str()));
    assert_eq!(
        req.header("webhook-signature").unwrap(),
        expected_signature(secret, req)
    );
    assert_eq!(req.header("x-tenant"), Some("acme"), "custom headers too");

    let detail = settled(&app, &key, id, &delivery_id, 1).await;
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["eventId"], event_id.as_str());
    assert_eq!(detail["event"], "channel_stop");
    assert_eq!(detail["channelId"], "test-channel");
    let page = app
        .call(
            "GET",
            &format!("/v1/webhook/{id}/deliveries"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(page.body["total"], 1, "{:?}", page.body);
    assert_eq!(page.body["data"][0]["id"], delivery_id.as_str());
}

async fn a_test_event_goes_to_this_webhook_only_and_is_retried_like_any_delivery(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let tested = Receiver::start_scripted(&[500]);
    let other = Receiver::start();
    let (_, key) = app.create_app("tv").await;
    let id = app.create_webhook(&key, &tested.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_id = app.create_webhook(&key, &other.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = test_event(&app, &key, &id, Some(json!({"event": "channel_ended"}))).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let delivery_id = r.body["id"].as_str().unwrap().to_owned();
    let got = tested.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "a 500, then the retry");
    assert_eq!(got[0].json()["event"], "channel_ended");
    assert_eq!(got[1].header("webhook-id"), Some(delivery_id.as_str()));
    let detail = settled(&app, &key, &id, &delivery_id, 2).await;
    assert_eq!(detail["status"], "succeeded");

    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(other.received().is_empty(), "another webhook got the test");
    let page = app
        .call(
            "GET",
            &format!("/v1/webhook/{other_id}/deliveries"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(page.body["total"], 0, "{:?}", page.body);
}

async fn a_test_event_to_a_disabled_webhook_makes_exactly_one_attempt_and_it_stays_disabled(
    store: Store,
) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[500, 410, 500, 500, 500, 500]);
    let (_, key) = app.create_app("tv").await;
    let id = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            "PUT",
            &format!("/v1/webhook/{id}"),
            Some(&key),
            Some(
                &json!({"uri": receiver.url, "event": "all", "status": "disabled",
                         "headers": {"X-Check": "fix-1"}}),
            ),
        )
        .await;
    assert_eq!(r.body["status"], "disabled", "{:?}", r.body);
    let disabled_at = r.body["disabledAt"].clone();

    // A 500: one attempt, no retry (the schedule is 200 ms, 200 ms).
    let r = test_event(&app, &key, &id, None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let first = r.body["id"].as_str().unwrap().to_owned();
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].header("x-check"), Some("fix-1"));
    assert_eq!(got[0].json()["test"], true);
    let detail = settled(&app, &key, &id, &first, 1).await;
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["lastStatusCode"], 500);

    // A 410 to a test of a disabled webhook changes nothing either.
    let r = test_event(&app, &key, &id, Some(json!({"event": "channel_live"}))).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let second = r.body["id"].as_str().unwrap().to_owned();
    let detail = settled(&app, &key, &id, &second, 1).await;
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["lastStatusCode"], 410);

    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.received().len(), 2, "exactly one attempt each");
    let webhook = app
        .call("GET", &format!("/v1/webhook/{id}"), Some(&key), None)
        .await
        .body;
    assert_eq!(webhook["status"], "disabled");
    assert_eq!(webhook["disabledReason"], "disabled by the app");
    assert_eq!(webhook["disabledAt"], disabled_at);

    // Enabled again, nothing of the tests is sent again: they are over.
    let r = app
        .call(
            "PUT",
            &format!("/v1/webhook/{id}"),
            Some(&key),
            Some(&json!({"uri": receiver.url, "event": "all", "status": "enabled"})),
        )
        .await;
    assert_eq!(r.body["status"], "enabled", "{:?}", r.body);
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 2);
}

async fn the_test_event_must_be_one_the_webhook_subscribes_to(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (_, key) = app.create_app("tv").await;
    let id = app
        .create_webhook(&key, &receiver.url, json!("channel_live"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, why) in [
        (json!({"event": "channel_ended"}), "not subscribed"),
        (json!({"event": "channel_paused"}), "unknown"),
        (json!({"event": "all"}), "not one event"),
    ] {
        let r = test_event(&app, &key, &id, Some(body)).await;
        assert_error(&r, 400, why);
        assert_eq!(r.body["error"]["code"], "invalid_event", "{why}");
    }
    let r = app
        .call_raw(
            "POST",
            &format!("/v1/webhook/{id}/test"),
            &key,
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&r, 400, "malformed JSON");
    let r = test_event(&app, &key, &id, Some(json!({"event": 5}))).await;
    assert_error(&r, 422, "a wrong type");
    let r = test_event(&app, &key, &id, Some(json!({}))).await;
    assert_eq!(
        r.status, 202,
        "an empty object takes the default: {:?}",
        r.body
    );
    let r = test_event(&app, &key, &id, Some(Value::Null)).await;
    assert_eq!(r.status, 202, "so does null: {:?}", r.body);
    assert!(
        eventually(Duration::from_secs(5), || receiver.received().len() == 2).await,
        "only the valid request sent anything"
    );
    assert_eq!(receiver.received()[0].json()["event"], "channel_live");
    assert_eq!(receiver.received()[1].json()["event"], "channel_live");
}

async fn another_apps_webhook_id_answers_404_on_test(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (_, owner) = app.create_app("owner").await;
    let (_, stranger) = app.create_app("stranger").await;
    let id = app
        .create_webhook(&owner, &receiver.url, json!("all"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = test_event(&app, &stranger, &id, None).await;
    assert_error(&r, 404, "another app's webhook");
    assert_error(
        &test_event(&app, &owner, "wh_nope", None).await,
        404,
        "a webhook that does not exist",
    );
    assert_error(
        &app.call("POST", &format!("/v1/webhook/{id}/test"), None, None)
            .await,
        401,
        "no key",
    );
    assert_error(
        &test_event(&app, common::ADMIN_TOKEN, &id, None).await,
        403,
        "the admin token",
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());
}

on_both_stores!(
    a_test_event_arrives_signed_with_test_true_and_shows_in_the_delivery_log,
    a_test_event_goes_to_this_webhook_only_and_is_retried_like_any_delivery,
    a_test_event_to_a_disabled_webhook_makes_exactly_one_attempt_and_it_stays_disabled,
    the_test_event_must_be_one_the_webhook_subscribes_to,
    another_apps_webhook_id_answers_404_on_test,
);
