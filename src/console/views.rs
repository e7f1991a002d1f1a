//! What each page shows, gathered from the store and said in the page's language; rendered by
//! the askama templates under `templates/console/`, which escape every value (AMC names,
//! hosts, mail subjects come from outside).

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;

use super::labels::Labels;
use crate::alerts::Alert;
use crate::amc::{AmcNumber, AmcState};
use crate::catalogue::Catalogue;
use crate::alerts::Language;
use crate::engine::Engine;
use crate::plan::render::{self, Group, Tone};
use crate::plan::{Plan, Status};
use crate::clock::now_millis;
use crate::store::{MailVerdict, NotificationRow, QueuedAlert, SourceRead, StoreError};

const DAY_MS: u64 = 86_400_000;

/// The French text or the English one.
fn tr(fr: bool, french: String, english: String) -> String {
    if fr { french } else { english }
}

/// What every page but the login page shows around its content.
pub struct Head {
    pub t: &'static Labels,
    pub lang: &'static str,
    pub title: String,
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub may_decide: bool,
    /// The menu entry to mark as the current page.
    pub section: &'static str,
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub t: &'static Labels,
    pub lang: &'static str,
    /// Why the last try failed; empty on the first visit.
    pub message: String,
    pub username: String,
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub struct MessagePage {
    pub t: &'static Labels,
    pub lang: &'static str,
    pub text: String,
    pub back: String,
}

/// A plan in a list.
pub struct PlanRow {
    pub id: i64,
    pub status: &'static str,
    /// The status as stored, for the row's class.
    pub tone: &'static str,
    pub created: String,
    pub source: String,
    pub opens: usize,
    pub closes: usize,
    pub changes: usize,
    pub why: String,
}

/// A blocked-request alert.
pub struct BlockedRow {
    pub amc: String,
    pub target: String,
    pub services: String,
    pub idb: bool,
    pub count: u64,
    pub last_seen: String,
    pub state: String,
    /// The plan that would open the host; 0 when none.
    pub plan: i64,
}

pub struct ReadRow {
    pub what: &'static str,
    pub known: bool,
    pub at: String,
    pub source: String,
    pub ok: bool,
    pub detail: String,
}

pub struct CertRow {
    pub subject: String,
    pub not_after: String,
    pub days_left: i64,
    pub warn: bool,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
pub struct DashboardPage {
    pub head: Head,
    pub in_force: String,
    pub reads: Vec<ReadRow>,
    pub certificate: Option<CertRow>,
    pub certificate_error: String,
    pub has_certificate_source: bool,
    pub waiting: Vec<PlanRow>,
    pub blocked: Vec<BlockedRow>,
    pub blocked_note: String,
}

#[derive(Template)]
#[template(path = "console/plans.html")]
pub struct PlansPage {
    pub head: Head,
    pub plans: Vec<PlanRow>,
}

pub struct LineView {
    pub tone: &'static str,
    pub text: String,
}

pub struct GroupView {
    pub title: String,
    pub lines: Vec<LineView>,
}

pub struct AddressRow {
    pub host: String,
    pub addresses: String,
}

pub struct DecisionRow {
    pub decision: String,
    pub by: String,
    pub at: String,
    pub comment: String,
}

#[derive(Template)]
#[template(path = "console/plan.html")]
pub struct PlanPage {
    pub head: Head,
    pub id: i64,
    pub status: &'static str,
    pub tone: &'static str,
    pub created: String,
    pub source: String,
    pub base: String,
    /// Said first when the plan closes much (the mass-removal guard speaks); else empty.
    pub warning: String,
    pub reasons: Vec<String>,
    pub groups: Vec<GroupView>,
    pub totals: String,
    pub addresses: Vec<AddressRow>,
    pub decisions: Vec<DecisionRow>,
    /// Whether the plan may still be approved or rejected.
    pub open: bool,
}

pub struct HostRow {
    pub host: String,
    pub ports: String,
    pub services: String,
    pub since: String,
    pub in_force: bool,
}

pub struct PendingRow {
    pub plan: i64,
    pub status: &'static str,
    pub tone: &'static str,
    pub text: String,
}

pub struct NoteRow {
    pub received_at: String,
    pub verdict: &'static str,
    pub tone: &'static str,
    pub sender: String,
    pub subject: String,
    pub reason: String,
    pub changes: Vec<String>,
}

pub struct AmcMatch {
    pub number: String,
    pub name: String,
    pub state: String,
}

pub struct AmcDetail {
    pub number: String,
    pub name: String,
    pub state: String,
    pub opening: String,
    pub since: String,
    pub hosts: Vec<HostRow>,
    pub pending: Vec<PendingRow>,
    pub notifications: Vec<NoteRow>,
    pub blocked: Vec<BlockedRow>,
}

#[derive(Template)]
#[template(path = "console/amc.html")]
pub struct AmcPage {
    pub head: Head,
    pub query: String,
    pub searched: bool,
    pub matches: Vec<AmcMatch>,
    pub detail: Option<AmcDetail>,
}

#[derive(Template)]
#[template(path = "console/notifications.html")]
pub struct NotificationsPage {
    pub head: Head,
    pub rows: Vec<NoteRow>,
}

pub struct AlertRow {
    pub id: i64,
    pub status: &'static str,
    pub kind: &'static str,
    pub subject: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "console/alerts.html")]
pub struct AlertsPage {
    pub head: Head,
    pub rows: Vec<AlertRow>,
}

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub plan: i64,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct AuditPage {
    pub head: Head,
    pub rows: Vec<AuditRow>,
}

/// A plan's status in words.
pub fn status_label(status: Status, lang: &Language) -> &'static str {
    match (status, lang) {
        (Status::Pending, Language::Fr) => "en attente d'approbation",
        (Status::Ready, Language::Fr) => "prêt",
        (Status::Approved, Language::Fr) => "approuvé",
        (Status::Applied, Language::Fr) => "appliqué",
        (Status::Rejected, Language::Fr) => "rejeté",
        (Status::Superseded, Language::Fr) => "remplacé",
        (Status::Pending, Language::En) => "waiting for approval",
        (Status::Ready, Language::En) => "ready",
        (Status::Approved, Language::En) => "approved",
        (Status::Applied, Language::En) => "applied",
        (Status::Rejected, Language::En) => "rejected",
        (Status::Superseded, Language::En) => "superseded",
    }
}

