//! Engine benchmarks, each beside the baseline a user would otherwise pick:
//! a naive deep-copy engine (`BTreeMap<String, Vec<u8>>` cloned per fork)
//! and `cp -r` of the same tree on tmpfs.
//!
//! The `hot_path` group (see `hot_path` below and `hotpath/mod.rs`) puts
//! single file operations beside a path-keyed `HashMap` store instead;
//! `dir_map` prices a directory's map alone against that store's.
//!
//! Run: `cargo bench --bench engine` (add `-- --quick` for a short run);
//! `cargo bench --bench engine -- hot_path` for that group alone.

mod hotpath;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cowvfs::{Limits, OpenOptions, Snapshot, Vfs};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const BIG: usize = 64 << 20;

/// The deep-copy baseline: what a simple VFS does on snapshot.
#[derive(Clone, Default)]
struct Naive(BTreeMap<String, Vec<u8>>);

fn tree(files: usize, big: usize) -> (Vfs, Naive) {
    let mut v = Vfs::with_limits(Limits::unlimited());
    let mut n = Naive::default();
    for i in 0..files {
        let dir = format!("/d{}", i / 1000);
        if i % 1000 == 0 {
            v.create_dir(&dir).unwrap();
        }
        let path = format!("{dir}/f{i}");
        let data = format!("file number {i}\n").into_bytes();
        v.write_file(&path, &data).unwrap();
        n.0.insert(path, data);
    }
    if big > 0 {
        let data = vec![7u8; big];
        v.write_file("/big", &data).unwrap();
        n.0.insert("/big".into(), data);
    }
    (v, n)
}

/// Whether the command line selects the `hot_path` group alone; the
/// other groups then skip their setup (trees of up to 1 GiB), which
/// criterion's filter would not.
fn hot_path_only() -> bool {
    std::env::args().skip(1).any(|a| a.starts_with("hot_path"))
}

fn shm_dir(name: &str) -> std::path::PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    Path::new(base).join(format!("cowvfs-bench-{}-{name}", std::process::id()))
}

fn write_host_tree(root: &Path, n: &Naive) {
    let _ = std::fs::remove_dir_all(root);
    for (p, data) in &n.0 {
        let full = root.join(&p[1..]);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(full, data).unwrap();
    }
}

fn fork_and_snapshot(c: &mut Criterion) {
    if hot_path_only() {
        return;
    }
    let mut g = c.benchmark_group("fork");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for files in [10usize, 1_000, 100_000] {
        let (v, naive) = tree(files, BIG);
        let snap = v.snapshot();
        g.bench_with_input(
            BenchmarkId::new("cowvfs_snapshot", files),
            &files,
            |b, _| b.iter(|| black_box(v.snapshot())),
        );
        g.bench_with_input(BenchmarkId::new("cowvfs_fork", files), &files, |b, _| {
            b.iter(|| black_box(snap.fork()))
        });
        g.bench_with_input(
            BenchmarkId::new("naive_deep_copy", files),
            &files,
            |b, _| b.iter(|| black_box(naive.clone())),
        );
        let src = shm_dir(&format!("src{files}"));
        let dst = shm_dir(&format!("dst{files}"));
        write_host_tree(&src, &naive);
        g.bench_with_input(BenchmarkId::new("cp_r_tmpfs", files), &files, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = std::fs::remove_dir_all(&dst);
                    let t = Instant::now();
                    let ok = Command::new("cp")
                        .arg("-r")
                        .arg(&src)
                        .arg(&dst)
                        .status()
                        .unwrap();
                    total += t.elapsed();
                    assert!(ok.success());
                }
                total
            })
        });
        let _ = std::fs::remove_dir_all(&src);
        let _ = std::fs::remove_dir_all(&dst);
    }
    g.finish();
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// 1,000 forks each write one byte into a shared 64 MiB file. Reports the
/// resident memory growth once, then times the whole batch.
fn thousand_forks(c: &mut Criterion) {
    if hot_path_only() {
        return;
    }
    let (v, naive) = tree(0, BIG);
    let snap = v.snapshot();
    drop(v);
    let before = rss_bytes();
    let forks = fork_and_write(&snap, 1000);
    let grown = rss_bytes().saturating_sub(before);
    drop(forks);
    let before = rss_bytes();
    let copies: Vec<Naive> = (0..10)
        .map(|i| {
            let mut n = naive.clone();
            n.0.get_mut("/big").unwrap()[i] = 1;
            n
        })
        .collect();
    let naive_grown = rss_bytes().saturating_sub(before) * 100;
    drop(copies);
    println!(
        "1000 forks x 1-byte write into a shared 64 MiB file: RSS grew {:.1} MiB (naive deep copy: {:.0} MiB, extrapolated from 10)",
        grown as f64 / (1 << 20) as f64,
        naive_grown as f64 / (1 << 20) as f64
    );
    let mut g = c.benchmark_group("thousand_forks");
    g.sample_size(10);
    g.bench_function("cowvfs_1000_forks_1_byte_write", |b| {
        b.iter(|| black_box(fork_and_write(&snap, 1000)))
    });
    g.bench_function("naive_10_copies_1_byte_write", |b| {
        b.iter(|| {
            let v: Vec<Naive> = (0..10).map(|_| naive.clone()).collect();
            black_box(v)
        })
    });
    g.finish();
}

