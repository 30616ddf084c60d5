//! Export: a snapshot's directory recreated on the host beneath a
//! directory reached without following symlinks, then renamed into place.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use crate::atomic::{Staging, Unique};
use crate::content::CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::time::Timestamp;
use crate::tree::{Ino, Inode, Name, Node};
use crate::vfs::{Snapshot, Visitor};

use super::{ExportStats, guest_err};

/// Recreates the directory `guest` of `snap` at the host path `host`, which
/// must not exist or be an empty directory (anything else is refused, so an
/// export never mixes with or overwrites other files). Afterwards
/// `diff -r --no-dereference` finds no difference, and permissions, mtimes,
/// symlink targets and hard links match.
///
/// The tree is built in a temporary directory beside `host` and renamed into
/// place: on failure nothing is left at `host`.
pub fn export_dir(snap: &Snapshot, guest: &str, host: &Path) -> Result<ExportStats> {
    export_dir_with(snap, guest, host, &mut |_| {})
}

/// What an export carries over beyond the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Keep setuid, setgid and sticky bits. Off by default: a tree from a
    /// guest must not hand out setuid programs on the host.
    pub keep_special_bits: bool,
}

/// [`export_dir`] calling `progress` after each object with the counts so far.
pub fn export_dir_with(
    snap: &Snapshot,
    guest: &str,
    host: &Path,
    progress: &mut dyn FnMut(&ExportStats),
) -> Result<ExportStats> {
    export_dir_opts(snap, guest, host, ExportOptions::default(), progress)
}

/// [`export_dir_with`] with [`ExportOptions`].
///
/// Nothing is ever written through a symlink: every object is made with
/// `*at` calls under a descriptor of its own directory, which is reached
/// from the export's top directory with symlinks refused (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), files are created with
/// `O_EXCL | O_NOFOLLOW`, and modes and times go on through the objects'
/// own descriptors. A symlink the tree itself holds, or one a racing
/// process plants in the destination, cannot redirect a write.
pub fn export_dir_opts(
    snap: &Snapshot,
    guest: &str,
    host: &Path,
    opts: ExportOptions,
    progress: &mut dyn FnMut(&ExportStats),
) -> Result<ExportStats> {
    let top = snap.lookup(guest, true).map_err(guest_err(guest))?;
    if snap.inode(top)?.entries().is_none() {
        return Err(Error::with(
            ErrorKind::NotADirectory,
            format!("{guest}: not a directory"),
        ));
    }
    match fs::symlink_metadata(host) {
        Ok(m) if m.is_dir() => {
            if fs::read_dir(host)
                .map_err(|e| Error::io_at(host, e))?
                .next()
                .is_some()
            {
                return Err(Error::with(
                    ErrorKind::AlreadyExists,
                    format!("{}: exists and is not empty", host.display()),
                ));
            }
        }
        Ok(_) => {
            return Err(Error::with(
                ErrorKind::AlreadyExists,
                format!("{}: exists and is not a directory", host.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io_at(host, e)),
    }
    let Some(staging) = Staging::named(host, "cowvfs-export", Unique::PerProcess) else {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!("{}: needs a final name", host.display()),
        ));
    };
    let tmp = &staging.temp;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .map_err(|e| Error::io_at(tmp, e))?;
    let res = (|| {
        let root = rustix::fs::open(tmp, dir_flags(), rustix::fs::Mode::empty())
            .map_err(|e| Error::io_at(tmp, e))?;
        let out = Out {
            root: &root,
            top: tmp,
            opts,
        };
        let stats = write_tree(snap, top, &out, progress)?;
        staging.commit(host)?;
        // The top directory's own mode and times go on after the rename,
        // which may touch them, through the descriptor (still the same
        // directory).
        finish_dir(snap.inode(top)?, &out, &root, host)?;
        Ok(stats)
    })();
    if res.is_err() {
        remove_partial(tmp);
    }
    res
}

/// Where an export writes: its top directory's descriptor, its path (for
/// messages) and options.
pub(super) struct Out<'a> {
    root: &'a rustix::fd::OwnedFd,
    top: &'a Path,
    opts: ExportOptions,
}

pub(super) fn dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Out<'_> {
    /// The directory `rel` below the top, reached without following any
    /// symlink or leaving the top.
    fn dir(&self, rel: &Path) -> Result<rustix::fd::OwnedFd> {
        use rustix::fs::ResolveFlags;
        let rel_or_dot = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            self.root,
            rel_or_dot,
            dir_flags(),
            rustix::fs::Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| Error::io_at(&self.top.join(rel), e))
    }

    fn mode(&self, mode: u32) -> rustix::fs::Mode {
        let keep = if self.opts.keep_special_bits {
            0o7777
        } else {
            0o777
        };
        rustix::fs::Mode::from_raw_mode(mode & keep)
    }
}

pub(super) fn timestamps(atime: Timestamp, mtime: Timestamp) -> rustix::fs::Timestamps {
    let ts = |t: Timestamp| rustix::fs::Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.into(),
    };
    rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

pub(super) fn write_tree(
    snap: &Snapshot,
    top: Ino,
    out: &Out<'_>,
    progress: &mut dyn FnMut(&ExportStats),
) -> Result<ExportStats> {
    let mut export = Export {
        out,
        progress,
        stats: ExportStats {
            dirs: 1,
            ..ExportStats::default()
        },
        first_path: HashMap::new(),
        dir: None,
    };
    snap.visit(top, PathBuf::new(), &mut export)?;
    Ok(export.stats)
}

