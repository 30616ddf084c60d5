//! Tests of pipelined read-ahead in a lazily opened tree, against a store
//! in memory behind a wrapper that delays ranged reads (so background
//! fetches overlap), counts what is in flight, and fails chosen requests.

use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::ahead::MAX_HELD;
use super::pack_tests::noise;
use super::transfer::open_lazy_source;
use super::*;
use crate::limits::Limits;
use crate::{OpenOptions, Snapshot, Vfs};

/// A [`MemStore`] whose ranged reads take `delay` and can be made to
/// fail.
#[derive(Debug, Default)]
struct Slow {
    inner: MemStore,
    delay: Duration,
    /// Ranged-read calls so far, and at once now / at most.
    calls: AtomicUsize,
    now: AtomicUsize,
    most: AtomicUsize,
    /// Bytes asked for by calls in flight now / at most.
    bytes_now: AtomicU64,
    bytes_most: AtomicU64,
    /// Fail every call that reaches past this pack offset.
    fail_past: AtomicU64,
    /// Fail the call with this number (1-based; 0: none).
    fail_call: AtomicUsize,
    failed: Mutex<Vec<usize>>,
}

impl Slow {
    fn new(delay: Duration) -> Slow {
        Slow {
            delay,
            fail_past: AtomicU64::new(u64::MAX),
            ..Slow::default()
        }
    }
}

impl BlobStore for Slow {
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
        "slow".into()
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_objects(keys, max)
    }
    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes: u64 = reqs.iter().map(|(_, r)| r.end - r.start).sum();
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let b = self.bytes_now.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.bytes_most.fetch_max(b, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let past = self.fail_past.load(Ordering::SeqCst);
        let got = if self.fail_call.load(Ordering::SeqCst) == n
            || reqs.iter().any(|(_, r)| r.end > past)
        {
            self.failed.lock().unwrap().push(n);
            Err(io_err("injected failure of a ranged read"))
        } else {
            self.inner.get_ranges(reqs)
        };
        self.bytes_now.fetch_sub(bytes, Ordering::SeqCst);
        self.now.fetch_sub(1, Ordering::SeqCst);
        got
    }
    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        self.inner.put_objects(objs)
    }
    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        self.inner.delete_objects(keys)
    }
}

/// A store holding `/big` (`mib` MiB) and `/other` (1 MiB); the store,
/// the tree's root, and `/big`'s bytes.
fn pushed(mib: usize, delay: Duration) -> (Arc<Slow>, blake3::Hash, Vec<u8>) {
    let store = Arc::new(Slow::new(delay));
    let mut v = Vfs::new();
    let big = noise(5, mib << 20);
    v.write_file("/big", &big).unwrap();
    v.write_file("/other", &noise(6, 1 << 20)).unwrap();
    let st = push(&v.snapshot(), &*store, &TransferOptions::default()).unwrap();
    (store, st.root, big)
}

/// Reads `len` bytes of `/big` at `at` in reads of `step` bytes; the
/// bytes, or the first error with the offset it came at.
fn read(snap: &Snapshot, at: u64, len: usize, step: usize) -> (Vec<u8>, Option<(u64, Error)>) {
    let mut sandbox = snap.fork();
    let fd = sandbox.open("/big", OpenOptions::new().read(true)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; step];
    while got.len() < len {
        let want = step.min(len - got.len());
        let off = at + got.len() as u64;
        match sandbox.read_at(fd, &mut buf[..want], off) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some((off, e))),
        }
    }
    (got, None)
}

/// Waits until no background fetch runs.
fn settle(probe: &lazy::Probe) {
    let t = Instant::now();
    while probe.stats().jobs > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "read-ahead never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_sequential_read_overlaps_its_fetches_and_reads_right() {
    let (store, root, big) = pushed(12, Duration::from_millis(20));
    let (snap, source) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), MAX_HELD).unwrap();
    let (got, err) = read(&snap, 0, usize::MAX, 64 << 10);
    assert!(err.is_none(), "{err:?}");
    assert!(got == big, "the bytes read are the file's");
    // Background fetches ran while the reader read: more than one ranged
    // read in flight at once, and few requests for 192 chunks.
    assert!(store.most.load(Ordering::SeqCst) >= 2, "no overlap");
    let calls = store.calls.load(Ordering::SeqCst);
    assert!(calls <= 12, "{calls} ranged reads for 192 chunks");
    settle(&source.probe());
    let s = source.probe().stats();
    assert!(s.peak <= MAX_HELD && s.used == 0, "{s:?}");
}

