//! The registry owns subscription state: apps (tenants), the hashed API
//! keys of apps and of ingest callers ([`KeyRing`]), and webhooks with the events they subscribe to. It is the only
//! writer of that state. Every change is written through to the database
//! first and applied to memory only once committed, so memory never holds
//! what the database does not. It runs on a one-thread `SyncArbiter`: its
//! database calls block that thread, never an actix arbiter, and because it
//! is one thread its messages are handled strictly one after another. Changes
//! that affect delivery are announced to the dispatcher.
//!
//! Changes made elsewhere (another instance on the same database, or
//! `webhook-broker apps create`) arrive through the change log
//! ([`db::changes`]): [`PollChanges`], sent every [`POLL_EVERY`] by the
//! [`super::poller::ChangePoller`], reads the log past the last version
//! applied and re-reads only the apps and webhooks it names, applying each
//! as a local change would be applied (with the same announcements). The
//! instance's own changes come back the same way and change nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use actix::prelude::*;

use crate::db::keys::{KeyRow, NewKey};
use crate::db::models::{AppRow, WebhookRow};
use crate::db::{self, now_ms, Pool};
use crate::domain::{CustomHeaders, EventKind, EventSet, Throttle, WebhookUri};
use crate::error::BrokerError;
use crate::keys::KeyRing;
pub use crate::keys::Principal;
use crate::signature;
pub use crate::subscription::{App, DeliveryTarget, Webhook, WebhookStatus};

/// How often the registry reads the change log: a change made through any
/// instance is in force on every other within this plus one poll's queries
/// (the requirement is 1 s). An idle poll is one short read transaction.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest a poll waits for a pooled connection.
const POLL_CONN_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The most change rows one read of the log takes; a poll reads pages until
/// it has caught up.
pub const CHANGE_PAGE: i64 = 1000;

/// How many webhook rows a snapshot reads at a time.
const SNAPSHOT_PAGE: i64 = 5_000;

/// The state loaded from the database at start (or at a full reload).
pub struct Snapshot {
    apps: Vec<AppRow>,
    keys: Vec<KeyRow>,
    /// Each boxed, so that moving them into the registry's map moves a
    /// pointer, and the map's table holds pointers, not 300-byte webhooks:
    /// a `Vec<Webhook>` would sit beside the boxes made from it, 30 MB at
    /// 100,000 webhooks.
    #[allow(clippy::vec_box)]
    webhooks: Vec<Box<Webhook>>,
    /// The change-log version the rows are as of.
    version: i64,
}

impl Snapshot {
    /// Reads every app and webhook, and the change-log version they are as
    /// of, in one transaction (one snapshot): every change after `version`
    /// is in the log, every change up to it is in the rows. Webhook rows
    /// are read in pages and parsed as they come, so that at start with
    /// 100,000 webhooks their rows (about 50 MB) are never all in memory
    /// beside the parsed webhooks. Rows that no longer parse are logged
    /// and skipped rather than refusing to start.
    pub fn load(conn: &mut db::DbConn) -> diesel::QueryResult<Self> {
        use diesel::Connection;
        conn.transaction(|conn| {
            let version = db::changes::current(conn)?;
            let apps = db::apps::all(conn)?;
            let keys = db::keys::all(conn)?;
            let mut webhooks = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = db::webhooks::page_after(conn, after.as_deref(), SNAPSHOT_PAGE)?;
                let full = page.len() as i64 == SNAPSHOT_PAGE;
                after = page.last().map(|row| row.id.clone());
                for row in page {
                    let id = row.id.clone();
                    match Webhook::from_row(row) {
                        Ok(w) => webhooks.push(Box::new(w)),
                        Err(e) => log::error!("skipping unreadable webhook {id}: {e}"),
                    }
                }
                if !full {
                    break;
                }
            }
            Ok(Snapshot {
                version,
                apps,
                keys,
                webhooks,
            })
        })
    }
}

/// The SHA-256 of an API key, hex: what is stored and looked up. Keys are
/// made, hashed and stored by [`db::keys`].
pub use crate::db::apps::hash_api_key;

