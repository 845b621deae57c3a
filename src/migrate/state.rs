//! Sync state under `state_dir/users/USER.redb`: per user and folder, the UIDVALIDITYs, the UID
//! map source → destination (from APPENDUID), the last HIGHESTMODSEQs, and the
//! messages that failed. An embedded redb database, one value per folder.
//!
//! It is a cache: with it gone, a pass matches destination messages by
//! fingerprint and copies nothing twice. It is written with every batch's
//! intent (the last batch's map with the folder's closing save), so a pass
//! killed at any moment loses at most one batch of map entries, which the
//! next pass recovers by fingerprint. The engine commits (redb fsyncs) on
//! blocking threads ([`StateStore::save`]); a folder that did not change is
//! not written at all.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const FOLDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("folders");
/// The old store's POP3 UIDLs, per folder (INBOX: POP3 sees no other).
const POP3_UIDLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pop3_uidls");

/// How often, and how far apart, opening a user's file is tried while
/// another process holds it: five seconds in all.
const OPEN_TRIES: u32 = 50;
const OPEN_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
/// The first tries of the engine's opener come sooner (see `db_async`).
const SOON_TRIES: u32 = 5;
const OPEN_SOON: std::time::Duration = std::time::Duration::from_millis(2);

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
/// A batch sent to the destination whose outcome is not known yet. Written
/// (durably) before the batch's bytes leave, cleared when its APPENDUIDs are in
/// the map. Found by a later pass it means: these messages may still be
/// committed by the destination, through a relay that already accepted them,
/// after the process that sent them died.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Intent {
    /// Source UIDs in the batch.
    pub uids: Vec<u32>,
    /// When it was sent (unix seconds).
    pub since: u64,
    /// The destination's UIDNEXT before it was sent, where known (0: not
    /// recorded): its messages can only have landed at or above it.
    #[serde(default)]
    pub dst_uidnext: u32,
}

/// A message copied again after an unresolved intent: the earlier copy may
/// still land. If a destination message with this fingerprint shows up
/// unmapped while the source UID is mapped elsewhere, it is that earlier copy
/// (mailshift's own, the intent proves it) and is removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ghost {
    /// Source UID.
    pub uid: u32,
    /// Its fingerprint.
    pub fingerprint: super::message::Fingerprint,
    /// When the copy that may still land was sent (unix seconds).
    pub since: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
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
    /// The batch in flight, if any (see [`Intent`]).
    pub intent: Option<Intent>,
    /// Earlier copies that may still land (see [`Ghost`]).
    pub ghosts: Vec<Ghost>,
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

/// The old store's POP3 UIDLs of a folder, each tied to the source IMAP
/// UID of the same message ([`super::pop3_uidls`]). A cache like the rest:
/// gone, the next pass reads them again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Pop3Uidls {
    /// Source UIDVALIDITY the UIDs belong to.
    pub src_validity: u32,
    /// UIDL → source UID.
    pub by_uidl: BTreeMap<String, u32>,
}

