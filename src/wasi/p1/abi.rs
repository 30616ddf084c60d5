//! The `wasi_snapshot_preview1` ABI: errno numbers, flag and rights bits,
//! struct layouts (from `typenames.witx`), argument decoding, and
//! bounds-checked access to guest memory.
//!
//! Decoding follows what wiggle generates for wasmtime-wasi's preview1, so
//! a guest sees the same errno for the same bad argument: a flags or enum
//! value that does not fit its integer type is `EOVERFLOW`, an unknown bit
//! or case is `EINVAL`, and a pointer out of bounds or misaligned traps (the
//! witx rules: "If an out-of-bounds pointer is passed to a function and the
//! function needs to dereference it, the function shall trap").

use std::ops::Range;

use super::super::bindings::types::ErrorCode;
use crate::ErrorKind;

/// A preview1 `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u16);

#[allow(missing_docs)]
impl Errno {
    pub const SUCCESS: Errno = Errno(0);
    pub const TOOBIG: Errno = Errno(1);
    pub const ACCES: Errno = Errno(2);
    pub const AGAIN: Errno = Errno(6);
    pub const ALREADY: Errno = Errno(7);
    pub const BADF: Errno = Errno(8);
    pub const BADMSG: Errno = Errno(9);
    pub const BUSY: Errno = Errno(10);
    pub const DEADLK: Errno = Errno(16);
    pub const DQUOT: Errno = Errno(19);
    pub const EXIST: Errno = Errno(20);
    pub const FAULT: Errno = Errno(21);
    pub const FBIG: Errno = Errno(22);
    pub const ILSEQ: Errno = Errno(25);
    pub const INPROGRESS: Errno = Errno(26);
    pub const INTR: Errno = Errno(27);
    pub const INVAL: Errno = Errno(28);
    pub const IO: Errno = Errno(29);
    pub const ISDIR: Errno = Errno(31);
    pub const LOOP: Errno = Errno(32);
    pub const MFILE: Errno = Errno(33);
    pub const MLINK: Errno = Errno(34);
    pub const MSGSIZE: Errno = Errno(35);
    pub const NAMETOOLONG: Errno = Errno(37);
    pub const NODEV: Errno = Errno(43);
    pub const NOENT: Errno = Errno(44);
    pub const NOLCK: Errno = Errno(46);
    pub const NOMEM: Errno = Errno(48);
    pub const NOSPC: Errno = Errno(51);
    pub const NOTDIR: Errno = Errno(54);
    pub const NOTEMPTY: Errno = Errno(55);
    pub const NOTRECOVERABLE: Errno = Errno(56);
    pub const NOTSOCK: Errno = Errno(57);
    pub const NOTSUP: Errno = Errno(58);
    pub const NOTTY: Errno = Errno(59);
    pub const NXIO: Errno = Errno(60);
    pub const OVERFLOW: Errno = Errno(61);
    pub const PERM: Errno = Errno(63);
    pub const PIPE: Errno = Errno(64);
    pub const ROFS: Errno = Errno(69);
    pub const SPIPE: Errno = Errno(70);
    pub const TXTBSY: Errno = Errno(74);
    pub const XDEV: Errno = Errno(75);
}

