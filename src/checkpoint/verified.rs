//! Saving a full checkpoint whose chunk bytes the caller hands in, each
//! already checked against its address (the store's pull checks every
//! chunk as it arrives). The file is the one [`Snapshot::save`] makes,
//! byte for byte (the same encoding of the same tree, the chunks in the
//! same order), but no chunk is hashed a second time or copied on its way
//! to the file: the trailing hash covers the header and the metadata only
//! (format version 2), so it is known before any chunk arrives.
//!
//! The chunk table gives every chunk's offset in the file before any
//! arrives, so chunks are written as they come, in any order, from any
//! thread, each at its own offset: a download that checks chunks on
//! several threads writes each one right after hashing it, while its
//! bytes are still in the processor's cache.
//!
//! The file must be durable before it is renamed into place. Rather than
//! leave a gigabyte of dirty pages to one sync at the end (the disk idle
//! while the network works, then the other way round), a second thread
//! syncs the file every [`SYNC_STEP`] bytes written, so the disk writes
//! while the download goes on and the last sync has little left to do.
//!
//! Loading does not trust any of this: a file written here is read and
//! checked like any other.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::encode::{encode, trailer_hash};
use super::{CHECKPOINT_FILE, SaveStats};
use crate::atomic;
use crate::error::{Error, ErrorKind, Result};
use crate::vfs::Snapshot;

/// Bytes written between two early syncs of the file.
const SYNC_STEP: u64 = 16 << 20;

/// Where the chunks of a [`save_verified`] go: the caller hands each one
/// in by its position in the chunk table, in any order, from any thread.
pub(crate) struct Placer<'a> {
    file: &'a File,
    chunks: &'a [(blake3::Hash, u32)],
    /// Offset in the file of each chunk of the table.
    at: Vec<u64>,
    /// Which chunks are in the file already.
    written: Vec<AtomicBool>,
    flusher: &'a Flusher,
}

impl Placer<'_> {
    /// Writes chunk `i` of the table (checked against its address by the
    /// caller) at its offset in the file, now: a caller that has just
    /// hashed it writes it while its bytes are still in the processor's
    /// cache. A chunk of the wrong length, or a position past the table,
    /// is an error.
    pub(crate) fn put(&self, i: usize, bytes: &[u8]) -> Result<()> {
        let Some(&(addr, want)) = self.chunks.get(i) else {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!("chunk {i} given, the tree stores {}", self.chunks.len()),
            ));
        };
        if bytes.len() != want as usize {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!(
                    "chunk {}: {} bytes given, the tree stores {want}",
                    addr.to_hex(),
                    bytes.len()
                ),
            ));
        }
        self.file.write_all_at(bytes, self.at[i])?;
        self.written[i].store(true, Ordering::Release);
        self.flusher.wrote(bytes.len() as u64);
        Ok(())
    }

    /// The first chunk of the table not handed in, if any.
    fn missing(&self) -> Option<&blake3::Hash> {
        let i = self
            .written
            .iter()
            .position(|w| !w.load(Ordering::Acquire))?;
        Some(&self.chunks[i].0)
    }
}

/// Saves `snap` in full to `path`, atomically. `fill` hands the data
/// section's chunks to the [`Placer`] it is given, each once, in any
/// order (it may be a download that checks each chunk as it arrives).
/// `chunks` is the chunk table the caller fetches by (address, stored
/// length), which must be the tree's own; the caller promises each chunk
/// it hands in hashes to its address. A chunk of the wrong length, one
/// that never comes, or an error from `fill` fails the save, and nothing
/// is left at `path`.
pub(crate) fn save_verified(
    snap: &Snapshot,
    path: &Path,
    chunks: &[(blake3::Hash, u32)],
    fill: &mut dyn FnMut(&Placer<'_>) -> Result<()>,
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
        write_data(file, &header, meta, chunks, fill)?;
        Ok(enc.stats)
    })
}

