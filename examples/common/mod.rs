//! What the examples share: the `upper` guest (see upper.wat), compiled
//! from WAT and adapted from preview1 into a component at start.

use cowvfs::wasi::{Guest, adapt_module};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The `upper IN_FD IN_PATH OUT_FD OUT_PATH` guest, ready to run.
pub fn upper_guest(engine: &Engine) -> wasmtime::Result<Guest> {
    let wasm = wat::parse_str(include_str!("upper.wat"))?;
    let component = Component::new(engine, adapt_module(&wasm)?)?;
    Guest::new(engine, &component, "upper.wasm")
}
