//! The garbage collector's lease: one `gc-lease` object at the store's
//! root (outside `refs/`, so nothing that reads refs sees it) saying who
//! collects (user@host, pid), since when, and until when the claim
//! holds. A collection writes it with a conditional create before it
//! reads anything and deletes it when it ends, failed or not; a second
//! collection that finds a live lease refuses, naming the holder and when
//! the lease expires, and changes nothing. A lease left by a collector
//! that died is taken over once it has expired, by a compare-and-swap on
//! the version read, so two collectors racing for it cannot both win.
//!
//! The lease is advisory: it keeps collectors apart, not pushes or
//! readers (collection is safe against those on its own). A collection
//! that outlives [`LEASE_TTL`] may find its lease taken over; it then
//! leaves the new holder's lease alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::BlobStore;
use super::refs::{self, RefVersion};
use crate::error::{Error, ErrorKind, Result};

/// The lease object's name.
pub const LEASE_KEY: &str = "gc-lease";

/// How long a lease holds unless released first.
pub const LEASE_TTL: Duration = Duration::from_secs(60 * 60);

/// Most bytes a lease object may hold.
const MAX_LEASE: usize = 1024;

const MAGIC: &str = "cowvfs gc-lease 1";

/// A lease's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    owner: String,
    pid: u32,
    start: u64,
    expires: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{MAGIC}\nowner {}\npid {}\nstart {}\nexpires {}\n",
            self.owner, self.pid, self.start, self.expires
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Lease> {
        let bad = |why: &str| Error::corrupt(format!("{LEASE_KEY}: {why}"));
        if bytes.len() > MAX_LEASE {
            return Err(bad("longer than a lease may be"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not text"))?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad("not a lease of a format this version reads"));
        }
        let mut field = |name: &str| -> Result<String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("no {name} line where one belongs")))
        };
        let owner = field("owner")?;
        let num = |s: String, what: &str| {
            s.parse::<u64>()
                .map_err(|_| bad(&format!("{what} {s:?} is not a number")))
        };
        let pid = u32::try_from(num(field("pid")?, "pid")?).map_err(|_| bad("pid out of range"))?;
        let start = num(field("start")?, "start")?;
        let expires = num(field("expires")?, "expires")?;
        if lines.next().is_some() || owner.chars().any(char::is_control) {
            return Err(bad("unexpected content"));
        }
        Ok(Lease {
            owner,
            pid,
            start,
            expires,
        })
    }

    fn holder(&self) -> String {
        format!(
            "held by {} (pid {}) since {}, expires {}",
            self.owner,
            self.pid,
            utc(self.start),
            utc(self.expires)
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = crate::time::civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A lease this process holds: what it wrote.
#[derive(Debug)]
pub(crate) struct Held {
    bytes: Vec<u8>,
}

/// Takes the store's collection lease, or refuses ([`ErrorKind::Busy`])
/// naming the live lease's holder and when it expires.
pub(crate) fn acquire(store: &dyn BlobStore) -> Result<Held> {
    let now = unix_now();
    let mine = Lease {
        owner: refs::actor(),
        pid: std::process::id(),
        start: now,
        expires: now + LEASE_TTL.as_secs(),
    };
    let bytes = mine.encode();
    let busy = |why: String| {
        Error::with(
            ErrorKind::Busy,
            format!(
                "{}: another garbage collection is running: {why}; nothing was changed",
                store.location()
            ),
        )
    };
    // Create; if there is one, take it over if it has expired. A lease
    // released between our two requests means another try.
    for _ in 0..3 {
        match store.put_if(LEASE_KEY, &bytes, None) {
            Ok(_) => return Ok(Held { bytes }),
            Err(e) if e.kind() == ErrorKind::Busy => {}
            Err(e) => return Err(e),
        }
        let Some((held, version)) = store.get_versioned(LEASE_KEY)? else {
            continue;
        };
        let lease = Lease::decode(&held).map_err(|e| {
            Error::with(
                e.kind(),
                format!(
                    "{}: {}; if no collection runs, delete the object {LEASE_KEY}",
                    store.location(),
                    e.context().unwrap_or("damaged lease")
                ),
            )
        })?;
        if lease.expires > unix_now() {
            return Err(busy(format!("lease {}", lease.holder())));
        }
        tracing::warn!("taking over an expired gc lease ({})", lease.holder());
        return match take_over(store, &bytes, &version) {
            Ok(()) => Ok(Held { bytes }),
            Err(e) if e.kind() == ErrorKind::Busy => Err(busy(format!(
                "the expired lease ({}) was taken over by another collector meanwhile",
                lease.holder()
            ))),
            Err(e) => Err(e),
        };
    }
    Err(busy("the lease keeps changing hands".to_string()))
}

fn take_over(store: &dyn BlobStore, bytes: &[u8], version: &RefVersion) -> Result<()> {
    store.put_if(LEASE_KEY, bytes, Some(version)).map(|_| ())
}

/// Gives the lease back: deletes it if it is still the one `held` wrote
/// (one taken over after expiring is the new holder's, and stays).
pub(crate) fn release(store: &dyn BlobStore, held: Held) -> Result<()> {
    match store.get_versioned(LEASE_KEY)? {
        Some((now, _)) if now == held.bytes => store.delete_objects(&[LEASE_KEY]),
        Some(_) => {
            tracing::warn!("the gc lease was taken over while this collection ran; left alone");
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_round_trips_and_damage_is_refused() {
        let l = Lease {
            owner: "ann@box".into(),
            pid: 42,
            start: 1_764_460_800,
            expires: 1_764_464_400,
        };
        assert_eq!(Lease::decode(&l.encode()).unwrap(), l);
        assert_eq!(utc(1_764_460_800), "2025-11-30 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        let good = String::from_utf8(l.encode()).unwrap();
        for bad in [
            String::new(),
            good.replace("pid 42", "pid x"),
            good.replace("owner", "who"),
            good.clone() + "more\n",
            good.replace("1764464400", "99999999999999999999999"),
            "x".repeat(5000),
        ] {
            let e = Lease::decode(bad.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{bad:?}");
        }
    }
}
