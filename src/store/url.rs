//! Finding a store and the host's chunk cache: store URLs
//! (`s3://bucket/prefix`, `file:///dir`, a directory), `URL/ROOT` and
//! `URL/NAME` names of trees (a root hash, or a ref resolved to its
//! current root: [`resolve`]), and the cache that sits in front of a remote store, pruned now
//! and then to its size limit.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "s3")]
use super::S3Store;
use super::{BlobStore, DirStore, open_lazy_with_limits};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::Limits;
use crate::vfs::Snapshot;

/// Splits `URL/ROOT` (what `cowvfs pull` and `run --from` take) into the
/// store URL and the root hash: the last path component, 64 hex digits.
pub fn split_root(url_with_root: &str) -> Result<(&str, blake3::Hash)> {
    let bad = || {
        Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{url_with_root}: expected STORE/ROOT, ROOT being the 64-digit hex root hash \
                 that `cowvfs checkpoint info` prints"
            ),
        )
    };
    let t = url_with_root.trim_end_matches('/');
    let (url, root) = t.rsplit_once('/').ok_or_else(bad)?;
    if root.len() != 64 {
        return Err(bad());
    }
    let root = blake3::Hash::from_hex(root).map_err(|_| bad())?;
    // "/ROOT" or "s3://ROOT" would lose the store itself.
    if url.is_empty() || url.ends_with(':') || url.ends_with(":/") || url.ends_with("//") {
        return Err(bad());
    }
    Ok((url, root))
}

/// A tree named by the last part of `STORE/ROOT` or `STORE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeName {
    /// A root hash (64 hex digits).
    Root(blake3::Hash),
    /// A ref, to be read from the store (see [`refs`](super::refs)).
    Ref(String),
}

impl TreeName {
    /// A root (64 hex digits; no ref may be named so) or a ref name.
    pub fn parse(s: &str) -> Result<TreeName> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            let h = blake3::Hash::from_hex(s)
                .map_err(|e| Error::with(ErrorKind::InvalidInput, format!("{s}: {e}")))?;
            return Ok(TreeName::Root(h));
        }
        super::refs::check_name(s).map_err(|e| {
            Error::with(
                e.kind(),
                format!(
                    "{s:?} is neither a 64-digit root hash nor a ref name: {}",
                    e.context().unwrap_or_default()
                ),
            )
        })?;
        Ok(TreeName::Ref(s.to_string()))
    }

    /// The root it names in `store`: itself, or the ref's current root.
    pub fn resolve(&self, store: &dyn BlobStore) -> Result<blake3::Hash> {
        match self {
            TreeName::Root(h) => Ok(*h),
            TreeName::Ref(name) => match super::refs::read_ref(store, name)? {
                Some(r) => Ok(r.root()),
                None => Err(Error::with(
                    ErrorKind::NotFound,
                    format!(
                        "{}: no ref {name} (`cowvfs tags STORE` lists the refs)",
                        store.location()
                    ),
                )),
            },
        }
    }
}

/// Splits `URL/ROOT` or `URL/NAME` (what `cowvfs pull` and `run --from`
/// take) into the store URL and what names the tree: the last path
/// component, a root hash or a ref name.
pub fn split_tree(target: &str) -> Result<(&str, TreeName)> {
    let bad = |why: String| {
        Error::with(
            ErrorKind::InvalidInput,
            format!(
                "{target}: expected STORE/ROOT or STORE/NAME, ROOT being a 64-digit hex root \
                 hash and NAME a ref ({why})"
            ),
        )
    };
    let t = target.trim_end_matches('/');
    let (url, last) = t
        .rsplit_once('/')
        .ok_or_else(|| bad("no store named".into()))?;
    // "/NAME" or "s3://NAME" would lose the store itself.
    if url.is_empty() || url.ends_with(':') || url.ends_with(":/") || url.ends_with("//") {
        return Err(bad("no store named".into()));
    }
    let name = TreeName::parse(last).map_err(|e| bad(e.context().unwrap_or_default().into()))?;
    Ok((url, name))
}

