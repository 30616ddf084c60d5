//! Three-way merge of snapshots (`Snapshot::merge`): a test per rule in
//! docs/DESIGN.md "Merge", a model-based property test (two forks of a
//! random base run random operations; disjoint changes merge into what
//! running one sequence after the other makes, in either order; otherwise
//! every conflict is reported and no change outside one is lost), and the
//! `cowvfs checkpoint merge` command run as a user would.

use cowvfs::{
    Action, CHUNK_SIZE, ConflictKind, ConflictPolicy, ErrorKind, Limits, Merge, MergeOptions,
    OpenOptions, Resolution, SetTime, Snapshot, Timestamp, Vfs,
};

fn opts(p: ConflictPolicy) -> MergeOptions {
    MergeOptions::new().policy(p)
}

/// Merges and checks what every merge must hold: the result passes the
/// invariants, and `Fail` gives no tree exactly when something conflicts.
fn merge(base: &Snapshot, ours: &Vfs, theirs: &Vfs, p: ConflictPolicy) -> Merge {
    let m = Snapshot::merge(base, &ours.snapshot(), &theirs.snapshot(), &opts(p)).unwrap();
    match m.snapshot() {
        Some(s) => s.check_invariants().unwrap(),
        None => assert!(p == ConflictPolicy::Fail && !m.is_clean()),
    }
    if p == ConflictPolicy::Fail && !m.is_clean() {
        assert!(m.snapshot().is_none());
    }
    m
}

fn clean(base: &Snapshot, ours: &Vfs, theirs: &Vfs) -> Snapshot {
    let m = merge(base, ours, theirs, ConflictPolicy::Fail);
    assert!(m.is_clean(), "unexpected conflicts: {:?}", m.conflicts());
    m.into_snapshot().unwrap()
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::new(secs, 0).unwrap()
}

fn base_with(f: impl FnOnce(&mut Vfs)) -> Snapshot {
    let mut v = Vfs::new();
    f(&mut v);
    v.snapshot()
}

