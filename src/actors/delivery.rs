//! A `WebhookDelivery` actor owns the delivery of everything due to one
//! webhook: its current target (URL and signing keys), its pending
//! deliveries held in one queue per channel, and their retry timers. Within
//! a channel only the oldest pending delivery is ever in flight or waiting
//! to retry, so a receiver sees a channel's events in the order the broker
//! accepted them; deliveries without a channel id are independent. Each
//! attempt is signed afresh, POSTed with the arbiter's shared `awc` client,
//! judged by [`crate::policy::decide`], and reported to the recorder; the
//! actor never touches the database itself. One actor runs per active
//! webhook, started on demand by the dispatcher on a delivery arbiter.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use actix_web::web::Bytes;
use rand::Rng;
use tokio::sync::oneshot;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::recorder::{Record, Recorder, Unwritten};
use super::registry::{DeliveryFailed, DeliveryTarget, DisableWebhook, Registry};
use crate::backlog::{
    split_channels_page, Admit, AfterPage, Clip, Cursor, DueChannels, Window, CHANNELS_PER_READ,
    CHANNEL_HOLD, CHANNEL_LOW,
};
use crate::db::deliveries::{AttemptOutcome, PendingDelivery};
use crate::db::models::{AttemptRow, DeliveryRow};
use crate::db::{self, now_ms, Pool};
use crate::domain::DeliveryStatus;
use crate::lease::Validity;
use crate::metrics::{metrics, OutcomeLabel};
use crate::policy::{self, Verdict};
use crate::signature;

/// What the broker says it is, in every request.
pub const USER_AGENT: &str = concat!("webhook-broker/", env!("CARGO_PKG_VERSION"));

/// The most of a receiver's response body the broker reads.
const MAX_RESPONSE_READ: usize = 64 * 1024;
/// The most of it kept in the attempt log.
const MAX_RESPONSE_KEPT: usize = 4 * 1024;

/// How deliveries are attempted; the same for every webhook.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// The delay before each retry.
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// BROKER_ALLOW_PRIVATE_TARGETS: whether a target may resolve to a
    /// private, loopback or link-local address.
    pub allow_private_targets: bool,
}

/// Where pending work lives beyond what the actors hold: the database, how
/// long this instance may go on sending under its leases, and the memory
/// budget that every delivery actor of the process shares.
#[derive(Debug)]
pub struct Outbox {
    /// The database.
    pub pool: Pool,
    /// Until when this instance's leases let it send ([`Validity`]).
    pub validity: Arc<Validity>,
    /// BROKER_MAX_IN_MEMORY: the most deliveries held in memory at once.
    pub max_in_memory: usize,
    /// How many are held now, by every actor together.
    pub in_memory: AtomicUsize,
    /// How many delivery actors are running (counted by the dispatcher as
    /// it starts them, so that a burst of starts shares the budget at once).
    pub actors: AtomicUsize,
    /// The outcomes not yet written: while the recorder is this far behind,
    /// no new attempt starts ([`crate::actors::recorder::MAX_UNWRITTEN`]).
    pub unwritten: Arc<Unwritten>,
}

impl Outbox {
    /// How many more an actor holding `held` may take into memory
    /// ([`crate::backlog::allowance`]).
    fn allowance(&self, held: usize) -> usize {
        crate::backlog::allowance(
            self.max_in_memory,
            self.in_memory.load(Ordering::Relaxed),
            self.actors.load(Ordering::Relaxed),
            held,
        )
    }
}

/// How many finished delivery ids an actor remembers (see `finished`).
const FINISHED_KEPT: usize = 4096;
/// The most deliveries one backlog page reads.
const PAGE: usize = 500;
/// A backlogged actor reads its next page when it holds fewer than this.
const LOW_WATER: usize = PAGE / 2;
/// How long to wait before reading again after a failed read, or while the
/// memory budget is used up.
const PAGE_RETRY: Duration = Duration::from_millis(500);
/// How long after a 410 an actor that was not stopped (the disable could
/// not be written) resumes its webhook's deliveries.
const GONE_RESUME: Duration = Duration::from_secs(5);
/// How long an attempt waits while this instance's leases are not known to
/// be current (a renewal is late: the database is slow or unreachable, or
/// the process was paused).
const LEASE_WAIT: Duration = Duration::from_millis(100);
/// How long held-back attempts wait before looking again whether the
/// recorder has caught up.
const RECORDER_WAIT: Duration = Duration::from_millis(20);

