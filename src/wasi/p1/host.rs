//! The preview1 functions, one method each: decode the arguments, look up
//! the descriptor, call the engine (memory) or the shared descriptor layer
//! (mounts and path operations), write the results.
//!
//! File data moves directly between guest memory and the engine: reads fill
//! the guest's buffers in place, writes take the guest's bytes as they are,
//! with one lock of the tree per call.

// Each method takes the wasm parameters of its preview1 function, as
// they are: some have nine.
#![allow(clippy::too_many_arguments)]

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use super::abi::{
    self, DIRENT_SIZE, EVENT_SIZE, Errno, Fdstat, Filestat, Mem, R, SUBSCRIPTION_SIZE, fdflags,
    filetype, fstflags, oflags, rights,
};
use super::{CAPTURE_LIMIT, Cookies, DirSlot, FileSlot, Input, Output, Resume, Slot, WasiP1Ctx};
use crate::wasi::bindings::types::{
    Advice, DescriptorFlags, DescriptorStat, DescriptorType, NewTimestamp, OpenFlags, PathFlags,
};
use crate::wasi::descriptor::Descriptor;
use crate::wasi::shared::{SharedVfs, lock};
use crate::{FileType, Metadata, Timestamp, Vfs};
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

/// Runs `op` on the locked tree.
fn on_vfs<T>(vfs: &SharedVfs, op: impl FnOnce(&mut Vfs) -> R<T>) -> R<T> {
    let mut guard = lock(vfs);
    let v = guard.as_mut().ok_or(Errno::BADF)?;
    op(v)
}

fn mem_filetype(kind: FileType) -> u8 {
    match kind {
        FileType::File => filetype::REGULAR_FILE,
        FileType::Dir => filetype::DIRECTORY,
        FileType::Symlink => filetype::SYMBOLIC_LINK,
    }
}

fn host_filetype(t: DescriptorType) -> u8 {
    match t {
        DescriptorType::RegularFile => filetype::REGULAR_FILE,
        DescriptorType::Directory => filetype::DIRECTORY,
        DescriptorType::SymbolicLink => filetype::SYMBOLIC_LINK,
        DescriptorType::BlockDevice => filetype::BLOCK_DEVICE,
        DescriptorType::CharacterDevice => filetype::CHARACTER_DEVICE,
        // preview1 has no FIFO; sockets are not served.
        DescriptorType::Fifo | DescriptorType::Socket | DescriptorType::Unknown => {
            filetype::UNKNOWN
        }
    }
}

/// Nanoseconds since the epoch; times before it read as 0 (as a missing
/// time does in wasmtime-wasi), times past 2554 are `EOVERFLOW`.
fn nanos(t: Timestamp) -> R<u64> {
    if t.secs < 0 {
        return Ok(0);
    }
    (t.secs as u64)
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(t.nanos)))
        .ok_or(Errno::OVERFLOW.into())
}

fn datetime_nanos(d: Option<Datetime>) -> R<u64> {
    let Some(d) = d else { return Ok(0) };
    d.seconds
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(d.nanoseconds)))
        .ok_or(Errno::OVERFLOW.into())
}

fn mem_filestat(m: &Metadata) -> R<Filestat> {
    Ok(Filestat {
        dev: 1,
        ino: m.ino,
        filetype: mem_filetype(m.kind),
        nlink: m.nlink,
        size: m.len,
        atim: nanos(m.atime)?,
        mtim: nanos(m.mtime)?,
        ctim: nanos(m.ctime)?,
    })
}

