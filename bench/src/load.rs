//! The load generator: awc clients on their own threads, each in its own
//! actix System, with bounded concurrency (closed loop, optionally with
//! each channel kept on one sender) or a fixed rate (paced, open loop),
//! bounded in time and in count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::receiver::Round;
use crate::util::now_us;

/// Where the load goes.
#[derive(Clone)]
pub enum Target {
    /// `POST /v1/events` of a broker (or of the bare relay), admin token;
    /// with several URLs (instances of one broker) the requests go to them
    /// in turn.
    Ingest {
        urls: Vec<String>,
        bearer: String,
        app_id: String,
    },
    /// Straight to a receiver, with the body the broker would deliver.
    Direct { url: String },
}

/// How the load is offered.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `concurrency` requests always in flight, as fast as they complete.
    Closed { concurrency: usize },
    /// `rate` requests per second whatever the answers, at most
    /// `max_outstanding` in flight (a send due while full is skipped and
    /// counted as behind).
    Paced { rate: f64, max_outstanding: usize },
    /// Closed loop with `concurrency` senders, each owning the channels
    /// `ch % concurrency == its index`: a channel's next event is sent only
    /// after the previous one was answered, so its order is defined (the
    /// broker must deliver a channel's events in the order of their 202s).
    /// Event `seq` is `n * channels + ch`, the `n`-th event of channel `ch`.
    Channels { concurrency: usize },
}

/// One load phase.
#[derive(Clone)]
pub struct Spec {
    pub target: Target,
    pub pace: Pace,
    pub duration: Duration,
    pub max_events: usize,
    pub threads: usize,
    pub channels: u64,
    pub run: u32,
}

/// Counters of a load phase, shared with the progress display.
pub struct Load {
    next_seq: AtomicU64,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub failed: AtomicU64,
    pub behind: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    acks: Mutex<Vec<u32>>,
    first_send_us: AtomicU64,
    last_done_us: AtomicU64,
    outstanding: AtomicUsize,
}

impl Load {
    pub fn new() -> Arc<Load> {
        Arc::new(Load {
            next_seq: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            behind: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            acks: Mutex::new(Vec::new()),
            first_send_us: AtomicU64::new(u64::MAX),
            last_done_us: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
        })
    }

    /// The next sequence number, unless the phase is over.
    pub fn next(&self, max: usize, deadline: Instant) -> Option<u64> {
        if Instant::now() >= deadline {
            return None;
        }
        let seq = self.next_seq.fetch_add(1, Relaxed);
        (seq < max as u64).then_some(seq)
    }

    pub fn started(&self, us: u64) {
        self.sent.fetch_add(1, Relaxed);
        self.first_send_us.fetch_min(us, Relaxed);
    }

    pub fn ok(&self, round: &Round, seq: u64, sent_us: u64) {
        round.mark_accepted(seq);
        self.accepted.fetch_add(1, Relaxed);
        self.done(sent_us);
    }

    pub fn error(&self, kind: String, sent_us: u64) {
        self.failed.fetch_add(1, Relaxed);
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(kind)
            .or_default() += 1;
        self.done(sent_us);
    }

    fn done(&self, sent_us: u64) {
        let now = now_us();
        self.last_done_us.fetch_max(now, Relaxed);
        let took = now.saturating_sub(sent_us).min(u32::MAX as u64) as u32;
        self.acks.lock().expect("acks lock").push(took);
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("errors lock").clone()
    }

    /// Ingest answer times (send to 2xx or error), µs, sorted.
    pub fn ack_latencies(&self) -> Vec<u32> {
        let mut v = self.acks.lock().expect("acks lock").clone();
        v.sort_unstable();
        v
    }

    /// (first send, last answer), epoch µs.
    pub fn window(&self) -> Option<(u64, u64)> {
        let first = self.first_send_us.load(Relaxed);
        let last = self.last_done_us.load(Relaxed);
        (first != u64::MAX && last >= first).then_some((first, last))
    }
}

/// The body of event `seq`: an ingest request, or for [`Target::Direct`]
/// the delivery body the broker would send.
fn body(target: &Target, seq: u64, channels: u64, run: u32, us: u64) -> String {
    let ms = us / 1000;
    let ch = seq % channels.max(1);
    match target {
        Target::Ingest { app_id, .. } => format!(
            r#"{{"event":"channel_live","appId":"{app_id}","eventTime":{ms},"channel":{{"id":"ch-{ch}","seq":{seq},"sentUs":{us},"run":{run}}}}}"#
        ),
        Target::Direct { .. } => format!(
            r#"{{"event":"channel_live","eventTime":{ms},"id":"ch-{ch}","seq":{seq},"sentUs":{us},"run":{run}}}"#
        ),
    }
}

fn classify(e: &awc::error::SendRequestError) -> String {
    use awc::error::SendRequestError as E;
    match e {
        E::Timeout => "timeout".into(),
        E::Connect(c) => format!("connect: {c}"),
        other => {
            let mut s = other.to_string();
            s.truncate(80);
            s
        }
    }
}

/// Which of several ingest URLs event `seq` goes to: the `n`-th event of
/// channel `ch` to URL `n + ch` (modulo their count), so every channel
/// moves from one instance to the next at each event and the instances
/// share the load evenly.
fn turn(seq: u64, channels: u64) -> usize {
    let channels = channels.max(1);
    (seq / channels + seq % channels) as usize
}

