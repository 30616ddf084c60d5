//! Every change to the tree's shape and size: creating, linking, unlinking,
//! releasing and freeing inodes, writing and resizing files, each keeping
//! invariants 1, 2 and 5 (links, `nlink` and the usage counters move in
//! step with the entries and data).
//!
//! Each method is all or nothing: it checks what the tree can check itself
//! (names, `max_inodes`, `max_bytes`, `max_file_size`), lets the caller
//! refuse through an `admit` closure where the caller keeps a limit of its
//! own (a sandbox's private bytes), and only then changes anything. The
//! caller checks what is policy rather than structure: permissions, POSIX
//! errno order, that a name is free.

use std::collections::BTreeSet;
use triomphe::Arc;

use crate::content::{Content, Cost};
use crate::error::{Error, ErrorKind, Result, err};
use crate::path;
use crate::time::{Clock, Timestamp};

use super::{
    Entry, FileType, INODE_CHARGE, Ino, Inode, Name, Node, Probe, Tree, edit_inode, entry_charge,
};

/// What [`Tree::release`] did with an inode whose entry went.
#[derive(Debug)]
pub(crate) enum Released {
    /// It still has a name (or is gone already): nothing to do.
    Named,
    /// It has no name left but a descriptor holds it: the caller keeps it
    /// as an orphan and frees it with [`Tree::free`] on the last close.
    Orphaned,
    /// It was freed; here it is, for the caller's own accounting.
    Freed(Arc<Inode>),
}

impl Tree {
    /// `EDQUOT` if one more inode would go over `max_inodes`.
    fn check_inode_quota(&self) -> Result<()> {
        if self.counters.inodes >= self.limits.max_inodes {
            return err(ErrorKind::QuotaExceeded);
        }
        Ok(())
    }

    /// Whether the tree may cost `growth` more bytes (`max_bytes`).
    pub(crate) fn check_bytes(&self, growth: u64) -> Result<()> {
        if growth == 0 {
            return Ok(());
        }
        match self.counters.charged.checked_add(growth) {
            Some(n) if n <= self.limits.max_bytes => Ok(()),
            _ => err(ErrorKind::NoSpace),
        }
    }

    /// The sum of file sizes once a file grows from `old` to `new` bytes,
    /// or `EFBIG` if it would not fit in a u64 (possible only with very
    /// high `max_file_size`s, as in [`Limits::unlimited`](crate::Limits::unlimited)).
    fn grown_logical(&self, old: u64, new: u64) -> Result<u64> {
        (self.counters.logical - old)
            .checked_add(new)
            .ok_or_else(|| {
                Error::with(
                    ErrorKind::FileTooLarge,
                    "the sum of file sizes would overflow",
                )
            })
    }

    /// Creates an inode holding `node` and links it as `dir/name`, its
    /// times read from `clock` once the limits allow it. The caller has
    /// checked that the name is free and the directory writable; if `dir`
    /// is no directory after all, nothing changes.
    pub(crate) fn create(
        &mut self,
        dir: Ino,
        name: Name,
        node: Node,
        mode: u32,
        clock: &dyn Clock,
    ) -> Result<Ino> {
        path::check_name(&name, self.name_max())?;
        self.check_inode_quota()?;
        let charge = match &node {
            Node::Symlink(t) => INODE_CHARGE + t.len() as u64,
            _ => INODE_CHARGE,
        };
        self.check_bytes(charge + entry_charge(&name))?;
        let now = clock.now();
        let ino = self.numbers.peek()?;
        let kind = match node {
            Node::File(_) => FileType::File,
            Node::Dir(_) => FileType::Dir,
            Node::Symlink(_) => FileType::Symlink,
        };
        // The entry first: a `dir` that is missing or no directory fails
        // here, before anything changes. The inode is then made with its
        // link in place, as `link` would leave it.
        self.add_entry(dir, &name, ino, kind, now)?;
        let mut inode = Inode::new(node, mode, now);
        if kind != FileType::Dir {
            inode.nlink += 1;
        }
        self.counters.charged += charge + entry_charge(&name);
        inode.links.push((dir, name));
        self.numbers.take(ino);
        self.inodes.insert(ino, Arc::new(inode));
        self.entry_hint.set(ino);
        self.counters.inodes += 1;
        Ok(ino)
    }

