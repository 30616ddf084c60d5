//! Named refs (`cowvfs::store::refs`) in a directory store and on a real
//! S3 server (SeaweedFS, see `store_support`): create, update, history,
//! rollback, compare-and-swap under racing writers, hostile ref objects,
//! bad names, and the `tag` / `tags` / `push --tag` / `pull STORE/NAME` /
//! `run --from STORE/NAME` commands run through the binary.
#![cfg(all(feature = "s3", feature = "cli"))]

#[path = "store_support/mod.rs"]
mod store_support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Barrier};

use cowvfs::store::refs::{self, Expect, MAX_REF_OBJECT};
use cowvfs::store::{self, BlobStore, DirStore, MemStore, TreeName};
use cowvfs::{ErrorKind, Snapshot, Vfs};
use store_support::{Weed, noise};

const CLI: &str = env!("CARGO_BIN_EXE_cowvfs");

fn h(s: &str) -> blake3::Hash {
    blake3::hash(s.as_bytes())
}

/// A small tree whose `/motd` says `motd`, plus a few chunks of noise.
fn tree(motd: &str, seed: u64) -> Snapshot {
    let mut v = Vfs::new();
    v.write_file("/motd", motd.as_bytes()).unwrap();
    v.write_file("/noise", &noise(seed, 200_000)).unwrap();
    v.snapshot()
}

// -------------------------------------------------------------------------
// The library, on any store.

