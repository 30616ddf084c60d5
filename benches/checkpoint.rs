//! Checkpoint benchmarks, each beside the baseline a user would otherwise
//! pick: blake3 and plain file I/O for bulk data, `tar` for a real tree.
//! Files go to tmpfs (/dev/shm) so the disk does not dominate.
//!
//! `COWVFS_BENCH_GIB` scales the bulk size (default 1).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::Arc;

use cowvfs::store::{self, BlobStore, MemStore, TransferOptions};
use cowvfs::{OpenOptions, Snapshot, Vfs, hostdir};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn scratch() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("cowvfs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bulk_bytes() -> usize {
    let gib: f64 = std::env::var("COWVFS_BENCH_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    (gib * (1u64 << 30) as f64) as usize
}

/// Fast unique (incompressible, never repeating) bytes.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

/// `total` bytes of unique data in `files` files.
fn bulk_tree(total: usize, files: usize) -> Snapshot {
    let mut v = Vfs::with_limits(cowvfs::Limits::unlimited());
    let per = total / files;
    let mut buf = vec![0u8; per];
    for i in 0..files {
        let dir = format!("/d{}", i / 1000);
        if i % 1000 == 0 {
            v.create_dir(&dir).unwrap();
        }
        fill(&mut buf, i as u64 + 1);
        let fd = v
            .open(
                &format!("{dir}/f{i}"),
                OpenOptions::new().write(true).create(true),
            )
            .unwrap();
        v.write_at(fd, &buf, 0).unwrap();
        v.close(fd).unwrap();
    }
    v.snapshot()
}

/// Whether a command-line filter could select something in `group`, so
/// building the big inputs of groups nobody asked for is skipped.
fn wanted(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            let f = f.trim_end_matches('$');
            group.contains(f) || f.starts_with(group)
        })
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn bulk(c: &mut Criterion) {
    if !wanted("bulk_unique_data") && !wanted("delta_small_write") {
        return;
    }
    let total = bulk_bytes();
    let dir = scratch();
    let snap = bulk_tree(total, 16);
    let ck = dir.join("bulk.ck");
    let raw = dir.join("bulk.raw");
    let mut g = c.benchmark_group("bulk_unique_data");
    g.throughput(Throughput::Bytes(total as u64));
    // Root hash once, as any real snapshot that was hashed before saving.
    snap.root_hash();
    snap.save(&ck).unwrap();
    g.bench_function("save", |b| b.iter(|| snap.save(&ck).unwrap()));
    g.bench_function("load", |b| {
        b.iter_with_large_drop(|| Snapshot::load(&ck).unwrap())
    });
    g.bench_function("open_lazy", |b| {
        b.iter_with_large_drop(|| Snapshot::open(&ck).unwrap())
    });
    g.bench_function("save_then_load", |b| {
        // Dropping the loaded tree is not part of loading it.
        b.iter_with_large_drop(|| {
            snap.save(&ck).unwrap();
            Snapshot::load(&ck).unwrap()
        })
    });
    // Baselines: the same bytes hashed once, written and read as one file.
    let flat = std::fs::read(&ck).unwrap();
    g.bench_function("baseline_blake3", |b| {
        b.iter(|| black_box(blake3::hash(&flat)))
    });
    g.bench_function("baseline_write_file", |b| {
        b.iter(|| std::fs::write(&raw, &flat).unwrap())
    });
    // Dropped outside the timing, as `load`'s tree is.
    g.bench_function("baseline_read_file", |b| {
        b.iter_with_large_drop(|| std::fs::read(&raw).unwrap())
    });
    g.finish();
    drop(flat);

    // A delta after one small write into the big tree.
    let mut g = c.benchmark_group("delta_small_write");
    let mut fork = snap.fork();
    let fd = fork.open("/d0/f3", OpenOptions::new().write(true)).unwrap();
    fork.write_at(fd, b"one small write", 12_345).unwrap();
    fork.close(fd).unwrap();
    let child = fork.snapshot();
    let mut out = Vec::new();
    child.save_delta_to(&snap, &mut out).unwrap();
    eprintln!(
        "delta after one small write into {} MiB: {} bytes",
        total >> 20,
        out.len()
    );
    g.bench_function("save_delta", |b| {
        b.iter(|| {
            // A fresh snapshot each time, so nothing is memoized in advance.
            let mut f = snap.fork();
            let fd = f.open("/d0/f3", OpenOptions::new().write(true)).unwrap();
            f.write_at(fd, b"one small write", 12_345).unwrap();
            f.close(fd).unwrap();
            let s = f.snapshot();
            let mut out = Vec::with_capacity(1 << 20);
            s.save_delta_to(&snap, &mut out).unwrap();
            black_box(out.len())
        })
    });
    // The same delta as a real file: written, fsynced and renamed into
    // place, the directory fsynced (what `save_delta` always does).
    let delta_file = dir.join("small-write.delta");
    g.bench_function("save_delta_file_fsync", |b| {
        b.iter(|| {
            let mut f = snap.fork();
            let fd = f.open("/d0/f3", OpenOptions::new().write(true)).unwrap();
            f.write_at(fd, b"one small write", 12_345).unwrap();
            f.close(fd).unwrap();
            f.snapshot().save_delta(&snap, &delta_file).unwrap();
        })
    });
    g.bench_function("baseline_full_save", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(total + (1 << 20));
            child.save_to(&mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
    drop((snap, child));
    let _ = std::fs::remove_dir_all(&dir);
}

fn many_files(c: &mut Criterion) {
    if !wanted("open_100k_files") {
        return;
    }
    let total = bulk_bytes();
    let dir = scratch();
    let snap = bulk_tree(total, 100_000);
    let ck = dir.join("many.ck");
    snap.save(&ck).unwrap();
    // The same tree in an in-memory fleet store: a lazy open from a store
    // with no network under it, so what it measures is the manifest's
    // checks and the tree's building.
    let mem: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    let root = snap.root_hash();
    store::push(&snap, &*mem, &TransferOptions::default()).unwrap();
    drop(snap);
    let mut g = c.benchmark_group("open_100k_files");
    g.bench_function("open_lazy", |b| {
        b.iter_with_large_drop(|| Snapshot::open(&ck).unwrap())
    });
    g.bench_function("open_lazy_store", |b| {
        b.iter_with_large_drop(|| store::open_lazy(mem.clone(), &root, None).unwrap())
    });
    let s = Snapshot::open(&ck).unwrap();
    g.bench_function("open_lazy_then_read_one", |b| {
        b.iter_with_large_drop(|| {
            let s = Snapshot::open(&ck).unwrap();
            black_box(s.read_file("/d50/f50000").unwrap().len());
            s
        })
    });
    drop(s);
    // The baseline, measured here rather than quoted: a full load of the
    // same file (reads and verifies every byte).
    g.bench_function("baseline_load", |b| {
        b.iter_with_large_drop(|| Snapshot::load(&ck).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Python standard library's directory, as python3 reports it
/// (python3 is on every machine of this project; without it the benchmark
/// fails and says how to install it).
fn stdlib_dir() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()[\"stdlib\"])",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install it with: apt-get install -y python3")
        });
    assert!(out.status.success(), "python3 cannot name its stdlib");
    let p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        p.is_dir(),
        "python3's stdlib {} is not a directory",
        p.display()
    );
    p
}

fn real_tree(c: &mut Criterion) {
    if !wanted("real_tree") {
        return;
    }
    let src = stdlib_dir();
    let dir = scratch();
    // Copy the tree to tmpfs first so both sides read from memory.
    let tree = dir.join("src");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success());
    let ck = dir.join("tree.ck");
    let tar = dir.join("tree.tar");
    let out = dir.join("out");
    let mut v = Vfs::with_limits(cowvfs::Limits::unlimited());
    let stats = hostdir::import_dir(&mut v, &tree, "/lib").unwrap();
    eprintln!(
        "real tree {}: {} files, {} dirs, {} symlinks, {} MiB",
        src.display(),
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.bytes >> 20
    );
    let snap = v.snapshot();
    snap.save(&ck).unwrap();
    let mut g = c.benchmark_group("real_tree");
    g.throughput(Throughput::Bytes(stats.bytes));
    g.bench_function("import", |b| {
        b.iter(|| {
            let mut v = Vfs::with_limits(cowvfs::Limits::unlimited());
            hostdir::import_dir(&mut v, &tree, "/lib").unwrap();
            black_box(v.snapshot())
        })
    });
    g.bench_function("import_and_save", |b| {
        b.iter(|| {
            let mut v = Vfs::with_limits(cowvfs::Limits::unlimited());
            hostdir::import_dir(&mut v, &tree, "/lib").unwrap();
            v.snapshot().save(&ck).unwrap()
        })
    });
    g.bench_function("baseline_tar_cf", |b| {
        b.iter(|| {
            let st = Command::new("tar")
                .arg("cf")
                .arg(&tar)
                .arg("-C")
                .arg(&tree)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    g.bench_function("load", |b| {
        b.iter_with_large_drop(|| Snapshot::load(&ck).unwrap())
    });
    g.bench_function("load_and_export", |b| {
        b.iter_custom(|n| {
            let mut t = Duration::ZERO;
            for _ in 0..n {
                let _ = std::fs::remove_dir_all(&out);
                let start = Instant::now();
                let s = Snapshot::load(&ck).unwrap();
                hostdir::export_dir(&s, "/lib", &out).unwrap();
                t += start.elapsed();
            }
            t
        })
    });
    g.bench_function("baseline_tar_xf", |b| {
        b.iter_custom(|n| {
            let mut t = Duration::ZERO;
            for _ in 0..n {
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir(&out).unwrap();
                let start = Instant::now();
                let st = Command::new("tar")
                    .arg("xf")
                    .arg(&tar)
                    .arg("-C")
                    .arg(&out)
                    .status()
                    .unwrap();
                assert!(st.success());
                t += start.elapsed();
            }
            t
        })
    });
    g.finish();
    eprintln!(
        "real tree sizes: checkpoint {} KiB, tar {} KiB",
        std::fs::metadata(&ck).unwrap().len() >> 10,
        std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0) >> 10
    );
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&dir)
        .status();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = config();
    targets = bulk, many_files, real_tree
}
criterion_main!(benches);
