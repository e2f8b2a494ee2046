//! Queries on `events`, `deliveries` and `delivery_attempts`: the outbox.
//!
//! A pending delivery is sent by whichever instance holds its webhook's
//! lease ([`super::leases`]); deliveries go out in the order of their
//! sequence numbers, which the database hands out in commit order.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
#[cfg(feature = "mysql")]
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use super::models::{AttemptRow, DeliveryRow, EventRow};
use super::schema::{deliveries, delivery_attempts, events, resent_deliveries, webhooks};
use super::DbConn;
use crate::domain::DeliveryStatus;

/// An accepted event and the deliveries it owes.
pub struct NewEvent {
    /// The event row.
    pub event: EventRow,
    /// One per matching webhook.
    pub deliveries: Vec<DeliveryRow>,
}

/// Stores a batch of events and their deliveries in one transaction: one
/// commit (one fsync) for every event that arrived together. Each event
/// and its deliveries get their sequence number here, from the database
/// ([`super::leases::take_sequence`]), in batch order.
pub fn insert_events(conn: &mut DbConn, batch: &mut [NewEvent]) -> QueryResult<()> {
    conn.transaction(|conn| {
        let first = super::leases::take_sequence(conn, batch.len() as i64)?;
        for (i, new) in batch.iter_mut().enumerate() {
            new.event.seq = first + i as i64;
            for d in &mut new.deliveries {
                d.seq = new.event.seq;
            }
        }
        let events: Vec<&EventRow> = batch.iter().map(|e| &e.event).collect();
        let rows: Vec<&DeliveryRow> = batch.iter().flat_map(|e| &e.deliveries).collect();
        // Bounded chunks keep each statement under the backends' limits on
        // bound parameters, and under MySQL's max_allowed_packet (16 MiB on
        // MariaDB by default) however large the events are.
        for chunk in by_size(&events, MAX_ROWS_PER_INSERT, MAX_STATEMENT_BYTES, |e| {
            e.payload.len()
        }) {
            on_backend!(conn, |c| diesel::insert_into(events::table)
                .values(chunk.to_vec())
                .execute(c))?;
        }
        for chunk in rows.chunks(200) {
            on_backend!(conn, |c| diesel::insert_into(deliveries::table)
                .values(chunk.to_vec())
                .execute(c))?;
        }
        Ok(())
    })
}

/// The most rows one multi-row insert carries.
const MAX_ROWS_PER_INSERT: usize = 200;
/// The most payload bytes one multi-row insert carries (a larger event goes
/// alone).
const MAX_STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// Splits `items` into runs of at most `max_rows` whose `size`s add up to at
/// most `max_bytes`; an item larger than `max_bytes` is a run of its own.
fn by_size<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_rows || bytes + n > max_bytes) {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// Stores accepted events and records attempt outcomes in one transaction:
/// one commit (one fsync on SQLite) for both, and the pages they share
/// written once. The outcomes are recorded inside a savepoint, so they can
/// never cost the events their commit: the inner result says whether they
/// were written, the outer one whether anything was.
pub fn store_and_record(
    conn: &mut DbConn,
    events: &mut [NewEvent],
    owner: &str,
    outcomes: &[(AttemptRow, AttemptOutcome)],
) -> QueryResult<QueryResult<Recorded>> {
    super::write_transaction(conn, |conn| {
        if !events.is_empty() {
            insert_events(conn, events)?;
        }
        if outcomes.is_empty() {
            return Ok(Ok(Recorded::default()));
        }
        // Nested, this transaction is a savepoint.
        Ok(record_attempts(conn, owner, outcomes))
    })
}

/// What an attempt changes on its delivery.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The delivery's webhook (whose last success a success moves).
    pub webhook_id: String,
    /// The new status: still pending (a retry is due), succeeded or failed.
    pub status: DeliveryStatus,
    /// When the next attempt is due, for a pending delivery.
    pub next_attempt_at: i64,
    /// When it succeeded.
    pub delivered_at: Option<i64>,
    /// The epoch of the webhook's lease it was made under, which the write
    /// checks; `None` for the one attempt of a test to a disabled webhook,
    /// which no owner sends.
    pub epoch: Option<i64>,
}

/// What an outcome write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Outcomes written.
    pub written: usize,
    /// Outcomes refused: made under a lease this instance no longer holds
    /// (another instance took the webhook over, and sends it again).
    pub fenced: usize,
}

