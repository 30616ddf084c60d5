//! Matching by inode identity: the three trees of a merge (base, ours,
//! theirs) seen through one numbering, and the inodes either side touched.
//!
//! Forks of one snapshot share its inode numbers, and a tree reuses only
//! numbers no clone of it has seen (tree/numbers.rs: a snapshot or fork
//! raises the watermark to `next_ino`, which only grows), so an inode
//! number below the base's `next_ino` names the same file, directory or
//! symlink in all three trees wherever each side moved it, or nothing. Inodes a side created are numbered from
//! the base's `next_ino` on in both forks, so theirs' new inodes are given
//! numbers after ours' in the merged tree ([`Sides::map_theirs`]); when
//! both sides created the same thing at the same place (a directory, or
//! a file or symlink with equal bytes and permissions), theirs' inode is
//! an alias of ours'.
//!
//! The touched inodes come from the inode maps' pointer-pruned diff
//! (`Tree::inode_changes`), so finding them costs what changed, not the
//! tree.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, ErrorKind, Result};
use crate::tree::{Entry, FileType, Ino, Inode, InodeChange, Name, Node, ROOT, Tree};

/// One of the three trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Base,
    Ours,
    Theirs,
}

/// The three trees under the merged numbering.
pub(super) struct Sides<'a> {
    pub base: &'a Tree,
    pub ours: &'a Tree,
    pub theirs: &'a Tree,
    /// The base's `next_ino`: numbers below it are shared identities.
    n: Ino,
    /// The merged number of theirs' inode `n`.
    t_off: Ino,
    /// One past the last merged number of theirs' new inodes.
    t_end: Ino,
    /// Theirs' new inode (merged number) -> ours' new inode it is.
    alias: HashMap<Ino, Ino>,
    /// The reverse of `alias`.
    alias_rev: HashMap<Ino, Ino>,
}

impl<'a> Sides<'a> {
    /// Checks that `ours` and `theirs` can be forks of `base`: they number
    /// at least as far, and no inode of the base changed kind in them
    /// (kinds never change). A tree that is no fork of the base fails with
    /// `InvalidInput` instead of merging unrelated inodes.
    pub fn new(base: &'a Tree, ours: &'a Tree, theirs: &'a Tree) -> Result<Sides<'a>> {
        let n = base.next_ino();
        let not_fork = |which: &str| {
            Error::with(
                ErrorKind::InvalidInput,
                format!("{which} is not a fork of the merge base (inode numbers disagree)"),
            )
        };
        for (tree, which) in [(ours, "ours"), (theirs, "theirs")] {
            if tree.next_ino() < n {
                return Err(not_fork(which));
            }
        }
        let t_off = ours.next_ino().max(n);
        let t_end = t_off
            .checked_add(theirs.next_ino() - n)
            .ok_or_else(|| not_fork("theirs"))?;
        // Their new inodes are numbered after ours: past the limit, the
        // merged tree could not be saved and loaded again.
        if t_end > crate::tree::INO_LIMIT {
            return Err(Error::with(
                ErrorKind::NoSpace,
                "the merged tree would need inode numbers past the limit",
            ));
        }
        Ok(Sides {
            base,
            ours,
            theirs,
            n,
            t_off,
            t_end,
            alias: HashMap::new(),
            alias_rev: HashMap::new(),
        })
    }

    /// The first number free in the merged tree.
    pub fn next_ino(&self) -> Ino {
        self.t_end
    }

    /// Every inode that differs from the base in ours or theirs, by merged
    /// number. Fails if a side holds a base number the base never had or
    /// changed an inode's kind (it is no fork of the base).
    pub fn touched(&self) -> Result<BTreeSet<Ino>> {
        let mut out = BTreeSet::new();
        for side in [Side::Ours, Side::Theirs] {
            let tree = self.tree(side);
            for change in self.base.inode_changes(tree) {
                let raw = match change {
                    InodeChange::Added(ino, _) if ino < self.n => {
                        return Err(Error::with(
                            ErrorKind::InvalidInput,
                            "a side holds an inode the merge base never had: not a fork of it",
                        ));
                    }
                    InodeChange::Added(ino, _) | InodeChange::Removed(ino) => ino,
                    InodeChange::Changed { ino, old, new } => {
                        if old.kind() != new.kind() {
                            return Err(Error::with(
                                ErrorKind::InvalidInput,
                                "an inode changed kind: not a fork of the merge base",
                            ));
                        }
                        ino
                    }
                };
                out.insert(match side {
                    Side::Theirs => self.map_theirs(raw),
                    _ => raw,
                });
            }
        }
        Ok(out)
    }

    pub fn tree(&self, side: Side) -> &'a Tree {
        match side {
            Side::Base => self.base,
            Side::Ours => self.ours,
            Side::Theirs => self.theirs,
        }
    }

    /// The merged number of theirs' inode `raw`.
    pub fn map_theirs(&self, raw: Ino) -> Ino {
        if raw < self.n {
            return raw;
        }
        let m = raw - self.n + self.t_off;
        self.alias.get(&m).copied().unwrap_or(m)
    }

    /// Theirs' own number for merged inode `m`, if theirs has one.
    fn theirs_raw(&self, m: Ino) -> Option<Ino> {
        if m < self.n {
            return Some(m);
        }
        if let Some(&t) = self.alias_rev.get(&m) {
            return Some(t - self.t_off + self.n);
        }
        if (self.t_off..self.t_end).contains(&m) && !self.alias.contains_key(&m) {
            return Some(m - self.t_off + self.n);
        }
        None
    }