/// The export as a [`Visitor`] of the snapshot: each directory is kept as
/// its path relative to the top, and reopened from the top (never through
/// a symlink) when its entries are made and when it is finished.
pub(super) struct Export<'a, 'p> {
    out: &'a Out<'a>,
    progress: &'p mut dyn FnMut(&ExportStats),
    stats: ExportStats,
    /// First name of each multiply linked file: its directory (relative
    /// to the top) and its name there.
    first_path: HashMap<Ino, (PathBuf, std::ffi::OsString)>,
    /// The directory whose entries are being made.
    dir: Option<rustix::fd::OwnedFd>,
}

impl Visitor for Export<'_, '_> {
    type Dir = PathBuf;

    fn enter(&mut self, _: Ino, rel: &PathBuf) -> Result<()> {
        self.dir = Some(self.out.dir(rel)?);
        Ok(())
    }

    fn entry(
        &mut self,
        rel: &PathBuf,
        name: &Name,
        ino: Ino,
        inode: &Inode,
    ) -> Result<Option<PathBuf>> {
        use rustix::fs::{AtFlags, Mode, OFlags};
        let Some(dir) = &self.dir else {
            return Err(Error::with(
                ErrorKind::Io,
                "export: entry outside a directory",
            ));
        };
        let out = self.out;
        let stats = &mut self.stats;
        let os_name = std::ffi::OsStr::from_bytes(name.as_bytes());
        let hp = out.top.join(rel).join(os_name);
        if inode.nlink > 1 && inode.entries().is_none() {
            if let Some((first_dir, first_name)) = self.first_path.get(&ino) {
                let from = out.dir(first_dir)?;
                rustix::fs::linkat(&from, first_name, dir, os_name, AtFlags::empty())
                    .map_err(|e| Error::io_at(&hp, e))?;
                stats.hard_links += 1;
                (self.progress)(stats);
                return Ok(None);
            }
            self.first_path
                .insert(ino, (rel.clone(), os_name.to_os_string()));
        }
        let mut sub = None;
        match &inode.node {
            Node::Dir(_) => {
                rustix::fs::mkdirat(dir, os_name, Mode::from_raw_mode(0o700))
                    .map_err(|e| Error::io_at(&hp, e))?;
                stats.dirs += 1;
                sub = Some(rel.join(os_name));
            }
            Node::Symlink(target) => {
                rustix::fs::symlinkat(&**target, dir, os_name).map_err(|e| Error::io_at(&hp, e))?;
                rustix::fs::utimensat(
                    dir,
                    os_name,
                    &timestamps(inode.atime, inode.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io_at(&hp, e))?;
                stats.symlinks += 1;
            }
            Node::File(content) => {
                let fd = rustix::fs::openat(
                    dir,
                    os_name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| Error::io_at(&hp, e))?;
                let f = fs::File::from(fd);
                for (idx, chunk) in content.chunks() {
                    // A lazily opened checkpoint may fail here.
                    let bytes = chunk
                        .bytes()
                        .map_err(|e| e.or_context(|| format!("{}: chunk {idx}", hp.display())))?;
                    let data = crate::chunk::trimmed(bytes);
                    if !data.is_empty() {
                        f.write_all_at(data, idx * CHUNK_SIZE as u64)
                            .map_err(|e| Error::io_at(&hp, e))?;
                    }
                }
                // Zeros after the last stored byte become a hole.
                f.set_len(content.size())
                    .map_err(|e| Error::io_at(&hp, e))?;
                rustix::fs::fchmod(&f, out.mode(inode.mode)).map_err(|e| Error::io_at(&hp, e))?;
                rustix::fs::futimens(&f, &timestamps(inode.atime, inode.mtime))
                    .map_err(|e| Error::io_at(&hp, e))?;
                stats.files += 1;
                stats.bytes += content.size();
            }
        }
        (self.progress)(stats);
        Ok(sub)
    }

    fn leave(&mut self, _: Ino, inode: &Inode, rel: PathBuf) -> Result<()> {
        let fd = self.out.dir(&rel)?;
        finish_dir(inode, self.out, &fd, &self.out.top.join(&rel))
    }
}

/// A directory's mode and times, through its descriptor.
pub(super) fn finish_dir(
    inode: &Inode,
    out: &Out<'_>,
    fd: &rustix::fd::OwnedFd,
    p: &Path,
) -> Result<()> {
    rustix::fs::fchmod(fd, out.mode(inode.mode)).map_err(|e| Error::io_at(p, e))?;
    rustix::fs::futimens(fd, &timestamps(inode.atime, inode.mtime)).map_err(|e| Error::io_at(p, e))
}

/// Best-effort removal of a failed export. Directories may already carry a
/// read-only mode, so make each writable before emptying it.
pub(super) fn remove_partial(root: &Path) {
    let mut work = vec![root.to_path_buf()];
    while let Some(d) = work.pop() {
        // Through a descriptor opened without following: a symlink planted
        // in the partial tree must not get its target's mode changed.
        let _ = rustix::fs::open(&d, dir_flags(), rustix::fs::Mode::empty())
            .and_then(|fd| rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o700)));
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    work.push(e.path());
                }
            }
        }
    }
    let _ = fs::remove_dir_all(root);
}
