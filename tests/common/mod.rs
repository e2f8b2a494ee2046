//! Shared test harness: the real broker on port 0 over a real SQLite file or
//! a real MariaDB database of its own, and a recording receiver.
#![allow(dead_code)]
pub mod daemon;

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::StatusCode;
#[cfg(feature = "mysql")]
use diesel::connection::SimpleConnection;
#[cfg(feature = "mysql")]
use diesel::{Connection, MysqlConnection};
use serde_json::{json, Value};
use webhook_broker::config::{Config, DatabaseUrl};
use webhook_broker::{Application, Broker};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Mysql,
}

/// Runs an async test body once per store: `on_both_stores!(name, ...)`
/// expands to `name::sqlite` and `name::mysql`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_web::test]
                async fn sqlite() {
                    super::$name($crate::common::Store::Sqlite).await
                }
                #[cfg(feature = "mysql")]
                #[actix_web::test]
                async fn mysql() {
                    super::$name($crate::common::Store::Mysql).await
                }
            }
        )*
    };
}

/// Runs a blocking test body once per store: `on_both_stores_sync!(name, ...)`
/// expands to `name::sqlite` and `name::mysql`.
#[macro_export]
macro_rules! on_both_stores_sync {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::common::Store::Sqlite)
                }
                #[cfg(feature = "mysql")]
                #[test]
                fn mysql() {
                    super::$name($crate::common::Store::Mysql)
                }
            }
        )*
    };
}

/// Asserts a reply is the broker's JSON error with `status`: a non-empty
/// `error.code` and `error.message`.
pub fn assert_error(r: &Reply, status: u16, context: &str) {
    assert_eq!(r.status, status, "{context}: {:?}", r.body);
    let code = r.body["error"]["code"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()),
        "{context}: no error code in {:?}",
        r.body
    );
    let message = r.body["error"]["message"].as_str();
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "{context}: no error message in {:?}",
        r.body
    );
}

/// A database of the test's own, removed when dropped.
pub struct TestDb {
    pub url: DatabaseUrl,
    dir: Option<tempfile::TempDir>,
    mysql: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        #[cfg(feature = "mysql")]
        if let Some((server, name)) = &self.mysql {
            if let Ok(mut conn) = MysqlConnection::establish(server) {
                let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"));
            }
        }
    }
}

/// The MySQL server tests use, or `None` (locally) when none answers.
/// Under CI a missing server is a failure, not a skip. (Only builds with
/// the `mysql` feature have MySQL tests: `cargo test --features mysql`.)
#[cfg(feature = "mysql")]
pub fn mysql_server() -> Option<String> {
    let url =
        std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    match MysqlConnection::establish(&url) {
        Ok(_) => Some(url),
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but the MySQL server at {url} is unreachable: {e}");
            }
            eprintln!("skipping a MySQL test: no server at {url} ({e})");
            None
        }
    }
}

impl TestDb {
    /// A fresh, empty database; `None` when MySQL is asked for and absent.
    pub fn new(store: Store) -> Option<TestDb> {
        match store {
            Store::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("broker.db");
                Some(TestDb {
                    url: DatabaseUrl::Sqlite(path.to_string_lossy().into_owned()),
                    dir: Some(dir),
                    mysql: None,
                })
            }
            #[cfg(not(feature = "mysql"))]
            Store::Mysql => None,
            #[cfg(feature = "mysql")]
            Store::Mysql => {
                let server = mysql_server()?;
                let name = format!("wb_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = MysqlConnection::establish(&server).expect("mysql connect");
                conn.batch_execute(&format!("CREATE DATABASE `{name}`"))
                    .expect("create test database");
                Some(TestDb {
                    url: DatabaseUrl::Mysql(format!("{}/{name}", server.trim_end_matches('/'))),
                    dir: None,
                    mysql: Some((server, name)),
                })
            }
        }
    }
}

/// Test configuration: private targets allowed (receivers are local), one
/// delivery arbiter, fast retries.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::from_lookup(|_| None).expect("defaults");
    config.database_url = db.url.clone();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.admin_token = ADMIN_TOKEN.into();
    config.admin_token_generated = false;
    config.allow_private_targets = true;
    config.retry_schedule = vec![Duration::from_millis(200), Duration::from_millis(200)];
    config.delivery_timeout = Duration::from_secs(2);
    config.delivery_workers = 1;
    config
}

/// The broker running on a free port.
pub struct TestApp {
    pub base: String,
    pub broker: Broker,
    pub db: Arc<TestDb>,
    client: awc::Client,
}

