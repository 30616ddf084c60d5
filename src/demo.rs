//! `cowvfs demo`: the whole story in one run, with numbers measured as it
//! goes. Builds a base image, forks a thousand sandboxes that each run a
//! WebAssembly guest, shows isolation and a diff, saves and reopens
//! checkpoints and rolls a session back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::wasi::{Guest, Sandbox, adapt_module};
use crate::{ChangeKind, Limits, Snapshot, Vfs};

/// The guest every sandbox runs, as a preview1 module in WAT (compiled at
/// start, adapted into a component): it writes its first argument into
/// `/app/notes/note.txt` (creating or truncating it) and over bytes
/// 1,000,000.. of the shared `/app/data/blob.bin`.
pub const GUEST_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "app/notes/note.txt")
  (data (i32.const 1056) "app/data/blob.bin")
  ;; Any error ends the guest with exit code 100 + errno.
  (func $check (param $e i32)
    (if (local.get $e) (then (call $proc_exit (i32.add (local.get $e) (i32.const 100))))))
  (func (export "_start")
    (local $arg i32) (local $len i32) (local $fd i32)
    (call $check (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.ne (i32.load (i32.const 0)) (i32.const 2)) (then (call $proc_exit (i32.const 2))))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 4096)) (then (call $proc_exit (i32.const 3))))
    (call $check (call $args_get (i32.const 64) (i32.const 2048)))
    (local.set $arg (i32.load (i32.const 68)))
    (local.set $len (i32.sub (i32.sub (i32.add (i32.const 2048) (i32.load (i32.const 4)))
                                      (local.get $arg)) (i32.const 1)))
    (i32.store (i32.const 16) (local.get $arg))
    (i32.store (i32.const 20) (local.get $len))
    ;; note.txt: O_CREAT|O_TRUNC, rights fd_read|fd_write
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 18)
                                  (i32.const 9) (i64.const 66) (i64.const 66) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (call $check (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 12)))
    (call $check (call $fd_close (local.get $fd)))
    ;; blob.bin: overwrite at offset 1,000,000
    (call $check (call $path_open (i32.const 3) (i32.const 1) (i32.const 1056) (i32.const 17)
                                  (i32.const 0) (i64.const 66) (i64.const 66) (i32.const 0) (i32.const 8)))
    (local.set $fd (i32.load (i32.const 8)))
    (call $check (call $fd_pwrite (local.get $fd) (i32.const 16) (i32.const 1) (i64.const 1000000)
                                  (i32.const 12)))
    (call $check (call $fd_close (local.get $fd))))
)
"#;

/// Sizes of the demo, so tests can run a small one.
#[derive(Clone, Copy, Debug)]
pub struct DemoConfig {
    /// Small files in the base image.
    pub files: usize,
    /// Size of the large shared file, in bytes.
    pub big_file: usize,
    /// Sandboxes forked and run.
    pub sandboxes: usize,
}

