//! The Merkle root hash: per-inode hashes memoized on the inodes
//! (invariant 6), computed iteratively so depth cannot overflow the stack.

use super::{FileType, Ino, Inode, Node, ROOT, Tree};

impl Tree {
    /// The Merkle hash of the subtree at `ino`. Iterative, so a deep tree
    /// cannot overflow the stack; memoized per inode.
    pub(crate) fn hash_of(&self, ino: Ino) -> blake3::Hash {
        let mut stack: Vec<(Ino, bool)> = vec![(ino, false)];
        while let Some(&(cur, expanded)) = stack.last() {
            let Some(inode) = self.inodes.get(&cur) else {
                stack.pop();
                continue;
            };
            if inode.memo.get().is_some() {
                stack.pop();
                continue;
            }
            if let (Node::Dir(entries), false) = (&inode.node, expanded) {
                if let Some(top) = stack.last_mut() {
                    top.1 = true;
                }
                for e in entries.values() {
                    if e.kind == FileType::Dir
                        && self
                            .inodes
                            .get(&e.ino)
                            .is_some_and(|c| c.memo.get().is_none())
                    {
                        stack.push((e.ino, false));
                    }
                }
                continue;
            }
            let h = self.compute_hash(inode);
            let _ = inode.memo.set(h);
            stack.pop();
        }
        self.inodes
            .get(&ino)
            .and_then(|i| i.memo.get().copied())
            .unwrap_or_else(|| blake3::hash(b"cowvfs:missing"))
    }

    /// Hashes one inode; children of a directory must have memos (or be
    /// leaves, which are hashed here).
    pub(super) fn compute_hash(&self, inode: &Inode) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        match &inode.node {
            Node::File(c) => {
                h.update(b"cowvfs:file\0");
                h.update(&inode.mode.to_le_bytes());
                h.update(&inode.nlink.to_le_bytes());
                c.hash_into(&mut h);
            }
            Node::Symlink(t) => {
                h.update(b"cowvfs:link\0");
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            Node::Dir(entries) => {
                h.update(b"cowvfs:dir\0");
                h.update(&inode.mode.to_le_bytes());
                h.update(&(entries.len() as u64).to_le_bytes());
                for (name, e) in entries.iter() {
                    h.update(&(name.len() as u16).to_le_bytes());
                    h.update(name.as_bytes());
                    let child = match self.inodes.get(&e.ino) {
                        Some(c) => match c.memo.get() {
                            Some(m) => *m,
                            None if e.kind != FileType::Dir => {
                                let m = self.compute_hash(c);
                                let _ = c.memo.set(m);
                                m
                            }
                            None => self.hash_of(e.ino),
                        },
                        None => blake3::hash(b"cowvfs:missing"),
                    };
                    h.update(child.as_bytes());
                }
            }
        }
        h.finalize()
    }

    pub(crate) fn root_hash(&self) -> blake3::Hash {
        self.hash_of(ROOT)
    }

    /// The root hash, computed on two threads for a large tree with no
    /// memos (a freshly loaded checkpoint): directories near the root are
    /// split between the threads, whose memos the final pass then reuses.
    /// Same result as `root_hash`.
    pub(crate) fn root_hash_parallel(&self) -> blake3::Hash {
        let memoized = self
            .inodes
            .get(&ROOT)
            .is_some_and(|r| r.memo.get().is_some());
        if memoized || self.inodes.len() < 20_000 {
            return self.root_hash();
        }
        // Breadth-first until the frontier has enough directories to share.
        let mut frontier = vec![ROOT];
        for _ in 0..4 {
            if frontier.len() >= 16 {
                break;
            }
            let next: Vec<Ino> = frontier
                .iter()
                .filter_map(|d| self.inodes.get(d).and_then(|i| i.entries()))
                .flat_map(|e| {
                    e.values()
                        .filter(|e| e.kind == FileType::Dir)
                        .map(|e| e.ino)
                })
                .collect();
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        let b: Vec<Ino> = frontier.iter().skip(1).step_by(2).copied().collect();
        let a: Vec<Ino> = frontier.iter().step_by(2).copied().collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                for d in &b {
                    self.hash_of(*d);
                }
            });
            for d in &a {
                self.hash_of(*d);
            }
        });
        self.root_hash()
    }
}
