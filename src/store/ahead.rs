//! The read-ahead bookkeeping of a lazily opened tree (see `lazy`): which
//! chunks were fetched ahead and are held until their first read, which
//! are being fetched in the background right now, and the sequential
//! stream the reader is on, which decides what to fetch next.
//!
//! A stream starts at a miss that does not continue it: that read fetches
//! [`FIRST_WINDOW`] chunks itself (nothing in the background, so a random
//! reader costs one request per miss and no more), unless it is a file's
//! first chunk. Once the reader takes a second chunk of the stream (or
//! the first chunk of a file), it is taken to read sequentially, and the stream
//! keeps a look-ahead in flight that grows with what was read (16
//! chunks per chunk read, up to [`MAX_AHEAD`], 32 MiB), cut into
//! background fetches of at most [`JOB_MAX`] chunks that run at once. So
//! when the reader enters a window, the next ones are on their way.
//!
//! Bounds: bytes held plus bytes in flight never exceed the cap
//! ([`MAX_HELD`], 48 MiB, per opened tree): a fetch that would pass it is
//! not started, and a chunk held past it drops the oldest held first. A
//! reader that stops or seeks leaves at most the fetches already started,
//! and nothing new starts for an abandoned stream.

use std::collections::{HashMap, HashSet, VecDeque};

/// Chunks a miss that starts a stream fetches (512 KiB).
pub(crate) const FIRST_WINDOW: u64 = 8;
/// Most chunks one background fetch covers (8 MiB).
pub(crate) const JOB_MAX: u64 = 128;
/// Fewest chunks a background fetch cut short by the cap covers (1 MiB).
const MIN_JOB: u64 = 16;
/// Most chunks a stream keeps in flight or held past the reader (32 MiB).
pub(crate) const MAX_AHEAD: u64 = 512;
/// Most bytes held and in flight at once per opened tree.
pub(crate) const MAX_HELD: u64 = 48 << 20;

/// A background fetch to start: these keys, this many bytes.
pub(crate) struct Job {
    pub keys: Vec<u64>,
    pub bytes: u64,
}

/// Read-ahead state; the owner keeps it under a lock.
pub(crate) struct Ahead {
    held: HashMap<u64, Vec<u8>>,
    /// Held keys, oldest first.
    order: VecDeque<u64>,
    held_bytes: u64,
    flying: HashSet<u64>,
    flying_bytes: u64,
    /// Background fetches running.
    pub jobs: usize,
    /// First key of the current stream, and one past the last key fetched
    /// or in flight for it.
    start: u64,
    next: u64,
    cap: u64,
    /// Most bytes held plus in flight seen at once.
    pub peak: u64,
    /// The tree is gone: nothing more is held or started.
    pub closed: bool,
}

impl Ahead {
    pub(crate) fn new(cap: u64) -> Ahead {
        Ahead {
            held: HashMap::new(),
            order: VecDeque::new(),
            held_bytes: 0,
            flying: HashSet::new(),
            flying_bytes: 0,
            jobs: 0,
            start: 0,
            next: 0,
            cap,
            peak: 0,
            closed: false,
        }
    }

    /// Bytes held plus bytes in flight.
    pub(crate) fn used(&self) -> u64 {
        self.held_bytes + self.flying_bytes
    }

    pub(crate) fn is_flying(&self, key: u64) -> bool {
        self.flying.contains(&key)
    }

