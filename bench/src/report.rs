//! Rows, targets and verdicts, the markdown table and the JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::util::thousands;

/// One scenario or baseline, everything measured for it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Row {
    /// `awc`, `relay`, `S1`, ..., `S4/S1`, `S6 idle`.
    pub id: String,
    pub label: String,
    /// Events answered 2xx per second of the load phase.
    pub accepted_per_s: Option<f64>,
    /// Distinct deliveries received per second, from the first send to the
    /// last arrival (what is sustained, backlog included).
    pub delivered_per_s: Option<f64>,
    /// Distinct deliveries received while the load ran, per second of it.
    pub delivered_during_load_per_s: Option<f64>,
    /// End-to-end latency: arrival minus the send time (eventTime at µs
    /// resolution, carried as `sentUs`).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// The same from the delivered `eventTime` (whole ms) to arrival (whole ms).
    pub event_time_p50_ms: Option<f64>,
    pub event_time_p99_ms: Option<f64>,
    pub event_time_p999_ms: Option<f64>,
    /// Ingest answer time (send to 202).
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// Broker (or relay) CPU seconds, utime+stime, over load and drain.
    pub cpu_s: Option<f64>,
    pub cpu_s_per_10k: Option<f64>,
    /// VmHWM of the broker (or relay), MB.
    pub peak_rss_mb: Option<f64>,
    /// VmRSS at the measuring moment, MB (S6).
    pub rss_mb: Option<f64>,
    /// CPU seconds of the bench process itself (load generator, receivers).
    pub bench_cpu_s: Option<f64>,
    /// CPU seconds of the MariaDB/MySQL server over the same window.
    pub database_cpu_s: Option<f64>,
    /// CPU seconds of every other process on the machine over the same
    /// window (other builds, tests), and their share of its capacity.
    pub other_cpu_s: Option<f64>,
    pub other_cpu_share: Option<f64>,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub duplicates: u64,
    /// Accepted, not received, and not pending in the database either.
    pub lost: u64,
    /// Accepted, not received within the bound, still pending (durable) in
    /// the database when the broker stopped.
    pub backlog: u64,
    /// Received, but still `pending` in the database when the broker
    /// stopped: the outcome was not recorded yet.
    pub unrecorded: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Received deliveries of events whose ingest did not answer 2xx.
    pub unacknowledged_delivered: u64,
    /// Arrivals not belonging to the round.
    pub stray: u64,
    /// Paced sends skipped because too many were in flight.
    pub behind: u64,
    pub load_s: Option<f64>,
    pub drain_s: Option<f64>,
    pub webhooks: Option<usize>,
    pub build_s: Option<f64>,
    pub ready_s: Option<f64>,
    pub all_delivered_s: Option<f64>,
    /// Broker instances sharing the database (S9).
    pub instances: Option<usize>,
    /// First arrivals of a (webhook, channel) below a seq that had already
    /// arrived (S8, S9, whose loaders keep each channel's events in order).
    pub order_violations: Option<u64>,
    /// Broker CPU seconds per 1,000 deliveries received (S9: all instances).
    pub cpu_s_per_1k: Option<f64>,
    /// S8: receivers' 503 answers while "down".
    pub refused: Option<u64>,
    /// S10: events accepted per second for the webhook whose receiver is
    /// down (the healthy one's are `accepted_per_s`).
    pub down_accepted_per_s: Option<f64>,
    /// S8: from the receivers' switch back to 204 to the first arrival.
    pub first_delivery_s: Option<f64>,
    /// The first few duplicate arrivals, described (event, webhook,
    /// channel, delivery id, time after the first arrival).
    pub duplicate_samples: Vec<String>,
    pub db: BTreeMap<String, i64>,
    pub vs_awc: Option<f64>,
    pub vs_relay: Option<f64>,
    pub target: String,
    pub result: String,
    pub met: Option<bool>,
    pub skipped: Option<String>,
    pub error: Option<String>,
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(id: &str, label: &str) -> Row {
        Row {
            id: id.into(),
            label: label.into(),
            ..Row::default()
        }
    }
}

struct Check {
    ok: bool,
    text: String,
}

