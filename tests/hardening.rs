//! Hardening of the engine against hostile input: file offsets near the
//! end of the u64 range, crafted checkpoints, and sandboxes that try to
//! make the host hold far more than their quotas.

use std::io::{Cursor, Write};
use std::ops::ControlFlow;

use cowvfs::{ChangeKind, ErrorKind, Limits, OpenOptions, Snapshot, Vfs, checkpoint};

fn kind<T: std::fmt::Debug>(r: cowvfs::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

fn save(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    s.save_to(&mut out).unwrap();
    out
}

// -------------------------------------------------------------------------
// Offsets near u64::MAX

#[test]
fn read_at_the_end_of_the_offset_space() {
    let mut v = Vfs::with_limits(Limits {
        max_file_size: u64::MAX,
        ..Limits::default()
    });
    let fd = v
        .open("/f", OpenOptions::new().read(true).write(true).create(true))
        .unwrap();
    v.write_at(fd, b"x", u64::MAX - 1).unwrap();
    assert_eq!(v.file_metadata(fd).unwrap().len, u64::MAX);
    let mut buf = [7u8; 10];
    assert_eq!(v.read_at(fd, &mut buf, u64::MAX - 10).unwrap(), 10);
    assert_eq!(buf, [0, 0, 0, 0, 0, 0, 0, 0, 0, b'x']);
    // A read that starts in a hole before the last chunk and runs into it.
    let mut big = vec![7u8; 200_000];
    assert_eq!(
        v.read_at(fd, &mut big, u64::MAX - 200_000).unwrap(),
        200_000
    );
    assert!(big[..199_999].iter().all(|&b| b == 0));
    assert_eq!(big[199_999], b'x');
    // Writes past the end of the offset space fail, changing nothing.
    assert_eq!(
        kind(v.write_at(fd, b"yy", u64::MAX - 1)),
        ErrorKind::FileTooLarge
    );
    assert_eq!(
        kind(v.write_at(fd, b"y", u64::MAX)),
        ErrorKind::FileTooLarge
    );
    // The last chunk can be rewritten, cut and grown again.
    v.write_at(fd, b"z", u64::MAX - 1).unwrap();
    v.set_len(fd, u64::MAX - 5).unwrap();
    v.set_len(fd, u64::MAX).unwrap();
    assert_eq!(v.read_at(fd, &mut buf, u64::MAX - 10).unwrap(), 10);
    assert_eq!(buf, [0; 10]);
    v.check_invariants().unwrap();
}

#[test]
fn checkpoint_files_over_the_loaders_file_size_are_refused() {
    let huge = Limits {
        max_file_size: u64::MAX,
        ..Limits::default()
    };
    let mut v = Vfs::with_limits(huge.clone());
    let fd = v
        .open("/f", OpenOptions::new().write(true).create(true))
        .unwrap();
    v.write_at(fd, b"x", u64::MAX - 1).unwrap();
    v.close(fd).unwrap();
    let bytes = save(&v.snapshot());
    // Under the default limits (4 TiB files) the file is refused, on a full
    // load and on a lazy open alike.
    let e = Snapshot::load_from(Cursor::new(&bytes)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FileTooLarge, "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.ck");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(kind(Snapshot::open(&path)), ErrorKind::FileTooLarge);
    assert_eq!(kind(Snapshot::load(&path)), ErrorKind::FileTooLarge);
    // A loader that allows it gets a tree that reads without panicking.
    let s = Snapshot::open_with_limits(&path, None, &huge).unwrap();
    s.check_invariants().unwrap();
    let mut f = s.fork();
    let fd = f.open("/f", OpenOptions::new().read(true)).unwrap();
    let mut buf = [1u8; 10];
    assert_eq!(f.read_at(fd, &mut buf, u64::MAX - 10).unwrap(), 10);
    assert_eq!(buf[9], b'x');
}

#[test]
fn sizes_that_add_up_past_u64_fail_cleanly() {
    let mut v = Vfs::with_limits(Limits::unlimited());
    let top = Limits::unlimited().max_file_size;
    let mut errors = Vec::new();
    for i in 0..3 {
        let fd = v
            .open(
                &format!("/f{i}"),
                OpenOptions::new().write(true).create(true),
            )
            .unwrap();
        if let Err(e) = v.write_at(fd, b"x", top - 1) {
            errors.push(e.kind());
        }
        if let Err(e) = v.set_len(fd, top) {
            errors.push(e.kind());
        }
        v.close(fd).unwrap();
    }
    // Two files of 2^63 - 1 bytes fit in the sum of sizes; a third does not.
    assert_eq!(errors, [ErrorKind::FileTooLarge, ErrorKind::FileTooLarge]);
    assert_eq!(v.usage().logical_bytes, 2 * top);
    v.check_invariants().unwrap();
}

// -------------------------------------------------------------------------
// Metadata sections that claim to be huge

/// A checkpoint whose header claims `meta_len` bytes of metadata, padded
/// (sparsely) to the length the header describes.
fn lying_checkpoint(dir: &std::path::Path, meta_len: u64) -> std::path::PathBuf {
    let mut v = Vfs::new();
    v.write_file("/a", b"a").unwrap();
    let bytes = save(&v.snapshot());
    let header_len = 45 + 48;
    let data_len = u64::from_le_bytes(bytes[53..61].try_into().unwrap());
    let mut head = bytes[..header_len].to_vec();
    head[45..53].copy_from_slice(&meta_len.to_le_bytes());
    let path = dir.join(format!("lying-{meta_len}.ck"));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&head).unwrap();
    f.set_len(header_len as u64 + meta_len + data_len + 32)
        .unwrap();
    path
}

