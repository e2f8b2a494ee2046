//! Coherence across instances: a change made through one broker instance
//! (or by `webhook-broker apps create`) is in force on every instance on
//! the same database within 1 s, with no restart. On MariaDB two real
//! daemons share one database; on SQLite (one daemon per database) the CLI
//! is the other writer. Times are measured from the change's 2xx answer
//! (or the CLI's exit) to the first answer of the other instance that shows
//! it, and asserted against the requirement, 1 s.

mod common;

#[cfg(feature = "mysql")]
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{json, Value};

use common::daemon::{self, http, Running};
use common::{Answer, Received, Receiver, Store, TestApp, TestDb, ADMIN_TOKEN};
use webhook_broker::actors::registry::CHANGE_PAGE;
use webhook_broker::db;
use webhook_broker::db::models::WebhookRow;

/// What the requirement allows between a change and its effect elsewhere.
const REQUIRED: Duration = Duration::from_secs(1);
/// How long a wait goes on before it gives up (well past the requirement,
/// so that a miss reports how late it was rather than only that it was).
const GIVE_UP: Duration = Duration::from_secs(5);

/// How long one check's request may take before the next one is sent.
const PROBE_WAIT: Duration = Duration::from_millis(150);

/// Calls `check` every 10 ms until it is true; how long after `since` it
/// first was, or `None` if it was not within [`GIVE_UP`].
fn first_true(since: Instant, mut check: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        if check() {
            return Some(since.elapsed());
        }
        if since.elapsed() > GIVE_UP {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that `took` (from [`first_true`]) meets the requirement.
fn assert_within_requirement(took: Option<Duration>, what: &str) {
    let took = took.unwrap_or_else(|| panic!("{what}: not within {GIVE_UP:?}"));
    assert!(took <= REQUIRED, "{what}: took {took:?}, over {REQUIRED:?}");
    eprintln!("{what}: {took:?}");
}

/// The environment of one daemon on `db`, named `instance`.
fn env_of<'a>(url: &'a str, instance: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", url),
        ("BROKER_BIND", "127.0.0.1:0"),
        ("BROKER_ADMIN_TOKEN", ADMIN_TOKEN),
        ("BROKER_ALLOW_PRIVATE_TARGETS", "true"),
        ("BROKER_INSTANCE_ID", instance),
        ("BROKER_RETRY_SCHEDULE", "200ms,200ms,500ms"),
        ("RUST_LOG", "info"),
    ]
}

/// A running daemon and its port.
struct Instance {
    /// Kept for its Drop, which kills the daemon.
    _process: Running,
    port: u16,
}

