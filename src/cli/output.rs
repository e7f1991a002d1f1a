//! What the commands print: text for people (grouped by AMC, coloured on a terminal only, as
//! `anstream` strips the colours elsewhere) and stable JSON for tools.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;

use anstyle::{AnsiColor, Style};
use serde_json::{Value, json};

use crate::catalogue::{Catalogue, Entry};
use crate::alerts::Language;
use crate::engine::{Engine, PlanRun, Read};
use crate::host::Host;
use crate::plan::render::{self, Tone};
use crate::plan::{ChangeKind, HostDiff, Plan, Status};
use crate::sources::annuaire::Answer;
use crate::store::{AuditEntry, DecisionRecord, MailVerdict};

const BOLD: Style = Style::new().bold();
const ADD: Style = AnsiColor::Green.on_default();
const DEL: Style = AnsiColor::Red.on_default();
const MOD: Style = AnsiColor::Yellow.on_default();
const DIM: Style = Style::new().dimmed();

/// `tcp/443,8443`
fn ports(entry: &Entry) -> String {
    format!("tcp/{}", port_list(&entry.ports))
}

fn port_list(ports: &BTreeSet<u16>) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// The host object of the JSON outputs.
fn host_json(host: &Host, entry: &Entry) -> Value {
    json!({
        "host": host.as_str(),
        "wildcard": host.is_wildcard(),
        "ports": entry.ports,
        "amcs": entry.amcs.keys().map(|n| n.as_str()).collect::<Vec<_>>(),
        "services": entry.services(),
        "origins": entry.origins,
    })
}

fn counts(diff: &HostDiff) -> (usize, usize, usize) {
    render::counts(diff)
}

/// The diff grouped by AMC, as the e-mails show it too ([`render`]), coloured on a terminal.
fn write_diff(out: &mut impl Write, diff: &HostDiff) -> io::Result<()> {
    for (group, lines) in render::grouped(diff, &Language::En) {
        writeln!(out, "  {BOLD}{}{BOLD:#}", group.title(&Language::En))?;
        for line in lines {
            let style = match line.tone {
                Tone::Opens => ADD,
                Tone::Closes => DEL,
                Tone::Changes => MOD,
            };
            writeln!(out, "    {style}{}{style:#}", line.text)?;
        }
    }
    writeln!(out, "\n  {}", render::totals(diff, &Language::En))
}

fn status_style(status: Status) -> Style {
    match status {
        Status::Pending => MOD.bold(),
        Status::Ready | Status::Approved => BOLD,
        Status::Applied => ADD.bold(),
        Status::Rejected | Status::Superseded => DIM,
    }
}

fn write_plan(out: &mut impl Write, plan: &Plan, decisions: &[DecisionRecord]) -> io::Result<()> {
    let st = status_style(plan.status);
    let serial = plan.serial.map(|s| format!(", serial {s}")).unwrap_or_default();
    writeln!(out, "{BOLD}Plan {}{BOLD:#}  {st}{}{st:#}  from {}{serial}", plan.id, plan.status, plan.source)?;
    writeln!(out, "  {DIM}created {}, computed against {}{DIM:#}", plan.created, base_text(plan.base))?;
    writeln!(out)?;
    write_diff(out, &plan.diff)?;
    if plan.needs_approval {
        writeln!(out, "\n  Needs approval because:")?;
        for r in &plan.reasons {
            writeln!(out, "    - {r}")?;
        }
    }
    for d in decisions {
        let comment = d.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
        writeln!(out, "  {}d by {} at {}{comment}", d.decision, d.by, d.at)?;
    }
    if plan.status == Status::Pending {
        writeln!(out, "\n  To approve: rocsync approve {} --by NAME --comment TEXT", plan.id)?;
        writeln!(out, "  To reject:  rocsync reject {} --by NAME --comment TEXT", plan.id)?;
    } else if plan.status == Status::Ready || plan.status == Status::Approved {
        writeln!(out, "\n  To apply: rocsync apply {}", plan.id)?;
    }
    Ok(())
}

