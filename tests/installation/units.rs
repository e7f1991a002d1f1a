//! The shipped units and package against the real file system (issue 11, items 4, 14, 15, 19
//! and 20). rocsync runs as another user through `setpriv` (as the units' `User=` and
//! `SupplementaryGroups=` make it), in a mount namespace where a directory is mounted read-only
//! (as `ProtectSystem=strict` mounts what `ReadWritePaths=` does not list), or in a user
//! namespace (as `PrivateUsers=yes` puts it); a real Squid is reloaded by the root unit's
//! command; the exports are written under two umasks; the units are checked by
//! `systemd-analyze`. What needs root or a tool is skipped outside CI (`util::have`).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{self, Sandbox, stderr, stdout};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn unit(name: &str) -> String {
    fs::read_to_string(repo("systemd").join(name)).unwrap_or_else(|e| panic!("systemd/{name}: {e}"))
}

/// Every value given to `key` in a unit file (comments left out).
fn settings(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_owned())).collect()
}

/// The one value of `key`.
fn setting(unit: &str, key: &str) -> String {
    let all = settings(unit, key);
    assert_eq!(all.len(), 1, "{key}= once in:\n{unit}");
    all[0].clone()
}

/// The configuration the packages install, made by packaging/installed-config.sh.
fn installed_config() -> String {
    let out = Command::new(repo("packaging/installed-config.sh")).arg(repo("config.example.toml")).output().unwrap();
    assert!(out.status.success(), "installed-config.sh: {}", stderr(&out));
    stdout(&out)
}

/// The value of `key = "…"` under `[table]` in a TOML text.
fn toml_value(text: &str, table: &str, key: &str) -> Option<String> {
    let value: toml::Table = text.parse().unwrap();
    let mut at = &value;
    for part in table.split('.') {
        at = at.get(part)?.as_table()?;
    }
    at.get(key)?.as_str().map(str::to_owned)
}

fn chown(owner: &str, path: &Path) {
    assert!(Command::new("chown").args(["-R", owner]).arg(path).status().unwrap().success(), "chown {owner} {}", path.display());
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// The sandbox made the user nobody's, as /var/lib/rocsync is the user rocsync's.
fn give_to_nobody(sb: &Sandbox) {
    chown("65534:65534", sb.dir.path());
    chmod(sb.dir.path(), 0o755);
}

/// `rocsync ARGS` on the sandbox's configuration as the user nobody with `groups`, as the
/// units' `User=` and `SupplementaryGroups=` run it.
fn as_nobody(sb: &Sandbox, groups: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.arg(format!("--groups={}", groups.join(",")));
    }
    cmd.arg(env!("CARGO_BIN_EXE_rocsync"))
        .arg("--config")
        .arg(sb.path("rocsync.toml"))
        .args(args)
        .current_dir(sb.dir.path())
        .env_remove("ROCSYNC_FAILPOINT")
        .output()
        .expect("setpriv")
}

/// `rocsync ARGS` (as root) in a mount namespace of its own where `dir` is read-only, as
/// `ProtectSystem=strict` mounts every path that the unit does not list in `ReadWritePaths=`.
fn with_read_only(sb: &Sandbox, dir: &Path, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_rocsync"))
        .arg("--config")
        .arg(sb.path("rocsync.toml"))
        .args(args)
        .current_dir(sb.dir.path())
        .env_remove("ROCSYNC_FAILPOINT")
        .output()
        .expect("unshare")
}

/// `rocsync ARGS` run with umask `umask`.
fn with_umask(sb: &Sandbox, umask: &str, args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", "umask \"$0\" && exec \"$@\"", umask])
        .arg(env!("CARGO_BIN_EXE_rocsync"))
        .arg("--config")
        .arg(sb.path("rocsync.toml"))
        .args(args)
        .current_dir(sb.dir.path())
        .env_remove("ROCSYNC_FAILPOINT")
        .output()
        .expect("sh")
}

