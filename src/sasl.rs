//! The SASL messages every front end decodes the same way (IMAP, POP3,
//! submission, ManageSieve): PLAIN (RFC 4616), the LOGIN mechanism's two
//! answers, OAUTHBEARER (RFC 7628) and XOAUTH2. Sans-I/O: the front end
//! frames the lines; this module turns a client's answer into who logs in.
//!
//! mailshift never judges a bearer token: it takes the user from the message
//! (the GS2 `a=` authzid, or XOAUTH2's `user=`) to route, and hands the
//! client's message to the store unchanged; the store's verdict is the answer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Why a client's SASL answer was refused before anyone was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not valid base64.
    #[error("invalid base64")]
    Base64,
    /// The client cancelled (`*`).
    #[error("authentication cancelled")]
    Cancelled,
    /// The message does not have the mechanism's shape.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// The login is not UTF-8.
    #[error("login is not UTF-8")]
    NotUtf8,
    /// An authorization identity other than the login: acting as someone else.
    #[error("authorization identity not allowed")]
    OtherAuthzid,
}

/// A client's secret: a password mailshift may check, or a bearer token it
/// passes on unchanged.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A password (LOGIN, PLAIN, USER/PASS, the LOGIN mechanism).
    Password(Vec<u8>),
    /// An OAuth bearer message, the client's whole SASL answer (decoded from
    /// base64), for the store to judge.
    Bearer {
        /// `OAUTHBEARER` or `XOAUTH2`.
        mechanism: Mechanism,
        /// The decoded message as the client sent it.
        message: Vec<u8>,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Bearer { mechanism, .. } => write!(f, "Bearer({mechanism:?}, <redacted>)"),
        }
    }
}

/// The bearer-token mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 7628.
    OAuthBearer,
    /// Google's and Microsoft's XOAUTH2.
    XOAuth2,
}

impl Mechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }
}

/// Who logs in, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The login as the client gave it.
    pub user: String,
    /// The password or token.
    pub secret: Secret,
}

/// Decodes one base64 SASL line (without CRLF). `*` is a cancel; `=` (and an
/// empty line) is an empty answer.
pub fn decode_line(line: &[u8]) -> Result<Vec<u8>, Error> {
    let line = line.trim_ascii();
    match line {
        b"*" => Err(Error::Cancelled),
        b"" | b"=" => Ok(Vec::new()),
        _ => STANDARD.decode(line).map_err(|_| Error::Base64),
    }
}

/// Encodes a server challenge or a client answer for the wire.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// PLAIN: `authzid \0 authcid \0 password`. An authzid other than the login
/// is refused (that is a master-user login, which clients never get to do).
pub fn plain(data: &[u8]) -> Result<Identity, Error> {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(authz), Some(authc), Some(pw)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Malformed("PLAIN"));
    };
    let user = String::from_utf8(authc.to_vec()).map_err(|_| Error::NotUtf8)?;
    if user.is_empty() {
        return Err(Error::Malformed("PLAIN"));
    }
    if !authz.is_empty() && authz != authc {
        return Err(Error::OtherAuthzid);
    }
    Ok(Identity {
        user,
        secret: Secret::Password(pw.to_vec()),
    })
}

/// OAUTHBEARER (RFC 7628 §3.1): `gs2-header \x01 kvpairs \x01`, the user taken
/// from the GS2 header's `a=` (with `=2C`/`=3D` unescaped).
pub fn oauthbearer(data: &[u8]) -> Result<Identity, Error> {
    const WHAT: &str = "OAUTHBEARER";
    let (gs2, rest) = split_once(data, b'\x01').ok_or(Error::Malformed(WHAT))?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let mut fields = gs2.splitn(3, |&b| b == b',');
    let flag = fields.next().ok_or(Error::Malformed(WHAT))?;
    if !matches!(flag, b"n" | b"y") {
        // "p=" asks for channel binding, which OAUTHBEARER does not define.
        return Err(Error::Malformed(WHAT));
    }
    let authz = fields.next().ok_or(Error::Malformed(WHAT))?;
    if fields.next() != Some(b"") {
        return Err(Error::Malformed(WHAT));
    }
    let user = authz.strip_prefix(b"a=").ok_or(Error::Malformed(WHAT))?;
    let user = unescape_saslname(user).ok_or(Error::Malformed(WHAT))?;
    if user.is_empty() || !has_auth_pair(rest) {
        return Err(Error::Malformed(WHAT));
    }
    Ok(Identity {
        user,
        secret: Secret::Bearer {
            mechanism: Mechanism::OAuthBearer,
            message: data.to_vec(),
        },
    })
}

