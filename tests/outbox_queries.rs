//! The outbox queries on both stores, below the actors: what a batch of
//! recorded attempts leaves in `deliveries`, `delivery_attempts` and
//! `webhooks`.

mod common;

use diesel::prelude::*;
use webhook_broker::db::deliveries::{record_attempts, AttemptOutcome, NewEvent};
use webhook_broker::db::models::{status, AttemptRow, DeliveryRow, EventRow, WebhookRow};
use webhook_broker::db::schema::{deliveries, delivery_attempts, webhooks};
use webhook_broker::db::{self, DbConn};

use common::{Store, TestDb};

const OWNER: &str = "broker-a";

struct Outbox {
    _db: TestDb,
    pool: db::Pool,
    webhook_id: String,
}

/// A store with one app, one webhook and `n` pending deliveries leased to
/// [`OWNER`], named `d0`, `d1`, ...
fn outbox(store: Store, n: usize) -> Option<Outbox> {
    let test_db = TestDb::new(store)?;
    let pool = db::open(&test_db.url).expect("open store");
    let mut conn = pool.get().unwrap();
    let app = db::apps::create(&mut conn, "outbox".into()).unwrap();
    let webhook_id = db::new_id("wh");
    db::webhooks::insert(
        &mut conn,
        &WebhookRow {
            id: webhook_id.clone(),
            app_id: app.row.id.clone(),
            uri: "https://example.com/hook".into(),
            events: "channel_live".into(),
            secret: "whsec_test".into(),
            status: "enabled".into(),
            disabled_reason: None,
            disabled_at: None,
            created_at: 1,
            updated_at: 1,
            previous_secret: None,
            previous_secret_expires_at: None,
            headers: "{}".into(),
        },
    )
    .unwrap();
    let event = EventRow {
        id: db::new_id("evt"),
        app_id: app.row.id.clone(),
        event: "channel_live".into(),
        channel_id: None,
        event_time: 1,
        payload: "{}".into(),
        created_at: 1,
    };
    let rows = (0..n)
        .map(|i| DeliveryRow {
            id: format!("d{i}"),
            event_id: event.id.clone(),
            webhook_id: webhook_id.clone(),
            channel_id: None,
            status: status::PENDING.into(),
            attempts: 0,
            next_attempt_at: 1,
            last_status_code: None,
            last_error: None,
            created_at: 1,
            delivered_at: None,
            lease_owner: Some(OWNER.into()),
            lease_until: Some(10_000),
        })
        .collect();
    db::deliveries::insert_events(
        &mut conn,
        &[NewEvent {
            event,
            deliveries: rows,
        }],
    )
    .unwrap();
    drop(conn);
    Some(Outbox {
        _db: test_db,
        pool,
        webhook_id,
    })
}

fn attempt(delivery: &str, n: i32, code: Option<i32>, error: Option<&str>) -> AttemptRow {
    AttemptRow {
        delivery_id: delivery.into(),
        attempt: n,
        at: 100 * n as i64,
        duration_ms: 3,
        status_code: code,
        error: error.map(Into::into),
        response_body: None,
    }
}

fn outcome(
    webhook_id: &str,
    state: &'static str,
    next: i64,
    delivered: Option<i64>,
) -> AttemptOutcome {
    AttemptOutcome {
        webhook_id: webhook_id.into(),
        status: state,
        next_attempt_at: next,
        delivered_at: delivered,
    }
}

fn delivery(conn: &mut DbConn, id: &str) -> DeliveryRow {
    deliveries::table
        .find(id)
        .select(DeliveryRow::as_select())
        .first(conn)
        .unwrap()
}

/// How many attempts are recorded, and the webhook's last success.
fn attempts_and_last_success(conn: &mut DbConn, webhook_id: &str) -> (i64, Option<i64>) {
    let attempts = delivery_attempts::table.count().get_result(conn).unwrap();
    let last_success = webhooks::table
        .find(webhook_id)
        .select(webhooks::last_success_at)
        .first(conn)
        .unwrap();
    (attempts, last_success)
}

