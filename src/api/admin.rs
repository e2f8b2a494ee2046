//! Admin endpoints: creating apps and ingesting events over HTTP.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{Admin, Ingestor};
use super::openapi::{EventName, IdempotencyHeader};
use super::{idempotent, json_text, ApiState, IdempotencyKey};
use crate::actors::dispatcher::ChannelEvent;
use crate::actors::registry::CreateApp;
use crate::domain::EventKind;
use crate::error::{BrokerError, ErrorBody};
use crate::idempotency::scope;

/// `POST /v1/apps`.
#[derive(Deserialize, ToSchema)]
pub struct CreateAppBody {
    /// Display name, 1 to 255 characters once surrounding spaces are trimmed.
    #[schema(min_length = 1, max_length = 255, example = "demo")]
    name: String,
}

/// The answer of `POST /v1/apps`: the only one that shows the API key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApp {
    /// `app_...`.
    #[schema(example = "app_019ac9f2b6d17c02a8e41f5b3c9d7e20")]
    pub id: String,
    /// The trimmed display name.
    pub name: String,
    /// The app's API key, `wbk_...`; the broker keeps only its SHA-256.
    #[schema(example = "wbk_...")]
    pub api_key: String,
    /// Creation time, epoch milliseconds.
    #[schema(format = Int64)]
    pub created_at: i64,
}

/// Creates an app; its API key is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/apps",
    operation_id = "createApp",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = CreateAppBody,
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "The app, with its API key (replayed, with the same key, for a retry with the same Idempotency-Key)", body = CreatedApp,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for an Idempotency-Key"))),
        (status = 400, description = "Malformed JSON, an invalid name or an invalid Idempotency-Key", body = ErrorBody),
        super::openapi::AdminFailures,
        (status = 409, description = "A request with the same Idempotency-Key is in flight (`idempotency_key_in_use`)", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A missing field or a wrong type, or an Idempotency-Key already used for a different request (`idempotency_key_reused`)", body = ErrorBody),
    ),
)]
pub async fn create_app(
    _: Admin,
    key: IdempotencyKey,
    state: web::Data<ApiState>,
    body: web::Json<CreateAppBody>,
) -> Result<HttpResponse, BrokerError> {
    // The same rule as `webhook-broker apps create`.
    let name = crate::db::apps::normalize_name(&body.into_inner().name).ok_or_else(|| {
        BrokerError::bad_request("invalid_name", "name must be 1 to 255 characters")
    })?;
    let content = serde_json::json!({ "name": name }).to_string();
    let registry = state.registry.clone();
    let op = async move {
        let created = registry.send(CreateApp { name }).await??;
        Ok((
            201,
            json_text(&CreatedApp {
                id: created.app.id,
                name: created.app.name,
                api_key: created.api_key,
                created_at: created.app.created_at,
            })?,
        ))
    };
    idempotent(
        &state,
        key,
        scope::ADMIN.into(),
        "POST /v1/apps",
        &content,
        op,
    )
    .await
}

/// `POST /v1/events`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestBody {
    /// What happened to the channel (surrounding spaces are tolerated).
    #[schema(value_type = EventName)]
    event: String,
    /// The app the channel belongs to, `app_...`; an unknown app answers 422.
    app_id: String,
    /// When it happened, epoch milliseconds (>= 0); defaults to now.
    #[schema(value_type = Option<i64>, format = Int64, minimum = 0)]
    event_time: Option<i64>,
    /// The channel's own fields, delivered as they are beside `event` and
    /// `eventTime`; its `id`, if any, is recorded as the channel id.
    #[schema(value_type = Object, example = json!({"id": "ch-42", "title": "Morning show"}))]
    channel: Value,
}

/// The answer of `POST /v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedEvent {
    /// `evt_...`.
    #[schema(example = "evt_019ac9f2c1a27f3e9b0d4c6e8a2f1b57")]
    pub id: String,
    /// How many webhooks it will be delivered to.
    pub deliveries: usize,
}

/// Accepts a channel event; answers once it is durable.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "ingestEvent",
    tag = "admin",
    security(("admin_token" = []), ("ingest_key" = [])),
    request_body = IngestBody,
    params(IdempotencyHeader),
    responses(
        (status = 202, description = "The event and its deliveries are committed (replayed, with the same id, for a retry with the same Idempotency-Key)", body = AcceptedEvent,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for an Idempotency-Key"))),
        (status = 400, description = "Malformed JSON, an unknown event, a channel that is not an object, a negative eventTime or an invalid Idempotency-Key", body = ErrorBody),
        super::openapi::AdminFailures,
        (status = 409, description = "A request with the same Idempotency-Key is in flight (`idempotency_key_in_use`)", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A missing field, a wrong type, an unknown appId, or an Idempotency-Key already used for a different request (`idempotency_key_reused`)", body = ErrorBody),
    ),
)]
pub async fn ingest_event(
    caller: Ingestor,
    key: IdempotencyKey,
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
    caller.may_ingest_for(&body.app_id)?;
    let mut msg = ChannelEvent::new(body.app_id, event, channel);
    msg.event_time = body.event_time;
    let content = msg.content();
    let dispatcher = state.dispatcher.clone();
    let op = async move {
        let accepted = dispatcher.send(msg).await??;
        Ok((202, accepted.answer_body()))
    };
    idempotent(
        &state,
        key,
        caller.idempotency_scope(),
        "POST /v1/events",
        &content,
        op,
    )
    .await
}
