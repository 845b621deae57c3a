//! A private Courier-IMAP 5 (Debian's, unpacked by `deploy/lab/install-deps.sh`
//! under [`courier_root`]) with courier-authlib's userdb: users with real
//! passwords, Maildirs in a temp dir, IMAP and POP3 (Debian's default: no
//! SASL, USER/PASS only) on free ports.
//!
//! courier-authlib has its config (`/etc/courier`), its modules
//! (`/usr/lib/courier-authlib`), its helpers (`/usr/lib/courier`) and its
//! socket (`/run/courier`) compiled in. Each instance therefore runs in a mount
//! namespace of its own (`unshare -m`, which needs root), with private
//! directories bound over those four paths: the host's are never touched, and
//! two instances never see each other's users. Courier has no master user:
//! mailshift logs in with each user's password (`passwords_file`).
use super::{tail, wait_ready, Server};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where install-deps.sh unpacks Courier (`MAILSHIFT_COURIER_ROOT` overrides).
pub fn courier_root() -> PathBuf {
    std::env::var_os("MAILSHIFT_COURIER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mailshift-lab/courier"))
}

/// The compiled-in paths the namespace binds over.
const BOUND: [&str; 4] = [
    "/etc/courier",
    "/run/courier",
    "/usr/lib/courier",
    "/usr/lib/courier-authlib",
];

