//! The recorder owns the hot writes to the outbox: the events the
//! dispatcher accepts ([`Persist`]) and the outcomes the delivery actors
//! report ([`Record`]). Whatever of both arrived while the previous write
//! was under way goes into the next transaction together: one commit (one
//! fsync on SQLite) per round, and the delivery pages that an insert and the
//! outcomes of the deliveries just before it both touch written once. The
//! events are answered when their commit is done (or failed: then the
//! dispatcher refuses them and nothing was stored). Outcomes are written in
//! the order they arrived, inside a savepoint so they cannot cost the events
//! their commit; a round whose outcomes failed (say, while MariaDB
//! restarts) keeps them and tries again until they land, so an outcome is
//! never dropped. It runs on the system arbiter; the writes themselves run
//! on the blocking pool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel::r2d2::R2D2Connection;
use tokio::sync::oneshot;

use crate::db::deliveries::{AttemptOutcome, NewEvent};
use crate::db::models::AttemptRow;
use crate::db::{self, Pool};
use crate::error::BrokerError;

/// The most outcomes one transaction carries.
const MAX_OUTCOMES: usize = 1000;
/// The longest pause between two tries of failing outcomes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many outcomes may wait to be written before the delivery actors
/// start no new attempt. Sending faster than outcomes are written gains
/// nothing that lasts: everything sent but unwritten goes out again after a
/// crash, and a clean stop must write it all before it may exit. Two
/// transactions' worth keeps the writer busy.
pub const MAX_UNWRITTEN: usize = 2 * MAX_OUTCOMES;

/// The outcomes handed to the recorder and not yet committed, shared with
/// the delivery actors, which hold new attempts back while it is at
/// [`MAX_UNWRITTEN`].
#[derive(Debug, Default)]
pub struct Unwritten(AtomicUsize);

impl Unwritten {
    /// How many there are now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether the writes are so far behind the sends that no new attempt
    /// should start.
    pub fn behind(&self) -> bool {
        self.get() >= MAX_UNWRITTEN
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
        crate::metrics::metrics()
            .outcomes_unwritten
            .inc_by(n as i64);
    }

    fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
        crate::metrics::metrics()
            .outcomes_unwritten
            .dec_by(n as i64);
    }
}

/// A started recorder: its address, and its count of unwritten outcomes.
#[derive(Clone)]
pub struct RecorderHandle {
    /// Send [`Persist`], [`Record`] and [`Flush`] here.
    pub addr: Addr<Recorder>,
    /// The outcomes it has not written yet.
    pub unwritten: Arc<Unwritten>,
}

/// Each event of a [`Persist`], stored, or why not (when a batch fails as a
/// whole it is stored in parts, so one bad event fails alone).
pub type EachStored = Vec<Result<NewEvent, BrokerError>>;
type Stored = Result<EachStored, BrokerError>;

/// The recorder actor.
pub struct Recorder {
    pool: Pool,
    /// This instance, as its leases name it: outcomes are fenced by them.
    owner: String,
    outcomes: VecDeque<(AttemptRow, AttemptOutcome)>,
    events: Vec<(Vec<NewEvent>, oneshot::Sender<Stored>)>,
    /// Whether a transaction carrying events, or outcomes, is under way.
    writing_events: bool,
    writing_outcomes: bool,
    /// Failed outcome rounds in a row, and when outcomes may be tried again.
    failures: u32,
    retry_at: Option<Instant>,
    /// Callers of [`Flush`], each waiting for the outcomes queued before it.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Outcomes queued so far, and outcomes committed so far.
    queued: u64,
    committed: u64,
    unwritten: Arc<Unwritten>,
}

impl Recorder {
    /// A recorder writing through `pool` for the instance `owner`.
    pub fn new(pool: Pool, owner: String) -> Self {
        Recorder {
            pool,
            owner,
            outcomes: VecDeque::new(),
            events: Vec::new(),
            writing_events: false,
            writing_outcomes: false,
            failures: 0,
            retry_at: None,
            waiters: Vec::new(),
            queued: 0,
            committed: 0,
            unwritten: Arc::default(),
        }
    }

