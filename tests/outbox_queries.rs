//! The outbox queries on both stores, below the actors: what a batch of
//! recorded attempts leaves in `deliveries`, `delivery_attempts` and
//! `webhooks`, how outcome writes are fenced by the webhook's lease, and how
//! leases are claimed, renewed and given back.

mod common;

use std::collections::HashSet;

use diesel::prelude::*;
use webhook_broker::db::deliveries::{record_attempts, AttemptOutcome, NewEvent};
use webhook_broker::db::models::{AttemptRow, DeliveryRow, EventRow, WebhookRow};
use webhook_broker::db::schema::{deliveries, delivery_attempts, webhook_leases, webhooks};
use webhook_broker::db::{self, DbConn};
use webhook_broker::domain::DeliveryStatus;

use common::{Store, TestDb};

const OWNER: &str = "broker-a";

struct Outbox {
    _db: TestDb,
    pool: db::Pool,
    webhook_id: String,
    /// The epoch of [`OWNER`]'s lease on the webhook.
    epoch: i64,
}

/// An enabled webhook `id` of app `app_id`.
fn webhook_row(id: &str, app_id: &str) -> WebhookRow {
    common::webhook_row(id, app_id, "https://example.com/hook", "channel_live")
}

/// Stores one event of `app_id` with `deliveries` as
/// `(delivery id, webhook id, status)`.
fn store_event(conn: &mut DbConn, app_id: &str, deliveries: Vec<(String, String, DeliveryStatus)>) {
    let event = EventRow {
        id: db::new_id("evt"),
        app_id: app_id.into(),
        event: "channel_live".into(),
        channel_id: None,
        event_time: 1,
        payload: "{}".into(),
        created_at: 1,
        seq: 0,
    };
    let rows = deliveries
        .into_iter()
        .map(|(id, webhook_id, status)| DeliveryRow {
            id,
            event_id: event.id.clone(),
            webhook_id,
            channel_id: None,
            status,
            attempts: 0,
            next_attempt_at: 1,
            last_status_code: None,
            last_error: None,
            created_at: 1,
            delivered_at: None,
            seq: 0,
        })
        .collect();
    db::deliveries::insert_events(
        conn,
        &mut [NewEvent {
            event,
            deliveries: rows,
        }],
    )
    .unwrap();
}

