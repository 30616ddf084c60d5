//! Sync: a tree brought up to date with a host directory, keeping every
//! object whose kind, size and times did not change.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::content::CHUNK_SIZE;
use crate::error::Result;
use crate::path;
use crate::vfs::{OpenOptions, SetTime, Vfs};

use super::import::{
    At, HostStep, import_file, link_target, open_host_file, read_full, start_walk,
    unsupported_file_type, walk_host,
};
use super::{ImportStats, guest_err, times_of, utf8_name};

/// Makes the directory `guest` in `vfs` identical to the host directory
/// `host`, like [`import_dir`](super::import_dir), but keeps every object that is already
/// right, and writes only the 64 KiB pieces of a file that differ. Start
/// from a fork of an earlier import and the result shares everything
/// unchanged with it, so a checkpoint delta or a diff against it is as
/// small as the change. Entries the host lacks are removed.
///
/// Access times alone do not count as a change (reading the host to
/// compare may move them).
pub fn sync_dir(vfs: &mut Vfs, host: &Path, guest: &str) -> Result<ImportStats> {
    sync_dir_with(vfs, host, guest, &mut |_| {})
}

/// [`sync_dir`] calling `progress` after each object.
pub fn sync_dir_with(
    vfs: &mut Vfs,
    host: &Path,
    guest: &str,
    progress: &mut dyn FnMut(&ImportStats),
) -> Result<ImportStats> {
    let (top, stats) = start_walk(vfs, host, guest)?;
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut old = vec![0u8; CHUNK_SIZE];
    walk_host(host, guest, top, stats, progress, &mut |step, stats| {
        match step {
            HostStep::Finish { g, meta } => set_meta_if_changed(vfs, g, meta)?,
            HostStep::Enter { h, g, names } => {
                // Writable while its entries change; Finish sets the mode.
                let gm = vfs.symlink_metadata(g).map_err(guest_err(g))?;
                if gm.mode & 0o700 != 0o700 {
                    vfs.set_permissions(g, gm.mode | 0o700)
                        .map_err(guest_err(g))?;
                }
                let mut wanted = std::collections::HashSet::new();
                for n in names {
                    wanted.insert(utf8_name(h, n)?);
                }
                for e in vfs.read_dir(g).map_err(guest_err(g))? {
                    if !wanted.contains(e.name.as_str()) {
                        remove_tree(vfs, &path::join(g, &e.name))?;
                    }
                }
            }
            HostStep::Link { gp, first } => {
                let cur = vfs.symlink_metadata(gp).ok();
                let first_ino = vfs.symlink_metadata(first).map(|m| m.ino).ok();
                if cur.is_none_or(|c| Some(c.ino) != first_ino) {
                    if cur.is_some() {
                        remove_tree(vfs, gp)?;
                    }
                    vfs.hard_link(first, gp).map_err(guest_err(gp))?;
                }
                stats.hard_links += 1;
            }
            HostStep::Object { at, gp, meta } => {
                let ft = meta.file_type();
                let cur = vfs.symlink_metadata(gp).ok();
                // Keep the guest object only if it is of the same kind
                // and not shared with names the host keeps apart.
                let keep = cur.is_some_and(|c| {
                    (ft.is_dir() && c.is_dir())
                        || (ft.is_symlink() && c.is_symlink())
                        || (ft.is_file() && c.is_file() && c.nlink == 1 && meta.nlink() == 1)
                });
                if cur.is_some() && !keep {
                    remove_tree(vfs, gp)?;
                }
                if ft.is_dir() {
                    if !keep {
                        vfs.create_dir(gp).map_err(guest_err(gp))?;
                    }
                    stats.dirs += 1;
                } else if ft.is_symlink() {
                    let target = link_target(at)?;
                    if keep && vfs.read_link(gp).ok().as_deref() != Some(target.as_str()) {
                        remove_tree(vfs, gp)?;
                    }
                    if vfs.symlink_metadata(gp).is_err() {
                        vfs.symlink(&target, gp).map_err(guest_err(gp))?;
                    }
                    set_meta_if_changed(vfs, gp, meta)?;
                    stats.symlinks += 1;
                } else if ft.is_file() {
                    if keep {
                        stats.bytes += sync_file(vfs, at, gp, meta, &mut buf, &mut old)?;
                        set_meta_if_changed(vfs, gp, meta)?;
                    } else {
                        stats.bytes += import_file(vfs, at, gp, meta, &mut buf)?;
                    }
                    stats.files += 1;
                } else {
                    return Err(unsupported_file_type(at.hp));
                }
            }
        }
        Ok(())
    })
}

