//! Import: a host directory copied into a tree, every object opened
//! without following symlinks and checked against what was listed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::path;
use crate::vfs::{OpenOptions, SetTime, Vfs};

use super::{ImportStats, guest_err, times_of, utf8_name};

/// Copies the host directory `host` into `vfs` at `guest`, creating `guest`
/// (and its parents) if needed; an existing `guest` must be a directory and
/// the imported entries must not already exist in it. The top directory
/// takes the host directory's permissions and times.
///
/// The host tree is only read. Files whose 64 KiB pieces are all zeros are
/// stored as holes, so sparse host files stay cheap.
///
/// ```no_run
/// # use cowvfs::{Vfs, hostdir};
/// let mut vfs = Vfs::new();
/// let stats = hostdir::import_dir(&mut vfs, "/usr/lib/python3.11".as_ref(), "/lib/python")?;
/// println!("{} files, {} bytes", stats.files, stats.bytes);
/// # Ok::<(), cowvfs::Error>(())
/// ```
pub fn import_dir(vfs: &mut Vfs, host: &Path, guest: &str) -> Result<ImportStats> {
    import_dir_with(vfs, host, guest, &mut |_| {})
}

/// [`import_dir`] calling `progress` after each object with the counts so
/// far (the CLI draws a progress bar with it).
pub fn import_dir_with(
    vfs: &mut Vfs,
    host: &Path,
    guest: &str,
    progress: &mut dyn FnMut(&ImportStats),
) -> Result<ImportStats> {
    let (top, stats) = start_walk(vfs, host, guest)?;
    let mut buf = vec![0u8; 16 * CHUNK_SIZE];
    walk_host(host, guest, top, stats, progress, &mut |step, stats| {
        match step {
            HostStep::Enter { .. } => {}
            HostStep::Finish { g, meta } => {
                vfs.set_permissions(g, meta.mode() & 0o7777)
                    .map_err(guest_err(g))?;
                let (a, m) = times_of(meta);
                vfs.set_times(g, SetTime::At(a), SetTime::At(m))
                    .map_err(guest_err(g))?;
            }
            HostStep::Link { gp, first } => {
                vfs.hard_link(first, gp).map_err(guest_err(gp))?;
                stats.hard_links += 1;
            }
            HostStep::Object { at, gp, meta } => {
                let ft = meta.file_type();
                if ft.is_dir() {
                    vfs.create_dir(gp).map_err(guest_err(gp))?;
                    stats.dirs += 1;
                } else if ft.is_symlink() {
                    vfs.symlink(&link_target(at)?, gp).map_err(guest_err(gp))?;
                    let (a, m) = times_of(meta);
                    vfs.set_symlink_times(gp, SetTime::At(a), SetTime::At(m))
                        .map_err(guest_err(gp))?;
                    stats.symlinks += 1;
                } else if ft.is_file() {
                    stats.bytes += import_file(vfs, at, gp, meta, &mut buf)?;
                    stats.files += 1;
                } else {
                    return Err(unsupported_file_type(at.hp));
                }
            }
        }
        Ok(())
    })
}

/// Checks that `host` is a directory and makes `guest`; the host
/// directory's metadata, for the top of the walk, and the counts with the
/// top directory in them.
pub(super) fn start_walk(
    vfs: &mut Vfs,
    host: &Path,
    guest: &str,
) -> Result<(fs::Metadata, ImportStats)> {
    let top = fs::metadata(host).map_err(|e| Error::io_at(host, e))?;
    if !top.is_dir() {
        return Err(Error::with(
            ErrorKind::NotADirectory,
            format!("{}: not a directory", host.display()),
        ));
    }
    vfs.create_dir_all(guest).map_err(guest_err(guest))?;
    let stats = ImportStats {
        dirs: 1,
        ..ImportStats::default()
    };
    Ok((top, stats))
}

