//! `Tree::check`: verifies invariants 1, 2, 4, 5 and 6 by the walk from
//! the root (`walk`) and a pass over every inode.

use std::collections::HashMap;

use crate::limits::Counters;
use crate::path;

use super::walk::{MapTable, Step, WalkError, walk_from_root};
use super::{FileType, Ino, InoMap, Name, Node, ROOT, Tree, entry_charge};

impl Tree {
    /// Checks invariants 1, 2, 4, 5 and 6. `open` holds the inodes that
    /// descriptors keep alive.
    pub(crate) fn check(&self, open: &InoMap<u32>) -> Result<(), String> {
        let root = self.inodes.get(&ROOT).ok_or("no root inode")?;
        if root.kind() != FileType::Dir || !root.links.is_empty() {
            return Err("root is not a detached directory".into());
        }
        let mut c = Counters::default();
        // Count entries naming each inode, walking from the root.
        let mut named: HashMap<Ino, Vec<(Ino, Name)>> = HashMap::new();
        let mut table = MapTable::new(&self.inodes);
        walk_from_root(&mut table, |t, step| {
            match step {
                Step::Entry { dir, name, ino, .. } => {
                    if path::check_name(name, usize::MAX).is_err() {
                        return Err(format!("bad name {name:?} in {dir}"));
                    }
                    named.entry(ino).or_default().push((dir, name.clone()));
                    c.charged += entry_charge(name);
                }
                Step::DirDone { dir, subdirs, .. } => {
                    let nlink = t.map.get(&dir).map_or(0, |i| i.nlink);
                    if nlink != 2 + subdirs {
                        return Err(format!("dir {dir} nlink {nlink} != 2 + {subdirs}"));
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| match e {
            WalkError::Visit(e) => e,
            WalkError::NoDir(d) => format!("dir {d} missing or not a dir"),
            WalkError::Missing { dir, name, ino } => {
                format!("entry {name} in {dir} names missing inode {ino}")
            }
            WalkError::WrongKind { name, ino, .. } => {
                format!("entry {name} kind differs from inode {ino}")
            }
            WalkError::Twice(ino) => format!("directory {ino} named twice or in a cycle"),
            WalkError::TooManySubdirs(d) => format!("dir {d} has too many subdirectories"),
        })?;
        for (ino, inode) in self.inodes.iter() {
            c.charged += inode.charge();
            if ino >= self.next_ino() {
                return Err(format!("inode {ino} >= next_ino {}", self.next_ino()));
            }
            c.inodes += 1;
            let mut links = inode.links.to_vec();
            links.sort();
            let mut want = named.remove(&ino).unwrap_or_default();
            want.sort();
            if links != want {
                return Err(format!("inode {ino} links {links:?} but named by {want:?}"));
            }
            match &inode.node {
                Node::File(content) => {
                    content.check().map_err(|e| format!("inode {ino}: {e}"))?;
                    c.held += content.held();
                    c.logical += content.size();
                }
                Node::Symlink(_) => {}
                Node::Dir(_) => {
                    if ino != ROOT && want.len() != 1 {
                        return Err(format!("dir {ino} unreachable"));
                    }
                }
            }
            if inode.kind() != FileType::Dir {
                if inode.nlink as usize != want.len() {
                    return Err(format!(
                        "inode {ino} nlink {} != {}",
                        inode.nlink,
                        want.len()
                    ));
                }
                if want.is_empty() && !open.contains_key(&ino) {
                    return Err(format!("inode {ino} is unreachable and not open"));
                }
            }
            if let Some(m) = inode.memo.get() {
                // Recompute without trusting child memos of this node only.
                let fresh = self.compute_hash(inode);
                if fresh != *m {
                    return Err(format!("inode {ino} memo is stale"));
                }
            } else {
                for (p, _) in &inode.links {
                    if self.inodes.get(p).is_some_and(|pi| pi.memo.get().is_some()) {
                        return Err(format!(
                            "inode {ino} lacks a memo but its parent {p} has one"
                        ));
                    }
                }
            }
        }
        if c != self.counters {
            return Err(format!(
                "counters {:?} but a walk counts {c:?}",
                self.counters
            ));
        }
        Ok(())
    }
}
