//! Run limits: a guest that spins, sleeps forever, burns fuel or eats
//! memory ends at its limit with an outcome the caller can match, on both
//! ABIs and through the CLI, while the host carries on.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::wasi_support::*;
use cowvfs::Vfs;
use cowvfs::wasi::{DeadlineExceeded, Guest, LimitHit, RunOutcome, Sandbox, p1};

/// Generous: a stopped run must end well before this, a hung one never.
const BOUND: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_millis(300);

fn timed_engine() -> &'static wasmtime::Engine {
    static E: OnceLock<wasmtime::Engine> = OnceLock::new();
    E.get_or_init(|| cowvfs::wasi::engine(true, false).unwrap())
}

fn fuel_engine() -> &'static wasmtime::Engine {
    static E: OnceLock<wasmtime::Engine> = OnceLock::new();
    E.get_or_init(|| cowvfs::wasi::engine(false, true).unwrap())
}

fn cache() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn p2_guest(engine: &wasmtime::Engine) -> Guest {
    Guest::load(engine, &wasm("limits"), Some(&cache().join("wasi-adapted"))).unwrap()
}

fn p1_guest(engine: &wasmtime::Engine) -> p1::Guest {
    p1::Guest::load(engine, &wasm("limits")).unwrap()
}

fn p2_run(engine: &wasmtime::Engine, mode: &str, set: impl FnOnce(&mut Sandbox)) -> RunOutcome {
    let g = p2_guest(engine);
    let mut sb = Sandbox::new(Vfs::new());
    sb.arg(mode).capture_output();
    set(&mut sb);
    sb.run(&g)
}

fn p1_run(engine: &wasmtime::Engine, mode: &str, set: impl FnOnce(&mut p1::Sandbox)) -> RunOutcome {
    let g = p1_guest(engine);
    let mut sb = p1::Sandbox::new(Vfs::new());
    sb.arg(mode).capture_output();
    set(&mut sb);
    sb.run(&g)
}

/// The run ended at its deadline: the matching error and outcome, not
/// before the timeout, well before the bound.
fn assert_deadline(out: &RunOutcome, started: Instant, what: &str) {
    let took = started.elapsed();
    assert_eq!(
        out.limit,
        Some(LimitHit::Deadline),
        "{what}: {:?}",
        out.status
    );
    let err = out.status.as_ref().expect_err(what);
    let d = err
        .downcast_ref::<DeadlineExceeded>()
        .unwrap_or_else(|| panic!("{what}: not a DeadlineExceeded: {err:?}"));
    assert_eq!(d.timeout, TIMEOUT);
    assert!(took >= TIMEOUT, "{what}: ended early, after {took:?}");
    assert!(took < BOUND, "{what}: took {took:?}");
    out.vfs.check_invariants().unwrap();
}

#[test]
fn spinning_guests_stop_at_the_deadline() {
    guests();
    let e = timed_engine();
    let t = Instant::now();
    let out = p2_run(e, "spin", |sb| {
        sb.timeout(TIMEOUT);
    });
    assert_deadline(&out, t, "component spin");
    assert_eq!(text(&out.stdout), "spinning\n");
    let t = Instant::now();
    let out = p1_run(e, "spin", |sb| {
        sb.timeout(TIMEOUT);
    });
    assert_deadline(&out, t, "preview1 spin");
    assert_eq!(text(&out.stdout), "spinning\n");
}

#[test]
fn sleeping_guests_stop_at_the_deadline() {
    guests();
    let e = timed_engine();
    let t = Instant::now();
    let out = p2_run(e, "sleep", |sb| {
        sb.timeout(TIMEOUT);
    });
    assert_deadline(&out, t, "component sleep");
    assert_eq!(text(&out.stdout), "sleeping\n");
    let t = Instant::now();
    let out = p1_run(e, "sleep", |sb| {
        sb.timeout(TIMEOUT);
    });
    assert_deadline(&out, t, "preview1 sleep");
    assert_eq!(text(&out.stdout), "sleeping\n");
}

