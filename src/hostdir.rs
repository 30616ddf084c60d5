//! Moving trees between the host filesystem and the engine.
//!
//! [`import_dir`] copies a host directory into a [`Vfs`]; [`export_dir`]
//! recreates a snapshot's directory on the host. Both keep what a checkpoint
//! keeps: regular files, directories, symlinks (targets exactly as written),
//! hard links (as hard links), permission bits and access/modification
//! times (setuid, setgid and sticky bits only if asked, see
//! [`ExportOptions`]). Ownership and other file types (sockets, FIFOs, devices) have no
//! place in the engine, so an import refuses them by name rather than
//! silently dropping them.
//!
//! Import never writes to the host. Export builds the tree in a temporary
//! directory next to the target and renames it into place, so a failure
//! leaves no half-written tree behind.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::{Staging, Unique};
use crate::content::CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};
use crate::path;
use crate::time::Timestamp;
use crate::tree::{Ino, Inode, Name, Node};
use crate::vfs::{OpenOptions, SetTime, Snapshot, Vfs, Visitor};

/// What an import or export moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Regular files created (not counting extra hard links).
    pub files: u64,
    /// Directories created, the top one included.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Extra names made for a file or symlink already copied.
    pub hard_links: u64,
    /// Bytes of file content (logical sizes, holes included).
    pub bytes: u64,
}

/// What an export wrote; the same counts as an import.
pub type ExportStats = ImportStats;

fn guest_err(p: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| match e.context() {
        Some(c) if c != p => Error::with(e.kind(), format!("{p}: {c}")),
        _ => Error::with(e.kind(), p.to_string()),
    }
}

fn utf8_name(host: &Path, name: &std::ffi::OsStr) -> Result<String> {
    match name.to_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{}: name is not UTF-8 and cannot be stored",
                host.join(name).display()
            ),
        )),
    }
}

fn times_of(m: &fs::Metadata) -> (Timestamp, Timestamp) {
    let ts = |secs: i64, nanos: i64| Timestamp {
        secs,
        nanos: u32::try_from(nanos).unwrap_or(0).min(999_999_999),
    };
    (ts(m.atime(), m.atime_nsec()), ts(m.mtime(), m.mtime_nsec()))
}

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
            HostStep::Object { hp, gp, meta } => {
                let ft = meta.file_type();
                if ft.is_dir() {
                    vfs.create_dir(gp).map_err(guest_err(gp))?;
                    stats.dirs += 1;
                } else if ft.is_symlink() {
                    vfs.symlink(&link_target(hp)?, gp).map_err(guest_err(gp))?;
                    let (a, m) = times_of(meta);
                    vfs.set_symlink_times(gp, SetTime::At(a), SetTime::At(m))
                        .map_err(guest_err(gp))?;
                    stats.symlinks += 1;
                } else if ft.is_file() {
                    stats.bytes += import_file(vfs, hp, gp, meta, &mut buf)?;
                    stats.files += 1;
                } else {
                    return Err(unsupported_file_type(hp));
                }
            }
        }
        Ok(())
    })
}

/// Checks that `host` is a directory and makes `guest`; the host
/// directory's metadata, for the top of the walk, and the counts with the
/// top directory in them.
fn start_walk(vfs: &mut Vfs, host: &Path, guest: &str) -> Result<(fs::Metadata, ImportStats)> {
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

/// One step of [`walk_host`], with the host path (`h`, `hp`) and the guest
/// path (`g`, `gp`) of the object.
enum HostStep<'a> {
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
        hp: &'a Path,
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
fn walk_host(
    host: &Path,
    guest: &str,
    top: fs::Metadata,
    mut stats: ImportStats,
    progress: &mut dyn FnMut(&ImportStats),
    visit: &mut dyn FnMut(HostStep<'_>, &mut ImportStats) -> Result<()>,
) -> Result<ImportStats> {
    // Host (device, inode) of multiply linked objects -> first guest path.
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    enum Work {
        /// A host directory (with the identity it had when met; the top
        /// one may be reached through a symlink), its guest path.
        Enter(PathBuf, String, (u64, u64), bool),
        Finish(String, fs::Metadata),
    }
    let top_id = (top.dev(), top.ino());
    let mut work = vec![
        Work::Finish(guest.to_string(), top),
        Work::Enter(host.to_path_buf(), guest.to_string(), top_id, true),
    ];
    while let Some(step) = work.pop() {
        match step {
            Work::Finish(g, meta) => visit(HostStep::Finish { g: &g, meta: &meta }, &mut stats)?,
            Work::Enter(h, g, id, follow) => {
                let mut names = list_dir(&h, id, follow)?;
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
                    let meta = fs::symlink_metadata(&hp).map_err(|e| Error::io_at(&hp, e))?;
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
                            hp: &hp,
                            gp: &gp,
                            meta: &meta,
                        },
                        &mut stats,
                    )?;
                    progress(&stats);
                    if is_dir {
                        let id = (meta.dev(), meta.ino());
                        work.push(Work::Finish(gp.clone(), meta));
                        work.push(Work::Enter(hp, gp, id, false));
                    }
                }
            }
        }
    }
    Ok(stats)
}