/// The registry actor.
pub struct Registry {
    pool: Pool,
    apps: HashMap<String, App>,
    keys: KeyRing,
    webhooks: HashMap<String, Box<Webhook>>,
    by_app: HashMap<String, BTreeSet<String>>,
    changes: Recipient<WebhookChanged>,
    disable_after: std::time::Duration,
    /// How many webhooks are disabled, for the gauge.
    disabled: usize,
    /// BROKER_SECRET_GRACE.
    secret_grace: std::time::Duration,
    /// The last change-log version applied.
    seen_version: i64,
    /// Whether `lastUsedAt` times are being written (one write at a time).
    touching: Arc<std::sync::atomic::AtomicBool>,
}

impl Registry {
    /// Builds the registry from a loaded snapshot.
    pub fn new(
        pool: Pool,
        snapshot: Snapshot,
        changes: Recipient<WebhookChanged>,
        disable_after: std::time::Duration,
        secret_grace: std::time::Duration,
    ) -> Self {
        let mut registry = Registry {
            pool,
            apps: HashMap::new(),
            keys: KeyRing::default(),
            webhooks: HashMap::with_capacity(snapshot.webhooks.len()),
            by_app: HashMap::new(),
            changes,
            disable_after,
            disabled: 0,
            secret_grace,
            seen_version: snapshot.version,
            touching: Arc::default(),
        };
        for row in snapshot.apps {
            registry.remember_app(row);
        }
        for row in &snapshot.keys {
            registry.keys.insert(row);
        }
        for webhook in snapshot.webhooks {
            registry.remember(webhook);
        }
        log::info!(
            "registry loaded {} apps, {} API keys and {} webhooks",
            registry.apps.len(),
            registry.keys.len(),
            registry.webhooks.len()
        );
        registry
    }

    fn remember_app(&mut self, row: AppRow) -> App {
        let app = App {
            id: row.id.clone(),
            name: row.name,
            created_at: row.created_at,
        };
        self.apps.insert(row.id, app.clone());
        app
    }

    fn remember(&mut self, webhook: impl Into<Box<Webhook>>) {
        let webhook = webhook.into();
        self.by_app
            .entry(webhook.app_id.clone())
            .or_default()
            .insert(webhook.id.clone());
        let disabled = webhook.status == WebhookStatus::Disabled;
        if let Some(old) = self.webhooks.insert(webhook.id.clone(), webhook) {
            self.disabled -= usize::from(old.status == WebhookStatus::Disabled);
        }
        self.disabled += usize::from(disabled);
        self.publish_counts();
    }

    fn forget(&mut self, id: &str) {
        if let Some(w) = self.webhooks.remove(id) {
            self.disabled -= usize::from(w.status == WebhookStatus::Disabled);
            if let Some(ids) = self.by_app.get_mut(&w.app_id) {
                ids.remove(id);
            }
        }
        self.publish_counts();
    }

    fn publish_counts(&self) {
        let m = crate::metrics::metrics();
        m.webhooks_registered.set(self.webhooks.len() as i64);
        m.webhooks_disabled.set(self.disabled as i64);
    }

    /// The webhook if it belongs to `app_id`; another app's id is as good as
    /// missing, so ids cannot be probed across tenants.
    fn owned(&self, app_id: &str, id: &str) -> Result<&Webhook, BrokerError> {
        self.webhooks
            .get(id)
            .map(Box::as_ref)
            .filter(|w| w.app_id == app_id)
            .ok_or_else(|| BrokerError::NotFound(format!("webhook `{id}` not found")))
    }

    fn conn(&self) -> Result<db::PooledConn, BrokerError> {
        Ok(self.pool.get()?)
    }

    /// Disables a webhook (kept pending deliveries stay in the database).
    fn disable(&mut self, id: &str, reason: String) -> Result<(), BrokerError> {
        let Some(current) = self.webhooks.get(id) else {
            return Ok(());
        };
        if current.status == WebhookStatus::Disabled {
            return Ok(());
        }
        let mut webhook = current.clone();
        let now = now_ms();
        webhook.status = WebhookStatus::Disabled;
        webhook.disabled_reason = Some(reason);
        webhook.disabled_at = Some(now);
        webhook.updated_at = now;
        db::webhooks::update(&mut *self.conn()?, &webhook.to_row())?;
        log::warn!(
            "webhook {} disabled: {}",
            webhook.id,
            webhook.disabled_reason.as_deref().unwrap_or("")
        );
        self.announce(&webhook.id, None);
        self.remember(webhook);
        Ok(())
    }

