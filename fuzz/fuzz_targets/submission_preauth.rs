//! The submission pre-auth core against any client bytes: never a panic,
//! never a login before TLS where TLS is required (run_script asserts it),
//! and every line it writes is a well-formed reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::submission::preauth::{run_script, Options};

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let opts = Options {
        starttls_available: flags & 1 == 1,
        tls_active: flags & 2 == 2,
        require_tls: flags & 4 == 0,
        oauth: flags & 8 == 8,
        max_line: 512,
        ..Options::default()
    };
    let out = run_script(data, opts);
    assert!(out.ends_with(b"\r\n"));
    for l in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            l.len() >= 4 && l[..3].iter().all(u8::is_ascii_digit) && matches!(l[3], b' ' | b'-'),
            "{l:?}"
        );
    }
});
