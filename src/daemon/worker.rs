//! The worker: the engine's blocking work (passes, applies, log reading, the alert queue's
//! filling, what the HTTP endpoint publishes) on one thread that waits on the daemon's runtime for
//! its requests. It takes one job at a time from the daemon's tasks.

use super::*;

use std::net::IpAddr;

use crate::catalogue::State;
use crate::host::Host;

/// The worker: owns the engine, does one job at a time.
pub(super) struct Worker {
    engine: Engine,
    /// The daemon's settings of the engine's configuration.
    settings: Settings,
    /// The daemon's runtime, which every engine of this worker waits on for its requests.
    runtime: tokio::runtime::Handle,
    shared: Shared,
    /// The configuration file, for the commands the e-mails give.
    config_path: PathBuf,
    followers: Vec<(Follower, LogKind)>,
    journal: Option<JournalReader>,
    /// The catalogue of the last good answer, with that answer's fetch time.
    catalogue: Option<(String, Catalogue)>,
    /// Since when the annuaire has failed, with the last error.
    failing_since: Option<(String, u64, String)>,
    /// Approved plans that could not be applied, with why, already said in the log.
    apply_failures: std::collections::BTreeSet<(i64, String)>,
    published_plan: Option<i64>,
    /// The configuration file's text as loaded, to tell what a reload changes.
    loaded: String,
    /// How reading each followed log goes (by its key), to say a failure once, not every tick.
    health: BTreeMap<String, Health>,
}

#[derive(Clone, Copy)]
enum LogKind {
    Squid,
    Nft,
}

impl Worker {
    pub(super) fn new(engine: Engine, settings: Settings, runtime: tokio::runtime::Handle, shared: Shared, config_path: PathBuf, loaded: String) -> Worker {
        let mut w = Worker {
            engine,
            settings,
            runtime,
            shared,
            config_path,
            followers: Vec::new(),
            journal: None,
            catalogue: None,
            failing_since: None,
            apply_failures: Default::default(),
            published_plan: None,
            loaded,
            health: BTreeMap::new(),
        };
        w.open_followers();
        w
    }

    fn open_followers(&mut self) {
        let logs = self.settings.logs.clone();
        self.followers.clear();
        for (path, kind) in [(logs.squid_access_log, LogKind::Squid), (logs.nft_log, LogKind::Nft)] {
            let Some(path) = path else { continue };
            let saved = self.engine.store.log_position(&path.to_string_lossy()).unwrap_or_else(|e| {
                warn!("Cannot read the saved position of {}: {}", path.display(), crate::error_chain(&e));
                None
            });
            info!("Following {} from {}.", path.display(), if saved.is_some() { "where it stopped" } else { "its end" });
            self.followers.push((Follower::new(&path, saved), kind));
        }
        self.journal = logs.journal.map(|directory| {
            let mut reader = JournalReader::new(directory, None);
            // An empty cursor (saved before any entry came) is no cursor: journalctl refuses it.
            reader.cursor = self.engine.store.log_position(&reader.key()).ok().flatten().map(|p| p.first_line).filter(|c| !c.is_empty());
            // One journalctl child, on the daemon's runtime, until this reader is dropped.
            reader.follow_on(self.runtime.clone());
            info!("Following the journal ({}).", reader.key());
            reader
        });
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        self.publish();
        while let Some(job) = rx.blocking_recv() {
            match job {
                Job::Pass(reply) => {
                    let ok = self.pass();
                    let _ = reply.send(ok);
                }
                Job::ApplyApproved => self.apply_approved(),
                Job::Refresh => {
                    match self.engine.refresh_addresses() {
                        Ok(Some(change)) => self.raise_refused(&change),
                        Ok(None) => {}
                        Err(e) => warn!("Resolving the hosts in force: {}", crate::error_chain(&e)),
                    }
                    self.publish();
                }
                Job::Logs => self.logs(),
                Job::Reload(config, text, settings, taken) => {
                    let ok = self.reload(*config, text, *settings);
                    let _ = taken.send(ok);
                }
                Job::ReloadRefused(reason) => self.audit("config.reload_refused", &reason),
                Job::Ping(reply) => {
                    let _ = reply.send(());
                }
                Job::Repair => self.repair(),
            }
            // What the job allocated (a pass, the published lists, a log's lines) goes back to
            // the system now, not at the next pass.
            crate::memory::release_freed();
        }
        info!("Worker stopped.");
    }