/// Every engine error kind has exactly one errno; no catch-all arm, so a
/// new kind fails to compile until it is placed here. Unlike the
/// preview2 mapping, `EMFILE` survives: preview1 has it.
impl From<ErrorKind> for Errno {
    fn from(kind: ErrorKind) -> Errno {
        match kind {
            ErrorKind::NotFound => Errno::NOENT,
            ErrorKind::AlreadyExists => Errno::EXIST,
            ErrorKind::NotADirectory => Errno::NOTDIR,
            ErrorKind::IsADirectory => Errno::ISDIR,
            ErrorKind::DirectoryNotEmpty => Errno::NOTEMPTY,
            ErrorKind::Loop => Errno::LOOP,
            ErrorKind::NameTooLong => Errno::NAMETOOLONG,
            ErrorKind::InvalidInput => Errno::INVAL,
            ErrorKind::BadDescriptor => Errno::BADF,
            ErrorKind::PermissionDenied => Errno::ACCES,
            ErrorKind::NotPermitted => Errno::PERM,
            ErrorKind::NoSpace => Errno::NOSPC,
            ErrorKind::QuotaExceeded => Errno::DQUOT,
            ErrorKind::FileTooLarge => Errno::FBIG,
            ErrorKind::TooManyOpenFiles => Errno::MFILE,
            ErrorKind::TooManyLinks => Errno::MLINK,
            ErrorKind::CrossDevice => Errno::XDEV,
            ErrorKind::ReadOnly => Errno::ROFS,
            ErrorKind::Busy => Errno::BUSY,
            ErrorKind::Unsupported => Errno::NOTSUP,
            ErrorKind::Corrupt => Errno::IO,
            ErrorKind::Io => Errno::IO,
        }
    }
}

/// The `wasi:filesystem` codes the shared descriptor layer returns, mapped
/// as wasmtime-wasi's preview1 maps them, but for `insufficient-memory`.
/// That layer returns it for one thing only, a full descriptor table (the
/// sandbox's `max_open_files`, or the host process's own limit reached by
/// a mount's open), which is `EMFILE`: preview1 has it, though
/// `wasi:filesystem` does not.
impl From<ErrorCode> for Errno {
    fn from(code: ErrorCode) -> Errno {
        match code {
            ErrorCode::Access => Errno::ACCES,
            ErrorCode::WouldBlock => Errno::AGAIN,
            ErrorCode::Already => Errno::ALREADY,
            ErrorCode::BadDescriptor => Errno::BADF,
            ErrorCode::Busy => Errno::BUSY,
            ErrorCode::Deadlock => Errno::DEADLK,
            ErrorCode::Quota => Errno::DQUOT,
            ErrorCode::Exist => Errno::EXIST,
            ErrorCode::FileTooLarge => Errno::FBIG,
            ErrorCode::IllegalByteSequence => Errno::ILSEQ,
            ErrorCode::InProgress => Errno::INPROGRESS,
            ErrorCode::Interrupted => Errno::INTR,
            ErrorCode::Invalid => Errno::INVAL,
            ErrorCode::Io => Errno::IO,
            ErrorCode::IsDirectory => Errno::ISDIR,
            ErrorCode::Loop => Errno::LOOP,
            ErrorCode::TooManyLinks => Errno::MLINK,
            ErrorCode::MessageSize => Errno::MSGSIZE,
            ErrorCode::NameTooLong => Errno::NAMETOOLONG,
            ErrorCode::NoDevice => Errno::NODEV,
            ErrorCode::NoEntry => Errno::NOENT,
            ErrorCode::NoLock => Errno::NOLCK,
            ErrorCode::InsufficientMemory => Errno::MFILE,
            ErrorCode::InsufficientSpace => Errno::NOSPC,
            ErrorCode::NotDirectory => Errno::NOTDIR,
            ErrorCode::NotEmpty => Errno::NOTEMPTY,
            ErrorCode::NotRecoverable => Errno::NOTRECOVERABLE,
            ErrorCode::Unsupported => Errno::NOTSUP,
            ErrorCode::NoTty => Errno::NOTTY,
            ErrorCode::NoSuchDevice => Errno::NXIO,
            ErrorCode::Overflow => Errno::OVERFLOW,
            ErrorCode::NotPermitted => Errno::PERM,
            ErrorCode::Pipe => Errno::PIPE,
            ErrorCode::ReadOnly => Errno::ROFS,
            ErrorCode::InvalidSeek => Errno::SPIPE,
            ErrorCode::TextFileBusy => Errno::TXTBSY,
            ErrorCode::CrossDevice => Errno::XDEV,
        }
    }
}

