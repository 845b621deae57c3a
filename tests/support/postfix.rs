//! A private Postfix (the sending MTA of the tests): its own config dir and
//! queue in a temp dir, smtpd on a free loopback port, everything relayed to
//! `relayhost = [127.0.0.1]:PORT` (mailshift), retries after about a second.
//! `postfix -c DIR start` daemonizes; drop runs `postfix -c DIR abort` and
//! kills the master by its pid file if it is still there.
use super::{read_log, run, tail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Postfix {
    smtpd_port: u16,
    conf_dir: PathBuf,
    dir: tempfile::TempDir,
}

const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Starts Postfix relaying everything to 127.0.0.1:`relay_port`.
    pub fn start(relay_port: u16) -> Postfix {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "postfix missing: run deploy/lab/install-deps.sh (Debian package postfix)"
        );
        let dir = super::shared_tempdir("mailshift-postfix-");
        let d = dir.path();
        let conf_dir = d.join("etc");
        for sub in ["etc", "spool", "data"] {
            fs::create_dir(d.join(sub)).expect("mkdir");
        }
        // Postfix's daemons run as the postfix user and keep their locks here.
        run(
            Command::new("chown").arg("postfix").arg(d.join("data")),
            None,
        );
        let smtpd_port = super::free_port();
        let p = |x: &str| d.join(x).display().to_string();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {spool}\n\
             data_directory = {data}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = sender.test\n\
             mydomain = sender.test\n\
             myorigin = sender.test\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             relayhost = [127.0.0.1]:{relay_port}\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {root}\n\
             smtp_tls_security_level = none\n\
             smtputf8_enable = yes\n\
             message_size_limit = 104857600\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             queue_run_delay = 1s\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             biff = no\n\
             multi_instance_directories =\n",
            spool = p("spool"),
            data = p("data"),
            log = p("maillog"),
            root = d.display(),
        );
        fs::write(conf_dir.join("main.cf"), main_cf).expect("main.cf");
        let master = format!("127.0.0.1:{smtpd_port} inet n - n - - smtpd\n{MASTER_CF}");
        fs::write(conf_dir.join("master.cf"), master).expect("master.cf");
        let pf = Postfix {
            smtpd_port,
            conf_dir,
            dir,
        };
        pf.postfix("start");
        let deadline = Instant::now() + super::START_TIMEOUT;
        while !super::port_open(smtpd_port) {
            assert!(
                Instant::now() < deadline,
                "postfix smtpd not up on {smtpd_port}; log:\n{}",
                pf.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pf
    }

    fn postfix(&self, verb: &str) -> String {
        run(
            Command::new("postfix")
                .arg("-c")
                .arg(&self.conf_dir)
                .arg(verb),
            None,
        )
    }

    pub fn smtpd_port(&self) -> u16 {
        self.smtpd_port
    }

    /// Postfix's mail log.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("maillog"))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log(), 30)
    }

    /// Log lines of deliveries to the relay with `status=`.
    pub fn deliveries(&self, status: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" postfix/smtp[") && l.contains(&format!("status={status}")))
            .map(String::from)
            .collect()
    }

    /// Asks Postfix to retry its deferred mail now (`postqueue -f`), as an
    /// admin would after bringing a relay back.
    pub fn flush(&self) {
        let _ = Command::new("postqueue")
            .arg("-c")
            .arg(&self.conf_dir)
            .arg("-f")
            .output();
    }

    /// Messages still in Postfix's queue (files under the queue dirs).
    pub fn queued(&self) -> usize {
        ["incoming", "active", "deferred", "maildrop"]
            .iter()
            .map(|q| count_files(&self.dir.path().join("spool").join(q)))
            .sum()
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                1
            }
        })
        .sum()
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.conf_dir)
            .arg("abort")
            .output();
        let pid_file = self.dir.path().join("spool/pid/master.pid");
        if let Ok(pid) = fs::read_to_string(pid_file) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).output();
        }
    }
}
