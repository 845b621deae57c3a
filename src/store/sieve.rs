//! The one ManageSieve client (RFC 5804): connects (plain or STARTTLS through
//! [`crate::store::connect::Connector`]), logs in by the sans-I/O
//! [`login::Login`] dialog as the user or as the master user on the user's
//! behalf (or with a client's bearer token, [`Client::connect_bearer`]),
//! then runs LISTSCRIPTS, GETSCRIPT, PUTSCRIPT, CHECKSCRIPT,
//! SETACTIVE and DELETESCRIPT with typed replies ([`wire::Response`]). The
//! proxy hands a logged-in connection to its relay ([`Client::into_relay`]);
//! the script migration keeps talking.

pub mod login;
pub mod wire;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::login::{Action, Login};
use self::wire::{Framer, Response, Status, Token};
use super::bearer::Outcome;
use crate::config::{Endpoint, Security};
use crate::store::imap::login::Credentials;
use crate::store::{Error, Stage, Store, StoreError};
use crate::stream::Stream;

/// Longest response line from a store (capability listings are short).
const MAX_LINE: usize = 64 * 1024;
/// Largest script accepted from a store (Dovecot's default
/// `sieve_max_script_size` is 1 MiB).
const MAX_LITERAL: usize = 16 << 20;

/// One script in a LISTSCRIPTS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptName {
    /// Its name (UTF-8 by RFC 5804; kept as the store sent it).
    pub name: String,
    /// Whether it is the active one.
    pub active: bool,
}

/// A store's reply to one command: the data lines, then the response.
#[derive(Debug)]
pub struct Reply {
    /// Lines before the response (script names, a script's literal).
    pub data: Vec<Vec<Token>>,
    /// OK / NO / BYE with its code and text.
    pub response: Response,
}

/// A bearer login the store challenged, waiting for the client's answer.
pub struct Challenged {
    client: Client,
    dialog: Login,
}

impl Challenged {
    /// Sends the client's answer (`None`: it cancelled) and reads the
    /// store's verdict, within the store's `connect_timeout`.
    pub async fn answer(self, store: &Store, answer: Option<&[u8]>) -> Result<Client, StoreError> {
        let Challenged { mut client, dialog } = self;
        let verdict = async move {
            if let Action::Send(bytes) = dialog.answer(answer)? {
                write(&mut client.stream, &bytes, "login").await?;
            }
            let mut dialog = dialog;
            loop {
                let line = read_line(&mut client.stream, &mut client.framer, "login").await?;
                match dialog.line(&line)? {
                    Action::Done => return Ok(client),
                    Action::Read => {}
                    Action::Send(bytes) => write(&mut client.stream, &bytes, "login").await?,
                    // The exchange refuses a second challenge; TLS is long on.
                    Action::StartTls | Action::Challenge(_) => {
                        return Err(Error::Protocol {
                            stage: "login",
                            what: "unexpected step after the challenge".into(),
                        })
                    }
                }
            }
        };
        store.within(&Stage::new("login"), verdict).await
    }
}

/// One logged-in ManageSieve connection to a store.
pub struct Client {
    stream: Stream,
    framer: Framer,
    caps: Vec<(String, String)>,
    store: String,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The store's `sieve` endpoint, or why there is none.
    pub fn endpoint(store: &Store) -> Result<&Endpoint, StoreError> {
        store.cfg.sieve.as_ref().ok_or_else(|| StoreError {
            store: store.name().to_string(),
            error: Error::Config(format!(
                "backends.{}.sieve is not set: this store has no ManageSieve",
                store.name()
            )),
        })
    }

    /// Connects and logs in, within the store's `connect_timeout`.
    pub async fn connect(store: &Store, creds: &Credentials<'_>) -> Result<Client, StoreError> {
        let ep = Self::endpoint(store)?;
        let stage = Stage::new("connect");
        store
            .within(&stage, Self::login(store, ep, creds, &stage))
            .await
    }

    /// Logs in with the client's bearer token (OAUTHBEARER, XOAUTH2) as it
    /// sent it; the store judges it. A failure challenge comes back for the
    /// client to see and answer ([`Challenged::answer`]).
    pub async fn connect_bearer(
        store: &Store,
        user: &str,
        mechanism: crate::sasl::Mechanism,
        message: &[u8],
    ) -> Result<Outcome<Client, Challenged>, StoreError> {
        let creds = Credentials::Bearer {
            user,
            mechanism,
            message,
        };
        let ep = Self::endpoint(store)?;
        let stage = Stage::new("connect");
        store
            .within(&stage, Self::login_step(store, ep, &creds, &stage))
            .await
    }

