//! What a configuration asks of the file system and the kernel, checked with the rights of the
//! user who runs `rocsync check-config`.
//!
//! The units run `check-config` in `ExecStartPre=` as the service user, inside the service's
//! sandbox: a path that `ProtectSystem=strict` leaves read-only, a log that only the `proxy`
//! group reads, nftables without `CAP_NET_ADMIN` are named there, with the unit directive that
//! gives what is missing, instead of failing at every pass. The kernel decides (access(2), a
//! read of rocsync's nftables table), so modes, ACLs, read-only mounts, user namespaces and
//! seccomp filters all count. Only `check-config` asks: loading a configuration (a reload
//! included) never depends on who reads it.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::{Config, ConfigError, Problem};

/// How a packaged unit gets a directive without editing the unit's own file.
const DROP_IN: &str =
    "in a drop-in: `systemctl edit rocsync.service` (and rocsync-once.service when its timer runs the passes)";

/// Checks what `config` (read from `path`) needs against the rights of the user running this,
/// and reports every missing right at once, each with its key and its place in the file.
pub fn check(config: &Config, path: &Path) -> Result<(), ConfigError> {
    let mut problems = problems(config);
    if problems.is_empty() {
        return Ok(());
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        place(&text, &mut problems);
    }
    Err(ConfigError { origin: path.display().to_string(), problems })
}

/// Whether this runs as root, for whom every path is writable but a read-only mount: the
/// service user's rights are then not what was checked.
pub fn as_root() -> bool {
    sys::euid() == 0
}

/// Every right that `config` needs and the user running this lacks.
pub fn problems(config: &Config) -> Vec<Problem> {
    let who = Who::current();
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: Option<String>| {
        if let Some(message) = message {
            problems.push(Problem { at: None, key: Some(key.to_owned()), message });
        }
    };
    bad("store.state_dir", may_write_in(&config.state_dir, &who, "keep its state there (plans, decisions, the audit log)"));
    // A store that another user (root) created is read-only for the service.
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let path = config.state_dir.join(file);
        if path.exists() {
            bad("store.state_dir", may_write(&path, &who, "write its store"));
        }
    }
    for export in &config.exports {
        let dir = match export.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let need = format!("write {} there (a new file, renamed over the old one)", export.path.display());
        bad(&format!("exports.{}.path", export.export.key()), may_write_in(&dir, &who, &need));
    }
    if let Some(maildir) = &config.maildir {
        for (sub, need) in [
            ("new", "move each message out of new/ once it is recorded"),
            ("cur", "move each message into cur/ once it is recorded"),
        ] {
            bad("notifications.maildir.path", may_write_in(&maildir.join(sub), &who, need));
        }
    }
    let watch = &config.watch;
    for (key, path) in [("watch.squid_access_log", &watch.squid_access_log), ("watch.nft_log", &watch.nft_log)] {
        if let Some(path) = path {
            bad(key, may_read_log(&config.base_dir.join(path), &who));
        }
    }
    if watch.journal {
        let dir = watch.journal_directory.as_ref().map(|d| config.base_dir.join(d));
        let key = if dir.is_some() { "watch.journal_directory" } else { "watch.journal" };
        bad(key, may_read_journal(dir.as_deref(), &who));
    }
    if let Some(layout) = &config.nftables.layout {
        let table = &layout.names.table;
        bad("nftables.enabled", crate::sinks::netlink::snapshot(layout).err().map(|e| netlink_refusal(&e, table)));
    }
    problems
}

/// Gives each problem its place in `text` (the key's line and column), in file order.
fn place(text: &str, problems: &mut [Problem]) {
    let Ok(root) = DeTable::parse(text) else { return };
    for p in problems.iter_mut() {
        p.at = p.key.as_deref().and_then(|k| super::diagnostics::key_span(root.get_ref(), k)).map(|s| super::diagnostics::line_col(text, s));
    }
    problems.sort_by_key(|p| p.at.unwrap_or((usize::MAX, 0)));
}


/// Why rocsync could not create and replace files in `dir` (made when missing, so then its
/// nearest existing parent is what counts), or `None`.
fn may_write_in(dir: &Path, who: &Who, need: &str) -> Option<String> {
    let at = nearest_existing(dir);
    let err = sys::access(&at, sys::W_OK | sys::X_OK).err()?;
    Some(refused(&at, dir, &err, who, need, Right::Write))
}

