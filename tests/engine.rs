//! Every engine operation and its error cases.

use std::sync::Arc;

use cowvfs::{
    ChangeKind, ErrorKind, FileType, Limits, ManualClock, OpenOptions, SetTime, Snapshot, Symlinks,
    Timestamp, Vfs,
};

fn kind<T: std::fmt::Debug>(r: cowvfs::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

fn ok(v: &Vfs) {
    v.check_invariants().unwrap();
}

fn clocked() -> (Vfs, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::new(1_000, 0).unwrap()));
    (Vfs::with_clock(Limits::default(), clock.clone()), clock)
}

#[test]
fn dirs_create_and_remove() {
    let mut v = Vfs::new();
    v.create_dir("/a").unwrap();
    assert_eq!(kind(v.create_dir("/a")), ErrorKind::AlreadyExists);
    assert_eq!(kind(v.create_dir("/missing/b")), ErrorKind::NotFound);
    v.write_file("/f", b"x").unwrap();
    assert_eq!(kind(v.create_dir("/f")), ErrorKind::AlreadyExists);
    assert_eq!(kind(v.create_dir("/f/sub")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.create_dir("/")), ErrorKind::AlreadyExists);
    v.create_dir_all("/a/b/c/d").unwrap();
    v.create_dir_all("/a/b/c/d").unwrap();
    assert_eq!(kind(v.create_dir_all("/f/x")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.remove_dir("/a")), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(v.remove_dir("/f")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.remove_dir("/")), ErrorKind::Busy);
    assert_eq!(kind(v.remove_dir("/nope")), ErrorKind::NotFound);
    v.remove_dir("/a/b/c/d").unwrap();
    v.remove_dir("/a/b/c/").unwrap();
    assert_eq!(v.metadata("/a").unwrap().nlink, 3);
    ok(&v);
}

#[test]
fn files_read_write() {
    let mut v = Vfs::new();
    v.write_file("/f", b"hello").unwrap();
    assert_eq!(v.read_file("/f").unwrap(), b"hello");
    v.write_file("/f", b"hi").unwrap();
    assert_eq!(v.read_file("/f").unwrap(), b"hi");
    assert_eq!(kind(v.read_file("/nope")), ErrorKind::NotFound);
    assert_eq!(kind(v.read_file("/")), ErrorKind::IsADirectory);
    assert_eq!(kind(v.read_file("/f/")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.write_file("/", b"")), ErrorKind::IsADirectory);
    assert_eq!(kind(v.write_file("/d/", b"")), ErrorKind::IsADirectory);
    v.remove_file("/f").unwrap();
    assert_eq!(kind(v.remove_file("/f")), ErrorKind::NotFound);
    v.create_dir("/d").unwrap();
    assert_eq!(kind(v.remove_file("/d")), ErrorKind::IsADirectory);
    ok(&v);
}

#[test]
fn open_options() {
    let mut v = Vfs::new();
    let o = |f: fn(&mut OpenOptions) -> &mut OpenOptions| {
        let mut x = OpenOptions::new();
        f(&mut x);
        x
    };
    assert_eq!(
        kind(v.open("/f", &o(|o| o.read(true)))),
        ErrorKind::NotFound
    );
    let fd = v
        .open("/f", &o(|o| o.write(true).create_new(true)))
        .unwrap();
    assert_eq!(v.write_at(fd, b"abc", 0).unwrap(), 3);
    assert_eq!(
        kind(v.read_at(fd, &mut [0; 3], 0)),
        ErrorKind::BadDescriptor
    );
    v.close(fd).unwrap();
    assert_eq!(kind(v.close(fd)), ErrorKind::BadDescriptor);
    assert_eq!(
        kind(v.open("/f", &o(|o| o.write(true).create_new(true)))),
        ErrorKind::AlreadyExists
    );
    let fd = v.open("/f", &o(|o| o.read(true))).unwrap();
    assert_eq!(kind(v.write_at(fd, b"x", 0)), ErrorKind::BadDescriptor);
    assert_eq!(kind(v.set_len(fd, 0)), ErrorKind::BadDescriptor);
    let mut buf = [0u8; 8];
    assert_eq!(v.read_at(fd, &mut buf, 0).unwrap(), 3);
    assert_eq!(v.read_at(fd, &mut buf, 3).unwrap(), 0);
    assert_eq!(v.read_at(fd, &mut buf, 100).unwrap(), 0);
    v.close(fd).unwrap();
    let fd = v.open("/f", &o(|o| o.write(true).truncate(true))).unwrap();
    assert_eq!(v.file_metadata(fd).unwrap().len, 0);
    v.close(fd).unwrap();
    let fd = v.open("/f", &o(|o| o.append(true))).unwrap();
    assert_eq!(v.append(fd, b"12").unwrap(), 0);
    assert_eq!(v.append(fd, b"34").unwrap(), 2);
    v.close(fd).unwrap();
    assert_eq!(v.read_file("/f").unwrap(), b"1234");
    v.create_dir("/d").unwrap();
    assert_eq!(
        kind(v.open("/d", &o(|o| o.write(true)))),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        kind(v.open("/f", &o(|o| o.read(true).directory(true)))),
        ErrorKind::NotADirectory
    );
    let d = v.open("/d", &o(|o| o.read(true).directory(true))).unwrap();
    assert_eq!(kind(v.read_at(d, &mut buf, 0)), ErrorKind::IsADirectory);
    v.close(d).unwrap();
    v.symlink("f", "/l").unwrap();
    assert_eq!(
        kind(v.open("/l", &o(|o| o.read(true).follow(false)))),
        ErrorKind::Loop
    );
    assert_eq!(
        kind(v.open("/l", &o(|o| o.write(true).create_new(true)))),
        ErrorKind::AlreadyExists
    );
    ok(&v);
}

