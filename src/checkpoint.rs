//! Checkpoint files: versioned, verified, deduplicated snapshots on disk.
//!
//! This module alone owns the wire format. A checkpoint is
//!
//! ```text
//! magic "cowvfs\0ck" [9] | version u16 | flags u16 | root hash [32]
//! | parent root hash [32]  (delta only)
//! | meta length u64 | data length u64 | blake3 of meta [32]
//! | meta: postcard-encoded Manifest
//! | data: the stored chunks, back to back, in manifest order
//! | blake3 of everything before [32]
//! ```
//!
//! (integers little-endian). Against DESIGN.md's sketch this adds the two
//! lengths and a hash of the metadata: the lengths let a reader check every
//! size against the bytes actually there before it allocates, and the meta
//! hash lets [`Snapshot::open`] verify the metadata without reading the data,
//! whose chunks are then verified one by one against their blake3 address
//! when first read. The full loaders ([`Snapshot::load`], [`verify`]) check
//! the trailing hash as well.
//!
//! Chunks are stored once per address (blake3 of the chunk without trailing
//! zeros, see `blob`), with those trailing zeros dropped; a file refers to
//! them by index and records each chunk's own length, so `held` survives a
//! round trip. A delta stores only the inodes that differ from its parent
//! (files and directories as patches against the parent's version) and only
//! the chunks the parent lacks; it names the parent's chunks it reuses by
//! address.
//!
//! Loading never trusts the file: every record is checked, the rebuilt tree
//! must satisfy the engine invariants (links, nlink, reachability, counters,
//! next inode number) and hash to the root hash in the header. Bad input is
//! an [`ErrorKind::Corrupt`] error (an unknown version or feature is
//! [`ErrorKind::Unsupported`], a delta offered the wrong parent is
//! [`ErrorKind::InvalidInput`]); nothing is returned half-built.
//!
//! A checkpoint never sets its own limits. The file still records the
//! limits it was saved under (the format keeps the field), but loading
//! ignores them: a loaded or opened snapshot, and every fork of it, has
//! the loader's limits ([`Limits::default`] unless given, as with
//! [`Snapshot::load_with_limits`]), and the tree is checked against them
//! as if a sandbox had made it: file sizes, name and symlink-target
//! lengths, link counts, inodes and bytes charged. The metadata section
//! is read incrementally and may not exceed the loader's `max_bytes`.
//!
//! ```
//! # use cowvfs::Vfs;
//! # use cowvfs::Snapshot;
//! let dir = tempfile::tempdir()?;
//! let mut v = Vfs::new();
//! v.write_file("/hello", b"world")?;
//! let base = v.snapshot();
//! base.save(dir.path().join("base.ck"))?;
//!
//! v.write_file("/second", b"file")?;
//! let next = v.snapshot();
//! next.save_delta(&base, dir.path().join("next.ck"))?;
//!
//! let base2 = Snapshot::load(dir.path().join("base.ck"))?;
//! let next2 = Snapshot::load_delta(dir.path().join("next.ck"), &base2)?;
//! assert_eq!(next2.root_hash(), next.root_hash());
//! assert_eq!(next2.read_file("/second")?, b"file");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::blob::{Blob, Chunk, ChunkSource};
use crate::chunkmap::ChunkMap;
use crate::content::{CHUNK_SIZE, Content, chunk_charge};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{Counters, Limits};
use crate::path;
use crate::time::Timestamp;
use crate::tree::{Entry, FileType, Ino, Inode, MAX_LINKS, Name, Node, ROOT, Tree, entry_charge};
use crate::vfs::Snapshot;

/// The format version this build writes. It reads this one only so far;
/// a later format bumps it and keeps reading the old ones.
pub const FORMAT_VERSION: u16 = 1;

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
const NAME_LIMIT: usize = u16::MAX as usize;

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

// -------------------------------------------------------------------------
// Wire types (postcard). Field order is the format: append, never reorder.

#[derive(Serialize, Deserialize, Debug)]
struct Manifest<'a> {
    next_ino: u64,
    limits: LimitsRec,
    /// Chunks stored in this file, in data order.
    blobs: Vec<BlobRec>,
    /// Addresses of the parent's chunks that this delta reuses.
    parent_blobs: Vec<[u8; 32]>,
    /// Inodes, by strictly increasing number.
    #[serde(borrow)]
    inodes: Vec<InodeRec<'a>>,
    /// Delta only: parent inodes that are gone, increasing.
    removed: Vec<u64>,
}

#[derive(Serialize, Deserialize, Debug)]
struct LimitsRec {
    max_bytes: u64,
    max_inodes: u64,
    max_file_size: u64,
    max_open_files: u32,
    max_name_len: u32,
    max_path_len: u32,
    max_symlink_hops: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct BlobRec {
    addr: [u8; 32],
    /// Length of the chunk's bytes without trailing zeros.
    raw_len: u32,
    /// Bytes in the data section (less than `raw_len` when compressed).
    stored_len: u32,
    codec: u8,
}

#[derive(Serialize, Deserialize, Debug)]
struct InodeRec<'a> {
    ino: u64,
    mode: u32,
    atime: Timestamp,
    mtime: Timestamp,
    ctime: Timestamp,
    #[serde(borrow)]
    node: NodeRec<'a>,
}

#[derive(Serialize, Deserialize, Debug)]
enum NodeRec<'a> {
    File {
        size: u64,
        chunks: Vec<ChunkRec>,
    },
    /// Delta only: the parent's file at this inode with chunks replaced.
    FilePatch {
        size: u64,
        set: Vec<ChunkRec>,
        clear: Vec<u64>,
    },
    Dir {
        #[serde(borrow)]
        entries: Vec<EntryRec<'a>>,
    },
    /// Delta only: the parent's directory at this inode with entries changed.
    DirPatch {
        #[serde(borrow)]
        set: Vec<EntryRec<'a>>,
        #[serde(borrow)]
        remove: Vec<&'a str>,
    },
    Symlink {
        target: &'a str,
    },
}

#[derive(Serialize, Deserialize, Debug)]
struct ChunkRec {
    idx: u64,
    /// The chunk's length in the file (its stored bytes plus implied zeros).
    len: u32,
    blob: BlobRef,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
enum BlobRef {
    /// Reads as zeros; nothing stored.
    Zeros,
    /// Index into `Manifest::blobs`.
    Own(u32),
    /// Index into `Manifest::parent_blobs`.
    Parent(u32),
}

#[derive(Serialize, Deserialize, Debug)]
struct EntryRec<'a> {
    name: &'a str,
    ino: u64,
    /// 0 file, 1 directory, 2 symlink.
    kind: u8,
}

fn kind_code(k: FileType) -> u8 {
    match k {
        FileType::File => 0,
        FileType::Dir => 1,
        FileType::Symlink => 2,
    }
}

fn kind_of(code: u8) -> Result<FileType> {
    match code {
        0 => Ok(FileType::File),
        1 => Ok(FileType::Dir),
        2 => Ok(FileType::Symlink),
        k => Err(corrupt(format!("unknown entry kind {k}"))),
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::with(ErrorKind::Corrupt, msg.into())
}

fn hex(h: &blake3::Hash) -> String {
    h.to_hex().to_string()
}

// -------------------------------------------------------------------------
// Header

/// The fixed part of a checkpoint, readable without the rest
/// ([`read_header`]).
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
    meta_hash: blake3::Hash,
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

    fn data_offset(&self) -> u64 {
        self.encoded_len() + self.meta_len
    }

    fn encode(&self) -> Vec<u8> {
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

    fn decode(r: &mut dyn Read) -> Result<Header> {
        let mut fixed = [0u8; FIXED_LEN];
        // The magic first, so any short non-checkpoint is named as such.
        read_exact(r, &mut fixed[..9], "header").map_err(|e| match e.kind() {
            ErrorKind::Corrupt => corrupt("not a cowvfs checkpoint (too short for the magic)"),
            _ => e,
        })?;
        if fixed[..9] != MAGIC {
            return Err(corrupt("not a cowvfs checkpoint (bad magic)"));
        }
        read_exact(r, &mut fixed[9..], "header")?;
        let version = u16::from_le_bytes([fixed[9], fixed[10]]);
        if version != FORMAT_VERSION {
            return Err(Error::with(
                ErrorKind::Unsupported,
                format!(
                    "checkpoint format version {version} is not supported \
                     (this build reads version {FORMAT_VERSION})"
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
            return Err(corrupt("section lengths overflow"));
        }
        Ok(h)
    }
}

fn hash_at(b: &[u8]) -> blake3::Hash {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    blake3::Hash::from_bytes(a)
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(format!("checkpoint is truncated (in the {what})"))
        } else {
            Error::from(e)
        }
    })
}

/// Reads the header of the checkpoint at `path`: version, root hash,
/// parent hash. Cheap: reads at most 125 bytes.
pub fn read_header(path: impl AsRef<Path>) -> Result<Header> {
    let path = path.as_ref();
    let mut f = File::open(path).map_err(path_err(path))?;
    Header::decode(&mut f).map_err(in_file(path))
}

fn path_err(p: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::with(ErrorKind::from_io(&e), format!("{}: {e}", p.display()))
}

fn in_file(p: &Path) -> impl FnOnce(Error) -> Error + '_ {
    move |e| {
        let what = e.context().map(str::to_string).unwrap_or_default();
        if what.starts_with(&p.display().to_string()) {
            e
        } else if what.is_empty() {
            Error::with(e.kind(), format!("{}", p.display()))
        } else {
            Error::with(e.kind(), format!("{}: {what}", p.display()))
        }
    }
}

