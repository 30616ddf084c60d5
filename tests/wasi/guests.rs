//! Real C guests (tests/guests, built by tests/guests/build.sh) against the
//! WASI layer,
//! through the library and through the `cowvfs run` binary, and against
//! stock wasmtime-wasi.

use crate::wasi_support::*;
use cowvfs::wasi::Sandbox;
use cowvfs::{ChangeKind, Vfs};

#[test]
fn workloads_through_the_library() {
    for name in EXAMPLES {
        let out = run(name, root_sandbox(Vfs::new()));
        assert_example_ran_clean(name, &out);
    }
}

/// A preopen of a subdirectory, seen by the guest under another name.
#[test]
fn workloads_at_another_root() {
    for name in EXAMPLES {
        let mut sb = Sandbox::new(boxed_vfs());
        sb.preopen("/srv/box", "/sandbox").unwrap().arg("/sandbox");
        assert_ran_at_sandbox_root(name, &run(name, sb));
    }
}

#[test]
fn workloads_through_the_cli() {
    // Core modules run on the native preview1 by default; `--adapter`
    // takes them through the component adapter and this wasi:filesystem.
    for name in EXAMPLES {
        for how in [
            &["run", "--preopen", "/"][..],
            &["run", "--preopen", "/", "--adapter"],
        ] {
            let out = cli().args(how).arg(wasm(name)).output().unwrap();
            assert!(
                out.status.success(),
                "{name} {how:?}: {}",
                text(&out.stderr)
            );
            assert_transcript(&text(&out.stdout), &ours(name));
        }
    }
}

