//! Replays the `submission_preauth` fuzz seed corpus (and any saved crash)
//! through the submission pre-auth core on stable, so what the fuzzer found
//! once stays fixed.

use mailshift::submission::preauth::{run_script, Options};

#[test]
fn every_submission_corpus_file_gets_well_formed_replies() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/submission_preauth"
    );
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        for flags in 0u8..8 {
            let opts = Options {
                starttls_available: flags & 1 == 1,
                tls_active: flags & 2 == 2,
                require_tls: flags & 4 == 0,
                max_line: 512,
                ..Options::default()
            };
            // run_script panics if a login is asked for before TLS where
            // TLS is required.
            let out = run_script(&data, opts);
            assert!(out.ends_with(b"\r\n"), "{}", path.display());
            for l in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(
                    l.len() >= 4 && l[..3].iter().all(u8::is_ascii_digit),
                    "{}: {:?}",
                    path.display(),
                    String::from_utf8_lossy(l)
                );
            }
        }
        files += 1;
    }
    assert!(files >= 5, "seed corpus missing: {files} files");
    // The injection seed: the AUTH pipelined after STARTTLS never runs.
    let data = std::fs::read(format!("{dir}/starttls-injection")).expect("seed");
    let opts = Options {
        starttls_available: true,
        ..Options::default()
    };
    let out = String::from_utf8(run_script(&data, opts)).expect("ascii");
    assert!(out.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{out}");
}
