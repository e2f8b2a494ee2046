//! The lease rules: which instance sends a webhook's deliveries, and when it
//! must stop. Pure functions; [`crate::db::leases`] runs the queries and the
//! dispatcher wires both up.
//!
//! Work is leased per webhook. A lease row names its owner, a fencing token
//! (`epoch`, one more on every takeover) and when it lapses, by the
//! database's clock. The protocol:
//!
//! - **Claim**: an instance takes leases that are free (never taken, or
//!   given back) or lapsed ([`claimable`]), with `SKIP LOCKED` on MySQL, up
//!   to its fair share of the webhooks among the live instances
//!   ([`plan`]); each take adds one to the epoch. At start it also takes
//!   back its own leases from a previous run (same instance id): that run is
//!   dead, since two live instances with one id are refused.
//! - **Renew**: every lease/3 it extends the leases it holds, and only
//!   those: a row that names it but that it does not hold (a claim whose
//!   answer was lost) lapses and is taken again by whoever claims next.
//!   What the renewal finds it no longer holds is lost ([`lost`]): its
//!   actor stops.
//! - **Stop sending**: an instance sends only while its last successful
//!   renewal is recent by its own monotonic clock ([`Validity`]): the
//!   renewal's start plus 80% of the lease. The database judged the lease
//!   from a moment after that start, so the owner always stops before
//!   anyone else may take over, whatever the skew between their clocks. A
//!   paused or cut-off instance therefore stops within one lease period.
//! - **Fence**: every outcome write locks the lease row and applies only
//!   outcomes whose owner and epoch still match. An instance that lost a
//!   lease cannot overwrite the new owner's rows, even if it was paused
//!   between deciding and writing.
//! - **Give back**: a clean stop, or an instance over its fair share, first
//!   lets the attempts in flight finish and their outcomes land, then frees
//!   the lease (still fenced by epoch), so the next owner starts at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A lease as stored: `webhook_id` held by `owner` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The webhook whose deliveries it covers.
    pub webhook_id: String,
    /// The fencing token.
    pub epoch: i64,
}

/// Whether `me` may take a lease whose row says `owner` until
/// `lease_until`, at `db_now` by the database's clock. `starting` is true
/// for the first claim of a process, which takes back its own.
pub fn claimable(
    owner: Option<&str>,
    lease_until: Option<i64>,
    db_now: i64,
    me: &str,
    starting: bool,
) -> bool {
    match (owner, lease_until) {
        (None, _) | (_, None) => true,
        (Some(o), _) if starting && o == me => true,
        (_, Some(until)) => until < db_now,
    }
}

/// An instance's fair share of `webhooks` among `live` instances (itself
/// included): the ceiling, so that the shares cover every webhook.
pub fn fair_share(webhooks: usize, live: usize) -> usize {
    webhooks.div_ceil(live.max(1))
}

/// What a claim round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Take up to this many free or lapsed leases.
    Claim(usize),
    /// Give this many back: more instances have come up.
    Shed(usize),
}

/// The claim round's plan for an instance holding `held` of `webhooks`
/// leases with `live` instances alive. Below its share it claims the rest
/// of it; above, it sheds the excess. A lapsed lease never waits for lack
/// of share: an instance at its share still claims one more when `free`
/// leases remain (their instance died and the census has not caught up).
pub fn plan(held: usize, webhooks: usize, live: usize, free: usize) -> Plan {
    let share = fair_share(webhooks, live);
    if held > share {
        return Plan::Shed(held - share);
    }
    let want = share - held;
    if want == 0 && free > 0 {
        return Plan::Claim(1);
    }
    Plan::Claim(want)
}

/// The leases of `asked` (webhook id, epoch held) that a renewal did not
/// find as held with the same epoch in `still`: lost to another instance
/// (or freed by an operator). Judged a renewal round at a time, so that
/// 100,000 leases never need a second copy of every id.
pub fn lost<K: AsRef<str> + Clone>(asked: &[(K, i64)], still: &[Lease]) -> Vec<(K, i64)> {
    let still: HashMap<&str, i64> = still
        .iter()
        .map(|l| (l.webhook_id.as_str(), l.epoch))
        .collect();
    asked
        .iter()
        .filter(|(id, epoch)| still.get(id.as_ref()) != Some(epoch))
        .cloned()
        .collect()
}

