//! Replays the `smtp_command` fuzz seed corpus (and any saved crash) through
//! the SMTP parser and session core on stable, so what the fuzzer found once
//! stays fixed.

use mailshift::smtp::command;
use mailshift::smtp::session::{run_script, Options};

#[test]
fn every_smtp_corpus_file_gets_well_formed_replies() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/smtp_command");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        for line in data.split(|&b| b == b'\n') {
            let _ = command::parse(line);
        }
        for starttls in [false, true] {
            let opts = Options {
                starttls_available: starttls,
                max_message_size: 512,
                max_line: 512,
                ..Options::default()
            };
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
}
