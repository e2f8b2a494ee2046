//! The janitor owns retention: it prunes succeeded deliveries (with their
//! attempts) and then events no delivery refers to, once they are older than
//! BROKER_RETENTION. It works in small batches, each its own short
//! transaction on the blocking pool, with a pause between them, so it never
//! holds locks that delivery or ingest would wait on. Pending and failed
//! deliveries are never pruned: they are work, or evidence, not history.
//! It also keeps the registry change log short: rows older than
//! [`CHANGE_LOG_KEEP`] go (an instance that has not read them by then
//! reloads everything instead, see [`crate::db::changes`]). And it deletes
//! idempotency keys, with the answers stored with them, once they expire
//! (BROKER_IDEMPOTENCY_TTL after their first use).

use std::time::Duration;

use actix::prelude::*;

use diesel::QueryResult;

use crate::db::deliveries::PrunedBatch;
use crate::db::{self, now_ms, DbConn, Pool};
use crate::error::BrokerError;

/// Rows per pruning transaction.
const BATCH: i64 = 500;
/// The pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);
/// How often retention runs.
const EVERY: Duration = Duration::from_secs(600);
/// How long a registry change row is kept: far longer than any live
/// instance takes to read it (a poll every 200 ms).
pub const CHANGE_LOG_KEEP: Duration = Duration::from_secs(3600);

/// Runs `batch` until one deletes fewer than [`BATCH`] rows, each batch in
/// its own short transaction with a pause between, and returns how many
/// rows went. `batch` is told where the pass has got to
/// ([`PrunedBatch::resume_from`] of the batch before; `i64::MIN` at first).
fn in_batches(
    pool: &Pool,
    mut batch: impl FnMut(&mut DbConn, i64) -> QueryResult<PrunedBatch>,
) -> Result<usize, BrokerError> {
    let mut from = i64::MIN;
    let mut total = 0;
    loop {
        let done = {
            let mut conn = pool.get()?;
            // One writer at a time on SQLite, like every other.
            let _turn = pool.write_turn();
            batch(&mut conn, from)?
        };
        total += done.deleted;
        from = done.resume_from;
        if (done.deleted as i64) < BATCH {
            return Ok(total);
        }
        std::thread::sleep(PAUSE);
    }
}

/// A batch of a table pruned without a resume point: each batch starts
/// from the start, where the rows it deletes were.
fn from_the_start(deleted: usize) -> PrunedBatch {
    PrunedBatch {
        deleted,
        resume_from: i64::MIN,
    }
}

/// The janitor actor.
pub struct Janitor {
    pool: Pool,
    retention: Duration,
    running: bool,
}

impl Janitor {
    /// A janitor keeping `retention` of history.
    pub fn new(pool: Pool, retention: Duration) -> Self {
        Janitor {
            pool,
            retention,
            running: false,
        }
    }

    fn prune(&mut self) -> ResponseActFuture<Self, Result<Pruned, BrokerError>> {
        if self.running {
            return Box::pin(fut::ready(Ok(Pruned::default())));
        }
        self.running = true;
        let pool = self.pool.clone();
        let before = now_ms() - self.retention.as_millis() as i64;
        let work = actix_web::web::block(move || {
            let deliveries = in_batches(&pool, |conn, from| {
                db::deliveries::prune_succeeded(conn, from, before, BATCH)
            })?;
            let events = in_batches(&pool, |conn, from| {
                db::deliveries::prune_events(conn, from, before, BATCH)
            })?;
            let changes_before = now_ms() - CHANGE_LOG_KEEP.as_millis() as i64;
            let changes = in_batches(&pool, |conn, _| {
                db::changes::prune(conn, changes_before, BATCH).map(from_the_start)
            })?;
            if changes > 0 {
                log::info!("pruned {changes} registry change rows");
            }
            let idempotency_keys = in_batches(&pool, |conn, _| {
                db::idempotency::prune(conn, now_ms(), BATCH).map(from_the_start)
            })?;
            if idempotency_keys > 0 {
                log::info!("pruned {idempotency_keys} expired idempotency keys");
            }
            Ok::<_, BrokerError>(Pruned {
                deliveries,
                events,
                idempotency_keys,
            })
        });
        Box::pin(work.into_actor(self).map(|res, act, _| {
            act.running = false;
            let pruned = res??;
            if pruned.deliveries + pruned.events > 0 {
                log::info!(
                    "retention pruned {} deliveries and {} events",
                    pruned.deliveries,
                    pruned.events
                );
            }
            Ok(pruned)
        }))
    }
}

impl Actor for Janitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(EVERY, |act, ctx| {
            ctx.spawn(act.prune().map(|res, _, _| {
                if let Err(e) = res {
                    log::warn!("retention could not prune: {e}");
                }
            }));
        });
    }
}

/// What one pruning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Succeeded deliveries (with their attempts).
    pub deliveries: usize,
    /// Events left without deliveries.
    pub events: usize,
    /// Expired idempotency keys (with their stored answers).
    pub idempotency_keys: usize,
}

/// Prunes now (also runs every ten minutes on its own).
#[derive(Message, Debug)]
#[rtype(result = "Result<Pruned, BrokerError>")]
pub struct PruneNow;

impl Handler<PruneNow> for Janitor {
    type Result = ResponseActFuture<Self, Result<Pruned, BrokerError>>;

    fn handle(&mut self, _: PruneNow, _: &mut Self::Context) -> Self::Result {
        self.prune()
    }
}
