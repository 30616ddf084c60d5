//! The `wasi:filesystem/types` and `wasi:filesystem/preopens` trait
//! impls: look up the descriptor, call its operation, and convert between
//! the WIT types and the descriptor's engine terms (here, and only here).

use wasmtime::component::Resource;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::bindings::{preopens, types};
use super::descriptor::{Descriptor, Kind, Stat};
use super::stream::WriteMode;
use super::{DirectoryStream, FsError, FsResult, WasiVfsCtxView, error};
use crate::Timestamp;
use types::{
    Advice, Datetime, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, ErrorCode,
    Filesize, MetadataHashValue, NewTimestamp, OpenFlags, PathFlags,
};

fn follow(flags: PathFlags) -> bool {
    flags.contains(PathFlags::SYMLINK_FOLLOW)
}

fn descriptor_type(kind: Kind) -> DescriptorType {
    match kind {
        Kind::File => DescriptorType::RegularFile,
        Kind::Dir => DescriptorType::Directory,
        Kind::Symlink => DescriptorType::SymbolicLink,
        Kind::BlockDevice => DescriptorType::BlockDevice,
        Kind::CharDevice => DescriptorType::CharacterDevice,
        Kind::Fifo => DescriptorType::Fifo,
        Kind::Socket => DescriptorType::Socket,
        Kind::Unknown => DescriptorType::Unknown,
    }
}

/// A time the stat has; one with impossible nanoseconds is missing.
fn datetime(t: Option<Timestamp>) -> Option<Datetime> {
    let t = t?;
    Some(Datetime {
        seconds: u64::try_from(t.secs).ok()?,
        nanoseconds: Some(t.nanos).filter(|n| *n < 1_000_000_000)?,
    })
}

fn descriptor_stat(s: Stat) -> DescriptorStat {
    DescriptorStat {
        type_: descriptor_type(s.kind),
        link_count: s.nlink,
        size: s.size,
        data_access_timestamp: datetime(s.atime),
        data_modification_timestamp: datetime(s.mtime),
        status_change_timestamp: datetime(s.ctime),
    }
}

impl preopens::Host for WasiVfsCtxView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let dirs = self.ctx.open_preopens()?;
        let mut out = Vec::with_capacity(dirs.len());
        for (d, guest) in dirs {
            out.push((self.table.push(d)?, guest));
        }
        Ok(out)
    }
}

impl types::Host for WasiVfsCtxView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        err.into_result()
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(error::stream_error_code(self.table.get(&err)?))
    }
}