fn base_text(base: i64) -> String {
    if base == 0 { "the empty state".into() } else { format!("the state of plan {base}") }
}

pub fn plan_text(out: &mut impl Write, plan: &Plan, decisions: &[DecisionRecord]) -> io::Result<()> {
    write_plan(out, plan, decisions)
}

pub fn plan_json(out: &mut impl Write, plan: &Plan, decisions: &[DecisionRecord]) -> io::Result<()> {
    let hosts = |kind| -> Vec<Value> { plan.diff.of_kind(kind).map(|c| host_json(&c.host, c.entry())).collect() };
    let changed: Vec<Value> = plan
        .diff
        .of_kind(ChangeKind::Changed)
        .map(|c| {
            json!({
                "host": c.host.as_str(),
                "before": host_json(&c.host, c.before.as_ref().expect("changed")),
                "after": host_json(&c.host, c.after.as_ref().expect("changed")),
            })
        })
        .collect();
    let doc = json!({
        "id": plan.id,
        "status": plan.status,
        "needs_approval": plan.needs_approval,
        "reasons": plan.reasons,
        "added": hosts(ChangeKind::Added),
        "removed": hosts(ChangeKind::Removed),
        "changed": changed,
        "created": plan.created,
        "base": plan.base,
        "source": plan.source,
        "serial": plan.serial,
        "decisions": decisions,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc).map_err(io::Error::other)?)
}

/// The enforcement view: `host:port` lines that open (`+`) or close (`-`).
pub fn plan_diff(out: &mut impl Write, plan: &Plan) -> io::Result<()> {
    writeln!(out, "--- in force ({})", base_text(plan.base))?;
    writeln!(out, "+++ plan {}", plan.id)?;
    for change in &plan.diff.changes {
        for port in change.ports_removed() {
            writeln!(out, "{DEL}-{}:{port}{DEL:#}", change.host)?;
        }
        for port in change.ports_added() {
            writeln!(out, "{ADD}+{}:{port}{ADD:#}", change.host)?;
        }
    }
    Ok(())
}

pub fn plan_list(out: &mut impl Write, plans: &[Plan], json: bool) -> io::Result<()> {
    if json {
        let list: Vec<Value> = plans
            .iter()
            .map(|p| {
                let (a, r, c) = counts(&p.diff);
                json!({"id": p.id, "status": p.status, "created": p.created, "source": p.source, "serial": p.serial,
                       "needs_approval": p.needs_approval, "added": a, "removed": r, "changed": c})
            })
            .collect();
        return writeln!(out, "{}", serde_json::to_string_pretty(&list).map_err(io::Error::other)?);
    }
    if plans.is_empty() {
        return writeln!(out, "No plans yet: run `rocsync plan` or `rocsync once`.");
    }
    writeln!(out, "{BOLD}{:>5}  {:<10}  {:<20}  {:>13}  source{BOLD:#}", "ID", "STATUS", "CREATED", "+open -close ~")?;
    for p in plans {
        let (a, r, c) = counts(&p.diff);
        let st = status_style(p.status);
        let status = format!("{:<10}", p.status.as_str());
        writeln!(out, "{:>5}  {st}{status}{st:#}  {:<20}  {:>13}  {}", p.id, p.created, format!("+{a} -{r} ~{c}"), p.source)?;
    }
    Ok(())
}