/// Sets mode and times from the host, only where they differ, so an
/// unchanged object keeps its inode shared with the tree it came from.
pub(super) fn set_meta_if_changed(vfs: &mut Vfs, g: &str, meta: &fs::Metadata) -> Result<()> {
    let cur = vfs.symlink_metadata(g).map_err(guest_err(g))?;
    let mode = meta.mode() & 0o7777;
    if !cur.is_symlink() && cur.mode != mode {
        vfs.set_permissions(g, mode).map_err(guest_err(g))?;
    }
    let (a, m) = times_of(meta);
    if cur.mtime != m {
        vfs.set_symlink_times(g, SetTime::At(a), SetTime::At(m))
            .map_err(guest_err(g))?;
    }
    Ok(())
}

/// Rewrites the pieces of a guest file that differ from the host file.
pub(super) fn sync_file(
    vfs: &mut Vfs,
    at: At<'_>,
    gp: &str,
    meta: &fs::Metadata,
    buf: &mut [u8],
    old: &mut [u8],
) -> Result<u64> {
    let hp = at.hp;
    let (f, size) = open_host_file(vfs, at, meta)?;
    let mut f = f.take(size);
    let mode = vfs.symlink_metadata(gp).map_err(guest_err(gp))?.mode;
    if mode & 0o600 != 0o600 {
        vfs.set_permissions(gp, mode | 0o600)
            .map_err(guest_err(gp))?;
    }
    let fd = vfs
        .open(gp, OpenOptions::new().read(true).write(true))
        .map_err(guest_err(gp))?;
    let res = (|| -> Result<u64> {
        let mut off = 0u64;
        loop {
            let n = read_full(&mut f, buf, hp)?;
            if n == 0 {
                break;
            }
            let got = vfs.read_at(fd, &mut old[..n], off).map_err(guest_err(gp))?;
            if got != n || old[..n] != buf[..n] {
                vfs.write_at(fd, &buf[..n], off).map_err(guest_err(gp))?;
            }
            off += n as u64;
            if n < buf.len() {
                break;
            }
        }
        if vfs.file_metadata(fd)?.len != off {
            vfs.set_len(fd, off).map_err(guest_err(gp))?;
        }
        Ok(off)
    })();
    let closed = vfs.close(fd);
    let size = res?;
    closed?;
    if mode & 0o600 != 0o600 {
        vfs.set_permissions(gp, mode).map_err(guest_err(gp))?;
    }
    Ok(size)
}

/// Removes a guest file, symlink or directory with everything below it.
/// Iterative, so a tree of any depth goes without deep recursion: each
/// directory is listed once, its files removed and its subdirectories
/// queued, and it goes itself once they are gone.
pub(super) fn remove_tree(vfs: &mut Vfs, g: &str) -> Result<()> {
    // (path, whether its entries were already dealt with)
    let mut stack = vec![(g.to_string(), false)];
    while let Some((d, emptied)) = stack.pop() {
        if emptied {
            vfs.remove_dir(&d).map_err(guest_err(&d))?;
            continue;
        }
        let m = vfs.symlink_metadata(&d).map_err(guest_err(&d))?;
        if !m.is_dir() {
            vfs.remove_file(&d).map_err(guest_err(&d))?;
            continue;
        }
        if m.mode & 0o700 != 0o700 {
            vfs.set_permissions(&d, m.mode | 0o700)
                .map_err(guest_err(&d))?;
        }
        stack.push((d.clone(), true));
        for e in vfs.read_dir(&d).map_err(guest_err(&d))? {
            let p = path::join(&d, &e.name);
            if e.kind == crate::FileType::Dir {
                stack.push((p, false));
            } else {
                vfs.remove_file(&p).map_err(guest_err(&p))?;
            }
        }
    }
    Ok(())
}
