//! `mailshift_submission_*`, registered in the process's one registry on
//! first use (the server touches them when it starts a listener).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::METRICS;

/// The submission front end's metrics.
pub struct Metrics {
    /// Client connections by listener (`plain`, `tls`).
    pub connections: IntCounterVec,
    /// AUTH attempts by result (`ok`, `auth_failed`, `unavailable`).
    pub logins: IntCounterVec,
    /// Open relayed sessions per backend.
    pub sessions: IntGaugeVec,
    /// Bytes relayed, by backend and direction (`to_backend`, `to_client`).
    pub bytes: IntCounterVec,
}

/// The submission metrics.
pub static SUBMISSION: LazyLock<Metrics> = LazyLock::new(|| {
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        // Names are fixed here, so a clash is a programming error.
        METRICS
            .registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    };
    let sessions = IntGaugeVec::new(
        Opts::new(
            "mailshift_submission_sessions",
            "Open relayed submission sessions",
        ),
        &["backend"],
    )
    .expect("valid metric");
    METRICS
        .registry
        .register(Box::new(sessions.clone()))
        .expect("metric names are unique");
    Metrics {
        connections: counter(
            "mailshift_submission_connections_total",
            "Submission client connections accepted",
            &["listener"],
        ),
        logins: counter(
            "mailshift_submission_logins_total",
            "Submission AUTH attempts by result",
            &["result"],
        ),
        sessions,
        bytes: counter(
            "mailshift_submission_relayed_bytes_total",
            "Bytes relayed between submission clients and stores",
            &["backend", "direction"],
        ),
    }
});
