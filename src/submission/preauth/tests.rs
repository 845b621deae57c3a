use super::*;
use crate::sasl::Secret;

fn opts(tls: bool) -> Options {
    Options {
        hostname: "mx.test".into(),
        starttls_available: true,
        tls_active: tls,
        ..Options::default()
    }
}

/// Feeds `script`; returns the text written and the logins asked for.
fn run(core: &mut PreAuth, script: &[u8]) -> (String, Vec<Login>) {
    core.feed(script);
    let mut out = Vec::new();
    let mut logins = Vec::new();
    while let Some(a) = core.poll() {
        match a {
            Action::Write(b) => out.extend_from_slice(&b),
            Action::StartTls => {
                // The driver handshakes before it polls again.
                out.extend_from_slice(b"<TLS>");
                break;
            }
            Action::Login(l) => logins.push(l),
            Action::Close => out.extend_from_slice(b"<CLOSE>"),
            Action::Answer(a) => out.extend_from_slice(format!("<ANSWER {a:?}>").as_bytes()),
        }
    }
    (String::from_utf8(out).expect("ascii"), logins)
}

#[test]
fn auth_is_offered_and_taken_only_after_tls() {
    let mut c = PreAuth::new(opts(false));
    let (out, logins) = run(&mut c, b"EHLO client\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
    assert!(out.contains("250 STARTTLS\r\n"), "{out}");
    assert!(!out.contains("AUTH"), "{out}");
    assert!(out.ends_with("530 5.7.0 Must issue a STARTTLS command first\r\n"));
    assert!(logins.is_empty());

    let mut c = PreAuth::new(opts(true));
    let (out, logins) = run(&mut c, b"EHLO client\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
    assert!(out.contains("250 AUTH PLAIN LOGIN\r\n"), "{out}");
    assert!(!out.contains("STARTTLS"), "{out}");
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].identity.user, "alice");
    assert_eq!(logins[0].identity.secret, Secret::Password(b"pw".to_vec()));
    assert_eq!(c.helo(), Some("client"));
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let mut c = PreAuth::new(opts(false));
    let (out, _) = run(
        &mut c,
        b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHB3\r\nMAIL FROM:<x@y>\r\n",
    );
    assert!(
        out.ends_with("220 2.0.0 Ready to start TLS\r\n<TLS>"),
        "{out}"
    );
    c.tls_started();
    assert_eq!(c.buffered(), 0);
    assert!(c.helo().is_none(), "must greet again after TLS");
    let (out, logins) = run(&mut c, b"AUTH PLAIN AGFsaWNlAHB3\r\n");
    assert_eq!(out, "503 5.5.1 EHLO first\r\n");
    assert!(logins.is_empty());
    let (out, _) = run(&mut c, b"STARTTLS\r\n");
    assert_eq!(out, "503 5.5.1 TLS already active\r\n");
}

