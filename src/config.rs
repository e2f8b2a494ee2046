//! Configuration from the environment (and a `.env` file, loaded by the
//! binary) or the command line. Every setting is declared here, once, as a
//! clap option ([`Settings`]); every value is parsed here, once; an invalid
//! one is an error that names its variable so the daemon can exit with a
//! useful message.

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
    /// BROKER_INSTANCE_ID: who this broker is in webhook leases.
    pub instance_id: String,
    /// BROKER_LEASE: how long a webhook lease lasts unrenewed.
    pub lease: Duration,
    /// BROKER_SECRET_GRACE: how long a rotated-out secret keeps signing.
    pub secret_grace: Duration,
    /// BROKER_MAX_IN_MEMORY: how many deliveries may be held in memory,
    /// across all webhooks.
    pub max_in_memory: usize,
    /// BROKER_IDEMPOTENCY_TTL: how long an idempotency key and its stored
    /// answer are kept.
    pub idempotency_ttl: Duration,
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
            .field("max_in_memory", &self.max_in_memory)
            .field("idempotency_ttl", &self.idempotency_ttl)
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

/// Every setting, declared once: its environment variable, its command-line
/// option, its default and its help text. `webhook-broker serve --help`
/// shows them; [`Config::from_lookup`] reads through the same declaration.
///
/// Values stay text here; [`Settings::to_config`] checks them, so that an
/// invalid one is a [`ConfigError`] naming its variable. A value that is
/// empty (or only spaces) counts as unset, except for
/// BROKER_RETRY_SCHEDULE, where it means no retries. A default computed at
/// start is shown as text in the help (`[default: number of CPUs]`).
#[derive(Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Configuration (environment variables, also read from ./.env)")]
pub struct Settings {
    /// Where state is kept: sqlite://PATH, sqlite:///abs/path, a plain path, or
    /// mysql://USER:PASS@HOST:3306/DB (mariadb:// too); an SQLite file is created if missing
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "URL",
        default_value = "sqlite://webhook-broker.db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Address and port the HTTP API listens on (a name is resolved once at start)
    #[arg(
        long,
        env = "BROKER_BIND",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8080",
        hide_env_values = true,
        global = true
    )]
    pub bind: String,

    /// The admin bearer token (better set in the environment: other users can
    /// see a command line); when unset, one is generated and printed once on
    /// stderr, and only a loopback BROKER_BIND is allowed [default: generated]
    #[arg(
        long,
        env = "BROKER_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,

    /// Allow webhook URIs on localhost and private addresses (development and
    /// tests only): true/false, 1/0, yes/no, on/off
    #[arg(
        long,
        env = "BROKER_ALLOW_PRIVATE_TARGETS",
        value_name = "BOOL",
        default_value = "false",
        hide_env_values = true,
        global = true
    )]
    pub allow_private_targets: String,

    /// Comma-separated delays before each retry, each moved by up to ±20% at
    /// random; empty or `none` means no retries; at most 100
    #[arg(
        long,
        env = "BROKER_RETRY_SCHEDULE",
        value_name = "DELAYS",
        default_value = DEFAULT_RETRY_SCHEDULE,
        hide_env_values = true,
        global = true
    )]
    pub retry_schedule: String,

    /// How long one delivery attempt may take; more than zero
    #[arg(
        long,
        env = "BROKER_DELIVERY_TIMEOUT",
        value_name = "DURATION",
        default_value = "15s",
        hide_env_values = true,
        global = true
    )]
    pub delivery_timeout: String,

    /// Largest request body accepted, in bytes (at least 1024); larger bodies get 413
    #[arg(
        long,
        env = "BROKER_MAX_BODY",
        value_name = "BYTES",
        default_value = "1048576",
        hide_env_values = true,
        global = true
    )]
    pub max_body: String,

    /// Arbiter threads that run the delivery actors (1 to 256) [default: number of CPUs]
    #[arg(
        long,
        env = "BROKER_DELIVERY_WORKERS",
        value_name = "N",
        hide_env_values = true,
        global = true
    )]
    pub delivery_workers: Option<String>,

    /// Disable a webhook whose delivery fails for good when it has had no
    /// success for this long; 0s disables at the first such failure
    #[arg(
        long,
        env = "BROKER_DISABLE_AFTER",
        value_name = "DURATION",
        default_value = "5d",
        hide_env_values = true,
        global = true
    )]
    pub disable_after: String,

    /// How long succeeded deliveries (and events nothing refers to) are kept; at least 60s
    #[arg(
        long,
        env = "BROKER_RETENTION",
        value_name = "DURATION",
        default_value = "30d",
        hide_env_values = true,
        global = true
    )]
    pub retention: String,

    /// At SIGTERM/SIGINT, how long requests and delivery attempts under way may take to finish
    #[arg(
        long,
        env = "BROKER_SHUTDOWN_GRACE",
        value_name = "DURATION",
        default_value = "30s",
        hide_env_values = true,
        global = true
    )]
    pub shutdown_grace: String,

    /// Names this broker in webhook leases, at most 64 bytes; keep it stable
    /// across restarts and distinct between brokers [default: HOSTNAME:PORT]
    #[arg(
        long,
        env = "BROKER_INSTANCE_ID",
        value_name = "ID",
        hide_env_values = true,
        global = true
    )]
    pub instance_id: Option<String>,

    /// How long a broker's lease on a webhook lasts without renewal (by the database clock); at least 1s
    #[arg(
        long,
        env = "BROKER_LEASE",
        value_name = "DURATION",
        default_value = "30s",
        hide_env_values = true,
        global = true
    )]
    pub lease: String,

    /// After a secret rotation, how long the previous secret keeps signing; 0s ends it at once
    #[arg(
        long,
        env = "BROKER_SECRET_GRACE",
        value_name = "DURATION",
        default_value = "24h",
        hide_env_values = true,
        global = true
    )]
    pub secret_grace: String,

    /// Pending deliveries held in memory across all webhooks (at least 100); the rest wait in the database
    #[arg(
        long,
        env = "BROKER_MAX_IN_MEMORY",
        value_name = "N",
        default_value = "10000",
        hide_env_values = true,
        global = true
    )]
    pub max_in_memory: String,

    /// How long an Idempotency-Key and its stored answer are kept; at least 1m
    #[arg(
        long,
        env = "BROKER_IDEMPOTENCY_TTL",
        value_name = "DURATION",
        default_value = "24h",
        hide_env_values = true,
        global = true
    )]
    pub idempotency_ttl: String,
}

