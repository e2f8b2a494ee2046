//! Queries on `api_keys`: an app's keys and ingest keys. A key exists in
//! clear only in the [`NewKey`] that creates it; the table holds its
//! SHA-256 ([`super::apps::hash_api_key`]) and its first characters. Every
//! write logs a [`changes::kind::KEY`] change in its transaction, so a key
//! created or revoked through one instance is in force on all of them
//! within a poll.

use diesel::prelude::*;

use super::apps::hash_api_key;
use super::schema::api_keys;
use super::{changes, new_id, now_ms, DbConn};
use crate::domain::KeyKind;

/// The most keys one app holds at once.
pub const MAX_APP_KEYS: i64 = 10;

/// How many leading characters of a key are kept to tell keys apart: the
/// kind's 4-character tag and 8 random characters (48 of its 256 bits).
pub const PREFIX_CHARS: usize = 12;

/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys, treat_none_as_default_value = false)]
pub struct KeyRow {
    /// `key_...`.
    pub id: String,
    /// App key or ingest key.
    pub kind: KeyKind,
    /// The app an app key belongs to.
    pub app_id: Option<String>,
    /// The apps an ingest key may send events for, comma-separated; `None`:
    /// every app.
    pub apps: Option<String>,
    /// A label.
    pub name: Option<String>,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// The key's first [`PREFIX_CHARS`] characters.
    pub prefix: String,
    /// Creation time, epoch ms.
    pub created_at: i64,
    /// The last authenticated use, epoch ms, to within
    /// [`crate::keys::LAST_USED_RESOLUTION`].
    pub last_used_at: Option<i64>,
}

