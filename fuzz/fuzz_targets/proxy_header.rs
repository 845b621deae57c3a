//! PROXY protocol header decoding: any bytes from a load balancer's side,
//! never a panic, and never a byte taken past the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::proxy_protocol::{decode_prefix, MAX_V1_BYTES};

fuzz_target!(|data: &[u8]| {
    let (header, taken) = decode_prefix(data);
    assert!(taken <= data.len());
    if let Ok(h) = header {
        assert_eq!(h.length, taken);
        assert!(h.length <= 16 + usize::from(u16::MAX));
        if data.starts_with(b"PROXY ") {
            assert!(h.length <= MAX_V1_BYTES);
        }
    }
});
