//! The `rocsync` command line: clap definitions and one `run` per command.

mod man;
pub mod output;
pub mod report;
pub mod users;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::sources::{SourceError, read_annuaire_file};
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
    match cli.command {
        Command::CheckConfig => check_config(&cli.config, &mut out),
        Command::Man => {
            let mut page: Vec<u8> = Vec::new();
            man::render(&mut page)?;
            out.write_all(&page)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "rocsync", &mut out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(Inspect::Annuaire { file, json }) => inspect_annuaire(&file, json, &mut out),
        Command::Inspect(Inspect::Log { file, kind, annuaire, json }) => {
            anyhow::ensure!(
                std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?.is_file(),
                "{} is not a regular file",
                file.display()
            );
            let log = std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
            // The catalogue: the file given, or the last good answer the store kept; what is
            // in force: the store's, when there is a configuration to find it.
            let engine = if annuaire.is_none() || cli.config.exists() { Some(open_store_read_only(&cli.config)?) } else { None };
            let answer = match (&annuaire, &engine) {
                (Some(path), _) => read_annuaire_file(path, 64 * 1024 * 1024)?,
                (None, Some(engine)) => {
                    let cached = engine.store.latest_cached_answer()?.context("the store holds no annuaire answer yet: run `rocsync once`, or give --annuaire FILE")?;
                    crate::sources::annuaire::parse(&cached.body, cached.content_type.as_deref())?
                }
                (None, None) => unreachable!("a missing configuration is opened above"),
            };
            let catalogue = crate::catalogue::Catalogue::from_answer(&answer);
            let in_force = match &engine {
                Some(e) => e.store.applied()?.state,
                None => crate::catalogue::State::default(),
            };
            let prefix = engine.as_ref().map(|e| e.config.nftables.log_prefix.clone()).unwrap_or_else(|| "rocsync-drop: ".into());
            // Addresses back to hosts: the resolver's book, kept in the store.
            let reverse = match &engine {
                Some(e) => e.store.address_book()?.reverse(),
                None => Default::default(),
            };
            let correlator = crate::watch::Correlator::new(&catalogue, &in_force, reverse);
            // Streamed, and only the lines that can be a denial parsed: memory stays flat
            // whatever the size of the log, and events are written as they are found.
            let parser = match kind {
                LogKind::Squid => crate::watch::read::LogParser::squid(crate::watch::read::Scope::Denials),
                LogKind::Nft => crate::watch::read::LogParser::nft(&prefix, crate::watch::read::Scope::Denials),
            };
            let mut report = output::LogReport::start(&mut out, &catalogue, json)?;
            let counts = correlator.read_from(log, &parser, |e| report.event(&e)).with_context(|| file.display().to_string())?;
            report.finish(&counts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(Inspect::Mail { file, json }) => {
            // Judged as the passes judge it: with the configuration's limit and trusted server.
            let notifications = if cli.config.exists() { open_read_only(&cli.config).ok().map(|e| e.config.notifications) } else { None };
            let limit = notifications.as_ref().map_or(4 * 1024 * 1024, |n| n.max_message_bytes);
            let raw = crate::sources::read_limited(&file, limit)?;
            let trusted = notifications.as_ref().and_then(|n| n.trusted_authserv_id.as_deref());
            match crate::sources::mail::parse(&raw, trusted) {
                Ok(n) => {
                    output::inspect_mail(&mut out, &file, &n, json)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    writeln!(anstream::stderr(), "rocsync: {}: {e}", file.display())?;
                    Ok(ExitCode::from(EXIT_BAD_INPUT))
                }
            }
        }
        Command::Run => {
            refuse_root_on_foreign_state(&Config::from_path(&cli.config)?.state_dir)?;
            crate::daemon::run_with_signals(&cli.config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { dry_run } => {
            let mut engine = open(&cli.config)?;
            let run = source_step(engine.once(dry_run))?;
            output::once(&mut out, &run, dry_run)?;
            // The annuaire was read and applied; a mailbox that failed still fails the command.
            for e in &run.mail.errors {
                writeln!(anstream::stderr(), "rocsync: the notifications could not be read ({e}); the annuaire was read all the same")?;
            }
            Ok(if run.mail.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Poll { force, save } => {
            let mut engine = open(&cli.config)?;
            let read = source_step(engine.read_source_with(None, force))?;
            if let Some(path) = &save {
                std::fs::write(path, &read.body).with_context(|| format!("cannot write {}", path.display()))?;
            }
            output::poll(&mut out, &read, save.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { rpn_migration: true, action: None, .. } => report::rpn_migration(&cli.config, &mut out),
        Command::Report(r) => report::run(&cli.config, r, &mut out),
        Command::Plan { source, action: None, .. } => {
            let mut engine = open(&cli.config)?;
            let run = source_step(engine.plan(source.as_deref(), false))?;
            output::once(&mut out, &run, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { action: Some(PlanAction::List { all, json }), .. } => {
            let engine = open_store_read_only(&cli.config)?;
            let limit = if all { usize::MAX >> 1 } else { 20 };
            let mut plans = engine.store.plans(limit)?;
            if !all {
                let open = engine.store.open_plans()?;
                plans.retain(|p| !open.iter().any(|o| o.id == p.id));
                plans.extend(open);
                plans.sort_by_key(|p| std::cmp::Reverse(p.id));
            }
            output::plan_list(&mut out, &plans, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { action: Some(PlanAction::Show { id, format }), .. } => {
            let engine = open_store_read_only(&cli.config)?;
            let plan = engine.store.plan(id)?;
            let decisions = engine.store.decisions(id)?;
            match format {
                ShowFormat::Text => output::plan_text(&mut out, &plan, &decisions)?,
                ShowFormat::Json => output::plan_json(&mut out, &plan, &decisions)?,
                ShowFormat::Diff => output::plan_diff(&mut out, &plan)?,
                ShowFormat::Nft => write!(out, "{}", engine.plan_nft(&plan)?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User(action) => users::run(&cli.config, action, &mut out),
        Command::Approve(args) => decide(&cli.config, args, Decision::Approve, &mut out),
        Command::Reject(args) => decide(&cli.config, args, Decision::Reject, &mut out),
        Command::Apply { id, by } => {
            let mut engine = open(&cli.config)?;
            let by = by.map(|b| crate::text::excerpt(&b, 120)).unwrap_or_else(login_name);
            for plan in engine.apply(id, &by)? {
                writeln!(out, "Plan {} applied.", plan.id)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resolve { json } => {
            let engine = open_read_only(&cli.config)?;
            let applied = engine.store.applied()?;
            let r = &engine.config.resolver;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let book = runtime.block_on(async {
                let resolver = crate::resolve::DnsResolver::new(&r.servers, r.timeout, r.concurrency)?;
                let mut book = crate::resolve::AddressBook::default();
                book.track(applied.state.entries.keys(), crate::resolve::now_millis());
                resolver.refresh(&mut book, &r.policy).await;
                Ok::<_, anyhow::Error>(book)
            })?;
            output::resolved(&mut out, &applied.state, &book, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notifications { limit, json } => {
            let engine = open_store_read_only(&cli.config)?;
            output::notifications(&mut out, &engine.store.notifications(limit)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts { limit, json } => {
            let engine = open_store_read_only(&cli.config)?;
            let lang = engine.config.alerts.language.clone();
            output::alerts(&mut out, &engine.store.recent_alerts(limit)?, &lang, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { limit, json } => {
            let engine = open_store_read_only(&cli.config)?;
            output::audit(&mut out, &engine.store.audit_log(limit)?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { to, by } => {
            let mut engine = open(&cli.config)?;
            let plan = engine.rollback(to, by.trim())?;
            output::plan_text(&mut out, &plan, &[])?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover { by } => {
            let by = by.trim();
            anyhow::ensure!(!by.is_empty(), "--by must name who recovers");
            let mut engine = open(&cli.config)?;
            let recovery = engine.recover(by)?;
            print_recovery(&mut out, &recovery)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let engine = open_store_read_only(&cli.config)?;
            output::status(&mut out, &engine, json)?;
            // A lost store shows as "nothing yet": say what the outputs tell.
            if let Ok(Some(found)) = engine.lost_store() {
                let files: Vec<String> = found.iter().map(|f| f.describe()).collect();
                writeln!(
                    anstream::stderr(),
                    "rocsync: the state store holds no plan, but outputs that rocsync wrote exist: {}; if the store was lost, run `rocsync recover --by NAME`",
                    files.join(", ")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
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

/// What `rocsync recover` read and recorded.
fn print_recovery(out: &mut impl Write, r: &crate::engine::Recovery) -> std::io::Result<()> {
    for f in &r.files {
        let unread = if f.unreadable > 0 { format!(", {} line(s) not read as rocsync writes them", f.unreadable) } else { String::new() };
        writeln!(out, "Read {} ({}): {} host(s){unread}.", f.describe(), f.kind, f.hosts.len())?;
    }
    writeln!(out, "Plan {} records the {} host(s) these outputs allow as the state in force (audited as store.recovered).", r.plan.id, r.hosts)?;
    if r.without_port > 0 {
        writeln!(out, "{} host(s) have no port in any output: recorded on tcp/443.", r.without_port)?;
    }
    if !r.disagreements.is_empty() {
        writeln!(out, "Hosts that not every list holds (edited by hand?), recorded as in force all the same; check them:")?;
        for (host, holders) in &r.disagreements {
            let holders: Vec<String> = holders.iter().map(|p| p.display().to_string()).collect();
            writeln!(out, "  {host}: only in {}", holders.join(", "))?;
        }
    }
    writeln!(out, "Next: `rocsync once` plans against this state; what it closes waits for approval (`rocsync plan list`).")
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

fn check_config(path: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match Config::from_path(path) {
        Ok(config) => {
            // As the units run it (ExecStartPre, as the service user, in its sandbox): every path
            // it must write or read and nftables, with the directive that gives what lacks.
            if let Err(e) = crate::config::access::check(&config, path) {
                writeln!(anstream::stderr(), "{e}")?;
                return Ok(ExitCode::FAILURE);
            }
            writeln!(
                out,
                "{}: OK (source {}, review mode {}, {} output file(s), state in {})",
                path.display(),
                config.source,
                config.mode,
                config.exports.len(),
                config.state_dir.display()
            )?;
            if crate::config::access::as_root() {
                writeln!(
                    out,
                    "Rights checked as root, who may write anywhere: the units check the service user's in ExecStartPre \
                     (`runuser -u rocsync -- rocsync check-config` checks them now)."
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let mut err = anstream::stderr();
            writeln!(err, "{e}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn inspect_annuaire(file: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match read_annuaire_file(file, 64 * 1024 * 1024) {
        Ok(answer) => {
            if json {
                output::inspect_json(out, &answer)?;
            } else {
                output::inspect_text(out, file, &answer)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

fn decide(config: &Path, args: DecideArgs, decision: Decision, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let (mut engine, whole) = open_store(config)?;
    let by = args.by.trim();
    anyhow::ensure!(!by.is_empty(), "--by must name who decides");
    // A running daemon applies approvals itself (it has the rights nftables needs), with the
    // configuration it loaded; from here, only with a whole one.
    let daemon = crate::daemon::running(&engine.config.state_dir);
    let apply = !args.no_apply && daemon.is_none() && whole;
    let plan = engine.decide(args.id, decision, by, args.comment.as_deref(), apply)?;
    let verb = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    writeln!(out, "Plan {} {verb} by {}; it is now {}.", plan.id, crate::text::Untrusted(by), plan.status)?;
    match (daemon, plan.status, args.no_apply) {
        (Some(pid), crate::plan::Status::Approved, false) => {
            writeln!(out, "The running rocsync (pid {pid}) applies it within seconds; `rocsync plan show {}` tells when.", plan.id)?;
        }
        (None, crate::plan::Status::Approved, false) if !whole => {
            writeln!(out, "Not applied: the configuration has problems (above). Fix it, then `rocsync apply {}`.", plan.id)?;
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Who runs the command, for the audit log when no `--by` is given.
fn login_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .map(|name| crate::text::excerpt(&name, 64))
        .unwrap_or_else(|| "unknown".into())
}
