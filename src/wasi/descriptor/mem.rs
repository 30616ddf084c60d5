//! Descriptors of the in-memory tree: every operation is one engine call
//! (or a few) on the shared tree, under its lock. Rights are checked by
//! the caller, [`super::Descriptor`].

use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::{Buffers, DirectoryStream, Kind, Listing, OpenRequest, Stat};
use crate::wasi::bindings::types::{ErrorCode, NewTimestamp};
use crate::wasi::shared::{Held, SharedVfs, on_tree, with_vfs};
use crate::wasi::stream::{MemInput, MemOutput, WriteMode};
use crate::{Fd, FileType, Metadata, OpenOptions, SetTime, Symlinks, Timestamp};

/// Most names one page fetches while a listing skips to a position.
const SKIP_PAGE: u64 = 1024;

/// An engine descriptor of the sandbox's tree.
pub(super) struct MemBackend {
    pub(super) fd: Fd,
}

pub(super) fn kind_of(kind: FileType) -> Kind {
    match kind {
        FileType::File => Kind::File,
        FileType::Dir => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
    }
}

/// Times before 1970 are reported missing.
fn time(t: Timestamp) -> Option<Timestamp> {
    (t.secs >= 0).then_some(t)
}

fn stat_of(m: &Metadata) -> Stat {
    Stat {
        kind: kind_of(m.kind),
        ino: m.ino,
        nlink: m.nlink,
        size: m.len,
        atime: time(m.atime),
        mtime: time(m.mtime),
        ctime: time(m.ctime),
    }
}

/// A WASI datetime as an engine timestamp: seconds past `i64` overflow;
/// nanoseconds of 1e9 or more reach the engine, which says `invalid`.
fn set_time(t: NewTimestamp) -> Result<SetTime, ErrorCode> {
    Ok(match t {
        NewTimestamp::NoChange => SetTime::Omit,
        NewTimestamp::Now => SetTime::Now,
        NewTimestamp::Timestamp(d) => SetTime::At(Timestamp {
            secs: i64::try_from(d.seconds).map_err(|_| ErrorCode::Overflow)?,
            nanos: d.nanoseconds,
        }),
    })
}

impl MemBackend {
    pub(super) fn input_stream(&self, vfs: &SharedVfs, offset: u64, held: Held) -> DynInputStream {
        Box::new(MemInput::new(vfs.clone(), self.fd, offset, held))
    }

    pub(super) fn output_stream(
        &self,
        vfs: &SharedVfs,
        mode: WriteMode,
        held: Held,
    ) -> DynOutputStream {
        Box::new(MemOutput::new(vfs.clone(), self.fd, mode, held))
    }

    /// Up to `want` bytes from `offset`, allocating only what the file has.
    pub(super) fn read(
        &self,
        vfs: &SharedVfs,
        want: usize,
        offset: u64,
    ) -> Result<Vec<u8>, ErrorCode> {
        with_vfs(vfs, |v| {
            let size = v.file_metadata(self.fd)?.len;
            let n = want.min(usize::try_from(size.saturating_sub(offset)).unwrap_or(want));
            let mut buf = vec![0; n];
            let got = v.read_at(self.fd, &mut buf, offset)?;
            buf.truncate(got);
            Ok(buf)
        })
    }

    pub(super) fn write(
        &self,
        vfs: &SharedVfs,
        data: &[u8],
        offset: u64,
    ) -> Result<usize, ErrorCode> {
        with_vfs(vfs, |v| v.write_at(self.fd, data, offset))
    }

    pub(super) fn read_vectored<B: Buffers>(
        &self,
        vfs: &SharedVfs,
        bufs: &mut B,
        offset: u64,
    ) -> Result<u64, B::Error> {
        on_tree(vfs, |v| {
            let mut total = 0u64;
            for i in 0..bufs.count() {
                let buf = bufs.get(i)?;
                let len = buf.len();
                match v.read_at(self.fd, buf, offset.saturating_add(total)) {
                    Ok(got) => {
                        total += got as u64;
                        if got < len {
                            break;
                        }
                    }
                    Err(_) if total > 0 => break,
                    Err(e) => return Err(ErrorCode::from(e).into()),
                }
            }
            Ok(total)
        })
    }

    pub(super) fn write_vectored<B: Buffers>(
        &self,
        vfs: &SharedVfs,
        bufs: &mut B,
        offset: u64,
        append: bool,
    ) -> Result<(u64, u64), B::Error> {
        on_tree(vfs, |v| {
            let (mut total, mut end) = (0u64, offset);
            let n = bufs.count();
            for i in 0..n {
                let data = bufs.get(i)?;
                let res = if append {
                    v.append(self.fd, data).map(|at| at + data.len() as u64)
                } else {
                    let at = offset.saturating_add(total);
                    v.write_at(self.fd, data, at).map(|k| at + k as u64)
                };
                match res {
                    Ok(e) => {
                        total += data.len() as u64;
                        end = e;
                    }
                    Err(_) if total > 0 => break,
                    Err(e) => return Err(ErrorCode::from(e).into()),
                }
            }
            if append && n == 0 {
                end = v.file_metadata(self.fd).map_err(ErrorCode::from)?.len;
            }
            Ok((total, end))
        })
    }

