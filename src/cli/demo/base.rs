//! Step 1: the base image — thousands of small files and one large data
//! file — built once and frozen into a snapshot in O(1).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use cowvfs::{FileType, Limits, OpenOptions, Snapshot, Usage, Vfs};

use super::Config;
use super::report::{dur, mib, row, short_hash, thousands};

pub struct Base {
    /// The writable tree the snapshot was taken from (its root hash must
    /// still match after every sandbox ran).
    pub vfs: Vfs,
    pub snap: Snapshot,
    pub usage: Usage,
    /// How long cloning a deep copy of the same files takes.
    pub deep_copy_time: Duration,
}

pub fn run(cfg: &Config, out: &mut dyn Write) -> anyhow::Result<Base> {
    let t = Instant::now();
    let vfs = build(cfg)?;
    let build_time = t.elapsed();
    let t = Instant::now();
    let snap = vfs.snapshot();
    let snap_time = t.elapsed();
    let usage = snap.usage();
    writeln!(out, "1. Base image")?;
    row(
        out,
        "built",
        format!(
            "{} files in /app and a {} data file ({} in all) in {}",
            thousands(cfg.files as u64),
            mib(cfg.big_file as u64),
            mib(usage.held_bytes),
            dur(build_time)
        ),
    )?;
    row(
        out,
        "snapshot",
        format!("{} (O(1): one pointer copy)", dur(snap_time)),
    )?;
    row(out, "root hash", short_hash(&snap.root_hash()))?;
    let naive = deep_copy_of(&snap)?;
    let t = Instant::now();
    let copy = naive.clone();
    let deep_copy_time = t.elapsed();
    drop(copy);
    drop(naive);
    Ok(Base {
        vfs,
        snap,
        usage,
        deep_copy_time,
    })
}

pub(super) fn build(cfg: &Config) -> anyhow::Result<Vfs> {
    // A base is all its own data: it may hold more than a fork's
    // private-byte quota (the forks get the default limits).
    let mut v = Vfs::with_limits(Limits {
        max_private_bytes: u64::MAX,
        ..Limits::default()
    });
    v.create_dir_all("/app/notes")?;
    v.create_dir_all("/app/data")?;
    for i in 0..cfg.files {
        let dir = format!("/app/lib/pkg{:03}", i / 100);
        if i % 100 == 0 {
            v.create_dir_all(&dir)?;
        }
        let body = format!("# module {i}\ndef f{i}(x):\n    return x * {i}\n");
        v.write_file(&format!("{dir}/mod{i}.py"), body.as_bytes())?;
    }
    v.write_file("/app/notes/note.txt", b"base\n")?;
    // Unique content per chunk, so dedup does not flatter the checkpoint.
    let fd = v.open(
        "/app/data/blob.bin",
        OpenOptions::new().write(true).create(true),
    )?;
    let mut block = vec![0u8; 1 << 20];
    let mut off = 0usize;
    while off < cfg.big_file {
        let n = block.len().min(cfg.big_file - off);
        for (j, b) in block[..n].iter_mut().enumerate() {
            let x = (off + j) as u64;
            *b = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
        }
        v.write_at(fd, &block[..n], off as u64)?;
        off += n;
    }
    v.close(fd)?;
    Ok(v)
}

/// The tree as a deep-copy VFS would hold it, to time its clone.
fn deep_copy_of(snap: &Snapshot) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut work = vec![String::new()];
    while let Some(dir) = work.pop() {
        let listed = if dir.is_empty() { "/" } else { dir.as_str() };
        for e in snap.read_dir(listed)? {
            let p = format!("{dir}/{}", e.name);
            match e.kind {
                FileType::Dir => work.push(p),
                FileType::File => {
                    let data = snap.read_file(&p)?;
                    out.insert(p, data);
                }
                FileType::Symlink => {}
            }
        }
    }
    Ok(out)
}
