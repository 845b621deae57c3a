//! `mailshift rollback`: a cut-over user back to the old store.

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;

use super::cutover::{mover, print_cutover};
use super::progress::Progress;
use super::signals::{past_grace, stop_on_signals};
use super::{load, runtime};

/// `mailshift rollback`.
pub fn rollback(config: &Path, user: &str, json: bool) -> anyhow::Result<bool> {
    let cfg = load(config)?;
    runtime()?.block_on(async move {
        let stop = stop_on_signals();
        let mover = mover(&cfg, &stop)?;
        let progress = Arc::new(Progress::new(json, 1));
        let r = tokio::select! {
            r = mover.rollback(user, progress) => r?,
            _ = past_grace(&stop, cfg.shutdown_grace) => bail!("stopped: shutdown_grace reached"),
        };
        print_cutover(json, &r);
        Ok(true)
    })
}
