//! The snapshot registry: every snapshot the server holds, by root hash,
//! with the names that point at them, under a memory budget.
//!
//! Each snapshot is charged what it keeps alive beyond what it shares: a
//! registered base its whole tree (each distinct chunk buffer once), a
//! snapshot a run saved an upper bound of the memory it adds to its base
//! (`charge.rs`). When a snapshot
//! goes, the ones saved from it take over its charge (they now keep its
//! nodes alive), so the total never undercounts; it may overcount when
//! several share what went. Past the budget the least recently used
//! snapshots without a name are evicted; with a store, any snapshot
//! already pushed may be (a name outlives it and reloads it on use).
//!
//! With a store, names are shared through its refs: naming a snapshot
//! here (a registration or a run's `save: "NAME"`) also sets the store's
//! ref NAME to it (a compare-and-swap, retried if another server moved
//! the ref in between: the last writer wins, none is lost unseen), and a
//! name this server does not hold is looked up in the store's refs on
//! every use, so a name another server moves is followed. A name held
//! here stays as set here until set or deleted here again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::Snapshot;
use crate::store::BlobStore;

use super::error::{ApiError, ApiResult, Code};

/// Bytes charged per snapshot beyond its data: its entry, names, hashes.
const ENTRY_COST: u64 = 1024;

/// One held snapshot.
#[derive(Debug)]
struct Entry {
    snap: Snapshot,
    cost: u64,
    names: BTreeSet<String>,
    /// The snapshot this one was saved from, while it is held.
    parent: Option<blake3::Hash>,
    /// When it was last used (a tick of the registry's clock).
    used: u64,
    /// Whether the store holds it (it may then be evicted, named or not).
    pushed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    by_root: HashMap<blake3::Hash, Entry>,
    /// Every name, and the root it points at (held or, with a store,
    /// evicted).
    names: HashMap<String, blake3::Hash>,
    total: u64,
    tick: u64,
    evicted: u64,
}

/// A snapshot and what the registry knows of it, for listings.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Root hash.
    pub root: blake3::Hash,
    /// Names pointing at it.
    pub names: Vec<String>,
    /// Bytes it is charged.
    pub cost: u64,
    /// Whether it is held in memory (else only in the store).
    pub held: bool,
    /// Whether the store holds it.
    pub pushed: bool,
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    budget: u64,
    store: Option<Arc<dyn BlobStore>>,
    cache: Option<Arc<dyn BlobStore>>,
    limits: crate::Limits,
}

/// Where a snapshot not held may be found.
enum Away {
    /// In the store, by this root.
    Root(blake3::Hash),
    /// In the store, by the ref of the name looked up.
    Ref,
}

/// What to insert.
pub struct NewSnapshot {
    /// The snapshot.
    pub snap: Snapshot,
    /// Its charge (see the module docs).
    pub cost: u64,
    /// A name to give it.
    pub name: Option<String>,
    /// The snapshot it was saved from.
    pub parent: Option<blake3::Hash>,
    /// Whether it came from the store (so it needs no push).
    pub in_store: bool,
}

/// Most names the server keeps, of snapshots and of modules each: a name
/// costs no snapshot memory, so without a bound renaming one snapshot
/// over and over would grow the server without end.
pub const MAX_NAMES: usize = 100_000;

/// The refusal of a new name past [`MAX_NAMES`].
pub fn too_many_names(what: &str) -> ApiError {
    ApiError::new(
        Code::LimitExceeded,
        format!("the server holds {MAX_NAMES} {what} names, its most; delete one first"),
    )
}

/// Checks a snapshot or module name: 1 to 128 of `A-Z a-z 0-9 . _ -`, not
/// starting with `.`, and not 64 hex digits (those are root hashes).
pub fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::bad(format!(
            "bad name {name:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with .)"
        )));
    }
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(format!(
            "bad name {name:?}: 64 hex digits name a root hash"
        )));
    }
    Ok(())
}

