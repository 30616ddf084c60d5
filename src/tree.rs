//! The persistent inode table: path resolution, hashing, diff, invariants.
//!
//! A `Tree` is a value: cloning it is O(1) and shares everything. Inodes sit
//! behind `Arc` in an `imbl::OrdMap`, so a change copies one inode and the
//! O(log n) map nodes above it, never the tree.
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

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use imbl::OrdMap;
use imbl::ordmap::DiffItem;

use crate::content::Content;
use crate::error::{ErrorKind, Result, err};
use crate::limits::{Counters, Limits};
use crate::path::{self, check_path, components, wants_dir};
use crate::time::Timestamp;

pub(crate) type Ino = u64;
pub(crate) type Name = Arc<str>;

/// The root directory's inode number.
pub(crate) const ROOT: Ino = 1;
/// The most hard links one file may have.
pub(crate) const MAX_LINKS: u32 = 65_000;

/// What one inode costs toward `max_bytes` beyond its data: the inode
/// itself (about 200 bytes behind its `Arc`), its slot in the inode map,
/// the first allocation of its list of names, and for a directory the
/// first node of its entry map. Rounded up from measurements.
pub(crate) const INODE_CHARGE: u64 = 384;
/// What one directory entry costs toward `max_bytes` beyond its name's
/// bytes: its slot in the directory's map, the name's shared header and
/// the `(directory, name)` back link in the inode it names.
pub(crate) const ENTRY_CHARGE: u64 = 160;

/// The charge of one directory entry called `name`.
pub(crate) fn entry_charge(name: &str) -> u64 {
    ENTRY_CHARGE + name.len() as u64
}

/// What kind of object an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// A directory entry as stored: the inode and its kind (kinds never change,
/// so keeping it here makes listing a directory need no inode lookups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub ino: Ino,
    pub kind: FileType,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    File(Content),
    Dir(OrdMap<Name, Entry>),
    Symlink(Name),
}

#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub node: Node,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Entries naming a non-directory; 2 + subdirectories for a directory.
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// `(directory, name)` of every entry naming this inode.
    pub links: Vec<(Ino, Name)>,
    memo: OnceLock<blake3::Hash>,
}

impl PartialEq for Inode {
    fn eq(&self, o: &Inode) -> bool {
        self.mode == o.mode
            && self.nlink == o.nlink
            && self.atime == o.atime
            && self.mtime == o.mtime
            && self.ctime == o.ctime
            && self.links == o.links
            && self.node == o.node
    }
}
impl Eq for Inode {}

impl Inode {
    pub(crate) fn new(node: Node, mode: u32, now: Timestamp) -> Inode {
        let nlink = if matches!(node, Node::Dir(_)) { 2 } else { 0 };
        Inode {
            node,
            mode: mode & 0o7777,
            nlink,
            atime: now,
            mtime: now,
            ctime: now,
            links: Vec::new(),
            memo: OnceLock::new(),
        }
    }

    pub(crate) fn kind(&self) -> FileType {
        match self.node {
            Node::File(_) => FileType::File,
            Node::Dir(_) => FileType::Dir,
            Node::Symlink(_) => FileType::Symlink,
        }
    }

    pub(crate) fn entries(&self) -> Option<&OrdMap<Name, Entry>> {
        match &self.node {
            Node::Dir(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn content(&self) -> Option<&Content> {
        match &self.node {
            Node::File(c) => Some(c),
            _ => None,
        }
    }

    /// Logical size as `stat` reports it.
    pub(crate) fn size(&self) -> u64 {
        match &self.node {
            Node::File(c) => c.size(),
            Node::Dir(e) => e.len() as u64,
            Node::Symlink(t) => t.len() as u64,
        }
    }

    pub(crate) fn held(&self) -> u64 {
        self.content().map_or(0, Content::held)
    }

    /// What the inode costs toward `max_bytes`, its entries (charged to
    /// the entries themselves) aside: the fixed charge, plus its chunks
    /// or its symlink target.
    pub(crate) fn charge(&self) -> u64 {
        INODE_CHARGE
            + match &self.node {
                Node::File(c) => c.charge(),
                Node::Symlink(t) => t.len() as u64,
                Node::Dir(_) => 0,
            }
    }

    /// Whether what the root hash covers (kind, permissions, content, link
    /// count, target) differs; timestamps and inode numbers do not count.
    pub(crate) fn same_payload(&self, o: &Inode) -> bool {
        if self.mode != o.mode {
            return false;
        }
        match (&self.node, &o.node) {
            (Node::File(a), Node::File(b)) => self.nlink == o.nlink && a.same_bytes(b),
            (Node::Symlink(a), Node::Symlink(b)) => a == b,
            (Node::Dir(_), Node::Dir(_)) => true,
            _ => false,
        }
    }
}

/// Where a resolution starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// The sandbox root, as a chroot: `..` at the root stays there and
    /// absolute symlinks restart from the root.
    Root,
    /// A directory, strictly beneath: absolute paths, absolute symlinks and
    /// `..` above it are `EPERM`.
    Beneath(Ino),
}

/// One path component, borrowed from the caller's path or from a symlink
/// target (shared, so following a link allocates nothing).
#[derive(Clone, Debug)]
pub(crate) enum Comp<'p> {
    Borrowed(&'p str),
    Shared(Name, usize, usize),
}

impl Comp<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Comp::Borrowed(s) => s,
            Comp::Shared(s, a, b) => &s[*a..*b],
        }
    }

    pub(crate) fn to_name(&self) -> Name {
        match self {
            Comp::Shared(s, 0, b) if *b == s.len() => s.clone(),
            _ => Name::from(self.as_str()),
        }
    }
}

