//! Shared by the `wasi_*` tests: building our C guests (tests/guests),
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

/// Our workload guests: plain file work, heavy allocation with file round
/// trips, SQLite. Each runs clean on an empty tree, leaves nothing behind,
/// and accepts a working root as its argument.
pub const EXAMPLES: [&str; 3] = ["fs_work", "heap_churn", "sql_rows"];

#[path = "../checkout/mod.rs"]
mod checkout;
pub use checkout::repo;

/// Where built guests live: in the target dir, so reruns rebuild nothing;
/// one directory per checkout, since worktrees share the target dir.
fn out_dir() -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    repo().hash(&mut h);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wasi-guests-{:016x}", h.finish()))
}

/// Builds every guest of `tests/guests` (with `tests/guests/build.sh`,
/// which installs its toolchain where missing) once per test binary, and
/// returns their directory. A failed build panics with the script's
/// message: the guest tests never pass without running.
pub fn guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let out = out_dir();
        let script = repo().join("tests/guests/build.sh");
        let res = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            res.status.success(),
            "building the C guests failed ({}):\n{}{}",
            res.status,
            text(&res.stdout),
            text(&res.stderr)
        );
        out
    });
    dir.as_path()
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
    let dir = guests();
    let module = std::fs::read(dir.join(format!("{name}.wasm"))).unwrap();
    let bytes = cowvfs::wasi::adapt_module_cached(&module, Some(&adapter_cache())).unwrap();
    let c = Component::new(engine(), &bytes).unwrap();
    cache.lock().unwrap().insert(name.to_string(), c.clone());
    c
}

/// A built guest module.
pub fn wasm(name: &str) -> PathBuf {
    guests().join(format!("{name}.wasm"))
}

/// The expected transcript of one of our own guests (`tests/guests`).
pub fn ours(name: &str) -> PathBuf {
    repo().join(format!("tests/guests/{name}.expected"))
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
/// `COWVFS_BLESS=1` rewrites the file instead (review the diff!); never
/// under CI, where a blessed file would make the test pass by definition.
pub fn assert_transcript(got: &str, expected_file: &Path) {
    if std::env::var_os("COWVFS_BLESS").is_some() {
        assert!(
            std::env::var_os("CI").is_none(),
            "COWVFS_BLESS is set together with CI: blessing rewrites {} \
             instead of checking it; unset COWVFS_BLESS",
            expected_file.display()
        );
        std::fs::write(expected_file, got).unwrap();
        eprintln!("COWVFS_BLESS: rewrote {}", expected_file.display());
        return;
    }
    let want = std::fs::read_to_string(expected_file)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
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

/// A store's data for stock wasmtime-wasi: its context and resource table.
pub struct Stock {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl Stock {
    pub fn new(wasi: WasiCtx) -> Stock {
        Stock {
            wasi,
            table: ResourceTable::new(),
        }
    }
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
    run_stock_with(name, dir, &[], args, &[])
}

/// The stock context both stock runners use: argv, stdout captured in
/// `out`, `env`, `dir` read-write at `/` and each `(host, guest,
/// read_only)` of `mounts`.
fn stock_ctx(
    name: &str,
    dir: &Path,
    mounts: &[(&Path, &str, bool)],
    args: &[&str],
    env: &[(&str, &str)],
    out: &MemoryOutputPipe,
) -> wasmtime_wasi::WasiCtxBuilder {
    let mut b = WasiCtx::builder();
    let mut argv = vec![format!("{name}.wasm")];
    argv.extend(args.iter().map(|s| s.to_string()));
    b.args(&argv).stdout(out.clone()).envs(env);
    b.preopened_dir(dir, "/", FsPerms::ReadWrite).unwrap();
    for (host, guest, ro) in mounts {
        let perms = if *ro {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(host, guest, perms).unwrap();
    }
    b
}

/// Runs a guest (through the same adapter) on stock wasmtime-wasi 48 with
/// `dir` preopened read-write at `/`, each `(host, guest, read_only)` of
/// `mounts` preopened as well, and `env`. Returns the exit status and
/// stdout.
pub fn run_stock_with(
    name: &str,
    dir: &Path,
    mounts: &[(&Path, &str, bool)],
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String) {
    let out = MemoryOutputPipe::new(1 << 26);
    let mut b = stock_ctx(name, dir, mounts, args, env, &out);
    (run_stock_ctx(name, b.build()), text(&out.contents()))
}

/// Runs a guest (through the same adapter) on stock wasmtime-wasi 48's
/// preview2 with the context `wasi` the caller built; its exit status.
pub fn run_stock_ctx(name: &str, wasi: wasmtime_wasi::WasiCtx) -> i32 {
    let mut linker = Linker::<Stock>::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    let mut store = Store::new(engine(), Stock::new(wasi));
    let cmd = wasmtime_wasi::p2::bindings::sync::Command::instantiate(
        &mut store,
        &component(name),
        &linker,
    )
    .unwrap();
    match cmd.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => exit.0,
            None => panic!("{name} trapped on stock wasmtime-wasi: {e:?}"),
        },
    }
}

/// Runs a guest's core module on stock wasmtime-wasi 48's own preview1
/// (no adapter), with the same preopens as [`run_stock_with`].
pub fn run_stock_p1(
    name: &str,
    dir: &Path,
    mounts: &[(&Path, &str, bool)],
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String) {
    let out = MemoryOutputPipe::new(1 << 26);
    let mut b = stock_ctx(name, dir, mounts, args, env, &out);
    (run_stock_p1_ctx(name, b.build_p1()), text(&out.contents()))
}

/// Runs a guest's core module on stock wasmtime-wasi 48's own preview1
/// with the context `ctx` the caller built; its exit status.
pub fn run_stock_p1_ctx(name: &str, ctx: wasmtime_wasi::p1::WasiP1Ctx) -> i32 {
    let mut linker = wasmtime::Linker::<wasmtime_wasi::p1::WasiP1Ctx>::new(engine());
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t| t).unwrap();
    let mut store = Store::new(engine(), ctx);
    let module = wasmtime::Module::from_file(engine(), wasm(name)).unwrap();
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    match start.call(&mut store, ()) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => exit.0,
            None => panic!("{name} trapped on stock wasmtime-wasi preview1: {e:?}"),
        },
    }
}

