//! Storage: one Diesel connection type over SQLite and MySQL, a pool, the
//! embedded migrations of both backends, and plain query functions
//! (`fn(&mut DbConn, ...) -> QueryResult<T>`) grouped by table.

/// Runs the same Diesel expression on whichever backend `conn` is. Some
/// statements (multi-row inserts, `FOR UPDATE SKIP LOCKED`) do not compile
/// through the MultiConnection enum, but compile on each backend alone.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Sqlite($c) => $body,
            #[cfg(feature = "mysql")]
            $crate::db::DbConn::Mysql($c) => $body,
        }
    };
}

/// A transaction that reads before it deletes, made safe beside other
/// writers: on SQLite its first statement writes, so it waits for the write
/// lock (the busy timeout) from the start. A deferred transaction that
/// first reads and then writes fails at once with `SQLITE_BUSY` when
/// another connection commits in between (its snapshot is stale), and no
/// busy timeout helps; that failed the Janitor's pruning beside the
/// Registry's writes. On MySQL it is a plain transaction.
pub fn write_transaction<T>(
    conn: &mut DbConn,
    body: impl FnOnce(&mut DbConn) -> diesel::QueryResult<T>,
) -> diesel::QueryResult<T> {
    use diesel::RunQueryDsl;
    conn.transaction(|conn| {
        match conn {
            DbConn::Sqlite(c) => {
                diesel::sql_query("UPDATE event_sequence SET seq = seq WHERE id = 1").execute(c)?;
            }
            #[cfg(feature = "mysql")]
            DbConn::Mysql(_) => {}
        }
        body(conn)
    })
}

pub mod apps;
pub mod changes;
pub mod deliveries;
pub mod idempotency;
pub mod instance;
pub mod keys;
pub mod leases;
pub mod models;
pub mod schema;
pub mod webhooks;

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
#[cfg(feature = "mysql")]
use diesel::mysql::MysqlConnection;
pub use diesel::r2d2::R2D2Connection;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, ConnectionError};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::DatabaseUrl;

/// A connection to whichever backend DATABASE_URL names.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    /// The embedded default.
    Sqlite(SqliteConnection),
    /// The production store (the `mysql` feature).
    #[cfg(feature = "mysql")]
    Mysql(MysqlConnection),
}

/// A pool of [`DbConn`]s (it derefs to the r2d2 pool). Cloning shares it.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: r2d2::Pool<Manager>,
    writer: Option<Arc<Mutex<()>>>,
}

impl Deref for Pool {
    type Target = r2d2::Pool<Manager>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Pool {
    /// Whether the store takes one writer at a time (SQLite).
    pub fn single_writer(&self) -> bool {
        self.writer.is_some()
    }

    /// Waits for this process's turn to write, on SQLite (`None` on MySQL,
    /// whose row locks let writers run side by side). SQLite has one writer
    /// at a time, and a connection that finds the lock taken sleeps in steps
    /// of 1, 2, 5, 10... ms before it looks again; queueing here instead
    /// hands the lock over the moment it is free. Hold the guard across the
    /// whole write transaction.
    pub fn write_turn(&self) -> Option<MutexGuard<'_, ()>> {
        self.writer
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// A pooled connection.
pub type PooledConn = r2d2::PooledConnection<Manager>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "mysql")]
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

// WAL lets readers run beside the one writer. `synchronous=FULL` syncs the
// WAL on every commit, so an acknowledged event survives a power cut, not
// only a process crash. The busy timeout turns writer contention into a wait
// instead of an error. The outcomes of a round are a savepoint inside the
// events' transaction (a bad outcome must not fail ingest), and SQLite
// copies every page a savepoint changes into a sub-journal: in a temp file
// by default, a write(2) per page, 12% of the S5 process's CPU; in memory
// it is a memcpy.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA busy_timeout = 10000;
PRAGMA foreign_keys = ON;
PRAGMA temp_store = MEMORY;";

/// Session settings for MariaDB connections (see [`Manager::connect`]).
#[cfg(feature = "mysql")]
const MARIADB_SESSION: &str = "SET SESSION idle_transaction_timeout = 2";

/// Opens connections for the backend the URL names. Diesel's own manager
/// would try each backend in turn, and SQLite would happily create a file
/// called `mysql:` when the MySQL server is down; this one never guesses.
#[derive(Debug, Clone)]
pub struct Manager {
    url: DatabaseUrl,
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConn, ConnectionError> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConn::Sqlite(conn))
            }
            #[cfg(feature = "mysql")]
            DatabaseUrl::Mysql(url) => {
                let mut conn = MysqlConnection::establish(url)?;
                // A process paused (or cut off) inside a transaction would
                // keep its row locks for ever: a lease row no one could
                // take over, or the event sequence's counter, which every
                // ingest waits on. MariaDB ends such a transaction (and its
                // connection) after this long idle; our transactions never
                // wait on anything but the database between statements.
                // MySQL has no such setting, so a refusal is not an error.
                let _ = conn.batch_execute(MARIADB_SESSION);
                Ok(DbConn::Mysql(conn))
            }
            #[cfg(not(feature = "mysql"))]
            DatabaseUrl::Mysql(_) => Err(no_mysql()),
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnectionError> {
        conn.ping()
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// What this build says to a `mysql://` URL when it has no MySQL support.
pub const NO_MYSQL: &str = "DATABASE_URL names a MySQL database, but this webhook-broker was \
     built without MySQL support; \
     rebuild it with the `mysql` feature: cargo build --release --features mysql \
     (needs the MySQL client library, e.g. apt-get install libmariadb-dev)";

#[cfg(not(feature = "mysql"))]
fn no_mysql() -> ConnectionError {
    ConnectionError::BadConnection(NO_MYSQL.into())
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No connection could be made.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] r2d2::PoolError),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// A `mysql://` URL given to a build without MySQL support.
    #[error("{}", NO_MYSQL)]
    NoMysql,
}

