//! The relay for migrated users: the one relay loop
//! ([`crate::frontend::relay::relay_with`]) with the [`Rewriter`] as its
//! transform, so UIDL answers carry the old store's UIDLs. Users mailshift
//! did not move get the plain byte relay.

use std::io;

use super::uidl::Rewriter;
use crate::frontend::relay::Transform;

impl Transform for Rewriter {
    fn client_to_store(&mut self, input: &[u8], to_store: &mut Vec<u8>, _: &mut Vec<u8>) {
        // Commands pass unchanged; the rewriter only notes which answers
        // are UIDL listings.
        Rewriter::from_client(self, input);
        to_store.extend_from_slice(input);
    }

    fn store_to_client(&mut self, input: &[u8], to_client: &mut Vec<u8>) -> io::Result<()> {
        Rewriter::from_store(self, input, to_client);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::relay::{relay_with, End, Options};
    use crate::pop3::uidl::UidlMap;
    use prometheus::IntCounter;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn a_large_retr_streams_and_the_uidl_listing_after_it_is_rewritten() {
        let (client, mut proxy_client) = tokio::io::duplex(1024);
        let (mut proxy_backend, store) = tokio::io::duplex(1024);
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(async move {
            let mut r = Rewriter::new(UidlMap::new([("new1".into(), "old1".into())]));
            let opts = Options {
                idle_timeout: Duration::from_secs(60),
                to_backend: IntCounter::new("p_to_backend", "t").expect("counter"),
                to_client: IntCounter::new("p_to_client", "t").expect("counter"),
            };
            relay_with(
                &mut proxy_client,
                &mut proxy_backend,
                Some(&mut r),
                opts,
                &cancel,
            )
            .await
        });
        // A body line that looks like a UIDL line must pass untouched.
        let mut body = b"1 new1\r\n".to_vec();
        while body.len() < 2_000_000 {
            body.extend_from_slice(b"Lorem ipsum dolor sit amet.\r\n");
        }
        let body2 = body.clone();
        let store_side = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(store);
            let mut r = BufReader::new(r);
            let mut line = String::new();
            r.read_line(&mut line).await.expect("retr");
            assert_eq!(line, "RETR 1\r\n");
            w.write_all(b"+OK message follows\r\n")
                .await
                .expect("write");
            w.write_all(&body2).await.expect("write");
            w.write_all(b".\r\n").await.expect("write");
            line.clear();
            r.read_line(&mut line).await.expect("uidl");
            assert_eq!(line, "UIDL\r\n");
            w.write_all(b"+OK\r\n1 new1\r\n2 new2\r\n.\r\n")
                .await
                .expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let (r, mut w) = tokio::io::split(client);
        let mut r = BufReader::new(r);
        w.write_all(b"RETR 1\r\nUIDL\r\n").await.expect("write");
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.expect("read");
        let mut want = b"+OK message follows\r\n".to_vec();
        want.extend_from_slice(&body);
        want.extend_from_slice(b".\r\n+OK\r\n1 old1\r\n2 new2\r\n.\r\n");
        assert!(all == want, "client got something else");
        store_side.await.expect("store");
        w.shutdown().await.expect("shutdown");
        let (end, totals) = relay.await.expect("relay");
        assert_eq!(end, End::Closed);
        assert_eq!(totals.to_backend, 14);
    }
}