/// Create, update, no-op update, expectations, history, rollback, list.
fn lifecycle(s: &dyn BlobStore) {
    assert!(refs::read_ref(s, "base").unwrap().is_none());
    let u = refs::update(s, "base", &h("1"), Expect::Absent, "test").unwrap();
    assert!(u.changed && u.old.is_none());
    assert_eq!(u.new.root(), h("1"));
    // A second create loses: the ref exists.
    let e = refs::update(s, "base", &h("x"), Expect::Absent, "test").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let u = refs::update(s, "base", &h("2"), Expect::Root(h("1")), "test").unwrap();
    assert_eq!((u.old, u.new.root()), (Some(h("1")), h("2")));
    let e = refs::update(s, "base", &h("3"), Expect::Root(h("1")), "test").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains(&h("2").to_hex().to_string()), "{e}");
    let e = refs::update(s, "nope", &h("3"), Expect::Root(h("1")), "test").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    refs::update(s, "base", &h("3"), Expect::Any, "test").unwrap();
    let same = refs::update(s, "base", &h("3"), Expect::Any, "test").unwrap();
    assert!(!same.changed, "setting the current root writes nothing");

    let r = refs::read_ref(s, "base").unwrap().unwrap();
    let roots: Vec<_> = r.history.iter().map(|e| e.root).collect();
    assert_eq!(roots, [h("3"), h("2"), h("1")]);
    assert_eq!(
        r.history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert!(
        r.history
            .iter()
            .all(|e| e.via == "test" && e.by.contains('@'))
    );
    assert!(r.current().time.elapsed().unwrap().as_secs() < 600);

    // Roll back two steps: a new entry on top, itself undoable.
    let back = refs::roll_back(s, "base", 2, Expect::Root(h("3")), "rollback").unwrap();
    assert_eq!((back.old, back.new.root()), (Some(h("3")), h("1")));
    assert_eq!(back.new.history.len(), 4);
    assert_eq!(back.new.current().via, "rollback");
    let undo = refs::roll_back(s, "base", 1, Expect::Any, "rollback").unwrap();
    assert_eq!(undo.new.root(), h("3"));
    let e = refs::roll_back(s, "base", 9, Expect::Any, "rollback").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = refs::roll_back(s, "none-such", 1, Expect::Any, "rollback").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // A stale version is refused by the store itself, and so is a create
    // over an existing object; nothing changes.
    let before = s.get_ref("base").unwrap().unwrap();
    let e = s.put_ref("base", b"x", Some(r.version())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let e = s.put_ref("base", b"x", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert_eq!(s.get_ref("base").unwrap().unwrap(), before);

    refs::update(s, "prod", &h("2"), Expect::Any, "test").unwrap();
    let names: Vec<_> = refs::list(s).unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["base", "prod"]);
    let reach: HashSet<_> = refs::reachable_roots(s)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(reach, HashSet::from([h("1"), h("2"), h("3")]));
    assert_eq!(TreeName::parse("prod").unwrap().resolve(s).unwrap(), h("2"));
    let e = TreeName::parse("gone").unwrap().resolve(s).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// `threads` writers each try `tries` updates of one ref at once, each
/// from what it read. Every update either lands (exactly one history entry
/// each, with its root) or fails with `Busy`; none vanishes.
fn race(store: Arc<dyn BlobStore>, threads: usize, tries: usize) {
    assert!(
        threads * tries < refs::HISTORY_KEPT,
        "the history keeps them all"
    );
    refs::update(&*store, "race", &h("start"), Expect::Any, "test").unwrap();
    let start = refs::read_ref(&*store, "race").unwrap().unwrap();
    let barrier = Arc::new(Barrier::new(threads));
    let jobs: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (mut won, mut lost) = (Vec::new(), 0);
                for i in 0..tries {
                    let root = h(&format!("{t}-{i}"));
                    match refs::update(&*store, "race", &root, Expect::Any, "race") {
                        Ok(u) => {
                            assert!(u.changed);
                            won.push(root);
                        }
                        Err(e) if e.kind() == ErrorKind::Busy => {
                            assert!(e.to_string().contains("nothing was written"), "{e}");
                            lost += 1;
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (won, lost)
            })
        })
        .collect();
    let (mut won, mut lost) = (Vec::new(), 0);
    for j in jobs {
        let (w, l) = j.join().unwrap();
        won.extend(w);
        lost += l;
    }
    assert_eq!(won.len() + lost, threads * tries);
    assert!(!won.is_empty());
    let end = refs::read_ref(&*store, "race").unwrap().unwrap();
    let added: Vec<_> = end
        .history
        .iter()
        .take_while(|e| e.seq > start.current().seq)
        .map(|e| e.root)
        .collect();
    assert_eq!(added.len(), won.len(), "one entry per successful update");
    assert_eq!(
        added.iter().collect::<HashSet<_>>(),
        won.iter().collect::<HashSet<_>>()
    );
    assert_eq!(end.current().seq - start.current().seq, won.len() as u64);
    assert_eq!(end.history[added.len()].root, h("start"));
}

/// Ref objects a hostile or broken writer left: each read is a clear
/// error, and an update over one fails without touching it.
fn hostile(s: &dyn BlobStore, write: &dyn Fn(&str, Vec<u8>)) {
    refs::update(s, "good", &h("g"), Expect::Any, "test").unwrap();
    let (good, _) = s.get_ref("good").unwrap().unwrap();
    let mut wrong_version = good.clone();
    wrong_version[9] = 9;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let cases: Vec<(&str, Vec<u8>, ErrorKind, &str)> = vec![
        (
            "huge",
            vec![0; MAX_REF_OBJECT as usize + 1],
            ErrorKind::Corrupt,
            "more than",
        ),
        (
            "garbage",
            b"hello".to_vec(),
            ErrorKind::Corrupt,
            "bad magic",
        ),
        ("empty", Vec::new(), ErrorKind::Corrupt, "bad magic"),
        ("moved", good.clone(), ErrorKind::Corrupt, "another name"),
        ("newer", wrong_version, ErrorKind::Unsupported, "version 9"),
        ("flipped", flipped, ErrorKind::Corrupt, "trailing hash"),
        (
            "cut",
            good[..good.len() - 1].to_vec(),
            ErrorKind::Corrupt,
            "trailing hash",
        ),
    ];
    for (name, bytes, kind, needle) in cases {
        write(name, bytes);
        let before = s.get_ref(name);
        let e = refs::read_ref(s, name).unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
        let e = refs::update(s, name, &h("new"), Expect::Any, "test").unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        let e = TreeName::parse(name).unwrap().resolve(s).unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        let after = s.get_ref(name);
        assert_eq!(
            format!("{before:?}"),
            format!("{after:?}"),
            "{name} untouched"
        );
    }
    // The listing names them; reading them all (what garbage collection
    // does) fails rather than skip one.
    assert!(s.list_refs().unwrap().contains(&"huge".to_string()));
    assert!(refs::list(s).is_err());
    assert!(refs::reachable_roots(s).is_err());
}

/// Bad names are refused by the library and by every store method.
fn bad_names(s: &dyn BlobStore) {
    let long = "x".repeat(refs::MAX_NAME + 1);
    let hex = h("r").to_hex().to_string();
    for name in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/abs",
        ".hidden",
        "-opt",
        "a..b",
        "tab\t",
        "nul\0",
        "new\nline",
        "ünï",
        &long,
        &hex,
    ] {
        let e = refs::update(s, name, &h("1"), Expect::Any, "test").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NameTooLong),
            "{name:?}: {e}"
        );
        assert!(s.get_ref(name).is_err(), "{name:?}");
        assert!(s.put_ref(name, b"x", None).is_err(), "{name:?}");
        assert!(refs::read_ref(s, name).is_err(), "{name:?}");
    }
}

