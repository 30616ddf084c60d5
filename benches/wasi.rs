//! Guest file I/O and per-request overhead: cowvfs's wasi:filesystem next
//! to stock wasmtime-wasi 48 on a tmpfs directory, same engine, same
//! adapted guest.
//!
//! Guests are built by tests/guests/build.sh into the target directory on
//! first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cowvfs::Vfs;
use cowvfs::wasi::{Guest, Sandbox};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Builds the guests with the repository's own tests/guests/build.sh (which
/// installs its toolchain where missing) into the target directory; a
/// failed build stops the benchmark with the script's message.
fn guests() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    // One directory per checkout: worktrees share the target directory.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    let out = target.join(format!("tmp/wasi-bench-guests-{:016x}", h.finish()));
    let script = root.join("tests/guests/build.sh");
    let res = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        res.status.success(),
        "building the C guests failed ({}):\n{}{}",
        res.status,
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

fn component(engine: &Engine, dir: &Path, name: &str) -> Component {
    let module = std::fs::read(dir.join(format!("{name}.wasm"))).unwrap();
    let bytes = cowvfs::wasi::adapt_module_cached(&module, Some(dir)).unwrap();
    Component::new(engine, &bytes).unwrap()
}

struct Stock {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Stock {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

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
    let mut store = Store::new(
        pre.engine(),
        Stock {
            wasi: b.build(),
            table: ResourceTable::new(),
        },
    );
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
    let dir = guests();
    let engine = Engine::default();
    let comp = component(&engine, &dir, "bench_io");
    let guest = Guest::new(&engine, &comp, "bench_io.wasm").unwrap();
    let pre = stock_pre(&engine, &comp);

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
    let dir = guests();
    let engine = Engine::default();
    let comp = component(&engine, &dir, "tool");
    let guest = Guest::new(&engine, &comp, "tool.wasm").unwrap();
    let pre = stock_pre(&engine, &comp);
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