/// `O_NOFOLLOW`, `O_NONBLOCK` and `O_DIRECTORY` for `custom_flags`.
fn oflags(f: rustix::fs::OFlags) -> i32 {
    f.bits() as i32
}

/// The error for a host object that is no longer what the walk saw (it was
/// replaced, by a symlink, a FIFO or anything else, while importing).
fn changed(hp: &Path) -> Error {
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
fn open_checked(
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

/// The names in host directory `h`, read through a descriptor to the very
/// directory the walk met (never through a symlink swapped in for it).
fn list_dir(h: &Path, id: (u64, u64), follow: bool) -> Result<Vec<std::ffi::OsString>> {
    let (f, _) = open_checked(h, id, true, follow)?;
    let io = |e: rustix::io::Errno| Error::io_at(h, e);
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&f).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Opens a regular host file for import (see [`open_checked`]); its size
/// must fit the tree's file-size limit, checked before any byte is read.
fn open_host_file(vfs: &Vfs, hp: &Path, meta: &fs::Metadata) -> Result<(fs::File, u64)> {
    let (f, m) = open_checked(hp, (meta.dev(), meta.ino()), false, false)?;
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
fn link_target(hp: &Path) -> Result<String> {
    let target = fs::read_link(hp).map_err(|e| Error::io_at(hp, e))?;
    target.into_os_string().into_string().map_err(|_| {
        Error::with(
            ErrorKind::InvalidInput,
            format!("{}: symlink target is not UTF-8", hp.display()),
        )
    })
}

fn unsupported_file_type(hp: &Path) -> Error {
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
fn read_full(f: &mut impl Read, buf: &mut [u8], hp: &Path) -> Result<usize> {
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
fn import_file(
    vfs: &mut Vfs,
    hp: &Path,
    gp: &str,
    meta: &fs::Metadata,
    buf: &mut [u8],
) -> Result<u64> {
    let (f, size) = open_host_file(vfs, hp, meta)?;
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
struct ReadAt<'a>(&'a fs::File, u64);

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

/// Makes the directory `guest` in `vfs` identical to the host directory
/// `host`, like [`import_dir`], but keeps every object that is already
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
                    if !wanted.contains(&e.name) {
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
            HostStep::Object { hp, gp, meta } => {
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
                    let target = link_target(hp)?;
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
                        stats.bytes += sync_file(vfs, hp, gp, meta, &mut buf, &mut old)?;
                        set_meta_if_changed(vfs, gp, meta)?;
                    } else {
                        stats.bytes += import_file(vfs, hp, gp, meta, &mut buf)?;
                    }
                    stats.files += 1;
                } else {
                    return Err(unsupported_file_type(hp));
                }
            }
        }
        Ok(())
    })
}

/// Sets mode and times from the host, only where they differ, so an
/// unchanged object keeps its inode shared with the tree it came from.
fn set_meta_if_changed(vfs: &mut Vfs, g: &str, meta: &fs::Metadata) -> Result<()> {
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
fn sync_file(
    vfs: &mut Vfs,
    hp: &Path,
    gp: &str,
    meta: &fs::Metadata,
    buf: &mut [u8],
    old: &mut [u8],
) -> Result<u64> {
    let (f, size) = open_host_file(vfs, hp, meta)?;
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
fn remove_tree(vfs: &mut Vfs, g: &str) -> Result<()> {
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
struct Out<'a> {
    root: &'a rustix::fd::OwnedFd,
    top: &'a Path,
    opts: ExportOptions,
}

fn dir_flags() -> rustix::fs::OFlags {
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

fn timestamps(atime: Timestamp, mtime: Timestamp) -> rustix::fs::Timestamps {
    let ts = |t: Timestamp| rustix::fs::Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.into(),
    };
    rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

fn write_tree(
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
struct Export<'a, 'p> {
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
fn finish_dir(inode: &Inode, out: &Out<'_>, fd: &rustix::fd::OwnedFd, p: &Path) -> Result<()> {
    rustix::fs::fchmod(fd, out.mode(inode.mode)).map_err(|e| Error::io_at(p, e))?;
    rustix::fs::futimens(fd, &timestamps(inode.atime, inode.mtime)).map_err(|e| Error::io_at(p, e))
}

/// Best-effort removal of a failed export. Directories may already carry a
/// read-only mode, so make each writable before emptying it.
fn remove_partial(root: &Path) {
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
