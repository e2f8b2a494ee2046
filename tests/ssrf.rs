//! SSRF at delivery time: a target whose name or address is private is
//! refused when the broker connects, not only when it is registered, and
//! the refusal is recorded; with private targets allowed the same delivery
//! arrives. No outside network: names come from /etc/hosts.

mod common;

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;

use common::{Receiver, Store, TestApp, TestDb};
use webhook_broker::db::schema::{deliveries, delivery_attempts};

/// A name from /etc/hosts that is not `localhost` (so no name rule catches
/// it, only the address check) and resolves to 127.0.0.1, where receivers
/// listen; `localhost` when this machine has none.
fn loopback_name() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let alias = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            ip.is_loopback().then_some(fields)
        })
        .flatten()
        .find(|name| {
            let lower = name.to_ascii_lowercase();
            let lower = lower.trim_end_matches('.');
            lower != "localhost"
                && !lower.ends_with(".localhost")
                && (*name, 80)
                    .to_socket_addrs()
                    .is_ok_and(|mut a| a.any(|a| a.ip() == IpAddr::from([127, 0, 0, 1])))
        })
        .map(str::to_owned);
    alias.unwrap_or_else(|| {
        eprintln!("no loopback alias in /etc/hosts; using localhost (refused by name)");
        "localhost".into()
    })
}

/// The receiver's URL with its host replaced.
fn via(receiver: &Receiver, host: &str) -> String {
    receiver.url.replace("127.0.0.1", host)
}

/// (status, attempts, last error) of every delivery to `webhook_id`.
fn outcomes(app: &TestApp, webhook_id: &str) -> Vec<(String, i32, Option<String>)> {
    deliveries::table
        .filter(deliveries::webhook_id.eq(webhook_id))
        .select((
            deliveries::status,
            deliveries::attempts,
            deliveries::last_error,
        ))
        .load(&mut *app.conn())
        .unwrap()
}

/// Registers `uris` on a broker that allows private targets, stops it, and
/// starts one on the same database that does not: the URIs are then
/// already stored, as after a DNS change or a configuration change.
async fn refusing_broker_with(
    store: Store,
    uris: &[String],
) -> Option<(TestApp, String, Vec<String>)> {
    let db = Arc::new(TestDb::new(store)?);
    let first = TestApp::spawn_with(db.clone(), |_| {}).await;
    let (app_id, key) = first.create_app("tv").await;
    let mut ids = Vec::new();
    for uri in uris {
        let webhook = first.create_webhook(&key, uri, json!("all")).await;
        ids.push(webhook["id"].as_str().unwrap().to_owned());
    }
    first.broker.shutdown(Duration::from_secs(5)).await;
    let second = TestApp::spawn_with(db, |c| {
        c.allow_private_targets = false;
        c.instance_id = "refusing".into();
    })
    .await;
    Some((second, app_id, ids))
}

/// Waits for every delivery of the webhook to fail for good, and checks
/// that each attempt recorded a refusal mentioning `needle`.
async fn assert_refused(app: &TestApp, webhook_id: &str, needle: &str) {
    let failed = common::eventually(Duration::from_secs(10), || {
        let rows = outcomes(app, webhook_id);
        !rows.is_empty() && rows.iter().all(|(s, _, _)| s == "failed")
    })
    .await;
    let rows = outcomes(app, webhook_id);
    assert!(failed, "{rows:?}");
    for (_, attempts, last_error) in &rows {
        assert_eq!(*attempts, 3, "retried on the schedule like any error");
        let e = last_error.as_deref().unwrap_or_default();
        assert!(
            e.contains("refused to connect") && e.contains("private") && e.contains(needle),
            "{e}"
        );
    }
    let errors: Vec<Option<String>> = delivery_attempts::table
        .filter(
            delivery_attempts::delivery_id.eq_any(
                deliveries::table
                    .filter(deliveries::webhook_id.eq(webhook_id))
                    .select(deliveries::id),
            ),
        )
        .select(delivery_attempts::error)
        .load(&mut *app.conn())
        .unwrap();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e
        .as_deref()
        .is_some_and(|e| e.contains("refused to connect"))));
}

async fn a_name_resolving_to_loopback_is_refused_at_delivery_time(store: Store) {
    let receiver = Receiver::start();
    let host = loopback_name();
    let uri = via(&receiver, &host);
    let Some((app, app_id, ids)) = refusing_broker_with(store, &[uri]).await else {
        return;
    };
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["deliveries"], 1);

    let needle = if host == "localhost" {
        "localhost".to_owned()
    } else {
        format!("{host} at 127.0.0.1")
    };
    assert_refused(&app, &ids[0], &needle).await;
    assert!(receiver.received().is_empty(), "the receiver got a request");
}

async fn a_name_resolving_to_loopback_is_delivered_to_when_allowed(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("tv").await;
    let webhook = app
        .create_webhook(&key, &via(&receiver, &loopback_name()), json!("all"))
        .await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    app.send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(
        common::eventually(Duration::from_secs(5), || {
            outcomes(&app, &id) == vec![("succeeded".into(), 1, None)]
        })
        .await,
        "{:?}",
        outcomes(&app, &id)
    );
}

async fn private_ip_literals_are_refused_at_delivery_time(store: Store) {
    let receiver = Receiver::start();
    let uris = [
        receiver.url.clone(),
        // Cloud metadata: refused before any packet leaves.
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ];
    let Some((app, app_id, ids)) = refusing_broker_with(store, &uris).await else {
        return;
    };
    let r = app
        .send_event(&app_id, "channel_stop", json!({"id": "c"}))
        .await;
    assert_eq!(r.body["deliveries"], 2, "{:?}", r.body);

    assert_refused(&app, &ids[0], "127.0.0.1 at 127.0.0.1").await;
    assert_refused(&app, &ids[1], "at 169.254.169.254").await;
    assert!(receiver.received().is_empty());
}

on_both_stores!(
    a_name_resolving_to_loopback_is_refused_at_delivery_time,
    a_name_resolving_to_loopback_is_delivered_to_when_allowed,
    private_ip_literals_are_refused_at_delivery_time,
);
