//! Log reading at scale, next to what a user would run instead, in the same run on the same
//! files: `inspect log`'s reading of a 1,000,000-line Squid access log against 1,000 AMCs
//! (2,000 hosts and their wildcards) beside `grep -c TCP_DENIED` on that file, and of a
//! 1,000,000-line nftables drop log with a 10,000-address map.
//!
//! rocsync's figure is the library's reading (`Correlator::read_from` with the prefilter of
//! `inspect log`, events counted instead of printed; the catalogue is built before the clock
//! starts): the bench cannot name the `rocsync` binary. Peak memory: each reading runs again in
//! a child process (this bench binary, told so by `ROCSYNC_BENCH_LOG`), which builds the same
//! catalogue and map, reads, and prints its `VmHWM` from /proc/self/status.
//!
//! Run with `cargo bench --bench logs`. The files go to a temporary directory, removed after.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rocsync::catalogue::{Catalogue, State};
use rocsync::host::Host;
use rocsync::sources::annuaire;
use rocsync::watch::read::{LogParser, Scope};
use rocsync::watch::{Correlator, Report, nftlog, squid};

const LINES: usize = 1_000_000;
const AMCS: usize = 1_000;
const ADDRESSES: u32 = 10_000;
const PREFIX: &str = "rocsync-drop: ";
/// Each timing is the best of so many runs, for rocsync and grep alike.
const RUNS: usize = 3;

/// 1,000 AMCs, each with two hosts (IDB and CLC) and a wildcard domain.
fn catalogue() -> Catalogue {
    let orgs: Vec<String> = (0..AMCS)
        .map(|a| {
            format!(
                r#"{{"numero_amc": "{:09}", "libelle": "MUTUELLE {a}", "etat": "cercle_de_confiance",
                    "services": [{{"code": "IDB", "url": "https://idb.amc{a}.test/ws/idb"}}, {{"code": "CLC", "url": "https://clc.amc{a}.test/ws/clc"}}],
                    "domaines": ["*.api.amc{a}.test"]}}"#,
                100_000_000 + a
            )
        })
        .collect();
    let json = format!(r#"{{"format": "annuaire-urls/1", "serie": 1, "organismes": [{}]}}"#, orgs.join(","));
    Catalogue::from_answer(&annuaire::parse(json.as_bytes(), None).expect("the generated answer"))
}

/// 10,000 addresses, each mapped to an AMC host (as the resolver's book would).
fn address_map() -> BTreeMap<IpAddr, Vec<Host>> {
    (0..ADDRESSES)
        .map(|n| {
            let host = Host::parse(&format!("{}.amc{}.test", if n % 2 == 0 { "idb" } else { "clc" }, n as usize % AMCS)).unwrap();
            (address(n), vec![host])
        })
        .collect()
}

/// The `n`th address under 198.18.0.0/15 (198.18.0.0 onwards).
fn address(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n))
}

/// A proxy's day: mostly tunnels and fetches that went through, some denials to AMC hosts
/// (named, or under a wildcard), more denials to other sites, a few errors.
fn write_squid_log(path: &Path) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    for i in 0..LINES {
        let amc = (i * 7919) % AMCS;
        let time = format!("{}.{:03}", 1_763_630_100 + i / 100, i % 1000);
        let client = format!("198.18.{}.{}", 1 + i % 4, 10 + i % 200);
        let line = match i % 100 {
            0..=69 => format!("{time}    120 {client} TCP_TUNNEL/200 5120 CONNECT idb.amc{amc}.test:443 - HIER_DIRECT/198.18.2.11 -"),
            70..=84 => format!("{time}     88 {client} TCP_MISS/200 1022 GET http://crl.igc-sante.test/ACI-EL-ORG-{i}.crl - HIER_DIRECT/198.18.2.30 application/pkix-crl"),
            85..=87 => format!("{time}      0 {client} TCP_DENIED/403 3921 CONNECT idb.amc{amc}.test:443 - HIER_NONE/- text/html"),
            88..=89 => format!("{time}      0 {client} TCP_DENIED/403 3921 CONNECT x{i}.api.amc{amc}.test:443 - HIER_NONE/- text/html"),
            90..=97 => format!("{time}      0 {client} TCP_DENIED/403 3921 CONNECT www.news{i}.example.test:443 - HIER_NONE/- text/html"),
            98 => format!("{time}      0 {client} NONE_NONE/400 3921 GET error:invalid-request - HIER_NONE/- text/html"),
            _ => format!("{time}      1 {client} TCP_DENIED/403 3921 GET http://clc.amc{amc}.test/ws/clc - HIER_NONE/- text/html"),
        };
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

/// A firewall's drop log: rocsync's prefix for nine lines in ten, to mapped addresses and to
/// others, on 443 and elsewhere.
fn write_nft_log(path: &Path) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    for i in 0..LINES {
        let prefix = if i % 10 == 9 { "other-prefix: " } else { PREFIX };
        // Half of the destinations are in the map, half beyond it.
        let dst = address((i as u32 * 7) % (2 * ADDRESSES));
        let dpt = if i % 5 == 0 { 8443 } else { 443 };
        writeln!(
            out,
            "Nov 20 10:{:02}:{:02} fw1 kernel: {prefix}IN= OUT=eth1 SRC=198.18.1.{} DST={dst} LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID={} DF PROTO=TCP SPT={} DPT={dpt} WINDOW=64240 RES=0x00 SYN URGP=0",
            (i / 60) % 60,
            i % 60,
            20 + i % 100,
            i % 65536,
            32768 + i % 28000,
        )
        .unwrap();
    }
    out.flush().unwrap();
}

