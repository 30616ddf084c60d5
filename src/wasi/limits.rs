//! Run limits for guests on either ABI: a wall-clock deadline (wasmtime
//! epoch interruption, plus the host calls that block), an optional fuel
//! budget, and a cap on each linear memory and table.
//!
//! The deadline is enforced in wasm code by epoch checks: a process-wide
//! ticker thread advances the epoch of every engine that has a run with a
//! deadline in progress, every [`TICK`], and each store's epoch callback
//! compares the wall clock with its own deadline, so runs sharing an engine
//! never cut each other short. Host calls that would sleep (preview1
//! `poll_oneoff`, preview2 `subscribe-duration`/`subscribe-instant`) are
//! clamped to the deadline.
//!
//! With `wasi-host` alone there are no runners: only the deadline clamp
//! the host calls make is used, and the rest is left unused.
#![cfg_attr(not(feature = "wasi"), allow(dead_code, unused_imports, unused_macros))]

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

/// How often the epoch of an engine with a timed run advances: the most a
/// spinning guest overruns its deadline by (plus scheduling).
pub const TICK: Duration = Duration::from_millis(10);

/// Epoch ticks a run without a deadline may see before its callback runs
/// (it then just extends the deadline again): far enough to never matter.
const FAR: u64 = 1 << 40;

/// Table elements a guest may hold per table when any limit is set; a
/// `table.grow` past it fails (-1), as a memory grow over the cap does.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The limits of one run. All unset by default: no deadline, no fuel
/// budget, memories up to what wasm allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// Wall-clock time from the start of the run (instantiation included).
    /// Needs an engine with epoch interruption (see [`engine_config`]).
    pub timeout: Option<Duration>,
    /// Units of fuel (about one per wasm instruction). Needs an engine with
    /// fuel consumption (see [`engine_config`]).
    pub fuel: Option<u64>,
    /// Most bytes any one linear memory may grow to; past it `memory.grow`
    /// returns -1 (so `malloc` returns NULL) rather than trapping.
    pub max_memory: Option<usize>,
}

/// Which limit ended (or, for memory, constrained) a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// The run passed its timeout and was stopped; the status is an error
    /// holding [`DeadlineExceeded`].
    Deadline,
    /// The guest used up its fuel; the status is the `OutOfFuel` trap.
    Fuel,
    /// A `memory.grow` (or `table.grow`) past the cap was refused; what the
    /// guest did about it is in the status.
    Memory,
}

/// The error a run that passed its deadline ends with. Match it with
/// `status.unwrap_err().downcast_ref::<DeadlineExceeded>()`, or look at
/// [`RunOutcome::limit`](crate::wasi::RunOutcome::limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadlineExceeded {
    /// The timeout the run had.
    pub timeout: Duration,
}

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest ran past its timeout of {:?} and was stopped",
            self.timeout
        )
    }
}

impl std::error::Error for DeadlineExceeded {}

/// An engine configuration for runs with limits: epoch interruption if
/// `epochs` (needed for [`RunLimits::timeout`]) and fuel metering if
/// `fuel` (needed for [`RunLimits::fuel`]). Both change the compiled code
/// and cost speed in wasm-heavy guests (measured on the guest kit's
/// examples: epochs 15-35% slower, fuel 50-100%), so engines for runs
/// without those limits are better made without them; a module compiled
/// for one engine only runs on engines with the same settings.
pub fn engine_config(epochs: bool, fuel: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(epochs);
    config.consume_fuel(fuel);
    config
}

/// An engine from [`engine_config`].
pub fn engine(epochs: bool, fuel: bool) -> wasmtime::Result<Engine> {
    Engine::new(&engine_config(epochs, fuel))
}

/// Whether `engine` was made with epoch interruption (asked on every
/// run, so a getter, not a formatting of the engine's whole config).
pub fn epochs_enabled(engine: &Engine) -> bool {
    engine.get_epoch_interruption()
}

/// The resource limiter of a run's store; remembers a refused grow.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    max_memory: Option<usize>,
    max_table: Option<usize>,
    pub(crate) refused: bool,
}

