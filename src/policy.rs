//! Delivery policy as pure functions: what counts as success and when to try
//! again. The delivery actor only wires these up.

use std::time::Duration;

/// Whether a receiver's status code acknowledges the delivery. Only 2xx
/// does; a redirect is not followed and counts as a failure.
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The delay before the next attempt after `attempts_made` attempts, or
/// `None` when the schedule is used up and the delivery has failed.
pub fn next_delay(schedule: &[Duration], attempts_made: u32) -> Option<Duration> {
    let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
    schedule.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        assert_eq!(next_delay(&schedule, 1), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(&schedule, 2), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(&schedule, 3), None);
        assert_eq!(next_delay(&[], 1), None);
        assert_eq!(next_delay(&schedule, 0), None);
    }
}
