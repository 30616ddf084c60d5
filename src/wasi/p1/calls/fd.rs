//! Calls on a descriptor itself and on the table: advice, allocation,
//! sync, `fdstat`, `filestat`, preopens, closing and renumbering, and the
//! socket calls (no socket is ever open).

use super::{filestat, filetype_of, times};
use crate::wasi::bindings::types::DescriptorFlags;
use crate::wasi::descriptor::Descriptor;
use crate::wasi::p1::abi::{self, Errno, Fdstat, Filestat, Mem, R, fdflags, filetype, rights};
use crate::wasi::p1::{DirSlot, FileSlot, Slot, WasiP1Ctx};

impl WasiP1Ctx {
    pub(crate) fn fd_advise(
        &mut self,
        _mem: &mut Mem<'_>,
        fd: i32,
        _offset: i64,
        _len: i64,
        advice: i32,
    ) -> R<()> {
        // Advice changes no outcome, but must be one preview1 knows.
        abi::enum_u8(advice, 5)?;
        Ok(self.file(fd)?.desc.advise(&self.fs.vfs)?)
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
        let ft = filetype_of(desc.kind(vfs)?);
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
                filestat(desc.stat(&self.fs.vfs)?)?
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
