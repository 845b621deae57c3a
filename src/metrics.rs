//! Prometheus metrics, all named `mailshift_*`, in one registry served at `/metrics`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub mod sieve;

/// Latency buckets for lookups and connects: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric mailshift exports.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Open relayed IMAP sessions per backend.
    pub imap_sessions: IntGaugeVec,
    /// Client connections accepted, by listener (`plain`, `tls`).
    pub imap_connections: IntCounterVec,
    /// Login attempts by result.
    pub imap_logins: IntCounterVec,
    /// Bytes relayed, by backend and direction (`to_backend`, `to_client`).
    pub imap_bytes: IntCounterVec,
    /// Sessions closed because the user's route changed, or by an admin.
    pub imap_kicks: IntCounterVec,
    /// Directory lookup latency by result (`cache`, `found`, `not_found`, `error`).
    pub directory_lookup: HistogramVec,
    /// 1 while the RFC 4533 change follower is live.
    pub directory_sync_up: IntGauge,
    /// Backend connect + greeting + TLS + login latency, by backend and result.
    pub backend_connect: HistogramVec,
    /// Messages copied by the migration engine.
    pub migration_messages: IntCounter,
    /// Bytes copied by the migration engine.
    pub migration_bytes: IntCounter,
    /// Migration passes by result (`ok`, `partial`, `failed`).
    pub migration_passes: IntCounterVec,
    /// Migration pass duration.
    pub migration_pass_duration: Histogram,
    /// Seconds users spent in hold during cutover.
    pub cutover_hold: Histogram,
    /// Users by migration state (from LDAP, refreshed by the scheduler).
    pub migration_users: IntGaugeVec,
    /// Logins and RCPTs that waited on a hold, by how the wait ended.
    pub held: IntCounterVec,
    /// SMTP client connections, by result (`accepted`, `per_ip_limit`, `busy`).
    pub smtp_connections: IntCounterVec,
    /// SMTP store transactions by backend and result (`delivered`, `tempfail`,
    /// `permfail`, `aborted`, `queued`, `retried`).
    pub smtp_transactions: IntCounterVec,
    /// SMTP recipients by result (`delivered`, `queued`, `tempfail`, `permfail`,
    /// `unknown`, `relay_denied`, `hold_timeout`, `directory_error`).
    pub smtp_recipients: IntCounterVec,
    /// Message bytes relayed to stores, by backend.
    pub smtp_bytes: IntCounterVec,
    /// From DATA to the store's end-of-data reply, by backend.
    pub smtp_relay: HistogramVec,
    /// Messages waiting in the retry queue.
    pub smtp_queue: IntGauge,
    /// POP3 client connections accepted, by listener (`plain`, `tls`).
    pub pop3_connections: IntCounterVec,
    /// POP3 login attempts by result (`ok`, `auth_failed`, `unavailable`).
    pub pop3_logins: IntCounterVec,
    /// Open relayed POP3 sessions per backend.
    pub pop3_sessions: IntGaugeVec,
    /// POP3 bytes relayed, by backend and direction (`to_backend`, `to_client`).
    pub pop3_bytes: IntCounterVec,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are fixed here, so a clash is a programming error caught by the tests.
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        Metrics {
            imap_sessions: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new("mailshift_imap_sessions", "Open relayed IMAP sessions"),
                    &["backend"],
                )
                .expect("valid metric"),
            ),
            imap_connections: counter(
                "mailshift_imap_connections_total",
                "IMAP client connections accepted",
                &["listener"],
            ),
            imap_logins: counter(
                "mailshift_imap_logins_total",
                "IMAP login attempts by result",
                &["result"],
            ),
            imap_bytes: counter(
                "mailshift_imap_relayed_bytes_total",
                "Bytes relayed between clients and backends",
                &["backend", "direction"],
            ),
            imap_kicks: counter(
                "mailshift_imap_kicks_total",
                "IMAP sessions closed by mailshift (route changed, admin)",
                &["reason"],
            ),
            directory_lookup: histogram(
                "mailshift_directory_lookup_duration_seconds",
                "Directory lookup latency",
                &["result"],
            ),
            directory_sync_up: registered(
                &r,
                IntGauge::new(
                    "mailshift_directory_sync_up",
                    "1 while the LDAP change follower (RFC 4533) is live",
                )
                .expect("valid metric"),
            ),
            backend_connect: histogram(
                "mailshift_backend_connect_duration_seconds",
                "Backend connect, greeting, TLS and login latency",
                &["backend", "result"],
            ),
            migration_messages: registered(
                &r,
                IntCounter::new(
                    "mailshift_migration_messages_copied_total",
                    "Messages copied by the migration engine",
                )
                .expect("valid metric"),
            ),
            migration_bytes: registered(
                &r,
                IntCounter::new(
                    "mailshift_migration_bytes_copied_total",
                    "Bytes copied by the migration engine",
                )
                .expect("valid metric"),
            ),
            migration_passes: counter(
                "mailshift_migration_passes_total",
                "Migration passes by result",
                &["result"],
            ),
            migration_pass_duration: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "mailshift_migration_pass_duration_seconds",
                        "Migration pass duration",
                    )
                    .buckets(vec![
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            cutover_hold: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "mailshift_cutover_hold_seconds",
                        "Seconds from hold to release per cutover",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0]),
                )
                .expect("valid metric"),
            ),
            held: counter(
                "mailshift_held_total",
                "Logins and RCPTs that waited on a cutover hold, by outcome",
                &["result"],
            ),
            migration_users: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new("mailshift_migration_users", "Users by migration state"),
                    &["state"],
                )
                .expect("valid metric"),
            ),
            smtp_connections: counter(
                "mailshift_smtp_connections_total",
                "SMTP client connections by result",
                &["result"],
            ),
            smtp_transactions: counter(
                "mailshift_smtp_transactions_total",
                "SMTP store transactions by backend and result",
                &["backend", "result"],
            ),
            smtp_recipients: counter(
                "mailshift_smtp_recipients_total",
                "SMTP recipients by result",
                &["result"],
            ),
            smtp_bytes: counter(
                "mailshift_smtp_relayed_bytes_total",
                "Message bytes relayed to stores",
                &["backend"],
            ),
            smtp_relay: histogram(
                "mailshift_smtp_relay_duration_seconds",
                "From DATA to the store's end-of-data reply",
                &["backend"],
            ),
            smtp_queue: registered(
                &r,
                IntGauge::new(
                    "mailshift_smtp_queue_messages",
                    "Messages in the SMTP retry queue (0 in normal operation)",
                )
                .expect("valid metric"),
            ),
            pop3_connections: counter(
                "mailshift_pop3_connections_total",
                "POP3 client connections accepted",
                &["listener"],
            ),
            pop3_logins: counter(
                "mailshift_pop3_logins_total",
                "POP3 login attempts by result",
                &["result"],
            ),
            pop3_sessions: registered(
                &r,
                IntGaugeVec::new(
                    Opts::new("mailshift_pop3_sessions", "Open relayed POP3 sessions"),
                    &["backend"],
                )
                .expect("valid metric"),
            ),
            pop3_bytes: counter(
                "mailshift_pop3_relayed_bytes_total",
                "POP3 bytes relayed between clients and backends",
                &["backend", "direction"],
            ),
            registry: r,
        }
    }

    /// Records one directory lookup.
    pub fn observe_lookup(&self, result: &str, took: Duration) {
        self.directory_lookup
            .with_label_values(&[result])
            .observe(took.as_secs_f64());
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric family error would be
        // a programming error, and an empty page says so plainly.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
