//! The whole lab (slapd + old and new Dovecot) and mailshift itself.
use super::{read_log, render_keep, tail, wait_ready, Certs, Dovecot, DovecotOpts, MailFormat};
use super::{Server, Slapd};
use std::fs;
use std::path::{Path, PathBuf};

pub const OLD_HOST: &str = "old.example.org";
pub const NEW_HOST: &str = "new.example.org";

/// Placeholders that [`Lab::mailshift_config`] leaves for [`Mailshift::start`].
pub const PROXY_PORTS: [&str; 4] = ["IMAP_PORT", "IMAPS_PORT", "ADMIN_PORT", "SMTP_PORT"];

/// slapd + "old" (Maildir, separator '/') + "new" (sdbox, separator '.'),
/// with alice (old, alicepw) holding "only-on-old" and bob (new, bobpw)
/// holding "only-on-new". Fields are public so tests can poke the servers.
pub struct Lab {
    // Drop order: the stores before the directory they authenticate against.
    pub old: Dovecot,
    pub new: Dovecot,
    pub ldap: Slapd,
    pub certs: &'static Certs,
}

impl Lab {
    pub fn start(syncprov: bool) -> Lab {
        Self::start_full(syncprov, DovecotOpts::default(), false, "")
    }

    /// Like [`start`](Self::start), with `old_conf` appended to the old
    /// store's dovecot.conf only.
    pub fn start_with_old_conf(syncprov: bool, old_conf: &str) -> Lab {
        Self::start_full(syncprov, DovecotOpts::default(), false, old_conf)
    }

    /// Like [`start`](Self::start); `new_metadata` turns METADATA on in the
    /// new store (the old one never has it).
    pub fn start_with_metadata(syncprov: bool, new_metadata: bool) -> Lab {
        Self::start_full(syncprov, DovecotOpts::default(), new_metadata, "")
    }

    /// Like [`start`](Self::start), both stores with `base`'s options (the
    /// separator and format stay each store's own).
    pub fn start_with(syncprov: bool, base: DovecotOpts) -> Lab {
        Self::start_full(syncprov, base, false, "")
    }

    fn start_full(syncprov: bool, base: DovecotOpts, new_metadata: bool, old_conf: &str) -> Lab {
        let certs = Certs::shared();
        let ldap = Slapd::start(syncprov);
        ldap.add_user("alice", "alicepw", OLD_HOST);
        ldap.add_user("bob", "bobpw", NEW_HOST);
        // The two stores start in parallel: they are independent.
        let (old, new) = std::thread::scope(|s| {
            let old = s.spawn(|| {
                Dovecot::start(
                    "old",
                    &ldap,
                    DovecotOpts {
                        separator: '/',
                        format: MailFormat::Maildir,
                        extra: format!("{}\n{old_conf}", base.extra),
                        ..base.clone()
                    },
                )
            });
            let new = s.spawn(|| {
                Dovecot::start(
                    "new",
                    &ldap,
                    DovecotOpts {
                        separator: '.',
                        format: MailFormat::Sdbox,
                        metadata: new_metadata,
                        // A store that lacks an extension the old one has:
                        // scripts that need it are refused, and reported.
                        sieve: "sieve_extensions = -regex".into(),
                        ..base.clone()
                    },
                )
            });
            let join = |h: std::thread::ScopedJoinHandle<'_, Dovecot>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            };
            (join(old), join(new))
        });
        old.deliver(
            "alice",
            &super::message(
                "carol@example.net",
                "alice@example.org",
                "only-on-old",
                "hi",
            ),
        );
        new.deliver(
            "bob",
            &super::message("carol@example.net", "bob@example.org", "only-on-new", "hi"),
        );
        Lab {
            old,
            new,
            ldap,
            certs,
        }
    }

    /// A mailshift config (deploy/lab/mailshift.toml.in) pointing at this
    /// lab: old over STARTTLS, new over implicit TLS, both verified with the
    /// lab CA. `@IMAP_PORT@`, `@IMAPS_PORT@`, `@ADMIN_PORT@` stay for
    /// [`Mailshift::start`]. `extra_toml` is appended, so it may only add
    /// tables the template lacks (e.g. `[migration]`, `[smtp]`).
    pub fn mailshift_config(&self, extra_toml: &str) -> String {
        let p = |x: &Path| x.display().to_string();
        let mut text = render_keep(
            "mailshift.toml.in",
            &[
                ("LDAP_URL", self.ldap.url()),
                ("ADMIN_DN", self.ldap.admin_dn().to_string()),
                ("ADMIN_PASSWORD", self.ldap.admin_password().to_string()),
                ("OLD_IMAP_PORT", self.old.imap_port().to_string()),
                ("OLD_LMTP_PORT", self.old.lmtp_port().to_string()),
                ("NEW_IMAPS_PORT", self.new.imaps_port().to_string()),
                ("NEW_LMTP_PORT", self.new.lmtp_port().to_string()),
                ("CA_FILE", p(&self.certs.ca_pem)),
                ("MASTER_USER", self.old.master_user().to_string()),
                ("MASTER_PASSWORD", self.old.master_password().to_string()),
                ("TLS_CERT", p(&self.certs.cert_pem)),
                ("TLS_KEY", p(&self.certs.key_pem)),
            ],
            &PROXY_PORTS,
        );
        // ManageSieve on both stores (the template also serves stores
        // without it, e.g. Cyrus in tests/cyrus.rs).
        for (table, url) in [
            (
                "old",
                format!("sieve+starttls://127.0.0.1:{}", self.old.sieve_port()),
            ),
            (
                "new",
                format!("sieve://127.0.0.1:{}", self.new.sieve_port()),
            ),
        ] {
            let header = format!("[backends.{table}]\n");
            text = text.replacen(&header, &format!("{header}sieve = \"{url}\"\n"), 1);
        }
        if !extra_toml.is_empty() {
            text.push('\n');
            text.push_str(extra_toml);
            text.push('\n');
        }
        text
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Both stores shut down at once; the fields then wait in drop order.
        self.old.begin_stop();
        self.new.begin_stop();
    }
}

