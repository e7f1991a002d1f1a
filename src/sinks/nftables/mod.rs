//! rocsync's own nftables table, kept through netlink: what it should hold (a pure function of
//! the state and the resolved addresses), how that differs from what the kernel holds (pure),
//! and the sink that reads the kernel, reconciles and commits one atomic batch
//! ([`netlink`] does the talking).
//!
//! rocsync owns table `inet rocsync` (name configurable) and, in it, two sets of
//! `address . port` and, in `managed` mode, one base chain. It never deletes the table: in
//! `sets-only` mode the administrator's own chains that use the sets live in it too. A chain
//! that rocsync made under an earlier configuration (`managed` mode, another hook) is known by
//! its rules' comments and removed; an administrator's chain of the same name is left alone.
//!
//! Addresses that answers still give are permanent elements; an address that answers no longer
//! give (in its grace, see [`crate::resolve`]) is an element with a timeout that ends with its
//! grace, so the kernel drops it on time even when rocsync is stopped. Nothing else expires:
//! rocsync stopping never closes the firewall.

#[cfg(feature = "netlink")]
pub mod netlink;
/// Without the `netlink` feature: the same calls, each an error naming the feature. The
/// configuration refuses `[nftables] enabled = true` on such a build, so they are not reached.
#[cfg(not(feature = "netlink"))]
pub mod netlink {
    use crate::clock::Millis;
    use super::{Kernel, Layout, Steps};

    fn unavailable() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, super::NO_NETLINK)
    }

    pub fn snapshot(_layout: &Layout) -> std::io::Result<Kernel> {
        Err(unavailable())
    }

    pub fn commit(_layout: &Layout, _steps: &Steps, _now: Millis) -> std::io::Result<()> {
        Err(unavailable())
    }

    pub fn with_kernel<T>(_layout: &Layout, _read_back: bool, _f: impl FnOnce(&Kernel) -> T) -> std::io::Result<T> {
        Err(unavailable())
    }

    pub fn commit_known(_layout: &Layout, _steps: &Steps, _now: Millis) -> std::io::Result<()> {
        Err(unavailable())
    }

    pub fn forget() {}
}

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use crate::catalogue::State;
use crate::clock::{Millis, now_millis};
use crate::sinks::nft_script::NftNames;
use crate::resolve::Resolved;
use crate::sinks::{Sink, SinkError};
use crate::usage::ACCEPT_PREFIX;

/// One element of a set: a TCP destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub addr: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} . {}", self.addr, self.port)
    }
}

/// Elements with when they end: `None` for a permanent element, else the epoch milliseconds
/// at which it times out.
pub type Elements = BTreeMap<Element, Option<Millis>>;

/// The nft type of a set of `ipv4_addr . inet_service`: `(7 << 6) | 13`.
pub const KEY_TYPE_V4: u32 = (7 << 6) | 13;
/// The nft type of a set of `ipv6_addr . inet_service`: `(8 << 6) | 13`.
pub const KEY_TYPE_V6: u32 = (8 << 6) | 13;
/// Each field of a concatenated key is padded to 4 bytes.
pub const KEY_LEN_V4: u32 = 4 + 4;
pub const KEY_LEN_V6: u32 = 16 + 4;
/// `NFT_SET_TIMEOUT`: the sets take elements with a timeout.
pub const SET_FLAGS: u32 = 0x10;
/// Two timeouts this close are the same (the kernel counts from when it got the element).
const TIMEOUT_SLACK: Millis = 60_000;

/// The two address families, one set each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn key(self) -> (u32, u32) {
        match self {
            Family::V4 => (KEY_TYPE_V4, KEY_LEN_V4),
            Family::V6 => (KEY_TYPE_V6, KEY_LEN_V6),
        }
    }
}

/// The names of the chains rocsync makes in `managed` mode, one per hook: any of them that the
/// configuration no longer asks for is rocsync's to remove (when its rules say it is rocsync's).
pub const MANAGED_CHAINS: [&str; 2] = ["forward", "output"];

/// Every comment of rocsync's own rules starts with this.
pub const COMMENT_PREFIX: &str = "rocsync: ";

/// The port every managed chain logs and drops, whatever the state: a new AMC that the
/// annuaire does not list yet is reached over HTTPS, and its blocked requests must be seen.
pub const HTTPS: u16 = 443;

/// The hook of the managed chain (`nftables.hook`): `forward` on a firewall, `output` on the
/// proxy host.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NftHook {
    #[default]
    Forward,
    Output,
}

/// The chain rocsync installs in `managed` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub hook: NftHook,
    /// Log (with `log_prefix`) and drop what the sets do not allow on the AMC ports; without
    /// it the chain only accepts.
    pub log_drops: bool,
    pub log_prefix: String,
    /// Log (with [`crate::usage::ACCEPT_PREFIX`]) what the sets accept, for `rocsync report
    /// openings`: the accept rules come after the established rule, so one line is logged per
    /// new connection (a request is a connection), none per packet.
    pub log_accepted: bool,
    /// Users whose connections the chain accepts whatever their destination (`meta skuid`),
    /// on the output hook: a proxy on this host connects to wildcard hosts, which have no
    /// address in the sets, and enforces them by name itself.
    pub exempt_uids: BTreeSet<u32>,
    /// The TCP ports logged and dropped besides 443: every port of the state in force, filled
    /// by [`Layout::for_state`] (an AMC's CLC on 8443 is dropped and logged like its IDB).
    pub drop_ports: BTreeSet<u16>,
}

