//! The dispatcher owns the hand-off from an accepted channel event to the
//! per-webhook delivery actors, and this instance's webhook leases.
//!
//! Ingest is group-committed: [`ChannelEvent`]s that arrive while a batch is
//! being written wait in the next batch, so one transaction (one fsync)
//! carries every event that arrived together. For a batch the dispatcher
//! asks the registry which webhooks match, has the recorder commit the
//! events and one delivery per webhook (numbered by the database's event
//! sequence), and only then hands the deliveries of the webhooks whose
//! lease it holds to their actors, in sequence order, and answers the
//! senders: an acknowledged event is durable. Deliveries of webhooks held
//! by another instance stay in the database for their owner.
//!
//! Leases ([`crate::lease`] has the rules): it claims its fair share at
//! start and then every [`claim_every`], renews what it holds every lease/3,
//! stops the actor of a lease it lost, gives leases back when more
//! instances share the work, and all of them at a clean stop. It also keeps
//! `covered`, the sequence number up to which it knows every delivery: a
//! stretch numbered by other instances (seen as a gap before its own batch,
//! or by polling the sequence every [`POLL_EVERY`] when idle) is searched
//! for webhooks it holds, whose actors then read on from the database
//! before anything handed over after.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web::Bytes;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::delivery::{
    Deliver, DeliverOnce, DeliveryJob, DeliveryPolicy, Drain, MoreInDatabase, Outbox, ReadBacklog,
    Retarget, Stop, WebhookDelivery,
};
use super::recorder::{Flush, Persist, Recorder, RecorderHandle};
use super::registry::{DeliveryTarget, MatchBatch, Registry, Targets, WebhookChanged};
use crate::db::deliveries::NewEvent;
use crate::db::models::{DeliveryRow, EventRow};
use crate::db::{self, now_ms, Pool};
use crate::domain::DeliveryStatus;
use crate::domain::EventKind;
use crate::error::BrokerError;
use crate::lease::{self, Lease, Plan, Validity};

/// The most events one ingest transaction carries.
const MAX_BATCH: usize = 1000;
/// How long an in-process idempotency key is kept unless configured.
const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(86_400);

/// How often the sequence is polled for deliveries other instances
/// committed, while no batch of this instance's own is being written.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Who this instance is and how long its leases last.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The owner this instance writes in `webhook_leases`.
    pub owner: String,
    /// How long a lease lasts unrenewed.
    pub lease: Duration,
}

/// A start with at most this many webhooks takes every lease it is owed
/// before it serves (on SQLite, 10,000 lease rows written in about 40 ms);
/// with more, it takes those with deliveries pending first and the rest
/// right after (`db::leases::claim_with_pending`).
pub const START_ALL: usize = 10_000;

/// How often a claim round runs: often enough that a lapsed lease is taken
/// over well within a lease period, and a new webhook gets an owner
/// quickly; at most every second, since a round costs a few small queries.
pub fn claim_every(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Which of this instance's webhooks another instance's deliveries reached.
enum Stretch {
    /// These webhooks (maybe none).
    Found(Vec<String>),
    /// The search failed: any of them may have.
    Unknown,
}

type Reply = oneshot::Sender<Result<EventAccepted, BrokerError>>;

/// A lease this instance holds. Its webhook id is shared (`Arc<str>`):
/// with 100,000 leases, a renewal's copy of what is held then costs one
/// pointer per lease, not one string.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// No actor, no pending delivery when the lease was taken, and none put
    /// in the database since by anyone but this dispatcher's own
    /// hand-overs: its actor starts with its first delivery, with nothing
    /// to read. An idle webhook costs no actor and no read (100,000 of them
    /// at start, or an event reaching 10,000 at once). Anything that may
    /// have left deliveries for one in the database (another instance's
    /// commit, a requeue, an enable) clears it and starts the actor reading
    /// from the start.
    known_empty: bool,
}

/// The dispatcher actor.
pub struct Dispatcher {
    registry: Addr<Registry>,
    recorder: Addr<Recorder>,
    pool: Pool,
    policy: Arc<DeliveryPolicy>,
    leases: LeaseConfig,
    outbox: Arc<Outbox>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    actors: HashMap<String, Addr<WebhookDelivery>>,
    /// The leases this instance holds.
    held: HashMap<Arc<str>, Held>,
    /// Held leases being given back: their actors drain first.
    giving_back: HashSet<String>,
    /// Webhooks announced disabled or deleted: a batch matched before the
    /// announcement must not start an actor for them with the old target.
    stopped: HashSet<String>,
    /// Webhooks whose deliveries this instance committed but handed to no
    /// actor since the current claim round began (their lease was not held
    /// yet): a webhook claimed in that round may have them pending.
    unhanded: HashSet<String>,
    claim_again: bool,
    /// The leases this instance held before a restart that the start-up
    /// claim has not taken back yet (it takes those with work pending
    /// first, the rest in the round after).
    own_left: bool,
    /// A clean stop waiting for the claim round under way: its leases (and
    /// its census row) must be committed before they are all given back.
    claim_waiters: Vec<oneshot::Sender<()>>,
    validity: Arc<Validity>,
    /// Every delivery numbered up to this is known to this instance.
    covered: i64,
    claiming: bool,
    renewing: bool,
    started: bool,
    batch: Vec<(ChannelEvent, Reply)>,
    writing: bool,
    draining: bool,
    idempotency_ttl: Duration,
}