/// Records attempts and their effect on their deliveries, all in one
/// transaction, fenced: the lease rows of their webhooks are locked first,
/// and an outcome made under an epoch `owner` no longer holds is dropped
/// (its webhook's new owner sends that delivery again), so a paused or
/// cut-off instance can never overwrite the new owner's rows. The attempts
/// go in as multi-row inserts; each delivery is written once, with its last
/// outcome in the batch: on MySQL through one `UPDATE ... JOIN` per
/// [`OUTCOME_CHUNK`] deliveries, on SQLite through a cached one-row
/// `UPDATE` each.
pub fn record_attempts(
    conn: &mut DbConn,
    owner: &str,
    batch: &[(AttemptRow, AttemptOutcome)],
) -> QueryResult<Recorded> {
    conn.transaction(|conn| {
        let mut webhooks: Vec<&str> = batch
            .iter()
            .filter(|(_, o)| o.epoch.is_some())
            .map(|(_, o)| o.webhook_id.as_str())
            .collect();
        webhooks.sort_unstable();
        webhooks.dedup();
        let held = super::leases::lock_held(conn, owner, &webhooks)?;
        let allowed: Vec<(AttemptRow, AttemptOutcome)> = batch
            .iter()
            .filter(|(_, o)| o.epoch.is_none_or(|e| held.get(&o.webhook_id) == Some(&e)))
            .cloned()
            .collect();
        let fenced = batch.len() - allowed.len();
        if fenced > 0 {
            log::warn!(
                "dropped {fenced} delivery outcomes made under a lease this instance no longer holds"
            );
        }
        write_attempts(conn, &allowed)?;
        Ok(Recorded {
            written: allowed.len(),
            fenced,
        })
    })
}

fn write_attempts(conn: &mut DbConn, batch: &[(AttemptRow, AttemptOutcome)]) -> QueryResult<()> {
    let finals = last_outcomes(batch);
    let mut successes: HashMap<&str, i64> = HashMap::new();
    for (_, outcome) in &finals {
        if let Some(at) = outcome.delivered_at {
            let best = successes.entry(outcome.webhook_id.as_str()).or_insert(at);
            *best = (*best).max(at);
        }
    }
    {
        for chunk in batch.chunks(200) {
            let rows: Vec<&AttemptRow> = chunk.iter().map(|(a, _)| a).collect();
            // An attempt already recorded (a retried write whose first try
            // did commit) must not make the whole batch fail forever.
            on_backend!(conn, |c| diesel::insert_or_ignore_into(
                delivery_attempts::table
            )
            .values(rows.clone())
            .execute(c))?;
        }
        let (plain, other): (Vec<_>, Vec<_>) =
            finals.iter().copied().partition(|r| is_plain_success(r));
        for (attempt, ids) in successes_by_attempt(&plain) {
            for chunk in ids.chunks(SUCCESS_CHUNK) {
                diesel::update(deliveries::table.filter(deliveries::id.eq_any(chunk)))
                    .set((
                        deliveries::status.eq(DeliveryStatus::Succeeded),
                        deliveries::attempts.eq(attempt),
                        deliveries::last_status_code.eq(None::<i32>),
                        deliveries::last_error.eq(None::<String>),
                        deliveries::delivered_at.eq(None::<i64>),
                    ))
                    .execute(conn)?;
            }
        }
        match conn {
            #[cfg(feature = "mysql")]
            DbConn::Mysql(c) => {
                for chunk in other.chunks(OUTCOME_CHUNK) {
                    update_outcomes_in_one(c, chunk)?;
                }
            }
            // An `UPDATE ... WHERE id IN` per group that ends alike: the
            // derived-table join MySQL takes would be one big statement,
            // which SQLite's planner takes quadratic time to compile.
            DbConn::Sqlite(c) => {
                for (outcome, ids) in same_outcomes(&other) {
                    let target = deliveries::table.filter(deliveries::id.eq_any(ids));
                    let set = (
                        deliveries::status.eq(outcome.status),
                        deliveries::attempts.eq(outcome.attempt),
                        deliveries::next_attempt_at.eq(outcome.next_attempt_at),
                        deliveries::last_status_code.eq(outcome.status_code),
                        deliveries::last_error.eq(outcome.error),
                        deliveries::delivered_at.eq(outcome.delivered_at),
                    );
                    diesel::update(target).set(set).execute(c)?;
                }
            }
        }
        let mut successes: Vec<(&str, i64)> = successes.into_iter().collect();
        // A fixed order keeps two writers from locking webhooks crosswise.
        successes.sort_unstable();
        for (webhook_id, at) in successes {
            diesel::update(
                webhooks::table.find(webhook_id).filter(
                    webhooks::last_success_at
                        .is_null()
                        .or(webhooks::last_success_at.lt(at)),
                ),
            )
            .set(webhooks::last_success_at.eq(at))
            .execute(conn)?;
        }
        Ok(())
    }
}

#[cfg(feature = "mysql")]
/// Gives each delivery of `chunk` its outcome with one statement: on a
/// server a statement per delivery costs a round trip each, which made the
/// writes fall behind the sends.
fn update_outcomes_in_one(
    c: &mut diesel::MysqlConnection,
    chunk: &[&(AttemptRow, AttemptOutcome)],
) -> QueryResult<usize> {
    let mut q = diesel::sql_query(outcome_update_sql(chunk.len())).into_boxed();
    for (a, o) in chunk {
        q = q
            .bind::<Text, _>(&a.delivery_id)
            .bind::<Text, _>(o.status)
            .bind::<Integer, _>(a.attempt)
            .bind::<BigInt, _>(o.next_attempt_at)
            .bind::<Nullable<Integer>, _>(a.status_code)
            .bind::<Nullable<Text>, _>(&a.error)
            .bind::<Nullable<BigInt>, _>(o.delivered_at);
    }
    q.execute(c)
}