fn tone(tone: Tone) -> &'static str {
    match tone {
        Tone::Opens => "opens",
        Tone::Closes => "closes",
        Tone::Changes => "changes",
    }
}

fn plan_row(plan: &Plan, lang: &Language) -> PlanRow {
    let (opens, closes, changes) = render::counts(&plan.diff);
    let why = if plan.status == Status::Pending {
        plan.reasons.iter().map(|r| crate::plan::reason_in(r, lang)).collect::<Vec<_>>().join(" ; ")
    } else {
        String::new()
    };
    PlanRow {
        id: plan.id,
        status: status_label(plan.status, lang),
        tone: plan.status.as_str(),
        created: plan.created.clone(),
        source: plan.source.clone(),
        opens,
        closes,
        changes,
        why,
    }
}

/// Whether `text` is the AMC number `number` (leading zeros aside).
fn is_number(text: &str, number: &AmcNumber) -> bool {
    AmcNumber::parse(text).ok().as_ref() == Some(number)
}

/// The blocked-request alerts of `alerts` (of `only` AMC when given), IDB first, then by AMC.
fn blocked_rows(alerts: &[QueuedAlert], lang: &Language, only: Option<&AmcNumber>) -> Vec<BlockedRow> {
    let fr = *lang == Language::Fr;
    let mut rows: Vec<BlockedRow> = alerts
        .iter()
        .filter_map(|queued| {
            let Alert::Blocked { host, ip, port, amcs, services, idb, in_force, pending_plan, .. } = &queued.alert else { return None };
            if let Some(number) = only {
                if !amcs.iter().any(|a| is_number(&a.number, number)) {
                    return None;
                }
            }
            let amc = if amcs.is_empty() {
                "?".to_owned()
            } else {
                amcs.iter().map(|a| format!("{} ({})", a.name, a.number)).collect::<Vec<_>>().join(", ")
            };
            let mut target = host.clone().or_else(|| ip.clone()).unwrap_or_else(|| "?".into());
            if let Some(p) = port {
                target = format!("{target}:{p}");
            }
            let state = match (*in_force, pending_plan) {
                (true, _) => tr(fr, "autorisé et pourtant bloqué : le filtrage ne correspond plus".into(), "allowed yet blocked: enforcement no longer matches".into()),
                (false, Some(p)) => tr(fr, format!("le plan {p} l'ouvrirait"), format!("plan {p} would open it")),
                (false, None) => tr(fr, "non autorisé".into(), "not allowed".into()),
            };
            Some(BlockedRow {
                amc,
                target,
                services: services.join(" "),
                idb: *idb,
                count: queued.count + queued.after_sent,
                last_seen: queued.last_seen.clone(),
                state,
                plan: pending_plan.unwrap_or(0),
            })
        })
        .collect();
    rows.sort_by(|a, b| b.idb.cmp(&a.idb).then_with(|| a.amc.cmp(&b.amc)).then_with(|| b.last_seen.cmp(&a.last_seen)));
    rows
}

