//! Several real broker daemons on one MariaDB database, each with its own
//! BROKER_INSTANCE_ID, sharing the work by webhook: exactly one live
//! instance holds a webhook's lease and sends its deliveries, and each
//! instance tells how many it holds in `webhook_broker_webhook_leases_held`
//! on `/metrics`. Any instance accepts any event. An instance killed with
//! `kill -9` loses nothing and its webhooks are taken over within about one
//! lease; one paused (SIGSTOP) past its lease cannot overwrite what the new
//! owner recorded once it resumes; one stopped cleanly hands its leases back
//! at once. Times are measured at the process boundary and printed.
//!
//! The tests run one at a time (they start up to three daemons each and
//! assert on timings; the machine has two cores).
#![cfg(feature = "mysql")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use serde_json::{json, Value};

use common::daemon::{self, Running};
use common::{most_within, Answer, Received, Receiver, Store, TestDb, ADMIN_TOKEN};
use webhook_broker::config::DatabaseUrl;

/// BROKER_LEASE of the tests that measure a takeover after a crash or a
/// pause.
const LEASE_MS: u64 = 2_000;
const LEASE: Duration = Duration::from_millis(LEASE_MS);
const LEASE_SETTING: &str = "2s";
/// A webhook of a dead instance is held by a live one again within this:
/// two leases and a second of slack (the contract says about one lease).
const TAKEOVER_BOUND: Duration = Duration::from_millis(2 * LEASE_MS + 1_000);
const RETRY_SCHEDULE: &str = "200ms,200ms,500ms,1s,1s,1s,1s,1s";
/// The gauge each instance exposes: how many webhook leases it holds.
const GAUGE: &str = "webhook_broker_webhook_leases_held";

/// One test at a time in this binary (a poisoned lock is still a lock).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One daemon of the cluster.
struct Node {
    name: &'static str,
    process: Running,
    port: u16,
}

impl Node {
    /// Starts the daemons `names` at once on `db` (each with its own
    /// instance id), `extra` settings on top of the defaults, and waits
    /// until every one listens.
    fn start_all(
        dir: &Path,
        db: &TestDb,
        names: &[&'static str],
        extra: &[(&str, &str)],
    ) -> Vec<Node> {
        let url = daemon::database_url(db);
        let mut processes: Vec<(&'static str, Running)> = names
            .iter()
            .map(|&name| {
                let mut env: Vec<(&str, &str)> = vec![
                    ("DATABASE_URL", url.as_str()),
                    ("BROKER_BIND", "127.0.0.1:0"),
                    ("BROKER_ADMIN_TOKEN", ADMIN_TOKEN),
                    ("BROKER_ALLOW_PRIVATE_TARGETS", "true"),
                    ("BROKER_INSTANCE_ID", name),
                    ("BROKER_LEASE", LEASE_SETTING),
                    ("BROKER_RETRY_SCHEDULE", RETRY_SCHEDULE),
                    ("RUST_LOG", "info"),
                ];
                for &(k, v) in extra {
                    match env.iter_mut().find(|(ek, _)| *ek == k) {
                        Some(e) => e.1 = v,
                        None => env.push((k, v)),
                    }
                }
                (name, Running::start(daemon::command(dir, &env)))
            })
            .collect();
        processes
            .drain(..)
            .map(|(name, mut process)| {
                let line = process
                    .wait_line_within("listening on", Duration::from_secs(60))
                    .unwrap_or_else(|| {
                        panic!("instance {name} did not come up:\n{}", process.log())
                    });
                let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
                Node {
                    name,
                    process,
                    port,
                }
            })
            .collect()
    }

    /// (status, JSON body) of a request that must be answered.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, text) = daemon::http(self.port, method, path, token, &body);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// How many webhook leases the instance says it holds. Panics (with the
    /// instance's log) when it does not answer or has no such gauge: that
    /// is no timing matter, waiting would not help.
    fn leases(&mut self) -> u64 {
        match leases_held(self.port) {
            Ok(n) => n,
            Err(e) => {
                let name = self.name;
                panic!(
                    "instance {name}: {e}\nits log (last lines):\n{}",
                    self.tail(40)
                )
            }
        }
    }

    /// The last `n` lines of the instance's stderr.
    fn tail(&mut self, n: usize) -> String {
        self.process.drain_lines();
        let seen = &self.process.seen;
        seen[seen.len().saturating_sub(n)..].join("\n")
    }

    /// Sends `kill -<signal>` to the process.
    fn signal(&self, signal: &str) {
        let pid = self.process.pid().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), pid.as_str()])
            .status()
            .expect("kill(1) runs");
        assert!(
            status.success(),
            "kill -{signal} {pid} ({}) failed",
            self.name
        );
    }
}

/// `webhook_broker_webhook_leases_held` from `/metrics` on `port` (summed
/// over label sets, should the gauge ever carry any).
fn leases_held(port: u16) -> Result<u64, String> {
    let (status, text) =
        daemon::try_http(port, "GET", "/metrics", None, "", Duration::from_secs(5))
            .map_err(|e| format!("GET /metrics: {e}"))?;
    if status != 200 {
        return Err(format!("GET /metrics answered {status}: {text}"));
    }
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(GAUGE) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unreadable gauge line {line:?}"))?;
        *total.get_or_insert(0.0) += value;
    }
    match total {
        Some(v) => Ok(v as u64),
        None => Err(format!("no {GAUGE} on /metrics; it has:\n{text}")),
    }
}

