//! Guests see exactly the preopens they were given, as under `wasmtime
//! run`: `tests/guests/preopens.c` prints its preopen table and the errno
//! of calls whose outcome depends on it, and its transcript under cowvfs
//! (library and CLI, adapted component and native preview1) must equal the
//! one under stock wasmtime-wasi with the same preopens. Also: everything a
//! guest holds counts against `max_open_files` (`hostile_limits.c`).

use std::path::Path;

use crate::wasi_support::*;
use cowvfs::wasi::{Sandbox, p1};
use cowvfs::{Limits, Vfs};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

fn stock_builder(name: &str, dirs: &[(&Path, &str)], out: &MemoryOutputPipe) -> WasiCtxBuilder {
    let mut b = WasiCtx::builder();
    b.args(&[format!("{name}.wasm")]).stdout(out.clone());
    for (host, guest) in dirs {
        b.preopened_dir(host, guest, FsPerms::ReadWrite).unwrap();
    }
    b
}

/// The guest as `wasmtime run` runs a component: stock wasmtime-wasi
/// preview2, through the adapter.
fn stock_p2(name: &str, dirs: &[(&Path, &str)]) -> String {
    let out = MemoryOutputPipe::new(1 << 20);
    assert_eq!(
        run_stock_ctx(name, stock_builder(name, dirs, &out).build()),
        0
    );
    text(&out.contents())
}

/// The guest as `wasmtime run` runs a core module: stock wasmtime-wasi
/// preview1.
fn stock_p1(name: &str, dirs: &[(&Path, &str)]) -> String {
    let out = MemoryOutputPipe::new(1 << 20);
    let ctx = stock_builder(name, dirs, &out).build_p1();
    assert_eq!(run_stock_p1_ctx(name, ctx), 0);
    text(&out.contents())
}

/// A host directory holding `present`, as the sandbox's contents.
fn host_box() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("present"), "hello").unwrap();
    d
}

/// The same contents at `/sandbox` of a memory tree.
fn boxed() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.create_dir("/sandbox").unwrap();
    vfs.write_file("/sandbox/present", b"hello").unwrap();
    vfs
}

fn same(what: &str, got: &str, want: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{what}: line {} differs", i + 1);
    }
    assert_eq!(got, want, "{what}");
}

#[test]
fn library_preopens_match_wasmtime() {
    let host = host_box();
    let dirs = [(host.path(), "/sandbox")];
    let want_p2 = stock_p2("preopens", &dirs);
    let want_p1 = stock_p1("preopens", &dirs);
    // What the guest checks really depends on the preopens.
    assert!(want_p2.contains("preopen fd 3: /sandbox"), "{want_p2}");
    assert!(want_p2.contains("preopens end at fd 4"), "{want_p2}");
    assert!(
        want_p2.contains("open(BOX/../etc/passwd)                              -> EPERM"),
        "{want_p2}"
    );
    assert!(want_p2.contains("read(BOX/present)"), "{want_p2}");
    assert!(want_p2.contains("too long at"), "{want_p2}");

    let mut sb = Sandbox::new(boxed());
    sb.preopen("/sandbox", "/sandbox").unwrap();
    let out = run("preopens", sb);
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    same("library, adapter", &text(&out.stdout), &want_p2);

    let mut sb = p1::Sandbox::new(boxed());
    sb.preopen("/sandbox", "/sandbox").unwrap().capture_output();
    let out = sb.run(&p1::Guest::load(engine(), &wasm("preopens")).unwrap());
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    same("library, native preview1", &text(&out.stdout), &want_p1);
    assert_eq!(out.vfs.usage().open_files, 0);
    // The guest cleaned up after itself, in the tree only.
    assert_eq!(out.vfs.read_dir("/sandbox").unwrap().len(), 1);
}