impl Dispatcher {
    /// A dispatcher that starts delivery actors on `arbiters`.
    pub fn new(
        registry: Addr<Registry>,
        recorder: RecorderHandle,
        pool: Pool,
        policy: Arc<DeliveryPolicy>,
        leases: LeaseConfig,
        max_in_memory: usize,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        assert!(!arbiters.is_empty(), "at least one delivery arbiter");
        let validity = Arc::new(Validity::new(leases.lease));
        let outbox = Arc::new(Outbox {
            pool: pool.clone(),
            validity: validity.clone(),
            max_in_memory,
            in_memory: Default::default(),
            actors: Default::default(),
            unwritten: recorder.unwritten,
        });
        Dispatcher {
            outbox,
            registry,
            recorder: recorder.addr,
            pool,
            policy,
            leases,
            arbiters,
            next_arbiter: 0,
            actors: HashMap::new(),
            held: HashMap::new(),
            giving_back: HashSet::new(),
            stopped: HashSet::new(),
            unhanded: HashSet::new(),
            claim_again: false,
            own_left: true,
            claim_waiters: Vec::new(),
            validity,
            covered: 0,
            claiming: false,
            renewing: false,
            started: false,
            batch: Vec::new(),
            writing: false,
            draining: false,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
        }
    }

    /// How long the idempotency key of a [`ChannelEvent`] is kept
    /// (BROKER_IDEMPOTENCY_TTL; 24 h unless set).
    pub fn with_idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    fn lease_ms(&self) -> i64 {
        self.leases.lease.as_millis() as i64
    }

    /// The running actor of a webhook whose lease this instance holds,
    /// started on demand; `None` for a webhook another instance sends (or
    /// whose lease is being given back).
    fn actor_for(&mut self, target: &Arc<DeliveryTarget>) -> Option<Addr<WebhookDelivery>> {
        let id = &target.webhook_id;
        if self.giving_back.contains(id) {
            return None;
        }
        let epoch = self.held.get(id.as_str())?.epoch;
        if let Some(addr) = self.actors.get(id) {
            if addr.connected() {
                return Some(addr.clone());
            }
        }
        let addr = self.start_actor(target, Some(epoch));
        self.actors.insert(id.clone(), addr.clone());
        if !self.take_known_empty(id) {
            // Its pending deliveries may be in the database: read them
            // first, so that nothing handed over now goes before them.
            addr.do_send(ReadBacklog);
        }
        Some(addr)
    }

