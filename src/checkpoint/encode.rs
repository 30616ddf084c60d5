//! Encoding: a snapshot to records (`encode`) and records to bytes
//! (`write_encoded`). A delta holds only what its parent lacks: changed
//! inodes (files and directories as patches against the parent's
//! version) and chunks the parent does not have, naming the parent's
//! chunks it reuses by address.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use super::SaveOptions;
use super::SaveStats;
use super::format::{
    BlobRec, BlobRef, CODEC_RAW, CODEC_ZSTD, ChunkRec, EntryRec, FORMAT_VERSION, Header, InodeRec,
    LimitsRec, NodeRec, TreeRecord, compress, kind_code,
};
use crate::chunk::Chunk;
use crate::error::{Error, ErrorKind, Result};
use crate::tree::{Entry, Ino, Inode, InodeChange, Name, Node};
use crate::vfs::Snapshot;

enum BlobOut {
    Raw(Chunk),
    Packed(Vec<u8>),
}

pub(super) struct Encoded {
    header: Header,
    meta: Vec<u8>,
    blobs: Vec<BlobOut>,
    pub(super) stats: SaveStats,
}

struct Encoder<'a> {
    parent: Option<&'a Snapshot>,
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
                for (_, inode) in p.inodes() {
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

pub(super) fn encode(
    snap: &Snapshot,
    parent: Option<&Snapshot>,
    compress: bool,
) -> Result<Encoded> {
    if compress && !cfg!(feature = "zstd") {
        return Err(Error::with(
            ErrorKind::Unsupported,
            "compression needs cowvfs built with the `zstd` feature",
        ));
    }
    // Hashing first memoizes every chunk address the encoder needs.
    let root_hash = snap.root_hash();
    let parent_hash = parent.map(Snapshot::root_hash);
    let mut enc = Encoder {
        parent,
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
            for (ino, inode) in snap.inodes() {
                inodes.push(enc.inode_rec(ino, inode, None)?);
            }
        }
        Some(p) => {
            // Pointer-pruned: the cost follows the change, not the tree.
            for d in p.inode_changes(snap) {
                match d {
                    InodeChange::Added(ino, inode) => inodes.push(enc.inode_rec(ino, inode, None)?),
                    InodeChange::Changed { ino, old, new } => {
                        let same_kind = old.kind() == new.kind();
                        inodes.push(enc.inode_rec(ino, new, same_kind.then_some(old))?);
                    }
                    InodeChange::Removed(ino) => removed.push(ino),
                }
            }
            inodes.sort_by_key(|r| r.ino);
            removed.sort_unstable();
        }
    }
    let record = TreeRecord {
        next_ino: snap.next_ino(),
        limits: LimitsRec::from(snap.limits()),
        blobs: enc.blob_recs,
        parent_blobs: enc.parent_list,
        inodes,
        removed,
    };
    let meta = postcard::to_stdvec(&record)
        .map_err(|e| Error::with(ErrorKind::Io, format!("encoding metadata: {e}")))?;
    let data_len: u64 = record.blobs.iter().map(|b| b.stored_len as u64).sum();
    let header = Header {
        version: FORMAT_VERSION,
        compressed: record.blobs.iter().any(|b| b.codec == CODEC_ZSTD),
        root_hash,
        parent_hash,
        meta_len: meta.len() as u64,
        data_len,
        meta_hash: blake3::hash(&meta),
    };
    let stats = SaveStats {
        file_len: header.file_len().unwrap_or(u64::MAX),
        inodes: record.inodes.len() as u64,
        chunks: record.blobs.len() as u64,
        chunk_bytes: record.blobs.iter().map(|b| b.raw_len as u64).sum(),
        stored_bytes: data_len,
    };
    Ok(Encoded {
        header,
        meta,
        blobs: enc.blob_out,
        stats,
    })
}

/// The encoded header, the metadata and the data section's chunk table.
type Parts<'a> = (Vec<u8>, &'a [u8], Vec<(blake3::Hash, u32)>);

impl Encoded {
    /// The encoded header, the metadata, and the data section's chunks in
    /// order (address, stored length) when none is compressed: what a
    /// writer handed the chunk bytes by someone else needs (`verified`).
    pub(super) fn parts(&self) -> Result<Parts<'_>> {
        let mut table = Vec::with_capacity(self.blobs.len());
        for b in &self.blobs {
            match b {
                BlobOut::Raw(c) => {
                    let addr = c.addr().ok_or_else(|| {
                        Error::with(ErrorKind::Io, "a stored chunk has no address")
                    })?;
                    table.push((addr, c.trimmed_len() as u32));
                }
                BlobOut::Packed(_) => {
                    return Err(Error::with(
                        ErrorKind::Io,
                        "uncompressed encoding packed a chunk",
                    ));
                }
            }
        }
        Ok((self.header.encode(), &self.meta, table))
    }
}

fn blob_bytes(b: &BlobOut) -> Result<&[u8]> {
    match b {
        BlobOut::Raw(chunk) => chunk.trimmed(),
        BlobOut::Packed(v) => Ok(v),
    }
}

/// The trailing hash of a checkpoint of this build's version: of its
/// encoded header and its metadata (the chunks are covered by their
/// addresses, which the metadata lists).
pub(super) fn trailer_hash(header: &[u8], meta: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header);
    hasher.update(meta);
    hasher.finalize()
}

fn write_encoded(
    enc: &Encoded,
    w: &mut dyn Write,
    progress: &mut Option<&mut dyn FnMut(u64, u64)>,
) -> Result<()> {
    let total = enc.stats.file_len;
    let header = enc.header.encode();
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
    w.write_all(trailer_hash(&header, &enc.meta).as_bytes())?;
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

/// Writes `enc` to `w`, failing after `opts.fail_after` bytes if set.
pub(super) fn write_with(
    enc: &Encoded,
    w: &mut dyn Write,
    opts: &mut SaveOptions<'_>,
) -> Result<()> {
    match opts.fail_after {
        Some(n) => write_encoded(
            enc,
            &mut FailAfter { inner: w, left: n },
            &mut opts.progress,
        ),
        None => write_encoded(enc, w, &mut opts.progress),
    }
}

// -------------------------------------------------------------------------
// Metadata without data, for the fleet blob store (the `store` module,
// which builds on this one): the store keeps chunks by address as separate
// objects and the tree in this encoding, so there is one metadata format,
// checked one way.

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
