//! One run, on a blocking thread: fork the base, run the guest in the
//! fork with its arguments, environment, stdin and limits, then gather
//! what the request asked for (diff, files, a saved snapshot).

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::wasi::{LimitHit, RunLimits, RunOutcome, p1};
use crate::{ChangeKind, Limits, Snapshot};

use super::error::{ApiError, Code};
use super::modules::{Compiled, Module};
use super::snapshots::{NewSnapshot, Registry};

/// Everything a run needs, checked.
pub struct Job {
    /// The snapshot to fork, and its root.
    pub base: (blake3::Hash, Snapshot),
    /// The guest.
    pub module: std::sync::Arc<Module>,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The guest's whole environment.
    pub env: Vec<(String, String)>,
    /// The guest's stdin.
    pub stdin: Vec<u8>,
    /// Wall-clock deadline of the run.
    pub timeout: Duration,
    /// Cap of each linear memory.
    pub max_memory: usize,
    /// Bytes of stdout and of stderr kept.
    pub max_output: usize,
    /// Bytes of new data the fork may hold (its private-byte quota).
    pub fs_bytes: u64,
    /// Files, directories and symlinks the fork may add.
    pub fs_inodes: u64,
    /// What the diff may list, if it was asked for.
    pub diff: Option<DiffCap>,
    /// Files to return, and the most bytes all of them may take.
    pub read: Vec<String>,
    /// Bytes `read` may return in all.
    pub read_budget: u64,
    /// `Some(name)` to save the fork (`Some(None)`: without a name).
    pub save: Option<Option<String>>,
}

/// What a run produced, for the response.
#[derive(Debug)]
pub struct Done {
    /// The guest's exit code: 124 past the deadline, 134 for a trap.
    pub exit_code: i32,
    /// Captured output, cut at the cap.
    pub stdout: Vec<u8>,
    /// Captured error output, cut at the cap.
    pub stderr: Vec<u8>,
    /// Whether either was cut.
    pub truncated: bool,
    /// The limit or trap that ended the run, if any.
    pub error: Option<ApiError>,
    /// Changes against the base, and whether the list was cut.
    pub diff: Option<(Vec<(String, ChangeKind)>, bool)>,
    /// Asked files: base64 of their bytes, or `None` if missing or over
    /// the budget.
    pub files: Option<Vec<(String, Option<String>)>>,
    /// The saved snapshot's root, and its name.
    pub snapshot: Option<(blake3::Hash, Option<String>)>,
    /// Why the save failed, if it did.
    pub save_error: Option<ApiError>,
    /// The fork's usage at the end.
    pub usage: crate::Usage,
    /// How long the guest ran (instantiation included).
    pub run: Duration,
}

/// The limits of a fork of `base` that may add `bytes` of data and
/// `inodes` inodes.
fn fork_limits(base: &Snapshot, bytes: u64, inodes: u64) -> Limits {
    let used = base.usage();
    Limits {
        max_private_bytes: bytes,
        max_bytes: used.charged_bytes.saturating_add(bytes),
        max_inodes: used.inodes.saturating_add(inodes),
        ..base.limits().clone()
    }
}

/// Sets up either kind of sandbox the same way: the tree at `/`, args,
/// environment, stdin, output capture and limits.
macro_rules! configure {
    ($sb:ident, $job:ident, $stdin:expr, $timeout:expr) => {{
        $sb.preopen("/", "/")
            .map_err(|e| ApiError::internal(format!("cannot preopen /: {e}")))?;
        for a in &$job.args {
            $sb.arg(a);
        }
        for (k, v) in &$job.env {
            $sb.env(k, v);
        }
        $sb.stdin_bytes($stdin);
        // One byte over the cap tells a cut from an exact fit.
        $sb.capture_output_limited($job.max_output.saturating_add(1));
        $sb.limits(RunLimits {
            timeout: Some($timeout),
            fuel: None,
            max_memory: Some($job.max_memory),
        });
    }};
}

/// How long a guest may run on the thread that took its request (see
/// [`run_inline`]): a trivial guest takes a tenth of this; past it the
/// guest is stopped at the next epoch tick (every 10 ms) and started
/// over on a blocking thread.
pub const INLINE_SLICE: Duration = Duration::from_millis(5);