/// A reply: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl TestApp {
    /// Starts the broker on a fresh database of `store`.
    pub async fn spawn(store: Store) -> Option<TestApp> {
        let db = TestDb::new(store)?;
        Some(Self::spawn_with(Arc::new(db), |_| {}).await)
    }

    /// Starts the broker on `db`, letting the test adjust the configuration.
    pub async fn spawn_with(db: Arc<TestDb>, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = test_config(&db);
        adjust(&mut config);
        let app = Application::build(config).await.expect("broker starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let broker = app.broker().clone();
        actix_web::rt::spawn(app.run_until_stopped());
        TestApp {
            base,
            broker,
            db,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut res = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        }
        .expect("request reaches the broker");
        let bytes = res.body().limit(8 * 1024 * 1024).await.expect("body");
        Reply {
            status: res.status(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Sends a raw body (for malformed JSON).
    pub async fn call_raw(&self, method: &str, path: &str, token: &str, body: Vec<u8>) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
            .await
            .expect("request reaches the broker");
        let bytes = res.body().limit(8 * 1024 * 1024).await.unwrap_or_default();
        Reply {
            status: res.status(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Creates an app; returns (id, api key).
    pub async fn create_app(&self, name: &str) -> (String, String) {
        let r = self
            .call(
                "POST",
                "/v1/apps",
                Some(ADMIN_TOKEN),
                Some(&json!({ "name": name })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        (
            r.body["id"].as_str().unwrap().to_owned(),
            r.body["apiKey"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates a webhook; returns the create answer.
    pub async fn create_webhook(&self, key: &str, uri: &str, event: Value) -> Value {
        let r = self
            .call(
                "POST",
                "/v1/webhook",
                Some(key),
                Some(&json!({ "uri": uri, "event": event })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body
    }

    /// One delivery of a webhook's log, with its attempts.
    pub async fn delivery(&self, key: &str, webhook: &str, delivery: &str) -> Reply {
        self.call(
            "GET",
            &format!("/v1/webhook/{webhook}/deliveries/{delivery}"),
            Some(key),
            None,
        )
        .await
    }

    /// One delivery once its outcome is written: the receiver sees a request
    /// before the recorder's batched write lands, so a log read right after
    /// the last arrival can still say `pending`.
    pub async fn settled_delivery(&self, key: &str, webhook: &str, delivery: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.delivery(key, webhook, delivery).await;
            if r.body["status"] != "pending" || Instant::now() >= deadline {
                return r;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ingests an event over HTTP; returns the reply.
    pub async fn send_event(&self, app_id: &str, event: &str, channel: Value) -> Reply {
        self.call(
            "POST",
            "/v1/events",
            Some(ADMIN_TOKEN),
            Some(&json!({ "event": event, "appId": app_id, "channel": channel })),
        )
        .await
    }

    /// A pooled connection to the broker's database, for assertions.
    pub fn conn(&self) -> webhook_broker::db::PooledConn {
        self.broker.pool().get().expect("db connection")
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    /// The `v1,` signature of this request with `secret`, computed here from
    /// the secret alone, independently of the broker.
    pub fn signed_with(&self, secret: &str) -> String {
        use base64::engine::general_purpose::STANDARD as B64;
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(
            format!(
                "{}.{}.",
                self.header("webhook-id").unwrap(),
                self.header("webhook-timestamp").unwrap()
            )
            .as_bytes(),
        );
        mac.update(&self.body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("delivered body is JSON")
    }
}

/// How a receiver answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: format!("answered {status}"),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Answer {
        self.body = body.into();
        self
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

type Responder = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

/// A local HTTP receiver that records what arrives and answers as told:
/// scripted statuses, or a function of the request and its arrival number.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_scripted(&[])
    }

    /// Answers the first requests with `statuses`, in order, then 204.
    pub fn start_scripted(statuses: &[u16]) -> Receiver {
        let script = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<_>>(),
        ));
        Self::start_with(move |_, _| {
            let code = script.lock().unwrap().pop_front().unwrap_or(204);
            let answer = Answer::status(code);
            if (300..400).contains(&code) {
                answer.header("Location", "/redirected")
            } else {
                answer
            }
        })
    }

    /// Answers each request with `respond(request, arrival number from 0)`.
    pub fn start_with(
        respond: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        let respond: Responder = Arc::new(respond);
        let got = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let g = got.clone();
        let server = HttpServer::new(move || {
            let (g, respond) = (g.clone(), respond.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (g, respond) = (g.clone(), respond.clone());
                async move {
                    let received = Received {
                        path: req.path().to_owned(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body: body.to_vec(),
                        at: Instant::now(),
                    };
                    let answer = {
                        let mut g = g.lock().unwrap();
                        let n = g.len();
                        g.push(received.clone());
                        respond(&received, n)
                    };
                    if !answer.delay.is_zero() {
                        actix_web::rt::time::sleep(answer.delay).await;
                    }
                    let mut res = HttpResponse::build(StatusCode::from_u16(answer.status).unwrap());
                    for (k, v) in &answer.headers {
                        res.insert_header((k.as_str(), v.as_str()));
                    }
                    res.body(answer.body)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (or `within` passes) and
    /// returns all of them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `check` until it is true or `within` passes; returns the last result.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
}

#[allow(dead_code)]
/// The most arrivals inside any window of `width`.
pub fn most_within(arrivals: &[Instant], width: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// An enabled webhook row `id` of `app_id`, as the broker writes one, to
/// put straight into the database.
pub fn webhook_row(
    id: &str,
    app_id: &str,
    uri: &str,
    events: &str,
) -> webhook_broker::db::models::WebhookRow {
    webhook_broker::db::models::WebhookRow::enabled(
        id,
        app_id,
        uri,
        events,
        webhook_broker::db::now_ms(),
    )
}