pub struct Courier {
    imap_port: u16,
    pop3_port: u16,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl Courier {
    /// Starts Courier with `users` (login, password), each with an empty Maildir.
    pub fn start(name: &str, users: &[(&str, &str)]) -> Courier {
        let root = courier_root();
        assert!(
            root.join("usr/bin/imapd").exists(),
            "no Courier under {} (run deploy/lab/install-deps.sh as root)",
            root.display()
        );
        let id = super::identity();
        assert!(
            id.root,
            "Courier runs in a mount namespace of its own (unshare -m): the tests need root"
        );
        let mut last_err = String::new();
        for _ in 0..super::START_TRIES {
            match Self::try_start(name, users, &root, &id) {
                Ok(c) => return c,
                Err(e) if super::is_bind_conflict(&e) || e.contains("bind") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "courier {name}: no free port after {} tries: {last_err}",
            super::START_TRIES
        );
    }

    fn try_start(
        name: &str,
        users: &[(&str, &str)],
        root: &Path,
        id: &super::Identity,
    ) -> Result<Courier, String> {
        let dir = super::shared_tempdir(&format!("mailshift-courier-{name}-"));
        let d = dir.path();
        for sub in ["etc", "run/authdaemon", "home"] {
            fs::create_dir_all(d.join(sub)).expect("mkdir courier dir");
        }
        // The package's own config, with the userdb module only.
        copy_dir(&root.join("etc/courier"), &d.join("etc"));
        let rc = fs::read_to_string(d.join("etc/authdaemonrc")).expect("authdaemonrc");
        let rc: String = rc
            .lines()
            .map(|l| {
                if l.starts_with("authmodulelist=") {
                    "authmodulelist=\"authuserdb\"".to_string()
                } else if l.starts_with("daemons=") {
                    "daemons=2".to_string()
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect();
        fs::write(d.join("etc/authdaemonrc"), rc).expect("write authdaemonrc");
        let mut userdb = String::new();
        for (user, password) in users {
            let home = d.join("home").join(user);
            let hash = super::run(
                Command::new("openssl").args(["passwd", "-6", password]),
                None,
            );
            userdb.push_str(&format!(
                "{user}\tuid={}|gid={}|home={}|mail={}|systempw={}\n",
                id.mail_uid,
                id.mail_gid,
                home.display(),
                home.join("Maildir").display(),
                hash.trim()
            ));
        }
        fs::write(d.join("etc/userdb"), userdb).expect("write userdb");
        let port = super::free_port();
        let pop3_port = super::free_port();
        // libpcre3's package puts it under /lib, not /usr/lib: without that
        // directory a host that lacks libpcre3 cannot run Courier's tools.
        let lib = format!(
            "{}:{}:{}",
            root.join("usr/lib").display(),
            root.join("usr/lib/x86_64-linux-gnu").display(),
            root.join("lib/x86_64-linux-gnu").display()
        );
        let r = root.display();
        let mut script = String::from("set -e\n");
        for (target, source) in BOUND.iter().zip([
            d.join("etc"),
            d.join("run"),
            root.join("usr/lib/courier"),
            root.join("usr/lib/courier-authlib"),
        ]) {
            script.push_str(&format!(
                "mkdir -p {target}\nmount --bind {} {target}\n",
                source.display()
            ));
        }
        script.push_str(&format!(
            "export LD_LIBRARY_PATH={lib}\n\
             chmod 600 /etc/courier/userdb\n\
             {r}/usr/sbin/makeuserdb\n"
        ));
        for (user, _) in users {
            let home = d.join("home").join(user);
            script.push_str(&format!(
                "mkdir -p {h}\n{r}/usr/bin/maildirmake.courier {h}/Maildir\nchown -R {u}:{g} {h}\n",
                h = home.display(),
                u = id.mail_uid,
                g = id.mail_gid
            ));
        }
        // Both daemons in the background, so a TERM from the supervisor
        // reaches the trap and ends them (and with them the namespace).
        script.push_str(&format!(
            "{r}/usr/lib/courier/courier-authlib/authdaemond &\n\
             auth=$!\n\
             set -a\n. /etc/courier/imapd\nset +a\n\
             IMAP_STARTTLS=NO\nIMAP_TLS_REQUIRED=0\nexport IMAP_STARTTLS IMAP_TLS_REQUIRED\n\
             {r}/usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=40 -maxperip=40 \
             -nodnslookup -noidentlookup {port} \
             /usr/lib/courier/courier/imaplogin {r}/usr/bin/imapd Maildir &\n\
             tcpd=$!\n\
             set -a\n. /etc/courier/pop3d\nset +a\n\
             POP3_STARTTLS=NO\nPOP3_TLS_REQUIRED=0\nexport POP3_STARTTLS POP3_TLS_REQUIRED\n\
             {r}/usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=40 -maxperip=40 \
             -nodnslookup -noidentlookup {pop3_port} \
             /usr/lib/courier/courier/courierpop3login /usr/lib/courier/courier/courierpop3d Maildir &\n\
             pop=$!\n\
             trap 'kill $tcpd $pop $auth 2>/dev/null; exit 0' TERM INT HUP\n\
             wait\n"
        ));
        let script_path = d.join("run.sh");
        fs::write(&script_path, script).expect("write run.sh");
        let script_arg = script_path.display().to_string();
        let mut server = Server::spawn(
            "courier",
            d,
            &[
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                &script_arg,
            ],
        );
        let log_path = server.stderr_log.clone();
        let log = move || fs::read_to_string(&log_path).unwrap_or_default();
        wait_ready(
            &format!("courier {name} (imap {port}, pop3 {pop3_port})"),
            &mut server,
            &log,
            &mut || greets(port) && pop3_greets(pop3_port),
        )?;
        Ok(Courier {
            imap_port: port,
            pop3_port,
            server: Some(server),
            dir,
        })
    }

    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// What Courier wrote to stderr.
    pub fn log(&self) -> String {
        tail(
            &fs::read_to_string(self.dir.path().join("courier.stderr.log")).unwrap_or_default(),
            40,
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        self.stop();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy courier config");
        }
    }
}

fn greets(port: u16) -> bool {
    greets_with(port, "* OK", b"x LOGOUT\r\n")
}

fn pop3_greets(port: u16) -> bool {
    greets_with(port, "+OK", b"QUIT\r\n")
}

/// Whether the server on `port` greets with `ok`; says `bye` if so.
fn greets_with(port: u16, ok: &str, bye: &[u8]) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let greeted = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with(ok);
    if greeted {
        let _ = (&s).write_all(bye);
    }
    greeted
}