fn at_least(what: &str, v: Option<f64>, min: f64, show: impl Fn(f64) -> String) -> Check {
    match v {
        None => Check {
            ok: false,
            text: format!("{what} not measured"),
        },
        Some(v) if v >= min => Check {
            ok: true,
            text: format!("{what} {}", show(v)),
        },
        Some(v) => Check {
            ok: false,
            text: format!(
                "{what} {} < {} (short by {}, {:.0}%)",
                show(v),
                show(min),
                show(min - v),
                (min - v) / min * 100.0
            ),
        },
    }
}

fn at_most(what: &str, v: Option<f64>, max: f64, show: impl Fn(f64) -> String) -> Check {
    match v {
        None => Check {
            ok: false,
            text: format!("{what} not measured"),
        },
        Some(v) if v <= max => Check {
            ok: true,
            text: format!("{what} {}", show(v)),
        },
        Some(v) => Check {
            ok: false,
            text: format!(
                "{what} {} > {} (over by {}, {:.1}x)",
                show(v),
                show(max),
                show(v - max),
                v / max
            ),
        },
    }
}

fn per_s(v: f64) -> String {
    format!("{}/s", thousands(v))
}
fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}
fn secs(v: f64) -> String {
    format!("{v:.2} s")
}
fn mb(v: f64) -> String {
    format!("{v:.0} MB")
}
fn ratio(v: f64) -> String {
    format!("{v:.2}x")
}

fn no_order_violations(v: Option<u64>) -> Check {
    match v {
        None => Check {
            ok: false,
            text: "channel order not checked".into(),
        },
        Some(0) => Check {
            ok: true,
            text: "0 order violations".into(),
        },
        Some(n) => Check {
            ok: false,
            text: format!("{n} deliveries out of channel order"),
        },
    }
}

/// Figures shown after the verdict whatever it is (S8, S9 have no speed
/// target of issue 5).
fn figures(r: &Row) -> Vec<String> {
    let mut out = Vec::new();
    if r.id == "S8" {
        if let Some(v) = r.ready_s {
            out.push(format!("ready {}", secs(v)));
        }
        if let Some(v) = r.peak_rss_mb {
            out.push(format!("peak RSS {}", mb(v)));
        }
        if let Some(v) = r.delivered_per_s {
            out.push(format!("drain {}", per_s(v)));
        }
        if let Some(v) = r.all_delivered_s {
            out.push(format!("all in {} after the switch", secs(v)));
        }
    } else if r.id.starts_with("S9") {
        if let Some(v) = r.cpu_s_per_1k {
            out.push(format!("CPU {v:.3} s/1k deliveries"));
        }
    }
    out
}