    /// Reads the change log past [`Self::seen_version`] and applies it, page
    /// by page, until caught up; reloads everything when the log no longer
    /// holds what was missed. Answers how many change rows were read.
    fn poll_changes(&mut self) -> Result<usize, BrokerError> {
        // Everything behind the registry (ingest's matching included) waits
        // while it polls: never wait the pool's full timeout for a
        // connection, as one would while the database is down.
        let mut conn = self.pool.get_timeout(POLL_CONN_WAIT)?;
        let mut read = 0;
        loop {
            match db::changes::since(&mut conn, self.seen_version, CHANGE_PAGE)? {
                db::changes::Changes::Next(rows) => {
                    let Some(last) = rows.last().map(|r| r.version) else {
                        return Ok(read);
                    };
                    let full = rows.len() as i64 == CHANGE_PAGE;
                    read += rows.len();
                    self.apply_changes(&mut conn, &rows)?;
                    self.seen_version = last;
                    if !full {
                        return Ok(read);
                    }
                }
                db::changes::Changes::Behind(current) => {
                    log::warn!(
                        "the change log no longer holds versions {}..={current}: reloading \
                         every app and webhook",
                        self.seen_version + 1
                    );
                    let snapshot = Snapshot::load(&mut conn)?;
                    self.reload(snapshot);
                    return Ok(read);
                }
            }
        }
    }

    /// Re-reads the apps and webhooks `rows` name and applies them.
    fn apply_changes(
        &mut self,
        conn: &mut db::DbConn,
        rows: &[db::changes::ChangeRow],
    ) -> Result<(), BrokerError> {
        let mut app_ids = BTreeSet::new();
        let mut key_ids = BTreeSet::new();
        let mut webhook_ids = BTreeSet::new();
        for row in rows {
            match row.kind.as_str() {
                db::changes::kind::APP => app_ids.insert(row.entity_id.as_str()),
                db::changes::kind::KEY => key_ids.insert(row.entity_id.as_str()),
                db::changes::kind::WEBHOOK => webhook_ids.insert(row.entity_id.as_str()),
                other => {
                    log::warn!("ignoring a change of unknown kind `{other}`");
                    false
                }
            };
        }
        let app_ids: Vec<&str> = app_ids.into_iter().collect();
        let key_ids: Vec<&str> = key_ids.into_iter().collect();
        let webhook_ids: Vec<&str> = webhook_ids.into_iter().collect();
        let apps = db::apps::by_ids(conn, &app_ids)?;
        let mut keys: HashMap<String, KeyRow> = db::keys::by_ids(conn, &key_ids)?
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect();
        let mut webhooks: HashMap<String, WebhookRow> = db::webhooks::by_ids(conn, &webhook_ids)?
            .into_iter()
            .map(|w| (w.id.clone(), w))
            .collect();
        for row in apps {
            self.remember_app(row);
        }
        // A key missing from the table was revoked.
        for id in key_ids {
            match keys.remove(id) {
                Some(row) => drop(self.keys.insert(&row)),
                None => self.keys.remove(id),
            }
        }
        for id in webhook_ids {
            let row = webhooks.remove(id);
            self.apply_webhook(id, row);
        }
        log::debug!(
            "applied {} changes, up to version {}",
            rows.len(),
            rows.last().map_or(0, |r| r.version)
        );
        Ok(())
    }

    /// Brings one webhook in memory to its stored `row` (`None`: deleted),
    /// with the announcement the same change made here would have made. A
    /// row equal to what memory holds changes nothing.
    fn apply_webhook(&mut self, id: &str, row: Option<WebhookRow>) {
        let Some(row) = row else {
            if self.webhooks.contains_key(id) {
                self.forget(id);
                self.announce(id, None);
            }
            return;
        };
        let old = self.webhooks.get(id);
        if old.is_some_and(|w| w.to_row() == row) {
            return;
        }
        let webhook = match Webhook::from_row(row) {
            Ok(w) => w,
            Err(e) => {
                log::error!("skipping unreadable webhook {id}: {e}");
                return;
            }
        };
        let was_enabled = old.map(|w| w.status == WebhookStatus::Enabled);
        let is_enabled = webhook.status == WebhookStatus::Enabled;
        let target_moved = old.is_some_and(|w| {
            w.uri.as_str() != webhook.uri.as_str()
                || w.secret != webhook.secret
                || w.previous_secret != webhook.previous_secret
                || w.headers != webhook.headers
                || w.throttle != webhook.throttle
        });
        match (was_enabled, is_enabled) {
            // New: nothing of it is pending yet, but a claim round now
            // gives it an owner before its first event, not up to a
            // second after.
            (None, true) => self.announce(id, Some(webhook.target())),
            (None, false) => {}
            (Some(true), false) => self.announce(id, None),
            (Some(false), true) => self.announce(id, Some(webhook.target())),
            (Some(true), true) if target_moved => self.announce(id, Some(webhook.target())),
            _ => {}
        }
        self.remember(webhook);
    }

