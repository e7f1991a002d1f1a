//! `rocsync inspect log` on logs as they are found on disk: very long lines, bytes that are not
//! UTF-8, NUL bytes, a last line cut short, and a file larger than the memory it may use. The
//! streamed reading must report what a reading of the whole text reports, name the lines it
//! could not read, and keep its memory flat.

#[path = "util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::io::Write;

use rocsync::catalogue::{Catalogue, State};
use rocsync::sources::annuaire;
use rocsync::watch::{Correlator, nftlog, squid};
use serde_json::{Value, json};
use util::{Sandbox, fixture};

fn catalogue(name: &str) -> Catalogue {
    Catalogue::from_answer(&annuaire::parse(&std::fs::read(fixture(&format!("annuaire/{name}"))).unwrap(), None).unwrap())
}

/// Regression: `inspect log` read the whole file into memory, aborted on nothing but read
/// lossily what was not UTF-8, and would have buffered a line of any length. Now a line over
/// 64 KiB and a line that is not UTF-8 are rejected by number, and every other line is read as
/// a reading of the whole text reads it (NUL bytes and a last line without its newline too).
#[test]
fn inspect_log_rejects_a_1_mib_line_and_invalid_utf8_by_number_and_reads_the_rest_as_before() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    let fixture_text = std::fs::read_to_string(fixture("logs/squid-access.log")).unwrap();
    let denial = "1763630110.000      0 198.18.1.20 TCP_DENIED/403 3921 CONNECT idb.nouvelle-mutuelle-sud.test:443 - HIER_NONE/- text/html";
    let mut log: Vec<u8> = Vec::new();
    log.extend(fixture_text.as_bytes()); // lines 1-8
    // Line 9: a denial to an AMC host with a 1 MiB URL.
    log.extend(format!("1763630111.000 0 198.18.1.20 TCP_DENIED/403 10 GET http://idb.nouvelle-mutuelle-sud.test/{} - HIER_NONE/- -\n", "a".repeat(1024 * 1024)).as_bytes());
    // Line 10: a denial with bytes that are not UTF-8 in its URL.
    log.extend(b"1763630112.000 0 198.18.1.20 TCP_DENIED/403 10 GET http://idb.nouvelle-mutuelle-sud.test/\xff\xfe - HIER_NONE/- -\n");
    // Lines 11 and 12: NUL bytes, in a denial to another host and alone.
    log.extend(b"1763630113.000 0 198.18.1.20 TCP_DENIED/403 10 CONNECT www.example-news.test:443\0 - HIER_NONE/- -\n\0\0\0\n");
    // Line 13, cut short: a denial to an AMC host, without its newline.
    log.extend(denial.as_bytes());
    std::fs::write(sb.path("access.log"), &log).unwrap();

    let v2 = fixture("annuaire/urls-v2.json");
    let doc = sb.json(&["inspect", "log", sb.path("access.log").to_str().unwrap(), "--kind", "squid", "--annuaire", v2.to_str().unwrap(), "--json"]);
    assert_eq!(doc["rejected_lines"], 2, "{doc}");
    assert_eq!(doc["rejected"], json!([{"line": 9, "reason": "too_long"}, {"line": 10, "reason": "not_utf8"}]));

    // The whole text without the two rejected lines, read at once as `inspect log` used to.
    let readable = format!("{fixture_text}1763630113.000 0 198.18.1.20 TCP_DENIED/403 10 CONNECT www.example-news.test:443\0 - HIER_NONE/- -\n\0\0\0\n{denial}");
    let (cat, in_force) = (catalogue("urls-v2.json"), State::default());
    let whole = Correlator::new(&cat, &in_force, BTreeMap::new()).read(&readable, squid::parse_line);
    assert_eq!(whole.events.len(), 5, "the fixture's four and the cut last line");
    assert_eq!(doc["events"], serde_json::to_value(&whole.events).unwrap());
    assert_eq!((doc["other_denied"].as_u64(), doc["skipped_lines"].as_u64()), (Some(whole.other_denied as u64), Some(whole.skipped_lines as u64)));
    assert_eq!(whole.skipped_lines, 2, "the fixture's garbage line and the NUL line");

    // The text output names the rejected lines too.
    let text = sb.ok(&["inspect", "log", sb.path("access.log").to_str().unwrap(), "--kind", "squid", "--annuaire", v2.to_str().unwrap()]);
    assert!(text.contains("2 line(s) rejected, not read:") && text.contains("9 (longer than 65536 bytes), 10 (not UTF-8)"), "{text}");
    assert!(text.contains("5 blocked AMC request(s), 2 other denied, 2 line(s) skipped."), "{text}");
}

