//! Who an API key speaks for, and when it was last used: the [`KeyRing`]
//! the registry keeps of every live key (app keys and ingest keys), looked
//! up by the key's SHA-256. The policy lives here, as pure functions over
//! plain data, so it is unit-tested; the registry only wires it to the
//! database and the change log.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::db::keys::KeyRow;
use crate::domain::KeyKind;

/// How precisely `lastUsedAt` follows use: a key's use is written at most
/// once per this, so a channel service ingesting thousands of events a
/// second with one key costs one small write a minute, not one per event.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// Whom a key authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An app's key: everything that app may do.
    App {
        /// The app.
        app_id: String,
        /// The key's id.
        key_id: String,
    },
    /// An ingest key: `POST /v1/events` only.
    Ingest {
        /// The key's id.
        key_id: String,
        /// The apps it may send events for; `None`: every app.
        apps: Option<Arc<BTreeSet<String>>>,
    },
}

impl Principal {
    fn of(row: &KeyRow) -> Option<Principal> {
        match row.kind {
            KeyKind::App => Some(Principal::App {
                app_id: row.app_id.clone()?,
                key_id: row.id.clone(),
            }),
            KeyKind::Ingest => Some(Principal::Ingest {
                key_id: row.id.clone(),
                apps: row
                    .app_list()
                    .map(|apps| Arc::new(apps.into_iter().collect())),
            }),
        }
    }

    /// Whether an ingest key may send events for `app_id` (any other
    /// principal may not ingest at all).
    pub fn may_ingest_for(&self, app_id: &str) -> bool {
        match self {
            Principal::Ingest { apps: None, .. } => true,
            Principal::Ingest {
                apps: Some(apps), ..
            } => apps.contains(app_id),
            Principal::App { .. } => false,
        }
    }
}

/// The live keys, by hash, and the uses not yet written.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_hash: HashMap<String, Principal>,
    hash_of: HashMap<String, String>,
    /// When each key's use was last noted for writing.
    noted: HashMap<String, i64>,
    /// Uses to write: key id -> time.
    unwritten: HashMap<String, i64>,
}

impl KeyRing {
    /// Holds `row` (replacing what the ring held for its id). A row that
    /// makes no principal (an app key without an app) is refused.
    pub fn insert(&mut self, row: &KeyRow) -> bool {
        let Some(principal) = Principal::of(row) else {
            self.remove(&row.id);
            return false;
        };
        // The same key read again (its own change coming back from the log)
        // keeps the uses noted meanwhile, written or not.
        if let Some(old) = self.hash_of.insert(row.id.clone(), row.key_hash.clone()) {
            self.by_hash.remove(&old);
        }
        self.by_hash.insert(row.key_hash.clone(), principal);
        if let Some(at) = row.last_used_at {
            let noted = self.noted.entry(row.id.clone()).or_insert(at);
            *noted = (*noted).max(at);
        }
        true
    }

    /// Forgets key `id`: it authenticates nothing from now on.
    pub fn remove(&mut self, id: &str) {
        if let Some(hash) = self.hash_of.remove(id) {
            self.by_hash.remove(&hash);
        }
        self.noted.remove(id);
        self.unwritten.remove(id);
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        *self = KeyRing::default();
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Whom the key hashing to `hash` speaks for, noting its use at `now`
    /// (epoch ms) when the last noted use is [`LAST_USED_RESOLUTION_MS`] old.
    pub fn authenticate(&mut self, hash: &str, now: i64) -> Option<Principal> {
        let principal = self.by_hash.get(hash)?.clone();
        let key_id = match &principal {
            Principal::App { key_id, .. } | Principal::Ingest { key_id, .. } => key_id,
        };
        let due = self
            .noted
            .get(key_id)
            .is_none_or(|at| now - at >= LAST_USED_RESOLUTION_MS);
        if due {
            self.noted.insert(key_id.clone(), now);
            self.unwritten.insert(key_id.clone(), now);
        }
        Some(principal)
    }

    /// The uses noted since the last call, to write.
    pub fn take_unwritten(&mut self) -> Vec<(String, i64)> {
        self.unwritten.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::keys::mint;

    #[test]
    fn a_key_speaks_for_its_app_until_it_is_removed() {
        let mut ring = KeyRing::default();
        let key = mint(KeyKind::App, Some("app_1".into()), None, None);
        assert!(ring.insert(&key.row));
        assert_eq!(
            ring.authenticate(&key.row.key_hash, 0),
            Some(Principal::App {
                app_id: "app_1".into(),
                key_id: key.row.id.clone()
            })
        );
        assert_eq!(ring.authenticate("not a hash", 0), None);
        ring.remove(&key.row.id);
        assert_eq!(ring.authenticate(&key.row.key_hash, 0), None);
        assert!(ring.is_empty());
    }

    #[test]
    fn an_ingest_key_may_ingest_only_for_its_apps() {
        let mut ring = KeyRing::default();
        let some = mint(KeyKind::Ingest, None, Some(&["app_1".into()]), None);
        let every = mint(KeyKind::Ingest, None, None, None);
        ring.insert(&some.row);
        ring.insert(&every.row);
        let some = ring.authenticate(&some.row.key_hash, 0).unwrap();
        let every = ring.authenticate(&every.row.key_hash, 0).unwrap();
        assert!(some.may_ingest_for("app_1"));
        assert!(!some.may_ingest_for("app_2"));
        assert!(every.may_ingest_for("app_2"));
        let app = Principal::App {
            app_id: "app_1".into(),
            key_id: "key_1".into(),
        };
        assert!(!app.may_ingest_for("app_1"));
    }

    #[test]
    fn a_keys_use_is_written_at_most_once_a_minute() {
        let mut ring = KeyRing::default();
        let key = mint(KeyKind::App, Some("app_1".into()), None, None);
        ring.insert(&key.row);
        let id = key.row.id.clone();
        ring.authenticate(&key.row.key_hash, 1_000);
        ring.authenticate(&key.row.key_hash, 2_000);
        assert_eq!(ring.take_unwritten(), vec![(id.clone(), 1_000)]);
        ring.authenticate(&key.row.key_hash, 1_000 + LAST_USED_RESOLUTION_MS - 1);
        assert_eq!(ring.take_unwritten(), vec![]);
        ring.authenticate(&key.row.key_hash, 1_000 + LAST_USED_RESOLUTION_MS);
        assert_eq!(
            ring.take_unwritten(),
            vec![(id, 1_000 + LAST_USED_RESOLUTION_MS)]
        );
    }

    #[test]
    fn a_key_read_again_keeps_the_use_noted_before() {
        let mut ring = KeyRing::default();
        let key = mint(KeyKind::App, Some("app_1".into()), None, None);
        ring.insert(&key.row);
        ring.authenticate(&key.row.key_hash, 5_000);
        ring.insert(&key.row);
        assert_eq!(ring.take_unwritten(), vec![(key.row.id.clone(), 5_000)]);
        ring.authenticate(&key.row.key_hash, 6_000);
        assert_eq!(ring.take_unwritten(), vec![]);
    }

    #[test]
    fn a_replaced_key_row_drops_the_old_hash() {
        let mut ring = KeyRing::default();
        let key = mint(KeyKind::App, Some("app_1".into()), None, None);
        ring.insert(&key.row);
        let mut moved = key.row.clone();
        moved.key_hash = "other".into();
        ring.insert(&moved);
        assert_eq!(ring.authenticate(&key.row.key_hash, 0), None);
        assert!(ring.authenticate("other", 0).is_some());
        assert_eq!(ring.len(), 1);
    }
}
