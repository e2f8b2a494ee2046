//! S5: the broker inside the bench's own actix System (`Broker::start` on a
//! temp SQLite file), fed by a colocated actor that sends `ChannelEvent`s
//! straight to the dispatcher; no HTTP ingest.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use webhook_broker::actors::registry::{CreateApp, CreateWebhook};
use webhook_broker::{Broker, ChannelEvent, Config, EventKind, EventSet, WebhookUri};

use crate::load::Load;
use crate::receiver::Round;
use crate::util::now_us;

/// The colocated channel service.
struct Source {
    app_id: String,
    dispatcher: Recipient<ChannelEvent>,
}

impl Actor for Source {
    type Context = Context<Self>;
}

/// Send events for `duration` with `concurrency` sends in flight.
#[derive(Message)]
#[rtype(result = "()")]
struct Burst {
    duration: Duration,
    concurrency: usize,
    channels: u64,
    round: Arc<Round>,
    load: Arc<Load>,
}

impl Handler<Burst> for Source {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Burst, _: &mut Self::Context) -> Self::Result {
        let deadline = Instant::now() + msg.duration;
        let loops: Vec<_> = (0..msg.concurrency)
            .map(|_| {
                let dispatcher = self.dispatcher.clone();
                let app_id = self.app_id.clone();
                let (round, load) = (msg.round.clone(), msg.load.clone());
                let channels = msg.channels.max(1);
                async move {
                    while let Some(seq) = load.next(round.max_events, deadline) {
                        let us = now_us();
                        load.started(us);
                        let Value::Object(channel) = json!({
                            "id": format!("ch-{}", seq % channels),
                            "seq": seq,
                            "sentUs": us,
                            "run": round.run,
                        }) else {
                            unreachable!()
                        };
                        let mut event =
                            ChannelEvent::new(app_id.clone(), EventKind::ChannelLive, channel);
                        event.event_time = Some((us / 1000) as i64);
                        match dispatcher.send(event).await {
                            Ok(Ok(_)) => load.ok(&round, seq, us),
                            Ok(Err(e)) => load.error(format!("broker: {e}"), us),
                            Err(e) => load.error(format!("mailbox: {e}"), us),
                        }
                    }
                }
            })
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(loops).await;
        })
    }
}

/// The phases of S5, reported to the bench's main thread.
pub enum Phase {
    Ready,
    Loaded,
}

/// Handles on the S5 thread.
pub struct InProcess {
    pub events: mpsc::Receiver<anyhow::Result<Phase>>,
    go: Option<tokio::sync::oneshot::Sender<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct Params {
    pub database_url: String,
    pub token: String,
    pub receiver_url: String,
    pub duration: Duration,
    pub concurrency: usize,
    pub channels: u64,
}

impl InProcess {
    /// Starts the broker and the source on a new thread; it reports
    /// [`Phase::Ready`], waits for [`InProcess::go`], runs the burst,
    /// reports [`Phase::Loaded`] and keeps the broker up until
    /// [`InProcess::stop`].
    pub fn start(params: Params, round: Arc<Round>, load: Arc<Load>) -> InProcess {
        let (tx, events) = mpsc::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            sys.block_on(async move {
                let setup = async {
                    let p = &params;
                    let config = Config::from_lookup(|k| match k {
                        "DATABASE_URL" => Some(p.database_url.clone()),
                        "BROKER_ADMIN_TOKEN" => Some(p.token.clone()),
                        "BROKER_ALLOW_PRIVATE_TARGETS" => Some("true".into()),
                        "BROKER_BIND" => Some("127.0.0.1:0".into()),
                        other => std::env::var(other).ok(),
                    })?;
                    let broker = Broker::start(&config).await?;
                    let app = broker
                        .registry
                        .send(CreateApp {
                            name: "bench-inproc".into(),
                        })
                        .await??;
                    broker
                        .registry
                        .send(CreateWebhook {
                            app_id: app.app.id.clone(),
                            uri: WebhookUri::parse(&p.receiver_url, true)?,
                            events: EventSet::all(),
                            headers: Default::default(),
                            throttle: Default::default(),
                        })
                        .await??;
                    let source = Source {
                        app_id: app.app.id,
                        dispatcher: broker.dispatcher.clone().recipient(),
                    }
                    .start();
                    anyhow::Ok((broker, source))
                };
                let (broker, source) = match setup.await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        actix::System::current().stop();
                        return;
                    }
                };
                let _ = tx.send(Ok(Phase::Ready));
                if go_rx.await.is_ok() {
                    let burst = Burst {
                        duration: params.duration,
                        concurrency: params.concurrency,
                        channels: params.channels,
                        round,
                        load,
                    };
                    let sent = source.send(burst).await;
                    let _ = tx.send(sent.map(|()| Phase::Loaded).map_err(anyhow::Error::from));
                    let _ = stop_rx.await;
                }
                broker.shutdown(Duration::from_secs(5)).await;
                actix::System::current().stop();
            });
        });
        InProcess {
            events,
            go: Some(go),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn go(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    /// Stops the broker (a clean shutdown) and waits for the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // Without a go the thread skips the burst and shuts the broker down.
        self.go.take();
        self.stop();
    }
}