#[test]
fn a_sparse_file_claiming_a_huge_metadata_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 1 TiB: allocating it would abort the process.
    let path = lying_checkpoint(dir.path(), 1 << 40);
    let e = Snapshot::open(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("byte limit"), "{e}");
    assert_eq!(kind(checkpoint::inspect(&path)), ErrorKind::Corrupt);
    assert_eq!(kind(Snapshot::load(&path)), ErrorKind::Corrupt);
    // Within the loader's max_bytes, the bytes are read as they come and
    // fail to verify: no allocation of the claimed size up front.
    let path = lying_checkpoint(dir.path(), 1 << 20);
    let small = Limits {
        max_bytes: 1 << 16,
        ..Limits::default()
    };
    assert_eq!(
        kind(Snapshot::open_with_limits(&path, None, &small)),
        ErrorKind::Corrupt
    );
    assert_eq!(kind(Snapshot::open(&path)), ErrorKind::Corrupt);
}

// -------------------------------------------------------------------------
// The loader's limits, not the file's

#[test]
fn a_checkpoint_never_raises_its_own_limits() {
    let mut v = Vfs::with_limits(Limits {
        max_bytes: u64::MAX,
        max_inodes: u64::MAX,
        max_symlink_hops: u32::MAX,
        max_private_bytes: u64::MAX,
        ..Limits::default()
    });
    v.write_file("/f", b"data").unwrap();
    // A chain of 50 symlinks: over the default 40 hops.
    v.symlink("/f", "/l0").unwrap();
    for i in 1..50 {
        v.symlink(&format!("/l{}", i - 1), &format!("/l{i}"))
            .unwrap();
    }
    assert_eq!(v.read_file("/l49").unwrap(), b"data");
    let bytes = save(&v.snapshot());

    let s = Snapshot::load_from(Cursor::new(&bytes)).unwrap();
    assert_eq!(s.limits(), &Limits::default());
    assert_eq!(kind(s.read_file("/l49")), ErrorKind::Loop);
    let f = s.fork();
    assert_eq!(f.limits(), &Limits::default());
    assert_eq!(kind(f.read_file("/l49")), ErrorKind::Loop);
    // The loader decides.
    let mine = Limits {
        max_symlink_hops: 100,
        ..Limits::default()
    };
    let s = Snapshot::load_from_with_limits(Cursor::new(&bytes), None, &mine).unwrap();
    assert_eq!(s.limits(), &mine);
    assert_eq!(s.read_file("/l49").unwrap(), b"data");
    // A delta's limits are its loader's too.
    let base = Snapshot::load_from(Cursor::new(&bytes)).unwrap();
    let mut w = base.fork_with_limits(Limits::unlimited());
    w.write_file("/g", b"more").unwrap();
    let mut delta = Vec::new();
    w.snapshot().save_delta_to(&base, &mut delta).unwrap();
    let d = Snapshot::load_delta_from(Cursor::new(&delta), &base).unwrap();
    assert_eq!(d.limits(), &Limits::default());
}

