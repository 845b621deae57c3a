//! Inbound SMTP: every recipient routed to the store its directory entry names,
//! in one transaction, with nothing lost or duplicated.
//!
//! ```text
//!  MTA ─► driver (socket, TLS, timeouts) ─► session (sans-I/O core) ─► command (parser)
//!           │  RCPT: directory lookup ─► route ─► a store leg (store::smtp::Conn) per store (opened on its first RCPT)
//!           │  DATA: streamed to every store at once ─► replies ─► 250 / 451 / queue
//!           ▼
//!         queue (durable, fsync'd; only the "some delivered, some temp-failed" case) ─► retry ─► DSN
//! ```

pub mod command;
pub mod driver;
pub mod queue;
pub mod retry;
pub mod session;

pub use driver::{accept_loop, Shared};
