//! Fetching chunks from a store: packed chunks by ranged reads, adjacent
//! chunks of one pack (and those a small gap apart) coalesced into one
//! request, many requests handed to the store at once; loose chunks (a
//! store written before packs) one object each. Every chunk is checked
//! against its address and length before anyone sees it. A request's
//! buffer, once every chunk cut from it is dropped, goes back to a spare
//! list for a later request of the same fetch to read into.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::buffers::Spare;
use super::catalog::{Catalog, ChunkLoc};
use super::{BlobStore, MAX_RANGE_REQUEST, io_err};
use crate::error::{Error, ErrorKind, Result};

/// Chunks of one pack at most this far apart are read in one request
/// (the gap's bytes cost less than another round trip).
pub(crate) const GAP: u64 = 256 << 10;
/// Longest coalesced request (16 MiB).
pub(crate) const MAX_SPAN: u64 = 16 << 20;
/// Times a fetch lists and reads the index again for chunks it cannot
/// place.
const REFRESHES: usize = 3;
/// Loose chunk objects asked for per batch call.
const LOOSE_BATCH: usize = 32;

/// One ranged read and the chunks it carries.
struct Span {
    pack: blake3::Hash,
    /// The pack's object name, made once for the read and its checks.
    key: String,
    range: Range<u64>,
    /// (position in the caller's list, location).
    members: Vec<(usize, ChunkLoc)>,
}

/// Groups located chunks into coalesced reads.
fn spans(mut located: Vec<(usize, ChunkLoc)>) -> Vec<Span> {
    located.sort_by_key(|(_, l)| (*l.pack.as_bytes(), l.offset));
    let mut out: Vec<Span> = Vec::new();
    for (i, l) in located {
        let end = l.offset + l.len as u64;
        if let Some(s) = out.last_mut()
            && s.pack == l.pack
            && l.offset <= s.range.end + GAP
            && end.max(s.range.end) - s.range.start <= MAX_SPAN
        {
            s.range.end = s.range.end.max(end);
            s.members.push((i, l));
            continue;
        }
        out.push(Span {
            pack: l.pack,
            key: super::pack::pack_key(&l.pack),
            range: l.offset..end,
            members: vec![(i, l)],
        });
    }
    out
}

/// Fetches `wants` (address, length) from `store`, packed ones as
/// `catalog` places them, and hands each verified chunk to `sink` with its
/// position in `wants`, in no set order. At most about `batch_bytes` are
/// held at once. A chunk found nowhere (after one refresh of the catalog,
/// for a push that landed meanwhile) or found damaged is an error naming
/// it and where it was looked for. Packed chunks of the right length are
/// also hashed against their address unless `verify` is false, for a
/// caller that checks every chunk itself before use (a lazy tree's blobs)
/// and keeps none unchecked.
pub(crate) fn fetch_chunks(
    store: &dyn BlobStore,
    catalog: &Catalog,
    wants: &[(blake3::Hash, u32)],
    batch_bytes: u64,
    verify: bool,
    sink: &mut dyn FnMut(usize, Vec<u8>) -> Result<()>,
) -> Result<()> {
    fetch_shared(store, catalog, wants, batch_bytes, verify, &mut |i, b| {
        sink(i, b.to_vec())
    })
}

/// [`fetch_chunks`], handing on each chunk as a slice of the buffer its
/// request was read into (no copy). Requests go out roughly in the order
/// of `wants` (by the first position each one serves), so a caller that
/// consumes chunks in that order holds few of them.
pub(crate) fn fetch_shared(
    store: &dyn BlobStore,
    catalog: &Catalog,
    wants: &[(blake3::Hash, u32)],
    batch_bytes: u64,
    verify: bool,
    sink: &mut dyn FnMut(usize, Bytes) -> Result<()>,
) -> Result<()> {
    fetch_placed(store, catalog, wants, batch_bytes, verify, None, sink)
}