#[test]
fn write_past_eof_and_holes() {
    let mut v = Vfs::new();
    let fd = v
        .open("/f", OpenOptions::new().read(true).write(true).create(true))
        .unwrap();
    v.write_at(fd, b"Z", 100_000).unwrap();
    let m = v.file_metadata(fd).unwrap();
    assert_eq!(m.len, 100_001);
    assert!(m.held < 65_536, "a hole costs nothing: held {}", m.held);
    let data = v.read_file("/f").unwrap();
    assert!(data[..100_000].iter().all(|&b| b == 0));
    assert_eq!(data[100_000], b'Z');
    v.set_len(fd, 10).unwrap();
    assert_eq!(v.file_metadata(fd).unwrap().len, 10);
    v.set_len(fd, 1 << 20).unwrap();
    assert_eq!(v.usage().logical_bytes, 1 << 20);
    v.write_at(fd, b"x", 1 << 40).unwrap();
    assert!(v.usage().held_bytes < 70_000);
    assert_eq!(
        kind(v.write_at(fd, b"x", u64::MAX)),
        ErrorKind::FileTooLarge
    );
    assert_eq!(kind(v.read_file("/f")), ErrorKind::FileTooLarge);
    v.close(fd).unwrap();
    ok(&v);
}

#[test]
fn limits() {
    // max_bytes counts inodes, entries and chunk bookkeeping too (384 per
    // inode, 160 + name per entry, 192 per chunk plus its rounded-up data):
    // /a with 900 bytes plus two directories fit in 3,500; /b with 1,000
    // more bytes does not.
    let mut v = Vfs::with_limits(Limits {
        max_bytes: 3500,
        max_inodes: 4,
        max_file_size: 2000,
        max_open_files: 2,
        ..Limits::default()
    });
    v.write_file("/a", &[1; 900]).unwrap();
    let before = v.root_hash();
    assert_eq!(kind(v.write_file("/b", &[1; 1000])), ErrorKind::NoSpace);
    // The failed write_file created /b but wrote nothing into it.
    assert_eq!(v.read_file("/b").unwrap(), b"");
    v.remove_file("/b").unwrap();
    assert_eq!(v.root_hash(), before);
    let fd = v.open("/a", OpenOptions::new().write(true)).unwrap();
    assert_eq!(kind(v.write_at(fd, b"x", 2000)), ErrorKind::FileTooLarge);
    assert_eq!(kind(v.set_len(fd, 2001)), ErrorKind::FileTooLarge);
    v.set_len(fd, 2000).unwrap();
    let fd2 = v.open("/a", OpenOptions::new().read(true)).unwrap();
    assert_eq!(
        kind(v.open("/a", OpenOptions::new().read(true))),
        ErrorKind::TooManyOpenFiles
    );
    v.close(fd).unwrap();
    v.close(fd2).unwrap();
    v.create_dir("/d").unwrap();
    v.create_dir("/e").unwrap();
    assert_eq!(kind(v.create_dir("/f")), ErrorKind::QuotaExceeded);
    assert_eq!(kind(v.symlink("x", "/s")), ErrorKind::QuotaExceeded);
    assert_eq!(
        kind(v.create_dir(&format!("/{}", "n".repeat(256)))),
        ErrorKind::NameTooLong
    );
    assert_eq!(kind(v.metadata(&"/a".repeat(2100))), ErrorKind::NameTooLong);
    assert_eq!(kind(v.metadata("/a\0b")), ErrorKind::InvalidInput);
    assert_eq!(kind(v.metadata("")), ErrorKind::NotFound);
    ok(&v);
    let u = v.usage();
    assert_eq!(u.inodes, 4);
    assert_eq!(u.held_bytes, 900);
    assert_eq!(u.logical_bytes, 2000);
}

