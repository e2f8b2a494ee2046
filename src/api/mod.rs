//! The REST API: admin endpoints (apps, API keys, event ingest), app
//! endpoints (webhooks, deliveries) and health. Handlers validate input into domain types and send
//! messages to the registry or the dispatcher; they hold no state.

pub mod admin;
pub mod auth;
pub mod deliveries;
pub mod health;
pub mod keys;
pub mod openapi;
pub mod portal;
pub mod webhooks;

use actix::Addr;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, Resource};
use futures_util::StreamExt;

use crate::actors::dispatcher::Dispatcher;
use crate::actors::registry::Registry;
use crate::error::{BrokerError, ErrorBody};

/// What the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The registry.
    pub registry: Addr<Registry>,
    /// The dispatcher.
    pub dispatcher: Addr<Dispatcher>,
    /// SHA-256 of the admin token.
    pub admin_token_digest: [u8; 32],
    /// BROKER_ALLOW_PRIVATE_TARGETS.
    pub allow_private_targets: bool,
    /// BROKER_MAX_BODY.
    pub max_body: usize,
    /// The database, for the delivery log and idempotency keys.
    pub pool: crate::db::Pool,
    /// BROKER_IDEMPOTENCY_TTL.
    pub idempotency_ttl: std::time::Duration,
}

/// The `Idempotency-Key` header of a request, checked (400
/// `invalid_idempotency_key` when it is not 1 to 255 visible ASCII
/// characters). Put it after the auth extractor and before the body.
pub struct IdempotencyKey(pub Option<String>);

impl actix_web::FromRequest for IdempotencyKey {
    type Error = BrokerError;
    type Future = std::future::Ready<Result<Self, BrokerError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let mut values = req.headers().get_all(crate::idempotency::HEADER);
        std::future::ready(match (values.next(), values.next()) {
            (None, _) => Ok(IdempotencyKey(None)),
            (Some(v), None) => {
                crate::idempotency::validate_key(v.as_bytes()).map(|k| IdempotencyKey(Some(k)))
            }
            (Some(_), Some(_)) => Err(BrokerError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "send one {} header, not several",
                    crate::idempotency::HEADER
                ),
            )),
        })
    }
}

/// Answers `op`'s status and JSON body, once per idempotency key when there
/// is one (see [`crate::idempotency`]): `operation` and `content` (the
/// request, as canonical JSON) make the hash that tells a retry from a
/// different request.
pub async fn idempotent<Fut>(
    state: &ApiState,
    key: IdempotencyKey,
    scope: String,
    operation: &str,
    content: &str,
    op: Fut,
) -> Result<HttpResponse, BrokerError>
where
    Fut: std::future::Future<Output = Result<(u16, String), BrokerError>> + 'static,
{
    let answer = match key.0 {
        None => {
            let (status, body) = op.await?;
            crate::idempotency::Answer {
                status,
                body,
                replayed: false,
            }
        }
        Some(key) => {
            let hash = crate::idempotency::request_hash(operation, content);
            crate::idempotency::run(&state.pool, scope, key, hash, state.idempotency_ttl, op)
                .await?
        }
    };
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .map_err(|_| BrokerError::Internal("a stored answer has an invalid status".into()))?;
    let mut res = HttpResponse::build(status);
    res.content_type("application/json");
    if answer.replayed {
        res.insert_header((crate::idempotency::REPLAYED_HEADER, "true"));
    }
    Ok(res.body(answer.body))
}

/// A JSON body as text, for [`idempotent`].
pub fn json_text(value: &impl serde::Serialize) -> Result<String, BrokerError> {
    serde_json::to_string(value)
        .map_err(|e| BrokerError::Internal(format!("cannot serialize an answer: {e}")))
}

