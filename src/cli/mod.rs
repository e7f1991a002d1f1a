//! The `rocsync` command line: clap definitions, and [`run`], which dispatches each command to
//! its own function in `commands`.

mod commands;
mod man;
pub mod output;
pub mod report;
pub mod users;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::sources::SourceError;
use crate::store::Decision;

const EXAMPLES: &str = "\
Examples:
  rocsync check-config --config /etc/rocsync/config.toml
  rocsync poll                           # fetch the annuaire once, say what came back
  rocsync once --dry-run                 # what would change, changing nothing
  rocsync once                           # read, plan, apply what needs no approval
  rocsync plan list
  rocsync plan show 4                    # the diff, grouped by AMC
  rocsync report openings --unused-for 180d
  rocsync approve 4 --by 'J. Martin (RSSI)' --comment 'ticket 1234'
  rocsync status
  rocsync audit --limit 20
  rocsync recover --by 'J. Martin (RSSI)'   # after the state store was lost
  rocsync user add marie --role rssi     # an account of the review console
  rocsync inspect annuaire answer.json --json
  rocsync inspect mail notification.eml";

/// Keeps a hospital's firewall allow-list in sync with the ROC ecosystem (Annuaire AMC,
/// Inter-AMC notifications).
#[derive(Debug, Parser)]
#[command(name = "rocsync", version, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, env = "ROCSYNC_CONFIG", default_value = "/etc/rocsync/config.toml")]
    pub config: PathBuf,
    /// When to colour the output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// More log output on stderr (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service: poll on schedule and on notifications, apply by review mode, follow
    /// DNS answers and the logs, send alerts; SIGHUP reloads the configuration, SIGTERM stops.
    #[command(after_help = "Example:\n  rocsync run --config /etc/rocsync/config.toml\n\n\
        While it runs, `rocsync approve` records the decision and the daemon applies it within a second.")]
    Run,
    /// Read the source, plan, apply what the review mode allows, print the plans.
    #[command(after_help = "Example:\n  rocsync once --config config.example.toml")]
    Once {
        /// Show what would change; store and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Fetch the annuaire once and say what came back (HTTP status, size, ETag, what the answer
    /// holds), without planning; for troubleshooting the connection.
    #[command(after_help = "Examples:\n  rocsync poll\n  rocsync poll --force --save /tmp/annuaire-answer.json")]
    Poll {
        /// Ignore the ETag of the last answer: fetch the whole list.
        #[arg(long)]
        force: bool,
        /// Also write the answer to FILE (for `inspect annuaire` or `plan --source`).
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
    },
    /// Compute and store a plan from the source (or FILE); `plan list`, `plan show ID`.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  rocsync plan --source saved-answer.xml\n  rocsync plan list --all\n  rocsync plan show 4 --format diff\n  rocsync plan show 4 --format nft"
    )]
    Plan {
        /// Read this saved annuaire answer instead of the configured source.
        #[arg(long, value_name = "FILE")]
        source: Option<PathBuf>,
        /// Close the direct openings of the AMCs that no request reached directly for
        /// `rpn.quiet_period` since `rpn.switched_on` (`rocsync report rpn`); the plan always
        /// waits for approval and names each host's last direct use.
        #[arg(long, conflicts_with = "source")]
        rpn_migration: bool,
        #[command(subcommand)]
        action: Option<PlanAction>,
    },
    /// Approve a plan (and apply it, unless --no-apply).
    #[command(after_help = "Example:\n  rocsync approve 4 --by 'J. Martin (RSSI)' --comment 'checked with the AMC'")]
    Approve(DecideArgs),
    /// Reject a plan; what is in force stays.
    #[command(after_help = "Example:\n  rocsync reject 5 --by 'J. Martin (RSSI)' --comment 'outage page, not a real change'")]
    Reject(DecideArgs),
    /// Apply a ready or approved plan (and the open plans it builds on).
    #[command(after_help = "Example:\n  rocsync apply 4")]
    Apply {
        id: i64,
        /// Who applies it, for the audit log (default: the login name).
        #[arg(long)]
        by: Option<String>,
    },
    /// Propose a plan that restores an earlier applied state (by default the one before what is
    /// in force); it waits for approval.
    #[command(after_help = "Examples:\n  rocsync rollback --by 'J. Martin (RSSI)'\n  rocsync rollback --to 12 --by 'J. Martin (RSSI)'")]
    Rollback {
        /// The plan whose applied state to restore.
        #[arg(long, value_name = "PLAN")]
        to: Option<i64>,
        /// Who asks, for the audit log.
        #[arg(long)]
        by: String,
    },
    /// After the state store was lost: record what the output files hold as the state in force,
    /// so that the next pass plans against it and what it closes waits for approval.
    #[command(after_help = "Example:\n  rocsync recover --by 'J. Martin (RSSI)'\n\n\
        The JSON export keeps every entry whole; otherwise the nft script gives hosts, ports and AMCs, and\n\
        the Squid, HAProxy and plain lists the hosts, recorded on tcp/443 when no output keeps their port.")]
    Recover {
        /// Who recovers, for the audit log.
        #[arg(long)]
        by: String,
    },
    /// What is in force, pending plans, the last source read, outputs that drifted.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Resolve the hosts in force once (through `[resolver]`) and show their addresses: what the
    /// nftables sets would hold.
    Resolve {
        #[arg(long)]
        json: bool,
    },
    /// The notification e-mails read: which were used, rejected, without change, unreadable.
    Notifications {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The alert queue, newest first: what was sent, what waits (and why), what was held.
    Alerts {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The audit log: every plan, decision, apply and source error, with who and when.
    Audit {
        /// How many of the newest entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Which openings are used (`report openings`), and the move to the national reverse proxy
    /// (`report rpn`).
    #[command(subcommand)]
    Report(report::Report),
    /// The review console's accounts (`[console]`): add one with its role, list them, change a
    /// password, remove one. A new password or a removal ends the account's sessions.
    #[command(subcommand)]
    User(users::UserAction),
    /// Show what rocsync understands of an input, without storing anything.
    #[command(subcommand)]
    Inspect(Inspect),
    /// Check the configuration; print every problem and exit 1 if there is any.
    CheckConfig,
    /// Print the man page (roff), generated from these definitions.
    #[command(hide = true)]
    Man,
    /// Print shell completions, generated from these definitions.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanAction {
    /// The newest plans (open ones, and the last 20 others unless --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One plan: its diff grouped by AMC, why it waits, its decisions.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// Grouped by AMC, for people.
    Text,
    /// One JSON object.
    Json,
    /// `host:port` lines with `+`/`-`, the enforcement view.
    Diff,
    /// The `nft` commands that change rocsync's sets as the plan does.
    Nft,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    pub id: i64,
    /// Who decides (name and role), for the audit log.
    #[arg(long)]
    pub by: String,
    #[arg(long)]
    pub comment: Option<String>,
    /// Record the approval only; apply later with `rocsync apply ID`.
    #[arg(long)]
    pub no_apply: bool,
}

#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// What rocsync reads in a saved annuaire answer (JSON or XML).
    #[command(after_help = "Exit status: 0 when the file was read (even with rejected values), 2 when it is not an annuaire answer.")]
    Annuaire {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// What the log watcher would report of a Squid access.log or an nftables drop log:
    /// blocked requests to AMC services (IDB first), from the catalogue of the store or of FILE.
    #[command(after_help = "Examples:\n  rocsync inspect log /var/log/squid/access.log --kind squid\n  rocsync inspect log ulog.txt --kind nft --annuaire answer.json --json")]
    Log {
        file: PathBuf,
        #[arg(long, value_enum)]
        kind: LogKind,
        /// Take the catalogue from this saved annuaire answer instead of the store.
        #[arg(long, value_name = "FILE")]
        annuaire: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// What rocsync reads in an Inter-AMC notification e-mail (.eml).
    #[command(after_help = "Exit status: 0 when the message was read (even with rejected lines), 2 when it is not an e-mail.")]
    Mail {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogKind {
    /// Squid's native access.log.
    Squid,
    /// Kernel log lines of nftables' `log prefix` (journal, syslog, ulogd).
    Nft,
}

/// Exit status for an input that is not what it should be (not an annuaire answer).
const EXIT_BAD_INPUT: u8 = 2;

/// Runs one command. Errors come back to `main`, which prints their whole chain.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.color {
        Color::Auto => {}
        Color::Always => anstream::ColorChoice::Always.write_global(),
        Color::Never => anstream::ColorChoice::Never.write_global(),
    }
    let mut out = anstream::stdout();
    let config = cli.config.as_path();
    match cli.command {
        Command::CheckConfig => commands::check_config(config, &mut out),
        Command::Man => commands::man_page(&mut out),
        Command::Completions { shell } => commands::completions(shell, &mut out),
        Command::Inspect(Inspect::Annuaire { file, json }) => commands::inspect_annuaire(&file, json, &mut out),
        Command::Inspect(Inspect::Log { file, kind, annuaire, json }) => commands::inspect_log(config, file, kind, annuaire, json, &mut out),
        Command::Inspect(Inspect::Mail { file, json }) => commands::inspect_mail(config, &file, json, &mut out),
        Command::Run => commands::run_daemon(config),
        Command::Once { dry_run } => commands::once(config, dry_run, &mut out),
        Command::Poll { force, save } => commands::poll(config, force, save, &mut out),
        Command::Plan { rpn_migration: true, action: None, .. } => report::rpn_migration(config, &mut out),
        Command::Report(r) => report::run(config, r, &mut out),
        Command::Plan { source, action: None, .. } => commands::plan(config, source.as_deref(), &mut out),
        Command::Plan { action: Some(PlanAction::List { all, json }), .. } => commands::plan_list(config, all, json, &mut out),
        Command::Plan { action: Some(PlanAction::Show { id, format }), .. } => commands::plan_show(config, id, format, &mut out),
        Command::User(action) => users::run(config, action, &mut out),
        Command::Approve(args) => commands::decide(config, args, Decision::Approve, &mut out),
        Command::Reject(args) => commands::decide(config, args, Decision::Reject, &mut out),
        Command::Apply { id, by } => commands::apply(config, id, by, &mut out),
        Command::Resolve { json } => commands::resolve(config, json, &mut out),
        Command::Notifications { limit, json } => commands::notifications(config, limit, json, &mut out),
        Command::Alerts { limit, json } => commands::alerts(config, limit, json, &mut out),
        Command::Audit { limit, json } => commands::audit(config, limit, json, &mut out),
        Command::Rollback { to, by } => commands::rollback(config, to, &by, &mut out),
        Command::Recover { by } => commands::recover(config, &by, &mut out),
        Command::Status { json } => commands::status(config, json, &mut out),
    }
}

fn open(config: &Path) -> anyhow::Result<Engine> {
    let config = Config::from_path(config)?;
    refuse_root_on_foreign_state(&config.state_dir)?;
    Ok(Engine::open(config)?)
}

/// For the commands that only read the store: they create, migrate and write nothing, and
/// answer on a full disk.
fn open_read_only(config: &Path) -> anyhow::Result<Engine> {
    let config = Config::from_path(config)?;
    Ok(Engine::open_read_only(config)?)
}

/// [`open_read_only`] for the commands that need only the store (`status`, `plan list`,
/// `audit`, …): a configuration file with problems does not stop them (see [`open_store`]).
fn open_store_read_only(config: &Path) -> anyhow::Result<Engine> {
    let (config, _) = store_config(config)?;
    Ok(Engine::open_read_only(config)?)
}

/// For `approve` and `reject`, which need only the store: a configuration file with problems
/// does not stop them (see [`store_config`]). Says whether the configuration is whole: with a
/// broken one, nothing is applied.
fn open_store(config: &Path) -> anyhow::Result<(Engine, bool)> {
    let (config, whole) = store_config(config)?;
    refuse_root_on_foreign_state(&config.state_dir)?;
    Ok((Engine::open(config)?, whole))
}

/// The configuration for a command that needs only the store. While a broken file is on disk
/// the daemon runs on the last good one, and the RSSI must still see and approve plans: the
/// command works on the state directory the file names, with a warning that names the
/// problems. Fails only when even the state directory cannot be told.
fn store_config(path: &Path) -> anyhow::Result<(Config, bool)> {
    let (config, problems) = Config::from_path_lenient(path)?;
    let Some(problems) = problems else { return Ok((config, true)) };
    writeln!(
        anstream::stderr(),
        "rocsync: warning: the configuration has problems; this command works on the state in {} all the same (a running \
         daemon keeps the configuration it loaded last; nothing is applied from here until the file is fixed, see \
         `rocsync check-config`):\n{problems}",
        config.state_dir.display()
    )?;
    Ok((config, false))
}

/// Root running a command that writes, on a state directory that belongs to another user (the
/// service's), would leave files there that this user cannot write, and the service would fail
/// with "attempt to write a readonly database". Refused, with the command to run instead.
fn refuse_root_on_foreign_state(state_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(me) = crate::store::Ids::current() else { return Ok(()) };
    // A state directory not made yet would be made by root: judged by the directory it would be
    // made in (a service user's home, say), as the directory itself would be.
    let existing = state_dir.ancestors().find(|p| p.exists()).unwrap_or(state_dir);
    let Ok(meta) = std::fs::metadata(existing) else { return Ok(()) };
    if me.uid != 0 || meta.uid() == 0 {
        return Ok(());
    }
    let user = crate::store::user_name(meta.uid());
    anyhow::bail!(
        "the state directory {} belongs to {user}, and this command runs as root: the files it would create there (state.db \
         and its journal, apply.lock) would belong to root, and rocsync running as {user} (the service) could not write them \
         (\"attempt to write a readonly database\"). Run it as {user}: `runuser -u {user} -- {}`",
        if existing == state_dir { state_dir.display().to_string() } else { format!("{} (not made yet, in {})", state_dir.display(), existing.display()) },
        command_line()
    )
}

/// The command line of this process, quoted for a shell, to run it again as someone else.
fn command_line() -> String {
    let words: Vec<String> = std::env::args_os()
        .enumerate()
        .map(|(i, word)| if i == 0 { "rocsync".to_owned() } else { crate::text::shell_word(&word.to_string_lossy()) })
        .collect();
    words.join(" ")
}


/// A source error is reported with what it means for the firewall.
fn source_step<T>(result: Result<T, EngineError>) -> anyhow::Result<T> {
    result.map_err(|e| match e {
        EngineError::Source(_) | EngineError::Fetch(_) | EngineError::TlsSetup(_) => {
            anyhow::Error::new(e).context("nothing was planned; what is in force stays in force")
        }
        other => other.into(),
    })
}

/// The exit status for an error returned by [`run`]: 2 when an input is not an annuaire answer
/// (like `inspect annuaire`), 1 otherwise.
pub fn exit_status(err: &anyhow::Error) -> ExitCode {
    let bad_input = err.chain().any(|e| {
        e.is::<crate::sources::annuaire::AnswerError>() || matches!(e.downcast_ref::<SourceError>(), Some(SourceError::TooLarge { .. }))
            || matches!(e.downcast_ref::<EngineError>(), Some(EngineError::Source(SourceError::TooLarge { .. })))
    });
    if bad_input { ExitCode::from(EXIT_BAD_INPUT) } else { ExitCode::FAILURE }
}


/// Who runs the command, for the audit log when no `--by` is given.
fn login_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .map(|name| crate::text::excerpt(&name, 64))
        .unwrap_or_else(|| "unknown".into())
}
