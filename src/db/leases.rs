//! Queries on `webhook_leases`, `broker_instances` and `event_sequence`:
//! who sends which webhook's deliveries, who is alive, and how far the
//! order of events has gone. The rules they carry out are in
//! [`crate::lease`]; every time in a lease is the database's clock
//! ([`db_now`]), never an instance's.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::schema::{broker_instances, deliveries, event_sequence, webhook_leases};
use super::DbConn;
use crate::domain::DeliveryStatus;
use crate::lease::Lease;

/// The most ids one `IN (...)` carries.
const CHUNK: usize = 500;

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = BigInt)]
    now: i64,
}

/// The database's clock, epoch ms: what every lease is judged by, so that
/// instances whose clocks disagree still agree on when a lease lapsed.
pub fn db_now(conn: &mut DbConn) -> QueryResult<i64> {
    let row: Now = match conn {
        DbConn::Sqlite(c) => diesel::sql_query(
            "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) AS now",
        )
        .get_result(c)?,
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => {
            diesel::sql_query("SELECT CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED) AS now")
                .get_result(c)?
        }
    };
    Ok(row.now)
}

/// What a claim round needs to know to plan ([`crate::lease::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Instances alive, this one included.
    pub live: usize,
    /// Webhooks, each with one lease.
    pub webhooks: usize,
    /// Leases free or lapsed now.
    pub free: usize,
}

/// Says `me` is alive for another `lease_ms`, and counts the live instances,
/// the leases and the free ones.
pub fn census(conn: &mut DbConn, me: &str, lease_ms: i64) -> QueryResult<Census> {
    let now = db_now(conn)?;
    let seen = diesel::update(broker_instances::table.find(me))
        .set(broker_instances::alive_until.eq(now + lease_ms))
        .execute(conn)?;
    if seen == 0 {
        diesel::insert_into(broker_instances::table)
            .values((
                broker_instances::id.eq(me),
                broker_instances::alive_until.eq(now + lease_ms),
            ))
            .execute(conn)?;
    }
    let live: i64 = broker_instances::table
        .filter(broker_instances::alive_until.ge(now))
        .count()
        .get_result(conn)?;
    let webhooks: i64 = webhook_leases::table.count().get_result(conn)?;
    let free: i64 = webhook_leases::table
        .filter(
            webhook_leases::lease_until
                .is_null()
                .or(webhook_leases::lease_until.lt(now)),
        )
        .count()
        .get_result(conn)?;
    Ok(Census {
        live: live.max(1) as usize,
        webhooks: webhooks as usize,
        free: free as usize,
    })
}

