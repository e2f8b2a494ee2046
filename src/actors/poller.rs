//! The change poller gives the registry its clock. The registry runs on a
//! `SyncArbiter`, whose context has no timers, so this small actor sends it
//! [`PollChanges`] every [`POLL_EVERY`]; the registry then applies what other
//! instances (or `webhook-broker apps create`) changed. One poll is in
//! flight at a time: a tick that finds the last poll unanswered (a slow
//! database) is skipped rather than queued behind it. After a failed poll
//! (the database is down) it waits [`AFTER_FAILURE`] before the next, so
//! the registry, which ingest also waits on, is not kept busy retrying;
//! the failure is logged once, and the recovery too.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::registry::{PollChanges, Registry, POLL_EVERY};

/// The pause after a failed poll.
pub const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The change poller actor.
pub struct ChangePoller {
    registry: Addr<Registry>,
    polling: bool,
    /// Set after a failed poll: no poll before then.
    paused_until: Option<Instant>,
}

impl ChangePoller {
    /// A poller driving `registry`.
    pub fn new(registry: Addr<Registry>) -> Self {
        ChangePoller {
            registry,
            polling: false,
            paused_until: None,
        }
    }

    fn polled(&mut self, failure: Option<String>) {
        self.polling = false;
        match failure {
            None => {
                if self.paused_until.take().is_some() {
                    log::info!("the change log can be read again");
                }
            }
            Some(why) => {
                if self.paused_until.is_none() {
                    log::warn!(
                        "could not read the change log (retrying every {AFTER_FAILURE:?}): {why}"
                    );
                }
                self.paused_until = Some(Instant::now() + AFTER_FAILURE);
            }
        }
    }
}

impl Actor for ChangePoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(POLL_EVERY, |act, ctx| {
            if act.polling || act.paused_until.is_some_and(|t| Instant::now() < t) {
                return;
            }
            act.polling = true;
            let poll = act.registry.send(PollChanges);
            ctx.spawn(poll.into_actor(act).map(|res, act, _| match res {
                Ok(Ok(_)) => act.polled(None),
                Ok(Err(e)) => act.polled(Some(e.to_string())),
                Err(e) => act.polled(Some(format!("the registry did not answer: {e}"))),
            }));
        });
    }
}
