//! What a running pass reports as it goes (folders planned, copying started,
//! bytes copied), for the command line's bars and the progress the fleet
//! view publishes to LDAP. Below [`crate::migrate`] and
//! [`crate::fleet`], so the fleet's publisher can wrap the engine's reporter
//! without the two importing each other.

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
