//! Argument parsing and dispatch. Each subcommand lives in its own module
//! and calls into the library; no logic lives only here.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// `println!` that reports a closed stdout as an error (which `main` turns
/// into a quiet exit) instead of panicking, so `cowvfs ... | head` is fine.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// A progress bar on stderr in `style` that stays hidden until the work
/// has taken over a second (also while a library call that reports no
/// progress is still running), and is never drawn when stderr is not a
/// terminal (indicatif hides it).
fn late_bar(style: indicatif::ProgressStyle, what: &'static str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget};
    use std::time::Duration;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(style);
    bar.set_message(what);
    let late = bar.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        if !late.is_finished() {
            late.set_draw_target(ProgressDrawTarget::stderr());
            late.enable_steady_tick(Duration::from_millis(100));
        }
    });
    bar
}

mod checkpoint;
#[cfg(feature = "wasi")]
mod demo;
#[cfg(feature = "wasi")]
mod run;
#[cfg(feature = "serve")]
mod serve;
mod store;

/// Copy-on-write, snapshotting virtual filesystems for WebAssembly sandboxes.
#[derive(Parser, Debug)]
#[command(name = "cowvfs", version, about, long_about = None)]
pub struct Cli {
    /// Log what cowvfs does (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version.
    Version,
    /// Make, inspect, verify and unpack checkpoint files.
    #[command(subcommand_required = true)]
    Checkpoint(checkpoint::CheckpointArgs),
    /// Run a WebAssembly guest against an in-memory copy-on-write tree.
    #[cfg(feature = "wasi")]
    Run(Box<run::RunArgs>),
    /// Upload a checkpoint to a fleet blob store (only the chunks it lacks);
    /// prints STORE/ROOT for `pull` and `run --from`.
    Push(store::PushArgs),
    /// Download STORE/ROOT (or STORE/NAME, a ref) from a fleet blob store
    /// into a checkpoint file.
    Pull(store::PullArgs),
    /// Point the ref NAME of a store at a tree, or roll it back with
    /// --back; a compare-and-swap, so racing writers never lose an update.
    Tag(store::TagArgs),
    /// List a store's refs with their roots, or one ref's history.
    Tags(store::TagsArgs),
    /// Shrink the host's chunk cache (which `pull` and `run --from s3://`
    /// fill) to its size limit, dropping the least recently used chunks.
    PruneCache(store::PruneCacheArgs),
    /// Pack the loose chunks of a store written before packs (one object
    /// per chunk) into pack objects, then remove them.
    MigrateStore(store::MigrateArgs),
    /// Collect garbage in a store: keep every tree a ref reaches (with its
    /// history), every tree younger than --grace and every --keep root;
    /// condemn the rest, deleting it in a run at least --grace later.
    Gc(store::GcArgs),
    /// Show what cowvfs does, with numbers measured on this machine: fork
    /// 1,000 sandboxes from a base image, run a guest in each, diff,
    /// checkpoint and roll back. Needs no files.
    #[cfg(feature = "wasi")]
    Demo(demo::DemoArgs),
    /// Serve sandboxes over HTTP: each `POST /v1/run` forks a snapshot and
    /// runs a module in the fork (see `GET /v1/openapi.json`).
    #[cfg(feature = "serve")]
    Serve(Box<serve::ServeArgs>),
}

pub fn main() -> ExitCode {
    // Parsed through the matches, which `run` also reads for the order of
    // its preopen flags.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    #[cfg(feature = "wasi")]
    if let (Command::Run(args), Some(m)) = (&mut cli.command, matches.subcommand_matches("run")) {
        args.record_order(m);
    }
    #[cfg(not(feature = "wasi"))]
    let _ = (&mut cli, &matches);
    #[cfg(feature = "serve")]
    let serving = matches!(cli.command, Command::Serve(_));
    #[cfg(not(feature = "serve"))]
    let serving = false;
    init_tracing(cli.verbose, serving);
    let result: anyhow::Result<ExitCode> = match cli.command {
        #[cfg(feature = "wasi")]
        Command::Run(args) => run::main(*args),
        #[cfg(feature = "wasi")]
        Command::Demo(args) => demo::main(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::main(*args),
        Command::Checkpoint(args) => checkpoint::main(args),
        Command::Push(args) => store::push(args),
        Command::Pull(args) => store::pull(args),
        Command::Tag(args) => store::tag(args),
        Command::Tags(args) => store::tags(args),
        Command::PruneCache(args) => store::prune_cache(args),
        Command::MigrateStore(args) => store::migrate(args),
        Command::Gc(args) => store::gc(args),
        Command::Version => {
            println!("cowvfs {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        // `cowvfs ... | head`: the reader left; that is not our failure.
        Err(e) if stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cowvfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs to stderr as `-v` or RUST_LOG ask; a server logs its own start,
/// stop and failures (`cowvfs::serve=info`, warnings elsewhere) even
/// without either.
fn init_tracing(verbose: u8, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => match EnvFilter::try_from_default_env() {
            Ok(f) => f,
            Err(_) if serving => EnvFilter::new("warn,cowvfs::serve=info"),
            Err(_) => return,
        },
        1 => EnvFilter::new("cowvfs=info"),
        2 => EnvFilter::new("cowvfs=debug"),
        _ => EnvFilter::new("cowvfs=trace"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
