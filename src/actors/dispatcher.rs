//! The dispatcher owns the hand-off from an accepted channel event to the
//! per-webhook delivery actors. For each [`ChannelEvent`] it asks the
//! registry which webhooks match, commits the event and one delivery per
//! webhook to the database (the outbox), and only then hands each delivery
//! to its webhook's actor and acknowledges: an acknowledged event is durable.
//! It owns the map of running delivery actors, starts them on demand spread
//! over the delivery arbiters, and forwards webhook changes to them. At start
//! it resumes every delivery still pending in the database.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::web::Bytes;
use serde_json::{Map, Value};

use super::delivery::{Deliver, DeliveryJob, DeliveryPolicy, Retarget, WebhookDelivery};
use super::registry::{DeliveryTarget, MatchWebhooks, Registry, Targets, WebhookChanged};
use crate::db::models::{status, DeliveryRow, EventRow};
use crate::db::{self, now_ms, Pool};
use crate::domain::EventKind;
use crate::error::BrokerError;

/// The dispatcher actor.
pub struct Dispatcher {
    registry: Addr<Registry>,
    pool: Pool,
    policy: Arc<DeliveryPolicy>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    actors: HashMap<String, Addr<WebhookDelivery>>,
}

impl Dispatcher {
    /// A dispatcher that starts delivery actors on `arbiters`.
    pub fn new(
        registry: Addr<Registry>,
        pool: Pool,
        policy: Arc<DeliveryPolicy>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        assert!(!arbiters.is_empty(), "at least one delivery arbiter");
        Dispatcher {
            registry,
            pool,
            policy,
            arbiters,
            next_arbiter: 0,
            actors: HashMap::new(),
        }
    }

    /// The running actor of a webhook, started on demand.
    fn actor_for(&mut self, target: &Arc<DeliveryTarget>) -> Addr<WebhookDelivery> {
        if let Some(addr) = self.actors.get(&target.webhook_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let target_id = target.webhook_id.clone();
        let (target, pool, policy) = (target.clone(), self.pool.clone(), self.policy.clone());
        let addr = WebhookDelivery::start_in_arbiter(arbiter, move |_| {
            WebhookDelivery::new(target, pool, policy)
        });
        self.actors.insert(target_id, addr.clone());
        addr
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Channel services may send many events at once; let them queue.
        ctx.set_mailbox_capacity(4096);
    }
}

/// A channel lifecycle event reported by a channel service. Send it to the
/// dispatcher's address; the reply comes once the event is durable.
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
}

impl ChannelEvent {
    /// An event that happened now.
    pub fn new(app_id: impl Into<String>, event: EventKind, channel: Map<String, Value>) -> Self {
        ChannelEvent {
            app_id: app_id.into(),
            event,
            event_time: None,
            channel,
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

/// The channel's `id` as text, whatever JSON type it has, for ordering.
fn channel_id(channel: &Map<String, Value>) -> Option<String> {
    match channel.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Handler<ChannelEvent> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<EventAccepted, BrokerError>>;

    fn handle(&mut self, msg: ChannelEvent, _: &mut Self::Context) -> Self::Result {
        let registry = self.registry.clone();
        let pool = self.pool.clone();
        let work = async move {
            let targets = registry
                .send(MatchWebhooks {
                    app_id: msg.app_id.clone(),
                    event: msg.event,
                })
                .await??;
            let now = now_ms();
            let event_time = msg.event_time.unwrap_or(now);
            let payload = delivery_body(msg.event, event_time, &msg.channel);
            let channel_id = channel_id(&msg.channel);
            let event = EventRow {
                id: db::new_id("evt"),
                app_id: msg.app_id,
                event: msg.event.as_str().to_owned(),
                channel_id: channel_id.clone(),
                event_time,
                payload,
                created_at: now,
            };
            let rows: Vec<DeliveryRow> = targets
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
                    lease_owner: None,
                    lease_until: None,
                })
                .collect();
            let (event, rows) = actix_web::web::block(move || {
                let mut conn = pool.get()?;
                db::deliveries::insert_event(&mut conn, &event, &rows)?;
                Ok::<_, BrokerError>((event, rows))
            })
            .await??;
            Ok::<_, BrokerError>((event, rows, targets))
        };
        Box::pin(work.into_actor(self).map(|res, act, _| {
            let (event, rows, targets) = res?;
            let body = Bytes::from(event.payload);
            let deliveries = rows.len();
            for (row, target) in rows.into_iter().zip(targets) {
                act.actor_for(&target).do_send(Deliver(DeliveryJob {
                    delivery_id: row.id,
                    body: body.clone(),
                    attempts_made: 0,
                    due_at: row.next_attempt_at,
                }));
            }
            Ok(EventAccepted {
                id: event.id,
                deliveries,
            })
        }))
    }
}

impl Handler<WebhookChanged> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: WebhookChanged, _: &mut Self::Context) {
        match msg.target {
            Some(target) => {
                if let Some(addr) = self.actors.get(&msg.webhook_id) {
                    addr.do_send(Retarget(Some(target)));
                }
            }
            None => {
                if let Some(addr) = self.actors.remove(&msg.webhook_id) {
                    addr.do_send(Retarget(None));
                }
            }
        }
    }
}

/// Hands every delivery still pending in the database to its actor: what a
/// previous run accepted but did not finish.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct ResumePending;

impl Handler<ResumePending> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<usize, BrokerError>>;

    fn handle(&mut self, _: ResumePending, _: &mut Self::Context) -> Self::Result {
        let registry = self.registry.clone();
        let pool = self.pool.clone();
        let work = async move {
            let pending = actix_web::web::block(move || {
                let mut conn = pool.get()?;
                Ok::<_, BrokerError>(db::deliveries::pending(&mut conn)?)
            })
            .await??;
            let mut ids: Vec<String> = pending.iter().map(|(d, _)| d.webhook_id.clone()).collect();
            ids.sort();
            ids.dedup();
            let targets = registry.send(Targets { webhook_ids: ids }).await?;
            Ok::<_, BrokerError>((pending, targets))
        };
        Box::pin(work.into_actor(self).map(|res, act, _| {
            let (pending, targets) = res?;
            let mut resumed = 0;
            for (row, payload) in pending {
                let Some(target) = targets.get(&row.webhook_id) else {
                    continue;
                };
                act.actor_for(target).do_send(Deliver(DeliveryJob {
                    delivery_id: row.id,
                    body: Bytes::from(payload),
                    attempts_made: row.attempts.max(0) as u32,
                    due_at: row.next_attempt_at,
                }));
                resumed += 1;
            }
            if resumed > 0 {
                log::info!("resumed {resumed} pending deliveries");
            }
            Ok(resumed)
        }))
    }
}