/// Opens the store that `URL/ROOT` or `URL/NAME` is in and finds the
/// root: the one place a ref name on a command line becomes a tree, so
/// `pull`, `run --from` and `tag` all read it the same way. Returns the
/// store's URL, the store and the root.
pub fn resolve(target: &str) -> Result<(&str, Arc<dyn BlobStore>, blake3::Hash)> {
    let (url, name) = split_tree(target)?;
    let store = open_store(url, false)?;
    let root = name.resolve(&*store)?;
    Ok((url, store, root))
}

/// Opens the store at `url`: `s3://bucket/prefix` (needs the `s3`
/// feature; configured from the AWS_* environment variables),
/// `file:///path`, or a plain directory path. `create` makes a missing
/// directory store (for pushing); otherwise it is an error.
pub fn open_store(url: &str, create: bool) -> Result<Arc<dyn BlobStore>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!("{url}: no bucket named"),
            ));
        }
        #[cfg(feature = "s3")]
        return Ok(Arc::new(S3Store::from_env(bucket, prefix)?));
        #[cfg(not(feature = "s3"))]
        return Err(Error::with(
            ErrorKind::Unsupported,
            format!("{url}: cowvfs was built without the `s3` feature ({bucket}/{prefix})"),
        ));
    }
    let path = match url.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        Some(_) => {
            return Err(Error::with(
                ErrorKind::InvalidInput,
                format!("{url}: a file URL needs an absolute path (file:///dir)"),
            ));
        }
        None if url.contains("://") => {
            return Err(Error::with(
                ErrorKind::Unsupported,
                format!(
                    "{url}: unknown store (use s3://bucket/prefix, file:///dir or a directory)"
                ),
            ));
        }
        None => PathBuf::from(url),
    };
    if !create && !path.join("manifests").is_dir() {
        return Err(Error::with(
            ErrorKind::NotFound,
            format!("{}: not a cowvfs store", path.display()),
        ));
    }
    Ok(Arc::new(DirStore::open(path)?))
}

/// The host's chunk cache: `$COWVFS_CACHE`, else `$XDG_CACHE_HOME/cowvfs`,
/// else `~/.cache/cowvfs`. `COWVFS_CACHE=none` turns it off.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(c) = std::env::var_os("COWVFS_CACHE") {
        return (!c.is_empty() && c != "none").then(|| PathBuf::from(c));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("cowvfs"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("cowvfs"))
}

/// The most chunk bytes the host's cache keeps: `$COWVFS_CACHE_MAX` (a
/// size such as `2G`, see [`parse_size`](crate::parse_size)), else 10 GiB.
pub fn cache_max() -> Result<u64> {
    match std::env::var("COWVFS_CACHE_MAX") {
        Ok(s) => crate::parse_size(&s)
            .map_err(|e| Error::with(ErrorKind::InvalidInput, format!("COWVFS_CACHE_MAX: {e}"))),
        Err(_) => Ok(DEFAULT_CACHE_MAX),
    }
}

const DEFAULT_CACHE_MAX: u64 = 10 << 30;

/// How often a process that opens the cache checks its size.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Starts a background prune of the cache down to [`cache_max`] if no
/// process has pruned it for [`PRUNE_EVERY`] (a marker file's time says
/// when one did), so the cache stays bounded without slowing a start.
fn prune_now_and_then(cache: &DirStore, max: u64) -> Option<std::thread::JoinHandle<()>> {
    let marker = cache.root().join(".pruned");
    let recent = fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < PRUNE_EVERY);
    // Claim the turn first, so processes starting together prune once.
    if recent || fs::write(&marker, b"").is_err() {
        return None;
    }
    let cache = cache.clone();
    Some(std::thread::spawn(move || match cache.prune_chunks(max) {
        Ok(s) if s.removed > 0 => tracing::info!(
            removed = s.removed,
            removed_bytes = s.removed_bytes,
            kept_bytes = s.bytes - s.removed_bytes,
            "pruned the chunk cache"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("pruning the chunk cache: {e}"),
    }))
}