#[test]
fn no_preopens_match_wasmtime() {
    let want_p2 = stock_p2("preopens", &[]);
    let want_p1 = stock_p1("preopens", &[]);
    assert!(want_p1.starts_with("preopens end at fd 3"), "{want_p1}");
    assert!(
        want_p1.contains("shutdown(3, SHUT_RD)                                 -> EBADF"),
        "{want_p1}"
    );
    let out = run("preopens", Sandbox::new(boxed()));
    same("library, adapter", &text(&out.stdout), &want_p2);
    let mut sb = p1::Sandbox::new(boxed());
    sb.capture_output();
    let out = sb.run(&p1::Guest::load(engine(), &wasm("preopens")).unwrap());
    same("library, native preview1", &text(&out.stdout), &want_p1);
}

/// Preopens come in the order they were added, each at its own guest path.
#[test]
fn preopens_in_order() {
    let host = host_box();
    let mut vfs = boxed();
    vfs.create_dir_all("/other/dir").unwrap();
    let mut sb = p1::Sandbox::new(vfs);
    sb.preopen("/other/dir", "/z")
        .unwrap()
        .mount(host.path(), "/m", true)
        .unwrap()
        .preopen_read_only("/sandbox", "/sandbox")
        .unwrap()
        .capture_output();
    let out = sb.run(&p1::Guest::load(engine(), &wasm("preopens")).unwrap());
    let got = text(&out.stdout);
    assert!(
        got.starts_with(
            "preopen fd 3: /z (errno 0)\npreopen fd 4: /m (errno 0)\n\
             preopen fd 5: /sandbox (errno 0)\npreopens end at fd 6"
        ),
        "{got}"
    );
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;

    fn cowvfs(args: &[&str]) -> String {
        let out = cli().arg("run").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cowvfs run {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    #[test]
    fn cli_preopens_match_wasmtime() {
        let host = host_box();
        let dirs = [(host.path(), "/sandbox")];
        let want_p2 = stock_p2("preopens", &dirs);
        let want_p1 = stock_p1("preopens", &dirs);
        let module = wasm("preopens");
        let module = module.to_str().unwrap();
        let spec = format!("{}::/sandbox", host.path().display());

        // --dir: a copy in the tree, preopened at GUEST.
        same("--dir", &cowvfs(&["--dir", &spec, module]), &want_p1);
        same(
            "--dir --adapter",
            &cowvfs(&["--dir", &spec, "--adapter", module]),
            &want_p2,
        );
        // --mount: the live directory at GUEST.
        same("--mount", &cowvfs(&["--mount", &spec, module]), &want_p1);
        same(
            "--mount --adapter",
            &cowvfs(&["--mount", &spec, "--adapter", module]),
            &want_p2,
        );
        // The host directory was only ever read, or changed and restored.
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 1);

        // --preopen: a directory of a --from tree at that guest path.
        let ck = tempfile::tempdir().unwrap();
        let ck = ck.path().join("box.ck");
        boxed().snapshot().save(&ck).unwrap();
        let ck = ck.to_str().unwrap();
        same(
            "--from --preopen",
            &cowvfs(&["--from", ck, "--preopen", "/sandbox", module]),
            &want_p1,
        );
        same(
            "--from --preopen --adapter",
            &cowvfs(&["--from", ck, "--preopen", "/sandbox", "--adapter", module]),
            &want_p2,
        );

        // Nothing asked: nothing preopened, as under wasmtime.
        same("nothing", &cowvfs(&[module]), &stock_p1("preopens", &[]));
        same(
            "nothing --adapter",
            &cowvfs(&["--adapter", module]),
            &stock_p2("preopens", &[]),
        );

        // --from alone: its `/`.
        let got = cowvfs(&["--from", ck, module, "/sandbox"]);
        assert!(
            got.starts_with("preopen fd 3: / (errno 0)\npreopens end at fd 4"),
            "{got}"
        );
        assert!(got.contains("read(BOX/present)                                    -> 5 hello"));
    }

    /// Preopens come in command-line order, whatever the flags.
    #[test]
    fn cli_preopens_in_order() {
        let host = host_box();
        let ck = tempfile::tempdir().unwrap();
        let ck = ck.path().join("box.ck");
        boxed().snapshot().save(&ck).unwrap();
        let module = wasm("preopens");
        let h = host.path().display();
        let got = cowvfs(&[
            "--from",
            ck.to_str().unwrap(),
            "--preopen",
            "/sandbox",
            "--mount",
            &format!("{h}::/m:ro"),
            "--dir",
            &format!("{h}::/copy"),
            "--preopen",
            "/",
            module.to_str().unwrap(),
        ]);
        assert!(
            got.starts_with(
                "preopen fd 3: /sandbox (errno 0)\npreopen fd 4: /m (errno 0)\n\
                 preopen fd 5: /copy (errno 0)\npreopen fd 6: / (errno 0)\n\
                 preopens end at fd 7"
            ),
            "{got}"
        );
    }
}

// ----------------------------------------------------------------------
// Everything the guest holds counts against max_open_files.

const LIMIT: u32 = 16;

fn limited(host: &Path) -> (Vfs, Vec<&'static str>) {
    let mut vfs = Vfs::with_limits(Limits {
        max_open_files: LIMIT,
        ..Limits::default()
    });
    vfs.create_dir("/mem").unwrap();
    vfs.write_file("/mem/f", b"x").unwrap();
    std::fs::write(host.join("f"), "x").unwrap();
    (vfs, vec!["/mem", "/m"])
}

/// Each round stops at the limit with `err`, and a second round gets as
/// far as the first (nothing stayed held).
fn assert_bounded(got: &str, err: &str) {
    let mut rounds = 0;
    for line in got.lines() {
        let (what, rest) = line.split_once(": ").unwrap();
        let (n, e) = rest.split_once(" then ").unwrap();
        let n: u32 = n.parse().unwrap();
        assert_eq!(e, err, "{line}\n{got}");
        assert!((2..LIMIT).contains(&n), "{line}\n{got}");
        if what.ends_with("again") {
            let first = what.replace("again", "first");
            let prev = got
                .lines()
                .find(|l| l.starts_with(&format!("{first}: ")))
                .unwrap();
            assert_eq!(prev.replace("first", "again"), line, "{got}");
        }
        rounds += 1;
    }
    assert_eq!(rounds, 8, "{got}");
}

#[test]
fn held_resources_bounded_adapter() {
    let host = tempfile::tempdir().unwrap();
    let (vfs, dirs) = limited(host.path());
    let mut sb = Sandbox::new(vfs);
    sb.preopen("/mem", "/mem")
        .unwrap()
        .mount(host.path(), "/m", false)
        .unwrap();
    for d in &dirs {
        sb.arg(d);
    }
    let out = run("hostile_limits", sb);
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    // insufficient-memory is what a full table is in wasi:filesystem.
    assert_bounded(&text(&out.stdout), "ENOMEM");
    out.vfs.check_invariants().unwrap();
    assert_eq!(out.vfs.usage().open_files, 0);
}

#[test]
fn held_resources_bounded_native() {
    let host = tempfile::tempdir().unwrap();
    let (vfs, dirs) = limited(host.path());
    let mut sb = p1::Sandbox::new(vfs);
    sb.preopen("/mem", "/mem")
        .unwrap()
        .mount(host.path(), "/m", false)
        .unwrap()
        .capture_output();
    for d in &dirs {
        sb.arg(d);
    }
    let out = sb.run(&p1::Guest::load(engine(), &wasm("hostile_limits")).unwrap());
    assert_eq!(out.status.as_ref().ok(), Some(&0), "{}", text(&out.stderr));
    assert_bounded(&text(&out.stdout), "EMFILE");
    out.vfs.check_invariants().unwrap();
    assert_eq!(out.vfs.usage().open_files, 0);
}
