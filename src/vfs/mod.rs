//! The writable sandbox filesystem: [`Vfs`], one sandbox's tree with its
//! descriptors, clock and private-byte accounting. The tree itself keeps
//! its shape and counters (`tree`); this module adds what is per sandbox
//! and the POSIX rules of each call.
//!
//! - `snapshot`: [`Snapshot`], the frozen form, and forks.
//! - `names`: directories, removal, rename, symlinks, hard links.
//! - `files`: open, read, write, truncate, stat, times, permissions.
//! - `fds`: the descriptor table.
//! - `read`: what reads report, shared with `Snapshot`.
//! - `options`: [`OpenOptions`] and [`SetTime`].
//! - `visit`: the crate's read access to a snapshot (host export,
//!   checkpoint encoder).

mod fds;
mod files;
mod names;
mod options;
mod read;
mod snapshot;
mod visit;

#[cfg(test)]
#[path = "reuse_tests.rs"]
mod reuse_tests;

#[cfg(test)]
#[path = "parent_cache_tests.rs"]
mod parent_cache_tests;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result, err};
use crate::limits::{Counters, Limits, Usage};
use crate::time::{Clock, SystemClock, Timestamp};
use crate::tree::{Base, FileType, Ino, InoMap, Inode, Released, Resolved, Tree};

use fds::OpenFile;
pub use fds::{Fd, FdInfo};
pub use options::{OpenOptions, SetTime, Symlinks};
pub use read::{DirEntry, Metadata};
pub use snapshot::Snapshot;
pub(crate) use visit::Visitor;

/// Origins of sandboxes (see `chunk`): each `Vfs` gets its own, never 0.
static NEXT_ORIGIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn ctx(path: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| e.or_context(|| path.to_string())
}

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
    open_count: InoMap<u32>,
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
            floor: tree.counters(),
            base_held: tree.counters().held,
            tree,
            files: Vec::new(),
            free_slots: Vec::new(),
            open_count: InoMap::default(),
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
        self.tree.limits()
    }

    /// Changes the limits. Lower limits stop growth; nothing is removed.
    pub fn set_limits(&mut self, limits: Limits) {
        self.floor = self.tree.counters();
        self.private_floor = self.private;
        self.tree.set_limits(limits);
    }

    /// What the sandbox holds, and what it added since its fork.
    pub fn usage(&self) -> Usage {
        self.tree.counters().usage(
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
            inodes = self.tree.counters().inodes,
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

    /// Checks every invariant of the tree (see `docs/DESIGN.md`) and of the
    /// descriptor table; a violation is an [`ErrorKind::Corrupt`] error that
    /// describes the first one found.
    pub fn check_invariants(&self) -> Result<()> {
        self.check_all().map_err(Error::invariant)
    }

    fn check_all(&self) -> std::result::Result<(), String> {
        self.tree.check(&self.open_count)?;
        let open = self.files.iter().flatten().count() as u64;
        if open != self.open_total {
            return Err(format!(
                "{open} descriptors open but counted {}",
                self.open_total
            ));
        }
        let mut counts: InoMap<u32> = InoMap::default();
        for f in self.files.iter().flatten() {
            *counts.entry(f.info.ino).or_default() += 1;
        }
        if counts != self.open_count {
            return Err("open counts differ from the descriptor table".into());
        }
        for &o in &self.orphans {
            let Ok(i) = self.tree.get(o) else {
                return Err(format!("orphan {o} is gone"));
            };
            if i.nlink != 0 || !self.open_count.contains_key(&o) {
                return Err(format!("orphan {o} is linked or not open"));
            }
        }
        let c = self.tree.counters();
        let l = self.tree.limits();
        if c.charged > l.max_bytes.max(self.floor.charged)
            || c.inodes > l.max_inodes.max(self.floor.inodes)
        {
            return Err(format!("usage {c:?} over limits {l:?}"));
        }
        let private: u64 = self
            .tree
            .inodes()
            .filter_map(|(_, i)| i.content())
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
    // Inode lifecycle

    /// Lets go of an inode `unlink` returned: freed, or kept as an orphan
    /// while a descriptor holds it.
    fn release(&mut self, ino: Ino, kind: FileType) {
        let open = &self.open_count;
        let released = self.tree.release(ino, kind, |i| open.contains_key(&i));
        self.settle(ino, released);
    }

    /// Does the sandbox's part of what `Tree::release` did.
    fn settle(&mut self, ino: Ino, released: Released) {
        match released {
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

    /// `EACCES` unless directory `dir` is writable; `mode` is its mode
    /// if resolution read it already.
    fn dir_writable(&self, dir: Ino, mode: Option<u32>) -> Result<()> {
        match mode {
            Some(m) if m & 0o200 == 0 => err(ErrorKind::PermissionDenied),
            Some(_) => Ok(()),
            None => writable_dir(self.tree.get(dir)?),
        }
    }

    fn resolve<'p>(&self, base: Base, path: &'p str, follow: bool) -> Result<Resolved<'p>> {
        self.tree.resolve(base, path, follow)
    }
}
