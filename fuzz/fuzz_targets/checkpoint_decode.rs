//! Arbitrary bytes into the checkpoint decoders, full `load` and lazy
//! `open` (and as a delta over a small parent): an error or a valid tree,
//! never a panic, and allocation bounded by the input (run with
//! `-rss_limit_mb` and `-malloc_limit_mb` set low).
#![no_main]

use std::io::Write;

use cowvfs::Snapshot;
use libfuzzer_sys::fuzz_target;

mod accept;
use accept::{accept, parent};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::load_from(data) {
        accept(s);
    }
    let p = parent();
    if let Ok(s) = Snapshot::load_delta_from(data, &p) {
        accept(s);
    }
    let Ok(mut f) = tempfile::NamedTempFile::new() else { return };
    if f.write_all(data).is_err() {
        return;
    }
    if let Ok(s) = Snapshot::open(f.path()) {
        accept(s);
    }
    if let Ok(s) = Snapshot::open_delta(f.path(), &p) {
        accept(s);
    }
});
