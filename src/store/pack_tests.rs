//! Tests of packed stores end to end in memory and in a directory: round
//! trips, request counts, old-format stores, migration, read-ahead, and
//! damaged, truncated and oversized objects.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::{Snapshot, Vfs};

/// Bytes that do not repeat within a chunk.
pub(super) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `files` files of `size` unique bytes each, plus a small one.
fn tree(files: usize, size: usize) -> Vfs {
    let mut v = Vfs::new();
    v.create_dir_all("/d").unwrap();
    for i in 0..files {
        v.write_file(&format!("/d/f{i:03}"), &noise(i as u64 + 1, size))
            .unwrap();
    }
    v.write_file("/d/small", b"small").unwrap();
    v
}

fn opts(pack_size: u64) -> TransferOptions<'static> {
    TransferOptions {
        pack_size,
        ..TransferOptions::default()
    }
}

fn pull_ok(store: &dyn BlobStore, root: &blake3::Hash, want: &Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.ck");
    pull(store, root, &out, None, &TransferOptions::default()).unwrap();
    let back = Snapshot::load(&out).unwrap();
    assert!(want.diff(&back).is_empty());
}

/// Pulls `root` and checks the file is, byte for byte, the one a local
/// save of `want` (the very tree pushed) writes.
fn pull_same_file(store: &dyn BlobStore, root: &blake3::Hash, want: &Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let (out, local) = (dir.path().join("p.ck"), dir.path().join("local.ck"));
    pull(store, root, &out, None, &TransferOptions::default()).unwrap();
    want.save(&local).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&local).unwrap());
}

#[test]
fn a_push_packs_chunks_and_a_pull_costs_requests_per_pack_not_per_chunk() {
    let store = Arc::new(Metered::new(MemStore::new()));
    let meter = store.meter();
    // 8 MiB in 128 chunks, 1 MiB packs.
    let snap = tree(32, 256 << 10).snapshot();
    let pushed = push(&snap, &*store, &opts(1 << 20)).unwrap();
    assert_eq!(pushed.moved_chunks, 129);
    assert_eq!(pushed.packs, 9, "8 full packs and the small chunk's");
    // Version, packs, one index object, the manifest.
    assert_eq!(meter.puts.load(Ordering::Relaxed), 1 + 9 + 1 + 1);
    assert_eq!(meter.heads.load(Ordering::Relaxed), 0);
    assert_eq!(store.list("chunks/").unwrap().len(), 0, "nothing loose");
    assert_eq!(store.list("index/").unwrap().len(), 1);

    let before = meter.requests();
    pull_ok(&*store, &pushed.root, &snap);
    let reqs = meter.requests() - before;
    // Manifest, version, listing, index object, then one ranged read per
    // pack at most (adjacent chunks of a pack coalesce).
    assert!(reqs <= 4 + 9, "{reqs} requests for 129 chunks");
    pull_same_file(&*store, &pushed.root, &snap);

    // Pushing it again moves nothing and writes nothing but the manifest:
    // a conditional create, refused, then the write over it, then a look
    // at the gc lease and at the manifest (a collection may have been
    // about to delete it: see `transfer::confirm`).
    let (p0, r0) = (meter.puts.load(Ordering::Relaxed), meter.requests());
    let again = push(&snap, &*store, &opts(1 << 20)).unwrap();
    assert_eq!((again.moved_chunks, again.packs), (0, 0));
    assert_eq!(meter.puts.load(Ordering::Relaxed) - p0, 2);
    assert!(meter.requests() - r0 <= 6 + 3, "{}", meter.requests() - r0);
}

#[test]
fn a_near_identical_push_moves_one_small_pack() {
    let store = Arc::new(Metered::new(MemStore::new()));
    let meter = store.meter();
    let mut v = tree(64, 256 << 10);
    push(&v.snapshot(), &*store, &TransferOptions::default()).unwrap();
    let mut f = v.read_file("/d/f007").unwrap();
    f[100_000] ^= 0xff;
    v.write_file("/d/f007", &f).unwrap();
    let snap = v.snapshot();
    let (r0, out0) = (meter.requests(), meter.bytes_out.load(Ordering::Relaxed));
    let st = push(&snap, &*store, &TransferOptions::default()).unwrap();
    let reqs = meter.requests() - r0;
    let moved = meter.bytes_out.load(Ordering::Relaxed) - out0;
    assert_eq!((st.moved_chunks, st.packs), (1, 1));
    assert!(reqs <= 10, "{reqs} requests");
    assert!(moved < 1 << 20, "{moved} bytes");
    let lazy = open_lazy(store, &st.root, None).unwrap();
    assert_eq!(lazy.read_file("/d/f007").unwrap(), f);
}

