//! Descriptors: what a guest's `descriptor` resource holds, and every
//! operation on it, for the in-memory tree and for host mounts.
//!
//! A memory descriptor is an engine [`Fd`] plus the rights WASI attaches
//! to it; all path operations go through the engine's `*_at` methods,
//! which resolve strictly beneath the descriptor's directory. A mount
//! descriptor is an open host file or directory, and its path operations go
//! through cap-primitives, as wasmtime-wasi's do.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use cap_primitives::fs as cap;

use super::bindings::types::{
    Advice, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode,
    MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};
use super::shared::{Held, MAX_READ, SharedVfs, with_vfs};
use super::stream::{HostInput, HostOutput, MemInput, MemOutput, WriteMode};
use crate::Fd;
use crate::{FileType, Metadata, OpenOptions, SetTime, Timestamp};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

/// What a descriptor may do, fixed when it is opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rights {
    /// File data may be read.
    pub read: bool,
    /// File data may be written (and the size set).
    pub write: bool,
    /// The tree beneath (or, for a file, its metadata) may change: the
    /// `mutate-directory` right, inherited from the preopen.
    pub mutate: bool,
    /// The sync flags asked for at open, reported back by `get-flags`.
    pub sync: DescriptorFlags,
}

/// The host side of a guest's `descriptor` resource.
pub struct Descriptor {
    node: Node,
    rights: Rights,
    /// The count this descriptor takes while the guest holds it, unless
    /// it is a memory descriptor of its own (the engine counts those).
    held: Option<Held>,
}

enum Node {
    Mem {
        fd: Fd,
        dir: bool,
    },
    Host {
        file: Arc<File>,
        dir: bool,
        mount: u32,
    },
}

/// The two directories of a link or rename, on one device.
enum DirPair<'a> {
    Mem(Fd, Fd),
    Host(&'a File, &'a File),
}

/// How one descriptor's object is identified for `is-same-object` and
/// `metadata-hash`: memory inodes and host (device, inode) pairs never meet.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Identity {
    Mem(u64),
    Host(u64, u64),
}

impl Identity {
    fn hash(self) -> MetadataHashValue {
        // splitmix64's finalizer: a bijection, so distinct inodes never
        // collide, and stable across hosts and Rust versions.
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let lower = match self {
            Identity::Mem(ino) => mix(ino),
            Identity::Host(dev, ino) => mix(ino ^ mix(dev ^ 0x6d6f_756e_7421)),
        };
        let upper = match self {
            Identity::Mem(_) => mix(lower ^ 0x636f_7776_6673),
            Identity::Host(..) => mix(lower ^ 0x686f_7374),
        };
        MetadataHashValue { lower, upper }
    }
}

impl Descriptor {
    pub(crate) fn mem(fd: Fd, dir: bool, rights: Rights) -> Descriptor {
        Descriptor {
            node: Node::Mem { fd, dir },
            rights,
            held: None,
        }
    }

    pub(crate) fn host(file: Arc<File>, dir: bool, mount: u32, rights: Rights) -> Descriptor {
        Descriptor {
            node: Node::Host { file, dir, mount },
            rights,
            held: None,
        }
    }

    /// Counts this descriptor as held by the guest until it is dropped.
    pub(crate) fn hold(mut self, held: Held) -> Descriptor {
        self.held = Some(held);
        self
    }

    /// Whether the descriptor is a host mount's (whose open files the
    /// engine does not count).
    pub(crate) fn is_host(&self) -> bool {
        matches!(self.node, Node::Host { .. })
    }

    /// The engine descriptor, for a memory descriptor.
    pub(crate) fn mem_fd(&self) -> Option<Fd> {
        match self.node {
            Node::Mem { fd, .. } => Some(fd),
            Node::Host { .. } => None,
        }
    }

    fn is_dir(&self) -> bool {
        match self.node {
            Node::Mem { dir, .. } | Node::Host { dir, .. } => dir,
        }
    }

    /// File-only operations on a directory are `bad-descriptor`, as in
    /// wasmtime-wasi.
    fn need_file(&self) -> Result<(), ErrorCode> {
        if self.is_dir() {
            return Err(ErrorCode::BadDescriptor);
        }
        Ok(())
    }

