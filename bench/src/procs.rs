//! Child processes: the real broker binary (and the relay baseline), with
//! their logs in the bench's temp directory, readiness polling, CPU and
//! memory readings (and a VmRSS sampler that outlives one process), a clean
//! stop (SIGTERM, then SIGKILL after a bound) and a crash (SIGKILL).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::util::{http, status_kb};

/// A running child process.
pub struct Proc {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub spawned: Instant,
    name: String,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr to `dir/<name>.log` and the
    /// working directory `dir` (so no `.env` of the caller applies).
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str, port: u16) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let spawned = Instant::now();
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            port,
            log,
            spawned,
            name: name.to_owned(),
        })
    }

    /// The broker binary with a real configuration on 127.0.0.1.
    pub fn broker(
        bin: &Path,
        dir: &Path,
        name: &str,
        database_url: &str,
        token: &str,
    ) -> anyhow::Result<Proc> {
        Proc::broker_with(bin, dir, name, database_url, token, &[])
    }

    /// [`Proc::broker`] with `extra` environment variables on top (an
    /// instance id, a retry schedule).
    pub fn broker_with(
        bin: &Path,
        dir: &Path,
        name: &str,
        database_url: &str,
        token: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let port = crate::util::free_port()?;
        let mut cmd = Command::new(bin);
        cmd.env("DATABASE_URL", database_url)
            .env("BROKER_BIND", format!("127.0.0.1:{port}"))
            .env("BROKER_ADMIN_TOKEN", token)
            .env("BROKER_ALLOW_PRIVATE_TARGETS", "true")
            // Bounds the stop at the end of a scenario; nothing else changes.
            .env("BROKER_SHUTDOWN_GRACE", "5s");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Proc::spawn(cmd, dir, name, port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Polls `path` until it answers 200; the time since spawn.
    pub fn wait_ready(&mut self, path: &str, within: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before it was ready; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http(self.port, "GET", path, None, "") {
                return Ok(self.spawned.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after {within:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// VmHWM (peak resident set), MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        status_kb(self.pid(), "VmHWM").map(|kb| kb as f64 / 1024.0)
    }

    /// VmRSS (resident set now), MB.
    pub fn rss_mb(&self) -> Option<f64> {
        status_kb(self.pid(), "VmRSS").map(|kb| kb as f64 / 1024.0)
    }

    /// `kill -9`: a crash, nothing finishes.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `within`.
    pub fn stop(&mut self, within: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let asked = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                let took = asked.elapsed();
                if took > Duration::from_secs(1) {
                    eprintln!(
                        "  ({} took {:.1} s to stop after SIGTERM)",
                        self.name,
                        took.as_secs_f64()
                    );
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: {} did not stop within {within:?} of SIGTERM; killing it",
            self.name
        );
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Samples VmRSS of one process every 100 ms on a thread of its own and
/// keeps the highest reading; [`RssSampler::follow`] moves it to another
/// process (a restarted broker), keeping the peak.
pub struct RssSampler {
    pid: Arc<AtomicU32>,
    peak_kb: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let pid = Arc::new(AtomicU32::new(pid));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pid, peak_kb, samples, stop) =
                (pid.clone(), peak_kb.clone(), samples.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rss-sampler".into())
                .spawn(move || {
                    while !stop.load(Relaxed) {
                        if let Some(kb) = status_kb(pid.load(Relaxed), "VmRSS") {
                            peak_kb.fetch_max(kb, Relaxed);
                            samples.fetch_add(1, Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .ok()
        };
        RssSampler {
            pid,
            peak_kb,
            samples,
            stop,
            thread,
        }
    }

    /// From now on, sample `pid`.
    pub fn follow(&self, pid: u32) {
        self.pid.store(pid, Relaxed);
    }

    /// The highest VmRSS sampled so far, MB (`None` before any sample).
    pub fn peak_mb(&self) -> Option<f64> {
        let kb = self.peak_kb.load(Relaxed);
        (kb > 0).then_some(kb as f64 / 1024.0)
    }

    pub fn samples(&self) -> u64 {
        self.samples.load(Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
