//! Diff between two trees: the changed paths, found by the maps'
//! pointer-pruned diff so the cost follows the change, not the tree.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use imbl::OrdMap;
use imbl::ordmap::DiffItem;

use super::{Entry, Ino, Name, Node, ROOT, Tree, trie};

impl Tree {
    /// Paths that differ from `self` (old) to `new`, sorted by path. Holds
    /// every path at once; [`Tree::diff_each`] streams them instead.
    pub(crate) fn diff(&self, new: &Tree) -> Vec<Change> {
        let mut out = Vec::new();
        let _ = self.diff_each(new, &mut |kind, path: &str| {
            out.push(Change {
                path: path.to_string(),
                kind,
            });
            ControlFlow::Continue(())
        });
        out.sort();
        out
    }

    /// Calls `f` with each path that differs from `self` (old) to `new`,
    /// once per path, in depth-first order, until `f` breaks. The cost
    /// follows the change, not the tree: unchanged inodes are skipped by
    /// the maps' pointer-pruned diff. Memory stays O(depth + changed
    /// inodes): each path is built in one shared buffer as the walk goes,
    /// never stored.
    pub(crate) fn diff_each(
        &self,
        new: &Tree,
        f: &mut dyn FnMut(ChangeKind, &str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // Mark, in the new tree, the directories on the way to every inode
        // that changed in place: the walk descends only into those (and
        // into the entries that changed).
        let mut children: HashMap<Ino, Vec<(Name, Ino)>> = HashMap::new();
        let mut up_done: HashSet<Ino> = HashSet::new();
        // Added and removed inodes show up as directory entries.
        let mut changed: Vec<Ino> = Vec::new();
        self.inodes.diff(&new.inodes, &mut |d| {
            if let trie::Diff::Changed { key, .. } = d {
                changed.push(key);
            }
        });
        for ino in changed {
            let mut work = vec![ino];
            // Bounded by the inode count: a corrupt tree cannot loop.
            let mut budget = new.inodes.len();
            while let Some(c) = work.pop() {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let Some(inode) = new.inodes.get(&c) else {
                    continue;
                };
                for (p, n) in &inode.links {
                    let list = children.entry(*p).or_default();
                    if !list.iter().any(|(m, i)| *i == c && m == n) {
                        list.push((n.clone(), c));
                    }
                    if up_done.insert(*p) {
                        work.push(*p);
                    }
                }
            }
        }
        drop(up_done);
        let mut w = DiffWalk {
            old: self,
            new,
            buf: String::from("/"),
            stack: Vec::new(),
            children,
            f,
        };
        w.enter_same(ROOT, 1)?;
        w.run()
    }
}

type EntryIter<'a> = imbl::ordmap::Iter<'a, Name, Entry, imbl::shared_ptr::DefaultSharedPtr>;
type EntryDiff<'a> =
    imbl::ordmap::DiffIter<'a, 'a, Name, Entry, imbl::shared_ptr::DefaultSharedPtr>;

/// One directory being walked by [`DiffWalk`]; `len` is the length of
/// its path in the walk's buffer.
enum Frame<'a> {
    /// Report every entry below a directory of `tree` as `kind`.
    Expand {
        tree: &'a Tree,
        iter: EntryIter<'a>,
        kind: ChangeKind,
        len: usize,
    },
    /// The same directory inode at the same path in both trees: its
    /// changed entries, then its unchanged entries that lead to changes.
    Same {
        diff: EntryDiff<'a>,
        marked: std::vec::IntoIter<(Name, Ino)>,
        old_entries: &'a OrdMap<Name, Entry>,
        len: usize,
    },
    /// Two different directory inodes at one path: compare by name.
    Replaced {
        old_entries: &'a OrdMap<Name, Entry>,
        new_entries: &'a OrdMap<Name, Entry>,
        old_iter: EntryIter<'a>,
        new_iter: EntryIter<'a>,
        len: usize,
    },
}

/// The state of [`Tree::diff_each`]: an explicit stack (a guest controls
/// the depth) and one path buffer.
struct DiffWalk<'a, 'f> {
    old: &'a Tree,
    new: &'a Tree,
    buf: String,
    stack: Vec<Frame<'a>>,
    /// Directory in the new tree -> its entries that lead to an inode
    /// changed in place.
    children: HashMap<Ino, Vec<(Name, Ino)>>,
    f: &'f mut dyn FnMut(ChangeKind, &str) -> ControlFlow<()>,
}

