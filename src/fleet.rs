//! The fleet view: every user's migration state across all instances, read
//! from LDAP, the source of truth the instances already share.
//!
//! Instances publish a running move's progress into the user's entry
//! ([`PROGRESS`]) at a bounded rate ([`PUBLISH_EVERY`]), and the hold time
//! of each cutover ([`HOLD`]). Why LDAP rather than polling each instance's
//! admin API: LDAP is the one place every instance and every admin command
//! already reaches; instances need no list of each other (they come and go,
//! bind to loopback by default); a dead instance's last progress stays
//! visible beside its expired lease; and the cost is bounded: one modify per
//! running move per [`PUBLISH_EVERY`] (at concurrency 4, under one write a
//! second per instance), which a directory serving logins does not notice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::directory::ldap::{LdapDirectory, Mod};
use crate::directory::schema::{ERROR, FROM, HOLD, LEASE, PROGRESS, STATE, TO, UPDATED};
use crate::events::now_unix;
use crate::progress::{Event, Reporter};

/// How often a running move writes its progress to LDAP, at most.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// Progress of one pass, as published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Messages copied so far.
    pub messages: u64,
    /// Messages the pass planned to copy.
    pub messages_total: u64,
    /// Bytes copied so far.
    pub bytes: u64,
    /// Bytes the pass planned to copy.
    pub bytes_total: u64,
    /// When the pass started (Unix seconds).
    pub started: u64,
    /// When this was published (Unix seconds).
    pub at: u64,
}

impl Progress {
    /// Parses the attribute value; `None` when malformed.
    pub fn parse(v: &str) -> Option<Progress> {
        let n: Vec<u64> = v
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [messages, messages_total, bytes, bytes_total, started, at] = n[..] else {
            return None;
        };
        Some(Progress {
            messages,
            messages_total,
            bytes,
            bytes_total,
            started,
            at,
        })
    }

    /// The attribute value.
    pub fn render(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.messages, self.messages_total, self.bytes, self.bytes_total, self.started, self.at
        )
    }

    /// Bytes per second over the pass so far.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.at.saturating_sub(self.started);
        (secs > 0 && self.bytes > 0).then(|| self.bytes as f64 / secs as f64)
    }

    /// Seconds left at the pass's rate so far.
    pub fn eta(&self) -> Option<u64> {
        let left = self.bytes_total.saturating_sub(self.bytes);
        if left == 0 {
            return Some(0);
        }
        self.rate().map(|r| (left as f64 / r).ceil() as u64)
    }
}

#[derive(Default)]
struct Tally {
    planned: HashMap<String, (u64, u64)>,
    copied: HashMap<String, (u64, u64)>,
    started: u64,
    last: Option<Instant>,
}

impl Tally {
    fn progress(&self) -> Progress {
        let sum = |m: &HashMap<String, (u64, u64)>| {
            m.values().fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
        };
        let (mt, bt) = sum(&self.planned);
        let (m, b) = sum(&self.copied);
        Progress {
            messages: m,
            messages_total: mt,
            bytes: b,
            bytes_total: bt,
            started: self.started,
            at: now_unix(),
        }
    }
}

/// A [`Reporter`] that passes every event on and publishes the pass's
/// progress to the user's LDAP entry every [`PUBLISH_EVERY`] at most (and
/// once at the end, by [`Publisher::flush`]).
pub struct Publisher {
    ldap: Arc<LdapDirectory>,
    dn: String,
    next: Arc<dyn Reporter>,
    tally: Mutex<Tally>,
}

impl Publisher {
    /// Wraps `next` for the user whose entry is `dn`.
    pub fn new(ldap: Arc<LdapDirectory>, dn: &str, next: Arc<dyn Reporter>) -> Arc<Publisher> {
        Arc::new(Publisher {
            ldap,
            dn: dn.to_string(),
            next,
            tally: Mutex::new(Tally {
                started: now_unix(),
                ..Tally::default()
            }),
        })
    }

    /// Progress so far.
    pub fn progress(&self) -> Progress {
        self.tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .progress()
    }

    /// Writes the progress now (at the end of a pass).
    pub async fn flush(&self) {
        let p = self.progress();
        write(&self.ldap, &self.dn, p).await;
    }
}

