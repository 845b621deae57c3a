//! A private Cyrus IMAP 3.6 from `deploy/lab/cyrus-imapd.conf.in` and
//! `cyrus.conf.in` (`master -D` under the supervisor): IMAP with STARTTLS,
//! IMAPS and LMTP on free ports, users with real passwords in a private
//! sasldb, and an admin in `admins` and `proxyservers` (the master user).
//!
//! Debian's `cyrus-imapd` conflicts with `dovecot-imapd`, so
//! `deploy/lab/install-deps.sh` unpacks its binaries (and the libraries the
//! system lacks) under [`cyrus_root`] instead of installing them.
use super::{read_log, render, run, tail, wait_ready, Certs, Server};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const MASTER_USER: &str = "admin";
pub const MASTER_PASSWORD: &str = "adminpw";

/// Where install-deps.sh unpacks Cyrus (`MAILSHIFT_CYRUS_ROOT` overrides).
pub fn cyrus_root() -> PathBuf {
    std::env::var_os("MAILSHIFT_CYRUS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mailshift-lab/cyrus"))
}

#[derive(Clone, Debug)]
pub struct CyrusOpts {
    /// `altnamespace`: personal folders at the top level beside INBOX
    /// instead of under `INBOX.`.
    pub altnamespace: bool,
    /// `unixhierarchysep`: `/` instead of `.` as the hierarchy separator.
    pub unixhierarchysep: bool,
    /// Users and their passwords.
    pub users: Vec<(String, String)>,
    /// Appended to imapd.conf (e.g. `imaps` only, quotas).
    pub extra: String,
}

impl Default for CyrusOpts {
    fn default() -> Self {
        CyrusOpts {
            altnamespace: false,
            unixhierarchysep: false,
            users: vec![("alice".into(), "alicepw".into())],
            extra: String::new(),
        }
    }
}

