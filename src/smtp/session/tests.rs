//! Byte scripts through the core: `C:` what the client sends, the replies it reads.

use super::*;

fn opts() -> Options {
    Options {
        hostname: "mx.test".into(),
        starttls_available: true,
        max_message_size: 100,
        ..Options::default()
    }
}

fn replies(script: &str) -> String {
    String::from_utf8(run_script(script.as_bytes(), opts())).expect("utf8")
}

fn codes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.len() >= 4 && &l[3..4] == " ")
        .map(|l| &l[..3])
        .collect()
}

#[test]
fn pipelined_transaction_gets_one_reply_per_command() {
    let out = replies(
        "EHLO c.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\n\
         RCPT TO:<unknown@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "550", "354", "250", "221"],
        "{out}"
    );
    assert!(out.contains("250-PIPELINING\r\n250-SIZE 100\r\n"), "{out}");
    assert!(out.contains("250 STARTTLS\r\n"), "{out}");
}

#[test]
fn outside_domain_is_relaying_denied_without_a_lookup() {
    let mut s = Session::new(opts());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@elsewhere.example>\r\n");
    let mut actions = Vec::new();
    while let Some(a) = s.poll() {
        actions.push(a);
    }
    assert!(!actions.iter().any(|a| matches!(a, Action::Rcpt(_))));
    assert!(actions.contains(&Action::Write(b"550 5.7.1 Relaying denied\r\n".to_vec())));
}

#[test]
fn domain_match_ignores_case() {
    let out = replies("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@EXAMPLE.org>\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250"], "{out}");
}

#[test]
fn data_is_forwarded_verbatim_and_ends_at_crlf_dot_crlf() {
    let mut s = Session::new(opts());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n");
    let mut data = Vec::new();
    let mut ended = false;
    let body = b"A: 1\r\n\r\n..dot\r\n\xc3\xa9\r\n.\r\nNOOP\r\n";
    let mut fed = false;
    loop {
        match s.poll() {
            Some(Action::Rcpt(a)) => s.rcpt_done(a, "250 2.1.5 Ok"),
            Some(Action::DataStart) => s.data_started(Ok(())),
            Some(Action::Data(d)) => data.extend(d),
            Some(Action::DataEnd) => {
                ended = true;
                s.data_done("250 2.0.0 Ok");
            }
            Some(_) => {}
            None if !fed => {
                // One byte at a time: the end must be found across any split.
                for b in body {
                    s.feed(&[*b]);
                    while let Some(a) = s.poll() {
                        match a {
                            Action::Data(d) => data.extend(d),
                            Action::DataEnd => {
                                ended = true;
                                s.data_done("250 2.0.0 Ok");
                            }
                            _ => {}
                        }
                    }
                }
                fed = true;
            }
            None => break,
        }
    }
    assert!(ended);
    assert_eq!(data, b"A: 1\r\n\r\n..dot\r\n\xc3\xa9\r\n.\r\n");
}

#[test]
fn oversized_message_is_refused_and_nothing_past_the_limit_goes_out() {
    let mut s = Session::new(opts());
    let big = "x".repeat(300);
    s.feed(
        format!(
            "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n{big}\r\n.\r\nNOOP\r\n"
        )
        .as_bytes(),
    );
    let mut sent = 0;
    let mut out = Vec::new();
    let mut aborted = false;
    while let Some(a) = s.poll() {
        match a {
            Action::Rcpt(a) => s.rcpt_done(a, "250 2.1.5 Ok"),
            Action::DataStart => s.data_started(Ok(())),
            Action::Data(d) => sent += d.len(),
            Action::DataEnd => panic!("an oversized message must not end normally"),
            Action::Abort => aborted = true,
            Action::Write(w) => out.extend(w),
            _ => {}
        }
    }
    assert!(aborted);
    assert!(sent <= 100, "{sent}");
    let out = String::from_utf8(out).expect("utf8");
    assert!(out.contains("552 5.3.4"), "{out}");
    assert!(
        out.ends_with("250 2.0.0 Ok\r\n"),
        "NOOP after the message runs: {out}"
    );
}

