//! The writable sandbox filesystem (`Vfs`) and its frozen form (`Snapshot`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use imbl::OrdMap;

use crate::content::Content;
use crate::error::{Error, ErrorKind, Result, err};
use crate::limits::{Counters, Limits, Usage};
use crate::path;
use crate::time::{Clock, SystemClock, Timestamp};
use crate::tree::{
    Base, Change, ChangeKind, Entry, FileType, Ino, Inode, MAX_LINKS, Name, Node, ROOT, Released,
    Resolved, Tree, entry_charge,
};

// -------------------------------------------------------------------------
// Public value types

/// Metadata of one object, as `stat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// File, directory or symlink.
    pub kind: FileType,
    /// Size in bytes; entries for a directory; target length for a symlink.
    pub len: u64,
    /// Bytes of file data actually stored.
    pub held: u64,
    /// Inode number, stable for the object's life and across forks.
    pub ino: u64,
    /// Hard links (2 + subdirectories for a directory).
    pub nlink: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Last access (changed only by `set_times`: reads do not write).
    pub atime: Timestamp,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last metadata change.
    pub ctime: Timestamp,
}

impl Metadata {
    fn of(ino: Ino, i: &Inode) -> Metadata {
        Metadata {
            kind: i.kind(),
            len: i.size(),
            held: i.held(),
            ino,
            nlink: i.nlink as u64,
            mode: i.mode,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Dir
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.kind == FileType::File
    }

    /// Whether this is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.kind == FileType::Symlink
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// The entry's name.
    pub name: String,
    /// The inode it names.
    pub ino: u64,
    /// Its kind.
    pub kind: FileType,
}

/// How to change a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// Leave it as it is.
    Omit,
    /// Set it to the clock's current time.
    Now,
    /// Set it to this time (`EINVAL` if its nanoseconds are 1e9 or more).
    At(Timestamp),
}

/// An open descriptor. Stale handles (closed, or from another sandbox) are
/// rejected with `EBADF`, even after the slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fd(u64);

impl Fd {
    /// The descriptor as a number (slot and generation).
    pub fn as_raw(self) -> u64 {
        self.0
    }

    /// A descriptor from [`Fd::as_raw`].
    pub fn from_raw(raw: u64) -> Fd {
        Fd(raw)
    }

    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// How to open a file, in the style of `std::fs::OpenOptions`.
///
/// ```
/// # use cowvfs::{OpenOptions, Vfs};
/// let mut v = Vfs::new();
/// let fd = v.open("/log", OpenOptions::new().append(true).create(true))?;
/// v.append(fd, b"hello\n")?;
/// v.close(fd)?;
/// # Ok::<(), cowvfs::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    directory: bool,
    follow: bool,
    mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Nothing set: a descriptor that can only be inspected.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            directory: false,
            follow: true,
            mode: 0o644,
        }
    }
    /// Allow reading.
    pub fn read(&mut self, yes: bool) -> &mut Self {
        self.read = yes;
        self
    }
    /// Allow writing.
    pub fn write(&mut self, yes: bool) -> &mut Self {
        self.write = yes;
        self
    }
    /// Allow appending (writes through [`Vfs::append`] go to the end).
    pub fn append(&mut self, yes: bool) -> &mut Self {
        self.append = yes;
        self
    }
    /// Truncate an existing file to zero length.
    pub fn truncate(&mut self, yes: bool) -> &mut Self {
        self.truncate = yes;
        self
    }
    /// Create the file if it does not exist.
    pub fn create(&mut self, yes: bool) -> &mut Self {
        self.create = yes;
        self
    }
    /// Create the file; fail with `EEXIST` if the name is taken.
    pub fn create_new(&mut self, yes: bool) -> &mut Self {
        self.create_new = yes;
        self
    }
    /// Require a directory (`O_DIRECTORY`).
    pub fn directory(&mut self, yes: bool) -> &mut Self {
        self.directory = yes;
        self
    }
    /// Follow a symlink in the final component (default). With `false`, a
    /// final symlink fails with `ELOOP` (`O_NOFOLLOW`).
    pub fn follow(&mut self, yes: bool) -> &mut Self {
        self.follow = yes;
        self
    }
    /// Permission bits for a newly created file (default `0o644`).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode & 0o7777;
        self
    }
}

/// What a descriptor allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdInfo {
    /// The inode it refers to.
    pub ino: u64,
    /// Its kind.
    pub kind: FileType,
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
    /// Opened for appending.
    pub append: bool,
}

