//! What a snapshot saved by a run is charged against the snapshot memory
//! budget: the memory it really adds to what the server already holds,
//! bounded from above, never a proxy that may fall short of it.
//!
//! A run's fork shares everything with its base but what the run changed,
//! and the engine finds those changes by pointer: the inodes of the new
//! tree that are not the base's shared inodes (`Tree::inode_changes`, whose
//! cost follows the change). Freezing the fork keeps alive, beyond the
//! base:
//! - the file data no base file shares: the fork's private chunks, at
//!   their allocation size plus per-chunk overhead
//!   ([`crate::Usage::private_bytes`], which the engine keeps exact);
//! - each new or copied inode (the engine's own measured bound,
//!   `INODE_CHARGE`), and the inode-trie nodes on the path to it (or to
//!   a removed one), at the trie's depth for the tree's largest inode
//!   number (numbers are never reused, so all are below `next_ino`);
//! - for a directory whose entry map was copied, the map's nodes on the
//!   paths the fork's entry edits took (its depth for its size, per edit,
//!   counting edits undone later: `Tree::map_edits`), at most the whole
//!   map;
//! - each name an inode has that it did not have in the base
//!   (`entry_charge`): all of a new inode's, and those a hard link or a
//!   rename gave a base inode (a long name made anew counts, though it
//!   reads the same); and the list of names of an inode with more than
//!   one, which a copy copies whole;
//! - the registry's own entry and the tree handle, which the registry
//!   adds to every snapshot (`snapshots::ENTRY_COST`).
//!
//! A snapshot registered whole (a checkpoint upload, a store tree) is
//! charged its tree's charge ([`crate::Usage::charged_bytes`]) less what
//! that counts twice: a chunk whose bytes another chunk of the tree
//! already holds (a checkpoint or store load makes one buffer per distinct
//! chunk; a file copied in a sandbox shares its chunks) is charged only
//! its own small record ([`held_cost`]).
//!
//! Each term is an upper bound: every change pays for the whole trie path
//! and the whole map path though changes side by side share theirs, and a
//! map node is counted full. So a snapshot that changes one small file is
//! charged a few times what it holds, and one that writes much about its
//! data.

use std::collections::HashSet;
use std::sync::Arc;

use crate::tree::{INODE_CHARGE, Ino, Inode, InodeChange, Name, Node, entry_charge};
use crate::{Snapshot, Usage};

/// One inode-trie node: 32 pointer slots and its key range, behind an
/// `Arc`, rounded up to the allocator's size class.
const TRIE_NODE: u64 = 320;

/// Key bits each trie level takes.
const TRIE_BITS: u32 = 5;

/// One node of a directory's entry map (a persistent B-tree of up to 16
/// `(name, entry)` pairs of 32 bytes, or 16 keys and 17 children), behind
/// an `Arc`, rounded up.
const DIR_NODE: u64 = 640;

/// Entries or children a map node below the root holds at the least:
/// imbl lets a leaf shrink to a third of its 16 before it rebalances, and
/// this bound takes that for branches too.
const DIR_MIN_FANOUT: u64 = 5;

/// Nodes on the trie's path to any key below `next_ino`.
fn trie_depth(next_ino: u64) -> u64 {
    let bits = u64::BITS - next_ino.saturating_sub(1).leading_zeros();
    u64::from(bits.div_ceil(TRIE_BITS).max(1))
}

/// Nodes on a path of a directory map of `len` entries, at most: a map
/// `d` levels deep has a root of two or more children and every node
/// below it at least `DIR_MIN_FANOUT`, so at least `2 * F^(d-1)` entries.
fn map_depth(len: u64) -> u64 {
    let mut depth = 1;
    let mut least = 2 * DIR_MIN_FANOUT;
    while least <= len {
        depth += 1;
        least = least.saturating_mul(DIR_MIN_FANOUT);
    }
    depth
}

/// What one new or copied inode keeps alive beyond its chunks, in a
/// fork whose trie paths take `path` bytes and which made `edits`
/// directory-entry edits.
fn inode_cost(new: &Inode, old: Option<&Inode>, path: u64, edits: u64) -> u64 {
    let mut cost = INODE_CHARGE + path;
    if let Node::Dir(map) = &new.node {
        let copied = match old.map(|o| &o.node) {
            Some(Node::Dir(before)) => !before.ptr_eq(map),
            _ => true,
        };
        if copied {
            // Each edit of an entry, even one undone later, copied at most
            // the map's path to it, a new sibling per level where a node
            // split, and a sibling it rebalanced with; no map holds more
            // nodes than its size allows.
            let len = map.len() as u64;
            let per_edit = 2 * map_depth(len) + 1;
            let paths = edits.saturating_mul(per_edit);
            let all = len.div_ceil(DIR_MIN_FANOUT).saturating_mul(2) + 1;
            cost = cost.saturating_add(paths.min(all).saturating_mul(DIR_NODE));
        }
    }
    if new.links.len() > 1 {
        // More than one name lives in a list of its own, which a copied
        // inode copies whole.
        cost = cost.saturating_add(new.links.len() as u64 * LINK_SLOT);
    }
    cost.saturating_add(new_names(new, old))
}

