//! The SMTP/LMTP reply reader of the store client (`store::smtp::reply`) against any bytes a store may
//! send: never a panic; every reply has one three-digit code and at most 100
//! lines, and renders for the client as well-formed lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::store::smtp::take_reply;

fuzz_target!(|data: &[u8]| {
    let mut buf = Vec::new();
    for chunk in data.chunks(509) {
        buf.extend_from_slice(chunk);
        loop {
            match take_reply(&mut buf, "fuzz") {
                Ok(Some(reply)) => {
                    assert!((0..=999).contains(&reply.code));
                    assert!(!reply.lines.is_empty() && reply.lines.len() <= 100);
                    let code = format!("{:03}", reply.code);
                    for l in reply.to_client().split("\r\n") {
                        assert!(l.starts_with(&code), "{l:?}");
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
