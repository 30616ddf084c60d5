//! Host hazards around import, export, sync and stores: objects swapped
//! under a walk, huge sparse files, setuid bits, symlinks planted in an
//! export, very deep trees, and store objects that are not what they
//! claim. Each ends in a clear error (or the safe result), quickly.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cowvfs::hostdir::{self, ExportOptions};
use cowvfs::{ErrorKind, Limits, Vfs};

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `secs` (a hang before the fix must fail, not stall the suite).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("took more than {secs}s"))
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_import_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/inner"), "inner").unwrap();
    let d = src.path().join("d");
    let target = outside.path().to_path_buf();
    let mut vfs = Vfs::new();
    let mut swapped = false;
    // `d` is met (and made in the tree) before it is listed: swap it then.
    let res = hostdir::import_dir_with(&mut vfs, src.path(), "/in", &mut |s| {
        if s.dirs == 2 && !swapped {
            swapped = true;
            std::fs::rename(&d, d.with_file_name("d.moved")).unwrap();
            std::os::unix::fs::symlink(&target, &d).unwrap();
        }
    });
    assert!(swapped);
    let err = res.expect_err("a swapped directory must not be followed");
    assert!(
        err.to_string().contains("changed while being imported"),
        "{err}"
    );
    assert!(vfs.read_file("/in/d/secret").is_err());
}

/// A directory above one already listed is swapped for a symlink to an
/// outside tree of the same shape while the walk is inside it. The walk
/// must go on reading the directories it opened, not paths that now lead
/// outside: import and sync both end with the original contents.
#[test]
fn a_parent_swapped_for_a_symlink_below_a_listed_directory_leads_nowhere() {
    type Walk = fn(
        &mut Vfs,
        &Path,
        &str,
        &mut dyn FnMut(&hostdir::ImportStats),
    ) -> cowvfs::Result<hostdir::ImportStats>;
    let walks: [(&str, Walk); 2] = [
        ("import", hostdir::import_dir_with),
        ("sync", hostdir::sync_dir_with),
    ];
    for (what, walk) in walks {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("e")).unwrap();
        std::fs::write(outside.path().join("e/a"), "host a").unwrap();
        std::fs::write(outside.path().join("e/shadow"), "host secret").unwrap();
        std::fs::create_dir(outside.path().join("e/sub")).unwrap();
        std::fs::write(outside.path().join("e/sub/x"), "host x").unwrap();
        std::os::unix::fs::symlink("/", outside.path().join("e/link")).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("d/e/sub")).unwrap();
        std::fs::write(src.path().join("d/e/a"), "a").unwrap();
        std::fs::write(src.path().join("d/e/shadow"), "mine").unwrap();
        std::fs::write(src.path().join("d/e/sub/x"), "x").unwrap();
        std::os::unix::fs::symlink("a", src.path().join("d/e/link")).unwrap();
        let d = src.path().join("d");
        let target = outside.path().to_path_buf();
        let mut vfs = Vfs::new();
        let mut swapped = false;
        // The first file met is `d/e/a`: `d` and `e` are open and listed.
        let res = walk(&mut vfs, src.path(), "/in", &mut |s| {
            if s.files == 1 && !swapped {
                swapped = true;
                std::fs::rename(&d, d.with_file_name("d.moved")).unwrap();
                std::os::unix::fs::symlink(&target, &d).unwrap();
            }
        });
        assert!(swapped, "{what}");
        res.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(vfs.read_file("/in/d/e/a").unwrap(), b"a", "{what}");
        assert_eq!(vfs.read_file("/in/d/e/shadow").unwrap(), b"mine", "{what}");
        assert_eq!(vfs.read_file("/in/d/e/sub/x").unwrap(), b"x", "{what}");
        assert_eq!(vfs.read_link("/in/d/e/link").unwrap(), "a", "{what}");
    }
}