/// One `(directory, name)` back link in an inode's list of names.
const LINK_SLOT: u64 = std::mem::size_of::<(Ino, Name)>() as u64;

/// The charge of the names `new` holds that `old` (the same inode in the
/// base) does not share with it: all of a new inode's; for a base inode,
/// a name a hard link or a rename gave it, and a long name made anew
/// even if it reads the same (renamed away and back: its bytes are a new
/// allocation).
fn new_names(new: &Inode, old: Option<&Inode>) -> u64 {
    let old_links = old.map_or(&[][..], |o| &o.links[..]);
    let charge = |l: &(Ino, Name)| entry_charge(&l.1);
    if old_links.is_empty() {
        return new.links.iter().map(charge).fold(0, u64::saturating_add);
    }
    // Up to `MAX_LINKS` names each: compare as sets, a long name by where
    // its bytes are.
    let before: HashSet<(Ino, &str, usize)> = old_links
        .iter()
        .map(|(d, n)| (*d, &**n, n.heap_ptr()))
        .collect();
    new.links
        .iter()
        .filter(|(d, n)| !before.contains(&(*d, &**n, n.heap_ptr())))
        .map(charge)
        .fold(0, u64::saturating_add)
}

/// What `snap`, registered whole, holds: its tree's charge, each distinct
/// chunk buffer counted once. O(inodes + chunks), no loads.
pub fn held_cost(snap: &Snapshot) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut twice: u64 = 0;
    for (_, inode) in snap.tree().inodes() {
        let Node::File(content) = &inode.node else {
            continue;
        };
        for (_, chunk) in content.chunks() {
            // The buffer: a loaded or lazy blob, or bytes of its own.
            let buffer = match chunk.blob() {
                Some(blob) => Arc::as_ptr(blob) as usize,
                None if chunk.is_owned() => match chunk.bytes() {
                    Ok(b) if !b.is_empty() => b.as_ptr() as usize,
                    _ => continue,
                },
                None => continue,
            };
            if !seen.insert(buffer) {
                twice = twice.saturating_add(crate::content::alloc_len(chunk.len()) as u64);
            }
        }
    }
    snap.usage().charged_bytes.saturating_sub(twice)
}