/// One delivery due to the actor's webhook.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// `msg_...`, also the `webhook-id` header.
    pub delivery_id: String,
    /// The channel whose order this delivery keeps, if any.
    pub channel_id: Option<String>,
    /// Its sequence number: the order within a channel.
    pub seq: i64,
    /// The exact body to POST; `None` while a long wait for the attempt
    /// lets it go ([`crate::backlog::sheds_body`]), read again when due.
    pub body: Option<Bytes>,
    /// Attempts already made.
    pub attempts_made: u32,
    /// When the next attempt is due, epoch ms.
    pub due_at: i64,
}

impl DeliveryJob {
    fn order_key(&self) -> Cursor {
        (self.seq, self.delivery_id.clone())
    }

    /// The job of a pending delivery read from the database.
    pub fn of_row(row: DeliveryRow, body: Bytes) -> DeliveryJob {
        DeliveryJob {
            delivery_id: row.id,
            channel_id: row.channel_id,
            seq: row.seq,
            body: Some(body),
            attempts_made: row.attempts.max(0) as u32,
            due_at: row.next_attempt_at,
        }
    }
}

/// The jobs of one channel, oldest first; only the first is ever active.
#[derive(Default)]
struct ChannelQueue {
    jobs: BTreeMap<(i64, String), DeliveryJob>,
    active: bool,
    /// When the active head's attempt is due, epoch ms.
    head_due: i64,
}

/// The delivery actor of one webhook.
pub struct WebhookDelivery {
    target: Arc<DeliveryTarget>,
    /// The epoch of the lease this actor sends under (`None`: a test to a
    /// disabled webhook, which nobody holds).
    epoch: Option<i64>,
    policy: Arc<DeliveryPolicy>,
    client: awc::Client,
    recorder: Addr<Recorder>,
    registry: Addr<Registry>,
    outbox: Arc<Outbox>,
    window: Window,
    aside: Vec<DeliveryJob>,
    page_timer: bool,
    channels: HashMap<String, ChannelQueue>,
    /// Channels held only up to a point ([`Clip`]), read on in pages of
    /// the clipped channels; what of them arrives during such a read waits
    /// here.
    clipped: HashMap<String, Clip>,
    clipped_aside: HashMap<String, Vec<DeliveryJob>>,
    /// Clipped channels due a read, in the order they came due: they hold
    /// few of their deliveries and wait for the read under way, for
    /// memory, or after a failed read (then the page timer tries them
    /// again).
    clipped_due: DueChannels,
    /// Whether a read of clipped channels is under way.
    reading_channels: bool,
    held: HashSet<String>,
    /// The last deliveries this actor finished, newest last: a page or a
    /// hand-off can bring one back before its outcome is written (with
    /// several instances, a page may read what the dispatcher also hands
    /// over), and it must not be sent twice. Keyed by `(seq, id)`: a retry
    /// or recover gives the delivery a new number, and then it goes again.
    finished: HashSet<Cursor>,
    finished_order: VecDeque<Cursor>,
    in_flight: usize,
    /// Due deliveries held back by the webhook's rate limit or concurrency
    /// cap, in the order they became due (each a different channel's head).
    throttled: VecDeque<DeliveryJob>,
    /// When the attempts of the last second started (for the rate limit).
    recent: VecDeque<Instant>,
    throttle_timer: bool,
    draining: bool,
    drained: Vec<oneshot::Sender<()>>,
    /// A short-lived actor of a disabled webhook making one test attempt:
    /// no retry, no disabling, and it stops when the attempt is recorded.
    once: bool,
}

impl WebhookDelivery {
    /// Must be called on the arbiter the actor will run on.
    pub fn new(
        target: Arc<DeliveryTarget>,
        epoch: Option<i64>,
        policy: Arc<DeliveryPolicy>,
        recorder: Addr<Recorder>,
        registry: Addr<Registry>,
        outbox: Arc<Outbox>,
    ) -> Self {
        // One SSRF-guarded client per arbiter thread, shared by every
        // delivery actor on it so connections are pooled and kept alive.
        let client = crate::ssrf::delivery_client(policy.allow_private_targets);
        WebhookDelivery {
            target,
            epoch,
            policy,
            client,
            recorder,
            registry,
            outbox,
            window: Window::new(),
            aside: Vec::new(),
            page_timer: false,
            channels: HashMap::new(),
            clipped: HashMap::new(),
            clipped_aside: HashMap::new(),
            clipped_due: DueChannels::default(),
            reading_channels: false,
            held: HashSet::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            in_flight: 0,
            throttled: VecDeque::new(),
            recent: VecDeque::new(),
            throttle_timer: false,
            draining: false,
            drained: Vec::new(),
            once: false,
        }
    }