fn fork_and_write(snap: &Snapshot, n: usize) -> Vec<Vfs> {
    (0..n)
        .map(|i| {
            let mut f = snap.fork();
            let fd = f.open("/big", OpenOptions::new().write(true)).unwrap();
            f.write_at(fd, &[i as u8], (i as u64 * 4099) % BIG as u64)
                .unwrap();
            f.close(fd).unwrap();
            f
        })
        .collect()
}

fn first_write(c: &mut Criterion) {
    if hot_path_only() {
        return;
    }
    let gib = 1usize << 30;
    let mut v = Vfs::with_limits(Limits::unlimited());
    let fd = v
        .open("/huge", OpenOptions::new().write(true).create(true))
        .unwrap();
    let block = vec![5u8; 1 << 20];
    for i in 0..(gib >> 20) {
        v.write_at(fd, &block, (i << 20) as u64).unwrap();
    }
    v.close(fd).unwrap();
    let snap = v.snapshot();
    drop(v);
    let mut g = c.benchmark_group("first_write_after_fork_1GiB");
    g.sample_size(10);
    g.bench_function("cowvfs_fork_then_write_1_byte", |b| {
        b.iter(|| {
            let mut f = snap.fork();
            let fd = f.open("/huge", OpenOptions::new().write(true)).unwrap();
            f.write_at(fd, b"x", 512 << 20).unwrap();
            black_box(f)
        })
    });
    let naive = vec![5u8; gib];
    g.bench_function("naive_copy_then_write_1_byte", |b| {
        b.iter(|| {
            let mut copy = naive.clone();
            copy[512 << 20] = b'x';
            black_box(copy)
        })
    });
    g.finish();
}

fn throughput(c: &mut Criterion) {
    if hot_path_only() {
        return;
    }
    let size = 256usize << 20;
    let block = vec![3u8; 1 << 20];
    let mut g = c.benchmark_group("sequential_io_256MiB_1MiB_blocks");
    g.sample_size(10).throughput(Throughput::Bytes(size as u64));
    g.bench_function("cowvfs_write_at", |b| {
        b.iter_batched(
            || Vfs::with_limits(Limits::unlimited()),
            |mut v| {
                let fd = v
                    .open("/f", OpenOptions::new().write(true).create(true))
                    .unwrap();
                for i in 0..(size >> 20) {
                    v.write_at(fd, &block, (i << 20) as u64).unwrap();
                }
                v
            },
            BatchSize::PerIteration,
        )
    });
    let mut v = Vfs::with_limits(Limits::unlimited());
    let fd = v
        .open("/f", OpenOptions::new().read(true).write(true).create(true))
        .unwrap();
    for i in 0..(size >> 20) {
        v.write_at(fd, &block, (i << 20) as u64).unwrap();
    }
    let mut buf = vec![0u8; 1 << 20];
    g.bench_function("cowvfs_read_at", |b| {
        b.iter(|| {
            for i in 0..(size >> 20) {
                v.read_at(fd, &mut buf, (i << 20) as u64).unwrap();
            }
        })
    });
    g.bench_function("baseline_vec_extend", |b| {
        b.iter(|| {
            let mut out: Vec<u8> = Vec::new();
            for _ in 0..(size >> 20) {
                out.extend_from_slice(&block);
            }
            black_box(out)
        })
    });
    g.finish();
}

