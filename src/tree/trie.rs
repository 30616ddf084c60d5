//! `InoTrie`: the persistent map from inode number to inode that a `Tree`
//! keeps its inodes in.
//!
//! A radix trie over the key's bits, five at a time: every node has 32
//! slots, a leaf holds values and a branch holds child nodes, each behind
//! an `Arc`. Cloning the trie clones one `Arc` (O(1)); a change copies, with
//! `Arc::make_mut` (`triomphe`'s, a load where `std`'s is a compare-exchange),
//! only the nodes on its path that another trie shares,
//! and mutates in place the ones this trie alone holds. Inode numbers are
//! small and dense, so a lookup in a tree of a million inodes reads four
//! nodes and does no comparisons beyond one mask test per node.
//!
//! Sparse keys cannot blow the trie up: a node records the key bits every
//! key below it shares (`start` under `mask`), so a chain of one-child
//! levels is skipped rather than stored. The shape is a function of the
//! key set alone: every branch has at least two children and every node at
//! least one key, so a key set of n keys costs at most 2n nodes however
//! the keys are spread over the 64-bit range.
//!
//! Iteration runs in key order. `diff` walks two tries together and skips
//! every subtree the two share by pointer, so its cost follows the change.

// `triomphe::Arc` has no weak count, so `make_mut` proves a node unshared
// with one load instead of a compare-exchange.
use triomphe::Arc;

/// Key bits per level.
const BITS: u32 = 5;
/// Slots per node.
const WIDTH: usize = 1 << BITS;

/// A persistent map from `u64` keys to `V`.
#[derive(Clone, Debug)]
pub(crate) struct InoTrie<V> {
    root: Option<Arc<Node<V>>>,
    len: usize,
}

#[derive(Clone, Debug)]
struct Node<V> {
    /// The lowest key bit this node's slot index comes from (0: a leaf).
    shift: u32,
    /// The bits above this node's index that every key below it shares:
    /// a key is in this node's range iff `key & mask == start`.
    mask: u64,
    start: u64,
    /// Which slots are filled.
    bits: u32,
    slots: Slots<V>,
}

// Clippy sizes `Leaf` for an unknown `V`; for the `Arc` values the trie
// holds both variants are 32 pointers.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Slots<V> {
    Leaf([Option<V>; WIDTH]),
    Branch([Option<Arc<Node<V>>>; WIDTH]),
}

