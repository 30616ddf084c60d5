//! The host functions called directly, as a guest would call them, for
//! what a C guest behind the preview1 adapter cannot reach: absolute paths
//! at the WASI level, `is-same-object`, streams outliving descriptors,
//! rights on every method.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, StreamError};

use super::bindings::preopens::Host as _;
use super::bindings::types::{
    self, DescriptorFlags as DF, DescriptorType, ErrorCode as E, HostDescriptor as _,
    HostDirectoryEntryStream as _, NewTimestamp, OpenFlags as OF, PathFlags as PF,
};
use super::{Descriptor, FsResult, WasiVfsCtx, WasiVfsCtxView};
use crate::{ErrorKind, Vfs};

struct T {
    ctx: WasiVfsCtx,
    table: ResourceTable,
}

impl T {
    fn new(vfs: Vfs, read_only: bool) -> (T, Resource<Descriptor>) {
        let mut ctx = WasiVfsCtx::new(vfs);
        if read_only {
            ctx.preopen_read_only("/", "/").unwrap();
        } else {
            ctx.preopen("/", "/").unwrap();
        }
        let mut t = T {
            ctx,
            table: ResourceTable::new(),
        };
        let mut dirs = t.v().get_directories().unwrap();
        assert_eq!(dirs.len(), 1);
        let (root, name) = dirs.remove(0);
        assert_eq!(name, "/");
        (t, root)
    }

    fn v(&mut self) -> WasiVfsCtxView<'_> {
        WasiVfsCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }

    fn open(
        &mut self,
        dir: &Resource<Descriptor>,
        path: &str,
        o: OF,
        f: DF,
    ) -> FsResult<Resource<Descriptor>> {
        self.v()
            .open_at(borrow(dir), PF::SYMLINK_FOLLOW, path.into(), o, f)
    }
}

fn borrow<R: 'static>(r: &Resource<R>) -> Resource<R> {
    Resource::new_borrow(r.rep())
}

fn code<T: std::fmt::Debug>(r: FsResult<T>) -> E {
    r.unwrap_err().code().expect("an error code, not a trap")
}

fn tree() -> Vfs {
    let mut v = Vfs::new();
    v.create_dir_all("/d/sub").unwrap();
    v.write_file("/d/f", b"0123456789").unwrap();
    v.symlink("/etc/passwd", "/d/abs").unwrap();
    v.symlink("../../x", "/d/up").unwrap();
    v
}

#[test]
fn every_error_kind_has_a_code() {
    for &k in ErrorKind::ALL {
        let c: E = k.into();
        let _ = c.name();
    }
    assert_eq!(E::from(ErrorKind::NotPermitted), E::NotPermitted);
    assert_eq!(E::from(ErrorKind::QuotaExceeded), E::Quota);
    assert_eq!(E::from(ErrorKind::NoSpace), E::InsufficientSpace);
    assert_eq!(E::from(ErrorKind::CrossDevice), E::CrossDevice);
}

#[test]
fn strict_beneath_resolution() {
    let (mut t, root) = T::new(tree(), false);
    let d = t.open(&root, "d", OF::DIRECTORY, DF::READ).unwrap();
    for p in ["/d/f", "../d/f", "sub/../../f", "abs", "up"] {
        assert_eq!(
            code(t.open(&d, p, OF::empty(), DF::READ)),
            E::NotPermitted,
            "{p}"
        );
        assert_eq!(
            code(t.v().stat_at(borrow(&d), PF::SYMLINK_FOLLOW, p.into())),
            E::NotPermitted,
            "{p}"
        );
    }
    assert_eq!(
        code(t.v().create_directory_at(borrow(&d), "/x".into())),
        E::NotPermitted
    );
    assert_eq!(
        code(t.v().create_directory_at(borrow(&d), "../x".into())),
        E::NotPermitted
    );
    assert_eq!(
        code(t.v().symlink_at(borrow(&d), "/etc".into(), "l".into())),
        E::NotPermitted
    );
    assert_eq!(
        code(t.v().readlink_at(borrow(&d), "abs".into())),
        E::NotPermitted
    );
    assert_eq!(
        t.v().readlink_at(borrow(&d), "up".into()).unwrap(),
        "../../x"
    );
    // Beneath the root preopen, `..` above it is refused too (no clamping).
    assert_eq!(
        code(t.open(&root, "..", OF::DIRECTORY, DF::READ)),
        E::NotPermitted
    );
    // Staying inside is fine.
    t.open(&d, "sub/../f", OF::empty(), DF::READ).unwrap();
}

