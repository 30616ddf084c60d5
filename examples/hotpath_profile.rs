//! The hot-path workloads of `benches/engine.rs` as a plain program, for
//! `perf` and for counting heap allocations.
//!
//! ```text
//! hotpath_profile small [SECS] [naive [split]]
//!                                        small-file cycles for SECS (3) s
//!                                        (split: the baseline copying as
//!                                        cowvfs does)
//! hotpath_profile big [SECS] [naive]     32 MiB in 64 KiB blocks, for SECS s
//! hotpath_profile floor [SECS] [split]   the cycle's copies alone
//! hotpath_profile calls [SECS] [naive]   the cycle's four calls timed
//!                                        one by one (naive: the baseline
//!                                        with split copies)
//! hotpath_profile counts                 allocations per call, both sides
//! hotpath_profile offsets                read_at / write_at of 4 and 64 KiB
//!                                        with the buffer at each 8-byte
//!                                        offset of a page: median, worst
//! hotpath_profile op NAME [SECS]         one of the per-op rows in a loop:
//!                                        write4k, stat, open, create,
//!                                        rename, readfile
//! ```
//!
//! The allocator counts only inside `counts`, so under `perf` it costs
//! one relaxed load per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cowvfs::{OpenOptions, Vfs};

// The benches' module; this program uses only part of it.
#[allow(dead_code)]
#[path = "../benches/hotpath/mod.rs"]
mod hotpath;

use hotpath::Naive;

