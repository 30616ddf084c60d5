//! The parent cache (`tree/parents.rs`) as callers see it: once a
//! directory's path is cached, every change that makes the path walk
//! elsewhere (a rename or removal of a directory on it, a symlink in its
//! place, a lower name limit) is seen by the next resolution, and a
//! snapshot or fork resolves by its own tree.

use crate::error::ErrorKind;
use crate::tree::{Base, Resolved};
use crate::{Limits, Vfs};

/// Resolves `/a/b/x` until the parent path is cached (the first walk sets
/// the hint, the second checks it and records the path, the third hits).
fn warm(v: &mut Vfs) {
    warm_to(v, b"old");
}

fn tree() -> Vfs {
    let mut v = Vfs::new();
    v.create_dir_all("/a/b").unwrap();
    v.write_file("/a/b/x", b"old").unwrap();
    v
}

#[test]
fn a_renamed_directory_is_seen() {
    let mut v = tree();
    warm(&mut v);
    v.rename("/a/b", "/a/moved").unwrap();
    assert!(!v.tree.parent_cache_hits("/a/b/x"), "a rename empties it");
    assert_eq!(
        v.read_file("/a/b/x").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    v.create_dir("/a/b").unwrap();
    v.write_file("/a/b/x", b"new").unwrap();
    assert_eq!(v.read_file("/a/b/x").unwrap(), b"new");
    assert_eq!(v.read_file("/a/moved/x").unwrap(), b"old");
    v.check_invariants().unwrap();
}

#[test]
fn a_directory_renamed_over_an_empty_one_is_seen() {
    let mut v = tree();
    v.create_dir("/a/c").unwrap();
    v.write_file("/a/c/x", b"c").unwrap();
    warm(&mut v);
    v.remove_file("/a/b/x").unwrap();
    // `/a/b` is empty now: `/a/c` may replace it.
    v.rename("/a/c", "/a/b").unwrap();
    assert_eq!(v.read_file("/a/b/x").unwrap(), b"c");
    v.check_invariants().unwrap();
}

#[test]
fn a_removed_directory_and_a_symlink_in_its_place_are_seen() {
    let mut v = tree();
    v.create_dir_all("/elsewhere").unwrap();
    v.write_file("/elsewhere/x", b"there").unwrap();
    warm(&mut v);
    v.remove_file("/a/b/x").unwrap();
    v.remove_dir("/a/b").unwrap();
    assert!(!v.tree.parent_cache_hits("/a/b/x"), "a removal empties it");
    assert_eq!(
        v.metadata("/a/b/x").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    v.symlink("/elsewhere", "/a/b").unwrap();
    assert_eq!(v.read_file("/a/b/x").unwrap(), b"there");
    // And back: a directory again, through the cache's path.
    v.remove_file("/a/b").unwrap();
    v.create_dir("/a/b").unwrap();
    v.write_file("/a/b/x", b"again").unwrap();
    warm_to(&v, b"again");
    v.check_invariants().unwrap();
}

fn warm_to(v: &Vfs, want: &[u8]) {
    for _ in 0..3 {
        assert_eq!(v.read_file("/a/b/x").unwrap(), want);
    }
    assert!(v.tree.parent_cache_hits("/a/b/x"), "the cache is warm");
}

#[test]
fn a_lower_name_limit_refuses_a_cached_path() {
    let mut v = Vfs::new();
    v.create_dir_all("/a/longer-name").unwrap();
    v.write_file("/a/longer-name/x", b"1").unwrap();
    for _ in 0..3 {
        v.metadata("/a/longer-name/x").unwrap();
    }
    assert!(v.tree.parent_cache_hits("/a/longer-name/x"));
    v.set_limits(Limits {
        max_name_len: 4,
        ..Limits::default()
    });
    assert_eq!(
        v.metadata("/a/longer-name/x").unwrap_err().kind(),
        ErrorKind::NameTooLong
    );
}

#[test]
fn snapshots_and_forks_resolve_by_their_own_tree() {
    let mut v = tree();
    warm(&mut v);
    let snap = v.snapshot();
    let mut fork = snap.fork();
    assert!(
        !fork.tree.parent_cache_hits("/a/b/x"),
        "a fork starts empty"
    );
    warm(&mut fork);
    // The original moves its directory; the snapshot and fork keep theirs.
    v.rename("/a/b", "/a/moved").unwrap();
    v.create_dir("/a/b").unwrap();
    v.write_file("/a/b/x", b"mine").unwrap();
    for _ in 0..3 {
        assert_eq!(v.read_file("/a/b/x").unwrap(), b"mine");
        assert_eq!(snap.read_file("/a/b/x").unwrap(), b"old");
        assert_eq!(fork.read_file("/a/b/x").unwrap(), b"old");
    }
    // The fork changes on its own.
    fork.remove_file("/a/b/x").unwrap();
    fork.remove_dir("/a/b").unwrap();
    assert_eq!(
        fork.read_file("/a/b/x").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(snap.read_file("/a/b/x").unwrap(), b"old");
    v.check_invariants().unwrap();
    fork.check_invariants().unwrap();
}

#[test]
fn paths_that_differ_only_in_spelling_resolve_alike() {
    let mut v = tree();
    warm(&mut v);
    for p in ["/a//b/x", "a/b/x", "/a/./b/x", "/a/b/../b/x", "/a/b/x"] {
        assert_eq!(v.read_file(p).unwrap(), b"old", "{p}");
    }
    v.write_file("/a/b/y", b"y").unwrap();
    assert_eq!(v.read_file("/a/b/y").unwrap(), b"y");
    v.check_invariants().unwrap();
}

#[test]
fn a_repeated_path_resolves_as_a_cold_walk_does() {
    let mut v = tree();
    v.create_dir_all("/a/b/d").unwrap();
    v.create_dir_all("/a/c").unwrap();
    v.write_file("/t", b"t").unwrap();
    v.symlink("x", "/a/b/l").unwrap();
    v.symlink("d", "/a/b/dl").unwrap();
    v.symlink("../../t", "/a/b/up").unwrap();
    // A second name: the inode's first link is `/a/b/x`, not this one.
    v.hard_link("/a/b/x", "/a/c/h").unwrap();
    let paths = [
        "/a/b/x",
        "/a/b/d",
        "/a/b/l",
        "/a/b/dl",
        "/a/b/up",
        "/a/c/h",
        "/a/b/none",
        "/a/b/x/",
        "/a/b/d/.",
        "/a/b/d/..",
        "/a//b/x",
        "a/b/x",
        "/a/c/x",
    ];
    let mut hinted = Vec::new();
    for p in paths {
        for follow in [false, true] {
            // The first resolution sets the hints, the second records
            // the parent path; from the third on the hints may answer.
            for _ in 0..3 {
                let _ = v.tree.resolve(Base::Root, p, follow);
            }
            if v.tree.resolves_hinted(p, follow) {
                hinted.push((p, follow));
            }
            // What a resolution tells the operation after it (the
            // directory's mode is read only by some ways there).
            let seen = |r: Resolved| {
                (
                    r.dir,
                    r.name.map(|n| n.to_name()),
                    r.ino,
                    r.kind,
                    r.must_dir,
                )
            };
            let warm = v.tree.resolve(Base::Root, p, follow);
            let cold = v.tree.cold().resolve(Base::Root, p, follow);
            match (warm, cold) {
                (Ok(w), Ok(c)) => {
                    assert_eq!(seen(w), seen(c), "{p} follow {follow}");
                }
                (Err(w), Err(c)) => assert_eq!(w.kind(), c.kind(), "{p} follow {follow}"),
                (w, c) => panic!("{p} follow {follow}: {w:?} against {c:?}"),
            }
        }
    }
    // The hints answer a file, a directory and a symlink not followed;
    // never a symlink to follow or a name that is not the first link.
    for want in [
        ("/a/b/x", true),
        ("/a/b/d", true),
        ("/a/b/l", false),
        ("/a/b/up", false),
    ] {
        assert!(hinted.contains(&want), "{want:?} in {hinted:?}");
    }
    for never in [
        ("/a/b/l", true),
        ("/a/b/up", true),
        ("/a/c/h", false),
        ("/a/c/h", true),
    ] {
        assert!(!hinted.contains(&never), "{never:?} in {hinted:?}");
    }
}