impl Managed {
    /// The chain's name: its hook's.
    pub fn chain(&self) -> &'static str {
        match self.hook {
            NftHook::Forward => MANAGED_CHAINS[0],
            NftHook::Output => MANAGED_CHAINS[1],
        }
    }

    /// The hook's number (`NF_INET_FORWARD`, `NF_INET_LOCAL_OUT`).
    pub fn hook_number(&self) -> u32 {
        match self.hook {
            NftHook::Forward => 2,
            NftHook::Output => 3,
        }
    }

    /// The rules, in order, by the comment each carries: the comment is how a rule altered or
    /// added by hand is told from rocsync's own.
    pub fn rules(&self) -> Vec<Rule> {
        let allow = if self.log_accepted { Rule::LogAllow } else { Rule::Allow };
        let mut rules = vec![Rule::Established, allow(Family::V4), allow(Family::V6)];
        rules.extend(self.exempt_uids.iter().map(|uid| Rule::Exempt(*uid)));
        if self.log_drops {
            let ports: BTreeSet<u16> = std::iter::once(HTTPS).chain(self.drop_ports.iter().copied()).collect();
            rules.extend(ports.into_iter().map(Rule::LogDrop));
        }
        rules
    }
}

/// One rule of the managed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `ct state established,related accept`: removing a host closes new connections only.
    Established,
    /// `ip daddr . tcp dport @set accept` (`ip6` for V6).
    Allow(Family),
    /// The same, logging each new connection it accepts with [`crate::usage::ACCEPT_PREFIX`]
    /// first: its comment differs, so a chain made without the log is refilled with it.
    LogAllow(Family),
    /// `meta skuid UID accept`: what a user of this host sends (output hook only).
    Exempt(u32),
    /// `tcp dport PORT log prefix "…" drop`.
    LogDrop(u16),
}

impl Rule {
    pub fn comment(self) -> String {
        match self {
            Rule::Established => format!("{COMMENT_PREFIX}established"),
            Rule::Allow(Family::V4) => format!("{COMMENT_PREFIX}allow v4"),
            Rule::Allow(Family::V6) => format!("{COMMENT_PREFIX}allow v6"),
            Rule::LogAllow(Family::V4) => format!("{COMMENT_PREFIX}allow v4, log new"),
            Rule::LogAllow(Family::V6) => format!("{COMMENT_PREFIX}allow v6, log new"),
            Rule::Exempt(uid) => format!("{COMMENT_PREFIX}exempt uid {uid}"),
            // The comment the first versions gave their only drop rule: a chain they made is
            // still in step after an upgrade when 443 is the only port.
            Rule::LogDrop(HTTPS) => format!("{COMMENT_PREFIX}log and drop other https"),
            Rule::LogDrop(port) => format!("{COMMENT_PREFIX}log and drop other tcp/{port}"),
        }
    }

    /// The rule as `nft` writes it.
    pub fn nft(self, names: &NftNames, log_prefix: &str) -> String {
        match self {
            Rule::Established => "ct state established,related accept".into(),
            Rule::Allow(Family::V4) => format!("ip daddr . tcp dport @{} accept", names.set_v4),
            Rule::Allow(Family::V6) => format!("ip6 daddr . tcp dport @{} accept", names.set_v6),
            Rule::LogAllow(Family::V4) => format!("ip daddr . tcp dport @{} log prefix \"{ACCEPT_PREFIX}\" accept", names.set_v4),
            Rule::LogAllow(Family::V6) => format!("ip6 daddr . tcp dport @{} log prefix \"{ACCEPT_PREFIX}\" accept", names.set_v6),
            Rule::Exempt(uid) => format!("meta skuid {uid} accept"),
            Rule::LogDrop(port) => format!("tcp dport {port} log prefix \"{log_prefix}\" drop"),
        }
    }
}

/// What rocsync keeps in nftables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub names: NftNames,
    pub managed: Option<Managed>,
}

impl Layout {
    /// The layout that enforces `state`: the managed chain logs and drops every port that the
    /// state's hosts use, not only 443.
    pub fn for_state(&self, state: &State) -> Layout {
        let mut layout = self.clone();
        if let Some(managed) = &mut layout.managed {
            managed.drop_ports.extend(state.entries.values().flat_map(|e| e.ports.iter().copied()));
        }
        layout
    }

    pub fn set_name(&self, family: Family) -> &str {
        match family {
            Family::V4 => &self.names.set_v4,
            Family::V6 => &self.names.set_v6,
        }
    }
}

/// The elements a state needs: every resolved address of every host, with each of its ports.
/// An address in its grace gets the end of its grace as timeout; one already past it, none.
pub fn wanted(state: &State, resolved: &Resolved, now: Millis) -> Elements {
    let mut out = Elements::new();
    for (host, entry) in &state.entries {
        for addr in resolved.addresses.get(host).into_iter().flatten() {
            let end = resolved.leaving.get(addr).copied();
            if end.is_some_and(|end| end <= now) {
                continue;
            }
            for &port in &entry.ports {
                let slot = out.entry(Element { addr: *addr, port }).or_insert(end);
                // Another host may still give the address: then it stays permanent.
                if end.is_none() {
                    *slot = None;
                }
            }
        }
    }
    out
}

/// What the kernel holds of rocsync's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kernel {
    pub table: bool,
    pub v4: Option<KernelSet>,
    pub v6: Option<KernelSet>,
    /// The managed chain, when the layout has one and it exists.
    pub chain: Option<KernelChain>,
    /// The other chains of [`MANAGED_CHAINS`] that exist in the table (whoever made them), by
    /// name: those rocsync made under an earlier configuration are to be removed.
    pub other_chains: Vec<(String, KernelChain)>,
}

