//! The real `webhook-broker` binary as a child process: started with a
//! cleared environment plus the given variables, its stderr lines on a
//! channel, its port from the "listening on HOST:PORT" log line, stopped
//! with SIGKILL or SIGTERM; a tiny blocking HTTP client to talk to it; a
//! recording receiver on a thread of its own, for tests that block.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Answer, Received, Receiver, TestDb, ADMIN_TOKEN};
use webhook_broker::config::DatabaseUrl;

/// The binary under test, as cargo built it for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_webhook-broker");

/// The daemon with the given environment only (plus PATH), in `dir`: no
/// `.env` of the repository is read.
pub fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The `DATABASE_URL` of a test database, as the binary takes it.
pub fn database_url(db: &TestDb) -> String {
    match &db.url {
        DatabaseUrl::Sqlite(path) => path.clone(),
        DatabaseUrl::Mysql(url) => url.clone(),
    }
}

/// A running daemon whose stderr lines arrive on a channel. Dropping it
/// kills the process (SIGKILL) and reaps it.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub seen: Vec<String>,
    /// When the process was started.
    pub started: Instant,
}

impl Running {
    /// Spawns `cmd` (built with [`command`]).
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Starts the daemon in `dir` with `env` and waits for its port.
    pub fn listening(dir: &Path, env: &[(&str, &str)]) -> (Running, u16) {
        let mut running = Running::start(command(dir, env));
        let port = running.port();
        (running, port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for a stderr line containing `needle`.
    pub fn wait_line_within(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits (up to 30 s) for a stderr line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        match self.wait_line_within(needle, Duration::from_secs(30)) {
            Some(line) => line,
            None => panic!("no line with {needle:?}; stderr so far: {:#?}", self.seen),
        }
    }

    /// The port from the "listening on HOST:PORT" log line.
    pub fn port(&mut self) -> u16 {
        let line = self.wait_line("listening on");
        line.rsplit(':').next().unwrap().trim().parse().unwrap()
    }

    /// Reads the stderr lines that have arrived so far into `seen`.
    pub fn drain_lines(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// The stderr lines so far, for a failure message.
    pub fn log(&mut self) -> String {
        self.drain_lines();
        self.seen.join("\n")
    }

    /// `kill -9`: the process dies at once, wherever it is; reaped here.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The stderr reader ends with the pipe; keep what it read.
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// Sends SIGTERM (through `kill(1)`).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits up to `within` for the process to exit; its status, or `None`
    /// if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("cannot wait for the broker: {e}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the daemon warned about, which is most
        // often why it failed (a timing miss says nothing by itself).
        if std::thread::panicking() {
            self.drain_lines();
            let pid = self.child.id();
            for line in self
                .seen
                .iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                eprintln!("daemon {pid}: {line}");
            }
        }
    }
}

/// A blocking HTTP/1.1 exchange that reports failures instead of panicking:
/// (status, body), or why there was no answer within `timeout`.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {response:?}"),
            )
        })?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A minimal blocking HTTP/1.1 client: (status, body); panics when the
/// broker does not answer within 10 s.
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    try_http(port, method, path, token, body, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// Creates an app and a webhook for `events` at `uri` through the admin
/// token; returns (app id, webhook id).
pub fn app_with_webhook(port: u16, uri: &str, events: &str) -> (String, String) {
    let (status, body) = http(
        port,
        "POST",
        "/v1/apps",
        Some(ADMIN_TOKEN),
        r#"{"name":"crash-test"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let app: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = app["apiKey"].as_str().unwrap();
    let (status, body) = http(
        port,
        "POST",
        "/v1/webhook",
        Some(key),
        &serde_json::json!({ "uri": uri, "event": events }).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let webhook: serde_json::Value = serde_json::from_str(&body).unwrap();
    (
        app["id"].as_str().unwrap().to_owned(),
        webhook["id"].as_str().unwrap().to_owned(),
    )
}

/// Creates an app named `name` with `webhooks` webhooks for every event,
/// at `{base}/0`, `{base}/1`, ...; returns (app id, API key).
#[allow(dead_code)]
pub fn app_with_numbered_webhooks(
    port: u16,
    name: &str,
    base: &str,
    webhooks: usize,
) -> (String, String) {
    let body = serde_json::json!({ "name": name }).to_string();
    let (status, answer) = http(port, "POST", "/v1/apps", Some(ADMIN_TOKEN), &body);
    assert_eq!(status, 201, "{answer}");
    let app: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let (app_id, key) = (
        app["id"].as_str().unwrap().to_owned(),
        app["apiKey"].as_str().unwrap().to_owned(),
    );
    for k in 0..webhooks {
        let body = serde_json::json!({"uri": format!("{base}/{k}"), "event": "all"}).to_string();
        let (status, answer) = http(port, "POST", "/v1/webhook", Some(&key), &body);
        assert_eq!(status, 201, "{answer}");
    }
    (app_id, key)
}

/// Sends events `0..events` (`{"id": "ch-{seq % channels}", "seq": seq}`)
/// from `senders` threads; each channel's events come from one sender, one
/// after another, when `senders` divides `channels`, so their order is
/// defined. Every event must be answered 202 within `timeout`.
#[allow(dead_code)]
pub fn send_in_channels(
    port: u16,
    app_id: &str,
    events: u64,
    channels: u64,
    senders: u64,
    timeout: Duration,
) {
    let threads: Vec<_> = (0..senders)
        .map(|t| {
            let app_id = app_id.to_owned();
            std::thread::spawn(move || {
                for seq in (t..events).step_by(senders as usize) {
                    let channel =
                        serde_json::json!({"id": format!("ch-{}", seq % channels), "seq": seq});
                    let (status, body) =
                        send_event(port, &app_id, channel, timeout).expect("the broker answers");
                    assert_eq!(status, 202, "{body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender");
    }
}

/// Ingests a `channel_live` event with the given channel object; returns
/// (status, body), or the transport error.
pub fn send_event(
    port: u16,
    app_id: &str,
    channel: serde_json::Value,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let body = serde_json::json!({ "event": "channel_live", "appId": app_id, "channel": channel });
    try_http(
        port,
        "POST",
        "/v1/events",
        Some(ADMIN_TOKEN),
        &body.to_string(),
        timeout,
    )
}

/// A recording [`Receiver`] running in an actix System on a thread of its
/// own, so that a plain `#[test]` may block (on processes, on the HTTP
/// client) while it answers. The thread lives as long as the test binary.
pub fn background_receiver(
    respond: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
) -> Receiver {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let receiver = Receiver::start_with(respond);
            // Let the server start before anyone posts to it.
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            tx.send(receiver).expect("the test waits for its receiver");
            std::future::pending::<()>().await;
        })
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("receiver starts")
}

/// Polls `check` every 20 ms until it is true or `within` passes; returns
/// the last result.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The environment of a daemon on `db` named `instance`, allowed to deliver
/// to loopback receivers, retrying on `retry_schedule`.
#[allow(dead_code)]
pub fn broker_env(db: &TestDb, instance: &str, retry_schedule: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url(db)),
        ("BROKER_BIND", "127.0.0.1:0".into()),
        ("BROKER_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("BROKER_ALLOW_PRIVATE_TARGETS", "true".into()),
        ("BROKER_INSTANCE_ID", instance.into()),
        ("BROKER_RETRY_SCHEDULE", retry_schedule.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