/// Whether an outcome is a plain success: succeeded, no error, delivered
/// when its attempt ended (`at + duration_ms`). Under load nearly every
/// outcome is one. Its row is written with constants only, its status and
/// attempt count, and the time and HTTP status the log shows are read from
/// the attempt itself ([`with_success_details`]), which the same
/// transaction writes. So the successes of a round that share an attempt
/// number are one `UPDATE ... WHERE id IN`, on both stores: timed alone on
/// MariaDB, 38 ms for 1,000 against 52 ms for the join of a derived table
/// of their values (docs/benchmarks.md, session 11).
fn is_plain_success((a, o): &(AttemptRow, AttemptOutcome)) -> bool {
    o.status == DeliveryStatus::Succeeded
        && a.error.is_none()
        && o.delivered_at == Some(a.at + a.duration_ms)
}

/// The plain successes of `finals` by attempt number, in first-seen order.
fn successes_by_attempt<'a>(
    finals: &[&'a (AttemptRow, AttemptOutcome)],
) -> Vec<(i32, Vec<&'a str>)> {
    grouped_in_order(finals, |a, _| a.attempt)
}

/// The delivery ids of `finals` grouped by `key`, groups and ids in
/// first-seen order.
fn grouped_in_order<'a, K: std::hash::Hash + Eq + Copy>(
    finals: &[&'a (AttemptRow, AttemptOutcome)],
    key: impl Fn(&'a AttemptRow, &'a AttemptOutcome) -> K,
) -> Vec<(K, Vec<&'a str>)> {
    let mut groups: Vec<(K, Vec<&'a str>)> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for (a, o) in finals.iter().copied() {
        let at = *index.entry(key(a, o)).or_insert_with_key(|k| {
            groups.push((*k, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(a.delivery_id.as_str());
    }
    groups
}

/// The most plain successes one `UPDATE ... WHERE id IN` carries: a bound
/// on bound parameters (SQLite allows 32,766, MySQL 65,535).
const SUCCESS_CHUNK: usize = 1000;

/// What a delivery's row becomes after an attempt, minus its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RowOutcome<'a> {
    status: DeliveryStatus,
    attempt: i32,
    next_attempt_at: i64,
    status_code: Option<i32>,
    error: Option<&'a str>,
    delivered_at: Option<i64>,
}

/// The deliveries of `finals` grouped by the identical row each must end
/// with, in first-seen order: retries scheduled in the same millisecond,
/// say, share one `UPDATE ... WHERE id IN`.
fn same_outcomes<'a>(
    finals: &[&'a (AttemptRow, AttemptOutcome)],
) -> Vec<(RowOutcome<'a>, Vec<&'a str>)> {
    grouped_in_order(finals, |a, o| RowOutcome {
        status: o.status,
        attempt: a.attempt,
        next_attempt_at: o.next_attempt_at,
        status_code: a.status_code,
        error: a.error.as_deref(),
        delivered_at: o.delivered_at,
    })
}

/// The most deliveries one outcome `UPDATE` changes: a bound on the
/// statement's size (seven placeholders a delivery), not on its cost, which
/// grows linearly.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
const OUTCOME_CHUNK: usize = 250;

/// The last outcome of each delivery in `batch`, which is what the
/// deliveries must end up with (written in order, each outcome would
/// overwrite the earlier ones of its delivery).
fn last_outcomes(batch: &[(AttemptRow, AttemptOutcome)]) -> Vec<&(AttemptRow, AttemptOutcome)> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    for (i, (attempt, _)) in batch.iter().enumerate() {
        last.insert(attempt.delivery_id.as_str(), i);
    }
    batch
        .iter()
        .enumerate()
        .filter(|(i, (a, _))| last.get(a.delivery_id.as_str()) == Some(i))
        .map(|(_, row)| row)
        .collect()
}

/// The statement that gives each of `n` deliveries its outcome: the
/// outcomes as a derived table, one `SELECT` of placeholders per delivery
/// (id, status, attempts, next_attempt_at, last_status_code, last_error,
/// delivered_at), joined to `deliveries` on its primary key. MySQL and
/// MariaDB walk the derived rows and look each delivery up (`eq_ref`), so
/// the statement's own cost is linear; the `UPDATE ... CASE id WHEN ...`
/// this replaces scanned every `WHEN` for every row and column (quadratic
/// in the chunk). MariaDB materialises the derived table, a temporary
/// table per statement: a quarter of the statement's cost timed alone
/// (docs/benchmarks.md, session 8), which is why plain successes
/// ([`is_plain_success`]) take an `UPDATE ... WHERE id IN` of constants.
/// Ids in a chunk are distinct ([`last_outcomes`]), so no row is joined
/// twice. (Only MySQL runs it; its unit tests run in every build.)
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
fn outcome_update_sql(n: usize) -> String {
    let mut sql = String::with_capacity(400 + n * 40);
    sql.push_str(
        "UPDATE deliveries d JOIN (SELECT ? AS id, ? AS status, ? AS attempts, \
         ? AS next_attempt_at, ? AS last_status_code, ? AS last_error, ? AS delivered_at",
    );
    for _ in 1..n {
        sql.push_str(" UNION ALL SELECT ?, ?, ?, ?, ?, ?, ?");
    }
    sql.push_str(
        ") v ON d.id = v.id SET d.status = v.status, d.attempts = v.attempts, \
         d.next_attempt_at = v.next_attempt_at, d.last_status_code = v.last_status_code, \
         d.last_error = v.last_error, d.delivered_at = v.delivered_at",
    );
    sql
}

/// A pending delivery with the body it carries, as a backlog page reads it.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct PendingDelivery {
    #[diesel(embed)]
    pub delivery: DeliveryRow,
    /// The event's body, exactly as every attempt sends it.
    pub payload: String,
}

/// Where a webhook's backlog page starts: after this `(seq, id)`, the
/// order deliveries of one channel must go out in.
pub type Cursor = (i64, String);

/// `deliveries.status = '<status>'`, written out rather than bound: on
/// SQLite the indexes that find pending and failed work hold those rows
/// only (migration 000011), and its planner takes such a partial index for
/// a query that states the index's condition literally; a bound value
/// would have it prepare the statement again at every binding to check.
pub(crate) fn status_is(
    status: DeliveryStatus,
) -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    // A fixed word of the enum, never input: nothing to quote.
    diesel::dsl::sql(&format!("deliveries.status = '{}'", status.as_str()))
}

