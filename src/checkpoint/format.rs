//! The wire format: header, records and version. Only this file knows
//! how a checkpoint's bytes are laid out:
//!
//! ```text
//! magic "cowvfs\0ck" [9] | version u16 | flags u16 | root hash [32]
//! | parent root hash [32]  (delta only)
//! | meta length u64 | data length u64 | blake3 of meta [32]
//! | meta: postcard-encoded TreeRecord
//! | data: the stored chunks, back to back, in record order
//! | trailing hash [32]: blake3 of the header and the metadata
//!   (version 1: of everything before it, the data too)
//! ```
//!
//! (integers little-endian). Against DESIGN.md's sketch this adds the two
//! lengths and a hash of the metadata: the lengths let a reader check every
//! size against the bytes actually there before it allocates, and the meta
//! hash lets [`Snapshot::open`](crate::Snapshot::open) verify the metadata
//! without reading the data, whose chunks are then verified one by one
//! against their blake3 address when first read. The full loaders
//! ([`Snapshot::load`](crate::Snapshot::load), [`verify`](super::verify))
//! check every chunk and the trailing hash.
//!
//! Version 2 stopped the trailing hash at the metadata. The metadata names
//! every stored chunk by its blake3 address, and every loader checks each
//! chunk against it, so a hash of the data section as well proved nothing
//! more; it cost a second pass over every byte on each save, full load and
//! pull. Version 1 files are still read, their trailing hash checked over
//! everything as before.
//!
//! Stored chunks are raw or zstd-compressed (`compress`, `decompress`).

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::time::Timestamp;
use crate::tree::FileType;

/// The format version this build writes. It reads this one and every one
/// back to [`FIRST_VERSION`].
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const FIRST_VERSION: u16 = 1;

const MAGIC: [u8; 9] = *b"cowvfs\0ck";
const FLAG_DELTA: u16 = 1;
const FLAG_ZSTD: u16 = 2;
const KNOWN_FLAGS: u16 = FLAG_DELTA | FLAG_ZSTD;
/// Magic, version, flags, root hash.
const FIXED_LEN: usize = 9 + 2 + 2 + 32;
/// Meta length, data length, meta hash.
const LENS_LEN: usize = 8 + 8 + 32;
const TRAILER_LEN: u64 = 32;
/// The longest name the root hash can encode (it stores a u16 length).
pub(super) const NAME_LIMIT: usize = u16::MAX as usize;

pub(super) const CODEC_RAW: u8 = 0;
pub(super) const CODEC_ZSTD: u8 = 1;

// -------------------------------------------------------------------------
// Wire types (postcard). Field order is the format: append, never reorder.

/// The metadata section: the whole tree (or, in a delta, what changed),
/// with the chunks it stores. The fleet store keeps this same record, with
/// the header, inside its own manifest objects.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct TreeRecord<'a> {
    pub(super) next_ino: u64,
    pub(super) limits: LimitsRec,
    /// Chunks stored in this file, in data order.
    #[serde(deserialize_with = "budgeted")]
    pub(super) blobs: Vec<BlobRec>,
    /// Addresses of the parent's chunks that this delta reuses.
    #[serde(deserialize_with = "budgeted")]
    pub(super) parent_blobs: Vec<[u8; 32]>,
    /// Inodes, by strictly increasing number.
    #[serde(borrow, deserialize_with = "budgeted")]
    pub(super) inodes: Vec<InodeRec<'a>>,
    /// Delta only: parent inodes that are gone, increasing.
    #[serde(deserialize_with = "budgeted")]
    pub(super) removed: Vec<u64>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct LimitsRec {
    pub(super) max_bytes: u64,
    pub(super) max_inodes: u64,
    pub(super) max_file_size: u64,
    pub(super) max_open_files: u32,
    pub(super) max_name_len: u32,
    pub(super) max_path_len: u32,
    pub(super) max_symlink_hops: u32,
}

