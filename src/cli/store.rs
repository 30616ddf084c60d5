//! `cowvfs push` and `cowvfs pull`: move checkpoints to and from a fleet
//! blob store (`cowvfs::store`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use cowvfs::checkpoint;
use cowvfs::store::{self, BlobStore, TransferOptions, TransferStats};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Checkpoint to upload (a delta needs its --parent).
    ck: PathBuf,
    /// Store: s3://bucket/prefix, file:///dir or a directory (made if
    /// missing). S3 is configured from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP.
    url: String,
    /// Parent checkpoint of a delta (repeat for a chain, in any order).
    #[arg(long = "parent", value_name = "P")]
    parent: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// STORE/ROOT: the store URL and the hex root hash that
    /// `cowvfs checkpoint info` (or `cowvfs push`) prints.
    from: String,
    /// Checkpoint file to write (atomically).
    out: PathBuf,
    /// Do not use the host's chunk cache ($COWVFS_CACHE, default
    /// ~/.cache/cowvfs): fetch every chunk.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args, Debug)]
pub struct PruneCacheArgs {
    /// Keep at most this many bytes of chunks (e.g. 2G); default
    /// $COWVFS_CACHE_MAX, else 10G.
    #[arg(long, value_name = "SIZE")]
    max: Option<String>,
}

pub fn prune_cache(args: PruneCacheArgs) -> Result<ExitCode> {
    let Some(dir) = store::default_cache_dir() else {
        bail!("there is no chunk cache (COWVFS_CACHE=none, or no HOME)");
    };
    let max = match &args.max {
        Some(s) => cowvfs::parse_size(s).with_context(|| format!("bad --max {s:?}"))?,
        None => store::cache_max()?,
    };
    if !dir.join("chunks").is_dir() {
        outln!("{}: no chunk cache yet", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let s = store::DirStore::open(&dir)?.prune_chunks(max)?;
    outln!(
        "{}: removed {} chunks ({}); kept {} chunks ({}), at most {}",
        dir.display(),
        s.removed,
        human(s.removed_bytes),
        s.chunks - s.removed,
        human(s.bytes - s.removed_bytes),
        human(max)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Store: s3://bucket/prefix, file:///dir or a directory.
    url: String,
    /// Bytes to aim for per pack (e.g. 16M).
    #[arg(long, value_name = "SIZE", default_value = "16M")]
    pack_size: String,
}

/// `cowvfs migrate-store`: packs a store's loose chunks.
pub fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    let pack_size = cowvfs::parse_size(&args.pack_size)
        .with_context(|| format!("bad --pack-size {:?}", args.pack_size))?;
    let store = store::open_store(&args.url, false)?;
    let opts = TransferOptions {
        pack_size,
        ..TransferOptions::default()
    };
    let s = store::migrate(&*store, &opts).with_context(|| format!("migrating {}", args.url))?;
    outln!(
        "{}: {} loose chunks; packed {} ({}) into {} packs; removed {} loose chunks",
        args.url,
        s.loose,
        s.packed_chunks,
        human(s.packed_bytes),
        s.packs,
        s.removed
    );
    Ok(ExitCode::SUCCESS)
}

pub fn push(args: PushArgs) -> Result<ExitCode> {
    // Lazily opened: a chunk is read from the file only if the store lacks it.
    let snap = checkpoint::open_chain(&args.ck, &args.parent)?;
    let store = store::open_store(&args.url, true)?;
    // The host's cache keeps the store's index objects between pushes.
    let cache = store::cache_for(&args.url);
    let bar = Bar::new("pushing");
    let progress = |done, total| bar.set(done, total);
    let opts = TransferOptions {
        progress: Some(&progress),
        cache: cache.as_deref(),
        ..TransferOptions::default()
    };
    let stats = store::push(&snap, &*store, &opts)
        .with_context(|| format!("pushing {}", args.ck.display()))?;
    drop(bar);
    report("uploaded", &stats);
    outln!("{}/{}", args.url.trim_end_matches('/'), stats.root.to_hex());
    Ok(ExitCode::SUCCESS)
}

pub fn pull(args: PullArgs) -> Result<ExitCode> {
    let (url, root) = store::split_root(&args.from)?;
    let store = store::open_store(url, false)?;
    let cache: Option<Arc<dyn BlobStore>> = if args.no_cache {
        None
    } else {
        store::cache_for(url)
    };
    let bar = Bar::new("pulling");
    let progress = |done, total| bar.set(done, total);
    let opts = TransferOptions {
        progress: Some(&progress),
        ..TransferOptions::default()
    };
    let stats = store::pull(&*store, &root, &args.out, cache, &opts)
        .with_context(|| format!("pulling {}", args.from))?;
    drop(bar);
    report("downloaded", &stats);
    Ok(ExitCode::SUCCESS)
}

fn report(verb: &str, s: &TransferStats) {
    eprintln!(
        "{}: {} chunks ({}), {} {verb} ({}), manifest {}",
        s.root.to_hex(),
        s.chunks,
        human(s.chunk_bytes),
        s.moved_chunks,
        human(s.moved_bytes),
        human(s.manifest_bytes),
    );
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A transfer bar on stderr that appears once the transfer has taken over
/// a second, and never when stderr is not a terminal (indicatif hides it).
struct Bar(ProgressBar);

impl Bar {
    fn new(what: &'static str) -> Bar {
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        Bar(super::late_bar(style, what))
    }

    fn set(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

impl Drop for Bar {
    /// An error path leaves no half-drawn bar above the error line.
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