/// One page of a webhook's backlog: up to `limit` pending deliveries after
/// `after` (from the start with `None`), in sequence order, with their
/// bodies. Only the webhook's lease holder reads its pages, so the read
/// takes no row locks and writes nothing. The page is a prefix of each
/// channel's queue past `after`, which is what lets a delivery actor hold
/// only a window of its webhook's backlog and still keep every channel in
/// order; and since sequence numbers commit in order, a row numbered below
/// one this page returns can never appear later. It walks
/// `deliveries_pending_by_webhook` (webhook, seq of pending rows on SQLite;
/// webhook, status, seq on MySQL).
pub fn read_page(
    conn: &mut DbConn,
    webhook_id: &str,
    after: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<PendingDelivery>> {
    // From the start is after the smallest key: one statement shape.
    let after = after
        .map(|(at, id)| (*at, id.as_str()))
        .unwrap_or((i64::MIN, ""));
    pending_after(conn, webhook_id, None, after, limit)
}

/// Up to `limit` pending deliveries of a webhook (of some channels, or
/// all) after `(seq, id)`, in sequence order, with their bodies.
fn pending_after(
    conn: &mut DbConn,
    webhook_id: &str,
    channel_ids: Option<&[&str]>,
    (at, id): (i64, &str),
    limit: i64,
) -> QueryResult<Vec<PendingDelivery>> {
    let mut q = deliveries::table
        .inner_join(events::table)
        .filter(deliveries::webhook_id.eq(webhook_id))
        .into_boxed();
    if let Some(channel_ids) = channel_ids {
        q = q.filter(deliveries::channel_id.eq_any(channel_ids));
    }
    q.filter(status_is(DeliveryStatus::Pending))
        // With the next filter, `(seq, id) > (at, id)`. This one is what
        // lets the walk start at the cursor: planners do not seek on the
        // disjunction alone, and a page read every pending row of the
        // webhook before the cursor again.
        .filter(deliveries::seq.ge(at))
        // Not `seq = at AND id > id` on the right: MariaDB took that term
        // for a second range, on `deliveries_by_seq`, and read the page as
        // a sort-union of both indexes, every pending row of the webhook
        // past the cursor, then sorted them (seen on the bench's tables;
        // docs/benchmarks.md, session 10). `id > id` alone is no range
        // worth merging.
        .filter(deliveries::seq.gt(at).or(deliveries::id.gt(id)))
        .order((deliveries::seq, deliveries::id))
        .select(PendingDelivery::as_select())
        .limit(limit)
        .load(conn)
}

/// One page of several channels' backlogs for a webhook: up to `limit`
/// pending deliveries of `channel_ids` after `after`, in sequence order,
/// with their bodies. A delivery actor holds at most
/// [`crate::backlog::CHANNEL_HOLD`] deliveries of a channel; past that it
/// reads on in the channel with this, so that a channel with a long queue
/// (its receiver failing on its oldest event) cannot fill the webhook's
/// share of memory and hold the other channels back. It reads the clipped
/// channels that are due together, from the smallest of their clips
/// ([`crate::backlog::split_channels_page`]). It walks the same index as a
/// webhook page, `deliveries_pending_by_webhook`, checking each row's
/// channel: a channel index would be written on every insert, one entry
/// per delivery scattered over every channel of the commit (a third of the
/// insert's time on MariaDB, docs/benchmarks.md, session 12), for pages
/// that only a clipped channel reads. The walk reads the pending rows of
/// the stretch whatever their channel; those are few unless the whole
/// webhook is backlogged, and then the channels are clipped together and
/// one walk serves them all.
pub fn read_channels_page(
    conn: &mut DbConn,
    webhook_id: &str,
    channel_ids: &[&str],
    after: &Cursor,
    limit: i64,
) -> QueryResult<Vec<PendingDelivery>> {
    let after = (after.0, after.1.as_str());
    pending_after(conn, webhook_id, Some(channel_ids), after, limit)
}

/// Which of `webhook_ids` have a pending delivery: a probe of
/// `deliveries_pending_by_webhook` each, in chunks.
pub fn webhooks_with_pending(
    conn: &mut DbConn,
    webhook_ids: &[&str],
) -> QueryResult<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in webhook_ids.chunks(500) {
        let ids: Vec<String> = deliveries::table
            .filter(deliveries::webhook_id.eq_any(chunk))
            .filter(status_is(DeliveryStatus::Pending))
            .select(deliveries::webhook_id)
            .distinct()
            .load(conn)?;
        found.extend(ids);
    }
    Ok(found)
}