    /// Replaces memory with `snapshot`, announcing what changed on the way.
    fn reload(&mut self, snapshot: Snapshot) {
        self.apps.clear();
        self.keys.clear();
        for row in snapshot.apps {
            self.remember_app(row);
        }
        for row in &snapshot.keys {
            self.keys.insert(row);
        }
        let mut gone: BTreeSet<String> = self.webhooks.keys().cloned().collect();
        for webhook in snapshot.webhooks {
            gone.remove(&webhook.id);
            // A full reload is rare (the change log was pruned past this
            // instance): judged by rows, as a logged change is.
            self.apply_webhook(&webhook.id, Some(webhook.to_row()));
        }
        for id in gone {
            self.apply_webhook(&id, None);
        }
        self.seen_version = snapshot.version;
        log::info!(
            "registry reloaded {} apps and {} webhooks at version {}",
            self.apps.len(),
            self.webhooks.len(),
            self.seen_version
        );
    }

    /// Fails with 404 unless `app_id` is a known app.
    fn known_app(&self, app_id: &str) -> Result<(), BrokerError> {
        if self.apps.contains_key(app_id) {
            Ok(())
        } else {
            Err(BrokerError::NotFound(format!("app `{app_id}` not found")))
        }
    }

    /// Forgets a key [`db::keys::revoke`] deleted; 404 when there was none.
    fn revoked(&mut self, revoked: bool, key_id: &str) -> Result<(), BrokerError> {
        if !revoked {
            return Err(BrokerError::NotFound(format!("key `{key_id}` not found")));
        }
        self.keys.remove(key_id);
        Ok(())
    }

    /// Writes the key uses noted since the last poll (`lastUsedAt`), on a
    /// thread of its own: a commit waits for its fsync, which on a busy disk
    /// took up to a second, and on the registry's thread every request's
    /// authentication and every event's matching would wait with it. One
    /// write at a time; uses made meanwhile go with the next poll's. It is
    /// bookkeeping: a failure is logged and those uses are dropped.
    fn write_key_uses(&mut self) {
        use std::sync::atomic::Ordering;
        if self.touching.swap(true, Ordering::AcqRel) {
            return;
        }
        let uses = self.keys.take_unwritten();
        if uses.is_empty() {
            self.touching.store(false, Ordering::Release);
            return;
        }
        let (pool, touching) = (self.pool.clone(), self.touching.clone());
        let n = uses.len();
        let spawned = std::thread::Builder::new()
            .name("key-uses".into())
            .spawn(move || {
                let written = pool
                    .get_timeout(POLL_CONN_WAIT)
                    .map_err(BrokerError::from)
                    .and_then(|mut conn| {
                        let _turn = pool.write_turn();
                        Ok(db::keys::touch_all(&mut conn, &uses)?)
                    });
                if let Err(e) = written {
                    log::warn!("could not record when {n} API keys were last used: {e}");
                }
                touching.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            log::warn!("could not record when {n} API keys were last used: {e}");
            self.touching.store(false, Ordering::Release);
        }
    }

    fn announce(&self, webhook_id: &str, target: Option<Arc<DeliveryTarget>>) {
        self.changes.do_send(WebhookChanged {
            webhook_id: webhook_id.to_owned(),
            target,
        });
    }
}

impl Actor for Registry {
    type Context = SyncContext<Self>;
}

/// Tells the dispatcher a webhook changed: `target` is its new delivery
/// target, or `None` when it was deleted or disabled.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WebhookChanged {
    /// The webhook.
    pub webhook_id: String,
    /// Where it now delivers, if anywhere.
    pub target: Option<Arc<DeliveryTarget>>,
}

/// Creates an app and its API key.
#[derive(Message)]
#[rtype(result = "Result<CreatedApp, BrokerError>")]
pub struct CreateApp {
    /// Display name.
    pub name: String,
}

