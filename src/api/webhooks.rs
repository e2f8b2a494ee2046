//! App endpoints: an app's webhooks. Every call is scoped to the app whose
//! API key made it; another app's webhook answers 404.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::auth::AppAuth;
use super::openapi::{EventName, IdempotencyHeader};
use super::{idempotent, json_text, optional_json, ApiState, IdempotencyKey};
use crate::actors::dispatcher::TestEvent;
use crate::actors::registry::{
    CreateWebhook, DeleteWebhook, GetSecret, GetWebhook, ListWebhooks, RotateSecret, UpdateWebhook,
    Webhook, WebhookStatus,
};
use crate::domain::{CustomHeaders, EventKind, EventSet, Throttle, WebhookUri};
use crate::error::{BrokerError, ErrorBody};

/// The largest page.
pub const MAX_PAGE_LENGTH: usize = 100;

/// `event` as the API takes it: `"all"`, `"a,b"` or `["a","b"]`. Names are
/// `channel_live`, `channel_stop` and `channel_ended`, trimmed of
/// surrounding spaces; at least one is needed.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(example = "channel_live,channel_ended")]
pub enum EventField {
    /// `"all"` or a comma-separated list of event names.
    #[schema(example = "channel_live,channel_ended")]
    List(String),
    /// A JSON array of event names.
    #[schema(example = json!(["channel_live", "channel_ended"]))]
    Array(Vec<String>),
}

impl EventField {
    fn parse(&self) -> Result<EventSet, BrokerError> {
        Ok(match self {
            EventField::List(s) => EventSet::parse_list(s)?,
            EventField::Array(v) => EventSet::from_names(v.iter().map(String::as_str))?,
        })
    }
}

/// The body of `POST /v1/webhook` and `PUT /v1/webhook/{id}`.
#[derive(Deserialize, ToSchema)]
pub struct WebhookBody {
    /// Where deliveries go: an absolute `http` or `https` URL with a host, at
    /// most 2048 bytes, without spaces or control characters. Unless
    /// BROKER_ALLOW_PRIVATE_TARGETS is set, a loopback, private or otherwise
    /// non-public address answers 400 `private_target`.
    #[schema(
        example = "https://example.com/hooks/channels",
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$"
    )]
    uri: String,
    /// The events to subscribe to.
    event: EventField,
    /// `PUT` only: enable or disable the webhook. A new webhook starts
    /// enabled; `disabled` on create answers 400.
    #[schema(value_type = Option<WebhookStatus>)]
    status: Option<String>,
    /// Extra headers sent on every delivery attempt (not signed): at most 20
    /// entries; names are HTTP tokens, values strings of at most 1024
    /// characters without CR or LF. `webhook-*`, `content-type`,
    /// `content-length`, `host`, `user-agent`, `connection`,
    /// `transfer-encoding` and hop-by-hop headers are refused with 400
    /// `invalid_headers`. On `PUT` they replace the webhook's headers;
    /// without `headers` the webhook keeps its own.
    #[schema(value_type = Option<HeaderMap>)]
    headers: Option<Map<String, Value>>,
    /// At most this many deliveries per second to this webhook, an integer
    /// of at least 1; `null` (the default) for unlimited. Deliveries held
    /// back stay pending and keep their order; the wait is not an attempt.
    /// On `PUT`, without `rateLimit` the webhook keeps its own.
    #[serde(rename = "rateLimit", default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, nullable = true)]
    rate_limit: Option<Value>,
    /// At most this many requests in flight to this webhook at once, 1 to
    /// 1000; 32 unless given. On `PUT`, without `maxConcurrency` (or with
    /// `null`) the webhook keeps its own.
    #[serde(rename = "maxConcurrency", default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    max_concurrency: Option<Value>,
}

/// A field that is there, `null` included (`Some(Value::Null)`), as opposed
/// to one left out (`None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

struct ValidBody {
    uri: WebhookUri,
    events: EventSet,
    status: Option<WebhookStatus>,
    headers: Option<CustomHeaders>,
    rate_limit: Option<Option<u32>>,
    max_concurrency: Option<u32>,
}

