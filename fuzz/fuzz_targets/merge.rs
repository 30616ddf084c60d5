//! Three-way merge of two forks of an arbitrary base, each running its
//! own arbitrary operations, against the oracle the merge proptest uses
//! (`tests/merge_model`): every policy merges into a tree that passes the
//! invariants; disjoint changes merge clean into what running one side
//! after the other makes, in either order; no change outside a reported
//! conflict is lost.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/merge_model/mod.rs"]
mod model;

use model::Op;

/// A path over the alphabet `a`, `b`, `c`, at most three deep.
#[derive(Arbitrary, Debug)]
struct P(Vec<u8>);

impl P {
    fn path(&self) -> String {
        const PARTS: [&str; 3] = ["a", "b", "c"];
        let comps: Vec<&str> = self
            .0
            .iter()
            .take(3)
            .map(|b| PARTS[*b as usize % 3])
            .collect();
        if comps.is_empty() {
            "/a".into()
        } else {
            format!("/{}", comps.join("/"))
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FOp {
    Write(P, u8, Vec<u8>, u16),
    Mkdir(P),
    Remove(P),
    Rename(P, P),
    Link(P, P),
    Symlink(P, P),
    Chmod(P, u8),
    Truncate(P, u8),
}

impl FOp {
    fn op(&self) -> Op {
        let pick = |xs: &[u64], i: u8| xs[i as usize % xs.len()];
        match self {
            FOp::Write(p, off, bytes, fill) => {
                let mut d: Vec<u8> = bytes.iter().take(16).copied().collect();
                if d.is_empty() {
                    d = vec![1; 1 + (*fill as usize % 70_000)];
                }
                Op::Write(p.path(), pick(&model::OFFSETS, *off), d)
            }
            FOp::Mkdir(p) => Op::Mkdir(p.path()),
            FOp::Remove(p) => Op::Remove(p.path()),
            FOp::Rename(a, b) => Op::Rename(a.path(), b.path()),
            FOp::Link(a, b) => Op::Link(a.path(), b.path()),
            FOp::Symlink(t, p) => Op::Symlink(t.path(), p.path()),
            FOp::Chmod(p, m) => Op::Chmod(p.path(), model::MODES[*m as usize % model::MODES.len()]),
            FOp::Truncate(p, l) => Op::Truncate(p.path(), pick(&model::LENS, *l)),
        }
    }
}

fuzz_target!(|input: (Vec<FOp>, Vec<FOp>, Vec<FOp>)| {
    let (base, ours, theirs) = input;
    let ops = |v: &[FOp], n: usize| v.iter().take(n).map(FOp::op).collect::<Vec<_>>();
    if let Err(e) = model::check(
        &ops(base.as_slice(), 24),
        &ops(ours.as_slice(), 12),
        &ops(theirs.as_slice(), 12),
    ) {
        panic!("{e}");
    }
});
