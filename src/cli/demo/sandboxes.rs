//! Step 2: fork a sandbox per request from the base snapshot, in O(1), and
//! run the guest in every one of them on all cores.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use cowvfs::wasi::{Guest, Sandbox, adapt_module};
use cowvfs::{Limits, Vfs};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::base::Base;
use super::report::{dur, kib, mib, row, thousands};
use super::{Config, GUEST_WAT};

pub struct Ran {
    /// The guest, compiled once, for the rollback session of step 4.
    pub guest: Guest,
    /// Every sandbox's tree after its run, in sandbox order.
    pub trees: Vec<Vfs>,
}

/// What sandbox `i` writes: its note and the bytes over the shared blob.
pub fn sandbox_name(i: usize) -> String {
    format!("sandbox {i}")
}

pub fn run(cfg: &Config, base: &Base, out: &mut dyn Write) -> anyhow::Result<Ran> {
    let engine = Engine::default();
    let wasm = wat::parse_str(GUEST_WAT).context("guest")?;
    let component = Component::new(&engine, adapt_module(&wasm)?)?;
    let guest = Guest::new(&engine, &component, "note.wasm")?;
    let t = Instant::now();
    let forks: Vec<Vfs> = (0..cfg.sandboxes)
        .map(|_| base.snap.fork_with_limits(Limits::default()))
        .collect();
    let fork_time = t.elapsed();
    let rss_before = rss_bytes();
    let (trees, run_time, per_run) = run_all(&guest, forks)?;
    let rss_grown = rss_bytes().saturating_sub(rss_before);
    let private: u64 = trees.iter().map(|v| v.usage().allocated_bytes).sum();
    let n = cfg.sandboxes.max(1);
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
            dur(fork_time / n as u32),
            dur(fork_time),
            dur(base.deep_copy_time)
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
            kib(private / n as u64),
            mib(rss_grown)
        ),
    )?;
    row(
        out,
        "deep copies",
        format!(
            "would hold {} of file data",
            mib(base.usage.held_bytes * cfg.sandboxes as u64)
        ),
    )?;
    Ok(Ran { guest, trees })
}

/// A guest run's exit status as a result: exit code 0 or an error.
pub fn check_status(status: Result<i32, wasmtime::Error>) -> anyhow::Result<()> {
    match status {
        Ok(0) => Ok(()),
        Ok(code) => bail!("guest exited with {code}"),
        Err(e) => bail!("guest trapped: {e:#}"),
    }
}

/// Runs the guest in every sandbox on all cores; returns the trees, the
/// wall time and the median time of one run.
fn run_all(guest: &Guest, forks: Vec<Vfs>) -> anyhow::Result<(Vec<Vfs>, Duration, Duration)> {
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
        bail!("{} guest run(s) failed; first: {first}", errors.len());
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
                .ok_or_else(|| anyhow!("a sandbox was lost"))
        })
        .collect::<anyhow::Result<Vec<Vfs>>>()?;
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

fn push(errors: &Mutex<Vec<String>>, msg: String) {
    if let Ok(mut g) = errors.lock() {
        g.push(msg);
    }
}
