//! The async driver of one inbound SMTP connection: runs the [`Session`] core
//! over a socket, looks recipients up, opens one store transaction per store
//! as its first recipient arrives, streams DATA to all of them at once, and
//! answers `250` only when every store holds the message for every accepted
//! recipient (or the owed rest is in the durable retry queue).
//!
//! ```text
//!  accept (per-IP and total limits) ─► 220 ─► Session ─► RCPT: lookup ─► [hold wait] ─► route
//!        ─► store leg (reused, or connect + MAIL) ─► RCPT (the store's reply goes to the client)
//!        ─► DATA: DATA to every leg ─► 354 ─► Received: + bytes to every leg and the spool
//!        ─► replies ─► all ok: 250 │ none ok: 451/5xx │ mixed: queue (fsync) then 250
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::command::Address;
use super::command::Body;
use super::queue::{self, Entry, Queue, Spool};
use super::session::{Action, Options, Session};
use crate::app::App;
use crate::config::{Config, SmtpConfig};
use crate::metrics::METRICS;
use crate::route::{resolve, Ask, Resolution};
use crate::store::smtp::{Conn, Origin, Reply};
use crate::store::Store;
use crate::stream::Stream;
use crate::tls::ServerTls;

/// What every SMTP connection shares.
pub struct Shared {
    /// The whole config.
    pub config: Arc<Config>,
    /// `[smtp]`.
    pub smtp: SmtpConfig,
    /// Directory and routing (the process's one `Router<Store>`), swapped
    /// whole on SIGHUP (a transaction keeps the generation it read).
    routing: std::sync::RwLock<Arc<App>>,
    /// Where DSNs to outside senders go.
    pub bounce_relay: Option<Arc<Store>>,
    /// The certificate, if any (STARTTLS).
    pub tls: Option<Arc<ServerTls>>,
    /// How long a RCPT waits for a hold to end.
    pub hold_wait: Duration,
    /// The retry queue.
    pub queue: Arc<Queue>,
    /// Cancelled at shutdown.
    pub cancel: CancellationToken,
    per_ip: DashMap<IpAddr, u32>,
    slots: Arc<Semaphore>,
}

