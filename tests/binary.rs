//! The real `webhook-broker` binary, driven as an operator would: no
//! configuration at all, bad configuration, and MariaDB.

mod common;

#[cfg(feature = "mysql")]
use std::time::Duration;

use common::daemon::{command as daemon, http, Running};

#[test]
fn the_daemon_runs_with_no_configuration_at_all() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "this test needs the default port 127.0.0.1:8080 free"
    );
    let mut broker = Running::start(daemon(dir.path(), &[]));
    let warning = broker.wait_line("BROKER_ADMIN_TOKEN is not set");
    assert!(warning.contains("WARNING"));
    let token_line = broker.wait_line("BROKER_ADMIN_TOKEN=");
    let token = token_line
        .trim()
        .trim_start_matches("BROKER_ADMIN_TOKEN=")
        .to_owned();
    assert!(token.len() >= 32);
    assert_eq!(broker.port(), 8080);

    assert_eq!(http(8080, "GET", "/healthz", None, "").0, 200);
    let (status, body) = http(8080, "POST", "/v1/apps", Some(&token), r#"{"name":"x"}"#);
    assert_eq!(status, 201, "{body}");
    assert!(
        dir.path().join("webhook-broker.db").exists(),
        "the SQLite default lives in the working directory"
    );
    // The generated token is printed once and never logged.
    let after: Vec<_> = broker.seen.iter().filter(|l| l.contains(&token)).collect();
    assert_eq!(after.len(), 1, "{after:?}");
}

#[test]
fn an_invalid_setting_exits_non_zero_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("BROKER_RETRY_SCHEDULE", "5s,soon"),
        ("BROKER_DELIVERY_TIMEOUT", "fast"),
        ("BROKER_ALLOW_PRIVATE_TARGETS", "perhaps"),
        ("BROKER_BIND", "not-an-address"),
        ("DATABASE_URL", "postgres://x@y/z"),
    ] {
        let out = daemon(dir.path(), &[(var, value)]).output().unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}

#[test]
fn a_generated_token_is_refused_on_a_public_bind() {
    let dir = tempfile::tempdir().unwrap();
    let out = daemon(dir.path(), &[("BROKER_BIND", "0.0.0.0:0")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BROKER_ADMIN_TOKEN"), "{stderr}");
    // The refused token was never shown.
    assert!(!stderr.contains("BROKER_ADMIN_TOKEN=adm_"), "{stderr}");
}

#[cfg(feature = "mysql")]
#[test]
fn the_daemon_runs_on_mariadb() {
    let Some(db) = common::TestDb::new(common::Store::Mysql) else {
        return;
    };
    let webhook_broker::config::DatabaseUrl::Mysql(url) = db.url.clone() else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Running::start(daemon(
        dir.path(),
        &[
            ("DATABASE_URL", url.as_str()),
            ("BROKER_BIND", "127.0.0.1:0"),
            ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
        ],
    ));
    let port = broker.port();
    let (status, body) = http(
        port,
        "POST",
        "/v1/apps",
        Some(common::ADMIN_TOKEN),
        r#"{"name":"m"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        !dir.path().join("webhook-broker.db").exists(),
        "no SQLite file on MySQL"
    );
    // Nothing in the log shows the admin token.
    drop(broker.child.kill());
    let _ = broker.child.wait();
    while let Ok(line) = broker.lines.recv_timeout(Duration::from_millis(200)) {
        broker.seen.push(line);
    }
    assert!(broker.seen.iter().all(|l| !l.contains(common::ADMIN_TOKEN)));
}

#[test]
fn an_unreachable_database_makes_the_daemon_exit_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = daemon(
        dir.path(),
        &[
            ("DATABASE_URL", "mysql://root@127.0.0.1:1/nowhere"),
            ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
            ("BROKER_BIND", "127.0.0.1:0"),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database"), "{stderr}");
    assert!(!dir.path().join("mysql:").exists());
}

#[cfg(not(feature = "mysql"))]
#[test]
fn a_build_without_mysql_refuses_a_mysql_url_and_names_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let out = daemon(
        dir.path(),
        &[
            ("DATABASE_URL", "mysql://root@127.0.0.1:3306/test"),
            ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
            ("BROKER_BIND", "127.0.0.1:0"),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`mysql` feature"), "{stderr}");
    assert!(
        stderr.contains("cargo build --release --features mysql"),
        "{stderr}"
    );
    assert!(!dir.path().join("mysql:").exists());
}