#[derive(Clone, Copy, Debug)]
struct OpenFile {
    generation: u32,
    info: FdInfo,
}

// -------------------------------------------------------------------------
// Snapshot

/// An immutable tree: `Clone + Send + Sync`, O(1) to take, clone and fork.
///
/// ```
/// # use cowvfs::Vfs;
/// let mut v = Vfs::new();
/// v.write_file("/a", b"1")?;
/// let snap = v.snapshot();
/// v.write_file("/a", b"2")?;
/// assert_eq!(snap.read_file("/a")?, b"1");
/// let mut child = snap.fork();
/// assert_eq!(child.read_file("/a")?, b"1");
/// # Ok::<(), cowvfs::Error>(())
/// ```
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) tree: Arc<Tree>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("inodes", &self.tree.counters.inodes)
            .field("held_bytes", &self.tree.counters.held)
            .finish()
    }
}

impl Snapshot {
    pub(crate) fn from_tree(tree: Tree) -> Snapshot {
        Snapshot {
            tree: Arc::new(tree),
            clock: Arc::new(SystemClock),
        }
    }

    /// A writable sandbox starting from this tree, with its limits. O(1).
    pub fn fork(&self) -> Vfs {
        tracing::trace!(inodes = self.tree.counters.inodes, "fork");
        Vfs::from_tree((*self.tree).clone(), self.clock.clone())
    }

    /// A writable sandbox with its own limits (e.g. its base plus 64 MiB).
    /// Limits below what the tree already holds stop it from growing.
    pub fn fork_with_limits(&self, limits: Limits) -> Vfs {
        tracing::trace!(
            inodes = self.tree.counters.inodes,
            ?limits,
            "fork with limits"
        );
        let mut tree = (*self.tree).clone();
        tree.limits = limits;
        Vfs::from_tree(tree, self.clock.clone())
    }

    /// The Merkle hash of the whole tree: names, kinds, permissions, file
    /// content, link counts and symlink targets (not timestamps or inode
    /// numbers). Memoized, so asking again after a small change is cheap.
    pub fn root_hash(&self) -> blake3::Hash {
        self.tree.root_hash()
    }

    /// Paths added, removed or modified from `self` to `newer`. The cost
    /// follows the change, not the tree: shared structure is skipped.
    ///
    /// This holds every changed path at once, which for a large or deep
    /// change can be a lot; [`Snapshot::diff_each`] streams them.
    pub fn diff(&self, newer: &Snapshot) -> Vec<Change> {
        self.tree.diff(&newer.tree)
    }

    /// Calls `f` with each change from `self` to `newer` (its kind and
    /// its path, valid during the call), once per path, in depth-first
    /// order (not sorted), until `f` returns `Break`; returns what `f`
    /// last returned. The paths are built one at a time in a shared
    /// buffer, so memory stays O(depth) however many paths change (an
    /// added subtree is walked, not listed), plus a little per inode
    /// changed in place.
    ///
    /// ```
    /// # use std::ops::ControlFlow;
    /// # use cowvfs::Vfs;
    /// let mut v = Vfs::new();
    /// let base = v.snapshot();
    /// v.create_dir_all("/a/b/c")?;
    /// let mut n = 0;
    /// base.diff_each(&v.snapshot(), |_kind, _path| {
    ///     n += 1;
    ///     ControlFlow::Continue(())
    /// });
    /// assert_eq!(n, 3);
    /// # Ok::<(), cowvfs::Error>(())
    /// ```
    pub fn diff_each(
        &self,
        newer: &Snapshot,
        mut f: impl FnMut(ChangeKind, &str) -> std::ops::ControlFlow<()>,
    ) -> std::ops::ControlFlow<()> {
        self.tree.diff_each(&newer.tree, &mut f)
    }

    /// Whether both handles hold the very same tree (O(1)).
    pub fn ptr_eq(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.tree, &other.tree) || self.tree.inodes.ptr_eq(&other.tree.inodes)
    }

    /// The limits forks inherit.
    pub fn limits(&self) -> &Limits {
        &self.tree.limits
    }

    /// What the tree holds.
    pub fn usage(&self) -> Usage {
        self.tree.counters.usage(0, self.tree.counters.held, 0, 0)
    }

    /// Reads a whole file (symlinks followed).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        read_file(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// Metadata, following a final symlink.
    pub fn metadata(&self, path: &str) -> Result<Metadata> {
        stat(&self.tree, Base::Root, path, true).map_err(ctx(path))
    }

    /// Metadata of the path itself.
    pub fn symlink_metadata(&self, path: &str) -> Result<Metadata> {
        stat(&self.tree, Base::Root, path, false).map_err(ctx(path))
    }

    /// A directory's entries in name order.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        read_dir(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// A symlink's target.
    pub fn read_link(&self, path: &str) -> Result<String> {
        read_link(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// Whether the path exists (symlinks followed).
    pub fn exists(&self, path: &str) -> bool {
        self.metadata(path).is_ok()
    }

    /// Checks every tree invariant; the error describes the first violation.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.tree.check(&HashMap::new())
    }
}