/// A store with one app, one webhook whose lease [`OWNER`] holds, and `n`
/// pending deliveries, named `d0`, `d1`, ...
fn outbox(store: Store, n: usize) -> Option<Outbox> {
    let test_db = TestDb::new(store)?;
    let pool = db::open(&test_db.url).expect("open store");
    let mut conn = pool.get().unwrap();
    let app = db::apps::create(&mut conn, "outbox".into()).unwrap();
    let webhook_id = db::new_id("wh");
    db::webhooks::insert(&mut conn, &webhook_row(&webhook_id, &app.row.id)).unwrap();
    let rows = (0..n)
        .map(|i| (format!("d{i}"), webhook_id.clone(), DeliveryStatus::Pending))
        .collect();
    store_event(&mut conn, &app.row.id, rows);
    let taken = db::leases::claim(&mut conn, OWNER, 60_000, 10, false).unwrap();
    assert_eq!(taken.len(), 1);
    drop(conn);
    Some(Outbox {
        _db: test_db,
        pool,
        webhook_id,
        epoch: taken[0].epoch,
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
    outbox: &Outbox,
    state: DeliveryStatus,
    next: i64,
    delivered: Option<i64>,
) -> AttemptOutcome {
    AttemptOutcome {
        webhook_id: outbox.webhook_id.clone(),
        status: state,
        next_attempt_at: next,
        delivered_at: delivered,
        epoch: Some(outbox.epoch),
    }
}

fn delivery(conn: &mut DbConn, id: &str) -> DeliveryRow {
    deliveries::table
        .find(id)
        .select(DeliveryRow::as_select())
        .first(conn)
        .unwrap()
}

/// A delivery as the API reads it: a plain success's row leaves out its
/// time and HTTP status, which `find` reads back from its last attempt.
fn logged(conn: &mut DbConn, webhook_id: &str, id: &str) -> DeliveryRow {
    db::deliveries::find(conn, webhook_id, id)
        .unwrap()
        .expect("the delivery is stored")
        .delivery
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
            outcome(&outbox, DeliveryStatus::Pending, 5_000, None),
        ),
        (
            attempt("d1", 1, None, Some("connection refused")),
            outcome(&outbox, DeliveryStatus::Failed, 150, None),
        ),
        (
            attempt("d2", 1, Some(503), Some("receiver answered HTTP 503")),
            outcome(&outbox, DeliveryStatus::Pending, 7_000, None),
        ),
        (
            // Attempt 2 starts at 200 and takes 3 ms: delivered at 203.
            attempt("d0", 2, Some(204), None),
            outcome(&outbox, DeliveryStatus::Succeeded, 203, Some(203)),
        ),
    ];
    let mut conn = outbox.pool.get().unwrap();
    record_attempts(&mut conn, OWNER, &batch).unwrap();

    // A plain success: the row holds its status and attempt count, and
    // drops the earlier attempt's 500; the time and status come from the
    // attempt that succeeded.
    let row = delivery(&mut conn, "d0");
    assert_eq!((row.status, row.attempts), (DeliveryStatus::Succeeded, 2));
    assert_eq!((row.last_status_code, row.delivered_at), (None, None));
    let d0 = logged(&mut conn, wh, "d0");
    assert_eq!(d0.status, DeliveryStatus::Succeeded);
    assert_eq!(d0.attempts, 2);
    assert_eq!(
        (d0.last_status_code, d0.last_error.as_deref()),
        (Some(204), None)
    );
    assert_eq!(d0.delivered_at, Some(203));

    let d1 = logged(&mut conn, wh, "d1");
    assert_eq!(d1.status, DeliveryStatus::Failed);
    assert_eq!(d1.last_error.as_deref(), Some("connection refused"));
    assert_eq!(d1.last_status_code, None);

    let d2 = logged(&mut conn, wh, "d2");
    assert_eq!(d2.status, DeliveryStatus::Pending);
    assert_eq!((d2.attempts, d2.next_attempt_at), (1, 7_000));
    assert_eq!(d2.last_status_code, Some(503));
    assert_eq!(d2.delivered_at, None);

    let d3 = logged(&mut conn, wh, "d3");
    assert_eq!((d3.status, d3.attempts), (DeliveryStatus::Pending, 0));

    assert_eq!(attempts_and_last_success(&mut conn, wh), (4, Some(203)));
}