#[test]
fn different_paths_combine() {
    let base = base_with(|v| {
        v.create_dir_all("/app/lib").unwrap();
        v.write_file("/app/a", b"a").unwrap();
        v.write_file("/app/b", b"b").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.write_file("/app/a", b"ours").unwrap();
    o.create_dir_all("/app/lib/pkg-one").unwrap();
    o.write_file("/app/lib/pkg-one/x", b"1").unwrap();
    t.remove_file("/app/b").unwrap();
    t.create_dir_all("/app/lib/pkg-two").unwrap();
    t.write_file("/app/lib/pkg-two/y", b"2").unwrap();
    let s = clean(&base, &o, &t);
    assert_eq!(s.read_file("/app/a").unwrap(), b"ours");
    assert!(!s.exists("/app/b"));
    assert_eq!(s.read_file("/app/lib/pkg-one/x").unwrap(), b"1");
    assert_eq!(s.read_file("/app/lib/pkg-two/y").unwrap(), b"2");
    assert_eq!(s.metadata("/app/lib").unwrap().nlink, 4);
    // The same changes made in one tree hash the same.
    let mut seq = o.snapshot().fork();
    seq.remove_file("/app/b").unwrap();
    seq.create_dir_all("/app/lib/pkg-two").unwrap();
    seq.write_file("/app/lib/pkg-two/y", b"2").unwrap();
    assert_eq!(s.root_hash(), seq.root_hash());
}

#[test]
fn no_change_and_one_sided_change() {
    let base = base_with(|v| v.write_file("/f", b"x").unwrap());
    let (o, mut t) = (base.fork(), base.fork());
    assert_eq!(clean(&base, &o, &t).root_hash(), base.root_hash());
    t.write_file("/g", b"y").unwrap();
    assert_eq!(clean(&base, &o, &t).root_hash(), t.root_hash());
    assert_eq!(clean(&base, &t, &o).root_hash(), t.root_hash());
}

#[test]
fn rename_vs_edit() {
    let base = base_with(|v| {
        v.create_dir_all("/src").unwrap();
        v.create_dir_all("/dst").unwrap();
        v.write_file("/src/main.py", b"print(1)\n").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.rename("/src/main.py", "/dst/app.py").unwrap();
    t.write_file("/src/main.py", b"print(2)\n").unwrap();
    for (a, b) in [(&o, &t), (&t, &o)] {
        let s = clean(&base, a, b);
        assert_eq!(s.read_file("/dst/app.py").unwrap(), b"print(2)\n");
        assert!(!s.exists("/src/main.py"));
    }
}

#[test]
fn move_dir_vs_fill_it() {
    let base = base_with(|v| {
        v.create_dir_all("/work/build").unwrap();
        v.write_file("/work/build/old", b"o").unwrap();
        v.create_dir_all("/archive").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.rename("/work/build", "/archive/build-1").unwrap();
    t.write_file("/work/build/new", b"n").unwrap();
    t.create_dir_all("/work/build/sub/deeper").unwrap();
    let s = clean(&base, &o, &t);
    assert!(!s.exists("/work/build"));
    assert_eq!(s.read_file("/archive/build-1/new").unwrap(), b"n");
    assert_eq!(s.read_file("/archive/build-1/old").unwrap(), b"o");
    assert!(s.metadata("/archive/build-1/sub/deeper").unwrap().is_dir());
}

#[test]
fn delete_vs_edit_each_policy() {
    let base = base_with(|v| v.write_file("/conf", b"v1").unwrap());
    let (mut o, mut t) = (base.fork(), base.fork());
    o.remove_file("/conf").unwrap();
    t.write_file("/conf", b"v2").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts().len(), 1);
    let c = &m.conflicts()[0];
    assert_eq!(c.kind(), ConflictKind::DeleteModify);
    assert_eq!(
        (c.path(), c.ours(), c.theirs()),
        ("/conf", Action::Deleted, Action::Modified)
    );
    assert_eq!(c.resolution(), &Resolution::Unresolved);
    let err = m.into_snapshot().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert!(!s.exists("/conf"));
    let m = merge(&base, &o, &t, ConflictPolicy::Theirs);
    assert_eq!(m.conflicts()[0].resolution(), &Resolution::Theirs);
    assert_eq!(
        m.into_snapshot().unwrap().read_file("/conf").unwrap(),
        b"v2"
    );
    // Keep-both keeps the edit: nothing else is left to keep.
    let s = merge(&base, &o, &t, ConflictPolicy::KeepBoth)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.read_file("/conf").unwrap(), b"v2");
}

#[test]
fn type_change_vs_edit() {
    let base = base_with(|v| v.write_file("/a", b"file").unwrap());
    let (mut o, mut t) = (base.fork(), base.fork());
    o.remove_file("/a").unwrap();
    o.create_dir("/a").unwrap();
    o.write_file("/a/inside", b"i").unwrap();
    t.write_file("/a", b"edited").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert!(
        m.conflicts().iter().any(|c| c.path() == "/a"),
        "{:?}",
        m.conflicts()
    );
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.read_file("/a/inside").unwrap(), b"i");
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.read_file("/a").unwrap(), b"edited");
    let m = merge(&base, &o, &t, ConflictPolicy::KeepBoth);
    let s = m.snapshot().unwrap();
    assert_eq!(s.read_file("/a/inside").unwrap(), b"i");
    assert_eq!(s.read_file("/a.theirs").unwrap(), b"edited");
}

#[test]
fn dir_delete_vs_file_creation_inside() {
    let base = base_with(|v| {
        v.create_dir_all("/tmp/cache").unwrap();
        v.write_file("/tmp/cache/old", b"o").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.remove_file("/tmp/cache/old").unwrap();
    o.remove_dir("/tmp/cache").unwrap();
    t.write_file("/tmp/cache/new", b"n").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts().len(), 1, "{:?}", m.conflicts());
    let c = &m.conflicts()[0];
    assert_eq!(
        (c.kind(), c.path()),
        (ConflictKind::DeleteModify, "/tmp/cache/new")
    );
    assert_eq!(c.theirs(), Action::Added);
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert!(!s.exists("/tmp/cache"));
    // Theirs keeps its new file, and so the directory; ours' deletion of
    // the old file stands.
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.read_file("/tmp/cache/new").unwrap(), b"n");
    assert!(!s.exists("/tmp/cache/old"));
}

#[test]
fn same_change_on_both_sides_is_no_conflict() {
    let base = base_with(|v| {
        v.write_file("/f", b"old").unwrap();
        v.write_file("/gone", b"x").unwrap();
        v.write_file("/moved", b"m").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    for v in [&mut o, &mut t] {
        v.write_file("/f", b"new").unwrap();
        v.remove_file("/gone").unwrap();
        v.rename("/moved", "/moved-to").unwrap();
        v.set_permissions("/f", 0o600).unwrap();
        v.create_dir_all("/made/by/both").unwrap();
        v.write_file("/made/by/both/file", b"same").unwrap();
        v.symlink("/f", "/link").unwrap();
    }
    t.write_file("/made/by/only-theirs", b"t").unwrap();
    let s = clean(&base, &o, &t);
    assert_eq!(s.read_file("/f").unwrap(), b"new");
    assert_eq!(s.metadata("/f").unwrap().mode, 0o600);
    assert!(!s.exists("/gone") && !s.exists("/moved"));
    assert_eq!(s.read_file("/moved-to").unwrap(), b"m");
    assert_eq!(s.read_file("/made/by/both/file").unwrap(), b"same");
    assert_eq!(s.read_file("/made/by/only-theirs").unwrap(), b"t");
    assert_eq!(s.read_link("/link").unwrap(), "/f");
}

fn big_base(chunks: usize) -> Snapshot {
    base_with(|v| {
        let data: Vec<u8> = (0..chunks * CHUNK_SIZE)
            .map(|i| (i / CHUNK_SIZE) as u8 + 1)
            .collect();
        v.write_file("/big", &data).unwrap();
    })
}

fn write_at(v: &mut Vfs, path: &str, off: u64, data: &[u8]) {
    let fd = v.open(path, OpenOptions::new().write(true)).unwrap();
    v.write_at(fd, data, off).unwrap();
    v.close(fd).unwrap();
}

#[test]
fn disjoint_chunk_edits_to_one_big_file() {
    let base = big_base(8);
    let (mut o, mut t) = (base.fork(), base.fork());
    write_at(&mut o, "/big", 10, b"OURS");
    write_at(&mut t, "/big", 5 * CHUNK_SIZE as u64 + 3, b"THEIRS");
    // Different records of one chunk merge too.
    write_at(&mut o, "/big", 2 * CHUNK_SIZE as u64, b"rec-o");
    write_at(&mut t, "/big", 2 * CHUNK_SIZE as u64 + 100, b"rec-t");
    // One side appends; the other only edits inside.
    write_at(&mut t, "/big", 8 * CHUNK_SIZE as u64, b"appended");
    let s = clean(&base, &o, &t);
    let got = s.read_file("/big").unwrap();
    let mut want = base.read_file("/big").unwrap();
    want[10..14].copy_from_slice(b"OURS");
    let at = 5 * CHUNK_SIZE + 3;
    want[at..at + 6].copy_from_slice(b"THEIRS");
    let at = 2 * CHUNK_SIZE;
    want[at..at + 5].copy_from_slice(b"rec-o");
    want[at + 100..at + 105].copy_from_slice(b"rec-t");
    want.extend_from_slice(b"appended");
    assert!(got == want, "merged bytes differ");
    // Untouched chunks are shared, not copied.
    assert_eq!(s.usage().held_bytes, o.snapshot().usage().held_bytes + 8);
}

#[test]
fn overlapping_edits_report_byte_ranges() {
    let base = big_base(4);
    let (mut o, mut t) = (base.fork(), base.fork());
    write_at(&mut o, "/big", 100, &[0xAA; 50]);
    write_at(&mut t, "/big", 120, &[0xBB; 50]);
    write_at(&mut o, "/big", 3 * CHUNK_SIZE as u64, b"xy");
    write_at(&mut t, "/big", 3 * CHUNK_SIZE as u64, b"zy");
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts().len(), 1);
    let c = &m.conflicts()[0];
    assert_eq!(c.kind(), ConflictKind::Content);
    let c3 = 3 * CHUNK_SIZE as u64;
    assert_eq!(c.ranges(), &[120..150, c3..c3 + 1]);
    assert!(c.to_string().contains("bytes 120..150"), "{c}");
    let want_range = |s: &Snapshot, who: u8| {
        let b = s.read_file("/big").unwrap();
        assert_eq!(&b[100..120], &[0xAA; 20]);
        assert_eq!(&b[120..150], &[who; 30]);
        assert_eq!(&b[150..170], &[0xBB; 20]);
    };
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    want_range(&s, 0xAA);
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    want_range(&s, 0xBB);
    let m = merge(&base, &o, &t, ConflictPolicy::KeepBoth);
    assert_eq!(
        m.conflicts()[0].resolution(),
        &Resolution::Both {
            beside: "/big.theirs".into()
        }
    );
    let s = m.into_snapshot().unwrap();
    want_range(&s, 0xAA);
    assert_eq!(
        s.read_file("/big.theirs").unwrap(),
        t.read_file("/big").unwrap()
    );
}

#[test]
fn size_changes_must_agree() {
    let base = big_base(2);
    let (mut o, mut t) = (base.fork(), base.fork());
    o.truncate("/big", 1000).unwrap();
    t.truncate("/big", 2000).unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts()[0].kind(), ConflictKind::Size);
    assert_eq!(m.conflicts()[0].ranges().to_vec(), vec![(1000..2000)]);
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.metadata("/big").unwrap().len, 2000);
    // A cut on one side and an edit before it on the other combine; an
    // edit past the cut conflicts.
    let (mut o, mut t) = (base.fork(), base.fork());
    o.truncate("/big", 1000).unwrap();
    write_at(&mut t, "/big", 10, b"kept");
    let s = clean(&base, &o, &t);
    assert_eq!(s.metadata("/big").unwrap().len, 1000);
    assert_eq!(&s.read_file("/big").unwrap()[10..14], b"kept");
    write_at(&mut t, "/big", 5000, b"lost");
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts()[0].ranges().first(), Some(&(5000..5004)));
}

