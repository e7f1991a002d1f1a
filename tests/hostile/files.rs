//! Output files under hostile conditions, by the operator's steps: links planted in the output
//! directory, an export path that cannot take a file.

use std::fs;
use std::os::unix::fs::symlink;

use crate::util::{OUTPUTS, Sandbox, stderr};

/// The names in the sandbox's `out/` that look like rocsync's temporary files.
fn leftovers(sb: &Sandbox) -> Vec<String> {
    fs::read_dir(sb.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rocsync-tmp"))
        .collect()
}

/// Regression: `ln -s ../victim out/.hosts.txt.rocsync-tmp` then `rocsync once` overwrote the
/// victim with the export and made `hosts.txt` a link to it: the temporary name was fixed and
/// opened following links.
#[test]
fn a_link_planted_at_the_old_temporary_name_overwrites_nothing() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    fs::create_dir(sb.path("out")).unwrap();
    fs::write(sb.path("victim"), "precious\n").unwrap();
    let plant = |sb: &Sandbox| {
        for name in ["squid.acl", "hosts.txt", "rocsync.nft"] {
            let link = sb.path(&format!("out/.{name}.rocsync-tmp"));
            let _ = fs::remove_file(&link);
            symlink("../victim", &link).unwrap();
        }
    };
    // The first pass creates the outputs; the second one replaces them.
    plant(&sb);
    sb.ok(&["once"]);
    sb.set_answer("urls-v2.json");
    plant(&sb);
    let out = sb.ok(&["once"]);
    assert!(out.contains("applied"), "{out}");
    assert_eq!(sb.read("victim"), "precious\n");
    for name in ["squid.acl", "hosts.txt", "rocsync.nft"] {
        let meta = fs::symlink_metadata(sb.path(&format!("out/{name}"))).unwrap();
        assert!(meta.is_file(), "out/{name} is a regular file, not a link: {:?}", meta.file_type());
    }
    assert_eq!(sb.read("out/hosts.txt").lines().count(), 14, "the export itself is written");
    assert!(sb.read("out/squid.acl").contains("from plan 2."));
    assert_eq!(leftovers(&sb), Vec::<String>::new(), "the planted links are removed");
}

/// Regression: with plan 1 applied, an export path pointed at a directory and the source
/// changed: the Squid file said "from plan 2", rocsync.nft "from plan 1", the store plan 1, and
/// temporary files stayed behind.
#[test]
fn an_export_path_that_is_a_directory_leaves_every_output_at_the_old_plan() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    assert!(before.iter().all(|(_, text)| !text.is_empty()));
    assert!(sb.read("out/squid.acl").contains("from plan 1.") && sb.read("out/rocsync.nft").contains("from plan 1."));
    let config = |plain: &str| {
        format!("[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n{}", OUTPUTS.replace("out/hosts.txt", plain))
    };
    fs::create_dir(sb.path("out/hosts-dir")).unwrap();
    sb.write_config(&config("out/hosts-dir"));
    sb.set_answer("urls-v2.json");

    let out = sb.run(&["once"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("out/hosts-dir") && err.contains("is a directory"), "the error names the path: {err}");
    assert!(err.contains("no output file was changed") && err.contains("nothing was recorded as applied"), "{err}");
    assert_eq!(sb.outputs(), before, "every output is still plan 1's");
    assert!(sb.read("out/squid.acl").contains("from plan 1.") && sb.read("out/rocsync.nft").contains("from plan 1."));
    assert_eq!(sb.json(&["status", "--json"])["in_force"]["plan"], 1, "the store still says plan 1");
    assert_eq!(leftovers(&sb), Vec::<String>::new());
    assert_eq!(fs::read_dir(sb.path("out/hosts-dir")).unwrap().count(), 0);

    // Pointed back at a file, the next pass puts the new plan in force everywhere at once.
    sb.write_config(&config("out/hosts.txt"));
    sb.ok(&["once"]);
    let plan = sb.json(&["status", "--json"])["in_force"]["plan"].as_i64().unwrap();
    assert!(plan > 1, "{plan}");
    let header = format!("from plan {plan}.");
    assert!(sb.read("out/squid.acl").contains(&header) && sb.read("out/rocsync.nft").contains(&header));
    assert_eq!(sb.read("out/hosts.txt").lines().count(), 14);
    assert_eq!(leftovers(&sb), Vec::<String>::new());
}

/// Found by the second attack: a FIFO planted at an export's path hung `once` (the lost-store
/// check and `recover` read the outputs back), and a link planted at `apply.lock` was followed
/// (the pid overwrote its target).
#[test]
fn a_fifo_at_an_export_or_a_link_at_the_lock_blocks_nothing_and_writes_nothing() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    std::fs::create_dir_all(sb.path("out")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(sb.path("out/hosts.txt")).status().unwrap().success());
    let out = sb.cmd().arg("once").timeout(std::time::Duration::from_secs(20)).output().unwrap();
    assert!(!out.status.success(), "a FIFO where an export goes is an error");
    assert!(stderr(&out).contains("out/hosts.txt"), "{}", stderr(&out));
    std::fs::remove_file(sb.path("out/hosts.txt")).unwrap();
    sb.ok(&["once"]);
    // A link at the apply lock.
    std::fs::write(sb.path("victim.txt"), "precious\n").unwrap();
    std::fs::remove_file(sb.path("state/apply.lock")).ok();
    std::os::unix::fs::symlink("../victim.txt", sb.path("state/apply.lock")).unwrap();
    let out = sb.run(&["once"]);
    assert!(!out.status.success(), "a link at the lock is refused");
    assert_eq!(std::fs::read_to_string(sb.path("victim.txt")).unwrap(), "precious\n");
}

