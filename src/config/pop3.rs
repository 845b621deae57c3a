//! `[pop3]` and the per-backend POP3 keys (`pop3`, `pop3_uidl_format`).
//!
//! Kept apart from `config.rs` so the front ends added beside it don't collide
//! there; `config.rs` only carries the field lines.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{endpoint, Endpoint, Problems, Security};

/// `[pop3]`: the POP3 front end.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Plain listener (STLS offered when `[tls]` is set), usually port 110.
    pub listen: Option<SocketAddr>,
    /// Implicit-TLS listener, usually port 995.
    pub listen_tls: Option<SocketAddr>,
    /// Refuse USER, PASS and AUTH until TLS is on.
    pub require_tls: bool,
    /// The greeting's text (after `+OK `).
    pub greeting: String,
    /// Limit for the whole pre-authentication phase.
    pub preauth_timeout: Duration,
    /// A relayed session with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Longest pre-auth command line. RFC 2449 allows 255 octets per command
    /// line; AUTH PLAIN with an initial response needs more for long logins.
    pub max_line: usize,
    /// Commands allowed before authentication.
    pub max_preauth_commands: u32,
    /// Each connection starts with a PROXY header (v1 or v2) from one of
    /// `trusted_proxies`; its address is the client's.
    pub proxy_protocol: bool,
    /// AUTH OAUTHBEARER and XOAUTH2 offered and passed to the store.
    pub oauth: bool,
    /// Relay sessions plain on both legs with splice(2) (Linux; off by
    /// default, as `[imap] splice`).
    pub splice: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPop3 {
    listen: Option<String>,
    listen_tls: Option<String>,
    require_tls: Option<bool>,
    greeting: Option<String>,
    preauth_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_line: Option<usize>,
    max_preauth_commands: Option<u32>,
    proxy_protocol: Option<bool>,
    oauth: Option<bool>,
    splice: Option<bool>,
}

