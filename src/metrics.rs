//! Prometheus metrics, one set per process, exposed at `GET /metrics` in
//! the text exposition format. Names follow Prometheus conventions
//! (`webhook_broker_` prefix, `_total` counters, seconds as the base unit).
//! Labels carry only bounded, non-secret values (event names, outcomes):
//! never an app, webhook, URL or key.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `event` label: the event's wire name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// `channel_live`, `channel_stop` or `channel_ended`.
    pub event: &'static str,
}

/// `outcome` label of an attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `succeeded`, `retried` or `failed`.
    pub outcome: &'static str,
}

/// Every metric the broker keeps.
pub struct Metrics {
    registry: Registry,
    /// Events accepted (durable), by event.
    pub events_ingested: Family<EventLabel, Counter>,
    /// Delivery attempts by what came of them.
    pub delivery_outcomes: Family<OutcomeLabel, Counter>,
    /// How long attempts took, in seconds.
    pub attempt_duration: Histogram,
    /// Deliveries this instance holds and has not finished.
    pub deliveries_pending: Gauge,
    /// Attempts whose POST is under way.
    pub deliveries_in_flight: Gauge,
    /// Webhooks registered (enabled or not).
    pub webhooks_registered: Gauge,
    /// Webhooks disabled.
    pub webhooks_disabled: Gauge,
    /// Database operations that failed.
    pub database_errors: Counter,
    /// Webhook leases this instance holds: the webhooks it sends.
    pub webhook_leases_held: Gauge,
    /// Webhook leases lost to another instance (this one was paused, cut
    /// off or slow past its lease).
    pub webhook_leases_lost: Counter,
    /// Attempt outcomes refused because their lease was lost meanwhile.
    pub outcomes_fenced: Counter,
    /// Due deliveries held back by a webhook's rate limit or concurrency cap.
    pub deliveries_throttled: Counter,
    /// Bodies read again for an attempt after a long wait let them go.
    pub bodies_read_again: Counter,
    /// Attempt outcomes made and not yet committed to the database.
    pub outcomes_unwritten: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("webhook_broker");
        let m = Metrics {
            events_ingested: Family::default(),
            delivery_outcomes: Family::default(),
            // 1 ms .. ~65 s.
            attempt_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            deliveries_pending: Gauge::default(),
            deliveries_in_flight: Gauge::default(),
            webhooks_registered: Gauge::default(),
            webhooks_disabled: Gauge::default(),
            database_errors: Counter::default(),
            webhook_leases_held: Gauge::default(),
            webhook_leases_lost: Counter::default(),
            outcomes_fenced: Counter::default(),
            deliveries_throttled: Counter::default(),
            bodies_read_again: Counter::default(),
            outcomes_unwritten: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_ingested",
            "Channel events accepted and made durable",
            m.events_ingested.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery attempts by outcome: succeeded, retried (will be tried again) or failed (gave up)",
            m.delivery_outcomes.clone(),
        );
        registry.register(
            "delivery_attempt_duration_seconds",
            "Time from sending a delivery to the receiver's answer or the error",
            m.attempt_duration.clone(),
        );
        registry.register(
            "deliveries_pending",
            "Deliveries this instance holds that have not succeeded or failed yet",
            m.deliveries_pending.clone(),
        );
        registry.register(
            "deliveries_in_flight",
            "Delivery attempts whose request is under way",
            m.deliveries_in_flight.clone(),
        );
        registry.register(
            "webhooks_registered",
            "Webhooks registered, enabled or disabled",
            m.webhooks_registered.clone(),
        );
        registry.register(
            "webhooks_disabled",
            "Webhooks disabled (by the app, a 410, or too long without a success)",
            m.webhooks_disabled.clone(),
        );
        registry.register(
            "database_errors",
            "Database operations that failed",
            m.database_errors.clone(),
        );
        registry.register(
            "webhook_leases_held",
            "Webhook leases this instance holds: the webhooks whose deliveries it sends",
            m.webhook_leases_held.clone(),
        );
        registry.register(
            "webhook_leases_lost",
            "Webhook leases lost to another instance (this one was paused, cut off or slow past its lease)",
            m.webhook_leases_lost.clone(),
        );
        registry.register(
            "deliveries_throttled",
            "Due deliveries held back by their webhook's rateLimit or maxConcurrency (they wait; the wait is not an attempt)",
            m.deliveries_throttled.clone(),
        );
        registry.register(
            "delivery_bodies_read_again",
            "Delivery bodies read back from the database for an attempt, after a wait of over 10 s let them go from memory",
            m.bodies_read_again.clone(),
        );
        registry.register(
            "delivery_outcomes_unwritten",
            "Attempt outcomes made and not yet committed; delivery actors pause new attempts while this is high, and a crash would send these deliveries again",
            m.outcomes_unwritten.clone(),
        );
        registry.register(
            "delivery_outcomes_fenced",
            "Attempt outcomes not written because their webhook's lease had passed to another instance",
            m.outcomes_fenced.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_by_convention() {
        let m = metrics();
        m.events_ingested
            .get_or_create(&EventLabel {
                event: "channel_live",
            })
            .inc();
        m.delivery_outcomes
            .get_or_create(&OutcomeLabel {
                outcome: "succeeded",
            })
            .inc();
        m.attempt_duration.observe(0.01);
        let text = m.encode();
        for name in [
            "webhook_broker_events_ingested_total{event=\"channel_live\"}",
            "webhook_broker_delivery_attempts_total{outcome=\"succeeded\"}",
            "webhook_broker_delivery_attempt_duration_seconds_bucket",
            "webhook_broker_deliveries_pending",
            "webhook_broker_deliveries_in_flight",
            "webhook_broker_webhooks_registered",
            "webhook_broker_webhooks_disabled",
            "webhook_broker_database_errors_total",
            "webhook_broker_webhook_leases_held",
            "webhook_broker_webhook_leases_lost_total",
            "webhook_broker_delivery_outcomes_fenced_total",
            "webhook_broker_deliveries_throttled_total",
            "webhook_broker_delivery_bodies_read_again_total",
            "webhook_broker_delivery_outcomes_unwritten",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
