//! A driver for the `wasi_descriptor` fuzz target (and its in-tree test):
//! decodes raw bytes into `wasi:filesystem` descriptor calls and makes them
//! on the host implementation directly, as a guest would, with no guest.
//!
//! Every call must end in a value or an `error-code`, never a trap (the
//! driver only passes live handles), and the tree's invariants must hold
//! after every call. Built only with the `fuzzing` feature (which
//! `fuzz/Cargo.toml` enables) and for this crate's tests.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::bindings::preopens::Host as _;
use super::bindings::types::{
    self, Advice, Datetime, DescriptorFlags as DF, HostDescriptor as _,
    HostDirectoryEntryStream as _, NewTimestamp, OpenFlags as OF, PathFlags as PF,
};
use super::{Descriptor, FsResult, WasiVfsCtx, WasiVfsCtxView};
use crate::Vfs;

/// Most calls one input makes.
const MAX_CALLS: usize = 96;
/// Most descriptors the driver keeps open.
const MAX_OPEN: usize = 32;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Mostly small, sometimes huge: offsets and sizes.
    fn size(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => u64::MAX,
            1 => 1 << 40,
            2 => u64::from(self.u32()),
            _ => u64::from(self.u8()) * 97,
        }
    }

    fn path(&mut self) -> String {
        const PARTS: [&str; 9] = ["a", "b", "c", "..", ".", "", "d/e", "f", "\u{e9}"];
        let n = 1 + self.u8() % 3;
        let mut parts: Vec<String> = (0..n)
            .map(|_| match self.u8() % 16 {
                15 => "n".repeat(256),
                k => PARTS[k as usize % PARTS.len()].to_string(),
            })
            .collect();
        if self.u8().is_multiple_of(8) {
            parts.insert(0, String::new()); // absolute: not-permitted
        }
        parts.join("/")
    }

    fn data(&mut self) -> Vec<u8> {
        let n = self.u8() as usize;
        let fill = self.u8();
        if self.bool() {
            vec![fill; n * 300]
        } else {
            vec![fill; n]
        }
    }

    fn time(&mut self) -> NewTimestamp {
        match self.u8() % 5 {
            0 => NewTimestamp::NoChange,
            1 => NewTimestamp::Now,
            2 => NewTimestamp::Timestamp(Datetime {
                seconds: u64::MAX,
                nanoseconds: u32::MAX,
            }),
            3 => NewTimestamp::Timestamp(Datetime {
                seconds: u64::from(self.u32()),
                nanoseconds: 1_000_000_000,
            }),
            _ => NewTimestamp::Timestamp(Datetime {
                seconds: u64::from(self.u32()),
                nanoseconds: self.u32() % 1_000_000_000,
            }),
        }
    }
}

fn open_flags(bits: u8) -> OF {
    let mut o = OF::empty();
    for (bit, flag) in [OF::CREATE, OF::DIRECTORY, OF::EXCLUSIVE, OF::TRUNCATE]
        .into_iter()
        .enumerate()
    {
        if bits & (1 << bit) != 0 {
            o |= flag;
        }
    }
    o
}

fn descriptor_flags(bits: u8) -> DF {
    let all = [
        DF::READ,
        DF::WRITE,
        DF::MUTATE_DIRECTORY,
        DF::FILE_INTEGRITY_SYNC,
        DF::DATA_INTEGRITY_SYNC,
        DF::REQUESTED_WRITE_SYNC,
    ];
    let mut f = DF::empty();
    for (bit, flag) in all.into_iter().enumerate() {
        if bits & (1 << bit) != 0 {
            f |= flag;
        }
    }
    f
}

struct Driver {
    ctx: WasiVfsCtx,
    table: ResourceTable,
    fds: Vec<Resource<Descriptor>>,
}

fn borrow<R: 'static>(r: &Resource<R>) -> Resource<R> {
    Resource::new_borrow(r.rep())
}

impl Driver {
    fn v(&mut self) -> WasiVfsCtxView<'_> {
        WasiVfsCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }

    fn pick(&self, b: &mut Bytes<'_>) -> Resource<Descriptor> {
        let i = b.u8() as usize % self.fds.len().max(1);
        borrow(&self.fds[i.min(self.fds.len() - 1)])
    }
}

/// Fails on a trap: every error the driver can provoke has an error code.
fn code<T>(what: &str, r: FsResult<T>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code().is_some() => Ok(None),
        Err(e) => Err(format!("{what}: trapped instead of an error code: {e:?}")),
    }
}

fn host<T>(what: &str, r: wasmtime::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e:?}"))
}

