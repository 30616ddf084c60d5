//! Bounded concurrency: at most `running` guests (and compilations,
//! checkpoint loads) at once, at most `queue` requests waiting for a
//! turn, each for at most `wait`. A request past the queue, or one that
//! waited too long, is refused with `overloaded` at once, so the server's
//! memory never grows with the number of clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, Code};

/// The admission gate of heavy work.
#[derive(Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    running: usize,
    queue: usize,
    wait: Duration,
    waiting: AtomicUsize,
    busy: Arc<AtomicUsize>,
}

/// A turn to run: held while the work runs (moved into the blocking
/// thread), given back when dropped.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    busy: Arc<AtomicUsize>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes one off the waiting count when the wait ends, however it ends
/// (the client may hang up while queued).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// A gate for `running` concurrent turns and `queue` waiters, each
    /// waiting at most `wait`.
    pub fn new(running: usize, queue: usize, wait: Duration) -> Gate {
        let running = running.max(1);
        Gate {
            slots: Arc::new(Semaphore::new(running)),
            running,
            queue,
            wait,
            waiting: AtomicUsize::new(0),
            busy: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for a turn, or refuses with `overloaded`.
    pub async fn enter(&self) -> Result<Turn, ApiError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(ApiError::new(
                        Code::Overloaded,
                        format!(
                            "{} requests are running and {} waiting, the most this server takes; retry later",
                            self.running, self.queue
                        ),
                    ));
                }
                let _w = Waiting(&self.waiting);
                match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => {
                        return Err(ApiError::new(
                            Code::Overloaded,
                            "the server is shutting down",
                        ));
                    }
                    Err(_) => {
                        return Err(ApiError::new(
                            Code::Overloaded,
                            format!("no turn to run within {:?}; retry later", self.wait),
                        ));
                    }
                }
            }
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        Ok(Turn {
            _permit: permit,
            busy: self.busy.clone(),
        })
    }

    /// Turns in use now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Requests waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_queue_requests_are_refused_not_held() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = Arc::new(Gate::new(1, 1, Duration::from_secs(5)));
            let first = gate.enter().await.unwrap();
            assert_eq!(gate.busy(), 1);
            // One may wait...
            let g = gate.clone();
            let waiter = tokio::spawn(async move { g.enter().await.map(|_| ()) });
            while gate.waiting() == 0 {
                tokio::task::yield_now().await;
            }
            // ...the next is refused at once.
            let refused = gate.enter().await.unwrap_err();
            assert_eq!(refused.code, Code::Overloaded);
            drop(first);
            waiter.await.unwrap().unwrap();
            assert_eq!((gate.busy(), gate.waiting()), (0, 0));
        });
    }

    #[test]
    fn a_wait_past_its_time_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = Gate::new(1, 4, Duration::from_millis(20));
            let _held = gate.enter().await.unwrap();
            assert_eq!(gate.enter().await.unwrap_err().code, Code::Overloaded);
            assert_eq!(gate.waiting(), 0);
        });
    }
}
