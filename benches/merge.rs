//! Merge benchmark: two forks of a 100,000-file, 1 GiB base (1,000
//! directories of 100 files, each 10,738 bytes of logical size: a few
//! stored bytes and a hole, so the base is cheap to build) that each
//! changed 1,000 paths (500 edits, 250 new files, 250 deletions, in
//! different files), merged by `Snapshot::merge` beside a naive merge
//! that walks all three trees path by path, in the same run.
//!
//! `cargo bench --bench merge`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use cowvfs::{FileType, Limits, MergeOptions, OpenOptions, Snapshot, Timestamp, Vfs};
use criterion::{Criterion, criterion_group, criterion_main};

const DIRS: usize = 1000;
const PER_DIR: usize = 100;
const FILE_LEN: u64 = 10_738; // 100,000 files of this size: 1 GiB

fn path(d: usize, f: usize) -> String {
    format!("/d{d:04}/f{f:03}")
}

fn base() -> Snapshot {
    let mut v = Vfs::with_limits(Limits::unlimited());
    for d in 0..DIRS {
        v.create_dir(&format!("/d{d:04}")).unwrap();
        for f in 0..PER_DIR {
            let p = path(d, f);
            v.write_file(&p, format!("{d}/{f}").as_bytes()).unwrap();
            v.truncate(&p, FILE_LEN).unwrap();
        }
    }
    let s = v.snapshot();
    let u = s.usage();
    assert_eq!(u.inodes as usize, 1 + DIRS + DIRS * PER_DIR);
    assert!(u.logical_bytes >= 1 << 30);
    s
}

/// A fork that changed 1,000 paths: side 0 works on even files, side 1
/// on odd ones.
fn side(base: &Snapshot, which: usize) -> Snapshot {
    let mut v = base.fork();
    for i in 0..1000 {
        let d = (i * 7) % DIRS;
        let f = ((i / DIRS) * 10 + (i % 5) * 2 + which) % PER_DIR;
        let p = path(d, f);
        match i % 4 {
            0 | 1 => {
                let fd = v.open(&p, OpenOptions::new().write(true)).unwrap();
                v.write_at(fd, b"changed", 100).unwrap();
                v.close(fd).unwrap();
            }
            2 => v.write_file(&format!("{p}.new{which}"), b"new").unwrap(),
            _ => v.remove_file(&p).unwrap(),
        }
    }
    v.snapshot()
}

/// What a path holds, as a path walk sees it.
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    ino: u64,
    kind: FileType,
    len: u64,
    mtime: Timestamp,
    mode: u32,
}

fn walk(s: &Snapshot) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        for e in s.read_dir(&dir).unwrap() {
            let p = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            let m = s.symlink_metadata(&p).unwrap();
            if m.is_dir() {
                work.push(p.clone());
            }
            out.insert(
                p,
                Seen {
                    ino: e.ino,
                    kind: m.kind,
                    len: m.len,
                    mtime: m.mtime,
                    mode: m.mode,
                },
            );
        }
    }
    out
}

/// The naive merge: walk base, ours and theirs path by path, then bring
/// what only theirs changed into a fork of ours (files only, as here).
fn naive(base: &Snapshot, ours: &Snapshot, theirs: &Snapshot) -> Snapshot {
    let (b, o, t) = (walk(base), walk(ours), walk(theirs));
    let mut v = ours.fork();
    let mut paths: Vec<&String> = b.keys().chain(t.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let (xb, xo, xt) = (b.get(p), o.get(p), t.get(p));
        if xt == xb || xo != xb {
            continue; // theirs left it, or ours changed it too
        }
        match xt {
            Some(s) if s.kind == FileType::File => {
                v.write_file(p, &theirs.read_file(p).unwrap()).unwrap()
            }
            Some(_) => {}
            None => v.remove_file(p).unwrap(),
        }
    }
    v.snapshot()
}

fn bench(c: &mut Criterion) {
    let base = base();
    let (ours, theirs) = (side(&base, 0), side(&base, 1));
    let opts = MergeOptions::new();
    let merged = Snapshot::merge(&base, &ours, &theirs, &opts)
        .unwrap()
        .into_snapshot()
        .unwrap();
    merged.check_invariants().unwrap();
    assert_eq!(
        merged.root_hash(),
        naive(&base, &ours, &theirs).root_hash(),
        "both merges agree"
    );
    let mut g = c.benchmark_group("merge_100k_files_1gib_1000_changes_each");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("snapshot_merge", |b| {
        b.iter(|| black_box(Snapshot::merge(&base, &ours, &theirs, &opts).unwrap()))
    });
    g.bench_function("naive_walk_merge", |b| {
        b.iter(|| black_box(naive(&base, &ours, &theirs)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
