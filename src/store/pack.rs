//! Pack and index objects: how a store holds many chunks in few objects.
//!
//! A pack (`packs/<name hex>`) is chunks back to back between a header and
//! its own index:
//!
//! ```text
//! magic "cowvfs\0pk" [9] | version u16
//! | chunk bytes, back to back (each chunk's trimmed bytes)
//! | trailer: postcard Vec<PackEntry> (address, offset, length), in offset order
//! | trailer length u64 | blake3 of the trailer [32] | magic "cowvfs\0pk" [9]
//! ```
//!
//! A pack's name is a keyed blake3 of its trailer. The trailer lists every
//! chunk's address, so the name commits to the pack's whole content
//! without a second pass over its bytes, and a reader that fetched a range
//! checks each chunk against its address (store objects are verified
//! before they are believed: DESIGN.md, "Security model").
//!
//! An index object (`index/<blake3 of the object>`) lists packs and their
//! entries, so a client learns where every chunk is from a listing of
//! `index/` and one read per index object, not one request per chunk:
//!
//! ```text
//! magic "cowvfs\0ix" [9] | version u16 | body length u64
//! | body: postcard IndexBody | blake3 of everything before [32]
//! ```
//!
//! Both are read as untrusted: every bound (object size, entry count,
//! entry inside its pack) is checked on decoding, a damaged object is
//! refused naming it, and an unknown version is an `Unsupported` error.

use serde::{Deserialize, Serialize};

use crate::content::CHUNK_SIZE;
use crate::error::{Error, ErrorKind, Result};

/// The pack format this build writes and reads.
pub(crate) const PACK_VERSION: u16 = 1;
/// The index object format this build writes and reads.
pub(crate) const INDEX_VERSION: u16 = 1;

const PACK_MAGIC: [u8; 9] = *b"cowvfs\0pk";
const INDEX_MAGIC: [u8; 9] = *b"cowvfs\0ix";
/// Bytes before a pack's first chunk.
pub(crate) const PACK_HEAD: u64 = 9 + 2;
/// Bytes after a pack's trailer.
pub(crate) const PACK_FOOT: u64 = 8 + 32 + 9;
const INDEX_HEAD: usize = 9 + 2 + 8;
const NAME_CONTEXT: &str = "cowvfs 2026 pack name v1";

/// What a push aims for per pack unless told otherwise (16 MiB).
pub const DEFAULT_PACK_SIZE: u64 = 16 << 20;
/// Largest pack target a push accepts (256 MiB).
pub const MAX_PACK_SIZE: u64 = 256 << 20;
/// Most bytes a pack object may hold: a reader refuses an index entry
/// that reaches past this (512 MiB).
pub const MAX_PACK_OBJECT: u64 = 512 << 20;
/// Most chunks one pack may hold (which bounds its trailer).
pub const MAX_PACK_ENTRIES: usize = 1 << 16;
/// Most bytes an index object may hold (64 MiB).
pub const MAX_INDEX_OBJECT: u64 = 64 << 20;
/// Most chunk entries one index object lists (a push writes more index
/// objects past this); about 48 MiB encoded at most.
pub(crate) const MAX_INDEX_ENTRIES: usize = 1 << 20;
/// Longest ranged read a client asks for (32 MiB).
pub const MAX_RANGE_REQUEST: u64 = 32 << 20;

/// Where one chunk sits in a pack.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk's address.
    pub addr: [u8; 32],
    /// Byte offset of its trimmed bytes in the pack object.
    pub offset: u64,
    /// Their length.
    pub len: u32,
}

/// One pack as an index object lists it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PackRecord {
    /// The pack's name (`packs/<hex>`).
    pub name: [u8; 32],
    /// Size of the pack object.
    pub size: u64,
    /// Its chunks, in offset order.
    pub entries: Vec<PackEntry>,
}

impl PackRecord {
    /// The object name of this pack.
    pub fn key(&self) -> String {
        pack_key(&blake3::Hash::from_bytes(self.name))
    }
}

#[derive(Serialize, Deserialize)]
struct IndexBody {
    /// Seconds since the Unix epoch when the writer made it (a hint for
    /// garbage collection; never trusted for anything else).
    written: u64,
    packs: Vec<PackRecord>,
}

/// The object name of a pack.
pub(crate) fn pack_key(name: &blake3::Hash) -> String {
    format!("packs/{}", name.to_hex())
}

