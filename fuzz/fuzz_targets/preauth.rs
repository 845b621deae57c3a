//! Pre-auth command path: any client bytes in, responses out, never a panic,
//! and every response line well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::imap::preauth::{run_script, Options};

fuzz_target!(|data: &[u8]| {
    let opts = Options {
        starttls_available: data.first().is_some_and(|b| b & 1 == 1),
        require_tls: data.first().is_some_and(|b| b & 2 == 2),
        max_line: 1024,
        max_literal: 256,
        oauth: true,
        ..Options::default()
    };
    let out = run_script(data, opts);
    // The proxy only ever writes whole CRLF-terminated lines.
    assert!(out.ends_with(b"\r\n"));
});
