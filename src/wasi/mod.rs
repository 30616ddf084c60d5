//! The WASI host: `wasi:filesystem@0.2.12` served from a [`Vfs`], for
//! wasmtime 48 components (and preview1 modules, through the adapter).
//!
//! An embedder keeps wasmtime-wasi for everything but the filesystem (cli,
//! clocks, random, stdio, sockets) and lets cowvfs replace
//! `wasi:filesystem/types` and `wasi:filesystem/preopens`:
//!
//! ```no_run
//! use cowvfs::Vfs;
//! use cowvfs::wasi::{WasiVfsCtx, WasiVfsCtxView, WasiVfsView};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime::{Engine, Store};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct Host {
//!     wasi: WasiCtx,
//!     table: ResourceTable,
//!     fs: WasiVfsCtx,
//! }
//! impl WasiView for Host {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//! impl WasiVfsView for Host {
//!     fn vfs(&mut self) -> WasiVfsCtxView<'_> {
//!         WasiVfsCtxView { ctx: &mut self.fs, table: &mut self.table }
//!     }
//! }
//!
//! # fn main() -> wasmtime::Result<()> {
//! let engine = Engine::default();
//! let mut linker = Linker::<Host>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
//! cowvfs::wasi::add_to_linker_sync(&mut linker)?; // replaces the filesystem
//!
//! let mut vfs = Vfs::new();
//! vfs.write_file("/hello.txt", b"only in memory\n")?;
//! let mut fs = WasiVfsCtx::new(vfs);
//! fs.preopen("/", "/")?;
//! let host = Host { wasi: WasiCtx::builder().build(), table: ResourceTable::new(), fs };
//! let store = Store::new(&engine, host);
//! // ... instantiate and run a component in `store` ...
//! let vfs: Vfs = store.into_data().fs.into_vfs(); // the sandbox's tree, back
//! # Ok(()) }
//! ```
//!
//! [`Sandbox`] and [`Guest`] do all of this for the common case: run one
//! command component (or preview1 module) against one tree.
//!
//! Paths resolve strictly beneath their descriptor, as the WIT preamble
//! says: an absolute path, a `..` above the descriptor's directory, or a
//! symlink to an absolute path fails with `not-permitted`. Descriptor rights
//! are enforced as wasmtime-wasi enforces them: without `write` a file
//! cannot be written or resized (`bad-descriptor`), and without
//! `mutate-directory` (a read-only preopen or mount, and everything opened
//! beneath it) nothing can be changed (`read-only`).

mod bindings;
mod descriptor;
mod error;
mod filesystem_impls;
// Only for the fuzz target (and this crate's tests): not the normal API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod limits;
pub mod p1;
// Building and compiling guests: needs wasmtime's compiler.
#[cfg(feature = "wasi")]
mod run;
mod shared;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Linker, ResourceTable};

pub use self::bindings::types::ErrorCode;
pub use self::descriptor::{Descriptor, DirectoryStream};
pub use self::limits::{
    DeadlineExceeded, LimitHit, MAX_TABLE_ELEMENTS, RunLimits, TICK, engine, engine_config,
    epochs_enabled,
};
#[cfg(feature = "wasi")]
pub use self::run::{Guest, RunOutcome, Sandbox, adapt_module, adapt_module_cached, cache_dir};

use self::shared::{Held, SharedVfs, lock};
use crate::{Error, ErrorKind, Fd, OpenOptions, Vfs};

/// An error from a `wasi:filesystem` host function: an `error-code` for the
/// guest, or a trap.
pub struct FsError(FsErrorRepr);

enum FsErrorRepr {
    Code(ErrorCode),
    Trap(wasmtime::Error),
}

impl FsError {
    /// An error that traps the guest instead of returning a code.
    pub fn trap(err: impl Into<wasmtime::Error>) -> FsError {
        FsError(FsErrorRepr::Trap(err.into()))
    }

    /// The code the guest sees, unless this is a trap.
    pub fn code(&self) -> Option<ErrorCode> {
        match &self.0 {
            FsErrorRepr::Code(c) => Some(*c),
            FsErrorRepr::Trap(_) => None,
        }
    }

    fn into_result(self) -> wasmtime::Result<ErrorCode> {
        match self.0 {
            FsErrorRepr::Code(c) => Ok(c),
            FsErrorRepr::Trap(e) => Err(e),
        }
    }
}

impl std::fmt::Debug for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            FsErrorRepr::Code(c) => write!(f, "{c:?}"),
            FsErrorRepr::Trap(e) => write!(f, "trap: {e:?}"),
        }
    }
}

impl From<ErrorCode> for FsError {
    fn from(code: ErrorCode) -> FsError {
        FsError(FsErrorRepr::Code(code))
    }
}

