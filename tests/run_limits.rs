//! Run limits: a guest that spins, sleeps forever, burns fuel or eats
//! memory ends at its limit with an outcome the caller can match, on both
//! ABIs and through the CLI, while the host carries on.
#![cfg(feature = "wasi")]

mod wasi_support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cowvfs::Vfs;
use cowvfs::wasi::{DeadlineExceeded, Guest, LimitHit, RunOutcome, Sandbox, p1};
use wasi_support::*;

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