    /// A delivery handed over at ingest: held, kept aside or left in the
    /// database, as the window rule says.
    fn admit(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        let room = self.outbox.allowance(self.held.len()) > 0;
        match self.window.admit(&job.order_key(), room) {
            Admit::Hold => self.accept(job, ctx),
            Admit::Aside => self.aside.push(job),
            Admit::Leave => {}
        }
        self.read_page_if_due(ctx);
    }

    /// Reads the next page of the webhook's backlog when the window wants
    /// one and the memory budget has room.
    fn read_page_if_due(&mut self, ctx: &mut Context<Self>) {
        if self.draining || !self.window.wants_page(self.held.len(), LOW_WATER) {
            return;
        }
        let limit = self.outbox.allowance(self.held.len()).min(PAGE);
        if limit == 0 {
            self.retry_page_later(ctx);
            return;
        }
        let after = self.window.start_page();
        let webhook_id = self.target.webhook_id.clone();
        let read = move |conn: &mut db::DbConn| {
            db::deliveries::read_page(conn, &webhook_id, after.as_ref(), limit as i64)
        };
        self.read_rows(limit, read, ctx, move |res, act, ctx| {
            let page: Vec<PendingDelivery> = match res {
                Ok(page) => page,
                Err(e) => {
                    log::warn!(
                        "could not read the backlog of webhook {}: {e}",
                        act.target.webhook_id
                    );
                    // What was kept aside is in the database: the next page
                    // brings it back.
                    act.window.page_failed();
                    act.aside.clear();
                    act.retry_page_later(ctx);
                    return;
                }
            };
            let full = page.len() >= limit;
            let last = page.last().map(|p| (p.delivery.seq, p.delivery.id.clone()));
            for PendingDelivery {
                delivery: row,
                payload: body,
            } in page
            {
                act.accept(DeliveryJob::of_row(row, Bytes::from(body)), ctx);
            }
            // Either the backlog is over (a short page) and everything kept
            // aside came after it, or more waits and only what falls inside
            // the held stretch stays: the same admission rule says both.
            let _: AfterPage = act.window.page_read(last, full);
            for job in std::mem::take(&mut act.aside) {
                if act.window.admit(&job.order_key(), true) == Admit::Hold {
                    act.accept(job, ctx);
                }
            }
            act.read_page_if_due(ctx);
        });
    }