/// A new app with its API key, shown this once.
#[derive(Debug, Clone)]
pub struct CreatedApp {
    /// The app.
    pub app: App,
    /// The API key in clear.
    pub api_key: String,
}

impl Handler<CreateApp> for Registry {
    type Result = Result<CreatedApp, BrokerError>;

    fn handle(&mut self, msg: CreateApp, _: &mut Self::Context) -> Self::Result {
        // The same function as `webhook-broker apps create`.
        let db::apps::NewApp { row, key, api_key } =
            db::apps::create(&mut *self.conn()?, msg.name)?;
        let app = self.remember_app(row);
        self.keys.insert(&key);
        Ok(CreatedApp { app, api_key })
    }
}

/// Lists every app.
#[derive(Message)]
#[rtype(result = "Vec<App>")]
pub struct ListApps;

impl Handler<ListApps> for Registry {
    type Result = MessageResult<ListApps>;

    fn handle(&mut self, _: ListApps, _: &mut Self::Context) -> Self::Result {
        let mut apps: Vec<App> = self.apps.values().cloned().collect();
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(apps)
    }
}

/// Finds whom the API key hashing to `key_hash` speaks for (an app, or an
/// ingest caller), and notes its use for `lastUsedAt`.
#[derive(Message)]
#[rtype(result = "Option<Principal>")]
pub struct Authenticate {
    /// [`hash_api_key`] of the presented key.
    pub key_hash: String,
}

impl Handler<Authenticate> for Registry {
    type Result = Option<Principal>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        self.keys.authenticate(&msg.key_hash, now_ms())
    }
}

/// Creates one more API key for an app (at most
/// [`db::keys::MAX_APP_KEYS`] at once).
#[derive(Message)]
#[rtype(result = "Result<NewKey, BrokerError>")]
pub struct CreateAppKey {
    /// The app.
    pub app_id: String,
    /// A label.
    pub name: Option<String>,
}

impl Handler<CreateAppKey> for Registry {
    type Result = Result<NewKey, BrokerError>;

    fn handle(&mut self, msg: CreateAppKey, _: &mut Self::Context) -> Self::Result {
        self.known_app(&msg.app_id)?;
        let key = db::keys::create_app_key(&mut *self.conn()?, &msg.app_id, msg.name)?.ok_or_else(
            || {
                BrokerError::Conflict(format!(
                    "app `{}` already holds {} API keys; revoke one first",
                    msg.app_id,
                    db::keys::MAX_APP_KEYS
                ))
            },
        )?;
        self.keys.insert(&key.row);
        Ok(key)
    }
}

/// Revokes one of an app's API keys, at once on this instance and within a
/// poll on every other.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RevokeAppKey {
    /// The app.
    pub app_id: String,
    /// The key's id, `key_...`.
    pub key_id: String,
}

impl Handler<RevokeAppKey> for Registry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RevokeAppKey, _: &mut Self::Context) -> Self::Result {
        self.known_app(&msg.app_id)?;
        let revoked = db::keys::revoke(
            &mut *self.conn()?,
            db::keys::Owner::App(&msg.app_id),
            &msg.key_id,
        )?;
        self.revoked(revoked, &msg.key_id)
    }
}

/// Creates an ingest key: it may only send events, for `apps` when given.
#[derive(Message)]
#[rtype(result = "Result<NewKey, BrokerError>")]
pub struct CreateIngestKey {
    /// A label.
    pub name: Option<String>,
    /// The apps it may send events for; `None`: every app.
    pub apps: Option<Vec<String>>,
}

impl Handler<CreateIngestKey> for Registry {
    type Result = Result<NewKey, BrokerError>;

    fn handle(&mut self, msg: CreateIngestKey, _: &mut Self::Context) -> Self::Result {
        if let Some(apps) = &msg.apps {
            if let Some(unknown) = apps.iter().find(|a| !self.apps.contains_key(*a)) {
                return Err(BrokerError::Unprocessable(format!(
                    "apps: unknown app `{unknown}`"
                )));
            }
        }
        let key = db::keys::create_ingest_key(&mut *self.conn()?, msg.name, msg.apps.as_deref())?;
        self.keys.insert(&key.row);
        Ok(key)
    }
}

/// Revokes an ingest key, at once on this instance and within a poll on
/// every other.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RevokeIngestKey {
    /// The key's id, `key_...`.
    pub key_id: String,
}

