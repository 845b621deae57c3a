//! Sync state under `state_dir`: per user and folder, the UIDVALIDITYs, the UID
//! map source → destination (from APPENDUID), the last HIGHESTMODSEQs, and the
//! messages that failed. An embedded redb database, one value per folder.
//!
//! It is a cache: with it gone, a pass matches destination messages by
//! fingerprint and copies nothing twice. It is written after every batch, so
//! a pass killed at any moment loses at most one batch of map entries, which
//! the next pass recovers by fingerprint.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const FOLDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("folders");

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
#[error("sync state {path}: {why}")]
pub struct Error {
    path: String,
    why: String,
}

/// A message that could not be copied, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failed {
    /// Source UID.
    pub uid: u32,
    /// The store's answer or our reason.
    pub reason: String,
}

/// The state of one folder pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FolderState {
    /// Source UIDVALIDITY the map belongs to.
    pub src_validity: u32,
    /// Destination UIDVALIDITY the map belongs to.
    pub dst_validity: u32,
    /// Source UID → destination UID, for every message mailshift copied (or
    /// matched by fingerprint).
    pub map: BTreeMap<u32, u32>,
    /// Destination UIDs known not to come from the source (the user's own):
    /// never touched, and not fingerprinted again.
    pub foreign: Vec<u32>,
    /// Source HIGHESTMODSEQ after the last complete pass (CONDSTORE).
    pub src_modseq: u64,
    /// Source UIDNEXT after the last complete pass.
    pub src_uidnext: u32,
    /// Destination HIGHESTMODSEQ after the last complete pass.
    pub dst_modseq: u64,
    /// Messages that failed on the last pass (retried on the next).
    pub failed: Vec<Failed>,
}

impl FolderState {
    /// Forgets everything (a UIDVALIDITY changed).
    pub fn reset(&mut self, src_validity: u32, dst_validity: u32) {
        *self = FolderState {
            src_validity,
            dst_validity,
            ..FolderState::default()
        };
    }
}

/// The state database.
pub struct StateStore {
    db: Database,
    path: String,
}

fn key(user: &str, folder: &str) -> String {
    format!("{}\u{0}{folder}", user.to_lowercase())
}

impl StateStore {
    /// Opens (or creates) `state_dir/sync.redb`.
    pub fn open(state_dir: &Path) -> Result<StateStore, Error> {
        let path = state_dir.join("sync.redb");
        let err = |why: String| Error {
            path: path.display().to_string(),
            why,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
        Ok(StateStore {
            db,
            path: path.display().to_string(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// The stored state of a folder (default when none).
    pub fn load(&self, user: &str, folder: &str) -> Result<FolderState, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match tx.open_table(FOLDERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(FolderState::default()),
            Err(e) => return Err(self.err(e)),
        };
        match table
            .get(key(user, folder).as_str())
            .map_err(|e| self.err(e))?
        {
            // An unreadable value is a cache miss, not an error: fingerprints recover.
            Some(v) => Ok(serde_json::from_slice(v.value()).unwrap_or_default()),
            None => Ok(FolderState::default()),
        }
    }

    /// Stores a folder's state durably.
    pub fn save(&self, user: &str, folder: &str, state: &FolderState) -> Result<(), Error> {
        let value = serde_json::to_vec(state).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(FOLDERS).map_err(|e| self.err(e))?;
            table
                .insert(key(user, folder).as_str(), value.as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every user with stored state.
    pub fn users(&self) -> Result<Vec<String>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match tx.open_table(FOLDERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out: Vec<String> = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, _) = item.map_err(|e| self.err(e))?;
            if let Some((user, _)) = k.value().split_once('\u{0}') {
                if out.last().map(String::as_str) != Some(user) {
                    out.push(user.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Every folder stored for a user, with its state.
    pub fn folders(&self, user: &str) -> Result<Vec<(String, FolderState)>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match tx.open_table(FOLDERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let prefix = key(user, "");
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if let Some(folder) = k.value().strip_prefix(prefix.as_str()) {
                out.push((
                    folder.to_string(),
                    serde_json::from_slice(v.value()).unwrap_or_default(),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_per_user_and_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        assert_eq!(
            store.load("alice", "INBOX").expect("load"),
            FolderState::default()
        );
        let mut s = FolderState::default();
        s.reset(7, 9);
        s.map.insert(1, 100);
        store.save("Alice", "INBOX", &s).expect("save");
        store
            .save("bob", "INBOX", &FolderState::default())
            .expect("save");
        assert_eq!(store.load("alice", "INBOX").expect("load"), s);
        let folders = store.folders("alice").expect("list");
        assert_eq!(folders.len(), 1);
        drop(store);
        let again = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(
            again.load("alice", "INBOX").expect("load").map.get(&1),
            Some(&100)
        );
    }
}
