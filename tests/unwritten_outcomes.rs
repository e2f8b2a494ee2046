//! The broker never sends far ahead of writing down what came of it. While
//! outcomes cannot be committed as fast as deliveries go out (here the
//! database stalls for a few seconds in the middle of a drain), the delivery
//! actors wait for the recorder (`MAX_UNWRITTEN` outcomes at most), so that a
//! `kill -9` sends again only that many deliveries, and a SIGTERM right
//! after the last arrival has little to write and writes all of it. Real
//! binary, real database, figures from the process boundary.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;

use common::daemon::{self, Running};
use common::{Answer, Store, TestDb};
use webhook_broker::actors::recorder::MAX_UNWRITTEN;
use webhook_broker::config::DatabaseUrl;
use webhook_broker::db::schema::deliveries;
use webhook_broker::domain::DeliveryStatus;

const EVENTS: u64 = 2_000;
const WEBHOOKS: usize = 10;
/// A multiple of the four senders: each channel has one sender, which sends
/// its events one after another, so their order is defined.
const CHANNELS: u64 = 48;
/// Attempts that may be under way beyond the bound when the recorder falls
/// behind: at most one per channel of each webhook.
const IN_FLIGHT: usize = WEBHOOKS * CHANNELS as usize;
/// How long the database takes no writes, mid-drain.
const STALL: Duration = Duration::from_secs(3);

/// One 2xx arrival: `(webhook-id, receiver path, channel, seq)`.
type Arrival = (String, String, String, u64);

