//! The store leg of a delivery: an SMTP or LMTP client connection to a store's
//! `delivery` endpoint, one transaction at a time.
//!
//! ```text
//!  connect ─► [TLS] ─► 220 ─► EHLO/LHLO ─► [STARTTLS ─► TLS ─► EHLO] ─► [XCLIENT ─► 220 ─► EHLO]
//!          ─► ( MAIL ─► RCPT… ─► DATA ─► 354 ─► bytes ─► reply (LMTP: one per RCPT) )*
//! ```
//!
//! Errors name the stage, like the IMAP backend leg's, so "greeting: connection
//! closed" tells an admin where to look.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::command::{Address, Body};
use crate::config::{BackendConfig, Endpoint, Security};
use crate::stream::Stream;

/// A reply line longer than this, or a reply of more lines, ends the connection.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Why the store leg failed. All of these are temporary for the sender.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Network trouble at a stage.
    #[error("{stage}: {source}")]
    Io {
        /// Where.
        stage: &'static str,
        /// What.
        source: std::io::Error,
    },
    /// The store took too long at a stage.
    #[error("{stage}: timed out")]
    Timeout {
        /// Where.
        stage: &'static str,
    },
    /// The store said something we cannot work with.
    #[error("{stage}: {what}")]
    Protocol {
        /// Where.
        stage: &'static str,
        /// What it said.
        what: String,
    },
}

/// One SMTP/LMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, without the code.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply of our own.
    pub fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.to_string()],
        }
    }

    /// 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as the client should read it (lines joined with CRLF, no
    /// trailing CRLF).
    pub fn to_client(&self) -> String {
        let n = self.lines.len().max(1);
        let mut out = String::new();
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                out.push_str("\r\n");
            }
            out.push_str(&format!("{:03}{sep}{text}", self.code));
        }
        out
    }

    /// All lines in one, for logs.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// Takes one whole (possibly multi-line) reply off the front of `buf`, sans
/// I/O; `None` when its last line has not arrived yet (nothing is taken then).
/// A malformed line (no three-digit code from 200 to 599, codes that change
/// within a reply, more than 100 lines) or a line past [`MAX_REPLY_BYTES`] is
/// an error at once.
/// The store leg reads through this, and so does the `smtp_reply` fuzz target.
pub fn take_reply(buf: &mut Vec<u8>, stage: &'static str) -> Result<Option<Reply>, Error> {
    let mut lines = Vec::new();
    let mut code = 0u16;
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
            if buf.len() - at > MAX_REPLY_BYTES {
                return Err(Error::Protocol {
                    stage,
                    what: "reply too long".into(),
                });
            }
            return Ok(None);
        };
        let raw = &buf[at..at + nl + 1];
        at += nl + 1;
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\r', '\n']);
        let bad = || Error::Protocol {
            stage,
            what: format!(
                "malformed reply {:?}",
                text.chars().take(80).collect::<String>()
            ),
        };
        if text.len() < 3 || !text.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let this: u16 = text[..3].parse().map_err(|_| bad())?;
        // RFC 5321 4.2: a reply code starts with 2 to 5. "024" would reach the
        // client as "24 ..." (found by the smtp_reply fuzz target).
        if !(200..600).contains(&this) {
            return Err(bad());
        }
        if code != 0 && this != code {
            return Err(bad());
        }
        code = this;
        let sep = text.as_bytes().get(3).copied();
        lines.push(text.get(4..).unwrap_or("").to_string());
        if lines.len() > 100 {
            return Err(bad());
        }
        if sep != Some(b'-') {
            buf.drain(..at);
            return Ok(Some(Reply { code, lines }));
        }
    }
}

/// Who the message came from, for the store (XCLIENT / XFORWARD).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub peer: SocketAddr,
    /// Its HELO name.
    pub helo: String,
}

/// A store as the SMTP front end uses it.
pub struct Delivery {
    /// Its config.
    pub cfg: BackendConfig,
    endpoint: Option<Endpoint>,
    tls: Option<TlsConnector>,
    /// Our name in EHLO/LHLO.
    hostname: String,
}

impl Delivery {
    /// A store with a verifying TLS connector when its endpoint uses TLS.
    pub fn new(cfg: BackendConfig, hostname: &str) -> Result<Delivery, crate::tls::Error> {
        let endpoint = cfg.delivery.clone();
        let tls = match endpoint.as_ref().map(|e| e.security) {
            Some(Security::Tls | Security::StartTls) => {
                Some(crate::tls::connector(cfg.ca_file.as_deref())?)
            }
            _ => None,
        };
        Ok(Delivery {
            cfg,
            endpoint,
            tls,
            hostname: hostname.to_string(),
        })
    }

    /// A bounce relay (`[smtp] bounce_relay`), which has no backend table.
    pub fn relay(endpoint: Endpoint, hostname: &str) -> Result<Delivery, crate::tls::Error> {
        let cfg = BackendConfig {
            name: "bounce_relay".into(),
            mailhosts: Vec::new(),
            imap: endpoint.clone(),
            delivery: Some(endpoint),
            sieve: None,
            master: None,
            login: crate::config::BackendLogin::User,
            ca_file: None,
            tls_server_name: None,
            connect_timeout: Duration::from_secs(30),
        };
        Delivery::new(cfg, hostname)
    }