impl Pop3Uidls {
    /// The UIDLs of the messages `st` copied, keyed by source UID (with
    /// `by_copy`, by the copy's UID), in UID order; none when they belong
    /// to another source UIDVALIDITY than `st`'s.
    pub fn of_copies(&self, st: &FolderState, by_copy: bool) -> Vec<(u32, String)> {
        if self.src_validity != st.src_validity {
            return Vec::new();
        }
        let mut out: Vec<(u32, String)> = self
            .by_uidl
            .iter()
            .filter_map(|(uidl, uid)| {
                let copy = *st.map.get(uid)?;
                Some((if by_copy { copy } else { *uid }, uidl.clone()))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// The state databases: one redb file per user under `state_dir/users/`, so
/// `mailshift serve` and a `mailshift migrate` run beside it only meet when
/// they work on the same user (which the LDAP lease already forbids). A file is
/// open only while a pass of that user runs ([`close`](Self::close)).
pub struct StateStore {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Database>>>,
}

fn key(folder: &str) -> &str {
    folder
}

/// A file name for a login: lower case, anything unusual percent-encoded.
fn file_name(user: &str) -> String {
    let mut out = String::new();
    for b in user.to_lowercase().bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' || b == b'@' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    format!("{out}.redb")
}

fn user_of(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".redb")?;
    let bytes = stem.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl StateStore {
    /// The store under `state_dir` (created when missing).
    pub fn open(state_dir: &Path) -> Result<StateStore, Error> {
        let dir = state_dir.join("users");
        std::fs::create_dir_all(&dir).map_err(|e| Error {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(StateStore {
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn err(&self, user: &str, e: impl std::fmt::Display) -> Error {
        Error {
            path: self.dir.join(file_name(user)).display().to_string(),
            why: e.to_string(),
        }
    }

    fn opened(&self, user: &str) -> Option<Arc<Database>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&user.to_lowercase()).map(Arc::clone)
    }

    /// Keeps the first database opened for a user (two tasks may race).
    fn keep(&self, user: &str, db: Database) -> Arc<Database> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            open.entry(user.to_lowercase())
                .or_insert_with(|| Arc::new(db)),
        )
    }

    /// The user's database, opened on this (blocking) thread: for callers
    /// outside the runtime (the CLI's status) or in `spawn_blocking`.
    fn db(&self, user: &str) -> Result<Arc<Database>, Error> {
        if let Some(db) = self.opened(user) {
            return Ok(db);
        }
        let path = self.dir.join(file_name(user));
        // Another process may have this user's file open for a moment
        // (status, a sweep): wait a little rather than fail.
        let mut tries = 0;
        loop {
            match Database::create(&path) {
                Ok(db) => return Ok(self.keep(user, db)),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < OPEN_TRIES => {
                    tries += 1;
                    std::thread::sleep(OPEN_RETRY);
                }
                Err(e) => return Err(self.err(user, e)),
            }
        }
    }

    /// The user's database for the engine: opened (file I/O, a recovery
    /// after a crash) on a blocking thread, and the wait for another process
    /// to let go of the file is a tokio sleep, never a runtime thread's.
    async fn db_async(&self, user: &str) -> Result<Arc<Database>, Error> {
        let path = self.dir.join(file_name(user));
        let mut tries = 0;
        loop {
            // Checked on every try: another task of this process may have
            // opened it meanwhile (redb refuses a second open in-process too).
            if let Some(db) = self.opened(user) {
                return Ok(db);
            }
            let p = path.clone();
            match blocking(move || Database::create(p)).await {
                Ok(Ok(db)) => return Ok(self.keep(user, db)),
                Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) if tries < OPEN_TRIES => {
                    tries += 1;
                    // Most often another task of this process is opening it
                    // this very moment (it keeps it for us): look again soon.
                    let wait = if tries <= SOON_TRIES {
                        OPEN_SOON
                    } else {
                        OPEN_RETRY
                    };
                    tokio::time::sleep(wait).await;
                }
                Ok(Err(e)) => return Err(self.err(user, e)),
                Err(e) => return Err(self.err(user, e)),
            }
        }
    }

    /// Closes a user's file (end of a pass).
    pub fn close(&self, user: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&user.to_lowercase());
    }

    /// The stored state of a folder (default when none). Blocks: for
    /// callers outside the runtime or in `spawn_blocking`.
    pub fn load(&self, user: &str, folder: &str) -> Result<FolderState, Error> {
        let db = self.db(user)?;
        read(&db, folder).map_err(|e| self.err(user, e))
    }

    /// Stores a folder's state durably (the commit fsyncs: this blocks).
    pub fn save_blocking(
        &self,
        user: &str,
        folder: &str,
        state: &FolderState,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(state).map_err(|e| self.err(user, e))?;
        let db = self.db(user)?;
        write(&db, folder, &value).map_err(|e| self.err(user, e))
    }

    /// Stores a folder's state durably; the commit and its fsync run on a
    /// blocking thread, not on the runtime's.
    pub async fn save(&self, user: &str, folder: &str, state: &FolderState) -> Result<(), Error> {
        let value = serde_json::to_vec(state).map_err(|e| self.err(user, e))?;
        let db = self.db_async(user).await?;
        let folder = folder.to_string();
        match blocking(move || write(&db, &folder, &value)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(user, e)),
            Err(e) => Err(self.err(user, e)),
        }
    }

    /// The stored state of a folder (default when none), read on a blocking
    /// thread.
    pub async fn load_async(&self, user: &str, folder: &str) -> Result<FolderState, Error> {
        let db = self.db_async(user).await?;
        let folder = folder.to_string();
        match blocking(move || read(&db, &folder)).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(e)) => Err(self.err(user, e)),
            Err(e) => Err(self.err(user, e)),
        }
    }

