//! Configuration from the environment (and a `.env` file, loaded by the
//! binary). Every value is parsed here, once; an invalid one is an error that
//! names its variable so the daemon can exit with a useful message.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use rand::RngCore;

/// Where the broker keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file, created if missing.
    Sqlite(String),
    /// A MySQL or MariaDB server, as a `mysql://` URL.
    Mysql(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `sqlite:PATH`, a plain path, or `mysql://...`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.starts_with("mysql://") || raw.starts_with("mariadb://") {
            let url = raw.replacen("mariadb://", "mysql://", 1);
            return Ok(DatabaseUrl::Mysql(url));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .unwrap_or(raw);
        if path.is_empty() {
            return Err("sqlite URL has no path".into());
        }
        if path.contains("://") {
            return Err(format!(
                "unsupported database URL scheme in `{}`; use sqlite://PATH or mysql://USER:PASS@HOST/DB",
                redact_url(raw)
            ));
        }
        Ok(DatabaseUrl::Sqlite(path.to_owned()))
    }

    /// The URL with any password hidden, for log lines.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{p}"),
            DatabaseUrl::Mysql(u) => redact_url(u),
        }
    }
}

fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable>".into(),
    }
}

/// The broker's settings.
#[derive(Clone)]
pub struct Config {
    /// DATABASE_URL.
    pub database_url: DatabaseUrl,
    /// BROKER_BIND.
    pub bind: SocketAddr,
    /// BROKER_ADMIN_TOKEN, or a generated one.
    pub admin_token: String,
    /// Whether `admin_token` was generated at start (and must be shown once).
    pub admin_token_generated: bool,
    /// BROKER_ALLOW_PRIVATE_TARGETS.
    pub allow_private_targets: bool,
    /// BROKER_RETRY_SCHEDULE: the delay before each retry.
    pub retry_schedule: Vec<Duration>,
    /// BROKER_DELIVERY_TIMEOUT.
    pub delivery_timeout: Duration,
    /// BROKER_MAX_BODY: the largest request body accepted, in bytes.
    pub max_body: usize,
    /// BROKER_DELIVERY_WORKERS: arbiters that run delivery actors.
    pub delivery_workers: usize,
    /// BROKER_DISABLE_AFTER: how long without a success before a webhook
    /// whose delivery failed for good is disabled.
    pub disable_after: Duration,
    /// BROKER_RETENTION: how long succeeded deliveries are kept.
    pub retention: Duration,
    /// BROKER_SHUTDOWN_GRACE: how long in-flight POSTs may finish at a stop.
    pub shutdown_grace: Duration,
    /// BROKER_INSTANCE_ID: who this broker is in delivery leases.
    pub instance_id: String,
    /// BROKER_LEASE: how long a claim on pending deliveries lasts unrenewed.
    pub lease: Duration,
    /// BROKER_SECRET_GRACE: how long a rotated-out secret keeps signing.
    pub secret_grace: Duration,
}