/// The outcome of resolving a path.
#[derive(Debug)]
pub(crate) struct Resolved<'p> {
    /// The directory holding the final name (or the final directory itself
    /// when the path ends in `.`, `..` or the root).
    pub dir: Ino,
    /// The final name; `None` when the path ends at a directory as above.
    pub name: Option<Comp<'p>>,
    /// What the final component names, if it exists.
    pub ino: Option<Ino>,
    pub kind: Option<FileType>,
    /// The path ended in a slash: the final object must be a directory.
    pub must_dir: bool,
}

/// A whole filesystem tree as a value.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    pub inodes: OrdMap<Ino, Arc<Inode>>,
    pub next_ino: Ino,
    pub counters: Counters,
    pub limits: Limits,
}

impl Tree {
    pub(crate) fn new(limits: Limits, now: Timestamp) -> Tree {
        let mut inodes = OrdMap::new();
        inodes.insert(
            ROOT,
            Arc::new(Inode::new(Node::Dir(OrdMap::new()), 0o755, now)),
        );
        Tree {
            inodes,
            next_ino: ROOT + 1,
            counters: Counters {
                held: 0,
                logical: 0,
                inodes: 1,
                charged: INODE_CHARGE,
            },
            limits,
        }
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
        self.invalidate(ino);
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
        self.invalidate(ino);
        for p in parents {
            self.invalidate(p);
        }
    }

    fn invalidate(&mut self, ino: Ino) {
        let mut work = vec![ino];
        while let Some(i) = work.pop() {
            let Some(arc) = self.inodes.get_mut(&i) else {
                continue;
            };
            // Invariant 6: no ancestor holds a memo either, so the walk may
            // stop here, but only if no snapshot shares this inode: hashing
            // that snapshot later would memoize its children's hash on the
            // shared inode, and this tree would report it as its own.
            if arc.memo.get().is_none() && Arc::strong_count(arc) == 1 {
                continue;
            }
            let inode = Arc::make_mut(arc);
            inode.memo = OnceLock::new();
            work.extend(inode.links.iter().map(|(p, _)| *p));
        }
    }

    // ---------------------------------------------------------------
    // Resolution

