//! Undo: a long-lived session takes a snapshot after every step; undoing is
//! forking an older snapshot, in O(1) whatever the tree's size.
//!
//! `cargo run --release --example rollback`

use cowvfs::{Snapshot, Vfs};

fn step(v: &mut Vfs, n: usize) -> cowvfs::Result<&'static str> {
    Ok(match n {
        1 => {
            v.create_dir_all("/project/src")?;
            v.write_file("/project/src/main.py", b"print('hello')\n")?;
            "create the project"
        }
        2 => {
            v.write_file(
                "/project/src/util.py",
                b"def add(a, b):\n    return a + b\n",
            )?;
            "add util.py"
        }
        3 => {
            v.rename("/project/src/util.py", "/project/src/helpers.py")?;
            "rename util.py to helpers.py"
        }
        _ => {
            v.remove_file("/project/src/main.py")?;
            "delete main.py (a mistake)"
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut session = Vfs::new();
    let mut history: Vec<(String, Snapshot)> = vec![("empty".into(), session.snapshot())];
    for n in 1..=4 {
        let what = step(&mut session, n)?;
        let snap = session.snapshot();
        let prev = &history[history.len() - 1].1;
        let changes: Vec<String> = prev.diff(&snap).iter().map(|c| c.to_string()).collect();
        println!("step {n}: {what:<30} {}", changes.join(", "));
        history.push((what.to_string(), snap));
    }

    // Undo the last two steps.
    let (what, target) = &history[2];
    session = target.fork();
    println!(
        "undo to step 2 ({what}): root hash {}",
        &target.root_hash().to_hex()[..16]
    );
    assert_eq!(session.root_hash(), target.root_hash());
    assert!(session.exists("/project/src/main.py"));
    assert!(session.exists("/project/src/util.py"));
    assert!(!session.exists("/project/src/helpers.py"));

    // The newer snapshots are still there: redo is a fork too.
    let redo = history[3].1.fork();
    assert!(redo.exists("/project/src/helpers.py"));
    println!(
        "redo to step 3 still works; {} snapshots kept",
        history.len()
    );
    Ok(())
}
