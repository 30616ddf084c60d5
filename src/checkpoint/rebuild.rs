//! Rebuilding: checked records to a tree. Every record is checked on its
//! own (modes, times, names, chunk placement, the loader's limits), then
//! the tree as a whole must satisfy the engine invariants (links, nlink,
//! reachability, counters, next inode number) and, unless deferred,
//! hash to the root hash in the header. Nothing is returned half-built.
//!
//! Links, nlink and reachability come from the tree's own walk from the
//! root (`tree::walk_from_root`), over a vector of fresh inodes for a
//! full checkpoint and over the patched inode map for a delta.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use imbl::OrdMap;

use super::format::{
    BlobRef, ChunkRec, EntryRec, Header, InodeRec, NAME_LIMIT, NodeRec, TreeRecord, hex, kind_of,
};
use crate::chunk::{Blob, Chunk};
use crate::chunkmap::ChunkMap;
use crate::content::{CHUNK_SIZE, Content};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Counters, Limits};
use crate::path;
use crate::time::Timestamp;
use crate::tree::{
    Entry, FileType, INO_LIMIT, Ino, Inode, InodeMap, MAX_LINKS, MapTable, Name, Node, ROOT,
    SharedInode, Step, Target, Tree, VecTable, WalkError, entry_charge, walk_from_root,
};
use crate::vfs::Snapshot;

fn check_time(t: Timestamp) -> Result<()> {
    if t.nanos >= 1_000_000_000 {
        return Err(Error::corrupt("timestamp with nanoseconds out of range"));
    }
    Ok(())
}

fn content_from(
    size: u64,
    mut chunks: ChunkMap,
    set: Vec<ChunkRec>,
    clear: &[u64],
    blob_of: &dyn Fn(BlobRef) -> Result<Arc<Blob>>,
    limits: &Limits,
) -> Result<Content> {
    if size > limits.max_file_size {
        return Err(Error::with(
            ErrorKind::FileTooLarge,
            format!(
                "checkpoint holds a file of {size} bytes, over the loader's file size limit ({})",
                limits.max_file_size
            ),
        ));
    }
    let patched = !chunks.is_empty();
    for i in clear {
        if chunks.remove(i).is_none() {
            return Err(Error::corrupt("patch clears a chunk the parent lacks"));
        }
    }
    let mut prev: Option<u64> = None;
    for r in set {
        if prev.is_some_and(|p| r.idx <= p) {
            return Err(Error::corrupt("chunk records out of order"));
        }
        prev = Some(r.idx);
        if r.len == 0 || r.len as usize > CHUNK_SIZE {
            return Err(Error::corrupt(format!("chunk of length {}", r.len)));
        }
        let end = r
            .idx
            .checked_mul(CHUNK_SIZE as u64)
            .and_then(|s| s.checked_add(r.len as u64));
        if end.is_none_or(|e| e > size) {
            return Err(Error::corrupt("chunk reaches past the end of its file"));
        }
        let chunk = match r.blob {
            BlobRef::Zeros => Chunk::zeros(r.len),
            b => {
                let blob = blob_of(b)?;
                if blob.len() > r.len {
                    return Err(Error::corrupt("chunk is longer than its place in the file"));
                }
                Chunk::from_blob(blob, r.len)
            }
        };
        chunks.insert(r.idx, chunk);
    }
    let c = Content::from_parts(size, chunks);
    if patched {
        // A patch may leave parent chunks past a shrunken size; new chunks
        // were checked one by one above.
        c.check().map_err(Error::corrupt)?;
    }
    Ok(c)
}

fn entries_from(
    mut entries: OrdMap<Name, Entry>,
    set: Vec<EntryRec<'_>>,
    remove: Vec<&str>,
    patch: bool,
    limits: &Limits,
) -> Result<OrdMap<Name, Entry>> {
    for n in remove {
        if entries.remove(n).is_none() {
            return Err(Error::corrupt("patch removes an entry the parent lacks"));
        }
    }
    for e in set {
        if path::check_name(e.name, NAME_LIMIT).is_err() {
            return Err(Error::corrupt(format!("bad entry name {:?}", e.name)));
        }
        if e.name.len() > limits.max_name_len as usize {
            return Err(Error::with(
                ErrorKind::NameTooLong,
                format!(
                    "checkpoint holds a name of {} bytes, over the loader's limit ({})",
                    e.name.len(),
                    limits.max_name_len
                ),
            ));
        }
        let entry = Entry {
            ino: e.ino,
            kind: kind_of(e.kind)?,
        };
        if entries.insert(Name::from(e.name), entry).is_some() && !patch {
            return Err(Error::corrupt("directory names an entry twice"));
        }
    }
    Ok(entries)
}

