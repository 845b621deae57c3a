//! Dovecot's ImapTest (built from source: see the README), run by the
//! ignored tests that compare an answer through mailshift with the store's own.

use std::collections::BTreeSet;
use std::process::Command;

/// One ImapTest run of the scripted suite: the names of the tests that failed
/// and the summary line.
pub fn scripted(port: u16, user: &str, pass: &str, mailbox: &str) -> (BTreeSet<String>, String) {
    let bin = std::env::var("IMAPTEST").expect("IMAPTEST=/path/to/imaptest");
    let tests =
        std::env::var("IMAPTEST_TESTS").expect("IMAPTEST_TESTS=/path/to/imaptest/src/tests");
    let mut cmd = Command::new(bin);
    cmd.args([
        "host=127.0.0.1",
        &format!("port={port}"),
        &format!("user={user}"),
        &format!("pass={pass}"),
        &format!("box={mailbox}"),
        &format!("test={tests}"),
    ]);
    // ImapTest links Debian's libdovecot, which is not on the default path.
    let libs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    cmd.env("LD_LIBRARY_PATH", format!("/usr/lib/dovecot:{libs}"));
    let out = cmd.output().expect("run imaptest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What ImapTest says about each failure, for whoever reads the test's
    // output: "*** Test fetch-body command 3/5 (line 12)" opens a block.
    let mut in_failure = false;
    for l in text.lines() {
        in_failure = l.starts_with("*** Test ") || (in_failure && !l.trim().is_empty());
        if in_failure {
            eprintln!("imaptest (port {port}): {l}");
        }
    }
    // "*** Test fetch-body command 3/5 (line 12)" opens each failure.
    let failed = text
        .lines()
        .filter_map(|l| l.strip_prefix("*** Test "))
        .map(|l| l.split(" (line").next().unwrap_or(l).to_string())
        .collect();
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("test groups"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("no summary in:\n{text}"));
    (failed, summary)
}

/// The failures of the groups that ran on both sides, and the groups that
/// did not (a group whose set-up failed on one side ran no command there).
pub fn ran_on_both(
    direct: &BTreeSet<String>,
    through: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let group = |f: &String| f.split(' ').next().unwrap_or_default().to_string();
    let not_run: BTreeSet<String> = direct
        .iter()
        .chain(through)
        .filter(|f| f.contains("initialization failed"))
        .map(group)
        .collect();
    let ran = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .filter(|f| !not_run.contains(&group(f)))
            .cloned()
            .collect()
    };
    (ran(direct), ran(through), not_run)
}