    /// Starts the recorder on the current arbiter.
    pub fn launch(self) -> RecorderHandle {
        let unwritten = self.unwritten.clone();
        RecorderHandle {
            addr: self.start(),
            unwritten,
        }
    }

    /// Starts writing what is waiting. On SQLite (one writer) events and
    /// outcomes share each transaction; on MySQL, whose row locks let
    /// writers run side by side, they go in two lanes of their own, so
    /// events are never queued behind a round trip for outcomes.
    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.pool.single_writer() {
            self.start(ctx, true, true);
        } else {
            self.start(ctx, true, false);
            self.start(ctx, false, true);
        }
    }

    /// Starts a transaction with what waits of events and/or outcomes,
    /// unless their lane is already writing (then they go in the next).
    fn start(&mut self, ctx: &mut Context<Self>, with_events: bool, with_outcomes: bool) {
        if (with_events && self.writing_events) || (with_outcomes && self.writing_outcomes) {
            return;
        }
        let events_waiting = with_events && !self.events.is_empty();
        let backing_off = self.retry_at.is_some_and(|at| Instant::now() < at);
        // Events are never held back: their senders are waiting for an
        // answer. Outcomes that failed wait out their backoff, unless events
        // make a transaction anyway.
        let n = if with_outcomes && (!backing_off || events_waiting) {
            self.outcomes.len().min(MAX_OUTCOMES)
        } else {
            0
        };
        if n == 0 && !events_waiting {
            return;
        }
        self.writing_events |= with_events;
        self.writing_outcomes |= with_outcomes;
        let outcomes: Vec<(AttemptRow, AttemptOutcome)> = self.outcomes.drain(..n).collect();
        let taken = if with_events {
            std::mem::take(&mut self.events)
        } else {
            Vec::new()
        };
        let (events, replies): (Vec<Vec<NewEvent>>, Vec<oneshot::Sender<Stored>>) =
            taken.into_iter().unzip();
        let sizes: Vec<usize> = events.iter().map(Vec::len).collect();
        let pool = self.pool.clone();
        let owner = self.owner.clone();
        let write = actix_web::web::block(move || {
            let mut all: Vec<NewEvent> = events.into_iter().flatten().collect();
            let mut isolated = None;
            let result = pool.get().map_err(BrokerError::from).and_then(|mut conn| {
                let _turn = pool.write_turn();
                let result =
                    db::deliveries::store_and_record(&mut conn, &mut all, &owner, &outcomes);
                drop(conn);
                // The database answers, yet refused the batch: something in
                // it is bad. Find what, so that only that fails.
                if result.is_err() && all.len() > 1 && reachable(&pool) {
                    isolated = Some(insert_isolating(&pool, &mut all));
                }
                Ok(result?)
            });
            (all, outcomes, result, isolated)
        });
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            if with_events {
                act.writing_events = false;
            }
            if with_outcomes {
                act.writing_outcomes = false;
            }
            let (all, outcomes, result, isolated) = match res {
                Ok(done) => done,
                Err(_) => {
                    log::error!("the blocking pool is gone; nothing more is written");
                    return;
                }
            };
            let (stored, recorded) = match result {
                Ok(recorded) => (Ok(()), recorded.map_err(|e| e.to_string())),
                Err(e) => {
                    let why = e.to_string();
                    (Err(e), Err(why))
                }
            };
            answer(all, &sizes, replies, stored, isolated);
            match recorded {
                Ok(done) => {
                    if done.fenced > 0 {
                        crate::metrics::metrics()
                            .outcomes_fenced
                            .inc_by(done.fenced as u64);
                    }
                    act.failures = 0;
                    act.retry_at = None;
                    act.committed += outcomes.len() as u64;
                    act.unwritten.sub(outcomes.len());
                    let committed = act.committed;
                    // Dropping a satisfied waiter's sender wakes it.
                    act.waiters.retain(|(upto, _)| *upto > committed);
                }
                Err(why) if !outcomes.is_empty() => {
                    crate::metrics::metrics().database_errors.inc();
                    act.failures += 1;
                    let pause = backoff(act.failures);
                    log::warn!(
                        "could not record {} delivery outcomes ({why}); retrying in {pause:?}",
                        outcomes.len()
                    );
                    for row in outcomes.into_iter().rev() {
                        act.outcomes.push_front(row);
                    }
                    act.retry_at = Some(Instant::now() + pause);
                    ctx.run_later(pause, |act, ctx| act.write(ctx));
                }
                Err(_) => {}
            }
            act.write(ctx);
        }));
    }
}