/// Origins of sandboxes (see `blob`): each `Vfs` gets its own, never 0.
static NEXT_ORIGIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn ctx(path: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| e.or_context(|| path.to_string())
}

// Read-only operations shared by `Snapshot` and `Vfs`.

fn stat(tree: &Tree, base: Base, path: &str, follow: bool) -> Result<Metadata> {
    let ino = tree.lookup(base, path, follow)?;
    Ok(Metadata::of(ino, tree.get(ino)?))
}

fn read_file(tree: &Tree, base: Base, path: &str) -> Result<Vec<u8>> {
    let ino = tree.lookup(base, path, true)?;
    let inode = tree.get(ino)?;
    let Some(content) = inode.content() else {
        return err(ErrorKind::IsADirectory);
    };
    if inode.mode & 0o400 == 0 {
        return err(ErrorKind::PermissionDenied);
    }
    read_content(content, tree.limits.max_bytes)
}

/// The whole content as bytes, refusing sizes that would allocate more than
/// the sandbox may hold (a sparse file can be far larger than its data).
pub(crate) fn read_content(content: &Content, max_bytes: u64) -> Result<Vec<u8>> {
    let size = content.size();
    if size > max_bytes.max(content.held()) || size > isize::MAX as u64 {
        return Err(Error::with(
            ErrorKind::FileTooLarge,
            format!("{size} bytes is over the sandbox's byte limit"),
        ));
    }
    let mut out = vec![0u8; size as usize];
    content.read_at(&mut out, 0)?;
    Ok(out)
}

fn read_dir(tree: &Tree, base: Base, path: &str) -> Result<Vec<DirEntry>> {
    let ino = tree.lookup(base, path, true)?;
    dir_page(tree, ino, None, usize::MAX)
}

fn dir_page(tree: &Tree, ino: Ino, after: Option<&str>, max: usize) -> Result<Vec<DirEntry>> {
    let inode = tree.get(ino)?;
    let Some(entries) = inode.entries() else {
        return err(ErrorKind::NotADirectory);
    };
    if inode.mode & 0o400 == 0 {
        return err(ErrorKind::PermissionDenied);
    }
    let to_entry = |(n, e): (&Name, &Entry)| DirEntry {
        name: n.to_string(),
        ino: e.ino,
        kind: e.kind,
    };
    Ok(match after {
        None => entries.iter().take(max).map(to_entry).collect(),
        Some(a) => {
            use std::ops::Bound;
            let key: Name = Name::from(a);
            entries
                .range((Bound::Excluded(key), Bound::Unbounded))
                .take(max)
                .map(to_entry)
                .collect()
        }
    })
}

fn read_link(tree: &Tree, base: Base, path: &str) -> Result<String> {
    let ino = tree.lookup(base, path, false)?;
    match &tree.get(ino)?.node {
        Node::Symlink(t) => Ok(t.to_string()),
        _ => err(ErrorKind::InvalidInput),
    }
}

// -------------------------------------------------------------------------
// Vfs

/// A writable filesystem tree owned by one sandbox. `Send`, no locks inside;
/// sandboxes share data only through [`Snapshot`]s.
///
/// Paths are `&str` from the sandbox root. The root works like a chroot:
/// `..` at the root stays there and absolute symlink targets resolve from
/// it. The `*_at` methods resolve strictly beneath a directory descriptor
/// instead, as WASI requires: absolute paths, absolute symlinks and `..`
/// above that directory fail with `EPERM`.
pub struct Vfs {
    tree: Tree,
    files: Vec<Option<OpenFile>>,
    free_slots: Vec<usize>,
    open_count: HashMap<Ino, u32>,
    orphans: BTreeSet<Ino>,
    open_total: u64,
    /// Bumped per open, so a stale `Fd` never matches a reused slot.
    generation: u32,
    clock: Arc<dyn Clock>,
    /// Usage when forked: limits below it stop growth, not existing data.
    floor: Counters,
    base_held: u64,
    allocated: u64,
    /// This sandbox's origin: the chunks it makes carry it.
    origin: u64,
    /// Charge of the chunks of this origin in the tree.
    private: u64,
    /// `private` when the limits were last set.
    private_floor: u64,
}