impl From<&Limits> for LimitsRec {
    fn from(l: &Limits) -> LimitsRec {
        LimitsRec {
            max_bytes: l.max_bytes,
            max_inodes: l.max_inodes,
            max_file_size: l.max_file_size,
            max_open_files: l.max_open_files,
            max_name_len: l.max_name_len,
            max_path_len: l.max_path_len,
            max_symlink_hops: l.max_symlink_hops,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub(super) struct BlobRec {
    pub(super) addr: [u8; 32],
    /// Length of the chunk's bytes without trailing zeros.
    pub(super) raw_len: u32,
    /// Bytes in the data section (less than `raw_len` when compressed).
    pub(super) stored_len: u32,
    pub(super) codec: u8,
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct InodeRec<'a> {
    pub(super) ino: u64,
    pub(super) mode: u32,
    pub(super) atime: Timestamp,
    pub(super) mtime: Timestamp,
    pub(super) ctime: Timestamp,
    #[serde(borrow)]
    pub(super) node: NodeRec<'a>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) enum NodeRec<'a> {
    File {
        size: u64,
        #[serde(deserialize_with = "budgeted")]
        chunks: Vec<ChunkRec>,
    },
    /// Delta only: the parent's file at this inode with chunks replaced.
    FilePatch {
        size: u64,
        #[serde(deserialize_with = "budgeted")]
        set: Vec<ChunkRec>,
        #[serde(deserialize_with = "budgeted")]
        clear: Vec<u64>,
    },
    Dir {
        #[serde(borrow, deserialize_with = "budgeted")]
        entries: Vec<EntryRec<'a>>,
    },
    /// Delta only: the parent's directory at this inode with entries changed.
    DirPatch {
        #[serde(borrow, deserialize_with = "budgeted")]
        set: Vec<EntryRec<'a>>,
        #[serde(borrow, deserialize_with = "budgeted")]
        remove: Vec<&'a str>,
    },
    Symlink {
        target: &'a str,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ChunkRec {
    pub(super) idx: u64,
    /// The chunk's length in the file (its stored bytes plus implied zeros).
    pub(super) len: u32,
    pub(super) blob: BlobRef,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub(super) enum BlobRef {
    /// Reads as zeros; nothing stored.
    Zeros,
    /// Index into `TreeRecord::blobs`.
    Own(u32),
    /// Index into `TreeRecord::parent_blobs`.
    Parent(u32),
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct EntryRec<'a> {
    pub(super) name: &'a str,
    pub(super) ino: u64,
    /// 0 file, 1 directory, 2 symlink.
    pub(super) kind: u8,
}

// -------------------------------------------------------------------------
// Decoding within a memory budget

std::thread_local! {
    /// Bytes the lists of the metadata being decoded on this thread may
    /// still take ([`with_decode_budget`]).
    static DECODE_LEFT: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
    /// Whether a list went past the budget (postcard keeps no message of
    /// a decoder's own error, so the reason travels here).
    static DECODE_OVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `decode` with at most `budget` bytes for the lists it builds.
///
/// A list element can take far more memory than its bytes on the wire
/// (an empty name: 1 byte read, 16 held), so a limit on the metadata's
/// length alone lets a hostile file ask for many times it. Every list of
/// the metadata is built through [`budgeted`], which counts what it
/// allocates against this budget and fails the decode once past it; the
/// flag returned says whether that is why it failed.
pub(super) fn with_decode_budget<T>(budget: u64, decode: impl FnOnce() -> T) -> (T, bool) {
    /// Puts the thread's budget back however the decode ends.
    struct Restore(u64, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODE_LEFT.set(self.0);
            DECODE_OVER.set(self.1);
        }
    }
    let _restore = Restore(DECODE_LEFT.replace(budget), DECODE_OVER.replace(false));
    let out = decode();
    (out, DECODE_OVER.get())
}

/// A list, its allocation counted against the decode budget as it grows
/// (so at most twice the elements' size, as a vector grows).
fn budgeted<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Budgeted<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Budgeted<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<T>, A::Error> {
            let size = std::mem::size_of::<T>().max(1) as u64;
            let mut out: Vec<T> = Vec::new();
            while let Some(x) = seq.next_element()? {
                if out.len() == out.capacity() {
                    let more = out.capacity().max(4);
                    let cost = more as u64 * size;
                    let left = DECODE_LEFT.get();
                    if cost > left {
                        DECODE_OVER.set(true);
                        return Err(serde::de::Error::custom(
                            "its lists would take more memory than the loader's byte limit",
                        ));
                    }
                    DECODE_LEFT.set(left - cost);
                    out.reserve_exact(more);
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Budgeted(std::marker::PhantomData))
}

pub(super) fn kind_code(k: FileType) -> u8 {
    match k {
        FileType::File => 0,
        FileType::Dir => 1,
        FileType::Symlink => 2,
    }
}

pub(super) fn kind_of(code: u8) -> Result<FileType> {
    match code {
        0 => Ok(FileType::File),
        1 => Ok(FileType::Dir),
        2 => Ok(FileType::Symlink),
        k => Err(Error::corrupt(format!("unknown entry kind {k}"))),
    }
}

pub(super) fn hex(h: &blake3::Hash) -> String {
    h.to_hex().to_string()
}

// -------------------------------------------------------------------------
// Header

/// The fixed part of a checkpoint, readable without the rest
/// ([`read_header`](super::read_header)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`FORMAT_VERSION`] for files this build writes).
    pub version: u16,
    /// Whether some chunks are zstd-compressed.
    pub compressed: bool,
    /// Root hash of the tree the checkpoint holds.
    pub root_hash: blake3::Hash,
    /// For a delta, the root hash of the parent it needs.
    pub parent_hash: Option<blake3::Hash>,
    /// Bytes of metadata.
    pub meta_len: u64,
    /// Bytes of stored chunk data.
    pub data_len: u64,
    pub(super) meta_hash: blake3::Hash,
}

impl Header {
    /// A header of this build's version, for [`seal_for_fuzzing`], which
    /// fills in the lengths and hashes. Fuzzing only.
    #[doc(hidden)]
    pub fn for_fuzzing(
        compressed: bool,
        root_hash: blake3::Hash,
        parent_hash: Option<blake3::Hash>,
    ) -> Header {
        Header {
            version: FORMAT_VERSION,
            compressed,
            root_hash,
            parent_hash,
            meta_len: 0,
            data_len: 0,
            meta_hash: blake3::Hash::from([0; 32]),
        }
    }

    /// Whether loading needs a parent checkpoint.
    pub fn is_delta(&self) -> bool {
        self.parent_hash.is_some()
    }

    /// Whether the trailing hash covers the data section too (version 1),
    /// not just the header and the metadata.
    pub(super) fn trailer_covers_data(&self) -> bool {
        self.version < 2
    }

    fn encoded_len(&self) -> u64 {
        (FIXED_LEN + LENS_LEN + if self.is_delta() { 32 } else { 0 }) as u64
    }

    /// The exact length of the whole file, if it fits in a u64.
    pub fn file_len(&self) -> Option<u64> {
        self.encoded_len()
            .checked_add(self.meta_len)?
            .checked_add(self.data_len)?
            .checked_add(TRAILER_LEN)
    }

    /// Checks that a file of `len` bytes is exactly what the header
    /// describes.
    pub(super) fn check_file_len(&self, len: u64) -> Result<()> {
        if self.file_len() == Some(len) {
            return Ok(());
        }
        Err(Error::corrupt(format!(
            "file is {len} bytes but its header describes {}",
            self.file_len().unwrap_or(u64::MAX)
        )))
    }

    pub(super) fn data_offset(&self) -> u64 {
        self.encoded_len() + self.meta_len
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        let mut flags = 0;
        if self.is_delta() {
            flags |= FLAG_DELTA;
        }
        if self.compressed {
            flags |= FLAG_ZSTD;
        }
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(self.root_hash.as_bytes());
        if let Some(p) = &self.parent_hash {
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(&self.meta_len.to_le_bytes());
        out.extend_from_slice(&self.data_len.to_le_bytes());
        out.extend_from_slice(self.meta_hash.as_bytes());
        out
    }

    pub(super) fn decode(r: &mut dyn Read) -> Result<Header> {
        let mut fixed = [0u8; FIXED_LEN];
        // The magic first, so any short non-checkpoint is named as such.
        read_exact(r, &mut fixed[..9], "header").map_err(|e| match e.kind() {
            ErrorKind::Corrupt => {
                Error::corrupt("not a cowvfs checkpoint (too short for the magic)")
            }
            _ => e,
        })?;
        if fixed[..9] != MAGIC {
            return Err(Error::corrupt("not a cowvfs checkpoint (bad magic)"));
        }
        read_exact(r, &mut fixed[9..], "header")?;
        let version = u16::from_le_bytes([fixed[9], fixed[10]]);
        if !(FIRST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::with(
                ErrorKind::Unsupported,
                format!(
                    "checkpoint format version {version} is not supported \
                     (this build reads versions {FIRST_VERSION} to {FORMAT_VERSION})"
                ),
            ));
        }
        let flags = u16::from_le_bytes([fixed[11], fixed[12]]);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::with(
                ErrorKind::Unsupported,
                format!("checkpoint uses unknown feature flags {flags:#06x}"),
            ));
        }
        let root_hash = hash_at(&fixed[13..45]);
        let parent_hash = if flags & FLAG_DELTA != 0 {
            let mut p = [0u8; 32];
            read_exact(r, &mut p, "header")?;
            Some(blake3::Hash::from_bytes(p))
        } else {
            None
        };
        let mut lens = [0u8; LENS_LEN];
        read_exact(r, &mut lens, "header")?;
        let meta_len = u64::from_le_bytes(lens[0..8].try_into().unwrap_or_default());
        let data_len = u64::from_le_bytes(lens[8..16].try_into().unwrap_or_default());
        let h = Header {
            version,
            compressed: flags & FLAG_ZSTD != 0,
            root_hash,
            parent_hash,
            meta_len,
            data_len,
            meta_hash: hash_at(&lens[16..48]),
        };
        if h.file_len().is_none() {
            return Err(Error::corrupt("section lengths overflow"));
        }
        Ok(h)
    }
}

fn hash_at(b: &[u8]) -> blake3::Hash {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    blake3::Hash::from_bytes(a)
}

pub(super) fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corrupt(format!("checkpoint is truncated (in the {what})"))
        } else {
            Error::from(e)
        }
    })
}