/// Why rocsync could not write the file `path`, or `None`.
fn may_write(path: &Path, who: &Who, need: &str) -> Option<String> {
    let err = sys::access(path, sys::W_OK).err()?;
    Some(refused(path, path, &err, who, need, Right::Write))
}

/// Why rocsync could not read the log `path`, or `None`. A log that is not there yet is no
/// problem: the follower waits for it (Squid creates its log at its first request).
fn may_read_log(path: &Path, who: &Who) -> Option<String> {
    match sys::access(path, sys::R_OK) {
        Ok(()) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(refused(path, path, &e, who, "follow it for blocked requests", Right::Read)),
    }
}

/// Why `journalctl` run by rocsync would not see the kernel's messages: the system journal
/// (or `dir`) has files and none of them is readable. `None` when one is, or there are none.
fn may_read_journal(dir: Option<&Path>, who: &Who) -> Option<String> {
    let need = "read the kernel's messages there with journalctl";
    let roots = match dir {
        Some(dir) => vec![dir.to_owned()],
        None => vec![PathBuf::from("/var/log/journal"), PathBuf::from("/run/log/journal")],
    };
    let mut files = Vec::new();
    for root in &roots {
        match journal_files(root, 1, dir.is_none(), &mut files) {
            Ok(()) => {}
            // No persistent (or no volatile) journal on this host.
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_none() => {}
            Err(e) => return Some(refused(root, root, &e, who, need, Right::Read)),
        }
    }
    if files.iter().any(|f| sys::access(f, sys::R_OK).is_ok()) {
        return None;
    }
    let file = files.first()?;
    let err = sys::access(file, sys::R_OK).err()?;
    Some(refused(file, file, &err, who, need, Right::Read))
}

/// The journal files in `dir` and, `depth` levels down, in its directories (the system
/// journal keeps them under the machine id); only `system*.journal` when `system_only`.
fn journal_files(dir: &Path, depth: u8, system_only: bool, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if depth > 0 {
                // A directory that cannot be listed holds nothing this check can name.
                let _ = journal_files(&entry.path(), depth - 1, system_only, files);
            }
        } else if name.ends_with(".journal") && (!system_only || name.starts_with("system")) {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// `path` if it exists, else its nearest parent that does (what a `mkdir -p` needs to write).
/// A parent that cannot be searched is where the search stops: access(2) then names it.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                Some(up) if !up.as_os_str().is_empty() => at = up,
                _ => return PathBuf::from("."),
            },
            _ => return at.to_owned(),
        }
    }
}

/// What `refused` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Right {
    Read,
    Write,
}

/// The problem's text: what `path` refused (`err`) to `who`, what rocsync needs it for, and
/// the directive (or the command) that gives it. `wanted` is the path rocsync writes, `path`
/// itself or a directory to be made in it.
fn refused(path: &Path, wanted: &Path, err: &io::Error, who: &Who, need: &str, right: Right) -> String {
    let shown = path.display();
    if err.raw_os_error() == Some(libc::EROFS) {
        // ReadWritePaths= naming a missing path fails the unit's start: the path comes first.
        let create = if wanted.exists() { String::new() } else { format!("create {} (the service user's), then ", wanted.display()) };
        return format!(
            "{shown} is read-only here ({err}), and rocsync must {need}: under systemd, ProtectSystem=strict leaves writable only \
             the unit's StateDirectory= and ReadWritePaths=; {create}add `ReadWritePaths={}` {DROP_IN}",
            wanted.display()
        );
    }
    if err.kind() != io::ErrorKind::PermissionDenied {
        return format!("{shown}: {err}; rocsync must {need}");
    }
    if ["/home", "/root", "/run/user"].iter().any(|hidden| path.starts_with(hidden)) {
        return format!(
            "{shown} cannot be reached by {who} ({err}), and rocsync must {need}: the unit's ProtectHome=yes hides /home, /root \
             and /run/user; move it, or set `ProtectHome=read-only` and `ReadWritePaths={shown}` {DROP_IN}"
        );
    }
    let (adjective, group_bit) = match right {
        Right::Read => ("readable", 0o040),
        Right::Write => ("writable", 0o020),
    };
    let owner = Owner::of(path);
    let described = owner.as_ref().map(|o| format!("; {o}")).unwrap_or_default();
    let fix = match (&owner, right) {
        (Some(o), _) if o.mode & group_bit != 0 => format!("add `SupplementaryGroups={}` {DROP_IN}", o.group),
        // What rocsync writes itself may be given to the service user; a parent that exists
        // (`/etc`, `/var`) never is: the directory rocsync needs is made for it instead.
        (_, Right::Write) if wanted == path => {
            format!("make it the service user's (`chown {}: {}`)", who.user(), crate::text::shell_word(&path.to_string_lossy()))
        }
        (_, Right::Write) => format!(
            "make the directory rocsync needs, the service user's (`install -d -o {} {}`)",
            who.user(),
            crate::text::shell_word(&wanted.to_string_lossy())
        ),
        (_, Right::Read) => "give the service's user read access (a group that may read it, then `SupplementaryGroups=` in the unit)".to_owned(),
    };
    format!("{shown} is not {adjective} by {who} ({err}{described}), and rocsync must {need}: {fix}")
}