impl fmt::Debug for Vfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vfs").field("usage", &self.usage()).finish()
    }
}

impl Default for Vfs {
    fn default() -> Self {
        Vfs::new()
    }
}

/// Whether a sandbox holding `private` bytes of its own may hold `growth`
/// more under a limit of `max`.
fn check_private(private: u64, max: u64, growth: u64) -> Result<()> {
    if growth == 0 {
        return Ok(());
    }
    match private.checked_add(growth) {
        Some(n) if n <= max => Ok(()),
        _ => Err(Error::with(
            ErrorKind::NoSpace,
            "over the sandbox's limit on bytes not shared with its base",
        )),
    }
}

/// Rights a WASI-style caller needs on a parent directory.
fn writable_dir(inode: &Inode) -> Result<()> {
    if inode.mode & 0o200 == 0 {
        return err(ErrorKind::PermissionDenied);
    }
    Ok(())
}

impl Vfs {
    /// An empty tree (just `/`, mode `0o755`) with default [`Limits`].
    pub fn new() -> Vfs {
        Vfs::with_limits(Limits::default())
    }

    /// An empty tree with these limits.
    pub fn with_limits(limits: Limits) -> Vfs {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Vfs::from_tree(Tree::new(limits, clock.now()), clock)
    }

    /// An empty tree whose timestamps come from `clock`.
    pub fn with_clock(limits: Limits, clock: Arc<dyn Clock>) -> Vfs {
        Vfs::from_tree(Tree::new(limits, clock.now()), clock)
    }

    fn from_tree(tree: Tree, clock: Arc<dyn Clock>) -> Vfs {
        Vfs {
            floor: tree.counters,
            base_held: tree.counters.held,
            tree,
            files: Vec::new(),
            free_slots: Vec::new(),
            open_count: HashMap::new(),
            orphans: BTreeSet::new(),
            open_total: 0,
            generation: 0,
            clock,
            allocated: 0,
            origin: NEXT_ORIGIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            private: 0,
            private_floor: 0,
        }
    }

