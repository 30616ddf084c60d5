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
//! Before each batch of deletes a collection checks that the lease is
//! still the one it wrote (by version) and that it has at least
//! [`LEASE_MARGIN`] left ([`check`]); otherwise it stops, deleting nothing
//! more. So a collection that outlives its lease deletes nothing once the
//! lease can be taken over, and leaves the new holder's lease alone.
//!
//! Pushes do not take the lease, but one that wrote again an object a
//! collection may be about to delete reads it ([`wait_for_collection`]):
//! while a live lease is held it waits for the lease to go (or change
//! hands, or expire) before it looks whether what it wrote is still there
//! (DESIGN.md, "Garbage collection").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::BlobStore;
use super::refs::{self, RefVersion};
use crate::error::{Error, ErrorKind, Result};

/// The lease object's name.
pub const LEASE_KEY: &str = "gc-lease";

/// How long a lease holds unless released first.
pub const LEASE_TTL: Duration = Duration::from_secs(60 * 60);

/// How long before its lease expires a collection stops deleting: room
/// for hosts' clocks that disagree and for a delete request in flight, so
/// that a lease a push reads as expired belongs to a collection that
/// deletes nothing more.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The first and the longest pause between two reads of a live lease by a
/// push waiting for a collection to end.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_secs(2);

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

    /// Whether the lease no longer holds at `now`: past its expiry, or
    /// expiring more than twice `LEASE_TTL` ahead. A collector writes its
    /// lease to expire `LEASE_TTL` after its own clock, so that one is no
    /// collector's however far the clocks disagree within reason, and
    /// honouring it would stall every push and collection on the store
    /// for as long as it says (`u64::MAX` seconds: 584 billion years).
    fn expired(&self, now: u64) -> bool {
        self.expires <= now || self.expires > now.saturating_add(2 * LEASE_TTL.as_secs())
    }

    /// Why [`Lease::expired`] holds, for the log.
    fn why_expired(&self, now: u64) -> &'static str {
        if self.expires <= now {
            "an expired"
        } else {
            "an impossible (expiring more than twice the lease time ahead)"
        }
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

/// A lease this process holds: what it wrote, the store's version of it
/// and when it expires.
#[derive(Debug)]
pub(crate) struct Held {
    bytes: Vec<u8>,
    version: RefVersion,
    expires: u64,
}

fn decode_named(store: &dyn BlobStore, bytes: &[u8]) -> Result<Lease> {
    Lease::decode(bytes).map_err(|e| {
        Error::with(
            e.kind(),
            format!(
                "{}: {}; if no collection runs, delete the object {LEASE_KEY}",
                store.location(),
                e.context().unwrap_or("damaged lease")
            ),
        )
    })
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
    let held = |version| Held {
        bytes: bytes.clone(),
        version,
        expires: mine.expires,
    };
    for _ in 0..3 {
        match store.put_if(LEASE_KEY, &bytes, None) {
            Ok(v) => return Ok(held(v)),
            Err(e) if e.kind() == ErrorKind::Busy => {}
            Err(e) => return Err(e),
        }
        let Some((found, version)) = store.get_versioned(LEASE_KEY)? else {
            continue;
        };
        let lease = decode_named(store, &found)?;
        if !lease.expired(unix_now()) {
            return Err(busy(format!("lease {}", lease.holder())));
        }
        tracing::warn!(
            "taking over {} gc lease ({})",
            lease.why_expired(unix_now()),
            lease.holder()
        );
        return match store.put_if(LEASE_KEY, &bytes, Some(&version)) {
            Ok(v) => Ok(held(v)),
            Err(e) if e.kind() == ErrorKind::Busy => Err(busy(format!(
                "the expired lease ({}) was taken over by another collector meanwhile",
                lease.holder()
            ))),
            Err(e) => Err(e),
        };
    }
    Err(busy("the lease keeps changing hands".to_string()))
}

/// Checks, just before a collection deletes, that its lease is still the
/// one it wrote (the same version) and has at least [`LEASE_MARGIN`] to
/// run; otherwise an [`ErrorKind::Busy`] error saying the collection
/// stopped and deletes nothing more.
pub(crate) fn check(store: &dyn BlobStore, held: &Held) -> Result<()> {
    let stop = |why: String| {
        Error::with(
            ErrorKind::Busy,
            format!(
                "{}: garbage collection stopped, deleting nothing more: its lease ({LEASE_KEY}) {why}",
                store.location()
            ),
        )
    };
    match store.get_versioned(LEASE_KEY)? {
        None => Err(stop("is gone (someone removed it)".to_string())),
        Some((bytes, version)) if version != held.version => {
            let now = Lease::decode(&bytes).map_or_else(
                |_| "a lease this version cannot read".to_string(),
                |l| l.holder(),
            );
            Err(stop(format!("was taken over by another collector ({now})")))
        }
        Some(_) if held.expires < unix_now().saturating_add(LEASE_MARGIN.as_secs()) => {
            Err(stop(format!(
                "expires at {}, too soon to go on (a collection must finish its deletes \
                 {} minutes before its lease expires; run it again)",
                utc(held.expires),
                LEASE_MARGIN.as_secs() / 60
            )))
        }
        Some(_) => Ok(()),
    }
}

