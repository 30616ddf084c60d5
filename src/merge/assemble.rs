//! Result assembly: the merged tree, built from ours' inode map (an O(1)
//! clone) by replacing each touched inode with its merged version and
//! dropping the ones no merged name reaches, with the usage counters moved
//! by the difference and the hash memos forgotten up to the root
//! (invariant 6). The cost follows the touched inodes, not the tree.
//!
//! Per inode, the attribute rules (docs/DESIGN.md, "Merge"): permission
//! bits merge three ways (both changed differently: a mode conflict, the
//! winner's bits); file content merges by chunks (`content`); `mtime` and
//! `atime` take the side that changed them, the newer if both did;
//! `ctime` is the later of the two; names and `nlink` are what the merged
//! namespace gives.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::content::Content;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Counters;
use crate::time::Timestamp;
use crate::tree::{
    Entry, FileType, Ino, Inode, InodeMap, MAX_LINKS, Name, Node, SharedInode, Tree, entry_charge,
};

use super::content::merge_content;
use super::names::{Beside, Names, Pending, Settled, Subject, counts_as_subdir};
use super::report::{Action, ConflictKind};
use super::sides::Side;

/// How the assembly settles what it finds.
pub(super) struct Rules {
    pub theirs_wins: bool,
    pub keep_both: bool,
}

/// A scalar merged three ways: the side that changed it; both changed
/// alike or differently: `both(o, t)`.
fn three<T: Copy + PartialEq>(b: T, o: T, t: T, both: impl FnOnce(T, T) -> T) -> T {
    if o == b {
        t
    } else if t == b || o == t {
        o
    } else {
        both(o, t)
    }
}

fn subtract(c: &mut Counters, i: &Inode) {
    c.inodes -= 1;
    c.held -= i.held();
    c.logical -= i.content().map_or(0, Content::size);
    c.charged -= i.charge();
}

fn add(c: &mut Counters, i: &Inode) -> Result<()> {
    let over = || Error::with(ErrorKind::FileTooLarge, "the merged sizes would overflow");
    c.inodes += 1;
    c.held = c.held.checked_add(i.held()).ok_or_else(over)?;
    c.logical = c
        .logical
        .checked_add(i.content().map_or(0, Content::size))
        .ok_or_else(over)?;
    c.charged = c.charged.checked_add(i.charge()).ok_or_else(over)?;
    Ok(())
}