/// Called with each chunk right after it is checked (before it goes to
/// the sink), on whichever thread checked it, while its bytes are still
/// in the processor's cache.
pub(crate) type Place<'a> = &'a (dyn Fn(usize, &[u8]) -> Result<()> + Sync);

/// [`fetch_shared`], also handing each chunk to `place` (if given) as
/// soon as it is checked: the pull writes it to its file there.
pub(crate) fn fetch_placed(
    store: &dyn BlobStore,
    catalog: &Catalog,
    wants: &[(blake3::Hash, u32)],
    batch_bytes: u64,
    verify: bool,
    place: Option<Place<'_>>,
    sink: &mut dyn FnMut(usize, Bytes) -> Result<()>,
) -> Result<()> {
    Fetch {
        store,
        catalog,
        wants,
        batch_bytes,
        verify,
        place,
        sink,
    }
    .run()
}

/// One fetch: what every step of it works with.
struct Fetch<'a, 's> {
    store: &'a dyn BlobStore,
    catalog: &'a Catalog,
    /// (address, length) of every chunk wanted; steps name them by
    /// position in this list.
    wants: &'a [(blake3::Hash, u32)],
    batch_bytes: u64,
    verify: bool,
    place: Option<Place<'a>>,
    sink: &'s mut dyn FnMut(usize, Bytes) -> Result<()>,
}

impl Fetch<'_, '_> {
    /// See [`fetch_placed`].
    fn run(&mut self) -> Result<()> {
        let (mut packed, mut loose) = (Vec::new(), Vec::new());
        for (i, (addr, _)) in self.wants.iter().enumerate() {
            match self.catalog.locate(addr) {
                Some(l) => packed.push((i, l)),
                None => loose.push(i),
            }
        }
        let not_found = self.loose(&loose)?;
        if !not_found.is_empty() {
            // Perhaps packed by a push since the catalog was read, or
            // listed in an index object that a garbage collection merged
            // into a new one between our listing and our read (and perhaps
            // again, when collections run back to back): list and read
            // again, a few times while something is still missing.
            for _ in 0..REFRESHES {
                self.catalog.refresh(self.store, None)?;
                if not_found
                    .iter()
                    .all(|&i| self.catalog.locate(&self.wants[i].0).is_some())
                {
                    break;
                }
            }
            for i in not_found {
                let Some(l) = self.catalog.locate(&self.wants[i].0) else {
                    let damage = self.catalog.damage();
                    let also = if damage.is_empty() {
                        String::new()
                    } else {
                        format!(" (damaged index objects: {})", damage.join("; "))
                    };
                    return Err(io_err(format!(
                        "{}: chunk {} is missing: in no pack and not a loose object{also}",
                        self.store.location(),
                        self.wants[i].0.to_hex()
                    )));
                };
                packed.push((i, l));
            }
        }
        let (gone, mut bad) = self.packed(packed)?;
        if !gone.is_empty() {
            bad.extend(self.after_gone(gone)?);
        }
        if bad.is_empty() {
            return Ok(());
        }
        self.other_copies(bad)
    }

    /// For chunks whose pack is gone (`gone`: positions with the pack's
    /// key): a garbage collection repacked its live chunks into a new pack
    /// (listed by a new index object) before deleting it. Reads the index
    /// again, from scratch, and fetches them from where it places them
    /// now; the positions whose copy there was wrong, with that pack's key.
    fn after_gone(&mut self, gone: Vec<(usize, String)>) -> Result<Vec<(usize, String)>> {
        self.catalog.reload(self.store, None)?;
        let mut again = Vec::with_capacity(gone.len());
        for (i, pack) in gone {
            match self.catalog.locate(&self.wants[i].0) {
                Some(l) if l.pack_key() != pack => again.push((i, l)),
                _ => {
                    return Err(io_err(format!(
                        "{}: {pack} is missing (it holds chunk {}) and no other pack holds it",
                        self.store.location(),
                        self.wants[i].0.to_hex()
                    )));
                }
            }
        }
        let (still, bad) = self.packed(again)?;
        match still.first() {
            None => Ok(bad),
            Some((i, pack)) => Err(io_err(format!(
                "{}: {pack} is missing (it holds chunk {})",
                self.store.location(),
                self.wants[*i].0.to_hex()
            ))),
        }
    }