    /// Reading data needs a file opened for reading.
    fn need_read(&self) -> Result<(), ErrorCode> {
        self.need_file()?;
        if !self.rights.read {
            return Err(ErrorCode::BadDescriptor);
        }
        Ok(())
    }

    /// Writing data or the size needs a file opened for writing.
    fn need_write(&self) -> Result<(), ErrorCode> {
        self.need_file()?;
        if !self.rights.write {
            return Err(ErrorCode::BadDescriptor);
        }
        Ok(())
    }

    fn need_dir(&self) -> Result<(), ErrorCode> {
        if !self.is_dir() {
            return Err(ErrorCode::NotDirectory);
        }
        Ok(())
    }

    /// A change through a descriptor without `mutate-directory`.
    fn need_mutate(&self) -> Result<(), ErrorCode> {
        if !self.rights.mutate {
            return Err(ErrorCode::ReadOnly);
        }
        Ok(())
    }

    fn need_dir_mutate(&self) -> Result<(), ErrorCode> {
        self.need_dir()?;
        self.need_mutate()
    }

    /// Checks both directories of a link or rename, which may not leave
    /// the tree, nor one host mount.
    fn pair_with<'a>(&'a self, other: &'a Descriptor) -> Result<DirPair<'a>, ErrorCode> {
        self.need_dir_mutate()?;
        other.need_dir_mutate()?;
        match (&self.node, &other.node) {
            (Node::Mem { fd: a, .. }, Node::Mem { fd: b, .. }) => Ok(DirPair::Mem(*a, *b)),
            (
                Node::Host {
                    file: a, mount: ma, ..
                },
                Node::Host {
                    file: b, mount: mb, ..
                },
            ) if ma == mb => Ok(DirPair::Host(a, b)),
            _ => Err(ErrorCode::CrossDevice),
        }
    }

    // ------------------------------------------------------------------
    // Data

    pub(crate) fn read_via_stream(
        &self,
        vfs: &SharedVfs,
        offset: u64,
        held: Held,
    ) -> Result<DynInputStream, ErrorCode> {
        if self.is_dir() {
            return Err(ErrorCode::IsDirectory);
        }
        self.need_read()?;
        Ok(match &self.node {
            Node::Mem { fd, .. } => Box::new(MemInput::new(vfs.clone(), *fd, offset, held)),
            Node::Host { file, .. } => Box::new(HostInput::new(file.clone(), offset, held)),
        })
    }

    pub(crate) fn write_via_stream(
        &self,
        vfs: &SharedVfs,
        mode: WriteMode,
        held: Held,
    ) -> Result<DynOutputStream, ErrorCode> {
        self.need_write()?;
        Ok(match &self.node {
            Node::Mem { fd, .. } => Box::new(MemOutput::new(vfs.clone(), *fd, mode, held)),
            Node::Host { file, .. } => Box::new(HostOutput::new(file.clone(), mode, held)),
        })
    }

