//! The Debian package, for real: built with cargo-deb (packaging/build.sh), checked by lintian,
//! installed into a fresh Debian 12 root made by debootstrap (a chroot, no container), where
//! rocsync runs as its user; removed (state kept), then purged (state gone). Needs root, the
//! network to Debian's mirror, and about two minutes.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}:\n{}{}", util::stdout(&out), util::stderr(&out));
    out
}

fn chroot(root: &Path, args: &[&str]) -> Output {
    Command::new("chroot").arg(root).args(args).env("LC_ALL", "C").output().unwrap()
}

fn chroot_ok(root: &Path, args: &[&str]) -> String {
    let out = chroot(root, args);
    assert!(out.status.success(), "chroot {args:?}:\n{}{}", util::stdout(&out), util::stderr(&out));
    util::stdout(&out)
}

#[test]
fn the_deb_passes_lintian_installs_runs_and_purges() {
    if !util::have("debootstrap", true) || !util::have("cargo-deb", false) || !util::have("lintian", false) {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the one `cargo test` uses is locked while tests run.
    let target = repo.join("target/package-test");
    run(Command::new(repo.join("packaging/build.sh")).current_dir(repo).env("CARGO_TARGET_DIR", &target));
    let deb: PathBuf = std::fs::read_dir(target.join("debian"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let lint = Command::new("lintian").args(["--fail-on", "error", "--allow-root"]).arg(&deb).output().unwrap();
    let report = util::stdout(&lint);
    assert!(lint.status.success() && !report.lines().any(|l| l.starts_with("E:")), "lintian:\n{report}{}", util::stderr(&lint));

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mirror = std::env::var("ROCSYNC_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    run(Command::new("debootstrap")
        .args(["--variant=minbase", "--include=nftables,systemd", "bookworm"])
        .arg(&root)
        .arg(&mirror));
    std::fs::copy(&deb, root.join("tmp/rocsync.deb")).unwrap();
    chroot_ok(&root, &["dpkg", "-i", "/tmp/rocsync.deb"]);

    assert!(chroot_ok(&root, &["rocsync", "--version"]).starts_with("rocsync 0.1.0"));
    let check = chroot_ok(&root, &["rocsync", "check-config", "--config", "/etc/rocsync/config.toml"]);
    assert!(check.contains("OK") && check.contains("/var/lib/rocsync/state"), "{check}");
    assert!(chroot_ok(&root, &["getent", "passwd", "rocsync"]).contains("/usr/sbin/nologin"));
    assert!(chroot_ok(&root, &["dpkg-query", "--showformat=${Conffiles}", "--show", "rocsync"]).contains("/etc/rocsync/config.toml"));
    assert_eq!(chroot_ok(&root, &["stat", "-c", "%a %G", "/etc/rocsync/config.toml"]).trim(), "640 rocsync");
    // The link points into the chroot: look at the link, not through it.
    assert!(root.join("etc/systemd/system/multi-user.target.wants/rocsync.service").symlink_metadata().is_ok(), "enabled, not started");
    for file in ["usr/share/man/man1/rocsync.1.gz", "usr/share/bash-completion/completions/rocsync", "usr/lib/systemd/system/rocsync.service"] {
        assert!(root.join(file).exists(), "{file}");
    }
    // Every unit in one directory (they were split between /lib and /usr/lib).
    let files = chroot_ok(&root, &["dpkg", "-L", "rocsync"]);
    assert!(!files.lines().any(|f| f.starts_with("/lib/")), "{files}");
    for unit in ["rocsync-once.service", "rocsync-once.timer", "rocsync-mail.path", "rocsync-squid-reload.path", "rocsync-squid-reload.service", "rocsync-haproxy-reload.path", "rocsync-haproxy-reload.service"] {
        assert!(files.contains(&format!("/usr/lib/systemd/system/{unit}\n")), "{unit}: {files}");
    }
    // The man page is one page with the operator's sections; the configuration speaks of the
    // installed paths.
    let page = chroot_ok(&root, &["zcat", "/usr/share/man/man1/rocsync.1.gz"]);
    assert!(!page.contains("(1)") && page.contains(".SH FILES") && page.contains(".SH SIGNALS"), "{page}");
    let installed = std::fs::read_to_string(root.join("etc/rocsync/config.toml")).unwrap();
    assert!(!installed.contains("rocsync-out") && !installed.contains("rocsync-state"), "{installed}");
    // The state is its owner's only; the notifications' Maildir is made, the user's.
    assert_eq!(chroot_ok(&root, &["stat", "-c", "%a %U", "/var/lib/rocsync/state"]).trim(), "700 rocsync");
    assert_eq!(chroot_ok(&root, &["stat", "-c", "%a %U", "/var/lib/rocsync/Maildir/new"]).trim(), "700 rocsync");
    // It runs as its user, with the configuration as installed: check-config checks its rights.
    let as_rocsync = ["setpriv", "--reuid=rocsync", "--regid=rocsync", "--init-groups", "rocsync"];
    let check = chroot_ok(&root, &[&as_rocsync[..], &["check-config", "--config", "/etc/rocsync/config.toml"][..]].concat());
    assert!(check.contains("OK") && !check.contains("checked as root"), "{check}");
    chroot_ok(&root, &[&as_rocsync[..], &["once", "--config", "/etc/rocsync/config.toml"][..]].concat());
    let hosts = std::fs::read_to_string(root.join("var/lib/rocsync/exports/roc-hosts.txt")).unwrap();
    assert_eq!(hosts.lines().count(), 12, "{hosts}");
    assert_eq!(chroot_ok(&root, &["stat", "-c", "%a", "/var/lib/rocsync/exports/roc-hosts.txt"]).trim(), "644", "what Squid and the firewalls read");

    chroot_ok(&root, &["dpkg", "-r", "rocsync"]);
    assert!(root.join("var/lib/rocsync/state/state.db").exists(), "removal keeps the state");
    assert!(root.join("etc/rocsync/config.toml").exists(), "and the conffile");
    chroot_ok(&root, &["dpkg", "--purge", "rocsync"]);
    assert!(!root.join("var/lib/rocsync").exists(), "purge removes the state");
    assert!(!root.join("etc/rocsync/config.toml").exists());
}