/// The object name of an index object.
pub(crate) fn index_key(name: &blake3::Hash) -> String {
    format!("index/{}", name.to_hex())
}

/// The hash an object name `<prefix><64 hex>` carries, if it is one.
pub(crate) fn parse_name(key: &str, prefix: &str) -> Option<blake3::Hash> {
    let hex = key.strip_prefix(prefix)?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    blake3::Hash::from_hex(hex).ok()
}

fn pack_name(trailer: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_derive_key(NAME_CONTEXT);
    h.update(trailer);
    h.finalize()
}

/// Builds one pack in memory.
pub(crate) struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// Bytes of buffer a pack of about `capacity` bytes needs (its
    /// chunks, then its trailer and footer) without growing.
    pub(crate) fn room(capacity: u64) -> usize {
        capacity.min(MAX_PACK_SIZE) as usize + 4096
    }

    /// A builder writing into `buf` (emptied first; a caller that reuses
    /// its buffers gives one of [`PackBuilder::room`] bytes).
    pub(crate) fn with_buffer(mut buf: Vec<u8>) -> PackBuilder {
        buf.clear();
        buf.extend_from_slice(&PACK_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Bytes so far.
    pub(crate) fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    pub(crate) fn count(&self) -> usize {
        self.entries.len()
    }

    /// Appends a chunk (the caller promises `bytes` hash to `addr`).
    pub(crate) fn push(&mut self, addr: &blake3::Hash, bytes: &[u8]) {
        self.entries.push(PackEntry {
            addr: *addr.as_bytes(),
            offset: self.buf.len() as u64,
            len: bytes.len() as u32,
        });
        self.buf.extend_from_slice(bytes);
    }

    /// The pack object and its record.
    pub(crate) fn finish(mut self) -> Result<(PackRecord, Vec<u8>)> {
        let trailer = postcard::to_stdvec(&self.entries)
            .map_err(|e| Error::with(ErrorKind::Io, format!("encoding a pack trailer: {e}")))?;
        let name = pack_name(&trailer);
        self.buf.extend_from_slice(&trailer);
        self.buf
            .extend_from_slice(&(trailer.len() as u64).to_le_bytes());
        self.buf
            .extend_from_slice(blake3::hash(&trailer).as_bytes());
        self.buf.extend_from_slice(&PACK_MAGIC);
        let rec = PackRecord {
            name: *name.as_bytes(),
            size: self.buf.len() as u64,
            entries: self.entries,
        };
        Ok((rec, self.buf))
    }
}

/// Checks a pack record from an index object or a trailer: sizes inside
/// the bounds, every entry inside the pack's chunk area, in order, and
/// not overlapping.
pub(crate) fn check_record(rec: &PackRecord) -> Result<()> {
    let bad = |why: String| {
        Error::corrupt(format!(
            "pack {}: {why}",
            blake3::Hash::from_bytes(rec.name).to_hex()
        ))
    };
    if rec.size > MAX_PACK_OBJECT || rec.size < PACK_HEAD + PACK_FOOT {
        return Err(bad(format!(
            "size {} is outside {}..={MAX_PACK_OBJECT}",
            rec.size,
            PACK_HEAD + PACK_FOOT
        )));
    }
    if rec.entries.len() > MAX_PACK_ENTRIES {
        return Err(bad(format!(
            "{} chunks, more than {MAX_PACK_ENTRIES}",
            rec.entries.len()
        )));
    }
    let mut at = PACK_HEAD;
    let end = rec.size - PACK_FOOT;
    for e in &rec.entries {
        let stop = e.offset.checked_add(e.len as u64);
        if e.len as usize > CHUNK_SIZE || e.offset < at || stop.is_none_or(|s| s > end) {
            return Err(bad(format!(
                "entry for chunk {} ({} bytes at {}) is out of place",
                blake3::Hash::from_bytes(e.addr).to_hex(),
                e.len,
                e.offset
            )));
        }
        at = e.offset + e.len as u64;
    }
    Ok(())
}

/// Reads a pack's footer (its last [`PACK_FOOT`] bytes): the trailer's
/// length and hash.
pub(crate) fn decode_footer(size: u64, foot: &[u8]) -> Result<(u64, [u8; 32])> {
    if foot.len() as u64 != PACK_FOOT || foot[40..] != PACK_MAGIC {
        return Err(Error::corrupt("not a cowvfs pack (bad footer)"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&foot[..8]);
    let len = u64::from_le_bytes(n);
    if len > size.saturating_sub(PACK_HEAD + PACK_FOOT) {
        return Err(Error::corrupt("pack trailer length is out of range"));
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(&foot[8..40]);
    Ok((len, h))
}

/// A pack's record from its trailer, checked against the footer's hash,
/// the pack's name and its size.
pub(crate) fn decode_trailer(
    name: &blake3::Hash,
    size: u64,
    hash: &[u8; 32],
    trailer: &[u8],
) -> Result<PackRecord> {
    if blake3::hash(trailer).as_bytes() != hash {
        return Err(Error::corrupt("pack trailer does not match its hash"));
    }
    if pack_name(trailer) != *name {
        return Err(Error::corrupt("pack is stored under another pack's name"));
    }
    let entries: Vec<PackEntry> = postcard::from_bytes(trailer)
        .map_err(|e| Error::corrupt(format!("pack trailer does not decode: {e}")))?;
    let rec = PackRecord {
        name: *name.as_bytes(),
        size,
        entries,
    };
    check_record(&rec)?;
    let chunk_end = rec
        .entries
        .last()
        .map_or(PACK_HEAD, |e| e.offset + e.len as u64);
    if chunk_end + trailer.len() as u64 + PACK_FOOT != size {
        return Err(Error::corrupt(
            "pack chunk area and trailer do not add up to its size",
        ));
    }
    Ok(rec)
}

/// Checks a whole pack object named `name`: header, footer, trailer, and
/// every chunk against its address. Its record on success.
pub(crate) fn check_pack(name: &blake3::Hash, bytes: &[u8]) -> Result<PackRecord> {
    let size = bytes.len() as u64;
    if size < PACK_HEAD + PACK_FOOT || bytes[..9] != PACK_MAGIC {
        return Err(Error::corrupt("not a cowvfs pack (bad magic or truncated)"));
    }
    let version = u16::from_le_bytes([bytes[9], bytes[10]]);
    if version != PACK_VERSION {
        return Err(unsupported("pack", version, PACK_VERSION));
    }
    let (len, hash) = decode_footer(size, &bytes[(size - PACK_FOOT) as usize..])?;
    let t0 = (size - PACK_FOOT - len) as usize;
    let rec = decode_trailer(name, size, &hash, &bytes[t0..(size - PACK_FOOT) as usize])?;
    for e in &rec.entries {
        let b = &bytes[e.offset as usize..(e.offset + e.len as u64) as usize];
        if blake3::hash(b).as_bytes() != &e.addr {
            return Err(Error::corrupt(format!(
                "chunk {} at offset {} does not match its address",
                blake3::Hash::from_bytes(e.addr).to_hex(),
                e.offset
            )));
        }
    }
    Ok(rec)
}

fn unsupported(what: &str, version: u16, ours: u16) -> Error {
    Error::with(
        ErrorKind::Unsupported,
        format!(
            "{what} format version {version} is not supported (this build reads version {ours})"
        ),
    )
}

/// An index object listing `packs`, and its name.
pub(crate) fn encode_index(
    packs: Vec<PackRecord>,
    written: u64,
) -> Result<(blake3::Hash, Vec<u8>)> {
    let body = postcard::to_stdvec(&IndexBody { written, packs })
        .map_err(|e| Error::with(ErrorKind::Io, format!("encoding an index object: {e}")))?;
    let mut out = Vec::with_capacity(INDEX_HEAD + body.len() + 32);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    if out.len() as u64 > MAX_INDEX_OBJECT {
        return Err(super::oversized(
            "an index object",
            Some(out.len() as u64),
            MAX_INDEX_OBJECT,
        ));
    }
    Ok((blake3::hash(&out), out))
}

/// The packs an index object named `name` lists, every one checked.
pub(crate) fn decode_index(name: &blake3::Hash, bytes: &[u8]) -> Result<Vec<PackRecord>> {
    if bytes.len() < 9 || bytes[..9] != INDEX_MAGIC {
        return Err(Error::corrupt("not a cowvfs index object (bad magic)"));
    }
    if bytes.len() < INDEX_HEAD + 32 {
        return Err(Error::corrupt("index object is truncated"));
    }
    let version = u16::from_le_bytes([bytes[9], bytes[10]]);
    if version != INDEX_VERSION {
        return Err(unsupported("index object", version, INDEX_VERSION));
    }
    let (before, tail) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(before).as_bytes() != tail {
        return Err(Error::corrupt(
            "index object does not match its trailing hash (damaged or truncated)",
        ));
    }
    if blake3::hash(bytes) != *name {
        return Err(Error::corrupt(
            "index object is stored under another object's name",
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[11..19]);
    let body = &before[INDEX_HEAD..];
    if u64::from_le_bytes(n) != body.len() as u64 {
        return Err(Error::corrupt("index object body length disagrees"));
    }
    let body: IndexBody = postcard::from_bytes(body)
        .map_err(|e| Error::corrupt(format!("index object does not decode: {e}")))?;
    let entries: usize = body.packs.iter().map(|p| p.entries.len()).sum();
    if entries > MAX_INDEX_ENTRIES {
        return Err(Error::corrupt(format!(
            "index object lists {entries} chunks, more than {MAX_INDEX_ENTRIES}"
        )));
    }
    body.packs.iter().try_for_each(check_record)?;
    Ok(body.packs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (PackRecord, Vec<u8>) {
        let mut b = PackBuilder::with_buffer(Vec::new());
        for i in 0..5u8 {
            let data = vec![i + 1; 1000 + i as usize];
            b.push(&blake3::hash(&data), &data);
        }
        b.finish().unwrap()
    }

    #[test]
    fn a_pack_round_trips_and_every_damage_is_refused() {
        let (rec, bytes) = sample();
        let name = blake3::Hash::from_bytes(rec.name);
        assert_eq!(check_pack(&name, &bytes).unwrap(), rec);
        assert_eq!(rec.size, bytes.len() as u64);
        // Its own index, read the way a ranged reader would.
        let size = bytes.len() as u64;
        let (len, hash) = decode_footer(size, &bytes[(size - PACK_FOOT) as usize..]).unwrap();
        let t0 = (size - PACK_FOOT - len) as usize;
        let t = &bytes[t0..(size - PACK_FOOT) as usize];
        assert_eq!(decode_trailer(&name, size, &hash, t).unwrap(), rec);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(check_pack(&name, &bad).is_err(), "flip at {i}");
        }
        for n in [0, 5, 11, 100, bytes.len() - 1] {
            assert!(check_pack(&name, &bytes[..n]).is_err(), "truncated to {n}");
        }
        let other = blake3::hash(b"other");
        assert!(check_pack(&other, &bytes).is_err());
        let mut v2 = bytes.clone();
        v2[9] = 9;
        assert_eq!(
            check_pack(&name, &v2).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn an_index_round_trips_and_every_damage_is_refused() {
        let (rec, _) = sample();
        let (name, bytes) = encode_index(vec![rec.clone()], 7).unwrap();
        assert_eq!(decode_index(&name, &bytes).unwrap(), vec![rec.clone()]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_index(&name, &bad).is_err(), "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert!(
                decode_index(&name, &bytes[..n]).is_err(),
                "truncated to {n}"
            );
        }
        // Well-formed but lying: an entry past the end of its pack, a
        // pack over the bound, overlapping entries.
        let mut lies = Vec::new();
        let mut r = rec.clone();
        r.entries[4].offset = r.size;
        lies.push(r);
        let mut r = rec.clone();
        r.size = MAX_PACK_OBJECT + 1;
        lies.push(r);
        let mut r = rec.clone();
        r.entries[1].offset = r.entries[0].offset + 1;
        lies.push(r);
        let mut r = rec;
        r.entries[0].len = CHUNK_SIZE as u32 + 1;
        lies.push(r);
        for r in lies {
            let (n, b) = encode_index(vec![r], 0).unwrap();
            let e = decode_index(&n, &b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
    }

    #[test]
    fn names_parse_strictly() {
        let h = blake3::hash(b"x");
        assert_eq!(parse_name(&index_key(&h), "index/"), Some(h));
        assert_eq!(parse_name(&pack_key(&h), "packs/"), Some(h));
        assert_eq!(parse_name(&pack_key(&h), "index/"), None);
        let upper = format!("index/{}", h.to_hex().to_uppercase());
        assert_eq!(parse_name(&upper, "index/"), None);
        assert_eq!(parse_name("index/abc", "index/"), None);
        assert_eq!(parse_name("index/.tmp-1-2", "index/"), None);
    }
}