#[test]
fn open_flags_and_rights() {
    let (mut t, root) = T::new(tree(), false);
    let inv = OF::DIRECTORY | OF::CREATE;
    assert_eq!(code(t.open(&root, "n", inv, DF::READ)), E::Invalid);
    assert_eq!(
        code(t.open(&root, "d/f", OF::DIRECTORY, DF::READ)),
        E::NotDirectory
    );
    assert_eq!(
        code(t.open(&root, "d/f", OF::CREATE | OF::EXCLUSIVE, DF::WRITE)),
        E::Exist
    );
    assert_eq!(
        code(t.open(&root, "d", OF::empty(), DF::WRITE)),
        E::IsDirectory
    );
    let nofollow = t.v().open_at(
        borrow(&root),
        PF::empty(),
        "d/up".into(),
        OF::empty(),
        DF::READ,
    );
    assert_eq!(code(nofollow), E::Loop);

    // Read-only descriptor: no write, no set-size, no write stream.
    let r = t.open(&root, "d/f", OF::empty(), DF::READ).unwrap();
    assert_eq!(t.v().get_flags(borrow(&r)).unwrap(), DF::READ);
    assert_eq!(
        t.v().get_type(borrow(&r)).unwrap(),
        DescriptorType::RegularFile
    );
    assert_eq!(
        code(t.v().write(borrow(&r), b"x".to_vec(), 0)),
        E::BadDescriptor
    );
    assert_eq!(code(t.v().set_size(borrow(&r), 0)), E::BadDescriptor);
    assert_eq!(
        code(t.v().write_via_stream(borrow(&r), 0)),
        E::BadDescriptor
    );
    assert_eq!(code(t.v().append_via_stream(borrow(&r))), E::BadDescriptor);
    // Write-only: no reading.
    let w = t.open(&root, "d/f", OF::empty(), DF::WRITE).unwrap();
    assert_eq!(code(t.v().read(borrow(&w), 4, 0)), E::BadDescriptor);
    assert_eq!(code(t.v().read_via_stream(borrow(&w), 0)), E::BadDescriptor);
    // Truncate through open.
    let tr = t
        .open(&root, "d/f", OF::TRUNCATE, DF::READ | DF::WRITE)
        .unwrap();
    assert_eq!(t.v().stat(borrow(&tr)).unwrap().size, 0);
    // File-only calls on a directory, directory calls on a file.
    assert_eq!(code(t.v().read(borrow(&root), 1, 0)), E::BadDescriptor);
    assert_eq!(
        code(t.v().read_via_stream(borrow(&root), 0)),
        E::IsDirectory
    );
    assert_eq!(
        code(t.v().create_directory_at(borrow(&r), "x".into())),
        E::NotDirectory
    );
    assert_eq!(code(t.v().read_directory(borrow(&r))), E::NotDirectory);
    // The root preopen may change the tree.
    assert_eq!(
        t.v().get_flags(borrow(&root)).unwrap(),
        DF::READ | DF::MUTATE_DIRECTORY
    );
}

#[test]
fn read_only_preopen_refuses_every_change() {
    let (mut t, root) = T::new(tree(), true);
    assert_eq!(t.v().get_flags(borrow(&root)).unwrap(), DF::READ);
    let ro = E::ReadOnly;
    assert_eq!(code(t.open(&root, "n", OF::CREATE, DF::READ)), ro);
    assert_eq!(code(t.open(&root, "d/f", OF::empty(), DF::WRITE)), ro);
    assert_eq!(code(t.open(&root, "d/f", OF::TRUNCATE, DF::READ)), ro);
    assert_eq!(
        code(t.open(&root, "d", OF::DIRECTORY, DF::MUTATE_DIRECTORY)),
        ro
    );
    // Directories opened beneath it inherit the refusal.
    let d = t.open(&root, "d", OF::DIRECTORY, DF::READ).unwrap();
    let v = &mut t.v();
    assert_eq!(code(v.create_directory_at(borrow(&d), "x".into())), ro);
    assert_eq!(code(v.remove_directory_at(borrow(&d), "sub".into())), ro);
    assert_eq!(code(v.unlink_file_at(borrow(&d), "f".into())), ro);
    assert_eq!(code(v.symlink_at(borrow(&d), "f".into(), "l".into())), ro);
    assert_eq!(
        code(v.rename_at(borrow(&d), "f".into(), borrow(&d), "g".into())),
        ro
    );
    assert_eq!(
        code(v.link_at(borrow(&d), PF::empty(), "f".into(), borrow(&d), "h".into())),
        ro
    );
    let now = || NewTimestamp::Now;
    assert_eq!(
        code(v.set_times_at(borrow(&d), PF::empty(), "f".into(), now(), now())),
        ro
    );
    assert_eq!(code(v.set_times(borrow(&d), now(), now())), ro);
    // Reading still works.
    let f = t.open(&d, "f", OF::empty(), DF::READ).unwrap();
    assert_eq!(
        t.v().read(borrow(&f), 100, 0).unwrap(),
        (b"0123456789".to_vec(), false)
    );
    assert_eq!(code(t.v().set_times(borrow(&f), now(), now())), ro);
    drop(t.ctx.into_vfs());
}

