//! Starting the broker: [`Broker::start`] brings up the database and the
//! actors inside the caller's actix System (for in-process use), and
//! [`Application::build`] adds the HTTP server on top (what the binary and
//! the tests run; bind port 0 to get a free port).

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::actors::delivery::DeliveryPolicy;
use crate::actors::dispatcher::{ClaimLeases, Dispatcher, LeaseConfig, Shutdown};
use crate::actors::janitor::Janitor;
use crate::actors::poller::ChangePoller;
use crate::actors::recorder::Recorder;
use crate::actors::registry::{Registry, Snapshot};
use crate::api::{self, auth, ApiState};
use crate::config::Config;
use crate::db::{self, Pool};
use crate::error::BrokerError;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] db::OpenError),
    /// The state could not be loaded.
    #[error("cannot load state from the database: {0}")]
    Load(#[from] BrokerError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// A running broker: its actors and database. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    /// The registry: subscription state.
    pub registry: Addr<Registry>,
    /// The dispatcher: send [`crate::ChannelEvent`]s here.
    pub dispatcher: Addr<Dispatcher>,
    /// The janitor: retention.
    pub janitor: Addr<Janitor>,
    pool: Pool,
    api: ApiState,
    /// Kept so the poller lives as long as the broker.
    _poller: Addr<ChangePoller>,
}

impl Broker {
    /// Opens the database (running migrations), loads the registry, starts
    /// the actors and resumes pending deliveries. Call it inside a running
    /// actix System, e.g. under `#[actix_web::main]`.
    pub async fn start(config: &Config) -> Result<Broker, StartError> {
        // awc's rustls backend needs a process-wide crypto provider; another
        // part of the process may have installed one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let url = config.database_url.clone();
        let (pool, snapshot) = web::block(move || {
            let pool = db::open(&url)?;
            let snapshot = {
                let mut conn = pool.get().map_err(db::OpenError::from)?;
                Snapshot::load(&mut conn).map_err(BrokerError::from)
            };
            Ok::<_, StartError>((pool, snapshot?))
        })
        .await
        .map_err(BrokerError::from)??;

        // The registry announces webhook changes to the dispatcher and the
        // dispatcher asks the registry for matches: make the dispatcher's
        // address first, start the registry with it, then run the dispatcher.
        let dispatcher_ctx = Context::<Dispatcher>::new();
        let changes = dispatcher_ctx.address().recipient();
        let snapshot = Mutex::new(Some(snapshot));
        let disable_after = config.disable_after;
        let secret_grace = config.secret_grace;
        let registry_pool = pool.clone();
        let registry = SyncArbiter::start(1, move || {
            let snapshot = snapshot
                .lock()
                .expect("registry snapshot lock")
                .take()
                .expect("the registry runs on exactly one thread");
            Registry::new(
                registry_pool.clone(),
                snapshot,
                changes.clone(),
                disable_after,
                secret_grace,
            )
        });

        // Changes made elsewhere (other instances, the CLI) reach the
        // registry through the change log, polled from here on.
        let poller = ChangePoller::new(registry.clone()).start();

        let arbiters = (0..config.delivery_workers)
            .map(|_| Arbiter::new().handle())
            .collect();
        let policy = Arc::new(DeliveryPolicy {
            retry_schedule: config.retry_schedule.clone(),
            timeout: config.delivery_timeout,
            allow_private_targets: config.allow_private_targets,
        });
        let recorder = Recorder::new(pool.clone(), config.instance_id.clone()).launch();
        let janitor = Janitor::new(pool.clone(), config.retention).start();
        let leases = LeaseConfig {
            owner: config.instance_id.clone(),
            lease: config.lease,
        };
        let dispatcher = dispatcher_ctx.run(
            Dispatcher::new(
                registry.clone(),
                recorder,
                pool.clone(),
                policy,
                leases,
                config.max_in_memory,
                arbiters,
            )
            .with_idempotency_ttl(config.idempotency_ttl),
        );

        // The leases this instance held before a restart, and its share of
        // those nobody holds, are claimed before the first new event is
        // taken, so a channel's old deliveries go out before its new ones.
        match dispatcher.send(ClaimLeases).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("could not claim webhook leases: {e}"),
            Err(e) => log::error!("could not claim webhook leases: {e}"),
        }

