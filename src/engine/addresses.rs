//! The addresses of the hosts in force, resolved following their DNS TTLs for the address sinks.

use tracing::info;

use crate::clock::now_millis;
use crate::resolve::{BookChange, DnsResolver, ResolverError};
use crate::resolve::Resolved;

use super::{Engine, EngineError, now};

impl Engine {
    /// The addresses of the hosts in force, as last resolved, with those in their grace (none
    /// while `[resolver]` is off).
    pub(super) fn resolved(&self) -> Result<Resolved, EngineError> {
        if !self.config.resolver.enabled {
            return Ok(Resolved::default());
        }
        Ok(self.store.address_book()?.resolved(self.config.resolver.policy.grace))
    }

    /// Resolves the hosts in force whose answer ran out, drops addresses gone longer than the
    /// grace, keeps the book, and rewrites the outputs when an address came or went. `None`
    /// while `[resolver]` is off.
    pub fn refresh_addresses(&mut self) -> Result<Option<BookChange>, EngineError> {
        let settings = self.config.resolver.clone();
        if !settings.enabled {
            return Ok(None);
        }
        let applied = self.store.applied()?;
        let mut book = self.store.address_book()?;
        let leaving_before = book.leaving(settings.policy.grace);
        book.track(applied.state.entries.keys(), now_millis());
        let runtime = self.io()?;
        let change = runtime.block_on(async {
            let resolver = DnsResolver::new(&settings.servers, settings.timeout, settings.concurrency)?;
            Ok::<_, ResolverError>(resolver.refresh(&mut book, &settings.policy).await)
        })?;
        self.store.save_address_book(&book)?;
        for (host, ip, why) in &change.refused {
            let detail = format!("{host} resolves to {ip}, a {why} address: refused (resolver.allow_networks allows a range knowingly)");
            self.store.audit("rocsync", "dns.refused", Some(applied.plan_id), &detail, &now())?;
        }
        let resolved = book.resolved(settings.policy.grace);
        // An address entering or leaving its grace changes nftables' timeouts, not the files.
        if change.added.is_empty() && change.removed.is_empty() && resolved.leaving == leaving_before {
            return Ok(Some(change));
        }
        let detail = format!(
            "+{} -{} address(es), {} in their grace",
            change.added.len(),
            change.removed.len(),
            resolved.leaving.len()
        );
        info!(plan = applied.plan_id, "Addresses changed: {detail}.");
        self.store.audit("rocsync", "addresses.changed", Some(applied.plan_id), &detail, &now())?;
        self.locked(|e| {
            // What is in force now: another process may have applied a plan since the read above.
            let applied = e.store.applied()?;
            if applied.plan_id == 0 {
                return Ok(());
            }
            e.enforce(&applied.state, applied.plan_id, &resolved, &now(), |_| true)
        })?;
        Ok(Some(change))
    }
}