pub(super) fn validate_pop3(
    r: RawPop3,
    has_tls: bool,
    backends: &[super::BackendConfig],
    trusted: &[crate::proxy_protocol::IpNet],
    p: &mut Problems,
) -> Pop3Config {
    for b in backends.iter().filter(|b| b.pop3.is_none()) {
        p.add(
            &format!("backends.{}.pop3", b.name),
            "is needed when [pop3] is set (pop3://, pop3+starttls:// or pop3s:// URL)",
        );
    }
    let listen = r.listen.as_deref().and_then(|a| p.addr("pop3.listen", a));
    let listen_tls = r
        .listen_tls
        .as_deref()
        .and_then(|a| p.addr("pop3.listen_tls", a));
    if listen_tls.is_some() && !has_tls {
        p.add("pop3.listen_tls", "needs a [tls] table with cert and key");
    }
    let require_tls = r.require_tls.unwrap_or(false);
    if require_tls && !has_tls {
        p.add("pop3.require_tls", "needs a [tls] table with cert and key");
    }
    // RFC 1939 section 3: the autologout timer is at least 10 minutes.
    let idle_timeout = p.duration(
        "pop3.idle_timeout",
        r.idle_timeout.as_deref(),
        Duration::from_secs(30 * 60),
    );
    if idle_timeout < Duration::from_secs(600) {
        p.add(
            "pop3.idle_timeout",
            "must be at least 10m (RFC 1939's autologout minimum)",
        );
    }
    let max_line = r.max_line.unwrap_or(4096);
    if !(512..=65536).contains(&max_line) {
        p.add("pop3.max_line", "must be 512 to 65536 bytes");
    }
    Pop3Config {
        listen,
        listen_tls,
        require_tls,
        greeting: r.greeting.unwrap_or_else(|| "POP3 server ready.".into()),
        preauth_timeout: p.duration(
            "pop3.preauth_timeout",
            r.preauth_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        idle_timeout,
        max_line,
        max_preauth_commands: r.max_preauth_commands.unwrap_or(32).max(1),
        proxy_protocol: super::proxy::listener("pop3", r.proxy_protocol, trusted, p),
        oauth: r.oauth.unwrap_or(false),
        // Measured side by side (benches/pop3.rs, RETR of 10 MB, three runs
        // each): spliced 0.93-1.08x the Dovecot proxy in the same run, copied
        // 0.91-0.92x; within the noise of this 2-core machine, so off by
        // default like IMAP's.
        splice: r.splice.unwrap_or(false),
    }
}

/// The store's POP3 endpoint from `backends.NAME.pop3`.
pub(super) fn backend_pop3(p: &mut Problems, key: &str, url: Option<&str>) -> Option<Endpoint> {
    url.and_then(|u| {
        endpoint(
            p,
            key,
            u,
            &[
                ("pop3", Security::Plain, 110),
                ("pop3+starttls", Security::StartTls, 110),
                ("pop3s", Security::Tls, 995),
            ],
        )
    })
}

/// How a store builds a message's UIDL (`backends.NAME.pop3_uidl_format`), in
/// Dovecot's notation: `%u` the IMAP UID, `%v` the folder's UIDVALIDITY, each
/// with an optional zero-padded width and `X` for hex (`%08Xu`), `%%` a
/// percent sign. Dovecot's default is `%08Xu%08Xv`; Dovecot prints `%X` in
/// lower-case hex (seen on 2.3: `000000016b0f8db1`), and so does this.
#[derive(Clone, PartialEq, Eq)]
pub struct UidlFormat {
    parts: Vec<UidlPart>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum UidlPart {
    Literal(String),
    Var {
        var: UidlVar,
        width: usize,
        zero: bool,
        radix: Radix,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UidlVar {
    Uid,
    Validity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Radix {
    Decimal,
    Hex,
}

/// Dovecot's default `pop3_uidl_format`.
pub const DEFAULT_UIDL_FORMAT: &str = "%08Xu%08Xv";

impl Default for UidlFormat {
    fn default() -> Self {
        // The default is a constant that parses; a failure would be caught by
        // the unit tests.
        UidlFormat::parse(DEFAULT_UIDL_FORMAT).unwrap_or(UidlFormat {
            parts: Vec::new(),
            text: String::new(),
        })
    }
}

impl fmt::Debug for UidlFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UidlFormat({:?})", self.text)
    }
}

impl fmt::Display for UidlFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl UidlFormat {
    /// Parses a format; only what is computable from an IMAP UID and
    /// UIDVALIDITY is accepted (`%m` header hashes, `%f` file names and
    /// `%g` GUIDs are not).
    pub fn parse(text: &str) -> Result<UidlFormat, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            if chars.peek() == Some(&'%') {
                chars.next();
                lit.push('%');
                continue;
            }
            let zero = chars.peek() == Some(&'0');
            let mut width = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                chars.next();
                width = width.saturating_mul(10).saturating_add(d as usize);
            }
            if width > 20 {
                return Err(format!("{text:?}: field width {width} is too wide"));
            }
            let radix = match chars.peek() {
                Some('X' | 'x') => {
                    chars.next();
                    Radix::Hex
                }
                _ => Radix::Decimal,
            };
            let var = match chars.next() {
                Some('u') => UidlVar::Uid,
                Some('v') => UidlVar::Validity,
                Some(other) => {
                    return Err(format!(
                        "{text:?}: %{other} cannot be computed from an IMAP UID (use %u, %v)"
                    ))
                }
                None => return Err(format!("{text:?}: ends inside a % variable")),
            };
            if !lit.is_empty() {
                parts.push(UidlPart::Literal(std::mem::take(&mut lit)));
            }
            parts.push(UidlPart::Var {
                var,
                width,
                zero,
                radix,
            });
        }
        if !lit.is_empty() {
            parts.push(UidlPart::Literal(lit));
        }
        if !parts.iter().any(|p| {
            matches!(
                p,
                UidlPart::Var {
                    var: UidlVar::Uid,
                    ..
                }
            )
        }) {
            return Err(format!(
                "{text:?}: needs %u (the UID) to tell messages apart"
            ));
        }
        Ok(UidlFormat {
            parts,
            text: text.to_string(),
        })
    }

    /// The UIDL of the message with IMAP `uid` in a folder of `validity`.
    pub fn uidl(&self, uid: u32, validity: u32) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                UidlPart::Literal(s) => out.push_str(s),
                UidlPart::Var {
                    var,
                    width,
                    zero,
                    radix,
                } => {
                    let v = match var {
                        UidlVar::Uid => uid,
                        UidlVar::Validity => validity,
                    };
                    let digits = match radix {
                        Radix::Decimal => v.to_string(),
                        Radix::Hex => format!("{v:x}"),
                    };
                    let pad = if *zero { '0' } else { ' ' };
                    for _ in digits.len()..*width {
                        out.push(pad);
                    }
                    out.push_str(&digits);
                }
            }
        }
        out
    }
}

