//! A restart of an instance that held thousands of leases of idle webhooks
//! (more than two claim rounds of 5,000): it serves at once, since before
//! the first event it takes back only the webhooks with deliveries
//! pending, and it takes every other lease of its previous run back in the
//! round right after, each once. An event for one of those idle webhooks,
//! sent the moment the broker is up, is delivered. The registry's snapshot
//! reads the webhooks in pages of 5,000: all 12,000 are known at start.
//! Renewals of those 12,000 leases also go in rounds of 5,000: leases
//! another instance takes over, spread over every round, are each noticed
//! and let go.

mod common;

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;

use common::{Receiver, Store, TestApp, TestDb};
use webhook_broker::db::models::WebhookRow;
use webhook_broker::db::schema::{deliveries, webhook_leases};
use webhook_broker::domain::DeliveryStatus;

const WEBHOOKS: usize = 12_000;
/// The one idle webhook that takes `channel_live`; the others take
/// `channel_stop` only.
const LISTENING: usize = 7_777;
const SETTLE: Duration = Duration::from_secs(20);
/// The webhooks another instance takes over in
/// `leases_taken_over_in_any_renewal_round_are_let_go`; they alone take
/// `channel_ended`.
const TAKEN: std::ops::Range<usize> = 10_000..12_000;

fn webhook_row(i: usize, app_id: &str, uri: &str) -> WebhookRow {
    let events = if i == LISTENING {
        "channel_live"
    } else if TAKEN.contains(&i) {
        "channel_ended"
    } else {
        "channel_stop"
    };
    common::webhook_row(&format!("wh_{i:05}"), app_id, uri, events)
}

