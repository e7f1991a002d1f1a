//! `rocsync`: parse the command line, start logging, run one command, print errors with their
//! whole cause chain.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = rocsync::cli::Cli::parse();
    // The service tells the journal its start, each plan applied and each alert sent; the
    // other commands speak on stdout and keep stderr for warnings.
    let level = match (cli.verbose, matches!(cli.command, rocsync::cli::Command::Run)) {
        (0, true) => "warn,rocsync=info",
        (0, false) => "warn",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Under systemd: one journal entry per event, with its priority, without a second timestamp.
    let journal = rocsync::logging::stderr_is_journal();
    if journal {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(rocsync::logging::JournalFormat)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    }
    match rocsync::cli::run(cli) {
        Ok(code) => code,
        // `rocsync status | head`: the reader left, there is nobody to tell.
        Err(err) if err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            if journal {
                eprintln!("<3>rocsync: {}", rocsync::logging::one_line(&format!("{err:#}")));
            } else {
                eprintln!("rocsync: {err:#}");
            }
            rocsync::cli::exit_status(&err)
        }
    }
}
