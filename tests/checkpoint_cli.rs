//! The `cowvfs checkpoint` commands, run as a user would.
#![cfg(feature = "cli")]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn cowvfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cowvfs"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Fails with exactly one line on stderr naming the problem.
fn fails(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
}

fn tree(root: &Path) {
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("etc/app/config"), b"debug = false\n").unwrap();
    fs::write(root.join("big"), vec![7u8; 200_000]).unwrap();
    std::os::unix::fs::symlink("etc/app/config", root.join("cfg")).unwrap();
    fs::hard_link(root.join("big"), root.join("big2")).unwrap();
}

#[test]
fn import_info_ls_cat_export_verify() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let ck = t.path().join("a.ck");
    ok(&cowvfs(&[&"checkpoint", &"import", &src, &ck]));

    let info = ok(&cowvfs(&[&"checkpoint", &"info", &ck]));
    assert!(info.contains("format version: 2"), "{info}");
    assert!(info.contains("files:          2"), "{info}");
    assert!(info.contains("symlinks:       1"), "{info}");
    assert!(info.contains("parent hash:    none"), "{info}");

    let ls = ok(&cowvfs(&[&"checkpoint", &"ls", &ck]));
    assert_eq!(ls, "big\nbig2\ncfg\netc\n");
    let ls = ok(&cowvfs(&[&"checkpoint", &"ls", &ck, &"/", &"-l"]));
    assert!(ls.contains("lrwxrwxrwx"), "{ls}");
    assert!(ls.contains("cfg -> etc/app/config"), "{ls}");
    assert!(ls.contains("  2       200000"), "{ls}");
    assert_eq!(
        ok(&cowvfs(&[&"checkpoint", &"cat", &ck, &"/cfg"])),
        "debug = false\n"
    );

    let out = t.path().join("out");
    ok(&cowvfs(&[&"checkpoint", &"export", &ck, &out]));
    let d = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&out)
        .status()
        .unwrap();
    assert!(d.success());
    let v = ok(&cowvfs(&[&"checkpoint", &"verify", &ck]));
    assert!(v.starts_with("ok "), "{v}");
}

#[test]
fn deltas_need_their_parents() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let (a, b, c) = (
        t.path().join("a.ck"),
        t.path().join("b.ck"),
        t.path().join("c.ck"),
    );
    ok(&cowvfs(&[&"checkpoint", &"import", &src, &a]));
    fs::write(src.join("etc/app/config"), b"debug = true\n").unwrap();
    ok(&cowvfs(&[
        &"checkpoint",
        &"import",
        &src,
        &b,
        &"--parent",
        &a,
    ]));
    fs::write(src.join("new"), b"n").unwrap();
    ok(&cowvfs(&[
        &"checkpoint",
        &"import",
        &src,
        &c,
        &"--parent",
        &b,
        &"--parent",
        &a,
    ]));
    assert!(fs::metadata(&b).unwrap().len() < 1000);

    let info = ok(&cowvfs(&[&"checkpoint", &"info", &c]));
    assert!(!info.contains("parent hash:    none"), "{info}");
    let diff = ok(&cowvfs(&[
        &"checkpoint",
        &"diff",
        &a,
        &c,
        &"--parent",
        &a,
        &"--parent",
        &b,
    ]));
    // Streamed in depth-first order (memory O(depth)), not sorted.
    let mut lines: Vec<&str> = diff.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["+ /new", "M /etc/app/config"]);
    assert_eq!(
        ok(&cowvfs(&[
            &"checkpoint",
            &"cat",
            &c,
            &"/cfg",
            &"--parent",
            &a,
            &"--parent",
            &b
        ])),
        "debug = true\n"
    );
    ok(&cowvfs(&[
        &"checkpoint",
        &"verify",
        &c,
        &"--parent",
        &b,
        &"--parent",
        &a,
    ]));

    fails(&cowvfs(&[&"checkpoint", &"cat", &c, &"/cfg"]), "--parent");
    fails(
        &cowvfs(&[&"checkpoint", &"cat", &c, &"/cfg", &"--parent", &a]),
        "--parent",
    );
    let out = t.path().join("out");
    fails(&cowvfs(&[&"checkpoint", &"export", &b, &out]), "--parent");
    assert!(!out.exists());
}

#[test]
fn bad_input_gives_one_line_and_no_output() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let ck = t.path().join("a.ck");
    ok(&cowvfs(&[&"checkpoint", &"import", &src, &ck]));

    fails(
        &cowvfs(&[&"checkpoint", &"info", &t.path().join("missing.ck")]),
        "missing.ck",
    );
    fails(&cowvfs(&[&"checkpoint", &"verify", &t.path()]), "directory");
    fails(
        &cowvfs(&[
            &"checkpoint",
            &"import",
            &t.path().join("nodir"),
            &t.path().join("x.ck"),
        ]),
        "nodir",
    );
    assert!(!t.path().join("x.ck").exists());

    // Corrupt: a flipped byte in the data, and a truncated file.
    let mut bytes = fs::read(&ck).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    let bad = t.path().join("bad.ck");
    fs::write(&bad, &bytes).unwrap();
    fails(&cowvfs(&[&"checkpoint", &"verify", &bad]), "corrupt");
    let out = t.path().join("out");
    fails(&cowvfs(&[&"checkpoint", &"export", &bad, &out]), "corrupt");
    assert!(!out.exists());
    fs::write(&bad, &bytes[..n / 3]).unwrap();
    fails(&cowvfs(&[&"checkpoint", &"info", &bad]), "corrupt");
    fails(&cowvfs(&[&"checkpoint", &"ls", &bad]), "corrupt");

    // An export target that exists and is not empty.
    fs::create_dir(&out).unwrap();
    fs::write(out.join("mine"), b"keep").unwrap();
    fails(&cowvfs(&[&"checkpoint", &"export", &ck, &out]), "not empty");
    assert_eq!(fs::read(out.join("mine")).unwrap(), b"keep");

    // A path that is not there.
    fails(&cowvfs(&[&"checkpoint", &"cat", &ck, &"/nope"]), "/nope");
}

#[test]
fn info_into_a_closed_pipe_exits_quietly() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_cowvfs"))
        .args(["checkpoint", "info", "tests/data/v1-small.ck"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before cowvfs writes: like `| head -0`.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
}