// Most of it serves the two-instance tests, which need MariaDB.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
impl Instance {
    fn start(dir: &std::path::Path, db: &TestDb, name: &str) -> Instance {
        let url = daemon::database_url(db);
        let (process, port) = Running::listening(dir, &env_of(&url, name));
        Instance {
            _process: process,
            port,
        }
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, text) = http(self.port, method, path, token, &body);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates an app; (id, key).
    fn create_app(&self) -> (String, String) {
        let (status, body) = self.call(
            "POST",
            "/v1/apps",
            Some(ADMIN_TOKEN),
            &json!({"name": "coherence"}),
        );
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["apiKey"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a webhook for every event at `uri`; its create answer.
    fn create_webhook(&self, key: &str, uri: &str) -> Value {
        let (status, body) = self.call(
            "POST",
            "/v1/webhook",
            Some(key),
            &json!({"uri": uri, "event": "all"}),
        );
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Ingests an event; the `deliveries` it answered, or `None` when it
    /// was not accepted (e.g. the app is not known here yet).
    fn deliveries_for(&self, app_id: &str, channel: &str) -> Option<u64> {
        let (status, body) = self.call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            &json!({"event": "channel_live", "appId": app_id, "channel": {"id": channel}}),
        );
        (status == 202).then(|| body["deliveries"].as_u64().expect("deliveries"))
    }

    /// Sets a webhook's status through PUT.
    fn set_status(&self, key: &str, id: &str, uri: &str, status: &str) {
        let (code, body) = self.call(
            "PUT",
            &format!("/v1/webhook/{id}"),
            Some(key),
            &json!({"uri": uri, "event": "all", "status": status}),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["status"], status, "{body}");
    }

    fn get_webhook(&self, key: &str, id: &str) -> (u16, Value) {
        self.call("GET", &format!("/v1/webhook/{id}"), Some(key), &Value::Null)
    }
}

/// Two daemons on one fresh MariaDB database (`None` when no server runs,
/// outside CI).
#[cfg(feature = "mysql")]
fn two_instances() -> Option<(TestDb, tempfile::TempDir, Instance, Instance)> {
    let db = TestDb::new(Store::Mysql)?;
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::start(dir.path(), &db, "coherence-a");
    let b = Instance::start(dir.path(), &db, "coherence-b");
    Some((db, dir, a, b))
}

fn always_204() -> Receiver {
    daemon::background_receiver(|_, _| Answer::status(204))
}

#[cfg(feature = "mysql")]
#[test]
fn a_webhook_created_through_one_instance_gets_events_ingested_through_the_other_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = always_204();
    let (app_id, key) = a.create_app();
    let webhook = a.create_webhook(&key, &receiver.url);
    let created = Instant::now();
    let mut channel = 0;
    let took = first_true(created, || {
        channel += 1;
        b.deliveries_for(&app_id, &format!("c{channel}")) == Some(1)
    });
    assert_within_requirement(took, "B answers deliveries: 1 for A's new webhook");

    let got = receiver_wait(&receiver, 1);
    let arrived = got[0].at.duration_since(created);
    assert!(
        arrived <= REQUIRED,
        "the first delivery arrived {arrived:?} after the webhook's creation"
    );
    assert_eq!(got[0].json()["id"], format!("c{channel}"));
    // And it stays in force: every later event through B reaches it.
    for n in 0..5 {
        assert_eq!(b.deliveries_for(&app_id, &format!("later{n}")), Some(1));
    }
    assert_eq!(receiver_wait(&receiver, 6).len(), 6);
    let (status, seen) = b.get_webhook(&key, webhook["id"].as_str().unwrap());
    assert_eq!(status, 200, "{seen}");
}

fn receiver_wait(receiver: &Receiver, n: usize) -> Vec<Received> {
    let mut got = Vec::new();
    daemon::wait_until(GIVE_UP, || {
        got = receiver.received();
        got.len() >= n
    });
    assert!(got.len() >= n, "{} of {n} deliveries arrived", got.len());
    got
}

#[cfg(feature = "mysql")]
#[test]
fn a_webhook_disabled_through_one_instance_stops_getting_deliveries_from_the_other_and_resumes_when_enabled(
) {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = always_204();
    let (app_id, key) = a.create_app();
    let id = a.create_webhook(&key, &receiver.url)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(daemon::wait_until(GIVE_UP, || b.get_webhook(&key, &id).0 == 200));
    let mut owed = 0;
    let mut channel = 0;
    let mut send = |owed: &mut usize| {
        channel += 1;
        let n = a.deliveries_for(&app_id, &format!("c{channel}")).unwrap();
        *owed += n as usize;
        n
    };
    assert_eq!(send(&mut owed), 1);
    receiver_wait(&receiver, 1);

    b.set_status(&key, &id, &receiver.url, "disabled");
    let disabled = Instant::now();
    let took = first_true(disabled, || send(&mut owed) == 0);
    assert_within_requirement(took, "A answers deliveries: 0 once B disabled the webhook");
    // What A took in before it knew may be mid-attempt; after that, nothing.
    std::thread::sleep(Duration::from_millis(300));
    let before = receiver.received().len();
    for _ in 0..3 {
        assert_eq!(send(&mut owed), 0);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        receiver.received().len(),
        before,
        "a disabled webhook got deliveries"
    );

    b.set_status(&key, &id, &receiver.url, "enabled");
    let enabled = Instant::now();
    let took = first_true(enabled, || send(&mut owed) == 1);
    assert_within_requirement(took, "A answers deliveries: 1 once B enabled the webhook");
    // Everything owed arrives, what was kept while disabled included, and
    // nothing twice: each instance resumed only what it held.
    let got = receiver_wait(&receiver, owed);
    std::thread::sleep(Duration::from_millis(500));
    let got_now = receiver.received();
    let ids: HashSet<&str> = got_now
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), owed, "{} distinct of {owed} owed", ids.len());
    assert_eq!(got_now.len(), got.len().max(owed), "a delivery came twice");
}