/// Takes up to `limit` free or lapsed leases for `me` (with `starting`,
/// first every lease its previous run held, whatever their number), each
/// with its epoch one higher; answers what it took. On MySQL the free ones
/// are found with `FOR UPDATE SKIP LOCKED` along `webhook_leases_until`, so
/// instances claiming at once take different rows and wait for none.
pub fn claim(
    conn: &mut DbConn,
    me: &str,
    lease_ms: i64,
    limit: usize,
    starting: bool,
) -> QueryResult<Vec<Lease>> {
    super::write_transaction(conn, |conn| {
        let now = db_now(conn)?;
        let mut ids: Vec<String> = Vec::new();
        if starting {
            let own = webhook_leases::table
                .filter(webhook_leases::owner.eq(me))
                .select(webhook_leases::webhook_id);
            ids = match conn {
                DbConn::Sqlite(c) => own.load(c)?,
                #[cfg(feature = "mysql")]
                DbConn::Mysql(c) => own.for_update().load(c)?,
            };
        }
        if limit > 0 {
            let free = webhook_leases::table
                .filter(
                    webhook_leases::lease_until
                        .is_null()
                        .or(webhook_leases::lease_until.lt(now)),
                )
                .select(webhook_leases::webhook_id)
                .limit(limit as i64);
            let found: Vec<String> = match conn {
                // One writer at a time: nothing to skip.
                DbConn::Sqlite(c) => free.load(c)?,
                #[cfg(feature = "mysql")]
                DbConn::Mysql(c) => free.for_update().skip_locked().load(c)?,
            };
            ids.extend(found);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        for chunk in ids.chunks(CHUNK) {
            diesel::update(webhook_leases::table.filter(webhook_leases::webhook_id.eq_any(chunk)))
                .set((
                    webhook_leases::owner.eq(me),
                    webhook_leases::epoch.eq(webhook_leases::epoch + 1),
                    webhook_leases::lease_until.eq(now + lease_ms),
                ))
                .execute(conn)?;
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        held_among(conn, me, &ids)
    })
}

/// The most leases one claim or renewal transaction takes: 100,000 leases
/// are taken and renewed in rounds of this many, each its own transaction,
/// so neither ingest nor the outcome writes wait long on one.
pub const CLAIM_ROUND: usize = 5_000;

/// How many webhooks there are (with or without a lease row yet).
pub fn webhook_count(conn: &mut DbConn) -> QueryResult<usize> {
    let n: i64 = super::schema::webhooks::table.count().get_result(conn)?;
    Ok(n as usize)
}

/// The start-up claim, first step: of the leases `me` held before (all of
/// them) and of the free or lapsed ones (up to `limit`), those whose
/// webhooks have deliveries pending. Their old deliveries must go out
/// before any new one, so they are taken before the first event is;
/// everything else is idle, and is taken in later rounds
/// ([`claim_own_rest`], [`claim`]) while the instance already serves.
pub fn claim_with_pending(
    conn: &mut DbConn,
    me: &str,
    lease_ms: i64,
    limit: usize,
) -> QueryResult<Vec<Lease>> {
    let now = db_now(conn)?;
    let own: Vec<String> = webhook_leases::table
        .filter(webhook_leases::owner.eq(me))
        .select(webhook_leases::webhook_id)
        .load(conn)?;
    let free: Vec<String> = webhook_leases::table
        .filter(
            webhook_leases::lease_until
                .is_null()
                .or(webhook_leases::lease_until.lt(now)),
        )
        .filter(
            webhook_leases::owner
                .is_null()
                .or(webhook_leases::owner.ne(me)),
        )
        .select(webhook_leases::webhook_id)
        .load(conn)?;
    let with_pending = |conn: &mut DbConn, ids: &[String]| {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        super::deliveries::webhooks_with_pending(conn, &ids)
    };
    let pending_own = with_pending(conn, &own)?;
    let pending_free = with_pending(conn, &free)?;
    let mut take: Vec<&str> = own
        .iter()
        .filter(|id| pending_own.contains(*id))
        .map(String::as_str)
        .collect();
    take.extend(
        free.iter()
            .filter(|id| pending_free.contains(*id))
            .take(limit)
            .map(String::as_str),
    );
    claim_these(conn, me, lease_ms, &mut take)
}

/// The start-up claim, second step: the leases `me` held before that the
/// first step left (those for which `held` is false), in rounds of
/// [`CLAIM_ROUND`], each its own transaction taken inside `turn` (the
/// writer's turn on SQLite).
pub fn claim_own_rest<T>(
    conn: &mut DbConn,
    me: &str,
    lease_ms: i64,
    held: impl Fn(&str) -> bool,
    turn: impl Fn() -> T,
) -> QueryResult<Vec<Lease>> {
    let own: Vec<String> = webhook_leases::table
        .filter(webhook_leases::owner.eq(me))
        .select(webhook_leases::webhook_id)
        .load(conn)?;
    let mut rest: Vec<&str> = own
        .iter()
        .filter(|id| !held(id))
        .map(String::as_str)
        .collect();
    let mut taken = Vec::with_capacity(rest.len());
    for round in rest.chunks_mut(CLAIM_ROUND) {
        let _turn = turn();
        taken.extend(claim_these(conn, me, lease_ms, round)?);
    }
    Ok(taken)
}

/// Takes the leases of `ids` that are `me`'s or free or lapsed, each with
/// its epoch one higher, in one transaction; answers what it took. A lease
/// another instance holds is left alone, whatever was read before. The
/// ids are sorted first, so two instances lock rows in the same order.
fn claim_these(
    conn: &mut DbConn,
    me: &str,
    lease_ms: i64,
    ids: &mut [&str],
) -> QueryResult<Vec<Lease>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    ids.sort_unstable();
    super::write_transaction(conn, |conn| {
        let now = db_now(conn)?;
        for chunk in ids.chunks(CHUNK) {
            diesel::update(
                webhook_leases::table
                    .filter(webhook_leases::webhook_id.eq_any(chunk))
                    .filter(
                        webhook_leases::owner
                            .eq(me)
                            .or(webhook_leases::lease_until.is_null())
                            .or(webhook_leases::lease_until.lt(now)),
                    ),
            )
            .set((
                webhook_leases::owner.eq(me),
                webhook_leases::epoch.eq(webhook_leases::epoch + 1),
                webhook_leases::lease_until.eq(now + lease_ms),
            ))
            .execute(conn)?;
        }
        held_among(conn, me, ids)
    })
}

/// The leases among `ids` that name `me`, with their epochs.
fn held_among(conn: &mut DbConn, me: &str, ids: &[&str]) -> QueryResult<Vec<Lease>> {
    let mut held = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(String, i64)> = webhook_leases::table
            .filter(webhook_leases::owner.eq(me))
            .filter(webhook_leases::webhook_id.eq_any(chunk))
            .select((webhook_leases::webhook_id, webhook_leases::epoch))
            .load(conn)?;
        held.extend(
            rows.into_iter()
                .map(|(webhook_id, epoch)| Lease { webhook_id, epoch }),
        );
    }
    Ok(held)
}

