//! Row types, one per table, as Diesel reads and writes them.

use diesel::prelude::*;

use super::schema::{apps, deliveries, delivery_attempts, events, webhooks};
use crate::domain::{DeliveryStatus, WebhookStatus};

/// An app (tenant). The API key itself is never stored, only its SHA-256.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = apps, treat_none_as_default_value = false)]
pub struct AppRow {
    pub id: String,
    pub name: String,
    pub api_key_hash: String,
    pub created_at: i64,
}

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhooks, treat_none_as_default_value = false)]
pub struct WebhookRow {
    pub id: String,
    pub app_id: String,
    pub uri: String,
    /// Event names joined by commas, in API order.
    pub events: String,
    pub secret: String,
    pub status: WebhookStatus,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The secret before the last rotation, still signing until it expires.
    pub previous_secret: Option<String>,
    /// When `previous_secret` stops signing, epoch ms.
    pub previous_secret_expires_at: Option<i64>,
    /// Custom headers sent on every attempt: a JSON object of strings.
    pub headers: String,
    /// Deliveries per second at most; `None`: unlimited.
    pub rate_limit: Option<i32>,
    /// Requests in flight at most.
    pub max_concurrency: i32,
}

impl WebhookRow {
    /// A new enabled webhook of `app_id`, created `now`, with a fresh
    /// secret, no custom headers and the default throttle: what a seeding
    /// tool or a test writes straight into the table (the API goes through
    /// [`crate::subscription::Webhook`]).
    pub fn enabled(id: &str, app_id: &str, uri: &str, events: &str, now: i64) -> WebhookRow {
        WebhookRow {
            id: id.to_owned(),
            app_id: app_id.to_owned(),
            uri: uri.to_owned(),
            events: events.to_owned(),
            secret: crate::signature::generate_secret(),
            status: WebhookStatus::Enabled,
            disabled_reason: None,
            disabled_at: None,
            created_at: now,
            updated_at: now,
            previous_secret: None,
            previous_secret_expires_at: None,
            headers: "{}".into(),
            rate_limit: None,
            max_concurrency: crate::domain::DEFAULT_CONCURRENCY as i32,
        }
    }
}

/// An accepted event with the exact body every webhook receives.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
pub struct EventRow {
    pub id: String,
    pub app_id: String,
    pub event: String,
    pub channel_id: Option<String>,
    pub event_time: i64,
    pub payload: String,
    pub created_at: i64,
    /// Its place in the order of events, from the database's sequence
    /// (given by [`super::deliveries::insert_events`]; 0 until then).
    pub seq: i64,
}

/// One event to one webhook. Its id is the `webhook-id` header.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = deliveries, treat_none_as_default_value = false)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub webhook_id: String,
    pub channel_id: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    /// Its event's sequence number: the order of a channel's deliveries.
    pub seq: i64,
}

/// The outcome of one HTTP attempt.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = delivery_attempts, treat_none_as_default_value = false)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempt: i32,
    pub at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
}
