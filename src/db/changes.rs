//! The registry change log: how a change made through one broker instance
//! (or by `webhook-broker apps create`) reaches every other one.
//!
//! Every write to `apps`, `webhooks` or `api_keys` calls [`record`] inside its own
//! transaction. [`record`] bumps the one row of `registry_version`
//! (`UPDATE registry_version SET version = version + 1`), reads the new
//! value back, and inserts `(version, kind, entity_id, at)` into
//! `registry_changes`. Pollers ask [`since`] for the rows above the last
//! version they applied, and re-read only the entities those rows name.
//!
//! Why this is correct with concurrent writers, where an `AUTO_INCREMENT`
//! id would not be (MariaDB hands those out at insert, not at commit, so a
//! poller reading `id > last_seen` can pass over a row that commits late):
//!
//! - The `UPDATE` takes the counter row's exclusive lock and holds it until
//!   the transaction ends. A second writer waits on that lock until the
//!   first has committed (or rolled back), so version `v + 1` is handed out
//!   only after version `v` is committed: versions commit in their order.
//! - A rolled-back writer gives its version back with the rest of its
//!   transaction, so the committed versions are `1, 2, 3, ...` with no gap.
//! - [`since`] reads the counter and the log in one transaction, one
//!   snapshot (InnoDB's repeatable read, SQLite's WAL read transaction). A
//!   snapshot that holds version `v` holds every version below it, since
//!   those committed first. So the rows a poller gets are exactly the next
//!   versions, and a first row above `last + 1`, or a counter above `last`
//!   with no rows at all, can only mean the janitor pruned what the poller
//!   had not read yet ([`Changes::Behind`]): it must reload everything.
//! - The entity is re-read after its log row, so it is at least as new as
//!   the change; a later change to it has a later row, and is applied again.
//!   Applying a row twice (an instance's own changes come back to it) reads
//!   the same state twice, which changes nothing.
//!
//! On SQLite there is one writer at a time, so the same holds trivially.
//! The counter is bumped last in each transaction, so the hot lock is held
//! only for the insert of the log row and the commit.

use diesel::prelude::*;

use super::schema::{registry_changes, registry_version};
use super::{now_ms, DbConn};

/// What a change row names.
pub mod kind {
    /// `entity_id` is an app id.
    pub const APP: &str = "app";
    /// `entity_id` is a webhook id.
    pub const WEBHOOK: &str = "webhook";
    /// `entity_id` is an API key id (an app's key or an ingest key).
    pub const KEY: &str = "key";
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = registry_changes, treat_none_as_default_value = false)]
pub struct ChangeRow {
    /// Its place in the order of changes.
    pub version: i64,
    /// [`kind::APP`], [`kind::WEBHOOK`] or [`kind::KEY`].
    pub kind: String,
    /// The app or webhook that changed.
    pub entity_id: String,
    /// When, epoch ms (what the janitor prunes by).
    pub at: i64,
}

/// Logs that `entity_id` (of `kind`) changed; answers the change's version.
/// Call it inside the transaction that makes the change, after the change
/// itself (it opens a nested transaction, a savepoint, when one is open).
pub fn record(conn: &mut DbConn, kind: &str, entity_id: &str) -> QueryResult<i64> {
    conn.transaction(|conn| {
        diesel::update(registry_version::table.find(1))
            .set(registry_version::version.eq(registry_version::version + 1))
            .execute(conn)?;
        let version = current(conn)?;
        diesel::insert_into(registry_changes::table)
            .values(ChangeRow {
                version,
                kind: kind.to_owned(),
                entity_id: entity_id.to_owned(),
                at: now_ms(),
            })
            .execute(conn)?;
        Ok(version)
    })
}

/// The version of the last committed change (0 when there was none).
pub fn current(conn: &mut DbConn) -> QueryResult<i64> {
    registry_version::table
        .find(1)
        .select(registry_version::version)
        .first(conn)
}

/// What [`since`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The next changes after the asked version, in order, at most the
    /// asked limit; fewer means these are all there are.
    Next(Vec<ChangeRow>),
    /// Changes after the asked version were pruned before they were read:
    /// only a full reload catches up. Holds the current version.
    Behind(i64),
}

/// The changes after version `after`, at most `limit` of them, read in one
/// snapshot with the counter so that a pruned stretch is noticed.
pub fn since(conn: &mut DbConn, after: i64, limit: i64) -> QueryResult<Changes> {
    conn.transaction(|conn| {
        let current = current(conn)?;
        if current == after {
            return Ok(Changes::Next(Vec::new()));
        }
        if current < after {
            // The database went back (restored from a backup).
            return Ok(Changes::Behind(current));
        }
        let rows: Vec<ChangeRow> = registry_changes::table
            .filter(registry_changes::version.gt(after))
            .order(registry_changes::version)
            .limit(limit)
            .select(ChangeRow::as_select())
            .load(conn)?;
        match rows.first() {
            Some(first) if first.version == after + 1 => Ok(Changes::Next(rows)),
            _ => Ok(Changes::Behind(current)),
        }
    })
}

/// Deletes up to `limit` change rows older than `before` (epoch ms);
/// answers how many went.
pub fn prune(conn: &mut DbConn, before: i64, limit: i64) -> QueryResult<usize> {
    super::write_transaction(conn, |conn| {
        let versions: Vec<i64> = registry_changes::table
            .filter(registry_changes::at.lt(before))
            .order(registry_changes::version)
            .limit(limit)
            .select(registry_changes::version)
            .load(conn)?;
        if versions.is_empty() {
            return Ok(0);
        }
        diesel::delete(registry_changes::table.filter(registry_changes::version.eq_any(&versions)))
            .execute(conn)
    })
}
