//! Guest file I/O through cowvfs's native preview1, through the preview1
//! adapter over cowvfs's wasi:filesystem, and through stock wasmtime-wasi
//! preview1 on a tmpfs directory (/dev/shm), in one run, same engine.
//!
//! The guest is the WASI benchmark's (tests/guests/bench_io.c, also run
//! by benches/wasi.rs): it writes 64 MiB in 64 KiB blocks, reads it back 4
//! times, then creates, stats, lists and unlinks 5,000 small files. Each iteration is one whole run: instantiate (from a
//! pre-linked guest), run, drop.

#[path = "../tests/wasi_support/mod.rs"]
mod wasi_support;

use cowvfs::Vfs;
use cowvfs::wasi::{Sandbox, p1};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::{Linker, Module, Store};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

fn guest_file_io(c: &mut Criterion) {
    let dir = wasi_support::guests();
    let path = dir.join("bench_io.wasm");
    let engine = wasi_support::engine();
    let native = p1::Guest::load(engine, &path).unwrap();
    let adapted = wasi_support::guest("bench_io");
    let module = Module::from_file(engine, &path).unwrap();
    let mut linker = Linker::<wasmtime_wasi::p1::WasiP1Ctx>::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |t| t).unwrap();
    let stock = linker.instantiate_pre(&module).unwrap();
    let shm = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();

    let mut g = c.benchmark_group("preview1_file_io");
    g.sample_size(10);
    g.bench_function("cowvfs_native_p1", |b| {
        b.iter(|| {
            let mut sb = p1::Sandbox::new(Vfs::new());
            sb.preopen("/", "/").unwrap();
            sb.arg("/").capture_output();
            assert_eq!(sb.run(&native).status.unwrap(), 0);
        })
    });
    g.bench_function("cowvfs_adapter", |b| {
        b.iter(|| {
            let mut sb = Sandbox::new(Vfs::new());
            sb.preopen("/", "/").unwrap();
            sb.arg("/").capture_output();
            assert_eq!(sb.run(&adapted).status.unwrap(), 0);
        })
    });
    // Stock preview1 both ways: its file I/O runs on a blocking thread
    // pool unless the context may block the current thread.
    for (name, blocking) in [
        ("wasmtime_wasi_p1_tmpfs", false),
        ("wasmtime_wasi_p1_tmpfs_blocking_current_thread", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut builder = WasiCtxBuilder::new();
                builder
                    .args(&["bench_io.wasm", "/"])
                    .allow_blocking_current_thread(blocking)
                    .preopened_dir(shm.path(), "/", FsPerms::ReadWrite)
                    .unwrap();
                let mut store = Store::new(engine, builder.build_p1());
                let instance = stock.instantiate(&mut store).unwrap();
                let start = instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .unwrap();
                if let Err(e) = start.call(&mut store, ()) {
                    assert_eq!(e.downcast_ref::<I32Exit>().map(|e| e.0), Some(0), "{e:?}");
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, guest_file_io);
criterion_main!(benches);
