//! Differential driver: the same operations on the engine and on a real
//! directory of the host, comparing error kinds and the resulting trees.
//! Shared by `tests/os_diff.rs` and the `vfs_vs_os` fuzz target.
//!
//! Only operations whose meaning is the same on both sides are run: paths
//! without `.`/`..` and symlink targets that stay inside the directory
//! (the engine clamps at its root, the host would leave the temp dir), and
//! no permission changes (tests run as root, who bypasses permission bits).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use cowvfs::{ErrorKind, Vfs};

use super::model::{Op, apply_engine};

fn portable(p: &str) -> bool {
    p.starts_with('/') && p.split('/').all(|c| c != "." && c != "..")
}

fn portable_target(t: &str) -> bool {
    !t.is_empty() && !t.starts_with('/') && t.split('/').all(|c| c != "..")
}

/// Whether the driver runs this operation (others are skipped).
pub fn supported(op: &Op) -> bool {
    match op {
        Op::Mkdir(p) | Op::Rmdir(p) | Op::Unlink(p) | Op::Read(p) => portable(p),
        Op::WriteFile(p, _) | Op::WriteAt(p, _, _) | Op::Truncate(p, _) => portable(p),
        Op::Symlink(t, p) => portable_target(t) && portable(p),
        Op::Link(a, b) | Op::Rename(a, b) => portable(a) && portable(b),
        Op::Snapshot | Op::Fork(_) => false,
    }
}

fn kind_of(e: std::io::Error) -> ErrorKind {
    ErrorKind::from_io(&e)
}

fn host(root: &Path, p: &str) -> PathBuf {
    root.join(&p[1..])
}

fn os_apply(root: &Path, op: &Op) -> Result<Option<Vec<u8>>, ErrorKind> {
    let r = match op {
        Op::Mkdir(p) => fs::create_dir(host(root, p)).map(|_| None),
        Op::Rmdir(p) => fs::remove_dir(host(root, p)).map(|_| None),
        Op::Unlink(p) => fs::remove_file(host(root, p)).map(|_| None),
        Op::WriteFile(p, d) => fs::write(host(root, p), d).map(|_| None),
        Op::WriteAt(p, off, d) => fs::OpenOptions::new()
            .write(true)
            .open(host(root, p))
            .and_then(|f| f.write_all_at(d, *off))
            .map(|_| None),
        Op::Truncate(p, len) => fs::OpenOptions::new()
            .write(true)
            .open(host(root, p))
            .and_then(|f| f.set_len(*len))
            .map(|_| None),
        Op::Read(p) => fs::read(host(root, p)).map(Some),
        Op::Symlink(t, p) => std::os::unix::fs::symlink(t, host(root, p)).map(|_| None),
        Op::Link(a, b) => fs::hard_link(host(root, a), host(root, b)).map(|_| None),
        Op::Rename(a, b) => fs::rename(host(root, a), host(root, b)).map(|_| None),
        Op::Snapshot | Op::Fork(_) => Ok(None),
    };
    r.map_err(kind_of)
}

fn dump_os(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut work = vec![(root.to_path_buf(), "/".to_string())];
    while let Some((dir, name)) = work.pop() {
        out.insert(name.clone(), "dir".into());
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let p = if name == "/" {
                format!("/{n}")
            } else {
                format!("{name}/{n}")
            };
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.file_type().is_symlink() {
                let t = fs::read_link(e.path()).unwrap_or_default();
                out.insert(p, format!("link {}", t.to_string_lossy()));
            } else if m.is_dir() {
                work.push((e.path(), p));
            } else {
                let data = fs::read(e.path()).unwrap_or_default();
                out.insert(p, format!("file {} {}", m.nlink(), blake3::hash(&data)));
            }
        }
    }
    out
}

fn dump_engine(v: &Vfs) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        out.insert(dir.clone(), "dir".into());
        for e in v.read_dir(&dir).unwrap_or_default() {
            let p = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            match e.kind {
                cowvfs::FileType::Dir => work.push(p),
                cowvfs::FileType::Symlink => {
                    let t = v.read_link(&p).unwrap_or_default();
                    out.insert(p, format!("link {t}"));
                }
                cowvfs::FileType::File => {
                    let m = v.symlink_metadata(&p).map(|m| m.nlink).unwrap_or(0);
                    let data = v.read_file(&p).unwrap_or_default();
                    out.insert(p, format!("file {m} {}", blake3::hash(&data)));
                }
            }
        }
    }
    out
}

/// Runs the supported operations of `ops` on both sides in a fresh temp dir.
pub fn run_vs_os(ops: &[Op]) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = tmp.path();
    let mut v = Vfs::new();
    for (step, op) in ops.iter().enumerate() {
        if !supported(op) {
            continue;
        }
        let want = os_apply(root, op);
        let got = apply_engine(&mut v, op);
        if got != want {
            return Err(format!(
                "step {step}: {op:?}: engine {got:?}, host {want:?}"
            ));
        }
        v.check_invariants()
            .map_err(|e| format!("step {step}: {op:?}: {e}"))?;
        let (a, b) = (dump_engine(&v), dump_os(root));
        if a != b {
            return Err(format!(
                "step {step}: {op:?}: trees differ:\n engine {a:?}\n host   {b:?}"
            ));
        }
    }
    Ok(())
}
