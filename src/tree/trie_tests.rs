//! Tests of `InoTrie`: unit cases for the shape rules, and a property test
//! against a `BTreeMap` model with forks that must never see each other's
//! changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// Every node reachable from `t`, with checks of the shape rules: each
/// node's keys lie in its range, every branch has at least two children
/// and every node at least one slot filled, `bits` matches the slots, and
/// children sit strictly below their parent.
fn check_shape<V>(t: &InoTrie<V>) -> usize {
    fn walk<V>(n: &Node<V>, count: &mut usize, nodes: &mut usize) {
        *nodes += 1;
        assert_eq!(n.mask, range_mask(n.shift));
        assert_eq!(n.start & !n.mask, 0, "start below the node's range");
        assert_ne!(n.bits, 0, "empty node");
        match &n.slots {
            Slots::Leaf(vals) => {
                assert_eq!(n.shift, 0);
                for (i, v) in vals.iter().enumerate() {
                    assert_eq!(v.is_some(), n.bits & (1 << i) != 0);
                    *count += usize::from(v.is_some());
                }
            }
            Slots::Branch(kids) => {
                assert!(n.shift > 0 && n.shift.is_multiple_of(BITS));
                assert!(n.bits.count_ones() >= 2, "branch with one child");
                for (i, k) in kids.iter().enumerate() {
                    assert_eq!(k.is_some(), n.bits & (1 << i) != 0);
                    if let Some(k) = k {
                        assert!(k.shift < n.shift);
                        assert!(n.holds(k.start));
                        assert_eq!(slot_of(k.start, n.shift), i);
                        walk(k, count, nodes);
                    }
                }
            }
        }
    }
    let (mut count, mut nodes) = (0, 0);
    if let Some(r) = &t.root {
        walk(r, &mut count, &mut nodes);
    }
    assert_eq!(count, t.len(), "len out of step");
    nodes
}

fn same<V: PartialEq + std::fmt::Debug>(t: &InoTrie<V>, m: &BTreeMap<u64, V>) {
    assert_eq!(t.len(), m.len());
    assert!(t.iter().eq(m.iter().map(|(k, v)| (*k, v))));
    for (k, v) in m {
        assert_eq!(t.get(k), Some(v));
    }
}

/// The diff from `old` to `new` as the model says it should be.
fn model_diff(old: &BTreeMap<u64, u32>, new: &BTreeMap<u64, u32>) -> Vec<(u64, char, u32, u32)> {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<u64> = old.keys().chain(new.keys()).copied().collect();
    for k in keys {
        match (old.get(&k), new.get(&k)) {
            (Some(a), Some(b)) if a != b => out.push((k, 'c', *a, *b)),
            (Some(a), None) => out.push((k, 'r', *a, 0)),
            (None, Some(b)) => out.push((k, 'a', 0, *b)),
            _ => {}
        }
    }
    out
}

fn trie_diff(old: &InoTrie<u32>, new: &InoTrie<u32>) -> Vec<(u64, char, u32, u32)> {
    let mut out = Vec::new();
    old.diff(new, &mut |d| {
        out.push(match d {
            Diff::Changed { key, old, new } => (key, 'c', *old, *new),
            Diff::Removed(k, v) => (k, 'r', *v, 0),
            Diff::Added(k, v) => (k, 'a', 0, *v),
        })
    });
    out
}

#[test]
fn empty() {
    let t: InoTrie<u32> = InoTrie::new();
    assert!(t.len() == 0 && t.get(&0).is_none() && t.iter().next().is_none());
    assert!(t.ptr_eq(&t.clone()));
    assert!(trie_diff(&t, &t).is_empty());
}

#[test]
fn dense_keys_make_a_full_trie() {
    let mut t = InoTrie::new();
    for k in 1..=100_000u64 {
        assert_eq!(t.insert(k, k as u32), None);
    }
    // 3,126 leaves (keys 1..=100,000 span leaf 0 to leaf 3,125), their
    // 98 branches, 4 above those and the root.
    assert_eq!(check_shape(&t), 3_126 + 98 + 4 + 1);
    assert_eq!(t.get(&0), None);
    assert_eq!(t.get(&77_777), Some(&77_777));
    assert_eq!(t.get(&100_001), None);
    assert!(t.iter().map(|(k, _)| k).eq(1..=100_000));
    assert_eq!(t.insert(5, 9), Some(5));
    assert_eq!(t.remove(&5), Some(9));
    assert_eq!(t.remove(&5), None);
    assert_eq!(t.len(), 99_999);
}

#[test]
fn extreme_keys() {
    let mut t = InoTrie::new();
    for k in [u64::MAX, 0, 1 << 63, (1 << 63) - 1, 31, 32, u64::MAX - 31] {
        assert_eq!(t.insert(k, k), None);
        check_shape(&t);
    }
    let keys: Vec<u64> = t.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [0, 31, 32, (1 << 63) - 1, 1 << 63, u64::MAX - 31, u64::MAX]
    );
    for k in keys {
        assert_eq!(t.get(&k), Some(&k));
        assert_eq!(t.remove(&k), Some(k));
        check_shape(&t);
    }
    assert!(t.root.is_none() && t.len() == 0);
}