/// Runs the calls `data` decodes to against a small tree. `Err` describes
/// the first broken promise.
pub fn run(data: &[u8]) -> Result<(), String> {
    let mut vfs = Vfs::new();
    let setup = (|| {
        vfs.create_dir_all("/d/e")?;
        vfs.write_file("/f", b"0123456789")?;
        vfs.write_file("/d/e/g", &[7; 70_000])?;
        vfs.symlink("/etc/passwd", "/abs")?;
        vfs.symlink("d/e", "/rel")?;
        vfs.set_permissions("/d/e", 0o555)
    })();
    setup.map_err(|e| format!("setup: {e}"))?;
    let mut ctx = WasiVfsCtx::new(vfs);
    ctx.preopen("/", "/").map_err(|e| e.to_string())?;
    ctx.preopen_read_only("/d", "/ro")
        .map_err(|e| e.to_string())?;
    let mut d = Driver {
        ctx,
        table: ResourceTable::new(),
        fds: Vec::new(),
    };
    let dirs = host("get-directories", d.v().get_directories())?;
    d.fds = dirs.into_iter().map(|(r, _)| r).collect();
    let preopens = d.fds.len();
    let mut b = Bytes(data);
    for _ in 0..MAX_CALLS {
        if b.0.is_empty() {
            break;
        }
        step(&mut d, &mut b, preopens)?;
        let ok = d.ctx.with_vfs(|v| v.check_invariants());
        match ok {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("invariant: {e}")),
            None => return Err("the tree was taken".into()),
        }
    }
    // Dropping every descriptor leaves nothing open in the engine.
    for fd in std::mem::take(&mut d.fds) {
        host("drop", types::HostDescriptor::drop(&mut d.v(), fd))?;
    }
    let vfs = d.ctx.into_vfs();
    vfs.check_invariants().map_err(|e| e.to_string())?;
    if vfs.usage().open_files != 0 {
        return Err(format!(
            "{} engine descriptors left open",
            vfs.usage().open_files
        ));
    }
    Ok(())
}

