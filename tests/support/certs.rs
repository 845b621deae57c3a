//! TLS material from `deploy/lab/certs.sh`: a lab CA and a server cert for
//! `localhost` and IP `127.0.0.1` (mailshift verifies backends by the host in
//! their URL).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Certs {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Certs {
    /// A fresh CA and server cert in their own temp dir.
    pub fn new() -> Certs {
        let dir = super::shared_tempdir("mailshift-certs-");
        generate(dir.path());
        let mut c = Certs::at(dir.path());
        c._dir = Some(dir);
        c
    }

    /// One set shared by every test in every test binary, kept in cargo's
    /// target tmp dir so nothing piles up in /tmp. Generated once; parallel
    /// test binaries race safely by renaming a complete dir into place.
    pub fn shared() -> &'static Certs {
        static SHARED: OnceLock<Certs> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mailshift-lab-certs");
            if !dir.join("server.key").exists() {
                let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("mailshift-lab-certs.{}", std::process::id()));
                let _ = fs::remove_dir_all(&tmp);
                generate(&tmp);
                if fs::rename(&tmp, &dir).is_err() {
                    // Another binary won the race; use its certs.
                    let _ = fs::remove_dir_all(&tmp);
                }
            }
            Certs::at(&dir)
        })
    }

    fn at(dir: &Path) -> Certs {
        Certs {
            ca_pem: dir.join("ca.pem"),
            cert_pem: dir.join("server.pem"),
            key_pem: dir.join("server.key"),
            _dir: None,
        }
    }
}

fn generate(dir: &Path) {
    fs::create_dir_all(dir).expect("creating certs dir");
    super::run(
        Command::new("sh")
            .arg(super::lab_template_dir().join("certs.sh"))
            .arg(dir),
        None,
    );
    super::set_mode(dir, 0o755);
}
