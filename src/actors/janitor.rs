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

use crate::db::{self, now_ms, Pool};
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
            let mut pruned = Pruned::default();
            let mut from = i64::MIN;
            loop {
                let batch = {
                    let mut conn = pool.get()?;
                    // One writer at a time on SQLite, like every other.
                    let _turn = pool.write_turn();
                    db::deliveries::prune_succeeded(&mut conn, from, before, BATCH)?
                };
                pruned.deliveries += batch.deleted;
                from = batch.resume_from;
                if (batch.deleted as i64) < BATCH {
                    break;
                }
                std::thread::sleep(PAUSE);
            }
            let mut from = i64::MIN;
            loop {
                let batch = {
                    let mut conn = pool.get()?;
                    // One writer at a time on SQLite, like every other.
                    let _turn = pool.write_turn();
                    db::deliveries::prune_events(&mut conn, from, before, BATCH)?
                };
                pruned.events += batch.deleted;
                from = batch.resume_from;
                if (batch.deleted as i64) < BATCH {
                    break;
                }
                std::thread::sleep(PAUSE);
            }
            let changes_before = now_ms() - CHANGE_LOG_KEEP.as_millis() as i64;
            let mut changes = 0;
            loop {
                let n = {
                    let mut conn = pool.get()?;
                    // One writer at a time on SQLite, like every other.
                    let _turn = pool.write_turn();
                    db::changes::prune(&mut conn, changes_before, BATCH)?
                };
                changes += n;
                if (n as i64) < BATCH {
                    break;
                }
                std::thread::sleep(PAUSE);
            }
            if changes > 0 {
                log::info!("pruned {changes} registry change rows");
            }
            loop {
                let n = {
                    let mut conn = pool.get()?;
                    // One writer at a time on SQLite, like every other.
                    let _turn = pool.write_turn();
                    db::idempotency::prune(&mut conn, now_ms(), BATCH)?
                };
                pruned.idempotency_keys += n;
                if (n as i64) < BATCH {
                    break;
                }
                std::thread::sleep(PAUSE);
            }
            if pruned.idempotency_keys > 0 {
                log::info!(
                    "pruned {} expired idempotency keys",
                    pruned.idempotency_keys
                );
            }
            Ok::<_, BrokerError>(pruned)
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