/// One row of the README's table of differences: on the line
/// `line` of guest `guest` run on `abi`, cowvfs prints `cowvfs` where stock
/// wasmtime-wasi prints `stock` (`(any)`: whatever the host gives).
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub guest: String,
    /// `component` (through the adapter, against stock wasi:filesystem),
    /// `preview1` (natively, against stock preview1) or `both`.
    pub abi: String,
    pub line: String,
    pub cowvfs: String,
    pub stock: String,
}

pub fn differences_file() -> PathBuf {
    repo().join("README.md")
}

/// The heading of the README section that holds the table.
const DIFFERENCES_HEADING: &str = "## Differences from stock wasmtime-wasi";

/// The deliberate differences from stock wasmtime-wasi, read from the one
/// table in the README's section [`DIFFERENCES_HEADING`] (columns: guest, ABI, line,
/// cowvfs, stock, why; code spans keep their spaces).
pub fn differences() -> Vec<Difference> {
    let file = differences_file();
    let md = std::fs::read_to_string(&file).unwrap();
    let cell = |c: &str| {
        let c = c.trim();
        c.strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .unwrap_or(c)
            .to_string()
    };
    let rows: Vec<Difference> = md
        .lines()
        .skip_while(|l| *l != DIFFERENCES_HEADING)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|l| {
            // `\|` is a pipe inside a cell.
            let row = l.trim().replace("\\|", "\u{1}");
            let cells: Vec<String> = row
                .trim_matches('|')
                .split('|')
                .map(|c| c.replace('\u{1}', "|"))
                .collect();
            assert_eq!(cells.len(), 6, "{}: bad row {l:?}", file.display());
            let d = Difference {
                guest: cell(&cells[0]),
                abi: cell(&cells[1]),
                line: cell(&cells[2]),
                cowvfs: cell(&cells[3]),
                stock: cell(&cells[4]),
            };
            assert!(
                ["component", "preview1", "both"].contains(&d.abi.as_str()),
                "{}: bad ABI in {l:?}",
                file.display()
            );
            d
        })
        .collect();
    assert!(!rows.is_empty(), "{}: no table", file.display());
    rows
}

