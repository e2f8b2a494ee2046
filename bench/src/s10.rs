//! S10: a receiver that is down must cost neither memory nor the other
//! webhooks' latency (issue 9, section 1, the second acceptance test).
//! One app's webhook answers 503 while its events go in at a steady
//! 4,000/s (200,000 of them); another app's webhook answers 204 and gets a
//! steady 1,000 events/s at the same time. Measured: the broker's peak RSS
//! over the whole scenario and the healthy webhook's end-to-end latency;
//! checked afterwards in the database: every accepted event of the down
//! webhook is stored as a delivery, nothing dropped.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::bail;

use crate::load::{self, Load, Pace, Spec, Target};
use crate::procs::{Proc, RssSampler};
use crate::receiver::Round;
use crate::report::Row;
use crate::util::{thousands, CpuSnap};
use crate::{seed, slug, Bench, Measured};

/// The receiver path of the healthy webhook, and of the one that is down.
const HEALTHY: usize = 0;
const DOWN: usize = 1;

impl Bench {
    /// S10 on SQLite (`mysql: None`) or on a fresh database of that server.
    pub(crate) fn s10(
        &mut self,
        id: &str,
        label: &str,
        mysql: Option<&str>,
    ) -> anyhow::Result<Row> {
        self.receivers.set_path_down(DOWN, true);
        let row = self.s10_run(id, label, mysql);
        self.receivers.end();
        row
    }

    fn s10_run(&mut self, id: &str, label: &str, mysql: Option<&str>) -> anyhow::Result<Row> {
        let (down_events, down_rate, healthy_rate) = (
            self.s.s10_down_events,
            self.s.s10_down_rate,
            self.s.s10_healthy_rate,
        );
        let phase = Duration::from_secs_f64(down_events as f64 / down_rate);
        self.log(format!(
            "{id}: {} events at {}/s for a webhook whose receiver answers 503, and {}/s for a \
             healthy one, for {:.0} s",
            thousands(down_events as f64),
            thousands(down_rate),
            thousands(healthy_rate),
            phase.as_secs_f64()
        ));
        let mysql_db = mysql.map(seed::MysqlDb::create).transpose()?;
        let url = match &mysql_db {
            Some(db) => db.url.clone(),
            None => self.sqlite_url(&slug(id)),
        };
        let mut broker = Proc::broker_with(
            &self.bin,
            &self.dir,
            &slug(id),
            &url,
            &self.token,
            &[("BROKER_INSTANCE_ID", "bench-s10")],
        )?;
        let rss = RssSampler::start(broker.pid());
        broker.wait_ready("/readyz", Duration::from_secs(60))?;
        let healthy_app = self.setup_app_at(broker.port, &[HEALTHY])?;
        let down_app = self.setup_app_at(broker.port, &[DOWN])?;
        self.wait_leases_spread(
            id,
            std::slice::from_ref(&broker),
            2,
            Duration::from_secs(60),
        )?;

        let healthy_cap = (healthy_rate * phase.as_secs_f64()) as usize + 10;
        let round = self.new_round(1, healthy_cap);
        // The down webhook's events belong to a round of their own that
        // the receivers never see: none of them may arrive.
        self.next_run += 1;
        let down_round = Round::new(self.next_run, 1, down_events);
        let ingest = |app_id: String| Target::Ingest {
            urls: vec![format!("http://127.0.0.1:{}/v1/events", broker.port)],
            bearer: format!("Bearer {}", self.token),
            app_id,
        };
        let spec = |target, rate, max_events, run| Spec {
            target,
            pace: Pace::Paced {
                rate,
                max_outstanding: 2000,
            },
            duration: phase,
            max_events,
            threads: self.s.generator_threads,
            channels: self.s.channels,
            run,
        };
        let (load, down_load) = (Load::new(), Load::new());
        let cpu0 = CpuSnap::take(Some(broker.pid()));
        let mut handles = load::start(
            spec(ingest(healthy_app), healthy_rate, healthy_cap, round.run),
            round.clone(),
            load.clone(),
        );
        handles.extend(load::start(
            spec(ingest(down_app), down_rate, down_events, down_round.run),
            down_round.clone(),
            down_load.clone(),
        ));
        let limit = phase + Duration::from_secs(60);
        let (load_s, finished) = self.watch(id, &down_load, &round, limit, || {
            handles.iter().all(|h| h.is_finished())
        });
        if !finished {
            bail!("the ingest did not finish within {limit:?}");
        }
        for h in handles {
            let _ = h.join();
        }
        let unique_at_load_end = round.unique.load(Relaxed);
        let drain_s = self.drain(id, &round, load.accepted.load(Relaxed));
        let cpu = CpuSnap::take(Some(broker.pid())).since(&cpu0);
        let peak = rss.peak_mb();
        let samples = rss.samples();
        broker.stop(Duration::from_secs(30))?;
        drop(rss);

        let mut row = Row::new(id, label);
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
            unique_at_load_end,
            load_s,
            drain_s,
        };
        self.fill(&mut row, &m, db.as_ref());
        row.webhooks = Some(2);
        row.peak_rss_mb = peak;
        let down_accepted = down_load.accepted.load(Relaxed);
        let stray = down_round.unique.load(Relaxed);
        row.down_accepted_per_s = down_load
            .window()
            .map(|(first, last)| down_accepted as f64 / ((last - first).max(1) as f64 / 1e6));
        // Every accepted event owes one delivery row: the healthy
        // webhook's are counted by the round, the down one's only here.
        if let Some(d) = &db {
            let rows: i64 = d
                .counts
                .iter()
                .filter(|(k, _)| k.as_str() != "events")
                .map(|(_, n)| n)
                .sum();
            let owed = row.events_accepted + down_accepted;
            let missing = owed.saturating_sub(rows.max(0) as u64);
            row.lost += missing;
            row.notes.push(format!(
                "the down webhook: {} events accepted at {}/s (over the load phase), all stored: {} delivery rows for \
                 {} accepted events in all{}",
                thousands(down_accepted as f64),
                thousands(down_accepted as f64 / load_s.max(1e-6)),
                thousands(rows as f64),
                thousands(owed as f64),
                if missing > 0 {
                    format!(" ({missing} MISSING)")
                } else {
                    String::new()
                }
            ));
        }
        if down_load.failed.load(Relaxed) > 0 {
            row.notes.push(format!(
                "the down webhook's ingest: {} errors {:?}",
                down_load.failed.load(Relaxed),
                down_load.errors()
            ));
        }
        if down_load.behind.load(Relaxed) > 0 {
            row.notes.push(format!(
                "the paced sender fell behind {}/s for the down webhook: {} sends skipped",
                thousands(down_rate),
                down_load.behind.load(Relaxed)
            ));
        }
        if stray > 0 {
            row.notes.push(format!(
                "{stray} deliveries reached the receiver that was down"
            ));
        }
        row.notes.push(format!(
            "peak RSS {} (VmRSS sampled every 100 ms over the whole scenario, {samples} samples); \
             the healthy webhook's p99 {} over {} deliveries",
            peak.map_or("–".into(), |v| format!("{v:.0} MB")),
            row.p99_ms.map_or("–".into(), |v| format!("{v:.2} ms")),
            thousands(row.deliveries_received as f64)
        ));
        if self.s.quick {
            row.notes.push(format!(
                "quick run: {} events for the down webhook instead of 200,000",
                thousands(down_events as f64)
            ));
        }
        drop(mysql_db);
        Ok(row)
    }
}
