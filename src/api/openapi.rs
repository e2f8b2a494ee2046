//! The OpenAPI document of the REST API, generated from the handlers'
//! `#[utoipa::path]` attributes and the request and response types, and
//! served at `GET /openapi.json`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::{admin, deliveries, health, keys, portal, webhooks};
use crate::error::{ErrorBody, ErrorDetail};

/// A channel lifecycle event's name.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    /// A channel started broadcasting.
    ChannelLive,
    /// The user interrupted the broadcast.
    ChannelStop,
    /// The broadcast is over for good.
    ChannelEnded,
}

/// The name of the security scheme of the admin endpoints.
pub const ADMIN_SCHEME: &str = "admin_token";
/// The name of the security scheme of the app endpoints.
pub const APP_SCHEME: &str = "app_key";
/// The name of the security scheme of ingest keys (`POST /v1/events`).
pub const INGEST_SCHEME: &str = "ingest_key";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token, BROKER_ADMIN_TOKEN: `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            APP_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wbk_...")
                    .description(Some(
                        "An app's API key, from `POST /v1/apps` or `POST /v1/apps/{appId}/keys`: \
                         `Authorization: Bearer wbk_...`; or a portal link's token, `wbp_...`, \
                         which acts as the app's key until it expires.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            INGEST_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wbi_...")
                    .description(Some(
                        "An ingest key, from `POST /v1/ingest-keys`: `Authorization: Bearer \
                         wbi_...`. It may call `POST /v1/events` only.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The broker's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "webhook-broker",
        description = "Delivers channel lifecycle events to applications over signed HTTP \
            callbacks (Standard Webhooks). Times are epoch milliseconds. Every error \
            answers `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`); a known path with \
            a method it does not serve answers 405 `method_not_allowed` and an unknown \
            path 404 `not_found`, both in that shape.",
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
        admin::create_app,
        admin::ingest_event,
        portal::create_link,
        keys::create_app_key,
        keys::list_app_keys,
        keys::revoke_app_key,
        keys::create_ingest_key,
        keys::list_ingest_keys,
        keys::revoke_ingest_key,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::secret,
        webhooks::rotate_secret,
        webhooks::test,
        deliveries::list,
        deliveries::get,
        deliveries::retry,
        deliveries::recover,
    ),
    components(schemas(ErrorBody, ErrorDetail, EventName)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Health, readiness, metrics and this document; no authentication"),
        (name = "admin", description = "Apps, portal links and event ingest; the admin token"),
        (name = "keys", description = "Apps' API keys and ingest keys; the admin token"),
        (name = "webhooks", description = "An app's webhooks; the app's API key"),
        (name = "deliveries", description = "A webhook's delivery log; the app's API key"),
    ),
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        fix_link_keys(&mut doc);
        serde_json::to_string(&doc).expect("the document serializes")
    })
}

/// utoipa 5 serializes a Link Object's fields in snake case
/// (`operation_id`); OpenAPI spells them `operationId`, `operationRef` and
/// `requestBody`.
fn fix_link_keys(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|r| r.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_owned(), v);
                }
            }
        }
    }
}

/// `GET /openapi.json`: this API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// The failures every endpoint taking an app API key can answer.
#[derive(IntoResponses)]
pub enum AppKeyFailures {
    /// No or wrong bearer token.
    #[response(status = 401, description = "No or wrong bearer token",
        headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
    /// The wrong kind of credential.
    #[response(
        status = 403,
        description = "The admin token instead of an app API key"
    )]
    Forbidden(ErrorBody),
    /// A fault of the broker.
    #[response(status = 500, description = "A fault of the broker")]
    Internal(ErrorBody),
    /// The database cannot be reached.
    #[response(
        status = 503,
        description = "The database cannot be reached; retry later"
    )]
    Unavailable(ErrorBody),
}

/// The failures every endpoint taking the admin token can answer.
#[derive(IntoResponses)]
pub enum AdminFailures {
    /// No or wrong bearer token.
    #[response(status = 401, description = "No or wrong bearer token",
        headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
    /// The wrong kind of credential.
    #[response(
        status = 403,
        description = "An app API key or an ingest key instead of the admin token (on POST /v1/events: an app API key, or an ingest key limited to other apps)"
    )]
    Forbidden(ErrorBody),
    /// A fault of the broker.
    #[response(status = 500, description = "A fault of the broker")]
    Internal(ErrorBody),
    /// The database cannot be reached.
    #[response(
        status = 503,
        description = "The database cannot be reached; retry later"
    )]
    Unavailable(ErrorBody),
}

/// The `Idempotency-Key` header of the create and ingest endpoints.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// Makes the request safe to retry: 1 to 255 visible ASCII characters
    /// (not only spaces), scoped to the caller (the admin token, or the
    /// app). The first successful answer is stored for
    /// BROKER_IDEMPOTENCY_TTL (default 24h) and a retry with the same key
    /// and the same body gets it again, with `Idempotent-Replayed: true`;
    /// the same key with a different body answers 422
    /// `idempotency_key_reused`, and while the first request is in flight
    /// 409 `idempotency_key_in_use`. Failed requests are not stored.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x20-\x7E]*[\x21-\x7E][\x20-\x7E]*$",
        example = "order-42-create"
    )]
    pub idempotency_key: Option<String>,
}
