//! An S3-compatible bucket through the `object_store` crate, configured
//! the way other tools are: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
//! AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP (and the other AWS_*
//! variables object_store knows).
//!
//! object_store is async; the store owns one small tokio runtime for its
//! whole life and hands it each request, so callers stay synchronous (a
//! chunk fetched on first read happens inside a plain `read`). Requests go
//! through `spawn` and a channel rather than `block_on`, so a caller that
//! is itself inside some other tokio runtime (an async embedder) does not
//! panic.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::refs::{self, MAX_REF_OBJECT, RefVersion, ref_key};
use super::{
    BlobStore, MAX_CHUNK_OBJECT, MAX_MANIFEST_OBJECT, Pending, check_key, check_range, chunk_key,
    manifest_key, oversized, short_object,
};
use crate::error::{Error, ErrorKind, Result};

/// Requests in flight at once within one batch.
const IN_FLIGHT: usize = 16;

/// A store in an S3 bucket, under a key prefix.
pub struct S3Store {
    client: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    runtime: Option<tokio::runtime::Runtime>,
    /// Whether the server was seen to enforce conditional writes.
    conditions_checked: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location())
            .finish()
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // Never blocks, so dropping the store inside an async context is fine.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Most objects one listing returns. An endpoint that pages forever (or
/// a store past any real one's size) is an error, not a listing that grows
/// until the process is killed: 10 million objects hold about 2 GiB
/// listed. (The unit tests page past a smaller bound.)
#[cfg(not(test))]
const MAX_LISTED: usize = 10_000_000;
#[cfg(test)]
const MAX_LISTED: usize = 2_500;

fn s3_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::with(ErrorKind::Io, format!("{what}: {e}"))
}

impl S3Store {
    /// The store in `bucket` under `prefix` (may be empty), configured from
    /// the AWS_* environment variables. Retries a failed request a few
    /// times over about two seconds, then reports it.
    pub fn from_env(bucket: &str, prefix: &str) -> Result<S3Store> {
        S3Store::with_config(bucket, prefix, std::iter::empty::<(&str, &str)>())
    }

    /// Like [`S3Store::from_env`], with settings named like the environment
    /// variables (`AWS_ENDPOINT_URL`, ...) overriding the environment.
    pub fn with_config<K: AsRef<str>, V: Into<String>>(
        bucket: &str,
        prefix: &str,
        config: impl IntoIterator<Item = (K, V)>,
    ) -> Result<S3Store> {
        // TLS for https endpoints; a second install attempt is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Client options first: setting them later would replace the
        // AWS_ALLOW_HTTP the environment gave.
        let mut builder = AmazonS3Builder::new()
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
            });
        for (k, v) in std::env::vars_os() {
            if let (Some(k), Some(v)) = (k.to_str(), v.to_str())
                && k.starts_with("AWS_")
                && let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(key, v);
            }
        }
        for (k, v) in config {
            let key: AmazonS3ConfigKey = k.as_ref().to_ascii_lowercase().parse().map_err(|_| {
                Error::with(
                    ErrorKind::InvalidInput,
                    format!("unknown S3 setting {}", k.as_ref()),
                )
            })?;
            builder = builder.with_config(key, v);
        }
        let client = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| s3_err(&format!("s3://{bucket}"), e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cowvfs-s3")
            .enable_all()
            .build()
            .map_err(|e| s3_err("starting the S3 client runtime", e))?;
        Ok(S3Store {
            client: Arc::new(client),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            runtime: Some(runtime),
            conditions_checked: Default::default(),
        })
    }

    fn key(&self, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs `fut` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.start(fut)?.wait()
    }

    /// Starts `fut` on the store's runtime; the returned function waits
    /// for its outcome.
    fn start<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<Started<T>> {
        let Some(rt) = &self.runtime else {
            return Err(Error::with(ErrorKind::Io, "S3 client runtime is gone"));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        Ok(Started(rx))
    }

    /// Applies `op` to every key, up to [`IN_FLIGHT`] at once, in order.
    fn each<T, F, Fut>(&self, keys: Vec<ObjPath>, op: F) -> Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn ObjectStore>, ObjPath) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let client = self.client.clone();
        let results = self.run(async move {
            stream::iter(keys)
                .map(|k| op(client.clone(), k))
                .buffered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
        })?;
        results.into_iter().collect()
    }

    /// The same store with `delay` added before every request (GET, PUT,
    /// LIST, DELETE), through object_store's throttle wrapper: what a
    /// distant object store's round trip costs, for benchmarks. Requests
    /// in flight at once wait at once, as over a real network.
    #[doc(hidden)]
    pub fn with_request_delay(mut self, delay: Duration) -> S3Store {
        let config = ThrottleConfig {
            wait_delete_per_call: delay,
            wait_get_per_call: delay,
            wait_list_per_call: delay,
            wait_list_with_delimiter_per_call: delay,
            wait_put_per_call: delay,
            ..ThrottleConfig::default()
        };
        self.client = Arc::new(ThrottledStore::new(self.client.clone(), config));
        self
    }

    /// Writes an object with no checks at all (for tests that corrupt a
    /// bucket).
    #[doc(hidden)]
    pub fn put_raw(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let client = self.client.clone();
        let key = self.key(name);
        let what = format!("{}/{name}", self.location());
        self.run(async move { client.put(&key, PutPayload::from(bytes)).await })?
            .map(|_| ())
            .map_err(|e| s3_err(&what, e))
    }
}

