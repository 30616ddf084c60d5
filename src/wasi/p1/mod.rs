//! `wasi_snapshot_preview1` for core modules, served directly from the
//! engine: no component adapter, no preview2 detour.
//!
//! Most programs that touch files are preview1 modules (wasi-libc, Rust's
//! `wasm32-wasip1`, interpreter builds). Through the component adapter they
//! lose speed and some semantics (exit codes above 1, `EBADF` on bad
//! descriptors, offsets kept in guest memory). This module registers cowvfs's
//! own `wasi_snapshot_preview1` imports on a core-module
//! [`wasmtime::Linker`]: a descriptor table (stdio 0/1/2, preopens from 3 in
//! the order given, then files and directories) over the same descriptors
//! the preview2 host uses, so memory preopens and host mounts behave alike.
//!
//! ```no_run
//! use cowvfs::Vfs;
//! use cowvfs::wasi::p1::{self, WasiP1Ctx};
//! use wasmtime::{Engine, Linker, Module, Store};
//!
//! # fn main() -> wasmtime::Result<()> {
//! let engine = Engine::default();
//! let module = Module::from_file(&engine, "app.wasm")?;
//! let mut linker = Linker::<WasiP1Ctx>::new(&engine);
//! p1::add_to_linker(&mut linker, |ctx| ctx)?;
//!
//! let mut vfs = Vfs::new();
//! vfs.write_file("/hello.txt", b"only in memory\n")?;
//! let mut ctx = WasiP1Ctx::new(vfs);
//! ctx.preopen("/", "/")?.arg("app.wasm").inherit_stdio();
//! let mut store = Store::new(&engine, ctx);
//! let instance = linker.instantiate(&mut store, &module)?;
//! let status = p1::exit_status(
//!     instance.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ()),
//! );
//! let vfs: Vfs = store.into_data().into_vfs();
//! # let _ = (status, vfs);
//! # Ok(()) }
//! ```
//!
//! [`Sandbox`] and [`Guest`] do this for the common case, the way
//! [`crate::wasi::Sandbox`] does for components.
//!
//! Semantics follow the preview1 witx and wasmtime-wasi 48's preview1
//! (errno numbers, rights reported by `fd_fdstat_get`, argument decoding,
//! traps on out-of-bounds or misaligned pointers). Where cowvfs deliberately
//! differs, the README's "Preview1 semantics" table says so.

mod abi;
mod calls;
// Compiling and running modules: needs wasmtime's compiler.
#[cfg(feature = "wasi")]
mod run;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use wasmtime::{Caller, Extern, Linker, Memory};

pub use self::abi::Errno;
use self::abi::{Error, Mem, R};
#[cfg(feature = "wasi")]
pub use self::run::{Guest, Sandbox, exit_status, is_core_module};
use super::WasiVfsCtx;
use super::descriptor::Descriptor;
use crate::Vfs;

/// The import module name.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// Most descriptors one guest's table may hold at once, whatever its
/// tree's limits. Everything the guest holds also counts against the
/// tree's `max_open_files` (memory and mount descriptors alike). Past
/// either, `path_open` fails with `EMFILE`.
pub const MAX_DESCRIPTORS: usize = 1 << 16;

/// Most bytes a captured stdout or stderr keeps (the rest is counted as
/// written and dropped).
pub const CAPTURE_LIMIT: usize = 64 << 20;

/// Where the guest's stdin comes from.
enum Input {
    /// End of file at once.
    Null,
    Inherit,
    Bytes {
        data: Vec<u8>,
        pos: usize,
    },
}

/// Where the guest's stdout or stderr goes.
enum Output {
    /// Discarded.
    Null,
    Inherit,
    /// Kept in memory, up to the limit; the rest is dropped.
    Capture(Vec<u8>, usize),
}

/// One entry of the descriptor table.
pub(crate) enum Slot {
    Stdin,
    Stdout,
    Stderr,
    File(FileSlot),
    Dir(DirSlot),
}

pub(crate) struct FileSlot {
    desc: Descriptor,
    /// The file offset lives here, not in guest memory.
    pos: u64,
    append: bool,
    nonblock: bool,
}

pub(crate) struct DirSlot {
    desc: Descriptor,
    /// The guest name of a preopen.
    preopen: Option<String>,
    cookies: Cookies,
}