/// The output of `once` and `plan`.
pub fn once(out: &mut impl Write, run: &PlanRun, dry_run: bool) -> io::Result<()> {
    let m = &run.mail;
    if m.total() > 0 {
        writeln!(
            out,
            "Notifications: {} used, {} rejected, {} without change, {} unreadable, {} already seen (rocsync notifications).",
            m.used, m.rejected, m.no_change, m.unreadable, m.duplicates
        )?;
    }
    let answer = &run.read.answer;
    let serial = answer.serial.map(|s| format!(", serial {s}")).unwrap_or_default();
    writeln!(
        out,
        "Read {} ({} answer{serial}): {} AMCs, {} hosts to allow, {} rejected value(s).",
        run.read.source,
        answer.format,
        answer.amcs.len(),
        run.read.desired.len(),
        answer.rejected.len()
    )?;
    for r in &answer.rejected {
        writeln!(out, "  {MOD}rejected{MOD:#} {} {:?}: {}", r.place, r.value, r.reason)?;
    }
    for w in &answer.warnings {
        writeln!(out, "  {MOD}warning{MOD:#} {w}")?;
    }
    if dry_run {
        if run.proposals.is_empty() {
            writeln!(out, "Nothing to change: what is in force ({}) matches the source.", base_text(run.applied.plan_id))?;
        }
        for (i, p) in run.proposals.iter().enumerate() {
            let verdict = if p.needs_approval { "would wait for approval" } else { "would be applied" };
            writeln!(out, "\n{BOLD}Plan (dry run {}){BOLD:#}  {verdict}", i + 1)?;
            write_diff(out, &p.diff)?;
            for r in &p.reasons {
                writeln!(out, "    - {r}")?;
            }
        }
        return writeln!(out, "\nDry run: nothing was stored or written.");
    }
    if run.plans.is_empty() {
        writeln!(out, "Nothing to change: what is in force ({}) matches the source.", base_text(run.applied.plan_id))?;
    }
    for plan in &run.plans {
        writeln!(out)?;
        write_plan(out, plan, &[])?;
    }
    if let Some(change) = &run.addresses {
        if !change.added.is_empty() || !change.removed.is_empty() {
            writeln!(out, "Addresses: {} added, {} dropped after the grace (rocsync resolve lists them).", change.added.len(), change.removed.len())?;
        }
    }
    for r in &run.repaired {
        writeln!(out, "{MOD}Repaired{MOD:#} {r}")?;
    }
    Ok(())
}

/// The output of `poll`.
pub fn poll(out: &mut impl Write, read: &Read, saved: Option<&Path>) -> io::Result<()> {
    match &read.fetch {
        Some(f) if f.status == 304 => writeln!(
            out,
            "GET {} → 304 Not Modified in {:.2} s (ETag {}): the last answer still holds.",
            read.source,
            f.elapsed.as_secs_f64(),
            f.etag.as_deref().unwrap_or("-")
        )?,
        Some(f) => writeln!(
            out,
            "GET {} → {} in {:.2} s: {} bytes, ETag {}.",
            read.source,
            f.status,
            f.elapsed.as_secs_f64(),
            f.bytes,
            f.etag.as_deref().unwrap_or("-")
        )?,
        None => writeln!(out, "Read {} ({} bytes).", read.source, read.body.len())?,
    }
    let a = &read.answer;
    writeln!(
        out,
        "{} answer, serial {}, generated {}: {} AMCs, {} hosts to allow, {} rejected value(s), {} warning(s).",
        a.format,
        a.serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        a.generated_at.as_deref().unwrap_or("-"),
        a.amcs.len(),
        read.desired.len(),
        a.rejected.len(),
        a.warnings.len()
    )?;
    for r in &a.rejected {
        writeln!(out, "  {MOD}rejected{MOD:#} {} {:?}: {}", r.place, r.value, r.reason)?;
    }
    if let Some(path) = saved {
        writeln!(out, "Saved to {}.", path.display())?;
    }
    Ok(())
}