#[test]
fn a_huge_sparse_file_is_refused_at_once() {
    let src = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(src.path().join("huge")).unwrap();
    // 8 TiB of holes: over the default 4 TiB file-size limit.
    f.set_len(8 << 40).unwrap();
    drop(f);
    let dir = src.path().to_path_buf();
    let err = within(20, move || {
        let mut vfs = Vfs::new();
        hostdir::import_dir(&mut vfs, &dir, "/in").unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::FileTooLarge, "{err}");
    assert!(err.to_string().contains("file-size limit"), "{err}");
}

#[test]
fn a_sparse_file_within_limits_reads_only_its_data() {
    let src = tempfile::tempdir().unwrap();
    let p = src.path().join("sparse");
    let f = std::fs::File::create(&p).unwrap();
    // 2 TiB long, a few bytes of data at 1 TiB and at the end.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"middle", 1 << 40).unwrap();
    f.write_all_at(b"end", (2 << 40) - 3).unwrap();
    drop(f);
    let dir = src.path().to_path_buf();
    let vfs = within(30, move || {
        let mut vfs = Vfs::new();
        hostdir::import_dir(&mut vfs, &dir, "/in").unwrap();
        vfs
    });
    let m = vfs.metadata("/in/sparse").unwrap();
    assert_eq!(m.len, 2 << 40);
    let mut vfs = vfs;
    let fd = vfs
        .open("/in/sparse", cowvfs::OpenOptions::new().read(true))
        .unwrap();
    let mut buf = [0u8; 6];
    vfs.read_at(fd, &mut buf, 1 << 40).unwrap();
    assert_eq!(&buf, b"middle");
    vfs.read_at(fd, &mut buf[..3], (2 << 40) - 3).unwrap();
    assert_eq!(&buf[..3], b"end");
    vfs.read_at(fd, &mut buf, 12345).unwrap();
    assert_eq!(buf, [0; 6]);
    assert!(vfs.usage().held_bytes < 1 << 20);
}

#[test]
fn export_drops_setuid_setgid_and_sticky_unless_asked() {
    let mut vfs = Vfs::new();
    vfs.write_file("/suid", b"#!/bin/sh\n").unwrap();
    vfs.set_permissions("/suid", 0o4755).unwrap();
    vfs.create_dir_all("/sticky").unwrap();
    vfs.set_permissions("/sticky", 0o1777).unwrap();
    let snap = vfs.snapshot();
    let out = tempfile::tempdir().unwrap();
    let plain = out.path().join("plain");
    hostdir::export_dir(&snap, "/", &plain).unwrap();
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&plain.join("suid")), 0o755);
    assert_eq!(mode(&plain.join("sticky")), 0o777);
    let kept = out.path().join("kept");
    let opts = ExportOptions {
        keep_special_bits: true,
    };
    hostdir::export_dir_opts(&snap, "/", &kept, opts, &mut |_| {}).unwrap();
    assert_eq!(mode(&kept.join("suid")), 0o4755);
    assert_eq!(mode(&kept.join("sticky")), 0o1777);
}

#[test]
fn a_symlink_planted_in_an_export_redirects_nothing() {
    let mut vfs = Vfs::new();
    vfs.create_dir_all("/d").unwrap();
    vfs.write_file("/d/payload", b"written by the tree")
        .unwrap();
    let snap = vfs.snapshot();
    let victim = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("export");
    let tmp = out
        .path()
        .join(format!(".export.cowvfs-export-{}", std::process::id()));
    let victim_path = victim.path().to_path_buf();
    let mut planted = false;
    // `d` is made before it is filled: a racing process swaps it for a
    // symlink to a victim directory in between.
    let res = hostdir::export_dir_with(&snap, "/", &dest, &mut |s| {
        if s.dirs == 2 && !planted {
            planted = true;
            std::fs::remove_dir(tmp.join("d")).unwrap();
            std::os::unix::fs::symlink(&victim_path, tmp.join("d")).unwrap();
        }
    });
    assert!(planted);
    assert!(res.is_err(), "the export must fail, not follow the symlink");
    assert!(
        !victim.path().join("payload").exists(),
        "wrote through the symlink"
    );
    assert!(!dest.exists());
    assert!(!tmp.exists(), "the partial export was left behind");
}

