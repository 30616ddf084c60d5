//! Tombstones: what a garbage collection condemned, for a later one to
//! delete (DESIGN.md, "Garbage collection").
//!
//! A tombstone (`gc/<blake3 of the object>`) lists manifests, packs (with
//! their full records, so a pack that turns out to be needed can be put
//! back in the index) and loose chunks:
//!
//! ```text
//! magic "cowvfs\0gc" [9] | version u16 | body length u64
//! | body: postcard TombBody | blake3 of everything before [32]
//! ```
//!
//! It is read as untrusted like every store object: bounded before it is
//! read, checked against its trailing hash and its name, every pack record
//! checked as an index object's would be.

use serde::{Deserialize, Serialize};

use super::pack::{self, PackRecord};
use crate::error::{Error, ErrorKind, Result};

const MAGIC: [u8; 9] = *b"cowvfs\0gc";
const VERSION: u16 = 1;
const HEAD: usize = 9 + 2 + 8;

/// Where tombstones live.
pub(crate) const PREFIX: &str = "gc/";

/// Most bytes a tombstone may hold (64 MiB).
pub(crate) const MAX_TOMBSTONE: u64 = 64 << 20;

/// Most names (manifests, loose chunks and pack entries together) one
/// tombstone lists; a collection writes more tombstones past this.
pub(crate) const MAX_TOMB_ENTRIES: usize = 1 << 20;

/// What one collection condemned.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tomb {
    /// When it was written (Unix seconds; informative only: the object's
    /// modification time in the store is what ages it).
    pub written: u64,
    /// Roots whose manifests are condemned.
    pub manifests: Vec<[u8; 32]>,
    /// Packs taken out of the index.
    pub packs: Vec<PackRecord>,
    /// Loose (format 1) chunk objects.
    pub loose: Vec<[u8; 32]>,
}

impl Tomb {
    /// Names it lists, counting each pack entry.
    pub(crate) fn entries(&self) -> usize {
        self.manifests.len()
            + self.loose.len()
            + self
                .packs
                .iter()
                .map(|p| p.entries.len() + 1)
                .sum::<usize>()
    }
}

/// The packs the store's tombstones condemn, by object name: a push must
/// not take one as uploaded already (a store that cannot list times is
/// never collected, so has none).
pub(crate) fn condemned_packs(store: &dyn super::BlobStore) -> Result<Vec<String>> {
    let listed = match store.list_info(PREFIX) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for i in listed {
        let Some(name) = pack::parse_name(&i.key, PREFIX) else {
            continue;
        };
        let Some(b) = store.get_objects(&[&i.key], MAX_TOMBSTONE)?.pop().flatten() else {
            continue;
        };
        let t = decode(&name, &b).map_err(|e| {
            Error::with(
                e.kind(),
                format!(
                    "{}/{}: {}",
                    store.location(),
                    i.key,
                    e.context().unwrap_or("corrupt")
                ),
            )
        })?;
        out.extend(t.packs.iter().map(PackRecord::key));
    }
    Ok(out)
}

/// The object name of a tombstone.
pub(crate) fn key(name: &blake3::Hash) -> String {
    format!("{PREFIX}{}", name.to_hex())
}

/// A tombstone object and its name.
pub(crate) fn encode(t: &Tomb) -> Result<(blake3::Hash, Vec<u8>)> {
    let body = postcard::to_stdvec(t)
        .map_err(|e| Error::with(ErrorKind::Io, format!("encoding a tombstone: {e}")))?;
    let mut out = Vec::with_capacity(HEAD + body.len() + 32);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    if out.len() as u64 > MAX_TOMBSTONE {
        return Err(super::oversized(
            "a tombstone",
            Some(out.len() as u64),
            MAX_TOMBSTONE,
        ));
    }
    Ok((blake3::hash(&out), out))
}

/// The tombstone named `name`, checked.
pub(crate) fn decode(name: &blake3::Hash, bytes: &[u8]) -> Result<Tomb> {
    if bytes.len() < HEAD + 32 || bytes[..9] != MAGIC {
        return Err(Error::corrupt(
            "not a cowvfs tombstone (bad magic or truncated)",
        ));
    }
    let version = u16::from_le_bytes([bytes[9], bytes[10]]);
    if version != VERSION {
        return Err(Error::with(
            ErrorKind::Unsupported,
            format!(
                "tombstone format version {version} is not supported (this build reads {VERSION})"
            ),
        ));
    }
    let (before, tail) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(before).as_bytes() != tail {
        return Err(Error::corrupt("tombstone does not match its trailing hash"));
    }
    if blake3::hash(bytes) != *name {
        return Err(Error::corrupt(
            "tombstone is stored under another object's name",
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[11..19]);
    let body = &before[HEAD..];
    if u64::from_le_bytes(n) != body.len() as u64 {
        return Err(Error::corrupt("tombstone body length disagrees"));
    }
    let t: Tomb = postcard::from_bytes(body)
        .map_err(|e| Error::corrupt(format!("tombstone does not decode: {e}")))?;
    if t.entries() > MAX_TOMB_ENTRIES {
        return Err(Error::corrupt(format!(
            "tombstone lists {} names, more than {MAX_TOMB_ENTRIES}",
            t.entries()
        )));
    }
    t.packs.iter().try_for_each(pack::check_record)?;
    Ok(t)
}

/// Splits what one collection condemned into tombstones of at most
/// [`MAX_TOMB_ENTRIES`] names each.
pub(crate) fn split(t: Tomb) -> Vec<Tomb> {
    fn slot(out: &mut Vec<Tomb>, written: u64, n: usize) -> &mut Tomb {
        if out
            .last()
            .is_none_or(|l| l.entries() + n > MAX_TOMB_ENTRIES)
        {
            out.push(Tomb {
                written,
                ..Tomb::default()
            });
        }
        let i = out.len() - 1;
        &mut out[i]
    }
    let mut out = Vec::new();
    for m in t.manifests {
        slot(&mut out, t.written, 1).manifests.push(m);
    }
    for c in t.loose {
        slot(&mut out, t.written, 1).loose.push(c);
    }
    for p in t.packs {
        let n = p.entries.len() + 1;
        slot(&mut out, t.written, n).packs.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_round_trips_and_damage_is_refused() {
        let t = Tomb {
            written: 5,
            manifests: vec![[1; 32]],
            packs: vec![],
            loose: vec![[2; 32], [3; 32]],
        };
        let (name, bytes) = encode(&t).unwrap();
        assert_eq!(decode(&name, &bytes).unwrap(), t);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(decode(&name, &bad).is_err(), "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert!(decode(&name, &bytes[..n]).is_err(), "cut at {n}");
        }
        assert!(decode(&blake3::hash(b"x"), &bytes).is_err());
        assert_eq!(split(t.clone()), vec![t]);
        assert!(split(Tomb::default()).is_empty());
    }
}
