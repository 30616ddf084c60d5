//! Real C guests on cowvfs's native preview1, compared with the same guests
//! through the preview1 adapter (the path of `guests.rs`): the transcripts
//! agree line for line except where the adapter is known to be wrong
//! (README, "Preview1 semantics").

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::wasi_support::*;
use cowvfs::Vfs;
use cowvfs::wasi::{RunOutcome, p1};

/// The native guest, compiled once per test binary.
fn native(name: &str) -> p1::Guest {
    static CACHE: OnceLock<Mutex<HashMap<String, p1::Guest>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(g) = cache.lock().unwrap().get(name) {
        return g.clone();
    }
    let g = p1::Guest::load(engine(), &wasm(name)).unwrap();
    cache.lock().unwrap().insert(name.to_string(), g.clone());
    g
}

fn run_native(name: &str, mut sb: p1::Sandbox) -> RunOutcome {
    sb.capture_output();
    sb.run(&native(name))
}

fn native_root(vfs: Vfs) -> p1::Sandbox {
    let mut sb = p1::Sandbox::new(vfs);
    sb.preopen("/", "/").unwrap();
    sb
}

/// Lines where the two transcripts differ, as (native, adapter).
fn differences(native: &str, adapter: &str) -> Vec<(String, String)> {
    assert_eq!(native.lines().count(), adapter.lines().count());
    native
        .lines()
        .zip(adapter.lines())
        .filter(|(n, a)| n != a)
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect()
}

#[test]
fn workloads_natively_and_through_the_adapter() {
    for name in EXAMPLES {
        let out = run_native(name, native_root(Vfs::new()));
        assert_example_ran_clean(name, &out);

        let adapted = run(name, root_sandbox(Vfs::new()));
        assert_eq!(adapted.status.as_ref().ok(), Some(&0), "{name} (adapter)");
        assert_eq!(differences(&text(&out.stdout), &text(&adapted.stdout)), []);
    }
}

#[test]
fn workloads_natively_at_another_root() {
    for name in EXAMPLES {
        let mut sb = p1::Sandbox::new(boxed_vfs());
        sb.preopen("/srv/box", "/sandbox").unwrap().arg("/sandbox");
        assert_ran_at_sandbox_root(name, &run_native(name, sb));
    }
}

/// Every descriptor method through wasi-libc (the WASI tests' own guest):
/// native preview1 gives the same transcript as the adapter.
#[test]
fn descriptor_methods_natively() {
    let out = run_native("fs_ops", native_root(Vfs::new()));
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    assert_transcript(&text(&out.stdout), &ours("fs_ops"));
    out.vfs.check_invariants().unwrap();
    assert_eq!(out.vfs.usage().open_files, 0);
}

/// The hostile guest on native preview1: the same precise errors, the host
/// and the limits unaffected.
#[test]
fn hostile_guest_natively() {
    let host = HostileHost::new();
    let mut sb = p1::Sandbox::new(host.vfs());
    sb.preopen("/", "/").unwrap();
    sb.mount(host.ro.path(), "/ro", true).unwrap();
    sb.mount(host.rw.path(), "/rw", false).unwrap();
    sb.arg(host.secret.to_str().unwrap());
    let out = run_native("hostile", sb);
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    let want = std::fs::read_to_string(ours("hostile")).unwrap();
    let got = text(&out.stdout);
    // Native preview1 has EMFILE; the adapter can only say ENOMEM
    // (wasi:filesystem has no EMFILE).
    for (n, a) in differences(&got, &want) {
        assert!(
            n.contains("EMFILE") && a.contains("ENOMEM"),
            "native {n:?} vs adapter {a:?}"
        );
    }
    host.assert_host_intact();
    host.assert_sandbox_intact(&out.vfs);
}

