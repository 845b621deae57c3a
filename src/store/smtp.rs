//! The SMTP/LMTP side of a store: one client for the delivery legs of inbound
//! mail, the retry queue and the submission leg.
//!
//! - [`reply`]: the sans-I/O reply reader (typed [`Reply`] with enhanced code)
//!   and EHLO [`Extensions`].
//! - [`dialog`]: the sans-I/O session opening (greeting, EHLO/LHLO,
//!   STARTTLS, XCLIENT/XFORWARD, AUTH) as explicit stages.
//! - [`client`]: the async [`Conn`] over the store's one TLS connector.

pub mod client;
pub mod dialog;
pub mod reply;

pub use client::{Challenged, Conn};
pub use dialog::{Auth, Origin, Plan};
pub use reply::{take_reply, Extensions, Reply};
