//! Differential test against the real OS: the same random operations on the
//! engine and on a temp directory must give the same errno and the same tree.

mod common;

use common::model::Op;
use common::os::run_vs_os;
use proptest::prelude::*;

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
        .prop_map(|c| format!("/{}", c.join("/")))
}

fn target() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "."]), 1..3)
        .prop_map(|c| c.join("/"))
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        (any::<u8>(), 0usize..100_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => path().prop_map(Op::Mkdir),
        1 => path().prop_map(Op::Rmdir),
        2 => path().prop_map(Op::Unlink),
        3 => (path(), data()).prop_map(|(p, d)| Op::WriteFile(p, d)),
        2 => (path(), 0u64..150_000, data()).prop_map(|(p, o, d)| Op::WriteAt(p, o, d)),
        1 => (path(), 0u64..150_000).prop_map(|(p, l)| Op::Truncate(p, l)),
        2 => path().prop_map(Op::Read),
        2 => (target(), path()).prop_map(|(t, p)| Op::Symlink(t, p)),
        1 => (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(200),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("tests/os_diff.proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]
    #[test]
    fn engine_matches_linux(ops in prop::collection::vec(op(), 1..30)) {
        run_vs_os(&ops).map_err(TestCaseError::fail)?;
    }
}
