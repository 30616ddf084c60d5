//! Named refs: `refs/<name>` objects that say which tree a name stands
//! for now ("the current base image") and which trees it stood for before,
//! so a fleet can move a name forward and roll it back.
//!
//! A ref object:
//!
//! ```text
//! magic "cowvfs\0rf" [9] | version u16 | body length u32
//! | body: postcard RefRecord { name, history }
//! | blake3 of everything before [32]
//! ```
//!
//! (integers little-endian). The history is newest first: entry 0 is the
//! current root. Each entry carries the root, a sequence number one above
//! the previous entry's, when it was written (Unix milliseconds), who
//! wrote it (`user@host`), by which command, and a nonce unique to the
//! write (so no two writes store the same bytes). At most [`HISTORY_KEPT`]
//! entries are kept; older ones fall off. Every root in the history stays
//! reachable for garbage collection ([`reachable_roots`]).
//!
//! An update is compare-and-swap: it reads the ref together with the
//! store's version of the object ([`RefVersion`]) and writes the new one
//! only if the object is still that version ([`BlobStore::put_ref`]), so
//! of two writers racing from the same state one wins and the other gets
//! an error of kind [`ErrorKind::Busy`] saying the ref moved; nothing is
//! ever overwritten unseen. Every store implements the condition its own
//! way: a mutex in memory, a lock file under `flock` in a directory,
//! conditional PUTs (`If-None-Match` / `If-Match`) on S3, on a server
//! checked once to enforce them (see `S3Store::check_conditions` and
//! DESIGN.md "Named refs" for what SeaweedFS does).
//!
//! Nothing read is trusted: the object is bounded ([`MAX_REF_OBJECT`])
//! before it is read, checked against its trailing hash and version, and
//! its record against the name it is stored under and the rules above.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::BlobStore;
use crate::error::{Error, ErrorKind, Result};

/// The ref format this build writes and reads.
pub(crate) const VERSION: u16 = 1;

const MAGIC: [u8; 9] = *b"cowvfs\0rf";
const HEAD_LEN: usize = 9 + 2 + 4;

/// Most bytes a ref object may hold: a store read refuses a bigger one.
pub const MAX_REF_OBJECT: u64 = 256 << 10;

/// Entries a ref keeps: the current root and the ones before it.
pub const HISTORY_KEPT: usize = 100;

/// Longest ref name, in bytes.
pub const MAX_NAME: usize = 128;

/// Longest `by` or `via` text an entry keeps.
const MAX_NOTE: usize = 128;

/// Most refs a listing returns (a hostile bucket could hold millions).
pub const MAX_REFS: usize = 100_000;

/// The object name of a ref under a store's root.
pub(crate) fn ref_key(name: &str) -> String {
    format!("refs/{name}")
}

/// Which version of a ref object a store holds, opaque to callers: an
/// entity tag (and version id) on S3, a content hash in a directory, a
/// generation in memory. A conditional write names the version it
/// replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefVersion {
    pub(crate) tag: String,
    pub(crate) version: Option<String>,
}

impl RefVersion {
    pub(crate) fn new(tag: impl Into<String>) -> RefVersion {
        RefVersion {
            tag: tag.into(),
            version: None,
        }
    }
}

/// The error a conditional write that lost a race gives.
pub(crate) fn conflict(name: &str, what: impl std::fmt::Display) -> Error {
    Error::with(
        ErrorKind::Busy,
        format!(
            "ref {name} was changed by another writer ({what}); nothing was written: \
             read it again and retry"
        ),
    )
}

/// Checks a ref name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits,
/// `.`, `_` and `-`, not starting with `.` or `-`, without `..`, and not
/// 64 hex digits (which would read as a root hash). So a name is one path
/// component and one S3 key segment everywhere, and never a hidden or
/// temporary file of a directory store.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::with(
            ErrorKind::InvalidInput,
            format!("bad ref name {name:?}: {why}"),
        )
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NAME {
        return Err(Error::with(
            ErrorKind::NameTooLong,
            format!(
                "ref name of {} bytes: at most {MAX_NAME} are allowed",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(&format!(
            "{c:?} is not allowed (use letters, digits, '.', '_' and '-')"
        )));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(bad("may not start with '.' or '-'"));
    }
    if name.contains("..") {
        return Err(bad("may not contain '..'"));
    }
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("64 hex digits would be read as a root hash"));
    }
    Ok(())
}

