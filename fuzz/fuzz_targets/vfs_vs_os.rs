//! The same operations on the engine and on a real temp directory: error
//! kinds and resulting trees must be equal (see tests/common/os.rs for what
//! is left out and why).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/model.rs"]
mod model;
mod ops;
#[path = "../../tests/common/os.rs"]
mod os;

fuzz_target!(|ops: Vec<ops::FOp>| {
    let ops: Vec<model::Op> = ops.iter().take(32).map(|o| o.to_op(false)).collect();
    if let Err(e) = os::run_vs_os(&ops) {
        panic!("{e}");
    }
});