fn batches_larger_than_one_statement_are_written_whole(store: Store) {
    // Past two of MySQL's 250-delivery statements for the outcomes that
    // carry their values, and past the 1,000 ids of one success statement,
    // with a first row that carries NULLs where later rows carry values.
    const N: usize = 2_400;
    let Some(outbox) = outbox(store, N) else {
        return;
    };
    let wh = outbox.webhook_id.as_str();
    let batch: Vec<_> = (0..N)
        .map(|i| {
            let at = 1_000 + i as i64;
            let state = if i % 3 == 0 {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Succeeded
            };
            // One success in five (i % 5 == 1) is stored with a time of
            // its own; the rest were delivered as their attempt ended.
            let delivered = (state == DeliveryStatus::Succeeded).then_some(match i % 5 {
                1 => at,
                _ => 100 + 3 + (i % 2) as i64,
            });
            let (code, error) = match (delivered.is_some(), i % 2 == 0) {
                (true, _) => (Some(200), None),
                (false, true) => (None, Some("connection refused")),
                (false, false) => (Some(500), Some("receiver answered HTTP 500")),
            };
            let mut attempt = attempt(&format!("d{i}"), 1, code, error);
            attempt.duration_ms = 3 + (i % 2) as i64;
            (attempt, outcome(&outbox, state, at, delivered))
        })
        .collect();
    let mut conn = outbox.pool.get().unwrap();
    record_attempts(&mut conn, OWNER, &batch).unwrap();
    // Writing the same attempts again (a second holder's report, say) is
    // harmless: the attempts are kept once, the deliveries are unchanged.
    record_attempts(&mut conn, OWNER, &batch).unwrap();

    let mut plain = 0;
    for (i, (attempt, expected)) in batch.iter().enumerate() {
        let d = logged(&mut conn, wh, &format!("d{i}"));
        assert_eq!(d.status, expected.status, "d{i}");
        assert_eq!(d.attempts, 1, "d{i}");
        if expected.status == DeliveryStatus::Pending {
            assert_eq!(d.next_attempt_at, expected.next_attempt_at, "d{i}");
        }
        assert_eq!(d.delivered_at, expected.delivered_at, "d{i}");
        assert_eq!(d.last_status_code, attempt.status_code, "d{i}");
        assert_eq!(d.last_error, attempt.error, "d{i}");
        if expected.delivered_at == Some(attempt.at + attempt.duration_ms) {
            plain += 1;
        }
    }
    assert!(plain > 1_000, "{plain} plain successes: past one statement");
    let succeeded: i64 = deliveries::table
        .filter(deliveries::status.eq(DeliveryStatus::Succeeded))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(succeeded, (N - N.div_ceil(3)) as i64);
    let last_success = batch.iter().filter_map(|(_, o)| o.delivered_at).max();
    assert_eq!(last_success, Some(3_396));
    assert_eq!(
        attempts_and_last_success(&mut conn, wh),
        (N as i64, last_success)
    );
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
        seq: 0,
    };
    let mut row = delivery(&mut conn, "d0");
    row.id = "d-new".into();
    row.event_id = event.id.clone();
    let outcomes = vec![(
        attempt("d0", 1, Some(204), None),
        outcome(&outbox, DeliveryStatus::Succeeded, 3, Some(3)),
    )];
    let result = db::deliveries::store_and_record(
        &mut conn,
        &mut [NewEvent {
            event,
            deliveries: vec![row],
        }],
        OWNER,
        &outcomes,
    )
    .expect("the events commit");
    assert!(result.is_err(), "the outcomes were not written");
    // The event's delivery is stored; the outcome's delivery is untouched.
    assert_eq!(delivery(&mut conn, "d-new").status, DeliveryStatus::Pending);
    let d0 = delivery(&mut conn, "d0");
    assert_eq!((d0.status, d0.attempts), (DeliveryStatus::Pending, 0));
}

/// Makes `webhook_id`'s lease lapse, as if its holder had stopped renewing
/// it long ago.
fn lapse(conn: &mut DbConn, webhook_id: &str) {
    diesel::update(webhook_leases::table.find(webhook_id))
        .set(webhook_leases::lease_until.eq(Some(1i64)))
        .execute(conn)
        .unwrap();
}