#[test]
fn refs_in_memory_and_in_a_directory_store() {
    let mem: Arc<dyn BlobStore> = Arc::new(MemStore::new());
    lifecycle(&*mem);
    race(mem.clone(), 8, 10);
    bad_names(&*mem);

    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let dir = Arc::new(DirStore::open(&root).unwrap());
    lifecycle(&*dir);
    race(dir.clone(), 8, 10);
    let refs_dir = root.join("refs");
    hostile(&*dir, &|name, bytes| {
        std::fs::write(refs_dir.join(name), bytes).unwrap()
    });
    // A symlink planted as a ref is refused, not followed.
    std::os::unix::fs::symlink(refs_dir.join("good"), refs_dir.join("link")).unwrap();
    let e = refs::read_ref(&*dir, "link").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    bad_names(&*dir);
    // Nothing was written outside the refs directory, and the lock files
    // and temporaries inside it are not listed as refs.
    let mut top: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["chunks", "manifests", "refs"]);
    assert!(refs_dir.join(".base.lock").is_file());
    assert!(dir.list_refs().unwrap().iter().all(|n| !n.starts_with('.')));
    assert!(!std::fs::read_dir(&refs_dir).unwrap().any(|e| {
        let n = e.unwrap().file_name();
        n.to_string_lossy().starts_with(".tmp")
    }));
}

#[test]
fn refs_on_seaweedfs() {
    let weed = Weed::start();
    let s3: Arc<dyn BlobStore> = Arc::new(weed.store("fleet", "refs"));
    lifecycle(&*s3);
    race(s3.clone(), 8, 10);
    bad_names(&*s3);
    let raw = weed.store("fleet", "refs");
    hostile(&*s3, &|name, bytes| {
        raw.put_raw(&format!("refs/{name}"), bytes).unwrap()
    });
    // SeaweedFS enforces both conditions on a plain PUT: a second create
    // and a replace under an old ETag fail with 412, which is a conflict.
    let fresh = weed.store("fleet", "conditions");
    let v1 = fresh.put_ref("c", b"one", None).unwrap();
    let e = fresh.put_ref("c", b"two", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "If-None-Match: {e}");
    let v2 = fresh.put_ref("c", b"two", Some(&v1)).unwrap();
    assert_ne!(v1, v2);
    let e = fresh.put_ref("c", b"three", Some(&v1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "If-Match: {e}");
    assert_eq!(fresh.get_ref("c").unwrap().unwrap(), (b"two".to_vec(), v2));
    // Only refs are listed (not the probe of the conditions check).
    assert_eq!(fresh.list_refs().unwrap(), ["c"]);
    // A store keeps its refs apart from another prefix's.
    assert!(refs::read_ref(&fresh, "base").unwrap().is_none());
}

// -------------------------------------------------------------------------
// The command line.

fn cowvfs(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(CLI)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
}

/// A preview1 guest that prints the file `motd` of its first preopen.
const MOTD_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "motd")
  (func $ok (param $errno i32)
    (if (local.get $errno) (then (call $exit (i32.const 70)))))
  (func (export "_start")
    ;; fd at 200, iovec {buf 1000, len 4000} at 300, count at 400
    (call $ok (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 4)
                          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
    (i32.store (i32.const 300) (i32.const 1000))
    (i32.store (i32.const 304) (i32.const 4000))
    (call $ok (call $read (i32.load (i32.const 200)) (i32.const 300) (i32.const 1) (i32.const 400)))
    (i32.store (i32.const 304) (i32.load (i32.const 400)))
    (call $ok (call $write (i32.const 1) (i32.const 300) (i32.const 1) (i32.const 400))))
)
"#;