#[cfg(feature = "mysql")]
#[test]
fn a_secret_rotated_through_one_instance_is_served_and_signs_on_the_other_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = always_204();
    let (app_id, key) = a.create_app();
    let created = a.create_webhook(&key, &receiver.url);
    let id = created["id"].as_str().unwrap().to_owned();
    let old = created["secret"].as_str().unwrap().to_owned();
    assert!(daemon::wait_until(GIVE_UP, || b.get_webhook(&key, &id).0 == 200));

    let (status, rotated) = a.call(
        "POST",
        &format!("/v1/webhook/{id}/secret/rotate"),
        Some(&key),
        &Value::Null,
    );
    assert_eq!(status, 200, "{rotated}");
    let at = Instant::now();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let took = first_true(at, || {
        let (_, body) = b.call(
            "GET",
            &format!("/v1/webhook/{id}/secret"),
            Some(&key),
            &Value::Null,
        );
        body["secret"] == new.as_str()
    });
    assert_within_requirement(took, "B serves the secret A rotated");

    assert_eq!(b.deliveries_for(&app_id, "after-rotation"), Some(1));
    let got = receiver_wait(&receiver, 1);
    let header = got[0].header("webhook-signature").unwrap();
    let parts: Vec<&str> = header.split(' ').collect();
    assert_eq!(
        parts,
        vec![got[0].signed_with(&new), got[0].signed_with(&old)],
        "B signs with the new secret and, during the grace, the old one"
    );
}

#[cfg(feature = "mysql")]
#[test]
fn headers_changed_through_one_instance_are_sent_by_the_other_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = always_204();
    let (app_id, key) = a.create_app();
    let (status, created) = a.call(
        "POST",
        "/v1/webhook",
        Some(&key),
        &json!({"uri": receiver.url, "event": "all", "headers": {"X-Token": "one"}}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // B delivers once, so its delivery actor for the webhook is running
    // when the change arrives: the change must retarget it.
    assert!(daemon::wait_until(GIVE_UP, || b
        .deliveries_for(&app_id, "before")
        == Some(1)));
    let got = receiver_wait(&receiver, 1);
    assert_eq!(got[0].header("x-token"), Some("one"));

    let (status, body) = a.call(
        "PUT",
        &format!("/v1/webhook/{id}"),
        Some(&key),
        &json!({"uri": receiver.url, "event": "all", "headers": {"X-Token": "two"}}),
    );
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    let took = first_true(changed, || {
        b.get_webhook(&key, &id).1["headers"] == json!({"X-Token": "two"})
    });
    assert_within_requirement(took, "B shows the headers A set");
    assert_eq!(b.deliveries_for(&app_id, "after"), Some(1));
    let got = receiver_wait(&receiver, 2);
    assert_eq!(
        got[1].header("x-token"),
        Some("two"),
        "B sent the old headers"
    );
}

#[cfg(feature = "mysql")]
#[test]
fn a_webhook_deleted_through_one_instance_is_gone_on_the_other_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = always_204();
    let (app_id, key) = a.create_app();
    let id = a.create_webhook(&key, &receiver.url)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(daemon::wait_until(GIVE_UP, || b
        .deliveries_for(&app_id, "before")
        == Some(1)));

    let (status, body) = a.call(
        "DELETE",
        &format!("/v1/webhook/{id}"),
        Some(&key),
        &Value::Null,
    );
    assert!((200..300).contains(&status), "{status} {body}");
    let deleted = Instant::now();
    let took = first_true(deleted, || b.get_webhook(&key, &id).0 == 404);
    assert_within_requirement(took, "B answers 404 for the webhook A deleted");
    assert_eq!(b.deliveries_for(&app_id, "after"), Some(0));
}

