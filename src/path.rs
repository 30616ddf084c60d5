//! Path syntax: validation and splitting into components.
//!
//! Resolution itself (walking the tree, following symlinks) lives in
//! `tree`; this module only knows about bytes.

use crate::error::{ErrorKind, Result, err};

/// `NAME_MAX`: the longest name of one directory entry, in bytes.
pub const NAME_MAX: usize = 255;
/// `PATH_MAX`: the longest path, in bytes.
pub const PATH_MAX: usize = 4096;
/// How many symlinks one resolution may follow before `ELOOP`.
pub const SYMLINK_HOPS: u32 = 40;

/// Checks a whole path before it is walked: no NUL bytes, not empty, and
/// shorter than `path_max` bytes (as Linux counts `PATH_MAX`, with the
/// terminating NUL: a path of 4,096 bytes is `ENAMETOOLONG`).
pub(crate) fn check_path(path: &str, path_max: usize) -> Result<()> {
    if path.is_empty() {
        return err(ErrorKind::NotFound);
    }
    if path.len() >= path_max {
        return err(ErrorKind::NameTooLong);
    }
    // A scan without an early exit, which the compiler vectorizes: paths
    // are short and a NUL is an error, so there is nothing to stop early for.
    if path.as_bytes().iter().fold(false, |nul, &b| nul | (b == 0)) {
        return err(ErrorKind::InvalidInput);
    }
    Ok(())
}

/// Checks one name that is about to become a directory entry.
pub(crate) fn check_name(name: &str, name_max: usize) -> Result<()> {
    if name.len() > name_max {
        return err(ErrorKind::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return err(ErrorKind::InvalidInput);
    }
    Ok(())
}

/// The components of `path`, skipping empty ones (`a//b`) but keeping `.`
/// and `..`, which resolution interprets.
pub(crate) fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Whether `path` ends in a slash (or `/.`), which requires a directory.
pub(crate) fn wants_dir(path: &str) -> bool {
    path.ends_with('/') || path.ends_with("/.") || path == "." || path.ends_with("/..")
}

/// Joins a parent path and a name for reports (`/` + `a` = `/a`).
pub(crate) fn join(parent: &str, name: &str) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + name.len());
    s.push_str(parent);
    if !parent.ends_with('/') {
        s.push('/');
    }
    s.push_str(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert_eq!(
            check_path("", 4096).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            check_path("a\0b", 4096).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            check_path(&"a".repeat(4096), 4096).unwrap_err().kind(),
            ErrorKind::NameTooLong
        );
        assert!(check_path(&"a".repeat(4095), 4096).is_ok());
        assert!(check_name(&"n".repeat(255), 255).is_ok());
        assert_eq!(
            check_name(&"n".repeat(256), 255).unwrap_err().kind(),
            ErrorKind::NameTooLong
        );
        assert_eq!(
            components("/a//b/./../c/").collect::<Vec<_>>(),
            ["a", "b", ".", "..", "c"]
        );
        assert!(wants_dir("a/"));
        assert!(!wants_dir("a"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