/// "a=2 b=3 c=1": each instance's gauge.
fn show(names: &[&str], counts: &[u64]) -> String {
    names
        .iter()
        .zip(counts)
        .map(|(n, c)| format!("{n}={c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every node's gauge, read one after another.
fn all_leases(nodes: &mut [Node]) -> Vec<u64> {
    nodes.iter_mut().map(Node::leases).collect()
}

/// Creates an app through `node`; (id, key).
fn create_app(node: &Node) -> (String, String) {
    let (status, body) = node.call(
        "POST",
        "/v1/apps",
        Some(ADMIN_TOKEN),
        &json!({"name": "cluster"}),
    );
    assert_eq!(status, 201, "creating the app on {}: {body}", node.name);
    (
        body["id"].as_str().unwrap().to_owned(),
        body["apiKey"].as_str().unwrap().to_owned(),
    )
}

/// Creates a webhook for every event at `uri` through `node`; its id.
fn create_webhook(node: &Node, key: &str, uri: &str) -> String {
    let (status, body) = node.call(
        "POST",
        "/v1/webhook",
        Some(key),
        &json!({"uri": uri, "event": "all"}),
    );
    assert_eq!(status, 201, "creating a webhook on {}: {body}", node.name);
    body["id"].as_str().unwrap().to_owned()
}

/// Waits until every node lists `n` webhooks for the app of `key` (the
/// registry reaches the others within a second, tests/coherence.rs).
fn wait_all_know(nodes: &[Node], key: &str, n: u64) {
    for node in nodes {
        let mut last = Value::Null;
        let known = daemon::wait_until(Duration::from_secs(10), || {
            let (_, body) = node.call("GET", "/v1/webhook?length=1", Some(key), &Value::Null);
            let total = body["total"].as_u64();
            last = body;
            total == Some(n)
        });
        assert!(
            known,
            "instance {} does not list the {n} webhooks within 10 s: {last}",
            node.name
        );
    }
}

/// Ingests one `channel_live` event with `channel` on `port`: the number
/// of deliveries of its 202, or what came instead.
fn ingest(port: u16, app_id: &str, channel: Value) -> Result<u64, String> {
    match daemon::send_event(port, app_id, channel, Duration::from_secs(10)) {
        Ok((202, body)) => serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|b| b["deliveries"].as_u64())
            .ok_or_else(|| format!("202 without deliveries: {body}")),
        Ok((status, _)) => Err(status.to_string()),
        Err(e) => Err(format!("{:?}", e.kind())),
    }
}

/// What a receiver saw of one request.
#[derive(Debug, Clone)]
struct Hit {
    /// Which webhook (by its index in the test) it was sent for.
    webhook: usize,
    /// `webhook-id`: the delivery.
    delivery: String,
    channel: String,
    seq: u64,
    at: Instant,
    /// What the receiver answered.
    status: u16,
}

impl Hit {
    fn ok(&self) -> bool {
        self.status == 200
    }

    /// "ch-3 seq 7 msg_… answered 500 at +1.234s", the time from `t0`.
    fn brief(&self, t0: Instant) -> String {
        format!(
            "{} seq {} {} answered {} at {}",
            self.channel,
            self.seq,
            self.delivery,
            self.status,
            stamp(t0, self.at)
        )
    }
}

/// `at` as "+1.234s" or "-0.250s" from `t0`.
fn stamp(t0: Instant, at: Instant) -> String {
    if at >= t0 {
        format!("+{:.3}s", (at - t0).as_secs_f64())
    } else {
        format!("-{:.3}s", (t0 - at).as_secs_f64())
    }
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// A receiver on a thread of its own for webhook `webhook`: records every
/// request in `hits` and answers 200 at once, except (with
/// `fail_first_of: Some(n)`) the first request for a seq that `n` divides,
/// which it answers 500: a retry is due while later events of the channel
/// are already accepted, so the channel's order is put to the test.
fn recording_receiver(webhook: usize, hits: Hits, fail_first_of: Option<u64>) -> Receiver {
    let tried: Mutex<HashSet<(String, u64)>> = Mutex::default();
    daemon::background_receiver(move |req: &Received, _| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut hit = Hit {
            webhook,
            delivery: req.header("webhook-id").unwrap_or_default().to_owned(),
            channel: body["id"].as_str().unwrap_or_default().to_owned(),
            seq: body["seq"].as_u64().unwrap_or(0),
            at: req.at,
            status: 200,
        };
        let first = tried.lock().unwrap().insert((hit.channel.clone(), hit.seq));
        if fail_first_of.is_some_and(|n| hit.seq.is_multiple_of(n)) && first {
            hit.status = 500;
        }
        let status = hit.status;
        hits.lock().unwrap().push(hit);
        Answer::status(status)
    })
}

fn snapshot(hits: &Hits) -> Vec<Hit> {
    hits.lock().unwrap().clone()
}

// ---------------------------------------------------------------------
// (a) three instances, one killed under load
// ---------------------------------------------------------------------

const NAMES: [&str; 3] = ["a", "b", "c"];
const WEBHOOKS: usize = 6;
const CHANNELS: usize = 20;
/// Each channel's loader sends one event, waits for its 202, then pauses
/// this long: about 100 events (600 deliveries) a second in all.
const PACE: Duration = Duration::from_millis(150);
/// The receivers answer the first request for every fifth seq with 500.
const FAIL_FIRST_OF: Option<u64> = Some(5);
/// Bounds a loader (it stops at the test's signal long before).
const MAX_EVENTS_PER_CHANNEL: u64 = 400;
/// Sends of one event before its loader gives up (instances in turn, a
/// pause of 100 ms after each round): a few seconds of refusals.
const MAX_TRIES: usize = 60;
const LOAD_BEFORE_KILL: Duration = Duration::from_secs(2);
const LOAD_AFTER_KILL: Duration = Duration::from_secs(4);
const DRAIN: Duration = Duration::from_secs(30);

/// Sets the loaders' stop flag when dropped, so that a failing test does
/// not leave them posting.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn channel_name(ch: usize) -> String {
    format!("ch-{ch}")
}

/// An event a loader got a 202 for.
#[derive(Debug, Clone)]
struct Accepted {
    channel: String,
    seq: u64,
    /// When the request that was answered 202 was begun.
    sent_at: Instant,
    /// Which instance answered it.
    node: usize,
}

#[derive(Debug, Default)]
struct LoaderReport {
    accepted: Vec<Accepted>,
    /// The highest seq sent at all (accepted or not).
    last_sent: u64,
    /// Answers other than 202, by instance and kind.
    refused: BTreeMap<String, usize>,
    /// (seq, deliveries) of 202s that did not name every webhook.
    short: Vec<(u64, u64)>,
    gave_up: Option<String>,
}

/// One channel's producer: seq 1, 2, …, each sent after the previous one's
/// 202, round-robin over the instances; a send that is not answered 202
/// (connection refused by a killed instance, say) goes to the next one.
fn load_channel(ch: usize, ports: Vec<u16>, app_id: String, stop: Arc<AtomicBool>) -> LoaderReport {
    let channel = channel_name(ch);
    let mut report = LoaderReport::default();
    'events: for seq in 1..=MAX_EVENTS_PER_CHANNEL {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        report.last_sent = seq;
        let mut node = (ch + seq as usize) % ports.len();
        let mut tries = 0;
        loop {
            let sent_at = Instant::now();
            match ingest(ports[node], &app_id, json!({"id": channel, "seq": seq})) {
                Ok(deliveries) => {
                    if deliveries != WEBHOOKS as u64 {
                        report.short.push((seq, deliveries));
                    }
                    report.accepted.push(Accepted {
                        channel: channel.clone(),
                        seq,
                        sent_at,
                        node,
                    });
                    break;
                }
                Err(kind) => {
                    *report
                        .refused
                        .entry(format!("{} {kind}", NAMES[node]))
                        .or_insert(0) += 1
                }
            }
            tries += 1;
            if tries >= MAX_TRIES {
                report.gave_up = Some(format!("{channel} seq {seq}: {tries} sends, none 202"));
                break 'events;
            }
            if stop.load(Ordering::SeqCst) {
                break 'events;
            }
            node = (node + 1) % ports.len();
            if tries % ports.len() == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(PACE);
    }
    report
}

/// (webhook, channel, seq) of every accepted event not yet received.
fn missing(hits: &[Hit], accepted: &[Accepted]) -> Vec<(usize, String, u64)> {
    let got: HashSet<(usize, &str, u64)> = hits
        .iter()
        .filter(|h| h.ok())
        .map(|h| (h.webhook, h.channel.as_str(), h.seq))
        .collect();
    let mut missing = Vec::new();
    for w in 0..WEBHOOKS {
        for a in accepted {
            if !got.contains(&(w, a.channel.as_str(), a.seq)) {
                missing.push((w, a.channel.clone(), a.seq));
            }
        }
    }
    missing
}

#[test]
fn three_instances_lose_nothing_and_keep_channel_order_when_one_is_killed() {
    let _serial = one_at_a_time();
    let Some(db) = TestDb::new(Store::Mysql) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hits: Hits = Arc::default();
    let receivers: Vec<Receiver> = (0..WEBHOOKS)
        .map(|w| recording_receiver(w, hits.clone(), FAIL_FIRST_OF))
        .collect();
    let mut nodes = Node::start_all(dir.path(), &db, &NAMES, &[]);
    let (app_id, key) = create_app(&nodes[0]);
    for r in &receivers {
        create_webhook(&nodes[0], &key, &r.url);
    }
    wait_all_know(&nodes, &key, WEBHOOKS as u64);

    // A producer per channel, round-robin over the three instances.
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let load_started = Instant::now();
    let loaders: Vec<JoinHandle<LoaderReport>> = (0..CHANNELS)
        .map(|ch| {
            let (ports, app_id, stop) = (ports.clone(), app_id.clone(), stop.clone());
            std::thread::spawn(move || load_channel(ch, ports, app_id, stop))
        })
        .collect();
    std::thread::sleep(LOAD_BEFORE_KILL);

    // Every webhook is leased, and to more than one instance.
    let mut counts = all_leases(&mut nodes);
    let spread = daemon::wait_until(3 * LEASE, || {
        counts = all_leases(&mut nodes);
        counts.iter().sum::<u64>() == WEBHOOKS as u64
            && counts.iter().filter(|&&c| c > 0).count() > 1
    });
    eprintln!(
        "leases {:?} after load began: {}",
        load_started.elapsed(),
        show(&NAMES, &counts)
    );
    assert!(
        spread,
        "after {:?} of load the {WEBHOOKS} webhook leases are not all held, or all by one \
         instance: {} (each webhook has exactly one live owner and the leases are spread)",
        load_started.elapsed(),
        show(&NAMES, &counts)
    );

    // kill -9 the instance that holds the most.
    let victim = (0..NAMES.len()).max_by_key(|&i| counts[i]).unwrap();
    let victim_held = counts[victim];
    assert!(victim_held > 0, "{}", show(&NAMES, &counts));
    let before_kill = snapshot(&hits).len();
    nodes[victim].process.kill9();
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..NAMES.len()).filter(|&i| i != victim).collect();
    eprintln!(
        "killed {} (held {victim_held} of {WEBHOOKS}); {before_kill} requests received by then",
        NAMES[victim]
    );

    // The survivors hold every webhook again.
    let mut after: Vec<u64> = Vec::new();
    let mut takeover = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        after = survivors.iter().map(|&i| nodes[i].leases()).collect();
        if after.iter().sum::<u64>() == WEBHOOKS as u64 {
            takeover = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivor_names: Vec<&str> = survivors.iter().map(|&i| NAMES[i]).collect();
    eprintln!(
        "takeover (survivors' gauges sum to {WEBHOOKS}): {takeover:?} after the kill: {}",
        show(&survivor_names, &after)
    );

    // Load goes on a while, then stops.
    std::thread::sleep(LOAD_AFTER_KILL.saturating_sub(killed_at.elapsed()));
    stop.store(true, Ordering::SeqCst);
    let reports: Vec<LoaderReport> = loaders
        .into_iter()
        .map(|l| l.join().expect("loader thread"))
        .collect();
    let accepted: Vec<Accepted> = reports.iter().flat_map(|r| r.accepted.clone()).collect();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reports {
        for (k, n) in &r.refused {
            *refused.entry(k.clone()).or_insert(0) += n;
        }
    }
    let after_kill = |a: &&Accepted| a.sent_at > killed_at;
    eprintln!(
        "accepted {} events over {CHANNELS} channels ({} sent after the kill); \
         answers other than 202: {refused:?}",
        accepted.len(),
        accepted.iter().filter(after_kill).count()
    );
    let mut survivor_logs = String::new();
    for &i in &survivors {
        survivor_logs += &format!("--- {} ---\n{}\n", NAMES[i], nodes[i].tail(30));
    }
    for (ch, r) in reports.iter().enumerate() {
        assert!(
            r.gave_up.is_none(),
            "a loader gave up: {:?} (answers other than 202: {refused:?}); logs:\n{survivor_logs}",
            r.gave_up
        );
        assert!(
            r.short.is_empty(),
            "{} 202s did not name all {WEBHOOKS} webhooks (seq, deliveries): {:?}",
            channel_name(ch),
            r.short
        );
        assert!(
            r.accepted.iter().any(|a| after_kill(&a)),
            "no event of {} was accepted after the kill (the survivors accept any event); \
             answers other than 202: {refused:?}",
            channel_name(ch)
        );
    }

    // Every accepted event reaches every webhook.
    let drained_from = Instant::now();
    let all_in = daemon::wait_until(DRAIN, || missing(&snapshot(&hits), &accepted).is_empty());
    let drain_took = drained_from.elapsed();
    // Anything still on its way has time to show up as a duplicate.
    std::thread::sleep(Duration::from_millis(500));
    let got = snapshot(&hits);
    let lost = missing(&got, &accepted);
    let mut lost_per_webhook = vec![0usize; WEBHOOKS];
    for (w, _, _) in &lost {
        lost_per_webhook[*w] += 1;
    }
    eprintln!(
        "{} requests received for {} deliveries owed; drained {drain_took:?} after the load \
         stopped (all in: {all_in}); lost per webhook {lost_per_webhook:?}",
        got.len(),
        accepted.len() * WEBHOOKS
    );
    assert!(
        lost.is_empty(),
        "{} accepted deliveries never arrived within {DRAIN:?} (per webhook {lost_per_webhook:?}), \
         e.g. (webhook, channel, seq) {:?}; survivors' logs:\n{survivor_logs}",
        lost.len(),
        &lost[..lost.len().min(12)]
    );

    // Nothing that was not sent; one delivery id is one (webhook, event).
    let last_sent: HashMap<String, u64> = reports
        .iter()
        .enumerate()
        .map(|(ch, r)| (channel_name(ch), r.last_sent))
        .collect();
    let mut by_delivery: HashMap<&str, (usize, &str, u64, usize)> = HashMap::new();
    for h in &got {
        let sent = last_sent.get(&h.channel).copied().unwrap_or(0);
        assert!(
            h.seq >= 1 && h.seq <= sent && h.delivery.starts_with("msg_"),
            "webhook {} got a request for no event that was sent: {} (its channel was sent \
             up to seq {sent})",
            h.webhook,
            h.brief(killed_at)
        );
        let entry = by_delivery.entry(h.delivery.as_str()).or_insert((
            h.webhook,
            h.channel.as_str(),
            h.seq,
            0,
        ));
        assert_eq!(
            (entry.0, entry.1, entry.2),
            (h.webhook, h.channel.as_str(), h.seq),
            "delivery {} came as two different (webhook, channel, seq)",
            h.delivery
        );
        entry.3 += 1;
    }

    // Per webhook and channel: the first 200s in the order of the channel,
    // and no event sent before the one ahead of it had gone through.
    let mut order: BTreeMap<(usize, &str), Vec<u64>> = BTreeMap::new();
    let mut first_any: HashMap<(usize, &str, u64), Instant> = HashMap::new();
    let mut first_ok: HashMap<(usize, &str, u64), Instant> = HashMap::new();
    let (mut failed_attempts, mut duplicates_before_kill, mut duplicates_after_kill) = (0, 0, 0);
    for h in &got {
        let k = (h.webhook, h.channel.as_str(), h.seq);
        first_any.entry(k).or_insert(h.at);
        if !h.ok() {
            failed_attempts += 1;
        } else if let Some(first) = first_ok.get(&k) {
            if *first < killed_at {
                duplicates_before_kill += 1;
            } else {
                duplicates_after_kill += 1;
            }
        } else {
            first_ok.insert(k, h.at);
            order
                .entry((h.webhook, h.channel.as_str()))
                .or_default()
                .push(h.seq);
        }
    }
    // What webhook `w` got of `channel` around seq `seq`, for a message.
    let around = |w: usize, channel: &str, seq: u64| -> String {
        got.iter()
            .filter(|h| {
                h.webhook == w && h.channel == channel && h.seq + 3 >= seq && h.seq <= seq + 3
            })
            .map(|h| h.brief(killed_at))
            .collect::<Vec<_>>()
            .join("\n  ")
    };
    for (&(w, channel), seqs) in &order {
        if let Some(i) = seqs.windows(2).position(|p| p[0] >= p[1]) {
            panic!(
                "webhook {w} got {channel} out of order: seq {} went through after seq {}; \
                 first 200s {:?}; its requests (times from the kill):\n  {}",
                seqs[i + 1],
                seqs[i],
                &seqs[i.saturating_sub(5)..(i + 6).min(seqs.len())],
                around(w, channel, seqs[i + 1])
            );
        }
    }
    for (&(w, channel, seq), &sent) in &first_any {
        if let Some(&ahead) = first_ok.get(&(w, channel, seq.wrapping_sub(1))) {
            assert!(
                sent >= ahead,
                "webhook {w} got {channel} seq {seq} before seq {} had gone through; its requests \
                 (times from the kill):\n  {}",
                seq - 1,
                around(w, channel, seq)
            );
        }
    }
    let redelivered = by_delivery.values().filter(|v| v.3 > 1).count();
    eprintln!(
        "{failed_attempts} attempts answered 500 (the first of every fifth seq); duplicates: {} \
         200s beyond the first per (webhook, event) ({duplicates_before_kill} of events that \
         first went through before the kill, {duplicates_after_kill} after); {redelivered} \
         delivery ids arrived more than once; {} delivery ids in all",
        duplicates_before_kill + duplicates_after_kill,
        by_delivery.len()
    );

    // The killed instance's webhooks were taken over in time: by the gauges,
    // and by deliveries: per webhook, the first arrival of an event that a
    // survivor accepted after the kill (only a live instance can send it).
    let fresh: HashSet<(&str, u64)> = accepted
        .iter()
        .filter(after_kill)
        .filter(|a| a.node != victim)
        .map(|a| (a.channel.as_str(), a.seq))
        .collect();
    let resumed: Vec<Option<Duration>> = (0..WEBHOOKS)
        .map(|w| {
            got.iter()
                .filter(|h| h.webhook == w && fresh.contains(&(h.channel.as_str(), h.seq)))
                .map(|h| h.at.saturating_duration_since(killed_at))
                .min()
        })
        .collect();
    eprintln!("per webhook, first delivery of an event accepted after the kill: {resumed:?}");
    let takeover = takeover.unwrap_or_else(|| {
        panic!(
            "10 s after the kill the survivors hold {} of the {WEBHOOKS} webhook leases: {}",
            after.iter().sum::<u64>(),
            show(&survivor_names, &after)
        )
    });
    assert!(
        takeover <= TAKEOVER_BOUND,
        "the survivors held all {WEBHOOKS} webhooks {takeover:?} after the kill, over \
         {TAKEOVER_BOUND:?} (lease {LEASE:?})"
    );
    let slowest = resumed
        .iter()
        .map(|r| r.expect("every webhook got events accepted after the kill"))
        .max()
        .unwrap();
    let delivery_bound = TAKEOVER_BOUND + Duration::from_secs(1);
    assert!(
        slowest <= delivery_bound,
        "a webhook got its first event accepted after the kill only {slowest:?} after the kill, \
         over {delivery_bound:?} (lease {LEASE:?}; per webhook {resumed:?})"
    );
    let final_counts: Vec<u64> = survivors.iter().map(|&i| nodes[i].leases()).collect();
    assert_eq!(
        final_counts.iter().sum::<u64>(),
        WEBHOOKS as u64,
        "at the end: {}",
        show(&survivor_names, &final_counts)
    );
}

// ---------------------------------------------------------------------
// (b) an owner paused past its lease
// ---------------------------------------------------------------------

/// One request the holding receiver got.
#[derive(Debug, Clone)]
struct HeldHit {
    delivery: String,
    channel: String,
    at: Instant,
    /// It arrived while new requests were held.
    held: bool,
    /// What it was answered (a held one: 500, once released).
    status: u16,
}

impl HeldHit {
    /// "p-3 msg_… held at +0.120s", the time from `t0`.
    fn brief(&self, t0: Instant) -> String {
        let what = if self.held {
            "held".to_owned()
        } else {
            format!("answered {}", self.status)
        };
        format!(
            "{} {} {what} at {}",
            self.channel,
            self.delivery,
            stamp(t0, self.at)
        )
    }
}

fn briefs(hits: &[HeldHit], t0: Instant) -> String {
    hits.iter()
        .map(|h| h.brief(t0))
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[derive(Default)]
struct HoldState {
    /// Requests arriving while this is set are held…
    hold_new: AtomicBool,
    /// …until this is set, and then answered 500.
    release: AtomicBool,
    /// Requests arriving while this is set are answered 500 at once.
    fail_new: AtomicBool,
    hits: Mutex<Vec<HeldHit>>,
    /// How many held requests have been answered.
    answered_held: Mutex<usize>,
}

impl HoldState {
    async fn answer(self: Arc<Self>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let held = self.hold_new.load(Ordering::SeqCst);
        let status = if held || self.fail_new.load(Ordering::SeqCst) {
            500
        } else {
            200
        };
        self.hits.lock().unwrap().push(HeldHit {
            delivery: req
                .headers()
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            channel: json["id"].as_str().unwrap_or_default().to_owned(),
            at: Instant::now(),
            held,
            status,
        });
        if status == 200 {
            return HttpResponse::Ok().body("ok");
        }
        if !held {
            return HttpResponse::InternalServerError().body("failed");
        }
        // Bounded: a failing test must not leave a handler waiting forever.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.release.load(Ordering::SeqCst) && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        *self.answered_held.lock().unwrap() += 1;
        HttpResponse::InternalServerError().body("held, then failed")
    }
}

/// A receiver (actix, on a thread of its own) that holds the requests
/// arriving while `hold_new` is set until `release` is set, then answers
/// them 500; those arriving while `fail_new` is set get 500 at once; any
/// other request gets 200 at once.
struct HoldingReceiver {
    url: String,
    state: Arc<HoldState>,
}

impl HoldingReceiver {
    fn start() -> HoldingReceiver {
        let state = Arc::new(HoldState::default());
        let (tx, rx) = mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = listener.local_addr().unwrap().port();
                let server = HttpServer::new(move || {
                    let shared = shared.clone();
                    App::new().default_service(web::to(
                        move |req: HttpRequest, body: web::Bytes| shared.clone().answer(req, body),
                    ))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
                actix_web::rt::spawn(server);
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                tx.send(port).expect("the test waits for its receiver");
                std::future::pending::<()>().await;
            })
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the holding receiver starts");
        HoldingReceiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
        }
    }

    fn hits(&self) -> Vec<HeldHit> {
        self.state.hits.lock().unwrap().clone()
    }

    fn held(&self) -> Vec<HeldHit> {
        self.hits().into_iter().filter(|h| h.held).collect()
    }
}

impl Drop for HoldingReceiver {
    fn drop(&mut self) {
        self.state.release.store(true, Ordering::SeqCst);
    }
}

/// A row of `deliveries`, read with plain SQL (whatever the lease columns
/// become).
#[derive(Debug, QueryableByName)]
struct DeliveryState {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<Text>)]
    channel_id: Option<String>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    last_status_code: Option<i32>,
}

