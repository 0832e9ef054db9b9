//! End-to-end under attack: 4-node devnets (real processes on loopback) flooded with 10 000
//! signed bogus commits, reveals and votes from 1 000 throwaway keys by `doin flood`, against
//! the same devnet without the flood. Honest certificates still land, claim-to-certificate
//! time stays within 20 % (plus one 100 ms tick of the event loop), memory stays bounded and
//! the flooding peer is graylisted.

mod common;

use std::{
    process::{Command, Stdio},
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{doin, serial, spawn_lines};

fn base_port(offset: u16) -> u16 {
    30_000 + (std::process::id() % 500) as u16 * 60 + offset
}

fn http_get(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1.trim()).ok()
}

/// The JSON line the flooder printed last (it has exited or been killed).
fn report_of(flooder: std::process::Child) -> serde_json::Value {
    let out = flooder.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let report = text.lines().rev().find(|l| l.starts_with('{')).and_then(|l| serde_json::from_str(l).ok());
    report.unwrap_or_else(|| panic!("the flooder printed no report: {text}"))
}

/// Runs a 20 s quadratic devnet, optionally flooded from its first second (the built-in
/// domains converge within 2 – 3 s, and a flood that starts later meets an idle chain: the
/// claims measured must be the ones made under it); returns its
/// summary and the most graylisted peers node 0 reported during the run.
fn run(port: u16, flood: bool) -> (serde_json::Value, u64, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = sync_channel(4096);
    let p = port.to_string();
    let mut devnet = spawn_lines(
        doin().args([
            "devnet",
            "--nodes",
            "4",
            "--domain",
            "quadratic",
            "--target",
            "0.5",
            "--duration",
            "20",
            "--base-port",
            &p,
            "--dir",
            dir.path().to_str().unwrap(),
        ]),
        0,
        &tx,
        false,
    );
    let started = Instant::now();
    let mut flooder = None;
    let mut flood_report = None;
    let mut graylisted = 0;
    let mut summary = None;
    while started.elapsed() < Duration::from_secs(60) {
        if flood && flooder.is_none() && started.elapsed() > Duration::from_secs(1) {
            // The attacker's process shares this 2-core machine with the four nodes: below
            // their own priority its CPU (signing, encrypting 10 000 messages) does not stand
            // in for what the flood costs the nodes, which is what is measured; above their
            // optimizer threads (niceness 10) it floods at its full rate however busy they are.
            flooder = Some(
                Command::new("nice")
                    .args(["-n", "5", env!("CARGO_BIN_EXE_doin")])
                    .args(["flood", "--peer", &format!("127.0.0.1:{}", port + 1), "--messages", "10000"])
                    .args(["--keys", "1000", "--rate", "1000", "--timeout-s", "15"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            );
        }
        if let Some(child) = flooder.as_mut()
            && flood_report.is_none()
            && child.try_wait().unwrap().is_some()
        {
            flood_report = Some(report_of(flooder.take().unwrap()));
        }
        if let Some(status) = http_get(port, "/status") {
            graylisted = graylisted.max(status["security"]["graylisted_peers"].as_u64().unwrap_or(0));
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok((_, line, _)) if line.starts_with('{') => {
                summary = serde_json::from_str(&line).ok();
                break;
            }
            _ => {}
        }
    }
    let _ = devnet.0.wait();
    // A flooder slowed by a busy machine may finish after the devnet: its report is read all
    // the same, within its own timeout.
    if let Some(mut child) = flooder.take() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        flood_report = Some(report_of(child));
    }
    (summary.expect("the devnet printed no summary"), graylisted, flood_report)
}

#[test]
fn a_gossip_flood_from_throwaway_keys_is_graylisted_and_honest_certificates_still_land() {
    let _serial = serial();
    // One run's median claim-to-certificate time depends on where its claims fall in the seal
    // leaders' slots: calm runs alone measured 47 – 129 ms on this machine. Two calm and two
    // flooded runs, interleaved, are compared by their mean medians.
    let mut calm = Vec::new();
    let mut flooded = Vec::new();
    for (i, flood) in [false, true, false, true].into_iter().enumerate() {
        let (s, graylisted, report) = run(base_port(i as u16 * 10), flood);
        eprintln!("{}: {s}\nflooder: {report:?}", if flood { "with the flood" } else { "without the flood" });
        check_run(&s);
        if flood {
            let report = report.expect("the flooder ran");
            assert!(report["published"].as_u64().unwrap() >= 1000, "{report}");
            // Node 0 (the one flooded) refused the bogus messages with a penalty, and graylisted
            // the flooding peer.
            let rejected: Vec<u64> =
                s["gossip_rejected"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert!(rejected[0] >= 3, "node 0 rejected the flood: {rejected:?}");
            assert!(graylisted >= 1, "node 0 graylisted the flooding peer");
            flooded.push(s);
        } else {
            calm.push(s);
        }
    }
    let mean_latency = |runs: &[serde_json::Value]| {
        runs.iter().map(|s| s["claim_to_certificate_ms"].as_f64().unwrap()).sum::<f64>() / runs.len() as f64
    };
    let (before, after) = (mean_latency(&calm), mean_latency(&flooded));
    assert!(after <= before * 1.2 + 100.0, "claim-to-certificate {before} ms → {after} ms under the flood");
}

/// What every run, flooded or not, must show.
fn check_run(s: &serde_json::Value) {
    assert!(s["accepted"].as_u64().unwrap() >= 3, "honest certificates land: {s}");
    // Honest quorums complete in their first round: a claim that reached only part of its
    // quorum (gossiped before the mesh formed, or dropped with a reference on a fork) escalates
    // after `quorum_timeout` (8 s) instead.
    let escalations = s["escalations"].as_u64().unwrap();
    assert!(escalations * 2 <= s["certified_claims"].as_u64().unwrap(), "{escalations} escalations: {s}");
    assert_eq!(s["same_tip"], true, "{s}");
    let rss: Vec<f64> = s["rss_mb"].as_array().unwrap().iter().filter_map(|v| v.as_f64()).collect();
    assert!(rss.iter().all(|r| *r < 150.0), "memory bounded: {rss:?}");
}

/// A 4-node devnet of `seconds` whose node 3 behaves as `behaviour`: its summary, the stakes in
/// it and the nodes' lines (`--verbose`, on stderr).
fn adversary_devnet(
    port_offset: u16,
    seconds: u32,
    behaviour: &str,
) -> (serde_json::Value, Vec<u128>, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(port_offset).to_string();
    let seconds = seconds.to_string();
    let out = doin()
        .args(["devnet", "--nodes", "4", "--target", "0.5", "--duration", &seconds, "--base-port", &port])
        .args(["--dir", dir.path().to_str().unwrap(), "--adversary", &format!("3={behaviour}"), "--verbose"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "devnet failed:\n{stdout}");
    let s: serde_json::Value =
        serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    eprintln!("{s}");
    let stakes =
        s["stakes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect();
    (s, stakes, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Stake each devnet node starts with (100 DOIN).
const INITIAL_STAKE: u128 = 100 * 1_000_000_000;

/// A quorum member that signs two different votes for one commit and round is caught by its
/// peers' gossip checks, the evidence is gossiped and included in blocks, and its stake is
/// slashed on chain; honest stakes are untouched.
#[test]
fn a_double_voter_is_slashed_end_to_end() {
    let _serial = serial();
    let (s, stakes, _) = adversary_devnet(40, 12, "double-vote");
    assert!(stakes[3] * 10 <= INITIAL_STAKE * 9, "the double voter was slashed at least once: {stakes:?}");
    for (i, stake) in stakes.iter().enumerate().take(3) {
        assert!(*stake > stakes[3], "honest node {i} keeps more stake than the double voter: {stakes:?}");
    }
    assert_eq!(s["same_tip"], true, "{s}");
}

/// A staker that signs two finality votes for every checkpoint (backing two blocks at one
/// height) is caught by its peers' finality pools, the evidence is gossiped and included, and
/// half its stake is burned; the other stakers' votes still finalize the chain.
#[test]
fn a_double_finality_voter_is_slashed_end_to_end() {
    let _serial = serial();
    // 20 s: a busy machine produced as few as 14 blocks in 12 s, short of two adjacent
    // justified checkpoints.
    let (s, stakes, lines) = adversary_devnet(50, 20, "double-finality-vote");
    assert!(
        stakes[3] <= INITIAL_STAKE / 2,
        "the equivocating staker lost at least half its stake: {stakes:?}"
    );
    assert!(stakes[..3].iter().all(|s| *s == INITIAL_STAKE), "honest stakes untouched: {stakes:?}");
    assert!(lines.contains("finality offence by"), "a node reported the offence");
    assert!(lines.contains("] finalized "), "the honest three quarters of the stake finalized checkpoints");
    assert_eq!(s["same_tip"], true, "{s}");
}
