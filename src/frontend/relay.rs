//! After login: bytes both ways until a side closes, the session goes idle
//! for too long, or it is kicked — untouched, or through a [`Transform`]
//! (the translating relay's [`Translator`](crate::imap::translate::Translator)).
//!
//! Both directions are driven in one future, so no write ever blocks a read the
//! other way. Each read goes into a scratch buffer on the poll's stack. Without
//! a transform it is written straight on; only bytes the peer cannot take yet
//! are copied to the heap, and that copy is freed once drained. With one, the
//! transform writes what goes out into that same heap buffer, also freed once
//! the burst is over. An idle session (IDLE for hours) therefore holds no relay
//! buffer at all — the difference between 12 KiB and 64 KiB per session at
//! 10,000 sessions. A direction that hits EOF shuts the other side's writer
//! down (half-close), as `copy_bidirectional` does.
//!
//! ```text
//!  client ──read──► Transform::client_to_store ──write──► store
//!     ▲                 │ (its own answers)
//!     └──write── pending ◄── Transform::store_to_client ◄──read── store
//! ```

#[cfg(target_os = "linux")]
mod splice;

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
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
    /// Both directions ended cleanly: each side read to its end and the
    /// other's write half shut down (TLS: close_notify sent). Nothing is
    /// left to shut down, only to close.
    pub both_closed: bool,
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

    /// Returns once nothing moved for `timeout`.
    async fn quiet_for(&self, timeout: Duration) {
        loop {
            let quiet = self.idle_for();
            if quiet >= timeout {
                return;
            }
            tokio::time::sleep(timeout - quiet).await;
        }
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

/// Bytes read per poll; lives on the poll's stack, not in the session.
const CHUNK: usize = 64 * 1024;

/// Reads a fair share per wake-up before yielding to other sessions.
const BUDGET: usize = 32;

/// Rewrites what crosses the relay, per direction. The plain relay has none
/// and pays nothing for the option: its reads are written straight from the
/// scratch buffer.
pub trait Transform: Send {
    /// Client bytes read; what goes to the store is appended to `to_store`,
    /// and answers of the transform's own (a refused command) to `to_client`.
    fn client_to_store(&mut self, input: &[u8], to_store: &mut Vec<u8>, to_client: &mut Vec<u8>);
    /// Store bytes read; what goes to the client is appended to `to_client`.
    /// An error ends the session.
    fn store_to_client(&mut self, input: &[u8], to_client: &mut Vec<u8>) -> io::Result<()>;
    /// Whether `input` (from the client if `to_store`, else from the store)
    /// goes on exactly as it is — the middle of a message body. If so the
    /// transform counts it as passed and the relay writes it straight from
    /// its read buffer, as the plain relay does, instead of copying it
    /// through the transform.
    fn passes(&mut self, to_store: bool, input: &[u8]) -> bool {
        let _ = (to_store, input);
        false
    }
}

/// What a direction does with what it reads.
enum Rewrite<'a> {
    /// Written on untouched.
    Pass,
    /// Client → store; the transform's own answers go to `replies` (the
    /// other direction's pending bytes).
    ToStore(&'a mut dyn Transform, &'a mut Vec<u8>),
    /// Store → client.
    ToClient(&'a mut dyn Transform),
}

/// One direction of the relay.
#[derive(Default)]
struct Direction {
    /// Bytes read (or transformed) but not yet accepted by the writer
    /// (empty, unallocated, when idle).
    pending: Vec<u8>,
    sent: usize,
    eof: bool,
    done: bool,
}

impl Direction {
    /// Writes out what was read but not yet accepted by `w`.
    fn poll_flush_pending<W>(
        &mut self,
        cx: &mut Context<'_>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        while self.sent < self.pending.len() {
            match ready!(w.as_mut().poll_write(cx, &self.pending[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        w.poll_flush(cx)
    }

    /// Moves bytes from `r` to `w` until neither can make progress.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        rewrite: &mut Rewrite<'_>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..BUDGET {
            while self.sent < self.pending.len() {
                match w.as_mut().poll_write(cx, &self.pending[self.sent..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => self.sent += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            // Drained: keep the capacity while the burst lasts (see below).
            self.pending.clear();
            self.sent = 0;
            if self.eof {
                ready!(w.as_mut().poll_flush(cx))?;
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut scratch);
            match r.as_mut().poll_read(cx, &mut buf) {
                Poll::Pending => {
                    // Nothing more to read now: the burst is over, so give the
                    // memory back rather than keep it for hours of IDLE, and
                    // push out what TLS may be holding.
                    if self.pending.capacity() > 0 {
                        self.pending = Vec::new();
                    }
                    ready!(w.as_mut().poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let data = buf.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            // What a transform makes goes out at the top of the loop.
            match rewrite {
                Rewrite::Pass => {}
                Rewrite::ToStore(t, replies) => {
                    if !t.passes(true, data) {
                        // One allocation for the burst, not a chain of regrowths.
                        self.pending.reserve(data.len());
                        t.client_to_store(data, &mut self.pending, replies);
                        continue;
                    }
                }
                Rewrite::ToClient(t) => {
                    if !t.passes(false, data) {
                        self.pending.reserve(data.len());
                        t.store_to_client(data, &mut self.pending)?;
                        continue;
                    }
                }
            }
            // Untouched: straight from the scratch buffer (`pending` is empty).
            let mut written = 0;
            while written < data.len() {
                match w.as_mut().poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.pending.extend_from_slice(&data[written..]);
                        return Poll::Pending;
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Copies both ways until both directions ended, or one failed.
async fn copy_both<C, B>(
    client: &mut C,
    backend: &mut B,
    up: &mut Direction,
    down: &mut Direction,
    mut transform: Option<&mut dyn Transform>,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| {
        // Client → store first: the transform's answers it queues for the
        // client are written by the other direction in the same wake-up.
        let mut rewrite = match transform.as_deref_mut() {
            Some(t) => Rewrite::ToStore(t, &mut down.pending),
            None => Rewrite::Pass,
        };
        let u = up.poll_copy(
            cx,
            Pin::new(&mut *client),
            Pin::new(&mut *backend),
            &mut rewrite,
        )?;
        let mut rewrite = match transform.as_deref_mut() {
            Some(t) => Rewrite::ToClient(t),
            None => Rewrite::Pass,
        };
        let d = down.poll_copy(
            cx,
            Pin::new(&mut *backend),
            Pin::new(&mut *client),
            &mut rewrite,
        )?;
        match (u, d) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// How long a kicked session's store may keep answering before BYE.
const DRAIN_MAX: Duration = Duration::from_secs(1);
/// Store silence that ends the drain early.
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// After a kick: nothing more goes from the client to the store, but what the
/// store still says (the tagged OK of an APPEND in flight) reaches the client
/// before the BYE, transformed like the rest. Without this a client would
/// retry an APPEND the store already stored, and the message would exist twice.
async fn drain<B, C>(
    backend: &mut B,
    client: &mut C,
    down: &mut Direction,
    mut transform: Option<&mut dyn Transform>,
    activity: &Activity,
) where
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let until = Instant::now() + DRAIN_MAX;
    activity.touch();
    loop {
        let step = std::future::poll_fn(|cx| {
            let mut rewrite = match transform.as_deref_mut() {
                Some(t) => Rewrite::ToClient(t),
                None => Rewrite::Pass,
            };
            down.poll_copy(
                cx,
                Pin::new(&mut *backend),
                Pin::new(&mut *client),
                &mut rewrite,
            )
        });
        tokio::select! {
            _ = step => return,
            _ = tokio::time::sleep(DRAIN_QUIET / 2) => {}
        }
        if activity.idle_for() >= DRAIN_QUIET || Instant::now() >= until {
            // Whatever was read but not yet written still goes out.
            let _ = tokio::time::timeout(
                DRAIN_QUIET,
                std::future::poll_fn(|cx| down.poll_flush_pending(cx, Pin::new(&mut *client))),
            )
            .await;
            return;
        }
    }
}

/// The transform for a shorter borrow (`as_deref_mut` cannot shorten the
/// trait object's lifetime behind `&mut`; a coercion can).
fn reborrow<'s>(t: &'s mut Option<&mut dyn Transform>) -> Option<&'s mut dyn Transform> {
    match t {
        Some(t) => Some(&mut **t),
        None => None,
    }
}

/// Relay settings.
pub struct Options {
    /// Close after this long without a byte.
    pub idle_timeout: Duration,
    /// Counter for client → backend bytes.
    pub to_backend: IntCounter,
    /// Counter for backend → client bytes.
    pub to_client: IntCounter,
}

/// Relays bytes untouched until the end; the streams are left for the
/// caller (to say BYE).
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
    relay_with(client, backend, None, opts, cancel).await
}

/// Relays until the end, through `transform` if there is one; the streams
/// are left for the caller (to say BYE). Totals count bytes read from each
/// side (before the transform).
pub async fn relay_with<C, B>(
    client: &mut C,
    backend: &mut B,
    mut transform: Option<&mut dyn Transform>,
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
    let idle = activity.quiet_for(opts.idle_timeout);
    let (mut up, mut down) = (Direction::default(), Direction::default());
    let mut both_closed = false;
    let end = tokio::select! {
        r = copy_both(&mut c, &mut b, &mut up, &mut down, reborrow(&mut transform)) => {
            match r {
                Ok(()) => both_closed = true,
                Err(e) => tracing::debug!(error = %e, "relay ended"),
            }
            End::Closed
        }
        _ = idle => End::Idle,
        _ = cancel.cancelled() => End::Cancelled,
    };
    if end == End::Cancelled {
        drain(
            &mut b,
            &mut c,
            &mut down,
            reborrow(&mut transform),
            &activity,
        )
        .await;
    }
    let totals = Totals {
        to_backend: c.read,
        to_client: b.read,
        both_closed,
    };
    if end != End::Closed {
        // Whatever the reason, the backend leg is done.
        let _ = b.inner.shutdown().await;
    }
    (end, totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn opts(idle: Duration) -> Options {
        Options {
            idle_timeout: idle,
            to_backend: IntCounter::new("t_to_backend", "t").expect("counter"),
            to_client: IntCounter::new("t_to_client", "t").expect("counter"),
        }
    }

    #[tokio::test]
    async fn relays_large_data_both_ways_through_small_pipes_and_half_closes() {
        // Pipes far smaller than the data force the pending (heap) path.
        let (mut client, mut proxy_client) = tokio::io::duplex(1024);
        let (mut proxy_backend, mut backend) = tokio::io::duplex(1024);
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(async move {
            relay(
                &mut proxy_client,
                &mut proxy_backend,
                opts(Duration::from_secs(60)),
                &cancel,
            )
            .await
        });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(client);
            let writer = async {
                w.write_all(&up2).await.expect("write");
                w.shutdown().await.expect("shutdown");
            };
            let mut got = Vec::new();
            let reader = r.read_to_end(&mut got);
            let (_, n) = tokio::join!(writer, reader);
            n.expect("read");
            client = r.unsplit(w);
            drop(client);
            got
        });
        let (mut br, mut bw) = tokio::io::split(backend);
        let writer = async {
            bw.write_all(&down2).await.expect("write");
            bw.shutdown().await.expect("shutdown");
        };
        let mut got_up = Vec::new();
        let reader = br.read_to_end(&mut got_up);
        let (_, n) = tokio::join!(writer, reader);
        n.expect("read");
        backend = br.unsplit(bw);
        drop(backend);
        let got_down = client_side.await.expect("client");
        assert_eq!(got_up, up);
        assert_eq!(got_down, down);
        let (end, totals) = relay.await.expect("relay");
        assert_eq!(end, End::Closed);
        assert_eq!((totals.to_backend, totals.to_client), (300_000, 500_000));
    }

    #[tokio::test]
    async fn a_kick_lets_the_store_finish_answering_but_forwards_nothing_more() {
        let (mut client, mut proxy_client) = tokio::io::duplex(4096);
        let (mut proxy_backend, mut backend) = tokio::io::duplex(4096);
        let cancel = CancellationToken::new();
        let kick = cancel.clone();
        let relay = tokio::spawn(async move {
            let r = relay(
                &mut proxy_client,
                &mut proxy_backend,
                opts(Duration::from_secs(60)),
                &cancel,
            )
            .await;
            (r, proxy_client, proxy_backend)
        });
        kick.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The store answers the APPEND that was in flight; the client sends more.
        backend
            .write_all(b"t7 OK [APPENDUID 1 9] Append completed.\r\n")
            .await
            .expect("write");
        client.write_all(b"t8 LOGOUT\r\n").await.expect("write");
        let ((end, _), _pc, _pb) = relay.await.expect("relay");
        assert_eq!(end, End::Cancelled);
        let mut got = vec![0u8; 64];
        let n = client.read(&mut got).await.expect("read");
        assert_eq!(&got[..n], b"t7 OK [APPENDUID 1 9] Append completed.\r\n");
        let mut rest = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(50), backend.read_to_end(&mut rest)).await;
        assert!(
            !String::from_utf8_lossy(&rest).contains("LOGOUT"),
            "client bytes forwarded after the kick"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_end_and_kicks_cancel() {
        let (_client, mut proxy_client) = tokio::io::duplex(64);
        let (mut proxy_backend, _backend) = tokio::io::duplex(64);
        let cancel = CancellationToken::new();
        let (end, _) = relay(
            &mut proxy_client,
            &mut proxy_backend,
            opts(Duration::from_secs(1800)),
            &cancel,
        )
        .await;
        assert_eq!(end, End::Idle);
        cancel.cancel();
        let (end, _) = relay(
            &mut proxy_client,
            &mut proxy_backend,
            opts(Duration::from_secs(1800)),
            &cancel,
        )
        .await;
        assert_eq!(end, End::Cancelled);
    }
}

/// Relays two plain TCP legs with `splice(2)` (no copy through user space);
/// same ends, counters and idle handling as [`relay`].
#[cfg(target_os = "linux")]
pub async fn relay_plain(
    client: &tokio::net::TcpStream,
    backend: &tokio::net::TcpStream,
    opts: Options,
    cancel: &CancellationToken,
) -> (End, Totals) {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let idle = activity.quiet_for(opts.idle_timeout);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let end = tokio::select! {
        _ = splice::copy_both(client, backend, &opts.to_backend, &opts.to_client, &activity, (&up, &down)) => End::Closed,
        _ = idle => End::Idle,
        _ = cancel.cancelled() => End::Cancelled,
    };
    if end != End::Closed {
        // SAFETY: shutdown on a socket we borrow; it stays open.
        unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(backend), libc::SHUT_WR) };
    }
    let totals = Totals {
        to_backend: up.load(Ordering::Relaxed),
        to_client: down.load(Ordering::Relaxed),
        both_closed: false,
    };
    (end, totals)
}

#[cfg(all(test, target_os = "linux"))]
mod splice_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    #[tokio::test]
    async fn spliced_relay_moves_large_data_both_ways_and_half_closes() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_backend, mut backend) = pair().await;
        let cancel = CancellationToken::new();
        let opts = Options {
            idle_timeout: Duration::from_secs(60),
            to_backend: IntCounter::new("s_to_backend", "t").expect("counter"),
            to_client: IntCounter::new("s_to_client", "t").expect("counter"),
        };
        let relay =
            tokio::spawn(
                async move { relay_plain(&proxy_client, &proxy_backend, opts, &cancel).await },
            );
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let c = tokio::spawn(async move {
            let (mut r, mut w) = client.split();
            let send = async {
                w.write_all(&up2).await.expect("write");
                w.shutdown().await.expect("shutdown");
            };
            let mut got = Vec::new();
            let (_, n) = tokio::join!(send, r.read_to_end(&mut got));
            n.expect("read");
            got
        });
        let (mut r, mut w) = backend.split();
        let send = async {
            w.write_all(&down2).await.expect("write");
            w.shutdown().await.expect("shutdown");
        };
        let mut got_up = Vec::new();
        let (_, n) = tokio::join!(send, r.read_to_end(&mut got_up));
        n.expect("read");
        assert!(got_up == up, "client → backend bytes differ");
        assert!(
            c.await.expect("client") == down,
            "backend → client bytes differ"
        );
        let (end, totals) = relay.await.expect("relay");
        assert_eq!(end, End::Closed);
        assert_eq!(
            (totals.to_backend, totals.to_client),
            (3_000_000, 5_000_000)
        );
    }
}
