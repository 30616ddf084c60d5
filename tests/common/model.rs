//! A deliberately simple model of the filesystem (a map from absolute path
//! to node) and a driver that runs operation sequences against it and the
//! engine. Shared by the proptest in `tests/model.rs` and the `vfs_ops`
//! fuzz target, which include this file.

#![allow(dead_code)]

use std::collections::BTreeMap;

use cowvfs::{ErrorKind, FileType, OpenOptions, Snapshot, Vfs};

fn check_eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: engine {got:?}\n model {want:?}"))
    }
}

// ---------------------------------------------------------------------------
// The model

#[derive(Clone, Debug, PartialEq)]
enum MNode {
    Dir,
    File(usize),
    /// A symlink: its identity (hard links share it) and its target.
    Link(usize, String),
}

#[derive(Clone, Debug, Default)]
struct Model {
    nodes: BTreeMap<String, MNode>,
    files: BTreeMap<usize, Vec<u8>>,
    next_id: usize,
}

type R<T> = Result<T, ErrorKind>;
/// What one operation returned: read bytes, or nothing, or an error.
type Outcome = R<Option<Vec<u8>>>;

fn join(dir: &[String], name: &str) -> String {
    let mut s = String::new();
    for d in dir {
        s.push('/');
        s.push_str(d);
    }
    s.push('/');
    s.push_str(name);
    s
}

fn dir_path(dir: &[String]) -> String {
    if dir.is_empty() {
        "/".into()
    } else {
        format!("/{}", dir.join("/"))
    }
}

/// Where a path leads: its parent directory and final name (if any).
struct Res {
    dir: Vec<String>,
    name: Option<String>,
}

impl Model {
    fn new() -> Model {
        let mut m = Model::default();
        m.nodes.insert("/".into(), MNode::Dir);
        m
    }

    fn get(&self, dir: &[String], name: &str) -> Option<&MNode> {
        self.nodes.get(&join(dir, name))
    }