#[test]
fn fork_with_limits_allows_its_base() {
    let mut v = Vfs::new();
    v.write_file("/big", &vec![7; 100_000]).unwrap();
    let snap = v.snapshot();
    let held = snap.usage().held_bytes;
    // max_bytes limits the charge (data plus bookkeeping), not `held`: a
    // ten-byte file costs about 760 bytes, a second one does not fit.
    let mut child = snap.fork_with_limits(Limits {
        max_bytes: snap.usage().charged_bytes + 1000,
        ..Limits::default()
    });
    child.write_file("/small", &[1; 10]).unwrap();
    assert_eq!(kind(child.write_file("/more", &[1; 1])), ErrorKind::NoSpace);
    // Overwriting shared chunks holds no more bytes, so it is allowed.
    let fd = child.open("/big", OpenOptions::new().write(true)).unwrap();
    child.write_at(fd, &[9; 10], 50).unwrap();
    child.close(fd).unwrap();
    assert!(child.usage().allocated_bytes >= 65_536);
    assert_eq!(child.usage().base_held_bytes, held);
    ok(&child);
}

#[test]
fn snapshot_listings_come_in_pages() {
    let mut v = Vfs::new();
    v.create_dir("/d").unwrap();
    for i in 0..10 {
        v.write_file(&format!("/d/f{i}"), b"x").unwrap();
    }
    v.symlink("d", "/to_d").unwrap();
    let snap = v.snapshot();
    let names = |es: Vec<cowvfs::DirEntry>| {
        es.into_iter()
            .map(|e| e.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(snap.read_dir_page("/d", None, 3).unwrap()),
        ["f0", "f1", "f2"]
    );
    assert_eq!(
        names(snap.read_dir_page("/to_d", Some("f2"), 2).unwrap()),
        ["f3", "f4"]
    );
    assert_eq!(
        names(snap.read_dir_page("/d", Some("f8"), 5).unwrap()),
        ["f9"]
    );
    assert_eq!(snap.read_dir_page("/d", None, 100).unwrap().len(), 10);
    assert_eq!(
        kind(snap.read_dir_page("/d/f1", None, 1)),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        kind(snap.read_dir_page("/nope", None, 1)),
        ErrorKind::NotFound
    );
}

#[test]
fn symlinks() {
    let mut v = Vfs::new();
    v.create_dir_all("/d/e").unwrap();
    v.write_file("/d/e/f", b"data").unwrap();
    v.symlink("e/f", "/d/rel").unwrap();
    v.symlink("/d/e", "/abs").unwrap();
    v.symlink("nowhere", "/dangling").unwrap();
    assert_eq!(v.read_file("/d/rel").unwrap(), b"data");
    assert_eq!(v.read_file("/abs/f").unwrap(), b"data");
    assert_eq!(v.read_link("/abs").unwrap(), "/d/e");
    assert_eq!(kind(v.read_link("/d")), ErrorKind::InvalidInput);
    assert_eq!(kind(v.read_link("/zzz")), ErrorKind::NotFound);
    assert_eq!(kind(v.metadata("/dangling")), ErrorKind::NotFound);
    let m = v.symlink_metadata("/dangling").unwrap();
    assert_eq!((m.kind, m.len), (FileType::Symlink, 7));
    assert_eq!(kind(v.symlink("x", "/d")), ErrorKind::AlreadyExists);
    assert_eq!(kind(v.symlink("", "/empty")), ErrorKind::NotFound);
    // Creating through a dangling link creates its target.
    let fd = v
        .open("/dangling", OpenOptions::new().write(true).create(true))
        .unwrap();
    v.close(fd).unwrap();
    assert!(v.metadata("/nowhere").unwrap().is_file());
    // Loops and hop limits.
    v.symlink("loop2", "/loop1").unwrap();
    v.symlink("loop1", "/loop2").unwrap();
    assert_eq!(kind(v.metadata("/loop1")), ErrorKind::Loop);
    v.write_file("/t0", b"end").unwrap();
    for i in 1..=41 {
        v.symlink(&format!("t{}", i - 1), &format!("/t{i}"))
            .unwrap();
    }
    assert_eq!(v.read_file("/t40").unwrap(), b"end");
    assert_eq!(kind(v.read_file("/t41")), ErrorKind::Loop);
    // `..` at the root stays at the root; absolute links resolve from it.
    assert_eq!(v.read_file("/../../d/e/f").unwrap(), b"data");
    v.symlink("/../../../d/e/f", "/d/up").unwrap();
    assert_eq!(v.read_file("/d/up").unwrap(), b"data");
    // A trailing slash follows a link to a directory.
    assert!(v.metadata("/abs/").unwrap().is_dir());
    assert_eq!(kind(v.metadata("/d/rel/")), ErrorKind::NotADirectory);
    ok(&v);
}

#[test]
fn beneath_mode() {
    let mut v = Vfs::new();
    v.create_dir_all("/sb/inner").unwrap();
    v.write_file("/secret", b"s").unwrap();
    v.write_file("/sb/ok", b"o").unwrap();
    v.symlink("/secret", "/sb/abs").unwrap();
    v.symlink("../secret", "/sb/up").unwrap();
    v.symlink("../ok", "/sb/inner/back").unwrap();
    let dir = v
        .open("/sb", OpenOptions::new().read(true).directory(true))
        .unwrap();
    let follow = Symlinks::Follow;
    assert_eq!(v.metadata_at(dir, "ok", follow).unwrap().len, 1);
    assert_eq!(v.metadata_at(dir, "inner/back", follow).unwrap().len, 1);
    assert_eq!(v.metadata_at(dir, "inner/../ok", follow).unwrap().len, 1);
    assert_eq!(
        kind(v.metadata_at(dir, "/secret", follow)),
        ErrorKind::NotPermitted
    );
    assert_eq!(
        kind(v.metadata_at(dir, "../secret", follow)),
        ErrorKind::NotPermitted
    );
    assert_eq!(
        kind(v.metadata_at(dir, "abs", follow)),
        ErrorKind::NotPermitted
    );
    assert_eq!(
        kind(v.metadata_at(dir, "up", follow)),
        ErrorKind::NotPermitted
    );
    assert!(
        v.metadata_at(dir, "abs", Symlinks::NoFollow)
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        kind(v.open_at(dir, "../secret", OpenOptions::new().read(true))),
        ErrorKind::NotPermitted
    );
    assert_eq!(
        kind(v.create_dir_at(dir, "inner/../../x")),
        ErrorKind::NotPermitted
    );
    v.create_dir_at(dir, "new").unwrap();
    assert!(v.metadata("/sb/new").unwrap().is_dir());
    let file = v.open("/sb/ok", OpenOptions::new().read(true)).unwrap();
    assert_eq!(
        kind(v.metadata_at(file, "x", follow)),
        ErrorKind::NotADirectory
    );
    ok(&v);
}

#[test]
fn rename_cases() {
    let mut v = Vfs::new();
    v.create_dir_all("/d/sub").unwrap();
    v.create_dir("/e").unwrap();
    v.write_file("/f", b"f").unwrap();
    v.write_file("/g", b"g").unwrap();
    assert_eq!(kind(v.rename("/missing", "/y")), ErrorKind::NotFound);
    assert_eq!(kind(v.rename("/f", "/d")), ErrorKind::IsADirectory);
    assert_eq!(kind(v.rename("/d", "/f")), ErrorKind::NotADirectory);
    assert_eq!(kind(v.rename("/e", "/d")), ErrorKind::DirectoryNotEmpty);
    assert_eq!(kind(v.rename("/d", "/d/sub/x")), ErrorKind::InvalidInput);
    assert_eq!(kind(v.rename("/d", "/d/x")), ErrorKind::InvalidInput);
    assert_eq!(kind(v.rename("/", "/x")), ErrorKind::Busy);
    assert_eq!(kind(v.rename("/f", "/")), ErrorKind::Busy);
    assert_eq!(kind(v.rename("/f", "/f/")), ErrorKind::NotADirectory);
    v.rename("/f", "/g").unwrap();
    assert_eq!(v.read_file("/g").unwrap(), b"f");
    assert!(!v.exists("/f"));
    v.rename("/g", "/g").unwrap();
    v.hard_link("/g", "/h").unwrap();
    v.rename("/g", "/h").unwrap();
    assert!(v.exists("/g"), "renaming onto the same inode does nothing");
    v.rename("/d/sub", "/e/moved").unwrap();
    assert!(v.metadata("/e/moved").unwrap().is_dir());
    v.create_dir("/empty").unwrap();
    v.rename("/e", "/empty").unwrap();
    assert!(v.exists("/empty/moved"));
    assert_eq!(v.metadata("/d").unwrap().nlink, 2);
    ok(&v);
}

/// Every name of a file with many links resolves to it, whichever was
/// looked up last (the entry hint compares only an inode's first link;
/// the others are searched for), and each removal leaves the rest.
#[test]
fn each_of_many_names_resolves_in_any_order() {
    let mut v = Vfs::new();
    v.create_dir("/a").unwrap();
    v.create_dir("/b").unwrap();
    v.write_file("/a/f0", b"data").unwrap();
    let names: Vec<String> = (0..40)
        .map(|i| format!("/{}/f{i}", if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    for n in &names[1..] {
        v.hard_link("/a/f0", n).unwrap();
    }
    let ino = v.metadata("/a/f0").unwrap().ino;
    // Forwards, backwards and interleaved, so the hint is every name.
    let order: Vec<usize> = (0..40)
        .chain((0..40).rev())
        .chain((0..40).step_by(7))
        .collect();
    for &i in &order {
        let m = v.metadata(&names[i]).unwrap();
        assert_eq!((m.ino, m.nlink), (ino, 40), "{}", names[i]);
        assert_eq!(v.read_file(&names[i]).unwrap(), b"data");
        assert_eq!(
            kind(v.metadata(&format!("{}x", names[i]))),
            ErrorKind::NotFound
        );
    }
    // Take the names away from the middle out; the rest still resolve.
    let mut left: Vec<usize> = (0..40).collect();
    while let Some(i) = left.get(left.len() / 2).copied() {
        v.remove_file(&names[i]).unwrap();
        left.retain(|&x| x != i);
        assert_eq!(kind(v.metadata(&names[i])), ErrorKind::NotFound);
        for &j in &left {
            let m = v.metadata(&names[j]).unwrap();
            assert_eq!((m.ino, m.nlink), (ino, left.len() as u64 as _));
        }
    }
    v.check_invariants().unwrap();
}

#[test]
fn hard_links_and_open_unlinked() {
    let mut v = Vfs::new();
    v.write_file("/f", b"data").unwrap();
    v.hard_link("/f", "/g").unwrap();
    let (a, b) = (v.metadata("/f").unwrap(), v.metadata("/g").unwrap());
    assert_eq!(a.ino, b.ino);
    assert_eq!(a.nlink, 2);
    assert_eq!(kind(v.hard_link("/f", "/g")), ErrorKind::AlreadyExists);
    v.create_dir("/d").unwrap();
    assert_eq!(kind(v.hard_link("/d", "/d2")), ErrorKind::NotPermitted);
    assert_eq!(kind(v.hard_link("/nope", "/x")), ErrorKind::NotFound);
    let fd = v
        .open("/g", OpenOptions::new().read(true).write(true))
        .unwrap();
    v.write_at(fd, b"DA", 0).unwrap();
    assert_eq!(v.read_file("/f").unwrap(), b"DAta");
    v.remove_file("/f").unwrap();
    v.remove_file("/g").unwrap();
    assert!(!v.exists("/g"));
    let before = v.usage().inodes;
    let snap = v.snapshot();
    assert_eq!(
        snap.usage().inodes,
        before - 1,
        "orphans stay out of snapshots"
    );
    snap.check_invariants().unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(v.read_at(fd, &mut buf, 0).unwrap(), 4);
    assert_eq!(&buf, b"DAta");
    v.write_at(fd, b"!", 4).unwrap();
    assert_eq!(v.file_metadata(fd).unwrap().nlink, 0);
    ok(&v);
    v.close(fd).unwrap();
    assert_eq!(v.usage().inodes, before - 1);
    assert_eq!(v.usage().held_bytes, 0);
    ok(&v);
}

#[test]
fn permissions() {
    let mut v = Vfs::new();
    v.write_file("/ro", b"x").unwrap();
    v.set_permissions("/ro", 0o444).unwrap();
    assert_eq!(
        kind(v.open("/ro", OpenOptions::new().write(true))),
        ErrorKind::PermissionDenied
    );
    assert_eq!(kind(v.truncate("/ro", 0)), ErrorKind::PermissionDenied);
    assert_eq!(kind(v.write_file("/ro", b"y")), ErrorKind::PermissionDenied);
    v.set_permissions("/ro", 0o200).unwrap();
    assert_eq!(kind(v.read_file("/ro")), ErrorKind::PermissionDenied);
    v.create_dir("/locked").unwrap();
    v.create_dir("/open").unwrap();
    v.write_file("/open/f", b"f").unwrap();
    // The same checks when the hints answer the path (the inode read by
    // resolution is the one whose bits are checked).
    v.set_permissions("/open/f", 0o200).unwrap();
    v.metadata("/open/f").unwrap();
    assert_eq!(
        kind(v.open("/open/f", OpenOptions::new().read(true))),
        ErrorKind::PermissionDenied
    );
    let fd = v.open("/open/f", OpenOptions::new().write(true)).unwrap();
    v.close(fd).unwrap();
    // Through a symlink whose own inode the hints hold: the target's
    // bits count, not the link's.
    v.symlink("f", "/open/l").unwrap();
    v.symlink_metadata("/open/l").unwrap();
    assert_eq!(
        kind(v.open("/open/l", OpenOptions::new().read(true))),
        ErrorKind::PermissionDenied
    );
    v.set_permissions("/open/f", 0o444).unwrap();
    v.metadata("/open/f").unwrap();
    assert_eq!(
        kind(v.open("/open/f", OpenOptions::new().write(true))),
        ErrorKind::PermissionDenied
    );
    v.set_permissions("/open/f", 0o644).unwrap();
    v.create_dir("/open/sub").unwrap();
    v.set_permissions("/open/sub", 0o300).unwrap();
    v.metadata("/open/sub").unwrap();
    for p in ["/open/sub", "/open/sub/.", "/open/../open/sub"] {
        assert_eq!(
            kind(v.open(p, OpenOptions::new().read(true))),
            ErrorKind::PermissionDenied,
            "{p}"
        );
    }
    v.set_permissions("/locked", 0o555).unwrap();
    assert_eq!(
        kind(v.write_file("/locked/new", b"")),
        ErrorKind::PermissionDenied
    );
    assert_eq!(kind(v.create_dir("/locked/d")), ErrorKind::PermissionDenied);
    assert_eq!(
        kind(v.symlink("x", "/locked/l")),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        kind(v.hard_link("/open/f", "/locked/f")),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        kind(v.rename("/open/f", "/locked/f")),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        kind(v.set_permissions("/ro", 0o10000)),
        ErrorKind::InvalidInput
    );
    assert_eq!(v.metadata("/locked").unwrap().mode, 0o555);
    ok(&v);
}

#[test]
fn timestamps() {
    let (mut v, clock) = clocked();
    v.create_dir("/d").unwrap();
    clock.advance(10);
    v.write_file("/d/f", b"x").unwrap();
    let d = v.metadata("/d").unwrap();
    assert_eq!(
        d.mtime.secs, 1010,
        "creating an entry changes the dir mtime"
    );
    clock.advance(10);
    let fd = v.open("/d/f", OpenOptions::new().write(true)).unwrap();
    v.write_at(fd, b"y", 0).unwrap();
    assert_eq!(v.file_metadata(fd).unwrap().mtime.secs, 1020);
    assert_eq!(
        v.metadata("/d").unwrap().mtime.secs,
        1010,
        "writing a file leaves its dir alone"
    );
    v.close(fd).unwrap();
    let t = |s, n| SetTime::At(Timestamp { secs: s, nanos: n });
    v.set_times("/d/f", t(5, 6), SetTime::Omit).unwrap();
    let m = v.metadata("/d/f").unwrap();
    assert_eq!((m.atime.secs, m.atime.nanos, m.mtime.secs), (5, 6, 1020));
    v.set_times("/d/f", t(i64::MIN, 0), t(i64::MAX, 999_999_999))
        .unwrap();
    let m = v.metadata("/d/f").unwrap();
    assert_eq!((m.atime.secs, m.mtime.secs), (i64::MIN, i64::MAX));
    assert_eq!(
        kind(v.set_times("/d/f", t(0, 1_000_000_000), SetTime::Omit)),
        ErrorKind::InvalidInput
    );
    assert_eq!(kind(Timestamp::new(0, u32::MAX)), ErrorKind::InvalidInput);
    clock.advance(5);
    v.set_times("/d/f", SetTime::Now, SetTime::Now).unwrap();
    assert_eq!(v.metadata("/d/f").unwrap().mtime.secs, 1025);
    v.symlink("f", "/d/l").unwrap();
    v.set_symlink_times("/d/l", t(1, 0), t(2, 0)).unwrap();
    assert_eq!(v.symlink_metadata("/d/l").unwrap().mtime.secs, 2);
    assert_eq!(v.metadata("/d/l").unwrap().mtime.secs, 1025);
    clock.advance(5);
    v.remove_file("/d/l").unwrap();
    assert_eq!(v.metadata("/d").unwrap().mtime.secs, 1030);
    ok(&v);
}

#[test]
fn read_dir_cursor_is_stable() {
    let mut v = Vfs::new();
    v.create_dir("/d").unwrap();
    for i in 0..100 {
        v.write_file(&format!("/d/f{i:03}"), b"").unwrap();
    }
    let all = v.read_dir("/d").unwrap();
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    let fd = v.open("/d", OpenOptions::new().read(true)).unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let page = v.read_dir_page(fd, cursor.as_deref(), 7).unwrap();
        if page.is_empty() {
            break;
        }
        // Change the directory between pages.
        v.write_file(&format!("/d/new{round}"), b"").unwrap();
        if round == 3 {
            v.remove_file("/d/f099").unwrap();
        }
        round += 1;
        cursor = Some(page.last().unwrap().name.to_string());
        seen.extend(page.into_iter().map(|e| e.name));
    }
    for i in 0..99 {
        let name = format!("f{i:03}");
        assert_eq!(seen.iter().filter(|n| **n == name).count(), 1, "{name}");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no entry twice");
    v.close(fd).unwrap();
    assert_eq!(kind(v.read_dir("/d/f000")), ErrorKind::NotADirectory);
}

#[test]
fn snapshots_are_frozen_and_forks_isolated() {
    let mut v = Vfs::new();
    v.create_dir_all("/app").unwrap();
    v.write_file("/app/a", b"base").unwrap();
    let snap = v.snapshot();
    let h = snap.root_hash();
    let mut c1 = snap.fork();
    let mut c2 = snap.fork();
    c1.write_file("/app/a", b"one").unwrap();
    c2.remove_file("/app/a").unwrap();
    c2.create_dir("/app/new").unwrap();
    v.write_file("/app/b", b"more").unwrap();
    assert_eq!(snap.read_file("/app/a").unwrap(), b"base");
    assert_eq!(snap.root_hash(), h);
    assert_eq!(c1.read_file("/app/a").unwrap(), b"one");
    assert!(!c2.exists("/app/a"));
    let d = snap.diff(&c2.snapshot());
    let got: Vec<(String, ChangeKind)> =
        d.iter().map(|c| (c.path().to_string(), c.kind())).collect();
    assert_eq!(
        got,
        vec![
            ("/app/a".to_string(), ChangeKind::Removed),
            ("/app/new".to_string(), ChangeKind::Added)
        ]
    );
    let d = snap.diff(&c1.snapshot());
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind(), ChangeKind::Modified);
    assert!(snap.diff(&snap.clone()).is_empty());
    assert!(snap.diff(&snap.fork().snapshot()).is_empty());
    ok(&c1);
    ok(&c2);
}

#[test]
fn root_hash_is_a_function_of_the_tree() {
    let build = |order: bool| {
        let mut v = Vfs::new();
        let names = if order {
            ["a", "b", "c"]
        } else {
            ["c", "b", "a"]
        };
        for n in names {
            v.create_dir(&format!("/{n}")).unwrap();
            v.write_file(&format!("/{n}/f"), n.as_bytes()).unwrap();
        }
        v.symlink("a/f", "/l").unwrap();
        v
    };
    let (a, mut b) = (build(true), build(false));
    assert_eq!(a.root_hash(), b.root_hash());
    let h = b.root_hash();
    b.write_file("/b/f", b"changed").unwrap();
    assert_ne!(b.root_hash(), h);
    b.write_file("/b/f", b"b").unwrap();
    assert_eq!(b.root_hash(), h);
    b.set_permissions("/b/f", 0o600).unwrap();
    assert_ne!(b.root_hash(), h);
    ok(&b);
}

#[test]
fn diff_reports_renames_and_links() {
    let mut v = Vfs::new();
    v.create_dir_all("/src/lib").unwrap();
    v.write_file("/src/lib/x", b"x").unwrap();
    v.write_file("/src/y", b"y").unwrap();
    let base = v.snapshot();
    let _ = base.root_hash();
    v.rename("/src/lib", "/src/lib2").unwrap();
    v.hard_link("/src/y", "/src/y2").unwrap();
    let d: Vec<String> = base
        .diff(&v.snapshot())
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        d,
        [
            "- /src/lib",
            "- /src/lib/x",
            "+ /src/lib2",
            "+ /src/lib2/x",
            "M /src/y",
            "+ /src/y2"
        ]
    );
    ok(&v);
}

#[test]
fn thousand_forks_write_the_same_large_file() {
    let mut base = Vfs::new();
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    base.write_file("/big", &big).unwrap();
    let snap = base.snapshot();
    let mut forks: Vec<Vfs> = (0..1000).map(|_| snap.fork()).collect();
    for (i, f) in forks.iter_mut().enumerate() {
        let fd = f.open("/big", OpenOptions::new().write(true)).unwrap();
        f.write_at(fd, &(i as u32).to_le_bytes(), 1_000_000)
            .unwrap();
        f.close(fd).unwrap();
        assert_eq!(f.usage().allocated_bytes, 65_536, "one chunk copied");
    }
    for (i, f) in forks.iter().enumerate() {
        let fd_data = f.read_file("/big").unwrap();
        assert_eq!(&fd_data[1_000_000..1_000_004], &(i as u32).to_le_bytes());
        assert_eq!(&fd_data[..1_000_000], &big[..1_000_000]);
        assert_eq!(&fd_data[1_000_004..], &big[1_000_004..]);
    }
    assert_eq!(snap.read_file("/big").unwrap(), big);
    forks[7].check_invariants().unwrap();
}

#[test]
fn snapshot_is_send_sync_and_forks_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Snapshot>();
    assert_send::<Vfs>();
    let mut v = Vfs::new();
    v.write_file("/x", b"0").unwrap();
    let snap = v.snapshot();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = snap.clone();
            std::thread::spawn(move || {
                let mut f = s.fork();
                f.write_file("/x", format!("{i}").as_bytes()).unwrap();
                f.read_file("/x").unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("{i}").as_bytes());
    }
    assert_eq!(snap.read_file("/x").unwrap(), b"0");
}

