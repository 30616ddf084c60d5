//! Time: the [`Timestamp`] every inode carries and the clocks that make
//! them ([`SystemClock`] by default, [`ManualClock`] for deterministic
//! tests).

use std::fmt;

use crate::error::{ErrorKind, Result, err};

/// A point in time: seconds since the Unix epoch and nanoseconds (< 1e9).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z; negative before it.
    pub secs: i64,
    /// Nanoseconds within the second, below 1,000,000,000.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp, or `EINVAL` when `nanos` is 1e9 or more.
    pub fn new(secs: i64, nanos: u32) -> Result<Timestamp> {
        if nanos >= 1_000_000_000 {
            return err(ErrorKind::InvalidInput);
        }
        Ok(Timestamp { secs, nanos })
    }

    /// Nanoseconds since the epoch, saturating at the ends of `i128`'s
    /// range (which `i64` seconds never reach).
    pub fn as_nanos(self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }

    /// The current system time (the epoch if the clock is before it).
    pub fn now() -> Timestamp {
        Timestamp::from(std::time::SystemTime::now())
    }

    pub(crate) fn is_valid(self) -> bool {
        self.nanos < 1_000_000_000
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Timestamp {
                        secs: -secs,
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: (-secs).saturating_sub(1),
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }
}

/// A source of timestamps, so tests can make time deterministic.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock (the default), read coarsely: on Linux it is
/// `CLOCK_REALTIME_COARSE`, the wall clock as of the last timer tick (1 to
/// 10 ms old, the granularity Linux gives its own file timestamps), which
/// costs a memory read instead of a timer read per change. Elsewhere, and
/// should the coarse clock fail, it is [`Timestamp::now`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        coarse_now()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse_now() -> Timestamp {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    match u32::try_from(t.tv_nsec) {
        Ok(nanos) if nanos < 1_000_000_000 => Timestamp {
            secs: t.tv_sec,
            nanos,
        },
        _ => Timestamp::now(),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn coarse_now() -> Timestamp {
    Timestamp::now()
}

/// A clock that stands still until told otherwise.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: Timestamp) -> ManualClock {
        ManualClock(std::sync::Mutex::new(t))
    }

    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        if let Ok(mut g) = self.0.lock() {
            *g = t;
        }
    }

    /// Moves the time forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        if let Ok(mut g) = self.0.lock() {
            g.secs = g.secs.saturating_add(secs);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.lock().map(|g| *g).unwrap_or_default()
    }
}

/// The proleptic Gregorian date (year, month 1-12, day 1-31) of `days`
/// since 1970-01-01, counted era by era of 400 years; for the dates
/// messages and listings print.
#[doc(hidden)]
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
