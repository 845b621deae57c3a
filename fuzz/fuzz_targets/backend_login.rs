//! The proxy's backend login (greeting, CAPABILITY, ID, login, post-login
//! CAPABILITY) against any bytes a store may send: never a panic, and what
//! reaches the client (capabilities in its tagged OK) stays on one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::store::imap::client::{replay_bearer_login, replay_login};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, replies)) = data.split_first() else {
        return;
    };
    // Bit 1: a client's bearer token (challenge relayed); else bit 0: master.
    let result = if mode & 2 == 2 {
        replay_bearer_login(replies)
    } else {
        replay_login(replies, mode & 1 == 1)
    };
    if let Ok((capabilities, leftover)) = result {
        assert!(capabilities.iter().all(|c| !c.contains('\n')));
        assert!(leftover.len() <= replies.len());
    }
});
