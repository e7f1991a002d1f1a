//! The console's openings page (issue 15): `rocsync report openings` for any signed-in role,
//! read-only.

use askama::Template;

use super::views::Head;
use crate::engine::Engine;
use crate::store::StoreError;
use crate::usage::DEFAULT_UNUSED_FOR;

/// The page's own words; the menu entry is in [`super::labels`].
pub struct OpeningsLabels {
    pub title: &'static str,
    pub since: &'static str,
    pub not_yet: &'static str,
    pub col_host: &'static str,
    pub col_ports: &'static str,
    pub col_amcs: &'static str,
    pub col_services: &'static str,
    pub col_in_force_since: &'static str,
    pub col_last_used: &'static str,
    pub col_requests: &'static str,
    pub col_blocked: &'static str,
    pub unused: &'static str,
    pub never: &'static str,
}

const FR: OpeningsLabels = OpeningsLabels {
    title: "Ouvertures utilisées",
    since: "Requêtes comptées depuis le",
    not_yet: "Aucune requête comptée pour l'instant : les journaux suivis par rocsync run les comptent.",
    col_host: "Hôte",
    col_ports: "Ports",
    col_amcs: "AMC",
    col_services: "Services",
    col_in_force_since: "En vigueur depuis",
    col_last_used: "Dernière utilisation",
    col_requests: "Requêtes (30 j)",
    col_blocked: "Bloquées (30 j)",
    unused: "inutilisée depuis 90 jours",
    never: "jamais",
};

const EN: OpeningsLabels = OpeningsLabels {
    title: "Openings in use",
    since: "Requests counted since",
    not_yet: "No request counted yet: the logs that rocsync run follows count them.",
    col_host: "Host",
    col_ports: "Ports",
    col_amcs: "AMCs",
    col_services: "Services",
    col_in_force_since: "In force since",
    col_last_used: "Last used",
    col_requests: "Requests (30 d)",
    col_blocked: "Blocked (30 d)",
    unused: "unused for 90 days",
    never: "never",
};

/// The words for the page in `lang` (`fr` or `en`, as [`Head::lang`]).
pub fn labels(lang: &str) -> &'static OpeningsLabels {
    if lang == "fr" { &FR } else { &EN }
}

/// One opening, as shown.
pub struct OpeningRow {
    pub host: String,
    pub ports: String,
    pub amcs: String,
    pub services: String,
    pub in_force_since: String,
    pub last_used: String,
    pub requests: u64,
    pub blocked: u64,
    pub unused: bool,
}

#[derive(Template)]
#[template(path = "console/openings.html")]
pub struct OpeningsPage {
    pub head: Head,
    pub t: &'static OpeningsLabels,
    /// When counting began, empty before.
    pub since: String,
    pub rows: Vec<OpeningRow>,
}

/// The openings report of what is in force, with the default 90 days for "unused".
pub fn page(engine: &Engine, head: Head) -> Result<OpeningsPage, StoreError> {
    let t = labels(head.lang);
    let applied = engine.store.applied()?;
    let report = crate::usage::openings(
        &applied.state,
        &engine.store.usage_rows(0)?,
        engine.store.counting_since()?,
        crate::usage::now(),
        DEFAULT_UNUSED_FOR,
    );
    let rows = report
        .openings
        .into_iter()
        .map(|o| OpeningRow {
            host: o.host,
            ports: o.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
            amcs: o.amcs.join(", "),
            services: o.services.join(", "),
            in_force_since: o.in_force_since.unwrap_or_default(),
            last_used: o.last_used.unwrap_or_else(|| t.never.to_owned()),
            requests: o.requests_30d,
            blocked: o.blocked_30d,
            unused: o.unused,
        })
        .collect();
    Ok(OpeningsPage { head, t, since: report.since.unwrap_or_default(), rows })
}