impl Handler<RevokeIngestKey> for Registry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RevokeIngestKey, _: &mut Self::Context) -> Self::Result {
        let revoked = db::keys::revoke(&mut *self.conn()?, db::keys::Owner::Ingest, &msg.key_id)?;
        self.revoked(revoked, &msg.key_id)
    }
}

/// Creates a webhook for an app.
#[derive(Message)]
#[rtype(result = "Result<Webhook, BrokerError>")]
pub struct CreateWebhook {
    /// The owning app.
    pub app_id: String,
    /// Where to deliver.
    pub uri: WebhookUri,
    /// What to deliver.
    pub events: EventSet,
    /// Extra headers for every attempt.
    pub headers: CustomHeaders,
    /// Its rate limit and concurrency cap.
    pub throttle: Throttle,
}

impl Handler<CreateWebhook> for Registry {
    type Result = Result<Webhook, BrokerError>;

    fn handle(&mut self, msg: CreateWebhook, _: &mut Self::Context) -> Self::Result {
        let now = now_ms();
        let webhook = Webhook {
            id: db::new_id("wh"),
            app_id: msg.app_id,
            uri: msg.uri,
            events: msg.events,
            secret: signature::generate_secret(),
            status: WebhookStatus::Enabled,
            disabled_reason: None,
            disabled_at: None,
            created_at: now,
            updated_at: now,
            previous_secret: None,
            headers: msg.headers,
            throttle: msg.throttle,
        };
        db::webhooks::insert(&mut *self.conn()?, &webhook.to_row())?;
        // Claimed at once, so its first events are sent at once.
        self.announce(&webhook.id, Some(webhook.target()));
        self.remember(webhook.clone());
        Ok(webhook)
    }
}

/// Reads one of an app's webhooks.
#[derive(Message)]
#[rtype(result = "Result<Webhook, BrokerError>")]
pub struct GetWebhook {
    /// The asking app.
    pub app_id: String,
    /// The webhook.
    pub id: String,
}

impl Handler<GetWebhook> for Registry {
    type Result = Result<Webhook, BrokerError>;

    fn handle(&mut self, msg: GetWebhook, _: &mut Self::Context) -> Self::Result {
        self.owned(&msg.app_id, &msg.id).cloned()
    }
}

/// Replaces a webhook's URI and events, and optionally its status and
/// headers.
#[derive(Message)]
#[rtype(result = "Result<Webhook, BrokerError>")]
pub struct UpdateWebhook {
    /// The asking app.
    pub app_id: String,
    /// The webhook.
    pub id: String,
    /// The new URI.
    pub uri: WebhookUri,
    /// The new events.
    pub events: EventSet,
    /// A new status, when given.
    pub status: Option<WebhookStatus>,
    /// New headers replacing the old, when given.
    pub headers: Option<CustomHeaders>,
    /// A new rate limit (`Some(None)`: unlimited), when given.
    pub rate_limit: Option<Option<u32>>,
    /// A new concurrency cap, when given.
    pub max_concurrency: Option<u32>,
}

impl Handler<UpdateWebhook> for Registry {
    type Result = Result<Webhook, BrokerError>;

    fn handle(&mut self, msg: UpdateWebhook, _: &mut Self::Context) -> Self::Result {
        let mut webhook = self.owned(&msg.app_id, &msg.id)?.clone();
        webhook.uri = msg.uri;
        webhook.events = msg.events;
        if let Some(headers) = msg.headers {
            webhook.headers = headers;
        }
        if let Some(rate_limit) = msg.rate_limit {
            webhook.throttle.rate_limit = rate_limit;
        }
        if let Some(max_concurrency) = msg.max_concurrency {
            webhook.throttle.max_concurrency = max_concurrency;
        }
        match msg.status {
            Some(WebhookStatus::Enabled) => {
                webhook.status = WebhookStatus::Enabled;
                webhook.disabled_reason = None;
                webhook.disabled_at = None;
            }
            Some(WebhookStatus::Disabled) if webhook.status == WebhookStatus::Enabled => {
                webhook.status = WebhookStatus::Disabled;
                webhook.disabled_reason = Some("disabled by the app".into());
                webhook.disabled_at = Some(now_ms());
            }
            _ => {}
        }
        webhook.updated_at = now_ms();
        db::webhooks::update(&mut *self.conn()?, &webhook.to_row())?;
        let target = (webhook.status == WebhookStatus::Enabled).then(|| webhook.target());
        self.announce(&webhook.id, target);
        self.remember(webhook.clone());
        Ok(webhook)
    }
}