impl std::fmt::Debug for Settings {
    // Hand-written so that neither the admin token nor a database password
    // can reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let database_url = match DatabaseUrl::parse(&self.database_url) {
            Ok(url) => url.redacted(),
            Err(_) => "<invalid>".into(),
        };
        f.debug_struct("Settings")
            .field("database_url", &database_url)
            .field("bind", &self.bind)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
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
            .field("max_in_memory", &self.max_in_memory)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .finish()
    }
}

impl Settings {
    /// The declaration as a command of its own, without the environment
    /// clap captured while building it.
    fn command() -> clap::Command {
        use clap::Args;
        Settings::augment_args(clap::Command::new("webhook-broker")).mut_args(|a| a.env(None))
    }

    /// Every declared variable with its option: (`BROKER_BIND`, `bind`).
    pub fn variables() -> Vec<(String, String)> {
        use clap::Args;
        Settings::augment_args(clap::Command::new("webhook-broker"))
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_string_lossy().into_owned();
                Some((env, a.get_long()?.to_owned()))
            })
            .collect()
    }

    /// The settings `get` returns for each declared variable, parsed by the
    /// same declaration as the command line (neither the process
    /// environment nor the command line is read).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        use clap::FromArgMatches;
        let mut argv = vec!["webhook-broker".to_owned()];
        for (env, long) in Self::variables() {
            if let Some(value) = get(&env) {
                argv.push(format!("--{long}={value}"));
            }
        }
        let matches = Self::command()
            .try_get_matches_from(argv)
            .expect("the settings declaration parses its own options");
        Self::from_arg_matches(&matches).expect("the matches are the declaration's")
    }

    /// The declared default of the option `id` (a field name), for a value
    /// given empty.
    fn default_of(id: &str) -> String {
        Self::command()
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_default_values().first())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| panic!("{id} is declared with a default"))
    }

    /// Checks every value and builds the [`Config`].
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        // An empty value is unset: the declared default (clap hands an empty
        // environment variable over as an empty value).
        let value = |id: &str, raw: &str| -> String {
            if raw.trim().is_empty() {
                Self::default_of(id)
            } else {
                raw.to_owned()
            }
        };
        let optional = |raw: &Option<String>| raw.clone().filter(|v| !v.trim().is_empty());

        let database_url = DatabaseUrl::parse(&value("database_url", &self.database_url))
            .map_err(|m| err("DATABASE_URL", m))?;

        let bind_raw = value("bind", &self.bind);
        let bind = parse_bind(&bind_raw).map_err(|m| err("BROKER_BIND", m))?;

        let (admin_token, admin_token_generated) = match optional(&self.admin_token) {
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

        let allow_private_targets =
            parse_bool(&value("allow_private_targets", &self.allow_private_targets))
                .map_err(|m| err("BROKER_ALLOW_PRIVATE_TARGETS", m))?;

        // Not `value`: here an empty value means no retries.
        let retry_schedule =
            parse_schedule(&self.retry_schedule).map_err(|m| err("BROKER_RETRY_SCHEDULE", m))?;

        let delivery_timeout = parse_duration(&value("delivery_timeout", &self.delivery_timeout))
            .and_then(|d| {
                if d.is_zero() {
                    Err("must be greater than zero".into())
                } else {
                    Ok(d)
                }
            })
            .map_err(|m| err("BROKER_DELIVERY_TIMEOUT", m))?;

        let max_body = match value("max_body", &self.max_body).trim().parse::<usize>() {
            Ok(n) if n >= 1024 => n,
            _ => {
                return Err(err(
                    "BROKER_MAX_BODY",
                    "must be a byte count of at least 1024",
                ))
            }
        };

        let delivery_workers = match optional(&self.delivery_workers) {
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

        let duration = |name: &'static str, raw: String, min: Duration| match parse_duration(&raw) {
            Ok(d) if d >= min => Ok(d),
            Ok(_) => Err(err(name, format!("must be at least {min:?}"))),
            Err(m) => Err(err(name, m)),
        };
        let disable_after = duration(
            "BROKER_DISABLE_AFTER",
            value("disable_after", &self.disable_after),
            Duration::ZERO,
        )?;
        let retention = duration(
            "BROKER_RETENTION",
            value("retention", &self.retention),
            Duration::from_secs(60),
        )?;
        let shutdown_grace = duration(
            "BROKER_SHUTDOWN_GRACE",
            value("shutdown_grace", &self.shutdown_grace),
            Duration::ZERO,
        )?;
        let lease = duration(
            "BROKER_LEASE",
            value("lease", &self.lease),
            Duration::from_secs(1),
        )?;
        let secret_grace = duration(
            "BROKER_SECRET_GRACE",
            value("secret_grace", &self.secret_grace),
            Duration::ZERO,
        )?;
        let idempotency_ttl = duration(
            "BROKER_IDEMPOTENCY_TTL",
            value("idempotency_ttl", &self.idempotency_ttl),
            Duration::from_secs(60),
        )?;
        let instance_id = match optional(&self.instance_id) {
            Some(id) if id.len() <= 64 => id.trim().to_owned(),
            Some(_) => return Err(err("BROKER_INSTANCE_ID", "must be at most 64 characters")),
            None => default_instance_id(&bind_raw),
        };

        let max_in_memory = match value("max_in_memory", &self.max_in_memory)
            .trim()
            .parse::<usize>()
        {
            Ok(n) if n >= 100 => n,
            _ => {
                return Err(err(
                    "BROKER_MAX_IN_MEMORY",
                    "must be a count of at least 100",
                ))
            }
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
            max_in_memory,
            idempotency_ttl,
        })
    }
}

