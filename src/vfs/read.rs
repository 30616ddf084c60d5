//! What reading reports ([`Metadata`], [`DirEntry`]) and the read-only
//! operations `Snapshot` and `Vfs` share: they take the tree, so both
//! answer the same way.

use crate::content::Content;
use crate::error::{Error, ErrorKind, Result, err};
use crate::time::Timestamp;
use crate::tree::{Base, Entry, FileType, Ino, Inode, Name, Node, Tree};

/// Metadata of one object, as `stat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// File, directory or symlink.
    pub kind: FileType,
    /// Size in bytes; entries for a directory; target length for a symlink.
    pub len: u64,
    /// Bytes of file data actually stored.
    pub held: u64,
    /// Inode number, stable for the object's life and across forks.
    pub ino: u64,
    /// Hard links (2 + subdirectories for a directory).
    pub nlink: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Last access (changed only by `set_times`: reads do not write).
    pub atime: Timestamp,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last metadata change.
    pub ctime: Timestamp,
}

impl Metadata {
    pub(super) fn of(ino: Ino, i: &Inode) -> Metadata {
        Metadata {
            kind: i.kind(),
            len: i.size(),
            held: i.held(),
            ino,
            nlink: i.nlink as u64,
            mode: i.mode,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Dir
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.kind == FileType::File
    }

    /// Whether this is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.kind == FileType::Symlink
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    /// The entry's name (no allocation of its own: see [`Name`]).
    pub name: Name,
    /// The inode it names.
    pub ino: u64,
    /// Its kind.
    pub kind: FileType,
}

pub(super) fn stat(tree: &Tree, base: Base, path: &str, follow: bool) -> Result<Metadata> {
    let (ino, inode) = tree.lookup_inode(base, path, follow)?;
    Ok(Metadata::of(ino, inode))
}

pub(super) fn read_file(tree: &Tree, base: Base, path: &str) -> Result<Vec<u8>> {
    let (_, inode) = tree.lookup_inode(base, path, true)?;
    let Some(content) = inode.content() else {
        return err(ErrorKind::IsADirectory);
    };
    if inode.mode & 0o400 == 0 {
        return err(ErrorKind::PermissionDenied);
    }
    read_content(content, tree.limits().max_bytes)
}

/// The whole content as bytes, refusing sizes that would allocate more than
/// the sandbox may hold (a sparse file can be far larger than its data).
fn read_content(content: &Content, max_bytes: u64) -> Result<Vec<u8>> {
    let size = content.size();
    if size > max_bytes.max(content.held()) || size > isize::MAX as u64 {
        return Err(Error::with(
            ErrorKind::FileTooLarge,
            format!("{size} bytes is over the sandbox's byte limit"),
        ));
    }
    // Copied into place, not zeroed first: only holes are filled.
    let mut out = Vec::with_capacity(size as usize);
    content.read_into(&mut out)?;
    Ok(out)
}

pub(super) fn read_dir(tree: &Tree, base: Base, path: &str) -> Result<Vec<DirEntry>> {
    let ino = tree.lookup(base, path, true)?;
    dir_page(tree, ino, None, usize::MAX)
}

pub(super) fn dir_page(
    tree: &Tree,
    ino: Ino,
    after: Option<&str>,
    max: usize,
) -> Result<Vec<DirEntry>> {
    let inode = tree.get(ino)?;
    let Some(entries) = inode.entries() else {
        return err(ErrorKind::NotADirectory);
    };
    if inode.mode & 0o400 == 0 {
        return err(ErrorKind::PermissionDenied);
    }
    let to_entry = |(n, e): (&Name, &Entry)| DirEntry {
        name: n.clone(),
        ino: e.ino,
        kind: e.kind,
    };
    Ok(match after {
        None => entries.iter().take(max).map(to_entry).collect(),
        Some(a) => {
            use std::ops::Bound;
            let key: Name = Name::from(a);
            entries
                .range((Bound::Excluded(key), Bound::Unbounded))
                .take(max)
                .map(to_entry)
                .collect()
        }
    })
}

pub(super) fn read_link(tree: &Tree, base: Base, path: &str) -> Result<String> {
    let ino = tree.lookup(base, path, false)?;
    match &tree.get(ino)?.node {
        Node::Symlink(t) => Ok(t.to_string()),
        _ => err(ErrorKind::InvalidInput),
    }
}