#[test]
fn every_descriptor_method_through_the_library_and_cli() {
    let out = run("fs_ops", root_sandbox(Vfs::new()));
    assert_eq!(out.status.as_ref().ok(), Some(&0));
    assert_transcript(&text(&out.stdout), &ours("fs_ops"));
    out.vfs.check_invariants().unwrap();
    assert_eq!(out.vfs.usage().open_files, 0);

    let out = cli()
        .args(["run", "--preopen", "/", "--adapter"])
        .arg(wasm("fs_ops"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_transcript(&text(&out.stdout), &ours("fs_ops"));
}

/// Every guest with a transcript, on stock wasmtime-wasi 48 over a real
/// directory (the same adapted component): every line agrees with
/// cowvfs's expected transcript except exactly the rows of
/// the README's table of differences from stock, and the guest leaves the directory empty.
#[test]
fn guests_agree_with_stock_wasmtime_wasi() {
    for name in EXAMPLES.iter().chain(&["fs_ops"]) {
        let dir = tempfile::tempdir().unwrap();
        let (code, stock) = run_stock(name, dir.path(), &[]);
        assert_eq!(code, 0, "{name} on stock wasmtime-wasi:\n{stock}");
        let want = std::fs::read_to_string(ours(name)).unwrap();
        assert_agrees_with_stock(name, "component", &want, &stock);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{name} left {left:?} on the host");
    }
}

/// The hostile guest's transcript against stock wasmtime-wasi with the
/// same preopens: the same errors except the listed differences (stock
/// has no limits, and refuses what cowvfs allows inside the sandbox).
#[test]
fn hostile_guest_agrees_with_stock_wasmtime_wasi() {
    let host = HostileHost::new();
    let (code, stock) = host.run_stock(false);
    assert_eq!(code, 0, "{stock}");
    let want = std::fs::read_to_string(ours("hostile")).unwrap();
    assert_agrees_with_stock("hostile", "component", &want, &stock);
    host.assert_host_intact();
}

/// Everything the hostile guest tries ends in a precise errno, and neither
/// the host nor the sandbox's limits are affected.
#[test]
fn hostile_guest() {
    let host = HostileHost::new();
    let mut sb = Sandbox::new(host.vfs());
    sb.preopen("/", "/").unwrap();
    sb.mount(host.ro.path(), "/ro", true).unwrap();
    sb.mount(host.rw.path(), "/rw", false).unwrap();
    sb.arg(host.secret.to_str().unwrap());
    let out = run("hostile", sb);
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    assert_transcript(&text(&out.stdout), &ours("hostile"));

    // The host: the secret and the read-only mount untouched; the writable
    // mount holds exactly what the guest wrote there.
    host.assert_host_intact();
    let ro_names: Vec<_> = std::fs::read_dir(host.ro.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(ro_names, ["existing"]);
    host.assert_sandbox_intact(&out.vfs);
    assert!(!out.vfs.exists("/escape") && !out.vfs.exists("/t/many"));
}

#[test]
fn argv_env_and_exit_codes() {
    let mut sb = root_sandbox(Vfs::new());
    sb.arg("args")
        .arg("two words")
        .env("A", "1")
        .env("B", "x=y");
    let out = run("tool", sb);
    assert_eq!(out.status.ok(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "argv[0]=tool.wasm\nargv[1]=args\nargv[2]=two words\nenv A=1\nenv B=x=y\n"
    );

    let mut sb = root_sandbox(Vfs::new());
    sb.arg("exit").arg("3");
    // The preview1 adapter reduces every non-zero status to 1.
    assert_eq!(run("tool", sb).status.ok(), Some(1));

    let mut sb = root_sandbox(Vfs::new());
    sb.arg("trap");
    let err = run("tool", sb).status.unwrap_err();
    assert!(format!("{err:?}").contains("unreachable"), "{err:?}");

    // The CLI: argv[0] is the file name, env only from --env, the exit
    // status passes through, a trap exits non-zero with its message.
    let out = cli()
        .args(["run", "--env", "K=V"])
        .arg(wasm("tool"))
        .args(["args", "--not-ours"])
        .env("LEAK", "no")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "argv[0]=tool.wasm\nargv[1]=args\nargv[2]=--not-ours\nenv K=V\n"
    );
    let out = cli()
        .arg("run")
        .arg(wasm("tool"))
        .args(["exit", "7"])
        .output()
        .unwrap();
    // 7 itself when the module runs natively; 1 through the adapter.
    assert!(matches!(out.status.code(), Some(7 | 1)), "{:?}", out.status);
    let out = cli()
        .arg("run")
        .arg(wasm("tool"))
        .arg("trap")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(134));
    assert!(
        text(&out.stderr).contains("guest trapped"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_dir_mount_and_diff() {
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("sub")).unwrap();
    std::fs::write(host.path().join("sub/keep.txt"), "keep").unwrap();
    std::fs::write(host.path().join("gone.txt"), "gone").unwrap();
    std::os::unix::fs::symlink("sub/keep.txt", host.path().join("link")).unwrap();
    let imported = format!("{}::/app", host.path().display());

    // --dir: the guest sees a copy; its changes never reach the host.
    let out = cli()
        .args(["run", "--diff", "--dir", &imported])
        .arg(wasm("tool"))
        .args(["rm", "/app/gone.txt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "- /app/gone.txt\n");
    assert!(host.path().join("gone.txt").exists());

    let out = cli()
        .args(["run", "--diff", "--dir", &imported])
        .arg(wasm("tool"))
        .args(["write", "/app/sub/keep.txt", "changed"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "M /app/sub/keep.txt\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("sub/keep.txt")).unwrap(),
        "keep"
    );

    let out = cli()
        .args(["run", "--dir", &imported])
        .arg(wasm("tool"))
        .args(["cat", "/app/link"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "keep");

    // --mount: live, writes land on the host; :ro refuses them.
    let mount = format!("{}::/data", host.path().display());
    let out = cli()
        .args(["run", "--diff", "--mount", &mount])
        .arg(wasm("tool"))
        .args(["write", "/data/new.txt", "live"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        std::fs::read_to_string(host.path().join("new.txt")).unwrap(),
        "live"
    );
    assert_eq!(
        text(&out.stderr),
        "",
        "mount changes are not memory changes"
    );
    let out = cli()
        .args(["run", "--mount", &format!("{mount}:ro")])
        .arg(wasm("tool"))
        .args(["write", "/data/other.txt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "write /data/other.txt: EROFS\n");
    assert!(!host.path().join("other.txt").exists());
    // The mount point shows in its parent.
    let out = cli()
        .args(["run", "--preopen", "/", "--mount", &mount])
        .arg(wasm("tool"))
        .args(["ls", "/"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "data\n");

    // Limits from the command line.
    let out = cli()
        .args(["run", "--preopen", "/", "--max-inodes", "1"])
        .arg(wasm("tool"))
        .args(["write", "/f", "x"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "write /f: EDQUOT\n");
    let out = cli()
        .args(["run", "--preopen", "/", "--max-bytes", "4"])
        .arg(wasm("tool"))
        .args(["write", "/f", "hello"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "write /f: ENOSPC\n");
}

#[test]
fn cli_bad_arguments_are_one_line() {
    let bin = || {
        let mut c = cli();
        c.arg("run");
        c
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["/no/such/module.wasm"], "cannot read module"),
        (vec!["--dir", "/no/such/dir", "x.wasm"], "bad --dir"),
        (vec!["--mount", "/tmp", "x.wasm"], "bad --mount"),
        (vec!["--mount", "/no/such::/x", "x.wasm"], "bad --mount"),
        (vec!["--env", "NOEQUALS", "x.wasm"], "bad --env"),
        (vec!["--preopen", "rel", "x.wasm"], "bad --preopen"),
        (vec!["--max-bytes", "lots", "x.wasm"], "bad --max-bytes"),
        (vec!["--max-inodes", "-1", "x.wasm"], "bad --max-inodes"),
    ];
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not wasm").unwrap();
    for (args, want) in cases {
        let out = bin().args(&args).output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = bin().arg(junk.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("cowvfs: cannot compile"),
        "{}",
        text(&out.stderr)
    );
}

/// 200 sandboxes forked from one snapshot run the same guest at once on a
/// thread pool; each sees the base and only its own writes.
#[test]
fn two_hundred_forks_run_concurrently() {
    let mut base = Vfs::new();
    base.write_file("/base.txt", b"shared").unwrap();
    let snap = base.snapshot();
    let tool = guest("tool");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
        * 2;
    let results: Vec<(usize, cowvfs::Snapshot)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= 200 {
                            return mine;
                        }
                        let mut sb = root_sandbox(snap.fork());
                        sb.arg("write")
                            .arg(&format!("/out-{i}"))
                            .arg(&i.to_string());
                        let out = run_guest(&tool, sb);
                        assert_eq!(out.status.ok(), Some(0));
                        mine.push((i, out.vfs.snapshot()));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), 200);
    for (i, after) in &results {
        let changes = snap.diff(after);
        assert_eq!(changes.len(), 1, "sandbox {i}: {changes:?}");
        assert_eq!(changes[0].path(), format!("/out-{i}"));
        assert_eq!(changes[0].kind(), ChangeKind::Added);
        assert_eq!(
            after.read_file(&format!("/out-{i}")).unwrap(),
            i.to_string().as_bytes()
        );
        assert_eq!(after.read_file("/base.txt").unwrap(), b"shared");
    }
    assert_eq!(
        snap.read_dir("/").unwrap().len(),
        1,
        "the base never changes"
    );
}

/// Without its toolchain and without apt-get to install it, the guest
/// build fails and names the missing tool and the command that installs
/// it (it never succeeds without building).
#[test]
fn guest_build_names_a_missing_tool() {
    let bin = tempfile::tempdir().unwrap();
    // Only the basic tools the script needs: no clang-19, no apt-get.
    for tool in [
        "bash",
        "dirname",
        "mkdir",
        "flock",
        "paste",
        "cat",
        "cut",
        "grep",
        "basename",
        "sha256sum",
        "head",
        "rm",
        "mv",
    ] {
        let path = String::from_utf8(
            std::process::Command::new("bash")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::os::unix::fs::symlink(path.trim(), bin.path().join(tool)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let res = std::process::Command::new(bin.path().join("bash"))
        .arg(crate::wasi_support::repo().join("tests/guests/build.sh"))
        .arg(out.path())
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let err = text(&res.stderr);
    assert!(!res.status.success(), "{err}");
    assert!(err.contains("missing clang-19"), "{err}");
    assert!(
        err.contains("apt-get install -y clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32"),
        "{err}"
    );
    assert!(!out.path().join("fs_ops.wasm").exists());
}