/// XOAUTH2: `user=LOGIN \x01 auth=Bearer TOKEN \x01 \x01`.
pub fn xoauth2(data: &[u8]) -> Result<Identity, Error> {
    const WHAT: &str = "XOAUTH2";
    let user = data
        .split(|&b| b == b'\x01')
        .find_map(|kv| kv.strip_prefix(b"user="))
        .ok_or(Error::Malformed(WHAT))?;
    let user = String::from_utf8(user.to_vec()).map_err(|_| Error::NotUtf8)?;
    if user.is_empty() || !has_auth_pair(data) {
        return Err(Error::Malformed(WHAT));
    }
    Ok(Identity {
        user,
        secret: Secret::Bearer {
            mechanism: Mechanism::XOAuth2,
            message: data.to_vec(),
        },
    })
}

/// Decodes a bearer mechanism's answer.
pub fn bearer(mechanism: Mechanism, data: &[u8]) -> Result<Identity, Error> {
    match mechanism {
        Mechanism::OAuthBearer => oauthbearer(data),
        Mechanism::XOAuth2 => xoauth2(data),
    }
}

fn has_auth_pair(kvpairs: &[u8]) -> bool {
    kvpairs
        .split(|&b| b == b'\x01')
        .any(|kv| kv.starts_with(b"auth=") && kv.len() > 5)
}

fn split_once(data: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = data.iter().position(|&b| b == sep)?;
    Some((&data[..i], &data[i + 1..]))
}

/// RFC 5801 saslname: `=2C` is `,`, `=3D` is `=`; any other `=` is malformed.
fn unescape_saslname(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'=' {
            match s.get(i + 1..i + 3)? {
                b"2C" => out.push(b','),
                b"3D" => out.push(b'='),
                _ => return None,
            }
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_takes_the_login_and_refuses_another_authzid() {
        let id = plain(b"\0alice\0secret").expect("valid PLAIN");
        assert_eq!(id.user, "alice");
        assert_eq!(id.secret, Secret::Password(b"secret".to_vec()));
        assert_eq!(
            plain(b"alice\0alice\0pw").expect("same authzid").user,
            "alice"
        );
        assert_eq!(plain(b"bob\0alice\0pw"), Err(Error::OtherAuthzid));
        assert_eq!(plain(b"alice\0pw"), Err(Error::Malformed("PLAIN")));
        assert_eq!(plain(b"\0\xff\0pw"), Err(Error::NotUtf8));
        assert_eq!(plain(b"\0\0pw"), Err(Error::Malformed("PLAIN")));
    }

    #[test]
    fn oauthbearer_user_comes_from_the_gs2_authzid() {
        let msg = b"n,a=user=2Cx=3Dy@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let id = oauthbearer(msg).expect("valid OAUTHBEARER");
        assert_eq!(id.user, "user,x=y@example.com");
        assert_eq!(
            id.secret,
            Secret::Bearer {
                mechanism: Mechanism::OAuthBearer,
                message: msg.to_vec()
            }
        );
        // No authzid: nobody to route.
        assert!(oauthbearer(b"n,,\x01auth=Bearer x\x01\x01").is_err());
        // No token.
        assert!(oauthbearer(b"n,a=u,\x01host=h\x01\x01").is_err());
        assert!(oauthbearer(b"p=tls-unique,a=u,\x01auth=Bearer x\x01\x01").is_err());
        assert!(oauthbearer(b"n,a=u=ZZ,\x01auth=Bearer x\x01\x01").is_err());
        assert!(oauthbearer(b"").is_err());
    }

    #[test]
    fn xoauth2_user_comes_from_user_pair() {
        let msg = b"user=alice@example.com\x01auth=Bearer ya29.token\x01\x01";
        let id = xoauth2(msg).expect("valid XOAUTH2");
        assert_eq!(id.user, "alice@example.com");
        assert!(xoauth2(b"auth=Bearer x\x01\x01").is_err());
        assert!(xoauth2(b"user=alice\x01\x01").is_err());
    }

    #[test]
    fn lines_decode_cancel_and_empty() {
        assert_eq!(
            decode_line(b"AGFsaWNlAHNlY3JldA=="),
            Ok(b"\0alice\0secret".to_vec())
        );
        assert_eq!(decode_line(b"*"), Err(Error::Cancelled));
        assert_eq!(decode_line(b"="), Ok(Vec::new()));
        assert_eq!(decode_line(b"!!"), Err(Error::Base64));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = format!("{:?}", plain(b"\0alice\0hunter2").expect("valid"));
        assert!(!s.contains("hunter2"), "{s}");
    }
}
