//! Shared by the `wasi_*` tests: building C guests with the guest kit,
//! compiling them once, and running them through cowvfs or stock
//! wasmtime-wasi.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use cowvfs::wasi::{Guest, RunOutcome, Sandbox};
use cowvfs::{Limits, Vfs};
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

/// A built guest module.
pub fn wasm(name: &str) -> PathBuf {
    guests().expect("guests built").join(format!("{name}.wasm"))
}

/// The expected transcript of one of our own guests (`tests/guests`).
pub fn ours(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/guests/{name}.expected"))
}

/// The expected transcript of one of the kit's examples.
pub fn kit_expected(name: &str) -> PathBuf {
    kit_examples().join(format!("{name}.expected"))
}

/// The `cowvfs` binary, with its adaptation cache in the target dir:
/// isolated, and warm on reruns.
#[cfg(feature = "cli")]
pub fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cowvfs"));
    c.env(
        "XDG_CACHE_HOME",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg"),
    );
    c
}

/// A sandbox (through the adapter) with the whole tree preopened at `/`.
pub fn root_sandbox(vfs: Vfs) -> Sandbox {
    let mut sb = Sandbox::new(vfs);
    sb.preopen("/", "/").unwrap();
    sb
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

/// A kit example ran clean: exit 0, the expected transcript, and a
/// consistent tree with everything it made removed and everything it
/// opened closed.
pub fn assert_example_ran_clean(name: &str, out: &RunOutcome) {
    assert_eq!(
        out.status.as_ref().ok(),
        Some(&0),
        "{name}: {}",
        text(&out.stderr)
    );
    assert_transcript(&text(&out.stdout), &kit_expected(name));
    out.vfs.check_invariants().unwrap();
    assert_eq!(out.vfs.read_dir("/").unwrap(), vec![], "{name} left files");
    assert_eq!(out.vfs.usage().open_files, 0, "{name} left descriptors");
}

/// A tree with a `/srv/box` to preopen as `/sandbox`
/// (see [`assert_ran_at_sandbox_root`]).
pub fn boxed_vfs() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.create_dir_all("/srv/box").unwrap();
    vfs
}

/// A kit example ran with `/srv/box` preopened as `/sandbox` and
/// `/sandbox` as its argument: the usual transcript under that root.
pub fn assert_ran_at_sandbox_root(name: &str, out: &RunOutcome) {
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{name}");
    let want = std::fs::read_to_string(kit_expected(name))
        .unwrap()
        .replacen("root=/", "root=/sandbox", 1);
    assert_eq!(text(&out.stdout), want, "{name}");
}

/// The host around the hostile guest: a secret outside the sandbox, a
/// read-only mount holding one file, a writable mount, and the limits the
/// sandbox runs under. The same on either ABI, so both are held to the
/// same standard.
pub struct HostileHost {
    _outside: tempfile::TempDir,
    pub secret: PathBuf,
    pub ro: tempfile::TempDir,
    pub rw: tempfile::TempDir,
    pub limits: Limits,
}

impl HostileHost {
    pub fn new() -> HostileHost {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        let ro = tempfile::tempdir().unwrap();
        std::fs::write(ro.path().join("existing"), "host data").unwrap();
        let rw = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_inodes: 300,
            max_open_files: 32,
            ..Limits::default()
        };
        HostileHost {
            _outside: outside,
            secret,
            ro,
            rw,
            limits,
        }
    }

    /// The tree the guest starts from: within the limits, with a symlink
    /// pointing out of it.
    pub fn vfs(&self) -> Vfs {
        let mut vfs = Vfs::with_limits(self.limits.clone());
        vfs.symlink("/etc/passwd", "/abs_link").unwrap();
        vfs
    }

    /// The secret and the read-only mount untouched; the writable mount
    /// holds what the guest wrote there.
    pub fn assert_host_intact(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.secret).unwrap(),
            "host secret"
        );
        assert_eq!(
            std::fs::read_to_string(self.ro.path().join("existing")).unwrap(),
            "host data"
        );
        assert_eq!(
            std::fs::read_to_string(self.rw.path().join("made_by_guest")).unwrap(),
            "hello host\n"
        );
    }

    /// The tree the guest left: consistent, within its limits, nothing
    /// left open.
    pub fn assert_sandbox_intact(&self, vfs: &Vfs) {
        vfs.check_invariants().unwrap();
        let u = vfs.usage();
        assert!(u.held_bytes <= self.limits.max_bytes && u.inodes <= self.limits.max_inodes);
        assert_eq!(u.open_files, 0);
    }
}