impl From<wasmtime::component::ResourceTableError> for FsError {
    fn from(err: wasmtime::component::ResourceTableError) -> FsError {
        FsError::trap(err)
    }
}

/// `Result` of a `wasi:filesystem` host function.
pub type FsResult<T> = Result<T, FsError>;

/// What a preopen gives the guest.
enum Preopen {
    /// A directory of the in-memory tree, resolved once when the preopen
    /// is added: `anchor` is an engine descriptor of that directory, held
    /// for the sandbox's life and shared by every guest descriptor of the
    /// preopen, so nothing the guest later renames or replaces with a
    /// symlink changes which directory the preopen is.
    Mem { anchor: Fd, mutate: bool },
    /// A live host directory (hybrid mode).
    Host {
        dir: Arc<File>,
        mutate: bool,
        mount: u32,
    },
}

/// The filesystem state of one sandbox: its tree, shared with the streams
/// the guest opens, and the directories preopened for the guest.
pub struct WasiVfsCtx {
    vfs: SharedVfs,
    preopens: Vec<(Preopen, String)>,
    /// Engine descriptors the guest holds, closed when the tree is taken
    /// back so the embedder gets a tree with none of them open.
    opened: HashSet<Fd>,
    mounts: u32,
    /// Resources the guest holds that the engine does not count (see
    /// [`Held`]); with the engine's open descriptors they stay within
    /// `max_open_files`.
    held: Arc<AtomicU64>,
}

impl std::fmt::Debug for WasiVfsCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let guests: Vec<&str> = self.preopens.iter().map(|(_, g)| g.as_str()).collect();
        f.debug_struct("WasiVfsCtx")
            .field("preopens", &guests)
            .field("open_descriptors", &self.opened.len())
            .finish()
    }
}