/// Gives each sender of events its own back (`sizes` says how many each
/// sent), stored, or the error: the batch's, or each event's own when the
/// batch was stored in parts (`isolated`).
fn answer(
    all: Vec<NewEvent>,
    sizes: &[usize],
    replies: Vec<oneshot::Sender<Stored>>,
    stored: Result<(), BrokerError>,
    isolated: Option<Vec<diesel::QueryResult<()>>>,
) {
    let each: Vec<Result<NewEvent, BrokerError>> = match (stored, isolated) {
        (Ok(()), _) => all.into_iter().map(Ok).collect(),
        (Err(_), Some(results)) => all
            .into_iter()
            .zip(results)
            .map(|(event, r)| r.map(|()| event).map_err(BrokerError::from))
            .collect(),
        (Err(e), None) => {
            for reply in replies {
                let _ = reply.send(Err(e.for_each_of_batch()));
            }
            return;
        }
    };
    // Only the dispatcher sends events, one batch at a time, so this is
    // nearly always a single reply; the split keeps any number right.
    let mut each = each.into_iter();
    for (reply, &n) in replies.into_iter().zip(sizes) {
        let _ = reply.send(Ok(each.by_ref().take(n).collect()));
    }
}

/// Whether the database answers at all (a fresh connection and a ping).
fn reachable(pool: &Pool) -> bool {
    pool.get().is_ok_and(|mut conn| conn.ping().is_ok())
}

/// Stores a batch that failed as a whole in parts, so that one event the
/// database refuses (one too large for MySQL's `max_allowed_packet`, after
/// which MariaDB also drops the connection) cannot fail its neighbours:
/// halves, each its own transaction on a fresh connection, down to single
/// events. Answers each event's result, in order.
fn insert_isolating(pool: &Pool, batch: &mut [NewEvent]) -> Vec<diesel::QueryResult<()>> {
    let tried = match pool.get() {
        Ok(mut conn) => db::deliveries::insert_events(&mut conn, batch),
        Err(e) => Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UnableToSendCommand,
            Box::new(e.to_string()),
        )),
    };
    match tried {
        Ok(()) => batch.iter().map(|_| Ok(())).collect(),
        Err(e) if batch.len() == 1 => vec![Err(e)],
        Err(_) => {
            let (a, b) = batch.split_at_mut(batch.len() / 2);
            let mut results = insert_isolating(pool, a);
            results.extend(insert_isolating(pool, b));
            results
        }
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
        self.outcomes.push_back((msg.attempt, msg.outcome));
        self.queued += 1;
        self.unwritten.add(1);
        self.write(ctx);
    }
}

/// Accepted events and their deliveries, to be stored; answered with each
/// once it is committed, or with why it could not be: one error for all
/// (the database is unreachable), or each event's own (the batch was
/// refused and stored in parts, so a bad event fails alone).
#[derive(Message)]
#[rtype(result = "Result<EachStored, BrokerError>")]
pub struct Persist(pub Vec<NewEvent>);

impl Handler<Persist> for Recorder {
    type Result = ResponseFuture<Stored>;

    fn handle(&mut self, msg: Persist, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if msg.0.is_empty() {
            let _ = tx.send(Ok(Vec::new()));
        } else {
            self.events.push((msg.0, tx));
        }
        self.write(ctx);
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

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.committed >= self.queued {
            let _ = tx.send(());
        } else {
            self.waiters.push((self.queued, tx));
            self.write(ctx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
