//! `cowvfs serve`: a sandbox per HTTP request. Clients register modules
//! and base snapshots, then `POST /v1/run`: the server forks the base in
//! O(1), runs the guest in the fork with the request's arguments, input
//! and limits, and answers with its exit code, output, and what it asked
//! for (diff, files, the fork saved as a new snapshot to continue from).
//!
//! This file owns the [`Config`], the shared state ([`App`]) and starting
//! and stopping the server; each other file owns one idea:
//!
//! | file | owns |
//! | --- | --- |
//! | `table.rs` | the route table: the router and the OpenAPI document are both made from it |
//! | `routes.rs` | the router and its middleware: auth, metrics, logs |
//! | `openapi.rs` | the OpenAPI 3.1 document |
//! | `run.rs` | `POST /v1/run`: the request, its checks, the response |
//! | `sandbox.rs` | one run on a blocking thread: fork, guest, diff, files, save |
//! | `catalog.rs` | registering, listing and deleting modules and snapshots |
//! | `browse.rs` | reading snapshots: files, directories, diffs, checkpoint downloads |
//! | `snapshots.rs` | the snapshot registry: names, memory budget, LRU eviction, the store |
//! | `charge.rs` | what a saved snapshot is charged: the memory it adds to its base |
//! | `modules.rs` | the module cache, compiled once per content hash |
//! | `gate.rs` | bounded concurrency: running turns and a bounded wait queue |
//! | `metrics.rs` | Prometheus counters, histograms and gauges |
//! | `error.rs` | error codes and the error JSON |
//! | `body.rs` | reading request bodies under a limit; streaming responses from blocking code |

mod body;
mod browse;
mod catalog;
mod charge;
pub mod error;
mod gate;
mod metrics;
mod modules;
mod openapi;
mod routes;
mod run;
mod sandbox;
mod snapshots;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ApiError, Code};
pub use routes::router;
pub use snapshots::check_name;
pub use table::{ROUTES, Route};

use gate::Gate;
use metrics::Metrics;
use modules::Modules;
use snapshots::{NewSnapshot, Registry};

/// `argv[0]` of every guest: a module is compiled once for all the names
/// it has, so its name cannot be part of the compilation.
pub const ARGV0: &str = "guest";

/// How the server runs. Every limit a request may set has a server-wide
/// maximum here, which is also its default.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer token every request but `/healthz` must carry; `None`
    /// lets anyone in (allowed only on a loopback address).
    pub token: Option<String>,
    /// Guests (and compilations, checkpoint loads) running at once.
    pub max_running: usize,
    /// Requests waiting for a turn; past it, `429 overloaded`.
    pub max_queue: usize,
    /// The longest a request waits for a turn before `429 overloaded`.
    pub queue_wait: Duration,
    /// Downloads and file reads streaming at once (a slow reader holds
    /// one), and how many may wait.
    pub max_transfers: usize,
    /// Largest JSON request body.
    pub max_body: usize,
    /// Largest module or checkpoint upload.
    pub max_upload: usize,
    /// Bytes of request bodies held at once, all requests together
    /// (at least `max_upload` and `max_body`); a body past it is refused
    /// with `429 overloaded` before it is buffered.
    pub max_body_memory: u64,
    /// Bytes of snapshots held in memory before eviction.
    pub max_snapshot_memory: u64,
    /// A run's deadline when the request names none.
    pub default_timeout: Duration,
    /// The longest deadline a request may ask for.
    pub max_timeout: Duration,
    /// Cap (and default) of each guest linear memory.
    pub max_memory: usize,
    /// Bytes of stdout, and of stderr, a run returns at most (and by
    /// default).
    pub max_output: usize,
    /// Bytes of new file data a run's fork may hold (its private-byte
    /// quota), at most and by default.
    pub max_fs_bytes: u64,
    /// Files, directories and symlinks a run may add, at most and by
    /// default.
    pub max_fs_inodes: u64,
    /// Changes a diff lists at most.
    pub max_diff: usize,
    /// Bytes of the paths a diff lists, in all, at most.
    pub max_diff_bytes: usize,
    /// Bytes a run's `read` returns in all (before base64).
    pub max_read: u64,
    /// Distinct modules held.
    pub max_modules: usize,
    /// The blob store (`s3://bucket/prefix`, `file:///dir`, a directory)
    /// every registered or saved snapshot is pushed to, and unknown roots
    /// are pulled from, lazily.
    pub store: Option<String>,
    /// Whether `PUT /v1/snapshots/{name}` may name any store URL (which
    /// lets clients make the server read any local directory store).
    pub allow_url_import: bool,
    /// Limits checkpoints and store trees are loaded under (and the limits
    /// their forks start from).
    pub base_limits: crate::Limits,
}

