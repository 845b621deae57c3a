//! `mailshift_sieve_*`: the ManageSieve front end and the script migration,
//! registered in the one registry `/metrics` renders.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::METRICS;

/// ManageSieve metrics.
pub struct SieveMetrics {
    /// Open relayed ManageSieve sessions per backend.
    pub sessions: IntGaugeVec,
    /// Client connections accepted, by listener (`plain`, `tls`).
    pub connections: IntCounterVec,
    /// Login attempts by result (`ok`, `auth_failed`, `unavailable`).
    pub logins: IntCounterVec,
    /// Bytes relayed, by backend and direction.
    pub bytes: IntCounterVec,
    /// Scripts handled by the migration, by result (`copied`, `unchanged`,
    /// `refused`, `removed`).
    pub scripts: IntCounterVec,
}

/// The process-wide ManageSieve metrics.
pub static SIEVE: LazyLock<SieveMetrics> = LazyLock::new(|| {
    let r = &METRICS.registry;
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        r.register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    };
    let sessions = IntGaugeVec::new(
        Opts::new(
            "mailshift_sieve_sessions",
            "Open relayed ManageSieve sessions",
        ),
        &["backend"],
    )
    .expect("valid metric");
    r.register(Box::new(sessions.clone()))
        .expect("metric names are unique");
    SieveMetrics {
        sessions,
        connections: counter(
            "mailshift_sieve_connections_total",
            "ManageSieve client connections accepted",
            &["listener"],
        ),
        logins: counter(
            "mailshift_sieve_logins_total",
            "ManageSieve login attempts by result",
            &["result"],
        ),
        bytes: counter(
            "mailshift_sieve_relayed_bytes_total",
            "Bytes relayed between ManageSieve clients and stores",
            &["backend", "direction"],
        ),
        scripts: counter(
            "mailshift_sieve_scripts_migrated_total",
            "Sieve scripts handled by migration passes, by result",
            &["result"],
        ),
    }
});
