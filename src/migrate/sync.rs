//! One incremental pass of one user's mailbox, folder by folder.
//!
//! A pass ([`Engine::pass`]):
//! ```text
//!  connect one pair ─► LIST both sides ─► STATUS every folder, both sides, pipelined
//!      │                                   (and every folder's state: one read)
//!      ├─ unchanged since the last pass (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) ─► skip
//!      └─ changed: largest first, over up to `connections` pairs ─► sync_folder
//!  meanwhile: Sieve scripts over ManageSieve
//! ```
//! A changed folder ([`Engine::sync_folder`]), phase by phase:
//! ```text
//!  plan       EXAMINE+list source ║ SELECT+list destination   (plan.rs)
//!  expunges   expunged on the source: delete our copies (capped)   (expunge.rs)
//!  recognise  unmapped destination messages matched by fingerprint,
//!             batches in flight at a crash waited for              (recognise.rs)
//!  copy       FETCH batch k+1 ║ APPEND batch k, APPENDUID into the map  (copy.rs)
//!  flags      STORE what differs ─► STATUS ─► save the folder's state  (flags.rs)
//! ```
//! The source is only ever EXAMINEd and read with BODY.PEEK: never modified.
//! After a cutover, [`Engine::sweep`] (sweep.rs) moves what still reached the
//! old store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::folders::{self, Pair, Rules};
use super::message::Listed;
use super::state::{Failed, FolderState, StateStore};
use super::{Error, Reporter};
use crate::metrics::METRICS;
use crate::store::imap::{Client, Credentials};
use crate::store::{Store, StoreError};

mod copy;
mod expunge;
mod flags;
mod plan;
mod recognise;
mod sweep;

pub use copy::Pacer;
use plan::{Opened, Selected, StatusFacts};

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
    /// The old store's POP3 UIDLs (when read over POP3).
    pub pop3_uidls: super::pop3_uidls::Pop3UidlReport,
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

/// A store without a master user takes the given password, else the one
/// its `passwords_file` lists for the user (read here: admins add users
/// without a reload).
pub(super) fn listed_password(
    b: &Store,
    user: &str,
    password: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, Error> {
    match (&b.cfg.master, password) {
        (None, None) => b
            .listed_password(user)
            .map_err(|e| Error::Unsupported(format!("{}.passwords_file: {e}", b.name()))),
        _ => Ok(None),
    }
}

/// How the engine logs in to `b` as `user`: the master user where the
/// store has one, else the password.
pub(super) fn credentials<'a>(
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
    /// Passes read the source's POP3 UIDLs ([`super::pop3_uidls`]): a
    /// forward move keeping UIDs from a store with `pop3` and no
    /// `pop3_uidl_format`.
    pub reads_pop3_uidls: bool,
}

/// A source/destination connection pair.
pub struct Pair2 {
    /// Holds one of the engine's connection slots while open.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Source connection.
    pub src: Client,
    /// Destination connection.
    pub dst: Client,
    /// The destination's APPENDLIMIT, once asked.
    append_limit: Option<Option<u64>>,
}

impl Pair2 {
    /// The destination's APPENDLIMIT (asked once per connection).
    async fn append_limit(&mut self) -> Result<Option<u64>, StoreError> {
        if let Some(limit) = self.append_limit {
            return Ok(limit);
        }
        let limit = folders::append_limit(&mut self.dst).await?;
        self.append_limit = Some(limit);
        Ok(limit)
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
        let (from, to) = (backend(from)?, backend(to)?);
        Ok(Engine {
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
            // A rollback's source is the new store, whose UIDLs no client
            // saw: the maps carry the old ones back.
            reads_pop3_uidls: !reverse && m.keep_uids && from.cfg.reads_pop3_uidls(),
            from,
            to,
        })
    }