/// How a preview1 call fails: an errno for the guest, or a trap.
pub(crate) enum Error {
    Errno(Errno),
    Trap(wasmtime::Error),
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Error {
        Error::Errno(e)
    }
}

impl From<ErrorCode> for Error {
    fn from(c: ErrorCode) -> Error {
        Error::Errno(c.into())
    }
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Error {
        Error::Errno(e.kind().into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Errno(ErrorCode::from(e).into())
    }
}

pub(crate) type R<T> = Result<T, Error>;

pub(crate) fn trap(msg: &str) -> Error {
    Error::Trap(wasmtime::Error::msg(msg.to_string()))
}

// ---------------------------------------------------------------------
// Constants from typenames.witx

pub(crate) mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    /// Every right, `sock_shutdown` (bit 28) and `sock_accept` (bit 29)
    /// included.
    pub const ALL: u64 = (1 << 30) - 1;

    /// What wasmtime-wasi reports for a preopened directory: the rights
    /// many userlands expect to see there.
    pub const PREOPEN_BASE: u64 = PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES;
    pub const PREOPEN_INHERITING: u64 = PREOPEN_BASE
        | FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
}

pub(crate) mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const BLOCK_DEVICE: u8 = 1;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SYMBOLIC_LINK: u8 = 7;
}

pub(crate) mod fdflags {
    pub const APPEND: u16 = 1;
    pub const DSYNC: u16 = 2;
    pub const NONBLOCK: u16 = 4;
    pub const RSYNC: u16 = 8;
    pub const SYNC: u16 = 16;
    pub const ALL: u16 = 0x1f;
}

pub(crate) mod oflags {
    pub const CREAT: u16 = 1;
    pub const DIRECTORY: u16 = 2;
    pub const EXCL: u16 = 4;
    pub const TRUNC: u16 = 8;
    pub const ALL: u16 = 0xf;
}

pub(crate) mod fstflags {
    pub const ATIM: u16 = 1;
    pub const ATIM_NOW: u16 = 2;
    pub const MTIM: u16 = 4;
    pub const MTIM_NOW: u16 = 8;
    pub const ALL: u16 = 0xf;
}

pub(crate) const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

pub(crate) const EVENTTYPE_CLOCK: u8 = 0;
pub(crate) const EVENTTYPE_FD_READ: u8 = 1;
pub(crate) const EVENTTYPE_FD_WRITE: u8 = 2;
pub(crate) const SUBCLOCK_ABSTIME: u16 = 1;
pub(crate) const EVENT_FD_READWRITE_HANGUP: u16 = 1;

/// `dirent` is 24 bytes: d_next u64, d_ino u64, d_namlen u32, d_type u8.
pub(crate) const DIRENT_SIZE: usize = 24;

// ---------------------------------------------------------------------
// Argument decoding, as wiggle does it

/// An enum passed as `i32` with a `u8` tag and cases `0..=max`.
pub(crate) fn enum_u8(v: i32, max: u8) -> R<u8> {
    let v = u8::try_from(v).map_err(|_| Errno::OVERFLOW)?;
    if v > max {
        return Err(Errno::INVAL.into());
    }
    Ok(v)
}

/// An enum passed as `i32` with a `u32` tag and cases `0..=max`.
pub(crate) fn enum_u32(v: i32, max: u32) -> R<u32> {
    let v = u32::try_from(v).map_err(|_| Errno::OVERFLOW)?;
    if v > max {
        return Err(Errno::INVAL.into());
    }
    Ok(v)
}

/// A `u16` flags value passed as `i32`, with the bits in `mask` defined.
pub(crate) fn flags_u16(v: i32, mask: u16) -> R<u16> {
    let v = u16::try_from(v).map_err(|_| Errno::OVERFLOW)?;
    if v & !mask != 0 {
        return Err(Errno::INVAL.into());
    }
    Ok(v)
}

