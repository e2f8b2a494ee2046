//! MariaDB restarted under load, with the real binary: while the database
//! is down, ingest answers 503 (promptly, never 500); once it is back,
//! ingest and delivery resume by themselves, without a broker restart, and
//! every acknowledged event reaches the receiver.
//!
//! This file holds this one test only: it stops the shared MariaDB server,
//! and cargo runs test binaries one after another, so no other MySQL test
//! runs meanwhile. The server is always started again, even on a panic.
//! It needs the `mysql` feature (`cargo test --features mysql`).
#![cfg(feature = "mysql")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use common::daemon::{self, Running};
use common::{Answer, Store, TestDb};

const PID_FILE: &str = "/run/mysqld/mysqld.pid";
/// The longest an ingest request may take, database down or not.
const MAX_ANSWER: Duration = Duration::from_secs(10);

fn mariadb_up() -> bool {
    Command::new("mariadb")
        .args(["-h127.0.0.1", "-uroot", "-e", "select 1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn server_pid() -> Option<u32> {
    std::fs::read_to_string(PID_FILE).ok()?.trim().parse().ok()
}

/// Whether the process runs (a zombie nobody reaps counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Stops the server and waits until its process is gone.
fn stop_mariadb() {
    let pid = server_pid();
    let status = Command::new("mariadb-admin")
        .args(["-h127.0.0.1", "-uroot", "shutdown"])
        .stdin(Stdio::null())
        .status()
        .expect("mariadb-admin runs");
    assert!(status.success(), "mariadb-admin shutdown: {status}");
    if let Some(pid) = pid {
        assert!(
            daemon::wait_until(Duration::from_secs(60), || !alive(pid)),
            "mariadbd {pid} still runs 60 s after shutdown"
        );
    }
    assert!(
        daemon::wait_until(Duration::from_secs(10), || !mariadb_up()),
        "MariaDB still answers after shutdown"
    );
}

/// Starts the server unless it answers already; waits up to 60 s for it.
fn start_mariadb() -> bool {
    if mariadb_up() {
        return true;
    }
    // start-stop-daemon --oknodo does nothing while the old one still exits.
    if let Some(pid) = server_pid() {
        daemon::wait_until(Duration::from_secs(60), || !alive(pid));
    }
    let started = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
            "--",
            "--user=mysql",
        ])
        .stdin(Stdio::null())
        .status();
    if let Err(e) = started {
        eprintln!("cannot run start-stop-daemon: {e}");
    }
    daemon::wait_until(Duration::from_secs(60), mariadb_up)
}

/// Starts MariaDB again when dropped, whatever happened: other tests need it.
struct MariaDbRunning;

impl Drop for MariaDbRunning {
    fn drop(&mut self) {
        if !start_mariadb() {
            eprintln!("MariaDB did not come back within 60 s");
        }
    }
}

/// One ingest request and its answer.
#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    /// The HTTP status, or the transport error.
    answer: Result<u16, String>,
    took: Duration,
    at: Instant,
}