/// The body of delivery `id` (its event's payload); `None` when the
/// delivery is no longer stored.
pub fn payload_of(conn: &mut DbConn, id: &str) -> QueryResult<Option<String>> {
    deliveries::table
        .inner_join(events::table)
        .filter(deliveries::id.eq(id))
        .select(events::payload)
        .first(conn)
        .optional()
}

/// Puts deliveries of a webhook back to pending, due now; answers how many.
/// Only deliveries that are not already pending are touched. Each goes to
/// the back of its channel's queue: it gets a new sequence number, in the
/// order the deliveries had, so the webhook's lease holder (on whichever
/// instance) finds them past its cursor as it finds new events. Bodies are
/// not read: the lease holder reads its backlog in pages. Each is listed
/// in `resent_deliveries`, since it no longer shares its event's number
/// (see [`prune_events`]).
pub fn requeue(
    conn: &mut DbConn,
    webhook_id: &str,
    ids: &[String],
    now: i64,
) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let mut rows: Vec<(i64, String, String)> = Vec::new();
        for chunk in ids.chunks(500) {
            rows.extend(
                deliveries::table
                    .filter(deliveries::webhook_id.eq(webhook_id))
                    .filter(deliveries::id.eq_any(chunk))
                    .filter(deliveries::status.ne(DeliveryStatus::Pending))
                    .select((deliveries::seq, deliveries::id, deliveries::event_id))
                    .load::<(i64, String, String)>(conn)?,
            );
        }
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_unstable();
        rows.dedup();
        // Ignore: a delivery resent before is listed already.
        for chunk in rows.chunks(500) {
            let listed: Vec<_> = chunk
                .iter()
                .map(|(_, id, event_id)| {
                    (
                        resent_deliveries::delivery_id.eq(id),
                        resent_deliveries::event_id.eq(event_id),
                    )
                })
                .collect();
            on_backend!(conn, |c| diesel::insert_or_ignore_into(
                resent_deliveries::table
            )
            .values(listed)
            .execute(c))?;
        }
        let first = super::leases::take_sequence(conn, rows.len() as i64)?;
        for (i, (_, id, _)) in rows.iter().enumerate() {
            diesel::update(deliveries::table.find(id))
                .set((
                    deliveries::status.eq(DeliveryStatus::Pending),
                    deliveries::next_attempt_at.eq(now),
                    deliveries::delivered_at.eq(None::<i64>),
                    deliveries::seq.eq(first + i as i64),
                ))
                .execute(conn)?;
        }
        Ok(rows.len())
    })
}

/// Ids of a webhook's failed deliveries created at or after `since`.
pub fn failed_since(conn: &mut DbConn, webhook_id: &str, since: i64) -> QueryResult<Vec<String>> {
    deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id))
        .filter(deliveries::created_at.ge(since))
        .filter(status_is(DeliveryStatus::Failed))
        .order((deliveries::created_at, deliveries::id))
        .select(deliveries::id)
        .load(conn)
}

/// A delivery as the log shows it: the row and its event's name (the body
/// is not read for the log).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct LoggedDelivery {
    #[diesel(embed)]
    pub delivery: DeliveryRow,
    /// The event's name.
    pub event: String,
}

/// What a delivery log page keeps: every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only deliveries in this status.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries of events with this name.
    pub event: Option<String>,
    /// Only deliveries for this channel id.
    pub channel_id: Option<String>,
}