#[test]
fn stale_descriptors() {
    let mut v = Vfs::new();
    v.write_file("/a", b"a").unwrap();
    v.write_file("/b", b"b").unwrap();
    let fa = v.open("/a", OpenOptions::new().read(true)).unwrap();
    v.close(fa).unwrap();
    let fb = v.open("/b", OpenOptions::new().read(true)).unwrap();
    assert_ne!(fa, fb);
    assert_eq!(
        kind(v.read_at(fa, &mut [0; 1], 0)),
        ErrorKind::BadDescriptor
    );
    assert_eq!(
        kind(v.file_metadata(cowvfs::Fd::from_raw(12345))),
        ErrorKind::BadDescriptor
    );
    v.create_dir("/d").unwrap();
    let d = v.open("/d", OpenOptions::new().read(true)).unwrap();
    v.remove_dir("/d").unwrap();
    assert_eq!(kind(v.create_dir_at(d, "x")), ErrorKind::NotFound);
    v.close(d).unwrap();
    ok(&v);
}

#[test]
fn deep_trees_do_not_overflow_the_stack() {
    let mut v = Vfs::new();
    v.create_dir("/d").unwrap();
    let mut fd = v.open("/d", OpenOptions::new().read(true)).unwrap();
    for _ in 0..20_000 {
        v.create_dir_at(fd, "d").unwrap();
        let next = v.open_at(fd, "d", OpenOptions::new().read(true)).unwrap();
        v.close(fd).unwrap();
        fd = next;
    }
    v.close(fd).unwrap();
    let snap = v.snapshot();
    let _ = snap.root_hash();
    let empty = Vfs::new().snapshot();
    assert_eq!(empty.diff(&snap).len(), 20_001);
    snap.check_invariants().unwrap();
}