    /// The `[backends.NAME]` name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn tls(&self, tcp: TcpStream, host: &str) -> Result<Stream, Error> {
        let Some(connector) = &self.tls else {
            return Err(Error::Protocol {
                stage: "tls",
                what: "no TLS connector".into(),
            });
        };
        let name = self.cfg.tls_server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| Error::Protocol {
            stage: "tls",
            what: format!("bad server name {name:?}: {e}"),
        })?;
        let s = connector
            .connect(server_name, tcp)
            .await
            .map_err(|source| Error::Io {
                stage: "tls",
                source,
            })?;
        Ok(Stream::StoreTls(Box::new(s)))
    }

    /// Connects, greets and introduces the client (XCLIENT or XFORWARD when
    /// offered), within the backend's `connect_timeout`.
    pub async fn connect(&self, origin: Option<&Origin>, timeout: Duration) -> Result<Conn, Error> {
        tokio::time::timeout(
            self.cfg.connect_timeout,
            self.connect_inner(origin, timeout),
        )
        .await
        .map_err(|_| Error::Timeout { stage: "connect" })?
    }

    async fn connect_inner(
        &self,
        origin: Option<&Origin>,
        timeout: Duration,
    ) -> Result<Conn, Error> {
        let Some(ep) = &self.endpoint else {
            return Err(Error::Protocol {
                stage: "connect",
                what: "no delivery endpoint configured".into(),
            });
        };
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| Error::Io {
                stage: "connect",
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = if ep.security == Security::Tls {
            self.tls(tcp, &ep.host).await?
        } else {
            Stream::Plain(tcp)
        };
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            caps: Vec::new(),
            lmtp: ep.scheme == "lmtp",
            timeout,
        };
        let greeting = conn.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(Error::Protocol {
                stage: "greeting",
                what: greeting.text(),
            });
        }
        conn.hello(&self.hostname).await?;
        if ep.security == Security::StartTls {
            let r = conn.command("STARTTLS", "starttls").await?;
            if r.code != 220 {
                return Err(Error::Protocol {
                    stage: "starttls",
                    what: r.text(),
                });
            }
            let Stream::Plain(tcp) = conn.stream else {
                return Err(Error::Protocol {
                    stage: "starttls",
                    what: "already TLS".into(),
                });
            };
            conn.stream = self.tls(tcp, &ep.host).await?;
            // Anything the store sent before the handshake is discarded.
            conn.buf.clear();
            conn.hello(&self.hostname).await?;
        }
        if let Some(o) = origin {
            conn.introduce(o, &self.hostname).await?;
        }
        Ok(conn)
    }
}

/// An open connection to a store, between transactions or in one.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    caps: Vec<String>,
    lmtp: bool,
    timeout: Duration,
}

impl Conn {
    /// Whether this is LMTP (one end-of-data reply per recipient).
    pub fn is_lmtp(&self) -> bool {
        self.lmtp
    }

