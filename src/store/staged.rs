//! Chunks a pull has fetched (or is about to), on their way into the
//! checkpoint file while the download goes on: the writer takes chunks in
//! table order, and a chunk not here yet waits for the fetch that brings
//! it. The fetching side hands in each verified chunk by its position, as
//! a slice of the buffer its request was read into, or ends the wait for
//! all with its error.
//!
//! A chunk leaves when the writer takes it, so what is held is what has
//! arrived ahead of the writer (the fetch asks for chunks roughly in
//! table order).

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::io_err;
use crate::error::Result;

pub(crate) struct Staged {
    state: Mutex<State>,
    arrived: Condvar,
}

struct State {
    chunks: Vec<Option<Bytes>>,
    /// Why no more chunks will come.
    failed: Option<String>,
}

impl fmt::Debug for Staged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staged").finish()
    }
}

impl Staged {
    /// Room for `n` chunks, none here yet.
    pub(crate) fn new(n: usize) -> Staged {
        Staged {
            state: Mutex::new(State {
                chunks: vec![None; n],
                failed: None,
            }),
            arrived: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chunk `key` arrived (verified by the caller).
    pub(crate) fn put(&self, key: usize, bytes: Bytes) {
        if let Some(slot) = self.lock().chunks.get_mut(key) {
            *slot = Some(bytes);
        }
        self.arrived.notify_all();
    }

    /// No more chunks will come: a wait for one that has not arrived ends
    /// with `why`.
    pub(crate) fn fail(&self, why: String) {
        self.lock().failed = Some(why);
        self.arrived.notify_all();
    }

    /// Takes chunk `key` (address `addr`, for messages), waiting for it.
    pub(crate) fn take(&self, key: usize, addr: &blake3::Hash) -> Result<Bytes> {
        let mut st = self.lock();
        loop {
            match st.chunks.get_mut(key) {
                None => return Err(io_err("chunk key out of range")),
                Some(slot) => {
                    if let Some(b) = slot.take() {
                        return Ok(b);
                    }
                }
            }
            if let Some(why) = &st.failed {
                return Err(io_err(format!(
                    "chunk {} did not arrive: {why}",
                    addr.to_hex()
                )));
            }
            st = self
                .arrived
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}