/// Fills ratios, targets and verdicts.
pub fn judge(rows: &mut [Row], quick: bool) {
    let base = |id: &str, rows: &[Row]| {
        rows.iter()
            .find(|r| r.id == id && r.error.is_none())
            .and_then(|r| r.delivered_per_s)
    };
    let (awc, relay) = (base("awc", rows), base("relay", rows));
    for r in rows.iter_mut() {
        if matches!(
            r.id.as_str(),
            "S1" | "S2" | "S4/S1" | "S4/S2" | "S5" | "relay"
        ) {
            if let Some(d) = r.delivered_per_s {
                r.vs_awc = awc.map(|a| d / a);
                if r.id != "relay" {
                    r.vs_relay = relay.map(|b| d / b);
                }
            }
        }
        let (target, checks): (&str, Vec<Check>) = match r.id.as_str() {
            "awc" | "relay" => ("baseline", vec![]),
            "S1" => (
                ">= 10,000 ev/s delivered, >= 0.5 of relay",
                vec![
                    at_least("", r.delivered_per_s, 10_000.0, per_s),
                    at_least("relay", r.vs_relay, 0.5, ratio),
                ],
            ),
            "S2" => (
                ">= 30,000 deliveries/s",
                vec![at_least("", r.delivered_per_s, 30_000.0, per_s)],
            ),
            "S3" => (
                "p50 <= 3 ms, p99 <= 10 ms",
                vec![
                    at_most("p50", r.p50_ms, 3.0, ms),
                    at_most("p99", r.p99_ms, 10.0, ms),
                ],
            ),
            "S4/S1" => (
                ">= 5,000 ev/s",
                vec![at_least("", r.delivered_per_s, 5_000.0, per_s)],
            ),
            "S4/S2" => (
                ">= 10,000 deliveries/s",
                vec![at_least("", r.delivered_per_s, 10_000.0, per_s)],
            ),
            "S5" => (
                ">= 20,000 ev/s",
                vec![at_least("", r.delivered_per_s, 20_000.0, per_s)],
            ),
            "S6" => (
                "ready <= 2 s, RSS <= 150 MB",
                vec![
                    at_most("ready", r.ready_s, 2.0, secs),
                    at_most("RSS", r.peak_rss_mb, 150.0, mb),
                ],
            ),
            "S6 idle" => (
                "idle RSS <= 30 MB",
                vec![at_most("RSS", r.rss_mb, 30.0, mb)],
            ),
            "S7" => (
                "all 10,000 delivered <= 2 s",
                vec![at_most("all in", r.all_delivered_s, 2.0, secs)],
            ),
            "S10" | "S10/MariaDB" => (
                "RSS <= 200 MB, healthy p99 <= 50 ms at 4,000 + 1,000 ev/s, nothing lost",
                vec![
                    at_most("RSS", r.peak_rss_mb, 200.0, mb),
                    at_most("healthy p99", r.p99_ms, 50.0, ms),
                    // The pace held: 4,000 ev/s less 2% for the ramp.
                    at_least("down ingest", r.down_accepted_per_s, 3_920.0, per_s),
                ],
            ),
            "S8" | "S9/1" | "S9/2" | "S9/3" => (
                "in channel order, nothing lost",
                vec![no_order_violations(r.order_violations)],
            ),
            _ => ("", vec![]),
        };
        r.target = target.into();
        if let Some(why) = &r.skipped {
            r.result = format!("skipped: {why}");
            continue;
        }
        if let Some(e) = &r.error {
            r.result = format!("ERROR: {e}");
            r.met = Some(false);
            continue;
        }
        let mut result = if checks.is_empty() {
            String::from("–")
        } else {
            let ok = checks.iter().all(|c| c.ok);
            r.met = Some(ok);
            let texts: Vec<String> = checks
                .iter()
                .filter(|c| ok || !c.ok)
                .map(|c| c.text.trim().to_owned())
                .collect();
            format!(
                "{} {}",
                if ok { "met:" } else { "missed:" },
                texts.join("; ")
            )
        };
        if r.lost > 0 {
            r.met = Some(false);
            result = format!("LOST {} accepted deliveries; {result}", r.lost);
        }
        if r.unrecorded > 0 && r.deliveries_received > 0 {
            result.push_str(&format!(
                "; but {} of {} delivered ({:.0}%) still unrecorded in the DB at stop",
                thousands(r.unrecorded as f64),
                thousands(r.deliveries_received as f64),
                r.unrecorded as f64 / r.deliveries_received as f64 * 100.0
            ));
        }
        for f in figures(r) {
            result.push_str(&format!("; {f}"));
        }
        if quick && !checks.is_empty() {
            result.push_str(" (quick)");
        }
        r.result = result;
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// The markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Scenario | Accepted ev/s | Delivered/s | p50 ms | p99 ms | p99.9 ms | CPU s/10k del | Peak RSS MB | err / dup / lost | vs awc | vs relay | Target | Result |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let counts = if r.skipped.is_some() || r.events_sent == 0 {
            "–".into()
        } else {
            format!("{} / {} / {}", r.errors, r.duplicates, r.lost)
        };
        out.push_str(&format!(
            "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.id,
            r.label,
            opt(r.accepted_per_s, thousands),
            opt(r.delivered_per_s, thousands),
            opt(r.p50_ms, |v| format!("{v:.2}")),
            opt(r.p99_ms, |v| format!("{v:.2}")),
            opt(r.p999_ms, |v| format!("{v:.2}")),
            opt(r.cpu_s_per_10k, |v| format!("{v:.2}")),
            opt(r.peak_rss_mb, |v| format!("{v:.0}")),
            counts,
            opt(r.vs_awc, |v| format!("{v:.2}")),
            opt(r.vs_relay, |v| format!("{v:.2}")),
            r.target,
            r.result.replace('|', "/"),
        ));
    }
    out
}