    pub(crate) fn read(
        &self,
        vfs: &SharedVfs,
        len: u64,
        offset: u64,
    ) -> Result<(Vec<u8>, bool), ErrorCode> {
        self.need_read()?;
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_READ);
        let buf = match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| {
                let size = v.fd_metadata(*fd)?.len;
                let n = want.min(usize::try_from(size.saturating_sub(offset)).unwrap_or(want));
                let mut buf = vec![0; n];
                let got = v.read_at(*fd, &mut buf, offset)?;
                buf.truncate(got);
                Ok(buf)
            })?,
            Node::Host { file, .. } => {
                let mut buf = vec![0; want];
                let got = file.read_at(&mut buf, offset)?;
                buf.truncate(got);
                buf
            }
        };
        let end = buf.is_empty() && want > 0;
        Ok((buf, end))
    }

    pub(crate) fn write(
        &self,
        vfs: &SharedVfs,
        data: &[u8],
        offset: u64,
    ) -> Result<u64, ErrorCode> {
        self.need_write()?;
        let n = match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.write_at(*fd, data, offset))?,
            Node::Host { file, .. } => file.write_at(data, offset)?,
        };
        Ok(n as u64)
    }

    pub(crate) fn set_size(&self, vfs: &SharedVfs, size: u64) -> Result<(), ErrorCode> {
        self.need_write()?;
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.set_len(*fd, size)),
            Node::Host { file, .. } => Ok(file.set_len(size)?),
        }
    }

    pub(crate) fn advise(
        &self,
        vfs: &SharedVfs,
        _offset: u64,
        _len: u64,
        _advice: Advice,
    ) -> Result<(), ErrorCode> {
        // Advice changes no outcome; the tree is in memory or the host's
        // page cache decides for itself.
        self.need_file()?;
        self.check_open(vfs)
    }

    /// Data is never buffered between the guest and the tree, so syncing a
    /// memory descriptor only checks that it is open.
    pub(crate) fn sync(&self, vfs: &SharedVfs, data_only: bool) -> Result<(), ErrorCode> {
        match &self.node {
            Node::Mem { .. } => self.check_open(vfs),
            Node::Host { file, .. } if data_only => Ok(file.sync_data()?),
            Node::Host { file, .. } => Ok(file.sync_all()?),
        }
    }

    fn check_open(&self, vfs: &SharedVfs) -> Result<(), ErrorCode> {
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.fd_info(*fd).map(drop)),
            Node::Host { .. } => Ok(()),
        }
    }

    // ------------------------------------------------------------------
    // Metadata of the descriptor itself

    pub(crate) fn get_flags(&self, vfs: &SharedVfs) -> Result<DescriptorFlags, ErrorCode> {
        self.check_open(vfs)?;
        let mut flags = self.rights.sync;
        if self.rights.read {
            flags |= DescriptorFlags::READ;
        }
        if self.rights.write {
            flags |= DescriptorFlags::WRITE;
        }
        if self.is_dir() && self.rights.mutate {
            flags |= DescriptorFlags::MUTATE_DIRECTORY;
        }
        Ok(flags)
    }

    pub(crate) fn get_type(&self, vfs: &SharedVfs) -> Result<DescriptorType, ErrorCode> {
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| Ok(mem_type(v.fd_info(*fd)?.kind))),
            Node::Host { file, .. } => Ok(host_type(file.metadata()?.file_type())),
        }
    }

    pub(crate) fn stat(&self, vfs: &SharedVfs) -> Result<DescriptorStat, ErrorCode> {
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.fd_metadata(*fd)).map(|m| mem_stat(&m)),
            Node::Host { file, .. } => Ok(host_stat(&file.metadata()?)),
        }
    }

    pub(crate) fn set_times(
        &self,
        vfs: &SharedVfs,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        self.need_mutate()?;
        match &self.node {
            Node::Mem { fd, .. } => {
                let (a, m) = (set_time(atime)?, set_time(mtime)?);
                with_vfs(vfs, |v| v.fd_set_times(*fd, a, m))
            }
            Node::Host { file, .. } => {
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = host_time(atime)? {
                    times = times.set_accessed(t);
                }
                if let Some(t) = host_time(mtime)? {
                    times = times.set_modified(t);
                }
                Ok(file.set_times(times)?)
            }
        }
    }

    fn identity(&self, vfs: &SharedVfs) -> Result<Identity, ErrorCode> {
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| Ok(Identity::Mem(v.fd_info(*fd)?.ino))),
            Node::Host { file, .. } => {
                let m = file.metadata()?;
                Ok(Identity::Host(m.dev(), m.ino()))
            }
        }
    }

    pub(crate) fn is_same_object(&self, vfs: &SharedVfs, other: &Descriptor) -> bool {
        match (self.identity(vfs), other.identity(vfs)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    pub(crate) fn metadata_hash(&self, vfs: &SharedVfs) -> Result<MetadataHashValue, ErrorCode> {
        Ok(self.identity(vfs)?.hash())
    }

    // ------------------------------------------------------------------
    // Path operations beneath a directory

    /// A stream of the directory's entries; `held` counts it while the
    /// guest holds it (`None` for the host's own short-lived listings).
    pub(crate) fn read_directory(
        &self,
        vfs: &SharedVfs,
        held: Option<Held>,
    ) -> Result<DirectoryStream, ErrorCode> {
        self.need_dir()?;
        let inner = match &self.node {
            Node::Mem { fd, .. } => {
                // Fail now, as opendir would, rather than at the first entry.
                with_vfs(vfs, |v| v.read_dir_page(*fd, None, 0))?;
                DirInner::Mem {
                    fd: *fd,
                    after: None,
                    page: VecDeque::new(),
                    done: false,
                }
            }
            Node::Host { file, .. } => DirInner::Host(Mutex::new(cap::read_base_dir(file)?)),
        };
        Ok(DirectoryStream { inner, _held: held })
    }

    pub(crate) fn create_directory_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.create_dir_at(*fd, path)),
            Node::Host { file, .. } => Ok(cap::create_dir(
                file,
                Path::new(path),
                &cap::DirOptions::new(),
            )?),
        }
    }

    pub(crate) fn stat_at(
        &self,
        vfs: &SharedVfs,
        flags: PathFlags,
        path: &str,
    ) -> Result<DescriptorStat, ErrorCode> {
        self.need_dir()?;
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        match &self.node {
            Node::Mem { fd, .. } => {
                with_vfs(vfs, |v| v.metadata_at(*fd, path, follow)).map(|m| mem_stat(&m))
            }
            Node::Host { file, .. } => Ok(cap_stat(&cap::stat(
                file,
                Path::new(path),
                follow_of(follow),
            )?)),
        }
    }

    pub(crate) fn metadata_hash_at(
        &self,
        vfs: &SharedVfs,
        flags: PathFlags,
        path: &str,
    ) -> Result<MetadataHashValue, ErrorCode> {
        self.need_dir()?;
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        let id = match &self.node {
            Node::Mem { fd, .. } => {
                Identity::Mem(with_vfs(vfs, |v| v.metadata_at(*fd, path, follow))?.ino)
            }
            Node::Host { file, .. } => {
                use cap::MetadataExt as _;
                let m = cap::stat(file, Path::new(path), follow_of(follow))?;
                Identity::Host(m.dev(), m.ino())
            }
        };
        Ok(id.hash())
    }

    pub(crate) fn set_times_at(
        &self,
        vfs: &SharedVfs,
        flags: PathFlags,
        path: &str,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        match &self.node {
            Node::Mem { fd, .. } => {
                let (a, m) = (set_time(atime)?, set_time(mtime)?);
                with_vfs(vfs, |v| v.set_times_at(*fd, path, follow, a, m))
            }
            Node::Host { file, .. } => {
                let (a, m) = (cap_time(atime)?, cap_time(mtime)?);
                let path = Path::new(path);
                if follow {
                    cap::set_times(file, path, a, m)?;
                } else {
                    cap::set_times_nofollow(file, path, a, m)?;
                }
                Ok(())
            }
        }
    }

    pub(crate) fn link_at(
        &self,
        vfs: &SharedVfs,
        flags: PathFlags,
        old_path: &str,
        new_dir: &Descriptor,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        match self.pair_with(new_dir)? {
            DirPair::Mem(a, b) => {
                with_vfs(vfs, |v| v.hard_link_at(a, old_path, follow, b, new_path))
            }
            DirPair::Host(a, b) => {
                // linkat(AT_SYMLINK_FOLLOW) has no sandboxed form in
                // cap-primitives; wasmtime-wasi refuses it the same way.
                if follow {
                    return Err(ErrorCode::Invalid);
                }
                Ok(cap::hard_link(
                    a,
                    Path::new(old_path),
                    b,
                    Path::new(new_path),
                )?)
            }
        }
    }

    pub(crate) fn open_at(
        &self,
        vfs: &SharedVfs,
        path_flags: PathFlags,
        path: &str,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> Result<Descriptor, ErrorCode> {
        self.need_dir()?;
        let create = oflags.contains(OpenFlags::CREATE);
        let truncate = oflags.contains(OpenFlags::TRUNCATE);
        let write = flags.contains(DescriptorFlags::WRITE);
        let changes =
            write || create || truncate || flags.contains(DescriptorFlags::MUTATE_DIRECTORY);
        if changes && !self.rights.mutate {
            return Err(ErrorCode::ReadOnly);
        }
        let want_dir = oflags.contains(OpenFlags::DIRECTORY);
        if want_dir && (create || truncate || oflags.contains(OpenFlags::EXCLUSIVE)) {
            return Err(ErrorCode::Invalid);
        }
        let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
        let exclusive = create && oflags.contains(OpenFlags::EXCLUSIVE);
        // As in wasmtime-wasi: a descriptor opened neither for reading nor
        // for writing can still be read.
        let read = flags.contains(DescriptorFlags::READ) || !write;
        let sync = flags
            & (DescriptorFlags::FILE_INTEGRITY_SYNC
                | DescriptorFlags::DATA_INTEGRITY_SYNC
                | DescriptorFlags::REQUESTED_WRITE_SYNC);
        let mut rights = Rights {
            read,
            write,
            mutate: self.rights.mutate,
            sync,
        };
        match &self.node {
            Node::Mem { fd, .. } => {
                let mut o = OpenOptions::new();
                o.read(read)
                    .write(write)
                    .create(create)
                    .create_new(exclusive)
                    .truncate(truncate)
                    .directory(want_dir)
                    .follow(follow);
                let (new, kind) = with_vfs(vfs, |v| {
                    let new = v.open_at(*fd, path, &o)?;
                    Ok((new, v.fd_info(new)?.kind))
                })?;
                let dir = kind == FileType::Dir;
                if dir {
                    rights.read = true;
                    rights.write = false;
                }
                Ok(Descriptor::mem(new, dir, rights))
            }
            Node::Host { file, mount, .. } => {
                // cap-primitives has no sandboxed O_SYNC family either.
                if sync != DescriptorFlags::empty() {
                    return Err(ErrorCode::Unsupported);
                }
                let mut o = cap::OpenOptions::new();
                o.read(read)
                    .write(write || create || truncate)
                    .create(create && !exclusive)
                    .create_new(exclusive)
                    .truncate(truncate)
                    ._cap_fs_ext_follow(follow_of(follow));
                let opened = cap::open(file, Path::new(path), &o)?;
                let dir = opened.metadata()?.is_dir();
                if want_dir && !dir {
                    return Err(ErrorCode::NotDirectory);
                }
                if dir {
                    rights.read = true;
                    rights.write = false;
                }
                Ok(Descriptor::host(Arc::new(opened), dir, *mount, rights))
            }
        }
    }

    pub(crate) fn readlink_at(&self, vfs: &SharedVfs, path: &str) -> Result<String, ErrorCode> {
        self.need_dir()?;
        match &self.node {
            Node::Mem { fd, .. } => {
                let target = with_vfs(vfs, |v| v.read_link_at(*fd, path))?;
                // The WIT forbids revealing absolute targets (which an
                // imported host tree may hold).
                if target.starts_with('/') {
                    return Err(ErrorCode::NotPermitted);
                }
                Ok(target)
            }
            Node::Host { file, .. } => cap::read_link(file, Path::new(path))?
                .into_os_string()
                .into_string()
                .map_err(|_| ErrorCode::IllegalByteSequence),
        }
    }

    pub(crate) fn remove_directory_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.remove_dir_at(*fd, path)),
            Node::Host { file, .. } => Ok(cap::remove_dir(file, Path::new(path))?),
        }
    }

    pub(crate) fn unlink_file_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.remove_file_at(*fd, path)),
            Node::Host { file, .. } => Ok(cap::remove_file(file, Path::new(path))?),
        }
    }

    pub(crate) fn rename_at(
        &self,
        vfs: &SharedVfs,
        old_path: &str,
        new_dir: &Descriptor,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        match self.pair_with(new_dir)? {
            DirPair::Mem(a, b) => with_vfs(vfs, |v| v.rename_at(a, old_path, b, new_path)),
            DirPair::Host(a, b) => Ok(cap::rename(a, Path::new(old_path), b, Path::new(new_path))?),
        }
    }

    pub(crate) fn symlink_at(
        &self,
        vfs: &SharedVfs,
        target: &str,
        path: &str,
    ) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        if target.starts_with('/') {
            return Err(ErrorCode::NotPermitted);
        }
        match &self.node {
            Node::Mem { fd, .. } => with_vfs(vfs, |v| v.symlink_at(target, *fd, path)),
            Node::Host { file, .. } => Ok(cap::symlink(Path::new(target), file, Path::new(path))?),
        }
    }
}

