//! A private OpenLDAP slapd from `deploy/lab/slapd.conf.in`, in the
//! foreground (`-d 0`: no fork, no debug noise) under the supervisor.
use super::{read_log, render, run, tail, wait_ready, Server};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SUFFIX: &str = "dc=example,dc=org";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "secret";

pub struct Slapd {
    port: u16,
    conf: PathBuf,
    server: Option<Server>,
    // Last: the dir goes after the process is stopped.
    dir: tempfile::TempDir,
}

impl Slapd {
    /// Starts slapd with the base entries loaded; `syncprov` enables the
    /// RFC 4533 provider overlay (mailshift's refreshAndPersist cache).
    pub fn start(syncprov: bool) -> Slapd {
        let status = super::repo_dir().join("deploy/ldap/mailuserstatus.schema");
        Slapd::start_with_status_schema(syncprov, &status)
    }

    /// Like [`Slapd::start`], with `status_schema` as the file that defines
    /// `mailUserStatus` (a directory's own, e.g. a Sun-style schema) in place
    /// of `deploy/ldap/mailuserstatus.schema`; panics if slapd refuses it.
    pub fn start_with_status_schema(syncprov: bool, status_schema: &Path) -> Slapd {
        let mut last_err = String::new();
        for _ in 0..super::START_TRIES {
            let dir = super::shared_tempdir("mailshift-slapd-");
            fs::create_dir(dir.path().join("data")).expect("mkdir data");
            let conf = dir.path().join("slapd.conf");
            let text = render(
                "slapd.conf.in",
                &[
                    ("DIR", dir.path().display().to_string()),
                    (
                        "SCHEMA_DIR",
                        super::repo_dir().join("deploy/ldap").display().to_string(),
                    ),
                    ("STATUS_SCHEMA", status_schema.display().to_string()),
                    ("ROOT_PW", ADMIN_PASSWORD.to_string()),
                    ("SYNCPROV", if syncprov { "" } else { "# " }.to_string()),
                ],
            );
            fs::write(&conf, text).expect("writing slapd.conf");
            let mut s = Slapd {
                port: super::free_port(),
                conf,
                server: None,
                dir,
            };
            match s.spawn() {
                Ok(()) => {
                    let base = render("base.ldif.in", &[]);
                    s.ldap_tool("ldapadd", &[], base.as_bytes());
                    return s;
                }
                Err(e) if super::is_bind_conflict(&e) => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "slapd: no free port after {} tries: {last_err}",
            super::START_TRIES
        );
    }

    fn spawn(&mut self) -> Result<(), String> {
        let url = format!("ldap://127.0.0.1:{}/", self.port);
        let conf = self.conf.display().to_string();
        let mut server = Server::spawn(
            "slapd",
            self.dir.path(),
            &["slapd", "-f", &conf, "-h", &url, "-d", "0"],
        );
        let url = self.url();
        let log_path = server.stderr_log.clone();
        let root = server.pid();
        let res = wait_ready(
            &format!("slapd on {url}"),
            &mut server,
            &|| read_log(&log_path),
            &mut || {
                super::port_open(self.port)
                    && super::port_owned_by(root, self.port)
                    && Command::new("ldapwhoami")
                        .args(["-x", "-H", &url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD])
                        .output()
                        .map(|o| o.status.success())
                        .unwrap_or(false)
            },
        );
        self.server = Some(server);
        res
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn base_dn(&self) -> &'static str {
        PEOPLE
    }
    pub fn admin_dn(&self) -> &'static str {
        ADMIN_DN
    }
    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }
    pub fn user_dn(&self, login: &str) -> String {
        format!("uid={login},{PEOPLE}")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// slapd's stderr (startup errors; `-d 0` logs nothing else).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("slapd.stderr.log"))
    }

    /// Adds a user as the lab does: inetOrgPerson + inetLocalMailRecipient +
    /// mailshiftUser, mail login@example.org, mailUserStatus active.
    pub fn add_user(&self, login: &str, password: &str, mailhost: &str) {
        let ldif = render(
            "user.ldif.in",
            &[
                ("LOGIN", login.to_string()),
                ("PASSWORD", password.to_string()),
                ("MAILHOST", mailhost.to_string()),
            ],
        );
        self.ldap_tool("ldapadd", &[], ldif.as_bytes());
    }

    /// Replaces (or adds) one attribute value of a user.
    pub fn set_attr(&self, login: &str, attr: &str, value: &str) {
        let ldif = format!(
            "dn: {}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n",
            self.user_dn(login)
        );
        self.modify(&ldif);
    }

    /// Removes all values of an attribute (no error if it has none).
    pub fn delete_attr(&self, login: &str, attr: &str) {
        let ldif = format!(
            "dn: {}\nchangetype: modify\nreplace: {attr}\n",
            self.user_dn(login)
        );
        self.modify(&ldif);
    }

    /// Any ldapmodify LDIF, as the admin.
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", &[], ldif.as_bytes());
    }

    /// `ldapsearch -LLL` under ou=people as the admin; the LDIF output.
    pub fn search(&self, filter: &str, attrs: &[&str]) -> String {
        let mut args = vec!["-LLL", "-b", PEOPLE, filter];
        args.extend_from_slice(attrs);
        self.ldap_tool("ldapsearch", &args, b"")
    }

    fn ldap_tool(&self, tool: &str, args: &[&str], input: &[u8]) -> String {
        let url = self.url();
        let mut cmd = Command::new(tool);
        cmd.args(["-x", "-H", &url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD]);
        cmd.args(args);
        run(&mut cmd, (!input.is_empty()).then_some(input))
    }

    /// Stops slapd, keeping its data and port (an LDAP outage).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Starts slapd again on the same port with the same data; returns once
    /// it answers binds.
    pub fn start_again(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("slapd restart: {e}\nslapd log:\n{}", tail(&self.log(), 40));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
