//! The recorder owns the write-back of delivery outcomes. Delivery actors
//! report each attempt here and move on; the recorder commits the reports in
//! batches (one transaction for all that arrived while the previous batch
//! was being written), in the order they arrived, and retries a batch that
//! failed (say, while MariaDB restarts) until it lands, so an outcome is
//! never dropped. It runs on the system arbiter; the writes themselves run on
//! the blocking pool.

use std::collections::VecDeque;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::db::deliveries::AttemptOutcome;
use crate::db::models::AttemptRow;
use crate::db::{self, Pool};

/// The most reports one transaction carries.
const MAX_BATCH: usize = 1000;
/// The longest pause between two tries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The recorder actor.
pub struct Recorder {
    pool: Pool,
    queue: VecDeque<Record>,
    flushing: bool,
    failures: u32,
    /// Callers of [`Flush`], each waiting for the reports queued before it.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Reports queued so far, and reports committed so far.
    queued: u64,
    committed: u64,
}

impl Recorder {
    /// A recorder writing through `pool`.
    pub fn new(pool: Pool) -> Self {
        Recorder {
            pool,
            queue: VecDeque::new(),
            flushing: false,
            failures: 0,
            waiters: Vec::new(),
            queued: 0,
            committed: 0,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.queue.is_empty() {
            return;
        }
        self.flushing = true;
        let n = self.queue.len().min(MAX_BATCH);
        let batch: Vec<Record> = self.queue.drain(..n).collect();
        let pool = self.pool.clone();
        let write = actix_web::web::block(move || {
            let rows: Vec<(AttemptRow, AttemptOutcome)> = batch
                .iter()
                .map(|r| (r.attempt.clone(), r.outcome.clone()))
                .collect();
            let result = pool.get().map_err(|e| e.to_string()).and_then(|mut conn| {
                db::deliveries::record_attempts(&mut conn, &rows).map_err(|e| e.to_string())
            });
            (batch, result)
        });
        ctx.spawn(write.into_actor(self).map(|res, act, ctx| {
            act.flushing = false;
            match res {
                Ok((batch, Ok(()))) => {
                    act.failures = 0;
                    act.committed += batch.len() as u64;
                    let committed = act.committed;
                    // Dropping a satisfied waiter's sender wakes it.
                    act.waiters.retain(|(upto, _)| *upto > committed);
                    act.flush(ctx);
                }
                Ok((batch, Err(e))) => {
                    crate::metrics::metrics().database_errors.inc();
                    act.failures += 1;
                    let pause = backoff(act.failures);
                    log::warn!(
                        "could not record {} delivery outcomes ({e}); retrying in {pause:?}",
                        batch.len()
                    );
                    for r in batch.into_iter().rev() {
                        act.queue.push_front(r);
                    }
                    ctx.run_later(pause, |act, ctx| act.flush(ctx));
                }
                Err(_) => log::error!("the blocking pool is gone; outcomes not recorded"),
            }
        }));
    }
}

fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(6));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

/// One attempt's outcome, to be written.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Record {
    /// The attempt row.
    pub attempt: AttemptRow,
    /// Its effect on the delivery.
    pub outcome: AttemptOutcome,
}

impl Handler<Record> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) {
        self.queue.push_back(msg);
        self.queued += 1;
        self.flush(ctx);
    }
}

/// Resolves once every report queued before it is committed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Recorder {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.committed >= self.queued {
            let _ = tx.send(());
        } else {
            self.waiters.push((self.queued, tx));
            self.flush(ctx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