// ----------------------------------------------------------------------
// Directory streams

/// The host side of a guest's `directory-entry-stream`.
pub struct DirectoryStream {
    inner: DirInner,
    /// The stream's count while the guest holds it.
    _held: Option<Held>,
}

enum DirInner {
    /// Pages through a memory directory by name, so entries that stay put
    /// while the directory changes are listed exactly once.
    Mem {
        fd: Fd,
        after: Option<String>,
        page: VecDeque<crate::DirEntry>,
        done: bool,
    },
    /// A host directory's entries, read lazily.
    Host(Mutex<cap::ReadDir>),
}

const DIR_PAGE: usize = 256;

impl DirectoryStream {
    pub(crate) fn next(&mut self, vfs: &SharedVfs) -> Result<Option<DirectoryEntry>, ErrorCode> {
        match &mut self.inner {
            DirInner::Mem {
                fd,
                after,
                page,
                done,
            } => {
                if page.is_empty() && !*done {
                    let more = with_vfs(vfs, |v| v.read_dir_page(*fd, after.as_deref(), DIR_PAGE))?;
                    *done = more.len() < DIR_PAGE;
                    if let Some(last) = more.last() {
                        *after = Some(last.name.clone());
                    }
                    page.extend(more);
                }
                Ok(page.pop_front().map(|e| DirectoryEntry {
                    type_: mem_type(e.kind),
                    name: e.name,
                }))
            }
            DirInner::Host(iter) => {
                let iter = iter.get_mut().unwrap_or_else(PoisonError::into_inner);
                let Some(entry) = iter.next().transpose()? else {
                    return Ok(None);
                };
                let type_ = host_type_cap(entry.file_type()?);
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|_| ErrorCode::IllegalByteSequence)?;
                Ok(Some(DirectoryEntry { type_, name }))
            }
        }
    }
}

