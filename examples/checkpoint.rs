//! Checkpoints: save a snapshot, save a delta against it, load both back,
//! verify them, and get the identical tree (equal root hash).
//!
//! `cargo run --release --example checkpoint`

use std::time::Instant;

use cowvfs::{Snapshot, Vfs, checkpoint};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cowvfs-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut v = Vfs::new();
    v.create_dir_all("/data")?;
    let block: Vec<u8> = (0..(8 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    v.write_file("/data/big.bin", &block)?;
    for i in 0..200 {
        // The same 64 KiB in 200 files: stored once.
        v.write_file(&format!("/data/copy{i}.bin"), &block[..65536])?;
    }
    let base = v.snapshot();

    let full = dir.join("base.ckpt");
    let t = Instant::now();
    base.save(&full)?;
    println!(
        "full checkpoint: {} KiB for {} KiB of file data (dedup), saved in {:.1} ms",
        std::fs::metadata(&full)?.len() / 1024,
        base.usage().held_bytes / 1024,
        t.elapsed().as_secs_f64() * 1e3
    );

    let mut child = base.fork();
    child.write_file("/data/notes.txt", b"one small change\n")?;
    let child = child.snapshot();
    let delta = dir.join("child.delta");
    child.save_delta(&base, &delta)?;
    println!(
        "delta after one small file: {} bytes",
        std::fs::metadata(&delta)?.len()
    );

    let loaded = Snapshot::load(&full)?;
    let loaded_child = Snapshot::load_delta(&delta, &loaded)?;
    assert_eq!(loaded.root_hash(), base.root_hash());
    assert_eq!(loaded_child.root_hash(), child.root_hash());
    assert_eq!(
        loaded_child.read_file("/data/notes.txt")?,
        b"one small change\n"
    );
    checkpoint::verify(&full, &[])?;
    checkpoint::verify(&delta, std::slice::from_ref(&full))?;
    println!(
        "loaded and verified: root hash {}",
        &child.root_hash().to_hex()[..16]
    );

    // A corrupt file is refused, never half-loaded.
    let mut bytes = std::fs::read(&full)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = dir.join("bad.ckpt");
    std::fs::write(&bad, &bytes)?;
    let err = Snapshot::load(&bad).expect_err("corruption is detected");
    println!("a flipped byte is refused: {err}");
    Ok(())
}
