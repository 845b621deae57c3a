//! What a user would compare between two stores after a migration: each
//! folder's messages with their bytes, flags and INTERNALDATE, and counts.
use std::collections::BTreeSet;

use super::ImapClient;

/// Seconds since the epoch of an IMAP date-time (`dd-Mon-yyyy hh:mm:ss +zzzz`):
/// stores print the same instant in different zones.
pub fn instant(date: &str) -> i64 {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = date.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "date {date:?}");
    let dmy: Vec<&str> = parts[0].split('-').collect();
    let (d, y): (i64, i64) = (dmy[0].parse().expect("day"), dmy[2].parse().expect("year"));
    let m = months.iter().position(|x| *x == dmy[1]).expect("month") as i64 + 1;
    let hms: Vec<i64> = parts[1]
        .split(':')
        .map(|x| x.parse().expect("time"))
        .collect();
    let z: i64 = parts[2][1..].parse().expect("zone");
    let zone = (z / 100 * 60 + z % 100) * 60 * if parts[2].starts_with('-') { -1 } else { 1 };
    // Days from civil (Howard Hinnant).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2] - zone
}

/// Every message of a folder: (bytes, flags without \Recent, INTERNALDATE
/// instant), sorted; empty if the folder cannot be examined.
pub fn contents(c: &mut ImapClient, folder: &str) -> Vec<(String, String, i64)> {
    let (_, tagged) = c.cmd(&format!("EXAMINE \"{folder}\""));
    assert!(tagged.contains("OK"), "EXAMINE {folder}: {tagged}");
    let (lines, tagged) = c.cmd("FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])");
    let mut out = Vec::new();
    if tagged.contains(" OK") {
        for l in lines.iter().filter(|l| l.contains(" FETCH (")) {
            let flags = l
                .split("FLAGS (")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .unwrap_or("")
                .split(' ')
                .filter(|f| *f != "\\Recent" && !f.is_empty())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(" ");
            let date = l
                .split("INTERNALDATE \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            let body = l
                .split_once("}\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            out.push((body, flags, instant(date)));
        }
    }
    out.sort();
    out
}

/// The folder's message count (EXAMINE's EXISTS).
pub fn count(c: &mut ImapClient, folder: &str) -> usize {
    let lines = c.ok(&format!("EXAMINE \"{folder}\""));
    lines
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS")?.strip_prefix("* ")?.parse().ok())
        .unwrap_or(0)
}

/// Messages copied: the sum of `messages` over `migrate --json`'s `done` lines.
pub fn copied(stdout: &[u8]) -> u64 {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"done\""))
        .filter_map(|l| {
            let i = l.find("\"messages\":")? + 11;
            l[i..].split([',', '}']).next()?.parse::<u64>().ok()
        })
        .sum()
}
