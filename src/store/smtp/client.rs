//! The async shell of the SMTP/LMTP client: runs the sans-I/O [`Dialog`] and
//! [`take_reply`] over a [`Stream`] from the store's one
//! [`Connector`](crate::store::connect::Connector), then carries transactions
//! (delivery legs, the retry queue) or hands the open connection over to a
//! byte relay (the submission leg).
//!
//! ```text
//!  connect ─► [TLS] ─► Dialog (220, EHLO/LHLO, STARTTLS, XCLIENT, AUTH)
//!          ─► ( MAIL ─► RCPT… ─► DATA ─► 354 ─► bytes ─► reply (LMTP: one per RCPT) )*
//!          │  or into_relay()
//! ```

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::dialog::{Dialog, Plan, Step};
use super::reply::{take_reply, Extensions, Reply};
use crate::config::{Endpoint, Security};
use crate::store::bearer::Outcome;
use crate::store::{Error, Stage, Store, StoreError};
use crate::stream::Stream;

/// How long `quit` waits for the store.
const QUIT_GRACE: Duration = Duration::from_secs(1);

/// An open SMTP/LMTP connection to a store, between transactions or in one.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    extensions: Extensions,
    lmtp: bool,
    timeout: Duration,
}

/// A bearer login the store challenged, waiting for the client's answer.
pub struct Challenged {
    conn: Conn,
    dialog: Dialog,
}

impl Challenged {
    /// Sends the client's answer (`None`: it cancelled) and reads the
    /// store's verdict, within the store's `connect_timeout`.
    pub async fn answer(self, store: &Store, answer: Option<&[u8]>) -> Result<Conn, StoreError> {
        let Challenged { mut conn, dialog } = self;
        let verdict = async move {
            let mut dialog = dialog;
            if let Step::Send(line) = dialog.answer(answer)? {
                conn.send(&line, "auth").await?;
            }
            loop {
                let reply = conn.read_reply("auth").await?;
                match dialog.receive(&reply)? {
                    Step::Ready => break,
                    Step::Send(line) => conn.send(&line, "auth").await?,
                    // The exchange refuses a second challenge; TLS is long on.
                    Step::StartTls | Step::Challenge(_) => {
                        return Err(Error::Protocol {
                            stage: "auth",
                            what: "unexpected step after the challenge".into(),
                        })
                    }
                }
            }
            conn.extensions = dialog.into_extensions();
            Ok(conn)
        };
        store.within(&Stage::new("auth"), verdict).await
    }
}

impl Conn {
    /// Connects to `endpoint` of `store` and runs the session opening of
    /// `plan`, all within the store's `connect_timeout`; later replies may
    /// each take up to `timeout`.
    ///
    /// # Errors
    /// What failed, with the store's name: connect, TLS, a stage of the
    /// opening (its [`Error`] says whether the store or the credentials).
    pub async fn open(
        store: &Store,
        endpoint: &Endpoint,
        plan: Plan,
        timeout: Duration,
    ) -> Result<Conn, StoreError> {
        match Self::open_step(store, endpoint, plan, timeout).await? {
            Outcome::LoggedIn(c) => Ok(c),
            Outcome::Challenged { .. } => Err(StoreError {
                store: store.name().to_string(),
                error: Error::Protocol {
                    stage: "auth",
                    what: "challenge to a password login".into(),
                },
            }),
        }
    }

    /// [`Conn::open`] for a plan with [`super::Auth::Bearer`]: a failure
    /// challenge of the store comes back for the client to answer
    /// ([`Challenged::answer`]).
    pub async fn open_step(
        store: &Store,
        endpoint: &Endpoint,
        mut plan: Plan,
        timeout: Duration,
    ) -> Result<Outcome<Conn, Challenged>, StoreError> {
        plan.lmtp = endpoint.scheme == "lmtp";
        plan.starttls = endpoint.security == Security::StartTls;
        let opening = Self::open_inner(store, endpoint, plan, timeout);
        store.within(&Stage::new("connect"), opening).await
    }

    async fn open_inner(
        store: &Store,
        endpoint: &Endpoint,
        plan: Plan,
        timeout: Duration,
    ) -> Result<Outcome<Conn, Challenged>, Error> {
        let stream = store.connector.connect(endpoint).await?;
        let lmtp = plan.lmtp;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            extensions: Extensions::default(),
            lmtp,
            timeout,
        };
        let mut dialog = Dialog::new(plan);
        loop {
            let reply = conn.read_reply(dialog.stage_name()).await?;
            match dialog.receive(&reply)? {
                Step::Send(line) => conn.send(&line, dialog.stage_name()).await?,
                Step::StartTls => {
                    let plain = conn.stream;
                    conn.stream = store.connector.starttls(plain, endpoint).await?;
                    // Anything the store sent before the handshake is discarded.
                    conn.buf.clear();
                    if let Step::Send(line) = dialog.tls_started() {
                        conn.send(&line, "ehlo").await?;
                    }
                }
                Step::Ready => break,
                Step::Challenge(challenge) => {
                    return Ok(Outcome::Challenged {
                        challenge,
                        pending: Challenged { conn, dialog },
                    })
                }
            }
        }
        conn.extensions = dialog.into_extensions();
        Ok(Outcome::LoggedIn(conn))
    }

    /// Whether this is LMTP (one end-of-data reply per recipient).
    pub fn is_lmtp(&self) -> bool {
        self.lmtp
    }

    /// What the store's last EHLO/LHLO offered.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Whether the store offered an extension (EHLO keyword).
    pub fn offers(&self, ext: &str) -> bool {
        self.extensions.offers(ext)
    }

    /// Reads one (possibly multi-line) reply.
    ///
    /// # Errors
    /// The connection broke or closed, the store took longer than the
    /// timeout, or the reply is malformed.
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
    ///
    /// # Errors
    /// The connection broke or the store stopped reading for longer than the timeout.
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
    ///
    /// # Errors
    /// As [`Conn::send`] and [`Conn::read_reply`].
    pub async fn command(&mut self, line: &str, stage: &'static str) -> Result<Reply, Error> {
        self.send(format!("{line}\r\n").as_bytes(), stage).await?;
        self.read_reply(stage).await
    }

    /// `MAIL FROM:<from>` (empty: the null sender) with the parameters the
    /// store supports among those asked for.
    ///
    /// # Errors
    /// As [`Conn::command`].
    pub async fn mail(
        &mut self,
        from: &str,
        eight_bit: bool,
        smtputf8: bool,
        size: Option<u64>,
    ) -> Result<Reply, Error> {
        let mut line = format!("MAIL FROM:<{from}>");
        if eight_bit && self.offers("8BITMIME") {
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
    ///
    /// # Errors
    /// As [`Conn::command`].
    pub async fn rcpt(&mut self, to: &str) -> Result<Reply, Error> {
        self.command(&format!("RCPT TO:<{to}>"), "rcpt").await
    }

    /// Closes politely, ignoring errors.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(QUIT_GRACE, async {
            let _ = self.stream.write_all(b"QUIT\r\n").await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// The connection for a byte relay, and what the store sent after its
    /// last reply (to go to the client first).
    pub fn into_relay(self) -> (Stream, Vec<u8>) {
        (self.stream, self.buf)
    }
}
