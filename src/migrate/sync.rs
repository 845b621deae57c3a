//! One incremental pass of one user's mailbox, folder by folder.
//!
//! Per folder:
//! ```text
//!  STATUS both ─unchanged since last pass─► skip
//!      │
//!  EXAMINE source (read-only) / CREATE+SELECT destination
//!  list UIDs+flags both sides ─► map check ─► expunged on source: delete copies
//!      │                                        (only ours, capped per pass)
//!  unmapped destination messages? ─► match by fingerprint (no duplicates after
//!      │                             a crash or a lost state store)
//!  copy the rest in source UID order: FETCH batch ─► pipelined APPEND (LITERAL+)
//!      │                               ─► APPENDUID into the map, saved per batch
//!  push flag changes
//! ```
//! The source is only ever EXAMINEd and read with BODY.PEEK: never modified.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imap_codec::imap_types::flag::FlagPerm;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::status::StatusDataItem;

use super::folders::{self, Pair, Rules};
use super::message::{self, uid_set, Fingerprint, Listed};
use super::state::{Failed, FolderState, Ghost, Intent, StateStore};
use super::{Error, Event, Reporter};
use crate::metrics::METRICS;
use crate::store::imap::{quoted, Client, Credentials, Reply, Status};
use crate::store::{Store, StoreError};

/// Messages per FETCH/APPEND batch.
const BATCH_MESSAGES: usize = 200;
/// Bytes per batch: bounds memory, whatever the mailbox.
const BATCH_BYTES: u64 = 16 << 20;

/// How a pass behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only report what would be copied.
    pub dry_run: bool,
    /// Allow more deletions than `max_deletes`.
    pub force: bool,
    /// Most destination messages one pass may delete (expunged on the source).
    pub max_deletes: usize,
    /// Connection pairs per user (folders are synced in parallel).
    pub connections: usize,
    /// Copy bandwidth cap, bytes per second.
    pub max_bytes_per_second: Option<u64>,
    /// Folder rules.
    pub rules: Rules,
    /// How long a batch sent before a crash may still land (`[migration] settle`).
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            force: false,
            max_deletes: 1000,
            connections: 4,
            max_bytes_per_second: None,
            rules: Rules::default(),
            settle: Duration::from_secs(30),
        }
    }
}

/// What one folder's sync did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FolderReport {
    /// Source folder.
    pub folder: String,
    /// Destination folder.
    pub dest: String,
    /// Whether nothing changed since the last pass (checked by STATUS only).
    pub unchanged: bool,
    /// Messages on the source.
    pub source_messages: usize,
    /// Messages copied (or, in a dry run, to copy).
    pub copied: u64,
    /// Bytes copied (or to copy).
    pub bytes: u64,
    /// Destination messages recognised by fingerprint instead of copied.
    pub matched: u64,
    /// Messages whose flags were updated.
    pub flags_updated: u64,
    /// Copies deleted because the source expunged them.
    pub deleted: u64,
    /// Deletions held back by the per-pass cap.
    pub deletions_held_back: u64,
    /// Messages that could not be copied.
    pub failed: Vec<Failed>,
    /// Flags the destination refused to store (not in PERMANENTFLAGS).
    pub refused_flags: BTreeSet<String>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PassReport {
    /// The user.
    pub user: String,
    /// Per folder.
    pub folders: Vec<FolderReport>,
    /// Seconds the pass took.
    pub seconds: f64,
    /// Folder errors (the pass went on with the other folders).
    pub errors: Vec<String>,
    /// The user's Sieve scripts (when both stores have ManageSieve).
    pub sieve: super::sieve::SieveReport,
}

impl PassReport {
    /// Messages copied in all folders.
    pub fn copied(&self) -> u64 {
        self.folders.iter().map(|f| f.copied).sum()
    }
    /// Bytes copied in all folders.
    pub fn bytes(&self) -> u64 {
        self.folders.iter().map(|f| f.bytes).sum()
    }
    /// Messages that failed in all folders.
    pub fn failed(&self) -> usize {
        self.folders.iter().map(|f| f.failed.len()).sum()
    }

    /// Everything on the source is on the destination: no folder error, no
    /// failed message, no held-back deletion. This is the cutover's verification.
    pub fn complete(&self) -> bool {
        self.errors.is_empty()
            && self
                .folders
                .iter()
                .all(|f| f.failed.is_empty() && f.deletions_held_back == 0)
    }
}

