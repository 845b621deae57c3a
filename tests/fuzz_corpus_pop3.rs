//! Replays the POP3 pre-auth fuzz corpus on stable, so what the fuzzer found
//! once stays fixed; the same bytes also go through the UIDL rewriter as
//! client commands and store replies.

use mailshift::pop3::preauth::{run_script, Options};
use mailshift::pop3::uidl::{Rewriter, UidlMap};

#[test]
fn every_pop3_corpus_file_gets_well_formed_answers() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/pop3_preauth");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        for (tls, require, oauth) in [
            (false, false, false),
            (true, false, false),
            (true, true, false),
            (false, false, true),
        ] {
            let mut opts = Options::default();
            opts.tls_available = tls;
            opts.require_tls = require;
            opts.oauth = oauth;
            opts.max_line = 512;
            opts.max_commands = 16;
            let out = run_script(&data, opts);
            assert!(out.ends_with(b"\r\n"), "{}", path.display());
            assert!(out.starts_with(b"+OK "), "{}", path.display());
        }
        let mut r = Rewriter::new(UidlMap::new([("a".to_string(), "b".to_string())]));
        r.from_client(&data);
        let mut out = Vec::new();
        for chunk in data.chunks(5) {
            r.from_store(chunk, &mut out);
        }
        // Nothing is lost or invented where no UIDL reply is involved.
        if !data.windows(4).any(|w| w.eq_ignore_ascii_case(b"UIDL")) {
            assert_eq!(out, data, "{}", path.display());
        }
        files += 1;
    }
    assert!(files >= 8, "seed corpus missing: {files} files");
}