#[test]
fn same_object_and_metadata_hash() {
    let (mut t, root) = T::new(tree(), false);
    t.v()
        .link_at(
            borrow(&root),
            PF::empty(),
            "d/f".into(),
            borrow(&root),
            "hard".into(),
        )
        .unwrap();
    let a = t.open(&root, "d/f", OF::empty(), DF::READ).unwrap();
    let b = t.open(&root, "hard", OF::empty(), DF::READ).unwrap();
    let d = t.open(&root, "d", OF::DIRECTORY, DF::READ).unwrap();
    assert!(t.v().is_same_object(borrow(&a), borrow(&b)).unwrap());
    assert!(!t.v().is_same_object(borrow(&a), borrow(&d)).unwrap());
    let ha = t.v().metadata_hash(borrow(&a)).unwrap();
    let hb = t
        .v()
        .metadata_hash_at(borrow(&root), PF::empty(), "hard".into())
        .unwrap();
    let hd = t.v().metadata_hash(borrow(&d)).unwrap();
    assert_eq!((ha.lower, ha.upper), (hb.lower, hb.upper));
    assert_ne!(ha.lower, hd.lower);
    assert_eq!(t.v().stat(borrow(&a)).unwrap().link_count, 2);
}

fn input(t: &mut T, r: Resource<DynInputStream>) -> &mut DynInputStream {
    t.table.get_mut(&r).unwrap()
}

#[test]
fn streams_follow_their_descriptor() {
    let (mut t, root) = T::new(tree(), false);
    let f = t
        .open(&root, "d/f", OF::empty(), DF::READ | DF::WRITE)
        .unwrap();
    let rs = t.v().read_via_stream(borrow(&f), 2).unwrap();
    let rs2 = Resource::<DynInputStream>::new_own(rs.rep());
    assert_eq!(&input(&mut t, rs2).read(3).unwrap()[..], b"234");

    // Unlinked while open: still readable and writable, like POSIX.
    t.v().unlink_file_at(borrow(&root), "d/f".into()).unwrap();
    let ws = t.v().append_via_stream(borrow(&f)).unwrap();
    let out: &mut DynOutputStream = t.table.get_mut(&ws).unwrap();
    assert!(out.check_write().unwrap() > 0);
    out.write(bytes::Bytes::from_static(b"AB")).unwrap();
    out.flush().unwrap();
    let s = input(&mut t, Resource::new_own(rs.rep()));
    assert_eq!(&s.read(100).unwrap()[..], b"56789AB");
    assert!(
        matches!(s.read(1), Err(StreamError::Closed)),
        "EOF ends the stream"
    );

    // Descriptor closed: the stream fails with bad-descriptor (EBADF).
    let rs = t.v().read_via_stream(borrow(&f), 0).unwrap();
    let rep = rs.rep();
    types::HostDescriptor::drop(&mut t.v(), f).unwrap();
    let err = match input(&mut t, Resource::new_own(rep)).read(4) {
        Err(StreamError::LastOperationFailed(e)) => e,
        other => panic!("{other:?}"),
    };
    let e = t.table.push(err).unwrap();
    assert_eq!(
        types::Host::filesystem_error_code(&mut t.v(), e).unwrap(),
        Some(E::BadDescriptor)
    );
    let w: &mut DynOutputStream = t.table.get_mut(&ws).unwrap();
    assert!(matches!(
        w.write(bytes::Bytes::from_static(b"x")),
        Err(StreamError::LastOperationFailed(_))
    ));

    // The embedder takes the tree back: descriptors close, streams end.
    let vfs = t.ctx.into_vfs();
    assert_eq!(vfs.usage().open_files, 0);
    vfs.check_invariants().unwrap();
    let w: &mut DynOutputStream = t.table.get_mut(&ws).unwrap();
    assert!(matches!(w.check_write(), Err(StreamError::Closed)));
}

