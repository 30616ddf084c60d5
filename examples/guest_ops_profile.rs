//! A driver for profiling one phase of the per-operation guest
//! (tests/guests/bench_ops.c) under `perf record`: runs it again and again
//! on forks of one prepared tree, so nearly all samples are the guest's
//! calls.
//!
//!   guest_ops_profile WASM {p1|component} PHASE COUNT RUNS

use cowvfs::Vfs;
use cowvfs::wasi::{Guest, Sandbox, p1};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, wasm, abi, phase, count, runs] = &a[..] else {
        panic!("usage: guest_ops_profile WASM {{p1|component}} PHASE COUNT RUNS");
    };
    let n: u64 = count.parse().unwrap();
    let runs: u64 = runs.parse().unwrap();
    // The phase's starting tree, made by the guest's own setup phase.
    let engine = wasmtime::Engine::default();
    let native = p1::Guest::load(&engine, wasm.as_ref()).unwrap();
    let run_p1 = |vfs: Vfs, phase: &str| {
        let mut sb = p1::Sandbox::new(vfs);
        sb.preopen("/", "/").unwrap();
        sb.arg("/").arg(phase).arg(count).capture_output();
        let out = sb.run(&native);
        assert_eq!(
            out.status.unwrap(),
            0,
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        out.vfs
    };
    let base = run_p1(Vfs::new(), &format!("setup-{phase}")).snapshot();
    let start = std::time::Instant::now();
    if abi == "p1" {
        for _ in 0..runs {
            drop(run_p1(base.fork(), phase));
        }
    } else {
        let cache = std::env::temp_dir().join("cowvfs-guest-ops-profile");
        let guest = Guest::load(&engine, wasm.as_ref(), Some(&cache)).unwrap();
        for _ in 0..runs {
            let mut sb = Sandbox::new(base.fork());
            sb.preopen("/", "/").unwrap();
            sb.arg("/").arg(phase).arg(count).capture_output();
            assert_eq!(sb.run(&guest).status.unwrap(), 0);
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (runs * n.max(1)) as f64;
    println!("{abi} {phase}: {per:.0} ns per operation (run cost included)");
}
