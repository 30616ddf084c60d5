//! Moving trees between the host filesystem and the engine.
//!
//! [`import_dir`] copies a host directory into a [`Vfs`]; [`export_dir`]
//! recreates a snapshot's directory on the host. Both keep what a checkpoint
//! keeps: regular files, directories, symlinks (targets exactly as written),
//! hard links (as hard links), permission bits and access/modification
//! times (setuid, setgid and sticky bits only if asked, see
//! [`ExportOptions`]). Ownership and other file types (sockets, FIFOs, devices) have no
//! place in the engine, so an import refuses them by name rather than
//! silently dropping them.
//!
//! Import never writes to the host. Export builds the tree in a temporary
//! directory next to the target and renames it into place, so a failure
//! leaves no half-written tree behind.
//!
//! The three directions are one file each: `import.rs` (a host directory
//! into a tree), `sync.rs` (a tree brought up to date with a host
//! directory, keeping what did not change) and `export.rs` (a snapshot's
//! directory written to the host).

mod export;
mod import;
mod sync;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::time::Timestamp;

pub use export::{ExportOptions, export_dir, export_dir_opts, export_dir_with};
pub use import::{import_dir, import_dir_with};
pub use sync::{sync_dir, sync_dir_with};

/// What an import or export moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Regular files created (not counting extra hard links).
    pub files: u64,
    /// Directories created, the top one included.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Extra names made for a file or symlink already copied.
    pub hard_links: u64,
    /// Bytes of file content (logical sizes, holes included).
    pub bytes: u64,
}

/// What an export wrote; the same counts as an import.
pub type ExportStats = ImportStats;

fn guest_err(p: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| match e.context() {
        Some(c) if c != p => Error::with(e.kind(), format!("{p}: {c}")),
        _ => Error::with(e.kind(), p.to_string()),
    }
}

fn utf8_name(host: &Path, name: &std::ffi::OsStr) -> Result<String> {
    match name.to_str() {
        Some(s) => Ok(s.to_string()),
        None => Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{}: name is not UTF-8 and cannot be stored",
                host.join(name).display()
            ),
        )),
    }
}

fn times_of(m: &fs::Metadata) -> (Timestamp, Timestamp) {
    let ts = |secs: i64, nanos: i64| Timestamp {
        secs,
        nanos: u32::try_from(nanos).unwrap_or(0).min(999_999_999),
    };
    (ts(m.atime(), m.atime_nsec()), ts(m.mtime(), m.mtime_nsec()))
}
