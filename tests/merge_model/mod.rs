//! The merge oracle, shared by `tests/merge.rs` (a proptest) and the
//! `merge` fuzz target: a random base, two forks running their own
//! operation sequences, and what every merge of them must satisfy.
//!
//! - Every policy merges without error into a tree that passes the
//!   invariants; `Fail` makes a tree exactly when nothing conflicts.
//! - When the two sides touched disjoint objects (by inode: what sits at
//!   each changed path before and after, and its parent directory), the
//!   merge is clean and equals (by root hash) the tree made by running
//!   one side's successful operations after the other's, in either order.
//! - Otherwise no change outside a conflict is lost: an object one side
//!   changed (bytes, permissions, target) or deleted, which the other side
//!   left alone (same payload, same names), is in the merged tree as that
//!   side left it, unless a reported conflict's path is one of its paths
//!   or above or below one.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use cowvfs::{ConflictPolicy, FileType, MergeOptions, OpenOptions, Snapshot, Vfs};

/// Offsets, permissions and lengths the operations draw from.
pub const OFFSETS: [u64; 4] = [0, 3, 65_530, 131_072];
pub const MODES: [u32; 3] = [0o600, 0o644, 0o755];
pub const LENS: [u64; 3] = [0, 10, 70_000];

/// One operation on paths over a small alphabet.
#[derive(Clone, Debug)]
pub enum Op {
    Write(String, u64, Vec<u8>),
    Mkdir(String),
    Remove(String),
    Rename(String, String),
    Link(String, String),
    Symlink(String, String),
    Chmod(String, u32),
    Truncate(String, u64),
}

/// Runs `op`; whether it succeeded (a failure changes nothing).
pub fn apply(v: &mut Vfs, op: &Op) -> bool {
    let r = match op {
        Op::Write(p, off, d) => v
            .open(p, OpenOptions::new().write(true).create(true))
            .and_then(|fd| {
                let r = v.write_at(fd, d, *off).map(|_| ());
                v.close(fd).and(r)
            }),
        Op::Mkdir(p) => v.create_dir(p),
        Op::Remove(p) => v.remove_file(p).or_else(|_| v.remove_dir(p)),
        Op::Rename(a, b) => v.rename(a, b),
        Op::Link(a, b) => v.hard_link(a, b),
        Op::Symlink(t, p) => v.symlink(t, p),
        Op::Chmod(p, m) => v.set_permissions(p, *m),
        Op::Truncate(p, l) => v.truncate(p, *l),
    };
    r.is_ok()
}

/// What a reader sees of one object: kind, permissions, bytes or target.
pub type Payload = (FileType, u32, Vec<u8>);

/// Every object by inode number: its payload and its paths.
pub fn objects(s: &Snapshot) -> Result<BTreeMap<u64, (Payload, Vec<String>)>, String> {
    let mut out: BTreeMap<u64, (Payload, Vec<String>)> = BTreeMap::new();
    let mut work = vec!["/".to_string()];
    let e = |e: cowvfs::Error| e.to_string();
    while let Some(dir) = work.pop() {
        for ent in s.read_dir(&dir).map_err(e)? {
            let p = if dir == "/" {
                format!("/{}", ent.name)
            } else {
                format!("{dir}/{}", ent.name)
            };
            let md = s.symlink_metadata(&p).map_err(e)?;
            let bytes = match ent.kind {
                FileType::File => s.read_file(&p).map_err(e)?,
                FileType::Symlink => s.read_link(&p).map_err(e)?.into_bytes(),
                FileType::Dir => {
                    work.push(p.clone());
                    Vec::new()
                }
            };
            out.entry(ent.ino)
                .or_insert_with(|| ((ent.kind, md.mode, bytes), Vec::new()))
                .1
                .push(p);
        }
    }
    Ok(out)
}

/// The objects a side touched: what sits at each changed path before and
/// after, and the parent directory of the path in both.
pub fn touched(base: &Snapshot, side: &Snapshot) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for c in base.diff(side) {
        let p = c.path();
        let parent = match p.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &p[..i],
        };
        for s in [base, side] {
            for q in [p, parent] {
                if let Ok(md) = s.symlink_metadata(q) {
                    out.insert(md.ino);
                }
            }
        }
    }
    out
}

/// A fork of `from` after the operations of `ops` that succeed, and those.
fn run(from: &Snapshot, ops: &[Op]) -> Result<(Vfs, Vec<Op>), String> {
    let mut v = from.fork();
    let done = ops.iter().filter(|op| apply(&mut v, op)).cloned().collect();
    v.check_invariants().map_err(|e| e.to_string())?;
    Ok((v, done))
}