impl Kernel {
    pub fn set(&self, family: Family) -> Option<&KernelSet> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }

    fn set_mut(&mut self, family: Family) -> Option<&mut KernelSet> {
        match family {
            Family::V4 => self.v4.as_mut(),
            Family::V6 => self.v6.as_mut(),
        }
    }

    /// What the kernel holds once `steps` (made by [`reconcile`] from `self` under `layout`)
    /// are committed: what rocsync knows after its own commit, without reading it back.
    /// The managed chain's rule handles are not known (0): only those of other chains are used.
    pub fn apply(&mut self, layout: &Layout, steps: &Steps) {
        if steps.create_table {
            self.table = true;
        }
        for leftover in &steps.leftovers {
            match leftover {
                Leftover::Chain(name) => self.other_chains.retain(|(n, _)| n != name),
                Leftover::Rules { chain, handles } => {
                    for (_, c) in self.other_chains.iter_mut().filter(|(n, _)| n == chain) {
                        c.rules.retain(|r| !handles.contains(&r.handle));
                    }
                }
            }
        }
        for (family, _) in &steps.sets {
            let (key_type, key_len) = family.key();
            let set = Some(KernelSet { key_type, key_len, flags: SET_FLAGS, elements: Elements::new() });
            match family {
                Family::V4 => self.v4 = set,
                Family::V6 => self.v6 = set,
            }
        }
        if let Some(managed) = layout.managed.as_ref().filter(|_| steps.chain != ChainStep::Keep) {
            let rules = managed.rules().into_iter().map(|r| KernelRule { comment: r.comment(), handle: 0 }).collect();
            self.chain = Some(KernelChain { hook: Some(managed.hook_number()), policy: Some(NF_ACCEPT), priority: Some(0), rules });
        }
        for e in &steps.delete {
            if let Some(set) = self.set_mut(Family::of(&e.addr)) {
                set.elements.remove(e);
            }
        }
        for (e, end) in &steps.add {
            if let Some(set) = self.set_mut(Family::of(&e.addr)) {
                set.elements.insert(*e, *end);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSet {
    pub key_type: u32,
    pub key_len: u32,
    pub flags: u32,
    pub elements: Elements,
}

/// The kernel's verdict code for accept, a base chain's policy.
pub const NF_ACCEPT: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelChain {
    /// `None` for a chain that is not a base chain.
    pub hook: Option<u32>,
    /// The base chain's policy (`NF_ACCEPT` is 1, `NF_DROP` 0).
    pub policy: Option<u32>,
    /// The base chain's priority (rocsync's is 0, `filter`).
    pub priority: Option<i32>,
    /// Its rules, in order.
    pub rules: Vec<KernelRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelRule {
    /// The rule's comment (empty for a rule without one).
    pub comment: String,
    /// The kernel's handle of the rule, to delete it alone.
    pub handle: u64,
}

impl KernelRule {
    /// Whether rocsync made the rule: its comment says so.
    pub fn is_rocsyncs(&self) -> bool {
        self.comment.starts_with(COMMENT_PREFIX)
    }
}

/// What rocsync made under an earlier configuration and removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A chain whose every rule is rocsync's.
    Chain(String),
    /// rocsync's rules in a chain that holds an administrator's rules too: the chain stays.
    Rules { chain: String, handles: Vec<u64> },
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Chain(chain) => write!(f, "chain {chain}"),
            Leftover::Rules { chain, handles } => write!(f, "{} rule(s) of chain {chain}", handles.len()),
        }
    }
}

/// What to do about the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStep {
    Keep,
    Create,
    /// Flush and refill (rules altered).
    Refill,
    /// Delete and create (wrong hook).
    Recreate,
}

/// One batch: what it takes to bring the kernel to the wanted elements and layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    pub create_table: bool,
    /// Sets to create; `true` when a wrong one must be deleted first.
    pub sets: Vec<(Family, bool)>,
    pub chain: ChainStep,
    pub delete: Vec<Element>,
    pub add: Vec<(Element, Option<Millis>)>,
    /// What an earlier configuration made and this one does not want, removed first.
    pub leftovers: Vec<Leftover>,
    /// What differed, one line each, for logs, `status` and the audit log.
    pub drift: Vec<String>,
    /// Why rocsync will not do its part: a chain of the name it needs that is someone else's
    /// (no rule of it carries rocsync's comments). Nothing is sent then.
    pub refused: Option<String>,
}

impl Steps {
    pub fn is_empty(&self) -> bool {
        !self.create_table
            && self.sets.is_empty()
            && self.chain == ChainStep::Keep
            && self.delete.is_empty()
            && self.add.is_empty()
            && self.leftovers.is_empty()
    }
}