/// Where the walk met a host object: `name` in the directory `dir`, which
/// the walk holds open. Every later stat, open and readlink of the object
/// goes through that descriptor, so a directory above it that is swapped
/// for a symlink meanwhile cannot send the walk outside the host
/// directory; the path is for messages.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) dir: &'a fs::File,
    pub(super) name: &'a OsStr,
    pub(super) hp: &'a Path,
}

/// One step of [`walk_host`], with the host path (`h`, `at`) and the guest
/// path (`g`, `gp`) of the object.
pub(super) enum HostStep<'a> {
    /// The entries of directory `g`, named `names` in this order, come next.
    Enter {
        h: &'a Path,
        g: &'a str,
        names: &'a [std::ffi::OsString],
    },
    /// Everything below directory `g` is done. Permissions and times go on
    /// here, last: creating children changes the directory's mtime, and a
    /// read-only mode would stop them.
    Finish { g: &'a str, meta: &'a fs::Metadata },
    /// `gp` is one more name of the object already met at `first`.
    Link { gp: &'a str, first: &'a str },
    /// An object met for the first time; a directory is entered after it.
    Object {
        at: At<'a>,
        gp: &'a str,
        meta: &'a fs::Metadata,
    },
}

/// Walks the host directory `host` (whose metadata is `top`) depth first,
/// pairing each object with its path below `guest`. Entries come in name
/// order, which makes inode numbers, and so checkpoints, repeatable; a
/// multiply linked object is an `Object` at its first name and a `Link` at
/// every other. `visit` keeps `stats`, and `progress` sees them after each
/// object; the final counts are the result.
pub(super) fn walk_host(
    host: &Path,
    guest: &str,
    top: fs::Metadata,
    mut stats: ImportStats,
    progress: &mut dyn FnMut(&ImportStats),
    visit: &mut dyn FnMut(HostStep<'_>, &mut ImportStats) -> Result<()>,
) -> Result<ImportStats> {
    // Host (device, inode) of multiply linked objects -> first guest path.
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    /// A host directory to enter: the top one, found by its path (which
    /// may be a symlink), or one met in a directory the walk holds open.
    enum Dir {
        Top((u64, u64)),
        In(Arc<fs::File>, OsString, (u64, u64)),
    }
    enum Work {
        /// A directory, its host path (for messages) and guest path.
        Enter(Dir, PathBuf, String),
        Finish(String, fs::Metadata),
    }
    let top_id = (top.dev(), top.ino());
    let mut work = vec![
        Work::Finish(guest.to_string(), top),
        Work::Enter(Dir::Top(top_id), host.to_path_buf(), guest.to_string()),
    ];
    while let Some(step) = work.pop() {
        match step {
            Work::Finish(g, meta) => visit(HostStep::Finish { g: &g, meta: &meta }, &mut stats)?,
            Work::Enter(dir, h, g) => {
                let dir = Arc::new(match dir {
                    Dir::Top(id) => open_checked(&h, id, true, true)?.0,
                    Dir::In(parent, name, id) => {
                        let at = At {
                            dir: &parent,
                            name: &name,
                            hp: &h,
                        };
                        open_at(at, id, true)?.0
                    }
                });
                let mut names = list_dir(&dir, &h)?;
                names.sort();
                visit(
                    HostStep::Enter {
                        h: &h,
                        g: &g,
                        names: &names,
                    },
                    &mut stats,
                )?;
                for name in names {
                    let hp = h.join(&name);
                    let gp = path::join(&g, &utf8_name(&h, &name)?);
                    let at = At {
                        dir: &dir,
                        name: &name,
                        hp: &hp,
                    };
                    let meta = stat_at(at)?;
                    let is_dir = meta.file_type().is_dir();
                    if !is_dir && meta.nlink() > 1 {
                        if let Some(first) = seen.get(&(meta.dev(), meta.ino())) {
                            visit(HostStep::Link { gp: &gp, first }, &mut stats)?;
                            progress(&stats);
                            continue;
                        }
                        seen.insert((meta.dev(), meta.ino()), gp.clone());
                    }
                    visit(
                        HostStep::Object {
                            at,
                            gp: &gp,
                            meta: &meta,
                        },
                        &mut stats,
                    )?;
                    progress(&stats);
                    if is_dir {
                        let id = (meta.dev(), meta.ino());
                        work.push(Work::Finish(gp.clone(), meta));
                        work.push(Work::Enter(Dir::In(dir.clone(), name, id), hp, gp));
                    }
                }
            }
        }
    }
    Ok(stats)
}

/// `O_NOFOLLOW`, `O_NONBLOCK` and `O_DIRECTORY` for `custom_flags`.
pub(super) fn oflags(f: rustix::fs::OFlags) -> i32 {
    f.bits() as i32
}

/// The error for a host object that is no longer what the walk saw (it was
/// replaced, by a symlink, a FIFO or anything else, while importing).
pub(super) fn changed(hp: &Path) -> Error {
    Error::with(
        ErrorKind::Io,
        format!(
            "{}: changed while being imported (replaced by another object or a symlink)",
            hp.display()
        ),
    )
}

/// Opens what the walk met at `hp` without following a symlink and without
/// blocking (a FIFO swapped in must not hang the import), and makes sure
/// it is that same object: same device and inode, same kind.
pub(super) fn open_checked(
    hp: &Path,
    id: (u64, u64),
    dir: bool,
    follow: bool,
) -> Result<(fs::File, fs::Metadata)> {
    use rustix::fs::OFlags;
    let mut flags = OFlags::NONBLOCK;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(oflags(flags))
        .open(hp)
        .map_err(|e| match e.raw_os_error() {
            Some(c)
                if c == rustix::io::Errno::LOOP.raw_os_error()
                    || c == rustix::io::Errno::NOTDIR.raw_os_error() =>
            {
                changed(hp)
            }
            _ => Error::io_at(hp, e),
        })?;
    let m = f.metadata().map_err(|e| Error::io_at(hp, e))?;
    let kind_ok = if dir { m.is_dir() } else { m.is_file() };
    if !kind_ok || (m.dev(), m.ino()) != id {
        return Err(changed(hp));
    }
    Ok((f, m))
}

/// Opens what the walk met at `at` as [`open_checked`] does, relative to
/// the directory the walk holds open, so no symlink anywhere on the way is
/// followed.
pub(super) fn open_at(at: At<'_>, id: (u64, u64), dir: bool) -> Result<(fs::File, fs::Metadata)> {
    use rustix::fs::OFlags;
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    let fd = rustix::fs::openat(at.dir, at.name, flags, rustix::fs::Mode::empty()).map_err(
        |e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => changed(at.hp),
            e => Error::io_at(at.hp, e),
        },
    )?;
    let f = fs::File::from(fd);
    let m = f.metadata().map_err(|e| Error::io_at(at.hp, e))?;
    let kind_ok = if dir { m.is_dir() } else { m.is_file() };
    if !kind_ok || (m.dev(), m.ino()) != id {
        return Err(changed(at.hp));
    }
    Ok((f, m))
}

