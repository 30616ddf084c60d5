//! The persistent inode table, `Tree`, which owns its invariants: only its
//! own methods change it. This file holds the type and its accessors; the
//! rest is in one file per idea:
//! - `inode`: inodes, entries, kinds and charges.
//! - `edit`: creating, linking, unlinking, releasing and freeing inodes,
//!   writing and resizing files, with the counters kept in step.
//! - `resolve`: path resolution.
//! - `hash`: the memoized Merkle root hash.
//! - `diff`: the changed paths between two trees.
//! - `walk`: the walk from the root that proves the tree's shape.
//! - `check`: `Tree::check`, every invariant at once.
//! - `trie`: the persistent inode-number-indexed map the inodes live in.
//! - `numbers`: which number a new inode gets, and which freed ones may
//!   be reused.
//! - `parents`: the cache of the last parent paths resolution checked.
//!
//! A `Tree` is a value: cloning it is O(1) and shares everything. Inodes sit
//! behind `Arc` in an `InoTrie` (a 32-way radix trie on the inode number),
//! so a change copies one inode and the few trie nodes above it that a
//! snapshot shares, never the tree.
//!
//! Invariants (numbered as in DESIGN.md; `Tree::check` verifies them):
//! 1. Every directory entry names a live inode of the entry's kind; every
//!    live inode but the root is named by an entry or is an orphan held open;
//!    a non-directory's `nlink` and `links` equal the entries naming it.
//! 2. A directory is named by exactly one entry (none for the root), its
//!    `nlink` is 2 plus its subdirectories, and there are no cycles.
//! 3. (Snapshots never change: they hold a `Tree` nobody can reach mutably.)
//! 4. Content invariants hold for every file (see `content`).
//! 5. The usage counters equal what a full walk counts.
//! 6. A memoized hash equals the hash computed afresh, and an inode without
//!    a memo has no ancestor with one (so invalidation may stop early).

mod check;
mod diff;
mod edit;
mod hash;
mod inode;
mod inomap;
mod numbers;
mod parents;
mod resolve;
mod trie;
mod walk;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

// Inodes sit behind `triomphe::Arc` (no weak count): proving one unshared
// before an edit is a load, not a compare-exchange.
use triomphe::Arc;

use imbl::OrdMap;

use crate::error::{ErrorKind, Result, err};
use crate::limits::{Counters, Limits};
use crate::time::Timestamp;

pub use diff::{Change, ChangeKind};
pub(crate) use edit::Released;
pub use inode::FileType;
pub use inode::Name;
pub(crate) use inode::{
    Entry, INODE_CHARGE, Ino, Inode, MAX_LINKS, Node, Probe, ROOT, Target, entry_charge,
};
pub(crate) use inomap::InoMap;
pub(crate) use numbers::INO_LIMIT;
use numbers::Numbers;
use parents::Parents;
pub(crate) use resolve::{Base, Resolved};
pub(crate) use trie::InoTrie;
pub(crate) use walk::{MapTable, Step, VecTable, WalkError, walk_from_root};

/// The inode table: every inode by number.
pub(crate) type InodeMap = InoTrie<SharedInode>;

/// An inode as the table holds it, shared between trees until one edits it.
pub(crate) type SharedInode = Arc<Inode>;

/// A whole filesystem tree as a value. Only the tree's own methods change
/// it, so invariants 1, 2 and 5 hold after every one of them.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    inodes: InodeMap,
    numbers: Numbers,
    counters: Counters,
    limits: Limits,
    /// The directory the last resolution ended in, which the next one may
    /// start from if its links spell the same path (see `resolve`): a
    /// hint, never trusted, so a stale or foreign value costs one check.
    dir_hint: Hint,
    /// The inode the last resolution found (or the last create made),
    /// which the next one takes without searching the directory if its
    /// first link is the entry looked up: also a hint checked on each use.
    entry_hint: Hint,
    /// The directory generation: moves whenever a path of plain names
    /// could come to walk other directories (see `parents`).
    dir_gen: u64,
    /// The last parent paths checked, each valid at one `dir_gen`.
    parents: Parents,
    /// Entries put into or taken out of directories, ever: each edit
    /// copies at most one path of one directory's map, so a fork's edits
    /// bound the map nodes it holds apart from its base (what a saved
    /// run is charged, `serve::charge`), whatever the net change.
    map_edits: u64,
}

