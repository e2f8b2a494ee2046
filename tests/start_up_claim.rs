//! A restart of an instance that held thousands of leases of idle webhooks
//! (more than two claim rounds of 5,000): it serves at once, since before
//! the first event it takes back only the webhooks with deliveries
//! pending, and it takes every other lease of its previous run back in the
//! round right after, each once. An event for one of those idle webhooks,
//! sent the moment the broker is up, is delivered. The registry's snapshot
//! reads the webhooks in pages of 5,000: all 12,000 are known at start.

mod common;

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;

use common::{Receiver, Store, TestApp, TestDb};
use webhook_broker::db::models::WebhookRow;
use webhook_broker::db::schema::webhook_leases;

const WEBHOOKS: usize = 12_000;
/// The one idle webhook that takes `channel_live`; the others take
/// `channel_stop` only.
const LISTENING: usize = 7_777;
const SETTLE: Duration = Duration::from_secs(20);

fn webhook_row(i: usize, app_id: &str, uri: &str) -> WebhookRow {
    let events = if i == LISTENING {
        "channel_live"
    } else {
        "channel_stop"
    };
    common::webhook_row(&format!("wh_{i:05}"), app_id, uri, events)
}

async fn a_restart_with_thousands_of_idle_leases_serves_at_once_and_takes_each_back_once(
    store: Store,
) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let db = Arc::new(db);
    let receiver = Receiver::start();
    let me = common::test_config(&db).instance_id;
    let (app_id, key) = {
        let pool = webhook_broker::db::open(&db.url).expect("open store");
        let mut conn = pool.get().unwrap();
        let app = webhook_broker::db::apps::create(&mut conn, "many".into()).unwrap();
        conn.transaction(|conn| {
            for i in 0..WEBHOOKS {
                webhook_broker::db::webhooks::insert(
                    conn,
                    &webhook_row(i, &app.row.id, &receiver.url),
                )?;
            }
            // The previous run of this instance held every lease (killed:
            // they have not lapsed yet).
            diesel::update(webhook_leases::table)
                .set((
                    webhook_leases::owner.eq(&me),
                    webhook_leases::epoch.eq(1i64),
                    webhook_leases::lease_until.eq(i64::MAX / 2),
                ))
                .execute(conn)?;
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap();
        (app.row.id, app.api_key)
    };

    let app = TestApp::spawn_with(db.clone(), |_| {}).await;
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "ch-1"}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], 1);
    let got = receiver.wait_for(1, SETTLE).await;
    assert_eq!(got.len(), 1, "the idle webhook's event arrives");
    let listed = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["total"], WEBHOOKS, "every webhook is known");

    let taken_back = || {
        let mut conn = app.conn();
        let rows: Vec<(Option<String>, i64)> = webhook_leases::table
            .select((webhook_leases::owner, webhook_leases::epoch))
            .load(&mut conn)
            .unwrap();
        rows
    };
    assert!(
        common::eventually(SETTLE, || {
            let rows = taken_back();
            rows.len() == WEBHOOKS && rows.iter().all(|(o, _)| o.as_deref() == Some(me.as_str()))
        })
        .await,
        "every lease of the previous run is taken back"
    );
    let rows = taken_back();
    assert!(
        rows.iter().all(|(_, epoch)| *epoch == 2),
        "each lease taken back once: epochs {:?}",
        rows.iter()
            .map(|(_, e)| *e)
            .collect::<std::collections::BTreeSet<_>>()
    );
}

/// A stored webhook whose row no longer parses (written by hand, say) is
/// skipped at start with an error in the log; the broker starts and serves
/// the others, those before it and after it in the snapshot's id order.
async fn a_webhook_row_that_no_longer_parses_is_skipped_at_start(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let db = Arc::new(db);
    let receiver = Receiver::start();
    let (app_id, key) = {
        let pool = webhook_broker::db::open(&db.url).expect("open store");
        let mut conn = pool.get().unwrap();
        let app = webhook_broker::db::apps::create(&mut conn, "mixed".into()).unwrap();
        for (id, uri) in [
            ("wh_1", receiver.url.as_str()),
            ("wh_2", "not a uri"),
            ("wh_3", receiver.url.as_str()),
        ] {
            let row = common::webhook_row(id, &app.row.id, uri, "channel_live");
            webhook_broker::db::webhooks::insert(&mut conn, &row).unwrap();
        }
        (app.row.id, app.api_key)
    };

    let app = TestApp::spawn_with(db.clone(), |_| {}).await;
    let listed = app.call("GET", "/v1/webhook", Some(&key), None).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["total"], 2, "{:?}", listed.body);
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "ch-1"}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], 2);
    assert_eq!(receiver.wait_for(2, SETTLE).await.len(), 2);
}

on_both_stores!(
    a_restart_with_thousands_of_idle_leases_serves_at_once_and_takes_each_back_once,
    a_webhook_row_that_no_longer_parses_is_skipped_at_start
);