// -------------------------------------------------------------------------
// The record. Field order is the format: append, never reorder.

#[derive(Serialize, Deserialize, Debug)]
struct RefRecord {
    name: String,
    history: Vec<WireEntry>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct WireEntry {
    root: [u8; 32],
    seq: u64,
    unix_ms: u64,
    by: String,
    via: String,
    nonce: u64,
}

/// One position a ref held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefEntry {
    /// The tree.
    pub root: blake3::Hash,
    /// Counts the updates of the ref: one above the entry before.
    pub seq: u64,
    /// When the ref was set to it (the writer's clock).
    pub time: SystemTime,
    /// Who set it: `user@host`.
    pub by: String,
    /// How: the command (`tag`, `push`, `rollback`, ...).
    pub via: String,
    /// Unique to the write, so no two writes ever store the same bytes.
    nonce: u64,
}

/// A ref as read from a store: its history, newest first, and the version
/// of the object it came from.
#[derive(Clone, Debug)]
pub struct Ref {
    /// Its name.
    pub name: String,
    /// Newest first; never empty; at most [`HISTORY_KEPT`] entries.
    pub history: Vec<RefEntry>,
    version: RefVersion,
}

impl Ref {
    /// The tree the ref names now.
    pub fn root(&self) -> blake3::Hash {
        self.history[0].root
    }

    /// The current entry.
    pub fn current(&self) -> &RefEntry {
        &self.history[0]
    }

