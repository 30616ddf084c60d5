//! Path resolution: walking names from the root or strictly beneath a
//! directory, following symlinks within the hop limit.

use crate::error::{ErrorKind, Result, err};
use crate::path::{check_path, wants_dir};

use super::parents::CHAIN;
use super::{Entry, FileType, Ino, Inode, Name, Node, Probe, ROOT, Target, Tree};

/// Where a resolution starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// The sandbox root, as a chroot: `..` at the root stays there and
    /// absolute symlinks restart from the root.
    Root,
    /// A directory, strictly beneath: absolute paths, absolute symlinks and
    /// `..` above it are `EPERM`.
    Beneath(Ino),
}

/// One path component, borrowed from the caller's path or from a symlink
/// target (shared, so following a link allocates nothing).
#[derive(Clone, Debug)]
pub(crate) enum Comp<'p> {
    Borrowed(&'p str),
    Shared(Target, usize, usize),
}

impl Comp<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Comp::Borrowed(s) => s,
            Comp::Shared(s, a, b) => &s[*a..*b],
        }
    }

    /// The component as a name of its own.
    pub(crate) fn to_name(&self) -> Name {
        Name::from(self.as_str())
    }
}

/// The outcome of resolving a path.
#[derive(Debug)]
pub(crate) struct Resolved<'p> {
    /// The directory holding the final name (or the final directory itself
    /// when the path ends in `.`, `..` or the root).
    pub dir: Ino,
    /// The final name; `None` when the path ends at a directory as above.
    pub name: Option<Comp<'p>>,
    /// What the final component names, if it exists.
    pub ino: Option<Ino>,
    pub kind: Option<FileType>,
    /// The path ended in a slash: the final object must be a directory.
    pub must_dir: bool,
    /// The permission bits of `dir`, when resolution read its inode (it
    /// does whenever it looked a name up there), so the caller need not
    /// fetch it again.
    pub dir_mode: Option<u32>,
}

/// What [`Tree::resolve_hinted`] found: an existing object named
/// `dir/name`, its inode and number.
struct Hinted<'t, 'p> {
    dir: Ino,
    name: &'p str,
    ino: Ino,
    inode: &'t Inode,
}

impl<'t, 'p> Hinted<'t, 'p> {
    /// As the walk would have returned it (a plain final name, so no
    /// trailing slash; the directory's inode was not read).
    fn resolved(self) -> (Resolved<'p>, Option<&'t Inode>) {
        let r = Resolved {
            dir: self.dir,
            name: Some(Comp::Borrowed(self.name)),
            ino: Some(self.ino),
            kind: Some(self.inode.kind()),
            must_dir: false,
            dir_mode: None,
        };
        (r, Some(self.inode))
    }
}

/// Directories walked so far, innermost last. The first `INLINE` live in
/// place, so resolving a usual path allocates nothing.
struct DirStack {
    head: [Ino; DirStack::INLINE],
    len: usize,
    more: Vec<Ino>,
}

impl DirStack {
    const INLINE: usize = 16;

    fn new(floor: Ino) -> DirStack {
        let mut head = [0; DirStack::INLINE];
        head[0] = floor;
        DirStack {
            head,
            len: 1,
            more: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn last(&self) -> Ino {
        if self.len > DirStack::INLINE {
            self.more[self.len - DirStack::INLINE - 1]
        } else {
            self.head[self.len - 1]
        }
    }

    fn push(&mut self, ino: Ino) {
        if self.len < DirStack::INLINE {
            self.head[self.len] = ino;
        } else {
            self.more.push(ino);
        }
        self.len += 1;
    }

    /// Pops the innermost directory; never the floor.
    fn pop(&mut self) {
        if self.len > DirStack::INLINE {
            self.more.pop();
        }
        if self.len > 1 {
            self.len -= 1;
        }
    }

    /// Back to the floor alone.
    fn reset(&mut self) {
        self.len = 1;
        self.more.clear();
    }
}

/// The components of a path, as `path::components` gives them (empty ones
/// skipped, `.` and `..` kept), by a plain byte scan: most paths left to
/// walk after the hints are one short name, where setting up a `str`
/// splitter costs more than the scan.
struct Comps<'p>(&'p str);

impl<'p> Iterator for Comps<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        let bytes = self.0.as_bytes();
        let begin = bytes.iter().position(|&b| b != b'/')?;
        let end = bytes[begin..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |n| begin + n);
        // Cut at ASCII slashes, so on character boundaries.
        let comp = self.0.get(begin..end)?;
        self.0 = self.0.get(end..).unwrap_or_default();
        Some(comp)
    }
}