/// Why the SMTP front end could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store's TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// The queue directory cannot be used.
    #[error("smtp.queue_dir {path}: {source}")]
    Queue {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Shared {
    /// The generation whose directory and stores route recipients now.
    pub fn routing(&self) -> Arc<App> {
        Arc::clone(&self.routing.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// SIGHUP: routes new recipients (and retries) by the reloaded
    /// generation's directory and stores; transactions under way keep what
    /// they read.
    pub fn reroute(&self, app: Arc<App>) {
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = app;
    }

    /// Builds the front end's state over the process's generation `app`
    /// (directory, stores, certificate); opens (and loads) the retry queue
    /// on a blocking thread, like the queue's other file work (a queue of
    /// thousands of entries is as many file reads).
    pub async fn new(
        config: Arc<Config>,
        app: Arc<App>,
        cancel: CancellationToken,
    ) -> Result<Option<Arc<Shared>>, Error> {
        let Some(smtp) = config.smtp.clone() else {
            return Ok(None);
        };
        let tls = app.tls.clone();
        let bounce_relay = match &smtp.bounce_relay {
            Some(ep) => Some(Arc::new(Store::relay(ep.clone())?)),
            None => None,
        };
        let dir = smtp.queue_dir.clone();
        let queue = tokio::task::spawn_blocking(move || Queue::open(&dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|source| Error::Queue {
                path: smtp.queue_dir.display().to_string(),
                source,
            })?;
        let hold_wait = config
            .migration
            .as_ref()
            .map(|m| m.hold_wait)
            .unwrap_or(Duration::from_secs(20));
        Ok(Some(Arc::new(Shared {
            slots: Arc::new(Semaphore::new(smtp.max_connections as usize)),
            smtp,
            routing: std::sync::RwLock::new(app),
            bounce_relay,
            tls,
            hold_wait,
            queue: Arc::new(queue),
            cancel,
            per_ip: DashMap::new(),
            config,
        })))
    }
}

/// Holds one of a client IP's connection slots.
struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.shared.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
        }
        self.shared.per_ip.remove_if(&self.ip, |_, n| *n == 0);
    }
}

/// Accepts connections until cancelled; sessions run on `tracker`, so a
/// shutdown can let their transactions end. Sessions count in `open`, the
/// open-file ceiling every front end shares, besides `max_connections`.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    tracker: tokio_util::task::TaskTracker,
) {
    let max = crate::frontend::connection_ceiling();
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Some(guard) = crate::frontend::Open::admit(&open, max) else {
                    METRICS.smtp_connections.with_label_values(&["busy"]).inc();
                    // Best effort, never blocking the accept loop.
                    let refusal = format!(
                        "421 {} 4.3.2 Too many connections, try again later\r\n",
                        shared.smtp.hostname
                    );
                    let _ = tcp.try_write(refusal.as_bytes());
                    tracing::warn!(client = %peer, ceiling = max, "SMTP connection refused: at the open-file ceiling");
                    continue;
                };
                let shared = Arc::clone(&shared);
                tracker.spawn(async move {
                    let _guard = guard;
                    // The client is who the PROXY header names: limits per
                    // address, the Received: line and XCLIENT are about it.
                    let Some((tcp, peer)) = crate::proxy_protocol::client_of(
                        tcp,
                        peer,
                        shared.smtp.proxy_protocol,
                        &shared.config.trusted_proxies,
                        shared.smtp.command_timeout,
                        "smtp",
                    )
                    .await
                    else {
                        return;
                    };
                    let ip = peer.ip();
                    let count = {
                        let mut n = shared.per_ip.entry(ip).or_insert(0);
                        *n += 1;
                        *n
                    };
                    let slot = IpSlot {
                        shared: Arc::clone(&shared),
                        ip,
                    };
                    if count > shared.smtp.max_connections_per_ip {
                        METRICS
                            .smtp_connections
                            .with_label_values(&["per_ip_limit"])
                            .inc();
                        refuse(
                            tcp,
                            &shared.smtp.hostname,
                            "421 4.7.0 Too many connections from your address",
                        )
                        .await;
                        drop(slot);
                        return;
                    }
                    let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
                        METRICS.smtp_connections.with_label_values(&["busy"]).inc();
                        refuse(
                            tcp,
                            &shared.smtp.hostname,
                            "421 4.3.2 Too busy, try again later",
                        )
                        .await;
                        return;
                    };
                    METRICS
                        .smtp_connections
                        .with_label_values(&["accepted"])
                        .inc();
                    serve(tcp, peer, &shared).await;
                    drop(permit);
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn refuse(mut tcp: TcpStream, hostname: &str, text: &str) {
    let (code, rest) = text.split_at(4);
    let _ = tcp
        .write_all(format!("{code}{hostname} {rest}\r\n").as_bytes())
        .await;
    let _ = tcp.shutdown().await;
}

async fn write(s: &mut Stream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
}

/// A transaction id: unique within the process, unlikely to repeat across restarts.
fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:011X}{:05X}", queue::now_ms(), n & 0xFFFFF)
}

/// One store's part of a transaction.
struct Leg {
    store: Arc<Store>,
    /// `None` once the connection failed.
    conn: Option<Conn>,
    /// Indices into [`Txn::rcpts`].
    rcpts: Vec<usize>,
    /// DATA was accepted (354).
    streaming: bool,
    /// The store's end-of-data replies, for the log.
    replies: Vec<String>,
}

struct Rcpt {
    address: String,
    leg: usize,
    /// `None` while the outcome is open.
    outcome: Option<Reply>,
}

/// The transaction in progress.
struct Txn {
    id: String,
    legs: Vec<Leg>,
    rcpts: Vec<Rcpt>,
    spool: Spool,
    size: u64,
    data_started: Option<Instant>,
}

fn unavailable() -> Reply {
    Reply::new(
        451,
        "4.4.1 Mail store temporarily unavailable, try again later",
    )
}

