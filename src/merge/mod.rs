//! Three-way merge of snapshots: [`Snapshot::merge`] combines what two
//! forks of one base changed into a new snapshot, with a list of the
//! conflicts. One file per idea:
//! - `sides`: the three trees under one numbering; matching by inode
//!   identity; the inodes either side touched (pointer-pruned).
//! - `names`: the namespace merge, slot by slot, and the conflicts of
//!   names, deletions and moves.
//! - `content`: a file's content merged by chunks, conflicts by bytes.
//! - `assemble`: the attribute rules and the merged tree itself.
//! - `report`: conflicts, policies and options.
//!
//! The merge sits above `vfs`: it reads the snapshots' trees and hands
//! back a snapshot. Its cost follows what the sides changed, not the size
//! of the tree. The rules are in docs/DESIGN.md, "Merge".

mod assemble;
mod content;
mod names;
mod report;
mod sides;

use crate::error::{Error, ErrorKind, Result};
use crate::tree::Tree;
use crate::vfs::Snapshot;

pub use report::{Action, Conflict, ConflictKind, ConflictPolicy, MergeOptions, Resolution};

use assemble::{Rules, assemble};
use names::{Names, Pending, Settled, Subject, find_aliases};
use sides::{Side, Sides, path_by};

/// What [`Snapshot::merge`] made: the merged snapshot (none if a conflict
/// met [`ConflictPolicy::Fail`]) and the conflicts, in path order.
#[derive(Clone, Debug)]
pub struct Merge {
    snapshot: Option<Snapshot>,
    conflicts: Vec<Conflict>,
    /// Conflicts found and settled but not listed: their paths would have
    /// gone over [`MergeOptions::max_report_bytes`].
    omitted: u64,
}

impl Merge {
    /// The merged tree: `None` only when the policy was
    /// [`ConflictPolicy::Fail`] and something conflicted.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The conflicts and how each was settled: all of them, unless their
    /// paths would take more than [`MergeOptions::max_report_bytes`]
    /// ([`Merge::omitted`] counts the rest).
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Conflicts settled (or, under [`ConflictPolicy::Fail`], found) but
    /// left out of [`Merge::conflicts`] to keep the report within
    /// [`MergeOptions::max_report_bytes`]. A path is bounded only per
    /// call, not per tree: a deep tree's paths grow with the square of
    /// its depth.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// Whether nothing conflicted.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty() && self.omitted == 0
    }

    /// The merged snapshot, or an `InvalidInput` error naming the first
    /// conflict when there is none.
    pub fn into_snapshot(self) -> Result<Snapshot> {
        match self.snapshot {
            Some(s) => Ok(s),
            None => Err(Error::with(
                ErrorKind::InvalidInput,
                format!(
                    "the merge has {} conflict(s), the first: {}",
                    self.conflicts.len() as u64 + self.omitted,
                    self.conflicts
                        .first()
                        .map_or("(not listed)".to_string(), |c| c.to_string())
                ),
            )),
        }
    }
}

impl Snapshot {
    /// Merges what `ours` and `theirs`, two forks of `base` (or snapshots
    /// of forks of it), changed since `base` into a new snapshot.
    ///
    /// Changes to different paths combine; renames and moves are followed
    /// by inode identity (forks share inode numbers), so a file renamed on
    /// one side and edited on the other ends renamed and edited. A file
    /// both sides changed merges when the bytes they changed are disjoint
    /// and only one side changed its size (or both to the same size);
    /// otherwise it is a conflict with the byte ranges. `options` decide
    /// what a conflict does; a merge without conflicts never needs them.
    /// The result has ours' limits and its clock.
    ///
    /// Costs what the sides changed, not the tree: only inodes that
    /// differ from the base are looked at. Fails (changing nothing) if a
    /// side is not a fork of `base`, if the result would exceed ours'
    /// limits, or if a lazily loaded chunk cannot be read.
    ///
    /// ```
    /// use cowvfs::{MergeOptions, Snapshot, Vfs};
    ///
    /// let mut v = Vfs::new();
    /// v.write_file("/notes", b"base")?;
    /// let base = v.snapshot();
    /// let (mut a, mut b) = (base.fork(), base.fork());
    /// a.rename("/notes", "/notes.txt")?;
    /// b.write_file("/notes", b"edited")?;
    /// b.write_file("/new", b"from b")?;
    /// let merged = Snapshot::merge(&base, &a.snapshot(), &b.snapshot(), &MergeOptions::new())?;
    /// assert!(merged.is_clean());
    /// let s = merged.into_snapshot()?;
    /// assert_eq!(s.read_file("/notes.txt")?, b"edited");
    /// assert_eq!(s.read_file("/new")?, b"from b");
    /// assert!(!s.exists("/notes"));
    /// # Ok::<(), cowvfs::Error>(())
    /// ```
    pub fn merge(
        base: &Snapshot,
        ours: &Snapshot,
        theirs: &Snapshot,
        options: &MergeOptions,
    ) -> Result<Merge> {
        let policy = options.policy;
        if ours.ptr_eq(base) && theirs.ptr_eq(base) {
            return Ok(Merge {
                snapshot: Some(ours.clone()),
                conflicts: Vec::new(),
                omitted: 0,
            });
        }
        let (tree, mut conflicts, omitted) = merge_trees(
            base.tree(),
            ours.tree(),
            theirs.tree(),
            policy,
            options.max_report_bytes,
        )?;
        conflicts.sort_by(|a, b| (a.path.as_str(), a.kind).cmp(&(b.path.as_str(), b.kind)));
        tracing::debug!(conflicts = conflicts.len(), omitted, "merge");
        let snapshot = if policy == ConflictPolicy::Fail && (!conflicts.is_empty() || omitted > 0) {
            None
        } else {
            Some(ours.with_tree(tree))
        };
        Ok(Merge {
            snapshot,
            conflicts,
            omitted,
        })
    }
}