fn parent_blob_index(parent: &Snapshot, wanted: &[[u8; 32]]) -> Result<Vec<Arc<Blob>>> {
    let want: HashSet<blake3::Hash> = wanted
        .iter()
        .map(|a| blake3::Hash::from_bytes(*a))
        .collect();
    let mut found: HashMap<blake3::Hash, Arc<Blob>> = HashMap::new();
    'outer: for (_, inode) in parent.inodes() {
        let Node::File(c) = &inode.node else { continue };
        for (_, ch) in c.chunks() {
            let Some(a) = ch.addr() else { continue };
            if !want.contains(&a) || found.contains_key(&a) {
                continue;
            }
            let blob = match ch.blob() {
                Some(b) => b.clone(),
                None => Arc::new(Blob::loaded(ch.trimmed()?.to_vec(), a)),
            };
            found.insert(a, blob);
            if found.len() == want.len() {
                break 'outer;
            }
        }
    }
    wanted
        .iter()
        .map(|a| {
            let a = blake3::Hash::from_bytes(*a);
            found.get(&a).cloned().ok_or_else(|| {
                Error::corrupt(format!(
                    "delta reuses chunk {} that its parent lacks",
                    hex(&a)
                ))
            })
        })
        .collect()
}

/// One inode from its record; `old` is the parent's node at the same
/// number (patches apply to it). Links and nlink are left for the caller.
fn inode_from_rec(
    rec: InodeRec<'_>,
    old: Option<&Node>,
    blob_of: &dyn Fn(BlobRef) -> Result<Arc<Blob>>,
    limits: &Limits,
) -> Result<Inode> {
    if rec.mode & !0o7777 != 0 {
        return Err(Error::corrupt(format!(
            "inode {} has mode {:o}",
            rec.ino, rec.mode
        )));
    }
    for t in [rec.atime, rec.mtime, rec.ctime] {
        check_time(t)?;
    }
    let node = match (rec.node, old) {
        (NodeRec::File { size, chunks }, _) => Node::File(content_from(
            size,
            ChunkMap::default(),
            chunks,
            &[],
            blob_of,
            limits,
        )?),
        (NodeRec::FilePatch { size, set, clear }, Some(Node::File(oc))) => Node::File(
            content_from(size, oc.chunk_map().clone(), set, &clear, blob_of, limits)?,
        ),
        (NodeRec::Dir { entries }, _) => Node::Dir(entries_from(
            OrdMap::new(),
            entries,
            Vec::new(),
            false,
            limits,
        )?),
        (NodeRec::DirPatch { set, remove }, Some(Node::Dir(oe))) => {
            Node::Dir(entries_from(oe.clone(), set, remove, true, limits)?)
        }
        (NodeRec::Symlink { target }, _) => {
            if target.is_empty() || target.contains('\0') {
                return Err(Error::corrupt("bad symlink target"));
            }
            // As for a symlink a sandbox makes.
            path::check_path(target, limits.max_path_len as usize).map_err(|e| {
                Error::with(
                    e.kind(),
                    format!(
                        "checkpoint holds a symlink target of {} bytes, over the loader's limit ({})",
                        target.len(),
                        limits.max_path_len
                    ),
                )
            })?;
            Node::Symlink(Target::from(target))
        }
        (NodeRec::FilePatch { .. } | NodeRec::DirPatch { .. }, _) => {
            return Err(Error::corrupt(format!(
                "patch for inode {} that the parent lacks or holds as another kind",
                rec.ino
            )));
        }
    };
    let mut inode = Inode::new(node, rec.mode, rec.mtime);
    inode.atime = rec.atime;
    inode.ctime = rec.ctime;
    inode.nlink = 0;
    Ok(inode)
}

