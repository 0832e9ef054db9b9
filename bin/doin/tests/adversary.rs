//! End-to-end under attack: 4-node devnets (real processes on loopback). One is flooded with
//! 10 000 signed bogus commits, reveals and votes from 1 000 throwaway keys by `doin flood`:
//! honest certificates still land, memory stays bounded and the flooding peer is graylisted and banned
//! (what the flood costs in claim-to-certificate time: `doin bench flood`). In the others a
//! node double-votes or double-votes for finality and is slashed.

mod common;

use std::{
    process::{Command, Stdio},
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{doin, http_json, serial, spawn_lines};

fn base_port(offset: u16) -> u16 {
    30_000 + (std::process::id() % 500) as u16 * 60 + offset
}

/// The JSON line the flooder printed last (it has exited or been killed).
fn report_of(flooder: std::process::Child) -> serde_json::Value {
    let out = flooder.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let report = text.lines().rev().find(|l| l.starts_with('{')).and_then(|l| serde_json::from_str(l).ok());
    report.unwrap_or_else(|| panic!("the flooder printed no report: {text}"))
}

/// A 10 s devnet flooded from its start: its summary, the most banned peers node 0 reported
/// during the run and the flooder's report. The flooder signs its 10 000 messages
/// first and starts before the devnet, so that the flood meets the nodes from their first
/// claims; the domain (rastrigin in 40 dimensions, an unreachable target) keeps the nodes
/// claiming for the whole run. What the flood costs in claim-to-certificate time is measured
/// by `doin bench flood` (timings are not asserted in tests).
fn flooded_run(port: u16) -> (serde_json::Value, u64, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = sync_channel(4096);
    // Above the nodes' optimizer threads (niceness 10), below their event loops: it floods at
    // its full rate however busy they are.
    let mut flooder = Command::new("nice")
        .args(["-n", "5", env!("CARGO_BIN_EXE_doin")])
        .args(["flood", "--domain", "rastrigin", "--peer", &format!("127.0.0.1:{}", port + 1)])
        .args(["--messages", "10000", "--keys", "1000", "--rate", "1000", "--timeout-s", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut devnet = spawn_lines(
        doin()
            .args(["devnet", "--nodes", "4", "--domain", "rastrigin", "--optimization", "n_params=40"])
            .args(["--target", "-1", "--duration", "10", "--base-port", &port.to_string()])
            .args(["--dir", dir.path().to_str().unwrap()]),
        0,
        &tx,
        false,
    );
    let started = Instant::now();
    let mut banned = 0;
    let mut summary = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(status) = http_json(port, "/status") {
            banned = banned.max(status["security"]["banned_peers"].as_u64().unwrap_or(0));
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while flooder.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = flooder.kill();
    (summary.expect("the devnet printed no summary"), banned, report_of(flooder))
}

#[test]
fn a_gossip_flood_from_throwaway_keys_is_banned_and_honest_certificates_still_land() {
    let _serial = serial();
    let (s, banned, report) = flooded_run(base_port(0));
    eprintln!("{s}\nflooder: {report}");
    // The flooder tried all 10 000; its publishes fail once no node will have it any more.
    let (published, failed) =
        (report["published"].as_u64().unwrap(), report["publish_errors"].as_u64().unwrap());
    assert_eq!(published + failed, 10_000, "{report}");
    assert!(published >= 100, "the flood reached the nodes: {report}");
    check_run(&s);
    // Every node refused the bogus messages with a penalty (the flooder reaches them all
    // through node 0); node 0 graylisted the flooding peer, then disconnected and banned it,
    // and so did the others: the flooder ended with no peer.
    let rejected: Vec<u64> =
        s["gossip_rejected"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(rejected.iter().all(|r| *r >= 3), "the nodes rejected the flood: {rejected:?}");
    assert!(banned >= 1, "node 0 banned the flooding peer");
    assert_eq!(report["connected_peers_at_end"], 0, "every node cut the flooder off: {report}");
    // Graylisted after a few dozen messages each: the rest were dropped unread.
    assert!(rejected.iter().sum::<u64>() < 1000, "{rejected:?} of 10 000 needed checking");
}

/// What every run, flooded or not, must show.
fn check_run(s: &serde_json::Value) {
    assert!(s["accepted"].as_u64().unwrap() >= 3, "honest certificates land: {s}");
    // Honest quorums complete in their first round: a claim that reached only part of its
    // quorum (gossiped before the mesh formed, or dropped with a reference on a fork) escalates
    // after `quorum_timeout` (8 s) instead.
    let escalations = s["escalations"].as_u64().unwrap();
    assert!(escalations * 2 <= s["certified_claims"].as_u64().unwrap(), "{escalations} escalations: {s}");
    // One chain (the stop of a live chain can leave a node a block or two ahead: same_chain
    // allows 3 and checks the lowest final height's block on every node).
    assert_eq!(s["same_chain"], true, "{s}");
    let rss: Vec<f64> = s["rss_mb"].as_array().unwrap().iter().filter_map(|v| v.as_f64()).collect();
    assert!(rss.iter().all(|r| *r < 150.0), "memory bounded: {rss:?}");
}

/// A 4-node devnet of `seconds` whose node 3 behaves as `behaviour`: its summary, the stakes in
/// it and the nodes' lines (`--verbose`, on stderr).
fn adversary_devnet(
    port_offset: u16,
    seconds: u32,
    behaviour: &str,
    extra: &[&str],
) -> (serde_json::Value, Vec<u128>, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(port_offset).to_string();
    let seconds = seconds.to_string();
    let out = doin()
        .args(["devnet", "--nodes", "4", "--target", "0.5", "--duration", &seconds, "--base-port", &port])
        .args(["--dir", dir.path().to_str().unwrap(), "--adversary", &format!("3={behaviour}"), "--verbose"])
        .args(extra)
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
    let (s, stakes, _) = adversary_devnet(40, 12, "double-vote", &[]);
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
    // Once the quadratic domain has converged (within a second) the chain grows by one
    // heartbeat per `max_block_interval`: at the devnet's 5 s, runs of 30 s ended at 13 blocks
    // on a busy machine, short of the two adjacent justified checkpoints (6, 12) and the votes
    // 2 blocks past the second. At 1 s, 20 s give about 20 blocks.
    let (s, stakes, lines) = adversary_devnet(50, 20, "double-finality-vote", &["--max-block-interval", "1"]);
    assert!(
        stakes[3] <= INITIAL_STAKE / 2,
        "the equivocating staker lost at least half its stake: {stakes:?}"
    );
    assert!(stakes[..3].iter().all(|s| *s == INITIAL_STAKE), "honest stakes untouched: {stakes:?}");
    assert!(lines.contains("finality offence by"), "a node reported the offence");
    assert!(lines.contains("] finalized "), "the honest three quarters of the stake finalized checkpoints");
    assert_eq!(s["same_tip"], true, "{s}");
}
