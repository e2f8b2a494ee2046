//! The dispatcher owns the hand-off from an accepted channel event to the
//! per-webhook delivery actors, and this instance's share of the outbox.
//!
//! Ingest is group-committed: [`ChannelEvent`]s that arrive while a batch is
//! being written wait in the next batch, so one transaction (one fsync)
//! carries every event that arrived together. For a batch the dispatcher
//! asks the registry which webhooks match, has the recorder commit the
//! events and one delivery per webhook (leased to this instance), and only
//! then hands the deliveries to their webhooks' actors, in acceptance order,
//! and answers the senders: an acknowledged event is durable.
//!
//! It also owns the running delivery actors (started on demand, spread over
//! the delivery arbiters), forwards webhook changes to them, renews this
//! instance's leases, claims pending deliveries nobody holds (at start: its
//! own from a previous run), and drains everything at a clean stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::web::Bytes;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::delivery::{
    Deliver, DeliverOnce, DeliveryJob, DeliveryPolicy, Drain, Outbox, ReadBacklog, Retarget,
    WebhookDelivery,
};
use super::recorder::{Flush, Persist, Recorder};
use super::registry::{DeliveryTarget, MatchBatch, Registry, Targets, WebhookChanged};
use crate::db::deliveries::NewEvent;
use crate::db::models::{status, DeliveryRow, EventRow};
use crate::db::{self, now_ms, Pool};
use crate::domain::EventKind;
use crate::error::BrokerError;

/// The most events one ingest transaction carries.
const MAX_BATCH: usize = 1000;
/// How long an in-process idempotency key is kept unless configured.
const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(86_400);

/// Who this instance is and how long its claims last.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The `lease_owner` this instance writes.
    pub owner: String,
    /// How long a lease lasts unrenewed.
    pub lease: Duration,
}

type Reply = oneshot::Sender<Result<EventAccepted, BrokerError>>;

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
    batch: Vec<(ChannelEvent, Reply)>,
    writing: bool,
    draining: bool,
    idempotency_ttl: Duration,
}