#[test]
fn plain_without_initial_response_login_and_cancel() {
    let mut c = PreAuth::new(opts(true));
    let (out, _) = run(&mut c, b"EHLO c\r\nAUTH PLAIN\r\n");
    assert!(out.ends_with("334 \r\n"), "{out}");
    let (out, _) = run(&mut c, b"*\r\n");
    assert_eq!(out, "501 5.7.0 Authentication cancelled\r\n");
    let (out, logins) = run(&mut c, b"AUTH PLAIN\r\nAGJvYgBib2Jwdw==\r\n");
    assert_eq!(out, "334 \r\n");
    assert_eq!(logins[0].identity.user, "bob");
    let out = c.auth_failed("535 5.7.8 Authentication failed");
    assert_eq!(out, b"535 5.7.8 Authentication failed\r\n");
    // AUTH LOGIN: user, then password, each base64.
    let (out, logins) = run(&mut c, b"AUTH LOGIN\r\nYm9i\r\nYm9icHc=\r\n");
    assert_eq!(out, "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n");
    assert_eq!(logins[0].mechanism, "LOGIN");
    assert_eq!(
        logins[0].identity.secret,
        Secret::Password(b"bobpw".to_vec())
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let mut c = PreAuth::new(opts(true));
    let (out, _) = run(
        &mut c,
        b"EHLO c\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\nMAIL FROM:<a@b>\r\nFOO\r\nRSET\r\nNOOP\r\n",
    );
    let lines: Vec<&str> = out.lines().skip(5).collect();
    assert_eq!(
        lines,
        [
            "504 5.5.4 Unrecognized authentication type",
            "501 5.5.2 Invalid base64",
            "530 5.7.0 Authentication required",
            "500 5.5.2 Command not recognized",
            "250 2.0.0 Ok",
            "250 2.0.0 Ok",
        ]
    );
    let mut long = b"EHLO ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 10_000));
    long.extend_from_slice(b"\r\nNOOP\r\n");
    let mut c = PreAuth::new(opts(true));
    let (out, _) = run(&mut c, &long);
    assert_eq!(out, "500 5.5.6 Line too long\r\n250 2.0.0 Ok\r\n");
}

#[test]
fn limits_close_the_connection() {
    let mut c = PreAuth::new(opts(true));
    let (out, _) = run(&mut c, &b"FOO\r\n".repeat(20));
    assert!(
        out.ends_with("421 4.7.0 mx.test Too many errors, closing\r\n<CLOSE>"),
        "{out}"
    );
    assert!(c.is_closed());
    let mut c = PreAuth::new(opts(true));
    let (_, logins) = run(&mut c, b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\n");
    assert_eq!(logins.len(), 1);
    c.auth_failed("535 5.7.8 no");
    run(&mut c, b"AUTH PLAIN AGEAYg==\r\n");
    c.auth_failed("535 5.7.8 no");
    run(&mut c, b"AUTH PLAIN AGEAYg==\r\n");
    let out = c.auth_failed("535 5.7.8 no");
    assert!(String::from_utf8_lossy(&out).contains("421 4.7.0"));
    assert_eq!(c.poll(), Some(Action::Close));
    let (out, _) = run(&mut PreAuth::new(opts(false)), b"QUIT\r\nNOOP\r\n");
    assert_eq!(out, "221 2.0.0 Bye\r\n<CLOSE>");
}

#[test]
fn pipelined_bytes_after_auth_go_to_the_store() {
    let mut c = PreAuth::new(opts(true));
    let (_, logins) = run(
        &mut c,
        b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\nMAIL FROM:<a@b>\r\n",
    );
    assert_eq!(logins.len(), 1);
    assert_eq!(c.into_pipelined(), b"MAIL FROM:<a@b>\r\n");
}

#[test]
fn bearer_mechanisms_only_with_oauth_and_a_challenge_gets_the_clients_answer() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut c = PreAuth::new(opts(true));
    let (out, _) = run(&mut c, b"EHLO client\r\nAUTH XOAUTH2 dXNlcj1h\r\n");
    assert!(out.contains("250 AUTH PLAIN LOGIN\r\n"), "{out}");
    assert!(
        out.ends_with("504 5.5.4 Unrecognized authentication type\r\n"),
        "{out}"
    );

    let mut c = PreAuth::new(Options {
        oauth: true,
        ..opts(true)
    });
    let (out, _) = run(&mut c, b"EHLO client\r\nAUTH XOAUTH2\r\n");
    assert!(
        out.contains("AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2\r\n"),
        "{out}"
    );
    assert!(out.ends_with("334 \r\n"), "{out}");
    let msg = b"user=bob\x01auth=Bearer t\x01\x01";
    let (_, logins) = run(&mut c, format!("{}\r\n", b64(msg)).as_bytes());
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].identity.user, "bob");
    assert_eq!(logins[0].mechanism, "XOAUTH2");
    assert!(matches!(&logins[0].identity.secret, Secret::Bearer { message, .. } if message == msg));
    let line = c.relay_challenge(b"{}");
    assert_eq!(line, format!("334 {}\r\n", b64(b"{}")).into_bytes());
    let (out, _) = run(&mut c, b"AQ==\r\n");
    assert_eq!(out, "<ANSWER Some([1])>");
    // Waiting for the store's verdict; then commands again.
    let (out, _) = run(&mut c, b"NOOP\r\n");
    assert_eq!(out, "");
    assert!(c
        .auth_failed("535 5.7.8 Authentication failed.")
        .starts_with(b"535"));

    let mut c = PreAuth::new(Options {
        oauth: true,
        ..opts(true)
    });
    let ir = b64(b"n,a=alice,\x01auth=Bearer t\x01\x01");
    let (_, logins) = run(
        &mut c,
        format!("EHLO c\r\nAUTH OAUTHBEARER {ir}\r\n").as_bytes(),
    );
    assert_eq!(logins[0].identity.user, "alice");
}