    /// The store's version of the object this was read from.
    pub fn version(&self) -> &RefVersion {
        &self.version
    }
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_NOTE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The ref object for `name` with `history` (newest first).
fn encode(name: &str, history: &[RefEntry]) -> Result<Vec<u8>> {
    let rec = RefRecord {
        name: name.to_string(),
        history: history
            .iter()
            .map(|e| WireEntry {
                root: *e.root.as_bytes(),
                seq: e.seq,
                unix_ms: e
                    .time
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                by: clip(&e.by),
                via: clip(&e.via),
                nonce: e.nonce,
            })
            .collect(),
    };
    let body = postcard::to_stdvec(&rec)
        .map_err(|e| Error::with(ErrorKind::Io, format!("encoding ref {name}: {e}")))?;
    let mut out = Vec::with_capacity(HEAD_LEN + body.len() + 32);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let h = blake3::hash(&out);
    out.extend_from_slice(h.as_bytes());
    if out.len() as u64 > MAX_REF_OBJECT {
        return Err(super::oversized(
            &format!("ref {name}"),
            Some(out.len() as u64),
            MAX_REF_OBJECT,
        ));
    }
    Ok(out)
}

/// The history in a ref object stored under `name`, checked.
fn decode(name: &str, bytes: &[u8]) -> Result<Vec<RefEntry>> {
    let bad = |why: &str| Error::corrupt(format!("ref {name}: {why}"));
    if bytes.len() < 9 || bytes[..9] != MAGIC {
        return Err(bad("not a cowvfs ref object (bad magic)"));
    }
    if bytes.len() as u64 > MAX_REF_OBJECT {
        return Err(super::oversized(
            &format!("ref {name}"),
            Some(bytes.len() as u64),
            MAX_REF_OBJECT,
        ));
    }
    if bytes.len() < HEAD_LEN + 32 {
        return Err(bad("truncated"));
    }
    let version = u16::from_le_bytes([bytes[9], bytes[10]]);
    if version != VERSION {
        return Err(Error::with(
            ErrorKind::Unsupported,
            format!(
                "ref {name}: format version {version} is not supported (this build reads version {VERSION})"
            ),
        ));
    }
    let (before, trailer) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(before).as_bytes() != trailer {
        return Err(bad("does not match its trailing hash"));
    }
    let len = u32::from_le_bytes([bytes[11], bytes[12], bytes[13], bytes[14]]);
    let body = &before[HEAD_LEN..];
    if len as usize != body.len() {
        return Err(bad("body length disagrees"));
    }
    let rec: RefRecord = match postcard::take_from_bytes(body) {
        Ok((rec, [])) => rec,
        Ok(_) => return Err(bad("bytes after the record")),
        Err(e) => return Err(bad(&format!("undecodable record ({e})"))),
    };
    if rec.name != name {
        return Err(bad(&format!(
            "the object is ref {:?}'s, stored under another name",
            rec.name
        )));
    }
    if rec.history.is_empty() || rec.history.len() > HISTORY_KEPT {
        return Err(bad(&format!(
            "{} history entries (1 to {HISTORY_KEPT} allowed)",
            rec.history.len()
        )));
    }
    if rec.history.windows(2).any(|w| w[0].seq <= w[1].seq) {
        return Err(bad("history is not newest first"));
    }
    if rec
        .history
        .iter()
        .any(|e| e.by.len() > MAX_NOTE || e.via.len() > MAX_NOTE)
    {
        return Err(bad("an entry's note is too long"));
    }
    Ok(rec
        .history
        .into_iter()
        .map(|e| RefEntry {
            root: blake3::Hash::from_bytes(e.root),
            seq: e.seq,
            time: UNIX_EPOCH + Duration::from_millis(e.unix_ms),
            by: e.by,
            via: e.via,
            nonce: e.nonce,
        })
        .collect())
}

// -------------------------------------------------------------------------
// Reading and updating.

/// The ref `name` in `store`, or `None` if there is none.
pub fn read_ref(store: &dyn BlobStore, name: &str) -> Result<Option<Ref>> {
    check_name(name)?;
    let Some((bytes, version)) = store.get_ref(name)? else {
        return Ok(None);
    };
    let history = decode(name, &bytes).map_err(|e| {
        Error::with(
            e.kind(),
            format!("{}: {}", store.location(), e.context().unwrap_or_default()),
        )
    })?;
    Ok(Some(Ref {
        name: name.to_string(),
        history,
        version,
    }))
}

/// Every ref in `store`, by name.
pub fn list(store: &dyn BlobStore) -> Result<Vec<Ref>> {
    let mut names = store.list_refs()?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        // Deleted between the listing and the read: not a ref any more.
        if let Some(r) = read_ref(store, &n)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Every root a ref of `store` names, now or in its kept history, with
/// the ref's name: what garbage collection must keep.
pub fn reachable_roots(store: &dyn BlobStore) -> Result<Vec<(String, blake3::Hash)>> {
    let mut out = Vec::new();
    for r in list(store)? {
        for e in &r.history {
            out.push((r.name.clone(), e.root));
        }
    }
    Ok(out)
}

/// What an update expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Whatever the ref holds when the update reads it (or no ref): the
    /// write still fails if another writer moves it in between.
    Any,
    /// No ref by that name yet.
    Absent,
    /// The ref at this root.
    Root(blake3::Hash),
}

/// What [`update`] did.
#[derive(Clone, Debug)]
pub struct Updated {
    /// The root before, if the ref existed.
    pub old: Option<blake3::Hash>,
    /// The ref as written (or as found, if it already named the root).
    pub new: Ref,
    /// Whether anything was written: `false` when the ref already named
    /// the root.
    pub changed: bool,
}

/// Who is writing: `$USER@hostname`, as far as known.
pub(crate) fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string());
    format!("{user}@{host}")
}

/// A number no other write (in this process or, with overwhelming
/// likelihood, any other) uses.
fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    h.update(actor().as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(n)
}

/// Sets the ref `name` to `root` if it is as `expect` says, by a
/// compare-and-swap against the version read: a concurrent writer makes
/// this fail with [`ErrorKind::Busy`], never vanish. `via` says which
/// command wrote it. Setting a ref to the root it names writes nothing.
pub fn update(
    store: &dyn BlobStore,
    name: &str,
    root: &blake3::Hash,
    expect: Expect,
    via: &str,
) -> Result<Updated> {
    let current = read_ref(store, name)?;
    check_expect(store, name, expect, current.as_ref())?;
    set(store, name, root, current, via)
}

