//! A private Dovecot 2.3 from `deploy/lab/dovecot.conf.in` (`dovecot -F`
//! under the supervisor): IMAP with STARTTLS, IMAPS, LMTP, POP3 and submission
//! (relaying to [`Dovecot::submission_relay_port`], where a test may run a
//! sink) on free ports, users from the given slapd (auth_bind), a master user,
//! ManageSieve and Sieve filtering on LMTP (`deploy/lab/dovecot-sieve.conf.in`).
use super::{read_log, render, run, tail, wait_ready, Certs, Server, Slapd};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const MASTER_USER: &str = "admin";
pub const MASTER_PASSWORD: &str = "adminpw";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailFormat {
    Maildir,
    Sdbox,
}

#[derive(Clone, Debug)]
pub struct DovecotOpts {
    /// Hierarchy separator of the inbox namespace.
    pub separator: char,
    pub format: MailFormat,
    /// `mail_max_userip_connections`; 0 = unlimited (benchmarks).
    pub max_userip: u32,
    /// Appended to the rendered config (Dovecot merges same-named sections),
    /// e.g. to give special-use folders other names.
    pub extra: String,
    /// METADATA (RFC 5464) with per-mailbox private entries in a file dict.
    pub metadata: bool,
    /// More Sieve plugin settings (e.g. `sieve_extensions = -regex`).
    pub sieve: String,
    /// OAuth: AUTH=OAUTHBEARER and AUTH=XOAUTH2 checked by the `oauth2`
    /// passdb against this introspection URL (`support::oauth`).
    pub oauth2_introspection: Option<String>,
}

impl Default for DovecotOpts {
    fn default() -> Self {
        DovecotOpts {
            separator: '/',
            format: MailFormat::Maildir,
            max_userip: 50,
            extra: String::new(),
            metadata: false,
            sieve: String::new(),
            oauth2_introspection: None,
        }
    }
}

