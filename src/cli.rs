//! The command line of the `webhook-broker` binary: `serve` (the default),
//! `migrate`, `apps create NAME`, `apps list`, `apps keys ...`,
//! `ingest-keys ...` and `check-config`, one function each. Every command reads the same configuration as the daemon
//! ([`Settings`]: the command line, the environment and `./.env`); an
//! invalid value exits with status 2 and names its variable, a database that
//! cannot be used exits with status 1.
//! Only `serve` logs at `info` by default; the others print their result on
//! stdout and keep stderr for warnings and errors.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::{ConfigError, DatabaseUrl, Settings};
use crate::db;
use crate::Application;

const AFTER_HELP: &str = "\
Configuration comes from the environment and from a .env file in the working
directory (a variable already set wins over .env), or from the options of the
same name: DATABASE_URL, BROKER_BIND, BROKER_ADMIN_TOKEN and the other
BROKER_* variables listed under Configuration. An empty variable counts as
unset, except BROKER_RETRY_SCHEDULE (empty means no retries).

Exit status: 0 on success, 1 when the database cannot be used (or the daemon
fails, or a named app or key does not exist), 2 for an invalid setting or a
usage error.";

const CREATE_NOTE: &str = "\
The app is written straight to the database, with an entry in its change
log. Daemons already running on that database follow the log, so they
accept the new key within about 200 ms, without a restart.";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "webhook-broker", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do; `serve` when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The configuration, read by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// A command.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT (the default)
    Serve,
    /// Apply pending database migrations, then exit
    Migrate,
    /// Create and list apps (tenants) and their API keys directly in the database
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Create, list and revoke ingest keys (POST /v1/events only) directly in the database
    #[command(subcommand)]
    IngestKeys(IngestKeysCommand),
    /// Check the configuration and that the database answers, then exit
    CheckConfig,
}

/// `apps` commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AppsCommand {
    /// Create an app and print {"id", "name", "apiKey"} as JSON; the key is shown only this once
    #[command(after_help = CREATE_NOTE)]
    Create {
        /// Display name, 1 to 255 characters
        name: String,
    },
    /// Print every app as a JSON array of {"id", "name", "createdAt"} (never keys)
    List,
    /// Create, list and revoke an app's API keys (at most 10 at once)
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `apps keys` commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Create one more key for an app and print it as JSON; the key is shown only this once
    #[command(after_help = KEY_NOTE)]
    Create {
        /// The app's id, app_...
        app_id: String,
        /// A label, 1 to 255 characters
        #[arg(long)]
        name: Option<String>,
    },
    /// Print an app's keys as a JSON array of {"id", "prefix", "name", "createdAt", "lastUsedAt"} (never the keys)
    List {
        /// The app's id, app_...
        app_id: String,
    },
    /// Revoke one of an app's keys
    #[command(after_help = KEY_NOTE)]
    Revoke {
        /// The app's id, app_...
        app_id: String,
        /// The key's id, key_...
        key_id: String,
    },
}

/// `ingest-keys` commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum IngestKeysCommand {
    /// Create an ingest key and print it as JSON; the key is shown only this once
    #[command(after_help = KEY_NOTE)]
    Create {
        /// A label, 1 to 255 characters
        #[arg(long)]
        name: Option<String>,
        /// Limit the key to this app (repeat for several); every app when left out
        #[arg(long = "app", value_name = "APP_ID")]
        apps: Vec<String>,
    },
    /// Print every ingest key as a JSON array (never the keys)
    List,
    /// Revoke an ingest key
    #[command(after_help = KEY_NOTE)]
    Revoke {
        /// The key's id, key_...
        key_id: String,
    },
}

const KEY_NOTE: &str = "\
The change is written straight to the database, with an entry in its change
log. Daemons already running on that database follow the log, so they accept
a new key, or refuse a revoked one, within about 200 ms, without a restart.";

/// Why a command failed: the line for stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: u8,
    /// What to print on stderr.
    pub message: String,
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure {
            code: 2,
            message: format!("webhook-broker: {e}"),
        }
    }
}

impl Failure {
    fn usage(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            message: format!("webhook-broker: {message}"),
        }
    }

    /// A named app or key that does not exist.
    fn missing(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: format!("webhook-broker: {message}"),
        }
    }

    fn database(url: &DatabaseUrl, e: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: format!("webhook-broker: DATABASE_URL ({}): {e}", url.redacted()),
        }
    }
}

/// The binary: loads `.env` into the environment, then parses the command
/// line (which reads the environment) and runs it.
pub fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is worth knowing about.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("webhook-broker: cannot read .env: {e}");
            return ExitCode::from(2);
        }
    }
    run(Cli::parse())
}

