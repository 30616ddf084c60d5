//! The crate's read access to a [`Snapshot`]: the host export visits a
//! subtree through [`Visitor`], and the checkpoint encoder and delta
//! rebuilder read inodes, their changes and the inode map through the
//! methods here, so none of them reaches into the snapshot's tree.

use crate::error::Result;
use crate::tree::{Base, Ino, Inode, InodeChange, InodeMap, Name};

use super::Snapshot;

/// What [`Snapshot::visit`] calls, for a walk that creates a subtree
/// somewhere else (the host export). Each directory's entries come
/// together, in name order, between its `enter` and the next `enter`;
/// subdirectories are entered after all their siblings, the last one
/// first (a stack, so a guest-made depth never recurses).
pub(crate) trait Visitor {
    /// What the visitor keeps per directory (e.g. its path relative to the
    /// top); cloned once per subdirectory, for `leave`.
    type Dir: Clone;

    /// Starts on the entries of directory `ino`.
    fn enter(&mut self, ino: Ino, dir: &Self::Dir) -> Result<()>;

    /// Entry `name` of the directory last entered (`dir`) names `ino`.
    /// Returning `Some` for a directory visits it later with that state
    /// (ignored for anything else).
    fn entry(
        &mut self,
        dir: &Self::Dir,
        name: &Name,
        ino: Ino,
        inode: &Inode,
    ) -> Result<Option<Self::Dir>>;

    /// Everything below directory `ino`, which an `entry` asked to visit,
    /// is done (not called for the top).
    fn leave(&mut self, ino: Ino, inode: &Inode, dir: Self::Dir) -> Result<()>;
}

impl Snapshot {
    /// What `path` names (from the root, `follow` deciding for a final
    /// symlink).
    pub(crate) fn lookup(&self, path: &str, follow: bool) -> Result<Ino> {
        self.tree.lookup(Base::Root, path, follow)
    }

    /// One inode (`ENOENT` if there is none by that number).
    pub(crate) fn inode(&self, ino: Ino) -> Result<&Inode> {
        self.tree.get(ino)
    }

    /// Visits the subtree below directory `top` (nothing if it is no
    /// directory), `top` itself kept as `top_dir`; see [`Visitor`] for
    /// the order. Stops at the first error.
    pub(crate) fn visit<V: Visitor>(&self, top: Ino, top_dir: V::Dir, v: &mut V) -> Result<()> {
        enum Work<D> {
            Enter(Ino, D),
            Leave(Ino, D),
        }
        let mut work = vec![Work::Enter(top, top_dir)];
        while let Some(w) = work.pop() {
            match w {
                Work::Leave(ino, dir) => v.leave(ino, self.tree.get(ino)?, dir)?,
                Work::Enter(ino, dir) => {
                    let Some(entries) = self.tree.get(ino)?.entries() else {
                        continue;
                    };
                    v.enter(ino, &dir)?;
                    for (name, e) in entries.iter() {
                        let inode = self.tree.get(e.ino)?;
                        if let Some(sub) = v.entry(&dir, name, e.ino, inode)?
                            && inode.entries().is_some()
                        {
                            work.push(Work::Leave(e.ino, sub.clone()));
                            work.push(Work::Enter(e.ino, sub));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every inode, by number.
    pub(crate) fn inodes(&self) -> impl Iterator<Item = (Ino, &Inode)> {
        self.tree.inodes()
    }

    /// The inodes that differ from `self` (older) to `newer`, by number;
    /// the cost follows the change, not the tree.
    pub(crate) fn inode_changes<'a>(
        &'a self,
        newer: &'a Snapshot,
    ) -> impl Iterator<Item = InodeChange<'a>> {
        self.tree.inode_changes(&newer.tree)
    }

    /// The number the next inode created in a fork gets.
    pub(crate) fn next_ino(&self) -> Ino {
        self.tree.next_ino()
    }

    /// The inode map, for a checkpoint delta to start its rebuild from.
    pub(crate) fn inode_map(&self) -> &InodeMap {
        self.tree.inode_map()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vfs;

    /// Records the calls, as the host export would make its objects.
    struct Log(Vec<String>);

    impl Visitor for Log {
        type Dir = String;
        fn enter(&mut self, _: Ino, dir: &String) -> Result<()> {
            self.0.push(format!("enter {dir}"));
            Ok(())
        }
        fn entry(
            &mut self,
            dir: &String,
            name: &Name,
            _: Ino,
            i: &Inode,
        ) -> Result<Option<String>> {
            let path = format!("{dir}/{name}");
            self.0.push(format!("entry {path}"));
            Ok(i.entries().map(|_| path))
        }
        fn leave(&mut self, _: Ino, _: &Inode, dir: String) -> Result<()> {
            self.0.push(format!("leave {dir}"));
            Ok(())
        }
    }

    #[test]
    fn visits_as_the_export_walks() {
        let mut v = Vfs::new();
        v.create_dir_all("/top/a/x").unwrap();
        v.create_dir_all("/top/b").unwrap();
        v.write_file("/top/f", b"1").unwrap();
        v.write_file("/top/a/g", b"2").unwrap();
        let snap = v.snapshot();
        let top = snap.lookup("/top", true).unwrap();
        let mut log = Log(Vec::new());
        snap.visit(top, String::new(), &mut log).unwrap();
        let want = [
            "enter ",
            "entry /a",
            "entry /b",
            "entry /f",
            "enter /b",
            "leave /b",
            "enter /a",
            "entry /a/g",
            "entry /a/x",
            "enter /a/x",
            "leave /a/x",
            "leave /a",
        ];
        assert_eq!(log.0, want);
    }
}