/// The system allocator, counting allocations (a `realloc` counts as one,
/// of its new size) while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) {
    if COUNTING.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call goes straight to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes that `f` asks for.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    ALLOCS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let r = f();
    COUNTING.store(false, Relaxed);
    (r, ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

/// Per-call allocation counts, summed over many calls.
#[derive(Default)]
struct Tally {
    rows: Vec<(&'static str, u64, u64, u64)>,
}

impl Tally {
    fn add<R>(&mut self, what: &'static str, f: impl FnOnce() -> R) -> R {
        let (r, n, b) = counted(f);
        match self.rows.iter_mut().find(|row| row.0 == what) {
            Some(row) => {
                row.1 += 1;
                row.2 += n;
                row.3 += b;
            }
            None => self.rows.push((what, 1, n, b)),
        }
        r
    }

    fn print(&self, side: &str) {
        for (what, calls, n, b) in &self.rows {
            println!(
                "| {side} | {what} | {:.2} | {:.0} |",
                *n as f64 / *calls as f64,
                *b as f64 / *calls as f64
            );
        }
    }
}

fn run_for(secs: f64, label: &str, mut f: impl FnMut()) {
    let limit = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut rounds = 0u64;
    while t.elapsed() < limit {
        f();
        rounds += 1;
    }
    let per = t.elapsed() / rounds.max(1) as u32;
    eprintln!("{label}: {rounds} rounds, {per:?} each");
}

fn counts(snap: &cowvfs::Snapshot, naive: &Naive) {
    let names = hotpath::cycle_names();
    let data = hotpath::pattern(hotpath::SMALL_LEN, 1);
    let block = hotpath::pattern(hotpath::BLOCK, 2);
    let mut buf = vec![0u8; hotpath::BLOCK];
    println!("| side | call | allocations per call | bytes per call |");
    println!("| --- | --- | ---: | ---: |");

    // The small-file cycle, in steady state (one round first so the
    // fork's copies of the directories above are made).
    let mut v = hotpath::fork(snap);
    hotpath::small_cycles_cowvfs(&mut v, &names, &data);
    let mut t = Tally::default();
    for name in &names {
        t.add("write_file 4 KiB", || v.write_file(name, &data).unwrap());
        black_box(t.add("read_file", || v.read_file(name).unwrap()));
        black_box(t.add("metadata", || v.metadata(name).unwrap()));
        t.add("remove_file", || v.remove_file(name).unwrap());
    }
    let (_, n, b) = counted(|| hotpath::small_cycles_cowvfs(&mut v, &names, &data));
    t.rows.push(("whole cycle", names.len() as u64, n, b));
    let opts = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .clone();
    for _ in 0..100 {
        let fd = t.add("open (create)", || v.open(hotpath::BIG_NEW, &opts).unwrap());
        for i in 0..hotpath::BIG_LEN / hotpath::BLOCK {
            let off = (i * hotpath::BLOCK) as u64;
            t.add("write_at 64 KiB (new chunk)", || {
                v.write_at(fd, &block, off).unwrap()
            });
        }
        for i in 0..hotpath::BIG_LEN / hotpath::BLOCK {
            let off = (i * hotpath::BLOCK) as u64;
            t.add("read_at 64 KiB", || v.read_at(fd, &mut buf, off).unwrap());
        }
        t.add("close", || v.close(fd).unwrap());
        t.add("remove_file (32 MiB)", || {
            v.remove_file(hotpath::BIG_NEW).unwrap()
        });
    }
    let reading = OpenOptions::new().read(true).clone();
    let creating = OpenOptions::new().write(true).create_new(true).clone();
    for i in 0..1000 {
        let fd = t.add("open existing (read)", || {
            v.open("/app/d7/f42", &reading).unwrap()
        });
        v.close(fd).unwrap();
        let p = format!("/app/d7/c{i}");
        let fd = t.add("open create_new", || v.open(&p, &creating).unwrap());
        t.add("write_at 4 KiB (in place)", || {
            v.write_at(fd, &data, 0).unwrap()
        });
        t.add("write_at 4 KiB (same file again)", || {
            v.write_at(fd, &data, 0).unwrap()
        });
        v.close(fd).unwrap();
        t.add("unlink", || v.remove_file(&p).unwrap());
        let (a, b) = if i % 2 == 0 {
            ("/app/d7/f0", "/app/d8/m0")
        } else {
            ("/app/d8/m0", "/app/d7/f0")
        };
        t.add("rename", || v.rename(a, b).unwrap());
        black_box(t.add("read_dir 100", || v.read_dir("/app/d9").unwrap()));
    }
    t.print("cowvfs");

    let mut n = naive.clone();
    let mut t = Tally::default();
    for name in &names {
        t.add("write_file 4 KiB", || n.write_file(name, &data).unwrap());
        black_box(t.add("read_file", || n.read_file(name).unwrap()));
        black_box(t.add("metadata", || n.metadata(name).unwrap()));
        t.add("remove_file", || n.remove_file(name).unwrap());
    }
    let (_, c, b) = counted(|| hotpath::small_cycles_naive(&mut n, &names, &data));
    t.rows.push(("whole cycle", names.len() as u64, c, b));
    t.print("naive");
}

/// The small-file cycle with each of its four calls timed on its own, on
/// one side (the baseline with split copies, as in `small naive split`):
/// each call's mean over a round of 5,000 cycles, best of the rounds run
/// in `secs`, less what reading the clock costs.
fn calls(snap: &cowvfs::Snapshot, naive: &Naive, naive_side: bool, secs: f64) {
    let names = hotpath::cycle_names();
    let data = hotpath::pattern(hotpath::SMALL_LEN, 1);
    let mut v: Vfs = hotpath::fork(snap);
    let mut n = naive.clone().with_split_copies();
    let origin = Instant::now();
    let clock = || origin.elapsed().as_nanos() as u64;
    // What one reading of the clock adds to an interval.
    let reads = 10_000u64;
    let t = clock();
    for _ in 0..reads {
        black_box(clock());
    }
    let read_cost = (clock() - t) as f64 / reads as f64;
    let mut best = [f64::MAX; 4];
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        let mut sum = [0u64; 4];
        for name in &names {
            let t0 = clock();
            if naive_side {
                n.write_file(name, &data).unwrap();
            } else {
                v.write_file(name, &data).unwrap();
            }
            let t1 = clock();
            if naive_side {
                black_box(n.read_file(name).unwrap());
            } else {
                black_box(v.read_file(name).unwrap());
            }
            let t2 = clock();
            if naive_side {
                black_box(n.metadata(name).unwrap());
            } else {
                black_box(v.metadata(name).unwrap());
            }
            let t3 = clock();
            if naive_side {
                n.remove_file(name).unwrap();
            } else {
                v.remove_file(name).unwrap();
            }
            let t4 = clock();
            for (s, d) in sum.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                *s += d;
            }
        }
        for (b, s) in best.iter_mut().zip(sum) {
            *b = b.min(s as f64 / names.len() as f64 - read_cost);
        }
    }
    let side = if naive_side {
        "naive, split copies"
    } else {
        "cowvfs"
    };
    eprintln!(
        "{side}, ns per call: write_file {:.0}, read_file {:.0}, metadata {:.0}, remove_file {:.0}",
        best[0], best[1], best[2], best[3]
    );
}