#[test]
fn diff_between_differently_numbered_trees() {
    // Two trees built in different orders number their inodes differently;
    // diff must still compare by path.
    let build = |reverse: bool, changed: bool| {
        let mut v = Vfs::new();
        let mut names: Vec<usize> = (0..30).collect();
        if reverse {
            names.reverse();
        }
        for i in names {
            v.create_dir_all(&format!("/d{}/sub{}", i % 5, i)).unwrap();
            let body = if changed && i == 17 {
                "changed".to_string()
            } else {
                format!("f{i}")
            };
            v.write_file(&format!("/d{}/sub{}/f", i % 5, i), body.as_bytes())
                .unwrap();
        }
        v.snapshot()
    };
    let (a, b) = (build(false, false), build(true, true));
    let d: Vec<String> = a.diff(&b).iter().map(|c| c.to_string()).collect();
    assert_eq!(d, ["M /d2/sub17/f"]);
    assert!(a.diff(&build(true, false)).is_empty());
    assert_eq!(a.root_hash(), build(true, false).root_hash());
}

/// Regression: two snapshots differing in one file, neither hashed before
/// the write, reported the same root hash. The write stopped invalidating
/// at the first ancestor without a memo even though the earlier snapshot
/// shared it, so hashing that snapshot memoized the shared directories.
#[test]
fn snapshots_hashed_after_a_write_keep_their_own_root_hash() {
    let mut v = Vfs::new();
    v.create_dir_all("/d/e").unwrap();
    v.write_file("/d/e/f", b"1").unwrap();
    let a = v.snapshot();
    v.write_file("/d/e/f", b"2").unwrap();
    let b = v.snapshot();
    assert_ne!(a.root_hash(), b.root_hash());
    let mut fresh = Vfs::new();
    fresh.create_dir_all("/d/e").unwrap();
    fresh.write_file("/d/e/f", b"2").unwrap();
    assert_eq!(b.root_hash(), fresh.snapshot().root_hash());
    let mut fork = a.fork();
    fork.write_file("/d/e/f", b"3").unwrap();
    let c = fork.snapshot();
    assert_ne!(a.root_hash(), c.root_hash());
    assert_ne!(b.root_hash(), c.root_hash());
}

