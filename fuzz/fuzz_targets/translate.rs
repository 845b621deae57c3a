//! The translating relay's command and response rewriters against any bytes
//! from either side: never a panic, and how the bytes are cut into reads
//! never changes what goes out (the first byte picks the cut).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailshift::imap::translate::exercise;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let whole = exercise(data, usize::MAX);
    let pieces = exercise(data, usize::from(cut % 17) + 1);
    assert_eq!(whole, pieces);
});
