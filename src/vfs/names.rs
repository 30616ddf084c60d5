//! Operations on names: making and removing directories, removing files,
//! renaming, symlinks and hard links, each from the root or beneath a
//! directory descriptor (`*_at`), with POSIX's rules and errno order.

use imbl::OrdMap;

use crate::error::{Error, ErrorKind, Result, err};
use crate::path;
use crate::tree::{Base, FileType, MAX_LINKS, Node, ROOT, Target, entry_charge};

use super::read::{read_link, stat};
use super::{Fd, Symlinks, Vfs, ctx};

impl Vfs {
    /// Creates a directory (mode `0o755`).
    pub fn create_dir(&mut self, path: &str) -> Result<()> {
        self.mkdir(Base::Root, path, 0o755).map_err(ctx(path))
    }

    /// Creates a directory beneath `dir`.
    pub fn create_dir_at(&mut self, dir: Fd, path: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.mkdir(base, path, 0o755).map_err(ctx(path))
    }

    fn mkdir(&mut self, base: Base, path: &str, mode: u32) -> Result<()> {
        let r = self.resolve(base, path, false)?;
        let Some(name) = r.name else {
            return err(ErrorKind::AlreadyExists);
        };
        if r.ino.is_some() {
            return err(ErrorKind::AlreadyExists);
        }
        self.dir_writable(r.dir, r.dir_mode)?;
        self.tree.create(
            r.dir,
            name.to_name(),
            Node::Dir(OrdMap::new()),
            mode,
            &*self.clock,
        )?;
        Ok(())
    }