/// Whether `current` (the ref as read, if any) is what `expect` says.
fn check_expect(
    store: &dyn BlobStore,
    name: &str,
    expect: Expect,
    current: Option<&Ref>,
) -> Result<()> {
    match (expect, current) {
        (Expect::Any, _) | (Expect::Absent, None) => Ok(()),
        (Expect::Absent, Some(r)) => Err(Error::with(
            ErrorKind::Busy,
            format!(
                "ref {name} exists already, at {}; nothing was written",
                r.root().to_hex()
            ),
        )),
        (Expect::Root(want), Some(r)) if r.root() == want => Ok(()),
        (Expect::Root(want), Some(r)) => Err(Error::with(
            ErrorKind::Busy,
            format!(
                "ref {name} is at {}, not the expected {}; nothing was written",
                r.root().to_hex(),
                want.to_hex()
            ),
        )),
        (Expect::Root(want), None) => Err(Error::with(
            ErrorKind::NotFound,
            format!(
                "{}: no ref {name} (expected it at {})",
                store.location(),
                want.to_hex()
            ),
        )),
    }
}

/// Moves the ref `name` back to the root it held `steps` updates ago
/// (1: the one before the current), as a new update on top, so the
/// rollback is in the history too and can itself be undone. `expect`
/// applies to the current root, as for [`update`].
pub fn roll_back(
    store: &dyn BlobStore,
    name: &str,
    steps: usize,
    expect: Expect,
    via: &str,
) -> Result<Updated> {
    let current = read_ref(store, name)?;
    check_expect(store, name, expect, current.as_ref())?;
    let Some(current) = current else {
        return Err(Error::with(
            ErrorKind::NotFound,
            format!("{}: no ref {name}", store.location()),
        ));
    };
    let Some(back) = current.history.get(steps) else {
        return Err(Error::with(
            ErrorKind::InvalidInput,
            format!(
                "ref {name} has {} entries: it cannot go back {steps}",
                current.history.len()
            ),
        ));
    };
    let root = back.root;
    set(store, name, &root, Some(current), via)
}