impl std::fmt::Debug for Config {
    // Hand-written so that the admin token can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url.redacted())
            .field("bind", &self.bind)
            .field("admin_token", &"***")
            .field("allow_private_targets", &self.allow_private_targets)
            .field("retry_schedule", &self.retry_schedule)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("max_body", &self.max_body)
            .field("delivery_workers", &self.delivery_workers)
            .field("disable_after", &self.disable_after)
            .field("retention", &self.retention)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("instance_id", &self.instance_id)
            .field("lease", &self.lease)
            .field("secret_grace", &self.secret_grace)
            .finish()
    }
}

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// The default retry schedule: one attempt and seven retries spread over about 27.6 hours.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get`, so tests can supply their own.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());

        let database_url = DatabaseUrl::parse(
            &var("DATABASE_URL").unwrap_or_else(|| "sqlite://webhook-broker.db".into()),
        )
        .map_err(|m| err("DATABASE_URL", m))?;

        let bind_raw = var("BROKER_BIND").unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind = parse_bind(&bind_raw).map_err(|m| err("BROKER_BIND", m))?;

        let (admin_token, admin_token_generated) = match var("BROKER_ADMIN_TOKEN") {
            Some(t) => {
                if t.len() < 16 {
                    log::warn!(
                        "BROKER_ADMIN_TOKEN is shorter than 16 characters; use a long random token"
                    );
                }
                (t, false)
            }
            None => {
                if !bind.ip().is_loopback() {
                    return Err(err(
                        "BROKER_ADMIN_TOKEN",
                        format!(
                            "must be set when BROKER_BIND ({bind}) is not a loopback address; \
                             a generated token is only allowed on loopback"
                        ),
                    ));
                }
                (generate_admin_token(), true)
            }
        };

        let allow_private_targets = match var("BROKER_ALLOW_PRIVATE_TARGETS") {
            None => false,
            Some(v) => parse_bool(&v).map_err(|m| err("BROKER_ALLOW_PRIVATE_TARGETS", m))?,
        };

        let retry_schedule = parse_schedule(
            &get("BROKER_RETRY_SCHEDULE").unwrap_or_else(|| DEFAULT_RETRY_SCHEDULE.into()),
        )
        .map_err(|m| err("BROKER_RETRY_SCHEDULE", m))?;

        let delivery_timeout = match var("BROKER_DELIVERY_TIMEOUT") {
            None => Duration::from_secs(15),
            Some(v) => parse_duration(&v)
                .and_then(|d| {
                    if d.is_zero() {
                        Err("must be greater than zero".into())
                    } else {
                        Ok(d)
                    }
                })
                .map_err(|m| err("BROKER_DELIVERY_TIMEOUT", m))?,
        };

        let max_body = match var("BROKER_MAX_BODY") {
            None => 1024 * 1024,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1024 => n,
                _ => {
                    return Err(err(
                        "BROKER_MAX_BODY",
                        "must be a byte count of at least 1024",
                    ))
                }
            },
        };

        let delivery_workers = match var("BROKER_DELIVERY_WORKERS") {
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => n,
                _ => {
                    return Err(err(
                        "BROKER_DELIVERY_WORKERS",
                        "must be a whole number from 1 to 256",
                    ))
                }
            },
        };

        let duration = |name: &'static str, default: Duration, min: Duration| match var(name) {
            None => Ok(default),
            Some(v) => match parse_duration(&v) {
                Ok(d) if d >= min => Ok(d),
                Ok(_) => Err(err(name, format!("must be at least {min:?}"))),
                Err(m) => Err(err(name, m)),
            },
        };
        let disable_after = duration(
            "BROKER_DISABLE_AFTER",
            Duration::from_secs(5 * 86_400),
            Duration::ZERO,
        )?;
        let retention = duration(
            "BROKER_RETENTION",
            Duration::from_secs(30 * 86_400),
            Duration::from_secs(60),
        )?;
        let shutdown_grace = duration(
            "BROKER_SHUTDOWN_GRACE",
            Duration::from_secs(30),
            Duration::ZERO,
        )?;
        let lease = duration(
            "BROKER_LEASE",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )?;
        let secret_grace = duration(
            "BROKER_SECRET_GRACE",
            Duration::from_secs(86_400),
            Duration::ZERO,
        )?;
        let instance_id = match var("BROKER_INSTANCE_ID") {
            Some(id) if id.len() <= 64 => id.trim().to_owned(),
            Some(_) => return Err(err("BROKER_INSTANCE_ID", "must be at most 64 characters")),
            None => default_instance_id(&bind_raw),
        };

        Ok(Config {
            secret_grace,
            disable_after,
            retention,
            shutdown_grace,
            instance_id,
            lease,
            database_url,
            bind,
            admin_token,
            admin_token_generated,
            allow_private_targets,
            retry_schedule,
            delivery_timeout,
            max_body,
            delivery_workers,
        })
    }
}

/// This host's name and the configured port: stable across restarts, so a
/// restarted broker takes back its own leases at once, and distinct for two
/// brokers on one host.
fn default_instance_id(bind: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "broker".into());
    let port = bind.rsplit(':').next().unwrap_or("0");
    let mut id = format!("{host}:{port}");
    id.truncate(64);
    id
}