    /// Takes a configuration read on SIGHUP, audited with what changed (`config.reloaded`), or
    /// refused with why (`config.reload_refused`). Outputs that the new configuration writes
    /// differently (a `wildcard_style`, an export added) are rewritten at once, audited as
    /// `config.outputs_rewritten`: nobody tampered with them, and nobody is told so.
    fn reload(&mut self, config: Config, text: String, settings: Settings) -> bool {
        // Outputs that differed already before are drift: the next pass repairs and reports
        // them (with what the new configuration changes in them).
        let drifted_before = self.engine.drift().map_or(true, |d| !d.is_empty());
        match Engine::open(config) {
            Ok(engine) => {
                // A new client with the new settings: the old one's connections go with it.
                self.engine = engine.on_runtime(self.runtime.clone());
                self.settings = settings;
                self.catalogue = None;
                self.open_followers();
                let changes = reload::changes(&self.loaded, &text);
                self.loaded = text;
                info!("Configuration reloaded: {changes}.");
                self.audit("config.reloaded", &changes);
                if !drifted_before {
                    if let Err(e) = self.engine.rewrite_for_configuration() {
                        warn!("The outputs could not be rewritten for the new configuration (the next pass tries again): {}", crate::error_chain(&e));
                    }
                }
                self.publish();
                true
            }
            Err(e) => {
                let reason = crate::error_chain(&e);
                error!("The new configuration cannot be used, the old one stays: {reason}");
                self.audit("config.reload_refused", &reason);
                false
            }
        }
    }

    fn audit(&mut self, action: &str, detail: &str) {
        if let Err(e) = self.engine.store.audit("rocsync", action, None, detail, &now()) {
            error!("Cannot write the audit log ({action}): {}", crate::error_chain(&e));
        }
    }

    fn raise(&mut self, alert: Alert) {
        if !self.settings.alerts {
            return;
        }
        let window = self.settings.dedup_window;
        if let Err(e) = self.engine.store.raise(&alert, &now(), window.as_millis() as u64, now_millis()) {
            error!("Cannot queue an alert: {}", crate::error_chain(&e));
        }
    }

    /// One alert per host whose DNS answer pointed inside.
    fn raise_refused(&mut self, change: &crate::resolve::BookChange) {
        let mut by_host: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> = Default::default();
        for (host, ip, why) in &change.refused {
            let (addresses, reasons) = by_host.entry(host.to_string()).or_default();
            addresses.push(ip.to_string());
            reasons.push((*why).to_owned());
        }
        for (host, (addresses, reasons)) in by_host {
            self.raise(Alert::DnsRefused { host, addresses, reasons });
        }
    }

    /// A change someone else made to rocsync's nftables table, seen by the monitor: repaired
    /// now and audited as a pass would (`sink.repaired`), with the same alert.
    fn repair(&mut self) {
        // Another change may come in while this repair runs: it asks again.
        REPAIR_PENDING.store(false, std::sync::atomic::Ordering::SeqCst);
        // The monitor saw someone else's change: what rocsync knows of the kernel is not to be
        // trusted, even if the generation looks like the one after its own commit.
        crate::sinks::netlink::forget();
        match self.engine.repair_drift() {
            Ok(repaired) if !repaired.is_empty() => {
                self.raise(Alert::DriftRepaired { details: repaired });
                self.publish();
            }
            Ok(_) => {}
            Err(e) => warn!("nftables: the repair after a change by someone else failed (the next poll tries again): {}", crate::error_chain(&e)),
        }
    }