#[test]
fn a_sequential_lazy_read_waits_for_few_round_trips() {
    let store = Arc::new(Metered::new(MemStore::new()));
    let meter = store.meter();
    let mut v = Vfs::new();
    let big = noise(9, 8 << 20);
    v.write_file("/big", &big).unwrap();
    v.write_file("/other", &noise(10, 1 << 20)).unwrap();
    let pushed = push(&v.snapshot(), &*store, &TransferOptions::default()).unwrap();
    let read = |at: u64, len: usize| {
        let mut sandbox = open_lazy(store.clone(), &pushed.root, None).unwrap().fork();
        let fd = sandbox
            .open("/big", crate::OpenOptions::new().read(true))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while got.len() < len {
            let n = sandbox
                .read_at(fd, &mut buf, at + got.len() as u64)
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    let g0 = meter.gets.load(Ordering::Relaxed);
    let got = read(0, usize::MAX);
    assert!(got == big);
    // 128 chunks in windows of 8, 16, 32, 64, then the 8 left; the open
    // itself reads the manifest, the version and the index object.
    let gets = meter.gets.load(Ordering::Relaxed) - g0;
    assert!(gets <= 3 + 5, "{gets} requests for 128 chunks");
    // A single read in the middle of a file fetches a small window only.
    let in0 = meter.bytes_in.load(Ordering::Relaxed);
    assert_eq!(read(4 << 20, 4096), big[4 << 20..(4 << 20) + 4096]);
    let moved = meter.bytes_in.load(Ordering::Relaxed) - in0;
    assert!(
        moved <= pushed.manifest_bytes + 100_000 + ((ahead::FIRST_WINDOW) << 16),
        "{moved}"
    );
    // Read-ahead never leaves the file: the last chunk of /big brings
    // nothing of /other.
    let in0 = meter.bytes_in.load(Ordering::Relaxed);
    assert_eq!(read((8 << 20) - 4096, 4096), big[(8 << 20) - 4096..]);
    let moved = meter.bytes_in.load(Ordering::Relaxed) - in0;
    assert!(
        moved <= pushed.manifest_bytes + 100_000 + (1 << 16),
        "{moved}"
    );
}

#[test]
fn an_old_format_store_reads_pushes_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Arc::new(Metered::new(DirStore::open(dir.path().join("s")).unwrap()));
    let meter = fleet.meter();
    let mut v = tree(16, 200_000);
    let old = v.snapshot();
    let pushed = push_loose(&old, &*fleet, &TransferOptions::default()).unwrap();
    let loose = fleet.list("chunks/").unwrap().len();
    assert_eq!(loose as u64, pushed.chunks);
    pull_ok(&*fleet, &pushed.root, &old);
    let lazy = open_lazy(fleet.clone(), &pushed.root, None).unwrap();
    assert_eq!(
        lazy.read_file("/d/f003").unwrap(),
        old.read_file("/d/f003").unwrap()
    );

    // A new push to it dedups against the loose chunks by one listing.
    v.write_file("/d/new", &noise(99, 70_000)).unwrap();
    let new = v.snapshot();
    let h0 = meter.heads.load(Ordering::Relaxed);
    let st = push(&new, &*fleet, &TransferOptions::default()).unwrap();
    assert_eq!(st.moved_chunks, 2);
    assert_eq!(meter.heads.load(Ordering::Relaxed), h0);
    assert_eq!(
        fleet.get_objects(&[VERSION_KEY], 100).unwrap()[0].as_deref(),
        Some(&b"cowvfs store format 2\n"[..])
    );

    let m = migrate(&*fleet, &opts(1 << 20)).unwrap();
    assert_eq!(m.loose, loose as u64);
    assert_eq!((m.packed_chunks, m.removed), (loose as u64, loose as u64));
    assert!(m.packs >= 3, "{m:?}");
    assert!(fleet.list("chunks/").unwrap().is_empty());
    pull_ok(&*fleet, &pushed.root, &old);
    pull_ok(&*fleet, &st.root, &new);
    // Again: nothing to do.
    let again = migrate(&*fleet, &opts(1 << 20)).unwrap();
    assert_eq!(again, MigrateStats::default());
    // Migrated in tree order: a file's chunks are side by side, so a
    // file's pull is one ranged read.
    let cat = Catalog::load(&*fleet, None).unwrap();
    let a = cat
        .locate(&blake3::hash(&noise(4, 200_000)[..65536]))
        .unwrap();
    let b = cat
        .locate(&blake3::hash(&noise(4, 200_000)[65536..131072]))
        .unwrap();
    assert_eq!((a.pack, a.offset + a.len as u64), (b.pack, b.offset));
}

#[test]
fn a_store_of_a_newer_format_is_refused() {
    let store = MemStore::new();
    let snap = tree(1, 10).snapshot();
    let pushed = push(&snap, &store, &TransferOptions::default()).unwrap();
    store.put_raw(VERSION_KEY, b"cowvfs store format 3\n".to_vec());
    let e = open_lazy(Arc::new(store), &pushed.root, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let store = MemStore::new();
    store.put_raw(VERSION_KEY, b"hello".to_vec());
    let e = push(&snap, &store, &TransferOptions::default()).unwrap_err();
    assert!(e.to_string().contains(VERSION_KEY), "{e}");
}

/// A packed store of two files, and the pack and entry of `/f`'s chunk.
fn packed_store() -> (Arc<MemStore>, blake3::Hash, String, PackEntry) {
    let store = Arc::new(MemStore::new());
    let mut v = Vfs::new();
    v.write_file("/f", &noise(1, 1000)).unwrap();
    v.write_file("/g", b"other").unwrap();
    let pushed = push(&v.snapshot(), &*store, &TransferOptions::default()).unwrap();
    let index = store.list("index/").unwrap().pop().unwrap();
    let rec = read_index(&*store, &index).unwrap().pop().unwrap();
    let addr = blake3::hash(&noise(1, 1000));
    let e = *rec
        .entries
        .iter()
        .find(|e| e.addr == *addr.as_bytes())
        .unwrap();
    (store, pushed.root, rec.key(), e)
}

fn pull_err(store: &dyn BlobStore, root: &blake3::Hash) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.ck");
    let e = pull(store, root, &out, None, &TransferOptions::default()).unwrap_err();
    assert!(!out.exists());
    // Nor a temporary beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    e
}

#[test]
fn damaged_packs_are_named_and_never_read_as_data() {
    let (store, root, key, e) = packed_store();
    let good = store.get_raw(&key).unwrap();
    let name = pack::parse_name(&key, "packs/").unwrap();
    assert_eq!(verify_pack(&*store, &name).unwrap().size, good.len() as u64);
    assert_eq!(
        read_pack_index(&*store, &name, good.len() as u64).unwrap(),
        verify_pack(&*store, &name).unwrap()
    );

    // A flipped byte inside the chunk.
    let mut bad = good.clone();
    bad[e.offset as usize + 10] ^= 1;
    store.put_raw(&key, bad);
    let err = pull_err(&*store, &root);
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let msg = err.to_string();
    assert!(msg.contains(&key) && msg.contains("corrupt"), "{msg}");
    assert!(msg.contains(&blake3::Hash::from_bytes(e.addr).to_hex().to_string()));
    let lazy = open_lazy(store.clone(), &root, None).unwrap();
    let le = lazy.read_file("/f").unwrap_err();
    assert_eq!(le.kind(), ErrorKind::Io);
    assert!(le.to_string().contains("corrupt"), "{le}");
    assert!(verify_pack(&*store, &name).is_err());

    // Truncated: the index says more than the object holds.
    store.put_raw(&key, good[..e.offset as usize + 5].to_vec());
    let msg = pull_err(&*store, &root).to_string();
    assert!(msg.contains(&key) && msg.contains("truncated"), "{msg}");
    let e2 = read_pack_index(&*store, &name, good.len() as u64).unwrap_err();
    assert!(e2.to_string().contains("truncated"), "{e2}");

    // Gone.
    store.delete_objects(&[&key]).unwrap();
    let msg = pull_err(&*store, &root).to_string();
    assert!(msg.contains(&key) && msg.contains("missing"), "{msg}");

    // Restored: everything reads again.
    store.put_raw(&key, good);
    let lazy = open_lazy(store, &root, None).unwrap();
    assert_eq!(lazy.read_file("/f").unwrap(), noise(1, 1000));
}

#[test]
fn damaged_and_oversized_index_objects_are_refused_by_name() {
    let (store, root, _, e) = packed_store();
    let index = store.list("index/").unwrap().pop().unwrap();
    let good = store.get_raw(&index).unwrap();
    let mut bad = good.clone();
    bad[30] ^= 1;
    store.put_raw(&index, bad);
    // The catalog names the damage; a read that needs the chunk fails
    // naming it, and never returns bytes.
    let cat = Catalog::load(&*store, None).unwrap();
    assert_eq!(cat.chunk_count(), 0);
    assert!(cat.damage()[0].contains(&index), "{:?}", cat.damage());
    let err = pull_err(&*store, &root);
    let msg = err.to_string();
    assert!(msg.contains("missing") && msg.contains(&index), "{msg}");
    let hex = blake3::Hash::from_bytes(e.addr).to_hex();
    assert!(msg.contains(hex.as_str()) || msg.contains("chunk"), "{msg}");
    let e3 = read_index(&*store, &index).unwrap_err();
    assert_eq!(e3.kind(), ErrorKind::Corrupt);
    assert!(e3.to_string().contains(&index), "{e3}");

    // Oversized: refused before it is held.
    store.put_raw(&index, vec![0; MAX_INDEX_OBJECT as usize + 1]);
    let e4 = Catalog::load(&*store, None).unwrap_err();
    assert!(e4.to_string().contains("more than the"), "{e4}");

    // Truncated.
    store.put_raw(&index, good[..good.len() - 1].to_vec());
    let cat = Catalog::load(&*store, None).unwrap();
    assert!(cat.damage()[0].contains("truncated"), "{:?}", cat.damage());

    // Names that are not index objects are ignored; restored, all reads.
    store.put_raw("index/junk", b"junk".to_vec());
    store.put_raw(&index, good);
    pull_ok(&*store, &root, &{
        let mut v = Vfs::new();
        v.write_file("/f", &noise(1, 1000)).unwrap();
        v.write_file("/g", b"other").unwrap();
        v.snapshot()
    });
}

#[test]
fn bad_names_ranges_and_pack_sizes_are_refused() {
    let store = MemStore::new();
    let dir = tempfile::tempdir().unwrap();
    let ds = DirStore::open(dir.path()).unwrap();
    for s in [&store as &dyn BlobStore, &ds] {
        for k in ["", "../x", "a//b", "/abs", "a/./b", "a b"] {
            assert!(s.get_objects(&[k], 10).is_err(), "{k:?}");
            assert!(s.put_objects(&[(k, b"x")]).is_err(), "{k:?}");
        }
        s.put_objects(&[("packs/x", b"0123456789")]).unwrap();
        assert_eq!(
            s.get_ranges(&[("packs/x", 2..5)]).unwrap(),
            [Some(b"234".to_vec())]
        );
        let e = s.get_ranges(&[("packs/x", 5..20)]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(
            s.get_ranges(&[("packs/x", 0..MAX_RANGE_REQUEST + 1)])
                .is_err()
        );
        assert_eq!(s.get_ranges(&[("packs/y", 0..1)]).unwrap(), [None]);
        let e = s.get_objects(&["packs/x"], 9).unwrap_err();
        assert!(e.to_string().contains("more than the"), "{e}");
        assert_eq!(s.list("packs/").unwrap(), ["packs/x"]);
        s.delete_objects(&["packs/x", "packs/y"]).unwrap();
        assert!(s.list("packs/").unwrap().is_empty());
    }
    let snap = tree(1, 10).snapshot();
    for size in [0, 1000, MAX_PACK_SIZE + 1] {
        let e = push(&snap, &store, &opts(size)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}

#[test]
fn index_objects_are_merged_so_a_client_reads_a_handful() {
    let store = Arc::new(Metered::new(MemStore::new()));
    let meter = store.meter();
    let cache = MemStore::new();
    let mut v = tree(4, 100_000);
    let mut roots = Vec::new();
    for i in 0..20u64 {
        v.write_file("/d/changing", &noise(1000 + i, 70_000))
            .unwrap();
        let snap = v.snapshot();
        let o = TransferOptions {
            cache: Some(&cache),
            ..TransferOptions::default()
        };
        let r0 = meter.requests();
        let st = push(&snap, &*store, &o).unwrap();
        let reqs = meter.requests() - r0;
        // Version, three listings, pack, index, manifest, the listing
        // that checks no collection replaced an index object the push
        // relied on, and now and then a merge (one more object, deletes
        // of the ones it replaced).
        assert!(
            reqs <= 11 + packer::COMPACT_AT as u64 + 1,
            "push {i}: {reqs}"
        );
        roots.push((st.root, snap));
        let n = store.list("index/").unwrap().len();
        assert!(
            n <= packer::COMPACT_AT + 1,
            "{n} index objects after {i} pushes"
        );
    }
    // Everything pushed is still found, by a client with no cache.
    for (root, snap) in &roots {
        pull_ok(&*store, root, snap);
    }
    let cat = Catalog::load(&*store, None).unwrap();
    assert!(cat.damage().is_empty());
}

#[test]
fn a_pull_that_cannot_write_its_file_says_why() {
    let store = MemStore::new();
    let snap = tree(8, 300_000).snapshot();
    let pushed = push(&snap, &store, &TransferOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no-such-dir").join("p.ck");
    let e = pull(
        &store,
        &pushed.root,
        &out,
        None,
        &TransferOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        !msg.contains("did not arrive") && !msg.contains("writing the checkpoint file failed"),
        "{msg}"
    );
    assert!(!out.exists());
    // The same pull to a good path works.
    pull_ok(&store, &pushed.root, &snap);
}
