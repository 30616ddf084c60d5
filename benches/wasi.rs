//! Guest file I/O and per-request overhead: cowvfs's wasi:filesystem next
//! to stock wasmtime-wasi 48 on a tmpfs directory, same engine, same
//! adapted guest.
//!
//! Needs the guest kit (../shared/guests or $COWVFS_GUEST_KIT); guests are
//! built into the target directory on first use.

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

fn guests() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // As in tests/wasi_support: the env var, else next to the repository
    // root (or, from a git worktree, next to the main checkout).
    let mut kit = std::env::var_os("COWVFS_GUEST_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/guests"));
    if let Ok(git) = std::fs::read_to_string(root.join(".git"))
        && let Some(dir) = git.trim().strip_prefix("gitdir:")
        && let Some(main) = Path::new(dir.trim()).ancestors().nth(3)
        && !kit.join("build.sh").is_file()
    {
        kit = main.join("../shared/guests");
    }
    if !kit.join("build.sh").is_file() {
        eprintln!("benches/wasi: guest kit not found; skipping");
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = target.join("tmp/wasi-bench-guests");
    let ok = Command::new("bash")
        .arg(kit.join("build.sh"))
        .arg(&out)
        .arg(root.join("tests/guests/bench_io.c"))
        .arg(root.join("tests/guests/tool.c"))
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(out)
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
    let Some(dir) = guests() else { return };
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
    let Some(dir) = guests() else { return };
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
