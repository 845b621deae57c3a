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
//! - [`uid_maps`]: the clients' UID maps written at cutover and rollback.
//! - [`pop3_uidls`]: the old store's POP3 UIDLs, read during the passes.
//!
//! Messages are copied byte for byte with their flags and INTERNALDATE, in
//! source UID order per folder, so the destination UIDs keep the source's
//! order and the UID map stays monotonic (for presenting old UIDs later).

pub mod cutover;
pub mod folders;
pub mod message;
pub mod pop3_uidls;
pub mod report;
pub mod scheduler;
pub mod sieve;
pub mod state;
pub mod sync;
pub mod uid_maps;
pub mod verify;

pub use crate::progress::{Event, Quiet, Reporter};

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
    /// The clients' UID maps could not be read or written.
    #[error(transparent)]
    Continuity(#[from] crate::continuity::Error),
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