    /// One reconcile pass, then what it means for people: plans to review, failures to tell.
    fn pass(&mut self) -> bool {
        // How long the work takes, for the metrics: the system's monotonic time, not the clock.
        let started = Instant::now();
        let result = self.engine.once(false);
        let mut failure = None;
        let ok = match result {
            Ok(run) => {
                self.failing_since = None;
                self.back_to_normal();
                self.tell_superseded(&run.superseded);
                if let Ok(mut p) = self.shared.write() {
                    let at = now_utc().unix_timestamp();
                    p.metrics.last_good_poll.insert(run.read.source.clone(), at);
                    if run.plans.iter().any(|plan| plan.status == Status::Applied) {
                        p.metrics.applies += 1;
                        p.metrics.last_apply_seconds = started.elapsed().as_secs_f64();
                        p.metrics.apply_seconds_total += p.metrics.last_apply_seconds;
                    }
                }
                if !run.repaired.is_empty() {
                    self.raise(Alert::DriftRepaired { details: run.repaired.clone() });
                }
                if let Some(change) = &run.addresses {
                    self.raise_refused(change);
                }
                true
            }
            Err(e) => {
                let text = crate::error_chain(&e);
                failure = Some(text.clone());
                warn!("Pass failed; what is in force stays: {text}");
                if let EngineError::Sink { plan, .. } = &e {
                    self.raise(Alert::ApplyFailed { plan: *plan, error: text.clone() });
                } else if matches!(e, EngineError::StoreLost { .. } | EngineError::LockTimeout { .. }) {
                    // rocsync's own state, not the annuaire: the error says what to do, and an
                    // "annuaire unreachable" alert would send the DSI the wrong way.
                    error!("{text}");
                } else {
                    if let Ok(mut p) = self.shared.write() {
                        p.metrics.polls_failed += 1;
                    }
                    self.note_unreachable(text);
                }
                false
            }
        };
        if let Ok(open) = self.engine.store.open_plans() {
            self.review_alerts(&open);
        }
        self.certificate_alert();
        self.catalogue = None;
        self.publish();
        self.tell_status(failure.as_deref());
        ok
    }

    /// After an "annuaire unreachable" alert, one "back to normal" alert when it answers well
    /// again. The store tells whether one is owed, so that a restart in between loses nothing.
    fn back_to_normal(&mut self) {
        let source = self.engine.config.source.to_string();
        let window = self.settings.dedup_window;
        let Ok(Some((down_ms, Alert::Unreachable { since, .. }))) = self.engine.store.last_raised(&unreachable_key(&source)) else { return };
        // An unreachable alert is raised again every pass while the outage lasts, so an older
        // one belongs to an outage told about before this version (none is owed for it).
        let recent = now_millis().saturating_sub(down_ms) <= window.as_millis() as u64 + 86_400_000;
        let alert = Alert::BackToNormal { source: source.clone(), since, down_ms };
        if recent && !self.engine.store.alert_raised_since(&alert.key(), 0).unwrap_or(true) {
            info!(source = %source, "The annuaire answers well again.");
            self.raise(alert);
        }
    }

    /// Tells the RSSI that plans it was asked to review were superseded, and by what.
    fn tell_superseded(&mut self, superseded: &[(i64, Vec<i64>)]) {
        for (plan, by) in superseded {
            // Only a plan the RSSI was told about: a plan that never waited is news to nobody.
            if !self.engine.store.alert_raised_since(&review_key(*plan), 0).unwrap_or(false) {
                continue;
            }
            let why = if by.is_empty() { Withdrawn::NoLongerAsked } else { Withdrawn::Replaced { by: by.clone() } };
            let at = self.run_at();
            self.raise(Alert::Superseded { plan: *plan, why, at });
        }
    }

    /// Where, and as whom, the commands of an e-mail are to be run: this host, the owner of the
    /// state directory (the service user: a command run as another user cannot write the
    /// store), and this configuration when it is not the default one.
    fn run_at(&self) -> RunAt {
        use std::os::unix::fs::MetadataExt as _;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let user = std::fs::metadata(&self.engine.config.state_dir).ok().map(|m| {
            let uid = m.uid();
            crate::accounts::user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
        });
        let path = std::path::absolute(&self.config_path).unwrap_or_else(|_| self.config_path.clone());
        let config = (path != Path::new(DEFAULT_CONFIG)).then(|| path.display().to_string());
        let console = self.engine.config.console.as_ref().and_then(|c| c.public_url.as_deref()).map(crate::text::escaped);
        RunAt { host: crate::text::escaped(&host), user: user.map(|u| crate::text::escaped(&u)), config, console }
    }

