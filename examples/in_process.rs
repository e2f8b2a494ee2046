//! A channel service in the same process as the broker: it starts the broker
//! inside its own actix System and reports lifecycle events by sending
//! `ChannelEvent` messages straight to the dispatcher, no HTTP in between.
//!
//! Run: `cargo run --example in_process -- http://127.0.0.1:9000/hook`
//! (with `cargo run --example receiver` listening there).

use actix::prelude::*;
use serde_json::{json, Map, Value};
use webhook_broker::actors::registry::{CreateApp, CreateWebhook};
use webhook_broker::{Broker, BrokerError, ChannelEvent, Config, EventAccepted, EventKind};
use webhook_broker::{EventSet, WebhookUri};

/// The colocated channel service: one actor per channel, holding only the
/// dispatcher's recipient, as a real service would.
pub struct ChannelService {
    app_id: String,
    channel: Map<String, Value>,
    dispatcher: Recipient<ChannelEvent>,
}

impl Actor for ChannelService {
    type Context = Context<Self>;
}

/// Tells the channel service its channel changed state.
#[derive(Message)]
#[rtype(result = "Result<EventAccepted, BrokerError>")]
pub struct Lifecycle(pub EventKind);

impl Handler<Lifecycle> for ChannelService {
    type Result = ResponseFuture<Result<EventAccepted, BrokerError>>;

    fn handle(&mut self, msg: Lifecycle, _: &mut Self::Context) -> Self::Result {
        let send = self.dispatcher.send(ChannelEvent::new(
            self.app_id.clone(),
            msg.0,
            self.channel.clone(),
        ));
        // The reply comes once the event is durable in the broker's database.
        Box::pin(async move { send.await? })
    }
}

/// Starts the broker, registers an app with one webhook at `webhook_uri`,
/// and has a channel go live then end. Returns the two acknowledgements.
pub async fn demo(
    config: Config,
    webhook_uri: &str,
) -> Result<Vec<EventAccepted>, Box<dyn std::error::Error>> {
    let broker = Broker::start(&config).await?;
    let app = broker
        .registry
        .send(CreateApp {
            name: "in-process demo".into(),
        })
        .await??;
    broker
        .registry
        .send(CreateWebhook {
            app_id: app.app.id.clone(),
            uri: WebhookUri::parse(webhook_uri, config.allow_private_targets)?,
            events: EventSet::all(),
            headers: Default::default(),
            throttle: Default::default(),
        })
        .await??;

    let Value::Object(channel) = json!({"id": "ch-1", "title": "Morning show"}) else {
        unreachable!()
    };
    let service = ChannelService {
        app_id: app.app.id,
        channel,
        dispatcher: broker.dispatcher.clone().recipient(),
    }
    .start();
    let live = service.send(Lifecycle(EventKind::ChannelLive)).await??;
    let ended = service.send(Lifecycle(EventKind::ChannelEnded)).await??;
    Ok(vec![live, ended])
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:9000/hook".into());
    let mut config = Config::from_env()?;
    config.allow_private_targets = true;
    for accepted in demo(config, &uri).await? {
        println!(
            "accepted {} -> {} deliveries",
            accepted.id, accepted.deliveries
        );
    }
    // Give the first attempts a moment before the process exits; whatever is
    // still pending is resumed at the next start.
    actix_web::rt::time::sleep(std::time::Duration::from_secs(1)).await;
    Ok(())
}
