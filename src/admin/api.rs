//! The JSON API under `/api/v1/` (documented in the README).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{authorize, Admin, ApiError};
use crate::events::now_unix;
use crate::fleet::{self, Summary, UserRow};
use crate::metrics::METRICS;
use crate::migrate::report::UserReport;

/// How long one fleet listing from LDAP is reused: a cockpit open in ten
/// browsers costs one search per this, not ten.
pub const FLEET_TTL: Duration = Duration::from_secs(2);
/// Throughput samples kept (one per refresh, at most every [`FLEET_TTL`]).
const SAMPLES: usize = 720;

#[derive(Default)]
pub(crate) struct FleetCache {
    inner: tokio::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    rows: Option<(Instant, Arc<Vec<UserRow>>)>,
    /// (Unix seconds, bytes moved fleet-wide): the throughput chart.
    samples: VecDeque<(u64, u64)>,
}

type Result<T> = std::result::Result<T, ApiError>;

fn ldap(admin: &Admin) -> Result<&Arc<crate::directory::ldap::LdapDirectory>> {
    admin.shared.directory.ldap().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the fleet view reads LDAP: directory.kind must be \"ldap\"",
        )
    })
}

fn users_filter(admin: &Admin) -> Option<String> {
    admin
        .shared
        .config
        .migration
        .as_ref()
        .and_then(|m| m.users_filter.clone())
}

/// The fleet from LDAP, reused for [`FLEET_TTL`]; the throughput sample is
/// taken with each fresh listing.
async fn fleet(admin: &Admin) -> Result<(Arc<Vec<UserRow>>, Vec<(u64, u64)>)> {
    let mut c = admin.fleet.inner.lock().await;
    if let Some((at, rows)) = &c.rows {
        if at.elapsed() < FLEET_TTL {
            return Ok((Arc::clone(rows), c.samples.iter().copied().collect()));
        }
    }
    let filter = fleet::fleet_filter(None, users_filter(admin).as_deref());
    let rows = Arc::new(fleet::users(ldap(admin)?, &filter).await?);
    let moved: u64 = rows
        .iter()
        .filter_map(|r| r.progress)
        .map(|p| p.bytes)
        .sum();
    c.samples.push_back((now_unix(), moved));
    if c.samples.len() > SAMPLES {
        c.samples.pop_front();
    }
    c.rows = Some((Instant::now(), Arc::clone(&rows)));
    Ok((rows, c.samples.iter().copied().collect()))
}

/// `GET /api/v1/overview`: users by state, bytes moved, ETA, throughput
/// samples, running moves, recent cutovers and errors, this instance.
pub(crate) async fn overview(State(admin): State<Arc<Admin>>) -> Result<Json<Value>> {
    let (rows, samples) = fleet(&admin).await?;
    let s = Summary::of(&rows);
    Ok(Json(json!({
        "counts": s.counts,
        "users": s.users,
        "bytes_moved": s.bytes_moved,
        "bytes_left": s.bytes_left,
        "bytes_per_second": s.bytes_per_second,
        "eta_seconds": s.eta_seconds,
        "running": s.running,
        "cutovers": s.cutovers,
        "errors": s.errors,
        "samples": samples,
        "instance": {
            "id": admin.shared.config.migration.as_ref().map(|m| m.instance_id.clone()),
            "imap_sessions": admin.shared.sessions.total(),
            "ldap_follower_live": METRICS.directory_sync_up.get() == 1,
            "migrating": admin.shared.scheduler.is_some(),
        },
    })))
}

/// Query of `GET /api/v1/users`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct UsersQuery {
    /// Only this migration state.
    state: Option<String>,
    /// Login contains this (case-insensitive).
    q: Option<String>,
    /// An LDAP filter instead of the migrating set (read fresh, not cached).
    filter: Option<String>,
    /// Page size (default 200, at most 5000).
    limit: Option<usize>,
    /// Rows to skip.
    offset: Option<usize>,
}

/// `GET /api/v1/users?state=&q=&filter=&limit=&offset=`.
pub(crate) async fn users(
    State(admin): State<Arc<Admin>>,
    Query(q): Query<UsersQuery>,
) -> Result<Json<Value>> {
    let rows = match &q.filter {
        Some(f) => {
            Arc::new(fleet::users(ldap(&admin)?, &fleet::fleet_filter(Some(f), None)).await?)
        }
        None => fleet(&admin).await?.0,
    };
    let needle = q.q.as_deref().unwrap_or("").to_lowercase();
    let matching: Vec<&UserRow> = rows
        .iter()
        .filter(|r| {
            q.state
                .as_deref()
                .is_none_or(|s| s.is_empty() || r.state == s)
        })
        .filter(|r| needle.is_empty() || r.login.contains(&needle))
        .collect();
    let limit = q.limit.unwrap_or(200).min(5000);
    let page: Vec<&UserRow> = matching
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .copied()
        .collect();
    Ok(Json(json!({"total": matching.len(), "users": page})))
}

fn state_dir(admin: &Admin) -> Option<&std::path::Path> {
    admin
        .shared
        .config
        .migration
        .as_ref()
        .map(|m| m.state_dir.as_path())
}

