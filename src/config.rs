//! Configuration: TOML parsed into raw serde structs, then validated into [`Config`].
//!
//! Raw structs refuse unknown keys (`deny_unknown_fields`): a typo in a security
//! setting must stop the start, not be ignored. Validation collects every problem,
//! each naming its key (`backends.old.imap: ...`), so an admin fixes them in one go.
//! Parsing reads the files the config names (secrets) but binds nothing and opens
//! no connection.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration;

mod submission;
pub use submission::SubmissionConfig;
mod pop3;
pub use pop3::{Pop3Config, UidlFormat, DEFAULT_UIDL_FORMAT};
mod managesieve;
pub use managesieve::ManageSieveConfig;
mod proxy;

/// Everything that is wrong with a config file, each problem naming its key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key (toml names it).
    #[error("{0}")]
    Syntax(String),
    /// The values are wrong; one line per problem.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where users are looked up.
    pub directory: DirectoryConfig,
    /// The mail stores, in name order.
    pub backends: Vec<BackendConfig>,
    /// The IMAP front end.
    pub imap: ImapConfig,
    /// The inbound SMTP front end (validated; see the README for what is served).
    pub smtp: Option<SmtpConfig>,
    /// The submission front end.
    pub submission: Option<SubmissionConfig>,
    /// The POP3 front end.
    pub pop3: Option<Pop3Config>,
    /// Certificate and key the front ends present.
    pub tls: Option<TlsConfig>,
    /// The admin HTTP listener.
    pub admin: Option<AdminConfig>,
    /// Migration settings.
    pub migration: Option<MigrationConfig>,
    /// The ManageSieve front end.
    pub managesieve: Option<ManageSieveConfig>,
    /// How long SIGTERM waits for sessions and cutovers to end before exiting.
    pub shutdown_grace: Duration,
    /// Who may send PROXY headers (`trusted_proxies`, CIDRs).
    pub trusted_proxies: Vec<crate::proxy_protocol::IpNet>,
}

/// `[directory]`.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// The directory's kind and its own settings.
    pub kind: DirectoryKind,
    /// How long a found user is served from the cache.
    pub cache_ttl: Duration,
    /// How long an unknown login is remembered as unknown.
    pub negative_cache_ttl: Duration,
    /// Who checks the password.
    pub password_check: PasswordCheck,
}

/// Which directory answers lookups.
#[derive(Debug, Clone)]
// Built once at start; boxing the LDAP settings would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum DirectoryKind {
    /// LDAP, the production directory.
    Ldap(LdapConfig),
    /// A TOML user map, for small setups, demos and tests.
    File {
        /// The user map.
        path: PathBuf,
    },
}

/// Who verifies a login's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The backend does, when mailshift logs in as the user.
    Backend,
    /// mailshift binds to LDAP as the user first.
    Bind,
}

/// LDAP settings of `[directory]`.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://` or `ldaps://` URL.
    pub url: String,
    /// DN mailshift binds as for searches (anonymous when absent).
    pub bind_dn: Option<String>,
    /// Its password.
    pub bind_password: Option<String>,
    /// Where users live.
    pub base_dn: String,
    /// Filter for one login; `%u` is replaced by the RFC 4515-escaped login.
    pub user_filter: String,
    /// Filter for one inbound recipient address; `%s` is replaced by the
    /// RFC 4515-escaped address (domain lowercased).
    pub recipient_filter: String,
    /// The attribute that holds the login (keys the cache for synced changes).
    pub login_attribute: String,
    /// The routing attribute.
    pub mailhost_attribute: String,
    /// The account status attribute (`active`, `hold`, `inactive`).
    pub status_attribute: String,
    /// Limit for one LDAP operation, connect included.
    pub timeout: Duration,
    /// Connections kept open for searches.
    pub pool_size: usize,
    /// Follow changes with RFC 4533 refreshAndPersist when the server offers it.
    pub sync: bool,
}

/// `[backends.NAME]`: one mail store.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The table name, used in logs and metric labels.
    pub name: String,
    /// The `mailHost` values that route here.
    pub mailhosts: Vec<String>,
    /// The store's IMAP endpoint.
    pub imap: Endpoint,
    /// The store's delivery endpoint (SMTP or LMTP).
    pub delivery: Option<Endpoint>,
    /// The store's submission service (`smtp+starttls://`, `smtps://`).
    pub submission: Option<Endpoint>,
    /// The store's ManageSieve endpoint.
    pub sieve: Option<Endpoint>,
    /// Master user for logins on a user's behalf (proxy `login = "master"`, migration).
    pub master: Option<MasterLogin>,
    /// How proxied IMAP sessions log in.
    pub login: BackendLogin,
    /// CA certificates that sign the store's certificate (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the store's certificate (else the URL's host).
    pub tls_server_name: Option<String>,
    /// Limit for connect, greeting, TLS and login.
    pub connect_timeout: Duration,
    /// For a store without a master user (Courier, UW-IMAP): `login:password`
    /// lines the migration logs in with, read at each connection (so an admin
    /// can add users without a reload).
    pub passwords_file: Option<PathBuf>,
    /// The store's POP3 endpoint (`pop3://`, `pop3+starttls://`, `pop3s://`).
    pub pop3: Option<Endpoint>,
    /// How the store builds UIDLs (`pop3_uidl_format`, Dovecot's notation).
    pub pop3_uidl_format: UidlFormat,
    /// Whether `pop3_uidl_format` was set: a migration from this store then
    /// computes the old UIDLs from it; else, where the store has `pop3`, it
    /// reads them over POP3 ([`crate::migrate::pop3_uidls`]).
    pub pop3_uidl_format_set: bool,
}

