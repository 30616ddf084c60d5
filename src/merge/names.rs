//! The namespace merge: which name in which directory names what in the
//! merged tree, and the conflicts of names, deletions and moves.
//!
//! A name is a slot `(directory, name)`. Each slot is merged three ways
//! on its entry (inode and kind): a slot only one side changed takes that
//! side's entry, a slot both changed alike keeps it, a slot both changed
//! differently conflicts. Since slots are keyed by the directory's inode
//! and entries name inodes, a rename or move on one side and an edit on
//! the other meet in the same inode wherever it went.
//!
//! Slot merges can still leave a tree that is no tree: a directory named
//! twice (moved to two places), directories moved into each other, an
//! inode one side changed left under a directory the other deleted, or a
//! deleted inode given a new name by the other side. Each round finds
//! these among the touched inodes and settles each by pinning slots to
//! the winner's entry (a pin is set once and never changes, and pins of
//! an inode the winner keeps only fill empty slots or new names), until a
//! round pins nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::error::{Error, ErrorKind, Result};
use crate::tree::{Entry, FileType, Ino, Name, ROOT};

use super::report::{Action, ConflictKind};
use super::sides::{Side, Sides, is_dir, same_node};

/// How a pending conflict was settled; paths are named at the end.
#[derive(Clone, Debug)]
pub(super) enum Settled {
    /// By the winner (or not at all, under `Fail`).
    Winner,
    /// The named side's version stands.
    Side(Side),
    /// The loser's version is at `(dir, name)` beside the winner's.
    Beside(Ino, Name),
}

/// What a conflict is about: an inode, or one slot.
#[derive(Clone, Debug)]
pub(super) enum Subject {
    Inode(Ino),
    Slot(Ino, Name),
}

/// A conflict found, before its path is known.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub subject: Subject,
    pub kind: ConflictKind,
    pub ours: Action,
    pub theirs: Action,
    pub ranges: Vec<std::ops::Range<u64>>,
    pub settled: Settled,
}

/// The state of the namespace merge.
pub(super) struct Names<'s, 'a> {
    pub sides: &'s Sides<'a>,
    /// Side that wins namespace conflicts.
    winner: Side,
    keep_both: bool,
    name_max: usize,
    pub touched: BTreeSet<Ino>,
    /// Directory -> names whose entries differ among the three trees.
    pub slots: BTreeMap<Ino, BTreeSet<Name>>,
    pins: HashMap<(Ino, Name), Option<Entry>>,
    /// Directory -> names pinned in it.
    pub pinned: BTreeMap<Ino, BTreeSet<Name>>,
    /// Inode -> pinned slots naming it.
    pin_targets: HashMap<Ino, Vec<(Ino, Name)>>,
    pub conflicts: Vec<Pending>,
    reported: HashSet<(Ino, ConflictKind)>,
    /// Inodes that lost a name conflict (reported there, not again when
    /// they are left without a name).
    lost_slot: HashSet<Ino>,
    links: HashMap<Ino, Vec<(Ino, Name)>>,
    reach: HashMap<Ino, bool>,
    /// Free names for what `KeepBoth` keeps beside.
    beside: Beside,
}

/// Picks free names for things kept beside others: `name.tag`, then
/// `name.tag.2`, `name.tag.3`, ..., the name cut (at a character
/// boundary) so that name and suffix fit `name_max`. Long names that
/// differ only at their end share a cut stem, so without a memory the
/// k-th of them would try k numbers first; the picker remembers, per
/// directory, stem and suffix length, the number after the last one it
/// found taken or gave out, which makes K picks O(K) tries in all. It
/// skips only candidates it has seen taken or given out (a name freed
/// since may so be passed over for a higher number, never given twice:
/// every pick is checked).
#[derive(Debug, Default)]
pub(super) struct Beside {
    next: HashMap<(Ino, String, usize), u32>,
}