impl S3Store {
    /// Reads an object (up to 4 GiB) by name under the prefix, unchecked
    /// (for benchmarks against a plain whole-file download).
    #[doc(hidden)]
    pub fn get_raw(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let fut = get(
            self.client.clone(),
            self.key(name),
            self.location(),
            4 << 30,
        );
        self.run(fut)?
    }
}

impl S3Store {
    /// Makes sure, once per store, that the server enforces conditional
    /// writes rather than ignoring the headers (some S3 look-alikes accept
    /// `If-None-Match` and `If-Match` and overwrite anyway, which would
    /// make every ref update win): a probe object `refs/.probe-N` is
    /// created, created again (must fail), replaced under a wrong ETag
    /// (must fail) and deleted. A server that ignores either condition
    /// gets an error naming it, and no ref is written through it.
    ///
    /// SeaweedFS (4.48, the test server) passes, and the race tests show
    /// its conditions atomic under concurrent writers. Versions before
    /// 4.18 checked the condition before the write without a lock
    /// (seaweedfs issue 8800), so racing writers could all succeed; no
    /// sequential probe can see that, so use a newer one.
    fn check_conditions(&self) -> Result<()> {
        use object_store::{ObjectStore, PutMode, UpdateVersion};
        use std::sync::atomic::Ordering;
        if self.conditions_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let nonce = blake3::hash(
            format!("{:?} {}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
        );
        let key = self.key(&format!("refs/.probe-{}", &nonce.to_hex()[..16]));
        let what = format!("{}/{key}", self.location());
        let client = self.client.clone();
        let verdict = self.run(async move {
            let create = || {
                client.put_opts(
                    &key,
                    PutPayload::from_static(b"probe"),
                    PutMode::Create.into(),
                )
            };
            create().await?;
            let again = create().await;
            let wrong_tag = PutMode::Update(UpdateVersion {
                e_tag: Some("\"00000000000000000000000000000000\"".to_string()),
                version: None,
            });
            let stale = client
                .put_opts(&key, PutPayload::from_static(b"probe"), wrong_tag.into())
                .await;
            let _ = client.delete(&key).await;
            use object_store::Error::{AlreadyExists, Precondition};
            let ignored = match (again, stale) {
                (Err(AlreadyExists { .. }), Err(Precondition { .. })) => None,
                (Ok(_), _) => Some("If-None-Match"),
                (_, Ok(_)) => Some("If-Match"),
                (Err(AlreadyExists { .. }), Err(e)) | (Err(e), _) => return Err(e),
            };
            Ok(ignored)
        })?;
        match verdict {
            Ok(None) => {
                self.conditions_checked.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(Some(header)) => Err(Error::with(
                ErrorKind::Unsupported,
                format!(
                    "{what}: the server ignores {header} on PUT, so a ref update could \
                     silently overwrite another; refs need an S3 server with conditional writes"
                ),
            )),
            Err(e @ object_store::Error::NotImplemented { .. }) => Err(Error::with(
                ErrorKind::Unsupported,
                format!("{what}: conditional writes are off: {e}"),
            )),
            Err(e) => Err(s3_err(&format!("{what}: checking conditional writes"), e)),
        }
    }
}

impl S3Store {
    /// A conditional PUT of the object `key` (named `name` in errors).
    fn swap(
        &self,
        key: &str,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        use object_store::{ObjectStore, PutMode, UpdateVersion};
        self.check_conditions()?;
        let key = self.key(key);
        let what = format!("{}/{key}", self.location());
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.tag.clone()),
                version: v.version.clone(),
            }),
        };
        let client = self.client.clone();
        let payload = PutPayload::from(bytes.to_vec());
        let res = self.run(async move { client.put_opts(&key, payload, mode.into()).await })?;
        match res {
            Ok(r) => Ok(RefVersion {
                tag: r
                    .e_tag
                    .ok_or_else(|| s3_err(&what, "the store gave no ETag"))?,
                version: r.version,
            }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(refs::conflict(name, "it was created meanwhile"))
            }
            Err(object_store::Error::Precondition { .. }) => {
                Err(refs::conflict(name, "its ETag is not the one read"))
            }
            Err(e @ object_store::Error::NotImplemented { .. }) => Err(Error::with(
                ErrorKind::Unsupported,
                format!("{what}: conditional writes are off: {e}"),
            )),
            Err(e) => Err(s3_err(&format!("writing {what}"), e)),
        }
    }
}

