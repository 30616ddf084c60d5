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
use crate::tree::{ROOT, Tree};
use crate::vfs::Snapshot;

pub use report::{Action, Conflict, ConflictKind, ConflictPolicy, MergeOptions, Resolution};

use assemble::{Rules, assemble};
use names::{Names, Pending, Settled, Subject, find_aliases};
use sides::{Side, Sides, path_by};

/// What [`Snapshot::merge`] made: the merged snapshot (none if a conflict
/// met [`ConflictPolicy::Fail`]) and every conflict, in path order.
#[derive(Clone, Debug)]
pub struct Merge {
    snapshot: Option<Snapshot>,
    conflicts: Vec<Conflict>,
}

impl Merge {
    /// The merged tree: `None` only when the policy was
    /// [`ConflictPolicy::Fail`] and something conflicted.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Every conflict and how it was settled.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Whether nothing conflicted.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
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
                    self.conflicts.len(),
                    self.conflicts
                        .first()
                        .map_or(String::new(), |c| c.to_string())
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
            });
        }
        let (tree, pending, sides_paths) =
            merge_trees(base.tree(), ours.tree(), theirs.tree(), policy)?;
        let mut conflicts: Vec<Conflict> = pending
            .into_iter()
            .map(|p| finish(p, policy, &tree, &sides_paths))
            .collect();
        conflicts.sort_by(|a, b| (a.path.as_str(), a.kind).cmp(&(b.path.as_str(), b.kind)));
        tracing::debug!(conflicts = conflicts.len(), "merge");
        let snapshot = if policy == ConflictPolicy::Fail && !conflicts.is_empty() {
            None
        } else {
            Some(ours.with_tree(tree))
        };
        Ok(Merge {
            snapshot,
            conflicts,
        })
    }
}

/// The paths of inodes the merged tree dropped, named in the sides.
type SidePaths = std::collections::HashMap<crate::tree::Ino, String>;

/// The merged tree and the conflicts found on the way.
fn merge_trees(
    base: &Tree,
    ours: &Tree,
    theirs: &Tree,
    policy: ConflictPolicy,
) -> Result<(Tree, Vec<Pending>, SidePaths)> {
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
    // Name, in the sides, what the merged tree no longer has.
    let mut side_paths = SidePaths::new();
    for p in &names.conflicts {
        let ino = match &p.subject {
            Subject::Inode(i) => *i,
            Subject::Slot(d, _) => *d,
        };
        if tree.get(ino).is_err() || ino == ROOT {
            let path = [Side::Ours, Side::Theirs, Side::Base]
                .into_iter()
                .find_map(|s| sides.path(s, ino));
            if let Some(path) = path {
                side_paths.insert(ino, path);
            }
        }
    }
    let conflicts = std::mem::take(&mut names.conflicts);
    Ok((tree, conflicts, side_paths))
}

/// A path in the merged tree, or where a side has it.
fn path_in(tree: &Tree, side_paths: &SidePaths, ino: crate::tree::Ino) -> String {
    let merged = path_by(ino, |i| {
        tree.get(i).ok().and_then(|x| x.links.first().cloned())
    });
    merged
        .or_else(|| side_paths.get(&ino).cloned())
        .unwrap_or_else(|| format!("<inode {ino}>"))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A pending conflict with its paths and resolution named.
fn finish(p: Pending, policy: ConflictPolicy, tree: &Tree, side_paths: &SidePaths) -> Conflict {
    let path = match &p.subject {
        Subject::Inode(i) => path_in(tree, side_paths, *i),
        Subject::Slot(d, n) => join(&path_in(tree, side_paths, *d), n),
    };
    let resolution = match (policy, p.settled) {
        (ConflictPolicy::Fail, _) => Resolution::Unresolved,
        (ConflictPolicy::Theirs, Settled::Winner) => Resolution::Theirs,
        (_, Settled::Winner) => Resolution::Ours,
        (_, Settled::Side(Side::Theirs)) => Resolution::Theirs,
        (_, Settled::Side(_)) => Resolution::Ours,
        (_, Settled::Beside(d, n)) => Resolution::Both {
            beside: join(&path_in(tree, side_paths, d), &n),
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