    /// Reads up to `limit` pending deliveries with `query` on the blocking
    /// pool, then hands them (or why not) to `done` back on the actor. The
    /// `limit` is reserved in the shared budget until the rows are in, so
    /// that reads under way at once cannot together overrun it.
    fn read_rows(
        &mut self,
        limit: usize,
        query: impl FnOnce(&mut db::DbConn) -> diesel::QueryResult<Vec<PendingDelivery>>
            + Send
            + 'static,
        ctx: &mut Context<Self>,
        done: impl FnOnce(Result<Vec<PendingDelivery>, String>, &mut Self, &mut Context<Self>) + 'static,
    ) {
        self.outbox.in_memory.fetch_add(limit, Ordering::Relaxed);
        let outbox = self.outbox.clone();
        let read = actix_web::web::block(move || {
            let mut conn = outbox.pool.get().map_err(|e| e.to_string())?;
            query(&mut conn).map_err(|e| e.to_string())
        });
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
            act.outbox.in_memory.fetch_sub(limit, Ordering::Relaxed);
            let rows = match res {
                Ok(rows) => rows,
                Err(e) => Err(e.to_string()),
            };
            done(rows, act, ctx);
        }));
    }

    fn retry_page_later(&mut self, ctx: &mut Context<Self>) {
        if self.page_timer {
            return;
        }
        self.page_timer = true;
        ctx.run_later(PAGE_RETRY, |act, ctx| {
            act.page_timer = false;
            act.read_page_if_due(ctx);
            act.read_channels_if_due(ctx);
        });
    }

    /// Marks a clipped channel due a read once it holds few of its
    /// deliveries.
    fn note_channel_due(&mut self, channel: &str) {
        let queued = self.channels.get(channel).map_or(0, |q| q.jobs.len());
        if self
            .clipped
            .get(channel)
            .is_some_and(|clip| !clip.is_reading() && queued <= CHANNEL_LOW)
        {
            self.clipped_due.insert(channel);
        }
    }

    /// Reads on in the clipped channels that are due, together, one read at
    /// a time ([`crate::backlog::split_channels_page`]).
    fn read_channels_if_due(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.reading_channels || self.clipped_due.is_empty() {
            return;
        }
        let (channels, clipped) = (&self.channels, &self.clipped);
        let queued = |channel: &str| channels.get(channel).map_or(0, |q| q.jobs.len());
        let taken = self.clipped_due.take(CHANNELS_PER_READ, |channel| {
            clipped
                .get(channel)
                .is_some_and(|clip| !clip.is_reading() && queued(channel) <= CHANNEL_LOW)
        });
        let rooms: HashMap<String, (Cursor, usize)> = taken
            .iter()
            .map(|channel| {
                let after = self.clipped[channel].after().clone();
                (channel.clone(), (after, CHANNEL_HOLD - queued(channel)))
            })
            .collect();
        // The walk starts at the smallest clip.
        let Some(from) = rooms.values().map(|(after, _)| after).min().cloned() else {
            return;
        };
        let wanted: usize = rooms.values().map(|(_, room)| room).sum();
        let limit = self.outbox.allowance(self.held.len()).min(wanted).min(PAGE);
        if limit == 0 {
            self.clipped_due.put_back(taken);
            self.retry_page_later(ctx);
            return;
        }
        for channel in rooms.keys() {
            if let Some(clip) = self.clipped.get_mut(channel) {
                clip.start_read();
            }
        }
        self.reading_channels = true;
        let webhook_id = self.target.webhook_id.clone();
        let channel_ids: Vec<String> = rooms.keys().cloned().collect();
        let read = move |conn: &mut db::DbConn| {
            let ids: Vec<&str> = channel_ids.iter().map(String::as_str).collect();
            db::deliveries::read_channels_page(conn, &webhook_id, &ids, &from, limit as i64)
        };
        self.read_rows(limit, read, ctx, move |res, act, ctx| {
            act.reading_channels = false;
            let mut aside: HashMap<String, Vec<DeliveryJob>> = rooms
                .keys()
                .filter_map(|c| act.clipped_aside.remove(c).map(|jobs| (c.clone(), jobs)))
                .collect();
            let page: Vec<PendingDelivery> = match res {
                Ok(page) => page,
                Err(e) => {
                    log::warn!(
                        "could not read on in {} clipped channels of webhook {}: {e}",
                        rooms.len(),
                        act.target.webhook_id
                    );
                    // What was kept aside is in the database, past the clips.
                    for channel in rooms.keys() {
                        if let Some(clip) = act.clipped.get_mut(channel) {
                            clip.read_failed();
                            act.clipped_due.insert(channel);
                        }
                    }
                    act.retry_page_later(ctx);
                    return;
                }
            };
            let full = page.len() >= limit;
            let keys: Vec<Cursor> = page
                .iter()
                .map(|p| (p.delivery.seq, p.delivery.id.clone()))
                .collect();
            let (take, ends) = split_channels_page(
                &rooms,
                page.iter()
                    .zip(&keys)
                    .map(|(p, key)| (p.delivery.channel_id.as_deref().unwrap_or(""), key)),
                full,
            );
            let mut unclipped = Vec::new();
            for (channel, end) in ends {
                let Some(clip) = act.clipped.get_mut(&channel) else {
                    continue;
                };
                if !clip.read(Some(end.after), end.still_clipped) {
                    act.clipped.remove(&channel);
                    unclipped.push(channel);
                }
            }
            for (row, take) in page.into_iter().zip(take) {
                if take {
                    let PendingDelivery {
                        delivery: row,
                        payload: body,
                    } = row;
                    act.hold(DeliveryJob::of_row(row, Bytes::from(body)), ctx);
                }
            }
            // The read took in everything of these channels that was there:
            // what was kept aside came after it. Of the others, what was
            // kept aside is in the database past their clips.
            for channel in unclipped {
                for job in aside.remove(&channel).unwrap_or_default() {
                    act.accept(job, ctx);
                }
            }
            for channel in rooms.keys() {
                act.note_channel_due(channel);
            }
            act.read_channels_if_due(ctx);
        });
    }

    /// Takes a delivery handed over or read in a page of the webhook: held,
    /// unless its channel already holds as many as it may ([`Clip`]).
    fn accept(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        if let Some(channel) = job.channel_id.as_deref() {
            if let Some(clip) = self.clipped.get(channel) {
                match clip.admit(&job.order_key()) {
                    Admit::Hold => {}
                    Admit::Aside => {
                        self.clipped_aside
                            .entry(channel.to_owned())
                            .or_default()
                            .push(job);
                        return;
                    }
                    Admit::Leave => return,
                }
            } else if let Some(queue) = self.channels.get(channel) {
                if queue.jobs.len() >= CHANNEL_HOLD && !self.held.contains(&job.delivery_id) {
                    let key = job.order_key();
                    if let Some(last) = queue.jobs.keys().next_back().filter(|last| &key > *last) {
                        // Left in the database, with the rest of the
                        // channel past its last held delivery.
                        self.clipped
                            .insert(channel.to_owned(), Clip::at(last.clone()));
                        return;
                    }
                }
            }
        }
        self.hold(job, ctx);
    }

    /// Holds a delivery in its channel's queue (or schedules it, without
    /// a channel).
    fn hold(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        // The same delivery can arrive twice (a page re-reading what is
        // held, a requeue racing a claim); holding it once keeps it to one
        // attempt at a time.
        if self.finished.contains(&job.order_key()) || !self.held.insert(job.delivery_id.clone()) {
            return;
        }
        self.outbox.in_memory.fetch_add(1, Ordering::Relaxed);
        metrics().deliveries_pending.inc();
        match job.channel_id.clone() {
            None => self.schedule(job, ctx),
            Some(channel) => {
                let queue = self.channels.entry(channel.clone()).or_default();
                let mut job = job;
                if queue.active && crate::backlog::sheds_body(queue.head_due - now_ms()) {
                    // It waits behind a head that waits long.
                    job.body = None;
                }
                queue.jobs.insert(job.order_key(), job);
                self.activate(&channel, ctx);
            }
        }
    }

    /// Starts the oldest job of a channel unless one is already active.
    fn activate(&mut self, channel: &str, ctx: &mut Context<Self>) {
        let Some(queue) = self.channels.get_mut(channel) else {
            return;
        };
        if queue.active {
            return;
        }
        let Some((_, head)) = queue.jobs.first_key_value() else {
            self.channels.remove(channel);
            return;
        };
        let head = head.clone();
        queue.active = true;
        self.schedule(head, ctx);
    }

    /// A job is finished (succeeded or failed for good): let its channel go on.
    fn release(&mut self, job: &DeliveryJob, ctx: &mut Context<Self>) {
        if self.finished.insert(job.order_key()) {
            self.finished_order.push_back(job.order_key());
            if self.finished_order.len() > FINISHED_KEPT {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
        if self.held.remove(&job.delivery_id) {
            self.outbox.in_memory.fetch_sub(1, Ordering::Relaxed);
            metrics().deliveries_pending.dec();
        }
        if let Some(channel) = &job.channel_id {
            if let Some(queue) = self.channels.get_mut(channel) {
                queue.jobs.remove(&job.order_key());
                queue.active = false;
            }
            let channel = channel.clone();
            self.activate(&channel, ctx);
            self.note_channel_due(&channel);
            self.read_channels_if_due(ctx);
        }
        self.read_page_if_due(ctx);
    }

    fn schedule(&mut self, mut job: DeliveryJob, ctx: &mut Context<Self>) {
        let wait = job.due_at - now_ms();
        let shed = crate::backlog::sheds_body(wait);
        if shed {
            // Nothing of the channel goes before its head: the bodies
            // queued behind it wait at least as long.
            job.body = None;
        }
        if let Some(queue) = job
            .channel_id
            .as_ref()
            .and_then(|c| self.channels.get_mut(c))
        {
            queue.head_due = job.due_at;
            if shed {
                for queued in queue.jobs.values_mut() {
                    queued.body = None;
                }
            }
        }
        if wait > 0 {
            ctx.run_later(Duration::from_millis(wait as u64), move |act, ctx| {
                act.attempt(job, ctx)
            });
        } else {
            self.attempt(job, ctx);
        }
    }

    fn attempt(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        if self.draining {
            // Left pending in the database for the next run.
            return;
        }
        if self.epoch.is_some() && !self.outbox.validity.valid() {
            // Another instance may own the webhook by now: send nothing
            // until a renewal says the lease is still this one's (or the
            // dispatcher stops this actor because it is not).
            ctx.run_later(LEASE_WAIT, move |act, ctx| act.attempt(job, ctx));
            return;
        }
        if job.body.is_none() {
            self.read_body(job, ctx);
            return;
        }
        let behind = self.outbox.unwritten.behind();
        if behind || !self.throttled.is_empty() || self.throttle_wait(Instant::now()).is_some() {
            if !behind {
                metrics().deliveries_throttled.inc();
            }
            self.throttled.push_back(job);
            self.release_throttled(ctx);
            return;
        }
        self.send(job, ctx);
    }

    /// Reads the body of a job that let it go during a long wait, then
    /// attempts it. A delivery no longer in the database (its webhook was
    /// deleted, or the delivery pruned) is let go.
    fn read_body(&mut self, mut job: DeliveryJob, ctx: &mut Context<Self>) {
        let outbox = self.outbox.clone();
        let id = job.delivery_id.clone();
        let read = actix_web::web::block(move || {
            let mut conn = outbox.pool.get().map_err(|e| e.to_string())?;
            db::deliveries::payload_of(&mut conn, &id).map_err(|e| e.to_string())
        });
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Ok(Some(payload))) => {
                metrics().bodies_read_again.inc();
                job.body = Some(Bytes::from(payload));
                act.attempt(job, ctx);
            }
            Ok(Ok(None)) => {
                log::info!(
                    "delivery {} of webhook {} is no longer stored; not sending it",
                    job.delivery_id,
                    act.target.webhook_id
                );
                act.release(&job, ctx);
            }
            failed => {
                if let Ok(Err(e)) = failed {
                    log::warn!(
                        "could not read the body of delivery {}: {e}",
                        job.delivery_id
                    );
                }
                ctx.run_later(PAGE_RETRY, move |act, ctx| act.attempt(job, ctx));
            }
        }));
    }

    /// Why the next attempt may not start at `now`: `Some(None)` at the
    /// concurrency cap (an attempt finishing frees a place), `Some(Some(t))`
    /// at the rate limit until `t`; `None` if it may.
    fn throttle_wait(&mut self, now: Instant) -> Option<Option<Instant>> {
        let throttle = self.target.throttle;
        if self.in_flight >= throttle.max_concurrency as usize {
            return Some(None);
        }
        let rate = throttle.rate_limit?;
        crate::domain::rate_slot(&mut self.recent, rate, now)
            .err()
            .map(Some)
    }

    /// Starts held-back deliveries while the throttle allows, oldest first;
    /// when the rate limit stops it, or the recorder is behind, looks again
    /// when the next slot opens, or a little later.
    fn release_throttled(&mut self, ctx: &mut Context<Self>) {
        while !self.throttled.is_empty() && !self.draining {
            if self.outbox.unwritten.behind() {
                self.look_again_at(Instant::now() + RECORDER_WAIT, ctx);
                return;
            }
            match self.throttle_wait(Instant::now()) {
                None => {
                    let job = self.throttled.pop_front().expect("not empty");
                    self.send(job, ctx);
                }
                Some(None) => return,
                Some(Some(at)) => {
                    self.look_again_at(at, ctx);
                    return;
                }
            }
        }
    }

    /// Releases held-back deliveries at `at` (one timer at a time).
    fn look_again_at(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if self.throttle_timer {
            return;
        }
        self.throttle_timer = true;
        let wait = at.saturating_duration_since(Instant::now());
        ctx.run_later(wait, |act, ctx| {
            act.throttle_timer = false;
            act.release_throttled(ctx);
        });
    }

    fn send(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        if self.epoch.is_some() && !self.outbox.validity.valid() {
            ctx.run_later(LEASE_WAIT, move |act, ctx| act.attempt(job, ctx));
            return;
        }
        if self.target.throttle.rate_limit.is_some() {
            self.recent.push_back(Instant::now());
        }
        self.in_flight += 1;
        metrics().deliveries_in_flight.inc();
        let timestamp = now_ms() / 1000;
        let keys = self.target.keys_at(now_ms());
        let body = job.body.clone().expect("attempt() reads the body first");
        let signature = signature::signature_header(&keys, &job.delivery_id, timestamp, &body);
        let mut request = self
            .client
            .post(self.target.url.as_str())
            .timeout(self.policy.timeout)
            .insert_header(("content-type", "application/json"))
            .insert_header(("user-agent", USER_AGENT))
            .insert_header(("webhook-id", job.delivery_id.as_str()))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header(("webhook-signature", signature));
        // Their names never clash with the broker's own (they are refused).
        for (name, value) in &self.target.headers {
            request = request.insert_header((name.clone(), value.clone()));
        }
        let started_at = now_ms();
        let clock = Instant::now();
        let send = async move {
            match request.send_body(body).await {
                Ok(mut response) => {
                    let code = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| policy::parse_retry_after(v, SystemTime::now()));
                    let text = response
                        .body()
                        .limit(MAX_RESPONSE_READ)
                        .await
                        .ok()
                        .map(|b| truncate_utf8(&b, MAX_RESPONSE_KEPT));
                    Sent {
                        status_code: Some(code),
                        retry_after,
                        error: None,
                        response_body: text,
                    }
                }
                Err(e) => Sent {
                    status_code: None,
                    retry_after: None,
                    error: Some(e.to_string()),
                    response_body: None,
                },
            }
        };
        ctx.spawn(send.into_actor(self).map(move |sent, act, ctx| {
            act.in_flight -= 1;
            metrics().deliveries_in_flight.dec();
            act.finish(job, started_at, clock.elapsed(), sent, ctx);
            act.release_throttled(ctx);
            if act.once && act.in_flight == 0 {
                ctx.stop();
            }
            if act.draining && act.in_flight == 0 {
                for tx in act.drained.drain(..) {
                    let _ = tx.send(());
                }
            }
        }));
    }

    fn finish(
        &mut self,
        mut job: DeliveryJob,
        started_at: i64,
        took: Duration,
        sent: Sent,
        ctx: &mut Context<Self>,
    ) {
        let attempt_no = job.attempts_made + 1;
        let verdict = match policy::decide(
            &self.policy.retry_schedule,
            attempt_no,
            sent.status_code,
            sent.retry_after,
            rand::thread_rng().gen_range(-1.0..=1.0),
        ) {
            // The one attempt of a test to a disabled webhook: whatever
            // went wrong, it is over, and the webhook is left as it is.
            Verdict::Retry(_) | Verdict::Gone if self.once => Verdict::Failed,
            verdict => verdict,
        };
        let error = match (&sent.error, sent.status_code) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(code)) if verdict != Verdict::Succeeded => {
                Some(format!("receiver answered HTTP {code}"))
            }
            _ => None,
        };
        // When the attempt ended, by the same two readings its attempt row
        // keeps (`at`, `duration_ms`): a success's row leaves the time out,
        // and the log reads it back from the attempt
        // (`db::deliveries::is_plain_success`).
        let now = started_at + took.as_millis() as i64;
        let outcome = match verdict {
            Verdict::Succeeded => AttemptOutcome {
                webhook_id: self.target.webhook_id.clone(),
                status: DeliveryStatus::Succeeded,
                next_attempt_at: now,
                delivered_at: Some(now),
                epoch: self.epoch,
            },
            Verdict::Retry(delay) => AttemptOutcome {
                webhook_id: self.target.webhook_id.clone(),
                status: DeliveryStatus::Pending,
                next_attempt_at: now + delay.as_millis() as i64,
                delivered_at: None,
                epoch: self.epoch,
            },
            Verdict::Failed => AttemptOutcome {
                webhook_id: self.target.webhook_id.clone(),
                status: DeliveryStatus::Failed,
                next_attempt_at: now,
                delivered_at: None,
                epoch: self.epoch,
            },
            // Kept pending, due at once, for when the webhook is enabled again.
            Verdict::Gone => AttemptOutcome {
                webhook_id: self.target.webhook_id.clone(),
                status: DeliveryStatus::Pending,
                next_attempt_at: now,
                delivered_at: None,
                epoch: self.epoch,
            },
        };
        let label = match verdict {
            Verdict::Succeeded => "succeeded",
            Verdict::Retry(_) | Verdict::Gone => "retried",
            Verdict::Failed => "failed",
        };
        metrics()
            .delivery_outcomes
            .get_or_create(&OutcomeLabel { outcome: label })
            .inc();
        metrics().attempt_duration.observe(took.as_secs_f64());
        log::debug!(
            "delivery {} to webhook {} attempt {attempt_no}: {verdict:?}",
            job.delivery_id,
            self.target.webhook_id
        );
        self.recorder.do_send(Record {
            attempt: AttemptRow {
                delivery_id: job.delivery_id.clone(),
                attempt: attempt_no as i32,
                at: started_at,
                duration_ms: took.as_millis() as i64,
                status_code: sent.status_code.map(i32::from),
                error,
                response_body: sent.response_body,
            },
            outcome: outcome.clone(),
        });
        job.attempts_made = attempt_no;
        job.due_at = outcome.next_attempt_at;
        match verdict {
            Verdict::Succeeded => self.release(&job, ctx),
            Verdict::Retry(_) => self.schedule(job, ctx),
            Verdict::Failed if self.once => self.release(&job, ctx),
            Verdict::Failed => {
                self.release(&job, ctx);
                self.registry.do_send(DeliveryFailed {
                    webhook_id: self.target.webhook_id.clone(),
                });
            }
            Verdict::Gone => {
                // The registry disables the webhook and the dispatcher then
                // stops this actor; nothing more is sent meanwhile.
                self.draining = true;
                self.registry.do_send(DisableWebhook {
                    webhook_id: self.target.webhook_id.clone(),
                    reason: "the receiver answered 410 Gone".into(),
                });
                // Still running later means the disable could not be
                // written: the webhook is enabled, so its deliveries go on
                // (read again from the database) rather than wait forever.
                ctx.run_later(GONE_RESUME, move |act, ctx| {
                    act.draining = false;
                    act.schedule(job, ctx);
                    act.window.read_from_start();
                    act.read_page_if_due(ctx);
                });
            }
        }
    }
}

