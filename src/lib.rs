//! mailshift: a transparent IMAP/SMTP coexistence proxy for mail migrations.
//!
//! # Layout and data flow
//!
//! ```text
//!  front ends (client side, each a sans-I/O pre-auth core + an async driver):
//!    imap        preauth, session, relay (bytes, optional Transform) | translate (UIDs kept)
//!    pop3        preauth, session, uidl (UIDLs kept for moved users)
//!    submission  preauth, session          managesieve  preauth, session
//!    smtp        session, driver, queue, retry (inbound delivery)
//!    proxy_protocol (PROXY v1/v2 from trusted_proxies), sasl (PLAIN, OAUTHBEARER, XOAUTH2)
//!        │ App::admit: route::resolve (lookup, hold wait) + password check + route
//!        ▼
//!  route::resolve(login | recipient) ─► directory (cache ─► LDAP / file) ─► Router (mailHost ─► Store)
//!        │
//!        ▼
//!  store: one Store per [backends.NAME] (IMAP, delivery, submission, POP3, ManageSieve endpoints),
//!         connect (the one TLS connector), Error with the Side that failed;
//!         imap::{response, login, metadata} (sans-I/O) under imap::Client;
//!         smtp::{reply, dialog} under smtp::Conn; pop3::login under pop3::Client;
//!         sieve::{wire, login} under sieve::Client; bearer (OAuth exchange for any of them)
//!
//!  migrate: sync (engine) ─► store::imap::Client; state (redb cache, intents); cutover
//!           (hold, final pass, UID maps, flip); scheduler (lazy, scheduled, sweep); sieve scripts
//!  continuity: per-folder UID maps (old → new runs, MODSEQ offset) in the new mailbox
//!              (METADATA or a hidden folder), written at cutover, cached per session (App::maps)
//!  admin (HTTP on axum, web cockpit) ─► metrics, fleet (LDAP), events, report, actions
//!  app: what a config generation built (directory, router, TLS, sessions, throttle, maps)
//!  server (serve: build the App, listen, drain, SIGHUP) ─► front ends, scheduler, admin
//! ```
//!
//! - A login (IMAP; POP3, submission and ManageSieve alike): the front end's
//!   pre-auth core frames and parses commands, `App::admit` looks the user up
//!   (waiting out a hold), checks the password and picks the [`store::Store`],
//!   the protocol's store client logs in (ID / XCLIENT with the client's
//!   address; a bearer token passed unchanged), then bytes flow both ways in
//!   the one relay loop, `imap::relay` — untouched, or through its
//!   `Transform`: `imap::translate` for a user mailshift moved (old UIDs),
//!   `pop3::uidl` for a moved POP3 user (old UIDLs).
//! - A delivery: `smtp::driver` runs `smtp::session`; each RCPT is resolved by
//!   `route::resolve` over the one `Router<Store>`; DATA streams to one leg
//!   per store (`store::smtp::Conn`, opened by `Store::delivery`);
//!   the mixed outcome goes to `smtp::queue`, retried by `smtp::retry`
//!   (resolving again).
//! - A migration: `migrate::sync::Engine::pass` plans folders, then per folder
//!   recognises what is there (fingerprints, intents of batches in flight),
//!   copies in source UID order through `store::imap::Client`, pushes flags,
//!   copies Sieve scripts; `migrate::cutover` holds, runs the final pass,
//!   writes the UID maps (`continuity`), flips `mailHost`; `App::logged_in`
//!   starts a lazy migration from any front end's login.
//!
//! Dependencies: `server` → front ends and `admin` → `app` → `migrate`,
//! `route`, `store` → `directory` → `config`. Cycles still to cut: `store` and
//! `imap` share the IMAP framer (it lives in `imap`), `continuity` and
//! `migrate` read each other's types, `directory` carries a `continuity` mark.

pub mod admin;
pub mod app;
pub mod config;
pub mod continuity;
pub mod directory;
pub mod duration;
pub mod events;
pub mod fleet;
pub mod imap;
pub mod managesieve;
pub mod metrics;
pub mod migrate;
pub mod pop3;
pub mod proxy_protocol;
pub mod report;
pub mod route;
pub mod sasl;
pub mod server;
pub mod sessions;
pub mod smtp;
pub mod store;
pub mod stream;
pub mod submission;
pub mod throttle;
pub mod tls;

pub use config::Config;