    /// Tells systemd how the last pass went (`STATUS=`, in `systemctl status`), after every
    /// pass: an old error must not stay there after later good reads.
    fn tell_status(&self, failure: Option<&str>) {
        let text = match failure {
            None => {
                let in_force = self.engine.store.applied_plan_id().unwrap_or(0);
                let waiting = self.engine.store.open_plans().map(|p| p.iter().filter(|p| p.status == Status::Pending).count()).unwrap_or(0);
                format!("running; last pass {} OK: plan {in_force} in force, {waiting} plan(s) waiting for approval", now())
            }
            Some(error) => format!("running; last pass {} failed, what is in force stays: {error}", now()),
        };
        // One line of a datagram: newlines would end the field.
        let line: String = text.replace(['\n', '\r'], " ").chars().take(400).collect();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
    }

    fn note_unreachable(&mut self, error: String) {
        let source = self.engine.config.source.to_string();
        let since = self.failing_since.get_or_insert_with(|| (now(), now_millis(), error.clone()));
        since.2 = error;
        let after = self.settings.unreachable_alert_after;
        if now_millis().saturating_sub(since.1) >= after.as_millis() as u64 {
            let alert = Alert::Unreachable { source, since: since.0.clone(), error: since.2.clone() };
            self.raise(alert);
        }
    }

    /// A review e-mail for each plan that waits and was not told yet; a reminder for those
    /// waiting longer than `review.remind_after`. Both in the mails' language, saying first
    /// when the plan closes much.
    fn review_alerts(&mut self, open: &[Plan]) {
        let remind = self.settings.remind_after;
        let lang = self.settings.language.clone();
        for plan in open.iter().filter(|p| p.status == Status::Pending) {
            // The mail is composed only when it is to be sent: this runs every second.
            if !self.engine.store.alert_raised_since(&review_key(plan.id), 0).unwrap_or(true) {
                let (closing, at) = (self.closing(plan), self.run_at());
                let diff = crate::plan::render::text(&plan.diff, &lang);
                self.raise(Alert::Review { plan: plan.id, diff, reasons: plan.reasons.clone(), closing, at });
                continue;
            }
            let age = OffsetDateTime::parse(&plan.created, &Rfc3339).map(|c| now_utc() - c).unwrap_or_default();
            let since = now_millis().saturating_sub(remind.as_millis() as u64);
            if age >= remind && !self.engine.store.alert_raised_since(&reminder_key(plan.id), since).unwrap_or(true) {
                let (closing, at) = (self.closing(plan), self.run_at());
                let diff = crate::plan::render::text(&plan.diff, &lang);
                self.raise(Alert::Reminder { plan: plan.id, created: plan.created.clone(), diff, closing, at });
            }
        }
    }

    /// How much `plan` closes of what is in force, when the mass-removal guard speaks against
    /// it (more than `review.max_removal_percent` or `review.max_removal_hosts`).
    fn closing(&self, plan: &Plan) -> Option<Closing> {
        let in_force = self.engine.store.applied_summary().map(|(_, hosts)| hosts).unwrap_or(0);
        let fired = !self.engine.config.guard.check(in_force, &plan.diff).is_empty();
        fired.then(|| Closing { hosts: plan.diff.closings(), in_force })
    }

    fn certificate_alert(&mut self) {
        let Some(Ok(cert)) = self.engine.client_certificate() else { return };
        let left = cert.not_after - now_utc();
        if left > time::Duration::try_from(self.engine.config.cert_expiry_warning).unwrap_or(time::Duration::days(30)) {
            return;
        }
        let alert = Alert::Certificate {
            subject: cert.subject.clone(),
            not_after: cert.not_after.format(&Rfc3339).unwrap_or_default(),
            days_left: left.whole_days(),
        };
        // Once a day.
        if !self.engine.store.alert_raised_since(&alert.key(), now_millis().saturating_sub(86_400_000)).unwrap_or(true) {
            self.raise(alert);
        }
    }