/// The batch that brings `kernel` to `wanted` under `layout`: structure first, then only the
/// elements that differ (an element whose timeout differs is deleted and added again).
pub fn reconcile(kernel: &Kernel, layout: &Layout, wanted: &Elements) -> Steps {
    let table = &layout.names.table;
    let mut steps = Steps {
        create_table: !kernel.table,
        sets: Vec::new(),
        chain: ChainStep::Keep,
        delete: Vec::new(),
        add: Vec::new(),
        leftovers: Vec::new(),
        drift: Vec::new(),
        refused: None,
    };
    if !kernel.table {
        steps.drift.push(format!("nftables: table inet {table} is missing"));
    }
    for family in [Family::V4, Family::V6] {
        let name = layout.set_name(family);
        let want = || wanted.iter().filter(move |(e, _)| Family::of(&e.addr) == family).map(|(e, t)| (*e, *t));
        let (key_type, key_len) = family.key();
        let have = match kernel.set(family) {
            Some(s) if s.key_type == key_type && s.key_len == key_len && s.flags & SET_FLAGS != 0 => &s.elements,
            other => {
                if kernel.table {
                    let why = if other.is_some() { "has the wrong type or flags" } else { "is missing" };
                    steps.drift.push(format!("nftables: set {name} {why}"));
                }
                steps.sets.push((family, other.is_some()));
                steps.add.extend(want());
                continue;
            }
        };
        // Both sides are sorted the same way: one walk over the two, not a lookup per element
        // (100,000 lookups each way were most of a pass once the kernel no longer had to be read).
        let (mut missing, mut extra, mut retimed) = (Vec::new(), Vec::new(), Vec::new());
        let mut want = want().peekable();
        let mut have = have.iter().peekable();
        loop {
            match (want.peek(), have.peek()) {
                (Some(&(w, t)), Some(&(h, k))) => match w.cmp(h) {
                    std::cmp::Ordering::Less => {
                        missing.push((w, t));
                        want.next();
                    }
                    std::cmp::Ordering::Greater => {
                        extra.push(*h);
                        have.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !same_end(*k, t) {
                            retimed.push((w, t));
                        }
                        want.next();
                        have.next();
                    }
                },
                (Some(&(w, t)), None) => {
                    missing.push((w, t));
                    want.next();
                }
                (None, Some(&(h, _))) => {
                    extra.push(*h);
                    have.next();
                }
                (None, None) => break,
            }
        }
        if !missing.is_empty() {
            steps.drift.push(format!("nftables: set {name} lacks {}", sample(missing.iter().map(|(e, _)| e))));
        }
        if !extra.is_empty() {
            steps.drift.push(format!("nftables: set {name} holds {} not allowed", sample(extra.iter())));
        }
        if !retimed.is_empty() {
            steps.drift.push(format!("nftables: set {name} has the wrong timeout on {}", sample(retimed.iter().map(|(e, _)| e))));
        }
        steps.delete.extend(extra);
        steps.delete.extend(retimed.iter().map(|(e, _)| *e));
        steps.add.extend(missing);
        steps.add.extend(retimed);
    }
    if let Some(managed) = &layout.managed {
        let chain = managed.chain();
        let expected: Vec<String> = managed.rules().into_iter().map(Rule::comment).collect();
        steps.chain = match &kernel.chain {
            // An administrator's chain of that name (in rocsync's table, or in the table
            // `nftables.table` names): never replaced, whatever its hook or policy.
            Some(c) if !c.rules.is_empty() && !c.rules.iter().any(KernelRule::is_rocsyncs) => {
                steps.refused = Some(format!(
                    "table inet {table} has a chain {chain} that is not rocsync's ({} rule(s) without rocsync's comments): rocsync will not replace it; \
                     rename your chain, or use mode = \"sets-only\" and refer to @{} / @{} from it",
                    c.rules.len(),
                    layout.names.set_v4,
                    layout.names.set_v6
                ));
                steps.drift.push(format!("nftables: chain {chain} is not rocsync's: left as it is"));
                ChainStep::Keep
            }
            None => {
                if kernel.table {
                    steps.drift.push(format!("nftables: chain {chain} is missing"));
                }
                ChainStep::Create
            }
            Some(c) if c.hook != Some(managed.hook_number()) => {
                steps.drift.push(format!("nftables: chain {chain} is not hooked on {chain}"));
                ChainStep::Recreate
            }
            // A policy turned to drop cuts every other flow through the host; another priority
            // puts the chain before or after the administrator's. Its rules may be right, the
            // chain is not: made again.
            Some(c) if c.policy.is_some_and(|p| p != NF_ACCEPT) || c.priority.is_some_and(|p| p != 0) => {
                let policy = if c.policy == Some(NF_ACCEPT) { "accept" } else { "drop" };
                steps.drift.push(format!(
                    "nftables: chain {chain} was altered (policy {policy}, priority {}; rocsync's is policy accept, priority 0)",
                    c.priority.unwrap_or(0)
                ));
                ChainStep::Recreate
            }
            Some(c) if c.rules.iter().map(|r| r.comment.as_str()).ne(expected.iter().map(String::as_str)) => {
                let (n, m) = (c.rules.len(), expected.len());
                let what = match !c.rules.is_empty() && c.rules.iter().all(KernelRule::is_rocsyncs) {
                    // rocsync's own rules for other ports or users: an upgrade, or a
                    // configuration changed since (`log_drops`, `exempt_users`).
                    true => format!("holds rocsync's rules of another configuration ({n} rules, expected {m})"),
                    false => format!("was altered ({n} rules, expected {m})"),
                };
                steps.drift.push(format!("nftables: chain {chain} {what}"));
                ChainStep::Refill
            }
            Some(_) => ChainStep::Keep,
        };
    }
    // A chain rocsync made for another mode or hook: removed, unless an administrator's rules
    // sit in it too (then only rocsync's rules go). A chain without rocsync's rules is not
    // rocsync's, whatever its name.
    for (name, chain) in &kernel.other_chains {
        let own: Vec<u64> = chain.rules.iter().filter(|r| r.is_rocsyncs()).map(|r| r.handle).collect();
        if own.is_empty() {
            continue;
        }
        let leftover = if own.len() == chain.rules.len() {
            Leftover::Chain(name.clone())
        } else {
            Leftover::Rules { chain: name.clone(), handles: own }
        };
        steps.drift.push(format!("nftables: left from an earlier configuration (mode or hook since changed): rocsync's {leftover} in table inet {table}"));
        steps.leftovers.push(leftover);
    }
    steps
}

fn same_end(kernel: Option<Millis>, wanted: Option<Millis>) -> bool {
    match (kernel, wanted) {
        (None, None) => true,
        (Some(k), Some(w)) => k.abs_diff(w) <= TIMEOUT_SLACK,
        _ => false,
    }
}

/// "3 element(s) (a . 443, b . 443, …)".
fn sample<'a>(elements: impl ExactSizeIterator<Item = &'a Element>) -> String {
    let n = elements.len();
    let shown: Vec<String> = elements.take(3).map(|e| e.to_string()).collect();
    let more = if n > 3 { ", …" } else { "" };
    format!("{n} element(s) ({}{more})", shown.join(", "))
}