#[test]
fn add_add_conflict_each_policy() {
    let base = base_with(|_| {});
    let (mut o, mut t) = (base.fork(), base.fork());
    o.write_file("/README", b"ours").unwrap();
    t.write_file("/README", b"theirs").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    let c = &m.conflicts()[0];
    assert_eq!(
        (c.kind(), c.ours(), c.theirs()),
        (ConflictKind::Name, Action::Added, Action::Added)
    );
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.read_file("/README").unwrap(), b"ours");
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.read_file("/README").unwrap(), b"theirs");
    let m = merge(&base, &o, &t, ConflictPolicy::KeepBoth);
    assert_eq!(
        m.conflicts()[0].resolution(),
        &Resolution::Both {
            beside: "/README.theirs".into()
        }
    );
    let s = m.into_snapshot().unwrap();
    assert_eq!(s.read_file("/README").unwrap(), b"ours");
    assert_eq!(s.read_file("/README.theirs").unwrap(), b"theirs");
}

#[test]
fn directory_moved_two_ways_and_into_each_other() {
    let base = base_with(|v| {
        v.create_dir_all("/a").unwrap();
        v.create_dir_all("/b").unwrap();
        v.create_dir_all("/x/y").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.rename("/x", "/a/x").unwrap();
    t.rename("/x", "/b/x").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts()[0].kind(), ConflictKind::Moved);
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert!(s.exists("/a/x/y") && !s.exists("/b/x"));
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert!(s.exists("/b/x/y") && !s.exists("/a/x"));

    let (mut o, mut t) = (base.fork(), base.fork());
    o.rename("/a", "/b/a").unwrap();
    t.rename("/b", "/a/b").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert!(!m.is_clean());
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert!(s.metadata("/b/a").unwrap().is_dir());
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert!(s.metadata("/a/b").unwrap().is_dir());
}

#[test]
fn hard_links_follow_the_inode() {
    let base = base_with(|v| {
        v.write_file("/data", b"v1").unwrap();
        v.create_dir("/d").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.hard_link("/data", "/d/alias").unwrap();
    t.write_file("/data", b"v2").unwrap();
    let s = clean(&base, &o, &t);
    assert_eq!(s.read_file("/d/alias").unwrap(), b"v2");
    assert_eq!(s.metadata("/data").unwrap().nlink, 2);
    assert_eq!(
        s.metadata("/data").unwrap().ino,
        s.metadata("/d/alias").unwrap().ino
    );
    // One side unlinks a name, the other adds one: both hold.
    let base = s;
    let (mut o, mut t) = (base.fork(), base.fork());
    o.remove_file("/d/alias").unwrap();
    t.hard_link("/data", "/third").unwrap();
    let s = clean(&base, &o, &t);
    assert!(!s.exists("/d/alias"));
    assert_eq!(s.metadata("/third").unwrap().nlink, 2);
}

#[test]
fn symlinks_are_names() {
    let base = base_with(|v| {
        v.write_file("/target", b"t").unwrap();
        v.symlink("/target", "/ln").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.rename("/ln", "/ln2").unwrap();
    t.write_file("/target", b"changed").unwrap();
    let s = clean(&base, &o, &t);
    assert_eq!(s.read_link("/ln2").unwrap(), "/target");
    assert_eq!(s.read_file("/ln2").unwrap(), b"changed");
    // Retargeting is a replacement: both retargeting differently conflicts.
    let (mut o, mut t) = (base.fork(), base.fork());
    o.remove_file("/ln").unwrap();
    o.symlink("/a", "/ln").unwrap();
    t.remove_file("/ln").unwrap();
    t.symlink("/b", "/ln").unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts()[0].kind(), ConflictKind::Name);
}

#[test]
fn permissions_merge_three_ways() {
    let base = base_with(|v| {
        v.write_file("/f", b"x").unwrap();
        v.write_file("/g", b"x").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    o.set_permissions("/f", 0o600).unwrap();
    t.write_file("/f", b"y").unwrap();
    o.set_permissions("/g", 0o600).unwrap();
    t.set_permissions("/g", 0o640).unwrap();
    let m = merge(&base, &o, &t, ConflictPolicy::Fail);
    assert_eq!(m.conflicts().len(), 1);
    assert_eq!(
        (m.conflicts()[0].kind(), m.conflicts()[0].path()),
        (ConflictKind::Mode, "/g")
    );
    let s = merge(&base, &o, &t, ConflictPolicy::Ours)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.metadata("/f").unwrap().mode, 0o600);
    assert_eq!(s.read_file("/f").unwrap(), b"y");
    assert_eq!(s.metadata("/g").unwrap().mode, 0o600);
    let s = merge(&base, &o, &t, ConflictPolicy::Theirs)
        .into_snapshot()
        .unwrap();
    assert_eq!(s.metadata("/g").unwrap().mode, 0o640);
}

#[test]
fn newer_mtime_wins_when_content_merges() {
    let base = base_with(|v| {
        v.write_file("/f", &vec![1u8; 3 * CHUNK_SIZE]).unwrap();
        v.write_file("/g", b"g").unwrap();
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    write_at(&mut o, "/f", 0, b"o");
    write_at(&mut t, "/f", 2 * CHUNK_SIZE as u64, b"t");
    let old = SetTime::At(ts(1_000));
    let new = SetTime::At(ts(2_000));
    o.set_times("/f", old, new).unwrap();
    t.set_times("/f", old, old).unwrap();
    // Only theirs touched /g's times: theirs' times.
    t.set_times("/g", new, old).unwrap();
    let s = clean(&base, &o, &t);
    assert_eq!(s.metadata("/f").unwrap().mtime, ts(2_000));
    assert_eq!(s.metadata("/g").unwrap().mtime, ts(1_000));
    assert_eq!(s.metadata("/g").unwrap().atime, ts(2_000));
}

#[test]
fn limits_hold_and_bad_input_is_refused() {
    let base = base_with(|v| v.write_file("/f", b"x").unwrap());
    let mut o = base.fork_with_limits(Limits {
        max_inodes: 4,
        ..Limits::default()
    });
    let mut t = base.fork();
    o.write_file("/o1", b"1").unwrap();
    o.write_file("/o2", b"2").unwrap();
    t.write_file("/t1", b"1").unwrap();
    t.write_file("/t2", b"2").unwrap();
    let err =
        Snapshot::merge(&base, &o.snapshot(), &t.snapshot(), &MergeOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    // A tree that is not a fork of the base is refused.
    let mut other = Vfs::new();
    other.create_dir("/f").unwrap();
    other.create_dir_all("/x/y/z").unwrap();
    let err = Snapshot::merge(
        &base,
        &other.snapshot(),
        &t.snapshot(),
        &MergeOptions::new(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn merged_tree_forks_and_merges_again() {
    let base = base_with(|v| v.write_file("/f", b"0").unwrap());
    let (mut o, mut t) = (base.fork(), base.fork());
    o.write_file("/o", b"o").unwrap();
    t.write_file("/t", b"t").unwrap();
    let m1 = clean(&base, &o, &t);
    let (mut a, mut b) = (m1.fork(), m1.fork());
    a.write_file("/t", b"t2").unwrap();
    b.rename("/t", "/t-renamed").unwrap();
    b.write_file("/new", b"n").unwrap();
    let m2 = clean(&m1, &a, &b);
    assert_eq!(m2.read_file("/t-renamed").unwrap(), b"t2");
    assert_eq!(m2.read_file("/new").unwrap(), b"n");
    let mut f = m2.fork();
    f.write_file("/after", b"a").unwrap();
    f.check_invariants().unwrap();
}

// ---------------------------------------------------------------------
// The model-based property test (the oracle is shared with the fuzz
// target `fuzz/fuzz_targets/merge.rs`).

#[path = "merge_model/mod.rs"]
mod model;

use model::Op;
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
        .prop_map(|c| format!("/{}", c.join("/")))
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..8),
        (any::<u8>(), 1usize..70_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), prop::sample::select(model::OFFSETS.to_vec()), data())
            .prop_map(|(p, o, d)| Op::Write(p, o, d)),
        3 => path().prop_map(Op::Mkdir),
        2 => path().prop_map(Op::Remove),
        2 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (path(), path()).prop_map(|(a, b)| Op::Symlink(a, b)),
        1 => (path(), prop::sample::select(model::MODES.to_vec())).prop_map(|(p, m)| Op::Chmod(p, m)),
        1 => (path(), prop::sample::select(model::LENS.to_vec())).prop_map(|(p, l)| Op::Truncate(p, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(160),
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn merge_matches_the_model(
        base_ops in prop::collection::vec(op(), 0..16),
        ours_ops in prop::collection::vec(op(), 0..8),
        theirs_ops in prop::collection::vec(op(), 0..8),
    ) {
        if let Err(e) = model::check(&base_ops, &ours_ops, &theirs_ops) {
            prop_assert!(false, "{}", e);
        }
    }
}

// ---------------------------------------------------------------------
// `cowvfs checkpoint merge`, run as a user would.

#[cfg(feature = "cli")]
mod cli {
    use std::path::Path;
    use std::process::{Command, Output};

    use cowvfs::{Snapshot, Vfs};

    fn cowvfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cowvfs"))
            .args(args.iter().map(|a| a.as_ref()))
            .output()
            .unwrap()
    }

    fn stdout(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// BASE (full), OURS (a delta against BASE) and THEIRS (full).
    fn checkpoints(dir: &Path, conflict: bool) -> Snapshot {
        let mut v = Vfs::new();
        v.create_dir_all("/etc").unwrap();
        v.write_file("/etc/config", b"debug = false\n").unwrap();
        v.write_file("/shared", b"1111").unwrap();
        let base = v.snapshot();
        base.save(dir.join("base.ck")).unwrap();
        let (mut o, mut t) = (base.fork(), base.fork());
        o.rename("/etc/config", "/etc/config.toml").unwrap();
        o.write_file("/from-ours", b"o").unwrap();
        t.write_file("/etc/config", b"debug = true\n").unwrap();
        t.write_file("/from-theirs", b"t").unwrap();
        if conflict {
            o.write_file("/shared", b"2222").unwrap();
            t.write_file("/shared", b"3333").unwrap();
        }
        o.snapshot().save_delta(&base, dir.join("ours.ck")).unwrap();
        t.snapshot().save(dir.join("theirs.ck")).unwrap();
        base
    }

    #[test]
    fn merge_command() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let base = checkpoints(d, false);
        let (b, o, t, out) = (
            d.join("base.ck"),
            d.join("ours.ck"),
            d.join("theirs.ck"),
            d.join("out.ck"),
        );
        // A delta side needs its parent.
        let r = cowvfs(&[&"checkpoint", &"merge", &b, &o, &t, &out]);
        assert!(!r.status.success() && !out.exists());
        let r = cowvfs(&[
            &"checkpoint",
            &"merge",
            &b,
            &o,
            &t,
            &out,
            &"--parent",
            &b,
            &"--delta",
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(stdout(&r), "");
        let s = Snapshot::load_delta(&out, &base).unwrap();
        assert_eq!(s.read_file("/etc/config.toml").unwrap(), b"debug = true\n");
        assert_eq!(s.read_file("/from-ours").unwrap(), b"o");
        assert_eq!(s.read_file("/from-theirs").unwrap(), b"t");
        assert!(!s.exists("/etc/config"));
    }

    #[test]
    fn merge_command_conflicts() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        checkpoints(d, true);
        let (b, o, t, out) = (
            d.join("base.ck"),
            d.join("ours.ck"),
            d.join("theirs.ck"),
            d.join("out.ck"),
        );
        let r = cowvfs(&[&"checkpoint", &"merge", &b, &o, &t, &out, &"--parent", &b]);
        assert_eq!(r.status.code(), Some(1));
        assert_eq!(
            stdout(&r),
            "content /shared: ours modified, theirs modified; bytes 0..4\n"
        );
        assert!(String::from_utf8_lossy(&r.stderr).contains("nothing written"));
        assert!(!out.exists());
        let r = cowvfs(&[
            &"checkpoint",
            &"merge",
            &b,
            &o,
            &t,
            &out,
            &"--parent",
            &b,
            &"--conflicts",
            &"keep-both",
        ]);
        assert!(r.status.success());
        assert_eq!(
            stdout(&r),
            "content /shared: ours modified, theirs modified; bytes 0..4 (kept ours; theirs at /shared.theirs)\n"
        );
        let s = Snapshot::load(&out).unwrap();
        assert_eq!(s.read_file("/shared").unwrap(), b"2222");
        assert_eq!(s.read_file("/shared.theirs").unwrap(), b"3333");
        let r = cowvfs(&[
            &"checkpoint",
            &"merge",
            &b,
            &o,
            &t,
            &out,
            &"--parent",
            &b,
            &"--conflicts",
            &"maybe",
        ]);
        assert!(!r.status.success());
        assert!(String::from_utf8_lossy(&r.stderr).contains("unknown policy"));
    }
}

/// Descriptors of every directory of a chain `/c/L/L/...` (`L` a long
/// name), outermost first, opened one name at a time beneath the last:
/// the deep ones have paths far past `max_path_len`.
fn chain_dirs(v: &mut Vfs, long: &str) -> Vec<cowvfs::Fd> {
    let mut fds = vec![v.open("/c", OpenOptions::new().read(true)).unwrap()];
    while let Ok(fd) = v.open_at(*fds.last().unwrap(), long, OpenOptions::new().read(true)) {
        fds.push(fd);
    }
    fds
}

/// Writes `data` to `f` in every directory of the chain.
fn write_all_levels(v: &mut Vfs, long: &str, data: &[u8]) {
    for dir in chain_dirs(v, long) {
        let o = OpenOptions::new().write(true).truncate(true).clone();
        let fd = v.open_at(dir, "f", &o).unwrap();
        v.write_at(fd, data, 0).unwrap();
        v.close(fd).unwrap();
    }
}

/// A conflict in each of 301 nested directories with 200-byte names: the
/// paths would take about 9 MB in all. The report keeps within its byte
/// cap and counts the rest; the merge itself settles every one.
#[test]
fn a_deep_tree_s_conflicts_report_within_the_cap() {
    let long = "L".repeat(200);
    let base = base_with(|v| {
        v.create_dir("/c").unwrap();
        v.write_file("/c/f", b"base").unwrap();
        for _ in 0..300 {
            v.create_dir("/t").unwrap();
            v.rename("/c", &format!("/t/{long}")).unwrap();
            v.rename("/t", "/c").unwrap();
            v.write_file("/c/f", b"base").unwrap();
        }
    });
    let (mut o, mut t) = (base.fork(), base.fork());
    write_all_levels(&mut o, &long, b"ours");
    write_all_levels(&mut t, &long, b"them");
    let (os, ts) = (o.snapshot(), t.snapshot());

    let all = Snapshot::merge(&base, &os, &ts, &opts(ConflictPolicy::Fail)).unwrap();
    assert_eq!((all.conflicts().len(), all.omitted()), (301, 0));
    let bytes: usize = all.conflicts().iter().map(|c| c.path().len()).sum();
    assert!(bytes > 8 << 20, "{bytes}");

    let cap = 1 << 20;
    let capped = opts(ConflictPolicy::Fail).max_report_bytes(cap);
    let m = Snapshot::merge(&base, &os, &ts, &capped).unwrap();
    let listed: usize = m.conflicts().iter().map(|c| c.path().len()).sum();
    assert!(listed <= cap && listed > 0, "{listed}");
    assert!(m.omitted() > 0);
    assert_eq!(m.conflicts().len() as u64 + m.omitted(), 301);
    assert!(!m.is_clean() && m.snapshot().is_none());
    let e = m.into_snapshot().unwrap_err();
    assert!(e.to_string().contains("301 conflict"), "{e}");

    // Settled, every conflict takes ours, listed or not.
    let ours = opts(ConflictPolicy::Ours).max_report_bytes(cap);
    let m = Snapshot::merge(&base, &os, &ts, &ours).unwrap();
    assert!(m.omitted() > 0);
    let mut v = m.into_snapshot().unwrap().fork();
    let dirs = chain_dirs(&mut v, &long);
    assert_eq!(dirs.len(), 301);
    for dir in dirs {
        let fd = v.open_at(dir, "f", OpenOptions::new().read(true)).unwrap();
        let mut buf = [0u8; 8];
        let n = v.read_at(fd, &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"ours");
        v.close(fd).unwrap();
    }
}

/// Found by `merge_matches_the_model`: theirs writes through `/b -> /a ->
/// /c` (creating `/c`) while ours makes and removes `/c`. The model must
/// see that both named `/c` (a chain of two links), so that it does not
/// expect the two orders to agree.
#[test]
fn the_model_follows_symlink_chains() {
    use model::Op;
    let base = vec![
        Op::Symlink("/c".into(), "/a".into()),
        Op::Symlink("/a".into(), "/b".into()),
    ];
    let ours = vec![
        Op::Symlink("/a".into(), "/c".into()),
        Op::Remove("/c".into()),
    ];
    let theirs = vec![Op::Write("/b".into(), 0, vec![0])];
    model::check(&base, &ours, &theirs).unwrap();
}