#[test]
fn export_writes_the_tree_through_descriptors() {
    // The whole kind of tree an export must reproduce, symlinks pointing
    // anywhere included: they are made, never followed.
    let mut vfs = Vfs::new();
    vfs.create_dir_all("/a/b").unwrap();
    vfs.write_file("/a/b/f", b"data").unwrap();
    vfs.hard_link("/a/b/f", "/a/g").unwrap();
    vfs.symlink("/etc", "/a/etc").unwrap();
    vfs.symlink("../..", "/a/b/up").unwrap();
    vfs.set_permissions("/a/b", 0o500).unwrap();
    let snap = vfs.snapshot();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x");
    let stats = hostdir::export_dir(&snap, "/", &dest).unwrap();
    assert_eq!((stats.files, stats.hard_links, stats.symlinks), (1, 1, 2));
    assert_eq!(std::fs::read(dest.join("a/g")).unwrap(), b"data");
    assert_eq!(
        std::fs::read_link(dest.join("a/etc")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(
        std::fs::metadata(dest.join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o500
    );
    std::fs::set_permissions(dest.join("a/b"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn sync_removes_a_5000_deep_tree_on_a_small_stack() {
    let limits = Limits {
        max_path_len: 20_000,
        ..Limits::default()
    };
    let mut vfs = Vfs::with_limits(limits);
    let mut p = String::from("/gone");
    for _ in 0..5000 {
        p.push_str("/a");
    }
    vfs.create_dir_all(&p).unwrap();
    vfs.write_file(&format!("{p}/leaf"), b"x").unwrap();
    vfs.write_file("/kept", b"k").unwrap();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("kept"), "k").unwrap();
    let dir = host_dir.path().to_path_buf();
    // A small stack: removal must not recurse once per level.
    let vfs = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            hostdir::sync_dir(&mut vfs, &dir, "/").unwrap();
            vfs
        })
        .unwrap()
        .join()
        .unwrap();
    let names: Vec<String> = vfs
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name.into())
        .collect();
    assert_eq!(names, ["kept"]);
    vfs.check_invariants().unwrap();
}

mod store_objects {
    use super::*;
    use cowvfs::store::{BlobStore, DirStore, MAX_CHUNK_OBJECT, MAX_MANIFEST_OBJECT};

    fn store() -> (tempfile::TempDir, DirStore, blake3::Hash) {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let addr = blake3::hash(b"some chunk");
        let p = store.chunk_path(&addr);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        (dir, store, addr)
    }

    fn chunk_err(store: DirStore, addr: blake3::Hash) -> cowvfs::Error {
        within(10, move || {
            store.get_chunks(&[addr]).expect_err("must refuse")
        })
    }

    #[test]
    fn a_symlinked_chunk_is_not_followed() {
        let (_d, store, addr) = store();
        let elsewhere = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(elsewhere.path(), b"some chunk").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), store.chunk_path(&addr)).unwrap();
        let err = chunk_err(store.clone(), addr);
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("symlink"), "{err}");
        // Nor counted as present.
        assert_eq!(store.has_chunks(&[addr]).unwrap(), [false]);
    }

    #[test]
    fn a_fifo_chunk_does_not_block() {
        let (_d, store, addr) = store();
        let st = std::process::Command::new("mkfifo")
            .arg(store.chunk_path(&addr))
            .status()
            .unwrap();
        assert!(st.success());
        let err = chunk_err(store, addr);
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn an_oversized_chunk_object_is_refused() {
        let (_d, store, addr) = store();
        std::fs::write(
            store.chunk_path(&addr),
            vec![7u8; MAX_CHUNK_OBJECT as usize + 1],
        )
        .unwrap();
        let err = chunk_err(store, addr);
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    #[test]
    fn an_oversized_manifest_is_refused_without_reading_it() {
        let (d, store, _) = store();
        let root = blake3::hash(b"root");
        let p = d.path().join("manifests").join(root.to_hex().as_str());
        // Sparse: refused by its size, not read.
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_MANIFEST_OBJECT + 1).unwrap();
        let err = within(10, move || {
            store.get_manifest(&root).expect_err("must refuse")
        });
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("more than the"), "{err}");
    }
}
