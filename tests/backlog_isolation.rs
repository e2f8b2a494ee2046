//! A webhook whose receiver is down must not take the memory a healthy
//! webhook needs: with a budget of 100 deliveries in memory and a backlog
//! six times that behind the failing receiver, the healthy webhook still
//! gets every event, in order per channel. Within one webhook, likewise, a
//! channel stuck on its oldest event must not keep the webhook's other
//! channels waiting. (The budget itself is checked from outside the process
//! in backlog_restart.rs.)

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{Answer, Receiver, Store, TestApp, TestDb};

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
    let deadline = Instant::now() + Duration::from_secs(20);
    let heads_tried = || {
        receiver
            .received()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
            .collect::<HashSet<_>>()
            .len()
    };
    while heads_tried() < CLIPPED_CHANNELS as usize && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(heads_tried(), CLIPPED_CHANNELS as usize);
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

on_both_stores!(
    a_healthy_webhook_keeps_getting_its_deliveries_while_another_ones_backlog_fills_the_budget,
    one_stuck_channel_does_not_keep_the_other_channels_of_its_webhook_waiting,
    many_clipped_channels_are_read_on_together_each_in_order_and_once
);
