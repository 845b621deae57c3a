//! `[managesieve]` (the ManageSieve front end, RFC 5804) and the per-backend
//! `sieve` endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Endpoint, Problems, Security};

/// `[managesieve]`.
#[derive(Debug, Clone)]
pub struct ManageSieveConfig {
    /// Plain listener (STARTTLS offered when `[tls]` is set); 4190 by convention.
    pub listen: Option<SocketAddr>,
    /// Implicit-TLS listener (not in RFC 5804, but some clients and balancers use it).
    pub listen_tls: Option<SocketAddr>,
    /// Refuse AUTHENTICATE until TLS is on (default: true when `[tls]` is set).
    pub require_tls: bool,
    /// The implementation name in the greeting's `"IMPLEMENTATION"` line.
    pub implementation: String,
    /// The `"SIEVE"` capability before login (the store's own listing is
    /// what a client sees after it); the stores' common extensions.
    pub sieve_extensions: String,
    /// Limit for the whole pre-authentication phase.
    pub preauth_timeout: Duration,
    /// A relayed session with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Longest pre-auth line. AUTHENTICATE PLAIN fits in well under 1 KiB;
    /// 8 KiB leaves room for long logins without letting a client park memory.
    pub max_line: usize,
    /// Longest pre-auth literal (a SASL response sent as `{n+}`).
    pub max_literal: usize,
    /// Commands allowed before authentication.
    pub max_preauth_commands: u32,
    /// Each connection starts with a PROXY header (v1 or v2) from one of
    /// `trusted_proxies`; its address is the client's.
    pub proxy_protocol: bool,
    /// Offer AUTHENTICATE "OAUTHBEARER" / "XOAUTH2" and pass the client's
    /// token to the store unchanged (off by default).
    pub oauth: bool,
}

/// Pigeonhole's default set (Dovecot 2.3), what most stores offer.
const DEFAULT_EXTENSIONS: &str = "fileinto reject envelope encoded-character vacation \
    subaddress comparator-i;ascii-numeric relational regex imap4flags copy include \
    variables body enotify environment mailbox date index ihave duplicate mime \
    foreverypart extracttext";

/// The raw `[managesieve]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManageSieve {
    listen: Option<String>,
    listen_tls: Option<String>,
    require_tls: Option<bool>,
    implementation: Option<String>,
    sieve_extensions: Option<String>,
    preauth_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_line: Option<usize>,
    max_literal: Option<usize>,
    max_preauth_commands: Option<u32>,
    proxy_protocol: Option<bool>,
    oauth: Option<bool>,
}

pub(super) fn validate(
    raw: RawManageSieve,
    has_tls: bool,
    trusted: &[crate::proxy_protocol::IpNet],
    p: &mut Problems,
) -> ManageSieveConfig {
    let listen = raw
        .listen
        .as_deref()
        .and_then(|l| p.addr("managesieve.listen", l));
    let listen_tls = raw
        .listen_tls
        .as_deref()
        .and_then(|l| p.addr("managesieve.listen_tls", l));
    if listen_tls.is_some() && !has_tls {
        p.add(
            "managesieve.listen_tls",
            "needs a [tls] table with cert and key",
        );
    }
    let require_tls = raw.require_tls.unwrap_or(has_tls);
    if require_tls && !has_tls {
        p.add(
            "managesieve.require_tls",
            "needs a [tls] table with cert and key",
        );
    }
    let max_line = raw.max_line.unwrap_or(8 * 1024);
    if max_line < 512 {
        p.add("managesieve.max_line", "must be at least 512");
    }
    let max_literal = raw.max_literal.unwrap_or(8 * 1024);
    ManageSieveConfig {
        listen,
        listen_tls,
        require_tls,
        implementation: raw.implementation.unwrap_or_else(|| "mailshift".into()),
        sieve_extensions: raw
            .sieve_extensions
            .unwrap_or_else(|| DEFAULT_EXTENSIONS.into()),
        preauth_timeout: p.duration(
            "managesieve.preauth_timeout",
            raw.preauth_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        idle_timeout: p.duration(
            "managesieve.idle_timeout",
            raw.idle_timeout.as_deref(),
            Duration::from_secs(30 * 60),
        ),
        max_line: max_line.max(512),
        max_literal,
        max_preauth_commands: raw.max_preauth_commands.unwrap_or(32),
        proxy_protocol: super::proxy::listener("managesieve", raw.proxy_protocol, trusted, p),
        oauth: raw.oauth.unwrap_or(false),
    }
}

/// Parses `backends.NAME.sieve`: `sieve://host[:4190]` or `sieve+starttls://`.
pub(super) fn sieve_endpoint(p: &mut Problems, key: &str, text: &str) -> Option<Endpoint> {
    super::endpoint(
        p,
        key,
        text,
        &[
            ("sieve", Security::Plain, 4190),
            ("sieve+starttls", Security::StartTls, 4190),
        ],
    )
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Security};

    const BASE: &str = "[directory]\nkind = \"file\"\npath = \"/dev/null\"\n\
        [backends.old]\nmailhost = [\"old\"]\nimap = \"imap://127.0.0.1:1143\"\n";

    #[test]
    fn sieve_endpoint_and_table() {
        let c = Config::parse(&format!(
            "{BASE}sieve = \"sieve+starttls://127.0.0.1\"\n[managesieve]\nlisten = \"127.0.0.1:4190\"\n"
        ))
        .expect("test input is valid");
        let s = c.backends[0].sieve.as_ref().expect("test input is valid");
        assert_eq!((s.port, s.security), (4190, Security::StartTls));
        let m = c.managesieve.expect("test input is valid");
        assert_eq!(m.listen, Some(([127, 0, 0, 1], 4190).into()));
        assert!(!m.require_tls, "no [tls]: nothing to require");
        assert!(!m.oauth, "tokens are passed on only when asked for");
        let c = Config::parse(&format!(
            "{BASE}sieve = \"sieve://127.0.0.1\"\n[managesieve]\nlisten = \"127.0.0.1:4190\"\noauth = true\n"
        ))
        .expect("test input is valid");
        assert!(c.managesieve.expect("test input is valid").oauth);
    }

    #[test]
    fn bad_values_name_their_keys() {
        let err = Config::parse(&format!(
            "{BASE}sieve = \"sieves://h\"\n[managesieve]\nlisten = \"nowhere\"\nlisten_tls = \"127.0.0.1:1\"\nbogus = 1\n"
        ))
        .expect_err("must be refused")
        .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = Config::parse(&format!(
            "{BASE}sieve = \"sieves://h\"\n[managesieve]\nlisten = \"nowhere\"\nlisten_tls = \"127.0.0.1:1\"\n"
        ))
        .expect_err("must be refused")
        .to_string();
        assert!(
            err.contains("backends.old.sieve: unsupported scheme"),
            "{err}"
        );
        assert!(err.contains("managesieve.listen: "), "{err}");
        assert!(
            err.contains("managesieve.listen_tls: needs a [tls]"),
            "{err}"
        );
    }
}