impl Default for Config {
    fn default() -> Config {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Config {
            token: None,
            max_running: cores * 2,
            max_queue: 1024,
            queue_wait: Duration::from_secs(30),
            max_transfers: 16,
            max_body: 4 << 20,
            max_upload: 1 << 30,
            max_body_memory: 2 << 30,
            max_snapshot_memory: 2 << 30,
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(300),
            max_memory: 256 << 20,
            max_output: 1 << 20,
            max_fs_bytes: 256 << 20,
            max_fs_inodes: 100_000,
            max_diff: 10_000,
            max_diff_bytes: 4 << 20,
            max_read: 16 << 20,
            max_modules: 256,
            store: None,
            allow_url_import: false,
            base_limits: crate::Limits {
                max_private_bytes: u64::MAX,
                ..crate::Limits::default()
            },
        }
    }
}

impl Config {
    /// What one diff lists at most.
    fn diff_cap(&self) -> sandbox::DiffCap {
        sandbox::DiffCap {
            entries: self.max_diff,
            bytes: self.max_diff_bytes,
        }
    }
}

/// The server's shared state.
#[derive(Debug)]
pub struct App {
    config: Config,
    engine: wasmtime::Engine,
    modules: Modules,
    snapshots: Registry,
    gate: Gate,
    transfers: Gate,
    /// Request bodies held at once.
    bodies: body::Budget,
    metrics: Metrics,
    /// Whether guests may start on the async threads (see
    /// `sandbox::run_inline`): only when no snapshot can be backed by a
    /// store, whose lazy reads and pushes block.
    inline_runs: bool,
}

/// Why the server cannot start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Refuses to serve without a token anywhere but on a loopback address.
pub fn check_listen(addr: &SocketAddr, has_token: bool) -> Result<(), StartError> {
    if has_token || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(StartError(format!(
        "refusing to listen on {addr} without a token: anyone who can reach it could run code \
         here. Give one with --token-file FILE or COWVFS_TOKEN, or listen on 127.0.0.1"
    )))
}

/// The server's engine: epoch deadlines, and instances, memories and
/// tables from a pool sized for `max_running` runs at once, so a run maps
/// and unmaps no memory of its own (with the on-demand allocator every
/// instance cost an mmap, and its end an munmap and a TLB shootdown on
/// every core: a tenth of the server's time under load). A run's memory is
/// capped by the pool's slot size as well as by its limiter. If the pool
/// cannot be reserved (address space), the on-demand allocator serves.
fn engine(config: &Config) -> Result<wasmtime::Engine, StartError> {
    let runs = u32::try_from(config.max_running).unwrap_or(u32::MAX);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    // A component adapted from preview1 has a few core instances and
    // tables; a core module one of each.
    pool.total_core_instances(runs.saturating_mul(8))
        .total_component_instances(runs.saturating_mul(2))
        .total_memories(runs.saturating_mul(4))
        .total_tables(runs.saturating_mul(8))
        .max_memories_per_module(4)
        .max_tables_per_module(4)
        .table_elements(1 << 20)
        .max_memory_size(config.max_memory)
        // What the next run in a slot would fault in again anyway.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    let mut pooled = crate::wasi::engine_config(true, false);
    pooled.allocation_strategy(pool);
    match wasmtime::Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!("no instance pool ({e}); instances are allocated on demand");
            crate::wasi::engine(true, false)
                .map_err(|e| StartError(format!("cannot make the wasm engine: {e}")))
        }
    }
}

