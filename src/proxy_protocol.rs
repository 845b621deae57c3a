//! The PROXY protocol (HAProxy's, v1 text and v2 binary) in front of any
//! listener: a load balancer that ends the client's TCP connection says, in a
//! header before the first byte of the mail protocol, who the client was.
//! That address is then what logs, failure delays, the store (ID
//! `x-originating-ip`, XCLIENT) and the admin API see.
//!
//! ```text
//!  accept ─► peer in trusted_proxies? ─no─► closed (logged)
//!              │ yes
//!              ▼
//!  Decoder: first 12 bytes ─► v2 signature ─► 4 more (length) ─► the rest ─► Header
//!                         └─► "PROXY " ─► up to CRLF (107 bytes at most) ─► Header
//!                         └─► anything else ─► closed
//! ```
//!
//! [`Decoder`] is sans-I/O and only ever asks for bytes the header must still
//! contain, so [`accept`] never reads a byte of the mail protocol after it:
//! v2 says its length up front; v1 is read to its CRLF two bytes at a time at
//! most. Parsing is the `ppp` crate's; framing and the trust check are ours.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// v2's fixed part: signature, version/command, family/protocol, length.
const V2_FIXED_BYTES: usize = 16;
/// Read first: no valid header of either version is shorter (the shortest v1
/// line, `PROXY UNKNOWN\r\n`, has 15 bytes), and it holds the v2 signature.
const FIRST_READ_BYTES: usize = 12;
/// The longest v1 line, CRLF included (the specification's limit).
pub const MAX_V1_BYTES: usize = 107;

/// Why a connection's PROXY header was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection comes from an address outside `trusted_proxies`.
    #[error("{0} is not in trusted_proxies")]
    Untrusted(IpAddr),
    /// The first bytes are neither a v1 nor a v2 header.
    #[error("no PROXY header (first bytes {0:?})")]
    Missing(String),
    /// The header is malformed.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The header did not arrive in time.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// The connection closed or broke before the header ended.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address; `None` for a `LOCAL` command (the balancer's own
    /// health check), v1 `UNKNOWN`, or a family other than TCP over IPv4/IPv6:
    /// the connection's own peer stands then.
    pub source: Option<SocketAddr>,
    /// The header's length in bytes.
    pub length: usize,
}

/// What [`Decoder::step`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more bytes (they all belong to the header).
    Need(usize),
    /// The header is complete.
    Done(Header),
}

/// Sans-I/O decoder of one header: push what [`Step::Need`] asked for.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// What is needed next, or the header.
    pub fn step(&self) -> Result<Step, Error> {
        let b = &self.buf;
        if b.len() < FIRST_READ_BYTES {
            let v2 = V2_SIGNATURE.starts_with(b);
            let v1 = b.starts_with(V1_PREFIX) || V1_PREFIX.starts_with(b);
            if !v1 && !v2 {
                return Err(missing(b));
            }
            return Ok(Step::Need(FIRST_READ_BYTES - b.len()));
        }
        if b.starts_with(V2_SIGNATURE) {
            if b.len() < V2_FIXED_BYTES {
                return Ok(Step::Need(V2_FIXED_BYTES - b.len()));
            }
            let total = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([b[14], b[15]]));
            if b.len() < total {
                return Ok(Step::Need(total - b.len()));
            }
            return v2(&b[..total]).map(Step::Done);
        }
        if !b.starts_with(V1_PREFIX) {
            return Err(missing(b));
        }
        if let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
            return v1(&b[..end + 2]).map(Step::Done);
        }
        if b.len() >= MAX_V1_BYTES {
            return Err(Error::Malformed(format!(
                "v1 line longer than {MAX_V1_BYTES} bytes"
            )));
        }
        // Never past the CRLF: after a CR only the LF can still be ours.
        let need = if b.ends_with(b"\r") { 1 } else { 2 };
        Ok(Step::Need(need.min(MAX_V1_BYTES - b.len())))
    }
}

fn missing(b: &[u8]) -> Error {
    let shown: String = b
        .iter()
        .take(FIRST_READ_BYTES)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    Error::Missing(shown)
}

