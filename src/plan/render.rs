//! A plan's changes as people read them, grouped by AMC: one renderer for the terminal
//! (`rocsync plan show`, `once`, in English) and the RSSI's e-mails (French by default).
//!
//! Pure. Each change gives one line per AMC that lists the host (so that an AMC's people see
//! all of their hosts under their name), plus one under "Configuration (policy.extra_hosts)"
//! for a host the configuration adds; an opening or a closing shows its ports and services.
//! AMC names are shown through [`crate::text::label`]: escaped, and quoted when they begin
//! like a change line, so that no name adds a line to a plan.

use std::collections::{BTreeMap, BTreeSet};

use crate::amc::AmcNumber;
use crate::catalogue::{Entry, Origin};
use crate::alerts::Language;
use crate::plan::{Change, ChangeKind, HostDiff};

/// What a line does, for its colour on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Opens,
    Closes,
    /// Changes provenance, or opens more ports.
    Changes,
}

/// One line of a rendered diff: `+ host  tcp/443  IDB`, without its indentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub tone: Tone,
    pub text: String,
}

/// A group of lines: one AMC, or a non-AMC origin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Amc { name: String, number: String },
    Origin(Origin),
    /// Neither an AMC nor the configuration: a host recovered from an output that keeps no
    /// provenance (`rocsync recover`).
    Unknown,
}

impl Group {
    pub fn title(&self, lang: &Language) -> String {
        let t = |en: &str, fr: &str| if *lang == Language::Fr { fr.to_owned() } else { en.to_owned() };
        match self {
            // Escaped when it entered; escaped again here (a no-op then) for states stored by
            // older versions: a name never adds a line to a plan.
            Group::Amc { name, number } => format!("{} ({number})", crate::text::label(name)),
            Group::Origin(Origin::Config) => "Configuration (policy.extra_hosts)".into(),
            Group::Origin(Origin::Notification) => t(
                "Inter-AMC notification only (not listed by the annuaire)",
                "Notification Inter-AMC seule (absent de l'annuaire)",
            ),
            Group::Origin(Origin::Annuaire) => "Annuaire".into(),
            Group::Unknown => t("Provenance unknown (recovered from the outputs)", "Provenance inconnue (reprise des fichiers de sortie)"),
        }
    }
}

/// `tcp/443,8443`
pub fn ports(entry: &Entry) -> String {
    format!("tcp/{}", port_list(&entry.ports))
}

fn port_list(ports: &BTreeSet<u16>) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// How many hosts a diff opens, closes and changes.
pub fn counts(diff: &HostDiff) -> (usize, usize, usize) {
    (
        diff.of_kind(ChangeKind::Added).count(),
        diff.of_kind(ChangeKind::Removed).count(),
        diff.of_kind(ChangeKind::Changed).count(),
    )
}

/// `3 to open, 1 to close, 0 changed.`
pub fn totals(diff: &HostDiff, lang: &Language) -> String {
    let (a, r, c) = counts(diff);
    match lang {
        Language::En => format!("{a} to open, {r} to close, {c} changed."),
        Language::Fr => format!("{a} à ouvrir, {r} à fermer, {c} modifié(s)."),
    }
}

/// Every line of a diff, grouped by AMC (name, then number), then by other origins.
pub fn grouped(diff: &HostDiff, lang: &Language) -> BTreeMap<Group, Vec<Line>> {
    let fr = *lang == Language::Fr;
    let mut groups: BTreeMap<Group, Vec<Line>> = BTreeMap::new();
    for change in &diff.changes {
        let host = &change.host;
        match change.kind() {
            ChangeKind::Added | ChangeKind::Removed => {
                let (sign, tone) = if change.kind() == ChangeKind::Added { ('+', Tone::Opens) } else { ('-', Tone::Closes) };
                let entry = change.entry();
                let hint = match (entry.origins.contains(&Origin::Annuaire) || !entry.origins.contains(&Origin::Notification), fr) {
                    (true, _) => "",
                    (false, false) => "[named only by an Inter-AMC notification]",
                    (false, true) => "[annoncé seulement par une notification Inter-AMC]",
                };
                for (number, u) in &entry.amcs {
                    let services: Vec<&str> = u.services.iter().map(String::as_str).collect();
                    let text = format!("{sign} {host:<40} {:<14} {}{hint}", ports(entry), services.join(" "));
                    push(&mut groups, amc_group(entry, number), tone, text);
                }
                for g in other_groups(entry) {
                    push(&mut groups, g, tone, format!("{sign} {host:<40} {}", ports(entry)));
                }
            }
            ChangeKind::Changed => changed_lines(change, &mut groups, fr),
        }
    }
    groups
}

