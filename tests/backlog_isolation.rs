//! A webhook whose receiver is down must not take the memory a healthy
//! webhook needs: with a budget of 100 deliveries in memory and a backlog
//! six times that behind the failing receiver, the healthy webhook still
//! gets every event, in order per channel. Within one webhook, likewise, a
//! channel stuck on its oldest event must not keep the webhook's other
//! channels waiting. Channels with more queued than an actor holds of one
//! are clipped and read on from the database together: a dozen of them, and
//! more of them than one such read takes (500), each arrive in order and
//! once. (The budget itself is checked from outside the process in
//! backlog_restart.rs.)

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use common::{Answer, Receiver, Store, TestApp, TestDb};
use webhook_broker::actors::dispatcher::ChannelEvent;
use webhook_broker::backlog::CHANNEL_HOLD;
use webhook_broker::EventKind;

const EVENTS: u64 = 600;
const CHANNELS: u64 = 20;
const BUDGET: usize = 100;

async fn a_healthy_webhook_keeps_getting_its_deliveries_while_another_ones_backlog_fills_the_budget(
    store: Store,
) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.max_in_memory = BUDGET;
        // Nothing fails for good during the test: the heads wait a minute.
        c.retry_schedule = vec![Duration::from_secs(60)];
    })
    .await;
    let down = Receiver::start_with(|_, _| Answer::status(503));
    let healthy = Receiver::start();
    let (app_id, key) = app.create_app("isolation").await;
    app.create_webhook(&key, &down.url, json!("all")).await;
    app.create_webhook(&key, &healthy.url, json!("all")).await;

    for seq in 0..EVENTS {
        let channel = json!({"id": format!("ch-{}", seq % CHANNELS), "seq": seq});
        let r = app.send_event(&app_id, "channel_live", channel).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        assert_eq!(r.body["deliveries"], 2);
    }

    // Not a speed test: a bound on starvation. The healthy receiver answers
    // at once, so its deliveries take a few seconds here; when the failing
    // webhook could take the whole budget, they trickled in over ~50 s.
    let got = healthy
        .wait_for(EVENTS as usize, Duration::from_secs(20))
        .await;
    assert_eq!(
        got.len(),
        EVENTS as usize,
        "the healthy webhook got {} of {EVENTS}; the failing one had {} attempts",
        got.len(),
        down.received().len()
    );
    let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
    for req in &got {
        let body = req.json();
        per_channel
            .entry(body["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["seq"].as_u64().unwrap());
    }
    for (channel, seqs) in &per_channel {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "{channel} arrived out of order");
    }
    // Each failing channel's head was tried; the rest waits behind it.
    assert!(down.received().len() >= CHANNELS as usize);
}

/// Twelve times the budget, over twice a page of the webhook's backlog
/// (500) and many times what an actor holds of one channel (64).
const STUCK_EVENTS: u64 = 1_200;
const OTHER_EVENTS: u64 = 100;

