//! App endpoints for a webhook's delivery log: list, inspect, send again,
//! recover. Scoped like the rest: the webhook must belong to the calling app
//! (else 404), and a delivery id is only found under its own webhook.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::AppAuth;
use super::openapi::EventName;
use super::webhooks::parse_page;
use super::{query, ApiState};
use crate::actors::dispatcher::Requeue;
use crate::actors::registry::GetWebhook;
use crate::db;
use crate::db::deliveries::LoggedDelivery;
use crate::db::models::AttemptRow;
pub use crate::domain::DeliveryStatus;
use crate::domain::EventKind;
use crate::error::{BrokerError, ErrorBody};

async fn owned_webhook(state: &ApiState, app: AppAuth, id: String) -> Result<String, BrokerError> {
    let webhook = state
        .registry
        .send(GetWebhook { app_id: app.0, id })
        .await??;
    Ok(webhook.id)
}

/// One delivery of an event to a webhook, as listed. `GET` on one delivery
/// answers the same fields, with `attempts` as the list of attempts
/// (`DeliveryDetail`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `msg_...`, the `webhook-id` header of every attempt.
    pub id: String,
    /// The event delivered, `evt_...`.
    pub event_id: String,
    /// The event's name.
    #[schema(value_type = EventName)]
    pub event: String,
    /// The channel's `id`, when it had one.
    #[schema(required = true)]
    pub channel_id: Option<String>,
    /// Where the delivery stands.
    pub status: DeliveryStatus,
    /// How many attempts were made.
    pub attempts: i32,
    /// The HTTP status of the last attempt, if it got one.
    #[schema(required = true)]
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed, if it did.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the next attempt is due, epoch milliseconds; only while pending.
    #[schema(required = true, format = Int64)]
    pub next_attempt_at: Option<i64>,
    /// Creation time, epoch milliseconds.
    #[schema(format = Int64)]
    pub created_at: i64,
    /// When it succeeded, epoch milliseconds.
    #[schema(required = true, format = Int64)]
    pub delivered_at: Option<i64>,
}

/// One delivery with every attempt, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetail {
    /// `msg_...`, the `webhook-id` header of every attempt.
    pub id: String,
    /// The event delivered, `evt_...`.
    pub event_id: String,
    /// The event's name.
    #[schema(value_type = EventName)]
    pub event: String,
    /// The channel's `id`, when it had one.
    #[schema(required = true)]
    pub channel_id: Option<String>,
    /// Where the delivery stands.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// The HTTP status of the last attempt, if it got one.
    #[schema(required = true)]
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed, if it did.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the next attempt is due, epoch milliseconds; only while pending.
    #[schema(required = true, format = Int64)]
    pub next_attempt_at: Option<i64>,
    /// Creation time, epoch milliseconds.
    #[schema(format = Int64)]
    pub created_at: i64,
    /// When it succeeded, epoch milliseconds.
    #[schema(required = true, format = Int64)]
    pub delivered_at: Option<i64>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// Its number, from 1.
    pub attempt: i32,
    /// When it started, epoch milliseconds.
    #[schema(format = Int64)]
    pub at: i64,
    /// How long it took, in milliseconds.
    #[schema(format = Int64)]
    pub duration_ms: i64,
    /// The receiver's HTTP status, if it answered.
    #[schema(required = true)]
    pub status_code: Option<i32>,
    /// Why it failed, if it did.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The start of the receiver's answer, capped.
    #[schema(required = true)]
    pub response_body: Option<String>,
}

fn view(
    LoggedDelivery {
        delivery: row,
        event,
    }: &LoggedDelivery,
) -> Delivery {
    Delivery {
        id: row.id.clone(),
        event_id: row.event_id.clone(),
        event: event.clone(),
        channel_id: row.channel_id.clone(),
        status: row.status,
        attempts: row.attempts,
        last_status_code: row.last_status_code,
        last_error: row.last_error.clone(),
        next_attempt_at: (row.status == DeliveryStatus::Pending).then_some(row.next_attempt_at),
        created_at: row.created_at,
        delivered_at: row.delivered_at,
    }
}

fn detail_view(delivery: &LoggedDelivery, attempts: &[AttemptRow]) -> DeliveryDetail {
    let d = view(delivery);
    DeliveryDetail {
        id: d.id,
        event_id: d.event_id,
        event: d.event,
        channel_id: d.channel_id,
        status: d.status,
        attempts: attempts.iter().map(attempt_view).collect(),
        last_status_code: d.last_status_code,
        last_error: d.last_error,
        next_attempt_at: d.next_attempt_at,
        created_at: d.created_at,
        delivered_at: d.delivered_at,
    }
}