impl Default for DemoConfig {
    fn default() -> DemoConfig {
        DemoConfig {
            files: 5_000,
            big_file: 256 << 20,
            sandboxes: 1_000,
        }
    }
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn fail(msg: impl Into<String>) -> Box<dyn std::error::Error + Send + Sync> {
    msg.into().into()
}

/// Runs the demo, writing its report to `out`.
pub fn run(cfg: DemoConfig, out: &mut dyn Write) -> DemoResult<()> {
    let started = Instant::now();
    writeln!(
        out,
        "cowvfs demo: copy-on-write filesystems for WebAssembly sandboxes\n"
    )?;

    // 1. The base image.
    let t = Instant::now();
    let base = build_base(&cfg)?;
    let build_time = t.elapsed();
    let t = Instant::now();
    let snap = base.snapshot();
    let snap_time = t.elapsed();
    let usage = snap.usage();
    writeln!(out, "1. Base image")?;
    row(
        out,
        "built",
        format!(
            "{} files in /app and a {} data file ({} in all) in {}",
            thousands(cfg.files as u64),
            mib(cfg.big_file as u64),
            mib(usage.held_bytes),
            dur(build_time)
        ),
    )?;
    row(
        out,
        "snapshot",
        format!("{} (O(1): one pointer copy)", dur(snap_time)),
    )?;
    row(out, "root hash", short_hash(&snap.root_hash()))?;
    let naive = deep_copy_of(&snap)?;
    let t = Instant::now();
    let copy = naive.clone();
    let deep_copy_time = t.elapsed();
    drop(copy);
    drop(naive);

    // 2. A thousand sandboxes.
    let engine = Engine::default();
    let wasm = wat::parse_str(GUEST_WAT).map_err(|e| fail(format!("guest: {e}")))?;
    let component = Component::new(&engine, adapt_module(&wasm)?)?;
    let guest = Guest::new(&engine, &component, "note.wasm")?;
    let t = Instant::now();
    let forks: Vec<Vfs> = (0..cfg.sandboxes)
        .map(|_| snap.fork_with_limits(Limits::default()))
        .collect();
    let fork_time = t.elapsed();
    let rss_before = rss_bytes();
    let (results, run_time, per_run) = run_all(&guest, forks)?;
    let rss_grown = rss_bytes().saturating_sub(rss_before);
    let private: u64 = results.iter().map(|v| v.usage().allocated_bytes).sum();
    writeln!(
        out,
        "\n2. {} sandboxes, each running a WebAssembly guest",
        thousands(cfg.sandboxes as u64)
    )?;
    row(
        out,
        "fork",
        format!(
            "{} per sandbox ({} for all); a deep copy of this tree takes {}",
            dur(fork_time / cfg.sandboxes.max(1) as u32),
            dur(fork_time),
            dur(deep_copy_time)
        ),
    )?;
    row(
        out,
        "guest runs",
        format!(
            "{} in {} on {} threads (median {} per run, instantiation included)",
            thousands(cfg.sandboxes as u64),
            dur(run_time),
            threads(),
            dur(per_run)
        ),
    )?;
    row(
        out,
        "memory",
        format!(
            "{} of private file data in all ({} per sandbox: one 64 KiB chunk + the note), RSS +{}",
            mib(private),
            kib(private / cfg.sandboxes.max(1) as u64),
            mib(rss_grown)
        ),
    )?;
    row(
        out,
        "deep copies",
        format!(
            "would hold {} of file data",
            mib(usage.held_bytes * cfg.sandboxes as u64)
        ),
    )?;

    // 3. Isolation and diff.
    writeln!(out, "\n3. Isolation")?;
    let mut own = 0;
    let mut results = results;
    for (i, v) in results.iter_mut().enumerate() {
        let note = v.read_file("/app/notes/note.txt")?;
        let want = sandbox_name(i);
        let mut blob = vec![0u8; want.len()];
        let fd = v.open("/app/data/blob.bin", crate::OpenOptions::new().read(true))?;
        let n = v.read_at(fd, &mut blob, 1_000_000)?;
        v.close(fd)?;
        if note == want.as_bytes() && blob[..n] == *want.as_bytes() {
            own += 1;
        }
    }
    row(
        out,
        "own writes",
        format!(
            "{own} of {} sandboxes read back exactly their own note and blob bytes",
            cfg.sandboxes
        ),
    )?;
    let base_ok =
        snap.read_file("/app/notes/note.txt")? == b"base\n" && snap.root_hash() == base.root_hash();
    row(
        out,
        "base",
        format!("unchanged after all runs: {}", yes(base_ok)),
    )?;
    if let Some(v) = results.get(7) {
        let t = Instant::now();
        let changes = snap.diff(&v.snapshot());
        let diff_time = t.elapsed();
        row(
            out,
            "diff of #7",
            format!(
                "{} change(s) in {} (the tree has {} inodes)",
                changes.len(),
                dur(diff_time),
                thousands(usage.inodes)
            ),
        )?;
        for c in &changes {
            let what = match c.kind() {
                ChangeKind::Added => "added",
                ChangeKind::Removed => "removed",
                ChangeKind::Modified => "modified",
            };
            row(out, "", format!("{what:<9}{}", c.path()))?;
        }
    }

    // 4. Checkpoints and rollback.
    writeln!(out, "\n4. Checkpoints and rollback")?;
    let dir = TempDir::new()?;
    let full = dir.path().join("base.ckpt");
    let t = Instant::now();
    snap.save(&full)?;
    let save_time = t.elapsed();
    let full_len = std::fs::metadata(&full)?.len();
    row(
        out,
        "full save",
        format!(
            "{} in {} ({}/s)",
            mib(full_len),
            dur(save_time),
            mib_rate(usage.held_bytes, save_time)
        ),
    )?;
    let child = results
        .get(7)
        .map(|v| v.snapshot())
        .ok_or_else(|| fail("no sandbox #7"))?;
    let delta = dir.path().join("sandbox7.delta");
    let t = Instant::now();
    child.save_delta(&snap, &delta)?;
    let delta_time = t.elapsed();
    row(
        out,
        "delta save",
        format!(
            "sandbox #7 against the base: {} in {}",
            kib(std::fs::metadata(&delta)?.len()),
            dur(delta_time)
        ),
    )?;
    let t = Instant::now();
    let reopened = Snapshot::open(&full)?;
    let open_time = t.elapsed();
    let t = Instant::now();
    let loaded = Snapshot::load(&full)?;
    let load_time = t.elapsed();
    let again = Snapshot::open_delta(&delta, &reopened)?;
    let hashes_ok = reopened.root_hash() == snap.root_hash()
        && loaded.root_hash() == snap.root_hash()
        && again.root_hash() == child.root_hash();
    row(
        out,
        "reopen",
        format!(
            "lazy open {}, full verified load {}; root hashes match: {}",
            dur(open_time),
            dur(load_time),
            yes(hashes_ok)
        ),
    )?;
    let note = again.read_file("/app/notes/note.txt")?;
    row(
        out,
        "",
        format!(
            "sandbox #7's note from the delta: {:?}",
            String::from_utf8_lossy(&note).trim_end()
        ),
    )?;

    // A session: three steps, then undo two of them.
    let mut session = snap.fork();
    let mut history = vec![session.snapshot()];
    for step in 1..=3 {
        let mut sb = Sandbox::new(session);
        sb.preopen("/", "/")?.arg(&format!("step {step}"));
        let outcome = sb.run(&guest);
        check_status(outcome.status)?;
        session = outcome.vfs;
        history.push(session.snapshot());
    }
    let step1 = &history[1];
    let t = Instant::now();
    let rolled = step1.fork();
    let rollback_time = t.elapsed();
    let rolled_ok = rolled.root_hash() == step1.root_hash()
        && rolled.read_file("/app/notes/note.txt")? == b"step 1"
        && session.read_file("/app/notes/note.txt")? == b"step 3";
    row(
        out,
        "rollback",
        format!(
            "3 guest steps, undo to step 1 in {} (fork the older snapshot); matches step 1: {}",
            dur(rollback_time),
            yes(rolled_ok)
        ),
    )?;
    writeln!(out, "\ndone in {}", dur(started.elapsed()))?;
    if own != cfg.sandboxes || !base_ok || !hashes_ok || !rolled_ok {
        return Err(fail("the demo's checks failed (see above)"));
    }
    Ok(())
}

fn check_status(status: Result<i32, wasmtime::Error>) -> DemoResult<()> {
    match status {
        Ok(0) => Ok(()),
        Ok(code) => Err(fail(format!("guest exited with {code}"))),
        Err(e) => Err(fail(format!("guest trapped: {e:#}"))),
    }
}

fn sandbox_name(i: usize) -> String {
    format!("sandbox {i}")
}

fn build_base(cfg: &DemoConfig) -> DemoResult<Vfs> {
    // A base is all its own data: it may hold more than a fork's
    // private-byte quota (the forks below get the default limits).
    let mut v = Vfs::with_limits(Limits {
        max_private_bytes: u64::MAX,
        ..Limits::default()
    });
    v.create_dir_all("/app/notes")?;
    v.create_dir_all("/app/data")?;
    for i in 0..cfg.files {
        let dir = format!("/app/lib/pkg{:03}", i / 100);
        if i % 100 == 0 {
            v.create_dir_all(&dir)?;
        }
        let body = format!("# module {i}\ndef f{i}(x):\n    return x * {i}\n");
        v.write_file(&format!("{dir}/mod{i}.py"), body.as_bytes())?;
    }
    v.write_file("/app/notes/note.txt", b"base\n")?;
    // Unique content per chunk, so dedup does not flatter the checkpoint.
    let fd = v.open(
        "/app/data/blob.bin",
        crate::OpenOptions::new().write(true).create(true),
    )?;
    let mut block = vec![0u8; 1 << 20];
    let mut off = 0usize;
    while off < cfg.big_file {
        let n = block.len().min(cfg.big_file - off);
        for (j, b) in block[..n].iter_mut().enumerate() {
            let x = (off + j) as u64;
            *b = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
        }
        v.write_at(fd, &block[..n], off as u64)?;
        off += n;
    }
    v.close(fd)?;
    Ok(v)
}

/// The tree as a deep-copy VFS would hold it, to time its clone.
fn deep_copy_of(snap: &Snapshot) -> DemoResult<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        for e in snap.read_dir(&dir)? {
            let p = crate::path::join(&dir, &e.name);
            match e.kind {
                crate::FileType::Dir => work.push(p),
                crate::FileType::File => {
                    let data = snap.read_file(&p)?;
                    out.insert(p, data);
                }
                crate::FileType::Symlink => {}
            }
        }
    }
    Ok(out)
}