/// Extends the leases `me` holds among `held` by `lease_ms` from the
/// database's now, and only those (a row naming `me` that it does not hold
/// lapses, and is claimed again); answers which of them still name `me`,
/// with their epochs, for [`crate::lease::lost`] to judge. `held` comes
/// sorted, so its rows are locked in id order like every claim's.
pub fn renew(conn: &mut DbConn, me: &str, held: &[&str], lease_ms: i64) -> QueryResult<Vec<Lease>> {
    super::write_transaction(conn, |conn| {
        let now = db_now(conn)?;
        for chunk in held.chunks(CHUNK) {
            diesel::update(
                webhook_leases::table
                    .filter(webhook_leases::owner.eq(me))
                    .filter(webhook_leases::webhook_id.eq_any(chunk)),
            )
            .set(webhook_leases::lease_until.eq(now + lease_ms))
            .execute(conn)?;
        }
        held_among(conn, me, held)
    })
}

/// Gives leases back so the next claimer takes them at once: each only if
/// it still names `me` under the same epoch.
pub fn release(conn: &mut DbConn, me: &str, leases: &[Lease]) -> QueryResult<usize> {
    // In id order, as every other writer of lease rows locks them.
    let mut leases: Vec<&Lease> = leases.iter().collect();
    leases.sort_unstable_by(|a, b| a.webhook_id.cmp(&b.webhook_id));
    conn.transaction(|conn| {
        let mut n = 0;
        for lease in leases {
            n += diesel::update(
                webhook_leases::table
                    .find(&lease.webhook_id)
                    .filter(webhook_leases::owner.eq(me))
                    .filter(webhook_leases::epoch.eq(lease.epoch)),
            )
            .set((
                webhook_leases::owner.eq(None::<String>),
                webhook_leases::lease_until.eq(None::<i64>),
            ))
            .execute(conn)?;
        }
        Ok(n)
    })
}

/// At a clean stop: gives back every lease that names `me` and says `me`
/// is gone, so the others count one instance fewer at once.
pub fn leave(conn: &mut DbConn, me: &str) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let n = diesel::update(webhook_leases::table.filter(webhook_leases::owner.eq(me)))
            .set((
                webhook_leases::owner.eq(None::<String>),
                webhook_leases::lease_until.eq(None::<i64>),
            ))
            .execute(conn)?;
        diesel::delete(broker_instances::table.find(me)).execute(conn)?;
        Ok(n)
    })
}

