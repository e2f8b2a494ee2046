//! The change poller gives the registry its clock. The registry runs on a
//! `SyncArbiter`, whose context has no timers, so this small actor sends it
//! [`PollChanges`] every [`POLL_EVERY`]; the registry then applies what other
//! instances (or `webhook-broker apps create`) changed. One poll is in
//! flight at a time: a tick that finds the last poll unanswered (a slow
//! database) is skipped rather than queued behind it. A failed poll is
//! tried again at the next tick, since one failure is most often a
//! connection that took too long to open on a busy host, and waiting then
//! would break the 1 s coherence promise; failures in a row (the database
//! is down) back off to [`AFTER_FAILURE`] between polls, so the registry,
//! which ingest also waits on, is not kept busy retrying. The failure is
//! logged once, and the recovery too.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::registry::{PollChanges, Registry, POLL_EVERY};

/// The longest pause between polls while they keep failing.
pub const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How long to wait, beyond the next tick, after `failures` polls in a row
/// failed: nothing after the first, then doubling from a quarter second up
/// to [`AFTER_FAILURE`].
pub fn pause_after(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(250)
            .saturating_mul(1 << (n - 2).min(16))
            .min(AFTER_FAILURE),
    }
}

/// The change poller actor.
pub struct ChangePoller {
    registry: Addr<Registry>,
    polling: bool,
    /// Polls failed since the last that succeeded.
    failures: u32,
    /// Set after a failed poll: no poll before then.
    paused_until: Option<Instant>,
}

impl ChangePoller {
    /// A poller driving `registry`.
    pub fn new(registry: Addr<Registry>) -> Self {
        ChangePoller {
            registry,
            polling: false,
            failures: 0,
            paused_until: None,
        }
    }

    fn polled(&mut self, failure: Option<String>) {
        self.polling = false;
        match failure {
            None => {
                self.paused_until = None;
                if std::mem::take(&mut self.failures) > 0 {
                    log::info!("the change log can be read again");
                }
            }
            Some(why) => {
                self.failures += 1;
                if self.failures == 1 {
                    log::warn!(
                        "could not read the change log (retrying, at most {AFTER_FAILURE:?} \
                         apart): {why}"
                    );
                }
                self.paused_until = Some(Instant::now() + pause_after(self.failures));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_failed_poll_is_retried_at_the_next_tick() {
        assert_eq!(pause_after(1), Duration::ZERO);
    }

    #[test]
    fn failures_in_a_row_back_off_to_the_longest_pause_and_stay_there() {
        assert_eq!(pause_after(2), Duration::from_millis(250));
        assert_eq!(pause_after(3), Duration::from_millis(500));
        assert_eq!(pause_after(4), AFTER_FAILURE);
        assert_eq!(pause_after(5), AFTER_FAILURE);
        assert_eq!(pause_after(u32::MAX), AFTER_FAILURE);
    }
}
