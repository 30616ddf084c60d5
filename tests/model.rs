//! Model-based test: random operation sequences run against the engine and
//! against a deliberately simple model (a map from absolute path to node),
//! compared after every step. Snapshots must never change, and equal trees
//! must hash equal however they were built.

mod common;

use common::model::{Op, run};
use proptest::prelude::*;

fn path_strategy() -> impl Strategy<Value = String> {
    let comp = prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
    ];
    prop::collection::vec(comp, 1..4).prop_map(|c| format!("/{}", c.join("/")))
}

fn target_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        path_strategy(),
        path_strategy().prop_map(|p| p[1..].to_string()),
    ]
}

fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        (any::<u8>(), 0usize..150_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => path_strategy().prop_map(Op::Mkdir),
        1 => path_strategy().prop_map(Op::Rmdir),
        2 => path_strategy().prop_map(Op::Unlink),
        3 => (path_strategy(), data_strategy()).prop_map(|(p, d)| Op::WriteFile(p, d)),
        2 => (path_strategy(), 0u64..200_000, data_strategy()).prop_map(|(p, o, d)| Op::WriteAt(p, o, d)),
        1 => (path_strategy(), 0u64..200_000).prop_map(|(p, l)| Op::Truncate(p, l)),
        2 => path_strategy().prop_map(Op::Read),
        2 => (target_strategy(), path_strategy()).prop_map(|(t, p)| Op::Symlink(t, p)),
        1 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Fork),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(256),
        max_shrink_iters: 4000,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("tests/model.proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]
    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run(ops).map_err(TestCaseError::fail)?;
    }
}

/// The diff clause of the model by hand (random sequences rarely reach
/// it after a snapshot), and the engine's own answer spelled out: a hard
/// link added to an unchanged file changes its link count, which the diff
/// reports as a modification of the file; equal bytes written again are
/// not one.
#[test]
fn diff_clause_by_hand() {
    use Op::*;
    let f = || WriteFile("/a".into(), b"same".to_vec());
    for ops in [
        vec![f(), Snapshot, Link("/a".into(), "/b".into())],
        vec![
            f(),
            Link("/a".into(), "/b".into()),
            Snapshot,
            Unlink("/b".into()),
        ],
        vec![f(), Snapshot, WriteFile("/a".into(), b"other".to_vec())],
        vec![f(), Snapshot, f()],
        vec![
            f(),
            Snapshot,
            Link("/a".into(), "/b".into()),
            WriteFile("/a".into(), b"x".to_vec()),
        ],
    ] {
        run(ops.clone()).unwrap_or_else(|e| panic!("{ops:?}: {e}"));
    }
    let mut v = cowvfs::Vfs::new();
    v.write_file("/a", b"same").unwrap();
    let before = v.snapshot();
    v.hard_link("/a", "/b").unwrap();
    let after = v.snapshot();
    let changes: Vec<String> = before.diff(&after).iter().map(|c| c.to_string()).collect();
    assert_eq!(changes, ["M /a", "+ /b"]);
    v.write_file("/a", b"same").unwrap();
    assert_eq!(after.diff(&v.snapshot()), []);
}

/// Renaming one name of a hard-linked symlink over another does nothing,
/// as for a file (POSIX: both names refer to the same file); the model
/// once treated two names of one symlink as two symlinks.
#[test]
fn rename_between_names_of_one_symlink() {
    use Op::*;
    let ops = vec![
        Symlink("t".into(), "/b".into()),
        Link("/b".into(), "/a".into()),
        Rename("/b".into(), "/a".into()),
        Snapshot,
        Fork(0),
    ];
    run(ops).unwrap();
}