#[test]
fn sparse_keys_cost_at_most_two_nodes_each() {
    let mut t = InoTrie::new();
    let mut k = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2_000 {
        k = k.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        t.insert(k, ());
    }
    assert!(check_shape(&t) < 2 * t.len());
}

#[test]
fn a_fork_copies_only_its_path() {
    let mut a = InoTrie::new();
    for k in 0..10_000u64 {
        a.insert(k, Arc::new(k));
    }
    let b = a.clone();
    assert!(a.ptr_eq(&b));
    *Arc::make_mut(a.get_mut(&4_321).unwrap()) += 1;
    assert!(!a.ptr_eq(&b));
    assert_eq!(**b.get(&4_321).unwrap(), 4_321, "the fork saw the change");
    assert_eq!(**a.get(&4_321).unwrap(), 4_322);
    // A value next to the changed one is shared by both, through copied
    // leaves: the copy bumped its count.
    assert_eq!(Arc::strong_count(a.get(&4_320).unwrap()), 2);
    // Far away, nothing was copied: the value is held once.
    assert_eq!(Arc::strong_count(a.get(&9).unwrap()), 1);
    // A second change in the same leaf copies nothing more.
    let before = Arc::strong_count(a.get(&4_322).unwrap());
    a.get_mut(&4_322);
    assert_eq!(Arc::strong_count(a.get(&4_322).unwrap()), before);
    // Missing keys copy nothing.
    let c = a.clone();
    assert!(a.get_mut(&50_000).is_none() && a.remove(&50_000).is_none());
    assert!(a.ptr_eq(&c));
}

#[test]
fn diff_follows_the_change() {
    let mut a = InoTrie::new();
    for k in 0..50_000u64 {
        a.insert(k, k as u32);
    }
    let mut b = a.clone();
    b.insert(17, 1);
    b.remove(&40_000);
    b.insert(1 << 40, 7);
    let mut seen = 0;
    a.diff(&b, &mut |_| seen += 1);
    assert_eq!(seen, 3);
    assert_eq!(
        trie_diff(&a, &b),
        [
            (17, 'c', 17, 1),
            (40_000, 'r', 40_000, 0),
            (1 << 40, 'a', 0, 7)
        ]
    );
    assert_eq!(
        trie_diff(&b, &a),
        [
            (17, 'c', 1, 17),
            (40_000, 'a', 0, 40_000),
            (1 << 40, 'r', 7, 0)
        ]
    );
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u64, u32),
    Remove(u64),
    /// `remove_found`, which must be exact for a missing key too.
    RemoveFound(u64),
    Bump(u64),
    Fork,
    /// Go back to working on fork `n` (modulo the number of forks).
    Switch(usize),
}

fn key() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..200,
        1 => 0u64..5_000,
        1 => any::<u64>(),
        1 => (0u32..64).prop_map(|b| 1u64 << b),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        3 => key().prop_map(Op::Remove),
        2 => key().prop_map(Op::RemoveFound),
        2 => key().prop_map(Op::Bump),
        1 => Just(Op::Fork),
        1 => any::<usize>().prop_map(Op::Switch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_a_btreemap_with_forks(ops in prop::collection::vec(op(), 1..300)) {
        let mut t: InoTrie<u32> = InoTrie::new();
        let mut m: BTreeMap<u64, u32> = BTreeMap::new();
        // Every fork taken, with the model of what it must still hold.
        let mut forks: Vec<(InoTrie<u32>, BTreeMap<u64, u32>)> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(t.insert(k, v), m.insert(k, v)),
                Op::Remove(k) => prop_assert_eq!(t.remove(&k), m.remove(&k)),
                Op::RemoveFound(k) => prop_assert_eq!(t.remove_found(k), m.remove(&k)),
                Op::Bump(k) => {
                    let got = t.get_mut(&k).map(|v| { *v = v.wrapping_add(1); *v });
                    let want = m.get_mut(&k).map(|v| { *v = v.wrapping_add(1); *v });
                    prop_assert_eq!(got, want);
                }
                Op::Fork => forks.push((t.clone(), m.clone())),
                Op::Switch(n) if !forks.is_empty() => {
                    let n = n % forks.len();
                    let (ft, fm) = forks[n].clone();
                    forks.push((std::mem::replace(&mut t, ft), std::mem::replace(&mut m, fm)));
                }
                Op::Switch(_) => {}
            }
            check_shape(&t);
            same(&t, &m);
        }
        for (ft, fm) in &forks {
            check_shape(ft);
            same(ft, fm);
            prop_assert_eq!(trie_diff(ft, &t), model_diff(fm, &m));
            prop_assert_eq!(trie_diff(&t, ft), model_diff(&m, fm));
        }
        // A trie equal in content but built apart diffs to nothing too.
        let rebuilt: InoTrie<u32> = m.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert!(trie_diff(&t, &rebuilt).is_empty());
        prop_assert_eq!(check_shape(&rebuilt), check_shape(&t));
    }
}