/// `fd_readdir` cookies of one directory descriptor, in bounded memory.
///
/// Cookie 0 is the start, 1 follows `.`, 2 follows `..`, and the cookie
/// following the `k`-th name (from 0) of the name-ordered listing is
/// `3 + k`: a position, which needs no memory to resolve. To keep a
/// listing exact while the directory changes, the descriptor also
/// remembers which name the cookies it handed out last follow (at most
/// [`COOKIE_MEMORY`] of them, holding at most [`COOKIE_NAME_BYTES`] of
/// names), and resumes after that name: entries present throughout are
/// then listed exactly once. Any other cookie, older or never handed out,
/// resumes at its position in the current listing. Either way a resumed
/// listing only moves forward, so it can neither loop nor grow anything.
#[derive(Default)]
pub(crate) struct Cookies {
    /// Names as the tree keeps them: a short one is held in place, so
    /// remembering it allocates nothing (one per listed entry).
    recent: VecDeque<(u64, crate::Name)>,
    name_bytes: usize,
}

/// Most (cookie, name) pairs one directory descriptor remembers.
pub(crate) const COOKIE_MEMORY: usize = 128;

/// Most bytes of names one directory descriptor remembers.
pub(crate) const COOKIE_NAME_BYTES: usize = 4096;

const FIRST_NAME_COOKIE: u64 = 3;

/// Where a listing resumes.
pub(crate) enum Resume {
    /// After this name (or at the start).
    After(Option<String>),
    /// After this many names of the current listing.
    Skip(u64),
}

impl Cookies {
    /// Remembers that `cookie` follows `name`, forgetting the oldest.
    fn remember(&mut self, cookie: u64, name: &crate::Name) {
        self.recent.push_back((cookie, name.clone()));
        self.name_bytes += name.len();
        while self.recent.len() > COOKIE_MEMORY || self.name_bytes > COOKIE_NAME_BYTES {
            match self.recent.pop_front() {
                Some((_, old)) => self.name_bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Where the names after `cookie` (3 or more) start.
    fn resume(&self, cookie: u64) -> Resume {
        match self.recent.iter().rev().find(|(c, _)| *c == cookie) {
            Some((_, name)) => Resume::After(Some(name.to_string())),
            None => Resume::Skip(cookie - (FIRST_NAME_COOKIE - 1)),
        }
    }

    /// How many pairs, and bytes of names, are remembered (for tests).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> (usize, usize) {
        let bytes = self.recent.iter().map(|(_, n)| n.len()).sum();
        assert_eq!(bytes, self.name_bytes);
        (self.recent.len(), bytes)
    }
}

/// The preview1 state of one guest: its filesystem (a [`WasiVfsCtx`]:
/// memory preopens and host mounts), descriptor table, arguments,
/// environment, stdio, clocks and randomness.
pub struct WasiP1Ctx {
    fs: WasiVfsCtx,
    table: Vec<Option<Slot>>,
    free: BTreeSet<u32>,
    started: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Input,
    stdout: Output,
    stderr: Output,
    epoch: Instant,
    rng: Option<Box<dyn rand::Rng + Send>>,
    /// When the run must end, and its timeout (see [`Sandbox::timeout`]).
    deadline: Option<(Instant, std::time::Duration)>,
    /// The guest's `memory` export, when the one instance this context
    /// serves is known ([`Sandbox`] sets it after instantiating): saves
    /// every call a lookup by name. Without it, each call looks it up.
    memory: Option<Memory>,
}

impl std::fmt::Debug for WasiP1Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiP1Ctx")
            .field("fs", &self.fs)
            .field("args", &self.args)
            .field("descriptors", &self.table.iter().flatten().count())
            .finish()
    }
}

impl WasiP1Ctx {
    /// A context over `vfs` with nothing preopened, no arguments, an empty
    /// environment, stdin at end of file and stdout/stderr discarded.
    pub fn new(vfs: Vfs) -> WasiP1Ctx {
        WasiP1Ctx {
            fs: WasiVfsCtx::new(vfs),
            table: Vec::new(),
            free: BTreeSet::new(),
            started: false,
            args: Vec::new(),
            env: Vec::new(),
            stdin: Input::Null,
            stdout: Output::Null,
            stderr: Output::Null,
            epoch: Instant::now(),
            rng: None,
            deadline: None,
            memory: None,
        }
    }

    /// Shows the tree's directory `dir` to the guest as `guest`, writable.
    /// Preopens get descriptors 3, 4, … in the order they are added.
    pub fn preopen(&mut self, dir: &str, guest: &str) -> crate::Result<&mut Self> {
        self.fs.preopen(dir, guest)?;
        Ok(self)
    }