/// Runs a parsed command line: sets up logging, dispatches.
pub fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    let settings = &cli.settings;
    // env_logger writes to stderr; the one-shot commands only show warnings
    // unless RUST_LOG asks for more.
    let default_level = if command == Command::Serve {
        "info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();

    let result = match command {
        Command::Serve => serve(settings),
        Command::Migrate => migrate(settings),
        Command::Apps(AppsCommand::Create { name }) => apps_create(settings, &name),
        Command::Apps(AppsCommand::List) => apps_list(settings),
        Command::Apps(AppsCommand::Keys(command)) => keys(settings, command),
        Command::IngestKeys(command) => ingest_keys(settings, command),
        Command::CheckConfig => check_config(settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `serve`: the daemon, until SIGINT or SIGTERM.
pub fn serve(settings: &Settings) -> Result<(), Failure> {
    let config = settings.to_config()?;
    if config.admin_token_generated {
        // Printed, not logged: it is shown once, on this process's stderr.
        eprintln!(
            "WARNING: BROKER_ADMIN_TOKEN is not set; generated an admin token for this run only:\n\
             BROKER_ADMIN_TOKEN={}\n\
             Set BROKER_ADMIN_TOKEN to keep a stable token across restarts.",
            config.admin_token
        );
    }
    log::info!(
        "starting webhook-broker {} with {}",
        env!("CARGO_PKG_VERSION"),
        config.database_url.redacted()
    );
    // Held until the daemon stops: one broker per SQLite file, one live
    // broker per instance id on MySQL.
    let _instance =
        db::instance::claim(&config.database_url, &config.instance_id).map_err(|e| Failure {
            code: 1,
            message: format!("webhook-broker: {e}"),
        })?;

    actix_web::rt::System::new()
        .block_on(async move {
            let app = Application::build(config).await?;
            app.run_until_stopped().await?;
            log::info!("stopped");
            Ok(())
        })
        // As a `main` returning `anyhow::Result` would report it.
        .map_err(|e: anyhow::Error| Failure {
            code: 1,
            message: format!("Error: {e:?}"),
        })
}

/// `migrate`: brings the schema up to date.
pub fn migrate(settings: &Settings) -> Result<(), Failure> {
    let config = settings.to_config()?;
    open(&config.database_url)?;
    println!(
        "OK: the schema of {} is up to date",
        config.database_url.redacted()
    );
    Ok(())
}

/// `apps create NAME`: the same creation as `POST /v1/apps`
/// ([`db::apps::create`]); prints the id, name and API key as JSON.
pub fn apps_create(settings: &Settings, name: &str) -> Result<(), Failure> {
    let name = db::apps::normalize_name(name).ok_or_else(|| {
        Failure::usage(format!(
            "the app name must be 1 to {} characters",
            db::apps::MAX_NAME_CHARS
        ))
    })?;
    let config = settings.to_config()?;
    let url = &config.database_url;
    let pool = open(url)?;
    let mut conn = pool.get().map_err(|e| Failure::database(url, e))?;
    let created = db::apps::create(&mut conn, name).map_err(|e| Failure::database(url, e))?;
    let out = json!({
        "id": created.row.id,
        "name": created.row.name,
        "apiKey": created.api_key,
    });
    println!("{out:#}");
    Ok(())
}

/// `apps list`: every app's id, name and creation time (epoch ms), as JSON.
pub fn apps_list(settings: &Settings) -> Result<(), Failure> {
    let config = settings.to_config()?;
    let url = &config.database_url;
    let pool = open(url)?;
    let mut conn = pool.get().map_err(|e| Failure::database(url, e))?;
    let apps = db::apps::all(&mut conn).map_err(|e| Failure::database(url, e))?;
    let out: Vec<_> = apps
        .into_iter()
        .map(|a| json!({ "id": a.id, "name": a.name, "createdAt": a.created_at }))
        .collect();
    println!("{:#}", serde_json::Value::Array(out));
    Ok(())
}

/// `apps keys create|list|revoke`: the same as the REST endpoints under
/// `/v1/apps/{appId}/keys`, with the same JSON.
pub fn keys(settings: &Settings, command: KeysCommand) -> Result<(), Failure> {
    use crate::api::keys::{CreatedKey, KeyView};
    let app_id = match &command {
        KeysCommand::Create { app_id, .. }
        | KeysCommand::List { app_id }
        | KeysCommand::Revoke { app_id, .. } => app_id.clone(),
    };
    let name = match &command {
        KeysCommand::Create { name: Some(n), .. } => Some(key_name(n)?),
        _ => None,
    };
    let config = settings.to_config()?;
    let url = &config.database_url;
    let pool = open(url)?;
    let mut conn = pool.get().map_err(|e| Failure::database(url, e))?;
    let db_failure = |e| Failure::database(url, e);
    if db::apps::by_ids(&mut conn, &[&app_id])
        .map_err(db_failure)?
        .is_empty()
    {
        return Err(Failure::missing(format!("app `{app_id}` not found")));
    }
    let out = match command {
        KeysCommand::Create { .. } => {
            let key = db::keys::create_app_key(&mut conn, &app_id, name)
                .map_err(db_failure)?
                .ok_or_else(|| {
                    Failure::missing(format!(
                        "app `{app_id}` already holds {} API keys; revoke one first",
                        db::keys::MAX_APP_KEYS
                    ))
                })?;
            serde_json::to_value(CreatedKey::from(key))
        }
        KeysCommand::List { .. } => {
            let keys = db::keys::app_keys(&mut conn, &app_id).map_err(db_failure)?;
            serde_json::to_value(keys.iter().map(KeyView::of).collect::<Vec<_>>())
        }
        KeysCommand::Revoke { key_id, .. } => {
            revoke(&mut conn, url, db::keys::Owner::App(&app_id), &key_id)?
        }
    };
    print_json(out)
}

/// `ingest-keys create|list|revoke`: the same as the REST endpoints under
/// `/v1/ingest-keys`, with the same JSON.
pub fn ingest_keys(settings: &Settings, command: IngestKeysCommand) -> Result<(), Failure> {
    use crate::api::keys::{CreatedKey, KeyView};
    let config = settings.to_config()?;
    let url = &config.database_url;
    let pool = open(url)?;
    let mut conn = pool.get().map_err(|e| Failure::database(url, e))?;
    let db_failure = |e| Failure::database(url, e);
    let out = match command {
        IngestKeysCommand::Create { name, apps } => {
            let name = name.as_deref().map(key_name).transpose()?;
            let apps = (!apps.is_empty()).then_some(apps);
            if let Some(apps) = &apps {
                let ids: Vec<&str> = apps.iter().map(String::as_str).collect();
                let known = db::apps::by_ids(&mut conn, &ids).map_err(db_failure)?;
                if let Some(unknown) = apps.iter().find(|a| !known.iter().any(|k| &k.id == *a)) {
                    return Err(Failure::missing(format!("app `{unknown}` not found")));
                }
            }
            let key = db::keys::create_ingest_key(&mut conn, name, apps.as_deref())
                .map_err(db_failure)?;
            serde_json::to_value(CreatedKey::from(key))
        }
        IngestKeysCommand::List => {
            let keys = db::keys::ingest_keys(&mut conn).map_err(db_failure)?;
            serde_json::to_value(keys.iter().map(KeyView::of).collect::<Vec<_>>())
        }
        IngestKeysCommand::Revoke { key_id } => {
            revoke(&mut conn, url, db::keys::Owner::Ingest, &key_id)?
        }
    };
    print_json(out)
}

fn key_name(raw: &str) -> Result<String, Failure> {
    db::keys::normalize_name(raw)
        .ok_or_else(|| Failure::usage("the key name must be 1 to 255 characters"))
}

fn revoke(
    conn: &mut db::DbConn,
    url: &DatabaseUrl,
    which: db::keys::Owner<'_>,
    key_id: &str,
) -> Result<serde_json::Result<serde_json::Value>, Failure> {
    if !db::keys::revoke(conn, which, key_id).map_err(|e| Failure::database(url, e))? {
        return Err(Failure::missing(format!("key `{key_id}` not found")));
    }
    Ok(Ok(json!({ "id": key_id, "revoked": true })))
}

fn print_json(out: serde_json::Result<serde_json::Value>) -> Result<(), Failure> {
    let out = out.map_err(|e| Failure {
        code: 1,
        message: format!("webhook-broker: cannot print the answer: {e}"),
    })?;
    println!("{out:#}");
    Ok(())
}

/// How long `check-config` waits for the database (a server that drops
/// packets would otherwise hold it for the system's TCP timeout).
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// `check-config`: the configuration as `serve` reads it, and one
/// connection to the database (no migration, nothing written); a one-line
/// summary on success. The admin token is never shown.
pub fn check_config(settings: &Settings) -> Result<(), Failure> {
    let config = settings.to_config()?;
    if config.admin_token_generated {
        eprintln!(
            "warning: BROKER_ADMIN_TOKEN is not set; `serve` will generate a new admin token \
             at every start (allowed only because BROKER_BIND {} is a loopback address)",
            config.bind
        );
    }
    let url = config.database_url.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(db::check(&url));
    });
    let checked = match rx.recv_timeout(CHECK_TIMEOUT) {
        Ok(Ok(checked)) => checked,
        Ok(Err(e)) => return Err(Failure::database(&config.database_url, e)),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(Failure::database(
                &config.database_url,
                format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
            ))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(Failure::database(
                &config.database_url,
                "the check failed unexpectedly",
            ))
        }
    };
    let database = match checked {
        db::Checked::Answered => "answers",
        db::Checked::WillBeCreated => "will be created at the first start",
    };
    println!(
        "OK: database {} {database}; bind {}",
        config.database_url.redacted(),
        config.bind
    );
    Ok(())
}

fn open(url: &DatabaseUrl) -> Result<db::Pool, Failure> {
    db::open(url).map_err(|e| Failure::database(url, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_serve() {
        assert_eq!(Cli::parse_from(["webhook-broker"]).command, None);
        assert_eq!(
            Cli::parse_from(["webhook-broker", "apps", "create", "shop"]).command,
            Some(Command::Apps(AppsCommand::Create {
                name: "shop".into()
            }))
        );
    }
}
