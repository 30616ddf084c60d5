//! What a sandbox may hold and what it holds: [`Limits`], [`parse_size`]
//! for writing them, the [`Usage`] a sandbox reports, and the `Counters`
//! the tree keeps up to date for both (invariant 5).

use crate::error::{Error, ErrorKind, Result};
use crate::path::{NAME_MAX, PATH_MAX, SYMLINK_HOPS};

/// Resource limits of one sandbox. Going over one fails the operation with
/// `ENOSPC` (bytes), `EDQUOT` (inodes), `EFBIG` (file size), `EMFILE`
/// (descriptors) or `ENAMETOOLONG`/`ELOOP` (names, paths, symlink hops), and
/// changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of host memory the tree may cost, as [`Usage::charged_bytes`]
    /// counts them: every stored chunk at its allocation size (its data
    /// rounded up by at most an eighth) plus 192 bytes, every inode 384
    /// bytes plus its symlink target, every directory entry 160 bytes plus
    /// its name. Holes are free. So whatever a sandbox creates (hard links,
    /// long names, one byte in every chunk), the host holds about this
    /// much for it, not more. Default 4 GiB.
    pub max_bytes: u64,
    /// Live inodes, the root included. Default 1,000,000.
    pub max_inodes: u64,
    /// Logical size of one file. Default 4 TiB.
    pub max_file_size: u64,
    /// Open descriptors at once. Default 4,096.
    pub max_open_files: u32,
    /// Bytes in one name. Default 255 (`NAME_MAX`). Names are never longer
    /// than 65,535 bytes, whatever this says (the root hash encodes a
    /// name's length in 16 bits).
    pub max_name_len: u32,
    /// Bytes in one path, counted as `PATH_MAX` is, with its terminating
    /// NUL: a path must be shorter. Default 4,096 (`PATH_MAX`).
    pub max_path_len: u32,
    /// Symlinks one resolution may follow. Default 40.
    pub max_symlink_hops: u32,
    /// Chunk bytes the sandbox holds that its base snapshot does not share
    /// ([`Usage::private_bytes`]: new data and copy-on-write copies, each
    /// chunk charged as for `max_bytes`, net of what it freed). For a tree
    /// made from scratch every chunk is private. Going over it fails the
    /// write (or the truncation that must copy the chunk it cuts) with
    /// `ENOSPC`. `max_bytes` alone cannot bound this: rewriting a byte of
    /// each chunk of a large base file copies the chunks without holding
    /// more bytes. Default 256 MiB: room for a package install or a build
    /// in each sandbox, while 1,000 concurrent forks of a large base can
    /// make the host hold at most 256 GiB beyond the base, however big the
    /// base is (without it, each fork could copy all of it).
    pub max_private_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 4 << 30,
            max_inodes: 1_000_000,
            max_file_size: 4 << 40,
            max_open_files: 4096,
            max_name_len: NAME_MAX as u32,
            max_path_len: PATH_MAX as u32,
            max_symlink_hops: SYMLINK_HOPS,
            max_private_bytes: 256 << 20,
        }
    }
}

impl Limits {
    /// No limits beyond what the engine itself needs (names, paths, hops
    /// keep their POSIX defaults).
    pub fn unlimited() -> Limits {
        Limits {
            max_bytes: u64::MAX,
            max_inodes: u64::MAX,
            max_file_size: u64::MAX / 2,
            max_open_files: u32::MAX,
            max_private_bytes: u64::MAX,
            ..Limits::default()
        }
    }
}

/// Parses a size as people write one for a limit: `1234`, `64K`, `512M`,
/// `4G`, `1T`, with an optional `B` or `iB` (the units are powers of 1024).
///
/// ```
/// assert_eq!(cowvfs::parse_size("512MiB").unwrap(), 512 << 20);
/// assert!(cowvfs::parse_size("5Q").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |why: &str| Error::with(ErrorKind::InvalidInput, format!("size {s:?}: {why}"));
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad("unknown unit (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad("not a number"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| bad("too large"))
}

/// What a tree holds right now. Always equal to what a full walk counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of file data stored (holes are free), counted per file.
    pub held_bytes: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
    /// Live inodes, the root and open-but-unlinked files included.
    pub inodes: u64,
    /// Open descriptors.
    pub open_files: u64,
    /// `held_bytes` of the snapshot this sandbox was forked from.
    pub base_held_bytes: u64,
    /// Chunk bytes this sandbox allocated since its fork (new data and
    /// copy-on-write copies), never decreasing.
    pub allocated_bytes: u64,
    /// What [`Limits::max_bytes`] limits: the host memory the tree costs
    /// (chunks at their allocation size plus overhead, inodes, entries,
    /// names, symlink targets).
    pub charged_bytes: u64,
    /// What [`Limits::max_private_bytes`] limits: the charge of the chunks
    /// this sandbox holds that its base snapshot does not share (0 for a
    /// snapshot).
    pub private_bytes: u64,
}

/// Counters kept up to date on every change (invariant 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub held: u64,
    pub logical: u64,
    pub inodes: u64,
    /// What `max_bytes` limits: every inode's and entry's charge.
    pub charged: u64,
}

impl Counters {
    /// The [`Usage`] these counters make with what only a sandbox knows
    /// (a snapshot passes zeros and its own `held` as the base).
    pub(crate) fn usage(&self, open: u64, base_held: u64, allocated: u64, private: u64) -> Usage {
        Usage {
            held_bytes: self.held,
            logical_bytes: self.logical,
            inodes: self.inodes,
            open_files: open,
            base_held_bytes: base_held,
            allocated_bytes: allocated,
            charged_bytes: self.charged,
            private_bytes: private,
        }
    }
}