    /// Replaces the clock (snapshots and their forks keep using it).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.tree.limits
    }

    /// Changes the limits. Lower limits stop growth; nothing is removed.
    pub fn set_limits(&mut self, limits: Limits) {
        self.floor = self.tree.counters;
        self.private_floor = self.private;
        self.tree.limits = limits;
    }

    /// What the sandbox holds, and what it added since its fork.
    pub fn usage(&self) -> Usage {
        self.tree.counters.usage(
            self.open_total,
            self.base_held,
            self.allocated,
            self.private,
        )
    }

    /// An immutable snapshot of the tree as it is now. O(1); later changes
    /// to this `Vfs` never show in it. Files that are unlinked but still
    /// open here are not part of it.
    pub fn snapshot(&self) -> Snapshot {
        tracing::trace!(
            inodes = self.tree.counters.inodes,
            orphans = self.orphans.len(),
            "snapshot"
        );
        Snapshot {
            tree: Arc::new(self.tree.without(&self.orphans)),
            clock: self.clock.clone(),
        }
    }

    /// The root hash of the tree as it is now (see [`Snapshot::root_hash`]).
    pub fn root_hash(&self) -> blake3::Hash {
        self.tree.root_hash()
    }

    /// Checks every invariant of the tree and the descriptor table.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.tree.check(&self.open_count)?;
        let open = self.files.iter().flatten().count() as u64;
        if open != self.open_total {
            return Err(format!(
                "{open} descriptors open but counted {}",
                self.open_total
            ));
        }
        let mut counts: HashMap<Ino, u32> = HashMap::new();
        for f in self.files.iter().flatten() {
            *counts.entry(f.info.ino).or_default() += 1;
        }
        if counts != self.open_count {
            return Err("open counts differ from the descriptor table".into());
        }
        for &o in &self.orphans {
            let Some(i) = self.tree.inodes.get(&o) else {
                return Err(format!("orphan {o} is gone"));
            };
            if i.nlink != 0 || !self.open_count.contains_key(&o) {
                return Err(format!("orphan {o} is linked or not open"));
            }
        }
        let c = self.tree.counters;
        let l = &self.tree.limits;
        if c.charged > l.max_bytes.max(self.floor.charged)
            || c.inodes > l.max_inodes.max(self.floor.inodes)
        {
            return Err(format!("usage {c:?} over limits {l:?}"));
        }
        let private: u64 = self
            .tree
            .inodes
            .values()
            .filter_map(|i| i.content())
            .map(|c| c.private_charge(self.origin))
            .sum();
        if private != self.private {
            return Err(format!(
                "private bytes {} but the chunks of this sandbox cost {private}",
                self.private
            ));
        }
        if private > l.max_private_bytes.max(self.private_floor) {
            return Err(format!(
                "private bytes {private} over the limit {}",
                l.max_private_bytes
            ));
        }
        Ok(())
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---------------------------------------------------------------
    // Descriptor table

    fn file(&self, fd: Fd) -> Result<&OpenFile> {
        match self.files.get(fd.slot()) {
            Some(Some(f)) if f.generation == fd.generation() => Ok(f),
            _ => err(ErrorKind::BadDescriptor),
        }
    }

    /// What a descriptor allows and refers to.
    pub fn fd_info(&self, fd: Fd) -> Result<FdInfo> {
        Ok(self.file(fd)?.info)
    }

    fn alloc_fd(&mut self, info: FdInfo) -> Result<Fd> {
        if self.open_total >= self.tree.limits.max_open_files as u64 {
            return err(ErrorKind::TooManyOpenFiles);
        }
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                if self.files.len() >= u32::MAX as usize {
                    return err(ErrorKind::TooManyOpenFiles);
                }
                self.files.push(None);
                self.files.len() - 1
            }
        };
        self.generation = self.generation.wrapping_add(1).max(1);
        let generation = self.generation;
        self.files[slot] = Some(OpenFile { generation, info });
        *self.open_count.entry(info.ino).or_default() += 1;
        self.open_total += 1;
        Ok(Fd(((generation as u64) << 32) | slot as u64))
    }

    /// Closes a descriptor. An unlinked file's data goes with its last one.
    pub fn close(&mut self, fd: Fd) -> Result<()> {
        let ino = self.file(fd)?.info.ino;
        self.files[fd.slot()] = None;
        self.free_slots.push(fd.slot());
        self.open_total -= 1;
        let last = match self.open_count.get_mut(&ino) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            self.open_count.remove(&ino);
            if self.orphans.remove(&ino)
                && let Some(inode) = self.tree.free(ino)
            {
                self.forget_private(&inode);
            }
        }
        Ok(())
    }

    /// Descriptor of a directory to resolve beneath.
    fn base_of(&self, dir: Fd) -> Result<Base> {
        let f = self.file(dir)?;
        if f.info.kind != FileType::Dir {
            return err(ErrorKind::NotADirectory);
        }
        Ok(Base::Beneath(f.info.ino))
    }

    // ---------------------------------------------------------------
    // Inode lifecycle

    /// Lets go of an inode `unlink` returned: freed, or kept as an orphan
    /// while a descriptor holds it.
    fn release(&mut self, ino: Ino, kind: FileType) {
        let open = &self.open_count;
        match self.tree.release(ino, kind, |i| open.contains_key(&i)) {
            Released::Named => {}
            Released::Orphaned => {
                self.orphans.insert(ino);
            }
            Released::Freed(inode) => self.forget_private(&inode),
        }
    }

    /// Takes a freed inode's chunks of this sandbox off `private`.
    fn forget_private(&mut self, inode: &Inode) {
        self.private -= inode.content().map_or(0, |c| c.private_charge(self.origin));
    }

    fn resolve<'p>(&self, base: Base, path: &'p str, follow: bool) -> Result<Resolved<'p>> {
        self.tree.resolve(base, path, follow)
    }

    // ---------------------------------------------------------------
    // Path operations (from the root) and their `_at` forms

    /// Creates a directory (mode `0o755`).
    pub fn create_dir(&mut self, path: &str) -> Result<()> {
        self.mkdir(Base::Root, path, 0o755).map_err(ctx(path))
    }

    /// Creates a directory beneath `dir`.
    pub fn create_dir_at(&mut self, dir: Fd, path: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.mkdir(base, path, 0o755).map_err(ctx(path))
    }

    fn mkdir(&mut self, base: Base, path: &str, mode: u32) -> Result<()> {
        let r = self.resolve(base, path, false)?;
        let Some(name) = r.name else {
            return err(ErrorKind::AlreadyExists);
        };
        if r.ino.is_some() {
            return err(ErrorKind::AlreadyExists);
        }
        writable_dir(self.tree.get(r.dir)?)?;
        self.tree.create(
            r.dir,
            name.to_name(),
            Node::Dir(OrdMap::new()),
            mode,
            &*self.clock,
        )?;
        Ok(())
    }

    /// Creates a directory and any missing parents; existing directories
    /// (or symlinks to them) are fine.
    pub fn create_dir_all(&mut self, path: &str) -> Result<()> {
        path::check_path(path, self.tree.limits.max_path_len as usize).map_err(ctx(path))?;
        let mut prefix = String::with_capacity(path.len());
        if path.starts_with('/') {
            prefix.push('/');
        }
        for comp in path::components(path) {
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.mkdir(Base::Root, &prefix, 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let m = stat(&self.tree, Base::Root, &prefix, true).map_err(ctx(&prefix))?;
                    if !m.is_dir() {
                        return Err(Error::with(ErrorKind::NotADirectory, prefix));
                    }
                }
                Err(e) => return Err(e.or_context(|| prefix.clone())),
            }
        }
        Ok(())
    }

    /// Removes an empty directory.
    pub fn remove_dir(&mut self, path: &str) -> Result<()> {
        self.rmdir(Base::Root, path).map_err(ctx(path))
    }

    /// Removes an empty directory beneath `dir`.
    pub fn remove_dir_at(&mut self, dir: Fd, path: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.rmdir(base, path).map_err(ctx(path))
    }

    fn rmdir(&mut self, base: Base, path: &str) -> Result<()> {
        let r = self.resolve(base, path, false)?;
        let Some(name) = r.name else {
            return err(if r.ino == Some(ROOT) {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let Some(ino) = r.ino else {
            return err(ErrorKind::NotFound);
        };
        let inode = self.tree.get(ino)?;
        match inode.entries() {
            None => return err(ErrorKind::NotADirectory),
            Some(e) if !e.is_empty() => return err(ErrorKind::DirectoryNotEmpty),
            Some(_) => {}
        }
        writable_dir(self.tree.get(r.dir)?)?;
        let now = self.now();
        let (ino, kind) = self.tree.unlink(r.dir, name.as_str(), now)?;
        self.release(ino, kind);
        Ok(())
    }

    /// Removes a file or symlink (never a directory: `EISDIR`).
    pub fn remove_file(&mut self, path: &str) -> Result<()> {
        self.unlink_file(Base::Root, path).map_err(ctx(path))
    }

    /// Removes a file or symlink beneath `dir`.
    pub fn remove_file_at(&mut self, dir: Fd, path: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.unlink_file(base, path).map_err(ctx(path))
    }

    fn unlink_file(&mut self, base: Base, path: &str) -> Result<()> {
        let r = self.resolve(base, path, false)?;
        let Some(name) = r.name else {
            return err(ErrorKind::IsADirectory);
        };
        match r.kind {
            None => return err(ErrorKind::NotFound),
            Some(FileType::Dir) => return err(ErrorKind::IsADirectory),
            Some(_) => {}
        }
        writable_dir(self.tree.get(r.dir)?)?;
        let now = self.now();
        let (ino, kind) = self.tree.unlink(r.dir, name.as_str(), now)?;
        self.release(ino, kind);
        Ok(())
    }

    /// Creates or truncates a file and writes `data` into it.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let fd = self.open(
            path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )?;
        let res = self.write_at(fd, data, 0).map_err(ctx(path));
        self.close(fd)?;
        res.map(|_| ())
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
        if self.open_total >= self.tree.limits.max_open_files as u64 {
            return err(ErrorKind::TooManyOpenFiles);
        }
        let creating = o.create || o.create_new;
        // O_CREAT|O_EXCL never follows a final symlink: the name is taken.
        let follow = o.follow && !o.create_new;
        let r = self.resolve(base, path, follow)?;
        let now = self.now();
        let (ino, kind) = match (r.ino, r.kind) {
            (Some(ino), Some(kind)) => {
                if o.create_new {
                    return err(ErrorKind::AlreadyExists);
                }
                match kind {
                    FileType::Symlink => return err(ErrorKind::Loop),
                    FileType::Dir => {
                        if o.write || o.append || o.truncate || creating {
                            return err(ErrorKind::IsADirectory);
                        }
                        if o.read && self.tree.get(ino)?.mode & 0o400 == 0 {
                            return err(ErrorKind::PermissionDenied);
                        }
                    }
                    FileType::File => {
                        if o.directory {
                            return err(ErrorKind::NotADirectory);
                        }
                        let mode = self.tree.get(ino)?.mode;
                        if o.read && mode & 0o400 == 0 {
                            return err(ErrorKind::PermissionDenied);
                        }
                        if (o.write || o.append || o.truncate) && mode & 0o200 == 0 {
                            return err(ErrorKind::PermissionDenied);
                        }
                        if o.truncate {
                            self.truncate_ino(ino, 0, now)?;
                        }
                    }
                }
                (ino, kind)
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
                writable_dir(self.tree.get(r.dir)?)?;
                let ino = self.tree.create(
                    r.dir,
                    name.to_name(),
                    Node::File(Content::default()),
                    o.mode,
                    &*self.clock,
                )?;
                (ino, FileType::File)
            }
        };
        self.alloc_fd(FdInfo {
            ino,
            kind,
            read: o.read,
            write: o.write || o.append,
            append: o.append,
        })
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
        self.write_ino(f.ino, data, offset)
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
        self.write_ino(f.ino, data, offset)?;
        Ok(offset)
    }

    fn write_ino(&mut self, ino: Ino, data: &[u8], offset: u64) -> Result<usize> {
        let private = self.private;
        let max_private = self.tree.limits.max_private_bytes;
        let (cost, allocated) =
            self.tree
                .write(ino, data, offset, self.origin, &*self.clock, |cost| {
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
        let max_private = self.tree.limits.max_private_bytes;
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

    /// Metadata beneath `dir`; `follow` decides for a final symlink.
    pub fn metadata_at(&self, dir: Fd, path: &str, follow: bool) -> Result<Metadata> {
        let base = self.base_of(dir)?;
        stat(&self.tree, base, path, follow).map_err(ctx(path))
    }

    /// Metadata of an open descriptor (an unlinked file has `nlink` 0).
    pub fn fd_metadata(&self, fd: Fd) -> Result<Metadata> {
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
        follow: bool,
        atime: SetTime,
        mtime: SetTime,
    ) -> Result<()> {
        let base = self.base_of(dir)?;
        self.set_times_impl(base, path, follow, atime, mtime)
            .map_err(ctx(path))
    }

    /// Sets the times of an open descriptor's object.
    pub fn fd_set_times(&mut self, fd: Fd, atime: SetTime, mtime: SetTime) -> Result<()> {
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
    pub fn fd_set_permissions(&mut self, fd: Fd, mode: u32) -> Result<()> {
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

    /// Renames, with every POSIX rule: a file replaces a file, a directory
    /// replaces an empty directory, renaming onto the same inode does
    /// nothing, a directory cannot move into itself (`EINVAL`).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.rename_impl(Base::Root, from, Base::Root, to)
            .map_err(|e| e.or_context(|| format!("{from} -> {to}")))
    }

    /// Renames between two directories' subtrees (beneath mode).
    pub fn rename_at(&mut self, from_dir: Fd, from: &str, to_dir: Fd, to: &str) -> Result<()> {
        let (b1, b2) = (self.base_of(from_dir)?, self.base_of(to_dir)?);
        self.rename_impl(b1, from, b2, to)
            .map_err(|e| e.or_context(|| format!("{from} -> {to}")))
    }

    fn rename_impl(&mut self, b1: Base, from: &str, b2: Base, to: &str) -> Result<()> {
        let src = self.resolve(b1, from, false)?;
        let dst = self.resolve(b2, to, false)?;
        let (Some(sino), Some(skind)) = (src.ino, src.kind) else {
            return err(ErrorKind::NotFound);
        };
        let Some(sname) = src.name else {
            return err(if sino == ROOT {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let Some(dname) = dst.name else {
            return err(if dst.ino == Some(ROOT) {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        if skind != FileType::Dir && (src.must_dir || dst.must_dir) {
            return err(ErrorKind::NotADirectory);
        }
        // The order of checks follows Linux, so errno values match it.
        if skind == FileType::Dir && self.tree.is_within(dst.dir, sino) {
            return err(ErrorKind::InvalidInput);
        }
        if let (Some(dino), Some(FileType::Dir)) = (dst.ino, dst.kind)
            && dino != sino
            && self.tree.is_within(src.dir, dino)
        {
            return err(ErrorKind::DirectoryNotEmpty);
        }
        if dst.ino == Some(sino) {
            return Ok(());
        }
        writable_dir(self.tree.get(src.dir)?)?;
        writable_dir(self.tree.get(dst.dir)?)?;
        if let (Some(dino), Some(dkind)) = (dst.ino, dst.kind) {
            if skind == FileType::Dir {
                if dkind != FileType::Dir {
                    return err(ErrorKind::NotADirectory);
                }
                if !self.tree.entries(dino)?.is_empty() {
                    return err(ErrorKind::DirectoryNotEmpty);
                }
            } else if dkind == FileType::Dir {
                return err(ErrorKind::IsADirectory);
            }
        }
        path::check_name(dname.as_str(), self.tree.name_max())?;
        if dst.ino.is_none() {
            // The entry moves; only a longer name costs more.
            let longer = dname.as_str().len().saturating_sub(sname.as_str().len());
            self.tree.check_bytes(longer as u64)?;
        }
        let now = self.now();
        let dname = dname.to_name();
        if dst.ino.is_some() {
            let (old, kind) = self.tree.unlink(dst.dir, &dname, now)?;
            self.release(old, kind);
        }
        let (ino, kind) = self.tree.unlink(src.dir, sname.as_str(), now)?;
        self.tree.link(dst.dir, dname, ino, kind, now)?;
        Ok(())
    }

    /// Creates a symlink at `link` pointing to `target` (stored as given).
    pub fn symlink(&mut self, target: &str, link: &str) -> Result<()> {
        self.symlink_impl(target, Base::Root, link)
            .map_err(ctx(link))
    }

    /// Creates a symlink beneath `dir`.
    pub fn symlink_at(&mut self, target: &str, dir: Fd, link: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.symlink_impl(target, base, link).map_err(ctx(link))
    }

    fn symlink_impl(&mut self, target: &str, base: Base, link: &str) -> Result<()> {
        path::check_path(target, self.tree.limits.max_path_len as usize)?;
        let r = self.resolve(base, link, false)?;
        let Some(name) = r.name else {
            return err(ErrorKind::AlreadyExists);
        };
        if r.ino.is_some() {
            return err(ErrorKind::AlreadyExists);
        }
        if r.must_dir {
            return err(ErrorKind::NotFound);
        }
        writable_dir(self.tree.get(r.dir)?)?;
        self.tree.create(
            r.dir,
            name.to_name(),
            Node::Symlink(Name::from(target)),
            0o777,
            &*self.clock,
        )?;
        Ok(())
    }

    /// A symlink's target.
    pub fn read_link(&self, path: &str) -> Result<String> {
        read_link(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// A symlink's target, beneath `dir`.
    pub fn read_link_at(&self, dir: Fd, path: &str) -> Result<String> {
        let base = self.base_of(dir)?;
        read_link(&self.tree, base, path).map_err(ctx(path))
    }

    /// Makes `dst` another name of the file at `src` (a final symlink in
    /// `src` is not followed). Directories cannot be linked (`EPERM`).
    pub fn hard_link(&mut self, src: &str, dst: &str) -> Result<()> {
        self.link_impl(Base::Root, src, false, Base::Root, dst)
            .map_err(|e| e.or_context(|| format!("{src} -> {dst}")))
    }

    /// Hard link between two directories' subtrees (beneath mode).
    pub fn hard_link_at(
        &mut self,
        src_dir: Fd,
        src: &str,
        follow: bool,
        dst_dir: Fd,
        dst: &str,
    ) -> Result<()> {
        let (b1, b2) = (self.base_of(src_dir)?, self.base_of(dst_dir)?);
        self.link_impl(b1, src, follow, b2, dst)
            .map_err(|e| e.or_context(|| format!("{src} -> {dst}")))
    }

    fn link_impl(&mut self, b1: Base, src: &str, follow: bool, b2: Base, dst: &str) -> Result<()> {
        let s = self.resolve(b1, src, follow)?;
        let (Some(sino), Some(skind)) = (s.ino, s.kind) else {
            return err(ErrorKind::NotFound);
        };
        // Linux looks at the new name before the source's kind.
        let d = self.resolve(b2, dst, false)?;
        let Some(dname) = d.name else {
            return err(ErrorKind::AlreadyExists);
        };
        if d.ino.is_some() {
            return err(ErrorKind::AlreadyExists);
        }
        if d.must_dir {
            return err(ErrorKind::NotFound);
        }
        if skind == FileType::Dir {
            return err(ErrorKind::NotPermitted);
        }
        if self.tree.get(sino)?.nlink >= MAX_LINKS {
            return err(ErrorKind::TooManyLinks);
        }
        writable_dir(self.tree.get(d.dir)?)?;
        path::check_name(dname.as_str(), self.tree.name_max())?;
        self.tree.check_bytes(entry_charge(dname.as_str()))?;
        let now = self.now();
        self.tree.link(d.dir, dname.to_name(), sino, skind, now)
    }
}
