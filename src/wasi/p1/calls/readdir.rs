//! `fd_readdir`: a directory's entries as `dirent`s, resumable by cookie
//! (see [`Cookies`] for what a cookie means).

use super::filetype_of;
use crate::wasi::descriptor::{Kind, Listing};
use crate::wasi::p1::abi::{self, DIRENT_SIZE, Errno, Error, Mem, R, filetype};
use crate::wasi::p1::{Cookies, DirSlot, Resume, Slot, WasiP1Ctx};
use crate::wasi::shared::SharedVfs;

impl WasiP1Ctx {
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

/// The names of a listing going into a [`DirentWriter`], each given the
/// next cookie, which the directory remembers.
struct Dirents<'w, 'a> {
    w: &'w mut DirentWriter<'a>,
    cookies: &'w mut Cookies,
    next: u64,
}

impl Listing for Dirents<'_, '_> {
    type Error = Error;

    /// Enough entries to fill what is left, and one more to cut (or a
    /// bounded page of names to skip).
    fn page(&self) -> usize {
        (self.w.room() / (DIRENT_SIZE + 1)).clamp(1, 1024) + 1
    }

    fn entry(&mut self, name: &crate::Name, kind: Kind, ino: u64) -> R<bool> {
        self.next = self.next.checked_add(1).ok_or(Errno::OVERFLOW)?;
        self.cookies.remember(self.next, name);
        Ok(self
            .w
            .put(self.next, ino, name.as_bytes(), filetype_of(kind)))
    }
}

/// Writes the entries of `dir` from `cookie` on into `w`.
fn fill_dir(vfs: &SharedVfs, dir: &mut DirSlot, cookie: u64, w: &mut DirentWriter<'_>) -> R<()> {
    let dir_ino = dir.desc.ino(vfs)?;
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
    let (after, skip) = match from {
        Resume::After(name) => (name, 0),
        Resume::Skip(n) => (None, n),
    };
    let mut out = Dirents {
        w,
        cookies: &mut dir.cookies,
        next,
    };
    dir.desc.list_directory(vfs, after, skip, &mut out)
}