/// 404 unless the directory knows the login.
async fn known(admin: &Admin, login: &str) -> Result<crate::directory::User> {
    match admin.shared.directory.lookup(login).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such user: {login}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/users/{login}`: entry, route, sessions, migration state and
/// progress, last error, the newest events, whether a report is kept.
pub(crate) async fn user(
    State(admin): State<Arc<Admin>>,
    Path(login): Path<String>,
) -> Result<Json<Value>> {
    let user = known(&admin, &login).await?;
    let route = admin.shared.router.route(&user);
    let migration = match admin.shared.directory.ldap() {
        Some(l) => {
            let filter = crate::directory::ldap::user_filter(&l.config().user_filter, &login);
            fleet::users(l, &filter).await?.into_iter().next()
        }
        None => None,
    };
    let events = state_dir(&admin)
        .map(|d| crate::events::EventLog::new(d, "").read(&login, 50))
        .unwrap_or_default();
    let report = state_dir(&admin).and_then(|d| UserReport::kept(d, &login));
    let store = route.as_ref().ok().map(|s| &**s);
    let uid_maps = crate::continuity::view::view(&admin.shared.maps, &user, store).await;
    Ok(Json(json!({
        "login": user.login,
        "dn": user.dn,
        "mailhost": user.mailhost,
        "status": format!("{:?}", user.status).to_lowercase(),
        "backend": route.as_ref().ok().map(|b| b.name().to_string()),
        "route_error": route.as_ref().err().map(|e| e.to_string()),
        "sessions": admin.shared.sessions.of(&login),
        "session_clients": admin.shared.sessions.list(&login),
        "migration": migration,
        "events": events,
        "report": report.map(|r| json!({"ok": r.ok, "generated": r.generated, "refused": r.refused.len()})),
        "uid_maps": uid_maps,
    })))
}

/// `GET /api/v1/users/{login}/events`: the user's event list, oldest first.
pub(crate) async fn events(
    State(admin): State<Arc<Admin>>,
    Path(login): Path<String>,
) -> Result<Json<Value>> {
    known(&admin, &login).await?;
    let list = state_dir(&admin)
        .map(|d| crate::events::EventLog::new(d, "").read(&login, 1000))
        .unwrap_or_default();
    Ok(Json(json!({"user": login, "events": list})))
}

fn kept(admin: &Admin, login: &str) -> Result<UserReport> {
    state_dir(admin)
        .and_then(|d| UserReport::kept(d, login))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no report for {login} yet (made at cutover and by verify --report)"),
            )
        })
}

/// `GET /api/v1/users/{login}/report`: the kept report as JSON.
pub(crate) async fn report(
    State(admin): State<Arc<Admin>>,
    Path(login): Path<String>,
) -> Result<Json<UserReport>> {
    known(&admin, &login).await?;
    Ok(Json(kept(&admin, &login)?))
}

/// `GET /api/v1/users/{login}/report.html`: the kept report as a page.
pub(crate) async fn report_html(
    State(admin): State<Arc<Admin>>,
    Path(login): Path<String>,
) -> Result<Response> {
    known(&admin, &login).await?;
    let r = kept(&admin, &login)?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        r.html(),
    )
        .into_response())
}

fn scheduler(admin: &Admin) -> Result<&Arc<crate::migrate::scheduler::Scheduler>> {
    admin.shared.scheduler.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no [migration] table with an LDAP directory in this config",
        )
    })
}

fn busy() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "already migrating on this instance")
}

/// `POST /api/v1/users/{login}/{migrate|cutover|rollback|kick}` (token).
pub(crate) async fn action(
    State(admin): State<Arc<Admin>>,
    Path((login, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let token = admin
        .shared
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref());
    authorize(&headers, token)?;
    if !matches!(action.as_str(), "kick" | "migrate" | "cutover" | "rollback") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such action: {action}"),
        ));
    }
    let login = known(&admin, &login).await?.login.to_lowercase();
    let accepted = |what: &str| {
        tracing::info!(user = %login, action = what, "requested by admin");
        (
            StatusCode::ACCEPTED,
            Json(json!({"started": true, "action": what})),
        )
            .into_response()
    };
    match action.as_str() {
        "kick" => {
            let n = admin.shared.sessions.kick(&login, None);
            METRICS
                .imap_kicks
                .with_label_values(&["admin"])
                .inc_by(n as u64);
            tracing::info!(user = %login, sessions = n, "kicked by admin");
            Ok(Json(json!({"kicked": n})).into_response())
        }
        // A move to the new store: presync passes, then the cutover.
        "migrate" | "cutover" => {
            let s = scheduler(&admin)?;
            s.mover()
                .events()
                .record(&login, "queued", json!({"by": "admin", "action": action}));
            if s.start(&login, None) {
                Ok(accepted(&action))
            } else {
                Err(busy())
            }
        }
        _ => {
            let s = scheduler(&admin)?;
            let user = login.clone();
            let started = s.run_action(&login, move |mover| async move {
                mover
                    .events()
                    .record(&user, "rollback_requested", json!({"by": "admin"}));
                if let Err(e) = mover.rollback(&user, Arc::new(crate::migrate::Quiet)).await {
                    tracing::warn!(user = %user, error = %e, "rollback failed");
                }
            });
            if started {
                Ok(accepted("rollback"))
            } else {
                Err(busy())
            }
        }
    }
}
