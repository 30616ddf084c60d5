//! Operations on files and their metadata: open, read, write, truncate,
//! stat, times, permissions and directory listings.

use crate::content::{Content, Cost};
use crate::error::{Error, ErrorKind, Result, err};
use crate::time::{Clock, Timestamp};
use crate::tree::{Base, FileType, Ino, Node, Tree};

use super::read::{DirEntry, Metadata, dir_page, read_dir, read_file, stat};
use super::{Fd, FdInfo, OpenOptions, SetTime, Symlinks, Vfs, check_private, ctx};

impl Vfs {
    /// Creates or truncates a file and writes `data` into it.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        // As `open` for writing, creating and truncating, then `write_at`
        // and `close`, without a descriptor: nothing but the generation
        // (which `Fd`s show) would tell them apart.
        let mut o = OpenOptions::new();
        o.write(true).create(true).truncate(true);
        let (ino, _, now, written) = self
            .open_ino(Base::Root, path, &o, Some(data))
            .map_err(ctx(path))?;
        self.generation = self.generation.wrapping_add(1).max(1);
        match written {
            Some((cost, allocated)) => {
                self.private += cost.private;
                self.allocated = self.allocated.saturating_add(allocated);
            }
            None => {
                self.write_ino(ino, data, 0, now).map_err(ctx(path))?;
            }
        }
        Ok(())
    }

    /// Reads a whole file (symlinks followed).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        read_file(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// Opens a file or directory from the root.
    pub fn open(&mut self, path: &str, opts: &OpenOptions) -> Result<Fd> {
        self.open_impl(Base::Root, path, opts).map_err(ctx(path))
    }

    /// Opens a file or directory beneath `dir`.
    pub fn open_at(&mut self, dir: Fd, path: &str, opts: &OpenOptions) -> Result<Fd> {
        let base = self.base_of(dir)?;
        self.open_impl(base, path, opts).map_err(ctx(path))
    }

    fn open_impl(&mut self, base: Base, path: &str, o: &OpenOptions) -> Result<Fd> {
        let (ino, kind, _, _) = self.open_ino(base, path, o, None)?;
        self.alloc_fd(FdInfo {
            ino,
            kind,
            read: o.read,
            write: o.write || o.append,
            append: o.append,
        })
    }

    /// What `open` does before it hands out a descriptor: the inode opened,
    /// its kind, and the time read if the open changed anything (the clock
    /// is read only then). With `fill`, a file it creates is made holding
    /// those bytes when the write would succeed, and the write's cost and
    /// allocation are returned (`None`: nothing was written).
    fn open_ino(
        &mut self,
        base: Base,
        path: &str,
        o: &OpenOptions,
        fill: Option<&[u8]>,
    ) -> Result<Opened> {
        if self.open_total >= self.tree.limits().max_open_files as u64 {
            return err(ErrorKind::TooManyOpenFiles);
        }
        let creating = o.create || o.create_new;
        // O_CREAT|O_EXCL never follows a final symlink: the name is taken.
        let follow = o.follow && !o.create_new;
        let (r, mode) = self.tree.resolve_mode(base, path, follow)?;
        match (r.ino, r.kind) {
            (Some(ino), Some(kind)) => {
                if o.create_new {
                    return err(ErrorKind::AlreadyExists);
                }
                let mut now = None;
                // The bits resolution read, else the inode's from the trie.
                let mode_of = |tree: &Tree| mode.map_or_else(|| tree.get(ino).map(|i| i.mode), Ok);
                match kind {
                    FileType::Symlink => return err(ErrorKind::Loop),
                    FileType::Dir => {
                        if o.write || o.append || o.truncate || creating {
                            return err(ErrorKind::IsADirectory);
                        }
                        if o.read && mode_of(&self.tree)? & 0o400 == 0 {
                            return err(ErrorKind::PermissionDenied);
                        }
                    }
                    FileType::File => {
                        if o.directory {
                            return err(ErrorKind::NotADirectory);
                        }
                        let mode = mode_of(&self.tree)?;
                        if o.read && mode & 0o400 == 0 {
                            return err(ErrorKind::PermissionDenied);
                        }
                        if (o.write || o.append || o.truncate) && mode & 0o200 == 0 {
                            return err(ErrorKind::PermissionDenied);
                        }
                        if o.truncate {
                            let t = self.now();
                            self.truncate_ino(ino, 0, t)?;
                            now = Some(t);
                        }
                    }
                }
                Ok((ino, kind, now, None))
            }
            _ => {
                if !creating {
                    return err(ErrorKind::NotFound);
                }
                let Some(name) = r.name else {
                    return err(ErrorKind::IsADirectory);
                };
                if r.must_dir || o.directory {
                    return err(ErrorKind::IsADirectory);
                }
                self.dir_writable(r.dir, r.dir_mode)?;
                let now = self.now();
                if let Some(data) = fill
                    && !data.is_empty()
                {
                    let private = self.private;
                    let max_private = self.tree.limits().max_private_bytes;
                    let made = self.tree.create_file(
                        r.dir,
                        name.to_name(),
                        o.mode,
                        data,
                        self.origin,
                        now,
                        |cost| check_private(private, max_private, cost.private),
                    )?;
                    if let Some((ino, cost, allocated)) = made {
                        return Ok((ino, FileType::File, Some(now), Some((cost, allocated))));
                    }
                }
                let ino = self.tree.create(
                    r.dir,
                    name.to_name(),
                    Node::File(Content::default()),
                    o.mode,
                    &At(now),
                )?;
                Ok((ino, FileType::File, Some(now), None))
            }
        }
    }

    /// Reads at `offset` into `buf`; returns the byte count (0 at EOF).
    pub fn read_at(&self, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize> {
        let f = self.file(fd)?.info;
        if !f.read {
            return err(ErrorKind::BadDescriptor);
        }
        match &self.tree.get(f.ino)?.node {
            Node::File(c) => c.read_at(buf, offset),
            _ => err(ErrorKind::IsADirectory),
        }
    }

    /// Writes `data` at `offset` (past EOF extends; the gap reads as zeros).
    /// All or nothing: over a limit, nothing is written.
    pub fn write_at(&mut self, fd: Fd, data: &[u8], offset: u64) -> Result<usize> {
        let f = self.file(fd)?.info;
        if !f.write {
            return err(ErrorKind::BadDescriptor);
        }
        self.write_ino(f.ino, data, offset, None)
    }

    /// Writes `data` at the end of the file; returns the offset it went to.
    pub fn append(&mut self, fd: Fd, data: &[u8]) -> Result<u64> {
        let f = self.file(fd)?.info;
        if !f.write {
            return err(ErrorKind::BadDescriptor);
        }
        let offset = match &self.tree.get(f.ino)?.node {
            Node::File(c) => c.size(),
            _ => return err(ErrorKind::IsADirectory),
        };
        self.write_ino(f.ino, data, offset, None)?;
        Ok(offset)
    }

    /// Writes through to the tree; the times are `now` if the operation
    /// has read the clock already, else the clock's once the write is
    /// admitted.
    fn write_ino(
        &mut self,
        ino: Ino,
        data: &[u8],
        offset: u64,
        now: Option<Timestamp>,
    ) -> Result<usize> {
        let private = self.private;
        let max_private = self.tree.limits().max_private_bytes;
        let clock = &*self.clock;
        let now = || now.unwrap_or_else(|| clock.now());
        let (cost, allocated) = self
            .tree
            .write(ino, data, offset, self.origin, now, |cost| {
                check_private(private, max_private, cost.private)
            })?;
        self.private += cost.private;
        self.allocated = self.allocated.saturating_add(allocated);
        Ok(data.len())
    }

    /// Sets a file's length through a descriptor open for writing.
    pub fn set_len(&mut self, fd: Fd, len: u64) -> Result<()> {
        let f = self.file(fd)?.info;
        if !f.write {
            return err(ErrorKind::BadDescriptor);
        }
        let now = self.now();
        self.truncate_ino(f.ino, len, now)
    }

    /// Sets the length of the file at `path` (needs write permission).
    pub fn truncate(&mut self, path: &str, len: u64) -> Result<()> {
        let ino = self
            .tree
            .lookup(Base::Root, path, true)
            .map_err(ctx(path))?;
        let inode = self.tree.get(ino)?;
        if inode.kind() == FileType::Dir {
            return Err(Error::with(ErrorKind::IsADirectory, path.to_string()));
        }
        if inode.mode & 0o200 == 0 {
            return Err(Error::with(ErrorKind::PermissionDenied, path.to_string()));
        }
        let now = self.now();
        self.truncate_ino(ino, len, now).map_err(ctx(path))
    }

    fn truncate_ino(&mut self, ino: Ino, len: u64, now: Timestamp) -> Result<()> {
        let private = self.private;
        let max_private = self.tree.limits().max_private_bytes;
        let (freed, added) = self.tree.set_len(ino, len, self.origin, now, |growth| {
            check_private(private, max_private, growth)
        })?;
        self.private = self.private + added - freed.private;
        Ok(())
    }

    /// Metadata, following a final symlink.
    pub fn metadata(&self, path: &str) -> Result<Metadata> {
        stat(&self.tree, Base::Root, path, true).map_err(ctx(path))
    }

    /// Metadata of the path itself (a symlink is not followed).
    pub fn symlink_metadata(&self, path: &str) -> Result<Metadata> {
        stat(&self.tree, Base::Root, path, false).map_err(ctx(path))
    }

    /// Metadata beneath `dir`, of a final symlink or of what it points to.
    pub fn metadata_at(&self, dir: Fd, path: &str, symlinks: Symlinks) -> Result<Metadata> {
        let base = self.base_of(dir)?;
        stat(&self.tree, base, path, symlinks.follow()).map_err(ctx(path))
    }

    /// Metadata of an open descriptor (an unlinked file has `nlink` 0).
    pub fn file_metadata(&self, fd: Fd) -> Result<Metadata> {
        let ino = self.file(fd)?.info.ino;
        Ok(Metadata::of(ino, self.tree.get(ino)?))
    }

    /// Whether the path exists (symlinks followed).
    pub fn exists(&self, path: &str) -> bool {
        self.metadata(path).is_ok()
    }

    /// Sets access and modification times (symlinks followed).
    pub fn set_times(&mut self, path: &str, atime: SetTime, mtime: SetTime) -> Result<()> {
        self.set_times_impl(Base::Root, path, true, atime, mtime)
            .map_err(ctx(path))
    }

    /// Sets the times of a symlink itself.
    pub fn set_symlink_times(&mut self, path: &str, atime: SetTime, mtime: SetTime) -> Result<()> {
        self.set_times_impl(Base::Root, path, false, atime, mtime)
            .map_err(ctx(path))
    }

    /// Sets times beneath `dir`; `follow` decides for a final symlink.
    pub fn set_times_at(
        &mut self,
        dir: Fd,
        path: &str,
        symlinks: Symlinks,
        atime: SetTime,
        mtime: SetTime,
    ) -> Result<()> {
        let base = self.base_of(dir)?;
        self.set_times_impl(base, path, symlinks.follow(), atime, mtime)
            .map_err(ctx(path))
    }

    /// Sets the times of an open descriptor's object.
    pub fn set_file_times(&mut self, fd: Fd, atime: SetTime, mtime: SetTime) -> Result<()> {
        let ino = self.file(fd)?.info.ino;
        self.set_times_ino(ino, atime, mtime)
    }

    fn set_times_impl(
        &mut self,
        base: Base,
        path: &str,
        follow: bool,
        a: SetTime,
        m: SetTime,
    ) -> Result<()> {
        let ino = self.tree.lookup(base, path, follow)?;
        self.set_times_ino(ino, a, m)
    }

    fn set_times_ino(&mut self, ino: Ino, a: SetTime, m: SetTime) -> Result<()> {
        for t in [a, m] {
            if let SetTime::At(ts) = t
                && !ts.is_valid()
            {
                return err(ErrorKind::InvalidInput);
            }
        }
        self.tree.get(ino)?;
        let now = self.now();
        let pick = |s: SetTime, old: Timestamp| match s {
            SetTime::Omit => old,
            SetTime::Now => now,
            SetTime::At(t) => t,
        };
        let inode = self.tree.inode_mut(ino)?;
        inode.atime = pick(a, inode.atime);
        inode.mtime = pick(m, inode.mtime);
        inode.ctime = now;
        Ok(())
    }

    /// Sets permission bits (`0o7777`; symlinks followed).
    pub fn set_permissions(&mut self, path: &str, mode: u32) -> Result<()> {
        let ino = self
            .tree
            .lookup(Base::Root, path, true)
            .map_err(ctx(path))?;
        self.chmod_ino(ino, mode)
    }

    /// Sets permission bits through a descriptor.
    pub fn set_file_permissions(&mut self, fd: Fd, mode: u32) -> Result<()> {
        let ino = self.file(fd)?.info.ino;
        self.chmod_ino(ino, mode)
    }

    fn chmod_ino(&mut self, ino: Ino, mode: u32) -> Result<()> {
        if mode & !0o7777 != 0 {
            return err(ErrorKind::InvalidInput);
        }
        let now = self.now();
        let inode = self.tree.inode_mut(ino)?;
        inode.mode = mode;
        inode.ctime = now;
        Ok(())
    }

    /// A directory's entries in name order.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        read_dir(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// Up to `max` entries of an open directory that sort after `after`
    /// (`None`: from the start). Costs O(log n + max). The name of the last
    /// entry returned is the cursor for the next page; it stays valid while
    /// the directory changes: entries present throughout are returned
    /// exactly once.
    pub fn read_dir_page(&self, dir: Fd, after: Option<&str>, max: usize) -> Result<Vec<DirEntry>> {
        let f = self.file(dir)?.info;
        if f.kind != FileType::Dir {
            return err(ErrorKind::NotADirectory);
        }
        dir_page(&self.tree, f.ino, after, max)
    }
}

/// What `open_ino` did: the inode, its kind, the time it read, and for a
/// file made holding data, the write's cost and chunk bytes allocated.
type Opened = (Ino, FileType, Option<Timestamp>, Option<(Cost, u64)>);

/// A clock stopped at the time an operation read once, so every change
/// it makes carries the same time.
#[derive(Debug)]
struct At(Timestamp);

impl Clock for At {
    fn now(&self) -> Timestamp {
        self.0
    }
}
