//! Group commit with large events: events that arrive together share one
//! transaction, and on MySQL one statement may not exceed
//! `max_allowed_packet` (16 MiB on the MariaDB here). Thirty events of
//! 800 KB arriving at once, 24 MB together, must all be stored.

mod common;

use serde_json::json;

use common::{Receiver, Store, TestApp};

async fn large_events_arriving_together_are_all_stored(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    // The deliveries are not awaited: storing is what is under test.
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("large").await;
    app.create_webhook(&key, &receiver.url, json!("channel_live"))
        .await;
    let filler = "x".repeat(800 * 1024);
    let sends = (0..30).map(|i| {
        app.send_event(
            &app_id,
            "channel_live",
            json!({"id": format!("ch-{i}"), "filler": filler}),
        )
    });
    let replies = futures_util::future::join_all(sends).await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 202, "event {i}: {:?}", r.body);
        assert_eq!(r.body["deliveries"], 1, "event {i}");
    }
    use diesel::prelude::*;
    use webhook_broker::db::schema::events;
    let stored: i64 = events::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(stored, 30);
}

/// MariaDB refuses a statement over `max_allowed_packet` (16 MiB here) and
/// drops the connection: a batch holding one such event is stored in parts,
/// and only that event fails. An in-process sender has no body limit, so it
/// can send one.
#[cfg(feature = "mysql")]
#[actix_web::test]
async fn one_event_too_large_for_the_database_fails_alone_and_its_neighbours_are_stored() {
    use webhook_broker::actors::dispatcher::ChannelEvent;
    use webhook_broker::domain::EventKind;
    let Some(app) = TestApp::spawn(Store::Mysql).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("large").await;
    app.create_webhook(&key, &receiver.url, json!("channel_live"))
        .await;
    let channel = |i: usize, filler: &str| {
        json!({"id": format!("ch-{i}"), "seq": i, "filler": filler})
            .as_object()
            .unwrap()
            .clone()
    };
    let huge = "x".repeat(20 * 1024 * 1024);
    // Sent at once, so that they share a batch.
    let sends = (0..7).map(|i| {
        let filler = if i == 3 { huge.as_str() } else { "small" };
        app.broker.dispatcher.send(ChannelEvent::new(
            app_id.clone(),
            EventKind::ChannelLive,
            channel(i, filler),
        ))
    });
    let replies = futures_util::future::join_all(sends).await;
    for (i, r) in replies.into_iter().enumerate() {
        let r = r.expect("the dispatcher answers");
        if i == 3 {
            assert!(r.is_err(), "the 20 MiB event cannot be stored: {r:?}");
        } else {
            assert!(r.is_ok(), "event {i} shares the batch and is stored: {r:?}");
        }
    }
    let got = receiver
        .wait_for(6, std::time::Duration::from_secs(10))
        .await;
    let mut seqs: Vec<u64> = got
        .iter()
        .map(|r| r.json()["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![0, 1, 2, 4, 5, 6]);
}

on_both_stores!(large_events_arriving_together_are_all_stored);
