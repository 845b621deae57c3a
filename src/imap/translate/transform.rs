//! The translating relay: the [`Translator`] plugged into the one relay loop
//! ([`relay_with`](crate::frontend::relay::relay_with)) as its [`Transform`]. A read that lies
//! inside a message body passes without a copy, as in the plain relay; the
//! rest goes through the translator.

use std::io;

use super::Translator;
use crate::frontend::relay::Transform;

impl Transform for Translator {
    fn client_to_store(&mut self, input: &[u8], to_store: &mut Vec<u8>, to_client: &mut Vec<u8>) {
        Translator::from_client(self, input, to_store);
        // A refused command is answered now if the client is between responses;
        // otherwise `from_store` writes it at the next response boundary.
        self.take_replies(to_client);
    }

    fn store_to_client(&mut self, input: &[u8], to_client: &mut Vec<u8>) -> io::Result<()> {
        Translator::from_store(self, input, to_client).map_err(io::Error::other)
    }

    fn passes(&mut self, to_store: bool, input: &[u8]) -> bool {
        self.pass_literal(to_store, input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::relay::{relay_with, End, Options};
    use crate::imap::translate::{SampleFolder, SampleUser};
    use prometheus::IntCounter;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio_util::sync::CancellationToken;

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
            relay_with(
                &mut proxy_client,
                &mut proxy_backend,
                Some(&mut t),
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

    #[tokio::test]
    async fn a_kick_lets_the_store_finish_answering_translated() {
        let (mut client, mut proxy_client) = tokio::io::duplex(4096);
        let (mut proxy_backend, store) = tokio::io::duplex(4096);
        let cancel = CancellationToken::new();
        let kick = cancel.clone();
        let map = Arc::new(SampleUser {
            folders: vec![("INBOX".into(), SampleFolder::odd(10))],
        });
        let relay = tokio::spawn(async move {
            let mut t = Translator::new(map);
            let r = relay_with(
                &mut proxy_client,
                &mut proxy_backend,
                Some(&mut t),
                opts(),
                &cancel,
            )
            .await;
            (r, proxy_client, proxy_backend)
        });
        let (r, mut w) = tokio::io::split(store);
        let mut r = BufReader::new(r);
        client
            .write_all(b"s SELECT INBOX\r\n")
            .await
            .expect("write");
        let mut line = String::new();
        r.read_line(&mut line).await.expect("select");
        w.write_all(b"* OK [UIDVALIDITY 2222] x\r\ns OK [READ-WRITE] done\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"s OK [READ-WRITE] done\r\n") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed during SELECT");
            got.extend_from_slice(&buf[..n]);
        }
        kick.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The store answers the STORE that was in flight; the client sends more.
        w.write_all(b"* 1 FETCH (UID 2 FLAGS (\\Seen))\r\nt7 OK Store completed.\r\n")
            .await
            .expect("write");
        client.write_all(b"t8 LOGOUT\r\n").await.expect("write");
        let ((end, _), _pc, _pb) = relay.await.expect("relay");
        assert_eq!(end, End::Cancelled);
        let n = client.read(&mut buf).await.expect("read");
        assert_eq!(
            &buf[..n],
            b"* 1 FETCH (UID 3 FLAGS (\\Seen))\r\nt7 OK Store completed.\r\n"
        );
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(50), r.read_to_end(&mut rest)).await;
        assert!(
            !String::from_utf8_lossy(&rest).contains("LOGOUT"),
            "client bytes forwarded after the kick"
        );
    }
}