fn write_data(
    file: &File,
    header: &[u8],
    meta: &[u8],
    chunks: &[(blake3::Hash, u32)],
    fill: &mut dyn FnMut(&Placer<'_>) -> Result<()>,
) -> Result<()> {
    let mut at = Vec::with_capacity(chunks.len());
    let mut end = (header.len() + meta.len()) as u64;
    for &(_, len) in chunks {
        at.push(end);
        end += len as u64;
    }
    reserve(file, end + blake3::OUT_LEN as u64)?;
    write_all_at(file, &[header, meta], 0)?;
    let flusher = Flusher::default();
    std::thread::scope(|s| {
        let syncing = s.spawn(|| flusher.run(file));
        let placer = Placer {
            file,
            chunks,
            at,
            written: chunks.iter().map(|_| AtomicBool::new(false)).collect(),
            flusher: &flusher,
        };
        let filled = fill(&placer);
        flusher.end();
        let synced = syncing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("syncing thread failed")));
        filled?;
        synced?;
        if let Some(addr) = placer.missing() {
            return Err(Error::with(
                ErrorKind::Io,
                format!("chunk {} never came", addr.to_hex()),
            ));
        }
        write_all_at(file, &[trailer_hash(header, meta).as_bytes()], end)?;
        Ok(())
    })
}

/// Gives the file its `len` bytes of disk before anything is written: a
/// full disk fails the save now, not a gigabyte into the download, and
/// the writes that follow land in space already allocated. A file system
/// that cannot reserve space is written as it is.
fn reserve(file: &File, len: u64) -> Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

/// Syncs the file every [`SYNC_STEP`] bytes written, on a thread of its
/// own, until the writing ends (the caller's last sync does the rest).
#[derive(Default)]
struct Flusher {
    written: AtomicU64,
    /// Syncs made so far.
    syncs: AtomicU64,
    /// The writing has ended.
    ended: Mutex<bool>,
    wake: Condvar,
}

impl Flusher {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.ended.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `n` bytes written; wakes the syncing thread each time the
    /// total passes a multiple of [`SYNC_STEP`].
    fn wrote(&self, n: u64) {
        let before = self.written.fetch_add(n, Ordering::AcqRel);
        if before / SYNC_STEP != (before + n) / SYNC_STEP {
            // Under the lock, so the thread cannot miss it between its
            // look at the count and its wait.
            let _held = self.lock();
            self.wake.notify_all();
        }
    }

    fn end(&self) {
        *self.lock() = true;
        self.wake.notify_all();
    }