/// An inode number any thread reading the tree may update: `resolve`
/// takes `&self`, and a snapshot's tree is read from many threads.
#[derive(Debug, Default)]
pub(super) struct Hint(AtomicU64);

impl Hint {
    pub(super) fn get(&self) -> Ino {
        self.0.load(Relaxed)
    }

    pub(super) fn set(&self, ino: Ino) {
        self.0.store(ino, Relaxed)
    }
}

impl Clone for Hint {
    fn clone(&self) -> Hint {
        Hint(AtomicU64::new(self.get()))
    }
}

/// How one inode differs between two trees ([`Tree::inode_changes`]).
pub(crate) enum InodeChange<'a> {
    /// Only in the newer tree.
    Added(Ino, &'a Inode),
    /// In both, not the same shared inode.
    Changed {
        ino: Ino,
        old: &'a Inode,
        new: &'a Inode,
    },
    /// Only in the older tree.
    Removed(Ino),
}

impl Tree {
    pub(crate) fn new(limits: Limits, now: Timestamp) -> Tree {
        let mut inodes = InodeMap::new();
        inodes.insert(
            ROOT,
            Arc::new(Inode::new(Node::Dir(OrdMap::new()), 0o755, now)),
        );
        Tree {
            inodes,
            numbers: Numbers::new(ROOT + 1),
            counters: Counters {
                held: 0,
                logical: 0,
                inodes: 1,
                charged: INODE_CHARGE,
            },
            limits,
            dir_hint: Hint::default(),
            entry_hint: Hint::default(),
            dir_gen: 0,
            parents: Parents::default(),
            map_edits: 0,
        }
    }

    /// A tree from a loader's parts. The loader has proved invariants 1,
    /// 2 and 5 (see `walk`) and fitted the counters to `limits`.
    pub(crate) fn from_parts(
        inodes: InodeMap,
        next_ino: Ino,
        counters: Counters,
        limits: Limits,
    ) -> Tree {
        Tree {
            inodes,
            numbers: Numbers::new(next_ino),
            counters,
            limits,
            dir_hint: Hint::default(),
            entry_hint: Hint::default(),
            dir_gen: 0,
            parents: Parents::default(),
            map_edits: 0,
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Changes the limits; lower ones stop growth, nothing is removed.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        // A lower `max_name_len` may refuse a cached path.
        self.dirs_changed();
    }

    /// Moves the directory generation, so no cached parent path is used
    /// again (see `parents`).
    pub(super) fn dirs_changed(&mut self) {
        self.dir_gen = self.dir_gen.wrapping_add(1);
    }

    /// What the tree holds (invariant 5).
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// One past the highest inode number ever given out (numbers only
    /// below it are in use; see `numbers`).
    pub(crate) fn next_ino(&self) -> Ino {
        self.numbers.next()
    }

    /// Directory entries added or removed over the tree's life (see the
    /// field). Read by the service's charge only.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn map_edits(&self) -> u64 {
        self.map_edits
    }

    /// Every inode, by number.
    pub(crate) fn inodes(&self) -> impl Iterator<Item = (Ino, &Inode)> {
        self.inodes.iter().map(|(ino, i)| (ino, &**i))
    }

    /// The inode map itself, to start a checkpoint delta's rebuild from
    /// (an O(1) clone); read-only, so the tree's invariants stay its own.
    pub(crate) fn inode_map(&self) -> &InodeMap {
        &self.inodes
    }

