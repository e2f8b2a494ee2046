//! Databases: SQLite files seeded with many apps and webhooks through
//! Diesel batch inserts (S6, S7), a throwaway MySQL/MariaDB database (S4),
//! and the reconciliation of what a broker left pending after a run.
// Without the `mysql` feature the MySQL half is only a refusal.
#![cfg_attr(not(feature = "mysql"), allow(dead_code))]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::connection::SimpleConnection;
#[cfg(feature = "mysql")]
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::SqliteConnection;
use webhook_broker::config::DatabaseUrl;
use webhook_broker::db::models::{AppRow, WebhookRow};
use webhook_broker::db::schema::{apps, webhooks};
use webhook_broker::db::{self, apps::hash_api_key};
use webhook_broker::EventSet;

/// Creates the SQLite file at `path` (migrated by the broker's own code),
/// with `n_apps` apps and `n_webhooks` webhooks spread round-robin over
/// them, webhook `i` at `uri(i)`. Answers the app ids and how long it took.
pub fn sqlite_with_webhooks(
    path: &Path,
    n_apps: usize,
    n_webhooks: usize,
    uri: impl Fn(usize) -> String,
) -> anyhow::Result<(Vec<String>, Duration)> {
    let started = Instant::now();
    let path_str = path.to_str().context("temp path is not UTF-8")?.to_owned();
    // The broker's own migrations, through its own opener.
    drop(db::open(&DatabaseUrl::Sqlite(path_str.clone()))?);
    let mut conn = SqliteConnection::establish(&path_str)?;
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")?;
    let now = db::now_ms();
    let app_rows: Vec<AppRow> = (0..n_apps)
        .map(|i| AppRow {
            id: db::new_id("app"),
            name: format!("bench-{i}"),
            api_key_hash: hash_api_key(&db::apps::generate_api_key()),
            created_at: now,
        })
        .collect();
    let events = EventSet::all().to_storage();
    conn.transaction(|conn| {
        for chunk in app_rows.chunks(1000) {
            diesel::insert_into(apps::table)
                .values(chunk)
                .execute(conn)?;
        }
        let mut rows = Vec::with_capacity(1000);
        for i in 0..n_webhooks {
            rows.push(WebhookRow::enabled(
                &db::new_id("wh"),
                &app_rows[i % n_apps].id,
                &uri(i),
                &events,
                now,
            ));
            // 15 columns x 1000 rows stays under SQLite's 32766 variables.
            if rows.len() == 1000 || i + 1 == n_webhooks {
                diesel::insert_into(webhooks::table)
                    .values(&rows)
                    .execute(conn)?;
                rows.clear();
            }
        }
        diesel::QueryResult::Ok(())
    })?;
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok((
        app_rows.into_iter().map(|a| a.id).collect(),
        started.elapsed(),
    ))
}

/// The server's `VERSION()`, or why it cannot be had.
pub fn mysql_version(server: &str) -> Result<String, String> {
    #[cfg(feature = "mysql")]
    {
        let mut conn = MysqlConnection::establish(server)
            .map_err(|e| format!("MySQL/MariaDB unreachable at {}: {e}", redact(server)))?;
        Ok(
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>("VERSION()"))
                .get_result::<String>(&mut conn)
                .unwrap_or_default(),
        )
    }
    #[cfg(not(feature = "mysql"))]
    {
        let _ = server;
        Err("webhook-bench was built without MySQL support \
             (cargo build --release --workspace --features mysql)"
            .into())
    }
}

/// A fresh MySQL/MariaDB database, dropped when this is dropped.
pub struct MysqlDb {
    server: String,
    name: String,
    pub url: String,
}

#[cfg(feature = "mysql")]
impl MysqlDb {
    /// Connects to `server` (a `mysql://` URL) and creates `wb_bench_<random>`.
    pub fn create(server: &str) -> anyhow::Result<MysqlDb> {
        let mut conn = MysqlConnection::establish(server)
            .with_context(|| format!("cannot connect to {}", redact(server)))?;
        let name = format!(
            "wb_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        conn.batch_execute(&format!("CREATE DATABASE `{name}`"))?;
        let mut url = url::Url::parse(server)?;
        url.set_path(&format!("/{name}"));
        Ok(MysqlDb {
            server: server.to_owned(),
            name,
            url: url.to_string(),
        })
    }
}

#[cfg(not(feature = "mysql"))]
impl MysqlDb {
    /// Without MySQL support there is no database to create.
    pub fn create(_server: &str) -> anyhow::Result<MysqlDb> {
        anyhow::bail!("webhook-bench was built without the `mysql` feature")
    }
}

#[cfg(feature = "mysql")]
impl Drop for MysqlDb {
    fn drop(&mut self) {
        match MysqlConnection::establish(&self.server) {
            Ok(mut conn) => {
                if let Err(e) = conn.batch_execute(&format!("DROP DATABASE `{}`", self.name)) {
                    eprintln!("warning: could not drop database {}: {e}", self.name);
                }
            }
            Err(e) => eprintln!("warning: could not drop database {}: {e}", self.name),
        }
    }
}

/// A URL without its password.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Text)]
    uri: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

const PENDING_SQL: &str = "SELECT e.payload AS payload, w.uri AS uri FROM deliveries d \
     JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id \
     WHERE d.status = 'pending'";
const STATUS_SQL: &str = "SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status \
     UNION ALL SELECT 'events' AS status, COUNT(*) AS n FROM events";

/// What the database holds after a run.
#[derive(Debug, Default)]
pub struct DbState {
    /// Rows per delivery status, and `events`.
    pub counts: BTreeMap<String, i64>,
    /// The (seq, webhook index) of each delivery still pending, for events
    /// of round `run`.
    pub pending: HashSet<(u64, usize)>,
}

/// Reads what a stopped broker left in its database.
pub fn db_state(database_url: &str, run: u32) -> anyhow::Result<DbState> {
    macro_rules! read {
        ($conn:expr) => {{
            let counts = diesel::sql_query(STATUS_SQL).load::<Count>($conn)?;
            let pending = diesel::sql_query(PENDING_SQL).load::<Pending>($conn)?;
            (counts, pending)
        }};
    }
    let (counts, pending) = match DatabaseUrl::parse(database_url).map_err(anyhow::Error::msg)? {
        DatabaseUrl::Sqlite(path) => {
            let mut conn = SqliteConnection::establish(&path)?;
            conn.batch_execute("PRAGMA busy_timeout = 10000;")?;
            read!(&mut conn)
        }
        #[cfg(feature = "mysql")]
        DatabaseUrl::Mysql(url) => read!(&mut MysqlConnection::establish(&url)?),
        #[cfg(not(feature = "mysql"))]
        DatabaseUrl::Mysql(_) => {
            anyhow::bail!("webhook-bench was built without the `mysql` feature")
        }
    };
    let mut state = DbState::default();
    for c in counts {
        state.counts.insert(c.status, c.n);
    }
    for p in pending {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&p.payload) else {
            continue;
        };
        if v["run"].as_u64() != Some(run as u64) {
            continue;
        }
        let (Some(seq), Some(k)) = (
            v["seq"].as_u64(),
            p.uri.rsplit('/').next().and_then(|k| k.parse().ok()),
        ) else {
            continue;
        };
        state.pending.insert((seq, k));
    }
    Ok(state)
}