impl Registry {
    /// A registry holding at most `budget` bytes of snapshots, backed by
    /// `store` (with `cache` in front of it) if given; snapshots pulled
    /// from the store get `limits`.
    pub fn new(
        budget: u64,
        store: Option<Arc<dyn BlobStore>>,
        cache: Option<Arc<dyn BlobStore>>,
        limits: crate::Limits,
    ) -> Registry {
        Registry {
            inner: Mutex::new(Inner::default()),
            budget,
            store,
            cache,
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a store backs the registry.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// The snapshot `id` names (a name or a 64-digit hex root hash), if
    /// held; else where the store may have it.
    fn lookup(&self, id: &str) -> ApiResult<Result<(blake3::Hash, Snapshot), Away>> {
        let mut inner = self.lock();
        let root = match inner.names.get(id) {
            Some(r) => *r,
            None => match blake3::Hash::from_hex(id) {
                Ok(root) => root,
                Err(_) if self.store.is_some() => return Ok(Err(Away::Ref)),
                Err(_) => return Err(unknown(id)),
            },
        };
        inner.tick += 1;
        let tick = inner.tick;
        match inner.by_root.get_mut(&root) {
            Some(e) => {
                e.used = tick;
                Ok(Ok((root, e.snap.clone())))
            }
            None if self.store.is_some() => Ok(Err(Away::Root(root))),
            None => Err(unknown(id)),
        }
    }

    /// The snapshot `id` names, and its root: from memory, or (blocking)
    /// from the store (a name through its refs), opened lazily and then
    /// kept.
    pub fn get_blocking(&self, id: &str) -> ApiResult<(blake3::Hash, Snapshot)> {
        let root = match self.lookup(id)? {
            Ok(found) => return Ok(found),
            Err(Away::Root(root)) => root,
            Err(Away::Ref) => {
                let root = self.read_ref(id)?;
                if let Ok(found) = self.lookup(&root.to_hex())? {
                    return Ok(found);
                }
                root
            }
        };
        let Some(store) = &self.store else {
            return Err(unknown(id));
        };
        let snap = crate::store::open_lazy_with_limits(
            store.clone(),
            &root,
            self.cache.clone(),
            &self.limits,
        )
        .map_err(|e| match e.kind() {
            crate::ErrorKind::NotFound => unknown(id),
            _ => ApiError::internal(format!("cannot open {} from the store: {e}", root.to_hex())),
        })?;
        let cost = super::charge::held_cost(&snap);
        tracing::info!(root = %root.to_hex(), "opened a snapshot from the store");
        self.insert(NewSnapshot {
            snap: snap.clone(),
            cost,
            name: None,
            parent: None,
            in_store: true,
        })?;
        Ok((root, snap))
    }

    /// The root the store's ref `name` points at (blocking).
    fn read_ref(&self, name: &str) -> ApiResult<blake3::Hash> {
        let Some(store) = &self.store else {
            return Err(unknown(name));
        };
        if crate::store::refs::check_name(name).is_err() {
            return Err(unknown(name));
        }
        match crate::store::refs::read_ref(&**store, name) {
            Ok(Some(r)) => Ok(r.root()),
            Ok(None) => Err(unknown(name)),
            Err(e) => Err(ApiError::internal(format!(
                "cannot read the store's ref {name}: {e}"
            ))),
        }
    }

    /// Points the store's ref `name` at `root` (blocking): a
    /// compare-and-swap, tried again when another writer moved the ref
    /// between this one's read and write.
    fn set_ref(&self, store: &dyn BlobStore, name: &str, root: &blake3::Hash) -> ApiResult<()> {
        use crate::store::refs::{Expect, update};
        crate::store::refs::check_name(name)
            .map_err(|e| ApiError::bad(format!("{name:?} cannot name a ref in the store: {e}")))?;
        let mut tries = 0;
        loop {
            match update(store, name, root, Expect::Any, "cowvfs serve") {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == crate::ErrorKind::Busy && tries < 8 => tries += 1,
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "cannot set the store's ref {name}: {e}"
                    )));
                }
            }
        }
    }

    /// The snapshot `id` names, if held in memory (no store access).
    pub fn get_held(&self, id: &str) -> ApiResult<Option<(blake3::Hash, Snapshot)>> {
        Ok(self.lookup(id)?.ok())
    }

    /// Holds `new` (pushing it to the store first, if there is one), names
    /// it, and evicts what the budget needs. Blocking when there is a
    /// store. Refused with `limit_exceeded` when it cannot fit.
    pub fn insert(&self, new: NewSnapshot) -> ApiResult<blake3::Hash> {
        let root = new.snap.root_hash();
        let cost = new.cost.saturating_add(ENTRY_COST);
        let full = |inner: &Inner| {
            new.name
                .as_ref()
                .is_some_and(|n| !inner.names.contains_key(n) && inner.names.len() >= MAX_NAMES)
        };
        if full(&self.lock()) {
            return Err(too_many_names("snapshot"));
        }
        let held = self.lock().by_root.contains_key(&root);
        let mut pushed = new.in_store;
        if !held
            && !pushed
            && let Some(store) = &self.store
        {
            crate::store::push(&new.snap, &**store, &Default::default()).map_err(|e| {
                ApiError::internal(format!("cannot push {} to the store: {e}", root.to_hex()))
            })?;
            pushed = true;
        }
        // A name given here is the store's too (before it is given here,
        // so a failure names nothing).
        if let (Some(name), Some(store)) = (&new.name, &self.store) {
            self.set_ref(&**store, name, &root)?;
        }
        let mut inner = self.lock();
        if full(&inner) {
            return Err(too_many_names("snapshot"));
        }
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.by_root.contains_key(&root) {
            if !pushed && inner.total.saturating_add(cost) > self.budget {
                // Make room first, so a snapshot that cannot fit changes
                // nothing.
                let need = inner.total.saturating_add(cost) - self.budget;
                if evictable(&inner, None) < need {
                    return Err(ApiError::new(
                        Code::LimitExceeded,
                        format!(
                            "snapshot memory is full ({} of {} bytes held by named snapshots); \
                             delete some",
                            inner.total, self.budget
                        ),
                    ));
                }
            }
            let parent = new.parent.filter(|p| inner.by_root.contains_key(p));
            inner.by_root.insert(
                root,
                Entry {
                    snap: new.snap,
                    cost,
                    names: BTreeSet::new(),
                    parent,
                    used: tick,
                    pushed,
                },
            );
            inner.total = inner.total.saturating_add(cost);
        } else if let Some(e) = inner.by_root.get_mut(&root) {
            e.used = tick;
        }
        if let Some(name) = new.name {
            if let Some(old) = inner.names.insert(name.clone(), root)
                && let Some(e) = inner.by_root.get_mut(&old)
            {
                e.names.remove(&name);
            }
            if let Some(e) = inner.by_root.get_mut(&root) {
                e.names.insert(name);
            }
        }
        self.evict(&mut inner, root);
        Ok(root)
    }

    /// Evicts least recently used snapshots (never `keep`) until the
    /// total fits the budget.
    fn evict(&self, inner: &mut Inner, keep: blake3::Hash) {
        while inner.total > self.budget {
            let victim = inner
                .by_root
                .iter()
                .filter(|(r, e)| **r != keep && (e.names.is_empty() || e.pushed))
                .min_by_key(|(_, e)| e.used)
                .map(|(r, _)| *r);
            let Some(victim) = victim else { break };
            let pushed = inner.by_root.get(&victim).is_some_and(|e| e.pushed);
            remove_entry(inner, victim, !pushed);
            inner.evicted += 1;
            tracing::debug!(root = %victim.to_hex(), "evicted a snapshot");
        }
    }

    /// Deletes `id`: a name loses its snapshot's pointer (the snapshot
    /// stays while other names or its use keep it, else it becomes
    /// evictable); a root hash drops the snapshot and every name of it.
    pub fn delete(&self, id: &str) -> ApiResult<()> {
        let mut inner = self.lock();
        if let Some(root) = inner.names.remove(id) {
            if let Some(e) = inner.by_root.get_mut(&root) {
                e.names.remove(id);
            }
            return Ok(());
        }
        let root = blake3::Hash::from_hex(id).map_err(|_| unknown(id))?;
        if !inner.by_root.contains_key(&root) {
            return Err(unknown(id));
        }
        remove_entry(&mut inner, root, true);
        Ok(())
    }

    /// Every snapshot held, and every name of one only in the store.
    pub fn list(&self) -> Vec<Listed> {
        let inner = self.lock();
        let mut out: Vec<Listed> = inner
            .by_root
            .iter()
            .map(|(r, e)| Listed {
                root: *r,
                names: e.names.iter().cloned().collect(),
                cost: e.cost,
                held: true,
                pushed: e.pushed,
            })
            .collect();
        let mut away: HashMap<blake3::Hash, Vec<String>> = HashMap::new();
        for (n, r) in &inner.names {
            if !inner.by_root.contains_key(r) {
                away.entry(*r).or_default().push(n.clone());
            }
        }
        out.extend(away.into_iter().map(|(root, mut names)| {
            names.sort();
            Listed {
                root,
                names,
                cost: 0,
                held: false,
                pushed: true,
            }
        }));
        out.sort_by(|a, b| {
            a.names
                .cmp(&b.names)
                .then(a.root.as_bytes().cmp(b.root.as_bytes()))
        });
        out
    }

    /// The names and charge of a held snapshot.
    pub fn describe(&self, root: &blake3::Hash) -> Option<Listed> {
        let inner = self.lock();
        inner.by_root.get(root).map(|e| Listed {
            root: *root,
            names: e.names.iter().cloned().collect(),
            cost: e.cost,
            held: true,
            pushed: e.pushed,
        })
    }

    /// (bytes charged, budget, snapshots held, evictions so far).
    pub fn stats(&self) -> (u64, u64, usize, u64) {
        let inner = self.lock();
        (inner.total, self.budget, inner.by_root.len(), inner.evicted)
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(Code::UnknownSnapshot, format!("no snapshot {id:?}"))
}

