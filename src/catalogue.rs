//! The catalogue: every host the annuaire lists, with who lists it; and the desired state that
//! the hospital's policy makes of it.
//!
//! Pure: no I/O, no clock. A [`Catalogue`] says what the annuaire says; [`desired`] applies the
//! policy (AMC states, the mirror AMC, `extra_hosts`, `exclude_hosts`) and yields the
//! [`State`] that the sinks should enforce. The same value type holds what is in force.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::amc::{AmcNumber, AmcState};
use crate::host::Host;
use crate::answer::Answer;

/// The port a `domaines` entry is opened on: the AMC services are HTTPS.
pub const DOMAIN_PORT: u16 = 443;

/// One AMC of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmcInfo {
    pub number: AmcNumber,
    pub name: String,
    pub state: AmcState,
}

/// What one AMC uses a host for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    pub ports: BTreeSet<u16>,
    /// Service codes (`IDB`, `CLC`, …); empty for a host listed only in `domaines`.
    pub services: BTreeSet<String>,
}

/// Everything the annuaire lists, host by host. A host that several AMCs list (a shared
/// tiers-payant operator) is one entry with several AMCs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub serial: Option<u64>,
    pub amcs: BTreeMap<AmcNumber, AmcInfo>,
    pub hosts: BTreeMap<Host, BTreeMap<AmcNumber, Use>>,
}

impl Catalogue {
    pub fn from_answer(answer: &Answer) -> Catalogue {
        let mut cat = Catalogue { serial: answer.serial, ..Catalogue::default() };
        for amc in &answer.amcs {
            // An AMC listed twice keeps its first name and state; its hosts add up.
            cat.amcs.entry(amc.number.clone()).or_insert_with(|| AmcInfo {
                number: amc.number.clone(),
                name: amc.name.clone(),
                state: amc.state.clone(),
            });
            for svc in &amc.services {
                let u = cat.use_of(&svc.host, &amc.number);
                u.ports.insert(svc.port);
                u.services.insert(svc.code.clone());
            }
            for host in &amc.domains {
                cat.use_of(host, &amc.number).ports.insert(DOMAIN_PORT);
            }
        }
        cat
    }

    fn use_of(&mut self, host: &Host, amc: &AmcNumber) -> &mut Use {
        self.hosts.entry(host.clone()).or_default().entry(amc.clone()).or_default()
    }

    /// The AMCs whose hosts the policy opens.
    fn is_open(&self, amc: &AmcNumber, policy: &Policy) -> bool {
        match self.amcs.get(amc).map(|a| &a.state) {
            Some(AmcState::CircleOfTrust | AmcState::Unknown(_)) => true,
            Some(AmcState::UnderWatch) => policy.mirror_amc.contains(amc),
            Some(AmcState::Left) | None => false,
        }
    }
}

/// Where an entry of the state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Listed by the annuaire, the authoritative source.
    Annuaire,
    /// `policy.extra_hosts` in the configuration.
    Config,
    /// Named only by an Inter-AMC notification: always waits for a person's approval.
    Notification,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Annuaire => "annuaire",
            Origin::Config => "config",
            Origin::Notification => "notification",
        })
    }
}

/// One AMC's part in an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmcUse {
    pub name: String,
    pub services: BTreeSet<String>,
}

/// One allowed host, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub ports: BTreeSet<u16>,
    pub amcs: BTreeMap<AmcNumber, AmcUse>,
    pub origins: BTreeSet<Origin>,
    /// When the host came into force (RFC 3339), kept while it stays; not part of the diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl Entry {
    /// Every service code, across AMCs.
    pub fn services(&self) -> BTreeSet<&str> {
        self.amcs.values().flat_map(|u| u.services.iter().map(String::as_str)).collect()
    }

    /// Same ports and same provenance; `since` does not count.
    pub fn same_as(&self, other: &Entry) -> bool {
        self.ports == other.ports && self.amcs == other.amcs && self.origins == other.origins
    }
}

/// A set of allowed hosts: the desired state, or what is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub entries: BTreeMap<Host, Entry>,
}

