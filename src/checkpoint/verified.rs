//! Saving a full checkpoint whose chunk bytes the caller hands in, each
//! already checked against its address (the store's pull checks every
//! chunk as it arrives). The file is the one [`Snapshot::save`] makes,
//! byte for byte (the same encoding of the same tree, the chunks in the
//! same order, the same trailing hash), but no chunk is hashed against
//! its address a second time or copied on its way to the file: the bytes
//! go out from the caller's buffers in large vectored writes, while a
//! second thread computes the trailing hash over the same buffers.
//!
//! Loading does not trust any of this: a file written here is read and
//! checked like any other.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;

use super::encode::encode;
use super::{CHECKPOINT_FILE, SaveStats};
use crate::atomic;
use crate::error::{Error, ErrorKind, Result};
use crate::vfs::Snapshot;

/// Bytes gathered per write (and per message to the hashing thread).
const WRITE_BATCH: usize = 8 << 20;
/// Most buffers in one vectored write (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// Saves `snap` in full to `path`, atomically, taking the data section's
/// chunks from `next` (called with 0, 1, 2, ... in order; it may block
/// until that chunk has arrived). `chunks` is the chunk table the caller
/// fetched by (address, stored length), which must be the tree's own;
/// the caller promises each chunk `next` returns hashes to its address.
/// A chunk of the wrong length is an error, and nothing is left at `path`.
pub(crate) fn save_verified(
    snap: &Snapshot,
    path: &Path,
    chunks: &[(blake3::Hash, u32)],
    next: &mut dyn FnMut(usize) -> Result<Bytes>,
) -> Result<SaveStats> {
    let enc = encode(snap, None, false)?;
    let (header, meta, table) = enc.parts()?;
    if table != chunks {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{}: the {} chunks given are not the {} the tree stores",
                path.display(),
                chunks.len(),
                table.len()
            ),
        ));
    }
    atomic::write_file(path, CHECKPOINT_FILE, |file| {
        write_data(file, &header, meta, chunks, next)?;
        Ok(enc.stats)
    })
}

fn write_data(
    mut file: &File,
    header: &[u8],
    meta: &[u8],
    chunks: &[(blake3::Hash, u32)],
    next: &mut dyn FnMut(usize) -> Result<Bytes>,
) -> Result<()> {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Vec<Bytes>>(2);
        let hashing = s.spawn(move || {
            let mut h = blake3::Hasher::new();
            h.update(header);
            h.update(meta);
            for batch in rx {
                for b in &batch {
                    h.update(b);
                }
            }
            h.finalize()
        });
        let written = (|| -> Result<()> {
            write_slices(&mut file, &[header, meta])?;
            let mut i = 0;
            while i < chunks.len() {
                let (mut batch, mut bytes) = (Vec::new(), 0usize);
                while i < chunks.len() && bytes < WRITE_BATCH && batch.len() < MAX_SLICES {
                    let b = next(i)?;
                    let (addr, len) = chunks[i];
                    if b.len() != len as usize {
                        return Err(Error::with(
                            ErrorKind::InvalidInput,
                            format!(
                                "chunk {}: {} bytes given, the tree stores {len}",
                                addr.to_hex(),
                                b.len()
                            ),
                        ));
                    }
                    bytes += b.len();
                    batch.push(b);
                    i += 1;
                }
                // Hashing (on its own thread) and writing the same batch
                // overlap; the channel holds two batches at most.
                tx.send(batch.clone())
                    .map_err(|_| Error::with(ErrorKind::Io, "the hashing thread stopped"))?;
                let slices: Vec<&[u8]> = batch.iter().map(|b| &b[..]).collect();
                write_slices(&mut file, &slices)?;
            }
            Ok(())
        })();
        drop(tx);
        let trailer = hashing
            .join()
            .map_err(|_| Error::with(ErrorKind::Io, "hashing thread failed"))?;
        written?;
        file.write_all(trailer.as_bytes())?;
        Ok(())
    })
}

/// Writes every byte of `bufs`, in order, in as few system calls as the
/// kernel allows.
fn write_slices(file: &mut &File, bufs: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vfs;

    fn tree() -> Snapshot {
        let mut v = Vfs::new();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 253) as u8).collect();
        v.write_file("/big", &big).unwrap();
        v.write_file("/copy", &big).unwrap();
        v.write_file("/small", b"small").unwrap();
        v.write_file("/zeros", &[0; 90_000]).unwrap();
        v.snapshot()
    }

    /// The tree's chunk table and each chunk's bytes, as a pull has them.
    fn table(snap: &Snapshot) -> (Vec<(blake3::Hash, u32)>, Vec<Bytes>) {
        let enc = encode(snap, None, false).unwrap();
        let (_, _, table) = enc.parts().unwrap();
        let mut bytes = vec![Bytes::new(); table.len()];
        for (_, inode) in snap.inodes() {
            if let crate::tree::Node::File(c) = &inode.node {
                for (_, ch) in c.chunks() {
                    if let Some(a) = ch.addr() {
                        let i = table.iter().position(|t| t.0 == a).unwrap();
                        bytes[i] = Bytes::copy_from_slice(ch.trimmed().unwrap());
                    }
                }
            }
        }
        (table, bytes)
    }

    #[test]
    fn the_file_is_the_one_a_save_writes() {
        let dir = tempfile::tempdir().unwrap();
        let snap = tree();
        let (table, bytes) = table(&snap);
        assert_eq!(
            table.len(),
            6,
            "5 chunks of /big (shared by /copy) and /small"
        );
        let out = dir.path().join("v.ck");
        let stats = save_verified(&snap, &out, &table, &mut |i| Ok(bytes[i].clone())).unwrap();
        let saved = snap.save(dir.path().join("s.ck")).unwrap();
        assert_eq!(stats, saved);
        let want = std::fs::read(dir.path().join("s.ck")).unwrap();
        assert!(std::fs::read(&out).unwrap() == want);
        assert!(snap.diff(&Snapshot::load(&out).unwrap()).is_empty());
    }

    #[test]
    fn wrong_chunks_are_refused_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let snap = tree();
        let (table, bytes) = table(&snap);
        let out = dir.path().join("v.ck");
        // Another table than the tree's.
        let e = save_verified(&snap, &out, &table[1..], &mut |i| Ok(bytes[i].clone())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // A chunk of the wrong length.
        let e = save_verified(&snap, &out, &table, &mut |i| {
            Ok(if i == 3 {
                bytes[i].slice(1..)
            } else {
                bytes[i].clone()
            })
        })
        .unwrap_err();
        assert!(
            e.to_string().contains(&table[3].0.to_hex().to_string()),
            "{e}"
        );
        // A chunk that never comes: the caller's error, unchanged.
        let e = save_verified(&snap, &out, &table, &mut |i| {
            if i == 5 {
                Err(Error::with(ErrorKind::Io, "chunk did not arrive"))
            } else {
                Ok(bytes[i].clone())
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("did not arrive"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