    /// Applies the plans approved from the command line since the last tick (every second).
    fn apply_approved(&mut self) {
        let open = match self.engine.store.open_plans() {
            Ok(plans) => plans,
            Err(e) => {
                warn!("Cannot read the plans: {}", crate::error_chain(&e));
                return;
            }
        };
        // Plans made from the command line (`rocsync plan`) and reminders are seen here too.
        self.review_alerts(&open);
        let approved: Vec<Plan> = open.into_iter().filter(|p| p.status == Status::Approved).collect();
        if approved.is_empty() {
            return;
        }
        for plan in approved {
            let started = Instant::now();
            match self.engine.apply(plan.id, "rocsync") {
                Ok(done) => {
                    info!(plan = plan.id, "Approved plan applied ({} plan(s)).", done.len());
                    if let Ok(mut p) = self.shared.write() {
                        p.metrics.applies += 1;
                        p.metrics.last_apply_seconds = started.elapsed().as_secs_f64();
                        p.metrics.apply_seconds_total += p.metrics.last_apply_seconds;
                    }
                }
                Err(e) => {
                    let text = crate::error_chain(&e);
                    // Tried again every second: said once until the reason changes.
                    if self.apply_failures.insert((plan.id, text.clone())) {
                        warn!(plan = plan.id, "Approved plan not applied: {text}");
                    }
                    match e {
                        EngineError::Sink { .. } => self.raise(Alert::ApplyFailed { plan: plan.id, error: text }),
                        // Superseded by the store on the way: whoever approved it waits for it.
                        EngineError::Store(StoreError::Stale { current, .. }) => {
                            let at = self.run_at();
                            self.raise(Alert::Superseded { plan: plan.id, why: Withdrawn::Stale { current }, at });
                        }
                        _ => {}
                    }
                }
            }
        }
        self.publish();
    }

    /// The catalogue of the last good answer, parsed again only when a newer one is stored.
    fn catalogue(&mut self) -> Option<&Catalogue> {
        let cached = self.engine.store.latest_cached_answer().ok()??;
        // A `rocsync once` run beside the daemon may have stored a newer answer.
        if self.catalogue.as_ref().is_none_or(|(at, _)| *at != cached.fetched_at) {
            let answer = crate::sources::annuaire::parse(&cached.body, cached.content_type.as_deref()).ok()?;
            self.catalogue = Some((cached.fetched_at, Catalogue::from_answer(&answer)));
        }
        self.catalogue.as_ref().map(|(_, c)| c)
    }

    /// Reads what the followed logs added, and queues an alert per blocked AMC request (counted
    /// and deduplicated), together with the new position of each log.
    fn logs(&mut self) {
        let prefix = self.settings.logs.nft_prefix.clone();
        let now_t = now_millis();
        if let Some(mut journal) = self.journal.take() {
            let key = journal.key();
            if self.due(&key, now_t) {
                match journal.read() {
                    Ok(chunk) => {
                        self.read_ok(&key, "the journal");
                        let (raised, counts) = self.read_lines(&chunk.lines, LogKind::Nft, &prefix);
                        // No entry read yet, no cursor to keep (an empty one would stop the next
                        // start's journalctl).
                        if let Some(cursor) = journal.cursor.clone() {
                            let position = LogPosition { inode: 0, offset: 0, first_line: cursor };
                            self.record(&key, &position, raised, &counts);
                        }
                    }
                    Err(e) => self.read_failed(&key, "the journal", e.to_string(), now_t),
                }
            }
            self.journal = Some(journal);
        }
        let mut followers = std::mem::take(&mut self.followers);
        for (follower, kind) in &mut followers {
            let key = follower.path().to_string_lossy().into_owned();
            if !self.due(&key, now_t) {
                continue;
            }
            let chunk = match follower.read() {
                Ok(c) => c,
                Err(e) => {
                    self.read_failed(&key, &key, e.to_string(), now_t);
                    continue;
                }
            };
            self.read_ok(&key, &key);
            if let Some(how) = chunk.rotated {
                info!("{} was rotated ({how}); reading the new file from its start.", follower.path().display());
            }
            let Some(position) = follower.position().cloned() else { continue };
            let (raised, counts) = self.read_lines(&chunk.lines, *kind, &prefix);
            self.record(&key, &position, raised, &counts);
        }
        self.followers = followers;
    }