    /// The syncing thread: a sync each time [`SYNC_STEP`] more bytes
    /// have been written, until [`Flusher::end`].
    fn run(&self, file: &File) -> io::Result<()> {
        let mut synced = 0;
        loop {
            let mut ended = self.lock();
            while !*ended && self.written.load(Ordering::Acquire) < synced + SYNC_STEP {
                ended = self
                    .wake
                    .wait(ended)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if *ended {
                return Ok(());
            }
            drop(ended);
            synced = self.written.load(Ordering::Acquire);
            file.sync_data()?;
            self.syncs.fetch_add(1, Ordering::Release);
        }
    }
}

/// Writes every byte of `bufs`, in order, at `offset` of `file`, in as
/// few system calls as the kernel allows.
fn write_all_at(file: &File, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
    if let [one] = bufs {
        return file.write_all_at(one, offset);
    }
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match rustix::io::pwritev(file, rest, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
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
    fn table(snap: &Snapshot) -> (Vec<(blake3::Hash, u32)>, Vec<Vec<u8>>) {
        let enc = encode(snap, None, false).unwrap();
        let (_, _, table) = enc.parts().unwrap();
        let mut bytes = vec![Vec::new(); table.len()];
        for (_, inode) in snap.inodes() {
            if let crate::tree::Node::File(c) = &inode.node {
                for (_, ch) in c.chunks() {
                    if let Some(a) = ch.addr() {
                        let i = table.iter().position(|t| t.0 == a).unwrap();
                        bytes[i] = ch.trimmed().unwrap().to_vec();
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
        let saved = snap.save(dir.path().join("s.ck")).unwrap();
        let want = std::fs::read(dir.path().join("s.ck")).unwrap();
        // In table order, in reverse, and interleaved: each chunk lands at
        // its own offset.
        let n = table.len();
        let orders: [Vec<usize>; 3] = [
            (0..n).collect(),
            (0..n).rev().collect(),
            (0..n).step_by(2).chain((1..n).step_by(2)).collect(),
        ];
        for order in orders {
            let stats = save_verified(&snap, &out, &table, &mut |p| {
                order.iter().try_for_each(|&i| p.put(i, &bytes[i]))
            })
            .unwrap();
            assert_eq!(stats, saved);
            assert!(std::fs::read(&out).unwrap() == want, "order {order:?}");
            assert!(snap.diff(&Snapshot::load(&out).unwrap()).is_empty());
            std::fs::remove_file(&out).unwrap();
        }
        // From two threads at once, as a download's checking threads do.
        let stats = save_verified(&snap, &out, &table, &mut |p| {
            std::thread::scope(|s| {
                let odd = s.spawn(|| (1..n).step_by(2).try_for_each(|i| p.put(i, &bytes[i])));
                (0..n).step_by(2).try_for_each(|i| p.put(i, &bytes[i]))?;
                odd.join().unwrap()
            })
        })
        .unwrap();
        assert_eq!(stats, saved);
        assert!(std::fs::read(&out).unwrap() == want);
    }

    #[test]
    fn the_file_is_synced_as_it_fills() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let flusher = Flusher::default();
        let syncs = || flusher.syncs.load(Ordering::Acquire);
        // Waits up to 10 s for `n` syncs in all.
        let reach = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while syncs() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            syncs()
        };
        std::thread::scope(|s| {
            let syncing = s.spawn(|| flusher.run(&file));
            // Just short of a step: no sync.
            flusher.wrote(SYNC_STEP - 1);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(syncs(), 0);
            // Past it: one.
            flusher.wrote(2);
            assert_eq!(reach(1), 1);
            // Two more steps in pieces, from two threads at once: the
            // thread wakes for each step passed, however it is reached.
            std::thread::scope(|w| {
                w.spawn(|| (0..4).for_each(|_| flusher.wrote(SYNC_STEP / 4)));
                (0..4).for_each(|_| flusher.wrote(SYNC_STEP / 4));
            });
            assert!(reach(2) >= 2, "{} syncs", syncs());
            flusher.end();
            syncing.join().unwrap().unwrap();
        });
        assert!(syncs() <= 3, "{} syncs for 3 steps", syncs());
    }

    #[test]
    fn wrong_chunks_are_refused_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let snap = tree();
        let (table, bytes) = table(&snap);
        let out = dir.path().join("v.ck");
        // Another table than the tree's.
        let all = |p: &Placer<'_>| (0..bytes.len()).try_for_each(|i| p.put(i, &bytes[i]));
        let e = save_verified(&snap, &out, &table[1..], &mut |p| all(p)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // A chunk of the wrong length.
        let e = save_verified(&snap, &out, &table, &mut |p| {
            (0..bytes.len())
                .try_for_each(|i| p.put(i, if i == 3 { &bytes[i][1..] } else { &bytes[i] }))
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(
            e.to_string().contains(&table[3].0.to_hex().to_string()),
            "{e}"
        );
        // A position past the table.
        let e = save_verified(&snap, &out, &table, &mut |p| p.put(table.len(), &[])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        // The caller's own error (a download that failed), unchanged.
        let e = save_verified(&snap, &out, &table, &mut |p| {
            (0..5).try_for_each(|i| p.put(i, &bytes[i]))?;
            Err(Error::with(ErrorKind::Io, "chunk did not arrive"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("did not arrive"), "{e}");
        // A caller that ends without handing in every chunk.
        let e = save_verified(&snap, &out, &table, &mut |p| {
            (0..bytes.len())
                .filter(|&i| i != 4)
                .try_for_each(|i| p.put(i, &bytes[i]))
        })
        .unwrap_err();
        assert!(
            e.to_string().contains(&table[4].0.to_hex().to_string()),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