/// [`build`] for a full checkpoint: the same checks, but inodes sit in a
/// sorted vector until they are complete, so links and nlink are set
/// before anything is shared and the map is built once. This is most of
/// what makes a lazy open of 100,000 files fast.
fn build_full(
    h: &Header,
    m: TreeRecord<'_>,
    blobs: Vec<Arc<Blob>>,
    check: RootCheck,
    limits: &Limits,
) -> Result<Snapshot> {
    let blob_of = |b: BlobRef| -> Result<Arc<Blob>> {
        match b {
            BlobRef::Own(i) => blobs.get(i as usize).cloned(),
            _ => None,
        }
        .ok_or_else(|| Error::corrupt("chunk reference out of range"))
    };
    let mut recs = m.inodes;
    let inos: Vec<Ino> = recs.iter().map(|r| r.ino).collect();
    if inos.first() == Some(&0) || inos.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::corrupt("inode records out of order"));
    }
    // Records are independent: build them on two threads when there are
    // many (half the cost of a lazy open of 100,000 files). Each is put in
    // its `Arc` there too; it stays unique, so setting links below is free.
    let convert = |recs: Vec<InodeRec<'_>>| -> Result<Vec<SharedInode>> {
        recs.into_iter()
            .map(|r| inode_from_rec(r, None, &blob_of, limits).map(SharedInode::new))
            .collect()
    };
    let nodes: Vec<SharedInode> = if recs.len() >= 20_000 {
        let second = recs.split_off(recs.len() / 2);
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| convert(second));
            let a = convert(recs);
            let b = h
                .join()
                .unwrap_or_else(|_| Err(Error::with(ErrorKind::Io, "decoding thread failed")));
            (a, b)
        });
        let mut nodes = a?;
        nodes.extend(b?);
        nodes
    } else {
        convert(recs)?
    };
    let mut counters = Counters::default();
    // Walk from the root, recording links in place.
    let mut table = VecTable::new(inos, nodes);
    walk_from_root(&mut table, |t, step| match step {
        Step::Entry { dir, name, at, .. } => {
            SharedInode::make_mut(&mut t.nodes[at])
                .links
                .push((dir, name.clone()));
            add(&mut counters.charged, entry_charge(name))
        }
        Step::DirDone { at, subdirs, .. } => {
            SharedInode::make_mut(&mut t.nodes[at]).nlink = subdirs.saturating_add(2);
            Ok(())
        }
    })
    .map_err(walk_error)?;
    let VecTable {
        inos,
        mut nodes,
        seen: visited,
        ..
    } = table;
    for (i, node) in nodes.iter_mut().enumerate() {
        if node.kind() == FileType::Dir {
            if !visited[i] {
                return Err(Error::corrupt(format!(
                    "directory {} is unreachable",
                    inos[i]
                )));
            }
        } else {
            if node.links.is_empty() {
                return Err(Error::corrupt(format!("inode {} is unreachable", inos[i])));
            }
            let nlink = link_count(node.links.len())?;
            SharedInode::make_mut(node).nlink = nlink;
        }
        count(&mut counters, node)?;
    }
    let max_ino = inos.last().copied().unwrap_or(0);
    if m.next_ino <= max_ino {
        return Err(Error::corrupt(format!(
            "next inode number {} is not above inode {max_ino}",
            m.next_ino
        )));
    }
    let inodes: InodeMap = inos.into_iter().zip(nodes).collect();
    finish(h, inodes, m.next_ino, counters, limits, &[], check)
}

/// A failed walk from the root as a load error: the visitor's own, or a
/// corrupt checkpoint.
fn walk_error(e: WalkError<Error>) -> Error {
    match e {
        WalkError::Visit(e) => e,
        WalkError::NoDir(ROOT) => Error::corrupt("no root directory"),
        WalkError::NoDir(d) => Error::corrupt(format!("directory {d} is missing")),
        WalkError::Missing { dir, name, ino } => Error::corrupt(format!(
            "entry {name:?} in directory {dir} names missing inode {ino}"
        )),
        WalkError::WrongKind { name, .. } => {
            Error::corrupt(format!("entry {name:?} has the wrong kind"))
        }
        WalkError::Twice(ino) => {
            Error::corrupt(format!("directory {ino} is named twice or in a cycle"))
        }
        WalkError::TooManySubdirs(_) => Error::corrupt("too many subdirectories"),
    }
}