    /// [`Tree::create`] of an empty file then [`Tree::write`] of `data`
    /// at 0 in one step: the file is made holding its data, so the write
    /// needs no second descent and no edit of the new inode. `Ok(None)`
    /// when the write would fail (over a limit, or refused by `admit`)
    /// and nothing has changed: the caller then makes the two calls,
    /// which fail as they would have. Returns the inode, the write's cost
    /// and the chunk bytes allocated.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_file(
        &mut self,
        dir: Ino,
        name: Name,
        mode: u32,
        data: &[u8],
        origin: u64,
        now: Timestamp,
        admit: impl FnOnce(&Cost) -> Result<()>,
    ) -> Result<Option<(Ino, Cost, u64)>> {
        path::check_name(&name, self.name_max())?;
        self.check_inode_quota()?;
        let charge = INODE_CHARGE + entry_charge(&name);
        self.check_bytes(charge)?;
        if data.len() as u64 > self.limits.max_file_size {
            return Ok(None);
        }
        let mut content = Content::default();
        let cost = content.write_cost(0, data.len(), origin);
        let Some(total) = charge.checked_add(cost.charge) else {
            return Ok(None);
        };
        if self.check_bytes(total).is_err() || admit(&cost).is_err() {
            return Ok(None);
        }
        let Ok(logical) = self.grown_logical(0, data.len() as u64) else {
            return Ok(None);
        };
        let Ok(allocated) = content.write_at_prepared(data, 0, origin) else {
            return Ok(None);
        };
        let ino = self.numbers.peek()?;
        self.add_entry(dir, &name, ino, FileType::File, now)?;
        let mut inode = Inode::new(Node::File(content), mode, now);
        inode.nlink = 1;
        inode.links.push((dir, name));
        self.numbers.take(ino);
        self.inodes.insert(ino, Arc::new(inode));
        self.entry_hint.set(ino);
        let c = &mut self.counters;
        c.inodes += 1;
        c.charged += total;
        c.held += cost.held;
        c.logical = logical;
        Ok(Some((ino, cost, allocated)))
    }

    /// Puts the entry `dir/name -> ino` into directory `dir` with its
    /// `nlink` and times; the rest of a link is the caller's. Changes
    /// nothing if `dir` is missing or no directory.
    fn add_entry(
        &mut self,
        dir: Ino,
        name: &Name,
        ino: Ino,
        kind: FileType,
        now: Timestamp,
    ) -> Result<(Timestamp, Timestamp)> {
        // Counted first: a map's path is copied on the way down, whether
        // or not the edit then succeeds.
        self.map_edits += 1;
        let (replaced, old) = edit_inode(&mut self.inodes, dir, |d| {
            let Node::Dir(entries) = &mut d.node else {
                return err(ErrorKind::NotADirectory);
            };
            let replaced = entries.insert(name.clone(), Entry { ino, kind });
            if kind == FileType::Dir {
                d.nlink += 1;
            }
            let old = (d.mtime, d.ctime);
            d.mtime = now;
            d.ctime = now;
            Ok((replaced, old))
        })??;
        // Callers check the name is free; should one not have, a path
        // through the directory it named walks elsewhere now.
        if replaced.is_some_and(|e| e.kind == FileType::Dir) {
            self.dirs_changed();
        }
        Ok(old)
    }

    /// Adds the entry `dir/name -> ino` (of `kind`, which must be the
    /// inode's): the directory's `nlink` for a subdirectory, the inode's
    /// `links` and, for a non-directory, its `nlink`; the entry's charge.
    /// The caller has checked the name and `max_bytes`.
    pub(crate) fn link(
        &mut self,
        dir: Ino,
        name: Name,
        ino: Ino,
        kind: FileType,
        now: Timestamp,
    ) -> Result<()> {
        let (old_mtime, old_ctime) = self.add_entry(dir, &name, ino, kind, now)?;
        self.counters.charged += entry_charge(&name);
        let linked = edit_inode(&mut self.inodes, ino, |t| {
            t.links.push((dir, name.clone()));
            if kind != FileType::Dir {
                t.nlink += 1;
            }
            t.ctime = now;
        });
        if let Err(e) = linked {
            // A missing inode: take the entry back out.
            self.counters.charged -= entry_charge(&name);
            if let Ok(d) = self.inode_mut(dir)
                && let Node::Dir(entries) = &mut d.node
            {
                entries.remove(&name);
                if kind == FileType::Dir {
                    d.nlink -= 1;
                }
                d.mtime = old_mtime;
                d.ctime = old_ctime;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes the entry `dir/name` and returns the inode it named, which
    /// the caller relinks ([`Tree::link`]) or lets go ([`Tree::release`]).
    pub(crate) fn unlink(
        &mut self,
        dir: Ino,
        name: &str,
        now: Timestamp,
    ) -> Result<(Ino, FileType)> {
        let (ino, kind, _) = self.unlink_entry(dir, name, now)?;
        Ok((ino, kind))
    }

    /// [`Tree::unlink`] then [`Tree::release`], without looking the inode
    /// up again: what was released, and its number. An inode losing its
    /// last name that no descriptor holds is freed as it is: the link,
    /// `nlink` and `ctime` changes `unlink` would make first are never
    /// seen, so they are not made (nor the copy of a shared inode).
    pub(crate) fn unlink_release(
        &mut self,
        dir: Ino,
        name: &str,
        now: Timestamp,
        held_open: impl FnOnce(Ino) -> bool,
    ) -> Result<(Ino, Released)> {
        let (e, old) = self.remove_entry(dir, name, now)?;
        let last = self
            .inodes
            .get(&e.ino)
            .is_some_and(|i| matches!(&i.links[..], [(p, n)] if *p == dir && &**n == name));
        if !last {
            let unnamed = self.unlink_inode(dir, name, e, now, old)?;
            return Ok((
                e.ino,
                self.release_unnamed(e.ino, e.kind, unnamed, held_open),
            ));
        }
        let held = held_open(e.ino);
        if e.kind != FileType::Dir && held {
            self.unlink_inode(dir, name, e, now, old)?;
            return Ok((e.ino, Released::Orphaned));
        }
        // As in `release_unnamed`: a directory a descriptor holds goes, but
        // keeps its number from reuse. Found just above, so taken out
        // without a second search.
        let released = match self.inodes.remove_found(e.ino) {
            Some(inode) => Released::Freed(self.counted_out(e.ino, inode, !held)),
            None => Released::Named,
        };
        Ok((e.ino, released))
    }

    /// [`Tree::unlink`], also telling whether the inode has no name left.
    fn unlink_entry(
        &mut self,
        dir: Ino,
        name: &str,
        now: Timestamp,
    ) -> Result<(Ino, FileType, bool)> {
        let (e, old) = self.remove_entry(dir, name, now)?;
        let unnamed = self.unlink_inode(dir, name, e, now, old)?;
        Ok((e.ino, e.kind, unnamed))
    }

    /// The directory's half of an unlink: takes the entry `dir/name` out,
    /// with the directory's `nlink`, times and the entry's charge. Returns
    /// the entry and the directory's old `(mtime, ctime)`. Inlined: its
    /// result, handed back through memory, was copied in unaligned pieces
    /// that stalled the loads reading it (2% of a small-file cycle).
    #[inline]
    fn remove_entry(
        &mut self,
        dir: Ino,
        name: &str,
        now: Timestamp,
    ) -> Result<(Entry, (Timestamp, Timestamp))> {
        // Counted first, as in `add_entry`.
        self.map_edits += 1;
        let (e, old) = edit_inode(&mut self.inodes, dir, |d| {
            let Node::Dir(entries) = &mut d.node else {
                return err(ErrorKind::NotADirectory);
            };
            let Some(e) = entries.remove(&Probe(name)) else {
                return err(ErrorKind::NotFound);
            };
            if e.kind == FileType::Dir {
                d.nlink -= 1;
            }
            let old = (d.mtime, d.ctime);
            d.mtime = now;
            d.ctime = now;
            Ok((e, old))
        })??;
        if e.kind == FileType::Dir {
            // Paths through that directory walk nowhere now.
            self.dirs_changed();
        }
        self.counters.charged -= entry_charge(name);
        Ok((e, old))
    }

    /// The inode's half of an unlink of entry `e` (`dir/name`), which
    /// [`Tree::remove_entry`] took out: its link, `nlink` and `ctime`.
    /// Whether it has no name left. An entry naming a missing inode (a
    /// broken tree) is put back as it was, directory times included.
    fn unlink_inode(
        &mut self,
        dir: Ino,
        name: &str,
        e: Entry,
        now: Timestamp,
        (old_mtime, old_ctime): (Timestamp, Timestamp),
    ) -> Result<bool> {
        let unlinked = edit_inode(&mut self.inodes, e.ino, |t| {
            if let Some(pos) = t.links.iter().position(|(p, n)| *p == dir && &**n == name) {
                t.links.swap_remove(pos);
            }
            if e.kind != FileType::Dir {
                t.nlink -= 1;
            }
            t.ctime = now;
            t.links.is_empty()
        });
        match unlinked {
            Ok(unnamed) => Ok(unnamed),
            Err(err) => {
                self.counters.charged += entry_charge(name);
                if let Ok(d) = self.inode_mut(dir)
                    && let Node::Dir(entries) = &mut d.node
                {
                    entries.insert(Name::from(name), e);
                    if e.kind == FileType::Dir {
                        d.nlink += 1;
                    }
                    d.mtime = old_mtime;
                    d.ctime = old_ctime;
                }
                Err(err)
            }
        }
    }

    /// Lets go of an inode [`Tree::unlink`] returned: frees it if no name
    /// is left, unless it is a non-directory `held_open` says a descriptor
    /// holds, which the caller keeps as an orphan (`held_open` is asked
    /// only for an inode with no name left).
    pub(crate) fn release(
        &mut self,
        ino: Ino,
        kind: FileType,
        held_open: impl FnOnce(Ino) -> bool,
    ) -> Released {
        let unnamed = self.inodes.get(&ino).is_some_and(|i| i.links.is_empty());
        self.release_unnamed(ino, kind, unnamed, held_open)
    }

    /// [`Tree::release`] once the caller knows whether `ino` has a name
    /// left (`unnamed` is false for an inode that is gone).
    fn release_unnamed(
        &mut self,
        ino: Ino,
        kind: FileType,
        unnamed: bool,
        held_open: impl FnOnce(Ino) -> bool,
    ) -> Released {
        if !unnamed {
            return Released::Named;
        }
        let held = held_open(ino);
        if kind != FileType::Dir && held {
            return Released::Orphaned;
        }
        // A directory goes even while a descriptor holds it (later calls
        // through it fail), but its number must not come back while that
        // descriptor could reach a new inode by it.
        match self.free_inner(ino, !held) {
            Some(inode) => Released::Freed(inode),
            None => Released::Named,
        }
    }

    /// Removes an inode that no entry names and no descriptor holds (an
    /// orphan on its last close, or what [`Tree::release`] lets go),
    /// taking its data and charge off the counters. Returns it, if it was
    /// there. Its number may be given to a later inode (see `numbers`).
    pub(crate) fn free(&mut self, ino: Ino) -> Option<Arc<Inode>> {
        self.free_inner(ino, true)
    }

    /// [`Tree::free`]; `recycle` says whether the number may come back.
    fn free_inner(&mut self, ino: Ino, recycle: bool) -> Option<Arc<Inode>> {
        let inode = self.inodes.remove(&ino)?;
        Some(self.counted_out(ino, inode, recycle))
    }

    /// Takes `inode`, just removed from the trie as `ino`, off the
    /// counters; `recycle` as for [`Tree::free_inner`].
    fn counted_out(&mut self, ino: Ino, inode: Arc<Inode>, recycle: bool) -> Arc<Inode> {
        if recycle {
            self.numbers.recycle(ino);
        }
        let c = &mut self.counters;
        c.inodes -= 1;
        c.held -= inode.held();
        c.logical -= inode.content().map_or(0, Content::size);
        c.charged -= inode.charge();
        inode
    }

    /// A copy of the tree without `orphans` (unnamed inodes a sandbox's
    /// descriptors hold), as a snapshot must be: O(1) plus O(log n) per
    /// orphan.
    pub(crate) fn without(&self, orphans: &BTreeSet<Ino>) -> Tree {
        let mut tree = self.clone();
        for &ino in orphans {
            tree.free(ino);
        }
        tree
    }

    /// Writes `data` at `offset` of file `ino` for sandbox `origin` (whose
    /// chunks it makes), keeping the counters. Checks `max_file_size` and
    /// `max_bytes`, then lets `admit` refuse the write's cost, before
    /// anything changes; the times come from `now` after that (called
    /// once, and only then). Returns the cost and the chunk bytes
    /// allocated (both zero for no data).
    pub(crate) fn write(
        &mut self,
        ino: Ino,
        data: &[u8],
        offset: u64,
        origin: u64,
        now: impl FnOnce() -> Timestamp,
        admit: impl FnOnce(&Cost) -> Result<()>,
    ) -> Result<(Cost, u64)> {
        let (old_size, cost) = match &self.get(ino)?.node {
            Node::File(c) => {
                if data.is_empty() {
                    return Ok((Cost::default(), 0));
                }
                let end = offset.checked_add(data.len() as u64);
                match end {
                    Some(e) if e <= self.limits.max_file_size => {}
                    _ => return err(ErrorKind::FileTooLarge),
                }
                // A lazily loaded chunk that cannot be read fails the write
                // here, before anything changes.
                c.prepare_write(offset, data.len())?;
                (c.size(), c.write_cost(offset, data.len(), origin))
            }
            _ => return err(ErrorKind::IsADirectory),
        };
        self.check_bytes(cost.charge)?;
        admit(&cost)?;
        let new_end = offset + data.len() as u64;
        let logical = self.grown_logical(old_size, new_end.max(old_size))?;
        let now = now();
        let allocated = edit_inode(&mut self.inodes, ino, |inode| {
            let Node::File(c) = &mut inode.node else {
                return err(ErrorKind::IsADirectory);
            };
            // Prepared above: the chunks it keeps part of are loaded.
            let allocated = c.write_at_prepared(data, offset, origin)?;
            inode.mtime = now;
            inode.ctime = now;
            Ok(allocated)
        })??;
        let counters = &mut self.counters;
        counters.held += cost.held;
        counters.charged += cost.charge;
        counters.logical = logical;
        Ok((cost, allocated))
    }

    /// Sets the length of file `ino` for sandbox `origin`, keeping the
    /// counters. Checks `max_file_size`, then lets `admit` refuse the
    /// private bytes the cut would copy (net of what it frees), before
    /// anything changes. Returns what it freed and the private bytes it
    /// added (both zero when the length stays).
    pub(crate) fn set_len(
        &mut self,
        ino: Ino,
        len: u64,
        origin: u64,
        now: Timestamp,
        admit: impl FnOnce(u64) -> Result<()>,
    ) -> Result<(Cost, u64)> {
        if len > self.limits.max_file_size {
            return err(ErrorKind::FileTooLarge);
        }
        let (old_size, (freed, added)) = match &self.get(ino)?.node {
            Node::File(c) => {
                c.prepare_set_len(len)?;
                (c.size(), c.shrink_cost(len, origin))
            }
            Node::Dir(_) => return err(ErrorKind::IsADirectory),
            Node::Symlink(_) => return err(ErrorKind::InvalidInput),
        };
        if old_size == len {
            return Ok((Cost::default(), 0));
        }
        // Cutting a chunk of the base copies what is kept of it.
        admit(added.saturating_sub(freed.private))?;
        let logical = self.grown_logical(old_size, len)?;
        let inode = self.inode_mut(ino)?;
        if let Node::File(c) = &mut inode.node {
            c.set_len(len, origin)?;
        }
        inode.mtime = now;
        inode.ctime = now;
        let c = &mut self.counters;
        c.held -= freed.held;
        c.charged -= freed.charge;
        c.logical = logical;
        Ok((freed, added))
    }
}