/// Forks the base and runs the guest in the fork with `timeout`, giving
/// it `stdin`. Returns the outcome and how long the run took.
fn run_guest(
    job: &Job,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<(RunOutcome, Duration), ApiError> {
    let base = &job.base.1;
    let vfs = base.fork_with_limits(fork_limits(base, job.fs_bytes, job.fs_inodes));
    let started = Instant::now();
    let outcome: RunOutcome = match &job.module.compiled {
        Compiled::Core(guest) => {
            let mut sb = p1::Sandbox::new(vfs);
            configure!(sb, job, stdin, timeout);
            sb.run(guest)
        }
        Compiled::Component(guest) => {
            let mut sb = crate::wasi::Sandbox::new(vfs);
            configure!(sb, job, stdin, timeout);
            sb.run(guest)
        }
    };
    Ok((outcome, started.elapsed()))
}

/// Runs `job` in full; saves into `registry` if asked. Blocking: for a
/// blocking thread.
pub fn execute(mut job: Job, registry: &Registry) -> Result<Done, ApiError> {
    let stdin = std::mem::take(&mut job.stdin);
    let (outcome, run) = run_guest(&job, stdin, job.timeout)?;
    Ok(finish(&mut job, outcome, run, registry))
}

/// What [`run_inline`] did.
pub enum Inline {
    /// The run ended within the slice.
    Done(Box<Done>),
    /// The run went past the slice: run it in full on a blocking thread.
    Restart,
    /// Its module went past the slice before: not tried here.
    Skipped,
}

/// Runs `job` on the calling (async) thread for at most [`INLINE_SLICE`],
/// which saves handing it to a blocking thread and back: on two cores
/// those two thread switches cost more than a trivial guest's run. A
/// guest done within the slice is answered from here ([`Inline::Done`]);
/// one that is not is stopped, its fork and output thrown away, and
/// [`Inline::Restart`] says to run it again in full with [`execute`] on a
/// blocking thread. A
/// guest sees no difference but time: its only effects are in its own
/// fork and output, and the job (stdin included) is unchanged. So a guest
/// that loops holds this thread for one slice and an epoch tick at most,
/// and its deadline still counts in full on the blocking thread; and
/// its module is marked slow, so that later runs of it skip the slice
/// (a module that loops stalls an async thread once, not on every run).
///
/// Only for jobs whose snapshots are all in memory: a base opened lazily
/// from a store may fetch from it during the run, and a save with a store
/// pushes to it (see `run.rs`).
pub fn run_inline(job: &mut Job, registry: &Registry) -> Result<Inline, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    if job.module.slow.load(Relaxed) {
        return Ok(Inline::Skipped);
    }
    let whole = job.timeout <= INLINE_SLICE;
    let (stdin, timeout) = if whole {
        (std::mem::take(&mut job.stdin), job.timeout)
    } else {
        (job.stdin.clone(), INLINE_SLICE)
    };
    let (outcome, run) = run_guest(job, stdin, timeout)?;
    if !whole && outcome.limit == Some(LimitHit::Deadline) {
        job.module.slow.store(true, Relaxed);
        return Ok(Inline::Restart);
    }
    Ok(Inline::Done(Box::new(finish(job, outcome, run, registry))))
}

/// What a finished run gives: the exit code and error, the output cut to
/// its cap, and the diff, files and save asked for.
fn finish(job: &mut Job, outcome: RunOutcome, run: Duration, registry: &Registry) -> Done {
    let (base_root, base) = (job.base.0, &job.base.1);
    let RunOutcome {
        status,
        vfs,
        mut stdout,
        mut stderr,
        limit,
    } = outcome;
    let truncated = stdout.len() > job.max_output || stderr.len() > job.max_output;
    stdout.truncate(job.max_output);
    stderr.truncate(job.max_output);
    let (exit_code, error) = match (limit, status) {
        (Some(LimitHit::Deadline), _) => (
            124,
            Some(ApiError::new(
                Code::DeadlineExceeded,
                format!(
                    "the guest ran past its timeout of {} ms and was stopped",
                    job.timeout.as_millis()
                ),
            )),
        ),
        (hit, Ok(code)) => (code, memory_error(hit, job.max_memory)),
        (hit, Err(trap)) => (
            134,
            Some(memory_error(hit, job.max_memory).unwrap_or_else(|| {
                ApiError::new(Code::Trapped, format!("the guest trapped: {trap:#}"))
            })),
        ),
    };
    let usage = vfs.usage();
    let snap = vfs.snapshot();
    let diff = job.diff.map(|cap| changes(base, &snap, cap));
    let files = (!job.read.is_empty()).then(|| read_files(&snap, &job.read, job.read_budget));
    let (mut snapshot, mut save_error) = (None, None);
    if let Some(name) = job.save.take() {
        let saved = registry.insert(NewSnapshot {
            cost: super::charge::saved_cost(base, &snap, &usage),
            snap,
            name: name.clone(),
            parent: Some(base_root),
            in_store: false,
        });
        match saved {
            Ok(root) => snapshot = Some((root, name)),
            Err(e) => save_error = Some(e),
        }
    }
    Done {
        exit_code,
        stdout,
        stderr,
        truncated,
        error,
        diff,
        files,
        snapshot,
        save_error,
        usage,
        run,
    }
}

