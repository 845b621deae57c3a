//! Retries queued deliveries: each owed recipient is looked up again (it may
//! have moved meanwhile), grouped by store, and delivered from the queue file;
//! back-off doubles per attempt; permanent failures and expiry send a DSN.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::command::{self, Address};
use super::driver::{rfc5322_date, Shared};
use super::queue::{self, Entry};
use crate::metrics::METRICS;
use crate::route::{resolve, Ask, Resolution};
use crate::store::smtp::Reply;
use crate::store::{Error as StoreFailure, Store, StoreError};

/// Where one owed recipient goes now.
enum Target {
    Store(Arc<Store>),
    /// Temporarily unroutable (directory down, hold, no route).
    Later(String),
    /// Permanently undeliverable.
    Fail(String),
}

async fn target(shared: &Shared, rcpt: &str) -> Target {
    let Ok(addr) = command::address(rcpt) else {
        return Target::Fail(format!("553 5.1.3 bad address <{rcpt}>"));
    };
    if !shared.smtp.domains.contains(&addr.domain_key()) {
        // Only DSNs are addressed outside the served domains.
        return match &shared.bounce_relay {
            Some(r) => Target::Store(Arc::clone(r)),
            None => Target::Fail("550 5.7.1 no smtp.bounce_relay for outside senders".into()),
        };
    }
    let routing = shared.routing();
    match resolve(
        &routing.directory,
        &routing.router,
        rcpt,
        Ask::RecipientFresh,
        None,
    )
    .await
    {
        Resolution::Routed { store, .. } => Target::Store(store),
        Resolution::Held => Target::Later("recipient on hold".into()),
        Resolution::Disabled(_) => Target::Fail("550 5.2.1 mailbox disabled".into()),
        Resolution::Unknown => Target::Fail("550 5.1.1 user unknown".into()),
        Resolution::NoRoute { error, .. } => Target::Later(error.to_string()),
        Resolution::DirectoryDown(e) => Target::Later(e),
    }
}

/// Runs due entries until cancelled.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let (due, next) = shared.queue.due(queue::now_ms());
        for entry in due {
            attempt(&shared, entry).await;
        }
        let wait = next
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = shared.queue.added.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn attempt(shared: &Arc<Shared>, mut entry: Entry) {
    let path = shared.queue.message_path(&entry.id);
    let from: Option<Address> = if entry.from.is_empty() {
        None
    } else {
        command::address(&entry.from).ok()
    };
    let mut groups: BTreeMap<String, (Arc<Store>, Vec<String>)> = BTreeMap::new();
    let mut owed = Vec::new();
    let mut failed = Vec::new();
    for rcpt in &entry.rcpts {
        match target(shared, rcpt).await {
            Target::Store(s) => {
                groups
                    .entry(s.name().to_string())
                    .or_insert_with(|| (s, Vec::new()))
                    .1
                    .push(rcpt.clone());
            }
            Target::Later(why) => owed.push((rcpt.clone(), why)),
            Target::Fail(why) => failed.push((rcpt.clone(), why)),
        }
    }
    let mut delivered = Vec::new();
    for (name, (store, rcpts)) in groups {
        match deliver_stored(
            shared,
            &store,
            from.as_ref(),
            entry.smtputf8,
            &rcpts,
            &path,
            shared.smtp.backend_timeout,
        )
        .await
        {
            Ok(replies) => {
                for (rcpt, r) in rcpts.into_iter().zip(replies) {
                    if r.is_positive() {
                        delivered.push(format!("{rcpt} ({})", r.text()));
                    } else if r.is_permanent() {
                        failed.push((rcpt, r.text()));
                    } else {
                        owed.push((rcpt, r.text()));
                    }
                }
                METRICS
                    .smtp_transactions
                    .with_label_values(&[&name, "retried"])
                    .inc();
            }
            Err(e) => {
                for rcpt in rcpts {
                    owed.push((rcpt, format!("{name}: {e}")));
                }
            }
        }
    }
    METRICS
        .smtp_recipients
        .with_label_values(&["delivered"])
        .inc_by(delivered.len() as u64);
    entry.attempts += 1;
    let expired = queue::now_ms() / 1000 > entry.created + shared.smtp.queue_lifetime.as_secs();
    if expired {
        failed.append(
            &mut owed
                .iter()
                .map(|(r, why)| (r.clone(), format!("451 4.4.7 gave up: {why}")))
                .collect(),
        );
        owed.clear();
    }
    tracing::info!(
        id = %entry.id,
        attempt = entry.attempts,
        delivered = %delivered.join(", "),
        owed = %owed.iter().map(|(r, w)| format!("{r} ({w})")).collect::<Vec<_>>().join(", "),
        failed = %failed.iter().map(|(r, w)| format!("{r} ({w})")).collect::<Vec<_>>().join(", "),
        "queue retry"
    );
    if !failed.is_empty() {
        METRICS
            .smtp_recipients
            .with_label_values(&["permfail"])
            .inc_by(failed.len() as u64);
        // The whole message is read for its header block: not on the
        // runtime's threads.
        let headers = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || queue::headers_of(&path))
                .await
                .unwrap_or_default()
        };
        send_dsn(shared, &entry, &failed, &headers).await;
    }
    if owed.is_empty() {
        shared.queue.remove(&entry.id).await;
        return;
    }
    entry.rcpts = owed.iter().map(|(r, _)| r.clone()).collect();
    entry.last_error = owed.first().map(|(_, w)| w.clone()).unwrap_or_default();
    entry.next_attempt_ms = queue::now_ms()
        + queue::backoff(shared.smtp.retry_interval, entry.attempts - 1).as_millis() as u64;
    if let Err(e) = shared.queue.update(entry.clone()).await {
        tracing::error!(id = %entry.id, error = %e, "retry queue update failed");
    }
}