    /// For chunks whose packed copy had the wrong bytes (`bad`: positions
    /// with the pack's key): each is fetched from another pack the index
    /// objects list it in, pack after pack, and as a last resort from its
    /// loose object. A chunk with no good copy anywhere is an error naming
    /// it and every pack whose copy was wrong.
    fn other_copies(&mut self, bad: Vec<(usize, String)>) -> Result<()> {
        // Position -> the packs tried for it; each round adds one per
        // chunk still wanted, and a chunk's locations are finite, so this
        // ends.
        let mut tried: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, k) in bad {
            tried.entry(i).or_default().push(k);
        }
        let mut todo: Vec<usize> = tried.keys().copied().collect();
        while !todo.is_empty() {
            let (mut next, mut loose) = (Vec::new(), Vec::new());
            for i in todo.drain(..) {
                let packs = &tried[&i];
                let other = self
                    .catalog
                    .locate_all(&self.wants[i].0)
                    .into_iter()
                    .find(|l| !packs.contains(&l.pack_key()));
                match other {
                    Some(l) => next.push((i, l)),
                    None => loose.push(i),
                }
            }
            let failed = self.loose_checked(&loose)?;
            if let Some(&(i, lacking)) = failed.first() {
                let packs = tried[&i].join(", ");
                let loose = if lacking {
                    "no loose object"
                } else {
                    "a wrong loose object"
                };
                return Err(Error::with(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: chunk {} is corrupt (its bytes do not match its address) in {packs}, and there is {loose}",
                        self.store.location(),
                        self.wants[i].0.to_hex()
                    ),
                ));
            }
            let (gone, bad) = self.packed(next)?;
            for (i, k) in gone.into_iter().chain(bad) {
                tried.entry(i).or_default().push(k);
                todo.push(i);
            }
        }
        Ok(())
    }

    /// Fetches located chunks in batches of about `batch_bytes`; the
    /// positions whose pack the store no longer has, and those whose copy
    /// there has the wrong bytes, each with that pack's key.
    /// The next batch downloads while this one is checked and handed on,
    /// so at most two batches are held at once.
    fn packed(&mut self, packed: Vec<(usize, ChunkLoc)>) -> Result<Gone> {
        let mut all = spans(packed);
        all.sort_by_key(|s| s.members.iter().map(|m| m.0).min());
        let mut batches = Vec::new();
        let mut start = 0;
        while start < all.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < all.len()
                && (end == start || bytes + span_len(&all[end]) <= self.batch_bytes)
            {
                bytes += span_len(&all[end]);
                end += 1;
            }
            batches.push(start..end);
            start = end;
        }
        let all = &all[..];
        let spare = Arc::new(Spare::default());
        let store = self.store;
        std::thread::scope(|sc| {
            let get = |b: &Range<usize>| {
                let b = b.clone();
                let spare = spare.clone();
                sc.spawn(move || get_spans(store, &all[b], &spare))
            };
            let (mut gone, mut bad) = (Vec::new(), Vec::new());
            let mut next = batches.first().map(get);
            for (n, b) in batches.iter().enumerate() {
                let Some(this) = next.take() else { break };
                let got = this
                    .join()
                    .unwrap_or_else(|_| Err(io_err("download thread failed")))?;
                next = batches.get(n + 1).map(get);
                let (g, w) = self.check_spans(&all[b.clone()], got)?;
                gone.extend(g);
                bad.extend(w);
            }
            Ok((gone, bad))
        })
    }

    /// Reads loose chunk objects; the positions the store lacks. A loose
    /// object with the wrong bytes is an error.
    fn loose(&mut self, loose: &[usize]) -> Result<Vec<usize>> {
        let mut lacking = Vec::new();
        for (i, missing) in self.loose_checked(loose)? {
            if !missing {
                return Err(Error::corrupt(format!(
                    "{}: chunk {} is corrupt (its bytes do not match its address)",
                    self.store.location(),
                    self.wants[i].0.to_hex()
                )));
            }
            lacking.push(i);
        }
        Ok(lacking)
    }

    /// Reads the loose objects of `loose` (chunks with no good packed
    /// copy) and hands on the good ones; those with no object, or a wrong
    /// one (`false` when there was an object).
    fn loose_checked(&mut self, loose: &[usize]) -> Result<Vec<(usize, bool)>> {
        let mut failed = Vec::new();
        for part in loose.chunks(LOOSE_BATCH) {
            let addrs: Vec<blake3::Hash> = part.iter().map(|&i| self.wants[i].0).collect();
            let got = self.store.get_chunks(&addrs)?;
            if got.len() != addrs.len() {
                return Err(io_err(format!(
                    "{}: asked for {} chunks, got {}",
                    self.store.location(),
                    addrs.len(),
                    got.len()
                )));
            }
            for (&i, g) in part.iter().zip(got) {
                let (addr, len) = self.wants[i];
                match g {
                    None => failed.push((i, true)),
                    Some(b) if b.len() != len as usize || blake3::hash(&b) != addr => {
                        failed.push((i, false))
                    }
                    Some(b) => {
                        if let Some(place) = self.place {
                            place(i, &b)?;
                        }
                        (self.sink)(i, Bytes::from(b))?;
                    }
                }
            }
        }
        Ok(failed)
    }

    /// Checks every chunk in a batch of spans read by [`get_spans`] and
    /// hands the good ones on (to `place` as each is checked, then to
    /// `sink`); the members of spans whose pack is gone, and the members
    /// whose bytes are wrong, with the pack's key. Hashing (and placing)
    /// runs on two threads when there is much of it.
    fn check_spans(&mut self, spans: &[Span], got: Vec<Option<Bytes>>) -> Result<Gone> {
        let mut bodies = Vec::with_capacity(spans.len());
        let mut gone = Vec::new();
        let mut here = Vec::with_capacity(spans.len());
        for (s, g) in spans.iter().zip(got) {
            let Some(body) = g else {
                gone.extend(s.members.iter().map(|&(i, _)| (i, s.key.clone())));
                continue;
            };
            if body.len() as u64 != span_len(s) {
                return Err(super::short_object(
                    &format!("{}/{}", self.store.location(), s.key),
                    &s.range,
                    body.len() as u64,
                ));
            }
            bodies.push(body);
            here.push(s);
        }
        let spans = &here[..];
        let checker = Checker {
            store: self.store,
            wants: self.wants,
            verify: self.verify,
            place: self.place,
        };
        // Per span, its members whose bytes are wrong (by index in
        // `members`).
        let check = |from: usize, to: usize| -> Result<Vec<Vec<usize>>> {
            (from..to)
                .map(|n| checker.span(spans[n], &bodies[n]))
                .collect()
        };
        let total: u64 = spans.iter().map(|s| span_len(s)).sum();
        let wrong = if total >= 4 << 20 && spans.len() > 1 {
            let mid = spans.len() / 2;
            std::thread::scope(|sc| {
                let other = sc.spawn(|| check(0, mid));
                let mine = check(mid, spans.len());
                let mut first = other
                    .join()
                    .unwrap_or_else(|_| Err(io_err("chunk check thread failed")))?;
                first.extend(mine?);
                Ok::<_, Error>(first)
            })?
        } else {
            check(0, spans.len())?
        };
        let mut bad = Vec::new();
        for ((s, body), wrong) in spans.iter().zip(bodies).zip(wrong) {
            for (m, &(i, l)) in s.members.iter().enumerate() {
                if wrong.contains(&m) {
                    bad.push((i, s.key.clone()));
                    continue;
                }
                let at = (l.offset - s.range.start) as usize;
                (self.sink)(i, body.slice(at..at + l.len as usize))?;
            }
        }
        Ok((gone, bad))
    }
}

