//! `cowvfs run`: run a WebAssembly guest against an in-memory tree, with
//! host directories imported into it or mounted beside it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cowvfs::wasi::{Guest, LimitHit, RunLimits, RunOutcome, Sandbox, p1};
use cowvfs::{ChangeKind, Limits, Vfs};

/// Arguments of `cowvfs run`, shaped like `wasmtime run`'s.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Copy a host directory into the in-memory tree at GUEST and preopen
    /// it there, as `wasmtime run --dir` does (without GUEST the guest
    /// sees it as HOST, and the tree holds it at the same absolute path; a
    /// relative HOST goes under `/`). The guest may change anything; the
    /// host directory is never modified.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Mount a live host directory at GUEST beside the in-memory tree, and
    /// preopen it there; `:ro` refuses every change (`:rw`, the default,
    /// allows them). Renames and links
    /// between it and the rest fail with EXDEV.
    #[arg(long = "mount", value_name = "HOST::GUEST[:ro|:rw]")]
    mounts: Vec<String>,
    /// Preopen the in-memory tree's directory GUEST (e.g. `/` of a --from
    /// tree) at that guest path. The guest sees exactly the --dir, --mount
    /// and --preopen directories, in the order given; with none of them,
    /// --from preopens `/`, and otherwise nothing is preopened.
    #[arg(long = "preopen", value_name = "GUEST")]
    preopens: Vec<String>,
    /// Where each --dir, --mount and --preopen stood on the command line.
    #[arg(skip)]
    order: Option<[Vec<usize>; 3]>,
    /// Set an environment variable for the guest (it sees no others).
    #[arg(long = "env", value_name = "K=V")]
    envs: Vec<String>,
    /// After the run, print on stderr what the guest changed in the
    /// in-memory tree (`+` added, `-` removed, `M` modified).
    #[arg(long)]
    diff: bool,
    /// Most bytes of file data the tree may hold, e.g. `512M`, `4G`
    /// (default 4G).
    #[arg(long, value_name = "SIZE")]
    max_bytes: Option<String>,
    /// Most files, directories and symlinks the tree may hold (default
    /// 1000000).
    #[arg(long, value_name = "N")]
    max_inodes: Option<String>,
    /// Stop the guest after this much wall-clock time, e.g. `500ms`, `2s`,
    /// `1m` (a bare number is seconds); the run then exits with status 124,
    /// as timeout(1) does (default: no limit).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Stop the guest after about N wasm instructions (fuel units); it ends
    /// in an out-of-fuel trap. Metering makes wasm code slower.
    #[arg(long, value_name = "N")]
    fuel: Option<String>,
    /// Most bytes each linear memory of the guest may grow to, e.g. `16M`;
    /// past it memory.grow fails and malloc returns NULL (default: what
    /// wasm allows, 4G).
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Start from a saved tree instead of an empty one: a checkpoint file,
    /// or STORE/ROOT in a fleet blob store (s3://bucket/prefix/ROOT,
    /// file:///dir/ROOT, DIR/ROOT), whose chunks are fetched on first read;
    /// STORE/NAME starts from the tree the ref NAME names now (`cowvfs tag`).
    #[arg(long, value_name = "CK|STORE/ROOT|STORE/NAME")]
    from: Option<String>,
    /// A parent of a delta checkpoint given to --from (repeat for a chain).
    #[arg(long = "parent", value_name = "P")]
    parents: Vec<PathBuf>,
    /// After the guest exits, save the tree as a checkpoint at OUT
    /// (atomically: OUT is whole or untouched).
    #[arg(long, value_name = "OUT")]
    save: Option<PathBuf>,
    /// With --save: write a delta against the --from tree instead of a full
    /// checkpoint (load it later with --parent).
    #[arg(long, requires = "save")]
    delta: bool,
    /// Run a preview1 module through the preview1-to-component adapter
    /// instead of cowvfs's native preview1 (for comparison: the adapter
    /// turns every non-zero exit status into 1).
    #[arg(long)]
    adapter: bool,
    /// The guest (a component or a preview1 module) and its arguments.
    #[arg(
        value_name = "MODULE [ARGS]...",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    module_and_args: Vec<String>,
}

impl RunArgs {
    /// Records where each preopen flag stood among the others, so the
    /// guest's preopens come in command-line order.
    pub fn record_order(&mut self, m: &clap::ArgMatches) {
        let at = |id: &str| {
            m.indices_of(id)
                .map(|i| i.collect::<Vec<_>>())
                .unwrap_or_default()
        };
        self.order = Some([at("dirs"), at("mounts"), at("preopens")]);
    }
}

