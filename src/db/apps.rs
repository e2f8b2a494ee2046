//! Queries on `apps`, and the one way an app comes to be: [`create`], used
//! by both `POST /v1/apps` (through the registry) and `webhook-broker apps
//! create`.

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::keys::{KeyRow, NewKey};
use super::models::AppRow;
use super::schema::apps;
use super::{changes, new_id, DbConn};
use crate::domain::KeyKind;

/// The longest app name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// An app name as it is stored: trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters; `None` when it breaks that rule.
pub fn normalize_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    (!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS).then(|| name.to_owned())
}

/// The SHA-256 of an API key, hex: what is stored and looked up.
pub fn hash_api_key(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// A new app API key: `wbk_` and 32 random bytes, base64url.
pub fn generate_api_key() -> String {
    super::keys::generate(crate::domain::KeyKind::App)
}

/// A stored app and its API key in clear, which exists only here: the
/// database keeps its hash.
pub struct NewApp {
    /// The stored row.
    pub row: AppRow,
    /// Its first key's row.
    pub key: KeyRow,
    /// The API key, to show once.
    pub api_key: String,
}

impl std::fmt::Debug for NewApp {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApp")
            .field("id", &self.row.id)
            .field("name", &self.row.name)
            .finish_non_exhaustive()
    }
}

/// Creates an app named `name` (already checked with [`normalize_name`])
/// with its first API key: a new `app_` id, and its key in `api_keys`
/// ([`super::keys`]), of which only the hash is kept. The changes are
/// logged in the same transaction, so every running instance takes the app
/// and its key in within a poll ([`super::changes`]).
pub fn create(conn: &mut DbConn, name: String) -> QueryResult<NewApp> {
    let id = new_id("app");
    let NewKey { row: key, api_key } =
        super::keys::mint(KeyKind::App, Some(id.clone()), None, None);
    let row = AppRow {
        id,
        name,
        // No longer read (api_keys is), but the column is NOT NULL UNIQUE.
        api_key_hash: key.key_hash.clone(),
        created_at: key.created_at,
    };
    conn.transaction(|conn| {
        insert(conn, &row)?;
        super::keys::insert(conn, &key)
    })?;
    Ok(NewApp { row, key, api_key })
}

/// Stores a new app, and logs the change in the same transaction.
pub fn insert(conn: &mut DbConn, app: &AppRow) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::insert_into(apps::table).values(app).execute(conn)?;
        changes::record(conn, changes::kind::APP, &app.id).map(drop)
    })
}

/// The apps among `ids` that exist.
pub fn by_ids(conn: &mut DbConn, ids: &[&str]) -> QueryResult<Vec<AppRow>> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        rows.extend(
            apps::table
                .filter(apps::id.eq_any(chunk))
                .select(AppRow::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// Every app, oldest first.
pub fn all(conn: &mut DbConn) -> QueryResult<Vec<AppRow>> {
    apps::table
        .order(apps::id)
        .select(AppRow::as_select())
        .load(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_stored_only_as_their_hash() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with("wbk_") && a.len() == 4 + 43);
        let hash = hash_api_key(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[4..]));
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(normalize_name("  shop ").as_deref(), Some("shop"));
        assert_eq!(normalize_name("   "), None);
        assert!(normalize_name(&"é".repeat(255)).is_some());
        assert_eq!(normalize_name(&"x".repeat(256)), None);
    }
}