fn attempt_view(a: &AttemptRow) -> Attempt {
    Attempt {
        attempt: a.attempt,
        at: a.at,
        duration_ms: a.duration_ms,
        status_code: a.status_code,
        error: a.error.clone(),
        response_body: a.response_body.clone(),
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// This page's deliveries, newest first.
    pub data: Vec<Delivery>,
    /// How many deliveries match in all.
    #[schema(format = Int64)]
    pub total: i64,
    /// How many deliveries are in this page.
    pub length: usize,
    /// The page number, from 0.
    pub page: usize,
}

/// The answer of a retry: the delivery is pending again.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetryAccepted {
    /// The delivery's id.
    pub id: String,
    /// Always `pending`.
    pub status: DeliveryStatus,
}

/// The answer of a recovery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries were sent again.
    pub requeued: usize,
}

/// `GET .../deliveries` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The page number, from 0 (default 0).
    #[param(value_type = usize, required = false)]
    page: Option<String>,
    /// Items per page, 1 to 100 (default 10).
    #[param(value_type = u8, required = false, minimum = 1, maximum = 100)]
    length: Option<String>,
    /// Keep only deliveries in this status.
    #[param(value_type = DeliveryStatus, required = false)]
    status: Option<String>,
    /// Keep only deliveries of this event.
    #[param(value_type = EventName, required = false)]
    event: Option<String>,
    /// Keep only deliveries for this channel id (the event's `channel.id`).
    #[serde(rename = "channelId")]
    #[param(rename = "channelId", value_type = String, required = false, example = "ch_42")]
    channel_id: Option<String>,
}

