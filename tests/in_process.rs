//! The in-process paths: the examples' code run against a real receiver and
//! real databases.

mod common;

#[allow(dead_code)]
#[path = "../examples/in_process.rs"]
mod in_process_example;

#[allow(dead_code)]
#[path = "../examples/mount_routes.rs"]
mod mount_routes_example;

use std::time::Duration;

use actix_web::{test, App};
use serde_json::json;

use common::{Receiver, Store, TestDb};

async fn a_colocated_actor_delivers_through_the_dispatcher(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let receiver = Receiver::start();
    let accepted = in_process_example::demo(common::test_config(&db), &receiver.url)
        .await
        .expect("demo runs");
    assert_eq!(accepted.len(), 2);
    assert!(accepted.iter().all(|a| a.deliveries == 1));

    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let events: Vec<_> = got.iter().map(|r| r.json()["event"].clone()).collect();
    assert_eq!(got.len(), 2);
    assert!(events.contains(&json!("channel_live")));
    assert!(events.contains(&json!("channel_ended")));
    assert!(got.iter().all(|r| r.json()["id"] == "ch-1"));
}

async fn the_rest_api_mounts_beside_the_services_own_routes(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let receiver = Receiver::start();
    let broker = webhook_broker::Broker::start(&common::test_config(&db))
        .await
        .unwrap();
    let app =
        test::init_service(App::new().configure(mount_routes_example::configure(broker))).await;

    let req = test::TestRequest::post()
        .uri("/v1/apps")
        .insert_header(("Authorization", format!("Bearer {}", common::ADMIN_TOKEN)))
        .set_json(json!({"name": "mounted"}))
        .to_request();
    let created: serde_json::Value = test::call_and_read_body_json(&app, req).await;
    let (app_id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["apiKey"].as_str().unwrap().to_owned(),
    );

    let req = test::TestRequest::post()
        .uri("/v1/webhook")
        .insert_header(("Authorization", format!("Bearer {key}")))
        .set_json(json!({"uri": receiver.url, "event": "channel_live"}))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 201);

    let req = test::TestRequest::post()
        .uri(&format!("/channels/{app_id}/ch-9/live"))
        .to_request();
    let body: serde_json::Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(body["deliveries"], 1);

    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["id"], "ch-9");
    assert_eq!(got[0].json()["event"], "channel_live");
}

on_both_stores!(
    a_colocated_actor_delivers_through_the_dispatcher,
    the_rest_api_mounts_beside_the_services_own_routes,
);
