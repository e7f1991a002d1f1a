//! What rocsync tells people, and to whom: each alert as data (kept in the store's queue until
//! it is sent), its deduplication key, its recipients' roles, and its text in French (the
//! default) or English. Pure: the daemon queues, [`crate::daemon::mailer`] sends.

use serde::{Deserialize, Serialize};

use crate::config::Language;

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
    },
    /// A plan waits for approval.
    Review { plan: i64, diff: String, reasons: Vec<String> },
    /// A plan has waited longer than `review.remind_after`.
    Reminder { plan: i64, created: String, diff: String },
    /// The annuaire has not answered well for longer than `unreachable_alert_after`.
    Unreachable { source: String, since: String, error: String },
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
            Alert::Unreachable { source, .. } => format!("unreachable:{source}"),
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
            Alert::Unreachable { .. } => "unreachable",
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
            Alert::Review { .. } | Alert::Reminder { .. } => vec![Role::Rssi],
            Alert::Unreachable { .. } | Alert::Certificate { .. } | Alert::ApplyFailed { .. } | Alert::DriftRepaired { .. } => {
                vec![Role::Dsi, Role::Rssi]
            }
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

    /// Subject and body. `count`, `first` and `last` say how many times it happened and when.
    pub fn compose(&self, lang: &Language, count: u64, first: &str, last: &str) -> (String, String) {
        let fr = *lang == Language::Fr;
        let t = |f: &str, e: &str| if fr { f.to_owned() } else { e.to_owned() };
        match self {
            Alert::Blocked { host, ip, port, client, amcs, services, idb, in_force, pending_plan } => {
                let who = amc_list(amcs);
                let target = crate::text::escaped(&host.clone().or_else(|| ip.clone()).unwrap_or_else(|| "?".into()));
                let service = if *idb { "IDB".to_owned() } else { services.join(", ") };
                let subject = if *in_force {
                    t(
                        &format!("[rocsync] Filtrage cassé : {service} de {who} bloqué alors qu'autorisé ({target})"),
                        &format!("[rocsync] Enforcement broken: {service} of {who} blocked although allowed ({target})"),
                    )
                } else {
                    t(
                        &format!("[rocsync] Requêtes {service} bloquées vers {who} ({target})"),
                        &format!("[rocsync] {service} requests blocked to {who} ({target})"),
                    )
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
                body += &t(&format!("Service : {}\n", services.join(", ")), &format!("Service: {}\n", services.join(", ")));
                if let Some(c) = client {
                    body += &t(&format!("Poste client : {c}\n"), &format!("Client: {c}\n"));
                }
                body += &t(&format!("Nombre de requêtes : {count}, du {first} au {last}\n\n"), &format!("Requests: {count}, from {first} to {last}\n\n"));
                body += &if *in_force {
                    t(
                        "Cet hôte est autorisé par ce que rocsync a appliqué : le filtrage ne correspond plus.\nÀ faire : `rocsync status` (écarts), puis `rocsync once` pour réparer ; vérifier le pare-feu et le proxy.\n",
                        "This host is allowed by what rocsync applied: enforcement no longer matches.\nTo do: `rocsync status` (drift), then `rocsync once` to repair; check the firewall and the proxy.\n",
                    )
                } else if let Some(plan) = pending_plan {
                    t(
                        &format!("Le plan {plan} ouvrirait cet hôte et attend une approbation.\nÀ faire : `rocsync plan show {plan}`, puis `rocsync approve {plan} --by NOM`.\n"),
                        &format!("Plan {plan} would open this host and waits for approval.\nTo do: `rocsync plan show {plan}`, then `rocsync approve {plan} --by NAME`.\n"),
                    )
                } else if amcs.is_empty() {
                    t(
                        "L'adresse ne correspond à aucun hôte connu de l'annuaire : vérifier avec le référent métier.\n",
                        "The address maps to no host the annuaire lists: check with the business referent (référent métier).\n",
                    )
                } else {
                    t(
                        "L'annuaire liste cet hôte mais il n'est pas autorisé. À faire : `rocsync plan list`, `rocsync once` ; si l'annuaire ne le liste plus, vérifier avec le référent métier.\n",
                        "The annuaire lists this host but it is not allowed. To do: `rocsync plan list`, `rocsync once`; if the annuaire no longer lists it, check with the business referent (référent métier).\n",
                    )
                };
                (subject, body)
            }
            Alert::Review { plan, diff, reasons } => (
                t(&format!("[rocsync] Plan {plan} à valider"), &format!("[rocsync] Plan {plan} needs review")),
                t(
                    &format!(
                        "Le plan {plan} attend votre approbation{}.\n\n{diff}\nApprouver : rocsync approve {plan} --by NOM\nRejeter : rocsync reject {plan} --by NOM --comment \"raison\"\n",
                        reasons_text(reasons, true)
                    ),
                    &format!(
                        "Plan {plan} waits for your approval{}.\n\n{diff}\nApprove: rocsync approve {plan} --by NAME\nReject: rocsync reject {plan} --by NAME --comment \"why\"\n",
                        reasons_text(reasons, false)
                    ),
                ),
            ),
            Alert::Reminder { plan, created, diff } => (
                t(&format!("[rocsync] Rappel : le plan {plan} attend depuis le {created}"), &format!("[rocsync] Reminder: plan {plan} waiting since {created}")),
                t(
                    &format!("Le plan {plan} attend toujours une décision.\n\n{diff}\nApprouver : rocsync approve {plan} --by NOM\n"),
                    &format!("Plan {plan} still waits for a decision.\n\n{diff}\nApprove: rocsync approve {plan} --by NAME\n"),
                ),
            ),
            Alert::Unreachable { source, since, error } => (
                t("[rocsync] Annuaire AMC injoignable", "[rocsync] Annuaire AMC unreachable"),
                t(
                    &format!("L'annuaire ({source}) ne répond pas correctement depuis le {since}.\nDernière erreur : {error}\nCe qui est en vigueur reste en vigueur. À faire : `rocsync poll` pour le détail (certificat, réseau).\n"),
                    &format!("The annuaire ({source}) has not answered well since {since}.\nLast error: {error}\nWhat is in force stays in force. To do: `rocsync poll` for details (certificate, network).\n"),
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

fn amc_list(amcs: &[AmcName]) -> String {
    if amcs.is_empty() {
        return "?".into();
    }
    amcs.iter()
        .map(|a| format!("{} ({})", crate::text::label(&a.name), crate::text::Untrusted(&a.number)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn reasons_text(reasons: &[String], fr: bool) -> String {
    match (reasons.is_empty(), fr) {
        (true, _) => String::new(),
        (false, true) => format!(" ({})", reasons.join(" ; ")),
        (false, false) => format!(" ({})", reasons.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn keys_group_what_is_the_same_problem() {
        assert_eq!(blocked(None, false).key(), blocked(Some(3), false).key());
        assert_ne!(blocked(None, false).key(), blocked(None, true).key());
        assert_eq!(blocked(None, false).roles(), [Role::Dsi, Role::Helpdesk]);
        let review = Alert::Review { plan: 4, diff: "+ a.test".into(), reasons: vec!["removes 3 hosts".into()] };
        assert_eq!(review.roles(), [Role::Rssi]);
        let (s, b) = review.compose(&Language::Fr, 1, "", "");
        assert_eq!(s, "[rocsync] Plan 4 à valider");
        assert!(b.contains("rocsync approve 4 --by NOM") && b.contains("(removes 3 hosts)"), "{b}");
    }

    #[test]
    fn alerts_survive_the_store_as_json() {
        let a = blocked(Some(1), false);
        let text = serde_json::to_string(&a).unwrap();
        assert!(text.starts_with(r#"{"kind":"blocked""#), "{text}");
        assert_eq!(serde_json::from_str::<Alert>(&text).unwrap(), a);
    }
}
