//! mailshift: a transparent IMAP/SMTP coexistence proxy for mail migrations.
//!
//! # Layout and data flow
//!
//! ```text
//!  client ─► imap::session ─► imap::preauth (sans-I/O) ─► Login
//!                 │                                        │
//!                 │        directory (cache ─► LDAP/file) ◄┘
//!                 │        route (mailHost ─► backend)
//!                 ▼
//!           imap::backend (connect, TLS, ID, login) ─► imap::relay (bytes both ways)
//!
//!  directory::sync (RFC 4533) ─► Change ─► server::kick_moved ─► sessions.kick
//!  admin (HTTP, web cockpit) ─► metrics, fleet (LDAP), events, report, actions
//! ```
//!
//! Dependencies point one way: `imap` → `route` → `directory`.

pub mod admin;
pub mod config;
pub mod directory;
pub mod duration;
pub mod events;
pub mod fleet;
pub mod imap;
pub mod metrics;
pub mod migrate;
pub mod report;
pub mod route;
pub mod server;
pub mod sessions;
pub mod smtp;
pub mod store;
pub mod stream;
pub mod tls;

pub use config::Config;
