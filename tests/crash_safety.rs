//! Crash safety of the real binary, driven as a process: `kill -9` in the
//! middle of a stream of events (SQLite and MariaDB) loses nothing that was
//! acknowledged, a channel keeps its order across a restart, and SIGTERM
//! lets in-flight POSTs finish (up to BROKER_SHUTDOWN_GRACE), leaves the
//! rest pending and exits 0.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::json;

use common::daemon::{self, Running};
use common::{Answer, Received, Store, TestDb};
use webhook_broker::db::schema::{deliveries, webhook_leases};

/// The lease owner every run of a test's broker writes: a restart is the
/// same instance coming back.
const INSTANCE_ID: &str = "crash-safety-broker";
const RETRY_SCHEDULE: &str = "200ms,200ms,500ms,1s,1s,2s";

/// The broker's environment for `db`, with `extra` settings on top.
fn broker_env(db: &TestDb, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = [
        ("DATABASE_URL", daemon::database_url(db).as_str()),
        ("BROKER_BIND", "127.0.0.1:0"),
        ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
        ("BROKER_ALLOW_PRIVATE_TARGETS", "true"),
        ("BROKER_INSTANCE_ID", INSTANCE_ID),
        ("BROKER_RETRY_SCHEDULE", RETRY_SCHEDULE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env.into_iter().collect()
}

/// Starts the binary in `dir` and waits until it listens.
fn start(dir: &std::path::Path, env: &[(String, String)]) -> (Running, u16) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Running::listening(dir, &env)
}

/// What a test receiver saw of one request, and what it answered.
#[derive(Debug, Clone)]
struct Arrival {
    channel: String,
    seq: u64,
    webhook_id: String,
    status: u16,
    at: Instant,
}

impl Arrival {
    fn of(req: &Received, status: u16) -> Arrival {
        let body = req.json();
        Arrival {
            channel: body["id"].as_str().unwrap_or_default().to_owned(),
            seq: body["seq"].as_u64().unwrap_or(0),
            webhook_id: req.header("webhook-id").unwrap_or_default().to_owned(),
            status,
            at: req.at,
        }
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

type Log = Arc<Mutex<Vec<Arrival>>>;

fn arrivals(log: &Log) -> Vec<Arrival> {
    log.lock().unwrap().clone()
}

/// The delivery's (status, attempts) and its webhook's lease owner, read
/// from the SQLite file.
fn delivery_state(path: &str, id: &str) -> (String, i32, Option<String>) {
    let mut conn = diesel::SqliteConnection::establish(path).expect("open the SQLite file");
    conn.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
    let (state, attempts, webhook_id): (String, i32, String) = deliveries::table
        .find(id)
        .select((
            deliveries::status,
            deliveries::attempts,
            deliveries::webhook_id,
        ))
        .first(&mut conn)
        .unwrap_or_else(|e| panic!("delivery {id}: {e}"));
    let owner = webhook_leases::table
        .find(&webhook_id)
        .select(webhook_leases::owner)
        .first(&mut conn)
        .unwrap_or_else(|e| panic!("lease of {webhook_id}: {e}"));
    (state, attempts, owner)
}

fn sqlite_path(db: &TestDb) -> String {
    match &db.url {
        webhook_broker::config::DatabaseUrl::Sqlite(p) => p.clone(),
        other => panic!("not SQLite: {other:?}"),
    }
}

/// Posts events from `threads` threads, seq after seq from `next` up to
/// `last`, until `stop` is set; every seq answered 202 goes to `accepted`.
/// Each thread returns how many answers of each other kind it got.
fn stream(
    port: u16,
    app_id: &str,
    threads: usize,
    next: Arc<AtomicU64>,
    last: u64,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<u64>>>,
) -> Vec<JoinHandle<BTreeMap<String, usize>>> {
    const CHANNELS: u64 = 8;
    (0..threads)
        .map(|_| {
            let (next, stop, accepted) = (next.clone(), stop.clone(), accepted.clone());
            let app_id = app_id.to_owned();
            std::thread::spawn(move || {
                let mut others = BTreeMap::new();
                while !stop.load(Ordering::SeqCst) {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    if seq > last {
                        break;
                    }
                    let channel = json!({ "id": format!("ch-{}", seq % CHANNELS), "seq": seq });
                    match daemon::send_event(port, &app_id, channel, Duration::from_secs(10)) {
                        Ok((202, _)) => accepted.lock().unwrap().push(seq),
                        Ok((status, _)) => *others.entry(status.to_string()).or_insert(0) += 1,
                        Err(e) => *others.entry(format!("{:?}", e.kind())).or_insert(0) += 1,
                    }
                }
                others
            })
        })
        .collect()
}

fn join_all(handles: Vec<JoinHandle<BTreeMap<String, usize>>>) -> BTreeMap<String, usize> {
    let mut total = BTreeMap::new();
    for h in handles {
        for (k, n) in h.join().expect("streaming thread") {
            *total.entry(k).or_insert(0) += n;
        }
    }
    total
}

mod no_accepted_event_is_lost_when_the_broker_is_killed {
    #[test]
    fn sqlite() {
        super::no_accepted_event_is_lost_when_the_broker_is_killed(super::Store::Sqlite)
    }
    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        super::no_accepted_event_is_lost_when_the_broker_is_killed(super::Store::Mysql)
    }
}

fn no_accepted_event_is_lost_when_the_broker_is_killed(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A receiver a little slower than ingest, so that a backlog of accepted
    // but undelivered events builds up before the kill.
    let receiver =
        daemon::background_receiver(|_, _| Answer::status(204).after(Duration::from_millis(40)));
    let env = broker_env(&db, &[]);
    let (mut broker, port) = start(dir.path(), &env);
    let (app_id, _) = daemon::app_with_webhook(port, &receiver.url, "all");

    // Stream until a few hundred are accepted, then kill -9 mid-stream.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let streams = stream(
        port,
        &app_id,
        6,
        next.clone(),
        100_000,
        stop.clone(),
        accepted.clone(),
    );
    assert!(
        daemon::wait_until(Duration::from_secs(30), || accepted.lock().unwrap().len()
            >= 300),
        "300 events were not accepted within 30 s; broker log:\n{}",
        broker.log()
    );
    broker.kill9();
    let killed_at = Instant::now();
    let accepted_at_kill = accepted.lock().unwrap().len();
    let received_at_kill = receiver.received().len();
    stop.store(true, Ordering::SeqCst);
    let failed_before = join_all(streams);
    let accepted_before = accepted.lock().unwrap().len();

    // The same instance comes back on the same database; more events follow.
    let (mut broker, port) = start(dir.path(), &env);
    let streams = stream(
        port,
        &app_id,
        4,
        Arc::new(AtomicU64::new(1_000_001)),
        1_000_100,
        Arc::new(AtomicBool::new(false)),
        accepted.clone(),
    );
    let failed_after = join_all(streams);
    let accepted: HashSet<u64> = accepted.lock().unwrap().iter().copied().collect();
    assert_eq!(
        accepted.len(),
        accepted_before + 100,
        "after the restart every event is accepted; other answers: {failed_after:?}"
    );

    // Per seq: (webhook-id, when) of each arrival, first to last.
    let seqs_received = || -> HashMap<u64, Vec<(String, Instant)>> {
        let mut by_seq: HashMap<u64, Vec<(String, Instant)>> = HashMap::new();
        for req in receiver.received() {
            let seq = req.json()["seq"].as_u64().expect("seq in the body");
            let id = req.header("webhook-id").unwrap_or_default().to_owned();
            by_seq.entry(seq).or_default().push((id, req.at));
        }
        by_seq
    };
    daemon::wait_until(Duration::from_secs(60), || {
        let got = seqs_received();
        accepted.iter().all(|s| got.contains_key(s))
    });
    // Anything still on its way has time to show up as a duplicate.
    std::thread::sleep(Duration::from_millis(500));
    let got = seqs_received();

    let mut lost: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|s| !got.contains_key(s))
        .collect();
    lost.sort_unstable();
    let requests: usize = got.values().map(Vec::len).sum();
    let duplicates = requests - got.len();
    let unacknowledged = got.keys().filter(|s| !accepted.contains(s)).count();
    eprintln!(
        "{store:?}: accepted {} ({accepted_at_kill} when killed, receiver had {received_at_kill}); \
         other answers before the kill {failed_before:?}; requests received {requests} for {} \
         events; duplicates {duplicates}; delivered but never acknowledged {unacknowledged}; \
         lost {}",
        accepted.len(),
        got.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} accepted events never arrived: {:?}; broker log after the restart:\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        broker.log()
    );
    for (seq, arrivals) in &got {
        let ids: Vec<&str> = arrivals.iter().map(|(id, _)| id.as_str()).collect();
        assert!(
            ids.iter().all(|id| *id == ids[0] && id.starts_with("msg_")),
            "seq {seq} arrived with different webhook-ids: {ids:?}"
        );
        // A repeat is of an attempt made before the kill, never of one
        // the restarted broker made itself.
        assert!(
            arrivals.len() == 1 || arrivals[0].1 < killed_at,
            "seq {seq} arrived {} times, first after the restart",
            arrivals.len()
        );
    }
    assert!(
        duplicates <= 64,
        "{duplicates} duplicate deliveries; only those in flight at the kill may repeat"
    );
}

