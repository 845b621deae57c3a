//! Admin HTTP: `/metrics`, `/healthz`, `/api/v1/users/{login}` and its actions,
//! and a small status page. Bound to loopback by default; anything that changes
//! state needs `Authorization: Bearer TOKEN`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::imap::Shared;
use crate::metrics::METRICS;

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", value.to_string())
}

fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant-time compare: the token must not leak through timing.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn user_info(shared: &Shared, login: &str) -> Response<Full<Bytes>> {
    match shared.directory.lookup(login).await {
        Ok(Some(user)) => {
            let route = shared.router.route(&user);
            json(
                StatusCode::OK,
                serde_json::json!({
                    "login": user.login,
                    "dn": user.dn,
                    "mailhost": user.mailhost,
                    "status": format!("{:?}", user.status).to_lowercase(),
                    "backend": route.as_ref().ok().map(|b| b.name().to_string()),
                    "route_error": route.as_ref().err().map(|e| e.to_string()),
                    "sessions": shared.sessions.of(login),
                }),
            )
        }
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such user"}),
        ),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let token = shared
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref());
    let path = req.uri().path().to_string();
    let user_path = path
        .strip_prefix("/api/v1/users/")
        .map(|rest| rest.split('/').collect::<Vec<_>>());
    match (req.method(), path.as_str(), user_path.as_deref()) {
        (&Method::GET, "/metrics", _) => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            METRICS.render(),
        ),
        (&Method::GET, "/healthz", _) => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/", _) => {
            let sync = METRICS.directory_sync_up.get() == 1;
            let page = format!(
                "<!doctype html><title>mailshift</title><h1>mailshift</h1>\
                 <p>open IMAP sessions: {}</p><p>LDAP change follower: {}</p>\
                 <p><a href=\"/metrics\">metrics</a></p>",
                shared.sessions.total(),
                if sync {
                    "live"
                } else {
                    "off (cache TTL applies)"
                }
            );
            reply(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        (&Method::GET, _, Some([login])) if !login.is_empty() => {
            user_info(&shared, &percent_decode(login)).await
        }
        (&Method::POST, _, Some([login, action])) => {
            if !authorized(&req, token) {
                return json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "Authorization: Bearer TOKEN required"}),
                );
            }
            let login = percent_decode(login);
            match *action {
                "kick" => {
                    let n = shared.sessions.kick(&login, None);
                    METRICS
                        .imap_kicks
                        .with_label_values(&["admin"])
                        .inc_by(n as u64);
                    tracing::info!(user = %login, sessions = n, "kicked by admin");
                    json(StatusCode::OK, serde_json::json!({"kicked": n}))
                }
                "migrate" => match &shared.scheduler {
                    Some(s) => {
                        if s.start(&login, None) {
                            tracing::info!(user = %login, "migration requested by admin");
                            json(StatusCode::ACCEPTED, serde_json::json!({"started": true}))
                        } else {
                            json(
                                StatusCode::CONFLICT,
                                serde_json::json!({"error": "already migrating on this instance"}),
                            )
                        }
                    }
                    None => json(
                        StatusCode::NOT_IMPLEMENTED,
                        serde_json::json!({"error": "no [migration] table with an LDAP directory in this config"}),
                    ),
                },
                _ => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no such action"}),
                ),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Serves the admin API until cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(req, shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
