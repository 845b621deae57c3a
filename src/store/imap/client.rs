//! The one IMAP client: connects and logs in by the sans-I/O [`Login`]
//! dialog, then pipelines commands (written in batches, replies read
//! afterwards: that is what makes APPEND fast) and reads replies with the
//! sans-I/O [`Reader`]. The proxy hands the logged-in connection to its
//! relay ([`Client::into_relay`]); the migration engine keeps talking.

use std::collections::HashSet;
use std::net::SocketAddr;

use imap_codec::imap_types::response::{Code, Data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::login::{self, id_arguments, quoted, Action, Credentials, Login};
use super::response::{Reader, Response, Status, Untagged};
use crate::config::Security;
use crate::store::bearer::Outcome;
use crate::store::{Error, Stage, Store, StoreError};
use crate::stream::Stream;

/// Longest response line accepted (LIST and SEARCH lines can be long).
const MAX_LINE: usize = 4 << 20;
/// Largest literal accepted (a message).
const MAX_LITERAL: usize = 1 << 30;
/// Read size: large enough for bulk FETCH responses.
const READ_CHUNK: usize = 64 * 1024;

/// The client whose session the proxy opens, for ID.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Its address.
    pub peer: SocketAddr,
    /// The ID fields it sent before logging in.
    pub id: Vec<(String, Option<String>)>,
}

/// A tagged reply and the untagged responses that came before it.
pub struct Reply {
    /// `OK`, `NO` or `BAD`.
    pub status: Status,
    /// The tagged line after the tag, e.g. `OK [APPENDUID 1 5] Append completed.`
    pub text: String,
    /// The untagged responses, whole (literals included).
    pub untagged: Vec<Untagged>,
}

impl Reply {
    /// Every untagged response imap-codec can decode; the others are skipped
    /// (stores send informational data we have no use for).
    pub fn data(&self) -> impl Iterator<Item = Data<'_>> {
        self.untagged.iter().filter_map(Untagged::data)
    }

    /// Response codes in untagged status lines (`[UIDVALIDITY 5]`, ...).
    pub fn codes(&self) -> impl Iterator<Item = Code<'_>> {
        self.untagged.iter().filter_map(Untagged::code)
    }

    /// `[APPENDUID validity uid-set]` of the tagged line, expanded in order.
    pub fn append_uids(&self) -> Option<(u32, Vec<u32>)> {
        super::response::Tagged {
            tag: String::new(),
            status: self.status,
            text: self.text.clone(),
        }
        .append_uids()
    }
}

/// One logged-in connection to a store.
pub struct Client {
    stream: Stream,
    reader: Reader,
    next_tag: u32,
    caps: Vec<String>,
    upper: HashSet<String>,
    store: String,
    out: Vec<u8>,
}

/// A login dialog in progress: the connection and the sans-I/O machine.
struct Dialog {
    stream: Stream,
    reader: Reader,
    login: Login,
}

/// Where [`Dialog::drive`] stopped.
enum Step {
    Done(Client),
    Challenge(Vec<u8>, Dialog),
}

/// A bearer login the store challenged (its failure JSON, for OAUTHBEARER):
/// the connection waits for the client's answer ([`Challenged::answer`]).
pub struct Challenged {
    dialog: Dialog,
}

