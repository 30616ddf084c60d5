//! Running a preview1 command module natively: the counterpart of
//! [`crate::wasi::Sandbox`] and [`crate::wasi::Guest`] without the adapter.

use std::path::Path;

use wasmtime::{Engine, InstancePre, Linker, Module, Store};

use super::{WasiP1Ctx, add_to_linker};
use crate::Vfs;
use crate::wasi::RunOutcome;
use crate::wasi::limits::{self, Limiter, RunLimits, limit_setters};
use crate::wasi::run::{outcome, read_guest, sandbox_setters};

/// Store data of a [`Sandbox`] run: the context and the run's limiter.
struct P1State {
    ctx: WasiP1Ctx,
    limiter: Limiter,
}

/// Whether `bytes` is a core WebAssembly module (not a component).
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// The exit status of a `_start` call: 0 for a plain return, the exact
/// `proc_exit` status, or the trap that ended the guest.
pub fn exit_status(result: wasmtime::Result<()>) -> Result<i32, wasmtime::Error> {
    match result {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(e),
        },
    }
}

/// A compiled, linked preview1 command module, ready to run in any number
/// of sandboxes: compile once, instantiate per run.
#[derive(Clone)]
pub struct Guest {
    pre: InstancePre<P1State>,
    name: String,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("p1::Guest")
            .field("name", &self.name)
            .finish()
    }
}

impl Guest {
    /// Loads and compiles a preview1 module; its file name becomes
    /// `argv[0]`.
    pub fn load(engine: &Engine, path: &Path) -> wasmtime::Result<Guest> {
        let (bytes, name) = read_guest(path)?;
        let module = Module::new(engine, &bytes)
            .map_err(|e| e.context(format!("cannot compile {}", path.display())))?;
        Guest::new(engine, &module, &name)
    }

    /// A guest from a compiled module; `name` becomes `argv[0]`.
    pub fn new(engine: &Engine, module: &Module, name: &str) -> wasmtime::Result<Guest> {
        let mut linker = Linker::<P1State>::new(engine);
        add_to_linker(&mut linker, |s: &mut P1State| &mut s.ctx)?;
        Ok(Guest {
            pre: linker.instantiate_pre(module)?,
            name: name.to_string(),
        })
    }

    /// The engine the guest was compiled for.
    pub fn engine(&self) -> &Engine {
        self.pre.module().engine()
    }

    /// `argv[0]` of every run.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One native preview1 run against one tree: preopens and mounts, argv,
/// environment and stdio, shaped like [`crate::wasi::Sandbox`].
///
/// ```no_run
/// use cowvfs::Vfs;
/// use cowvfs::wasi::p1::{Guest, Sandbox};
///
/// # fn main() -> wasmtime::Result<()> {
/// let engine = wasmtime::Engine::default();
/// let guest = Guest::load(&engine, "app.wasm".as_ref())?;
/// let mut sb = Sandbox::new(Vfs::new());
/// sb.preopen("/", "/")?.arg("/input.txt").capture_output();
/// let out = sb.run(&guest);
/// assert_eq!(out.status?, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sandbox {
    ctx: WasiP1Ctx,
    args: Vec<String>,
    limits: RunLimits,
}

impl Sandbox {
    /// A sandbox over `vfs` with nothing preopened, no arguments, an empty
    /// environment and closed stdio.
    pub fn new(vfs: Vfs) -> Sandbox {
        Sandbox {
            ctx: WasiP1Ctx::new(vfs),
            args: Vec::new(),
            limits: RunLimits::default(),
        }
    }

    sandbox_setters!(ctx);
    limit_setters!();

    /// Sets one environment variable; the guest sees no others.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.ctx.env(key, value);
        self
    }

    /// Passes the host's stdin, stdout and stderr through.
    pub fn inherit_stdio(&mut self) -> &mut Self {
        self.ctx.inherit_stdio();
        self
    }

    /// Collects stdout and stderr (up to 64 MiB each) into the outcome.
    pub fn capture_output(&mut self) -> &mut Self {
        self.ctx.capture_output();
        self
    }

    /// Collects stdout and stderr, keeping at most `limit` bytes of each.
    pub fn capture_output_limited(&mut self, limit: usize) -> &mut Self {
        self.ctx.capture_output_limited(limit);
        self
    }

    /// Gives the guest these bytes as stdin.
    pub fn stdin_bytes(&mut self, data: Vec<u8>) -> &mut Self {
        self.ctx.stdin_bytes(data);
        self
    }

    /// Runs the guest's `_start` to completion and hands back the tree. An
    /// exit status or trap is part of the outcome, never a panic.
    pub fn run(self, guest: &Guest) -> RunOutcome {
        let _span =
            tracing::info_span!("guest_run", guest = %guest.name, abi = "preview1").entered();
        tracing::debug!(args = ?self.args, "sandbox starts");
        let Sandbox {
            mut ctx,
            args,
            limits,
        } = self;
        ctx.arg(&guest.name);
        for a in &args {
            ctx.arg(a);
        }
        let state = P1State {
            ctx,
            limiter: limits::new_limiter(&limits),
        };
        let mut store = Store::new(guest.engine(), state);
        let result = limits::arm(&mut store, &limits, |s| &mut s.limiter).and_then(|armed| {
            store.data_mut().ctx.set_deadline(armed.deadline);
            let result = guest.pre.instantiate(&mut store).and_then(|instance| {
                // The store's only instance: its calls may skip the
                // lookup of its memory.
                let memory = instance.get_memory(&mut store, "memory");
                store.data_mut().ctx.set_memory(memory);
                instance
                    .get_typed_func::<(), ()>(&mut store, "_start")?
                    .call(&mut store, ())
            });
            drop(armed);
            result
        });
        let status = exit_status(result);
        let P1State { mut ctx, limiter } = store.into_data();
        let hit = limits::limit_hit(&status, limiter.refused);
        let (stdout, stderr) = ctx.take_output();
        outcome(status, hit, ctx.into_vfs(), stdout, stderr)
    }
}