    pub(super) fn set_size(&self, vfs: &SharedVfs, size: u64) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| v.set_len(self.fd, size))
    }

    pub(super) fn check_open(&self, vfs: &SharedVfs) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| v.file_info(self.fd).map(drop))
    }

    pub(super) fn kind(&self, vfs: &SharedVfs) -> Result<Kind, ErrorCode> {
        with_vfs(vfs, |v| Ok(kind_of(v.file_info(self.fd)?.kind)))
    }

    pub(super) fn ino(&self, vfs: &SharedVfs) -> Result<u64, ErrorCode> {
        with_vfs(vfs, |v| Ok(v.file_info(self.fd)?.ino))
    }

    pub(super) fn stat(&self, vfs: &SharedVfs) -> Result<Stat, ErrorCode> {
        with_vfs(vfs, |v| v.file_metadata(self.fd)).map(|m| stat_of(&m))
    }

    pub(super) fn set_times(
        &self,
        vfs: &SharedVfs,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        let (a, m) = (set_time(atime)?, set_time(mtime)?);
        with_vfs(vfs, |v| v.set_file_times(self.fd, a, m))
    }

    pub(super) fn read_directory(
        &self,
        vfs: &SharedVfs,
        held: Held,
    ) -> Result<DirectoryStream, ErrorCode> {
        // Fail now, as opendir would, rather than at the first entry.
        with_vfs(vfs, |v| v.read_dir_page(self.fd, None, 0))?;
        Ok(DirectoryStream::mem(self.fd, held))
    }

    pub(super) fn list_directory<L: Listing>(
        &self,
        vfs: &SharedVfs,
        mut after: Option<String>,
        mut skip: u64,
        out: &mut L,
    ) -> Result<(), L::Error> {
        on_tree(vfs, |v| {
            loop {
                // Names to skip come a bounded page at a time however
                // small the listing's own pages are (a guest's buffer of
                // a few bytes would otherwise walk a directory two
                // names per page).
                let want = match skip {
                    0 => out.page(),
                    n => out.page().max(n.min(SKIP_PAGE) as usize),
                };
                let page = v
                    .read_dir_page(self.fd, after.as_deref(), want)
                    .map_err(ErrorCode::from)?;
                let skipped = page.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
                skip -= skipped as u64;
                for e in &page[skipped..] {
                    if !out.entry(&e.name, kind_of(e.kind), e.ino)? {
                        return Ok(());
                    }
                }
                match page.last() {
                    Some(last) if page.len() == want => after = Some(last.name.to_string()),
                    _ => return Ok(()),
                }
            }
        })
    }

    pub(super) fn create_directory_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| v.create_dir_at(self.fd, path))
    }

    pub(super) fn stat_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        path: &str,
    ) -> Result<Stat, ErrorCode> {
        with_vfs(vfs, |v| v.metadata_at(self.fd, path, symlinks(follow))).map(|m| stat_of(&m))
    }

    pub(super) fn set_times_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        path: &str,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        let (a, m) = (set_time(atime)?, set_time(mtime)?);
        with_vfs(vfs, |v| {
            v.set_times_at(self.fd, path, symlinks(follow), a, m)
        })
    }

    pub(super) fn link_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        old_path: &str,
        new_dir: &MemBackend,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| {
            v.hard_link_at(self.fd, old_path, symlinks(follow), new_dir.fd, new_path)
        })
    }

    pub(super) fn rename_at(
        &self,
        vfs: &SharedVfs,
        old_path: &str,
        new_dir: &MemBackend,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| {
            v.rename_at(self.fd, old_path, new_dir.fd, new_path)
        })
    }

    /// Opens `path`, and says whether it is a directory.
    pub(super) fn open_at(
        &self,
        vfs: &SharedVfs,
        path: &str,
        req: OpenRequest,
    ) -> Result<(MemBackend, bool), ErrorCode> {
        let mut o = OpenOptions::new();
        o.read(req.read)
            .write(req.write)
            .create(req.create)
            .create_new(req.exclusive)
            .truncate(req.truncate)
            .directory(req.directory)
            .follow(req.follow);
        let (fd, kind) = with_vfs(vfs, |v| {
            let new = v.open_at(self.fd, path, &o)?;
            Ok((new, v.file_info(new)?.kind))
        })?;
        Ok((MemBackend { fd }, kind == FileType::Dir))
    }

    pub(super) fn readlink_at(&self, vfs: &SharedVfs, path: &str) -> Result<String, ErrorCode> {
        let target = with_vfs(vfs, |v| v.read_link_at(self.fd, path))?;
        // The WIT forbids revealing absolute targets (which an imported
        // host tree may hold).
        if target.starts_with('/') {
            return Err(ErrorCode::NotPermitted);
        }
        Ok(target)
    }

    pub(super) fn remove_directory_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| v.remove_dir_at(self.fd, path))
    }

    pub(super) fn unlink_file_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| v.remove_file_at(self.fd, path))
    }

    pub(super) fn symlink_at(
        &self,
        vfs: &SharedVfs,
        target: &str,
        path: &str,
    ) -> Result<(), ErrorCode> {
        with_vfs(vfs, |v| v.symlink_at(target, self.fd, path))
    }
}

/// The engine's name for a WASI `symlink-follow` flag.
fn symlinks(follow: bool) -> Symlinks {
    if follow {
        Symlinks::Follow
    } else {
        Symlinks::NoFollow
    }
}
