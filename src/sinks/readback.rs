//! What the output files rocsync wrote say they hold: the plan their header names and the hosts
//! they allow. When the store is lost, the outputs are the only record of what is in force:
//! rocsync refuses to plan from an empty state while they exist, and `rocsync recover` records
//! what they hold. Pure functions of the text, and [`read`], which reads the configured files.
//!
//! Formats keep more or less: the JSON export keeps every entry whole; the nft script keeps
//! hosts, ports and AMCs in its comments; the Stormshield objects keep ports, for resolved exact
//! hosts only; Squid, HAProxy and the plain list keep the hosts alone, and Squid leaves out a host
//! that a wildcard covers. A file is hostile input like any other: every host passes
//! [`Host::parse`], and a line that does not read as rocsync writes it is counted, not guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::amc::AmcNumber;
use crate::catalogue::{AmcUse, DOMAIN_PORT, Entry, Origin, State};
use crate::host::Host;
use crate::sinks::files::{Export, FileExport};

/// One output file, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub path: PathBuf,
    /// The export's name in the configuration (`squid`, `plain`, `nft_script`, …).
    pub kind: &'static str,
    /// The plan the header names, when the format has a header and it is rocsync's.
    pub plan: Option<i64>,
    /// Every host the file allows, with its entry when the format keeps the ports.
    pub hosts: BTreeMap<Host, Option<Entry>>,
    /// Lines that do not read as rocsync writes them (edited by hand, or another program's).
    pub unreadable: usize,
}

impl ReadBack {
    /// Whether rocsync wrote it, as far as the file tells: its header names a plan; for the
    /// formats without a header (plain list, Stormshield objects), it lists hosts.
    pub fn written_by_rocsync(&self) -> bool {
        self.plan.is_some() || (!has_header(self.kind) && !self.hosts.is_empty())
    }

    /// `/srv/out/squid.acl (plan 4)`, for messages.
    pub fn describe(&self) -> String {
        match self.plan {
            Some(plan) => format!("{} (plan {plan})", self.path.display()),
            None => format!("{} (no header)", self.path.display()),
        }
    }
}

/// An output that exists but cannot be read: what it holds could be in force.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the output {}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The most of an export read back: an export of 100,000 hosts is a few megabytes.
const READ_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads back every configured output that exists (a missing one is skipped).
pub fn read(exports: &[FileExport]) -> Result<Vec<ReadBack>, ReadError> {
    let mut found = Vec::new();
    for export in exports {
        // Only a regular file, and at most READ_LIMIT bytes: a FIFO or a device planted at an
        // export's path would block or never end.
        match std::fs::metadata(&export.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ReadError { path: export.path.clone(), source }),
            Ok(meta) if !meta.is_file() => {
                let source = std::io::Error::other("not a regular file");
                return Err(ReadError { path: export.path.clone(), source });
            }
            Ok(_) => {}
        }
        match crate::sources::read_limited(&export.path, READ_LIMIT) {
            Ok(bytes) => found.push(read_text(&export.export, &export.path, &String::from_utf8_lossy(&bytes))),
            Err(e) => return Err(ReadError { path: export.path.clone(), source: std::io::Error::other(crate::error_chain(&e)) }),
        }
    }
    Ok(found)
}

/// What the text of an output of kind `export`, found at `path`, holds.
pub fn read_text(export: &Export, path: &Path, text: &str) -> ReadBack {
    let mut back = ReadBack { path: path.to_owned(), kind: export.key(), plan: None, hosts: BTreeMap::new(), unreadable: 0 };
    match export {
        Export::Json => read_json(text, &mut back),
        Export::NftScript(_) => {
            back.plan = header_plan(text);
            read_nft_comments(text, &mut back);
        }
        Export::Squid => {
            back.plan = header_plan(text);
            read_lines(text, &mut back, squid_host);
        }
        Export::Haproxy => {
            back.plan = header_plan(text);
            read_lines(text, &mut back, haproxy_host);
        }
        Export::Plain(_) => read_lines(text, &mut back, plain_host),
        Export::Stormshield => read_stormshield(text, &mut back),
    }
    back
}