#[test]
fn directory_stream_pages_past_changes() {
    let mut v = Vfs::new();
    for i in 0..600 {
        v.write_file(&format!("/f{i:04}"), b"").unwrap();
    }
    let (mut t, root) = T::new(v, false);
    let s = t.v().read_directory(borrow(&root)).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = t.v().read_directory_entry(borrow(&s)).unwrap() {
        assert_eq!(e.type_, DescriptorType::RegularFile);
        if seen.len() == 300 {
            // Changes mid-listing: entries present throughout appear once.
            t.v().unlink_file_at(borrow(&root), "f0000".into()).unwrap();
            t.v().unlink_file_at(borrow(&root), "f0599".into()).unwrap();
        }
        seen.push(e.name);
    }
    assert_eq!(seen.len(), 599);
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len());
}

#[test]
fn read_is_bounded_by_the_file() {
    let (mut t, root) = T::new(tree(), false);
    let f = t.open(&root, "d/f", OF::empty(), DF::READ).unwrap();
    // A guest asking for 2^64 bytes gets what the file holds.
    assert_eq!(
        t.v().read(borrow(&f), u64::MAX, 8).unwrap(),
        (b"89".to_vec(), false)
    );
    assert_eq!(
        t.v().read(borrow(&f), u64::MAX, 1 << 40).unwrap(),
        (vec![], true)
    );
    let big = NewTimestamp::Timestamp(types::Datetime {
        seconds: u64::MAX,
        nanoseconds: 0,
    });
    assert_eq!(
        code(t.v().set_times(borrow(&f), big, NewTimestamp::NoChange)),
        E::Overflow
    );
}

/// The names in a directory, through a directory stream.
fn names(t: &mut T, dir: &Resource<Descriptor>) -> Vec<String> {
    let s = t.v().read_directory(borrow(dir)).unwrap();
    let mut out = Vec::new();
    while let Some(e) = t.v().read_directory_entry(borrow(&s)).unwrap() {
        out.push(e.name);
    }
    types::HostDirectoryEntryStream::drop(&mut t.v(), s).unwrap();
    out
}

#[test]
fn preopens_are_resolved_once() {
    // Nested preopens: /srv/box as /box, and /srv/box/inner as /inner.
    let mut vfs = Vfs::new();
    vfs.create_dir_all("/srv/box/inner").unwrap();
    vfs.write_file("/srv/box/inner/inside", b"").unwrap();
    vfs.write_file("/secret", b"").unwrap();
    let mut ctx = WasiVfsCtx::new(vfs);
    ctx.preopen("/srv/box", "/box").unwrap();
    ctx.preopen_read_only("/srv/box/inner", "/inner").unwrap();
    let mut t = T {
        ctx,
        table: ResourceTable::new(),
    };
    let dirs = t.v().get_directories().unwrap();
    let names_of = |dirs: &[(Resource<Descriptor>, String)]| -> Vec<String> {
        dirs.iter().map(|(_, g)| g.clone()).collect()
    };
    assert_eq!(names_of(&dirs), ["/box", "/inner"]);
    let boxed = borrow(&dirs[0].0);
    // Through /box, the guest moves the inner preopen away and puts a
    // symlink to / in its place.
    t.v()
        .rename_at(
            borrow(&boxed),
            "inner".into(),
            borrow(&boxed),
            "moved".into(),
        )
        .unwrap();
    t.v()
        .symlink_at(borrow(&boxed), "../..".into(), "inner".into())
        .unwrap();
    // Asking for the preopens again gives the same directories, not `/`.
    let again = t.v().get_directories().unwrap();
    assert_eq!(names_of(&again), ["/box", "/inner"]);
    assert_eq!(names(&mut t, &again[1].0), ["inside"]);
    assert_eq!(names(&mut t, &again[0].0), ["inner", "moved"]);
    // Still read-only, and the same object as before.
    assert_eq!(
        code(t.v().create_directory_at(borrow(&again[1].0), "x".into())),
        E::ReadOnly
    );
    assert!(
        t.v()
            .is_same_object(borrow(&again[1].0), borrow(&dirs[1].0))
            .unwrap()
    );
    // Dropping every guest descriptor of a preopen leaves it usable.
    for (d, _) in dirs.into_iter().chain(again) {
        types::HostDescriptor::drop(&mut t.v(), d).unwrap();
    }
    let third = t.v().get_directories().unwrap();
    assert_eq!(names(&mut t, &third[1].0), ["inside"]);
    let vfs = t.ctx.into_vfs();
    assert_eq!(vfs.usage().open_files, 0);
    vfs.check_invariants().unwrap();
}

