//! POP3 pre-auth path: any client bytes in, responses out, never a panic,
//! and every response line well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::pop3::preauth::{run_script, Options};

fuzz_target!(|data: &[u8]| {
    let mut opts = Options::default();
    opts.tls_available = data.first().is_some_and(|b| b & 1 == 1);
    opts.require_tls = data.first().is_some_and(|b| b & 2 == 2);
    opts.oauth = data.first().is_some_and(|b| b & 4 == 4);
    opts.max_line = 512;
    opts.max_commands = 16;
    let out = run_script(data, opts);
    // The proxy only ever writes whole CRLF-terminated lines.
    assert!(out.ends_with(b"\r\n"));
});