/// How one key differs between two tries ([`InoTrie::diff`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Diff<'a, V> {
    /// Only in the newer trie.
    Added(u64, &'a V),
    /// In both, with values that differ.
    Changed { key: u64, old: &'a V, new: &'a V },
    /// Only in the older trie.
    Removed(u64, &'a V),
}

/// The mask of the key bits above a node whose index starts at `shift`.
fn range_mask(shift: u32) -> u64 {
    match 1u64.checked_shl(shift + BITS) {
        Some(span) => !(span - 1),
        None => 0,
    }
}

/// The slot `key` falls in at a node whose index starts at `shift`.
fn slot_of(key: u64, shift: u32) -> usize {
    ((key >> shift) as usize) & (WIDTH - 1)
}

impl<V> Node<V> {
    fn leaf(key: u64, value: V) -> Node<V> {
        let i = slot_of(key, 0);
        let mut vals: [Option<V>; WIDTH] = std::array::from_fn(|_| None);
        vals[i] = Some(value);
        let mask = range_mask(0);
        Node {
            shift: 0,
            mask,
            start: key & mask,
            bits: 1 << i,
            slots: Slots::Leaf(vals),
        }
    }

    /// A branch at `shift` holding exactly the two nodes `a` and `b`,
    /// which fall in different slots there.
    fn pair(shift: u32, a: Arc<Node<V>>, b: Arc<Node<V>>) -> Node<V> {
        let mask = range_mask(shift);
        let (ia, ib) = (slot_of(a.start, shift), slot_of(b.start, shift));
        let start = a.start & mask;
        let mut kids: [Option<Arc<Node<V>>>; WIDTH] = std::array::from_fn(|_| None);
        kids[ia] = Some(a);
        kids[ib] = Some(b);
        Node {
            shift,
            mask,
            start,
            bits: (1 << ia) | (1 << ib),
            slots: Slots::Branch(kids),
        }
    }

    fn holds(&self, key: u64) -> bool {
        key & self.mask == self.start
    }
}

impl<V> Default for InoTrie<V> {
    fn default() -> Self {
        InoTrie { root: None, len: 0 }
    }
}

impl<V> InoTrie<V> {
    pub(crate) fn new() -> InoTrie<V> {
        InoTrie::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether both tries are the very same structure (O(1)); two tries
    /// with equal contents built apart are not.
    pub(crate) fn ptr_eq(&self, other: &InoTrie<V>) -> bool {
        match (&self.root, &other.root) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    pub(crate) fn get(&self, key: &u64) -> Option<&V> {
        let key = *key;
        let mut node = self.root.as_deref()?;
        loop {
            if !node.holds(key) {
                return None;
            }
            let i = slot_of(key, node.shift);
            match &node.slots {
                Slots::Leaf(vals) => return vals[i].as_ref(),
                Slots::Branch(kids) => node = kids[i].as_deref()?,
            }
        }
    }

    pub(crate) fn contains_key(&self, key: &u64) -> bool {
        self.get(key).is_some()
    }

    /// Every key and value, in key order.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        Iter::over(self.root.as_deref(), self.len)
    }
}

impl<V: Clone> InoTrie<V> {
    /// The value at `key` to change in place. Copies first every node on
    /// the path that another trie shares (so a value that such a node held
    /// is shared afterwards too, with the copy). A missing key copies
    /// nothing.
    pub(crate) fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        let key = *key;
        if !self.contains_key(&key) {
            return None;
        }
        let mut node = self.root.as_mut()?;
        loop {
            let n = Arc::make_mut(node);
            let i = slot_of(key, n.shift);
            match &mut n.slots {
                Slots::Leaf(vals) => return vals[i].as_mut(),
                Slots::Branch(kids) => node = kids[i].as_mut()?,
            }
        }
    }

    /// Puts `value` at `key`, returning the value it replaces.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let old = insert_at(&mut self.root, key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Takes the value at `key` out. A missing key copies nothing.
    pub(crate) fn remove(&mut self, key: &u64) -> Option<V> {
        let key = *key;
        if !self.contains_key(&key) {
            return None;
        }
        self.remove_found(key)
    }

    /// [`InoTrie::remove`] for a key the caller has just found, without
    /// the presence check that is a second walk down the trie. Still
    /// exact for a missing key (it removes nothing), but may then copy
    /// shared nodes on the way down.
    pub(crate) fn remove_found(&mut self, key: u64) -> Option<V> {
        let old = remove_at(&mut self.root, key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

impl<V: PartialEq> InoTrie<V> {
    /// Calls `f` with each key that differs from `self` (older) to
    /// `newer`, in key order. Subtrees the two share are skipped unread.
    pub(crate) fn diff<'a>(&'a self, newer: &'a InoTrie<V>, f: &mut dyn FnMut(Diff<'a, V>)) {
        match (self.root.as_deref(), newer.root.as_deref()) {
            (Some(a), Some(b)) => diff_nodes(a, b, f),
            (Some(a), None) => each(a, &mut |k, v| f(Diff::Removed(k, v))),
            (None, Some(b)) => each(b, &mut |k, v| f(Diff::Added(k, v))),
            (None, None) => {}
        }
    }
}

fn insert_at<V: Clone>(slot: &mut Option<Arc<Node<V>>>, key: u64, value: V) -> Option<V> {
    let Some(node) = slot else {
        *slot = Some(Arc::new(Node::leaf(key, value)));
        return None;
    };
    if !node.holds(key) {
        // The key leaves this node's range: a branch goes in above it at
        // the level of the highest bit where the two differ. That bit is
        // above the node's own index bits, so the branch is above it.
        let high = 63 - (key ^ node.start).leading_zeros();
        let shift = high / BITS * BITS;
        let leaf = Arc::new(Node::leaf(key, value));
        let old = slot.take()?;
        *slot = Some(Arc::new(Node::pair(shift, old, leaf)));
        return None;
    }
    let n = Arc::make_mut(node);
    let i = slot_of(key, n.shift);
    n.bits |= 1 << i;
    match &mut n.slots {
        Slots::Leaf(vals) => vals[i].replace(value),
        Slots::Branch(kids) => insert_at(&mut kids[i], key, value),
    }
}

/// Removes `key` and restores the shape: no empty node, no branch with a
/// single child. A missing key removes nothing, but the nodes above the
/// one that proves it missing are copied if shared.
fn remove_at<V: Clone>(slot: &mut Option<Arc<Node<V>>>, key: u64) -> Option<V> {
    let node = slot.as_mut()?;
    let i = slot_of(key, node.shift);
    // A key outside this node's range would fall in some other key's slot.
    if !node.holds(key) || node.bits & (1 << i) == 0 {
        return None;
    }
    let n = Arc::make_mut(node);
    let (old, emptied) = match &mut n.slots {
        Slots::Leaf(vals) => {
            let old = vals[i].take();
            (old, true)
        }
        Slots::Branch(kids) => {
            let old = remove_at(&mut kids[i], key);
            (old, kids[i].is_none())
        }
    };
    if emptied {
        n.bits &= !(1 << i);
    }
    if n.bits == 0 {
        *slot = None;
    } else if n.bits.count_ones() == 1 {
        let only = n.bits.trailing_zeros() as usize;
        if let Slots::Branch(kids) = &mut n.slots {
            let child = kids[only].take();
            *slot = child;
        }
    }
    old
}

/// Calls `f` with every key and value under `node`, in key order.
fn each<'a, V>(node: &'a Node<V>, f: &mut dyn FnMut(u64, &'a V)) {
    for (k, v) in Iter::over(Some(node), 0) {
        f(k, v);
    }
}

fn diff_nodes<'a, V: PartialEq>(a: &'a Node<V>, b: &'a Node<V>, f: &mut dyn FnMut(Diff<'a, V>)) {
    if std::ptr::eq(a, b) {
        return;
    }
    let removed = |f: &mut dyn FnMut(Diff<'a, V>), n: &'a Node<V>| {
        each(n, &mut |k, v| f(Diff::Removed(k, v)));
    };
    let added = |f: &mut dyn FnMut(Diff<'a, V>), n: &'a Node<V>| {
        each(n, &mut |k, v| f(Diff::Added(k, v)));
    };
    if a.shift == b.shift && a.start == b.start {
        // The same range: slot by slot.
        let mut rest = a.bits | b.bits;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            match (&a.slots, &b.slots) {
                (Slots::Leaf(x), Slots::Leaf(y)) => match (&x[i], &y[i]) {
                    (Some(o), Some(n)) if o != n => f(Diff::Changed {
                        key: a.start | i as u64,
                        old: o,
                        new: n,
                    }),
                    (Some(o), None) => f(Diff::Removed(a.start | i as u64, o)),
                    (None, Some(n)) => f(Diff::Added(a.start | i as u64, n)),
                    _ => {}
                },
                (Slots::Branch(x), Slots::Branch(y)) => match (x[i].as_deref(), y[i].as_deref()) {
                    (Some(o), Some(n)) => diff_nodes(o, n, f),
                    (Some(o), None) => removed(f, o),
                    (None, Some(n)) => added(f, n),
                    (None, None) => {}
                },
                // One shift means one kind of node; not reached.
                _ => {
                    removed(f, a);
                    added(f, b);
                    return;
                }
            }
        }
    } else if a.shift > b.shift && a.holds(b.start) {
        // `b` lies inside one slot of `a`: diff it against that slot and
        // the rest of `a` is gone.
        let j = slot_of(b.start, a.shift);
        let Slots::Branch(kids) = &a.slots else {
            return;
        };
        for (i, kid) in kids.iter().enumerate() {
            match kid.as_deref() {
                Some(o) if i == j => diff_nodes(o, b, f),
                Some(o) => removed(f, o),
                None if i == j => added(f, b),
                None => {}
            }
        }
    } else if b.shift > a.shift && b.holds(a.start) {
        let j = slot_of(a.start, b.shift);
        let Slots::Branch(kids) = &b.slots else {
            return;
        };
        for (i, kid) in kids.iter().enumerate() {
            match kid.as_deref() {
                Some(n) if i == j => diff_nodes(a, n, f),
                Some(n) => added(f, n),
                None if i == j => removed(f, a),
                None => {}
            }
        }
    } else if a.start < b.start {
        // Disjoint ranges.
        removed(f, a);
        added(f, b);
    } else {
        added(f, b);
        removed(f, a);
    }
}

/// The keys and values of a trie, in key order.
pub(crate) struct Iter<'a, V> {
    /// The nodes on the way down, each with the slots not yet visited.
    stack: Vec<(&'a Node<V>, u32)>,
    left: usize,
}

impl<'a, V> Iter<'a, V> {
    fn over(root: Option<&'a Node<V>>, len: usize) -> Iter<'a, V> {
        let mut stack = Vec::new();
        if let Some(r) = root {
            // Thirteen levels cover 64 bits; fewer are ever deep in practice.
            stack.reserve(13);
            stack.push((r, r.bits));
        }
        Iter { stack, left: len }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (u64, &'a V);

    fn next(&mut self) -> Option<(u64, &'a V)> {
        loop {
            let (node, rest) = self.stack.last_mut()?;
            let node: &'a Node<V> = node;
            if *rest == 0 {
                self.stack.pop();
                continue;
            }
            let i = rest.trailing_zeros() as usize;
            *rest &= *rest - 1;
            match &node.slots {
                Slots::Leaf(vals) => {
                    if let Some(v) = &vals[i] {
                        self.left = self.left.saturating_sub(1);
                        return Some((node.start | i as u64, v));
                    }
                }
                Slots::Branch(kids) => {
                    if let Some(k) = kids[i].as_deref() {
                        self.stack.push((k, k.bits));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, None)
    }
}

impl<V: Clone> FromIterator<(u64, V)> for InoTrie<V> {
    fn from_iter<I: IntoIterator<Item = (u64, V)>>(iter: I) -> Self {
        let mut t = InoTrie::new();
        for (k, v) in iter {
            t.insert(k, v);
        }
        t
    }
}

#[cfg(test)]
#[path = "trie_tests.rs"]
mod tests;