// ----------------------------------------------------------------------
// Conversions

fn follow_of(follow: bool) -> cap::FollowSymlinks {
    if follow {
        cap::FollowSymlinks::Yes
    } else {
        cap::FollowSymlinks::No
    }
}

fn mem_type(kind: FileType) -> DescriptorType {
    match kind {
        FileType::File => DescriptorType::RegularFile,
        FileType::Dir => DescriptorType::Directory,
        FileType::Symlink => DescriptorType::SymbolicLink,
    }
}

fn host_type(ft: std::fs::FileType) -> DescriptorType {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        DescriptorType::Directory
    } else if ft.is_symlink() {
        DescriptorType::SymbolicLink
    } else if ft.is_file() {
        DescriptorType::RegularFile
    } else if ft.is_block_device() {
        DescriptorType::BlockDevice
    } else if ft.is_char_device() {
        DescriptorType::CharacterDevice
    } else if ft.is_fifo() {
        DescriptorType::Fifo
    } else if ft.is_socket() {
        DescriptorType::Socket
    } else {
        DescriptorType::Unknown
    }
}

fn host_type_cap(ft: cap::FileType) -> DescriptorType {
    if ft.is_dir() {
        DescriptorType::Directory
    } else if ft.is_symlink() {
        DescriptorType::SymbolicLink
    } else if ft.is_file() {
        DescriptorType::RegularFile
    } else {
        DescriptorType::Unknown
    }
}