/// Push two trees with `--tag`, list, show history, roll back, promote a
/// ref to another, refuse a wrong `--expect`, pull and run by ref name.
fn cli_flow(store: &str, dir: &Path, env: &[(&str, String)]) {
    let (a, b) = (dir.join("a.ck"), dir.join("b.ck"));
    tree("first\n", 1).save(&a).unwrap();
    tree("second\n", 2).save(&b).unwrap();
    let ra = tree("first\n", 1).root_hash().to_hex().to_string();
    let rb = tree("second\n", 2).root_hash().to_hex().to_string();

    let out = cowvfs(&["push", a.to_str().unwrap(), store, "--tag", "base"], env);
    assert_eq!(ok(&out).trim(), format!("{store}/{ra}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("base: (new) -> {ra}")), "{err}");
    ok(&cowvfs(&["push", b.to_str().unwrap(), store], env));

    let out = ok(&cowvfs(&["tag", store, "base", &rb, "--expect", &ra], env));
    assert_eq!(out.trim(), format!("base: {ra} -> {rb}"));
    let out = ok(&cowvfs(&["tag", store, "base", &rb], env));
    assert_eq!(out.trim(), format!("base: already at {rb}"));
    // A stale --expect changes nothing.
    fails(
        &cowvfs(&["tag", store, "base", &ra, "--expect", &ra], env),
        "not the expected",
    );
    // A ref may name what another names now.
    let out = ok(&cowvfs(
        &["tag", store, "prod", "base", "--expect", "none"],
        env,
    ));
    assert_eq!(out.trim(), format!("prod: (new) -> {rb}"));
    fails(
        &cowvfs(&["tag", store, "prod", &ra, "--expect", "none"], env),
        "exists already",
    );

    let list = ok(&cowvfs(&["tags", store], env));
    let lines: Vec<_> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("base ") && lines[0].contains(&rb),
        "{list}"
    );
    assert!(
        lines[1].starts_with("prod ") && lines[1].contains("ago"),
        "{list}"
    );
    let hist = ok(&cowvfs(&["tags", store, "base"], env));
    let rows: Vec<_> = hist.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{hist}");
    assert!(
        rows[0].trim_start().starts_with(&format!("0  {rb}")),
        "{hist}"
    );
    assert!(
        rows[0].ends_with("(tag)") && rows[1].ends_with("(push)"),
        "{hist}"
    );

    // Rollback is one command, and is in the history too.
    let out = ok(&cowvfs(&["tag", store, "base", "--back"], env));
    assert_eq!(out.trim(), format!("base: {rb} -> {ra}"));
    let hist = ok(&cowvfs(&["tags", store, "base"], env));
    assert_eq!(hist.lines().count(), 4, "{hist}");
    assert!(
        hist.lines().nth(1).unwrap().ends_with("(rollback)"),
        "{hist}"
    );
    // Now ra (rollback), rb (tag), ra (push): back 1 undoes the rollback,
    // and back 3 reaches past two entries to the push.
    let out = ok(&cowvfs(&["tag", store, "base", "--back", "1"], env));
    assert_eq!(out.trim(), format!("base: {ra} -> {rb}"));
    let out = ok(&cowvfs(&["tag", store, "base", "--back", "3"], env));
    assert_eq!(out.trim(), format!("base: {rb} -> {ra}"));
    fails(
        &cowvfs(&["tag", store, "base", "--back", "9"], env),
        "cannot go back",
    );

    // Bad input: clear errors, nothing written.
    fails(&cowvfs(&["tag", store, "../x", &ra], env), "bad ref name");
    fails(
        &cowvfs(&["tag", store, "base", &h("never pushed").to_hex()], env),
        "push it first",
    );
    fails(
        &cowvfs(&["tag", store, "base", "missing"], env),
        "no ref missing",
    );
    fails(
        &cowvfs(&["tag", store, "base", &ra, "--back"], env),
        "cannot be used",
    );
    fails(&cowvfs(&["tags", store, "missing"], env), "no ref missing");
    let hist = ok(&cowvfs(&["tags", store, "base"], env));
    assert_eq!(hist.lines().count(), 6, "{hist}");

    // STORE/NAME wherever STORE/ROOT goes.
    let out = dir.join("pulled.ck");
    ok(&cowvfs(
        &["pull", &format!("{store}/prod"), out.to_str().unwrap()],
        env,
    ));
    assert_eq!(
        Snapshot::load(&out).unwrap().read_file("/motd").unwrap(),
        b"second\n"
    );
    fails(
        &cowvfs(
            &["pull", &format!("{store}/nope"), out.to_str().unwrap()],
            env,
        ),
        "no ref nope",
    );
    #[cfg(feature = "wasi")]
    {
        let guest = dir.join("motd.wasm");
        std::fs::write(&guest, wat::parse_str(MOTD_WAT).unwrap()).unwrap();
        let from = format!("{store}/base");
        let out = cowvfs(&["run", "--from", &from, guest.to_str().unwrap()], env);
        assert_eq!(ok(&out), "first\n");
        let from = format!("{store}/prod");
        let out = cowvfs(&["run", "--from", &from, guest.to_str().unwrap()], env);
        assert_eq!(ok(&out), "second\n");
    }
    #[cfg(not(feature = "wasi"))]
    let _ = MOTD_WAT;
}

#[test]
fn tag_tags_rollback_and_refs_as_roots_through_the_cli() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    cli_flow(store, t.path(), &[]);

    // Racing processes: every `tag` either moves the ref (one entry each)
    // or fails saying so.
    let before = refs::read_ref(&DirStore::open(store).unwrap(), "base")
        .unwrap()
        .unwrap();
    let (a, b) = (t.path().join("a.ck"), t.path().join("b.ck"));
    let roots = [
        Snapshot::open(&a).unwrap().root_hash().to_hex().to_string(),
        Snapshot::open(&b).unwrap().root_hash().to_hex().to_string(),
    ];
    let kids: Vec<_> = (0..12)
        .map(|i| {
            Command::new(CLI)
                .args(["tag", store, "base", &roots[i % 2]])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut moved = 0;
    for k in kids {
        let out = k.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("->") {
            moved += 1;
        } else if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("changed by another writer"), "{err}");
        }
    }
    let after = refs::read_ref(&DirStore::open(store).unwrap(), "base")
        .unwrap()
        .unwrap();
    assert_eq!(after.current().seq - before.current().seq, moved);

    // A damaged ref: `tags` lists the others, names it and fails; `tag`
    // refuses to write over it.
    let bad = Path::new(store).join("refs/broken");
    std::fs::write(&bad, b"not a ref").unwrap();
    let out = cowvfs(&["tags", store], &[]);
    assert!(!out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken") && err.contains("bad magic"), "{err}");
    fails(
        &cowvfs(&["tag", store, "broken", &roots[0]], &[]),
        "bad magic",
    );
    assert_eq!(std::fs::read(&bad).unwrap(), b"not a ref");
}

#[test]
fn refs_through_the_cli_on_seaweedfs() {
    let weed = Weed::start();
    let t = tempfile::tempdir().unwrap();
    let mut env = weed.env();
    env.push(("COWVFS_CACHE", t.path().join("cache").display().to_string()));
    cli_flow("s3://fleet/cli", t.path(), &env);
    // The refs live in the bucket, readable by the library too.
    let s3 = weed.store("fleet", "cli");
    let names: Vec<_> = refs::list(&s3)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["base", "prod"]);
    let base = refs::read_ref(&s3, "base").unwrap().unwrap();
    let pulled = store::open_lazy(Arc::new(s3), &base.root(), None).unwrap();
    assert_eq!(pulled.read_file("/motd").unwrap(), b"first\n");
}
