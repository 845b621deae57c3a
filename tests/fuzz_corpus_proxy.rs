//! Replays the `proxy_header` fuzz seed corpus (and any saved crash) through
//! the PROXY header decoder on stable: the same invariants as the target.

use mailshift::proxy_protocol::{decode_prefix, MAX_V1_BYTES};

#[test]
fn every_proxy_header_corpus_file_decodes_within_its_header() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/proxy_header");
    let mut files = 0;
    let mut decoded = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        // Every prefix too: a header cut anywhere is incomplete, never wrong.
        for end in 0..=data.len() {
            let (header, taken) = decode_prefix(&data[..end]);
            assert!(taken <= end, "{}", path.display());
            if let Ok(h) = header {
                assert_eq!(h.length, taken, "{}", path.display());
                if data.starts_with(b"PROXY ") {
                    assert!(h.length <= MAX_V1_BYTES);
                }
                if end == data.len() {
                    decoded += 1;
                }
            }
        }
        files += 1;
    }
    assert!(files >= 8, "seed corpus missing: {files} files");
    assert!(decoded >= 7, "the valid seeds must decode: {decoded}");
}
