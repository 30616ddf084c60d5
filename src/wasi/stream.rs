//! `wasi:io` streams over a descriptor's file.
//!
//! A memory stream holds the sandbox's shared tree and the engine
//! descriptor it reads or writes; every call takes the lock, does the work
//! at once and returns, so streams are always ready and need no thread,
//! runtime or channel. Because the stream uses the descriptor's own engine
//! [`Fd`], it behaves as POSIX would: after the descriptor is closed reads
//! and writes fail with `bad-descriptor`, and a file unlinked while open
//! stays readable and writable until then.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

use super::shared::{Held, MAX_READ, SharedVfs, lock};
use crate::{Error, Fd, Vfs};

/// Where writes go: from an offset onward, or always at the end.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WriteMode {
    At(u64),
    Append,
}

/// How much one `write` may carry (`check-write`'s permit).
const WRITE_PERMIT: usize = 1 << 20;

fn failed(e: Error) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::new(e))
}

fn io_failed(e: std::io::Error) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::new(e))
}

/// Runs `op` on the tree; once the embedder took the tree back, the stream
/// is simply closed.
fn on_tree<R>(vfs: &SharedVfs, op: impl FnOnce(&mut Vfs) -> StreamResult<R>) -> StreamResult<R> {
    let mut guard = lock(vfs);
    match guard.as_mut() {
        Some(tree) => op(tree),
        None => Err(StreamError::Closed),
    }
}

pub(crate) struct MemInput {
    vfs: SharedVfs,
    fd: Fd,
    pos: u64,
    _held: Held,
}

impl MemInput {
    pub(crate) fn new(vfs: SharedVfs, fd: Fd, pos: u64, held: Held) -> MemInput {
        MemInput {
            _held: held,
            vfs,
            fd,
            pos,
        }
    }

    /// Bytes available at the position, capped at `max`; an error if the
    /// descriptor is closed or may not read.
    fn available(&self, v: &Vfs, max: usize) -> StreamResult<usize> {
        let info = v.file_info(self.fd).map_err(failed)?;
        if !info.read {
            return Err(failed(crate::ErrorKind::BadDescriptor.into()));
        }
        let size = v.file_metadata(self.fd).map_err(failed)?.len;
        let left = size.saturating_sub(self.pos);
        Ok(usize::try_from(left).unwrap_or(usize::MAX).min(max))
    }
}

#[async_trait::async_trait]
impl InputStream for MemInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let vfs = self.vfs.clone();
        on_tree(&vfs, |v| {
            let n = self.available(v, size.min(MAX_READ))?;
            if n == 0 {
                return if size == 0 {
                    Ok(Bytes::new())
                } else {
                    Err(StreamError::Closed)
                };
            }
            let mut buf = vec![0; n];
            let got = v.read_at(self.fd, &mut buf, self.pos).map_err(failed)?;
            buf.truncate(got);
            self.pos += got as u64;
            Ok(Bytes::from(buf))
        })
    }

    fn skip(&mut self, nelem: usize) -> StreamResult<usize> {
        let vfs = self.vfs.clone();
        on_tree(&vfs, |v| {
            let n = self.available(v, nelem)?;
            if n == 0 && nelem > 0 {
                return Err(StreamError::Closed);
            }
            self.pos += n as u64;
            Ok(n)
        })
    }
}

#[async_trait::async_trait]
impl Pollable for MemInput {
    async fn ready(&mut self) {}
}

pub(crate) struct MemOutput {
    vfs: SharedVfs,
    fd: Fd,
    mode: WriteMode,
    _held: Held,
}

impl MemOutput {
    pub(crate) fn new(vfs: SharedVfs, fd: Fd, mode: WriteMode, held: Held) -> MemOutput {
        MemOutput {
            _held: held,
            vfs,
            fd,
            mode,
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for MemOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_PERMIT {
            return Err(StreamError::trap("write larger than check-write allowed"));
        }
        let vfs = self.vfs.clone();
        on_tree(&vfs, |v| {
            match &mut self.mode {
                WriteMode::At(pos) => {
                    let n = v.write_at(self.fd, &bytes, *pos).map_err(failed)?;
                    *pos += n as u64;
                }
                WriteMode::Append => {
                    v.append(self.fd, &bytes).map_err(failed)?;
                }
            }
            Ok(())
        })
    }

    /// The write happens at once, so there is nothing to wait for.
    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        on_tree(&self.vfs, |_| Ok(()))
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        on_tree(&self.vfs, |_| Ok(WRITE_PERMIT))
    }
}

#[async_trait::async_trait]
impl Pollable for MemOutput {
    async fn ready(&mut self) {}
}

/// Reads a host file on the calling thread (as wasmtime-wasi does with
/// `allow_blocking_current_thread`).
pub(crate) struct HostInput {
    file: Arc<File>,
    pos: u64,
    _held: Held,
}

impl HostInput {
    pub(crate) fn new(file: Arc<File>, pos: u64, held: Held) -> HostInput {
        HostInput {
            _held: held,
            file,
            pos,
        }
    }
}

#[async_trait::async_trait]
impl InputStream for HostInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = vec![0; size.min(MAX_READ)];
        let n = loop {
            match self.file.read_at(&mut buf, self.pos) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.map_err(io_failed)?,
            }
        };
        if n == 0 {
            return Err(StreamError::Closed);
        }
        buf.truncate(n);
        self.pos += n as u64;
        Ok(Bytes::from(buf))
    }
}

#[async_trait::async_trait]
impl Pollable for HostInput {
    async fn ready(&mut self) {}
}

pub(crate) struct HostOutput {
    file: Arc<File>,
    mode: WriteMode,
    _held: Held,
}

impl HostOutput {
    pub(crate) fn new(file: Arc<File>, mode: WriteMode, held: Held) -> HostOutput {
        HostOutput {
            _held: held,
            file,
            mode,
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for HostOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > WRITE_PERMIT {
            return Err(StreamError::trap("write larger than check-write allowed"));
        }
        let pos = match self.mode {
            WriteMode::At(pos) => pos,
            // The guest is one thread and the mount is its own, so the end
            // found here is still the end when the write lands.
            WriteMode::Append => self.file.metadata().map_err(io_failed)?.len(),
        };
        self.file.write_all_at(&bytes, pos).map_err(io_failed)?;
        if let WriteMode::At(p) = &mut self.mode {
            *p += bytes.len() as u64;
        }
        Ok(())
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for HostOutput {
    async fn ready(&mut self) {}
}