// -------------------------------------------------------------------------
// Saving

/// How to save a checkpoint.
#[derive(Default)]
pub struct SaveOptions<'a> {
    /// Save a delta against this snapshot (which loading will need).
    pub parent: Option<&'a Snapshot>,
    /// zstd-compress chunks (needs the `zstd` feature); a chunk that does
    /// not shrink is stored raw.
    pub compress: bool,
    /// Called with (bytes written, total bytes) as the data goes out.
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Fail with an I/O error after this many bytes: for fault-injection
    /// tests of atomic saving.
    #[doc(hidden)]
    pub fail_after: Option<u64>,
}

/// What a save wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Bytes in the checkpoint.
    pub file_len: u64,
    /// Inode records written (all inodes, or the changed ones in a delta).
    pub inodes: u64,
    /// Unique chunks stored.
    pub chunks: u64,
    /// Their bytes without trailing zeros, before compression.
    pub chunk_bytes: u64,
    /// Their bytes as stored.
    pub stored_bytes: u64,
}

enum BlobOut {
    Raw(Chunk),
    Packed(Vec<u8>),
}

struct Encoded {
    header: Header,
    meta: Vec<u8>,
    blobs: Vec<BlobOut>,
    stats: SaveStats,
}

struct Encoder<'a> {
    parent: Option<&'a Tree>,
    parent_addrs: Option<HashSet<blake3::Hash>>,
    own: HashMap<blake3::Hash, u32>,
    blob_recs: Vec<BlobRec>,
    blob_out: Vec<BlobOut>,
    parent_refs: HashMap<blake3::Hash, u32>,
    parent_list: Vec<[u8; 32]>,
    compress: bool,
}

impl Encoder<'_> {
    fn chunk_ref(&mut self, idx: u64, chunk: &Chunk) -> Result<ChunkRec> {
        let len = chunk.len() as u32;
        let Some(addr) = chunk.addr() else {
            return Ok(ChunkRec {
                idx,
                len,
                blob: BlobRef::Zeros,
            });
        };
        let blob = if let Some(&i) = self.own.get(&addr) {
            BlobRef::Own(i)
        } else if let Some(&i) = self.parent_refs.get(&addr) {
            BlobRef::Parent(i)
        } else if self.parent_has(&addr) {
            let i = table_index(self.parent_list.len())?;
            self.parent_list.push(*addr.as_bytes());
            self.parent_refs.insert(addr, i);
            BlobRef::Parent(i)
        } else {
            let raw_len = chunk.trimmed_len() as u32;
            let (stored_len, codec, out) = if self.compress {
                let packed = compress(chunk.trimmed()?)?;
                if packed.len() < raw_len as usize {
                    (packed.len() as u32, CODEC_ZSTD, BlobOut::Packed(packed))
                } else {
                    (raw_len, CODEC_RAW, BlobOut::Raw(chunk.clone()))
                }
            } else {
                (raw_len, CODEC_RAW, BlobOut::Raw(chunk.clone()))
            };
            let i = table_index(self.blob_recs.len())?;
            self.blob_recs.push(BlobRec {
                addr: *addr.as_bytes(),
                raw_len,
                stored_len,
                codec,
            });
            self.blob_out.push(out);
            self.own.insert(addr, i);
            BlobRef::Own(i)
        };
        Ok(ChunkRec { idx, len, blob })
    }

    /// Whether the parent holds a chunk with this address. The index is
    /// built on first need; the parent's addresses are memoized by its root
    /// hash, so this costs one pass over its chunk lists.
    fn parent_has(&mut self, addr: &blake3::Hash) -> bool {
        let Some(p) = self.parent else {
            return false;
        };
        self.parent_addrs
            .get_or_insert_with(|| {
                let mut set = HashSet::new();
                for inode in p.inodes.values() {
                    if let Node::File(c) = &inode.node {
                        set.extend(c.chunks().filter_map(|(_, ch)| ch.addr()));
                    }
                }
                set
            })
            .contains(addr)
    }

    fn inode_rec<'t>(
        &mut self,
        ino: Ino,
        inode: &'t Inode,
        old: Option<&'t Inode>,
    ) -> Result<InodeRec<'t>> {
        let node = match (&inode.node, old.map(|o| &o.node)) {
            (Node::File(c), Some(Node::File(oc))) => {
                // Walk both chunk lists in step; a chunk the parent already
                // has at the same place with the same length is left out.
                let (mut set, mut clear) = (Vec::new(), Vec::new());
                let mut a = oc.chunk_map().iter().peekable();
                let mut b = c.chunk_map().iter().peekable();
                loop {
                    let (x, y) = (a.peek().copied(), b.peek().copied());
                    match (x, y) {
                        (None, None) => break,
                        (Some((i, _)), None) => {
                            clear.push(*i);
                            a.next();
                        }
                        (Some((i, _)), Some((j, _))) if i < j => {
                            clear.push(*i);
                            a.next();
                        }
                        (Some((i, x)), Some((j, y))) if i == j => {
                            if x != y {
                                set.push(self.chunk_ref(*j, y)?);
                            }
                            a.next();
                            b.next();
                        }
                        (_, Some((j, y))) => {
                            set.push(self.chunk_ref(*j, y)?);
                            b.next();
                        }
                    }
                }
                NodeRec::FilePatch {
                    size: c.size(),
                    set,
                    clear,
                }
            }
            (Node::File(c), _) => {
                let mut chunks = Vec::with_capacity(c.chunk_map().len());
                for (i, ch) in c.chunks() {
                    chunks.push(self.chunk_ref(i, ch)?);
                }
                NodeRec::File {
                    size: c.size(),
                    chunks,
                }
            }
            (Node::Dir(e), Some(Node::Dir(oe))) => {
                let (mut set, mut remove) = (Vec::new(), Vec::new());
                for d in oe.diff(e) {
                    match d {
                        imbl::ordmap::DiffItem::Add(n, x)
                        | imbl::ordmap::DiffItem::Update { new: (n, x), .. } => {
                            set.push(entry_rec(n, x))
                        }
                        imbl::ordmap::DiffItem::Remove(n, _) => remove.push(&**n),
                    }
                }
                NodeRec::DirPatch { set, remove }
            }
            (Node::Dir(e), _) => NodeRec::Dir {
                entries: e.iter().map(|(n, x)| entry_rec(n, x)).collect(),
            },
            (Node::Symlink(t), _) => NodeRec::Symlink { target: t },
        };
        Ok(InodeRec {
            ino,
            mode: inode.mode,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            node,
        })
    }
}

/// A position in a chunk table, which the format numbers with a u32.
fn table_index(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::with(
            ErrorKind::Unsupported,
            "more than 2^32 distinct chunks do not fit in one checkpoint",
        )
    })
}

fn entry_rec<'t>(n: &'t Name, e: &Entry) -> EntryRec<'t> {
    EntryRec {
        name: n,
        ino: e.ino,
        kind: kind_code(e.kind),
    }
}

#[cfg(feature = "zstd")]
fn compress(bytes: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(bytes, 3).map_err(|e| Error::with(ErrorKind::Io, format!("zstd: {e}")))
}

#[cfg(not(feature = "zstd"))]
fn compress(_bytes: &[u8]) -> Result<Vec<u8>> {
    Err(Error::with(
        ErrorKind::Unsupported,
        "compression needs cowvfs built with the `zstd` feature",
    ))
}

#[cfg(feature = "zstd")]
fn decompress(stored: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    // The capacity bounds the output, so a zstd bomb cannot inflate memory.
    let out = zstd::bulk::decompress(stored, raw_len as usize)
        .map_err(|e| corrupt(format!("chunk does not decompress: {e}")))?;
    if out.len() != raw_len as usize {
        return Err(corrupt("chunk decompresses to the wrong length"));
    }
    Ok(out)
}