/// Positions whose pack is gone, and positions whose copy in its pack had
/// the wrong bytes, each with the pack's key.
type Gone = (Vec<(usize, String)>, Vec<(usize, String)>);

fn span_len(s: &Span) -> u64 {
    s.range.end - s.range.start
}

/// Reads one batch of spans (into buffers from `spare` where it can):
/// each one's body (its buffer back to `spare` when the last chunk cut
/// from it goes), or `None` where its pack is gone.
fn get_spans(
    store: &dyn BlobStore,
    spans: &[Span],
    spare: &Arc<Spare>,
) -> Result<Vec<Option<Bytes>>> {
    let reqs: Vec<(&str, Range<u64>)> = spans
        .iter()
        .map(|s| (s.key.as_str(), s.range.clone()))
        .collect();
    debug_assert!(
        reqs.iter()
            .all(|(_, r)| r.end - r.start <= MAX_RANGE_REQUEST)
    );
    let mut bufs = spare.take(reqs.len());
    let got = store.get_ranges_into(&reqs, &mut bufs);
    for b in bufs {
        spare.give(b);
    }
    let got = got?;
    if got.len() != reqs.len() {
        return Err(io_err(format!(
            "{}: asked for {} ranges, got {}",
            store.location(),
            reqs.len(),
            got.len()
        )));
    }
    Ok(got.into_iter().map(|g| g.map(|b| spare.bytes(b))).collect())
}

