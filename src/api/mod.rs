//! The REST API: admin endpoints (apps, event ingest), app endpoints
//! (webhooks) and health. Handlers validate input into domain types and send
//! messages to the registry or the dispatcher; they hold no state.

pub mod admin;
pub mod auth;
pub mod deliveries;
pub mod health;
pub mod webhooks;

use actix::Addr;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::actors::dispatcher::Dispatcher;
use crate::actors::registry::Registry;
use crate::error::BrokerError;

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
    /// The database, for the delivery log.
    pub pool: crate::db::Pool,
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
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .service(
                web::scope("/v1")
                    .wrap(actix_web::middleware::from_fn(auth::authenticate))
                    .service(
                        web::resource("/apps")
                            .route(web::post().to(admin::create_app))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/events")
                            .route(web::post().to(admin::ingest_event))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook")
                            .route(web::post().to(webhooks::create))
                            .route(web::get().to(webhooks::list))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}")
                            .route(web::get().to(webhooks::get))
                            .route(web::put().to(webhooks::update))
                            .route(web::delete().to(webhooks::delete))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}/secret")
                            .route(web::get().to(webhooks::secret))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}/secret/rotate")
                            .route(web::post().to(webhooks::rotate_secret))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}/deliveries")
                            .route(web::get().to(deliveries::list))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}/deliveries/{delivery_id}")
                            .route(web::get().to(deliveries::get))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}/deliveries/{delivery_id}/retry")
                            .route(web::post().to(deliveries::retry))
                            .default_service(web::to(method_not_allowed)),
                    )
                    .service(
                        web::resource("/webhook/{webhook_id}/recover")
                            .route(web::post().to(deliveries::recover))
                            .default_service(web::to(method_not_allowed)),
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

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(json!({"error": {
        "code": "method_not_allowed",
        "message": format!("{} is not allowed on {}", req.method(), req.path()),
    }}))
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