/// The metadata of the object at `at` itself (a symlink's own, not its
/// target's), read through an `O_PATH` descriptor opened relative to the
/// directory the walk holds open.
fn stat_at(at: At<'_>) -> Result<fs::Metadata> {
    use rustix::fs::OFlags;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(at.dir, at.name, flags, rustix::fs::Mode::empty())
        .map_err(|e| Error::io_at(at.hp, e))?;
    fs::File::from(fd)
        .metadata()
        .map_err(|e| Error::io_at(at.hp, e))
}

/// The names in the open host directory `f` (whose path is `h`).
pub(super) fn list_dir(f: &fs::File, h: &Path) -> Result<Vec<OsString>> {
    let io = |e: rustix::io::Errno| Error::io_at(h, e);
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(f).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Opens a regular host file for import (see [`open_at`]); its size must
/// fit the tree's file-size limit, checked before any byte is read.
pub(super) fn open_host_file(
    vfs: &Vfs,
    at: At<'_>,
    meta: &fs::Metadata,
) -> Result<(fs::File, u64)> {
    let hp = at.hp;
    let (f, m) = open_at(at, (meta.dev(), meta.ino()), false)?;
    let max = vfs.limits().max_file_size;
    if m.len() > max {
        return Err(Error::with(
            ErrorKind::FileTooLarge,
            format!(
                "{}: {} bytes, over the tree's file-size limit of {max}",
                hp.display(),
                m.len()
            ),
        ));
    }
    Ok((f, m.len()))
}

/// A host symlink's target, which the engine stores as UTF-8.
pub(super) fn link_target(at: At<'_>) -> Result<String> {
    let target =
        rustix::fs::readlinkat(at.dir, at.name, Vec::new()).map_err(|e| Error::io_at(at.hp, e))?;
    target.into_string().map_err(|_| {
        Error::with(
            ErrorKind::InvalidInput,
            format!("{}: symlink target is not UTF-8", at.hp.display()),
        )
    })
}

pub(super) fn unsupported_file_type(hp: &Path) -> Error {
    Error::with(
        ErrorKind::Unsupported,
        format!(
            "{}: sockets, FIFOs and device files cannot be imported",
            hp.display()
        ),
    )
}

/// Reads until `buf` is full or the file ends, so pieces stay
/// chunk-aligned; how many bytes it read.
pub(super) fn read_full(f: &mut impl Read, buf: &mut [u8], hp: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io_at(hp, e)),
        }
    }
    Ok(n)
}