    /// Starts the actors of webhooks known to have had nothing pending,
    /// because something may have put deliveries for them in the database:
    /// their targets come from the registry, then each actor reads from
    /// the start. One handed a delivery meanwhile has started already, and
    /// read from the start too, since it is no longer known to be empty.
    fn wake(&mut self, ids: Vec<String>, ctx: &mut Context<Self>) {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| self.take_known_empty(id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let registry = self.registry.clone();
        let fetch = async move { registry.send(Targets { webhook_ids: ids }).await };
        ctx.spawn(fetch.into_actor(self).map(|res, act, _| match res {
            Ok(targets) => {
                for target in targets.values() {
                    if !act.actors.contains_key(&target.webhook_id) {
                        act.actor_for(target);
                    }
                }
            }
            Err(e) => log::error!("registry gone while starting delivery actors: {e}"),
        }));
    }

    /// Has the actor of a held webhook read its backlog from the start,
    /// starting it if need be.
    fn read_backlog_of(&mut self, target: &Arc<DeliveryTarget>) -> bool {
        self.take_known_empty(&target.webhook_id);
        match self.actors.get(&target.webhook_id) {
            Some(addr) if addr.connected() => {
                addr.do_send(ReadBacklog);
                true
            }
            _ => self.actor_for(target).is_some(),
        }
    }

    /// Starts a delivery actor for `target` on the next delivery arbiter,
    /// sending under `epoch`.
    fn start_actor(
        &mut self,
        target: &Arc<DeliveryTarget>,
        epoch: Option<i64>,
    ) -> Addr<WebhookDelivery> {
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let (target, policy) = (target.clone(), self.policy.clone());
        let (recorder, registry) = (self.recorder.clone(), self.registry.clone());
        let outbox = self.outbox.clone();
        outbox
            .actors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WebhookDelivery::start_in_arbiter(arbiter, move |_| {
            WebhookDelivery::new(target, epoch, policy, recorder, registry, outbox)
        })
    }

    /// Whether a held webhook was known to have nothing pending; it is not
    /// any more.
    fn take_known_empty(&mut self, webhook_id: &str) -> bool {
        self.held
            .get_mut(webhook_id)
            .is_some_and(|held| std::mem::take(&mut held.known_empty))
    }

    /// Stops the actor of a webhook, if it has one.
    fn stop_actor(&mut self, webhook_id: &str) {
        self.take_known_empty(webhook_id);
        if let Some(addr) = self.actors.remove(webhook_id) {
            addr.do_send(Stop);
        }
    }

    /// Has the actors of these webhooks read their backlogs from the
    /// database, page by page, from the start; answers how many were told.
    fn read_backlogs(&mut self, targets: &HashMap<String, Arc<DeliveryTarget>>) -> usize {
        targets
            .values()
            .filter(|target| self.read_backlog_of(target))
            .count()
    }

    /// Tells the actors of webhooks that got deliveries from elsewhere to
    /// read on from the database.
    fn more_in_database(&mut self, stretch: Stretch, ctx: &mut Context<Self>) {
        match stretch {
            Stretch::Found(ids) => {
                let mut idle = Vec::new();
                for id in ids {
                    match self.actors.get(&id) {
                        Some(addr) => addr.do_send(MoreInDatabase),
                        None => idle.push(id),
                    }
                }
                self.wake(idle, ctx);
            }
            Stretch::Unknown => {
                for addr in self.actors.values() {
                    addr.do_send(MoreInDatabase);
                }
                let idle: Vec<String> = self
                    .held
                    .iter()
                    .filter(|(_, held)| held.known_empty)
                    .map(|(id, _)| id.to_string())
                    .collect();
                self.wake(idle, ctx);
            }
        }
    }

    fn publish_held(&self) {
        crate::metrics::metrics()
            .webhook_leases_held
            .set(self.held.len() as i64);
    }

    /// Writes the waiting events as one transaction, unless a write (or a
    /// poll of the sequence) is already under way (then they go in the
    /// next one).
    fn write_batch(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.batch.is_empty() {
            return;
        }
        self.writing = true;
        let n = self.batch.len().min(MAX_BATCH);
        let batch: Vec<(ChannelEvent, Reply)> = self.batch.drain(..n).collect();
        let registry = self.registry.clone();
        let recorder = self.recorder.clone();
        let pool = self.pool.clone();
        let covered = self.covered;
        let work = async move {
            let keys = batch
                .iter()
                .map(|(e, _)| (e.app_id.clone(), e.event))
                .collect();
            let matches = match registry.send(MatchBatch(keys)).await {
                Ok(m) => m,
                Err(e) => {
                    let e = BrokerError::from(e);
                    let answers = batch
                        .into_iter()
                        .map(|(_, reply)| (reply, Err(e.for_each_of_batch())))
                        .collect::<Vec<(Reply, Result<Handoff, BrokerError>)>>();
                    return (answers, None);
                }
            };
            let now = now_ms();
            let mut answers: Vec<(Reply, Result<Handoff, BrokerError>)> = Vec::new();
            let mut news = Vec::new();
            let mut waiting = Vec::new();
            for ((event, reply), targets) in batch.into_iter().zip(matches) {
                match targets {
                    Ok(targets) => {
                        news.push(build(event, &targets, now));
                        waiting.push((targets, reply));
                    }
                    Err(e) => answers.push((reply, Err(e))),
                }
            }
            let written = recorder.send(Persist(news)).await;
            let mut seen = None;
            match written.map_err(BrokerError::from).and_then(|stored| stored) {
                Ok(each) => {
                    let stored = || each.iter().filter_map(|r| r.as_ref().ok());
                    let first = stored().map(|n| n.event.seq).min();
                    let last = stored().map(|n| n.event.seq).max();
                    let whole = each.iter().all(Result::is_ok);
                    // Numbers between what this instance knew and its own
                    // batch went to other instances' events (or requeues).
                    let stretch = match first {
                        // Stored in parts: other instances may have
                        // numbered events between the parts.
                        Some(_) if !whole => Stretch::Unknown,
                        Some(first) if first > covered + 1 => {
                            stretch_between(&pool, covered, first - 1).await
                        }
                        _ => Stretch::Found(Vec::new()),
                    };
                    seen = last.map(|last| (last, stretch));
                    for (new, (targets, reply)) in each.into_iter().zip(waiting) {
                        answers.push((reply, new.map(|new| (new, targets))));
                    }
                }
                Err(e) => {
                    for (_, reply) in waiting {
                        answers.push((reply, Err(e.for_each_of_batch())));
                    }
                }
            }
            (answers, seen)
        };
        ctx.spawn(work.into_actor(self).map(|(answers, seen), act, ctx| {
            if let Some((last, stretch)) = seen {
                // Before the batch's own deliveries, so none jumps ahead of
                // an earlier one committed elsewhere.
                act.more_in_database(stretch, ctx);
                act.covered = act.covered.max(last);
            }
            // Deliveries go to the actors in the order their events were
            // accepted, which is what keeps each channel in order.
            for (reply, result) in answers {
                let answer = result.map(|(new, targets)| {
                    if let Ok(kind) = EventKind::parse(&new.event.event) {
                        crate::metrics::metrics()
                            .events_ingested
                            .get_or_create(&crate::metrics::EventLabel {
                                event: kind.as_str(),
                            })
                            .inc();
                    }
                    let body = Bytes::from(new.event.payload);
                    let accepted = EventAccepted {
                        id: new.event.id,
                        deliveries: new.deliveries.len(),
                    };
                    for (row, target) in new.deliveries.into_iter().zip(targets) {
                        if act.stopped.contains(&target.webhook_id) {
                            // Kept pending for when it is enabled again.
                            continue;
                        }
                        match act.actor_for(&target) {
                            Some(addr) => {
                                addr.do_send(Deliver(DeliveryJob::of_row(row, body.clone())))
                            }
                            None => {
                                if act.claiming {
                                    act.unhanded.insert(target.webhook_id.clone());
                                }
                            }
                        }
                    }
                    accepted
                });
                let _ = reply.send(answer);
            }
            act.writing = false;
            act.write_batch(ctx);
        }));
    }

    /// Looks at the sequence for deliveries other instances committed since
    /// `covered`, when no batch is being written (a batch does the same for
    /// the stretch before its own numbers).
    fn poll_sequence(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.draining {
            return;
        }
        self.writing = true;
        let pool = self.pool.clone();
        let covered = self.covered;
        let poll = actix_web::web::block(move || {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            db::leases::since(&mut conn, covered).map_err(|e| e.to_string())
        });
        ctx.spawn(poll.into_actor(self).map(|res, act, ctx| {
            act.writing = false;
            if let Ok(Ok((upto, ids))) = res {
                if upto > act.covered {
                    act.more_in_database(Stretch::Found(ids), ctx);
                    act.covered = upto;
                }
            }
            act.write_batch(ctx);
        }));
    }

    /// One claim round: says this instance is alive, counts the instances
    /// and leases, and claims its fair share (at start, first its own
    /// leases of a previous run) or gives back what is over it. Nothing of
    /// the backlog is loaded here: the actors of claimed webhooks read it
    /// in pages, so memory stays bounded whatever the backlog.
    fn claim(&mut self) -> ResponseActFuture<Self, Result<usize, BrokerError>> {
        if self.draining {
            return Box::pin(actix::fut::ready(Ok(0)));
        }
        if self.claiming {
            // Asked for a reason (a new webhook): another round follows.
            self.claim_again = true;
            return Box::pin(actix::fut::ready(Ok(0)));
        }
        self.claiming = true;
        self.unhanded.clear();
        // With more than START_ALL webhooks, the start-up claim takes,
        // before the first event, only the leases whose webhooks have
        // deliveries pending; the next round takes the rest of this
        // instance's old leases, and its share of the free ones, in rounds
        // of CLAIM_ROUND while it already serves. (An event reaching one of
        // those idle webhooks in between is read back from the database
        // once its lease is taken: right, but a read per webhook, which is
        // why a start with fewer takes everything first.)
        let starting = !self.started;
        let own_rest = self.started && self.own_left;
        let held_now: HashSet<Arc<str>> = if own_rest {
            self.held.keys().cloned().collect()
        } else {
            HashSet::new()
        };
        let pool = self.pool.clone();
        let registry = self.registry.clone();
        let me = self.leases.owner.clone();
        let lease_ms = self.lease_ms();
        let holding = self.held.len() - self.giving_back.len();
        let first_lease = self.held.is_empty();
        let work = async move {
            let started = Instant::now();
            let (claimed, plan, seq, pending, staged) = actix_web::web::block(move || {
                let mut conn = pool.get()?;
                let seq = if starting {
                    Some(db::leases::current_sequence(&mut conn)?)
                } else {
                    None
                };
                let staged = starting && db::leases::webhook_count(&mut conn)? > START_ALL;
                if starting && !staged {
                    let _turn = pool.write_turn();
                    db::leases::add_missing(&mut conn)?;
                }
                let mut claimed = Vec::new();
                if own_rest {
                    {
                        let _turn = pool.write_turn();
                        db::leases::add_missing(&mut conn)?;
                    }
                    claimed = db::leases::claim_own_rest(
                        &mut conn,
                        &me,
                        lease_ms,
                        |id| held_now.contains(id),
                        || pool.write_turn(),
                    )?;
                }
                let census = {
                    let _turn = pool.write_turn();
                    db::leases::census(&mut conn, &me, lease_ms)?
                };
                let plan = lease::plan(
                    holding + claimed.len(),
                    census.webhooks,
                    census.live,
                    census.free,
                );
                match plan {
                    Plan::Claim(n) if staged => {
                        let _turn = pool.write_turn();
                        claimed = db::leases::claim_with_pending(&mut conn, &me, lease_ms, n)?;
                    }
                    Plan::Claim(n) if starting => {
                        let _turn = pool.write_turn();
                        claimed = db::leases::claim(&mut conn, &me, lease_ms, n, true)?;
                    }
                    Plan::Claim(mut left) => {
                        while left > 0 {
                            let ask = left.min(db::leases::CLAIM_ROUND);
                            let got = {
                                let _turn = pool.write_turn();
                                db::leases::claim(&mut conn, &me, lease_ms, ask, false)?
                            };
                            let short = got.len() < ask;
                            left = left.saturating_sub(got.len());
                            claimed.extend(got);
                            if short {
                                break;
                            }
                        }
                    }
                    Plan::Shed(_) => {}
                }
                let claimed_in = started.elapsed();
                let ids: Vec<&str> = claimed.iter().map(|l| l.webhook_id.as_str()).collect();
                let pending = db::deliveries::webhooks_with_pending(&mut conn, &ids)?;
                if starting || own_rest {
                    log::info!(
                        "start-up claim{}: {} leases in {claimed_in:?}, {} of them with deliveries \
                         pending, found in {:?}",
                        if starting { "" } else { ", the rest" },
                        claimed.len(),
                        pending.len(),
                        started.elapsed() - claimed_in
                    );
                }
                Ok::<_, BrokerError>((claimed, plan, seq, pending, staged))
            })
            .await??;
            // Only those with work waiting need their targets now.
            let ids: Vec<String> = claimed
                .iter()
                .filter(|l| pending.contains(&l.webhook_id))
                .map(|l| l.webhook_id.clone())
                .collect();
            let targets = if ids.is_empty() {
                HashMap::new()
            } else {
                registry.send(Targets { webhook_ids: ids }).await?
            };
            Ok::<_, BrokerError>((claimed, plan, seq, targets, started, staged))
        };
        Box::pin(work.into_actor(self).map(move |res, act, ctx| {
            act.claiming = false;
            for waiter in act.claim_waiters.drain(..) {
                let _ = waiter.send(());
            }
            // The next round, if one was asked for, starts once this one's
            // hand-over bookkeeping is done.
            let (claimed, plan, seq, targets, started, staged) = match res {
                Ok(done) => done,
                Err(e) => {
                    if std::mem::take(&mut act.claim_again) {
                        act.claim_in_background(ctx);
                    }
                    return Err(e);
                }
            };
            if let Some(seq) = seq {
                act.covered = act.covered.max(seq);
            }
            if staged {
                // The rest of the start-up claim, at once.
                act.claim_again = true;
            } else if own_rest || seq.is_some() {
                act.own_left = false;
            }
            act.started = true;
            if first_lease && !claimed.is_empty() {
                // Everything held now was taken at or after `started`.
                act.validity.renewed(started);
            }
            let n = claimed.len();
            // Those with deliveries pending read their backlogs now (their
            // targets came with the claim). The others start their actors
            // with their first delivery, unless this instance committed
            // deliveries for them that it could not hand over meanwhile.
            let unhanded = std::mem::take(&mut act.unhanded);
            let mut woken = Vec::new();
            for Lease { webhook_id, epoch } in claimed {
                if act.held.get(webhook_id.as_str()).map(|held| held.epoch) != Some(epoch) {
                    // Taken again after losing it unnoticed: the old
                    // actor's epoch is stale.
                    act.stop_actor(&webhook_id);
                }
                let known_empty =
                    !targets.contains_key(&webhook_id) && !act.actors.contains_key(&webhook_id);
                if known_empty && unhanded.contains(&webhook_id) {
                    woken.push(webhook_id.clone());
                }
                let held = Held { epoch, known_empty };
                act.held.insert(webhook_id.into(), held);
            }
            act.publish_held();
            let told = act.read_backlogs(&targets) + woken.len();
            act.wake(woken, ctx);
            if n > 0 {
                log::info!("took the leases of {n} webhooks; {told} read their pending deliveries");
            }
            if let Plan::Shed(k) = plan {
                act.give_back_some(k, ctx);
            }
            if std::mem::take(&mut act.claim_again) {
                act.claim_in_background(ctx);
            }
            Ok(n)
        }))
    }

    /// Gives back `k` leases (more instances share the work now): their
    /// actors stop starting attempts, the attempts in flight finish and
    /// their outcomes land, then each lease is freed, fenced by its epoch.
    fn give_back_some(&mut self, k: usize, ctx: &mut Context<Self>) {
        let mut ids: Vec<String> = self
            .held
            .keys()
            .filter(|id| !self.giving_back.contains(&id[..]))
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        ids.truncate(k);
        if ids.is_empty() {
            return;
        }
        let leases: Vec<Lease> = ids
            .iter()
            .map(|id| Lease {
                webhook_id: id.clone(),
                epoch: self.held[id.as_str()].epoch,
            })
            .collect();
        let mut drains = Vec::new();
        for id in &ids {
            self.giving_back.insert(id.clone());
            self.take_known_empty(id);
            if let Some(addr) = self.actors.remove(id) {
                drains.push((addr.clone(), addr.send(Drain)));
            }
        }
        let recorder = self.recorder.clone();
        let pool = self.pool.clone();
        let me = self.leases.owner.clone();
        let work = async move {
            let (addrs, waits): (Vec<_>, Vec<_>) = drains.into_iter().unzip();
            let all = futures_util::future::join_all(waits);
            let _ = actix_web::rt::time::timeout(Duration::from_secs(10), all).await;
            let _ =
                actix_web::rt::time::timeout(Duration::from_secs(10), recorder.send(Flush)).await;
            for addr in addrs {
                addr.do_send(Stop);
            }
            actix_web::web::block(move || {
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                let _turn = pool.write_turn();
                db::leases::release(&mut conn, &me, &leases).map_err(|e| e.to_string())
            })
            .await
        };
        ctx.spawn(work.into_actor(self).map(move |res, act, _| {
            for id in &ids {
                act.giving_back.remove(id);
                act.held.remove(id.as_str());
            }
            act.publish_held();
            match res {
                Ok(Ok(n)) => log::info!("gave back {n} webhook leases to share the work"),
                Ok(Err(e)) => log::warn!("could not give back leases ({e}); they lapse"),
                Err(_) => {}
            }
        }));
    }

    /// Extends the leases this instance holds; stops the actors of those
    /// it turns out to have lost.
    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        if self.renewing {
            return;
        }
        self.renewing = true;
        let pool = self.pool.clone();
        let me = self.leases.owner.clone();
        let lease_ms = self.lease_ms();
        // What is held, with shared ids: with 100,000 leases a copy of
        // every id would be megabytes, every renewal.
        let mut asked: Vec<(Arc<str>, i64)> = self
            .held
            .iter()
            .map(|(id, held)| (id.clone(), held.epoch))
            .collect();
        // In id order, as every claim and outcome write locks them: in the
        // map's order, a renewal could deadlock on InnoDB with another
        // writer of the same lease rows.
        asked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let started = Instant::now();
        let renew = actix_web::web::block(move || {
            // In rounds, each its own transaction: renewing 100,000 leases
            // at once held SQLite's writer (and, on MySQL, the lease rows
            // every outcome write locks) for a third of a second. Each
            // round's answer is judged at once, so only what was lost is
            // kept.
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            let mut lost = Vec::new();
            for round in asked.chunks(db::leases::CLAIM_ROUND) {
                let ids: Vec<&str> = round.iter().map(|(id, _)| &**id).collect();
                let still = {
                    let _turn = pool.write_turn();
                    db::leases::renew(&mut conn, &me, &ids, lease_ms).map_err(|e| e.to_string())?
                };
                lost.extend(lease::lost(round, &still));
            }
            Ok::<_, String>(lost)
        });
        ctx.spawn(renew.into_actor(self).map(move |res, act, _| {
            act.renewing = false;
            let renewed = match res {
                Ok(done) => done,
                Err(_) => return,
            };
            match renewed {
                Ok(lost) => {
                    act.validity.renewed(started);
                    for (id, epoch) in lost {
                        // Unless it was taken again meanwhile.
                        if act.held.get(&id).map(|held| held.epoch) == Some(epoch) {
                            log::warn!("lost the lease of webhook {id} to another instance");
                            crate::metrics::metrics().webhook_leases_lost.inc();
                            act.held.remove(&id);
                            act.giving_back.remove(&*id);
                            act.stop_actor(&id);
                        }
                    }
                    act.publish_held();
                }
                Err(e) => {
                    crate::metrics::metrics().database_errors.inc();
                    log::warn!("could not renew webhook leases: {e}");
                }
            }
        }));
    }
}