impl Limiter {
    fn new(limits: &RunLimits) -> Limiter {
        Limiter {
            max_memory: limits.max_memory,
            max_table: limits.max_memory.map(|_| MAX_TABLE_ELEMENTS),
            refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.max_memory.is_none_or(|m| desired <= m);
        if !ok {
            self.refused = true;
            tracing::info!(desired, max = ?self.max_memory, "refused a memory grow past the cap");
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.max_table.is_none_or(|m| desired <= m);
        if !ok {
            self.refused = true;
        }
        Ok(ok)
    }
}

/// Engines with a timed run in progress, and how many such runs each has.
struct Ticker {
    engines: Mutex<Vec<(Engine, usize)>>,
    wake: Condvar,
}

fn ticker() -> &'static Arc<Ticker> {
    static TICKER: OnceLock<Arc<Ticker>> = OnceLock::new();
    TICKER.get_or_init(|| {
        let t = Arc::new(Ticker {
            engines: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        });
        let bg = t.clone();
        let spawned = std::thread::Builder::new()
            .name("cowvfs-epoch".into())
            .spawn(move || {
                loop {
                    {
                        let mut list = bg.engines.lock().unwrap_or_else(|e| e.into_inner());
                        while list.is_empty() {
                            list = bg.wake.wait(list).unwrap_or_else(|e| e.into_inner());
                        }
                        for (engine, _) in list.iter() {
                            engine.increment_epoch();
                        }
                    }
                    std::thread::sleep(TICK);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the epoch ticker: {e}; timeouts only apply in host calls"
            );
        }
        t
    })
}

/// Keeps an engine's epoch advancing while a timed run is in progress.
pub(crate) struct Ticking {
    engine: Engine,
}

impl Ticking {
    fn start(engine: &Engine) -> Ticking {
        let t = ticker();
        let mut list = t.engines.lock().unwrap_or_else(|e| e.into_inner());
        // The ticker waits only while the list is empty: wake it only
        // then, not (a system call) on every run.
        let was_idle = list.is_empty();
        match list.iter_mut().find(|(e, _)| Engine::same(e, engine)) {
            Some((_, n)) => *n += 1,
            None => list.push((engine.clone(), 1)),
        }
        drop(list);
        if was_idle {
            t.wake.notify_all();
        }
        Ticking {
            engine: engine.clone(),
        }
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut list = ticker().engines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list.iter().position(|(e, _)| Engine::same(e, &self.engine)) {
            list[i].1 -= 1;
            if list[i].1 == 0 {
                list.swap_remove(i);
            }
        }
    }
}

/// What a run's store carries for its limits.
pub(crate) struct Armed {
    /// When the run must end, if it has a timeout.
    pub(crate) deadline: Option<(Instant, Duration)>,
    _ticking: Option<Ticking>,
}

/// The time left before `deadline`, or an error once it has passed.
pub(crate) fn remaining(
    deadline: Option<(Instant, Duration)>,
) -> wasmtime::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some((at, timeout)) => match at.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(DeadlineExceeded { timeout }.into()),
        },
    }
}

/// The error ending a run whose deadline passed.
pub(crate) fn exceeded(deadline: Option<(Instant, Duration)>) -> wasmtime::Error {
    DeadlineExceeded {
        timeout: deadline.map_or(Duration::ZERO, |d| d.1),
    }
    .into()
}