/// The `nft` commands that take the elements of `before` to those of `after` (permanent
/// elements; timeouts are the resolver's business, not the reviewer's).
pub fn element_commands(before: &Elements, after: &Elements, names: &NftNames) -> String {
    let mut out = String::new();
    let set = |e: &Element| match Family::of(&e.addr) {
        Family::V4 => &names.set_v4,
        Family::V6 => &names.set_v6,
    };
    for e in before.keys().filter(|e| !after.contains_key(*e)) {
        writeln!(out, "delete element inet {} {} {{ {e} }}", names.table, set(e)).ok();
    }
    for e in after.keys().filter(|e| !before.contains_key(*e)) {
        writeln!(out, "add element inet {} {} {{ {e} }}", names.table, set(e)).ok();
    }
    out
}

/// Why `[nftables]` cannot be used by a build without the `netlink` feature, and what to do.
pub const NO_NETLINK: &str = "this rocsync was built without the `netlink` feature, so it cannot drive nftables itself: \
install the Debian or RPM package (built with it), build with `cargo build --release --features netlink` \
(needs libnftnl-dev and libmnl-dev), or use `[exports.nft_script]` with `post_write_command = [\"nft\", \"-f\", PATH]`";

/// The sink: rocsync's table through netlink (needs CAP_NET_ADMIN, not the `nft` binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftablesSink {
    pub layout: Layout,
}

impl NftablesSink {
    /// Knows the kernel (read back only when the ruleset's generation moved for a reason
    /// rocsync cannot attribute, see [`netlink::with_kernel`]) and commits what differs, in one
    /// batch that the kernel refuses if anything changed since. An element that timed out
    /// between the read and the commit, or a change by someone else in between, fails the
    /// batch; the kernel is then read back and the batch tried once more.
    pub fn reconcile_now(&self, state: &State, resolved: &Resolved) -> Result<Steps, SinkError> {
        let layout = self.layout.for_state(state);
        let mut last = None;
        for attempt in 0..2 {
            let want = wanted(state, resolved, now_millis());
            let steps = netlink::with_kernel(&layout, attempt > 0, |kernel| reconcile(kernel, &layout, &want))
                .map_err(|e| netlink_error("read", &layout, e))?;
            if let Some(why) = &steps.refused {
                return Err(netlink_error("manage", &layout, std::io::Error::other(why.clone())));
            }
            if steps.is_empty() {
                return Ok(steps);
            }
            match netlink::commit_known(&layout, &steps, now_millis()) {
                Ok(()) => return Ok(steps),
                Err(e) => last = Some(e),
            }
        }
        Err(netlink_error("update", &layout, last.unwrap_or_else(|| std::io::Error::other("no attempt"))))
    }
}

fn netlink_error(what: &str, layout: &Layout, source: std::io::Error) -> SinkError {
    SinkError::Netlink { what: format!("{what} table inet {}", layout.names.table), source }
}

impl Sink for NftablesSink {
    fn name(&self) -> &str {
        "nftables"
    }

    fn apply(&self, state: &State, _plan_id: i64, resolved: &Resolved) -> Result<Vec<String>, SinkError> {
        let steps = self.reconcile_now(state, resolved)?;
        for leftover in &steps.leftovers {
            tracing::info!(table = %self.layout.names.table, "nftables: removed {leftover}, made under an earlier configuration");
        }
        tracing::info!(
            added = steps.add.len(),
            deleted = steps.delete.len(),
            "nftables: table inet {} in step",
            self.layout.names.table
        );
        Ok(Vec::new())
    }