pub fn status(out: &mut impl Write, engine: &Engine, json: bool) -> anyhow::Result<()> {
    let applied = engine.store.applied()?;
    let certificate = engine.client_certificate();
    let now_t = crate::clock::now_utc();
    let book = if engine.config.resolver.enabled { Some(engine.store.address_book()?) } else { None };
    let open = engine.store.open_plans()?;
    let (last, last_ok) = engine.store.last_source_reads()?;
    let drift = engine.drift()?;
    let wildcards = applied.state.entries.keys().filter(|h| h.is_wildcard()).count();
    let amcs: BTreeSet<_> = applied.state.entries.values().flat_map(|e| e.amcs.keys()).collect();
    if json {
        let doc = json!({
            "in_force": {"plan": applied.plan_id, "applied_at": applied.at, "hosts": applied.state.len(),
                          "wildcards": wildcards, "amcs": amcs.len()},
            "open_plans": open.iter().map(|p| json!({"id": p.id, "status": p.status, "needs_approval": p.needs_approval, "reasons": p.reasons})).collect::<Vec<_>>(),
            "last_source_read": last,
            "last_successful_read": last_ok,
            "mailboxes": engine.store.mailbox_reads()?.into_iter().map(|(read, last_ok)| json!({
                "source": read.source, "ok": read.ok, "at": read.at, "error": read.error, "last_ok": last_ok})).collect::<Vec<_>>(),
            "outputs": engine.config.exports.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
            "drift": drift,
            "resolver": book.as_ref().map(|b| {
                let a = b.addresses();
                json!({"hosts_resolved": a.len(), "addresses": a.values().map(|s| s.len()).sum::<usize>(),
                       "failures": b.failures().iter().map(|(h, e)| json!({"host": h.as_str(), "error": e})).collect::<Vec<_>>(),
                       "refused": b.refused().iter().map(|(h, a)| json!({"host": h.as_str(), "addresses": a})).collect::<Vec<_>>()})
            }),
            "client_certificate": match &certificate {
                None => Value::Null,
                Some(Ok(c)) => json!({"subject": c.subject, "issuer": c.issuer, "not_after": c.not_after.date().to_string(),
                                      "days_left": c.days_left(now_t)}),
                Some(Err(e)) => json!({"error": e}),
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    match applied.plan_id {
        0 => writeln!(out, "{BOLD}In force:{BOLD:#} nothing yet (no plan applied).")?,
        id => writeln!(
            out,
            "{BOLD}In force:{BOLD:#} plan {id}, applied {}: {} hosts ({wildcards} wildcards) for {} AMCs.",
            applied.at.as_deref().unwrap_or("?"),
            applied.state.len(),
            amcs.len()
        )?,
    }
    match &last {
        None => writeln!(out, "{BOLD}Last source read:{BOLD:#} never.")?,
        Some(r) if r.ok => writeln!(
            out,
            "{BOLD}Last source read:{BOLD:#} {} {}: OK, serial {}, {} hosts, {} rejected.",
            r.at,
            r.source,
            r.serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            r.hosts.unwrap_or(0),
            r.rejected.unwrap_or(0)
        )?,
        Some(r) => {
            writeln!(out, "{BOLD}Last source read:{BOLD:#} {} {}: {DEL}FAILED{DEL:#}: {}", r.at, r.source, r.error.as_deref().unwrap_or(""))?;
            match &last_ok {
                Some(ok) => writeln!(out, "  last successful read: {} (serial {})", ok.at, ok.serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()))?,
                None => writeln!(out, "  no successful read yet")?,
            }
        }
    }
    for (read, last_ok) in engine.store.mailbox_reads()? {
        match (&read.error, read.ok) {
            (None, true) => writeln!(out, "{BOLD}Notifications:{BOLD:#} {} read {}: OK.", read.source, read.at)?,
            (error, _) => writeln!(
                out,
                "{BOLD}Notifications:{BOLD:#} {} read {}: {DEL}FAILED{DEL:#}: {} (last good read: {}; the annuaire is read all the same)",
                read.source,
                read.at,
                error.as_deref().unwrap_or(""),
                last_ok.as_deref().unwrap_or("never")
            )?,
        }
    }
    if open.is_empty() {
        writeln!(out, "{BOLD}Open plans:{BOLD:#} none.")?;
    } else {
        writeln!(out, "{BOLD}Open plans:{BOLD:#}")?;
        for p in &open {
            let (a, r, c) = counts(&p.diff);
            let why = if p.needs_approval { format!(": {}", p.reasons.join("; ")) } else { String::new() };
            writeln!(out, "  plan {} {} (+{a} -{r} ~{c}){why}  → rocsync plan show {}", p.id, p.status, p.id)?;
        }
    }
    if let Some(b) = &book {
        let a = b.addresses();
        let failures = b.failures();
        writeln!(
            out,
            "{BOLD}Addresses:{BOLD:#} {} host(s) resolved, {} address(es){}",
            a.len(),
            a.values().map(|s| s.len()).sum::<usize>(),
            if failures.is_empty() { String::new() } else { format!(", {DEL}{} failing{DEL:#} (last addresses kept; rocsync resolve)", failures.len()) }
        )?;
        for (host, refused) in b.refused() {
            let list: Vec<String> = refused.iter().map(|ip| format!("{ip} ({})", crate::resolve::forbidden(*ip).unwrap_or("refused"))).collect();
            writeln!(out, "  {DEL}refused{DEL:#} {host} → {} (never opened; resolver.allow_networks)", list.join(", "))?;
        }
    }
    match &certificate {
        None => {}
        Some(Ok(c)) => {
            let days = c.days_left(now_t);
            let window = (engine.config.cert_expiry_warning.as_secs() / 86_400) as i64;
            let style = if days <= window { DEL } else { Style::new() };
            writeln!(out, "{BOLD}Client certificate:{BOLD:#} {} (issuer {})", c.subject, c.issuer)?;
            writeln!(out, "  {style}expires {} ({days} day(s) left){style:#}", c.not_after.date())?;
        }
        Some(Err(e)) => writeln!(out, "{BOLD}Client certificate:{BOLD:#} {DEL}unreadable{DEL:#}: {e}")?,
    }
    writeln!(out, "{BOLD}Outputs:{BOLD:#}")?;
    for f in &engine.config.exports {
        let path = f.path.display().to_string();
        match drift.iter().find(|d| d.starts_with(&path)) {
            Some(d) => writeln!(out, "  {DEL}{d}{DEL:#} (rocsync once rewrites it)")?,
            None => writeln!(out, "  {path}")?,
        }
    }
    Ok(())
}

/// `inspect annuaire --json`: the contract of issue 2, stable for tools.
pub fn inspect_json(out: &mut impl Write, answer: &Answer) -> io::Result<()> {
    let catalogue = Catalogue::from_answer(answer);
    let amcs: Vec<Value> = answer
        .amcs
        .iter()
        .map(|a| json!({"number": a.number.as_str(), "name": a.name, "state": a.state}))
        .collect();
    let hosts: Vec<Value> = catalogue
        .hosts
        .iter()
        .map(|(host, uses)| {
            let ports: BTreeSet<u16> = uses.values().flat_map(|u| u.ports.iter().copied()).collect();
            let services: BTreeSet<&str> = uses.values().flat_map(|u| u.services.iter().map(String::as_str)).collect();
            json!({"host": host.as_str(), "wildcard": host.is_wildcard(), "ports": ports,
                   "amcs": uses.keys().map(|n| n.as_str()).collect::<Vec<_>>(), "services": services})
        })
        .collect();
    let doc = json!({
        "format": answer.format,
        "serial": answer.serial,
        "generated_at": answer.generated_at,
        "amcs": amcs,
        "hosts": hosts,
        "rejected": answer.rejected.iter().map(|r| json!({"amc": r.amc, "value": r.value, "reason": r.reason, "place": r.place})).collect::<Vec<_>>(),
        "warnings": answer.warnings,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc).map_err(io::Error::other)?)
}

pub fn inspect_text(out: &mut impl Write, file: &Path, answer: &Answer) -> io::Result<()> {
    let catalogue = Catalogue::from_answer(answer);
    writeln!(
        out,
        "{BOLD}{}{BOLD:#}: {} answer, serial {}, generated {}",
        file.display(),
        answer.format,
        answer.serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        answer.generated_at.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "{} AMCs, {} distinct hosts, {} rejected value(s)\n", answer.amcs.len(), catalogue.hosts.len(), answer.rejected.len())?;
    for amc in &answer.amcs {
        writeln!(out, "{BOLD}{} ({}){BOLD:#}  {}", amc.name, amc.number, amc.state.as_str())?;
        for (host, uses) in &catalogue.hosts {
            let Some(u) = uses.get(&amc.number) else { continue };
            let services: Vec<&str> = u.services.iter().map(String::as_str).collect();
            let shared: Vec<&str> = uses.keys().filter(|n| **n != amc.number).map(|n| n.as_str()).collect();
            let shared = if shared.is_empty() { String::new() } else { format!("  {DIM}(also {}){DIM:#}", shared.join(", ")) };
            writeln!(out, "  {host:<40} tcp/{:<10} {}{shared}", port_list(&u.ports), services.join(" "))?;
        }
    }
    if !answer.rejected.is_empty() {
        writeln!(out, "\n{BOLD}Rejected{BOLD:#}")?;
        for r in &answer.rejected {
            writeln!(out, "  {MOD}{}{MOD:#} (AMC {}) {:?}: {}", r.place, r.amc.as_deref().unwrap_or("-"), r.value, r.reason)?;
        }
    }
    for w in &answer.warnings {
        writeln!(out, "{MOD}warning{MOD:#}: {w}")?;
    }
    Ok(())
}

pub fn audit(out: &mut impl Write, entries: &[AuditEntry], json: bool) -> io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(entries).map_err(io::Error::other)?);
    }
    for e in entries {
        let plan = e.plan_id.map(|p| format!("plan {p}")).unwrap_or_default();
        writeln!(out, "{}  {:<20} {:<18} {:<8} {}", e.at, e.actor, e.action, plan, e.detail)?;
    }
    Ok(())
}

