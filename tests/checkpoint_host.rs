//! Host import/export: a host tree goes into the engine and comes back out
//! identical (content, kinds, symlink targets, hard links, modes, mtimes).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use cowvfs::{ErrorKind, Vfs, hostdir};

fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A small tree with every kind of object the engine keeps.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/hello.txt"), b"hello world\n").unwrap();
    fs::write(root.join("a/b/empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("a/b/big.bin"), &big).unwrap();
    // Sparse: data, a long hole, data.
    let f = fs::File::create(root.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", 5 << 20).unwrap();
    f.set_len((5 << 20) + 100).unwrap();
    drop(f);
    fs::hard_link(root.join("a/hello.txt"), root.join("a/b/c/hello-link")).unwrap();
    symlink("../hello.txt", root.join("a/b/rel-link")).unwrap();
    symlink("/etc/does-not-exist", root.join("dangling")).unwrap();
    fs::write(root.join("exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("ro"), b"read only").unwrap();
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::create_dir(root.join("locked")).unwrap();
    fs::write(root.join("locked/inside"), b"x").unwrap();
    for (i, p) in [
        "a/hello.txt",
        "a/b/empty",
        "a/b/big.bin",
        "sparse",
        "a/b/rel-link",
        "dangling",
        "exec.sh",
        "ro",
        "locked/inside",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64, 123_456_789);
    }
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
    for (i, d) in ["a/b/c", "a/b", "a", "locked", ""].iter().enumerate() {
        set_mtime(&root.join(d), 1_500_000_000 + i as i64, 5);
    }
}

/// Walks a host tree into (relative path, kind, mode, mtime, target) rows.
/// `diff -r --no-dereference` finds no difference between `a` and `b`.
fn assert_same_on_disk(a: &Path, b: &Path) {
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff found: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut work = vec![root.to_path_buf()];
    while let Some(d) = work.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        let rel = d.strip_prefix(root).unwrap().display().to_string();
        let ft = m.file_type();
        let extra = if ft.is_symlink() {
            format!("-> {}", fs::read_link(&d).unwrap().display())
        } else if ft.is_file() {
            format!("size {} nlink {}", m.len(), m.nlink())
        } else {
            String::new()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.push(format!(
            "{rel} {:?} {mode:o} {}.{} {extra}",
            if ft.is_dir() {
                "d"
            } else if ft.is_symlink() {
                "l"
            } else {
                "f"
            },
            m.mtime(),
            m.mtime_nsec()
        ));
        if ft.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                work.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn import_export_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    sample_tree(&src);
    let before = describe(&src);

    let mut vfs = Vfs::new();
    let stats = hostdir::import_dir(&mut vfs, &src, "/imported").unwrap();
    assert_eq!(stats.files, 7);
    assert_eq!(stats.hard_links, 1);
    assert_eq!(stats.symlinks, 2);
    assert_eq!(stats.dirs, 5);
    vfs.check_invariants().unwrap();
    assert_eq!(describe(&src), before, "import must not touch the host");

    let snap = vfs.snapshot();
    assert_eq!(
        snap.read_file("/imported/a/b/c/hello-link").unwrap(),
        b"hello world\n"
    );
    assert_eq!(snap.metadata("/imported/a/hello.txt").unwrap().nlink, 2);
    assert_eq!(
        snap.read_link("/imported/dangling").unwrap(),
        "/etc/does-not-exist"
    );
    let sparse = snap.metadata("/imported/sparse").unwrap();
    assert_eq!(sparse.len, (5 << 20) + 100);
    assert!(sparse.held < 200_000, "holes stay holes: {}", sparse.held);
    assert_eq!(snap.metadata("/imported/locked").unwrap().mode, 0o555);

    let out = tmp.path().join("out");
    let estats = hostdir::export_dir(&snap, "/imported", &out).unwrap();
    assert_eq!(estats, stats);
    assert_eq!(describe(&out), before);
    assert_same_on_disk(&src, &out);
    assert_eq!(
        fs::metadata(out.join("a/hello.txt")).unwrap().ino(),
        fs::metadata(out.join("a/b/c/hello-link")).unwrap().ino()
    );

    // Re-importing the export gives the same root hash.
    let mut again = Vfs::new();
    hostdir::import_dir(&mut again, &out, "/imported").unwrap();
    assert_eq!(again.root_hash(), vfs.root_hash());
    // Read-only directories would stop the test's cleanup.
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(out.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn export_refuses_non_empty_target_and_leaves_nothing_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.create_dir_all("/d/e").unwrap();
    vfs.write_file("/d/e/f", b"data").unwrap();
    let snap = vfs.snapshot();

    let full = tmp.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), b"mine").unwrap();
    let e = hostdir::export_dir(&snap, "/d", &full).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("not empty"), "{e}");
    assert_eq!(fs::read(full.join("keep")).unwrap(), b"mine");

    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert_eq!(
        hostdir::export_dir(&snap, "/d", &file).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );

    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    hostdir::export_dir(&snap, "/d", &empty).unwrap();
    assert_eq!(fs::read(empty.join("e/f")).unwrap(), b"data");

    // A guest path that is not a directory.
    let e = hostdir::export_dir(&snap, "/d/e/f", &tmp.path().join("x")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotADirectory);
    assert!(!tmp.path().join("x").exists());
    // Nothing temporary left behind.
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn import_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    let e = hostdir::import_dir(&mut vfs, &tmp.path().join("missing"), "/x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("missing"), "{e}");
    let f = tmp.path().join("file");
    fs::write(&f, b"x").unwrap();
    let e = hostdir::import_dir(&mut vfs, &f, "/x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotADirectory);

    // A FIFO is refused by name.
    let d = tmp.path().join("withfifo");
    fs::create_dir(&d).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let e = hostdir::import_dir(&mut vfs, &d, "/y").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("pipe"), "{e}");

    // Limits apply to imports like to any write.
    let mut small = Vfs::with_limits(cowvfs::Limits {
        max_bytes: 1000,
        ..cowvfs::Limits::default()
    });
    let d2 = tmp.path().join("big");
    fs::create_dir(&d2).unwrap();
    fs::write(d2.join("f"), vec![1u8; 5000]).unwrap();
    assert_eq!(
        hostdir::import_dir(&mut small, &d2, "/")
            .unwrap_err()
            .kind(),
        ErrorKind::NoSpace
    );
}

#[test]
fn sync_keeps_unchanged_objects_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    sample_tree(&src);
    let mut vfs = Vfs::new();
    hostdir::import_dir(&mut vfs, &src, "/").unwrap();
    let base = vfs.snapshot();

    // Nothing changed: syncing changes nothing at all.
    let mut same = base.fork();
    hostdir::sync_dir(&mut same, &src, "/").unwrap();
    assert!(base.diff(&same.snapshot()).is_empty());
    assert_eq!(same.root_hash(), base.root_hash());

    // Change, add, remove, retype; the diff names exactly those paths.
    fs::write(src.join("a/hello.txt"), b"HELLO world\n").unwrap();
    fs::write(src.join("new"), b"new").unwrap();
    fs::remove_file(src.join("dangling")).unwrap();
    fs::remove_file(src.join("exec.sh")).unwrap();
    fs::create_dir(src.join("exec.sh")).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("a/b/big.bin"))
        .unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"patch", 100_000).unwrap();
    drop(f);
    let mut v = base.fork();
    hostdir::sync_dir(&mut v, &src, "/").unwrap();
    v.check_invariants().unwrap();
    let changed: Vec<String> = base
        .diff(&v.snapshot())
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changed,
        [
            "M /a/b/big.bin",
            "M /a/b/c/hello-link",
            "M /a/hello.txt",
            "- /dangling",
            "M /exec.sh",
            "+ /new"
        ]
    );
    // Only the touched chunk of the big file was copied.
    assert!(v.usage().allocated_bytes < 200_000, "{:?}", v.usage());
    // And the result equals a fresh import.
    let mut fresh = Vfs::new();
    hostdir::import_dir(&mut fresh, &src, "/").unwrap();
    assert_eq!(fresh.root_hash(), v.root_hash());
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The Python standard library's directory, as python3 reports it. python3
/// is on every machine of this project; without it the test fails (it
/// cannot do its job) and says how to install it.
fn python_stdlib() -> std::path::PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()[\"stdlib\"])",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install it with: apt-get install -y python3")
        });
    assert!(
        out.status.success(),
        "python3 cannot name its stdlib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        p.is_dir(),
        "python3's stdlib {} is not a directory",
        p.display()
    );
    p
}

/// A real tree: a Python standard library through import, checkpoint,
/// load and export, compared with `diff -r`.
#[test]
fn python_stdlib_round_trip() {
    let src = python_stdlib();
    let tmp = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::with_limits(cowvfs::Limits::unlimited());
    let stats = hostdir::import_dir(&mut vfs, &src, "/lib")
        .unwrap_or_else(|e| panic!("cannot import {}: {e}", src.display()));
    assert!(stats.files > 100, "{stats:?}");
    let snap = vfs.snapshot();
    let ck = tmp.path().join("py.ck");
    snap.save(&ck).unwrap();
    let loaded = cowvfs::Snapshot::load(&ck).unwrap();
    assert_eq!(loaded.root_hash(), snap.root_hash());
    loaded.check_invariants().unwrap();
    let lazy = cowvfs::Snapshot::open(&ck).unwrap();
    let out = tmp.path().join("out");
    hostdir::export_dir(&lazy, "/lib", &out).unwrap();
    assert_same_on_disk(&src, &out);
    assert_eq!(describe(&src), describe(&out));
}
