//! The baseline of `benches/serve.sh`: a sandbox per request the way it is
//! done without cowvfs. Per request, copy the base directory (on tmpfs)
//! with `cp -a`, then run the guest with stock wasmtime-wasi (its own
//! preview1 host, not cowvfs's) in process, the fresh copy preopened at
//! `/`. The module is compiled and linked once (an `InstancePre`), so only
//! the per-request work is timed: the copy, a new store and WASI context,
//! instantiation and the run. Removing the copy afterwards is timed apart.
//!
//!   cargo run --release --example stock_wasi_baseline -- BASE_DIR GUEST.wat N
//!
//! Prints each request's time, then `baseline p50_ms=… min_ms=… max_ms=…
//! cleanup_p50_ms=…` for the script to read.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stock_wasi_baseline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, guest, n] = args.as_slice() else {
        bail!("usage: stock_wasi_baseline BASE_DIR GUEST.wat N");
    };
    let base = PathBuf::from(base);
    let n: usize = n.parse().context("N: a number of requests")?;
    if n == 0 || !base.is_dir() {
        bail!("N must be at least 1 and BASE_DIR a directory");
    }
    let text = std::fs::read(guest).with_context(|| format!("reading {guest}"))?;
    let binary = wat::parse_bytes(&text).context("the guest is not WAT or wasm")?;

    let engine = Engine::new(&Config::new())?;
    let module = Module::new(&engine, &binary)?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |cx| cx)?;
    let pre = linker.instantiate_pre(&module)?;

    // The copies live next to the base, on the same tmpfs.
    let parent = base.parent().unwrap_or(Path::new("/dev/shm"));
    let mut times = Vec::with_capacity(n);
    let mut cleanups = Vec::with_capacity(n);
    for i in 0..n {
        let copy = parent.join(format!("stock-wasi-copy-{}-{i}", std::process::id()));
        let start = Instant::now();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&base)
            .arg(&copy)
            .status()
            .context("running cp")?;
        if !status.success() {
            bail!(
                "cp -a {} {} failed: {status}",
                base.display(),
                copy.display()
            );
        }
        let copied = start.elapsed();
        let out = one_request(&engine, &pre, &copy)?;
        let total = start.elapsed();
        let t = Instant::now();
        std::fs::remove_dir_all(&copy).with_context(|| format!("removing {}", copy.display()))?;
        cleanups.push(t.elapsed());
        println!(
            "request {i}: {:.1} ms (copy {:.1} ms, run {:.2} ms), stdout {:?}",
            ms(total),
            ms(copied),
            ms(total - copied),
            String::from_utf8_lossy(&out)
        );
        times.push(total);
    }
    times.sort();
    cleanups.sort();
    println!(
        "baseline p50_ms={:.1} min_ms={:.1} max_ms={:.1} cleanup_p50_ms={:.1} requests={n}",
        ms(times[n / 2]),
        ms(times[0]),
        ms(times[n - 1]),
        ms(cleanups[n / 2])
    );
    Ok(())
}

/// A fresh store and WASI context over `dir`, the guest run to its end;
/// its stdout. A non-zero exit is an error.
fn one_request(
    engine: &Engine,
    pre: &InstancePre<WasiP1Ctx>,
    dir: &Path,
) -> anyhow::Result<Vec<u8>> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let ctx = WasiCtxBuilder::new()
        .arg("guest")
        .arg("x")
        .stdout(stdout.clone())
        .preopened_dir(dir, "/", FsPerms::ReadWrite)?
        .build_p1();
    let mut store = Store::new(engine, ctx);
    let instance = pre.instantiate(&mut store)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    match start.call(&mut store, ()) {
        Ok(()) => {}
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => {}
            Some(I32Exit(code)) => bail!("the guest exited {code}"),
            None => bail!("the guest trapped: {e:?}"),
        },
    }
    Ok(stdout.contents().to_vec())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