fn read_row(what: &'static str, read: Option<&SourceRead>, fr: bool) -> ReadRow {
    let Some(r) = read else {
        return ReadRow { what, known: false, at: String::new(), source: String::new(), ok: false, detail: tr(fr, "jamais".into(), "never".into()) };
    };
    let detail = if r.ok {
        let serial = r.serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let (hosts, rejected) = (r.hosts.unwrap_or(0), r.rejected.unwrap_or(0));
        tr(
            fr,
            format!("série {serial}, {hosts} hôte(s), {rejected} valeur(s) rejetée(s)"),
            format!("serial {serial}, {hosts} host(s), {rejected} rejected value(s)"),
        )
    } else {
        r.error.clone().unwrap_or_default()
    };
    ReadRow { what, known: true, at: r.at.clone(), source: r.source.clone(), ok: r.ok, detail }
}

pub fn dashboard(engine: &Engine, head: Head, lang: &Language) -> Result<DashboardPage, StoreError> {
    let fr = *lang == Language::Fr;
    let applied = engine.store.applied()?;
    let amcs: BTreeSet<&AmcNumber> = applied.state.entries.values().flat_map(|e| e.amcs.keys()).collect();
    let (hosts, at) = (applied.state.len(), applied.at.clone().unwrap_or_default());
    let in_force = match applied.plan_id {
        0 => tr(fr, "Rien encore : aucun plan n'a été appliqué.".into(), "Nothing yet: no plan was applied.".into()),
        id => tr(
            fr,
            format!("Plan {id}, appliqué le {at} : {hosts} hôte(s) autorisé(s) pour {} AMC.", amcs.len()),
            format!("Plan {id}, applied {at}: {hosts} host(s) allowed for {} AMC(s).", amcs.len()),
        ),
    };
    let (last, last_ok) = engine.store.last_source_reads()?;
    let reads = vec![read_row(head.t.last_read, last.as_ref(), fr), read_row(head.t.last_good_read, last_ok.as_ref(), fr)];
    let certificate = engine.client_certificate();
    let has_certificate_source = certificate.is_some();
    let (certificate, certificate_error) = match certificate {
        None => (None, String::new()),
        Some(Ok(c)) => {
            let days_left = c.days_left(crate::clock::now_utc());
            let window = (engine.config.cert_expiry_warning.as_secs() / 86_400) as i64;
            let row = CertRow { subject: c.subject.clone(), not_after: c.not_after.date().to_string(), days_left, warn: days_left <= window };
            (Some(row), String::new())
        }
        Some(Err(e)) => (None, e),
    };
    let waiting = engine.store.open_plans()?.iter().filter(|p| p.status == Status::Pending).map(|p| plan_row(p, lang)).collect();
    let blocked = blocked_rows(&engine.store.blocked_alerts_since(now_millis().saturating_sub(DAY_MS))?, lang, None);
    let blocked_note = if engine.config.alerts.enabled {
        String::new()
    } else {
        tr(
            fr,
            "Les alertes sont désactivées ([alerts] enabled = false) : les requêtes bloquées ne sont pas enregistrées.".into(),
            "Alerts are off ([alerts] enabled = false): blocked requests are not recorded.".into(),
        )
    };
    Ok(DashboardPage { head, in_force, reads, certificate, certificate_error, has_certificate_source, waiting, blocked, blocked_note })
}

pub fn plans(engine: &Engine, head: Head, lang: &Language) -> Result<PlansPage, StoreError> {
    let mut plans = engine.store.plans(50)?;
    let open = engine.store.open_plans()?;
    plans.retain(|p| !open.iter().any(|o| o.id == p.id));
    plans.extend(open);
    plans.sort_by_key(|p| std::cmp::Reverse(p.id));
    Ok(PlansPage { head, plans: plans.iter().map(|p| plan_row(p, lang)).collect() })
}