    /// Every folder stored for a user, in one read transaction on a blocking
    /// thread (a pass reads them all before it talks to the stores).
    pub async fn folders_async(&self, user: &str) -> Result<HashMap<String, FolderState>, Error> {
        let db = self.db_async(user).await?;
        match blocking(move || read_all(&db)).await {
            Ok(Ok(all)) => Ok(all.into_iter().collect()),
            Ok(Err(e)) => Err(self.err(user, e)),
            Err(e) => Err(self.err(user, e)),
        }
    }

    /// The POP3 UIDLs read for a folder (empty when none). Blocks (see
    /// [`load`](Self::load)).
    pub fn load_pop3_uidls(&self, user: &str, folder: &str) -> Result<Pop3Uidls, Error> {
        let db = self.db(user)?;
        read_in(&db, POP3_UIDLS, folder).map_err(|e| self.err(user, e))
    }

    /// The POP3 UIDLs read for a folder (empty when none), on a blocking
    /// thread.
    pub async fn pop3_uidls(&self, user: &str, folder: &str) -> Result<Pop3Uidls, Error> {
        let db = self.db_async(user).await?;
        let folder = folder.to_string();
        match blocking(move || read_in(&db, POP3_UIDLS, &folder)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.err(user, e)),
            Err(e) => Err(self.err(user, e)),
        }
    }

    /// Stores the POP3 UIDLs of a folder durably, on a blocking thread.
    pub async fn save_pop3_uidls(
        &self,
        user: &str,
        folder: &str,
        uidls: &Pop3Uidls,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(uidls).map_err(|e| self.err(user, e))?;
        let db = self.db_async(user).await?;
        let folder = folder.to_string();
        match blocking(move || write_in(&db, POP3_UIDLS, &folder, &value)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err(user, e)),
            Err(e) => Err(self.err(user, e)),
        }
    }

    /// Every user with stored state.
    pub fn users(&self) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error {
                path: self.dir.display().to_string(),
                why: e.to_string(),
            })?
            .flatten()
            .filter_map(|e| user_of(&e.file_name().to_string_lossy()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every folder stored for a user, with its state. Blocks (see
    /// [`load`](Self::load)).
    pub fn folders(&self, user: &str) -> Result<Vec<(String, FolderState)>, Error> {
        let db = self.db(user)?;
        read_all(&db).map_err(|e| self.err(user, e))
    }
}

/// Runs blocking file work (redb commits fsync) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(work).await
}

/// Why a read or write failed, in words (the caller names the file).
fn why(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn read(db: &Database, folder: &str) -> Result<FolderState, String> {
    read_in(db, FOLDERS, folder)
}

fn read_in<T: serde::de::DeserializeOwned + Default>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    k: &str,
) -> Result<T, String> {
    let tx = db.begin_read().map_err(why)?;
    let table = match tx.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(T::default()),
        Err(e) => return Err(why(e)),
    };
    Ok(match table.get(key(k)).map_err(why)? {
        // An unreadable value is a cache miss, not an error: fingerprints recover.
        Some(v) => serde_json::from_slice(v.value()).unwrap_or_default(),
        None => T::default(),
    })
}

