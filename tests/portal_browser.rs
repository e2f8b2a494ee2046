//! The app portal in a real browser: the real broker binary on SQLite, and
//! `node --test tests/portal/`, which drives Debian's Chromium with
//! playwright-core against it and runs its own receiver (one that checks
//! Standard Webhooks signatures with node:crypto).
//!
//! `PORTAL_UPDATE_DOCS=1` also rewrites docs/portal-delivery-log.png, the
//! README's screenshot of the delivery log.
//!
//! Without `/usr/bin/chromium` (or `PORTAL_CHROMIUM`) or
//! `tests/portal/node_modules` (`npm ci --prefix tests/portal`) the test is
//! skipped with the reason printed; under `CI=true` it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{database_url, Running};
use common::{Store, TestDb, ADMIN_TOKEN};

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Why the browser tests cannot run here, if they cannot.
fn missing(root: &Path, chromium: &Path) -> Option<String> {
    if !chromium.exists() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !root
        .join("tests/portal/node_modules/playwright-core")
        .exists()
    {
        return Some("tests/portal/node_modules is missing (npm ci --prefix tests/portal)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not on PATH".into());
    }
    None
}

fn every_portal_feature_works_in_chromium(store: Store) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium = PathBuf::from(
        std::env::var("PORTAL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if let Some(why) = missing(&root, &chromium) {
        assert!(!on_ci(), "CI=true but the browser tests cannot run: {why}");
        eprintln!("skipping the portal browser tests: {why}");
        return;
    }
    let db = TestDb::new(store).expect("a test database");
    let url = database_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = Running::listening(
        dir.path(),
        &[
            ("DATABASE_URL", url.as_str()),
            ("BROKER_BIND", "127.0.0.1:0"),
            ("BROKER_ADMIN_TOKEN", ADMIN_TOKEN),
            ("BROKER_ALLOW_PRIVATE_TARGETS", "true"),
            // A failed attempt is final at once, so the test sees `failed`
            // without waiting for retries.
            ("BROKER_RETRY_SCHEDULE", "none"),
            ("BROKER_DELIVERY_TIMEOUT", "5s"),
            ("RUST_LOG", "info"),
        ],
    );
    let screenshots = root.join("target/portal-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let started = Instant::now();
    let out = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .arg(root.join("tests/portal/portal.test.js"))
        .current_dir(&root)
        .env("PORTAL_BROKER_URL", format!("http://127.0.0.1:{port}"))
        .env("PORTAL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PORTAL_SCREENSHOTS", &screenshots)
        .env("PORTAL_CHROMIUM", &chromium)
        // The README's picture is a tracked file: rewritten only when asked
        // (PORTAL_UPDATE_DOCS=1), so a plain test run leaves the tree clean.
        .env(
            "PORTAL_DOCS_SCREENSHOT",
            if std::env::var("PORTAL_UPDATE_DOCS").is_ok_and(|v| v == "1") {
                root.join("docs/portal-delivery-log.png")
            } else {
                screenshots.join("delivery-log.png")
            },
        )
        .output()
        .expect("node runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the browser tests failed:\n{report}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the browser tests took {:?}",
        started.elapsed()
    );
    // Every test left its screenshot.
    let shots = std::fs::read_dir(&screenshots).unwrap().count();
    assert!(
        shots >= 7,
        "{shots} screenshots in {}",
        screenshots.display()
    );
    // No portal token reached the broker's log, whatever the tests did.
    broker.sigterm();
    broker.wait_exit(Duration::from_secs(10));
    let log = broker.log();
    assert!(!log.contains("wbp_"), "a portal token in the log:\n{log}");
}

mod every_portal_feature_works_in_chromium {
    #[test]
    fn sqlite() {
        super::every_portal_feature_works_in_chromium(crate::common::Store::Sqlite)
    }
}