/// A row of `delivery_attempts`, for failure messages.
#[derive(Debug, QueryableByName)]
struct AttemptState {
    #[diesel(sql_type = Text)]
    delivery_id: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
}

fn mysql_conn(db: &TestDb) -> diesel::MysqlConnection {
    let DatabaseUrl::Mysql(url) = &db.url else {
        panic!("not MySQL: {:?}", db.url)
    };
    diesel::MysqlConnection::establish(url).expect("connect to the test database")
}

fn delivery_rows(db: &TestDb) -> Vec<DeliveryState> {
    diesel::sql_query(
        // A plain success's row leaves its HTTP status to its last attempt.
        "SELECT d.id, d.channel_id, d.status, d.attempts, \
         COALESCE(d.last_status_code, a.status_code) AS last_status_code \
         FROM deliveries d LEFT JOIN delivery_attempts a \
         ON a.delivery_id = d.id AND a.attempt = d.attempts ORDER BY d.id",
    )
    .load(&mut mysql_conn(db))
    .expect("read deliveries")
}

fn attempt_rows(db: &TestDb) -> Vec<AttemptState> {
    diesel::sql_query(
        "SELECT delivery_id, attempt, status_code, error FROM delivery_attempts \
         ORDER BY delivery_id, attempt",
    )
    .load(&mut mysql_conn(db))
    .expect("read delivery_attempts")
}