/// What C reaches beyond fs_ops: readdir while the directory changes,
/// clocks, sleep, entropy, poll, fcntl, fallocate, vectored I/O.
#[test]
fn libc_calls_natively_and_through_the_adapter() {
    let mut sb = native_root(Vfs::new());
    sb.env("P1_VAR", "set");
    let out = run_native("p1_libc", sb);
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    let native = text(&out.stdout);
    assert_transcript(&native, &ours("p1_libc"));
    assert_eq!(out.vfs.read_dir("/").unwrap(), vec![]);
    assert_eq!(out.vfs.usage().open_files, 0);

    let mut sb = root_sandbox(Vfs::new());
    sb.env("P1_VAR", "set");
    let adapted = run("p1_libc", sb);
    assert_eq!(adapted.status.as_ref().ok(), Some(&0));
    // Known adapter differences: no posix_fallocate (so the size stays);
    // a listing resumed at a cookie after a change restarts and skips n
    // entries (38 instead of 41); vectored I/O stops after the first
    // non-empty buffer (a short count, which POSIX allows).
    // Matched on the whole label of a line (the text before " -> "), so
    // "  bytes" does not also cover "  bytes are not all zero".
    let known = [
        "posix_fallocate 0..100",
        "  size",
        "seekdir(telldir) then read to the end: entries",
        "pwritev 3 iovecs at 2",
        "preadv 3 iovecs at 0",
        "  bytes",
    ];
    for (n, a) in differences(&native, &text(&adapted.stdout)) {
        let label = n
            .rsplit_once(" -> ")
            .map_or(n.as_str(), |(w, _)| w.trim_end());
        assert!(
            known.contains(&label),
            "unexpected difference: native {n:?} vs adapter {a:?}"
        );
    }
}

/// The core modules on stock wasmtime-wasi 48's own preview1 over a real
/// directory: the native transcripts agree line for line except exactly
/// the rows of the README's table of differences from stock.
#[test]
fn guests_agree_with_stock_preview1() {
    for name in EXAMPLES.iter().chain(&["fs_ops", "p1_libc"]) {
        let dir = tempfile::tempdir().unwrap();
        let (code, stock) = run_stock_p1(name, dir.path(), &[], &[], &[("P1_VAR", "set")]);
        assert_eq!(code, 0, "{name} on stock preview1:\n{stock}");
        let mut sb = native_root(Vfs::new());
        sb.env("P1_VAR", "set");
        let out = run_native(name, sb);
        assert_eq!(out.status.as_ref().ok(), Some(&0), "{name}");
        assert_agrees_with_stock(name, "preview1", &text(&out.stdout), &stock);
    }
    let host = HostileHost::new();
    let (code, stock) = host.run_stock(true);
    assert_eq!(code, 0, "{stock}");
    let mut sb = p1::Sandbox::new(host.vfs());
    sb.preopen("/", "/").unwrap();
    sb.mount(host.ro.path(), "/ro", true).unwrap();
    sb.mount(host.rw.path(), "/rw", false).unwrap();
    sb.arg(host.secret.to_str().unwrap());
    let out = run_native("hostile", sb);
    assert_agrees_with_stock("hostile", "preview1", &text(&out.stdout), &stock);
}

/// `cowvfs run` runs core modules natively by default: exact exit codes;
/// `--adapter` keeps the adapter, which reduces them to 0 or 1.
#[test]
fn cli_exit_codes_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    for code in [0, 1, 42, 255] {
        let wat = format!(
            r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") i32.const {code} call $exit unreachable))"#
        );
        let path = dir.path().join(format!("exit{code}.wasm"));
        std::fs::write(&path, wat::parse_str(&wat).unwrap()).unwrap();
        let native = cli().arg("run").arg(&path).status().unwrap();
        assert_eq!(native.code(), Some(code), "native exit {code}");
        let adapted = cli()
            .arg("run")
            .arg("--adapter")
            .arg(&path)
            .status()
            .unwrap();
        assert_eq!(
            adapted.code(),
            Some(i32::from(code != 0)),
            "adapter exit {code}"
        );
    }
}

/// `--dir HOST::/` imports the host tree and preopens it as `/`.
#[test]
fn cli_runs_workloads_natively() {
    let host = tempfile::tempdir().unwrap();
    for name in EXAMPLES {
        let out = cli()
            .arg("run")
            .arg("--dir")
            .arg(format!("{}::/", host.path().display()))
            .arg(wasm(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert_transcript(&text(&out.stdout), &ours(name));
    }
}