    async fn login(
        store: &Store,
        ep: &Endpoint,
        creds: &Credentials<'_>,
        stage: &Stage,
    ) -> Result<Client, Error> {
        match Self::login_step(store, ep, creds, stage).await? {
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
        stage: &Stage,
    ) -> Result<Outcome<Client, Challenged>, Error> {
        let mut stream = store.connector.connect(ep).await?;
        let mut dialog = Login::new(
            creds,
            store.master().as_ref(),
            ep.security == Security::StartTls,
        )?;
        let mut framer = Framer::new(MAX_LINE, MAX_LITERAL);
        loop {
            let now = dialog.stage();
            stage.set(now);
            let line = read_line(&mut stream, &mut framer, now).await?;
            match dialog.line(&line)? {
                Action::Read => {}
                Action::Send(bytes) => write(&mut stream, &bytes, now).await?,
                Action::StartTls => {
                    if !framer.buffered().is_empty() {
                        // Bytes after the OK to STARTTLS would be injected
                        // into what we believe came over TLS.
                        return Err(Error::Protocol {
                            stage: now,
                            what: "data after the OK to STARTTLS".into(),
                        });
                    }
                    stream = store.connector.starttls(stream, ep).await?;
                    dialog.tls_started();
                }
                Action::Done => {
                    return Ok(Outcome::LoggedIn(Client {
                        stream,
                        framer,
                        caps: dialog.into_capabilities(),
                        store: store.name().to_string(),
                        timeout: Self::command_timeout(store),
                    }))
                }
                Action::Challenge(challenge) => {
                    let client = Client {
                        stream,
                        framer,
                        caps: dialog.capabilities().to_vec(),
                        store: store.name().to_string(),
                        timeout: Self::command_timeout(store),
                    };
                    return Ok(Outcome::Challenged {
                        challenge,
                        pending: Challenged { client, dialog },
                    });
                }
            }
        }
    }

    fn command_timeout(store: &Store) -> std::time::Duration {
        store
            .cfg
            .connect_timeout
            .max(std::time::Duration::from_secs(30))
    }

    /// The capability listing the store sent before login.
    pub fn capabilities(&self) -> &[(String, String)] {
        &self.caps
    }

    /// The store's Sieve extensions (its `"SIEVE"` capability), space separated.
    pub fn extensions(&self) -> &str {
        self.caps
            .iter()
            .find(|(k, _)| k == "SIEVE")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The `[backends.NAME]` of this connection.
    pub fn store(&self) -> &str {
        &self.store
    }

    fn at(&self, error: Error) -> StoreError {
        StoreError {
            store: self.store.clone(),
            error,
        }
    }

    /// Sends one command and reads its reply, whatever the status.
    pub async fn run(&mut self, command: &[u8]) -> Result<Reply, StoreError> {
        let stage = "command";
        let exchange = async {
            write(&mut self.stream, command, stage).await?;
            let mut data = Vec::new();
            loop {
                let line = read_line(&mut self.stream, &mut self.framer, stage).await?;
                match wire::response(&line) {
                    Some(response) => return Ok(Reply { data, response }),
                    None => data.push(line),
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r.map_err(|e| self.at(e)),
            Err(_) => Err(self.at(Error::Timeout { stage })),
        }
    }

    /// Runs a command that must succeed; NO and BYE are errors (a NO with
    /// `TRYLATER` is temporary).
    async fn expect_ok(&mut self, command: &[u8], name: &str) -> Result<Reply, StoreError> {
        let reply = self.run(command).await?;
        match reply.response.status {
            Status::Ok => Ok(reply),
            Status::Bye => Err(self.at(Error::Unavailable(reply.response.summary()))),
            Status::No => Err(self.at(Error::Refused {
                command: name.to_string(),
                temporary: reply.response.code_name().as_deref() == Some("TRYLATER"),
                reply: reply.response.summary(),
            })),
        }
    }

    /// LISTSCRIPTS: every script and which one is active.
    pub async fn list_scripts(&mut self) -> Result<Vec<ScriptName>, StoreError> {
        let reply = self.expect_ok(b"LISTSCRIPTS\r\n", "LISTSCRIPTS").await?;
        Ok(reply
            .data
            .iter()
            .filter_map(|line| {
                let name = line.first()?.string()?;
                Some(ScriptName {
                    name: String::from_utf8_lossy(name).into_owned(),
                    active: line
                        .get(1)
                        .and_then(Token::atom)
                        .is_some_and(|a| a == "ACTIVE"),
                })
            })
            .collect())
    }

    /// GETSCRIPT: a script's content.
    pub async fn get_script(&mut self, name: &str) -> Result<Vec<u8>, StoreError> {
        let mut cmd = b"GETSCRIPT ".to_vec();
        wire::string(&mut cmd, name.as_bytes());
        cmd.extend_from_slice(b"\r\n");
        let reply = self.expect_ok(&cmd, "GETSCRIPT").await?;
        reply
            .data
            .first()
            .and_then(|l| l.first())
            .and_then(Token::string)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                self.at(Error::Protocol {
                    stage: "GETSCRIPT",
                    what: format!("no script content for {name:?}"),
                })
            })
    }

    /// CHECKSCRIPT: whether the store would take `script`. `Ok(Err(reply))`
    /// is the store's verdict against it (`NO "line 2: unknown extension"`).
    pub async fn check_script(
        &mut self,
        script: &[u8],
    ) -> Result<Result<(), Response>, StoreError> {
        let mut cmd = b"CHECKSCRIPT ".to_vec();
        wire::string(&mut cmd, script);
        cmd.extend_from_slice(b"\r\n");
        self.verdict(&cmd).await
    }

    /// PUTSCRIPT: stores `script` under `name`. `Ok(Err(reply))` is a refusal
    /// (invalid script, quota).
    pub async fn put_script(
        &mut self,
        name: &str,
        script: &[u8],
    ) -> Result<Result<(), Response>, StoreError> {
        let mut cmd = b"PUTSCRIPT ".to_vec();
        wire::string(&mut cmd, name.as_bytes());
        cmd.push(b' ');
        wire::string(&mut cmd, script);
        cmd.extend_from_slice(b"\r\n");
        self.verdict(&cmd).await
    }

    async fn verdict(&mut self, cmd: &[u8]) -> Result<Result<(), Response>, StoreError> {
        let reply = self.run(cmd).await?;
        match reply.response.status {
            Status::Ok => Ok(Ok(())),
            Status::No if reply.response.code_name().as_deref() == Some("TRYLATER") => {
                Err(self.at(Error::Unavailable(reply.response.summary())))
            }
            Status::No => Ok(Err(reply.response)),
            Status::Bye => Err(self.at(Error::Unavailable(reply.response.summary()))),
        }
    }

    /// SETACTIVE: makes `name` the active script; `None` deactivates all.
    pub async fn set_active(&mut self, name: Option<&str>) -> Result<(), StoreError> {
        let mut cmd = b"SETACTIVE ".to_vec();
        wire::string(&mut cmd, name.unwrap_or("").as_bytes());
        cmd.extend_from_slice(b"\r\n");
        self.expect_ok(&cmd, "SETACTIVE").await.map(drop)
    }

    /// DELETESCRIPT.
    pub async fn delete_script(&mut self, name: &str) -> Result<(), StoreError> {
        let mut cmd = b"DELETESCRIPT ".to_vec();
        wire::string(&mut cmd, name.as_bytes());
        cmd.extend_from_slice(b"\r\n");
        self.expect_ok(&cmd, "DELETESCRIPT").await.map(drop)
    }

    /// LOGOUT, best effort.
    pub async fn logout(mut self) {
        let _ = self.run(b"LOGOUT\r\n").await;
        let _ = self.stream.shutdown().await;
    }

    /// The connection for the proxy's relay, and any bytes the store sent
    /// after its OK (they go to the client first).
    pub fn into_relay(mut self) -> (Stream, Vec<u8>) {
        let leftover = self.framer.take_buffered();
        (self.stream, leftover)
    }
}

async fn write(stream: &mut Stream, bytes: &[u8], stage: &'static str) -> Result<(), Error> {
    stream
        .write_all(bytes)
        .await
        .map_err(|source| Error::Io { stage, source })?;
    stream
        .flush()
        .await
        .map_err(|source| Error::Io { stage, source })
}

async fn read_line(
    stream: &mut Stream,
    framer: &mut Framer,
    stage: &'static str,
) -> Result<Vec<Token>, Error> {
    // On the heap: a stack array would live in every future that awaits
    // this, the proxied session's task included, for the session's life.
    let mut buf = vec![0u8; 8192];
    loop {
        match framer.next_line() {
            Ok(Some(line)) => return Ok(line),
            Ok(None) => {}
            Err(e) => {
                return Err(Error::Protocol {
                    stage,
                    what: e.to_string(),
                })
            }
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|source| Error::Io { stage, source })?;
        if n == 0 {
            return Err(Error::Io {
                stage,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        framer.feed(&buf[..n]);
    }
}