pub struct Dovecot {
    name: String,
    imap_port: u16,
    imaps_port: u16,
    lmtp_port: u16,
    submission_port: u16,
    submission_relay_port: u16,
    pop3_port: u16,
    pop3s_port: u16,
    sieve_port: u16,
    conf: PathBuf,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl Dovecot {
    pub fn start(name: &str, ldap: &Slapd, opts: DovecotOpts) -> Dovecot {
        let mut last_err = String::new();
        for _ in 0..super::START_TRIES {
            match Self::try_start(name, ldap, &opts) {
                Ok(d) => return d,
                Err(e) if super::is_bind_conflict(&e) => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "dovecot {name}: no free ports after {} tries: {last_err}",
            super::START_TRIES
        );
    }

    fn try_start(name: &str, ldap: &Slapd, opts: &DovecotOpts) -> Result<Dovecot, String> {
        let id = super::identity();
        let certs = Certs::shared();
        let dir = super::shared_tempdir(&format!("mailshift-dovecot-{name}-"));
        let d = dir.path();
        let mail = d.join("mail");
        fs::create_dir(&mail).expect("mkdir mail");
        if id.root {
            std::os::unix::fs::chown(&mail, Some(id.mail_uid), Some(id.mail_gid))
                .expect("chown mail dir");
        }
        let (imap_port, imaps_port, lmtp_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let (submission_port, submission_relay_port) = (super::free_port(), super::free_port());
        let (pop3_port, pop3s_port) = (super::free_port(), super::free_port());
        let sieve_port = super::free_port();
        let location = match opts.format {
            MailFormat::Maildir => "maildir:~/Maildir",
            MailFormat::Sdbox => "sdbox:~/sdbox",
        };
        let s = |v: &dyn ToString| v.to_string();
        let conf_text = render(
            "dovecot.conf.in",
            &[
                ("DIR", d.display().to_string()),
                ("NAME", s(&name)),
                ("IMAP_PORT", s(&imap_port)),
                ("IMAPS_PORT", s(&imaps_port)),
                ("LMTP_PORT", s(&lmtp_port)),
                ("SUBMISSION_PORT", s(&submission_port)),
                ("SUBMISSION_RELAY_PORT", s(&submission_relay_port)),
                ("POP3_PORT", s(&pop3_port)),
                ("POP3S_PORT", s(&pop3s_port)),
                ("SSL_CERT", certs.cert_pem.display().to_string()),
                ("SSL_KEY", certs.key_pem.display().to_string()),
                ("MAIL_HOME", format!("{}/%n", mail.display())),
                ("MAIL_LOCATION", s(&location)),
                ("SEPARATOR", s(&opts.separator)),
                ("MAX_USERIP", s(&opts.max_userip)),
                ("MAIL_UID", s(&id.mail_uid)),
                ("MAIL_GID", s(&id.mail_gid)),
                ("LOGIN_USER", id.login_user.clone()),
                ("INTERNAL_USER", id.internal_user.clone()),
                ("INTERNAL_GROUP", id.internal_group.clone()),
            ],
        );
        let sieve_text = render(
            "dovecot-sieve.conf.in",
            &[
                ("SIEVE_PORT", s(&sieve_port)),
                ("SIEVE_SETTINGS", opts.sieve.clone()),
            ],
        );
        let conf = d.join("dovecot.conf");
        let metadata = if opts.metadata {
            "imap_metadata = yes\nmail_attribute_dict = file:%h/dovecot-attributes\n"
        } else {
            ""
        };
        let oauth = match &opts.oauth2_introspection {
            Some(url) => {
                let ext = d.join("dovecot-oauth2.conf.ext");
                fs::write(
                    &ext,
                    format!(
                        "introspection_mode = post\nintrospection_url = {url}\n\
                         force_introspection = yes\nusername_attribute = username\n\
                         active_attribute = active\nactive_value = true\n"
                    ),
                )
                .expect("writing dovecot-oauth2.conf.ext");
                super::set_mode(&ext, 0o644);
                format!(
                    "auth_mechanisms = plain login oauthbearer xoauth2\n\
                     passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                     args = {}\n}}\n",
                    ext.display()
                )
            }
            None => String::new(),
        };
        fs::write(
            &conf,
            format!(
                "{conf_text}\n{metadata}{sieve_text}\n{oauth}{}\n",
                opts.extra
            ),
        )
        .expect("writing dovecot.conf");
        let ldap_ext = render(
            "dovecot-ldap.conf.ext.in",
            &[
                ("LDAP_URL", ldap.url()),
                ("ADMIN_DN", s(&ldap.admin_dn())),
                ("ADMIN_PASSWORD", s(&ldap.admin_password())),
            ],
        );
        fs::write(d.join("dovecot-ldap.conf.ext"), ldap_ext).expect("writing ldap ext");
        let master = render(
            "master-users.in",
            &[
                ("MASTER_USER", s(&MASTER_USER)),
                ("MASTER_PASSWORD", s(&MASTER_PASSWORD)),
            ],
        );
        fs::write(d.join("master-users"), master).expect("writing master-users");
        // The auth process runs as the internal user and reads both files.
        super::set_mode(&d.join("dovecot-ldap.conf.ext"), 0o644);
        super::set_mode(&d.join("master-users"), 0o644);

        let conf_s = conf.display().to_string();
        let mut dc = Dovecot {
            name: name.to_string(),
            imap_port,
            imaps_port,
            lmtp_port,
            submission_port,
            submission_relay_port,
            pop3_port,
            pop3s_port,
            sieve_port,
            conf,
            server: None,
            dir,
        };
        let mut server = Server::spawn("dovecot", dc.dir.path(), &["dovecot", "-F", "-c", &conf_s]);
        let root = server.pid();
        let res = wait_ready(
            &format!("dovecot {name} (imap {imap_port}, lmtp {lmtp_port}, sieve {sieve_port})"),
            &mut server,
            &|| dc.log(),
            &mut || {
                greets(imap_port, "* OK")
                    && greets(lmtp_port, "220 ")
                    && greets(submission_port, "220 ")
                    && greets(pop3_port, "+OK")
                    && greets(sieve_port, "\"IMPLEMENTATION\"")
                    && [imap_port, lmtp_port, submission_port, pop3_port, sieve_port]
                        .iter()
                        .all(|p| super::port_owned_by(root, *p))
            },
        );
        dc.server = Some(server);
        res.map(|()| dc)
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
    /// Dovecot's submission service (STARTTLS).
    pub fn submission_port(&self) -> u16 {
        self.submission_port
    }
    /// Where the submission service relays to (nothing listens unless a
    /// test starts a sink there).
    pub fn submission_relay_port(&self) -> u16 {
        self.submission_relay_port
    }
    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }
    pub fn pop3s_port(&self) -> u16 {
        self.pop3s_port
    }
    /// ManageSieve (plain, STARTTLS offered).
    pub fn sieve_port(&self) -> u16 {
        self.sieve_port
    }
    pub fn master_user(&self) -> &'static str {
        MASTER_USER
    }
    pub fn master_password(&self) -> &'static str {
        MASTER_PASSWORD
    }
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Where a user's mail lives (mail_home).
    pub fn mail_home(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Dovecot's own log plus the master's stderr (config errors land there).
    pub fn log(&self) -> String {
        let d = self.dir.path();
        format!(
            "{}{}",
            read_log(&d.join("dovecot.stderr.log")),
            read_log(&d.join("dovecot.log"))
        )
    }

    /// Delivers over LMTP; `user` without a domain gets @example.org.
    /// Panics (with the log) if Dovecot refuses.
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
        let rcpt = if user.contains('@') {
            user.to_string()
        } else {
            format!("{user}@example.org")
        };
        lmtp_send(self.lmtp_port, "sender@example.net", &rcpt, raw)
    }

    /// `doveadm -c CONF ARGS…`; stdout, panics on failure.
    pub fn doveadm(&self, args: &[&str]) -> String {
        run(
            Command::new("doveadm").arg("-c").arg(&self.conf).args(args),
            None,
        )
    }

    /// Stops Dovecot (about a second: the master waits for its children).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Starts Dovecot again on the same ports with the same mail; returns
    /// once IMAP and LMTP greet.
    pub fn start_again(&mut self) {
        self.stop();
        let conf_s = self.conf.display().to_string();
        let mut server = Server::spawn(
            "dovecot",
            self.dir.path(),
            &["dovecot", "-F", "-c", &conf_s],
        );
        let (imap_port, lmtp_port, sieve_port) = (self.imap_port, self.lmtp_port, self.sieve_port);
        let res = wait_ready(
            &format!("dovecot {} restart", self.name),
            &mut server,
            &|| self.log(),
            &mut || {
                greets(imap_port, "* OK")
                    && greets(lmtp_port, "220 ")
                    && greets(sieve_port, "\"IMPLEMENTATION\"")
            },
        );
        self.server = Some(server);
        if let Err(e) = res {
            panic!("{e}");
        }
    }

    /// Signals Dovecot to stop; `stop` or drop waits for it.
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.server.as_mut() {
            s.begin_stop();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if the port accepts and its first line starts with `prefix`.
fn greets(port: u16, prefix: &str) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let ok = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with(prefix);
    if ok && prefix == "* OK" {
        let _ = (&s).write_all(b"x LOGOUT\r\n");
    }
    if ok && prefix.starts_with('"') {
        let _ = (&s).write_all(b"LOGOUT\r\n");
    }
    ok
}

/// One LMTP transaction (RFC 2033) with one recipient.
pub fn lmtp_send(port: u16, from: &str, rcpt: &str, raw: &[u8]) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut w = stream;
    let mut reply = |expect: char| -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            if line.is_empty() {
                return Err(format!("connection closed after {all:?}"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        if all.starts_with(expect) {
            Ok(all)
        } else {
            Err(all.trim_end().to_string())
        }
    };
    reply('2')?;
    let mut cmd = |c: &str| w.write_all(c.as_bytes()).map_err(|e| e.to_string());
    cmd("LHLO test.example.org\r\n")?;
    reply('2')?;
    cmd(&format!("MAIL FROM:<{from}>\r\n"))?;
    reply('2')?;
    cmd(&format!("RCPT TO:<{rcpt}>\r\n"))?;
    reply('2')?;
    cmd("DATA\r\n")?;
    reply('3')?;
    let mut data = Vec::with_capacity(raw.len() + 64);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    w.write_all(&data).map_err(|e| e.to_string())?;
    reply('2')?;
    let _ = w.write_all(b"QUIT\r\n");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    Ok(())
}
