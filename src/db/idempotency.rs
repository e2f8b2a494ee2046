//! Queries on `idempotency_keys`: the rows behind the `Idempotency-Key`
//! header and in-process [`ChannelEvent`](crate::ChannelEvent) keys (see
//! [`crate::idempotency`] for the rules).
//!
//! The primary key on `(scope, idem_key)` is what serialises two requests
//! with the same key, on any instance sharing the database: [`claim`]
//! inserts the in-flight row, and only one insert can win.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};

use super::schema::idempotency_keys;
use super::DbConn;

/// The `state` of a row.
pub mod state {
    /// A request with this key is being processed.
    pub const IN_FLIGHT: &str = "in_flight";
    /// The request's answer is stored and is replayed.
    pub const DONE: &str = "done";
}

/// One row. `response_body` of a done row is the first answer exactly as it
/// was sent, which for a create holds the API key or the signing secret:
/// never log it.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys, treat_none_as_default_value = false)]
pub struct IdempotencyRow {
    /// Who used the key: `admin`, `app:<app id>` or `in-process`.
    pub scope: String,
    /// The key as the caller sent it.
    pub idem_key: String,
    /// SHA-256 (hex) of the operation and its content.
    pub request_hash: String,
    /// [`state::IN_FLIGHT`] or [`state::DONE`].
    pub state: String,
    /// The answer's HTTP status, once done.
    pub status: Option<i32>,
    /// The answer's body, once done.
    pub response_body: Option<String>,
    /// When the key was first used, epoch ms.
    pub created_at: i64,
    /// When the row may be deleted, epoch ms.
    pub expires_at: i64,
}

impl std::fmt::Debug for IdempotencyRow {
    // Hand-written: the stored answer may hold a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyRow")
            .field("scope", &self.scope)
            .field("idem_key", &self.idem_key)
            .field("state", &self.state)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The in-flight row is ours: go ahead.
    Won,
    /// Another request holds the key (in flight, or done): its row.
    Taken(IdempotencyRow),
}

/// Takes the key of `row` (an in-flight row) for a new request. A row of
/// the key that has expired, or that has been in flight since before
/// `abandoned_before` (its instance crashed or lost the database), is
/// deleted first, so it cannot block the key forever.
pub fn claim(
    conn: &mut DbConn,
    row: &IdempotencyRow,
    abandoned_before: i64,
) -> QueryResult<Claimed> {
    use idempotency_keys::dsl as k;
    // A row deleted between our failed insert and our read (its request
    // failed and gave the key back) means the key is free again: try again.
    for _ in 0..3 {
        diesel::delete(
            k::idempotency_keys
                .filter(k::scope.eq(&row.scope))
                .filter(k::idem_key.eq(&row.idem_key))
                .filter(
                    k::expires_at.le(row.created_at).or(k::state
                        .eq(state::IN_FLIGHT)
                        .and(k::created_at.lt(abandoned_before))),
                ),
        )
        .execute(conn)?;
        match diesel::insert_into(k::idempotency_keys)
            .values(row)
            .execute(conn)
        {
            Ok(_) => return Ok(Claimed::Won),
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
            Err(e) => return Err(e),
        }
        if let Some(found) = find(conn, &row.scope, &row.idem_key)? {
            return Ok(Claimed::Taken(found));
        }
    }
    Err(Error::RollbackTransaction)
}

/// The row of a key, if any.
pub fn find(conn: &mut DbConn, scope: &str, key: &str) -> QueryResult<Option<IdempotencyRow>> {
    use idempotency_keys::dsl as k;
    k::idempotency_keys
        .filter(k::scope.eq(scope))
        .filter(k::idem_key.eq(key))
        .select(IdempotencyRow::as_select())
        .first(conn)
        .optional()
}

/// Stores the answer of the request that claimed the key at `created_at`;
/// answers whether its row was still there to take it.
pub fn complete(
    conn: &mut DbConn,
    scope: &str,
    key: &str,
    created_at: i64,
    status: i32,
    body: &str,
    expires_at: i64,
) -> QueryResult<bool> {
    use idempotency_keys::dsl as k;
    let n = diesel::update(
        k::idempotency_keys
            .filter(k::scope.eq(scope))
            .filter(k::idem_key.eq(key))
            .filter(k::state.eq(state::IN_FLIGHT))
            .filter(k::created_at.eq(created_at)),
    )
    .set((
        k::state.eq(state::DONE),
        k::status.eq(Some(status)),
        k::response_body.eq(Some(body)),
        k::expires_at.eq(expires_at),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Gives the key back (the request failed and nothing is stored), if it is
/// still the in-flight row claimed at `created_at`.
pub fn release(conn: &mut DbConn, scope: &str, key: &str, created_at: i64) -> QueryResult<usize> {
    use idempotency_keys::dsl as k;
    diesel::delete(
        k::idempotency_keys
            .filter(k::scope.eq(scope))
            .filter(k::idem_key.eq(key))
            .filter(k::state.eq(state::IN_FLIGHT))
            .filter(k::created_at.eq(created_at)),
    )
    .execute(conn)
}

/// Deletes about `limit` rows (at most a few more, when several expire in
/// the same millisecond) that expired before `now` (epoch ms); answers how
/// many went.
pub fn prune(conn: &mut DbConn, now: i64, limit: i64) -> QueryResult<usize> {
    use idempotency_keys::dsl as k;
    let cutoff: Option<i64> = k::idempotency_keys
        .filter(k::expires_at.lt(now))
        .order(k::expires_at)
        .offset(limit.max(1) - 1)
        .select(k::expires_at)
        .first(conn)
        .optional()?;
    let upto = cutoff.unwrap_or(now - 1);
    diesel::delete(
        k::idempotency_keys
            .filter(k::expires_at.lt(now))
            .filter(k::expires_at.le(upto)),
    )
    .execute(conn)
}
