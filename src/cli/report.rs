//! `rocsync report openings` and `rocsync report rpn`: which openings are used, and how far the
//! move to the national reverse proxy has come; and `rocsync plan --rpn-migration`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use crate::catalogue::Catalogue;
use crate::engine::Engine;
use crate::rpn::RpnReport;
use crate::usage::{DEFAULT_UNUSED_FOR, OpeningsReport};

#[derive(Debug, Subcommand)]
pub enum Report {
    /// Every opening in force: its AMCs and services, since when, when it was last used, the
    /// requests let through and blocked in the last 30 days; openings unused for
    /// --unused-for (default 90d) are flagged, never for longer than rocsync has counted.
    #[command(after_help = "Examples:\n  rocsync report openings --unused-for 180d\n  rocsync report openings --csv > openings.csv\n  rocsync report openings --json")]
    Openings {
        /// Flag the openings nothing went through for this long (at least 1d).
        #[arg(long, value_name = "DURATION", value_parser = unused_for)]
        unused_for: Option<Duration>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// For a spreadsheet (cells that a spreadsheet would run as a formula are quoted).
        #[arg(long)]
        csv: bool,
    },
    /// The move to the national reverse proxy (`[rpn]`): for each AMC, the direct requests since
    /// `rpn.switched_on` (how many, the last, from which client address) and whether its direct
    /// openings may close (no direct request for `rpn.quiet_period`).
    #[command(after_help = "Example:\n  rocsync report rpn\n\nThen: rocsync plan --rpn-migration")]
    Rpn {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Path, report: Report, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match report {
        Report::Openings { unused_for, json, csv } => {
            let engine = super::open_store_read_only(config)?;
            let applied = engine.store.applied()?;
            let rows = engine.store.usage_rows(0)?;
            let since = engine.store.counting_since()?;
            let report = crate::usage::openings(&applied.state, &rows, since, crate::usage::now(), unused_for.unwrap_or(DEFAULT_UNUSED_FOR));
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else if csv {
                openings_csv(&mut *out, &report)?;
            } else {
                openings_text(&mut *out, &report, unused_for.unwrap_or(DEFAULT_UNUSED_FOR))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Report::Rpn { json } => {
            let engine = super::open_read_only(config)?;
            let report = rpn_report(&engine)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                rpn_text(&mut *out, &report)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `rocsync plan --rpn-migration`: records the AMCs gone quiet as migrated, then plans from the
/// source as any pass does; the plan that closes their direct openings waits for approval,
/// whatever the mode.
pub fn rpn_migration(config: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut engine = super::open(config)?;
    let report = rpn_report(&engine)?;
    let closing = crate::rpn::closable(&report);
    if closing.is_empty() {
        writeln!(
            out,
            "No AMC has gone {} day(s) without a direct request since {}: nothing to close yet (`rocsync report rpn` shows who still goes direct).",
            report.quiet_period_days, report.switched_on
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let detail: Vec<String> = report
        .amcs
        .iter()
        .filter(|a| a.closable)
        .map(|a| format!("{} (last direct request: {})", a.amc, a.last_direct.as_deref().unwrap_or("none since the switch")))
        .collect();
    let detail = format!("direct openings closed for the RPN {}: {}", report.rpn_host, detail.join(", "));
    let by = super::login_name();
    engine.store.record_rpn_migration(&closing, &by, &detail, &crate::clock::now())?;
    let run = match engine.plan(None, false) {
        Ok(run) => run,
        Err(e) => {
            // No plan holds the closings: the migration is taken back, not left in force
            // without a plan to reject.
            engine.store.forget_unlinked_rpn_migration(&by, &format!("planning failed: {}", crate::error_chain(&e)), &crate::clock::now())?;
            return Err(super::source_step::<()>(Err(e)).unwrap_err());
        }
    };
    let mut linked = false;
    for plan in run.plans.iter().filter(|p| p.reasons.iter().any(|r| r.starts_with("RPN migration"))) {
        engine.store.link_rpn_migration(plan.id)?;
        linked = true;
    }
    if !linked {
        engine.store.forget_unlinked_rpn_migration(&by, "no plan closes the direct openings", &crate::clock::now())?;
    }
    super::output::once(&mut *out, &run, false)?;
    Ok(ExitCode::SUCCESS)
}

fn rpn_report(engine: &Engine) -> anyhow::Result<RpnReport> {
    let rpn = engine.config.rpn.clone().context("[rpn] is not enabled in the configuration: set enabled, host and switched_on")?;
    let cached = engine
        .store
        .latest_cached_answer()?
        .context("the store holds no annuaire answer yet: run `rocsync once` first")?;
    let answer = crate::sources::annuaire::parse(&cached.body, cached.content_type.as_deref())?;
    let catalogue = Catalogue::from_answer(&answer);
    let rows = engine.store.usage_rows(0)?;
    let since = engine.store.counting_since()?;
    Ok(crate::rpn::report(&catalogue, &rows, &rpn, crate::usage::now(), since, &engine.store.rpn_migrated()?))
}

/// `--unused-for`: a duration of at least a day (counts are kept per day; `0s` flagged an opening
/// used a minute ago).
fn unused_for(text: &str) -> Result<Duration, String> {
    let d = crate::config::duration(text)?;
    if d < Duration::from_secs(86_400) {
        return Err(format!("`{text}` is shorter than a day: requests are counted per day; write e.g. `30d`"));
    }
    Ok(d)
}

/// A cell a spreadsheet shows as text: one that starts like a formula (`=`, `+`, `-`, `@`, or
/// a tab or carriage return before one) is prefixed with `'`.
fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() }
}

fn openings_csv(out: &mut impl Write, report: &OpeningsReport) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["host", "wildcard", "ports", "amcs", "services", "in_force_since", "last_used", "requests_30d", "blocked_30d", "unused"])?;
    for o in &report.openings {
        let ports: Vec<String> = o.ports.iter().map(u16::to_string).collect();
        w.write_record([
            cell(&o.host),
            o.wildcard.to_string(),
            ports.join(" "),
            cell(&o.amcs.join(" ")),
            cell(&o.services.join(" ")),
            cell(o.in_force_since.as_deref().unwrap_or_default()),
            cell(o.last_used.as_deref().unwrap_or_default()),
            o.requests_30d.to_string(),
            o.blocked_30d.to_string(),
            o.unused.to_string(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn openings_text(out: &mut impl Write, report: &OpeningsReport, unused_for: Duration) -> std::io::Result<()> {
    match &report.since {
        Some(since) => writeln!(out, "{} opening(s) in force; requests counted since {since}.", report.openings.len())?,
        None => writeln!(out, "{} opening(s) in force; no request counted yet (the log watchers of `rocsync run` count them).", report.openings.len())?,
    }
    let unused = report.openings.iter().filter(|o| o.unused).count();
    if unused > 0 {
        writeln!(out, "{unused} unused for {} day(s) or more: candidates to question.", unused_for.as_secs() / 86_400)?;
    }
    writeln!(out)?;
    writeln!(out, "{:<44} {:<11} {:<21} {:>8} {:>8}  AMCs / services", "HOST", "PORTS", "LAST USED", "REQ 30D", "BLK 30D")?;
    for o in &report.openings {
        let ports: Vec<String> = o.ports.iter().map(u16::to_string).collect();
        let flag = if o.unused { "  UNUSED" } else { "" };
        writeln!(
            out,
            "{:<44} {:<11} {:<21} {:>8} {:>8}  {} / {}{flag}",
            o.host,
            ports.join(","),
            o.last_used.as_deref().unwrap_or("never"),
            o.requests_30d,
            o.blocked_30d,
            if o.amcs.is_empty() { "(configuration)".to_owned() } else { o.amcs.join(",") },
            crate::text::escaped(&o.services.join(","))
        )?;
    }
    Ok(())
}

fn rpn_text(out: &mut impl Write, report: &RpnReport) -> std::io::Result<()> {
    writeln!(
        out,
        "RPN {}: GAP re-pointed on {}; {} request(s) to the RPN since. An AMC's direct openings may close after {} day(s) without a direct request.",
        report.rpn_host, report.switched_on, report.rpn_requests, report.quiet_period_days
    )?;
    match &report.counting_since {
        Some(since) => writeln!(out, "Requests counted in the watched logs since {since}.")?,
        None => writeln!(
            out,
            "No request counted yet: `rocsync run` counts them in the logs of [watch]; until it has, no AMC can be called quiet."
        )?,
    }
    for a in &report.amcs {
        let state = if a.migrated {
            "migrated: direct openings closed".to_owned()
        } else if a.closable {
            "closable now (rocsync plan --rpn-migration)".to_owned()
        } else {
            format!("not before {}", a.closable_on)
        };
        writeln!(out)?;
        writeln!(out, "AMC {} {}: {state}", a.amc, crate::text::escaped(&a.name))?;
        writeln!(out, "  hosts: {}", a.hosts.join(", "))?;
        match &a.last_direct {
            None => writeln!(out, "  no direct request since the switch")?,
            Some(last) => {
                writeln!(out, "  {} direct request(s) since the switch, the last on {last}, from:", a.direct_requests)?;
                for c in &a.clients {
                    let client = if c.client.is_empty() { "(address not logged)" } else { c.client.as_str() };
                    writeln!(out, "    {client:<40} {:>8} request(s), last {}", c.requests, c.last_seen)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_look_like_formulas_are_quoted() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("idb.a.test"), "idb.a.test");
        let report = OpeningsReport {
            openings: vec![crate::usage::Opening {
                host: "idb.a.test".into(),
                wildcard: false,
                ports: vec![443, 8443],
                amcs: vec!["123456789".into()],
                services: vec!["=cmd|' /C calc'!A0".into()],
                in_force_since: None,
                last_used: None,
                requests_30d: 3,
                blocked_30d: 0,
                unused: false,
            }],
            since: None,
        };
        let mut text = Vec::new();
        openings_csv(&mut text, &report).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("host,wildcard,ports,amcs,services,"), "{text}");
        assert!(text.contains("idb.a.test,false,443 8443,123456789,'=cmd|' /C calc'!A0,,,3,0,false"), "{text}");
    }

    /// Service codes come from the annuaire: one with a comma, a quote or a newline must stay
    /// one cell, or the RSSI's spreadsheet shifts every column after it.
    #[test]
    fn csv_cells_with_commas_quotes_and_newlines_stay_one_cell() {
        let services = vec!["A,B".to_owned(), "say \"hi\"\nnext".to_owned()];
        let report = OpeningsReport {
            openings: vec![crate::usage::Opening {
                host: "*.api.a.test".into(),
                wildcard: true,
                ports: vec![443],
                amcs: vec!["123456789".into(), "234567891".into()],
                services: services.clone(),
                in_force_since: Some("2025-01-01T00:00:00Z".into()),
                last_used: None,
                requests_30d: 0,
                blocked_30d: 2,
                unused: false,
            }],
            since: None,
        };
        let mut text = Vec::new();
        openings_csv(&mut text, &report).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_slice());
        let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].len(), 10);
        assert_eq!(&records[0][0], "*.api.a.test");
        assert_eq!(&records[0][3], "123456789 234567891");
        assert_eq!(&records[0][4], services.join(" "));
        assert_eq!(&records[0][8], "2");
    }
}