/// The webhooks with pending deliveries numbered in `(after, upto]`.
async fn stretch_between(pool: &Pool, after: i64, upto: i64) -> Stretch {
    let pool = pool.clone();
    let found = actix_web::web::block(move || {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        db::leases::webhooks_in_stretch(&mut conn, after, upto).map_err(|e| e.to_string())
    })
    .await;
    match found {
        Ok(Ok(ids)) => Stretch::Found(ids),
        _ => Stretch::Unknown,
    }
}

type Handoff = (NewEvent, Vec<Arc<DeliveryTarget>>);

/// The rows for one event: the event with its exact body and a delivery per
/// target, due now. Their sequence number comes with the commit.
fn build(msg: ChannelEvent, targets: &[Arc<DeliveryTarget>], now: i64) -> NewEvent {
    let event_time = msg.event_time.unwrap_or(now);
    let channel_id = channel_id(&msg.channel);
    let event = EventRow {
        id: db::new_id("evt"),
        app_id: msg.app_id,
        event: msg.event.as_str().to_owned(),
        channel_id: channel_id.clone(),
        event_time,
        payload: delivery_body(msg.event, event_time, &msg.channel),
        created_at: now,
        seq: 0,
    };
    let deliveries = targets
        .iter()
        .map(|t| DeliveryRow {
            id: db::new_id("msg"),
            event_id: event.id.clone(),
            webhook_id: t.webhook_id.clone(),
            channel_id: channel_id.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_status_code: None,
            last_error: None,
            created_at: now,
            delivered_at: None,
            seq: 0,
        })
        .collect();
    NewEvent { event, deliveries }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.leases.lease / 3, |act, ctx| {
            if !act.draining {
                act.renew_leases(ctx);
            }
        });
        // Until one succeeds, a round is the start-up claim again (taking
        // back its own leases first), so a failed start-up claim (the
        // database was down) is retried.
        ctx.run_interval(claim_every(self.leases.lease), |act, ctx| {
            act.claim_in_background(ctx)
        });
        ctx.run_interval(POLL_EVERY, |act, ctx| act.poll_sequence(ctx));
    }
}

