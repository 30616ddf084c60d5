//! A store wrapper that counts the requests and bytes crossing it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BlobStore, Pending, RefVersion};
use crate::error::Result;
use bytes::Bytes;

/// Requests and bytes that went through a [`Metered`] store.
#[derive(Debug, Default)]
pub struct Meter {
    /// Objects and ranges read (found or not): one per chunk, manifest,
    /// object or range asked for.
    pub gets: AtomicU64,
    /// Bytes of the objects read.
    pub bytes_in: AtomicU64,
    /// Objects written.
    pub puts: AtomicU64,
    /// Bytes written.
    pub bytes_out: AtomicU64,
    /// Existence checks.
    pub heads: AtomicU64,
    /// Listing requests: one per 1,000 names listed (an S3 listing's page),
    /// at least one per listing.
    pub lists: AtomicU64,
    /// Objects deleted.
    pub deletes: AtomicU64,
}

impl Meter {
    /// (gets, bytes in, puts, bytes out, existence checks) so far.
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            l(&self.gets),
            l(&self.bytes_in),
            l(&self.puts),
            l(&self.bytes_out),
            l(&self.heads),
        )
    }

    /// Every request so far: gets, puts, existence checks, listing pages
    /// and deletes.
    pub fn requests(&self) -> u64 {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        l(&self.gets) + l(&self.puts) + l(&self.heads) + l(&self.lists) + l(&self.deletes)
    }
}

/// A store that counts the requests and bytes going through it: what a
/// push, pull or lazy read really moved.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S: BlobStore> Metered<S> {
    /// Wraps `inner`; read the counts from [`Metered::meter`].
    pub fn new(inner: S) -> Metered<S> {
        Metered {
            inner,
            meter: Arc::new(Meter::default()),
        }
    }

    /// The counters, shared.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }
}

impl<S: BlobStore> BlobStore for Metered<S> {
    fn has_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<bool>> {
        self.meter
            .heads
            .fetch_add(addrs.len() as u64, Ordering::Relaxed);
        self.inner.has_chunks(addrs)
    }

    fn get_chunks(&self, addrs: &[blake3::Hash]) -> Result<Vec<Option<Vec<u8>>>> {
        let got = self.inner.get_chunks(addrs)?;
        let m = &self.meter;
        m.gets.fetch_add(addrs.len() as u64, Ordering::Relaxed);
        let bytes: usize = got.iter().flatten().map(Vec::len).sum();
        m.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn put_chunks(&self, chunks: &[(blake3::Hash, &[u8])]) -> Result<()> {
        self.inner.put_chunks(chunks)?;
        let m = &self.meter;
        m.puts.fetch_add(chunks.len() as u64, Ordering::Relaxed);
        let bytes: usize = chunks.iter().map(|(_, b)| b.len()).sum();
        m.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }

    fn get_manifest(&self, root: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        let got = self.inner.get_manifest(root)?;
        self.meter.gets.fetch_add(1, Ordering::Relaxed);
        let n = got.as_ref().map_or(0, Vec::len);
        self.meter.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn put_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        self.inner.put_manifest(root, bytes)?;
        self.meter.puts.fetch_add(1, Ordering::Relaxed);
        self.meter
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn get_ref(&self, name: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        let got = self.inner.get_ref(name)?;
        self.meter.gets.fetch_add(1, Ordering::Relaxed);
        let n = got.as_ref().map_or(0, |(b, _)| b.len());
        self.meter.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn put_ref(
        &self,
        name: &str,
        bytes: &[u8],
        expected: Option<&RefVersion>,
    ) -> Result<RefVersion> {
        let v = self.inner.put_ref(name, bytes, expected)?;
        self.meter.puts.fetch_add(1, Ordering::Relaxed);
        self.meter
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(v)
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, RefVersion)>> {
        let got = self.inner.get_versioned(key)?;
        self.meter.gets.fetch_add(1, Ordering::Relaxed);
        let n = got.as_ref().map_or(0, |(b, _)| b.len());
        self.meter.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&RefVersion>) -> Result<RefVersion> {
        // A refused conditional write was a request all the same.
        let v = self.inner.put_if(key, bytes, expected);
        self.meter.puts.fetch_add(1, Ordering::Relaxed);
        self.meter
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        v
    }

    fn create_manifest(&self, root: &blake3::Hash, bytes: &[u8]) -> Result<bool> {
        // One conditional PUT, refused or not.
        let v = self.inner.create_manifest(root, bytes);
        self.meter.puts.fetch_add(1, Ordering::Relaxed);
        self.meter
            .bytes_out
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        v
    }

    fn list_refs(&self) -> Result<Vec<String>> {
        self.meter.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.list_refs()
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let got = self.inner.list(prefix)?;
        let pages = got.len().div_ceil(1000).max(1);
        self.meter.lists.fetch_add(pages as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn list_info(&self, prefix: &str) -> Result<Vec<super::ObjectInfo>> {
        let got = self.inner.list_info(prefix)?;
        let pages = got.len().div_ceil(1000).max(1);
        self.meter.lists.fetch_add(pages as u64, Ordering::Relaxed);
        Ok(got)
    }

    fn get_objects(&self, keys: &[&str], max: u64) -> Result<Vec<Option<Vec<u8>>>> {
        let got = self.inner.get_objects(keys, max)?;
        self.count_in(keys.len(), &got);
        Ok(got)
    }

    fn get_ranges(&self, reqs: &[(&str, Range<u64>)]) -> Result<Vec<Option<Vec<u8>>>> {
        let got = self.inner.get_ranges(reqs)?;
        self.count_in(reqs.len(), &got);
        Ok(got)
    }

    fn get_ranges_into(
        &self,
        reqs: &[(&str, Range<u64>)],
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let got = self.inner.get_ranges_into(reqs, spare)?;
        self.count_in(reqs.len(), &got);
        Ok(got)
    }

    fn put_objects(&self, objs: &[(&str, &[u8])]) -> Result<()> {
        self.inner.put_objects(objs)?;
        self.count_out(objs.len(), objs.iter().map(|(_, b)| b.len()).sum());
        Ok(())
    }

    fn put_owned_begin<'s>(&'s self, objs: Vec<(&str, Bytes)>) -> Pending<'s> {
        let (n, bytes) = (objs.len(), objs.iter().map(|(_, b)| b.len()).sum());
        let wait = self.inner.put_owned_begin(objs);
        Box::new(move || {
            wait()?;
            self.count_out(n, bytes);
            Ok(())
        })
    }

    fn delete_objects(&self, keys: &[&str]) -> Result<()> {
        self.inner.delete_objects(keys)?;
        self.meter
            .deletes
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl<S> Metered<S> {
    fn count_out(&self, puts: usize, bytes: usize) {
        let m = &self.meter;
        m.puts.fetch_add(puts as u64, Ordering::Relaxed);
        m.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn count_in(&self, asked: usize, got: &[Option<Vec<u8>>]) {
        let m = &self.meter;
        m.gets.fetch_add(asked as u64, Ordering::Relaxed);
        let bytes: usize = got.iter().flatten().map(Vec::len).sum();
        m.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
