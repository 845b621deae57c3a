//! The relay for migrated users: bytes both ways as in
//! [`crate::imap::relay`], except that the store's replies go through the
//! [`Rewriter`] so UIDL answers carry the old store's UIDLs. Users mailshift
//! did not move get the plain byte relay.

use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::uidl::Rewriter;
use crate::imap::relay::{End, Totals};

/// Read size from the store. Kept small because these buffers live as long
/// as the session (idle POP3 sessions of moved users stay near the IMAP
/// relay's footprint); RETR still moves at memory speed through them.
const READ_BYTES: usize = 8 * 1024;
/// Client commands are short lines.
const COMMAND_BYTES: usize = 512;

/// Relays until a side closes, the session idles out or is cancelled.
/// Client commands are small and answered in order, so one loop that writes
/// each read before reading on cannot deadlock: the store never waits on us
/// to read while we wait on it to read a command.
pub async fn relay_rewriting<C, B>(
    client: &mut C,
    backend: &mut B,
    mut rewriter: Rewriter,
    idle_timeout: Duration,
    counters: (IntCounter, IntCounter),
    cancel: &CancellationToken,
) -> (End, Totals)
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (to_backend, to_client) = counters;
    let mut totals = Totals::default();
    let mut up = vec![0u8; COMMAND_BYTES];
    let mut down = vec![0u8; READ_BYTES];
    let mut out = Vec::new();
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break End::Cancelled,
            _ = tokio::time::sleep(idle_timeout) => break End::Idle,
            r = client.read(&mut up) => {
                let n = match r { Ok(0) | Err(_) => break End::Closed, Ok(n) => n };
                rewriter.from_client(&up[..n]);
                if backend.write_all(&up[..n]).await.is_err() || backend.flush().await.is_err() {
                    break End::Closed;
                }
                totals.to_backend += n as u64;
                to_backend.inc_by(n as u64);
            }
            r = backend.read(&mut down) => {
                let n = match r { Ok(0) | Err(_) => break End::Closed, Ok(n) => n };
                out.clear();
                rewriter.from_store(&down[..n], &mut out);
                if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
                    break End::Closed;
                }
                totals.to_client += out.len() as u64;
                to_client.inc_by(out.len() as u64);
                if out.capacity() > 2 * READ_BYTES {
                    // A long UIDL listing grew it: give the memory back.
                    out = Vec::new();
                }
            }
        }
    };
    if end == End::Closed {
        let _ = backend.shutdown().await;
    }
    (end, totals)
}
