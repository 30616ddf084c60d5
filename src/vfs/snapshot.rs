//! [`Snapshot`]: a frozen tree, shared by every fork, with the read-only
//! side of the `Vfs` API, and the crate's read access to it for the host
//! export and the checkpoint encoder.

use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::limits::{Limits, Usage};
use crate::time::{Clock, SystemClock};
use crate::tree::{Base, Change, ChangeKind, InoMap, Tree};

use super::read::{DirEntry, Metadata, dir_page, read_dir, read_file, read_link, stat};
use super::{Vfs, ctx};

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
    pub(super) tree: Arc<Tree>,
    pub(super) clock: Arc<dyn Clock>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("inodes", &self.tree.counters().inodes)
            .field("held_bytes", &self.tree.counters().held)
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

    /// The tree itself, read-only, for the merge (`crate::merge`), which
    /// reads three trees and assembles a fourth.
    pub(crate) fn tree(&self) -> &Tree {
        &self.tree
    }

    /// A snapshot of `tree` that keeps this one's clock (the merge's result).
    pub(crate) fn with_tree(&self, tree: Tree) -> Snapshot {
        Snapshot {
            tree: Arc::new(tree),
            clock: self.clock.clone(),
        }
    }

    /// A writable sandbox starting from this tree, with its limits. O(1).
    pub fn fork(&self) -> Vfs {
        tracing::trace!(inodes = self.tree.counters().inodes, "fork");
        Vfs::from_tree((*self.tree).clone(), self.clock.clone())
    }

    /// A writable sandbox with its own limits (e.g. its base plus 64 MiB).
    /// Limits below what the tree already holds stop it from growing.
    pub fn fork_with_limits(&self, limits: Limits) -> Vfs {
        tracing::trace!(
            inodes = self.tree.counters().inodes,
            ?limits,
            "fork with limits"
        );
        let mut tree = (*self.tree).clone();
        tree.set_limits(limits);
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
        Arc::ptr_eq(&self.tree, &other.tree) || self.tree.same_inodes(&other.tree)
    }

    /// The limits forks inherit.
    pub fn limits(&self) -> &Limits {
        self.tree.limits()
    }

    /// What the tree holds.
    pub fn usage(&self) -> Usage {
        let c = self.tree.counters();
        c.usage(0, c.held, 0, 0)
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

    /// At most `max` of a directory's entries in name order, those after
    /// the name `after` (`None`: from the first): a listing in pages, which
    /// never copies more than it returns.
    pub fn read_dir_page(
        &self,
        path: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<DirEntry>> {
        let page = || {
            dir_page(
                &self.tree,
                self.tree.lookup(Base::Root, path, true)?,
                after,
                max,
            )
        };
        page().map_err(ctx(path))
    }

    /// A symlink's target.
    pub fn read_link(&self, path: &str) -> Result<String> {
        read_link(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// Whether the path exists (symlinks followed).
    pub fn exists(&self, path: &str) -> bool {
        self.metadata(path).is_ok()
    }

    /// Checks every tree invariant (see `docs/DESIGN.md`); a violation is
    /// an [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) error that
    /// describes the first one found.
    pub fn check_invariants(&self) -> Result<()> {
        self.tree
            .check(&InoMap::default())
            .map_err(crate::error::Error::invariant)
    }
}