/// Writes `name` -> `root` on top of `current` (as read), conditionally.
fn set(
    store: &dyn BlobStore,
    name: &str,
    root: &blake3::Hash,
    current: Option<Ref>,
    via: &str,
) -> Result<Updated> {
    if let Some(r) = current.as_ref().filter(|r| r.root() == *root) {
        return Ok(Updated {
            old: Some(r.root()),
            new: r.clone(),
            changed: false,
        });
    }
    let (old, mut history, expected) = match current {
        Some(r) => (Some(r.root()), r.history, Some(r.version)),
        None => (None, Vec::new(), None),
    };
    // A ref at the last number cannot move on: saturating would write a
    // history that is not newest first, which no later read accepts.
    let seq = match history.first() {
        None => 1,
        Some(e) => e.seq.checked_add(1).ok_or_else(|| {
            Error::with(
                ErrorKind::Corrupt,
                format!(
                    "ref {name} is at sequence number {}: it cannot move on",
                    e.seq
                ),
            )
        })?,
    };
    history.insert(
        0,
        RefEntry {
            root: *root,
            seq,
            time: SystemTime::now(),
            by: actor(),
            via: via.to_string(),
            nonce: nonce(),
        },
    );
    history.truncate(HISTORY_KEPT);
    let bytes = encode(name, &history)?;
    let version = match store.put_ref(name, &bytes, expected.as_ref()) {
        Ok(v) => v,
        // A request retried after its answer was lost finds its own write
        // there and fails the condition: that write is ours (the nonce
        // makes the bytes unique), so it succeeded.
        Err(e) if e.kind() == ErrorKind::Busy => match store.get_ref(name)? {
            Some((held, v)) if held == bytes => v,
            _ => return Err(e),
        },
        Err(e) => return Err(e),
    };
    // What was stored, read back as a reader would.
    let history = decode(name, &bytes)?;
    Ok(Updated {
        old,
        new: Ref {
            name: name.to_string(),
            history,
            version,
        },
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn h(s: &str) -> blake3::Hash {
        blake3::hash(s.as_bytes())
    }

    #[test]
    fn names() {
        for ok in [
            "base",
            "base-2024.11",
            "a",
            "A_b.c-d",
            &"x".repeat(MAX_NAME),
        ] {
            check_name(ok).unwrap();
        }
        let hex = h("r").to_hex().to_string();
        for bad in [
            "", ".", "..", ".hidden", "-flag", "a/b", "a..b", "a b", "a\n", "a\0", "é", &hex,
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let e = check_name(&"x".repeat(MAX_NAME + 1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NameTooLong);
    }

    #[test]
    fn format_round_trip_and_every_damage_refused() {
        let entries: Vec<RefEntry> = (0..3u64)
            .rev()
            .map(|i| RefEntry {
                root: h(&i.to_string()),
                seq: i + 1,
                time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i),
                by: "me@host".into(),
                via: "tag".into(),
                nonce: i,
            })
            .collect();
        let b = encode("base", &entries).unwrap();
        assert_eq!(decode("base", &b).unwrap(), entries);
        assert!(decode("other", &b).is_err(), "stored under another name");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(decode("base", &bad).is_err(), "flip at {i}");
        }
        for n in 0..b.len() {
            assert!(decode("base", &b[..n]).is_err(), "truncated to {n}");
        }
        let mut v2 = b.clone();
        v2[9] = 2;
        assert_eq!(
            decode("base", &v2).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        // Well formed and hashed, but out of order: refused.
        let mut swapped = entries.clone();
        swapped.swap(0, 1);
        let b = encode("base", &swapped).unwrap();
        assert!(decode("base", &b).is_err());
    }

    #[test]
    fn updates_keep_a_bounded_history_and_roll_back() {
        let s = MemStore::new();
        let u = update(&s, "base", &h("0"), Expect::Absent, "tag").unwrap();
        assert!(u.changed && u.old.is_none());
        for i in 1..(HISTORY_KEPT + 5) {
            update(&s, "base", &h(&i.to_string()), Expect::Any, "tag").unwrap();
        }
        let r = read_ref(&s, "base").unwrap().unwrap();
        assert_eq!(r.history.len(), HISTORY_KEPT);
        assert_eq!(r.root(), h(&(HISTORY_KEPT + 4).to_string()));
        assert_eq!(r.current().seq, HISTORY_KEPT as u64 + 5);
        let same = update(&s, "base", &r.root(), Expect::Root(r.root()), "tag").unwrap();
        assert!(!same.changed);
        let back = roll_back(&s, "base", 2, Expect::Root(r.root()), "rollback").unwrap();
        assert_eq!(back.new.root(), r.history[2].root);
        assert_eq!(back.new.history[1].root, r.root());
        let e = update(&s, "base", &h("x"), Expect::Root(h("nope")), "tag").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(roll_back(&s, "base", HISTORY_KEPT, Expect::Any, "rollback").is_err());
        assert_eq!(reachable_roots(&s).unwrap().len(), HISTORY_KEPT);
    }

    #[test]
    fn a_ref_at_the_last_sequence_number_is_refused_and_kept() {
        // Saturating to u64::MAX again wrote a history with two equal
        // numbers, which every later read refused.
        let s = MemStore::new();
        let top = RefEntry {
            root: h("top"),
            seq: u64::MAX,
            time: UNIX_EPOCH,
            by: "me@host".into(),
            via: "tag".into(),
            nonce: 1,
        };
        s.put_ref("base", &encode("base", &[top]).unwrap(), None)
            .unwrap();
        let e = update(&s, "base", &h("next"), Expect::Any, "tag").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("cannot move on"), "{e}");
        let r = read_ref(&s, "base").unwrap().unwrap();
        assert_eq!((r.root(), r.current().seq), (h("top"), u64::MAX));
    }
}