/// The merged tree, the conflicts found on the way whose paths fit in
/// `budget` bytes, and how many more there were.
fn merge_trees(
    base: &Tree,
    ours: &Tree,
    theirs: &Tree,
    policy: ConflictPolicy,
    budget: usize,
) -> Result<(Tree, Vec<Conflict>, u64)> {
    let mut sides = Sides::new(base, ours, theirs)?;
    let touched = sides.touched()?;
    find_aliases(&mut sides, &touched);
    let winner = if policy == ConflictPolicy::Theirs {
        Side::Theirs
    } else {
        Side::Ours
    };
    let keep_both = policy == ConflictPolicy::KeepBoth;
    let mut names = Names::new(&sides, touched, winner, keep_both, ours.name_max());
    names.settle_slots();
    names.settle()?;
    let rules = Rules {
        theirs_wins: winner == Side::Theirs,
        keep_both,
    };
    let tree = assemble(&mut names, &rules)?;
    let pending = std::mem::take(&mut names.conflicts);
    // Named in the merged tree, or else where a side has it (the merged
    // tree dropped it). Each path is built only while the budget lasts.
    let path_of = |ino: crate::tree::Ino| {
        path_by(ino, |i| {
            tree.get(i).ok().and_then(|x| x.links.first().cloned())
        })
        .or_else(|| {
            [Side::Ours, Side::Theirs, Side::Base]
                .into_iter()
                .find_map(|s| sides.path(s, ino))
        })
        .unwrap_or_else(|| format!("<inode {ino}>"))
    };
    let mut left = budget;
    let mut omitted = 0u64;
    let mut conflicts = Vec::new();
    for p in pending {
        if left == 0 {
            omitted += 1;
            continue;
        }
        let c = finish(p, policy, &path_of);
        let bytes = c.path.len()
            + c.ranges.len() * std::mem::size_of::<std::ops::Range<u64>>()
            + match &c.resolution {
                Resolution::Both { beside } => beside.len(),
                _ => 0,
            };
        match left.checked_sub(bytes) {
            Some(l) => {
                left = l;
                conflicts.push(c);
            }
            None => {
                // Nothing more fits: the rest are only counted.
                left = 0;
                omitted += 1;
            }
        }
    }
    Ok((tree, conflicts, omitted))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A pending conflict with its paths (from `path_of`) and resolution
/// named.
fn finish(
    p: Pending,
    policy: ConflictPolicy,
    path_of: &dyn Fn(crate::tree::Ino) -> String,
) -> Conflict {
    let path = match &p.subject {
        Subject::Inode(i) => path_of(*i),
        Subject::Slot(d, n) => join(&path_of(*d), n),
    };
    let resolution = match (policy, p.settled) {
        (ConflictPolicy::Fail, _) => Resolution::Unresolved,
        (ConflictPolicy::Theirs, Settled::Winner) => Resolution::Theirs,
        (_, Settled::Winner) => Resolution::Ours,
        (_, Settled::Side(Side::Theirs)) => Resolution::Theirs,
        (_, Settled::Side(_)) => Resolution::Ours,
        (_, Settled::Beside(d, n)) => Resolution::Both {
            beside: join(&path_of(d), &n),
        },
    };
    Conflict {
        path,
        kind: p.kind,
        ours: p.ours,
        theirs: p.theirs,
        ranges: p.ranges,
        resolution,
    }
}
