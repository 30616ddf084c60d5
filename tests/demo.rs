//! `cowvfs demo` runs end to end (small sizes) and its checks pass.
#![cfg(all(feature = "wasi", feature = "cli"))]

use std::process::Command;

/// Runs `cowvfs demo` with 40 sandboxes and checks their isolation;
/// returns what it printed.
fn run_demo(files: usize, big_mib: usize) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cowvfs"))
        .args(["demo", "--sandboxes", "40", "--files"])
        .arg(files.to_string())
        .arg("--big-mib")
        .arg(big_mib.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(
        text.contains("40 of 40 sandboxes read back exactly their own"),
        "{text}"
    );
    text
}

#[test]
fn demo_runs_and_checks_pass() {
    let text = run_demo(300, 3);
    assert!(text.contains("1. Base image"), "{text}");
    assert!(text.contains("unchanged after all runs: yes"), "{text}");
    assert!(text.contains("root hashes match: yes"), "{text}");
    assert!(text.contains("matches step 1: yes"), "{text}");
    assert!(text.contains("modified /app/notes/note.txt"), "{text}");
}

#[test]
fn demo_cli_rejects_bad_arguments() {
    for args in [
        &["demo", "--sandboxes", "2"][..],
        &["demo", "--big-mib", "0"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cowvfs"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(args[1]), "{err}");
    }
}

/// A base larger than a fork's private-byte quota (256 MiB by default):
/// the demo builds it under raised limits and forks it with the defaults.
#[test]
fn demo_base_may_exceed_a_forks_private_quota() {
    run_demo(10, 300);
}