    /// Side `side`'s number for merged inode `m`, if it has one.
    fn raw(&self, side: Side, m: Ino) -> Option<Ino> {
        match side {
            Side::Base => (m < self.n).then_some(m),
            Side::Ours => (m < self.ours.next_ino()).then_some(m),
            Side::Theirs => self.theirs_raw(m),
        }
    }

    /// Merged inode `m` as `side` holds it.
    pub fn inode(&self, side: Side, m: Ino) -> Option<&'a Inode> {
        let raw = self.raw(side, m)?;
        self.tree(side).get(raw).ok()
    }

    /// Whether `m` is a number only one side made (not a shared identity).
    pub fn is_new(&self, m: Ino) -> bool {
        m >= self.n
    }

    /// Whether `m` is an inode ours made.
    pub fn is_ours_new(&self, m: Ino) -> bool {
        m >= self.n && m < self.ours.next_ino()
    }

    /// Whether `m` is an inode theirs made (and no alias of ours').
    pub fn is_theirs_new(&self, m: Ino) -> bool {
        (self.t_off..self.t_end).contains(&m) && !self.alias.contains_key(&m)
    }

    /// Whether `m` is a theirs inode that became an alias of ours' (it is
    /// no inode of the merged tree).
    pub fn is_alias(&self, m: Ino) -> bool {
        self.alias.contains_key(&m)
    }

    /// Makes theirs' new inode `t` (merged number) an alias of ours' `o`.
    pub fn add_alias(&mut self, t: Ino, o: Ino) {
        self.alias.insert(t, o);
        self.alias_rev.insert(o, t);
    }

    /// An entry as `side` holds it, in merged numbers.
    pub fn map_entry(&self, side: Side, e: Entry) -> Entry {
        match side {
            Side::Theirs => Entry {
                ino: self.map_theirs(e.ino),
                kind: e.kind,
            },
            _ => e,
        }
    }

    /// Directory `d`'s entry `name` in `side`, in merged numbers.
    pub fn entry(&self, side: Side, d: Ino, name: &str) -> Option<Entry> {
        let e = *self.inode(side, d)?.entries()?.get(name)?;
        Some(self.map_entry(side, e))
    }

    /// The names of merged inode `m` in `side`, in merged numbers.
    pub fn links(&self, side: Side, m: Ino) -> Vec<(Ino, Name)> {
        let Some(i) = self.inode(side, m) else {
            return Vec::new();
        };
        match side {
            Side::Theirs => i
                .links
                .iter()
                .map(|(p, n)| (self.map_theirs(*p), n.clone()))
                .collect(),
            _ => i.links.to_vec(),
        }
    }

    /// Whether `side` changed `m` in a way a deletion on the other side
    /// would lose: made it, or changed its permissions, bytes or symlink
    /// target, or gave it a name it did not have in the base. Timestamps
    /// alone and names taken away do not count.
    pub fn changed(&self, side: Side, m: Ino) -> bool {
        let Some(x) = self.inode(side, m) else {
            return false;
        };
        let Some(b) = self.inode(Side::Base, m) else {
            return true;
        };
        if x.mode != b.mode || !same_node(x, b) {
            return true;
        }
        // Sorted and searched: an inode may have `MAX_LINKS` names, and a
        // scan of the base's per name would be quadratic in them.
        let mut base_links = self.links(Side::Base, m);
        base_links.sort_unstable();
        self.links(side, m)
            .iter()
            .any(|l| base_links.binary_search(l).is_err())
    }

    /// Whether `side` moved or renamed `m` (its names differ from the base's).
    pub fn renamed(&self, side: Side, m: Ino) -> bool {
        let (Some(_), Some(_)) = (self.inode(side, m), self.inode(Side::Base, m)) else {
            return false;
        };
        let mut a = self.links(side, m);
        let mut b = self.links(Side::Base, m);
        a.sort();
        b.sort();
        a != b
    }

    /// A path of merged inode `m` in `side` (its first name at each level),
    /// if `side` reaches it from the root.
    pub fn path(&self, side: Side, m: Ino) -> Option<String> {
        path_by(m, |i| self.links(side, i).into_iter().next())
    }
}

/// Whether two inodes hold the same thing: equal bytes (however stored)
/// for files, the same target for symlinks; directories always match
/// (their entries are merged by name).
pub(super) fn same_node(a: &Inode, b: &Inode) -> bool {
    match (&a.node, &b.node) {
        (Node::File(x), Node::File(y)) => x.same_bytes(y),
        (Node::Symlink(x), Node::Symlink(y)) => x == y,
        (Node::Dir(_), Node::Dir(_)) => true,
        _ => false,
    }
}

/// A path from the root to `m`, following `parent` (a name of an inode)
/// up; `None` if the chain does not reach the root within a bound.
pub(super) fn path_by(m: Ino, parent: impl Fn(Ino) -> Option<(Ino, Name)>) -> Option<String> {
    let mut names: Vec<Name> = Vec::new();
    let mut cur = m;
    // A tree is at most as deep as its inode count; this bound only stops
    // a cycle, which a merged tree in the making may hold.
    for _ in 0..100_000 {
        if cur == ROOT {
            if names.is_empty() {
                return Some("/".into());
            }
            let mut s = String::new();
            for n in names.iter().rev() {
                s.push('/');
                s.push_str(n);
            }
            return Some(s);
        }
        let (p, n) = parent(cur)?;
        names.push(n);
        cur = p;
    }
    None
}

/// Whether an entry names a directory.
pub(super) fn is_dir(e: &Entry) -> bool {
    e.kind == FileType::Dir
}
