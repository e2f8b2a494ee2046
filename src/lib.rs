//! webhook-broker: tells applications, over signed HTTP callbacks, when a
//! live channel starts, stops and ends.
//!
//! Run it as a daemon (the `webhook-broker` binary), or inside your own actix
//! System: [`Broker::start`] and send [`ChannelEvent`]s to
//! `broker.dispatcher`; mount the REST API with `broker.routes()`.

pub mod actors;
pub mod api;
pub mod backlog;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod policy;
pub mod portal_token;
pub mod signature;
pub mod ssrf;
pub mod startup;
pub mod subscription;
pub mod systemd;

pub use actors::dispatcher::{ChannelEvent, EventAccepted};
pub use config::Config;
pub use domain::{CustomHeaders, EventKind, EventSet, WebhookUri};
pub use error::BrokerError;
pub use startup::{Application, Broker, StartError};
