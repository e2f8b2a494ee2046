//! A `WebhookDelivery` actor owns the delivery of everything due to one
//! webhook: its current target (URL and signing keys) and the timers of its
//! pending retries. It POSTs each delivery with the arbiter's shared `awc`
//! client, signs every attempt afresh, records the attempt and the
//! delivery's new state in the database (on the blocking pool, never on the
//! arbiter), and schedules the next attempt from the retry policy. One actor
//! runs per active webhook, started on demand by the dispatcher on one of the
//! delivery arbiters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web::Bytes;

use super::registry::DeliveryTarget;
use crate::db::deliveries::AttemptOutcome;
use crate::db::models::{status, AttemptRow};
use crate::db::{self, now_ms, Pool};
use crate::{policy, signature};

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
}

/// One delivery due to the actor's webhook.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// `msg_...`, also the `webhook-id` header.
    pub delivery_id: String,
    /// The exact body to POST.
    pub body: Bytes,
    /// Attempts already made.
    pub attempts_made: u32,
    /// When the next attempt is due, epoch ms.
    pub due_at: i64,
}

thread_local! {
    // awc's client is not `Send`: one per arbiter thread, shared by every
    // delivery actor on it so connections are pooled and kept alive.
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_redirects()
        .no_default_headers()
        .finish();
}

/// The delivery actor of one webhook.
pub struct WebhookDelivery {
    target: Arc<DeliveryTarget>,
    pool: Pool,
    policy: Arc<DeliveryPolicy>,
    client: awc::Client,
}

impl WebhookDelivery {
    /// Must be called on the arbiter the actor will run on.
    pub fn new(target: Arc<DeliveryTarget>, pool: Pool, policy: Arc<DeliveryPolicy>) -> Self {
        WebhookDelivery {
            target,
            pool,
            policy,
            client: CLIENT.with(Clone::clone),
        }
    }

    fn schedule(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        let wait = job.due_at - now_ms();
        if wait > 0 {
            ctx.run_later(Duration::from_millis(wait as u64), move |act, ctx| {
                act.attempt(job, ctx)
            });
        } else {
            self.attempt(job, ctx);
        }
    }

    fn attempt(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        let timestamp = now_ms() / 1000;
        let keys: Vec<&[u8]> = self.target.signing_keys.iter().map(Vec::as_slice).collect();
        let signature = signature::signature_header(&keys, &job.delivery_id, timestamp, &job.body);
        let request = self
            .client
            .post(self.target.url.as_str())
            .timeout(self.policy.timeout)
            .insert_header(("content-type", "application/json"))
            .insert_header(("user-agent", USER_AGENT))
            .insert_header(("webhook-id", job.delivery_id.as_str()))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header(("webhook-signature", signature));
        let body = job.body.clone();
        let started_at = now_ms();
        let clock = Instant::now();
        let send = async move {
            match request.send_body(body).await {
                Ok(mut response) => {
                    let code = response.status().as_u16();
                    let text = response
                        .body()
                        .limit(MAX_RESPONSE_READ)
                        .await
                        .ok()
                        .map(|b| truncate_utf8(&b, MAX_RESPONSE_KEPT));
                    Sent {
                        status_code: Some(code),
                        error: None,
                        response_body: text,
                    }
                }
                Err(e) => Sent {
                    status_code: None,
                    error: Some(e.to_string()),
                    response_body: None,
                },
            }
        };
        ctx.spawn(
            send.into_actor(self)
                .map(move |sent, act, ctx| act.finish(job, started_at, clock.elapsed(), sent, ctx)),
        );
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
        let succeeded = sent.status_code.is_some_and(policy::is_success);
        let error = match (&sent.error, sent.status_code) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(code)) if !succeeded => Some(format!("receiver answered HTTP {code}")),
            _ => None,
        };
        let now = now_ms();
        let retry = (!succeeded)
            .then(|| policy::next_delay(&self.policy.retry_schedule, attempt_no))
            .flatten();
        let outcome = match (succeeded, retry) {
            (true, _) => AttemptOutcome {
                status: status::SUCCEEDED,
                next_attempt_at: now,
                delivered_at: Some(now),
            },
            (false, Some(delay)) => AttemptOutcome {
                status: status::PENDING,
                next_attempt_at: now + delay.as_millis() as i64,
                delivered_at: None,
            },
            (false, None) => AttemptOutcome {
                status: status::FAILED,
                next_attempt_at: now,
                delivered_at: None,
            },
        };
        log::debug!(
            "delivery {} to webhook {} attempt {attempt_no}: {}",
            job.delivery_id,
            self.target.webhook_id,
            outcome.status
        );
        let row = AttemptRow {
            delivery_id: job.delivery_id.clone(),
            attempt: attempt_no as i32,
            at: started_at,
            duration_ms: took.as_millis() as i64,
            status_code: sent.status_code.map(i32::from),
            error,
            response_body: sent.response_body,
        };
        job.attempts_made = attempt_no;
        job.due_at = outcome.next_attempt_at;
        let pool = self.pool.clone();
        let record = actix_web::web::block(move || {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            db::deliveries::record_attempt(&mut conn, &row, &outcome).map_err(|e| e.to_string())
        });
        // The retry is scheduled only once the attempt is recorded, so the
        // database never sees attempt n+1 before attempt n.
        ctx.spawn(record.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("could not record delivery {}: {e}", job.delivery_id),
                Err(e) => log::error!("could not record delivery {}: {e}", job.delivery_id),
            }
            if retry.is_some() {
                act.schedule(job, ctx);
            }
        }));
    }
}

struct Sent {
    status_code: Option<u16>,
    error: Option<String>,
    response_body: Option<String>,
}

fn truncate_utf8(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    text.into_owned()
}

impl Actor for WebhookDelivery {
    type Context = Context<Self>;
}

/// Delivers one job when it is due.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub DeliveryJob);

impl Handler<Deliver> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.schedule(msg.0, ctx);
    }
}

/// Points the actor at a changed webhook, or stops it (`None`) when the
/// webhook is gone or disabled; pending timers stop with it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Retarget(pub Option<Arc<DeliveryTarget>>);

impl Handler<Retarget> for WebhookDelivery {
    type Result = ();

    fn handle(&mut self, msg: Retarget, ctx: &mut Self::Context) {
        match msg.0 {
            Some(target) => self.target = target,
            None => ctx.stop(),
        }
    }
}