    fn drift(&self, state: &State, _plan_id: i64, resolved: &Resolved) -> Vec<String> {
        let layout = self.layout.for_state(state);
        let want = wanted(state, resolved, now_millis());
        match netlink::with_kernel(&layout, false, |kernel| reconcile(kernel, &layout, &want).drift) {
            Ok(drift) => drift,
            Err(e) => vec![format!("nftables: cannot read table inet {}: {e}", self.layout.names.table)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Entry, Origin};
    use crate::host::Host;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn layout(managed: bool) -> Layout {
        Layout { names: NftNames::default(), managed: managed.then(|| managed_on(NftHook::Forward)) }
    }

    fn managed_on(hook: NftHook) -> Managed {
        Managed {
            hook,
            log_drops: true,
            log_prefix: "rocsync-drop: ".into(),
            log_accepted: false,
            exempt_uids: BTreeSet::new(),
            drop_ports: BTreeSet::new(),
        }
    }

    /// A chain as the kernel holds it, rule handles counted from 10.
    fn chain_of(hook: u32, comments: &[String]) -> KernelChain {
        KernelChain {
            hook: Some(hook),
            policy: Some(NF_ACCEPT),
            priority: Some(0),
            rules: comments.iter().zip(10u64..).map(|(c, handle)| KernelRule { comment: c.clone(), handle }).collect(),
        }
    }

    fn comments(m: &Managed) -> Vec<String> {
        m.rules().into_iter().map(Rule::comment).collect()
    }

    fn state(hosts: &[(&str, &[u16])]) -> State {
        let mut s = State::default();
        for (h, ports) in hosts {
            s.entries.insert(
                Host::parse(h).unwrap(),
                Entry { ports: ports.iter().copied().collect(), amcs: BTreeMap::new(), origins: BTreeSet::from([Origin::Config]), since: None },
            );
        }
        s
    }

    fn resolved(pairs: &[(&str, &[&str])]) -> Resolved {
        Resolved {
            addresses: pairs
                .iter()
                .map(|(h, a)| (Host::parse(h).unwrap(), a.iter().map(|a| a.parse().unwrap()).collect()))
                .collect(),
            leaving: BTreeMap::new(),
        }
    }

    fn el(a: &str, port: u16) -> Element {
        Element { addr: a.parse().unwrap(), port }
    }

    fn in_step(wanted: &Elements, l: &Layout) -> Kernel {
        let split = |f: Family| {
            let (key_type, key_len) = f.key();
            Some(KernelSet {
                key_type,
                key_len,
                flags: SET_FLAGS,
                elements: wanted.iter().filter(|(e, _)| Family::of(&e.addr) == f).map(|(e, t)| (*e, *t)).collect(),
            })
        };
        Kernel {
            table: true,
            v4: split(Family::V4),
            v6: split(Family::V6),
            chain: l.managed.as_ref().map(|m| chain_of(m.hook_number(), &comments(m))),
            other_chains: Vec::new(),
        }
    }

    #[test]
    fn every_address_with_every_port_and_wildcards_left_out() {
        let s = state(&[("idb.a.test", &[443, 8443]), ("*.b.test", &[443]), ("c.test", &[443])]);
        let r = resolved(&[("idb.a.test", &["198.18.0.1", "2001:db8::1"]), ("c.test", &["198.18.0.1"])]);
        let w = wanted(&s, &r, 0);
        let keys: Vec<String> = w.keys().map(|e| e.to_string()).collect();
        assert_eq!(keys, ["198.18.0.1 . 443", "198.18.0.1 . 8443", "2001:db8::1 . 443", "2001:db8::1 . 8443"]);
        assert!(w.values().all(Option::is_none));
    }

    #[test]
    fn an_address_in_its_grace_times_out_unless_another_host_still_gives_it() {
        let s = state(&[("a.test", &[443]), ("b.test", &[443])]);
        let mut r = resolved(&[("a.test", &["198.18.0.1", "198.18.0.2"]), ("b.test", &["198.18.0.3"])]);
        r.leaving = BTreeMap::from([("198.18.0.2".parse().unwrap(), 5_000), ("198.18.0.3".parse().unwrap(), 900)]);
        let w = wanted(&s, &r, 1_000);
        assert_eq!(w.get(&el("198.18.0.1", 443)), Some(&None));
        assert_eq!(w.get(&el("198.18.0.2", 443)), Some(&Some(5_000)));
        // Past its grace: not sent at all.
        assert_eq!(w.get(&el("198.18.0.3", 443)), None);
    }

    #[test]
    fn an_empty_kernel_gets_the_whole_layout_in_one_batch() {
        let l = layout(true);
        let w = Elements::from([(el("198.18.0.1", 443), None), (el("2001:db8::1", 443), None)]);
        let steps = reconcile(&Kernel::default(), &l, &w);
        assert!(steps.create_table);
        assert_eq!(steps.sets, [(Family::V4, false), (Family::V6, false)]);
        assert_eq!(steps.chain, ChainStep::Create);
        assert_eq!(steps.add.len(), 2);
        assert!(steps.delete.is_empty());
        assert_eq!(steps.drift, ["nftables: table inet rocsync is missing"]);
    }

    #[test]
    fn a_kernel_in_step_needs_nothing() {
        for managed in [false, true] {
            let l = layout(managed);
            let w = Elements::from([(el("198.18.0.1", 443), None), (el("2001:db8::1", 443), Some(90_000))]);
            let steps = reconcile(&in_step(&w, &l), &l, &w);
            assert!(steps.is_empty(), "{steps:?}");
            assert!(steps.drift.is_empty());
        }
    }

    #[test]
    fn only_the_elements_that_differ_are_sent() {
        let l = layout(false);
        let before = Elements::from([(el("198.18.0.1", 443), None), (el("198.18.0.2", 443), None)]);
        let after = Elements::from([(el("198.18.0.2", 443), Some(100_000)), (el("198.18.0.3", 443), None)]);
        let steps = reconcile(&in_step(&before, &l), &l, &after);
        assert_eq!(steps.delete, [el("198.18.0.1", 443), el("198.18.0.2", 443)]);
        assert_eq!(steps.add, [(el("198.18.0.3", 443), None), (el("198.18.0.2", 443), Some(100_000))]);
        assert!(!steps.create_table && steps.sets.is_empty());
        assert_eq!(steps.drift.len(), 3, "{:?}", steps.drift);
    }

    #[test]
    fn an_altered_chain_or_set_is_rebuilt_and_reported() {
        let l = layout(true);
        let w = Elements::from([(el("198.18.0.1", 443), None)]);
        let mut k = in_step(&w, &l);
        k.chain.as_mut().unwrap().rules.insert(0, KernelRule::default());
        k.v4.as_mut().unwrap().key_type = 7;
        let steps = reconcile(&k, &l, &w);
        assert_eq!(steps.chain, ChainStep::Refill);
        assert_eq!(steps.sets, [(Family::V4, true)]);
        assert_eq!(steps.add, [(el("198.18.0.1", 443), None)]);
        assert!(steps.drift.iter().any(|d| d.contains("chain forward was altered (5 rules, expected 4)")), "{:?}", steps.drift);
        k.chain.as_mut().unwrap().hook = Some(3);
        assert_eq!(reconcile(&k, &l, &w).chain, ChainStep::Recreate);
    }

    /// The managed chain logged and dropped tcp/443 only: an AMC's CLC on 8443 was neither
    /// dropped nor logged, so its blocked requests were never seen.
    #[test]
    fn the_managed_chain_drops_every_port_of_the_state_not_only_443() {
        let l = layout(true).for_state(&state(&[("idb.a.test", &[443]), ("clc.a.test", &[8443]), ("*.api.a.test", &[9443])]));
        let m = l.managed.as_ref().unwrap();
        let drops: Vec<Rule> = m.rules().into_iter().filter(|r| matches!(r, Rule::LogDrop(_))).collect();
        assert_eq!(drops, [Rule::LogDrop(443), Rule::LogDrop(8443), Rule::LogDrop(9443)]);
        assert_eq!(Rule::LogDrop(8443).nft(&l.names, "rocsync-drop: "), "tcp dport 8443 log prefix \"rocsync-drop: \" drop");
        // 443 stays, even for a state without it: the next AMC is reached over HTTPS.
        let only_8443 = layout(true).for_state(&state(&[("clc.a.test", &[8443])]));
        assert!(only_8443.managed.as_ref().unwrap().rules().contains(&Rule::LogDrop(443)));
        // A chain made for 443 alone (an older rocsync) is refilled, and said to be rocsync's.
        let w = Elements::new();
        let older = in_step(&w, &layout(true));
        let steps = reconcile(&older, &l, &w);
        assert_eq!(steps.chain, ChainStep::Refill);
        assert_eq!(steps.drift, ["nftables: chain forward holds rocsync's rules of another configuration (4 rules, expected 6)"]);
        // The first versions' comment is kept for 443: their chain is in step after an upgrade.
        assert_eq!(Rule::LogDrop(443).comment(), "rocsync: log and drop other https");
        assert!(reconcile(&older, &layout(true), &w).is_empty());
    }

    /// Switching `mode` from managed to sets-only left rocsync's chain in the kernel, and
    /// `status` did not mention it.
    #[test]
    fn a_chain_left_by_an_earlier_mode_or_hook_is_removed_and_reported() {
        let w = Elements::new();
        let forward = comments(&managed_on(NftHook::Forward));
        let sets_only = layout(false);
        let mut k = in_step(&w, &sets_only);
        k.other_chains.push(("forward".into(), chain_of(2, &forward)));
        let steps = reconcile(&k, &sets_only, &w);
        assert_eq!(steps.leftovers, [Leftover::Chain("forward".into())]);
        assert_eq!(
            steps.drift,
            ["nftables: left from an earlier configuration (mode or hook since changed): rocsync's chain forward in table inet rocsync"]
        );
        assert!(!steps.is_empty());

        // An administrator's rule in it: only rocsync's rules go, by handle.
        let mut mixed = forward.clone();
        mixed.push("admin: count".into());
        mixed.push(String::new());
        k.other_chains = vec![("forward".into(), chain_of(2, &mixed))];
        let steps = reconcile(&k, &sets_only, &w);
        assert_eq!(steps.leftovers, [Leftover::Rules { chain: "forward".into(), handles: vec![10, 11, 12, 13] }]);
        assert!(steps.drift[0].contains("rocsync's 4 rule(s) of chain forward"), "{:?}", steps.drift);

        // An administrator's own chain that happens to bear the name: not rocsync's.
        k.other_chains = vec![("output".into(), chain_of(3, &["admin".into(), String::new()]))];
        let steps = reconcile(&k, &sets_only, &w);
        assert!(steps.is_empty() && steps.drift.is_empty(), "{steps:?}");

        // From the forward hook to the output hook: the forward chain goes, the output one comes.
        let output = Layout { names: NftNames::default(), managed: Some(managed_on(NftHook::Output)) };
        let mut k = in_step(&w, &sets_only);
        k.other_chains.push(("forward".into(), chain_of(2, &forward)));
        let steps = reconcile(&k, &output, &w);
        assert_eq!(steps.chain, ChainStep::Create);
        assert_eq!(steps.leftovers, [Leftover::Chain("forward".into())]);
    }

    /// Found by the attacker helper: switching to managed mode replaced an administrator's
    /// chain named `forward` (policy drop, its own rules) with rocsync's (policy accept). A
    /// chain without one rule of rocsync's is never replaced, whatever its hook: the pass is
    /// refused with what to do, and nothing is sent.
    #[test]
    fn an_administrators_chain_of_the_managed_name_is_never_replaced() {
        let w = Elements::new();
        let managed = Layout { names: NftNames::default(), managed: Some(managed_on(NftHook::Forward)) };
        let mut k = in_step(&w, &layout(false));
        k.chain = Some(chain_of(2, &["admin uses the set".into(), "admin mgmt".into()]));
        let steps = reconcile(&k, &managed, &w);
        assert_eq!(steps.chain, ChainStep::Keep);
        assert!(steps.refused.as_deref().is_some_and(|r| r.contains("not rocsync's") && r.contains("sets-only")), "{steps:?}");
        // On another hook too (it would have been recreated).
        k.chain = Some(chain_of(3, &["admin".into()]));
        let steps = reconcile(&k, &managed, &w);
        assert_eq!(steps.chain, ChainStep::Keep);
        assert!(steps.refused.is_some());
        // rocsync's own chain with a rule slipped in is still repaired, as before.
        let mut slipped = comments(&managed_on(NftHook::Forward));
        slipped.push(String::new());
        k.chain = Some(chain_of(2, &slipped));
        let steps = reconcile(&k, &managed, &w);
        assert!(steps.refused.is_none() && steps.chain == ChainStep::Refill, "{steps:?}");
    }

    /// Issue 15: the usage counter reads `rocsync-accept: ` lines, but no rule wrote them. With
    /// `log_accepted`, the accept rules log (after the established rule: new connections only),
    /// and a chain made without the log is refilled once, then in step.
    #[test]
    fn accepted_new_connections_are_logged_with_the_accept_prefix() {
        let mut m = managed_on(NftHook::Forward);
        m.log_accepted = true;
        let rules = m.rules();
        assert_eq!(rules[..3], [Rule::Established, Rule::LogAllow(Family::V4), Rule::LogAllow(Family::V6)]);
        let names = NftNames::default();
        assert_eq!(Rule::LogAllow(Family::V4).nft(&names, "rocsync-drop: "), "ip daddr . tcp dport @rocsync_v4 log prefix \"rocsync-accept: \" accept");
        assert_eq!(Rule::LogAllow(Family::V6).nft(&names, ""), "ip6 daddr . tcp dport @rocsync_v6 log prefix \"rocsync-accept: \" accept");
        assert!(Rule::LogAllow(Family::V4).comment().starts_with(COMMENT_PREFIX));
        assert_ne!(Rule::LogAllow(Family::V4).comment(), Rule::Allow(Family::V4).comment());
        let w = Elements::new();
        let logged = Layout { names: names.clone(), managed: Some(m) };
        // A chain of an earlier rocsync (accept without a log): refilled, said to be rocsync's.
        let older = in_step(&w, &layout(true));
        let steps = reconcile(&older, &logged, &w);
        assert_eq!(steps.chain, ChainStep::Refill);
        assert!(steps.drift[0].contains("rocsync's rules of another configuration"), "{:?}", steps.drift);
        // Once refilled it is in step: not repaired at every pass.
        let mut k = older.clone();
        k.apply(&logged, &steps);
        assert!(reconcile(&k, &logged, &w).is_empty(), "{:?}", reconcile(&k, &logged, &w));
        assert!(reconcile(&in_step(&w, &logged), &logged, &w).is_empty());
    }

    /// On the proxy host (`hook = "output"`), the chain dropped the proxy's own connections to
    /// wildcard hosts, which have no address in the sets.
    #[test]
    fn exempt_users_are_accepted_before_the_drops() {
        let mut m = managed_on(NftHook::Output);
        m.exempt_uids = BTreeSet::from([13, 0]);
        let rules = m.rules();
        assert_eq!(
            rules,
            [
                Rule::Established,
                Rule::Allow(Family::V4),
                Rule::Allow(Family::V6),
                Rule::Exempt(0),
                Rule::Exempt(13),
                Rule::LogDrop(443)
            ]
        );
        assert_eq!(Rule::Exempt(13).nft(&NftNames::default(), ""), "meta skuid 13 accept");
        assert_eq!(Rule::Exempt(13).comment(), "rocsync: exempt uid 13");
        // Another user named in the configuration: the chain is refilled.
        let l = Layout { names: NftNames::default(), managed: Some(m.clone()) };
        let w = Elements::new();
        let k = in_step(&w, &l);
        m.exempt_uids = BTreeSet::from([13]);
        let steps = reconcile(&k, &Layout { names: NftNames::default(), managed: Some(m) }, &w);
        assert_eq!(steps.chain, ChainStep::Refill);
    }

    /// A leftover chain removed by rocsync's own commit is gone from what it knows; an
    /// administrator's rules in a chain it cleaned stay known.
    #[test]
    fn knowledge_after_a_commit_drops_the_leftovers() {
        let w = Elements::new();
        let forward = comments(&managed_on(NftHook::Forward));
        let mut mixed = forward.clone();
        mixed.push("admin: count".into());
        let sets_only = layout(false);
        let mut k = in_step(&w, &sets_only);
        k.other_chains = vec![("forward".into(), chain_of(2, &mixed)), ("output".into(), chain_of(3, &comments(&managed_on(NftHook::Output))))];
        let steps = reconcile(&k, &sets_only, &w);
        k.apply(&sets_only, &steps);
        assert_eq!(k.other_chains.len(), 1);
        assert_eq!(k.other_chains[0].1.rules.iter().map(|r| r.comment.as_str()).collect::<Vec<_>>(), ["admin: count"]);
        assert!(reconcile(&k, &sets_only, &w).is_empty());
    }

    #[test]
    fn commands_for_review() {
        let names = NftNames::default();
        let before = Elements::from([(el("198.18.0.1", 443), None)]);
        let after = Elements::from([(el("2001:db8::2", 443), None)]);
        assert_eq!(
            element_commands(&before, &after, &names),
            "delete element inet rocsync rocsync_v4 { 198.18.0.1 . 443 }\n\
             add element inet rocsync rocsync_v6 { 2001:db8::2 . 443 }\n"
        );
    }

    fn elements() -> impl Strategy<Value = Elements> {
        prop::collection::btree_map(
            (any::<bool>(), 0u8..8, prop::sample::select(vec![443u16, 8443])).prop_map(|(v6, n, port)| {
                let addr: IpAddr = if v6 { format!("2001:db8::{n}").parse().unwrap() } else { format!("198.18.0.{n}").parse().unwrap() };
                Element { addr, port }
            }),
            prop::option::of(prop::sample::select(vec![100_000u64, 500_000])),
            0..12,
        )
    }

    proptest! {
        /// Applying the steps to what the kernel holds gives exactly what is wanted.
        #[test]
        fn steps_bring_the_kernel_to_what_is_wanted(have in elements(), want in elements()) {
            let l = layout(false);
            let k = in_step(&have, &l);
            let steps = reconcile(&k, &l, &want);
            let mut now = have.clone();
            for e in &steps.delete {
                prop_assert!(now.remove(e).is_some(), "deleted an element that is not there: {e}");
            }
            for (e, t) in &steps.add {
                prop_assert!(now.insert(*e, *t).is_none(), "added an element already there: {e}");
            }
            prop_assert_eq!(&now, &want);
            prop_assert_eq!(steps.is_empty(), have == want);
        }

        /// What rocsync knows after its own commit (the steps applied to what it knew) is what
        /// a read-back would show: a second pass from that knowledge finds nothing to do.
        #[test]
        fn knowledge_after_a_commit_needs_no_second_batch(have in elements(), want in elements(), managed in any::<bool>(), table in any::<bool>()) {
            let l = layout(managed);
            let mut k = if table { in_step(&have, &l) } else { Kernel::default() };
            let steps = reconcile(&k, &l, &want);
            k.apply(&l, &steps);
            let again = reconcile(&k, &l, &want);
            prop_assert!(again.is_empty(), "{:?}", again);
        }
    }
}