/// `webhook_broker_delivery_outcomes_unwritten` on `port`, if it answers.
fn unwritten(port: u16) -> Option<f64> {
    let (status, text) =
        daemon::try_http(port, "GET", "/metrics", None, "", Duration::from_secs(2)).ok()?;
    (status == 200).then_some(())?;
    text.lines()
        .find(|l| l.starts_with("webhook_broker_delivery_outcomes_unwritten "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Stalls the broker's writes for `stall`, as a slow or locked database
/// would, calling `during` meanwhile: on SQLite the test holds the write
/// lock; on MySQL it holds every lease row, which the recorder locks before
/// writing outcomes. Reads go on, and so do the sends, up to the bound.
fn stall_writes(db: &TestDb, stall: Duration, mut during: impl FnMut()) {
    let until = Instant::now() + stall;
    let mut wait = || {
        while Instant::now() < until {
            during();
        }
    };
    match &db.url {
        DatabaseUrl::Sqlite(path) => {
            let mut c = diesel::SqliteConnection::establish(path).expect("open the SQLite file");
            diesel::connection::SimpleConnection::batch_execute(
                &mut c,
                "PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;",
            )
            .expect("take the write lock");
            wait();
            diesel::connection::SimpleConnection::batch_execute(&mut c, "COMMIT").unwrap();
        }
        #[cfg(feature = "mysql")]
        DatabaseUrl::Mysql(url) => {
            let mut c = diesel::MysqlConnection::establish(url).expect("connect");
            diesel::connection::SimpleConnection::batch_execute(&mut c, "BEGIN").unwrap();
            diesel::sql_query("SELECT webhook_id FROM webhook_leases FOR UPDATE")
                .execute(&mut c)
                .expect("lock the lease rows");
            wait();
            diesel::connection::SimpleConnection::batch_execute(&mut c, "COMMIT").unwrap();
        }
        #[cfg(not(feature = "mysql"))]
        DatabaseUrl::Mysql(_) => unreachable!("no MySQL test without the mysql feature"),
    }
}

fn pending_rows(db: &TestDb) -> i64 {
    let pool = webhook_broker::db::open(&db.url).expect("database opens");
    let mut conn = pool.get().expect("a connection");
    deliveries::table
        .filter(deliveries::status.eq(DeliveryStatus::Pending))
        .count()
        .get_result(&mut conn)
        .expect("count pending deliveries")
}

fn a_crash_while_a_backlog_drains_sends_again_only_what_was_unwritten(store: Store) {
    let Some(db) = TestDb::new(store) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let receiver = {
        let (up, arrivals) = (up.clone(), arrivals.clone());
        daemon::background_receiver(move |req, _| {
            if !up.load(Ordering::SeqCst) {
                return Answer::status(503);
            }
            let body = req.json();
            arrivals.lock().unwrap().push((
                req.header("webhook-id").unwrap_or_default().to_owned(),
                req.path.clone(),
                body["id"].as_str().unwrap_or_default().to_owned(),
                body["seq"].as_u64().unwrap_or_default(),
            ));
            Answer::status(204)
        })
    };
    let arrived = || arrivals.lock().unwrap().len();
    // Retries 1 s apart: the channel heads answered 503 go again soon after
    // the receivers come up, and nothing fails for good meanwhile.
    let mut env = daemon::broker_env(&db, "unwritten-broker", &vec!["1s"; 100].join(","));
    // Far longer than the stall: the leases stay valid through it.
    env.push(("BROKER_LEASE".into(), "60s".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut broker, port) = Running::listening(dir.path(), &env);
    let (app_id, _) =
        daemon::app_with_numbered_webhooks(port, "unwritten", &receiver.url, WEBHOOKS);
    daemon::send_in_channels(port, &app_id, EVENTS, CHANNELS, 4, Duration::from_secs(10));
    let total = EVENTS as usize * WEBHOOKS;

    // The receivers come up: the whole backlog drains at once. Watch how
    // far the writes fall behind, and crash part-way through.
    up.store(true, Ordering::SeqCst);
    let mut most_unwritten = 0f64;
    let mut watch = || {
        if let Some(n) = unwritten(port) {
            most_unwritten = most_unwritten.max(n);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let started = Instant::now();
    while arrived() < total / 20 && started.elapsed() < Duration::from_secs(60) {
        watch();
    }
    let at_stall = arrived();
    stall_writes(&db, STALL, &mut watch);
    let sent_in_stall = arrived() - at_stall;
    while arrived() < total * 2 / 5 && started.elapsed() < Duration::from_secs(120) {
        watch();
    }
    let before_crash = arrived();
    broker.kill9();
    eprintln!(
        "{store:?}: {sent_in_stall} delivered while writes stalled for {STALL:?}; killed with \
         {before_crash} of {total} delivered; at most {most_unwritten} outcomes were unwritten \
         at once (bound {MAX_UNWRITTEN} + {IN_FLIGHT} in flight)"
    );
    assert!(
        before_crash < total,
        "everything was delivered before the crash: the test proves nothing"
    );
    assert!(
        most_unwritten <= (MAX_UNWRITTEN + IN_FLIGHT) as f64,
        "{most_unwritten} outcomes were unwritten at once, over {MAX_UNWRITTEN} + {IN_FLIGHT}"
    );

    let (mut broker, port) = Running::listening(dir.path(), &env);
    let distinct = || {
        let all = arrivals.lock().unwrap();
        all.iter()
            .map(|(id, ..)| id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(
        daemon::wait_until(Duration::from_secs(120), || distinct() >= total),
        "{} of {total} deliveries arrived after the restart; log:\n{}",
        distinct(),
        broker.log()
    );
    // At once, as a deploy would: every outcome must be written before exit.
    let term = Instant::now();
    broker.sigterm();
    let exit = broker.wait_exit(Duration::from_secs(30));
    let took = term.elapsed();
    let log = broker.log();
    assert!(
        exit.is_some_and(|s| s.success()),
        "no clean exit within 30 s of SIGTERM: {exit:?}; log:\n{log}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop with nothing in flight; log:\n{log}"
    );
    let _ = port;
    assert_eq!(
        pending_rows(&db),
        0,
        "delivered deliveries still pending in the database after a clean stop; log:\n{log}"
    );

    let all = arrivals.lock().unwrap().clone();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (id, ..) in &all {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let again = times.values().filter(|&&n| n > 1).count();
    eprintln!("{store:?}: {again} deliveries sent again after the crash; stop took {took:?}");
    assert!(
        again <= MAX_UNWRITTEN + IN_FLIGHT,
        "{again} deliveries were sent again after the crash, over {MAX_UNWRITTEN} + {IN_FLIGHT}"
    );
    // Each channel's first arrivals, per webhook, in order.
    let mut seen = std::collections::HashSet::new();
    let mut order: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for (id, path, channel, seq) in &all {
        if seen.insert(id.as_str()) {
            order.entry((path, channel)).or_default().push(*seq);
        }
    }
    assert_eq!(order.len(), IN_FLIGHT);
    for ((path, channel), seqs) in &order {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{path} {channel} arrived out of order: {seqs:?}"
        );
    }
}

mod a_crash_while_a_backlog_drains_sends_again_only_what_was_unwritten {
    #[test]
    fn sqlite() {
        super::a_crash_while_a_backlog_drains_sends_again_only_what_was_unwritten(
            super::Store::Sqlite,
        )
    }
    #[cfg(feature = "mysql")]
    #[test]
    fn mysql() {
        super::a_crash_while_a_backlog_drains_sends_again_only_what_was_unwritten(
            super::Store::Mysql,
        )
    }
}