fn group_exists(name: &str) -> bool {
    let found = Command::new("getent").args(["group", name]).output().is_ok_and(|o| o.status.success());
    assert!(found || std::env::var_os("CI").is_none(), "CI must have the group {name}");
    found
}

/// A sandbox whose notifications come from `Maildir/` (with new/, cur/ and tmp/).
fn maildir_sandbox() -> Sandbox {
    let sb = Sandbox::with_config(
        "[annuaire]\nurl = \"file:annuaire.json\"\n\
         [notifications]\nenabled = true\nsource = \"maildir\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n\
         [notifications.maildir]\npath = \"Maildir\"\n",
    );
    sb.set_answer("urls-v1.json");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(sb.path("Maildir").join(sub)).unwrap();
    }
    sb
}

/// The unit's `ProtectSystem=strict` left the Maildir read-only: `once` failed with "Read-only
/// file system (os error 30)" at each notification while `check-config` said OK. It now names
/// the Maildir and the directive that gives it.
#[test]
fn a_read_only_maildir_is_named_by_check_config_with_the_directive_to_add() {
    if !util::have("unshare", true) || !util::have("mount", true) {
        return;
    }
    let sb = maildir_sandbox();
    assert!(sb.ok(&["check-config"]).contains("OK"), "writable, the Maildir passes");
    let out = with_read_only(&sb, &sb.path("Maildir"), &["check-config"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    for sub in ["new", "cur"] {
        let dir = sb.path("Maildir").join(sub);
        assert!(err.contains(&format!("`notifications.maildir.path`: {} is read-only here", dir.display())), "{sub}: {err}");
        assert!(err.contains(&format!("`ReadWritePaths={}`", dir.display())), "{sub}: {err}");
    }
    assert!(err.contains("ProtectSystem=strict") && err.contains("systemctl edit rocsync.service"), "{err}");
}

/// As the service user, a Maildir that another user owns is named with its owner and what
/// gives the service user the right; the same Maildir made its own passes.
#[test]
fn a_maildir_the_service_user_cannot_write_is_named_with_its_owner() {
    if !util::have("setpriv", true) {
        return;
    }
    let sb = maildir_sandbox();
    give_to_nobody(&sb);
    chown("0:0", &sb.path("Maildir"));
    chmod(&sb.path("Maildir/new"), 0o755);
    let out = as_nobody(&sb, &[], &["check-config"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    let new = sb.path("Maildir/new");
    assert!(err.contains(&format!("{} is not writable by user nobody (uid 65534)", new.display())), "{err}");
    assert!(err.contains("owner root, group root, mode 0755") && err.contains(&format!("`chown nobody: {}`", new.display())), "{err}");
    chown("65534:65534", &sb.path("Maildir"));
    let out = as_nobody(&sb, &[], &["check-config"]);
    assert!(out.status.success() && stdout(&out).contains("OK"), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("checked as root"), "{}", stdout(&out));
}

/// An export outside what the unit lets rocsync write failed at every pass while
/// `check-config` said OK. It now names each export and `ReadWritePaths=`.
#[test]
fn an_export_directory_the_unit_leaves_read_only_is_named_before_a_pass_fails() {
    if !util::have("unshare", true) || !util::have("mount", true) {
        return;
    }
    let sb = Sandbox::new("auto", "urls-v1.json");
    fs::create_dir(sb.path("out")).unwrap();
    let out = with_read_only(&sb, &sb.path("out"), &["check-config"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    for key in ["exports.squid.path", "exports.plain.path", "exports.nft_script.path"] {
        assert!(err.contains(&format!("`{key}`: {} is read-only here", sb.path("out").display())), "{key}: {err}");
    }
    assert!(err.contains(&format!("`ReadWritePaths={}`", sb.path("out").display())), "{err}");
    assert!(!err.contains("store.state_dir"), "the state directory is writable: {err}");
    // What check-config foretold.
    let out = with_read_only(&sb, &sb.path("out"), &["once"]);
    assert!(!out.status.success() && stderr(&out).contains("Read-only file system"), "{}{}", stdout(&out), stderr(&out));
}

/// Reading the Squid log needs the `proxy` group (said only in a comment of the unit) and the
/// journal the `systemd-journal` group (said nowhere). check-config, as the service user, names
/// both groups at once; with them as supplementary groups, it passes.
#[test]
fn the_logs_and_the_journal_name_the_group_the_unit_must_add() {
    if !util::have("setpriv", true) || !group_exists("proxy") || !group_exists("systemd-journal") {
        return;
    }
    let sb = Sandbox::with_config(
        "[annuaire]\nurl = \"file:annuaire.json\"\n\
         [watch]\nsquid_access_log = \"squid/access.log\"\njournal = true\njournal_directory = \"journal\"\n",
    );
    sb.set_answer("urls-v1.json");
    let log = sb.path("squid/access.log");
    fs::create_dir(sb.path("squid")).unwrap();
    fs::write(&log, "").unwrap();
    let journal = sb.path("journal/0123456789abcdef0123456789abcdef/system.journal");
    fs::create_dir_all(journal.parent().unwrap()).unwrap();
    fs::write(&journal, "").unwrap();
    give_to_nobody(&sb);
    // As Debian's Squid and journald keep them.
    chown("13:proxy", &log);
    chmod(&log, 0o640);
    chown("0:systemd-journal", &journal);
    chmod(&journal, 0o640);

    let out = as_nobody(&sb, &[], &["check-config"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(err.contains(&format!("`watch.squid_access_log`: {} is not readable by user nobody", log.display())), "{err}");
    assert!(err.contains("`SupplementaryGroups=proxy`"), "{err}");
    assert!(err.contains(&format!("`watch.journal_directory`: {} is not readable", journal.display())), "{err}");
    assert!(err.contains("`SupplementaryGroups=systemd-journal`"), "{err}");
    let out = as_nobody(&sb, &["proxy", "systemd-journal"], &["check-config"]);
    assert!(out.status.success(), "with the groups the drop-in gives: {}{}", stdout(&out), stderr(&out));
}

/// `rocsync-once.service` could not use `[nftables]`: "Address family not supported by
/// protocol (os error 97)" at each timer run, nothing said before. check-config reads
/// rocsync's table as the units will, and says what a user without the capability lacks, or a
/// user namespace (`PrivateUsers=yes`) does.
#[cfg(feature = "netlink")]
#[test]
fn nftables_without_cap_net_admin_is_named_with_the_directives() {
    if !util::have("setpriv", true) || !util::have("unshare", true) || !util::have("ip", true) {
        return;
    }
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\n[resolver]\nenabled = true\n[nftables]\nenabled = true\n");
    sb.set_answer("urls-v1.json");
    give_to_nobody(&sb);
    let out = as_nobody(&sb, &[], &["check-config"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    assert!(err.contains("`nftables.enabled`: rocsync may not read table inet rocsync"), "{err}");
    assert!(err.contains("`AmbientCapabilities=CAP_NET_ADMIN`") && err.contains("`CapabilityBoundingSet=CAP_NET_ADMIN`"), "{err}");
    // Root in a user namespace of its own, as PrivateUsers=yes makes the service.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(env!("CARGO_BIN_EXE_rocsync"))
        .arg("--config")
        .arg(sb.path("rocsync.toml"))
        .arg("check-config")
        .current_dir(sb.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("`PrivateUsers=yes`"), "{}", stderr(&out));
    // With the capability (root, in a namespace of the test's): OK.
    let ns = util::Netns::new("i11units");
    assert!(sb.ok_in(&ns, &["check-config"]).contains("OK"));
}

/// `rocsync-once.service` lacked what `[nftables]` needs (AF_NETLINK, CAP_NET_ADMIN, without
/// PrivateUsers=), and `rocsync-mail.path` started a failing pass five times in 0.6 s, hit the
/// start limit and stopped for good. The once unit now has the daemon's sandbox, and retries a
/// failed pass later, so the path unit is never started faster than the start limit allows.
#[test]
fn the_once_unit_can_use_nftables_and_retries_a_failed_pass_later() {
    let once = unit("rocsync-once.service");
    let daemon = unit("rocsync.service");
    for key in [
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "StateDirectory",
        "StateDirectoryMode",
        "ReadWritePaths",
        "ConfigurationDirectory",
        "ConfigurationDirectoryMode",
        "ProtectSystem",
        "ProtectHome",
        "UMask",
    ] {
        assert_eq!(settings(&once, key), settings(&daemon, key), "{key}= differs between the units");
    }
    assert!(setting(&once, "RestrictAddressFamilies").split_whitespace().any(|f| f == "AF_NETLINK"));
    assert_eq!(setting(&once, "CapabilityBoundingSet"), "CAP_NET_ADMIN");
    assert!(settings(&once, "PrivateUsers").iter().all(|v| v == "no"), "PrivateUsers= keeps nftables away");
    // systemd's default start limit is 5 starts in 10 s: one restart every 2 s would reach it.
    assert_eq!(setting(&once, "Restart"), "on-failure");
    let delay = humantime::parse_duration(&setting(&once, "RestartSec")).unwrap();
    assert!(delay >= Duration::from_secs(60), "{delay:?}");
    let mail = unit("rocsync-mail.path");
    assert_eq!(setting(&mail, "Unit"), "rocsync-once.service");
    if util::have("systemd-analyze", false) {
        verify_units();
    }
}

/// `systemd-analyze verify` on every shipped unit (ExecStart= pointed at the binary just built,
/// and at `true` for a proxy this machine may lack), and `security` still rates both rocsync
/// services OK with what the once unit gained.
fn verify_units() {
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in fs::read_dir(repo("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = fs::read_to_string(&path).unwrap().replace("/usr/bin/rocsync", env!("CARGO_BIN_EXE_rocsync"));
        if !Path::new("/usr/sbin/squid").exists() {
            text = text.replace("/usr/sbin/squid", "/bin/true");
        }
        fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    for expected in ["rocsync-haproxy-reload.path", "rocsync-haproxy-reload.service", "rocsync-squid-reload.path", "rocsync-squid-reload.service"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    let out = Command::new("systemd-analyze").current_dir(dir.path()).arg("verify").args(&names).output().unwrap();
    let log = stderr(&out) + &stdout(&out);
    assert!(out.status.success() && log.trim().is_empty(), "systemd-analyze verify {names:?}:\n{log}");
    for service in ["rocsync.service", "rocsync-once.service"] {
        let out = Command::new("systemd-analyze").current_dir(dir.path()).args(["security", "--offline=true", service]).output().unwrap();
        let report = stdout(&out);
        let verdict = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{report}"));
        assert!(verdict.contains(" OK") || verdict.contains(" SAFE"), "{service}: {verdict}");
    }
}

/// `StateDirectoryMode=0755` let every local user into the state; the Maildir had no writable
/// place; the installed config.toml spoke of ./rocsync-out/. The units, the package's
/// directories and its configuration now name the same paths, and the state is owner-only.
#[test]
fn the_units_the_package_and_the_installed_configuration_agree() {
    let daemon = unit("rocsync.service");
    assert_eq!(setting(&daemon, "StateDirectory"), "rocsync/state");
    assert_eq!(setting(&daemon, "StateDirectoryMode"), "0700");
    assert_eq!(setting(&daemon, "ReadWritePaths"), "-/var/lib/rocsync");
    assert_eq!(setting(&daemon, "ConfigurationDirectoryMode"), "0750", "as postinst sets /etc/rocsync");
    let tmpfiles = fs::read_to_string(repo("packaging/tmpfiles.d/rocsync.conf")).unwrap();
    let dirs: Vec<Vec<&str>> = tmpfiles.lines().filter(|l| l.starts_with("d ")).map(|l| l.split_whitespace().collect()).collect();
    let mode_of = |path: &str| dirs.iter().find(|d| d[1] == path).map(|d| d[2].to_owned());
    assert_eq!(mode_of("/var/lib/rocsync/state").as_deref(), Some("0700"), "{tmpfiles}");
    assert_eq!(mode_of("/var/lib/rocsync/exports").as_deref(), Some("0755"), "{tmpfiles}");
    for sub in ["new", "cur", "tmp"] {
        assert_eq!(mode_of(&format!("/var/lib/rocsync/Maildir/{sub}")).as_deref(), Some("0700"), "{tmpfiles}");
    }
    assert!(fs::read_to_string(repo("packaging/sysusers.d/rocsync.conf")).unwrap().contains(" /var/lib/rocsync "), "the user's home");

    let config = installed_config();
    for old in ["rocsync-out", "rocsync-state", "./", "samples/"] {
        assert!(!config.contains(old), "the installed configuration speaks of {old}:\n{config}");
    }
    assert_eq!(toml_value(&config, "store", "state_dir").as_deref(), Some("/var/lib/rocsync/state"));
    let squid = toml_value(&config, "exports.squid", "path").unwrap();
    for (table, path) in [("exports.squid", &squid), ("exports.plain", &toml_value(&config, "exports.plain", "path").unwrap())] {
        assert!(path.starts_with("/var/lib/rocsync/exports/"), "{table}: {path}");
    }
    // The path units watch what the installed configuration writes.
    assert_eq!(setting(&unit("rocsync-squid-reload.path"), "PathChanged"), squid);
    let example = fs::read_to_string(repo("config.example.toml")).unwrap();
    assert!(example.contains("# path = \"/var/lib/rocsync/exports/haproxy-roc.acl\""), "the HAProxy example path");
    assert_eq!(setting(&unit("rocsync-haproxy-reload.path"), "PathChanged"), "/var/lib/rocsync/exports/haproxy-roc.acl");
    assert!(example.contains("# path = \"/var/lib/rocsync/Maildir\""), "the Maildir example path");
    assert_eq!(setting(&unit("rocsync-mail.path"), "DirectoryNotEmpty"), "/var/lib/rocsync/Maildir/new");
    // The recipes that cannot work as the user rocsync are no longer documented.
    for recipe in ["post_write_command = [\"/usr/sbin/squid\"", "post_write_command = [\"/bin/systemctl\""] {
        assert!(!example.contains(recipe) && !config.contains(recipe), "{recipe}");
    }
}

/// The unit files were split between /lib and /usr/lib; the Maildir's path unit was missing
/// from the RPM. Every unit goes to /usr/lib/systemd/system in both packages.
#[test]
fn every_unit_is_installed_in_usr_lib_by_both_packages() {
    let manifest = fs::read_to_string(repo("Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().unwrap();
    let meta = manifest["package"]["metadata"].as_table().unwrap();
    let deb: Vec<(String, String)> = meta["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_owned(), a[1].as_str().unwrap().to_owned()))
        .collect();
    let rpm: Vec<(String, String)> = meta["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["source"].as_str().unwrap().to_owned(), a["dest"].as_str().unwrap().to_owned()))
        .collect();
    for (source, dest) in deb.iter().chain(&rpm) {
        if dest.contains("systemd/system") {
            assert!(dest.trim_start_matches('/').starts_with("usr/lib/systemd/system/"), "{source} → {dest}");
        }
    }
    // cargo-deb installs rocsync.service itself (systemd-units), in usr/lib/systemd/system.
    assert_eq!(meta["deb"]["systemd-units"]["unit-name"].as_str(), Some("rocsync"));
    for entry in fs::read_dir(repo("systemd")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let source = format!("systemd/{name}");
        assert!(name == "rocsync.service" || deb.iter().any(|(s, _)| *s == source), "{source} in the .deb");
        assert!(rpm.iter().any(|(s, _)| *s == source), "{source} in the .rpm");
    }
}

/// The daemon (UMask=0027) wrote the exports 0640, the timer's pass (UMask=0022) 0644, and
/// Squid, running as `proxy`, could not read the first. One mode, 0644, from every path and
/// whatever the umask; the directories made for them 0755; a file another version left 0640
/// is put right.
#[test]
fn exports_have_one_mode_whatever_the_umask_of_the_pass_that_writes_them() {
    // Going back from v2 to v1 closes 3 of 14 hosts: past the default guard of 20 %.
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\nmax_removal_percent = 100\n");
    sb.set_answer("urls-v1.json");
    let files = ["out/squid.acl", "out/hosts.txt", "out/rocsync.nft"];
    let check = |umask: &str, out: &Output| {
        assert!(out.status.success(), "umask {umask}: {}{}", stdout(out), stderr(out));
        for f in files {
            assert_eq!(mode(&sb.path(f)), 0o644, "{f} written under umask {umask}");
        }
        assert_eq!(mode(&sb.path("out")), 0o755, "out/ made under umask {umask}");
    };
    check("0077", &with_umask(&sb, "0077", &["once"]));
    sb.set_answer("urls-v2.json");
    check("0022", &with_umask(&sb, "0022", &["once"]));
    // An export left 0640 (by an earlier daemon) is put right with the next change.
    chmod(&sb.path("out/squid.acl"), 0o640);
    // Back to v1's list, published anew (an older serial would wait for approval).
    let newer = fs::read_to_string(util::fixture("annuaire/urls-v1.json")).unwrap().replace("\"serie\": 4182", "\"serie\": 4184");
    assert!(newer.contains("4184"));
    fs::write(sb.path("annuaire.json"), newer).unwrap();
    check("0027", &with_umask(&sb, "0027", &["once"]));
    // And by the other paths that write: an approval applied from the command line.
    sb.write_config(&sb.read("rocsync.toml").replace("mode = \"auto\"", "mode = \"review\""));
    sb.set_answer("urls-v2.json");
    assert!(with_umask(&sb, "0077", &["once"]).status.success());
    let plans = sb.json(&["plan", "list", "--json"]);
    let id = plans.as_array().unwrap().iter().find(|p| p["status"] == "pending").map(|p| p["id"].as_i64().unwrap()).expect("a pending plan");
    check("0077", &with_umask(&sb, "0077", &["approve", &id.to_string(), "--by", "J. Martin (RSSI)"]));
    assert!(sb.read("out/hosts.txt").contains("idb2.roc.mutuelle-exemple.test"), "applied");
}

/// An HTTP server on loopback that answers 200 to everything.
fn upstream() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            });
        }
    });
    port
}

/// The status code of `GET http://host:port/` through the proxy.
fn through(proxy: u16, host: &str, port: u16) -> u16 {
    use std::io::{Read, Write};
    // Squid closes and reopens its port on a reconfigure: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", proxy)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the proxy on port {proxy} does not answer: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

struct Squid(std::process::Child);

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// config.example's recipes ran `squid -k reconfigure` as a post_write_command: as the user
/// rocsync it fails ("Operation not permitted") and Squid keeps the old ACL, so a host that the
/// annuaire closed stays open at the proxy. The documented recipe now is the root path unit:
/// rocsync (as its user) writes the ACL, and the command of rocsync-squid-reload.service, run
/// as root, makes a real Squid drop the closed host and admit the new one.
#[test]
fn the_root_reload_unit_makes_squid_drop_a_host_the_annuaire_closed() {
    if !util::have("squid", true) || !util::have("setpriv", true) {
        return;
    }
    let up = upstream();
    let squid_dir = tempfile::tempdir().unwrap();
    let d = squid_dir.path();
    let conf = d.join("squid.conf");
    let sb = Sandbox::with_config("");
    // The old recipe, as the user the service runs as.
    sb.write_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n\
         [exports.squid]\npath = \"out/squid.acl\"\npost_write_command = [\"/usr/sbin/squid\", \"-k\", \"reconfigure\", \"-f\", \"{}\"]\n\
         post_write_timeout = \"20s\"\n[store]\nstate_dir = \"state\"\n",
        conf.display()
    ));
    sb.set_answer("urls-v1.json");
    give_to_nobody(&sb);
    let out = as_nobody(&sb, &[], &["once"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(mode(&sb.path("out/squid.acl")), 0o644, "Squid reads it as proxy");

    fs::write(
        d.join("hosts"),
        "127.0.0.1 idb.roc.mutuelle-exemple.test idb2.roc.mutuelle-exemple.test www.example-news.test\n",
    )
    .unwrap();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{proxy}\npid_filename {p}/squid.pid\ncache_log {p}/cache.log\naccess_log stdio:{p}/access.log\n\
             cache deny all\ncache_mem 8 MB\nhosts_file {p}/hosts\ndns_nameservers 127.0.0.1\nshutdown_lifetime 0 seconds\n\
             cache_effective_user proxy\ncoredump_dir {p}\n\
             acl roc_amc dstdomain \"{acl}\"\nhttp_access allow roc_amc\nhttp_access deny all\n",
            p = d.display(),
            acl = sb.path("out/squid.acl").display()
        ),
    )
    .unwrap();
    chmod(d, 0o777);
    let child = Command::new("squid")
        .args(["-N", "-f"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _squid = Squid(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", proxy)).is_err() {
        assert!(Instant::now() < deadline, "squid did not start: {}", fs::read_to_string(d.join("cache.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(through(proxy, "idb.roc.mutuelle-exemple.test", up), 200);
    assert_eq!(through(proxy, "idb2.roc.mutuelle-exemple.test", up), 403);

    // The annuaire replaces idb by idb2: rocsync applies it, its post_write_command fails.
    sb.set_answer("urls-v2.json");
    let out = as_nobody(&sb, &[], &["once"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(sb.read("out/squid.acl").contains("idb2.roc.mutuelle-exemple.test"));
    // Audited at each apply, this one included (the first ran before Squid).
    let audit = stdout(&as_nobody(&sb, &[], &["audit"]));
    assert!(audit.matches("export.post_write_failed").count() >= 2, "{audit}");
    assert_eq!(through(proxy, "idb.roc.mutuelle-exemple.test", up), 200, "Squid kept the old ACL: the closed host stays open");

    // What rocsync-squid-reload.service runs, as root (here with the test's squid.conf).
    let exec = setting(&unit("rocsync-squid-reload.service"), "ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv, ["/usr/sbin/squid", "-k", "reconfigure"]);
    let out = Command::new(argv[0]).args(&argv[1..]).arg("-f").arg(&conf).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while through(proxy, "idb.roc.mutuelle-exemple.test", up) != 403 {
        assert!(Instant::now() < deadline, "Squid still allows the closed host: {}", fs::read_to_string(d.join("cache.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(through(proxy, "idb2.roc.mutuelle-exemple.test", up), 200, "the new host");
    assert_eq!(through(proxy, "www.example-news.test", up), 403);
}

/// The man page pointed to rocsync-run(1) and siblings, which are not installed, and had no
/// FILES, SIGNALS or EXIT STATUS section.
#[test]
fn the_man_page_points_to_no_uninstalled_page_and_has_the_operator_sections() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let page = sb.ok(&["man"]);
    assert!(!page.contains("(1)"), "a page that is not installed:\n{page}");
    for section in [".SH COMMANDS", ".SH \"EXIT STATUS\"", ".SH SIGNALS", ".SH FILES"] {
        assert!(page.contains(section), "{section}:\n{page}");
    }
    for command in ["rocsync run", "rocsync approve", "rocsync check\\-config", "rocsync inspect log"] {
        assert!(page.contains(command), "{command}:\n{page}");
    }
    assert!(page.contains("SIGHUP") && page.contains("/var/lib/rocsync/state/"), "{page}");
    // groff reads it without a warning, where it is installed.
    if Command::new("sh").args(["-c", "command -v groff"]).output().is_ok_and(|o| o.status.success()) {
        let file = sb.path("rocsync.1");
        fs::write(&file, &page).unwrap();
        let out = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&file).output().unwrap();
        assert!(out.status.success() && stderr(&out).trim().is_empty(), "groff: {}", stderr(&out));
    }
}