impl Dispatcher {
    fn claim_in_background(&mut self, ctx: &mut Context<Self>) {
        let claim = self.claim().map(|res, _, _| {
            if let Err(e) = res {
                log::warn!("could not claim webhook leases: {e}");
            }
        });
        ctx.spawn(claim);
    }
}

/// A channel lifecycle event reported by a channel service. Send it to the
/// dispatcher's address; the reply comes once the event is durable.
///
/// With an idempotency key ([`ChannelEvent::with_idempotency_key`]) it is
/// accepted at most once per key within BROKER_IDEMPOTENCY_TTL: sending the
/// same event again with the same key answers the first [`EventAccepted`]
/// (the same id) and stores nothing; a different event with the key answers
/// [`BrokerError::IdempotencyKeyReused`], and one while the first is still
/// being written [`BrokerError::IdempotencyKeyInUse`]. In-process keys live
/// in their own scope, `in-process`, apart from the HTTP callers' keys.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<EventAccepted, BrokerError>")]
pub struct ChannelEvent {
    /// The app (tenant) the channel belongs to.
    pub app_id: String,
    /// What happened.
    pub event: EventKind,
    /// When it happened, epoch ms; `None` means now.
    pub event_time: Option<i64>,
    /// The channel's own fields, delivered beside `event` and `eventTime`.
    pub channel: Map<String, Value>,
    /// Makes the send safe to repeat: 1 to 255 visible ASCII characters.
    pub idempotency_key: Option<String>,
}

