//! The fast receivers: one actix-web server answering 204 on `/r/{k}` (one
//! path per webhook), timestamping every arrival and counting it per
//! (seq, k) slot of the current round, so duplicates and losses show. A
//! switch makes them answer 503 instead (a receiver that is down: S8), and
//! a round can check that each webhook's first arrivals of a channel come
//! in increasing seq (S8, S9).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
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
    /// First arrival after [`Round::mark`], epoch µs (`u64::MAX`: none yet).
    first_after_mark_us: AtomicU64,
    mark_us: AtomicU64,
    lats: Mutex<Vec<Lat>>,
    /// With order checking: the channel count and, per (webhook, channel),
    /// the highest seq + 1 whose first arrival was seen.
    order: Option<(u64, Box<[AtomicU64]>)>,
    /// First arrivals of a (webhook, channel) whose seq is below one that
    /// arrived before them.
    pub order_violations: AtomicU64,
    /// With order checking: each slot's first arrival, ms after the
    /// round began (0: none), to time the duplicates.
    first_ms: Box<[AtomicU32]>,
    began_us: u64,
    /// The first few duplicates, described.
    duplicate_samples: Mutex<Vec<String>>,
}

/// How many duplicates a round describes.
const DUPLICATE_SAMPLES: usize = 20;

impl Round {
    pub fn new(run: u32, hooks: usize, max_events: usize) -> Arc<Round> {
        Round::build(run, hooks, max_events, None)
    }

    /// A round that also checks channel order: event `seq` is on channel
    /// `seq % channels` (as the load generator builds it), and each
    /// webhook's first arrivals of a channel must come in increasing seq.
    pub fn ordered(run: u32, hooks: usize, max_events: usize, channels: u64) -> Arc<Round> {
        Round::build(run, hooks, max_events, Some(channels.max(1)))
    }

