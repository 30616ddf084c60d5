//! `cowvfs demo`: the whole story in one run, with numbers measured as it
//! goes, in four numbered steps (one file each):
//!
//! 1. [`base`]: build a base image and snapshot it;
//! 2. [`sandboxes`]: fork a thousand sandboxes that each run a WebAssembly
//!    guest;
//! 3. [`isolation`]: show that each kept its own writes, and a diff;
//! 4. [`checkpoints`]: save and reopen checkpoints, roll a session back.
//!
//! Every step checks what it shows; a failed check fails the command.

mod base;
mod checkpoints;
mod isolation;
mod report;
mod sandboxes;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use report::dur;

/// The guest every sandbox runs, as a preview1 module in WAT.
pub const GUEST_WAT: &str = include_str!("guest.wat");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Sandboxes to fork and run the guest in.
    #[arg(long, default_value_t = 1000)]
    sandboxes: usize,
    /// Small files in the base image.
    #[arg(long, default_value_t = 5000)]
    files: usize,
    /// Size of the base image's large file, in MiB.
    #[arg(long, default_value_t = 256)]
    big_mib: usize,
}

/// Sizes of one demo run.
#[derive(Clone, Copy, Debug)]
struct Config {
    files: usize,
    big_file: usize,
    sandboxes: usize,
}

pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.sandboxes < 8 {
        bail!("--sandboxes must be at least 8 (the demo diffs sandbox #7)");
    }
    if args.big_mib < 1 || args.big_mib > 4096 {
        bail!("--big-mib must be between 1 and 4096");
    }
    let cfg = Config {
        files: args.files,
        big_file: args.big_mib << 20,
        sandboxes: args.sandboxes,
    };
    let mut out = std::io::stdout().lock();
    run(cfg, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's base image (`files` small files under /app and a `big_mib`
/// MiB data file), frozen: what `cowvfs serve --demo` serves.
pub fn base_image(files: usize, big_mib: usize) -> anyhow::Result<cowvfs::Snapshot> {
    let cfg = Config {
        files,
        big_file: big_mib << 20,
        sandboxes: 0,
    };
    Ok(base::build(&cfg)?.snapshot())
}

fn run(cfg: Config, out: &mut dyn Write) -> anyhow::Result<()> {
    let started = Instant::now();
    writeln!(
        out,
        "cowvfs demo: copy-on-write filesystems for WebAssembly sandboxes\n"
    )?;
    let base = base::run(&cfg, out)?;
    let ran = sandboxes::run(&cfg, &base, out)?;
    let isolated = isolation::run(&cfg, &base, ran.trees, out)?;
    let saved = checkpoints::run(&base, &isolated.trees, &ran.guest, out)?;
    writeln!(out, "\ndone in {}", dur(started.elapsed()))?;
    if !isolated.ok || !saved.ok {
        bail!("the demo's checks failed (see above)");
    }
    Ok(())
}
