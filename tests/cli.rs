//! The real binary's command line: `--help`, `--version`, `migrate`,
//! `apps create` / `apps list` (on SQLite and MariaDB, with the key working
//! against a daemon on the same database) and `check-config`, and the
//! settings every command reads (options, environment, `.env`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::SqliteConnection;
use serde_json::Value;
use webhook_broker::db::apps::hash_api_key;

const BIN: &str = env!("CARGO_BIN_EXE_webhook-broker");

/// The binary with `args`, in `dir`, with only PATH and `env` set (so no
/// `.env` of the repository is read).
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a command to its end: (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command(dir, args, env).output().expect("binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A temp dir holding `broker.db`, and the DATABASE_URL naming it.
fn sqlite_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("broker.db").to_string_lossy().into_owned();
    (dir, url)
}

#[cfg(feature = "mysql")]
fn database_url(db: &common::TestDb) -> String {
    use webhook_broker::config::DatabaseUrl;
    match &db.url {
        DatabaseUrl::Sqlite(path) => path.clone(),
        DatabaseUrl::Mysql(url) => url.clone(),
    }
}

/// `serve` on a free port; killed when dropped.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(dir: &Path, database_url: &str) -> Serve {
        let mut cmd = command(
            dir,
            &["serve"],
            &[
                ("DATABASE_URL", database_url),
                ("BROKER_BIND", "127.0.0.1:0"),
                ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
            ],
        );
        cmd.stdout(Stdio::null());
        let mut child = cmd.spawn().expect("daemon starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let port = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("listening on") => {
                    break line.rsplit(':').next().unwrap().trim().parse().unwrap()
                }
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("the daemon never listened; stderr: {seen:#?}")
                }
            }
        };
        Serve { child, port }
    }

    /// A blocking HTTP/1.1 GET with a bearer token: (status, body).
    fn get(&self, path: &str, token: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `apps create NAME`: the printed JSON, checked for shape and for the key
/// appearing nowhere but stdout.
fn create_app(dir: &Path, url: &str, name: &str) -> (String, String) {
    let (code, stdout, stderr) = run(dir, &["apps", "create", name], &[("DATABASE_URL", url)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let created: Value = serde_json::from_str(&stdout).expect("stdout is JSON only");
    let keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["id", "name", "apiKey"], "{stdout}");
    assert_eq!(created["name"], name.trim());
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["apiKey"].as_str().unwrap().to_owned();
    assert!(id.starts_with("app_"), "{id}");
    assert!(key.starts_with("wbk_") && key.len() > 40, "{key}");
    assert!(!stderr.contains(&key), "the key leaked to stderr: {stderr}");
    (id, key)
}

/// `apps list`: the printed array, checked to hold no secret.
fn list_apps(dir: &Path, url: &str, secrets: &[&str]) -> Vec<Value> {
    let (code, stdout, stderr) = run(dir, &["apps", "list"], &[("DATABASE_URL", url)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    for secret in secrets {
        assert!(
            !stdout.contains(secret),
            "apps list shows a secret: {stdout}"
        );
        assert!(
            !stderr.contains(secret),
            "apps list logs a secret: {stderr}"
        );
    }
    assert!(!stdout.contains("wbk_"), "{stdout}");
    let apps: Value = serde_json::from_str(&stdout).expect("stdout is JSON only");
    let apps = apps.as_array().expect("a JSON array").clone();
    for app in &apps {
        let keys: Vec<&str> = app
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["id", "name", "createdAt"], "{app}");
        assert!(app["createdAt"].as_i64().unwrap() > 0);
    }
    apps
}

#[test]
fn help_lists_the_commands_and_version_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(dir.path(), &["--help"], &[]);
    assert_eq!(code, 0);
    for command in ["serve", "migrate", "apps", "check-config", "DATABASE_URL"] {
        assert!(stdout.contains(command), "no {command} in:\n{stdout}");
    }
    let (code, stdout, _) = run(dir.path(), &["apps", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("create") && stdout.contains("list"),
        "{stdout}"
    );
    let (code, stdout, _) = run(dir.path(), &["apps", "create", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("without a restart"), "{stdout}");

    let (code, stdout, _) = run(dir.path(), &["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("webhook-broker {}", env!("CARGO_PKG_VERSION"))
    );

    let (code, _, stderr) = run(dir.path(), &["no-such-command"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(!dir.path().join("webhook-broker.db").exists());
}

/// Every setting, as the declaration lists it (`serve --help` shows it;
/// tests/config_docs.rs checks the list against the README).
fn variables() -> Vec<String> {
    webhook_broker::config::Settings::variables()
        .into_iter()
        .map(|(var, _)| var)
        .collect()
}

#[test]
fn every_command_documents_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--help"][..],
        &["--help"],
        &["migrate", "--help"],
        &["check-config", "--help"],
        &["apps", "list", "--help"],
        &["apps", "create", "--help"],
    ] {
        let (code, stdout, stderr) =
            run(dir.path(), args, &[("BROKER_ADMIN_TOKEN", "hunter2-token")]);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        for var in variables() {
            assert!(
                stdout.contains(&format!("[env: {var}]")),
                "{args:?} does not list {var}:\n{stdout}"
            );
        }
        assert!(!stdout.contains("hunter2"), "{args:?} shows the token");
    }
}

#[test]
fn settings_are_read_from_options_before_or_after_the_command() {
    let (dir, url) = sqlite_dir();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("BROKER_BIND", "127.0.0.1:9001"),
    ];
    for (args, bind) in [
        (&["check-config"][..], "127.0.0.1:9001"),
        (
            &["check-config", "--bind", "127.0.0.1:9002"],
            "127.0.0.1:9002",
        ),
        (&["--bind=127.0.0.1:9003", "check-config"], "127.0.0.1:9003"),
    ] {
        let (code, stdout, stderr) = run(dir.path(), args, &env);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            stdout.contains(&format!("bind {bind}")),
            "{args:?}: {stdout}"
        );
    }
    // An option's bad value names the variable too.
    let (code, _, stderr) = run(dir.path(), &["migrate", "--lease", "0s"], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid BROKER_LEASE"), "{stderr}");
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let (dir, url) = sqlite_dir();
    let vars = variables();
    let mut env: Vec<(&str, &str)> = vars.iter().map(|v| (v.as_str(), "")).collect();
    env.retain(|(k, _)| *k != "DATABASE_URL");
    env.push(("DATABASE_URL", &url));
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &env);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("bind 127.0.0.1:8080"), "{stdout}");
    // An empty DATABASE_URL is the default file in the working directory.
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &[("DATABASE_URL", "")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("sqlite://webhook-broker.db"), "{stdout}");
}

#[test]
fn dot_env_is_read_before_the_command_line_and_the_environment_wins() {
    let (dir, url) = sqlite_dir();
    std::fs::write(
        dir.path().join(".env"),
        format!("DATABASE_URL={url}\nBROKER_BIND=127.0.0.1:9101\nBROKER_LEASE=0s\n"),
    )
    .unwrap();
    let (code, _, stderr) = run(dir.path(), &["check-config"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid BROKER_LEASE"), "{stderr}");
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &[("BROKER_LEASE", "5s")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bind 127.0.0.1:9101"), "{stdout}");
    assert!(stdout.contains(&format!("sqlite://{url}")), "{stdout}");

    std::fs::write(dir.path().join(".env"), "BROKER_BIND=\"unterminated\n").unwrap();
    let (code, _, stderr) = run(dir.path(), &["check-config"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(".env"), "{stderr}");
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    name: String,
}

#[test]
fn migrate_creates_the_tables() {
    let (dir, url) = sqlite_dir();
    let (code, stdout, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert!(stdout.starts_with("OK"), "{stdout}");
    assert!(
        !stderr.contains("INFO"),
        "no info logs by default: {stderr}"
    );

    let mut conn = SqliteConnection::establish(&url).unwrap();
    let tables: Vec<String> =
        diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table'")
            .load::<TableName>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
    for table in [
        "apps",
        "webhooks",
        "events",
        "deliveries",
        "delivery_attempts",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    // Again: nothing left to do, still fine.
    let (code, _, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn an_app_created_on_the_command_line_works_against_the_daemon() {
    let (dir, url) = sqlite_dir();
    let (id, key) = create_app(dir.path(), &url, "  shop  ");

    // Stored as POST /v1/apps stores it: the hash, never the key.
    let mut conn = SqliteConnection::establish(&url).unwrap();
    use webhook_broker::db::schema::apps;
    let (name, hash): (String, String) = apps::table
        .filter(apps::id.eq(&id))
        .select((apps::name, apps::api_key_hash))
        .first(&mut conn)
        .unwrap();
    assert_eq!(name, "shop");
    assert_eq!(hash, hash_api_key(&key));
    drop(conn);

    let apps = list_apps(dir.path(), &url, &[&key, &hash]);
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["id"], id.as_str());
    assert_eq!(apps[0]["name"], "shop");

    let serve = Serve::start(dir.path(), &url);
    let (status, body) = serve.get("/v1/webhook", &key);
    assert_eq!(status, 200, "{body}");
    let (status, _) = serve.get("/v1/webhook", "wbk_not-a-key");
    assert_eq!(status, 401);
}

#[test]
fn a_bad_app_name_is_refused() {
    let (dir, url) = sqlite_dir();
    for name in ["   ", &"x".repeat(256)] {
        let (code, stdout, stderr) = run(
            dir.path(),
            &["apps", "create", name],
            &[("DATABASE_URL", &url)],
        );
        assert_eq!(code, 2, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("name"), "{stderr}");
    }
    assert!(list_apps(dir.path(), &url, &[]).is_empty());
}

#[test]
fn check_config_accepts_a_good_sqlite_configuration() {
    let (dir, url) = sqlite_dir();
    // Before the file exists: fine, and the check does not create it.
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !Path::new(&url).exists(),
        "check-config created the database"
    );
    // No admin token on loopback: a warning, and no token shown.
    assert!(stderr.contains("BROKER_ADMIN_TOKEN"), "{stderr}");
    assert!(!stdout.contains("adm_") && !stderr.contains("adm_"));

    let (code, _, stderr) = run(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(
        dir.path(),
        &["check-config"],
        &[
            ("DATABASE_URL", &url),
            ("BROKER_BIND", "127.0.0.1:9999"),
            ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
        ],
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("OK"), "{stdout}");
    assert!(stdout.contains(&format!("sqlite://{url}")), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9999"), "{stdout}");
    assert!(stderr.is_empty(), "no warnings: {stderr}");
    assert!(!stdout.contains(common::ADMIN_TOKEN));

    // A file that is not a database fails the check.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let (code, _, stderr) = run(
        dir.path(),
        &["check-config"],
        &[("DATABASE_URL", junk.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn check_config_fails_on_an_invalid_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("BROKER_RETRY_SCHEDULE", "5s,soon"),
        ("BROKER_BIND", "not-an-address"),
        ("DATABASE_URL", "postgres://x@y/z"),
        ("BROKER_BIND", "0.0.0.0:8080"), // public bind without an admin token
    ] {
        let (code, stdout, stderr) = run(dir.path(), &["check-config"], &[(var, value)]);
        assert_eq!(code, 2, "{var}={value}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    // The other commands refuse the same way.
    for args in [
        &["migrate"][..],
        &["apps", "list"],
        &["apps", "create", "x"],
    ] {
        let (code, _, stderr) = run(dir.path(), args, &[("BROKER_DELIVERY_TIMEOUT", "fast")]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("BROKER_DELIVERY_TIMEOUT"), "{stderr}");
    }
    assert!(!dir.path().join("webhook-broker.db").exists());
}

#[test]
fn check_config_fails_on_an_unreachable_database() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://root@127.0.0.1:1/x",
        "mysql://root:hunter2@127.0.0.1:1/x",
    ] {
        let (code, stdout, stderr) = run(dir.path(), &["check-config"], &[("DATABASE_URL", url)]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "the password shows: {stderr}");
    }
    let missing = dir.path().join("no/such/dir/broker.db");
    let (code, _, stderr) = run(
        dir.path(),
        &["check-config"],
        &[("DATABASE_URL", missing.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!dir.path().join("mysql:").exists());
}

#[cfg(feature = "mysql")]
#[test]
fn apps_are_created_and_listed_on_mariadb() {
    let Some(db) = common::TestDb::new(common::Store::Mysql) else {
        return;
    };
    let url = database_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(dir.path(), &["check-config"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    let (id, key) = create_app(dir.path(), &url, "maria");
    let apps = list_apps(dir.path(), &url, &[&key, &hash_api_key(&key)]);
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["id"], id.as_str());

    let serve = Serve::start(dir.path(), &url);
    let (status, body) = serve.get("/v1/webhook", &key);
    assert_eq!(status, 200, "{body}");
    assert!(
        !dir.path().join("webhook-broker.db").exists(),
        "no SQLite file on MySQL"
    );
}

#[test]
fn key_commands_name_a_missing_app_or_key_and_stop_at_ten_keys() {
    let (dir, url) = sqlite_dir();
    let env = [("DATABASE_URL", url.as_str())];
    let (app_id, key) = create_app(dir.path(), &url, "keys");

    let (code, _, err) = run(dir.path(), &["apps", "keys", "create", "app_missing"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("app `app_missing` not found"), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &["apps", "keys", "revoke", &app_id, "key_missing"],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("key `key_missing` not found"), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &["ingest-keys", "create", "--app", "app_missing"],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("app_missing"), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &["apps", "keys", "create", &app_id, "--name", " "],
        &env,
    );
    assert_eq!(code, 2, "{err}");

    for _ in 1..10 {
        let (code, out, err) = run(dir.path(), &["apps", "keys", "create", &app_id], &env);
        assert_eq!(code, 0, "{err}");
        let made: Value = serde_json::from_str(&out).unwrap();
        assert!(made["apiKey"].as_str().unwrap().starts_with("wbk_"));
        // The key goes to stdout only, never to stderr.
        assert!(!err.contains(made["apiKey"].as_str().unwrap()));
    }
    let (code, _, err) = run(dir.path(), &["apps", "keys", "create", &app_id], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds 10"), "{err}");
    let (code, out, _) = run(dir.path(), &["apps", "keys", "list", &app_id], &env);
    assert_eq!(code, 0);
    assert!(!out.contains(&key[12..]), "a list shows no key");
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );
}