#[test]
fn an_instance_paused_past_its_lease_cannot_overwrite_the_new_owner() {
    const EVENTS: usize = 10;
    const PAUSE: Duration = Duration::from_secs(5);
    let _serial = one_at_a_time();
    let Some(db) = TestDb::new(Store::Mysql) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let receiver = HoldingReceiver::start();
    let names = ["a", "b"];
    let mut nodes = Node::start_all(dir.path(), &db, &names, &[]);
    let (app_id, key) = create_app(&nodes[0]);
    create_webhook(&nodes[0], &key, &receiver.url);
    wait_all_know(&nodes, &key, 1);

    // Exactly one of them owns the webhook.
    let mut counts = all_leases(&mut nodes);
    let owned = daemon::wait_until(3 * LEASE, || {
        counts = all_leases(&mut nodes);
        counts.iter().sum::<u64>() == 1
    });
    assert!(
        owned,
        "the webhook has not exactly one owner: {}",
        show(&names, &counts)
    );
    let owner = counts.iter().position(|&c| c == 1).unwrap();
    let other = 1 - owner;
    eprintln!("owner: {}", names[owner]);

    // Events of distinct channels, through both instances; what the owner
    // sends now is held open.
    receiver.state.hold_new.store(true, Ordering::SeqCst);
    for k in 0..EVENTS {
        let node = &nodes[k % 2];
        let answered = ingest(node.port, &app_id, json!({"id": format!("p-{k}")}));
        assert_eq!(answered, Ok(1), "event p-{k} through {}", node.name);
    }
    // Wait until the owner has as many under way as it will send.
    let mut held = 0;
    let mut steady_since = Instant::now();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let now = receiver.held().len();
        if now != held {
            held = now;
            steady_since = Instant::now();
        }
        if held == EVENTS || (held > 0 && steady_since.elapsed() > Duration::from_millis(500)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        held > 0,
        "the owner {} sent none of the {EVENTS} deliveries within 5 s; its log:\n{}",
        names[owner],
        nodes[owner].tail(30)
    );

    // Pause the owner mid-request. New requests are held a moment longer
    // (the owner's lease is still good for at least part of a lease), so
    // that whatever it had on the wire counts as held.
    nodes[owner].signal("STOP");
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    receiver.state.hold_new.store(false, Ordering::SeqCst);
    let held_ids: HashSet<String> = receiver.held().into_iter().map(|h| h.delivery).collect();
    let held_count = receiver.held().len();
    eprintln!(
        "paused {} with {held_count} requests held open ({} deliveries)",
        names[owner],
        held_ids.len()
    );

    // The other instance takes the webhook over and delivers everything.
    let mut taken = None;
    while paused_at.elapsed() < Duration::from_secs(15) {
        if nodes[other].leases() == 1 {
            taken = Some(paused_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{} holds the webhook {taken:?} after the pause",
        names[other]
    );
    let taken = taken.unwrap_or_else(|| {
        panic!(
            "15 s after pausing {} the other instance holds no lease; its log:\n{}",
            names[owner],
            nodes[other].tail(30)
        )
    });
    assert!(
        taken <= TAKEOVER_BOUND,
        "{} took the webhook over {taken:?} after the pause, over {TAKEOVER_BOUND:?}",
        names[other]
    );
    let channels: Vec<String> = (0..EVENTS).map(|k| format!("p-{k}")).collect();
    let delivered = |hits: &[HeldHit]| -> HashSet<String> {
        hits.iter()
            .filter(|h| h.status == 200)
            .map(|h| h.channel.clone())
            .collect()
    };
    let all_ok = daemon::wait_until(Duration::from_secs(15), || {
        delivered(&receiver.hits()).len() == EVENTS
    });
    let hits = receiver.hits();
    assert!(
        all_ok,
        "the new owner {} got 200s for only {:?} of {channels:?}; requests (times from the \
         pause):\n  {}\nits log:\n{}",
        names[other],
        delivered(&hits),
        briefs(&hits, paused_at),
        nodes[other].tail(30)
    );
    // The old owner stays paused well past its lease.
    std::thread::sleep(PAUSE.saturating_sub(paused_at.elapsed()));

    // The held requests fail now, and the old owner resumes to read that.
    // Anything sent after it resumed fails too: a late outcome it managed
    // to record, or a retry it made, would show in the database.
    receiver.state.release.store(true, Ordering::SeqCst);
    receiver.state.fail_new.store(true, Ordering::SeqCst);
    assert!(
        daemon::wait_until(Duration::from_secs(5), || {
            *receiver.state.answered_held.lock().unwrap() >= held_count
        }),
        "the held requests were not answered"
    );
    nodes[owner].signal("CONT");
    let resumed_at = Instant::now();
    let paused_for = resumed_at - paused_at;
    std::thread::sleep(Duration::from_secs(3));
    // It knows it lost the lease: still exactly one owner.
    let mut counts = all_leases(&mut nodes);
    let one_owner = daemon::wait_until(LEASE + Duration::from_secs(1), || {
        counts = all_leases(&mut nodes);
        counts.iter().sum::<u64>() == 1
    });

    let hits = receiver.hits();
    let rows = delivery_rows(&db);
    let attempts: Vec<String> = attempt_rows(&db)
        .iter()
        .map(|a| {
            format!(
                "{} #{}: {:?} {:?}",
                a.delivery_id, a.attempt, a.status_code, a.error
            )
        })
        .collect();
    let mut logs = String::new();
    for node in nodes.iter_mut() {
        let name = node.name;
        logs += &format!("--- {name} ---\n{}\n", node.tail(30));
    }
    let rows_brief: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {:?}: {}, {} attempts, last status {:?}",
                r.id, r.channel_id, r.status, r.attempts, r.last_status_code
            )
        })
        .collect();
    let context = format!(
        "{} paused {paused_for:?} with {held_count} requests held, resumed at {};\n\
         requests (times from the pause):\n  {}\ndeliveries:\n  {}\nattempts:\n  {}\n\
         logs:\n{logs}",
        names[owner],
        stamp(paused_at, resumed_at),
        briefs(&hits, paused_at),
        rows_brief.join("\n  "),
        attempts.join("\n  ")
    );
    eprintln!(
        "after the resume: {}; deliveries:\n  {}",
        show(&names, &counts),
        rows_brief.join("\n  ")
    );

    // The database holds the new owner's outcomes, not the late 500s.
    assert_eq!(rows.len(), EVENTS, "one delivery per event; {context}");
    for row in &rows {
        assert_eq!(
            (row.status.as_str(), row.last_status_code),
            ("succeeded", Some(200)),
            "delivery {} ({:?}) was overwritten, or never finished; {context}",
            row.id,
            row.channel_id
        );
    }
    // The resumed instance sent nothing (the new owner had nothing left).
    let late: Vec<HeldHit> = hits
        .iter()
        .filter(|h| h.at >= resumed_at)
        .cloned()
        .collect();
    assert!(
        late.is_empty(),
        "{} requests arrived after the old owner resumed; {context}",
        late.len()
    );
    // Only what was in flight at the pause came twice.
    let mut per_delivery: HashMap<&str, usize> = HashMap::new();
    for h in &hits {
        *per_delivery.entry(h.delivery.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        per_delivery.len(),
        EVENTS,
        "{EVENTS} delivery ids expected; {context}"
    );
    let repeated: Vec<(&str, usize)> = per_delivery
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&id, &n)| (id, n))
        .collect();
    let duplicates = hits.len() - per_delivery.len();
    eprintln!("{duplicates} duplicate requests ({held_count} were held at the pause)");
    for (id, n) in &repeated {
        assert!(
            held_ids.contains(*id),
            "delivery {id} arrived {n} times but was not in flight at the pause; {context}"
        );
    }
    assert!(
        duplicates <= held_count,
        "{duplicates} duplicates, more than the {held_count} requests held at the pause; {context}"
    );
    assert!(
        one_owner,
        "after the resume the webhook has not exactly one owner: {}; {context}",
        show(&names, &counts)
    );
}