    /// Whether the log `key` is to be read at `now`: a failing one waits for its back-off.
    fn due(&self, key: &str, now: Millis) -> bool {
        self.health.get(key).is_none_or(|h| h.due(now))
    }

    /// A read of `what` failed: said once per reason (a log read every half second filled
    /// the journal), then retried less and less often, up to once a minute.
    fn read_failed(&mut self, key: &str, what: &str, reason: String, now: Millis) {
        if let Tell::Failed { reason, retry_in } = self.health.entry(key.to_owned()).or_default().failed(reason, now) {
            warn!(
                watched = %key,
                "Cannot read {what}: {reason}. Trying again in {} s, then less and less often (at least once a minute); said again only if the reason changes.",
                retry_in.as_secs()
            );
        }
    }

    /// A read of `what` worked: said once after failures.
    fn read_ok(&mut self, key: &str, what: &str) {
        if let Some(Tell::Recovered { attempts, reason }) = self.health.get_mut(key).map(Health::succeeded) {
            info!(watched = %key, "Reading {what} works again, after {attempts} failed attempt(s) ({reason}).");
        }
    }

    /// What `lines` raised and the requests they tell of, against the state in force and the
    /// resolver's address book, read once for both (each decoded them again).
    fn read_lines(&mut self, lines: &[String], kind: LogKind, prefix: &str) -> (Vec<(Alert, String)>, crate::usage::Counts) {
        if lines.is_empty() {
            return (Vec::new(), crate::usage::Counts::default());
        }
        let in_force = self.engine.store.applied().map(|a| a.state).unwrap_or_default();
        let reverse = self.engine.store.address_book().map(|b| b.reverse()).unwrap_or_default();
        let counts = self.usage(lines, kind, prefix, &in_force, &reverse);
        let raised = self.correlate(lines, kind, prefix, &in_force, reverse);
        (raised, counts)
    }

    /// The requests `lines` tell of, let through or blocked, counted per opening (issue 15,
    /// [`crate::usage`]): the hosts in force (the RPN host among them) and the annuaire's (a
    /// migrated AMC's host is closed, and a direct request to it still counts).
    fn usage(&mut self, lines: &[String], kind: LogKind, prefix: &str, in_force: &State, reverse: &BTreeMap<IpAddr, Vec<Host>>) -> crate::usage::Counts {
        let mut hosts: Vec<crate::host::Host> = in_force.entries.keys().cloned().collect();
        if let Some(catalogue) = self.catalogue() {
            hosts.extend(catalogue.hosts.keys().cloned());
        }
        let openings = crate::usage::Openings::new(&hosts);
        let source = match kind {
            LogKind::Squid => crate::usage::Source::Squid,
            LogKind::Nft => crate::usage::Source::Nft { accept_prefix: crate::usage::ACCEPT_PREFIX, drop_prefix: prefix },
        };
        crate::usage::count(lines, source, &openings, reverse, crate::usage::now())
    }

    /// Counts what a log raised, and stores its alerts and its requests with the log's new
    /// position, at once.
    fn record(&mut self, key: &str, position: &LogPosition, raised: Vec<(Alert, String)>, counts: &crate::usage::Counts) {
        if let Ok(mut p) = self.shared.write() {
            for (alert, _) in &raised {
                if let Alert::Blocked { amcs, services, .. } = alert {
                    for amc in amcs {
                        for service in services {
                            *p.metrics.blocked.entry((amc.number.clone(), service.clone())).or_default() += 1;
                        }
                    }
                }
            }
        }
        let window = self.settings.dedup_window.as_millis() as u64;
        let to_store = if self.settings.alerts { raised } else { Vec::new() };
        if let Err(e) = self.engine.store.record_log_with_usage(key, position, &to_store, window, now_millis(), counts, crate::usage::now()) {
            error!("Cannot record what {key} said: {}", crate::error_chain(&e));
        }
    }