fn read_all(db: &Database) -> Result<Vec<(String, FolderState)>, String> {
    let tx = db.begin_read().map_err(why)?;
    let table = match tx.open_table(FOLDERS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(why(e)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(why)? {
        let (k, v) = item.map_err(why)?;
        out.push((
            k.value().to_string(),
            serde_json::from_slice(v.value()).unwrap_or_default(),
        ));
    }
    Ok(out)
}

fn write(db: &Database, folder: &str, value: &[u8]) -> Result<(), String> {
    write_in(db, FOLDERS, folder, value)
}

fn write_in(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    k: &str,
    value: &[u8],
) -> Result<(), String> {
    let tx = db.begin_write().map_err(why)?;
    {
        let mut table = tx.open_table(table).map_err(why)?;
        table.insert(key(k), value).map_err(why)?;
    }
    tx.commit().map_err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_engine_reads_and_writes_off_the_runtime_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        let mut s = FolderState::default();
        s.reset(3, 4);
        s.map.insert(5, 50);
        store.save("carol", "Sent", &s).await.expect("save");
        store
            .save("carol", "INBOX", &FolderState::default())
            .await
            .expect("save");
        assert_eq!(store.load_async("Carol", "Sent").await.expect("load"), s);
        let all = store.folders_async("carol").await.expect("all");
        assert_eq!(all.len(), 2);
        assert_eq!(all.get("Sent"), Some(&s));
        // The blocking readers see the same file.
        assert_eq!(store.load("carol", "Sent").expect("load"), s);
        assert_eq!(
            store.load_async("nobody", "INBOX").await.expect("load"),
            FolderState::default()
        );
        // POP3 UIDLs live beside the folders, not among them.
        let uidls = Pop3Uidls {
            src_validity: 3,
            by_uidl: [("a b".to_string(), 5)].into_iter().collect(),
        };
        store
            .save_pop3_uidls("carol", "INBOX", &uidls)
            .await
            .expect("save");
        assert_eq!(
            store.pop3_uidls("carol", "INBOX").await.expect("load"),
            uidls
        );
        assert_eq!(store.folders_async("carol").await.expect("all").len(), 2);
        assert_eq!(
            store.pop3_uidls("carol", "Sent").await.expect("load"),
            Pop3Uidls::default()
        );
    }

    #[test]
    fn uidls_of_copies_by_source_or_copy_uid() {
        let mut st = FolderState::default();
        st.reset(7, 9);
        st.map.insert(3, 30);
        st.map.insert(5, 31);
        let read = Pop3Uidls {
            src_validity: 7,
            by_uidl: [("c", 5), ("a", 3), ("not-copied", 6)]
                .into_iter()
                .map(|(u, n)| (u.to_string(), n))
                .collect(),
        };
        let pairs = |v: &[(u32, &str)]| -> Vec<(u32, String)> {
            v.iter().map(|(n, u)| (*n, u.to_string())).collect()
        };
        assert_eq!(read.of_copies(&st, false), pairs(&[(3, "a"), (5, "c")]));
        assert_eq!(read.of_copies(&st, true), pairs(&[(30, "a"), (31, "c")]));
        // Read under another UIDVALIDITY: the UIDs name other messages.
        st.reset(8, 9);
        assert!(read.of_copies(&st, false).is_empty());
    }

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
        store.save_blocking("Alice", "INBOX", &s).expect("save");
        store
            .save_blocking("bob", "INBOX", &FolderState::default())
            .expect("save");
        assert_eq!(store.load("alice", "INBOX").expect("load"), s);
        let folders = store.folders("alice").expect("list");
        assert_eq!(folders.len(), 1);
        assert_eq!(store.users().expect("users"), ["alice", "bob"]);
        assert_eq!(file_name("Odd User/1"), "odd%20user%2f1.redb");
        assert_eq!(
            user_of("odd%20user%2f1.redb").as_deref(),
            Some("odd user/1")
        );
        drop(store);
        let again = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(
            again.load("alice", "INBOX").expect("load").map.get(&1),
            Some(&100)
        );
    }
}
