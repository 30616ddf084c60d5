//! Garbage collection of a fleet store that took a snapshot per request:
//! 1,000 trees pushed to a directory store (a shared 8 MiB base plus one
//! 64 KiB file of each tree's own), 100 of them named by refs, 900 not.
//! One `store::gc` with no grace period condemns and deletes what only the
//! 900 reach. Each sample starts from a copy of the same store; after the
//! timed run the bench checks that every ref'd tree still pulls and
//! verifies and that the unreferenced ones are gone, and prints what was
//! freed.
//!
//! `cargo bench --bench gc`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cowvfs::store::refs::{self, Expect};
use cowvfs::store::{self, BlobStore, DirStore, GcOptions, TransferOptions};
use cowvfs::{Snapshot, Vfs};
use criterion::{Criterion, criterion_group, criterion_main};

const TREES: usize = 1_000;
const NAMED: usize = 100;

/// Bytes that do not repeat within a chunk, different for each seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
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

/// The template store and the roots it holds (the first `NAMED` have refs).
fn template(dir: &Path) -> Vec<blake3::Hash> {
    let s = DirStore::open(dir).expect("template store");
    let mut base = Vfs::new();
    base.create_dir_all("/base").unwrap();
    for i in 0..8 {
        base.write_file(&format!("/base/f{i}"), &noise(i, 1 << 20))
            .unwrap();
    }
    let base = base.snapshot();
    let mut roots = Vec::with_capacity(TREES);
    for t in 0..TREES {
        let mut v = base.fork();
        v.write_file("/own", &noise(1_000 + t as u64, 64 << 10))
            .unwrap();
        let snap: Snapshot = v.snapshot();
        store::push(&snap, &s, &TransferOptions::default()).expect("push");
        if t < NAMED {
            refs::update(
                &s,
                &format!("keep-{t}"),
                &snap.root_hash(),
                Expect::Absent,
                "bench",
            )
            .expect("tag");
        }
        roots.push(snap.root_hash());
    }
    roots
}

fn copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tpl = tmp.path().join("template");
    let work = tmp.path().join("work");
    let made = Instant::now();
    let roots = template(&tpl);
    eprintln!(
        "gc bench: {TREES} trees pushed ({NAMED} with refs) in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let opts = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };

    // One checked run first: what it frees, and that it keeps what it must.
    copy(&tpl, &work);
    let s = DirStore::open(&work).unwrap();
    let report = store::gc(&s, &opts).expect("gc");
    let freed = report.deleted_manifests.bytes
        + report.deleted_packs.bytes
        + report.deleted_index.bytes
        + report.deleted_loose.bytes;
    eprintln!(
        "gc bench: live roots {}, deleted {} manifests, {} packs ({} repacked), freed {:.1} MiB; wrote {} packs ({:.1} MiB)",
        report.live_roots,
        report.deleted_manifests.objects,
        report.deleted_packs.objects,
        report.repacked.objects,
        freed as f64 / (1 << 20) as f64,
        report.written_packs.objects,
        report.written_packs.bytes as f64 / (1 << 20) as f64,
    );
    for (i, root) in roots.iter().enumerate() {
        let got = s.get_manifest(root).expect("read manifest");
        if i < NAMED {
            assert!(got.is_some(), "a ref'd tree lost its manifest");
            let lazy = store::open_lazy(
                std::sync::Arc::new(DirStore::open(&work).unwrap()),
                root,
                None,
            )
            .expect("open a ref'd tree");
            assert_eq!(
                lazy.read_file("/own").unwrap(),
                noise(1_000 + i as u64, 64 << 10)
            );
            lazy.check_invariants().expect("ref'd tree verifies");
        } else {
            assert!(got.is_none(), "an unreferenced tree survived");
        }
    }
    assert!(freed > 0);

    let mut g = c.benchmark_group("gc");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("1000_snapshots_900_unreferenced", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                copy(&tpl, &work);
                let s = DirStore::open(&work).unwrap();
                let t = Instant::now();
                let r = store::gc(&s, &opts).expect("gc");
                total += t.elapsed();
                assert_eq!(r.live_roots, NAMED as u64);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