/// How long after a renewal starts an instance may go on sending under it.
pub fn sending_window(lease: Duration) -> Duration {
    lease.mul_f64(0.8)
}

/// Until when this instance may send, by its own monotonic clock: shared
/// by the dispatcher, which moves it after each successful renewal, and
/// every delivery actor, which checks it before each attempt.
#[derive(Debug)]
pub struct Validity {
    base: Instant,
    lease: Duration,
    /// Nanoseconds after `base`.
    until: AtomicU64,
}

impl Validity {
    /// A validity that has not started: nothing may be sent before the
    /// first claim or renewal.
    pub fn new(lease: Duration) -> Self {
        Validity {
            base: Instant::now(),
            lease,
            until: AtomicU64::new(0),
        }
    }

    /// A renewal (or claim) that started at `started` succeeded.
    pub fn renewed(&self, started: Instant) {
        let until = started.saturating_duration_since(self.base) + sending_window(self.lease);
        self.until
            .fetch_max(until.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Whether sending is allowed now.
    pub fn valid(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// Whether sending is allowed at `now`.
    pub fn valid_at(&self, now: Instant) -> bool {
        (now.saturating_duration_since(self.base).as_nanos() as u64)
            < self.until.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_and_lapsed_leases_may_be_claimed_and_live_ones_not() {
        assert!(claimable(None, None, 100, "a", false));
        assert!(claimable(Some("b"), None, 100, "a", false));
        assert!(claimable(Some("b"), Some(99), 100, "a", false));
        assert!(!claimable(Some("b"), Some(100), 100, "a", false));
        assert!(!claimable(Some("b"), Some(500), 100, "a", false));
        // Its own live lease only at start: a previous run of the same id.
        assert!(!claimable(Some("a"), Some(500), 100, "a", false));
        assert!(claimable(Some("a"), Some(500), 100, "a", true));
        assert!(!claimable(Some("b"), Some(500), 100, "a", true));
    }

    #[test]
    fn the_fair_share_covers_every_webhook() {
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(9, 3), 3);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5);
        assert!(fair_share(10, 3) * 3 >= 10);
    }

    #[test]
    fn an_instance_claims_up_to_its_share_and_sheds_what_is_over() {
        assert_eq!(plan(0, 10, 1, 10), Plan::Claim(10));
        assert_eq!(plan(0, 10, 2, 0), Plan::Claim(5));
        assert_eq!(plan(10, 10, 2, 0), Plan::Shed(5));
        assert_eq!(plan(4, 10, 3, 0), Plan::Claim(0));
        // At its share with leases left free: one more, so none waits.
        assert_eq!(plan(4, 10, 3, 2), Plan::Claim(1));
    }

    #[test]
    fn a_lease_not_found_with_its_epoch_is_lost() {
        let asked = [("w1", 3), ("w2", 5), ("w3", 1)];
        let still = vec![
            Lease {
                webhook_id: "w1".into(),
                epoch: 3,
            },
            Lease {
                webhook_id: "w2".into(),
                epoch: 6,
            },
        ];
        assert_eq!(lost(&asked, &still), vec![("w2", 5), ("w3", 1)]);
        assert!(lost(&asked[..1], &still).is_empty());
    }

    #[test]
    fn sending_stops_before_the_lease_lapses_and_resumes_on_renewal() {
        let lease = Duration::from_secs(10);
        let v = Validity::new(lease);
        let start = Instant::now();
        assert!(!v.valid_at(start), "nothing is sent before the first claim");
        v.renewed(start);
        assert!(v.valid_at(start + Duration::from_secs(7)));
        assert!(!v.valid_at(start + Duration::from_secs(8)));
        // An older renewal's answer arriving late never shortens it.
        v.renewed(start + Duration::from_secs(5));
        v.renewed(start + Duration::from_secs(1));
        assert!(v.valid_at(start + Duration::from_secs(12)));
        assert!(!v.valid_at(start + Duration::from_secs(13)));
    }
}
