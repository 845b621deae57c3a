//! mailshift: a transparent IMAP/SMTP coexistence proxy for mail migrations.
//!
//! # Layout and data flow
//!
//! ```text
//!  frontend: the one accept loop, session driver (span per session), bearer
//!    exchange and relay loop (bytes both ways, optional Transform), over each
//!    front end's sans-I/O pre-auth core (Core) and hooks (Protocol):
//!    imap        preauth, session (hooks), translate (UIDs kept: the relay's Transform)
//!    pop3        preauth, session (hooks), uidl (UIDLs kept: the relay's Transform)
//!    submission  preauth, session (hooks)  managesieve  preauth, session (hooks)
//!    smtp        session, driver, queue, retry (inbound delivery)
//!    proxy_protocol (PROXY v1/v2 from trusted_proxies), sasl (PLAIN, OAUTHBEARER, XOAUTH2),
//!    stream (plain | ClientTls | StoreTls), throttle (failed-login delays)
//!        │ App::admit: route::resolve (lookup, hold wait) + password check + route
//!        ▼
//!  route::resolve(login | recipient) ─► directory (cache ─► LDAP / file; schema: mailshift's
//!        │                               own LDAP attributes) ─► Router (mailHost ─► Store)
//!        ▼
//!  store: one Store per [backends.NAME] (IMAP, delivery, submission, POP3, ManageSieve endpoints),
//!         connect (the one TLS connector), Error with the Side that failed;
//!         imap::{response, login, metadata, folders, fetch} (sans-I/O) under imap::Client;
//!         smtp::{reply, dialog} under smtp::Conn; pop3::login under pop3::Client;
//!         sieve::{wire, login} under sieve::Client; bearer (OAuth exchange for any of them)
//!  imap_wire: the IMAP framer both sides share (client commands, store responses)
//!
//!  migrate: sync (engine) ─► store::imap::Client; state (redb cache, intents); cutover
//!           (hold, final pass, uid_maps, flip); scheduler (lazy, scheduled, sweep); sieve
//!           scripts; verify; report (the per-user proof)
//!  progress: what a running pass reports (Event, Reporter), below migrate and fleet
//!  continuity: per-folder UID maps (old → new runs, MODSEQ offset) kept in the new mailbox
//!              (METADATA or a hidden folder), written by migrate::uid_maps at cutover,
//!              cached per session (App::maps)
//!  admin (HTTP on axum, web cockpit) ─► metrics, fleet (LDAP), events, migrate::report, actions
//!  app: what a config generation built (config, directory, router, TLS, throttle, maps)
//!       and sessions (the registry of every front end's relayed sessions, for kicks)
//!  server (serve: build the App, listen, drain, SIGHUP) ─► front ends, scheduler, admin
//!  config (TOML, every problem named by its key; duration: "30s"-style values), tls (certs)
//!  the binary: main.rs (clap) ─► cli::{migrate, rollback, verify, status, plan, fleet}
//! ```
//!
//! - A login (IMAP; POP3, submission and ManageSieve alike): `frontend::session`
//!   runs the front end's pre-auth core, which frames and parses commands;
//!   `App::admit` looks the user up
//!   (waiting out a hold), checks the password and picks the [`store::Store`],
//!   the protocol's store client logs in (ID / XCLIENT with the client's
//!   address; a bearer token passed unchanged), the session registers in
//!   `app::sessions`, then bytes flow both ways in the one relay loop,
//!   `frontend::relay` — untouched, or through its `Transform`:
//!   `imap::translate` for a user mailshift moved (old UIDs), `pop3::uidl`
//!   for a moved POP3 user (old UIDLs).
//! - A delivery: `smtp::driver` runs `smtp::session`; each RCPT is resolved by
//!   `route::resolve` over the one `Router<Store>`; DATA streams to one leg
//!   per store (`store::smtp::Conn`, opened by `Store::delivery`);
//!   the mixed outcome goes to `smtp::queue`, retried by `smtp::retry`
//!   (resolving again).
//! - A migration: `migrate::sync::Engine::pass` plans folders
//!   (`store::imap::folders` lists them; one pipelined STATUS round trip a
//!   side skips the unchanged ones), then per changed folder runs the phases
//!   of `migrate::sync`: plan (open and list both sides), expunge mirror,
//!   recognise what is there (fingerprints, intents of batches in flight),
//!   copy in source UID order through `store::imap::Client`, push flags;
//!   Sieve scripts meanwhile, reporting `progress` events. `migrate::cutover`
//!   holds, runs the final pass, writes the UID maps (`migrate::uid_maps` into
//!   `continuity`'s store), flips `mailHost` (attributes from
//!   `directory::schema`), keeps a `migrate::report`; `App::logged_in` starts
//!   a lazy migration from any front end's login.
//!
//! Dependencies form a DAG (`tests/layout.rs` fails on a cycle and prints
//! it): `server` → `admin` and the front ends (`imap`, `pop3`, `submission`,
//! `managesieve`, `smtp`) → `frontend` (their shared driver and relay) →
//! `app` → `migrate` → `fleet`, `continuity` →
//! `store`, `route` → `directory` → `config`. Beside that spine: `store` →
//! `imap_wire`, `tls`, `sasl`, `stream`; `migrate` and `fleet` → `progress`,
//! `events`; the leaves `config`, `duration`, `events`, `imap_wire`,
//! `metrics`, `progress`, `proxy_protocol`, `sasl`, `stream`, `throttle`.
//! `pop3` reads `migrate::state` for the UIDLs of moved users; nothing below
//! the front ends imports one.

pub mod admin;
pub mod app;
pub mod config;
pub mod continuity;
pub mod directory;
pub mod duration;
pub mod events;
pub mod fleet;
pub mod frontend;
pub mod imap;
pub mod imap_wire;
pub mod managesieve;
pub mod metrics;
pub mod migrate;
pub mod pop3;
pub mod progress;
pub mod proxy_protocol;
pub mod route;
pub mod sasl;
pub mod server;
pub mod smtp;
pub mod store;
pub mod stream;
pub mod submission;
pub mod throttle;
pub mod tls;

pub use config::Config;
