//! `cowvfs push` and `cowvfs pull`: move checkpoints to and from a fleet
//! blob store (`cowvfs::store`); `cowvfs tag` and `cowvfs tags`: name the
//! trees in it (`cowvfs::store::refs`); `cowvfs gc`: collects its garbage
//! (`cowvfs::store::gc`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use cowvfs::checkpoint;
use cowvfs::store::refs::{self, Expect};
use cowvfs::store::{self, BlobStore, TransferOptions, TransferStats, TreeName};
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
    /// Then move the ref NAME to the pushed tree (as `cowvfs tag` does:
    /// fails, after the push, if another writer moves it meanwhile).
    #[arg(long, value_name = "NAME")]
    tag: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// STORE/ROOT: the store URL and the hex root hash that
    /// `cowvfs checkpoint info` (or `cowvfs push`) prints; or STORE/NAME,
    /// the tree the ref NAME names now.
    #[arg(value_name = "STORE/ROOT|STORE/NAME")]
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

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Store: s3://bucket/prefix, file:///dir or a directory.
    url: String,
    /// Report what would be condemned and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep this tree too (a root hash or a ref name); repeatable.
    #[arg(long, value_name = "ROOT")]
    keep: Vec<String>,
    /// Leave objects younger than this alone (a push in progress), and
    /// delete what an earlier run condemned only once this old: e.g. 90s,
    /// 30m, 1h, 2d; 0 condemns and deletes in one run (only for a store
    /// nobody else is using).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    grace: String,
    /// Repack a pack whose live bytes are below this percentage.
    #[arg(long, value_name = "PERCENT", default_value_t = 50)]
    repack_below: u8,
}

