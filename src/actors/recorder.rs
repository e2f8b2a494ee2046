//! The recorder owns the hot writes to the outbox: the events the
//! dispatcher accepts ([`Persist`]) and the outcomes the delivery actors
//! report ([`Record`]). The actor only queues them; the writes run on
//! writer threads of its own, each a loop that takes whatever waits when its
//! previous transaction is done, so consecutive rounds follow each other
//! without a hop through an arbiter and the blocking pool in between.
//!
//! On SQLite (one writer) a single writer thread carries events and
//! outcomes in the same transaction: one commit (one fsync) per round, and
//! the delivery pages that an insert and the outcomes of the deliveries just
//! before it both touch written once. On MySQL, whose row locks let writers
//! run side by side, events and outcomes have a writer thread each, so an
//! ingest never queues behind a round trip for outcomes.
//!
//! Events are answered when their commit is done, or failed (then the
//! dispatcher refuses them and nothing was stored). Outcomes are written in
//! the order they arrived, inside a savepoint so they cannot cost the events
//! their commit; outcomes that failed (say, while MariaDB restarts) are kept
//! and tried again until they land, so an outcome is never dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::db::deliveries::{AttemptOutcome, NewEvent};
use crate::db::models::AttemptRow;
use crate::db::{self, Pool};
use crate::error::BrokerError;

/// The most outcomes one transaction carries.
const MAX_OUTCOMES: usize = 1000;
/// The longest pause between two tries of failing outcomes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Stored = Result<Vec<NewEvent>, BrokerError>;
type Outcome = (AttemptRow, AttemptOutcome);

/// What waits for one writer thread, and how far it got.
#[derive(Default)]
struct Queue {
    events: Vec<(Vec<NewEvent>, oneshot::Sender<Stored>)>,
    outcomes: VecDeque<Outcome>,
    /// Failed outcome rounds in a row, and when outcomes may be tried again.
    failures: u32,
    retry_at: Option<Instant>,
    /// Outcomes queued so far, and outcomes committed so far.
    queued: u64,
    committed: u64,
    /// Callers of [`Flush`], each waiting for the outcomes queued before it.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// The recorder is gone: finish what waits, then end the thread.
    closed: bool,
}

