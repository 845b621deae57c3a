//! One error type for talking to a store, saying which side failed.

/// Who is to blame, as pingora's error source says it: decides what a client
/// is told and whether trying again helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The store: down, slow, refusing, or speaking wrongly.
    Store,
    /// The client's own request: credentials the store rejected.
    Client,
    /// mailshift: its configuration or limits.
    Us,
}

/// Why talking to a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection failed or broke.
    #[error("{stage}: {source}")]
    Io {
        /// Where: connect, tls, greeting, login, ...
        stage: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The store took too long.
    #[error("{stage}: timed out")]
    Timeout {
        /// Where.
        stage: &'static str,
    },
    /// The store answered something we cannot use.
    #[error("{stage}: {what}")]
    Protocol {
        /// Where.
        stage: &'static str,
        /// What.
        what: String,
    },
    /// The store refused the credentials.
    #[error("login refused: {0}")]
    Rejected(String),
    /// The store is unavailable (BYE, `[UNAVAILABLE]`, overloaded).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A command was refused (`NO` or `BAD`).
    #[error("{command} refused: {reply}")]
    Refused {
        /// The command (no literals, no secrets).
        command: String,
        /// The tagged reply.
        reply: String,
        /// The reply carries a code that says "later" (`[UNAVAILABLE]`, ...).
        temporary: bool,
    },
    /// Our configuration cannot do what was asked.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            Error::Rejected(_) => Side::Client,
            Error::Config(_) => Side::Us,
            _ => Side::Store,
        }
    }

    /// Whether waiting and trying again may help.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Timeout { .. } | Error::Unavailable(_) => true,
            Error::Refused { temporary, .. } => *temporary,
            Error::Protocol { .. } | Error::Rejected(_) | Error::Config(_) => false,
        }
    }
}

/// An [`Error`] with the name of the store it came from.
#[derive(Debug, thiserror::Error)]
#[error("{store}: {error}")]
pub struct StoreError {
    /// The `[backends.NAME]`.
    pub store: String,
    /// What went wrong.
    #[source]
    pub error: Error,
}

impl StoreError {
    /// Whether waiting and trying again may help.
    pub fn is_temporary(&self) -> bool {
        self.error.is_temporary()
    }
}