/// One page of a webhook's deliveries, newest first, with the total count.
/// The count joins the events only when it filters on their name, since
/// without a filter it walks the webhook's index alone.
pub fn page(
    conn: &mut DbConn,
    webhook_id: &str,
    filter: &LogFilter,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<LoggedDelivery>, i64)> {
    // The status and channel filters, on any boxed query of deliveries.
    macro_rules! narrowed {
        ($q:expr) => {{
            let mut q = $q
                .filter(deliveries::webhook_id.eq(webhook_id))
                .into_boxed();
            if let Some(s) = filter.status {
                q = q.filter(status_is(s));
            }
            if let Some(c) = &filter.channel_id {
                q = q.filter(deliveries::channel_id.eq(c.clone()));
            }
            q
        }};
    }
    let mut rows = narrowed!(deliveries::table.inner_join(events::table));
    let total = match &filter.event {
        Some(e) => {
            rows = rows.filter(events::event.eq(e.clone()));
            narrowed!(deliveries::table.inner_join(events::table))
                .filter(events::event.eq(e.clone()))
                .count()
                .get_result(conn)?
        }
        None => narrowed!(deliveries::table).count().get_result(conn)?,
    };
    let mut data = rows
        .order((deliveries::created_at.desc(), deliveries::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(LoggedDelivery::as_select())
        .load(conn)?;
    with_success_details(conn, &mut data)?;
    Ok((data, total))
}

/// Fills in, for each plain success of `rows` ([`is_plain_success`]), the
/// time and HTTP status its row leaves out: those of its last attempt,
/// which ended when it was delivered. One query for a page, by the
/// attempts' primary key.
fn with_success_details(conn: &mut DbConn, rows: &mut [LoggedDelivery]) -> QueryResult<()> {
    // A success stored without its time is a plain one.
    let lacks_details =
        |d: &DeliveryRow| d.status == DeliveryStatus::Succeeded && d.delivered_at.is_none();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| &r.delivery)
        .filter(|d| lacks_details(d))
        .map(|d| d.id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let found: Vec<(String, i32, i64, i64, Option<i32>)> = delivery_attempts::table
        .filter(delivery_attempts::delivery_id.eq_any(&ids))
        .select((
            delivery_attempts::delivery_id,
            delivery_attempts::attempt,
            delivery_attempts::at,
            delivery_attempts::duration_ms,
            delivery_attempts::status_code,
        ))
        .load(conn)?;
    let by_attempt: HashMap<(&str, i32), (i64, Option<i32>)> = found
        .iter()
        .map(|(id, n, at, took, code)| ((id.as_str(), *n), (at + took, *code)))
        .collect();
    for d in rows.iter_mut().map(|r| &mut r.delivery) {
        if !lacks_details(d) {
            continue;
        }
        if let Some(&(at, code)) = by_attempt.get(&(d.id.as_str(), d.attempts)) {
            d.delivered_at = Some(at);
            d.last_status_code = code;
        }
    }
    Ok(())
}

/// What the API shows of a webhook's health beside its settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookHealth {
    /// When a delivery last succeeded, epoch ms.
    pub last_success_at: Option<i64>,
    /// How many of its deliveries are failed now (failed for good and not
    /// sent again since).
    pub failing: i64,
}

/// [`WebhookHealth`] of each of `webhook_ids`, in two queries whatever
/// their number (a page holds at most 100): the failed count walks
/// `deliveries_failed_by_webhook` on SQLite (failed rows only) and
/// `deliveries_pending_by_webhook` (webhook, status, ...) on MySQL.
pub fn health(
    conn: &mut DbConn,
    webhook_ids: &[String],
) -> QueryResult<HashMap<String, WebhookHealth>> {
    let mut out: HashMap<String, WebhookHealth> = HashMap::new();
    if webhook_ids.is_empty() {
        return Ok(out);
    }
    let last: Vec<(String, Option<i64>)> = webhooks::table
        .filter(webhooks::id.eq_any(webhook_ids))
        .select((webhooks::id, webhooks::last_success_at))
        .load(conn)?;
    for (id, at) in last {
        out.entry(id).or_default().last_success_at = at;
    }
    let failing: Vec<(String, i64)> = deliveries::table
        .filter(deliveries::webhook_id.eq_any(webhook_ids))
        .filter(status_is(DeliveryStatus::Failed))
        .group_by(deliveries::webhook_id)
        .select((deliveries::webhook_id, diesel::dsl::count_star()))
        .load(conn)?;
    for (id, n) in failing {
        out.entry(id).or_default().failing = n;
    }
    Ok(out)
}

/// One delivery of a webhook with its event's name.
pub fn find(conn: &mut DbConn, webhook_id: &str, id: &str) -> QueryResult<Option<LoggedDelivery>> {
    let mut found: Vec<LoggedDelivery> = deliveries::table
        .inner_join(events::table)
        .filter(deliveries::webhook_id.eq(webhook_id))
        .filter(deliveries::id.eq(id))
        .select(LoggedDelivery::as_select())
        .limit(1)
        .load(conn)?;
    with_success_details(conn, &mut found)?;
    Ok(found.pop())
}

/// The attempts of one delivery, first to last.
pub fn attempts(conn: &mut DbConn, delivery_id: &str) -> QueryResult<Vec<AttemptRow>> {
    delivery_attempts::table
        .filter(delivery_attempts::delivery_id.eq(delivery_id))
        .order(delivery_attempts::attempt)
        .select(AttemptRow::as_select())
        .load(conn)
}

/// When the webhook last had a delivery succeed, if it ever did: kept on
/// the webhook, so retention pruning the history does not change it.
pub fn last_success(conn: &mut DbConn, webhook_id: &str) -> QueryResult<Option<i64>> {
    let kept: Option<i64> = webhooks::table
        .find(webhook_id)
        .select(webhooks::last_success_at)
        .first::<Option<i64>>(conn)
        .optional()?
        .flatten();
    if kept.is_some() {
        return Ok(kept);
    }
    // Successes recorded before the column existed.
    deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id))
        .filter(deliveries::status.eq(DeliveryStatus::Succeeded))
        .select(diesel::dsl::max(deliveries::delivered_at))
        .first(conn)
}