/// Splits a transcript line `what -> result` (padded) into its two parts.
fn split_line(l: &str) -> (&str, &str) {
    match l.rsplit_once(" -> ") {
        Some((what, result)) => (what.trim_end(), result),
        None => (l, ""),
    }
}

/// Holds a cowvfs transcript of `guest` on `abi` (`component` or
/// `preview1`) to stock wasmtime-wasi's: the same lines, except exactly
/// the differences the table lists for that guest and ABI, each of which
/// must occur (a row that no longer applies is stale).
pub fn assert_agrees_with_stock(name: &str, abi: &str, cowvfs: &str, stock: &str) {
    let rows: Vec<Difference> = differences()
        .into_iter()
        .filter(|d| d.guest == name && (d.abi == abi || d.abi == "both"))
        .collect();
    let guest = format!("{name} ({abi})");
    let mut rows_wanted = Vec::new();
    let mut used = vec![false; rows.len()];
    let mut unexplained = Vec::new();
    for (i, (c, s)) in cowvfs.lines().zip(stock.lines()).enumerate() {
        let (cw, cr) = split_line(c);
        let (sw, sr) = split_line(s);
        let row = rows
            .iter()
            .position(|d| d.line == cw && d.cowvfs == cr && (d.stock == sr || d.stock == "(any)"));
        match row {
            Some(r) if cw == sw => used[r] = true,
            _ if c == s => {}
            _ => {
                unexplained.push(format!("line {}:\n  cowvfs: {c}\n  stock:  {s}", i + 1));
                let esc = |x: &str| x.replace('|', "\\|");
                rows_wanted.push(format!(
                    "| {name} | {abi} | `{}` | `{}` | `{}` | ? |",
                    esc(cw),
                    esc(cr),
                    esc(sr)
                ));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{guest}: differences from stock wasmtime-wasi not in {}:\n{}\n\n\
         rows that would list them (if deliberate):\n{}\n\nstock transcript:\n{stock}",
        differences_file().display(),
        unexplained.join("\n"),
        rows_wanted.join("\n")
    );
    assert_eq!(
        cowvfs.lines().count(),
        stock.lines().count(),
        "{guest}: transcripts differ in length\ncowvfs:\n{cowvfs}\nstock:\n{stock}"
    );
    let stale: Vec<_> = rows
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(d, _)| format!("{d:?}"))
        .collect();
    assert!(
        stale.is_empty(),
        "{guest}: rows of {} that did not apply:\n{}",
        differences_file().display(),
        stale.join("\n")
    );
}

/// A workload guest ran clean: exit 0, its expected transcript, and a
/// consistent tree with everything it made removed and everything it
/// opened closed.
pub fn assert_example_ran_clean(name: &str, out: &RunOutcome) {
    assert_eq!(
        out.status.as_ref().ok(),
        Some(&0),
        "{name}: {}",
        text(&out.stderr)
    );
    assert_transcript(&text(&out.stdout), &ours(name));
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

/// A workload guest ran with `/srv/box` preopened as `/sandbox` and
/// `/sandbox` as its argument: the usual transcript under that root.
pub fn assert_ran_at_sandbox_root(name: &str, out: &RunOutcome) {
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{name}");
    let want = std::fs::read_to_string(ours(name))
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

    /// The same guest and host on stock wasmtime-wasi: a directory holding
    /// the same `/abs_link`, preopened at `/`, with the two mounts
    /// preopened at `/ro` and `/rw`; `preview1` runs the core module on
    /// stock preview1, else the adapted component on stock
    /// wasi:filesystem. Returns the exit status and transcript.
    pub fn run_stock(&self, preview1: bool) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("abs_link")).unwrap();
        let mounts = [
            (self.ro.path(), "/ro", true),
            (self.rw.path(), "/rw", false),
        ];
        let args = [self.secret.to_str().unwrap()];
        if preview1 {
            run_stock_p1("hostile", dir.path(), &mounts, &args, &[])
        } else {
            run_stock_with("hostile", dir.path(), &mounts, &args, &[])
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