pub struct Cyrus {
    name: String,
    imap_port: u16,
    imaps_port: u16,
    lmtp_port: u16,
    opts: CyrusOpts,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

/// LD_LIBRARY_PATH for the unpacked binaries.
fn lib_path() -> String {
    let r = cyrus_root();
    format!(
        "{}:{}",
        r.join("usr/lib/x86_64-linux-gnu").display(),
        r.join("lib/x86_64-linux-gnu").display()
    )
}

fn bin_dir() -> PathBuf {
    cyrus_root().join("usr/lib/cyrus/bin")
}

/// The user Cyrus drops to: like Dovecot's mail user.
fn cyrus_user(id: &super::Identity) -> String {
    if !id.root {
        return id.login_user.clone();
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| l.split(':').next().map(String::from))
        .find(|n| n == "mailshiftlab")
        .unwrap_or_else(|| "nobody".into())
}

impl Cyrus {
    pub fn start(name: &str, opts: CyrusOpts) -> Cyrus {
        assert!(
            bin_dir().join("master").exists(),
            "no Cyrus under {} (run deploy/lab/install-deps.sh as root)",
            cyrus_root().display()
        );
        let mut last_err = String::new();
        for _ in 0..super::START_TRIES {
            match Self::try_start(name, &opts) {
                Ok(c) => return c,
                Err(e) if super::is_bind_conflict(&e) || e.contains("unable to bind") => {
                    last_err = e
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "cyrus {name}: no free ports after {} tries: {last_err}",
            super::START_TRIES
        );
    }

    fn try_start(name: &str, opts: &CyrusOpts) -> Result<Cyrus, String> {
        let id = super::identity();
        let certs = Certs::shared();
        let dir = super::shared_tempdir(&format!("mailshift-cyrus-{name}-"));
        let d = dir.path();
        for sub in ["config", "spool", "run"] {
            fs::create_dir(d.join(sub)).expect("mkdir cyrus dir");
        }
        // imapd runs as the Cyrus user and reads the key itself.
        fs::copy(&certs.cert_pem, d.join("server.pem")).expect("copy cert");
        fs::copy(&certs.key_pem, d.join("server.key")).expect("copy key");
        let (imap_port, imaps_port, lmtp_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let s = |v: &dyn ToString| v.to_string();
        let yn = |b: bool| {
            if b {
                "yes".to_string()
            } else {
                "no".to_string()
            }
        };
        let imapd = render(
            "cyrus-imapd.conf.in",
            &[
                ("DIR", d.display().to_string()),
                ("NAME", s(&name)),
                ("CYRUS_USER", cyrus_user(&id)),
                ("ADMIN", s(&MASTER_USER)),
                ("UNIXHIERARCHYSEP", yn(opts.unixhierarchysep)),
                ("ALTNAMESPACE", yn(opts.altnamespace)),
            ],
        );
        fs::write(d.join("imapd.conf"), format!("{imapd}\n{}\n", opts.extra))
            .expect("writing imapd.conf");
        let conf = render(
            "cyrus.conf.in",
            &[
                ("DIR", d.display().to_string()),
                ("BIN", bin_dir().display().to_string()),
                ("IMAP_PORT", s(&imap_port)),
                ("IMAPS_PORT", s(&imaps_port)),
                ("LMTP_PORT", s(&lmtp_port)),
            ],
        );
        fs::write(d.join("cyrus.conf"), conf).expect("writing cyrus.conf");
        let mut c = Cyrus {
            name: name.to_string(),
            imap_port,
            imaps_port,
            lmtp_port,
            opts: opts.clone(),
            server: None,
            dir,
        };
        c.set_password(MASTER_USER, MASTER_PASSWORD);
        for (u, p) in &opts.users {
            c.set_password(u, p);
        }
        if id.root {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{}:", cyrus_user(&id)))
                    .arg(c.dir.path()),
                None,
            );
        }
        let server = c.spawn();
        c.server = Some(server);
        let mut server = c.server.take().expect("just set");
        let res = wait_ready(
            &format!("cyrus {name} (imap {imap_port}, lmtp {lmtp_port})"),
            &mut server,
            &|| c.log(),
            &mut || {
                greets(imap_port, "* OK") && greets(imaps_port, "") && greets(lmtp_port, "220 ")
            },
        );
        c.server = Some(server);
        res.map(|()| c)
    }

    fn spawn(&self) -> Server {
        let d = self.dir.path();
        let master = bin_dir().join("master").display().to_string();
        let imapd = d.join("imapd.conf").display().to_string();
        let conf = d.join("cyrus.conf").display().to_string();
        let pid = d.join("run/master.pid").display().to_string();
        let lib = lib_path();
        let mut argv = vec![master.as_str(), "-D", "-C", &imapd, "-M", &conf, "-p", &pid];
        // Cyrus logs only to syslog, which the lab lacks: to see why an imapd
        // died, MAILSHIFT_CYRUS_STRACE=FILE runs the master under strace -f.
        let trace = std::env::var("MAILSHIFT_CYRUS_STRACE").ok();
        if let Some(t) = trace.as_deref() {
            argv.splice(0..0, ["strace", "-f", "-s", "200", "-o", t]);
        }
        Server::spawn_env("cyrus", d, &argv, &[("LD_LIBRARY_PATH", &lib)])
    }

    /// Adds or changes a user in the private sasldb.
    pub fn set_password(&self, user: &str, password: &str) {
        let db = self.dir.path().join("sasldb2");
        run(
            Command::new(cyrus_root().join("usr/sbin/saslpasswd2"))
                .env("LD_LIBRARY_PATH", lib_path())
                .args(["-p", "-c", "-u", "", "-f"])
                .arg(&db)
                .arg(user),
            Some(password.as_bytes()),
        );
        let id = super::identity();
        if id.root {
            run(Command::new("chown").arg(cyrus_user(&id)).arg(&db), None);
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }
    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port
    }
    pub fn master_user(&self) -> &'static str {
        MASTER_USER
    }
    pub fn master_password(&self) -> &'static str {
        MASTER_PASSWORD
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The hierarchy separator users see.
    pub fn separator(&self) -> char {
        if self.opts.unixhierarchysep {
            '/'
        } else {
            '.'
        }
    }
    /// A folder name as this Cyrus shows it, from a `/`-separated personal
    /// name (`Projects/2024` → `INBOX.Projects.2024` by default).
    pub fn folder(&self, name: &str) -> String {
        if name.eq_ignore_ascii_case("INBOX") {
            return "INBOX".into();
        }
        let local = name.replace('/', &self.separator().to_string());
        if self.opts.altnamespace {
            local
        } else {
            format!("INBOX{}{local}", self.separator())
        }
    }

    /// The master's stderr (Cyrus itself logs to syslog).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("cyrus.stderr.log"))
    }

    /// Delivers over LMTP; panics (with the log) if Cyrus refuses.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        if let Err(e) = self.try_deliver(user, raw) {
            panic!(
                "LMTP delivery to {user} on {}: {e}\nlog:\n{}",
                self.name,
                tail(&self.log(), 20)
            );
        }
    }

    /// Delivers over LMTP; the server's reply on refusal.
    pub fn try_deliver(&self, user: &str, raw: &[u8]) -> Result<(), String> {
        super::dovecot::lmtp_send(self.lmtp_port, "sender@example.net", user, raw)
    }

    /// Stops Cyrus.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Signals Cyrus to stop; `stop` or drop waits for it.
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.server.as_mut() {
            s.begin_stop();
        }
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if the port accepts and its first line starts with `prefix` (any
/// accept for an empty prefix: the IMAPS port speaks TLS first).
fn greets(port: u16, prefix: &str) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if prefix.is_empty() {
        return true;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let ok = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with(prefix);
    if ok && prefix == "* OK" {
        let _ = (&s).write_all(b"x LOGOUT\r\n");
    } else if ok {
        let _ = (&s).write_all(b"QUIT\r\n");
    }
    ok
}