fn generate_admin_token() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    use base64::Engine;
    format!(
        "adm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn parse_bind(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = raw.trim().parse::<SocketAddr>() {
        return Ok(addr);
    }
    raw.trim()
        .to_socket_addrs()
        .map_err(|e| format!("`{raw}` is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("`{raw}` resolves to no address"))
}

/// Parses `true/false`, `1/0`, `yes/no`, `on/off`.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("`{other}` is not a boolean (true or false)")),
    }
}

/// Parses a duration such as `500ms`, `5s`, `5m`, `2h`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| {
        format!(
            "`{}` is not a duration like 500ms, 5s, 5m or 2h ({e})",
            raw.trim()
        )
    })
}

/// Parses a comma-separated list of durations. An empty value (or `none`)
/// means a single attempt and no retries.
pub fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let delays = raw
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if delays.len() > 100 {
        return Err("at most 100 retries".into());
    }
    Ok(delays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_configuration_gives_the_documented_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("webhook-broker.db".into())
        );
        assert_eq!(c.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(c.admin_token_generated);
        assert!(c.admin_token.len() >= 32);
        assert!(!c.allow_private_targets);
        assert_eq!(c.retry_schedule.len(), 7);
        assert_eq!(c.retry_schedule[0], Duration::from_secs(5));
        assert_eq!(c.retry_schedule[6], Duration::from_secs(36_000));
        assert_eq!(c.delivery_timeout, Duration::from_secs(15));
        assert_eq!(c.max_body, 1024 * 1024);
        assert_eq!(c.disable_after, Duration::from_secs(5 * 86_400));
        assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.secret_grace, Duration::from_secs(86_400));
        assert!(c.instance_id.ends_with(":8080"));
    }

    #[test]
    fn database_urls_of_both_backends_parse() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/wb.db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/wb.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("data/wb.db").unwrap(),
            DatabaseUrl::Sqlite("data/wb.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("mysql://root@127.0.0.1:3306/test").unwrap(),
            DatabaseUrl::Mysql("mysql://root@127.0.0.1:3306/test".into())
        );
        assert!(DatabaseUrl::parse("postgres://x@y/z").is_err());
    }

    #[test]
    fn a_mysql_password_never_shows_in_the_redacted_url() {
        let url = DatabaseUrl::parse("mysql://u:hunter2@db/x").unwrap();
        assert!(!url.redacted().contains("hunter2"));
    }

    #[test]
    fn a_generated_token_is_refused_off_loopback() {
        let e = config(&[("BROKER_BIND", "0.0.0.0:8080")]).err().unwrap();
        assert_eq!(e.var, "BROKER_ADMIN_TOKEN");
        let c = config(&[
            ("BROKER_BIND", "0.0.0.0:8080"),
            ("BROKER_ADMIN_TOKEN", "a-long-enough-token"),
        ])
        .unwrap();
        assert!(!c.admin_token_generated);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (var, value) in [
            ("BROKER_BIND", "nowhere"),
            ("BROKER_ALLOW_PRIVATE_TARGETS", "maybe"),
            ("BROKER_RETRY_SCHEDULE", "5s,soon"),
            ("BROKER_DELIVERY_TIMEOUT", "0s"),
            ("BROKER_DELIVERY_TIMEOUT", "fast"),
            ("DATABASE_URL", "redis://x"),
            ("BROKER_MAX_BODY", "ten"),
            ("BROKER_DISABLE_AFTER", "a while"),
            ("BROKER_RETENTION", "1s"),
            ("BROKER_SHUTDOWN_GRACE", "-1s"),
            ("BROKER_LEASE", "0s"),
            ("BROKER_SECRET_GRACE", "tomorrow"),
        ] {
            let e = config(&[(var, value)])
                .err()
                .unwrap_or_else(|| panic!("{var}={value} accepted"));
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var));
        }
    }

    #[test]
    fn schedules_accept_every_documented_unit() {
        assert_eq!(
            parse_schedule("250ms, 5s,5m,2h").unwrap(),
            vec![
                Duration::from_millis(250),
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200)
            ]
        );
        assert!(parse_schedule("").unwrap().is_empty());
    }
}