struct Sent {
    status_code: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
    response_body: Option<String>,
}

/// At most `max` bytes of `bytes` as text, cut at a character boundary so
/// the kept part is only what the receiver sent.
fn truncate_utf8(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Actor for WebhookDelivery {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.outbox.actors.fetch_sub(1, Ordering::Relaxed);
        // What it held stays pending in the database, but not here.
        metrics().deliveries_pending.dec_by(self.held.len() as i64);
        self.outbox
            .in_memory
            .fetch_sub(self.held.len(), Ordering::Relaxed);
        metrics().deliveries_in_flight.dec_by(self.in_flight as i64);
    }
}

/// Takes a delivery; it is attempted when due and when its channel's
/// earlier deliveries are done.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub DeliveryJob);

impl Handler<Deliver> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.admit(msg.0, ctx);
    }
}

/// Makes one attempt of a test delivery to a disabled webhook, on a
/// short-lived actor of its own (a disabled webhook has none): the attempt is
/// signed, sent and recorded like any other, but is not retried, does not
/// count towards disabling the webhook (a 410 does not disable it either),
/// and the actor stops once the outcome is with the recorder. The dispatcher
/// never hands this actor anything else.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DeliverOnce(pub DeliveryJob);

impl Handler<DeliverOnce> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, msg: DeliverOnce, ctx: &mut Self::Context) {
        self.once = true;
        let mut job = msg.0;
        job.due_at = now_ms();
        self.accept(job, ctx);
    }
}

