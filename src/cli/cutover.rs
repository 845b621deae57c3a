//! What `migrate --cutover` and `rollback` share: the mover, and the line
//! that says where a user is now.

use std::sync::Arc;

use anyhow::bail;
use mailshift::migrate::cutover::{CutoverReport, Mover};
use mailshift::Config;
use tokio_util::sync::CancellationToken;

/// The mover from the config; cutover and rollback need an LDAP directory.
pub fn mover(cfg: &Config, stop: &CancellationToken) -> anyhow::Result<Mover> {
    let dir = mailshift::directory::Directory::new(&cfg.directory)?;
    let Some(ldap) = dir.ldap() else {
        bail!(
            "cutover and rollback write the user's state to LDAP: directory.kind must be \"ldap\""
        );
    };
    let mut m = Mover::from_config(cfg, Arc::clone(ldap))?;
    m.stop_on(stop.clone(), cfg.shutdown_grace);
    Ok(m)
}

/// Prints how a cutover or rollback went.
pub fn print_cutover(json: bool, r: &CutoverReport) {
    if json {
        println!("{}", serde_json::json!({"event": "cutover", "report": r}));
    } else {
        eprintln!(
            "{}: on {} (hold {:.2}s, {} presync passes)",
            r.user,
            r.mailhost,
            r.hold_seconds,
            r.presyncs.len()
        );
    }
}