/// What checking a span's chunks needs, shared by the two threads that
/// may check one batch.
struct Checker<'a> {
    /// The store, named in the warning about a wrong copy.
    store: &'a dyn BlobStore,
    wants: &'a [(blake3::Hash, u32)],
    verify: bool,
    place: Option<Place<'a>>,
}

impl Checker<'_> {
    /// Checks each member of span `s` and places
    /// the good ones; the members (by index) whose bytes are wrong: a
    /// length other than the one wanted, or (when `verify`) a hash other
    /// than the address.
    fn span(&self, s: &Span, body: &[u8]) -> Result<Vec<usize>> {
        let mut wrong = Vec::new();
        for (m, &(i, l)) in s.members.iter().enumerate() {
            let (addr, len) = self.wants[i];
            let at = (l.offset - s.range.start) as usize;
            let bytes = &body[at..at + l.len as usize];
            if l.len != len || (self.verify && blake3::hash(bytes) != addr) {
                tracing::warn!(
                    "{}/{}: chunk {} at offset {} has the wrong bytes; looking for another copy",
                    self.store.location(),
                    s.key,
                    addr.to_hex(),
                    l.offset
                );
                wrong.push(m);
                continue;
            }
            if let Some(place) = self.place {
                place(i, bytes)?;
            }
        }
        Ok(wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(pack: u8, offset: u64, len: u32) -> ChunkLoc {
        ChunkLoc {
            pack: blake3::hash(&[pack]),
            offset,
            len,
        }
    }

    #[test]
    fn adjacent_chunks_of_a_pack_share_a_request() {
        let k = 65536;
        let got = spans(vec![
            (0, loc(1, 11, k)),
            (1, loc(1, 11 + k as u64, k)),
            // A small gap: still one request.
            (2, loc(1, 11 + 2 * k as u64 + 1000, k)),
            // Far away: another.
            (3, loc(1, 50 << 20, k)),
            (4, loc(2, 11, k)),
        ]);
        let shape: Vec<(usize, u64)> = got
            .iter()
            .map(|s| (s.members.len(), s.range.end - s.range.start))
            .collect();
        assert_eq!(
            shape,
            [(3, 3 * k as u64 + 1000), (1, k as u64), (1, k as u64)]
        );
        // A run longer than MAX_SPAN is cut.
        let run: Vec<(usize, ChunkLoc)> = (0..600)
            .map(|i| (i, loc(3, 11 + i as u64 * k as u64, k)))
            .collect();
        let s = spans(run);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|s| s.range.end - s.range.start <= MAX_SPAN));
    }
}
