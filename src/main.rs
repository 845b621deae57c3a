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
    /// Run one incremental migration pass from [migration] from to to.
    /// Safe to run again and again: later passes copy only what changed.
    Migrate {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        users: UserSelection,
        /// Print what would be copied, with an estimate, and change nothing.
        #[arg(long, conflicts_with = "cutover")]
        dry_run: bool,
        /// After presync passes, hold the user, run the final delta pass and
        /// flip mailHost to the new store (seconds of hold).
        #[arg(long)]
        cutover: bool,
        /// Delete more expunged copies than migration.max_deletes_per_pass.
        #[arg(long)]
        force: bool,
        /// Users migrated at once (default: migration.concurrency).
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// One JSON object per line per event and result, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Move a cut-over user back to the old store, with the mail that arrived
    /// on the new one since.
    Rollback {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The user.
        #[arg(long, value_name = "LOGIN")]
        user: String,
        /// The result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole migration from LDAP, across every instance: users by state,
    /// running moves with progress and ETA, last errors, recent cutovers with
    /// their hold times. With --user (or --local): what this state_dir holds,
    /// per folder (messages copied, messages that failed and why).
    Status {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// One user's detail.
        #[arg(long, value_name = "LOGIN")]
        user: Option<String>,
        /// Only users matching this LDAP filter (plus those with a state).
        #[arg(long, value_name = "LDAPFILTER", conflicts_with = "user")]
        filter: Option<String>,
        /// What the local state_dir holds instead of the fleet view.
        #[arg(long, conflicts_with = "filter")]
        local: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare a user's two mailboxes; exit 0 only when the new one holds
    /// everything the old one does.
    Verify {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The user.
        #[arg(long, value_name = "LOGIN")]
        user: String,
        /// The result as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the per-user report here (FILE.json or FILE.html).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Plan a group before moving it: messages and bytes per user on the old
    /// store, what is synced already, what will not fit, the largest users,
    /// and an estimate of the first pass and the final window.
    Plan {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        users: GroupSelection,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which users a plan covers.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct GroupSelection {
    /// Every user matching an LDAP filter.
    #[arg(long, value_name = "LDAPFILTER")]
    filter: Option<String>,
    /// One login per line.
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
}

/// Which users a migration covers.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct UserSelection {
    /// One user.
    #[arg(long, value_name = "LOGIN")]
    user: Option<String>,
    /// Every user matching an LDAP filter.
    #[arg(long, value_name = "LDAPFILTER")]
    filter: Option<String>,
    /// One login per line.
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
}

/// EX_USAGE from sysexits.h: the config is wrong, not the machine.
const EX_USAGE: u8 = 64;

mod cli;

fn exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mailshift: {e:#}");
            if e.downcast_ref::<mailshift::config::Error>().is_some() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILSHIFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
        Command::Migrate {
            config,
            users,
            dry_run,
            cutover,
            force,
            concurrency,
            json,
        } => {
            // Progress has its own output; logs only for trouble.
            init_logging("warn");
            exit(cli::migrate::migrate(
                &config,
                cli::Selection {
                    user: users.user,
                    filter: users.filter,
                    users_file: users.users_file,
                },
                cli::migrate::Mode {
                    dry_run,
                    cutover,
                    force,
                    json,
                },
                concurrency,
            ))
        }
        Command::Rollback { config, user, json } => {
            init_logging("warn");
            exit(cli::rollback::rollback(&config, &user, json))
        }
        Command::Status {
            config,
            user,
            filter,
            local,
            json,
        } => {
            init_logging("warn");
            exit(cli::status::run(
                &config,
                user.as_deref(),
                filter.as_deref(),
                local,
                json,
            ))
        }
        Command::Verify {
            config,
            user,
            json,
            report,
        } => {
            init_logging("warn");
            exit(cli::verify::verify(&config, &user, json, report.as_deref()))
        }
        Command::Plan {
            config,
            users,
            json,
        } => {
            init_logging("warn");
            exit(cli::plan::plan(
                &config,
                cli::Selection {
                    user: None,
                    filter: users.filter,
                    users_file: users.users_file,
                },
                json,
            ))
        }
        Command::Serve { config } => {
            init_logging("info");
            let cfg = match mailshift::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}:\n{e}", config.display());
                    return ExitCode::from(EX_USAGE);
                }
            };
            match serve(cfg, config) {
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

fn serve(cfg: mailshift::Config, path: PathBuf) -> anyhow::Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime
        .block_on(mailshift::server::run_from(
            cfg,
            Some(path),
            CancellationToken::new(),
        ))
        .context("serve");
    // The drain already waited for what matters; a task past the grace is
    // dropped here rather than holding the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}
