//! The demo runs end to end (small sizes) and its checks pass.
#![cfg(feature = "wasi")]

use cowvfs::demo::{DemoConfig, run};

/// Runs the demo with 40 sandboxes and checks their isolation; returns
/// what it printed.
fn run_demo(files: usize, big_file: usize) -> String {
    let mut out = Vec::new();
    let cfg = DemoConfig {
        files,
        big_file,
        sandboxes: 40,
    };
    run(cfg, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("40 of 40 sandboxes read back exactly their own"),
        "{text}"
    );
    text
}

#[test]
fn demo_runs_and_checks_pass() {
    let text = run_demo(300, 3 << 20);
    assert!(text.contains("root hashes match: yes"), "{text}");
    assert!(text.contains("matches step 1: yes"), "{text}");
    assert!(text.contains("modified /app/notes/note.txt"), "{text}");
}

#[test]
fn demo_cli_rejects_bad_arguments() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cowvfs"))
        .args(["demo", "--sandboxes", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--sandboxes"), "{err}");
}

/// A base larger than a fork's private-byte quota (256 MiB by default):
/// the demo builds it under raised limits and forks it with the defaults.
#[test]
fn demo_base_may_exceed_a_forks_private_quota() {
    run_demo(10, 300 << 20);
}
