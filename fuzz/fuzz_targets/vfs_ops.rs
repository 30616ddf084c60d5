//! Arbitrary operation sequences, snapshots and forks against the engine and
//! the reference model: same results and error kinds, invariants after every
//! step, snapshots that never change.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/model.rs"]
mod model;
mod ops;

fuzz_target!(|ops: Vec<ops::FOp>| {
    let ops: Vec<model::Op> = ops.iter().take(64).map(|o| o.to_op(true)).collect();
    if let Err(e) = model::run(ops) {
        panic!("{e}");
    }
});
