//! Operating the broker: health, readiness (also when the database goes
//! away), Prometheus metrics moving with real deliveries, and the systemd
//! notify protocol against a real datagram socket.

mod common;

use std::time::Duration;

use serde_json::json;

use common::{Receiver, Store, TestApp};

async fn health_and_readiness_answer_200(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    let r = app.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "ready");
}

/// The value of one sample line of the exposition, 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn metrics_move_with_real_deliveries(store: Store) {
    let Some(app) = TestApp::spawn(store).await else {
        return;
    };
    let receiver = Receiver::start_scripted(&[500]);
    let (app_id, key) = app.create_app("m").await;
    app.create_webhook(&key, &receiver.url, json!("all")).await;

    let before = metrics_text(&app).await;
    app.send_event(&app_id, "channel_ended", json!({"id": "c"}))
        .await;
    receiver.wait_for(2, Duration::from_secs(5)).await;
    // Outcomes are counted when the actor judges the answer, just after.
    let mut after = String::new();
    for _ in 0..50 {
        after = metrics_text(&app).await;
        let ok = "webhook_broker_delivery_attempts_total{outcome=\"succeeded\"}";
        if sample(&after, ok) > sample(&before, ok) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, at_least) in [
        (
            "webhook_broker_events_ingested_total{event=\"channel_ended\"}",
            1.0,
        ),
        (
            "webhook_broker_delivery_attempts_total{outcome=\"retried\"}",
            1.0,
        ),
        (
            "webhook_broker_delivery_attempts_total{outcome=\"succeeded\"}",
            1.0,
        ),
        (
            "webhook_broker_delivery_attempt_duration_seconds_count",
            2.0,
        ),
    ] {
        assert!(
            sample(&after, name) - sample(&before, name) >= at_least,
            "{name} did not move:\n{after}"
        );
    }
    for name in [
        "webhook_broker_deliveries_pending",
        "webhook_broker_deliveries_in_flight",
        "webhook_broker_webhooks_registered",
        "webhook_broker_webhooks_disabled",
        "webhook_broker_database_errors_total",
    ] {
        assert!(after.contains(name), "{name} missing");
    }
    assert!(!after.contains(&key), "an API key leaked into the metrics");
    assert!(!after.contains(&app_id), "tenant ids are not labels");
}

async fn metrics_text(app: &TestApp) -> String {
    let mut res = awc::Client::default()
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
}

/// Needs a MySQL server to take away (`cargo test --features mysql`).
#[cfg(feature = "mysql")]
mod database_away {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use common::TestDb;
    use webhook_broker::config::DatabaseUrl;

    /// A TCP proxy to MariaDB that the test can cut and restore, to take the
    /// database away from one broker without disturbing anything else.
    struct Proxy {
        port: u16,
        up: Arc<AtomicBool>,
        conns: Arc<Mutex<Vec<TcpStream>>>,
    }

    impl Proxy {
        fn start(upstream: u16) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let up = Arc::new(AtomicBool::new(true));
            let conns = Arc::new(Mutex::new(Vec::new()));
            let (u, c) = (up.clone(), conns.clone());
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    if !u.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    c.lock().unwrap().push(client.try_clone().unwrap());
                    c.lock().unwrap().push(server.try_clone().unwrap());
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                }
            });
            Proxy { port, up, conns }
        }

        fn cut(&self) {
            self.up.store(false, Ordering::SeqCst);
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }

        fn restore(&self) {
            self.up.store(true, Ordering::SeqCst);
        }
    }

    fn pipe(mut from: TcpStream, mut to: TcpStream) {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }

    #[actix_web::test]
    async fn readiness_turns_503_while_the_database_is_away_and_back_to_200() {
        let Some(db) = TestDb::new(Store::Mysql) else {
            return;
        };
        let DatabaseUrl::Mysql(url) = db.url.clone() else {
            unreachable!()
        };
        let proxy = Proxy::start(3306);
        let via_proxy = url.replacen("127.0.0.1:3306", &format!("127.0.0.1:{}", proxy.port), 1);
        assert_ne!(via_proxy, url, "the test database URL is on 127.0.0.1:3306");
        let app = TestApp::spawn_with(Arc::new(db), |c| {
            c.database_url = DatabaseUrl::Mysql(via_proxy);
        })
        .await;
        assert_eq!(app.call("GET", "/readyz", None, None).await.status, 200);

        proxy.cut();
        let r = app.call("GET", "/readyz", None, None).await;
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"));
        assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);

        proxy.restore();
        assert!(
            common::eventually(Duration::from_secs(10), || true).await,
            "unreachable"
        );
        let mut status = 0;
        for _ in 0..40 {
            status = app.call("GET", "/readyz", None, None).await.status.as_u16();
            if status == 200 {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(status, 200, "readiness did not come back with the database");
    }
}

on_both_stores!(
    health_and_readiness_answer_200,
    metrics_move_with_real_deliveries,
);

#[test]
fn the_daemon_speaks_the_systemd_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // systemd names the watched process in WATCHDOG_PID; `exec` keeps the
    // shell's pid for the broker.
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\"",
            env!("CARGO_BIN_EXE_webhook-broker"),
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("BROKER_BIND", "127.0.0.1:0")
        .env("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .env("DATABASE_URL", dir.path().join("b.db"))
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut buf = [0u8; 4096];
    let mut recv = || {
        let n = socket.recv(&mut buf).expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // Pings at half of WATCHDOG_USEC while the actors answer.
    let started = std::time::Instant::now();
    let mut pings = 0;
    while pings < 3 {
        if recv().lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3), "pings too slow");
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let mut stopping = false;
    for _ in 0..20 {
        if recv().lines().any(|l| l == "STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
}

/// Kills the daemon if the test fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