    /// The inodes that differ from `self` (older) to `newer`, by number.
    /// Pointer-pruned: the cost follows the change, not the tree.
    pub(crate) fn inode_changes<'a>(
        &'a self,
        newer: &'a Tree,
    ) -> impl Iterator<Item = InodeChange<'a>> {
        let mut out = Vec::new();
        self.inodes.diff(&newer.inodes, &mut |d| {
            out.push(match d {
                trie::Diff::Added(ino, i) => InodeChange::Added(ino, i),
                trie::Diff::Changed { key, old, new } => {
                    InodeChange::Changed { ino: key, old, new }
                }
                trie::Diff::Removed(ino, _) => InodeChange::Removed(ino),
            })
        });
        out.into_iter()
    }

    /// Whether both trees hold the very same inode map (O(1)).
    pub(crate) fn same_inodes(&self, other: &Tree) -> bool {
        self.inodes.ptr_eq(&other.inodes)
    }

    /// The longest name the tree accepts: the limit, but never more than
    /// the root hash can encode (a 16-bit length).
    pub(crate) fn name_max(&self) -> usize {
        (self.limits.max_name_len as usize).min(u16::MAX as usize)
    }

    pub(crate) fn get(&self, ino: Ino) -> Result<&Inode> {
        match self.inodes.get(&ino) {
            Some(i) => Ok(i),
            None => err(ErrorKind::NotFound),
        }
    }

    pub(crate) fn entries(&self, ino: Ino) -> Result<&OrdMap<Name, Entry>> {
        self.get(ino)?
            .entries()
            .ok_or_else(|| ErrorKind::NotADirectory.into())
    }

    /// A mutable inode, copied first if a snapshot shares it. Forgets the
    /// memoized hashes of the inode and of every ancestor that has one.
    pub(crate) fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode> {
        // The caller may change a directory's entries.
        if self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.kind() == FileType::Dir)
        {
            self.dirs_changed();
        }
        if !settled(&mut self.inodes, ino)? {
            invalidate(&mut self.inodes, ino);
        }
        match self.inodes.get_mut(&ino) {
            Some(arc) => Ok(Arc::make_mut(arc)),
            None => err(ErrorKind::NotFound),
        }
    }

    /// Forgets the memoized hashes of `ino` and all its ancestors, even
    /// when `ino` itself has no memo: a checkpoint delta puts fresh inodes
    /// under parents hashed before, which `invalidate` alone would miss.
    pub(crate) fn invalidate_up(&mut self, ino: Ino) {
        let parents: Vec<Ino> = match self.inodes.get(&ino) {
            Some(i) => i.links.iter().map(|(p, _)| *p).collect(),
            None => return,
        };
        invalidate(&mut self.inodes, ino);
        for p in parents {
            invalidate(&mut self.inodes, p);
        }
    }
}

impl Inode {
    /// Forgets the memoized hash, for a caller that assembles a tree from
    /// inodes of other trees (the merge) and so must re-establish invariant
    /// 6 itself: it forgets the memo of every inode it changes and of all
    /// their ancestors.
    pub(crate) fn forget_hash(&mut self) {
        self.memo = OnceLock::new();
    }
}

/// Whether inode `ino` may change without forgetting anything: it has no
/// memo and no snapshot shares it. By invariant 6 no ancestor has a memo
/// then either. Asked after `get_mut` has copied the map's path, so a map
/// node a snapshot shares counts as sharing the inode.
fn settled_arc(arc: &Arc<Inode>) -> bool {
    arc.memo.get().is_none() && Arc::strong_count(arc) == 1
}

fn settled(inodes: &mut InodeMap, ino: Ino) -> Result<bool> {
    match inodes.get_mut(&ino) {
        Some(arc) => Ok(settled_arc(arc)),
        None => err(ErrorKind::NotFound),
    }
}

/// Runs `f` on inode `ino` as [`Tree::inode_mut`] would hand it out, on
/// the map alone, so a caller may keep other fields of the tree borrowed.
/// The common case (a settled inode) costs one descent.
pub(super) fn edit_inode<R>(
    inodes: &mut InodeMap,
    ino: Ino,
    f: impl FnOnce(&mut Inode) -> R,
) -> Result<R> {
    match inodes.get_mut(&ino) {
        None => return err(ErrorKind::NotFound),
        Some(arc) if settled_arc(arc) => return Ok(f(Arc::make_mut(arc))),
        Some(_) => {}
    }
    invalidate(inodes, ino);
    match inodes.get_mut(&ino) {
        Some(arc) => Ok(f(Arc::make_mut(arc))),
        None => err(ErrorKind::NotFound),
    }
}

/// Forgets the memos of `ino` and of its ancestors up to the first one
/// that is settled (invariant 6). Allocates only to walk past an inode
/// with more than one parent.
fn invalidate(inodes: &mut InodeMap, ino: Ino) {
    let mut work: Vec<Ino> = Vec::new();
    let mut next = Some(ino);
    while let Some(i) = next.take().or_else(|| work.pop()) {
        let Some(arc) = inodes.get_mut(&i) else {
            continue;
        };
        // Invariant 6: no ancestor holds a memo either, so the walk may
        // stop here, but only if no snapshot shares this inode: hashing
        // that snapshot later would memoize its children's hash on the
        // shared inode, and this tree would report it as its own.
        if settled_arc(arc) {
            continue;
        }
        let inode = Arc::make_mut(arc);
        inode.memo = OnceLock::new();
        let mut parents = inode.links.iter().map(|(p, _)| *p);
        next = parents.next();
        work.extend(parents);
    }
}