/// What one pruning batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedBatch {
    /// How many rows went.
    pub deleted: usize,
    /// Where the next batch of the same pass starts: for deliveries the
    /// sequence number, for events the age, of the last row this one
    /// deleted. The rows a pass keeps (failed and pending deliveries,
    /// events they refer to) sit among the oldest for ever, and a batch
    /// that walked from the start each time would read all of them again,
    /// batch after batch; from here, a pass reads each kept row about once.
    pub resume_from: i64,
}

/// Deletes up to `limit` of the oldest succeeded deliveries created before
/// `before`, numbered from `from` on, with their attempts. It walks the
/// deliveries in sequence order (`deliveries_by_seq` on MySQL,
/// `deliveries_succeeded_by_seq`, succeeded rows only, on SQLite), up to
/// the number of the newest event created before `before`; so on MySQL it
/// reads the kept rows it passes as well, and `from` is what keeps a pass
/// from reading them again.
///
/// Sequence numbers follow commit order and ages follow the instances'
/// clocks, so the two agree only roughly: `created_at < before` decides
/// what goes, and the walk's end only decides how far one pass looks. A
/// success numbered past that end although older (an instance whose clock
/// was ahead) waits for a later pass, whose end has moved on.
pub fn prune_succeeded(
    conn: &mut DbConn,
    from: i64,
    before: i64,
    limit: i64,
) -> QueryResult<PrunedBatch> {
    let nothing = PrunedBatch {
        deleted: 0,
        resume_from: from,
    };
    super::write_transaction(conn, |conn| {
        let Some(end) = events::table
            .filter(events::created_at.lt(before))
            .order(events::created_at.desc())
            .select(events::seq)
            .first::<i64>(conn)
            .optional()?
        else {
            return Ok(nothing);
        };
        // `>=`: a batch may end inside one event's deliveries (one per
        // webhook, all with its number).
        let rows: Vec<(String, i64)> = deliveries::table
            .filter(status_is(DeliveryStatus::Succeeded))
            .filter(deliveries::seq.ge(from))
            .filter(deliveries::seq.le(end))
            .filter(deliveries::created_at.lt(before))
            .order(deliveries::seq)
            .select((deliveries::id, deliveries::seq))
            .limit(limit)
            .load(conn)?;
        let Some(&(_, last)) = rows.last() else {
            return Ok(nothing);
        };
        let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
        diesel::delete(
            delivery_attempts::table.filter(delivery_attempts::delivery_id.eq_any(&ids)),
        )
        .execute(conn)?;
        diesel::delete(
            resent_deliveries::table.filter(resent_deliveries::delivery_id.eq_any(&ids)),
        )
        .execute(conn)?;
        let deleted =
            diesel::delete(deliveries::table.filter(deliveries::id.eq_any(&ids))).execute(conn)?;
        Ok(PrunedBatch {
            deleted,
            resume_from: last,
        })
    })
}

