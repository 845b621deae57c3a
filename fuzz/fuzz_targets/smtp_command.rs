//! SMTP command path: any client bytes through the parser and the session
//! core; never a panic, every reply line well formed, and any address the
//! parser accepts has no control bytes and bounded lengths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::smtp::command;
use mailshift::smtp::session::{run_script, Options};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Ok(command::Command::Rcpt { to }) = command::parse(line) {
            let a = to.to_string();
            assert!(!a.chars().any(char::is_control));
            assert!(to.local.len() <= command::MAX_LOCAL_PART_BYTES);
            assert!(to.domain.len() <= command::MAX_DOMAIN_BYTES);
        }
    }
    let opts = Options {
        starttls_available: data.first().is_some_and(|b| b & 1 == 1),
        max_message_size: 512,
        max_line: 512,
        ..Options::default()
    };
    let out = run_script(data, opts);
    assert!(out.ends_with(b"\r\n"));
    for l in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(l.len() >= 4 && l[..3].iter().all(u8::is_ascii_digit), "{l:?}");
    }
});