/// Copies one regular file; returns its size.
pub(super) fn import_file(
    vfs: &mut Vfs,
    at: At<'_>,
    gp: &str,
    meta: &fs::Metadata,
    buf: &mut [u8],
) -> Result<u64> {
    let hp = at.hp;
    let (f, size) = open_host_file(vfs, at, meta)?;
    let fd = vfs
        .open(
            gp,
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(meta.mode() & 0o7777),
        )
        .map_err(guest_err(gp))?;
    let chunk = CHUNK_SIZE as u64;
    let res = (|| -> Result<u64> {
        // Only the data regions the host reports are read (a sparse file's
        // holes stay holes without reading their zeros), never past the
        // size fstat gave: a file growing meanwhile is cut there.
        let mut off = 0u64;
        let mut end_of_file = size;
        while off < end_of_file {
            let data = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(off)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(_) => off,
            };
            let start = data / chunk * chunk;
            if start >= end_of_file {
                break;
            }
            let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(start))
                .unwrap_or(end_of_file)
                .max(start + 1);
            let stop = hole.div_ceil(chunk).saturating_mul(chunk).min(end_of_file);
            let mut pos = start;
            while pos < stop {
                let want = ((stop - pos) as usize).min(buf.len());
                let n = read_full(&mut ReadAt(&f, pos), &mut buf[..want], hp)?;
                for (i, piece) in buf[..n].chunks(CHUNK_SIZE).enumerate() {
                    if piece.iter().any(|&b| b != 0) {
                        vfs.write_at(fd, piece, pos + (i * CHUNK_SIZE) as u64)
                            .map_err(guest_err(gp))?;
                    }
                }
                pos += n as u64;
                if n < want {
                    // The file shrank under us: it ends here.
                    end_of_file = pos;
                    break;
                }
            }
            off = pos.max(stop);
        }
        // Skipped pieces and holes: the length makes them holes.
        vfs.set_len(fd, end_of_file).map_err(guest_err(gp))?;
        Ok(end_of_file)
    })();
    let closed = vfs.close(fd);
    let size = res?;
    closed?;
    let (a, m) = times_of(meta);
    vfs.set_symlink_times(gp, SetTime::At(a), SetTime::At(m))
        .map_err(guest_err(gp))?;
    Ok(size)
}

/// A reader at an offset of a file, moving along as it reads.
pub(super) struct ReadAt<'a>(&'a fs::File, u64);

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}