impl ChannelEvent {
    /// An event that happened now.
    pub fn new(app_id: impl Into<String>, event: EventKind, channel: Map<String, Value>) -> Self {
        ChannelEvent {
            app_id: app_id.into(),
            event,
            event_time: None,
            channel,
            idempotency_key: None,
        }
    }

    /// The same event with an idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The event's content as JSON text (app, event, time and channel; not
    /// the key): what tells a repeated send from a different one.
    pub fn content(&self) -> String {
        serde_json::json!({
            "appId": self.app_id,
            "event": self.event.as_str(),
            "eventTime": self.event_time,
            "channel": self.channel,
        })
        .to_string()
    }
}

impl EventAccepted {
    /// The HTTP answer's body, `{"id","deliveries"}`.
    pub fn answer_body(&self) -> String {
        serde_json::json!({ "id": self.id, "deliveries": self.deliveries }).to_string()
    }

    fn from_answer_body(body: &str) -> Result<Self, BrokerError> {
        let v: Value = serde_json::from_str(body)
            .map_err(|_| BrokerError::Internal("a stored answer is not JSON".into()))?;
        match (v["id"].as_str(), v["deliveries"].as_u64()) {
            (Some(id), Some(n)) => Ok(EventAccepted {
                id: id.to_owned(),
                deliveries: n as usize,
            }),
            _ => Err(BrokerError::Internal(
                "a stored answer is not an accepted event".into(),
            )),
        }
    }
}

/// An event accepted and durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAccepted {
    /// `evt_...`.
    pub id: String,
    /// How many webhooks it will be delivered to.
    pub deliveries: usize,
}

/// The body every webhook receives: `event` and `eventTime` first, then the
/// channel's fields; the broker's two keys win a clash.
pub fn delivery_body(event: EventKind, event_time: i64, channel: &Map<String, Value>) -> String {
    let mut body = Map::with_capacity(channel.len() + 2);
    body.insert("event".into(), Value::from(event.as_str()));
    body.insert("eventTime".into(), Value::from(event_time));
    for (k, v) in channel {
        if k != "event" && k != "eventTime" {
            body.insert(k.clone(), v.clone());
        }
    }
    Value::Object(body).to_string()
}