/// One directory the guest sees, at a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    /// A directory of the in-memory tree (`--dir`, `--preopen`, or `/` of
    /// a `--from` tree).
    Tree { dir: String, guest: String },
    /// A live host directory (`--mount`).
    Mount {
        host: PathBuf,
        guest: String,
        read_only: bool,
    },
}

/// Everything `run` needs, checked before anything runs.
struct Plan {
    dirs: Vec<(PathBuf, String)>,
    mounts: Vec<(PathBuf, String, bool)>,
    /// What the guest sees, in order.
    opens: Vec<Open>,
    envs: Vec<(String, String)>,
    limits: Limits,
    run_limits: RunLimits,
    module: PathBuf,
    args: Vec<String>,
}

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let diff = args.diff;
    let from = args.from.clone();
    let adapter = args.adapter;
    let parents = args.parents.clone();
    let save = args.save.clone();
    let delta = args.delta;
    if delta && from.is_none() {
        bail!("--delta needs --from: a delta is saved against the tree it started from");
    }
    if !parents.is_empty() && from.is_none() {
        bail!("--parent needs --from (it names the parents of a delta checkpoint)");
    }
    let plan = Plan::new(args, from.is_some())?;

    let start = match &from {
        Some(src) => Some(open_from(src, &parents, &plan.limits)?),
        None => None,
    };
    let mut vfs = match &start {
        Some(snap) => snap.fork_with_limits(plan.limits.clone()),
        None => Vfs::with_limits(plan.limits.clone()),
    };
    for (host, guest) in &plan.dirs {
        cowvfs::hostdir::import_dir(&mut vfs, host, guest)
            .with_context(|| format!("cannot import --dir {}", host.display()))?;
    }
    if !plan.mounts.is_empty() {
        room_for_mounts(plan.limits.max_open_files);
    }
    // Mount points exist in the tree too, so listing a parent shows them;
    // they are made before the diff's base, so they are not a change.
    for (_, guest, _) in &plan.mounts {
        vfs.create_dir_all(guest)
            .with_context(|| format!("cannot make mount point {guest}"))?;
    }
    let base = diff.then(|| vfs.snapshot());

    let native = !adapter && p1::is_core_module(&std::fs::read(&plan.module)?);
    let outcome = if native {
        run_native(&plan, vfs)?
    } else {
        run_component(&plan, vfs)?
    };
    if let Some(out) = &save {
        let snap = outcome.vfs.snapshot();
        let saved = match (&start, delta) {
            (Some(parent), true) => snap.save_delta(parent, out),
            _ => snap.save(out),
        };
        saved.with_context(|| format!("cannot save --save {}", out.display()))?;
        tracing::info!(path = %out.display(), delta, "saved the sandbox's tree");
    }
    finish(base, outcome, &plan.run_limits)
}

/// Descriptors the process keeps for itself beside a guest's (stdio, the
/// module, the runtime's own).
const OWN_DESCRIPTORS: u64 = 64;

/// A guest's file on a host mount is a real descriptor of this process, so
/// the guest's `max_open_files` (not the shell's usual soft limit of 1,024)
/// should be what stops it: raises the soft `RLIMIT_NOFILE` that far, up
/// to the hard limit, and says so on stderr when the hard limit is lower.
fn room_for_mounts(max_open_files: u32) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = u64::from(max_open_files).saturating_add(OWN_DESCRIPTORS);
    let now = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let mut soft = now.current.unwrap_or(u64::MAX);
    if soft >= want {
        return;
    }
    let most = now.maximum.map_or(want, |hard| hard.min(want));
    if most > soft {
        let raised = Rlimit {
            current: Some(most),
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = most,
            Err(e) => eprintln!("cowvfs: cannot raise the open-file limit to {most}: {e}"),
        }
    }
    if soft < want {
        eprintln!(
            "cowvfs: this process may hold at most {soft} open files (RLIMIT_NOFILE), so the \
             guest may get EMFILE on --mount directories before its own limit of {max_open_files}"
        );
    }
}

