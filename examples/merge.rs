//! Two guests run in parallel, each in its own fork of one base snapshot,
//! and their trees are merged back into one: what each wrote is kept, and
//! where both wrote the same file the conflict is reported and both
//! versions are kept side by side.
//!
//! `cargo run --release --example merge`

mod common;

use std::thread;

use cowvfs::wasi::{Guest, Sandbox};
use cowvfs::{ConflictPolicy, MergeOptions, Snapshot, Vfs};

/// Runs `upper` in a fork of `base` over each `(input, output)` pair, in
/// order; the tree it leaves.
fn attempt(base: &Snapshot, guest: &Guest, jobs: &[(&str, &str)]) -> Result<Snapshot, String> {
    let mut tree = base.fork();
    for (input, output) in jobs {
        let mut sb = Sandbox::new(tree);
        sb.preopen("/", "/").map_err(|e| e.to_string())?;
        for a in ["3", *input, "3", *output] {
            sb.arg(a);
        }
        let out = sb.run(guest);
        match out.status {
            Ok(0) => tree = out.vfs,
            other => return Err(format!("upper {input} -> {output}: {other:?}")),
        }
    }
    Ok(tree.snapshot())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut v = Vfs::new();
    v.create_dir_all("/in")?;
    v.create_dir_all("/out")?;
    v.write_file("/in/one.txt", b"first input\n")?;
    v.write_file("/in/two.txt", b"second input\n")?;
    v.write_file("/in/notes.txt", b"shared notes\n")?;
    let base = v.snapshot();
    let engine = wasmtime::Engine::default();
    let guest = common::upper_guest(&engine)?;

    // Two attempts from the same base, at the same time. Both also write
    // /out/summary.txt, from different inputs: that one conflicts.
    let (ours, theirs) = thread::scope(|s| {
        let a = s.spawn(|| {
            attempt(
                &base,
                &guest,
                &[
                    ("in/one.txt", "out/one.txt"),
                    ("in/one.txt", "out/summary.txt"),
                ],
            )
        });
        let b = s.spawn(|| {
            attempt(
                &base,
                &guest,
                &[
                    ("in/two.txt", "out/two.txt"),
                    ("in/two.txt", "out/summary.txt"),
                ],
            )
        });
        (a.join(), b.join())
    });
    let ours = ours.map_err(|_| "attempt panicked")??;
    let theirs = theirs.map_err(|_| "attempt panicked")??;

    // The default policy refuses to merge a conflict and reports it.
    let strict = Snapshot::merge(&base, &ours, &theirs, &MergeOptions::new())?;
    assert!(strict.snapshot().is_none());
    for c in strict.conflicts() {
        println!("conflict: {c}");
    }

    // Keep both: ours at the path, theirs beside it.
    let merged = Snapshot::merge(
        &base,
        &ours,
        &theirs,
        &MergeOptions::new().policy(ConflictPolicy::KeepBoth),
    )?;
    for c in merged.conflicts() {
        println!("settled:  {c}");
    }
    let merged = merged.into_snapshot()?;
    merged.check_invariants()?;
    println!("merged tree, against the base:");
    for change in base.diff(&merged) {
        println!("  {change}");
    }
    for path in [
        "/out/one.txt",
        "/out/two.txt",
        "/out/summary.txt",
        "/out/summary.txt.theirs",
    ] {
        let text = String::from_utf8(merged.read_file(path)?)?;
        println!("{path}: {}", text.trim_end());
    }
    assert_eq!(merged.read_file("/out/one.txt")?, b"FIRST INPUT\n");
    assert_eq!(merged.read_file("/out/two.txt")?, b"SECOND INPUT\n");
    assert_eq!(merged.read_file("/out/summary.txt")?, b"FIRST INPUT\n");
    assert_eq!(
        merged.read_file("/out/summary.txt.theirs")?,
        b"SECOND INPUT\n"
    );
    Ok(())
}