/// The longest channel id stored as it is; longer ones are stored as their
/// digest, which orders them just as well and fits the column on MySQL.
const MAX_CHANNEL_ID: usize = 191;

/// The channel's `id` as text, whatever JSON type it has: the key that
/// orders its deliveries.
pub fn channel_id(channel: &Map<String, Value>) -> Option<String> {
    let id = match channel.get("id")? {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    if id.len() <= MAX_CHANNEL_ID {
        return Some(id);
    }
    use sha2::{Digest, Sha256};
    Some(format!("sha256:{:x}", Sha256::digest(id.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channel(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_broker_keys_win_a_clash_and_come_first() {
        let body = delivery_body(
            EventKind::ChannelStop,
            42,
            &channel(json!({"id": "c", "event": "x", "eventTime": 1, "z": [1]})),
        );
        assert_eq!(
            body,
            r#"{"event":"channel_stop","eventTime":42,"id":"c","z":[1]}"#
        );
    }

    #[test]
    fn channel_ids_of_any_type_and_length_become_keys() {
        assert_eq!(channel_id(&channel(json!({"id": "a"}))), Some("a".into()));
        assert_eq!(channel_id(&channel(json!({"id": 7}))), Some("7".into()));
        assert_eq!(channel_id(&channel(json!({"id": null}))), None);
        assert_eq!(channel_id(&channel(json!({}))), None);
        let long = "x".repeat(300);
        let key = channel_id(&channel(json!({ "id": long }))).unwrap();
        assert!(key.starts_with("sha256:") && key.len() == 71);
        let other = channel_id(&channel(json!({ "id": "y".repeat(300) }))).unwrap();
        assert_ne!(key, other);
    }
}

impl Handler<ChannelEvent> for Dispatcher {
    type Result = ResponseFuture<Result<EventAccepted, BrokerError>>;

    fn handle(&mut self, mut msg: ChannelEvent, ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Box::pin(async {
                Err(BrokerError::Unavailable(
                    "the broker is shutting down".into(),
                ))
            });
        }
        if let Some(key) = msg.idempotency_key.take() {
            let key = crate::idempotency::validate_key(key.as_bytes());
            let hash = crate::idempotency::request_hash("ChannelEvent", &msg.content());
            let (pool, ttl, me) = (self.pool.clone(), self.idempotency_ttl, ctx.address());
            return Box::pin(async move {
                let op = async move {
                    let accepted = me.send(msg).await??;
                    Ok((202, accepted.answer_body()))
                };
                let scope = crate::idempotency::scope::IN_PROCESS.to_owned();
                let answer = crate::idempotency::run(&pool, scope, key?, hash, ttl, op).await?;
                EventAccepted::from_answer_body(&answer.body)
            });
        }
        let (tx, rx) = oneshot::channel();
        self.batch.push((msg, tx));
        self.write_batch(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(BrokerError::Unavailable("the broker stopped".into())))
        })
    }
}

impl Handler<WebhookChanged> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: WebhookChanged, ctx: &mut Self::Context) {
        match msg.target {
            Some(target) => {
                self.stopped.remove(&msg.webhook_id);
                if !self.held.contains_key(msg.webhook_id.as_str()) {
                    // Sent by another instance, or new and nobody's yet: a
                    // claim round now gives it an owner without waiting.
                    if self.started && !self.draining {
                        self.claim_in_background(ctx);
                    }
                    return;
                }
                match self.actors.get(&msg.webhook_id) {
                    Some(addr) if addr.connected() => addr.do_send(Retarget(target)),
                    _ => {
                        // Enabled again (or changed while idle): take back
                        // what it kept pending, in pages.
                        self.read_backlog_of(&target);
                    }
                }
            }
            // Disabled or deleted: the lease stays (a deleted webhook's
            // lease row went with it, and the next renewal drops it).
            None => {
                self.stopped.insert(msg.webhook_id.clone());
                self.stop_actor(&msg.webhook_id);
            }
        }
    }
}

/// The start-up claim: this instance's share of the webhook leases, first
/// its own from a previous run. Answered once the leases are taken (the
/// claimed webhooks' actors then read their backlogs in pages), so that a
/// channel's old deliveries go out before its new ones. Answers how many
/// leases were taken.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct ClaimLeases;

impl Handler<ClaimLeases> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<usize, BrokerError>>;

    fn handle(&mut self, _: ClaimLeases, _: &mut Self::Context) -> Self::Result {
        self.claim()
    }
}

/// Puts finished deliveries of a webhook back in line, due now; answers
/// how many were requeued. They get new sequence numbers, so the webhook's
/// lease holder, on this instance or another, finds them as it finds new
/// events (within [`POLL_EVERY`]).
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct Requeue {
    /// The webhook.
    pub webhook_id: String,
    /// Its deliveries to send again.
    pub delivery_ids: Vec<String>,
}

impl Handler<Requeue> for Dispatcher {
    type Result = ResponseFuture<Result<usize, BrokerError>>;

    fn handle(&mut self, msg: Requeue, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            actix_web::web::block(move || {
                let mut conn = pool.get()?;
                let _turn = pool.write_turn();
                Ok::<_, BrokerError>(db::deliveries::requeue(
                    &mut conn,
                    &msg.webhook_id,
                    &msg.delivery_ids,
                    now_ms(),
                )?)
            })
            .await?
        })
    }
}

