//! Inode-number reuse (`tree/numbers.rs`) as snapshots, forks, diffs and
//! merges see it: a number any clone of the tree has seen never comes back
//! as another object, a number no clone has seen does, and a descriptor
//! never reaches a new object through an old number.

use crate::error::ErrorKind;
use crate::{Action, ChangeKind, MergeOptions, OpenOptions, Snapshot, Vfs};

fn ino(v: &Vfs, path: &str) -> u64 {
    v.metadata(path).unwrap().ino
}

fn changes(old: &Snapshot, new: &Snapshot) -> Vec<(String, ChangeKind)> {
    old.diff(new)
        .into_iter()
        .map(|c| (c.path().to_string(), c.kind()))
        .collect()
}

#[test]
fn numbers_made_since_the_last_snapshot_come_back() {
    let mut v = Vfs::new();
    v.write_file("/keep", b"k").unwrap();
    let _s = v.snapshot();
    v.write_file("/a", b"1").unwrap();
    let a = ino(&v, "/a");
    v.remove_file("/a").unwrap();
    v.write_file("/b", b"2").unwrap();
    assert_eq!(ino(&v, "/b"), a, "a number no clone saw is reused");
    assert_eq!(v.read_file("/b").unwrap(), b"2");
    v.check_invariants().unwrap();
}

#[test]
fn a_snapshot_never_sees_a_number_reused() {
    let mut v = Vfs::new();
    v.write_file("/old", b"old").unwrap();
    let old = ino(&v, "/old");
    let s1 = v.snapshot();
    v.remove_file("/old").unwrap();
    v.write_file("/new", b"new").unwrap();
    assert_ne!(ino(&v, "/new"), old);
    // The same name again is a new object too.
    v.write_file("/old", b"again").unwrap();
    assert_ne!(ino(&v, "/old"), old);
    v.remove_file("/old").unwrap();
    let s2 = v.snapshot();
    assert_eq!(
        changes(&s1, &s2),
        vec![
            ("/new".to_string(), ChangeKind::Added),
            ("/old".to_string(), ChangeKind::Removed),
        ]
    );
    assert_eq!(s1.read_file("/old").unwrap(), b"old");
    assert_eq!(s1.metadata("/old").unwrap().ino, old);
    v.check_invariants().unwrap();
}

#[test]
fn a_number_made_then_snapshotted_is_not_reused() {
    let mut v = Vfs::new();
    let s0 = v.snapshot();
    v.write_file("/t", b"t").unwrap();
    let t = ino(&v, "/t");
    let s1 = v.snapshot();
    v.remove_file("/t").unwrap();
    v.write_file("/u", b"u").unwrap();
    assert_ne!(ino(&v, "/u"), t, "s1 knows /t by its number");
    let s2 = v.snapshot();
    assert_eq!(
        changes(&s1, &s2),
        vec![
            ("/t".to_string(), ChangeKind::Removed),
            ("/u".to_string(), ChangeKind::Added),
        ]
    );
    assert_eq!(
        changes(&s0, &s2),
        vec![("/u".to_string(), ChangeKind::Added)]
    );
}

#[test]
fn a_fork_never_reuses_its_base_numbers() {
    let mut v = Vfs::new();
    v.write_file("/f", b"base").unwrap();
    let base = v.snapshot();
    let f = base.metadata("/f").unwrap().ino;

    // Ours deletes /f and creates /g: /g must not take /f's number, or
    // the merge would see /f moved to /g and modified.
    let mut ours = base.fork();
    ours.remove_file("/f").unwrap();
    ours.write_file("/g", b"ours").unwrap();
    assert_ne!(ino(&ours, "/g"), f);
    let mut theirs = base.fork();
    theirs.write_file("/f", b"theirs").unwrap();

    let m = Snapshot::merge(
        &base,
        &ours.snapshot(),
        &theirs.snapshot(),
        &MergeOptions::new(),
    )
    .unwrap();
    let c = m.conflicts();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].path(), "/f");
    assert_eq!(
        (c[0].ours(), c[0].theirs()),
        (Action::Deleted, Action::Modified)
    );
}

#[test]
fn a_merge_sees_fresh_numbers_reused_only_before_a_snapshot() {
    let base = {
        let mut v = Vfs::new();
        v.write_file("/f", b"base").unwrap();
        v.snapshot()
    };
    let mut ours = base.fork();
    ours.write_file("/n1", b"one").unwrap();
    let n1 = ino(&ours, "/n1");
    let _seen = ours.snapshot();
    ours.remove_file("/n1").unwrap();
    ours.write_file("/n2", b"two").unwrap();
    assert_ne!(ino(&ours, "/n2"), n1);
    ours.write_file("/n3", b"three").unwrap();
    let n3 = ino(&ours, "/n3");
    ours.remove_file("/n3").unwrap();
    ours.write_file("/n4", b"four").unwrap();
    assert_eq!(ino(&ours, "/n4"), n3, "unseen since the snapshot");
    let mut theirs = base.fork();
    theirs.write_file("/t", b"t").unwrap();

    let m = Snapshot::merge(
        &base,
        &ours.snapshot(),
        &theirs.snapshot(),
        &MergeOptions::new(),
    )
    .unwrap();
    assert!(m.is_clean(), "{:?}", m.conflicts());
    let s = m.into_snapshot().unwrap();
    for (p, want) in [
        ("/f", &b"base"[..]),
        ("/n2", b"two"),
        ("/n4", b"four"),
        ("/t", b"t"),
    ] {
        assert_eq!(s.read_file(p).unwrap(), want, "{p}");
    }
    assert!(!s.exists("/n1") && !s.exists("/n3"));
    s.check_invariants().unwrap();
}

#[test]
fn a_descriptor_keeps_its_number_from_reuse() {
    let mut v = Vfs::new();
    // A directory removed while a descriptor holds it goes at once, but
    // its number must not name a new object the descriptor would reach.
    v.create_dir("/d").unwrap();
    let d = ino(&v, "/d");
    let mut o = OpenOptions::new();
    o.read(true).directory(true);
    let dfd = v.open("/d", &o).unwrap();
    v.remove_dir("/d").unwrap();
    v.create_dir("/e").unwrap();
    v.write_file("/e/x", b"x").unwrap();
    assert_ne!(ino(&v, "/e"), d);
    assert_ne!(ino(&v, "/e/x"), d);
    let err = v
        .metadata_at(dfd, "x", crate::Symlinks::Follow)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // An unlinked file held open keeps its number until the last close.
    v.write_file("/o", b"open").unwrap();
    let o_ino = ino(&v, "/o");
    let mut r = OpenOptions::new();
    r.read(true);
    let fd = v.open("/o", &r).unwrap();
    v.remove_file("/o").unwrap();
    v.write_file("/p", b"p").unwrap();
    assert_ne!(ino(&v, "/p"), o_ino);
    let mut buf = [0u8; 4];
    assert_eq!(v.read_at(fd, &mut buf, 0).unwrap(), 4);
    assert_eq!(&buf, b"open");
    v.close(fd).unwrap();
    v.write_file("/q", b"q").unwrap();
    assert_eq!(ino(&v, "/q"), o_ino, "free again after the last close");
    v.close(dfd).unwrap();
    v.check_invariants().unwrap();
}