/// Builds the merged tree; content and mode conflicts join `names`'
/// conflicts.
pub(super) fn assemble(names: &mut Names, rules: &Rules) -> Result<Tree> {
    let sides = names.sides;
    let ours = sides.ours;
    let mut map = ours.inode_map().clone();
    let mut counters = ours.counters();
    let mut built: BTreeMap<Ino, Inode> = BTreeMap::new();
    let mut copies: Vec<Ino> = Vec::new();
    let todo: Vec<Ino> = names.touched.iter().copied().collect();
    for m in todo {
        if sides.is_alias(m) {
            continue;
        }
        let o = sides.inode(Side::Ours, m);
        if !names.reachable(m) {
            if let Some(o) = o {
                subtract(&mut counters, o);
                if let Some(e) = o.entries() {
                    counters.charged -= e.keys().map(|n| entry_charge(n)).sum::<u64>();
                }
                map.remove(&m);
            }
            continue;
        }
        let (b, t) = (sides.inode(Side::Base, m), sides.inode(Side::Theirs, m));
        let Some(start) = o.or(t) else {
            return Err(Error::with(
                ErrorKind::Corrupt,
                format!("merge: inode {m} is named but neither side has it"),
            ));
        };
        let mut inode = start.clone();
        inode.forget_hash();
        if let Some(o) = o {
            subtract(&mut counters, o);
        }
        match (&start.node, o, t) {
            (Node::Dir(_), ..) => {
                let (entries, subdirs, charge) = merge_dir(names, m, o, b, t)?;
                inode.node = Node::Dir(entries);
                inode.nlink = 2 + subdirs;
                counters.charged = counters.charged.wrapping_add(charge as u64);
            }
            (Node::File(_), Some(o), Some(t)) => {
                if let (Some(b), Some(oc), Some(tc)) = (b, o.content(), t.content())
                    && let Some(bc) = b.content()
                {
                    let mc = merge_content(bc, oc, tc, rules.theirs_wins)?;
                    if !mc.ranges.is_empty() {
                        let kind = if mc.size_conflict {
                            ConflictKind::Size
                        } else {
                            ConflictKind::Content
                        };
                        if rules.keep_both {
                            copies.push(m);
                        }
                        names.conflicts.push(Pending {
                            subject: Subject::Inode(m),
                            kind,
                            ours: Action::Modified,
                            theirs: Action::Modified,
                            ranges: mc.ranges,
                            settled: Settled::Winner,
                        });
                    }
                    inode.node = Node::File(mc.content);
                }
            }
            _ => {}
        }
        if let (Some(b), Some(o), Some(t)) = (b, o, t) {
            let mode = three(b.mode, o.mode, t.mode, |x, y| {
                if rules.theirs_wins { y } else { x }
            });
            if o.mode != b.mode && t.mode != b.mode && o.mode != t.mode {
                names.conflicts.push(Pending {
                    subject: Subject::Inode(m),
                    kind: ConflictKind::Mode,
                    ours: Action::Modified,
                    theirs: Action::Modified,
                    ranges: Vec::new(),
                    settled: Settled::Winner,
                });
            }
            inode.mode = mode;
            if let (Node::Symlink(x), Node::Symlink(y), Node::Symlink(z)) =
                (&b.node, &o.node, &t.node)
            {
                let pick = if y == x || (z != x && rules.theirs_wins) {
                    z
                } else {
                    y
                };
                inode.node = Node::Symlink(pick.clone());
            }
            inode.mtime = three(b.mtime, o.mtime, t.mtime, Timestamp::max);
            inode.atime = three(b.atime, o.atime, t.atime, Timestamp::max);
        } else if let (Some(o), Some(t)) = (o, t) {
            // Both made it alike (an alias): the later times.
            inode.mtime = o.mtime.max(t.mtime);
            inode.atime = o.atime.max(t.atime);
        }
        if let (Some(o), Some(t)) = (o, t) {
            inode.ctime = o.ctime.max(t.ctime);
        }
        inode.links = names.live_links(m).into();
        if inode.kind() != FileType::Dir {
            if inode.links.len() > MAX_LINKS as usize {
                return Err(Error::with(
                    ErrorKind::TooManyLinks,
                    "the merged file would have too many hard links",
                ));
            }
            inode.nlink = inode.links.len() as u32;
        }
        add(&mut counters, &inode)?;
        built.insert(m, inode);
    }
    let mut next_ino = sides.next_ino();
    if rules.keep_both {
        let mut keep = KeepBoth::new(names);
        for m in copies {
            next_ino = keep_theirs_beside(
                names,
                &mut keep,
                &mut built,
                &map,
                &mut counters,
                m,
                next_ino,
            )?;
        }
    }
    let changed: Vec<Ino> = built.keys().copied().collect();
    for (m, inode) in built {
        map.insert(m, SharedInode::new(inode));
    }
    forget_hashes_up(&mut map, &changed);
    let limits = ours.limits().clone();
    let floor = ours.counters();
    if counters.charged > limits.max_bytes && counters.charged > floor.charged {
        return Err(Error::with(
            ErrorKind::NoSpace,
            "the merged tree would exceed max_bytes",
        ));
    }
    if counters.inodes > limits.max_inodes && counters.inodes > floor.inodes {
        return Err(Error::with(
            ErrorKind::QuotaExceeded,
            "the merged tree would exceed max_inodes",
        ));
    }
    Ok(Tree::from_parts(map, next_ino, counters, limits))
}

/// Directory `m`'s merged entries, its subdirectory count and the change
/// of the entries' charge against ours' version of it.
fn merge_dir(
    names: &Names,
    m: Ino,
    o: Option<&Inode>,
    b: Option<&Inode>,
    t: Option<&Inode>,
) -> Result<(imbl::OrdMap<Name, Entry>, u32, i64)> {
    let sides = names.sides;
    let bad = || {
        Error::with(
            ErrorKind::Corrupt,
            "merge: a directory's entries are missing",
        )
    };
    let (mut entries, mut subdirs, from_ours) = if let Some(o) = o {
        (
            o.entries().ok_or_else(bad)?.clone(),
            i64::from(o.nlink) - 2,
            true,
        )
    } else if let Some(b) = b {
        (
            b.entries().ok_or_else(bad)?.clone(),
            i64::from(b.nlink) - 2,
            false,
        )
    } else {
        let t = t.ok_or_else(bad)?;
        let mut e = imbl::OrdMap::new();
        let mut n = 0;
        for (name, x) in t.entries().ok_or_else(bad)?.iter() {
            let x = sides.map_entry(Side::Theirs, *x);
            n += counts_as_subdir(Some(x));
            e.insert(name.clone(), x);
        }
        (e, n, false)
    };
    let mut charge: i64 = 0;
    for name in names.names_in(m) {
        let v = names.value(m, &name);
        let old = entries.get(&name).copied();
        if old == v {
            continue;
        }
        subdirs += counts_as_subdir(v) - counts_as_subdir(old);
        let ec = entry_charge(&name) as i64;
        if from_ours {
            charge += i64::from(v.is_some()) * ec - i64::from(old.is_some()) * ec;
        }
        match v {
            Some(e) => entries.insert(name, e),
            None => entries.remove(&name),
        };
    }
    if !from_ours {
        charge = entries.keys().map(|n| entry_charge(n) as i64).sum();
    }
    let subdirs = u32::try_from(subdirs).map_err(|_| bad())?;
    Ok((entries, subdirs, charge))
}

