//! `cowvfs checkpoint ...`: make, inspect and unpack checkpoint files.
//! Every command is a few calls into `cowvfs::checkpoint` and
//! `cowvfs::hostdir`; outputs are written atomically by the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use cowvfs::checkpoint::{self, SaveOptions};
use cowvfs::{ConflictPolicy, FileType, Limits, MergeOptions, Metadata, Snapshot, Vfs, hostdir};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Read a host directory (files, directories, symlinks, hard links,
    /// permissions, times) into a checkpoint. With --parent, OUT is a delta
    /// against the first --parent (pass that one's own parents after it).
    Import {
        /// Host directory to read (never modified).
        dir: PathBuf,
        /// Checkpoint to write (atomically).
        out: PathBuf,
        #[command(flatten)]
        parents: Parents,
        /// zstd-compress chunks that shrink.
        #[arg(long)]
        compress: bool,
    },
    /// Recreate a checkpoint's tree on the host. DIR must not exist or be
    /// an empty directory.
    Export {
        ck: PathBuf,
        dir: PathBuf,
        #[command(flatten)]
        parents: Parents,
        /// Keep setuid, setgid and sticky bits (dropped by default).
        #[arg(long)]
        keep_special_bits: bool,
    },
    /// Print format version, hashes, counts and sizes (reads metadata only).
    Info { ck: PathBuf },
    /// List a directory of a checkpoint.
    Ls {
        ck: PathBuf,
        /// Path inside the checkpoint.
        #[arg(default_value = "/")]
        path: String,
        /// Long format: mode, links, size, modification time.
        #[arg(short = 'l')]
        long: bool,
        #[command(flatten)]
        parents: Parents,
    },
    /// Write a file from a checkpoint to stdout.
    Cat {
        ck: PathBuf,
        path: String,
        #[command(flatten)]
        parents: Parents,
    },
    /// Paths added (+), removed (-) or modified (M) from A to B.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[command(flatten)]
        parents: Parents,
    },
    /// Three-way merge: what OURS and THEIRS changed since BASE (both
    /// checkpoints of forks of BASE) into OUT. Prints each conflict on
    /// stdout; under the default `--conflicts fail` a conflict writes
    /// nothing and exits with status 1.
    Merge {
        base: PathBuf,
        ours: PathBuf,
        theirs: PathBuf,
        /// Checkpoint to write (atomically).
        out: PathBuf,
        #[command(flatten)]
        parents: Parents,
        /// What a conflict does: fail, ours, theirs or keep-both (theirs'
        /// version beside ours' as NAME.theirs).
        #[arg(long, value_name = "POLICY", default_value = "fail", value_parser = parse_policy)]
        conflicts: ConflictPolicy,
        /// Write OUT as a delta against BASE.
        #[arg(long)]
        delta: bool,
        /// zstd-compress chunks that shrink.
        #[arg(long)]
        compress: bool,
    },
    /// Read everything and check every hash and invariant.
    Verify {
        ck: PathBuf,
        #[command(flatten)]
        parents: Parents,
    },
}

#[derive(Args, Debug)]
struct Parents {
    /// Parent checkpoint of a delta (repeat for a chain, in any order).
    #[arg(long = "parent", value_name = "P")]
    parent: Vec<PathBuf>,
}

pub fn main(args: CheckpointArgs) -> Result<ExitCode> {
    match run(args) {
        // `cowvfs checkpoint ls CK | head` is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        r => r,
    }
}