/// The cache to put in front of a store at `url`: none for a local
/// directory (it is a cache already), else the default cache if it can be
/// opened. Opening it may prune it in the background (see [`cache_max`]).
pub fn cache_for(url: &str) -> Option<Arc<dyn BlobStore>> {
    if !url.starts_with("s3://") {
        return None;
    }
    let dir = default_cache_dir()?;
    match DirStore::open(&dir) {
        Ok(d) => {
            match cache_max() {
                Ok(max) => drop(prune_now_and_then(&d, max)),
                Err(e) => tracing::warn!("chunk cache not pruned: {e}"),
            }
            Some(Arc::new(d))
        }
        Err(e) => {
            tracing::warn!("chunk cache off: {e}");
            None
        }
    }
}

/// Opens `URL/ROOT` (or `URL/NAME`, a ref: its current root) lazily (see
/// [`open_lazy`](super::open_lazy)) with the default cache: what
/// `cowvfs run --from` uses.
pub fn open_url(url_with_root: &str) -> Result<Snapshot> {
    open_url_with_limits(url_with_root, &Limits::default())
}

/// [`open_url`] under `limits` (see [`open_lazy_with_limits`]).
pub fn open_url_with_limits(url_with_root: &str, limits: &Limits) -> Result<Snapshot> {
    let (url, store, root) = resolve(url_with_root)?;
    open_lazy_with_limits(store, &root, cache_for(url), limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_the_cache_prunes_it_at_most_every_few_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DirStore::open(dir.path()).unwrap();
        let a = blake3::hash(b"one");
        cache.put_chunks(&[(a, b"one")]).unwrap();
        // No marker yet: a prune runs, in the background.
        let job = prune_now_and_then(&cache, 0).expect("a prune starts");
        job.join().unwrap();
        assert_eq!(cache.has_chunks(&[a]).unwrap(), [false]);
        assert!(dir.path().join(".pruned").is_file());
        // Pruned a moment ago: the next open leaves the cache alone.
        cache.put_chunks(&[(a, b"one")]).unwrap();
        assert!(prune_now_and_then(&cache, 0).is_none());
        assert_eq!(cache.has_chunks(&[a]).unwrap(), [true]);
    }

    #[test]
    fn urls() {
        let root = blake3::hash(b"r");
        let hex = root.to_hex();
        let s = format!("s3://bucket/some/prefix/{hex}");
        assert_eq!(split_root(&s).unwrap(), ("s3://bucket/some/prefix", root));
        let s = format!("/var/store/{hex}/");
        assert_eq!(split_root(&s).unwrap(), ("/var/store", root));
        assert!(split_root("s3://bucket/prefix").is_err());
        assert!(split_root(&format!("s3://{hex}")).is_err());
        assert!(split_root(&hex).is_err());
        assert_eq!(
            split_tree(&format!("s3://bucket/p/{hex}")).unwrap(),
            ("s3://bucket/p", TreeName::Root(root))
        );
        assert_eq!(
            split_tree("s3://bucket/p/base").unwrap(),
            ("s3://bucket/p", TreeName::Ref("base".into()))
        );
        assert_eq!(
            split_tree("/var/store/base-2/").unwrap(),
            ("/var/store", TreeName::Ref("base-2".into()))
        );
        for bad in [
            "s3://bucket",
            "base",
            "/base",
            "/s/.hidden",
            "/s/a..b",
            "s3:///x",
        ] {
            let e = split_tree(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        assert!(open_store("gs://bucket", true).is_err());
        assert!(open_store("file://relative", true).is_err());
        assert_eq!(
            open_store("/nonexistent/store", false).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
