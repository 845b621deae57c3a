//! `mailshift verify`: whether the new mailbox holds everything the old one
//! does.

use std::path::Path;

use anyhow::Context;
use mailshift::migrate::sync::Engine;
use mailshift::migrate::verify;

use super::{load, runtime};

/// `mailshift verify`; `Ok(true)` when nothing is missing. With `report`,
/// the per-user report (JSON or HTML by the file's extension) is written
/// there and kept under `state_dir/reports/` for the admin API.
pub fn verify(
    config: &Path,
    user: &str,
    json: bool,
    report: Option<&Path>,
) -> anyhow::Result<bool> {
    let cfg = load(config)?;
    runtime()?.block_on(async move {
        let engine = Engine::from_config(&cfg)?;
        if let Some(path) = report {
            let r = mailshift::migrate::report::UserReport::build(&engine, user, "verify").await?;
            r.write_to(path)
                .with_context(|| format!("writing {}", path.display()))?;
            if let Some(m) = &cfg.migration {
                r.keep(&m.state_dir).with_context(|| {
                    format!("keeping the report under {}", m.state_dir.display())
                })?;
            }
        }
        let v = verify::verify(&engine, user, None).await?;
        if json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            for f in &v.folders {
                let state = if f.missing.is_empty() && f.flag_mismatches.is_empty() {
                    "ok"
                } else {
                    "DIFFERS"
                };
                println!(
                    "{state:7} {} -> {}: source {}, destination {} ({} only on the destination)",
                    f.folder, f.dest, f.source, f.destination, f.extra
                );
                for m in &f.missing {
                    println!("        missing: {m}");
                }
                for m in &f.flag_mismatches {
                    println!("        flags: {m}");
                }
            }
            if let Some(s) = &v.sieve {
                let state = if s.ok() { "ok" } else { "DIFFERS" };
                println!(
                    "{state:7} sieve: active {:?} -> {:?}",
                    s.active_source, s.active_destination
                );
                for m in &s.missing {
                    println!("        missing sieve script: {m}");
                }
                for m in &s.differs {
                    println!("        sieve script differs: {m}");
                }
            }
            println!(
                "{}: {}",
                user,
                if v.ok() { "verified" } else { "NOT complete" }
            );
        }
        Ok(v.ok())
    })
}
