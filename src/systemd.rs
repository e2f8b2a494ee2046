//! The systemd notify protocol (through the `sd-notify` crate): READY=1
//! once migrations have run and the listener is bound, STOPPING=1 when a
//! stop begins, and WATCHDOG=1 at half of WATCHDOG_USEC, sent only while the
//! actors answer, so a wedged broker is restarted by systemd. Outside
//! systemd (no NOTIFY_SOCKET) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the broker is ready to serve.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd the broker is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pets the watchdog.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// How often to pet the watchdog: half of WATCHDOG_USEC, when systemd asked
/// for a watchdog (for this process).
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}