#[cfg(feature = "zstd")]
pub(super) fn compress(bytes: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(bytes, 3).map_err(|e| Error::with(ErrorKind::Io, format!("zstd: {e}")))
}

#[cfg(not(feature = "zstd"))]
pub(super) fn compress(_bytes: &[u8]) -> Result<Vec<u8>> {
    Err(Error::with(
        ErrorKind::Unsupported,
        "compression needs cowvfs built with the `zstd` feature",
    ))
}

#[cfg(feature = "zstd")]
pub(super) fn decompress(stored: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    // The capacity bounds the output, so a zstd bomb cannot inflate memory.
    let out = zstd::bulk::decompress(stored, raw_len as usize)
        .map_err(|e| Error::corrupt(format!("chunk does not decompress: {e}")))?;
    if out.len() != raw_len as usize {
        return Err(Error::corrupt("chunk decompresses to the wrong length"));
    }
    Ok(out)
}

#[cfg(not(feature = "zstd"))]
pub(super) fn decompress(_stored: &[u8], _raw_len: u32) -> Result<Vec<u8>> {
    Err(Error::with(
        ErrorKind::Unsupported,
        "checkpoint has zstd-compressed chunks; cowvfs was built without the `zstd` feature",
    ))
}

// -------------------------------------------------------------------------
// Fuzzing hooks

