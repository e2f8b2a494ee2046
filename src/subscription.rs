//! What a subscription is once loaded: an [`App`], a [`Webhook`] with its
//! validated URI, events, headers and throttle, and the [`DeliveryTarget`]
//! a delivery actor sends with. The registry actor owns the live set of
//! them ([`crate::actors::registry`]); this module only says what they are
//! and how they map to their rows.

use std::sync::Arc;

use crate::db::models::WebhookRow;
pub use crate::domain::WebhookStatus;
use crate::domain::{CustomHeaders, EventSet, Throttle, WebhookUri};
use crate::signature;

/// An app, as the registry keeps it.
#[derive(Debug, Clone)]
pub struct App {
    /// `app_...`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, epoch ms.
    pub created_at: i64,
}

/// A webhook, as the registry keeps it and the API shows it.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `wh_...`.
    pub id: String,
    /// The owning app.
    pub app_id: String,
    /// Where deliveries go.
    pub uri: WebhookUri,
    /// What it subscribes to.
    pub events: EventSet,
    /// The signing secret, `whsec_...`.
    pub secret: String,
    /// Enabled or disabled.
    pub status: WebhookStatus,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled, epoch ms.
    pub disabled_at: Option<i64>,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// Last change, epoch ms.
    pub updated_at: i64,
    /// The secret before the last rotation and when it stops signing.
    pub previous_secret: Option<(String, i64)>,
    /// Extra headers sent on every attempt (not signed).
    pub headers: CustomHeaders,
    /// Its rate limit and concurrency cap.
    pub throttle: Throttle,
}

impl Webhook {
    /// The row it is stored as.
    pub fn to_row(&self) -> WebhookRow {
        WebhookRow {
            id: self.id.clone(),
            app_id: self.app_id.clone(),
            uri: self.uri.as_str().to_owned(),
            events: self.events.to_storage(),
            secret: self.secret.clone(),
            status: self.status,
            disabled_reason: self.disabled_reason.clone(),
            disabled_at: self.disabled_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            previous_secret: self.previous_secret.as_ref().map(|(s, _)| s.clone()),
            previous_secret_expires_at: self.previous_secret.as_ref().map(|(_, t)| *t),
            headers: self.headers.to_storage(),
            rate_limit: self
                .throttle
                .rate_limit
                .map(|n| n.min(i32::MAX as u32) as i32),
            max_concurrency: self.throttle.max_concurrency as i32,
        }
    }

    /// A stored row, checked again (a row written by hand may not parse).
    pub fn from_row(row: WebhookRow) -> Result<Self, String> {
        // Stored URIs were validated when written; the private-target rule is
        // not re-applied here so that a change of setting cannot make stored
        // webhooks vanish at start.
        let uri = WebhookUri::parse(&row.uri, true).map_err(|e| e.to_string())?;
        let events = EventSet::parse_list(&row.events).map_err(|e| e.to_string())?;
        let headers = CustomHeaders::from_storage(&row.headers)?;
        Ok(Webhook {
            id: row.id,
            app_id: row.app_id,
            uri,
            events,
            secret: row.secret,
            status: row.status,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            previous_secret: row.previous_secret.zip(row.previous_secret_expires_at),
            headers,
            throttle: Throttle::from_storage(row.rate_limit, row.max_concurrency),
        })
    }

    /// What a delivery actor needs to reach and sign for this webhook.
    pub fn target(&self) -> Arc<DeliveryTarget> {
        Arc::new(DeliveryTarget {
            webhook_id: self.id.clone(),
            url: self.uri.url().clone(),
            signing_key: signature::signing_key(&self.secret),
            previous_key: self
                .previous_secret
                .as_ref()
                .map(|(s, until)| (signature::signing_key(s), *until)),
            headers: self
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    // Checked when written; a stored header awc cannot
                    // send is left out rather than failing every attempt.
                    let header = (
                        awc::http::header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                        awc::http::header::HeaderValue::from_str(value).ok()?,
                    );
                    Some(header)
                })
                .collect(),
            throttle: self.throttle,
        })
    }
}

/// Where and how to deliver for one webhook. Shared, immutable; a change
/// to the webhook produces a new one.
pub struct DeliveryTarget {
    /// The webhook.
    pub webhook_id: String,
    /// The URL to POST to.
    pub url: url::Url,
    /// The HMAC key of the current secret.
    pub signing_key: Vec<u8>,
    /// The key of the secret before a rotation, and until when (epoch ms)
    /// it still signs.
    pub previous_key: Option<(Vec<u8>, i64)>,
    /// The webhook's custom headers, sent on every attempt.
    pub headers: Vec<(
        awc::http::header::HeaderName,
        awc::http::header::HeaderValue,
    )>,
    /// How hard its receiver may be driven.
    pub throttle: Throttle,
}

impl DeliveryTarget {
    /// The keys that sign an attempt made at `now_ms`: the current one, and
    /// the previous one while its grace lasts.
    pub fn keys_at(&self, now_ms: i64) -> Vec<&[u8]> {
        let mut keys = vec![self.signing_key.as_slice()];
        if let Some((key, until)) = &self.previous_key {
            if now_ms < *until {
                keys.push(key.as_slice());
            }
        }
        keys
    }
}

impl std::fmt::Debug for DeliveryTarget {
    // Keys must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryTarget")
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}
