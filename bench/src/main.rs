//! `webhook-bench`: the benchmark of issue 5, in one command.
//!
//! ```text
//! cargo build --release --workspace --features mysql
//! ./target/release/webhook-bench [--quick] [--scenarios S1,S2,...,S9,S10]
//!     [--mysql mysql://root@127.0.0.1:3306] [--out bench-results/latest.json]
//! ```
//!
//! It starts the real `webhook-broker` binary (next to this executable) as a
//! separate process with a real configuration on 127.0.0.1, fast receivers
//! (actix-web, 204) in this process, and an awc load generator; in the same
//! run it measures two baselines on the same receivers, a bare awc client
//! and a bare relay (a separate process that forwards each ingest request
//! and stores nothing). It prints progress on stderr, a markdown table on
//! stdout, and writes JSON. Everything is bounded in count and time. It
//! exits non-zero if an accepted event is lost (neither delivered nor still
//! pending in the database) or a scenario fails. See docs/benchmarks.md.
//!
//! The parts live beside this file; the bench is a package of its own
//! (`bench/`) so that its needs stay out of the broker's dependencies.

mod inproc;
mod load;
mod procs;
mod receiver;
mod relay;
mod report;
mod s10;
mod seed;
mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use serde_json::{json, Value};

use crate::load::{Load, Pace, Spec, Target};
use crate::procs::{Proc, RssSampler};
use crate::receiver::{Receivers, Round};
use crate::report::Row;
use crate::seed::DbState;
use crate::util::{
    elapsed, http, now_us, quantile, status_kb, thousands, CpuDelta, CpuSnap, CLK_TCK,
};

/// The benchmark of the webhook broker (issue 5). Build first with
/// `cargo build --release --workspace --features mysql`.
#[derive(Parser, Debug)]
#[command(name = "webhook-bench")]
struct Args {
    /// Small counts and about 2 s per phase (the whole run in under a
    /// minute), for CI smoke runs.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated: S1 to S10, awc, relay (default:
    /// all but S8, S9 and S10, which are opt-in). The baselines run whenever
    /// S1, S2, S4 or S5 does.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// MySQL/MariaDB server for S4 and S9; a database is created and
    /// dropped. `none` skips them.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/latest.json")]
    out: PathBuf,
    /// Seconds of load per phase (default 10, or 2 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Requests in flight in the closed-loop phases (S1, S2, S4, S5,
    /// baselines).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Keep the temp directory (databases, broker and relay logs) after a
    /// successful run too.
    #[arg(long)]
    keep: bool,
    /// Distinct channel ids the events cycle through (the broker keeps
    /// each channel's deliveries in order, one at a time per webhook).
    #[arg(long, default_value_t = 1000)]
    channels: u64,
    #[arg(long, hide = true)]
    serve_relay: Option<String>,
    #[arg(long, hide = true)]
    relay_target: Option<String>,
    #[arg(long, hide = true)]
    relay_token: Option<String>,
}

/// Counts and bounds of a run.
#[derive(Debug, Clone, serde::Serialize)]
struct Settings {
    quick: bool,
    duration_s: f64,
    drain_bound_s: f64,
    stall_s: f64,
    concurrency: usize,
    generator_threads: usize,
    receiver_workers: usize,
    channels: u64,
    max_events_1_webhook: usize,
    max_events_10_webhooks: usize,
    s3_rate: f64,
    s6_webhooks: usize,
    s6_apps: usize,
    s7_webhooks: usize,
    idle_settle_s: f64,
    s8_events: usize,
    s8_webhooks: usize,
    s8_drain_bound_s: f64,
    s8_stall_s: f64,
    s9_webhooks: usize,
    s9_instances: Vec<usize>,
    s10_down_events: usize,
    s10_down_rate: f64,
    s10_healthy_rate: f64,
}

impl Settings {
    fn new(args: &Args) -> Settings {
        let quick = args.quick;
        Settings {
            quick,
            duration_s: args.duration.unwrap_or(if quick { 2.0 } else { 10.0 }),
            drain_bound_s: if quick { 10.0 } else { 30.0 },
            stall_s: if quick { 5.0 } else { 10.0 },
            concurrency: args.concurrency.max(1),
            generator_threads: 2,
            receiver_workers: 2,
            channels: args.channels.max(1),
            max_events_1_webhook: if quick { 200_000 } else { 2_000_000 },
            max_events_10_webhooks: if quick { 20_000 } else { 400_000 },
            s3_rate: 1000.0,
            s6_webhooks: if quick { 2_000 } else { 100_000 },
            s6_apps: if quick { 20 } else { 1_000 },
            s7_webhooks: if quick { 500 } else { 10_000 },
            idle_settle_s: if quick { 1.0 } else { 2.0 },
            s8_events: if quick { 1_000 } else { 10_000 },
            s8_webhooks: 10,
            s8_drain_bound_s: if quick { 60.0 } else { 180.0 },
            // Longer than a retry (5 s +-20%): heads wait that long.
            s8_stall_s: 20.0,
            s9_webhooks: 10,
            s9_instances: vec![1, 2, 3],
            s10_down_events: if quick { 8_000 } else { 200_000 },
            s10_down_rate: 4000.0,
            s10_healthy_rate: 1000.0,
        }
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

/// What one load phase measured.
struct Measured {
    round: Arc<Round>,
    load: Arc<Load>,
    /// Where the CPU went over load and drain; the measured process is
    /// the broker or relay (`target`), or the bench itself for S5.
    cpu: CpuDelta,
    unique_at_load_end: u64,
    load_s: f64,
    drain_s: f64,
}

struct Bench {
    s: Settings,
    start: Instant,
    bin: PathBuf,
    dir: PathBuf,
    receivers: Arc<Receivers>,
    rport: u16,
    token: String,
    next_run: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(bind) = &args.serve_relay {
        let (Some(target), Some(token)) = (args.relay_target.clone(), args.relay_token.clone())
        else {
            eprintln!("--serve-relay needs --relay-target and --relay-token");
            return ExitCode::from(2);
        };
        return match relay::serve(bind, target, token) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relay: {e}");
                ExitCode::FAILURE
            }
        };
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("webhook-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The broker binary next to this executable.
fn broker_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the bench executable")?;
    let bin = me.with_file_name("webhook-broker");
    if !bin.is_file() {
        bail!(
            "{} not found: the benchmark runs the real broker binary next to itself. \
             Build it first with `cargo build --release --workspace --features mysql`, then run \
             `./target/release/webhook-bench`",
            bin.display()
        );
    }
    // `cargo run -p webhook-bench` rebuilds the library and this binary
    // but not the broker's: a broker older than the library is stale.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_lib = std::fs::read_dir(me.with_file_name("deps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libwebhook_broker-") && name.ends_with(".rlib")
        })
        .filter_map(|e| modified(&e.path()))
        .max();
    if let (Some(b), Some(lib)) = (modified(&bin), newest_lib) {
        if lib > b {
            eprintln!(
                "warning: {} is older than the library it is built from; run \
                 `cargo build --release --workspace --features mysql` first so the benchmark measures the current code",
                bin.display()
            );
        }
    }
    Ok(bin)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total_gb": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "git_commit": git(&["rev-parse", "--short", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
    })
}

