//! The change poller gives the registry its clock. The registry runs on a
//! `SyncArbiter`, whose context has no timers, so this small actor sends it
//! [`PollChanges`] every [`POLL_EVERY`]; the registry then applies what other
//! instances (or `webhook-broker apps create`) changed. One poll is in
//! flight at a time: a tick that finds the last poll unanswered (a slow
//! database) is skipped rather than queued behind it.

use actix::prelude::*;

use super::registry::{PollChanges, Registry, POLL_EVERY};

/// The change poller actor.
pub struct ChangePoller {
    registry: Addr<Registry>,
    polling: bool,
}

impl ChangePoller {
    /// A poller driving `registry`.
    pub fn new(registry: Addr<Registry>) -> Self {
        ChangePoller {
            registry,
            polling: false,
        }
    }
}

impl Actor for ChangePoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(POLL_EVERY, |act, ctx| {
            if act.polling {
                return;
            }
            act.polling = true;
            let poll = act.registry.send(PollChanges);
            ctx.spawn(poll.into_actor(act).map(|res, act, _| {
                act.polling = false;
                match res {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => log::warn!("could not read the change log: {e}"),
                    Err(e) => log::error!("the registry did not answer a poll: {e}"),
                }
            }));
        });
    }
}
