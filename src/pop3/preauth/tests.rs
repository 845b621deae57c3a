use super::*;

fn core(tls: bool) -> PreAuth {
    PreAuth::new(Options {
        tls_available: tls,
        ..Options::default()
    })
}

/// Feeds bytes and collects every action until more input is needed.
fn run(p: &mut PreAuth, bytes: &[u8]) -> Vec<Action> {
    p.feed(bytes);
    std::iter::from_fn(|| p.poll()).collect()
}

fn written(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn login_of(actions: &[Action]) -> Option<&Login> {
    actions.iter().find_map(|a| match a {
        Action::Login(l) => Some(l),
        _ => None,
    })
}

#[test]
fn capa_lists_stls_and_sasl_until_tls() {
    let mut p = core(true);
    let out = written(&run(&mut p, b"CAPA\r\n"));
    assert!(out.starts_with("+OK"), "{out}");
    for cap in [
        "\r\nUSER\r\n",
        "SASL PLAIN",
        "STLS",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "LOGIN-DELAY 0 USER",
        "UIDL",
    ] {
        assert!(out.contains(cap), "{cap} missing: {out}");
    }
    assert!(out.ends_with("\r\n.\r\n"), "{out}");
    p.tls_started();
    let out = written(&run(&mut p, b"CAPA\r\n"));
    assert!(!out.contains("STLS"), "{out}");
}

#[test]
fn user_pass_asks_for_a_login_with_the_whole_password() {
    let mut p = core(false);
    let a = run(&mut p, b"USER alice\r\nPASS secret with spaces\r\n");
    assert_eq!(written(&a), "+OK\r\n");
    let l = login_of(&a).expect("login");
    assert_eq!(l.identity.user, "alice");
    assert_eq!(
        l.identity.secret,
        sasl::Secret::Password(b"secret with spaces".to_vec())
    );
    assert_eq!(l.mechanism, "USER");
}

#[test]
fn pass_without_user_is_refused() {
    let mut p = core(false);
    let out = written(&run(&mut p, b"PASS x\r\n"));
    assert_eq!(out, "-ERR No username given.\r\n");
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let mut p = core(false);
    // base64("\0bob\0bobpw")
    let a = run(&mut p, b"AUTH PLAIN AGJvYgBib2Jwdw==\r\n");
    assert_eq!(login_of(&a).expect("login").identity.user, "bob");

    let mut p = core(false);
    let a = run(&mut p, b"AUTH PLAIN\r\n");
    assert_eq!(written(&a), "+ \r\n");
    let a = run(&mut p, b"AGJvYgBib2Jwdw==\r\n");
    assert_eq!(login_of(&a).expect("login").mechanism, "PLAIN");
}

#[test]
fn auth_cancelled_with_a_star() {
    let mut p = core(false);
    run(&mut p, b"AUTH PLAIN\r\n");
    let out = written(&run(&mut p, b"*\r\n"));
    assert_eq!(out, "-ERR Authentication cancelled.\r\n");
    // Back to commands.
    assert!(written(&run(&mut p, b"CAPA\r\n")).starts_with("+OK"));
}

#[test]
fn failed_login_starts_over_and_pipelined_commands_wait() {
    let mut p = core(false);
    let a = run(&mut p, b"USER a\r\nPASS b\r\nCAPA\r\n");
    assert!(login_of(&a).is_some());
    // Nothing after the login is read until its outcome is known.
    assert!(!written(&a).contains("Capability"));
    let failed = p.login_failed("[AUTH] Authentication failed.");
    assert_eq!(failed, b"-ERR [AUTH] Authentication failed.\r\n");
    assert!(written(&std::iter::from_fn(|| p.poll()).collect::<Vec<_>>()).starts_with("+OK"));
}

#[test]
fn pipelined_after_a_login_is_handed_to_the_store() {
    let mut p = core(false);
    let a = run(&mut p, b"USER a\r\nPASS b\r\nSTAT\r\nLIST\r\n");
    assert!(login_of(&a).is_some());
    assert_eq!(p.into_pipelined(), b"STAT\r\nLIST\r\n");
}

#[test]
fn stls_discards_plaintext_sent_after_it() {
    let mut p = core(true);
    let a = run(&mut p, b"STLS\r\nUSER mallory\r\nPASS x\r\n");
    assert_eq!(
        a,
        vec![
            Action::Write(b"+OK Begin TLS negotiation now.\r\n".to_vec()),
            Action::StartTls
        ]
    );
    p.tls_started();
    // The injected USER/PASS are gone: nothing more happens.
    assert_eq!(p.poll(), None);
    let a = run(&mut p, b"CAPA\r\n");
    assert!(written(&a).starts_with("+OK"));
}

#[test]
fn require_tls_refuses_credentials_in_the_clear() {
    let mut p = PreAuth::new(Options {
        tls_available: true,
        require_tls: true,
        ..Options::default()
    });
    let a = run(
        &mut p,
        b"USER alice\r\nPASS pw\r\nAUTH PLAIN AGJvYgBib2Jwdw==\r\n",
    );
    assert!(login_of(&a).is_none());
    let out = written(&a);
    assert_eq!(out.matches("-ERR [AUTH] Plaintext").count(), 3, "{out}");
    let caps = written(&run(&mut p, b"CAPA\r\n"));
    assert!(
        !caps.contains("\r\nUSER\r\n") && caps.contains("STLS"),
        "{caps}"
    );
}

#[test]
fn oversized_line_is_refused_and_closed() {
    let mut p = core(false);
    let mut big = b"USER ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10_000));
    let a = run(&mut p, &big);
    assert_eq!(
        a,
        vec![
            Action::Write(b"-ERR Line too long.\r\n".to_vec()),
            Action::Close
        ]
    );
    assert!(p.is_closed());
}

#[test]
fn too_many_commands_close() {
    let mut p = PreAuth::new(Options {
        max_commands: 3,
        ..Options::default()
    });
    let out = written(&run(&mut p, b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"));
    assert!(
        out.ends_with("-ERR Too many commands before login.\r\n"),
        "{out}"
    );
    assert!(p.is_closed());
}

#[test]
fn quit_and_unknown_commands() {
    let mut p = core(false);
    let a = run(&mut p, b"XYZZY\r\nRETR 1\r\nQUIT\r\nUSER late\r\n");
    assert_eq!(
        written(&a),
        "-ERR Unknown command.\r\n-ERR Not logged in.\r\n+OK Logging out.\r\n"
    );
    assert_eq!(a.last(), Some(&Action::Close));
}

#[test]
fn malformed_sasl_and_other_authzid_are_refused() {
    let mut p = core(false);
    let out = written(&run(&mut p, b"AUTH PLAIN !!!\r\n"));
    assert!(out.starts_with("-ERR [AUTH]"), "{out}");
    // authzid "root" for authcid "bob"
    let msg = sasl::encode(b"root\0bob\0pw");
    let out = written(&run(&mut p, format!("AUTH PLAIN {msg}\r\n").as_bytes()));
    assert!(out.starts_with("-ERR [AUTH]"), "{out}");
    let out = written(&run(&mut p, b"AUTH CRAM-MD5\r\n"));
    assert_eq!(out, "-ERR Unsupported authentication mechanism.\r\n");
}

#[test]
fn every_byte_split_gives_the_same_answers() {
    let script = b"CAPA\r\nUSER a\r\nPASS b\r\nAUTH PLAIN\r\n*\r\nQUIT\r\n";
    let whole = run_script(script, Options::default());
    for cut in 1..script.len() {
        let mut p = PreAuth::new(Options::default());
        let mut out = p.greeting();
        for part in [&script[..cut], &script[cut..]] {
            p.feed(part);
            while let Some(a) = p.poll() {
                match a {
                    Action::Write(b) => out.extend_from_slice(&b),
                    Action::Login(_) => {
                        out.extend_from_slice(&p.login_failed("[AUTH] Authentication failed."))
                    }
                    Action::StartTls => p.tls_started(),
                    // No bearer login in this script.
                    Action::Close | Action::Answer(_) => {}
                }
            }
        }
        assert_eq!(out, whole, "split at {cut}");
    }
}

#[test]
fn a_login_never_shows_its_password_in_debug() {
    let mut p = core(false);
    let a = run(&mut p, b"USER alice\r\nPASS hunter2\r\n");
    let dbg = format!("{a:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

fn oauth_core() -> PreAuth {
    PreAuth::new(Options {
        oauth: true,
        ..Options::default()
    })
}

#[test]
fn bearer_mechanisms_only_when_oauth_is_on() {
    let mut p = core(false);
    let out = written(&run(&mut p, b"CAPA\r\n"));
    assert!(out.contains("SASL PLAIN\r\n"), "{out}");
    let out = written(&run(&mut p, b"AUTH XOAUTH2 dXNlcj1h\r\n"));
    assert_eq!(out, "-ERR Unsupported authentication mechanism.\r\n");

    let mut p = oauth_core();
    let out = written(&run(&mut p, b"CAPA\r\n"));
    assert!(out.contains("SASL PLAIN OAUTHBEARER XOAUTH2\r\n"), "{out}");
    assert_eq!(
        written(&run(&mut p, b"AUTH\r\n")),
        "+OK\r\nPLAIN\r\nOAUTHBEARER\r\nXOAUTH2\r\n.\r\n"
    );
}

#[test]
fn a_bearer_login_names_its_user_and_a_challenge_gets_the_clients_answer() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let msg = b"n,a=alice,\x01auth=Bearer tok\x01\x01";
    let mut p = oauth_core();
    let a = run(
        &mut p,
        format!("AUTH oauthbearer {}\r\n", b64(msg)).as_bytes(),
    );
    let login = login_of(&a).expect("login");
    assert_eq!(login.identity.user, "alice");
    assert_eq!(login.mechanism, "OAUTHBEARER");
    assert!(matches!(
        &login.identity.secret,
        sasl::Secret::Bearer { message, .. } if message == msg
    ));
    // The store challenged it: the client sees it, its answer comes back.
    let line = p.relay_challenge(br#"{"status":"invalid_token"}"#);
    assert_eq!(
        line,
        format!("+ {}\r\n", b64(br#"{"status":"invalid_token"}"#)).into_bytes()
    );
    assert_eq!(
        run(&mut p, b"AQ==\r\n"),
        vec![Action::Answer(Some(vec![1]))]
    );
    // Waiting for the store's verdict: nothing more is read.
    assert!(run(&mut p, b"CAPA\r\n").is_empty());
    assert!(p
        .login_failed("[AUTH] Authentication failed.")
        .starts_with(b"-ERR"));
    assert!(written(&run(&mut p, b"")).starts_with("+OK"));

    // XOAUTH2 after the empty continuation; a cancel of a challenge.
    let mut p = oauth_core();
    assert_eq!(written(&run(&mut p, b"AUTH XOAUTH2\r\n")), "+ \r\n");
    let a = run(
        &mut p,
        format!("{}\r\n", b64(b"user=bob\x01auth=Bearer t\x01\x01")).as_bytes(),
    );
    assert_eq!(login_of(&a).expect("login").identity.user, "bob");
    p.relay_challenge(b"{}");
    assert_eq!(run(&mut p, b"*\r\n"), vec![Action::Answer(None)]);
    // A message without a user or token is refused here.
    let mut p = oauth_core();
    let out = written(&run(
        &mut p,
        format!("AUTH OAUTHBEARER {}\r\n", b64(b"n,,\x01\x01")).as_bytes(),
    ));
    assert!(out.starts_with("-ERR [AUTH]"), "{out}");
}
