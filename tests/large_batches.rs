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

on_both_stores!(large_events_arriving_together_are_all_stored);