#[test]
fn hashing_a_snapshot_never_leaks_into_its_forks() {
    // Regression: a fork's first write used to leave its ancestors shared
    // with the snapshot when no hash had been memoized yet; hashing the
    // snapshot afterwards memoized the snapshot's view on those shared
    // directories, and the fork then reported the snapshot's root hash.
    let mut base = Vfs::new();
    base.create_dir_all("/app/data").unwrap();
    base.write_file("/app/data/config", b"debug = false\n")
        .unwrap();
    let snap = base.snapshot();
    let mut child = snap.fork();
    let fd = child
        .open("/app/data/config", OpenOptions::new().write(true))
        .unwrap();
    child.write_at(fd, b"true ", 8).unwrap();
    child.close(fd).unwrap();
    let base_hash = snap.root_hash();
    let child_hash = child.snapshot().root_hash();
    assert_ne!(base_hash, child_hash);
    let mut fresh = Vfs::new();
    fresh.create_dir_all("/app/data").unwrap();
    fresh
        .write_file("/app/data/config", b"debug = true \n")
        .unwrap();
    assert_eq!(child_hash, fresh.root_hash());
    ok(&child);
}

#[test]
fn read_far_into_a_short_chunk_reads_zeros() {
    // Found by the wasi_descriptor fuzzer: a chunk stores fewer bytes than
    // its span (the file grew by set_len), and a read starts past them.
    let mut v = Vfs::new();
    let fd = v
        .open("/f", OpenOptions::new().read(true).write(true).create(true))
        .unwrap();
    v.write_at(fd, b"abc", 0).unwrap();
    v.set_len(fd, 50_000).unwrap();
    let mut buf = [7u8; 100];
    assert_eq!(v.read_at(fd, &mut buf, 24_153).unwrap(), 100);
    assert!(buf.iter().all(|&b| b == 0));
    let mut buf = [7u8; 5];
    assert_eq!(v.read_at(fd, &mut buf, 1).unwrap(), 5);
    assert_eq!(&buf, b"bc\0\0\0");
    v.close(fd).unwrap();
}
