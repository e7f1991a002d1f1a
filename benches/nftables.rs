//! nftables through netlink against `nft -f`, on the same machine, in a network namespace of
//! its own (so it needs root; without it, it says so and stops).
//!
//!     sudo cargo bench --features netlink --bench nftables
//!     sudo ROCSYNC_BENCH_ELEMENTS=14000 cargo bench --features netlink --bench nftables
//!
//! Measures, median of 7 runs each: loading 100,000 elements into empty sets, and changing
//! 10 of them (5 out, 5 in) in sets of 100,000 — with rocsync's sink path (know the kernel by
//! its generation id, diff, commit one batch against that generation: what the daemon does when
//! nobody else changed the ruleset) and with the commit alone, against `nft -f` of the
//! equivalent script; and the read-back that a change by someone else (or the safety net, every
//! `READ_BACK_EVERY` looks) costs instead.
//! Peak memory is the process's (VmHWM) after the netlink runs, before any `nft` runs.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use rocsync::clock::now_millis;
use rocsync::sinks::netlink;
use rocsync::sinks::nft_script::NftNames;
use rocsync::sinks::nftables::{Element, Elements, Layout, Steps, reconcile};

/// Set size; `ROCSYNC_BENCH_ELEMENTS` overrides it (at most 131,000).
fn size() -> u32 {
    std::env::var("ROCSYNC_BENCH_ELEMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000).min(131_000)
}
const RUNS: usize = 7;

fn element(i: u32) -> Element {
    // 198.18.0.0/15 holds 131,072 addresses.
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Element { addr: IpAddr::V4(Ipv4Addr::from(base + i)), port: 443 }
}

fn elements(range: impl Iterator<Item = u32>) -> Elements {
    range.map(|i| (element(i), None)).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn nft(args: &[&str]) {
    let out = Command::new("nft").args(args).output().expect("nft");
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn nft_file(text: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("rocsync-bench-{}.nft", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let start = Instant::now();
    nft(&["-f", path.to_str().unwrap()]);
    let took = start.elapsed();
    let _ = std::fs::remove_file(path);
    took
}

fn script(elements: &Elements) -> String {
    let list: Vec<String> = elements.keys().map(|e| e.to_string()).collect();
    format!(
        "table inet rocsync {{\n set rocsync_v4 {{ type ipv4_addr . inet_service; flags timeout; elements = {{ {} }} }}\n \
         set rocsync_v6 {{ type ipv6_addr . inet_service; flags timeout; }}\n}}\n",
        list.join(", ")
    )
}

fn delete_table() {
    let _ = Command::new("nft").args(["delete", "table", "inet", "rocsync"]).output();
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0)))
        .unwrap_or(0)
}

fn main() {
    // SAFETY: unshare on this single-threaded process before any socket is opened.
    if unsafe { libc::geteuid() } != 0 || unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        println!("nftables bench: needs root (CAP_NET_ADMIN) to make a network namespace; skipped");
        return;
    }
    let n = size();
    let layout = Layout { names: NftNames::default(), managed: None };
    let full = elements(0..n);
    let changed = elements(5..n + 5);
    // The sink's whole pass, as `NftablesSink::reconcile_now` makes it.
    let sink_pass = |want: &Elements| {
        let start = Instant::now();
        let steps = netlink::with_kernel(&layout, false, |kernel| reconcile(kernel, &layout, want)).unwrap();
        netlink::commit_known(&layout, &steps, now_millis()).unwrap();
        start.elapsed()
    };
    let steps_to = |want: &Elements| -> Steps { netlink::with_kernel(&layout, false, |kernel| reconcile(kernel, &layout, want)).unwrap() };

    // Full load from empty.
    let mut load = Vec::new();
    for _ in 0..RUNS {
        delete_table();
        load.push(sink_pass(&full));
    }
    // 10-element change on 100,000: the sink's whole pass, then the commit alone.
    let mut change_pass = Vec::new();
    let mut change_commit = Vec::new();
    let readbacks_before = netlink::readbacks();
    for _ in 0..RUNS {
        delete_table();
        // The table deleted by `nft`: the generation moved, this pass reads back and loads.
        sink_pass(&full);
        change_pass.push(sink_pass(&changed));
        let steps = steps_to(&full);
        assert_eq!(steps.add.len() + steps.delete.len(), 10);
        let start = Instant::now();
        netlink::commit_known(&layout, &steps, now_millis()).unwrap();
        change_commit.push(start.elapsed());
    }
    // One read-back per run (after `nft delete table`), none for the changes themselves.
    let change_readbacks = netlink::readbacks() - readbacks_before;
    let mut read = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let kernel = netlink::snapshot(&layout).unwrap();
        read.push(start.elapsed());
        assert_eq!(kernel.v4.map(|s| s.elements.len()), Some(n as usize));
    }
    let peak = peak_kib();

    // The same with nft -f.
    let full_script = script(&full);
    let mut nft_load = Vec::new();
    for _ in 0..RUNS {
        delete_table();
        nft_load.push(nft_file(&full_script));
    }
    let mut change_script = String::new();
    for i in 0..5 {
        change_script.push_str(&format!("delete element inet rocsync rocsync_v4 {{ {} }}\n", element(i)));
        change_script.push_str(&format!("add element inet rocsync rocsync_v4 {{ {} }}\n", element(n + i)));
    }
    let mut undo_script = String::new();
    for i in 0..5 {
        undo_script.push_str(&format!("delete element inet rocsync rocsync_v4 {{ {} }}\n", element(n + i)));
        undo_script.push_str(&format!("add element inet rocsync rocsync_v4 {{ {} }}\n", element(i)));
    }
    let mut nft_change = Vec::new();
    for _ in 0..RUNS {
        nft_change.push(nft_file(&change_script));
        nft_file(&undo_script);
    }
    delete_table();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (load, nft_load) = (median(load), median(nft_load));
    let (change_pass, change_commit, nft_change, read) = (median(change_pass), median(change_commit), median(nft_change), median(read));
    println!("nftables, {n} elements, median of {RUNS} (ms):");
    println!("  load from empty      netlink {:>8.1}   nft -f {:>8.1}   ratio {:.2}", ms(load), ms(nft_load), ms(load) / ms(nft_load));
    println!(
        "  10-element change    netlink {:>8.2} (commit {:.2}, read of the kernel {:.1})   nft -f {:>8.1}   ratio {:.2} ({:.2} commit only)",
        ms(change_pass),
        ms(change_commit),
        ms(read),
        ms(nft_change),
        ms(change_pass) / ms(nft_change),
        ms(change_commit) / ms(nft_change)
    );
    // The safety net reads back once every READ_BACK_EVERY looks: spread over them.
    let every = f64::from(netlink::READ_BACK_EVERY);
    println!(
        "  with the periodic read-back spread over {} passes: {:.1} ms a pass; read-backs during the change runs: {change_readbacks} for {RUNS} runs (after each `nft delete table`)",
        netlink::READ_BACK_EVERY,
        (ms(read) + (every - 1.0) * ms(change_pass)) / every
    );
    println!("  peak memory of the netlink runs: {} MiB", peak / 1024);
}