/// One per-op row of the bench in a loop of 1,000 calls per round, for
/// `perf`: the same paths and options as `benches/engine.rs`.
fn one_op(snap: &cowvfs::Snapshot, what: &str, secs: f64) {
    let mut v = hotpath::fork(snap);
    let data = hotpath::pattern(hotpath::SMALL_LEN, 1);
    v.write_file("/app/d7/rw", &data).unwrap();
    let rw = OpenOptions::new().read(true).write(true).clone();
    let reading = OpenOptions::new().read(true).clone();
    let creating = OpenOptions::new().write(true).create_new(true).clone();
    let fd = v.open("/app/d7/rw", &rw).unwrap();
    let batch: Vec<String> = (0..1000).map(|i| format!("/app/d7/c{i}")).collect();
    let label = format!("{what} x1000");
    match what {
        "write4k" => run_for(secs, &label, || {
            for _ in 0..1000 {
                black_box(v.write_at(fd, &data, black_box(0)).unwrap());
            }
        }),
        "readfile" => run_for(secs, &label, || {
            for _ in 0..1000 {
                black_box(v.read_file(black_box("/app/d7/rw")).unwrap());
            }
        }),
        "stat" => run_for(secs, &label, || {
            for _ in 0..1000 {
                black_box(v.metadata(black_box("/app/d7/f42")).unwrap());
            }
        }),
        "open" => run_for(secs, &label, || {
            for _ in 0..1000 {
                let f = v.open(black_box("/app/d7/f42"), &reading).unwrap();
                v.close(f).unwrap();
            }
        }),
        "create" => run_for(secs, &format!("{label} (and as many unlinks)"), || {
            for p in &batch {
                let f = v.open(p, &creating).unwrap();
                v.close(f).unwrap();
            }
            for p in &batch {
                v.remove_file(p).unwrap();
            }
        }),
        "rename" => run_for(secs, &label, || {
            for _ in 0..500 {
                v.rename("/app/d7/f0", "/app/d8/m0").unwrap();
                v.rename("/app/d8/m0", "/app/d7/f0").unwrap();
            }
        }),
        _ => {
            eprintln!("op: write4k, stat, open, create or rename");
            std::process::exit(2);
        }
    }
}

/// The fastest of `reps` runs of `f`, in nanoseconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> u64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .min()
        .unwrap_or(0)
}

/// One row of `offsets`: the median and worst of `times` (one per 8-byte
/// offset), where the worst lies, and how many offsets took over three
/// times the median.
fn offsets_row(side: &str, what: &str, len: usize, times: &[u64]) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let (worst_at, worst) = times
        .iter()
        .enumerate()
        .max_by_key(|(_, t)| **t)
        .map(|(i, t)| (i * 8, *t))
        .unwrap_or((0, 0));
    let slow = times.iter().filter(|&&t| t > 3 * median).count();
    println!(
        "| {side} | {what} {} KiB | {median} | {worst} (offset {worst_at}) | {slow} |",
        len >> 10
    );
}