fn slug(id: &str) -> String {
    id.to_ascii_lowercase().replace(['/', ' '], "-")
}

fn run(args: Args) -> anyhow::Result<bool> {
    let bin = broker_binary()?;
    let s = Settings::new(&args);
    let all = [
        "awc", "relay", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10",
    ];
    // S8 (a restart with a large backlog), S9 (several instances on
    // MariaDB, three fresh databases) and S10 (a receiver down under
    // steady ingest) add minutes and measure no target of issue 5: only
    // when asked for.
    let opt_in = ["S8", "S9", "S10"];
    let mut chosen: BTreeSet<String> = if args.scenarios.is_empty() {
        all.iter()
            .filter(|s| !opt_in.contains(s))
            .map(|s| s.to_string())
            .collect()
    } else {
        let mut set = BTreeSet::new();
        for raw in &args.scenarios {
            let name = raw.trim();
            let Some(found) = all.iter().find(|a| a.eq_ignore_ascii_case(name)) else {
                bail!("unknown scenario `{name}`; choose from {}", all.join(","));
            };
            set.insert(found.to_string());
        }
        set
    };
    if ["S1", "S2", "S4", "S5"].iter().any(|s| chosen.contains(*s)) {
        chosen.insert("awc".into());
        chosen.insert("relay".into());
    }

    let dir = std::env::temp_dir().join(format!(
        "webhook-bench-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir)?;
    let started_at = httpdate::fmt_http_date(std::time::SystemTime::now());
    let load_before = loadavg();
    let receivers = Arc::new(Receivers::default());
    let rport = receiver::start(receivers.clone(), s.receiver_workers)?;
    let mut bench = Bench {
        s: s.clone(),
        start: Instant::now(),
        bin,
        dir: dir.clone(),
        receivers,
        rport,
        token: format!("bench-admin-{}", uuid::Uuid::new_v4().simple()),
        next_run: 0,
    };
    bench.log(format!(
        "webhook-bench ({}): {:.0} s per load phase, {} in flight, receivers on 127.0.0.1:{rport}, \
         temp dir {}; load average {load_before}",
        if s.quick { "quick" } else { "full" },
        s.duration_s,
        s.concurrency,
        dir.display()
    ));

    let mut rows: Vec<Row> = Vec::new();
    let push =
        |result: anyhow::Result<Vec<Row>>, id: &str, label: &str, rows: &mut Vec<Row>| match result
        {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => {
                eprintln!("error in {id}: {e:#}");
                let mut row = Row::new(id, label);
                row.error = Some(format!("{e:#}").lines().next().unwrap_or("").to_owned());
                rows.push(row);
            }
        };
    let closed = Pace::Closed {
        concurrency: s.concurrency,
    };
    let (cap1, cap10) = (s.max_events_1_webhook, s.max_events_10_webhooks);
    if chosen.contains("awc") {
        let r = bench.awc_baseline().map(|r| vec![r]);
        push(r, "awc", "bare awc client", &mut rows);
    }
    if chosen.contains("relay") {
        let r = bench.relay_baseline().map(|r| vec![r]);
        push(r, "relay", "bare relay", &mut rows);
    }
    if chosen.contains("S1") {
        let label = "SQLite, 1 app, 1 webhook";
        let r = bench.broker_http("S1", label, None, 1, closed, cap1);
        push(r.map(|r| vec![r]), "S1", label, &mut rows);
    }
    if chosen.contains("S2") {
        let label = "SQLite, 1 event -> 10 webhooks";
        let r = bench.broker_http("S2", label, None, 10, closed, cap10);
        push(r.map(|r| vec![r]), "S2", label, &mut rows);
    }
    if chosen.contains("S3") {
        let label = "SQLite, paced 1,000 ev/s";
        let rate = s.s3_rate;
        let pace = Pace::Paced {
            rate,
            max_outstanding: 2000,
        };
        let cap = (rate * s.duration_s) as usize + 10;
        let r = bench.broker_http("S3", label, None, 1, pace, cap);
        push(r.map(|r| vec![r]), "S3", label, &mut rows);
    }
    if chosen.contains("S4") {
        rows.append(&mut bench.s4(&args.mysql, closed));
    }
    if chosen.contains("S5") {
        let label = "in-process sends, SQLite, 1 webhook";
        let r = bench.s5();
        push(r.map(|r| vec![r]), "S5", label, &mut rows);
    }
    if chosen.contains("S6") {
        let r = bench.s6();
        push(r, "S6", "many webhooks: start", &mut rows);
    }
    if chosen.contains("S7") {
        let r = bench.s7();
        push(
            r.map(|r| vec![r]),
            "S7",
            "1 event -> many webhooks",
            &mut rows,
        );
    }
    if chosen.contains("S8") {
        let r = bench.s8();
        push(
            r.map(|r| vec![r]),
            "S8",
            "SQLite, restart with a backlog",
            &mut rows,
        );
    }
    if chosen.contains("S9") {
        rows.append(&mut bench.s9(&args.mysql));
    }
    if chosen.contains("S10") {
        let label = "SQLite, a receiver down under steady ingest";
        let r = bench.s10("S10", label, None);
        push(r.map(|r| vec![r]), "S10", label, &mut rows);
        let label = "MariaDB, a receiver down under steady ingest";
        match bench.mysql_server("S10/MariaDB", &args.mysql) {
            Ok(version) => {
                let r = bench
                    .s10("S10/MariaDB", label, Some(&args.mysql))
                    .map(|mut r| {
                        r.notes.push(format!("server version {version}"));
                        vec![r]
                    });
                push(r, "S10/MariaDB", label, &mut rows);
            }
            Err(why) => {
                let mut r = Row::new("S10/MariaDB", label);
                r.skipped = Some(why);
                rows.push(r);
            }
        }
    }

    report::judge(&mut rows, s.quick);
    let load_after = loadavg();
    let table = report::markdown(&rows);
    println!("\n{table}");
    let mut notes = vec![
        "Latency is arrival minus the send time stamped into the event (its eventTime, carried \
         at µs resolution as `sentUs`); the whole-ms eventTime figures are in the JSON."
            .to_string(),
        "Delivered/s counts distinct deliveries from the first send to the last arrival, \
         backlog included; accepted ev/s is over the load phase only."
            .to_string(),
        "Ratios are of delivered/s. CPU is utime+stime of the broker (relay) process over \
         load and drain, CLK_TCK 100."
            .to_string(),
        format!("Load average (1/5/15 min) before: {load_before}; after: {load_after}."),
    ];
    if cfg!(debug_assertions) {
        notes.insert(
            0,
            "DEBUG BUILD (a smoke run): the figures say nothing about speed; build with \
             `cargo build --release --workspace --features mysql` and run `target/release/webhook-bench` to measure."
                .to_string(),
        );
    }
    let busiest = rows
        .iter()
        .filter_map(|r| r.other_cpu_share.map(|s| (s, r.id.as_str())))
        .fold(None, |m: Option<(f64, &str)>, x| match m {
            Some(m) if m.0 >= x.0 => Some(m),
            _ => Some(x),
        });
    if let Some((share, id)) = busiest {
        notes.push(format!(
            "Other processes (not the bench, broker, relay or database server) used at most \
             {:.0}% of the machine's CPU during a measured phase ({id}); per row in the JSON \
             (other_cpu_share).",
            share * 100.0
        ));
    }
    for r in &rows {
        for n in &r.notes {
            notes.push(format!("{}: {n}", r.id));
        }
    }
    for n in &notes {
        println!("- {n}");
    }

    let lost: u64 = rows.iter().map(|r| r.lost).sum();
    let errors: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.id.as_str())
        .collect();
    let ok = lost == 0 && errors.is_empty();
    let doc = json!({
        "benchmark": "webhook-bench",
        "mode": if s.quick { "quick" } else { "full" },
        "started_at": started_at,
        "finished_at": httpdate::fmt_http_date(std::time::SystemTime::now()),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "settings": s,
        "rows": rows,
        "notes": notes,
        "table_markdown": table,
        "lost_total": lost,
        "failed_scenarios": errors,
        "ok": ok,
    });
    if let Some(parent) = args.out.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    bench.log(format!("wrote {}", args.out.display()));
    if ok && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else if ok {
        bench.log(format!("kept {}", dir.display()));
    } else {
        eprintln!(
            "webhook-bench: {} accepted deliveries lost; failed: {}; logs kept in {}",
            lost,
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            },
            dir.display()
        );
    }
    Ok(ok)
}

