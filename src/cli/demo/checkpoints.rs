//! Step 4: save the base as a full checkpoint and one sandbox as a delta
//! against it, reopen both (lazily and fully verified), then run a
//! three-step guest session and undo two steps by forking an older
//! snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::anyhow;
use cowvfs::wasi::{Guest, Sandbox};
use cowvfs::{Snapshot, Vfs};

use super::base::Base;
use super::report::{dur, kib, mib, mib_rate, row, yes};
use super::sandboxes::check_status;

pub struct Saved {
    /// Root hashes survived the round trips and the rollback matched.
    pub ok: bool,
}

pub fn run(
    base: &Base,
    trees: &[Vfs],
    guest: &Guest,
    out: &mut dyn Write,
) -> anyhow::Result<Saved> {
    let snap = &base.snap;
    writeln!(out, "\n4. Checkpoints and rollback")?;
    let dir = TempDir::new()?;
    let full = dir.path().join("base.ckpt");
    let t = Instant::now();
    snap.save(&full)?;
    let save_time = t.elapsed();
    let full_len = std::fs::metadata(&full)?.len();
    row(
        out,
        "full save",
        format!(
            "{} in {} ({}/s)",
            mib(full_len),
            dur(save_time),
            mib_rate(base.usage.held_bytes, save_time)
        ),
    )?;
    let child = trees
        .get(7)
        .map(|v| v.snapshot())
        .ok_or_else(|| anyhow!("no sandbox #7"))?;
    let delta = dir.path().join("sandbox7.delta");
    let t = Instant::now();
    child.save_delta(snap, &delta)?;
    let delta_time = t.elapsed();
    row(
        out,
        "delta save",
        format!(
            "sandbox #7 against the base: {} in {}",
            kib(std::fs::metadata(&delta)?.len()),
            dur(delta_time)
        ),
    )?;
    let t = Instant::now();
    let reopened = Snapshot::open(&full)?;
    let open_time = t.elapsed();
    let t = Instant::now();
    let loaded = Snapshot::load(&full)?;
    let load_time = t.elapsed();
    let again = Snapshot::open_delta(&delta, &reopened)?;
    let hashes_ok = reopened.root_hash() == snap.root_hash()
        && loaded.root_hash() == snap.root_hash()
        && again.root_hash() == child.root_hash();
    row(
        out,
        "reopen",
        format!(
            "lazy open {}, full verified load {}; root hashes match: {}",
            dur(open_time),
            dur(load_time),
            yes(hashes_ok)
        ),
    )?;
    let note = again.read_file("/app/notes/note.txt")?;
    row(
        out,
        "",
        format!(
            "sandbox #7's note from the delta: {:?}",
            String::from_utf8_lossy(&note).trim_end()
        ),
    )?;
    let rolled_ok = rollback(snap, guest, out)?;
    Ok(Saved {
        ok: hashes_ok && rolled_ok,
    })
}

/// A session of three guest steps, then undo to step 1.
fn rollback(snap: &Snapshot, guest: &Guest, out: &mut dyn Write) -> anyhow::Result<bool> {
    let mut session = snap.fork();
    let mut history = vec![session.snapshot()];
    for step in 1..=3 {
        let mut sb = Sandbox::new(session);
        sb.preopen("/", "/")?.arg(&format!("step {step}"));
        let outcome = sb.run(guest);
        check_status(outcome.status)?;
        session = outcome.vfs;
        history.push(session.snapshot());
    }
    let step1 = &history[1];
    let t = Instant::now();
    let rolled = step1.fork();
    let rollback_time = t.elapsed();
    let ok = rolled.root_hash() == step1.root_hash()
        && rolled.read_file("/app/notes/note.txt")? == b"step 1"
        && session.read_file("/app/notes/note.txt")? == b"step 3";
    row(
        out,
        "rollback",
        format!(
            "3 guest steps, undo to step 1 in {} (fork the older snapshot); matches step 1: {}",
            dur(rollback_time),
            yes(ok)
        ),
    )?;
    Ok(ok)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let p = base.join(format!("cowvfs-demo-{}-{attempt}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("cannot create a temp directory"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