impl BackendConfig {
    /// Whether a migration from this store reads its POP3 UIDLs.
    pub fn reads_pop3_uidls(&self) -> bool {
        self.pop3.is_some() && !self.pop3_uidl_format_set
    }
}

/// How mailshift logs in to a store for a proxied session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendLogin {
    /// With the client's own login and password.
    User,
    /// As the master user on the user's behalf.
    Master,
}

/// A store's master user.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterLogin {
    /// The master user's login.
    pub user: String,
    /// Its password.
    pub password: String,
    /// `Some("*")`: log in as `user*master` (Dovecot's form); `None`: SASL PLAIN
    /// with the user as authorization identity.
    pub separator: Option<String>,
}

impl fmt::Debug for MasterLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterLogin")
            .field("user", &self.user)
            .field("separator", &self.separator)
            .finish_non_exhaustive()
    }
}

/// How a connection to an endpoint is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS.
    Plain,
    /// Plain, then STARTTLS before anything else.
    StartTls,
    /// TLS from the first byte.
    Tls,
}

/// A parsed `imap://`, `imap+starttls://`, `imaps://`, `smtp://`, `lmtp://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The scheme as written.
    pub scheme: String,
    /// How the connection is secured.
    pub security: Security,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// `[imap]`.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// Plain listener (STARTTLS offered when `[tls]` is set).
    pub listen: Option<SocketAddr>,
    /// Implicit-TLS listener.
    pub listen_tls: Option<SocketAddr>,
    /// Close a user's open sessions when their route changes.
    pub kick_on_move: bool,
    /// Refuse LOGIN and AUTHENTICATE until TLS is on (LOGINDISABLED).
    pub require_tls: bool,
    /// The greeting's text.
    pub greeting: String,
    /// Limit for the whole pre-authentication phase.
    pub preauth_timeout: Duration,
    /// A relayed session with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Longest pre-auth command line.
    pub max_line: usize,
    /// Longest pre-auth literal.
    pub max_literal: usize,
    /// Commands allowed before authentication.
    pub max_preauth_commands: u32,
    /// Base delay before a failed login is answered; it doubles per recent failure.
    pub auth_failure_delay: Duration,
    /// Upper bound of that delay.
    pub auth_failure_delay_max: Duration,
    /// Relay plain-on-both-legs sessions with splice(2) (Linux; off by default).
    pub splice: bool,
    /// Every connection starts with a PROXY header (v1 or v2).
    pub proxy_protocol: bool,
    /// Offer AUTHENTICATE OAUTHBEARER and XOAUTH2, passed to the store.
    pub oauth: bool,
}

/// `[smtp]`.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Listener address.
    pub listen: SocketAddr,
    /// Largest message accepted.
    pub max_message_size: u64,
    /// Most recipients in one transaction.
    pub max_recipients: u32,
    /// The mail domains served (lowercase); any other recipient domain is
    /// refused with `550 5.7.1`: mailshift is never an open relay.
    pub domains: Vec<String>,
    /// The name in the greeting, EHLO reply and `Received:` header.
    pub hostname: String,
    /// Where the retry queue lives (`<migration.state_dir>/smtp-queue` by default).
    pub queue_dir: PathBuf,
    /// First retry delay of a queued delivery; it doubles per attempt, up to an hour.
    pub retry_interval: Duration,
    /// How long a queued delivery is retried before it bounces (DSN).
    pub queue_lifetime: Duration,
    /// Where DSNs to senders outside the served domains go (an `smtp://` relay);
    /// without it such DSNs are logged and dropped.
    pub bounce_relay: Option<Endpoint>,
    /// Limit for waiting on one client command line.
    pub command_timeout: Duration,
    /// Limit for waiting on the next bytes of a message during DATA.
    pub data_timeout: Duration,
    /// Limit for one backend reply (the end-of-data reply included).
    pub backend_timeout: Duration,
    /// Simultaneous connections from one client IP address.
    pub max_connections_per_ip: u32,
    /// Simultaneous connections in all.
    pub max_connections: u32,
    /// Longest command line (RFC 5321 4.5.3.1.4: at least 512).
    pub max_line: usize,
    /// Every connection starts with a PROXY header (v1 or v2).
    pub proxy_protocol: bool,
}

/// `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listener address.
    pub listen: SocketAddr,
    /// Bearer token for requests that change state (none: they are refused).
    pub token: Option<String>,
}

/// Migration mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationMode {
    /// Only from the CLI.
    Manual,
    /// When a user of the migrating set logs in.
    Lazy,
    /// In batches, in time windows.
    Scheduled,
}

/// `[migration]`.
#[derive(Debug, Clone)]
pub struct MigrationConfig {
    /// Source backend name.
    pub from: String,
    /// Destination backend name.
    pub to: String,
    /// Mode.
    pub mode: MigrationMode,
    /// Where sync state lives.
    pub state_dir: PathBuf,
    /// How long logins and deliveries wait for a hold to end.
    pub hold_wait: Duration,
    /// LDAP filter of the migrating set.
    pub users_filter: Option<String>,
    /// Time windows for scheduled migrations (none: any time).
    pub windows: Vec<Window>,
    /// Users migrated at once by this instance.
    pub concurrency: u32,
    /// Bandwidth cap for copying, bytes per second.
    pub max_bytes_per_second: Option<u64>,
    /// How long the old INBOX is swept after cutover.
    pub sweep_for: Duration,
    /// How often it is swept.
    pub sweep_interval: Duration,
    /// This instance's name in leases.
    pub instance_id: String,
    /// How long a claim on a user lasts without renewal.
    pub lease: Duration,
    /// Most destination messages one pass may delete without `--force`.
    pub max_deletes_per_pass: usize,
    /// Connections per store per user (folders sync in parallel).
    pub connections_per_user: usize,
    /// Connections per store for all migrations of this instance together.
    pub max_connections_per_store: usize,
    /// Source folders not migrated (wire names as LIST shows them).
    pub exclude_folders: Vec<String>,
    /// Source folder → destination folder, for what the defaults don't cover.
    pub folder_map: BTreeMap<String, String>,
    /// How long after a batch was sent its messages may still reach the
    /// destination (through a relay) once its sender died: a later pass waits
    /// that long for them before copying them again.
    pub settle: Duration,
    /// Clients keep their UIDs through a cutover: the cutover writes UID maps
    /// and sessions of moved users are translated (default true).
    pub keep_uids: bool,
}

