//! Delivery policy as pure functions: what counts as success, when to try
//! again, how a receiver's `Retry-After` bends the schedule, and when a
//! webhook that keeps failing is disabled. The delivery actor only wires
//! these up; randomness comes in as an argument so every rule is testable.

use std::time::{Duration, SystemTime};

/// How far the broker lets a receiver push a retry out with `Retry-After`.
/// Longer values are cut to this, so one bad header cannot park a delivery
/// for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The share of each scheduled delay that jitter may add or remove.
pub const JITTER: f64 = 0.2;

/// Whether a receiver's status code acknowledges the delivery. Only 2xx
/// does; a redirect is not followed and counts as a failure.
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The scheduled delay before the next attempt after `attempts_made`
/// attempts, or `None` when the schedule is used up.
pub fn next_delay(schedule: &[Duration], attempts_made: u32) -> Option<Duration> {
    let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
    schedule.get(index).copied()
}

/// `delay` moved by up to ±20%: `unit` is a random number in [-1, 1].
/// Spreading retries keeps a recovering receiver from being hit by every
/// delivery that failed in the same second.
pub fn jittered(delay: Duration, unit: f64) -> Duration {
    let factor = 1.0 + JITTER * unit.clamp(-1.0, 1.0);
    delay.mul_f64(factor)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date, relative to
/// `now`. A date in the past means "now"; garbage means no hint.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The receiver acknowledged it.
    Succeeded,
    /// Try again after this long.
    Retry(Duration),
    /// The schedule is used up.
    Failed,
    /// The receiver answered 410 Gone: disable the webhook, keep the delivery.
    Gone,
}

/// Decides the fate of a delivery after its `attempts_made`-th attempt.
/// `status` is `None` for a timeout or connection error; `retry_after` is
/// the receiver's parsed hint, honoured on 429 and 503 only.
pub fn decide(
    schedule: &[Duration],
    attempts_made: u32,
    status: Option<u16>,
    retry_after: Option<Duration>,
    jitter_unit: f64,
) -> Verdict {
    match status {
        Some(code) if is_success(code) => return Verdict::Succeeded,
        Some(410) => return Verdict::Gone,
        _ => {}
    }
    let Some(delay) = next_delay(schedule, attempts_made) else {
        return Verdict::Failed;
    };
    match (status, retry_after) {
        (Some(429 | 503), Some(hint)) => Verdict::Retry(hint.min(MAX_RETRY_AFTER)),
        _ => Verdict::Retry(jittered(delay, jitter_unit)),
    }
}

/// Whether a webhook whose delivery just failed for good should be
/// disabled: it has had no successful delivery (or, never having had one,
/// has existed) for at least `disable_after`.
pub fn should_disable(
    now_ms: i64,
    last_success_ms: Option<i64>,
    created_ms: i64,
    disable_after: Duration,
) -> bool {
    let since = last_success_ms.unwrap_or(created_ms).max(created_ms);
    now_ms.saturating_sub(since) >= disable_after.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn only_2xx_is_success() {
        assert!(is_success(200));
        assert!(is_success(204));
        assert!(is_success(299));
        for code in [100, 301, 302, 304, 400, 404, 410, 429, 500, 503] {
            assert!(!is_success(code), "{code}");
        }
    }

    #[test]
    fn each_retry_waits_its_own_delay_then_the_delivery_gives_up() {
        let schedule = [S(5), S(300)];
        assert_eq!(next_delay(&schedule, 1), Some(S(5)));
        assert_eq!(next_delay(&schedule, 2), Some(S(300)));
        assert_eq!(next_delay(&schedule, 3), None);
        assert_eq!(next_delay(&[], 1), None);
        assert_eq!(next_delay(&schedule, 0), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(jittered(S(100), 0.0), S(100));
        assert_eq!(jittered(S(100), 1.0), S(120));
        assert_eq!(jittered(S(100), -1.0), S(80));
        assert_eq!(
            jittered(S(100), 7.0),
            S(120),
            "out-of-range randomness is clamped"
        );
        for i in -10..=10 {
            let d = jittered(S(10), f64::from(i) / 10.0);
            assert!(d >= S(8) && d <= S(12), "{d:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + S(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(S(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(S(0)));
        let later = httpdate::fmt_http_date(now + S(90));
        assert_eq!(parse_retry_after(&later, now), Some(S(90)));
        let earlier = httpdate::fmt_http_date(now - S(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn a_failure_is_retried_with_jitter_until_the_schedule_ends() {
        let schedule = [S(10), S(60)];
        assert_eq!(
            decide(&schedule, 1, Some(500), None, 0.5),
            Verdict::Retry(S(11))
        );
        assert_eq!(
            decide(&schedule, 2, None, None, -0.5),
            Verdict::Retry(S(54))
        );
        assert_eq!(decide(&schedule, 3, Some(500), None, 0.0), Verdict::Failed);
        assert_eq!(
            decide(&schedule, 1, Some(204), None, 0.0),
            Verdict::Succeeded
        );
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_bounded() {
        let schedule = [S(10)];
        assert_eq!(
            decide(&schedule, 1, Some(429), Some(S(3)), 0.9),
            Verdict::Retry(S(3))
        );
        assert_eq!(
            decide(&schedule, 1, Some(503), Some(S(30)), 0.0),
            Verdict::Retry(S(30))
        );
        assert_eq!(
            decide(&schedule, 1, Some(503), Some(S(86_400)), 0.0),
            Verdict::Retry(MAX_RETRY_AFTER)
        );
        assert_eq!(
            decide(&schedule, 1, Some(500), Some(S(3)), 0.0),
            Verdict::Retry(S(10))
        );
        assert_eq!(
            decide(&schedule, 2, Some(429), Some(S(3)), 0.0),
            Verdict::Failed
        );
    }

    #[test]
    fn gone_disables_at_once_whatever_the_schedule() {
        assert_eq!(decide(&[S(1)], 1, Some(410), None, 0.0), Verdict::Gone);
        assert_eq!(decide(&[], 9, Some(410), None, 0.0), Verdict::Gone);
    }

    #[test]
    fn a_webhook_is_disabled_only_after_long_enough_without_success() {
        let day = 86_400_000i64;
        let five_days = S(5 * 86_400);
        let now = 100 * day;
        assert!(should_disable(now, Some(now - 5 * day), 0, five_days));
        assert!(!should_disable(now, Some(now - 4 * day), 0, five_days));
        // Never a success: counted from creation.
        assert!(!should_disable(now, None, now - day, five_days));
        assert!(should_disable(now, None, now - 6 * day, five_days));
    }
}
