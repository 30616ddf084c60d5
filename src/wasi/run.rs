//! Running a command guest against a sandbox's tree: the library half of
//! `cowvfs run`, and what an embedder uses for the common case.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
};
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::{self, LimitHit, Limiter, RunLimits, limit_setters};
use super::p1::{CAPTURE_LIMIT, exit_status, is_core_module};
use super::{WasiVfsCtx, WasiVfsCtxView, WasiVfsView};
use crate::Vfs;

/// Resources (descriptors, streams, pollables, errors) a guest may hold
/// at once. wasmtime's own default is a million, whose entries the host
/// holds outside the guest's memory cap; a guest that subscribes or
/// fails in a loop without dropping what it gets back could fill it.
/// Well above what `max_open_files` descriptors and their streams need.
const MAX_RESOURCES: usize = 1 << 16;

/// The resource table of one run, held to [`MAX_RESOURCES`].
fn guest_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    table
}

/// Store data of a [`Sandbox`] run.
struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    fs: WasiVfsCtx,
    limiter: Limiter,
    /// When the run must end, and its timeout.
    deadline: Option<(Instant, Duration)>,
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiVfsView for SandboxState {
    fn vfs(&mut self) -> WasiVfsCtxView<'_> {
        WasiVfsCtxView {
            ctx: &mut self.fs,
            table: &mut self.table,
        }
    }
}

/// A compiled, linked command guest, ready to run in any number of
/// sandboxes (concurrently, too): compile once, instantiate per run.
#[derive(Clone)]
pub struct Guest {
    pre: CommandPre<SandboxState>,
    name: String,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").field("name", &self.name).finish()
    }
}

impl Guest {
    /// Loads a component, or a preview1 core module (adapted into a
    /// component, with the adaptation cached in `cache` if given). The
    /// file name becomes `argv[0]`.
    pub fn load(engine: &Engine, path: &Path, cache: Option<&Path>) -> wasmtime::Result<Guest> {
        let (bytes, name) = read_guest(path)?;
        let component = if is_core_module(&bytes) {
            adapt_module_cached(&bytes, cache)?
        } else {
            bytes
        };
        let component = Component::new(engine, &component)
            .map_err(|e| e.context(format!("cannot compile {}", path.display())))?;
        Guest::new(engine, &component, &name)
    }

    /// A guest from a compiled component; `name` becomes `argv[0]`.
    pub fn new(engine: &Engine, component: &Component, name: &str) -> wasmtime::Result<Guest> {
        let mut linker = Linker::<SandboxState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        super::add_to_linker_sync(&mut linker)?;
        clamp_clock_sleeps(&mut linker)?;
        let pre = CommandPre::new(linker.instantiate_pre(component)?)?;
        Ok(Guest {
            pre,
            name: name.to_string(),
        })
    }

    /// The engine the guest was compiled for.
    pub fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    /// `argv[0]` of every run.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How a run ended, and the sandbox's tree afterwards.
#[derive(Debug)]
pub struct RunOutcome {
    /// The guest's exit code (0 for a plain return), or the trap that ended
    /// it.
    pub status: Result<i32, wasmtime::Error>,
    /// The tree as the guest left it, with every descriptor it held closed.
    pub vfs: Vfs,
    /// What the guest wrote to stdout, if [`Sandbox::capture_output`].
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr, if [`Sandbox::capture_output`].
    pub stderr: Vec<u8>,
    /// The run limit that ended the run (or refused a memory grow), if any.
    pub limit: Option<LimitHit>,
}

/// One guest run against one tree: the tree's preopens and mounts, argv,
/// environment and stdio.
///
/// ```no_run
/// use cowvfs::Vfs;
/// use cowvfs::wasi::{Guest, Sandbox};
///
/// # fn main() -> wasmtime::Result<()> {
/// let engine = wasmtime::Engine::default();
/// let guest = Guest::load(&engine, "app.wasm".as_ref(), None)?;
/// let mut base = Vfs::new();
/// base.write_file("/input.txt", b"hello")?;
/// let snap = base.snapshot();
///
/// let mut sb = Sandbox::new(snap.fork());
/// sb.preopen("/", "/")?.arg("/input.txt").capture_output();
/// let out = sb.run(&guest);
/// assert_eq!(out.status?, 0);
/// for change in snap.diff(&out.vfs.snapshot()) {
///     println!("{change}");
/// }
/// # Ok(()) }
/// ```
pub struct Sandbox {
    fs: WasiVfsCtx,
    wasi: WasiCtxBuilder,
    args: Vec<String>,
    capture: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    limits: RunLimits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("fs", &self.fs)
            .field("args", &self.args)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The setters both sandboxes (adapted component and native preview1)
/// share, so what a guest may see of the tree and its argv are set up the
/// same way on either ABI. `$fs` is the field holding what the tree is
/// shown through (it has `preopen`, `preopen_read_only` and `mount`); the
/// type also has `args: Vec<String>`.
macro_rules! sandbox_setters {
    ($fs:ident) => {
        /// Shows the tree's directory `dir` to the guest as `guest`.
        pub fn preopen(&mut self, dir: &str, guest: &str) -> crate::Result<&mut Self> {
            self.$fs.preopen(dir, guest)?;
            Ok(self)
        }

        /// Like [`Self::preopen`], read-only.
        pub fn preopen_read_only(&mut self, dir: &str, guest: &str) -> crate::Result<&mut Self> {
            self.$fs.preopen_read_only(dir, guest)?;
            Ok(self)
        }

        /// Mounts a live host directory at `guest` (see
        /// [`WasiVfsCtx::mount`](crate::wasi::WasiVfsCtx::mount)).
        pub fn mount(
            &mut self,
            host: &std::path::Path,
            guest: &str,
            read_only: bool,
        ) -> crate::Result<&mut Self> {
            self.$fs.mount(host, guest, read_only)?;
            Ok(self)
        }

        /// Appends an argument after `argv[0]` (the guest's name).
        pub fn arg(&mut self, arg: &str) -> &mut Self {
            self.args.push(arg.to_string());
            self
        }
    };
}
pub(super) use sandbox_setters;

impl Sandbox {
    /// A sandbox over `vfs` with nothing preopened, no arguments, an empty
    /// environment and closed stdio.
    pub fn new(vfs: Vfs) -> Sandbox {
        Sandbox {
            fs: WasiVfsCtx::new(vfs),
            wasi: WasiCtxBuilder::new(),
            args: Vec::new(),
            capture: None,
            limits: RunLimits::default(),
        }
    }