    /// Like [`WasiP1Ctx::preopen`]; every change through it fails with
    /// `EROFS`.
    pub fn preopen_read_only(&mut self, dir: &str, guest: &str) -> crate::Result<&mut Self> {
        self.fs.preopen_read_only(dir, guest)?;
        Ok(self)
    }

    /// Mounts a live host directory at `guest` (see [`WasiVfsCtx::mount`]).
    pub fn mount(&mut self, host: &Path, guest: &str, read_only: bool) -> crate::Result<&mut Self> {
        self.fs.mount(host, guest, read_only)?;
        Ok(self)
    }

    /// Appends one argument (the first is `argv[0]`).
    pub fn arg(&mut self, arg: &str) -> &mut Self {
        self.args.push(arg.to_string());
        self
    }

    /// Sets one environment variable (replacing an earlier value).
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Passes the host's stdin, stdout and stderr through.
    pub fn inherit_stdio(&mut self) -> &mut Self {
        self.stdin = Input::Inherit;
        self.stdout = Output::Inherit;
        self.stderr = Output::Inherit;
        self
    }

    /// Collects stdout and stderr (up to [`CAPTURE_LIMIT`] each).
    pub fn capture_output(&mut self) -> &mut Self {
        self.capture_output_limited(CAPTURE_LIMIT)
    }

    /// Collects stdout and stderr, keeping at most `limit` bytes of each
    /// (what the guest writes past it counts as written and is dropped).
    pub fn capture_output_limited(&mut self, limit: usize) -> &mut Self {
        self.stdout = Output::Capture(Vec::new(), limit);
        self.stderr = Output::Capture(Vec::new(), limit);
        self
    }

    /// Gives the guest these bytes as stdin.
    pub fn stdin_bytes(&mut self, data: Vec<u8>) -> &mut Self {
        self.stdin = Input::Bytes { data, pos: 0 };
        self
    }

    /// What the guest wrote to stdout so far, if captured.
    pub fn stdout(&self) -> &[u8] {
        match &self.stdout {
            Output::Capture(b, _) => b,
            _ => &[],
        }
    }

    /// What the guest wrote to stderr so far, if captured.
    pub fn stderr(&self) -> &[u8] {
        match &self.stderr {
            Output::Capture(b, _) => b,
            _ => &[],
        }
    }

    /// Ends blocking calls (`poll_oneoff`) at `deadline`, as a run with a
    /// timeout does; `None` lets them sleep as long as asked.
    #[cfg(feature = "wasi")]
    pub(crate) fn set_deadline(&mut self, deadline: Option<(Instant, std::time::Duration)>) {
        self.deadline = deadline;
    }

    /// Takes what was captured from stdout and stderr.
    pub fn take_output(&mut self) -> (Vec<u8>, Vec<u8>) {
        let take = |o: &mut Output| match o {
            Output::Capture(b, _) => std::mem::take(b),
            _ => Vec::new(),
        };
        (take(&mut self.stdout), take(&mut self.stderr))
    }

    /// Runs `f` on the tree, e.g. to look at what the guest did so far.
    pub fn with_vfs<T>(&self, f: impl FnOnce(&mut Vfs) -> T) -> Option<T> {
        self.fs.with_vfs(f)
    }

    /// Serves every call from `memory`: only for a context whose store
    /// holds exactly one instance, whose `memory` export this is.
    #[cfg(feature = "wasi")]
    pub(crate) fn set_memory(&mut self, memory: Option<Memory>) {
        self.memory = memory;
    }

    /// The sandbox's tree, back from the guest, with every descriptor the
    /// guest still held closed.
    pub fn into_vfs(self) -> Vfs {
        let WasiP1Ctx { fs, table, .. } = self;
        // Host files close as their slots drop; engine descriptors are
        // all in `fs.opened`, which `into_vfs` closes.
        drop(table);
        fs.into_vfs()
    }