#[test]
fn seeks_and_random_reads_read_right() {
    let (store, root, big) = pushed(6, Duration::from_millis(1));
    let (snap, source) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), MAX_HELD).unwrap();
    let mut x = 12345u64;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    for round in 0..40 {
        let at = next(big.len() as u64);
        let len = 1 + next(300_000) as usize;
        let step = [4096, 65536, 100_000][round % 3];
        let (got, err) = read(&snap, at, len, step);
        assert!(err.is_none(), "{err:?}");
        let end = (at as usize + len).min(big.len());
        assert!(got == big[at as usize..end], "read of {len} at {at}");
        // Sometimes go on from there, then jump back to the start.
        if round % 5 == 0 {
            let (got, _) = read(&snap, end as u64, 1 << 20, 65536);
            assert!(got == big[end..(end + (1 << 20)).min(big.len())]);
            let (got, _) = read(&snap, 0, 70_000, 4096);
            assert!(got == big[..70_000]);
        }
    }
    settle(&source.probe());
    assert!(source.probe().stats().peak <= MAX_HELD);
}

#[test]
fn fetch_errors_reach_the_reader_as_io_errors() {
    let (store, root, big) = pushed(8, Duration::from_millis(2));
    // A background fetch that fails costs the reader a retry, not its
    // read: the second ranged read is the first background one.
    store.fail_call.store(2, Ordering::SeqCst);
    let (snap, source) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), MAX_HELD).unwrap();
    let (got, err) = read(&snap, 0, usize::MAX, 64 << 10);
    assert!(err.is_none(), "{err:?}");
    assert!(got == big);
    assert_eq!(*store.failed.lock().unwrap(), [2]);
    settle(&source.probe());

    // A store that fails everything past 3 MiB of the pack: what is
    // before reads right, then the reader gets an I/O error naming the
    // cause, and no panic.
    store.fail_call.store(0, Ordering::SeqCst);
    store.fail_past.store(3 << 20, Ordering::SeqCst);
    let (snap, source) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), MAX_HELD).unwrap();
    let (got, err) = read(&snap, 0, usize::MAX, 64 << 10);
    let (at, e) = err.expect("a read past 3 MiB fails");
    assert!(
        ((3 << 20) - (256 << 10)..3 << 20).contains(&at),
        "failed at {at}"
    );
    assert!(got == big[..got.len()]);
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("injected failure"), "{e}");
    // It stays an error (not wrong bytes) when read again.
    let (_, again) = read(&snap, at, 4096, 4096);
    assert_eq!(again.expect("still failing").1.kind(), ErrorKind::Io);
    settle(&source.probe());
}

#[test]
fn read_ahead_stays_under_its_cap_and_stops_with_the_reader() {
    let cap = 2 << 20;
    let (store, root, big) = pushed(16, Duration::from_millis(5));
    let (snap, source) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), cap).unwrap();
    let (got, err) = read(&snap, 0, usize::MAX, 64 << 10);
    assert!(err.is_none(), "{err:?}");
    assert!(got == big);
    settle(&source.probe());
    let s = source.probe().stats();
    assert!(s.peak <= cap && s.peak > 0, "{s:?}");
    // In flight at once: the cap, plus the reader's own window.
    let most = store.bytes_most.load(Ordering::SeqCst);
    assert!(most <= cap + (1 << 20), "{most} bytes in flight");

    // A reader that reads 1 MiB, then stops and drops the tree: the
    // fetches already started finish, nothing more starts, nothing is held.
    let (snap, source) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), MAX_HELD).unwrap();
    let (got, _) = read(&snap, 4 << 20, 1 << 20, 64 << 10);
    assert!(got == big[4 << 20..5 << 20]);
    let probe = source.probe();
    drop((snap, source));
    settle(&probe);
    assert_eq!(probe.stats().used, 0);
    let calls = store.calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(store.calls.load(Ordering::SeqCst), calls);
}

/// Trees open from one store object read through one catalog, brought up
/// to date at each open (a tree pushed since is found); another store
/// object has its own.
#[test]
fn trees_opened_from_one_store_share_its_catalog() {
    let (store, root, big) = pushed(2, Duration::ZERO);
    let (a, sa) =
        open_lazy_source(store.clone(), &root, None, &Limits::default(), MAX_HELD).unwrap();
    let mut v = Vfs::new();
    let later = noise(9, 3 << 20);
    v.write_file("/big", &later).unwrap();
    let root2 = push(&v.snapshot(), &*store, &TransferOptions::default())
        .unwrap()
        .root;
    let (b, sb) =
        open_lazy_source(store.clone(), &root2, None, &Limits::default(), MAX_HELD).unwrap();
    let ca = sa.probe().catalog().expect("a's catalog");
    let cb = sb.probe().catalog().expect("b's catalog");
    assert!(Arc::ptr_eq(&ca, &cb), "one catalog for one store");
    assert!(read(&a, 0, usize::MAX, 1 << 20).0 == big);
    assert!(read(&b, 0, usize::MAX, 1 << 20).0 == later);

    let (other, root3, _) = pushed(1, Duration::ZERO);
    let (_c, sc) = open_lazy_source(other, &root3, None, &Limits::default(), MAX_HELD).unwrap();
    let cc = sc.probe().catalog().expect("c's catalog");
    assert!(!Arc::ptr_eq(&ca, &cc), "another store, another catalog");
}
