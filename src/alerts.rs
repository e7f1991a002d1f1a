//! What rocsync tells people, and to whom: each alert as data (kept in the store's queue until
//! it is sent), its deduplication key, its recipients' roles, and its text in French (the
//! default) or English. Pure: the daemon queues, [`crate::daemon::mailer`] sends.

use serde::{Deserialize, Serialize};

/// The language of the alerts, the review mails and the console (`[alerts] language`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Fr,
    En,
}

/// Who receives an alert (`[alerts.recipients]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Dsi,
    Helpdesk,
    Rssi,
}

/// One AMC, as an alert names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmcName {
    pub number: String,
    pub name: String,
}

/// Where, and as whom, the commands an e-mail gives are run: the host rocsync runs on, the
/// user that owns its state (the service user), and the configuration file when it is not the
/// default one; and the review console's address, when people reach one. Empty when unknown
/// (alerts queued by an older rocsync).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAt {
    pub host: String,
    pub user: Option<String>,
    /// The configuration file, when it is not `/etc/rocsync/config.toml`.
    pub config: Option<String>,
    /// The review console's public address (`console.public_url`), when it has one: review
    /// and reminder mails link to the plan's page.
    #[serde(default)]
    pub console: Option<String>,
}

impl RunAt {
    /// `rocsync ARGS`, with `--config PATH` after them when the configuration is not the default.
    pub fn command(&self, args: &str) -> String {
        match &self.config {
            Some(path) => format!("rocsync {args} --config {}", crate::text::shell_word(path)),
            None => format!("rocsync {args}"),
        }
    }

    /// `sur fw1.hopital.test, en tant que rocsync`, or `None` when neither is known.
    fn place(&self, fr: bool) -> Option<String> {
        let host = (!self.host.is_empty()).then(|| if fr { format!("sur {}", self.host) } else { format!("on {}", self.host) });
        let user = self.user.as_ref().map(|u| if fr { format!("en tant que {u}") } else { format!("as {u}") });
        match (host, user) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(one),
            (Some(host), Some(user)) => Some(format!("{host}, {user}")),
        }
    }

    /// `Sur fw1.hopital.test, en tant que rocsync :` and a new line, or nothing.
    fn heading(&self, fr: bool) -> String {
        let Some(place) = self.place(fr) else { return String::new() };
        let mut chars = place.chars();
        let first: String = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
        format!("{first}{}{}\n", chars.as_str(), if fr { " :" } else { ":" })
    }

    /// `, sur fw1.hopital.test, en tant que rocsync`, to follow "À faire", or nothing.
    fn inline(&self, fr: bool) -> String {
        self.place(fr).map(|p| format!(", {p}")).unwrap_or_default()
    }
}

/// How much a plan closes, when it closes much (the mass-removal guard speaks): said in the
/// subject and the first line, before anything that would read like a routine approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closing {
    pub hosts: usize,
    pub in_force: usize,
}

impl Closing {
    fn text(&self, fr: bool) -> String {
        let percent = (self.hosts * 100).checked_div(self.in_force).unwrap_or(100);
        if fr {
            format!("{} des {} hôtes en vigueur ({percent} %)", self.hosts, self.in_force)
        } else {
            format!("{} of the {} hosts in force ({percent}%)", self.hosts, self.in_force)
        }
    }
}

/// Why a plan the RSSI was told about will not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withdrawn {
    /// Newer plans change the same hosts.
    Replaced { by: Vec<i64> },
    /// A newer read of the annuaire no longer asks for it.
    NoLongerAsked,
    /// Approved, but another plan was applied first: it was computed against a state no longer
    /// in force.
    Stale { current: i64 },
}

/// What a blocked request has to do with the national reverse proxy (RPN ROC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpnNote {
    /// The RPN host itself: it carries every AMC's requests.
    Outage,
    /// A host of an AMC migrated to the RPN, its direct opening closed: the client still goes
    /// direct.
    GoesDirect,
}

/// Something to tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// Requests to an AMC service were blocked.
    Blocked {
        host: Option<String>,
        ip: Option<String>,
        port: Option<u16>,
        client: Option<String>,
        amcs: Vec<AmcName>,
        services: Vec<String>,
        idb: bool,
        /// The host is allowed by what is in force: enforcement is broken.
        in_force: bool,
        /// A plan waiting for approval would open the host.
        pending_plan: Option<i64>,
        /// Only an Inter-AMC notification names the host; the annuaire does not list it.
        #[serde(default)]
        notified: bool,
        #[serde(default)]
        at: RunAt,
        /// The national reverse proxy's part in it (issue 15), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rpn: Option<RpnNote>,
    },
    /// A plan waits for approval.
    Review {
        plan: i64,
        /// The diff as [`crate::plan::render::text`] gives it, in the mail's language.
        diff: String,
        /// As stored (English); composed in the mail's language.
        reasons: Vec<String>,
        #[serde(default)]
        closing: Option<Closing>,
        #[serde(default)]
        at: RunAt,
    },
    /// A plan has waited longer than `review.remind_after`.
    Reminder {
        plan: i64,
        created: String,
        diff: String,
        #[serde(default)]
        closing: Option<Closing>,
        #[serde(default)]
        at: RunAt,
    },
    /// A plan the RSSI was asked to review will not be applied.
    Superseded {
        plan: i64,
        why: Withdrawn,
        #[serde(default)]
        at: RunAt,
    },
    /// The annuaire has not answered well for longer than `unreachable_alert_after`.
    Unreachable { source: String, since: String, error: String },
    /// The annuaire answers well again after an [`Alert::Unreachable`] (raised at `down_ms`).
    BackToNormal { source: String, since: String, down_ms: u64 },
    /// The client certificate expires soon, or has.
    Certificate { subject: String, not_after: String, days_left: i64 },
    /// A plan could not be applied; what was in force stays.
    ApplyFailed { plan: i64, error: String },
    /// An output or the nftables table differed from what rocsync applied, and was put back.
    DriftRepaired { details: Vec<String> },
    /// Alerts held back by the hourly limit.
    Digest { held: Vec<String> },
    /// A DNS answer for an AMC host pointed inside (private, loopback, link-local, …): refused.
    /// A sign of a hijacked or mistaken zone; sent once per host.
    DnsRefused { host: String, addresses: Vec<String>, reasons: Vec<String> },
}