#[test]
fn held_resources_count_against_max_open_files() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "data").unwrap();
    let vfs = Vfs::with_limits(crate::Limits {
        max_open_files: 8,
        ..crate::Limits::default()
    });
    let mut ctx = WasiVfsCtx::new(vfs);
    ctx.mount(host.path(), "/m", false).unwrap();
    let mut t = T {
        ctx,
        table: ResourceTable::new(),
    };
    let mut dirs = t.v().get_directories().unwrap();
    let (m, _) = dirs.remove(0);
    // Mount descriptors, directory streams and file streams, mixed, until
    // the limit: the preopen holds 1 of the 8.
    let mut held = Vec::new();
    let mut streams = Vec::new();
    let mut dir_streams = Vec::new();
    for i in 0.. {
        let r = match i % 3 {
            0 => t.open(&m, "f", OF::empty(), DF::READ).map(|f| held.push(f)),
            1 => t
                .v()
                .read_directory(borrow(&m))
                .map(|s| dir_streams.push(s)),
            _ => t
                .v()
                .read_via_stream(borrow(&held[0]), 0)
                .map(|s| streams.push(s)),
        };
        if let Err(e) = r {
            assert_eq!(e.code(), Some(E::InsufficientMemory));
            assert_eq!(i, 7);
            break;
        }
        assert!(i < 7);
    }
    // Each kind is refused once full.
    assert_eq!(
        code(t.open(&m, "f", OF::empty(), DF::READ)),
        E::InsufficientMemory
    );
    assert_eq!(
        code(t.v().read_directory(borrow(&m))),
        E::InsufficientMemory
    );
    assert_eq!(
        code(t.v().read_via_stream(borrow(&held[0]), 0)),
        E::InsufficientMemory
    );
    assert_eq!(
        code(t.open(&m, ".", OF::DIRECTORY, DF::READ)),
        E::InsufficientMemory
    );
    assert!(t.v().get_directories().is_err());
    // Dropping what was held frees the room again.
    for s in streams {
        t.table.delete(s).unwrap();
    }
    for s in dir_streams {
        types::HostDirectoryEntryStream::drop(&mut t.v(), s).unwrap();
    }
    for f in held {
        types::HostDescriptor::drop(&mut t.v(), f).unwrap();
    }
    let mut again = Vec::new();
    while let Ok(f) = t.open(&m, "f", OF::empty(), DF::READ) {
        again.push(f);
    }
    assert_eq!(again.len(), 7);
}

#[test]
fn memory_descriptors_and_held_resources_share_the_limit() {
    let mut vfs = Vfs::with_limits(crate::Limits {
        max_open_files: 6,
        ..crate::Limits::default()
    });
    vfs.write_file("/f", b"x").unwrap();
    let mut ctx = WasiVfsCtx::new(vfs);
    ctx.preopen("/", "/").unwrap();
    let mut t = T {
        ctx,
        table: ResourceTable::new(),
    };
    let (root, _) = t.v().get_directories().unwrap().remove(0);
    // The preopen's anchor and its guest descriptor take 2 of 6.
    let f = t.open(&root, "f", OF::empty(), DF::READ).unwrap();
    let _s1 = t.v().read_via_stream(borrow(&f), 0).unwrap();
    let _s2 = t.v().read_directory(borrow(&root)).unwrap();
    let _s3 = t.v().read_via_stream(borrow(&f), 0).unwrap();
    assert_eq!(
        code(t.open(&root, "f", OF::empty(), DF::READ)),
        E::InsufficientMemory
    );
    assert_eq!(
        code(t.v().read_via_stream(borrow(&f), 0)),
        E::InsufficientMemory
    );
}