pub fn plan(engine: &Engine, head: Head, id: i64, lang: &Language) -> Result<PlanPage, StoreError> {
    let fr = *lang == Language::Fr;
    let plan = engine.store.plan(id)?;
    let in_force = engine.store.applied()?.state.len();
    let closes = plan.diff.closings();
    let warning = if plan.status.is_open() && !engine.config.guard.check(in_force, &plan.diff).is_empty() {
        let percent = (closes * 100).checked_div(in_force).unwrap_or(100);
        tr(
            fr,
            format!("ATTENTION : ce plan ferme {closes} des {in_force} hôtes en vigueur ({percent} %). Un annuaire vidé ou une réponse erronée donne ce résultat : ne l'approuver qu'après avoir vérifié auprès de l'annuaire ou des AMC concernées."),
            format!("WARNING: this plan closes {closes} of the {in_force} hosts in force ({percent}%). An emptied annuaire or a wrong answer gives this: approve it only after checking with the annuaire or the AMCs concerned."),
        )
    } else {
        String::new()
    };
    let groups = render::grouped(&plan.diff, lang)
        .into_iter()
        .map(|(group, lines)| GroupView {
            title: group.title(lang),
            lines: lines.into_iter().map(|l| LineView { tone: tone(l.tone), text: l.text }).collect(),
        })
        .collect();
    let addresses = if engine.config.resolver.enabled {
        let book = engine.store.address_book()?.addresses();
        plan.diff
            .changes
            .iter()
            .filter_map(|c| {
                let ips = book.get(&c.host)?;
                Some(AddressRow { host: c.host.to_string(), addresses: ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ") })
            })
            .collect()
    } else {
        Vec::new()
    };
    let decisions = engine
        .store
        .decisions(id)?
        .into_iter()
        .map(|d| DecisionRow {
            decision: match (d.decision.as_str(), fr) {
                ("approve", true) => "approuvé".into(),
                ("reject", true) => "rejeté".into(),
                ("approve", false) => "approved".into(),
                ("reject", false) => "rejected".into(),
                (other, _) => other.to_owned(),
            },
            by: d.by,
            at: d.at,
            comment: d.comment.unwrap_or_default(),
        })
        .collect();
    let base = match plan.base {
        0 => tr(fr, "l'état vide".into(), "the empty state".into()),
        b => tr(fr, format!("l'état du plan {b}"), format!("the state of plan {b}")),
    };
    let serial = plan.serial.map(|s| tr(fr, format!(", série {s}"), format!(", serial {s}"))).unwrap_or_default();
    Ok(PlanPage {
        head,
        id,
        status: status_label(plan.status, lang),
        tone: plan.status.as_str(),
        created: plan.created.clone(),
        source: format!("{}{serial}", plan.source),
        base,
        warning,
        reasons: plan.reasons.iter().map(|r| crate::plan::reason_in(r, lang)).collect(),
        groups,
        totals: render::totals(&plan.diff, lang),
        addresses,
        decisions,
        open: matches!(plan.status, Status::Pending | Status::Ready),
    })
}

/// An AMC as the store knows it: by the last good answer (with its state), or only by what is
/// in force or planned.
struct Known {
    name: String,
    state: Option<AmcState>,
}

fn state_label(state: Option<&AmcState>, fr: bool) -> String {
    match state {
        Some(AmcState::CircleOfTrust) => tr(fr, "dans le cercle de confiance".into(), "in the circle of trust".into()),
        Some(AmcState::UnderWatch) => tr(
            fr,
            "production sous surveillance (ouverte seulement comme AMC miroir, policy.mirror_amc)".into(),
            "production under watch (opened only as a mirror AMC, policy.mirror_amc)".into(),
        ),
        Some(AmcState::Left) => tr(fr, "sortie du cercle de confiance".into(), "left the circle of trust".into()),
        Some(AmcState::Unknown(raw)) => raw.clone(),
        None => tr(fr, "absente de la dernière réponse de l'annuaire".into(), "not in the annuaire's last answer".into()),
    }
}

fn note_row(row: &NotificationRow, lang: &Language) -> NoteRow {
    let fr = *lang == Language::Fr;
    let (verdict, tone) = match (row.verdict, fr) {
        (MailVerdict::Used, true) => ("utilisée", "ok"),
        (MailVerdict::Used, false) => ("used", "ok"),
        (MailVerdict::Rejected, true) => ("rejetée", "bad"),
        (MailVerdict::Rejected, false) => ("rejected", "bad"),
        (MailVerdict::NoChange, true) => ("sans changement", "note"),
        (MailVerdict::NoChange, false) => ("no change", "note"),
        (MailVerdict::Unreadable, true) => ("illisible", "bad"),
        (MailVerdict::Unreadable, false) => ("unreadable", "bad"),
    };
    let changes = row
        .changes
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or("?").to_owned();
            let (host, effective, name, amc) = (field("host"), field("effective"), field("name"), field("amc"));
            match (c["action"].as_str() == Some("open"), fr) {
                (true, true) => format!("ouverture de {host} à partir du {effective} pour {name} ({amc})"),
                (false, true) => format!("fermeture de {host} à partir du {effective} pour {name} ({amc})"),
                (true, false) => format!("opening of {host} from {effective} for {name} ({amc})"),
                (false, false) => format!("closing of {host} from {effective} for {name} ({amc})"),
            }
        })
        .collect();
    NoteRow {
        received_at: row.received_at.clone(),
        verdict,
        tone,
        sender: row.sender.clone().unwrap_or_default(),
        subject: row.subject.clone().unwrap_or_default(),
        reason: row.reason.clone().unwrap_or_default(),
        changes,
    }
}

