//! Process state: arguments, environment, clocks and randomness.

use std::time::SystemTime;

use crate::wasi::p1::WasiP1Ctx;
use crate::wasi::p1::abi::{self, Errno, Mem, R};

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
    pub(super) fn clock_now(&self, id: i32) -> R<u64> {
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
}
