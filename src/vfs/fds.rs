//! The descriptor table: [`Fd`] handles with generations (so a stale one
//! never matches a reused slot), what each allows ([`FdInfo`]), and the
//! open counts that keep unlinked files alive until their last close.

use std::collections::hash_map::Entry;

use crate::error::{ErrorKind, Result, err};
use crate::tree::{Base, FileType};

use super::Vfs;

/// An open descriptor. Stale handles (closed, or from another sandbox) are
/// rejected with `EBADF`, even after the slot is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fd(u64);

impl Fd {
    /// The descriptor as a number (slot and generation).
    pub fn as_raw(self) -> u64 {
        self.0
    }

    /// A descriptor from [`Fd::as_raw`].
    pub fn from_raw(raw: u64) -> Fd {
        Fd(raw)
    }

    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// What a descriptor allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdInfo {
    /// The inode it refers to.
    pub ino: u64,
    /// Its kind.
    pub kind: FileType,
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
    /// Opened for appending.
    pub append: bool,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct OpenFile {
    generation: u32,
    pub(super) info: FdInfo,
}

impl Vfs {
    pub(super) fn file(&self, fd: Fd) -> Result<&OpenFile> {
        match self.files.get(fd.slot()) {
            Some(Some(f)) if f.generation == fd.generation() => Ok(f),
            _ => err(ErrorKind::BadDescriptor),
        }
    }

    /// What a descriptor allows and refers to.
    pub fn file_info(&self, fd: Fd) -> Result<FdInfo> {
        Ok(self.file(fd)?.info)
    }

    pub(super) fn alloc_fd(&mut self, info: FdInfo) -> Result<Fd> {
        if self.open_total >= self.tree.limits().max_open_files as u64 {
            return err(ErrorKind::TooManyOpenFiles);
        }
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                if self.files.len() >= u32::MAX as usize {
                    return err(ErrorKind::TooManyOpenFiles);
                }
                self.files.push(None);
                self.files.len() - 1
            }
        };
        self.generation = self.generation.wrapping_add(1).max(1);
        let generation = self.generation;
        self.files[slot] = Some(OpenFile { generation, info });
        *self.open_count.entry(info.ino).or_default() += 1;
        self.open_total += 1;
        Ok(Fd(((generation as u64) << 32) | slot as u64))
    }

    /// Closes a descriptor. An unlinked file's data goes with its last one.
    pub fn close(&mut self, fd: Fd) -> Result<()> {
        let ino = self.file(fd)?.info.ino;
        self.files[fd.slot()] = None;
        self.free_slots.push(fd.slot());
        self.open_total -= 1;
        // One search: the count goes with the last descriptor.
        let last = match self.open_count.entry(ino) {
            Entry::Occupied(n) if *n.get() <= 1 => {
                n.remove();
                true
            }
            Entry::Occupied(mut n) => {
                *n.get_mut() -= 1;
                false
            }
            Entry::Vacant(_) => false,
        };
        if last
            && self.orphans.remove(&ino)
            && let Some(inode) = self.tree.free(ino)
        {
            self.forget_private(&inode);
        }
        Ok(())
    }

    /// Descriptor of a directory to resolve beneath.
    pub(super) fn base_of(&self, dir: Fd) -> Result<Base> {
        let f = self.file(dir)?;
        if f.info.kind != FileType::Dir {
            return err(ErrorKind::NotADirectory);
        }
        Ok(Base::Beneath(f.info.ino))
    }
}