fn run(args: CheckpointArgs) -> Result<ExitCode> {
    match args.cmd {
        Cmd::Import {
            dir,
            out,
            parents,
            compress,
        } => import(dir, out, &parents.parent, compress),
        Cmd::Export {
            ck,
            dir,
            parents,
            keep_special_bits,
        } => {
            let snap = load(&ck, &parents.parent)?;
            let bar = Progress::spinner("exporting");
            let opts = hostdir::ExportOptions { keep_special_bits };
            let stats =
                hostdir::export_dir_opts(&snap, "/", &dir, opts, &mut |s| bar.set(s.bytes, None))
                    .with_context(|| format!("exporting to {}", dir.display()))?;
            bar.done();
            eprintln!(
                "{} files, {} directories, {} symlinks, {} hard links, {} bytes",
                stats.files, stats.dirs, stats.symlinks, stats.hard_links, stats.bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Info { ck } => info(&ck),
        Cmd::Ls {
            ck,
            path,
            long,
            parents,
        } => ls(&open(&ck, &parents.parent)?, &path, long),
        Cmd::Cat { ck, path, parents } => {
            let snap = open(&ck, &parents.parent)?;
            // Read it all first: a bad chunk then leaves no partial output.
            let data = snap.read_file(&path)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data).and_then(|_| out.flush())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Diff { a, b, parents } => {
            let (sa, sb) = (open(&a, &parents.parent)?, open(&b, &parents.parent)?);
            let mut out = std::io::stdout().lock();
            super::run::print_diff(&sa, &sb, u64::MAX, &mut out)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Merge {
            base,
            ours,
            theirs,
            out,
            parents,
            conflicts,
            delta,
            compress,
        } => merge(
            [&base, &ours, &theirs],
            &out,
            &parents.parent,
            conflicts,
            delta,
            compress,
        ),
        Cmd::Verify { ck, parents } => {
            let bar = Progress::spinner("verifying");
            let h = checkpoint::verify(&ck, &parents.parent)?;
            bar.done();
            outln!("ok {}", h.root_hash.to_hex());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A full, verified load of a checkpoint and its parents.
fn load(ck: &PathBuf, parents: &[PathBuf]) -> Result<Snapshot> {
    let bar = Progress::spinner("loading");
    let snap = checkpoint::load_chain(ck, parents)?;
    bar.done();
    Ok(snap)
}

/// A lazy open: metadata now, chunks when read.
fn open(ck: &PathBuf, parents: &[PathBuf]) -> Result<Snapshot> {
    Ok(checkpoint::open_chain(ck, parents)?)
}

fn import(dir: PathBuf, out: PathBuf, parents: &[PathBuf], compress: bool) -> Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let parent = match parents.split_first() {
        Some((first, rest)) => Some(
            checkpoint::open_chain(first, rest)
                .with_context(|| format!("opening parent {}", first.display()))?,
        ),
        None => None,
    };
    let bar = Progress::spinner("importing");
    let (vfs, stats) = match &parent {
        // Syncing into a fork of the parent keeps unchanged inodes shared,
        // so the delta holds only what changed.
        Some(p) => {
            let mut vfs = p.fork_with_limits(Limits::unlimited());
            let stats =
                hostdir::sync_dir_with(&mut vfs, &dir, "/", &mut |s| bar.set(s.bytes, None))?;
            (vfs, stats)
        }
        None => {
            let mut vfs = Vfs::with_limits(Limits::unlimited());
            let stats =
                hostdir::import_dir_with(&mut vfs, &dir, "/", &mut |s| bar.set(s.bytes, None))?;
            (vfs, stats)
        }
    };
    bar.done();
    let snap = vfs.snapshot();
    let bar = Progress::bytes("saving");
    let saved = snap.save_with(
        &out,
        SaveOptions {
            parent: parent.as_ref(),
            compress,
            progress: Some(&mut |done, total| bar.set(done, Some(total))),
            ..SaveOptions::default()
        },
    )?;
    bar.done();
    eprintln!(
        "{} files, {} directories, {} symlinks, {} hard links, {} bytes -> {} ({} bytes, {} chunks stored){}",
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.hard_links,
        stats.bytes,
        out.display(),
        saved.file_len,
        saved.chunks,
        if parent.is_some() { ", delta" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_policy(s: &str) -> std::result::Result<ConflictPolicy, String> {
    match s {
        "fail" => Ok(ConflictPolicy::Fail),
        "ours" => Ok(ConflictPolicy::Ours),
        "theirs" => Ok(ConflictPolicy::Theirs),
        "keep-both" => Ok(ConflictPolicy::KeepBoth),
        _ => Err(format!(
            "unknown policy {s:?} (fail, ours, theirs or keep-both)"
        )),
    }
}

fn merge(
    [base, ours, theirs]: [&PathBuf; 3],
    out: &PathBuf,
    parents: &[PathBuf],
    policy: ConflictPolicy,
    delta: bool,
    compress: bool,
) -> Result<ExitCode> {
    let open_one = |ck: &PathBuf| {
        checkpoint::open_chain(ck, parents).with_context(|| format!("opening {}", ck.display()))
    };
    let (b, o, t) = (open_one(base)?, open_one(ours)?, open_one(theirs)?);
    let merged =
        Snapshot::merge(&b, &o, &t, &MergeOptions::new().policy(policy)).context("merging")?;
    for c in merged.conflicts() {
        outln!("{c}");
    }
    if merged.omitted() > 0 {
        outln!(
            "... and {} more conflict(s), not listed (the report's 16 MiB of paths is spent)",
            merged.omitted()
        );
    }
    let n = merged.conflicts().len() as u64 + merged.omitted();
    let Some(snap) = merged.snapshot() else {
        eprintln!(
            "{n} conflict(s); nothing written (choose --conflicts ours, theirs or keep-both)"
        );
        return Ok(ExitCode::from(1));
    };
    let bar = Progress::bytes("saving");
    let saved = snap.save_with(
        out,
        SaveOptions {
            parent: delta.then_some(&b),
            compress,
            progress: Some(&mut |done, total| bar.set(done, Some(total))),
            ..SaveOptions::default()
        },
    )?;
    bar.done();
    eprintln!(
        "merged with {n} conflict(s) -> {} ({} bytes, {} chunks stored){}",
        out.display(),
        saved.file_len,
        saved.chunks,
        if delta { ", delta" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn info(ck: &PathBuf) -> Result<ExitCode> {
    let i = checkpoint::inspect(ck)?;
    let h = &i.header;
    let scope = if h.is_delta() { " (in this delta)" } else { "" };
    outln!("format version: {}", h.version);
    outln!("root hash:      {}", h.root_hash.to_hex());
    match &h.parent_hash {
        Some(p) => outln!("parent hash:    {}", p.to_hex()),
        None => outln!("parent hash:    none (full checkpoint)"),
    }
    outln!(
        "compressed:     {}",
        if h.compressed { "zstd" } else { "no" }
    );
    outln!("files:          {}{scope}", i.files);
    outln!("directories:    {}{scope}", i.dirs);
    outln!("symlinks:       {}{scope}", i.symlinks);
    if h.is_delta() {
        outln!("removed:        {}", i.removed);
    }
    outln!("logical bytes:  {}{scope}", i.logical_bytes);
    outln!("unique bytes:   {} in {} chunks", i.unique_bytes, i.chunks);
    outln!("stored bytes:   {}", i.stored_bytes);
    outln!("file size:      {}", i.file_len);
    Ok(ExitCode::SUCCESS)
}

fn ls(snap: &Snapshot, path: &str, long: bool) -> Result<ExitCode> {
    let meta = snap.symlink_metadata(path)?;
    let mut rows: Vec<(String, String)> = Vec::new();
    if meta.is_dir() {
        for e in snap.read_dir(path)? {
            let p = if path.ends_with('/') {
                format!("{path}{}", e.name)
            } else {
                format!("{path}/{}", e.name)
            };
            rows.push((e.name.into(), p));
        }
    } else {
        rows.push((path.to_string(), path.to_string()));
    }
    let mut out = std::io::stdout().lock();
    for (name, p) in rows {
        if !long {
            writeln!(out, "{name}")?;
            continue;
        }
        let m = snap.symlink_metadata(&p)?;
        let target = if m.is_symlink() {
            format!(" -> {}", snap.read_link(&p)?)
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} {:>3} {:>12} {} {name}{target}",
            mode_string(&m),
            m.nlink,
            m.len,
            time_string(m.mtime.secs)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn mode_string(m: &Metadata) -> String {
    let mut s = String::with_capacity(10);
    s.push(match m.kind {
        FileType::Dir => 'd',
        FileType::Symlink => 'l',
        FileType::File => '-',
    });
    let bits = m.mode;
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let b = (bits >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(match (b & 1 != 0, bits & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// UTC time as `YYYY-MM-DD HH:MM`, without a date library.
fn time_string(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = cowvfs::civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A progress bar on stderr that appears only once work has taken over a
/// second, and never when stderr is not a terminal (indicatif hides it).
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn spinner(what: &'static str) -> Progress {
        let style = ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        // Revealed after a second, also while the library call that
        // reports no progress (a load, a verify) is still running.
        Progress {
            bar: super::late_bar(style, what),
        }
    }

    fn bytes(what: &'static str) -> Progress {
        let p = Progress::spinner(what);
        p.bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        p
    }

    fn set(&self, pos: u64, len: Option<u64>) {
        if let Some(l) = len {
            self.bar.set_length(l);
        }
        self.bar.set_position(pos);
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    /// An error path leaves no half-drawn bar above the error line.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
