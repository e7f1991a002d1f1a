//! The state store under the hardening issue's steps: a lost database, two passes at once, a
//! full disk under the commands that only show, and who may read the state.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Sandbox, answer_json, fixture, stderr, stdout};

/// `rm state/state.db*`, as the reproduction does.
fn lose_the_store(sb: &Sandbox) {
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = fs::remove_file(sb.path("state").join(name));
    }
    assert!(!sb.path("state/state.db").exists());
}

fn hosts_of(plan_part: &serde_json::Value) -> Vec<String> {
    plan_part.as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_lost_state_database_is_refused_then_recovered_and_its_closing_waits_for_approval() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    sb.ok(&["once"]);
    let v1 = sb.outputs();
    assert!(sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test\n"));
    lose_the_store(&sb);
    sb.set_answer("urls-v2.json");

    // Planning from the empty state is refused: the error names the outputs, the plan they
    // name, and the recovery command. Nothing is planned or rewritten.
    let out = sb.run(&["once"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("out/squid.acl (plan 1)") && err.contains("out/rocsync.nft (plan 1)"), "{err}");
    assert!(err.contains("out/hosts.txt (no header)"), "{err}");
    assert!(err.contains("rocsync recover --by NAME"), "{err}");
    assert!(!stdout(&out).contains("to open"), "nothing planned: {}", stdout(&out));
    assert_eq!(sb.outputs(), v1, "no output rewritten");
    for args in [&["plan"][..], &["once", "--dry-run"][..]] {
        let out = sb.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains("rocsync recover --by NAME"), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(sb.json(&["plan", "list", "--json"]), serde_json::json!([]), "no plan stored");
    let status = sb.run(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stderr(&status).contains("rocsync recover --by NAME"), "status tells it too: {}", stderr(&status));

    // The recovery records what the outputs hold as the state in force, audited.
    let recovered = sb.ok(&["recover", "--by", "x"]);
    assert!(recovered.contains("Plan 1 records the 12 host(s)"), "{recovered}");
    let audit = sb.json(&["audit", "--json"]);
    let entry = audit.as_array().unwrap().iter().find(|a| a["action"] == "store.recovered").expect("audited");
    assert_eq!(entry["actor"], "x");
    assert!(entry["detail"].as_str().unwrap().contains("out/squid.acl (plan 1)"), "{entry}");
    let status = sb.json(&["status", "--json"]);
    assert_eq!((status["in_force"]["plan"].as_i64(), status["in_force"]["hosts"].as_i64()), (Some(1), Some(12)));
    let again = sb.run(&["recover", "--by", "x"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("not lost"), "{}", stderr(&again));

    // The next pass plans against it: the opening applies, the closing waits for approval.
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 2  applied") && out.contains("Plan 3  pending"), "{out}");
    let hosts = sb.read("out/hosts.txt");
    assert!(hosts.contains("idb2.roc.mutuelle-exemple.test\n"), "{hosts}");
    assert!(hosts.contains("idb.roc.mutuelle-exemple.test\n"), "v1's host stays until approved: {hosts}");
    let plan = sb.json(&["plan", "show", "3", "--format", "json"]);
    assert_eq!(hosts_of(&plan["removed"]), ["idb.roc.mutuelle-exemple.test"]);
    assert_eq!(plan["status"], "pending");
}

#[test]
fn after_a_recovery_closings_wait_for_approval_even_in_auto_mode() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    lose_the_store(&sb);
    sb.ok(&["recover", "--by", "rssi"]);
    sb.set_answer("urls-v2.json");
    // Auto mode would apply this closing of 1 host in 12 under the guard's thresholds; against
    // a recovered state, it waits.
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 2  pending"), "{out}");
    assert!(out.contains("computed against a state recovered from the outputs"), "{out}");
    assert!(sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test\n"));
    sb.ok(&["approve", "2", "--by", "rssi"]);
    assert!(!sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test\n"));
}

#[test]
fn two_passes_started_together_both_succeed_and_the_second_plans_against_the_first() {
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"");
    let bin = assert_cmd::cargo::cargo_bin("rocsync");
    let start = || {
        Command::new(&bin)
            .arg("--config")
            .arg(sb.path("rocsync.toml"))
            .arg("once")
            .current_dir(sb.dir.path())
            .env_remove("ROCSYNC_FAILPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rocsync once")
    };
    // The store exists before the rounds: what is raced is the pass, not its creation.
    fs::write(sb.path("annuaire.json"), answer_json(&[])).unwrap();
    assert!(sb.ok(&["once"]).contains("Nothing to change"));
    let mut amcs: Vec<(String, String)> = Vec::new();
    for round in 1..=10 {
        // Each round the annuaire lists one AMC more: one opening, one plan.
        amcs.push((format!("10000000{round:02}"), format!("idb.amc{round}.test")));
        let listed: Vec<(&str, &str)> = amcs.iter().map(|(n, h)| (n.as_str(), h.as_str())).collect();
        fs::write(sb.path("annuaire.json"), answer_json(&listed)).unwrap();
        let (first, second) = (start(), start());
        let outs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
        for o in &outs {
            assert!(o.status.success(), "round {round}: {}{}", stdout(o), stderr(o));
        }
        let texts: Vec<String> = outs.iter().map(stdout).collect();
        let applied = texts.iter().filter(|t| t.contains(&format!("Plan {round}  applied"))).count();
        let against = texts.iter().filter(|t| t.contains(&format!("(the state of plan {round}) matches the source"))).count();
        assert_eq!((applied, against), (1, 1), "round {round}:\n{}\n----\n{}", texts[0], texts[1]);
    }
    assert_eq!(sb.read("out/hosts.txt").lines().count(), 10);
    assert_eq!(sb.json(&["plan", "list", "--json", "--all"]).as_array().unwrap().len(), 10, "one plan a round");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A tmpfs mounted on a directory for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let options = format!("size={size},mode=0700");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "rocsync-test"]).arg(dir).status().expect("mount");
        assert!(status.success(), "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` to its last byte.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = fs::File::create(dir.join("filler")).unwrap();
    for size in [1 << 16, 4096, 1] {
        let chunk = vec![0u8; size];
        for _ in 0..(64 << 20) / size {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
    }
}

/// The state directory and database made read-only, restored when dropped.
struct ReadOnlyState(PathBuf);

impl ReadOnlyState {
    fn set(dir: &Path) -> ReadOnlyState {
        fs::set_permissions(dir.join("state.db"), fs::Permissions::from_mode(0o444)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
        ReadOnlyState(dir.to_owned())
    }
}

impl Drop for ReadOnlyState {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o700));
        let _ = fs::set_permissions(self.0.join("state.db"), fs::Permissions::from_mode(0o600));
    }
}

/// Every command that only shows answers from the store as the first `once` left it.
fn the_commands_that_only_show_answer(sb: &Sandbox) {
    let status = sb.json(&["status", "--json"]);
    assert_eq!((status["in_force"]["plan"].as_i64(), status["in_force"]["hosts"].as_i64()), (Some(1), Some(12)), "{status}");
    let audit = sb.json(&["audit", "--json"]);
    assert!(audit.as_array().unwrap().iter().any(|a| a["action"] == "plan.applied"), "{audit}");
    assert_eq!(sb.json(&["plan", "list", "--json"]).as_array().unwrap().len(), 1);
    assert!(sb.ok(&["plan", "show", "1"]).contains("Plan 1"));
    assert!(sb.ok(&["plan", "show", "1", "--format", "diff"]).contains("+idb.roc.mutuelle-exemple.test:443"));
    assert!(sb.json(&["notifications", "--json"]).is_array());
    assert!(sb.json(&["alerts", "--json"]).is_array());
    let log = fixture("logs/squid-access.log");
    let report = sb.json(&["inspect", "log", log.to_str().unwrap(), "--kind", "squid", "--json"]);
    assert!(report.is_object(), "{report}");
}

#[test]
fn a_full_disk_does_not_silence_status_audit_and_plan_list() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    let state = sb.path("state");
    fs::create_dir(&state).unwrap();
    if is_root() {
        // Root reads through any permission: the state gets a small file system of its own,
        // filled to the last byte.
        let _tmpfs = Tmpfs::mount(&state, "4m");
        sb.ok(&["once"]);
        fill(&state);
        assert!(fs::write(state.join("probe"), vec![0u8; 8192]).is_err(), "the state's file system is full");
        let out = sb.run(&["once"]);
        assert!(!out.status.success(), "a command that writes cannot: {}", stdout(&out));
        the_commands_that_only_show_answer(&sb);
    } else {
        eprintln!("not root: a read-only state directory and database stand in for the full disk");
        sb.ok(&["once"]);
        let _read_only = ReadOnlyState::set(&state);
        the_commands_that_only_show_answer(&sb);
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// The state directory is 0700, the database 0600, and nothing in it is open to others.
fn assert_private(state: &Path, when: &str) {
    assert_eq!(mode(state), 0o700, "{when}: the state directory");
    assert_eq!(mode(&state.join("state.db")), 0o600, "{when}: state.db");
    for entry in fs::read_dir(state).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{when}: {} is mode {:o}", path.display(), mode(&path));
    }
}

/// `rocsync ARGS` in the sandbox under umask 000: the modes must not depend on the umask.
fn with_umask_000(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("rocsync"))
        .arg("--config")
        .arg(sb.path("rocsync.toml"))
        .args(args)
        .current_dir(sb.dir.path())
        .env_remove("ROCSYNC_FAILPOINT");
    cmd
}

/// A running `rocsync run`, stopped with SIGTERM when dropped.
struct Daemon(Option<Child>);

impl Daemon {
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.0.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.stop();
        }
    }
}

#[test]
fn the_state_directory_and_database_are_the_owners_only_after_once_and_run() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let out = with_umask_000(&sb, &["once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_private(&sb.path("state"), "after once");

    // `rocsync run` on a fresh sandbox creates the directory itself.
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n[review]\nmode = \"auto\"");
    sb.set_answer("urls-v1.json");
    let log = sb.path("daemon.log");
    let child = with_umask_000(&sb, &["run"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("rocsync run");
    let mut daemon = Daemon(Some(child));
    let started = Instant::now();
    while !fs::read_to_string(&log).unwrap_or_default().contains("rocsync run: ready.") {
        assert!(started.elapsed() < Duration::from_secs(30), "not ready:\n{}", fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    // While it runs, SQLite's WAL and its index sit beside the database.
    assert!(sb.path("state/state.db-wal").exists() && sb.path("state/state.db-shm").exists());
    assert_private(&sb.path("state"), "while run runs");
    let status = daemon.stop();
    assert!(status.success(), "{status:?}:\n{}", fs::read_to_string(&log).unwrap_or_default());
    assert_private(&sb.path("state"), "after run");
}
