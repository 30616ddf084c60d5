//! Descriptors of a live host directory mounted beside the tree (hybrid
//! mode): an open host file or directory, with path operations through
//! cap-primitives, which keeps every path inside the mount, as
//! wasmtime-wasi's do. Everything runs on the calling thread. Rights are
//! checked by the caller, [`super::Descriptor`].

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use cap_primitives::fs as cap;
use cap_primitives::fs::OpenOptionsExt;
use rustix::fs::OFlags;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::{Buffers, DirectoryStream, Identity, Kind, Listing, OpenRequest, Stat};
use crate::Timestamp;
use crate::wasi::bindings::types::{ErrorCode, NewTimestamp};
use crate::wasi::shared::{Held, MAX_READ};
use crate::wasi::stream::{HostInput, HostOutput, WriteMode};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

/// An open file or directory of a host mount.
pub(super) struct MountBackend {
    pub(super) file: Arc<File>,
    /// Which mount it belongs to: links and renames stay within one.
    pub(super) mount: u32,
}

/// A guest's path (or symlink target) as the host gets it, checked as the
/// memory tree checks its own (`path::check_path` at `PATH_MAX`: 4,096
/// bytes or more is `ENAMETOOLONG`, a NUL byte `EINVAL`, an empty path
/// `ENOENT`). Checked before cap-primitives sees it, which copies the
/// whole path (and without `openat2`, splits it into a list of its
/// components) before the kernel would say it is too long.
fn host_path(path: &str) -> Result<&Path, ErrorCode> {
    crate::path::check_path(path, crate::PATH_MAX)?;
    Ok(Path::new(path))
}

fn follow_of(follow: bool) -> cap::FollowSymlinks {
    if follow {
        cap::FollowSymlinks::Yes
    } else {
        cap::FollowSymlinks::No
    }
}

fn kind_of(ft: std::fs::FileType) -> Kind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_block_device() {
        Kind::BlockDevice
    } else if ft.is_char_device() {
        Kind::CharDevice
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else {
        Kind::Unknown
    }
}

fn cap_kind_of(ft: cap::FileType) -> Kind {
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Unknown
    }
}

/// The name and kind of a host directory entry.
pub(super) fn entry_of(entry: &cap::DirEntry) -> Result<(String, Kind), ErrorCode> {
    let kind = cap_kind_of(entry.file_type()?);
    let name = entry
        .file_name()
        .into_string()
        .map_err(|_| ErrorCode::IllegalByteSequence)?;
    Ok((name, kind))
}

/// A host time; times before 1970 (or with impossible nanoseconds) are
/// reported missing.
fn time(secs: i64, nanos: i64) -> Option<Timestamp> {
    if secs < 0 {
        return None;
    }
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Timestamp { secs, nanos })
}

/// The inode a mount's object reports: the lower half of its metadata hash.
fn ino_of(dev: u64, ino: u64) -> u64 {
    Identity::Host(dev, ino).hash().lower
}

