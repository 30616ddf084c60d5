//! Chunks a pull has fetched (or is about to), for writing the checkpoint
//! file while the download goes on: the tree is built over this source at
//! once, its save reads chunks in table order, and a chunk not here yet
//! waits for the fetch that brings it. The fetching side hands in each
//! verified chunk by its key, or ends the wait for all with its error.
//!
//! Bytes stay here until the source is dropped (with the pull), as a
//! pull without a cache held every chunk before; a read hands out a copy,
//! since a save's writer and its hashing thread may both ask for a chunk.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::io_err;
use crate::chunk::ChunkSource;
use crate::error::Result;

pub(crate) struct Staged {
    state: Mutex<State>,
    arrived: Condvar,
}

struct State {
    chunks: Vec<Option<Vec<u8>>>,
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
    pub(crate) fn put(&self, key: usize, bytes: Vec<u8>) {
        if let Some(slot) = self.lock().chunks.get_mut(key) {
            *slot = Some(bytes);
        }
        self.arrived.notify_all();
    }

    /// No more chunks will come: readers still waiting get `why`.
    pub(crate) fn fail(&self, why: String) {
        self.lock().failed = Some(why);
        self.arrived.notify_all();
    }
}

impl ChunkSource for Staged {
    fn fetch(&self, key: u64, addr: &blake3::Hash) -> Result<Vec<u8>> {
        let mut st = self.lock();
        loop {
            match st.chunks.get(key as usize) {
                None => return Err(io_err("chunk key out of range")),
                Some(Some(b)) => return Ok(b.clone()),
                Some(None) => {}
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
