//! Shared helpers for the integration tests: a sandbox directory with its own configuration,
//! annuaire answer, outputs and state, and the `rocsync` binary run inside it.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub mod annuaire_server;
pub mod daemon;
pub mod dnsmasq;
pub mod dovecot;
pub mod lab;
pub mod smtp;

/// A TCP port on loopback free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Appends `text` to the file at `path` (a log a daemon follows), creating it.
pub fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// The body `curl` gets from `path` on the daemon's HTTP endpoint on loopback (empty when none).
pub fn http_get(port: u16, path: &str) -> String {
    let out = std::process::Command::new("curl").args(["-s", "--max-time", "2", &format!("http://127.0.0.1:{port}{path}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sum of `rocsync_blocked_requests_total` over its labels, from the endpoint's `/metrics`.
pub fn blocked_total(port: u16) -> u64 {
    http_get(port, "/metrics")
        .lines()
        .filter(|l| l.starts_with("rocsync_blocked_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The outputs and state sections every sandbox configuration ends with.
pub const OUTPUTS: &str = "[exports.squid]\npath = \"out/squid.acl\"\n\
    [exports.plain]\npath = \"out/hosts.txt\"\nwildcard_style = \"dot\"\n\
    [exports.nft_script]\npath = \"out/rocsync.nft\"\n\
    [store]\nstate_dir = \"state\"\n";

/// An annuaire answer (JSON) listing `amcs` as (AMC number, IDB host), for tests that change
/// the list step by step.
pub fn answer_json(amcs: &[(&str, &str)]) -> String {
    let organismes: Vec<String> = amcs
        .iter()
        .map(|(number, host)| {
            format!(
                r#"{{"numero_amc": "{number}", "libelle": "AMC {number}", "etat": "cercle_de_confiance",
                    "services": [{{"code": "IDB", "url": "https://{host}/idb"}}], "domaines": []}}"#
            )
        })
        .collect();
    format!(r#"{{"format": "annuaire-urls/1", "organismes": [{}]}}"#, organismes.join(","))
}

/// The shared fixtures, copied into the repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A directory holding `rocsync.toml`, the answer it reads (`annuaire.json`), its outputs under
/// `out/` and its state under `state/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// A sandbox in review `mode` reading a copy of the annuaire fixture `answer`.
    pub fn new(mode: &str, answer: &str) -> Sandbox {
        let sandbox = Sandbox { dir: tempfile::tempdir().expect("temp dir") };
        sandbox.write_config(&format!("[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"{mode}\"\n{OUTPUTS}"));
        sandbox.set_answer(answer);
        sandbox
    }

    /// A sandbox whose configuration is `text` followed by [`OUTPUTS`].
    pub fn with_config(text: &str) -> Sandbox {
        let sandbox = Sandbox { dir: tempfile::tempdir().expect("temp dir") };
        sandbox.write_config(&format!("{text}\n{OUTPUTS}"));
        sandbox
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_config(&self, text: &str) {
        fs::write(self.path("rocsync.toml"), text).expect("write config");
    }

    /// Replaces the answer the source reads with the annuaire fixture `name`.
    pub fn set_answer(&self, name: &str) {
        fs::copy(fixture(&format!("annuaire/{name}")), self.path("annuaire.json")).expect("copy answer");
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("rocsync").expect("rocsync binary");
        cmd.current_dir(self.dir.path()).arg("--config").arg(self.path("rocsync.toml")).env_remove("ROCSYNC_FAILPOINT");
        cmd
    }

    /// [`Sandbox::ok`] inside network namespace `netns`.
    pub fn ok_in(&self, netns: &Netns, args: &[&str]) -> String {
        let bin = assert_cmd::cargo::cargo_bin("rocsync");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &netns.0])
            .arg(bin)
            .arg("--config")
            .arg(self.path("rocsync.toml"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ROCSYNC_FAILPOINT")
            .output()
            .expect("run rocsync");
        assert!(out.status.success(), "rocsync {args:?} in {}: {}{}", netns.0, stdout(&out), stderr(&out));
        stdout(&out)
    }

    /// Runs rocsync with `args` and returns its output, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run rocsync")
    }

    /// Runs rocsync with `args`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "rocsync {args:?} failed: {}\n{}", stderr(&out), stdout(&out));
        stdout(&out)
    }

    /// `args` plus `--json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("rocsync {args:?}: not JSON ({e}): {text}"))
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Every output file's content, to compare before and after.
    pub fn outputs(&self) -> Vec<(String, String)> {
        ["out/squid.acl", "out/hosts.txt", "out/rocsync.nft"]
            .iter()
            .map(|f| (f.to_string(), fs::read_to_string(self.path(f)).unwrap_or_default()))
            .collect()
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a test that needs `tool` (and root, for network namespaces) can run here. In CI
/// (`CI` set) a missing tool fails the test instead: `.ci/run` installs it.
pub fn have(tool: &str, needs_root: bool) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    let root = !needs_root || is_root();
    if found && root {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must provide {tool}{}", if needs_root { " and root" } else { "" });
    eprintln!("skipped: needs {tool}{}", if needs_root { " and root" } else { "" });
    false
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A network namespace that exists for the life of the value, deleted even if the test fails.
/// Every test namespace is its own empty ruleset: tests cannot disturb each other or the host.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("rocsync-{tag}-{}", std::process::id());
        let status = std::process::Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        Netns(name)
    }

    /// `nft ARGS` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> Output {
        std::process::Command::new("ip").args(["netns", "exec", &self.0, "nft"]).args(args).output().expect("nft")
    }

    /// `nft ARGS`, which must succeed; its stdout.
    pub fn nft_ok(&self, args: &[&str]) -> String {
        let out = self.nft(args);
        assert!(out.status.success(), "nft {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Whether `done` becomes true within `timeout`, asked every 100 ms (and once more at the end).
pub fn wait_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    done()
}

/// The sandbox's Maildir (`Maildir/` with `new`, `cur`, `tmp`), made if missing.
pub fn maildir(sb: &Sandbox) -> PathBuf {
    let root = sb.path("Maildir");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    root
}

/// Delivers a message as an MTA does: written in tmp/, renamed into new/.
pub fn deliver(root: &Path, name: &str, body: impl AsRef<[u8]>) {
    let tmp = root.join("tmp").join(name);
    fs::write(&tmp, body).unwrap();
    fs::rename(&tmp, root.join("new").join(name)).unwrap();
}

