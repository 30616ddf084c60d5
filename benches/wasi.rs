//! Guest file I/O and per-request overhead: cowvfs's wasi:filesystem next
//! to stock wasmtime-wasi 48 on a tmpfs directory, same engine, same
//! adapted guest.
//!
//! Guests are built by tests/guests/build.sh into the target directory on
//! first use (tests/wasi_support, shared with the guest tests).

#[path = "../tests/wasi_support/mod.rs"]
mod wasi_support;

use std::path::Path;
use std::time::Duration;

use cowvfs::Vfs;
use cowvfs::wasi::{Guest, Sandbox};
use criterion::{Criterion, criterion_group, criterion_main};
use wasi_support::Stock;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtx};

fn stock_pre(engine: &Engine, c: &Component) -> CommandPre<Stock> {
    let mut linker = Linker::<Stock>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    CommandPre::new(linker.instantiate_pre(c).unwrap()).unwrap()
}

/// One stock run with `dir` preopened at `/`.
fn run_stock(pre: &CommandPre<Stock>, dir: &Path, args: &[&str], blocking: bool) {
    let mut b = WasiCtx::builder();
    b.args(args).allow_blocking_current_thread(blocking);
    b.preopened_dir(dir, "/", FsPerms::ReadWrite).unwrap();
    let mut store = Store::new(pre.engine(), Stock::new(b.build()));
    let cmd = pre.instantiate(&mut store).unwrap();
    let r = cmd.wasi_cli_run().call_run(&mut store).unwrap();
    assert!(r.is_ok());
}

fn run_cowvfs(guest: &Guest, vfs: Vfs, args: &[&str]) -> Vfs {
    let mut sb = Sandbox::new(vfs);
    sb.preopen("/", "/").unwrap();
    for a in args {
        sb.arg(a);
    }
    let out = sb.run(guest);
    assert_eq!(out.status.ok(), Some(0));
    out.vfs
}

fn shm_dir() -> tempfile::TempDir {
    let base = Path::new("/dev/shm");
    if base.is_dir() {
        tempfile::tempdir_in(base).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn guest_io(c: &mut Criterion) {
    let engine = wasi_support::engine();
    let comp = wasi_support::component("bench_io");
    let guest = Guest::new(engine, &comp, "bench_io.wasm").unwrap();
    let pre = stock_pre(engine, &comp);

    let mut g = c.benchmark_group("guest_io_64MiB_x4_and_5000_files");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("cowvfs_memory", |b| {
        b.iter(|| run_cowvfs(&guest, Vfs::new(), &[]))
    });
    let shm = shm_dir();
    g.bench_function("wasmtime_wasi_dev_shm", |b| {
        b.iter(|| run_stock(&pre, shm.path(), &["bench_io.wasm"], false))
    });
    g.bench_function("wasmtime_wasi_dev_shm_blocking_current_thread", |b| {
        b.iter(|| run_stock(&pre, shm.path(), &["bench_io.wasm"], true))
    });
    g.finish();
}

fn per_request(c: &mut Criterion) {
    let engine = wasi_support::engine();
    let comp = wasi_support::component("tool");
    let guest = Guest::new(engine, &comp, "tool.wasm").unwrap();
    let pre = stock_pre(engine, &comp);
    // A base image worth forking: 1,000 files in 10 directories.
    let mut base = Vfs::new();
    for d in 0..10 {
        for f in 0..100 {
            base.create_dir_all(&format!("/app/d{d}")).unwrap();
            base.write_file(&format!("/app/d{d}/f{f}"), b"base content")
                .unwrap();
        }
    }
    let snap = base.snapshot();

    let mut g = c.benchmark_group("per_request_fork_instantiate_run_drop");
    g.sample_size(50);
    g.bench_function("cowvfs_fork_snapshot", |b| {
        b.iter(|| drop(run_cowvfs(&guest, snap.fork(), &["noop"])))
    });
    let empty = shm_dir();
    g.bench_function("wasmtime_wasi_empty_preopen", |b| {
        b.iter(|| run_stock(&pre, empty.path(), &["tool.wasm", "noop"], false))
    });
    g.finish();
}

criterion_group!(benches, guest_io, per_request);
criterion_main!(benches);
