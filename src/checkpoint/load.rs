//! Decoding: bytes to checked records, then to a tree (see `rebuild`).
//! A stream is read whole, every chunk verified and the trailing hash
//! checked (`load_stream`); a file can instead be opened lazily, its
//! chunks read and verified when first used (`open_path`); and the fleet
//! store's objects (header and metadata, chunks by address) are opened the
//! same way (`open_meta`). Nothing is trusted: sizes are checked against
//! the bytes there and the loader's limits before anything is allocated.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    BlobRec, BlobRef, CODEC_RAW, CODEC_ZSTD, Header, NodeRec, TreeRecord, decompress, hex,
    read_exact, with_decode_budget,
};
use super::in_file;
use super::rebuild::{RootCheck, build};
use crate::chunk::{Blob, ChunkSource};
use crate::content::{CHUNK_SIZE, chunk_charge};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::vfs::Snapshot;

/// Hashes what is read through it while `on` (for the trailing hash).
struct HashRead<'a> {
    inner: &'a mut dyn Read,
    hasher: blake3::Hasher,
    on: bool,
}

impl Read for HashRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.on {
            self.hasher.update(&buf[..n]);
        }
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

/// Decodes and checks the metadata, its lists taking at most `budget`
/// bytes of memory (see [`with_decode_budget`]): the loader's `max_bytes`,
/// which a tree's records in memory stay below (each inode, entry and
/// chunk is charged more than its record takes).
pub(super) fn decode_tree_record<'m>(
    h: &Header,
    meta: &'m [u8],
    budget: u64,
) -> Result<TreeRecord<'m>> {
    let decode = || with_decode_budget(budget, || postcard::take_from_bytes::<TreeRecord>(meta));
    let over_budget = || {
        Error::corrupt(format!(
            "metadata does not decode: its lists would take more than the loader's \
             byte limit ({budget} bytes) in memory"
        ))
    };
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
        return Err(Error::corrupt("metadata does not match its hash"));
    }
    let (decoded, over) = decoded;
    let (m, rest) = decoded.map_err(|e| {
        if over {
            over_budget()
        } else {
            Error::corrupt(format!("metadata does not decode: {e}"))
        }
    })?;
    if !rest.is_empty() {
        return Err(Error::corrupt("metadata has trailing bytes"));
    }
    // The data section must be exactly the stored chunks.
    let mut sum = 0u64;
    for b in &m.blobs {
        if b.raw_len == 0 || b.raw_len as usize > CHUNK_SIZE {
            return Err(Error::corrupt(format!(
                "chunk record with length {}",
                b.raw_len
            )));
        }
        match b.codec {
            CODEC_RAW if b.stored_len == b.raw_len => {}
            CODEC_ZSTD if b.stored_len > 0 && b.stored_len < b.raw_len && h.compressed => {}
            CODEC_RAW | CODEC_ZSTD => return Err(Error::corrupt("chunk record lengths disagree")),
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
        return Err(Error::corrupt(
            "data length disagrees with the chunk records",
        ));
    }
    if h.parent_hash.is_none() && (!m.parent_blobs.is_empty() || !m.removed.is_empty()) {
        return Err(Error::corrupt("a full checkpoint refers to a parent"));
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
        return Err(Error::corrupt(format!(
            "chunk {} does not match its address",
            hex(&addr)
        )));
    }
    Ok(Blob::loaded(raw, addr))
}

pub(super) fn load_path(
    path: &Path,
    parent: Option<&Snapshot>,
    limits: &Limits,
) -> Result<Snapshot> {
    let _span =
        tracing::info_span!("checkpoint_load", path = %path.display(), delta = parent.is_some())
            .entered();
    tracing::info!("loading and verifying");
    let (f, len) = open_file(path)?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    load_stream(&mut r, Some(len), parent, limits).map_err(in_file(path))
}

/// The checkpoint file at `path`, opened for reading, and its length. A
/// directory is refused by name.
fn open_file(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|e| Error::io_at(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io_at(path, e))?;
    if meta.is_dir() {
        return Err(Error::with(
            ErrorKind::IsADirectory,
            format!("{}: is a directory", path.display()),
        ));
    }
    Ok((f, meta.len()))
}

pub(super) fn load_stream(
    r: &mut dyn Read,
    total: Option<u64>,
    parent: Option<&Snapshot>,
    limits: &Limits,
) -> Result<Snapshot> {
    let mut hr = HashRead {
        inner: r,
        hasher: blake3::Hasher::new(),
        on: true,
    };
    let h = Header::decode(&mut hr)?;
    if let Some(t) = total {
        h.check_file_len(t)?;
    }
    check_parent(&h, parent)?;
    let meta = read_meta(&mut hr, &h, limits)?;
    // Since version 2 the trailing hash stops here: each chunk is checked
    // against the address the metadata gives it.
    hr.on = h.trailer_covers_data();
    let m = decode_tree_record(&h, &meta, limits.max_bytes)?;
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
        return Err(Error::corrupt("trailing hash does not match the contents"));
    }
    build(&h, m, blobs, parent, RootCheck::Verify, limits)
}