    fn build(run: u32, hooks: usize, max_events: usize, channels: Option<u64>) -> Arc<Round> {
        let n = hooks * max_events;
        let order = channels.map(|c| {
            let cells = hooks * c as usize;
            (c, (0..cells).map(|_| AtomicU64::new(0)).collect())
        });
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
            first_after_mark_us: AtomicU64::new(u64::MAX),
            mark_us: AtomicU64::new(u64::MAX),
            lats: Mutex::new(Vec::with_capacity(n.min(1 << 20))),
            first_ms: match channels {
                Some(_) => (0..n).map(|_| AtomicU32::new(0)).collect(),
                None => Box::new([]),
            },
            began_us: now_us(),
            order,
            order_violations: AtomicU64::new(0),
            duplicate_samples: Mutex::new(Vec::new()),
        })
    }

    /// Whether this round checks channel order.
    pub fn checks_order(&self) -> bool {
        self.order.is_some()
    }

    /// Notes the moment `us` (epoch µs): [`Round::first_arrival_after_mark_us`]
    /// then answers the first arrival from it on.
    pub fn mark(&self, us: u64) {
        self.first_after_mark_us.store(u64::MAX, Relaxed);
        self.mark_us.store(us, Relaxed);
    }

    /// The first arrival at or after the last [`Round::mark`], epoch µs.
    pub fn first_arrival_after_mark_us(&self) -> Option<u64> {
        let us = self.first_after_mark_us.load(Relaxed);
        (us != u64::MAX).then_some(us)
    }

    /// The load generator got a 2xx (or Ok) for `seq`.
    pub fn mark_accepted(&self, seq: u64) {
        if let Some(a) = self.accepted.get(seq as usize) {
            a.store(true, Relaxed);
        }
    }

    /// Descriptions of the first duplicates: event, webhook, channel,
    /// `webhook-id`, and how long after the first arrival (ordered rounds).
    pub fn duplicate_samples(&self) -> Vec<String> {
        self.duplicate_samples.lock().expect("samples lock").clone()
    }

    fn record(&self, k: usize, body: &[u8], now: u64, delivery_id: &str) {
        let Ok(p) = serde_json::from_slice::<Probe>(body) else {
            self.malformed.fetch_add(1, Relaxed);
            return;
        };
        if p.run != self.run || p.seq as usize >= self.max_events || k >= self.hooks {
            self.stray.fetch_add(1, Relaxed);
            return;
        }
        let slot = p.seq as usize * self.hooks + k;
        let prev = self.slots[slot].fetch_add(1, Relaxed);
        self.arrivals.fetch_add(1, Relaxed);
        let since_ms = (now.saturating_sub(self.began_us) / 1000).clamp(1, u32::MAX as u64) as u32;
        if prev == 0 {
            if let Some(first) = self.first_ms.get(slot) {
                first.store(since_ms, Relaxed);
            }
        } else {
            let mut samples = self.duplicate_samples.lock().expect("samples lock");
            if samples.len() < DUPLICATE_SAMPLES {
                let after = match self.first_ms.get(slot).map(|f| f.load(Relaxed)) {
                    Some(f) if f > 0 => {
                        format!(", {} ms after the first", since_ms.saturating_sub(f))
                    }
                    _ => String::new(),
                };
                let channel = self
                    .order
                    .as_ref()
                    .map_or(String::new(), |(c, _)| format!(" channel ch-{}", p.seq % c));
                samples.push(format!(
                    "seq {} webhook {k}{channel} webhook-id {delivery_id}: arrival {}{after}",
                    p.seq,
                    prev + 1
                ));
            }
        }
        if prev == 0 {
            self.unique.fetch_add(1, Relaxed);
            if let Some((channels, highest)) = &self.order {
                let cell = &highest[k * *channels as usize + (p.seq % channels) as usize];
                // A first arrival below one already seen: out of order.
                if cell.fetch_max(p.seq + 1, Relaxed) > p.seq + 1 {
                    self.order_violations.fetch_add(1, Relaxed);
                }
            }
        }
        self.last_us.fetch_max(now, Relaxed);
        if now >= self.mark_us.load(Relaxed) {
            self.first_after_mark_us.fetch_min(now, Relaxed);
        }
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

/// The receiver server's shared state: the current round, if any, and
/// whether the receivers are "down" (answer 503 and record nothing).
#[derive(Default)]
pub struct Receivers {
    current: RwLock<Option<Arc<Round>>>,
    down: AtomicBool,
    /// Receiver paths `/r/{k}` (bit k, k < 64) that are down on their own.
    down_paths: AtomicU64,
    /// Requests answered 503 while down.
    pub refused: AtomicU64,
}

impl Receivers {
    /// `true`: every request is answered 503 and not recorded (a receiver
    /// that is down); `false`: back to 204.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Relaxed);
    }

    /// Only `/r/{k}` down (`true`) or back (`false`); k < 64.
    pub fn set_path_down(&self, k: usize, down: bool) {
        let bit = 1u64 << k;
        if down {
            self.down_paths.fetch_or(bit, Relaxed);
        } else {
            self.down_paths.fetch_and(!bit, Relaxed);
        }
    }

    fn is_down(&self, k: usize) -> bool {
        self.down.load(Relaxed) || (k < 64 && self.down_paths.load(Relaxed) & (1 << k) != 0)
    }

    pub fn begin(&self, round: Arc<Round>) {
        *self.current.write().expect("round lock") = Some(round);
    }

    pub fn end(&self) {
        self.set_down(false);
        self.down_paths.store(0, Relaxed);
        *self.current.write().expect("round lock") = None;
    }

    fn round(&self) -> Option<Arc<Round>> {
        self.current.read().expect("round lock").clone()
    }
}

async fn receive(
    req: HttpRequest,
    path: web::Path<usize>,
    body: web::Bytes,
    state: web::Data<Arc<Receivers>>,
) -> HttpResponse {
    let now = now_us();
    let k = path.into_inner();
    if state.is_down(k) {
        state.refused.fetch_add(1, Relaxed);
        return HttpResponse::ServiceUnavailable().finish();
    }
    if let Some(round) = state.round() {
        let id = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        round.record(k, &body, now, id);
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
