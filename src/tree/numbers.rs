//! Inode numbering: which number a new inode gets, and when a freed number
//! may be handed out again.
//!
//! Inode numbers are identities across trees: a snapshot, its forks, a
//! merge and a diff all take an inode number to name the same object in
//! every tree that has it (see "Merge" in DESIGN.md). So a number some
//! other tree has seen must never come back as a different object. A tree
//! records the watermark: `next` at the moment it was last cloned (every
//! snapshot and fork is a clone). Numbers at or above it exist in this
//! tree alone, so once such an inode is freed, and no descriptor still
//! names it, its number may be reused; numbers below it never are.
//!
//! Reuse is what keeps a create-then-delete loop from walking the inode
//! number up forever, which would cost the inode trie a fresh leaf (and
//! the branch above it) per create and free them again per delete.
//!
//! `next` still only grows, so every number in use is below it and every
//! number below a clone's `next` keeps naming, in this tree, either the
//! clone's object or nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, ErrorKind, Result};

use super::Ino;

/// Inode numbers stay below this. A tree that counts up one create at a
/// time never gets near it; a loaded tree whose next number is above it
/// is refused, so `next` can never wrap around onto numbers in use.
pub(crate) const INO_LIMIT: Ino = 1 << 62;

/// At most this many spare numbers are kept; more are forgotten (they are
/// below `next`, so forgetting them only costs fresh numbers later).
const MAX_SPARE: usize = 1024;

/// The numbering of one tree.
#[derive(Debug)]
pub(super) struct Numbers {
    /// The number after the highest ever given out.
    next: Ino,
    /// `next` at the last clone of this tree: numbers below it may be
    /// known to another tree. Raised through `&self`, since cloning a tree
    /// takes `&self`.
    watermark: AtomicU64,
    /// Freed numbers at or above the watermark (when pushed), most recent
    /// last. Entries below the current watermark are stale: the watermark
    /// only rises to `next`, above every entry, so one stale entry means
    /// all are.
    spare: Vec<Ino>,
}

impl Numbers {
    /// A numbering whose next fresh number is `next`, with nothing to
    /// reuse (everything below `next` may be known elsewhere).
    pub(super) fn new(next: Ino) -> Numbers {
        Numbers {
            next,
            watermark: AtomicU64::new(next),
            spare: Vec::new(),
        }
    }

    /// The number after the highest ever given out.
    pub(super) fn next(&self) -> Ino {
        self.next
    }

    /// The number the next inode gets; [`Numbers::take`] commits it.
    /// `ENOSPC` once the numbers below [`INO_LIMIT`] are all given out.
    pub(super) fn peek(&mut self) -> Result<Ino> {
        let watermark = *self.watermark.get_mut();
        match self.spare.last() {
            Some(&n) if n >= watermark => return Ok(n),
            Some(_) => {
                // The tree was cloned since these were freed.
                self.spare.clear();
            }
            None => {}
        }
        if self.next >= INO_LIMIT {
            return Err(Error::with(ErrorKind::NoSpace, "no inode numbers left"));
        }
        Ok(self.next)
    }

    /// Marks `ino`, which [`Numbers::peek`] just returned, as given out.
    pub(super) fn take(&mut self, ino: Ino) {
        if self.spare.last() == Some(&ino) {
            self.spare.pop();
        } else {
            debug_assert_eq!(ino, self.next);
            self.next += 1;
        }
    }

    /// `ino` was freed and nothing outside the tree refers to it: its
    /// number may come back if no clone has seen it.
    pub(super) fn recycle(&mut self, ino: Ino) {
        let watermark = *self.watermark.get_mut();
        if ino < watermark || ino >= self.next {
            return;
        }
        if self.spare.first().is_some_and(|&n| n < watermark) {
            self.spare.clear();
        }
        if self.spare.len() < MAX_SPARE {
            self.spare.push(ino);
        }
    }
}

impl Clone for Numbers {
    /// Raises this tree's watermark to `next` (the clone may hand any
    /// number below it to another tree) and gives the clone the same one.
    /// O(1): the clone starts with no spare numbers.
    fn clone(&self) -> Numbers {
        // No read-modify-write: `next` cannot change while `&self` is
        // borrowed, so racing clones all store the same value, and a tree
        // cloned again (a snapshot forked many times) only loads.
        if self.watermark.load(Relaxed) < self.next {
            self.watermark.store(self.next, Relaxed);
        }
        Numbers::new(self.next)
    }
}