/// Reads the metadata section that follows the header. Its length must
/// not exceed the loader's `max_bytes` (the tree it describes costs at
/// least about that much), and the buffer grows with the bytes that
/// actually arrive: neither a lying length nor a sparse file can make
/// this allocate more than `max_bytes` or more than the input holds.
pub(super) fn read_meta(r: &mut dyn Read, h: &Header, limits: &Limits) -> Result<Vec<u8>> {
    if h.meta_len > limits.max_bytes {
        // Refused as unreadable: no tree the loader accepts has it.
        return Err(Error::corrupt(format!(
            "checkpoint metadata of {} bytes is over the loader's byte limit ({})",
            h.meta_len, limits.max_bytes
        )));
    }
    let mut meta = Vec::with_capacity(h.meta_len.min(1 << 20) as usize);
    r.take(h.meta_len).read_to_end(&mut meta)?;
    if meta.len() as u64 != h.meta_len {
        return Err(Error::corrupt("checkpoint is truncated (in the metadata)"));
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

pub(super) fn open_path(
    path: &Path,
    parent: Option<&Snapshot>,
    limits: &Limits,
) -> Result<Snapshot> {
    let _span =
        tracing::info_span!("checkpoint_open", path = %path.display(), delta = parent.is_some())
            .entered();
    tracing::info!("opening lazily");
    let (file, len) = open_file(path)?;
    let res = (|| {
        let h = Header::decode(&mut &file)?;
        h.check_file_len(len)?;
        check_parent(&h, parent)?;
        // The header was read from the start of `file`, so the metadata
        // follows at the file's position.
        let meta = read_meta(&mut &file, &h, limits)?;
        let m = decode_tree_record(&h, &meta, limits.max_bytes)?;
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
// Store metadata: a full checkpoint's header and metadata with no data
// section, its chunks kept elsewhere by address (see `encode_meta`).

/// Bytes from [`encode_meta`](super::encode_meta), decoded and checked
/// once (header, metadata hash, every length), their lists built within a
/// budget: what a lazy open from a store needs before the tree (its
/// chunks, how far read-ahead may run), then the tree itself.
pub(crate) struct StoreMeta<'m> {
    h: Header,
    m: TreeRecord<'m>,
}

impl<'m> StoreMeta<'m> {
    /// Decodes `bytes`, their lists taking at most `budget` bytes while
    /// decoding (`u64::MAX` where no loader's limits apply).
    pub(crate) fn decode(bytes: &'m [u8], budget: u64) -> Result<StoreMeta<'m>> {
        let mut r = bytes;
        let h = Header::decode(&mut r)?;
        if h.is_delta() || h.compressed {
            return Err(Error::corrupt(
                "store metadata must describe a full, uncompressed tree",
            ));
        }
        if r.len() as u64 != h.meta_len {
            return Err(Error::corrupt("metadata length disagrees with the header"));
        }
        let m = decode_tree_record(&h, r, budget)?;
        Ok(StoreMeta { h, m })
    }

    /// The root hash the header claims (checked against the tree by
    /// [`StoreMeta::open`]).
    pub(crate) fn root(&self) -> blake3::Hash {
        self.h.root_hash
    }

    /// The chunks, (address, length without trailing zeros) in order.
    pub(crate) fn chunks(&self) -> Vec<(blake3::Hash, u32)> {
        self.m
            .blobs
            .iter()
            .map(|b| (blake3::Hash::from_bytes(b.addr), b.raw_len))
            .collect()
    }

    /// For each chunk, the index one past the last chunk that follows it
    /// in the same file (the table lists a file's chunks in order): how
    /// far a lazy reader's read-ahead may go without leaving the file.
    pub(crate) fn file_runs(&self) -> Vec<u64> {
        let n = self.m.blobs.len();
        let mut linked = vec![false; n];
        for i in &self.m.inodes {
            if let NodeRec::File { chunks, .. } = &i.node {
                for pair in chunks.windows(2) {
                    if let (BlobRef::Own(a), BlobRef::Own(b)) = (pair[0].blob, pair[1].blob)
                        && b as u64 == a as u64 + 1
                        && (b as usize) < n
                    {
                        linked[a as usize] = true;
                    }
                }
            }
        }
        let mut end = vec![0u64; n];
        for k in (0..n).rev() {
            end[k] = if linked[k] && k + 1 < n {
                end[k + 1]
            } else {
                k as u64 + 1
            };
        }
        end
    }

    /// The snapshot these bytes describe, with every check
    /// [`Snapshot::open`] makes, the root hash among them (a store names a
    /// tree by it); chunk `i` (in [`StoreMeta::chunks`] order) is fetched
    /// from `source` with key `i` on first use and verified then.
    pub(crate) fn open(self, source: Arc<dyn ChunkSource>, limits: &Limits) -> Result<Snapshot> {
        let blobs = lazy_blobs(&self.m.blobs, &source);
        build(&self.h, self.m, blobs, None, RootCheck::Verify, limits)
    }
}

/// The root hash and chunks of bytes from [`encode_meta`](super::encode_meta)
/// ([`StoreMeta::decode`], then its lists).
pub(crate) fn meta_chunks(
    bytes: &[u8],
    budget: u64,
) -> Result<(blake3::Hash, Vec<(blake3::Hash, u32)>)> {
    let meta = StoreMeta::decode(bytes, budget)?;
    Ok((meta.root(), meta.chunks()))
}

/// The snapshot that bytes from [`encode_meta`](super::encode_meta)
/// describe, decoded within `limits` ([`StoreMeta::open`]).
pub(crate) fn open_meta(
    bytes: &[u8],
    source: Arc<dyn ChunkSource>,
    limits: &Limits,
) -> Result<Snapshot> {
    StoreMeta::decode(bytes, limits.max_bytes)?.open(source, limits)
}