#[cfg(not(feature = "zstd"))]
fn decompress(_stored: &[u8], _raw_len: u32) -> Result<Vec<u8>> {
    Err(Error::with(
        ErrorKind::Unsupported,
        "checkpoint has zstd-compressed chunks; cowvfs was built without the `zstd` feature",
    ))
}

fn encode(snap: &Snapshot, parent: Option<&Snapshot>, compress: bool) -> Result<Encoded> {
    if compress && !cfg!(feature = "zstd") {
        return Err(Error::with(
            ErrorKind::Unsupported,
            "compression needs cowvfs built with the `zstd` feature",
        ));
    }
    let tree = &*snap.tree;
    // Hashing first memoizes every chunk address the encoder needs.
    let root_hash = snap.root_hash();
    let parent_hash = parent.map(Snapshot::root_hash);
    let mut enc = Encoder {
        parent: parent.map(|p| &*p.tree),
        parent_addrs: None,
        own: HashMap::new(),
        blob_recs: Vec::new(),
        blob_out: Vec::new(),
        parent_refs: HashMap::new(),
        parent_list: Vec::new(),
        compress,
    };
    let mut inodes = Vec::new();
    let mut removed = Vec::new();
    match parent {
        None => {
            for (&ino, inode) in tree.inodes.iter() {
                inodes.push(enc.inode_rec(ino, inode, None)?);
            }
        }
        Some(p) => {
            use imbl::ordmap::DiffItem;
            // Pointer-pruned: the cost follows the change, not the tree.
            for d in p.tree.inodes.diff(&tree.inodes) {
                match d {
                    DiffItem::Add(&ino, inode) => inodes.push(enc.inode_rec(ino, inode, None)?),
                    DiffItem::Update {
                        old: (_, old),
                        new: (&ino, inode),
                    } => {
                        let same_kind = old.kind() == inode.kind();
                        inodes.push(enc.inode_rec(ino, inode, same_kind.then_some(&**old))?);
                    }
                    DiffItem::Remove(&ino, _) => removed.push(ino),
                }
            }
            inodes.sort_by_key(|r| r.ino);
            removed.sort_unstable();
        }
    }
    let l = &tree.limits;
    let manifest = Manifest {
        next_ino: tree.next_ino,
        limits: LimitsRec {
            max_bytes: l.max_bytes,
            max_inodes: l.max_inodes,
            max_file_size: l.max_file_size,
            max_open_files: l.max_open_files,
            max_name_len: l.max_name_len,
            max_path_len: l.max_path_len,
            max_symlink_hops: l.max_symlink_hops,
        },
        blobs: enc.blob_recs,
        parent_blobs: enc.parent_list,
        inodes,
        removed,
    };
    let meta = postcard::to_stdvec(&manifest)
        .map_err(|e| Error::with(ErrorKind::Io, format!("encoding metadata: {e}")))?;
    let data_len: u64 = manifest.blobs.iter().map(|b| b.stored_len as u64).sum();
    let header = Header {
        version: FORMAT_VERSION,
        compressed: manifest.blobs.iter().any(|b| b.codec == CODEC_ZSTD),
        root_hash,
        parent_hash,
        meta_len: meta.len() as u64,
        data_len,
        meta_hash: blake3::hash(&meta),
    };
    let stats = SaveStats {
        file_len: header.file_len().unwrap_or(u64::MAX),
        inodes: manifest.inodes.len() as u64,
        chunks: manifest.blobs.len() as u64,
        chunk_bytes: manifest.blobs.iter().map(|b| b.raw_len as u64).sum(),
        stored_bytes: data_len,
    };
    Ok(Encoded {
        header,
        meta,
        blobs: enc.blob_out,
        stats,
    })
}

fn blob_bytes(b: &BlobOut) -> Result<&[u8]> {
    match b {
        BlobOut::Raw(chunk) => chunk.trimmed(),
        BlobOut::Packed(v) => Ok(v),
    }
}

/// The trailing hash of an encoded checkpoint.
fn trailer_hash(enc: &Encoded, header: &[u8]) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header);
    hasher.update(&enc.meta);
    for b in &enc.blobs {
        hasher.update(blob_bytes(b)?);
    }
    Ok(hasher.finalize())
}

/// Past this much data the trailing hash runs on its own thread while the
/// bytes are written: hashing and writing each take about as long, so
/// overlapping them nearly halves the save time on two cores.
const PARALLEL_HASH_MIN: u64 = 8 << 20;

fn write_encoded(
    enc: &Encoded,
    w: &mut dyn Write,
    progress: &mut Option<&mut dyn FnMut(u64, u64)>,
) -> Result<()> {
    let total = enc.stats.file_len;
    let header = enc.header.encode();
    let write_all = |w: &mut dyn Write, progress: &mut Option<&mut dyn FnMut(u64, u64)>| {
        w.write_all(&header)?;
        w.write_all(&enc.meta)?;
        let mut done = (header.len() + enc.meta.len()) as u64;
        let mut last_report = 0u64;
        for b in &enc.blobs {
            let bytes = blob_bytes(b)?;
            w.write_all(bytes)?;
            done += bytes.len() as u64;
            if let Some(p) = progress.as_mut()
                && done - last_report >= 4 << 20
            {
                p(done, total);
                last_report = done;
            }
        }
        Ok::<(), Error>(())
    };
    let trailer = if enc.header.data_len >= PARALLEL_HASH_MIN {
        std::thread::scope(|s| {
            let hashing = s.spawn(|| trailer_hash(enc, &header));
            let written = write_all(w, progress);
            let hash = hashing
                .join()
                .unwrap_or_else(|_| Err(Error::with(ErrorKind::Io, "hashing thread failed")));
            written.and(hash)
        })?
    } else {
        write_all(w, progress)?;
        trailer_hash(enc, &header)?
    };
    w.write_all(trailer.as_bytes())?;
    if let Some(p) = progress.as_mut() {
        p(total, total);
    }
    Ok(())
}

/// A writer that fails after `left` bytes (fault injection).
struct FailAfter<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for FailAfter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("injected failure"));
        }
        let n = buf.len().min(self.left as usize);
        let n = self.inner.write(&buf[..n])?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a file atomically: a temporary file in the same directory,
/// fsync, rename over `path`, fsync the directory. On any failure the
/// temporary file is removed and whatever was at `path` is untouched.
pub(crate) fn write_atomic<T>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let Some(name) = path.file_name() else {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        ));
    };
    if path.is_dir() {
        return Err(Error::with(
            ErrorKind::IsADirectory,
            format!("{}: is a directory", path.display()),
        ));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(path_err(&tmp))?;
    let res = (|| -> Result<T> {
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        let t = fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        Ok(t)
    })();
    drop(file);
    let t = match res {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e.or_context(|| path.display().to_string()));
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(path_err(path)(e));
    }
    // The rename is durable only once the directory is.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(path_err(&dir))?;
    Ok(t)
}