    sandbox_setters!(fs);
    limit_setters!();

    /// Sets one environment variable; the guest sees no others.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.wasi.env(key, value);
        self
    }

    /// Passes the host's stdin, stdout and stderr through.
    pub fn inherit_stdio(&mut self) -> &mut Self {
        self.wasi.inherit_stdio();
        self.capture = None;
        self
    }

    /// Collects stdout and stderr (up to 64 MiB each) into the outcome.
    pub fn capture_output(&mut self) -> &mut Self {
        self.capture_output_limited(CAPTURE_LIMIT)
    }

    /// Collects stdout and stderr, at most `limit` bytes of each: a write
    /// past it fails with a closed stream.
    pub fn capture_output_limited(&mut self, limit: usize) -> &mut Self {
        let out = MemoryOutputPipe::new(limit);
        let err = MemoryOutputPipe::new(limit);
        self.wasi.stdout(out.clone()).stderr(err.clone());
        self.capture = Some((out, err));
        self
    }

    /// Gives the guest these bytes as stdin.
    pub fn stdin_bytes(&mut self, data: Vec<u8>) -> &mut Self {
        self.wasi
            .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(data));
        self
    }

    /// The rest of the WASI context (clocks, random, sockets, stdin), for
    /// what the helpers above do not cover. Preopens set here are ignored:
    /// the filesystem is cowvfs's.
    pub fn wasi_mut(&mut self) -> &mut WasiCtxBuilder {
        &mut self.wasi
    }

