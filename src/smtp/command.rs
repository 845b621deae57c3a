//! SMTP command lines (RFC 5321 4.1, RFC 6531 for UTF-8 addresses) parsed into
//! [`Command`]s. Our own small parser: the grammar is tiny, and every byte of an
//! address later goes into an LDAP filter, a log line and a backend command, so
//! it accepts only what the RFCs allow (no control bytes, bounded lengths).
//!
//! It takes one line without its CRLF and never panics; the fuzz target
//! `smtp_command` holds it to that.

use std::fmt;

/// RFC 5321 4.5.3.1.1: longest local part.
pub const MAX_LOCAL_PART_BYTES: usize = 64;
/// RFC 5321 4.5.3.1.2: longest domain.
pub const MAX_DOMAIN_BYTES: usize = 255;
/// RFC 5321 4.5.3.1.3: longest path, brackets included.
pub const MAX_PATH_BYTES: usize = 256;

/// An address `local@domain`, as the client wrote it (domain case kept; the
/// directory lookup lowercases it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Local part, quotes included when it was quoted.
    pub local: String,
    /// Domain or address literal (`[192.0.2.1]`).
    pub domain: String,
}

impl Address {
    /// Whether any byte is outside ASCII (needs SMTPUTF8, RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The domain, lowercased, without a trailing dot.
    pub fn domain_key(&self) -> String {
        self.domain.trim_end_matches('.').to_lowercase()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The `BODY=` parameter of MAIL (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// No parameter, or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// MAIL FROM parameters mailshift offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// One client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`.
    Helo(String),
    /// `EHLO domain`.
    Ehlo(String),
    /// `MAIL FROM:<path> params`; `None` is the null reverse path `<>`.
    Mail {
        /// The sender.
        from: Option<Address>,
        /// Its parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        /// The recipient.
        to: Address,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` (answered 252, never looked up).
    Vrfy,
    /// `EXPN` (refused).
    Expn,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `BDAT` (CHUNKING is not offered).
    Bdat,
    /// `AUTH` (not offered on port 25).
    Auth,
}

/// Why a line is not a command we run; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// `500 5.5.2`: no such command.
    Unknown,
    /// `501 5.5.4`: the arguments are malformed.
    Syntax(&'static str),
    /// `501 5.1.7` / `501 5.1.3`: the address is malformed.
    BadAddress(&'static str),
    /// `555 5.5.4`: a parameter we do not offer or cannot take.
    Parameter(String),
}

impl ParseError {
    /// The reply line (without CRLF).
    pub fn reply(&self) -> String {
        match self {
            ParseError::Unknown => "500 5.5.2 Command not recognized".into(),
            ParseError::Syntax(what) => format!("501 5.5.4 Syntax error: {what}"),
            ParseError::BadAddress(what) => format!("501 5.1.3 Bad address syntax: {what}"),
            ParseError::Parameter(p) => {
                format!("555 5.5.4 Unsupported parameter {}", printable(p))
            }
        }
    }
}

/// Keeps only printable ASCII of client text that is echoed back.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax("not UTF-8"))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::Syntax("control character"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let no_args = |c: Command| {
        if rest.trim().is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("no arguments allowed"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" => domain_arg(rest).map(Command::Helo),
        "EHLO" => domain_arg(rest).map(Command::Ehlo),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        // NOOP, HELP and VRFY may carry an argument; it is ignored.
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        "BDAT" => Ok(Command::Bdat),
        "AUTH" => Ok(Command::Auth),
        _ => Err(ParseError::Unknown),
    }
}

fn domain_arg(rest: &str) -> Result<String, ParseError> {
    let d = rest.trim();
    if d.is_empty() {
        return Err(ParseError::Syntax("a domain is needed"));
    }
    if d.len() > MAX_DOMAIN_BYTES || d.contains(' ') {
        return Err(ParseError::Syntax("bad domain"));
    }
    Ok(d.to_string())
}

/// Strips `keyword:` (case-insensitive), allowing spaces after the colon as
/// many clients send them.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start())
}

/// Splits `<path> params` into the path's inside and the parameter text.
fn path_and_params(s: &str) -> Result<(&str, &str), ParseError> {
    let s = s
        .strip_prefix('<')
        .ok_or(ParseError::BadAddress("< expected"))?;
    // The path ends at the first '>' outside a quoted local part.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let path = &s[..i];
                if path.len() + 2 > MAX_PATH_BYTES {
                    return Err(ParseError::BadAddress("path too long"));
                }
                let params = &s[i + 1..];
                if !(params.is_empty() || params.starts_with(' ')) {
                    return Err(ParseError::Syntax("space expected after >"));
                }
                return Ok((path, params.trim()));
            }
            _ => {}
        }
    }
    Err(ParseError::BadAddress("> expected"))
}

fn mail(rest: &str) -> Result<Command, ParseError> {
    let s = after_keyword(rest, "FROM:").ok_or(ParseError::Syntax("MAIL FROM:<address>"))?;
    let (path, params) = path_and_params(s)?;
    let from = if path.is_empty() {
        None
    } else {
        Some(address(path)?)
    };
    let mut p = MailParams::default();
    for param in params.split(' ').filter(|x| !x.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                p.size = Some(v.parse().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => p.body = Body::EightBitMime,
            ("SMTPUTF8", None) => p.smtputf8 = true,
            _ => return Err(ParseError::Parameter(param.to_string())),
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn rcpt(rest: &str) -> Result<Command, ParseError> {
    let s = after_keyword(rest, "TO:").ok_or(ParseError::Syntax("RCPT TO:<address>"))?;
    let (path, params) = path_and_params(s)?;
    if let Some(param) = params.split(' ').find(|x| !x.is_empty()) {
        return Err(ParseError::Parameter(param.to_string()));
    }
    // `<Postmaster>` without a domain (RFC 5321 4.1.1.3) has no domain to
    // route by; it is refused like any address we cannot route.
    Ok(Command::Rcpt { to: address(path)? })
}

/// Parses `[@route,@route:]local@domain`; a source route is ignored
/// (RFC 5321 4.1.1.3 / appendix C).
pub fn address(path: &str) -> Result<Address, ParseError> {
    let path = match path.strip_prefix('@') {
        Some(routed) => routed
            .split_once(':')
            .map(|(_, mailbox)| mailbox)
            .ok_or(ParseError::BadAddress("bad source route"))?,
        None => path,
    };
    let (local, domain) = split_mailbox(path)?;
    if local.is_empty() || local.len() > MAX_LOCAL_PART_BYTES {
        return Err(ParseError::BadAddress("local part empty or too long"));
    }
    if !local_part_ok(local) {
        return Err(ParseError::BadAddress("bad local part"));
    }
    if domain.is_empty() || domain.len() > MAX_DOMAIN_BYTES || !domain_ok(domain) {
        return Err(ParseError::BadAddress("bad domain"));
    }
    Ok(Address {
        local: local.to_string(),
        domain: domain.to_string(),
    })
}

/// Splits at the `@` that follows the local part (a quoted local part may hold `@`).
fn split_mailbox(path: &str) -> Result<(&str, &str), ParseError> {
    if path.starts_with('"') {
        let mut escaped = false;
        for (i, c) in path.char_indices().skip(1) {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' => {
                    let local = &path[..=i];
                    let rest = &path[i + 1..];
                    let domain = rest
                        .strip_prefix('@')
                        .ok_or(ParseError::BadAddress("@ expected"))?;
                    return Ok((local, domain));
                }
                _ => {}
            }
        }
        return Err(ParseError::BadAddress("unterminated quote"));
    }
    path.rsplit_once('@')
        .ok_or(ParseError::BadAddress("address needs a domain"))
}

/// atext of RFC 5322 plus UTF-8 (RFC 6531 extends atext with UTF8-non-ascii).
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn local_part_ok(local: &str) -> bool {
    if let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        // qtextSMTP / quoted-pairSMTP: printable ASCII (and UTF-8), no bare quote.
        let mut escaped = false;
        for c in inner.chars() {
            if escaped {
                if !(' '..='~').contains(&c) {
                    return false;
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || (c.is_ascii() && !(' '..='~').contains(&c)) {
                return false;
            }
        }
        return !escaped;
    }
    // Dot-string: atoms separated by single dots.
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

fn domain_ok(domain: &str) -> bool {
    if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return !lit.is_empty()
            && lit
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '[' && c != ']' && c != '\\');
    }
    let d = domain.strip_suffix('.').unwrap_or(domain);
    !d.is_empty()
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(l: &str, d: &str) -> Address {
        Address {
            local: l.into(),
            domain: d.into(),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse(b"ehlo mx.example.net"),
            Ok(Command::Ehlo("mx.example.net".into()))
        );
        assert_eq!(parse(b"QuIt"), Ok(Command::Quit));
        assert_eq!(parse(b"NOOP whatever"), Ok(Command::Noop));
        assert_eq!(parse(b"FOO"), Err(ParseError::Unknown));
        assert!(matches!(parse(b"DATA now"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn mail_from_paths_and_parameters() {
        assert_eq!(
            parse(b"MAIL FROM:<a@example.net> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail {
                from: Some(addr("a", "example.net")),
                params: MailParams {
                    size: Some(1000),
                    body: Body::EightBitMime,
                    smtputf8: true
                }
            })
        );
        assert_eq!(
            parse(b"mail from: <>"),
            Ok(Command::Mail {
                from: None,
                params: MailParams::default()
            })
        );
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> RET=FULL"),
            Err(ParseError::Parameter(_))
        ));
        assert!(matches!(
            parse(b"MAIL FROM:a@b"),
            Err(ParseError::BadAddress(_))
        ));
        assert!(matches!(
            parse(b"MAIL TO:<a@b>"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn rcpt_addresses() {
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:bob@Example.ORG>"),
            Ok(Command::Rcpt {
                to: addr("bob", "Example.ORG")
            })
        );
        assert_eq!(
            parse(br#"RCPT TO:<"a>b@c"@example.org>"#),
            Ok(Command::Rcpt {
                to: addr("\"a>b@c\"", "example.org")
            })
        );
        assert_eq!(
            parse("RCPT TO:<jörg@bücher.example>".as_bytes()),
            Ok(Command::Rcpt {
                to: addr("jörg", "bücher.example")
            })
        );
        for bad in [
            "RCPT TO:<*)(uid=*@example.org>",
            "RCPT TO:<a..b@example.org>",
            "RCPT TO:<postmaster>",
            "RCPT TO:<a@-x.org>",
            "RCPT TO:<a@b> NOTIFY=NEVER",
            "RCPT TO:<a\u{1}b@example.org>",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn lengths_are_bounded() {
        let long_local = format!("RCPT TO:<{}@example.org>", "a".repeat(65));
        assert!(parse(long_local.as_bytes()).is_err());
        let ok_local = format!("RCPT TO:<{}@example.org>", "a".repeat(64));
        assert!(parse(ok_local.as_bytes()).is_ok());
        let long_path = format!("RCPT TO:<a@{}.org>", "b.".repeat(130));
        assert!(parse(long_path.as_bytes()).is_err());
    }

    #[test]
    fn replies_do_not_echo_control_bytes() {
        let e = ParseError::Parameter("X=\u{7}\u{1b}[31m".into());
        assert!(e.reply().chars().all(|c| !c.is_control()));
    }
}