impl types::HostDescriptor for WasiVfsCtxView<'_> {
    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        let d = self.table.get(&fd)?;
        let held = self.ctx.admit()?;
        let stream = d.read_via_stream(&self.ctx.vfs, offset, held)?;
        Ok(self.table.push(stream)?)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let d = self.table.get(&fd)?;
        let held = self.ctx.admit()?;
        let stream = d.write_via_stream(&self.ctx.vfs, WriteMode::At(offset), held)?;
        Ok(self.table.push(stream)?)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let d = self.table.get(&fd)?;
        let held = self.ctx.admit()?;
        let stream = d.write_via_stream(&self.ctx.vfs, WriteMode::Append, held)?;
        Ok(self.table.push(stream)?)
    }

    fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        _offset: Filesize,
        _len: Filesize,
        _advice: Advice,
    ) -> FsResult<()> {
        // Advice changes no outcome: only the descriptor is checked.
        Ok(self.table.get(&fd)?.advise(&self.ctx.vfs)?)
    }

    fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        Ok(self.table.get(&fd)?.sync(&self.ctx.vfs, true)?)
    }

    fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        Ok(self.table.get(&fd)?.get_flags(&self.ctx.vfs)?)
    }

    fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorType> {
        Ok(descriptor_type(self.table.get(&fd)?.kind(&self.ctx.vfs)?))
    }

    fn set_size(&mut self, fd: Resource<Descriptor>, size: Filesize) -> FsResult<()> {
        Ok(self.table.get(&fd)?.set_size(&self.ctx.vfs, size)?)
    }

    fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> FsResult<()> {
        Ok(self
            .table
            .get(&fd)?
            .set_times(&self.ctx.vfs, atime, mtime)?)
    }

    fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: Filesize,
        offset: Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        Ok(self.table.get(&fd)?.read(&self.ctx.vfs, len, offset)?)
    }

    fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: Filesize,
    ) -> FsResult<Filesize> {
        Ok(self.table.get(&fd)?.write(&self.ctx.vfs, &buf, offset)?)
    }

    fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DirectoryStream>> {
        let d = self.table.get(&fd)?;
        let held = self.ctx.admit()?;
        let stream = d.read_directory(&self.ctx.vfs, held)?;
        Ok(self.table.push(stream)?)
    }

    fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        Ok(self.table.get(&fd)?.sync(&self.ctx.vfs, false)?)
    }

    fn create_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        Ok(self
            .table
            .get(&fd)?
            .create_directory_at(&self.ctx.vfs, &path)?)
    }

    fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        Ok(descriptor_stat(self.table.get(&fd)?.stat(&self.ctx.vfs)?))
    }

    fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
    ) -> FsResult<DescriptorStat> {
        let d = self.table.get(&fd)?;
        Ok(descriptor_stat(d.stat_at(
            &self.ctx.vfs,
            follow(flags),
            &path,
        )?))
    }

    fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
        atime: NewTimestamp,
        mtime: NewTimestamp,
    ) -> FsResult<()> {
        let d = self.table.get(&fd)?;
        Ok(d.set_times_at(&self.ctx.vfs, follow(flags), &path, atime, mtime)?)
    }

    fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_flags: PathFlags,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (old, new) = (self.table.get(&fd)?, self.table.get(&new_fd)?);
        Ok(old.link_at(&self.ctx.vfs, follow(old_flags), &old_path, new, &new_path)?)
    }

    fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let d = self.table.get(&fd)?;
        // Checked before opening, for either kind; only a mount's
        // descriptor keeps the count (the engine counts its own).
        let held = self.ctx.admit()?;
        let opened = d
            .open_at(&self.ctx.vfs, follow(path_flags), &path, oflags, flags)?
            .adopt(held, &mut self.ctx.opened);
        Ok(self.table.push(opened)?)
    }

    fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        Ok(self.table.get(&fd)?.readlink_at(&self.ctx.vfs, &path)?)
    }

    fn remove_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        Ok(self
            .table
            .get(&fd)?
            .remove_directory_at(&self.ctx.vfs, &path)?)
    }

    fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (old, new) = (self.table.get(&fd)?, self.table.get(&new_fd)?);
        Ok(old.rename_at(&self.ctx.vfs, &old_path, new, &new_path)?)
    }

    fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_path: String,
    ) -> FsResult<()> {
        Ok(self
            .table
            .get(&fd)?
            .symlink_at(&self.ctx.vfs, &old_path, &new_path)?)
    }

    fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        Ok(self.table.get(&fd)?.unlink_file_at(&self.ctx.vfs, &path)?)
    }

    fn is_same_object(
        &mut self,
        fd: Resource<Descriptor>,
        other: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        let (a, b) = (self.table.get(&fd)?, self.table.get(&other)?);
        Ok(a.is_same_object(&self.ctx.vfs, b))
    }

    fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<MetadataHashValue> {
        Ok(self.table.get(&fd)?.metadata_hash(&self.ctx.vfs)?)
    }

    fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        flags: PathFlags,
        path: String,
    ) -> FsResult<MetadataHashValue> {
        let d = self.table.get(&fd)?;
        Ok(d.metadata_hash_at(&self.ctx.vfs, follow(flags), &path)?)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        let d = self.table.delete(fd)?;
        self.ctx.release(&d);
        Ok(())
    }
}

impl types::HostDirectoryEntryStream for WasiVfsCtxView<'_> {
    fn read_directory_entry(
        &mut self,
        stream: Resource<DirectoryStream>,
    ) -> FsResult<Option<DirectoryEntry>> {
        let entry = self.table.get_mut(&stream)?.next(&self.ctx.vfs)?;
        Ok(entry.map(|e| DirectoryEntry {
            type_: descriptor_type(e.kind),
            name: e.name,
        }))
    }

    fn drop(&mut self, stream: Resource<DirectoryStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}