/// `read_at` and in-place `write_at` of 4 and 64 KiB at offset 0 of a
/// file, the caller's buffer at each 8-byte offset of a page in turn,
/// each the best of 20 runs: where the buffers lie changes the copies'
/// speed on some CPUs (see src/copy.rs).
fn offsets(snap: &cowvfs::Snapshot, naive: &Naive) {
    println!("| side | call | median ns | worst ns | offsets over 3x the median |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for len in [4096usize, 64 << 10] {
        let body = hotpath::pattern(len, 5);
        let mut wide = hotpath::pattern(len + 4096, 6);
        let mut v = hotpath::fork(snap);
        v.write_file("/app/d7/off", &body).unwrap();
        let fd = v
            .open("/app/d7/off", OpenOptions::new().read(true).write(true))
            .unwrap();
        let mut n = naive.clone();
        n.write_file("/app/d7/off", &body).unwrap();
        let nfd = n.open("/app/d7/off", false).unwrap();
        let mut time = |f: &mut dyn FnMut(&mut [u8])| -> Vec<u64> {
            (0..512)
                .map(|k| best_of(20, || f(&mut wide[k * 8..k * 8 + len])))
                .collect()
        };
        let t = time(&mut |b| {
            black_box(v.read_at(fd, b, 0).unwrap());
        });
        offsets_row("cowvfs", "read_at", len, &t);
        let t = time(&mut |b| {
            black_box(n.read_at(nfd, b, 0).unwrap());
        });
        offsets_row("naive", "read_at", len, &t);
        let t = time(&mut |b| {
            black_box(v.write_at(fd, b, 0).unwrap());
        });
        offsets_row("cowvfs", "write_at", len, &t);
        let t = time(&mut |b| {
            black_box(n.write_at(nfd, b, 0).unwrap());
        });
        offsets_row("naive", "write_at", len, &t);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("counts");
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let naive_side = args.iter().any(|a| a == "naive");
    let t = Instant::now();
    let (snap, naive) = hotpath::build();
    eprintln!("tree built in {:?}", t.elapsed());
    let names = hotpath::cycle_names();
    let data = hotpath::pattern(hotpath::SMALL_LEN, 1);
    let block = hotpath::pattern(hotpath::BLOCK, 2);
    let mut buf = vec![0u8; hotpath::BLOCK];
    match (mode, naive_side) {
        ("small", false) => {
            let mut v: Vfs = hotpath::fork(&snap);
            run_for(secs, "small-file cycles x5000, cowvfs", || {
                hotpath::small_cycles_cowvfs(&mut v, &names, &data)
            });
        }
        ("small", true) => {
            let mut n = naive.clone();
            if args.iter().any(|a| a == "split") {
                n = n.with_split_copies();
            }
            run_for(secs, "small-file cycles x5000, naive", || {
                hotpath::small_cycles_naive(&mut n, &names, &data)
            });
        }
        ("calls", side) => calls(&snap, &naive, side, secs),
        ("floor", _) if args.iter().any(|a| a == "split") => {
            run_for(secs, "small-file cycles x5000, copies alone, split", || {
                hotpath::small_cycles_floor_split(&names, &data)
            });
        }
        ("floor", _) => {
            run_for(secs, "small-file cycles x5000, copies alone", || {
                hotpath::small_cycles_floor(&names, &data)
            });
        }
        ("big", false) => {
            let mut v = hotpath::fork(&snap);
            run_for(secs, "big file, cowvfs", || {
                hotpath::big_file_cowvfs(&mut v, &block, &mut buf)
            });
        }
        ("big", true) => {
            let mut n = naive.clone();
            run_for(secs, "big file, naive", || {
                hotpath::big_file_naive(&mut n, &block, &mut buf)
            });
        }
        ("counts", _) => counts(&snap, &naive),
        ("offsets", _) => offsets(&snap, &naive),
        ("op", _) => {
            let what = args.get(1).map(String::as_str).unwrap_or("");
            let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
            one_op(&snap, what, secs);
        }
        _ => {
            eprintln!("usage: hotpath_profile small|big|floor|counts|offsets [SECS] [naive]");
            std::process::exit(2);
        }
    }
}