impl Dispatcher {
    /// A dispatcher that starts delivery actors on `arbiters`.
    pub fn new(
        registry: Addr<Registry>,
        recorder: Addr<Recorder>,
        pool: Pool,
        policy: Arc<DeliveryPolicy>,
        leases: LeaseConfig,
        max_in_memory: usize,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        assert!(!arbiters.is_empty(), "at least one delivery arbiter");
        let outbox = Arc::new(Outbox {
            pool: pool.clone(),
            owner: leases.owner.clone(),
            lease_ms: leases.lease.as_millis() as i64,
            max_in_memory,
            in_memory: Default::default(),
            actors: Default::default(),
        });
        Dispatcher {
            outbox,
            registry,
            recorder,
            pool,
            policy,
            leases,
            arbiters,
            next_arbiter: 0,
            actors: HashMap::new(),
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

    /// The running actor of a webhook, started on demand.
    fn actor_for(&mut self, target: &Arc<DeliveryTarget>) -> Addr<WebhookDelivery> {
        if let Some(addr) = self.actors.get(&target.webhook_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let id = target.webhook_id.clone();
        let addr = self.start_actor(target);
        self.actors.insert(id, addr.clone());
        addr
    }

    /// Starts a delivery actor for `target` on the next delivery arbiter.
    fn start_actor(&mut self, target: &Arc<DeliveryTarget>) -> Addr<WebhookDelivery> {
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let (target, policy) = (target.clone(), self.policy.clone());
        let (recorder, registry) = (self.recorder.clone(), self.registry.clone());
        let outbox = self.outbox.clone();
        outbox
            .actors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WebhookDelivery::start_in_arbiter(arbiter, move |_| {
            WebhookDelivery::new(target, policy, recorder, registry, outbox)
        })
    }

    /// Has the actors of these webhooks read their backlogs from the
    /// database, page by page; answers how many were told.
    fn read_backlogs(&mut self, targets: &HashMap<String, Arc<DeliveryTarget>>) -> usize {
        for target in targets.values() {
            self.actor_for(target).do_send(ReadBacklog);
        }
        targets.len()
    }

    /// Writes the waiting events as one transaction, unless a write is
    /// already under way (then they go in the next one).
    fn write_batch(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.batch.is_empty() {
            return;
        }
        self.writing = true;
        let n = self.batch.len().min(MAX_BATCH);
        let batch: Vec<(ChannelEvent, Reply)> = self.batch.drain(..n).collect();
        let registry = self.registry.clone();
        let recorder = self.recorder.clone();
        let (owner, lease_ms) = (self.leases.owner.clone(), self.lease_ms());
        let work = async move {
            let keys = batch
                .iter()
                .map(|(e, _)| (e.app_id.clone(), e.event))
                .collect();
            let matches = match registry.send(MatchBatch(keys)).await {
                Ok(m) => m,
                Err(e) => {
                    let e = BrokerError::from(e);
                    return batch
                        .into_iter()
                        .map(|(_, reply)| (reply, Err(e.for_each_of_batch())))
                        .collect::<Vec<(Reply, Result<Handoff, BrokerError>)>>();
                }
            };
            let now = now_ms();
            let mut answers: Vec<(Reply, Result<Handoff, BrokerError>)> = Vec::new();
            let mut news = Vec::new();
            let mut waiting = Vec::new();
            for ((event, reply), targets) in batch.into_iter().zip(matches) {
                match targets {
                    Ok(targets) => {
                        news.push(build(event, &targets, now, &owner, lease_ms));
                        waiting.push((targets, reply));
                    }
                    Err(e) => answers.push((reply, Err(e))),
                }
            }
            let written = recorder.send(Persist(news)).await;
            match written.map_err(BrokerError::from).and_then(|stored| stored) {
                Ok(news) => {
                    for (new, (targets, reply)) in news.into_iter().zip(waiting) {
                        answers.push((reply, Ok((new, targets))));
                    }
                }
                Err(e) => {
                    for (_, reply) in waiting {
                        answers.push((reply, Err(e.for_each_of_batch())));
                    }
                }
            }
            answers
        };
        ctx.spawn(work.into_actor(self).map(|answers, act, ctx| {
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
                        act.actor_for(&target)
                            .do_send(Deliver(DeliveryJob::of_row(row, body.clone())));
                    }
                    accepted
                });
                let _ = reply.send(answer);
            }
            act.writing = false;
            act.write_batch(ctx);
        }));
    }

    /// Finds the webhooks with pending deliveries nobody holds (with
    /// `reclaim_own`, at start, also those this instance held before a
    /// restart) and has their actors read them in pages. Nothing is loaded
    /// here: memory stays bounded whatever the backlog.
    fn claim(&mut self, reclaim_own: bool) -> ResponseActFuture<Self, Result<usize, BrokerError>> {
        let pool = self.pool.clone();
        let registry = self.registry.clone();
        let owner = self.leases.owner.clone();
        let work = async move {
            let ids = actix_web::web::block(move || {
                let mut conn = pool.get()?;
                Ok::<_, BrokerError>(db::deliveries::webhooks_with_claimable(
                    &mut conn,
                    &owner,
                    now_ms(),
                    reclaim_own,
                )?)
            })
            .await??;
            if ids.is_empty() {
                return Ok(HashMap::new());
            }
            Ok::<_, BrokerError>(registry.send(Targets { webhook_ids: ids }).await?)
        };
        Box::pin(work.into_actor(self).map(|res, act, _| {
            let targets = res?;
            let n = act.read_backlogs(&targets);
            if n > 0 {
                log::info!("reading the pending deliveries of {n} webhooks");
            }
            Ok(n)
        }))
    }

    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let owner = self.leases.owner.clone();
        let until = now_ms() + self.lease_ms();
        let renew = actix_web::web::block(move || {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            let _turn = pool.write_turn();
            db::deliveries::renew_leases(&mut conn, &owner, until).map_err(|e| e.to_string())
        });
        ctx.spawn(renew.into_actor(self).map(|res, _, _| match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("could not renew delivery leases: {e}"),
            Err(_) => {}
        }));
    }
}

type Handoff = (NewEvent, Vec<Arc<DeliveryTarget>>);

/// The rows for one event: the event with its exact body and a delivery per
/// target, leased to this instance, due now.
fn build(
    msg: ChannelEvent,
    targets: &[Arc<DeliveryTarget>],
    now: i64,
    owner: &str,
    lease_ms: i64,
) -> NewEvent {
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
    };
    let deliveries = targets
        .iter()
        .map(|t| DeliveryRow {
            id: db::new_id("msg"),
            event_id: event.id.clone(),
            webhook_id: t.webhook_id.clone(),
            channel_id: channel_id.clone(),
            status: status::PENDING.into(),
            attempts: 0,
            next_attempt_at: now,
            last_status_code: None,
            last_error: None,
            created_at: now,
            delivered_at: None,
            lease_owner: Some(owner.to_owned()),
            lease_until: Some(now + lease_ms),
        })
        .collect();
    NewEvent { event, deliveries }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = self.leases.lease / 3;
        ctx.run_interval(every, |act, ctx| {
            if !act.draining {
                act.renew_leases(ctx);
            }
        });
        ctx.run_interval(self.leases.lease, |act, ctx| {
            if !act.draining {
                let claim = act.claim(false).map(|res, _, _| {
                    if let Err(e) = res {
                        log::warn!("could not claim pending deliveries: {e}");
                    }
                });
                ctx.spawn(claim);
            }
        });
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

    fn handle(&mut self, msg: WebhookChanged, _: &mut Self::Context) {
        match msg.target {
            Some(target) => match self.actors.get(&msg.webhook_id) {
                Some(addr) if addr.connected() => addr.do_send(Retarget(Some(target))),
                _ => {
                    // Enabled again (or changed while idle): take back what
                    // it kept pending, in pages.
                    self.actor_for(&target).do_send(ReadBacklog);
                }
            },
            None => {
                if let Some(addr) = self.actors.remove(&msg.webhook_id) {
                    addr.do_send(Retarget(None));
                }
            }
        }
    }
}