#[cfg(feature = "mysql")]
#[test]
fn a_webhook_one_instance_disables_on_a_410_is_disabled_on_the_other_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = daemon::background_receiver(|_, _| Answer::status(410));
    let (app_id, key) = a.create_app();
    let id = a.create_webhook(&key, &receiver.url)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(daemon::wait_until(GIVE_UP, || b.get_webhook(&key, &id).0 == 200));
    assert_eq!(a.deliveries_for(&app_id, "gone"), Some(1));
    // A disables it on its own: there is no 2xx to time from, so the clock
    // starts when A first shows it disabled.
    assert!(daemon::wait_until(GIVE_UP, || a.get_webhook(&key, &id).1
        ["status"]
        == "disabled"));
    let seen_on_a = Instant::now();
    let took = first_true(seen_on_a, || {
        b.get_webhook(&key, &id).1["status"] == "disabled"
    });
    assert_within_requirement(took, "B shows the webhook A disabled on a 410");
    assert_eq!(b.deliveries_for(&app_id, "after"), Some(0));
}

/// A `channel_live` event for `app_id`, as `POST /v1/events` takes it.
fn event_for(app_id: &str) -> Value {
    json!({"event": "channel_live", "appId": app_id, "channel": {"id": "k"}})
}

impl Instance {
    /// Whether `key` may list webhooks here (200), or the status instead.
    fn lists_webhooks_with(&self, key: &str) -> u16 {
        self.call("GET", "/v1/webhook", Some(key), &Value::Null).0
    }

    /// [`Self::lists_webhooks_with`] as a timed check's [`Self::probe`].
    fn listing_probe(&self, key: &str) -> u16 {
        self.probe("GET", "/v1/webhook", key, "")
    }

    /// A request that changes nothing, for the checks timed against
    /// [`REQUIRED`]: its status, or 0 when it had no answer within
    /// [`PROBE_WAIT`], so that the next check goes out at once. Under the
    /// load of a parallel test run, one loopback exchange in a few hundred
    /// now and then took over half a second although the broker's own
    /// handling of it took under 30 ms (tracked in issue 9); waiting it out
    /// would time that stall, not how long the change took to arrive.
    fn probe(&self, method: &str, path: &str, token: &str, body: &str) -> u16 {
        daemon::try_http(self.port, method, path, Some(token), body, PROBE_WAIT)
            .map_or(0, |(status, _)| status)
    }

    /// Ingests an event for `app_id` with `token`: the status.
    fn ingest_status(&self, token: &str, app_id: &str) -> u16 {
        self.call("POST", "/v1/events", Some(token), &event_for(app_id))
            .0
    }

    /// Sends `token` with an event for an app outside its scope: 403 when
    /// this instance knows the key (and its scope), 401 when it does not.
    /// Nothing is written either way, so the answer is as fast as the
    /// instance's view of the key: an accepted event's 202 also waits for
    /// its commit to reach the disk, which on a busy disk took over a
    /// second in CI and says nothing about coherence.
    fn ingest_probe(&self, token: &str) -> u16 {
        let event = event_for("not-in-its-scope").to_string();
        self.probe("POST", "/v1/events", token, &event)
    }

    /// An admin call that must answer `want`; its body.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    fn admin(&self, method: &str, path: &str, body: &Value, want: u16) -> Value {
        let (status, body) = self.call(method, path, Some(ADMIN_TOKEN), body);
        assert_eq!(status, want, "{method} {path}: {body}");
        body
    }
}