fn an_outcome_made_under_a_lost_lease_never_overwrites_the_new_owner(store: Store) {
    let Some(outbox) = outbox(store, 2) else {
        return;
    };
    let wh = outbox.webhook_id.as_str();
    let mut conn = outbox.pool.get().unwrap();
    // OWNER is paused past its lease; broker-b takes the webhook over.
    lapse(&mut conn, wh);
    let taken = db::leases::claim(&mut conn, "broker-b", 60_000, 10, false).unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].epoch,
        outbox.epoch + 1,
        "a takeover raises the epoch"
    );
    let new_owner = AttemptOutcome {
        webhook_id: wh.into(),
        status: DeliveryStatus::Succeeded,
        next_attempt_at: 300,
        delivered_at: Some(300),
        epoch: Some(taken[0].epoch),
    };
    let done = record_attempts(
        &mut conn,
        "broker-b",
        &[(attempt("d0", 1, Some(200), None), new_owner)],
    )
    .unwrap();
    assert_eq!((done.written, done.fenced), (1, 0));
    // OWNER resumes and reports what it had in flight: a 500 for d0 and a
    // success for d1. Neither may land.
    let late = vec![
        (
            attempt("d0", 1, Some(500), Some("receiver answered HTTP 500")),
            outcome(&outbox, DeliveryStatus::Pending, 900, None),
        ),
        (
            attempt("d1", 1, Some(200), None),
            outcome(&outbox, DeliveryStatus::Succeeded, 900, Some(900)),
        ),
    ];
    let done = record_attempts(&mut conn, OWNER, &late).unwrap();
    assert_eq!((done.written, done.fenced), (0, 2));
    let d0 = logged(&mut conn, wh, "d0");
    assert_eq!(
        (d0.status, d0.last_status_code, d0.delivered_at),
        (DeliveryStatus::Succeeded, Some(200), Some(300))
    );
    let d1 = delivery(&mut conn, "d1");
    assert_eq!((d1.status, d1.attempts), (DeliveryStatus::Pending, 0));
    let (attempts, _) = attempts_and_last_success(&mut conn, wh);
    assert_eq!(attempts, 1, "only the new owner's attempt is logged");
    // The test attempt to a disabled webhook has no epoch and is not fenced.
    let unfenced = AttemptOutcome {
        epoch: None,
        ..outcome(&outbox, DeliveryStatus::Failed, 950, None)
    };
    let done = record_attempts(
        &mut conn,
        OWNER,
        &[(attempt("d1", 1, Some(500), None), unfenced)],
    )
    .unwrap();
    assert_eq!((done.written, done.fenced), (1, 0));
}