async fn one_stuck_channel_does_not_keep_the_other_channels_of_its_webhook_waiting(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        c.max_in_memory = BUDGET;
        // Nothing fails for good: the stuck head is tried again every second.
        c.retry_schedule = vec![Duration::from_secs(1); 200];
    })
    .await;
    let stuck = Arc::new(AtomicBool::new(true));
    let receiver = {
        let stuck = stuck.clone();
        Receiver::start_with(move |req, _| {
            let failing = stuck.load(Ordering::SeqCst) && req.json()["id"] == "stuck";
            Answer::status(if failing { 503 } else { 204 })
        })
    };
    let (app_id, key) = app.create_app("stuck-channel").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;

    for seq in 0..STUCK_EVENTS {
        let r = app
            .send_event(&app_id, "channel_live", json!({"id": "stuck", "seq": seq}))
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    for seq in 0..OTHER_EVENTS {
        let channel = json!({"id": format!("ch-{}", seq % 10), "seq": seq});
        let r = app.send_event(&app_id, "channel_live", channel).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    let arrived = |channel_is_stuck: bool| -> Vec<(String, u64)> {
        receiver
            .received()
            .iter()
            .map(|r| (r.json(), r.header("webhook-id").unwrap().to_owned()))
            .filter(|(body, _)| (body["id"] == "stuck") == channel_is_stuck)
            .map(|(body, id)| (id, body["seq"].as_u64().unwrap()))
            .collect()
    };
    // The other channels go out while the stuck one still fails. Before a
    // channel was limited in what it holds, the stuck channel's queue took
    // the whole budget and they never did.
    let deadline = Instant::now() + Duration::from_secs(20);
    while arrived(false).len() < OTHER_EVENTS as usize && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let others = arrived(false);
    assert_eq!(
        others.len(),
        OTHER_EVENTS as usize,
        "the other channels got {} of {OTHER_EVENTS} while one channel was stuck ({} tries of it)",
        others.len(),
        arrived(true).len()
    );
    let tries = arrived(true);
    assert!(
        tries.iter().all(|(_, seq)| *seq == 0),
        "only the stuck channel's oldest event may be tried: {:?}",
        &tries[..tries.len().min(5)]
    );

    // Unstuck: the whole channel follows, read on in channel pages, in
    // order and each event once.
    stuck.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    let distinct = || {
        arrived(true)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<HashSet<_>>()
            .len()
    };
    while distinct() < STUCK_EVENTS as usize && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let all = arrived(true);
    let mut seen = HashSet::new();
    let order: Vec<u64> = all
        .iter()
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(_, seq)| *seq)
        .collect();
    assert_eq!(
        order,
        (0..STUCK_EVENTS).collect::<Vec<_>>(),
        "the stuck channel arrived incomplete or out of order ({} distinct)",
        order.len()
    );
    let again = all.iter().filter(|(_, seq)| *seq > 0).count() - (STUCK_EVENTS as usize - 1);
    assert_eq!(
        again, 0,
        "{again} of the stuck channel's later events were sent twice"
    );
}

/// How many channels (the `id` of the channel object) the receiver has been
/// sent any event of, once it is `want` or after 20 s.
async fn channels_tried(receiver: &Receiver, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let tried = || {
        receiver
            .received()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
            .collect::<HashSet<_>>()
            .len()
    };
    while tried() < want && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    tried()
}

/// Channels, each with far more queued than an actor holds of one (64),
/// so that every channel is clipped and they are read on together.
const CLIPPED_CHANNELS: u64 = 12;
const PER_CHANNEL: u64 = 250;

