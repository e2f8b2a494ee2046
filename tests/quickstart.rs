//! The README's quickstart, run as written: the broker with terminal 2's
//! environment, the example receiver of terminal 1, and terminal 3's shell
//! block, verbatim but for the two ports (free ones are chosen, so that the
//! test does not depend on 8080 and 9000 being free).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::Running;

const README: &str = include_str!("../README.md");

/// The body of the first fenced block after `marker` in the quickstart.
fn block_after(marker: &str) -> String {
    let quickstart = &README[README.find("## Quickstart").expect("a Quickstart section")..];
    let quickstart = &quickstart[..quickstart[3..]
        .find("\n## ")
        .map_or(quickstart.len(), |i| i + 3)];
    let from = quickstart
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in the quickstart"));
    let rest = &quickstart[from..];
    let open = rest.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close].to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_quickstart_works_as_written() {
    // The quickstart's own tools: a machine without them cannot run it as
    // a user would. Under CI they are required, so CI cannot pass without
    // this test.
    for tool in ["bash", "curl", "python3"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but `{tool}`, which the quickstart uses, is not installed");
            }
            eprintln!("skipping the quickstart test: `{tool}` is not installed");
            return;
        }
    }
    // Terminal 2: `VAR=value ... cargo run --release`.
    let terminal2 = block_after("**Terminal 2**");
    let line = terminal2
        .lines()
        .find(|l| l.contains("cargo run --release"))
        .expect("terminal 2 starts the broker");
    let env: Vec<(&str, &str)> = line
        .split_whitespace()
        .take_while(|w| w.contains('='))
        .map(|w| w.split_once('=').unwrap())
        .collect();
    assert!(
        env.iter().any(|(k, _)| *k == "BROKER_ADMIN_TOKEN"),
        "{line}"
    );

    // Terminal 1: the example receiver.
    let terminal1 = block_after("**Terminal 1**");
    assert!(terminal1.contains("cargo run --example receiver"));
    let receiver_port = free_port();
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/receiver");
    let mut receiver = KillOnDrop(
        Command::new(&examples)
            .env("RECEIVER_BIND", format!("127.0.0.1:{receiver_port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", examples.display())),
    );
    let (tx, printed) = mpsc::channel::<String>();
    let out = receiver.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut env = env;
    env.push(("BROKER_BIND", "127.0.0.1:0"));
    let (_broker, port): (Running, u16) = Running::listening(dir.path(), &env);

    // Terminal 3, verbatim but for the ports.
    let terminal3 = block_after("**Terminal 3**")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{receiver_port}"));
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &terminal3])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("\"apiKey\":\"wbk_"), "{stdout}");
    assert!(stdout.contains("\"secret\":\"whsec_"), "{stdout}");
    assert!(stdout.contains("\"deliveries\":1"), "{stdout}");

    // Terminal 1 prints the delivery as the README says.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("body: ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match printed.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the receiver printed no delivery: {seen:#?}"),
        }
    }
    let all = seen.join("\n");
    assert!(all.contains("webhook-signature: v1,"), "{all}");
    let body = seen.iter().find(|l| l.contains("body: ")).unwrap();
    assert!(body.contains("\"event\":\"channel_live\""), "{body}");
    assert!(body.contains("\"id\":\"ch-42\""), "{body}");
    assert!(body.contains("\"title\":\"Morning show\""), "{body}");
}
