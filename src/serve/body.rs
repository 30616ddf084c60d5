//! Request bodies read under a limit (`413 payload_too_large` past it,
//! before anything is buffered beyond it), and response bodies streamed
//! from blocking code through a small bounded channel.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures_util::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ApiResult, Code};

fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("the {what} is larger than this server takes ({limit} bytes)"),
    )
}

/// Most bytes of a refused body read and thrown away before the 413 goes
/// out: a client still sending when the answer comes sees its write fail
/// (a broken pipe) instead of the answer, so a body this much over the
/// limit is taken in (never held) to let the client read why.
const DRAIN_MAX: u64 = 64 << 20;

/// How long the server keeps taking in a refused body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The request bodies the server holds at once, all requests together,
/// in KiB: a body is charged (by its Content-Length at once, else as it
/// streams in) before it is buffered, and given back when the handler
/// drops it. Without it each of N clients could make the server buffer a
/// whole upload before any gate is reached.
#[derive(Debug)]
pub struct Budget {
    kib: Arc<Semaphore>,
    total: u64,
}

/// KiB for `bytes`, rounded up.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Budget {
    /// A budget of `bytes` (at most 4 TiB).
    pub fn new(bytes: u64) -> Budget {
        let bytes = bytes.min(u64::from(u32::MAX) * 1024);
        Budget {
            kib: Arc::new(Semaphore::new(kib(bytes) as usize)),
            total: bytes,
        }
    }

    /// Bytes of bodies held now.
    pub fn held(&self) -> u64 {
        (u64::from(kib(self.total)) - self.kib.available_permits() as u64) * 1024
    }

    fn take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        self.kib.clone().try_acquire_many_owned(kib(bytes)).ok()
    }

    fn full(&self, what: &str) -> ApiError {
        ApiError::new(
            Code::Overloaded,
            format!(
                "request bodies being received fill this server's {} bytes for them; retry the {what} later",
                self.total
            ),
        )
    }
}

/// A request body, charged to the [`Budget`] while it is held.
#[derive(Debug)]
pub struct Held {
    bytes: Bytes,
    _charge: OwnedSemaphorePermit,
}

impl std::ops::Deref for Held {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Most bytes charged at once while a body of unknown length streams in.
const STEP: u64 = 1 << 20;

/// The whole body, refused past `limit` bytes (by its Content-Length at
/// once, else as it streams in), or when `budget` cannot hold it.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
    budget: &Budget,
) -> ApiResult<Held> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        if declared.is_some_and(|n| n - limit as u64 <= DRAIN_MAX) {
            drain(&mut stream).await;
        }
        return Err(too_large(limit, what));
    }
    // What is charged: the declared length, else a step at a time.
    let mut charged = declared.unwrap_or(0);
    let Some(mut charge) = budget.take(charged) else {
        if declared.is_some_and(|n| n <= DRAIN_MAX) {
            drain(&mut stream).await;
        }
        return Err(budget.full(what));
    };
    let mut buf = Vec::with_capacity(charged as usize);
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| ApiError::bad(format!("cannot read the {what}: {e}")))?;
        if buf.len() + piece.len() > limit {
            drop(buf);
            drain(&mut stream).await;
            return Err(too_large(limit, what));
        }
        let need = (buf.len() + piece.len()) as u64;
        if need > charged {
            // Grown as a `Vec` grows: to at least double, within the limit.
            let to = need.max(charged * 2).max(STEP).min(limit as u64);
            match budget.take(to - charged) {
                Some(more) => charge.merge(more),
                None => {
                    drop(buf);
                    drain(&mut stream).await;
                    return Err(budget.full(what));
                }
            }
            charged = to;
            buf.reserve_exact(to as usize - buf.len());
        }
        buf.extend_from_slice(&piece);
    }
    Ok(Held {
        bytes: Bytes::from(buf),
        _charge: charge,
    })
}

/// Reads and drops what is left of a refused body, up to [`DRAIN_MAX`]
/// bytes and [`DRAIN_TIME`].
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(piece)) = stream.next().await {
            seen += piece.len() as u64;
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// Pieces a blocking writer hands to the response at a time.
const PIECE: usize = 256 << 10;

/// Pieces in flight between the writer and the client.
const IN_FLIGHT: usize = 4;

/// A `Write` that sends what it gets to a streamed response body. Writes
/// block while the client is slow; they fail once it has gone.
pub struct Sender {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Sender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl std::io::Write for Sender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A response body written by `produce` on a blocking thread (which
/// keeps `hold` until it is done). An error ends the body early, so the
/// client sees a cut transfer, never a short file passed off as whole.
pub fn stream<H: Send + 'static>(
    hold: H,
    produce: impl FnOnce(&mut Sender) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let _hold = hold;
        let mut out = Sender {
            tx,
            buf: Vec::with_capacity(PIECE),
        };
        let done = produce(&mut out).and_then(|()| out.send());
        if let Err(e) = done {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!("a streamed response failed: {e}");
            }
            let _ = errors.blocking_send(Err(e));
        }
    });
    let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    Body::from_stream(pieces)
}
