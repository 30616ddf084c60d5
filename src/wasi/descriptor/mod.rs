//! Descriptors: what a guest's `descriptor` resource (or preview1 file
//! descriptor) holds, the rights WASI attaches to it, and every operation
//! on it in engine terms. The preview2 host (`filesystem_impls`) and the
//! preview1 calls (`p1::calls`) both call these and convert to their own
//! types at their edge; neither ever asks which kind of object is behind a
//! descriptor.
//!
//! Two kinds of object back a descriptor, each a type of its own with the
//! same operations:
//!
//! - [`MemBackend`] (`mem.rs`): an engine [`Fd`] of the in-memory tree.
//!   Path operations go through the engine's `*_at` methods, which resolve
//!   strictly beneath the descriptor's directory.
//! - [`MountBackend`] (`mount.rs`): an open host file or directory of a
//!   mount. Path operations go through cap-primitives, as wasmtime-wasi's
//!   do.
//!
//! This file checks rights and dispatches; it touches neither the engine
//! nor the host itself.

mod dir_stream;
mod mem;
mod mount;

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

pub use self::dir_stream::DirectoryStream;
use self::mem::MemBackend;
use self::mount::MountBackend;
use super::bindings::types::{
    DescriptorFlags, ErrorCode, MetadataHashValue, NewTimestamp, OpenFlags,
};
use super::shared::{Held, MAX_READ, SharedVfs, with_vfs};
use super::stream::WriteMode;
use crate::{Fd, Timestamp};

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
    backend: Backend,
    dir: bool,
    rights: Rights,
    /// The count this descriptor takes while the guest holds it, unless
    /// it is a memory descriptor of its own (the engine counts those).
    held: Option<Held>,
}

/// The object behind a descriptor.
enum Backend {
    Mem(MemBackend),
    Mount(MountBackend),
}

// ----------------------------------------------------------------------
// Engine-term values the two ABIs convert at their edge

/// What a descriptor or directory entry names: the engine's three kinds,
/// and what else a host mount may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    Unknown,
}

/// The status of a descriptor's object (or of a path beneath it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    pub kind: Kind,
    /// The engine's inode number; for a mount, the lower half of the
    /// metadata hash (the inode the adapter and wasmtime-wasi report for a
    /// host file).
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    /// Last access, data change and status change; `None` before 1970 or
    /// out of range, which neither ABI can express.
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// The guest's buffers of one vectored read or write, reached one at a
/// time and in order, so a bad buffer is only found when reached.
pub(crate) trait Buffers {
    /// How the caller fails (a bad buffer may trap rather than return).
    type Error: From<ErrorCode>;
    /// How many buffers there are.
    fn count(&self) -> u32;
    /// Buffer `i` (below [`Buffers::count`]).
    fn get(&mut self, i: u32) -> Result<&mut [u8], Self::Error>;
}

/// Takes the entries of a directory listing, in name order.
pub(crate) trait Listing {
    type Error: From<ErrorCode>;
    /// How many entries to fetch from the engine at a time: a hint that
    /// changes only the cost of the listing, not its outcome.
    fn page(&self) -> usize;
    /// Takes one entry; `false` once no more are wanted. The name as the
    /// tree keeps it, so a listing that remembers it copies no bytes.
    fn entry(&mut self, name: &crate::Name, kind: Kind, ino: u64) -> Result<bool, Self::Error>;
}