/// Why rocsync cannot drive its nftables table from here, from the error of reading it.
fn netlink_refusal(err: &io::Error, table: &str) -> String {
    match err.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => format!(
            "netlink sockets are refused here ({err}), and rocsync keeps table inet {table} through netlink: the unit's \
             RestrictAddressFamilies= must list AF_NETLINK {DROP_IN}"
        ),
        Some(libc::EPERM | libc::EACCES) => format!(
            "rocsync may not read table inet {table} ({err}): nftables needs CAP_NET_ADMIN in the host's network namespace, \
             `AmbientCapabilities=CAP_NET_ADMIN` and `CapabilityBoundingSet=CAP_NET_ADMIN` without `PrivateUsers=yes` (a user \
             namespace's capabilities do not reach the host's nftables) {DROP_IN}; the packaged units have them"
        ),
        _ => format!("cannot read table inet {table} through netlink: {err}"),
    }
}

/// The user this process runs as.
struct Who {
    uid: u32,
    name: Option<String>,
}

impl Who {
    fn current() -> Who {
        let uid = sys::euid();
        Who { uid, name: crate::accounts::user_name(uid) }
    }

    /// For `chown`: the name, or the number.
    fn user(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uid.to_string())
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "user {name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// Who owns a path, and its mode.
struct Owner {
    user: String,
    group: String,
    mode: u32,
}

impl Owner {
    fn of(path: &Path) -> Option<Owner> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Owner {
            user: crate::accounts::user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string()),
            group: crate::accounts::group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string()),
            mode: meta.mode() & 0o7777,
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "owner {}, group {}, mode {:04o}", self.user, self.group, self.mode)
    }
}

/// The two system calls that std does not offer, through rustix's safe wrappers.
mod sys {
    use std::io;
    use std::path::Path;

    pub use rustix::fs::Access;
    pub const R_OK: Access = Access::READ_OK;
    pub const W_OK: Access = Access::WRITE_OK;
    pub const X_OK: Access = Access::EXEC_OK;

    /// access(2): whether this process's user may read, write or search `path`, as the kernel
    /// decides it (modes, ACLs, read-only mounts, capabilities).
    pub fn access(path: &Path, mode: Access) -> io::Result<()> {
        rustix::fs::access(path, mode).map_err(io::Error::from)
    }

