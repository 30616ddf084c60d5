//! Host bindings for `wasi:filesystem@0.2.12`, generated from `wit/`.
//!
//! Streams, pollables, the `error` resource and wall-clock datetimes are the
//! very types wasmtime-wasi uses, so our descriptors hand out streams that
//! the rest of WASI (poll, stdio, splice) works with.

// Generated items document themselves from the WIT where it has docs.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "wit",
    world: "cowvfs:host/filesystem",
    imports: { default: trappable },
    trappable_error_type: {
        "wasi:filesystem/types.error-code" => crate::wasi::FsError,
    },
    with: {
        "wasi:io": wasmtime_wasi_io::bindings::wasi::io,
        "wasi:clocks/wall-clock": wasmtime_wasi::p2::bindings::clocks::wall_clock,
        "wasi:filesystem/types.descriptor": crate::wasi::Descriptor,
        "wasi:filesystem/types.directory-entry-stream": crate::wasi::DirectoryStream,
    },
    require_store_data_send: true,
});

pub use self::wasi::filesystem::{preopens, types};