impl Snapshot {
    /// Saves the whole tree to `path`, atomically (see the module docs).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<SaveStats> {
        self.save_with(path, SaveOptions::default())
    }

    /// Saves a delta against `parent` to `path`: only the inodes and chunks
    /// `parent` lacks. Loading it needs `parent` ([`Snapshot::load_delta`]).
    pub fn save_delta(&self, parent: &Snapshot, path: impl AsRef<Path>) -> Result<SaveStats> {
        self.save_with(
            path,
            SaveOptions {
                parent: Some(parent),
                ..SaveOptions::default()
            },
        )
    }

    /// Saves to `path` with options (delta, compression, progress).
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        mut opts: SaveOptions<'_>,
    ) -> Result<SaveStats> {
        let path = path.as_ref();
        let _span = tracing::info_span!("checkpoint_save", path = %path.display(), delta = opts.parent.is_some())
            .entered();
        tracing::info!(compress = opts.compress, "saving");
        let enc = encode(self, opts.parent, opts.compress)?;
        write_atomic(path, |w| {
            match opts.fail_after {
                Some(n) => write_encoded(
                    &enc,
                    &mut FailAfter { inner: w, left: n },
                    &mut opts.progress,
                )?,
                None => write_encoded(&enc, w, &mut opts.progress)?,
            }
            Ok(enc.stats)
        })
    }

    /// Writes the whole tree as a checkpoint to `w` (not atomic: the
    /// caller owns the destination).
    pub fn save_to(&self, w: impl Write) -> Result<SaveStats> {
        self.save_to_with(w, SaveOptions::default())
    }

    /// Writes a delta against `parent` to `w`.
    pub fn save_delta_to(&self, parent: &Snapshot, w: impl Write) -> Result<SaveStats> {
        self.save_to_with(
            w,
            SaveOptions {
                parent: Some(parent),
                ..SaveOptions::default()
            },
        )
    }

    /// Writes a checkpoint to `w` with options.
    pub fn save_to_with(&self, mut w: impl Write, mut opts: SaveOptions<'_>) -> Result<SaveStats> {
        let enc = encode(self, opts.parent, opts.compress)?;
        match opts.fail_after {
            Some(n) => write_encoded(
                &enc,
                &mut FailAfter {
                    inner: &mut w,
                    left: n,
                },
                &mut opts.progress,
            )?,
            None => write_encoded(&enc, &mut w, &mut opts.progress)?,
        }
        w.flush()?;
        Ok(enc.stats)
    }

    /// Loads and fully verifies a full checkpoint (a delta is refused with a
    /// message saying which parent it needs), under [`Limits::default`]
    /// (see [`Snapshot::load_with_limits`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Snapshot> {
        load_path(path.as_ref(), None, &Limits::default())
    }

    /// Loads and fully verifies a delta checkpoint on top of `parent`,
    /// which must be the snapshot it was saved against, under
    /// [`Limits::default`].
    pub fn load_delta(path: impl AsRef<Path>, parent: &Snapshot) -> Result<Snapshot> {
        load_path(path.as_ref(), Some(parent), &Limits::default())
    }

    /// Loads a checkpoint (a delta if `parent` is given) under `limits`,
    /// which the snapshot and its forks then have. A checkpoint never sets
    /// its own limits: one whose tree goes over `limits` (a file over
    /// `max_file_size`, a name over `max_name_len`, a symlink target over
    /// `max_path_len`, more than `max_inodes` inodes, more than
    /// `max_bytes` charged, metadata over `max_bytes`) is refused with
    /// the error a sandbox would get for it.
    pub fn load_with_limits(
        path: impl AsRef<Path>,
        parent: Option<&Snapshot>,
        limits: &Limits,
    ) -> Result<Snapshot> {
        load_path(path.as_ref(), parent, limits)
    }

    /// Reads a full checkpoint from `r`, verifying everything, under
    /// [`Limits::default`].
    pub fn load_from(r: impl Read) -> Result<Snapshot> {
        let mut r = r;
        load_stream(&mut r, None, None, &Limits::default())
    }

    /// Reads a delta checkpoint from `r` on top of `parent`, under
    /// [`Limits::default`].
    pub fn load_delta_from(r: impl Read, parent: &Snapshot) -> Result<Snapshot> {
        let mut r = r;
        load_stream(&mut r, None, Some(parent), &Limits::default())
    }

    /// Reads a checkpoint from `r` (a delta if `parent` is given) under
    /// `limits`, as [`Snapshot::load_with_limits`] does.
    pub fn load_from_with_limits(
        r: impl Read,
        parent: Option<&Snapshot>,
        limits: &Limits,
    ) -> Result<Snapshot> {
        let mut r = r;
        load_stream(&mut r, None, parent, limits)
    }

    /// Opens a full checkpoint lazily: reads and verifies only the header
    /// and metadata (the cost follows the number of inodes, not the data)
    /// and reads each chunk from the file when first needed, verifying it
    /// against its address then. A chunk that fails is an I/O error to
    /// whoever reads it. The file must not change while the snapshot or
    /// any fork of it lives.
    ///
    /// Unlike [`Snapshot::load`], this does not recompute the root hash
    /// to compare with the header's (that costs as much as the rest of the
    /// open). The tree is still exactly what the hashed metadata says, and
    /// the snapshot's [`root_hash`](Snapshot::root_hash) is computed from
    /// the tree itself when asked, never copied from the header; use
    /// [`verify`](crate::checkpoint::verify) to check a file end to end.
    ///
    /// The snapshot gets [`Limits::default`]; see
    /// [`Snapshot::open_with_limits`].
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        open_path(path.as_ref(), None, &Limits::default())
    }

    /// Opens a delta lazily on top of `parent`, under [`Limits::default`].
    pub fn open_delta(path: impl AsRef<Path>, parent: &Snapshot) -> Result<Snapshot> {
        open_path(path.as_ref(), Some(parent), &Limits::default())
    }

    /// Opens a checkpoint lazily (a delta if `parent` is given) under
    /// `limits`, with the checks [`Snapshot::load_with_limits`] makes.
    pub fn open_with_limits(
        path: impl AsRef<Path>,
        parent: Option<&Snapshot>,
        limits: &Limits,
    ) -> Result<Snapshot> {
        open_path(path.as_ref(), parent, limits)
    }
}

// -------------------------------------------------------------------------
// Loading

/// Hashes everything read through it (for the trailing hash).
struct HashRead<'a> {
    inner: &'a mut dyn Read,
    hasher: blake3::Hasher,
}

impl Read for HashRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn check_parent(h: &Header, parent: Option<&Snapshot>) -> Result<()> {
    match (&h.parent_hash, parent) {
        (None, None) => Ok(()),
        (Some(want), None) => Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "checkpoint is a delta and needs its parent (root {})",
                hex(want)
            ),
        )),
        (None, Some(_)) => Err(Error::with(
            ErrorKind::InvalidInput,
            "checkpoint is a full checkpoint, not a delta",
        )),
        (Some(want), Some(p)) => {
            let have = p.root_hash();
            if have == *want {
                Ok(())
            } else {
                Err(Error::with(
                    ErrorKind::InvalidInput,
                    format!(
                        "wrong parent: the delta needs root {}, the parent given has root {}",
                        hex(want),
                        hex(&have)
                    ),
                ))
            }
        }
    }
}

