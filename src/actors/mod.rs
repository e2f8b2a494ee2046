//! The actors of the broker. See docs/architecture.md for how they connect.

pub mod delivery;
pub mod dispatcher;
pub mod janitor;
pub mod poller;
pub mod recorder;
pub mod registry;