    /// Runs the guest's `wasi:cli/run` to completion and hands back the
    /// tree. A trap or exit code is part of the outcome, never a panic.
    pub fn run(mut self, guest: &Guest) -> RunOutcome {
        let _span =
            tracing::info_span!("guest_run", guest = %guest.name, abi = "component").entered();
        tracing::debug!(args = ?self.args, "sandbox starts");
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(guest.name.clone());
        argv.extend(self.args.iter().cloned());
        self.wasi.args(&argv);
        let state = SandboxState {
            wasi: self.wasi.build(),
            table: guest_table(),
            fs: self.fs,
            limiter: limits::new_limiter(&self.limits),
            deadline: None,
        };
        let mut store = Store::new(guest.engine(), state);
        let status = limits::arm(&mut store, &self.limits, |s| &mut s.limiter).and_then(|armed| {
            store.data_mut().deadline = armed.deadline;
            let status = guest
                .pre
                .instantiate(&mut store)
                .and_then(|cmd| cmd.wasi_cli_run().call_run(&mut store));
            drop(armed);
            status
        });
        let status = match status {
            Ok(Err(())) => Ok(1),
            other => exit_status(other.map(|_| ())),
        };
        let SandboxState {
            wasi,
            table,
            fs,
            limiter,
            ..
        } = store.into_data();
        let hit = limits::limit_hit(&status, limiter.refused);
        // Streams the guest left open share the tree; let them go first.
        drop(table);
        drop(wasi);
        let (stdout, stderr) = match &self.capture {
            Some((out, err)) => (out.contents().to_vec(), err.contents().to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        outcome(status, hit, fs.into_vfs(), stdout, stderr)
    }
}

/// The preview2 monotonic clock's version cowvfs's wasmtime-wasi serves.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// wasmtime-wasi's `subscribe-duration` and `subscribe-instant`, with the
/// sleep cut at the run's deadline (a pollable that never fires would
/// block the host thread in `poll` past any epoch check). Past the
/// deadline they end the run.
fn clamp_clock_sleeps(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::clocks::WasiClocksView;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host;
    fn clamp(state: &SandboxState, nanos: u64) -> wasmtime::Result<u64> {
        Ok(match limits::remaining(state.deadline)? {
            Some(left) => nanos.min(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)),
            None => nanos,
        })
    }
    linker.allow_shadowing(true);
    let mut inst = linker.instance(MONOTONIC_CLOCK)?;
    inst.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, SandboxState>,
         (nanos,): (u64,)|
         -> wasmtime::Result<(Resource<wasmtime_wasi_io::poll::DynPollable>,)> {
            let nanos = clamp(store.data(), nanos)?;
            Ok((store.data_mut().clocks().subscribe_duration(nanos)?,))
        },
    )?;
    inst.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, SandboxState>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<wasmtime_wasi_io::poll::DynPollable>,)> {
            let state = store.data_mut();
            let now = state.clocks().now()?;
            let nanos = clamp(state, when.saturating_sub(now))?;
            Ok((state.clocks().subscribe_duration(nanos)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A guest file's bytes, and its file name for `argv[0]`.
pub(super) fn read_guest(path: &Path) -> wasmtime::Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path)
        .map_err(|e| wasmtime::format_err!("cannot read {}: {e}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((bytes, name))
}

/// How a run ended on either ABI, logged the same way.
pub(super) fn outcome(
    status: Result<i32, wasmtime::Error>,
    limit: Option<LimitHit>,
    vfs: Vfs,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> RunOutcome {
    match &status {
        _ if limit == Some(LimitHit::Deadline) => tracing::info!("sandbox passed its deadline"),
        Ok(code) => tracing::info!(exit = code, "sandbox ends"),
        Err(trap) => tracing::info!(%trap, "sandbox ends in a trap"),
    }
    RunOutcome {
        status,
        vfs,
        stdout,
        stderr,
        limit,
    }
}

/// Turns a preview1 command module into a preview2 command component with
/// the wasmtime 48 preview1 adapter.
pub fn adapt_module(module: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let encode = || -> anyhow::Result<Vec<u8>> {
        wit_component::ComponentEncoder::default()
            .module(module)?
            .adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )?
            .validate(true)
            .encode()
    };
    encode().map_err(wasmtime::Error::from_anyhow)
}

/// [`adapt_module`], remembered in `cache` under the blake3 hash of the
/// module and the adapter, so the same module is adapted once. A cache that
/// cannot be read or written is skipped, never fatal.
pub fn adapt_module_cached(module: &[u8], cache: Option<&Path>) -> wasmtime::Result<Vec<u8>> {
    let Some(dir) = cache else {
        return adapt_module(module);
    };
    let mut h = blake3::Hasher::new();
    h.update(WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER);
    h.update(module);
    let path = dir.join(format!("adapted-{}.wasm", h.finalize().to_hex()));
    if let Ok(bytes) = std::fs::read(&path)
        && !is_core_module(&bytes)
        && bytes.starts_with(b"\0asm")
    {
        return Ok(bytes);
    }
    let component = adapt_module(module)?;
    // Write to a private name and rename, so a concurrent run never reads a
    // half-written file.
    let tmp = dir.join(format!(
        ".adapted-{}-{}.tmp",
        std::process::id(),
        h.finalize().to_hex()
    ));
    let stored = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, &component))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = stored {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("not caching adapted module at {}: {e}", path.display());
    }
    Ok(component)
}

/// Where cowvfs caches adapted modules: `$XDG_CACHE_HOME/cowvfs`, else
/// `~/.cache/cowvfs`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("cowvfs"))
}

#[cfg(test)]
mod table_tests {
    use wasmtime::component::ResourceTable;

    use super::{MAX_RESOURCES, guest_table};

    /// The table refuses entries past the cap (a trap for the guest)
    /// rather than growing to wasmtime's million.
    #[test]
    fn a_run_s_table_is_capped() {
        let mut t = guest_table();
        assert_eq!(t.max_capacity(), MAX_RESOURCES);
        for i in 0..MAX_RESOURCES {
            t.push(i as u64).unwrap();
        }
        assert!(t.push(0u64).is_err());
        assert!(ResourceTable::new().max_capacity() > MAX_RESOURCES);
    }
}