fn decode_manifest<'m>(h: &Header, meta: &'m [u8]) -> Result<Manifest<'m>> {
    let decode = || postcard::take_from_bytes::<Manifest>(meta);
    // Large metadata is hashed on a second thread while it decodes (the
    // decoder is safe on any bytes; its result is dropped on a mismatch).
    let (hash, decoded) = if meta.len() >= 1 << 20 {
        std::thread::scope(|s| {
            let hasher = s.spawn(|| blake3::hash(meta));
            let decoded = decode();
            (hasher.join().ok(), decoded)
        })
    } else {
        (Some(blake3::hash(meta)), decode())
    };
    if hash != Some(h.meta_hash) {
        return Err(corrupt("metadata does not match its hash"));
    }
    let (m, rest) = decoded.map_err(|e| corrupt(format!("metadata does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(corrupt("metadata has trailing bytes"));
    }
    // The data section must be exactly the stored chunks.
    let mut sum = 0u64;
    for b in &m.blobs {
        if b.raw_len == 0 || b.raw_len as usize > CHUNK_SIZE {
            return Err(corrupt(format!("chunk record with length {}", b.raw_len)));
        }
        match b.codec {
            CODEC_RAW if b.stored_len == b.raw_len => {}
            CODEC_ZSTD if b.stored_len > 0 && b.stored_len < b.raw_len && h.compressed => {}
            CODEC_RAW | CODEC_ZSTD => return Err(corrupt("chunk record lengths disagree")),
            c => {
                return Err(Error::with(
                    ErrorKind::Unsupported,
                    format!("chunk codec {c} is not supported"),
                ));
            }
        }
        sum += b.stored_len as u64;
    }
    if sum != h.data_len {
        return Err(corrupt("data length disagrees with the chunk records"));
    }
    if h.parent_hash.is_none() && (!m.parent_blobs.is_empty() || !m.removed.is_empty()) {
        return Err(corrupt("a full checkpoint refers to a parent"));
    }
    Ok(m)
}

/// Turns stored bytes into a verified blob.
fn verify_blob(rec: &BlobRec, stored: Vec<u8>) -> Result<Blob> {
    let raw = match rec.codec {
        CODEC_ZSTD => decompress(&stored, rec.raw_len)?,
        _ => stored,
    };
    let addr = blake3::Hash::from_bytes(rec.addr);
    if raw.len() != rec.raw_len as usize || raw.last() == Some(&0) || blake3::hash(&raw) != addr {
        return Err(corrupt(format!(
            "chunk {} does not match its address",
            hex(&addr)
        )));
    }
    Ok(Blob::loaded(raw, addr))
}

fn load_path(path: &Path, parent: Option<&Snapshot>, limits: &Limits) -> Result<Snapshot> {
    let _span =
        tracing::info_span!("checkpoint_load", path = %path.display(), delta = parent.is_some())
            .entered();
    tracing::info!("loading and verifying");
    let f = File::open(path).map_err(path_err(path))?;
    let meta = f.metadata().map_err(path_err(path))?;
    if meta.is_dir() {
        return Err(Error::with(
            ErrorKind::IsADirectory,
            format!("{}: is a directory", path.display()),
        ));
    }
    let mut r = BufReader::with_capacity(1 << 20, f);
    load_stream(&mut r, Some(meta.len()), parent, limits).map_err(in_file(path))
}

fn load_stream(
    r: &mut dyn Read,
    total: Option<u64>,
    parent: Option<&Snapshot>,
    limits: &Limits,
) -> Result<Snapshot> {
    let mut hr = HashRead {
        inner: r,
        hasher: blake3::Hasher::new(),
    };
    let h = Header::decode(&mut hr)?;
    if let Some(t) = total
        && h.file_len() != Some(t)
    {
        return Err(corrupt(format!(
            "file is {t} bytes but its header describes {}",
            h.file_len().unwrap_or(u64::MAX)
        )));
    }
    check_parent(&h, parent)?;
    let meta = read_meta(&mut hr, &h, limits)?;
    let m = decode_manifest(&h, &meta)?;
    // Every chunk stored is held once decoded, and a compressed one can be
    // a thousand times its stored size: what they will cost is checked
    // against the loader's byte limit before any is decompressed (a tree
    // that holds them costs at least this much, so nothing the limit
    // admits is refused).
    let held = m
        .blobs
        .iter()
        .try_fold(0u64, |sum, b| {
            sum.checked_add(chunk_charge(b.raw_len as usize))
        })
        .filter(|held| *held <= limits.max_bytes);
    if held.is_none() {
        return Err(Error::with(
            ErrorKind::NoSpace,
            format!(
                "checkpoint's {} stored chunks decode to more than the loader's byte limit ({})",
                m.blobs.len(),
                limits.max_bytes
            ),
        ));
    }
    let mut blobs = Vec::with_capacity(m.blobs.len());
    let mut buf = vec![0u8; CHUNK_SIZE];
    for rec in &m.blobs {
        let stored = &mut buf[..rec.stored_len as usize];
        read_exact(&mut hr, stored, "chunk data")?;
        blobs.push(Arc::new(verify_blob(rec, stored.to_vec())?));
    }
    let mut trailer = [0u8; 32];
    read_exact(hr.inner, &mut trailer, "trailing hash")?;
    if hr.hasher.finalize() != blake3::Hash::from_bytes(trailer) {
        return Err(corrupt("trailing hash does not match the contents"));
    }
    build(&h, m, blobs, parent, RootCheck::Verify, limits)
}

/// Reads the metadata section that follows the header. Its length must
/// not exceed the loader's `max_bytes` (the tree it describes costs at
/// least about that much), and the buffer grows with the bytes that
/// actually arrive: neither a lying length nor a sparse file can make
/// this allocate more than `max_bytes` or more than the input holds.
fn read_meta(r: &mut dyn Read, h: &Header, limits: &Limits) -> Result<Vec<u8>> {
    if h.meta_len > limits.max_bytes {
        // Refused as unreadable: no tree the loader accepts has it.
        return Err(corrupt(format!(
            "checkpoint metadata of {} bytes is over the loader's byte limit ({})",
            h.meta_len, limits.max_bytes
        )));
    }
    let mut meta = Vec::with_capacity(h.meta_len.min(1 << 20) as usize);
    r.take(h.meta_len).read_to_end(&mut meta)?;
    if meta.len() as u64 != h.meta_len {
        return Err(corrupt("checkpoint is truncated (in the metadata)"));
    }
    Ok(meta)
}

/// Chunk `i` of `recs`, to be fetched from `source` (key `i`) on first read.
fn lazy_blobs(recs: &[BlobRec], source: &Arc<dyn ChunkSource>) -> Vec<Arc<Blob>> {
    recs.iter()
        .enumerate()
        .map(|(i, rec)| {
            Arc::new(Blob::lazy(
                blake3::Hash::from_bytes(rec.addr),
                rec.raw_len,
                i as u64,
                source.clone(),
            ))
        })
        .collect()
}

/// Chunk bytes read from a checkpoint file on demand.
#[derive(Debug)]
struct FileSource {
    file: File,
    path: PathBuf,
    /// Offset and record of each stored chunk.
    table: Vec<(u64, BlobRec)>,
}

impl ChunkSource for FileSource {
    fn fetch(&self, key: u64, _addr: &blake3::Hash) -> Result<Vec<u8>> {
        let Some((off, rec)) = self.table.get(key as usize) else {
            return Err(Error::with(ErrorKind::Io, "chunk key out of range"));
        };
        let mut buf = vec![0u8; rec.stored_len as usize];
        self.file.read_exact_at(&mut buf, *off).map_err(|e| {
            Error::with(
                ErrorKind::Io,
                format!("{}: reading chunk: {e}", self.path.display()),
            )
        })?;
        match rec.codec {
            CODEC_ZSTD => decompress(&buf, rec.raw_len)
                .map_err(|e| Error::with(ErrorKind::Io, format!("{}: {e}", self.path.display()))),
            _ => Ok(buf),
        }
    }
}

fn open_path(path: &Path, parent: Option<&Snapshot>, limits: &Limits) -> Result<Snapshot> {
    let _span =
        tracing::info_span!("checkpoint_open", path = %path.display(), delta = parent.is_some())
            .entered();
    tracing::info!("opening lazily");
    let file = File::open(path).map_err(path_err(path))?;
    let fmeta = file.metadata().map_err(path_err(path))?;
    if fmeta.is_dir() {
        return Err(Error::with(
            ErrorKind::IsADirectory,
            format!("{}: is a directory", path.display()),
        ));
    }
    let res = (|| {
        let h = Header::decode(&mut &file)?;
        if h.file_len() != Some(fmeta.len()) {
            return Err(corrupt(format!(
                "file is {} bytes but its header describes {}",
                fmeta.len(),
                h.file_len().unwrap_or(u64::MAX)
            )));
        }
        check_parent(&h, parent)?;
        // The header was read from the start of `file`, so the metadata
        // follows at the file's position.
        let meta = read_meta(&mut &file, &h, limits)?;
        let m = decode_manifest(&h, &meta)?;
        let mut off = h.data_offset();
        let mut table = Vec::with_capacity(m.blobs.len());
        for rec in &m.blobs {
            table.push((off, *rec));
            off += rec.stored_len as u64;
        }
        let source: Arc<FileSource> = Arc::new(FileSource {
            file: file.try_clone()?,
            path: path.to_path_buf(),
            table,
        });
        let blobs = lazy_blobs(&m.blobs, &(source as Arc<dyn ChunkSource>));
        build(&h, m, blobs, parent, RootCheck::Defer, limits)
    })();
    res.map_err(in_file(path))
}

// -------------------------------------------------------------------------
// Rebuilding the tree

fn check_time(t: Timestamp) -> Result<()> {
    if t.nanos >= 1_000_000_000 {
        return Err(corrupt("timestamp with nanoseconds out of range"));
    }
    Ok(())
}

fn content_from(
    size: u64,
    mut chunks: ChunkMap,
    set: Vec<ChunkRec>,
    clear: &[u64],
    blob_of: &dyn Fn(BlobRef) -> Result<Arc<Blob>>,
    limits: &Limits,
) -> Result<Content> {
    if size > limits.max_file_size {
        return Err(Error::with(
            ErrorKind::FileTooLarge,
            format!(
                "checkpoint holds a file of {size} bytes, over the loader's file size limit ({})",
                limits.max_file_size
            ),
        ));
    }
    let patched = !chunks.is_empty();
    for i in clear {
        if chunks.remove(i).is_none() {
            return Err(corrupt("patch clears a chunk the parent lacks"));
        }
    }
    let mut prev: Option<u64> = None;
    for r in set {
        if prev.is_some_and(|p| r.idx <= p) {
            return Err(corrupt("chunk records out of order"));
        }
        prev = Some(r.idx);
        if r.len == 0 || r.len as usize > CHUNK_SIZE {
            return Err(corrupt(format!("chunk of length {}", r.len)));
        }
        let end = r
            .idx
            .checked_mul(CHUNK_SIZE as u64)
            .and_then(|s| s.checked_add(r.len as u64));
        if end.is_none_or(|e| e > size) {
            return Err(corrupt("chunk reaches past the end of its file"));
        }
        let chunk = match r.blob {
            BlobRef::Zeros => Chunk::zeros(r.len),
            b => {
                let blob = blob_of(b)?;
                if blob.len() > r.len {
                    return Err(corrupt("chunk is longer than its place in the file"));
                }
                Chunk::from_blob(blob, r.len)
            }
        };
        chunks.insert(r.idx, chunk);
    }
    let c = Content::from_parts(size, chunks);
    if patched {
        // A patch may leave parent chunks past a shrunken size; new chunks
        // were checked one by one above.
        c.check().map_err(corrupt)?;
    }
    Ok(c)
}

fn entries_from(
    mut entries: OrdMap<Name, Entry>,
    set: Vec<EntryRec<'_>>,
    remove: Vec<&str>,
    patch: bool,
    limits: &Limits,
) -> Result<OrdMap<Name, Entry>> {
    for n in remove {
        if entries.remove(n).is_none() {
            return Err(corrupt("patch removes an entry the parent lacks"));
        }
    }
    for e in set {
        if path::check_name(e.name, NAME_LIMIT).is_err() {
            return Err(corrupt(format!("bad entry name {:?}", e.name)));
        }
        if e.name.len() > limits.max_name_len as usize {
            return Err(Error::with(
                ErrorKind::NameTooLong,
                format!(
                    "checkpoint holds a name of {} bytes, over the loader's limit ({})",
                    e.name.len(),
                    limits.max_name_len
                ),
            ));
        }
        let entry = Entry {
            ino: e.ino,
            kind: kind_of(e.kind)?,
        };
        if entries.insert(Name::from(e.name), entry).is_some() && !patch {
            return Err(corrupt("directory names an entry twice"));
        }
    }
    Ok(entries)
}

fn parent_blob_index(tree: &Tree, wanted: &[[u8; 32]]) -> Result<Vec<Arc<Blob>>> {
    let want: HashSet<blake3::Hash> = wanted
        .iter()
        .map(|a| blake3::Hash::from_bytes(*a))
        .collect();
    let mut found: HashMap<blake3::Hash, Arc<Blob>> = HashMap::new();
    'outer: for inode in tree.inodes.values() {
        let Node::File(c) = &inode.node else { continue };
        for (_, ch) in c.chunks() {
            let Some(a) = ch.addr() else { continue };
            if !want.contains(&a) || found.contains_key(&a) {
                continue;
            }
            let blob = match ch.blob() {
                Some(b) => b.clone(),
                None => Arc::new(Blob::loaded(ch.trimmed()?.to_vec(), a)),
            };
            found.insert(a, blob);
            if found.len() == want.len() {
                break 'outer;
            }
        }
    }
    wanted
        .iter()
        .map(|a| {
            let a = blake3::Hash::from_bytes(*a);
            found.get(&a).cloned().ok_or_else(|| {
                corrupt(format!(
                    "delta reuses chunk {} that its parent lacks",
                    hex(&a)
                ))
            })
        })
        .collect()
}