    /// Keeps a fetched chunk until its first read, dropping the oldest
    /// held ones while over the cap.
    pub(crate) fn hold(&mut self, key: u64, bytes: Vec<u8>) {
        if self.closed || self.held.contains_key(&key) {
            return;
        }
        self.held_bytes += bytes.len() as u64;
        self.held.insert(key, bytes);
        self.order.push_back(key);
        while self.used() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.held.remove(&old) {
                self.held_bytes -= b.len() as u64;
            }
        }
        self.peak = self.peak.max(self.used());
    }

    /// The held bytes of `key`, now handed over.
    pub(crate) fn take(&mut self, key: u64) -> Option<Vec<u8>> {
        let b = self.held.remove(&key)?;
        self.held_bytes -= b.len() as u64;
        if let Some(at) = self.order.iter().position(|k| *k == key) {
            self.order.remove(at);
        }
        Some(b)
    }

    /// A background fetch of `keys` (`bytes` in all) ended: they are no
    /// longer in flight (those that arrived were held first).
    pub(crate) fn landed(&mut self, keys: &[u64], bytes: u64) {
        for k in keys {
            self.flying.remove(k);
        }
        self.flying_bytes -= bytes.min(self.flying_bytes);
        self.jobs = self.jobs.saturating_sub(1);
    }

    /// Drops everything held (the tree is gone).
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.held.clear();
        self.order.clear();
        self.held_bytes = 0;
    }

    /// The keys a miss at `key` fetches itself: it, then those of the
    /// next [`FIRST_WINDOW`] that are neither held nor in flight (never
    /// past `run_end`, the end of the file's run of chunks). A miss inside
    /// the current stream (a chunk dropped, or a background fetch that
    /// failed) keeps the stream; any other starts a new one.
    pub(crate) fn miss(&mut self, key: u64, run_end: u64) -> Vec<u64> {
        let end = (key + FIRST_WINDOW).min(run_end).max(key + 1);
        if !(self.start <= key && key <= self.next) || self.next == 0 {
            self.start = key;
            self.next = end;
        } else {
            self.next = self.next.max(end);
        }
        std::iter::once(key)
            .chain(
                (key + 1..end).filter(|k| !self.held.contains_key(k) && !self.flying.contains(k)),
            )
            .collect()
    }

    /// After the reader got `key`: the background fetches to start so
    /// the stream stays ahead of it (none unless `key` is a second or
    /// later chunk of the current stream, or the first chunk of a file,
    /// `file_start`, where a read from the start usually goes on). `len` gives a key's bytes;
    /// `run_end` ends the file's run. Started fetches count as in flight
    /// from here on.
    pub(crate) fn plan(
        &mut self,
        key: u64,
        file_start: bool,
        run_end: u64,
        len: impl Fn(u64) -> u64,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        let first = key == self.start;
        if self.closed || key < self.start || key >= self.next || first && !file_start {
            return jobs;
        }
        let read = key + 1 - self.start;
        let ahead = (read * 16).min(MAX_AHEAD);
        let target = (key + 1 + ahead).min(run_end);
        while self.next < target {
            let room = target - self.next;
            // Small top-ups wait until there is a worthwhile request.
            if room < ahead / 2 && target < run_end {
                break;
            }
            // The next keys not held or in flight, as many as fit the cap.
            let (mut keys, mut bytes, mut end) = (Vec::new(), 0, self.next);
            let mut full = false;
            for k in self.next..self.next + room.min(JOB_MAX) {
                if !self.held.contains_key(&k) && !self.flying.contains(&k) {
                    let l = len(k);
                    if self.used() + bytes + l > self.cap {
                        full = true;
                        break;
                    }
                    keys.push(k);
                    bytes += l;
                }
                end = k + 1;
            }
            // Near the cap, wait for room for a worthwhile request rather
            // than send one per chunk the reader frees.
            if full && (keys.len() as u64) < MIN_JOB {
                break;
            }
            self.next = end;
            if !keys.is_empty() {
                self.flying.extend(keys.iter().copied());
                self.flying_bytes += bytes;
                self.jobs += 1;
                jobs.push(Job { keys, bytes });
            }
            if full {
                break;
            }
        }
        self.peak = self.peak.max(self.used());
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 65536;

    #[test]
    fn a_stream_grows_its_look_ahead_within_the_cap() {
        let mut a = Ahead::new(40 * K);
        // A first miss fetches the window itself and starts nothing.
        assert_eq!(a.miss(100, 10_000), (100..108).collect::<Vec<_>>());
        for k in 101..108 {
            a.hold(k, vec![1; K as usize]);
        }
        assert!(a.plan(100, false, 10_000, |_| K).is_empty());
        // The second chunk: sequential; a fetch starts.
        assert!(a.take(101).is_some());
        let jobs = a.plan(101, false, 10_000, |_| K);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].keys, (108..134).collect::<Vec<_>>());
        assert!(a.is_flying(108) && a.jobs == 1);
        a.landed(&jobs[0].keys, jobs[0].bytes);
        assert!(!a.is_flying(108) && a.jobs == 0);
        // A seek starts a new stream: nothing in the background.
        assert_eq!(a.miss(5000, 10_000).len(), 8);
        assert!(a.plan(5000, false, 10_000, |_| K).is_empty());
        // Holding past the cap drops the oldest.
        for k in 0..50 {
            a.hold(k, vec![1; K as usize]);
        }
        assert!(a.used() <= 40 * K && a.peak <= 40 * K);
        assert!(a.take(0).is_none() && a.take(49).is_some());
        // A file's first chunk starts the look-ahead at once.
        let mut c = Ahead::new(MAX_HELD);
        c.miss(0, 1000);
        let jobs = c.plan(0, true, 1000, |_| K);
        assert_eq!(jobs[0].keys, (8..17).collect::<Vec<_>>());
        // Never past the run's end.
        let mut b = Ahead::new(MAX_HELD);
        b.miss(0, 12);
        let jobs = b.plan(1, false, 12, |_| K);
        let all: Vec<u64> = jobs.iter().flat_map(|j| j.keys.clone()).collect();
        assert_eq!(all, (8..12).collect::<Vec<_>>());
    }

    #[test]
    fn near_the_cap_no_request_is_started_per_chunk() {
        let mut a = Ahead::new(30 * K);
        a.miss(0, 1000);
        for k in 1..8 {
            a.hold(k, vec![1; K as usize]);
        }
        a.take(1);
        let first = a.plan(1, false, 1000, |_| K);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].keys, (8..32).collect::<Vec<_>>());
        // Reading on frees a chunk at a time: too little for a request.
        for k in 2..6 {
            a.take(k);
            assert!(a.plan(k, false, 1000, |_| K).is_empty(), "at {k}");
            assert!(a.used() <= 30 * K);
        }
    }
}