    fn correlate(&mut self, lines: &[String], kind: LogKind, prefix: &str, in_force: &State, reverse: BTreeMap<IpAddr, Vec<Host>>) -> Vec<(Alert, String)> {
        let pending: Vec<Plan> = self.engine.store.open_plans().unwrap_or_default();
        let run_at = self.run_at();
        let Some(annuaire) = self.catalogue().cloned() else { return Vec::new() };
        let catalogue = with_notified(&annuaire, &pending);
        let correlator = Correlator::new(&catalogue, in_force, reverse);
        // The RPN host and the migrated AMCs' hosts (issue 15).
        let rpn = self.engine.config.rpn.clone();
        let migrated = if rpn.is_some() { self.engine.store.rpn_migrated().unwrap_or_default() } else { Default::default() };
        let mut out = Vec::new();
        for line in lines {
            let parsed = match kind {
                LogKind::Squid => crate::watch::squid::parse_line(line),
                LogKind::Nft => crate::watch::nftlog::parse_line(line, prefix),
            };
            let Some(Line::Blocked(blocked)) = parsed else { continue };
            let Some(event) = correlator.event(&blocked).or_else(|| crate::rpn::event(&blocked, rpn.as_ref(), &in_force)) else { continue };
            let amcs = event
                .amcs
                .iter()
                .map(|n| AmcName {
                    number: n.clone(),
                    name: catalogue.amcs.iter().find(|(k, _)| k.as_str() == n).map(|(_, i)| i.name.clone()).unwrap_or_default(),
                })
                .collect();
            let pending_plan = event.host.as_deref().and_then(|h| {
                pending.iter().find(|p| p.diff.changes.iter().any(|c| c.after.is_some() && c.host.matches(h))).map(|p| p.id)
            });
            let notified = event.host.as_deref().is_some_and(|h| !annuaire.hosts.keys().any(|k| k.matches(h)));
            let at = log_time(&event.time);
            out.push((
                Alert::Blocked {
                    host: event.host.clone(),
                    ip: event.ip.map(|i| i.to_string()),
                    port: event.port,
                    client: event.client.map(|c| c.to_string()),
                    amcs,
                    services: event.services.clone(),
                    idb: event.idb,
                    in_force: event.in_force,
                    pending_plan,
                    notified,
                    at: run_at.clone(),
                    rpn: crate::rpn::note(&event, &migrated),
                },
                at,
            ));
        }
        out
    }

    /// Refreshes what the HTTP endpoint serves and the gauges.
    fn publish(&mut self) {
        // The state is decoded only when another plan came into force: decoding it at every pass
        // to count its hosts was most of the daemon's memory in a steady state.
        let Ok((plan_id, hosts)) = self.engine.store.applied_summary() else { return };
        let pending = self.engine.store.pending_count().unwrap_or(0);
        let (addresses, dns_refused) = match self.engine.config.resolver.enabled.then(|| self.engine.store.address_book()) {
            Some(Ok(b)) => (
                b.addresses().values().map(|a| a.len()).sum(),
                b.refused().iter().map(|(_, a)| a.len()).sum(),
            ),
            _ => (0, 0),
        };
        let documents = match self.published_plan != Some(plan_id) {
            true => match self.engine.store.applied() {
                Ok(applied) => Some((
                    Document::new(crate::sinks::plain::render(&applied.state, WildcardStyle::Star)),
                    Document::new(crate::sinks::json::render(&applied.state, applied.plan_id)),
                    applied.plan_id,
                )),
                Err(_) => return,
            },
            false => None,
        };
        let Ok(mut p) = self.shared.write() else { return };
        p.metrics.hosts_in_force = hosts;
        p.metrics.pending_plans = pending;
        p.metrics.addresses = addresses;
        p.metrics.dns_refused = dns_refused;
        p.serve_metrics = self.settings.serve_metrics;
        if let Some((plain, json, plan_id)) = documents {
            p.plain = plain;
            p.json = json;
            self.published_plan = Some(plan_id);
        }
    }
}

/// A log's time as people read it: Squid's epoch seconds become RFC 3339 (UTC); syslog's
/// stamps stay as written; none, now.
fn log_time(time: &str) -> String {
    if time.is_empty() {
        return now();
    }
    match time.parse::<f64>() {
        Ok(secs) => OffsetDateTime::from_unix_timestamp(secs as i64)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| time.to_owned()),
        Err(_) => time.to_owned(),
    }
}

