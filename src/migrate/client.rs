//! A small pipelining IMAP client for the sync engine.
//!
//! It logs in through the proxy's own backend connector (same TLS, same master
//! user handling), frames responses with the front end's [`Framer`] (lines plus
//! literals, so literal bytes are never taken for a response), and decodes the
//! untagged data it needs with imap-codec. Commands are written in batches and
//! their tagged replies read afterwards: that is what makes APPEND fast.

use std::collections::HashSet;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::response::{Code, Data, Response};
use imap_codec::ResponseCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::imap::backend::{self, Backend, Credentials};
use crate::imap::framer::{Frame, Framer};
use crate::stream::Stream;

/// Longest response line accepted (LIST and SEARCH lines can be long).
const MAX_LINE: usize = 4 << 20;
/// Largest literal accepted (a message).
const MAX_LITERAL: usize = 1 << 30;
/// Most UIDs one APPENDUID may name: a MULTIAPPEND batch is far smaller.
const MAX_APPEND_UIDS: usize = 1_000_000;

/// Why talking to a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connect or login failed.
    #[error("{store}: {source}")]
    Login {
        /// The backend name.
        store: String,
        /// Why.
        source: backend::Error,
    },
    /// The connection broke.
    #[error("{store}: connection: {source}")]
    Io {
        /// The backend name.
        store: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store answered something we cannot use.
    #[error("{store}: {what}")]
    Protocol {
        /// The backend name.
        store: String,
        /// What.
        what: String,
    },
    /// A command was refused (`NO` or `BAD`).
    #[error("{store}: {command} refused: {reply}")]
    Refused {
        /// The backend name.
        store: String,
        /// The command (without literals or secrets).
        command: String,
        /// The tagged reply.
        reply: String,
    },
}

impl Error {
    /// Whether waiting and trying again may help (throttling, unavailability,
    /// a dropped connection).
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::Login { source, .. } => !matches!(source, backend::Error::Rejected(_)),
            Error::Refused { reply, .. } => {
                let r = reply.to_ascii_uppercase();
                r.contains("[UNAVAILABLE]") || r.contains("[INUSE]") || r.contains("[LIMIT]")
            }
            Error::Protocol { .. } => false,
        }
    }
}

/// The outcome of one tagged command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// OK.
    Ok,
    /// NO.
    No,
    /// BAD.
    Bad,
}

/// A tagged reply and the untagged responses that came before it.
pub struct Reply {
    /// `OK`, `NO` or `BAD`.
    pub status: Status,
    /// The tagged line after the tag, e.g. `OK [APPENDUID 1 5] Append completed.`
    pub text: String,
    /// The untagged responses, whole (literals included).
    pub untagged: Vec<Vec<u8>>,
}

impl Reply {
    /// Decodes every untagged response imap-codec understands; the others are
    /// skipped (servers send informational data we have no use for).
    pub fn data(&self) -> impl Iterator<Item = Data<'_>> {
        self.untagged
            .iter()
            .filter_map(|raw| match ResponseCodec::default().decode(raw) {
                Ok((_, Response::Data(d))) => Some(d),
                _ => None,
            })
    }

    /// Response codes in untagged `OK` lines (`[UIDVALIDITY 5]`, ...).
    pub fn codes(&self) -> impl Iterator<Item = Code<'_>> {
        self.untagged
            .iter()
            .filter_map(|raw| match ResponseCodec::default().decode(raw) {
                Ok((
                    _,
                    Response::Status(imap_codec::imap_types::response::Status::Untagged(body)),
                )) => body.code,
                _ => None,
            })
    }

    /// `[APPENDUID validity uid-set]` in the tagged line, the set expanded in
    /// order (a MULTIAPPEND answers with one UID per message, RFC 4315).
    pub fn append_uids(&self) -> Option<(u32, Vec<u32>)> {
        let rest = self.text.split("[APPENDUID ").nth(1)?;
        let mut it = rest.split([' ', ']']);
        let validity = it.next()?.parse().ok()?;
        let mut uids = Vec::new();
        for part in it.next()?.split(',') {
            match part.split_once(':') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                    // Bounded in total, not per range: a store repeating
                    // "1:1000000" must not make us allocate without end.
                    if b < a || (b - a) as usize + uids.len() > MAX_APPEND_UIDS {
                        return None;
                    }
                    uids.extend(a..=b);
                }
                None => uids.push(part.parse().ok()?),
            }
            if uids.len() > MAX_APPEND_UIDS {
                return None;
            }
        }
        Some((validity, uids))
    }
}

