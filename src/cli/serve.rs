//! `cowvfs serve`: the HTTP sandbox service (see `cowvfs::serve`). This
//! file turns flags into a `Config`, reads the token, registers the demo
//! base and module with `--demo`, and prints where the server listens.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cowvfs::serve::{App, Config};

/// Arguments of `cowvfs serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a token; port 0
    /// picks a free port (the first line printed says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A file holding the bearer token clients must send (else the
    /// COWVFS_TOKEN environment variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Register a demo base snapshot and module, both named `demo`: the
    /// demo's base image (5,000 files under /app and a 16 MiB data file)
    /// and its guest, which writes its argument to /app/notes/note.txt.
    #[arg(long)]
    demo: bool,
    /// A blob store (s3://bucket/prefix, file:///dir, DIR) that every
    /// registered and saved snapshot is pushed to, and unknown root hashes
    /// are opened from, lazily: servers sharing it share snapshots.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Let `PUT /v1/snapshots/{name}` open any store URL the client names
    /// (it can then make the server read any store directory on this host).
    #[arg(long)]
    allow_url_import: bool,
    /// Guests running at once (default: twice the cores).
    #[arg(long, value_name = "N")]
    max_running: Option<usize>,
    /// Requests waiting for a turn; past it, 429 overloaded.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_queue: usize,
    /// Longest wait for a turn before 429, e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    queue_wait: String,
    /// Largest JSON request body.
    #[arg(long, value_name = "SIZE", default_value = "4M")]
    max_body: String,
    /// Largest module or checkpoint upload.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    max_upload: String,
    /// Memory for request bodies being received, all together (at least
    /// --max-upload); a body past it gets 429 overloaded.
    #[arg(long, value_name = "SIZE", default_value = "2G")]
    max_body_memory: String,
    /// Memory for snapshots before the least recently used unnamed ones
    /// are evicted.
    #[arg(long, value_name = "SIZE", default_value = "2G")]
    max_snapshot_memory: String,
    /// A run's deadline when the request gives no timeout_ms.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: String,
    /// The longest timeout_ms a request may ask for.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    max_timeout: String,
    /// Cap of each guest memory (and the most a request may ask).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    max_memory: String,
    /// Bytes of stdout and of stderr a run returns (and the most a
    /// request may ask); the rest is cut and `truncated` set.
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    max_output: String,
    /// New file data a run may write into its fork.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    max_fs_bytes: String,
    /// Files, directories and symlinks a run may add.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_fs_inodes: u64,
}

fn size(s: &str, flag: &str) -> anyhow::Result<u64> {
    cowvfs::parse_size(s).with_context(|| format!("bad {flag} {s:?}"))
}

fn duration(s: &str, flag: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .ok()
        .with_context(|| format!("bad {flag} {s:?}: expected e.g. 500ms, 10s, 5m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => bail!("bad {flag} {s:?}: expected e.g. 500ms, 10s, 5m"),
    };
    if d.is_zero() {
        bail!("bad {flag} {s:?}: must be more than zero");
    }
    Ok(d)
}

/// The token from `--token-file` or `COWVFS_TOKEN`, trimmed.
fn token(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    let raw = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --token-file {}", f.display()))?,
        ),
        None => std::env::var("COWVFS_TOKEN").ok(),
    };
    match raw.map(|t| t.trim().to_string()) {
        Some(t) if t.is_empty() => bail!("the token (--token-file or COWVFS_TOKEN) is empty"),
        t => Ok(t),
    }
}

fn config(args: &ServeArgs) -> anyhow::Result<Config> {
    let d = Config::default();
    let max_timeout = duration(&args.max_timeout, "--max-timeout")?;
    let timeout = duration(&args.timeout, "--timeout")?;
    if timeout > max_timeout {
        bail!(
            "--timeout {} is longer than --max-timeout {}",
            args.timeout,
            args.max_timeout
        );
    }
    let usize_of = |s: &str, flag: &str| -> anyhow::Result<usize> {
        usize::try_from(size(s, flag)?).with_context(|| format!("{flag} is too large"))
    };
    let max_memory = usize_of(&args.max_memory, "--max-memory")?;
    if max_memory < 64 << 10 {
        bail!("--max-memory must be at least 64K (one wasm page)");
    }
    Ok(Config {
        token: token(args.token_file.as_ref())?,
        max_running: match args.max_running {
            Some(0) => bail!("--max-running must be at least 1"),
            Some(n) => n,
            None => d.max_running,
        },
        max_queue: args.max_queue,
        queue_wait: duration(&args.queue_wait, "--queue-wait")?,
        max_body: usize_of(&args.max_body, "--max-body")?,
        max_upload: usize_of(&args.max_upload, "--max-upload")?,
        max_body_memory: size(&args.max_body_memory, "--max-body-memory")?,
        max_snapshot_memory: size(&args.max_snapshot_memory, "--max-snapshot-memory")?,
        default_timeout: timeout,
        max_timeout,
        max_memory,
        max_output: usize_of(&args.max_output, "--max-output")?,
        max_fs_bytes: size(&args.max_fs_bytes, "--max-fs-bytes")?,
        max_fs_inodes: args.max_fs_inodes,
        store: args.store.clone(),
        allow_url_import: args.allow_url_import,
        ..d
    })
}

pub fn main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    // Refuse before building anything.
    cowvfs::serve::check_listen(&args.listen, config.token.is_some())?;
    let app = App::new(config)?;
    if args.demo {
        let base = super::demo::base_image(5000, 16)?;
        app.add_snapshot("demo", base)
            .map_err(|e| anyhow::anyhow!("cannot register the demo base: {e}"))?;
        app.add_module("demo", super::demo::GUEST_WAT.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot register the demo module: {e}"))?;
    }
    cowvfs::serve::run(app, args.listen, |addr| {
        // The first line of stdout: where to connect (tests read it).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "cowvfs serve: listening on http://{addr}");
        if args.demo {
            let _ = writeln!(
                out,
                "try: curl -s http://{addr}/v1/run -d '{{\"base\":\"demo\",\"module\":\"demo\",\"args\":[\"hello\"],\"diff\":true}}'"
            );
        }
        let _ = out.flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