/// Times before 1970 have no `datetime`; the stat reports them missing.
fn datetime(secs: i64, nanos: i64) -> Option<Datetime> {
    Some(Datetime {
        seconds: u64::try_from(secs).ok()?,
        nanoseconds: u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?,
    })
}

fn ts(t: Timestamp) -> Option<Datetime> {
    datetime(t.secs, i64::from(t.nanos))
}

fn mem_stat(m: &Metadata) -> DescriptorStat {
    DescriptorStat {
        type_: mem_type(m.kind),
        link_count: m.nlink,
        size: m.len,
        data_access_timestamp: ts(m.atime),
        data_modification_timestamp: ts(m.mtime),
        status_change_timestamp: ts(m.ctime),
    }
}

fn host_stat(m: &std::fs::Metadata) -> DescriptorStat {
    DescriptorStat {
        type_: host_type(m.file_type()),
        link_count: m.nlink(),
        size: m.len(),
        data_access_timestamp: datetime(m.atime(), m.atime_nsec()),
        data_modification_timestamp: datetime(m.mtime(), m.mtime_nsec()),
        status_change_timestamp: datetime(m.ctime(), m.ctime_nsec()),
    }
}

fn cap_stat(m: &cap::Metadata) -> DescriptorStat {
    use cap::MetadataExt as _;
    DescriptorStat {
        type_: host_type_cap(m.file_type()),
        link_count: m.nlink(),
        size: m.len(),
        data_access_timestamp: datetime(m.atime(), m.atime_nsec()),
        data_modification_timestamp: datetime(m.mtime(), m.mtime_nsec()),
        status_change_timestamp: datetime(m.ctime(), m.ctime_nsec()),
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