/// Sends event `seq` (to the URL of its [`turn`]).
async fn send_one(client: &awc::Client, spec: &Spec, seq: u64, round: &Round, load: &Load) {
    let turn = turn(seq, spec.channels);
    let us = now_us();
    load.started(us);
    let payload = body(&spec.target, seq, spec.channels, spec.run, us);
    let request = match &spec.target {
        Target::Ingest { urls, bearer, .. } => client
            .post(urls[turn % urls.len()].as_str())
            .insert_header(("authorization", bearer.as_str())),
        Target::Direct { url } => client.post(url.as_str()),
    }
    .insert_header(("content-type", "application/json"));
    match request.send_body(payload).await {
        Ok(mut response) => {
            let _ = response.body().limit(1 << 16).await;
            if response.status().is_success() {
                load.ok(round, seq, us);
            } else {
                load.error(format!("HTTP {}", response.status().as_u16()), us);
            }
        }
        Err(e) => load.error(classify(&e), us),
    }
}

fn client(limit: usize) -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(15))
        .disable_redirects()
        .connector(awc::Connector::new().limit(limit))
        .finish()
}

/// Runs the phase on its threads and returns them; poll
/// [`std::thread::JoinHandle::is_finished`] for the end.
pub fn start(spec: Spec, round: Arc<Round>, load: Arc<Load>) -> Vec<std::thread::JoinHandle<()>> {
    let deadline = Instant::now() + spec.duration;
    match spec.pace {
        Pace::Closed { concurrency } => {
            let threads = spec.threads.clamp(1, concurrency.max(1));
            (0..threads)
                .map(|t| {
                    let (spec, round, load) = (spec.clone(), round.clone(), load.clone());
                    // Spread the concurrency: the first threads take the remainder.
                    let mine = concurrency / threads + usize::from(t < concurrency % threads);
                    std::thread::spawn(move || {
                        actix_web::rt::System::new().block_on(async move {
                            let client = client(mine + 8);
                            let spec = Arc::new(spec);
                            let tasks: Vec<_> = (0..mine)
                                .map(|_| {
                                    let (client, spec) = (client.clone(), spec.clone());
                                    let (round, load) = (round.clone(), load.clone());
                                    actix_web::rt::spawn(async move {
                                        while let Some(seq) = load.next(spec.max_events, deadline) {
                                            send_one(&client, &spec, seq, &round, &load).await;
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                let _ = t.await;
                            }
                        })
                    })
                })
                .collect()
        }
        Pace::Channels { concurrency } => {
            let channels = spec.channels.max(1);
            // No more senders than channels: each owns at least one.
            let senders = concurrency.clamp(1, channels as usize);
            let threads = spec.threads.clamp(1, senders);
            let mut first = 0;
            (0..threads)
                .map(|t| {
                    let (spec, round, load) = (spec.clone(), round.clone(), load.clone());
                    let mine = senders / threads + usize::from(t < senders % threads);
                    let ids = first..first + mine;
                    first += mine;
                    std::thread::spawn(move || {
                        actix_web::rt::System::new().block_on(async move {
                            let client = client(mine + 8);
                            let spec = Arc::new(spec);
                            let tasks: Vec<_> = ids
                                .map(|g| {
                                    let (client, spec) = (client.clone(), spec.clone());
                                    let (round, load) = (round.clone(), load.clone());
                                    actix_web::rt::spawn(async move {
                                        // Sender g's channels, one event each per lap.
                                        let mine: Vec<u64> =
                                            (g as u64..channels).step_by(senders).collect();
                                        'laps: for lap in 0.. {
                                            for &ch in &mine {
                                                let seq = lap * channels + ch;
                                                if seq >= spec.max_events as u64
                                                    || Instant::now() >= deadline
                                                {
                                                    break 'laps;
                                                }
                                                send_one(&client, &spec, seq, &round, &load).await;
                                            }
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                let _ = t.await;
                            }
                        })
                    })
                })
                .collect()
        }
        Pace::Paced {
            rate,
            max_outstanding,
        } => {
            vec![std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let client = client(max_outstanding + 8);
                    let spec = Arc::new(spec);
                    let start = Instant::now();
                    let period = Duration::from_secs_f64(1.0 / rate);
                    let mut i: u64 = 0;
                    loop {
                        let due = start + period * i as u32;
                        if due >= deadline || i as usize >= spec.max_events {
                            break;
                        }
                        actix_web::rt::time::sleep_until(due.into()).await;
                        let seq = i;
                        i += 1;
                        if load.outstanding.load(Relaxed) >= max_outstanding {
                            load.behind.fetch_add(1, Relaxed);
                            continue;
                        }
                        load.outstanding.fetch_add(1, Relaxed);
                        let (client, spec) = (client.clone(), spec.clone());
                        let (round, load) = (round.clone(), load.clone());
                        actix_web::rt::spawn(async move {
                            send_one(&client, &spec, seq, &round, &load).await;
                            load.outstanding.fetch_sub(1, Relaxed);
                        });
                    }
                    let give_up = Instant::now() + Duration::from_secs(20);
                    while load.outstanding.load(Relaxed) > 0 && Instant::now() < give_up {
                        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })]
        }
    }
}