fn diff_and_hash(c: &mut Criterion) {
    if hot_path_only() {
        return;
    }
    let (v, naive) = tree(100_000, 0);
    let base = v.snapshot();
    let _ = base.root_hash();
    let mut child = base.fork();
    child.write_file("/d50/f50000", b"changed").unwrap();
    let changed = child.snapshot();
    let mut naive2 = naive.clone();
    naive2.0.insert("/d50/f50000".into(), b"changed".to_vec());
    let mut g = c.benchmark_group("diff_100k_files_one_change");
    g.sample_size(20);
    g.bench_function("cowvfs_pruned_diff", |b| {
        b.iter(|| black_box(base.diff(&changed)))
    });
    g.bench_function("naive_full_compare", |b| {
        b.iter(|| {
            let d: Vec<&String> = naive
                .0
                .iter()
                .filter(|(k, v)| naive2.0.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .collect();
            black_box(d)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("root_hash_100k_files_one_change");
    g.sample_size(20);
    g.bench_function("cowvfs_memoized_rehash", |b| {
        b.iter_batched(
            || {
                let mut f = base.fork();
                f.write_file("/d50/f50000", b"changed").unwrap();
                f.snapshot()
            },
            |s| black_box(s.root_hash()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("full_hash_from_scratch", |b| {
        b.iter_batched(
            || tree(100_000, 0).0.snapshot(),
            |s| black_box(s.root_hash()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Paths the per-operation benches use: an existing 1 KiB file, a 4 KiB
/// file made for them, a 100-entry directory, the rename pair, and the
/// names `create` and `unlink` make and remove.
const STAT_PATH: &str = "/app/d7/f42";
const RW_PATH: &str = "/app/d7/r4k";
const LIST_DIR: &str = "/app/d9";
const RENAME_A: &str = "/app/d7/f0";
const RENAME_B: &str = "/app/d8/m0";
/// `create` and `unlink` work in batches of this many names, so the
/// directory never grows past 1,100 entries however many iterations
/// criterion asks for.
const BATCH: usize = 1_000;
/// The 64 KiB file of the `*_worst_offset` rows.
const RW64_PATH: &str = "/app/d7/r64k";

/// The offset into `wide` (a multiple of 8 below 4096) at which `f` on
/// `len` bytes of it takes longest, each offset timed as the best of five
/// calls: where a copy between that buffer and the store's is slowest.
fn worst_offset(wide: &mut [u8], len: usize, mut f: impl FnMut(&mut [u8])) -> usize {
    (0..512)
        .map(|k| {
            let b = &mut wide[k * 8..k * 8 + len];
            let best = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f(&mut *b);
                    t.elapsed()
                })
                .min()
                .unwrap_or_default();
            (best, k * 8)
        })
        .max()
        .map_or(0, |(_, at)| at)
}

/// Runs `iters` calls of `timed` over the batch names, timing only those;
/// `untimed` runs on each name before (`timed_first` false) or after
/// (`timed_first` true) its batch, untimed, to restore the tree.
fn batched<T>(
    state: &mut T,
    iters: u64,
    names: &[String],
    timed_first: bool,
    mut timed: impl FnMut(&mut T, &str),
    mut untimed: impl FnMut(&mut T, &str),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let batch = &names[..left.min(names.len())];
        if !timed_first {
            batch.iter().for_each(|n| untimed(state, n));
        }
        let t = Instant::now();
        for n in batch {
            timed(state, n);
        }
        total += t.elapsed();
        if timed_first {
            batch.iter().for_each(|n| untimed(state, n));
        }
        left -= batch.len();
    }
    total
}

/// The hot-path issue's workloads and single operations, each on cowvfs
/// (a fork of the base snapshot, made once per bench outside the timing)
/// and on the naive store (a copy of the same tree, likewise). Only the
/// operations themselves are timed; the trees persist across iterations,
/// each of which leaves them as it found them.
fn hot_path(c: &mut Criterion) {
    let (snap, naive) = hotpath::build();
    let mut g = c.benchmark_group("hot_path");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    // One iteration: 5,000 cycles of write_file 4 KiB to /app/d7/nI,
    // read_file, metadata, remove_file.
    let names = hotpath::cycle_names();
    let data = hotpath::pattern(hotpath::SMALL_LEN, 1);
    g.throughput(Throughput::Elements(hotpath::CYCLES as u64));
    let mut v = hotpath::fork(&snap);
    g.bench_function("small_file_cycle/cowvfs", |b| {
        b.iter(|| hotpath::small_cycles_cowvfs(&mut v, &names, &data))
    });
    let mut n = naive.clone();
    g.bench_function("small_file_cycle/naive", |b| {
        b.iter(|| hotpath::small_cycles_naive(&mut n, &names, &data))
    });
    g.bench_function("small_file_cycle/floor", |b| {
        b.iter(|| hotpath::small_cycles_floor(&names, &data))
    });
    // The baseline and the floor again, copying as cowvfs does (2 KiB and
    // more in 1 KiB pieces, clear of glibc's `rep movsb`; see src/copy.rs):
    // what is left between cowvfs and them is the rest of the engine.
    let mut n = naive.clone().with_split_copies();
    g.bench_function("small_file_cycle/naive_split", |b| {
        b.iter(|| hotpath::small_cycles_naive(&mut n, &names, &data))
    });
    g.bench_function("small_file_cycle/floor_split", |b| {
        b.iter(|| hotpath::small_cycles_floor_split(&names, &data))
    });

    // One iteration: open a new file, 512 write_at of 64 KiB, 512 read_at
    // into a reused 64 KiB buffer, close, remove.
    let block = hotpath::pattern(hotpath::BLOCK, 2);
    let mut buf = vec![0u8; hotpath::BLOCK];
    g.throughput(Throughput::Bytes(2 * hotpath::BIG_LEN as u64));
    let mut v = hotpath::fork(&snap);
    g.bench_function("big_file_blocks/cowvfs", |b| {
        b.iter(|| hotpath::big_file_cowvfs(&mut v, &block, &mut buf))
    });
    let mut n = naive.clone();
    g.bench_function("big_file_blocks/naive", |b| {
        b.iter(|| hotpath::big_file_naive(&mut n, &block, &mut buf))
    });

    // One iteration: one operation.
    g.throughput(Throughput::Elements(1));
    let mut v = hotpath::fork(&snap);
    let mut n = naive.clone();
    let four_k = hotpath::pattern(4096, 3);
    let mut buf4 = vec![0u8; 4096];
    v.write_file(RW_PATH, &four_k).unwrap();
    n.write_file(RW_PATH, &four_k).unwrap();
    let vfd = v
        .open(RW_PATH, OpenOptions::new().read(true).write(true))
        .unwrap();
    let nfd = n.open(RW_PATH, false).unwrap();
    let reading = OpenOptions::new().read(true).clone();
    let creating = OpenOptions::new().write(true).create_new(true).clone();
    let batch: Vec<String> = (0..BATCH).map(|i| format!("/app/d7/c{i}")).collect();

    // open: open for reading and close an existing 1 KiB file.
    g.bench_function("per_op/open/cowvfs", |b| {
        b.iter(|| {
            let fd = v.open(black_box(STAT_PATH), &reading).unwrap();
            v.close(fd).unwrap();
        })
    });
    g.bench_function("per_op/open/naive", |b| {
        b.iter(|| {
            let fd = n.open(black_box(STAT_PATH), false).unwrap();
            n.close(fd).unwrap();
        })
    });
    g.bench_function("per_op/stat/cowvfs", |b| {
        b.iter(|| black_box(v.metadata(black_box(STAT_PATH)).unwrap()))
    });
    g.bench_function("per_op/stat/naive", |b| {
        b.iter(|| black_box(n.metadata(black_box(STAT_PATH)).unwrap()))
    });
    // read_4k / write_4k: read_at / write_at of 4 KiB at offset 0 of a
    // 4 KiB file, through a descriptor opened once.
    g.bench_function("per_op/read_4k/cowvfs", |b| {
        b.iter(|| black_box(v.read_at(vfd, &mut buf4, black_box(0)).unwrap()))
    });
    g.bench_function("per_op/read_4k/naive", |b| {
        b.iter(|| black_box(n.read_at(nfd, &mut buf4, black_box(0)).unwrap()))
    });
    g.bench_function("per_op/write_4k/cowvfs", |b| {
        b.iter(|| black_box(v.write_at(vfd, &four_k, black_box(0)).unwrap()))
    });
    g.bench_function("per_op/write_4k/naive", |b| {
        b.iter(|| black_box(n.write_at(nfd, &four_k, black_box(0)).unwrap()))
    });
    // read_64k_worst_offset / write_64k_worst_offset: read_at / write_at
    // (in place) of 64 KiB with the caller's buffer at the 8-byte offset
    // of a page where that side's copy is slowest, found untimed. Both
    // sides make the same copies; on some CPUs a few offsets put glibc's
    // `memcpy` on a slow `rep movsb` path (see src/copy.rs).
    let mut wide = hotpath::pattern(hotpath::BLOCK + 4096, 4);
    let block64 = hotpath::pattern(hotpath::BLOCK, 5);
    v.write_file(RW64_PATH, &block64).unwrap();
    n.write_file(RW64_PATH, &block64).unwrap();
    let vfd64 = v
        .open(RW64_PATH, OpenOptions::new().read(true).write(true))
        .unwrap();
    let nfd64 = n.open(RW64_PATH, false).unwrap();
    let len = hotpath::BLOCK;
    let at = worst_offset(&mut wide, len, |b| {
        v.read_at(vfd64, b, 0).unwrap();
    });
    g.bench_function("per_op/read_64k_worst_offset/cowvfs", |b| {
        b.iter(|| black_box(v.read_at(vfd64, &mut wide[at..at + len], 0).unwrap()))
    });
    let at = worst_offset(&mut wide, len, |b| {
        n.read_at(nfd64, b, 0).unwrap();
    });
    g.bench_function("per_op/read_64k_worst_offset/naive", |b| {
        b.iter(|| black_box(n.read_at(nfd64, &mut wide[at..at + len], 0).unwrap()))
    });
    let at = worst_offset(&mut wide, len, |b| {
        v.write_at(vfd64, b, 0).unwrap();
    });
    g.bench_function("per_op/write_64k_worst_offset/cowvfs", |b| {
        b.iter(|| black_box(v.write_at(vfd64, &wide[at..at + len], 0).unwrap()))
    });
    let at = worst_offset(&mut wide, len, |b| {
        n.write_at(nfd64, b, 0).unwrap();
    });
    g.bench_function("per_op/write_64k_worst_offset/naive", |b| {
        b.iter(|| black_box(n.write_at(nfd64, &wide[at..at + len], 0).unwrap()))
    });
    // create: O_CREAT|O_EXCL open of a new name and close; the files are
    // removed untimed after each batch.
    g.bench_function("per_op/create/cowvfs", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut v,
                iters,
                &batch,
                true,
                |v, p| {
                    let fd = v.open(p, &creating).unwrap();
                    v.close(fd).unwrap();
                },
                |v, p| v.remove_file(p).unwrap(),
            )
        })
    });
    g.bench_function("per_op/create/naive", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut n,
                iters,
                &batch,
                true,
                |n, p| {
                    let fd = n.open(p, true).unwrap();
                    n.close(fd).unwrap();
                },
                |n, p| n.remove_file(p).unwrap(),
            )
        })
    });
    // unlink: remove_file of an empty file created untimed before its batch.
    g.bench_function("per_op/unlink/cowvfs", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut v,
                iters,
                &batch,
                false,
                |v, p| v.remove_file(p).unwrap(),
                |v, p| {
                    let fd = v.open(p, &creating).unwrap();
                    v.close(fd).unwrap();
                },
            )
        })
    });
    g.bench_function("per_op/unlink/naive", |b| {
        b.iter_custom(|iters| {
            batched(
                &mut n,
                iters,
                &batch,
                false,
                |n, p| n.remove_file(p).unwrap(),
                |n, p| {
                    let fd = n.open(p, true).unwrap();
                    n.close(fd).unwrap();
                },
            )
        })
    });
    // rename: a 1 KiB file moves between two directories, back and forth.
    let mut there = false;
    g.bench_function("per_op/rename/cowvfs", |b| {
        b.iter(|| {
            let (from, to) = if there {
                (RENAME_B, RENAME_A)
            } else {
                (RENAME_A, RENAME_B)
            };
            v.rename(black_box(from), black_box(to)).unwrap();
            there = !there;
        })
    });
    let mut there = false;
    g.bench_function("per_op/rename/naive", |b| {
        b.iter(|| {
            let (from, to) = if there {
                (RENAME_B, RENAME_A)
            } else {
                (RENAME_A, RENAME_B)
            };
            n.rename(black_box(from), black_box(to)).unwrap();
            there = !there;
        })
    });
    // readdir_100: list a directory of 100 files (names copied out).
    g.bench_function("per_op/readdir_100/cowvfs", |b| {
        b.iter(|| black_box(v.read_dir(black_box(LIST_DIR)).unwrap()))
    });
    g.bench_function("per_op/readdir_100/naive", |b| {
        b.iter(|| black_box(n.read_dir(black_box(LIST_DIR)).unwrap()))
    });
    g.finish();
}