    /// The effective user id.
    pub fn euid() -> u32 {
        rustix::process::geteuid().as_raw()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn who() -> Who {
        Who { uid: 999, name: Some("rocsync".into()) }
    }

    #[test]
    fn a_read_only_mount_names_the_read_write_paths_directive() {
        let err = io::Error::from_raw_os_error(libc::EROFS);
        let text = refused(Path::new("/srv"), Path::new("/srv/roc/exports"), &err, &who(), "write squid.acl there", Right::Write);
        assert!(text.starts_with("/srv is read-only here (Read-only file system"), "{text}");
        assert!(text.contains("ProtectSystem=strict") && text.contains("`ReadWritePaths=/srv/roc/exports`"), "{text}");
        assert!(text.contains("create /srv/roc/exports (the service user's), then add"), "a missing path fails the unit: {text}");
        assert!(text.contains("systemctl edit rocsync.service"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let text = refused(dir.path(), dir.path(), &err, &who(), "write squid.acl there", Right::Write);
        assert!(text.contains(&format!("; add `ReadWritePaths={}`", dir.path().display())), "{text}");
    }

    #[test]
    fn a_path_another_group_may_write_names_that_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = io::Error::from_raw_os_error(libc::EACCES);
        let text = refused(dir.path(), dir.path(), &err, &who(), "move each message out of new/", Right::Write);
        let group = crate::accounts::group_name(std::fs::metadata(dir.path()).unwrap().gid())
            .unwrap_or_else(|| std::fs::metadata(dir.path()).unwrap().gid().to_string());
        assert!(text.contains("is not writable by user rocsync (uid 999)") && text.contains("mode 0770"), "{text}");
        assert!(text.contains(&format!("`SupplementaryGroups={group}`")), "{text}");
        // Without a group that may write: the owner is to change.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = refused(dir.path(), dir.path(), &err, &who(), "write its state there", Right::Write);
        assert!(text.contains(&format!("`chown rocsync: {}`", dir.path().display())), "{text}");
        assert!(!text.contains("SupplementaryGroups"), "{text}");
    }

    /// Found by the second attack: for a directory not made yet, the advice was to give its
    /// existing parent to the service user (`chown nobody: /etc`), and paths were not quoted.
    #[test]
    fn a_parent_that_exists_is_never_given_away_and_paths_are_quoted() {
        let err = io::Error::from_raw_os_error(libc::EACCES);
        let text = refused(Path::new("/etc"), Path::new("/etc/x y;$(id)/out"), &err, &who(), "write its exports there", Right::Write);
        assert!(!text.contains("chown"), "{text}");
        assert!(text.contains("`install -d -o rocsync '/etc/x y;$(id)/out'`"), "{text}");
    }

    #[test]
    fn a_log_the_proxy_group_reads_names_that_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = io::Error::from_raw_os_error(libc::EACCES);
        let text = refused(&log, &log, &err, &who(), "follow it for blocked requests", Right::Read);
        assert!(text.contains("is not readable by user rocsync") && text.contains("`SupplementaryGroups="), "{text}");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = refused(&log, &log, &err, &who(), "follow it for blocked requests", Right::Read);
        assert!(text.contains("give the service's user read access"), "{text}");
    }

    #[test]
    fn a_path_under_home_names_protect_home() {
        let err = io::Error::from_raw_os_error(libc::EACCES);
        let home = Path::new("/home/dsi/Maildir/new");
        let text = refused(home, home, &err, &who(), "move each message out of new/", Right::Write);
        assert!(text.contains("ProtectHome=yes") && text.contains("`ReadWritePaths=/home/dsi/Maildir/new`"), "{text}");
    }

    /// rocsync-once.service had no AF_NETLINK, no capability and PrivateUsers=yes: each timer
    /// run failed with "Address family not supported by protocol (os error 97)".
    #[test]
    fn netlink_refusals_name_the_directive() {
        let family = netlink_refusal(&io::Error::from_raw_os_error(libc::EAFNOSUPPORT), "rocsync");
        assert!(family.contains("RestrictAddressFamilies=") && family.contains("AF_NETLINK"), "{family}");
        let capability = netlink_refusal(&io::Error::from_raw_os_error(libc::EPERM), "rocsync");
        assert!(capability.contains("CapabilityBoundingSet=CAP_NET_ADMIN") && capability.contains("PrivateUsers=yes"), "{capability}");
        let other = netlink_refusal(&io::Error::from_raw_os_error(libc::EPROTONOSUPPORT), "rocsync");
        assert!(other.starts_with("cannot read table inet rocsync through netlink"), "{other}");
    }

    #[test]
    fn the_nearest_existing_parent_is_what_a_missing_directory_needs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(nearest_existing(&dir.path().join("a/b/c")), dir.path());
        assert_eq!(nearest_existing(dir.path()), dir.path());
        assert_eq!(nearest_existing(Path::new("surely-missing-dir/x")), PathBuf::from("."));
        // The owner of a fresh directory may write in it, and in what it would create there.
        assert_eq!(may_write_in(&dir.path().join("out/sub"), &who(), "write"), None);
    }


    #[test]
    fn journal_files_are_found_under_the_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("0123456789abcdef");
        std::fs::create_dir(&id).unwrap();
        for name in ["system.journal", "system@0005-0001.journal", "user-1000.journal", "system.journal~"] {
            std::fs::write(id.join(name), "").unwrap();
        }
        let mut system = Vec::new();
        journal_files(dir.path(), 1, true, &mut system).unwrap();
        system.sort();
        assert_eq!(system, [id.join("system.journal"), id.join("system@0005-0001.journal")]);
        let mut all = Vec::new();
        journal_files(dir.path(), 1, false, &mut all).unwrap();
        assert_eq!(all.len(), 3);
        // Readable by the owner: no problem.
        assert_eq!(may_read_journal(Some(dir.path()), &who()), None);
    }
}
