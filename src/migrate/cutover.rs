//! Cutover: moving one user from the old store to the new one in seconds.
//!
//! ```text
//!  claim lease (CAS) ─► syncing: presync passes until the delta is small
//!    ─► hold (CAS mailUserStatus → hold): every proxy following LDAP kicks the
//!       user's sessions; new logins and RCPTs wait
//!    ─► final delta pass (complete = verified: every source message mapped)
//!    ─► flip (CAS mailHost old → new, hold → active, state done): held logins go on
//!  any failure before the flip ─► hold undone, state failed + error, user stays on old
//! ```
//!
//! Every change is a compare-and-swap modify (delete the old value, add the new
//! one, in one operation), so two instances sharing one LDAP never both work on
//! the same user; a lease that expired (its instance died) is taken over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::sync::{Engine, PassReport};
use super::{Error, Reporter};
use crate::config::{Config, LdapConfig};
use crate::directory::ldap::{LdapDirectory, Mod};
use crate::directory::schema::{self, ERROR, FROM, LEASE, STATE, TO, UPDATED};
use crate::metrics::METRICS;

/// Presync passes before holding, at most.
const MAX_PRESYNCS: usize = 5;
/// A delta this small is copied inside the hold.
const SMALL_DELTA: u64 = 200;
/// Time for kicked sessions to finish the commands they have in flight.
const KICK_GRACE: Duration = Duration::from_millis(300);

/// What an interrupted move's error says, so callers can tell a shutdown
/// from a failure.
pub const STOPPED: &str = "stopped: mailshift is shutting down";

/// How a cutover went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CutoverReport {
    /// The user.
    pub user: String,
    /// Presync passes run.
    pub presyncs: Vec<PassReport>,
    /// The pass inside the hold.
    pub final_pass: Option<PassReport>,
    /// Seconds from hold to release.
    pub hold_seconds: f64,
    /// Where the user is now.
    pub mailhost: String,
    /// The UID maps written for the user's clients (`[migration] keep_uids`).
    pub uid_maps: Option<super::uid_maps::Written>,
}

/// A user's entry as cutover sees it.
#[derive(Debug, Clone)]
struct Entry {
    login: String,
    dn: String,
    mailhost: Option<String>,
    status: Option<String>,
    state: Option<String>,
    lease: Option<String>,
    /// `mailshiftUidMap`: where the maps the clients see now live.
    uid_map: Option<String>,
    has_class: bool,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// GeneralizedTime, UTC: `20261201183512Z`.
fn generalized_time() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%SZ").to_string()
}

/// `instance-id until-unix-time` → (owner, until); a malformed lease counts as expired.
fn parse_lease(lease: Option<&str>) -> (String, u64) {
    let mut parts = lease.unwrap_or("").split(' ');
    let owner = parts.next().unwrap_or("").to_string();
    let until = parts
        .next()
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0);
    (owner, until)
}

fn set(v: &str) -> HashSet<String> {
    HashSet::from([v.to_string()])
}

/// `attr: old → new` as a compare-and-swap: fails unless `old` is the value now.
fn cas(mods: &mut Vec<Mod<String>>, attr: &str, old: Option<&str>, new: Option<&str>) {
    if old == new {
        return;
    }
    if let Some(old) = old {
        mods.push(Mod::Delete(attr.to_string(), set(old)));
    }
    if let Some(new) = new {
        mods.push(Mod::Add(attr.to_string(), set(new)));
    }
}

/// Cutover and rollback of users between the `[migration]` stores.
pub struct Mover {
    /// old → new.
    pub forward: Arc<Engine>,
    /// new → old (rollback), with its own state file.
    pub backward: Arc<Engine>,
    ldap: Arc<LdapDirectory>,
    attrs: LdapConfig,
    from_hosts: Vec<String>,
    to_hosts: Vec<String>,
    instance: String,
    lease: Duration,
    /// `[migration] keep_uids`: write UID maps at cutover.
    keep_uids: bool,
    /// Cancelled at shutdown: presyncs stop, a final pass gets part of the grace.
    stop: CancellationToken,
    grace: Duration,
    /// Per-user event lists and reports live here.
    state_dir: std::path::PathBuf,
    events: crate::events::EventLog,
    /// Logins whose entry this mover changed, for the process's own directory
    /// cache: without a directory that reports changes (syncprov), the
    /// instance that sets a hold or flips `mailHost` must not wait for its
    /// cache TTL to see it.
    changed: tokio::sync::broadcast::Sender<String>,
}