#[test]
fn inspect_log_of_an_nft_log_rejects_invalid_lines_by_number_and_reads_the_rest_as_before() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    let fixture_text = std::fs::read_to_string(fixture("logs/nft-drop.log")).unwrap(); // lines 1-4
    let mut log = fixture_text.as_bytes().to_vec();
    log.extend(b"Nov 20 10:15:05 fw1 kernel: rocsync-drop: IN= OUT=eth1 SRC=198.18.1.20 DST=198.18.3.42 \xc3\x28 DPT=443\n"); // 5
    log.extend(format!("Nov 20 10:15:06 fw1 kernel: rocsync-drop: {} SRC=198.18.1.20 DST=198.18.3.43 DPT=443\n", "X".repeat(70_000)).as_bytes()); // 6
    log.extend(b"Nov 20 10:15:07 fw1 kernel: rocsync-drop: IN=\0 OUT=eth1 SRC=198.18.1.20 DST=198.18.3.44 DPT=443"); // 7, cut short
    std::fs::write(sb.path("drop.log"), &log).unwrap();
    let v2 = fixture("annuaire/urls-v2.json");
    let doc = sb.json(&["inspect", "log", sb.path("drop.log").to_str().unwrap(), "--kind", "nft", "--annuaire", v2.to_str().unwrap(), "--json"]);
    assert_eq!(doc["rejected"], json!([{"line": 5, "reason": "not_utf8"}, {"line": 6, "reason": "too_long"}]), "{doc}");
    let readable = format!("{fixture_text}Nov 20 10:15:07 fw1 kernel: rocsync-drop: IN=\0 OUT=eth1 SRC=198.18.1.20 DST=198.18.3.44 DPT=443");
    let (cat, in_force) = (catalogue("urls-v2.json"), State::default());
    let whole = Correlator::new(&cat, &in_force, BTreeMap::new()).read(&readable, |l| nftlog::parse_line(l, "rocsync-drop: "));
    assert_eq!(whole.events.len(), 4, "three drops to 443 of the fixture and the cut last line");
    assert_eq!(doc["events"], serde_json::to_value(&whole.events).unwrap());
    assert_eq!(doc["skipped_lines"], Value::from(whole.skipped_lines));
}

/// Regression: `inspect log` held the whole file (139 MiB peak for a 1,000,000-line log). On a
/// 200,000-line log of about 100 MiB its peak resident memory, measured by the kernel when it
/// exits (`wait4`'s `ru_maxrss`), stays under 64 MiB: it could not if it held the file.
#[test]
fn inspect_log_no_longer_holds_the_whole_file_in_memory() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    let path = sb.path("big-access.log");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let padding = "p".repeat(400);
    for i in 0..200_000u32 {
        if i % 1000 == 0 {
            writeln!(out, "{}.000 0 198.18.1.20 TCP_DENIED/403 3921 CONNECT idb.nouvelle-mutuelle-sud.test:443 - HIER_NONE/- text/html", 1_763_630_000 + i).unwrap();
        } else {
            writeln!(out, "{}.000 88 198.18.1.20 TCP_MISS/200 1022 GET http://crl.igc-sante.test/{padding}/{i}.crl - HIER_DIRECT/198.18.2.30 -", 1_763_630_000 + i).unwrap();
        }
    }
    drop(out.into_inner().unwrap());
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 90 * 1024 * 1024, "the log ({size} bytes) is larger than the bound");

    let report = sb.path("report.json");
    // No configuration: no store to open, only the log and the answer given.
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rocsync"))
        .arg("--config")
        .arg(sb.path("absent.toml"))
        .args(["inspect", "log", path.to_str().unwrap(), "--kind", "squid", "--json", "--annuaire"])
        .arg(fixture("annuaire/urls-v2.json"))
        .stdout(std::fs::File::create(&report).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run rocsync");
    let (status, max_rss_kib) = wait_with_max_rss(child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "rocsync inspect log failed: status {status:#x}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(doc["events"].as_array().map(Vec::len), Some(200), "every denial found");
    assert_eq!(doc["skipped_lines"], 0);
    assert!(max_rss_kib < 64 * 1024, "inspect log peaked at {max_rss_kib} KiB of resident memory for a {size}-byte log");
}

/// Waits for `child` with `wait4`, which gives its peak resident memory (KiB) with its status.
fn wait_with_max_rss(child: std::process::Child) -> (i32, i64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which std has not waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, usage.ru_maxrss as i64)
}
