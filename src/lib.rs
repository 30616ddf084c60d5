//! cowvfs: a copy-on-write, snapshotting virtual filesystem engine for
//! WebAssembly sandboxes.
//!
//! A [`Vfs`] is one sandbox's writable tree. [`Vfs::snapshot`] freezes it
//! into a [`Snapshot`] in O(1), and [`Snapshot::fork`] makes a new writable
//! sandbox from a snapshot in O(1), whatever the tree's size. File data lives
//! in 64 KiB content-addressed chunks shared by every fork; a write copies
//! only the chunks it touches.
//!
//! ```
//! use cowvfs::{ChangeKind, OpenOptions, Vfs};
//!
//! let mut base = Vfs::new();
//! base.create_dir_all("/app/data")?;
//! base.write_file("/app/data/config", b"debug = false\n")?;
//! let snap = base.snapshot();
//!
//! let mut sandbox = snap.fork();
//! let fd = sandbox.open("/app/data/config", OpenOptions::new().write(true))?;
//! sandbox.write_at(fd, b"true ", 8)?;
//! sandbox.close(fd)?;
//!
//! assert_eq!(snap.read_file("/app/data/config")?, b"debug = false\n");
//! let changes = snap.diff(&sandbox.snapshot());
//! assert_eq!(changes.len(), 1);
//! assert_eq!(changes[0].path(), "/app/data/config");
//! assert_eq!(changes[0].kind(), ChangeKind::Modified);
//! # Ok::<(), cowvfs::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod atomic;
pub mod checkpoint;
mod chunk;
mod chunkmap;
mod content;
mod copy;
mod error;
pub mod hostdir;
mod limits;
mod merge;
mod path;
#[cfg(feature = "serve")]
pub mod serve;
pub mod store;
mod time;
mod tree;
mod vfs;
#[cfg(feature = "wasi-host")]
pub mod wasi;

pub use content::CHUNK_SIZE;
pub use error::{Error, ErrorKind, Result};
pub use limits::{Limits, Usage, parse_size};
pub use merge::{Action, Conflict, ConflictKind, ConflictPolicy, Merge, MergeOptions, Resolution};
pub use path::{NAME_MAX, PATH_MAX, SYMLINK_HOPS};
#[doc(hidden)]
pub use time::civil_date;
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use tree::{Change, ChangeKind, FileType, Name};
pub use vfs::{DirEntry, Fd, FdInfo, Metadata, OpenOptions, SetTime, Snapshot, Symlinks, Vfs};

// The README's examples are doctests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