impl Alert {
    /// Alerts with the same key within `alerts.dedup_window` are one alert.
    pub fn key(&self) -> String {
        match self {
            Alert::Blocked { host, ip, amcs, in_force, .. } => {
                let numbers: Vec<&str> = amcs.iter().map(|a| a.number.as_str()).collect();
                let target = host.clone().or_else(|| ip.clone()).unwrap_or_default();
                format!("blocked:{}:{target}:{}", numbers.join(","), if *in_force { "in-force" } else { "closed" })
            }
            Alert::Review { plan, .. } => review_key(*plan),
            Alert::Reminder { plan, .. } => reminder_key(*plan),
            Alert::Superseded { plan, .. } => format!("superseded:{plan}"),
            Alert::Unreachable { source, .. } => unreachable_key(source),
            Alert::BackToNormal { source, down_ms, .. } => format!("back-to-normal:{source}:{down_ms}"),
            Alert::Certificate { subject, days_left, .. } => format!("certificate:{subject}:{}", days_left.signum()),
            Alert::ApplyFailed { plan, .. } => format!("apply-failed:{plan}"),
            Alert::DriftRepaired { details } => format!("drift:{}", details.join("|")),
            Alert::Digest { held } => format!("digest:{}", held.len()),
            Alert::DnsRefused { host, .. } => format!("dns-refused:{host}"),
        }
    }

