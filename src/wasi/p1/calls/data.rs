//! File data and stdio: reads and writes (positioned or at the
//! descriptor's offset), seeking, and the guest's stdin, stdout and
//! stderr.
//!
//! File data moves directly between guest memory and the descriptor:
//! reads fill the guest's buffers in place, writes take the guest's bytes
//! as they are, with at most one lock of the tree per call.

use std::io::{Read, Write};

use crate::wasi::descriptor::Buffers;
use crate::wasi::p1::abi::{self, Errno, Error, Mem, R};
use crate::wasi::p1::{Input, Output, Slot, WasiP1Ctx};

/// The guest's `iovec` (or `ciovec`) array: `n` buffers described at
/// `iovs`, whose array the caller has already checked. Each buffer is
/// checked when reached.
struct Iovecs<'m, 'a> {
    mem: &'m mut Mem<'a>,
    iovs: u32,
    n: u32,
    /// Bytes the buffers still handed out may hold: the count a call
    /// reports is a u32, so one call moves at most `u32::MAX` bytes
    /// (later buffers come out shorter or empty, a short transfer) however
    /// many iovecs name the same memory.
    left: u32,
}

impl<'m, 'a> Iovecs<'m, 'a> {
    fn new(mem: &'m mut Mem<'a>, iovs: u32, n: u32) -> Self {
        Iovecs {
            mem,
            iovs,
            n,
            left: u32::MAX,
        }
    }
}

impl Buffers for Iovecs<'_, '_> {
    type Error = Error;

    fn count(&self) -> u32 {
        self.n
    }

    fn get(&mut self, i: u32) -> R<&mut [u8]> {
        let (buf, len) = self.mem.iovec(self.iovs, i)?;
        // Checked in full, as the guest gave it, then cut to what is left.
        let full = self.mem.bytes_mut(buf, len)?;
        let cut = len.min(self.left);
        self.left -= cut;
        Ok(&mut full[..cut as usize])
    }
}

impl Output {
    fn write(&mut self, data: &[u8], stderr: bool) -> R<()> {
        match self {
            Output::Null => Ok(()),
            Output::Capture(buf, limit) => {
                let room = limit.saturating_sub(buf.len());
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

/// Stores the byte count a read or write reports at `out`. `Iovecs` cuts
/// every transfer to `u32::MAX` bytes, so `EOVERFLOW` is only a guard.
fn put_count(mem: &mut Mem<'_>, out: i32, total: u64) -> R<()> {
    mem.put_u32(
        out as u32,
        u32::try_from(total).map_err(|_| Errno::OVERFLOW)?,
    )
}

impl WasiP1Ctx {
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
                let got = f
                    .desc
                    .read_vectored(vfs, &mut Iovecs::new(mem, iovs, n), f.pos)?;
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
        put_count(mem, out, total)
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
            Slot::File(f) => {
                let bufs = &mut Iovecs::new(mem, iovs, n);
                f.desc.read_vectored(&self.fs.vfs, bufs, offset as u64)?
            }
            Slot::Stdin => return Err(Errno::SPIPE.into()),
            _ => return Err(Errno::BADF.into()),
        };
        put_count(mem, out, total)
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
                let bufs = &mut Iovecs::new(mem, iovs, n);
                let (total, end) = f.desc.write_vectored(vfs, bufs, f.pos, f.append)?;
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
                // Cut as for files: at most `u32::MAX` bytes per call.
                let mut bufs = Iovecs::new(mem, iovs, n);
                let mut total = 0u64;
                for i in 0..n {
                    let data = bufs.get(i)?;
                    sink.write(data, stderr)?;
                    total += data.len() as u64;
                }
                total
            }
            _ => return Err(Errno::BADF.into()),
        };
        put_count(mem, out, total)
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
                let bufs = &mut Iovecs::new(mem, iovs, n);
                let offset = offset as u64;
                f.desc
                    .write_vectored(&self.fs.vfs, bufs, offset, f.append)?
                    .0
            }
            Slot::Stdout | Slot::Stderr => return Err(Errno::SPIPE.into()),
            _ => return Err(Errno::BADF.into()),
        };
        put_count(mem, out, total)
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
                let size = f.desc.stat(vfs)?.size;
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
}

#[cfg(test)]
mod tests {
    use super::{Buffers, Errno, Error, Iovecs, Mem};

    /// Three iovecs naming the same 8 bytes at 16, under a budget of 10:
    /// 8, then 2, then nothing; a bad buffer still traps once cut to 0.
    #[test]
    fn iovecs_stop_at_what_a_count_can_say() {
        let mut bytes = vec![0u8; 64];
        for i in 0..4u32 {
            let at = (i * 8) as usize;
            let ptr: u32 = if i == 3 { 60 } else { 16 };
            bytes[at..at + 4].copy_from_slice(&ptr.to_le_bytes());
            bytes[at + 4..at + 8].copy_from_slice(&8u32.to_le_bytes());
        }
        let mut mem = Mem(&mut bytes);
        let mut io = Iovecs::new(&mut mem, 0, 4);
        io.left = 10;
        assert_eq!(io.get(0).map(|b| b.len()).ok(), Some(8));
        assert_eq!(io.get(1).map(|b| b.len()).ok(), Some(2));
        assert_eq!(io.get(2).map(|b| b.len()).ok(), Some(0));
        // 60..68 is past the end of memory: a trap, cut or not.
        assert!(io.get(3).is_err());
        // By default a call may move `u32::MAX` bytes in all.
        let io = Iovecs::new(&mut mem, 0, 4);
        assert_eq!(io.left, u32::MAX);
    }

    /// Every buffer costs a call however empty it is: more than
    /// `IOV_MAX` in one call is `EINVAL`, before any is used.
    #[test]
    fn more_iovecs_than_iov_max_are_refused() {
        let max = crate::wasi::p1::abi::IOV_MAX;
        let mut bytes = vec![0u8; 8 * (max as usize + 1)];
        let mem = Mem(&mut bytes);
        assert!(mem.iovecs(0, max).is_ok());
        let errno = |r: crate::wasi::p1::abi::R<()>| match r {
            Err(Error::Errno(e)) => Some(e),
            _ => None,
        };
        assert_eq!(errno(mem.iovecs(0, max + 1)), Some(Errno::INVAL));
        // An array that is not in memory traps first.
        assert!(mem.iovecs(0, max + 2).is_err());
        assert_eq!(errno(mem.iovecs(0, max + 2)), None);
    }
}