impl Bench {
    fn log(&self, msg: impl std::fmt::Display) {
        eprintln!("{} {msg}", elapsed(self.start));
    }

    fn receiver_url(&self, k: usize) -> String {
        format!("http://127.0.0.1:{}/r/{k}", self.rport)
    }

    fn sqlite_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.dir.join(format!("{name}.db")).display())
    }

    fn new_round(&mut self, hooks: usize, max_events: usize) -> Arc<Round> {
        self.next_run += 1;
        let round = Round::new(self.next_run, hooks, max_events);
        self.receivers.begin(round.clone());
        round
    }

    /// A round that also checks each channel's order (for loads that keep
    /// a channel's events one after another: [`Pace::Channels`]).
    fn new_ordered_round(&mut self, hooks: usize, max_events: usize) -> Arc<Round> {
        self.next_run += 1;
        let round = Round::ordered(self.next_run, hooks, max_events, self.s.channels);
        self.receivers.begin(round.clone());
        round
    }

    /// Shows progress every second until `finished` (or `limit`); answers
    /// the seconds it took and whether it finished.
    fn watch(
        &self,
        id: &str,
        load: &Load,
        round: &Round,
        limit: Duration,
        mut finished: impl FnMut() -> bool,
    ) -> (f64, bool) {
        let t0 = Instant::now();
        let mut next = t0 + Duration::from_secs(1);
        let mut last = 0;
        loop {
            if finished() {
                return (t0.elapsed().as_secs_f64(), true);
            }
            if t0.elapsed() > limit {
                self.log(format!("{id}: load did not finish within {limit:?}"));
                return (t0.elapsed().as_secs_f64(), false);
            }
            std::thread::sleep(Duration::from_millis(20));
            if Instant::now() >= next {
                next += Duration::from_secs(1);
                let acc = load.accepted.load(Relaxed);
                self.log(format!(
                    "{id}: {:>4.0}s  accepted {:>9} ({:>7}/s)  delivered {:>9}  errors {}",
                    t0.elapsed().as_secs_f64(),
                    thousands(acc as f64),
                    thousands((acc - last) as f64),
                    thousands(round.unique.load(Relaxed) as f64),
                    load.failed.load(Relaxed),
                ));
                last = acc;
            }
        }
    }

    /// Waits for the owed deliveries, within the drain bound and while
    /// they keep coming; answers the seconds waited.
    fn drain(&self, id: &str, round: &Round, expected: u64) -> f64 {
        self.drain_within(id, round, expected, self.s.drain_bound_s, self.s.stall_s)
    }

    /// [`Bench::drain`] with its own bound and stall, in seconds.
    fn drain_within(
        &self,
        id: &str,
        round: &Round,
        expected: u64,
        bound_s: f64,
        stall_s: f64,
    ) -> f64 {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(bound_s);
        let stall = Duration::from_secs_f64(stall_s);
        let mut last = round.unique.load(Relaxed);
        let mut last_change = t0;
        let mut next = t0 + Duration::from_secs(1);
        loop {
            let got = round.unique.load(Relaxed);
            if got >= expected {
                break;
            }
            let now = Instant::now();
            if got != last {
                (last, last_change) = (got, now);
            }
            if now >= deadline || now - last_change >= stall {
                self.log(format!(
                    "{id}: stopped waiting after {:.1}s: {} of {} owed deliveries arrived",
                    t0.elapsed().as_secs_f64(),
                    thousands(got as f64),
                    thousands(expected as f64)
                ));
                break;
            }
            if now >= next {
                next += Duration::from_secs(1);
                self.log(format!(
                    "{id}: draining, {} of {} delivered",
                    thousands(got as f64),
                    thousands(expected as f64)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        t0.elapsed().as_secs_f64()
    }

    /// One closed-loop or paced HTTP load phase against `target`, then
    /// the drain; `pids` are the processes whose CPU is measured (summed).
    /// Under [`Pace::Channels`] the round also checks channel order.
    fn http_phase(
        &mut self,
        id: &str,
        target: Target,
        pace: Pace,
        hooks: usize,
        max_events: usize,
        pids: &[u32],
    ) -> Measured {
        let round = if matches!(pace, Pace::Channels { .. }) {
            self.new_ordered_round(hooks, max_events)
        } else {
            self.new_round(hooks, max_events)
        };
        let load = Load::new();
        let spec = Spec {
            target,
            pace,
            duration: self.s.duration(),
            max_events,
            threads: self.s.generator_threads,
            channels: self.s.channels,
            run: round.run,
        };
        let cpu0 = CpuSnap::take_all(pids);
        let handles = load::start(spec, round.clone(), load.clone());
        let limit = self.s.duration() + Duration::from_secs(40);
        let (load_s, _) = self.watch(id, &load, &round, limit, || {
            handles.iter().all(|h| h.is_finished())
        });
        for h in handles {
            let _ = h.join();
        }
        let unique_at_load_end = round.unique.load(Relaxed);
        let expected = load.accepted.load(Relaxed) * hooks as u64;
        let drain_s = self.drain(id, &round, expected);
        Measured {
            round,
            load,
            cpu: CpuSnap::take_all(pids).since(&cpu0),
            unique_at_load_end,
            load_s,
            drain_s,
        }
    }

    /// Everything a row shows, from a phase and (for a broker) its database.
    fn fill(&self, row: &mut Row, m: &Measured, db: Option<&DbState>) {
        let (round, load) = (&m.round, &m.load);
        let acc = round.account();
        let mut backlog = 0;
        for slot in &acc.missing {
            if db.is_some_and(|d| d.pending.contains(slot)) {
                backlog += 1;
            }
        }
        row.events_sent = load.sent.load(Relaxed);
        row.events_accepted = acc.accepted;
        row.deliveries_expected = acc.expected;
        row.deliveries_received = round.unique.load(Relaxed);
        row.duplicates = acc.duplicates;
        row.backlog = backlog;
        row.lost = acc.missing.len() as u64 - backlog;
        row.unrecorded = db.map_or(0, |d| d.pending.len() as u64 - backlog);
        row.errors = load.failed.load(Relaxed);
        row.error_kinds = load.errors();
        row.unacknowledged_delivered = acc.unacknowledged_delivered;
        row.stray = round.stray.load(Relaxed) + round.malformed.load(Relaxed);
        row.behind = load.behind.load(Relaxed);
        row.load_s = Some(m.load_s);
        row.drain_s = Some(m.drain_s);
        if let Some((first, last)) = load.window() {
            let secs = (last - first).max(1) as f64 / 1e6;
            row.accepted_per_s = Some(acc.accepted as f64 / secs);
            let last_arrival = round.last_arrival_us();
            if last_arrival > first {
                let secs = (last_arrival - first) as f64 / 1e6;
                row.delivered_per_s = Some(row.deliveries_received as f64 / secs);
            }
        }
        if m.load_s > 0.0 {
            row.delivered_during_load_per_s = Some(m.unique_at_load_end as f64 / m.load_s);
        }
        if round.checks_order() {
            row.order_violations = Some(round.order_violations.load(Relaxed));
        }
        row.duplicate_samples = round.duplicate_samples();
        let (us, ms) = round.latencies();
        let q = |v: &[u32], q: f64, scale: f64| quantile(v, q).map(|x| x as f64 / scale);
        row.p50_ms = q(&us, 0.5, 1000.0);
        row.p99_ms = q(&us, 0.99, 1000.0);
        row.p999_ms = q(&us, 0.999, 1000.0);
        row.event_time_p50_ms = q(&ms, 0.5, 1.0);
        row.event_time_p99_ms = q(&ms, 0.99, 1.0);
        row.event_time_p999_ms = q(&ms, 0.999, 1.0);
        let acks = load.ack_latencies();
        row.ack_p50_ms = q(&acks, 0.5, 1000.0);
        row.ack_p99_ms = q(&acks, 0.99, 1000.0);
        if let Some(t) = m.cpu.target {
            let cpu = t as f64 / CLK_TCK;
            row.cpu_s = Some(cpu);
            if row.deliveries_received > 0 {
                row.cpu_s_per_10k = Some(cpu / row.deliveries_received as f64 * 10_000.0);
                row.cpu_s_per_1k = Some(cpu / row.deliveries_received as f64 * 1_000.0);
            }
        }
        row.bench_cpu_s = Some(m.cpu.bench as f64 / CLK_TCK);
        row.database_cpu_s = Some(m.cpu.database as f64 / CLK_TCK);
        row.other_cpu_s = Some(m.cpu.other as f64 / CLK_TCK);
        row.other_cpu_share = Some(m.cpu.other_share());
        if m.cpu.other_share() > 0.05 {
            row.notes.push(format!(
                "other processes on the machine used {:.0}% of its CPU during this phase",
                m.cpu.other_share() * 100.0
            ));
        }
        if let Some(d) = db {
            row.db = d.counts.clone();
        }
        if row.backlog > 0 {
            row.notes.push(format!(
                "{} accepted deliveries had not arrived within the bound and were still pending \
                 (durable) in the database when the broker stopped",
                row.backlog
            ));
        }
        if row.errors > 0 {
            row.notes
                .push(format!("ingest errors: {:?}", row.error_kinds));
        }
        if row.duplicates > 0 {
            let first: Vec<&str> = row
                .duplicate_samples
                .iter()
                .take(3)
                .map(String::as_str)
                .collect();
            row.notes.push(format!(
                "{} duplicate arrivals (more in the JSON, duplicate_samples): {}",
                row.duplicates,
                first.join("; ")
            ));
        }
        self.log(format!(
            "{}: accepted {} ({}/s), delivered {} ({}/s), p50 {} ms p99 {} ms, errors {}, \
             duplicates {}, lost {}, backlog {}",
            row.id,
            thousands(acc.accepted as f64),
            thousands(row.accepted_per_s.unwrap_or(0.0)),
            thousands(row.deliveries_received as f64),
            thousands(row.delivered_per_s.unwrap_or(0.0)),
            row.p50_ms.map_or("–".into(), |v| format!("{v:.2}")),
            row.p99_ms.map_or("–".into(), |v| format!("{v:.2}")),
            row.errors,
            row.duplicates,
            row.lost,
            row.backlog
        ));
    }

    /// An app with `hooks` webhooks at /r/0.. through the REST API.
    fn setup_app(&self, port: u16, hooks: usize) -> anyhow::Result<String> {
        self.setup_app_at(port, &(0..hooks).collect::<Vec<_>>())
    }

    /// An app with one webhook at each receiver path /r/{k} of `paths`.
    fn setup_app_at(&self, port: u16, paths: &[usize]) -> anyhow::Result<String> {
        let (status, body) = http(
            port,
            "POST",
            "/v1/apps",
            Some(&self.token),
            r#"{"name":"bench"}"#,
        )?;
        if status != 201 {
            bail!("POST /v1/apps answered {status}: {body}");
        }
        let app: Value = serde_json::from_str(&body)?;
        let (Some(id), Some(key)) = (app["id"].as_str(), app["apiKey"].as_str()) else {
            bail!("POST /v1/apps answered {body}");
        };
        for &k in paths {
            let hook = json!({"uri": self.receiver_url(k), "event": "all"}).to_string();
            let (status, body) = http(port, "POST", "/v1/webhook", Some(key), &hook)?;
            if status != 201 {
                bail!("POST /v1/webhook answered {status}: {body}");
            }
        }
        Ok(id.to_owned())
    }

    fn awc_baseline(&mut self) -> anyhow::Result<Row> {
        self.log("awc: bare awc client straight to the receivers (the HTTP ceiling)");
        let target = Target::Direct {
            url: self.receiver_url(0),
        };
        let pace = Pace::Closed {
            concurrency: self.s.concurrency,
        };
        let cap = self.s.max_events_1_webhook;
        let m = self.http_phase("awc", target, pace, 1, cap, &[]);
        let mut row = Row::new("awc", "bare awc client -> receiver");
        self.fill(&mut row, &m, None);
        self.receivers.end();
        Ok(row)
    }

    fn relay_baseline(&mut self) -> anyhow::Result<Row> {
        self.log("relay: bare relay process (ingest POST -> awc POST to the receiver, no storage)");
        let port = util::free_port()?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "--serve-relay",
            &format!("127.0.0.1:{port}"),
            "--relay-target",
            &self.receiver_url(0),
            "--relay-token",
            &self.token,
        ]);
        let mut relay = Proc::spawn(cmd, &self.dir, "relay", port)?;
        relay.wait_ready("/readyz", Duration::from_secs(20))?;
        let target = Target::Ingest {
            urls: vec![format!("http://127.0.0.1:{port}/v1/events")],
            bearer: format!("Bearer {}", self.token),
            app_id: "app_relay".into(),
        };
        let pace = Pace::Closed {
            concurrency: self.s.concurrency,
        };
        let cap = self.s.max_events_1_webhook;
        let m = self.http_phase("relay", target, pace, 1, cap, &[relay.pid()]);
        let mut row = Row::new("relay", "bare relay -> receiver");
        row.peak_rss_mb = relay.peak_rss_mb();
        relay.stop(Duration::from_secs(5))?;
        self.fill(&mut row, &m, None);
        self.receivers.end();
        Ok(row)
    }

    /// The broker binary on SQLite (or a fresh MySQL database), one app
    /// with `hooks` webhooks, HTTP ingest under `pace`.
    fn broker_http(
        &mut self,
        id: &str,
        label: &str,
        mysql: Option<&str>,
        hooks: usize,
        pace: Pace,
        max_events: usize,
    ) -> anyhow::Result<Row> {
        self.log(format!("{id}: {label}"));
        let mysql_db = mysql.map(seed::MysqlDb::create).transpose()?;
        let url = match &mysql_db {
            Some(db) => db.url.clone(),
            None => self.sqlite_url(&slug(id)),
        };
        let mut broker = Proc::broker(&self.bin, &self.dir, &slug(id), &url, &self.token)?;
        broker.wait_ready("/readyz", Duration::from_secs(60))?;
        let app_id = self.setup_app(broker.port, hooks)?;
        let target = Target::Ingest {
            urls: vec![format!("http://127.0.0.1:{}/v1/events", broker.port)],
            bearer: format!("Bearer {}", self.token),
            app_id,
        };
        let m = self.http_phase(id, target, pace, hooks, max_events, &[broker.pid()]);
        let mut row = Row::new(id, label);
        row.peak_rss_mb = broker.peak_rss_mb();
        row.webhooks = Some(hooks);
        broker.stop(Duration::from_secs(30))?;
        let db = match seed::db_state(&url, m.round.run) {
            Ok(d) => Some(d),
            Err(e) => {
                row.notes
                    .push(format!("could not read the database after the run: {e:#}"));
                None
            }
        };
        self.fill(&mut row, &m, db.as_ref());
        if let Pace::Paced {
            rate,
            max_outstanding,
        } = pace
        {
            let due = (rate * m.load_s.min(self.s.duration_s)) as u64;
            if row.events_sent < due * 98 / 100 || row.behind > 0 {
                row.notes.push(format!(
                    "the paced sender did not hold {rate:.0} ev/s: {} sent of {due} due, {} \
                     skipped because {max_outstanding} were already in flight",
                    row.events_sent, row.behind
                ));
            }
        }
        self.receivers.end();
        drop(mysql_db);
        Ok(row)
    }

    fn s4(&mut self, server: &str, pace: Pace) -> Vec<Row> {
        let labels = [
            ("S4/S1", "MariaDB, 1 app, 1 webhook", 1),
            ("S4/S2", "MariaDB, 1 event -> 10 webhooks", 10),
        ];
        let skipped = |why: String| {
            labels
                .iter()
                .map(|(id, label, _)| {
                    let mut r = Row::new(id, label);
                    r.skipped = Some(why.clone());
                    r
                })
                .collect::<Vec<_>>()
        };
        let version = match self.mysql_server("S4", server) {
            Ok(v) => v,
            Err(why) => return skipped(why),
        };
        let mut rows = Vec::new();
        for (id, label, hooks) in labels {
            let cap = if hooks == 1 {
                self.s.max_events_1_webhook
            } else {
                self.s.max_events_10_webhooks
            };
            match self.broker_http(id, label, Some(server), hooks, pace, cap) {
                Ok(mut r) => {
                    r.notes.push(format!("server version {version}"));
                    rows.push(r);
                }
                Err(e) => {
                    eprintln!("error in {id}: {e:#}");
                    let mut r = Row::new(id, label);
                    r.error = Some(format!("{e:#}").lines().next().unwrap_or("").to_owned());
                    rows.push(r);
                }
            }
        }
        rows
    }

    /// The server's version, or why S4 (S9) is skipped (logged).
    fn mysql_server(&self, id: &str, server: &str) -> Result<String, String> {
        if server.eq_ignore_ascii_case("none") {
            self.log(format!("{id}: skipped (--mysql none)"));
            return Err("--mysql none".into());
        }
        seed::mysql_version(server).inspect_err(|why| self.log(format!("{id}: skipped: {why}")))
    }

    fn s5(&mut self) -> anyhow::Result<Row> {
        let label = "in-process sends, SQLite, 1 webhook";
        self.log(format!(
            "S5: {label} (Broker::start in this process, a colocated actor sends ChannelEvents)"
        ));
        let url = self.sqlite_url("s5");
        let cap = self.s.max_events_1_webhook;
        let round = self.new_round(1, cap);
        let load = Load::new();
        // Resets this process's VmHWM so the peak is S5's.
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let mut inproc = inproc::InProcess::start(
            inproc::Params {
                database_url: url.clone(),
                token: self.token.clone(),
                receiver_url: self.receiver_url(0),
                duration: self.s.duration(),
                concurrency: self.s.concurrency,
                channels: self.s.channels,
            },
            round.clone(),
            load.clone(),
        );
        match inproc.events.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(inproc::Phase::Ready)) => {}
            Ok(Ok(inproc::Phase::Loaded)) => bail!("S5: loaded before ready"),
            Ok(Err(e)) => return Err(e.context("starting the in-process broker")),
            Err(_) => bail!("the in-process broker did not start within 60 s"),
        }
        let me = std::process::id();
        let cpu0 = CpuSnap::take(None);
        inproc.go();
        let mut outcome: Option<anyhow::Result<()>> = None;
        let limit = self.s.duration() + Duration::from_secs(40);
        let (load_s, finished) = self.watch("S5", &load, &round, limit, || {
            if outcome.is_none() {
                outcome = match inproc.events.try_recv() {
                    Ok(Ok(_)) => Some(Ok(())),
                    Ok(Err(e)) => Some(Err(e)),
                    Err(std::sync::mpsc::TryRecvError::Empty) => None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        Some(Err(anyhow!("the S5 thread ended early")))
                    }
                };
            }
            outcome.is_some()
        });
        if !finished {
            bail!("the in-process sends did not finish within {limit:?}");
        }
        if let Some(Err(e)) = outcome {
            return Err(e);
        }
        let unique_at_load_end = round.unique.load(Relaxed);
        let expected = load.accepted.load(Relaxed);
        let drain_s = self.drain("S5", &round, expected);
        let mut cpu = CpuSnap::take(None).since(&cpu0);
        cpu.target = Some(cpu.bench);
        let peak = status_kb(me, "VmHWM").map(|kb| kb as f64 / 1024.0);
        inproc.stop();
        let m = Measured {
            round: round.clone(),
            load,
            cpu,
            unique_at_load_end,
            load_s,
            drain_s,
        };
        let mut row = Row::new("S5", label);
        row.peak_rss_mb = peak;
        let db = match seed::db_state(&url, round.run) {
            Ok(d) => Some(d),
            Err(e) => {
                row.notes
                    .push(format!("could not read the database after the run: {e:#}"));
                None
            }
        };
        self.fill(&mut row, &m, db.as_ref());
        row.notes.push(format!(
            "CPU and RSS are the bench process's: the in-process broker, the sending actor and \
             the receivers together (VmHWM {} before S5)",
            if hwm_reset {
                "reset"
            } else {
                "could not be reset"
            }
        ));
        self.receivers.end();
        Ok(row)
    }

    fn s6(&mut self) -> anyhow::Result<Vec<Row>> {
        let (n, apps) = (self.s.s6_webhooks, self.s.s6_apps);
        self.log(format!(
            "S6: seeding {} webhooks over {} apps with Diesel batch inserts",
            thousands(n as f64),
            thousands(apps as f64)
        ));
        let path = self.dir.join("s6.db");
        let rport = self.rport;
        let (_, build) = seed::sqlite_with_webhooks(&path, apps, n, |i| {
            format!("http://127.0.0.1:{rport}/r/{}", i % 10)
        })?;
        self.log(format!(
            "S6: seeded in {:.2} s; starting the broker on it",
            build.as_secs_f64()
        ));
        let url = self.sqlite_url("s6");
        let mut broker = Proc::broker(&self.bin, &self.dir, "s6", &url, &self.token)?;
        let ready = broker.wait_ready("/readyz", Duration::from_secs(120))?;
        std::thread::sleep(Duration::from_secs_f64(self.s.idle_settle_s));
        let mut row = Row::new(
            "S6",
            &format!(
                "{} webhooks over {} apps: start",
                thousands(n as f64),
                thousands(apps as f64)
            ),
        );
        row.webhooks = Some(n);
        row.build_s = Some(build.as_secs_f64());
        row.ready_s = Some(ready.as_secs_f64());
        row.peak_rss_mb = broker.peak_rss_mb();
        row.rss_mb = broker.rss_mb();
        broker.stop(Duration::from_secs(30))?;
        row.notes.push(format!(
            "spawn to /readyz 200 in {:.2} s; peak RSS {:.0} MB, RSS {:.0} MB after {:.0} s idle",
            ready.as_secs_f64(),
            row.peak_rss_mb.unwrap_or(0.0),
            row.rss_mb.unwrap_or(0.0),
            self.s.idle_settle_s
        ));
        if self.s.quick {
            row.notes
                .push("quick run: far fewer webhooks than the target's 100,000".into());
        }
        self.log(format!(
            "S6: ready in {:.2} s, peak RSS {:.1} MB",
            ready.as_secs_f64(),
            row.peak_rss_mb.unwrap_or(0.0)
        ));

        self.log("S6 idle: an empty broker");
        let url = self.sqlite_url("s6-empty");
        let mut broker = Proc::broker(&self.bin, &self.dir, "s6-empty", &url, &self.token)?;
        let ready = broker.wait_ready("/readyz", Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_secs_f64(self.s.idle_settle_s));
        let mut idle = Row::new("S6 idle", "empty broker");
        idle.ready_s = Some(ready.as_secs_f64());
        idle.peak_rss_mb = broker.peak_rss_mb();
        idle.rss_mb = broker.rss_mb();
        idle.notes.push(format!(
            "RSS {:.1} MB after {:.0} s idle (peak {:.1} MB), ready in {:.2} s",
            idle.rss_mb.unwrap_or(0.0),
            self.s.idle_settle_s,
            idle.peak_rss_mb.unwrap_or(0.0),
            ready.as_secs_f64()
        ));
        broker.stop(Duration::from_secs(30))?;
        self.log(format!("S6 idle: RSS {:.1} MB", idle.rss_mb.unwrap_or(0.0)));
        Ok(vec![row, idle])
    }

    fn s7(&mut self) -> anyhow::Result<Row> {
        let n = self.s.s7_webhooks;
        self.log(format!(
            "S7: one event to {} webhooks (one app; seeded with Diesel batch inserts)",
            thousands(n as f64)
        ));
        let path = self.dir.join("s7.db");
        let rport = self.rport;
        let (apps, _) =
            seed::sqlite_with_webhooks(&path, 1, n, |k| format!("http://127.0.0.1:{rport}/r/{k}"))?;
        let url = self.sqlite_url("s7");
        let mut broker = Proc::broker(&self.bin, &self.dir, "s7", &url, &self.token)?;
        broker.wait_ready("/readyz", Duration::from_secs(60))?;
        let round = self.new_round(n, 1);
        let load = Load::new();
        let cpu0 = CpuSnap::take(Some(broker.pid()));
        let us = now_us();
        let body = format!(
            r#"{{"event":"channel_live","appId":"{}","eventTime":{},"channel":{{"id":"ch-0","seq":0,"sentUs":{us},"run":{}}}}}"#,
            apps[0],
            us / 1000,
            round.run
        );
        load.started(us);
        let (status, answer) = http(broker.port, "POST", "/v1/events", Some(&self.token), &body)?;
        if status == 202 {
            load.ok(&round, 0, us);
        } else {
            load.error(format!("HTTP {status}"), us);
            self.log(format!("S7: POST /v1/events answered {status}: {answer}"));
        }
        let drain_s = self.drain("S7", &round, load.accepted.load(Relaxed) * n as u64);
        let cpu = CpuSnap::take(Some(broker.pid())).since(&cpu0);
        let mut row = Row::new(
            "S7",
            &format!("1 event -> {} webhooks", thousands(n as f64)),
        );
        row.webhooks = Some(n);
        row.peak_rss_mb = broker.peak_rss_mb();
        broker.stop(Duration::from_secs(30))?;
        let m = Measured {
            round: round.clone(),
            load,
            cpu,
            unique_at_load_end: 0,
            load_s: 0.0,
            drain_s,
        };
        let db = match seed::db_state(&url, round.run) {
            Ok(d) => Some(d),
            Err(e) => {
                row.notes
                    .push(format!("could not read the database after the run: {e:#}"));
                None
            }
        };
        self.fill(&mut row, &m, db.as_ref());
        row.load_s = None;
        row.accepted_per_s = None;
        row.delivered_during_load_per_s = None;
        if row.deliveries_received as usize >= n {
            let all = (round.last_arrival_us() - us) as f64 / 1e6;
            row.all_delivered_s = Some(all);
            row.notes.push(format!(
                "all {} delivered {all:.2} s after the POST (202 after {:.1} ms)",
                thousands(n as f64),
                row.ack_p50_ms.unwrap_or(0.0)
            ));
        } else {
            row.notes.push(format!(
                "only {} of {} delivered within the bound",
                row.deliveries_received, n
            ));
        }
        if self.s.quick {
            row.notes
                .push("quick run: far fewer webhooks than the target's 10,000".into());
        }
        self.receivers.end();
        Ok(row)
    }

    /// S8: a restart with a large backlog. Events go in while the
    /// receivers answer 503 (each channel's head is retried every 5 s, the
    /// rest waits), the broker is killed with SIGKILL and started again on
    /// the same SQLite file and instance id; then the receivers answer 204
    /// again and the backlog drains.
    fn s8(&mut self) -> anyhow::Result<Row> {
        let row = self.s8_run();
        // Also after a failure: the receivers must not stay down for the
        // scenarios that follow.
        self.receivers.end();
        row
    }

    fn s8_run(&mut self) -> anyhow::Result<Row> {
        let (events, hooks) = (self.s.s8_events, self.s.s8_webhooks);
        let owed = events * hooks;
        let label = format!(
            "SQLite, kill -9 and restart with {} deliveries pending",
            thousands(owed as f64)
        );
        self.log(format!(
            "S8: {} events x {hooks} webhooks over {} channels while the receivers answer 503; \
             kill -9; restart; receivers back to 204",
            thousands(events as f64),
            self.s.channels
        ));
        let url = self.sqlite_url("s8");
        // Heads retry rarely while the receivers are down.
        let schedule = vec!["5s"; 100].join(",");
        let extra = [
            ("BROKER_INSTANCE_ID", "bench-s8"),
            ("BROKER_RETRY_SCHEDULE", schedule.as_str()),
        ];
        self.receivers.set_down(true);
        let refused0 = self.receivers.refused.load(Relaxed);
        let mut broker = Proc::broker_with(&self.bin, &self.dir, "s8", &url, &self.token, &extra)?;
        let rss = RssSampler::start(broker.pid());
        broker.wait_ready("/readyz", Duration::from_secs(60))?;
        let app_id = self.setup_app(broker.port, hooks)?;
        // The broker sends (and meets the 503s) from the start.
        self.wait_leases_spread(
            "S8",
            std::slice::from_ref(&broker),
            hooks,
            Duration::from_secs(60),
        )?;
        let round = self.new_ordered_round(hooks, events);
        let load = Load::new();
        let bound = Duration::from_secs(300);
        let spec = Spec {
            target: Target::Ingest {
                urls: vec![format!("http://127.0.0.1:{}/v1/events", broker.port)],
                bearer: format!("Bearer {}", self.token),
                app_id,
            },
            pace: Pace::Channels {
                concurrency: self.s.concurrency,
            },
            duration: bound,
            max_events: events,
            threads: self.s.generator_threads,
            channels: self.s.channels,
            run: round.run,
        };
        let handles = load::start(spec, round.clone(), load.clone());
        let (ingest_s, finished) = self.watch("S8", &load, &round, bound, || {
            handles.iter().all(|h| h.is_finished())
        });
        if !finished {
            bail!("the ingest did not finish within {bound:?}");
        }
        for h in handles {
            let _ = h.join();
        }
        let accepted = load.accepted.load(Relaxed);
        let before_kill_hwm = broker.peak_rss_mb();
        let before_kill_sampled = rss.peak_mb();
        broker.kill9()?;
        let refused_before_kill = self.receivers.refused.load(Relaxed) - refused0;
        self.log(format!(
            "S8: {} events accepted in {ingest_s:.1} s ({} answers 503); broker killed with \
             SIGKILL; restarting it",
            thousands(accepted as f64),
            thousands(refused_before_kill as f64)
        ));
        let mut broker = Proc::broker_with(
            &self.bin,
            &self.dir,
            "s8-restarted",
            &url,
            &self.token,
            &extra,
        )?;
        rss.follow(broker.pid());
        let ready = broker.wait_ready("/readyz", Duration::from_secs(120))?;
        self.log(format!(
            "S8: restarted broker ready (/readyz 200) {:.2} s after spawn; receivers still \
             down for {:.0} s",
            ready.as_secs_f64(),
            self.s.idle_settle_s
        ));
        std::thread::sleep(Duration::from_secs_f64(self.s.idle_settle_s));
        let cpu0 = CpuSnap::take(Some(broker.pid()));
        let switch_us = now_us();
        round.mark(switch_us);
        self.receivers.set_down(false);
        let refused = self.receivers.refused.load(Relaxed) - refused0;
        self.log("S8: receivers answer 204 again; draining");
        let expected = accepted * hooks as u64;
        let drain_s = self.drain_within(
            "S8",
            &round,
            expected,
            self.s.s8_drain_bound_s,
            self.s.s8_stall_s,
        );
        let cpu = CpuSnap::take(Some(broker.pid())).since(&cpu0);
        let restarted_hwm = broker.peak_rss_mb();
        let samples = rss.samples();
        let peak = rss.peak_mb();
        broker.stop(Duration::from_secs(30))?;
        drop(rss);
        let mut row = Row::new("S8", &label);
        let db = match seed::db_state(&url, round.run) {
            Ok(d) => Some(d),
            Err(e) => {
                row.notes
                    .push(format!("could not read the database after the run: {e:#}"));
                None
            }
        };
        let m = Measured {
            round: round.clone(),
            load,
            cpu,
            unique_at_load_end: 0,
            load_s: ingest_s,
            drain_s,
        };
        self.fill(&mut row, &m, db.as_ref());
        row.webhooks = Some(hooks);
        row.ready_s = Some(ready.as_secs_f64());
        row.peak_rss_mb = peak;
        row.refused = Some(refused);
        // Nothing arrives while the receivers are down: the latency of a
        // delivery is the outage, not the broker's.
        row.delivered_during_load_per_s = None;
        (row.p50_ms, row.p99_ms, row.p999_ms) = (None, None, None);
        row.delivered_per_s = None;
        let last = round.last_arrival_us();
        if let Some(first) = round.first_arrival_after_mark_us() {
            let got = row.deliveries_received as f64;
            row.first_delivery_s = Some(first.saturating_sub(switch_us) as f64 / 1e6);
            let all_s = last.saturating_sub(switch_us) as f64 / 1e6;
            let flowing_s = last.saturating_sub(first).max(1) as f64 / 1e6;
            row.delivered_per_s = Some(got / flowing_s);
            if row.deliveries_received >= expected {
                row.all_delivered_s = Some(all_s);
            }
            let wait = first.saturating_sub(switch_us) as f64 / 1e6;
            row.notes.push(format!(
                "drain: {} deliveries at {}/s from the first arrival to the last ({:.2} s); \
                 {}/s counted from the switch back to 204 (the first arrival {wait:.2} s after \
                 it{})",
                thousands(got),
                thousands(got / flowing_s),
                flowing_s,
                thousands(got / all_s.max(1e-6)),
                if wait > 0.5 {
                    ": the channels' heads wait for their next 5 s retry"
                } else {
                    ""
                }
            ));
        }
        let mb = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} MB"));
        row.notes.push(format!(
            "ingest while the receivers answered 503: {}/s; time to ready after the kill {:.2} s; \
             peak RSS {} (VmRSS sampled every 100 ms over the whole scenario, {samples} samples; \
             VmHWM {} before the kill, {} of the restarted broker); {} answers 503 in all; \
             broker CPU over the drain {:.2} s",
            thousands(row.accepted_per_s.unwrap_or(0.0)),
            ready.as_secs_f64(),
            mb(peak),
            mb(before_kill_hwm),
            mb(restarted_hwm),
            thousands(refused as f64),
            row.cpu_s.unwrap_or(0.0)
        ));
        if before_kill_sampled.is_some() && peak > before_kill_sampled {
            row.notes
                .push("the peak came after the restart (the backlog's reload or drain)".into());
        } else if peak.is_some() {
            row.notes.push(
                "the peak came before the kill (ingest while the receivers were down)".into(),
            );
        }
        if self.s.quick {
            row.notes.push(format!(
                "quick run: {} deliveries pending instead of 100,000",
                thousands(owed as f64)
            ));
        }
        self.receivers.end();
        Ok(row)
    }

    /// S9: 1, 2 and 3 broker instances on one fresh MariaDB database each
    /// time, the load spread over them in turn.
    fn s9(&mut self, server: &str) -> Vec<Row> {
        let counts = self.s.s9_instances.clone();
        let hooks = self.s.s9_webhooks;
        let label = |n: usize| {
            format!(
                "MariaDB, {n} instance{}, 1 event -> {hooks} webhooks",
                if n == 1 { "" } else { "s" },
            )
        };
        let version = match self.mysql_server("S9", server) {
            Ok(v) => v,
            Err(why) => {
                return counts
                    .iter()
                    .map(|&n| {
                        let mut r = Row::new(&format!("S9/{n}"), &label(n));
                        r.skipped = Some(why.clone());
                        r
                    })
                    .collect()
            }
        };
        let mut rows = Vec::new();
        for n in counts {
            let (id, label) = (format!("S9/{n}"), label(n));
            match self.s9_round(&id, &label, server, n) {
                Ok(mut r) => {
                    r.notes.push(format!("server version {version}"));
                    rows.push(r);
                }
                Err(e) => {
                    eprintln!("error in {id}: {e:#}");
                    let mut r = Row::new(&id, &label);
                    r.error = Some(format!("{e:#}").lines().next().unwrap_or("").to_owned());
                    rows.push(r);
                }
            }
            self.receivers.end();
        }
        rows
    }

    fn s9_round(&mut self, id: &str, label: &str, server: &str, n: usize) -> anyhow::Result<Row> {
        let hooks = self.s.s9_webhooks;
        self.log(format!("{id}: {label}"));
        let db = seed::MysqlDb::create(server)?;
        let mut brokers = Vec::with_capacity(n);
        // One after another: the first creates the schema.
        for i in 0..n {
            let instance = format!("bench-s9-{i}");
            let mut broker = Proc::broker_with(
                &self.bin,
                &self.dir,
                &format!("s9-{n}-{i}"),
                &db.url,
                &self.token,
                &[("BROKER_INSTANCE_ID", instance.as_str())],
            )?;
            broker.wait_ready("/readyz", Duration::from_secs(60))?;
            brokers.push(broker);
        }
        let app_id = self.setup_app(brokers[0].port, hooks)?;
        let spread = self.wait_leases_spread(id, &brokers, hooks, Duration::from_secs(90))?;
        let target = Target::Ingest {
            urls: brokers
                .iter()
                .map(|b| format!("http://127.0.0.1:{}/v1/events", b.port))
                .collect(),
            bearer: format!("Bearer {}", self.token),
            app_id,
        };
        let pids: Vec<u32> = brokers.iter().map(|b| b.pid()).collect();
        let pace = Pace::Channels {
            concurrency: self.s.concurrency,
        };
        let cap = self.s.max_events_10_webhooks;
        let m = self.http_phase(id, target, pace, hooks, cap, &pids);
        let after = lease_counts(&brokers);
        let mut row = Row::new(id, label);
        row.instances = Some(n);
        row.webhooks = Some(hooks);
        row.peak_rss_mb = brokers
            .iter()
            .filter_map(|b| b.peak_rss_mb())
            .reduce(f64::max);
        let rss: Vec<String> = brokers
            .iter()
            .map(|b| b.peak_rss_mb().map_or("–".into(), |v| format!("{v:.0}")))
            .collect();
        for b in &mut brokers {
            b.stop(Duration::from_secs(30))?;
        }
        let state = match seed::db_state(&db.url, m.round.run) {
            Ok(d) => Some(d),
            Err(e) => {
                row.notes
                    .push(format!("could not read the database after the run: {e:#}"));
                None
            }
        };
        self.fill(&mut row, &m, state.as_ref());
        row.notes.push(format!(
            "leases spread {:.1} s after the webhooks were made ({}); after the load: {}; \
             peak RSS per instance {} MB; CPU is the sum over the instances ({:.1} s), {:.3} s \
             per 1,000 deliveries",
            spread.0.as_secs_f64(),
            show_counts(&spread.1),
            show_counts(&after),
            rss.join(" / "),
            row.cpu_s.unwrap_or(0.0),
            row.cpu_s_per_1k.unwrap_or(0.0)
        ));
        drop(db);
        Ok(row)
    }

    /// Waits until the instances hold all `hooks` leases between them,
    /// none more than its fair share (ceil(hooks / instances)) and each at
    /// least one (when there are no more instances than webhooks); answers
    /// how long it took and each one's count.
    fn wait_leases_spread(
        &self,
        id: &str,
        brokers: &[Proc],
        hooks: usize,
        within: Duration,
    ) -> anyhow::Result<(Duration, Vec<Option<u64>>)> {
        let t0 = Instant::now();
        let mut next = t0 + Duration::from_secs(2);
        loop {
            let counts = lease_counts(brokers);
            let sum: u64 = counts.iter().flatten().sum();
            // Settled: every instance within its fair share (ceil), so
            // none is about to shed leases during the load; and, when there
            // are no more instances than webhooks, every one holds some.
            let share = hooks.div_ceil(brokers.len().max(1)) as u64;
            let each = counts
                .iter()
                .all(|c| c.is_some_and(|c| c <= share && (brokers.len() > hooks || c > 0)));
            if sum == hooks as u64 && each {
                self.log(format!(
                    "{id}: leases spread in {:.1} s: {}",
                    t0.elapsed().as_secs_f64(),
                    show_counts(&counts)
                ));
                return Ok((t0.elapsed(), counts));
            }
            if t0.elapsed() > within {
                bail!(
                    "the {hooks} webhook leases were not spread over the {} instances within \
                     {within:?}: {}",
                    brokers.len(),
                    show_counts(&counts)
                );
            }
            if Instant::now() >= next {
                next += Duration::from_secs(2);
                self.log(format!(
                    "{id}: waiting for the leases to spread: {}",
                    show_counts(&counts)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The gauge of webhook leases each instance holds (`None`: unreadable).
fn lease_counts(brokers: &[Proc]) -> Vec<Option<u64>> {
    brokers
        .iter()
        .map(|b| {
            util::gauge(b.port, "webhook_broker_webhook_leases_held")
                .ok()
                .map(|v| v as u64)
        })
        .collect()
}

/// "5 + 5": the instances' lease counts.
fn show_counts(counts: &[Option<u64>]) -> String {
    counts
        .iter()
        .map(|c| c.map_or("?".into(), |c| c.to_string()))
        .collect::<Vec<_>>()
        .join(" + ")
}
