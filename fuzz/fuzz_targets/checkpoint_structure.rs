//! The checkpoint loaders past their hash checks. `checkpoint_decode`
//! feeds raw bytes, so almost every mutation dies at the metadata hash and
//! the structural checks behind it (records to a tree, links, counters,
//! limits) rarely meet hostile input. Here the input is only the parts a
//! writer chooses, and the target seals them into a file with correct
//! lengths and hashes:
//!
//! ```text
//! flags u8 | meta length u32 | meta (postcard manifest) | data (chunks)
//! ```
//!
//! The header's root hash is left zero (a full load then fails only at
//! its very last check, after the whole structure has been checked; a
//! lazy open never compares it); a delta names the real parent's root.
//! An error or a valid tree, never a panic, and allocation bounded by the
//! input (run with `-rss_limit_mb` and `-malloc_limit_mb` set low).
//! `fuzz/seeds/checkpoint_structure` holds real checkpoints cut into this
//! form.
#![no_main]

use std::io::Write;

use cowvfs::checkpoint::{Header, seal_for_fuzzing};
use cowvfs::Snapshot;
use libfuzzer_sys::fuzz_target;

mod accept;
use accept::{accept, parent};

fuzz_target!(|input: &[u8]| {
    let [flag_bits, l0, l1, l2, l3, rest @ ..] = input else { return };
    let meta_len = (u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize).min(rest.len());
    let (meta, data) = rest.split_at(meta_len);
    let delta = flag_bits & 1 != 0;
    let p = parent();
    let header = Header::for_fuzzing(flag_bits & 2 != 0, [0; 32].into(), delta.then(|| p.root_hash()));
    let file = seal_for_fuzzing(&header, meta, data);
    let loaded = if delta {
        Snapshot::load_delta_from(&file[..], &p)
    } else {
        Snapshot::load_from(&file[..])
    };
    if let Ok(s) = loaded {
        accept(s);
    }
    let Ok(mut f) = tempfile::NamedTempFile::new() else { return };
    if f.write_all(&file).is_err() {
        return;
    }
    let opened = if delta { Snapshot::open_delta(f.path(), &p) } else { Snapshot::open(f.path()) };
    if let Ok(s) = opened {
        accept(s);
    }
});