#[test]
fn names_and_targets_in_a_checkpoint_obey_the_loaders_limits() {
    let wide = Limits {
        max_name_len: 1000,
        max_path_len: 10_000,
        ..Limits::default()
    };
    let mut v = Vfs::with_limits(wide.clone());
    let long = "n".repeat(300);
    v.write_file(&format!("/{long}"), b"x").unwrap();
    let bytes = save(&v.snapshot());
    let e = Snapshot::load_from(Cursor::new(&bytes)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NameTooLong, "{e}");
    Snapshot::load_from_with_limits(Cursor::new(&bytes), None, &wide).unwrap();

    let mut v = Vfs::with_limits(wide.clone());
    v.symlink(&"t/".repeat(3000), "/s").unwrap();
    let bytes = save(&v.snapshot());
    let e = Snapshot::load_from(Cursor::new(&bytes)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NameTooLong, "{e}");
    let s = Snapshot::load_from_with_limits(Cursor::new(&bytes), None, &wide).unwrap();
    assert_eq!(s.read_link("/s").unwrap().len(), 6000);
}

#[test]
fn a_checkpoint_over_the_loaders_quotas_is_refused() {
    let mut v = Vfs::new();
    for i in 0..20 {
        v.write_file(&format!("/f{i}"), &[i as u8; 1000]).unwrap();
    }
    let snap = v.snapshot();
    let bytes = save(&snap);
    let few = Limits {
        max_inodes: 10,
        ..Limits::default()
    };
    assert_eq!(
        kind(Snapshot::load_from_with_limits(
            Cursor::new(&bytes),
            None,
            &few
        )),
        ErrorKind::QuotaExceeded
    );
    let small = Limits {
        max_bytes: snap.usage().charged_bytes - 1,
        ..Limits::default()
    };
    assert_eq!(
        kind(Snapshot::load_from_with_limits(
            Cursor::new(&bytes),
            None,
            &small
        )),
        ErrorKind::NoSpace
    );
    let exact = Limits {
        max_bytes: snap.usage().charged_bytes,
        ..Limits::default()
    };
    let s = Snapshot::load_from_with_limits(Cursor::new(&bytes), None, &exact).unwrap();
    // A load recomputes exactly what the tree is charged.
    assert_eq!(s.usage(), snap.usage());
}

/// Compressed chunks are checked against the loader's byte limit before
/// any is decompressed: a small file of highly compressible chunks cannot
/// make a load allocate a thousand times its size first.
#[cfg(feature = "zstd")]
#[test]
fn compressed_chunks_are_charged_before_they_are_decompressed() {
    let mut v = Vfs::new();
    for i in 0..200u32 {
        let mut data = vec![7u8; 64 << 10];
        data[..4].copy_from_slice(&i.to_le_bytes());
        v.write_file(&format!("/f{i}"), &data).unwrap();
    }
    let snap = v.snapshot();
    let mut bytes = Vec::new();
    snap.save_to_with(
        &mut bytes,
        checkpoint::SaveOptions {
            compress: true,
            ..Default::default()
        },
    )
    .unwrap();
    // 12.5 MiB of chunks in a file a hundred times smaller.
    assert!(bytes.len() < 256 << 10, "{}", bytes.len());
    let small = Limits {
        max_bytes: 4 << 20,
        ..Limits::default()
    };
    let e = Snapshot::load_from_with_limits(Cursor::new(&bytes), None, &small).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(
        e.to_string().contains("stored chunks decode to more than"),
        "{e}"
    );
    // Under a limit that holds the tree, the same file loads.
    let s = Snapshot::load_from_with_limits(Cursor::new(&bytes), None, &Limits::default()).unwrap();
    assert_eq!(s.root_hash(), snap.root_hash());
}

// -------------------------------------------------------------------------
// Quotas bound the host's memory

fn tight() -> Limits {
    Limits {
        max_bytes: 1 << 20,
        max_inodes: 100,
        ..Limits::default()
    }
}

#[test]
fn hard_links_and_long_names_are_charged() {
    let mut v = Vfs::with_limits(tight());
    v.write_file("/f", b"x").unwrap();
    let start = v.usage();
    let mut made = 0;
    let err = loop {
        let name = format!("/{made:0>240}");
        match v.hard_link("/f", &name) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 100_000, "hard links are not charged");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    // Each link costs its 240-byte name plus the per-entry charge.
    assert!((2_000..4_000).contains(&made), "{made} links");
    let u = v.usage();
    assert!(u.charged_bytes <= 1 << 20, "{u:?}");
    assert_eq!(u.inodes, start.inodes);
    v.check_invariants().unwrap();
    // Removing them frees the charge, exactly.
    for i in 0..made {
        v.remove_file(&format!("/{i:0>240}")).unwrap();
    }
    assert_eq!(v.usage(), start);
    v.check_invariants().unwrap();
}