/// mailshift (`serve --config FILE`) as a child process.
pub struct Mailshift {
    smtp_port: u16,
    imap_port: u16,
    imaps_port: u16,
    admin_port: u16,
    config_path: PathBuf,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl Mailshift {
    /// Fills `@IMAP_PORT@`, `@IMAPS_PORT@`, `@ADMIN_PORT@` with free ports,
    /// starts the binary this test crate was built with, and waits until the
    /// IMAP listener accepts. Panics with mailshift's log if it doesn't.
    pub fn start(config_text: &str) -> Mailshift {
        Self::start_full(config_text, None, &[])
    }

    /// Like [`start`](Self::start), with the command run under `wrapper`
    /// (e.g. `prlimit --nofile=200:200`).
    pub fn start_wrapped(config_text: &str, wrapper: &[&str]) -> Mailshift {
        Self::start_full(config_text, None, wrapper)
    }

    /// Like [`Mailshift::start`]; `@SMTP_PORT@` (if the config has it) gets
    /// `smtp_port` when given, so a restarted mailshift listens where a test's
    /// MTA already relays to. The SMTP listener must accept too.
    pub fn start_with_smtp_port(config_text: &str, smtp_port: Option<u16>) -> Mailshift {
        Self::start_full(config_text, smtp_port, &[])
    }

    fn start_full(config_text: &str, smtp_port: Option<u16>, wrapper: &[&str]) -> Mailshift {
        let mut last_err = String::new();
        for _ in 0..super::START_TRIES {
            match Self::try_start(config_text, smtp_port, wrapper) {
                Ok(m) => return m,
                Err(e) if super::is_bind_conflict(&e) => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "mailshift: no free ports after {} tries: {last_err}",
            super::START_TRIES
        );
    }

    fn try_start(
        config_text: &str,
        smtp_port: Option<u16>,
        wrapper: &[&str],
    ) -> Result<Mailshift, String> {
        let dir = super::shared_tempdir("mailshift-proxy-");
        let (imap_port, imaps_port, admin_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let smtp_port = smtp_port.unwrap_or_else(super::free_port);
        let has_smtp = config_text.contains("@SMTP_PORT@");
        // Tests ask the admin API right after the start: wait for it too.
        let has_admin = config_text.contains("@ADMIN_PORT@");
        let text = config_text
            .replace("@SMTP_PORT@", &smtp_port.to_string())
            .replace("@IMAP_PORT@", &imap_port.to_string())
            .replace("@IMAPS_PORT@", &imaps_port.to_string())
            .replace("@ADMIN_PORT@", &admin_port.to_string());
        let left = super::placeholders(&text);
        assert!(left.is_empty(), "mailshift config: unfilled {left:?}");
        let config_path = dir.path().join("mailshift.toml");
        fs::write(&config_path, text).expect("writing mailshift config");
        let cfg = config_path.display().to_string();
        // Plain log lines in the file (tracing colours them otherwise);
        // MAILSHIFT_LOG from the test's environment still applies.
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend([env!("CARGO_BIN_EXE_mailshift"), "serve", "--config", &cfg]);
        let mut server = Server::spawn_env("mailshift", dir.path(), &argv, &[("NO_COLOR", "1")]);
        let log_path = server.stderr_log.clone();
        let res = wait_ready(
            &format!("mailshift (imap {imap_port})"),
            &mut server,
            &|| read_log(&log_path),
            &mut || {
                super::port_open(imap_port)
                    && (!has_smtp || super::port_open(smtp_port))
                    && (!has_admin || super::port_open(admin_port))
            },
        );
        let m = Mailshift {
            smtp_port,
            imap_port,
            imaps_port,
            admin_port,
            config_path,
            server: Some(server),
            dir,
        };
        res.map(|()| m)
    }

    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// mailshift's stdout and stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("mailshift.stderr.log"))
    }
    /// Last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log(), 40)
    }

    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// SIGKILL: a crash, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }
}

impl Drop for Mailshift {
    fn drop(&mut self) {
        self.stop();
    }
}
