//! The IMAP side of a store: one client for every use.

pub mod client;
pub mod fetch;
pub mod folders;
pub mod login;
pub mod metadata;
pub mod response;

pub use client::{Client, ClientInfo, Reply};
pub use login::{quoted, Credentials};
pub use response::Status;
