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
//!   paths to its entries (its depth for its size), and for each new
//!   inode its names (`entry_charge`);
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

use std::sync::Arc;

use crate::tree::{INODE_CHARGE, InodeChange, Node, entry_charge};
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

/// Entries a map node below the root holds at the least (half full).
const DIR_MIN_FANOUT: u64 = 8;

/// Nodes on the trie's path to any key below `next_ino`.
fn trie_depth(next_ino: u64) -> u64 {
    let bits = u64::BITS - next_ino.saturating_sub(1).leading_zeros();
    u64::from(bits.div_ceil(TRIE_BITS).max(1))
}

/// Nodes on a path of a directory map of `len` entries.
fn map_depth(len: u64) -> u64 {
    let mut depth = 1;
    let mut reach = 2 * DIR_MIN_FANOUT;
    while reach < len {
        depth += 1;
        reach = reach.saturating_mul(DIR_MIN_FANOUT);
    }
    depth
}

/// What one new or copied inode keeps alive beyond its chunks, in a
/// change of `changes` inodes with trie paths of `path` bytes.
fn inode_cost(
    new: &crate::tree::Inode,
    old: Option<&crate::tree::Inode>,
    path: u64,
    changes: u64,
) -> u64 {
    let mut cost = INODE_CHARGE + path;
    if let Node::Dir(map) = &new.node {
        let copied = match old.map(|o| &o.node) {
            Some(Node::Dir(before)) => !before.ptr_eq(map),
            _ => true,
        };
        if copied {
            // Every entry added, removed or renamed changes an inode, and
            // one inode change is at most two entry changes (a rename); each
            // copies the map's path to it, and no change copies more nodes
            // than the map has.
            let len = map.len() as u64;
            let paths = changes.saturating_mul(2).saturating_mul(map_depth(len));
            let all = len.div_ceil(DIR_MIN_FANOUT).saturating_mul(2) + 1;
            cost = cost.saturating_add(paths.min(all).saturating_mul(DIR_NODE));
        }
    }
    if old.is_none() {
        cost += new.links.iter().map(|(_, n)| entry_charge(n)).sum::<u64>();
    }
    cost
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
    let changes: Vec<InodeChange<'_>> = old.inode_changes(new).collect();
    let n = changes.len() as u64;
    let nodes: u64 = changes
        .into_iter()
        .map(|c| match c {
            InodeChange::Added(_, i) => inode_cost(i, None, path, n),
            InodeChange::Changed { old, new, .. } => inode_cost(new, Some(old), path, n),
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