pub fn amc(engine: &Engine, head: Head, query: &str, lang: &Language) -> Result<AmcPage, StoreError> {
    let fr = *lang == Language::Fr;
    let applied = engine.store.applied()?;
    let open = engine.store.open_plans()?;
    let catalogue = engine
        .store
        .latest_cached_answer()?
        .and_then(|c| crate::sources::annuaire::parse(&c.body, c.content_type.as_deref()).ok())
        .map(|answer| Catalogue::from_answer(&answer));
    let mut known: BTreeMap<AmcNumber, Known> = BTreeMap::new();
    if let Some(cat) = &catalogue {
        for (number, info) in &cat.amcs {
            known.insert(number.clone(), Known { name: info.name.clone(), state: Some(info.state.clone()) });
        }
    }
    let entries = applied.state.entries.values().chain(open.iter().flat_map(|p| &p.diff.changes).flat_map(|c| c.before.iter().chain(c.after.iter())));
    for entry in entries {
        for (number, u) in &entry.amcs {
            known.entry(number.clone()).or_insert_with(|| Known { name: u.name.clone(), state: None });
        }
    }
    let query = query.trim();
    let digits = !query.is_empty() && query.chars().all(|c| c.is_ascii_digit());
    let lower = query.to_lowercase();
    let exact = AmcNumber::parse(query).ok();
    let mut found: Vec<(&AmcNumber, &Known)> = known
        .iter()
        .filter(|(number, k)| match (query.is_empty(), digits) {
            (true, _) => false,
            (false, true) => exact.as_ref() == Some(*number) || number.as_str().contains(query),
            (false, false) => k.name.to_lowercase().contains(&lower),
        })
        .collect();
    if let Some(e) = &exact {
        if found.iter().any(|(number, _)| *number == e) {
            found.retain(|(number, _)| *number == e);
        }
    }
    let matches = found
        .iter()
        .map(|(number, k)| AmcMatch { number: number.to_string(), name: k.name.clone(), state: state_label(k.state.as_ref(), fr) })
        .collect();
    let detail = match found.as_slice() {
        [(number, k)] => Some(amc_detail(engine, number, k, &applied.state, &open, catalogue.as_ref(), lang)?),
        _ => None,
    };
    Ok(AmcPage { head, query: query.to_owned(), searched: !query.is_empty(), matches, detail })
}