/// Registers the broker's routes, state and input error handling on an
/// actix-web `App` (or a scope of it): `App::new().configure(api::routes(state))`.
pub fn routes(state: ApiState) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let max_body = state.max_body;
        cfg.app_data(web::Data::new(state))
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .content_type_required(false)
                    .error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
            .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
            .service(resource("/metrics", "GET").route(web::get().to(health::metrics)))
            .service(resource("/openapi.json", "GET").route(web::get().to(openapi::openapi_json)))
            .configure(portal::pages)
            .service(
                web::scope("/v1")
                    .wrap(actix_web::middleware::from_fn(auth::authenticate))
                    .service(resource("/apps", "POST").route(web::post().to(admin::create_app)))
                    .service(
                        resource("/apps/{app_id}/portal-links", "POST")
                            .route(web::post().to(portal::create_link)),
                    )
                    .service(resource("/events", "POST").route(web::post().to(admin::ingest_event)))
                    .service(
                        resource("/apps/{app_id}/keys", "GET, POST")
                            .route(web::post().to(keys::create_app_key))
                            .route(web::get().to(keys::list_app_keys)),
                    )
                    .service(
                        resource("/apps/{app_id}/keys/{key_id}", "DELETE")
                            .route(web::delete().to(keys::revoke_app_key)),
                    )
                    .service(
                        resource("/ingest-keys", "GET, POST")
                            .route(web::post().to(keys::create_ingest_key))
                            .route(web::get().to(keys::list_ingest_keys)),
                    )
                    .service(
                        resource("/ingest-keys/{key_id}", "DELETE")
                            .route(web::delete().to(keys::revoke_ingest_key)),
                    )
                    .service(
                        resource("/webhook", "GET, POST")
                            .route(web::post().to(webhooks::create))
                            .route(web::get().to(webhooks::list)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}", "GET, PUT, DELETE")
                            .route(web::get().to(webhooks::get))
                            .route(web::put().to(webhooks::update))
                            .route(web::delete().to(webhooks::delete)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}/secret", "GET")
                            .route(web::get().to(webhooks::secret)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}/secret/rotate", "POST")
                            .route(web::post().to(webhooks::rotate_secret)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}/test", "POST")
                            .route(web::post().to(webhooks::test)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}/deliveries", "GET")
                            .route(web::get().to(deliveries::list)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}/deliveries/{delivery_id}", "GET")
                            .route(web::get().to(deliveries::get)),
                    )
                    .service(
                        resource(
                            "/webhook/{webhook_id}/deliveries/{delivery_id}/retry",
                            "POST",
                        )
                        .route(web::post().to(deliveries::retry)),
                    )
                    .service(
                        resource("/webhook/{webhook_id}/recover", "POST")
                            .route(web::post().to(deliveries::recover)),
                    )
                    .default_service(web::to(not_found)),
            );
    }
}

/// The JSON answer to a path no route serves.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, BrokerError> {
    Err(BrokerError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// A resource at `path` serving the methods in `allow` (its routes are added
/// by the caller); any other method answers 405 with that `Allow` header.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        method_not_allowed(req, allow)
    }))
}

fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
        .json(ErrorBody::new(
            "method_not_allowed",
            format!("{} is not allowed on {}", req.method(), req.path()),
        ))
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let e = match &err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            BrokerError::PayloadTooLarge(format!("request body is over the {limit}-byte limit"))
        }
        JsonPayloadError::Deserialize(de) if de.is_data() => {
            BrokerError::Unprocessable(format!("invalid request body: {de}"))
        }
        JsonPayloadError::Deserialize(de) => BrokerError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {de}"),
        ),
        other => {
            BrokerError::bad_request("invalid_body", format!("cannot read request body: {other}"))
        }
    };
    e.into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    BrokerError::bad_request("invalid_query", format!("invalid query string: {err}")).into()
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    BrokerError::NotFound(format!("invalid path: {err}")).into()
}

/// Reads an optional JSON body of at most `limit` bytes: `None` when it is
/// empty (or only white space) or `null`. Failures answer as the JSON extractor's do.
pub async fn optional_json<T: serde::de::DeserializeOwned>(
    mut payload: web::Payload,
    limit: usize,
) -> Result<Option<T>, BrokerError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            BrokerError::bad_request("invalid_body", format!("cannot read request body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(BrokerError::PayloadTooLarge(format!(
                "request body is over the {limit}-byte limit"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Option<T>>(&body).map_err(|e| {
        if e.is_data() {
            BrokerError::Unprocessable(format!("invalid request body: {e}"))
        } else {
            BrokerError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            )
        }
    })
}

/// Runs a database query on the blocking pool.
pub async fn query<T: Send + 'static>(
    pool: crate::db::Pool,
    f: impl FnOnce(&mut crate::db::DbConn) -> diesel::QueryResult<T> + Send + 'static,
) -> Result<T, BrokerError> {
    web::block(move || {
        let mut conn = pool.get()?;
        Ok::<_, BrokerError>(f(&mut conn)?)
    })
    .await?
}
