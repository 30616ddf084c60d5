//! Calls on paths beneath a directory descriptor: opening, stat and
//! times, links, renames, symlinks, and removal.

use super::{filestat, follow, times};
use crate::wasi::bindings::types::{DescriptorFlags, OpenFlags};
use crate::wasi::descriptor::Kind;
use crate::wasi::p1::abi::{self, Errno, Mem, R, fdflags, oflags, rights};
use crate::wasi::p1::{Cookies, DirSlot, FileSlot, Slot, WasiP1Ctx};

impl WasiP1Ctx {
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
        let follow = follow(flags)?;
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        let stat = filestat(d.desc.stat_at(&self.fs.vfs, follow, path)?)?;
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
        let follow = follow(flags)?;
        let (a, m) = times(atim, mtim, fst)?;
        let d = self.dir(fd)?;
        let path = mem.str(path as u32, len as u32)?;
        Ok(d.desc.set_times_at(&self.fs.vfs, follow, path, a, m)?)
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
        let follow = follow(flags)?;
        let (a, b) = (self.dir(old_fd)?, self.dir(new_fd)?);
        let old = mem.str(old_path as u32, old_len as u32)?;
        let new = mem.str(new_path as u32, new_len as u32)?;
        Ok(a.desc.link_at(&self.fs.vfs, follow, old, &b.desc, new)?)
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
        let follow = follow(dirflags)?;
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
        let held = self.fs.admit()?;
        // A full table fails before the open, which may create or
        // truncate the file.
        if !self.has_room() {
            return Err(Errno::MFILE.into());
        }
        let desc = dir
            .open_at(vfs, follow, path, open, flags)?
            .adopt(held, &mut self.fs.opened);
        let slot = match desc.kind(vfs).map(|k| k == Kind::Dir) {
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
                return Err(e.into());
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
}
