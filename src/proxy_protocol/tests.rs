use super::*;

/// [`decode_prefix`], with the bytes never read.
fn drive(input: &[u8]) -> (Result<Header, Error>, Vec<u8>) {
    let (h, taken) = decode_prefix(input);
    if let Ok(h) = &h {
        assert_eq!(h.length, taken, "the header is exactly what was read");
    }
    (h, input[taken..].to_vec())
}

fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    let len = u16::try_from(addresses.len() + tlvs.len()).expect("short");
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(addresses);
    h.extend_from_slice(tlvs);
    h
}

const REST: &[u8] = b"a1 LOGIN alice pw\r\n";

fn with_rest(header: &[u8]) -> Vec<u8> {
    let mut v = header.to_vec();
    v.extend_from_slice(REST);
    v
}

#[test]
fn v1_tcp4_tcp6_and_unknown_leave_the_protocol_bytes_unread() {
    let cases: [(&[u8], Option<&str>); 4] = [
        (
            b"PROXY TCP4 127.0.0.7 127.0.0.1 40001 143\r\n",
            Some("127.0.0.7:40001"),
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 993\r\n",
            Some("[2001:db8::7]:40002"),
        ),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n", None),
    ];
    for (header, want) in cases {
        let input = with_rest(header);
        let (h, rest) = drive(&input);
        let h = h.unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(header)));
        assert_eq!(h.source, want.map(|w| w.parse().expect("addr")));
        assert_eq!(h.length, header.len());
        assert_eq!(rest, REST, "{:?}", String::from_utf8_lossy(header));
    }
}

#[test]
fn v1_longest_line_passes_and_one_byte_more_is_refused() {
    let addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    // The specification's worst case: UNKNOWN with two full IPv6 addresses.
    let line = format!("PROXY UNKNOWN {addr} {addr} 65535 65535\r\n");
    assert_eq!(line.len(), MAX_V1_BYTES);
    let (h, rest) = drive(&with_rest(line.as_bytes()));
    assert!(h.is_ok(), "{h:?}");
    assert_eq!(rest, REST);
    let too_long = format!("PROXY UNKNOWN {addr} {addr} 065535 65535\r\n");
    let (h, rest) = drive(&with_rest(too_long.as_bytes()));
    assert!(matches!(h, Err(Error::Malformed(_))), "{h:?}");
    // It gave up at the limit: nothing past 107 bytes was read.
    assert_eq!(rest.len(), too_long.len() + REST.len() - MAX_V1_BYTES);
}

#[test]
fn v1_malformed_lines_are_refused() {
    for bad in [
        &b"PROXY TCP4 127.0.0.1\r\n"[..],
        b"PROXY TCP4 127.0.0.1 127.0.0.1 1 99999\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY UDP4 127.0.0.1 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 127.0.0.1  127.0.0.1 1 2\r\n",
        b"PROXY \xff\xfe\r\n\r\n\r\n\r\n\r\n",
    ] {
        let (h, _) = drive(&with_rest(bad));
        assert!(
            matches!(h, Err(Error::Malformed(_))),
            "{:?}: {h:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn v2_tcp4_tcp6_with_tlvs_skipped() {
    // 127.0.0.7:40001 -> 127.0.0.1:143, plus an ALPN and a NOOP TLV.
    let v4 = [127, 0, 0, 7, 127, 0, 0, 1, 0x9c, 0x41, 0, 143];
    let tlvs = [0x01, 0, 2, b'h', b'2', 0x04, 0, 3, 0, 0, 0];
    let h4 = v2_header(1, 0x11, &v4, &tlvs);
    let (h, rest) = drive(&with_rest(&h4));
    let h = h.expect("v2 tcp4");
    assert_eq!(h.source, Some("127.0.0.7:40001".parse().expect("addr")));
    assert_eq!(h.length, h4.len());
    assert_eq!(rest, REST);

    let mut v6 = Vec::new();
    v6.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
    );
    v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v6.extend_from_slice(&[0x9c, 0x42, 0x03, 0xe1]);
    let h6 = v2_header(1, 0x21, &v6, &[]);
    let (h, rest) = drive(&with_rest(&h6));
    assert_eq!(
        h.expect("v2 tcp6").source,
        Some("[2001:db8::7]:40002".parse().expect("addr"))
    );
    assert_eq!(rest, REST);
}

#[test]
fn v2_local_unspec_and_unix_keep_the_peer() {
    for header in [
        v2_header(0, 0x00, &[], &[]),
        // LOCAL with addresses (HAProxy health checks may send them): ignored.
        v2_header(0, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2], &[]),
        v2_header(1, 0x00, &[], &[]),
        v2_header(1, 0x31, &[0; 216], &[]),
    ] {
        let (h, rest) = drive(&with_rest(&header));
        assert_eq!(h.expect("valid").source, None);
        assert_eq!(rest, REST);
    }
}