/// A `u8` flags value passed as `i32`.
pub(crate) fn flags_u8(v: i32, mask: u8) -> R<u8> {
    let v = u8::try_from(v).map_err(|_| Errno::OVERFLOW)?;
    if v & !mask != 0 {
        return Err(Errno::INVAL.into());
    }
    Ok(v)
}

/// A `u32` flags value (lookupflags) passed as `i32`.
pub(crate) fn flags_u32(v: i32, mask: u32) -> R<u32> {
    let v = u32::try_from(v).map_err(|_| Errno::OVERFLOW)?;
    if v & !mask != 0 {
        return Err(Errno::INVAL.into());
    }
    Ok(v)
}

/// `rights` passed as `i64`.
pub(crate) fn rights(v: i64) -> R<u64> {
    let v = u64::try_from(v).map_err(|_| Errno::OVERFLOW)?;
    if v & !rights::ALL != 0 {
        return Err(Errno::INVAL.into());
    }
    Ok(v)
}

// ---------------------------------------------------------------------
// Guest memory

/// A guest's linear memory for the duration of one call. Every access is
/// bounds-checked; typed accesses are also alignment-checked. Both failures
/// trap, as the witx pointer rules require.
pub(crate) struct Mem<'a>(pub &'a mut [u8]);

fn out_of_bounds() -> Error {
    trap("preview1: guest pointer out of bounds")
}

fn check_align(ptr: u32, align: u32) -> R<()> {
    if !ptr.is_multiple_of(align) {
        return Err(trap("preview1: guest pointer not aligned"));
    }
    Ok(())
}

impl Mem<'_> {
    /// The byte range `[ptr, ptr + len)`, if it lies in memory.
    pub fn range(&self, ptr: u32, len: u32) -> R<Range<usize>> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or_else(out_of_bounds)?;
        if end > self.0.len() {
            return Err(out_of_bounds());
        }
        Ok(start..end)
    }

    /// An array of `n` elements of `size` bytes aligned to `align`.
    pub fn array(&self, ptr: u32, n: u32, size: u32, align: u32) -> R<Range<usize>> {
        check_align(ptr, align)?;
        let len = n.checked_mul(size).ok_or_else(out_of_bounds)?;
        self.range(ptr, len)
    }

    pub fn bytes(&self, ptr: u32, len: u32) -> R<&[u8]> {
        let r = self.range(ptr, len)?;
        Ok(&self.0[r])
    }

    pub fn bytes_mut(&mut self, ptr: u32, len: u32) -> R<&mut [u8]> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.0[r])
    }

    /// A path or other string argument: out of bounds traps, invalid UTF-8
    /// is `EILSEQ`.
    pub fn str(&self, ptr: u32, len: u32) -> R<&str> {
        std::str::from_utf8(self.bytes(ptr, len)?).map_err(|_| Errno::ILSEQ.into())
    }

    fn fixed<const N: usize>(&self, ptr: u32) -> R<[u8; N]> {
        let b = self.bytes(ptr, N as u32)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8_at(&self, ptr: u32) -> R<u8> {
        Ok(self.fixed::<1>(ptr)?[0])
    }

    pub fn u16_at(&self, ptr: u32) -> R<u16> {
        check_align(ptr, 2)?;
        Ok(u16::from_le_bytes(self.fixed(ptr)?))
    }

    pub fn u32_at(&self, ptr: u32) -> R<u32> {
        check_align(ptr, 4)?;
        Ok(u32::from_le_bytes(self.fixed(ptr)?))
    }

    pub fn u64_at(&self, ptr: u32) -> R<u64> {
        check_align(ptr, 8)?;
        Ok(u64::from_le_bytes(self.fixed(ptr)?))
    }

    pub fn put(&mut self, ptr: u32, data: &[u8]) -> R<()> {
        let len = u32::try_from(data.len()).map_err(|_| out_of_bounds())?;
        self.bytes_mut(ptr, len)?.copy_from_slice(data);
        Ok(())
    }

    pub fn put_u32(&mut self, ptr: u32, v: u32) -> R<()> {
        check_align(ptr, 4)?;
        self.put(ptr, &v.to_le_bytes())
    }

    pub fn put_u64(&mut self, ptr: u32, v: u64) -> R<()> {
        check_align(ptr, 8)?;
        self.put(ptr, &v.to_le_bytes())
    }

    /// Element `i` of an `iovec`/`ciovec` array (already bounds-checked by
    /// [`Mem::array`]): `(buf, buf_len)`.
    pub fn iovec(&self, iovs: u32, i: u32) -> R<(u32, u32)> {
        let at = iovs.wrapping_add(i.wrapping_mul(8));
        Ok((self.u32_at(at)?, self.u32_at(at.wrapping_add(4))?))
    }

    /// Checks an `iovec` array: 8 bytes each, 4-aligned, in memory (a
    /// trap otherwise), and at most [`IOV_MAX`] of them (`EINVAL` beyond,
    /// as `readv` and `writev` say).
    pub fn iovecs(&self, iovs: u32, n: u32) -> R<()> {
        self.array(iovs, n, 8, 4)?;
        if n > IOV_MAX {
            return Err(Errno::INVAL.into());
        }
        Ok(())
    }
}