    /// Resolves `path` from `base`. Every component but the last must exist;
    /// intermediate symlinks are always followed, the last one only if
    /// `follow` (or the path ends in a slash).
    pub(crate) fn resolve<'p>(
        &self,
        base: Base,
        path: &'p str,
        follow: bool,
    ) -> Result<Resolved<'p>> {
        let lim = &self.limits;
        check_path(path, lim.max_path_len as usize)?;
        let (start, beneath) = match base {
            Base::Root => (ROOT, false),
            Base::Beneath(ino) => (ino, true),
        };
        if beneath && path.starts_with('/') {
            return err(ErrorKind::NotPermitted);
        }
        // Directories walked so far; `..` pops. stack[0] is the floor.
        let mut stack: Vec<Ino> = vec![start];
        self.entries(start)?;
        let mut pending: Vec<Comp<'p>> = components(path).rev().map(Comp::Borrowed).collect();
        let mut must_dir = wants_dir(path);
        let mut hops = 0u32;
        while let Some(comp) = pending.pop() {
            let last = pending.is_empty();
            let name = comp.as_str();
            if name == "." {
                continue;
            }
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                } else if beneath {
                    return err(ErrorKind::NotPermitted);
                }
                continue;
            }
            if name.len() > self.name_max() {
                return err(ErrorKind::NameTooLong);
            }
            let cur = *stack.last().unwrap_or(&start);
            let entry = self.entries(cur)?.get(name).copied();
            let Some(entry) = entry else {
                if last {
                    return Ok(Resolved {
                        dir: cur,
                        name: Some(comp),
                        ino: None,
                        kind: None,
                        must_dir,
                    });
                }
                return err(ErrorKind::NotFound);
            };
            match entry.kind {
                FileType::Symlink if !last || follow || must_dir => {
                    hops = hops.saturating_add(1);
                    if hops > lim.max_symlink_hops {
                        return err(ErrorKind::Loop);
                    }
                    let Node::Symlink(target) = &self.get(entry.ino)?.node else {
                        return err(ErrorKind::Corrupt);
                    };
                    if target.starts_with('/') {
                        if beneath {
                            return err(ErrorKind::NotPermitted);
                        }
                        stack.truncate(1);
                    }
                    if last && wants_dir(target) {
                        must_dir = true;
                    }
                    let mut offs = 0usize;
                    let mut parts = Vec::new();
                    for piece in target.split('/') {
                        if !piece.is_empty() {
                            parts.push(Comp::Shared(target.clone(), offs, offs + piece.len()));
                        }
                        offs += piece.len() + 1;
                    }
                    pending.extend(parts.into_iter().rev());
                }
                FileType::Dir if !last => stack.push(entry.ino),
                _ if !last => return err(ErrorKind::NotADirectory),
                kind => {
                    if must_dir && kind != FileType::Dir {
                        return err(ErrorKind::NotADirectory);
                    }
                    return Ok(Resolved {
                        dir: cur,
                        name: Some(comp),
                        ino: Some(entry.ino),
                        kind: Some(kind),
                        must_dir,
                    });
                }
            }
        }
        let dir = *stack.last().unwrap_or(&start);
        Ok(Resolved {
            dir,
            name: None,
            ino: Some(dir),
            kind: Some(FileType::Dir),
            must_dir,
        })
    }

    /// Resolves to an existing inode.
    pub(crate) fn lookup(&self, base: Base, path: &str, follow: bool) -> Result<Ino> {
        self.resolve(base, path, follow)?
            .ino
            .ok_or_else(|| ErrorKind::NotFound.into())
    }

    /// Whether `ino` is `anc` or lies below it.
    pub(crate) fn is_within(&self, mut ino: Ino, anc: Ino) -> bool {
        // Bounded by the inode count, so a corrupt tree cannot loop forever.
        for _ in 0..=self.inodes.len() {
            if ino == anc {
                return true;
            }
            match self.inodes.get(&ino).and_then(|i| i.links.first()) {
                Some((parent, _)) => ino = *parent,
                None => return false,
            }
        }
        false
    }

    // ---------------------------------------------------------------
    // Hashing

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
    fn compute_hash(&self, inode: &Inode) -> blake3::Hash {
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

    // ---------------------------------------------------------------
    // Diff

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
        for item in self.inodes.diff(&new.inodes) {
            let DiffItem::Update { new: (&ino, _), .. } = item else {
                // Added and removed inodes show up as directory entries.
                continue;
            };
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
    // ---------------------------------------------------------------
    // Invariants

    /// Checks invariants 1, 2, 4, 5 and 6. `open` holds the inodes that
    /// descriptors keep alive.
    pub(crate) fn check(&self, open: &HashMap<Ino, u32>) -> Result<(), String> {
        let root = self.inodes.get(&ROOT).ok_or("no root inode")?;
        if root.kind() != FileType::Dir || !root.links.is_empty() {
            return Err("root is not a detached directory".into());
        }
        let mut c = Counters::default();
        // Count entries naming each inode, walking from the root.
        let mut named: HashMap<Ino, Vec<(Ino, Name)>> = HashMap::new();
        let mut seen_dirs: HashSet<Ino> = HashSet::new();
        let mut work = vec![ROOT];
        seen_dirs.insert(ROOT);
        while let Some(d) = work.pop() {
            let inode = self
                .inodes
                .get(&d)
                .ok_or_else(|| format!("dir {d} missing"))?;
            let entries = inode.entries().ok_or_else(|| format!("{d} is not a dir"))?;
            let mut subdirs = 0u32;
            for (name, e) in entries.iter() {
                if path::check_name(name, usize::MAX).is_err() {
                    return Err(format!("bad name {name:?} in {d}"));
                }
                let child = self
                    .inodes
                    .get(&e.ino)
                    .ok_or_else(|| format!("entry {name} in {d} names missing inode {}", e.ino))?;
                if child.kind() != e.kind {
                    return Err(format!("entry {name} kind differs from inode {}", e.ino));
                }
                named.entry(e.ino).or_default().push((d, name.clone()));
                c.charged += entry_charge(name);
                if e.kind == FileType::Dir {
                    subdirs += 1;
                    if !seen_dirs.insert(e.ino) {
                        return Err(format!("directory {} named twice or in a cycle", e.ino));
                    }
                    work.push(e.ino);
                }
            }
            if inode.nlink != 2 + subdirs {
                return Err(format!("dir {d} nlink {} != 2 + {subdirs}", inode.nlink));
            }
        }
        for (&ino, inode) in self.inodes.iter() {
            c.charged += inode.charge();
            if ino >= self.next_ino {
                return Err(format!("inode {ino} >= next_ino {}", self.next_ino));
            }
            c.inodes += 1;
            let mut links = inode.links.clone();
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
