//! One function per command: what it opens, what it asks the engine or the store, what it
//! prints, and its exit status. [`super::run`] only dispatches to them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{
    Cli, DecideArgs, EXIT_BAD_INPUT, LogKind, ShowFormat, login_name, man, open, open_read_only, open_store, open_store_read_only,
    output, refuse_root_on_foreign_state, source_step,
};
use crate::config::Config;
use crate::sources::read_annuaire_file;
use crate::store::Decision;

/// `rocsync run`: the daemon, until SIGTERM.
pub(super) fn run_daemon(config: &Path) -> anyhow::Result<ExitCode> {
    refuse_root_on_foreign_state(&Config::from_path(config)?.state_dir)?;
    crate::daemon::run_with_signals(config)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync once`: one reconcile pass. Fails when a mailbox could not be read, even though the
/// annuaire was read and applied.
pub(super) fn once(config: &Path, dry_run: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut engine = open(config)?;
    let run = source_step(engine.once(dry_run))?;
    output::once(out, &run, dry_run)?;
    // The annuaire was read and applied; a mailbox that failed still fails the command.
    for e in &run.mail.errors {
        writeln!(anstream::stderr(), "rocsync: the notifications could not be read ({e}); the annuaire was read all the same")?;
    }
    Ok(if run.mail.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `rocsync poll`: one read of the annuaire, without planning.
pub(super) fn poll(config: &Path, force: bool, save: Option<PathBuf>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut engine = open(config)?;
    let read = source_step(engine.read_source_with(None, force))?;
    if let Some(path) = &save {
        std::fs::write(path, &read.body).with_context(|| format!("cannot write {}", path.display()))?;
    }
    output::poll(out, &read, save.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync plan [--source FILE]`: the plans from the source, stored, nothing applied.
pub(super) fn plan(config: &Path, source: Option<&Path>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut engine = open(config)?;
    let run = source_step(engine.plan(source, false))?;
    output::once(out, &run, false)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync plan list`: the open plans and the last 20 others (every plan with `--all`).
pub(super) fn plan_list(config: &Path, all: bool, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_store_read_only(config)?;
    let limit = if all { usize::MAX >> 1 } else { 20 };
    let mut plans = engine.store.plans(limit)?;
    if !all {
        let open = engine.store.open_plans()?;
        plans.retain(|p| !open.iter().any(|o| o.id == p.id));
        plans.extend(open);
        plans.sort_by_key(|p| std::cmp::Reverse(p.id));
    }
    output::plan_list(out, &plans, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync plan show ID`: one plan in the format asked for.
pub(super) fn plan_show(config: &Path, id: i64, format: ShowFormat, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_store_read_only(config)?;
    let plan = engine.store.plan(id)?;
    let decisions = engine.store.decisions(id)?;
    match format {
        ShowFormat::Text => output::plan_text(out, &plan, &decisions)?,
        ShowFormat::Json => output::plan_json(out, &plan, &decisions)?,
        ShowFormat::Diff => output::plan_diff(out, &plan)?,
        ShowFormat::Nft => write!(out, "{}", engine.plan_nft(&plan)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `rocsync approve` and `rocsync reject`.
pub(super) fn decide(config: &Path, args: DecideArgs, decision: Decision, out: &mut impl Write) -> anyhow::Result<ExitCode> {
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

/// `rocsync apply ID`: the plan and the open plans it builds on.
pub(super) fn apply(config: &Path, id: i64, by: Option<String>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut engine = open(config)?;
    let by = by.map(|b| crate::text::excerpt(&b, 120)).unwrap_or_else(login_name);
    for plan in engine.apply(id, &by)? {
        writeln!(out, "Plan {} applied.", plan.id)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `rocsync resolve`: the hosts in force resolved once, as the nftables sets would hold them.
pub(super) fn resolve(config: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_read_only(config)?;
    let applied = engine.store.applied()?;
    let r = &engine.config.resolver;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let book = runtime.block_on(async {
        let resolver = crate::resolve::DnsResolver::new(&r.servers, r.timeout, r.concurrency)?;
        let mut book = crate::resolve::AddressBook::default();
        book.track(applied.state.entries.keys(), crate::clock::now_millis());
        resolver.refresh(&mut book, &r.policy).await;
        Ok::<_, anyhow::Error>(book)
    })?;
    output::resolved(out, &applied.state, &book, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync notifications`: the e-mails read and their verdicts.
pub(super) fn notifications(config: &Path, limit: usize, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_store_read_only(config)?;
    output::notifications(out, &engine.store.notifications(limit)?, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync alerts`: the alert queue, newest first.
pub(super) fn alerts(config: &Path, limit: usize, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_store_read_only(config)?;
    let lang = engine.config.alerts.language.clone();
    output::alerts(out, &engine.store.recent_alerts(limit)?, &lang, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync audit`: the newest entries of the audit log.
pub(super) fn audit(config: &Path, limit: usize, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_store_read_only(config)?;
    output::audit(out, &engine.store.audit_log(limit)?, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync rollback`: a plan back to an earlier applied state, waiting for approval.
pub(super) fn rollback(config: &Path, to: Option<i64>, by: &str, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut engine = open(config)?;
    let plan = engine.rollback(to, by.trim())?;
    output::plan_text(out, &plan, &[])?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync recover`: what the outputs hold recorded as the state in force, after the store
/// was lost.
pub(super) fn recover(config: &Path, by: &str, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let by = by.trim();
    anyhow::ensure!(!by.is_empty(), "--by must name who recovers");
    let mut engine = open(config)?;
    let recovery = engine.recover(by)?;
    print_recovery(out, &recovery)?;
    Ok(ExitCode::SUCCESS)
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

/// `rocsync status`: what is in force, what waits, the sources' health; on stderr, a store
/// that looks lost.
pub(super) fn status(config: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let engine = open_store_read_only(config)?;
    output::status(out, &engine, json)?;
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

/// `rocsync check-config`: every problem of the file, then the rights the units check.
pub(super) fn check_config(path: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
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

/// `rocsync man`: the man page, in roff.
pub(super) fn man_page(out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut page: Vec<u8> = Vec::new();
    man::render(&mut page)?;
    out.write_all(&page)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync completions SHELL`.
pub(super) fn completions(shell: clap_complete::Shell, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "rocsync", out);
    Ok(ExitCode::SUCCESS)
}

/// `rocsync inspect annuaire FILE`: exit status 2 when it is not an annuaire answer.
pub(super) fn inspect_annuaire(file: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
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

/// `rocsync inspect log FILE --kind KIND`: blocked requests to AMC services in a log.
pub(super) fn inspect_log(
    config: &Path,
    file: PathBuf,
    kind: LogKind,
    annuaire: Option<PathBuf>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?.is_file(),
        "{} is not a regular file",
        file.display()
    );
    let log = std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
    // The catalogue: the file given, or the last good answer the store kept; what is
    // in force: the store's, when there is a configuration to find it.
    let engine = if annuaire.is_none() || config.exists() { Some(open_store_read_only(config)?) } else { None };
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
    // Streamed, and only the lines that can be a denial parsed: memory stays flat whatever the
    // size of the log, and events are written as they are found.
    let parser = match kind {
        LogKind::Squid => crate::watch::read::LogParser::squid(crate::watch::read::Scope::Denials),
        LogKind::Nft => crate::watch::read::LogParser::nft(&prefix, crate::watch::read::Scope::Denials),
    };
    let mut report = output::LogReport::start(out, &catalogue, json)?;
    let counts = correlator.read_from(log, &parser, |e| report.event(&e)).with_context(|| file.display().to_string())?;
    report.finish(&counts)?;
    Ok(ExitCode::SUCCESS)
}

/// `rocsync inspect mail FILE`: exit status 2 when it is not an e-mail.
pub(super) fn inspect_mail(config: &Path, file: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    // Judged as the passes judge it: with the configuration's limit and trusted server.
    let notifications = if config.exists() { open_read_only(config).ok().map(|e| e.config.notifications) } else { None };
    let limit = notifications.as_ref().map_or(4 * 1024 * 1024, |n| n.max_message_bytes);
    let raw = crate::sources::read_limited(file, limit)?;
    let trusted = notifications.as_ref().and_then(|n| n.trusted_authserv_id.as_deref());
    match crate::sources::mail::parse(&raw, trusted) {
        Ok(n) => {
            output::inspect_mail(out, file, &n, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            writeln!(anstream::stderr(), "rocsync: {}: {e}", file.display())?;
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}
