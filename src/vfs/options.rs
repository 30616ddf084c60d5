//! How callers ask for things: [`OpenOptions`] for `open`, [`SetTime`]
//! for `set_times` and [`Symlinks`] for the `*_at` calls that may or may
//! not follow a final symlink.

use crate::time::Timestamp;

/// How to change a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// Leave it as it is.
    Omit,
    /// Set it to the clock's current time.
    Now,
    /// Set it to this time (`EINVAL` if its nanoseconds are 1e9 or more).
    At(Timestamp),
}

/// What a call does with a symlink named by the last component of its
/// path (symlinks before it are always followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// Act on what the symlink points to.
    Follow,
    /// Act on the symlink itself.
    NoFollow,
}

impl Symlinks {
    pub(crate) fn follow(self) -> bool {
        self == Symlinks::Follow
    }
}

/// How to open a file, in the style of `std::fs::OpenOptions`.
///
/// ```
/// # use cowvfs::{OpenOptions, Vfs};
/// let mut v = Vfs::new();
/// let fd = v.open("/log", OpenOptions::new().append(true).create(true))?;
/// v.append(fd, b"hello\n")?;
/// v.close(fd)?;
/// # Ok::<(), cowvfs::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    pub(super) read: bool,
    pub(super) write: bool,
    pub(super) append: bool,
    pub(super) truncate: bool,
    pub(super) create: bool,
    pub(super) create_new: bool,
    pub(super) directory: bool,
    pub(super) follow: bool,
    pub(super) mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Nothing set: a descriptor that can only be inspected.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            directory: false,
            follow: true,
            mode: 0o644,
        }
    }
    /// Allow reading.
    pub fn read(&mut self, yes: bool) -> &mut Self {
        self.read = yes;
        self
    }
    /// Allow writing.
    pub fn write(&mut self, yes: bool) -> &mut Self {
        self.write = yes;
        self
    }
    /// Allow appending (writes through [`Vfs::append`] go to the end).
    pub fn append(&mut self, yes: bool) -> &mut Self {
        self.append = yes;
        self
    }
    /// Truncate an existing file to zero length.
    pub fn truncate(&mut self, yes: bool) -> &mut Self {
        self.truncate = yes;
        self
    }
    /// Create the file if it does not exist.
    pub fn create(&mut self, yes: bool) -> &mut Self {
        self.create = yes;
        self
    }
    /// Create the file; fail with `EEXIST` if the name is taken.
    pub fn create_new(&mut self, yes: bool) -> &mut Self {
        self.create_new = yes;
        self
    }
    /// Require a directory (`O_DIRECTORY`).
    pub fn directory(&mut self, yes: bool) -> &mut Self {
        self.directory = yes;
        self
    }
    /// Follow a symlink in the final component (default). With `false`, a
    /// final symlink fails with `ELOOP` (`O_NOFOLLOW`).
    pub fn follow(&mut self, yes: bool) -> &mut Self {
        self.follow = yes;
        self
    }
    /// Permission bits for a newly created file (default `0o644`).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode & 0o7777;
        self
    }
}
