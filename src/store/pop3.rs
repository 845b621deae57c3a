//! The POP3 client: connect (plain, STLS or implicit TLS through the one
//! [`Connector`](super::connect::Connector)), log in as the user or a master
//! user ([`login`], sans I/O), then hand the connection to a relay, or ask
//! single- and multi-line commands (UIDL, TOP) for tools that read a store.

pub mod login;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bearer::Outcome;
use super::imap::login::Credentials;
use super::{Error, Stage, Store, StoreError};
use crate::config::{Endpoint, Security};
use crate::stream::Stream;
use login::{Action, Login};

/// Longest reply line accepted from a store (RFC 2449: 512 octets; leeway).
const MAX_LINE: usize = 64 * 1024;

/// A bearer login the store challenged, waiting for the client's answer.
pub struct Challenged {
    client: Client,
    dialog: Login,
}

impl Challenged {
    /// Sends the client's answer (`None`: it cancelled) and reads the
    /// store's verdict, within the store's `connect_timeout`.
    pub async fn answer(self, store: &Store, answer: Option<&[u8]>) -> Result<Client, StoreError> {
        let verdict = self.client.verdict(self.dialog, answer);
        store.within(&Stage::new("login"), verdict).await
    }
}

/// One logged-in POP3 connection to a store.
pub struct Client {
    stream: Stream,
    /// Bytes read past the last reply line.
    buffered: Vec<u8>,
    store: String,
}

impl Client {
    /// Connects to the store's `pop3` endpoint and logs in, within its
    /// `connect_timeout`. `peer` (a proxied session's client) is forwarded
    /// by XCLIENT where the store offers it.
    pub async fn connect(
        store: &Store,
        creds: &Credentials<'_>,
        peer: Option<SocketAddr>,
    ) -> Result<Client, StoreError> {
        let ep = Self::endpoint(store)?;
        let stage = Stage::new("connect");
        store
            .within(&stage, Self::login(store, ep, creds, peer, &stage))
            .await
    }