// ---- raw serde structs: exactly the file's shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    directory: RawDirectory,
    #[serde(default)]
    backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    imap: Option<RawImap>,
    smtp: Option<RawSmtp>,
    submission: Option<submission::RawSubmission>,
    pop3: Option<pop3::RawPop3>,
    tls: Option<RawTls>,
    admin: Option<RawAdmin>,
    migration: Option<RawMigration>,
    managesieve: Option<managesieve::RawManageSieve>,
    shutdown_grace: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    kind: String,
    url: Option<String>,
    path: Option<PathBuf>,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    bind_password_file: Option<PathBuf>,
    base_dn: Option<String>,
    user_filter: Option<String>,
    recipient_filter: Option<String>,
    login_attribute: Option<String>,
    mailhost_attribute: Option<String>,
    status_attribute: Option<String>,
    cache_ttl: Option<String>,
    negative_cache_ttl: Option<String>,
    password_check: Option<String>,
    timeout: Option<String>,
    pool_size: Option<usize>,
    sync: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    mailhost: Vec<String>,
    imap: String,
    delivery: Option<String>,
    submission: Option<String>,
    sieve: Option<String>,
    master_user: Option<String>,
    master_password: Option<String>,
    master_password_file: Option<PathBuf>,
    login: Option<String>,
    master_separator: Option<String>,
    ca_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    connect_timeout: Option<String>,
    passwords_file: Option<PathBuf>,
    pop3: Option<String>,
    pop3_uidl_format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImap {
    listen: Option<String>,
    listen_tls: Option<String>,
    kick_on_move: Option<bool>,
    require_tls: Option<bool>,
    greeting: Option<String>,
    preauth_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_line: Option<usize>,
    max_literal: Option<usize>,
    max_preauth_commands: Option<u32>,
    auth_failure_delay: Option<String>,
    auth_failure_delay_max: Option<String>,
    splice: Option<bool>,
    proxy_protocol: Option<bool>,
    oauth: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    listen: String,
    max_message_size: Option<u64>,
    max_recipients: Option<u32>,
    #[serde(default)]
    domains: Vec<String>,
    hostname: Option<String>,
    queue_dir: Option<PathBuf>,
    retry_interval: Option<String>,
    queue_lifetime: Option<String>,
    bounce_relay: Option<String>,
    command_timeout: Option<String>,
    data_timeout: Option<String>,
    backend_timeout: Option<String>,
    max_connections_per_ip: Option<u32>,
    max_connections: Option<u32>,
    max_line: Option<usize>,
    proxy_protocol: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    from: String,
    to: String,
    mode: Option<String>,
    state_dir: PathBuf,
    hold_wait: Option<String>,
    users_filter: Option<String>,
    windows: Option<Vec<String>>,
    concurrency: Option<u32>,
    max_bytes_per_second: Option<u64>,
    sweep_for: Option<String>,
    sweep_interval: Option<String>,
    instance_id: Option<String>,
    lease: Option<String>,
    max_deletes_per_pass: Option<usize>,
    connections_per_user: Option<usize>,
    max_connections_per_store: Option<usize>,
    exclude_folders: Option<Vec<String>>,
    folder_map: Option<BTreeMap<String, String>>,
    settle: Option<String>,
    keep_uids: Option<bool>,
}