impl Dialog {
    /// Runs the dialog until it is done or the store challenges.
    async fn drive(mut self, store: &Store, stage: &Stage) -> Result<Step, Error> {
        let ep = &store.cfg.imap;
        let mut buf = vec![0u8; 4096];
        loop {
            stage.set(self.login.stage());
            let response = loop {
                match self.reader.next_response() {
                    Ok(Some(r)) => break r,
                    Ok(None) => {}
                    Err(e) => {
                        return Err(Error::Protocol {
                            stage: self.login.stage(),
                            what: e.to_string(),
                        })
                    }
                }
                let n = self
                    .stream
                    .read(&mut buf)
                    .await
                    .map_err(|source| Error::Io {
                        stage: self.login.stage(),
                        source,
                    })?;
                if n == 0 {
                    return Err(Error::Io {
                        stage: self.login.stage(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                self.reader.push(&buf[..n]);
            };
            match self.login.on_response(response)? {
                Action::Read => {}
                Action::Send(bytes) => send(&mut self.stream, &bytes, self.login.stage()).await?,
                Action::StartTls => {
                    if !self.reader.take_buffered().is_empty() {
                        // Bytes the store sent before TLS would be read as if
                        // they came over TLS: an injection.
                        return Err(Error::Protocol {
                            stage: "starttls",
                            what: "store sent data after STARTTLS OK".into(),
                        });
                    }
                    self.stream = store.connector.starttls(self.stream, ep).await?;
                    if let Action::Send(bytes) = self.login.tls_started() {
                        send(&mut self.stream, &bytes, "capability").await?;
                    }
                }
                Action::Challenge(challenge) => return Ok(Step::Challenge(challenge, self)),
                Action::Done(caps) => {
                    let upper = caps.iter().map(|c| c.to_ascii_uppercase()).collect();
                    return Ok(Step::Done(Client {
                        stream: self.stream,
                        reader: self.reader,
                        next_tag: 1,
                        caps,
                        upper,
                        store: store.name().to_string(),
                        out: Vec::new(),
                    }));
                }
            }
        }
    }
}

/// The error of a dialog that timed out or failed, with the store's name.
fn at(store: &Store, error: Error) -> StoreError {
    StoreError {
        store: store.name().to_string(),
        error,
    }
}

impl Challenged {
    /// Sends the client's answer to the challenge (`None`: it cancelled) and
    /// reads the store's verdict, within the store's `connect_timeout`.
    pub async fn answer(self, store: &Store, answer: Option<&[u8]>) -> Result<Client, StoreError> {
        let stage = Stage::new("login");
        store
            .within(&stage, Self::verdict(self.dialog, store, answer, &stage))
            .await
    }

    async fn verdict(
        mut dialog: Dialog,
        store: &Store,
        answer: Option<&[u8]>,
        stage: &Stage,
    ) -> Result<Client, Error> {
        if let Action::Send(bytes) = dialog.login.answer(answer)? {
            send(&mut dialog.stream, &bytes, "login").await?;
        }
        match dialog.drive(store, stage).await? {
            Step::Done(c) => Ok(c),
            // The exchange refuses a second challenge before it gets here.
            Step::Challenge(..) => Err(Error::Protocol {
                stage: "login",
                what: "second challenge".into(),
            }),
        }
    }
}

impl Client {
    /// Connects and logs in, within the store's `connect_timeout`. `client`
    /// (a proxied session) is forwarded by ID with its address.
    pub async fn connect(
        store: &Store,
        creds: &Credentials<'_>,
        client: Option<&ClientInfo>,
    ) -> Result<Client, StoreError> {
        match Self::connect_step(store, creds, client).await? {
            Step::Done(c) => Ok(c),
            Step::Challenge(..) => Err(at(
                store,
                Error::Protocol {
                    stage: "login",
                    what: "challenge to a password login".into(),
                },
            )),
        }
    }

    /// Logs in with the client's bearer token (OAUTHBEARER, XOAUTH2) as it
    /// sent it; the store judges it. A failure challenge comes back for the
    /// client to see and answer ([`Outcome::Challenged`]).
    pub async fn connect_bearer(
        store: &Store,
        user: &str,
        mechanism: crate::sasl::Mechanism,
        message: &[u8],
        client: Option<&ClientInfo>,
    ) -> Result<Outcome<Client, Challenged>, StoreError> {
        let creds = Credentials::Bearer {
            user,
            mechanism,
            message,
        };
        Ok(match Self::connect_step(store, &creds, client).await? {
            Step::Done(c) => Outcome::LoggedIn(c),
            Step::Challenge(challenge, dialog) => Outcome::Challenged {
                challenge,
                pending: Challenged { dialog },
            },
        })
    }

    async fn connect_step(
        store: &Store,
        creds: &Credentials<'_>,
        client: Option<&ClientInfo>,
    ) -> Result<Step, StoreError> {
        let stage = Stage::new("connect");
        store
            .within(&stage, Self::login(store, creds, client, &stage))
            .await
    }

    async fn login(
        store: &Store,
        creds: &Credentials<'_>,
        client: Option<&ClientInfo>,
        stage: &Stage,
    ) -> Result<Step, Error> {
        let ep = &store.cfg.imap;
        let stream = store.connector.connect(ep).await?;
        let id = client.map(|c| id_arguments(&c.id, c.peer));
        let login = Login::new(
            creds,
            store.master().as_ref(),
            ep.security == Security::StartTls,
            id,
        )?;
        let dialog = Dialog {
            stream,
            reader: Reader::new(MAX_LINE, MAX_LITERAL),
            login,
        };
        dialog.drive(store, stage).await
    }

    /// The store's post-login capabilities, as it listed them.
    pub fn capabilities(&self) -> String {
        self.caps.join(" ")
    }

    /// The connection and whatever the store sent after its last reply, for
    /// a relay that takes over from here.
    pub fn into_relay(mut self) -> (Stream, Vec<u8>) {
        let rest = self.reader.take_buffered();
        (self.stream, rest)
    }

    /// The store's name (for messages).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// Whether the store offers a capability (e.g. `UIDPLUS`).
    pub fn has(&self, cap: &str) -> bool {
        self.upper.contains(&cap.to_ascii_uppercase())
    }

    fn fail(&self, error: Error) -> StoreError {
        StoreError {
            store: self.store.clone(),
            error,
        }
    }

    fn tag(&mut self) -> String {
        let tag = format!("M{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Queues a command (written by [`flush`](Self::flush)); returns its tag.
    pub fn queue(&mut self, command: &[u8]) -> String {
        let tag = self.tag();
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
        self.queue_multiappend(mailbox, &[(flags, date, message, binary)])
    }

    /// Queues one MULTIAPPEND (RFC 3502) of several messages (one APPEND for
    /// one message): (flags, date, bytes, binary) each.
    pub fn queue_multiappend(
        &mut self,
        mailbox: &[u8],
        messages: &[(&str, &str, &[u8], bool)],
    ) -> String {
        let tag = self.tag();
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
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        send(&mut self.stream, &out, "command")
            .await
            .map_err(|e| self.fail(e))
    }

    /// Reads responses up to the reply tagged `tag`.
    pub async fn reply(&mut self, tag: &str) -> Result<Reply, StoreError> {
        let mut untagged = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match next_reply(&mut self.reader, tag, &mut untagged) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
            let n = match self.stream.read(&mut buf).await {
                Ok(n) => n,
                Err(source) => {
                    return Err(self.fail(Error::Io {
                        stage: "response",
                        source,
                    }))
                }
            };
            if n == 0 {
                return Err(self.fail(Error::Io {
                    stage: "response",
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                }));
            }
            self.reader.push(&buf[..n]);
        }
    }

    /// Sends one command and waits for its reply; `NO`/`BAD` is an error.
    pub async fn run(&mut self, command: &str) -> Result<Reply, StoreError> {
        let reply = self.run_status(command.as_bytes()).await?;
        if reply.status != Status::Ok {
            let temporary = super::response::Tagged {
                tag: String::new(),
                status: reply.status,
                text: reply.text.clone(),
            }
            .is_temporary();
            return Err(self.fail(Error::Refused {
                command: command.split(' ').take(2).collect::<Vec<_>>().join(" "),
                reply: reply.text,
                temporary,
            }));
        }
        Ok(reply)
    }

    /// Sends one command and returns the reply whatever its status.
    pub async fn run_status(&mut self, command: &[u8]) -> Result<Reply, StoreError> {
        let tag = self.queue(command);
        self.flush().await?;
        self.reply(&tag).await
    }

    /// Reads one METADATA entry (RFC 5464) of each mailbox, pipelined: one
    /// round trip for all of them. Mailboxes the store refuses (gone since
    /// they were listed) or that lack the entry are left out.
    pub async fn get_metadata(
        &mut self,
        mailboxes: &[&[u8]],
        entry: &str,
    ) -> Result<Vec<super::metadata::Entry>, StoreError> {
        let tags: Vec<String> = mailboxes
            .iter()
            .map(|m| self.queue(&super::metadata::get_command(m, entry)))
            .collect();
        self.flush().await?;
        let mut out = Vec::new();
        for tag in tags {
            let reply = self.reply(&tag).await?;
            if reply.status != Status::Ok {
                continue;
            }
            for u in &reply.untagged {
                let found = super::metadata::parse(&u.raw).unwrap_or_default();
                out.extend(
                    found
                        .into_iter()
                        .filter(|e| e.value.is_some() && e.name.eq_ignore_ascii_case(entry)),
                );
            }
        }
        Ok(out)
    }

    /// Sets (or with `None` removes) one METADATA entry (RFC 5464) on each
    /// of several mailboxes, pipelined; values go as literals. Needs METADATA,
    /// and LITERAL+ (or LITERAL- for values up to 4096 bytes). The first
    /// refusal is the error.
    pub async fn set_metadata(
        &mut self,
        values: &[(&[u8], Option<&[u8]>)],
        entry: &str,
    ) -> Result<(), StoreError> {
        let longest = values.iter().filter_map(|(_, v)| v.map(<[u8]>::len)).max();
        if let Some(len) = longest {
            if !(self.has("LITERAL+") || (self.has("LITERAL-") && len <= 4096)) {
                return Err(self.fail(Error::Config(format!(
                    "SETMETADATA of {len} bytes needs LITERAL+ on {}",
                    self.store
                ))));
            }
        }
        let tags: Vec<String> = values
            .iter()
            .map(|(mailbox, value)| {
                self.queue(&super::metadata::set_command(mailbox, entry, *value))
            })
            .collect();
        self.flush().await?;
        let mut refused = None;
        for tag in tags {
            let reply = self.reply(&tag).await?;
            if reply.status != Status::Ok && refused.is_none() {
                refused = Some(reply.text);
            }
        }
        match refused {
            Some(reply) => Err(self.fail(Error::Refused {
                command: "SETMETADATA".into(),
                reply,
                temporary: false,
            })),
            None => Ok(()),
        }
    }

    /// Logs out politely; errors do not matter any more.
    pub async fn logout(mut self) {
        let _ = self.run_status(b"LOGOUT").await;
    }
}

/// Collects responses from `reader` up to the one tagged `tag`, sans I/O:
/// `Ok(None)` when more bytes are needed (the untagged ones so far stay in
/// `untagged`). Replies tagged otherwise (earlier pipelined commands already
/// accounted for) and continuations are skipped; `* BYE` ends the connection.
pub fn next_reply(
    reader: &mut Reader,
    tag: &str,
    untagged: &mut Vec<Untagged>,
) -> Result<Option<Reply>, Error> {
    loop {
        let response = reader.next_response().map_err(|e| Error::Protocol {
            stage: "response",
            what: e.to_string(),
        })?;
        match response {
            None => return Ok(None),
            Some(Response::Tagged(t)) if t.tag == tag => {
                return Ok(Some(Reply {
                    status: t.status,
                    text: t.text,
                    untagged: std::mem::take(untagged),
                }))
            }
            Some(Response::Tagged(_) | Response::Continue(_)) => {}
            Some(Response::Untagged(u)) if u.is_bye() => return Err(Error::Unavailable(u.text())),
            Some(Response::Untagged(u)) => untagged.push(u),
        }
    }
}

/// Reads a whole script of store responses as replies to `M1`, `M2`, ...
/// (fed in small chunks, as a network delivers them), decoding every reply's
/// data, codes and APPENDUID: the fuzz target `migrate_reply` and its corpus
/// replay drive the real reader through this. Returns the replies and the
/// error that ended the script, if any.
pub fn replay_replies(
    script: &[u8],
    max_line: usize,
    max_literal: usize,
) -> (Vec<Reply>, Option<Error>) {
    let mut reader = Reader::new(max_line, max_literal);
    let mut replies = Vec::new();
    let mut untagged = Vec::new();
    let mut tag = String::from("M1");
    for chunk in script.chunks(13) {
        reader.push(chunk);
        loop {
            match next_reply(&mut reader, &tag, &mut untagged) {
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

async fn send(s: &mut Stream, bytes: &[u8], stage: &'static str) -> Result<(), Error> {
    s.write_all(bytes)
        .await
        .map_err(|source| Error::Io { stage, source })?;
    s.flush()
        .await
        .map_err(|source| Error::Io { stage, source })
}

/// Runs the login dialog against a store whose every byte is in `replies`,
/// sans I/O (what mailshift would send is dropped): the fuzz target
/// `backend_login` and its corpus replay drive the real machine through this.
/// Returns the post-login capabilities and what followed the login's reply.
pub fn replay_login(replies: &[u8], master: bool) -> Result<(Vec<String>, Vec<u8>), Error> {
    let creds = if master {
        Credentials::Master { user: "alice" }
    } else {
        Credentials::User {
            user: "alice",
            password: b"p\"w\\",
        }
    };
    replay(replies, &creds)
}

/// Like [`replay_login`] for a client's OAUTHBEARER login: a challenge the
/// store sends is answered as a client would (`AQ==`).
pub fn replay_bearer_login(replies: &[u8]) -> Result<(Vec<String>, Vec<u8>), Error> {
    let creds = Credentials::Bearer {
        user: "alice",
        mechanism: crate::sasl::Mechanism::OAuthBearer,
        message: b"n,a=alice,\x01auth=Bearer tok\x01\x01",
    };
    replay(replies, &creds)
}

fn replay(replies: &[u8], creds: &Credentials<'_>) -> Result<(Vec<String>, Vec<u8>), Error> {
    let m = login::Master {
        user: "admin",
        password: "adminpw",
        separator: None,
    };
    let id = id_arguments(
        &[("name".into(), Some("fuzz".into()))],
        SocketAddr::from(([192, 0, 2, 1], 50000)),
    );
    let mut dialog = Login::new(creds, Some(&m), false, Some(id))?;
    let mut reader = Reader::new(64 * 1024, 64 * 1024);
    reader.push(replies);
    loop {
        let response = reader
            .next_response()
            .map_err(|e| Error::Protocol {
                stage: dialog.stage(),
                what: e.to_string(),
            })?
            .ok_or(Error::Io {
                stage: "replay",
                source: std::io::ErrorKind::UnexpectedEof.into(),
            })?;
        match dialog.on_response(response)? {
            Action::Done(caps) => return Ok((caps, reader.take_buffered())),
            Action::StartTls => {
                let _ = dialog.tls_started();
            }
            Action::Challenge(_) => {
                dialog.answer(Some(b"\x01"))?;
            }
            Action::Read | Action::Send(_) => {}
        }
    }
}

/// A reply that must be `OK`, or the refusal as [`Client::run`] words it
/// (for replies read after pipelined commands).
pub(crate) fn ok(client: &Client, command: &str, reply: Reply) -> Result<Reply, StoreError> {
    if reply.status == Status::Ok {
        return Ok(reply);
    }
    let temporary = super::response::Tagged {
        tag: String::new(),
        status: reply.status,
        text: reply.text.clone(),
    }
    .is_temporary();
    Err(StoreError {
        store: client.store().to_string(),
        error: Error::Refused {
            command: command.to_string(),
            reply: reply.text,
            temporary,
        },
    })
}