#[cfg(feature = "mysql")]
#[test]
fn keys_created_or_revoked_through_one_instance_are_in_force_on_the_other_within_a_second() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let (app_id, first) = a.create_app();
    let keys = format!("/v1/apps/{app_id}/keys");

    let second = a.admin("POST", &keys, &Value::Null, 201);
    let second_key = second["apiKey"].as_str().unwrap().to_owned();
    let took = first_true(Instant::now(), || b.listing_probe(&second_key) == 200);
    assert_within_requirement(took, "B accepts the app key created through A");

    let first_id = b.admin("GET", &keys, &Value::Null, 200)["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(daemon::wait_until(GIVE_UP, || a
        .lists_webhooks_with(&first)
        == 200));
    b.admin("DELETE", &format!("{keys}/{first_id}"), &Value::Null, 200);
    let revoked = Instant::now();
    assert_eq!(b.lists_webhooks_with(&first), 401, "B refuses it at once");
    let took = first_true(revoked, || a.listing_probe(&first) == 401);
    assert_within_requirement(took, "A refuses the app key revoked through B");
    assert_eq!(a.lists_webhooks_with(&second_key), 200);

    let ingest = b.admin("POST", "/v1/ingest-keys", &json!({"apps": [app_id]}), 201);
    let ingest_key = ingest["apiKey"].as_str().unwrap().to_owned();
    let took = first_true(Instant::now(), || a.ingest_probe(&ingest_key) == 403);
    assert_within_requirement(took, "A accepts the ingest key created through B");
    assert_eq!(a.ingest_status(&ingest_key, &app_id), 202);
    a.admin(
        "DELETE",
        &format!("/v1/ingest-keys/{}", ingest["id"].as_str().unwrap()),
        &Value::Null,
        200,
    );
    let revoked = Instant::now();
    let took = first_true(revoked, || b.ingest_probe(&ingest_key) == 401);
    assert_within_requirement(took, "B refuses the ingest key revoked through A");
    assert_eq!(b.ingest_status(&ingest_key, &app_id), 401);
}

/// Runs the CLI against `db` with `args`; its JSON output.
fn cli_json(dir: &std::path::Path, db: &TestDb, args: &[&str]) -> (Value, Instant) {
    let url = daemon::database_url(db);
    let out = daemon::command(dir, &[("DATABASE_URL", url.as_str())])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("the CLI runs");
    let exited = Instant::now();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}")),
        exited,
    )
}

