//! A request handler that forks a base snapshot per request, concurrently:
//! each request gets a private writable tree, runs a guest in it, and the
//! handler reads back what changed. The base never changes.
//!
//! `cargo run --release --example fork_per_request`

mod common;

use std::sync::Arc;
use std::time::Instant;

use cowvfs::wasi::Sandbox;
use cowvfs::{ChangeKind, Snapshot, Vfs};

const REQUESTS: usize = 256;
const WORKERS: usize = 4;

fn handle(base: &Snapshot, guest: &cowvfs::wasi::Guest, id: usize) -> Result<String, String> {
    let mut tree = base.fork();
    let body = format!("hello from request {id}\n");
    tree.write_file("/req/body.txt", body.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut sb = Sandbox::new(tree);
    sb.preopen("/", "/").map_err(|e| e.to_string())?;
    for a in ["3", "req/body.txt", "3", "req/reply.txt"] {
        sb.arg(a);
    }
    let out = sb.run(guest);
    match out.status {
        Ok(0) => {}
        other => return Err(format!("request {id}: guest ended with {other:?}")),
    }
    let changes = base.diff(&out.vfs.snapshot());
    let added: Vec<&str> = changes
        .iter()
        .filter(|c| c.kind() == ChangeKind::Added)
        .map(|c| c.path())
        .collect();
    if added != ["/req/body.txt", "/req/reply.txt"] {
        return Err(format!("request {id}: unexpected changes {changes:?}"));
    }
    let reply = out
        .vfs
        .read_file("/req/reply.txt")
        .map_err(|e| e.to_string())?;
    String::from_utf8(reply).map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut base = Vfs::new();
    base.create_dir_all("/req")?;
    base.create_dir_all("/app")?;
    for i in 0..1000 {
        base.write_file(
            &format!("/app/asset{i}.txt"),
            format!("asset {i}\n").as_bytes(),
        )?;
    }
    let base = base.snapshot();
    let base_hash = base.root_hash();
    let engine = wasmtime::Engine::default();
    let guest = Arc::new(common::upper_guest(&engine)?);

    let started = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (base, guest) = (base.clone(), guest.clone());
            std::thread::spawn(move || {
                (w..REQUESTS)
                    .step_by(WORKERS)
                    .map(|id| handle(&base, &guest, id).map(|r| (id, r)))
                    .collect::<Result<Vec<_>, String>>()
            })
        })
        .collect();
    let mut replies = Vec::new();
    for h in handles {
        replies.extend(h.join().map_err(|_| "worker panicked")??);
    }
    let elapsed = started.elapsed();
    replies.sort();
    for (id, reply) in &replies {
        assert_eq!(*reply, format!("HELLO FROM REQUEST {id}\n"));
    }
    assert_eq!(base.root_hash(), base_hash, "the base never changes");
    assert!(!base.exists("/req/body.txt"));
    println!(
        "{REQUESTS} requests on {WORKERS} threads in {:.1} ms ({:.0} µs each): every reply is its own, the base is unchanged",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / REQUESTS as f64
    );
    println!("first reply: {:?}", replies[0].1);
    Ok(())
}