/// A writer thread's queue and the bell that wakes it.
#[derive(Default)]
struct Lane {
    queue: Mutex<Queue>,
    bell: Condvar,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The recorder actor.
pub struct Recorder {
    events: Arc<Lane>,
    outcomes: Arc<Lane>,
}

impl Recorder {
    /// A recorder writing through `pool`; starts its writer thread(s).
    pub fn new(pool: Pool) -> Self {
        let events = Arc::new(Lane::default());
        let outcomes = if pool.single_writer() {
            events.clone()
        } else {
            Arc::new(Lane::default())
        };
        spawn_writer(pool.clone(), events.clone());
        if !Arc::ptr_eq(&events, &outcomes) {
            spawn_writer(pool, outcomes.clone());
        }
        Recorder { events, outcomes }
    }
}

fn spawn_writer(pool: Pool, lane: Arc<Lane>) {
    std::thread::Builder::new()
        .name("wb-writer".into())
        .spawn(move || write_loop(&pool, &lane))
        .expect("spawn the writer thread");
}

/// Writes rounds until the recorder is gone and nothing waits.
fn write_loop(pool: &Pool, lane: &Lane) {
    loop {
        let (events, outcomes) = {
            let mut q = lane.lock();
            loop {
                let now = Instant::now();
                let backing_off = q.retry_at.is_some_and(|at| now < at);
                // Events are never held back: their senders are waiting for
                // an answer. Outcomes that failed wait out their backoff,
                // unless events make a transaction anyway.
                let events_waiting = !q.events.is_empty();
                let outcomes_due = !q.outcomes.is_empty() && (!backing_off || events_waiting);
                if events_waiting || outcomes_due {
                    let n = if outcomes_due {
                        q.outcomes.len().min(MAX_OUTCOMES)
                    } else {
                        0
                    };
                    let outcomes: Vec<Outcome> = q.outcomes.drain(..n).collect();
                    break (std::mem::take(&mut q.events), outcomes);
                }
                if q.closed {
                    // Outcomes still backing off stay pending in the
                    // database, as after a crash.
                    return;
                }
                q = match (backing_off, q.retry_at) {
                    (true, Some(at)) => {
                        lane.bell
                            .wait_timeout(q, at - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    _ => lane.bell.wait(q).unwrap_or_else(|p| p.into_inner()),
                };
            }
        };
        write_round(pool, lane, events, outcomes);
    }
}

/// One transaction: stores the events, records the outcomes, answers.
fn write_round(
    pool: &Pool,
    lane: &Lane,
    events: Vec<(Vec<NewEvent>, oneshot::Sender<Stored>)>,
    outcomes: Vec<Outcome>,
) {
    let (batches, replies): (Vec<Vec<NewEvent>>, Vec<oneshot::Sender<Stored>>) =
        events.into_iter().unzip();
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    let all: Vec<NewEvent> = batches.into_iter().flatten().collect();
    let result = pool.get().map_err(BrokerError::from).and_then(|mut conn| {
        let _turn = pool.write_turn();
        Ok(db::deliveries::store_and_record(
            &mut conn, &all, &outcomes,
        )?)
    });
    let (stored, recorded) = match result {
        Ok(recorded) => (Ok(()), recorded.map_err(|e| e.to_string())),
        Err(e) => {
            let why = e.to_string();
            (Err(e), Err(why))
        }
    };
    answer(all, &sizes, replies, stored);
    if outcomes.is_empty() {
        return;
    }
    let mut q = lane.lock();
    match recorded {
        Ok(()) => {
            q.failures = 0;
            q.retry_at = None;
            q.committed += outcomes.len() as u64;
            let committed = q.committed;
            // Dropping a satisfied waiter's sender wakes it.
            q.waiters.retain(|(upto, _)| *upto > committed);
        }
        Err(why) => {
            crate::metrics::metrics().database_errors.inc();
            q.failures += 1;
            let pause = backoff(q.failures);
            log::warn!(
                "could not record {} delivery outcomes ({why}); retrying in {pause:?}",
                outcomes.len()
            );
            for row in outcomes.into_iter().rev() {
                q.outcomes.push_front(row);
            }
            q.retry_at = Some(Instant::now() + pause);
        }
    }
}

/// Gives each sender of events its own back (`sizes` says how many each
/// sent), stored, or the error.
fn answer(
    all: Vec<NewEvent>,
    sizes: &[usize],
    replies: Vec<oneshot::Sender<Stored>>,
    stored: Result<(), BrokerError>,
) {
    if let Err(e) = &stored {
        for reply in replies {
            let _ = reply.send(Err(e.for_each_of_batch()));
        }
        return;
    }
    // Only the dispatcher sends events, one batch at a time, so this is
    // nearly always a single reply; the split keeps any number right.
    let mut all = all.into_iter();
    for (reply, &n) in replies.into_iter().zip(sizes) {
        let _ = reply.send(Ok(all.by_ref().take(n).collect()));
    }
}

fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(6));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for lane in [&self.events, &self.outcomes] {
            lane.lock().closed = true;
            lane.bell.notify_all();
        }
    }
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

    fn handle(&mut self, msg: Record, _: &mut Self::Context) {
        let mut q = self.outcomes.lock();
        q.outcomes.push_back((msg.attempt, msg.outcome));
        q.queued += 1;
        drop(q);
        self.outcomes.bell.notify_one();
    }
}

/// Accepted events and their deliveries, to be stored; answered with them
/// once they are committed, or with why they could not be.
#[derive(Message)]
#[rtype(result = "Result<Vec<NewEvent>, BrokerError>")]
pub struct Persist(pub Vec<NewEvent>);

impl Handler<Persist> for Recorder {
    type Result = ResponseFuture<Stored>;

    fn handle(&mut self, msg: Persist, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if msg.0.is_empty() {
            let _ = tx.send(Ok(msg.0));
        } else {
            self.events.lock().events.push((msg.0, tx));
            self.events.bell.notify_one();
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(BrokerError::Unavailable("the broker stopped".into())))
        })
    }
}

/// Resolves once every outcome queued before it is committed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Recorder {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let mut q = self.outcomes.lock();
        if q.committed >= q.queued {
            let _ = tx.send(());
        } else {
            let upto = q.queued;
            q.waiters.push((upto, tx));
        }
        drop(q);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