/// What [`Mover::resolve_hold`] did with a hold left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The final pass completed and the user was flipped to the target.
    Finished(String),
    /// The hold was undone; the user stays where it was (with the reason).
    Undone(String),
}

impl Mover {
    /// Builds both engines and the LDAP writer from the config.
    pub fn from_config(cfg: &Config, ldap: Arc<LdapDirectory>) -> Result<Mover, Error> {
        let m = cfg
            .migration
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the config has no [migration] table".into()))?;
        let hosts = |name: &str| {
            cfg.backend_named(name)
                .map(|b| b.mailhosts.clone())
                .unwrap_or_default()
        };
        Ok(Mover {
            forward: Arc::new(Engine::from_config(cfg)?),
            backward: Arc::new(Engine::reversed(cfg)?),
            attrs: ldap.config().clone(),
            ldap,
            from_hosts: hosts(&m.from),
            to_hosts: hosts(&m.to),
            instance: m.instance_id.clone(),
            lease: m.lease,
            keep_uids: m.keep_uids,
            stop: CancellationToken::new(),
            grace: cfg.shutdown_grace,
            state_dir: m.state_dir.clone(),
            events: crate::events::EventLog::new(&m.state_dir, &m.instance_id),
            changed: tokio::sync::broadcast::channel(256).0,
        })
    }

    /// Logins whose directory entry this mover has just changed (hold, flip,
    /// undo, rollback).
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Makes moves honour `stop`: a presync is abandoned at once, a final pass
    /// inside the hold gets half of `grace` to complete (then the hold is
    /// undone), so the user is active again before the process exits.
    pub fn stop_on(&mut self, stop: CancellationToken, grace: Duration) {
        self.stop = stop;
        self.grace = grace;
    }

    /// The per-user event lists this mover writes.
    pub fn events(&self) -> &crate::events::EventLog {
        &self.events
    }

    /// This instance's name in leases.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Users mailshift put in hold (status hold and state cutover), with the
    /// owner of their lease and whether it expired more than `margin` ago (a
    /// live owner renews every third of the lease; the margin absorbs a slow
    /// renewal, so a working move is not taken over).
    pub async fn holds(&self, margin: Duration) -> Result<Vec<(String, String, bool)>, Error> {
        let filter = format!(
            "(&({}=hold)({STATE}=cutover))",
            ldap3::ldap_escape(&self.attrs.status_attribute)
        );
        let users = self
            .ldap
            .logins(&filter)
            .await
            .map_err(|e| Error::Directory(e.to_string()))?;
        let mut out = Vec::new();
        for user in users {
            let e = self.entry(&user).await?;
            let (owner, until) = parse_lease(e.lease.as_deref());
            out.push((user, owner, until + margin.as_secs() <= now_unix()));
        }
        Ok(out)
    }

    /// Resolves a hold whose owner is gone (lease expired, or ours from before
    /// a restart): claims the lease by compare-and-swap, then finishes the
    /// cutover when the final pass completes, or undoes the hold.
    pub async fn resolve_hold(&self, user: &str) -> Result<Resolved, Error> {
        let span = self.forward.span(user, "resolve");
        self.resolve_hold_in_span(user).instrument(span).await
    }