#[test]
fn ingest_answers_503_while_mariadb_is_down_and_delivery_resumes_after() {
    let Some(db) = TestDb::new(Store::Mysql) else {
        return;
    };
    // Dropped before `db`, so the test database can be dropped on a live server.
    let _running = MariaDbRunning;
    let dir = tempfile::tempdir().unwrap();
    // Every event's first attempt fails, so retries and their outcomes run
    // across the outage too.
    let tried = Mutex::new(HashSet::new());
    let receiver = daemon::background_receiver(move |req, _| {
        let seq = req.json()["seq"].as_u64().unwrap_or(0);
        if tried.lock().unwrap().insert(seq) {
            Answer::status(500)
        } else {
            Answer::status(204)
        }
    });
    let url = daemon::database_url(&db);
    let (mut broker, port) = Running::listening(
        dir.path(),
        &[
            ("DATABASE_URL", url.as_str()),
            ("BROKER_BIND", "127.0.0.1:0"),
            ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
            ("BROKER_ALLOW_PRIVATE_TARGETS", "true"),
            ("BROKER_INSTANCE_ID", "mariadb-restart-broker"),
            ("BROKER_RETRY_SCHEDULE", "200ms,200ms,500ms,1s,1s,2s"),
            // Leases lapse while MariaDB is down.
            ("BROKER_LEASE", "3s"),
        ],
    );
    let (app_id, _) = daemon::app_with_webhook(port, &receiver.url, "all");

    // Two paced streams of events, from before the stop to after the start.
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let (sent, stop, next, app_id) =
                (sent.clone(), stop.clone(), next.clone(), app_id.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    let channel = json!({ "id": format!("ch-{}", seq % 4), "seq": seq });
                    let at = Instant::now();
                    let answer =
                        daemon::send_event(port, &app_id, channel, Duration::from_secs(20))
                            .map(|(status, _)| status)
                            .map_err(|e| e.to_string());
                    let took = at.elapsed();
                    sent.lock().unwrap().push(Sent {
                        seq,
                        answer,
                        took,
                        at,
                    });
                    std::thread::sleep(Duration::from_millis(25));
                }
            })
        })
        .collect();
    let accepted_since = |since: Instant| {
        sent.lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= since && s.answer == Ok(202))
            .count()
    };
    let began = Instant::now();
    assert!(
        daemon::wait_until(Duration::from_secs(30), || accepted_since(began) >= 100),
        "100 events not accepted within 30 s"
    );

    // MariaDB goes away.
    let stopping = Instant::now();
    stop_mariadb();
    let down = Instant::now();
    let mut probes = Vec::new();
    for _ in 0..2 {
        let at = Instant::now();
        let answer = daemon::send_event(
            port,
            &app_id,
            json!({ "id": "probe", "seq": 0 }),
            Duration::from_secs(20),
        );
        probes.push((answer.map_err(|e| e.to_string()), at.elapsed()));
    }
    let health_while_down = daemon::try_http(port, "GET", "/healthz", None, "", MAX_ANSWER)
        .map(|(s, _)| s)
        .map_err(|e| e.to_string());
    let restarting = Instant::now();
    assert!(start_mariadb(), "MariaDB did not start again within 60 s");
    let up = Instant::now();
    eprintln!(
        "MariaDB: stopped in {:?}, down for {:?} (probes {probes:?}; /healthz {health_while_down:?}), \
         started in {:?}",
        down - stopping,
        restarting - down,
        up - restarting
    );
    for (answer, took) in &probes {
        assert!(
            matches!(answer, Ok((503, _))),
            "while MariaDB is down ingest must answer 503, got {answer:?} after {took:?}"
        );
        assert!(*took < MAX_ANSWER, "a 503 took {took:?}");
    }

    // Without a broker restart, ingest works again and delivery resumes.
    let recovered = daemon::wait_until(Duration::from_secs(60), || accepted_since(up) >= 100);
    stop.store(true, Ordering::SeqCst);
    for s in streams {
        s.join().expect("streaming thread");
    }
    let sent = sent.lock().unwrap().clone();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        let key = match &s.answer {
            Ok(status) => status.to_string(),
            Err(e) => e.clone(),
        };
        *answers.entry(key).or_insert(0) += 1;
    }
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(
        recovered,
        "ingest did not recover within 60 s of MariaDB's start: answers {answers:?}; log:\n{}",
        broker.log()
    );
    let accepted: HashSet<u64> = sent
        .iter()
        .filter(|s| s.answer == Ok(202))
        .map(|s| s.seq)
        .collect();

    let by_seq = || -> HashMap<u64, usize> {
        let mut by_seq = HashMap::new();
        for req in receiver.received() {
            if let Some(seq) = req.json()["seq"].as_u64() {
                *by_seq.entry(seq).or_insert(0) += 1;
            }
        }
        by_seq
    };
    daemon::wait_until(Duration::from_secs(60), || {
        let got = by_seq();
        accepted.iter().all(|s| got.contains_key(s))
    });
    let got = by_seq();
    let mut lost: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|s| !got.contains_key(s))
        .collect();
    lost.sort_unstable();
    // Each event's first try was a failure by design.
    let duplicates: usize = got.values().map(|n| n.saturating_sub(2)).sum();
    let health = daemon::try_http(port, "GET", "/healthz", None, "", MAX_ANSWER);
    eprintln!(
        "answers {answers:?}; slowest {slowest:?}; accepted {} (before the stop {}, after the \
         start {}); received {} events, {duplicates} duplicates; lost {}",
        accepted.len(),
        sent.iter()
            .filter(|s| s.at < stopping && s.answer == Ok(202))
            .count(),
        sent.iter()
            .filter(|s| s.at >= up && s.answer == Ok(202))
            .count(),
        got.len(),
        lost.len()
    );
    assert!(
        sent.iter()
            .all(|s| matches!(s.answer, Ok(202) | Ok(503)) && s.took < MAX_ANSWER),
        "every ingest answered 202 or 503 within {MAX_ANSWER:?}: answers {answers:?}, slowest {slowest:?}"
    );
    assert!(
        lost.is_empty(),
        "{} accepted events never arrived: {:?}; log:\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        broker.log()
    );
    assert!(
        matches!(health, Ok((200, _))),
        "/healthz after the restart: {health:?}"
    );
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker kept running"
    );
}