/// What evicting every evictable snapshot but `keep` would free.
fn evictable(inner: &Inner, keep: Option<blake3::Hash>) -> u64 {
    inner
        .by_root
        .iter()
        .filter(|(r, e)| Some(**r) != keep && (e.names.is_empty() || e.pushed))
        .map(|(_, e)| e.cost)
        .sum()
}

/// Drops `root`; its children inherit its charge and parent. With
/// `drop_names`, names pointing at it go too (else they stay, to reload
/// it from the store).
fn remove_entry(inner: &mut Inner, root: blake3::Hash, drop_names: bool) {
    let Some(gone) = inner.by_root.remove(&root) else {
        return;
    };
    inner.total = inner.total.saturating_sub(gone.cost);
    let mut heirs = 0u64;
    for e in inner.by_root.values_mut() {
        if e.parent == Some(root) {
            e.parent = gone.parent;
            e.cost = e.cost.saturating_add(gone.cost);
            heirs += 1;
        }
    }
    inner.total = inner.total.saturating_add(gone.cost.saturating_mul(heirs));
    if drop_names {
        for n in &gone.names {
            inner.names.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vfs;

    fn snap(data: &[u8]) -> Snapshot {
        let mut v = Vfs::new();
        v.write_file("/f", data).unwrap();
        v.snapshot()
    }

    fn add(r: &Registry, s: &Snapshot, cost: u64, name: Option<&str>) -> ApiResult<blake3::Hash> {
        r.insert(NewSnapshot {
            snap: s.clone(),
            cost,
            name: name.map(str::to_string),
            parent: None,
            in_store: false,
        })
    }

    #[test]
    fn names_stop_at_their_bound_and_a_refusal_changes_nothing() {
        let r = Registry::new(1 << 30, None, None, Default::default());
        let s = snap(b"s");
        let root = add(&r, &s, 100, None).unwrap();
        for i in 0..MAX_NAMES {
            add(&r, &s, 100, Some(&format!("n{i}"))).unwrap();
        }
        let other = snap(b"other");
        let e = add(&r, &other, 100, Some("one-more")).unwrap_err();
        assert_eq!(e.code, Code::LimitExceeded, "{}", e.message);
        assert!(r.get_held("one-more").is_err());
        assert!(r.get_held(&other.root_hash().to_hex()).is_err());
        // An existing name may still be given again, to another snapshot.
        add(&r, &other, 100, Some("n7")).unwrap();
        assert_eq!(r.get_held("n7").unwrap().unwrap().0, other.root_hash());
        assert_eq!(r.get_held("n8").unwrap().unwrap().0, root);
    }

    #[test]
    fn unnamed_snapshots_go_least_recently_used_first() {
        let r = Registry::new(3 * (100 + ENTRY_COST), None, None, Default::default());
        let (a, b, c, d) = (snap(b"a"), snap(b"b"), snap(b"c"), snap(b"d"));
        let ra = add(&r, &a, 100, None).unwrap();
        let rb = add(&r, &b, 100, None).unwrap();
        add(&r, &c, 100, Some("c")).unwrap();
        // Using a makes b the oldest.
        r.get_blocking(ra.to_hex().as_str()).unwrap();
        add(&r, &d, 100, None).unwrap();
        assert!(r.get_blocking(ra.to_hex().as_str()).is_ok());
        let gone = r.get_blocking(rb.to_hex().as_str()).unwrap_err();
        assert_eq!(gone.code, Code::UnknownSnapshot);
        assert!(r.get_blocking("c").is_ok());
        assert_eq!(r.stats().3, 1);
        assert!(r.stats().0 <= r.stats().1);
    }

    #[test]
    fn named_snapshots_are_never_evicted_and_a_full_budget_refuses() {
        let r = Registry::new(2 * (100 + ENTRY_COST), None, None, Default::default());
        add(&r, &snap(b"a"), 100, Some("a")).unwrap();
        add(&r, &snap(b"b"), 100, Some("b")).unwrap();
        let e = add(&r, &snap(b"c"), 100, Some("c")).unwrap_err();
        assert_eq!(e.code, Code::LimitExceeded);
        assert!(r.get_blocking("c").is_err());
        // Dropping a name makes its snapshot evictable.
        r.delete("a").unwrap();
        add(&r, &snap(b"c"), 100, Some("c")).unwrap();
        assert!(r.get_blocking("b").is_ok() && r.get_blocking("c").is_ok());
    }

    #[test]
    fn children_inherit_the_charge_of_a_deleted_parent() {
        let r = Registry::new(u64::MAX, None, None, Default::default());
        let base = snap(b"base");
        let rb = add(&r, &base, 1000, None).unwrap();
        let child = snap(b"child");
        let rc = r
            .insert(NewSnapshot {
                snap: child,
                cost: 10,
                name: None,
                parent: Some(rb),
                in_store: false,
            })
            .unwrap();
        let before = r.stats().0;
        r.delete(rb.to_hex().as_str()).unwrap();
        // The child now keeps the base's nodes alive: still charged.
        assert_eq!(r.stats().0, before);
        assert_eq!(r.describe(&rc).unwrap().cost, 10 + 1000 + 2 * ENTRY_COST);
    }

    #[test]
    fn names_are_checked() {
        for good in ["demo", "a.b-c_1", "X"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let hex = "ab".repeat(32);
        for bad in ["", ".x", "a/b", "a b", &hex, &"n".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
