//! `rocsync run` as a process for the tests: started on a sandbox's configuration, its log in
//! `daemon.log`, stopped with SIGTERM when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Sandbox;

/// A running `rocsync run`, stopped (SIGTERM) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(sb: &Sandbox) -> Daemon {
        Daemon::launch(sb, Command::new(assert_cmd::cargo::cargo_bin("rocsync")))
    }

    /// With extra environment variables (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, as systemd sets them).
    pub fn start_with_env(sb: &Sandbox, env: &[(&str, &str)]) -> Daemon {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("rocsync"));
        c.envs(env.iter().copied());
        Daemon::launch(sb, c)
    }

    /// Inside network namespace `netns`, when given.
    pub fn start_in(sb: &Sandbox, netns: Option<&str>) -> Daemon {
        match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(assert_cmd::cargo::cargo_bin("rocsync"));
                Daemon::launch(sb, c)
            }
            None => Daemon::start(sb),
        }
    }

    /// With at most `nofile` file descriptors (the shell's `ulimit` before it becomes rocsync).
    pub fn start_with_nofile(sb: &Sandbox, nofile: u32) -> Daemon {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\"")).arg(assert_cmd::cargo::cargo_bin("rocsync"));
        Daemon::launch(sb, c)
    }

    fn launch(sb: &Sandbox, mut cmd: Command) -> Daemon {
        let log = sb.path("daemon.log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = cmd
            .arg("--config")
            .arg(sb.path("rocsync.toml"))
            .arg("run")
            .current_dir(sb.dir.path())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .env_remove("ROCSYNC_FAILPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("rocsync run");
        let d = Daemon { child: Some(child), log };
        d.wait_log("rocsync run: ready.", Duration::from_secs(20));
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` (counting from the start of the file).
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no `{text}` in the daemon's log after {timeout:?}:\n{}", self.log());
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.child.take().unwrap().wait().unwrap()
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}
