//! Who may run beside whom, with the real binary: one daemon per SQLite
//! file; on MySQL any number of instances, each with its own instance id,
//! whose start-up migrations take turns.

mod common;

#[cfg(feature = "mysql")]
use std::time::Duration;

use common::daemon::{self, Running};
use common::{Store, TestDb};

fn env_for<'a>(url: &'a str, instance: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", url),
        ("BROKER_BIND", "127.0.0.1:0"),
        ("BROKER_ADMIN_TOKEN", common::ADMIN_TOKEN),
        ("BROKER_INSTANCE_ID", instance),
    ]
}

#[test]
fn a_second_daemon_on_the_same_sqlite_file_refuses_to_start_and_points_to_mysql() {
    let db = TestDb::new(Store::Sqlite).unwrap();
    let url = daemon::database_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let (_first, port) = Running::listening(dir.path(), &env_for(&url, "first"));

    let out = daemon::command(dir.path(), &env_for(&url, "second"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SQLite takes one broker only"), "{stderr}");
    assert!(stderr.contains("MySQL"), "{stderr}");
    // The first one serves on, untouched.
    let (status, _) = daemon::http(port, "GET", "/readyz", None, "");
    assert_eq!(status, 200);
}

#[test]
fn the_cli_still_works_beside_a_running_sqlite_daemon() {
    let db = TestDb::new(Store::Sqlite).unwrap();
    let url = daemon::database_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, _) = Running::listening(dir.path(), &env_for(&url, "first"));
    let out = daemon::command(dir.path(), &env_for(&url, "first"))
        .args(["apps", "list"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "mysql")]
#[test]
fn a_second_live_daemon_with_the_same_instance_id_on_mysql_is_refused() {
    let db = TestDb::new(Store::Mysql).expect("MySQL (run with CI=true to require it)");
    let url = daemon::database_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = Running::listening(dir.path(), &env_for(&url, "twin"));

    let out = daemon::command(dir.path(), &env_for(&url, "twin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BROKER_INSTANCE_ID=twin"), "{stderr}");

    // Another id is welcome; and once the first is gone (even killed), its
    // id is free again.
    let (_other, _) = Running::listening(dir.path(), &env_for(&url, "other"));
    first.kill9();
    let (_again, port) = Running::listening(dir.path(), &env_for(&url, "twin"));
    let (status, _) = daemon::http(port, "GET", "/readyz", None, "");
    assert_eq!(status, 200);
}

#[cfg(feature = "mysql")]
#[test]
fn three_instances_starting_together_on_an_empty_mysql_database_all_come_up() {
    let db = TestDb::new(Store::Mysql).expect("MySQL (run with CI=true to require it)");
    let url = daemon::database_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let mut instances: Vec<Running> = ["one", "two", "three"]
        .iter()
        .map(|id| Running::start(daemon::command(dir.path(), &env_for(&url, id))))
        .collect();
    for broker in &mut instances {
        let line = broker
            .wait_line_within("listening on", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("an instance did not come up: {}", broker.log()));
        let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        let (status, body) = daemon::http(port, "GET", "/readyz", None, "");
        assert_eq!(status, 200, "{body}");
    }
}