/// What a directory of `entries` names costs per name for what a create
/// and an unlink ask of it (look the name up and miss, insert it, look it
/// up and hit, remove it), in three maps: the persistent ordered map the
/// engine's directories are (`imbl::OrdMap`, shared with a snapshot as a
/// fork's would be), std's `BTreeMap` (ordered, not persistent), and
/// the `HashMap` of the naive store. The engine needs order (listings,
/// the root hash, checkpoints, diffs and merges read entries in name
/// order), so this prices what order costs against the naive store.
/// Both ordered maps are searched by `&str`, a `memcmp` per key; the
/// engine's own probe (`tree::Probe`, a word at a time) is crate-private,
/// so its directories search a little faster than this row.
///
/// Beside them, the alternative a redesign would take: imbl's persistent
/// hash map (`imbl_hashmap`), which keeps the O(1) fork but no order, so
/// a listing must sort (`list_hashmap_sorted` against `list_ordmap`,
/// per entry listed).
fn dir_maps(c: &mut Criterion) {
    if hot_path_only() {
        return;
    }
    use cowvfs::Name;
    use std::collections::HashMap;
    /// Benches, per name of `$new`, what a create and an unlink ask of
    /// `$map`: look the name up and miss, insert it (keyed `$key(n)`),
    /// look it up and hit, remove it. One body for maps with no common
    /// trait.
    macro_rules! map_work {
        ($g:expr, $id:expr, $map:ident, $new:expr, $key:expr) => {
            $g.bench_function($id, |b| {
                b.iter(|| {
                    for (i, n) in $new.iter().enumerate() {
                        assert!(!$map.contains_key(n.as_str()));
                        $map.insert($key(n), i as u64);
                        black_box($map.get(n.as_str()));
                        $map.remove(n.as_str());
                    }
                })
            })
        };
    }
    let name = |n: &String| Name::from(n.as_str());
    let mut g = c.benchmark_group("dir_map");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let new: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    g.throughput(Throughput::Elements(new.len() as u64));
    for entries in [100usize, 1_100] {
        let names: Vec<String> = (0..entries).map(|i| format!("f{i}")).collect();
        let keyed = || names.iter().enumerate().map(|(i, n)| (name(n), i as u64));
        let mut ord: imbl::OrdMap<Name, u64> = keyed().collect();
        // A snapshot shares the map, as a fork's base does.
        let snapshot = ord.clone();
        map_work!(g, BenchmarkId::new("imbl_ordmap", entries), ord, new, name);
        // The same persistent sharing, hashed: what a directory would be
        // if it kept no order and sorted its names when listed.
        let mut hamt: imbl::HashMap<Name, u64> = keyed().collect();
        let hamt_snapshot = hamt.clone();
        map_work!(
            g,
            BenchmarkId::new("imbl_hashmap", entries),
            hamt,
            new,
            name
        );
        // And what a listing of the whole directory then costs: the
        // ordered map is read in order; the hashed one is sorted first.
        g.throughput(Throughput::Elements(entries as u64));
        g.bench_function(BenchmarkId::new("list_ordmap", entries), |b| {
            b.iter(|| {
                let all: Vec<(&Name, &u64)> = ord.iter().collect();
                black_box(all)
            })
        });
        g.bench_function(BenchmarkId::new("list_hashmap_sorted", entries), |b| {
            b.iter(|| {
                let mut all: Vec<(&Name, &u64)> = hamt.iter().collect();
                all.sort_unstable_by(|x, y| x.0.cmp(y.0));
                black_box(all)
            })
        });
        g.throughput(Throughput::Elements(new.len() as u64));
        drop((snapshot, hamt_snapshot));
        let mut bt: BTreeMap<Name, u64> = keyed().collect();
        map_work!(g, BenchmarkId::new("std_btreemap", entries), bt, new, name);
        let mut hm: HashMap<String, u64> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u64))
            .collect();
        map_work!(
            g,
            BenchmarkId::new("std_hashmap", entries),
            hm,
            new,
            String::clone
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    hot_path,
    dir_maps,
    fork_and_snapshot,
    thousand_forks,
    first_write,
    throughput,
    diff_and_hash
);
criterion_main!(benches);