        let api = ApiState {
            registry: registry.clone(),
            dispatcher: dispatcher.clone(),
            admin_token_digest: auth::digest(&config.admin_token),
            allow_private_targets: config.allow_private_targets,
            max_body: config.max_body,
            pool: pool.clone(),
            idempotency_ttl: config.idempotency_ttl,
        };
        Ok(Broker {
            registry,
            dispatcher,
            janitor,
            pool,
            api,
            _poller: poller,
        })
    }

    /// The broker's REST routes, to mount on any actix-web `App`:
    /// `App::new().configure(broker.routes())`.
    pub fn routes(&self) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
        api::routes(self.api.clone())
    }

    /// A clean stop: no new events, attempts in flight finish (up to
    /// `grace`), outcomes are written, leases are given back. Whatever is
    /// still pending stays in the database for the next run.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        if let Err(e) = self.dispatcher.send(Shutdown { grace }).await {
            log::error!("dispatcher gone before shutdown: {e}");
        }
    }

    /// The database pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// The broker with its HTTP server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    broker: Broker,
    grace: std::time::Duration,
}

impl Application {
    /// Starts the broker and binds BROKER_BIND (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let broker = Broker::start(&config).await?;
        let listener = TcpListener::bind(config.bind)?;
        let port = listener.local_addr()?.port();
        let routes = broker.routes();
        let server = HttpServer::new(move || {
            App::new()
                .configure(routes.clone())
                .default_service(web::to(api::not_found))
        })
        .listen(listener)?
        // Signals are ours: the broker drains after the server stops.
        .disable_signals()
        .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
        .run();
        log::info!("listening on {}:{port}", config.bind.ip());
        Ok(Application {
            port,
            server,
            broker,
            grace: config.shutdown_grace,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker behind the server.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves until SIGTERM or SIGINT, then stops cleanly: the listener
    /// closes and requests under way finish, attempts in flight finish (up
    /// to BROKER_SHUTDOWN_GRACE), outcomes are written and leases given
    /// back. Everything else stays pending for the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = actix_web::rt::spawn(self.server);
        crate::systemd::ready();
        let watchdog = crate::systemd::watchdog_interval().map(|every| {
            let api = self.broker.api.clone();
            actix_web::rt::spawn(async move {
                loop {
                    actix_web::rt::time::sleep(every).await;
                    match api::health::actors_alive(&api, every).await {
                        Ok(()) => crate::systemd::watchdog(),
                        Err(why) => log::error!("withholding the watchdog ping: {why}"),
                    }
                }
            })
        });
        let stop = Box::pin(stop_signal());
        match futures_util::future::select(server, stop).await {
            futures_util::future::Either::Left((ended, _)) => {
                return ended.unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
            futures_util::future::Either::Right((signal, server)) => {
                log::info!("{signal}: stopping; in-flight work has {:?}", self.grace);
                crate::systemd::stopping();
                handle.stop(true).await;
                let _ = server.await;
            }
        }
        self.broker.shutdown(self.grace).await;
        if let Some(w) = watchdog {
            w.abort();
        }
        Ok(())
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn stop_signal() -> &'static str {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for signals; stop the broker with SIGKILL");
        return std::future::pending().await;
    };
    let which =
        match futures_util::future::select(Box::pin(term.recv()), Box::pin(int.recv())).await {
            futures_util::future::Either::Left(_) => "SIGTERM",
            futures_util::future::Either::Right(_) => "SIGINT",
        };
    which
}