/// `inspect mail`: the JSON of issue 3, stable for tools, or text.
pub fn inspect_mail(out: &mut impl Write, file: &Path, n: &crate::sources::mail::Notification, json: bool) -> io::Result<()> {
    if json {
        let changes: Vec<Value> = n
            .changes
            .iter()
            .map(|c| {
                json!({"action": c.action, "effective": c.effective, "amc": c.amc.as_str(), "name": c.name,
                       "host": c.host.as_str(), "wildcard": c.host.is_wildcard()})
            })
            .collect();
        let doc = json!({
            "message_id": n.message_id, "from": n.from, "subject": n.subject, "subject_matches": n.subject_matches,
            "dkim": n.dkim, "changes": changes, "rejected_lines": n.rejected_lines,
        });
        return writeln!(out, "{}", serde_json::to_string_pretty(&doc).map_err(io::Error::other)?);
    }
    writeln!(out, "{BOLD}{}{BOLD:#}: message {}", file.display(), n.message_id.as_deref().unwrap_or("(no Message-ID)"))?;
    writeln!(out, "  from {}, DKIM {:?}", n.from.as_deref().unwrap_or("(no sender)"), n.dkim)?;
    writeln!(out, "  subject {:?}{}", n.subject.as_deref().unwrap_or(""), if n.subject_matches { "" } else { " (names neither ouverture nor fermeture)" })?;
    if n.changes.is_empty() {
        writeln!(out, "  {MOD}no change found{MOD:#}")?;
    }
    for c in &n.changes {
        let (sign, style) = match c.action {
            crate::sources::mail::Action::Open => ('+', ADD),
            crate::sources::mail::Action::Close => ('-', DEL),
        };
        writeln!(out, "  {style}{sign} {:<40}{style:#} from {}  {} ({})", c.host, c.effective, c.name, c.amc)?;
    }
    for r in &n.rejected_lines {
        writeln!(out, "  {MOD}rejected{MOD:#} {}:{} {:?}: {}", r.part, r.line, r.text, r.reason)?;
    }
    Ok(())
}

