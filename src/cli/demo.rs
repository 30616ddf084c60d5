//! `cowvfs demo`: see `cowvfs::demo`.

use std::process::ExitCode;

use clap::Args;
use cowvfs::demo::{DemoConfig, run};

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

pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.sandboxes < 8 {
        anyhow::bail!("--sandboxes must be at least 8 (the demo diffs sandbox #7)");
    }
    if args.big_mib < 1 || args.big_mib > 4096 {
        anyhow::bail!("--big-mib must be between 1 and 4096");
    }
    let cfg = DemoConfig {
        files: args.files,
        big_file: args.big_mib << 20,
        sandboxes: args.sandboxes,
    };
    let mut out = std::io::stdout().lock();
    run(cfg, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
