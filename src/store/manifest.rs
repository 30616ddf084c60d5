//! The manifest object: one tree in a store.
//!
//! ```text
//! magic "cowvfs\0mf" [9] | version u16 | root hash [32] | body length u64
//! | body: a full checkpoint's header and postcard metadata, no data section
//! | blake3 of everything before [32]
//! ```
//!
//! (integers little-endian). The body is the checkpoint encoding itself
//! (`checkpoint::encode_meta`), so there is one metadata format and one
//! set of checks; the chunks it lists live in the store by address. The
//! wrapper adds what an object in a shared bucket needs: its own magic and
//! version, the root it claims (which must be the one its name says), and a
//! trailing hash, so a damaged object is named as such before anything is
//! decoded. Loading then rebuilds the tree and checks its root hash too.

use crate::error::{Error, ErrorKind, Result};

/// The manifest format this build writes and reads.
pub(crate) const VERSION: u16 = 1;

const MAGIC: [u8; 9] = *b"cowvfs\0mf";
const HEAD_LEN: usize = 9 + 2 + 32 + 8;

/// The manifest object for `root` holding `body`.
pub(crate) fn encode(root: &blake3::Hash, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_LEN + body.len() + 32);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(root.as_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    out
}

/// The body of a manifest object that claims to be `root`'s, checked.
pub(crate) fn decode<'a>(root: &blake3::Hash, bytes: &'a [u8]) -> Result<&'a [u8]> {
    if bytes.len() < 9 || bytes[..9] != MAGIC {
        return Err(Error::corrupt("not a cowvfs manifest (bad magic)"));
    }
    if bytes.len() < HEAD_LEN + 32 {
        return Err(Error::corrupt("manifest is truncated"));
    }
    let version = u16::from_le_bytes([bytes[9], bytes[10]]);
    if version != VERSION {
        return Err(Error::with(
            ErrorKind::Unsupported,
            format!(
                "manifest format version {version} is not supported (this build reads version {VERSION})"
            ),
        ));
    }
    let (before, trailer) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(before).as_bytes() != trailer {
        return Err(Error::corrupt("manifest does not match its trailing hash"));
    }
    if &bytes[11..43] != root.as_bytes() {
        return Err(Error::corrupt(
            "manifest is stored under another tree's name",
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[43..51]);
    let body = &before[HEAD_LEN..];
    if u64::from_le_bytes(len) != body.len() as u64 {
        return Err(Error::corrupt("manifest body length disagrees"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_refused() {
        let root = blake3::hash(b"root");
        let m = encode(&root, b"body bytes");
        assert_eq!(decode(&root, &m).unwrap(), b"body bytes");
        assert!(decode(&blake3::hash(b"other"), &m).is_err());
        for i in 0..m.len() {
            let mut bad = m.clone();
            bad[i] ^= 1;
            assert!(decode(&root, &bad).is_err(), "flip at {i}");
        }
        for n in 0..m.len() {
            assert!(decode(&root, &m[..n]).is_err(), "truncated to {n}");
        }
        let mut v2 = m.clone();
        v2[9] = 2;
        let e = decode(&root, &v2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }
}