/// Splits checkpoint bytes into (header, metadata, data), as far as the
/// header's lengths say and the bytes reach; `None` if the header does
/// not decode. For structure-aware fuzzing: mutate the metadata (postcard)
/// or the data and put the file back together with [`seal_for_fuzzing`].
#[doc(hidden)]
pub fn split_for_fuzzing(bytes: &[u8]) -> Option<(Header, &[u8], &[u8])> {
    let mut r = bytes;
    let h = Header::decode(&mut r).ok()?;
    let meta_len = usize::try_from(h.meta_len).ok()?.min(r.len());
    let (meta, rest) = r.split_at(meta_len);
    let data_len = usize::try_from(h.data_len).ok()?.min(rest.len());
    Some((h, meta, &rest[..data_len]))
}

/// A checkpoint holding exactly `meta` and `data` under `header`'s version,
/// flags, root and parent hashes, with the lengths, the metadata hash and
/// the trailing hash made to match, so the decoder gets past every hash
/// check to the structural ones. Fuzzing only: it seals whatever it is
/// given.
#[doc(hidden)]
pub fn seal_for_fuzzing(header: &Header, meta: &[u8], data: &[u8]) -> Vec<u8> {
    let h = Header {
        meta_len: meta.len() as u64,
        data_len: data.len() as u64,
        meta_hash: blake3::hash(meta),
        ..header.clone()
    };
    let mut out = h.encode();
    out.extend_from_slice(meta);
    let covered = if h.trailer_covers_data() {
        out.len() + data.len()
    } else {
        out.len()
    };
    out.extend_from_slice(data);
    let trailer = blake3::hash(&out[..covered]);
    out.extend_from_slice(trailer.as_bytes());
    out
}
