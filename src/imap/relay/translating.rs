//! The relay for a translated session: the same shape as [`relay`](super::relay)
//! (both directions in one future, reads into a scratch buffer on the poll's
//! stack, nothing kept while idle), with the [`Translator`] between the two
//! sides. What the translator writes for a read goes to a buffer that is
//! freed once drained and the burst is over.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Activity, Counted, End, Options, Totals, BUDGET, CHUNK, DRAIN_MAX, DRAIN_QUIET};
use crate::imap::translate::Translator;

/// One direction: translated bytes not yet taken by the writer.
#[derive(Default)]
struct Leg {
    out: Vec<u8>,
    sent: usize,
    eof: bool,
    done: bool,
}

/// Which way a leg goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    ToStore,
    ToClient,
}

impl Leg {
    fn poll_write_out<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut Pin<&mut W>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match ready!(w.as_mut().poll_write(cx, &self.out[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// Polls one leg: writes what is translated, reads and translates more.
/// `other` receives the translator's own answers to the client (up leg only).
fn poll_leg<R, W>(
    leg: &mut Leg,
    other: &mut Vec<u8>,
    way: Way,
    t: &mut Translator,
    cx: &mut Context<'_>,
    mut r: Pin<&mut R>,
    mut w: Pin<&mut W>,
) -> Poll<io::Result<()>>
where
    R: AsyncRead + ?Sized,
    W: AsyncWrite + ?Sized,
{
    if leg.done {
        return Poll::Ready(Ok(()));
    }
    for _ in 0..BUDGET {
        if way == Way::ToClient {
            // Answers to refused commands, once at a response boundary.
            t.take_replies(&mut leg.out);
        }
        ready!(leg.poll_write_out(cx, &mut w))?;
        if leg.eof {
            ready!(w.as_mut().poll_flush(cx))?;
            ready!(w.as_mut().poll_shutdown(cx))?;
            leg.done = true;
            return Poll::Ready(Ok(()));
        }
        let mut scratch = [MaybeUninit::<u8>::uninit(); CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        match r.as_mut().poll_read(cx, &mut buf) {
            Poll::Pending => {
                if leg.out.capacity() > 0 {
                    leg.out = Vec::new();
                }
                ready!(w.as_mut().poll_flush(cx))?;
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let data = buf.filled();
        if data.is_empty() {
            leg.eof = true;
            continue;
        }
        match way {
            Way::ToStore => {
                t.from_client(data, &mut leg.out);
                t.take_replies(other);
            }
            Way::ToClient => {
                if let Err(e) = t.from_store(data, &mut leg.out) {
                    return Poll::Ready(Err(io::Error::other(e)));
                }
            }
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

async fn both<C, B>(
    c: &mut C,
    b: &mut B,
    up: &mut Leg,
    down: &mut Leg,
    t: &mut Translator,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| {
        let u = poll_leg(
            up,
            &mut down.out,
            Way::ToStore,
            t,
            cx,
            Pin::new(&mut *c),
            Pin::new(&mut *b),
        )?;
        let mut none = Vec::new();
        let d = poll_leg(
            down,
            &mut none,
            Way::ToClient,
            t,
            cx,
            Pin::new(&mut *b),
            Pin::new(&mut *c),
        )?;
        match (u, d) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// After a kick, what the store still says reaches the client (see
/// [`relay`](super::relay)'s drain), translated.
async fn drain<B, C>(b: &mut B, c: &mut C, down: &mut Leg, t: &mut Translator, activity: &Activity)
where
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let until = Instant::now() + DRAIN_MAX;
    activity.touch();
    loop {
        let step = std::future::poll_fn(|cx| {
            let mut none = Vec::new();
            poll_leg(
                down,
                &mut none,
                Way::ToClient,
                t,
                cx,
                Pin::new(&mut *b),
                Pin::new(&mut *c),
            )
        });
        tokio::select! {
            _ = step => return,
            _ = tokio::time::sleep(DRAIN_QUIET / 2) => {}
        }
        if activity.idle_for() >= DRAIN_QUIET || Instant::now() >= until {
            let _ = tokio::time::timeout(
                DRAIN_QUIET,
                std::future::poll_fn(|cx| down.poll_write_out(cx, &mut Pin::new(&mut *c))),
            )
            .await;
            return;
        }
    }
}

/// Relays a translated session until the end; the streams are left for the
/// caller (to say BYE). Totals count bytes read from each side.
pub async fn relay_translated<C, B>(
    client: &mut C,
    backend: &mut B,
    translator: &mut Translator,
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
    let (mut up, mut down) = (Leg::default(), Leg::default());
    let end = tokio::select! {
        r = both(&mut c, &mut b, &mut up, &mut down, translator) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "translated relay ended");
            }
            End::Closed
        }
        _ = idle => End::Idle,
        _ = cancel.cancelled() => End::Cancelled,
    };
    if end == End::Cancelled {
        drain(&mut b, &mut c, &mut down, translator, &activity).await;
    }
    let totals = Totals {
        to_backend: c.read,
        to_client: b.read,
    };
    if end != End::Closed {
        let _ = b.inner.shutdown().await;
    }
    (end, totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::translate::{SampleFolder, SampleUser};
    use prometheus::IntCounter;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    fn opts() -> Options {
        Options {
            idle_timeout: Duration::from_secs(60),
            to_backend: IntCounter::new("tr_to_backend", "t").expect("counter"),
            to_client: IntCounter::new("tr_to_client", "t").expect("counter"),
        }
    }

    #[tokio::test]
    async fn translates_both_ways_streams_a_large_body_and_answers_a_refused_command() {
        let (client, mut proxy_client) = tokio::io::duplex(1024);
        let (mut proxy_backend, store) = tokio::io::duplex(1024);
        let cancel = CancellationToken::new();
        let map = Arc::new(SampleUser {
            folders: vec![("INBOX".into(), SampleFolder::odd(10))],
        });
        let relay = tokio::spawn(async move {
            let mut t = Translator::new(map);
            relay_translated(
                &mut proxy_client,
                &mut proxy_backend,
                &mut t,
                opts(),
                &cancel,
            )
            .await
        });
        let body: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let body2 = body.clone();
        let store_side = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(store);
            let mut r = BufReader::new(r);
            let mut line = String::new();
            r.read_line(&mut line).await.expect("select");
            assert_eq!(line, "s SELECT INBOX\r\n");
            w.write_all(b"* OK [UIDVALIDITY 2222] x\r\ns OK [READ-WRITE] done\r\n")
                .await
                .expect("write");
            line.clear();
            r.read_line(&mut line).await.expect("fetch");
            assert_eq!(line, "a UID FETCH 2 BODY[]\r\n");
            w.write_all(format!("* 2 FETCH (UID 2 BODY[] {{{}}}\r\n", body2.len()).as_bytes())
                .await
                .expect("write");
            w.write_all(&body2).await.expect("write");
            w.write_all(b")\r\na OK done\r\n").await.expect("write");
            line.clear();
            r.read_line(&mut line).await.expect("logout");
            assert_eq!(line, "c LOGOUT\r\n");
            w.write_all(b"* BYE\r\nc OK bye\r\n").await.expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        w.write_all(b"s SELECT INBOX\r\na UID FETCH 3 BODY[]\r\n")
            .await
            .expect("write");
        let mut line = String::new();
        r.read_line(&mut line).await.expect("read");
        assert_eq!(line, "* OK [UIDVALIDITY 1111] x\r\n");
        line.clear();
        r.read_line(&mut line).await.expect("read");
        line.clear();
        r.read_line(&mut line).await.expect("read");
        assert_eq!(
            line,
            format!("* 2 FETCH (UID 3 BODY[] {{{}}}\r\n", body.len())
        );
        let mut got = vec![0u8; body.len()];
        r.read_exact(&mut got).await.expect("body");
        assert!(got == body, "body differs");
        w.write_all(b"b UID XYZZY 1\r\n").await.expect("write");
        let mut rest = String::new();
        line.clear();
        r.read_line(&mut line).await.expect("read");
        rest.push_str(&line);
        line.clear();
        r.read_line(&mut line).await.expect("read");
        rest.push_str(&line);
        line.clear();
        r.read_line(&mut line).await.expect("read");
        rest.push_str(&line);
        assert_eq!(rest, ")\r\na OK done\r\nb BAD Unsupported UID command.\r\n");
        w.write_all(b"c LOGOUT\r\n").await.expect("write");
        let mut tail = String::new();
        r.read_to_string(&mut tail).await.expect("tail");
        assert_eq!(tail, "* BYE\r\nc OK bye\r\n");
        w.shutdown().await.expect("shutdown");
        store_side.await.expect("store");
        let (end, _) = relay.await.expect("relay");
        assert_eq!(end, End::Closed);
    }
}
