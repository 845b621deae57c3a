//! `trusted_proxies` (top level) and `proxy_protocol` (on any listener table):
//! who may put a PROXY header in front of a connection, and which listeners
//! expect one. A listener table adds the key with one field,
//! `proxy_protocol: Option<bool>`, and one call to [`listener`].

use super::Problems;
use crate::proxy_protocol::{parse_net, IpNet};

/// Validates the top-level `trusted_proxies` list (CIDRs or addresses).
pub(super) fn trusted(raw: Option<Vec<String>>, p: &mut Problems) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, entry) in raw.unwrap_or_default().iter().enumerate() {
        match parse_net(entry) {
            Ok(n) => nets.push(n),
            Err(e) => p.add(&format!("trusted_proxies[{i}]"), e),
        }
    }
    nets
}

/// A listener's `proxy_protocol` (default off); on needs `trusted_proxies`,
/// or every connection would be refused.
pub(super) fn listener(
    table: &str,
    raw: Option<bool>,
    trusted: &[IpNet],
    p: &mut Problems,
) -> bool {
    let on = raw.unwrap_or(false);
    if on && trusted.is_empty() {
        p.add(
            &format!("{table}.proxy_protocol"),
            "needs the top-level trusted_proxies (the load balancers' addresses)",
        );
    }
    on
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = r#"
[directory]
kind = "file"
path = "/dev/null"

[backends.old]
mailhost = ["old.example.org"]
imap = "imap://127.0.0.1:31143"
"#;

    #[test]
    fn proxy_protocol_is_off_by_default_and_needs_trusted_proxies() {
        let c = Config::parse(&format!("{BASE}\n[imap]\nlisten = \"127.0.0.1:1143\"\n"))
            .expect("valid");
        assert!(!c.imap.proxy_protocol && !c.imap.oauth);
        assert!(c.trusted_proxies.is_empty());
        let err = Config::parse(&format!(
            "{BASE}\n[imap]\nlisten = \"127.0.0.1:1143\"\nproxy_protocol = true\n"
        ))
        .expect_err("no trusted_proxies")
        .to_string();
        assert!(err.contains("imap.proxy_protocol"), "{err}");
        let c = Config::parse(&format!(
            "trusted_proxies = [\"127.0.0.1/32\", \"::1\", \"10.0.0.0/8\"]\n{BASE}\n\
             [imap]\nlisten = \"127.0.0.1:1143\"\nproxy_protocol = true\noauth = true\n"
        ))
        .expect("valid");
        assert!(c.imap.proxy_protocol && c.imap.oauth);
        assert_eq!(c.trusted_proxies.len(), 3);
    }

    #[test]
    fn the_new_front_ends_take_proxy_protocol_too() {
        let tables = "[pop3]\nlisten = \"127.0.0.1:1110\"\nproxy_protocol = true\n\
             [managesieve]\nlisten = \"127.0.0.1:4190\"\nproxy_protocol = true\n";
        let base = BASE.replace("imap = ", "pop3 = \"pop3://127.0.0.1:31110\"\nimap = ");
        let err = Config::parse(&format!("{base}\n{tables}"))
            .expect_err("no trusted_proxies")
            .to_string();
        assert!(err.contains("pop3.proxy_protocol"), "{err}");
        assert!(err.contains("managesieve.proxy_protocol"), "{err}");
        let c = Config::parse(&format!(
            "trusted_proxies = [\"127.0.0.1\"]\n{base}\n{tables}"
        ))
        .expect("valid");
        assert!(c.pop3.is_some_and(|p| p.proxy_protocol));
        assert!(c.managesieve.is_some_and(|m| m.proxy_protocol));
    }

    #[test]
    fn bad_trusted_proxies_are_named_by_index() {
        let err = Config::parse(&format!(
            "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/33\", \"lb.example\"]\n{BASE}"
        ))
        .expect_err("bad entries")
        .to_string();
        assert!(err.contains("trusted_proxies[1]"), "{err}");
        assert!(err.contains("trusted_proxies[2]"), "{err}");
        assert!(!err.contains("trusted_proxies[0]"), "{err}");
    }
}