    /// Fills the table on first use: stdio, then the preopens in order.
    fn start(&mut self) -> R<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        self.table = vec![Some(Slot::Stdin), Some(Slot::Stdout), Some(Slot::Stderr)];
        let preopens = self
            .fs
            .open_preopens()
            .map_err(|e| Error::Trap(wasmtime::Error::msg(format!("preopen failed: {e}"))))?;
        for (desc, name) in preopens {
            self.table.push(Some(Slot::Dir(DirSlot {
                desc,
                preopen: Some(name),
                cookies: Cookies::default(),
            })));
        }
        Ok(())
    }

    fn slot(&self, fd: i32) -> R<&Slot> {
        match self.table.get(fd as u32 as usize) {
            Some(Some(s)) => Ok(s),
            _ => Err(Errno::BADF.into()),
        }
    }

    fn slot_mut(&mut self, fd: i32) -> R<&mut Slot> {
        match self.table.get_mut(fd as u32 as usize) {
            Some(Some(s)) => Ok(s),
            _ => Err(Errno::BADF.into()),
        }
    }

    /// Whether [`WasiP1Ctx::push`] has a number to give: checked before
    /// anything that changes the tree on the way to a new descriptor.
    fn has_room(&self) -> bool {
        !self.free.is_empty() || self.table.len() < MAX_DESCRIPTORS
    }

    /// Puts `slot` at the lowest free number, as POSIX `open` does.
    fn push(&mut self, slot: Slot) -> R<u32> {
        if let Some(fd) = self.free.pop_first() {
            self.table[fd as usize] = Some(slot);
            return Ok(fd);
        }
        if self.table.len() >= MAX_DESCRIPTORS {
            self.release(slot);
            return Err(Errno::MFILE.into());
        }
        self.table.push(Some(slot));
        Ok((self.table.len() - 1) as u32)
    }

    /// Takes descriptor `fd` out of the table (its number becomes free).
    fn take(&mut self, fd: i32) -> R<Slot> {
        let i = fd as u32 as usize;
        match self.table.get_mut(i).and_then(Option::take) {
            Some(s) => {
                if i + 1 == self.table.len() {
                    self.table.pop();
                    // Trailing free numbers shrink the table too.
                    while let Some(None) = self.table.last() {
                        self.table.pop();
                        self.free.remove(&(self.table.len() as u32));
                    }
                } else {
                    self.free.insert(i as u32);
                }
                Ok(s)
            }
            None => Err(Errno::BADF.into()),
        }
    }

    /// Closes what a slot holds in the engine (its count, if it holds
    /// one, goes as the slot drops).
    fn release(&mut self, slot: Slot) {
        match slot {
            Slot::File(f) => self.fs.release(&f.desc),
            Slot::Dir(d) => self.fs.release(&d.desc),
            Slot::Stdin | Slot::Stdout | Slot::Stderr => {}
        }
    }

    fn is_tty(&self, slot: &Slot) -> bool {
        match slot {
            Slot::Stdin => matches!(self.stdin, Input::Inherit) && std::io::stdin().is_terminal(),
            Slot::Stdout => {
                matches!(self.stdout, Output::Inherit) && std::io::stdout().is_terminal()
            }
            Slot::Stderr => {
                matches!(self.stderr, Output::Inherit) && std::io::stderr().is_terminal()
            }
            _ => false,
        }
    }
}

/// Runs one host function: finds the guest's memory, splits the store into
/// memory and context, and turns the outcome into an errno or a trap.
fn call<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: impl Fn(&mut T) -> &mut WasiP1Ctx,
    f: impl FnOnce(&mut WasiP1Ctx, &mut Mem<'_>) -> R<()>,
) -> wasmtime::Result<i32> {
    let memory = match get(caller.data_mut()).memory {
        Some(memory) => memory,
        None => match caller.get_export("memory") {
            Some(Extern::Memory(memory)) => memory,
            _ => {
                return Err(wasmtime::Error::msg(
                    "preview1: the module exports no memory named `memory`",
                ));
            }
        },
    };
    let (bytes, data) = memory.data_and_store_mut(caller);
    // Pointers are 32-bit: a 64-bit memory past 4 GiB is seen up to 4 GiB,
    // so no checked range can end beyond what a u32 offset reaches.
    let reach = usize::try_from(1u64 << 32).unwrap_or(usize::MAX);
    let end = bytes.len().min(reach);
    let bytes = &mut bytes[..end];
    let ctx = get(data);
    let result = ctx.start().and_then(|()| f(ctx, &mut Mem(bytes)));
    match result {
        Ok(()) => Ok(0),
        Err(Error::Errno(e)) => Ok(i32::from(e.0)),
        Err(Error::Trap(t)) => Err(t),
    }
}