impl WebhookBody {
    fn validate(&self, state: &ApiState) -> Result<ValidBody, BrokerError> {
        let events = self.event.parse()?;
        let uri = WebhookUri::parse(&self.uri, state.allow_private_targets)?;
        let status = match self.status.as_deref() {
            None => None,
            Some(s) => Some(WebhookStatus::parse(s).ok_or_else(|| {
                BrokerError::bad_request(
                    "invalid_status",
                    format!("status must be `enabled` or `disabled`, not `{s}`"),
                )
            })?),
        };
        let headers = self
            .headers
            .as_ref()
            .map(CustomHeaders::parse)
            .transpose()?;
        let rate_limit = self
            .rate_limit
            .as_ref()
            .map(Throttle::parse_rate_limit)
            .transpose()?;
        // `null` is as good as leaving it out: the default, or the
        // webhook's own on PUT.
        let max_concurrency = self
            .max_concurrency
            .as_ref()
            .filter(|v| !v.is_null())
            .map(Throttle::parse_max_concurrency)
            .transpose()?;
        Ok(ValidBody {
            uri,
            events,
            status,
            headers,
            rate_limit,
            max_concurrency,
        })
    }
}

/// A webhook's custom headers in the OpenAPI document: header name (an
/// HTTP token) to value (a string of at most 1024 characters without
/// control characters but tab), at most 20 of them.
pub struct HeaderMap;

impl utoipa::PartialSchema for HeaderMap {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Header name to value, sent on every delivery attempt (not signed). At most \
                 20; names are HTTP tokens, and `webhook-*`, `content-type`, \
                 `content-length`, `host`, `user-agent`, `connection`, \
                 `transfer-encoding` and hop-by-hop headers are refused.",
            ))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")),
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(crate::domain::MAX_HEADER_VALUE_LEN))
                    .pattern(Some("^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$")),
            ))
            .max_properties(Some(crate::domain::MAX_HEADERS))
            .examples([serde_json::json!({"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"})])
            .into()
    }
}

impl ToSchema for HeaderMap {}

/// The public form of a webhook. The secret is not part of it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    /// `wh_...`.
    #[schema(example = "wh_019ac9f2b7e07a41b3c52d8e9f104a6b")]
    pub id: String,
    /// The URI as it was sent.
    #[schema(example = "https://example.com/hooks/channels")]
    pub uri: String,
    /// The subscribed events, individual names in API order.
    #[schema(value_type = Vec<EventName>, min_items = 1)]
    pub event: Vec<EventKind>,
    /// Enabled or disabled.
    pub status: WebhookStatus,
    /// Extra headers sent on every delivery attempt; `{}` when none.
    #[schema(value_type = HeaderMap)]
    pub headers: BTreeMap<String, String>,
    /// Deliveries per second at most; `null`: unlimited.
    #[schema(nullable = true, minimum = 1)]
    pub rate_limit: Option<u32>,
    /// Requests in flight at most.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_concurrency: u32,
    /// Creation time, epoch milliseconds.
    #[schema(format = Int64)]
    pub created_at: i64,
    /// Last change, epoch milliseconds.
    #[schema(format = Int64)]
    pub updated_at: i64,
    /// When a delivery to it last succeeded, epoch milliseconds; `null`
    /// when none ever did.
    #[schema(required = true, format = Int64)]
    pub last_success_at: Option<i64>,
    /// How many of its deliveries are failed now: failed for good and not
    /// sent again (a retry or a recovery makes them pending again).
    #[schema(format = Int64, minimum = 0)]
    pub failing_count: i64,
    /// Why the webhook is disabled; present only when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub disabled_reason: Option<Option<String>>,
    /// When the webhook was disabled, epoch milliseconds; present only when
    /// it is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, format = Int64, required = false)]
    pub disabled_at: Option<Option<i64>>,
}

/// The public form of a webhook. The secret is not part of it.
pub fn view(w: &Webhook) -> WebhookView {
    let disabled = w.status == WebhookStatus::Disabled;
    WebhookView {
        id: w.id.clone(),
        uri: w.uri.as_str().to_owned(),
        event: w.events.kinds(),
        status: w.status,
        headers: w.headers.as_map().clone(),
        rate_limit: w.throttle.rate_limit,
        max_concurrency: w.throttle.max_concurrency,
        created_at: w.created_at,
        updated_at: w.updated_at,
        last_success_at: None,
        failing_count: 0,
        disabled_reason: disabled.then(|| w.disabled_reason.clone()),
        disabled_at: disabled.then_some(w.disabled_at),
    }
}

/// `views` with their `lastSuccessAt` and `failingCount`, which live in the
/// database (the registry keeps settings only): two queries per call.
async fn with_health(
    state: &ApiState,
    mut views: Vec<WebhookView>,
) -> Result<Vec<WebhookView>, BrokerError> {
    let ids: Vec<String> = views.iter().map(|v| v.id.clone()).collect();
    let health = super::query(state.pool.clone(), move |c| {
        crate::db::deliveries::health(c, &ids)
    })
    .await?;
    for v in &mut views {
        let h = health.get(&v.id).copied().unwrap_or_default();
        v.last_success_at = h.last_success_at;
        v.failing_count = h.failing;
    }
    Ok(views)
}