fn stat_of(m: &std::fs::Metadata) -> Stat {
    Stat {
        kind: kind_of(m.file_type()),
        ino: ino_of(m.dev(), m.ino()),
        nlink: m.nlink(),
        size: m.len(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
    }
}

fn cap_stat_of(m: &cap::Metadata) -> Stat {
    use cap::MetadataExt as _;
    Stat {
        kind: cap_kind_of(m.file_type()),
        ino: ino_of(m.dev(), m.ino()),
        nlink: m.nlink(),
        size: m.len(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
    }
}

fn system_time(d: Datetime) -> Result<SystemTime, ErrorCode> {
    if d.nanoseconds >= 1_000_000_000 {
        return Err(ErrorCode::Invalid);
    }
    SystemTime::UNIX_EPOCH
        .checked_add(std::time::Duration::new(d.seconds, d.nanoseconds))
        .ok_or(ErrorCode::Overflow)
}

fn host_time(t: NewTimestamp) -> Result<Option<SystemTime>, ErrorCode> {
    Ok(match t {
        NewTimestamp::NoChange => None,
        NewTimestamp::Now => Some(SystemTime::now()),
        NewTimestamp::Timestamp(d) => Some(system_time(d)?),
    })
}

fn cap_time(t: NewTimestamp) -> Result<Option<cap::SystemTimeSpec>, ErrorCode> {
    Ok(match t {
        NewTimestamp::NoChange => None,
        NewTimestamp::Now => Some(cap::SystemTimeSpec::SymbolicNow),
        NewTimestamp::Timestamp(d) => Some(cap::SystemTimeSpec::Absolute(
            cap_primitives::time::SystemTime::from_std(system_time(d)?),
        )),
    })
}

impl MountBackend {
    fn dir(&self) -> &File {
        &self.file
    }

    pub(super) fn input_stream(&self, offset: u64, held: Held) -> DynInputStream {
        Box::new(HostInput::new(self.file.clone(), offset, held))
    }

    pub(super) fn output_stream(&self, mode: WriteMode, held: Held) -> DynOutputStream {
        Box::new(HostOutput::new(self.file.clone(), mode, held))
    }

    pub(super) fn read(&self, want: usize, offset: u64) -> Result<Vec<u8>, ErrorCode> {
        let mut buf = vec![0; want];
        let got = self.file.read_at(&mut buf, offset)?;
        buf.truncate(got);
        Ok(buf)
    }

    pub(super) fn write(&self, data: &[u8], offset: u64) -> Result<usize, ErrorCode> {
        Ok(self.file.write_at(data, offset)?)
    }

    /// One host read per buffer (at most [`MAX_READ`] each), straight into
    /// it. `may_read` is checked as each buffer is reached.
    pub(super) fn read_vectored<B: Buffers>(
        &self,
        bufs: &mut B,
        offset: u64,
        may_read: impl Fn() -> Result<(), ErrorCode>,
    ) -> Result<u64, B::Error> {
        let mut total = 0u64;
        for i in 0..bufs.count() {
            let buf = bufs.get(i)?;
            let len = buf.len();
            let at = offset.saturating_add(total);
            let want = len.min(MAX_READ);
            let res = may_read().and_then(|()| Ok(self.file.read_at(&mut buf[..want], at)?));
            match res {
                Ok(got) => {
                    total += got as u64;
                    if got < len {
                        break;
                    }
                }
                Err(_) if total > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(total)
    }

    /// One host write per buffer; appending finds the end before each.
    /// `may_write` is checked as each buffer is reached.
    pub(super) fn write_vectored<B: Buffers>(
        &self,
        bufs: &mut B,
        offset: u64,
        append: bool,
        may_write: impl Fn() -> Result<(), ErrorCode>,
    ) -> Result<(u64, u64), B::Error> {
        let (mut total, mut end) = (0u64, offset);
        for i in 0..bufs.count() {
            let data = bufs.get(i)?;
            let at = if append {
                self.file.metadata().map_err(ErrorCode::from)?.len()
            } else {
                offset.saturating_add(total)
            };
            let res = may_write().and_then(|()| Ok(self.file.write_at(data, at)?));
            match res {
                Ok(k) => {
                    total += k as u64;
                    end = at + k as u64;
                    if k < data.len() {
                        break;
                    }
                }
                Err(_) if total > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok((total, end))
    }

    pub(super) fn set_size(&self, size: u64) -> Result<(), ErrorCode> {
        Ok(self.file.set_len(size)?)
    }

    pub(super) fn sync(&self, data_only: bool) -> Result<(), ErrorCode> {
        if data_only {
            Ok(self.file.sync_data()?)
        } else {
            Ok(self.file.sync_all()?)
        }
    }

    pub(super) fn kind(&self) -> Result<Kind, ErrorCode> {
        Ok(kind_of(self.file.metadata()?.file_type()))
    }

    pub(super) fn dev_ino(&self) -> Result<(u64, u64), ErrorCode> {
        let m = self.file.metadata()?;
        Ok((m.dev(), m.ino()))
    }

    pub(super) fn stat(&self) -> Result<Stat, ErrorCode> {
        Ok(stat_of(&self.file.metadata()?))
    }

    pub(super) fn set_times(
        &self,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        let mut times = std::fs::FileTimes::new();
        if let Some(t) = host_time(atime)? {
            times = times.set_accessed(t);
        }
        if let Some(t) = host_time(mtime)? {
            times = times.set_modified(t);
        }
        Ok(self.file.set_times(times)?)
    }

    pub(super) fn read_directory(&self, held: Held) -> Result<DirectoryStream, ErrorCode> {
        Ok(DirectoryStream::mount(
            cap::read_base_dir(self.dir())?,
            held,
        ))
    }

    /// The whole listing, sorted by name, so that positions mean what they
    /// mean in memory; inodes are found only for the entries given out.
    pub(super) fn list_directory<L: Listing>(
        &self,
        after: Option<&str>,
        skip: u64,
        out: &mut L,
    ) -> Result<(), L::Error> {
        let mut entries = Vec::new();
        for entry in cap::read_base_dir(self.dir()).map_err(ErrorCode::from)? {
            let (name, kind) = entry_of(&entry.map_err(ErrorCode::from)?)?;
            if after.is_none_or(|a| name.as_str() > a) {
                entries.push((name, kind));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        for (name, kind) in entries.into_iter().skip(skip) {
            let (dev, ino) = self.dev_ino_at(false, &name)?;
            if !out.entry(&crate::Name::from(name), kind, ino_of(dev, ino))? {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn create_directory_at(&self, path: &str) -> Result<(), ErrorCode> {
        let options = cap::DirOptions::new();
        Ok(cap::create_dir(self.dir(), host_path(path)?, &options)?)
    }

    pub(super) fn stat_at(&self, follow: bool, path: &str) -> Result<Stat, ErrorCode> {
        let m = cap::stat(self.dir(), host_path(path)?, follow_of(follow))?;
        Ok(cap_stat_of(&m))
    }

    pub(super) fn dev_ino_at(&self, follow: bool, path: &str) -> Result<(u64, u64), ErrorCode> {
        use cap::MetadataExt as _;
        let m = cap::stat(self.dir(), host_path(path)?, follow_of(follow))?;
        Ok((m.dev(), m.ino()))
    }

    pub(super) fn set_times_at(
        &self,
        follow: bool,
        path: &str,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        let (a, m) = (cap_time(atime)?, cap_time(mtime)?);
        let path = host_path(path)?;
        if follow {
            cap::set_times(self.dir(), path, a, m)?;
        } else {
            cap::set_times_nofollow(self.dir(), path, a, m)?;
        }
        Ok(())
    }

    pub(super) fn link_at(
        &self,
        follow: bool,
        old_path: &str,
        new_dir: &MountBackend,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        // linkat(AT_SYMLINK_FOLLOW) has no sandboxed form in cap-primitives;
        // wasmtime-wasi refuses it the same way.
        if follow {
            return Err(ErrorCode::Invalid);
        }
        let (old, new) = (host_path(old_path)?, host_path(new_path)?);
        Ok(cap::hard_link(self.dir(), old, new_dir.dir(), new)?)
    }

    pub(super) fn rename_at(
        &self,
        old_path: &str,
        new_dir: &MountBackend,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        let (old, new) = (host_path(old_path)?, host_path(new_path)?);
        Ok(cap::rename(self.dir(), old, new_dir.dir(), new)?)
    }

    /// Opens `path`, and says whether it is a directory.
    pub(super) fn open_at(
        &self,
        path: &str,
        req: OpenRequest,
    ) -> Result<(MountBackend, bool), ErrorCode> {
        // cap-primitives has no sandboxed O_SYNC family.
        if req.sync {
            return Err(ErrorCode::Unsupported);
        }
        let mut o = cap::OpenOptions::new();
        o.read(req.read)
            .write(req.write || req.create || req.truncate)
            .create(req.create && !req.exclusive)
            .create_new(req.exclusive)
            .truncate(req.truncate)
            ._cap_fs_ext_follow(follow_of(req.follow));
        // Never wait in `open`: a FIFO without a writer (or a device) in
        // the host directory would block this thread past any deadline,
        // where epoch checks cannot reach. Regular files and directories
        // ignore the flag; a directory wanted is asked for as one.
        let mut flags = OFlags::NONBLOCK | OFlags::NOCTTY;
        if req.directory {
            flags |= OFlags::DIRECTORY;
        }
        o.custom_flags(flags.bits() as i32);
        let opened = cap::open(self.dir(), host_path(path)?, &o)?;
        let dir = opened.metadata()?.is_dir();
        if req.directory && !dir {
            return Err(ErrorCode::NotDirectory);
        }
        let file = Arc::new(opened);
        Ok((
            MountBackend {
                file,
                mount: self.mount,
            },
            dir,
        ))
    }

    pub(super) fn readlink_at(&self, path: &str) -> Result<String, ErrorCode> {
        cap::read_link(self.dir(), host_path(path)?)?
            .into_os_string()
            .into_string()
            .map_err(|_| ErrorCode::IllegalByteSequence)
    }

    pub(super) fn remove_directory_at(&self, path: &str) -> Result<(), ErrorCode> {
        Ok(cap::remove_dir(self.dir(), host_path(path)?)?)
    }

    pub(super) fn unlink_file_at(&self, path: &str) -> Result<(), ErrorCode> {
        Ok(cap::remove_file(self.dir(), host_path(path)?)?)
    }

    pub(super) fn symlink_at(&self, target: &str, path: &str) -> Result<(), ErrorCode> {
        Ok(cap::symlink(
            host_path(target)?,
            self.dir(),
            host_path(path)?,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked before the host sees the path: the kernel would refuse
    /// most of these too, after cap-primitives had copied and split them.
    #[test]
    fn host_paths_are_bounded_as_the_tree_bounds_them() {
        let longest = "a".repeat(crate::PATH_MAX - 1);
        assert_eq!(host_path(&longest).ok(), Some(Path::new(&longest)));
        let long = "a/".repeat(crate::PATH_MAX / 2);
        assert!(matches!(host_path(&long), Err(ErrorCode::NameTooLong)));
        assert!(matches!(host_path("a\0b"), Err(ErrorCode::Invalid)));
        assert!(matches!(host_path(""), Err(ErrorCode::NoEntry)));
        assert_eq!(host_path("a/b").ok(), Some(Path::new("a/b")));
    }
}