#[test]
fn v2_malformed_headers_are_refused() {
    // Version 1 in the binary form.
    let mut bad_version = v2_header(1, 0x11, &[0; 12], &[]);
    bad_version[12] = 0x11;
    // Addresses shorter than the family needs.
    let short = v2_header(1, 0x11, &[127, 0, 0, 1], &[]);
    // Command 2 does not exist.
    let bad_command = v2_header(2, 0x11, &[0; 12], &[]);
    for bad in [bad_version, short, bad_command] {
        let (h, rest) = drive(&with_rest(&bad));
        assert!(matches!(h, Err(Error::Malformed(_))), "{bad:?}: {h:?}");
        assert_eq!(rest, REST, "the declared length was read, no more");
    }
}

#[test]
fn anything_else_is_no_header_and_is_noticed_early() {
    for (input, read) in [
        (&b"a1 LOGIN alice pw\r\n"[..], 0),
        (b"EHLO client.example\r\n", 0),
        (b"PROXZ TCP4", 4),
        (b"\r\n\r\n\0\r\nQUIX\n....", 10),
    ] {
        let mut d = Decoder::new();
        // Fed one byte at a time: refused as soon as it cannot be a header.
        let mut at = 0;
        let err = loop {
            match d.step() {
                Err(e) => break e,
                Ok(Step::Need(_)) => {
                    d.push(&input[at..=at]);
                    at += 1;
                }
                Ok(Step::Done(h)) => panic!("{input:?} decoded as {h:?}"),
            }
        };
        assert!(matches!(err, Error::Missing(_)), "{err}");
        assert_eq!(at, read + 1, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn truncated_headers_want_more_never_done() {
    let full = with_rest(b"PROXY TCP4 127.0.0.7 127.0.0.1 40001 143\r\n");
    let (h, _) = drive(&full[..20]);
    assert!(matches!(h, Err(Error::Io(_))));
    let v2 = v2_header(1, 0x11, &[127, 0, 0, 7, 127, 0, 0, 1, 0, 1, 0, 2], &[]);
    let (h, _) = drive(&v2[..v2.len() - 1]);
    assert!(matches!(h, Err(Error::Io(_))));
}

#[test]
fn trusted_proxies_match_cidrs_and_mapped_addresses() {
    let trusted: Vec<IpNet> = ["127.0.0.1/32", "10.1.0.0/16", "::1", "2001:db8::/32"]
        .iter()
        .map(|s| parse_net(s).expect("valid"))
        .collect();
    for ip in [
        "127.0.0.1",
        "10.1.255.3",
        "::1",
        "::ffff:127.0.0.1",
        "2001:db8:1::5",
    ] {
        assert!(is_trusted(&trusted, ip.parse().expect("ip")), "{ip}");
    }
    for ip in [
        "127.0.0.2",
        "10.2.0.1",
        "::2",
        "::ffff:127.0.0.2",
        "2001:db9::1",
    ] {
        assert!(!is_trusted(&trusted, ip.parse().expect("ip")), "{ip}");
    }
    assert!(!is_trusted(&[], "127.0.0.1".parse().expect("ip")));
    // Host bits set are forgiven (10.1.2.3/16 means 10.1.0.0/16).
    assert_eq!(
        parse_net("10.1.2.3/16").expect("valid"),
        parse_net("10.1.0.0/16").expect("valid")
    );
    for bad in ["10.0.0.0/33", "localhost", "", "1.2.3/8"] {
        assert!(parse_net(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn accept_refuses_an_untrusted_peer_without_reading_and_returns_the_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 143\r\nA1 NOOP\r\n")
            .await
            .expect("write");
        s
    });
    let (tcp, peer) = listener.accept().await.expect("accept");
    let trusted = [parse_net("127.0.0.1/32").expect("net")];
    let (mut tcp, client_addr) = accept(tcp, peer, &trusted, Duration::from_secs(5))
        .await
        .expect("trusted");
    assert_eq!(client_addr, "192.0.2.7:40001".parse().expect("addr"));
    let mut rest = [0u8; 9];
    tcp.read_exact(&mut rest).await.expect("rest");
    assert_eq!(&rest, b"A1 NOOP\r\n");
    drop(client.await.expect("client"));

    let client = tokio::spawn(async move { TcpStream::connect(addr).await.expect("connect") });
    let (tcp, peer) = listener.accept().await.expect("accept");
    let other = [parse_net("10.0.0.0/8").expect("net")];
    let r = accept(tcp, peer, &other, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(Error::Untrusted(_))), "{r:?}");
    drop(client.await.expect("client"));
}