async fn write(ldap: &LdapDirectory, dn: &str, p: Progress) {
    let mods = vec![Mod::Replace(
        PROGRESS.to_string(),
        std::collections::HashSet::from([p.render()]),
    )];
    if let Err(e) = ldap.modify(dn, mods).await {
        tracing::debug!(dn, error = %e, "progress not published");
    }
}

impl Reporter for Publisher {
    fn event(&self, event: Event) {
        let due = {
            let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            match &event {
                Event::FolderStart {
                    folder,
                    messages,
                    bytes,
                    ..
                } => {
                    t.planned.insert(folder.clone(), (*messages, *bytes));
                    t.copied.insert(folder.clone(), (0, 0));
                }
                Event::Copied {
                    folder,
                    messages,
                    bytes,
                    ..
                } => {
                    t.copied.insert(folder.clone(), (*messages, *bytes));
                }
                Event::Planned { .. } => {}
            }
            let due = t.last.is_none_or(|l| l.elapsed() >= PUBLISH_EVERY);
            if due {
                t.last = Some(Instant::now());
            }
            due.then(|| t.progress())
        };
        self.next.event(event);
        if let (Some(p), Ok(rt)) = (due, tokio::runtime::Handle::try_current()) {
            let (ldap, dn) = (Arc::clone(&self.ldap), self.dn.clone());
            rt.spawn(async move { write(&ldap, &dn, p).await });
        }
    }
}

/// One user as the fleet view shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UserRow {
    /// Login.
    pub login: String,
    /// Migration state (`queued`, `syncing`, `cutover`, `done`, `failed`,
    /// `rolled-back`), or `none` when mailshift never touched the user.
    pub state: String,
    /// Current mailHost.
    pub mailhost: Option<String>,
    /// mailUserStatus.
    pub status: Option<String>,
    /// The instance holding the lease (working on the user now).
    pub instance: Option<String>,
    /// Whether that lease is still valid.
    pub lease_live: bool,
    /// Last state change (Unix seconds).
    pub updated: Option<u64>,
    /// Last error.
    pub error: Option<String>,
    /// Progress of the current or last pass.
    pub progress: Option<Progress>,
    /// Hold time of the last cutover, milliseconds.
    pub hold_ms: Option<u64>,
    /// mailHost before the last cutover.
    pub from: Option<String>,
    /// mailHost after the last cutover.
    pub to: Option<String>,
}

fn generalized_to_unix(v: &str) -> Option<u64> {
    let t = chrono::NaiveDateTime::parse_from_str(v, "%Y%m%d%H%M%SZ").ok()?;
    u64::try_from(t.and_utc().timestamp()).ok()
}

/// The attributes a fleet listing reads.
pub fn attributes(ldap: &LdapDirectory) -> Vec<String> {
    let c = ldap.config();
    vec![
        c.login_attribute.clone(),
        c.mailhost_attribute.clone(),
        c.status_attribute.clone(),
        STATE.into(),
        LEASE.into(),
        UPDATED.into(),
        ERROR.into(),
        PROGRESS.into(),
        HOLD.into(),
        FROM.into(),
        TO.into(),
    ]
}

/// The LDAP filter of a fleet listing: users mailshift has a state for, plus
/// the migrating set (`users_filter`) or the admin's `filter`.
pub fn fleet_filter(filter: Option<&str>, users_filter: Option<&str>) -> String {
    match filter.or(users_filter) {
        Some(f) => format!("(|({STATE}=*){f})"),
        None => format!("({STATE}=*)"),
    }
}

/// Every user matching `filter` (see [`fleet_filter`]), sorted by login.
pub async fn users(
    ldap: &LdapDirectory,
    filter: &str,
) -> Result<Vec<UserRow>, crate::directory::Error> {
    let names = attributes(ldap);
    let want: Vec<&str> = names.iter().map(String::as_str).collect();
    let entries = ldap.search_all(filter, &want).await?;
    let c = ldap.config();
    let now = now_unix();
    let mut rows: Vec<UserRow> = entries
        .into_iter()
        .map(|(_, attrs)| {
            let first = |a: &str| {
                attrs
                    .get(&a.to_ascii_lowercase())
                    .and_then(|v| v.first())
                    .cloned()
            };
            let lease = first(LEASE);
            let (owner, until) = match lease.as_deref().map(|l| l.split_once(' ')) {
                Some(Some((o, u))) => (Some(o.to_string()), u.parse::<u64>().unwrap_or(0)),
                _ => (None, 0),
            };
            UserRow {
                login: first(&c.login_attribute).unwrap_or_default().to_lowercase(),
                state: first(STATE).unwrap_or_else(|| "none".into()),
                mailhost: first(&c.mailhost_attribute),
                status: first(&c.status_attribute),
                instance: owner,
                lease_live: until > now,
                updated: first(UPDATED).as_deref().and_then(generalized_to_unix),
                error: first(ERROR),
                progress: first(PROGRESS).as_deref().and_then(Progress::parse),
                hold_ms: first(HOLD).and_then(|h| h.parse().ok()),
                from: first(FROM),
                to: first(TO),
            }
        })
        .filter(|r| !r.login.is_empty())
        .collect();
    rows.sort_by(|a, b| a.login.cmp(&b.login));
    Ok(rows)
}