#[test]
fn a_restart_keeps_the_order_of_a_channel() {
    // Channel c's first event fails this many times, across both runs.
    const C1_FAILURES: usize = 4;
    let db = TestDb::new(Store::Sqlite).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let receiver = {
        let log = log.clone();
        daemon::background_receiver(move |req, _| {
            let mut log = log.lock().unwrap();
            let mut arrival = Arrival::of(req, 204);
            let earlier = log
                .iter()
                .filter(|a| a.channel == "c" && a.seq == 1)
                .count();
            if arrival.channel == "c" && arrival.seq == 1 && earlier < C1_FAILURES {
                arrival.status = 500;
            }
            let status = arrival.status;
            log.push(arrival);
            Answer::status(status)
        })
    };
    let env = broker_env(&db, &[]);
    let (mut broker, port) = start(dir.path(), &env);
    let (app_id, _) = daemon::app_with_webhook(port, &receiver.url, "all");

    let send = |port: u16, channel: &str, seq: u64| {
        let (status, body) = daemon::send_event(
            port,
            &app_id,
            json!({ "id": channel, "seq": seq }),
            Duration::from_secs(10),
        )
        .expect("the broker answers");
        assert_eq!(status, 202, "{channel} {seq}: {body}");
    };
    for seq in 1..=5 {
        send(port, "c", seq);
    }
    for seq in 1..=3 {
        send(port, "d", seq);
    }

    // d goes through while c's first event is failing.
    let d_done = |log: &[Arrival]| {
        (1..=3).all(|s| log.iter().any(|a| a.channel == "d" && a.seq == s && a.ok()))
    };
    assert!(
        daemon::wait_until(Duration::from_secs(10), || d_done(&arrivals(&log))),
        "channel d was held up: {:#?}",
        arrivals(&log)
    );
    broker.kill9();
    let before = arrivals(&log);
    let c_before: Vec<_> = before.iter().filter(|a| a.channel == "c").collect();
    assert!(
        !c_before.is_empty() && c_before.iter().all(|a| a.seq == 1 && !a.ok()),
        "before the kill channel c had only failing tries of its first event: {c_before:#?}"
    );

    // After the restart c resumes, in order.
    let (mut broker, _port) = start(dir.path(), &env);
    let c5_done = || {
        arrivals(&log)
            .iter()
            .any(|a| a.channel == "c" && a.seq == 5 && a.ok())
    };
    assert!(
        daemon::wait_until(Duration::from_secs(30), c5_done),
        "channel c did not finish after the restart: {:#?}\nbroker log:\n{}",
        arrivals(&log),
        broker.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let all = arrivals(&log);
    let c: Vec<&Arrival> = all.iter().filter(|a| a.channel == "c").collect();
    let summary: Vec<String> = c
        .iter()
        .map(|a| format!("c{}:{}", a.seq, a.status))
        .collect();
    eprintln!(
        "channel c arrivals: {} before the kill, in all {summary:?}",
        c_before.len()
    );
    for (i, a) in c.iter().enumerate() {
        assert!(
            a.seq == 1 || c[..i].iter().any(|e| e.seq == a.seq - 1 && e.ok()),
            "c{} was sent before c{} had gone through: {summary:?}",
            a.seq,
            a.seq - 1
        );
    }
    let first_ok: Vec<usize> = (1..=5)
        .map(|s| {
            c.iter()
                .position(|a| a.seq == s && a.ok())
                .unwrap_or_else(|| panic!("c{s} never went through: {summary:?}"))
        })
        .collect();
    assert!(
        first_ok.windows(2).all(|w| w[0] < w[1]),
        "channel c out of order: {summary:?}"
    );
    let c1_ids: HashSet<&str> = c
        .iter()
        .filter(|a| a.seq == 1)
        .map(|a| a.webhook_id.as_str())
        .collect();
    assert_eq!(c1_ids.len(), 1, "c1 changed its webhook-id: {c1_ids:?}");
    let failures = c.iter().filter(|a| a.seq == 1 && !a.ok()).count();
    assert_eq!(failures, C1_FAILURES, "{summary:?}");
    for s in 1..=3 {
        assert!(all.iter().any(|a| a.channel == "d" && a.seq == s && a.ok()));
    }
}

#[test]
fn sigterm_lets_in_flight_posts_finish_and_exits_zero() {
    const SLOW: Duration = Duration::from_secs(2);
    let db = TestDb::new(Store::Sqlite).unwrap();
    let path = sqlite_path(&db);
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let failing = Arc::new(AtomicBool::new(true));
    let receiver = {
        let (log, failing) = (log.clone(), failing.clone());
        daemon::background_receiver(move |req, _| {
            let mut arrival = Arrival::of(req, 204);
            let mut answer = Answer::status(204);
            if arrival.channel == "slow" {
                answer = answer.after(SLOW);
            } else if failing.load(Ordering::SeqCst) {
                arrival.status = 500;
                answer = Answer::status(500);
            }
            log.lock().unwrap().push(arrival);
            answer
        })
    };
    // A failed attempt waits 4 s (±20%) for its retry: still pending at the
    // stop, due soon after the restart.
    let env = broker_env(
        &db,
        &[
            ("BROKER_RETRY_SCHEDULE", "4s,4s,4s"),
            ("BROKER_SHUTDOWN_GRACE", "10s"),
        ],
    );
    let (mut broker, port) = start(dir.path(), &env);
    let (app_id, _) = daemon::app_with_webhook(port, &receiver.url, "all");
    let send = |channel: &str| {
        let (status, body) = daemon::send_event(
            port,
            &app_id,
            json!({ "id": channel, "seq": 1 }),
            Duration::from_secs(10),
        )
        .expect("the broker answers");
        assert_eq!(status, 202, "{body}");
    };
    let first = |channel: &str| -> Option<Arrival> {
        arrivals(&log).into_iter().find(|a| a.channel == channel)
    };

    send("failing");
    let arrived = |channel: &str| first(channel).is_some();
    assert!(daemon::wait_until(Duration::from_secs(5), || arrived(
        "failing"
    )));
    send("slow");
    assert!(daemon::wait_until(Duration::from_secs(5), || arrived(
        "slow"
    )));
    let slow = first("slow").unwrap();
    let failing_id = first("failing").unwrap().webhook_id;

    // The slow POST is in flight now.
    let term = Instant::now();
    broker.sigterm();
    let status = broker.wait_exit(Duration::from_secs(20));
    let exited = Instant::now();
    let log_text = broker.log();
    let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{log_text}"));
    eprintln!(
        "SIGTERM to exit: {:?}; slow answer due {:?} after SIGTERM; exit status {status}",
        exited - term,
        (slow.at + SLOW).saturating_duration_since(term)
    );
    assert!(status.success(), "exit status {status}; log:\n{log_text}");
    assert!(
        exited >= slow.at + SLOW - Duration::from_millis(100),
        "exited {:?} after SIGTERM, before the in-flight POST was answered",
        exited - term
    );
    assert!(
        exited - term < Duration::from_secs(10),
        "took {:?}, beyond BROKER_SHUTDOWN_GRACE",
        exited - term
    );

    let (state, attempts, owner) = delivery_state(&path, &slow.webhook_id);
    assert_eq!(
        (state.as_str(), attempts),
        ("succeeded", 1),
        "the in-flight delivery's outcome was written; log:\n{log_text}"
    );
    assert_eq!(owner, None);
    let (state, attempts, owner) = delivery_state(&path, &failing_id);
    assert_eq!(
        (state.as_str(), attempts, owner),
        ("pending", 1, None),
        "the retrying delivery stays pending, its lease given back; log:\n{log_text}"
    );

    // A restart delivers what was left pending, with the same webhook-id.
    failing.store(false, Ordering::SeqCst);
    let (mut broker, _port) = start(dir.path(), &env);
    let delivered = || {
        arrivals(&log)
            .iter()
            .any(|a| a.channel == "failing" && a.ok())
    };
    assert!(
        daemon::wait_until(Duration::from_secs(15), delivered),
        "the pending delivery was not retried after the restart: {:#?}\n{}",
        arrivals(&log),
        broker.log()
    );
    let ids: HashSet<String> = arrivals(&log)
        .into_iter()
        .filter(|a| a.channel == "failing")
        .map(|a| a.webhook_id)
        .collect();
    assert_eq!(ids, HashSet::from([failing_id.clone()]));
    assert!(daemon::wait_until(Duration::from_secs(5), || {
        delivery_state(&path, &failing_id).0 == "succeeded"
    }));
    let slow_arrivals = arrivals(&log)
        .iter()
        .filter(|a| a.channel == "slow")
        .count();
    assert_eq!(slow_arrivals, 1, "the finished delivery was sent again");
}

#[test]
fn sigterm_gives_up_waiting_after_the_grace_period() {
    const STUCK: Duration = Duration::from_secs(10);
    let db = TestDb::new(Store::Sqlite).unwrap();
    let path = sqlite_path(&db);
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let receiver = {
        let log = log.clone();
        daemon::background_receiver(move |req, _| {
            let mut log = log.lock().unwrap();
            let first = log.is_empty();
            log.push(Arrival::of(req, 204));
            if first {
                Answer::status(204).after(STUCK)
            } else {
                Answer::status(204)
            }
        })
    };
    let env = broker_env(&db, &[("BROKER_SHUTDOWN_GRACE", "1s")]);
    let (mut broker, port) = start(dir.path(), &env);
    let (app_id, _) = daemon::app_with_webhook(port, &receiver.url, "all");
    let (status, body) = daemon::send_event(
        port,
        &app_id,
        json!({ "id": "stuck", "seq": 1 }),
        Duration::from_secs(10),
    )
    .expect("the broker answers");
    assert_eq!(status, 202, "{body}");
    let arrived = || !arrivals(&log).is_empty();
    assert!(daemon::wait_until(Duration::from_secs(5), arrived));
    let id = arrivals(&log)[0].webhook_id.clone();

    let term = Instant::now();
    broker.sigterm();
    let status = broker.wait_exit(Duration::from_secs(15));
    let took = term.elapsed();
    let log_text = broker.log();
    let status = status.unwrap_or_else(|| panic!("still running 15 s after SIGTERM:\n{log_text}"));
    eprintln!("SIGTERM to exit with a 1 s grace: {took:?}; exit status {status}");
    assert!(status.success(), "exit status {status}; log:\n{log_text}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop with BROKER_SHUTDOWN_GRACE=1s; log:\n{log_text}"
    );
    let (state, attempts, owner) = delivery_state(&path, &id);
    assert_eq!(
        (state.as_str(), attempts, owner),
        ("pending", 0, None),
        "the unfinished attempt leaves its delivery pending and released; log:\n{log_text}"
    );

    let (mut broker, _port) = start(dir.path(), &env);
    assert!(
        daemon::wait_until(Duration::from_secs(10), || arrivals(&log).len() >= 2),
        "not retried after the restart; log:\n{}",
        broker.log()
    );
    let again = &arrivals(&log)[1];
    assert_eq!(again.webhook_id, id, "the retry keeps its webhook-id");
    assert!(daemon::wait_until(Duration::from_secs(5), || {
        delivery_state(&path, &id).0 == "succeeded"
    }));
}
