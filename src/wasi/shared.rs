//! What one sandbox's descriptors and streams share: the tree behind its
//! lock, and the tally of resources the guest holds beside the engine's
//! own open descriptors.
//!
//! Descriptors and streams both reach the tree through here, so neither
//! depends on the other for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::bindings::types::ErrorCode;
use crate::{Result as VfsResult, Vfs};

/// One sandbox's tree, shared by its descriptors' host calls and its
/// streams. `None` once the embedder has taken the tree back.
pub(crate) type SharedVfs = Arc<Mutex<Option<Vfs>>>;

/// Most bytes one `read` call or stream read returns (and allocates).
pub(crate) const MAX_READ: usize = 1 << 20;

pub(crate) fn lock(vfs: &SharedVfs) -> MutexGuard<'_, Option<Vfs>> {
    // Nothing panics while holding the lock; if something ever did, the
    // tree is still consistent (engine operations are all-or-nothing).
    vfs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `op` on the locked tree; once the embedder took the tree back,
/// every descriptor is `bad-descriptor`.
pub(crate) fn on_tree<R, E: From<ErrorCode>>(
    vfs: &SharedVfs,
    op: impl FnOnce(&mut Vfs) -> Result<R, E>,
) -> Result<R, E> {
    let mut guard = lock(vfs);
    let tree = guard.as_mut().ok_or(ErrorCode::BadDescriptor)?;
    op(tree)
}

/// Runs one engine operation on the shared tree.
pub(crate) fn with_vfs<R>(
    vfs: &SharedVfs,
    op: impl FnOnce(&mut Vfs) -> VfsResult<R>,
) -> Result<R, ErrorCode> {
    on_tree(vfs, |tree| op(tree).map_err(ErrorCode::from))
}

/// One resource the guest holds that the engine does not count as an open
/// descriptor (a mount's file or directory, a shared preopen, a directory
/// stream, a file stream): counted in its sandbox's tally until dropped,
/// so that everything the guest holds stays within `max_open_files`.
pub(crate) struct Held(Arc<AtomicU64>);

impl Held {
    /// Counts one more resource in `tally`.
    pub(crate) fn take(tally: &Arc<AtomicU64>) -> Held {
        tally.fetch_add(1, Ordering::Relaxed);
        Held(tally.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
