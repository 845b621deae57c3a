//! The migration client's response reader (framer, literals, tagged replies,
//! imap-codec decoding of data and codes, APPENDUID) against any bytes a
//! store may send: never a panic, and bounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::store::imap::client::replay_replies;

fuzz_target!(|data: &[u8]| {
    let (replies, _) = replay_replies(data, 1024, 4096);
    for r in &replies {
        assert!(!r.text.contains('\n'));
        if let Some((_, uids)) = r.append_uids() {
            assert!(uids.len() <= 1_000_001);
        }
    }
});