/// `cowvfs gc`: collects a store's garbage and says what it freed.
pub fn gc(args: GcArgs) -> Result<ExitCode> {
    let grace =
        parse_duration(&args.grace).with_context(|| format!("bad --grace {:?}", args.grace))?;
    if args.repack_below > 100 {
        bail!(
            "--repack-below {}: a percentage is at most 100",
            args.repack_below
        );
    }
    let store = store::open_store(&args.url, false)?;
    let keep = args
        .keep
        .iter()
        .map(|k| Ok(TreeName::parse(k)?.resolve(&*store)?))
        .collect::<Result<Vec<_>>>()?;
    let opts = store::GcOptions {
        dry_run: args.dry_run,
        keep,
        grace,
        repack_below: f64::from(args.repack_below) / 100.0,
        ..store::GcOptions::default()
    };
    let r =
        store::gc(&*store, &opts).with_context(|| format!("collecting garbage in {}", args.url))?;
    let kind = |k: store::KindStats| format!("{} ({})", k.objects, human(k.bytes));
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    outln!(
        "{}: kept {} trees ({} chunks){}",
        args.url,
        r.live_roots,
        r.live_chunks,
        if r.dry_run {
            "; dry run, nothing changed"
        } else {
            ""
        }
    );
    outln!(
        "{verb}: {} manifests, {} packs, {} index objects, {} loose chunks, {} tombstones; {} freed",
        kind(r.deleted_manifests),
        kind(r.deleted_packs),
        kind(r.deleted_index),
        kind(r.deleted_loose),
        kind(r.deleted_tombstones),
        human(r.freed().bytes)
    );
    outln!(
        "condemned (deleted by a gc run at least {} later): {} manifests, {} packs, {} loose chunks",
        args.grace,
        kind(r.condemned_manifests),
        kind(r.condemned_packs),
        kind(r.condemned_loose)
    );
    outln!(
        "repacked {} packs: {} live bytes into {} new packs; {} index objects, {} tombstones written; {} packs put back",
        kind(r.repacked),
        human(r.written_packs.bytes),
        r.written_packs.objects,
        r.written_index,
        r.written_tombstones,
        r.restored_packs
    );
    if r.missing_live_chunks > 0 {
        outln!(
            "warning: kept trees name {} chunks the store holds nowhere (damage from before this run)",
            r.missing_live_chunks
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration such as `0`, `90s`, `30m`, `1h` or `2d`.
fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| "expected a number, then s, m, h or d")?;
    let mult = match unit {
        "" if n == 0 => 0,
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("expected a number, then s, m, h or d"),
    };
    let secs = n
        .checked_mul(mult)
        .filter(|&v| v <= 100 * 365 * 86_400)
        .with_context(|| "at most 100 years")?;
    Ok(std::time::Duration::from_secs(secs))
}

pub fn push(args: PushArgs) -> Result<ExitCode> {
    if let Some(name) = &args.tag {
        refs::check_name(name)?;
    }
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
    if let Some(name) = &args.tag {
        let u = refs::update(&*store, name, &stats.root, Expect::Any, "push")
            .with_context(|| format!("pushed, but the ref {name} was not moved"))?;
        eprintln!("{}", moved(&u));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn pull(args: PullArgs) -> Result<ExitCode> {
    let (url, store, root) = store::resolve(&args.from)?;
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

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  cowvfs tag s3://fleet/images base 5f3a...e1      set (or create) the ref base
  cowvfs tag s3://fleet/images prod staging        prod := what staging names now
  cowvfs tag s3://fleet/images base --back         roll base back one update
  cowvfs tag s3://fleet/images base --back 3       ... or to the root it held 3 updates ago
  cowvfs tags s3://fleet/images base               the history --back counts in

Every update is a compare-and-swap: if another writer moves the ref between \
this command's read and its write, it fails (nothing written) and can simply \
be run again. A rollback is an update too, so it can itself be rolled back.")]
pub struct TagArgs {
    /// Store: s3://bucket/prefix, file:///dir or a directory.
    url: String,
    /// The ref: letters, digits, '.', '_' and '-', at most 128 bytes.
    name: String,
    /// The tree to name: a 64-digit root hash (what `cowvfs push`
    /// prints) or another ref of the store (its current root).
    #[arg(required_unless_present = "back", conflicts_with = "back")]
    root: Option<String>,
    /// Roll back instead: set NAME to the root it held N updates ago (1,
    /// the default, is the one before now), as `cowvfs tags STORE NAME`
    /// numbers them.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1")]
    back: Option<usize>,
    /// Only if NAME is at this root now (`none`: only if NAME is new).
    #[arg(long, value_name = "OLDROOT")]
    expect: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagsArgs {
    /// Store: s3://bucket/prefix, file:///dir or a directory.
    url: String,
    /// Show this ref's history (newest first, numbered for
    /// `cowvfs tag STORE NAME --back N`) instead of every ref.
    name: Option<String>,
}

pub fn tag(args: TagArgs) -> Result<ExitCode> {
    refs::check_name(&args.name)?;
    let expect = match args.expect.as_deref() {
        None => Expect::Any,
        Some("none") => Expect::Absent,
        Some(hex) => match TreeName::parse(hex)? {
            TreeName::Root(h) => Expect::Root(h),
            TreeName::Ref(_) => bail!("--expect {hex}: expected a 64-digit root hash or `none`"),
        },
    };
    let store = store::open_store(&args.url, false)?;
    let updated = match (&args.root, args.back) {
        (Some(root), None) => {
            let root = TreeName::parse(root)?.resolve(&*store)?;
            if store.get_manifest(&root)?.is_none() {
                bail!(
                    "{}: no tree {} in the store (push it first)",
                    args.url,
                    root.to_hex()
                );
            }
            refs::update(&*store, &args.name, &root, expect, "tag")?
        }
        (None, Some(steps)) => refs::roll_back(&*store, &args.name, steps, expect, "rollback")?,
        _ => bail!("give either ROOT or --back"),
    };
    outln!("{}", moved(&updated));
    Ok(ExitCode::SUCCESS)
}

/// `NAME: OLD -> NEW`, or that nothing changed.
fn moved(u: &refs::Updated) -> String {
    let new = u.new.root().to_hex();
    match (u.old, u.changed) {
        (_, false) => format!("{}: already at {new}", u.new.name),
        (Some(old), true) => format!("{}: {} -> {new}", u.new.name, old.to_hex()),
        (None, true) => format!("{}: (new) -> {new}", u.new.name),
    }
}

pub fn tags(args: TagsArgs) -> Result<ExitCode> {
    let store = store::open_store(&args.url, false)?;
    let Some(name) = &args.name else {
        let mut names = store.list_refs()?;
        names.sort();
        if names.is_empty() {
            eprintln!(
                "{}: no refs (`cowvfs tag STORE NAME ROOT` makes one)",
                args.url
            );
        }
        let w = names.iter().map(String::len).max().unwrap_or(0);
        let mut code = ExitCode::SUCCESS;
        for n in &names {
            // A damaged ref is reported, and the others still listed.
            match refs::read_ref(&*store, n) {
                Ok(Some(r)) => {
                    let e = r.current();
                    outln!("{n:<w$}  {}  {:>8}  {}", e.root.to_hex(), ago(e.time), e.by);
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("cowvfs: {n}: {e}");
                    code = ExitCode::FAILURE;
                }
            }
        }
        return Ok(code);
    };
    let Some(r) = refs::read_ref(&*store, name)? else {
        bail!("{}: no ref {name}", args.url);
    };
    outln!("back  {:<64}  {:>8}  {:<5}  by (via)", "root", "set", "seq");
    for (i, e) in r.history.iter().enumerate() {
        outln!(
            "{i:>4}  {}  {:>8}  {:<5}  {} ({})",
            e.root.to_hex(),
            ago(e.time),
            e.seq,
            e.by,
            e.via
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How long ago `t` was, briefly: `42s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(t: std::time::SystemTime) -> String {
    let Ok(d) = t.elapsed() else {
        return "future".to_string();
    };
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
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
