//! The `mailshift` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Transparent IMAP/SMTP coexistence proxy for mail migrations: routes every
/// login by the user's LDAP mailHost to the old or the new mail store.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy: IMAP listeners, directory follower, admin HTTP.
    Serve {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a config file: prints OK, or every problem with its key (exit 64).
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// EX_USAGE from sysexits.h: the config is wrong, not the machine.
const EX_USAGE: u8 = 64;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILSHIFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal; journald and log files get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match mailshift::Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}:\n{e}", config.display());
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Serve { config } => {
            init_logging();
            let cfg = match mailshift::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}:\n{e}", config.display());
                    return ExitCode::from(EX_USAGE);
                }
            };
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("mailshift: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Raises the open-file limit to the hard limit: every IMAP session holds two
/// sockets, and the usual soft limit of 1024 would cap a proxy at ~500 users.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        // Root may raise the hard limit too; elsewhere this fails harmlessly.
        const WANTED: libc::rlim_t = 262_144;
        if lim.rlim_max < WANTED {
            let raised = libc::rlimit {
                rlim_cur: WANTED,
                rlim_max: WANTED,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                tracing::debug!(
                    from = lim.rlim_cur,
                    to = lim.rlim_max,
                    "raised open-file limit"
                );
            }
        }
    }
}

fn serve(cfg: mailshift::Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(mailshift::server::run(cfg, CancellationToken::new()))
        .context("serve")
}