/// One webhook's view with its health.
async fn view_with_health(state: &ApiState, w: &Webhook) -> Result<WebhookView, BrokerError> {
    let mut views = with_health(state, vec![view(w)]).await?;
    Ok(views.remove(0))
}

/// The answer of `POST /v1/webhook`: the webhook and its signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: WebhookView,
    /// The signing secret, `whsec_...`.
    #[schema(example = "whsec_...")]
    secret: String,
}

/// A page of webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookPage {
    /// This page's webhooks, oldest first.
    pub data: Vec<WebhookView>,
    /// How many webhooks match in all.
    pub total: usize,
    /// How many webhooks are in this page.
    pub length: usize,
    /// The page number, from 0.
    pub page: usize,
}

/// The answer of `DELETE /v1/webhook/{id}`: an empty object.
#[derive(Debug, Serialize, ToSchema)]
#[schema(max_properties = 0)]
pub struct Deleted {}

/// A webhook's signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Secret {
    /// `whsec_...`.
    #[schema(example = "whsec_...")]
    pub secret: String,
}

/// `POST /v1/webhook`: the only answer, besides `/secret`, with the secret.
#[utoipa::path(
    post,
    path = "/v1/webhook",
    operation_id = "createWebhook",
    tag = "webhooks",
    security(("app_key" = [])),
    request_body = WebhookBody,
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "The webhook, with its signing secret (replayed, with the same secret, for a retry with the same Idempotency-Key)", body = CreatedWebhook,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for an Idempotency-Key")),
            links(
                ("GetWebhook" = (operation_id = "getWebhook", parameters(("webhook_id" = "$response.body#/id")))),
                ("UpdateWebhook" = (operation_id = "updateWebhook", parameters(("webhook_id" = "$response.body#/id")))),
                ("DeleteWebhook" = (operation_id = "deleteWebhook", parameters(("webhook_id" = "$response.body#/id")))),
                ("GetWebhookSecret" = (operation_id = "getWebhookSecret", parameters(("webhook_id" = "$response.body#/id")))),
                ("RotateWebhookSecret" = (operation_id = "rotateWebhookSecret", parameters(("webhook_id" = "$response.body#/id")))),
                ("ListDeliveries" = (operation_id = "listDeliveries", parameters(("webhook_id" = "$response.body#/id")))),
                ("RecoverWebhook" = (operation_id = "recoverWebhook", parameters(("webhook_id" = "$response.body#/id")))),
                ("TestWebhook" = (operation_id = "testWebhook", parameters(("webhook_id" = "$response.body#/id")))),
            )),
        (status = 400, description = "Malformed JSON, an invalid uri, event, status or headers, a private target, or an invalid Idempotency-Key", body = ErrorBody),
        super::openapi::AppKeyFailures,
        (status = 409, description = "A request with the same Idempotency-Key is in flight (`idempotency_key_in_use`)", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A missing field or a wrong type, or an Idempotency-Key already used for a different request (`idempotency_key_reused`)", body = ErrorBody),
    ),
)]
pub async fn create(
    app: AppAuth,
    key: IdempotencyKey,
    state: web::Data<ApiState>,
    body: web::Json<WebhookBody>,
) -> Result<HttpResponse, BrokerError> {
    let valid = body.validate(&state)?;
    if valid.status == Some(WebhookStatus::Disabled) {
        return Err(BrokerError::bad_request(
            "invalid_status",
            "a new webhook starts enabled",
        ));
    }
    let headers = valid.headers.unwrap_or_default();
    let throttle = Throttle {
        rate_limit: valid.rate_limit.flatten(),
        max_concurrency: valid
            .max_concurrency
            .unwrap_or(crate::domain::DEFAULT_CONCURRENCY),
    };
    let content = serde_json::json!({
        "uri": valid.uri.as_str(),
        "event": valid.events.kinds(),
        "headers": &headers,
        "rateLimit": throttle.rate_limit,
        "maxConcurrency": throttle.max_concurrency,
    })
    .to_string();
    let scope = crate::idempotency::scope::app(&app.0);
    let registry = state.registry.clone();
    let op = async move {
        let webhook = registry
            .send(CreateWebhook {
                app_id: app.0,
                uri: valid.uri,
                events: valid.events,
                headers,
                throttle,
            })
            .await??;
        Ok((
            201,
            json_text(&CreatedWebhook {
                webhook: view(&webhook),
                secret: webhook.secret,
            })?,
        ))
    };
    idempotent(&state, key, scope, "POST /v1/webhook", &content, op).await
}