/// For a push that wrote again an object a collection may be about to
/// delete (`what`, for messages): returns once no collection that held
/// the lease when this was called can delete anything more. At once if
/// there is no lease, or it has expired (its holder stopped deleting
/// [`LEASE_MARGIN`] before, see [`check`]), or the store keeps no
/// leases (then no collection runs there); otherwise it reads the lease
/// again, pausing longer each time, until it is gone, replaced (a
/// collection that started after this call, which sees what the push
/// wrote as young) or expired. A lease it cannot read is an error naming
/// it. How long it waited.
pub(crate) fn wait_for_collection(store: &dyn BlobStore, what: &str) -> Result<Duration> {
    let first = match store.get_versioned(LEASE_KEY) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(Duration::ZERO),
        Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(Duration::ZERO),
        Err(e) => return Err(e),
    };
    let lease = decode_named(store, &first.0)?;
    if lease.expired(unix_now()) {
        return Ok(Duration::ZERO);
    }
    tracing::info!(
        "{}: a garbage collection runs (lease {}); waiting for it to end before checking {what}",
        store.location(),
        lease.holder()
    );
    let start = std::time::Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        let left = lease.expires.saturating_sub(unix_now());
        if left == 0 {
            tracing::warn!(
                "{}: the garbage collection's lease ({}) expired without being released",
                store.location(),
                lease.holder()
            );
            return Ok(start.elapsed());
        }
        std::thread::sleep(pause.min(Duration::from_secs(left)));
        pause = (pause * 2).min(POLL_MAX);
        match store.get_versioned(LEASE_KEY)? {
            Some((_, v)) if v == first.1 => {}
            _ => return Ok(start.elapsed()),
        }
    }
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
    use crate::store::MemStore;

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

    /// A lease expiring further ahead than any collector writes one is
    /// no one's: a push does not wait for it and a collection takes it
    /// over, instead of both stalling until the year 584 billion.
    #[test]
    fn a_lease_from_the_far_future_holds_nothing() {
        // (Asked first, as without the rule the wait would never end.)
        let s = MemStore::new();
        s.put_if(LEASE_KEY, &other(u64::MAX), None).unwrap();
        let held = acquire(&s).unwrap();
        check(&s, &held).unwrap();
        let s = MemStore::new();
        s.put_if(LEASE_KEY, &other(u64::MAX), None).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(wait_for_collection(&s, "x").unwrap(), Duration::ZERO);
        assert!(t.elapsed() < Duration::from_secs(1));
        // One a collector could have written (an hour from now, by a clock
        // well ahead) still holds.
        let s = MemStore::new();
        let ahead = unix_now() + LEASE_TTL.as_secs() + 30 * 60;
        s.put_if(LEASE_KEY, &other(ahead), None).unwrap();
        assert_eq!(acquire(&s).unwrap_err().kind(), ErrorKind::Busy);
    }

    fn other(expires: u64) -> Vec<u8> {
        Lease {
            owner: "carol@elsewhere".into(),
            pid: 11,
            start: unix_now() - 10,
            expires,
        }
        .encode()
    }

    #[test]
    fn a_collection_goes_on_deleting_only_under_its_own_live_lease() {
        let s = MemStore::new();
        let mut held = acquire(&s).unwrap();
        check(&s, &held).unwrap();
        let msg = |e: Error| (e.kind(), e.to_string());
        // Too close to expiring (by this host's clock).
        let expires = held.expires;
        held.expires = unix_now() + LEASE_MARGIN.as_secs() - 1;
        let (kind, text) = msg(check(&s, &held).unwrap_err());
        assert_eq!(kind, ErrorKind::Busy);
        assert!(
            text.contains("too soon") && text.contains("nothing more"),
            "{text}"
        );
        held.expires = expires;
        // Taken over: another version, whatever it says.
        let (_, v) = s.get_versioned(LEASE_KEY).unwrap().unwrap();
        let v2 = s
            .put_if(LEASE_KEY, &other(unix_now() + 600), Some(&v))
            .unwrap();
        let (_, text) = msg(check(&s, &held).unwrap_err());
        assert!(
            text.contains("taken over") && text.contains("carol@elsewhere"),
            "{text}"
        );
        // The new holder's lease stays when this one is given back.
        release(&s, held).unwrap();
        assert_eq!(s.get_versioned(LEASE_KEY).unwrap().unwrap().1, v2);
        s.delete_objects(&[LEASE_KEY]).unwrap();
        let held = acquire(&s).unwrap();
        s.delete_objects(&[LEASE_KEY]).unwrap();
        let (_, text) = msg(check(&s, &held).unwrap_err());
        assert!(text.contains("is gone"), "{text}");
    }

    #[test]
    fn a_push_waits_only_for_a_live_lease_and_until_it_goes() {
        let s = MemStore::new();
        assert_eq!(wait_for_collection(&s, "x").unwrap(), Duration::ZERO);
        // Expired: its holder deletes nothing more, so no wait.
        s.put_if(LEASE_KEY, &other(unix_now() - 1), None).unwrap();
        assert_eq!(wait_for_collection(&s, "x").unwrap(), Duration::ZERO);
        s.delete_objects(&[LEASE_KEY]).unwrap();
        // Live: waits until it is released.
        s.put_if(LEASE_KEY, &other(unix_now() + 600), None).unwrap();
        let waited = std::thread::scope(|sc| {
            let w = sc.spawn(|| wait_for_collection(&s, "x"));
            std::thread::sleep(Duration::from_millis(150));
            assert!(!w.is_finished(), "did not wait for a live lease");
            s.delete_objects(&[LEASE_KEY]).unwrap();
            w.join().unwrap().unwrap()
        });
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        // Damaged: an error naming the lease.
        s.put_if(LEASE_KEY, b"not a lease", None).unwrap();
        let e = wait_for_collection(&s, "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains(LEASE_KEY), "{e}");
    }
}