/// Collects problems while validating, so all of them are reported at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, what: impl fmt::Display) {
        self.0.push(format!("{key}: {what}"));
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value.map(duration::parse) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.add(key, e);
                default
            }
        }
    }

    fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(key, format!("\"{value}\" is not an address:port"));
                None
            }
        }
    }

    fn readable(&mut self, key: &str, path: &Path) {
        if let Err(e) = std::fs::metadata(path) {
            self.add(key, format!("{}: {e}", path.display()));
        }
    }

    /// A secret given inline or in a file, never both.
    fn secret(&mut self, key: &str, inline: Option<String>, file: Option<&Path>) -> Option<String> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.add(key, format!("give {key} or {key}_file, not both"));
                None
            }
            (Some(s), None) => Some(s),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                // A trailing newline from `echo secret > file` is not part of the secret.
                Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
                Err(e) => {
                    self.add(&format!("{key}_file"), format!("{}: {e}", path.display()));
                    None
                }
            },
            (None, None) => None,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Syntax(e.to_string()))?;
        let mut p = Problems::default();
        let config = validate(raw, &mut p);
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(Error::Invalid(p.0))
        }
    }

    /// The backend of the `[backends.NAME]` table called `name`.
    pub fn backend_named(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

fn validate(raw: RawConfig, p: &mut Problems) -> Config {
    let directory = validate_directory(raw.directory, p);
    let mut backends = Vec::new();
    let mut seen_mailhost: HashMap<String, String> = HashMap::new();
    for (name, b) in raw.backends {
        let backend = validate_backend(&name, b, p);
        for mh in &backend.mailhosts {
            if let Some(other) = seen_mailhost.insert(mh.to_ascii_lowercase(), name.clone()) {
                p.add(
                    &format!("backends.{name}.mailhost"),
                    format!("\"{mh}\" is also listed by backends.{other}"),
                );
            }
        }
        backends.push(backend);
    }
    if backends.is_empty() {
        p.add("backends", "at least one [backends.NAME] table is needed");
    }
    if directory.password_check == PasswordCheck::Backend {
        for b in backends.iter().filter(|b| b.login == BackendLogin::Master) {
            p.add(
                &format!("backends.{}.login", b.name),
                "\"master\" needs directory.password_check = \"bind\": \
                 the store does not check the user's password then",
            );
        }
    }
    let trusted_proxies = proxy::trusted(raw.trusted_proxies, p);
    let imap = validate_imap(raw.imap.unwrap_or_default(), &trusted_proxies, p);
    let tls = raw.tls.map(|t| {
        p.readable("tls.cert", &t.cert);
        p.readable("tls.key", &t.key);
        TlsConfig {
            cert: t.cert,
            key: t.key,
        }
    });
    if imap.listen_tls.is_some() && tls.is_none() {
        p.add("imap.listen_tls", "needs a [tls] table with cert and key");
    }
    if imap.require_tls && tls.is_none() {
        p.add("imap.require_tls", "needs a [tls] table with cert and key");
    }
    let pop3 = raw
        .pop3
        .map(|r| pop3::validate_pop3(r, tls.is_some(), &backends, &trusted_proxies, p));
    let state_dir = raw.migration.as_ref().map(|m| m.state_dir.clone());
    let smtp = raw
        .smtp
        .map(|s| validate_smtp(s, state_dir.as_deref(), &backends, &trusted_proxies, p));
    let submission = raw
        .submission
        .map(|s| submission::validate(s, tls.is_some(), &backends, &trusted_proxies, p));
    let admin = raw.admin.map(|a| AdminConfig {
        listen: a
            .listen
            .as_deref()
            .and_then(|l| p.addr("admin.listen", l))
            .unwrap_or(([127, 0, 0, 1], 9180).into()),
        token: p.secret("admin.token", a.token, a.token_file.as_deref()),
    });
    let migration = raw.migration.map(|m| validate_migration(m, &backends, p));
    let managesieve = raw
        .managesieve
        .map(|m| managesieve::validate(m, tls.is_some(), &trusted_proxies, p));
    let shutdown_grace = p.duration(
        "shutdown_grace",
        raw.shutdown_grace.as_deref(),
        Duration::from_secs(10),
    );
    if shutdown_grace.is_zero() {
        p.add(
            "shutdown_grace",
            "must be more than 0 (a cutover needs time to finish or undo its hold)",
        );
    }
    Config {
        directory,
        backends,
        imap,
        smtp,
        submission,
        pop3,
        tls,
        admin,
        migration,
        managesieve,
        shutdown_grace,
        trusted_proxies,
    }
}

fn validate_directory(d: RawDirectory, p: &mut Problems) -> DirectoryConfig {
    let password_check = match d.password_check.as_deref() {
        None | Some("backend") => PasswordCheck::Backend,
        Some("bind") => PasswordCheck::Bind,
        Some(other) => {
            p.add(
                "directory.password_check",
                format!("\"{other}\" is not \"backend\" or \"bind\""),
            );
            PasswordCheck::Backend
        }
    };
    let kind = match d.kind.as_str() {
        "ldap" => {
            let url = d.url.clone().unwrap_or_default();
            if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                p.add("directory.url", "an ldap:// or ldaps:// URL is needed");
            }
            let base_dn = d.base_dn.clone().unwrap_or_default();
            if base_dn.is_empty() {
                p.add("directory.base_dn", "is needed with kind = \"ldap\"");
            }
            let user_filter = d
                .user_filter
                .clone()
                .unwrap_or_else(|| "(&(objectClass=inetLocalMailRecipient)(uid=%u))".into());
            if !user_filter.contains("%u") {
                p.add("directory.user_filter", "must contain %u (the login)");
            }
            if !(user_filter.starts_with('(') && user_filter.ends_with(')')) {
                p.add(
                    "directory.user_filter",
                    "must be a parenthesised LDAP filter",
                );
            }
            let recipient_filter = d.recipient_filter.clone().unwrap_or_else(|| {
                "(&(objectClass=inetLocalMailRecipient)(|(mail=%s)(mailLocalAddress=%s)))".into()
            });
            if !recipient_filter.contains("%s") {
                p.add(
                    "directory.recipient_filter",
                    "must contain %s (the address)",
                );
            }
            if !(recipient_filter.starts_with('(') && recipient_filter.ends_with(')')) {
                p.add(
                    "directory.recipient_filter",
                    "must be a parenthesised LDAP filter",
                );
            }
            let pool_size = d.pool_size.unwrap_or(4);
            if pool_size == 0 || pool_size > 64 {
                p.add("directory.pool_size", "must be 1 to 64");
            }
            DirectoryKind::Ldap(LdapConfig {
                url,
                bind_password: p.secret(
                    "directory.bind_password",
                    d.bind_password,
                    d.bind_password_file.as_deref(),
                ),
                bind_dn: d.bind_dn,
                base_dn,
                user_filter,
                recipient_filter,
                login_attribute: d.login_attribute.unwrap_or_else(|| "uid".into()),
                mailhost_attribute: d.mailhost_attribute.unwrap_or_else(|| "mailHost".into()),
                status_attribute: d
                    .status_attribute
                    .unwrap_or_else(|| "mailUserStatus".into()),
                timeout: p.duration(
                    "directory.timeout",
                    d.timeout.as_deref(),
                    Duration::from_secs(5),
                ),
                pool_size: pool_size.clamp(1, 64),
                sync: d.sync.unwrap_or(true),
            })
        }
        "file" => {
            for (key, set) in [
                ("url", d.url.is_some()),
                ("bind_dn", d.bind_dn.is_some()),
                ("base_dn", d.base_dn.is_some()),
                ("user_filter", d.user_filter.is_some()),
                ("recipient_filter", d.recipient_filter.is_some()),
            ] {
                if set {
                    p.add(
                        &format!("directory.{key}"),
                        "only applies to kind = \"ldap\"",
                    );
                }
            }
            if password_check == PasswordCheck::Bind {
                p.add("directory.password_check", "\"bind\" needs kind = \"ldap\"");
            }
            let path = d.path.unwrap_or_default();
            if path.as_os_str().is_empty() {
                p.add("directory.path", "is needed with kind = \"file\"");
            } else {
                p.readable("directory.path", &path);
            }
            DirectoryKind::File { path }
        }
        other => {
            p.add(
                "directory.kind",
                format!("\"{other}\" is not \"ldap\" or \"file\""),
            );
            DirectoryKind::File {
                path: PathBuf::new(),
            }
        }
    };
    DirectoryConfig {
        kind,
        cache_ttl: p.duration(
            "directory.cache_ttl",
            d.cache_ttl.as_deref(),
            Duration::from_secs(300),
        ),
        negative_cache_ttl: p.duration(
            "directory.negative_cache_ttl",
            d.negative_cache_ttl.as_deref(),
            Duration::from_secs(30),
        ),
        password_check,
    }
}