/// How long past `--timeout` the process waits for a guest stuck in a host
/// call that no deadline check reaches (a blocking stdin read, say) before
/// it exits with 124 anyway.
const WATCHDOG_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Backs up the run's own deadline: started when the guest starts (after
/// compiling), it exits the process with 124 if the run has not ended
/// `WATCHDOG_GRACE` after the timeout. Dropping it (the run ended) stops it,
/// so saving or diffing afterwards is never cut short.
struct Watchdog(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl Watchdog {
    fn start(timeout: std::time::Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let grace = timeout.saturating_add(WATCHDOG_GRACE);
            // Disconnected: the run ended in time.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(grace) {
                eprintln!(
                    "cowvfs: the guest ran past --timeout {timeout:?} and is stuck in a host call; exiting"
                );
                std::process::exit(124);
            }
        });
        Watchdog(tx)
    }
}

/// Sets up either kind of sandbox from the plan, so `--adapter` changes
/// only the ABI: the preopens and mounts in order, environment, arguments
/// and the host's stdio.
macro_rules! configure {
    ($sandbox:ident, $plan:ident) => {
        for open in &$plan.opens {
            match open {
                Open::Tree { dir, guest } => {
                    $sandbox
                        .preopen(dir, guest)
                        .with_context(|| format!("cannot preopen {dir}"))?;
                }
                Open::Mount {
                    host,
                    guest,
                    read_only,
                } => {
                    $sandbox.mount(host, guest, *read_only)?;
                }
            }
        }
        for (k, v) in &$plan.envs {
            $sandbox.env(k, v);
        }
        for a in &$plan.args {
            $sandbox.arg(a);
        }
        $sandbox.inherit_stdio();
        $sandbox.limits($plan.run_limits.clone());
    };
}

/// A preview1 module on cowvfs's native preview1: no adapter, exact exit
/// codes.
fn run_native(plan: &Plan, vfs: Vfs) -> anyhow::Result<RunOutcome> {
    let mut sandbox = p1::Sandbox::new(vfs);
    configure!(sandbox, plan);
    let guest = p1::Guest::load(&engine(&plan.run_limits)?, &plan.module)?;
    let _watchdog = plan.run_limits.timeout.map(Watchdog::start);
    Ok(sandbox.run(&guest))
}

fn run_component(plan: &Plan, vfs: Vfs) -> anyhow::Result<RunOutcome> {
    let mut sandbox = Sandbox::new(vfs);
    configure!(sandbox, plan);

    let engine = engine(&plan.run_limits)?;
    let cache = cowvfs::wasi::cache_dir();
    let guest = Guest::load(&engine, &plan.module, cache.as_deref())?;
    let _watchdog = plan.run_limits.timeout.map(Watchdog::start);
    Ok(sandbox.run(&guest))
}

fn finish(
    base: Option<cowvfs::Snapshot>,
    outcome: RunOutcome,
    limits: &RunLimits,
) -> anyhow::Result<ExitCode> {
    if let Some(base) = base {
        // The diff goes to stderr beside the guest's own output; a
        // closed stderr loses only the listing, not the exit status.
        let _ = print_diff(
            &base,
            &outcome.vfs.snapshot(),
            DIFF_SHOWN,
            &mut std::io::stderr(),
        );
    }
    match outcome.limit {
        Some(LimitHit::Deadline) => {
            let t = limits.timeout.unwrap_or_default();
            eprintln!("cowvfs: the guest ran past --timeout {t:?} and was stopped");
            return Ok(ExitCode::from(124));
        }
        Some(LimitHit::Fuel) => {
            let n = limits.fuel.unwrap_or_default();
            eprintln!("cowvfs: the guest used up its --fuel {n} and was stopped");
            return Ok(ExitCode::from(134));
        }
        Some(LimitHit::Memory) => {
            let m = limits.max_memory.unwrap_or_default();
            eprintln!(
                "cowvfs: the guest asked for more memory than --max-memory ({m} bytes) allows"
            );
        }
        None => {}
    }
    match outcome.status {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        Err(trap) => {
            eprintln!("cowvfs: guest trapped: {trap:?}");
            // What a shell shows for SIGABRT, as `wasmtime run` does.
            Ok(ExitCode::from(134))
        }
    }
}

/// How many changes `--diff` prints before it only counts the rest.
const DIFF_SHOWN: u64 = 1000;