    /// Creates a directory and any missing parents; existing directories
    /// (or symlinks to them) are fine.
    pub fn create_dir_all(&mut self, path: &str) -> Result<()> {
        path::check_path(path, self.tree.limits().max_path_len as usize).map_err(ctx(path))?;
        let mut prefix = String::with_capacity(path.len());
        if path.starts_with('/') {
            prefix.push('/');
        }
        for comp in path::components(path) {
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.mkdir(Base::Root, &prefix, 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let m = stat(&self.tree, Base::Root, &prefix, true).map_err(ctx(&prefix))?;
                    if !m.is_dir() {
                        return Err(Error::with(ErrorKind::NotADirectory, prefix));
                    }
                }
                Err(e) => return Err(e.or_context(|| prefix.clone())),
            }
        }
        Ok(())
    }

    /// Removes an empty directory.
    pub fn remove_dir(&mut self, path: &str) -> Result<()> {
        self.rmdir(Base::Root, path).map_err(ctx(path))
    }

    /// Removes an empty directory beneath `dir`.
    pub fn remove_dir_at(&mut self, dir: Fd, path: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.rmdir(base, path).map_err(ctx(path))
    }

    fn rmdir(&mut self, base: Base, path: &str) -> Result<()> {
        let r = self.resolve(base, path, false)?;
        let Some(name) = r.name else {
            return err(if r.ino == Some(ROOT) {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let Some(ino) = r.ino else {
            return err(ErrorKind::NotFound);
        };
        let inode = self.tree.get(ino)?;
        match inode.entries() {
            None => return err(ErrorKind::NotADirectory),
            Some(e) if !e.is_empty() => return err(ErrorKind::DirectoryNotEmpty),
            Some(_) => {}
        }
        self.dir_writable(r.dir, r.dir_mode)?;
        let now = self.now();
        let (ino, kind) = self.tree.unlink(r.dir, name.as_str(), now)?;
        self.release(ino, kind);
        Ok(())
    }

    /// Removes a file or symlink (never a directory: `EISDIR`).
    pub fn remove_file(&mut self, path: &str) -> Result<()> {
        self.unlink_file(Base::Root, path).map_err(ctx(path))
    }

    /// Removes a file or symlink beneath `dir`.
    pub fn remove_file_at(&mut self, dir: Fd, path: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.unlink_file(base, path).map_err(ctx(path))
    }

    fn unlink_file(&mut self, base: Base, path: &str) -> Result<()> {
        let r = self.resolve(base, path, false)?;
        let Some(name) = r.name else {
            return err(ErrorKind::IsADirectory);
        };
        match r.kind {
            None => return err(ErrorKind::NotFound),
            Some(FileType::Dir) => return err(ErrorKind::IsADirectory),
            Some(_) => {}
        }
        self.dir_writable(r.dir, r.dir_mode)?;
        let now = self.now();
        let open = &self.open_count;
        let (ino, released) = self
            .tree
            .unlink_release(r.dir, name.as_str(), now, |i| open.contains_key(&i))?;
        self.settle(ino, released);
        Ok(())
    }

    /// Renames, with every POSIX rule: a file replaces a file, a directory
    /// replaces an empty directory, renaming onto the same inode does
    /// nothing, a directory cannot move into itself (`EINVAL`).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.rename_impl(Base::Root, from, Base::Root, to)
            .map_err(|e| e.or_context(|| format!("{from} -> {to}")))
    }

    /// Renames between two directories' subtrees (beneath mode).
    pub fn rename_at(&mut self, from_dir: Fd, from: &str, to_dir: Fd, to: &str) -> Result<()> {
        let (b1, b2) = (self.base_of(from_dir)?, self.base_of(to_dir)?);
        self.rename_impl(b1, from, b2, to)
            .map_err(|e| e.or_context(|| format!("{from} -> {to}")))
    }

    fn rename_impl(&mut self, b1: Base, from: &str, b2: Base, to: &str) -> Result<()> {
        let src = self.resolve(b1, from, false)?;
        let dst = self.resolve(b2, to, false)?;
        let (Some(sino), Some(skind)) = (src.ino, src.kind) else {
            return err(ErrorKind::NotFound);
        };
        let Some(sname) = src.name else {
            return err(if sino == ROOT {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        let Some(dname) = dst.name else {
            return err(if dst.ino == Some(ROOT) {
                ErrorKind::Busy
            } else {
                ErrorKind::InvalidInput
            });
        };
        if skind != FileType::Dir && (src.must_dir || dst.must_dir) {
            return err(ErrorKind::NotADirectory);
        }
        // The order of checks follows Linux, so errno values match it.
        if skind == FileType::Dir && self.tree.is_within(dst.dir, sino) {
            return err(ErrorKind::InvalidInput);
        }
        if let (Some(dino), Some(FileType::Dir)) = (dst.ino, dst.kind)
            && dino != sino
            && self.tree.is_within(src.dir, dino)
        {
            return err(ErrorKind::DirectoryNotEmpty);
        }
        if dst.ino == Some(sino) {
            return Ok(());
        }
        self.dir_writable(src.dir, src.dir_mode)?;
        self.dir_writable(dst.dir, dst.dir_mode)?;
        if let (Some(dino), Some(dkind)) = (dst.ino, dst.kind) {
            if skind == FileType::Dir {
                if dkind != FileType::Dir {
                    return err(ErrorKind::NotADirectory);
                }
                if !self.tree.entries(dino)?.is_empty() {
                    return err(ErrorKind::DirectoryNotEmpty);
                }
            } else if dkind == FileType::Dir {
                return err(ErrorKind::IsADirectory);
            }
        }
        path::check_name(dname.as_str(), self.tree.name_max())?;
        if dst.ino.is_none() {
            // The entry moves; only a longer name costs more.
            let longer = dname.as_str().len().saturating_sub(sname.as_str().len());
            self.tree.check_bytes(longer as u64)?;
        }
        let now = self.now();
        let dname = dname.to_name();
        if dst.ino.is_some() {
            let (old, kind) = self.tree.unlink(dst.dir, &dname, now)?;
            self.release(old, kind);
        }
        let (ino, kind) = self.tree.unlink(src.dir, sname.as_str(), now)?;
        self.tree.link(dst.dir, dname, ino, kind, now)?;
        Ok(())
    }

    /// Creates a symlink at `link` pointing to `target` (stored as given).
    pub fn symlink(&mut self, target: &str, link: &str) -> Result<()> {
        self.symlink_impl(target, Base::Root, link)
            .map_err(ctx(link))
    }

    /// Creates a symlink beneath `dir`.
    pub fn symlink_at(&mut self, target: &str, dir: Fd, link: &str) -> Result<()> {
        let base = self.base_of(dir)?;
        self.symlink_impl(target, base, link).map_err(ctx(link))
    }

    fn symlink_impl(&mut self, target: &str, base: Base, link: &str) -> Result<()> {
        path::check_path(target, self.tree.limits().max_path_len as usize)?;
        let r = self.resolve(base, link, false)?;
        let Some(name) = r.name else {
            return err(ErrorKind::AlreadyExists);
        };
        if r.ino.is_some() {
            return err(ErrorKind::AlreadyExists);
        }
        if r.must_dir {
            return err(ErrorKind::NotFound);
        }
        self.dir_writable(r.dir, r.dir_mode)?;
        self.tree.create(
            r.dir,
            name.to_name(),
            Node::Symlink(Target::from(target)),
            0o777,
            &*self.clock,
        )?;
        Ok(())
    }

    /// A symlink's target.
    pub fn read_link(&self, path: &str) -> Result<String> {
        read_link(&self.tree, Base::Root, path).map_err(ctx(path))
    }

    /// A symlink's target, beneath `dir`.
    pub fn read_link_at(&self, dir: Fd, path: &str) -> Result<String> {
        let base = self.base_of(dir)?;
        read_link(&self.tree, base, path).map_err(ctx(path))
    }

    /// Makes `dst` another name of the file at `src` (a final symlink in
    /// `src` is not followed). Directories cannot be linked (`EPERM`).
    pub fn hard_link(&mut self, src: &str, dst: &str) -> Result<()> {
        self.link_impl(Base::Root, src, false, Base::Root, dst)
            .map_err(|e| e.or_context(|| format!("{src} -> {dst}")))
    }

    /// Hard link between two directories' subtrees (beneath mode);
    /// `symlinks` says whether a final symlink in `src` is linked itself or
    /// what it points to.
    pub fn hard_link_at(
        &mut self,
        src_dir: Fd,
        src: &str,
        symlinks: Symlinks,
        dst_dir: Fd,
        dst: &str,
    ) -> Result<()> {
        let (b1, b2) = (self.base_of(src_dir)?, self.base_of(dst_dir)?);
        self.link_impl(b1, src, symlinks.follow(), b2, dst)
            .map_err(|e| e.or_context(|| format!("{src} -> {dst}")))
    }

    fn link_impl(&mut self, b1: Base, src: &str, follow: bool, b2: Base, dst: &str) -> Result<()> {
        let s = self.resolve(b1, src, follow)?;
        let (Some(sino), Some(skind)) = (s.ino, s.kind) else {
            return err(ErrorKind::NotFound);
        };
        // Linux looks at the new name before the source's kind.
        let d = self.resolve(b2, dst, false)?;
        let Some(dname) = d.name else {
            return err(ErrorKind::AlreadyExists);
        };
        if d.ino.is_some() {
            return err(ErrorKind::AlreadyExists);
        }
        if d.must_dir {
            return err(ErrorKind::NotFound);
        }
        if skind == FileType::Dir {
            return err(ErrorKind::NotPermitted);
        }
        if self.tree.get(sino)?.nlink >= MAX_LINKS {
            return err(ErrorKind::TooManyLinks);
        }
        self.dir_writable(d.dir, d.dir_mode)?;
        path::check_name(dname.as_str(), self.tree.name_max())?;
        self.tree.check_bytes(entry_charge(dname.as_str()))?;
        let now = self.now();
        self.tree.link(d.dir, dname.to_name(), sino, skind, now)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;
    use crate::{FileType, Vfs};

    /// Resolution may start from the directory the last one ended in
    /// (`Tree::resolve`'s hint); every change of the namespace must still
    /// be seen, as if each path were walked from the root.
    #[test]
    fn the_directory_hint_never_answers_for_a_changed_namespace() {
        let mut v = Vfs::new();
        v.create_dir("/a").unwrap();
        v.create_dir("/a/b").unwrap();
        v.write_file("/a/b/f", b"one").unwrap();
        v.write_file("/a/f", b"up").unwrap();
        let kind = |v: &Vfs, p: &str| v.metadata(p).map(|m| m.kind).map_err(|e| e.kind());
        for _ in 0..2 {
            assert_eq!(v.read_file("/a/b/f").unwrap(), b"one");
        }
        // The same directory renamed: the old path is gone, the new one
        // reaches it.
        v.rename("/a/b", "/a/c").unwrap();
        assert_eq!(kind(&v, "/a/b/f"), Err(ErrorKind::NotFound));
        assert_eq!(v.read_file("/a/c/f").unwrap(), b"one");
        // A new directory at the old name is a different one.
        v.create_dir("/a/b").unwrap();
        assert_eq!(kind(&v, "/a/b/f"), Err(ErrorKind::NotFound));
        assert_eq!(v.read_file("/a/c/f").unwrap(), b"one");
        // Removed while it is the hint.
        v.remove_file("/a/c/f").unwrap();
        v.remove_dir("/a/c").unwrap();
        assert_eq!(kind(&v, "/a/c/f"), Err(ErrorKind::NotFound));
        assert_eq!(kind(&v, "/a/c"), Err(ErrorKind::NotFound));
        // A symlink as the last name, with `..` in its target, after the
        // hint was set to its directory: `..` leaves the real parent.
        v.write_file("/a/b/g", b"g").unwrap();
        v.symlink("../f", "/a/b/l").unwrap();
        assert_eq!(v.read_file("/a/b/g").unwrap(), b"g");
        assert_eq!(v.read_file("/a/b/l").unwrap(), b"up");
        // A symlink to a directory on the way: not the hint's path.
        v.symlink("b", "/a/s").unwrap();
        assert_eq!(v.read_file("/a/s/g").unwrap(), b"g");
        assert_eq!(v.read_file("/a/b/g").unwrap(), b"g");
        assert_eq!(v.read_file("/a/s/l").unwrap(), b"up");
        // `.` and `..` in the path, and trailing slashes.
        assert_eq!(v.read_file("/a/b/../b/g").unwrap(), b"g");
        assert_eq!(v.read_file("/a/./b/g").unwrap(), b"g");
        assert_eq!(kind(&v, "/a/b/g/"), Err(ErrorKind::NotADirectory));
        v.create_dir("/a/b/d").unwrap();
        assert_eq!(kind(&v, "/a/b/d/"), Ok(FileType::Dir));
        assert_eq!(kind(&v, "/a/b/d/."), Ok(FileType::Dir));
        v.remove_dir("/a/b/d/").unwrap();
        assert_eq!(kind(&v, "/a/b/d"), Err(ErrorKind::NotFound));
        // A file in place of a directory of the hint's path.
        v.remove_file("/a/b/g").unwrap();
        v.remove_file("/a/b/l").unwrap();
        assert_eq!(v.read_file("/a/b/../f").unwrap(), b"up");
        v.rename("/a/b", "/a/old").unwrap();
        v.write_file("/a/b", b"file").unwrap();
        assert_eq!(kind(&v, "/a/b/g"), Err(ErrorKind::NotADirectory));
        // A fork and its origin each keep their own hint, and a hint from
        // one tree means nothing in the other.
        v.create_dir("/x").unwrap();
        v.write_file("/x/y", b"y").unwrap();
        let snap = v.snapshot();
        let mut w = snap.fork();
        w.remove_file("/x/y").unwrap();
        w.rename("/x", "/z").unwrap();
        assert_eq!(kind(&w, "/x/y"), Err(ErrorKind::NotFound));
        assert_eq!(v.read_file("/x/y").unwrap(), b"y");
        assert_eq!(snap.read_file("/x/y").unwrap(), b"y");
        v.check_invariants().unwrap();
        w.check_invariants().unwrap();
    }
}
