//! The walk from the root that proves a tree's shape (invariants 1 and 2):
//! every entry names a live inode of the entry's kind, and every directory
//! is reached exactly once (no second names, no cycles). Its three users:
//! `Tree::check` on a finished tree, and the checkpoint loader's two
//! rebuilders (a full checkpoint's, over a [`VecTable`], and a delta's,
//! over a [`MapTable`]), which derive `links` and `nlink` from it for the
//! inodes they are about to make a tree of.
//!
//! The walk is depth first with an explicit stack (a guest controls the
//! depth), directories popped last-in first-out and entries in name order.
//! It builds no paths: each step carries the directory and the name, which
//! is what its users need, and memory stays O(directories pending).

use std::collections::HashSet;
use triomphe::Arc;

use imbl::OrdMap;

use super::{Entry, FileType, Ino, Inode, InodeMap, Name, ROOT};

/// Inodes a walk reads: a tree's map, or a loader's table of inodes not
/// yet in one. `At` is where an inode sits (its number for a map, an
/// index for a vector), handed back to the visitor so it can reach the
/// inode without a second search.
pub(crate) trait InodeTable {
    /// Where an inode sits in the table.
    type At: Copy;
    /// Where inode `ino` sits and its kind, if it is there.
    fn find(&self, ino: Ino) -> Option<(Self::At, FileType)>;
    /// The entries of the directory at `at` (an O(1) clone of its map,
    /// so the visitor may change the table meanwhile), or `None` if it is
    /// no directory.
    fn entries(&self, at: Self::At) -> Option<OrdMap<Name, Entry>>;
    /// Notes that the walk reached the directory at `at`; `false` if it
    /// had been reached before.
    fn first_visit(&mut self, at: Self::At) -> bool;
}

/// An inode map as an [`InodeTable`], with the set of directories
/// reached (which the caller may read after the walk).
pub(crate) struct MapTable<'a> {
    pub(crate) map: &'a InodeMap,
    pub(crate) seen: HashSet<Ino>,
}

impl<'a> MapTable<'a> {
    pub(crate) fn new(map: &'a InodeMap) -> MapTable<'a> {
        MapTable {
            map,
            seen: HashSet::new(),
        }
    }
}

impl InodeTable for MapTable<'_> {
    type At = Ino;

    fn find(&self, ino: Ino) -> Option<(Ino, FileType)> {
        self.map.get(&ino).map(|i| (ino, i.kind()))
    }

    fn entries(&self, at: Ino) -> Option<OrdMap<Name, Entry>> {
        self.map.get(&at)?.entries().cloned()
    }

    fn first_visit(&mut self, at: Ino) -> bool {
        self.seen.insert(at)
    }
}

/// A loader's inodes before they make a map: `nodes[i]` is inode
/// `inos[i]`, numbers strictly increasing, and `seen[i]` says whether the
/// walk reached it (for directories). The visitor records links straight
/// into `nodes`, which are still unshared, so that costs no copy.
pub(crate) struct VecTable {
    pub(crate) inos: Vec<Ino>,
    pub(crate) nodes: Vec<Arc<Inode>>,
    pub(crate) seen: Vec<bool>,
    /// The lowest number, where the direct index starts.
    first: Ino,
}

impl VecTable {
    /// The table of `nodes` numbered `inos` (strictly increasing, one
    /// number per node; the caller has checked both).
    pub(crate) fn new(inos: Vec<Ino>, nodes: Vec<Arc<Inode>>) -> VecTable {
        let seen = vec![false; nodes.len()];
        let first = inos.first().copied().unwrap_or(0);
        VecTable {
            inos,
            nodes,
            seen,
            first,
        }
    }

    /// Where inode `ino` sits. Numbers are usually dense, so the direct
    /// index is tried before a search (`inos` is strictly increasing, so
    /// a hit there is the only one).
    fn position(&self, ino: Ino) -> Option<usize> {
        let guess = usize::try_from(ino.wrapping_sub(self.first)).unwrap_or(usize::MAX);
        match self.inos.get(guess) {
            Some(&i) if i == ino => Some(guess),
            _ => self.inos.binary_search(&ino).ok(),
        }
    }
}

impl InodeTable for VecTable {
    type At = usize;

    fn find(&self, ino: Ino) -> Option<(usize, FileType)> {
        let at = self.position(ino)?;
        Some((at, self.nodes[at].kind()))
    }

    fn entries(&self, at: usize) -> Option<OrdMap<Name, Entry>> {
        self.nodes[at].entries().cloned()
    }

    fn first_visit(&mut self, at: usize) -> bool {
        !std::mem::replace(&mut self.seen[at], true)
    }
}

/// What the walk shows its visitor.
pub(crate) enum Step<'n, At> {
    /// Entry `name` of directory `dir` names `ino` (at `at`), which exists
    /// and is of the entry's kind. Comes before the walk looks at `ino`
    /// any further.
    Entry {
        dir: Ino,
        name: &'n Name,
        ino: Ino,
        at: At,
    },
    /// Every entry of directory `dir` (at `at`) has been shown; it has
    /// `subdirs` subdirectories, so its `nlink` should be 2 + `subdirs`.
    DirDone { dir: Ino, at: At, subdirs: u32 },
}