impl Beside {
    /// A name for something beside `name` in `d` for which `taken` is
    /// false, or `None` once the numbers run out.
    pub fn pick(
        &mut self,
        d: Ino,
        name: &str,
        tag: &str,
        name_max: usize,
        taken: impl Fn(&Name) -> bool,
    ) -> Option<Name> {
        let mut i = 1u32;
        loop {
            let suffix = if i == 1 {
                format!(".{tag}")
            } else {
                format!(".{tag}.{i}")
            };
            let mut stem = name;
            while stem.len() + suffix.len() > name_max && !stem.is_empty() {
                let mut cut = stem.len() - 1;
                while !stem.is_char_boundary(cut) {
                    cut -= 1;
                }
                stem = &stem[..cut];
            }
            // Numbers 2 and up of one length share a memory per stem (a
            // stem cut for a longer number may equal another name's
            // whole); 1 has no number.
            let key = (d, format!("{stem}.{tag}"), suffix.len());
            if i > 1
                && let Some(&n) = self.next.get(&key)
                && n > i
            {
                i = n;
                continue;
            }
            let cand: Name = format!("{stem}{suffix}").into();
            let free = !taken(&cand);
            if i > 1 {
                self.next.insert(key, i.saturating_add(1));
            }
            if free {
                return Some(cand);
            }
            i = i.checked_add(1)?;
        }
    }
}

/// The names of directory `d` whose entries differ between the base and
/// a side (all of them where one has no such directory); pointer-pruned.
fn changed_names(sides: &Sides, d: Ino, out: &mut BTreeSet<Name>) {
    let base = sides.inode(Side::Base, d).and_then(|i| i.entries());
    for side in [Side::Ours, Side::Theirs] {
        let x = sides.inode(side, d).and_then(|i| i.entries());
        match (base, x) {
            (Some(a), Some(x)) => {
                for item in a.diff(x) {
                    let name = match item {
                        imbl::ordmap::DiffItem::Add(n, _)
                        | imbl::ordmap::DiffItem::Remove(n, _) => n,
                        imbl::ordmap::DiffItem::Update { new: (n, _), .. } => n,
                    };
                    out.insert(name.clone());
                }
            }
            (Some(m), None) | (None, Some(m)) => out.extend(m.keys().cloned()),
            (None, None) => {}
        }
    }
}

/// Whether any side holds `m` as a directory.
fn any_dir(sides: &Sides, m: Ino) -> bool {
    [Side::Base, Side::Ours, Side::Theirs]
        .into_iter()
        .any(|s| sides.inode(s, m).is_some_and(|i| i.kind() == FileType::Dir))
}

/// Finds what both sides created alike at one name (a directory; a file
/// or symlink with equal bytes and permissions) and makes theirs' an
/// alias of ours', so the two merge as one. Repeats for what is inside
/// such directories.
pub(super) fn find_aliases(sides: &mut Sides, touched: &BTreeSet<Ino>) {
    loop {
        let mut found = Vec::new();
        for &d in touched {
            if sides.is_alias(d) || !any_dir(sides, d) {
                continue;
            }
            let mut names = BTreeSet::new();
            changed_names(sides, d, &mut names);
            for name in names {
                let (Some(o), Some(t)) = (
                    sides.entry(Side::Ours, d, &name),
                    sides.entry(Side::Theirs, d, &name),
                ) else {
                    continue;
                };
                if o.kind != t.kind || !sides.is_ours_new(o.ino) || !sides.is_theirs_new(t.ino) {
                    continue;
                }
                let (Some(oi), Some(ti)) = (
                    sides.inode(Side::Ours, o.ino),
                    sides.inode(Side::Theirs, t.ino),
                ) else {
                    continue;
                };
                if o.kind == FileType::Dir || (oi.mode == ti.mode && same_node(oi, ti)) {
                    found.push((t.ino, o.ino));
                }
            }
        }
        if found.is_empty() {
            return;
        }
        for (t, o) in found {
            if !sides.is_alias(t) {
                sides.add_alias(t, o);
            }
        }
    }
}