/// A mount's stat: the inode is the metadata hash, as the adapter and
/// wasmtime-wasi report it.
fn host_filestat(s: DescriptorStat, ino: u64) -> R<Filestat> {
    Ok(Filestat {
        dev: 1,
        ino,
        filetype: host_filetype(s.type_),
        nlink: s.link_count,
        size: s.size,
        atim: datetime_nanos(s.data_access_timestamp)?,
        mtim: datetime_nanos(s.data_modification_timestamp)?,
        ctim: datetime_nanos(s.status_change_timestamp)?,
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

fn path_flags(flags: i32) -> R<PathFlags> {
    let f = abi::flags_u32(flags, abi::LOOKUP_SYMLINK_FOLLOW)?;
    Ok(if f & abi::LOOKUP_SYMLINK_FOLLOW != 0 {
        PathFlags::SYMLINK_FOLLOW
    } else {
        PathFlags::empty()
    })
}

/// Reads into the guest's buffers from `offset`, in order, until one is
/// not filled (end of file). Returns the byte count.
fn read_iovs(
    vfs: &SharedVfs,
    desc: &Descriptor,
    mem: &mut Mem<'_>,
    iovs: u32,
    n: u32,
    offset: u64,
) -> R<u64> {
    let mut total = 0u64;
    if let Some(efd) = desc.mem_fd() {
        let mut guard = lock(vfs);
        let v = guard.as_mut().ok_or(Errno::BADF)?;
        for i in 0..n {
            let (buf, len) = mem.iovec(iovs, i)?;
            let r = mem.range(buf, len)?;
            let at = offset.saturating_add(total);
            match v.read_at(efd, &mut mem.0[r], at) {
                Ok(got) => {
                    total += got as u64;
                    if got < len as usize {
                        break;
                    }
                }
                Err(_) if total > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(total);
    }
    for i in 0..n {
        let (buf, len) = mem.iovec(iovs, i)?;
        mem.range(buf, len)?;
        let at = offset.saturating_add(total);
        match desc.read(vfs, u64::from(len), at) {
            Ok((data, _)) => {
                mem.put(buf, &data)?;
                total += data.len() as u64;
                if data.len() < len as usize {
                    break;
                }
            }
            Err(_) if total > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// Writes the guest's buffers at `offset` (or at the end, appending).
/// Returns the byte count and the offset after the last byte written.
fn write_iovs(
    vfs: &SharedVfs,
    desc: &Descriptor,
    mem: &Mem<'_>,
    iovs: u32,
    n: u32,
    offset: u64,
    append: bool,
) -> R<(u64, u64)> {
    let mut total = 0u64;
    let mut end = offset;
    if let Some(efd) = desc.mem_fd() {
        let mut guard = lock(vfs);
        let v = guard.as_mut().ok_or(Errno::BADF)?;
        for i in 0..n {
            let (buf, len) = mem.iovec(iovs, i)?;
            let data = mem.bytes(buf, len)?;
            let res = if append {
                v.append(efd, data).map(|at| at + data.len() as u64)
            } else {
                let at = offset.saturating_add(total);
                v.write_at(efd, data, at).map(|k| at + k as u64)
            };
            match res {
                Ok(e) => {
                    total += u64::from(len);
                    end = e;
                }
                Err(_) if total > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        if append && n == 0 {
            end = v.fd_metadata(efd)?.len;
        }
        return Ok((total, end));
    }
    for i in 0..n {
        let (buf, len) = mem.iovec(iovs, i)?;
        let data = mem.bytes(buf, len)?;
        let at = if append {
            desc.stat(vfs)?.size
        } else {
            offset.saturating_add(total)
        };
        match desc.write(vfs, data, at) {
            Ok(k) => {
                total += k;
                end = at + k;
                if k < u64::from(len) {
                    break;
                }
            }
            Err(_) if total > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((total, end))
}

impl Output {
    fn write(&mut self, data: &[u8], stderr: bool) -> R<()> {
        match self {
            Output::Null => Ok(()),
            Output::Capture(buf) => {
                let room = CAPTURE_LIMIT.saturating_sub(buf.len());
                buf.extend_from_slice(&data[..data.len().min(room)]);
                Ok(())
            }
            Output::Inherit => {
                let res = if stderr {
                    std::io::stderr().write_all(data)
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(data).and_then(|()| out.flush())
                };
                res.map_err(|_| Errno::IO.into())
            }
        }
    }
}

impl Input {
    fn read(&mut self, buf: &mut [u8]) -> R<usize> {
        match self {
            Input::Null => Ok(0),
            Input::Bytes { data, pos } => {
                let rest = data.get(*pos..).unwrap_or_default();
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *pos += n;
                Ok(n)
            }
            Input::Inherit => std::io::stdin().read(buf).map_err(|_| Errno::IO.into()),
        }
    }
}

/// Writes `n` strings as a `char**` array at `ptrs` and their bytes (each
/// followed by `sep`-joined parts and a NUL) at `buf`.
fn put_strings<'s>(
    mem: &mut Mem<'_>,
    ptrs: i32,
    buf: i32,
    items: impl ExactSizeIterator<Item = (&'s str, Option<&'s str>)>,
) -> R<()> {
    let n = u32::try_from(items.len()).map_err(|_| Errno::OVERFLOW)?;
    let (ptrs, mut at) = (ptrs as u32, buf as u32);
    mem.array(ptrs, n, 4, 4)?;
    for (i, (a, b)) in (0u32..).zip(items) {
        mem.put_u32(ptrs.wrapping_add(i * 4), at)?;
        let mut put = |bytes: &[u8]| -> R<()> {
            mem.put(at, bytes)?;
            at = at
                .checked_add(bytes.len() as u32)
                .ok_or_else(|| abi::trap("preview1: guest pointer out of bounds"))?;
            Ok(())
        };
        put(a.as_bytes())?;
        if let Some(b) = b {
            put(b"=")?;
            put(b.as_bytes())?;
        }
        put(b"\0")?;
    }
    Ok(())
}

fn sizes(
    mem: &mut Mem<'_>,
    count_ptr: i32,
    size_ptr: i32,
    items: impl ExactSizeIterator<Item = usize>,
) -> R<()> {
    let count = u32::try_from(items.len()).map_err(|_| Errno::OVERFLOW)?;
    let size: usize = items.sum();
    let size = u32::try_from(size).map_err(|_| Errno::OVERFLOW)?;
    mem.put_u32(count_ptr as u32, count)?;
    mem.put_u32(size_ptr as u32, size)
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

    fn stat_desc(&self, desc: &Descriptor) -> R<Filestat> {
        let vfs = &self.fs.vfs;
        match desc.mem_fd() {
            Some(efd) => on_vfs(vfs, |v| mem_filestat(&v.fd_metadata(efd)?)),
            None => host_filestat(desc.stat(vfs)?, desc.metadata_hash(vfs)?.lower),
        }
    }

    // ------------------------------------------------------------------
    // args, environ, clocks, random

    pub(crate) fn args_get(&mut self, mem: &mut Mem<'_>, argv: i32, buf: i32) -> R<()> {
        put_strings(mem, argv, buf, self.args.iter().map(|a| (a.as_str(), None)))
    }

    pub(crate) fn args_sizes_get(&mut self, mem: &mut Mem<'_>, argc: i32, size: i32) -> R<()> {
        sizes(mem, argc, size, self.args.iter().map(|a| a.len() + 1))
    }

    pub(crate) fn environ_get(&mut self, mem: &mut Mem<'_>, env: i32, buf: i32) -> R<()> {
        let items = self.env.iter().map(|(k, v)| (k.as_str(), Some(v.as_str())));
        put_strings(mem, env, buf, items)
    }

    pub(crate) fn environ_sizes_get(&mut self, mem: &mut Mem<'_>, count: i32, size: i32) -> R<()> {
        let items = self.env.iter().map(|(k, v)| k.len() + v.len() + 2);
        sizes(mem, count, size, items)
    }

    /// Realtime and monotonic clocks; the CPU-time clocks are `EBADF`, as
    /// in wasmtime-wasi.
    fn clock_now(&self, id: i32) -> R<u64> {
        match abi::enum_u32(id, 3)? {
            0 => {
                let d = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                u64::try_from(d.as_nanos()).map_err(|_| Errno::OVERFLOW.into())
            }
            1 => u64::try_from(self.epoch.elapsed().as_nanos()).map_err(|_| Errno::OVERFLOW.into()),
            _ => Err(Errno::BADF.into()),
        }
    }

    pub(crate) fn clock_res_get(&mut self, mem: &mut Mem<'_>, id: i32, out: i32) -> R<()> {
        match abi::enum_u32(id, 3)? {
            0 | 1 => mem.put_u64(out as u32, 1),
            _ => Err(Errno::BADF.into()),
        }
    }

    pub(crate) fn clock_time_get(
        &mut self,
        mem: &mut Mem<'_>,
        id: i32,
        _p: i64,
        out: i32,
    ) -> R<()> {
        let now = self.clock_now(id)?;
        mem.put_u64(out as u32, now)
    }

    pub(crate) fn random_get(&mut self, mem: &mut Mem<'_>, buf: i32, len: i32) -> R<()> {
        // Bounds first: a huge length traps before anything is allocated.
        let dst = mem.bytes_mut(buf as u32, len as u32)?;
        let rng = self
            .rng
            .get_or_insert_with(wasmtime_wasi::random::thread_rng);
        rng.fill_bytes(dst);
        Ok(())
    }

    // ------------------------------------------------------------------
    // Descriptor-level calls

    pub(crate) fn fd_advise(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        offset: i64,
        len: i64,
        advice: i32,
    ) -> R<()> {
        let advice = match abi::enum_u8(advice, 5)? {
            0 => Advice::Normal,
            1 => Advice::Sequential,
            2 => Advice::Random,
            3 => Advice::WillNeed,
            4 => Advice::DontNeed,
            _ => Advice::NoReuse,
        };
        let f = self.file(fd)?;
        Ok(f.desc
            .advise(&self.fs.vfs, offset as u64, len as u64, advice)?)
    }

    /// `posix_fallocate`: grows the file to `offset + len` if it is
    /// shorter. The engine stores no holes' worth of data, so there is
    /// nothing else to reserve. (wasmtime-wasi answers `ENOTSUP`.)
    pub(crate) fn fd_allocate(&mut self, _mem: &mut Mem<'_>, fd: i32, off: i64, len: i64) -> R<()> {
        let f = self.file(fd)?;
        let vfs = &self.fs.vfs;
        if !f.desc.get_flags(vfs)?.contains(DescriptorFlags::WRITE) {
            return Err(Errno::BADF.into());
        }
        let (off, len) = (
            u64::try_from(off).map_err(|_| Errno::INVAL)?,
            u64::try_from(len).map_err(|_| Errno::INVAL)?,
        );
        if len == 0 {
            return Err(Errno::INVAL.into());
        }
        let end = off.checked_add(len).ok_or(Errno::FBIG)?;
        if f.desc.stat(vfs)?.size < end {
            f.desc.set_size(vfs, end)?;
        }
        Ok(())
    }

    pub(crate) fn fd_close(&mut self, _mem: &mut Mem<'_>, fd: i32) -> R<()> {
        let slot = self.take(fd)?;
        self.release(slot);
        Ok(())
    }

    pub(crate) fn fd_datasync(&mut self, _mem: &mut Mem<'_>, fd: i32) -> R<()> {
        Ok(self.file(fd)?.desc.sync(&self.fs.vfs, true)?)
    }

    pub(crate) fn fd_sync(&mut self, _mem: &mut Mem<'_>, fd: i32) -> R<()> {
        Ok(self.file(fd)?.desc.sync(&self.fs.vfs, false)?)
    }

    /// As wasmtime-wasi reports it: stdio has only read or write rights;
    /// a preopen the fixed set userlands expect; anything else every right
    /// its open mode allows (directories pass on what a preopen does).
    pub(crate) fn fd_fdstat_get(&mut self, mem: &mut Mem<'_>, fd: i32, out: i32) -> R<()> {
        let slot = self.slot(fd)?;
        let stdio = |r: u64| Fdstat {
            filetype: if self.is_tty(slot) {
                filetype::CHARACTER_DEVICE
            } else {
                filetype::UNKNOWN
            },
            flags: 0,
            rights_base: r,
            rights_inheriting: r,
        };
        let stat = match slot {
            Slot::Stdin => stdio(rights::FD_READ),
            Slot::Stdout | Slot::Stderr => stdio(rights::FD_WRITE),
            Slot::Dir(DirSlot {
                preopen: Some(_), ..
            }) => Fdstat {
                filetype: filetype::DIRECTORY,
                flags: 0,
                rights_base: rights::PREOPEN_BASE,
                rights_inheriting: rights::PREOPEN_INHERITING,
            },
            // A directory the guest opened: its own rights as wasmtime-wasi
            // computes them, but it passes on the rights a preopen passes
            // on. wasi-libc opens files beneath it with the intersection,
            // so without this a file opened O_RDWR there could not be
            // written (the adapter reports the same).
            Slot::Dir(DirSlot { desc, .. }) => Fdstat {
                rights_inheriting: rights::PREOPEN_INHERITING,
                ..self.fdstat_of(desc, 0)?
            },
            Slot::File(f) => {
                let mut flags = 0;
                if f.append {
                    flags |= fdflags::APPEND;
                }
                if f.nonblock {
                    flags |= fdflags::NONBLOCK;
                }
                self.fdstat_of(&f.desc, flags)?
            }
        };
        stat.write(mem, out as u32)
    }

    fn fdstat_of(&self, desc: &Descriptor, mut flags: u16) -> R<Fdstat> {
        let vfs = &self.fs.vfs;
        let dflags = desc.get_flags(vfs)?;
        let ft = host_filetype(desc.get_type(vfs)?);
        let mut r = rights::ALL;
        if ft == filetype::DIRECTORY {
            r &= !(rights::FD_SEEK | rights::FD_FILESTAT_SET_SIZE | rights::PATH_FILESTAT_SET_SIZE);
        }
        if !dflags.contains(DescriptorFlags::READ) {
            r &= !(rights::FD_READ | rights::FD_READDIR);
        }
        if !dflags.contains(DescriptorFlags::WRITE) {
            r &= !rights::FD_WRITE;
        }
        if dflags.contains(DescriptorFlags::DATA_INTEGRITY_SYNC) {
            flags |= fdflags::DSYNC;
        }
        if dflags.contains(DescriptorFlags::REQUESTED_WRITE_SYNC) {
            flags |= fdflags::RSYNC;
        }
        if dflags.contains(DescriptorFlags::FILE_INTEGRITY_SYNC) {
            flags |= fdflags::SYNC;
        }
        Ok(Fdstat {
            filetype: ft,
            flags,
            rights_base: r,
            rights_inheriting: r,
        })
    }

    /// Only `APPEND` and `NONBLOCK` can change, on files (as in
    /// wasmtime-wasi); the sync flags are `EINVAL`.
    pub(crate) fn fd_fdstat_set_flags(&mut self, _mem: &mut Mem<'_>, fd: i32, flags: i32) -> R<()> {
        let flags = abi::flags_u16(flags, fdflags::ALL)?;
        let Slot::File(f) = self.slot_mut(fd)? else {
            return Err(Errno::BADF.into());
        };
        if flags & (fdflags::DSYNC | fdflags::SYNC | fdflags::RSYNC) != 0 {
            return Err(Errno::INVAL.into());
        }
        f.append = flags & fdflags::APPEND != 0;
        f.nonblock = flags & fdflags::NONBLOCK != 0;
        Ok(())
    }

    pub(crate) fn fd_fdstat_set_rights(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        base: i64,
        inheriting: i64,
    ) -> R<()> {
        abi::rights(base)?;
        abi::rights(inheriting)?;
        self.slot(fd)?;
        Err(Errno::NOTSUP.into())
    }

    pub(crate) fn fd_filestat_get(&mut self, mem: &mut Mem<'_>, fd: i32, out: i32) -> R<()> {
        let stat = match self.slot(fd)? {
            s @ (Slot::Stdin | Slot::Stdout | Slot::Stderr) => Filestat {
                dev: 0,
                ino: 0,
                filetype: if self.is_tty(s) {
                    filetype::CHARACTER_DEVICE
                } else {
                    filetype::UNKNOWN
                },
                nlink: 0,
                size: 0,
                atim: 0,
                mtim: 0,
                ctim: 0,
            },
            Slot::File(FileSlot { desc, .. }) | Slot::Dir(DirSlot { desc, .. }) => {
                self.stat_desc(desc)?
            }
        };
        stat.write(mem, out as u32)
    }

    pub(crate) fn fd_filestat_set_size(&mut self, _mem: &mut Mem<'_>, fd: i32, size: i64) -> R<()> {
        Ok(self.file(fd)?.desc.set_size(&self.fs.vfs, size as u64)?)
    }

    pub(crate) fn fd_filestat_set_times(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        atim: i64,
        mtim: i64,
        fst: i32,
    ) -> R<()> {
        let (a, m) = times(atim, mtim, fst)?;
        Ok(self.desc(fd)?.set_times(&self.fs.vfs, a, m)?)
    }

    // ------------------------------------------------------------------
    // Data

    pub(crate) fn fd_read(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        iovs: i32,
        n: i32,
        out: i32,
    ) -> R<()> {
        let (iovs, n) = (iovs as u32, n as u32);
        mem.iovecs(iovs, n)?;
        let vfs = &self.fs.vfs;
        let total = match self.table.get_mut(fd as u32 as usize) {
            Some(Some(Slot::File(f))) => {
                let got = read_iovs(vfs, &f.desc, mem, iovs, n, f.pos)?;
                f.pos = f.pos.checked_add(got).ok_or(Errno::OVERFLOW)?;
                got
            }
            Some(Some(Slot::Stdin)) => {
                let mut total = 0u64;
                for i in 0..n {
                    let (buf, len) = mem.iovec(iovs, i)?;
                    let got = self.stdin.read(mem.bytes_mut(buf, len)?)?;
                    total += got as u64;
                    // One read from a stream per call, as readv does.
                    if len > 0 {
                        break;
                    }
                }
                total
            }
            _ => return Err(Errno::BADF.into()),
        };
        mem.put_u32(out as u32, total as u32)
    }

    pub(crate) fn fd_pread(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        iovs: i32,
        n: i32,
        offset: i64,
        out: i32,
    ) -> R<()> {
        let (iovs, n) = (iovs as u32, n as u32);
        mem.iovecs(iovs, n)?;
        let total = match self.slot(fd)? {
            Slot::File(f) => read_iovs(&self.fs.vfs, &f.desc, mem, iovs, n, offset as u64)?,
            Slot::Stdin => return Err(Errno::SPIPE.into()),
            _ => return Err(Errno::BADF.into()),
        };
        mem.put_u32(out as u32, total as u32)
    }

    pub(crate) fn fd_write(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        iovs: i32,
        n: i32,
        out: i32,
    ) -> R<()> {
        let (iovs, n) = (iovs as u32, n as u32);
        mem.iovecs(iovs, n)?;
        let vfs = &self.fs.vfs;
        let total = match self.table.get_mut(fd as u32 as usize) {
            Some(Some(Slot::File(f))) => {
                let (total, end) = write_iovs(vfs, &f.desc, mem, iovs, n, f.pos, f.append)?;
                f.pos = end;
                total
            }
            Some(Some(s @ (Slot::Stdout | Slot::Stderr))) => {
                let stderr = matches!(s, Slot::Stderr);
                let sink = if stderr {
                    &mut self.stderr
                } else {
                    &mut self.stdout
                };
                let mut total = 0u64;
                for i in 0..n {
                    let (buf, len) = mem.iovec(iovs, i)?;
                    sink.write(mem.bytes(buf, len)?, stderr)?;
                    total += u64::from(len);
                }
                total
            }
            _ => return Err(Errno::BADF.into()),
        };
        let total = u32::try_from(total).map_err(|_| Errno::OVERFLOW)?;
        mem.put_u32(out as u32, total)
    }

    /// `pwrite` on a descriptor opened with `APPEND` appends, as on Linux
    /// and in wasmtime-wasi.
    pub(crate) fn fd_pwrite(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        iovs: i32,
        n: i32,
        offset: i64,
        out: i32,
    ) -> R<()> {
        let (iovs, n) = (iovs as u32, n as u32);
        mem.iovecs(iovs, n)?;
        let total = match self.slot(fd)? {
            Slot::File(f) => {
                write_iovs(&self.fs.vfs, &f.desc, mem, iovs, n, offset as u64, f.append)?.0
            }
            Slot::Stdout | Slot::Stderr => return Err(Errno::SPIPE.into()),
            _ => return Err(Errno::BADF.into()),
        };
        let total = u32::try_from(total).map_err(|_| Errno::OVERFLOW)?;
        mem.put_u32(out as u32, total)
    }

    pub(crate) fn fd_seek(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        offset: i64,
        whence: i32,
        out: i32,
    ) -> R<()> {
        let whence = abi::enum_u8(whence, 2)?;
        let vfs = &self.fs.vfs;
        let f = match self.table.get_mut(fd as u32 as usize) {
            Some(Some(Slot::File(f))) => f,
            Some(Some(Slot::Stdin | Slot::Stdout | Slot::Stderr)) => {
                return Err(Errno::SPIPE.into());
            }
            _ => return Err(Errno::BADF.into()),
        };
        let pos = match whence {
            0 => u64::try_from(offset).map_err(|_| Errno::INVAL)?,
            1 => f.pos.checked_add_signed(offset).ok_or(Errno::INVAL)?,
            _ => {
                let size = match f.desc.mem_fd() {
                    Some(efd) => on_vfs(vfs, |v| Ok(v.fd_metadata(efd)?.len))?,
                    None => f.desc.stat(vfs)?.size,
                };
                size.checked_add_signed(offset).ok_or(Errno::INVAL)?
            }
        };
        f.pos = pos;
        mem.put_u64(out as u32, pos)
    }

    pub(crate) fn fd_tell(&mut self, mem: &mut Mem<'_>, fd: i32, out: i32) -> R<()> {
        let pos = match self.slot(fd)? {
            Slot::File(f) => f.pos,
            Slot::Stdin | Slot::Stdout | Slot::Stderr => return Err(Errno::SPIPE.into()),
            Slot::Dir(_) => return Err(Errno::BADF.into()),
        };
        mem.put_u64(out as u32, pos)
    }

    // ------------------------------------------------------------------
    // Preopens and the table

    pub(crate) fn fd_prestat_get(&mut self, mem: &mut Mem<'_>, fd: i32, out: i32) -> R<()> {
        let Slot::Dir(DirSlot {
            preopen: Some(name),
            ..
        }) = self.slot(fd)?
        else {
            return Err(Errno::BADF.into());
        };
        let len = u32::try_from(name.len()).map_err(|_| Errno::OVERFLOW)?;
        let out = out as u32;
        // prestat: tag u8 (0 = dir), then pr_name_len u32 at offset 4.
        mem.put_u32(out, 0)?;
        mem.put_u32(out.wrapping_add(4), len)
    }

    pub(crate) fn fd_prestat_dir_name(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        path: i32,
        len: i32,
    ) -> R<()> {
        let Slot::Dir(DirSlot {
            preopen: Some(name),
            ..
        }) = self.slot(fd)?
        else {
            return Err(Errno::NOTDIR.into());
        };
        if name.len() > len as u32 as usize {
            return Err(Errno::NAMETOOLONG.into());
        }
        mem.put(path as u32, name.as_bytes())
    }

    /// Both numbers must be open (as in wasmtime-wasi); `to` is closed
    /// first, then `from` moves there.
    pub(crate) fn fd_renumber(&mut self, _mem: &mut Mem<'_>, from: i32, to: i32) -> R<()> {
        self.slot(from)?;
        self.slot(to)?;
        if from == to {
            return Ok(());
        }
        let old = self.take(to)?;
        self.release(old);
        let moving = self.take(from)?;
        let to = to as u32;
        // `take` may have shrunk the table past `to`.
        while self.table.len() <= to as usize {
            self.free.insert(self.table.len() as u32);
            self.table.push(None);
        }
        self.free.remove(&to);
        self.table[to as usize] = Some(moving);
        Ok(())
    }

    // ------------------------------------------------------------------
    // Directories

    /// Fills the guest's buffer with `dirent`s from `cookie` on: `.`, `..`,
    /// then the entries in name order. The last entry may be cut short at
    /// the buffer's end (the guest then asks again with a bigger buffer);
    /// no byte past what was written is reported as used.
    pub(crate) fn fd_readdir(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        buf: i32,
        len: i32,
        cookie: i64,
        out: i32,
    ) -> R<()> {
        let vfs = &self.fs.vfs;
        let Some(Some(Slot::Dir(dir))) = self.table.get_mut(fd as u32 as usize) else {
            return Err(Errno::BADF.into());
        };
        let range = mem.range(buf as u32, len as u32)?;
        let used = {
            let mut w = DirentWriter {
                out: &mut mem.0[range],
                used: 0,
            };
            fill_dir(vfs, dir, cookie as u64, &mut w)?;
            w.used
        };
        mem.put_u32(out as u32, used as u32)
    }

    // ------------------------------------------------------------------
    // Paths

    pub(crate) fn path_create_directory(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        path: i32,
        len: i32,
    ) -> R<()> {
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        Ok(d.desc.create_directory_at(&self.fs.vfs, path)?)
    }

    pub(crate) fn path_filestat_get(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        flags: i32,
        path: i32,
        len: i32,
        out: i32,
    ) -> R<()> {
        let flags = path_flags(flags)?;
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        let vfs = &self.fs.vfs;
        let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
        let stat = match d.desc.mem_fd() {
            Some(efd) => on_vfs(vfs, |v| mem_filestat(&v.metadata_at(efd, path, follow)?))?,
            None => host_filestat(
                d.desc.stat_at(vfs, flags, path)?,
                d.desc.metadata_hash_at(vfs, flags, path)?.lower,
            )?,
        };
        stat.write(mem, out as u32)
    }

    pub(crate) fn path_filestat_set_times(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        flags: i32,
        path: i32,
        len: i32,
        atim: i64,
        mtim: i64,
        fst: i32,
    ) -> R<()> {
        let flags = path_flags(flags)?;
        let (a, m) = times(atim, mtim, fst)?;
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        Ok(d.desc.set_times_at(&self.fs.vfs, flags, path, a, m)?)
    }

    pub(crate) fn path_link(
        &mut self,
        mem: &mut Mem<'_>,
        old_fd: i32,
        flags: i32,
        old_path: i32,
        old_len: i32,
        new_fd: i32,
        new_path: i32,
        new_len: i32,
    ) -> R<()> {
        let flags = path_flags(flags)?;
        let (a, b) = (self.dir(old_fd)?, self.dir(new_fd)?);
        let old = mem.str(old_path as u32, old_len as u32)?;
        let new = mem.str(new_path as u32, new_len as u32)?;
        Ok(a.desc.link_at(&self.fs.vfs, flags, old, &b.desc, new)?)
    }

    pub(crate) fn path_open(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        dirflags: i32,
        path: i32,
        len: i32,
        oflags: i32,
        base: i64,
        inheriting: i64,
        fdflags: i32,
        out: i32,
    ) -> R<()> {
        let pflags = path_flags(dirflags)?;
        let o = abi::flags_u16(oflags, oflags::ALL)?;
        let base = abi::rights(base)?;
        abi::rights(inheriting)?;
        let fdf = abi::flags_u16(fdflags, fdflags::ALL)?;
        let path = mem.str(path as u32, len as u32)?;
        let dir = match self.slot(fd)? {
            Slot::Dir(d) => &d.desc,
            Slot::File(_) => return Err(Errno::NOTDIR.into()),
            _ => return Err(Errno::BADF.into()),
        };
        let mut open = OpenFlags::empty();
        for (bit, flag) in [
            (oflags::CREAT, OpenFlags::CREATE),
            (oflags::DIRECTORY, OpenFlags::DIRECTORY),
            (oflags::EXCL, OpenFlags::EXCLUSIVE),
            (oflags::TRUNC, OpenFlags::TRUNCATE),
        ] {
            if o & bit != 0 {
                open |= flag;
            }
        }
        let mut flags = DescriptorFlags::empty();
        for (on, flag) in [
            (base & rights::FD_READ != 0, DescriptorFlags::READ),
            (base & rights::FD_WRITE != 0, DescriptorFlags::WRITE),
            (
                fdf & fdflags::SYNC != 0,
                DescriptorFlags::FILE_INTEGRITY_SYNC,
            ),
            (
                fdf & fdflags::DSYNC != 0,
                DescriptorFlags::DATA_INTEGRITY_SYNC,
            ),
            (
                fdf & fdflags::RSYNC != 0,
                DescriptorFlags::REQUESTED_WRITE_SYNC,
            ),
        ] {
            if on {
                flags |= flag;
            }
        }
        let vfs = &self.fs.vfs;
        // Everything the guest holds counts against `max_open_files`:
        // checked before opening, kept by a mount's descriptor (the engine
        // counts its own).
        let held = self.fs.admit().map_err(|_| Errno::MFILE)?;
        let mut desc = dir.open_at(vfs, pflags, path, open, flags)?;
        if desc.is_host() {
            desc = desc.hold(held);
        }
        let is_dir = match desc.mem_fd() {
            Some(efd) => on_vfs(vfs, |v| Ok(v.fd_info(efd)?.kind == FileType::Dir)),
            None => Ok(desc.get_type(vfs)? == DescriptorType::Directory),
        };
        if let Some(efd) = desc.mem_fd() {
            self.fs.opened.insert(efd);
        }
        let slot = match is_dir {
            Ok(true) => Slot::Dir(DirSlot {
                desc,
                preopen: None,
                cookies: Cookies::default(),
            }),
            Ok(false) => Slot::File(FileSlot {
                desc,
                pos: 0,
                append: fdf & fdflags::APPEND != 0,
                nonblock: fdf & fdflags::NONBLOCK != 0,
            }),
            Err(e) => {
                self.release(Slot::File(FileSlot {
                    desc,
                    pos: 0,
                    append: false,
                    nonblock: false,
                }));
                return Err(e);
            }
        };
        let new = self.push(slot)?;
        mem.put_u32(out as u32, new)
    }

    pub(crate) fn path_readlink(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        path: i32,
        len: i32,
        buf: i32,
        buf_len: i32,
        out: i32,
    ) -> R<()> {
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        let target = d.desc.readlink_at(&self.fs.vfs, path)?;
        // Cut to the buffer, as readlink(2) does.
        let n = target.len().min(buf_len as u32 as usize);
        mem.put(buf as u32, &target.as_bytes()[..n])?;
        mem.put_u32(out as u32, n as u32)
    }

    pub(crate) fn path_remove_directory(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        path: i32,
        len: i32,
    ) -> R<()> {
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        Ok(d.desc.remove_directory_at(&self.fs.vfs, path)?)
    }

    pub(crate) fn path_rename(
        &mut self,
        mem: &mut Mem<'_>,
        old_fd: i32,
        old_path: i32,
        old_len: i32,
        new_fd: i32,
        new_path: i32,
        new_len: i32,
    ) -> R<()> {
        let (a, b) = (self.dir(old_fd)?, self.dir(new_fd)?);
        let old = mem.str(old_path as u32, old_len as u32)?;
        let new = mem.str(new_path as u32, new_len as u32)?;
        Ok(a.desc.rename_at(&self.fs.vfs, old, &b.desc, new)?)
    }

    pub(crate) fn path_symlink(
        &mut self,
        mem: &mut Mem<'_>,
        old_path: i32,
        old_len: i32,
        fd: i32,
        new_path: i32,
        new_len: i32,
    ) -> R<()> {
        let d = self.dir(fd)?;
        let target = mem.str(old_path as u32, old_len as u32)?;
        let link = mem.str(new_path as u32, new_len as u32)?;
        Ok(d.desc.symlink_at(&self.fs.vfs, target, link)?)
    }

    pub(crate) fn path_unlink_file(
        &mut self,
        mem: &mut Mem<'_>,
        fd: i32,
        path: i32,
        len: i32,
    ) -> R<()> {
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        Ok(d.desc.unlink_file_at(&self.fs.vfs, path)?)
    }

    // ------------------------------------------------------------------
    // poll_oneoff

    /// Clocks and descriptors. Files, stdin and stdout/stderr are always
    /// ready, so with any descriptor subscribed nothing sleeps; otherwise
    /// the call sleeps until the earliest clock and reports every clock due
    /// by then. A descriptor that cannot be polled fails the whole call
    /// with `EBADF`, as in wasmtime-wasi. Nothing is allocated per
    /// subscription: the guest's array is read twice.
    pub(crate) fn poll_oneoff(
        &mut self,
        mem: &mut Mem<'_>,
        subs: i32,
        events: i32,
        n: i32,
        out: i32,
    ) -> R<()> {
        let (subs, events, n) = (subs as u32, events as u32, n as u32);
        if n == 0 {
            return Err(Errno::INVAL.into());
        }
        mem.array(subs, n, SUBSCRIPTION_SIZE, 8)?;
        mem.array(events, n, EVENT_SIZE, 8)?;
        // Pass 1: validate, find the earliest clock and whether any
        // descriptor is subscribed.
        let mut earliest: Option<u64> = None;
        let mut any_fd = false;
        for i in 0..n {
            match self.subscription(mem, subs + i * SUBSCRIPTION_SIZE)? {
                Sub::Clock { wait, .. } => {
                    earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
                }
                Sub::Fd { .. } => any_fd = true,
            }
        }
        let slept = match (any_fd, earliest) {
            (false, Some(wait)) => {
                // Never past the run's deadline: sleep until it, then end
                // the run.
                let want = Duration::from_nanos(wait);
                match crate::wasi::limits::remaining(self.deadline)
                    .map_err(super::abi::Error::Trap)?
                {
                    Some(left) if left < want => {
                        std::thread::sleep(left);
                        return Err(super::abi::Error::Trap(crate::wasi::limits::exceeded(
                            self.deadline,
                        )));
                    }
                    _ => std::thread::sleep(want),
                }
                wait
            }
            _ => 0,
        };
        // Pass 2: write the events that are due.
        let mut count = 0u32;
        for i in 0..n {
            let sub = self.subscription(mem, subs + i * SUBSCRIPTION_SIZE)?;
            let ev = match sub {
                Sub::Clock { userdata, wait } if wait <= slept => {
                    abi::event(userdata, Errno::SUCCESS, abi::EVENTTYPE_CLOCK, 0, 0)
                }
                Sub::Clock { .. } => continue,
                Sub::Fd {
                    userdata,
                    write,
                    fd,
                } => self.fd_event(userdata, write, fd)?,
            };
            mem.put(events + count * EVENT_SIZE, &ev)?;
            count += 1;
        }
        mem.put_u32(out as u32, count)
    }

    fn subscription(&self, mem: &Mem<'_>, at: u32) -> R<Sub> {
        let userdata = mem.u64_at(at)?;
        let tag = mem.u8_at(at + 8)?;
        match tag {
            abi::EVENTTYPE_CLOCK => {
                let id = mem.u32_at(at + 16)?;
                let timeout = mem.u64_at(at + 24)?;
                let flags = mem.u16_at(at + 40)?;
                if flags & !abi::SUBCLOCK_ABSTIME != 0 {
                    return Err(Errno::INVAL.into());
                }
                let absolute = flags & abi::SUBCLOCK_ABSTIME != 0;
                let wait = match id {
                    0 | 1 if !absolute => timeout,
                    0 | 1 => timeout.saturating_sub(self.clock_now(id as i32)?),
                    _ => return Err(Errno::INVAL.into()),
                };
                Ok(Sub::Clock { userdata, wait })
            }
            abi::EVENTTYPE_FD_READ | abi::EVENTTYPE_FD_WRITE => {
                let fd = mem.u32_at(at + 16)? as i32;
                let write = tag == abi::EVENTTYPE_FD_WRITE;
                match (self.slot(fd)?, write) {
                    (Slot::File(_), _) | (Slot::Stdin, false) => {}
                    (Slot::Stdout | Slot::Stderr, true) => {}
                    _ => return Err(Errno::BADF.into()),
                }
                Ok(Sub::Fd {
                    userdata,
                    write,
                    fd,
                })
            }
            _ => Err(Errno::INVAL.into()),
        }
    }

    /// A file reports the bytes left from its offset (and `HANGUP` at the
    /// end); stdio reports 1, as wasmtime-wasi does.
    fn fd_event(&self, userdata: u64, write: bool, fd: i32) -> R<[u8; 32]> {
        let ty = if write {
            abi::EVENTTYPE_FD_WRITE
        } else {
            abi::EVENTTYPE_FD_READ
        };
        let (nbytes, flags) = match self.slot(fd)? {
            Slot::File(f) if !write => {
                let size = match f.desc.mem_fd() {
                    Some(efd) => on_vfs(&self.fs.vfs, |v| Ok(v.fd_metadata(efd)?.len))?,
                    None => f.desc.stat(&self.fs.vfs)?.size,
                };
                let left = size.saturating_sub(f.pos);
                let hangup = if left == 0 {
                    abi::EVENT_FD_READWRITE_HANGUP
                } else {
                    0
                };
                (left, hangup)
            }
            _ => (1, 0),
        };
        Ok(abi::event(userdata, Errno::SUCCESS, ty, nbytes, flags))
    }

    // ------------------------------------------------------------------
    // Sockets: none are ever open, so a valid descriptor is not a socket.

    fn not_a_socket(&self, fd: i32) -> R<()> {
        self.slot(fd)?;
        Err(Errno::NOTSOCK.into())
    }

    pub(crate) fn sock_accept(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        flags: i32,
        _out: i32,
    ) -> R<()> {
        abi::flags_u16(flags, fdflags::ALL)?;
        self.not_a_socket(fd)
    }

    pub(crate) fn sock_recv(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        _iovs: i32,
        _n: i32,
        flags: i32,
        _out: i32,
        _out_flags: i32,
    ) -> R<()> {
        abi::flags_u16(flags, 3)?;
        self.not_a_socket(fd)
    }

    pub(crate) fn sock_send(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        _iovs: i32,
        _n: i32,
        flags: i32,
        _out: i32,
    ) -> R<()> {
        abi::flags_u16(flags, 0)?;
        self.not_a_socket(fd)
    }

    pub(crate) fn sock_shutdown(&mut self, _mem: &mut Mem<'_>, fd: i32, how: i32) -> R<()> {
        abi::flags_u8(how, 3)?;
        self.not_a_socket(fd)
    }
}

enum Sub {
    Clock { userdata: u64, wait: u64 },
    Fd { userdata: u64, write: bool, fd: i32 },
}

/// Packs `dirent`s into the guest's buffer.
struct DirentWriter<'a> {
    out: &'a mut [u8],
    used: usize,
}

impl DirentWriter<'_> {
    /// Writes one entry, cut at the buffer's end. False once full.
    fn put(&mut self, next: u64, ino: u64, name: &[u8], ty: u8) -> bool {
        let head = abi::dirent(next, ino, name.len() as u32, ty);
        for part in [&head[..], name] {
            let room = self.out.len() - self.used;
            let n = part.len().min(room);
            self.out[self.used..self.used + n].copy_from_slice(&part[..n]);
            self.used += n;
            if n < part.len() {
                return false;
            }
        }
        self.used < self.out.len()
    }

    fn room(&self) -> usize {
        self.out.len() - self.used
    }
}

/// Entries of a memory directory from `from` on, a page at a time, until
/// the buffer is full; the first gets cookie `next`.
fn list_mem(
    v: &Vfs,
    efd: crate::Fd,
    from: Resume,
    mut next: u64,
    cookies: &mut Cookies,
    w: &mut DirentWriter<'_>,
) -> R<()> {
    let (mut after, mut skip) = match from {
        Resume::After(name) => (name, 0),
        Resume::Skip(n) => (None, n),
    };
    loop {
        // Enough entries to fill what is left, and one more to cut (or a
        // bounded page of names to skip).
        let want = (w.room() / (DIRENT_SIZE + 1)).clamp(1, 1024) + 1;
        let page = v.read_dir_page(efd, after.as_deref(), want)?;
        let skipped = page.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
        skip -= skipped as u64;
        for e in &page[skipped..] {
            next = next.checked_add(1).ok_or(Errno::OVERFLOW)?;
            cookies.remember(next, &e.name);
            if !w.put(next, e.ino, e.name.as_bytes(), mem_filetype(e.kind)) {
                return Ok(());
            }
        }
        match page.last() {
            Some(last) if page.len() == want => after = Some(last.name.clone()),
            _ => return Ok(()),
        }
    }
}

/// Entries of a mounted host directory from `from` on: the whole listing,
/// sorted by name, so cookies work as they do in memory.
fn list_host(
    vfs: &SharedVfs,
    dir: &Descriptor,
    from: Resume,
    mut next: u64,
    cookies: &mut Cookies,
    w: &mut DirentWriter<'_>,
) -> R<()> {
    let mut stream = dir.read_directory(vfs, None)?;
    let mut entries = Vec::new();
    let after = match &from {
        Resume::After(a) => a.as_deref(),
        Resume::Skip(_) => None,
    };
    while let Some(e) = stream.next(vfs)? {
        if after.is_none_or(|a| e.name.as_str() > a) {
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let skip = match from {
        Resume::After(_) => 0,
        Resume::Skip(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    for e in entries.into_iter().skip(skip) {
        let ino = dir
            .metadata_hash_at(vfs, PathFlags::empty(), &e.name)?
            .lower;
        next = next.checked_add(1).ok_or(Errno::OVERFLOW)?;
        cookies.remember(next, &e.name);
        if !w.put(next, ino, e.name.as_bytes(), host_filetype(e.type_)) {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes the entries of `dir` from `cookie` on into `w`.
fn fill_dir(vfs: &SharedVfs, dir: &mut DirSlot, cookie: u64, w: &mut DirentWriter<'_>) -> R<()> {
    let dir_ino = match dir.desc.mem_fd() {
        Some(efd) => on_vfs(vfs, |v| Ok(v.fd_info(efd)?.ino))?,
        None => dir.desc.metadata_hash(vfs)?.lower,
    };
    // wasmtime-wasi gives `..` the directory's own inode too: the parent
    // of a preopen is not the guest's to see.
    if cookie == 0 && !w.put(1, dir_ino, b".", filetype::DIRECTORY) {
        return Ok(());
    }
    if cookie <= 1 && !w.put(2, dir_ino, b"..", filetype::DIRECTORY) {
        return Ok(());
    }
    let (from, next) = match cookie {
        0..=2 => (Resume::After(None), 2),
        c => (dir.cookies.resume(c), c),
    };
    match dir.desc.mem_fd() {
        Some(efd) => on_vfs(vfs, |v| list_mem(v, efd, from, next, &mut dir.cookies, w)),
        None => list_host(vfs, &dir.desc, from, next, &mut dir.cookies, w),
    }
}
