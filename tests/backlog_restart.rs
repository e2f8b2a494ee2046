//! A restart with a backlog several times the claim limit (1,000): the
//! receivers answer 503 while thousands of deliveries pile up, the broker is
//! killed with `kill -9`, and the same instance comes back. It must open its
//! port (the start-up claim once looped for ever on its own fresh leases),
//! and once the receivers answer, every delivery arrives, each channel's in
//! order. Real binary, real database, figures from the process boundary.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{self, Running};
use common::{Answer, Store, TestDb};

const EVENTS: u64 = 2_500;
const WEBHOOKS: usize = 2;
/// A multiple of the four senders, so that each channel has one sender,
/// which sends its events one after another: their order is defined.
const CHANNELS: u64 = 48;
const MAX_IN_MEMORY: usize = 100;

/// `webhook_broker_deliveries_pending`: what the broker holds in memory.
fn held_in_memory(port: u16) -> f64 {
    let (status, text) = daemon::http(port, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    text.lines()
        .find(|l| l.starts_with("webhook_broker_deliveries_pending "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pending gauge in:\n{text}"))
}

fn env_of(db: &TestDb) -> Vec<(String, String)> {
    // 100 retries 2 s apart: no delivery fails for good while the receivers
    // are down during the test.
    daemon::broker_env(db, "backlog-broker", &vec!["2s"; 100].join(","))
}

fn start(dir: &std::path::Path, env: &[(String, String)]) -> (Running, u16, Duration) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let started = Instant::now();
    let (running, port) = Running::listening(dir, &env);
    (running, port, started.elapsed())
}

fn a_restart_with_a_backlog_beyond_the_claim_limit_opens_its_port_and_delivers_it_in_order(
    store: Store,
) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let receiver = {
        let up = up.clone();
        daemon::background_receiver(move |_, _| {
            Answer::status(if up.load(Ordering::SeqCst) { 204 } else { 503 })
        })
    };
    let env = env_of(&db);
    let (mut broker, port, _) = start(dir.path(), &env);
    let (app_id, _) = daemon::app_with_numbered_webhooks(port, "backlog", &receiver.url, WEBHOOKS);
    // Four senders; each channel's events come from one of them, one after
    // another (seq % 4 is the sender, and 4 divides CHANNELS).
    daemon::send_in_channels(port, &app_id, EVENTS, CHANNELS, 4, Duration::from_secs(10));
    let pending = EVENTS as usize * WEBHOOKS;
    // Each channel's oldest delivery has been tried and answered 503; the
    // rest of every channel waits behind it.
    let heads = WEBHOOKS * CHANNELS as usize;
    assert!(
        daemon::wait_until(Duration::from_secs(60), || receiver.received().len()
            >= heads),
        "only {} of {heads} channel heads were tried; log:\n{}",
        receiver.received().len(),
        broker.log()
    );
    broker.kill9();

    // The smallest budget: the backlog is 50 times larger, so after the
    // restart it can only be delivered page by page.
    let mut env = env;
    env.push(("BROKER_MAX_IN_MEMORY".into(), MAX_IN_MEMORY.to_string()));
    let (mut broker, port, took) = start(dir.path(), &env);
    eprintln!("{store:?}: listening {took:?} after the restart with {pending} pending");
    assert!(
        took < Duration::from_secs(20),
        "the restarted broker took {took:?} to listen"
    );
    // Still failing: the broker holds its budget's worth, not the backlog.
    let before = receiver.received().len();
    assert!(
        daemon::wait_until(Duration::from_secs(20), || receiver.received().len()
            >= before + heads),
        "the restarted broker retried nothing; log:\n{}",
        broker.log()
    );
    for _ in 0..10 {
        let held = held_in_memory(port);
        assert!(
            held <= MAX_IN_MEMORY as f64,
            "{held} deliveries held in memory, over the budget of {MAX_IN_MEMORY}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = receiver.received().len();
    up.store(true, Ordering::SeqCst);

    // Per webhook and channel, the seqs in the order they first arrived 2xx.
    let delivered = || -> HashMap<(String, String), Vec<u64>> {
        let mut seen: HashSet<(String, u64)> = HashSet::new();
        let mut order: HashMap<(String, String), Vec<u64>> = HashMap::new();
        for req in receiver.received().into_iter().skip(before) {
            let body = req.json();
            let seq = body["seq"].as_u64().unwrap();
            let channel = body["id"].as_str().unwrap().to_owned();
            if seen.insert((req.path.clone(), seq)) {
                order
                    .entry((req.path.clone(), channel))
                    .or_default()
                    .push(seq);
            }
        }
        order
    };
    let all_arrived = daemon::wait_until(Duration::from_secs(120), || {
        delivered().values().map(Vec::len).sum::<usize>() >= pending
    });
    let order = delivered();
    let got: usize = order.values().map(Vec::len).sum();
    assert!(
        all_arrived,
        "{got} of {pending} deliveries arrived after the restart; log:\n{}",
        broker.log()
    );
    assert_eq!(order.len(), WEBHOOKS * CHANNELS as usize);
    for ((path, channel), seqs) in &order {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "{path} {channel} arrived out of order");
    }
    broker.sigterm();
    assert!(broker.wait_exit(Duration::from_secs(30)).is_some());
}

mod a_restart_with_a_backlog_beyond_the_claim_limit_opens_its_port_and_delivers_it_in_order {
    #[test]
    fn sqlite() {
        super::a_restart_with_a_backlog_beyond_the_claim_limit_opens_its_port_and_delivers_it_in_order(
            super::Store::Sqlite,
        )
    }
    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        super::a_restart_with_a_backlog_beyond_the_claim_limit_opens_its_port_and_delivers_it_in_order(
            super::Store::Mysql,
        )
    }
}