/// One inode from its record; `old` is the parent's node at the same
/// number (patches apply to it). Links and nlink are left for the caller.
fn inode_from_rec(
    rec: InodeRec<'_>,
    old: Option<&Node>,
    blob_of: &dyn Fn(BlobRef) -> Result<Arc<Blob>>,
    limits: &Limits,
) -> Result<Inode> {
    if rec.mode & !0o7777 != 0 {
        return Err(corrupt(format!(
            "inode {} has mode {:o}",
            rec.ino, rec.mode
        )));
    }
    for t in [rec.atime, rec.mtime, rec.ctime] {
        check_time(t)?;
    }
    let node = match (rec.node, old) {
        (NodeRec::File { size, chunks }, _) => Node::File(content_from(
            size,
            ChunkMap::default(),
            chunks,
            &[],
            blob_of,
            limits,
        )?),
        (NodeRec::FilePatch { size, set, clear }, Some(Node::File(oc))) => Node::File(
            content_from(size, oc.chunk_map().clone(), set, &clear, blob_of, limits)?,
        ),
        (NodeRec::Dir { entries }, _) => Node::Dir(entries_from(
            OrdMap::new(),
            entries,
            Vec::new(),
            false,
            limits,
        )?),
        (NodeRec::DirPatch { set, remove }, Some(Node::Dir(oe))) => {
            Node::Dir(entries_from(oe.clone(), set, remove, true, limits)?)
        }
        (NodeRec::Symlink { target }, _) => {
            if target.is_empty() || target.contains('\0') {
                return Err(corrupt("bad symlink target"));
            }
            // As for a symlink a sandbox makes.
            path::check_path(target, limits.max_path_len as usize).map_err(|e| {
                Error::with(
                    e.kind(),
                    format!(
                        "checkpoint holds a symlink target of {} bytes, over the loader's limit ({})",
                        target.len(),
                        limits.max_path_len
                    ),
                )
            })?;
            Node::Symlink(Name::from(target))
        }
        (NodeRec::FilePatch { .. } | NodeRec::DirPatch { .. }, _) => {
            return Err(corrupt(format!(
                "patch for inode {} that the parent lacks or holds as another kind",
                rec.ino
            )));
        }
    };
    let mut inode = Inode::new(node, rec.mode, rec.mtime);
    inode.atime = rec.atime;
    inode.ctime = rec.ctime;
    inode.nlink = 0;
    Ok(inode)
}

/// [`build`] for a full checkpoint: the same checks, but inodes sit in a
/// sorted vector until they are complete, so links and nlink are set
/// before anything is shared and the map is built once. This is most of
/// what makes a lazy open of 100,000 files fast.
fn build_full(
    h: &Header,
    m: Manifest<'_>,
    blobs: Vec<Arc<Blob>>,
    check: RootCheck,
    limits: &Limits,
) -> Result<Snapshot> {
    let blob_of = |b: BlobRef| -> Result<Arc<Blob>> {
        match b {
            BlobRef::Own(i) => blobs.get(i as usize).cloned(),
            _ => None,
        }
        .ok_or_else(|| corrupt("chunk reference out of range"))
    };
    let mut recs = m.inodes;
    let inos: Vec<Ino> = recs.iter().map(|r| r.ino).collect();
    if inos.first() == Some(&0) || inos.windows(2).any(|w| w[0] >= w[1]) {
        return Err(corrupt("inode records out of order"));
    }
    // Records are independent: build them on two threads when there are
    // many (half the cost of a lazy open of 100,000 files). Each is put in
    // its `Arc` there too; it stays unique, so setting links below is free.
    let convert = |recs: Vec<InodeRec<'_>>| -> Result<Vec<Arc<Inode>>> {
        recs.into_iter()
            .map(|r| inode_from_rec(r, None, &blob_of, limits).map(Arc::new))
            .collect()
    };
    let mut nodes: Vec<Arc<Inode>> = if recs.len() >= 20_000 {
        let second = recs.split_off(recs.len() / 2);
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| convert(second));
            let a = convert(recs);
            let b = h
                .join()
                .unwrap_or_else(|_| Err(Error::with(ErrorKind::Io, "decoding thread failed")));
            (a, b)
        });
        let mut nodes = a?;
        nodes.extend(b?);
        nodes
    } else {
        convert(recs)?
    };
    // Numbers are usually dense, so try the direct index before searching
    // (`inos` is strictly increasing, so a hit there is the only one).
    let first = inos.first().copied().unwrap_or(0);
    let pos = |ino: Ino| {
        let guess = usize::try_from(ino.wrapping_sub(first)).unwrap_or(usize::MAX);
        match inos.get(guess) {
            Some(&i) if i == ino => Some(guess),
            _ => inos.binary_search(&ino).ok(),
        }
    };
    let root = match pos(ROOT) {
        Some(r) if nodes[r].kind() == FileType::Dir => r,
        _ => return Err(corrupt("no root directory")),
    };
    let mut counters = Counters::default();
    // Walk from the root, as `build` does, recording links in place.
    let mut visited = vec![false; nodes.len()];
    visited[root] = true;
    let mut work = vec![root];
    while let Some(dp) = work.pop() {
        let Some(entries) = nodes[dp].entries().cloned() else {
            return Err(corrupt("directory is missing"));
        };
        let d = inos[dp];
        let mut subdirs = 0u32;
        for (name, e) in entries.iter() {
            let Some(cp) = pos(e.ino) else {
                return Err(corrupt(format!(
                    "entry {name:?} in directory {d} names missing inode {}",
                    e.ino
                )));
            };
            if nodes[cp].kind() != e.kind {
                return Err(corrupt(format!("entry {name:?} has the wrong kind")));
            }
            Arc::make_mut(&mut nodes[cp]).links.push((d, name.clone()));
            add(&mut counters.charged, entry_charge(name))?;
            if e.kind == FileType::Dir {
                subdirs = subdirs
                    .checked_add(1)
                    .ok_or_else(|| corrupt("too many subdirectories"))?;
                if visited[cp] {
                    return Err(corrupt(format!(
                        "directory {} is named twice or in a cycle",
                        e.ino
                    )));
                }
                visited[cp] = true;
                work.push(cp);
            }
        }
        Arc::make_mut(&mut nodes[dp]).nlink = subdirs.saturating_add(2);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        if node.kind() == FileType::Dir {
            if !visited[i] {
                return Err(corrupt(format!("directory {} is unreachable", inos[i])));
            }
        } else {
            if node.links.is_empty() {
                return Err(corrupt(format!("inode {} is unreachable", inos[i])));
            }
            let nlink = link_count(node.links.len())?;
            Arc::make_mut(node).nlink = nlink;
        }
        count(&mut counters, node)?;
    }
    let max_ino = inos.last().copied().unwrap_or(0);
    if m.next_ino <= max_ino {
        return Err(corrupt(format!(
            "next inode number {} is not above inode {max_ino}",
            m.next_ino
        )));
    }
    let inodes: OrdMap<Ino, Arc<Inode>> = inos.into_iter().zip(nodes).collect();
    finish(h, inodes, m.next_ino, counters, limits, &[], check)
}