fn step(d: &mut Driver, b: &mut Bytes<'_>, preopens: usize) -> Result<(), String> {
    let op = b.u8() % 24;
    let fd = d.pick(b);
    match op {
        0 => {
            let follow = if b.bool() {
                PF::SYMLINK_FOLLOW
            } else {
                PF::empty()
            };
            let path = b.path();
            let o = open_flags(b.u8());
            let f = descriptor_flags(b.u8());
            if let Some(new) = code("open-at", d.v().open_at(fd, follow, path, o, f))? {
                if d.fds.len() < MAX_OPEN {
                    d.fds.push(new);
                } else {
                    host("drop", types::HostDescriptor::drop(&mut d.v(), new))?;
                }
            }
        }
        1 => {
            let (len, off) = (b.size(), b.size());
            if let Some((bytes, _)) = code("read", d.v().read(fd, len, off))?
                && bytes.len() as u64 > len
            {
                return Err("read returned more than asked for".into());
            }
        }
        2 => {
            let (data, off) = (b.data(), b.size());
            code("write", d.v().write(fd, data, off))?;
        }
        3 => {
            let size = b.size();
            code("set-size", d.v().set_size(fd, size))?;
        }
        4 => {
            code("stat", d.v().stat(fd))?;
        }
        5 => {
            let follow = if b.bool() {
                PF::SYMLINK_FOLLOW
            } else {
                PF::empty()
            };
            let path = b.path();
            code("stat-at", d.v().stat_at(fd, follow, path))?;
        }
        6 => {
            let path = b.path();
            code("create-directory-at", d.v().create_directory_at(fd, path))?;
        }
        7 => {
            let path = b.path();
            code("remove-directory-at", d.v().remove_directory_at(fd, path))?;
        }
        8 => {
            let path = b.path();
            code("unlink-file-at", d.v().unlink_file_at(fd, path))?;
        }
        9 => {
            let (p1, fd2, p2) = (b.path(), d.pick(b), b.path());
            code("rename-at", d.v().rename_at(fd, p1, fd2, p2))?;
        }
        10 => {
            let follow = if b.bool() {
                PF::SYMLINK_FOLLOW
            } else {
                PF::empty()
            };
            let (p1, fd2, p2) = (b.path(), d.pick(b), b.path());
            code("link-at", d.v().link_at(fd, follow, p1, fd2, p2))?;
        }
        11 => {
            let (target, path) = (b.path(), b.path());
            code("symlink-at", d.v().symlink_at(fd, target, path))?;
        }
        12 => {
            let path = b.path();
            code("readlink-at", d.v().readlink_at(fd, path))?;
        }
        13 => {
            if let Some(s) = code("read-directory", d.v().read_directory(fd))? {
                let n = b.u8();
                for _ in 0..n {
                    match code(
                        "read-directory-entry",
                        d.v().read_directory_entry(borrow(&s)),
                    )? {
                        Some(Some(e)) if e.name.is_empty() || e.name.contains('/') => {
                            return Err(format!("bad directory entry name {:?}", e.name));
                        }
                        Some(Some(_)) => {}
                        _ => break,
                    }
                    // Change the directory while listing it.
                    if b.u8().is_multiple_of(4) {
                        let fd = d.pick(b);
                        let path = b.path();
                        code("unlink-file-at", d.v().unlink_file_at(fd, path))?;
                    }
                }
                host(
                    "drop stream",
                    types::HostDirectoryEntryStream::drop(&mut d.v(), s),
                )?;
            }
        }
        14 => {
            let follow = if b.bool() {
                PF::SYMLINK_FOLLOW
            } else {
                PF::empty()
            };
            let (path, a, m) = (b.path(), b.time(), b.time());
            code("set-times-at", d.v().set_times_at(fd, follow, path, a, m))?;
        }
        15 => {
            let (a, m) = (b.time(), b.time());
            code("set-times", d.v().set_times(fd, a, m))?;
        }
        16 => {
            code("get-flags", d.v().get_flags(borrow(&fd)))?;
            code("get-type", d.v().get_type(fd))?;
        }
        17 => {
            let advice = match b.u8() % 6 {
                0 => Advice::Normal,
                1 => Advice::Sequential,
                2 => Advice::Random,
                3 => Advice::WillNeed,
                4 => Advice::DontNeed,
                _ => Advice::NoReuse,
            };
            let (off, len) = (b.size(), b.size());
            code("advise", d.v().advise(borrow(&fd), off, len, advice))?;
            code("sync-data", d.v().sync_data(borrow(&fd)))?;
            code("sync", d.v().sync(fd))?;
        }
        18 => {
            let other = d.pick(b);
            host("is-same-object", d.v().is_same_object(borrow(&fd), other))?;
            code("metadata-hash", d.v().metadata_hash(borrow(&fd)))?;
            let follow = if b.bool() {
                PF::SYMLINK_FOLLOW
            } else {
                PF::empty()
            };
            let path = b.path();
            code("metadata-hash-at", d.v().metadata_hash_at(fd, follow, path))?;
        }
        19 => {
            let off = b.size();
            if let Some(s) = code("read-via-stream", d.v().read_via_stream(fd, off))? {
                let want = b.size().min(1 << 20) as usize;
                let stream: &mut DynInputStream = d.table.get_mut(&s).map_err(|e| e.to_string())?;
                if let Ok(bytes) = stream.read(want)
                    && bytes.len() > want
                {
                    return Err("stream read more than asked for".into());
                }
                d.table.delete(s).map_err(|e| e.to_string())?;
            }
        }
        20 | 21 => {
            let s = if op == 20 {
                let off = b.size();
                code("write-via-stream", d.v().write_via_stream(fd, off))?
            } else {
                code("append-via-stream", d.v().append_via_stream(fd))?
            };
            if let Some(s) = s {
                let data = b.data();
                let stream: &mut DynOutputStream =
                    d.table.get_mut(&s).map_err(|e| e.to_string())?;
                if let Ok(room) = stream.check_write() {
                    let n = data.len().min(room);
                    let _ = stream.write(bytes::Bytes::copy_from_slice(&data[..n]));
                    let _ = stream.flush();
                }
                d.table.delete(s).map_err(|e| e.to_string())?;
            }
        }
        _ => {
            // Drop a descriptor the guest opened (the preopens stay).
            if d.fds.len() > preopens {
                let i = preopens + b.u8() as usize % (d.fds.len() - preopens);
                let fd = d.fds.remove(i);
                host("drop", types::HostDescriptor::drop(&mut d.v(), fd))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every crash the fuzzer found, replayed.
    #[test]
    fn fuzz_regressions() {
        let crashes: [&[u8]; 1] = [include_bytes!(
            "../../fuzz/regressions/wasi_descriptor/short-chunk-read.bin"
        )];
        for data in crashes {
            super::run(data).unwrap();
        }
    }

    /// A few thousand pseudo-random inputs: what CI runs of the fuzz target.
    #[test]
    fn random_descriptor_calls_keep_their_promises() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for case in 0..2_000 {
            let len = 16 + (case % 400);
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            if let Err(e) = super::run(&data) {
                panic!("case {case}: {e}\ninput: {data:?}");
            }
        }
    }
}
