//! Garbage collection of a fleet store (`cowvfs::store::gc`, `cowvfs gc`)
//! on a directory, in memory and on SeaweedFS: what refs, their history,
//! young trees and `--keep` reach survives and verifies; the rest goes, in
//! one run with no grace period or two runs a grace period apart; a
//! damaged ref or index stops it before anything is deleted; pushes and
//! lazy readers racing it lose nothing, even a push that writes again the
//! tree a collection is about to delete (the collection is stopped at that
//! instant by a store that holds it there); a second collection finds the
//! first one's lease and refuses, changing nothing; a collection whose
//! lease was taken over deletes nothing more.

#![cfg(all(feature = "s3", feature = "cli"))]

#[path = "store_support/mod.rs"]
mod store_support;

use std::ops::Range;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cowvfs::store::refs::{self, Expect};
use cowvfs::store::{
    self, BlobStore, DirStore, GcOptions, MemStore, ObjectInfo, RefVersion, TransferOptions,
};
use cowvfs::{ErrorKind, Result, Snapshot, Vfs};
use store_support::{Weed, noise};

const CLI: &str = env!("CARGO_BIN_EXE_cowvfs");
const PREFIXES: [&str; 5] = ["manifests/", "packs/", "index/", "chunks/", "gc/"];

/// A tree: a shared file, a file of its own, and `extra` empty files.
fn tree(seed: u64, own: usize) -> Snapshot {
    let mut v = Vfs::new();
    v.write_file("/shared", &noise(1, 100_000)).unwrap();
    v.write_file("/own", &noise(seed, own)).unwrap();
    v.snapshot()
}

fn push(s: &dyn BlobStore, snap: &Snapshot) -> blake3::Hash {
    let opts = TransferOptions {
        pack_size: 1 << 20,
        ..TransferOptions::default()
    };
    store::push(snap, s, &opts).unwrap().root
}

fn objects(s: &dyn BlobStore) -> Vec<(String, u64)> {
    let mut out: Vec<_> = PREFIXES
        .iter()
        .flat_map(|p| s.list_info(p).unwrap())
        .map(|i| (i.key, i.size))
        .collect();
    out.sort();
    out
}

/// Pulls `root` and checks every chunk and the root hash.
fn verifies(s: &dyn BlobStore, root: &blake3::Hash) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.ck");
    store::pull(s, root, &out, None, &TransferOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", root.to_hex()));
    assert_eq!(Snapshot::load(&out).unwrap().root_hash(), *root);
}

fn gone(s: &dyn BlobStore, root: &blake3::Hash) -> bool {
    s.get_manifest(root).unwrap().is_none()
}

fn opts(grace: Duration) -> GcOptions {
    GcOptions {
        grace,
        ..GcOptions::default()
    }
}