/// `*total += n`, or an error if the sum overflows (only a crafted file's
/// sizes can get there).
fn add(total: &mut u64, n: u64) -> Result<()> {
    *total = total
        .checked_add(n)
        .ok_or_else(|| corrupt("the checkpoint's sizes add up past 2^64"))?;
    Ok(())
}

/// Adds one inode to the counters, with checked sums.
fn count(c: &mut Counters, inode: &Inode) -> Result<()> {
    add(&mut c.inodes, 1)?;
    add(&mut c.held, inode.held())?;
    add(&mut c.logical, inode.content().map_or(0, Content::size))?;
    add(&mut c.charged, inode.charge())
}

/// The link count of a non-directory named `n` times: at most
/// `MAX_LINKS`, as for links a sandbox makes.
fn link_count(n: usize) -> Result<u32> {
    match u32::try_from(n) {
        Ok(n) if n <= MAX_LINKS => Ok(n),
        _ => Err(Error::with(
            ErrorKind::TooManyLinks,
            format!("checkpoint names a file {n} times, over the limit ({MAX_LINKS})"),
        )),
    }
}

/// Whether building a tree recomputes its root hash to compare with the
/// header's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RootCheck {
    /// Yes: `load`, and trees named by their root hash (the blob store).
    Verify,
    /// No, for a lazy open, whose cost should follow what is read. The
    /// metadata is still checked against its hash and every structural
    /// rule, each chunk against its address when read, and the snapshot's
    /// own `root_hash()` is always computed from the tree, never taken from
    /// the header; `load` and `verify` compare the two.
    Defer,
}

/// Assembles the tree, forgets stale inherited hashes above `touched`,
/// and checks the root hash against the header if asked to.
fn finish(
    h: &Header,
    inodes: OrdMap<Ino, Arc<Inode>>,
    next_ino: Ino,
    counters: Counters,
    limits: &Limits,
    touched: &[Ino],
    check: RootCheck,
) -> Result<Snapshot> {
    // The tree must fit the loader's quotas, as if a sandbox had made it.
    if counters.inodes > limits.max_inodes {
        return Err(Error::with(
            ErrorKind::QuotaExceeded,
            format!(
                "checkpoint holds {} inodes, over the loader's limit ({})",
                counters.inodes, limits.max_inodes
            ),
        ));
    }
    if counters.charged > limits.max_bytes {
        return Err(Error::with(
            ErrorKind::NoSpace,
            format!(
                "checkpoint's tree costs {} bytes, over the loader's byte limit ({})",
                counters.charged, limits.max_bytes
            ),
        ));
    }
    // The limits are the loader's; the file's own record of the limits it
    // was saved under is ignored.
    let mut tree = Tree {
        inodes,
        next_ino,
        counters,
        limits: limits.clone(),
    };
    for &ino in touched {
        tree.invalidate_up(ino);
    }
    if check == RootCheck::Defer {
        return Ok(Snapshot::from_tree(tree));
    }
    let got = tree.root_hash_parallel();
    if got != h.root_hash {
        return Err(corrupt(format!(
            "tree hashes to {} but the header says {}",
            hex(&got),
            hex(&h.root_hash)
        )));
    }
    Ok(Snapshot::from_tree(tree))
}

/// Builds the tree from a verified manifest, checks every invariant and,
/// per `check`, the root hash. `blobs` are the stored chunks (loaded or
/// lazy).
fn build(
    h: &Header,
    m: Manifest<'_>,
    blobs: Vec<Arc<Blob>>,
    parent: Option<&Snapshot>,
    check: RootCheck,
    limits: &Limits,
) -> Result<Snapshot> {
    let Some(parent) = parent else {
        return build_full(h, m, blobs, check, limits);
    };
    // A delta: start from the parent's inodes and apply the records.
    let pblobs = if m.parent_blobs.is_empty() {
        Vec::new()
    } else {
        parent_blob_index(&parent.tree, &m.parent_blobs)?
    };
    let blob_of = |b: BlobRef| -> Result<Arc<Blob>> {
        let got = match b {
            BlobRef::Own(i) => blobs.get(i as usize),
            BlobRef::Parent(i) => pblobs.get(i as usize),
            BlobRef::Zeros => None,
        };
        got.cloned()
            .ok_or_else(|| corrupt("chunk reference out of range"))
    };
    let mut inodes: OrdMap<Ino, Arc<Inode>> = parent.tree.inodes.clone();
    let mut prev = 0;
    for &ino in &m.removed {
        if ino <= prev || ino == ROOT || inodes.remove(&ino).is_none() {
            return Err(corrupt(format!("bad removal of inode {ino}")));
        }
        prev = ino;
    }
    let mut touched = Vec::with_capacity(m.inodes.len());
    let mut prev = 0;
    for rec in m.inodes {
        if rec.ino <= prev {
            return Err(corrupt("inode records out of order"));
        }
        prev = rec.ino;
        let ino = rec.ino;
        let inode = inode_from_rec(rec, inodes.get(&ino).map(|i| &i.node), &blob_of, limits)?;
        inodes.insert(ino, Arc::new(inode));
        touched.push(ino);
    }

    // Walk from the root: every entry must name a live inode of its kind,
    // every directory must be reached exactly once (no cycles, no second
    // names), and the names give each inode its links.
    match inodes.get(&ROOT) {
        Some(r) if r.kind() == FileType::Dir => {}
        _ => return Err(corrupt("no root directory")),
    }
    let mut counters = Counters::default();
    let mut links: Vec<(Ino, Ino, Name)> = Vec::with_capacity(inodes.len());
    let mut dir_nlink: Vec<(Ino, u32)> = Vec::new();
    let mut seen_dirs: HashSet<Ino> = HashSet::new();
    seen_dirs.insert(ROOT);
    let mut work = vec![ROOT];
    while let Some(d) = work.pop() {
        let Some(entries) = inodes.get(&d).and_then(|i| i.entries()) else {
            return Err(corrupt(format!("directory {d} is missing")));
        };
        let mut subdirs = 0u32;
        for (name, e) in entries.iter() {
            let Some(child) = inodes.get(&e.ino) else {
                return Err(corrupt(format!(
                    "entry {name:?} in directory {d} names missing inode {}",
                    e.ino
                )));
            };
            if child.kind() != e.kind {
                return Err(corrupt(format!("entry {name:?} has the wrong kind")));
            }
            links.push((e.ino, d, name.clone()));
            add(&mut counters.charged, entry_charge(name))?;
            if e.kind == FileType::Dir {
                subdirs = subdirs
                    .checked_add(1)
                    .ok_or_else(|| corrupt("too many subdirectories"))?;
                if !seen_dirs.insert(e.ino) {
                    return Err(corrupt(format!(
                        "directory {} is named twice or in a cycle",
                        e.ino
                    )));
                }
                work.push(e.ino);
            }
        }
        dir_nlink.push((d, subdirs.saturating_add(2)));
    }
    drop(seen_dirs);
    links.sort_unstable();
    dir_nlink.sort_unstable();

    // (inode, nlink, links) for inodes whose derived fields must change.
    type Fix = (Ino, u32, Vec<(Ino, Name)>);
    let mut fixes: Vec<Fix> = Vec::new();
    let (mut li, mut di) = (0usize, 0usize);
    let mut max_ino = 0;
    for (&ino, inode) in inodes.iter() {
        max_ino = ino;
        count(&mut counters, inode)?;
        let start = li;
        while li < links.len() && links[li].0 == ino {
            li += 1;
        }
        let mine = &links[start..li];
        let nlink = if inode.kind() == FileType::Dir {
            if di < dir_nlink.len() && dir_nlink[di].0 == ino {
                di += 1;
                dir_nlink[di - 1].1
            } else {
                return Err(corrupt(format!("directory {ino} is unreachable")));
            }
        } else {
            if mine.is_empty() {
                return Err(corrupt(format!("inode {ino} is unreachable")));
            }
            link_count(mine.len())?
        };
        let same = inode.nlink == nlink
            && inode.links.len() == mine.len()
            && if mine.len() == 1 {
                inode.links[0].0 == mine[0].1 && inode.links[0].1 == mine[0].2
            } else {
                let mut have = inode.links.clone();
                have.sort_unstable();
                have.iter().zip(mine).all(|(a, b)| a.0 == b.1 && a.1 == b.2)
            };
        if !same {
            fixes.push((
                ino,
                nlink,
                mine.iter().map(|(_, p, n)| (*p, n.clone())).collect(),
            ));
        }
    }
    drop(links);
    if m.next_ino <= max_ino {
        return Err(corrupt(format!(
            "next inode number {} is not above inode {max_ino}",
            m.next_ino
        )));
    }
    for (ino, nlink, l) in fixes {
        if let Some(arc) = inodes.get_mut(&ino) {
            let i = Arc::make_mut(arc);
            i.nlink = nlink;
            i.links = l;
        }
        touched.push(ino);
    }
    finish(h, inodes, m.next_ino, counters, limits, &touched, check)
}