/// Takes whole responses (lines plus literals) off `framer`, sans I/O, until
/// the one tagged `tag`: that reply, with every untagged response collected
/// in `untagged` on the way (they stay there when more bytes are needed, and
/// `None` is returned). `* BYE` ends the connection; a line or literal past
/// the framer's limits is a protocol error. [`Client::reply`] reads through
/// this, and so does the `migrate_reply` fuzz target.
pub fn next_reply(
    framer: &mut Framer,
    tag: &str,
    untagged: &mut Vec<Vec<u8>>,
    store: &str,
) -> Result<Option<Reply>, Error> {
    loop {
        let raw = match framer.next_frame() {
            Frame::Command(bytes) => bytes,
            Frame::Incomplete | Frame::NeedContinuation => return Ok(None),
            Frame::LineTooLong | Frame::LiteralTooLarge { .. } => {
                return Err(Error::Protocol {
                    store: store.to_string(),
                    what: "response larger than mailshift accepts".into(),
                })
            }
        };
        if raw.starts_with(tag.as_bytes()) && raw.get(tag.len()) == Some(&b' ') {
            let line = String::from_utf8_lossy(&raw[tag.len() + 1..]);
            let text = line.trim_end_matches(['\r', '\n']).to_string();
            let word = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let status = match word.as_str() {
                "OK" => Status::Ok,
                "NO" => Status::No,
                _ => Status::Bad,
            };
            return Ok(Some(Reply {
                status,
                text,
                untagged: std::mem::take(untagged),
            }));
        }
        if raw.starts_with(b"* BYE") {
            return Err(Error::Io {
                store: store.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    String::from_utf8_lossy(&raw).trim().to_string(),
                ),
            });
        }
        untagged.push(raw);
    }
}

/// Reads the replies to `M1`, `M2`, ... from `script` as the sync engine
/// does (framed under `max_line` / `max_literal`, bytes arriving in uneven
/// chunks), decoding each reply's data, codes and APPENDUID as the engine
/// would; the replies read, and the error that ended the script, if any.
/// The `migrate_reply` fuzz target and its corpus replay test use this.
pub fn replay_replies(
    script: &[u8],
    max_line: usize,
    max_literal: usize,
) -> (Vec<Reply>, Option<Error>) {
    let mut framer = Framer::for_responses(max_line, max_literal);
    let mut replies = Vec::new();
    let mut untagged = Vec::new();
    let mut tag = String::from("M1");
    for chunk in script.chunks(13) {
        framer.push(chunk);
        loop {
            match next_reply(&mut framer, &tag, &mut untagged, "replay") {
                Ok(Some(reply)) => {
                    let _ = reply.data().count();
                    let _ = reply.codes().count();
                    let _ = reply.append_uids();
                    replies.push(reply);
                    tag = format!("M{}", replies.len() + 1);
                }
                Ok(None) => break,
                Err(e) => return (replies, Some(e)),
            }
        }
    }
    (replies, None)
}

/// One logged-in connection to a store.
pub struct Client {
    stream: Stream,
    framer: Framer,
    next_tag: u32,
    caps: HashSet<String>,
    store: String,
    out: Vec<u8>,
}