/// `rocsync notifications`: every e-mail read, with what rocsync made of it.
pub fn alerts(out: &mut impl Write, rows: &[crate::store::QueuedAlert], lang: &Language, json: bool) -> io::Result<()> {
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|a| {
                let (subject, _) = a.alert.compose(lang, a.count, &a.first_seen, &a.last_seen);
                json!({"id": a.id, "kind": a.alert.kind(), "status": a.status, "subject": subject, "count": a.count,
                       "after_sent": a.after_sent, "first_seen": a.first_seen, "last_seen": a.last_seen, "attempts": a.attempts})
            })
            .collect();
        return writeln!(out, "{}", serde_json::to_string_pretty(&list).map_err(io::Error::other)?);
    }
    if rows.is_empty() {
        return writeln!(out, "No alert yet (alerts are raised by `rocsync run`).");
    }
    for a in rows {
        let (subject, _) = a.alert.compose(lang, a.count, &a.first_seen, &a.last_seen);
        let more = if a.after_sent > 0 { format!(", {} more since sent", a.after_sent) } else { String::new() };
        writeln!(out, "{:>5}  {:<9}  {}×{more}  {subject}", a.id, a.status, a.count)?;
        if a.attempts > 0 && a.status == "queued" {
            writeln!(out, "       {} failed attempt(s); retried automatically", a.attempts)?;
        }
    }
    Ok(())
}