impl BlobStore for S3Store {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        let keys = addrs.iter().map(|a| self.key(&chunk_key(a))).collect();
        let loc = self.location();
        self.each(keys, move |c, k| {
            let loc = loc.clone();
            async move {
                match c.head(&k).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(s3_err(&format!("{loc}: checking {k}"), e)),
                }
            }
        })
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys = addrs.iter().map(|a| self.key(&chunk_key(a))).collect();
        let loc = self.location();
        self.each(keys, move |c, k| get(c, k, loc.clone(), MAX_CHUNK_OBJECT))
    }

    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        let items: Vec<(ObjPath, Bytes)> = chunks
            .iter()
            .map(|(a, b)| (self.key(&chunk_key(a)), Bytes::copy_from_slice(b)))
            .collect();
        self.put_all(items)
    }

    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        let k = self.key(&manifest_key(root));
        let fut = get(self.client.clone(), k, self.location(), MAX_MANIFEST_OBJECT);
        self.run(fut)?
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        // A single PUT: S3 never shows a partly written object.
        self.put_raw(&manifest_key(root), bytes.to_vec())
    }

    fn create_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<bool> {
        // One PUT with If-None-Match, without `check_conditions`: see the
        // trait's note on why a server that ignores it is safe here.
        use object_store::{ObjectStore, PutMode};
        let key = self.key(&manifest_key(root));
        let what = format!("{}/{key}", self.location());
        let client = self.client.clone();
        let payload = PutPayload::from(bytes.to_vec());
        let res =
            self.run(async move { client.put_opts(&key, payload, PutMode::Create.into()).await })?;
        match res {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            // A server that refuses the header outright: a plain write.
            Err(object_store::Error::NotImplemented { .. }) => {
                self.put_manifest(root, bytes)?;
                Ok(true)
            }
            Err(e) => Err(s3_err(&format!("writing {what}"), e)),
        }
    }

    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        refs::check_name(name)?;
        let fut = get_versioned(
            self.client.clone(),
            self.key(&ref_key(name)),
            self.location(),
        );
        self.run(fut)?
    }

    /// A conditional PUT: `If-None-Match: *` to create, `If-Match: ETAG`
    /// to replace (object_store's `PutMode::Create` and `PutMode::Update`);
    /// a store that refuses the condition makes this fail with a 412,
    /// which is the lost race.
    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        refs::check_name(name)?;
        self.swap(&ref_key(name), name, bytes, expected)
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        check_key(key)?;
        let fut = get_versioned(self.client.clone(), self.key(key), self.location());
        self.run(fut)?
    }

    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        check_key(key)?;
        self.swap(key, key, bytes, expected)
    }

    fn list_refs(&self) -> Result<Vec<String>> {
        use object_store::ObjectStore;
        let dir = self.key("refs");
        let strip = format!("{dir}/");
        let client = self.client.clone();
        let what = format!("{}/{dir}", self.location());
        self.run(async move {
            let mut names = Vec::new();
            let mut list = client.list(Some(&dir));
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(|e| s3_err(&format!("listing {what}"), e))?;
                let key = meta.location.to_string();
                // Only direct children named like refs.
                let Some(n) = key
                    .strip_prefix(&strip)
                    .filter(|n| refs::check_name(n).is_ok())
                else {
                    continue;
                };
                if names.len() >= refs::MAX_REFS {
                    return Err(Error::corrupt(format!(
                        "{what}: more than {} refs",
                        refs::MAX_REFS
                    )));
                }
                names.push(n.to_string());
            }
            Ok(names)
        })?
    }

    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_info(prefix)?.into_iter().map(|i| i.key).collect())
    }

    fn list_info(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>> {
        let top = prefix.trim_end_matches('/');
        check_key(top)?;
        let k = self.key(top);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let client = self.client.clone();
        let what = format!("{}: listing {top}/", self.location());
        let metas = self.run(async move {
            let mut metas = Vec::new();
            let mut list = client.list(Some(&k));
            while let Some(meta) = list.next().await {
                match meta {
                    Ok(_) if metas.len() >= MAX_LISTED => {
                        return Err(Error::corrupt(format!(
                            "{what}: more than {MAX_LISTED} objects"
                        )));
                    }
                    Ok(m) => metas.push(m),
                    // A bucket not made yet holds nothing (S3 servers that
                    // make a bucket on first write, as SeaweedFS does,
                    // answer so).
                    Err(e) if e.to_string().contains("NoSuchBucket") => return Ok(Vec::new()),
                    Err(e) => return Err(s3_err(&what, e)),
                }
            }
            Ok(metas)
        })??;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some(super::ObjectInfo {
                    key,
                    size: m.size,
                    modified: m.last_modified.into(),
                })
            })
            .collect())
    }

    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<ObjPath> = keys
            .iter()
            .map(|k| check_key(k).map(|()| self.key(k)))
            .collect::<Result<_>>()?;
        let loc = self.location();
        self.each(keys, move |c, k| get(c, k, loc.clone(), max))
    }

    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        self.get_ranges_into(reqs, &mut Vec::new())
    }

    fn get_ranges_into(
        &self,
        reqs: &[(&str, Range<u64>)],
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let items: Vec<(ObjPath, Range<u64>, Vec<u8>)> = reqs
            .iter()
            .map(|(k, r)| {
                check_key(k)?;
                check_range(k, r)?;
                let buf = super::buffers::fitting(spare, (r.end - r.start) as usize);
                Ok((self.key(k), r.clone(), buf.unwrap_or_default()))
            })
            .collect::<Result<_>>()?;
        let loc = self.location();
        let client = self.client.clone();
        let results = self.run(async move {
            stream::iter(items)
                .map(|(k, r, buf)| get_range(client.clone(), k, r, buf, loc.clone()))
                .buffered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
        })?;
        results.into_iter().collect()
    }

    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        let items: Vec<(ObjPath, Bytes)> = objs
            .iter()
            .map(|(k, b)| check_key(k).map(|()| (self.key(k), Bytes::copy_from_slice(b))))
            .collect::<Result<_>>()?;
        self.put_all(items)
    }

    fn put_owned_begin<'s>(&'s self, objs: Vec<(&str, Bytes)>) -> Pending<'s> {
        let items: Result<Vec<(ObjPath, Bytes)>> = objs
            .into_iter()
            .map(|(k, b)| check_key(k).map(|()| (self.key(k), b)))
            .collect();
        match items.and_then(|items| self.start(self.put_stream(items))) {
            Ok(started) => Box::new(move || started.wait()?),
            Err(e) => Box::new(move || Err(e)),
        }
    }

    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        let keys: Vec<ObjPath> = keys
            .iter()
            .map(|k| check_key(k).map(|()| self.key(k)))
            .collect::<Result<_>>()?;
        let loc = self.location();
        let client = self.client.clone();
        // One stream: object_store sends S3 bulk deletes (up to 1,000
        // names a request).
        let results = self.run(async move {
            let names = stream::iter(keys.into_iter().map(Ok)).boxed();
            client.delete_stream(names).collect::<Vec<_>>().await
        })?;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_err(&format!("{loc}: deleting"), e)),
            }
        }
        Ok(())
    }
}