#[test]
fn runs_without_limits_are_unchanged_on_a_timed_engine() {
    guests();
    let e = timed_engine();
    for out in [p2_run(e, "quick", |_| {}), p1_run(e, "quick", |_| {})] {
        assert_eq!(out.status.as_ref().ok(), Some(&0), "{:?}", out.status);
        assert_eq!(text(&out.stdout), "quick\n");
        assert_eq!(out.limit, None);
    }
    // The fuel engine too: no budget asked means no budget.
    let out = p1_run(fuel_engine(), "quick", |_| {});
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{:?}", out.status);
}

#[test]
fn timed_runs_on_one_engine_keep_their_own_deadlines() {
    guests();
    let e = timed_engine();
    let long = std::thread::spawn(move || {
        let t = Instant::now();
        let out = p1_run(e, "spin", |sb| {
            sb.timeout(Duration::from_millis(1500));
        });
        (out.limit, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let out = p2_run(e, "spin", |sb| {
        sb.timeout(TIMEOUT);
    });
    assert_deadline(&out, t, "short run");
    let (limit, took) = long.join().unwrap();
    assert_eq!(limit, Some(LimitHit::Deadline));
    assert!(
        took >= Duration::from_millis(1500),
        "long run cut at {took:?}"
    );
}

#[test]
fn a_timeout_on_an_engine_without_epochs_is_refused_at_once() {
    guests();
    let e = wasmtime::Engine::default();
    let t = Instant::now();
    for out in [
        p2_run(&e, "spin", |sb| {
            sb.timeout(TIMEOUT);
        }),
        p1_run(&e, "spin", |sb| {
            sb.timeout(TIMEOUT);
        }),
    ] {
        let err = format!("{:?}", out.status.expect_err("must refuse"));
        assert!(err.contains("epoch interruption"), "{err}");
    }
    assert!(t.elapsed() < BOUND);
    // Fuel on an engine without metering, likewise.
    let out = p1_run(timed_engine(), "spin", |sb| {
        sb.fuel(1000);
    });
    let err = format!("{:?}", out.status.expect_err("must refuse"));
    assert!(err.contains("fuel consumption"), "{err}");
}

#[test]
fn fuel_runs_out() {
    guests();
    let e = fuel_engine();
    for out in [
        p2_run(e, "spin", |sb| {
            sb.fuel(50_000_000);
        }),
        p1_run(e, "spin", |sb| {
            sb.fuel(50_000_000);
        }),
    ] {
        assert_eq!(out.limit, Some(LimitHit::Fuel), "{:?}", out.status);
        let err = out.status.as_ref().unwrap_err();
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::OutOfFuel)
        );
    }
    // Enough fuel for a quick run.
    let out = p1_run(e, "quick", |sb| {
        sb.fuel(50_000_000);
    });
    assert_eq!(out.status.as_ref().ok(), Some(&0));
    assert_eq!(out.limit, None);
}

#[test]
fn a_memory_bomb_meets_the_cap() {
    guests();
    let e = timed_engine();
    for (abi, out) in [
        (
            "component",
            p2_run(e, "bomb", |sb| {
                sb.max_memory(16 << 20);
            }),
        ),
        (
            "preview1",
            p1_run(e, "bomb", |sb| {
                sb.max_memory(16 << 20);
            }),
        ),
    ] {
        // The adapter turns every non-zero exit status into 1.
        let want = if abi == "component" { 1 } else { 3 };
        assert_eq!(
            out.status.as_ref().ok(),
            Some(&want),
            "{abi}: {:?}",
            out.status
        );
        let said = text(&out.stdout);
        let mib: u64 = said
            .strip_prefix("malloc failed after ")
            .and_then(|r| r.strip_suffix(" MiB\n"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{abi}: {said:?}"));
        assert!((1..16).contains(&mib), "{abi}: {mib} MiB");
        assert_eq!(out.limit, Some(LimitHit::Memory), "{abi}");
    }
}

fn cli_run(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let t = Instant::now();
    let out = cli().arg("run").args(args).output().unwrap();
    (
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        t.elapsed(),
    )
}

#[cfg(feature = "cli")]
#[test]
fn cli_timeout_exits_124() {
    guests();
    let m = wasm("limits");
    let m = m.to_str().unwrap();
    for mode in ["spin", "sleep"] {
        for adapter in [false, true] {
            let mut args = vec!["--timeout", "300ms"];
            if adapter {
                args.push("--adapter");
            }
            args.extend([m, mode]);
            let (code, stdout, stderr, took) = cli_run(&args);
            let what = format!("{mode} adapter={adapter}");
            assert_eq!(code, Some(124), "{what}: {stderr}");
            assert!(
                stderr.contains("ran past --timeout 300ms and was stopped"),
                "{what}: {stderr}"
            );
            assert!(stdout.starts_with(if mode == "spin" {
                "spinning"
            } else {
                "sleeping"
            }));
            assert!(took < BOUND, "{what}: {took:?}");
        }
    }
    let (code, stdout, _, _) = cli_run(&["--timeout", "30s", m, "quick"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "quick\n"));
    let (code, _, stderr, _) = cli_run(&["--timeout", "soon", m, "quick"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("bad --timeout"), "{stderr}");
}

#[cfg(feature = "cli")]
#[test]
fn cli_fuel_and_memory() {
    guests();
    let m = wasm("limits");
    let m = m.to_str().unwrap();
    let (code, _, stderr, _) = cli_run(&["--fuel", "20000000", m, "spin"]);
    assert_eq!(code, Some(134), "{stderr}");
    assert!(stderr.contains("used up its --fuel 20000000"), "{stderr}");
    for adapter in [false, true] {
        let mut args = vec!["--max-memory", "16M"];
        if adapter {
            args.push("--adapter");
        }
        args.extend([m, "bomb"]);
        let (code, stdout, stderr, _) = cli_run(&args);
        // The adapter turns every non-zero exit status into 1.
        assert_eq!(code, Some(if adapter { 1 } else { 3 }), "{stderr}");
        assert!(stdout.starts_with("malloc failed after "), "{stdout}");
        assert!(stderr.contains("more memory than --max-memory"), "{stderr}");
    }
}

/// A timeout too far off for the clock (`Duration::MAX`, "never") is no
/// deadline, not a panic of the host: the guest runs to its end, on both
/// ABIs.
#[test]
fn a_timeout_past_the_clocks_range_is_no_deadline() {
    guests();
    let e = timed_engine();
    let out = p2_run(e, "quick", |sb| {
        sb.timeout(Duration::MAX);
    });
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{:?}", out.status);
    let out = p1_run(e, "quick", |sb| {
        sb.timeout(Duration::MAX);
    });
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{:?}", out.status);
}

/// A core module that opens `f.txt` in its first preopen 600 times
/// without closing it, then exits 0; the first failure exits with 100 +
/// its errno.
#[cfg(feature = "cli")]
const OPENS_600: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "f.txt")
  (func (export "_start")
    (local $i i32) (local $e i32)
    (loop $again
      ;; fd 3, follow symlinks, "f.txt", no oflags, fd_read rights.
      (local.set $e (call $open (i32.const 3) (i32.const 1) (i32.const 16) (i32.const 5)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 8)))
      (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 600))))
    (call $exit (i32.const 0))))"#;

/// A guest's files on a host mount are real descriptors of the process:
/// under a shell's soft limit of 256, `cowvfs run` raises its own soft
/// limit toward `max_open_files`, so the guest's 600 opens all succeed.
#[cfg(feature = "cli")]
#[test]
fn mount_descriptors_are_bounded_by_the_sandbox_not_the_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f.txt"), "x").unwrap();
    let guest = tmp.path().join("opens.wasm");
    std::fs::write(&guest, wat::parse_str(OPENS_600).unwrap()).unwrap();
    // The limit set in a shell that the run then replaces: `-Sn` the soft
    // one, `-n` both.
    let run = |limit: u32, which: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {which} {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_cowvfs"))
            .args(["run", "--mount"])
            .arg(format!("{}::/data", host.display()))
            .arg(&guest)
            .output()
            .unwrap()
    };
    let out = run(256, "-Sn");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A hard limit below what the sandbox allows: the run says so, and
    // the guest's open fails where the process runs out, with the host's
    // EMFILE (33).
    let out = run(200, "-n");
    assert_eq!(
        out.status.code(),
        Some(133),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RLIMIT_NOFILE"), "{err}");
}