    /// Logs in with the client's bearer token (OAUTHBEARER, XOAUTH2),
    /// unchanged; a failure challenge from the store comes back for the
    /// client to answer ([`Challenged::answer`]).
    pub async fn connect_bearer(
        store: &Store,
        user: &str,
        mechanism: crate::sasl::Mechanism,
        message: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<Outcome<Client, Challenged>, StoreError> {
        let creds = Credentials::Bearer {
            user,
            mechanism,
            message,
        };
        let ep = Self::endpoint(store)?;
        let stage = Stage::new("connect");
        store
            .within(&stage, Self::login_step(store, ep, &creds, peer, &stage))
            .await
    }

    /// The store's `pop3` endpoint, or an error naming the missing key.
    fn endpoint(store: &Store) -> Result<&Endpoint, StoreError> {
        store.cfg.pop3.as_ref().ok_or_else(|| StoreError {
            store: store.name().to_string(),
            error: Error::Config(format!("backends.{}.pop3 is not set", store.name())),
        })
    }

    async fn login(
        store: &Store,
        ep: &Endpoint,
        creds: &Credentials<'_>,
        peer: Option<SocketAddr>,
        stage: &Stage,
    ) -> Result<Client, Error> {
        match Self::login_step(store, ep, creds, peer, stage).await? {
            Outcome::LoggedIn(c) => Ok(c),
            // Only a bearer dialog is challenged.
            Outcome::Challenged { .. } => Err(Error::Protocol {
                stage: "login",
                what: "challenge to a PLAIN login".into(),
            }),
        }
    }

    async fn login_step(
        store: &Store,
        ep: &Endpoint,
        creds: &Credentials<'_>,
        peer: Option<SocketAddr>,
        stage: &Stage,
    ) -> Result<Outcome<Client, Challenged>, Error> {
        let stream = store.connector.connect(ep).await?;
        let mut dialog = Login::new(
            creds,
            store.master().as_ref(),
            ep.security == Security::StartTls,
            peer,
        )?
        .user_pass_first(store.pop3_prefers_user_pass());
        let mut client = Client {
            stream,
            buffered: Vec::new(),
            store: store.name().to_string(),
        };
        loop {
            stage.set(dialog.stage());
            let line = client.line(dialog.stage()).await?;
            match dialog.on_line(&line)? {
                Action::Read => {}
                Action::Send(bytes) => client.send(&bytes, dialog.stage()).await?,
                Action::StartTls => {
                    if !client.buffered.is_empty() {
                        // Bytes the store sent before TLS would be read as if
                        // they came over TLS: an injection.
                        return Err(Error::Protocol {
                            stage: "stls",
                            what: "store sent data after STLS +OK".into(),
                        });
                    }
                    client.stream = store.connector.starttls(client.stream, ep).await?;
                    if let Action::Send(bytes) = dialog.tls_started() {
                        client.send(&bytes, dialog.stage()).await?;
                    }
                }
                Action::Done => {
                    if let Some(user_pass) = dialog.learnt_user_pass() {
                        store.pop3_user_pass(user_pass);
                    }
                    return Ok(Outcome::LoggedIn(client));
                }
                Action::Challenge(challenge) => {
                    return Ok(Outcome::Challenged {
                        challenge,
                        pending: Challenged { client, dialog },
                    })
                }
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), Error> {
        let io = |source| Error::Io { stage, source };
        self.stream.write_all(bytes).await.map_err(io)?;
        self.stream.flush().await.map_err(io)
    }

    async fn verdict(mut self, mut dialog: Login, answer: Option<&[u8]>) -> Result<Client, Error> {
        if let Action::Send(bytes) = dialog.answer(answer)? {
            self.send(&bytes, "login").await?;
        }
        loop {
            let line = self.line("login").await?;
            match dialog.on_line(&line)? {
                Action::Done => return Ok(self),
                Action::Read => {}
                Action::Send(bytes) => self.send(&bytes, "login").await?,
                // The exchange refuses a second challenge; TLS is long on.
                Action::StartTls | Action::Challenge(_) => {
                    return Err(Error::Protocol {
                        stage: "login",
                        what: "unexpected step after the challenge".into(),
                    })
                }
            }
        }
    }

    /// The next reply line, without CRLF.
    async fn line(&mut self, stage: &'static str) -> Result<Vec<u8>, Error> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(i) = self.buffered.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffered.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buffered.len() > MAX_LINE {
                return Err(Error::Protocol {
                    stage,
                    what: "reply line too long".into(),
                });
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|source| Error::Io { stage, source })?;
            if n == 0 {
                return Err(Error::Io {
                    stage,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            self.buffered.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command and returns its `+OK` text, or the `-ERR` as
    /// [`Error::Refused`].
    pub async fn command(&mut self, command: &str) -> Result<String, StoreError> {
        let name = command.split(' ').next().unwrap_or("").to_string();
        let mut out = command.as_bytes().to_vec();
        out.extend_from_slice(b"\r\n");
        self.send(&out, "command").await.map_err(|e| self.at(e))?;
        let line = self.line("command").await.map_err(|e| self.at(e))?;
        let text = String::from_utf8_lossy(&line).into_owned();
        if let Some(rest) = text.strip_prefix("+OK") {
            Ok(rest.trim_start().to_string())
        } else {
            let reply = text
                .strip_prefix("-ERR")
                .unwrap_or(&text)
                .trim()
                .to_string();
            let temporary = reply.to_ascii_uppercase().starts_with("[SYS/TEMP]");
            Err(self.at(Error::Refused {
                command: name,
                reply,
                temporary,
            }))
        }
    }

    /// A multi-line command (UIDL, LIST, TOP n 0): the lines of its answer,
    /// dot-unstuffed, without the terminating `.`.
    pub async fn multiline(&mut self, command: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.command(command).await?;
        self.body("command").await.map_err(|error| self.at(error))
    }

    fn at(&self, error: Error) -> StoreError {
        StoreError {
            store: self.store.clone(),
            error,
        }
    }

    /// The lines of a multi-line answer after its `+OK`, dot-unstuffed.
    async fn body(&mut self, stage: &'static str) -> Result<Vec<Vec<u8>>, Error> {
        let mut lines = Vec::new();
        loop {
            let line = self.line(stage).await?;
            match line.strip_prefix(b".") {
                Some([]) => return Ok(lines),
                Some(rest) => lines.push(rest.to_vec()),
                None => lines.push(line),
            }
        }
    }

    /// `CAPA` after login: the capability names, upper-cased (empty when
    /// the store does not know CAPA).
    pub async fn capabilities(&mut self) -> Result<Vec<String>, StoreError> {
        match self.multiline("CAPA").await {
            Ok(lines) => Ok(lines
                .iter()
                .filter_map(|l| {
                    let l = String::from_utf8_lossy(l);
                    l.split_ascii_whitespace()
                        .next()
                        .map(str::to_ascii_uppercase)
                })
                .collect()),
            Err(StoreError {
                error: Error::Refused { .. },
                ..
            }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `TOP n 0` of each message: its header block with CRLF line ends and
    /// the empty line that ends it, or `None` where the store said `-ERR`
    /// (the message went away meanwhile). With `pipelined` (the store's
    /// CAPA lists PIPELINING, RFC 2449) the commands go out in windows, one
    /// round trip for each, else one at a time.
    pub async fn headers(
        &mut self,
        msgnos: &[u32],
        pipelined: bool,
    ) -> Result<Vec<(u32, Option<Vec<u8>>)>, StoreError> {
        const WINDOW: usize = 64;
        let window = if pipelined { WINDOW } else { 1 };
        let mut out = Vec::with_capacity(msgnos.len());
        for chunk in msgnos.chunks(window) {
            let mut commands = Vec::with_capacity(chunk.len() * 12);
            for n in chunk {
                commands.extend_from_slice(format!("TOP {n} 0\r\n").as_bytes());
            }
            self.send(&commands, "top").await.map_err(|e| self.at(e))?;
            for &n in chunk {
                let status = self.line("top").await.map_err(|e| self.at(e))?;
                if !status.starts_with(b"+OK") {
                    out.push((n, None));
                    continue;
                }
                let lines = self.body("top").await.map_err(|e| self.at(e))?;
                let mut header = Vec::new();
                for line in &lines {
                    header.extend_from_slice(line);
                    header.extend_from_slice(b"\r\n");
                }
                out.push((n, Some(header)));
            }
        }
        Ok(out)
    }

    /// Closes without QUIT: a session that never reaches the UPDATE state
    /// changes nothing on the store (RFC 1939), not even a `\Seen` flag.
    pub async fn abandon(mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// `UIDL`: message number → UIDL.
    pub async fn uidls(&mut self) -> Result<Vec<(u32, String)>, StoreError> {
        Ok(self
            .multiline("UIDL")
            .await?
            .iter()
            .filter_map(|l| {
                let l = String::from_utf8_lossy(l);
                let (n, u) = l.split_once(' ')?;
                Some((n.parse().ok()?, u.trim().to_string()))
            })
            .collect())
    }

    /// The connection and whatever the store sent after its last reply.
    pub fn into_relay(self) -> (Stream, Vec<u8>) {
        (self.stream, self.buffered)
    }

    /// Says QUIT and closes (best effort).
    pub async fn quit(mut self) {
        let _ = self.send(b"QUIT\r\n", "quit").await;
        let _ = self.line("quit").await;
        let _ = self.stream.shutdown().await;
    }
}