impl S3Store {
    /// PUTs objects, up to [`IN_FLIGHT`] at once.
    fn put_all(&self, items: Vec<(ObjPath, Bytes)>) -> Result<()> {
        self.run(self.put_stream(items))?
    }

    /// [`put_all`](S3Store::put_all), to be run on the store's runtime.
    fn put_stream(
        &self,
        items: Vec<(ObjPath, Bytes)>,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let loc = self.location();
        let client = self.client.clone();
        async move {
            let results = stream::iter(items)
                .map(|(k, b)| {
                    let c = client.clone();
                    let loc = loc.clone();
                    async move {
                        c.put(&k, PutPayload::from(b))
                            .await
                            .map(|_| ())
                            .map_err(|e| s3_err(&format!("{loc}: writing {k}"), e))
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            results.into_iter().collect()
        }
    }
}

/// Work running on the store's runtime ([`S3Store::start`]).
struct Started<T>(mpsc::Receiver<T>);

impl<T> Started<T> {
    /// Waits for the outcome.
    fn wait(self) -> Result<T> {
        (self.0.recv()).map_err(|_| Error::with(ErrorKind::Io, "S3 request was cancelled"))
    }
}

/// Reads exactly `r` of an object into `buf` (emptied first): the body is
/// streamed and cut off past the range's length, and a body that ends
/// early (an object shorter than the index said) is an error naming the
/// object.
async fn get_range(
    c: Arc<dyn ObjectStore>,
    k: ObjPath,
    r: Range<u64>,
    mut buf: Vec<u8>,
    loc: String,
) -> Result<Option<Vec<u8>>> {
    let what = format!("{loc}/{k}");
    let want = r.end - r.start;
    if want == 0 {
        return Ok(Some(Vec::new()));
    }
    let opts = GetOptions::new().with_range(Some(r.clone()));
    let got = match c.get_opts(&k, opts).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        // A range starting past the end: the object is shorter than its
        // index says.
        Err(e) if e.to_string().contains("416") || e.to_string().contains("Range") => {
            return Err(short_object(&what, &r, 0));
        }
        Err(e) => return Err(s3_err(&format!("{loc}: reading {k}"), e)),
    };
    buf.clear();
    buf.reserve_exact(want as usize);
    let mut body = got.into_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| s3_err(&format!("{loc}: reading {k}"), e))?;
        if (buf.len() + piece.len()) as u64 > want {
            return Err(Error::corrupt(format!(
                "{what}: the server sent more than the {want} bytes asked"
            )));
        }
        buf.extend_from_slice(&piece);
    }
    if (buf.len() as u64) < want {
        return Err(short_object(&what, &r, buf.len() as u64));
    }
    Ok(Some(buf))
}

