//! Step 3: every sandbox reads back exactly its own writes, the base is
//! unchanged, and a diff against the base names what one sandbox changed.

use std::io::Write;
use std::time::Instant;

use cowvfs::{ChangeKind, OpenOptions, Vfs};

use super::Config;
use super::base::Base;
use super::report::{dur, row, thousands, yes};
use super::sandboxes::sandbox_name;

pub struct Isolated {
    pub trees: Vec<Vfs>,
    /// Every sandbox saw its own writes and the base did not change.
    pub ok: bool,
}

pub fn run(
    cfg: &Config,
    base: &Base,
    mut trees: Vec<Vfs>,
    out: &mut dyn Write,
) -> anyhow::Result<Isolated> {
    writeln!(out, "\n3. Isolation")?;
    let mut own = 0;
    for (i, v) in trees.iter_mut().enumerate() {
        let note = v.read_file("/app/notes/note.txt")?;
        let want = sandbox_name(i);
        let mut blob = vec![0u8; want.len()];
        let fd = v.open("/app/data/blob.bin", OpenOptions::new().read(true))?;
        let n = v.read_at(fd, &mut blob, 1_000_000)?;
        v.close(fd)?;
        if note == want.as_bytes() && blob[..n] == *want.as_bytes() {
            own += 1;
        }
    }
    row(
        out,
        "own writes",
        format!(
            "{own} of {} sandboxes read back exactly their own note and blob bytes",
            cfg.sandboxes
        ),
    )?;
    let snap = &base.snap;
    let base_ok = snap.read_file("/app/notes/note.txt")? == b"base\n"
        && snap.root_hash() == base.vfs.root_hash();
    row(
        out,
        "base",
        format!("unchanged after all runs: {}", yes(base_ok)),
    )?;
    if let Some(v) = trees.get(7) {
        let t = Instant::now();
        let changes = snap.diff(&v.snapshot());
        let diff_time = t.elapsed();
        row(
            out,
            "diff of #7",
            format!(
                "{} change(s) in {} (the tree has {} inodes)",
                changes.len(),
                dur(diff_time),
                thousands(base.usage.inodes)
            ),
        )?;
        for c in &changes {
            let what = match c.kind() {
                ChangeKind::Added => "added",
                ChangeKind::Removed => "removed",
                ChangeKind::Modified => "modified",
            };
            row(out, "", format!("{what:<9}{}", c.path()))?;
        }
    }
    Ok(Isolated {
        trees,
        ok: own == cfg.sandboxes && base_ok,
    })
}