fn leases_are_shared_out_renewed_and_given_back_beyond_one_statement(store: Store) {
    let Some(outbox) = outbox(store, 0) else {
        return;
    };
    let mut conn = outbox.pool.get().unwrap();
    // 1,200 more webhooks: more than one statement's worth of ids.
    let app_id: String = webhooks::table
        .find(&outbox.webhook_id)
        .select(webhooks::app_id)
        .first(&mut conn)
        .unwrap();
    conn.transaction(|conn| {
        for i in 0..1200 {
            db::webhooks::insert(conn, &webhook_row(&format!("wh_{i:05}"), &app_id))?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    // One written straight into the table, as a seeding tool would: the
    // start-up repair gives it its lease row, once.
    diesel::insert_into(webhooks::table)
        .values(&webhook_row("wh_seeded", &app_id))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(db::leases::add_missing(&mut conn).unwrap(), 1);
    assert_eq!(db::leases::add_missing(&mut conn).unwrap(), 0);
    diesel::delete(webhook_leases::table.find("wh_seeded"))
        .execute(&mut conn)
        .unwrap();
    let census = db::leases::census(&mut conn, "broker-b", 60_000).unwrap();
    assert_eq!(census.webhooks, 1201);
    assert_eq!(census.free, 1200);
    assert_eq!(
        census.live, 1,
        "broker-b only: OWNER never said it was alive"
    );
    // broker-b takes 700; what it already has is never taken twice.
    let b = db::leases::claim(&mut conn, "broker-b", 60_000, 700, false).unwrap();
    assert_eq!(b.len(), 700);
    let c = db::leases::claim(&mut conn, "broker-c", 60_000, 5000, false).unwrap();
    assert_eq!(c.len(), 500, "only the 500 left free");
    assert!(db::leases::claim(&mut conn, "broker-d", 60_000, 10, false)
        .unwrap()
        .is_empty());
    // Renewal keeps exactly what is held; a lease taken over is missing.
    let ids: Vec<String> = b.iter().map(|l| l.webhook_id.clone()).collect();
    lapse(&mut conn, &ids[0]);
    let d = db::leases::claim(&mut conn, "broker-d", 60_000, 10, false).unwrap();
    assert_eq!(d.len(), 1);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let still = db::leases::renew(&mut conn, "broker-b", &refs, 60_000).unwrap();
    assert_eq!(still.len(), 699);
    let held: Vec<(&str, i64)> = b.iter().map(|l| (l.webhook_id.as_str(), l.epoch)).collect();
    assert_eq!(
        webhook_broker::lease::lost(&held, &still),
        vec![(ids[0].as_str(), b[0].epoch)]
    );
    // A restart of broker-c takes all its own back at start, beyond the limit.
    let again = db::leases::claim(&mut conn, "broker-c", 60_000, 0, true).unwrap();
    assert_eq!(again.len(), 500);
    assert!(again.iter().zip(&c).all(|(a, _)| a.epoch >= 2));
    // A clean stop frees every lease of broker-b for the others at once.
    assert_eq!(db::leases::leave(&mut conn, "broker-b").unwrap(), 699);
    let census = db::leases::census(&mut conn, "broker-d", 60_000).unwrap();
    assert_eq!(census.free, 699);
    // Giving back is fenced by epoch: a stale epoch frees nothing.
    let stale = webhook_broker::lease::Lease {
        webhook_id: d[0].webhook_id.clone(),
        epoch: d[0].epoch - 1,
    };
    assert_eq!(
        db::leases::release(&mut conn, "broker-d", &[stale]).unwrap(),
        0
    );
    assert_eq!(db::leases::release(&mut conn, "broker-d", &d).unwrap(), 1);
}

fn sequence_numbers_follow_the_order_of_commits(store: Store) {
    let Some(outbox) = outbox(store, 3) else {
        return;
    };
    let mut conn = outbox.pool.get().unwrap();
    let seqs: Vec<i64> = deliveries::table
        .order(deliveries::id)
        .select(deliveries::seq)
        .load(&mut conn)
        .unwrap();
    assert_eq!(
        seqs,
        vec![1, 1, 1],
        "one event, numbered 1, and its deliveries"
    );
    let (upto, found) = db::leases::since(&mut conn, 0).unwrap();
    assert_eq!((upto, found), (1, vec![outbox.webhook_id.clone()]));
    let (upto, found) = db::leases::since(&mut conn, 1).unwrap();
    assert_eq!((upto, found.len()), (1, 0));
    // A requeued delivery goes to the back: a number after everything.
    diesel::update(deliveries::table.find("d1"))
        .set(deliveries::status.eq(DeliveryStatus::Failed))
        .execute(&mut conn)
        .unwrap();
    let n = db::deliveries::requeue(
        &mut conn,
        &outbox.webhook_id,
        &["d1".into(), "d2".into()],
        5,
    )
    .unwrap();
    assert_eq!(n, 1, "only what is not pending");
    assert_eq!(delivery(&mut conn, "d1").seq, 2);
    let (upto, found) = db::leases::since(&mut conn, 1).unwrap();
    assert_eq!((upto, found), (2, vec![outbox.webhook_id.clone()]));
    let page = db::deliveries::read_page(&mut conn, &outbox.webhook_id, None, 10).unwrap();
    let order: Vec<&str> = page.iter().map(|p| p.delivery.id.as_str()).collect();
    assert_eq!(order, vec!["d0", "d2", "d1"]);
    let after = (1, "d2".to_owned());
    let page = db::deliveries::read_page(&mut conn, &outbox.webhook_id, Some(&after), 10).unwrap();
    assert_eq!(page.len(), 1);
}

fn a_channel_page_reads_on_in_the_channels_asked_for_only(store: Store) {
    let Some(outbox) = outbox(store, 8) else {
        return;
    };
    let mut conn = outbox.pool.get().unwrap();
    for (ids, channel) in [
        (vec!["d0", "d2", "d4"], "a"),
        (vec!["d1", "d3"], "b"),
        (vec!["d5", "d6", "d7"], "c"),
    ] {
        diesel::update(deliveries::table.filter(deliveries::id.eq_any(ids)))
            .set(deliveries::channel_id.eq(channel))
            .execute(&mut conn)
            .unwrap();
    }
    let ids = |conn: &mut DbConn, channels: &[&str], after: (i64, &str), limit: i64| {
        let after = (after.0, after.1.to_owned());
        db::deliveries::read_channels_page(conn, &outbox.webhook_id, channels, &after, limit)
            .unwrap()
            .into_iter()
            .map(|p| {
                assert_eq!(p.payload, "{}", "each row comes with its body");
                p.delivery.id
            })
            .collect::<Vec<String>>()
    };
    assert_eq!(ids(&mut conn, &["a"], (i64::MIN, ""), 2), ["d0", "d2"]);
    assert_eq!(ids(&mut conn, &["a"], (1, "d2"), 10), ["d4"]);
    assert_eq!(ids(&mut conn, &["a"], (1, "d4"), 10), Vec::<String>::new());
    assert_eq!(ids(&mut conn, &["b"], (i64::MIN, ""), 10), ["d1", "d3"]);
    // Several channels at once, in sequence order, past the cursor.
    assert_eq!(
        ids(&mut conn, &["a", "c"], (1, "d2"), 10),
        ["d4", "d5", "d6", "d7"]
    );
    assert_eq!(ids(&mut conn, &["c", "b"], (1, "d3"), 2), ["d5", "d6"]);
    // Only pending deliveries: a finished one is not read again.
    diesel::update(deliveries::table.find("d3"))
        .set(deliveries::status.eq(DeliveryStatus::Succeeded))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(ids(&mut conn, &["b"], (i64::MIN, ""), 10), ["d1"]);
    assert_eq!(
        ids(&mut conn, &["z"], (i64::MIN, ""), 10),
        Vec::<String>::new()
    );
}

/// Past the 500 ids one statement carries: 1,200 webhooks, a third with a
/// pending delivery, a third with only a succeeded one.
fn the_claim_finds_which_webhooks_have_pending_deliveries_beyond_one_statement(store: Store) {
    let Some(test_db) = TestDb::new(store) else {
        return;
    };
    let pool = db::open(&test_db.url).expect("open store");
    let mut conn = pool.get().unwrap();
    let app = db::apps::create(&mut conn, "many".into()).unwrap();
    let ids: Vec<String> = (0..1_200).map(|i| format!("wh_{i:05}")).collect();
    for id in &ids {
        db::webhooks::insert(&mut conn, &webhook_row(id, &app.row.id)).unwrap();
    }
    let rows = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2)
        .map(|(i, id)| {
            let status = if i % 3 == 0 {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Succeeded
            };
            (format!("d{i}"), id.clone(), status)
        })
        .collect();
    store_event(&mut conn, &app.row.id, rows);
    let asked: Vec<&str> = ids.iter().map(String::as_str).collect();
    let found = db::deliveries::webhooks_with_pending(&mut conn, &asked).unwrap();
    let expected: std::collections::HashSet<String> = ids.iter().step_by(3).cloned().collect();
    assert_eq!(found.len(), 400);
    assert_eq!(found, expected);
    assert!(db::deliveries::webhooks_with_pending(&mut conn, &[])
        .unwrap()
        .is_empty());
}

/// A restart of an instance that held 11,000 leases (more than two claim
/// rounds of 5,000, and many statements of 500 ids): the start-up claim
/// first takes only the webhooks with deliveries pending, of its own and
/// (up to its share) of the free ones, never one another live instance
/// holds; the round after takes the rest of its own back, each lease once.
fn the_start_up_claim_takes_the_webhooks_with_work_first_and_its_other_leases_after(store: Store) {
    let Some(test_db) = TestDb::new(store) else {
        return;
    };
    let pool = db::open(&test_db.url).expect("open store");
    let mut conn = pool.get().unwrap();
    let app = db::apps::create(&mut conn, "many".into()).unwrap();
    let id = |i: usize| format!("wh_{i:05}");
    conn.transaction(|conn| {
        for i in 0..12_000 {
            db::webhooks::insert(conn, &webhook_row(&id(i), &app.row.id))?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    let lease = 60_000;
    let first = db::leases::claim(&mut conn, "broker-c", lease, 11_000, false).unwrap();
    assert_eq!(first.len(), 11_000);
    let own: HashSet<String> = first.iter().map(|l| l.webhook_id.clone()).collect();
    let free: Vec<String> = (0..12_000).map(id).filter(|w| !own.contains(w)).collect();
    let other = db::leases::claim(&mut conn, "broker-x", lease, 1, false).unwrap();
    assert_eq!(other.len(), 1);
    let others = other[0].webhook_id.clone();
    let free: Vec<String> = free.into_iter().filter(|w| *w != others).collect();
    let mut own_sorted: Vec<&String> = own.iter().collect();
    own_sorted.sort();
    let own_with_work: Vec<String> = [0, 5_000, 10_999]
        .iter()
        .map(|&k| own_sorted[k].clone())
        .collect();
    let free_with_work = [free[0].clone(), free[500].clone()];
    let mut pending = own_with_work.clone();
    pending.extend(free_with_work.iter().cloned());
    pending.push(others.clone());
    let mut rows: Vec<(String, String, DeliveryStatus)> = pending
        .iter()
        .enumerate()
        .map(|(k, w)| (format!("d{k}"), w.clone(), DeliveryStatus::Pending))
        .collect();
    // Only history: no work.
    rows.push((
        "done".into(),
        own_sorted[1].clone(),
        DeliveryStatus::Succeeded,
    ));
    store_event(&mut conn, &app.row.id, rows);

    let taken = db::leases::claim_with_pending(&mut conn, "broker-c", lease, 1).unwrap();
    let taken_ids: HashSet<String> = taken.iter().map(|l| l.webhook_id.clone()).collect();
    assert_eq!(
        taken.len(),
        4,
        "three of its own and one free: {taken_ids:?}"
    );
    assert!(own_with_work.iter().all(|w| taken_ids.contains(w)));
    assert_eq!(
        free_with_work
            .iter()
            .filter(|w| taken_ids.contains(*w))
            .count(),
        1,
        "its share of the free ones was one"
    );
    assert!(!taken_ids.contains(&others), "another instance holds it");
    assert!(taken
        .iter()
        .filter(|l| own.contains(&l.webhook_id))
        .all(|l| l.epoch == 2));

    let rest = db::leases::claim_own_rest(
        &mut conn,
        "broker-c",
        lease,
        |id| taken_ids.contains(id),
        || (),
    )
    .unwrap();
    assert_eq!(rest.len(), 11_000 - 3);
    assert!(rest
        .iter()
        .all(|l| !taken_ids.contains(&l.webhook_id) && l.epoch == 2));
    let owned: i64 = webhook_leases::table
        .filter(webhook_leases::owner.eq("broker-c"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(owned, 11_001);
    let owner_of_others: Option<String> = webhook_leases::table
        .find(&others)
        .select(webhook_leases::owner)
        .first(&mut conn)
        .unwrap();
    assert_eq!(owner_of_others.as_deref(), Some("broker-x"));
}

on_both_stores_sync!(
    the_claim_finds_which_webhooks_have_pending_deliveries_beyond_one_statement,
    the_start_up_claim_takes_the_webhooks_with_work_first_and_its_other_leases_after,
    a_channel_page_reads_on_in_the_channels_asked_for_only,
    an_outcome_made_under_a_lost_lease_never_overwrites_the_new_owner,
    leases_are_shared_out_renewed_and_given_back_beyond_one_statement,
    sequence_numbers_follow_the_order_of_commits,
    a_mixed_batch_leaves_each_delivery_with_its_last_outcome,
    batches_larger_than_one_statement_are_written_whole,
    failing_outcomes_do_not_cost_the_events_their_commit,
);
