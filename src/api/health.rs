//! Health, readiness and metrics: what load balancers, systemd and
//! Prometheus ask.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::actors::dispatcher::Ping;
use crate::actors::registry::Authenticate;
use crate::db::R2D2Connection;
use crate::error::ErrorDetail;

/// How long a readiness check waits for each part.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// The only status `GET /healthz` reports.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process serves HTTP.
    Ok,
}

/// The answer of `GET /readyz` when the broker is ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: ReadyStatus,
}

/// The status `GET /readyz` reports when ready.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// The database answers and the actors run.
    Ready,
}

/// The answer of `GET /readyz` when the broker is not ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    /// Always `unavailable`.
    pub status: NotReadyStatus,
    /// Why: code `not_ready`, and the reasons in the message.
    pub error: ErrorDetail,
}

/// The status `GET /readyz` reports when not ready.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotReadyStatus {
    /// The database or an actor does not answer.
    Unavailable,
}

/// `GET /healthz`: 200 while the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "The process serves HTTP", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: HealthStatus::Ok,
    })
}

/// Whether the registry and the dispatcher answer a message within `wait`.
pub async fn actors_alive(state: &ApiState, wait: Duration) -> Result<(), &'static str> {
    let registry = state.registry.send(Authenticate {
        key_hash: String::new(),
    });
    match actix_web::rt::time::timeout(wait, registry).await {
        Ok(Ok(_)) => {}
        _ => return Err("the registry does not answer"),
    }
    match actix_web::rt::time::timeout(wait, state.dispatcher.send(Ping)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err("the dispatcher does not answer"),
    }
}

async fn database_answers(state: &ApiState) -> Result<(), String> {
    let pool = state.pool.clone();
    let check = web::block(move || {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        conn.ping().map_err(|e| e.to_string())
    });
    match actix_web::rt::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("the database does not answer: {e}")),
        Ok(Err(_)) => Err("the broker is shutting down".into()),
        Err(_) => Err("the database does not answer in time".into()),
    }
}

/// `GET /readyz`: 200 when the database answers and the actors run, else
/// 503 with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "The database answers and the actors run", body = Ready),
        (status = 503, description = "The database or an actor does not answer", body = NotReady),
    ),
)]
pub async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let db = database_answers(&state).await;
    let actors = actors_alive(&state, CHECK_TIMEOUT).await;
    match (db, actors) {
        (Ok(()), Ok(())) => HttpResponse::Ok().json(Ready {
            status: ReadyStatus::Ready,
        }),
        (db, actors) => {
            let reasons: Vec<String> = [db.err(), actors.err().map(str::to_owned)]
                .into_iter()
                .flatten()
                .collect();
            HttpResponse::ServiceUnavailable().json(NotReady {
                status: NotReadyStatus::Unavailable,
                error: ErrorDetail {
                    code: "not_ready".into(),
                    message: reasons.join("; "),
                },
            })
        }
    }
}

/// The content type of `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses((
        status = 200,
        description = "Prometheus metrics in the OpenMetrics text format",
        body = String,
        content_type = "application/openmetrics-text",
    )),
)]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(crate::metrics::metrics().encode())
}