impl Txn {
    /// Marks every open recipient of a leg with `reply` and drops its connection.
    fn fail_leg(&mut self, leg: usize, reply: &Reply) {
        for r in self.rcpts.iter_mut().filter(|r| r.leg == leg) {
            if r.outcome.is_none() {
                r.outcome = Some(reply.clone());
            }
        }
        self.legs[leg].conn = None;
        self.legs[leg].streaming = false;
    }
}

/// Serves one connection to the end.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let cfg = &shared.smtp;
    let mut stream = Stream::Plain(tcp);
    let mut core = Session::new(Options {
        hostname: cfg.hostname.clone(),
        domains: cfg.domains.clone(),
        starttls_available: shared.tls.is_some(),
        tls_active: false,
        max_message_size: cfg.max_message_size,
        max_recipients: cfg.max_recipients,
        max_line: cfg.max_line,
        ..Options::default()
    });
    if !write(&mut stream, &core.greeting()).await {
        return;
    }
    let mut out: Vec<u8> = Vec::new();
    let mut txn: Option<Txn> = None;
    let mut idle: HashMap<String, Conn> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(action) = core.poll() {
            match action {
                Action::Write(b) => out.extend_from_slice(&b),
                Action::Close => {
                    let _ = write(&mut stream, &out).await;
                    let _ = stream.shutdown().await;
                    close_idle(idle).await;
                    return;
                }
                Action::StartTls => {
                    if !write(&mut stream, &out).await {
                        return;
                    }
                    out.clear();
                    let (Stream::Plain(tcp), Some(tls)) = (stream, shared.tls.as_ref()) else {
                        return;
                    };
                    match tokio::time::timeout(cfg.command_timeout, tls.acceptor().accept(tcp))
                        .await
                    {
                        Ok(Ok(s)) => stream = Stream::ClientTls(Box::new(s)),
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "STARTTLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                    core.tls_started();
                }
                Action::Reset => {
                    txn = None;
                }
                Action::Rcpt(to) => {
                    let reply = rcpt(&mut txn, &mut idle, &core, &to, peer, shared).await;
                    core.rcpt_done(to, &reply);
                }
                Action::DataStart => {
                    let result = match txn.as_mut() {
                        Some(t) => data_start(t, &core, peer).await,
                        None => Err("554 5.5.1 No valid recipients".into()),
                    };
                    if result.is_err() {
                        txn = None;
                    }
                    core.data_started(result);
                }
                Action::Data(chunk) => {
                    if let Some(t) = txn.as_mut() {
                        data_chunk(t, &chunk).await;
                    }
                }
                Action::DataEnd => {
                    let reply = match txn.take() {
                        Some(t) => data_end(t, &mut idle, &core, peer, shared).await,
                        None => "451 4.3.0 Transaction lost".into(),
                    };
                    core.data_done(&reply);
                }
                Action::Abort => {
                    // Dropping the legs closes their connections mid-DATA:
                    // the stores discard the partial message.
                    if let Some(t) = txn.take() {
                        for l in &t.legs {
                            METRICS
                                .smtp_transactions
                                .with_label_values(&[l.store.name(), "aborted"])
                                .inc();
                        }
                        tracing::info!(id = %t.id, client = %peer, "message refused while streaming; store transactions dropped");
                    }
                }
            }
        }
        if !out.is_empty() {
            if !write(&mut stream, &out).await {
                return;
            }
            out.clear();
        }
        if core.is_closed() {
            return;
        }
        let limit = if core.in_data() {
            cfg.data_timeout
        } else {
            cfg.command_timeout
        };
        // A message being sent is let through at shutdown (the grace bounds
        // it); between transactions the client is told to come back later.
        let in_transaction = core.in_data() || txn.is_some();
        let shutting_down = async {
            if in_transaction {
                std::future::pending::<()>().await;
            }
            shared.cancel.cancelled().await;
        };
        let read = tokio::select! {
            r = tokio::time::timeout(limit, stream.read(&mut buf)) => r,
            _ = shutting_down => {
                let text = format!("421 4.3.2 {} Service shutting down, try again later\r\n", cfg.hostname);
                let _ = write(&mut stream, text.as_bytes()).await;
                return;
            }
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                if let Some(t) = &txn {
                    tracing::info!(id = %t.id, client = %peer, "client went away mid-transaction; nothing kept");
                }
                return;
            }
            Ok(Ok(n)) => core.feed(&buf[..n]),
            Err(_) => {
                let text = format!("421 4.4.2 {} Timeout, closing connection\r\n", cfg.hostname);
                let _ = write(&mut stream, text.as_bytes()).await;
                return;
            }
        }
    }
}

