//! Admin endpoints: creating apps and ingesting events over HTTP.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Admin;
use super::ApiState;
use crate::actors::dispatcher::ChannelEvent;
use crate::actors::registry::CreateApp;
use crate::domain::EventKind;
use crate::error::BrokerError;

/// `POST /v1/apps`.
#[derive(Deserialize)]
pub struct CreateAppBody {
    name: String,
}

/// Creates an app; its API key is in this answer only.
pub async fn create_app(
    _: Admin,
    state: web::Data<ApiState>,
    body: web::Json<CreateAppBody>,
) -> Result<HttpResponse, BrokerError> {
    let name = body.into_inner().name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(BrokerError::bad_request(
            "invalid_name",
            "name must be 1 to 255 characters",
        ));
    }
    let created = state.registry.send(CreateApp { name }).await??;
    Ok(HttpResponse::Created().json(json!({
        "id": created.app.id,
        "name": created.app.name,
        "apiKey": created.api_key,
        "createdAt": created.app.created_at,
    })))
}

/// `POST /v1/events`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestBody {
    event: String,
    app_id: String,
    event_time: Option<i64>,
    channel: Value,
}

/// Accepts a channel event; answers once it is durable.
pub async fn ingest_event(
    _: Admin,
    state: web::Data<ApiState>,
    body: web::Json<IngestBody>,
) -> Result<HttpResponse, BrokerError> {
    let body = body.into_inner();
    let event = EventKind::parse(&body.event).map_err(BrokerError::from)?;
    let Value::Object(channel) = body.channel else {
        return Err(BrokerError::bad_request(
            "invalid_channel",
            "channel must be a JSON object",
        ));
    };
    if body.event_time.is_some_and(|t| t < 0) {
        return Err(BrokerError::bad_request(
            "invalid_event_time",
            "eventTime must be epoch milliseconds (>= 0)",
        ));
    }
    let accepted = state
        .dispatcher
        .send(ChannelEvent {
            app_id: body.app_id,
            event,
            event_time: body.event_time,
            channel,
        })
        .await??;
    Ok(HttpResponse::Accepted().json(json!({
        "id": accepted.id,
        "deliveries": accepted.deliveries,
    })))
}