/// The state the files allow together: every host any of them lists, so that nothing open in
/// effect is taken as closed. An entry comes from the file that keeps the most of it (JSON, then
/// the nft script, then the Stormshield objects), with the ports of every file that keeps
/// ports; a host whose port no file keeps is taken as tcp/443, its provenance unknown.
pub fn merge(files: &[ReadBack]) -> State {
    let mut ranked: Vec<&ReadBack> = files.iter().collect();
    ranked.sort_by_key(|f| rank(f.kind));
    let mut entries: BTreeMap<Host, Option<Entry>> = BTreeMap::new();
    for file in ranked {
        for (host, entry) in &file.hosts {
            let slot = entries.entry(host.clone()).or_insert(None);
            let Some(entry) = entry else { continue };
            match slot.as_mut() {
                Some(have) => have.ports.extend(entry.ports.iter().copied()),
                None => *slot = Some(entry.clone()),
            }
        }
    }
    State { entries: entries.into_iter().map(|(host, entry)| (host, entry.unwrap_or_else(unknown_entry))).collect() }
}

/// Hosts whose port no file keeps: [`merge`] records them on tcp/443.
pub fn hosts_without_port(files: &[ReadBack]) -> BTreeSet<Host> {
    let all: BTreeSet<&Host> = files.iter().flat_map(|f| f.hosts.keys()).collect();
    all.into_iter().filter(|h| files.iter().all(|f| !matches!(f.hosts.get(*h), Some(Some(_))))).cloned().collect()
}

/// Hosts that not every complete list holds (the plain list, the HAProxy ACL, the nft script
/// and the JSON export each list every host in force), with the files that hold them: an edit
/// by hand, or a file left from another configuration. [`merge`] keeps them; they deserve a look.
pub fn disagreements(files: &[ReadBack]) -> Vec<(Host, Vec<PathBuf>)> {
    let complete: Vec<&ReadBack> = files.iter().filter(|f| lists_every_host(f.kind)).collect();
    let all: BTreeSet<&Host> = complete.iter().copied().flat_map(|f| f.hosts.keys()).collect();
    all.into_iter()
        .filter_map(|host| {
            let holders: Vec<PathBuf> = complete.iter().filter(|f| f.hosts.contains_key(host)).map(|f| f.path.clone()).collect();
            (holders.len() < complete.len()).then(|| (host.clone(), holders))
        })
        .chain(only_in_partial_lists(files, &complete))
        .collect()
}

/// Hosts that only lists which leave entries out (the Squid ACL, the Stormshield objects) hold,
/// and no complete list: a line added by hand there would otherwise be recovered unnoticed.
fn only_in_partial_lists(files: &[ReadBack], complete: &[&ReadBack]) -> Vec<(Host, Vec<PathBuf>)> {
    if complete.is_empty() {
        return Vec::new();
    }
    let mut found: BTreeMap<Host, Vec<PathBuf>> = BTreeMap::new();
    for f in files.iter().filter(|f| !lists_every_host(f.kind)) {
        for host in f.hosts.keys().filter(|h| complete.iter().all(|c| !c.hosts.contains_key(*h))) {
            found.entry(host.clone()).or_default().push(f.path.clone());
        }
    }
    found.into_iter().collect()
}


fn has_header(kind: &str) -> bool {
    matches!(kind, "squid" | "nft_script" | "haproxy" | "json")
}

fn lists_every_host(kind: &str) -> bool {
    matches!(kind, "plain" | "nft_script" | "haproxy" | "json")
}

/// Which file's entries win: the one that keeps the most of them.
fn rank(kind: &str) -> u8 {
    match kind {
        "json" => 0,
        "nft_script" => 1,
        "stormshield" => 2,
        _ => 3,
    }
}

/// A host no file tells more of than its name.
fn unknown_entry() -> Entry {
    Entry { ports: BTreeSet::from([DOMAIN_PORT]), amcs: BTreeMap::new(), origins: BTreeSet::new(), since: None }
}

/// `# rocsync: …, from plan 12.` among the first lines.
fn header_plan(text: &str) -> Option<i64> {
    text.lines().take(3).filter(|l| l.starts_with("# rocsync:")).find_map(|line| {
        let (_, rest) = line.split_once("from plan ")?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    })
}

/// One host per line, comments and blank lines skipped.
fn read_lines(text: &str, back: &mut ReadBack, host_of: fn(&str) -> Option<Host>) {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match host_of(line) {
            Some(host) => {
                back.hosts.entry(host).or_insert(None);
            }
            None => back.unreadable += 1,
        }
    }
}

/// Squid's `.a.test` is the wildcard `*.a.test` (Squid also matches `a.test` itself).
fn squid_host(line: &str) -> Option<Host> {
    match line.strip_prefix('.') {
        Some(base) => Host::parse(&format!("*.{base}")).ok(),
        None => Host::parse(line).ok(),
    }
}

