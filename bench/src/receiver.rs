//! The fast receivers: one actix-web server answering 204 on `/r/{k}` (one
//! path per webhook), timestamping every arrival and counting it per
//! (seq, k) slot of the current round, so duplicates and losses show.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;

use crate::util::now_us;

/// The fields the benchmark puts in every event (`seq`, `sentUs`, `run` in
/// the channel object) and the broker's `eventTime`.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "eventTime")]
    event_time: i64,
    seq: u64,
    #[serde(rename = "sentUs")]
    sent_us: u64,
    run: u32,
}

/// One arrival's end-to-end latency.
#[derive(Clone, Copy)]
pub struct Lat {
    /// Arrival minus the send time in microseconds (`sentUs`, the
    /// eventTime at µs resolution).
    pub us: u32,
    /// Arrival minus `eventTime` as delivered, both in whole milliseconds.
    pub ms: u32,
}

/// What one scenario expects and what arrived.
pub struct Round {
    pub run: u32,
    pub hooks: usize,
    pub max_events: usize,
    slots: Box<[AtomicU16]>,
    accepted: Box<[AtomicBool]>,
    pub arrivals: AtomicU64,
    pub unique: AtomicU64,
    pub stray: AtomicU64,
    pub malformed: AtomicU64,
    last_us: AtomicU64,
    lats: Mutex<Vec<Lat>>,
}

impl Round {
    pub fn new(run: u32, hooks: usize, max_events: usize) -> Arc<Round> {
        let n = hooks * max_events;
        Arc::new(Round {
            run,
            hooks,
            max_events,
            slots: (0..n).map(|_| AtomicU16::new(0)).collect(),
            accepted: (0..max_events).map(|_| AtomicBool::new(false)).collect(),
            arrivals: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            lats: Mutex::new(Vec::with_capacity(n.min(1 << 20))),
        })
    }

    /// The load generator got a 2xx (or Ok) for `seq`.
    pub fn mark_accepted(&self, seq: u64) {
        if let Some(a) = self.accepted.get(seq as usize) {
            a.store(true, Relaxed);
        }
    }

    fn record(&self, k: usize, body: &[u8], now: u64) {
        let Ok(p) = serde_json::from_slice::<Probe>(body) else {
            self.malformed.fetch_add(1, Relaxed);
            return;
        };
        if p.run != self.run || p.seq as usize >= self.max_events || k >= self.hooks {
            self.stray.fetch_add(1, Relaxed);
            return;
        }
        let prev = self.slots[p.seq as usize * self.hooks + k].fetch_add(1, Relaxed);
        self.arrivals.fetch_add(1, Relaxed);
        if prev == 0 {
            self.unique.fetch_add(1, Relaxed);
        }
        self.last_us.fetch_max(now, Relaxed);
        let us = now.saturating_sub(p.sent_us).min(u32::MAX as u64) as u32;
        let ms = ((now / 1000) as i64 - p.event_time).clamp(0, u32::MAX as i64) as u32;
        self.lats.lock().expect("latency lock").push(Lat { us, ms });
    }

    /// Time of the last arrival, epoch µs (0 if none).
    pub fn last_arrival_us(&self) -> u64 {
        self.last_us.load(Relaxed)
    }

    /// The latencies seen so far, sorted (µs) and (ms).
    pub fn latencies(&self) -> (Vec<u32>, Vec<u32>) {
        let lats = self.lats.lock().expect("latency lock");
        let mut us: Vec<u32> = lats.iter().map(|l| l.us).collect();
        let mut ms: Vec<u32> = lats.iter().map(|l| l.ms).collect();
        us.sort_unstable();
        ms.sort_unstable();
        (us, ms)
    }

    /// Every accepted event against what arrived.
    pub fn account(&self) -> Accounting {
        let mut a = Accounting::default();
        for (seq, acc) in self.accepted.iter().enumerate() {
            let accepted = acc.load(Relaxed);
            if accepted {
                a.accepted += 1;
            }
            for k in 0..self.hooks {
                let c = self.slots[seq * self.hooks + k].load(Relaxed) as u64;
                if c > 1 {
                    a.duplicates += c - 1;
                }
                if accepted {
                    a.expected += 1;
                    if c == 0 {
                        a.missing.push((seq as u64, k));
                    }
                } else if c > 0 {
                    a.unacknowledged_delivered += 1;
                }
            }
        }
        a
    }
}

/// The balance of one round.
#[derive(Default, Debug)]
pub struct Accounting {
    /// Events acknowledged to the load generator.
    pub accepted: u64,
    /// Deliveries those events owe (accepted x hooks).
    pub expected: u64,
    /// Arrivals beyond the first of a (seq, webhook).
    pub duplicates: u64,
    /// Owed deliveries that did not arrive: (seq, webhook index).
    pub missing: Vec<(u64, usize)>,
    /// Deliveries of events whose ingest did not answer 2xx.
    pub unacknowledged_delivered: u64,
}

/// The receiver server's shared state: the current round, if any.
#[derive(Default)]
pub struct Receivers {
    current: RwLock<Option<Arc<Round>>>,
}

impl Receivers {
    pub fn begin(&self, round: Arc<Round>) {
        *self.current.write().expect("round lock") = Some(round);
    }

    pub fn end(&self) {
        *self.current.write().expect("round lock") = None;
    }

    fn round(&self) -> Option<Arc<Round>> {
        self.current.read().expect("round lock").clone()
    }
}

async fn receive(
    path: web::Path<usize>,
    body: web::Bytes,
    state: web::Data<Arc<Receivers>>,
) -> HttpResponse {
    let now = now_us();
    if let Some(round) = state.round() {
        round.record(path.into_inner(), &body, now);
    }
    HttpResponse::NoContent().finish()
}

/// Starts the receivers on 127.0.0.1 in their own thread and actix System;
/// returns their port.
pub fn start(state: Arc<Receivers>, workers: usize) -> anyhow::Result<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("receivers".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::new(state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .route("/r/{k}", web::post().to(receive))
                })
                .workers(workers)
                .backlog(4096)
                .disable_signals()
                .bind(("127.0.0.1", 0));
                let server = match server {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let port = server.addrs()[0].port();
                let running = server.run();
                let _ = tx.send(Ok(port));
                let _ = running.await;
            })
        })?;
    Ok(rx.recv()??)
}