/// An app with the [`WEBHOOKS`] webhooks of [`webhook_row`], all sending to
/// `uri`, written in one transaction with whatever `then` adds; its id and
/// API key.
fn seed(
    db: &TestDb,
    uri: &str,
    then: impl FnOnce(&mut webhook_broker::db::DbConn) -> QueryResult<()>,
) -> (String, String) {
    let pool = webhook_broker::db::open(&db.url).expect("open store");
    let mut conn = pool.get().unwrap();
    let app = webhook_broker::db::apps::create(&mut conn, "many".into()).unwrap();
    conn.transaction(|conn| {
        for i in 0..WEBHOOKS {
            webhook_broker::db::webhooks::insert(conn, &webhook_row(i, &app.row.id, uri))?;
        }
        then(conn)
    })
    .unwrap();
    (app.row.id, app.api_key)
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
    let (app_id, key) = seed(&db, &receiver.url, |conn| {
        // The previous run of this instance held every lease (killed:
        // they have not lapsed yet).
        diesel::update(webhook_leases::table)
            .set((
                webhook_leases::owner.eq(&me),
                webhook_leases::epoch.eq(1i64),
                webhook_leases::lease_until.eq(i64::MAX / 2),
            ))
            .execute(conn)
            .map(drop)
    });

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

/// An instance holding 12,000 leases renews them in rounds of 5,000, in no
/// set order. Another instance takes over 2,000 of them while it runs (with
/// so many, some fall in every round): within a lease period this one has
/// let each go. An event for those webhooks then reaches nobody from here,
/// their deliveries stay pending, untouched, for the new owner, and its
/// lease rows stay as it wrote them; the webhooks this instance kept still
/// deliver.
async fn leases_taken_over_in_any_renewal_round_are_let_go(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let db = Arc::new(db);
    let receiver = Receiver::start();
    let me = common::test_config(&db).instance_id;
    let (app_id, _) = seed(&db, &receiver.url, |_| Ok(()));
    let lease = Duration::from_secs(3);
    let app = TestApp::spawn_with(db.clone(), |c| c.lease = lease).await;
    let owners = || {
        let mut conn = app.conn();
        webhook_leases::table
            .select((
                webhook_leases::webhook_id,
                webhook_leases::owner,
                webhook_leases::epoch,
            ))
            .load::<(String, Option<String>, i64)>(&mut conn)
            .unwrap()
    };
    assert!(
        common::eventually(SETTLE, || {
            let rows = owners();
            rows.len() == WEBHOOKS && rows.iter().all(|(_, o, _)| o.as_deref() == Some(&*me))
        })
        .await,
        "this instance holds every lease"
    );
    // While held, the webhooks about to be taken over deliver.
    let r = app
        .send_event(&app_id, "channel_ended", json!({"id": "before"}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], TAKEN.len());
    assert_eq!(
        receiver.wait_for(TAKEN.len(), SETTLE).await.len(),
        TAKEN.len()
    );

    // And their outcomes are written: written later, under the new owner's
    // epoch, they would be refused (fenced), and those deliveries would
    // rightly stay pending for the new owner to send again.
    assert!(
        common::eventually(SETTLE, || {
            let mut conn = app.conn();
            let done: i64 = deliveries::table
                .filter(deliveries::status.eq(DeliveryStatus::Succeeded))
                .count()
                .get_result(&mut conn)
                .unwrap();
            done == TAKEN.len() as i64
        })
        .await,
        "the outcomes before the takeover are written"
    );
    let taken: Vec<String> = TAKEN.map(|i| format!("wh_{i:05}")).collect();
    {
        let mut conn = app.conn();
        // On InnoDB the take-over can deadlock with this instance's renewal
        // of the same rows; like any claimer, it tries again.
        let n = (0..10)
            .find_map(|_| {
                match diesel::update(
                    webhook_leases::table.filter(webhook_leases::webhook_id.eq_any(&taken)),
                )
                .set((
                    webhook_leases::owner.eq("another"),
                    webhook_leases::epoch.eq(webhook_leases::epoch + 1),
                    webhook_leases::lease_until.eq(i64::MAX / 2),
                ))
                .execute(&mut conn)
                {
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::SerializationFailure,
                        _,
                    )) => None,
                    done => Some(done.unwrap()),
                }
            })
            .expect("the take-over is written within ten tries");
        assert_eq!(n, TAKEN.len());
    }
    let taken_set: std::collections::HashSet<&String> = taken.iter().collect();
    let taken_leases = || {
        owners()
            .into_iter()
            .filter(|(id, _, _)| taken_set.contains(id))
            .map(|(id, o, e)| (id, (o, e)))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let after_takeover = taken_leases();
    // A lease period: every renewal round has run at least twice since.
    actix_web::rt::time::sleep(lease).await;

    let r = app
        .send_event(&app_id, "channel_ended", json!({"id": "after"}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], TAKEN.len());
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "kept"}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], 1);
    receiver.wait_for(TAKEN.len() + 1, SETTLE).await;
    // Time for any stray sends to the taken webhooks to arrive.
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    let channels: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or("?").to_owned())
        .collect();
    let count = |id: &str| channels.iter().filter(|c| *c == id).count();
    assert_eq!(count("kept"), 1, "the kept webhook delivers");
    assert_eq!(count("before"), TAKEN.len());
    assert_eq!(
        count("after"),
        0,
        "nothing is sent under a lease another instance took over"
    );
    let mut conn = app.conn();
    let pending: Vec<(String, i32)> = deliveries::table
        .filter(deliveries::webhook_id.eq_any(&taken))
        .filter(deliveries::status.eq(DeliveryStatus::Pending))
        .select((deliveries::webhook_id, deliveries::attempts))
        .load(&mut conn)
        .unwrap();
    assert_eq!(pending.len(), TAKEN.len(), "the new owner's work waits");
    assert!(pending.iter().all(|(_, attempts)| *attempts == 0));
    let now = taken_leases();
    assert_eq!(now, after_takeover, "the new owner's leases are untouched");
    assert!(now.values().all(|(o, _)| o.as_deref() == Some("another")));
}

on_both_stores!(
    a_restart_with_thousands_of_idle_leases_serves_at_once_and_takes_each_back_once,
    a_webhook_row_that_no_longer_parses_is_skipped_at_start,
    leases_taken_over_in_any_renewal_round_are_let_go
);