/// Deletes a webhook, or only some of its events.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteWebhook {
    /// The asking app.
    pub app_id: String,
    /// The webhook.
    pub id: String,
    /// Only these events; the webhook goes when none is left.
    pub events: Option<EventSet>,
}

impl Handler<DeleteWebhook> for Registry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: DeleteWebhook, _: &mut Self::Context) -> Self::Result {
        let webhook = self.owned(&msg.app_id, &msg.id)?.clone();
        let remaining = match msg.events {
            None => None,
            Some(removed) => webhook.events.without(removed),
        };
        match remaining {
            Some(events) => {
                let mut webhook = webhook;
                if events == webhook.events {
                    return Ok(());
                }
                webhook.events = events;
                webhook.updated_at = now_ms();
                db::webhooks::update(&mut *self.conn()?, &webhook.to_row())?;
                self.remember(webhook);
            }
            None => {
                db::webhooks::delete(&mut *self.conn()?, &webhook.id)?;
                self.forget(&webhook.id);
                self.announce(&webhook.id, None);
            }
        }
        Ok(())
    }
}

/// One page of an app's webhooks.
#[derive(Message)]
#[rtype(result = "WebhookPage")]
pub struct ListWebhooks {
    /// The asking app.
    pub app_id: String,
    /// Zero-based page.
    pub page: usize,
    /// Page size.
    pub length: usize,
    /// Keep webhooks subscribed to any of these.
    pub filter: Option<EventSet>,
}

/// A page of webhooks and the count of all that matched.
#[derive(Debug, Clone)]
pub struct WebhookPage {
    /// The page's webhooks, oldest first.
    pub data: Vec<Webhook>,
    /// How many matched in all.
    pub total: usize,
}

impl Handler<ListWebhooks> for Registry {
    type Result = MessageResult<ListWebhooks>;

    fn handle(&mut self, msg: ListWebhooks, _: &mut Self::Context) -> Self::Result {
        let matching: Vec<&Webhook> = self
            .by_app
            .get(&msg.app_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.webhooks.get(id).map(Box::as_ref))
            .filter(|w| msg.filter.is_none_or(|f| w.events.intersects(f)))
            .collect();
        let total = matching.len();
        let data = matching
            .into_iter()
            .skip(msg.page.saturating_mul(msg.length))
            .take(msg.length)
            .cloned()
            .collect();
        MessageResult(WebhookPage { data, total })
    }
}

/// The delivery targets of an app's enabled webhooks subscribed to an event.
#[derive(Message)]
#[rtype(result = "Result<Vec<Arc<DeliveryTarget>>, BrokerError>")]
pub struct MatchWebhooks {
    /// The app the event belongs to.
    pub app_id: String,
    /// The event.
    pub event: EventKind,
}

impl Handler<MatchWebhooks> for Registry {
    type Result = Result<Vec<Arc<DeliveryTarget>>, BrokerError>;

    fn handle(&mut self, msg: MatchWebhooks, _: &mut Self::Context) -> Self::Result {
        if !self.apps.contains_key(&msg.app_id) {
            return Err(BrokerError::Unprocessable(format!(
                "app `{}` does not exist",
                msg.app_id
            )));
        }
        Ok(self
            .by_app
            .get(&msg.app_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.webhooks.get(id))
            .filter(|w| w.status == WebhookStatus::Enabled && w.events.contains(msg.event))
            .map(|w| w.target())
            .collect())
    }
}

/// The delivery targets of the given webhooks that exist and are enabled.
#[derive(Message)]
#[rtype(result = "HashMap<String, Arc<DeliveryTarget>>")]
pub struct Targets {
    /// The webhooks.
    pub webhook_ids: Vec<String>,
}

impl Handler<Targets> for Registry {
    type Result = MessageResult<Targets>;

    fn handle(&mut self, msg: Targets, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            msg.webhook_ids
                .into_iter()
                .filter_map(|id| {
                    let w = self.webhooks.get(&id)?;
                    (w.status == WebhookStatus::Enabled).then(|| (id, w.target()))
                })
                .collect(),
        )
    }
}

/// Reads a webhook's secret.
#[derive(Message)]
#[rtype(result = "Result<String, BrokerError>")]
pub struct GetSecret {
    /// The asking app.
    pub app_id: String,
    /// The webhook.
    pub id: String,
}