/// Inside an outcome write: locks the lease rows of `webhook_ids` that name
/// `me` and answers their epochs. Held until the write commits, so no
/// takeover can slip in between this check and the writes it allows.
/// `webhook_ids` come sorted, so rows are locked in id order, as every
/// claim, renewal and release locks them.
pub fn lock_held(
    conn: &mut DbConn,
    me: &str,
    webhook_ids: &[&str],
) -> QueryResult<HashMap<String, i64>> {
    let mut held = HashMap::with_capacity(webhook_ids.len());
    for chunk in webhook_ids.chunks(CHUNK) {
        let q = webhook_leases::table
            .filter(webhook_leases::owner.eq(me))
            .filter(webhook_leases::webhook_id.eq_any(chunk))
            .select((webhook_leases::webhook_id, webhook_leases::epoch));
        let rows: Vec<(String, i64)> = match conn {
            // One writer at a time: the write transaction is the lock.
            DbConn::Sqlite(c) => q.load(c)?,
            #[cfg(feature = "mysql")]
            DbConn::Mysql(c) => q.for_update().load(c)?,
        };
        held.extend(rows);
    }
    Ok(held)
}

/// Gives a new webhook its (free) lease row.
pub fn add(conn: &mut DbConn, webhook_id: &str) -> QueryResult<usize> {
    diesel::insert_into(webhook_leases::table)
        .values((
            webhook_leases::webhook_id.eq(webhook_id),
            webhook_leases::owner.eq(None::<String>),
            webhook_leases::epoch.eq(0i64),
            webhook_leases::lease_until.eq(None::<i64>),
        ))
        .execute(conn)
}

/// Gives every webhook without a lease row a free one, and answers how many
/// it added: at start, for webhooks written straight into the table (by
/// hand, by a seeding tool) rather than through [`super::webhooks::insert`].
pub fn add_missing(conn: &mut DbConn) -> QueryResult<usize> {
    const MISSING: &str = "webhook_leases (webhook_id, owner, epoch, lease_until) \
         SELECT w.id, NULL, 0, NULL FROM webhooks w \
         WHERE NOT EXISTS (SELECT 1 FROM webhook_leases l WHERE l.webhook_id = w.id)";
    match conn {
        // Another instance starting at the same time may add the same rows.
        DbConn::Sqlite(c) => {
            diesel::sql_query(format!("INSERT OR IGNORE INTO {MISSING}")).execute(c)
        }
        #[cfg(feature = "mysql")]
        DbConn::Mysql(c) => diesel::sql_query(format!("INSERT IGNORE INTO {MISSING}")).execute(c),
    }
}

/// Removes a deleted webhook's lease row.
pub fn remove(conn: &mut DbConn, webhook_id: &str) -> QueryResult<usize> {
    diesel::delete(webhook_leases::table.find(webhook_id)).execute(conn)
}

/// Bumps the event sequence by `n` and answers the first of the `n` numbers
/// taken. Call it inside the ingest transaction, before its inserts: the
/// counter's row lock is then held to the commit, so the numbers are
/// handed out in commit order (see the migration `webhook_leases`).
pub fn take_sequence(conn: &mut DbConn, n: i64) -> QueryResult<i64> {
    diesel::update(event_sequence::table.find(1))
        .set(event_sequence::seq.eq(event_sequence::seq + n))
        .execute(conn)?;
    let last = current_sequence(conn)?;
    Ok(last - n + 1)
}

/// The last sequence number committed.
pub fn current_sequence(conn: &mut DbConn) -> QueryResult<i64> {
    event_sequence::table
        .find(1)
        .select(event_sequence::seq)
        .first(conn)
}

/// Everything committed after sequence number `after`, as far as the
/// counter went: the counter's value and the webhooks with pending
/// deliveries in `(after, counter]`, read in one snapshot. Since numbers
/// commit in order, a snapshot that holds the counter at `n` holds every
/// delivery numbered up to `n`: nothing in the stretch can appear later.
pub fn since(conn: &mut DbConn, after: i64) -> QueryResult<(i64, Vec<String>)> {
    conn.transaction(|conn| {
        let upto = current_sequence(conn)?;
        if upto <= after {
            return Ok((upto, Vec::new()));
        }
        Ok((upto, webhooks_in_stretch(conn, after, upto)?))
    })
}

/// The webhooks with pending deliveries numbered in `(after, upto]`
/// (walks `deliveries_by_seq`).
pub fn webhooks_in_stretch(conn: &mut DbConn, after: i64, upto: i64) -> QueryResult<Vec<String>> {
    deliveries::table
        .filter(deliveries::seq.gt(after))
        .filter(deliveries::seq.le(upto))
        .filter(super::deliveries::status_is(DeliveryStatus::Pending))
        .select(deliveries::webhook_id)
        .distinct()
        .load(conn)
}