/// The two stores and the state, for passes of any user.
pub struct Engine {
    /// Source store.
    pub from: Arc<Store>,
    /// Destination store.
    pub to: Arc<Store>,
    /// Sync state.
    pub state: Arc<StateStore>,
    /// Behaviour.
    pub opts: Options,
    /// The bandwidth cap, shared by all copies.
    pub pacer: Pacer,
    /// Connection pairs allowed at once (each holds one connection per store),
    /// so a batch of users does not overrun the old store.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// Selected-state facts.
#[derive(Debug, Default, Clone, Copy)]
struct Selected {
    validity: u32,
    uidnext: u32,
    modseq: u64,
    exists: u32,
    /// PERMANENTFLAGS allows new keywords (`\*`).
    any_keyword: bool,
}

fn selected(reply: &Reply) -> (Selected, BTreeSet<String>) {
    let mut s = Selected::default();
    let mut perm = BTreeSet::new();
    for code in reply.codes() {
        match code {
            Code::UidValidity(v) => s.validity = v.get(),
            Code::UidNext(v) => s.uidnext = v.get(),
            Code::HighestModSeq(v) => s.modseq = v.get(),
            Code::PermanentFlags(flags) => {
                for f in flags {
                    match f {
                        FlagPerm::Asterisk => s.any_keyword = true,
                        FlagPerm::Flag(f) => {
                            perm.insert(f.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for d in reply.data() {
        if let Data::Exists(n) = d {
            s.exists = n;
        }
    }
    (s, perm)
}

/// STATUS facts of a folder, for the "nothing changed" check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct StatusFacts {
    messages: u32,
    uidnext: u32,
    validity: u32,
    modseq: u64,
}

async fn status(c: &mut Client, name: &[u8]) -> Result<Option<StatusFacts>, StoreError> {
    let condstore = c.has("CONDSTORE");
    let mut cmd = b"STATUS ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    cmd.extend_from_slice(if condstore {
        b" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
    } else {
        b" (MESSAGES UIDNEXT UIDVALIDITY)"
    });
    let reply = c.run_status(&cmd).await?;
    if reply.status != Status::Ok {
        return Ok(None);
    }
    let mut f = StatusFacts::default();
    for d in reply.data() {
        if let Data::Status { items, .. } = d {
            for item in items.iter() {
                match item {
                    StatusDataItem::Messages(n) => f.messages = *n,
                    StatusDataItem::UidNext(n) => f.uidnext = n.get(),
                    StatusDataItem::UidValidity(n) => f.validity = n.get(),
                    StatusDataItem::HighestModSeq(n) => f.modseq = *n,
                    _ => {}
                }
            }
        }
    }
    Ok(Some(f))
}

/// Flags the destination can store: system flags it lists, keywords when it
/// allows new ones (or lists them).
fn storable(
    flags: &BTreeSet<String>,
    perm: &BTreeSet<String>,
    any_keyword: bool,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keep = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for f in flags {
        let system = f.starts_with('\\');
        if perm.contains(f) || (!system && any_keyword) {
            keep.insert(f.clone());
        } else {
            refused.insert(f.clone());
        }
    }
    (keep, refused)
}

fn flag_list(flags: &BTreeSet<String>) -> String {
    flags.iter().cloned().collect::<Vec<_>>().join(" ")
}

async fn list_messages(
    c: &mut Client,
    exists: u32,
    with_size: bool,
) -> Result<Vec<Listed>, StoreError> {
    if exists == 0 {
        return Ok(Vec::new());
    }
    let cmd = if with_size {
        "UID FETCH 1:* (UID FLAGS RFC822.SIZE)"
    } else {
        "UID FETCH 1:* (UID FLAGS)"
    };
    Ok(message::listing(&c.run(cmd).await?))
}

async fn fingerprint(c: &mut Client, uids: &[u32]) -> Result<Vec<(u32, Fingerprint)>, StoreError> {
    let mut out = Vec::new();
    for chunk in uids.chunks(500) {
        let cmd = format!(
            "UID FETCH {} (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])",
            uid_set(chunk)
        );
        out.extend(message::fingerprints(&c.run(&cmd).await?));
    }
    Ok(out)
}

/// Paces copying to `max_bytes_per_second`, across every folder and user this
/// engine copies at once.
pub struct Pacer {
    limit: Option<u64>,
    spent: std::sync::Mutex<(Instant, u64)>,
}

impl Pacer {
    /// A pacer for `limit` bytes per second (none: no pacing).
    pub fn new(limit: Option<u64>) -> Pacer {
        Pacer {
            limit: limit.filter(|l| *l > 0),
            spent: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    async fn account(&self, n: u64) {
        let Some(limit) = self.limit else { return };
        let wait = {
            let mut g = self.spent.lock().unwrap_or_else(|p| p.into_inner());
            g.1 += n;
            let due = Duration::from_secs_f64(g.1 as f64 / limit as f64);
            due.saturating_sub(g.0.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A source/destination connection pair.
pub struct Pair2 {
    /// Holds one of the engine's connection slots while open.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Source connection.
    pub src: Client,
    /// Destination connection.
    pub dst: Client,
}

/// What a batch of APPENDs needs to know about the destination folder.
struct CopyCtx<'a> {
    mailbox: &'a [u8],
    validity: u32,
    perm: &'a BTreeSet<String>,
    any_keyword: bool,
    binary: bool,
    multi: bool,
    /// The destination's APPENDLIMIT: larger messages are reported, not sent.
    append_limit: Option<u64>,
}

/// A batch written to the destination whose replies are still to be read.
struct Appending {
    /// One tag for a MULTIAPPEND, or one per message.
    tags: Vec<String>,
    messages: Vec<message::Fetched>,
}

/// The APPEND arguments of one message, or why it cannot be sent.
fn append_args(
    m: &message::Fetched,
    ctx: &CopyCtx<'_>,
    report: &mut FolderReport,
) -> Option<(String, bool)> {
    let (flags, refused) = storable(&m.flags, ctx.perm, ctx.any_keyword);
    report.refused_flags.extend(refused);
    if let Some(limit) = ctx.append_limit.filter(|l| m.body.len() as u64 > *l) {
        report.failed.push(Failed {
            uid: m.uid,
            reason: format!(
                "{} bytes, over the destination's APPENDLIMIT of {limit}",
                m.body.len()
            ),
        });
        return None;
    }
    let nul = m.body.contains(&0);
    if nul && !ctx.binary {
        report.failed.push(Failed {
            uid: m.uid,
            reason: "contains NUL bytes and the destination lacks BINARY".into(),
        });
        return None;
    }
    Some((flag_list(&flags), nul))
}

/// Queues a batch: one MULTIAPPEND (one transaction, one fsync on the store)
/// where offered, else pipelined APPENDs. Nothing is written yet.
fn queue_append(
    dst: &mut Client,
    messages: Vec<message::Fetched>,
    ctx: &mut CopyCtx<'_>,
    report: &mut FolderReport,
) -> Appending {
    let mut sendable = Vec::with_capacity(messages.len());
    let mut args = Vec::with_capacity(messages.len());
    for m in messages {
        if let Some(a) = append_args(&m, ctx, report) {
            args.push(a);
            sendable.push(m);
        }
    }
    let tags = if ctx.multi && sendable.len() > 1 {
        let parts: Vec<(&str, &str, &[u8], bool)> = sendable
            .iter()
            .zip(&args)
            .map(|(m, (flags, nul))| {
                (
                    flags.as_str(),
                    m.internal_date.as_str(),
                    m.body.as_slice(),
                    *nul,
                )
            })
            .collect();
        vec![dst.queue_multiappend(ctx.mailbox, &parts)]
    } else {
        sendable
            .iter()
            .zip(&args)
            .map(|(m, (flags, nul))| {
                dst.queue_append(ctx.mailbox, flags, &m.internal_date, &m.body, *nul)
            })
            .collect()
    };
    Appending {
        tags,
        messages: sendable,
    }
}

/// Queues a batch and writes it; returns without waiting for the replies.
async fn start_append(
    dst: &mut Client,
    messages: Vec<message::Fetched>,
    ctx: &mut CopyCtx<'_>,
    report: &mut FolderReport,
) -> Result<Appending, Error> {
    let batch = queue_append(dst, messages, ctx, report);
    dst.flush().await?;
    Ok(batch)
}

/// Fetches whole messages for copying.
async fn fetch_batch(src: &mut Client, uids: &[u32]) -> Result<Vec<message::Fetched>, Error> {
    let reply = src
        .run(&format!(
            "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
            uid_set(uids)
        ))
        .await?;
    Ok(message::fetched(&reply))
}

/// Reads a batch's replies into the map; returns (messages, bytes) copied. A
/// refused MULTIAPPEND stored nothing (it is atomic): its messages are sent
/// again one by one, so one bad message fails alone.
async fn finish_append(
    dst: &mut Client,
    batch: Appending,
    ctx: &mut CopyCtx<'_>,
    st: &mut FolderState,
    report: &mut FolderReport,
) -> Result<(u64, u64), Error> {
    let mut replies = Vec::with_capacity(batch.tags.len());
    for tag in &batch.tags {
        replies.push(dst.reply(tag).await?);
    }
    let single = batch.tags.len() == batch.messages.len();
    if !single {
        let reply = &replies[0];
        if reply.status != Status::Ok {
            let was_multi = ctx.multi;
            ctx.multi = false;
            let retry = start_append(dst, batch.messages, ctx, report).await?;
            let done = Box::pin(finish_append(dst, retry, ctx, st, report)).await;
            ctx.multi = was_multi;
            return done;
        }
        let uids = reply
            .append_uids()
            .filter(|(v, u)| *v == ctx.validity && u.len() == batch.messages.len());
        let Some((_, uids)) = uids else {
            return Err(Error::Unsupported(format!(
                "{}: MULTIAPPEND gave no usable APPENDUID ({})",
                dst.store(),
                reply.text
            )));
        };
        let mut bytes = 0;
        for (m, d) in batch.messages.iter().zip(uids) {
            st.map.insert(m.uid, d);
            bytes += m.body.len() as u64;
        }
        let n = batch.messages.len() as u64;
        report.copied += n;
        report.bytes += bytes;
        return Ok((n, bytes));
    }
    let (mut n, mut bytes) = (0, 0);
    for (m, reply) in batch.messages.iter().zip(&replies) {
        match (reply.status, reply.append_uids()) {
            (Status::Ok, Some((v, uids))) if v == ctx.validity && uids.len() == 1 => {
                st.map.insert(m.uid, uids[0]);
                n += 1;
                bytes += m.body.len() as u64;
            }
            (Status::Ok, _) => {
                return Err(Error::Unsupported(format!(
                    "{}: APPEND gave no usable APPENDUID ({})",
                    dst.store(),
                    reply.text
                )))
            }
            _ => report.failed.push(Failed {
                uid: m.uid,
                reason: reply.text.clone(),
            }),
        }
    }
    report.copied += n;
    report.bytes += bytes;
    Ok((n, bytes))
}

impl Engine {
    /// Saves the map after a batch, counts it, reports it, paces.
    #[allow(clippy::too_many_arguments)]
    async fn after_batch(
        &self,
        user: &str,
        key: &str,
        st: &FolderState,
        report: &mut FolderReport,
        reporter: &dyn Reporter,
        (messages, bytes): (u64, u64),
        paced: bool,
    ) -> Result<(), Error> {
        METRICS.migration_messages.inc_by(messages);
        METRICS.migration_bytes.inc_by(bytes);
        let mut saved = st.clone();
        saved.failed = report.failed.clone();
        self.state.save(user, key, &saved)?;
        reporter.event(Event::Copied {
            user: user.to_string(),
            folder: key.to_string(),
            messages: report.copied,
            bytes: report.bytes,
        });
        if paced {
            self.pacer.account(bytes).await;
        }
        Ok(())
    }
}

impl Engine {
    /// Builds the engine from `[migration]` (from, to, state_dir and limits).
    pub fn from_config(cfg: &crate::config::Config) -> Result<Engine, Error> {
        Self::build(cfg, false)
    }

    /// The engine for rolling back: new → old, with a state file of its own.
    pub fn reversed(cfg: &crate::config::Config) -> Result<Engine, Error> {
        Self::build(cfg, true)
    }

    fn build(cfg: &crate::config::Config, reverse: bool) -> Result<Engine, Error> {
        let m = cfg
            .migration
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the config has no [migration] table".into()))?;
        let backend = |name: &str| -> Result<Arc<Store>, Error> {
            let b = cfg
                .backend_named(name)
                .ok_or_else(|| Error::Unsupported(format!("no [backends.{name}]")))?;
            Store::new(b.clone())
                .map(Arc::new)
                .map_err(|e| Error::Unsupported(format!("backends.{name}: {e}")))
        };
        let (from, to) = if reverse {
            (&m.to, &m.from)
        } else {
            (&m.from, &m.to)
        };
        let state_dir = if reverse {
            m.state_dir.join("rollback")
        } else {
            m.state_dir.clone()
        };
        Ok(Engine {
            from: backend(from)?,
            to: backend(to)?,
            state: Arc::new(StateStore::open(&state_dir)?),
            opts: Options {
                max_deletes: m.max_deletes_per_pass,
                connections: m.connections_per_user,
                max_bytes_per_second: m.max_bytes_per_second,
                rules: Rules {
                    exclude: m.exclude_folders.clone(),
                    rename: m.folder_map.clone(),
                },
                settle: m.settle,
                ..Options::default()
            },
            pacer: Pacer::new(m.max_bytes_per_second),
            slots: Arc::new(tokio::sync::Semaphore::new(m.max_connections_per_store)),
        })
    }

    /// Connects one pair as the user (master user where configured, else the
    /// given password).
    pub async fn connect(&self, user: &str, password: Option<&[u8]>) -> Result<Pair2, Error> {
        // A store without a master user takes the given password, else the
        // one its `passwords_file` lists for the user.
        let listed = |b: &Store| match (&b.cfg.master, password) {
            (None, None) => b
                .listed_password(user)
                .map_err(|e| Error::Unsupported(format!("{}.passwords_file: {e}", b.name()))),
            _ => Ok(None),
        };
        let (from_listed, to_listed) = (listed(&self.from)?, listed(&self.to)?);
        fn creds<'a>(
            b: &Store,
            user: &'a str,
            password: Option<&'a [u8]>,
        ) -> Result<Credentials<'a>, Error> {
            match (&b.cfg.master, password) {
                (Some(_), _) => Ok(Credentials::Master { user }),
                (None, Some(password)) => Ok(Credentials::User { user, password }),
                (None, None) => Err(Error::Credentials(b.name().to_string())),
            }
        }
        let (sc, dc) = (
            creds(&self.from, user, password.or(from_listed.as_deref()))?,
            creds(&self.to, user, password.or(to_listed.as_deref()))?,
        );
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| Error::Unsupported("engine shut down".into()))?;
        let (src, dst) = tokio::join!(
            Client::connect(&self.from, &sc, None),
            Client::connect(&self.to, &dc, None)
        );
        Ok(Pair2 {
            _slot: slot,
            src: src?,
            dst: dst?,
        })
    }

    /// Lists both sides and plans the folder pairs.
    pub async fn plan(&self, pair: &mut Pair2) -> Result<Vec<Pair>, Error> {
        let (src, src_ns) = folders::list(&mut pair.src).await?;
        let (dst, dst_ns) = folders::list(&mut pair.dst).await?;
        Ok(folders::plan(
            &src,
            &src_ns,
            &dst,
            &dst_ns,
            &self.opts.rules,
        ))
    }

    /// One incremental pass for `user`.
    pub async fn pass(
        self: &Arc<Self>,
        user: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<PassReport, Error> {
        self.pass_with(user, password, reporter, true).await
    }

    /// The cutover's final pass: inside the hold, so not held back by
    /// `max_bytes_per_second` (every second of it is a second of held mail).
    pub async fn final_pass(
        self: &Arc<Self>,
        user: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<PassReport, Error> {
        self.pass_with(user, password, reporter, false).await
    }

    async fn pass_with(
        self: &Arc<Self>,
        user: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
        paced: bool,
    ) -> Result<PassReport, Error> {
        let started = Instant::now();
        let mut first = self.connect(user, password).await?;
        let mut plan = self.plan(&mut first).await?;
        // Largest folders first: one folder is copied over one connection pair
        // (to keep source UID order), so the biggest one bounds the pass and
        // must not start last.
        let mut sizes = HashMap::new();
        for p in &plan {
            if let Ok(Some(f)) = status(&mut first.src, &p.src.name).await {
                sizes.insert(p.src.name.clone(), f.messages);
            }
        }
        plan.sort_by_key(|p| std::cmp::Reverse(sizes.get(&p.src.name).copied().unwrap_or(0)));
        if let Err(why) = folders::check_quota(&mut first.src, &mut first.dst, &plan).await? {
            return Err(Error::Capacity(format!("{user}: {why}")));
        }
        // Parents before children: a name sorts before every name it prefixes.
        if !self.opts.dry_run {
            let mut missing: Vec<(&[u8], Option<&str>)> = plan
                .iter()
                .filter(|p| p.create)
                .map(|p| (p.dst.as_slice(), p.create_special.as_deref()))
                .collect();
            missing.sort_unstable();
            for (name, special) in missing {
                // Refusals are reported per folder when it is synced.
                let _ = create_folder(&mut first.dst, name, special).await?;
            }
        }
        reporter.event(Event::Planned {
            user: user.to_string(),
            folders: plan.len(),
        });
        let queue = Arc::new(tokio::sync::Mutex::new(
            plan.into_iter().collect::<std::collections::VecDeque<_>>(),
        ));
        let workers = self.opts.connections.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        let password = password.map(|p| Arc::new(p.to_vec()));
        let mut first = Some(first);
        for _ in 0..workers {
            let engine = Arc::clone(self);
            let queue = Arc::clone(&queue);
            let reporter = Arc::clone(&reporter);
            let user = user.to_string();
            let password = password.clone();
            let pair = first.take();
            tasks.spawn(async move {
                let mut reports = Vec::new();
                let mut errors = Vec::new();
                let mut conn = pair;
                loop {
                    let Some(folder) = queue.lock().await.pop_front() else { break };
                    let mut attempt = 0;
                    loop {
                        if conn.is_none() {
                            match engine.connect(&user, password.as_deref().map(|p| p.as_slice())).await {
                                Ok(c) => conn = Some(c),
                                Err(e) => {
                                    errors.push(format!("{}: {e}", folder.src.display()));
                                    break;
                                }
                            }
                        }
                        let Some(c) = conn.as_mut() else { break };
                        match engine.sync_folder(&user, c, &folder, &*reporter, paced).await {
                            Ok(r) => {
                                reports.push(r);
                                break;
                            }
                            Err(e) if e.is_temporary() && attempt < 3 => {
                                attempt += 1;
                                conn = None;
                                let wait = Duration::from_millis(500 << attempt);
                                tracing::warn!(user = %user, folder = %folder.src.display(), error = %e, retry_in_ms = wait.as_millis() as u64, "store trouble; retrying folder");
                                tokio::time::sleep(wait).await;
                            }
                            Err(e) => {
                                errors.push(format!("{}: {e}", folder.src.display()));
                                conn = None;
                                break;
                            }
                        }
                    }
                }
                if let Some(c) = conn {
                    tokio::join!(c.src.logout(), c.dst.logout());
                }
                (reports, errors)
            });
        }
        let mut report = PassReport {
            user: user.to_string(),
            ..PassReport::default()
        };
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((r, e)) => {
                    report.folders.extend(r);
                    report.errors.extend(e);
                }
                Err(e) => report.errors.push(format!("worker failed: {e}")),
            }
        }
        report.folders.sort_by(|a, b| a.folder.cmp(&b.folder));
        report.sieve = super::sieve::copy(
            &self.from,
            &self.to,
            user,
            password.as_deref().map(|p| p.as_slice()),
            self.opts.dry_run,
        )
        .await;
        self.state.close(user);
        report.seconds = started.elapsed().as_secs_f64();
        let result = if report.errors.is_empty() {
            "ok"
        } else {
            "partial"
        };
        METRICS.migration_passes.with_label_values(&[result]).inc();
        METRICS.migration_pass_duration.observe(report.seconds);
        Ok(report)
    }

    /// After cutover: moves mail that still reached the old INBOX directly
    /// (not through mailshift) to the new INBOX — copied, recorded, then removed
    /// from the old store. Only messages newer than the final pass are touched:
    /// what the user deleted on the new store is never brought back.
    pub async fn sweep_inbox(&self, user: &str) -> Result<u64, Error> {
        self.sweep(user, false).await
    }

    /// The sweep, of INBOX only or of every folder (`all_folders`): right
    /// after a cutover a session that was not closed in time (a proxy whose
    /// directory follower was reconnecting) may have appended to any folder
    /// of the old store.
    pub async fn sweep(&self, user: &str, all_folders: bool) -> Result<u64, Error> {
        let result = async {
            let mut c = self.connect(user, None).await?;
            let plan = self.plan(&mut c).await?;
            let mut moved = 0;
            for pair in plan
                .iter()
                .filter(|p| all_folders || p.src.name.eq_ignore_ascii_case(b"INBOX"))
            {
                moved += self.sweep_folder(user, &mut c, pair).await?;
            }
            tokio::join!(c.src.logout(), c.dst.logout());
            Ok(moved)
        }
        .await;
        self.state.close(user);
        result
    }

    async fn sweep_folder(&self, user: &str, c: &mut Pair2, pair: &Pair) -> Result<u64, Error> {
        let key = pair.src.display();
        let mut st = self.state.load(user, &key)?;
        if st.src_uidnext == 0 || pair.create {
            return Ok(0); // never migrated: nothing to sweep against
        }
        let mut select = b"SELECT ".to_vec();
        select.extend_from_slice(&quoted(&pair.src.name));
        let reply = c.src.run_status(&select).await?;
        if reply.status != Status::Ok {
            return Ok(0);
        }
        let (src_sel, _) = selected(&reply);
        if src_sel.validity != st.src_validity || src_sel.uidnext <= st.src_uidnext {
            return Ok(0);
        }
        // `n:*` also returns the last message when it is below n: filter.
        let listed = message::listing(
            &c.src
                .run(&format!(
                    "UID FETCH {}:* (UID FLAGS RFC822.SIZE)",
                    st.src_uidnext
                ))
                .await?,
        );
        // Copied by a sweep that died before removing them from the old store.
        let mut moved: Vec<u32> = listed
            .iter()
            .map(|m| m.uid)
            .filter(|u| *u >= st.src_uidnext && st.map.contains_key(u))
            .collect();
        let mut fresh: Vec<u32> = listed
            .iter()
            .map(|m| m.uid)
            .filter(|u| *u >= st.src_uidnext && !st.map.contains_key(u))
            .collect();
        if fresh.is_empty() && moved.is_empty() {
            return Ok(0);
        }
        let mut select = b"SELECT ".to_vec();
        select.extend_from_slice(&quoted(&pair.dst));
        let reply = c.dst.run_status(&select).await?;
        let (dst_sel, perm) = selected(&reply);
        if reply.status != Status::Ok || dst_sel.validity != st.dst_validity {
            return Err(Error::Unsupported(format!(
                "{user}: the new {}'s UIDVALIDITY changed; not sweeping it",
                String::from_utf8_lossy(&pair.dst)
            )));
        }
        if let Some(intent) = st.intent.take() {
            // A sweep died with a batch in flight: whatever of it the new
            // store committed (even after the death) is recognised, not
            // copied again.
            let pending: Vec<u32> = fresh
                .iter()
                .copied()
                .filter(|u| intent.uids.contains(u))
                .collect();
            let landed = recover_intent(c, &st, &intent, &pending, self.opts.settle).await?;
            for (s, d) in landed {
                st.map.insert(s, d);
                moved.push(s);
            }
            fresh.retain(|u| !st.map.contains_key(u));
            self.state.save(user, &key, &st)?;
        }
        if !fresh.is_empty() {
            // Another instance may have cut this user over and swept already,
            // or this instance's state predates the cutover: what the new
            // folder holds already is recognised, never copied again.
            let known = already_in_folder(c, &st, &listed, &fresh, dst_sel.exists).await?;
            for (s, d) in known {
                st.map.insert(s, d);
                moved.push(s);
            }
            fresh.retain(|u| !st.map.contains_key(u));
            self.state.save(user, &key, &st)?;
        }
        let mut report = FolderReport::default();
        let mut ctx = CopyCtx {
            mailbox: &pair.dst,
            validity: dst_sel.validity,
            perm: &perm,
            any_keyword: dst_sel.any_keyword,
            binary: c.dst.has("BINARY"),
            multi: c.dst.has("MULTIAPPEND"),
            append_limit: folders::append_limit(&mut c.dst).await?,
        };
        for chunk in fresh.chunks(BATCH_MESSAGES) {
            let reply = c
                .src
                .run(&format!(
                    "UID FETCH {} (UID FLAGS INTERNALDATE BODY.PEEK[])",
                    uid_set(chunk)
                ))
                .await?;
            st.intent = Some(Intent {
                uids: chunk.to_vec(),
                since: unix_now(),
                dst_uidnext: dst_sel.uidnext,
            });
            self.state.save(user, &key, &st)?;
            let batch =
                start_append(&mut c.dst, message::fetched(&reply), &mut ctx, &mut report).await?;
            let before: HashSet<u32> = st.map.keys().copied().collect();
            finish_append(&mut c.dst, batch, &mut ctx, &mut st, &mut report).await?;
            st.intent = None;
            // Recorded before anything is removed: a crash here leaves a copy
            // on both stores, never none.
            self.state.save(user, &key, &st)?;
            moved.extend(st.map.keys().copied().filter(|u| !before.contains(u)));
        }
        if !moved.is_empty() {
            moved.sort_unstable();
            let set = uid_set(&moved);
            c.src
                .run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
                .await?;
            c.src.run(&format!("UID EXPUNGE {set}")).await?;
            for u in &moved {
                st.map.remove(u);
            }
            st.src_uidnext = src_sel.uidnext;
            self.state.save(user, &key, &st)?;
            METRICS.migration_messages.inc_by(moved.len() as u64);
        }
        Ok(moved.len() as u64)
    }

    /// Syncs one folder pair, in phases: skip if unchanged, open both sides,
    /// mirror expunges, recognise what is already there, copy, push flags.
    pub async fn sync_folder(
        &self,
        user: &str,
        c: &mut Pair2,
        pair: &Pair,
        reporter: &dyn Reporter,
        paced: bool,
    ) -> Result<FolderReport, Error> {
        let key = pair.src.display();
        let mut report = FolderReport {
            folder: key.clone(),
            dest: String::from_utf8_lossy(&pair.dst).into_owned(),
            ..FolderReport::default()
        };
        let mut st = self.state.load(user, &key)?;
        if let Some(messages) = unchanged(c, pair, &st).await? {
            report.unchanged = true;
            report.source_messages = messages;
            return Ok(report);
        }

        let src_sel = examine_source(&mut c.src, pair).await?;
        if !self.opts.dry_run {
            prepare_destination(&mut c.dst, pair).await?;
        }
        let src_list = list_messages(&mut c.src, src_sel.exists, true).await?;
        report.source_messages = src_list.len();
        if pair.create && self.opts.dry_run {
            report.copied = src_list.len() as u64;
            report.bytes = src_list.iter().map(|m| u64::from(m.size)).sum();
            return Ok(report);
        }
        let (dst_sel, perm) = select_destination(&mut c.dst, pair, &report.dest).await?;
        if st.src_validity != src_sel.validity || st.dst_validity != dst_sel.validity {
            if st.src_validity != 0 {
                tracing::warn!(user, folder = %key, "UIDVALIDITY changed; matching this folder again by fingerprint");
            }
            st.reset(src_sel.validity, dst_sel.validity);
        }
        let dst_list = list_messages(&mut c.dst, dst_sel.exists, false).await?;
        let src_by_uid: HashMap<u32, &Listed> = src_list.iter().map(|m| (m.uid, m)).collect();
        let dst_by_uid: HashMap<u32, &Listed> = dst_list.iter().map(|m| (m.uid, m)).collect();

        // A copy the user deleted on the destination is copied again.
        st.map.retain(|_, d| dst_by_uid.contains_key(d));
        st.foreign.retain(|d| dst_by_uid.contains_key(d));

        let folder = FolderCtx {
            user,
            key: &key,
            src_by_uid: &src_by_uid,
            dst_by_uid: &dst_by_uid,
            paced,
        };
        self.mirror_expunges(&folder, c, &mut st, &mut report)
            .await?;
        let mut to_copy: Vec<&Listed> = src_list
            .iter()
            .filter(|m| !st.map.contains_key(&m.uid))
            .collect();
        self.recognise(&folder, c, &mut st, &mut to_copy, &mut report)
            .await?;

        if self.opts.dry_run {
            report.copied = to_copy.len() as u64;
            report.bytes = to_copy.iter().map(|m| u64::from(m.size)).sum();
            return Ok(report);
        }

        let mut ctx = CopyCtx {
            mailbox: &pair.dst,
            validity: dst_sel.validity,
            perm: &perm,
            any_keyword: dst_sel.any_keyword,
            binary: c.dst.has("BINARY"),
            multi: c.dst.has("MULTIAPPEND"),
            append_limit: folders::append_limit(&mut c.dst).await?,
        };
        self.copy_messages(
            &folder,
            c,
            &to_copy,
            &mut ctx,
            &mut st,
            &mut report,
            reporter,
        )
        .await?;
        push_flags(c, &folder, &st, &perm, dst_sel.any_keyword, &mut report).await?;

        // Remember where both sides stood, for the next pass's STATUS check.
        st.failed = report.failed.clone();
        st.src_uidnext = src_sel.uidnext;
        // Work left over (held-back deletions, copies that may still land)
        // must not look like "unchanged".
        st.src_modseq = if report.deletions_held_back > 0 || !st.ghosts.is_empty() {
            0
        } else {
            src_sel.modseq
        };
        if let Some(d) = status(&mut c.dst, &pair.dst).await? {
            st.dst_modseq = d.modseq;
        }
        self.state.save(user, &key, &st)?;
        Ok(report)
    }

    /// Expunged on the source: delete our copies (never anything else), at
    /// most `max_deletes` without `--force`.
    async fn mirror_expunges(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        st: &mut FolderState,
        report: &mut FolderReport,
    ) -> Result<(), Error> {
        let gone: Vec<u32> = st
            .map
            .iter()
            .filter(|(s, _)| !folder.src_by_uid.contains_key(s))
            .map(|(_, d)| *d)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        if gone.len() > self.opts.max_deletes && !self.opts.force {
            report.deletions_held_back = gone.len() as u64;
            tracing::warn!(user = folder.user, folder = %folder.key, would_delete = gone.len(), cap = self.opts.max_deletes, "deletions held back (use --force)");
            return Ok(());
        }
        report.deleted = gone.len() as u64;
        if self.opts.dry_run {
            return Ok(());
        }
        expunge_uids(&mut c.dst, gone.clone()).await?;
        let gone: HashSet<u32> = gone.into_iter().collect();
        st.map.retain(|_, d| !gone.contains(d));
        self.state.save(folder.user, folder.key, st)?;
        Ok(())
    }

    /// Recognises what is already on the destination, so nothing is copied
    /// twice, whatever crashed before:
    ///
    /// - unmapped destination messages are matched to source messages still
    ///   to copy by fingerprint (a crash between APPEND and saving the map, or
    ///   a lost state store);
    /// - a batch whose intent is still recorded may be committed by the
    ///   destination *after* its sender died (a relay in front of the store
    ///   had accepted the bytes): until `[migration] settle` after it was sent, this pass
    ///   waits for those messages to land and matches them as they do, rather
    ///   than copy them again;
    /// - what is copied again once the wait is over is remembered as a
    ///   [`Ghost`]: should the earlier copy land after all, a later pass finds
    ///   it unmapped with the fingerprint of a mapped message and removes it.
    ///   The intent proves that copy is mailshift's own; nothing else on the
    ///   destination is ever removed.
    ///
    /// Why intents rather than only reconciling at the end of a pass: a late
    /// commit can come after any check a pass makes, so the pass must know
    /// what may still arrive, and only a record written before the bytes left
    /// can say so (and prove whose copy it is).
    async fn recognise(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        st: &mut FolderState,
        to_copy: &mut Vec<&Listed>,
        report: &mut FolderReport,
    ) -> Result<(), Error> {
        let now = unix_now();
        st.ghosts.retain(|g| {
            now.saturating_sub(g.since) < GHOST_TTL.as_secs()
                && folder.src_by_uid.contains_key(&g.uid)
        });
        let intent = st.intent.take();
        let mapped_dst: HashSet<u32> = st.map.values().copied().collect();
        let foreign: HashSet<u32> = st.foreign.iter().copied().collect();
        let mut candidates: Vec<u32> = folder
            .dst_by_uid
            .keys()
            .copied()
            .filter(|u| !mapped_dst.contains(u) && (!foreign.contains(u) || !st.ghosts.is_empty()))
            .collect();
        candidates.sort_unstable();
        let need_match = !to_copy.is_empty() && !candidates.is_empty();
        let need_ghosts = !st.ghosts.is_empty() && !candidates.is_empty();
        let mut src_fp: Vec<(u32, Fingerprint)> = Vec::new();
        if need_match || intent.is_some() {
            let uids: Vec<u32> = to_copy.iter().map(|m| m.uid).collect();
            src_fp = fingerprint(&mut c.src, &uids).await?;
        }
        let mut matched = HashSet::new();
        if need_match || need_ghosts {
            let dst_fp = fingerprint(&mut c.dst, &candidates).await?;
            let mut pool: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
            for (uid, fp) in dst_fp {
                pool.entry(fp).or_default().push(uid);
            }
            for (uid, fp) in &src_fp {
                if let Some(d) = pool
                    .get_mut(fp)
                    .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
                {
                    st.map.insert(*uid, d);
                    matched.insert(*uid);
                }
            }
            // Late copies of messages that were copied again: ours, removed.
            let mut late = Vec::new();
            st.ghosts.retain(|g| {
                if !st.map.contains_key(&g.uid) {
                    return true;
                }
                match pool.get_mut(&g.fingerprint).and_then(|l| l.pop()) {
                    Some(d) => {
                        late.push(d);
                        false
                    }
                    None => true,
                }
            });
            if !late.is_empty() && !self.opts.dry_run {
                tracing::warn!(user = folder.user, folder = %folder.key, removed = late.len(), "a copy sent before a crash landed late; removed the duplicate");
                report.deleted += late.len() as u64;
                expunge_uids(&mut c.dst, late).await?;
            }
            // Foreign: neither ours nor matched (an admin's, a user's); kept
            // out of later matching unless a ghost needs them.
            let checked: HashSet<u32> = candidates.iter().copied().collect();
            st.foreign.retain(|d| !checked.contains(d));
            st.foreign.extend(pool.into_values().flatten());
            st.foreign.sort_unstable();
        }
        report.matched = matched.len() as u64;
        to_copy.retain(|m| !matched.contains(&m.uid));

        if let Some(intent) = intent.filter(|_| !self.opts.dry_run) {
            let in_flight: HashSet<u32> = intent.uids.iter().copied().collect();
            let mut waiting: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
            for (uid, fp) in &src_fp {
                if in_flight.contains(uid) && !matched.contains(uid) {
                    waiting.entry(fp.clone()).or_default().push(*uid);
                }
            }
            let last = folder.dst_by_uid.keys().copied().max().unwrap_or(0);
            let landed = settle(
                &mut c.dst,
                &mut waiting,
                last,
                intent.since,
                self.opts.settle,
            )
            .await?;
            for (uid, d) in &landed {
                st.map.insert(*uid, *d);
            }
            report.matched += landed.len() as u64;
            to_copy.retain(|m| !landed.iter().any(|(u, _)| *u == m.uid));
            for (fp, uids) in waiting {
                for uid in uids {
                    st.ghosts.push(Ghost {
                        uid,
                        fingerprint: fp.clone(),
                        since: intent.since,
                    });
                }
            }
        }
        // Saved with the first batch's intent (before any byte of it leaves)
        // or at the end of the folder: one commit fewer per changed folder
        // inside a cutover's hold. Lost by a crash, this is found again.
        Ok(())
    }

    /// Copies, in source UID order, in batches bounded in count and bytes.
    /// Earlier failures are not in the map, so they are in `to_copy`: retried.
    #[allow(clippy::too_many_arguments)]
    async fn copy_messages(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        to_copy: &[&Listed],
        ctx: &mut CopyCtx<'_>,
        st: &mut FolderState,
        report: &mut FolderReport,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        st.failed.clear();
        reporter.event(Event::FolderStart {
            user: folder.user.to_string(),
            folder: folder.key.to_string(),
            messages: to_copy.len() as u64,
            bytes: to_copy.iter().map(|m| u64::from(m.size)).sum(),
        });
        let batches = batches(to_copy);
        let Some(first) = batches.first() else {
            return Ok(());
        };
        // The intent of each batch is on disk before its bytes leave (the
        // previous batch's save carries it).
        st.intent = Some(Intent {
            uids: first.clone(),
            since: unix_now(),
            dst_uidnext: 0,
        });
        self.state.save(folder.user, folder.key, st)?;
        // While the destination takes in and stores batch k, the source already
        // sends batch k+1: both legs stay busy.
        let (src, dst) = (&mut c.src, &mut c.dst);
        let mut next = Some(fetch_batch(src, first).await?);
        for k in 0..batches.len() {
            let Some(messages) = next.take() else { break };
            for u in &batches[k] {
                if !messages.iter().any(|m| m.uid == *u) {
                    report.failed.push(Failed {
                        uid: *u,
                        reason: "vanished from the source during the pass".into(),
                    });
                }
            }
            let batch = queue_append(dst, messages, ctx, report);
            let storing = async {
                dst.flush().await?;
                finish_append(dst, batch, ctx, st, report).await
            };
            let fetching = async {
                match batches.get(k + 1) {
                    Some(b) => fetch_batch(src, b).await.map(Some),
                    None => Ok(None),
                }
            };
            let (stored, fetched) = tokio::join!(storing, fetching);
            let done = stored?;
            next = fetched?;
            st.intent = batches.get(k + 1).map(|uids| Intent {
                uids: uids.clone(),
                since: unix_now(),
                dst_uidnext: 0,
            });
            self.after_batch(
                folder.user,
                folder.key,
                st,
                report,
                reporter,
                done,
                folder.paced,
            )
            .await?;
        }
        Ok(())
    }
}

/// How long a [`Ghost`] is kept: far beyond any relay's buffering.
const GHOST_TTL: Duration = Duration::from_secs(24 * 3600);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One folder's listings, shared by the phases.
struct FolderCtx<'a> {
    user: &'a str,
    key: &'a str,
    src_by_uid: &'a HashMap<u32, &'a Listed>,
    dst_by_uid: &'a HashMap<u32, &'a Listed>,
    /// Copies count against `max_bytes_per_second` (not in the final pass).
    paced: bool,
}

/// Nothing changed on either side since the last complete pass (STATUS only)?
/// Returns the source's message count when so.
async fn unchanged(c: &mut Pair2, pair: &Pair, st: &FolderState) -> Result<Option<usize>, Error> {
    if pair.create || !st.failed.is_empty() || st.src_modseq == 0 || st.intent.is_some() {
        return Ok(None);
    }
    let (s, d) = (
        status(&mut c.src, &pair.src.name).await?,
        status(&mut c.dst, &pair.dst).await?,
    );
    Ok(match (s, d) {
        (Some(s), Some(d))
            if s.validity == st.src_validity
                && s.uidnext == st.src_uidnext
                && s.modseq == st.src_modseq
                && d.validity == st.dst_validity
                && d.modseq == st.dst_modseq
                && d.modseq > 0 =>
        {
            Some(s.messages as usize)
        }
        _ => None,
    })
}

/// EXAMINE (read-only) the source folder.
async fn examine_source(src: &mut Client, pair: &Pair) -> Result<Selected, Error> {
    let mut cmd = b"EXAMINE ".to_vec();
    cmd.extend_from_slice(&quoted(&pair.src.name));
    if src.has("CONDSTORE") {
        cmd.extend_from_slice(b" (CONDSTORE)");
    }
    let reply = src.run_status(&cmd).await?;
    if reply.status != Status::Ok {
        return Err(StoreError {
            store: src.store().to_string(),
            error: crate::store::Error::Refused {
                command: format!("EXAMINE {}", pair.src.display()),
                reply: reply.text,
                temporary: false,
            },
        }
        .into());
    }
    Ok(selected(&reply).0)
}

/// Creates (if planned) and subscribes (if the source does) the destination.
async fn prepare_destination(dst: &mut Client, pair: &Pair) -> Result<(), Error> {
    if pair.create {
        // ALREADYEXISTS from the pass's up-front creation or a concurrent
        // pass is fine; a folder the store cannot hold (name, depth, length)
        // is this user's to map.
        let reply = create_folder(dst, &pair.dst, pair.create_special.as_deref()).await?;
        if reply.status != Status::Ok
            && !reply.text.contains("ALREADYEXISTS")
            && !folder_exists(dst, &pair.dst).await?
        {
            return Err(Error::Unsupported(format!(
                "{} refused to create {:?} for {:?} ({}): give it a name the store takes with [migration] folder_map",
                dst.store(),
                String::from_utf8_lossy(&pair.dst),
                pair.src.display(),
                reply.text.trim_end()
            )));
        }
    }
    if pair.src.subscribed {
        let mut cmd = b"SUBSCRIBE ".to_vec();
        cmd.extend_from_slice(&quoted(&pair.dst));
        let _ = dst.run_status(&cmd).await?;
    }
    Ok(())
}

/// CREATE, with `USE (special)` where the store offers CREATE-SPECIAL-USE; a
/// store that refuses the attribute (Cyrus allows one folder per use) still
/// gets the folder.
async fn create_folder(
    dst: &mut Client,
    name: &[u8],
    special: Option<&str>,
) -> Result<Reply, Error> {
    if let Some(special) = special.filter(|_| dst.has("CREATE-SPECIAL-USE")) {
        let mut cmd = b"CREATE ".to_vec();
        cmd.extend_from_slice(&quoted(name));
        cmd.extend_from_slice(format!(" (USE ({special}))").as_bytes());
        let reply = dst.run_status(&cmd).await?;
        if reply.status == Status::Ok {
            return Ok(reply);
        }
    }
    let mut cmd = b"CREATE ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    Ok(dst.run_status(&cmd).await?)
}

/// Whether a folder exists (a store may answer CREATE of an existing folder
/// with a plain NO, without ALREADYEXISTS).
async fn folder_exists(dst: &mut Client, name: &[u8]) -> Result<bool, Error> {
    let mut cmd = b"LIST \"\" ".to_vec();
    cmd.extend_from_slice(&quoted(name));
    let reply = dst.run_status(&cmd).await?;
    let found = reply.data().any(|d| matches!(d, Data::List { .. }));
    Ok(found)
}

/// SELECT (read-write) the destination folder; UIDPLUS is required.
async fn select_destination(
    dst: &mut Client,
    pair: &Pair,
    shown: &str,
) -> Result<(Selected, BTreeSet<String>), Error> {
    let mut cmd = b"SELECT ".to_vec();
    cmd.extend_from_slice(&quoted(&pair.dst));
    if dst.has("CONDSTORE") {
        cmd.extend_from_slice(b" (CONDSTORE)");
    }
    let mut reply = dst.run_status(&cmd).await?;
    // Dovecot creates an `auto = create` special-use mailbox on its first
    // SELECT; when another session (a parallel worker) created it at the same
    // moment, that SELECT fails with ALREADYEXISTS. The mailbox is there now.
    for _ in 0..3 {
        if reply.status == Status::Ok || !reply.text.contains("[ALREADYEXISTS]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = dst.run_status(&cmd).await?;
    }
    if reply.status != Status::Ok {
        return Err(StoreError {
            store: dst.store().to_string(),
            error: crate::store::Error::Refused {
                command: format!("SELECT {shown}"),
                reply: reply.text,
                temporary: false,
            },
        }
        .into());
    }
    if !dst.has("UIDPLUS") {
        return Err(Error::Unsupported(format!(
            "{} lacks UIDPLUS: copies could not be tracked",
            dst.store()
        )));
    }
    Ok(selected(&reply))
}

/// Removes destination messages by UID (the caller proves they are ours).
async fn expunge_uids(dst: &mut Client, mut uids: Vec<u32>) -> Result<(), Error> {
    uids.sort_unstable();
    for chunk in uids.chunks(1000) {
        let set = uid_set(chunk);
        dst.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
            .await?;
        dst.run(&format!("UID EXPUNGE {set}")).await?;
    }
    Ok(())
}

/// Waits, until `since + wait`, for messages of a batch sent before a crash
/// to land on the (selected) destination, matching each arrival above `last`
/// by fingerprint. Returns (source UID, destination UID) for those that did;
/// what is still `waiting` did not land in time.
async fn settle(
    dst: &mut Client,
    waiting: &mut BTreeMap<Fingerprint, Vec<u32>>,
    mut last: u32,
    since: u64,
    wait: Duration,
) -> Result<Vec<(u32, u32)>, Error> {
    let mut landed = Vec::new();
    let deadline = since.saturating_add(wait.as_secs());
    while waiting.values().any(|v| !v.is_empty()) && unix_now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        dst.run("NOOP").await?;
        // `n:*` also returns the last message when it is below n: filter.
        let fresh: Vec<u32> =
            message::listing(&dst.run(&format!("UID FETCH {}:* (UID)", last + 1)).await?)
                .into_iter()
                .map(|m| m.uid)
                .filter(|u| *u > last)
                .collect();
        let Some(max) = fresh.iter().copied().max() else {
            continue;
        };
        last = max;
        for (d, fp) in fingerprint(dst, &fresh).await? {
            if let Some(uid) = waiting
                .get_mut(&fp)
                .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
            {
                landed.push((uid, d));
            }
        }
    }
    waiting.retain(|_, v| !v.is_empty());
    if !landed.is_empty() {
        tracing::info!(
            landed = landed.len(),
            still_missing = waiting.values().map(Vec::len).sum::<usize>(),
            "messages sent before a crash landed late; recognised, not copied again"
        );
    }
    Ok(landed)
}

/// For the sweep: matches the batch `intent` left by a sweep that died
/// (source UIDs `pending`) against what reached the new folder since, waiting
/// for late commits until `[migration] settle` after it was sent.
async fn recover_intent(
    c: &mut Pair2,
    st: &FolderState,
    intent: &Intent,
    pending: &[u32],
    wait: Duration,
) -> Result<Vec<(u32, u32)>, Error> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let from = intent.dst_uidnext.max(1);
    let mapped: HashSet<u32> = st.map.values().copied().collect();
    let candidates: Vec<u32> =
        message::listing(&c.dst.run(&format!("UID FETCH {from}:* (UID)")).await?)
            .into_iter()
            .map(|m| m.uid)
            .filter(|u| *u >= from && !mapped.contains(u))
            .collect();
    let mut waiting: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
    for (uid, fp) in fingerprint(&mut c.src, pending).await? {
        waiting.entry(fp).or_default().push(uid);
    }
    let mut landed = Vec::new();
    for (d, fp) in fingerprint(&mut c.dst, &candidates).await? {
        if let Some(uid) = waiting
            .get_mut(&fp)
            .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
        {
            landed.push((uid, d));
        }
    }
    let last = candidates.iter().copied().max().unwrap_or(from - 1);
    landed.extend(settle(&mut c.dst, &mut waiting, last, intent.since, wait).await?);
    Ok(landed)
}

/// For the sweep: which of the `fresh` old-folder messages the new folder
/// holds already (same fingerprint, not mapped to anything else). Only
/// destination messages of a size some fresh message has are fingerprinted.
async fn already_in_folder(
    c: &mut Pair2,
    st: &FolderState,
    listed: &[Listed],
    fresh: &[u32],
    dst_exists: u32,
) -> Result<Vec<(u32, u32)>, Error> {
    let fresh_set: HashSet<u32> = fresh.iter().copied().collect();
    let sizes: HashSet<u32> = listed
        .iter()
        .filter(|m| fresh_set.contains(&m.uid))
        .map(|m| m.size)
        .collect();
    let mapped: HashSet<u32> = st.map.values().copied().collect();
    let candidates: Vec<u32> = list_messages(&mut c.dst, dst_exists, true)
        .await?
        .into_iter()
        .filter(|m| sizes.contains(&m.size) && !mapped.contains(&m.uid))
        .map(|m| m.uid)
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut pool: BTreeMap<Fingerprint, Vec<u32>> = BTreeMap::new();
    for (d, fp) in fingerprint(&mut c.dst, &candidates).await? {
        pool.entry(fp).or_default().push(d);
    }
    let mut known = Vec::new();
    for (s, fp) in fingerprint(&mut c.src, fresh).await? {
        if let Some(d) = pool
            .get_mut(&fp)
            .and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
        {
            known.push((s, d));
        }
    }
    Ok(known)
}

/// Splits the messages to copy into batches bounded in count and bytes.
fn batches(to_copy: &[&Listed]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut i = 0;
    while i < to_copy.len() {
        let mut j = i;
        let mut bytes = 0u64;
        while j < to_copy.len()
            && j - i < BATCH_MESSAGES
            && (j == i || bytes + u64::from(to_copy[j].size) <= BATCH_BYTES)
        {
            bytes += u64::from(to_copy[j].size);
            j += 1;
        }
        out.push(to_copy[i..j].iter().map(|m| m.uid).collect());
        i = j;
    }
    out
}

/// Flags: the source's, as far as the destination stores them.
async fn push_flags(
    c: &mut Pair2,
    folder: &FolderCtx<'_>,
    st: &FolderState,
    perm: &BTreeSet<String>,
    any_keyword: bool,
    report: &mut FolderReport,
) -> Result<(), Error> {
    let mut stores = Vec::new();
    for (s, d) in &st.map {
        let (Some(sm), Some(dm)) = (folder.src_by_uid.get(s), folder.dst_by_uid.get(d)) else {
            continue;
        };
        let (want, refused) = storable(&sm.flags, perm, any_keyword);
        report.refused_flags.extend(refused);
        let have: BTreeSet<String> = dm
            .flags
            .iter()
            .filter(|f| perm.contains(*f) || (!f.starts_with('\\') && any_keyword))
            .cloned()
            .collect();
        if want != have {
            stores
                .push(c.dst.queue(
                    format!("UID STORE {d} FLAGS.SILENT ({})", flag_list(&want)).as_bytes(),
                ));
        }
    }
    if !stores.is_empty() {
        c.dst.flush().await?;
        for tag in &stores {
            let _ = c.dst.reply(tag).await?;
        }
        report.flags_updated = stores.len() as u64;
    }
    Ok(())
}