pub fn notifications(out: &mut impl Write, rows: &[crate::store::NotificationRow], json: bool) -> io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string_pretty(rows).map_err(io::Error::other)?);
    }
    if rows.is_empty() {
        return writeln!(out, "No notification read yet.");
    }
    for r in rows {
        let style = match r.verdict {
            MailVerdict::Used => ADD,
            MailVerdict::NoChange => MOD,
            MailVerdict::Rejected | MailVerdict::Unreadable => DEL,
        };
        let changes = r.changes.as_array().map(Vec::len).unwrap_or(0);
        let bad = r.rejected_lines.as_array().map(Vec::len).unwrap_or(0);
        writeln!(
            out,
            "{}  {style}{:<10}{style:#} {}  from {}  {changes} change(s), {bad} rejected line(s){}",
            r.received_at,
            r.verdict,
            r.key,
            r.sender.as_deref().unwrap_or("-"),
            r.reason.as_deref().map(|x| format!(": {x}")).unwrap_or_default()
        )?;
        // A Maildir file name is chosen by whoever delivers: escaped like any outside text.
        writeln!(out, "    {DIM}{} — {}{DIM:#}", crate::text::Untrusted(&r.origin), crate::text::Untrusted(r.subject.as_deref().unwrap_or("")))?;
        for c in r.changes.as_array().into_iter().flatten() {
            let word = if c["action"] == "open" { "opening" } else { "closing" };
            writeln!(
                out,
                "    {word} of {} from {} for {} ({})",
                c["host"].as_str().unwrap_or("?"),
                c["effective"].as_str().unwrap_or("?"),
                c["name"].as_str().unwrap_or("?"),
                c["amc"].as_str().unwrap_or("?")
            )?;
        }
    }
    Ok(())
}

/// `rocsync resolve`: each host in force and its addresses.
pub fn resolved(out: &mut impl Write, state: &crate::catalogue::State, book: &crate::resolve::AddressBook, json: bool) -> io::Result<()> {
    let addresses = book.addresses();
    let failures: BTreeMap<&Host, &str> = book.failures().into_iter().collect();
    if json {
        let hosts: Vec<Value> = state
            .entries
            .iter()
            .map(|(h, e)| {
                json!({"host": h.as_str(), "wildcard": h.is_wildcard(), "ports": e.ports,
                       "addresses": addresses.get(h).map(|a| a.iter().map(|ip| ip.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
                       "error": failures.get(h)})
            })
            .collect();
        return writeln!(out, "{}", serde_json::to_string_pretty(&json!({"hosts": hosts})).map_err(io::Error::other)?);
    }
    if state.is_empty() {
        return writeln!(out, "Nothing in force yet.");
    }
    for (host, entry) in &state.entries {
        let note = if host.is_wildcard() {
            format!("{DIM}(a wildcard has no address: allow it through the proxy export){DIM:#}")
        } else if let Some(e) = failures.get(host) {
            format!("{DEL}resolution failed: {e}{DEL:#}")
        } else {
            match addresses.get(host) {
                Some(a) => a.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", "),
                None => format!("{MOD}no address{MOD:#}"),
            }
        };
        writeln!(out, "{host:<40} {:<14} {note}", ports(entry))?;
    }
    Ok(())
}

/// `inspect log`'s output, written as the events come (one JSON object per event line in
/// `--json`), then the counts: nothing grows with the log but the output itself.
pub struct LogReport<'a, W: Write> {
    out: &'a mut W,
    catalogue: &'a Catalogue,
    json: bool,
    events: usize,
}