// ---------------------------------------------------------------------
// (c) a clean stop
// ---------------------------------------------------------------------

#[test]
fn a_clean_stop_hands_leases_back_at_once() {
    const HOOKS: usize = 4;
    /// So long that only a hand-back explains a quick takeover.
    const LONG_LEASE: &str = "30s";
    const HANDBACK_BOUND: Duration = Duration::from_secs(5);
    let _serial = one_at_a_time();
    let Some(db) = TestDb::new(Store::Mysql) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hits: Hits = Arc::default();
    let receivers: Vec<Receiver> = (0..HOOKS)
        .map(|w| recording_receiver(w, hits.clone(), None))
        .collect();
    let names = ["a", "b"];
    let mut nodes = Node::start_all(dir.path(), &db, &names, &[("BROKER_LEASE", LONG_LEASE)]);
    let (app_id, key) = create_app(&nodes[0]);
    for r in &receivers {
        create_webhook(&nodes[0], &key, &r.url);
    }
    wait_all_know(&nodes, &key, HOOKS as u64);

    // Every webhook is leased (by one or both).
    let since = Instant::now();
    let mut counts = all_leases(&mut nodes);
    let leased = daemon::wait_until(Duration::from_secs(35), || {
        counts = all_leases(&mut nodes);
        counts.iter().sum::<u64>() == HOOKS as u64
    });
    eprintln!(
        "leases {:?} after the webhooks were created: {}",
        since.elapsed(),
        show(&names, &counts)
    );
    assert!(
        leased,
        "the {HOOKS} webhooks are not all leased: {}",
        show(&names, &counts)
    );
    let stopping = if counts[0] >= counts[1] { 0 } else { 1 };
    let survivor = 1 - stopping;
    // Deliveries flow before the stop.
    let deliveries = ingest(nodes[survivor].port, &app_id, json!({"id": "before"}));
    assert_eq!(deliveries, Ok(HOOKS as u64));
    let arrived = |channel: &str| {
        let hits = snapshot(&hits);
        (0..HOOKS).all(|w| hits.iter().any(|h| h.webhook == w && h.channel == channel))
    };
    assert!(
        daemon::wait_until(Duration::from_secs(5), || arrived("before")),
        "the event before the stop did not reach every webhook: {:?}",
        snapshot(&hits)
    );

    nodes[stopping].process.sigterm();
    let term_at = Instant::now();
    let mut now_held = 0;
    let mut took = None;
    while term_at.elapsed() < Duration::from_secs(15) {
        now_held = nodes[survivor].leases();
        if now_held == HOOKS as u64 {
            took = Some(term_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = nodes[stopping].process.wait_exit(Duration::from_secs(30));
    let stop_log = nodes[stopping].tail(30);
    eprintln!(
        "SIGTERM to {} (held {} of {HOOKS}); {} holds all {took:?} later (lease {LONG_LEASE}); \
         exit {exit:?}",
        names[stopping], counts[stopping], names[survivor]
    );
    let took = took.unwrap_or_else(|| {
        panic!(
            "15 s after SIGTERM to {} the survivor {} holds {now_held} of {HOOKS} leases; \
             stopping instance's log:\n{stop_log}\nsurvivor's log:\n{}",
            names[stopping],
            names[survivor],
            nodes[survivor].tail(30)
        )
    });
    assert!(
        took <= HANDBACK_BOUND,
        "the survivor held all {HOOKS} webhooks {took:?} after SIGTERM, over {HANDBACK_BOUND:?}: \
         leases not handed back at the stop? log of the stopped one:\n{stop_log}"
    );
    let exit = exit.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{stop_log}"));
    assert!(exit.success(), "exit status {exit}; log:\n{stop_log}");

    // And the survivor delivers for them at once.
    let sent = Instant::now();
    let deliveries = ingest(nodes[survivor].port, &app_id, json!({"id": "after"}));
    assert_eq!(deliveries, Ok(HOOKS as u64));
    assert!(
        daemon::wait_until(HANDBACK_BOUND, || arrived("after")),
        "the event after the stop did not reach every webhook within {HANDBACK_BOUND:?}: {:?}; \
         survivor's log:\n{}",
        snapshot(&hits),
        nodes[survivor].tail(30)
    );
    eprintln!(
        "the event after the stop reached all {HOOKS} webhooks in {:?}",
        sent.elapsed()
    );
}

/// `rateLimit` and `maxConcurrency` are per webhook, not per instance: with
/// events ingested through both of two instances, a receiver still sees at
/// most the limit in any second (plus 10%), another never more requests
/// open than its cap, both in order per channel, with nothing lost. The
/// lease makes one instance a webhook's only sender, so the limits are
/// exact.
#[test]
fn a_rate_limit_and_a_concurrency_cap_hold_across_two_instances() {
    const RATE: u64 = 20;
    const EVENTS: u64 = 300;
    const CHANNELS: u64 = 10;
    // The capped receiver holds each request open this long: 2 at once
    // make 20/s, and 10 channels would open 10 without the cap.
    let hold = Duration::from_millis(100);
    let _serial = one_at_a_time();
    let Some(db) = TestDb::new(Store::Mysql) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let limited = daemon::background_receiver(|_, _| Answer::status(204));
    let capped = daemon::background_receiver(move |_, _| Answer::status(204).after(hold));
    let nodes = Node::start_all(dir.path(), &db, &["a", "b"], &[]);
    let (app_id, key) = create_app(&nodes[0]);
    // B knows the app (and its key) within a second.
    wait_all_know(&nodes, &key, 0);
    for (node, body) in [
        (
            &nodes[1],
            json!({"uri": limited.url, "event": "all", "rateLimit": RATE}),
        ),
        (
            &nodes[0],
            json!({"uri": capped.url, "event": "all", "maxConcurrency": 2}),
        ),
    ] {
        let (status, body) = node.call("POST", "/v1/webhook", Some(&key), &body);
        assert_eq!(status, 201, "{body}");
    }
    wait_all_know(&nodes, &key, 2);

    // Each channel's events one after another, alternating instances.
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let loaders: Vec<_> = (0..CHANNELS)
        .map(|ch| {
            let (ports, app_id) = (ports.clone(), app_id.clone());
            std::thread::spawn(move || {
                for n in 0..EVENTS / CHANNELS {
                    let channel = json!({"id": format!("ch-{ch}"), "seq": n});
                    let port = ports[(n as usize + ch as usize) % ports.len()];
                    assert_eq!(ingest(port, &app_id, channel), Ok(2));
                }
            })
        })
        .collect();
    for l in loaders {
        l.join().expect("every event is accepted");
    }
    let started = Instant::now();
    for receiver in [&limited, &capped] {
        let all = daemon::wait_until(Duration::from_secs(60), || {
            receiver.received().len() >= EVENTS as usize
        });
        assert!(
            all,
            "{} of {EVENTS} deliveries arrived",
            receiver.received().len()
        );
        assert_each_once_in_channel_order(&receiver.received(), EVENTS as usize);
    }
    let arrivals = |r: &Receiver| r.received().iter().map(|r| r.at).collect::<Vec<_>>();
    let per_second = most_within(&arrivals(&limited), Duration::from_secs(1));
    let open = most_within(&arrivals(&capped), hold - Duration::from_millis(20));
    eprintln!(
        "{EVENTS} events through 2 instances, done {:?} after the last 202: rateLimit {RATE} \
         gave at most {per_second} in a second; maxConcurrency 2, {open} open at once",
        started.elapsed()
    );
    assert!(
        per_second as u64 <= RATE + RATE / 10,
        "{per_second} deliveries within one second, over {RATE} + 10%"
    );
    assert!(
        per_second as u64 >= RATE * 3 / 4,
        "{per_second} in the busiest second: the limit is not used"
    );
    assert!(
        open <= 2,
        "{open} requests open at once with maxConcurrency 2"
    );
    assert_eq!(open, 2, "the cap of 2 is used");
}

/// Asserts `got` holds `n` distinct deliveries and that each channel's
/// first arrivals came in increasing `seq`.
fn assert_each_once_in_channel_order(got: &[Received], n: usize) {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for r in got {
        if !ids.insert(r.header("webhook-id").unwrap().to_owned()) {
            continue;
        }
        let body = r.json();
        let (ch, seq) = (
            body["id"].as_str().unwrap().to_owned(),
            body["seq"].as_u64().unwrap(),
        );
        if let Some(prev) = last.insert(ch.clone(), seq) {
            assert!(prev < seq, "{ch}: seq {seq} after {prev}");
        }
    }
    assert_eq!(ids.len(), n, "every event arrived");
}