/// Parses an endpoint URL of one of `schemes` (scheme, security, default port).
fn endpoint(
    p: &mut Problems,
    key: &str,
    text: &str,
    schemes: &[(&str, Security, u16)],
) -> Option<Endpoint> {
    let url = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            p.add(key, format!("\"{text}\" is not a URL: {e}"));
            return None;
        }
    };
    let Some(&(scheme, security, default_port)) =
        schemes.iter().find(|(s, _, _)| *s == url.scheme())
    else {
        let known: Vec<String> = schemes.iter().map(|(s, _, _)| format!("{s}://")).collect();
        p.add(
            key,
            format!(
                "unsupported scheme \"{}\" (use {})",
                url.scheme(),
                known.join(", ")
            ),
        );
        return None;
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        p.add(key, format!("\"{text}\" has no host"));
        return None;
    };
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        p.add(key, format!("\"{text}\" must be scheme://host:port only"));
    }
    // IPv6 hosts come back bracketed; connect() wants them bare.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some(Endpoint {
        scheme: scheme.to_string(),
        security,
        host,
        port: url.port().unwrap_or(default_port),
    })
}

fn validate_backend(name: &str, b: RawBackend, p: &mut Problems) -> BackendConfig {
    let key = |k: &str| format!("backends.{name}.{k}");
    if b.mailhost.is_empty() || b.mailhost.iter().any(|m| m.trim().is_empty()) {
        p.add(
            &key("mailhost"),
            "needs one or more non-empty mailHost values",
        );
    }
    let imap = endpoint(
        p,
        &key("imap"),
        &b.imap,
        &[
            ("imap", Security::Plain, 143),
            ("imap+starttls", Security::StartTls, 143),
            ("imaps", Security::Tls, 993),
        ],
    )
    .unwrap_or(Endpoint {
        scheme: "imap".into(),
        security: Security::Plain,
        host: String::new(),
        port: 0,
    });
    let delivery = b.delivery.as_deref().and_then(|d| {
        endpoint(
            p,
            &key("delivery"),
            d,
            &[
                ("smtp", Security::Plain, 25),
                ("smtp+starttls", Security::StartTls, 25),
                ("smtps", Security::Tls, 465),
                ("lmtp", Security::Plain, 24),
            ],
        )
    });
    let submission = submission::endpoint_of(p, &key("submission"), b.submission.as_deref());
    let sieve = b
        .sieve
        .as_deref()
        .and_then(|s| managesieve::sieve_endpoint(p, &key("sieve"), s));
    let password_given = b.master_password.is_some() || b.master_password_file.is_some();
    let master_password = p.secret(
        &key("master_password"),
        b.master_password,
        b.master_password_file.as_deref(),
    );
    if b.master_user.is_some() != password_given {
        p.add(
            &key("master_user"),
            "master_user and master_password go together",
        );
    }
    let login = match b.login.as_deref() {
        None | Some("user") => BackendLogin::User,
        Some("master") => BackendLogin::Master,
        Some(other) => {
            p.add(
                &key("login"),
                format!("\"{other}\" is not \"user\" or \"master\""),
            );
            BackendLogin::User
        }
    };
    let master = match (b.master_user, master_password) {
        (Some(user), Some(password)) => Some(MasterLogin {
            user,
            password,
            separator: b.master_separator.filter(|s| !s.is_empty()),
        }),
        _ => None,
    };
    if login == BackendLogin::Master && master.is_none() && !password_given {
        p.add(
            &key("login"),
            "\"master\" needs master_user and master_password",
        );
    }
    if let Some(ca) = &b.ca_file {
        p.readable(&key("ca_file"), ca);
    }
    if let Some(f) = &b.passwords_file {
        p.readable(&key("passwords_file"), f);
    }
    BackendConfig {
        name: name.to_string(),
        mailhosts: b.mailhost,
        imap,
        delivery,
        submission,
        sieve,
        master,
        login,
        ca_file: b.ca_file,
        tls_server_name: b.tls_server_name,
        connect_timeout: p.duration(
            &key("connect_timeout"),
            b.connect_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        passwords_file: b.passwords_file,
        pop3: pop3::backend_pop3(p, &key("pop3"), b.pop3.as_deref()),
        pop3_uidl_format: pop3::backend_uidl_format(
            p,
            &key("pop3_uidl_format"),
            b.pop3_uidl_format.as_deref(),
        ),
        pop3_uidl_format_set: b.pop3_uidl_format.is_some(),
    }
}

fn validate_smtp(
    s: RawSmtp,
    state_dir: Option<&Path>,
    backends: &[BackendConfig],
    trusted: &[crate::proxy_protocol::IpNet],
    p: &mut Problems,
) -> SmtpConfig {
    let domains: Vec<String> = s
        .domains
        .iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if domains.is_empty() || domains.iter().any(|d| d.is_empty() || d.contains('@')) {
        p.add(
            "smtp.domains",
            "needs the mail domains served, e.g. [\"example.org\"]",
        );
    }
    for b in backends.iter().filter(|b| b.delivery.is_none()) {
        p.add(
            &format!("backends.{}.delivery", b.name),
            "is needed when [smtp] is set (smtp:// or lmtp:// URL)",
        );
    }
    let queue_dir = match (s.queue_dir, state_dir) {
        (Some(q), _) => q,
        (None, Some(state)) => state.join("smtp-queue"),
        (None, None) => {
            p.add(
                "smtp.queue_dir",
                "is needed (or migration.state_dir, under which it defaults to smtp-queue)",
            );
            PathBuf::new()
        }
    };
    let max_line = s.max_line.unwrap_or(4096);
    if !(512..=65536).contains(&max_line) {
        p.add(
            "smtp.max_line",
            "must be 512 to 65536 bytes (RFC 5321: at least 512)",
        );
    }
    let max_recipients = s.max_recipients.unwrap_or(1000);
    if max_recipients < 100 {
        // RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients.
        p.add(
            "smtp.max_recipients",
            "must be at least 100 (RFC 5321 4.5.3.1.8)",
        );
    }
    let bounce_relay = s.bounce_relay.as_deref().and_then(|r| {
        endpoint(
            p,
            "smtp.bounce_relay",
            r,
            &[
                ("smtp", Security::Plain, 25),
                ("smtp+starttls", Security::StartTls, 25),
            ],
        )
    });
    SmtpConfig {
        listen: p
            .addr("smtp.listen", &s.listen)
            .unwrap_or(([0, 0, 0, 0], 25).into()),
        max_message_size: s.max_message_size.unwrap_or(50 * 1024 * 1024),
        max_recipients,
        domains,
        hostname: s.hostname.unwrap_or_else(default_instance_id),
        queue_dir,
        retry_interval: p.duration(
            "smtp.retry_interval",
            s.retry_interval.as_deref(),
            Duration::from_secs(60),
        ),
        queue_lifetime: p.duration(
            "smtp.queue_lifetime",
            s.queue_lifetime.as_deref(),
            Duration::from_secs(5 * 86_400),
        ),
        bounce_relay,
        // RFC 5321 4.5.3.2.7: a server waits at least 5 minutes for a command.
        command_timeout: p.duration(
            "smtp.command_timeout",
            s.command_timeout.as_deref(),
            Duration::from_secs(300),
        ),
        // RFC 5321 4.5.3.2.5 asks clients to wait 3 minutes per data block.
        data_timeout: p.duration(
            "smtp.data_timeout",
            s.data_timeout.as_deref(),
            Duration::from_secs(180),
        ),
        // RFC 5321 4.5.3.2.6: 10 minutes for the end-of-data reply.
        backend_timeout: p.duration(
            "smtp.backend_timeout",
            s.backend_timeout.as_deref(),
            Duration::from_secs(600),
        ),
        max_connections_per_ip: s.max_connections_per_ip.unwrap_or(20).max(1),
        max_connections: s.max_connections.unwrap_or(1000).max(1),
        max_line,
        proxy_protocol: proxy::listener("smtp", s.proxy_protocol, trusted, p),
    }
}

fn validate_imap(
    i: RawImap,
    trusted: &[crate::proxy_protocol::IpNet],
    p: &mut Problems,
) -> ImapConfig {
    let listen = i.listen.as_deref().and_then(|a| p.addr("imap.listen", a));
    let listen_tls = i
        .listen_tls
        .as_deref()
        .and_then(|a| p.addr("imap.listen_tls", a));
    let idle_timeout = p.duration(
        "imap.idle_timeout",
        i.idle_timeout.as_deref(),
        Duration::from_secs(2 * 3600),
    );
    // Clients re-issue IDLE about every 29 minutes (RFC 9051); anything shorter
    // would cut every idling client off.
    if idle_timeout < Duration::from_secs(30 * 60) {
        p.add(
            "imap.idle_timeout",
            "must be at least 30m (clients IDLE for 29 minutes)",
        );
    }
    let max_line = i.max_line.unwrap_or(8192);
    if !(512..=1 << 20).contains(&max_line) {
        p.add("imap.max_line", "must be 512 to 1048576 bytes");
    }
    let max_literal = i.max_literal.unwrap_or(4096);
    if max_literal > 1 << 20 {
        p.add("imap.max_literal", "must be at most 1048576 bytes");
    }
    ImapConfig {
        listen,
        listen_tls,
        kick_on_move: i.kick_on_move.unwrap_or(true),
        require_tls: i.require_tls.unwrap_or(false),
        greeting: i
            .greeting
            .unwrap_or_else(|| "IMAP4rev1 server ready.".into()),
        preauth_timeout: p.duration(
            "imap.preauth_timeout",
            i.preauth_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        idle_timeout,
        max_line,
        max_literal,
        max_preauth_commands: i.max_preauth_commands.unwrap_or(64),
        auth_failure_delay: p.duration(
            "imap.auth_failure_delay",
            i.auth_failure_delay.as_deref(),
            Duration::from_secs(1),
        ),
        auth_failure_delay_max: p.duration(
            "imap.auth_failure_delay_max",
            i.auth_failure_delay_max.as_deref(),
            Duration::from_secs(15),
        ),
        // Measured side by side (benches/proxy.rs, FETCH): the buffered copy was
        // faster on this 2-core lab (0.99× vs 0.87× direct), splice cheaper in
        // CPU (0.27 vs 0.34 s/GB). Off until it wins on throughput too.
        splice: i.splice.unwrap_or(false),
        proxy_protocol: proxy::listener("imap", i.proxy_protocol, trusted, p),
        oauth: i.oauth.unwrap_or(false),
    }
}

fn validate_migration(
    m: RawMigration,
    backends: &[BackendConfig],
    p: &mut Problems,
) -> MigrationConfig {
    for (key, name) in [("migration.from", &m.from), ("migration.to", &m.to)] {
        if !backends.iter().any(|b| &b.name == name) {
            p.add(key, format!("\"{name}\" is not a [backends.NAME] table"));
        }
    }
    if m.from == m.to {
        p.add("migration.to", "must differ from migration.from");
    }
    let mode = match m.mode.as_deref() {
        None | Some("manual") => MigrationMode::Manual,
        Some("lazy") => MigrationMode::Lazy,
        Some("scheduled") => MigrationMode::Scheduled,
        Some(other) => {
            p.add(
                "migration.mode",
                format!("\"{other}\" is not \"manual\", \"lazy\" or \"scheduled\""),
            );
            MigrationMode::Manual
        }
    };
    let mut windows = Vec::new();
    for w in m.windows.unwrap_or_default() {
        match check_window(&w) {
            Ok(win) => windows.push(win),
            Err(e) => p.add("migration.windows", e),
        }
    }
    let concurrency = m.concurrency.unwrap_or(4);
    if concurrency == 0 {
        p.add("migration.concurrency", "must be at least 1");
    }
    MigrationConfig {
        from: m.from,
        to: m.to,
        mode,
        state_dir: m.state_dir,
        hold_wait: p.duration(
            "migration.hold_wait",
            m.hold_wait.as_deref(),
            Duration::from_secs(20),
        ),
        users_filter: m.users_filter,
        windows,
        concurrency,
        max_bytes_per_second: m.max_bytes_per_second,
        sweep_for: p.duration(
            "migration.sweep_for",
            m.sweep_for.as_deref(),
            Duration::from_secs(7 * 86_400),
        ),
        sweep_interval: p.duration(
            "migration.sweep_interval",
            m.sweep_interval.as_deref(),
            Duration::from_secs(60),
        ),
        instance_id: m.instance_id.unwrap_or_else(default_instance_id),
        lease: p.duration(
            "migration.lease",
            m.lease.as_deref(),
            Duration::from_secs(60),
        ),
        max_deletes_per_pass: m.max_deletes_per_pass.unwrap_or(1000),
        connections_per_user: match m.connections_per_user.unwrap_or(4) {
            n @ 1..=16 => n,
            _ => {
                p.add("migration.connections_per_user", "must be 1 to 16");
                4
            }
        },
        max_connections_per_store: match m.max_connections_per_store.unwrap_or(16) {
            0 => {
                p.add("migration.max_connections_per_store", "must be at least 1");
                16
            }
            n => n,
        },
        exclude_folders: m.exclude_folders.unwrap_or_default(),
        folder_map: m.folder_map.unwrap_or_default(),
        settle: p.duration(
            "migration.settle",
            m.settle.as_deref(),
            Duration::from_secs(30),
        ),
        keep_uids: m.keep_uids.unwrap_or(true),
    }
}

fn default_instance_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mailshift".into())
}

/// A weekly time window in the host's local time, e.g. `Mon-Fri 20:00-06:00`
/// (overnight: from 20:00 on Monday to Friday until 06:00 the next morning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First day, 0 = Monday.
    pub first_day: u32,
    /// Last day, 0 = Monday (may be before `first_day`: wraps over Sunday).
    pub last_day: u32,
    /// Start, minutes after midnight.
    pub from: u32,
    /// End, minutes after midnight (≤ `from`: the next day).
    pub to: u32,
}