/// Prints at most `shown` changes from `base` to `new` (streamed: a guest
/// that adds a huge or deep tree cannot make this hold every path), then
/// how many more there were. Stops at the first write error.
pub(crate) fn print_diff(
    base: &cowvfs::Snapshot,
    new: &cowvfs::Snapshot,
    shown: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut n = 0u64;
    let mut failed = None;
    let _ = base.diff_each(new, |kind, path| {
        if n < shown {
            let sign = match kind {
                ChangeKind::Added => '+',
                ChangeKind::Removed => '-',
                ChangeKind::Modified => 'M',
            };
            if let Err(e) = writeln!(out, "{sign} {path}") {
                failed = Some(e);
                return std::ops::ControlFlow::Break(());
            }
        }
        n += 1;
        std::ops::ControlFlow::Continue(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if n > shown {
        writeln!(out, "... and {} more changes", n - shown)?;
    }
    Ok(())
}

/// `--from`: a checkpoint file (opened lazily, with its parents if it is a
/// delta), or STORE/ROOT or STORE/NAME; checked against the run's own limits, so a tree
/// over the user's quotas is refused rather than loaded.
fn open_from(src: &str, parents: &[PathBuf], limits: &Limits) -> anyhow::Result<cowvfs::Snapshot> {
    if std::path::Path::new(src).is_file() {
        return cowvfs::checkpoint::chain_with_limits(src, parents, true, limits)
            .with_context(|| format!("cannot open --from {src}"));
    }
    if !parents.is_empty() {
        bail!("--parent applies to a checkpoint file, not to a store URL");
    }
    cowvfs::store::open_url_with_limits(src, limits)
        .with_context(|| format!("cannot open --from {src}"))
}

/// A compiled module is cached next to adapted ones, so a second run of the
/// same guest neither adapts nor compiles. Without a cache, it still runs.
/// Epoch interruption only with `--timeout` and fuel metering only with
/// `--fuel`: both slow wasm code down (the compiled-module cache keeps
/// each configuration apart).
fn engine(limits: &RunLimits) -> anyhow::Result<wasmtime::Engine> {
    let mut config = cowvfs::wasi::engine_config(limits.timeout.is_some(), limits.fuel.is_some());
    if let Some(dir) = cowvfs::wasi::cache_dir().filter(|d| d.is_absolute()) {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir.join("compiled"));
        if let Ok(cache) = wasmtime::Cache::new(cache) {
            config.cache(Some(cache));
        }
    }
    Ok(wasmtime::Engine::new(&config)?)
}

impl Plan {
    fn new(args: RunArgs, from: bool) -> anyhow::Result<Plan> {
        let mut module_and_args = args.module_and_args.into_iter();
        let Some(module) = module_and_args.next() else {
            bail!("missing MODULE");
        };
        let module = PathBuf::from(module);
        let mut limits = Limits::default();
        if let Some(s) = &args.max_bytes {
            limits.max_bytes = parse_size(s).with_context(|| format!("bad --max-bytes {s:?}"))?;
        }
        // A run's tree is all its own data (a `--dir` import as much as
        // what the guest writes): the private-byte quota is the byte quota.
        limits.max_private_bytes = limits.max_bytes;
        if let Some(s) = &args.max_inodes {
            limits.max_inodes =
                s.parse().ok().filter(|n| *n > 0).with_context(|| {
                    format!("bad --max-inodes {s:?}: expected a positive number")
                })?;
        }
        let mut run_limits = RunLimits::default();
        if let Some(s) = &args.timeout {
            run_limits.timeout = Some(parse_duration(s)?);
        }
        if let Some(s) = &args.fuel {
            run_limits.fuel = Some(
                s.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("bad --fuel {s:?}: expected a positive number"))?,
            );
        }
        if let Some(s) = &args.max_memory {
            let bytes = parse_size(s).with_context(|| format!("bad --max-memory {s:?}"))?;
            run_limits.max_memory = Some(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
        let dirs: Vec<(PathBuf, String)> = args
            .dirs
            .iter()
            .map(|d| parse_dir(d))
            .collect::<anyhow::Result<_>>()?;
        let mounts: Vec<(PathBuf, String, bool)> = args
            .mounts
            .iter()
            .map(|m| parse_mount(m))
            .collect::<anyhow::Result<_>>()?;
        let preopens = args
            .preopens
            .iter()
            .map(|g| guest_path(g, "--preopen"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let opens = plan_opens(
            &args.dirs,
            &dirs,
            &mounts,
            &preopens,
            args.order.as_ref(),
            from,
        );
        let envs = args
            .envs
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => bail!("bad --env {e:?}: expected K=V"),
            })
            .collect::<anyhow::Result<_>>()?;
        // Flags first: their mistakes are cheaper to fix than a path.
        if !module.is_file() {
            bail!("cannot read module {}: no such file", module.display());
        }
        Ok(Plan {
            dirs,
            mounts,
            opens,
            envs,
            limits,
            run_limits,
            module,
            args: module_and_args.collect(),
        })
    }
}

/// The guest's preopens: every `--dir` (at its GUEST, or as its HOST was
/// written, as `wasmtime run` shows it), `--mount` and `--preopen`, in
/// command-line order (`order` holds each flag's positions; without it,
/// dirs, then mounts, then preopens). With none of them a `--from` tree is
/// preopened at `/`; with nothing at all the guest sees no directory.
fn plan_opens(
    dir_specs: &[String],
    dirs: &[(PathBuf, String)],
    mounts: &[(PathBuf, String, bool)],
    preopens: &[String],
    order: Option<&[Vec<usize>; 3]>,
    from: bool,
) -> Vec<Open> {
    let mut opens: Vec<(usize, Open)> = Vec::new();
    let pos = |flag: usize, i: usize| -> usize {
        order
            .and_then(|o| o[flag].get(i).copied())
            .unwrap_or(flag * (1 << 20) + i)
    };
    for (i, ((_, tree), spec)) in dirs.iter().zip(dir_specs).enumerate() {
        let guest = match spec.split_once("::") {
            Some(_) => tree.clone(),
            None => spec.clone(),
        };
        let dir = tree.clone();
        opens.push((pos(0, i), Open::Tree { dir, guest }));
    }
    for (i, (host, guest, read_only)) in mounts.iter().enumerate() {
        let open = Open::Mount {
            host: host.clone(),
            guest: guest.clone(),
            read_only: *read_only,
        };
        opens.push((pos(1, i), open));
    }
    for (i, guest) in preopens.iter().enumerate() {
        let open = Open::Tree {
            dir: guest.clone(),
            guest: guest.clone(),
        };
        opens.push((pos(2, i), open));
    }
    opens.sort_by_key(|(at, _)| *at);
    let mut opens: Vec<Open> = opens.into_iter().map(|(_, o)| o).collect();
    if opens.is_empty() && from {
        opens.push(Open::Tree {
            dir: "/".into(),
            guest: "/".into(),
        });
    }
    opens
}

fn host_dir(host: &str, flag: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(host);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => bail!("bad {flag} {host}: not a directory"),
        Err(e) => bail!("bad {flag} {host}: {e}"),
    }
}

fn guest_path(guest: &str, flag: &str) -> anyhow::Result<String> {
    if !guest.starts_with('/') {
        bail!("bad {flag} guest path {guest:?}: must be absolute");
    }
    Ok(guest.to_string())
}

/// `HOST[::GUEST]`; without GUEST an absolute HOST keeps its path and a
/// relative one lands under `/`.
fn parse_dir(spec: &str) -> anyhow::Result<(PathBuf, String)> {
    let (host, guest) = match spec.split_once("::") {
        Some((h, g)) => (h, guest_path(g, "--dir")?),
        None => {
            let rel = spec.trim_start_matches("./").trim_end_matches('/');
            let guest = if spec.starts_with('/') {
                spec.to_string()
            } else if rel.is_empty() || rel == "." {
                "/".to_string()
            } else {
                format!("/{rel}")
            };
            (spec, guest)
        }
    };
    Ok((host_dir(host, "--dir")?, guest))
}

/// `HOST::GUEST[:ro|:rw]`. A `:` in the guest path must start one of
/// those options: a mistyped one (`:RO`) would otherwise become part of a
/// writable mount's path.
fn parse_mount(spec: &str) -> anyhow::Result<(PathBuf, String, bool)> {
    let Some((host, rest)) = spec.split_once("::") else {
        bail!("bad --mount {spec:?}: expected HOST::GUEST[:ro]");
    };
    let (guest, read_only) = match rest.rsplit_once(':') {
        Some((g, "ro")) => (g, true),
        Some((g, "rw")) => (g, false),
        _ => (rest, false),
    };
    if let Some((_, opt)) = guest.split_once(':') {
        bail!("bad --mount {spec:?}: unknown option {opt:?} after the guest path (ro or rw)");
    }
    if guest == "/" {
        bail!("bad --mount {spec:?}: the in-memory tree is at /; mount below it");
    }
    Ok((
        host_dir(host, "--mount")?,
        guest_path(guest, "--mount")?,
        read_only,
    ))
}

/// `1234`, `64K`, `512M`, `4G`, `1T`, with optional `B`/`iB` (powers of 1024).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    Ok(cowvfs::parse_size(s)?)
}

/// `500ms`, `2s`, `1.5s`, `1m`, `1h`, or a bare number of seconds; more
/// than zero.
fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let bad = || format!("bad --timeout {s:?}: expected e.g. 500ms, 2s, 1m");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok().with_context(bad)?;
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => bail!(bad()),
    };
    let d = std::time::Duration::try_from_secs_f64(n * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(bad)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watchdog dropped when its run ends never fires: were it still
    /// armed, it would exit this test process with 124 at 50 ms + grace.
    #[test]
    fn a_finished_runs_watchdog_stands_down() {
        drop(Watchdog::start(std::time::Duration::from_millis(50)));
        std::thread::sleep(std::time::Duration::from_millis(50) + WATCHDOG_GRACE * 2);
    }

    #[test]
    fn diff_prints_a_bounded_number_of_changes() {
        let mut v = Vfs::new();
        let base = v.snapshot();
        for i in 0..1500 {
            v.create_dir(&format!("/d{i}")).unwrap();
        }
        v.remove_dir("/d7").unwrap();
        let mut out = Vec::new();
        print_diff(&base, &v.snapshot(), DIFF_SHOWN, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1001, "{text}");
        assert!(lines[..1000].iter().all(|l| l.starts_with("+ /d")));
        assert_eq!(lines[1000], "... and 499 more changes");
        // Under the bound, every change and no count.
        let mut out = Vec::new();
        print_diff(&base, &v.snapshot(), 2000, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1499);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1234").ok(), Some(1234));
        assert_eq!(parse_size("64K").ok(), Some(64 << 10));
        assert_eq!(parse_size("512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("4g").ok(), Some(4 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3").ok(), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        for bad in ["", "0s", "x", "5q", "-1s", "1e400s", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_need_a_guest() {
        assert!(parse_mount("/tmp").is_err());
        assert!(parse_mount("/tmp::rel").is_err());
        assert_eq!(
            parse_mount("/tmp::/data:ro").ok(),
            Some((PathBuf::from("/tmp"), "/data".to_string(), true))
        );
        assert_eq!(
            parse_mount("/tmp::/data:rw").ok(),
            Some((PathBuf::from("/tmp"), "/data".to_string(), false))
        );
        assert_eq!(
            parse_mount("/tmp::/data").ok(),
            Some((PathBuf::from("/tmp"), "/data".to_string(), false))
        );
        // A mistyped option is refused, not taken into a writable path.
        for bad in [
            "/tmp::/data:RO",
            "/tmp::/data:ro:ro",
            "/tmp::/a:b",
            "/tmp::/data:",
        ] {
            let e = parse_mount(bad).unwrap_err().to_string();
            assert!(e.contains("unknown option"), "{bad}: {e}");
        }
    }

    #[test]
    fn preopens_as_asked() {
        let dir = |h: &str, g: &str| (PathBuf::from(h), g.to_string());
        let tree = |d: &str, g: &str| Open::Tree {
            dir: d.into(),
            guest: g.into(),
        };
        // Nothing asked: nothing preopened, unless starting from a tree.
        assert_eq!(plan_opens(&[], &[], &[], &[], None, false), vec![]);
        assert_eq!(
            plan_opens(&[], &[], &[], &[], None, true),
            vec![tree("/", "/")]
        );
        // --dir HOST::GUEST at GUEST; --dir HOST as HOST was written.
        let specs = ["/tmp::/sandbox".to_string(), ".".to_string()];
        let dirs = [dir("/tmp", "/sandbox"), dir(".", "/")];
        let mounts = [(PathBuf::from("/tmp"), "/m".to_string(), true)];
        let pre = ["/".to_string()];
        // Command-line order: --preopen /, --mount, --dir, --dir.
        let order = [vec![5, 7], vec![3], vec![1]];
        assert_eq!(
            plan_opens(&specs, &dirs, &mounts, &pre, Some(&order), true),
            vec![
                tree("/", "/"),
                Open::Mount {
                    host: "/tmp".into(),
                    guest: "/m".into(),
                    read_only: true
                },
                tree("/sandbox", "/sandbox"),
                tree("/", "."),
            ]
        );
    }

    #[test]
    fn dirs_default_guest() {
        assert_eq!(parse_dir("/tmp").ok().map(|d| d.1), Some("/tmp".into()));
        assert_eq!(parse_dir("/tmp::/x").ok().map(|d| d.1), Some("/x".into()));
        assert!(parse_dir("/definitely/not/here").is_err());
    }
}
