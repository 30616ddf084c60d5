//! Replacing a host file or directory all at once.
//!
//! The new object is built under a hidden temporary name in the
//! destination's own directory (so the rename never crosses filesystems)
//! and then renamed over the destination: a reader sees the old object or
//! the whole new one, never a part, and a failure removes the temporary
//! and leaves the destination as it was.
//!
//! [`write_file`] does all of it for a file: temporary file, write, fsync,
//! rename, fsync of the directory. Checkpoint saves and the directory
//! store's objects go through it, each with its [`FileOptions`]. A host
//! export builds a whole directory tree, so it takes only the naming and
//! the rename ([`Staging`]) and does the rest itself.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};

/// Numbers the temporary names this process makes.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How far a temporary name is unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unique {
    /// `…-PID-N`: a fresh name on every call.
    PerCall,
    /// `…-PID`: one name per process and destination, so a second attempt
    /// while the first's temporary exists fails to create its own.
    PerProcess,
}

/// Where a new object for a destination is built: the destination's
/// directory (`.` for a bare name) and a hidden temporary path in it.
#[derive(Debug)]
pub(crate) struct Staging {
    pub dir: PathBuf,
    pub temp: PathBuf,
}

impl Staging {
    /// `.NAME.TAG-PID[-N]` beside `dest`, NAME being its final name; `None`
    /// if `dest` has none (it ends in `..` or is a root).
    pub fn named(dest: &Path, tag: &str, unique: Unique) -> Option<Staging> {
        let name = dest.file_name()?;
        Some(Staging::beside(dest, Some(name), tag, unique))
    }

    /// `.TAG-PID-N` beside `dest`: for a directory of objects whose
    /// temporaries are all found by that prefix.
    pub fn anonymous(dest: &Path, tag: &str) -> Staging {
        Staging::beside(dest, None, tag, Unique::PerCall)
    }

    fn beside(dest: &Path, name: Option<&OsStr>, tag: &str, unique: Unique) -> Staging {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut temp = OsString::from(".");
        if let Some(name) = name {
            temp.push(name);
            temp.push(".");
        }
        temp.push(tag);
        temp.push(format!("-{}", std::process::id()));
        if unique == Unique::PerCall {
            temp.push(format!("-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        }
        let temp = dir.join(temp);
        Staging { dir, temp }
    }

    /// Renames the finished temporary over `dest`. On failure the
    /// temporary is still there, for the caller to remove.
    pub fn commit(&self, dest: &Path) -> Result<()> {
        fs::rename(&self.temp, dest).map_err(|e| Error::io_at(dest, e))
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io_at(dir, e))
}

/// How [`write_file`] makes its temporary file and how far it goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileOptions {
    /// Name the temporary after the destination (`.NAME.tmp-PID-N`), or
    /// not (`.tmp-PID-N`).
    pub named: bool,
    /// Permission bits of the new file (the umask applies).
    pub mode: u32,
    /// Fail if the temporary name is taken, rather than truncate it.
    pub exclusive: bool,
    /// Create the destination's directory (and its parents) if missing.
    pub create_dir: bool,
    /// Sync the directory after the rename, so the new name is durable on
    /// return. A caller putting many files in one directory leaves this off
    /// and calls [`sync_dir`] once for them all.
    pub sync_dir: bool,
}

/// Writes the file `dest` atomically: `fill` writes the content to a
/// temporary file beside it, which is fsynced and renamed over `dest`
/// (and the directory synced, per `opts`). On any failure the temporary
/// is removed and whatever was at `dest` is untouched.
///
/// Errors name what they are about: `dest` for a bad destination, a
/// failed rename and (as context, if `fill` gave none) a failed `fill`;
/// the temporary for its creation and fsync; the directory for its own.
pub(crate) fn write_file<T>(
    dest: &Path,
    opts: FileOptions,
    fill: impl FnOnce(&File) -> Result<T>,
) -> Result<T> {
    let staging = match opts.named {
        true => Staging::named(dest, "tmp", Unique::PerCall),
        false => dest.file_name().map(|_| Staging::anonymous(dest, "tmp")),
    };
    let Some(staging) = staging else {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!("{}: not a file name", dest.display()),
        ));
    };
    if dest.is_dir() {
        return Err(Error::with(
            ErrorKind::IsADirectory,
            format!("{}: is a directory", dest.display()),
        ));
    }
    if opts.create_dir {
        fs::create_dir_all(&staging.dir).map_err(|e| Error::io_at(&staging.dir, e))?;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(opts.exclusive)
        .create(true)
        .truncate(true)
        .mode(opts.mode)
        .open(&staging.temp)
        .map_err(|e| Error::io_at(&staging.temp, e))?;
    let res = fill(&file)
        .map_err(|e| e.or_context(|| dest.display().to_string()))
        .and_then(|t| {
            file.sync_all()
                .map_err(|e| Error::io_at(&staging.temp, e))?;
            Ok(t)
        });
    drop(file);
    let t = res.and_then(|t| staging.commit(dest).map(|()| t));
    let t = match t {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(&staging.temp);
            return Err(e);
        }
    };
    // The rename is durable only once the directory is.
    if opts.sync_dir {
        sync_dir(&staging.dir)?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        let pid = std::process::id();
        let s = Staging::named(Path::new("out/x.ck"), "tmp", Unique::PerProcess).unwrap();
        assert_eq!(s.dir, Path::new("out"));
        assert_eq!(s.temp, Path::new(&format!("out/.x.ck.tmp-{pid}")));
        let s = Staging::named(Path::new("x"), "cowvfs-export", Unique::PerProcess).unwrap();
        assert_eq!(s.temp, Path::new(&format!("./.x.cowvfs-export-{pid}")));
        let a = Staging::anonymous(Path::new("d/obj"), "tmp");
        let b = Staging::anonymous(Path::new("d/obj"), "tmp");
        assert!(a.temp.to_string_lossy().starts_with("d/.tmp-"));
        assert_ne!(a.temp, b.temp);
        assert!(Staging::named(Path::new("/"), "tmp", Unique::PerCall).is_none());
    }
}