/// `GET /v1/webhook/{id}/deliveries?page&length&status&event&channelId`:
/// newest first.
#[utoipa::path(
    get,
    path = "/v1/webhook/{webhook_id}/deliveries",
    operation_id = "listDeliveries",
    tag = "deliveries",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`"), ListQuery),
    responses(
        (status = 200, description = "A page of the webhook's deliveries, newest first", body = DeliveryPage),
        (status = 400, description = "An invalid page, length, status, event or query string", body = ErrorBody),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
    ),
)]
pub async fn list(
    app: AppAuth,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, BrokerError> {
    let (page, length) = parse_page(q.page.as_deref(), q.length.as_deref())?;
    let status = match q.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            BrokerError::bad_request(
                "invalid_status",
                format!("status must be pending, succeeded or failed, not `{s}`"),
            )
        })?),
    };
    let event = match q.event.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) => Some(EventKind::parse(e)?.to_string()),
    };
    // A channel id is the sender's own string: matched exactly, untrimmed,
    // in the form it is stored in (a long one as its digest).
    let channel_id = q
        .channel_id
        .clone()
        .filter(|c| !c.is_empty())
        .and_then(|c| {
            let channel =
                serde_json::Map::from_iter([("id".to_owned(), serde_json::Value::from(c))]);
            crate::actors::dispatcher::channel_id(&channel)
        });
    let filter = db::deliveries::LogFilter {
        status,
        event,
        channel_id,
    };
    let webhook_id = owned_webhook(&state, app, path.into_inner()).await?;
    let offset = i64::try_from(page.saturating_mul(length)).unwrap_or(i64::MAX);
    let (rows, total) = query(state.pool.clone(), move |c| {
        db::deliveries::page(c, &webhook_id, &filter, offset, length as i64)
    })
    .await?;
    let data: Vec<Delivery> = rows.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(DeliveryPage {
        total,
        length: data.len(),
        data,
        page,
    }))
}

/// `GET /v1/webhook/{id}/deliveries/{deliveryId}`: with every attempt.
#[utoipa::path(
    get,
    path = "/v1/webhook/{webhook_id}/deliveries/{delivery_id}",
    operation_id = "getDelivery",
    tag = "deliveries",
    security(("app_key" = [])),
    params(
        ("webhook_id" = String, Path, description = "The webhook's id, `wh_...`"),
        ("delivery_id" = String, Path, description = "The delivery's id, `msg_...`"),
    ),
    responses(
        (status = 200, description = "The delivery with every attempt", body = DeliveryDetail),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app, or no such delivery under it", body = ErrorBody),
    ),
)]
pub async fn get(
    app: AppAuth,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, BrokerError> {
    let (webhook_id, delivery_id) = path.into_inner();
    let webhook_id = owned_webhook(&state, app, webhook_id).await?;
    let found = query(state.pool.clone(), move |c| {
        let Some(delivery) = db::deliveries::find(c, &webhook_id, &delivery_id)? else {
            return Ok(None);
        };
        let attempts = db::deliveries::attempts(c, &delivery.delivery.id)?;
        Ok(Some((delivery, attempts)))
    })
    .await?;
    let Some((delivery, attempts)) = found else {
        return Err(BrokerError::NotFound("delivery not found".into()));
    };
    Ok(HttpResponse::Ok().json(detail_view(&delivery, &attempts)))
}

/// `POST /v1/webhook/{id}/deliveries/{deliveryId}/retry`: one more attempt
/// now, same `webhook-id`.
#[utoipa::path(
    post,
    path = "/v1/webhook/{webhook_id}/deliveries/{delivery_id}/retry",
    operation_id = "retryDelivery",
    tag = "deliveries",
    security(("app_key" = [])),
    params(
        ("webhook_id" = String, Path, description = "The webhook's id, `wh_...`"),
        ("delivery_id" = String, Path, description = "The delivery's id, `msg_...`"),
    ),
    responses(
        (status = 202, description = "The delivery is pending again, due now", body = RetryAccepted),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app, or no such delivery under it", body = ErrorBody),
        (status = 409, description = "The delivery is already pending", body = ErrorBody),
    ),
)]
pub async fn retry(
    app: AppAuth,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, BrokerError> {
    let (webhook_id, delivery_id) = path.into_inner();
    let webhook_id = owned_webhook(&state, app, webhook_id).await?;
    let (w, d) = (webhook_id.clone(), delivery_id.clone());
    let found = query(state.pool.clone(), move |c| db::deliveries::find(c, &w, &d)).await?;
    let Some(LoggedDelivery { delivery: row, .. }) = found else {
        return Err(BrokerError::NotFound("delivery not found".into()));
    };
    if row.status == DeliveryStatus::Pending {
        return Err(BrokerError::Conflict(format!(
            "delivery is already pending; its next attempt is due at {}",
            row.next_attempt_at
        )));
    }
    state
        .dispatcher
        .send(Requeue {
            webhook_id,
            delivery_ids: vec![delivery_id.clone()],
        })
        .await??;
    Ok(HttpResponse::Accepted().json(RetryAccepted {
        id: delivery_id,
        status: DeliveryStatus::Pending,
    }))
}

/// `POST /v1/webhook/{id}/recover` body.
#[derive(Deserialize, ToSchema)]
pub struct RecoverBody {
    /// Send again every failed delivery created at or after this time,
    /// epoch milliseconds (>= 0).
    #[schema(format = Int64, minimum = 0, example = 1764324718000_i64)]
    since: i64,
}

/// `POST /v1/webhook/{id}/recover {"since"}`: every failed delivery created
/// since then is sent again, in order per channel.
#[utoipa::path(
    post,
    path = "/v1/webhook/{webhook_id}/recover",
    operation_id = "recoverWebhook",
    tag = "deliveries",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`")),
    request_body = RecoverBody,
    responses(
        (status = 202, description = "The failed deliveries are pending again", body = Recovered),
        (status = 400, description = "Malformed JSON or a negative since", body = ErrorBody),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A missing field or a wrong type", body = ErrorBody),
    ),
)]
pub async fn recover(
    app: AppAuth,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<RecoverBody>,
) -> Result<HttpResponse, BrokerError> {
    let since = body.since;
    if since < 0 {
        return Err(BrokerError::bad_request(
            "invalid_since",
            "since must be epoch milliseconds (>= 0)",
        ));
    }
    let webhook_id = owned_webhook(&state, app, path.into_inner()).await?;
    let w = webhook_id.clone();
    let ids = query(state.pool.clone(), move |c| {
        db::deliveries::failed_since(c, &w, since)
    })
    .await?;
    let requeued = if ids.is_empty() {
        0
    } else {
        state
            .dispatcher
            .send(Requeue {
                webhook_id,
                delivery_ids: ids,
            })
            .await??
    };
    Ok(HttpResponse::Accepted().json(Recovered { requeued }))
}