    /// Who a blocked-request alert is about: its AMC numbers, or its target when no AMC is
    /// known. The hourly limit never holds an alert about someone not yet alerted this hour.
    pub fn subjects(&self) -> Vec<String> {
        match self {
            Alert::Blocked { amcs, host, ip, .. } if amcs.is_empty() => vec![host.clone().or_else(|| ip.clone()).unwrap_or_default()],
            Alert::Blocked { amcs, .. } => amcs.iter().map(|a| a.number.clone()).collect(),
            _ => Vec::new(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Alert::Blocked { .. } => "blocked",
            Alert::Review { .. } => "review",
            Alert::Reminder { .. } => "reminder",
            Alert::Superseded { .. } => "superseded",
            Alert::Unreachable { .. } => "unreachable",
            Alert::BackToNormal { .. } => "back_to_normal",
            Alert::Certificate { .. } => "certificate",
            Alert::ApplyFailed { .. } => "apply_failed",
            Alert::DriftRepaired { .. } => "drift_repaired",
            Alert::Digest { .. } => "digest",
            Alert::DnsRefused { .. } => "dns_refused",
        }
    }

    pub fn roles(&self) -> Vec<Role> {
        match self {
            Alert::Blocked { .. } => vec![Role::Dsi, Role::Helpdesk],
            Alert::Review { .. } | Alert::Reminder { .. } | Alert::Superseded { .. } => vec![Role::Rssi],
            Alert::Unreachable { .. }
            | Alert::BackToNormal { .. }
            | Alert::Certificate { .. }
            | Alert::ApplyFailed { .. }
            | Alert::DriftRepaired { .. } => vec![Role::Dsi, Role::Rssi],
            Alert::DnsRefused { .. } => vec![Role::Dsi],
            Alert::Digest { .. } => vec![Role::Dsi, Role::Helpdesk, Role::Rssi],
        }
    }

    /// Blocked requests wait this long before the alert goes, so that it counts a burst;
    /// everything else goes at once.
    pub fn gather_ms(&self) -> u64 {
        match self {
            Alert::Blocked { .. } => 10_000,
            _ => 0,
        }
    }

    /// Subject and body, all in `lang`. `count`, `first` and `last` say how many times it
    /// happened and when.
    pub fn compose(&self, lang: &Language, count: u64, first: &str, last: &str) -> (String, String) {
        let fr = *lang == Language::Fr;
        let t = |f: &str, e: &str| if fr { f.to_owned() } else { e.to_owned() };
        match self {
            Alert::Blocked { host, ip, port, client, amcs, services, idb, in_force, pending_plan, notified, at, rpn } => {
                let who = match rpn {
                    Some(RpnNote::Outage) => t("le RPN ROC (toutes les AMC)", "the RPN ROC (every AMC)"),
                    _ => amc_list(amcs),
                };
                let target = crate::text::escaped(&host.clone().or_else(|| ip.clone()).unwrap_or_else(|| "?".into()));
                let service = if *idb { "IDB".to_owned() } else { services.join(", ") };
                let subject = match (*in_force, service.is_empty()) {
                    (true, false) => t(
                        &format!("[rocsync] Filtrage cassé : {service} de {who} bloqué alors qu'autorisé ({target})"),
                        &format!("[rocsync] Enforcement broken: {service} of {who} blocked although allowed ({target})"),
                    ),
                    (true, true) => t(
                        &format!("[rocsync] Filtrage cassé : requêtes vers {who} bloquées alors qu'autorisées ({target})"),
                        &format!("[rocsync] Enforcement broken: requests to {who} blocked although allowed ({target})"),
                    ),
                    (false, false) => t(
                        &format!("[rocsync] Requêtes {service} bloquées vers {who} ({target})"),
                        &format!("[rocsync] {service} requests blocked to {who} ({target})"),
                    ),
                    (false, true) => t(
                        &format!("[rocsync] Requêtes bloquées vers {who} ({target})"),
                        &format!("[rocsync] Requests blocked to {who} ({target})"),
                    ),
                };
                let mut body = String::new();
                body += &t("Des requêtes vers un service ROC d'AMC sont bloquées.\n\n", "Requests to an AMC's ROC service are being blocked.\n\n");
                body += &t(&format!("AMC : {who}\n"), &format!("AMC: {who}\n"));
                body += &t(&format!("Hôte : {target}"), &format!("Host: {target}"));
                if let Some(p) = port {
                    body += &format!(":{p}");
                }
                if let (Some(ip), Some(_)) = (ip, host) {
                    body += &format!(" ({ip})");
                }
                body += "\n";
                body += &match (services.is_empty(), *notified) {
                    (false, _) => t(&format!("Service : {}\n", services.join(", ")), &format!("Service: {}\n", services.join(", "))),
                    (true, true) => t(
                        "Service : non précisé (hôte annoncé seulement par une notification Inter-AMC, absent de l'annuaire)\n",
                        "Service: not given (a host named only by an Inter-AMC notification, not listed by the annuaire)\n",
                    ),
                    (true, false) => t("Service : non précisé par l'annuaire\n", "Service: not given by the annuaire\n"),
                };
                if let Some(c) = client {
                    body += &t(&format!("Poste client : {c}\n"), &format!("Client: {c}\n"));
                }
                body += &t(&format!("Nombre de requêtes : {count}, du {first} au {last}\n\n"), &format!("Requests: {count}, from {first} to {last}\n\n"));
                let place = at.inline(fr);
                let client_text = client.as_deref().map(crate::text::escaped).unwrap_or_else(|| "?".into());
                body += &match rpn {
                    Some(RpnNote::Outage) => t(
                        "Le RPN ROC porte les requêtes de toutes les AMC : une panne du RPN est une panne de toutes les AMC.\n",
                        "The RPN ROC carries the requests of every AMC: an RPN outage is an outage of every AMC.\n",
                    ),
                    Some(RpnNote::GoesDirect) => t(
                        &format!("Cette AMC passe par le RPN ROC et son ouverture directe est fermée : ce poste ({client_text}) passe encore en direct ; le faire pointer vers le RPN.\n"),
                        &format!("This AMC goes through the RPN ROC and its direct opening is closed: this client ({client_text}) still goes direct; re-point it to the RPN.\n"),
                    ),
                    None => String::new(),
                };
                body += &if rpn.is_some() && !*in_force {
                    t(
                        &format!("À faire{place} : `{}` ; vérifier la configuration du GAP sur ce poste.\n", at.command("report rpn")),
                        &format!("To do{place}: `{}`; check the GAP's configuration on this client.\n", at.command("report rpn")),
                    )
                } else if *in_force {
                    let (status, once) = (at.command("status"), at.command("once"));
                    t(
                        &format!("Cet hôte est autorisé par ce que rocsync a appliqué : le filtrage ne correspond plus.\nÀ faire{place} : `{status}` (écarts), puis `{once}` pour réparer ; vérifier le pare-feu et le proxy.\n"),
                        &format!("This host is allowed by what rocsync applied: enforcement no longer matches.\nTo do{place}: `{status}` (drift), then `{once}` to repair; check the firewall and the proxy.\n"),
                    )
                } else if let Some(plan) = pending_plan {
                    let show = at.command(&format!("plan show {plan}"));
                    let check = if *notified {
                        t(
                            "L'annuaire ne liste pas cet hôte : seule une notification Inter-AMC l'annonce. Vérifier auprès de l'AMC avant d'approuver.\n",
                            "The annuaire does not list this host: only an Inter-AMC notification names it. Check with the AMC before approving.\n",
                        )
                    } else {
                        String::new()
                    };
                    t(
                        &format!(
                            "Le plan {plan} ouvrirait cet hôte et attend une approbation.\n{check}À faire{place} : `{show}`, puis `{}`.\n",
                            at.command(&format!("approve {plan} --by NOM"))
                        ),
                        &format!(
                            "Plan {plan} would open this host and waits for approval.\n{check}To do{place}: `{show}`, then `{}`.\n",
                            at.command(&format!("approve {plan} --by NAME"))
                        ),
                    )
                } else if amcs.is_empty() {
                    t(
                        "L'adresse ne correspond à aucun hôte connu de l'annuaire : vérifier avec le référent métier.\n",
                        "The address maps to no host the annuaire lists: check with the business referent (référent métier).\n",
                    )
                } else {
                    let (list, once) = (at.command("plan list"), at.command("once"));
                    t(
                        &format!("L'annuaire liste cet hôte mais il n'est pas autorisé. À faire{place} : `{list}`, `{once}` ; si l'annuaire ne le liste plus, vérifier avec le référent métier.\n"),
                        &format!("The annuaire lists this host but it is not allowed. To do{place}: `{list}`, `{once}`; if the annuaire no longer lists it, check with the business referent (référent métier).\n"),
                    )
                };
                (subject, body)
            }
            Alert::Review { plan, diff, reasons, closing, at } => {
                let subject = match closing {
                    Some(c) => t(
                        &format!("[rocsync] ATTENTION : le plan {plan} ferme {} — à valider", c.text(true)),
                        &format!("[rocsync] WARNING: plan {plan} closes {} — needs review", c.text(false)),
                    ),
                    None => t(&format!("[rocsync] Plan {plan} à valider"), &format!("[rocsync] Plan {plan} needs review")),
                };
                let mut body = closing.as_ref().map(|c| danger(c, fr)).unwrap_or_default();
                body += &t(&format!("Le plan {plan} attend votre approbation.\n"), &format!("Plan {plan} waits for your approval.\n"));
                body += &reasons_text(reasons, lang);
                body += &format!("\n{diff}\n");
                body += &decision_commands(*plan, at, closing.is_some(), fr);
                (subject, body)
            }
            Alert::Reminder { plan, created, diff, closing, at } => {
                let warning = closing.as_ref().map(|c| t(&format!(" — ATTENTION : il ferme {}", c.text(true)), &format!(" — WARNING: it closes {}", c.text(false))));
                let subject = t(
                    &format!("[rocsync] Rappel : le plan {plan} attend depuis le {created}{}", warning.as_deref().unwrap_or("")),
                    &format!("[rocsync] Reminder: plan {plan} waiting since {created}{}", warning.as_deref().unwrap_or("")),
                );
                let mut body = closing.as_ref().map(|c| danger(c, fr)).unwrap_or_default();
                body += &t(&format!("Le plan {plan} attend toujours une décision.\n\n{diff}\n"), &format!("Plan {plan} still waits for a decision.\n\n{diff}\n"));
                body += &decision_commands(*plan, at, closing.is_some(), fr);
                (subject, body)
            }
            Alert::Superseded { plan, why, at } => superseded(*plan, why, at, fr),
            Alert::Unreachable { source, since, error } => (
                t("[rocsync] Annuaire AMC injoignable", "[rocsync] Annuaire AMC unreachable"),
                t(
                    &format!(
                        "L'annuaire ({source}) ne répond pas correctement depuis le {since}.\nDernière erreur : {error}\nCe qui est en vigueur reste en vigueur. À faire : `rocsync poll` pour le détail (certificat, réseau).\nUn message suivra quand il répondra de nouveau.\n"
                    ),
                    &format!(
                        "The annuaire ({source}) has not answered well since {since}.\nLast error: {error}\nWhat is in force stays in force. To do: `rocsync poll` for details (certificate, network).\nAnother message follows when it answers again.\n"
                    ),
                ),
            ),
            Alert::BackToNormal { source, since, .. } => (
                t("[rocsync] Annuaire AMC de nouveau joignable", "[rocsync] Annuaire AMC reachable again"),
                t(
                    &format!(
                        "L'annuaire ({source}) répond de nouveau correctement ; il ne répondait plus depuis le {since}.\nLes changements qu'il liste sont de nouveau pris en compte. Rien à faire.\n"
                    ),
                    &format!(
                        "The annuaire ({source}) answers well again; it had not since {since}.\nThe changes it lists are taken into account again. Nothing to do.\n"
                    ),
                ),
            ),
            Alert::Certificate { subject, not_after, days_left } => (
                if *days_left < 0 {
                    t("[rocsync] Certificat client expiré", "[rocsync] Client certificate expired")
                } else {
                    t(&format!("[rocsync] Certificat client : expire dans {days_left} jours"), &format!("[rocsync] Client certificate expires in {days_left} days"))
                },
                t(
                    &format!("Le certificat {subject} expire le {not_after}. Le renouveler auprès de l'ANS (IGC-Santé) avant cette date : sans lui, l'annuaire n'est plus lu.\n"),
                    &format!("Certificate {subject} expires on {not_after}. Renew it with the ANS (IGC-Santé) before then: without it, the annuaire cannot be read.\n"),
                ),
            ),
            Alert::ApplyFailed { plan, error } => (
                t(&format!("[rocsync] Échec d'application du plan {plan}"), &format!("[rocsync] Plan {plan} could not be applied")),
                t(
                    &format!("Le plan {plan} n'a pas pu être appliqué ; ce qui était en vigueur le reste.\nErreur : {error}\nRéessayer : rocsync apply {plan}\n"),
                    &format!("Plan {plan} could not be applied; what was in force stays.\nError: {error}\nRetry: rocsync apply {plan}\n"),
                ),
            ),
            Alert::DriftRepaired { details } => (
                t("[rocsync] Filtrage modifié hors rocsync, rétabli", "[rocsync] Enforcement changed outside rocsync, restored"),
                t(
                    &format!("Ce qui différait de ce que rocsync a appliqué a été rétabli :\n- {}\n", details.join("\n- ")),
                    &format!("What differed from what rocsync applied was put back:\n- {}\n", details.join("\n- ")),
                ),
            ),
            Alert::DnsRefused { host, addresses, reasons } => {
                let list: Vec<String> = addresses.iter().zip(reasons).map(|(a, r)| format!("{a} ({r})")).collect();
                (
                    t(&format!("[rocsync] Réponse DNS refusée pour {host} : adresse interne"), &format!("[rocsync] DNS answer refused for {host}: internal address")),
                    t(
                        &format!(
                            "La résolution de {host} a donné des adresses qui ne sont jamais autorisées :\n- {}\n\nElles n'ont pas été ouvertes. Une AMC ne sert pas depuis le réseau de l'hôpital : zone DNS détournée ou erronée ?\nÀ faire : vérifier le résolveur et la zone ; si la plage est voulue, l'ajouter à resolver.allow_networks.\n",
                            list.join("\n- ")
                        ),
                        &format!(
                            "Resolving {host} gave addresses that are never allowed:\n- {}\n\nThey were not opened. An AMC does not serve from the hospital's network: a hijacked or mistaken DNS zone?\nTo do: check the resolver and the zone; if the range is intended, add it to resolver.allow_networks.\n",
                            list.join("\n- ")
                        ),
                    ),
                )
            }
            Alert::Digest { held } => (
                t(&format!("[rocsync] {} alertes retenues par la limite horaire", held.len()), &format!("[rocsync] {} alerts held back by the hourly limit", held.len())),
                t(
                    &format!("Ces alertes dépassaient la limite par heure (alerts.max_per_hour) :\n- {}\n", held.join("\n- ")),
                    &format!("These alerts went over the hourly limit (alerts.max_per_hour):\n- {}\n", held.join("\n- ")),
                ),
            ),
        }
    }
}

/// The key of [`Alert::Review`] for `plan`, to ask whether it was sent without composing it.
pub fn review_key(plan: i64) -> String {
    format!("review:{plan}")
}

/// The key of [`Alert::Reminder`] for `plan`.
pub fn reminder_key(plan: i64) -> String {
    format!("reminder:{plan}")
}

/// The key of [`Alert::Unreachable`] for `source`.
pub fn unreachable_key(source: &str) -> String {
    format!("unreachable:{source}")
}

fn amc_list(amcs: &[AmcName]) -> String {
    if amcs.is_empty() {
        return "?".into();
    }
    amcs.iter()
        .map(|a| format!("{} ({})", crate::text::label(&a.name), crate::text::Untrusted(&a.number)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a plan waits, one reason a line, in `lang`.
fn reasons_text(reasons: &[String], lang: &Language) -> String {
    if reasons.is_empty() {
        return String::new();
    }
    let mut out = match lang {
        Language::Fr => "Il attend parce que :\n".to_owned(),
        Language::En => "It waits because:\n".to_owned(),
    };
    for r in reasons {
        out.push_str(&format!("- {}\n", crate::plan::reason_in(r, lang)));
    }
    out
}

/// The first lines of a mail about a plan that closes much: what it closes, and that an
/// emptied or wrong answer looks like this.
fn danger(closing: &Closing, fr: bool) -> String {
    if fr {
        format!(
            "ATTENTION : ce plan ferme {}. Un annuaire vidé ou une réponse erronée donne ce résultat : ne l'approuver qu'après avoir vérifié auprès de l'annuaire ou des AMC concernées.\n\n",
            closing.text(true)
        )
    } else {
        format!(
            "WARNING: this plan closes {}. An emptied annuaire or a wrong answer gives this: approve it only after checking with the annuaire or the AMCs concerned.\n\n",
            closing.text(false)
        )
    }
}

/// The commands that decide `plan`, where and as whom to run them. A plan that closes much
/// puts checking and rejecting first.
fn decision_commands(plan: i64, at: &RunAt, closes_much: bool, fr: bool) -> String {
    let (name, why) = if fr { ("NOM", "raison") } else { ("NAME", "why") };
    let show = at.command(&format!("plan show {plan}"));
    let approve = at.command(&format!("approve {plan} --by {name}"));
    let reject = at.command(&format!("reject {plan} --by {name} --comment \"{why}\""));
    let mut out = String::new();
    if let Some(console) = &at.console {
        let words = match (closes_much, fr) {
            (false, true) => "Relire et approuver",
            (true, true) => "Relire avant toute décision",
            (false, false) => "Review and approve",
            (true, false) => "Review before any decision",
        };
        out.push_str(&format!("{words}{} {console}/plans/{plan}\n\n", if fr { " :" } else { ":" }));
    }
    out.push_str(&at.heading(fr));
    let lines: Vec<(&str, &str, &String)> = if closes_much {
        vec![
            ("Vérifier", "Check", &show),
            ("Rejeter", "Reject", &reject),
            ("Approuver, seulement après vérification", "Approve, only once checked", &approve),
        ]
    } else {
        vec![("Approuver", "Approve", &approve), ("Rejeter", "Reject", &reject)]
    };
    for (f, e, command) in lines {
        out.push_str(&if fr { format!("  {f} : {command}\n") } else { format!("  {e}: {command}\n") });
    }
    out
}

/// `le plan 9`, `les plans 9 et 10`; `plan 9`, `plans 9 and 10`.
fn plans_text(ids: &[i64], fr: bool) -> String {
    let numbers: Vec<String> = ids.iter().map(i64::to_string).collect();
    let list = match numbers.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {} {last}", rest.join(", "), if fr { "et" } else { "and" }),
    };
    match (ids.len() > 1, fr) {
        (false, true) => format!("le plan {list}"),
        (true, true) => format!("les plans {list}"),
        (false, false) => format!("plan {list}"),
        (true, false) => format!("plans {list}"),
    }
}

/// The mail telling the RSSI that a plan it was asked to review will not be applied, and why.
fn superseded(plan: i64, why: &Withdrawn, at: &RunAt, fr: bool) -> (String, String) {
    let t = |f: String, e: String| if fr { f } else { e };
    match why {
        Withdrawn::Replaced { by } => {
            let (by_fr, by_en) = (plans_text(by, true), plans_text(by, false));
            let (verb_fr, verb_en) = if by.len() > 1 { ("le remplacent", "replace it") } else { ("le remplace", "replaces it") };
            let newest = by.last().copied().unwrap_or(plan);
            let show = at.command(&format!("plan show {newest}"));
            (
                t(format!("[rocsync] Le plan {plan} est remplacé par {by_fr}"), format!("[rocsync] Plan {plan} is replaced by {by_en}")),
                t(
                    format!(
                        "Le plan {plan}, qui attendait votre approbation, ne sera pas appliqué : {by_fr} {verb_fr}, calculé(s) sur une lecture plus récente de l'annuaire.\nN'approuvez pas le plan {plan} ; ce qui attend une approbation vous est envoyé dans son propre message.\n\n{}  Voir : {show}\n",
                        at.heading(true)
                    ),
                    format!(
                        "Plan {plan}, which waited for your approval, will not be applied: {by_en} {verb_en}, computed from a newer read of the annuaire.\nDo not approve plan {plan}; what waits for approval comes in a message of its own.\n\n{}  See: {show}\n",
                        at.heading(false)
                    ),
                ),
            )
        }
        Withdrawn::NoLongerAsked => (
            t(format!("[rocsync] Le plan {plan} n'est plus à valider"), format!("[rocsync] Plan {plan} no longer needs review")),
            t(
                format!(
                    "Le plan {plan}, qui attendait votre approbation, ne sera pas appliqué : une lecture plus récente de l'annuaire ne le demande plus (ce qui est en vigueur y correspond de nouveau, ou le changement a été retiré). Rien à faire.\n"
                ),
                format!(
                    "Plan {plan}, which waited for your approval, will not be applied: a newer read of the annuaire no longer asks for it (what is in force matches it again, or the change was withdrawn). Nothing to do.\n"
                ),
            ),
        ),
        Withdrawn::Stale { current } => {
            let list = at.command("plan list");
            (
                t(
                    format!("[rocsync] Le plan {plan} n'a pas été appliqué : le plan {current} est passé avant"),
                    format!("[rocsync] Plan {plan} was not applied: plan {current} came first"),
                ),
                t(
                    format!(
                        "Le plan {plan} a été approuvé, mais il avait été calculé sur un état qui n'est plus en vigueur : le plan {current} a été appliqué entre-temps. Il ne sera pas appliqué ; le prochain passage propose un plan à jour.\n\n{}  Voir : {list}\n",
                        at.heading(true)
                    ),
                    format!(
                        "Plan {plan} was approved, but it was computed against a state no longer in force: plan {current} was applied meanwhile. It will not be applied; the next pass proposes an up-to-date plan.\n\n{}  See: {list}\n",
                        at.heading(false)
                    ),
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{HostPorts, Policy, State};
    use crate::plan::{Guard, HostDiff, render};
    use crate::testing::{fixture_state, state};

    fn blocked(pending: Option<i64>, in_force: bool) -> Alert {
        Alert::Blocked {
            host: Some("idb.a.test".into()),
            ip: Some("198.18.2.11".into()),
            port: Some(443),
            client: Some("198.18.1.2".into()),
            amcs: vec![AmcName { number: "123456789".into(), name: "MUTUELLE EXEMPLE".into() }],
            services: vec!["IDB".into()],
            idb: true,
            in_force,
            pending_plan: pending,
            notified: false,
            at: RunAt::default(),
            rpn: None,
        }
    }

    fn fw1() -> RunAt {
        RunAt { host: "fw1.hopital.test".into(), user: Some("rocsync".into()), config: None, console: None }
    }

    /// Issue 13: with `console.public_url`, the review and reminder mails link to the plan's
    /// page in the console, before the commands.
    #[test]
    fn review_mails_link_to_the_plan_in_the_console() {
        let at = RunAt { console: Some("https://rocsync.hopital.test".into()), ..fw1() };
        let review = Alert::Review { plan: 7, diff: "+ a.test".into(), reasons: vec![], closing: None, at: at.clone() };
        let (_, body) = review.compose(&Language::Fr, 1, "", "");
        assert!(body.contains("Relire et approuver : https://rocsync.hopital.test/plans/7\n"), "{body}");
        assert!(body.find("Relire").unwrap() < body.find("Approuver : rocsync approve").unwrap(), "{body}");
        let reminder = Alert::Reminder { plan: 7, created: "t".into(), diff: "+ a.test".into(), closing: None, at: at.clone() };
        assert!(reminder.compose(&Language::En, 1, "", "").1.contains("Review and approve: https://rocsync.hopital.test/plans/7\n"));
        let much = Alert::Review { plan: 7, diff: String::new(), reasons: vec![], closing: Some(Closing { hosts: 12, in_force: 13 }), at };
        assert!(much.compose(&Language::Fr, 1, "", "").1.contains("Relire avant toute décision : https://rocsync.hopital.test/plans/7"));
        let (_, without) = Alert::Review { plan: 7, diff: String::new(), reasons: vec![], closing: None, at: fw1() }.compose(&Language::Fr, 1, "", "");
        assert!(!without.contains("http"), "no console, no link: {without}");
    }

    /// The review alert the daemon raises for the plan from `from` to `to`, in `lang`.
    fn review(from: &State, to: &State, reasons: &[&str], lang: &Language) -> Alert {
        let diff = HostDiff::between(from, to).unwrap();
        let closing = (!Guard::default().check(from.len(), &diff).is_empty()).then(|| Closing { hosts: diff.closings(), in_force: from.len() });
        Alert::Review {
            plan: 7,
            diff: render::text(&diff, lang),
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            closing,
            at: fw1(),
        }
    }

    #[test]
    fn a_blocked_idb_names_the_amc_the_client_the_count_and_what_to_do() {
        let (subject, body) = blocked(Some(7), false).compose(&Language::Fr, 100, "10:00:00", "10:00:05");
        assert_eq!(subject, "[rocsync] Requêtes IDB bloquées vers MUTUELLE EXEMPLE (123456789) (idb.a.test)");
        assert!(body.contains("Hôte : idb.a.test:443 (198.18.2.11)"), "{body}");
        assert!(body.contains("Poste client : 198.18.1.2"), "{body}");
        assert!(body.contains("Nombre de requêtes : 100, du 10:00:00 au 10:00:05"), "{body}");
        assert!(body.contains("rocsync approve 7 --by NOM"), "{body}");
        let (subject, body) = blocked(None, false).compose(&Language::En, 1, "a", "a");
        assert!(subject.starts_with("[rocsync] IDB requests blocked to MUTUELLE EXEMPLE"), "{subject}");
        assert!(body.contains("référent métier"), "{body}");
        let (subject, _) = blocked(None, true).compose(&Language::En, 1, "a", "a");
        assert!(subject.contains("Enforcement broken"), "{subject}");
    }

    /// Issue 11, item 2: a host only an Inter-AMC e-mail names has no service; its alert says
    /// so, names the plan that opens it, and where and as whom to approve it.
    #[test]
    fn a_blocked_host_named_only_by_a_notification_says_which_plan_opens_it() {
        let mut alert = blocked(Some(2), false);
        if let Alert::Blocked { services, idb, notified, at, .. } = &mut alert {
            services.clear();
            *idb = false;
            *notified = true;
            *at = RunAt { config: Some("/srv/rocsync conf/rocsync.toml".into()), ..fw1() };
        }
        let (subject, body) = alert.compose(&Language::Fr, 3, "a", "b");
        assert_eq!(subject, "[rocsync] Requêtes bloquées vers MUTUELLE EXEMPLE (123456789) (idb.a.test)");
        assert!(body.contains("notification Inter-AMC"), "{body}");
        assert!(body.contains("Le plan 2 ouvrirait cet hôte"), "{body}");
        assert!(
            body.contains("À faire, sur fw1.hopital.test, en tant que rocsync : `rocsync plan show 2 --config '/srv/rocsync conf/rocsync.toml'`"),
            "{body}"
        );
        assert!(body.contains("`rocsync approve 2 --by NOM --config '/srv/rocsync conf/rocsync.toml'`"), "{body}");
    }

    #[test]
    fn keys_group_what_is_the_same_problem() {
        assert_eq!(blocked(None, false).key(), blocked(Some(3), false).key());
        assert_ne!(blocked(None, false).key(), blocked(None, true).key());
        assert_eq!(blocked(None, false).roles(), [Role::Dsi, Role::Helpdesk]);
        let review = Alert::Review { plan: 4, diff: "+ a.test".into(), reasons: vec!["removes 3 hosts".into()], closing: None, at: RunAt::default() };
        assert_eq!(review.roles(), [Role::Rssi]);
        let (s, b) = review.compose(&Language::Fr, 1, "", "");
        assert_eq!(s, "[rocsync] Plan 4 à valider");
        assert!(b.contains("Approuver : rocsync approve 4 --by NOM") && b.contains("- removes 3 hosts"), "{b}");
    }

    /// Issue 11, item 8: the review mail was French with English reasons; closings showed no
    /// port or service.
    #[test]
    fn a_french_review_mail_has_no_english_and_shows_what_closes() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let reasons = ["hybrid mode: only openings that the annuaire lists or policy.extra_hosts adds apply without approval"];
        let (subject, body) = review(&v1, &v2, &reasons, &Language::Fr).compose(&Language::Fr, 1, "", "");
        assert_eq!(subject, "[rocsync] Plan 7 à valider");
        assert!(body.starts_with("Le plan 7 attend votre approbation.\n"), "{body}");
        assert!(body.contains("- mode hybride : seules les ouvertures que l'annuaire liste"), "{body}");
        for english in ["hybrid mode", "only openings", "to open", "no longer listed", "Approve", "Reject"] {
            assert!(!body.contains(english), "`{english}` in a French mail: {body}");
        }
        let closing = body.lines().find(|l| l.trim_start().starts_with("- idb.roc.mutuelle-exemple.test")).expect("the closing");
        assert_eq!(closing.split_whitespace().collect::<Vec<_>>(), ["-", "idb.roc.mutuelle-exemple.test", "tcp/443", "IDB"]);
        assert!(body.contains("Sur fw1.hopital.test, en tant que rocsync :\n  Approuver : rocsync approve 7 --by NOM\n"), "{body}");
        // And in English, no French.
        let (subject, body) = review(&v1, &v2, &reasons, &Language::En).compose(&Language::En, 1, "", "");
        assert_eq!(subject, "[rocsync] Plan 7 needs review");
        assert!(body.contains("- hybrid mode: only openings") && body.contains("On fw1.hopital.test, as rocsync:\n  Approve: rocsync approve 7 --by NAME\n"), "{body}");
        for french in ["attend", "à ouvrir", "Approuver", "mode hybride"] {
            assert!(!body.contains(french), "`{french}` in an English mail: {body}");
        }
    }

    /// Issue 11, item 8: a plan that closes nearly everything (an emptied annuaire) looked like
    /// any other, with "Approuver" first.
    #[test]
    fn a_plan_that_closes_much_says_so_first_and_puts_approval_last() {
        let policy = Policy { extra_hosts: vec!["crl.igc-sante.test:80".parse::<HostPorts>().unwrap()], ..Policy::default() };
        let (v1, empty) = (fixture_state("urls-v1.json", &policy), fixture_state("empty-organismes.json", &policy));
        let diff = HostDiff::between(&v1, &empty).unwrap();
        let reasons = Guard::default().check(v1.len(), &diff);
        let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
        let (subject, body) = review(&v1, &empty, &reasons, &Language::Fr).compose(&Language::Fr, 1, "", "");
        assert_eq!(subject, "[rocsync] ATTENTION : le plan 7 ferme 12 des 13 hôtes en vigueur (92 %) — à valider");
        assert!(body.starts_with("ATTENTION : ce plan ferme 12 des 13 hôtes en vigueur (92 %)."), "{body}");
        assert!(body.contains("- ferme 12 des 13 hôtes en vigueur (92 %), plus que review.max_removal_percent = 20 %"), "{body}");
        assert!(body.contains("- ferme 12 hôtes, plus que review.max_removal_hosts = 10"), "{body}");
        let (reject, approve) = (body.find("Rejeter :").unwrap(), body.find("Approuver, seulement après vérification :").unwrap());
        assert!(reject < approve, "{body}");
        let (subject, body) = review(&v1, &empty, &reasons, &Language::En).compose(&Language::En, 1, "", "");
        assert!(subject.starts_with("[rocsync] WARNING: plan 7 closes 12 of the 13 hosts in force (92%)"), "{subject}");
        assert!(body.starts_with("WARNING: this plan closes 12 of the 13 hosts in force (92%)."), "{body}");
        // An ordinary plan says nothing of the kind.
        let (subject, body) = review(&State::default(), &v1, &[], &Language::Fr).compose(&Language::Fr, 1, "", "");
        assert!(!subject.contains("ATTENTION") && !body.contains("ATTENTION"), "{subject}\n{body}");
    }

    #[test]
    fn superseded_and_back_to_normal_mails_say_what_happened() {
        let replaced = Alert::Superseded { plan: 7, why: Withdrawn::Replaced { by: vec![9] }, at: fw1() };
        assert_eq!(replaced.roles(), [Role::Rssi]);
        let (subject, body) = replaced.compose(&Language::Fr, 1, "", "");
        assert_eq!(subject, "[rocsync] Le plan 7 est remplacé par le plan 9");
        assert!(body.contains("N'approuvez pas le plan 7") && body.contains("Sur fw1.hopital.test, en tant que rocsync :\n  Voir : rocsync plan show 9\n"), "{body}");
        let two = Alert::Superseded { plan: 7, why: Withdrawn::Replaced { by: vec![9, 10] }, at: RunAt::default() };
        assert_eq!(two.compose(&Language::En, 1, "", "").0, "[rocsync] Plan 7 is replaced by plans 9 and 10");
        let gone = Alert::Superseded { plan: 7, why: Withdrawn::NoLongerAsked, at: RunAt::default() };
        assert_eq!(gone.compose(&Language::Fr, 1, "", "").0, "[rocsync] Le plan 7 n'est plus à valider");
        let stale = Alert::Superseded { plan: 7, why: Withdrawn::Stale { current: 8 }, at: RunAt::default() };
        assert!(stale.compose(&Language::Fr, 1, "", "").1.contains("le plan 8 a été appliqué entre-temps"));
        let back = Alert::BackToNormal { source: "https://annuaire.test/urls".into(), since: "2026-11-20T08:00:00Z".into(), down_ms: 5 };
        assert_eq!(back.roles(), Alert::Unreachable { source: String::new(), since: String::new(), error: String::new() }.roles());
        let (subject, body) = back.compose(&Language::Fr, 1, "", "");
        assert_eq!(subject, "[rocsync] Annuaire AMC de nouveau joignable");
        assert!(body.contains("répond de nouveau correctement ; il ne répondait plus depuis le 2026-11-20T08:00:00Z"), "{body}");
        let next = Alert::BackToNormal { source: "https://annuaire.test/urls".into(), since: "2026-11-21T08:00:00Z".into(), down_ms: 6 };
        assert_ne!(back.key(), next.key(), "one per outage");
    }

    #[test]
    fn alerts_survive_the_store_as_json() {
        let a = blocked(Some(1), false);
        let text = serde_json::to_string(&a).unwrap();
        assert!(text.starts_with(r#"{"kind":"blocked""#), "{text}");
        assert_eq!(serde_json::from_str::<Alert>(&text).unwrap(), a);
        // Queued by an older rocsync: read with the fields it lacked empty.
        let old = r#"{"kind":"review","plan":3,"diff":"+ a.test","reasons":[]}"#;
        assert_eq!(
            serde_json::from_str::<Alert>(old).unwrap(),
            Alert::Review { plan: 3, diff: "+ a.test".into(), reasons: vec![], closing: None, at: RunAt::default() }
        );
        let superseded = Alert::Superseded { plan: 7, why: Withdrawn::Replaced { by: vec![9] }, at: fw1() };
        assert_eq!(serde_json::from_str::<Alert>(&serde_json::to_string(&superseded).unwrap()).unwrap(), superseded);
    }
}