/// Claims pending deliveries now. With `reclaim_own` (at start) this
/// instance's leases from a previous run count as free.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct ClaimPending {
    /// Take back this instance's own earlier leases too.
    pub reclaim_own: bool,
}

impl Handler<ClaimPending> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<usize, BrokerError>>;

    fn handle(&mut self, msg: ClaimPending, _: &mut Self::Context) -> Self::Result {
        self.claim(msg.reclaim_own)
    }
}

/// Puts finished deliveries of a webhook back in line, due now, and hands
/// them over if the webhook is enabled. Answers how many were requeued.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct Requeue {
    /// The webhook.
    pub webhook_id: String,
    /// Its deliveries to send again.
    pub delivery_ids: Vec<String>,
}

impl Handler<Requeue> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<usize, BrokerError>>;

    fn handle(&mut self, msg: Requeue, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let registry = self.registry.clone();
        let owner = self.leases.owner.clone();
        let lease_ms = self.lease_ms();
        let work = async move {
            let webhook_id = msg.webhook_id.clone();
            let requeued = actix_web::web::block(move || {
                let mut conn = pool.get()?;
                let now = now_ms();
                Ok::<_, BrokerError>(db::deliveries::requeue(
                    &mut conn,
                    &msg.webhook_id,
                    &msg.delivery_ids,
                    &owner,
                    now,
                    now + lease_ms,
                )?)
            })
            .await??;
            let targets = registry
                .send(Targets {
                    webhook_ids: vec![webhook_id],
                })
                .await?;
            Ok::<_, BrokerError>((requeued, targets))
        };
        Box::pin(work.into_actor(self).map(|res, act, _| {
            let (requeued, targets) = res?;
            if requeued > 0 {
                act.read_backlogs(&targets);
            }
            Ok(requeued)
        }))
    }
}

/// A clean stop: refuse new events, let attempts in flight finish (up to
/// `grace`), write every outcome, and give this instance's leases back.
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
        let work = async move {
            let all = futures_util::future::join_all(drains);
            if actix_web::rt::time::timeout(msg.grace, all).await.is_err() {
                log::warn!(
                    "shutdown grace of {:?} ran out with attempts in flight",
                    msg.grace
                );
            }
            let _ =
                actix_web::rt::time::timeout(Duration::from_secs(10), recorder.send(Flush)).await;
            let released = actix_web::web::block(move || {
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                db::deliveries::release_leases(&mut conn, &owner).map_err(|e| e.to_string())
            })
            .await;
            match released {
                Ok(Ok(n)) => log::info!("released {n} pending deliveries for the next run"),
                Ok(Err(e)) => log::warn!("could not release leases ({e}); they lapse on their own"),
                Err(_) => {}
            }
        };
        Box::pin(work.into_actor(self).map(|_, act, _| {
            for addr in act.actors.values() {
                addr.do_send(Retarget(None));
            }
            act.actors.clear();
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
        let (owner, lease_ms) = (self.leases.owner.clone(), self.lease_ms());
        let target = msg.target;
        let event = ChannelEvent::new(msg.app_id, msg.event, test_channel());
        let new = build(
            event,
            std::slice::from_ref(&target),
            now_ms(),
            &owner,
            lease_ms,
        );
        let webhook_id = target.webhook_id.clone();
        let work = async move {
            let stored = recorder.send(Persist(vec![new])).await??;
            let new = stored
                .into_iter()
                .next()
                .ok_or_else(|| BrokerError::Internal("the test event was not stored".into()))?;
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
                Some(target) => act.actor_for(&target).do_send(Deliver(job)),
                None => act.start_actor(&target).do_send(DeliverOnce(job)),
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