fn v2(bytes: &[u8]) -> Result<Header, Error> {
    use ppp::v2::{Addresses, Command};
    let h = ppp::v2::Header::try_from(bytes).map_err(|e| Error::Malformed(format!("v2: {e}")))?;
    let source = match (h.command, h.addresses) {
        (Command::Local, _) => None,
        (Command::Proxy, Addresses::IPv4(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (Command::Proxy, Addresses::Unix(_) | Addresses::Unspecified) => None,
    };
    Ok(Header {
        source,
        length: bytes.len(),
    })
}

fn v1(line: &[u8]) -> Result<Header, Error> {
    use ppp::v1::Addresses;
    let h = ppp::v1::Header::try_from(line).map_err(|e| Error::Malformed(format!("v1: {e}")))?;
    let source = match h.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unknown => None,
    };
    Ok(Header {
        source,
        length: line.len(),
    })
}

/// Decodes the header at the start of `input` the way [`accept`] reads a
/// connection, taking only the bytes the decoder asks for. Returns the
/// outcome and how many bytes were taken (an input that ends early is an
/// [`Error::Io`] of kind `UnexpectedEof`). The `proxy_header` fuzz target and
/// its corpus replay drive the decoder through this.
pub fn decode_prefix(input: &[u8]) -> (Result<Header, Error>, usize) {
    let mut d = Decoder::new();
    let mut at = 0;
    loop {
        match d.step() {
            Ok(Step::Done(h)) => return (Ok(h), at),
            Ok(Step::Need(n)) => {
                let Some(chunk) = input.get(at..at + n) else {
                    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return (Err(Error::Io(eof)), at);
                };
                d.push(chunk);
                at += n;
            }
            Err(e) => return (Err(e), at),
        }
    }
}

/// Whether `ip` may send PROXY headers. An IPv4 client of a listener on `[::]`
/// shows as `::ffff:a.b.c.d`; it is matched as the IPv4 address it is.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Reads the PROXY header of a connection accepted from `peer` and returns
/// the connection, positioned at the first byte after the header, and the
/// client's address (`peer` itself for a `LOCAL` or `UNKNOWN` header).
///
/// # Errors
///
/// A peer outside `trusted` ([`Error::Untrusted`], nothing read), a missing
/// or malformed header, a timeout, or the connection closing first. The
/// caller closes the connection and logs the error.
pub async fn accept(
    mut tcp: TcpStream,
    peer: SocketAddr,
    trusted: &[IpNet],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Error> {
    if !is_trusted(trusted, peer.ip()) {
        return Err(Error::Untrusted(peer.ip()));
    }
    let read = async {
        let mut d = Decoder::new();
        let mut chunk = [0u8; 512];
        loop {
            match d.step()? {
                Step::Done(h) => return Ok::<_, Error>(h),
                Step::Need(n) => {
                    let mut left = n;
                    while left > 0 {
                        let want = left.min(chunk.len());
                        tcp.read_exact(&mut chunk[..want]).await?;
                        d.push(&chunk[..want]);
                        left -= want;
                    }
                }
            }
        }
    };
    let header = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    Ok((tcp, header.source.unwrap_or(peer)))
}

/// What every listener does with a new connection, in one call: with
/// `enabled` (the table's `proxy_protocol`), reads the header and returns the
/// client's address from it; otherwise the connection's own peer. A refused
/// connection is logged (naming the `protocol` and the peer) and closed:
/// `None`.
pub async fn client_of(
    tcp: TcpStream,
    peer: SocketAddr,
    enabled: bool,
    trusted: &[IpNet],
    timeout: Duration,
    protocol: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    if !enabled {
        return Some((tcp, peer));
    }
    match accept(tcp, peer, trusted, timeout).await {
        Ok(ok) => Some(ok),
        Err(e @ Error::Untrusted(_)) => {
            tracing::warn!(protocol, proxy = %peer, error = %e, "PROXY header refused; connection closed");
            None
        }
        Err(e) => {
            tracing::info!(protocol, proxy = %peer, error = %e, "no valid PROXY header; connection closed");
            None
        }
    }
}

/// Parses `trusted_proxies` entries: a CIDR (`10.0.0.0/8`, `::1/128`) or a
/// bare address (one host).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("\"{s}\" is not an address or CIDR"))
}

#[cfg(test)]
mod tests;