impl Window {
    fn day_in(&self, day: u32) -> bool {
        if self.first_day <= self.last_day {
            (self.first_day..=self.last_day).contains(&day)
        } else {
            day >= self.first_day || day <= self.last_day
        }
    }

    /// Whether the moment (weekday 0 = Monday, minutes after midnight) is inside.
    pub fn contains(&self, day: u32, minute: u32) -> bool {
        if self.from < self.to {
            self.day_in(day) && (self.from..self.to).contains(&minute)
        } else {
            (self.day_in(day) && minute >= self.from)
                || (self.day_in((day + 6) % 7) && minute < self.to)
        }
    }
}

/// Parses a time window such as `Mon-Fri 20:00-06:00` or `Sat 00:00-24:00`.
fn check_window(w: &str) -> Result<Window, String> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let bad = || format!("\"{w}\" is not like \"Mon-Fri 20:00-06:00\"");
    let (days, times) = w.trim().split_once(' ').ok_or_else(bad)?;
    let mut idx = Vec::new();
    for day in days.split('-') {
        idx.push(DAYS.iter().position(|d| *d == day).ok_or_else(bad)? as u32);
    }
    if idx.is_empty() || idx.len() > 2 {
        return Err(bad());
    }
    let (from, to) = times.trim().split_once('-').ok_or_else(bad)?;
    let mut minutes = Vec::new();
    for t in [from, to] {
        let (h, m) = t.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err(bad());
        }
        minutes.push(h * 60 + m);
    }
    Ok(Window {
        first_day: idx[0],
        last_day: *idx.last().unwrap_or(&idx[0]),
        from: minutes[0],
        to: minutes[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[directory]
kind = "ldap"
url = "ldap://127.0.0.1:389"
base_dn = "ou=people,dc=example,dc=org"

[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:31143"

[imap]
listen = "127.0.0.1:1143"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.backends[0].imap.port, 31143);
        assert_eq!(c.directory.cache_ttl, Duration::from_secs(300));
        assert!(c.imap.kick_on_move);
        let DirectoryKind::Ldap(l) = &c.directory.kind else {
            panic!("ldap expected")
        };
        assert_eq!(l.mailhost_attribute, "mailHost");
        assert_eq!(l.status_attribute, "mailUserStatus");
    }

    #[test]
    fn shutdown_grace_defaults_and_bad_values_are_named() {
        assert_eq!(
            Config::parse(MINIMAL).expect("valid").shutdown_grace,
            Duration::from_secs(10)
        );
        let c = Config::parse(&format!("shutdown_grace = \"3s\"\n{MINIMAL}")).expect("valid");
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        for bad in ["\"10\"", "\"0s\"", "\"soon\""] {
            let err = Config::parse(&format!("shutdown_grace = {bad}\n{MINIMAL}"))
                .expect_err("must fail")
                .to_string();
            assert!(err.contains("shutdown_grace"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("[imap]", "[imap]\nkick_on_mvoe = false");
        let err = Config::parse(&text)
            .expect_err("typo must fail")
            .to_string();
        assert!(err.contains("kick_on_mvoe"), "{err}");
    }

    #[test]
    fn bad_values_name_their_keys_all_at_once() {
        let text = MINIMAL
            .replace("imap://127.0.0.1:31143", "imapx://127.0.0.1:31143")
            .replace("[imap]", "[imap]\nidle_timeout = \"5\"");
        let err = Config::parse(&text).expect_err("must fail").to_string();
        assert!(
            err.contains("backends.old.imap: unsupported scheme \"imapx\""),
            "{err}"
        );
        assert!(err.contains("imap.idle_timeout"), "{err}");
    }

    #[test]
    fn duplicate_mailhost_is_refused() {
        let text = format!(
            "{MINIMAL}\n[backends.new]\nmailhost = [\"OLD.example.org\"]\nimap = \"imaps://h\"\n"
        );
        let err = Config::parse(&text).expect_err("must fail").to_string();
        assert!(err.contains("backends.old.mailhost") || err.contains("backends.new.mailhost"));
    }

    #[test]
    fn endpoint_schemes_and_default_ports() {
        let text = MINIMAL.replace("imap://127.0.0.1:31143", "imaps://store.example.org");
        let c = Config::parse(&text).expect("valid");
        assert_eq!(c.backends[0].imap.security, Security::Tls);
        assert_eq!(c.backends[0].imap.port, 993);
    }

    #[test]
    fn shipped_examples_only_lack_their_secret_files() {
        let text = include_str!("../config/mailshift.example.toml");
        match Config::parse(text) {
            Ok(_) => {}
            Err(Error::Invalid(problems)) => {
                for p in problems {
                    assert!(p.contains("No such file"), "{p}");
                }
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn windows_are_checked() {
        let night = check_window("Mon-Fri 20:00-06:00").expect("valid");
        assert!(night.contains(0, 21 * 60)); // Monday 21:00
        assert!(night.contains(5, 5 * 60)); // Saturday 05:00, Friday night's tail
        assert!(!night.contains(0, 5 * 60)); // Monday 05:00: Sunday night is outside
        assert!(!night.contains(2, 12 * 60));
        let sat = check_window("Sat 00:00-24:00").expect("valid");
        assert!(sat.contains(5, 0) && sat.contains(5, 1439) && !sat.contains(6, 0));
        assert!(check_window("Monday 20:00-06:00").is_err());
        assert!(check_window("Mon-Fri 25:00-06:00").is_err());
    }

    #[test]
    fn smtp_needs_domains_delivery_and_a_queue_dir() {
        let text = format!("{MINIMAL}\n[smtp]\nlisten = \"127.0.0.1:2525\"\n");
        let err = Config::parse(&text).expect_err("must fail").to_string();
        assert!(err.contains("smtp.domains"), "{err}");
        assert!(err.contains("backends.old.delivery"), "{err}");
        assert!(err.contains("smtp.queue_dir"), "{err}");
        let text = format!(
            "{}\n[smtp]\nlisten = \"127.0.0.1:2525\"\ndomains = [\"Example.ORG\"]\n\
             [migration]\nfrom = \"old\"\nto = \"old2\"\nstate_dir = \"/var/lib/ms\"\n\
             [backends.old2]\nmailhost = [\"x\"]\nimap = \"imap://h\"\ndelivery = \"smtp://h\"\n",
            MINIMAL.replace(
                "imap = \"imap://127.0.0.1:31143\"",
                "imap = \"imap://127.0.0.1:31143\"\ndelivery = \"lmtp://127.0.0.1:24\""
            )
        );
        let c = Config::parse(&text).expect("valid");
        let smtp = c.smtp.expect("smtp");
        assert_eq!(smtp.domains, ["example.org"]);
        assert_eq!(smtp.queue_dir, PathBuf::from("/var/lib/ms/smtp-queue"));
        assert_eq!(c.backends[0].delivery.as_ref().map(|d| d.port), Some(24));
    }

    #[test]
    fn recipient_filter_needs_its_placeholder() {
        let text = MINIMAL.replace(
            "[backends.old]",
            "recipient_filter = \"(mail=%u)\"\n[backends.old]",
        );
        let err = Config::parse(&text).expect_err("must fail").to_string();
        assert!(
            err.contains("directory.recipient_filter: must contain %s"),
            "{err}"
        );
    }

    #[test]
    fn migration_backends_must_exist() {
        let text = format!(
            "{MINIMAL}\n[migration]\nfrom = \"old\"\nto = \"nope\"\nstate_dir = \"/tmp/x\"\n"
        );
        let err = Config::parse(&text).expect_err("must fail").to_string();
        assert!(err.contains("migration.to: \"nope\""), "{err}");
    }
}
