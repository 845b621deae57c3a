//! After login: bytes both ways, untouched, until a side closes, the session goes
//! idle for too long, or it is kicked.
//!
//! `copy_bidirectional_with_sizes` reads and writes both directions at once (no
//! write blocks a read), and handles half-close. The streams are wrapped to
//! count bytes (metrics) and note activity (idle timeout) as they pass.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// One side closed (or failed); the other was shut down.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The session was kicked or the server shuts down.
    Cancelled,
}

/// Byte totals of one relayed session.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Client → backend.
    pub to_backend: u64,
    /// Backend → client.
    pub to_client: u64,
}

/// Last activity, in milliseconds since the relay started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that counts what is read from it.
struct Counted<'a, S> {
    inner: &'a mut S,
    read: u64,
    counter: IntCounter,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.read += n;
            this.counter.inc_by(n);
            this.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Relay settings.
pub struct Options {
    /// Buffer per direction.
    pub buffer: usize,
    /// Close after this long without a byte.
    pub idle_timeout: Duration,
    /// Counter for client → backend bytes.
    pub to_backend: IntCounter,
    /// Counter for backend → client bytes.
    pub to_client: IntCounter,
}

/// Relays until the end; the streams are left for the caller (to say BYE).
pub async fn relay<C, B>(
    client: &mut C,
    backend: &mut B,
    opts: Options,
    cancel: &CancellationToken,
) -> (End, Totals)
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut c = Counted {
        inner: client,
        read: 0,
        counter: opts.to_backend,
        activity: Arc::clone(&activity),
    };
    let mut b = Counted {
        inner: backend,
        read: 0,
        counter: opts.to_client,
        activity: Arc::clone(&activity),
    };
    let idle = async {
        loop {
            let quiet = activity.idle_for();
            if quiet >= opts.idle_timeout {
                return;
            }
            tokio::time::sleep(opts.idle_timeout - quiet).await;
        }
    };
    let end = tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, opts.buffer, opts.buffer) => End::Closed,
        _ = idle => End::Idle,
        _ = cancel.cancelled() => End::Cancelled,
    };
    let totals = Totals {
        to_backend: c.read,
        to_client: b.read,
    };
    if end != End::Closed {
        // Whatever the reason, the backend leg is done.
        let _ = b.inner.shutdown().await;
    }
    (end, totals)
}
