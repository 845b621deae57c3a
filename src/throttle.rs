//! Failed-login delays that grow with recent failures per client IP and per
//! login, so guessing passwords gets slow while one typo costs a second.

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Recent failures by IP and by login.
pub struct Throttle {
    base: Duration,
    max: Duration,
    by_ip: DashMap<IpAddr, Record>,
    by_login: DashMap<String, Record>,
}

fn bump<K: std::hash::Hash + Eq>(map: &DashMap<K, Record>, key: K) -> u32 {
    let now = Instant::now();
    let mut r = map.entry(key).or_insert(Record {
        failures: 0,
        last: now,
    });
    if now.duration_since(r.last) > MEMORY {
        r.failures = 0;
    }
    r.failures = r.failures.saturating_add(1);
    r.last = now;
    r.failures
}

impl Throttle {
    /// Delays start at `base` and double per recent failure up to `max`.
    pub fn new(base: Duration, max: Duration) -> Throttle {
        Throttle {
            base,
            max,
            by_ip: DashMap::new(),
            by_login: DashMap::new(),
        }
    }

    /// Records a failure and returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr, login: &str) -> Duration {
        if self.by_ip.len() > 100_000 || self.by_login.len() > 100_000 {
            self.forget_old();
        }
        let n = bump(&self.by_ip, ip).max(bump(&self.by_login, login.to_lowercase()));
        let factor = 1u32 << (n - 1).min(16);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A success clears the login's record (the IP's stays: one right password
    /// does not excuse a thousand wrong ones for other logins).
    pub fn succeeded(&self, login: &str) {
        self.by_login.remove(&login.to_lowercase());
    }

    fn forget_old(&self) {
        let now = Instant::now();
        self.by_ip
            .retain(|_, r| now.duration_since(r.last) <= MEMORY);
        self.by_login
            .retain(|_, r| now.duration_since(r.last) <= MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delay_grows_per_ip_and_per_login() {
        let t = Throttle::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(t.failed(ip, "a"), Duration::from_millis(100));
        assert_eq!(t.failed(ip, "b"), Duration::from_millis(200));
        // A new IP guessing the same login still pays for the login's history.
        assert_eq!(t.failed(other, "b"), Duration::from_millis(200));
        assert_eq!(t.failed(other, "b"), Duration::from_millis(400));
        for _ in 0..10 {
            t.failed(ip, "c");
        }
        assert_eq!(t.failed(ip, "c"), Duration::from_millis(1000));
        t.succeeded("b");
        // The login's history is gone; the IP's (two earlier failures) is not.
        assert_eq!(t.failed(other, "b"), Duration::from_millis(400));
    }
}