    fn resolve(&self, path: &str, follow: bool) -> R<Res> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .rev()
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            let last = pending.is_empty();
            match c.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            if c.len() > 255 {
                return Err(ErrorKind::NameTooLong);
            }
            match self.get(&cur, &c) {
                None if last => {
                    return Ok(Res {
                        dir: cur,
                        name: Some(c),
                    });
                }
                None => return Err(ErrorKind::NotFound),
                Some(MNode::Link(_, t)) if !last || follow => {
                    hops += 1;
                    if hops > 40 {
                        return Err(ErrorKind::Loop);
                    }
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    pending.extend(
                        t.split('/')
                            .filter(|c| !c.is_empty())
                            .map(String::from)
                            .rev(),
                    );
                }
                Some(MNode::Dir) if !last => cur.push(c),
                Some(_) if !last => return Err(ErrorKind::NotADirectory),
                Some(_) => {
                    return Ok(Res {
                        dir: cur,
                        name: Some(c),
                    });
                }
            }
        }
        Ok(Res {
            dir: cur,
            name: None,
        })
    }

    fn node_at(&self, r: &Res) -> Option<(String, MNode)> {
        match &r.name {
            None => Some((dir_path(&r.dir), MNode::Dir)),
            Some(n) => self.get(&r.dir, n).map(|x| (join(&r.dir, n), x.clone())),
        }
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix) && k != "/")
    }

    fn mkdir(&mut self, path: &str) -> R<()> {
        let r = self.resolve(path, false)?;
        let Some(name) = &r.name else {
            return Err(ErrorKind::AlreadyExists);
        };
        if self.get(&r.dir, name).is_some() {
            return Err(ErrorKind::AlreadyExists);
        }
        self.nodes.insert(join(&r.dir, name), MNode::Dir);
        Ok(())
    }

    fn rmdir(&mut self, path: &str) -> R<()> {
        let r = self.resolve(path, false)?;
        let Some(name) = &r.name else {
            return Err(if r.dir.is_empty() {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let p = join(&r.dir, name);
        match self.nodes.get(&p) {
            None => Err(ErrorKind::NotFound),
            Some(MNode::Dir) if self.has_children(&p) => Err(ErrorKind::DirectoryNotEmpty),
            Some(MNode::Dir) => {
                self.nodes.remove(&p);
                Ok(())
            }
            Some(_) => Err(ErrorKind::NotADirectory),
        }
    }

    fn unlink(&mut self, path: &str) -> R<()> {
        let r = self.resolve(path, false)?;
        let Some(name) = &r.name else {
            return Err(ErrorKind::IsADirectory);
        };
        let p = join(&r.dir, name);
        match self.nodes.get(&p) {
            None => Err(ErrorKind::NotFound),
            Some(MNode::Dir) => Err(ErrorKind::IsADirectory),
            Some(_) => {
                self.nodes.remove(&p);
                self.gc();
                Ok(())
            }
        }
    }

    fn gc(&mut self) {
        let live: std::collections::BTreeSet<usize> = self
            .nodes
            .values()
            .filter_map(|n| {
                if let MNode::File(id) = n {
                    Some(*id)
                } else {
                    None
                }
            })
            .collect();
        self.files.retain(|id, _| live.contains(id));
    }

    /// Opens for writing, creating if asked; returns the file id.
    fn open_write(&mut self, path: &str, create: bool) -> R<usize> {
        let r = self.resolve(path, true)?;
        match self.node_at(&r) {
            Some((_, MNode::File(id))) => Ok(id),
            Some((_, MNode::Dir)) => Err(ErrorKind::IsADirectory),
            Some((_, MNode::Link(..))) => unreachable!("followed"),
            None if !create => Err(ErrorKind::NotFound),
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.files.insert(id, Vec::new());
                self.nodes.insert(
                    join(&r.dir, r.name.as_deref().unwrap_or_default()),
                    MNode::File(id),
                );
                Ok(id)
            }
        }
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> R<()> {
        let id = self.open_write(path, true)?;
        self.files.insert(id, data.to_vec());
        Ok(())
    }

    fn write_at(&mut self, path: &str, off: u64, data: &[u8]) -> R<()> {
        let id = self.open_write(path, false)?;
        let f = self.files.get_mut(&id).ok_or(ErrorKind::NotFound)?;
        if data.is_empty() {
            return Ok(());
        }
        let end = off as usize + data.len();
        if f.len() < end && !data.is_empty() {
            f.resize(end, 0);
        }
        f[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn truncate(&mut self, path: &str, len: u64) -> R<()> {
        let id = self.open_write(path, false)?;
        if let Some(f) = self.files.get_mut(&id) {
            f.resize(len as usize, 0);
        }
        Ok(())
    }

    fn read_file(&self, path: &str) -> R<Vec<u8>> {
        let r = self.resolve(path, true)?;
        match self.node_at(&r) {
            Some((_, MNode::File(id))) => Ok(self.files[&id].clone()),
            Some(_) => Err(ErrorKind::IsADirectory),
            None => Err(ErrorKind::NotFound),
        }
    }

    fn symlink(&mut self, target: &str, path: &str) -> R<()> {
        let r = self.resolve(path, false)?;
        let Some(name) = &r.name else {
            return Err(ErrorKind::AlreadyExists);
        };
        if self.get(&r.dir, name).is_some() {
            return Err(ErrorKind::AlreadyExists);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.nodes
            .insert(join(&r.dir, name), MNode::Link(id, target.into()));
        Ok(())
    }

    fn link(&mut self, src: &str, dst: &str) -> R<()> {
        let s = self.resolve(src, false)?;
        let Some((_, node)) = self.node_at(&s) else {
            return Err(ErrorKind::NotFound);
        };
        let d = self.resolve(dst, false)?;
        let Some(name) = &d.name else {
            return Err(ErrorKind::AlreadyExists);
        };
        if self.get(&d.dir, name).is_some() {
            return Err(ErrorKind::AlreadyExists);
        }
        if node == MNode::Dir {
            return Err(ErrorKind::NotPermitted);
        }
        self.nodes.insert(join(&d.dir, name), node);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> R<()> {
        let s = self.resolve(from, false)?;
        let d = self.resolve(to, false)?;
        let Some((sp, sn)) = self.node_at(&s) else {
            return Err(ErrorKind::NotFound);
        };
        let Some(_) = &s.name else {
            return Err(if s.dir.is_empty() {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let Some(dname) = &d.name else {
            return Err(if d.dir.is_empty() {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let dp = join(&d.dir, dname);
        let dparent = dir_path(&d.dir);
        if sn == MNode::Dir && (dparent == sp || dparent.starts_with(&format!("{sp}/"))) {
            return Err(ErrorKind::InvalidInput);
        }
        let dn = self.nodes.get(&dp).cloned();
        if dn == Some(MNode::Dir) && dp != sp && sp.starts_with(&format!("{dp}/")) {
            return Err(ErrorKind::DirectoryNotEmpty);
        }
        if let Some(dn) = dn {
            // Two names of one file or symlink: POSIX says do nothing.
            let same = match (&dn, &sn) {
                (MNode::File(a), MNode::File(b)) => a == b,
                (MNode::Link(a, _), MNode::Link(b, _)) => a == b,
                _ => false,
            };
            if dp == sp || same {
                return Ok(());
            }
            if sn == MNode::Dir {
                if dn != MNode::Dir {
                    return Err(ErrorKind::NotADirectory);
                }
                if self.has_children(&dp) {
                    return Err(ErrorKind::DirectoryNotEmpty);
                }
            } else if dn == MNode::Dir {
                return Err(ErrorKind::IsADirectory);
            }
        }
        self.nodes.remove(&dp);
        // Move the node and, for a directory, everything under it.
        let moved: Vec<(String, MNode)> = self
            .nodes
            .iter()
            .filter(|(k, _)| **k == sp || k.starts_with(&format!("{sp}/")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &moved {
            self.nodes.remove(k);
        }
        for (k, v) in moved {
            self.nodes.insert(format!("{dp}{}", &k[sp.len()..]), v);
        }
        self.gc();
        Ok(())
    }

    /// Every path with what it holds, for comparison.
    fn dump(&self) -> BTreeMap<String, String> {
        let mut nlink: BTreeMap<usize, usize> = BTreeMap::new();
        for n in self.nodes.values() {
            if let MNode::File(id) = n {
                *nlink.entry(*id).or_default() += 1;
            }
        }
        self.nodes
            .iter()
            .map(|(p, n)| {
                let v = match n {
                    MNode::Dir => "dir".to_string(),
                    MNode::File(id) => format!("file {} {:?}", nlink[id], self.files[id]),
                    MNode::Link(_, t) => format!("link {t}"),
                };
                (p.clone(), v)
            })
            .collect()
    }
}

fn dump_engine(s: &Snapshot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        out.insert(dir.clone(), "dir".to_string());
        for e in s.read_dir(&dir).expect("listable") {
            let p = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            match e.kind {
                FileType::Dir => work.push(p),
                FileType::File => {
                    let m = s.symlink_metadata(&p).expect("stat");
                    out.insert(
                        p.clone(),
                        format!("file {} {:?}", m.nlink, s.read_file(&p).expect("read")),
                    );
                }
                FileType::Symlink => {
                    out.insert(
                        p.clone(),
                        format!("link {}", s.read_link(&p).expect("readlink")),
                    );
                }
            }
        }
    }
    out
}

/// Builds a fresh engine tree from the model, in a different order than the
/// operations did, to check that equal trees hash equal.
fn rebuild(m: &Model) -> Vfs {
    let mut v = Vfs::new();
    let mut first_path: BTreeMap<usize, String> = BTreeMap::new();
    for (p, n) in m.nodes.iter().rev().filter(|(p, _)| *p != "/") {
        let _ = n;
        let parent = &p[..p.rfind('/').unwrap_or(0)];
        if !parent.is_empty() {
            v.create_dir_all(parent).unwrap();
        }
    }
    for (p, n) in m.nodes.iter() {
        match n {
            MNode::Dir if p != "/" => v.create_dir_all(p).unwrap(),
            MNode::File(id) => match first_path.get(id) {
                Some(first) => v.hard_link(first, p).unwrap(),
                None => {
                    v.write_file(p, &m.files[id]).unwrap();
                    first_path.insert(*id, p.clone());
                }
            },
            MNode::Link(id, t) => match first_path.get(id) {
                Some(first) => v.hard_link(first, p).unwrap(),
                None => {
                    v.symlink(t, p).unwrap();
                    first_path.insert(*id, p.clone());
                }
            },
            _ => {}
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Operations

/// One step of a generated sequence.
#[derive(Clone, Debug)]
pub enum Op {
    Mkdir(String),
    Rmdir(String),
    Unlink(String),
    WriteFile(String, Vec<u8>),
    WriteAt(String, u64, Vec<u8>),
    Truncate(String, u64),
    Read(String),
    Symlink(String, String),
    Link(String, String),
    Rename(String, String),
    Snapshot,
    /// Replace the working tree with a fork of snapshot `n % count`.
    Fork(usize),
}

fn engine_write_at(v: &mut Vfs, path: &str, off: u64, data: &[u8]) -> cowvfs::Result<()> {
    let fd = v.open(path, OpenOptions::new().write(true))?;
    let r = v.write_at(fd, data, off);
    v.close(fd)?;
    r.map(|_| ())
}

fn engine_truncate(v: &mut Vfs, path: &str, len: u64) -> cowvfs::Result<()> {
    let fd = v.open(path, OpenOptions::new().write(true))?;
    let r = v.set_len(fd, len);
    v.close(fd)?;
    r
}

/// Applies one operation to the engine (`Snapshot` and `Fork` do nothing
/// here; the drivers handle them).
pub fn apply_engine(v: &mut Vfs, op: &Op) -> R<Option<Vec<u8>>> {
    let r = match op {
        Op::Mkdir(p) => v.create_dir(p).map(|_| None),
        Op::Rmdir(p) => v.remove_dir(p).map(|_| None),
        Op::Unlink(p) => v.remove_file(p).map(|_| None),
        Op::WriteFile(p, d) => v.write_file(p, d).map(|_| None),
        Op::WriteAt(p, o, d) => engine_write_at(v, p, *o, d).map(|_| None),
        Op::Truncate(p, l) => engine_truncate(v, p, *l).map(|_| None),
        Op::Read(p) => v.read_file(p).map(Some),
        Op::Symlink(t, p) => v.symlink(t, p).map(|_| None),
        Op::Link(a, b) => v.hard_link(a, b).map(|_| None),
        Op::Rename(a, b) => v.rename(a, b).map(|_| None),
        Op::Snapshot | Op::Fork(_) => Ok(None),
    };
    r.map_err(|e| e.kind())
}

impl Model {
    /// Applies one operation to the model.
    pub fn apply(&mut self, op: &Op) -> R<Option<Vec<u8>>> {
        match op {
            Op::Mkdir(p) => self.mkdir(p).map(|_| None),
            Op::Rmdir(p) => self.rmdir(p).map(|_| None),
            Op::Unlink(p) => self.unlink(p).map(|_| None),
            Op::WriteFile(p, d) => self.write_file(p, d).map(|_| None),
            Op::WriteAt(p, o, d) => self.write_at(p, *o, d).map(|_| None),
            Op::Truncate(p, l) => self.truncate(p, *l).map(|_| None),
            Op::Read(p) => self.read_file(p).map(Some),
            Op::Symlink(t, p) => self.symlink(t, p).map(|_| None),
            Op::Link(a, b) => self.link(a, b).map(|_| None),
            Op::Rename(a, b) => self.rename(a, b).map(|_| None),
            Op::Snapshot | Op::Fork(_) => Ok(None),
        }
    }
}

/// Runs `ops` against the engine and the model, comparing after every step.
pub fn run(ops: Vec<Op>) -> Result<(), String> {
    let mut v = Vfs::new();
    let mut m = Model::new();
    let mut snaps: Vec<(Snapshot, Model, blake3::Hash, BTreeMap<String, String>)> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let (got, want): (Outcome, Outcome) = match &op {
            Op::Snapshot => {
                let s = v.snapshot();
                // Hash an independent rebuild, not `s`: the snapshot itself
                // is hashed only at the end, after its forks have written,
                // which is when shared memos could go wrong.
                let h = rebuild(&m).root_hash();
                let d = dump_engine(&s);
                snaps.push((s, m.clone(), h, d));
                (Ok(None), Ok(None))
            }
            Op::Fork(n) => {
                if !snaps.is_empty() {
                    let (s, sm, _, _) = &snaps[n % snaps.len()];
                    v = s.fork();
                    m = sm.clone();
                }
                (Ok(None), Ok(None))
            }
            _ => (apply_engine(&mut v, &op), m.apply(&op)),
        };
        if got != want {
            return Err(format!(
                "step {step}: {op:?}: engine {got:?}, model {want:?}"
            ));
        }
        if let Err(e) = v.check_invariants() {
            return Err(format!("step {step} {op:?}: invariant: {e}"));
        }
        let snap = v.snapshot();
        check_eq(
            dump_engine(&snap),
            m.dump(),
            &format!("step {step}: {op:?}"),
        )?;
    }
    // Snapshots never changed, whatever the forks did.
    for (s, sm, h, d) in &snaps {
        check_eq(&s.root_hash(), h, "snapshot hash")?;
        check_eq(&dump_engine(s), d, "snapshot contents")?;
        check_eq(&sm.dump(), d, "snapshot model")?;
        s.check_invariants().map_err(|e| e.to_string())?;
    }
    // Equal trees hash equal however they were built, and diff sees nothing.
    let rebuilt = rebuild(&m);
    check_eq(rebuilt.root_hash(), v.root_hash(), "rebuilt tree hash")?;
    let now = v.snapshot();
    // Numbered differently, equal by path: diff must see nothing.
    let stray: Vec<String> = now
        .diff(&rebuilt.snapshot())
        .iter()
        .map(|c| c.to_string())
        .collect();
    check_eq(stray, Vec::new(), "diff against the rebuilt tree")?;
    if let Some((first, ..)) = snaps.first() {
        let changes = first.diff(&now);
        let (a, b) = (dump_engine(first), dump_engine(&now));
        let mut want: Vec<String> = Vec::new();
        for (p, x) in &a {
            match b.get(p) {
                None => want.push(format!("- {p}")),
                Some(y) if modified(x, y) => want.push(format!("M {p}")),
                _ => {}
            }
        }
        for p in b.keys() {
            if !a.contains_key(p) {
                want.push(format!("+ {p}"));
            }
        }
        want.sort_by(|x, y| x[2..].cmp(&y[2..]));
        let got: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        check_eq(got, want, "diff")?;
    }
    Ok(())
}

/// Whether a diff must report a path present in both trees as modified,
/// from its two dumps: a file whose bytes or link count differ (the engine
/// counts a hard link added or removed elsewhere as a change of the file,
/// as its hash does), or another kind or symlink target.
fn modified(x: &str, y: &str) -> bool {
    // `file NLINK BYTES`
    let file = |d: &str| {
        d.strip_prefix("file ")
            .and_then(|r| r.split_once(' '))
            .map(|(n, b)| (n.parse::<u64>().expect("nlink"), b.to_string()))
    };
    match (file(x), file(y)) {
        (Some((nx, bx)), Some((ny, by))) => nx != ny || bx != by,
        _ => x != y,
    }
}