impl<'a, W: Write> LogReport<'a, W> {
    pub fn start(out: &'a mut W, catalogue: &'a Catalogue, json: bool) -> io::Result<Self> {
        if json {
            write!(out, "{{\"events\": [")?;
        }
        Ok(LogReport { out, catalogue, json, events: 0 })
    }

    pub fn event(&mut self, e: &crate::watch::Event) -> io::Result<()> {
        self.events += 1;
        let out = &mut *self.out;
        if self.json {
            let comma = if self.events > 1 { "," } else { "" };
            return write!(out, "{comma}\n  {}", serde_json::to_string(e).map_err(io::Error::other)?);
        }
        let name = |n: &str| {
            crate::amc::AmcNumber::parse(n)
                .ok()
                .and_then(|k| self.catalogue.amcs.get(&k))
                .map(|a| format!("{} ({n})", crate::text::label(&a.name)))
                .unwrap_or_else(|| crate::text::escaped(n))
        };
        let target = match (&e.host, e.ip) {
            (Some(h), _) => h.clone(),
            (None, Some(ip)) => format!("{ip} (no known host)"),
            (None, None) => "?".into(),
        };
        let port = e.port.map(|p| format!(":{p}")).unwrap_or_default();
        let client = e.client.map(|c| c.to_string()).unwrap_or_else(|| "?".into());
        let services: Vec<String> =
            e.services.iter().map(|s| if s == "IDB" { format!("{DEL}IDB{DEL:#}") } else { s.clone() }).collect();
        // Squid writes seconds since the epoch; show a date.
        let time = e
            .time
            .parse::<f64>()
            .ok()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| e.time.clone());
        writeln!(out, "{time}  {client} → {target}{port}  {}", services.join(" "))?;
        let amcs: Vec<String> = e.amcs.iter().map(|n| name(n)).collect();
        let hint = if e.host.is_none() {
            "an address rocsync cannot tie to an AMC host"
        } else if e.in_force {
            "allowed by what is in force, yet blocked: the enforcement is broken"
        } else {
            "listed by the annuaire, not in force: see rocsync status for the plan to approve"
        };
        if !amcs.is_empty() {
            writeln!(out, "    {}", amcs.join(", "))?;
        }
        writeln!(out, "    {DIM}{hint}{DIM:#}")
    }

    /// The counts of `report` (whose events were written one by one).
    pub fn finish(self, report: &crate::watch::Report) -> io::Result<()> {
        let out = self.out;
        if self.json {
            let rejected = serde_json::to_string(&report.rejected).map_err(io::Error::other)?;
            return writeln!(
                out,
                "{}],\n  \"other_denied\": {},\n  \"skipped_lines\": {},\n  \"rejected_lines\": {},\n  \"rejected\": {rejected}\n}}",
                if self.events > 0 { "\n" } else { "" },
                report.other_denied,
                report.skipped_lines,
                report.rejected_lines,
            );
        }
        writeln!(out, "{} blocked AMC request(s), {} other denied, {} line(s) skipped.", self.events, report.other_denied, report.skipped_lines)?;
        if report.rejected_lines > 0 {
            let named: Vec<String> = report
                .rejected
                .iter()
                .map(|r| match r.reason {
                    crate::watch::read::Reject::TooLong => format!("{} (longer than {} bytes)", r.line, crate::watch::read::MAX_LINE),
                    crate::watch::read::Reject::NotUtf8 => format!("{} (not UTF-8)", r.line),
                })
                .collect();
            let more = if report.rejected_lines > named.len() { ", …" } else { "" };
            writeln!(out, "{DEL}{} line(s) rejected, not read:{DEL:#} {}{more}", report.rejected_lines, named.join(", "))?;
        }
        Ok(())
    }
}
