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

use cowvfs::{Snapshot, Vfs};
use libfuzzer_sys::fuzz_target;

mod accept;
use accept::accept;

const MAGIC: &[u8; 9] = b"cowvfs\0ck";
const VERSION: u16 = 1;
const FLAG_DELTA: u16 = 1;
const FLAG_ZSTD: u16 = 2;

fn parent() -> Snapshot {
    let mut v = Vfs::new();
    let _ = v.create_dir("/p");
    let _ = v.write_file("/p/f", b"parent");
    v.snapshot()
}

/// A checkpoint file with `meta` and `data` behind a correct header.
fn seal(flags: u16, parent_root: Option<[u8; 32]>, meta: &[u8], data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(200 + meta.len() + data.len());
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&VERSION.to_le_bytes());
    f.extend_from_slice(&flags.to_le_bytes());
    f.extend_from_slice(&[0u8; 32]);
    if let Some(p) = parent_root {
        f.extend_from_slice(&p);
    }
    f.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    f.extend_from_slice(&(data.len() as u64).to_le_bytes());
    f.extend_from_slice(blake3::hash(meta).as_bytes());
    f.extend_from_slice(meta);
    f.extend_from_slice(data);
    let trailer = blake3::hash(&f);
    f.extend_from_slice(trailer.as_bytes());
    f
}

fuzz_target!(|input: &[u8]| {
    let [flag_bits, l0, l1, l2, l3, rest @ ..] = input else { return };
    let meta_len = (u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize).min(rest.len());
    let (meta, data) = rest.split_at(meta_len);
    let delta = flag_bits & 1 != 0;
    let flags = if delta { FLAG_DELTA } else { 0 } | if flag_bits & 2 != 0 { FLAG_ZSTD } else { 0 };
    let p = parent();
    let file = seal(flags, delta.then(|| *p.root_hash().as_bytes()), meta, data);
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
