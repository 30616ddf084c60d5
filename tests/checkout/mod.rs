//! Where the checkout under test is.

use std::path::PathBuf;

/// The checkout under test, as `cargo test` names it when it runs this
/// binary (the path fixed at compile time otherwise). Checkouts that share
/// a target directory (CI keeps one outside the clone) reuse each other's
/// unchanged test binaries, whose compile-time path names the checkout
/// that built them, which may be gone.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
