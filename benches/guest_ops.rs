//! The guest workload per operation: each phase of tests/guests/bench_ops.c
//! (64 KiB writes and reads, small-file creates, stats, a directory
//! listing, unlinks, and all of them in a row) measured three ways in one
//! run, so their difference is what the ABI and wasmtime add to the
//! engine:
//!
//! - `engine`: the same operations on the [`Vfs`] API in Rust, as the
//!   guest's libc calls map to them (open/write_at/close, metadata,
//!   read_dir, remove_file);
//! - `native_p1`: the guest's core module on cowvfs's own preview1;
//! - `component`: the guest adapted to a component on cowvfs's
//!   `wasi:filesystem`.
//!
//! Each iteration is one whole guest run (instantiate, run, exit) on a
//! tree the host prepared untimed with what the phase needs (the file to
//! read, the files to stat); the tree is dropped untimed too. The `noop`
//! group runs the guest with a count of 0: the cost of a run that does no
//! operation, which a phase's time includes once. Throughput is the
//! phase's count, so criterion's rate is operations per second with that
//! fixed cost spread over them; per-operation times without it are
//! (phase - noop) / count.

#[path = "../tests/wasi_support/mod.rs"]
mod wasi_support;

use std::time::Duration;

use cowvfs::wasi::{Guest, Sandbox, p1};
use cowvfs::{OpenOptions, Vfs};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 64 * 1024;
const SMALL: usize = 100;

/// The phases and their counts: enough operations that the run's fixed
/// cost is a small part of the phase.
const PHASES: [(&str, u64); 7] = [
    ("write64k", 512),
    ("read64k", 512),
    ("create", 2000),
    ("stat", 2000),
    ("readdir", 2000),
    ("unlink", 2000),
    ("all", 500),
];

fn block() -> Vec<u8> {
    (0..BLOCK).map(|i| (i * 7) as u8).collect()
}

fn small(i: u64) -> String {
    format!("/many/f{i:05}")
}

/// The tree a phase starts from (what bench_ops.c's `setup-PHASE` makes).
fn setup(phase: &str, n: u64) -> Vfs {
    let mut v = Vfs::new();
    match phase {
        "read64k" => v.write_file("/big", &block().repeat(n as usize)).unwrap(),
        "create" => v.create_dir("/many").unwrap(),
        "stat" | "readdir" | "unlink" => {
            v.create_dir("/many").unwrap();
            let data = &block()[..SMALL];
            for i in 0..n {
                v.write_file(&small(i), data).unwrap();
            }
        }
        _ => {}
    }
    v
}

fn write64k(v: &mut Vfs, n: u64, data: &[u8]) {
    let opts = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .clone();
    let fd = v.open("/big", &opts).unwrap();
    for i in 0..n {
        assert_eq!(v.write_at(fd, data, i * BLOCK as u64).unwrap(), BLOCK);
    }
    v.close(fd).unwrap();
}

fn read64k(v: &mut Vfs, n: u64, buf: &mut [u8]) {
    let fd = v.open("/big", OpenOptions::new().read(true)).unwrap();
    for i in 0..n {
        assert_eq!(v.read_at(fd, buf, i * BLOCK as u64).unwrap(), BLOCK);
    }
    v.close(fd).unwrap();
}

fn create(v: &mut Vfs, n: u64, data: &[u8]) {
    let opts = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .clone();
    for i in 0..n {
        let fd = v.open(&small(i), &opts).unwrap();
        assert_eq!(v.write_at(fd, &data[..SMALL], 0).unwrap(), SMALL);
        v.close(fd).unwrap();
    }
}

fn stat(v: &Vfs, n: u64) {
    for i in 0..n {
        assert_eq!(v.metadata(&small(i)).unwrap().len, SMALL as u64);
    }
}

fn readdir(v: &Vfs, n: u64) {
    assert_eq!(v.read_dir("/many").unwrap().len() as u64, n);
}

fn unlink(v: &mut Vfs, n: u64) {
    for i in 0..n {
        v.remove_file(&small(i)).unwrap();
    }
}

/// The phase on the Vfs API.
fn engine(phase: &str, v: &mut Vfs, n: u64, buf: &mut [u8]) {
    match phase {
        "write64k" => write64k(v, n, buf),
        "read64k" => read64k(v, n, buf),
        "create" => create(v, n, buf),
        "stat" => stat(v, n),
        "readdir" => readdir(v, n),
        "unlink" => unlink(v, n),
        "all" => {
            write64k(v, n, buf);
            read64k(v, n, buf);
            v.remove_file("/big").unwrap();
            v.create_dir("/many").unwrap();
            create(v, n, buf);
            stat(v, n);
            readdir(v, n);
            unlink(v, n);
            v.remove_dir("/many").unwrap();
        }
        _ => unreachable!("{phase}"),
    }
}

fn run_p1(guest: &p1::Guest, vfs: Vfs, phase: &str, n: u64) -> Vfs {
    let mut sb = p1::Sandbox::new(vfs);
    sb.preopen("/", "/").unwrap();
    sb.arg("/").arg(phase).arg(&n.to_string()).capture_output();
    let out = sb.run(guest);
    assert_eq!(
        out.status.unwrap(),
        0,
        "{}",
        wasi_support::text(&out.stdout)
    );
    out.vfs
}

fn run_component(guest: &Guest, vfs: Vfs, phase: &str, n: u64) -> Vfs {
    let mut sb = Sandbox::new(vfs);
    sb.preopen("/", "/").unwrap();
    sb.arg("/").arg(phase).arg(&n.to_string()).capture_output();
    let out = sb.run(guest);
    assert_eq!(
        out.status.unwrap(),
        0,
        "{}",
        wasi_support::text(&out.stdout)
    );
    out.vfs
}

fn guest_ops(c: &mut Criterion) {
    let engine_ = wasi_support::engine();
    let native = p1::Guest::load(engine_, &wasi_support::wasm("bench_ops")).unwrap();
    let adapted = wasi_support::guest("bench_ops");

    let mut g = c.benchmark_group("guest_ops/noop");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("native_p1", |b| {
        b.iter_batched(
            Vfs::new,
            |v| run_p1(&native, v, "all", 0),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("component", |b| {
        b.iter_batched(
            Vfs::new,
            |v| run_component(&adapted, v, "all", 0),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut buf = block();
    for (phase, n) in PHASES {
        let mut g = c.benchmark_group(format!("guest_ops/{phase}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(n));
        g.bench_function("engine", |b| {
            b.iter_batched(
                || setup(phase, n),
                |mut v| {
                    engine(phase, &mut v, n, &mut buf);
                    v
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("native_p1", |b| {
            b.iter_batched(
                || setup(phase, n),
                |v| run_p1(&native, v, phase, n),
                BatchSize::PerIteration,
            )
        });
        g.bench_function("component", |b| {
            b.iter_batched(
                || setup(phase, n),
                |v| run_component(&adapted, v, phase, n),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, guest_ops);
criterion_main!(benches);
