//! `poll_oneoff`: clocks and descriptors.

use std::time::Duration;

use crate::wasi::limits;
use crate::wasi::p1::abi::{self, EVENT_SIZE, Errno, Error, Mem, R, SUBSCRIPTION_SIZE};
use crate::wasi::p1::{Slot, WasiP1Ctx};

impl WasiP1Ctx {
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
        // Each subscription is read twice in one host call, which no
        // deadline interrupts: at most as many as the descriptor table
        // holds (`EINVAL` beyond, as `poll` says past its limit).
        if n as usize > crate::wasi::p1::MAX_DESCRIPTORS {
            return Err(Errno::INVAL.into());
        }
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
                match limits::remaining(self.deadline).map_err(Error::Trap)? {
                    Some(left) if left < want => {
                        std::thread::sleep(left);
                        return Err(Error::Trap(limits::exceeded(self.deadline)));
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
                let size = f.desc.stat(&self.fs.vfs)?.size;
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
}

enum Sub {
    Clock { userdata: u64, wait: u64 },
    Fd { userdata: u64, write: bool, fd: i32 },
}