impl<'a> DiffWalk<'a, '_> {
    /// Sets the buffer to the path `len` long plus `name`.
    fn at(&mut self, len: usize, name: &str) {
        self.buf.truncate(len);
        if !self.buf.ends_with('/') {
            self.buf.push('/');
        }
        self.buf.push_str(name);
    }

    fn emit(&mut self, kind: ChangeKind) -> ControlFlow<()> {
        (self.f)(kind, &self.buf)
    }

    /// Reports the path in the buffer as `kind`, and everything below it
    /// if `ino` is a directory of `tree`.
    fn whole(&mut self, tree: &'a Tree, ino: Ino, kind: ChangeKind) -> ControlFlow<()> {
        self.emit(kind)?;
        if let Some(entries) = tree.inodes.get(&ino).and_then(|i| i.entries()) {
            self.stack.push(Frame::Expand {
                tree,
                iter: entries.iter(),
                kind,
                len: self.buf.len(),
            });
        }
        ControlFlow::Continue(())
    }

    /// Starts walking directory `ino`, the same inode in both trees at the
    /// path in the buffer.
    fn enter_same(&mut self, ino: Ino, len: usize) -> ControlFlow<()> {
        let (Some(a), Some(b)) = (
            self.old.inodes.get(&ino).and_then(|i| i.entries()),
            self.new.inodes.get(&ino).and_then(|i| i.entries()),
        ) else {
            return ControlFlow::Continue(());
        };
        let mut marked = self.children.remove(&ino).unwrap_or_default();
        marked.sort();
        self.stack.push(Frame::Same {
            diff: a.diff(b),
            marked: marked.into_iter(),
            old_entries: a,
            len,
        });
        ControlFlow::Continue(())
    }

    /// Compares what one path (in the buffer) names in each tree:
    /// `old_ino` before, `new_ino` after.
    fn pair(&mut self, old_ino: Ino, new_ino: Ino) -> ControlFlow<()> {
        let (Some(a), Some(b)) = (self.old.inodes.get(&old_ino), self.new.inodes.get(&new_ino))
        else {
            return ControlFlow::Continue(());
        };
        match (&a.node, &b.node) {
            (Node::Dir(ea), Node::Dir(eb)) => {
                if a.mode != b.mode {
                    self.emit(ChangeKind::Modified)?;
                }
                if old_ino == new_ino {
                    self.enter_same(old_ino, self.buf.len())
                } else {
                    self.stack.push(Frame::Replaced {
                        old_entries: ea,
                        new_entries: eb,
                        old_iter: ea.iter(),
                        new_iter: eb.iter(),
                        len: self.buf.len(),
                    });
                    ControlFlow::Continue(())
                }
            }
            _ if a.kind() != b.kind() => {
                // Removed and added at one path: modified, and whatever
                // was or is below it removed or added.
                self.emit(ChangeKind::Modified)?;
                let len = self.buf.len();
                if let Some(e) = a.entries() {
                    self.stack.push(Frame::Expand {
                        tree: self.old,
                        iter: e.iter(),
                        kind: ChangeKind::Removed,
                        len,
                    });
                }
                if let Some(e) = b.entries() {
                    self.stack.push(Frame::Expand {
                        tree: self.new,
                        iter: e.iter(),
                        kind: ChangeKind::Added,
                        len,
                    });
                }
                ControlFlow::Continue(())
            }
            _ if !a.same_payload(b) => self.emit(ChangeKind::Modified),
            _ => ControlFlow::Continue(()),
        }
    }

    fn run(&mut self) -> ControlFlow<()> {
        while let Some(frame) = self.stack.last_mut() {
            match frame {
                Frame::Expand {
                    tree,
                    iter,
                    kind,
                    len,
                } => {
                    let (tree, kind, len) = (*tree, *kind, *len);
                    let Some((name, e)) = iter.next() else {
                        self.stack.pop();
                        continue;
                    };
                    self.at(len, name);
                    self.whole(tree, e.ino, kind)?;
                }
                Frame::Same {
                    diff,
                    marked,
                    old_entries,
                    len,
                } => {
                    let len = *len;
                    if let Some(d) = diff.next() {
                        match d {
                            DiffItem::Add(name, e) => {
                                self.at(len, name);
                                self.whole(self.new, e.ino, ChangeKind::Added)?;
                            }
                            DiffItem::Remove(name, e) => {
                                self.at(len, name);
                                self.whole(self.old, e.ino, ChangeKind::Removed)?;
                            }
                            DiffItem::Update {
                                old: (name, x),
                                new: (_, y),
                            } => {
                                self.at(len, name);
                                self.pair(x.ino, y.ino)?;
                            }
                        }
                        continue;
                    }
                    let old_entries: &'a OrdMap<Name, Entry> = old_entries;
                    let Some((name, ino)) = marked.next() else {
                        self.stack.pop();
                        continue;
                    };
                    // Only entries that name the same inode in both trees:
                    // a changed entry was reported by the diff above.
                    if old_entries.get(&name).is_some_and(|e| e.ino == ino) {
                        self.at(len, &name);
                        self.pair(ino, ino)?;
                    }
                }
                Frame::Replaced {
                    old_entries,
                    new_entries,
                    old_iter,
                    new_iter,
                    len,
                } => {
                    let len = *len;
                    let (old_entries, new_entries): (
                        &'a OrdMap<Name, Entry>,
                        &'a OrdMap<Name, Entry>,
                    ) = (*old_entries, *new_entries);
                    if let Some((name, x)) = old_iter.next() {
                        self.at(len, name);
                        match new_entries.get(name) {
                            Some(y) => self.pair(x.ino, y.ino)?,
                            None => self.whole(self.old, x.ino, ChangeKind::Removed)?,
                        }
                        continue;
                    }
                    let Some((name, y)) = new_iter.next() else {
                        self.stack.pop();
                        continue;
                    };
                    if !old_entries.contains_key(name) {
                        self.at(len, name);
                        self.whole(self.new, y.ino, ChangeKind::Added)?;
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// How a path differs between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// The path exists only in the newer tree.
    Added,
    /// The path exists only in the older tree.
    Removed,
    /// The path exists in both, with other content, permissions, kind or
    /// symlink target.
    Modified,
}

/// One changed path, as [`Snapshot::diff`](crate::Snapshot::diff) reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    path: String,
    kind: ChangeKind,
}

impl Change {
    /// The path from the sandbox root, e.g. `/app/main.py`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Added, removed or modified.
    pub fn kind(&self) -> ChangeKind {
        self.kind
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.kind {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
        };
        write!(f, "{sign} {}", self.path)
    }
}