/// Where the last `/` of `path` is.
fn last_slash(path: &str) -> Option<usize> {
    path.bytes().rposition(|b| b == b'/')
}

/// Whether two names are equal; names are short, so a plain loop beats a
/// call to `memcmp`.
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

impl Tree {
    /// Resolves `path` from `base`. Every component but the last must exist;
    /// intermediate symlinks are always followed, the last one only if
    /// `follow` (or the path ends in a slash).
    pub(crate) fn resolve<'p>(
        &self,
        base: Base,
        path: &'p str,
        follow: bool,
    ) -> Result<Resolved<'p>> {
        Ok(self.resolve_with(base, path, follow)?.0)
    }

    /// [`Tree::resolve`], with the final object's permission bits when
    /// resolution read that inode on the way (the entry hint's, or the
    /// starting directory's for a path such as `/` or `.`), so a caller
    /// checking them need not fetch the inode again.
    pub(crate) fn resolve_mode<'p>(
        &self,
        base: Base,
        path: &'p str,
        follow: bool,
    ) -> Result<(Resolved<'p>, Option<u32>)> {
        let (r, inode) = self.resolve_with(base, path, follow)?;
        Ok((r, inode.map(|i| i.mode)))
    }

    /// An existing object and its inode, as [`Tree::lookup`] then
    /// [`Tree::get`] would give them, looking the inode up once.
    pub(crate) fn lookup_inode(
        &self,
        base: Base,
        path: &str,
        follow: bool,
    ) -> Result<(Ino, &Inode)> {
        let (start, beneath) = self.begin(base, path)?;
        if let Some(h) = self.resolve_hinted(start, path, follow) {
            return Ok((h.ino, h.inode));
        }
        let (r, inode) = self.walk(start, beneath, path, follow)?;
        let Some(ino) = r.ino else {
            return err(ErrorKind::NotFound);
        };
        match inode {
            Some(i) => Ok((ino, i)),
            None => Ok((ino, self.get(ino)?)),
        }
    }

    /// [`Tree::resolve`], with the inode of the final object when the
    /// resolution read it already (the entry hint's).
    fn resolve_with<'t, 'p>(
        &'t self,
        base: Base,
        path: &'p str,
        follow: bool,
    ) -> Result<(Resolved<'p>, Option<&'t Inode>)> {
        let (start, beneath) = self.begin(base, path)?;
        match self.resolve_hinted(start, path, follow) {
            Some(h) => Ok(h.resolved()),
            None => self.walk(start, beneath, path, follow),
        }
    }

    /// What every resolution checks first (see `check_path`; beneath a
    /// directory, an absolute path is refused), and where it starts:
    /// the directory, and whether resolution is strictly beneath it.
    #[inline]
    fn begin(&self, base: Base, path: &str) -> Result<(Ino, bool)> {
        check_path(path, self.limits.max_path_len as usize)?;
        let (start, beneath) = match base {
            Base::Root => (ROOT, false),
            Base::Beneath(ino) => (ino, true),
        };
        if beneath && path.starts_with('/') {
            return err(ErrorKind::NotPermitted);
        }
        Ok((start, beneath))
    }

    /// Resolution by walking the path from `start`, one component at a
    /// time (after [`Tree::begin`]'s checks).
    fn walk<'t, 'p>(
        &'t self,
        start: Ino,
        beneath: bool,
        path: &'p str,
        follow: bool,
    ) -> Result<(Resolved<'p>, Option<&'t Inode>)> {
        let lim = &self.limits;
        // Directories walked so far; `..` pops. The floor is `start`.
        let mut stack = DirStack::new(start);
        // The path's components are read in order as they come; a
        // symlink's come first, from `pending` (innermost last). When the
        // directory hint is the path's parent, only the last one is left.
        let mut todo = path;
        // The inode of the innermost directory, once fetched. A cached
        // parent is not fetched until a name must be searched in it: when
        // the entry hint names the final object, nothing needs it.
        let mut cur_inode = if let Some(cut) = last_slash(path)
            && !matches!(&path[cut + 1..], "" | "." | "..")
            && let Some(d) = self
                .parent_cached(start, &path[..cut], &mut stack)
                .map(|()| None)
                .or_else(|| {
                    self.parent_from_hint(start, &path[..cut], &mut stack)
                        .map(Some)
                }) {
            // The chain of links ended at `start`, which is so a
            // directory (invariant 2).
            todo = &path[cut + 1..];
            d
        } else {
            let floor = self.get(start)?;
            if floor.entries().is_none() {
                return err(ErrorKind::NotADirectory);
            }
            Some(floor)
        };
        let mut rest = Comps(todo).peekable();
        let mut pending: Vec<Comp<'p>> = Vec::new();
        let mut must_dir = wants_dir(path);
        let mut hops = 0u32;
        loop {
            let comp = match pending.pop() {
                Some(c) => c,
                None => match rest.next() {
                    Some(c) => Comp::Borrowed(c),
                    None => break,
                },
            };
            let last = pending.is_empty() && rest.peek().is_none();
            let name = comp.as_str();
            if name == "." {
                continue;
            }
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                    cur_inode = None;
                } else if beneath {
                    return err(ErrorKind::NotPermitted);
                }
                continue;
            }
            if name.len() > self.name_max() {
                return err(ErrorKind::NameTooLong);
            }
            // Every directory on `stack` is one (the floor was checked,
            // and only entries of kind `Dir` are pushed).
            let cur = stack.last();
            // The final object's entry and inode, when the entry hint
            // names it: one of its links is `cur/name`, so that entry
            // exists (invariant 1) and `cur`'s own inode is not needed.
            let mut this_inode = None;
            let mut hinted = None;
            if last {
                if cur != self.dir_hint.get() {
                    self.dir_hint.set(cur);
                }
                if let Some((e, inode)) = self.entry_from_hint(cur, name) {
                    this_inode = Some(inode);
                    hinted = Some(e);
                }
            }
            let found = match hinted {
                Some(e) => Some(e),
                None => {
                    let dir = match cur_inode {
                        Some(i) => i,
                        None => {
                            let i = self.get(cur)?;
                            cur_inode = Some(i);
                            i
                        }
                    };
                    let Some(entries) = dir.entries() else {
                        return err(ErrorKind::NotADirectory);
                    };
                    let found = entries.get(&Probe(name)).copied();
                    if last
                        && let Some(e) = found
                        && e.ino != self.entry_hint.get()
                    {
                        self.entry_hint.set(e.ino);
                    }
                    found
                }
            };
            let Some(entry) = found else {
                if last {
                    let r = Resolved {
                        dir: cur,
                        name: Some(comp),
                        ino: None,
                        kind: None,
                        must_dir,
                        dir_mode: cur_inode.map(|i| i.mode),
                    };
                    return Ok((r, None));
                }
                return err(ErrorKind::NotFound);
            };
            match entry.kind {
                FileType::Symlink if !last || follow || must_dir => {
                    hops = hops.saturating_add(1);
                    if hops > lim.max_symlink_hops {
                        return err(ErrorKind::Loop);
                    }
                    let Node::Symlink(target) = &self.get(entry.ino)?.node else {
                        return err(ErrorKind::Corrupt);
                    };
                    if target.starts_with('/') {
                        if beneath {
                            return err(ErrorKind::NotPermitted);
                        }
                        stack.reset();
                        cur_inode = None;
                    }
                    if last && wants_dir(target) {
                        must_dir = true;
                    }
                    // The target's pieces, last first, on top of `pending`.
                    let mut end = target.len();
                    for piece in target.rsplit('/') {
                        let start = end - piece.len();
                        if !piece.is_empty() {
                            pending.push(Comp::Shared(target.clone(), start, end));
                        }
                        end = start.saturating_sub(1);
                    }
                }
                FileType::Dir if !last => {
                    stack.push(entry.ino);
                    cur_inode = None;
                }
                _ if !last => return err(ErrorKind::NotADirectory),
                kind => {
                    if must_dir && kind != FileType::Dir {
                        return err(ErrorKind::NotADirectory);
                    }
                    let r = Resolved {
                        dir: cur,
                        name: Some(comp),
                        ino: Some(entry.ino),
                        kind: Some(kind),
                        must_dir,
                        dir_mode: cur_inode.map(|i| i.mode),
                    };
                    return Ok((r, this_inode));
                }
            }
        }
        let dir = stack.last();
        let r = Resolved {
            dir,
            name: None,
            ino: Some(dir),
            kind: Some(FileType::Dir),
            must_dir,
            dir_mode: cur_inode.map(|i| i.mode),
        };
        // `cur_inode` is always the inode of `stack.last()`, or `None`.
        Ok((r, cur_inode))
    }

    /// What [`Tree::walk`] would return, without walking, when both hints
    /// hold: the path is `dirs/name` with a plain `name`, the entry hint's
    /// first link is `(d, name)`, and `dirs` from `start` is a parent path
    /// the parent cache holds for this directory generation, ending at
    /// `d`. A symlink it should follow, and every other case, is left to
    /// the walk. Most calls repeat the last path (a stat, then a read, then
    /// an unlink of one file), and this is all they then cost.
    #[inline]
    fn resolve_hinted<'t, 'p>(
        &'t self,
        start: Ino,
        path: &'p str,
        follow: bool,
    ) -> Option<Hinted<'t, 'p>> {
        let cut = last_slash(path)?;
        let (dirs, name) = (&path[..cut], &path[cut + 1..]);
        if matches!(name, "" | "." | "..") || name.len() > self.name_max() {
            return None;
        }
        let ino = self.entry_hint.get();
        let inode: &Inode = self.inodes.get(&ino)?;
        let (dir, first) = inode.links.first()?;
        let kind = inode.kind();
        if !same_name(first.as_bytes(), name.as_bytes()) || (follow && kind == FileType::Symlink) {
            return None;
        }
        let mut chain = [0 as Ino; CHAIN];
        let depth = self
            .parents
            .get()?
            .lookup(self.dir_gen, start, dirs.as_bytes(), &mut chain)?;
        if chain[depth - 1] != *dir {
            return None;
        }
        if *dir != self.dir_hint.get() {
            self.dir_hint.set(*dir);
        }
        Some(Hinted {
            dir: *dir,
            name,
            ino,
            inode,
        })
    }

    /// Directory `dirs` (a path without `.` or `..`, from `start`) when
    /// it is the directory hint, checked by the hint's links alone: a
    /// directory has one name (invariant 2), so if its chain of parents
    /// spells `dirs` back to `start`, resolving `dirs` would reach it.
    /// Fills `stack` with that chain, as the walk would have.
    fn parent_from_hint(&self, start: Ino, dirs: &str, stack: &mut DirStack) -> Option<&Inode> {
        let hint = self.dir_hint.get();
        if hint == start {
            // Nothing to skip; the walk is as cheap.
            return None;
        }
        let mut chain = [0 as Ino; DirStack::INLINE];
        let mut depth = 0;
        let mut at = hint;
        let found = self.inodes.get(&at)?;
        let mut inode = found;
        // The components of `dirs`, last first, by one backward scan.
        let bytes = dirs.as_bytes();
        let mut end = bytes.len();
        loop {
            while end > 0 && bytes[end - 1] == b'/' {
                end -= 1;
            }
            if end == 0 {
                break;
            }
            let mut begin = end;
            while begin > 0 && bytes[begin - 1] != b'/' {
                begin -= 1;
            }
            let comp = &bytes[begin..end];
            end = begin;
            if depth > 0 {
                inode = self.inodes.get(&at)?;
            }
            if inode.kind() != FileType::Dir || depth + 1 >= DirStack::INLINE {
                return None;
            }
            let (parent, name) = inode.links.first()?;
            if !same_name(name.as_bytes(), comp) || comp.len() > self.name_max() {
                return None;
            }
            chain[depth] = at;
            depth += 1;
            at = *parent;
        }
        if at != start || depth == 0 {
            return None;
        }
        chain[..depth].reverse();
        for &ino in &chain[..depth] {
            stack.push(ino);
        }
        // Checked: the next name looked up in this directory by the same
        // path compares bytes instead.
        if depth <= CHAIN {
            self.parents.get_or_make().record(
                self.dir_gen,
                start,
                dirs.as_bytes(),
                &chain[..depth],
            );
        }
        Some(found)
    }

    /// Directory `dirs` from `start` when the parent cache holds it for
    /// this directory generation (see `parents`): what
    /// [`Tree::parent_from_hint`] would find, by a comparison of bytes
    /// alone. Fills `stack` as the walk would have; the directory's inode
    /// is left for the caller to fetch if it needs it. Every inode of the
    /// chain is a directory: the generation moves whenever an entry naming
    /// a directory goes, so none of them was freed and its number reused.
    fn parent_cached(&self, start: Ino, dirs: &str, stack: &mut DirStack) -> Option<()> {
        let cache = self.parents.get()?;
        let mut chain = [0 as Ino; CHAIN];
        let depth = cache.lookup(self.dir_gen, start, dirs.as_bytes(), &mut chain)?;
        for &ino in &chain[..depth] {
            stack.push(ino);
        }
        Some(())
    }

    /// The entry `dir/name` if the entry hint is an inode whose first
    /// link it is (links equal the entries naming the inode, invariant
    /// 1), instead of a search of the directory. Only the first link is
    /// compared: a file can have `MAX_LINKS`, and scanning them all on
    /// every lookup would make each call cost O(links); a name among the
    /// others is searched for in its directory.
    fn entry_from_hint(&self, dir: Ino, name: &str) -> Option<(Entry, &Inode)> {
        let ino = self.entry_hint.get();
        let inode: &Inode = self.inodes.get(&ino)?;
        let (p, n) = inode.links.first()?;
        (*p == dir && same_name(n.as_bytes(), name.as_bytes())).then(|| {
            let kind = inode.kind();
            (Entry { ino, kind }, inode)
        })
    }

    /// Whether resolving `path` from the root would take its parent from
    /// the parent cache (for tests: a cache that never hits proves nothing).
    #[cfg(test)]
    pub(crate) fn parent_cache_hits(&self, path: &str) -> bool {
        let Some(cut) = last_slash(path) else {
            return false;
        };
        let mut stack = DirStack::new(ROOT);
        self.parent_cached(ROOT, &path[..cut], &mut stack).is_some()
    }

    /// Whether resolving `path` from the root now takes the hinted path
    /// ([`Tree::resolve_hinted`]), for tests.
    #[cfg(test)]
    pub(crate) fn resolves_hinted(&self, path: &str, follow: bool) -> bool {
        self.resolve_hinted(ROOT, path, follow).is_some()
    }

    /// A copy that has seen nothing: no hints and an empty parent cache,
    /// so its resolutions walk (for tests to compare against).
    #[cfg(test)]
    pub(crate) fn cold(&self) -> Tree {
        let t = self.clone();
        t.dir_hint.set(0);
        t.entry_hint.set(0);
        t
    }

    /// Resolves to an existing inode.
    pub(crate) fn lookup(&self, base: Base, path: &str, follow: bool) -> Result<Ino> {
        self.resolve(base, path, follow)?
            .ino
            .ok_or_else(|| ErrorKind::NotFound.into())
    }

    /// Whether `ino` is `anc` or lies below it.
    pub(crate) fn is_within(&self, mut ino: Ino, anc: Ino) -> bool {
        // Bounded by the inode count, so a corrupt tree cannot loop forever.
        for _ in 0..=self.inodes.len() {
            if ino == anc {
                return true;
            }
            match self.inodes.get(&ino).and_then(|i| i.links.first()) {
                Some((parent, _)) => ino = *parent,
                None => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Comps;
    use crate::path::components;

    #[test]
    fn comps_split_as_components_does() {
        for p in [
            "",
            "/",
            "//",
            "a",
            "/a",
            "a/",
            "/a/b",
            "a//b",
            "/a/./../b/",
            "..",
            "./x/",
            "/app/d7/n12",
            "é/ü//ß",
        ] {
            let ours: Vec<&str> = Comps(p).collect();
            let theirs: Vec<&str> = components(p).collect();
            assert_eq!(ours, theirs, "{p:?}");
        }
    }
}