impl App {
    /// The state for `config`: an engine with epoch deadlines, and the
    /// store if one is named.
    pub fn new(config: Config) -> Result<Arc<App>, StartError> {
        if config.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(StartError("the token is empty".into()));
        }
        let biggest = config.max_upload.max(config.max_body) as u64;
        if config.max_body_memory < biggest {
            return Err(StartError(format!(
                "the memory for request bodies ({} bytes) must hold the largest body allowed ({biggest} bytes)",
                config.max_body_memory
            )));
        }
        let engine = engine(&config)?;
        let (store, cache) = match &config.store {
            Some(url) => {
                let store = crate::store::open_store(url, true)
                    .map_err(|e| StartError(format!("cannot open --store {url}: {e}")))?;
                (Some(store), crate::store::cache_for(url))
            }
            None => (None, None),
        };
        let snapshots = Registry::new(
            config.max_snapshot_memory,
            store,
            cache,
            config.base_limits.clone(),
        );
        Ok(Arc::new(App {
            inline_runs: config.store.is_none() && !config.allow_url_import,
            engine,
            modules: Modules::new(config.max_modules),
            snapshots,
            gate: Gate::new(config.max_running, config.max_queue, config.queue_wait),
            bodies: body::Budget::new(config.max_body_memory),
            transfers: Gate::new(
                config.max_transfers,
                config.max_transfers * 4,
                config.queue_wait,
            ),
            metrics: Metrics::default(),
            config,
        }))
    }

    /// Compiles and names a module (blocking): what `PUT
    /// /v1/modules/{name}` does. Returns its hash.
    pub fn add_module(&self, name: &str, bytes: &[u8]) -> Result<blake3::Hash, ApiError> {
        check_name(name)?;
        let binary = modules::to_binary(bytes)?;
        let hash = blake3::hash(&binary);
        let module = match self.modules.compiled(&hash) {
            Some(m) => m,
            None => Arc::new(modules::compile(&self.engine, &binary, ARGV0)?),
        };
        Ok(self.modules.insert(name, module)?.hash)
    }

    /// Holds and names a snapshot (blocking if there is a store): what
    /// `PUT /v1/snapshots/{name}` does. Returns its root hash.
    pub fn add_snapshot(
        &self,
        name: &str,
        snap: crate::Snapshot,
    ) -> Result<blake3::Hash, ApiError> {
        check_name(name)?;
        let cost = charge::held_cost(&snap);
        self.snapshots.insert(NewSnapshot {
            snap,
            cost,
            name: Some(name.to_string()),
            parent: None,
            in_store: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// taking connections and finishes every request in progress.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    futures_util::future::select(std::pin::pin!(ctrl_c), std::pin::pin!(term)).await;
    tracing::info!("shutting down: finishing the requests in progress");
}

/// Binds `listen`, calls `ready` with the bound address (port 0 picks a
/// free one), and serves until SIGTERM or ctrl-c, on a runtime of its own.
pub fn run(
    app: Arc<App>,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), StartError> {
    check_listen(&listen, app.config.token.is_some())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cowvfs-serve")
        .build()
        .map_err(|e| StartError(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError(format!("cannot listen on {listen}: {e}")))?;
        tracing::info!(%addr, "serving");
        ready(addr);
        serve(app, listener, shutdown_signal())
            .await
            .map_err(|e| StartError(format!("the server failed: {e}")))
    })?;
    // Runs a client gave up on still hold their turn; let them end.
    rt.shutdown_timeout(Duration::from_secs(30));
    tracing::info!("stopped");
    Ok(())
}