/// `^idb\.a\.test$` and, for a wildcard, `^.+\.api\.a\.test$`.
fn haproxy_host(line: &str) -> Option<Host> {
    let body = line.strip_prefix('^')?.strip_suffix('$')?;
    let name = match body.strip_prefix(".+\\.") {
        Some(base) => format!("*.{}", base.replace("\\.", ".")),
        None => body.replace("\\.", "."),
    };
    Host::parse(&name).ok()
}

/// `*.a.test` or, in the dot style, `.a.test`.
fn plain_host(line: &str) -> Option<Host> {
    match line.strip_prefix('.') {
        Some(base) => Host::parse(&format!("*.{base}")).ok(),
        None => Host::parse(line).ok(),
    }
}

/// `tcp/443,8443`.
fn ports_of(text: &str) -> Option<BTreeSet<u16>> {
    let ports: BTreeSet<u16> = text
        .trim()
        .strip_prefix("tcp/")?
        .split(',')
        .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0))
        .collect::<Option<_>>()?;
    (!ports.is_empty()).then_some(ports)
}

/// The nft script's comment lines: `#   host  tcp/443,8443  123456789 NAME (IDB, SIM); …`, or the
/// origins (`config`) for a host no AMC lists. Notes under a host are indented further.
fn read_nft_comments(text: &str, back: &mut ReadBack) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("#   ") else { continue };
        if rest.starts_with(' ') {
            continue;
        }
        let mut fields = rest.splitn(3, "  ");
        let (host, ports) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let who = fields.next().unwrap_or("");
        match (Host::parse(host), ports_of(ports)) {
            (Ok(host), Some(ports)) => {
                back.hosts.insert(host, Some(nft_entry(ports, who)));
            }
            _ => back.unreadable += 1,
        }
    }
}

/// The entry of an nft comment line. The script names the AMCs, not the origins: a host with
/// AMCs is taken as the annuaire's (only the JSON export tells a host a notification opened).
fn nft_entry(ports: BTreeSet<u16>, who: &str) -> Entry {
    let amcs: BTreeMap<AmcNumber, AmcUse> = who.split("; ").filter_map(amc_part).collect();
    let origins: BTreeSet<Origin> = if amcs.is_empty() {
        who.split(", ")
            .filter_map(|o| match o.trim() {
                "annuaire" => Some(Origin::Annuaire),
                "config" => Some(Origin::Config),
                "notification" => Some(Origin::Notification),
                _ => None,
            })
            .collect()
    } else {
        BTreeSet::from([Origin::Annuaire])
    };
    Entry { ports, amcs, origins, since: None }
}

/// `123456789 MUTUELLE EXEMPLE (CLC, IDB)`, or without the services.
fn amc_part(part: &str) -> Option<(AmcNumber, AmcUse)> {
    let (number, rest) = part.split_once(' ')?;
    let number = AmcNumber::parse(number).ok()?;
    let is_code = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    let (name, services): (&str, BTreeSet<String>) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((name, list)) if list.split(", ").all(is_code) => (name, list.split(", ").map(str::to_owned).collect()),
        _ => (rest, BTreeSet::new()),
    };
    Some((number, AmcUse { name: crate::text::excerpt(name, 200), services }))
}