impl<'s, 'a> Names<'s, 'a> {
    pub fn new(
        sides: &'s Sides<'a>,
        touched: BTreeSet<Ino>,
        winner: Side,
        keep_both: bool,
        name_max: usize,
    ) -> Names<'s, 'a> {
        let mut slots = BTreeMap::new();
        for &d in &touched {
            if sides.is_alias(d) || !any_dir(sides, d) {
                continue;
            }
            let mut names = BTreeSet::new();
            changed_names(sides, d, &mut names);
            if !names.is_empty() {
                slots.insert(d, names);
            }
        }
        Names {
            sides,
            winner,
            keep_both,
            name_max,
            touched,
            slots,
            pins: HashMap::new(),
            pinned: BTreeMap::new(),
            pin_targets: HashMap::new(),
            conflicts: Vec::new(),
            reported: HashSet::new(),
            lost_slot: HashSet::new(),
            links: HashMap::new(),
            reach: HashMap::new(),
            beside: Beside::default(),
        }
    }

    fn entries3(&self, d: Ino, name: &str) -> [Option<Entry>; 3] {
        [Side::Base, Side::Ours, Side::Theirs].map(|s| self.sides.entry(s, d, name))
    }

    /// The merged entry at slot `(d, name)`.
    pub fn value(&self, d: Ino, name: &str) -> Option<Entry> {
        if let Some(p) = self.pins.get(&(d, Name::from(name))) {
            return *p;
        }
        let [b, o, t] = self.entries3(d, name);
        if o == b {
            t
        } else if t == b || o == t {
            o
        } else if self.winner == Side::Theirs {
            t
        } else {
            o
        }
    }

    fn is_pinned(&self, d: Ino, name: &Name) -> bool {
        self.pins.contains_key(&(d, name.clone()))
    }

    fn pin(&mut self, d: Ino, name: Name, value: Option<Entry>) -> bool {
        if self.is_pinned(d, &name) {
            return false;
        }
        if let Some(e) = value {
            self.pin_targets
                .entry(e.ino)
                .or_default()
                .push((d, name.clone()));
            self.touched.insert(e.ino);
        }
        self.pinned.entry(d).or_default().insert(name.clone());
        self.pins.insert((d, name), value);
        // What the caches say may have changed.
        self.links.clear();
        self.reach.clear();
        true
    }

    fn report(&mut self, p: Pending) {
        let key = match &p.subject {
            Subject::Inode(i) => Some((*i, p.kind)),
            Subject::Slot(..) => None,
        };
        if let Some(k) = key
            && !self.reported.insert(k)
        {
            return;
        }
        self.conflicts.push(p);
    }

    /// A free name for something kept beside `name` in `d` (see
    /// [`Beside`]); `None` only once four billion are taken, more than a
    /// tree within its limits holds.
    fn beside_name(&mut self, d: Ino, name: &str, tag: &str) -> Option<Name> {
        let mut beside = std::mem::take(&mut self.beside);
        let picked = beside.pick(d, name, tag, self.name_max, |cand| {
            self.is_pinned(d, cand) || self.value(d, cand).is_some()
        });
        self.beside = beside;
        picked
    }