/// The charge of `snap`, frozen from a fork of `base` whose usage at the
/// end was `usage`.
pub fn saved_cost(base: &Snapshot, snap: &Snapshot, usage: &Usage) -> u64 {
    let (old, new) = (base.tree(), snap.tree());
    let path = trie_depth(old.next_ino().max(new.next_ino())) * TRIE_NODE;
    // The fork started from `base`, so its edits are those past the
    // base's; a tree with fewer is no fork of it, and every map it copied
    // is charged whole.
    let edits = new
        .map_edits()
        .checked_sub(old.map_edits())
        .unwrap_or(u64::MAX);
    let nodes: u64 = old
        .inode_changes(new)
        .map(|c| match c {
            InodeChange::Added(_, i) => inode_cost(i, None, path, edits),
            InodeChange::Changed { old, new, .. } => inode_cost(new, Some(old), path, edits),
            InodeChange::Removed(_) => path,
        })
        .fold(0, u64::saturating_add);
    usage.private_bytes.saturating_add(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vfs;

    #[test]
    fn new_data_is_charged_in_full_and_an_unchanged_fork_nothing() {
        let mut v = Vfs::new();
        v.write_file("/a", b"base").unwrap();
        let base = v.snapshot();
        let fork = base.fork();
        assert_eq!(saved_cost(&base, &fork.snapshot(), &fork.usage()), 0);
        let mut fork = base.fork();
        fork.write_file("/big", &vec![7u8; 3 << 20]).unwrap();
        let cost = saved_cost(&base, &fork.snapshot(), &fork.usage());
        assert!(cost >= 3 << 20, "{cost}");
        assert!(cost < (3 << 20) + (64 << 10), "{cost}");
    }

    /// Names a fork gave to base inodes cost what they hold: many hard
    /// links to one base file are one changed inode, not one per name.
    #[test]
    fn links_to_a_base_file_are_charged_per_name() {
        let mut v = Vfs::new();
        v.write_file("/blob", b"base").unwrap();
        v.create_dir("/h").unwrap();
        let base = v.snapshot();
        let mut fork = base.fork();
        let long = "n".repeat(200);
        for i in 0..2_000 {
            fork.hard_link("/blob", &format!("/h/{long}{i}")).unwrap();
        }
        let snap = fork.snapshot();
        let grown = snap.usage().charged_bytes - base.usage().charged_bytes;
        let cost = saved_cost(&base, &snap, &fork.usage());
        assert!(cost >= grown, "charged {cost} for {grown} more bytes");
        // Each name's own charge, at least.
        assert!(cost >= 2_000 * (160 + 200), "{cost}");
    }

    /// A copied inode holds a copy of its list of names, and a long name
    /// renamed away and back holds new bytes though it reads the same.
    #[test]
    fn copied_name_lists_and_remade_long_names_are_charged() {
        // Later than the base, as in `undone_edits_still_count`.
        let clock = Arc::new(crate::ManualClock::new(crate::Timestamp::default()));
        let mut v = Vfs::with_clock(crate::Limits::default(), clock.clone());
        v.write_file("/blob", b"base").unwrap();
        v.create_dir("/h").unwrap();
        let long = "n".repeat(200);
        for i in 0..2_000 {
            v.hard_link("/blob", &format!("/h/{long}{i}")).unwrap();
        }
        let base = v.snapshot();
        clock.advance(60);
        let mut fork = base.fork();
        fork.set_permissions("/blob", 0o600).unwrap();
        let cost = saved_cost(&base, &fork.snapshot(), &fork.usage());
        assert!(cost >= 2_001 * LINK_SLOT, "{cost}");
        let mut fork = base.fork();
        for i in 0..2_000 {
            let name = format!("/h/{long}{i}");
            fork.rename(&name, "/h/away").unwrap();
            fork.rename("/h/away", &name).unwrap();
        }
        let cost = saved_cost(&base, &fork.snapshot(), &fork.usage());
        assert!(cost >= 2_000 * (160 + 200), "{cost}");
    }

    /// Edits undone before the snapshot still copied map nodes: renaming
    /// one base file through many names of a big base directory and back
    /// leaves one changed inode, but a map copied along every path.
    #[test]
    fn undone_edits_still_count() {
        // The fork works later than the base was made, as a run does: an
        // inode that ends equal to the base's in every field (times too)
        // is not a change at all.
        let clock = Arc::new(crate::ManualClock::new(crate::Timestamp::default()));
        let mut v = Vfs::with_clock(crate::Limits::default(), clock.clone());
        v.create_dir("/d").unwrap();
        for i in 0..4_000 {
            v.write_file(&format!("/d/f{i:05}"), b"").unwrap();
        }
        let base = v.snapshot();
        clock.advance(60);
        let mut fork = base.fork();
        let mut at = "/d/f00000".to_string();
        for i in 0..4_000 {
            let next = format!("/d/f{i:05}.x");
            fork.rename(&at, &next).unwrap();
            at = next;
        }
        fork.rename(&at, "/d/f00000").unwrap();
        let snap = fork.snapshot();
        let cost = saved_cost(&base, &snap, &fork.usage());
        // The whole map of 4,000 entries (at least 4,000 / 16 full leaves)
        // was copied.
        assert!(cost >= 4_000 / 16 * DIR_NODE, "{cost}");
    }

    #[test]
    fn a_buffer_two_files_share_is_charged_once() {
        // 16 distinct chunks (251 is prime: each chunk starts at another
        // phase).
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut v = Vfs::new();
        v.write_file("/a", &data).unwrap();
        let one = v.snapshot();
        assert_eq!(held_cost(&one), one.usage().charged_bytes);
        // A checkpoint stores the bytes once; loaded, both files share them.
        v.write_file("/b", &data).unwrap();
        let mut ckpt = Vec::new();
        v.snapshot().save_to(&mut ckpt).unwrap();
        let two = Snapshot::load_from(&ckpt[..]).unwrap();
        let charged = two.usage().charged_bytes;
        assert!(charged > 2 << 20, "the usage counts the bytes twice");
        let held = held_cost(&two);
        assert!(
            held > 1 << 20 && held < (1 << 20) + (64 << 10),
            "{held} of {charged}"
        );
    }
}
