//! Shared by the `wasi_*` tests: building C guests with the guest kit,
//! compiling them once, and running them through cowvfs or stock
//! wasmtime-wasi.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use cowvfs::wasi::{Guest, RunOutcome, Sandbox};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

pub const EXAMPLES: [&str; 4] = ["fs_basic", "fs_edge", "alloc_heavy", "sqlite_rows"];

/// The guest kit: `$COWVFS_GUEST_KIT`, else `../shared/guests` next to the
/// repository root. A git worktree (`.git` is a file naming the main
/// repository's git dir) also looks next to the main checkout.
fn kit() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("COWVFS_GUEST_KIT") {
        let d = PathBuf::from(d);
        return d.join("build.sh").is_file().then_some(d);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![root.to_path_buf()];
    if let Ok(git) = std::fs::read_to_string(root.join(".git"))
        && let Some(dir) = git.trim().strip_prefix("gitdir:")
    {
        // <main>/.git/worktrees/<name> -> <main>
        if let Some(main) = Path::new(dir.trim()).ancestors().nth(3) {
            roots.push(main.to_path_buf());
        }
    }
    roots
        .into_iter()
        .map(|r| r.join("../shared/guests"))
        .find(|d| d.join("build.sh").is_file())
}

/// Where built guests live: in the target dir, so reruns rebuild nothing.
fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasi-guests")
}

/// Builds the kit's examples and our own guests once per test binary.
/// `None` (with a loud message) when the kit is missing outside CI.
pub fn guests() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let Some(kit) = kit() else {
                let msg =
                    "guest kit not found (set COWVFS_GUEST_KIT or put it at ../shared/guests)";
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{msg}");
                }
                eprintln!("\n\n!!!!! SKIPPING WASI GUEST TESTS: {msg} !!!!!\n\n");
                return None;
            };
            let out = out_dir();
            let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
            let status = Command::new("bash")
                .arg(kit.join("build.sh"))
                .arg(&out)
                .arg(kit.join("examples"))
                .arg(&ours)
                .status()
                .expect("run build.sh");
            assert!(status.success(), "build.sh failed: {status}");
            Some(out)
        })
        .as_deref()
}

/// The kit's examples directory (for `.expected` files).
pub fn kit_examples() -> PathBuf {
    kit().expect("kit").join("examples")
}

pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

fn adapter_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasi-adapted")
}

/// The adapted component of a guest, compiled once per test binary.
pub fn component(name: &str) -> Component {
    static CACHE: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(name) {
        return c.clone();
    }
    let dir = guests().expect("guests built");
    let module = std::fs::read(dir.join(format!("{name}.wasm"))).unwrap();
    let bytes = cowvfs::wasi::adapt_module_cached(&module, Some(&adapter_cache())).unwrap();
    let c = Component::new(engine(), &bytes).unwrap();
    cache.lock().unwrap().insert(name.to_string(), c.clone());
    c
}

pub fn guest(name: &str) -> Guest {
    Guest::new(engine(), &component(name), &format!("{name}.wasm")).unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a guest with the whole tree preopened at `/` and output captured.
pub fn run(name: &str, sb: Sandbox) -> RunOutcome {
    run_guest(&guest(name), sb)
}

pub fn run_guest(g: &Guest, mut sb: Sandbox) -> RunOutcome {
    sb.capture_output();
    sb.run(g)
}

/// Compares a transcript with an expected file, showing the first
/// difference.
/// `COWVFS_BLESS=1` rewrites the file instead (review the diff!).
pub fn assert_transcript(got: &str, expected_file: &Path) {
    if std::env::var_os("COWVFS_BLESS").is_some() {
        std::fs::write(expected_file, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(expected_file).unwrap();
    if got != want {
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(
                g,
                w,
                "line {} of {} differs",
                i + 1,
                expected_file.display()
            );
        }
        assert_eq!(
            got.lines().count(),
            want.lines().count(),
            "{}",
            expected_file.display()
        );
        assert_eq!(got, want);
    }
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

/// Runs a guest on stock wasmtime-wasi with `dir` preopened at `/`.
pub fn run_stock(name: &str, dir: &Path, args: &[&str]) -> (i32, String) {
    let mut linker = Linker::<Stock>::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    let out = MemoryOutputPipe::new(1 << 26);
    let mut b = WasiCtx::builder();
    let mut argv = vec![format!("{name}.wasm")];
    argv.extend(args.iter().map(|s| s.to_string()));
    b.args(&argv).stdout(out.clone());
    b.preopened_dir(dir, "/", FsPerms::ReadWrite).unwrap();
    let mut store = Store::new(
        engine(),
        Stock {
            wasi: b.build(),
            table: ResourceTable::new(),
        },
    );
    let cmd = wasmtime_wasi::p2::bindings::sync::Command::instantiate(
        &mut store,
        &component(name),
        &linker,
    )
    .unwrap();
    let code = match cmd.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => e.downcast_ref::<wasmtime_wasi::I32Exit>().expect("trap").0,
    };
    (code, text(&out.contents()))
}
