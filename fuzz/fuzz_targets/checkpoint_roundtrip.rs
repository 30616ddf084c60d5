//! An arbitrary tree saved full and as a delta against an earlier snapshot
//! of itself, loaded (and lazily opened) back: equal root hash, contents
//! and metadata.
#![no_main]

use cowvfs::{Snapshot, Vfs};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/model.rs"]
mod model;
mod ops;

fn dump(s: &Snapshot) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut work = vec!["/".to_string()];
    while let Some(dir) = work.pop() {
        for e in s.read_dir(&dir).unwrap_or_default() {
            let p = if dir == "/" { format!("/{}", e.name) } else { format!("{dir}/{}", e.name) };
            let m = s.symlink_metadata(&p).expect("listed entries exist");
            let what = match e.kind {
                cowvfs::FileType::Dir => {
                    work.push(p.clone());
                    format!("dir {:o}", m.mode)
                }
                cowvfs::FileType::File => format!(
                    "file {:o} {} ino={} {:?} {:?}",
                    m.mode,
                    m.nlink,
                    m.ino,
                    m.mtime,
                    s.read_file(&p).map(|d| blake3::hash(&d))
                ),
                cowvfs::FileType::Symlink => format!("link {:?}", s.read_link(&p)),
            };
            out.push((p, what));
        }
    }
    out.sort();
    out
}

fn same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.root_hash(), b.root_hash());
    assert_eq!(dump(a), dump(b));
    b.check_invariants().expect("loaded tree is valid");
}

fuzz_target!(|input: (Vec<ops::FOp>, Vec<ops::FOp>)| {
    let apply = |v: &mut Vfs, ops: &[ops::FOp]| {
        for op in ops.iter().take(48) {
            let _ = model::apply_engine(v, &op.to_op(true));
        }
    };
    let mut v = Vfs::new();
    apply(&mut v, &input.0);
    let parent = v.snapshot();
    apply(&mut v, &input.1);
    let child = v.snapshot();

    let mut full = Vec::new();
    child.save_to(&mut full).expect("save to memory");
    same(&child, &Snapshot::load_from(&full[..]).expect("load what was saved"));

    let mut delta = Vec::new();
    child.save_delta_to(&parent, &mut delta).expect("save delta to memory");
    same(&child, &Snapshot::load_delta_from(&delta[..], &parent).expect("load delta"));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.ckpt");
    child.save(&path).expect("save to file");
    same(&child, &Snapshot::open(&path).expect("lazy open"));
});