/// A clean stop: refuse new events, let attempts in flight finish (up to
/// `grace`), write every outcome, and give this instance's leases back, so
/// the other instances take its webhooks over at once.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// How long in-flight attempts may take to finish.
    pub grace: Duration,
}

impl Handler<Shutdown> for Dispatcher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let drains: Vec<_> = self.actors.values().map(|a| a.send(Drain)).collect();
        let recorder = self.recorder.clone();
        let pool = self.pool.clone();
        let owner = self.leases.owner.clone();
        let outcomes = self.outbox.unwritten.clone();
        // A round under way (say, for a webhook created just now) would
        // otherwise commit its leases after they were given back, and hold
        // them, dead, for a whole lease.
        let claim_done = self.claiming.then(|| {
            let (tx, rx) = oneshot::channel();
            self.claim_waiters.push(tx);
            rx
        });
        let work = async move {
            if let Some(done) = claim_done {
                let _ = actix_web::rt::time::timeout(Duration::from_secs(10), done).await;
            }
            let began = std::time::Instant::now();
            let all = futures_util::future::join_all(drains);
            if actix_web::rt::time::timeout(msg.grace, all).await.is_err() {
                log::warn!(
                    "shutdown grace of {:?} ran out with attempts in flight",
                    msg.grace
                );
            }
            let unwritten = outcomes.get();
            let drained = began.elapsed();
            let flushed =
                actix_web::rt::time::timeout(Duration::from_secs(10), recorder.send(Flush)).await;
            let writing = began.elapsed() - drained;
            match flushed {
                Ok(_) => log::info!(
                    "attempts in flight done in {drained:?}; {unwritten} outcomes written in {writing:?}"
                ),
                Err(_) => log::warn!(
                    "{unwritten} outcomes were not all written within {writing:?}; their deliveries \
                     go again after the restart"
                ),
            }
            let released = actix_web::web::block(move || {
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                let _turn = pool.write_turn();
                db::leases::leave(&mut conn, &owner).map_err(|e| e.to_string())
            })
            .await;
            match released {
                Ok(Ok(n)) => log::info!("gave back {n} webhook leases"),
                Ok(Err(e)) => {
                    log::warn!("could not give back leases ({e}); they lapse on their own")
                }
                Err(_) => {}
            }
        };
        Box::pin(work.into_actor(self).map(|_, act, _| {
            for addr in act.actors.values() {
                addr.do_send(Stop);
            }
            act.actors.clear();
            act.held.clear();
            act.publish_held();
        }))
    }
}

/// A test event for one webhook (`POST /v1/webhook/{id}/test`): an event
/// with a sample channel marked `"test": true`, stored with one delivery,
/// for this webhook only, and sent like any other. To an enabled webhook it
/// goes through the webhook's actor (signed, retried, logged); to a disabled
/// one it gets one attempt on a short-lived actor (see [`DeliverOnce`]) and
/// the webhook stays disabled.
#[derive(Message, Debug)]
#[rtype(result = "Result<TestAccepted, BrokerError>")]
pub struct TestEvent {
    /// The webhook's app.
    pub app_id: String,
    /// The event to send.
    pub event: EventKind,
    /// The webhook as it is now, enabled or not.
    pub target: Arc<DeliveryTarget>,
}

/// A stored test event and its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestAccepted {
    /// `msg_...`: the delivery, the receiver's `webhook-id`.
    pub delivery_id: String,
    /// `evt_...`.
    pub event_id: String,
}

/// The channel of a test event.
pub fn test_channel() -> Map<String, Value> {
    let mut channel = Map::new();
    channel.insert("id".into(), Value::from("test-channel"));
    channel.insert("title".into(), Value::from("Test event"));
    channel.insert("test".into(), Value::from(true));
    channel
}

impl Handler<TestEvent> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<TestAccepted, BrokerError>>;

    fn handle(&mut self, msg: TestEvent, _: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Box::pin(actix::fut::ready(Err(BrokerError::Unavailable(
                "the broker is shutting down".into(),
            ))));
        }
        let recorder = self.recorder.clone();
        let registry = self.registry.clone();
        let target = msg.target;
        let event = ChannelEvent::new(msg.app_id, msg.event, test_channel());
        let new = build(event, std::slice::from_ref(&target), now_ms());
        let webhook_id = target.webhook_id.clone();
        let work = async move {
            let stored = recorder.send(Persist(vec![new])).await??;
            let new = stored
                .into_iter()
                .next()
                .ok_or_else(|| BrokerError::Internal("the test event was not stored".into()))??;
            // Whether it is enabled now, with its newest target.
            let enabled = registry
                .send(Targets {
                    webhook_ids: vec![webhook_id.clone()],
                })
                .await?
                .remove(&webhook_id);
            Ok::<_, BrokerError>((new, enabled))
        };
        Box::pin(work.into_actor(self).map(move |res, act, _| {
            let (new, enabled) = res?;
            let body = Bytes::from(new.event.payload);
            let row =
                new.deliveries.into_iter().next().ok_or_else(|| {
                    BrokerError::Internal("the test delivery was not stored".into())
                })?;
            let accepted = TestAccepted {
                delivery_id: row.id.clone(),
                event_id: new.event.id,
            };
            let job = DeliveryJob::of_row(row, body);
            match enabled {
                // Held by another instance: its owner finds it by the
                // sequence, like any event.
                Some(target) => {
                    if let Some(addr) = act.actor_for(&target) {
                        addr.do_send(Deliver(job));
                    }
                }
                None => act.start_actor(&target, None).do_send(DeliverOnce(job)),
            }
            Ok(accepted)
        }))
    }
}

/// Answers at once: a liveness probe for `/readyz` and the systemd watchdog.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}
