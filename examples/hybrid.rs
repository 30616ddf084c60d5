//! Hybrid mode: the in-memory tree at `/` beside two live host
//! directories, one mounted read-only and one read-write. The guest reads
//! from the read-only mount and writes into the read-write one; writing
//! into the read-only mount fails; the host never sees the memory tree.
//!
//! `cargo run --release --example hybrid`

mod common;

use cowvfs::Vfs;
use cowvfs::wasi::Sandbox;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = std::env::temp_dir().join(format!("cowvfs-hybrid-{}", std::process::id()));
    let (ro, rw) = (host.join("ro"), host.join("rw"));
    std::fs::create_dir_all(&ro)?;
    std::fs::create_dir_all(&rw)?;
    std::fs::write(ro.join("input.txt"), "from a read-only host directory\n")?;
    let result = run(&ro, &rw);
    let _ = std::fs::remove_dir_all(&host);
    result
}

fn run(ro: &std::path::Path, rw: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let engine = wasmtime::Engine::default();
    let guest = common::upper_guest(&engine)?;
    let mut mem = Vfs::new();
    mem.write_file("/memory.txt", b"only in memory\n")?;

    // Preopens in order: fd 3 = memory "/", fd 4 = "/ro", fd 5 = "/rw".
    let sandbox = |mem: Vfs, args: [&str; 4]| -> Result<Sandbox, cowvfs::Error> {
        let mut sb = Sandbox::new(mem);
        sb.preopen("/", "/")?
            .mount(ro, "/ro", true)?
            .mount(rw, "/rw", false)?;
        for a in args {
            sb.arg(a);
        }
        Ok(sb)
    };

    // read-only mount -> read-write mount
    let out = sandbox(mem, ["4", "input.txt", "5", "output.txt"])?.run(&guest);
    assert_eq!(out.status?, 0);
    let written = std::fs::read_to_string(rw.join("output.txt"))?;
    println!("guest read /ro/input.txt, wrote /rw/output.txt on the host: {written:?}");

    // memory -> memory: the host sees nothing
    let out = sandbox(out.vfs, ["3", "memory.txt", "3", "MEMORY.txt"])?.run(&guest);
    assert_eq!(out.status?, 0);
    assert_eq!(out.vfs.read_file("/MEMORY.txt")?, b"ONLY IN MEMORY\n");
    println!("guest wrote /MEMORY.txt in the memory tree only");

    // memory -> read-only mount: refused
    let out = sandbox(out.vfs, ["3", "memory.txt", "4", "nope.txt"])?.run(&guest);
    let code = out.status?;
    assert_ne!(code, 0, "writing into a read-only mount must fail");
    assert!(!ro.join("nope.txt").exists());
    println!("writing into the read-only mount failed (guest exit code {code})");
    Ok(())
}
