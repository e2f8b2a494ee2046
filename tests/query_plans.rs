//! The outbox's hot queries walk the indexes they were written for. On
//! SQLite the indexes that find work hold pending (or failed, or
//! succeeded) rows only, and its planner takes such a partial index only
//! when the query states the index's condition literally
//! (`db::deliveries::status_is`); a query that bound the status instead, or
//! lost its `seq >= cursor`, would still answer right and only get slower
//! as history grew, which no other test would see. So each query is run as
//! the broker runs it, its SQL caught on the connection, and SQLite asked
//! for its plan. (MySQL has no partial indexes; its plans were checked by
//! hand, docs/benchmarks.md.)

mod common;

use std::sync::{Arc, Mutex};

use diesel::connection::{Connection, InstrumentationEvent};
use diesel::prelude::*;
use diesel::sql_types::Text;
use webhook_broker::db::{self, DbConn};

use common::{Store, TestDb};

#[derive(QueryableByName)]
struct PlanRow {
    #[diesel(sql_type = Text)]
    detail: String,
}

fn sqlite(conn: &mut DbConn) -> &mut diesel::SqliteConnection {
    match conn {
        DbConn::Sqlite(c) => c,
        #[cfg(feature = "mysql")]
        DbConn::Mysql(_) => panic!("an SQLite store"),
    }
}

/// The SQL of every statement `run` makes on `conn` that reads
/// `deliveries`, each with SQLite's plan for it, one line per step.
fn plans_of(conn: &mut DbConn, run: impl FnOnce(&mut DbConn)) -> Vec<(String, String)> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    sqlite(conn).set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            // The debug form ends with the values bound; the plan does
            // not depend on them.
            let sql = text.split(" -- binds: ").next().unwrap_or("").to_owned();
            sink.lock().unwrap().push(sql);
        }
    });
    run(conn);
    sqlite(conn).set_instrumentation(|_: InstrumentationEvent<'_>| {});
    let statements: Vec<String> = seen.lock().unwrap().clone();
    statements
        .into_iter()
        .filter(|sql| sql.starts_with("SELECT") && sql.contains("`deliveries`"))
        .map(|sql| {
            let steps: Vec<PlanRow> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load(conn)
                .unwrap_or_else(|e| panic!("no plan for {sql}: {e}"));
            let plan = steps
                .into_iter()
                .map(|s| s.detail)
                .collect::<Vec<_>>()
                .join("\n");
            (sql, plan)
        })
        .collect()
}

/// Asserts that `run` reads `deliveries` at least once, every time through
/// `index` (its name and the terms SQLite seeks on, as its plan writes
/// them: a page must seek to its cursor, not walk up to it) and never by
/// scanning the table.
fn assert_walks(conn: &mut DbConn, what: &str, index: &str, run: impl FnOnce(&mut DbConn)) {
    let plans = plans_of(conn, run);
    assert!(!plans.is_empty(), "{what}: no query of deliveries was made");
    for (sql, plan) in plans {
        assert!(
            plan.contains(&format!("INDEX {index}")),
            "{what}: expected a walk of {index}\n{sql}\n{plan}"
        );
        assert!(
            !plan.contains("SCAN deliveries"),
            "{what}: a scan of the whole table\n{sql}\n{plan}"
        );
    }
}

#[test]
fn each_outbox_query_on_sqlite_walks_its_own_index() {
    let test_db = TestDb::new(Store::Sqlite).expect("SQLite is always there");
    let pool = db::open(&test_db.url).expect("open store");
    let mut conn = pool.get().unwrap();
    let conn: &mut DbConn = &mut conn;
    let after = (5, "msg_x".to_owned());

    assert_walks(
        conn,
        "a backlog page",
        "deliveries_pending_by_webhook (webhook_id=? AND seq>?)",
        |c| {
            db::deliveries::read_page(c, "wh_a", Some(&after), 100).unwrap();
        },
    );
    assert_walks(
        conn,
        "the first backlog page",
        "deliveries_pending_by_webhook (webhook_id=? AND seq>?)",
        |c| {
            db::deliveries::read_page(c, "wh_a", None, 100).unwrap();
        },
    );
    assert_walks(
        conn,
        "a channel page",
        "deliveries_pending_by_channel (webhook_id=? AND channel_id=? AND seq>?)",
        |c| {
            db::deliveries::read_channel_page(c, "wh_a", "ch-1", &after, 64).unwrap();
        },
    );
    assert_walks(
        conn,
        "the claim's pending probe",
        "deliveries_pending_by_webhook (webhook_id=?)",
        |c| {
            db::deliveries::webhooks_with_pending(c, &["wh_a", "wh_b"]).unwrap();
        },
    );
    assert_walks(
        conn,
        "a stretch of the sequence",
        "deliveries_by_seq (seq>? AND seq<?)",
        |c| {
            db::leases::webhooks_in_stretch(c, 10, 20).unwrap();
        },
    );
    assert_walks(
        conn,
        "the failing count",
        "deliveries_failed_by_webhook (webhook_id=?)",
        |c| {
            db::deliveries::health(c, &["wh_a".to_owned()]).unwrap();
        },
    );
    assert_walks(
        conn,
        "recover",
        "deliveries_failed_by_webhook (webhook_id=? AND created_at>?)",
        |c| {
            db::deliveries::failed_since(c, "wh_a", 0).unwrap();
        },
    );
    assert_walks(
        conn,
        "pruning",
        "deliveries_succeeded_by_created (created_at>? AND created_at<?)",
        |c| {
            db::deliveries::prune_succeeded(c, 0, 1_000, 500).unwrap();
        },
    );
    assert_walks(
        conn,
        "the log filtered by channel",
        "deliveries_by_webhook (webhook_id=?)",
        |c| {
            let filter = db::deliveries::LogFilter {
                channel_id: Some("ch-1".into()),
                ..Default::default()
            };
            db::deliveries::page(c, "wh_a", &filter, 0, 50).unwrap();
        },
    );
}