/// `GET /v1/webhook` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The page number, from 0 (default 0).
    #[param(value_type = usize, required = false)]
    page: Option<String>,
    /// Items per page, 1 to 100 (default 10).
    #[param(value_type = u8, required = false, minimum = 1, maximum = 100)]
    length: Option<String>,
    /// Keep only webhooks subscribed to any of these comma-separated
    /// events (or `all`).
    #[param(value_type = String, required = false, example = "channel_live,channel_stop")]
    event: Option<String>,
}

/// Parses `page` (>= 0, default 0) and `length` (1..=100, default 10).
pub fn parse_page(page: Option<&str>, length: Option<&str>) -> Result<(usize, usize), BrokerError> {
    let page = match page.map(str::trim) {
        None | Some("") => 0,
        Some(p) => p.parse::<usize>().map_err(|_| {
            BrokerError::bad_request("invalid_page", "page must be a whole number >= 0")
        })?,
    };
    let length = match length.map(str::trim) {
        None | Some("") => 10,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_LENGTH).contains(&n) => n,
            _ => {
                return Err(BrokerError::bad_request(
                    "invalid_length",
                    format!("length must be a whole number from 1 to {MAX_PAGE_LENGTH}"),
                ))
            }
        },
    };
    Ok((page, length))
}

/// `GET /v1/webhook?page&length&event`: oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhook",
    operation_id = "listWebhooks",
    tag = "webhooks",
    security(("app_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the app's webhooks, oldest first", body = WebhookPage),
        (status = 400, description = "An invalid page, length, event or query string", body = ErrorBody),
        super::openapi::AppKeyFailures,
    ),
)]
pub async fn list(
    app: AppAuth,
    state: web::Data<ApiState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, BrokerError> {
    let (page, length) = parse_page(query.page.as_deref(), query.length.as_deref())?;
    let filter = match query.event.as_deref() {
        None => None,
        Some(raw) => Some(EventSet::parse_list(raw)?),
    };
    let result = state
        .registry
        .send(ListWebhooks {
            app_id: app.0,
            page,
            length,
            filter,
        })
        .await?;
    let data = with_health(&state, result.data.iter().map(view).collect()).await?;
    Ok(HttpResponse::Ok().json(WebhookPage {
        total: result.total,
        length: data.len(),
        data,
        page,
    }))
}

/// `GET /v1/webhook/{id}`.
#[utoipa::path(
    get,
    path = "/v1/webhook/{webhook_id}",
    operation_id = "getWebhook",
    tag = "webhooks",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
    ),
)]
pub async fn get(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let webhook = state
        .registry
        .send(GetWebhook {
            app_id: app.0,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(view_with_health(&state, &webhook).await?))
}

/// `PUT /v1/webhook/{id}`: the create body, plus an optional `status`.
#[utoipa::path(
    put,
    path = "/v1/webhook/{webhook_id}",
    operation_id = "updateWebhook",
    tag = "webhooks",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`")),
    request_body = WebhookBody,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "Malformed JSON, an invalid uri, event, status or headers, or a private target", body = ErrorBody),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A missing field or a wrong type", body = ErrorBody),
    ),
)]
pub async fn update(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: web::Json<WebhookBody>,
) -> Result<HttpResponse, BrokerError> {
    let valid = body.validate(&state)?;
    let webhook = state
        .registry
        .send(UpdateWebhook {
            app_id: app.0,
            id: id.into_inner(),
            uri: valid.uri,
            events: valid.events,
            status: valid.status,
            headers: valid.headers,
            rate_limit: valid.rate_limit,
            max_concurrency: valid.max_concurrency,
        })
        .await??;
    Ok(HttpResponse::Ok().json(view_with_health(&state, &webhook).await?))
}

/// `DELETE /v1/webhook/{id}` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Remove only these comma-separated events (or `all`); a webhook left
    /// with no event is deleted. Without it the whole webhook is deleted.
    #[param(value_type = String, required = false, example = "channel_ended")]
    event: Option<String>,
}

/// `DELETE /v1/webhook/{id}[?event=a,b]`.
#[utoipa::path(
    delete,
    path = "/v1/webhook/{webhook_id}",
    operation_id = "deleteWebhook",
    tag = "webhooks",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`"), DeleteQuery),
    responses(
        (status = 200, description = "Deleted (or the events removed): an empty object", body = Deleted),
        (status = 400, description = "An invalid event or query string", body = ErrorBody),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
    ),
)]
pub async fn delete(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, BrokerError> {
    let events = match query.event.as_deref() {
        None => None,
        Some(raw) => Some(EventSet::parse_list(raw)?),
    };
    state
        .registry
        .send(DeleteWebhook {
            app_id: app.0,
            id: id.into_inner(),
            events,
        })
        .await??;
    Ok(HttpResponse::Ok().json(Deleted {}))
}

/// `GET /v1/webhook/{id}/secret`.
#[utoipa::path(
    get,
    path = "/v1/webhook/{webhook_id}/secret",
    operation_id = "getWebhookSecret",
    tag = "webhooks",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`")),
    responses(
        (status = 200, description = "The current signing secret", body = Secret),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
    ),
)]
pub async fn secret(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let secret = state
        .registry
        .send(GetSecret {
            app_id: app.0,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(Secret { secret }))
}

/// `POST /v1/webhook/{id}/secret/rotate`: a new secret; the previous one
/// keeps signing, beside it, for BROKER_SECRET_GRACE.
#[utoipa::path(
    post,
    path = "/v1/webhook/{webhook_id}/secret/rotate",
    operation_id = "rotateWebhookSecret",
    tag = "webhooks",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`")),
    responses(
        (status = 200, description = "The new signing secret; the previous one keeps signing beside it for BROKER_SECRET_GRACE", body = Secret),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
    ),
)]
pub async fn rotate_secret(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, BrokerError> {
    let secret = state
        .registry
        .send(RotateSecret {
            app_id: app.0,
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(Secret { secret }))
}

/// The optional body of `POST /v1/webhook/{id}/test`.
#[derive(Deserialize, ToSchema)]
pub struct TestBody {
    /// The event to send; by default the webhook's first subscribed event
    /// in the order `channel_live`, `channel_stop`, `channel_ended`. One
    /// the webhook does not subscribe to answers 400 `invalid_event`.
    #[schema(value_type = Option<EventName>)]
    event: Option<String>,
}

/// The answer of `POST /v1/webhook/{id}/test`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestAccepted {
    /// The test delivery, `msg_...`: the `webhook-id` the receiver sees, and
    /// its id in the delivery log.
    #[schema(example = "msg_019ac9f2c1a37b5c8d2e6f0a1b3c5d79")]
    pub id: String,
    /// The test event, `evt_...`.
    #[schema(example = "evt_019ac9f2c1a27f3e9b0d4c6e8a2f1b57")]
    pub event_id: String,
}

/// `POST /v1/webhook/{id}/test [{"event"}]`: a test event to this webhook
/// only, sent like any other delivery; a disabled webhook gets exactly one
/// attempt and stays disabled.
#[utoipa::path(
    post,
    path = "/v1/webhook/{webhook_id}/test",
    operation_id = "testWebhook",
    tag = "webhooks",
    security(("app_key" = [])),
    params(("webhook_id" = String, Path, description = "The webhook's id, `wh_...`")),
    request_body(content = Option<TestBody>, description = "Optional: the event to send"),
    responses(
        (status = 202, description = "The test event and its delivery are stored; the delivery is under way", body = TestAccepted,
            links(
                ("GetDelivery" = (operation_id = "getDelivery", parameters(("webhook_id" = "$request.path.webhook_id"), ("delivery_id" = "$response.body#/id")))),
            )),
        (status = 400, description = "Malformed JSON, or an event that is unknown or not subscribed to", body = ErrorBody),
        super::openapi::AppKeyFailures,
        (status = 404, description = "No such webhook for this app", body = ErrorBody),
        (status = 413, description = "The body is over BROKER_MAX_BODY", body = ErrorBody),
        (status = 422, description = "A wrong type", body = ErrorBody),
    ),
)]
pub async fn test(
    app: AppAuth,
    state: web::Data<ApiState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, BrokerError> {
    let body: Option<TestBody> = optional_json(payload, state.max_body).await?;
    let webhook = state
        .registry
        .send(GetWebhook {
            app_id: app.0.clone(),
            id: id.into_inner(),
        })
        .await??;
    let event = match body.and_then(|b| b.event) {
        None => webhook.events.kinds()[0],
        Some(name) => {
            let kind = EventKind::parse(&name)?;
            if !webhook.events.contains(kind) {
                return Err(BrokerError::bad_request(
                    "invalid_event",
                    format!("the webhook is not subscribed to {kind}"),
                ));
            }
            kind
        }
    };
    let accepted = state
        .dispatcher
        .send(TestEvent {
            app_id: app.0,
            event,
            target: webhook.target(),
        })
        .await??;
    Ok(HttpResponse::Accepted().json(TestAccepted {
        id: accepted.delivery_id,
        event_id: accepted.event_id,
    }))
}
