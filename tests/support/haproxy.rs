//! HAProxy (Debian `haproxy`) in TCP mode in front of mailshift's listeners,
//! sending PROXY v1 (`send-proxy`) or v2 (`send-proxy-v2`) headers, as a
//! load balancer in production does. `connect_from` makes a client connect
//! from another loopback address (127.0.0.0/8 is all local on Linux), so the
//! address HAProxy forwards differs from the one mailshift sees.
use super::{read_log, wait_ready, Server};
use std::fs;
use std::net::TcpStream;

/// One frontend: HAProxy listens on a free port and forwards to `target`.
pub struct Frontend {
    /// `send-proxy` (v1) or `send-proxy-v2`.
    pub send: &'static str,
    /// mailshift's port.
    pub target: u16,
    /// The address HAProxy connects to mailshift from (`source`), if not 127.0.0.1.
    pub source: Option<&'static str>,
}

pub struct Haproxy {
    /// The frontends' ports, in the order given.
    pub ports: Vec<u16>,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(frontends: &[Frontend]) -> Haproxy {
        let mut last_err = String::new();
        for _ in 0..super::START_TRIES {
            match Self::try_start(frontends) {
                Ok(h) => return h,
                Err(e) if super::is_bind_conflict(&e) || e.contains("cannot bind") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "haproxy: no free ports after {} tries: {last_err}",
            super::START_TRIES
        );
    }

    fn try_start(frontends: &[Frontend]) -> Result<Haproxy, String> {
        let dir = super::shared_tempdir("mailshift-haproxy-");
        let ports: Vec<u16> = frontends.iter().map(|_| super::free_port()).collect();
        let mut cfg = String::from(
            "global\n    log stderr format short local0 info\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n\
             \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n",
        );
        for (i, (f, port)) in frontends.iter().zip(&ports).enumerate() {
            let source = f.source.map(|s| format!(" source {s}")).unwrap_or_default();
            cfg.push_str(&format!(
                "frontend fe{i}\n    bind 127.0.0.1:{port}\n    default_backend be{i}\n\
                 backend be{i}\n    server mailshift 127.0.0.1:{}{source} {}\n",
                f.target, f.send
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, cfg).expect("writing haproxy.cfg");
        let p = path.display().to_string();
        if std::process::Command::new("haproxy")
            .arg("-v")
            .output()
            .is_err()
        {
            panic!("haproxy not found: run deploy/lab/install-deps.sh (Debian package haproxy)");
        }
        let mut server = Server::spawn("haproxy", dir.path(), &["haproxy", "-db", "-f", &p]);
        let log_path = server.stderr_log.clone();
        let check: Vec<u16> = ports.clone();
        let res = wait_ready(
            "haproxy",
            &mut server,
            &|| read_log(&log_path),
            // Listening is enough: a probe connection would reach mailshift.
            &mut || check.iter().all(|&p| listening(p)),
        );
        let h = Haproxy {
            ports,
            server: Some(server),
            dir,
        };
        res.map(|()| h)
    }

    /// HAProxy's log (one line per connection with `option tcplog`).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("haproxy.stderr.log"))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }
}

/// Whether something listens on 127.0.0.1:port, by the kernel's table (no
/// connection is made).
fn listening(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines()
                // local address, then state 0A = LISTEN
                .any(|l| l.contains(&format!("0100007F{}", hex.trim_end())) && l.contains(" 0A "))
        })
        .unwrap_or(false)
}

/// A TCP connection to 127.0.0.1:`port` from `source` (e.g. "127.0.0.7").
pub fn connect_from(source: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = rt
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(format!("{source}:0").parse().expect("source address"))?;
            socket
                .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .await
        })
        .unwrap_or_else(|e| panic!("connect from {source} to port {port}: {e}"));
    let std = stream.into_std().expect("into_std");
    std.set_nonblocking(false).expect("blocking");
    std
}
