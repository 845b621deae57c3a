//! The proxy's backend login (greeting, CAPABILITY, ID, login, post-login
//! CAPABILITY) against any bytes a store may send: never a panic, and what
//! reaches the client (capabilities in its tagged OK) stays on one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::imap::backend::replay_login;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, replies)) = data.split_first() else {
        return;
    };
    if let Ok(done) = replay_login(replies, mode & 1 == 1) {
        assert!(!done.capabilities.contains('\n'));
        assert!(done.leftover.len() <= replies.len());
    }
});