#[test]
fn symlink_targets_and_directories_are_charged() {
    let mut v = Vfs::with_limits(Limits {
        max_inodes: 1_000_000,
        ..tight()
    });
    let target = "t".repeat(4000);
    let mut made = 0;
    let err = loop {
        match v.symlink(&target, &format!("/s{made}")) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 10_000, "symlink targets are not charged");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!((200..300).contains(&made), "{made} symlinks");
    for i in 0..made {
        v.remove_file(&format!("/s{i}")).unwrap();
    }
    let mut dirs = 0;
    let err = loop {
        match v.create_dir(&format!("/d{dirs}")) {
            Ok(()) => dirs += 1,
            Err(e) => break e,
        }
        assert!(dirs < 100_000, "directories are not charged");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(dirs > 1000, "{dirs}");
    v.check_invariants().unwrap();
}

#[test]
fn renaming_to_a_longer_name_is_charged() {
    let mut v = Vfs::new();
    v.write_file("/e", b"x").unwrap();
    let room = v.usage().charged_bytes + 10;
    v.set_limits(Limits {
        max_bytes: room,
        ..Limits::default()
    });
    let before = (v.root_hash(), v.usage());
    assert_eq!(
        kind(v.rename("/e", &format!("/{}", "e".repeat(20)))),
        ErrorKind::NoSpace
    );
    assert_eq!((v.root_hash(), v.usage()), before);
    v.rename("/e", &format!("/{}", "e".repeat(11))).unwrap();
    assert_eq!(v.usage().charged_bytes, room);
    v.rename(&format!("/{}", "e".repeat(11)), "/f").unwrap();
    assert_eq!(v.usage().charged_bytes, room - 10);
    // No room for another file...
    assert_eq!(kind(v.write_file("/g", b"")), ErrorKind::NoSpace);
    // ...but renaming onto an existing name frees what it replaces: with
    // room for a second file, renaming it over the first gives back
    // exactly the replaced file's charge.
    v.set_limits(Limits::default());
    let one = v.usage().charged_bytes;
    v.write_file("/h", b"y").unwrap();
    let two = v.usage().charged_bytes;
    v.rename("/h", "/f").unwrap();
    assert_eq!(v.usage().charged_bytes, one, "two files cost {two}");
    assert_eq!(v.read_file("/f").unwrap(), b"y");
    v.check_invariants().unwrap();
}

#[test]
fn a_byte_in_every_chunk_is_charged_a_chunks_bookkeeping() {
    let mut v = Vfs::with_limits(tight());
    let fd = v
        .open("/f", OpenOptions::new().write(true).create(true))
        .unwrap();
    let mut chunks = 0u64;
    let err = loop {
        match v.write_at(fd, b"x", chunks * 65_536) {
            Ok(_) => chunks += 1,
            Err(e) => break e,
        }
        assert!(chunks < 1_000_000, "chunks are not charged");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    // One byte each, but each chunk costs its bookkeeping (about 200 bytes).
    assert!((3_000..6_000).contains(&chunks), "{chunks} chunks");
    assert_eq!(v.usage().held_bytes, chunks);
    v.check_invariants().unwrap();
    v.set_len(fd, 0).unwrap();
    v.close(fd).unwrap();
    v.remove_file("/f").unwrap();
    // Everything is freed (`allocated_bytes` only ever grows).
    let (u, empty) = (v.usage(), Vfs::with_limits(tight()).usage());
    assert_eq!(
        (u.charged_bytes, u.private_bytes, u.held_bytes, u.inodes),
        (empty.charged_bytes, 0, 0, 1)
    );
}

#[test]
fn growing_a_chunk_a_byte_at_a_time_allocates_what_is_charged() {
    let mut v = Vfs::new();
    let fd = v
        .open("/log", OpenOptions::new().append(true).create(true))
        .unwrap();
    for i in 0..100_000u32 {
        v.append(fd, &[(i % 251) as u8]).unwrap();
        if i % 9_999 == 0 {
            // The invariant check compares each chunk's capacity with its
            // charge.
            v.check_invariants().unwrap();
        }
    }
    v.check_invariants().unwrap();
    let u = v.usage();
    assert_eq!(u.held_bytes, 100_000);
    // Two chunks: at most an eighth over their data, plus bookkeeping.
    assert!(u.private_bytes <= 100_000 + 100_000 / 8 + 2 * 256, "{u:?}");
}

#[test]
fn copy_on_write_copies_count_against_max_private_bytes() {
    let mut base = Vfs::with_limits(Limits::unlimited());
    base.write_file("/big", &vec![5u8; 16 << 20]).unwrap();
    let snap = base.snapshot();
    let mut f = snap.fork_with_limits(Limits {
        max_bytes: snap.usage().charged_bytes + (1 << 20),
        max_private_bytes: 1 << 20,
        ..Limits::default()
    });
    assert_eq!(f.usage().private_bytes, 0);
    let fd = f.open("/big", OpenOptions::new().write(true)).unwrap();
    let mut copied = 0u64;
    let mut failed = None;
    for i in 0..256u64 {
        let before = (f.root_hash(), f.usage());
        match f.write_at(fd, b"!", i * 65_536 + 7) {
            Ok(_) => copied += 1,
            Err(e) => {
                // Nothing changed.
                assert_eq!((f.root_hash(), f.usage()), before);
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("a fork copied its whole base");
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert_eq!(
        copied, 15,
        "1 MiB holds 15 copied chunks with their overhead"
    );
    let u = f.usage();
    assert!(u.private_bytes <= 1 << 20, "{u:?}");
    f.check_invariants().unwrap();
    // Truncating frees the private copies; the base's chunks cost nothing.
    f.set_len(fd, 65_536 * 8).unwrap();
    let u = f.usage();
    assert_eq!(u.private_bytes, 8 * (65_536 + 192), "{u:?}");
    f.check_invariants().unwrap();
    // Cutting a base chunk copies what is kept of it.
    let mut g = snap.fork();
    let gd = g.open("/big", OpenOptions::new().write(true)).unwrap();
    g.set_len(gd, 100).unwrap();
    assert_eq!(g.usage().private_bytes, 112 + 192);
    g.check_invariants().unwrap();
    // A fork of a fork: its parent's chunks are its base.
    let child = f.snapshot().fork();
    assert_eq!(child.usage().private_bytes, 0);
    child.check_invariants().unwrap();
    // Removing the file frees every private chunk.
    f.close(fd).unwrap();
    f.remove_file("/big").unwrap();
    assert_eq!(f.usage().private_bytes, 0);
    f.check_invariants().unwrap();
}

#[test]
fn a_fresh_tree_is_all_private() {
    let mut v = Vfs::with_limits(Limits {
        max_private_bytes: 1 << 20,
        ..Limits::default()
    });
    v.write_file("/a", &vec![1u8; 900_000]).unwrap();
    let before = v.root_hash();
    assert_eq!(
        kind(v.write_file("/b", &vec![1u8; 200_000])),
        ErrorKind::NoSpace
    );
    v.remove_file("/b").unwrap();
    assert_eq!(v.root_hash(), before);
    v.check_invariants().unwrap();
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Runs the adversarial workloads alone in a child process (so no other
/// test's memory is counted) and checks what the host really holds.
#[test]
fn quotas_bound_the_hosts_real_memory() {
    // One process per workload: memory freed by one is not reused by the
    // next, so each is measured from a clean start.
    for workload in 0..WORKLOADS {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "memory_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HARDENING_WORKLOAD", workload.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        assert!(text.contains("resident memory grew"), "{text}");
    }
}

const WORKLOADS: usize = 4;

/// Something a sandbox does to make the host hold memory.
type Workload = Box<dyn Fn(&mut Vfs)>;

#[test]
#[ignore = "run by quotas_bound_the_hosts_real_memory in a process of its own"]
fn memory_child() {
    let limit = 1u64 << 20;
    let workloads: Vec<(&str, Workload)> = vec![
        (
            "hard links with long names",
            Box::new(|v: &mut Vfs| {
                v.write_file("/f", b"x").unwrap();
                for i in 0..1_000_000u32 {
                    if v.hard_link("/f", &format!("/{i:0>240}")).is_err() {
                        break;
                    }
                }
            }),
        ),
        (
            "a byte in every chunk",
            Box::new(|v: &mut Vfs| {
                let fd = v
                    .open("/f", OpenOptions::new().write(true).create(true))
                    .unwrap();
                for i in 0..1_000_000u64 {
                    if v.write_at(fd, b"x", i * 65_536).is_err() {
                        break;
                    }
                }
            }),
        ),
        (
            "empty directories",
            Box::new(|v: &mut Vfs| {
                for i in 0..1_000_000u32 {
                    if v.create_dir(&format!("/{i}")).is_err() {
                        break;
                    }
                }
            }),
        ),
        (
            "long symlinks",
            Box::new(|v: &mut Vfs| {
                let t = "t".repeat(4000);
                for i in 0..1_000_000u32 {
                    if v.symlink(&t, &format!("/{i}")).is_err() {
                        break;
                    }
                }
            }),
        ),
    ];
    assert_eq!(workloads.len(), WORKLOADS);
    // All of them when run by hand; the one asked for when run by the test.
    let only: Option<usize> = std::env::var("HARDENING_WORKLOAD")
        .ok()
        .map(|w| w.parse().unwrap());
    for (i, (what, work)) in workloads.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let mut v = Vfs::with_limits(Limits {
            max_bytes: limit,
            max_inodes: 1_000_000,
            ..Limits::default()
        });
        let before = rss();
        work(&mut v);
        let grew = rss().saturating_sub(before);
        let charged = v.usage().charged_bytes;
        println!("{what}: charged {charged}, resident memory grew {grew}");
        assert!(charged <= limit);
        assert!(
            grew <= 4 * limit,
            "{what}: the host holds {grew} bytes for a 1 MiB quota"
        );
        drop(v);
    }
}

// -------------------------------------------------------------------------
// Diff

/// A chain of `depth` directories with 255-byte names under `/top`.
fn deep_chain(v: &mut Vfs, depth: usize) {
    let name = "d".repeat(255);
    v.create_dir("/top").unwrap();
    let mut fd = v.open("/top", OpenOptions::new().directory(true)).unwrap();
    for _ in 0..depth {
        v.create_dir_at(fd, &name).unwrap();
        let next = v
            .open_at(fd, &name, OpenOptions::new().directory(true))
            .unwrap();
        v.close(fd).unwrap();
        fd = next;
    }
    v.write_file("/top/leaf-marker", b"x").unwrap();
    v.close(fd).unwrap();
}

#[test]
fn diff_of_a_deep_chain_streams() {
    let base = Vfs::new().snapshot();
    let mut v = base.fork();
    deep_chain(&mut v, 20_000);
    let new = v.snapshot();
    // Collecting every path would hold about 50 GB; streaming holds one.
    let mut count = 0u64;
    let mut longest = 0usize;
    let flow = base.diff_each(&new, |kind, path| {
        assert_eq!(kind, ChangeKind::Added);
        count += 1;
        longest = longest.max(path.len());
        ControlFlow::Continue(())
    });
    assert_eq!(flow, ControlFlow::Continue(()));
    assert_eq!(count, 20_002);
    assert_eq!(longest, 4 + 20_000 * 256);
    // And it stops when told to.
    let mut seen = 0;
    let flow = base.diff_each(&new, |_, _| {
        seen += 1;
        if seen == 5 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(flow, ControlFlow::Break(()));
    assert_eq!(seen, 5);
    // Removing it streams the same way.
    let mut removed = 0u64;
    let _ = new.diff_each(&base, |kind, _| {
        assert_eq!(kind, ChangeKind::Removed);
        removed += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(removed, 20_002);
}

#[test]
fn diff_each_reports_what_diff_reports() {
    let mut v = Vfs::new();
    v.create_dir_all("/a/b/c").unwrap();
    v.write_file("/a/b/c/f", b"1").unwrap();
    v.write_file("/a/g", b"2").unwrap();
    v.write_file("/h", b"3").unwrap();
    v.hard_link("/h", "/a/h2").unwrap();
    v.symlink("g", "/a/s").unwrap();
    v.create_dir("/gone").unwrap();
    v.write_file("/gone/x", b"x").unwrap();
    let base = v.snapshot();
    let mut w = base.fork();
    w.write_file("/a/b/c/f", b"changed").unwrap();
    w.write_file("/h", b"changed too").unwrap();
    w.remove_file("/gone/x").unwrap();
    w.remove_dir("/gone").unwrap();
    w.write_file("/gone", b"now a file").unwrap();
    w.rename("/a/b", "/a/moved").unwrap();
    w.set_permissions("/a", 0o700).unwrap();
    w.remove_file("/a/s").unwrap();
    w.create_dir("/a/s").unwrap();
    w.write_file("/a/s/inside", b"i").unwrap();
    let new = w.snapshot();
    let mut streamed = Vec::new();
    let _ = base.diff_each(&new, |kind, path| {
        streamed.push((path.to_string(), kind));
        ControlFlow::Continue(())
    });
    streamed.sort();
    let listed: Vec<(String, ChangeKind)> = base
        .diff(&new)
        .iter()
        .map(|c| (c.path().to_string(), c.kind()))
        .collect();
    assert_eq!(streamed, listed);
    let shown: Vec<String> = listed.iter().map(|(p, k)| format!("{k:?} {p}")).collect();
    assert_eq!(
        shown,
        [
            "Modified /a",
            "Removed /a/b",
            "Removed /a/b/c",
            "Removed /a/b/c/f",
            "Modified /a/h2",
            "Added /a/moved",
            "Added /a/moved/c",
            "Added /a/moved/c/f",
            "Modified /a/s",
            "Added /a/s/inside",
            "Modified /gone",
            "Removed /gone/x",
            "Modified /h",
        ]
    );
}

// -------------------------------------------------------------------------
// Odds and ends

#[test]
fn names_never_outgrow_the_hash_encoding() {
    // The root hash stores a name's length in 16 bits: a longer name would
    // hash like a shorter one, whatever max_name_len allows.
    let mut v = Vfs::with_limits(Limits {
        max_name_len: 200_000,
        max_path_len: 400_000,
        ..Limits::default()
    });
    let long = "n".repeat(70_000);
    assert_eq!(
        kind(v.write_file(&format!("/{long}"), b"x")),
        ErrorKind::NameTooLong
    );
    assert_eq!(
        kind(v.create_dir(&format!("/{long}"))),
        ErrorKind::NameTooLong
    );
    v.write_file("/f", b"x").unwrap();
    assert_eq!(
        kind(v.hard_link("/f", &format!("/{long}"))),
        ErrorKind::NameTooLong
    );
    assert_eq!(
        kind(v.rename("/f", &format!("/{long}"))),
        ErrorKind::NameTooLong
    );
    v.write_file(&format!("/{}", "m".repeat(65_535)), b"ok")
        .unwrap();
    v.check_invariants().unwrap();
}

#[test]
fn fuzzing_hooks_reseal_a_checkpoint() {
    let mut v = Vfs::new();
    v.write_file("/a", b"hello").unwrap();
    v.create_dir("/d").unwrap();
    let snap = v.snapshot();
    let bytes = save(&snap);
    let (h, meta, data) = checkpoint::split_for_fuzzing(&bytes).unwrap();
    // Unchanged parts seal back to the very same file.
    assert_eq!(checkpoint::seal_for_fuzzing(&h, meta, data), bytes);
    // A changed byte of metadata gets past the hashes to the structural
    // checks.
    let mut seen_structural = false;
    for i in 0..meta.len() {
        let mut m = meta.to_vec();
        m[i] ^= 0x40;
        let sealed = checkpoint::seal_for_fuzzing(&h, &m, data);
        match Snapshot::load_from(Cursor::new(&sealed)) {
            Ok(s) => s.check_invariants().unwrap(),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains("does not match its hash"), "{msg}");
                assert!(!msg.contains("trailing hash"), "{msg}");
                seen_structural = true;
            }
        }
    }
    assert!(seen_structural);
    assert!(checkpoint::split_for_fuzzing(b"junk").is_none());
}

/// LEB128, as postcard writes a u64.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

#[test]
fn a_checkpoint_whose_sizes_add_up_past_u64_is_refused() {
    let huge = Limits {
        max_file_size: u64::MAX,
        ..Limits::default()
    };
    // Two files of 2^62 + 1 bytes, then the records made to say
    // 2^64 - 2 each (the hashes resealed): each file is valid alone.
    let size = (1u64 << 62) + 1;
    let mut v = Vfs::with_limits(huge.clone());
    for name in ["/a", "/b"] {
        let fd = v
            .open(name, OpenOptions::new().write(true).create(true))
            .unwrap();
        v.set_len(fd, size).unwrap();
        v.close(fd).unwrap();
    }
    let bytes = save(&v.snapshot());
    let (h, meta, data) = checkpoint::split_for_fuzzing(&bytes).unwrap();
    let (from, to) = (varint(size), varint(u64::MAX - 1));
    let mut patched = Vec::new();
    let mut i = 0;
    let mut hits = 0;
    while i < meta.len() {
        if meta[i..].starts_with(&from) {
            patched.extend_from_slice(&to);
            i += from.len();
            hits += 1;
        } else {
            patched.push(meta[i]);
            i += 1;
        }
    }
    assert_eq!(hits, 2, "both size records found");
    let sealed = checkpoint::seal_for_fuzzing(&h, &patched, data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sums.ck");
    std::fs::write(&path, &sealed).unwrap();
    // A lazy open does not recompute the root hash, so only the checked
    // sum stands between this file and a wrapped usage counter.
    let e = Snapshot::open_with_limits(&path, None, &huge).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("2^64"), "{e}");
    let e = checkpoint::inspect(&path).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

/// A checkpoint whose metadata says the next inode number is `next`
/// (the first field of the metadata), resealed: a tree of one file.
fn with_next_ino(next: u64) -> Vec<u8> {
    let mut v = Vfs::new();
    v.write_file("/a", b"a").unwrap();
    let bytes = save(&v.snapshot());
    let (h, meta, data) = checkpoint::split_for_fuzzing(&bytes).unwrap();
    let old = meta.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    let mut patched = varint(next);
    patched.extend_from_slice(&meta[old..]);
    checkpoint::seal_for_fuzzing(&h, &patched, data)
}

#[test]
fn a_next_inode_number_that_would_wrap_is_refused() {
    // At u64::MAX, the third create would wrap the number round to the
    // root's and put a file in its place.
    for next in [u64::MAX, (1 << 62) + 1] {
        let e = Snapshot::load_from(Cursor::new(with_next_ino(next))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("next inode number"), "{e}");
    }
    // At the limit itself the tree loads, and a create fails with
    // ENOSPC, changing nothing.
    let snap = Snapshot::load_from(Cursor::new(with_next_ino(1 << 62))).unwrap();
    let mut v = snap.fork();
    let e = v.write_file("/b", b"b").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    let e = v.create_dir("/d").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(!v.exists("/b") && !v.exists("/d"));
    assert_eq!(v.read_file("/a").unwrap(), b"a");
    assert!(v.read_dir("/").unwrap().iter().all(|e| e.name == "a"));
    v.snapshot().check_invariants().unwrap();
    // Everything but a create still works.
    v.remove_file("/a").unwrap();
    assert!(v.read_dir("/").unwrap().is_empty());
    v.snapshot().check_invariants().unwrap();
}

/// A list of empty names is one byte each on the wire and sixteen in
/// memory: metadata within the byte limit could ask for many times it.
/// Lists are now decoded within the loader's `max_bytes`.
#[test]
fn metadata_lists_are_decoded_within_the_byte_limit() {
    let bytes = save(&Vfs::new().snapshot());
    let (h, meta, data) = checkpoint::split_for_fuzzing(&bytes).unwrap();
    // The root is the one inode and the last record: a directory with no
    // entries (variant 2, length 0), then no removed inodes (length 0).
    assert!(meta.ends_with(&[2, 0, 0]), "{meta:?}");
    let n = 200_000u64;
    let mut patched = meta[..meta.len() - 3].to_vec();
    // A directory patch (variant 3): nothing set, `n` empty names removed.
    patched.extend_from_slice(&[3, 0]);
    patched.extend_from_slice(&varint(n));
    patched.extend(std::iter::repeat_n(0u8, n as usize));
    patched.push(0);
    let sealed = checkpoint::seal_for_fuzzing(&h, &patched, data);
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    assert!((sealed.len() as u64) < limits.max_bytes);
    let e = Snapshot::load_from_with_limits(Cursor::new(&sealed), None, &limits).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("byte limit"), "{e}");
    // Under a limit the lists fit in, the same file decodes and is then
    // refused for what it says (a patch in a full checkpoint).
    let e = Snapshot::load_from(Cursor::new(&sealed)).unwrap_err();
    assert!(!e.to_string().contains("byte limit"), "{e}");
}

#[test]
fn a_merge_that_would_number_inodes_past_the_limit_is_refused() {
    // Their new inodes are numbered after ours: 5 + 8 new ones past a
    // base 10 below the limit would end 3 above it, where the merged tree
    // could be saved but never loaded again.
    let base = Snapshot::load_from(Cursor::new(with_next_ino((1 << 62) - 10))).unwrap();
    let (mut ours, mut theirs) = (base.fork(), base.fork());
    for i in 0..5 {
        ours.write_file(&format!("/o{i}"), b"o").unwrap();
    }
    for i in 0..8 {
        theirs.write_file(&format!("/t{i}"), b"t").unwrap();
    }
    let opts = cowvfs::MergeOptions::default();
    let e = Snapshot::merge(&base, &ours.snapshot(), &theirs.snapshot(), &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    // Within the limit it merges.
    let mut few = base.fork();
    few.write_file("/t0", b"t").unwrap();
    let m = Snapshot::merge(&base, &ours.snapshot(), &few.snapshot(), &opts).unwrap();
    assert!(m.conflicts().is_empty());
    let merged = m.snapshot().unwrap();
    assert_eq!(merged.read_file("/t0").unwrap(), b"t");
    let back = Snapshot::load_from(Cursor::new(save(merged))).unwrap();
    assert_eq!(back.root_hash(), merged.root_hash());
}