    /// Whether the store offered an extension (EHLO keyword).
    pub fn offers(&self, ext: &str) -> bool {
        self.caps.iter().any(|c| {
            c.split(' ')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(ext))
        })
    }

    fn params_of(&self, ext: &str) -> Vec<String> {
        self.caps
            .iter()
            .find(|c| {
                c.split(' ')
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case(ext))
            })
            .map(|c| {
                c.split(' ')
                    .skip(1)
                    .map(|s| s.to_ascii_uppercase())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn hello(&mut self, hostname: &str) -> Result<(), Error> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        let r = self.command(&format!("{verb} {hostname}"), "ehlo").await?;
        if !r.is_ok() {
            return Err(Error::Protocol {
                stage: "ehlo",
                what: r.text(),
            });
        }
        self.caps = r.lines.into_iter().skip(1).collect();
        Ok(())
    }

    /// XCLIENT (Postfix, Dovecot) or XFORWARD: the store logs and judges the
    /// real client, not mailshift. Only attributes the store names are sent.
    async fn introduce(&mut self, o: &Origin, hostname: &str) -> Result<(), Error> {
        let helo: String = o
            .helo
            .chars()
            .filter(|c| c.is_ascii_graphic() && !"+=".contains(*c))
            .take(255)
            .collect();
        let addr = match o.peer.ip() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPV6:{v6}"),
        };
        for (ext, stage) in [("XCLIENT", "xclient"), ("XFORWARD", "xforward")] {
            if !self.offers(ext) {
                continue;
            }
            let offered = self.params_of(ext);
            let mut attrs = Vec::new();
            let mut add = |k: &str, v: String| {
                if offered.iter().any(|o| o == k) && !v.is_empty() {
                    attrs.push(format!("{k}={v}"));
                }
            };
            add("ADDR", addr.clone());
            add("PORT", o.peer.port().to_string());
            add("HELO", helo.clone());
            add("PROTO", "ESMTP".into());
            if attrs.is_empty() {
                continue;
            }
            let r = self
                .command(&format!("{ext} {}", attrs.join(" ")), stage)
                .await?;
            if r.code == 220 {
                // XCLIENT restarts the session: greet again.
                self.hello(hostname).await?;
            } else if !r.is_ok() {
                tracing::debug!(reply = %r.text(), "store refused {ext}; going on without it");
            }
            return Ok(());
        }
        Ok(())
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, Error> {
        tokio::time::timeout(self.timeout, self.read_reply_inner(stage))
            .await
            .map_err(|_| Error::Timeout { stage })?
    }

    async fn read_reply_inner(&mut self, stage: &'static str) -> Result<Reply, Error> {
        loop {
            if let Some(reply) = take_reply(&mut self.buf, stage)? {
                return Ok(reply);
            }
            let mut tmp = [0u8; 4096];
            let n = self
                .stream
                .read(&mut tmp)
                .await
                .map_err(|source| Error::Io { stage, source })?;
            if n == 0 {
                return Err(Error::Io {
                    stage,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends bytes.
    pub async fn send(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), Error> {
        let fut = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::Timeout { stage })?
            .map_err(|source| Error::Io { stage, source })
    }

    /// Sends a command line and reads its reply.
    pub async fn command(&mut self, line: &str, stage: &'static str) -> Result<Reply, Error> {
        self.send(format!("{line}\r\n").as_bytes(), stage).await?;
        self.read_reply(stage).await
    }

    /// `MAIL FROM` with the parameters the store supports.
    pub async fn mail(
        &mut self,
        from: Option<&Address>,
        body: Body,
        smtputf8: bool,
        size: Option<u64>,
    ) -> Result<Reply, Error> {
        let mut line = match from {
            Some(a) => format!("MAIL FROM:<{a}>"),
            None => "MAIL FROM:<>".to_string(),
        };
        if body == Body::EightBitMime && self.offers("8BITMIME") {
            line.push_str(" BODY=8BITMIME");
        }
        if smtputf8 && self.offers("SMTPUTF8") {
            line.push_str(" SMTPUTF8");
        }
        if let Some(size) = size.filter(|_| self.offers("SIZE")) {
            line.push_str(&format!(" SIZE={size}"));
        }
        self.command(&line, "mail").await
    }

    /// `RCPT TO`.
    pub async fn rcpt(&mut self, to: &str) -> Result<Reply, Error> {
        self.command(&format!("RCPT TO:<{to}>"), "rcpt").await
    }

    /// Closes politely, ignoring errors.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.stream.write_all(b"QUIT\r\n").await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// Delivers a stored message (wire form: dot-stuffed, ending `CRLF.CRLF`) to
/// `rcpts` on one store, for the retry queue. Returns one outcome per
/// recipient, in order; `Err` when the store could not be reached at all.
pub async fn deliver_stored(
    store: &Arc<Delivery>,
    from: Option<&Address>,
    smtputf8: bool,
    rcpts: &[String],
    message: &std::path::Path,
    timeout: Duration,
) -> Result<Vec<Reply>, Error> {
    let mut conn = store.connect(None, timeout).await?;
    let size = std::fs::metadata(message).map(|m| m.len()).ok();
    let r = conn.mail(from, Body::EightBitMime, smtputf8, size).await?;
    if !r.is_ok() {
        return Ok(vec![r; rcpts.len()]);
    }
    let mut outcomes: Vec<Option<Reply>> = Vec::new();
    let mut accepted = 0;
    for rcpt in rcpts {
        let r = conn.rcpt(rcpt).await?;
        if r.is_ok() {
            accepted += 1;
            outcomes.push(None);
        } else {
            outcomes.push(Some(r));
        }
    }
    if accepted > 0 {
        let r = conn.command("DATA", "data").await?;
        if r.code != 354 {
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(r.clone());
            }
        } else {
            let mut file = tokio::fs::File::open(message)
                .await
                .map_err(|source| Error::Io {
                    stage: "queue file",
                    source,
                })?;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut chunk).await.map_err(|source| Error::Io {
                    stage: "queue file",
                    source,
                })?;
                if n == 0 {
                    break;
                }
                conn.send(&chunk[..n], "data").await?;
            }
            let replies = if conn.is_lmtp() { accepted } else { 1 };
            let mut got = Vec::new();
            for _ in 0..replies {
                got.push(conn.read_reply("end of data").await?);
            }
            let mut it = got.iter();
            let single = got.first().cloned();
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                let r = if conn.is_lmtp() {
                    it.next().cloned()
                } else {
                    single.clone()
                };
                *o = r;
            }
        }
    }
    conn.quit().await;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Reply::new(451, "4.4.1 No reply from the store")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_render_for_the_client() {
        let r = Reply {
            code: 552,
            lines: vec!["5.2.2 Over quota".into(), "5.2.2 really".into()],
        };
        assert_eq!(r.to_client(), "552-5.2.2 Over quota\r\n552 5.2.2 really");
        assert!(r.is_permanent() && !r.is_ok());
    }
}
