//! A webhook whose receiver is down must not take the memory a healthy
//! webhook needs: with a budget of 100 deliveries in memory and a backlog
//! six times that behind the failing receiver, the healthy webhook still
//! gets every event, in order per channel. (The budget itself is checked
//! from outside the process in backlog_restart.rs.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

on_both_stores!(
    a_healthy_webhook_keeps_getting_its_deliveries_while_another_ones_backlog_fills_the_budget
);