async fn many_clipped_channels_are_read_on_together_each_in_order_and_once(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        // Room for every channel's 64, not for the backlog (3,000).
        c.max_in_memory = 1_000;
        c.retry_schedule = vec![Duration::from_millis(300); 200];
    })
    .await;
    let down = Arc::new(AtomicBool::new(true));
    let receiver = {
        let down = down.clone();
        Receiver::start_with(move |_, _| {
            Answer::status(if down.load(Ordering::SeqCst) {
                503
            } else {
                204
            })
        })
    };
    let (app_id, key) = app.create_app("clipped").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;
    let total = CLIPPED_CHANNELS * PER_CHANNEL;
    for seq in 0..total {
        let channel = json!({"id": format!("ch-{}", seq % CLIPPED_CHANNELS), "seq": seq});
        let r = app.send_event(&app_id, "channel_live", channel).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    // Every channel's head has been tried (and failed) before it comes back.
    assert_eq!(
        channels_tried(&receiver, CLIPPED_CHANNELS as usize).await,
        CLIPPED_CHANNELS as usize
    );
    let failed = receiver.received().len();
    down.store(false, Ordering::SeqCst);

    let distinct = || {
        receiver.received()[failed..]
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_owned())
            .collect::<HashSet<_>>()
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while distinct() < total as usize && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut twice = 0;
    for r in &receiver.received()[failed..] {
        if !seen.insert(r.header("webhook-id").unwrap().to_owned()) {
            twice += 1;
            continue;
        }
        let body = r.json();
        per_channel
            .entry(body["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["seq"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), total as usize, "not every event arrived");
    for (channel, seqs) in &per_channel {
        let i: u64 = channel.trim_start_matches("ch-").parse().unwrap();
        let want: Vec<u64> = (0..PER_CHANNEL).map(|n| n * CLIPPED_CHANNELS + i).collect();
        assert_eq!(seqs, &want, "{channel} arrived incomplete or out of order");
    }
    // A head that failed at the switch may go once more; nothing else.
    assert!(
        twice <= CLIPPED_CHANNELS as usize,
        "{twice} deliveries went twice after the receiver came back"
    );
}

/// More channels than one read of clipped channels takes (500), each with
/// more queued than an actor holds of one (64): while the receiver is down
/// no delivery finishes, so each channel holds its first 64 and is clipped
/// at the 65th, all 600 at once (38,400 held, within the budget, and the
/// other 9,600 left in the database). When the receiver comes back each
/// channel drains to 16 and comes due a read of its rest; for more of them
/// to be due at once than one read takes, the reads must be slower than the
/// draining (see the stall below).
const MANY_CHANNELS: usize = 600;
const EVENTS_EACH: usize = 80;

async fn more_clipped_channels_than_one_read_takes_all_arrive_in_order_and_once(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let app = TestApp::spawn_with(Arc::new(db), |c| {
        // Room for every channel's 64 (38,400), not for the backlog (48,000).
        c.max_in_memory = 50_000;
        c.retry_schedule = vec![Duration::from_secs(1); 200];
    })
    .await;
    // What the receiver answered each request, in arrival order, and how
    // many it took.
    let down = Arc::new(AtomicBool::new(true));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let taken = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (down, answers, taken) = (down.clone(), answers.clone(), taken.clone());
        Receiver::start_with(move |_, _| {
            let status = if down.load(Ordering::SeqCst) {
                503
            } else {
                204
            };
            // Called in arrival order, under the receiver's own lock.
            answers.lock().unwrap().push(status);
            if status == 204 {
                taken.fetch_add(1, Ordering::SeqCst);
            }
            Answer::status(status)
        })
    };
    let (app_id, key) = app.create_app("many-clipped").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;

    // The backlog goes in through ingest, not straight into the database:
    // an actor reads a backlog in the database in pages only while it holds
    // fewer than 250, so behind a receiver that is down it would clip a
    // dozen channels at most. Handed over at ingest, every delivery is
    // held until its channel holds 64. In-process, in waves of one event
    // per channel, each wave stored (in a few shared commits) before the
    // next is sent, so that the `n`th event of every channel is its `n`th.
    let channel = |i: usize, n: usize| {
        json!({"id": format!("ch-{i}"), "n": n})
            .as_object()
            .unwrap()
            .clone()
    };
    for n in 0..EVENTS_EACH {
        let wave = (0..MANY_CHANNELS).map(|i| {
            app.broker.dispatcher.send(ChannelEvent::new(
                app_id.clone(),
                EventKind::ChannelLive,
                channel(i, n),
            ))
        });
        for accepted in futures_util::future::join_all(wave).await {
            let accepted = accepted.expect("the dispatcher answers");
            assert_eq!(accepted.expect("the event is stored").deliveries, 1);
        }
    }

    // Every channel's head has been tried (and failed), and nothing but
    // the heads.
    assert_eq!(
        channels_tried(&receiver, MANY_CHANNELS).await,
        MANY_CHANNELS
    );
    let tried = || {
        receiver
            .received()
            .iter()
            .map(|r| {
                let body = r.json();
                let channel = body["id"].as_str().unwrap().to_owned();
                (channel, body["n"].as_u64().unwrap())
            })
            .collect::<Vec<_>>()
    };
    let early = tried();
    assert!(
        early.iter().all(|(_, n)| *n == 0),
        "only each channel's oldest event may be tried while the receiver is down: {:?}",
        early.iter().find(|(_, n)| *n > 0)
    );
    let failed = receiver.received().len();
    // On MariaDB the reads of the channels' rest are stalled (the events
    // they join are locked) while the receiver takes what is held: each
    // channel drains its 64, comes due a read and waits, all 600 at once,
    // and the reads that follow must take them 500 at a time and leave
    // none behind. (SQLite cannot keep its readers waiting; there the
    // channels come due over the seconds they take to drain, and each
    // read finds a few due.)
    let stall = stall_reads(&app, store);
    down.store(false, Ordering::SeqCst);
    if let Some(mut lock) = stall {
        let held = MANY_CHANNELS * CHANNEL_HOLD;
        let deadline = Instant::now() + Duration::from_secs(60);
        while taken.load(Ordering::SeqCst) < held && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            taken.load(Ordering::SeqCst),
            held,
            "with the reads stalled, exactly each channel's first {CHANNEL_HOLD} are taken"
        );
        let early: Vec<(String, u64)> = tried().into_iter().skip(failed).collect();
        assert!(
            early.iter().all(|(_, n)| *n < CHANNEL_HOLD as u64),
            "nothing past a channel's first {CHANNEL_HOLD} goes out before it is read: {:?}",
            early.iter().find(|(_, n)| *n >= CHANNEL_HOLD as u64)
        );
        lock.unlock();
    }

    let total = MANY_CHANNELS * EVENTS_EACH;
    let deadline = Instant::now() + Duration::from_secs(120);
    while taken.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever was still on its way comes in before the count.
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    let answers = answers.lock().unwrap().clone();
    assert_eq!(got.len(), answers.len());

    // Each delivery is taken once and never sent after it was; only heads
    // fail, and after the switch only a head tried at that very moment.
    let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
    let mut done = HashSet::new();
    let mut failed_late: HashMap<String, usize> = HashMap::new();
    for (i, (r, status)) in got.iter().zip(&answers).enumerate() {
        let id = r.header("webhook-id").unwrap().to_owned();
        let body = r.json();
        let channel = body["id"].as_str().unwrap().to_owned();
        let n = body["n"].as_u64().unwrap();
        assert!(
            !done.contains(&id),
            "{channel} #{n} ({id}) was sent again after it was taken"
        );
        if *status == 204 {
            done.insert(id);
            per_channel.entry(channel).or_default().push(n);
        } else {
            assert_eq!(
                n, 0,
                "{channel} #{n} was tried before its channel's head was taken"
            );
            if i >= failed {
                *failed_late.entry(channel).or_default() += 1;
            }
        }
    }
    assert_eq!(
        done.len(),
        total,
        "not every event arrived: {} of {total}, {} of {MANY_CHANNELS} channels complete",
        done.len(),
        per_channel
            .values()
            .filter(|n| n.len() == EVENTS_EACH)
            .count()
    );
    let want: Vec<u64> = (0..EVENTS_EACH as u64).collect();
    for (channel, ns) in &per_channel {
        assert_eq!(ns, &want, "{channel} arrived incomplete or out of order");
    }
    assert!(
        failed_late.values().all(|&times| times <= 1),
        "a head failed more than once after the receiver came back: {failed_late:?}"
    );
}

/// A lock on the broker's `events` table, which every read of pending
/// deliveries joins (for their bodies) and the recording of attempts does
/// not touch: reads wait while outcomes are still written. MariaDB only.
struct ReadStall {
    #[cfg(feature = "mysql")]
    conn: diesel::MysqlConnection,
}

impl ReadStall {
    fn unlock(&mut self) {
        #[cfg(feature = "mysql")]
        {
            use diesel::connection::SimpleConnection;
            self.conn.batch_execute("UNLOCK TABLES").expect("unlock");
        }
    }
}

fn stall_reads(app: &TestApp, store: Store) -> Option<ReadStall> {
    if store != Store::Mysql {
        return None;
    }
    #[cfg(feature = "mysql")]
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let webhook_broker::config::DatabaseUrl::Mysql(url) = &app.db.url else {
            unreachable!("a MySQL store has a MySQL URL");
        };
        let mut conn = diesel::MysqlConnection::establish(url).expect("mysql connect");
        conn.batch_execute("LOCK TABLES events WRITE")
            .expect("lock events");
        Some(ReadStall { conn })
    }
    #[cfg(not(feature = "mysql"))]
    {
        let _ = app;
        None
    }
}

on_both_stores!(
    a_healthy_webhook_keeps_getting_its_deliveries_while_another_ones_backlog_fills_the_budget,
    one_stuck_channel_does_not_keep_the_other_channels_of_its_webhook_waiting,
    many_clipped_channels_are_read_on_together_each_in_order_and_once,
    more_clipped_channels_than_one_read_takes_all_arrive_in_order_and_once
);