    fn tag(side: Side) -> &'static str {
        match side {
            Side::Theirs => "theirs",
            _ => "ours",
        }
    }

    /// Settles the slots both sides changed differently: the winner's
    /// entry; under keep-both the loser's entry also goes beside it.
    pub fn settle_slots(&mut self) {
        let all: Vec<(Ino, Name)> = self
            .slots
            .iter()
            .flat_map(|(d, ns)| ns.iter().map(move |n| (*d, n.clone())))
            .collect();
        for (d, name) in all {
            let [b, o, t] = self.entries3(d, &name);
            if o == b || t == b || o == t {
                continue;
            }
            let (win, lose) = if self.winner == Side::Theirs {
                (t, o)
            } else {
                (o, t)
            };
            self.pin(d, name.clone(), win);
            let act = |x: Option<Entry>| match (b, x) {
                (Some(_), None) => Action::Deleted,
                (None, Some(_)) => Action::Added,
                _ => Action::Modified,
            };
            let kind = if o.is_none() || t.is_none() {
                ConflictKind::DeleteModify
            } else {
                ConflictKind::Name
            };
            if let Some(e) = lose {
                self.lost_slot.insert(e.ino);
            }
            let mut settled = Settled::Winner;
            if self.keep_both
                && let Some(e) = lose
                && let Some(beside) = self.beside_name(d, &name, Self::tag(Side::Theirs))
            {
                self.pin(d, beside.clone(), Some(e));
                settled = Settled::Beside(d, beside);
            }
            self.report(Pending {
                subject: Subject::Slot(d, name),
                kind,
                ours: act(o),
                theirs: act(t),
                ranges: Vec::new(),
                settled,
            });
        }
    }

    /// The merged names of `m`.
    pub fn links_of(&mut self, m: Ino) -> Vec<(Ino, Name)> {
        if let Some(l) = self.links.get(&m) {
            return l.clone();
        }
        let l = if self.touched.contains(&m) {
            let mut cands: Vec<(Ino, Name)> = Vec::new();
            for s in [Side::Base, Side::Ours, Side::Theirs] {
                cands.extend(self.sides.links(s, m));
            }
            if let Some(p) = self.pin_targets.get(&m) {
                cands.extend(p.iter().cloned());
            }
            cands.sort();
            cands.dedup();
            cands.retain(|(d, n)| self.value(*d, n).is_some_and(|e| e.ino == m));
            cands
        } else {
            self.sides.links(Side::Ours, m)
        };
        self.links.insert(m, l.clone());
        l
    }

    /// The merged names of `m` in directories the root reaches (a name in
    /// a directory that is gone goes with it).
    pub fn live_links(&mut self, m: Ino) -> Vec<(Ino, Name)> {
        let mut l = self.links_of(m);
        l.retain(|(p, _)| self.dir_reachable(*p));
        l
    }

    fn kind_of(&self, m: Ino) -> Option<FileType> {
        [Side::Ours, Side::Theirs, Side::Base]
            .into_iter()
            .find_map(|s| self.sides.inode(s, m))
            .map(|i| i.kind())
    }

    /// Whether the root reaches directory `d` by merged names.
    fn dir_reachable(&mut self, d: Ino) -> bool {
        let mut chain = Vec::new();
        let mut on_chain = HashSet::new();
        let mut cur = d;
        let result = loop {
            if cur == ROOT {
                break true;
            }
            if let Some(&r) = self.reach.get(&cur) {
                break r;
            }
            if !on_chain.insert(cur) {
                break false;
            }
            chain.push(cur);
            match self.links_of(cur).first() {
                Some((p, _)) => cur = *p,
                None => break false,
            }
        };
        for c in chain {
            self.reach.insert(c, result);
        }
        result
    }

    /// Whether the root reaches `m` by merged names.
    pub fn reachable(&mut self, m: Ino) -> bool {
        if m == ROOT {
            return true;
        }
        match self.kind_of(m) {
            Some(FileType::Dir) => self.dir_reachable(m),
            Some(_) => {
                let parents: Vec<Ino> = self.links_of(m).iter().map(|(p, _)| *p).collect();
                parents.into_iter().any(|p| self.dir_reachable(p))
            }
            None => false,
        }
    }

    fn action(&self, side: Side, m: Ino) -> Action {
        let sides = self.sides;
        match (sides.inode(side, m), sides.inode(Side::Base, m)) {
            (None, Some(_)) => Action::Deleted,
            (None, None) => Action::Unchanged,
            (Some(_), None) => Action::Added,
            (Some(x), Some(b)) => {
                let entries_changed = match (x.entries(), b.entries()) {
                    (Some(a), Some(c)) => !a.ptr_eq(c) && a != c,
                    _ => false,
                };
                if x.mode != b.mode || !same_node(x, b) || entries_changed {
                    Action::Modified
                } else if sides.renamed(side, m) {
                    Action::Moved
                } else {
                    Action::Unchanged
                }
            }
        }
    }

    fn pending(&self, m: Ino, kind: ConflictKind, settled: Settled) -> Pending {
        Pending {
            subject: Subject::Inode(m),
            kind,
            ours: self.action(Side::Ours, m),
            theirs: self.action(Side::Theirs, m),
            ranges: Vec::new(),
            settled,
        }
    }

    /// Puts `m` back on the path `side` has it at, filling empty slots;
    /// an occupied slot is taken over if `side` is the winner (and the
    /// policy is not keep-both), else `m` goes beside it. Stops at a
    /// directory already reached. Where `m` itself went beside another
    /// name, if it did.
    fn pin_path(&mut self, side: Side, m: Ino) -> Option<(Ino, Name)> {
        let displace = side == self.winner && !self.keep_both;
        let mut beside = None;
        let mut cur = m;
        let mut steps = 0usize;
        while cur != ROOT && steps <= self.touched.len() + 64 {
            steps += 1;
            let Some(kind) = self.kind_of(cur) else {
                break;
            };
            if cur != m && self.dir_reachable(cur) {
                break;
            }
            let Some((p, n)) = self.sides.links(side, cur).into_iter().next() else {
                break;
            };
            let want = Entry { ino: cur, kind };
            let now = self.value(p, &n);
            if now != Some(want) {
                if (now.is_none() || displace) && !self.is_pinned(p, &n) {
                    self.pin(p, n, Some(want));
                } else if let Some(b) = self.beside_name(p, &n, Self::tag(side)) {
                    self.pin(p, b.clone(), Some(want));
                    if cur == m {
                        beside = Some((p, b));
                    }
                }
            }
            cur = p;
        }
        beside
    }

    /// One round of finding what is no tree and pinning it right; whether
    /// anything was pinned.
    fn round(&mut self) -> bool {
        self.links.clear();
        self.reach.clear();
        let before = self.pins.len();
        let winner = self.winner;
        let todo: Vec<Ino> = self.touched.iter().copied().collect();
        for m in todo {
            if m == ROOT || self.sides.is_alias(m) {
                continue;
            }
            let Some(kind) = self.kind_of(m) else {
                continue;
            };
            let links = self.live_links(m);
            let (in_o, in_t) = (
                self.sides.inode(Side::Ours, m).is_some(),
                self.sides.inode(Side::Theirs, m).is_some(),
            );
            if kind == FileType::Dir && links.len() > 1 {
                // Moved to two places: the winner's place.
                let pins: Vec<(Ino, Name)> = links;
                for (d, n) in pins {
                    let v = self.sides.entry(winner, d, &n);
                    self.pin(d, n, v);
                }
                let p = self.pending(m, ConflictKind::Moved, Settled::Winner);
                self.report(p);
                continue;
            }
            if !self.reachable(m) {
                match (in_o, in_t) {
                    (true, true) => {
                        // Both keep it, but the merged names lose it (moves
                        // into each other, or into a deleted directory):
                        // the winner's place.
                        self.pin_path(winner, m);
                        if self.sides.renamed(Side::Ours, m) || self.sides.renamed(Side::Theirs, m)
                        {
                            let p = self.pending(m, ConflictKind::Moved, Settled::Winner);
                            self.report(p);
                        }
                    }
                    (true, false) | (false, true) => {
                        let keeper = if in_o { Side::Ours } else { Side::Theirs };
                        if !self.sides.changed(keeper, m) {
                            continue; // deleted by one side, untouched by the other
                        }
                        if keeper != winner && !self.keep_both && self.lost_slot.contains(&m) {
                            continue; // lost a name conflict, reported there
                        }
                        let settled = if keeper == winner || self.keep_both {
                            match self.pin_path(keeper, m) {
                                Some((d, n)) => Settled::Beside(d, n),
                                None => Settled::Side(keeper),
                            }
                        } else {
                            Settled::Side(winner)
                        };
                        let p = self.pending(m, ConflictKind::DeleteModify, settled);
                        self.report(p);
                    }
                    (false, false) => {}
                }
                continue;
            }
            if !self.sides.is_new(m) && in_o != in_t {
                // Deleted by one side, given a name by the other.
                let deleter = if in_o { Side::Theirs } else { Side::Ours };
                let settled = if deleter == winner && !self.keep_both {
                    for (d, n) in links {
                        let v = self.sides.entry(deleter, d, &n);
                        self.pin(d, n, v);
                    }
                    Settled::Side(deleter)
                } else {
                    Settled::Side(if in_o { Side::Ours } else { Side::Theirs })
                };
                let p = self.pending(m, ConflictKind::DeleteModify, settled);
                self.report(p);
            }
        }
        self.links.clear();
        self.reach.clear();
        self.pins.len() != before
    }

    /// Rounds until nothing more is pinned; fails (a bug, never bad
    /// input) if that does not settle or leaves no tree.
    pub fn settle(&mut self) -> Result<()> {
        let limit = self.touched.len() * 2 + 16;
        for _ in 0..limit {
            if !self.round() {
                return self.verify();
            }
        }
        Err(Error::with(
            ErrorKind::Corrupt,
            "merge: the namespace did not settle",
        ))
    }

    /// Every touched directory that stays is named once and reached.
    fn verify(&mut self) -> Result<()> {
        let todo: Vec<Ino> = self.touched.iter().copied().collect();
        for m in todo {
            if m == ROOT || self.sides.is_alias(m) || !self.reachable(m) {
                continue;
            }
            if self.kind_of(m) == Some(FileType::Dir) && self.live_links(m).len() != 1 {
                return Err(Error::with(
                    ErrorKind::Corrupt,
                    format!("merge: directory {m} would be named twice"),
                ));
            }
        }
        Ok(())
    }

    /// The merged names in directory `d` that may differ from the tree an
    /// assembly starts it from (changed by a side or pinned).
    pub fn names_in(&self, d: Ino) -> Vec<Name> {
        let mut out: BTreeSet<Name> = self.slots.get(&d).cloned().unwrap_or_default();
        if let Some(p) = self.pinned.get(&d) {
            out.extend(p.iter().cloned());
        }
        out.into_iter().collect()
    }
}

