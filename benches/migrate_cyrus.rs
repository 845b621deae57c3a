//! First pass Cyrus → Dovecot: mailshift vs mbsync on the same pair, same run.
//!
//!   cargo bench --bench migrate_cyrus -- [--n 5000] [--rounds 1]
//!
//! A private Cyrus 3.6 (tests/support/cyrus.rs; `altnamespace` with
//! `unixhierarchysep`, so the peers' corpus loads unchanged) holds one copy
//! of the corpus per tool and round (gen.py, the same seed: the same bytes);
//! each tool copies its copy into a fresh Dovecot user (sdbox). Each round
//! runs mailshift and mbsync back to back, alternating who goes first.
//! The corpus is the peers' generator (/work/shared/peers/corpus/gen.py,
//! MIGRATE_BENCH_GEN overrides).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use support::proxy::OLD_HOST;
use support::{render_keep, Certs, Cyrus, CyrusOpts, Dovecot, DovecotOpts, MailFormat, Slapd};

fn arg(name: &str) -> Option<usize> {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn gen_py() -> String {
    std::env::var("MIGRATE_BENCH_GEN")
        .unwrap_or_else(|_| "/work/shared/peers/corpus/gen.py".to_string())
}

/// Loads the corpus into `user` on Cyrus (as the master user, authzid).
fn load(port: u16, user: &str, n: usize) {
    let out = Command::new("python3")
        .arg(gen_py())
        .args(["--user", user, "--port", &port.to_string()])
        .args(["--n", &n.to_string(), "--seed", "1", "--conns", "4"])
        .output()
        .expect("gen.py runs");
    assert!(
        out.status.success(),
        "gen.py {user}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wall seconds of a command that must succeed.
fn timed(cmd: &mut Command, what: &str) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("runs");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn main() {
    let n = arg("--n").unwrap_or(5000);
    let rounds = arg("--rounds").unwrap_or(1).max(1);
    let certs = Certs::shared();
    let ldap = Slapd::start(false);
    let mut users = Vec::new();
    for r in 0..rounds {
        for tool in ["ms", "mb"] {
            let u = format!("{tool}{r}");
            ldap.add_user(&u, &format!("{u}pw"), OLD_HOST);
            users.push((u.clone(), format!("{u}pw")));
        }
    }
    let cyrus = Cyrus::start(
        "bench",
        CyrusOpts {
            altnamespace: true,
            unixhierarchysep: true,
            users: users.clone(),
            extra: String::new(),
        },
    );
    let dovecot = Dovecot::start(
        "new",
        &ldap,
        DovecotOpts {
            separator: '/',
            format: MailFormat::Sdbox,
            max_userip: 0,
            ..DovecotOpts::default()
        },
    );
    eprintln!("loading {n} messages into Cyrus for {} users", users.len());
    for (u, _) in &users {
        load(cyrus.imap_port(), u, n);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let p = |x: &Path| x.display().to_string();
    let config = render_keep(
        "mailshift.toml.in",
        &[
            ("LDAP_URL", ldap.url()),
            ("ADMIN_DN", ldap.admin_dn().to_string()),
            ("ADMIN_PASSWORD", ldap.admin_password().to_string()),
            ("OLD_IMAP_PORT", cyrus.imap_port().to_string()),
            ("OLD_LMTP_PORT", cyrus.lmtp_port().to_string()),
            ("NEW_IMAPS_PORT", dovecot.imaps_port().to_string()),
            ("NEW_LMTP_PORT", dovecot.lmtp_port().to_string()),
            ("CA_FILE", p(&certs.ca_pem)),
            ("MASTER_USER", "admin".into()),
            ("MASTER_PASSWORD", "adminpw".into()),
            ("TLS_CERT", p(&certs.cert_pem)),
            ("TLS_KEY", p(&certs.key_pem)),
        ],
        &support::proxy::PROXY_PORTS,
    )
    .replace("@IMAP_PORT@", "1")
    .replace("@IMAPS_PORT@", "2")
    .replace("@ADMIN_PORT@", "3");
    let config_path = dir.path().join("mailshift.toml");
    fs::write(
        &config_path,
        format!(
            "{config}\n[migration]\nfrom = \"old\"\nto = \"new\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write config");

    println!("| round | mailshift s | mbsync s | ratio |");
    println!("|---|---|---|---|");
    for r in 0..rounds {
        let ms_user = format!("ms{r}");
        let mb_user = format!("mb{r}");
        let run_ms = || {
            timed(
                Command::new(env!("CARGO_BIN_EXE_mailshift"))
                    .args(["migrate", "--user", &ms_user, "--config"])
                    .arg(&config_path),
                "mailshift migrate",
            )
        };
        // mbsync logs in as the user on both sides (it has no authzid);
        // over the plain ports, as the Dovecot bench does.
        let rc = dir.path().join(format!("mbsyncrc-{r}"));
        let state = dir.path().join(format!("mbsync-state-{r}/"));
        fs::create_dir_all(&state).expect("mkdir");
        fs::write(
            &rc,
            format!(
                "IMAPAccount old\nHost 127.0.0.1\nPort {}\nUser {mb_user}\nPass {mb_user}pw\nSSLType None\nAuthMechs LOGIN\n\n\
                 IMAPStore old\nAccount old\n\n\
                 IMAPAccount new\nHost 127.0.0.1\nPort {}\nUser {mb_user}\nPass {mb_user}pw\nSSLType None\nAuthMechs LOGIN\n\n\
                 IMAPStore new\nAccount new\n\n\
                 Channel migrate\nFar :old:\nNear :new:\nPatterns *\nCreate Near\nExpunge None\nSync Pull\n\
                 SyncState {}\nCopyArrivalDate yes\n",
                cyrus.imap_port(),
                dovecot.imap_port(),
                state.display()
            ),
        )
        .expect("write mbsyncrc");
        let run_mb = || {
            timed(
                Command::new("mbsync").arg("-c").arg(&rc).arg("migrate"),
                "mbsync",
            )
        };
        let (ms, mb) = if r % 2 == 0 {
            let ms = run_ms();
            (ms, run_mb())
        } else {
            let mb = run_mb();
            (run_ms(), mb)
        };
        println!("| {r} | {ms:.2} | {mb:.2} | {:.2}x |", mb / ms);
    }
    drop(dovecot);
    drop(cyrus);
}