/// Why a walk stopped.
#[derive(Debug)]
pub(crate) enum WalkError<E> {
    /// The visitor's own error.
    Visit(E),
    /// A directory to walk is missing or no directory. Only the root can
    /// be: every other directory is checked when its entry is.
    NoDir(Ino),
    /// Entry `name` of `dir` names `ino`, which does not exist.
    Missing { dir: Ino, name: Name, ino: Ino },
    /// An entry `name` names `ino`, which is of another kind.
    WrongKind { name: Name, ino: Ino },
    /// Directory `ino` is reached a second time: named twice or in a cycle.
    Twice(Ino),
    /// Directory `ino` has more subdirectories than a `u32` counts.
    TooManySubdirs(Ino),
}

/// Walks `table` from the root, checking that each entry names a live
/// inode of its kind and that each directory is reached once, and shows
/// `visit` every entry and the end of every directory (see [`Step`]).
/// The visitor gets the table mutably, so a loader can record links in
/// the inodes as it goes.
pub(crate) fn walk_from_root<T: InodeTable, E>(
    table: &mut T,
    mut visit: impl FnMut(&mut T, Step<'_, T::At>) -> Result<(), E>,
) -> Result<(), WalkError<E>> {
    let root = match table.find(ROOT) {
        Some((at, FileType::Dir)) => at,
        _ => return Err(WalkError::NoDir(ROOT)),
    };
    table.first_visit(root);
    let mut work = vec![(ROOT, root)];
    while let Some((dir, dir_at)) = work.pop() {
        let Some(entries) = table.entries(dir_at) else {
            return Err(WalkError::NoDir(dir));
        };
        let mut subdirs = 0u32;
        for (name, e) in entries.iter() {
            let Some((at, kind)) = table.find(e.ino) else {
                return Err(WalkError::Missing {
                    dir,
                    name: name.clone(),
                    ino: e.ino,
                });
            };
            if kind != e.kind {
                return Err(WalkError::WrongKind {
                    name: name.clone(),
                    ino: e.ino,
                });
            }
            let step = Step::Entry {
                dir,
                name,
                ino: e.ino,
                at,
            };
            visit(table, step).map_err(WalkError::Visit)?;
            if kind == FileType::Dir {
                subdirs = subdirs
                    .checked_add(1)
                    .ok_or(WalkError::TooManySubdirs(dir))?;
                if !table.first_visit(at) {
                    return Err(WalkError::Twice(e.ino));
                }
                work.push((e.ino, at));
            }
        }
        let step = Step::DirDone {
            dir,
            at: dir_at,
            subdirs,
        };
        visit(table, step).map_err(WalkError::Visit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;
    use crate::limits::Limits;
    use crate::time::{SystemClock, Timestamp};
    use crate::tree::{Node, Tree};

    #[test]
    fn a_vector_table_rebuilds_links_and_nlink() {
        let clock = SystemClock;
        let mut t = Tree::new(Limits::default(), Timestamp::default());
        let a = t.create(ROOT, "a".into(), Node::Dir(OrdMap::new()), 0o755, &clock);
        let a = a.unwrap();
        let f = t.create(a, "f".into(), Node::File(Content::default()), 0o644, &clock);
        let f = f.unwrap();
        t.link(ROOT, "g".into(), f, FileType::File, Timestamp::default())
            .unwrap();
        t.check(&Default::default()).unwrap();

        let (inos, mut nodes): (Vec<Ino>, Vec<Arc<Inode>>) =
            t.inodes.iter().map(|(i, n)| (i, n.clone())).unzip();
        for n in &mut nodes {
            let n = Arc::make_mut(n);
            n.links.clear();
            n.nlink = 0;
        }
        let mut table = VecTable::new(inos, nodes);
        walk_from_root(&mut table, |t, step| {
            match step {
                Step::Entry { dir, name, at, .. } => {
                    Arc::make_mut(&mut t.nodes[at])
                        .links
                        .push((dir, name.clone()));
                }
                Step::DirDone { at, subdirs, .. } => {
                    Arc::make_mut(&mut t.nodes[at]).nlink = 2 + subdirs;
                }
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        for (ino, node) in table.inos.iter().zip(&table.nodes) {
            let mut want = t.inodes.get(ino).unwrap().links.clone();
            let mut got = node.links.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "inode {ino}");
            if node.kind() == FileType::Dir {
                assert_eq!(node.nlink, t.inodes.get(ino).unwrap().nlink, "inode {ino}");
            }
        }
    }

    #[test]
    fn a_cycle_is_refused() {
        let clock = SystemClock;
        let mut t = Tree::new(Limits::default(), Timestamp::default());
        let a = t.create(ROOT, "a".into(), Node::Dir(OrdMap::new()), 0o755, &clock);
        let a = a.unwrap();
        // `a/up` names the root: a second name for a directory.
        let d = t.inode_mut(a).unwrap();
        if let Node::Dir(e) = &mut d.node {
            e.insert(
                "up".into(),
                Entry {
                    ino: ROOT,
                    kind: FileType::Dir,
                },
            );
        }
        let mut table = MapTable::new(&t.inodes);
        let r = walk_from_root(&mut table, |_, _| Ok::<(), ()>(()));
        assert!(matches!(r, Err(WalkError::Twice(ROOT))), "{r:?}");
        assert!(t.check(&Default::default()).is_err());
    }
}
