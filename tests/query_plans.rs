//! The outbox's hot queries walk the indexes they were written for. On
//! SQLite the indexes that find work hold pending (or failed, or
//! succeeded) rows only, and its planner takes such a partial index only
//! when the query states the index's condition literally
//! (`db::deliveries::status_is`); a query that bound the status instead, or
//! lost its `seq >= cursor`, would still answer right and only get slower
//! as history grew, which no other test would see. So each query is run as
//! the broker runs it, its SQL caught on the connection, and SQLite asked
//! for its plan. On MySQL, with the `mysql` feature, the same queries are
//! run over a table of history and explained with their values: each must
//! seek on its index's leading columns, not scan or sort.

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
        "deliveries_pending_by_webhook (webhook_id=? AND seq>?)",
        |c| {
            db::deliveries::read_channels_page(c, "wh_a", &["ch-1", "ch-2"], &after, 64).unwrap();
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
    // Pruning reads deliveries only as far as an event older than its
    // limit: one, numbered 7.
    diesel::sql_query(
        "INSERT INTO events (id, app_id, event, channel_id, event_time, payload, created_at, seq) \
         VALUES ('evt_old', 'app_a', 'channel_live', NULL, 1, '{}', 1, 7)",
    )
    .execute(conn)
    .unwrap();
    assert_walks(
        conn,
        "pruning",
        "deliveries_succeeded_by_seq (seq>? AND seq<?)",
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

/// The MySQL half. Without partial indexes, MySQL's plans depend on the
/// rows and their statistics, so the tables hold a history first (mostly
/// succeeded, a few pending and failed, like a running broker's), and
/// each query is explained with the values it was run with, written into
/// its SQL: a plan for placeholders alone would see nothing to seek on.
#[cfg(feature = "mysql")]
mod on_mysql {
    use super::*;
    use serde_json::Value;

    fn mysql(conn: &mut DbConn) -> &mut diesel::MysqlConnection {
        match conn {
            DbConn::Mysql(c) => c,
            DbConn::Sqlite(_) => panic!("a MySQL store"),
        }
    }

    /// The values of a statement's debug form (`... -- binds: [..]`), as
    /// SQL literals, in order. The tests bind only plain words and numbers.
    fn literals(binds: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = binds.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    let mut word = String::new();
                    for c in chars.by_ref() {
                        if c == '"' {
                            break;
                        }
                        assert!(c != '\\' && c != '\'', "a plain word: {binds}");
                        word.push(c);
                    }
                    out.push(format!("'{word}'"));
                }
                '-' | '0'..='9' => {
                    let mut number = c.to_string();
                    while let Some(&d) = chars.peek() {
                        if !d.is_ascii_digit() {
                            break;
                        }
                        number.push(d);
                        chars.next();
                    }
                    out.push(number);
                }
                '[' | ']' | ',' | ' ' => {}
                other => panic!("an unexpected bind {other:?} in {binds}"),
            }
        }
        out
    }

    /// `sql` with each `?` replaced by the next of `values`.
    fn with_values(sql: &str, values: &[String]) -> String {
        let mut parts = sql.split('?');
        let mut out = parts.next().unwrap_or("").to_owned();
        let mut values = values.iter();
        for part in parts {
            out.push_str(values.next().expect("a value for each placeholder"));
            out.push_str(part);
        }
        assert!(values.next().is_none(), "more values than placeholders");
        out
    }

    #[derive(QueryableByName)]
    struct ExplainRow {
        #[diesel(sql_type = Text, column_name = "EXPLAIN")]
        plan: String,
    }

    /// Every table access in a MariaDB/MySQL JSON plan.
    fn accesses<'a>(plan: &'a Value, out: &mut Vec<&'a Value>) {
        match plan {
            Value::Object(m) => {
                if m.contains_key("table_name") && m.contains_key("access_type") {
                    out.push(plan);
                }
                m.values().for_each(|v| accesses(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| accesses(v, out)),
            _ => {}
        }
    }

    /// Whether a query may sort what it found.
    enum Sorts {
        /// Never: it reads in the order it answers in.
        Never,
        /// Only the few rows its seek found (why: at the call).
        WhatItFound,
    }

    /// Asserts that every read of `deliveries` that `run` makes seeks on
    /// one of `indexes` with (at least) the key parts listed with it, that
    /// none scans the table or a whole index, and that none sorts unless
    /// `sorts` allows.
    fn assert_walks(
        conn: &mut DbConn,
        what: &str,
        indexes: &[(&str, &[&str])],
        sorts: Sorts,
        run: impl FnOnce(&mut DbConn),
    ) {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = seen.clone();
        mysql(conn).set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                sink.lock().unwrap().push(query.to_string());
            }
        });
        run(conn);
        mysql(conn).set_instrumentation(|_: InstrumentationEvent<'_>| {});
        let statements: Vec<String> = seen.lock().unwrap().clone();
        let reads: Vec<String> = statements
            .into_iter()
            .filter(|q| q.starts_with("SELECT") && q.contains("`deliveries`"))
            .collect();
        assert!(!reads.is_empty(), "{what}: no query of deliveries was made");
        for query in reads {
            let (sql, binds) = query.split_once(" -- binds: ").unwrap_or((&query, "[]"));
            let sql = with_values(sql, &literals(binds));
            let rows: Vec<ExplainRow> = diesel::sql_query(format!("EXPLAIN FORMAT=JSON {sql}"))
                .load(conn)
                .unwrap_or_else(|e| panic!("no plan for {sql}: {e}"));
            let plan: Value = serde_json::from_str(&rows[0].plan).unwrap();
            let text = plan.to_string();
            let mut found = Vec::new();
            accesses(&plan, &mut found);
            let reads: Vec<&Value> = found
                .into_iter()
                .filter(|a| a["table_name"] == "deliveries")
                .collect();
            assert!(
                !reads.is_empty(),
                "{what}: deliveries not read?\n{sql}\n{text}"
            );
            for read in reads {
                assert_ne!(read["access_type"], "ALL", "{what}\n{sql}\n{text}");
                assert_ne!(read["access_type"], "index", "{what}\n{sql}\n{text}");
                let used: Vec<&str> = read["used_key_parts"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                assert!(
                    indexes.iter().any(|(index, parts)| read["key"] == *index
                        && used.len() >= parts.len()
                        && used[..parts.len()] == **parts),
                    "{what}: seeks on {} {used:?}, not on any of {indexes:?}\n{sql}\n{text}",
                    read["key"]
                );
            }
            if let Sorts::Never = sorts {
                assert!(!text.contains("filesort"), "{what}: a sort\n{sql}\n{text}");
            }
        }
    }

    /// 20,000 deliveries over ten webhooks and 100 channels, each with its
    /// event, numbered in order: the first 15,000 history (one in 47
    /// failed, the rest succeeded), the last 5,000 a backlog, pending, as
    /// a broker's table is while a receiver is down; then fresh statistics.
    fn history(conn: &mut DbConn) {
        let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                      UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                      UNION ALL SELECT 8 UNION ALL SELECT 9)";
        let n = format!(
            "(SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n \
             FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f WHERE f.d < 2) s"
        );
        diesel::sql_query(format!(
            "INSERT INTO events (id, app_id, event, channel_id, event_time, payload, created_at, seq) \
             SELECT CONCAT('evt_', LPAD(n, 6, '0')), 'app_a', 'channel_live', \
             CONCAT('ch-', n % 100), n, '{{}}', n, n FROM {n}"
        ))
        .execute(conn)
        .unwrap();
        diesel::sql_query(format!(
            "INSERT INTO deliveries (id, event_id, webhook_id, channel_id, status, attempts, \
             next_attempt_at, created_at, delivered_at, seq) \
             SELECT CONCAT('msg_', LPAD(n, 6, '0')), CONCAT('evt_', LPAD(n, 6, '0')), \
             CONCAT('wh_', CHAR(97 + n % 10)), CONCAT('ch-', n % 100), \
             CASE WHEN n >= 15000 THEN 'pending' WHEN n % 47 = 7 THEN 'failed' \
             ELSE 'succeeded' END, 1, n, n, n, n FROM {n}"
        ))
        .execute(conn)
        .unwrap();
        diesel::sql_query("ANALYZE TABLE deliveries, events")
            .execute(conn)
            .unwrap();
    }

    #[test]
    fn each_outbox_query_on_mysql_walks_its_own_index() {
        let Some(test_db) = TestDb::new(Store::Mysql) else {
            return;
        };
        let pool = db::open(&test_db.url).expect("open store");
        let mut conn = pool.get().unwrap();
        let conn: &mut DbConn = &mut conn;
        history(conn);
        let after = (15_000, "msg_015000".to_owned());

        assert_walks(
            conn,
            "a backlog page",
            &[(
                "deliveries_pending_by_webhook",
                &["webhook_id", "status", "seq"],
            )],
            Sorts::Never,
            |c| {
                db::deliveries::read_page(c, "wh_a", Some(&after), 100).unwrap();
            },
        );
        assert_walks(
            conn,
            "the first backlog page",
            &[(
                "deliveries_pending_by_webhook",
                &["webhook_id", "status", "seq"],
            )],
            Sorts::Never,
            |c| {
                db::deliveries::read_page(c, "wh_a", None, 100).unwrap();
            },
        );
        assert_walks(
            conn,
            "a channel page",
            &[(
                "deliveries_pending_by_webhook",
                &["webhook_id", "status", "seq"],
            )],
            Sorts::Never,
            |c| {
                db::deliveries::read_channels_page(c, "wh_a", &["ch-10", "ch-11"], &after, 64)
                    .unwrap();
            },
        );
        assert_walks(
            conn,
            "the claim's pending probe",
            &[("deliveries_pending_by_webhook", &["webhook_id", "status"])],
            Sorts::Never,
            |c| {
                db::deliveries::webhooks_with_pending(c, &["wh_a", "wh_b"]).unwrap();
            },
        );
        assert_walks(
            conn,
            "a stretch of the sequence",
            &[("deliveries_by_seq", &["seq"])],
            Sorts::Never,
            |c| {
                db::leases::webhooks_in_stretch(c, 15_000, 15_100).unwrap();
            },
        );
        assert_walks(
            conn,
            "the failing count",
            &[("deliveries_pending_by_webhook", &["webhook_id", "status"])],
            // MariaDB sorts the groups of a GROUP BY, one a webhook.
            Sorts::WhatItFound,
            |c| {
                db::deliveries::health(c, &["wh_a".to_owned()]).unwrap();
            },
        );
        assert_walks(
            conn,
            "recover",
            &[("deliveries_pending_by_webhook", &["webhook_id", "status"])],
            // The webhook's failed rows, by age; the index has no age.
            Sorts::WhatItFound,
            |c| {
                db::deliveries::failed_since(c, "wh_a", 0).unwrap();
            },
        );
        assert_walks(
            conn,
            "pruning",
            &[("deliveries_by_seq", &["seq"])],
            Sorts::Never,
            |c| {
                db::deliveries::prune_succeeded(c, 0, 2_000, 500).unwrap();
            },
        );
        assert_walks(
            conn,
            "pruning events no delivery refers to",
            // Since migration 000016 there is no index by event: a
            // delivery shares its event's number unless it was resent.
            &[("deliveries_by_seq", &["seq"])],
            Sorts::Never,
            |c| {
                db::deliveries::prune_events(c, 0, 2_000, 500).unwrap();
            },
        );
        assert_walks(
            conn,
            "the log filtered by channel",
            // The count and the page walk the webhook's history, reading
            // the channel from the index (the page newest first).
            &[("deliveries_by_webhook", &["webhook_id"])],
            Sorts::Never,
            |c| {
                let filter = db::deliveries::LogFilter {
                    channel_id: Some("ch-10".into()),
                    ..Default::default()
                };
                db::deliveries::page(c, "wh_a", &filter, 0, 50).unwrap();
            },
        );
    }
}
