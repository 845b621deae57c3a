//! ManageSieve pre-auth path: any client bytes in, responses out, never a
//! panic, and everything written is whole lines a client can frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::managesieve::preauth::{run_script, well_formed, Options};

fuzz_target!(|data: &[u8]| {
    let opts = Options {
        starttls_available: data.first().is_some_and(|b| b & 1 == 1),
        require_tls: data.first().is_some_and(|b| b & 2 == 2),
        // An 'L' (LISTSCRIPTS, LOGOUT) first sets it.
        oauth: data.first().is_some_and(|b| b & 4 == 4),
        max_line: 1024,
        max_literal: 256,
        ..Options::default()
    };
    let out = run_script(data, opts);
    assert!(out.ends_with(b"\r\n"));
    assert!(well_formed(&out));
});