    /// Connects one pair as the user (master user where configured, else the
    /// given password).
    pub async fn connect(&self, user: &str, password: Option<&[u8]>) -> Result<Pair2, Error> {
        let (from_listed, to_listed) = (
            listed_password(&self.from, user, password)?,
            listed_password(&self.to, user, password)?,
        );
        let (sc, dc) = (
            credentials(&self.from, user, password.or(from_listed.as_deref()))?,
            credentials(&self.to, user, password.or(to_listed.as_deref()))?,
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
            append_limit: None,
        })
    }

    /// Lists both sides and plans the folder pairs.
    pub async fn plan(&self, pair: &mut Pair2) -> Result<Vec<Pair>, Error> {
        let (src, dst) = tokio::join!(folders::list(&mut pair.src), folders::list(&mut pair.dst));
        let ((src, src_ns), (dst, dst_ns)) = (src?, dst?);
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

    /// The span of one migration step of `user` (`kind`: pass, final,
    /// sweep, cutover, rollback): the engine's events inside it carry the user
    /// and both stores without repeating them. Inside a migration span
    /// already (a cutover's passes), only the kind is added.
    pub fn span(&self, user: &str, kind: &'static str) -> tracing::Span {
        let current = tracing::Span::current();
        if current
            .metadata()
            .is_some_and(|m| m.name() == MIGRATION_SPAN)
        {
            return tracing::info_span!("step", kind);
        }
        tracing::info_span!(
            MIGRATION_SPAN,
            user = %user,
            from = self.from.name(),
            to = self.to.name(),
            kind
        )
    }

    async fn pass_with(
        self: &Arc<Self>,
        user: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
        paced: bool,
    ) -> Result<PassReport, Error> {
        let span = self.span(user, if paced { "pass" } else { "final" });
        let started = Instant::now();
        let password = password.map(|p| Arc::new(p.to_vec()));
        // Sieve scripts travel over their own connections, meanwhile; dropped
        // (aborted) with the pass if it fails. They write only once the
        // folders are done (see `sieve`'s docs: a store's lock deadlock).
        let mut sieve = tokio::task::JoinSet::new();
        let (folders_done, writes_after) = tokio::sync::oneshot::channel();
        {
            let (from, to) = (Arc::clone(&self.from), Arc::clone(&self.to));
            let (user, password) = (user.to_string(), password.clone());
            let dry_run = self.opts.dry_run;
            sieve.spawn(
                async move {
                    let password = password.as_deref().map(|p| p.as_slice());
                    super::sieve::copy(&from, &to, &user, password, dry_run, writes_after).await
                }
                .instrument(span.clone()),
            );
        }
        // The old store's POP3 UIDLs after the folders: ties are for copies,
        // and the old store sees no more of the user's sessions at once.
        let reads_uidls = self.reads_pop3_uidls && !self.opts.dry_run;
        let (result, pop3_uidls) = async {
            let result = self
                .pass_folders(user, password.clone(), reporter, paced)
                .await;
            let _ = folders_done.send(());
            if !reads_uidls || result.is_err() {
                return (result, Default::default());
            }
            let password = password.as_deref().map(|p| p.as_slice());
            let in_hold = !paced;
            (
                result,
                super::pop3_uidls::after_folders(self, user, password, in_hold).await,
            )
        }
        .instrument(span.clone())
        .await;
        self.state.close(user);
        let mut report = result?;
        report.pop3_uidls = pop3_uidls;
        report.sieve = match sieve.join_next().await {
            Some(Ok(sieve)) => sieve,
            Some(Err(e)) => super::sieve::SieveReport {
                enabled: true,
                error: Some(format!("Sieve copy failed: {e}")),
                ..Default::default()
            },
            None => Default::default(),
        };
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

    /// The folders of a pass: one STATUS round trip a side tells which
    /// changed; only those are synced, over as many connection pairs as help.
    async fn pass_folders(
        self: &Arc<Self>,
        user: &str,
        password: Option<Arc<Vec<u8>>>,
        reporter: Arc<dyn Reporter>,
        paced: bool,
    ) -> Result<PassReport, Error> {
        let mut first = self
            .connect(user, password.as_deref().map(|p| p.as_slice()))
            .await?;
        let plan = self.plan(&mut first).await?;
        let src_names: Vec<Option<&[u8]>> =
            plan.iter().map(|p| Some(p.src.name.as_slice())).collect();
        let dst_names: Vec<Option<&[u8]>> = plan
            .iter()
            .map(|p| (!p.create).then_some(p.dst.as_slice()))
            .collect();
        let (states, src_status, dst_status) = tokio::join!(
            self.state.folders_async(user),
            plan::statuses(&mut first.src, &src_names),
            plan::statuses(&mut first.dst, &dst_names),
        );
        let (states, src_status, dst_status) = (states?, src_status?, dst_status?);
        let mut report = PassReport {
            user: user.to_string(),
            ..PassReport::default()
        };
        let mut changed = Vec::new();
        let mut to_copy = 0u64;
        for ((p, s), d) in plan.into_iter().zip(src_status).zip(dst_status) {
            let st = states.get(&p.src.display()).cloned().unwrap_or_default();
            match plan::unchanged(&p, &st, s, d) {
                Some(messages) => report.folders.push(FolderReport {
                    folder: p.src.display(),
                    dest: String::from_utf8_lossy(&p.dst).into_owned(),
                    unchanged: true,
                    source_messages: messages,
                    ..FolderReport::default()
                }),
                None => {
                    // New since the last pass, as UIDNEXT says (all of a
                    // folder never synced or whose UIDVALIDITY changed).
                    let new = match s {
                        Some(s) if s.validity == st.src_validity && st.src_uidnext > 0 => {
                            s.uidnext.saturating_sub(st.src_uidnext)
                        }
                        Some(s) => s.messages,
                        None => 0,
                    };
                    to_copy += u64::from(new);
                    changed.push((p, s.map_or(0, |s: StatusFacts| s.messages)));
                }
            }
        }
        // Largest folders first: one folder is copied over one connection pair
        // (to keep source UID order), so the biggest one bounds the pass and
        // must not start last.
        changed.sort_by_key(|(_, messages)| std::cmp::Reverse(*messages));
        let changed: Vec<Pair> = changed.into_iter().map(|(p, _)| p).collect();
        if let Err(why) = folders::check_quota(&mut first.src, &mut first.dst, &changed).await? {
            return Err(Error::Capacity(format!("{user}: {why}")));
        }
        // Parents before children: a name sorts before every name it prefixes.
        if !self.opts.dry_run {
            let mut missing: Vec<(&[u8], Option<&str>)> = changed
                .iter()
                .filter(|p| p.create)
                .map(|p| (p.dst.as_slice(), p.create_special.as_deref()))
                .collect();
            missing.sort_unstable();
            for (name, special) in missing {
                // Refusals are reported per folder when it is synced.
                let _ = plan::create_folder(&mut first.dst, name, special).await?;
            }
        }
        reporter.event(super::Event::Planned {
            user: user.to_string(),
            folders: report.folders.len() + changed.len(),
        });
        // No more connection pairs than changed folders (a pass where
        // nothing changed opens none beyond the first), nor than the new mail
        // is worth: another pair costs each store a login (a process spawned,
        // on Dovecot) that a few hundred messages do not pay back.
        let worth = usize::try_from(to_copy / MESSAGES_PER_EXTRA_PAIR)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let workers = self.opts.connections.max(1).min(changed.len()).min(worth);
        if workers == 0 {
            hang_up(first);
            report.folders.sort_by(|a, b| a.folder.cmp(&b.folder));
            return Ok(report);
        }
        let queue = Arc::new(tokio::sync::Mutex::new(
            changed
                .into_iter()
                .collect::<std::collections::VecDeque<_>>(),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        let mut first = Some(first);
        for _ in 0..workers {
            let engine = Arc::clone(self);
            let queue = Arc::clone(&queue);
            let reporter = Arc::clone(&reporter);
            let user = user.to_string();
            let password = password.clone();
            let pair = first.take();
            tasks.spawn(
                async move {
                    engine
                        .folder_worker(&user, password, pair, &queue, &*reporter, paced)
                        .await
                }
                .in_current_span(),
            );
        }
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
        Ok(report)
    }

    /// Takes folders off the queue until it is empty, over one connection
    /// pair (reconnected after store trouble; a folder is retried three times).
    async fn folder_worker(
        &self,
        user: &str,
        password: Option<Arc<Vec<u8>>>,
        mut conn: Option<Pair2>,
        queue: &tokio::sync::Mutex<std::collections::VecDeque<Pair>>,
        reporter: &dyn Reporter,
        paced: bool,
    ) -> (Vec<FolderReport>, Vec<String>) {
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        loop {
            let Some(folder) = queue.lock().await.pop_front() else {
                break;
            };
            let mut attempt = 0;
            loop {
                if conn.is_none() {
                    match self
                        .connect(user, password.as_deref().map(|p| p.as_slice()))
                        .await
                    {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            errors.push(format!("{}: {e}", folder.src.display()));
                            break;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { break };
                match self.sync_folder(user, c, &folder, reporter, paced).await {
                    Ok(r) => {
                        reports.push(r);
                        break;
                    }
                    Err(e) if e.is_temporary() && attempt < 3 => {
                        attempt += 1;
                        conn = None;
                        let wait = Duration::from_millis(500 << attempt);
                        tracing::warn!(folder = %folder.src.display(), error = %e, retry_in_ms = wait.as_millis() as u64, "store trouble; retrying folder");
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
            hang_up(c);
        }
        (reports, errors)
    }

    /// Syncs one folder pair that changed, phase by phase (see the module
    /// doc): plan, expunge mirror, fingerprint match, copy, flags.
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
        let (st, src, dst) = self.open_folder(user, c, pair, &report.dest).await?;
        report.source_messages = src.listed.len();
        let Some(dst) = dst else {
            // A dry run of a folder still to create: all of it would be copied.
            report.copied = src.listed.len() as u64;
            report.bytes = src.listed.iter().map(|m| u64::from(m.size)).sum();
            return Ok(report);
        };
        let mut st = self.check_validity(&key, st, &src.sel, &dst.sel);
        let src_by_uid: HashMap<u32, &Listed> = src.listed.iter().map(|m| (m.uid, m)).collect();
        let dst_by_uid: HashMap<u32, &Listed> = dst.listed.iter().map(|m| (m.uid, m)).collect();
        // A copy the user deleted on the destination is copied again.
        st.map.retain(|_, d| dst_by_uid.contains_key(d));
        st.foreign.retain(|d| dst_by_uid.contains_key(d));
        let folder = FolderCtx {
            user,
            key: &key,
            dst_name: &pair.dst,
            src_by_uid: &src_by_uid,
            dst_by_uid: &dst_by_uid,
            paced,
        };

        self.mirror_expunges(&folder, c, &mut st, &mut report)
            .await?;
        let mut to_copy: Vec<&Listed> = src
            .listed
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
        self.copy_messages(&folder, c, &to_copy, &dst, &mut st, &mut report, reporter)
            .await?;
        let stores = flags::queue_flag_changes(&mut c.dst, &folder, &st, &dst, &mut report);
        self.close_folder(&folder, c, st, stores, &src.sel, &report)
            .await?;
        Ok(report)
    }

    /// Reads the folder's state and opens both sides at once: the source
    /// EXAMINEd and listed, the destination created where planned, SELECTed
    /// and listed (`None`: a dry run of a folder still to create).
    async fn open_folder(
        &self,
        user: &str,
        c: &mut Pair2,
        pair: &Pair,
        shown: &str,
    ) -> Result<(FolderState, Opened, Option<Opened>), Error> {
        let dry_run = self.opts.dry_run;
        let key = pair.src.display();
        let (st, src, dst) = tokio::join!(
            self.state.load_async(user, &key),
            plan::open_source(&mut c.src, pair),
            async {
                if dry_run && pair.create {
                    return Ok(None);
                }
                if !dry_run {
                    plan::create_destination(&mut c.dst, pair).await?;
                }
                let subscribe = !dry_run && pair.src.subscribed;
                plan::open_destination(&mut c.dst, pair, subscribe, shown)
                    .await
                    .map(Some)
            }
        );
        Ok((st?, src?, dst?))
    }

    /// The state as far as it still holds: a changed UIDVALIDITY on either
    /// side voids the map (the folder is matched again by fingerprint).
    fn check_validity(
        &self,
        key: &str,
        mut st: FolderState,
        src: &Selected,
        dst: &Selected,
    ) -> FolderState {
        if st.src_validity != src.validity || st.dst_validity != dst.validity {
            if st.src_validity != 0 {
                tracing::warn!(folder = %key, "UIDVALIDITY changed; matching this folder again by fingerprint");
            }
            st.reset(src.validity, dst.validity);
        }
        st
    }

    /// Ends a folder: the queued flag changes and a STATUS written together,
    /// then where both sides stood is saved for the next pass's check.
    async fn close_folder(
        &self,
        folder: &FolderCtx<'_>,
        c: &mut Pair2,
        mut st: FolderState,
        stores: Vec<String>,
        src: &Selected,
        report: &FolderReport,
    ) -> Result<(), Error> {
        let status = plan::queue_status(&mut c.dst, folder.dst_name);
        c.dst.flush().await?;
        for tag in &stores {
            let _ = c.dst.reply(tag).await?;
        }
        let dst = plan::status_facts(&c.dst.reply(&status).await?);
        st.failed = report.failed.clone();
        st.src_uidnext = src.uidnext;
        // Work left over (held-back deletions, copies that may still land)
        // must not look like "unchanged".
        st.src_modseq = if report.deletions_held_back > 0 || !st.ghosts.is_empty() {
            0
        } else {
            src.modseq
        };
        if let Some(d) = dst {
            st.dst_modseq = d.modseq;
        }
        self.state.save(folder.user, folder.key, &st).await?;
        Ok(())
    }
}

/// New messages (by UIDNEXT) that make one more connection pair worth its
/// logins in a pass: below it the folders share the pairs already open.
/// Measured on the lab (`cargo bench --bench migrate -- --quick`): a +1 %
/// pass (5 new messages in 5 folders) took 0.064 s over four pairs and
/// 0.039 s over one; a pair copies some 500 messages a second, so a couple
/// of dozen new messages already pay for its logins.
const MESSAGES_PER_EXTRA_PAIR: u64 = 25;

/// Logs a pair out without the pass waiting for the stores' goodbyes (one
/// round trip each); the connection slot is held until they are said.
fn hang_up(c: Pair2) {
    tokio::spawn(
        async move {
            tokio::join!(c.src.logout(), c.dst.logout());
        }
        .in_current_span(),
    );
}

/// The name of a migration's span (see [`Engine::span`]).
const MIGRATION_SPAN: &str = "migration";

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
    /// The destination folder's wire name.
    dst_name: &'a [u8],
    src_by_uid: &'a HashMap<u32, &'a Listed>,
    dst_by_uid: &'a HashMap<u32, &'a Listed>,
    /// Copies count against `max_bytes_per_second` (not in the final pass).
    paced: bool,
}

use super::folders::ok as refused;