/// Whether a merged entry names a directory (for `nlink`).
pub(super) fn counts_as_subdir(e: Option<Entry>) -> i64 {
    i64::from(e.as_ref().is_some_and(is_dir))
}

#[cfg(test)]
mod beside_tests {
    use std::cell::Cell;
    use std::collections::HashSet;

    use super::Beside;
    use crate::tree::Name;

    /// 2,000 long names that differ only in their last bytes share one
    /// cut stem: each gets a free name of its own, within the limit, and
    /// all of them together cost a number of tries linear in 2,000.
    #[test]
    fn names_sharing_a_stem_take_linear_tries() {
        let max = 255;
        let mut b = Beside::default();
        let mut taken: HashSet<Name> = HashSet::new();
        let tries = Cell::new(0u64);
        for k in 0..2_000 {
            let name = format!("{}{k:07}", "a".repeat(248));
            let got = b
                .pick(7, &name, "theirs", max, |c| {
                    tries.set(tries.get() + 1);
                    taken.contains(c)
                })
                .unwrap();
            assert!(got.len() <= max, "{}", got.len());
            assert!(got.contains(".theirs"), "{got}");
            assert!(taken.insert(got), "a name given twice");
        }
        assert!(tries.get() <= 3 * 2_000, "{} tries", tries.get());
    }

    /// Short names get `name.tag` first and numbers after, per directory.
    #[test]
    fn short_names_count_up_per_directory() {
        let mut b = Beside::default();
        let mut taken: HashSet<(u64, Name)> = HashSet::new();
        let mut pick = |d: u64, b: &mut Beside| {
            let n = b
                .pick(d, "x", "theirs", 255, |c| taken.contains(&(d, c.clone())))
                .unwrap();
            taken.insert((d, n.clone()));
            n.to_string()
        };
        assert_eq!(pick(1, &mut b), "x.theirs");
        assert_eq!(pick(1, &mut b), "x.theirs.2");
        assert_eq!(pick(2, &mut b), "x.theirs");
        assert_eq!(pick(1, &mut b), "x.theirs.3");
        assert_eq!(pick(2, &mut b), "x.theirs.2");
    }
}
