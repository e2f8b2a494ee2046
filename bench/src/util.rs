//! Small helpers: clocks, /proc readings, a blocking HTTP/1.1 client for
//! setup calls, number formatting.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Clock ticks per second of /proc/PID/stat (CLK_TCK; 100 on Linux).
pub const CLK_TCK: f64 = 100.0;

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields
    // after the last ')'. utime and stime are fields 14 and 15 of the line,
    // so 12th and 13th after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Vm...:` line of /proc/PID/status, in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the broker binds it next).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One blocking HTTP/1.1 request to 127.0.0.1:`port` (for setup calls, not
/// load): answers the status and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:.200}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of gauge `name` on the `/metrics` of 127.0.0.1:`port` (over
/// its label sets), or why it cannot be had.
pub fn gauge(port: u16, name: &str) -> Result<f64, String> {
    let (status, text) =
        http(port, "GET", "/metrics", None, "").map_err(|e| format!("GET /metrics: {e}"))?;
    if status != 200 {
        return Err(format!("GET /metrics answered {status}"));
    }
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unreadable line {line:?}"))?;
        *total.get_or_insert(0.0) += value;
    }
    total.ok_or_else(|| format!("no {name} on /metrics"))
}

/// The value at quantile `q` of sorted values (nearest rank).
pub fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// 12345.6 -> "12,346".
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Seconds since the bench started, for progress lines.
pub fn elapsed(start: std::time::Instant) -> String {
    format!("[{:6.1}s]", start.elapsed().as_secs_f64())
}

/// Busy ticks of the whole machine (all CPUs), from /proc/stat.
fn system_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum()
}

/// CPU ticks of the MariaDB/MySQL server processes, if any run here.
fn database_server_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            matches!(comm.trim(), "mariadbd" | "mysqld")
        })
        .filter_map(cpu_ticks)
        .sum()
}

/// Where the machine's CPU went, at one moment.
pub struct CpuSnap {
    at: std::time::Instant,
    system: u64,
    bench: u64,
    target: Option<u64>,
    database: u64,
}

/// Where the machine's CPU went between two moments, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuDelta {
    pub secs: f64,
    /// The measured process (broker, relay); `None` when it is the bench.
    pub target: Option<u64>,
    pub bench: u64,
    pub database: u64,
    /// Everything else on the machine: other builds, tests, services.
    pub other: u64,
}

impl CpuSnap {
    pub fn take(target: Option<u32>) -> CpuSnap {
        CpuSnap::take_all(target.as_slice())
    }

    /// With the measured CPU the sum over `targets` (several broker
    /// instances); none: no measured process.
    pub fn take_all(targets: &[u32]) -> CpuSnap {
        let target = (!targets.is_empty())
            .then(|| targets.iter().map(|&pid| cpu_ticks(pid).unwrap_or(0)).sum());
        CpuSnap {
            at: std::time::Instant::now(),
            system: system_busy_ticks(),
            bench: cpu_ticks(std::process::id()).unwrap_or(0),
            target,
            database: database_server_ticks(),
        }
    }

    pub fn since(&self, before: &CpuSnap) -> CpuDelta {
        let target = self
            .target
            .zip(before.target)
            .map(|(b, a)| b.saturating_sub(a));
        let bench = self.bench.saturating_sub(before.bench);
        let database = self.database.saturating_sub(before.database);
        let system = self.system.saturating_sub(before.system);
        CpuDelta {
            secs: (self.at - before.at).as_secs_f64(),
            target,
            bench,
            database,
            other: system.saturating_sub(bench + database + target.unwrap_or(0)),
        }
    }
}

impl CpuDelta {
    /// The share of the machine's CPU capacity the other processes used.
    pub fn other_share(&self) -> f64 {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if self.secs <= 0.0 {
            return 0.0;
        }
        self.other as f64 / CLK_TCK / (self.secs * cpus)
    }
}