/// What keep-both needs across its copies: free names beside, and each
/// copy's content conflict, found once (the last one for an inode, as a
/// search from the end would): a search per copy made K copies cost
/// K² / 2.
struct KeepBoth {
    picker: Beside,
    content: HashMap<Ino, usize>,
}

impl KeepBoth {
    fn new(names: &Names) -> KeepBoth {
        let mut content = HashMap::new();
        for (i, p) in names.conflicts.iter().enumerate() {
            if let Subject::Inode(x) = p.subject
                && !p.ranges.is_empty()
            {
                content.insert(x, i);
            }
        }
        KeepBoth {
            picker: Beside::default(),
            content,
        }
    }
}

/// Keeps theirs' version of file `m` (a content conflict under keep-both)
/// as a new inode beside it; the next free inode number after.
fn keep_theirs_beside(
    names: &mut Names,
    keep: &mut KeepBoth,
    built: &mut BTreeMap<Ino, Inode>,
    map: &InodeMap,
    counters: &mut Counters,
    m: Ino,
    ino: Ino,
) -> Result<Ino> {
    let sides = names.sides;
    let (Some(t), Some(merged)) = (sides.inode(Side::Theirs, m), built.get(&m)) else {
        return Ok(ino);
    };
    let Some((d, name)) = merged.links.first().cloned() else {
        return Ok(ino);
    };
    let mut dir = match built.remove(&d) {
        Some(dir) => dir,
        None => {
            let Some(dir) = map.get(&d) else {
                return Ok(ino);
            };
            let mut dir = (**dir).clone();
            dir.forget_hash();
            dir
        }
    };
    let Node::Dir(entries) = &mut dir.node else {
        built.insert(d, dir);
        return Ok(ino);
    };
    let max = sides.ours.name_max().max(1);
    let beside = keep
        .picker
        .pick(d, &name, "theirs", max, |cand| entries.contains_key(cand));
    let Some(beside) = beside else {
        built.insert(d, dir);
        return Ok(ino);
    };
    entries.insert(
        beside.clone(),
        Entry {
            ino,
            kind: FileType::File,
        },
    );
    built.insert(d, dir);
    let mut copy = t.clone();
    copy.forget_hash();
    copy.links = vec![(d, beside.clone())].into();
    copy.nlink = 1;
    add(counters, &copy)?;
    counters.charged += entry_charge(&beside);
    built.insert(ino, copy);
    if let Some(p) = keep
        .content
        .get(&m)
        .and_then(|&i| names.conflicts.get_mut(i))
    {
        p.settled = Settled::Beside(d, beside);
    }
    Ok(ino + 1)
}

/// Forgets the memoized hash of every ancestor of the `changed` inodes
/// (their own are forgotten already), so invariant 6 holds again, on
/// copies the merged tree owns alone.
fn forget_hashes_up(map: &mut InodeMap, changed: &[Ino]) {
    let mut done: HashSet<Ino> = changed.iter().copied().collect();
    let mut work: Vec<Ino> = changed.to_vec();
    while let Some(i) = work.pop() {
        let parents: Vec<Ino> = match map.get(&i) {
            Some(x) => x.links.iter().map(|(p, _)| *p).collect(),
            None => continue,
        };
        for p in parents {
            if !done.insert(p) {
                continue;
            }
            // Copied even without a memo: hashing the merged tree later
            // memoizes its ancestors, and an inode shared with ours would
            // then carry, in ours, a memo over children ours does not
            // have (the reason `Tree::inode_mut` copies too).
            if let Some(arc) = map.get_mut(&p) {
                SharedInode::make_mut(arc).forget_hash();
            }
            work.push(p);
        }
    }
}
