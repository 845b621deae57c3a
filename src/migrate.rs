//! The migration engine: incremental IMAP-to-IMAP mailbox sync that loses
//! nothing, and the verification that proves it.
//!
//! - [`folders`]: listing, namespace/delimiter translation, SPECIAL-USE mapping.
//! - [`message`]: listings, whole messages, fingerprints.
//! - [`sync`]: one pass of one user, in phases: plan, expunge mirror,
//!   fingerprint match, copy, flags (one file each under `sync/`), and the
//!   sweep after a cutover.
//! - [`state`]: the UID maps and modseqs under `state_dir` (a cache).
//! - [`verify`]: folder-by-folder comparison of the two mailboxes.
//!
//! Messages are copied byte for byte with their flags and INTERNALDATE, in
//! source UID order per folder, so the destination UIDs keep the source's
//! order and the UID map stays monotonic (for presenting old UIDs later).

pub mod cutover;
pub mod folders;
pub mod message;
pub mod scheduler;
pub mod sieve;
pub mod state;
pub mod sync;
pub mod verify;

/// Why a migration step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to a store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The sync state could not be read or written.
    #[error(transparent)]
    State(#[from] state::Error),
    /// No way to log in as the user.
    #[error("backends.{0} has no master_user, and no password was given for the user (log in through the proxy in lazy mode, or list it in backends.{0}.passwords_file)")]
    Credentials(String),
    /// A store lacks something the engine needs.
    #[error("{0}")]
    Unsupported(String),
    /// Reading or writing the user's LDAP entry failed.
    #[error("directory: {0}")]
    Directory(String),
    /// Someone else holds or changed the user (lease, hold, compare-and-swap).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A pass did not copy everything (so no cutover).
    #[error("{0}")]
    Incomplete(String),
    /// The destination cannot take the mailbox (quota), found before copying.
    #[error("{0}")]
    Capacity(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Store(e) => e.is_temporary(),
            _ => false,
        }
    }
}

/// Progress of a pass, for bars, log lines or JSON.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Folders planned.
    Planned {
        /// User.
        user: String,
        /// How many folders.
        folders: usize,
    },
    /// A folder starts copying.
    FolderStart {
        /// User.
        user: String,
        /// Source folder.
        folder: String,
        /// Messages to copy.
        messages: u64,
        /// Bytes to copy.
        bytes: u64,
    },
    /// Copying progressed (totals for the folder so far).
    Copied {
        /// User.
        user: String,
        /// Source folder.
        folder: String,
        /// Messages copied so far.
        messages: u64,
        /// Bytes copied so far.
        bytes: u64,
    },
}

/// Receives progress events.
pub trait Reporter: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

/// A reporter that drops everything.
pub struct Quiet;

impl Reporter for Quiet {
    fn event(&self, _: Event) {}
}