/// Quotes a mailbox name (as it travels on the wire: modified UTF-7 or UTF-8).
pub fn quoted(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    out.push(b'"');
    for &b in name {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

impl Client {
    /// Connects and logs in.
    pub async fn connect(backend: &Backend, creds: &Credentials<'_>) -> Result<Client, Error> {
        let store = backend.name().to_string();
        let logged_in = backend
            .login(creds, None)
            .await
            .map_err(|source| Error::Login {
                store: store.clone(),
                source,
            })?;
        let mut framer = Framer::for_responses(MAX_LINE, MAX_LITERAL);
        framer.push(&logged_in.leftover);
        let caps = logged_in
            .capabilities
            .split_ascii_whitespace()
            .map(|c| c.to_ascii_uppercase())
            .collect();
        Ok(Client {
            stream: logged_in.stream,
            framer,
            next_tag: 1,
            caps,
            store,
            out: Vec::new(),
        })
    }

    /// The store's name (for messages).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// Whether the store offers a capability (upper case, e.g. `UIDPLUS`).
    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            store: self.store.clone(),
            source,
        }
    }

    /// Queues a command (written by [`flush`](Self::flush)); returns its tag.
    pub fn queue(&mut self, command: &[u8]) -> String {
        let tag = format!("M{}", self.next_tag);
        self.next_tag += 1;
        self.out.extend_from_slice(tag.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(command);
        self.out.extend_from_slice(b"\r\n");
        tag
    }

    /// Queues an APPEND with a non-synchronizing literal (LITERAL+); `binary`
    /// sends it as a literal8 (RFC 3516), the only way to carry NUL bytes.
    pub fn queue_append(
        &mut self,
        mailbox: &[u8],
        flags: &str,
        date: &str,
        message: &[u8],
        binary: bool,
    ) -> String {
        let tag = format!("M{}", self.next_tag);
        self.next_tag += 1;
        self.out.extend_from_slice(tag.as_bytes());
        self.out.extend_from_slice(b" APPEND ");
        self.out.extend_from_slice(&quoted(mailbox));
        let tilde = if binary { "~" } else { "" };
        self.out.extend_from_slice(
            format!(" ({flags}) \"{date}\" {tilde}{{{}+}}\r\n", message.len()).as_bytes(),
        );
        self.out.extend_from_slice(message);
        self.out.extend_from_slice(b"\r\n");
        tag
    }

    /// Queues one MULTIAPPEND (RFC 3502) of several messages:
    /// (flags, date, bytes, binary) each.
    pub fn queue_multiappend(
        &mut self,
        mailbox: &[u8],
        messages: &[(&str, &str, &[u8], bool)],
    ) -> String {
        let tag = format!("M{}", self.next_tag);
        self.next_tag += 1;
        self.out.extend_from_slice(tag.as_bytes());
        self.out.extend_from_slice(b" APPEND ");
        self.out.extend_from_slice(&quoted(mailbox));
        for (flags, date, body, binary) in messages {
            let tilde = if *binary { "~" } else { "" };
            self.out.extend_from_slice(
                format!(" ({flags}) \"{date}\" {tilde}{{{}+}}\r\n", body.len()).as_bytes(),
            );
            self.out.extend_from_slice(body);
        }
        self.out.extend_from_slice(b"\r\n");
        tag
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let res = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        }
        .await;
        res.map_err(|e| self.io(e))
    }

    /// Reads responses up to the reply tagged `tag`.
    pub async fn reply(&mut self, tag: &str) -> Result<Reply, Error> {
        let mut untagged = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(reply) = next_reply(&mut self.framer, tag, &mut untagged, &self.store)? {
                return Ok(reply);
            }
            let n = self.stream.read(&mut buf).await.map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.framer.push(&buf[..n]);
        }
    }

    /// Sends one command and waits for its reply; `NO`/`BAD` is an error.
    pub async fn run(&mut self, command: &str) -> Result<Reply, Error> {
        let reply = self.run_status(command.as_bytes()).await?;
        if reply.status != Status::Ok {
            return Err(Error::Refused {
                store: self.store.clone(),
                command: command.split(' ').take(2).collect::<Vec<_>>().join(" "),
                reply: reply.text,
            });
        }
        Ok(reply)
    }

    /// Sends one command and returns the reply whatever its status.
    pub async fn run_status(&mut self, command: &[u8]) -> Result<Reply, Error> {
        let tag = self.queue(command);
        self.flush().await?;
        self.reply(&tag).await
    }

    /// Logs out politely; errors do not matter any more.
    pub async fn logout(mut self) {
        let _ = self.run_status(b"LOGOUT").await;
    }
}