impl State {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A host and the ports to open for it, as `extra_hosts` lists it (`host` or `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPorts {
    pub host: Host,
    pub ports: BTreeSet<u16>,
}

impl std::str::FromStr for HostPorts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => {
                let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port number"))?;
                if port == 0 {
                    return Err("port 0 cannot be opened".into());
                }
                (name, port)
            }
            None => (s, DOMAIN_PORT),
        };
        let host = Host::parse(name).map_err(|e| format!("`{name}`: {e}"))?;
        Ok(HostPorts { host, ports: BTreeSet::from([port]) })
    }
}

/// The hospital's choices, from the `[policy]` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Hosts allowed whatever the annuaire says (IGC-Santé CRL and OCSP, the annuaire itself).
    pub extra_hosts: Vec<HostPorts>,
    /// Hosts never allowed: an exact host, or a wildcard that also removes the hosts under it.
    pub exclude_hosts: Vec<Host>,
    /// The AMCs in `production_sous_surveillance` that this hospital chose as its mirror.
    pub mirror_amc: BTreeSet<AmcNumber>,
}

impl Policy {
    /// Whether `exclude_hosts` keeps `host` out.
    pub fn excludes(&self, host: &Host) -> bool {
        self.exclude_hosts.iter().any(|ex| ex.covers(host))
    }
}

/// The desired state: the hosts of every open AMC (in the circle of trust, or under watch and
/// chosen as mirror), plus `extra_hosts`, minus `exclude_hosts`. A host listed by an AMC that
/// left and by one still open stays, for the open one only.
pub fn desired(catalogue: &Catalogue, policy: &Policy) -> State {
    let mut state = State::default();
    for (host, uses) in &catalogue.hosts {
        if policy.excludes(host) {
            continue;
        }
        let mut entry: Option<Entry> = None;
        for (number, u) in uses.iter().filter(|(n, _)| catalogue.is_open(n, policy)) {
            let e = entry.get_or_insert_with(|| Entry {
                ports: BTreeSet::new(),
                amcs: BTreeMap::new(),
                origins: BTreeSet::from([Origin::Annuaire]),
                since: None,
            });
            e.ports.extend(&u.ports);
            let name = catalogue.amcs.get(number).map(|a| a.name.clone()).unwrap_or_default();
            e.amcs.insert(number.clone(), AmcUse { name, services: u.services.clone() });
        }
        if let Some(entry) = entry {
            state.entries.insert(host.clone(), entry);
        }
    }
    for extra in &policy.extra_hosts {
        if policy.excludes(&extra.host) {
            continue;
        }
        let e = state.entries.entry(extra.host.clone()).or_insert_with(|| Entry {
            ports: BTreeSet::new(),
            amcs: BTreeMap::new(),
            origins: BTreeSet::new(),
            since: None,
        });
        e.ports.extend(&extra.ports);
        e.origins.insert(Origin::Config);
    }
    state
}

/// Keeps in `desired` what `applied` holds for the AMCs in `held`: those whose organism the
/// answer listed in a way that cannot be trusted (twice, ambiguously, without a valid state).
/// Such an answer says nothing about them, so nothing of theirs opens or closes because of it.
/// Ports are per host, not per AMC, so a held AMC's host keeps every port it had.
pub fn hold(desired: &mut State, applied: &State, held: &[AmcNumber], policy: &Policy) {
    if held.is_empty() {
        return;
    }
    for (host, before) in &applied.entries {
        let kept: BTreeMap<AmcNumber, AmcUse> =
            before.amcs.iter().filter(|(n, _)| held.contains(n)).map(|(n, u)| (n.clone(), u.clone())).collect();
        if kept.is_empty() || policy.excludes(host) {
            continue;
        }
        let entry = desired.entries.entry(host.clone()).or_insert_with(|| Entry {
            ports: BTreeSet::new(),
            amcs: BTreeMap::new(),
            origins: BTreeSet::new(),
            since: None,
        });
        entry.ports.extend(&before.ports);
        entry.origins.insert(Origin::Annuaire);
        entry.amcs.extend(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::annuaire;
    use crate::testing::fixture_state;

    fn hosts(state: &State) -> Vec<&str> {
        state.entries.keys().map(Host::as_str).collect()
    }

    fn amc(n: &str) -> AmcNumber {
        AmcNumber::parse(n).unwrap()
    }

    #[test]
    fn fixture_v1_opens_circle_of_trust_only() {
        let state = fixture_state("urls-v1.json", &Policy::default());
        assert_eq!(
            hosts(&state),
            [
                "*.api.mutuelle-exemple.test",
                "*.roc.mgt-sante.test",
                "amc.mgt-sante.test",
                "clc.otp-ouest.test",
                "clc.roc.mutuelle-exemple.test",
                "idb.otp-ouest.test",
                "idb.roc.mutuelle-exemple.test",
                "roc-clc.prevoyance-artisans.test",
                "roc-idb.prevoyance-artisans.test",
                "roc.ip-zero.test",
                "roc.mutuelle-exemple.test",
                "ws.caisse-solidaire.test",
            ]
        );
        let clc = &state.entries[&Host::parse("clc.roc.mutuelle-exemple.test").unwrap()];
        assert_eq!(clc.ports, BTreeSet::from([8443]));
        let shared = &state.entries[&Host::parse("idb.otp-ouest.test").unwrap()];
        assert_eq!(shared.amcs.keys().cloned().collect::<Vec<_>>(), [amc("0432109876"), amc("567891234")]);
        let ann = &state.entries[&Host::parse("roc-clc.prevoyance-artisans.test").unwrap()];
        assert_eq!(ann.services(), BTreeSet::from(["ANN", "CLC"]));
    }

    #[test]
    fn mirror_amc_is_opened_only_when_chosen() {
        let policy = Policy { mirror_amc: BTreeSet::from([amc("678912345")]), ..Policy::default() };
        let state = fixture_state("urls-v1.json", &policy);
        assert!(state.entries.contains_key(&Host::parse("idb.mutuelle-miroir.test").unwrap()));
        assert!(!state.entries.contains_key(&Host::parse("idb.ancienne-mutuelle.test").unwrap()));
    }

    #[test]
    fn extra_and_excluded_hosts() {
        let policy = Policy {
            extra_hosts: vec!["crl.igc-sante.test:80".parse().unwrap(), "roc.ip-zero.test".parse().unwrap()],
            exclude_hosts: vec![Host::parse("*.mutuelle-exemple.test").unwrap()],
            ..Policy::default()
        };
        let state = fixture_state("urls-v1.json", &policy);
        assert!(!hosts(&state).iter().any(|h| h.ends_with("mutuelle-exemple.test")));
        let crl = &state.entries[&Host::parse("crl.igc-sante.test").unwrap()];
        assert_eq!((crl.ports.clone(), crl.origins.clone()), (BTreeSet::from([80]), BTreeSet::from([Origin::Config])));
        let zero = &state.entries[&Host::parse("roc.ip-zero.test").unwrap()];
        assert_eq!(zero.origins, BTreeSet::from([Origin::Annuaire, Origin::Config]));
        assert!("a.test:0".parse::<HostPorts>().is_err());
        assert!("a.test:https".parse::<HostPorts>().is_err());
    }

    #[test]
    fn a_host_of_a_left_amc_stays_for_an_open_one() {
        let body = br#"{"organismes": [
            {"numero_amc": "111111111", "libelle": "PARTI", "etat": "sorti",
             "services": [{"code": "IDB", "url": "https://shared.op.test:8443/"}]},
            {"numero_amc": "222222222", "libelle": "RESTE", "etat": "cercle_de_confiance",
             "services": [{"code": "IDB", "url": "https://shared.op.test/"}]}]}"#;
        let answer = annuaire::parse(body, None).unwrap();
        let state = desired(&Catalogue::from_answer(&answer), &Policy::default());
        let e = &state.entries[&Host::parse("shared.op.test").unwrap()];
        assert_eq!(e.ports, BTreeSet::from([443]));
        assert_eq!(e.amcs.keys().cloned().collect::<Vec<_>>(), [amc("222222222")]);
    }

    #[test]
    fn an_amc_listed_twice_opens_nothing_and_keeps_what_is_in_force() {
        let before = br#"{"serie": 1, "organismes": [
            {"numero_amc": "789123456", "libelle": "A", "etat": "cercle_de_confiance",
             "services": [{"code": "IDB", "url": "https://idb.a.test/"}]}]}"#;
        let after = br#"{"serie": 2, "organismes": [
            {"numero_amc": "789123456", "libelle": "A", "etat": "cercle_de_confiance",
             "services": [{"code": "IDB", "url": "https://new.a.test/"}]},
            {"numero_amc": "0789123456", "libelle": "A bis", "etat": "sorti",
             "services": [{"code": "IDB", "url": "https://other.a.test/"}]}]}"#;
        let applied = desired(&Catalogue::from_answer(&annuaire::parse(before, None).unwrap()), &Policy::default());
        let answer = annuaire::parse(after, None).unwrap();
        assert!(answer.amcs.is_empty(), "both entries rejected: {:?}", answer.amcs);
        assert_eq!(answer.rejected.len(), 2);
        assert!(answer.rejected[0].reason.contains("listed 2 times"), "{:?}", answer.rejected);
        assert_eq!(answer.held, [amc("789123456")]);
        let mut wanted = desired(&Catalogue::from_answer(&answer), &Policy::default());
        hold(&mut wanted, &applied, &answer.held, &Policy::default());
        assert_eq!(wanted, applied, "nothing opens, nothing closes");
    }

    #[test]
    fn ambiguous_or_stateless_organisms_are_held() {
        let body = br#"{"organismes": [
            {"numero_amc": "111111111", "libelle": "X", "etat": "sorti", "etat": "cercle_de_confiance",
             "services": [{"code": "IDB", "url": "https://x.a.test/"}]},
            {"numero_amc": "222222222", "libelle": "Y", "etat": null,
             "services": [{"code": "IDB", "url": "https://y.a.test/"}]},
            {"numero_amc": "333333333", "libelle": "Z",
             "services": [{"code": "IDB", "url": "https://z.a.test/"}]}]}"#;
        let answer = annuaire::parse(body, None).unwrap();
        assert!(answer.amcs.is_empty());
        assert_eq!(answer.held, [amc("111111111"), amc("222222222"), amc("333333333")]);
        let xml = br#"<listeUrls><organisme numeroAmc="111111111" etat="sorti" a:etat="cercle_de_confiance" xmlns:a="urn:x">
            <service code="IDB"><url>https://x.a.test/</url></service></organisme></listeUrls>"#;
        let answer = annuaire::parse(xml, None).unwrap();
        assert!(answer.amcs.is_empty() && answer.held == [amc("111111111")], "{answer:?}");
    }

    /// Found by the attacker helper: an `<organisme>` nested in another made the outer one
    /// vanish without a word, so its hosts would have closed as if the annuaire had dropped them.
    #[test]
    fn a_nested_organisme_is_reported_and_the_outer_amc_held() {
        let xml = br#"<listeUrls serie="3"><organisme numeroAmc="423456789" libelle="OUT" etat="cercle_de_confiance">
            <service code="IDB"><url>https://idb.out.test/</url></service>
            <organisme numeroAmc="523456789" libelle="IN" etat="cercle_de_confiance"><domaine>in.evil.test</domaine></organisme>
            <domaine>outer.evil.test</domaine></organisme>
            <organisme numeroAmc="623456789" libelle="OK" etat="cercle_de_confiance"><domaine>ok.a.test</domaine></organisme></listeUrls>"#;
        let answer = annuaire::parse(xml, None).unwrap();
        assert_eq!(answer.amcs.iter().map(|a| a.number.as_str()).collect::<Vec<_>>(), ["623456789"]);
        assert_eq!(answer.held, [amc("423456789")]);
        assert!(answer.rejected.iter().any(|r| r.reason.contains("nested")), "{:?}", answer.rejected);
        assert!(answer.rejected.len() >= 2, "{:?}", answer.rejected);
    }
}