/// Pending deliveries of this webhook may be in the database at any
/// position, not held by this actor (at start, after another instance's
/// lease lapsed, on a resume or a requeue): read them in pages, from the
/// beginning, in order.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReadBacklog;

impl Handler<ReadBacklog> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, _: ReadBacklog, ctx: &mut Self::Context) {
        self.window.read_from_start();
        self.read_page_if_due(ctx);
    }
}

/// Deliveries of this webhook past what the actor holds were committed by
/// another instance, or requeued: read on from the cursor, in pages. Sent
/// before any delivery handed over after them, so none of those jumps
/// ahead of them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MoreInDatabase;

impl Handler<MoreInDatabase> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, _: MoreInDatabase, ctx: &mut Self::Context) {
        self.window.more_in_database();
        self.read_page_if_due(ctx);
    }
}

/// Points the actor at a changed webhook (new URL, keys or headers): the
/// next attempt uses them.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retarget(pub Arc<DeliveryTarget>);

impl Handler<Retarget> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, msg: Retarget, _: &mut Self::Context) {
        self.target = msg.0;
    }
}

/// Stops the actor: its webhook was disabled or deleted, its lease was lost
/// or given back, or the broker is stopping. Its timers stop with it and
/// what it held stays pending in the database.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Stops starting attempts and resolves once the attempts in flight have
/// finished (their outcomes are then with the recorder).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for WebhookDelivery {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let (tx, rx) = oneshot::channel();
        if self.in_flight == 0 {
            let _ = tx.send(());
        } else {
            self.drained.push(tx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_utf8;

    #[test]
    fn a_kept_response_body_is_cut_at_a_character_boundary() {
        let euro = "€".repeat(3333);
        let kept = truncate_utf8(euro.as_bytes(), 4096);
        assert!(kept.len() <= 4096);
        assert_eq!(kept.len(), 4095);
        assert!(kept.chars().all(|c| c == '€'));
        assert_eq!(truncate_utf8(b"short", 4096), "short");
    }
}