/// The JSON export (`sinks::json`): every entry whole.
#[derive(Deserialize)]
struct JsonExport {
    #[serde(default)]
    generated_by: String,
    plan: Option<i64>,
    hosts: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct JsonHost {
    host: String,
    ports: BTreeSet<u16>,
    #[serde(default)]
    amcs: Vec<JsonAmc>,
    #[serde(default)]
    origins: BTreeSet<Origin>,
    #[serde(default)]
    since: Option<String>,
}

#[derive(Deserialize)]
struct JsonAmc {
    number: AmcNumber,
    #[serde(default)]
    name: String,
    #[serde(default)]
    services: BTreeSet<String>,
}

fn read_json(text: &str, back: &mut ReadBack) {
    let doc = match serde_json::from_str::<JsonExport>(text) {
        Ok(doc) if doc.generated_by.starts_with("rocsync") => doc,
        _ => {
            back.unreadable += 1;
            return;
        }
    };
    back.plan = doc.plan;
    for value in doc.hosts {
        // One bad host is counted alone; the others still read.
        let parsed = serde_json::from_value::<JsonHost>(value).ok().and_then(|h| Some((Host::parse(&h.host).ok()?, h)));
        match parsed {
            // Read back as strictly as the annuaire is read: service codes are codes, names and
            // dates are escaped, whatever a hand edit put there.
            Some((host, h))
                if !h.ports.is_empty()
                    && !h.ports.contains(&0)
                    && h.amcs.iter().all(|a| a.services.iter().all(|s| crate::sources::annuaire::is_service_code(s))) =>
            {
                let amcs = h
                    .amcs
                    .into_iter()
                    .map(|a| (a.number, AmcUse { name: crate::text::excerpt(&a.name, 200), services: a.services }))
                    .collect();
                let since = h.since.map(|s| crate::text::excerpt(&s, 40));
                back.hosts.insert(host, Some(Entry { ports: h.ports, amcs, origins: h.origins, since }));
            }
            _ => back.unreadable += 1,
        }
    }
}

/// `host,idb.a.test,198.18.0.1,,dynamic,,"rocsync ROC tcp/443: NAME 123456789"`.
fn read_stormshield(text: &str, back: &mut ReadBack) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, ',');
        let (Some("host"), Some(name)) = (fields.next(), fields.next()) else {
            back.unreadable += 1;
            continue;
        };
        let ports = line.split_once("\"rocsync ROC ").and_then(|(_, c)| c.split_once(':')).and_then(|(p, _)| ports_of(p));
        match Host::parse(name) {
            Ok(host) => {
                let entry = ports.map(|ports| Entry { ports, amcs: BTreeMap::new(), origins: BTreeSet::new(), since: None });
                back.hosts.insert(host, entry);
            }
            Err(_) => back.unreadable += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Addresses;
    use crate::sinks::nft_script::NftNames;
    use crate::sinks::plain::WildcardStyle;
    use crate::sinks::squid::tests::state_of;
    use crate::sinks::{haproxy, json, nft_script, plain, squid};
    use crate::testing::state;

    fn back(export: Export, text: &str) -> ReadBack {
        read_text(&export, Path::new("out/file"), text)
    }

    fn hosts(back: &ReadBack) -> Vec<&str> {
        back.hosts.keys().map(Host::as_str).collect()
    }

    #[test]
    fn the_json_export_and_the_nft_script_give_the_state_back_whole() {
        let v1 = state("urls-v1.json");
        let from_json = back(Export::Json, &json::render(&v1, 7));
        assert_eq!((from_json.plan, from_json.unreadable), (Some(7), 0));
        assert_eq!(merge(&[from_json]), v1);
        let script = nft_script::render(&v1, 3, &NftNames::default(), &Addresses::new());
        let from_nft = back(Export::NftScript(NftNames::default()), &script);
        assert_eq!((from_nft.plan, from_nft.unreadable), (Some(3), 0));
        assert_eq!(merge(&[from_nft]), v1, "hosts, ports, AMCs and their services");
    }

    #[test]
    fn the_lists_give_the_hosts_and_their_plan() {
        let v1 = state("urls-v1.json");
        let all: Vec<&str> = v1.entries.keys().map(Host::as_str).collect();
        for style in [WildcardStyle::Star, WildcardStyle::Dot] {
            let from_plain = back(Export::Plain(style), &plain::render(&v1, style));
            assert_eq!((hosts(&from_plain), from_plain.plan), (all.clone(), None));
            assert!(from_plain.written_by_rocsync());
        }
        let from_haproxy = back(Export::Haproxy, &haproxy::render(&v1, 4));
        assert_eq!((hosts(&from_haproxy), from_haproxy.plan), (all.clone(), Some(4)));
        // Squid leaves out what a wildcard covers.
        let covered = state_of(&["a.test", "*.a.test", "b.test"]);
        let from_squid = back(Export::Squid, &squid::render(&covered, 9));
        assert_eq!((hosts(&from_squid), from_squid.plan), (vec!["*.a.test", "b.test"], Some(9)));
        assert_eq!(from_squid.describe(), "out/file (plan 9)");
    }

    #[test]
    fn a_file_rocsync_did_not_write_is_not_taken_for_one() {
        let hand_made = back(Export::Squid, "# our proxy's list\n.a.test\n");
        assert_eq!((hand_made.plan, hand_made.written_by_rocsync()), (None, false));
        assert!(!back(Export::Plain(WildcardStyle::Star), "").written_by_rocsync());
        assert!(!back(Export::Json, "{\"plan\": 3, \"hosts\": []}").written_by_rocsync(), "not generated by rocsync");
        // Hostile lines are counted, never taken.
        let edited = back(Export::Plain(WildcardStyle::Star), "a.test\nb.test; rm -rf /\n*.fr\n\n");
        assert_eq!((hosts(&edited), edited.unreadable), (vec!["a.test"], 2));
        let json = r#"{"generated_by": "rocsync 0.1.0", "plan": 2, "hosts": [
            {"host": "ok.test", "ports": [443]}, {"host": "bad host", "ports": [443]}, {"host": "p0.test", "ports": [0]}]}"#;
        let from_json = back(Export::Json, json);
        assert_eq!((hosts(&from_json), from_json.unreadable), (vec!["ok.test"], 2));
    }

    #[test]
    fn merging_keeps_every_host_and_every_known_port() {
        let plain = back(Export::Plain(WildcardStyle::Star), "a.test\nb.test\n");
        let mut one = state_of(&["a.test"]);
        one.entries.values_mut().for_each(|e| e.ports = BTreeSet::from([8443]));
        let script = back(Export::NftScript(NftNames::default()), &nft_script::render(&one, 1, &NftNames::default(), &Addresses::new()));
        let merged = merge(&[plain.clone(), script.clone()]);
        let ports: Vec<(&str, Vec<u16>)> = merged.entries.iter().map(|(h, e)| (h.as_str(), e.ports.iter().copied().collect())).collect();
        assert_eq!(ports, [("a.test", vec![8443]), ("b.test", vec![443])]);
        let unknown = &merged.entries[&Host::parse("b.test").unwrap()];
        assert!(unknown.amcs.is_empty() && unknown.origins.is_empty(), "provenance unknown");
        assert_eq!(hosts_without_port(&[plain.clone(), script.clone()]), BTreeSet::from([Host::parse("b.test").unwrap()]));
        assert_eq!(disagreements(&[plain, script]), [(Host::parse("b.test").unwrap(), vec![PathBuf::from("out/file")])]);
    }

    #[test]
    fn amc_parts_of_the_nft_comments() {
        let (number, amc) = amc_part("123456789 MUTUELLE (EX) (CLC, IDB)").unwrap();
        assert_eq!((number.as_str(), amc.name.as_str()), ("123456789", "MUTUELLE (EX)"));
        assert_eq!(amc.services, BTreeSet::from(["CLC".to_owned(), "IDB".to_owned()]));
        let (_, plain_name) = amc_part("123456789 CAISSE (NORD-EST)").unwrap();
        assert_eq!((plain_name.name.as_str(), plain_name.services.len()), ("CAISSE (NORD-EST)", 0));
        assert!(amc_part("config").is_none());
        assert_eq!(nft_entry(BTreeSet::from([80]), "config").origins, BTreeSet::from([Origin::Config]));
    }

    /// Found by the attacker helper: a service code `IDB\nflush ruleset\n#` planted in the JSON
    /// export was recovered as it was and reached the nft script as a statement; a host added by
    /// hand to the Squid ACL alone was recovered without a word.
    #[test]
    fn hand_edits_are_read_back_as_strictly_as_the_annuaire_and_shown() {
        let json = r#"{"generated_by": "rocsync 0.1.0", "plan": 2, "hosts": [
            {"host": "ok.test", "ports": [443], "amcs": [{"number": "123456789", "name": "A\u001b[8m", "services": ["IDB"]}]},
            {"host": "forged.test", "ports": [443], "amcs": [{"number": "123456780", "name": "X", "services": ["IDB\nflush ruleset\n#"]}]}]}"#;
        let from_json = back(Export::Json, json);
        assert_eq!((hosts(&from_json), from_json.unreadable), (vec!["ok.test"], 1));
        let entry = from_json.hosts[&Host::parse("ok.test").unwrap()].as_ref().unwrap();
        assert!(entry.amcs.values().all(|a| !a.name.chars().any(crate::text::is_unsafe)), "{entry:?}");
        let plain = back(Export::Plain(WildcardStyle::Star), "ok.test\n");
        let squid = back(Export::Squid, "# rocsync: AMC hosts allowed for ROC (Squid dstdomain ACL), from plan 2.\nok.test\nforged-c2.test\n");
        assert_eq!(disagreements(&[plain, squid]), [(Host::parse("forged-c2.test").unwrap(), vec![PathBuf::from("out/file")])]);
    }
}