fn keys_made_or_revoked_by_the_cli_are_in_force_on_a_running_daemon_within_a_second(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Instance::start(dir.path(), &db, "coherence-cli-keys");
    let (app_id, first, _) = cli_create_app(dir.path(), &db);

    let (second, exited) = cli_json(
        dir.path(),
        &db,
        &["apps", "keys", "create", &app_id, "--name", "ci"],
    );
    let second_key = second["apiKey"].as_str().unwrap().to_owned();
    assert!(second_key.starts_with("wbk_"));
    let took = first_true(exited, || broker.listing_probe(&second_key) == 200);
    assert_within_requirement(took, "the daemon accepts the CLI's second key");

    let (listed, _) = cli_json(dir.path(), &db, &["apps", "keys", "list", &app_id]);
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!Value::Array(listed.clone())
        .to_string()
        .contains(&second_key[12..]));
    assert_eq!(listed[1]["name"], "ci");
    let first_id = listed[0]["id"].as_str().unwrap();

    assert!(daemon::wait_until(GIVE_UP, || broker
        .lists_webhooks_with(&first)
        == 200));
    let (_, exited) = cli_json(
        dir.path(),
        &db,
        &["apps", "keys", "revoke", &app_id, first_id],
    );
    let took = first_true(exited, || broker.listing_probe(&first) == 401);
    assert_within_requirement(took, "the daemon refuses the key the CLI revoked");

    let (ingest, exited) = cli_json(
        dir.path(),
        &db,
        &["ingest-keys", "create", "--app", &app_id],
    );
    let ingest_key = ingest["apiKey"].as_str().unwrap().to_owned();
    assert_eq!(ingest["apps"], json!([app_id]));
    let took = first_true(exited, || broker.ingest_probe(&ingest_key) == 403);
    assert_within_requirement(took, "the daemon accepts the CLI's ingest key");
    assert_eq!(broker.ingest_status(&ingest_key, &app_id), 202);
    assert_eq!(broker.lists_webhooks_with(&ingest_key), 403);
    let (listed, _) = cli_json(dir.path(), &db, &["ingest-keys", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let ingest_id = ingest["id"].as_str().unwrap();
    let (_, exited) = cli_json(dir.path(), &db, &["ingest-keys", "revoke", ingest_id]);
    let took = first_true(exited, || broker.ingest_probe(&ingest_key) == 401);
    assert_within_requirement(took, "the daemon refuses the ingest key the CLI revoked");
    assert_eq!(broker.ingest_status(&ingest_key, &app_id), 401);
}

on_both_stores_sync!(
    keys_made_or_revoked_by_the_cli_are_in_force_on_a_running_daemon_within_a_second
);

/// `webhook-broker apps create` against `db`: (id, key), and the moment
/// the command exited.
fn cli_create_app(dir: &std::path::Path, db: &TestDb) -> (String, String, Instant) {
    let (app, exited) = cli_json(dir, db, &["apps", "create", "from-the-cli"]);
    (
        app["id"].as_str().unwrap().to_owned(),
        app["apiKey"].as_str().unwrap().to_owned(),
        exited,
    )
}

fn an_app_created_by_the_cli_authenticates_on_a_running_daemon_within_a_second(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Instance::start(dir.path(), &db, "coherence-cli");
    let receiver = always_204();
    let (app_id, key, exited) = cli_create_app(dir.path(), &db);
    let took = first_true(exited, || broker.listing_probe(&key) == 200);
    assert_within_requirement(took, "the daemon accepts the CLI's new key");
    broker.create_webhook(&key, &receiver.url);
    assert_eq!(broker.deliveries_for(&app_id, "c"), Some(1));
    receiver_wait(&receiver, 1);
}

on_both_stores_sync!(an_app_created_by_the_cli_authenticates_on_a_running_daemon_within_a_second);

/// A webhook row as the broker would write it, for `app_id`.
fn webhook_row(app_id: &str, uri: &str) -> WebhookRow {
    common::webhook_row(&db::new_id("wh"), app_id, uri, "channel_live")
}

/// Writes `n` webhooks for `app_id` in one transaction (so the poller meets
/// all their changes at once); answers when it committed.
/// Off the test's own thread: a long write there would stall the client's
/// pooled connections until the server's keep-alive dropped them.
async fn write_webhooks(app: &TestApp, app_id: &str, n: usize) -> Instant {
    let mut conn = app.conn();
    let app_id = app_id.to_owned();
    actix_web::web::block(move || {
        conn.transaction(|c| {
            for _ in 0..n {
                db::webhooks::insert(c, &webhook_row(&app_id, "http://127.0.0.1:9/hook"))?;
            }
            Ok::<_, diesel::result::Error>(())
        })
    })
    .await
    .expect("the blocking pool runs")
    .expect("webhooks written");
    Instant::now()
}

async fn total_webhooks(app: &TestApp, key: &str) -> u64 {
    let r = app
        .call("GET", "/v1/webhook?length=1", Some(key), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["total"].as_u64().unwrap()
}

async fn wait_total(app: &TestApp, key: &str, want: u64, since: Instant) -> Option<Duration> {
    loop {
        if total_webhooks(app, key).await == want {
            return Some(since.elapsed());
        }
        if since.elapsed() > GIVE_UP {
            return None;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn changes_at_and_beyond_the_page_limit_all_arrive_within_a_second(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (app_id, key) = app.create_app("pages").await;
    let page = CHANGE_PAGE as usize;

    // Exactly one page, then one and a half more: 2,500 changes in all.
    let at = write_webhooks(&app, &app_id, page).await;
    let took = wait_total(&app, &key, page as u64, at).await;
    assert_within_requirement(took, "one full page of changes applied");
    let more = 2500 - page;
    let at = write_webhooks(&app, &app_id, more).await;
    let took = wait_total(&app, &key, 2500, at).await;
    assert_within_requirement(took, "2,500 changes across pages applied");
    assert_eq!(
        db::changes::current(&mut app.conn()).unwrap(),
        2 + 2500,
        "one version per change (the app, its first key and 2,500 webhooks)"
    );
}

async fn a_poller_that_fell_behind_a_pruned_log_reloads_everything(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("behind").await;
    let kept = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let doomed = app.create_webhook(&key, &receiver.url, json!("all")).await;
    let doomed_id = doomed["id"].as_str().unwrap();

    // Another writer adds one webhook and deletes one, and the log rows of
    // both are pruned before this broker reads them.
    let added = webhook_row(&app_id, &receiver.url);
    let mut conn = app.conn();
    conn.transaction(|c| {
        db::webhooks::insert(c, &added)?;
        db::webhooks::delete(c, doomed_id)?;
        diesel::delete(db::schema::registry_changes::table).execute(c)?;
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    drop(conn);
    let at = Instant::now();

    let mut took = None;
    while at.elapsed() <= GIVE_UP {
        let gone = app
            .call("GET", &format!("/v1/webhook/{doomed_id}"), Some(&key), None)
            .await;
        if gone.status == 404 {
            took = Some(at.elapsed());
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(total_webhooks(&app, &key).await, 2);
    let r = app
        .call("GET", &format!("/v1/webhook/{doomed_id}"), Some(&key), None)
        .await;
    assert_eq!(r.status, 404, "the deleted webhook is gone: {:?}", r.body);
    let r = app
        .call(
            "GET",
            &format!("/v1/webhook/{}", added.id),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "the added webhook is there: {:?}", r.body);
    assert_within_requirement(took, "a full reload after the log was pruned");

    // Deliveries go to exactly the reloaded set.
    let r = app
        .send_event(&app_id, "channel_live", json!({"id": "c"}))
        .await;
    assert_eq!(r.body["deliveries"], 2, "{:?}", r.body);
    assert_eq!(receiver.wait_for(2, GIVE_UP).await.len(), 2);
    let r = app
        .call(
            "GET",
            &format!("/v1/webhook/{}", kept["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        r.status, 200,
        "the untouched webhook is there: {:?}",
        r.body
    );
}

async fn an_instances_own_changes_coming_back_from_the_log_change_nothing(store: Store) {
    let Some(db) = TestDb::new(store) else { return };
    let app = TestApp::spawn_with(Arc::new(db), |_| {}).await;
    let receiver = Receiver::start();
    let (app_id, key) = app.create_app("own").await;
    let id = app.create_webhook(&key, &receiver.url, json!("all")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            "PUT",
            &format!("/v1/webhook/{id}"),
            Some(&key),
            Some(&json!({"uri": receiver.url, "event": "all", "status": "disabled"})),
        )
        .await;
    assert_eq!(r.status, 200);
    // Several polls read the change back; the webhook stays as it was left.
    actix_web::rt::time::sleep(Duration::from_millis(600)).await;
    let r = app.send_event(&app_id, "channel_live", json!({})).await;
    assert_eq!(r.body["deliveries"], 0, "{:?}", r.body);
    let r = app
        .call("GET", &format!("/v1/webhook/{id}"), Some(&key), None)
        .await;
    assert_eq!(r.body["status"], "disabled", "{:?}", r.body);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());
}

on_both_stores!(
    changes_at_and_beyond_the_page_limit_all_arrive_within_a_second,
    a_poller_that_fell_behind_a_pruned_log_reloads_everything,
    an_instances_own_changes_coming_back_from_the_log_change_nothing,
);

/// Many writers at once, each holding its transaction open a little after
/// logging its change (a commit that comes late), while a reader follows
/// the log: the reader gets every version, in order, exactly once, and
/// never a gap (`Changes::Behind`) although nothing was pruned.
#[cfg(feature = "mysql")]
#[test]
fn versions_from_concurrent_writers_are_read_in_order_with_none_skipped() {
    use db::changes::Changes;
    let Some(test_db) = TestDb::new(Store::Mysql) else {
        return;
    };
    let pool = db::open(&test_db.url).expect("database opens");
    let app_id = {
        let mut conn = pool.get().unwrap();
        db::apps::create(&mut conn, "writers".into())
            .unwrap()
            .row
            .id
    };
    const WRITERS: usize = 4;
    const EACH: usize = 60;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (pool, app_id) = (pool.clone(), app_id.clone());
            std::thread::spawn(move || {
                let mut conn = pool.get().unwrap();
                for i in 0..EACH {
                    conn.transaction(|c| {
                        db::webhooks::insert(c, &webhook_row(&app_id, "http://127.0.0.1:9/"))?;
                        // Late commits, of varying lateness.
                        std::thread::sleep(Duration::from_millis(((w + i) % 3) as u64));
                        Ok::<_, diesel::result::Error>(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    // The app and its first key, then the webhooks.
    let total = 2 + (WRITERS * EACH) as i64;
    let mut conn = pool.get().unwrap();
    let mut last = 0;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while last < total && Instant::now() < deadline {
        match db::changes::since(&mut conn, last, 7).unwrap() {
            Changes::Next(rows) => {
                for row in rows {
                    assert_eq!(row.version, last + 1, "out of order or skipped");
                    last = row.version;
                    seen.push(row.entity_id);
                }
            }
            Changes::Behind(current) => panic!("a gap after {last} (current {current})"),
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(last, total);
    assert_eq!(db::changes::current(&mut conn).unwrap(), total);
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a change was read twice");
    assert_eq!(seen[0], app_id, "the app came first");
}

async fn the_janitor_prunes_change_rows_older_than_an_hour(store: Store) {
    use webhook_broker::actors::janitor::PruneNow;
    use webhook_broker::db::schema::registry_changes;
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let (_, key) = app.create_app("prune").await;
    let receiver = Receiver::start();
    for _ in 0..3 {
        app.create_webhook(&key, &receiver.url, json!("all")).await;
    }
    // The app's change, its first key's and the first webhook's are made
    // two hours old.
    let two_hours_ago = db::now_ms() - 2 * 3600 * 1000;
    diesel::update(registry_changes::table.filter(registry_changes::version.le(3)))
        .set(registry_changes::at.eq(two_hours_ago))
        .execute(&mut app.conn())
        .unwrap();
    app.broker.janitor.send(PruneNow).await.unwrap().unwrap();
    let left: Vec<i64> = registry_changes::table
        .select(registry_changes::version)
        .order(registry_changes::version)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(left, vec![4, 5]);
    // A reader that had not passed version 1 can no longer follow the log.
    assert_eq!(
        db::changes::since(&mut app.conn(), 1, 10).unwrap(),
        db::changes::Changes::Behind(5)
    );
    // One that had read up to 3 follows it as before.
    assert!(matches!(
        db::changes::since(&mut app.conn(), 3, 10).unwrap(),
        db::changes::Changes::Next(rows) if rows.len() == 2
    ));
}

on_both_stores!(the_janitor_prunes_change_rows_older_than_an_hour);

#[cfg(feature = "mysql")]
#[test]
fn a_test_event_sent_through_either_instance_arrives_once_whichever_holds_the_webhook() {
    let Some((_db, _dir, a, b)) = two_instances() else {
        return;
    };
    let receiver = always_204();
    let (_, key) = a.create_app();
    let id = a.create_webhook(&key, &receiver.url)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(daemon::wait_until(GIVE_UP, || b.get_webhook(&key, &id).0 == 200));
    let test = format!("/v1/webhook/{id}/test");
    let mut sent = Vec::new();
    for node in [&a, &b] {
        let (status, body) = node.call("POST", &test, Some(&key), &Value::Null);
        assert_eq!(status, 202, "{body}");
        sent.push(body["id"].as_str().unwrap().to_owned());
    }
    let got = receiver_wait(&receiver, 2);
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent, "each test event arrives once");
    assert!(got.iter().all(|r| r.json()["test"] == true));
}