/// `*total += n`, or an error if the sum overflows (only a crafted file's
/// sizes can get there).
fn add(total: &mut u64, n: u64) -> Result<()> {
    *total = total
        .checked_add(n)
        .ok_or_else(|| Error::corrupt("the checkpoint's sizes add up past 2^64"))?;
    Ok(())
}

/// Adds one inode to the counters, with checked sums.
fn count(c: &mut Counters, inode: &Inode) -> Result<()> {
    add(&mut c.inodes, 1)?;
    add(&mut c.held, inode.held())?;
    add(&mut c.logical, inode.content().map_or(0, Content::size))?;
    add(&mut c.charged, inode.charge())
}

/// The link count of a non-directory named `n` times: at most
/// `MAX_LINKS`, as for links a sandbox makes.
fn link_count(n: usize) -> Result<u32> {
    match u32::try_from(n) {
        Ok(n) if n <= MAX_LINKS => Ok(n),
        _ => Err(Error::with(
            ErrorKind::TooManyLinks,
            format!("checkpoint names a file {n} times, over the limit ({MAX_LINKS})"),
        )),
    }
}

/// Whether building a tree recomputes its root hash to compare with the
/// header's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RootCheck {
    /// Yes: `load`, and trees named by their root hash (the blob store).
    Verify,
    /// No, for a lazy open, whose cost should follow what is read. The
    /// metadata is still checked against its hash and every structural
    /// rule, each chunk against its address when read, and the snapshot's
    /// own `root_hash()` is always computed from the tree, never taken from
    /// the header; `load` and `verify` compare the two.
    Defer,
}

/// Assembles the tree, forgets stale inherited hashes above `touched`,
/// and checks the root hash against the header if asked to.
fn finish(
    h: &Header,
    inodes: InodeMap,
    next_ino: Ino,
    counters: Counters,
    limits: &Limits,
    touched: &[Ino],
    check: RootCheck,
) -> Result<Snapshot> {
    // Inode numbers count up from here; one near the top of the range
    // would wrap around onto numbers in use.
    if next_ino > INO_LIMIT {
        return Err(Error::corrupt(format!(
            "next inode number {next_ino} is over the limit ({INO_LIMIT})"
        )));
    }
    // The tree must fit the loader's quotas, as if a sandbox had made it.
    if counters.inodes > limits.max_inodes {
        return Err(Error::with(
            ErrorKind::QuotaExceeded,
            format!(
                "checkpoint holds {} inodes, over the loader's limit ({})",
                counters.inodes, limits.max_inodes
            ),
        ));
    }
    if counters.charged > limits.max_bytes {
        return Err(Error::with(
            ErrorKind::NoSpace,
            format!(
                "checkpoint's tree costs {} bytes, over the loader's byte limit ({})",
                counters.charged, limits.max_bytes
            ),
        ));
    }
    // The limits are the loader's; the file's own record of the limits it
    // was saved under is ignored.
    let mut tree = Tree::from_parts(inodes, next_ino, counters, limits.clone());
    for &ino in touched {
        tree.invalidate_up(ino);
    }
    if check == RootCheck::Defer {
        return Ok(Snapshot::from_tree(tree));
    }
    let got = tree.root_hash_parallel();
    if got != h.root_hash {
        return Err(Error::corrupt(format!(
            "tree hashes to {} but the header says {}",
            hex(&got),
            hex(&h.root_hash)
        )));
    }
    Ok(Snapshot::from_tree(tree))
}