// -------------------------------------------------------------------------
// Chains and inspection (for the CLI and embedders)

/// Loads the checkpoint at `path`, fully verified. If it is a delta, its
/// parent (and theirs, for a chain) is picked from `parents` by root hash,
/// so their order does not matter; a missing parent is a clear error.
/// The snapshot gets [`Limits::default`].
pub fn load_chain(path: impl AsRef<Path>, parents: &[PathBuf]) -> Result<Snapshot> {
    chain(path.as_ref(), parents, false, &Limits::default())
}

/// Like [`load_chain`], but opens every file lazily ([`Snapshot::open`]).
pub fn open_chain(path: impl AsRef<Path>, parents: &[PathBuf]) -> Result<Snapshot> {
    chain(path.as_ref(), parents, true, &Limits::default())
}

/// [`load_chain`] (or [`open_chain`] if `lazy`) under `limits`: every file
/// of the chain is checked against them, and the snapshot has them.
pub fn chain_with_limits(
    path: impl AsRef<Path>,
    parents: &[PathBuf],
    lazy: bool,
    limits: &Limits,
) -> Result<Snapshot> {
    chain(path.as_ref(), parents, lazy, limits)
}

fn chain(path: &Path, parents: &[PathBuf], lazy: bool, limits: &Limits) -> Result<Snapshot> {
    // From `path` down to its full ancestor; each step consumes one
    // parent, so a cycle of files cannot loop forever.
    let mut order = vec![path.to_path_buf()];
    let mut rest: Vec<PathBuf> = parents.to_vec();
    loop {
        let cur = order.last().cloned().unwrap_or_default();
        let Some(want) = read_header(&cur)?.parent_hash else {
            break;
        };
        let mut found = None;
        for (i, p) in rest.iter().enumerate() {
            if read_header(p)?.root_hash == want {
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!(
                    "{} is a delta against root {}; none of the parents given has that root (pass it with --parent)",
                    cur.display(),
                    hex(&want)
                ),
            ));
        };
        order.push(rest.remove(i));
    }
    let mut snap: Option<Snapshot> = None;
    for p in order.iter().rev() {
        snap = Some(match lazy {
            true => open_path(p, snap.as_ref(), limits)?,
            false => load_path(p, snap.as_ref(), limits)?,
        });
    }
    snap.ok_or_else(|| Error::with(ErrorKind::InvalidInput, "empty checkpoint chain"))
}

/// Loads a checkpoint (and its parents) with every check, plus the engine
/// invariants; returns its header.
pub fn verify(path: impl AsRef<Path>, parents: &[PathBuf]) -> Result<Header> {
    let path = path.as_ref();
    let snap = load_chain(path, parents)?;
    snap.check_invariants()
        .map_err(|e| corrupt(format!("{}: invariant violated: {e}", path.display())))?;
    read_header(path)
}

/// What a checkpoint file holds, from its metadata alone (for a delta: the
/// records in this file, not the whole tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The header.
    pub header: Header,
    /// Bytes in the file.
    pub file_len: u64,
    /// Regular files recorded (whole or patched).
    pub files: u64,
    /// Directories recorded.
    pub dirs: u64,
    /// Symlinks recorded.
    pub symlinks: u64,
    /// Inodes a delta removes from its parent.
    pub removed: u64,
    /// Sum of the sizes of the files recorded.
    pub logical_bytes: u64,
    /// Chunks stored in this file.
    pub chunks: u64,
    /// Their bytes without trailing zeros, before compression.
    pub unique_bytes: u64,
    /// Their bytes as stored.
    pub stored_bytes: u64,
}

/// Reads a checkpoint's header and metadata (verified against the
/// metadata hash) and counts what it holds. Does not read the data.
pub fn inspect(path: impl AsRef<Path>) -> Result<Info> {
    let path = path.as_ref();
    let file = File::open(path).map_err(path_err(path))?;
    let len = file.metadata().map_err(path_err(path))?.len();
    let res = (|| {
        let h = Header::decode(&mut &file)?;
        if h.file_len() != Some(len) {
            return Err(corrupt(format!(
                "file is {len} bytes but its header describes {}",
                h.file_len().unwrap_or(u64::MAX)
            )));
        }
        let meta = read_meta(&mut &file, &h, &Limits::default())?;
        let m = decode_manifest(&h, &meta)?;
        let mut info = Info {
            header: h.clone(),
            file_len: len,
            files: 0,
            dirs: 0,
            symlinks: 0,
            removed: m.removed.len() as u64,
            logical_bytes: 0,
            chunks: m.blobs.len() as u64,
            // At most 2^32 records of at most 2^16 bytes: no overflow.
            unique_bytes: m.blobs.iter().map(|b| b.raw_len as u64).sum(),
            stored_bytes: h.data_len,
        };
        for r in &m.inodes {
            match &r.node {
                NodeRec::File { size, .. } | NodeRec::FilePatch { size, .. } => {
                    info.files += 1;
                    info.logical_bytes = info
                        .logical_bytes
                        .checked_add(*size)
                        .ok_or_else(|| corrupt("the sum of file sizes overflows"))?;
                }
                NodeRec::Dir { .. } | NodeRec::DirPatch { .. } => info.dirs += 1,
                NodeRec::Symlink { .. } => info.symlinks += 1,
            }
        }
        Ok(info)
    })();
    res.map_err(in_file(path))
}

// -------------------------------------------------------------------------
// Metadata without data, for the fleet blob store (`crate::store`): the
// store keeps chunks by address as separate objects and the tree in this
// module's encoding, so there is one metadata format, checked one way.

/// A full checkpoint's header and metadata without its data section, and
/// the chunks that section would hold, in order. Never compressed: the
/// store names chunks by the address of their bytes.
pub(crate) fn encode_meta(snap: &Snapshot) -> Result<(Vec<u8>, Vec<Chunk>)> {
    let enc = encode(snap, None, false)?;
    let mut out = enc.header.encode();
    out.extend_from_slice(&enc.meta);
    let mut chunks = Vec::with_capacity(enc.blobs.len());
    for b in enc.blobs {
        match b {
            BlobOut::Raw(c) => chunks.push(c),
            BlobOut::Packed(_) => {
                return Err(Error::with(
                    ErrorKind::Io,
                    "uncompressed encoding packed a chunk",
                ));
            }
        }
    }
    Ok((out, chunks))
}

fn decode_meta(bytes: &[u8]) -> Result<(Header, Manifest<'_>)> {
    let mut r = bytes;
    let h = Header::decode(&mut r)?;
    if h.is_delta() || h.compressed {
        return Err(corrupt(
            "store metadata must describe a full, uncompressed tree",
        ));
    }
    if r.len() as u64 != h.meta_len {
        return Err(corrupt("metadata length disagrees with the header"));
    }
    let m = decode_manifest(&h, r)?;
    Ok((h, m))
}

/// Checks bytes from [`encode_meta`] (header, metadata hash, every length)
/// and lists their root hash and chunks: (address, length without trailing
/// zeros) in order.
pub(crate) fn meta_chunks(bytes: &[u8]) -> Result<(blake3::Hash, Vec<(blake3::Hash, u32)>)> {
    let (h, m) = decode_meta(bytes)?;
    let chunks = m
        .blobs
        .iter()
        .map(|b| (blake3::Hash::from_bytes(b.addr), b.raw_len))
        .collect();
    Ok((h.root_hash, chunks))
}

/// The snapshot that bytes from [`encode_meta`] describe, with every check
/// [`Snapshot::open`] makes; chunk `i` (in [`meta_chunks`] order) is fetched
/// from `source` with key `i` on first use and verified then.
pub(crate) fn open_meta(
    bytes: &[u8],
    source: Arc<dyn ChunkSource>,
    limits: &Limits,
) -> Result<Snapshot> {
    let (h, m) = decode_meta(bytes)?;
    let blobs = lazy_blobs(&m.blobs, &source);
    // A store names a tree by its root hash, so that is checked here.
    build(&h, m, blobs, None, RootCheck::Verify, limits)
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
    out.extend_from_slice(data);
    let trailer = blake3::hash(&out);
    out.extend_from_slice(trailer.as_bytes());
    out
}