impl KeyRow {
    /// An ingest key's apps; `None`: every app.
    pub fn app_list(&self) -> Option<Vec<String>> {
        self.apps.as_deref().map(|s| {
            s.split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// A key just made: the stored row and the key in clear, to show once.
pub struct NewKey {
    /// The stored row.
    pub row: KeyRow,
    /// The key in clear.
    pub api_key: String,
}

impl std::fmt::Debug for NewKey {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

/// A new key of `kind`: its tag (`wbk_` for app keys, as they always were;
/// `wbi_` for ingest keys) and 32 random bytes, base64url.
pub fn generate(kind: KeyKind) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let tag = match kind {
        KeyKind::App => "wbk_",
        KeyKind::Ingest => "wbi_",
    };
    format!(
        "{tag}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A key's name as it is stored: trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters; `None` when it breaks that rule.
pub fn normalize_name(raw: &str) -> Option<String> {
    super::apps::normalize_name(raw)
}

/// A fresh key of `kind` and the row that stores it (not yet inserted).
pub fn mint(
    kind: KeyKind,
    app_id: Option<String>,
    apps: Option<&[String]>,
    name: Option<String>,
) -> NewKey {
    let api_key = generate(kind);
    let row = KeyRow {
        id: new_id("key"),
        kind,
        app_id,
        apps: apps.map(|a| a.join(",")),
        name,
        key_hash: hash_api_key(&api_key),
        prefix: api_key.chars().take(PREFIX_CHARS).collect(),
        created_at: now_ms(),
        last_used_at: None,
    };
    NewKey { row, api_key }
}

/// Stores `key` and logs the change, in the transaction open on `conn`.
pub fn insert(conn: &mut DbConn, key: &KeyRow) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::insert_into(api_keys::table)
            .values(key)
            .execute(conn)?;
        changes::record(conn, changes::kind::KEY, &key.id).map(drop)
    })
}

/// Creates one more key for `app_id`; `None` when the app already holds
/// [`MAX_APP_KEYS`].
pub fn create_app_key(
    conn: &mut DbConn,
    app_id: &str,
    name: Option<String>,
) -> QueryResult<Option<NewKey>> {
    let key = mint(KeyKind::App, Some(app_id.to_owned()), None, name);
    let created = conn.transaction(|conn| {
        // The change-log counter is taken first, not last as elsewhere: its
        // row lock serialises key creation across instances, so two
        // concurrent creates cannot both count 9 keys and make 11.
        changes::record(conn, changes::kind::KEY, &key.row.id)?;
        if count_app_keys(conn, app_id)? >= MAX_APP_KEYS {
            return Err(diesel::result::Error::RollbackTransaction);
        }
        diesel::insert_into(api_keys::table)
            .values(&key.row)
            .execute(conn)
    });
    match created {
        Ok(_) => Ok(Some(key)),
        Err(diesel::result::Error::RollbackTransaction) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates an ingest key, for `apps` only when given.
pub fn create_ingest_key(
    conn: &mut DbConn,
    name: Option<String>,
    apps: Option<&[String]>,
) -> QueryResult<NewKey> {
    let key = mint(KeyKind::Ingest, None, apps, name);
    insert(conn, &key.row)?;
    Ok(key)
}

fn count_app_keys(conn: &mut DbConn, app_id: &str) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::kind.eq(KeyKind::App))
        .filter(api_keys::app_id.eq(app_id))
        .count()
        .get_result(conn)
}

/// An app's keys, oldest first.
pub fn app_keys(conn: &mut DbConn, app_id: &str) -> QueryResult<Vec<KeyRow>> {
    api_keys::table
        .filter(api_keys::kind.eq(KeyKind::App))
        .filter(api_keys::app_id.eq(app_id))
        .order((api_keys::created_at, api_keys::id))
        .select(KeyRow::as_select())
        .load(conn)
}

/// Every ingest key, oldest first.
pub fn ingest_keys(conn: &mut DbConn) -> QueryResult<Vec<KeyRow>> {
    api_keys::table
        .filter(api_keys::kind.eq(KeyKind::Ingest))
        .order((api_keys::created_at, api_keys::id))
        .select(KeyRow::as_select())
        .load(conn)
}

/// Every key (what the registry loads at start).
pub fn all(conn: &mut DbConn) -> QueryResult<Vec<KeyRow>> {
    api_keys::table
        .order(api_keys::id)
        .select(KeyRow::as_select())
        .load(conn)
}

/// The keys among `ids` that exist.
pub fn by_ids(conn: &mut DbConn, ids: &[&str]) -> QueryResult<Vec<KeyRow>> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        rows.extend(
            api_keys::table
                .filter(api_keys::id.eq_any(chunk))
                .select(KeyRow::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// Which keys a revocation may touch.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// The keys of this app.
    App(&'a str),
    /// Ingest keys.
    Ingest,
}

/// Revokes key `id` if `owner` holds it: deletes it and logs the change.
/// Answers whether there was such a key.
pub fn revoke(conn: &mut DbConn, owner: Owner<'_>, id: &str) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let query = diesel::delete(api_keys::table)
            .filter(api_keys::id.eq(id))
            .into_boxed();
        let query = match owner {
            Owner::App(app_id) => query
                .filter(api_keys::kind.eq(KeyKind::App))
                .filter(api_keys::app_id.eq(app_id)),
            Owner::Ingest => query.filter(api_keys::kind.eq(KeyKind::Ingest)),
        };
        let deleted = query.execute(conn)? > 0;
        if deleted {
            changes::record(conn, changes::kind::KEY, id)?;
        }
        Ok(deleted)
    })
}

/// Records that key `id` was used at `at` (epoch ms), unless a later use
/// is already recorded.
pub fn touch(conn: &mut DbConn, id: &str, at: i64) -> QueryResult<()> {
    diesel::update(
        api_keys::table.filter(api_keys::id.eq(id)).filter(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(at)),
        ),
    )
    .set(api_keys::last_used_at.eq(at))
    .execute(conn)
    .map(drop)
}

/// [`touch`] for each `(id, at)` of `uses`, in one transaction.
pub fn touch_all(conn: &mut DbConn, uses: &[(String, i64)]) -> QueryResult<()> {
    conn.transaction(|conn| {
        for (id, at) in uses {
            touch(conn, id, *at)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_kind_and_only_their_hash_and_prefix_are_kept() {
        let app = mint(KeyKind::App, Some("app_1".into()), None, None);
        let ingest = mint(
            KeyKind::Ingest,
            None,
            Some(&["app_1".into(), "app_2".into()]),
            None,
        );
        assert!(app.api_key.starts_with("wbk_") && app.api_key.len() == 47);
        assert!(ingest.api_key.starts_with("wbi_"));
        assert_eq!(app.row.key_hash, hash_api_key(&app.api_key));
        assert_eq!(app.row.prefix, app.api_key[..PREFIX_CHARS]);
        assert!(!app.row.key_hash.contains(&app.api_key[4..]));
        assert!(!format!("{app:?}").contains(&app.api_key));
        assert_eq!(
            ingest.row.app_list(),
            Some(vec!["app_1".to_owned(), "app_2".to_owned()])
        );
        assert_eq!(app.row.app_list(), None);
        assert_ne!(generate(KeyKind::App), generate(KeyKind::App));
    }
}