/// Queues a DSN to the entry's sender about `failed` recipients.
pub async fn send_dsn(shared: &Shared, entry: &Entry, failed: &[(String, String)], headers: &[u8]) {
    if entry.from.is_empty() {
        tracing::warn!(id = %entry.id, "undeliverable bounce dropped (null sender)");
        return;
    }
    let id = format!("{}D{}", entry.id, entry.attempts);
    let now = std::time::SystemTime::now();
    let message = queue::dsn(
        &shared.smtp.hostname,
        &id,
        entry,
        failed,
        headers,
        &rfc5322_date(now),
    );
    let dsn = Entry {
        id: id.clone(),
        from: String::new(),
        rcpts: vec![entry.from.clone()],
        smtputf8: false,
        created: queue::now_ms() / 1000,
        attempts: 0,
        next_attempt_ms: 0,
        last_error: String::new(),
        client: entry.client.clone(),
    };
    match shared.queue.add_bytes(&message, dsn).await {
        Ok(()) => tracing::info!(id = %entry.id, dsn = %id, to = %entry.from, "DSN queued"),
        Err(e) => tracing::error!(id = %entry.id, error = %e, "DSN could not be queued"),
    }
}

/// Delivers a stored message (wire form: dot-stuffed, ending `CRLF.CRLF`) to
/// `rcpts` on one store. Returns one outcome per recipient, in order; `Err`
/// when the store could not be reached at all.
async fn deliver_stored(
    shared: &Shared,
    store: &Store,
    from: Option<&Address>,
    smtputf8: bool,
    rcpts: &[String],
    message: &std::path::Path,
    timeout: Duration,
) -> Result<Vec<Reply>, StoreError> {
    let mut conn = store.delivery(&shared.smtp.hostname, None, timeout).await?;
    let at_store = |error: StoreFailure| StoreError {
        store: store.name().to_string(),
        error,
    };
    let size = std::fs::metadata(message).map(|m| m.len()).ok();
    let from = from.map(|a| a.to_string()).unwrap_or_default();
    let r = conn
        .mail(&from, true, smtputf8, size)
        .await
        .map_err(at_store)?;
    if !r.is_positive() {
        return Ok(vec![r; rcpts.len()]);
    }
    let mut outcomes: Vec<Option<Reply>> = Vec::new();
    let mut accepted = 0;
    for rcpt in rcpts {
        let r = conn.rcpt(rcpt).await.map_err(at_store)?;
        if r.is_positive() {
            accepted += 1;
            outcomes.push(None);
        } else {
            outcomes.push(Some(r));
        }
    }
    if accepted > 0 {
        let r = conn.command("DATA", "data").await.map_err(at_store)?;
        if r.code != 354 {
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                *o = Some(r.clone());
            }
        } else {
            let queue_file = |source| {
                at_store(StoreFailure::Io {
                    stage: "queue file",
                    source,
                })
            };
            let mut file = tokio::fs::File::open(message).await.map_err(queue_file)?;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut chunk).await.map_err(queue_file)?;
                if n == 0 {
                    break;
                }
                conn.send(&chunk[..n], "data").await.map_err(at_store)?;
            }
            let replies = if conn.is_lmtp() { accepted } else { 1 };
            let mut got = Vec::new();
            for _ in 0..replies {
                got.push(conn.read_reply("end of data").await.map_err(at_store)?);
            }
            let mut it = got.iter();
            let single = got.first().cloned();
            for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                let r = if conn.is_lmtp() {
                    it.next().cloned()
                } else {
                    single.clone()
                };
                *o = r;
            }
        }
    }
    conn.quit().await;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Reply::new(451, "4.4.1 No reply from the store")))
        .collect())
}