/// Sets up `store` for `limits`: epoch deadline and callback, fuel, and the
/// resource limiter found by `limiter` in the store's data. Fails, before
/// anything runs, when the engine cannot enforce what was asked.
pub(crate) fn arm<T: 'static>(
    store: &mut Store<T>,
    limits: &RunLimits,
    limiter: fn(&mut T) -> &mut Limiter,
) -> wasmtime::Result<Armed> {
    let engine = store.engine().clone();
    let epochs = epochs_enabled(&engine);
    // A timeout too far off for the clock (`Duration::MAX` as "never")
    // is no deadline at all, not a panic.
    let deadline = limits
        .timeout
        .and_then(|t| Some((Instant::now().checked_add(t)?, t)));
    let mut ticking = None;
    match deadline {
        Some(_) if !epochs => {
            return Err(wasmtime::format_err!(
                "a timeout needs an engine made with epoch interruption \
                 (cowvfs::wasi::engine_config(true, _))"
            ));
        }
        Some((at, timeout)) => {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if Instant::now() >= at {
                    Err(DeadlineExceeded { timeout }.into())
                } else {
                    Ok(UpdateDeadline::Continue(1))
                }
            });
            ticking = Some(Ticking::start(&engine));
        }
        None if epochs => {
            // Another run's ticks must never stop this one.
            store.set_epoch_deadline(FAR);
            store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(FAR)));
        }
        None => {}
    }
    match limits.fuel {
        Some(fuel) => store.set_fuel(fuel).map_err(|_| {
            wasmtime::format_err!(
                "a fuel budget needs an engine made with fuel consumption \
                 (cowvfs::wasi::engine_config(_, true))"
            )
        })?,
        // An engine with fuel starts each store with none: without a
        // budget, give it all. (Asking an engine without fuel makes an
        // error, with a backtrace when RUST_BACKTRACE is set: not per run.)
        None if engine.get_consume_fuel() => {
            let _ = store.set_fuel(u64::MAX);
        }
        None => {}
    }
    store.limiter(move |t| limiter(t) as &mut dyn ResourceLimiter);
    Ok(Armed {
        deadline,
        _ticking: ticking,
    })
}

/// Which limit, if any, ended a run with `status` (or refused a grow).
pub(crate) fn limit_hit(status: &Result<i32, wasmtime::Error>, refused: bool) -> Option<LimitHit> {
    if let Err(e) = status {
        if e.downcast_ref::<DeadlineExceeded>().is_some() {
            return Some(LimitHit::Deadline);
        }
        if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
            return Some(LimitHit::Fuel);
        }
    }
    refused.then_some(LimitHit::Memory)
}

pub(crate) fn new_limiter(limits: &RunLimits) -> Limiter {
    Limiter::new(limits)
}

/// The limit setters both sandboxes share; the type has
/// `limits: RunLimits`.
macro_rules! limit_setters {
    () => {
        /// Ends the run once it has taken `timeout` of wall-clock time
        /// (instantiation included): the status becomes an error holding
        /// [`DeadlineExceeded`](crate::wasi::DeadlineExceeded) and
        /// [`RunOutcome::limit`](crate::wasi::RunOutcome::limit) is
        /// `Some(LimitHit::Deadline)`. The guest's engine needs epoch
        /// interruption ([`engine_config`](crate::wasi::engine_config)).
        pub fn timeout(&mut self, timeout: std::time::Duration) -> &mut Self {
            self.limits.timeout = Some(timeout);
            self
        }

        /// Gives the run `fuel` units (about one per wasm instruction);
        /// past them it traps with `OutOfFuel`. The guest's engine needs
        /// fuel consumption
        /// ([`engine_config(_, true)`](crate::wasi::engine_config)).
        pub fn fuel(&mut self, fuel: u64) -> &mut Self {
            self.limits.fuel = Some(fuel);
            self
        }

        /// Caps each of the guest's linear memories at `bytes`: a
        /// `memory.grow` past it returns -1 (`malloc` returns NULL), and
        /// a module whose initial memory is larger fails to instantiate.
        pub fn max_memory(&mut self, bytes: usize) -> &mut Self {
            self.limits.max_memory = Some(bytes);
            self
        }

        /// Sets every run limit at once.
        pub fn limits(&mut self, limits: crate::wasi::RunLimits) -> &mut Self {
            self.limits = limits;
            self
        }
    };
}
pub(crate) use limit_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_detection_follows_the_config() {
        assert!(!epochs_enabled(&Engine::default()));
        assert!(epochs_enabled(&engine(true, false).unwrap()));
        assert!(epochs_enabled(&engine(true, true).unwrap()));
        assert!(!epochs_enabled(&engine(false, true).unwrap()));
    }
}