    async fn resolve_hold_in_span(&self, user: &str) -> Result<Resolved, Error> {
        let mut e = self.entry(user).await?;
        let held = e
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("hold"))
            && e.state.as_deref() == Some("cutover");
        if !held {
            return Err(Error::Conflict(format!("{user} is not in a cutover hold")));
        }
        self.claim(&mut e).await?;
        let on = |hosts: &[String]| {
            e.mailhost
                .as_deref()
                .is_some_and(|h| hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
        };
        // A hold on the old store is a cutover, on the new one a rollback.
        let direction = if on(&self.from_hosts) {
            Some((&self.forward, &self.to_hosts, "done"))
        } else if on(&self.to_hosts) {
            Some((&self.backward, &self.from_hosts, "rolled-back"))
        } else {
            None
        };
        let target = direction.and_then(|(_, hosts, _)| hosts.first().cloned());
        let lease = Arc::new(std::sync::Mutex::new(e.lease.clone()));
        let result = match (direction, target) {
            (Some((engine, _, _)), Some(target)) => {
                let mut report = CutoverReport {
                    user: user.to_string(),
                    ..CutoverReport::default()
                };
                tokio::select! {
                    r = self.final_and_flip(&mut e, user, engine, &target, None, Arc::new(super::Quiet), &mut report, None, Instant::now()) => r,
                    lost = self.renew_lease(user, Arc::clone(&lease)) => Err(lost),
                }
                .map(|()| target)
            }
            _ => Err(Error::Unsupported(format!(
                "{user} is in hold on mailHost {:?}, which is neither side of [migration]",
                e.mailhost
            ))),
        };
        e.lease = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let out = match result {
            Ok(target) => {
                let done = direction.map(|d| d.2).unwrap_or("done");
                let _ = self.record(&e, done, None).await;
                self.events.record(
                    user,
                    done,
                    serde_json::json!({"resolved_hold": true, "mailhost": target}),
                );
                Resolved::Finished(target)
            }
            Err(err) => {
                // final_and_flip undoes its own hold on failure; this covers
                // what it never reached (lease lost, unknown mailHost).
                self.undo_if_held(user).await;
                let why = format!("left in hold by a stopped instance; undone: {err}");
                let _ = self.record(&e, "failed", Some(&why)).await;
                self.events
                    .record(user, "failed", serde_json::json!({"error": why}));
                Resolved::Undone(err.to_string())
            }
        };
        self.release(&e).await;
        Ok(out)
    }