/// Registers every `wasi_snapshot_preview1` function on `linker`, served
/// by the [`WasiP1Ctx`] that `get` finds in the store's data.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: impl Fn(&mut T) -> &mut WasiP1Ctx + Copy + Send + Sync + 'static,
) -> wasmtime::Result<()> {
    // Each import is one line: its name, its wasm parameters, and the
    // context method that serves it.
    macro_rules! import {
        ($name:ident($($arg:ident: $ty:ty),*)) => {
            linker.func_wrap(
                MODULE,
                stringify!($name),
                move |mut caller: Caller<'_, T>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                    call(&mut caller, get, |ctx, mem| ctx.$name(mem, $($arg),*))
                },
            )?;
        };
    }
    import!(args_get(argv: i32, buf: i32));
    import!(args_sizes_get(argc: i32, size: i32));
    import!(environ_get(environ: i32, buf: i32));
    import!(environ_sizes_get(count: i32, size: i32));
    import!(clock_res_get(id: i32, out: i32));
    import!(clock_time_get(id: i32, precision: i64, out: i32));
    import!(fd_advise(fd: i32, offset: i64, len: i64, advice: i32));
    import!(fd_allocate(fd: i32, offset: i64, len: i64));
    import!(fd_close(fd: i32));
    import!(fd_datasync(fd: i32));
    import!(fd_fdstat_get(fd: i32, out: i32));
    import!(fd_fdstat_set_flags(fd: i32, flags: i32));
    import!(fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64));
    import!(fd_filestat_get(fd: i32, out: i32));
    import!(fd_filestat_set_size(fd: i32, size: i64));
    import!(fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, flags: i32));
    import!(fd_pread(fd: i32, iovs: i32, n: i32, offset: i64, out: i32));
    import!(fd_prestat_get(fd: i32, out: i32));
    import!(fd_prestat_dir_name(fd: i32, path: i32, len: i32));
    import!(fd_pwrite(fd: i32, iovs: i32, n: i32, offset: i64, out: i32));
    import!(fd_read(fd: i32, iovs: i32, n: i32, out: i32));
    import!(fd_readdir(fd: i32, buf: i32, len: i32, cookie: i64, out: i32));
    import!(fd_renumber(from: i32, to: i32));
    import!(fd_seek(fd: i32, offset: i64, whence: i32, out: i32));
    import!(fd_sync(fd: i32));
    import!(fd_tell(fd: i32, out: i32));
    import!(fd_write(fd: i32, iovs: i32, n: i32, out: i32));
    import!(path_create_directory(fd: i32, path: i32, len: i32));
    import!(path_filestat_get(fd: i32, flags: i32, path: i32, len: i32, out: i32));
    import!(path_filestat_set_times(
        fd: i32,
        flags: i32,
        path: i32,
        len: i32,
        atim: i64,
        mtim: i64,
        fst: i32
    ));
    import!(path_link(
        old_fd: i32,
        flags: i32,
        old_path: i32,
        old_len: i32,
        new_fd: i32,
        new_path: i32,
        new_len: i32
    ));
    import!(path_open(
        fd: i32,
        dirflags: i32,
        path: i32,
        len: i32,
        oflags: i32,
        base: i64,
        inheriting: i64,
        fdflags: i32,
        out: i32
    ));
    import!(path_readlink(fd: i32, path: i32, len: i32, buf: i32, buf_len: i32, out: i32));
    import!(path_remove_directory(fd: i32, path: i32, len: i32));
    import!(path_rename(
        old_fd: i32,
        old_path: i32,
        old_len: i32,
        new_fd: i32,
        new_path: i32,
        new_len: i32
    ));
    import!(path_symlink(old_path: i32, old_len: i32, fd: i32, new_path: i32, new_len: i32));
    import!(path_unlink_file(fd: i32, path: i32, len: i32));
    import!(poll_oneoff(subs: i32, events: i32, n: i32, out: i32));
    import!(random_get(buf: i32, len: i32));
    import!(sock_accept(fd: i32, flags: i32, out: i32));
    import!(sock_recv(fd: i32, iovs: i32, n: i32, flags: i32, out: i32, out_flags: i32));
    import!(sock_send(fd: i32, iovs: i32, n: i32, flags: i32, out: i32));
    import!(sock_shutdown(fd: i32, how: i32));

    // These need no memory, so a module without one can still exit.
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: Caller<'_, T>, status: i32| -> wasmtime::Result<()> {
            // The exact status, all 32 bits: wasmtime-wasi traps on 126 and
            // above, and the adapter turns every non-zero status into 1.
            Err(wasmtime_wasi::I32Exit(status).into())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_raise",
        |_: Caller<'_, T>, sig: i32| -> wasmtime::Result<i32> {
            Ok(match abi::enum_u8(sig, 30) {
                Ok(_) => i32::from(Errno::NOTSUP.0),
                Err(Error::Errno(e)) => i32::from(e.0),
                Err(Error::Trap(t)) => return Err(t),
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sched_yield",
        |_: Caller<'_, T>| -> wasmtime::Result<i32> {
            std::thread::yield_now();
            Ok(0)
        },
    )?;
    Ok(())
}