/// Runs the guest in every sandbox on all cores; returns the trees, the
/// wall time and the median time of one run.
fn run_all(guest: &Guest, forks: Vec<Vfs>) -> DemoResult<(Vec<Vfs>, Duration, Duration)> {
    let n = forks.len();
    let slots: Vec<Mutex<Option<Vfs>>> = forks.into_iter().map(|v| Mutex::new(Some(v))).collect();
    let times: Mutex<Vec<Duration>> = Mutex::new(Vec::with_capacity(n));
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads() {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let Some(vfs) = slots[i].lock().ok().and_then(|mut g| g.take()) else {
                        continue;
                    };
                    let started = Instant::now();
                    let mut sb = Sandbox::new(vfs);
                    if let Err(e) = sb.preopen("/", "/") {
                        push(&errors, format!("sandbox {i}: {e}"));
                        continue;
                    }
                    sb.arg(&sandbox_name(i));
                    let outcome = sb.run(guest);
                    let elapsed = started.elapsed();
                    if let Err(e) = check_status(outcome.status) {
                        push(&errors, format!("sandbox {i}: {e}"));
                    }
                    if let Ok(mut g) = slots[i].lock() {
                        *g = Some(outcome.vfs);
                    }
                    if let Ok(mut g) = times.lock() {
                        g.push(elapsed);
                    }
                }
            });
        }
    });
    let wall = t.elapsed();
    let errors = errors.into_inner().unwrap_or_default();
    if let Some(first) = errors.first() {
        return Err(fail(format!(
            "{} guest run(s) failed; first: {first}",
            errors.len()
        )));
    }
    let mut times = times.into_inner().unwrap_or_default();
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let trees = slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| fail("a sandbox was lost"))
        })
        .collect::<DemoResult<Vec<Vfs>>>()?;
    Ok((trees, wall, median))
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn row(out: &mut dyn Write, label: &str, text: String) -> std::io::Result<()> {
    writeln!(out, "   {label:<12} {text}")
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

fn short_hash(h: &blake3::Hash) -> String {
    let hex = h.to_hex();
    format!("{}…", &hex[..16])
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

fn kib(n: u64) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

fn mib_rate(bytes: u64, d: Duration) -> String {
    let secs = d.as_secs_f64().max(1e-9);
    mib((bytes as f64 / secs) as u64)
}

fn dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// A temporary directory removed on drop (the library has no tempfile dep).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let p = base.join(format!("cowvfs-demo-{}-{attempt}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("cannot create a temp directory"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn push(errors: &Mutex<Vec<String>>, msg: String) {
    if let Ok(mut g) = errors.lock() {
        g.push(msg);
    }
}