/// Refs with history, unreferenced trees, a mostly dead pack: a dry run
/// changes nothing; a run with no grace period frees what nothing reaches.
fn collects(s: &dyn BlobStore) {
    let a1 = push(s, &tree(10, 300_000));
    let a2 = push(s, &tree(11, 300_000));
    let b = push(s, &tree(12, 50_000));
    let dead: Vec<_> = (20..23).map(|i| push(s, &tree(i, 200_000))).collect();
    // A big tree nobody keeps, and a small one that reuses one of its
    // chunks: the big tree's pack is then mostly dead and gets repacked.
    let mut v = Vfs::new();
    let big = noise(30, 600_000);
    v.write_file("/big", &big).unwrap();
    let bigroot = push(s, &v.snapshot());
    let mut v = Vfs::new();
    v.write_file("/part", &big[..65_536]).unwrap();
    let small = push(s, &v.snapshot());
    refs::update(s, "base", &a1, Expect::Absent, "test").unwrap();
    refs::update(s, "base", &a2, Expect::Any, "test").unwrap();
    refs::update(s, "other", &b, Expect::Absent, "test").unwrap();
    refs::update(s, "part", &small, Expect::Absent, "test").unwrap();

    let before = objects(s);
    let dry = store::gc(
        s,
        &GcOptions {
            dry_run: true,
            ..opts(Duration::ZERO)
        },
    )
    .unwrap();
    assert_eq!(objects(s), before, "a dry run changes nothing");
    assert_eq!(dry.deleted_manifests.objects, 4, "{dry:?}");
    assert!(dry.freed().bytes > 0);

    let r = store::gc(s, &opts(Duration::ZERO)).unwrap();
    assert_eq!(r.live_roots, 4);
    assert_eq!(r.deleted_manifests, dry.deleted_manifests);
    assert_eq!(r.deleted_packs, dry.deleted_packs);
    assert_eq!(r.repacked.objects, 1, "{r:?}");
    assert_eq!(r.written_packs.objects, 1);
    assert!(r.freed().bytes > 600_000, "{r:?}");
    assert_eq!(r.missing_live_chunks, 0);
    for root in [&a1, &a2, &b, &small] {
        verifies(s, root);
    }
    for root in dead.iter().chain([&bigroot]) {
        assert!(gone(s, root));
        let e = store::open_lazy(Arc::new(MemStore::new()), root, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
    let after: u64 = objects(s).iter().map(|(_, n)| n).sum();
    let was: u64 = before.iter().map(|(_, n)| n).sum();
    assert!(after < was);
    // Nothing left to do.
    let again = store::gc(s, &opts(Duration::ZERO)).unwrap();
    assert_eq!(again.freed().objects, 0, "{again:?}");
    // Young trees survive a run with a grace period; so do --keep roots.
    let young = push(s, &tree(40, 100_000));
    let r = store::gc(s, &opts(Duration::from_secs(3600))).unwrap();
    assert_eq!(r.freed().objects + r.condemned_packs.objects, 0, "{r:?}");
    verifies(s, &young);
    let r = store::gc(
        s,
        &GcOptions {
            keep: vec![young],
            ..opts(Duration::ZERO)
        },
    )
    .unwrap();
    assert_eq!(r.freed().objects, 0, "{r:?}");
    verifies(s, &young);
}

#[test]
fn collects_in_memory_and_in_a_directory() {
    collects(&MemStore::new());
    let dir = tempfile::tempdir().unwrap();
    collects(&DirStore::open(dir.path()).unwrap());
}

#[test]
fn collects_on_seaweedfs_and_survives_racing_pushes_and_readers() {
    let weed = Weed::start();
    // The first PUT makes the bucket.
    let s3 = weed.store("fleet", "gc");
    s3.put_objects(&[("cowvfs-store", b"cowvfs store format 2\n")])
        .unwrap();
    collects(&s3);
    race(Arc::new(weed.store("fleet", "race")));
    leases(&weed.store("fleet", "lease"));
    // No setting of modification times on S3: objects age by waiting past
    // a short grace period (LastModified has whole seconds).
    let wait = || std::thread::sleep(Duration::from_millis(2100));
    push_in_the_window(
        Arc::new(weed.store("fleet", "window")),
        Duration::from_secs(1),
        &wait,
    );
    a_collection_that_lost_its_lease_deletes_nothing_more(Arc::new(weed.store("fleet", "lost")));
}

/// A lease's text, as a collector writes it.
fn lease_text(owner: &str, pid: u32, expires: SystemTime) -> Vec<u8> {
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let start = SystemTime::now() - Duration::from_secs(60);
    format!(
        "cowvfs gc-lease 1\nowner {owner}\npid {pid}\nstart {}\nexpires {}\n",
        secs(start),
        secs(expires)
    )
    .into_bytes()
}

/// The conditional put under the lease, then the lease itself: a live
/// one held by another collector stops a collection before it changes
/// anything; an expired one is taken over; the lease is gone after a
/// collection, whether it succeeded or failed.
fn leases(s: &dyn BlobStore) {
    let key = store::LEASE_KEY;
    // Create only if absent; replace only the version read.
    assert!(s.get_versioned(key).unwrap().is_none());
    let v1 = s.put_if(key, b"one", None).unwrap();
    let e = s.put_if(key, b"two", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let v2 = s.put_if(key, b"two", Some(&v1)).unwrap();
    let e = s.put_if(key, b"three", Some(&v1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let (got, v) = s.get_versioned(key).unwrap().unwrap();
    assert_eq!((got.as_slice(), &v), (&b"two"[..], &v2));
    assert!(s.list_refs().unwrap_or_default().is_empty(), "not a ref");

    // A live lease of another collector: refused, nothing changed.
    let kept = push(s, &tree(40, 100_000));
    let dead = push(s, &tree(41, 100_000));
    refs::update(s, "kept", &kept, Expect::Absent, "test").unwrap();
    let live = lease_text(
        "ann@elsewhere",
        7,
        SystemTime::now() + Duration::from_secs(600),
    );
    let v3 = s.put_if(key, &live, Some(&v2)).unwrap();
    let before = objects(s);
    let e = store::gc(s, &opts(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let msg = e.to_string();
    for want in [
        "ann@elsewhere",
        "pid 7",
        "expires",
        "UTC",
        "nothing was changed",
    ] {
        assert!(msg.contains(want), "{want:?} in {msg}");
    }
    assert_eq!(objects(s), before);
    assert!(!gone(s, &dead));
    assert_eq!(s.get_versioned(key).unwrap().unwrap().0, live);
    // A dry run takes no lease and still reports.
    let dry = store::gc(
        s,
        &GcOptions {
            dry_run: true,
            ..opts(Duration::ZERO)
        },
    )
    .unwrap();
    assert!(dry.freed().objects > 0, "{dry:?}");

    // Expired: taken over, the collection runs, and its lease goes.
    let old = lease_text("bob@gone", 9, SystemTime::now() - Duration::from_secs(1));
    s.put_if(key, &old, Some(&v3)).unwrap();
    let r = store::gc(s, &opts(Duration::ZERO)).unwrap();
    assert!(r.freed().objects > 0, "{r:?}");
    assert!(gone(s, &dead));
    verifies(s, &kept);
    assert!(s.get_versioned(key).unwrap().is_none(), "lease left behind");

    // A damaged lease is refused by name, nothing changed.
    s.put_if(key, b"not a lease", None).unwrap();
    let before = objects(s);
    let e = store::gc(s, &opts(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(key), "{e}");
    assert_eq!(objects(s), before);
    s.delete_objects(&[key]).unwrap();

    // A collection that fails (a damaged ref) gives its lease back too.
    s.put_ref("broken", b"not a ref", None).unwrap();
    store::gc(s, &opts(Duration::ZERO)).unwrap_err();
    assert!(s.get_versioned(key).unwrap().is_none(), "lease left behind");
}

#[test]
fn a_lease_keeps_collections_apart_in_memory_and_in_a_directory() {
    leases(&MemStore::new());
    let dir = tempfile::tempdir().unwrap();
    leases(&DirStore::open(dir.path()).unwrap());
}

/// Ages every object of a memory store by an hour.
fn age(s: &MemStore) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    for p in PREFIXES {
        for i in s.list_info(p).unwrap() {
            s.set_modified(&i.key, old);
        }
    }
}

#[test]
fn two_phases_a_grace_period_apart_and_a_late_manifest_restores_its_pack() {
    let s = MemStore::new();
    let grace = opts(Duration::from_secs(60));
    let e = push(&s, &tree(50, 300_000));
    age(&s);
    // The first run condemns, deletes nothing.
    let r = store::gc(&s, &grace).unwrap();
    assert_eq!(
        r.deleted_packs.objects + r.deleted_manifests.objects,
        0,
        "{r:?}"
    );
    assert_eq!(
        r.deleted_index.objects, 1,
        "the index without the pack replaces it"
    );
    assert_eq!(r.condemned_manifests.objects, 1);
    assert!(r.condemned_packs.objects >= 1);
    assert_eq!(r.written_tombstones, 1);
    assert!(!gone(&s, &e));
    // A push that learned of the pack before it was condemned writes its
    // manifest now: the same chunks, another tree.
    let mut v = tree(50, 300_000).fork();
    v.write_file("/empty", b"").unwrap();
    let g_snap = v.snapshot();
    let side = MemStore::new();
    let g = push(&side, &g_snap);
    s.put_manifest(&g, &side.get_manifest(&g).unwrap().unwrap())
        .unwrap();
    refs::update(&s, "g", &g, Expect::Absent, "test").unwrap();
    // Still young tombstone: nothing happens.
    let r = store::gc(&s, &grace).unwrap();
    assert_eq!(r.freed().objects, 0, "{r:?}");
    age(&s);
    let r = store::gc(&s, &grace).unwrap();
    assert!(r.restored_packs >= 1, "{r:?}");
    assert_eq!(r.deleted_manifests.objects, 1);
    assert_eq!(r.deleted_tombstones.objects, 1);
    assert!(gone(&s, &e));
    verifies(&s, &g);
}

#[test]
fn damage_makes_it_refuse_and_delete_nothing() {
    let s = MemStore::new();
    let a = push(&s, &tree(60, 100_000));
    push(&s, &tree(61, 100_000));
    refs::update(&s, "a", &a, Expect::Absent, "test").unwrap();
    s.put_raw("refs/zz", b"not a ref".to_vec());
    // MemStore keeps refs apart: damage one through its own interface.
    let mut bad = s.get_ref("a").unwrap().unwrap().0;
    let n = bad.len();
    bad[n - 1] ^= 1;
    let (_, ver) = s.get_ref("a").unwrap().unwrap();
    s.put_ref("a", &bad, Some(&ver)).unwrap();
    let before = objects(&s);
    let e = store::gc(&s, &opts(Duration::ZERO)).unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(objects(&s), before);

    // A damaged index object, and a damaged kept manifest, too.
    let s = MemStore::new();
    let a = push(&s, &tree(62, 100_000));
    refs::update(&s, "a", &a, Expect::Absent, "test").unwrap();
    push(&s, &tree(63, 100_000));
    let key = s.list("index/").unwrap().remove(0);
    let good = s.get_raw(&key).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 1;
    s.put_raw(&key, bad);
    let before = objects(&s);
    let e = store::gc(&s, &opts(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(objects(&s), before);
    s.put_raw(&key, good);
    let mkey = format!("manifests/{}", a.to_hex());
    let mut m = s.get_raw(&mkey).unwrap();
    m[30] ^= 1;
    s.put_raw(&mkey, m);
    let before = objects(&s);
    assert!(store::gc(&s, &opts(Duration::ZERO)).is_err());
    assert_eq!(objects(&s), before);
}

/// Pushers and a lazy reader race collections with a short grace period;
/// everything tagged or young stays whole.
fn race(s: Arc<dyn BlobStore>) {
    // Old trees nobody keeps, whose chunks the pushers reuse.
    for i in 0..4 {
        push(&*s, &tree(70 + i, 150_000));
    }
    let base = push(&*s, &tree(80, 400_000));
    refs::update(&*s, "base", &base, Expect::Absent, "test").unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let stop = AtomicBool::new(false);
    let grace = opts(Duration::from_secs(2));
    let pushed = std::thread::scope(|sc| {
        let gcs = sc.spawn(|| {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                store::gc(&*s, &grace).unwrap();
                runs += 1;
            }
            runs
        });
        let reader = sc.spawn(|| {
            let lazy = store::open_lazy(s.clone(), &base, None).unwrap();
            let want = tree(80, 400_000).read_file("/own").unwrap();
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(lazy.read_file("/own").unwrap(), want);
                let fresh = store::open_lazy(s.clone(), &base, None).unwrap();
                assert_eq!(fresh.read_file("/shared").unwrap().len(), 100_000);
            }
        });
        let mut pushed = Vec::new();
        for i in 0..6u64 {
            // Reuses an old, unkept tree's chunks: the same tree again.
            let root = push(&*s, &tree(70 + i % 4, 150_000));
            refs::update(&*s, &format!("p{i}"), &root, Expect::Any, "test").unwrap();
            pushed.push(root);
            // A young tree nothing names: whole while it is young.
            let young = push(&*s, &tree(90 + i, 70_000));
            std::thread::sleep(Duration::from_millis(400));
            verifies(&*s, &young);
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        assert!(gcs.join().unwrap() > 1);
        pushed
    });
    for root in pushed.iter().chain([&base]) {
        verifies(&*s, root);
    }
    // Once the pushes are old and tagged elsewhere, a run with no grace
    // period leaves every tagged tree whole.
    let r = store::gc(&*s, &opts(Duration::ZERO)).unwrap();
    assert_eq!(r.missing_live_chunks, 0);
    for root in pushed.iter().chain([&base]) {
        verifies(&*s, root);
    }
}

#[test]
fn racing_in_memory() {
    race(Arc::new(MemStore::new()));
}

#[test]
fn the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet");
    let s = DirStore::open(&path).unwrap();
    let kept = push(&s, &tree(100, 100_000));
    let loose = push(&s, &tree(101, 100_000));
    refs::update(&s, "kept", &kept, Expect::Absent, "test").unwrap();
    let p = path.to_str().unwrap();
    let run = |args: &[&str]| Command::new(CLI).args(args).output().unwrap();
    let before = objects(&s);
    let out = run(&["gc", p, "--dry-run", "--grace", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would delete: 1 ("), "{text}");
    assert_eq!(objects(&s), before);
    let keep = loose.to_hex().to_string();
    let out = run(&["gc", p, "--grace", "0", "--keep", &keep]);
    assert!(out.status.success());
    assert!(!gone(&s, &loose));
    let out = run(&["gc", p, "--grace", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deleted: 1 ("), "{text}");
    assert!(gone(&s, &loose));
    verifies(&s, &kept);
    // Another collection's live lease: a clear error, nothing changed.
    let live = lease_text(
        "ann@elsewhere",
        7,
        SystemTime::now() + Duration::from_secs(600),
    );
    s.put_if(store::LEASE_KEY, &live, None).unwrap();
    let dead = push(&s, &tree(102, 100_000));
    let before = objects(&s);
    let out = run(&["gc", p, "--grace", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ann@elsewhere") && err.contains("pid 7") && err.contains("expires"),
        "{err}"
    );
    assert_eq!(objects(&s), before);
    assert!(!gone(&s, &dead));
    s.delete_objects(&[store::LEASE_KEY]).unwrap();
    for bad in [
        &["gc", p, "--grace", "soon"][..],
        &["gc", p, "--repack-below", "200"],
    ] {
        let out = run(bad);
        assert!(!out.status.success());
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}

/// A lazy reader that read the index before a collection moved its
/// chunks to a new pack and deleted the old one: its first read finds the
/// old pack gone, reads the index again and gets the right bytes.
#[test]
fn a_reader_with_an_old_index_follows_a_repack() {
    let s: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    // One push, one pack: a small live file and a big file only the
    // unreferenced tree names, so the pack is mostly garbage.
    let mut v = Vfs::new();
    v.write_file("/small", &noise(7, 5_000)).unwrap();
    v.write_file("/big", &noise(8, 900_000)).unwrap();
    let dead = v.snapshot();
    v.remove_file("/big").unwrap();
    let live = v.snapshot();
    let dead_root = push(&*s, &dead);
    let live_root = push(&*s, &live);
    refs::update(&*s, "live", &live_root, Expect::Absent, "test").unwrap();
    let packs_before: Vec<String> = s.list("packs/").unwrap();

    // Opened (and its index read) before the collection.
    let reader = store::open_lazy(s.clone(), &live_root, None).unwrap();

    let r = store::gc(&*s, &opts(Duration::ZERO)).unwrap();
    assert!(
        r.repacked.objects >= 1,
        "the mostly dead pack is repacked: {r:?}"
    );
    assert!(gone(&*s, &dead_root));
    let packs_after: Vec<String> = s.list("packs/").unwrap();
    assert!(
        packs_before.iter().all(|p| !packs_after.contains(p)),
        "the old pack is deleted: {packs_before:?} -> {packs_after:?}"
    );

    assert_eq!(reader.read_file("/small").unwrap(), noise(7, 5_000));
    reader.check_invariants().unwrap();
    verifies(&*s, &live_root);
}

/// Where a [`Gate`] holds the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// At its first delete naming a manifest.
    ManifestDelete,
    /// At its first read of the lease.
    LeaseRead,
}

#[derive(Debug, Default)]
struct GateState {
    armed: Option<Stop>,
    paused: bool,
    go: bool,
    /// Reads of the lease by others while the collector was held.
    lease_reads: usize,
}

/// A store that holds the first caller to reach the armed point until the
/// test lets it go on, and counts the lease reads made meanwhile: a race
/// between a collection and a push, played in a set order.
#[derive(Debug)]
struct Gate {
    inner: Arc<dyn BlobStore>,
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    fn new(inner: Arc<dyn BlobStore>, at: Stop) -> Gate {
        Gate {
            inner,
            state: Mutex::new(GateState {
                armed: Some(at),
                ..GateState::default()
            }),
            cv: Condvar::new(),
        }
    }

    /// Holds the caller if `at` is armed (once).
    fn stop(&self, at: Stop) {
        let mut st = self.state.lock().unwrap();
        if st.armed != Some(at) {
            return;
        }
        st.armed = None;
        st.paused = true;
        self.cv.notify_all();
        while !st.go {
            st = self.cv.wait(st).unwrap();
        }
        st.paused = false;
    }

    /// Waits (a minute at most) until `cond` holds or `done` says so.
    fn wait_until(&self, cond: impl Fn(&GateState) -> bool, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(60);
        let mut st = self.state.lock().unwrap();
        while !cond(&st) && !done() {
            assert!(Instant::now() < until, "the gate waited a minute: {st:?}");
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }

    fn go(&self) {
        self.state.lock().unwrap().go = true;
        self.cv.notify_all();
    }
}

impl BlobStore for Gate {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        self.inner.has_chunks(addrs)
    }
    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_chunks(addrs)
    }
    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        self.inner.put_chunks(chunks)
    }
    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        self.inner.get_manifest(root)
    }
    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        self.inner.put_manifest(root, bytes)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_objects(keys, max)
    }
    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_ranges(reqs)
    }
    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        self.inner.put_objects(objs)
    }
    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        if keys.iter().any(|k| k.starts_with("manifests/")) {
            self.stop(Stop::ManifestDelete);
        }
        self.inner.delete_objects(keys)
    }
    fn list_info(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list_info(prefix)
    }
    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        self.inner.get_ref(name)
    }
    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        self.inner.put_ref(name, bytes, expected)
    }
    fn list_refs(&self) -> Result<Vec<String>> {
        self.inner.list_refs()
    }
    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        if key == store::LEASE_KEY {
            let mut st = self.state.lock().unwrap();
            if st.paused {
                st.lease_reads += 1;
                self.cv.notify_all();
            }
            drop(st);
            self.stop(Stop::LeaseRead);
        }
        self.inner.get_versioned(key)
    }
    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        self.inner.put_if(key, bytes, expected)
    }
}

/// Issue #17: a collection about to delete the manifest and pack of an
/// old tree nothing names is held between its last look at the store and
/// its deletes, and a push writes that same tree again meanwhile (the
/// same manifest, the same pack). The collection deletes what it planned
/// to; the push, having found the collection's lease, waits for it to end,
/// finds what it wrote gone and writes it again: the tree is whole, and
/// young to the next collection.
fn push_in_the_window(inner: Arc<dyn BlobStore>, grace: Duration, age: &dyn Fn()) {
    let snap = tree(110, 200_000);
    let root = push(&*inner, &snap);
    age();
    let r = store::gc(&*inner, &opts(grace)).unwrap();
    assert_eq!(r.condemned_manifests.objects, 1, "{r:?}");
    assert!(r.condemned_packs.objects >= 1, "{r:?}");
    age();
    let gate = Gate::new(inner.clone(), Stop::ManifestDelete);
    std::thread::scope(|sc| {
        let collector = sc.spawn(|| store::gc(&gate, &opts(grace)));
        gate.wait_until(|st| st.paused, || collector.is_finished());
        assert!(!collector.is_finished(), "the collection was not held");
        let pusher = sc.spawn(|| push(&gate, &snap));
        // Once the push looks for a running collection (or is done), the
        // collection goes on to its deletes.
        gate.wait_until(|st| st.lease_reads > 0, || pusher.is_finished());
        gate.go();
        let r = collector.join().unwrap().unwrap();
        assert_eq!(r.deleted_manifests.objects, 1, "{r:?}");
        assert!(r.deleted_packs.objects >= 1, "{r:?}");
        assert_eq!(pusher.join().unwrap(), root);
    });
    assert!(!gone(&*inner, &root), "the manifest pushed again was lost");
    verifies(&*inner, &root);
    let r = store::gc(&*inner, &opts(Duration::from_secs(3600))).unwrap();
    assert_eq!(r.condemned_manifests.objects, 0, "{r:?}");
    verifies(&*inner, &root);
}

/// Sets every file under `dir` an hour back.
fn age_dir(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            age_dir(&e.path());
        } else {
            let f = std::fs::File::options().write(true).open(e.path()).unwrap();
            f.set_modified(old).unwrap();
        }
    }
}

#[test]
fn a_push_in_the_instant_before_the_delete_loses_nothing() {
    let mem = Arc::new(MemStore::new());
    let m = mem.clone();
    push_in_the_window(mem, Duration::from_secs(60), &|| age(&m));
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(DirStore::open(dir.path()).unwrap());
    push_in_the_window(s, Duration::from_secs(60), &|| age_dir(dir.path()));
}

/// A collection whose lease another collector took over (as one may once
/// it expires) stops before its next delete, deleting nothing more, and
/// leaves the new holder's lease alone.
fn a_collection_that_lost_its_lease_deletes_nothing_more(inner: Arc<dyn BlobStore>) {
    let key = store::LEASE_KEY;
    let dead = push(&*inner, &tree(120, 100_000));
    let gate = Gate::new(inner.clone(), Stop::LeaseRead);
    std::thread::scope(|sc| {
        let collector = sc.spawn(|| store::gc(&gate, &opts(Duration::ZERO)));
        gate.wait_until(|st| st.paused, || collector.is_finished());
        assert!(!collector.is_finished(), "the collection was not held");
        let (_, v) = inner.get_versioned(key).unwrap().unwrap();
        let other = lease_text(
            "carol@elsewhere",
            11,
            SystemTime::now() + Duration::from_secs(600),
        );
        inner.put_if(key, &other, Some(&v)).unwrap();
        let before = objects(&*inner);
        gate.go();
        let e = collector.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        let msg = e.to_string();
        for want in ["lease", "taken over", "nothing more"] {
            assert!(msg.contains(want), "{want:?} in {msg}");
        }
        assert_eq!(objects(&*inner), before, "deleted after losing its lease");
        assert!(!gone(&*inner, &dead));
        assert_eq!(inner.get_versioned(key).unwrap().unwrap().0, other);
    });
    inner.delete_objects(&[key]).unwrap();
    let r = store::gc(&*inner, &opts(Duration::ZERO)).unwrap();
    assert_eq!(r.deleted_manifests.objects, 1, "{r:?}");
}

#[test]
fn a_collection_that_lost_its_lease_stops_in_memory_and_in_a_directory() {
    a_collection_that_lost_its_lease_deletes_nothing_more(Arc::new(MemStore::new()));
    let dir = tempfile::tempdir().unwrap();
    a_collection_that_lost_its_lease_deletes_nothing_more(Arc::new(
        DirStore::open(dir.path()).unwrap(),
    ));
}

// Index objects and tombstones are claims anyone with write access to the
// store can make. A record saying a pack holds less than it does must not
// get the pack deleted: what is deleted, and what is copied out first, is
// decided by the pack's own trailer, whose hash names it.

#[derive(serde::Serialize)]
struct FakeEntry {
    addr: [u8; 32],
    offset: u64,
    len: u32,
}

#[derive(serde::Serialize)]
struct FakeRecord {
    name: [u8; 32],
    size: u64,
    entries: Vec<FakeEntry>,
}

/// An index object's body.
#[derive(serde::Serialize)]
struct FakeIndex {
    written: u64,
    packs: Vec<FakeRecord>,
}

/// A tombstone's body.
#[derive(serde::Serialize)]
struct FakeTomb<P> {
    written: u64,
    manifests: Vec<[u8; 32]>,
    packs: Vec<P>,
    loose: Vec<[u8; 32]>,
}

/// A pack's name from its object key.
fn pack_name(key: &str) -> blake3::Hash {
    blake3::Hash::from_hex(key.strip_prefix("packs/").unwrap()).unwrap()
}

/// A record for each pack of `s` claiming it holds one byte of a chunk
/// nobody has.
fn lying_records(s: &dyn BlobStore) -> Vec<FakeRecord> {
    s.list_info("packs/")
        .unwrap()
        .into_iter()
        .map(|i| FakeRecord {
            name: *pack_name(&i.key).as_bytes(),
            size: i.size,
            entries: vec![FakeEntry {
                addr: *blake3::hash(b"nobody's").as_bytes(),
                offset: 11,
                len: 1,
            }],
        })
        .collect()
}

/// An object in the store's framing: magic, version 1, body length, body,
/// blake3 of all that; its name is the blake3 of the whole object.
fn framed(magic: &[u8; 9], body: &[u8]) -> (String, Vec<u8>) {
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    (blake3::hash(&out).to_hex().to_string(), out)
}

/// Writes an index object of `body`; its key.
fn put_index(s: &dyn BlobStore, body: &FakeIndex) -> String {
    let (name, bytes) = framed(b"cowvfs\0ix", &postcard::to_stdvec(body).unwrap());
    let key = format!("index/{name}");
    s.put_objects(&[(&key, &bytes)]).unwrap();
    key
}

/// Writes a tombstone condemning `packs`.
fn put_tombstone<P: serde::Serialize>(s: &dyn BlobStore, packs: Vec<P>) {
    let body = FakeTomb {
        written: 0,
        manifests: Vec::new(),
        packs,
        loose: Vec::new(),
    };
    let (name, bytes) = framed(b"cowvfs\0gc", &postcard::to_stdvec(&body).unwrap());
    s.put_objects(&[(&format!("gc/{name}"), &bytes)]).unwrap();
}

fn index_keys(s: &dyn BlobStore) -> Vec<String> {
    s.list_info("index/")
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect()
}

/// Takes every index object away, as if the pushes had died before
/// writing them.
fn unindex(s: &dyn BlobStore) {
    let keys = index_keys(s);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    s.delete_objects(&keys).unwrap();
}

/// Pushes `snap` and names it by the ref `name`.
fn kept(s: &dyn BlobStore, snap: &Snapshot, name: &str) -> blake3::Hash {
    let root = push(s, snap);
    refs::update(s, name, &root, Expect::Absent, "test").unwrap();
    root
}

#[test]
fn an_index_object_that_lies_about_a_pack_does_not_get_it_deleted() {
    let s = MemStore::new();
    let root = kept(&s, &tree(70, 200_000), "base");
    let genuine = index_keys(&s);
    assert!(!genuine.is_empty());
    // The first record of a pack read wins, and index objects are read in
    // name order: the lie is made to sort first.
    let mut written = 0;
    let body = loop {
        let body = FakeIndex {
            written,
            packs: lying_records(&s),
        };
        let (name, _) = framed(b"cowvfs\0ix", &postcard::to_stdvec(&body).unwrap());
        if genuine.iter().all(|g| format!("index/{name}") < *g) {
            break body;
        }
        written += 1;
    };
    put_index(&s, &body);
    age(&s);
    let r = store::gc(&s, &opts(Duration::ZERO)).unwrap();
    assert_eq!(r.deleted_packs.objects, 0, "{r:?}");
    assert_eq!(r.missing_live_chunks, 0, "{r:?}");
    verifies(&s, &root);
}

#[test]
fn a_tombstone_that_lies_about_a_pack_does_not_get_it_deleted() {
    let s = MemStore::new();
    let root = kept(&s, &tree(71, 200_000), "base");
    // The packs are in no index (as after a push that died before writing
    // its index), and a tombstone says each holds nothing of use.
    unindex(&s);
    put_tombstone(&s, lying_records(&s));
    // And a pack object that is not one, in no index: kept, the run goes
    // on (it once stopped every run until someone removed it).
    let junk = format!("packs/{}", blake3::hash(b"junk").to_hex());
    s.put_objects(&[(&junk, b"not a pack".as_slice())]).unwrap();
    age(&s);
    let r = store::gc(&s, &opts(Duration::from_secs(60))).unwrap();
    assert_eq!(r.deleted_packs.objects, 0, "{r:?}");
    assert!(r.restored_packs >= 1, "{r:?}");
    assert!(s.get_raw(&junk).is_some());
    verifies(&s, &root);
}

#[test]
fn a_claim_that_another_pack_holds_a_chunk_is_read_before_it_is_believed() {
    let s = MemStore::new();
    // Tree `a`: its packs are left in no index, a tombstone condemns them
    // (its records are their own), so the sweep asks whether anything
    // else holds their live chunks.
    let a = kept(&s, &tree(72, 200_000), "a");
    let a_packs: Vec<ObjectInfo> = s.list_info("packs/").unwrap();
    let a_records: Vec<store::PackRecord> = a_packs
        .iter()
        .map(|i| store::read_pack_index(&s, &pack_name(&i.key), i.size).unwrap())
        .collect();
    unindex(&s);
    // Tree `b`, indexed and kept: an index object claims its pack holds
    // every chunk of `a` too.
    let b = kept(&s, &noise_tree(73), "b");
    let b_pack = s
        .list_info("packs/")
        .unwrap()
        .into_iter()
        .find(|i| !a_packs.iter().any(|p| p.key == i.key))
        .unwrap();
    let claims: Vec<FakeEntry> = a_records
        .iter()
        .flat_map(|r| &r.entries)
        .enumerate()
        .map(|(i, e)| FakeEntry {
            addr: e.addr,
            offset: 11 + i as u64,
            len: 1,
        })
        .collect();
    let lie = put_index(
        &s,
        &FakeIndex {
            written: 0,
            packs: vec![FakeRecord {
                name: *pack_name(&b_pack.key).as_bytes(),
                size: b_pack.size,
                entries: claims,
            }],
        },
    );
    put_tombstone(&s, a_records);
    age(&s);
    let r = store::gc(&s, &opts(Duration::from_secs(60))).unwrap();
    assert_eq!(r.deleted_packs.objects, 0, "{r:?}");
    assert!(r.restored_packs >= 1, "{r:?}");
    // Nothing was lost. (A reader believes the lie too: it fetches `a`'s
    // chunks from the wrong pack and fails on their hashes, a clear error;
    // with the lie gone it reads them where they are.)
    s.delete_objects(&[&lie]).unwrap();
    verifies(&s, &a);
    verifies(&s, &b);
}

/// A tree of one file of its own, sharing nothing with [`tree`]'s.
fn noise_tree(seed: u64) -> Snapshot {
    let mut v = Vfs::new();
    v.write_file("/alone", &noise(seed, 50_000)).unwrap();
    v.snapshot()
}
