//! mailshift: a transparent IMAP/SMTP coexistence proxy for mail migrations.
//!
//! # Layout and data flow
//!
//! ```text
//!  front ends: imap (session, preauth sans-I/O, relay), smtp (session sans-I/O, driver, queue, retry),
//!              pop3 (session, preauth sans-I/O, uidl rewriting for moved users)
//!              managesieve (preauth sans-I/O, session; relays with imap::relay)
//!              submission (preauth sans-I/O, session)
//!        │
//!        ▼
//!  route::resolve(login | recipient) ─► directory (cache ─► LDAP / file) ─► Router (mailHost ─► Store)
//!        │
//!        ▼
//!  store: Store per [backends.NAME] (IMAP, delivery, submission endpoints);
//!         imap::{response, login} (sans-I/O) under imap::Client;
//!         smtp::{reply, dialog} (sans-I/O) under smtp::Conn (delivery legs, retry, submission leg);
//!  store: Store per [backends.NAME]; imap::{response, login} (sans-I/O) under imap::Client;
//!         pop3::login (sans-I/O) under pop3::Client;
//!         connect (one TLS connector); Error with the Side that failed
//!
//!  migrate: sync (engine) ─► store::imap::Client; state (redb cache, intents); cutover; scheduler
//!  admin (HTTP on axum, web cockpit) ─► metrics, fleet (LDAP), events, report, actions
//!  server (serve: build, listen, drain, SIGHUP) ─► front ends, scheduler, admin
//!  app: what a config generation built (directory, router, TLS, sessions, throttle),
//!       App::admit = lookup + hold wait + password check + route for every front end
//!  sasl (PLAIN, OAUTHBEARER, XOAUTH2 decoding), throttle (failed-login delays)
//!  continuity: per-folder UID maps (old → new) written at cutover, loaded for translated sessions
//! ```
//!
//! - A login: `imap::session` frames and parses pre-auth commands with
//!   `imap::preauth`, `route::resolve` looks the user up (waiting out a hold)
//!   and picks the [`store::Store`], `store::imap::Client::connect` logs in
//!   (ID with the client's address), `imap::relay` moves bytes both ways.
//! - A delivery: `smtp::driver` runs `smtp::session`; each RCPT is resolved by
//!   `route::resolve` over the one `Router<Store>`; DATA streams to one leg
//!   per store (`store::smtp::Conn`, opened by `Store::delivery`);
//!   the mixed outcome goes to `smtp::queue`, retried by `smtp::retry`
//!   (resolving again).
//! - A submission: `submission::session` runs `submission::preauth` (EHLO,
//!   STARTTLS, AUTH), `App::admit` resolves and checks the user,
//!   `Store::submission` opens the store's submission service as the user
//!   (`store::smtp`: EHLO, STARTTLS, XCLIENT, AUTH), then `imap::relay`'s
//!   byte relay carries the session.
//! - A migration: `migrate::sync::Engine::pass` plans folders, then per folder
//!   recognises what is there (fingerprints, intents of batches in flight),
//!   copies in source UID order through `store::imap::Client`, pushes flags;
//!   `migrate::cutover` holds, runs the final pass, flips `mailHost`.
//!
//! Dependencies point one way: front ends and migrate → `route` → `store`,
//! `directory` → `config`.

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
