//! A channel service that already runs its own actix-web `App` mounts the
//! broker's REST API beside its own routes. Its own route reports a channel
//! going live by messaging the dispatcher.
//!
//! Run: `BROKER_ADMIN_TOKEN=dev-admin-token-0123456789 cargo run --example mount_routes`
//! then use the broker API on 127.0.0.1:8081 and
//! `curl -XPOST 127.0.0.1:8081/channels/APP_ID/ch-1/live`.

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Map};
use webhook_broker::{Broker, BrokerError, ChannelEvent, Config, EventKind};

/// The service's own route: `POST /channels/{app_id}/{channel_id}/live`.
async fn go_live(
    broker: web::Data<Broker>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, BrokerError> {
    let (app_id, channel_id) = path.into_inner();
    let mut channel = Map::new();
    channel.insert("id".into(), json!(channel_id));
    let accepted = broker
        .dispatcher
        .send(ChannelEvent::new(app_id, EventKind::ChannelLive, channel))
        .await??;
    Ok(HttpResponse::Ok().json(json!({"event": accepted.id, "deliveries": accepted.deliveries})))
}

/// The whole application: the service's routes and the broker's API.
pub fn configure(broker: Broker) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let routes = broker.routes();
        cfg.app_data(web::Data::new(broker))
            .route(
                "/channels/{app_id}/{channel_id}/live",
                web::post().to(go_live),
            )
            .configure(routes);
    }
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let config = Config::from_env()?;
    let broker = Broker::start(&config).await?;
    let app = configure(broker);
    HttpServer::new(move || App::new().configure(app.clone()))
        .bind("127.0.0.1:8081")?
        .run()
        .await?;
    Ok(())
}
