//! Compact, fuzzer-friendly operations that expand into the model's `Op`s.
//! Paths come from a small alphabet so sequences collide on names often.

use arbitrary::Arbitrary;

use crate::model::Op;

#[derive(Arbitrary, Debug)]
pub struct P(Vec<u8>);

impl P {
    fn path(&self, dots: bool) -> String {
        const PARTS: [&str; 5] = ["a", "b", "c", "..", "."];
        let n = if dots { 5 } else { 3 };
        let comps: Vec<&str> = self.0.iter().take(4).map(|b| PARTS[*b as usize % n]).collect();
        if comps.is_empty() { "/a".into() } else { format!("/{}", comps.join("/")) }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Data {
    Bytes(Vec<u8>),
    Fill(u8, u16),
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::Bytes(b) => b.iter().take(64).copied().collect(),
            Data::Fill(b, n) => vec![*b; *n as usize * 4],
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum FOp {
    Mkdir(P),
    Rmdir(P),
    Unlink(P),
    WriteFile(P, Data),
    WriteAt(P, u32, Data),
    Truncate(P, u32),
    Read(P),
    Symlink(P, bool, P),
    Link(P, P),
    Rename(P, P),
    Snapshot,
    Fork(u8),
}

impl FOp {
    /// The model operation; `dots` allows `.`/`..` components and absolute
    /// symlink targets (the OS comparison runs without them).
    pub fn to_op(&self, dots: bool) -> Op {
        match self {
            FOp::Mkdir(p) => Op::Mkdir(p.path(dots)),
            FOp::Rmdir(p) => Op::Rmdir(p.path(dots)),
            FOp::Unlink(p) => Op::Unlink(p.path(dots)),
            FOp::WriteFile(p, d) => Op::WriteFile(p.path(dots), d.bytes()),
            FOp::WriteAt(p, off, d) => Op::WriteAt(p.path(dots), (*off % 300_000) as u64, d.bytes()),
            FOp::Truncate(p, len) => Op::Truncate(p.path(dots), (*len % 300_000) as u64),
            FOp::Read(p) => Op::Read(p.path(dots)),
            FOp::Symlink(t, abs, p) => {
                let t = t.path(dots);
                let t = if *abs && dots { t } else { t[1..].to_string() };
                Op::Symlink(t, p.path(dots))
            }
            FOp::Link(a, b) => Op::Link(a.path(dots), b.path(dots)),
            FOp::Rename(a, b) => Op::Rename(a.path(dots), b.path(dots)),
            FOp::Snapshot => Op::Snapshot,
            FOp::Fork(n) => Op::Fork(*n as usize),
        }
    }
}
