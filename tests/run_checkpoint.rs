//! `cowvfs run --from CK [--parent P]... --save OUT [--delta]`: start a
//! sandbox from a checkpoint and save what the guest left.
#![cfg(feature = "wasi")]

use std::path::Path;
use std::process::{Command, Output};

/// The guest `cowvfs demo` runs in every sandbox.
const DEMO_GUEST_WAT: &str = include_str!("../src/cli/demo/guest.wat");

fn cowvfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cowvfs"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn one_line_error(out: Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn run_from_a_checkpoint_and_save_a_delta_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("app/notes")).unwrap();
    std::fs::create_dir_all(host.join("app/data")).unwrap();
    std::fs::write(host.join("app/notes/note.txt"), "base\n").unwrap();
    std::fs::write(host.join("app/data/blob.bin"), vec![1u8; 2 << 20]).unwrap();
    let guest = tmp.path().join("note.wasm");
    std::fs::write(&guest, wat::parse_str(DEMO_GUEST_WAT).unwrap()).unwrap();
    let guest = guest.to_str().unwrap();

    ok(cowvfs(&[
        "checkpoint",
        "import",
        host.to_str().unwrap(),
        &p("base.ck"),
    ]));
    ok(cowvfs(&[
        "run",
        "--from",
        &p("base.ck"),
        "--save",
        &p("one.ck"),
        "--delta",
        guest,
        "first",
    ]));
    // A delta holds the touched chunk and the note, not the 2 MiB file.
    let size = std::fs::metadata(p("one.ck")).unwrap().len();
    assert!(size < 200_000, "delta is {size} bytes");
    // A chain: start from the delta (with its parent), save another delta.
    ok(cowvfs(&[
        "run",
        "--from",
        &p("one.ck"),
        "--parent",
        &p("base.ck"),
        "--save",
        &p("two.ck"),
        "--delta",
        guest,
        "second",
    ]));
    let cat = |ck: &str, parents: &[&str]| {
        let mut args = vec!["checkpoint", "cat", ck, "/app/notes/note.txt"];
        for par in parents {
            args.extend(["--parent", par]);
        }
        ok(cowvfs(&args))
    };
    assert_eq!(cat(&p("base.ck"), &[]), "base\n");
    assert_eq!(cat(&p("one.ck"), &[&p("base.ck")]), "first");
    assert_eq!(cat(&p("two.ck"), &[&p("one.ck"), &p("base.ck")]), "second");

    // A full save needs no parent.
    ok(cowvfs(&[
        "run",
        "--from",
        &p("one.ck"),
        "--parent",
        &p("base.ck"),
        "--save",
        &p("full.ck"),
        guest,
        "third",
    ]));
    assert_eq!(cat(&p("full.ck"), &[]), "third");

    // Missing parent, --delta without --from, bad --from: one clear line.
    let err = one_line_error(cowvfs(&["run", "--from", &p("one.ck"), guest, "x"]));
    assert!(err.contains("one.ck"), "{err}");
    one_line_error(cowvfs(&[
        "run",
        "--save",
        &p("x.ck"),
        "--delta",
        guest,
        "x",
    ]));
    one_line_error(cowvfs(&["run", "--from", &p("missing.ck"), guest, "x"]));
    assert!(!Path::new(&p("x.ck")).exists());
}

/// `--from` is checked against the run's own limits: a checkpoint over
/// `--max-inodes` or `--max-bytes` is refused before the guest runs, not
/// loaded under the defaults and frozen.
#[test]
fn from_obeys_the_runs_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    // What the demo guest opens, and 20 files more.
    std::fs::create_dir_all(host.join("app/notes")).unwrap();
    std::fs::create_dir_all(host.join("app/data")).unwrap();
    std::fs::write(host.join("app/notes/note.txt"), "base\n").unwrap();
    std::fs::write(host.join("app/data/blob.bin"), vec![1u8; 64 << 10]).unwrap();
    for i in 0..20 {
        std::fs::write(host.join(format!("app/data/f{i}")), vec![i as u8 + 1; 4096]).unwrap();
    }
    let ck = tmp.path().join("base.ck");
    let ck = ck.to_str().unwrap();
    ok(cowvfs(&[
        "checkpoint",
        "import",
        host.to_str().unwrap(),
        ck,
    ]));
    let guest = tmp.path().join("note.wasm");
    std::fs::write(&guest, wat::parse_str(DEMO_GUEST_WAT).unwrap()).unwrap();
    let guest = guest.to_str().unwrap();

    let err = one_line_error(cowvfs(&[
        "run",
        "--from",
        ck,
        "--max-inodes",
        "10",
        guest,
        "first",
    ]));
    assert!(err.contains("cannot open --from"), "{err}");
    assert!(err.contains("inodes"), "{err}");
    let err = one_line_error(cowvfs(&[
        "run",
        "--from",
        ck,
        "--max-bytes",
        "16K",
        guest,
        "first",
    ]));
    assert!(err.contains("cannot open --from"), "{err}");
    // Within the limits it runs.
    ok(cowvfs(&[
        "run",
        "--from",
        ck,
        "--max-inodes",
        "100",
        guest,
        "first",
    ]));
}