/// Where `rocsync` reads its configuration when not told otherwise (the command line's default).
const DEFAULT_CONFIG: &str = "/etc/rocsync/config.toml";

/// The catalogue the log watchers correlate with: the annuaire's, plus the hosts that an open
/// notification-only plan would open. A host named only by an Inter-AMC e-mail is an AMC's
/// host too: blocked, the helpdesk is told which plan opens it rather than nothing.
fn with_notified(annuaire: &Catalogue, plans: &[Plan]) -> Catalogue {
    let mut catalogue = annuaire.clone();
    for change in plans.iter().flat_map(|p| &p.diff.changes).filter(|c| c.is_notification_only()) {
        let entry = change.entry();
        for (number, u) in &entry.amcs {
            catalogue.amcs.entry(number.clone()).or_insert_with(|| AmcInfo {
                number: number.clone(),
                name: u.name.clone(),
                state: AmcState::CircleOfTrust,
            });
            let uses = catalogue.hosts.entry(change.host.clone()).or_default();
            uses.entry(number.clone()).or_insert_with(|| Use { ports: entry.ports.clone(), services: u.services.clone() });
        }
    }
    catalogue
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_read_as_dates() {
        assert_eq!(log_time("1763630101.202"), "2025-11-20T09:15:01Z");
        assert_eq!(log_time("Nov 20 09:15:01"), "Nov 20 09:15:01");
        assert!(log_time("").starts_with("20"));
    }

    #[test]
    fn no_daemon_runs_on_a_fresh_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running(dir.path()), None);
        let lock = dir.path().join(LOCK_FILE);
        std::fs::write(&lock, "4242\n").unwrap();
        assert_eq!(running(dir.path()), None, "a lock file nobody holds is not a daemon");
        let held = File::options().write(true).open(&lock).unwrap();
        held.lock().unwrap();
        assert_eq!(running(dir.path()), Some(4242));
    }


    /// Issue 11, item 2: a blocked request to a host named only by an Inter-AMC e-mail was
    /// counted as "other denied". The watchers' catalogue has the hosts that an open
    /// notification-only plan opens, under the AMC the e-mail names.
    #[test]
    fn hosts_a_notification_only_plan_opens_are_recognised_in_the_logs() {
        use std::collections::{BTreeMap, BTreeSet};

        use crate::catalogue::{AmcUse, Entry, Origin, State};
        use crate::plan::{Change, HostDiff};
        use crate::watch::Blocked;

        let entry = Entry {
            ports: BTreeSet::from([443]),
            amcs: BTreeMap::from([(
                crate::amc::AmcNumber::parse("891234567").unwrap(),
                AmcUse { name: "NOUVELLE MUTUELLE DU SUD".into(), services: BTreeSet::new() },
            )]),
            origins: BTreeSet::from([Origin::Notification]),
            since: None,
        };
        let change = Change { host: crate::host::Host::parse("idb.nouvelle-mutuelle-sud.test").unwrap(), before: None, after: Some(entry) };
        let plan = Plan {
            id: 2,
            created: String::new(),
            base: 1,
            source: "file:annuaire.json".into(),
            serial: None,
            status: Status::Pending,
            needs_approval: true,
            reasons: vec![],
            diff: HostDiff { changes: vec![change] },
        };
        let (annuaire, in_force) = (Catalogue::default(), State::default());
        let blocked = Blocked { time: String::new(), client: None, host: Some("idb.nouvelle-mutuelle-sud.test".into()), ip: None, port: Some(443) };
        assert_eq!(Correlator::new(&annuaire, &in_force, Default::default()).event(&blocked), None, "the annuaire alone does not know it");
        let catalogue = with_notified(&annuaire, &[plan]);
        let event = Correlator::new(&catalogue, &in_force, Default::default()).event(&blocked).expect("an AMC's request");
        assert_eq!(event.amcs, ["891234567"]);
        assert!(!event.in_force && !event.idb);
        assert_eq!(catalogue.amcs.values().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["NOUVELLE MUTUELLE DU SUD"]);
    }
}