/// `backends.NAME.pop3_uidl_format`, defaulting to Dovecot's.
pub(super) fn backend_uidl_format(p: &mut Problems, key: &str, text: Option<&str>) -> UidlFormat {
    match text.map(UidlFormat::parse) {
        None => UidlFormat::default(),
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            p.add(key, e);
            UidlFormat::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_default_is_uid_then_uidvalidity_in_hex() {
        let f = UidlFormat::default();
        assert_eq!(f.uidl(1, 0x6b0f_8db1), "000000016b0f8db1");
        assert_eq!(f.to_string(), DEFAULT_UIDL_FORMAT);
    }

    #[test]
    fn widths_radix_and_literals() {
        let f = UidlFormat::parse("u%u.%xv-%%").expect("test input");
        assert_eq!(f.uidl(42, 255), "u42.ff-%");
        let f = UidlFormat::parse("%5u").expect("test input");
        assert_eq!(f.uidl(42, 1), "   42");
    }

    const BASE: &str = r#"
[directory]
kind = "ldap"
url = "ldap://127.0.0.1:389"
base_dn = "ou=people,dc=example,dc=org"

[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:143"
"#;

    #[test]
    fn pop3_keys_parse_with_defaults() {
        let text = BASE.replace(
            "imap = \"imap://127.0.0.1:143\"\n",
            "imap = \"imap://127.0.0.1:143\"\npop3 = \"pop3s://store.example.org\"\npop3_uidl_format = \"%u.%v\"\n",
        ) + "[pop3]\nlisten = \"127.0.0.1:110\"\n";
        let c = crate::Config::parse(&text).expect("valid");
        let b = &c.backends[0];
        let ep = b.pop3.as_ref().expect("pop3 endpoint");
        assert_eq!((ep.port, ep.security), (995, Security::Tls));
        assert_eq!(b.pop3_uidl_format.uidl(7, 9), "7.9");
        let p = c.pop3.expect("[pop3]");
        assert_eq!(p.idle_timeout, Duration::from_secs(1800));
        assert!(!p.require_tls);
    }

    #[test]
    fn pop3_problems_name_their_keys() {
        // [pop3] without a backend pop3 URL, a TLS listener without [tls],
        // a bad scheme elsewhere, an uncomputable UIDL format.
        let text = BASE.to_string()
            + "pop3_uidl_format = \"%m\"\n[backends.new]\nmailhost = [\"new\"]\nimap = \"imap://h\"\npop3 = \"pop4://h\"\n\
               [pop3]\nlisten_tls = \"127.0.0.1:995\"\nidle_timeout = \"1m\"\n";
        let err = crate::Config::parse(&text)
            .expect_err("must fail")
            .to_string();
        for key in [
            "backends.old.pop3:",
            "backends.old.pop3_uidl_format:",
            "backends.new.pop3: unsupported scheme",
            "pop3.listen_tls:",
            "pop3.idle_timeout:",
        ] {
            assert!(err.contains(key), "{key} missing in:\n{err}");
        }
    }

    #[test]
    fn what_cannot_be_computed_is_refused() {
        for bad in ["%m", "%08Xv", "%f", "%u%", "%99u"] {
            assert!(UidlFormat::parse(bad).is_err(), "{bad}");
        }
    }
}