impl WasiVfsCtx {
    /// A context serving `vfs`, with nothing preopened yet.
    pub fn new(vfs: Vfs) -> WasiVfsCtx {
        WasiVfsCtx {
            vfs: Arc::new(Mutex::new(Some(vfs))),
            preopens: Vec::new(),
            opened: HashSet::new(),
            mounts: 0,
            held: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Shows the tree's directory `dir` to the guest as `guest` (e.g. `/`
    /// as `/`), writable. `dir` is resolved now, once: the preopen stays
    /// that directory whatever later happens to the path. Preopens are
    /// shown in the order they are added; nothing is preopened unless
    /// asked for.
    pub fn preopen(&mut self, dir: &str, guest: &str) -> crate::Result<&mut Self> {
        self.add_mem_preopen(dir, guest, true)
    }

    /// Like [`WasiVfsCtx::preopen`], but every change through it fails
    /// with `read-only`.
    pub fn preopen_read_only(&mut self, dir: &str, guest: &str) -> crate::Result<&mut Self> {
        self.add_mem_preopen(dir, guest, false)
    }

    fn add_mem_preopen(
        &mut self,
        dir: &str,
        guest: &str,
        mutate: bool,
    ) -> crate::Result<&mut Self> {
        let anchor = self
            .with_vfs(|v| {
                let meta = v.metadata(dir)?;
                if !meta.is_dir() {
                    return Err(Error::with(ErrorKind::NotADirectory, dir.to_string()));
                }
                v.open(dir, OpenOptions::new().read(true).directory(true))
            })
            .ok_or(Error::new(ErrorKind::BadDescriptor))??;
        let preopen = Preopen::Mem { anchor, mutate };
        self.preopens.push((preopen, guest.to_string()));
        Ok(self)
    }

    /// Mounts the live host directory `host` at `guest`, beside the
    /// in-memory tree (hybrid mode). Guest changes go to the host through
    /// cap-primitives, which keeps every path inside `host`; with
    /// `read_only` every change fails with `read-only`. Renames and links
    /// between the mount and anything else fail with `cross-device`.
    pub fn mount(&mut self, host: &Path, guest: &str, read_only: bool) -> crate::Result<&mut Self> {
        let dir = cap_primitives::fs::open_ambient_dir(host, cap_primitives::ambient_authority())
            .map_err(|e| {
            Error::with(
                error::io_kind(&e),
                format!("cannot mount {}: {e}", host.display()),
            )
        })?;
        self.mounts += 1;
        let preopen = Preopen::Host {
            dir: Arc::new(dir),
            mutate: !read_only,
            mount: self.mounts,
        };
        self.preopens.push((preopen, guest.to_string()));
        Ok(self)
    }

    /// Runs `f` on the tree, e.g. to look at what the guest did so far.
    /// `None` if the tree was already taken back.
    pub fn with_vfs<R>(&self, f: impl FnOnce(&mut Vfs) -> R) -> Option<R> {
        lock(&self.vfs).as_mut().map(f)
    }

    /// The sandbox's tree, back from the guest: every descriptor the guest
    /// still held is closed, and streams it still holds end. Call it after
    /// the guest has finished (or after dropping the store's resources).
    pub fn into_vfs(self) -> Vfs {
        let mut vfs = lock(&self.vfs).take().unwrap_or_default();
        let anchors = self.preopens.iter().filter_map(|(p, _)| match p {
            Preopen::Mem { anchor, .. } => Some(anchor),
            Preopen::Host { .. } => None,
        });
        for fd in self.opened.iter().chain(anchors) {
            // A stale descriptor is the only possible error, and it is
            // exactly what closing wants to achieve.
            let _ = vfs.close(*fd);
        }
        vfs
    }

    /// Counts one more resource held by the guest, if that keeps the
    /// engine's open descriptors plus every other held resource within
    /// the tree's `max_open_files`; else `insufficient-memory` (what a
    /// full descriptor table is in `wasi:filesystem`; `EMFILE` in
    /// preview1). A memory descriptor asks too, before the engine opens
    /// it, so that the sum holds whichever kind comes last.
    pub(crate) fn admit(&self) -> Result<Held, ErrorCode> {
        let guard = lock(&self.vfs);
        let v = guard.as_ref().ok_or(ErrorCode::BadDescriptor)?;
        let max = u64::from(v.limits().max_open_files);
        let held = self.held.load(Ordering::Relaxed);
        if v.usage().open_files.saturating_add(held) >= max {
            return Err(ErrorCode::InsufficientMemory);
        }
        Ok(Held::take(&self.held))
    }

    /// Closes a guest descriptor's engine descriptor, unless it is a
    /// preopen's shared anchor (which lives as long as the sandbox).
    pub(crate) fn release(&mut self, desc: &Descriptor) {
        desc.release(&self.vfs, &mut self.opened);
    }

    /// A descriptor of each preopen, in order, each counted as held.
    fn open_preopens(&mut self) -> crate::Result<Vec<(Descriptor, String)>> {
        let mut out = Vec::with_capacity(self.preopens.len());
        for (preopen, guest) in &self.preopens {
            let rights = |mutate| descriptor::Rights {
                read: true,
                write: false,
                mutate,
                sync: bindings::types::DescriptorFlags::empty(),
            };
            let held = self.admit().map_err(|_| {
                Error::with(
                    ErrorKind::TooManyOpenFiles,
                    format!("preopen {guest}: more than max_open_files held"),
                )
            })?;
            let d = match preopen {
                Preopen::Mem { anchor, mutate } => Descriptor::mem(*anchor, true, rights(*mutate)),
                Preopen::Host { dir, mutate, mount } => {
                    Descriptor::mount(dir.clone(), true, *mount, rights(*mutate))
                }
            };
            out.push((d.hold(held), guest.clone()));
        }
        Ok(out)
    }
}

/// A borrow of the state the filesystem host functions need: the
/// sandbox's [`WasiVfsCtx`] and the store's resource table (the same one
/// wasmtime-wasi uses, so streams are shared with `wasi:io`).
pub struct WasiVfsCtxView<'a> {
    /// The sandbox's filesystem.
    pub ctx: &'a mut WasiVfsCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

/// Implemented by a store's data type to give the filesystem host its
/// state, as `wasmtime_wasi::WasiView` does for the rest of WASI.
pub trait WasiVfsView: Send {
    /// The filesystem state and the resource table.
    fn vfs(&mut self) -> WasiVfsCtxView<'_>;
}

/// [`HasData`] for the cowvfs filesystem host functions.
pub struct WasiVfs;

impl HasData for WasiVfs {
    type Data<'a> = WasiVfsCtxView<'a>;
}

/// Registers `wasi:filesystem/types` and `wasi:filesystem/preopens` served
/// by cowvfs, for a linker used synchronously. Call it after
/// `wasmtime_wasi::p2::add_to_linker_sync`: it replaces the host-backed
/// filesystem wasmtime-wasi registered (name shadowing is enabled for the
/// replacement and switched off again afterwards). Nothing here ever
/// blocks on I/O except host mounts, which run on the calling thread.
pub fn add_to_linker_sync<T: WasiVfsView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    replace_filesystem(linker)
}

/// Like [`add_to_linker_sync`], for a linker used with `instantiate_async`
/// and `call_async` (after `wasmtime_wasi::p2::add_to_linker_async`). The
/// filesystem functions are synchronous in both cases: a memory tree never
/// waits, so they need no executor and work in either kind of store.
pub fn add_to_linker_async<T: WasiVfsView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    replace_filesystem(linker)
}

fn replace_filesystem<T: WasiVfsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = (|| {
        bindings::types::add_to_linker::<T, WasiVfs>(linker, T::vfs)?;
        bindings::preopens::add_to_linker::<T, WasiVfs>(linker, T::vfs)
    })();
    linker.allow_shadowing(false);
    result
}