/// Reads an object of at most `bound` bytes: refused at once if its stated
/// size is larger, and the body is streamed and cut off past the bound, so
/// neither a wrong size nor a huge body makes the host hold more.
async fn get(
    c: Arc<dyn ObjectStore>,
    k: ObjPath,
    loc: String,
    bound: u64,
) -> Result<Option<Vec<u8>>> {
    let r = match c.get(&k).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(s3_err(&format!("{loc}: reading {k}"), e)),
    };
    let what = format!("{loc}/{k}");
    if r.meta.size > bound {
        return Err(oversized(&what, Some(r.meta.size), bound));
    }
    let mut buf = Vec::with_capacity(r.meta.size as usize);
    let mut body = r.into_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| s3_err(&format!("{loc}: reading {k}"), e))?;
        if (buf.len() + piece.len()) as u64 > bound {
            return Err(oversized(&what, None, bound));
        }
        buf.extend_from_slice(&piece);
    }
    Ok(Some(buf))
}

/// Reads a ref object (at most [`MAX_REF_OBJECT`] bytes, bounded like
/// [`get`]) with the ETag and version id a conditional write names.
async fn get_versioned(
    c: Arc<dyn ObjectStore>,
    k: ObjPath,
    loc: String,
) -> Result<Option<(Vec<u8>, RefVersion)>> {
    let r = match c.get(&k).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(s3_err(&format!("{loc}: reading {k}"), e)),
    };
    let what = format!("{loc}/{k}");
    if r.meta.size > MAX_REF_OBJECT {
        return Err(oversized(&what, Some(r.meta.size), MAX_REF_OBJECT));
    }
    let Some(tag) = r.meta.e_tag.clone() else {
        return Err(s3_err(
            &what,
            "the store gave no ETag, so the ref cannot be updated safely",
        ));
    };
    let version = RefVersion {
        tag,
        version: r.meta.version.clone(),
    };
    let mut buf = Vec::with_capacity(r.meta.size as usize);
    let mut body = r.into_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| s3_err(&format!("{loc}: reading {k}"), e))?;
        if (buf.len() + piece.len()) as u64 > MAX_REF_OBJECT {
            return Err(oversized(&what, None, MAX_REF_OBJECT));
        }
        buf.extend_from_slice(&piece);
    }
    Ok(Some((buf, version)))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers every request on `conn` with a listing page of 1,000 keys
    /// that says more follow.
    fn endless_pages(conn: TcpStream, pages: &AtomicUsize) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut out = conn;
        let mut line = String::new();
        loop {
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
            }
            let n = pages.fetch_add(1, Ordering::SeqCst);
            let mut body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>\
                 <IsTruncated>true</IsTruncated><NextContinuationToken>t{n}</NextContinuationToken>"
            );
            for i in 0..1000 {
                body += &format!(
                    "<Contents><Key>index/{n}-{i}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>\
                     <Size>1</Size><ETag>\"e\"</ETag></Contents>"
                );
            }
            body += "</ListBucketResult>";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            if out.write_all(head.as_bytes()).is_err() || out.write_all(body.as_bytes()).is_err() {
                return;
            }
        }
    }

    #[test]
    fn a_listing_that_never_ends_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let pages = Arc::new(AtomicUsize::new(0));
        let served = pages.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let served = served.clone();
                std::thread::spawn(move || endless_pages(conn, &served));
            }
        });
        let store = S3Store::with_config(
            "bucket",
            "",
            [
                ("AWS_ENDPOINT_URL", url.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "key"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_REGION", "us-east-1"),
            ],
        )
        .unwrap();
        let err = store.list_info("index/").unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("more than {MAX_LISTED} objects")),
            "{err}"
        );
        let n = pages.load(Ordering::SeqCst);
        assert!((3..=5).contains(&n), "{n} pages read");
        let err = store.list("index/").unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