    /// Sets the user active again if mailshift's hold is still on.
    async fn undo_if_held(&self, user: &str) {
        let Ok(now) = self.entry(user).await else {
            tracing::error!("could not read the entry to undo the hold; the lease expiry will let another instance resolve it");
            return;
        };
        let held = now
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("hold"))
            && now.state.as_deref() == Some("cutover");
        if held {
            let mut mods = Vec::new();
            cas(
                &mut mods,
                &self.attrs.status_attribute,
                Some("hold"),
                Some("active"),
            );
            if let Err(undo) = self.apply(&now, mods, "undo hold").await {
                tracing::error!(error = %undo, "could not undo the hold; the lease expiry will let another instance resolve it");
            }
        }
    }

    async fn entry(&self, user: &str) -> Result<Entry, Error> {
        let want = [
            self.attrs.mailhost_attribute.as_str(),
            self.attrs.status_attribute.as_str(),
            STATE,
            LEASE,
            schema::UID_MAP,
            "objectClass",
        ];
        let (dn, attrs) = self
            .ldap
            .read(user, &want)
            .await
            .map_err(|e| Error::Directory(e.to_string()))?
            .ok_or_else(|| Error::Directory(format!("no directory entry for {user}")))?;
        let first = |a: &str| {
            attrs
                .get(&a.to_ascii_lowercase())
                .and_then(|v| v.first())
                .cloned()
        };
        Ok(Entry {
            login: user.to_string(),
            dn,
            mailhost: first(&self.attrs.mailhost_attribute),
            status: first(&self.attrs.status_attribute),
            state: first(STATE),
            lease: first(LEASE),
            uid_map: first(schema::UID_MAP),
            has_class: attrs
                .get("objectclass")
                .is_some_and(|v| v.iter().any(|c| c.eq_ignore_ascii_case("mailshiftUser"))),
        })
    }

    async fn apply(&self, e: &Entry, mut mods: Vec<Mod<String>>, what: &str) -> Result<(), Error> {
        if !e.has_class {
            mods.insert(0, Mod::Add("objectClass".into(), set("mailshiftUser")));
        }
        match self.ldap.modify(&e.dn, mods).await {
            Ok(true) => {
                // Nobody listening (the CLI) is fine.
                let _ = self.changed.send(e.login.clone());
                Ok(())
            }
            Ok(false) => Err(Error::Conflict(format!(
                "{what}: {} changed under us (another instance or an admin)",
                e.dn
            ))),
            Err(err) => Err(Error::Directory(format!("{what}: {err}"))),
        }
    }

    /// Claims the user for this instance: the lease is free, expired or ours.
    async fn claim(&self, e: &mut Entry) -> Result<(), Error> {
        if e.lease.is_some() {
            let (owner, until) = parse_lease(e.lease.as_deref());
            if owner != self.instance && until > now_unix() {
                return Err(Error::Conflict(format!(
                    "claimed by {owner} until {until} (unix time)"
                )));
            }
        }
        let new = format!("{} {}", self.instance, now_unix() + self.lease.as_secs());
        let mut mods = Vec::new();
        cas(&mut mods, LEASE, e.lease.as_deref(), Some(&new));
        self.apply(e, mods, "claim").await?;
        e.lease = Some(new);
        e.has_class = true;
        Ok(())
    }

    /// Records a state (and error) without any compare: informational.
    async fn record(&self, e: &Entry, state: &str, error: Option<&str>) -> Result<(), Error> {
        let mut mods = vec![
            Mod::Replace(STATE.to_string(), set(state)),
            Mod::Replace(UPDATED.to_string(), set(&generalized_time())),
        ];
        mods.push(match error {
            Some(err) => Mod::Replace(
                ERROR.to_string(),
                set(&err.chars().take(1000).collect::<String>()),
            ),
            None => Mod::Replace(ERROR.to_string(), HashSet::new()),
        });
        self.apply(e, mods, "record state").await
    }

    async fn release(&self, e: &Entry) {
        let mut mods = Vec::new();
        cas(&mut mods, LEASE, e.lease.as_deref(), None);
        if let Err(err) = self.apply(e, mods, "release lease").await {
            tracing::warn!(dn = %e.dn, error = %err, "lease not released; it expires by itself");
        }
    }

    /// Migrates and cuts over one user (old → new). `password` is the user's
    /// own, held in memory only, for stores without a master user (lazy mode).
    pub async fn cutover(
        &self,
        user: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<CutoverReport, Error> {
        let span = self.forward.span(user, "cutover");
        self.switch(user, true, password, reporter)
            .instrument(span)
            .await
    }

    /// Rolls one user back (new → old), copying back what arrived meanwhile.
    pub async fn rollback(
        &self,
        user: &str,
        reporter: Arc<dyn Reporter>,
    ) -> Result<CutoverReport, Error> {
        let span = self.backward.span(user, "rollback");
        self.switch(user, false, None, reporter)
            .instrument(span)
            .await
    }

    async fn switch(
        &self,
        user: &str,
        forward: bool,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<CutoverReport, Error> {
        let (engine, here, there, done) = if forward {
            (&self.forward, &self.from_hosts, &self.to_hosts, "done")
        } else {
            (
                &self.backward,
                &self.to_hosts,
                &self.from_hosts,
                "rolled-back",
            )
        };
        let target = there
            .first()
            .cloned()
            .ok_or_else(|| Error::Unsupported("the target backend lists no mailhost".into()))?;
        if self.stop.is_cancelled() {
            return Err(Error::Incomplete(STOPPED.into()));
        }
        let mut e = self.entry(user).await?;
        let prior = e.state.clone();
        let on = |hosts: &[String], h: &Option<String>| {
            h.as_deref()
                .is_some_and(|h| hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
        };
        let mut report = CutoverReport {
            user: user.to_string(),
            ..CutoverReport::default()
        };
        if on(there, &e.mailhost) {
            report.mailhost = e.mailhost.clone().unwrap_or_default();
            return Ok(report); // already there
        }
        if !on(here, &e.mailhost) {
            return Err(Error::Unsupported(format!(
                "{user} has mailHost {:?}, not one of {here:?}",
                e.mailhost
            )));
        }
        if e.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("hold"))
            && e.state.as_deref() != Some("cutover")
        {
            return Err(Error::Conflict(format!(
                "{user} is on hold by someone else"
            )));
        }
        self.claim(&mut e).await?;
        // The lease is renewed while the move runs; losing it (another
        // instance took over) stops the move at once.
        let lease = Arc::new(std::sync::Mutex::new(e.lease.clone()));
        let result = tokio::select! {
            r = self.move_user(&mut e, user, engine, &target, password, reporter, &mut report) => r,
            lost = self.renew_lease(user, Arc::clone(&lease)) => Err(lost),
        };
        e.lease = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match &result {
            Ok(()) => {
                let _ = self.record(&e, done, None).await;
                let kind = if forward { "flipped" } else { "rolled_back" };
                self.events.record(
                    user,
                    kind,
                    serde_json::json!({"state": done, "mailhost": report.mailhost, "hold_ms": (report.hold_seconds * 1000.0) as u64}),
                );
            }
            Err(err) => {
                // Never leave a user stuck in hold, whatever stopped the move.
                self.undo_if_held(user).await;
                // Interrupted or temporarily failed: the user keeps its state
                // (a queued user stays queued for the retry), with the cause.
                let text = err.to_string();
                let again =
                    text == STOPPED || matches!(err, Error::Directory(_)) || err.is_temporary();
                let state = match (again, prior.as_deref()) {
                    (true, Some(p)) if p != "syncing" && p != "cutover" => p,
                    _ => "failed",
                };
                let _ = self.record(&e, state, Some(&text)).await;
                self.events.record(
                    user,
                    "failed",
                    serde_json::json!({"state": state, "error": text}),
                );
            }
        }
        self.release(&e).await;
        // The report is a record, not part of the move: a shutdown skips it
        // rather than spend the grace on it.
        if result.is_ok() && forward && !self.stop.is_cancelled() {
            tokio::select! {
                () = self.keep_report(user, &report) => {}
                () = self.stop.cancelled() => {}
            }
        }
        result.map(|()| report)
    }

    /// The report after a cutover, kept under `state_dir/reports/`: a
    /// verification of its own, so the report proves what the pass claimed.
    async fn keep_report(&self, user: &str, report: &CutoverReport) {
        match super::report::UserReport::build(&self.forward, user, "cutover").await {
            Ok(mut r) => {
                r.hold_seconds = Some(report.hold_seconds);
                r.mailhost = Some(report.mailhost.clone());
                if let Err(e) = r.keep(&self.state_dir) {
                    tracing::warn!(error = %e, "report not written");
                }
            }
            Err(e) => tracing::warn!(error = %e, "no report after the cutover"),
        }
    }

    /// Renews the lease every third of its length; returns only when it could
    /// not (lost to another instance, or LDAP failed).
    async fn renew_lease(&self, user: &str, cell: Arc<std::sync::Mutex<Option<String>>>) -> Error {
        let every = (self.lease / 3).max(Duration::from_millis(500));
        loop {
            tokio::time::sleep(every).await;
            let ours = cell.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let e = match self.entry(user).await {
                Ok(e) => e,
                // A directory blip is no reason to abandon the move while the
                // lease still holds; past it, another instance may take over.
                Err(err) if parse_lease(ours.as_deref()).1 > now_unix() + 1 => {
                    tracing::warn!(error = %err, "lease renewal failed; retrying");
                    continue;
                }
                Err(err) => return err,
            };
            let fresh = format!("{} {}", self.instance, now_unix() + self.lease.as_secs());
            let mut mods = Vec::new();
            cas(&mut mods, LEASE, ours.as_deref(), Some(&fresh));
            if let Err(err) = self.apply(&e, mods, "renew lease").await {
                return Error::Conflict(format!("lease lost: {err}"));
            }
            *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        }
    }

    // One call site; a struct for these would only rename the arguments.
    #[allow(clippy::too_many_arguments)]
    async fn move_user(
        &self,
        e: &mut Entry,
        user: &str,
        engine: &Arc<Engine>,
        target: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
        report: &mut CutoverReport,
    ) -> Result<(), Error> {
        self.record(e, "syncing", None).await?;
        for n in 0..MAX_PRESYNCS {
            self.events
                .record(user, "pass_started", serde_json::json!({"pass": n + 1}));
            let publisher =
                crate::fleet::Publisher::new(Arc::clone(&self.ldap), &e.dn, Arc::clone(&reporter));
            let pass = tokio::select! {
                p = engine.pass(user, password, publisher.clone()) => p?,
                _ = self.stop.cancelled() => return Err(Error::Incomplete(STOPPED.into())),
            };
            publisher.flush().await;
            let (complete, copied) = (pass.complete(), pass.copied());
            self.events.record(
                user,
                "pass_ended",
                serde_json::json!({"pass": n + 1, "copied": copied, "bytes": pass.bytes(), "failed": pass.failed(), "complete": complete, "seconds": pass.seconds}),
            );
            let errors = pass.errors.join("; ");
            report.presyncs.push(pass);
            if !complete {
                return Err(Error::Incomplete(format!("presync: {errors}")));
            }
            if copied < SMALL_DELTA {
                break;
            }
        }
        if self.stop.is_cancelled() {
            return Err(Error::Incomplete(STOPPED.into()));
        }
        // Hold: compare-and-swap from what the status is now.
        let before = e.status.clone();
        let mut mods = Vec::new();
        cas(
            &mut mods,
            &self.attrs.status_attribute,
            before.as_deref(),
            Some("hold"),
        );
        mods.push(Mod::Replace(STATE.to_string(), set("cutover")));
        self.apply(e, mods, "hold").await?;
        let held = Instant::now();
        // The proxies close the user's sessions as they see the hold, letting
        // commands in flight finish (an APPEND's OK still reaches its client).
        // Give that a moment so the final pass sees what those commands stored;
        // anything later still reaching the old INBOX is for the sweep.
        tokio::time::sleep(KICK_GRACE).await;
        self.events.record(user, "hold_set", serde_json::json!({}));
        self.final_and_flip(
            e,
            user,
            engine,
            target,
            password,
            reporter,
            report,
            before.as_deref(),
            held,
        )
        .await
    }

    /// Inside the hold: the final pass, then the flip; the hold undone when
    /// the pass does not complete (or shutdown leaves it no time).
    // Shared by a normal cutover and the recovery of a hold left behind.
    #[allow(clippy::too_many_arguments)]
    async fn final_and_flip(
        &self,
        e: &mut Entry,
        user: &str,
        engine: &Arc<Engine>,
        target: &str,
        password: Option<&[u8]>,
        reporter: Arc<dyn Reporter>,
        report: &mut CutoverReport,
        before: Option<&str>,
        held: Instant,
    ) -> Result<(), Error> {
        let stopping = async {
            self.stop.cancelled().await;
            // Half the grace for the pass, the rest for undoing the hold.
            tokio::time::sleep(self.grace / 2).await;
        };
        let fin = tokio::select! {
            r = engine.final_pass(user, password, reporter) => r,
            _ = stopping => Err(Error::Incomplete(STOPPED.into())),
        };
        let fin = match fin {
            Ok(p) if p.complete() => p,
            other => {
                let why = match other {
                    Ok(p) => format!("final pass incomplete: {}", p.errors.join("; ")),
                    Err(err) => err.to_string(),
                };
                // Never leave a user stuck in hold.
                let mut mods = Vec::new();
                cas(
                    &mut mods,
                    &self.attrs.status_attribute,
                    Some("hold"),
                    before.or(Some("active")),
                );
                if let Err(undo) = self.apply(e, mods, "undo hold").await {
                    tracing::error!(error = %undo, "could not undo the hold; set mailUserStatus back by hand");
                }
                return Err(Error::Incomplete(why));
            }
        };
        report.final_pass = Some(fin);
        // The clients' UIDs, written into the target before it goes live.
        let uid_map = match self
            .write_maps(e, user, engine, target, password, report)
            .await
        {
            Ok(v) => v,
            Err(why) => {
                let mut mods = Vec::new();
                cas(
                    &mut mods,
                    &self.attrs.status_attribute,
                    Some("hold"),
                    before.or(Some("active")),
                );
                if let Err(undo) = self.apply(e, mods, "undo hold").await {
                    tracing::error!(error = %undo, "could not undo the hold; set mailUserStatus back by hand");
                }
                return Err(why);
            }
        };
        // Flip: route and status in one compare-and-swap (and where the
        // clients' UID maps are, so no session sees the target untranslated).
        let mut mods = Vec::new();
        if uid_map.is_some() || e.uid_map.is_some() {
            mods.push(Mod::Replace(
                schema::UID_MAP.to_string(),
                uid_map.iter().cloned().collect(),
            ));
        }
        cas(
            &mut mods,
            &self.attrs.mailhost_attribute,
            e.mailhost.as_deref(),
            Some(target),
        );
        cas(
            &mut mods,
            &self.attrs.status_attribute,
            Some("hold"),
            Some("active"),
        );
        mods.push(Mod::Replace(
            FROM.to_string(),
            e.mailhost.iter().cloned().collect(),
        ));
        mods.push(Mod::Replace(TO.to_string(), set(target)));
        self.apply(e, mods, "flip").await?;
        report.hold_seconds = held.elapsed().as_secs_f64();
        // For the fleet view; a write of its own, so a directory that lacks
        // the attribute (schema not reloaded yet) never fails a flip.
        let hold_ms = ((report.hold_seconds * 1000.0) as u64).to_string();
        let hold = vec![Mod::Replace(schema::HOLD.to_string(), set(&hold_ms))];
        if let Err(err) = self.ldap.modify(&e.dn, hold).await {
            tracing::debug!(error = %err, "hold time not published");
        }
        report.mailhost = target.to_string();
        METRICS.cutover_hold.observe(report.hold_seconds);
        tracing::info!(
            mailhost = target,
            hold_ms = (report.hold_seconds * 1000.0) as u64,
            "cut over"
        );
        e.mailhost = Some(target.to_string());
        e.status = Some("active".into());
        e.uid_map = uid_map;
        Ok(())
    }

    /// Writes the UID maps of a move into its target, inside the hold;
    /// returns the `mailshiftUidMap` value to set with the flip (None: the
    /// target's own UIDs are safe to show). A cutover that cannot write them
    /// goes on without (clients resync, which is safe); a rollback whose
    /// clients see translated UIDs must not (the old store's UIDs would name
    /// other messages than they saw), so its error undoes the hold.
    async fn write_maps(
        &self,
        e: &Entry,
        user: &str,
        engine: &Arc<Engine>,
        target: &str,
        password: Option<&[u8]>,
        report: &mut CutoverReport,
    ) -> Result<Option<String>, Error> {
        use super::uid_maps;
        if !self.keep_uids {
            return Ok(None);
        }
        let back = Arc::ptr_eq(engine, &self.backward);
        // Do the clients see maps on the source now?
        let on_source = e.uid_map.as_deref().is_some_and(|v| {
            let host = v.split_ascii_whitespace().next().unwrap_or("");
            engine
                .from
                .cfg
                .mailhosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
        });
        let written = async {
            let prior = if on_source {
                match uid_maps::prior(engine, user, password).await? {
                    Some(p) => Some(p),
                    None => {
                        return Err(crate::continuity::Error::Refused(
                            "the directory names UID maps the source does not hold".into(),
                        )
                        .into())
                    }
                }
            } else {
                None
            };
            if back && prior.is_none() {
                return Ok(None);
            }
            uid_maps::at_cutover(engine, user, password, prior.as_ref(), back).await
        }
        .await;
        match written {
            Ok(Some(w)) => {
                tracing::info!(user, folders = w.folders, messages = w.messages, bytes = w.bytes, fresh = w.fresh.len(), place = ?w.place, "UID maps written");
                self.events.record(
                    user,
                    "uid_maps_written",
                    serde_json::json!({"folders": w.folders, "messages": w.messages, "bytes": w.bytes, "fresh": w.fresh}),
                );
                report.uid_maps = Some(w);
                Ok(Some(format!("{target} {}", now_unix())))
            }
            Ok(None) => Ok(None),
            Err(err) if !back => {
                tracing::warn!(user, error = %err, "UID maps not written; the user's clients will resync after the cutover");
                Ok(None)
            }
            Err(err) => Err(Error::Incomplete(format!(
                "UID maps for the rollback: {err}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_shape() {
        let t = generalized_time();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.ends_with('Z') && t.starts_with("20"), "{t}");
    }

    #[test]
    fn malformed_leases_count_as_expired() {
        assert_eq!(parse_lease(Some("A 123")), ("A".to_string(), 123));
        assert_eq!(parse_lease(Some("A")).1, 0);
        assert_eq!(parse_lease(Some("A soon")).1, 0);
        assert_eq!(parse_lease(None).1, 0);
    }

    #[test]
    fn cas_deletes_old_and_adds_new() {
        let mut mods = Vec::new();
        cas(&mut mods, "mailHost", Some("old"), Some("new"));
        cas(&mut mods, "x", None, Some("v"));
        cas(&mut mods, "same", Some("a"), Some("a"));
        assert_eq!(mods.len(), 3);
        assert!(matches!(&mods[0], Mod::Delete(a, v) if a == "mailHost" && v.contains("old")));
        assert!(matches!(&mods[1], Mod::Add(a, v) if a == "mailHost" && v.contains("new")));
    }
}
