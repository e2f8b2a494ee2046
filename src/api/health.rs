//! Health, readiness and metrics: what load balancers, systemd and
//! Prometheus ask.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiState;
use crate::actors::dispatcher::Ping;
use crate::actors::registry::Authenticate;
use crate::db::R2D2Connection;

/// How long a readiness check waits for each part.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process serves HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
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
pub async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let db = database_answers(&state).await;
    let actors = actors_alive(&state, CHECK_TIMEOUT).await;
    match (db, actors) {
        (Ok(()), Ok(())) => HttpResponse::Ok().json(json!({"status": "ready"})),
        (db, actors) => {
            let reasons: Vec<String> = [db.err(), actors.err().map(str::to_owned)]
                .into_iter()
                .flatten()
                .collect();
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "error": {"code": "not_ready", "message": reasons.join("; ")},
            }))
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(crate::metrics::metrics().encode())
}