/// The paths operations named (not symlink targets, which are only text).
fn op_paths(ops: &[Op]) -> Vec<&str> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Write(p, ..)
            | Op::Mkdir(p)
            | Op::Remove(p)
            | Op::Symlink(_, p)
            | Op::Chmod(p, _)
            | Op::Truncate(p, _) => out.push(p.as_str()),
            Op::Rename(a, b) | Op::Link(a, b) => {
                out.push(a.as_str());
                out.push(b.as_str());
            }
        }
    }
    out
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// Checks every claim above for one case; the first broken one.
pub fn check(base_ops: &[Op], ours_ops: &[Op], theirs_ops: &[Op]) -> Result<(), String> {
    let (b, _) = run(&Vfs::new().snapshot(), base_ops)?;
    let base = b.snapshot();
    let (o, o_done) = run(&base, ours_ops)?;
    let (t, t_done) = run(&base, theirs_ops)?;
    let (os, ts) = (o.snapshot(), t.snapshot());
    let policies = [
        ConflictPolicy::Fail,
        ConflictPolicy::Ours,
        ConflictPolicy::Theirs,
        ConflictPolicy::KeepBoth,
    ];
    let (ob, oo, ot) = (objects(&base)?, objects(&os)?, objects(&ts)?);
    // Disjoint by inode, and by the paths the operations named (a file
    // made and removed again on one side leaves no inode to compare, but
    // replaying it on the other side would remove theirs).
    // A path through a symlink names its target too, and the target's
    // target: a write through `/b -> /a -> /c` names `/c`.
    let expand = |ps: Vec<&str>| {
        let mut out: Vec<String> = Vec::new();
        let mut work: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
        while let Some(p) = work.pop() {
            if out.contains(&p) || out.len() > 256 {
                continue;
            }
            for (i, _) in p.match_indices('/').skip(1).chain([(p.len(), "")]) {
                let (q, rest) = p.split_at(i);
                for s in [&base, &o.snapshot(), &t.snapshot()] {
                    if let Ok(target) = s.read_link(q) {
                        work.push(format!("{target}{rest}"));
                    }
                }
            }
            out.push(p);
        }
        out
    };
    let (po, pt) = (expand(op_paths(&o_done)), expand(op_paths(&t_done)));
    let disjoint = touched(&base, &os).is_disjoint(&touched(&base, &ts))
        && !po.iter().any(|a| pt.iter().any(|b| related(a, b)));
    for p in policies {
        let m = Snapshot::merge(&base, &os, &ts, &MergeOptions::new().policy(p))
            .map_err(|e| format!("{p:?}: merge failed: {e}"))?;
        if (m.snapshot().is_none()) != (p == ConflictPolicy::Fail && !m.is_clean()) {
            return Err(format!("{p:?}: tree present {}", m.snapshot().is_some()));
        }
        let Some(s) = m.snapshot() else { continue };
        s.check_invariants()
            .map_err(|e| format!("{p:?}: invariants: {e}"))?;
        if disjoint {
            if !m.is_clean() {
                return Err(format!("disjoint changes conflicted: {:?}", m.conflicts()));
            }
            let (ot_tree, _) = run(&os, &t_done)?;
            let (to_tree, _) = run(&ts, &o_done)?;
            if s.root_hash() != ot_tree.root_hash() {
                return Err("merge differs from ours then theirs".into());
            }
            if s.root_hash() != to_tree.root_hash() {
                return Err("merge differs from theirs then ours".into());
            }
        }
        let om = objects(s)?;
        for (ino, (p0, paths0)) in &ob {
            for (mine, other) in [(&oo, &ot), (&ot, &oo)] {
                let untouched = other
                    .get(ino)
                    .is_some_and(|(py, ly)| py == p0 && ly == paths0);
                if !untouched {
                    continue;
                }
                let x = mine.get(ino);
                let mut paths: Vec<&String> = paths0.iter().collect();
                if let Some((_, l)) = x {
                    paths.extend(l);
                }
                if let Some((_, l)) = om.get(ino) {
                    paths.extend(l);
                }
                let conflicted = m
                    .conflicts()
                    .iter()
                    .any(|c| paths.iter().any(|q| related(c.path(), q)));
                if conflicted {
                    continue;
                }
                match x {
                    Some((px, _)) => {
                        if om.get(ino).map(|(pm, _)| pm) != Some(px) {
                            return Err(format!(
                                "{p:?}: object {ino} at {paths:?} lost a change; conflicts {:?}",
                                m.conflicts()
                            ));
                        }
                    }
                    None => {
                        if om.contains_key(ino) {
                            return Err(format!(
                                "{p:?}: object {ino} deleted by one side survived"
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