/// The most buffers one read or write call takes (Linux's `IOV_MAX`).
/// Each buffer costs a call into the tree or the host however short it
/// is, so without a bound one call could run through half a billion
/// empty buffers of a 4 GiB memory, past any deadline.
pub(crate) const IOV_MAX: u32 = 1024;

/// A `filestat` (64 bytes, 8-aligned).
pub(crate) struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Filestat {
    pub fn write(&self, mem: &mut Mem<'_>, ptr: u32) -> R<()> {
        check_align(ptr, 8)?;
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16] = self.filetype;
        b[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        b[40..48].copy_from_slice(&self.atim.to_le_bytes());
        b[48..56].copy_from_slice(&self.mtim.to_le_bytes());
        b[56..64].copy_from_slice(&self.ctim.to_le_bytes());
        mem.put(ptr, &b)
    }
}

/// An `fdstat` (24 bytes, 8-aligned).
pub(crate) struct Fdstat {
    pub filetype: u8,
    pub flags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
}

impl Fdstat {
    pub fn write(&self, mem: &mut Mem<'_>, ptr: u32) -> R<()> {
        check_align(ptr, 8)?;
        let mut b = [0u8; 24];
        b[0] = self.filetype;
        b[2..4].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.rights_base.to_le_bytes());
        b[16..24].copy_from_slice(&self.rights_inheriting.to_le_bytes());
        mem.put(ptr, &b)
    }
}

/// The header of one `dirent`.
pub(crate) fn dirent(next: u64, ino: u64, namlen: u32, filetype: u8) -> [u8; DIRENT_SIZE] {
    let mut b = [0u8; DIRENT_SIZE];
    b[0..8].copy_from_slice(&next.to_le_bytes());
    b[8..16].copy_from_slice(&ino.to_le_bytes());
    b[16..20].copy_from_slice(&namlen.to_le_bytes());
    b[20] = filetype;
    b
}

/// An `event` (32 bytes, 8-aligned).
pub(crate) fn event(userdata: u64, error: Errno, ty: u8, nbytes: u64, flags: u16) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&userdata.to_le_bytes());
    b[8..10].copy_from_slice(&error.0.to_le_bytes());
    b[10] = ty;
    b[16..24].copy_from_slice(&nbytes.to_le_bytes());
    b[24..26].copy_from_slice(&flags.to_le_bytes());
    b
}

pub(crate) const SUBSCRIPTION_SIZE: u32 = 48;
pub(crate) const EVENT_SIZE: u32 = 32;