/// What `open-at` asks for, once the descriptor has checked it.
#[derive(Clone, Copy, Debug)]
struct OpenRequest {
    read: bool,
    write: bool,
    create: bool,
    exclusive: bool,
    truncate: bool,
    directory: bool,
    follow: bool,
    /// Any of the sync flags.
    sync: bool,
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
            backend: Backend::Mem(MemBackend { fd }),
            dir,
            rights,
            held: None,
        }
    }

    pub(crate) fn mount(file: Arc<File>, dir: bool, mount: u32, rights: Rights) -> Descriptor {
        Descriptor {
            backend: Backend::Mount(MountBackend { file, mount }),
            dir,
            rights,
            held: None,
        }
    }

    /// Counts this descriptor as held by the guest until it is dropped.
    pub(crate) fn hold(mut self, held: Held) -> Descriptor {
        self.held = Some(held);
        self
    }

    /// Makes a descriptor just opened for the guest the guest's: a mount's
    /// keeps `held` (the engine does not count it); a memory one lets
    /// `held` go (the engine counts its own) and records its engine
    /// descriptor in `opened`, to be closed on release or when the tree is
    /// taken back.
    pub(crate) fn adopt(self, held: Held, opened: &mut HashSet<Fd>) -> Descriptor {
        match &self.backend {
            Backend::Mem(m) => {
                opened.insert(m.fd);
                self
            }
            Backend::Mount(_) => self.hold(held),
        }
    }

    /// The guest let the descriptor go: closes its engine descriptor if
    /// [`Descriptor::adopt`] recorded it (a preopen's shared anchor, never
    /// recorded, lives as long as the sandbox).
    pub(crate) fn release(&self, vfs: &SharedVfs, opened: &mut HashSet<Fd>) {
        if let Backend::Mem(m) = &self.backend
            && opened.remove(&m.fd)
        {
            // Only a stale descriptor can fail, and it is closed either way.
            let _ = with_vfs(vfs, |v| v.close(m.fd));
        }
    }

    /// File-only operations on a directory are `bad-descriptor`, as in
    /// wasmtime-wasi.
    fn need_file(&self) -> Result<(), ErrorCode> {
        if self.dir {
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
        if !self.dir {
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

    // ------------------------------------------------------------------
    // Data

    pub(crate) fn read_via_stream(
        &self,
        vfs: &SharedVfs,
        offset: u64,
        held: Held,
    ) -> Result<DynInputStream, ErrorCode> {
        if self.dir {
            return Err(ErrorCode::IsDirectory);
        }
        self.need_read()?;
        Ok(match &self.backend {
            Backend::Mem(m) => m.input_stream(vfs, offset, held),
            Backend::Mount(h) => h.input_stream(offset, held),
        })
    }

    pub(crate) fn write_via_stream(
        &self,
        vfs: &SharedVfs,
        mode: WriteMode,
        held: Held,
    ) -> Result<DynOutputStream, ErrorCode> {
        self.need_write()?;
        Ok(match &self.backend {
            Backend::Mem(m) => m.output_stream(vfs, mode, held),
            Backend::Mount(h) => h.output_stream(mode, held),
        })
    }

    /// Up to `len` bytes (and at most [`MAX_READ`]) from `offset`, and
    /// whether that was the end of the file.
    pub(crate) fn read(
        &self,
        vfs: &SharedVfs,
        len: u64,
        offset: u64,
    ) -> Result<(Vec<u8>, bool), ErrorCode> {
        self.need_read()?;
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(MAX_READ);
        let buf = match &self.backend {
            Backend::Mem(m) => m.read(vfs, want, offset)?,
            Backend::Mount(h) => h.read(want, offset)?,
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
        let n = match &self.backend {
            Backend::Mem(m) => m.write(vfs, data, offset)?,
            Backend::Mount(h) => h.write(data, offset)?,
        };
        Ok(n as u64)
    }

    /// Reads into `bufs` from `offset`, in order, until one is not filled
    /// (the end of the file). A failure after some bytes were read ends the
    /// read short instead. Returns the byte count. A memory file is read
    /// under one lock of the tree, straight into the buffers.
    pub(crate) fn read_vectored<B: Buffers>(
        &self,
        vfs: &SharedVfs,
        bufs: &mut B,
        offset: u64,
    ) -> Result<u64, B::Error> {
        match &self.backend {
            // The engine checks the descriptor's own read right.
            Backend::Mem(m) => m.read_vectored(vfs, bufs, offset),
            Backend::Mount(h) => h.read_vectored(bufs, offset, || self.need_read()),
        }
    }

    /// Writes `bufs` at `offset` (or each at the end, with `append`).
    /// A failure after some bytes were written ends the write short
    /// instead. Returns the byte count and the offset after the last byte
    /// written.
    pub(crate) fn write_vectored<B: Buffers>(
        &self,
        vfs: &SharedVfs,
        bufs: &mut B,
        offset: u64,
        append: bool,
    ) -> Result<(u64, u64), B::Error> {
        match &self.backend {
            // The engine checks the descriptor's own write right.
            Backend::Mem(m) => m.write_vectored(vfs, bufs, offset, append),
            Backend::Mount(h) => h.write_vectored(bufs, offset, append, || self.need_write()),
        }
    }

    pub(crate) fn set_size(&self, vfs: &SharedVfs, size: u64) -> Result<(), ErrorCode> {
        self.need_write()?;
        match &self.backend {
            Backend::Mem(m) => m.set_size(vfs, size),
            Backend::Mount(h) => h.set_size(size),
        }
    }

    /// Advice changes no outcome (the tree is in memory, or the host's
    /// page cache decides for itself), so only the descriptor is checked.
    pub(crate) fn advise(&self, vfs: &SharedVfs) -> Result<(), ErrorCode> {
        self.need_file()?;
        self.check_open(vfs)
    }

    /// Data is never buffered between the guest and the tree, so syncing a
    /// memory descriptor only checks that it is open.
    pub(crate) fn sync(&self, vfs: &SharedVfs, data_only: bool) -> Result<(), ErrorCode> {
        match &self.backend {
            Backend::Mem(m) => m.check_open(vfs),
            Backend::Mount(h) => h.sync(data_only),
        }
    }

    fn check_open(&self, vfs: &SharedVfs) -> Result<(), ErrorCode> {
        match &self.backend {
            Backend::Mem(m) => m.check_open(vfs),
            Backend::Mount(_) => Ok(()),
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
        if self.dir && self.rights.mutate {
            flags |= DescriptorFlags::MUTATE_DIRECTORY;
        }
        Ok(flags)
    }

    pub(crate) fn kind(&self, vfs: &SharedVfs) -> Result<Kind, ErrorCode> {
        match &self.backend {
            Backend::Mem(m) => m.kind(vfs),
            Backend::Mount(h) => h.kind(),
        }
    }

    pub(crate) fn stat(&self, vfs: &SharedVfs) -> Result<Stat, ErrorCode> {
        match &self.backend {
            Backend::Mem(m) => m.stat(vfs),
            Backend::Mount(h) => h.stat(),
        }
    }

    pub(crate) fn set_times(
        &self,
        vfs: &SharedVfs,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        self.need_mutate()?;
        match &self.backend {
            Backend::Mem(m) => m.set_times(vfs, atime, mtime),
            Backend::Mount(h) => h.set_times(atime, mtime),
        }
    }

    fn identity(&self, vfs: &SharedVfs) -> Result<Identity, ErrorCode> {
        match &self.backend {
            Backend::Mem(m) => Ok(Identity::Mem(m.ino(vfs)?)),
            Backend::Mount(h) => {
                let (dev, ino) = h.dev_ino()?;
                Ok(Identity::Host(dev, ino))
            }
        }
    }

    /// The inode number, as [`Stat::ino`] reports it.
    pub(crate) fn ino(&self, vfs: &SharedVfs) -> Result<u64, ErrorCode> {
        match &self.backend {
            Backend::Mem(m) => m.ino(vfs),
            Backend::Mount(_) => Ok(self.identity(vfs)?.hash().lower),
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
    // Directory listings

    /// A stream of the directory's entries; `held` counts it while the
    /// guest holds it.
    pub(crate) fn read_directory(
        &self,
        vfs: &SharedVfs,
        held: Held,
    ) -> Result<DirectoryStream, ErrorCode> {
        self.need_dir()?;
        match &self.backend {
            Backend::Mem(m) => m.read_directory(vfs, held),
            Backend::Mount(h) => h.read_directory(held),
        }
    }

    /// Gives `out` the directory's entries in name order: those after
    /// `after` (all of them if `None`), less the first `skip` of those,
    /// until `out` wants no more. A memory directory is listed under one
    /// lock of the tree, a page at a time; a mount's is read whole and
    /// sorted, and its inodes found only for the entries `out` is given.
    pub(crate) fn list_directory<L: Listing>(
        &self,
        vfs: &SharedVfs,
        after: Option<String>,
        skip: u64,
        out: &mut L,
    ) -> Result<(), L::Error> {
        self.need_dir()?;
        match &self.backend {
            Backend::Mem(m) => m.list_directory(vfs, after, skip, out),
            Backend::Mount(h) => h.list_directory(after.as_deref(), skip, out),
        }
    }

    // ------------------------------------------------------------------
    // Path operations beneath a directory

    pub(crate) fn create_directory_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.backend {
            Backend::Mem(m) => m.create_directory_at(vfs, path),
            Backend::Mount(h) => h.create_directory_at(path),
        }
    }

    pub(crate) fn stat_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        path: &str,
    ) -> Result<Stat, ErrorCode> {
        self.need_dir()?;
        match &self.backend {
            Backend::Mem(m) => m.stat_at(vfs, follow, path),
            Backend::Mount(h) => h.stat_at(follow, path),
        }
    }

    pub(crate) fn metadata_hash_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        path: &str,
    ) -> Result<MetadataHashValue, ErrorCode> {
        self.need_dir()?;
        let id = match &self.backend {
            Backend::Mem(m) => Identity::Mem(m.stat_at(vfs, follow, path)?.ino),
            Backend::Mount(h) => {
                let (dev, ino) = h.dev_ino_at(follow, path)?;
                Identity::Host(dev, ino)
            }
        };
        Ok(id.hash())
    }

    pub(crate) fn set_times_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        path: &str,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.backend {
            Backend::Mem(m) => m.set_times_at(vfs, follow, path, atime, mtime),
            Backend::Mount(h) => h.set_times_at(follow, path, atime, mtime),
        }
    }

    /// The two directories of a link or rename must both be changeable,
    /// and may not leave the tree, nor one host mount.
    fn same_device<'a>(&'a self, other: &'a Descriptor) -> Result<Pair<'a>, ErrorCode> {
        self.need_dir_mutate()?;
        other.need_dir_mutate()?;
        match (&self.backend, &other.backend) {
            (Backend::Mem(a), Backend::Mem(b)) => Ok(Pair::Mem(a, b)),
            (Backend::Mount(a), Backend::Mount(b)) if a.mount == b.mount => Ok(Pair::Mount(a, b)),
            _ => Err(ErrorCode::CrossDevice),
        }
    }

    pub(crate) fn link_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
        old_path: &str,
        new_dir: &Descriptor,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        match self.same_device(new_dir)? {
            Pair::Mem(a, b) => a.link_at(vfs, follow, old_path, b, new_path),
            Pair::Mount(a, b) => a.link_at(follow, old_path, b, new_path),
        }
    }

    pub(crate) fn rename_at(
        &self,
        vfs: &SharedVfs,
        old_path: &str,
        new_dir: &Descriptor,
        new_path: &str,
    ) -> Result<(), ErrorCode> {
        match self.same_device(new_dir)? {
            Pair::Mem(a, b) => a.rename_at(vfs, old_path, b, new_path),
            Pair::Mount(a, b) => a.rename_at(old_path, b, new_path),
        }
    }

    pub(crate) fn open_at(
        &self,
        vfs: &SharedVfs,
        follow: bool,
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
        let directory = oflags.contains(OpenFlags::DIRECTORY);
        if directory && (create || truncate || oflags.contains(OpenFlags::EXCLUSIVE)) {
            return Err(ErrorCode::Invalid);
        }
        // As in wasmtime-wasi: a descriptor opened neither for reading nor
        // for writing can still be read.
        let read = flags.contains(DescriptorFlags::READ) || !write;
        let sync = flags
            & (DescriptorFlags::FILE_INTEGRITY_SYNC
                | DescriptorFlags::DATA_INTEGRITY_SYNC
                | DescriptorFlags::REQUESTED_WRITE_SYNC);
        let req = OpenRequest {
            read,
            write,
            create,
            exclusive: create && oflags.contains(OpenFlags::EXCLUSIVE),
            truncate,
            directory,
            follow,
            sync: sync != DescriptorFlags::empty(),
        };
        let (backend, dir) = match &self.backend {
            Backend::Mem(m) => {
                let (m, dir) = m.open_at(vfs, path, req)?;
                (Backend::Mem(m), dir)
            }
            Backend::Mount(h) => {
                let (h, dir) = h.open_at(path, req)?;
                (Backend::Mount(h), dir)
            }
        };
        let rights = Rights {
            // A directory is read, never written.
            read: read || dir,
            write: write && !dir,
            mutate: self.rights.mutate,
            sync,
        };
        Ok(Descriptor {
            backend,
            dir,
            rights,
            held: None,
        })
    }

    pub(crate) fn readlink_at(&self, vfs: &SharedVfs, path: &str) -> Result<String, ErrorCode> {
        self.need_dir()?;
        match &self.backend {
            Backend::Mem(m) => m.readlink_at(vfs, path),
            Backend::Mount(h) => h.readlink_at(path),
        }
    }

    pub(crate) fn remove_directory_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.backend {
            Backend::Mem(m) => m.remove_directory_at(vfs, path),
            Backend::Mount(h) => h.remove_directory_at(path),
        }
    }

    pub(crate) fn unlink_file_at(&self, vfs: &SharedVfs, path: &str) -> Result<(), ErrorCode> {
        self.need_dir_mutate()?;
        match &self.backend {
            Backend::Mem(m) => m.unlink_file_at(vfs, path),
            Backend::Mount(h) => h.unlink_file_at(path),
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
        match &self.backend {
            Backend::Mem(m) => m.symlink_at(vfs, target, path),
            Backend::Mount(h) => h.symlink_at(target, path),
        }
    }
}

/// The two directories of a link or rename, on one device.
enum Pair<'a> {
    Mem(&'a MemBackend, &'a MemBackend),
    Mount(&'a MountBackend, &'a MountBackend),
}