/// Deletes up to `limit` of the oldest events created in `[from, before)`
/// that no delivery refers to any more (walking `events_by_created`).
///
/// On MySQL the deliveries have no index by event (an entry per delivery
/// at insert, for this query only): a delivery that was never resent has
/// its event's sequence number (`deliveries_by_seq`), and one that was is
/// listed in `resent_deliveries` with its event. SQLite asks
/// `deliveries_by_event`, since its sequence indexes leave failed rows out.
pub fn prune_events(
    conn: &mut DbConn,
    from: i64,
    before: i64,
    limit: i64,
) -> QueryResult<PrunedBatch> {
    use diesel::dsl::{exists, not};
    super::write_transaction(conn, |conn| {
        let old = events::table
            .filter(events::created_at.ge(from))
            .filter(events::created_at.lt(before))
            .order(events::created_at)
            .select((events::id, events::created_at))
            .limit(limit);
        let rows: Vec<(String, i64)> = match conn {
            DbConn::Sqlite(c) => old
                .filter(not(exists(
                    deliveries::table.filter(deliveries::event_id.eq(events::id)),
                )))
                .load(c)?,
            #[cfg(feature = "mysql")]
            DbConn::Mysql(c) => old
                .filter(not(exists(
                    deliveries::table.filter(deliveries::seq.eq(events::seq)),
                )))
                .filter(not(exists(
                    resent_deliveries::table.filter(resent_deliveries::event_id.eq(events::id)),
                )))
                .load(c)?,
        };
        let Some(&(_, last)) = rows.last() else {
            return Ok(PrunedBatch {
                deleted: 0,
                resume_from: from,
            });
        };
        let ids: Vec<String> = rows.into_iter().map(|(id, _)| id).collect();
        let deleted =
            diesel::delete(events::table.filter(events::id.eq_any(&ids))).execute(conn)?;
        Ok(PrunedBatch {
            deleted,
            resume_from: last,
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_outcome_update_binds_seven_values_a_delivery_and_joins_on_the_key() {
        for n in [1, 2, super::OUTCOME_CHUNK] {
            let sql = super::outcome_update_sql(n);
            assert_eq!(sql.matches('?').count(), 7 * n, "{n}");
            assert_eq!(sql.matches("UNION ALL").count(), n - 1, "{n}");
            assert!(sql.contains(") v ON d.id = v.id SET "), "{sql}");
        }
    }

    #[test]
    fn only_an_errorless_success_delivered_when_its_attempt_ended_is_plain() {
        // `report` makes an attempt at 5 that took 1 ms.
        let (mut a, mut o) = report("msg_1", DeliveryStatus::Succeeded, 5);
        o.delivered_at = Some(6);
        assert!(super::is_plain_success(&(a.clone(), o.clone())));
        a.error = Some("late".into());
        assert!(!super::is_plain_success(&(a.clone(), o.clone())));
        a.error = None;
        // Any other time must be stored: the attempt could not give it.
        o.delivered_at = Some(5);
        assert!(!super::is_plain_success(&(a.clone(), o.clone())));
        o.delivered_at = Some(6);
        for status in [DeliveryStatus::Pending, DeliveryStatus::Failed] {
            o.status = status;
            assert!(
                !super::is_plain_success(&(a.clone(), o.clone())),
                "{status:?}"
            );
        }
    }

    #[test]
    fn plain_successes_are_grouped_by_attempt_number_in_first_seen_order() {
        let mut batch = [
            report("a", DeliveryStatus::Succeeded, 5),
            report("b", DeliveryStatus::Succeeded, 9),
            report("c", DeliveryStatus::Succeeded, 7),
        ];
        batch[1].0.attempt = 3;
        let finals: Vec<_> = batch.iter().collect();
        assert_eq!(
            successes_by_attempt(&finals),
            vec![(1, vec!["a", "c"]), (3, vec!["b"])]
        );
    }

    #[test]
    fn inserts_are_split_by_rows_and_by_bytes() {
        let sizes = [3usize, 3, 3, 10, 1, 1, 1, 1];
        let runs: Vec<Vec<usize>> = super::by_size(&sizes, 3, 6, |n| *n)
            .into_iter()
            .map(|r| r.to_vec())
            .collect();
        assert_eq!(
            runs,
            vec![vec![3, 3], vec![3], vec![10], vec![1, 1, 1], vec![1]]
        );
        assert!(super::by_size(&[] as &[usize], 3, 6, |n| *n).is_empty());
    }

    use super::*;

    fn report(id: &str, state: DeliveryStatus, at: i64) -> (AttemptRow, AttemptOutcome) {
        (
            AttemptRow {
                delivery_id: id.into(),
                attempt: 1,
                at,
                duration_ms: 1,
                status_code: Some(204),
                error: None,
                response_body: None,
            },
            AttemptOutcome {
                webhook_id: "wh".into(),
                status: state,
                next_attempt_at: at,
                delivered_at: (state == DeliveryStatus::Succeeded).then_some(at),
                epoch: Some(1),
            },
        )
    }

    #[test]
    fn deliveries_that_end_alike_share_one_update() {
        let batch = [
            report("a", DeliveryStatus::Succeeded, 5),
            report("b", DeliveryStatus::Pending, 5),
            report("c", DeliveryStatus::Succeeded, 5),
            report("d", DeliveryStatus::Succeeded, 6),
        ];
        let finals: Vec<_> = batch.iter().collect();
        let groups = same_outcomes(&finals);
        let ids: Vec<Vec<&str>> = groups.iter().map(|(_, ids)| ids.clone()).collect();
        assert_eq!(ids, vec![vec!["a", "c"], vec!["b"], vec!["d"]]);
        assert_eq!(groups[0].0.delivered_at, Some(5));
        assert_eq!(groups[1].0.status, DeliveryStatus::Pending);
    }

    #[test]
    fn only_the_last_report_of_a_delivery_counts() {
        let batch = [
            report("a", DeliveryStatus::Pending, 1),
            report("b", DeliveryStatus::Succeeded, 2),
            report("a", DeliveryStatus::Succeeded, 3),
        ];
        let finals = last_outcomes(&batch);
        let kept: Vec<(&str, i64)> = finals
            .iter()
            .map(|(a, o)| (a.delivery_id.as_str(), o.next_attempt_at))
            .collect();
        assert_eq!(kept, vec![("b", 2), ("a", 3)]);
    }
}
