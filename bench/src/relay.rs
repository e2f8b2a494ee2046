//! The bare relay baseline: an actix-web server taking the broker's ingest
//! request (`POST /v1/events`, admin bearer token), building the same
//! delivery body, POSTing it on to one receiver with awc, and answering 202
//! after the receiver answered. It stores nothing and signs nothing: the
//! HTTP work of a broker with none of its guarantees. Run as a separate
//! process (`webhook-bench --serve-relay ADDR --relay-target URL`) so its CPU
//! and memory are measured like the broker's.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use webhook_broker::actors::dispatcher::delivery_body;
use webhook_broker::EventKind;

#[derive(Deserialize)]
struct Ingest {
    event: String,
    #[serde(rename = "appId")]
    #[allow(dead_code)]
    app_id: String,
    #[serde(rename = "eventTime")]
    event_time: Option<i64>,
    channel: Map<String, Value>,
}

struct Relay {
    client: awc::Client,
    target: String,
    bearer: String,
}

async fn ingest(req: HttpRequest, body: web::Bytes, relay: web::Data<Relay>) -> HttpResponse {
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == relay.bearer.as_bytes());
    if !authorized {
        return HttpResponse::Unauthorized().finish();
    }
    let Ok(ingest) = serde_json::from_slice::<Ingest>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let Ok(kind) = EventKind::parse(&ingest.event) else {
        return HttpResponse::BadRequest().finish();
    };
    let event_time = ingest.event_time.unwrap_or_else(webhook_broker::db::now_ms);
    let payload = delivery_body(kind, event_time, &ingest.channel);
    match relay
        .client
        .post(relay.target.as_str())
        .insert_header(("content-type", "application/json"))
        .send_body(payload)
        .await
    {
        Ok(mut response) if response.status().is_success() => {
            let _ = response.body().limit(1 << 16).await;
            HttpResponse::Accepted().json(json!({
                "id": webhook_broker::db::new_id("evt"),
                "deliveries": 1
            }))
        }
        _ => HttpResponse::BadGateway().finish(),
    }
}

/// Serves until killed.
pub fn serve(bind: &str, target: String, token: String) -> std::io::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bind = bind.to_owned();
    actix_web::rt::System::new().block_on(async move {
        let bearer = format!("Bearer {token}");
        HttpServer::new(move || {
            // One pooled keep-alive client per worker thread.
            let client = awc::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .disable_redirects()
                .connector(awc::Connector::new().limit(512))
                .finish();
            App::new()
                .app_data(web::Data::new(Relay {
                    client,
                    target: target.clone(),
                    bearer: bearer.clone(),
                }))
                .route("/v1/events", web::post().to(ingest))
                .route("/readyz", web::get().to(HttpResponse::Ok))
        })
        .bind(bind)?
        .run()
        .await
    })
}
