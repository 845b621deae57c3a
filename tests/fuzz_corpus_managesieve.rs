//! Replays the ManageSieve fuzz seed corpus (and any saved crash) through the
//! pre-auth core on stable, so what the fuzzer found once stays fixed.

use mailshift::managesieve::preauth::{run_script, well_formed, Options};

#[test]
fn every_corpus_file_gets_well_formed_answers() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/managesieve_preauth"
    );
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        for (starttls, require_tls, oauth) in [
            (false, false, false),
            (true, false, false),
            (true, true, false),
            (false, false, true),
        ] {
            let opts = Options {
                starttls_available: starttls,
                require_tls,
                oauth,
                max_line: 1024,
                max_literal: 256,
                ..Options::default()
            };
            let out = run_script(&data, opts);
            assert!(out.ends_with(b"\r\n"), "{}", path.display());
            assert!(well_formed(&out), "{}", path.display());
        }
        files += 1;
    }
    assert!(files >= 5, "seed corpus missing: {files} files");
}
