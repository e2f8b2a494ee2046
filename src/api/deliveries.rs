//! App endpoints for a webhook's delivery log: list, inspect, send again,
//! recover. Scoped like the rest: the webhook must belong to the calling app
//! (else 404), and a delivery id is only found under its own webhook.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AppAuth;
use super::webhooks::parse_page;
use super::ApiState;
use crate::actors::dispatcher::Requeue;
use crate::actors::registry::GetWebhook;
use crate::db::deliveries::LoggedDelivery;
use crate::db::models::{status, AttemptRow};
use crate::db::{self, Pool};
use crate::error::BrokerError;

async fn owned_webhook(state: &ApiState, app: AppAuth, id: String) -> Result<String, BrokerError> {
    let webhook = state
        .registry
        .send(GetWebhook { app_id: app.0, id })
        .await??;
    Ok(webhook.id)
}

async fn query<T: Send + 'static>(
    pool: Pool,
    f: impl FnOnce(&mut db::DbConn) -> diesel::QueryResult<T> + Send + 'static,
) -> Result<T, BrokerError> {
    web::block(move || {
        let mut conn = pool.get()?;
        Ok::<_, BrokerError>(f(&mut conn)?)
    })
    .await?
}

fn view((row, event): &LoggedDelivery) -> Value {
    json!({
        "id": row.id,
        "eventId": row.event_id,
        "event": event,
        "channelId": row.channel_id,
        "status": row.status,
        "attempts": row.attempts,
        "lastStatusCode": row.last_status_code,
        "lastError": row.last_error,
        "nextAttemptAt": (row.status == status::PENDING).then_some(row.next_attempt_at),
        "createdAt": row.created_at,
        "deliveredAt": row.delivered_at,
    })
}

fn attempt_view(a: &AttemptRow) -> Value {
    json!({
        "attempt": a.attempt,
        "at": a.at,
        "durationMs": a.duration_ms,
        "statusCode": a.status_code,
        "error": a.error,
        "responseBody": a.response_body,
    })
}

/// `GET .../deliveries` query.
#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    length: Option<String>,
    status: Option<String>,
}

/// `GET /v1/webhook/{id}/deliveries?page&length&status`: newest first.
pub async fn list(
    app: AppAuth,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, BrokerError> {
    let (page, length) = parse_page(q.page.as_deref(), q.length.as_deref())?;
    let filter = match q.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s @ (status::PENDING | status::SUCCEEDED | status::FAILED)) => Some(s.to_owned()),
        Some(other) => {
            return Err(BrokerError::bad_request(
                "invalid_status",
                format!("status must be pending, succeeded or failed, not `{other}`"),
            ))
        }
    };
    let webhook_id = owned_webhook(&state, app, path.into_inner()).await?;
    let offset = i64::try_from(page.saturating_mul(length)).unwrap_or(i64::MAX);
    let (rows, total) = query(state.pool.clone(), move |c| {
        db::deliveries::page(c, &webhook_id, filter.as_deref(), offset, length as i64)
    })
    .await?;
    let data: Vec<Value> = rows.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({
        "data": data,
        "total": total,
        "length": data.len(),
        "page": page,
    })))
}

/// `GET /v1/webhook/{id}/deliveries/{deliveryId}`: with every attempt.
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
        let attempts = db::deliveries::attempts(c, &delivery.0.id)?;
        Ok(Some((delivery, attempts)))
    })
    .await?;
    let Some((delivery, attempts)) = found else {
        return Err(BrokerError::NotFound("delivery not found".into()));
    };
    let mut v = view(&delivery);
    v["attempts"] = Value::Array(attempts.iter().map(attempt_view).collect());
    Ok(HttpResponse::Ok().json(v))
}

/// `POST /v1/webhook/{id}/deliveries/{deliveryId}/retry`: one more attempt
/// now, same `webhook-id`.
pub async fn retry(
    app: AppAuth,
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, BrokerError> {
    let (webhook_id, delivery_id) = path.into_inner();
    let webhook_id = owned_webhook(&state, app, webhook_id).await?;
    let (w, d) = (webhook_id.clone(), delivery_id.clone());
    let found = query(state.pool.clone(), move |c| db::deliveries::find(c, &w, &d)).await?;
    let Some((row, _)) = found else {
        return Err(BrokerError::NotFound("delivery not found".into()));
    };
    if row.status == status::PENDING {
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
    Ok(HttpResponse::Accepted().json(json!({ "id": delivery_id, "status": status::PENDING })))
}

/// `POST /v1/webhook/{id}/recover` body.
#[derive(Deserialize)]
pub struct RecoverBody {
    since: i64,
}

/// `POST /v1/webhook/{id}/recover {"since"}`: every failed delivery created
/// since then is sent again, in order per channel.
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
    Ok(HttpResponse::Accepted().json(json!({ "requeued": requeued })))
}