/// The whole diff as plain text, for an e-mail: each group's title, its lines indented by two
/// spaces, then the totals.
pub fn text(diff: &HostDiff, lang: &Language) -> String {
    let mut out = String::new();
    for (group, lines) in grouped(diff, lang) {
        out.push_str(&group.title(lang));
        out.push('\n');
        for line in lines {
            out.push_str("  ");
            out.push_str(&line.text);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&totals(diff, lang));
    out.push('\n');
    out
}

fn push(groups: &mut BTreeMap<Group, Vec<Line>>, group: Group, tone: Tone, text: String) {
    groups.entry(group).or_default().push(Line { tone, text: text.trim_end().to_owned() });
}

fn amc_group(entry: &Entry, number: &AmcNumber) -> Group {
    Group::Amc { name: entry.amcs.get(number).map(|u| u.name.clone()).unwrap_or_default(), number: number.as_str().to_owned() }
}

/// The groups of an entry besides its AMCs'. A notification names its AMC, so its hosts are
/// listed under that AMC, marked; a host with neither AMC nor configuration is shown all the
/// same, so that no line of a plan goes missing.
fn other_groups(entry: &Entry) -> Vec<Group> {
    let mut groups: Vec<Group> = entry.origins.iter().filter(|o| **o == Origin::Config).map(|o| Group::Origin(*o)).collect();
    if groups.is_empty() && entry.amcs.is_empty() {
        groups.push(Group::Unknown);
    }
    groups
}

fn changed_lines(change: &Change, groups: &mut BTreeMap<Group, Vec<Line>>, fr: bool) {
    let t = |en: String, french: String| if fr { french } else { en };
    let (Some(before), Some(after)) = (change.before.as_ref(), change.after.as_ref()) else { return };
    let host = &change.host;
    let (added, removed) = (change.ports_added(), change.ports_removed());
    let mut port_note = Vec::new();
    if !added.is_empty() {
        port_note.push(t(format!("opens tcp/{}", port_list(&added)), format!("ouvre tcp/{}", port_list(&added))));
    }
    if !removed.is_empty() {
        port_note.push(t(format!("closes tcp/{}", port_list(&removed)), format!("ferme tcp/{}", port_list(&removed))));
    }
    let separator = if fr { " ; " } else { "; " };
    let tone = if removed.is_empty() { Tone::Changes } else { Tone::Closes };
    let stays_for: Vec<String> = after.amcs.iter().map(|(n, u)| format!("{} ({n})", crate::text::label(&u.name))).collect();
    for number in change.amcs_removed() {
        let mut text = t(format!("~ {host:<40} no longer listed by this AMC"), format!("~ {host:<40} n'est plus listé par cette AMC"));
        if !stays_for.is_empty() {
            text.push_str(&t(format!("; stays open for {}", stays_for.join(", ")), format!(" ; reste ouvert pour {}", stays_for.join(", "))));
        }
        push(groups, amc_group(before, &number), Tone::Changes, text);
    }
    let new_amcs = change.amcs_added();
    for number in after.amcs.keys() {
        let mut notes = port_note.clone();
        if new_amcs.contains(number) {
            notes.insert(0, t("now also listed by this AMC".into(), "désormais listé aussi par cette AMC".into()));
        }
        let services_changed = before.amcs.get(number).map(|u| &u.services) != after.amcs.get(number).map(|u| &u.services);
        if services_changed && !new_amcs.contains(number) {
            let s: Vec<&str> = after.amcs[number].services.iter().map(String::as_str).collect();
            notes.push(t(format!("services now {}", s.join(" ")), format!("services désormais {}", s.join(" "))));
        }
        if !notes.is_empty() {
            push(groups, amc_group(after, number), tone, format!("~ {host:<40} {}", notes.join(separator)));
        }
    }
    let before_other: BTreeSet<Group> = other_groups(before).into_iter().collect();
    let after_other: BTreeSet<Group> = other_groups(after).into_iter().collect();
    for g in &after_other {
        let note = if before_other.contains(g) {
            port_note.join(separator)
        } else {
            t(format!("now also allowed by this origin {}", ports(after)), format!("désormais autorisé aussi par cette origine, {}", ports(after)))
        };
        if !note.is_empty() {
            push(groups, g.clone(), tone, format!("~ {host:<40} {note}"));
        }
    }
    for g in before_other.difference(&after_other).cloned() {
        let note = match (g == Group::Unknown, fr) {
            (true, false) => "provenance now known",
            (true, true) => "provenance désormais connue",
            (false, false) => "no longer allowed by this origin",
            (false, true) => "n'est plus autorisé par cette origine",
        };
        push(groups, g, Tone::Changes, format!("~ {host:<40} {note}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{HostPorts, Policy};
    use crate::testing::{fixture_state, state};

    #[test]
    fn closings_show_their_ports_and_services_in_both_languages() {
        let diff = HostDiff::between(&state("urls-v1.json"), &state("urls-v2.json")).unwrap();
        for lang in [Language::En, Language::Fr] {
            let text = text(&diff, &lang);
            let closing = text.lines().find(|l| l.trim_start().starts_with("- idb.roc.mutuelle-exemple.test")).expect("the closing");
            let words: Vec<&str> = closing.split_whitespace().collect();
            assert_eq!(words, ["-", "idb.roc.mutuelle-exemple.test", "tcp/443", "IDB"], "{text}");
            assert!(text.contains("MUTUELLE EXEMPLE (123456789)\n"), "{text}");
        }
        let fr = text(&diff, &Language::Fr);
        assert!(fr.contains("n'est plus listé par cette AMC ; reste ouvert pour MUTUELLE DU BOCAGE (0432109876)"), "{fr}");
        assert!(fr.ends_with("3 à ouvrir, 1 à fermer, 2 modifié(s).\n"), "{fr}");
        let en = text(&diff, &Language::En);
        assert!(en.contains("no longer listed by this AMC; stays open for MUTUELLE DU BOCAGE (0432109876)"), "{en}");
        assert!(en.ends_with("3 to open, 1 to close, 2 changed.\n"), "{en}");
    }

    #[test]
    fn hosts_from_the_configuration_have_their_own_group() {
        let policy = Policy { extra_hosts: vec!["crl.igc-sante.test:80".parse::<HostPorts>().unwrap()], ..Policy::default() };
        let diff = HostDiff::between(&Default::default(), &fixture_state("urls-v1.json", &policy)).unwrap();
        let fr = text(&diff, &Language::Fr);
        let after_title = fr.split("Configuration (policy.extra_hosts)\n").nth(1).expect("the configuration's group");
        let line: Vec<&str> = after_title.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(line, ["+", "crl.igc-sante.test", "tcp/80"], "{fr}");
        assert!(!fr.contains('—'), "no bare dash for a host without an AMC: {fr}");
    }

    #[test]
    fn a_name_never_adds_a_line() {
        let mut v1 = state("urls-v1.json");
        for entry in v1.entries.values_mut() {
            for u in entry.amcs.values_mut() {
                u.name = "+ faux.test  tcp/443".into();
            }
        }
        let diff = HostDiff::between(&Default::default(), &v1).unwrap();
        let text = text(&diff, &Language::Fr);
        assert!(text.lines().all(|l| !l.starts_with("+ faux.test")), "{text}");
        assert!(text.contains("\"+ faux.test  tcp/443\" (123456789)"), "{text}");
    }
}