fn amc_detail(
    engine: &Engine,
    number: &AmcNumber,
    known: &Known,
    in_force: &crate::catalogue::State,
    open: &[Plan],
    catalogue: Option<&Catalogue>,
    lang: &Language,
) -> Result<AmcDetail, StoreError> {
    let fr = *lang == Language::Fr;
    let mut hosts = Vec::new();
    for (host, entry) in &in_force.entries {
        if let Some(u) = entry.amcs.get(number) {
            hosts.push(HostRow {
                host: host.to_string(),
                ports: render::ports(entry),
                services: u.services.iter().cloned().collect::<Vec<_>>().join(" "),
                since: entry.since.clone().unwrap_or_default(),
                in_force: true,
            });
        }
    }
    if let Some(cat) = catalogue {
        for (host, uses) in &cat.hosts {
            let Some(u) = uses.get(number) else { continue };
            if in_force.entries.contains_key(host) {
                continue;
            }
            let ports: Vec<String> = u.ports.iter().map(u16::to_string).collect();
            hosts.push(HostRow {
                host: host.to_string(),
                ports: format!("tcp/{}", ports.join(",")),
                services: u.services.iter().cloned().collect::<Vec<_>>().join(" "),
                since: String::new(),
                in_force: false,
            });
        }
    }
    let allowed = hosts.iter().filter(|h| h.in_force).count();
    let opening = match allowed {
        0 => tr(fr, "Fermée : aucun hôte de cette AMC n'est autorisé.".into(), "Closed: no host of this AMC is allowed.".into()),
        n => tr(fr, format!("Ouverte : {n} hôte(s) autorisé(s)."), format!("Open: {n} host(s) allowed.")),
    };
    let since = hosts.iter().filter(|h| h.in_force && !h.since.is_empty()).map(|h| h.since.clone()).min().unwrap_or_default();
    let mut pending = Vec::new();
    for plan in open {
        for (group, lines) in render::grouped(&plan.diff, lang) {
            let Group::Amc { number: n, .. } = &group else { continue };
            if !is_number(n, number) {
                continue;
            }
            for line in lines {
                pending.push(PendingRow { plan: plan.id, status: status_label(plan.status, lang), tone: tone(line.tone), text: line.text });
            }
        }
    }
    let notifications = engine
        .store
        .notifications(500)?
        .iter()
        .filter(|row| {
            row.changes.as_array().is_some_and(|changes| changes.iter().any(|c| c["amc"].as_str().is_some_and(|a| is_number(a, number))))
        })
        .map(|row| note_row(row, lang))
        .collect();
    let blocked = blocked_rows(&engine.store.blocked_alerts_since(now_millis().saturating_sub(7 * DAY_MS))?, lang, Some(number));
    Ok(AmcDetail {
        number: number.to_string(),
        name: known.name.clone(),
        state: state_label(known.state.as_ref(), fr),
        opening,
        since,
        hosts,
        pending,
        notifications,
        blocked,
    })
}

pub fn notifications(engine: &Engine, head: Head, lang: &Language) -> Result<NotificationsPage, StoreError> {
    let rows = engine.store.notifications(100)?.iter().map(|row| note_row(row, lang)).collect();
    Ok(NotificationsPage { head, rows })
}

pub fn alerts(engine: &Engine, head: Head, lang: &Language) -> Result<AlertsPage, StoreError> {
    let fr = *lang == Language::Fr;
    let rows = engine
        .store
        .recent_alerts(100)?
        .into_iter()
        .map(|a| {
            let (subject, _) = a.alert.compose(lang, a.count, &a.first_seen, &a.last_seen);
            let status = match (a.status.as_str(), fr) {
                ("queued", true) => "en file",
                ("sent", true) => "envoyée",
                ("held", true) => "retenue (limite horaire)",
                ("digested", true) => "résumée",
                ("dropped", true) => "abandonnée",
                ("queued", false) => "queued",
                ("sent", false) => "sent",
                ("held", false) => "held (hourly limit)",
                ("digested", false) => "digested",
                ("dropped", false) => "dropped",
                (_, _) => "?",
            };
            AlertRow {
                id: a.id,
                status,
                kind: a.alert.kind(),
                subject,
                count: a.count + a.after_sent,
                first_seen: a.first_seen,
                last_seen: a.last_seen,
            }
        })
        .collect();
    Ok(AlertsPage { head, rows })
}

pub fn audit(engine: &Engine, head: Head) -> Result<AuditPage, StoreError> {
    let rows = engine
        .store
        .audit_log(200)?
        .into_iter()
        .rev()
        .map(|e| AuditRow { at: e.at, actor: e.actor, action: e.action, plan: e.plan_id.unwrap_or(0), detail: e.detail })
        .collect();
    Ok(AuditPage { head, rows })
}