/// What the fleet looks like: the numbers an admin watches.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Users per state.
    pub counts: BTreeMap<String, usize>,
    /// Users in the listing.
    pub users: usize,
    /// Bytes copied by all published passes.
    pub bytes_moved: u64,
    /// Bytes the running passes still have to copy.
    pub bytes_left: u64,
    /// Bytes per second of the running passes together.
    pub bytes_per_second: f64,
    /// Seconds until the running passes finish, at that rate.
    pub eta_seconds: Option<u64>,
    /// Moves running now (state syncing or cutover with a live lease).
    pub running: Vec<UserRow>,
    /// The newest errors (at most 20).
    pub errors: Vec<UserRow>,
    /// The newest cutovers with their hold times (at most 20).
    pub cutovers: Vec<UserRow>,
}

impl Summary {
    /// Sums up `rows`.
    pub fn of(rows: &[UserRow]) -> Summary {
        let mut s = Summary {
            users: rows.len(),
            ..Summary::default()
        };
        for r in rows {
            *s.counts.entry(r.state.clone()).or_default() += 1;
            if let Some(p) = r.progress {
                s.bytes_moved += p.bytes;
            }
            let running = matches!(r.state.as_str(), "syncing" | "cutover") && r.lease_live;
            if running {
                if let Some(p) = r.progress {
                    s.bytes_left += p.bytes_total.saturating_sub(p.bytes);
                    s.bytes_per_second += p.rate().unwrap_or(0.0);
                }
                s.running.push(r.clone());
            }
            if r.error.is_some() {
                s.errors.push(r.clone());
            }
            if r.state == "done" && r.hold_ms.is_some() {
                s.cutovers.push(r.clone());
            }
        }
        s.eta_seconds = if s.bytes_left == 0 {
            Some(0)
        } else if s.bytes_per_second > 0.0 {
            Some((s.bytes_left as f64 / s.bytes_per_second).ceil() as u64)
        } else {
            None
        };
        let newest = |v: &mut Vec<UserRow>| {
            v.sort_by(|a, b| b.updated.cmp(&a.updated).then(a.login.cmp(&b.login)));
            v.truncate(20);
        };
        newest(&mut s.errors);
        newest(&mut s.cutovers);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_estimates() {
        let p = Progress {
            messages: 10,
            messages_total: 40,
            bytes: 1000,
            bytes_total: 4000,
            started: 100,
            at: 110,
        };
        assert_eq!(Progress::parse(&p.render()), Some(p));
        assert_eq!(p.rate(), Some(100.0));
        assert_eq!(p.eta(), Some(30));
        assert_eq!(Progress::parse("1 2 3"), None);
        assert_eq!(Progress::parse("a b c d e f"), None);
    }

    #[test]
    fn summary_counts_states_and_sorts_cutovers_newest_first() {
        let row = |login: &str, state: &str, updated: u64, hold: Option<u64>| UserRow {
            login: login.into(),
            state: state.into(),
            updated: Some(updated),
            hold_ms: hold,
            ..UserRow::default()
        };
        let s = Summary::of(&[
            row("a", "done", 1, Some(900)),
            row("b", "done", 5, Some(1200)),
            row("c", "queued", 0, None),
        ]);
        assert_eq!(s.counts["done"], 2);
        assert_eq!(s.counts["queued"], 1);
        assert_eq!(s.cutovers[0].login, "b");
        assert_eq!(s.eta_seconds, Some(0));
    }

    #[test]
    fn generalized_time_parses() {
        assert_eq!(generalized_to_unix("19700101000100Z"), Some(60));
        assert_eq!(generalized_to_unix("nonsense"), None);
    }
}