fn memory_error(hit: Option<LimitHit>, max: usize) -> Option<ApiError> {
    (hit == Some(LimitHit::Memory)).then(|| {
        ApiError::new(
            Code::LimitExceeded,
            format!("the guest asked for more memory than its cap of {max} bytes"),
        )
    })
}

/// How much a diff lists: at most `entries` changes, whose paths take at
/// most `bytes` in all. The byte cap matters because a path is bounded
/// only per call, not per tree: a guest can nest directories far deeper
/// than any one path it passes (by renames, or beneath descriptors), and
/// the paths of a chain `d` deep take about `d²/2` times a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffCap {
    /// Changes listed at most.
    pub entries: usize,
    /// Bytes of all listed paths together at most.
    pub bytes: usize,
}

/// The changes from `base` to `new` within `cap` (streamed, so a huge
/// change costs no more than the cap), and whether there were more.
pub fn changes(base: &Snapshot, new: &Snapshot, cap: DiffCap) -> (Vec<(String, ChangeKind)>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    let _ = base.diff_each(new, |kind, path| {
        let within = bytes
            .checked_add(path.len())
            .filter(|&b| b <= cap.bytes && out.len() < cap.entries);
        let Some(b) = within else {
            more = true;
            return std::ops::ControlFlow::Break(());
        };
        bytes = b;
        out.push((path.to_string(), kind));
        std::ops::ControlFlow::Continue(())
    });
    (out, more)
}

/// The name a change kind has in JSON.
pub fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "added",
        ChangeKind::Removed => "removed",
        ChangeKind::Modified => "modified",
    }
}

/// Reads each of `paths` (base64), `None` for a path that is not a
/// readable file or would go over what is left of `budget`.
fn read_files(snap: &Snapshot, paths: &[String], budget: u64) -> Vec<(String, Option<String>)> {
    let mut left = budget;
    paths
        .iter()
        .map(|p| {
            let data = snap
                .metadata(p)
                .ok()
                .filter(|m| m.is_file() && m.len <= left)
                .and_then(|_| snap.read_file(p).ok())
                .map(|d| {
                    left = left.saturating_sub(d.len() as u64);
                    base64::engine::general_purpose::STANDARD.encode(d)
                });
            (p.clone(), data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{DiffCap, changes};
    use crate::Vfs;

    /// A chain of directories `depth` deep with `name_len`-byte names,
    /// made by renames (so no path passed is longer than one name and a
    /// slash), as a guest can make it.
    fn deep_chain(depth: usize, name_len: usize) -> Vfs {
        let mut v = Vfs::new();
        v.create_dir("/c").unwrap();
        let long = "a".repeat(name_len);
        for _ in 0..depth {
            v.create_dir("/t").unwrap();
            v.rename("/c", &format!("/t/{long}")).unwrap();
            v.rename("/t", "/c").unwrap();
        }
        v
    }

    #[test]
    fn a_deep_chain_lists_within_the_byte_cap() {
        let base = Vfs::new().snapshot();
        let v = deep_chain(300, 200);
        let new = v.snapshot();
        // Uncapped, the paths would take about 300² / 2 × 201 = 9 MB.
        let mut all = 0usize;
        let _ = base.diff_each(&new, |_, p| {
            all += p.len();
            std::ops::ControlFlow::Continue(())
        });
        assert!(all > 8 << 20, "{all}");
        let cap = DiffCap {
            entries: 10_000,
            bytes: 1 << 20,
        };
        let (list, more) = changes(&base, &new, cap);
        let listed: usize = list.iter().map(|(p, _)| p.len()).sum();
        assert!(more);
        assert!(listed <= cap.bytes, "{listed}");
        // It stops at the first path that does not fit, not earlier.
        assert!(listed > cap.bytes - 300 * 201, "{listed}");
        // Within both caps, everything is listed.
        let wide = DiffCap {
            entries: 10_000,
            bytes: 16 << 20,
        };
        let (list, more) = changes(&base, &new, wide);
        assert_eq!((list.len(), more), (301, false));
        let narrow = DiffCap {
            entries: 5,
            bytes: 16 << 20,
        };
        let (list, more) = changes(&base, &new, narrow);
        assert_eq!((list.len(), more), (5, true));
    }
}