#[test]
fn size_parameter_over_the_limit_is_refused_at_mail() {
    let out = replies("EHLO c\r\nMAIL FROM:<a@b.example> SIZE=101\r\n");
    assert!(out.contains("552 5.3.4"), "{out}");
}

#[test]
fn bare_lf_dot_does_not_end_data_and_the_message_is_refused() {
    // SMTP smuggling: "\n.\n" must neither end the message nor reach a store.
    let mut o = opts();
    o.max_message_size = 10_000;
    let script = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n\
        hi\n.\nMAIL FROM:<evil@x>\r\n\r\n.\r\n";
    let mut s = Session::new(o);
    s.feed(script);
    let mut forwarded = Vec::new();
    let mut out = Vec::new();
    while let Some(a) = s.poll() {
        match a {
            Action::Rcpt(a) => s.rcpt_done(a, "250 2.1.5 Ok"),
            Action::DataStart => s.data_started(Ok(())),
            Action::Data(d) => forwarded.extend(d),
            Action::Write(w) => out.extend(w),
            _ => {}
        }
    }
    assert!(!forwarded.contains(&b'\n'), "{forwarded:?}");
    let out = String::from_utf8(out).expect("utf8");
    assert!(
        out.ends_with("554 5.6.0 Message refused: bare CR or LF (use CRLF line endings)\r\n"),
        "{out}"
    );
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut s = Session::new(opts());
    s.feed(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<bob@example.org>\r\n");
    let mut saw_starttls = false;
    while let Some(a) = s.poll() {
        match a {
            Action::StartTls => {
                saw_starttls = true;
                s.tls_started();
            }
            Action::Rcpt(_) | Action::Reset => panic!("injected command ran: {a:?}"),
            _ => {}
        }
    }
    assert!(saw_starttls);
    assert_eq!(s.buffered(), 0);
    // After TLS the client must EHLO again and STARTTLS is no longer offered.
    s.feed(b"MAIL FROM:<a@b.example>\r\nEHLO c\r\n");
    let mut out = Vec::new();
    while let Some(a) = s.poll() {
        if let Action::Write(w) = a {
            out.extend(w);
        }
    }
    let out = String::from_utf8(out).expect("utf8");
    assert!(out.starts_with("503 5.5.1"), "{out}");
    assert!(!out.contains("STARTTLS"), "{out}");
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let out = replies("EHLO c\r\nMAIL FROM:<jörg@b.example>\r\n");
    assert!(out.contains("553 5.6.7"), "{out}");
    let out =
        replies("EHLO c\r\nMAIL FROM:<jörg@b.example> SMTPUTF8\r\nRCPT TO:<bob@example.org>\r\n");
    assert_eq!(codes(&out), ["220", "250", "250", "250"], "{out}");
}

#[test]
fn ordering_errors_and_limits() {
    let out = replies(
        "MAIL FROM:<a@b.example>\r\nHELO c\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nVRFY bob\r\n",
    );
    assert_eq!(
        codes(&out),
        ["220", "503", "250", "503", "503", "252"],
        "{out}"
    );
    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(5000));
    let out = replies(&long);
    assert_eq!(codes(&out), ["220", "500", "250"], "{out}");
}

#[test]
fn too_many_errors_close_the_connection() {
    let out = replies(&"BOGUS\r\n".repeat(30));
    assert!(out.contains("421 4.7.0"), "{out}");
    assert_eq!(out.matches("500 5.5.2").count(), 20, "{out}");
}

#[test]
fn max_recipients_gives_452_for_the_extra_ones() {
    let mut o = opts();
    o.max_recipients = 2;
    let script = "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n";
    let out = String::from_utf8(run_script(script.as_bytes(), o)).expect("utf8");
    assert_eq!(
        codes(&out),
        ["220", "250", "250", "250", "250", "452"],
        "{out}"
    );
}