impl Handler<GetSecret> for Registry {
    type Result = Result<String, BrokerError>;

    fn handle(&mut self, msg: GetSecret, _: &mut Self::Context) -> Self::Result {
        Ok(self.owned(&msg.app_id, &msg.id)?.secret.clone())
    }
}

/// The targets for a batch of events: one answer per `(app, event)`, in
/// order; an unknown app is an error for its event only.
#[derive(Message)]
#[rtype(result = "Vec<Result<Vec<Arc<DeliveryTarget>>, BrokerError>>")]
pub struct MatchBatch(pub Vec<(String, EventKind)>);

impl Handler<MatchBatch> for Registry {
    type Result = MessageResult<MatchBatch>;

    fn handle(&mut self, msg: MatchBatch, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            msg.0
                .into_iter()
                .map(|(app_id, event)| {
                    Handler::<MatchWebhooks>::handle(self, MatchWebhooks { app_id, event }, ctx)
                })
                .collect(),
        )
    }
}

/// Disables a webhook at once (a receiver answered 410 Gone).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DisableWebhook {
    /// The webhook.
    pub webhook_id: String,
    /// Why, kept with the webhook.
    pub reason: String,
}

impl Handler<DisableWebhook> for Registry {
    type Result = ();

    fn handle(&mut self, msg: DisableWebhook, _: &mut Self::Context) {
        if let Err(e) = self.disable(&msg.webhook_id, msg.reason) {
            log::error!("could not disable webhook {}: {e}", msg.webhook_id);
        }
    }
}

/// A delivery of this webhook failed for good: disable the webhook if it
/// has gone BROKER_DISABLE_AFTER without a success.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DeliveryFailed {
    /// The webhook.
    pub webhook_id: String,
}

impl Handler<DeliveryFailed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: DeliveryFailed, _: &mut Self::Context) {
        let Some(webhook) = self.webhooks.get(&msg.webhook_id) else {
            return;
        };
        let created_at = webhook.created_at;
        let last_success = match self
            .conn()
            .and_then(|mut c| Ok(db::deliveries::last_success(&mut c, &msg.webhook_id)?))
        {
            Ok(t) => t,
            Err(e) => {
                log::error!("cannot check webhook {} for disabling: {e}", msg.webhook_id);
                return;
            }
        };
        if crate::policy::should_disable(now_ms(), last_success, created_at, self.disable_after) {
            let reason = format!(
                "no successful delivery for {}",
                humantime::format_duration(self.disable_after)
            );
            if let Err(e) = self.disable(&msg.webhook_id, reason) {
                log::error!("could not disable webhook {}: {e}", msg.webhook_id);
            }
        }
    }
}

/// Gives a webhook a new secret; the old one keeps signing for
/// BROKER_SECRET_GRACE. Answers the new secret.
#[derive(Message)]
#[rtype(result = "Result<String, BrokerError>")]
pub struct RotateSecret {
    /// The asking app.
    pub app_id: String,
    /// The webhook.
    pub id: String,
}

impl Handler<RotateSecret> for Registry {
    type Result = Result<String, BrokerError>;

    fn handle(&mut self, msg: RotateSecret, _: &mut Self::Context) -> Self::Result {
        let mut webhook = self.owned(&msg.app_id, &msg.id)?.clone();
        let now = now_ms();
        let until = now.saturating_add(self.secret_grace.as_millis() as i64);
        let old = std::mem::replace(&mut webhook.secret, signature::generate_secret());
        webhook.previous_secret = Some((old, until));
        webhook.updated_at = now;
        db::webhooks::update(&mut *self.conn()?, &webhook.to_row())?;
        if webhook.status == WebhookStatus::Enabled {
            self.announce(&webhook.id, Some(webhook.target()));
        }
        let secret = webhook.secret.clone();
        self.remember(webhook);
        Ok(secret)
    }
}

/// Applies the changes other instances (or the CLI) made since the last
/// poll: sent every [`POLL_EVERY`] by the
/// [`super::poller::ChangePoller`]. Answers how many change rows were read.
#[derive(Message, Debug)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct PollChanges;

impl Handler<PollChanges> for Registry {
    type Result = Result<usize, BrokerError>;

    fn handle(&mut self, _: PollChanges, _: &mut Self::Context) -> Self::Result {
        let read = self.poll_changes()?;
        self.write_key_uses();
        Ok(read)
    }
}