async fn close_idle(idle: HashMap<String, Conn>) {
    join_all(idle.into_values().map(Conn::quit)).await;
}

/// Handles one RCPT: returns the reply line(s) for the client.
async fn rcpt(
    txn: &mut Option<Txn>,
    idle: &mut HashMap<String, Conn>,
    core: &Session,
    to: &Address,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> String {
    let address = to.to_string();
    let count = |r: &str| METRICS.smtp_recipients.with_label_values(&[r]).inc();
    let routing = shared.routing();
    let resolution = resolve(
        &routing.directory,
        &routing.router,
        &address,
        Ask::Recipient,
        Some(shared.hold_wait),
    )
    .await;
    let store = match resolution {
        Resolution::Routed { store, .. } => store,
        Resolution::Unknown => {
            count("unknown");
            return format!("550 5.1.1 <{address}>: Recipient address rejected: User unknown");
        }
        Resolution::Disabled(_) => {
            count("disabled");
            return format!("550 5.2.1 <{address}>: Mailbox disabled");
        }
        Resolution::Held => {
            count("hold_timeout");
            return "450 4.2.1 Mailbox is being moved, try again later".into();
        }
        Resolution::DirectoryDown(e) => {
            count("directory_error");
            tracing::warn!(rcpt = %address, client = %peer, error = %e, "directory lookup failed");
            return "451 4.4.3 Directory temporarily unavailable, try again later".into();
        }
        Resolution::NoRoute { error, .. } => {
            count("no_route");
            tracing::error!(rcpt = %address, error = %error, "no route");
            return "451 4.3.5 Mail system configuration error, try again later".into();
        }
    };
    let Some(env) = core.envelope() else {
        return "503 5.5.1 Need MAIL before RCPT".into();
    };
    let t = txn.get_or_insert_with(|| {
        let id = new_id();
        Txn {
            spool: shared.queue.spool(&id),
            id,
            legs: Vec::new(),
            rcpts: Vec::new(),
            size: 0,
            data_started: None,
        }
    });
    let leg = match t.legs.iter().position(|l| l.store.name() == store.name()) {
        Some(i) => i,
        None => {
            let origin = Origin {
                peer,
                helo: core.helo().unwrap_or("").to_string(),
            };
            let from = env.from.as_ref().map(|a| a.to_string()).unwrap_or_default();
            let timeout = shared.smtp.backend_timeout;
            let mut reused = idle.remove(store.name());
            let conn = loop {
                let fresh = reused.is_none();
                let mut conn = match reused.take() {
                    Some(c) => c,
                    None => match store
                        .delivery(&shared.smtp.hostname, Some(origin.clone()), timeout)
                        .await
                    {
                        Ok(c) => c,
                        Err(e) => {
                            count("tempfail");
                            tracing::warn!(backend = store.name(), rcpt = %address, error = %e, "store unavailable");
                            return unavailable().to_client();
                        }
                    },
                };
                match conn
                    .mail(
                        &from,
                        env.params.body == Body::EightBitMime,
                        env.params.smtputf8,
                        env.params.size,
                    )
                    .await
                {
                    Ok(r) if r.is_positive() => break conn,
                    Ok(r) => {
                        count(if r.is_permanent() {
                            "permfail"
                        } else {
                            "tempfail"
                        });
                        idle.insert(store.name().to_string(), conn);
                        return r.to_client();
                    }
                    // A reused connection the store closed meanwhile: once more, fresh.
                    Err(_) if !fresh => continue,
                    Err(e) => {
                        count("tempfail");
                        tracing::warn!(backend = store.name(), error = %e, "store failed at MAIL");
                        return unavailable().to_client();
                    }
                }
            };
            t.legs.push(Leg {
                store: Arc::clone(&store),
                conn: Some(conn),
                rcpts: Vec::new(),
                streaming: false,
                replies: Vec::new(),
            });
            t.legs.len() - 1
        }
    };
    let Some(conn) = t.legs[leg].conn.as_mut() else {
        count("tempfail");
        return unavailable().to_client();
    };
    match conn.rcpt(&address).await {
        Ok(r) if r.is_positive() => {
            t.rcpts.push(Rcpt {
                address,
                leg,
                outcome: None,
            });
            let i = t.rcpts.len() - 1;
            t.legs[leg].rcpts.push(i);
            r.to_client()
        }
        Ok(r) => {
            count(if r.is_permanent() {
                "permfail"
            } else {
                "tempfail"
            });
            r.to_client()
        }
        Err(e) => {
            count("tempfail");
            tracing::warn!(backend = store.name(), error = %e, "store failed at RCPT");
            t.fail_leg(leg, &unavailable());
            unavailable().to_client()
        }
    }
}

/// The trace header (RFC 5321 4.4) mailshift adds.
fn received(core: &Session, peer: SocketAddr, hostname: &str, id: &str, rcpts: &[Rcpt]) -> String {
    let helo: String = core
        .helo()
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let smtputf8 = core.envelope().is_some_and(|e| e.params.smtputf8);
    let proto = match (smtputf8, core.esmtp(), core.tls_active()) {
        (true, _, false) => "UTF8SMTP",
        (true, _, true) => "UTF8SMTPS",
        (false, true, true) => "ESMTPS",
        (false, true, false) => "ESMTP",
        (false, false, _) => "SMTP",
    };
    // "for" only with a single recipient: it would disclose Bcc: otherwise.
    let for_part = match rcpts {
        [one] => format!("\r\n\tfor <{}>", one.address),
        _ => String::new(),
    };
    format!(
        "Received: from {helo} ([{}])\r\n\tby {hostname} (mailshift) with {proto} id {id}{for_part};\r\n\t{}\r\n",
        peer.ip(),
        rfc5322_date(std::time::SystemTime::now())
    )
}

/// An RFC 5322 date in UTC, e.g. `Mon, 01 Jan 2024 12:00:00 +0000`.
pub fn rfc5322_date(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Sends DATA to every store with recipients; `Ok` when at least one said 354.
async fn data_start(t: &mut Txn, core: &Session, peer: SocketAddr) -> Result<(), String> {
    t.data_started = Some(Instant::now());
    let results = join_all(t.legs.iter_mut().map(|l| async move {
        match l.conn.as_mut() {
            Some(c) if !l.rcpts.is_empty() => Some(c.command("DATA", "data").await),
            _ => None,
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok(r)) if r.code == 354 => t.legs[i].streaming = true,
            Some(Ok(r)) => t.fail_leg(i, &r),
            Some(Err(e)) => {
                tracing::warn!(backend = t.legs[i].store.name(), error = %e, "store failed at DATA");
                t.fail_leg(i, &unavailable());
            }
            None => t.fail_leg(i, &unavailable()),
        }
    }
    if !t.legs.iter().any(|l| l.streaming) {
        return Err(summary_of_failures(t).to_client());
    }
    let hostname = core
        .greeting()
        .split(|&b| b == b' ')
        .nth(1)
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_default();
    let header = received(core, peer, &hostname, &t.id, &t.rcpts);
    data_chunk(t, header.as_bytes()).await;
    Ok(())
}

/// The reply for a transaction in which nothing was delivered: a temporary
/// failure if any recipient may still succeed, else the first refusal.
fn summary_of_failures(t: &Txn) -> Reply {
    let outcomes: Vec<&Reply> = t.rcpts.iter().filter_map(|r| r.outcome.as_ref()).collect();
    outcomes
        .iter()
        .find(|r| !r.is_permanent() && !r.is_positive())
        .or_else(|| outcomes.first())
        .map(|r| (*r).clone())
        .unwrap_or_else(unavailable)
}

/// Writes message bytes to every streaming store and the spool.
async fn data_chunk(t: &mut Txn, chunk: &[u8]) {
    t.spool.write(chunk).await;
    t.size += chunk.len() as u64;
    let results = join_all(t.legs.iter_mut().map(|l| async move {
        match l.conn.as_mut() {
            Some(c) if l.streaming => Some(c.send(chunk, "data").await),
            _ => None,
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        if let Some(Err(e)) = r {
            tracing::warn!(backend = t.legs[i].store.name(), error = %e, "store failed during DATA");
            t.fail_leg(i, &unavailable());
        }
    }
}

/// Collects the stores' end-of-data replies and decides the client's reply.
async fn data_end(
    mut t: Txn,
    idle: &mut HashMap<String, Conn>,
    core: &Session,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> String {
    let results = join_all(t.legs.iter_mut().map(|l| async move {
        let c = l.conn.as_mut().filter(|_| l.streaming)?;
        let n = if c.is_lmtp() { l.rcpts.len() } else { 1 };
        let mut replies = Vec::new();
        for _ in 0..n {
            match c.read_reply("end of data").await {
                Ok(r) => replies.push(r),
                Err(e) => return Some(Err((e, replies))),
            }
        }
        Some(Ok(replies))
    }))
    .await;
    let started = t.data_started.unwrap_or_else(Instant::now);
    for (i, r) in results.into_iter().enumerate() {
        let name = t.legs[i].store.name().to_string();
        let Some(r) = r else { continue };
        METRICS
            .smtp_relay
            .with_label_values(&[&name])
            .observe(started.elapsed().as_secs_f64());
        METRICS
            .smtp_bytes
            .with_label_values(&[&name])
            .inc_by(t.size);
        let (replies, err) = match r {
            Ok(replies) => (replies, None),
            Err((e, replies)) => (replies, Some(e)),
        };
        let idxs = t.legs[i].rcpts.clone();
        let lmtp = t.legs[i].conn.as_ref().is_some_and(Conn::is_lmtp);
        for (k, &ri) in idxs.iter().enumerate() {
            let reply = if lmtp {
                replies.get(k)
            } else {
                replies.first()
            };
            if let Some(reply) = reply {
                t.rcpts[ri].outcome = Some(reply.clone());
            }
        }
        t.legs[i].replies = replies.iter().map(Reply::text).collect();
        if let Some(e) = err {
            tracing::warn!(backend = %name, error = %e, "store failed at end of data");
            t.fail_leg(i, &unavailable());
        }
    }
    let mut delivered = Vec::new();
    let mut temp = Vec::new();
    let mut perm = Vec::new();
    for r in &mut t.rcpts {
        let outcome = r.outcome.get_or_insert_with(unavailable).clone();
        if outcome.is_positive() {
            delivered.push(r.address.clone());
        } else if outcome.is_permanent() {
            perm.push((r.address.clone(), outcome.text()));
        } else {
            temp.push((r.address.clone(), outcome.text()));
        }
    }
    for (i, l) in t.legs.iter().enumerate() {
        let mine: Vec<&Rcpt> = t.rcpts.iter().filter(|r| r.leg == i).collect();
        if mine.is_empty() {
            continue;
        }
        let result = if mine
            .iter()
            .all(|r| r.outcome.as_ref().is_some_and(Reply::is_positive))
        {
            "delivered"
        } else if mine
            .iter()
            .any(|r| r.outcome.as_ref().is_some_and(Reply::is_positive))
        {
            "partial"
        } else if mine
            .iter()
            .all(|r| r.outcome.as_ref().is_some_and(Reply::is_permanent))
        {
            "permfail"
        } else {
            "tempfail"
        };
        METRICS
            .smtp_transactions
            .with_label_values(&[l.store.name(), result])
            .inc();
    }
    let env = core.envelope().cloned().unwrap_or_default();
    let from = env.from.as_ref().map(|a| a.to_string()).unwrap_or_default();
    let rcpt_count = |r: &str, n: usize| {
        METRICS
            .smtp_recipients
            .with_label_values(&[r])
            .inc_by(n as u64)
    };
    let (reply, result) = if delivered.is_empty() {
        rcpt_count("tempfail", temp.len());
        rcpt_count("permfail", perm.len());
        let r = summary_of_failures(&t);
        let result = if r.is_permanent() {
            "refused"
        } else {
            "tempfail"
        };
        (r.to_client(), result)
    } else {
        rcpt_count("delivered", delivered.len());
        let mut reply = format!("250 2.0.0 Ok: {} delivered", t.id);
        let mut result = "delivered";
        if !temp.is_empty() {
            let entry = Entry {
                id: t.id.clone(),
                from: from.clone(),
                rcpts: temp.iter().map(|(a, _)| a.clone()).collect(),
                smtputf8: env.params.smtputf8,
                created: queue::now_ms() / 1000,
                attempts: 0,
                next_attempt_ms: queue::now_ms() + shared.smtp.retry_interval.as_millis() as u64,
                last_error: temp.first().map(|(_, e)| e.clone()).unwrap_or_default(),
                client: peer.ip().to_string(),
            };
            let spool = std::mem::replace(&mut t.spool, shared.queue.spool("unused"));
            match shared.queue.add(spool, entry).await {
                Ok(()) => {
                    rcpt_count("queued", temp.len());
                    for l in &t.legs {
                        METRICS
                            .smtp_transactions
                            .with_label_values(&[l.store.name(), "queued"])
                            .inc();
                    }
                    result = "partly_queued";
                }
                Err(e) => {
                    // Answering 250 would lose the owed recipients; 451 makes
                    // the sender retry all, so the delivered ones get a copy
                    // twice. Duplication beats loss.
                    tracing::error!(id = %t.id, error = %e, "retry queue write failed");
                    rcpt_count("tempfail", temp.len());
                    reply = "451 4.3.0 Local error in processing, try again later".into();
                    result = "queue_error";
                }
            }
        }
        if !perm.is_empty() && reply.starts_with('2') {
            rcpt_count("permfail", perm.len());
            bounce(shared, &t.id, &from, &perm, peer).await;
        }
        (reply, result)
    };
    let backends: Vec<String> = t
        .legs
        .iter()
        .map(|l| format!("{}[{}]", l.store.name(), l.replies.join(" | ")))
        .collect();
    tracing::info!(
        id = %t.id,
        client = %peer,
        helo = core.helo().unwrap_or(""),
        from = %from,
        rcpts = %t.rcpts.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(","),
        size = t.size,
        backends = %backends.join(" "),
        result,
        reply = %reply.lines().last().unwrap_or(""),
        "smtp transaction"
    );
    // Healthy connections serve the client's next transaction.
    for l in t.legs.drain(..) {
        if let (Some(c), true) = (l.conn, l.streaming) {
            idle.insert(l.store.name().to_string(), c);
        }
    }
    reply
}

/// Queues a DSN to `from` for recipients refused after end-of-data.
async fn bounce(
    shared: &Arc<Shared>,
    id: &str,
    from: &str,
    failed: &[(String, String)],
    peer: SocketAddr,
) {
    if from.is_empty() {
        tracing::info!(id, "permanent failure of a bounce; no DSN for a DSN");
        return;
    }
    let entry = Entry {
        id: id.to_string(),
        from: from.to_string(),
        rcpts: Vec::new(),
        smtputf8: false,
        created: queue::now_ms() / 1000,
        attempts: 0,
        next_attempt_ms: 0,
        last_error: String::new(),
        client: peer.ip().to_string(),
    };
    super::retry::send_dsn(shared, &entry, failed, b"").await;
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::rfc5322_date;

    #[test]
    fn dates_are_rfc5322_in_utc() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_704_110_400)),
            "Mon, 01 Jan 2024 12:00:00 +0000"
        );
        // A leap day, a single-digit day, late in the day.
        assert_eq!(
            rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
    }
}
