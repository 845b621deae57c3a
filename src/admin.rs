//! Admin HTTP: the web cockpit at `/`, the JSON API under `/api/v1/`,
//! `/metrics` and `/healthz`. Bound to loopback by default; anything that
//! changes state needs `Authorization: Bearer TOKEN` (else 401).
//!
//! - [`api`]: the JSON API (fleet overview, users, events, reports, actions).
//! - [`ui`]: the cockpit's page and script, embedded in the binary (no build
//!   step, no outside network).
//!
//! Nothing here is on the proxy path: the fleet view is read from LDAP when
//! someone asks (cached for [`api::FLEET_TTL`]), never sampled in the
//! background.

mod api;
mod ui;

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::app::App;
use crate::metrics::METRICS;

/// What the admin handlers share.
pub(crate) struct Admin {
    shared: Arc<App>,
    fleet: api::FleetCache,
}

/// An API error: an HTTP status and a sentence, as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, why: impl Into<String>) -> ApiError {
        ApiError(status, why.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(serde_json::json!({"error": self.1, "status": self.0.as_u16()})),
        )
            .into_response()
    }
}

impl From<crate::directory::Error> for ApiError {
    fn from(e: crate::directory::Error) -> ApiError {
        match e {
            crate::directory::Error::BadFilter(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// Checks `Authorization: Bearer TOKEN` against the configured token; with no
/// token configured every action is refused.
fn authorize(headers: &HeaderMap, token: Option<&str>) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer TOKEN required (admin.token)",
        )
    };
    let token = token.ok_or_else(refused)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(refused)?;
    // Constant-time compare: the token must not leak through timing.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(refused())
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/users", get(api::users))
        .route("/api/v1/users/{login}", get(api::user))
        .route("/api/v1/users/{login}/events", get(api::events))
        .route("/api/v1/users/{login}/report", get(api::report))
        .route("/api/v1/users/{login}/report.html", get(api::report_html))
        .route("/api/v1/users/{login}/{action}", post(api::action))
        .fallback(not_found)
        .with_state(admin)
}

/// Serves the admin API until cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<App>) {
    let cancel = shared.cancel.clone();
    let admin = Arc::new(Admin {
        shared,
        fleet: api::FleetCache::default(),
    });
    let app = router(admin);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "admin HTTP stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_need_the_exact_token() {
        let mut h = HeaderMap::new();
        assert!(authorize(&h, Some("t0k")).is_err());
        h.insert(header::AUTHORIZATION, "Bearer t0k".parse().expect("header"));
        assert!(authorize(&h, Some("t0k")).is_ok());
        assert!(authorize(&h, Some("t0K")).is_err());
        assert!(authorize(&h, None).is_err(), "no token configured: refuse");
    }
}
