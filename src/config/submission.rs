//! `[submission]` (the message submission front end, RFC 6409) and the
//! per-backend `submission` endpoint it relays to.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{endpoint, BackendConfig, Endpoint, Problems, Security};

/// `[submission]`.
#[derive(Debug, Clone)]
pub struct SubmissionConfig {
    /// Plain listener with STARTTLS (587).
    pub listen: Option<SocketAddr>,
    /// Implicit-TLS listener (465, RFC 8314).
    pub listen_tls: Option<SocketAddr>,
    /// Our name in the greeting, EHLO reply and EHLO to the store.
    pub hostname: String,
    /// AUTH only after TLS (offered only then). RFC 8314 wants it.
    pub require_tls: bool,
    /// Limit for the whole pre-authentication phase.
    pub preauth_timeout: Duration,
    /// A relayed session with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Longest pre-auth command line.
    pub max_line: usize,
    /// Commands allowed before authentication.
    pub max_preauth_commands: u32,
    /// Each connection starts with a PROXY header (v1 or v2) from one of
    /// `trusted_proxies`; its address is the client's.
    pub proxy_protocol: bool,
    /// AUTH OAUTHBEARER and XOAUTH2 offered and passed to the store.
    pub oauth: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubmission {
    listen: Option<String>,
    listen_tls: Option<String>,
    hostname: Option<String>,
    require_tls: Option<bool>,
    preauth_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_line: Option<usize>,
    max_preauth_commands: Option<u32>,
    proxy_protocol: Option<bool>,
    oauth: Option<bool>,
}

/// Validates `[submission]`; `has_tls`: a `[tls]` table is set.
pub(super) fn validate(
    s: RawSubmission,
    has_tls: bool,
    backends: &[BackendConfig],
    trusted: &[crate::proxy_protocol::IpNet],
    p: &mut Problems,
) -> SubmissionConfig {
    let listen = s
        .listen
        .as_deref()
        .and_then(|a| p.addr("submission.listen", a));
    let listen_tls = s
        .listen_tls
        .as_deref()
        .and_then(|a| p.addr("submission.listen_tls", a));
    if listen.is_none() && listen_tls.is_none() {
        p.add("submission", "needs listen and/or listen_tls");
    }
    let require_tls = s.require_tls.unwrap_or(true);
    if listen_tls.is_some() && !has_tls {
        p.add(
            "submission.listen_tls",
            "needs a [tls] table with cert and key",
        );
    }
    if require_tls && !has_tls {
        p.add(
            "submission.require_tls",
            "needs a [tls] table (or require_tls = false, for a lab)",
        );
    }
    for b in backends.iter().filter(|b| b.submission.is_none()) {
        p.add(
            &format!("backends.{}.submission", b.name),
            "is needed when [submission] is set (smtp+starttls:// or smtps:// URL)",
        );
    }
    let max_line = s.max_line.unwrap_or(4096);
    if !(512..=65536).contains(&max_line) {
        p.add(
            "submission.max_line",
            "must be 512 to 65536 bytes (RFC 5321: at least 512)",
        );
    }
    SubmissionConfig {
        listen,
        listen_tls,
        hostname: s.hostname.unwrap_or_else(super::default_instance_id),
        require_tls,
        preauth_timeout: p.duration(
            "submission.preauth_timeout",
            s.preauth_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        // RFC 5321 4.5.3.2.7: a server waits 5 minutes for a command.
        idle_timeout: p.duration(
            "submission.idle_timeout",
            s.idle_timeout.as_deref(),
            Duration::from_secs(300),
        ),
        max_line,
        max_preauth_commands: s.max_preauth_commands.unwrap_or(32),
        proxy_protocol: super::proxy::listener("submission", s.proxy_protocol, trusted, p),
        oauth: s.oauth.unwrap_or(false),
    }
}

/// `backends.NAME.submission`: the store's submission service, over STARTTLS
/// or implicit TLS only (the user's password crosses it).
pub(super) fn endpoint_of(p: &mut Problems, key: &str, text: Option<&str>) -> Option<Endpoint> {
    endpoint(
        p,
        key,
        text?,
        &[
            ("smtp+starttls", Security::StartTls, 587),
            ("smtps", Security::Tls, 465),
        ],
    )
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Security};

    const BASE: &str = r#"
[directory]
kind = "file"
path = "/dev/null"
[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:143"
"#;

    #[test]
    fn submission_keys_are_checked_and_named() {
        let text = format!(
            "{BASE}submission = \"smtp+starttls://127.0.0.1:10587\"\n\
             [submission]\nlisten = \"127.0.0.1:587\"\nrequire_tls = false\n"
        );
        let c = Config::parse(&text).expect("valid");
        let s = c.submission.expect("[submission]");
        assert_eq!(s.listen, Some("127.0.0.1:587".parse().expect("addr")));
        assert!(!s.require_tls);
        let ep = c.backends[0].submission.clone().expect("endpoint");
        assert_eq!((ep.security, ep.port), (Security::StartTls, 10587));

        let text = format!(
            "{BASE}submission = \"smtp://127.0.0.1:25\"\n\
             [submission]\nlisten_tls = \"127.0.0.1:465\"\nmax_line = 10\n"
        );
        let e = Config::parse(&text).expect_err("invalid").to_string();
        for key in [
            "backends.old.submission: unsupported scheme",
            "submission.listen_tls: needs a [tls]",
            "submission.require_tls",
            "submission.max_line",
        ] {
            assert!(e.contains(key), "{key} not in {e}");
        }
        let text = format!("{BASE}[submission]\nlisten = \"127.0.0.1:587\"\nrequire_tls = false\n");
        let e = Config::parse(&text).expect_err("no endpoint").to_string();
        assert!(e.contains("backends.old.submission: is needed"), "{e}");
    }
}
