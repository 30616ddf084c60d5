//! Arbitrary bytes into the checkpoint decoders, full `load` and lazy
//! `open` (and as a delta over a small parent): an error or a valid tree,
//! never a panic, and allocation bounded by the input (run with
//! `-rss_limit_mb` and `-malloc_limit_mb` set low).
#![no_main]

use std::io::Write;

use cowvfs::{Snapshot, Vfs};
use libfuzzer_sys::fuzz_target;

fn parent() -> Snapshot {
    let mut v = Vfs::new();
    let _ = v.create_dir("/p");
    let _ = v.write_file("/p/f", b"parent");
    v.snapshot()
}

fn accept(s: Snapshot) {
    // Whatever decodes must be a whole, valid tree that can be read.
    if let Err(e) = s.check_invariants() {
        panic!("decoded tree breaks an invariant: {e}");
    }
    let _ = s.root_hash();
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        let Ok(entries) = s.read_dir(&dir) else { continue };
        for e in entries {
            let p = if dir == "/" { format!("/{}", e.name) } else { format!("{dir}/{}", e.name) };
            match e.kind {
                cowvfs::FileType::Dir => work.push(p),
                // Lazy chunks may fail verification: an error, never a panic.
                cowvfs::FileType::File => {
                    let _ = s.read_file(&p);
                }
                cowvfs::FileType::Symlink => {
                    let _ = s.read_link(&p);
                }
            }
        }
    }
}

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
