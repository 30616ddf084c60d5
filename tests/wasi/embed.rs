//! An embedder's view: wasmtime-wasi for everything, cowvfs replacing the
//! filesystem, for a synchronous and an asynchronous store. The embedder
//! also gives wasmtime-wasi a real host directory at `/`; the guest must
//! see the in-memory tree instead.

use crate::wasi_support::*;
use cowvfs::Vfs;
use cowvfs::wasi::{WasiVfsCtx, WasiVfsCtxView, WasiVfsView};
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    fs: WasiVfsCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiVfsView for Host {
    fn vfs(&mut self) -> WasiVfsCtxView<'_> {
        WasiVfsCtxView {
            ctx: &mut self.fs,
            table: &mut self.table,
        }
    }
}

/// A host directory with a file only the host has, and a tree with a file
/// only the VFS has; the guest lists `/`, reads both, and writes one.
fn setup(args: &[&str]) -> (tempfile::TempDir, Host, MemoryOutputPipe) {
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("host_only.txt"), "from the host").unwrap();
    let mut vfs = Vfs::new();
    vfs.write_file("/vfs_only.txt", b"from the vfs").unwrap();
    let mut fs = WasiVfsCtx::new(vfs);
    fs.preopen("/", "/").unwrap();

    let out = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtx::builder();
    let mut argv = vec!["tool.wasm"];
    argv.extend(args);
    b.args(&argv).stdout(out.clone());
    // What a stock setup would expose; cowvfs must shadow it.
    b.preopened_dir(host_dir.path(), "/", FsPerms::ReadWrite)
        .unwrap();
    let host = Host {
        wasi: b.build(),
        table: ResourceTable::new(),
        fs,
    };
    (host_dir, host, out)
}

fn exit_code(r: wasmtime::Result<Result<(), ()>>) -> i32 {
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => e.downcast_ref::<I32Exit>().expect("no trap").0,
    }
}

/// Runs the tool guest synchronously on stock wasmtime-wasi, with or
/// without cowvfs's filesystem linked over it; the exit code and the host
/// data afterwards.
fn call_sync(host: Host, with_cowvfs: bool) -> (i32, Host) {
    let mut linker = Linker::<Host>::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    if with_cowvfs {
        cowvfs::wasi::add_to_linker_sync(&mut linker).unwrap();
    }
    let mut store = Store::new(engine(), host);
    let cmd = wasmtime_wasi::p2::bindings::sync::Command::instantiate(
        &mut store,
        &component("tool"),
        &linker,
    )
    .unwrap();
    let code = exit_code(cmd.wasi_cli_run().call_run(&mut store));
    (code, store.into_data())
}

fn run_sync(args: &[&str]) -> (i32, String, Vfs, tempfile::TempDir) {
    let (dir, host, out) = setup(args);
    let (code, host) = call_sync(host, true);
    (code, text(&out.contents()), host.fs.into_vfs(), dir)
}

fn run_async(args: &[&str]) -> (i32, String, Vfs, tempfile::TempDir) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (dir, host, out) = setup(args);
        let mut linker = Linker::<Host>::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        cowvfs::wasi::add_to_linker_async(&mut linker).unwrap();
        let mut store = Store::new(engine(), host);
        let cmd = wasmtime_wasi::p2::bindings::Command::instantiate_async(
            &mut store,
            &component("tool"),
            &linker,
        )
        .await
        .unwrap();
        let code = exit_code(cmd.wasi_cli_run().call_run(&mut store).await);
        let vfs = store.into_data().fs.into_vfs();
        (code, text(&out.contents()), vfs, dir)
    })
}

fn reaches_cowvfs(run: fn(&[&str]) -> (i32, String, Vfs, tempfile::TempDir)) {
    let (code, out, _, _) = run(&["ls", "/"]);
    assert_eq!((code, out.as_str()), (0, "vfs_only.txt\n"));
    let (code, out, _, _) = run(&["cat", "/vfs_only.txt"]);
    assert_eq!((code, out.as_str()), (0, "from the vfs"));
    let (code, out, _, _) = run(&["cat", "/host_only.txt"]);
    assert_eq!((code, out.as_str()), (1, "ENOENT\n"));
    // Writes land in the tree the embedder gets back, not on the host.
    let (code, _, vfs, dir) = run(&["write", "/new.txt", "guest wrote this"]);
    assert_eq!(code, 0);
    assert_eq!(vfs.read_file("/new.txt").unwrap(), b"guest wrote this");
    assert_eq!(
        vfs.usage().open_files,
        0,
        "descriptors closed on the way back"
    );
    assert!(!dir.path().join("new.txt").exists());
    vfs.check_invariants().unwrap();
}

#[test]
fn sync_embedder_reaches_cowvfs() {
    reaches_cowvfs(run_sync);
}

#[test]
fn async_embedder_reaches_cowvfs() {
    reaches_cowvfs(run_async);
}

/// Without cowvfs's linker functions the same setup shows the host file:
/// the test above is not passing by accident.
#[test]
fn without_cowvfs_the_host_shows() {
    let (_dir, host, out) = setup(&["ls", "/"]);
    assert_eq!(call_sync(host, false).0, 0);
    assert_eq!(text(&out.contents()), "host_only.txt\n");
}
