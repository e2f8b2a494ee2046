//! One live daemon per instance: SQLite takes one broker per file, and on
//! MySQL two live brokers must not share a `BROKER_INSTANCE_ID` (each would
//! take the other's leases for its own). The guard is held for as long as
//! the daemon runs; the operating system or the server drops it when the
//! process dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};

use crate::config::DatabaseUrl;

/// Held while the daemon runs.
pub enum InstanceGuard {
    /// An exclusive `flock` on the SQLite file itself (SQLite's own locks
    /// are `fcntl` locks, which do not interact with it, so the CLI and the
    /// daemon still share the file).
    Sqlite(File),
    /// A connection holding `GET_LOCK` on this database and instance id.
    #[cfg(feature = "mysql")]
    Mysql(Box<diesel::MysqlConnection>),
}

impl std::fmt::Debug for InstanceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstanceGuard::Sqlite(_) => f.write_str("InstanceGuard::Sqlite"),
            #[cfg(feature = "mysql")]
            InstanceGuard::Mysql(_) => f.write_str("InstanceGuard::Mysql"),
        }
    }
}

/// Why this daemon may not run.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Another broker serves the SQLite file.
    #[error(
        "another webhook-broker is already serving the SQLite database {0}; SQLite takes one \
         broker only: to run several instances, use MySQL/MariaDB (the `mysql` feature, see \
         docs/operations.md)"
    )]
    SqliteInUse(String),
    /// Another live broker has this instance id on this MySQL database.
    #[error(
        "another live webhook-broker on this database already has BROKER_INSTANCE_ID={0}; give \
         each instance its own id"
    )]
    InstanceIdInUse(String),
    /// The lock could not be taken or checked.
    #[error("cannot reach the database to check for another instance: {0}")]
    Check(String),
}

/// Takes this daemon's guard, or says who holds it.
pub fn claim(url: &DatabaseUrl, instance_id: &str) -> Result<InstanceGuard, GuardError> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| GuardError::Check(format!("{path}: {e}")))?;
            match file.try_lock() {
                Ok(()) => Ok(InstanceGuard::Sqlite(file)),
                Err(TryLockError::WouldBlock) => Err(GuardError::SqliteInUse(path.clone())),
                Err(TryLockError::Error(e)) => Err(GuardError::Check(format!("{path}: {e}"))),
            }
        }
        #[cfg(feature = "mysql")]
        DatabaseUrl::Mysql(url) => mysql_instance_lock(url, instance_id),
        #[cfg(not(feature = "mysql"))]
        DatabaseUrl::Mysql(_) => {
            let _ = instance_id;
            Err(GuardError::Check(super::NO_MYSQL.into()))
        }
    }
}

#[cfg(feature = "mysql")]
#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    locked: Option<i32>,
}

/// `GET_LOCK` names are server-wide and at most 64 characters: the name is
/// a digest of the database and the instance id.
#[cfg(feature = "mysql")]
fn mysql_instance_lock(url: &str, instance_id: &str) -> Result<InstanceGuard, GuardError> {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    let mut conn =
        diesel::MysqlConnection::establish(url).map_err(|e| GuardError::Check(e.to_string()))?;
    let got: Locked = diesel::sql_query(
        "SELECT GET_LOCK(CONCAT('webhook-broker:', \
         LEFT(SHA2(CONCAT(DATABASE(), '/', ?), 256), 40)), 0) AS locked",
    )
    .bind::<Text, _>(instance_id)
    .get_result(&mut conn)
    .map_err(|e| GuardError::Check(e.to_string()))?;
    match got.locked {
        Some(1) => Ok(InstanceGuard::Mysql(Box::new(conn))),
        Some(_) => Err(GuardError::InstanceIdInUse(instance_id.to_owned())),
        None => Err(GuardError::Check("GET_LOCK answered NULL".into())),
    }
}
