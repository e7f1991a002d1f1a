//! `rocsync`: parse the command line, start logging, run one command, print errors with their
//! whole cause chain.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = rocsync::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match rocsync::cli::run(cli) {
        Ok(code) => code,
        // `rocsync status | head`: the reader left, there is nobody to tell.
        Err(err) if err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("rocsync: {err:#}");
            rocsync::cli::exit_status(&err)
        }
    }
}
