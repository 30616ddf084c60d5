//! The preview1 functions, one method of [`WasiP1Ctx`] each, grouped by
//! what they touch: process state (`process`), descriptors and the table
//! (`fd`), file data and stdio (`data`), directory listings (`readdir`),
//! paths (`path`) and `poll_oneoff` (`poll`).
//!
//! Each decodes its arguments, looks up the descriptor, calls one of its
//! operations in engine terms and writes the results. The conversions
//! between those terms and preview1's are here, and only here.

// Each method takes the wasm parameters of its preview1 function, as
// they are: some have nine.
#![allow(clippy::too_many_arguments)]

mod data;
mod fd;
mod path;
mod poll;
mod process;
mod readdir;

use super::abi::{self, Errno, Filestat, R, filetype, fstflags};
use super::{DirSlot, FileSlot, Slot, WasiP1Ctx};
use crate::Timestamp;
use crate::wasi::bindings::types::NewTimestamp;
use crate::wasi::descriptor::{Descriptor, Kind, Stat};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

fn filetype_of(kind: Kind) -> u8 {
    match kind {
        Kind::File => filetype::REGULAR_FILE,
        Kind::Dir => filetype::DIRECTORY,
        Kind::Symlink => filetype::SYMBOLIC_LINK,
        Kind::BlockDevice => filetype::BLOCK_DEVICE,
        Kind::CharDevice => filetype::CHARACTER_DEVICE,
        // preview1 has no FIFO; sockets are not served.
        Kind::Fifo | Kind::Socket | Kind::Unknown => filetype::UNKNOWN,
    }
}

/// Nanoseconds since the epoch; a missing time (before it) reads as 0, as
/// in wasmtime-wasi, and times past 2554 are `EOVERFLOW`.
fn nanos(t: Option<Timestamp>) -> R<u64> {
    let Some(t) = t else { return Ok(0) };
    (t.secs as u64)
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(t.nanos)))
        .ok_or(Errno::OVERFLOW.into())
}

fn filestat(s: Stat) -> R<Filestat> {
    Ok(Filestat {
        dev: 1,
        ino: s.ino,
        filetype: filetype_of(s.kind),
        nlink: s.nlink,
        size: s.size,
        atim: nanos(s.atime)?,
        mtim: nanos(s.mtime)?,
        ctim: nanos(s.ctime)?,
    })
}

/// One of `fst_flags`' halves as a `new-timestamp`: setting a time and
/// "now" together is `EINVAL`.
fn new_timestamp(set: bool, now: bool, ns: i64) -> R<NewTimestamp> {
    let ns = ns as u64;
    Ok(match (set, now) {
        (true, true) => return Err(Errno::INVAL.into()),
        (true, false) => NewTimestamp::Timestamp(Datetime {
            seconds: ns / 1_000_000_000,
            nanoseconds: (ns % 1_000_000_000) as u32,
        }),
        (false, true) => NewTimestamp::Now,
        (false, false) => NewTimestamp::NoChange,
    })
}

fn times(atim: i64, mtim: i64, fst: i32) -> R<(NewTimestamp, NewTimestamp)> {
    let f = abi::flags_u16(fst, fstflags::ALL)?;
    let a = new_timestamp(f & fstflags::ATIM != 0, f & fstflags::ATIM_NOW != 0, atim)?;
    let m = new_timestamp(f & fstflags::MTIM != 0, f & fstflags::MTIM_NOW != 0, mtim)?;
    Ok((a, m))
}

/// Whether `lookupflags` say to follow a final symlink.
fn follow(flags: i32) -> R<bool> {
    let f = abi::flags_u32(flags, abi::LOOKUP_SYMLINK_FOLLOW)?;
    Ok(f & abi::LOOKUP_SYMLINK_FOLLOW != 0)
}

impl WasiP1Ctx {
    fn dir(&self, fd: i32) -> R<&DirSlot> {
        match self.slot(fd)? {
            Slot::Dir(d) => Ok(d),
            _ => Err(Errno::BADF.into()),
        }
    }

    fn file(&self, fd: i32) -> R<&FileSlot> {
        match self.slot(fd)? {
            Slot::File(f) => Ok(f),
            _ => Err(Errno::BADF.into()),
        }
    }

    /// A file or directory (not stdio).
    fn desc(&self, fd: i32) -> R<&Descriptor> {
        match self.slot(fd)? {
            Slot::File(f) => Ok(&f.desc),
            Slot::Dir(d) => Ok(&d.desc),
            _ => Err(Errno::BADF.into()),
        }
    }
}
