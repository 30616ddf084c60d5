//! The WASI layers with real guests and hand-written modules: both ABIs,
//! the preopens, the run limits, and embedding beside wasmtime-wasi.
//!
//! One test binary, not one per file: each binary instantiates wasmtime's
//! and wasmtime-wasi's generic code (linkers, stores, typed calls) again,
//! since a release build shares no generics between crates. As six
//! binaries these files took about three times as long to build.
#![cfg(feature = "wasi")]

#[path = "../wasi_support/mod.rs"]
mod wasi_support;

mod embed;
mod guests;
mod preopens;
mod preview1;
mod preview1_guests;
mod run_limits;