fn a_mixed_batch_leaves_each_delivery_with_its_last_outcome(store: Store) {
    let Some(outbox) = outbox(store, 4) else {
        return;
    };
    let wh = outbox.webhook_id.as_str();
    let batch = vec![
        // d0: a retry, then a success in the same batch.
        (
            attempt("d0", 1, Some(500), Some("receiver answered HTTP 500")),
            outcome(wh, status::PENDING, 5_000, None),
        ),
        (
            attempt("d1", 1, None, Some("connection refused")),
            outcome(wh, status::FAILED, 150, None),
        ),
        (
            attempt("d2", 1, Some(503), Some("receiver answered HTTP 503")),
            outcome(wh, status::PENDING, 7_000, None),
        ),
        (
            attempt("d0", 2, Some(204), None),
            outcome(wh, status::SUCCEEDED, 250, Some(250)),
        ),
    ];
    let mut conn = outbox.pool.get().unwrap();
    record_attempts(&mut conn, &batch).unwrap();

    let d0 = delivery(&mut conn, "d0");
    assert_eq!(d0.status, status::SUCCEEDED);
    assert_eq!(d0.attempts, 2);
    assert_eq!(
        (d0.last_status_code, d0.last_error.as_deref()),
        (Some(204), None)
    );
    assert_eq!(d0.delivered_at, Some(250));
    assert_eq!((d0.lease_owner, d0.lease_until), (None, None));

    let d1 = delivery(&mut conn, "d1");
    assert_eq!(d1.status, status::FAILED);
    assert_eq!(d1.last_error.as_deref(), Some("connection refused"));
    assert_eq!(d1.last_status_code, None);
    assert_eq!((d1.lease_owner, d1.lease_until), (None, None));

    let d2 = delivery(&mut conn, "d2");
    assert_eq!(d2.status, status::PENDING);
    assert_eq!((d2.attempts, d2.next_attempt_at), (1, 7_000));
    assert_eq!(d2.last_status_code, Some(503));
    assert_eq!(d2.delivered_at, None);
    // Still this instance's work: the lease stays.
    assert_eq!(
        (d2.lease_owner.as_deref(), d2.lease_until),
        (Some(OWNER), Some(10_000))
    );

    let d3 = delivery(&mut conn, "d3");
    assert_eq!((d3.status.as_str(), d3.attempts), (status::PENDING, 0));
    assert_eq!(d3.lease_owner.as_deref(), Some(OWNER));

    assert_eq!(attempts_and_last_success(&mut conn, wh), (4, Some(250)));
}

fn batches_larger_than_one_statement_are_written_whole(store: Store) {
    let Some(outbox) = outbox(store, 450) else {
        return;
    };
    let wh = outbox.webhook_id.as_str();
    let batch: Vec<_> = (0..450)
        .map(|i| {
            let at = 1_000 + i as i64;
            let state = if i % 3 == 0 {
                status::PENDING
            } else {
                status::SUCCEEDED
            };
            let delivered = (state == status::SUCCEEDED).then_some(at);
            (
                attempt(
                    &format!("d{i}"),
                    1,
                    Some(if delivered.is_some() { 200 } else { 500 }),
                    None,
                ),
                outcome(wh, state, at, delivered),
            )
        })
        .collect();
    let mut conn = outbox.pool.get().unwrap();
    record_attempts(&mut conn, &batch).unwrap();
    // Writing the same attempts again (a second holder's report, say) is
    // harmless: the attempts are kept once, the deliveries are unchanged.
    record_attempts(&mut conn, &batch).unwrap();

    for i in [0usize, 1, 2, 99, 100, 101, 199, 200, 449] {
        let d = delivery(&mut conn, &format!("d{i}"));
        let (_, expected) = &batch[i];
        assert_eq!(d.status, expected.status, "d{i}");
        assert_eq!(d.next_attempt_at, expected.next_attempt_at, "d{i}");
        assert_eq!(d.delivered_at, expected.delivered_at, "d{i}");
        assert_eq!(
            d.lease_owner.is_some(),
            expected.status == status::PENDING,
            "d{i}"
        );
    }
    let succeeded: i64 = deliveries::table
        .filter(deliveries::status.eq(status::SUCCEEDED))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(succeeded, 300);
    assert_eq!(attempts_and_last_success(&mut conn, wh), (450, Some(1_449)));
}

fn failing_outcomes_do_not_cost_the_events_their_commit(store: Store) {
    let Some(outbox) = outbox(store, 1) else {
        return;
    };
    let mut conn = outbox.pool.get().unwrap();
    // Outcomes cannot be written once their table is gone.
    diesel::sql_query("DROP TABLE delivery_attempts")
        .execute(&mut conn)
        .unwrap();
    let wh = outbox.webhook_id.as_str();
    let app_id: String = webhooks::table
        .find(wh)
        .select(webhooks::app_id)
        .first(&mut conn)
        .unwrap();
    let event = EventRow {
        id: db::new_id("evt"),
        app_id,
        event: "channel_stop".into(),
        channel_id: Some("c1".into()),
        event_time: 2,
        payload: r#"{"event":"channel_stop"}"#.into(),
        created_at: 2,
    };
    let mut row = delivery(&mut conn, "d0");
    row.id = "d-new".into();
    row.event_id = event.id.clone();
    let outcomes = vec![(
        attempt("d0", 1, Some(204), None),
        outcome(wh, status::SUCCEEDED, 3, Some(3)),
    )];
    let result = db::deliveries::store_and_record(
        &mut conn,
        &[NewEvent {
            event,
            deliveries: vec![row],
        }],
        &outcomes,
    )
    .expect("the events commit");
    assert!(result.is_err(), "the outcomes were not written");
    // The event's delivery is stored; the outcome's delivery is untouched.
    assert_eq!(delivery(&mut conn, "d-new").status, status::PENDING);
    let d0 = delivery(&mut conn, "d0");
    assert_eq!((d0.status.as_str(), d0.attempts), (status::PENDING, 0));
}

on_both_stores_sync!(
    a_mixed_batch_leaves_each_delivery_with_its_last_outcome,
    batches_larger_than_one_statement_are_written_whole,
    failing_outcomes_do_not_cost_the_events_their_commit,
);