impl Config {
    /// Reads the process environment (not `.env`: the binary loads that
    /// into the environment first).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get`, so tests can supply their own; the
    /// variables, defaults and checks are those of [`Settings`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Settings::from_lookup(get).to_config()
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
        assert_eq!(c.idempotency_ttl, Duration::from_secs(86_400));
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
            ("BROKER_MAX_IN_MEMORY", "ten"),
            ("BROKER_IDEMPOTENCY_TTL", "59s"),
            ("BROKER_DELIVERY_WORKERS", "0"),
            ("BROKER_INSTANCE_ID", &"x".repeat(65)),
        ] {
            let e = config(&[(var, value)])
                .err()
                .unwrap_or_else(|| panic!("{var}={value} accepted"));
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var));
        }
    }

    /// Every variable the broker reads, in the order of the declaration.
    const VARIABLES: [&str; 16] = [
        "DATABASE_URL",
        "BROKER_BIND",
        "BROKER_ADMIN_TOKEN",
        "BROKER_ALLOW_PRIVATE_TARGETS",
        "BROKER_RETRY_SCHEDULE",
        "BROKER_DELIVERY_TIMEOUT",
        "BROKER_MAX_BODY",
        "BROKER_DELIVERY_WORKERS",
        "BROKER_DISABLE_AFTER",
        "BROKER_RETENTION",
        "BROKER_SHUTDOWN_GRACE",
        "BROKER_INSTANCE_ID",
        "BROKER_LEASE",
        "BROKER_SECRET_GRACE",
        "BROKER_MAX_IN_MEMORY",
        "BROKER_IDEMPOTENCY_TTL",
    ];

    #[test]
    fn the_declaration_lists_each_variable_exactly_once() {
        let command = Settings::command();
        let args: Vec<_> = command
            .get_arguments()
            .filter(|a| a.get_id() != "help")
            .collect();
        let declared: Vec<String> = Settings::variables().into_iter().map(|(e, _)| e).collect();
        assert_eq!(declared, VARIABLES, "the declared variables");
        assert_eq!(args.len(), VARIABLES.len(), "an option without a variable");
        // From the declaration as clap builds it, with its environment.
        use clap::Args;
        let with_env = Settings::augment_args(clap::Command::new("webhook-broker"));
        for arg in with_env.get_arguments() {
            let id = arg.get_id();
            assert!(arg.is_hide_env_values_set(), "{id} may show its value");
            assert!(arg.is_global_set(), "{id} is not read by every command");
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let text_default = help.contains("[default: ");
            let declared_default = !arg.get_default_values().is_empty();
            assert!(
                text_default != declared_default,
                "{id} must show exactly one default: {help:?}"
            );
        }
    }

    #[test]
    fn settings_never_show_secrets() {
        let settings = Settings::from_lookup(|k| match k {
            "BROKER_ADMIN_TOKEN" => Some("hunter2-admin-token".into()),
            "DATABASE_URL" => Some("mysql://u:hunter2@db/x".into()),
            _ => None,
        });
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let config = settings.to_config().unwrap();
        assert_eq!(config.admin_token, "hunter2-admin-token");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn the_admin_token_shows_no_default() {
        let command = Settings::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "admin_token")
            .unwrap();
        assert!(arg.get_default_values().is_empty());
        assert!(arg
            .get_help()
            .unwrap()
            .to_string()
            .contains("[default: generated]"));
    }

    #[test]
    fn an_empty_value_is_unset_except_for_the_retry_schedule() {
        let blank: Vec<(&str, &str)> = VARIABLES.iter().map(|v| (*v, "")).collect();
        let c = config(&blank).unwrap();
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("webhook-broker.db".into())
        );
        assert_eq!(c.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(c.admin_token_generated);
        assert_eq!(c.delivery_timeout, Duration::from_secs(15));
        assert_eq!(c.max_in_memory, 10_000);
        assert!(c.instance_id.ends_with(":8080"));
        assert!(c.retry_schedule.is_empty(), "empty means no retries");
        let spaces: Vec<(&str, &str)> = VARIABLES
            .iter()
            .filter(|v| **v != "BROKER_RETRY_SCHEDULE")
            .map(|v| (*v, "  "))
            .collect();
        let c = config(&spaces).unwrap();
        assert_eq!(c.max_body, 1024 * 1024);
        assert_eq!(c.retry_schedule.len(), 7);
        let c = config(&[("BROKER_RETRY_SCHEDULE", "none")]).unwrap();
        assert!(c.retry_schedule.is_empty());
    }

    #[test]
    fn values_are_read_from_the_lookup() {
        let c = config(&[
            ("BROKER_BIND", "127.0.0.1:9000"),
            ("BROKER_ADMIN_TOKEN", "a-long-enough-token"),
            ("BROKER_ALLOW_PRIVATE_TARGETS", "yes"),
            ("BROKER_RETRY_SCHEDULE", "1s,-x"),
        ])
        .err()
        .unwrap();
        assert_eq!(c.var, "BROKER_RETRY_SCHEDULE");
        let c = config(&[
            ("BROKER_BIND", "127.0.0.1:9000"),
            ("BROKER_ADMIN_TOKEN", "--a-long-enough-token"),
            ("BROKER_ALLOW_PRIVATE_TARGETS", "yes"),
            ("BROKER_RETRY_SCHEDULE", "1s,2s"),
            ("BROKER_DELIVERY_WORKERS", "3"),
            ("BROKER_INSTANCE_ID", " b1 "),
            ("BROKER_MAX_IN_MEMORY", "100"),
            ("BROKER_LEASE", "2s"),
        ])
        .unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.admin_token, "--a-long-enough-token");
        assert!(!c.admin_token_generated);
        assert!(c.allow_private_targets);
        assert_eq!(
            c.retry_schedule,
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(c.delivery_workers, 3);
        assert_eq!(c.instance_id, "b1");
        assert_eq!(c.max_in_memory, 100);
        assert_eq!(c.lease, Duration::from_secs(2));
    }

    #[test]
    fn the_in_memory_limit_is_at_least_100() {
        assert_eq!(config(&[]).unwrap().max_in_memory, 10_000);
        for bad in ["99", "0", "many", "-5"] {
            let e = config(&[("BROKER_MAX_IN_MEMORY", bad)]).err().unwrap();
            assert_eq!(e.var, "BROKER_MAX_IN_MEMORY");
        }
    }

    #[test]
    fn the_idempotency_ttl_is_at_least_a_minute() {
        let c = config(&[("BROKER_IDEMPOTENCY_TTL", "1m")]).unwrap();
        assert_eq!(c.idempotency_ttl, Duration::from_secs(60));
        for bad in ["59s", "0s", "soon"] {
            let e = config(&[("BROKER_IDEMPOTENCY_TTL", bad)]).err().unwrap();
            assert_eq!(e.var, "BROKER_IDEMPOTENCY_TTL");
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
