//! Arbitrary sequences of wasi:filesystem descriptor calls against cowvfs's
//! host implementation, called directly (no guest): no panic, every error
//! an error code, invariants after every call, nothing left open.
//! Needs `--features wasi`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cowvfs::wasi::fuzzing::run(data) {
        panic!("{e}");
    }
});