/// Builds the tree from a verified tree record, checks every invariant and,
/// per `check`, the root hash. `blobs` are the stored chunks (loaded or
/// lazy).
pub(super) fn build(
    h: &Header,
    m: TreeRecord<'_>,
    blobs: Vec<Arc<Blob>>,
    parent: Option<&Snapshot>,
    check: RootCheck,
    limits: &Limits,
) -> Result<Snapshot> {
    let Some(parent) = parent else {
        return build_full(h, m, blobs, check, limits);
    };
    // A delta: start from the parent's inodes and apply the records.
    let pblobs = if m.parent_blobs.is_empty() {
        Vec::new()
    } else {
        parent_blob_index(parent, &m.parent_blobs)?
    };
    let blob_of = |b: BlobRef| -> Result<Arc<Blob>> {
        let got = match b {
            BlobRef::Own(i) => blobs.get(i as usize),
            BlobRef::Parent(i) => pblobs.get(i as usize),
            BlobRef::Zeros => None,
        };
        got.cloned()
            .ok_or_else(|| Error::corrupt("chunk reference out of range"))
    };
    let mut inodes: InodeMap = parent.inode_map().clone();
    let mut prev = 0;
    for &ino in &m.removed {
        if ino <= prev || ino == ROOT || inodes.remove(&ino).is_none() {
            return Err(Error::corrupt(format!("bad removal of inode {ino}")));
        }
        prev = ino;
    }
    let mut touched = Vec::with_capacity(m.inodes.len());
    let mut prev = 0;
    for rec in m.inodes {
        if rec.ino <= prev {
            return Err(Error::corrupt("inode records out of order"));
        }
        prev = rec.ino;
        let ino = rec.ino;
        let inode = inode_from_rec(rec, inodes.get(&ino).map(|i| &i.node), &blob_of, limits)?;
        inodes.insert(ino, SharedInode::new(inode));
        touched.push(ino);
    }

    // Walk from the root: every entry must name a live inode of its kind,
    // every directory must be reached exactly once (no cycles, no second
    // names), and the names give each inode its links.
    let mut counters = Counters::default();
    let mut links: Vec<(Ino, Ino, Name)> = Vec::with_capacity(inodes.len());
    let mut dir_nlink: Vec<(Ino, u32)> = Vec::new();
    walk_from_root(&mut MapTable::new(&inodes), |_, step| match step {
        Step::Entry { dir, name, ino, .. } => {
            links.push((ino, dir, name.clone()));
            add(&mut counters.charged, entry_charge(name))
        }
        Step::DirDone { dir, subdirs, .. } => {
            dir_nlink.push((dir, subdirs.saturating_add(2)));
            Ok(())
        }
    })
    .map_err(walk_error)?;
    links.sort_unstable();
    dir_nlink.sort_unstable();

    // (inode, nlink, links) for inodes whose derived fields must change.
    type Fix = (Ino, u32, Vec<(Ino, Name)>);
    let mut fixes: Vec<Fix> = Vec::new();
    let (mut li, mut di) = (0usize, 0usize);
    let mut max_ino = 0;
    for (ino, inode) in inodes.iter() {
        max_ino = ino;
        count(&mut counters, inode)?;
        let start = li;
        while li < links.len() && links[li].0 == ino {
            li += 1;
        }
        let mine = &links[start..li];
        let nlink = if inode.kind() == FileType::Dir {
            if di < dir_nlink.len() && dir_nlink[di].0 == ino {
                di += 1;
                dir_nlink[di - 1].1
            } else {
                return Err(Error::corrupt(format!("directory {ino} is unreachable")));
            }
        } else {
            if mine.is_empty() {
                return Err(Error::corrupt(format!("inode {ino} is unreachable")));
            }
            link_count(mine.len())?
        };
        let same = inode.nlink == nlink
            && inode.links.len() == mine.len()
            && if mine.len() == 1 {
                inode.links[0].0 == mine[0].1 && inode.links[0].1 == mine[0].2
            } else {
                let mut have = inode.links.clone();
                have.sort_unstable();
                have.iter().zip(mine).all(|(a, b)| a.0 == b.1 && a.1 == b.2)
            };
        if !same {
            fixes.push((
                ino,
                nlink,
                mine.iter().map(|(_, p, n)| (*p, n.clone())).collect(),
            ));
        }
    }
    drop(links);
    if m.next_ino <= max_ino {
        return Err(Error::corrupt(format!(
            "next inode number {} is not above inode {max_ino}",
            m.next_ino
        )));
    }
    for (ino, nlink, l) in fixes {
        if let Some(arc) = inodes.get_mut(&ino) {
            let i = SharedInode::make_mut(arc);
            i.nlink = nlink;
            i.links = l.into();
        }
        touched.push(ino);
    }
    finish(h, inodes, m.next_ino, counters, limits, &touched, check)
}