/// One reading as `inspect log` does it; the events counted.
fn inspect(correlator: &Correlator, path: &Path, parser: &LogParser) -> (Report, usize) {
    let mut events = 0;
    let report = correlator
        .read_from(File::open(path).unwrap(), parser, |_| {
            events += 1;
            Ok(())
        })
        .unwrap();
    (report, events)
}

/// The best of [`RUNS`] timings of `f`, in seconds, and what its last run gave.
fn best<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

fn vm_hwm() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().to_owned()).unwrap_or_else(|| "?".into())
}

/// The child: one reading of `file`, then its peak resident memory on stdout.
fn child(kind: &str, file: &Path) {
    let catalogue = catalogue();
    let in_force = State::default();
    let (addresses, parser) = match kind {
        "squid" => (BTreeMap::new(), LogParser::squid(Scope::Denials)),
        _ => (address_map(), LogParser::nft(PREFIX, Scope::Denials)),
    };
    let correlator = Correlator::new(&catalogue, &in_force, addresses);
    let (_, events) = inspect(&correlator, file, &parser);
    println!("{} {events}", vm_hwm());
}

/// The child's peak memory when it reads `file`.
fn peak_memory(kind: &str, file: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("ROCSYNC_BENCH_LOG", kind)
        .env("ROCSYNC_BENCH_FILE", file)
        .output()
        .expect("run the bench again as a child");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split(" kB").next().map(|kb| format!("{kb} kB")).unwrap_or_default()
}

fn main() {
    if let (Ok(kind), Some(file)) = (std::env::var("ROCSYNC_BENCH_LOG"), std::env::var_os("ROCSYNC_BENCH_FILE")) {
        return child(&kind, &PathBuf::from(file));
    }
    let dir = tempfile::tempdir().unwrap();
    let (squid_log, nft_log) = (dir.path().join("access.log"), dir.path().join("drop.log"));
    write_squid_log(&squid_log);
    write_nft_log(&nft_log);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() / (1024 * 1024)).unwrap_or(0);
    eprintln!("generated: {} ({} MiB), {} ({} MiB)", squid_log.display(), size(&squid_log), nft_log.display(), size(&nft_log));

    let catalogue = catalogue();
    let in_force = State::default();
    eprintln!("catalogue: {} AMCs, {} hosts and wildcards", catalogue.amcs.len(), catalogue.hosts.len());

    // Squid: rocsync, then grep -c, on the same file, in this run.
    let correlator = Correlator::new(&catalogue, &in_force, BTreeMap::new());
    let parser = LogParser::squid(Scope::Denials);
    let (rocsync_s, (report, events)) = best(|| inspect(&correlator, &squid_log, &parser));
    eprintln!(
        "squid: {events} AMC events, {} other denied, {} skipped, {} rejected",
        report.other_denied, report.skipped_lines, report.rejected_lines
    );
    let (whole_s, whole) = best(|| correlator.read(&std::fs::read_to_string(&squid_log).unwrap(), squid::parse_line));
    assert_eq!(whole.events.len(), events, "the streamed reading finds what the whole-file reading finds");
    let grep = best(|| Command::new("grep").args(["-c", "TCP_DENIED"]).arg(&squid_log).output());
    let memory = peak_memory("squid", &squid_log);
    match grep {
        (grep_s, Ok(out)) if out.status.success() => {
            eprintln!("grep -c TCP_DENIED: {}", String::from_utf8_lossy(&out.stdout).trim());
            println!(
                "squid log 1,000,000 lines: rocsync {rocsync_s:.3} s, grep -c {grep_s:.3} s, ratio {:.1} (peak memory {memory}; whole-file reading as before: {whole_s:.3} s)",
                rocsync_s / grep_s
            );
        }
        (_, result) => {
            eprintln!("grep -c skipped: cannot run grep ({result:?})");
            println!("squid log 1,000,000 lines: rocsync {rocsync_s:.3} s, grep -c skipped (peak memory {memory}; whole-file reading as before: {whole_s:.3} s)");
        }
    }

    // nftables: the drop log with its address map.
    let correlator = Correlator::new(&catalogue, &in_force, address_map());
    let parser = LogParser::nft(PREFIX, Scope::Denials);
    let (rocsync_s, (report, events)) = best(|| inspect(&correlator, &nft_log, &parser));
    eprintln!("nft: {events} events, {} other denied, {} skipped, {} rejected", report.other_denied, report.skipped_lines, report.rejected_lines);
    let (whole_s, whole) = best(|| correlator.read(&std::fs::read_to_string(&nft_log).unwrap(), |l| nftlog::parse_line(l, PREFIX)));
    assert_eq!(whole.events.len(), events, "the streamed reading finds what the whole-file reading finds");
    let memory = peak_memory("nft", &nft_log);
    println!("nft drop log 1,000,000 lines: rocsync {rocsync_s:.3} s (peak memory {memory}; whole-file reading as before: {whole_s:.3} s)");
}
