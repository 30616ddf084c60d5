//! Large transfer buffers kept for reuse within one transfer. A buffer of
//! megabytes given back to the system and taken again costs a page fault
//! and a zeroed page every 4 KiB; a pull's ranged reads and a push's
//! packs are 16 MiB each, so a transfer keeps the buffers it is done
//! with for its next ones. A [`Spare`] list holds no more buffers than
//! its transfer had in use at once (a buffer is made only when none is
//! idle), and goes when the transfer and the last bytes cut from its
//! buffers are gone.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Most idle buffers a list keeps.
const KEEP: usize = 8;

/// Idle buffers of one transfer.
#[derive(Default)]
pub(crate) struct Spare(Mutex<Vec<Vec<u8>>>);

impl Spare {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Up to `n` idle buffers, taken off the list.
    pub(crate) fn take(&self, n: usize) -> Vec<Vec<u8>> {
        let mut bufs = self.lock();
        let keep = bufs.len().saturating_sub(n);
        bufs.split_off(keep)
    }

    /// An empty buffer that holds `len` bytes: the smallest idle one that
    /// does without growing, or a new one.
    pub(crate) fn one(&self, len: usize) -> Vec<u8> {
        fitting(&mut self.lock(), len).unwrap_or_else(|| Vec::with_capacity(len))
    }

    /// Puts `buf` back on the list (unless the list is full).
    pub(crate) fn give(&self, buf: Vec<u8>) {
        let mut bufs = self.lock();
        if bufs.len() < KEEP && buf.capacity() > 0 {
            bufs.push(buf);
        }
    }

    /// `buf` as shared bytes that go back on the list when the last
    /// slice of them is dropped.
    pub(crate) fn bytes(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            spare: self.clone(),
        })
    }
}

/// The smallest buffer of `bufs` that holds `len` bytes without growing,
/// taken out of it and emptied.
pub(crate) fn fitting(bufs: &mut Vec<Vec<u8>>, len: usize) -> Option<Vec<u8>> {
    let best = (bufs.iter().enumerate())
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    let mut b = bufs.swap_remove(best);
    b.clear();
    Some(b)
}

/// A buffer while bytes cut from it are in use.
struct Lent {
    buf: Vec<u8>,
    spare: Arc<Spare>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_their_last_slice_goes() {
        let spare = Arc::new(Spare::default());
        let mut b = spare.one(1 << 20);
        b.extend_from_slice(&[7; 1000]);
        let ptr = b.as_ptr();
        let whole = spare.bytes(b);
        let part = whole.slice(10..20);
        drop(whole);
        assert!(spare.take(8).is_empty(), "back while a slice is held");
        assert_eq!(&part[..], &[7; 10]);
        drop(part);
        // Back, and handed out again, emptied, for a request that fits.
        let again = spare.one(4096);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 0));
        assert!(again.capacity() >= 1 << 20);
        // One too small for a request is not handed out; a new one is.
        spare.give(Vec::with_capacity(100));
        assert!(spare.one(1000).capacity() >= 1000);
        assert_eq!(spare.take(8).len(), 1);
        // The list holds at most KEEP.
        for _ in 0..KEEP + 3 {
            spare.give(Vec::with_capacity(10));
        }
        assert_eq!(spare.take(100).len(), KEEP);
    }
}