/// Opens a pool and brings the schema up to date.
pub fn open(url: &DatabaseUrl) -> Result<Pool, OpenError> {
    if matches!(url, DatabaseUrl::Mysql(_)) && !cfg!(feature = "mysql") {
        return Err(OpenError::NoMysql);
    }
    let max_size = match url {
        DatabaseUrl::Sqlite(_) => 8,
        DatabaseUrl::Mysql(_) => 16,
    };
    let inner = r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(3))
        .build(Manager { url: url.clone() })?;
    let mut conn = inner.get()?;
    run_migrations(&mut conn).map_err(|e| OpenError::Migrate(e.to_string()))?;
    let writer = matches!(url, DatabaseUrl::Sqlite(_)).then(|| Arc::new(Mutex::new(())));
    Ok(Pool { inner, writer })
}

/// Reverts the newest applied migration of the connection's backend, so
/// that a test can seed rows as an older broker left them and run the
/// migration over them. Not for a live broker.
#[doc(hidden)]
pub fn revert_last_migration(
    conn: &mut DbConn,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match conn {
        DbConn::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS).map(drop),
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => c.revert_last_migration(MYSQL_MIGRATIONS).map(drop),
    }
}

/// Applies the embedded migrations of the connection's backend.
pub fn run_migrations(conn: &mut DbConn) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(drop),
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => {
            // Instances starting together take turns: a second one waits
            // for the first's migrations, then finds nothing left to do.
            use diesel::prelude::*;
            #[derive(QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
                locked: Option<i32>,
            }
            let name = "CONCAT('webhook-broker-migrate:', LEFT(SHA2(DATABASE(), 256), 30))";
            let got: Locked = diesel::sql_query(format!(
                "SELECT GET_LOCK({name}, {}) AS locked",
                MIGRATION_LOCK_WAIT.as_secs()
            ))
            .get_result(c)?;
            if got.locked != Some(1) {
                return Err(format!(
                    "another instance held the migration lock for over {}s",
                    MIGRATION_LOCK_WAIT.as_secs()
                )
                .into());
            }
            let ran = c.run_pending_migrations(MYSQL_MIGRATIONS).map(drop);
            let _ = diesel::sql_query(format!("DO RELEASE_LOCK({name})")).execute(c);
            ran
        }
    }
}

/// How long an instance waits for another's migrations.
#[cfg(feature = "mysql")]
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new identifier: a prefix naming its kind and a time-ordered UUIDv7, so
/// that ids sort by creation.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// A connection was made and `SELECT 1` answered.
    Answered,
    /// The SQLite file does not exist yet; its directory does, and the
    /// daemon will create the file.
    WillBeCreated,
}

/// Why [`check`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No connection could be made.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] ConnectionError),
    /// The connection was made but the database did not answer.
    #[error("the database does not answer: {0}")]
    Query(#[from] diesel::result::Error),
    /// The SQLite file's directory is missing (or not a directory).
    #[error("the directory `{0}` of the SQLite file does not exist")]
    NoDirectory(String),
}

/// Whether the database answers: one connection and a `SELECT 1`, with no
/// migration, no pool and nothing written. A missing SQLite file is not
/// created (only its directory is checked).
pub fn check(url: &DatabaseUrl) -> Result<Checked, CheckError> {
    use diesel::prelude::*;
    let mut conn = match url {
        DatabaseUrl::Sqlite(path) => {
            let file = std::path::Path::new(path);
            if !file.exists() {
                let dir = match file.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => std::path::Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(CheckError::NoDirectory(dir.display().to_string()));
                }
                return Ok(Checked::WillBeCreated);
            }
            let mut conn = SqliteConnection::establish(path)?;
            // SQLite opens lazily: reading the schema proves the file is a
            // database, which `SELECT 1` alone would not.
            diesel::sql_query("SELECT count(*) FROM sqlite_master").execute(&mut conn)?;
            DbConn::Sqlite(conn)
        }
        #[cfg(feature = "mysql")]
        DatabaseUrl::Mysql(url) => DbConn::Mysql(MysqlConnection::establish(url)?),
        #[cfg(not(feature = "mysql"))]
        DatabaseUrl::Mysql(_) => return Err(CheckError::Connect(no_mysql())),
    };
    // Literal SQL: a bound value through the multi-connection panics in
    // Diesel's MySQL backend.
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .get_result::<i32>(&mut conn)?;
    Ok(Checked::Answered)
}
