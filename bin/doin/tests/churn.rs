//! Churn soak on real node processes: five `doin node` processes on loopback, and for a bounded
//! time (`DOIN_CHURN_SECONDS`, default 75) one of them at a time is killed (SIGKILL) and
//! restarted on its data directory, or paused (SIGSTOP) and resumed, at random
//! (`DOIN_CHURN_SEED`, printed; the schedule repeats for a seed, the processes' timing does
//! not). The chain must keep finalizing, no finalized block any node reported may be lost or
//! contradicted, and every node must end on one tip.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc::{Receiver, sync_channel},
    time::{Duration, Instant},
};

use common::{Killed, doin, forward_lines, http_json, serial};

const NODES: usize = 5;

fn base_port() -> u16 {
    40_000 + (std::process::id() % 400) as u16 * 20
}

/// Starts node `i`; its stderr is appended to `DIR/node{i}.err` (read when it misbehaves).
fn start(dir: &Path, i: usize, tx: &std::sync::mpsc::SyncSender<(usize, String, Instant)>) -> Killed {
    let err =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("node{i}.err"))).unwrap();
    let mut child = doin()
        .args(["node", "--log-level", "warn", "--config"])
        .arg(dir.join(format!("node{i}.json")))
        .arg("--stop-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    forward_lines(&mut child, i, tx);
    Killed(child)
}

/// What went wrong with node `i`: its exit status if it exited, and the tail of its stderr.
fn diagnose(dir: &Path, i: usize, node: &mut Killed) -> String {
    let exit = node.0.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_else(|| "running".into());
    let err = std::fs::read_to_string(dir.join(format!("node{i}.err"))).unwrap_or_default();
    // The last 15 distinct messages (timestamps aside): a retry loop repeats one line.
    let mut seen = std::collections::HashSet::new();
    let tail: Vec<&str> = err
        .lines()
        .rev()
        .filter(|l| seen.insert(l.split_once(' ').map_or(*l, |(_, rest)| rest).to_owned()))
        .take(15)
        .collect();
    let status = http_json(base_port() + 2 * i as u16, "/status").unwrap_or_default();
    format!(
        "node {i} ({exit}; height {}, peers {}, banned {}): {}",
        status["chain_height"],
        status["peers"],
        status["security"]["banned_peers"],
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn signal(child: &Killed, sig: &str) {
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args([sig, &pid]).status();
}

/// xorshift64*: the perturbation schedule of a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// Finalized checkpoints the nodes reported (height → hash), and any height reported with two
/// hashes.
#[derive(Default)]
struct Finality {
    seen: BTreeMap<u64, String>,
    conflicts: Vec<String>,
}

impl Finality {
    fn drain(&mut self, rx: &Receiver<(usize, String, Instant)>) {
        while let Ok((i, line, _)) = rx.try_recv() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() == Some(&"finalized")
                && let (Some(h), Some(hash)) = (w.get(1).and_then(|h| h.parse::<u64>().ok()), w.get(2))
            {
                match self.seen.get(&h) {
                    Some(known) if known != hash => {
                        self.conflicts.push(format!("node {i} finalized {h} {hash}, another {known}"));
                    }
                    _ => {
                        self.seen.insert(h, (*hash).to_owned());
                    }
                }
            }
        }
    }

    fn highest(&self) -> u64 {
        self.seen.keys().next_back().copied().unwrap_or(0)
    }
}

enum Disruption {
    Killed(usize),
    Paused(usize),
}

#[test]
fn the_chain_keeps_finalizing_under_churn_and_loses_nothing_finalized() {
    let _serial = serial();
    let seed: u64 = std::env::var("DOIN_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2_654_435_761 + 1);
    let seconds: u64 = std::env::var("DOIN_CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(75);
    eprintln!("churn soak: seed {seed} (DOIN_CHURN_SEED), {seconds} s");
    let dir = tempfile::tempdir().unwrap();
    let port = base_port();
    let setup = doin()
        .args(["devnet", "--nodes", &NODES.to_string(), "--setup-only", "--max-block-interval", "1"])
        .args(["--base-port", &port.to_string(), "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));

    let (tx, rx) = sync_channel(1 << 16);
    let mut nodes: Vec<Killed> = (0..NODES).map(|i| start(dir.path(), i, &tx)).collect();
    let mut fin = Finality::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fin.highest() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        fin.drain(&rx);
    }
    let before = fin.highest();
    assert!(before >= 6, "the network finalized before the churn began");

    let mut rng = Rng(seed | 1);
    let mut perturbations = 0u32;
    let mut active: Option<(Disruption, Instant)> = None;
    let mut next = Instant::now();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(20));
        fin.drain(&rx);
        let now = Instant::now();
        match &active {
            Some((d, until)) if now >= *until => {
                match d {
                    Disruption::Killed(i) => nodes[*i] = start(dir.path(), *i, &tx),
                    Disruption::Paused(i) => signal(&nodes[*i], "-CONT"),
                }
                perturbations += 1;
                active = None;
                next = now + rng.millis(100, 500);
            }
            None if now >= next => {
                let i = (rng.next() % NODES as u64) as usize;
                let d = if rng.next().is_multiple_of(2) {
                    nodes[i].0.kill().unwrap();
                    nodes[i].0.wait().unwrap();
                    Disruption::Killed(i)
                } else {
                    signal(&nodes[i], "-STOP");
                    Disruption::Paused(i)
                };
                perturbations += 1;
                active = Some((d, now + rng.millis(300, 1500)));
            }
            _ => {}
        }
    }
    if let Some((d, _)) = active {
        match d {
            Disruption::Killed(i) => nodes[i] = start(dir.path(), i, &tx),
            Disruption::Paused(i) => signal(&nodes[i], "-CONT"),
        }
        perturbations += 1;
    }

    // Calm: every node comes back to one tip, and the chain finalizes on. (Within 150 s: a peer
    // banned for its gossip during the churn stays banned for 2 minutes.)
    let tip = |i: usize| http_json(port + 2 * i as u16, "/chain/status").map(|s| s["tip_hash"].to_string());
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut tips: Vec<Option<String>> = Vec::new();
    while Instant::now() < deadline {
        fin.drain(&rx);
        tips = (0..NODES).map(tip).collect();
        if tips.iter().all(|t| t.is_some() && *t == tips[0]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    fin.drain(&rx);
    let after = fin.highest();
    eprintln!(
        "churn soak: seed {seed}: {perturbations} perturbations, finalized {before} -> {after}, tips {tips:?}"
    );
    assert!(fin.conflicts.is_empty(), "seed {seed}: conflicting finality: {:?}", fin.conflicts);
    if !tips.iter().all(|t| t.is_some() && *t == tips[0]) {
        let why: Vec<String> = (0..NODES).map(|i| diagnose(dir.path(), i, &mut nodes[i])).collect();
        if std::env::var_os("DOIN_CHURN_KEEP").is_some() {
            eprintln!("kept the nodes' directory {}", dir.keep().display());
        }
        panic!("seed {seed}: nodes on different tips: {tips:?}\n{}", why.join("\n"));
    }
    assert!(after >= before + 12, "seed {seed}: the chain kept finalizing ({before} -> {after})");
    if seconds >= 75 {
        assert!(perturbations >= 100, "seed {seed}: {perturbations} perturbations");
    }
    // Nothing finalized is lost: every node's chain holds every finalized block any node reported.
    for (h, hash) in &fin.seen {
        for i in 0..NODES {
            let block = http_json(port + 2 * i as u16, &format!("/chain/block/{h}"));
            let got = block.as_ref().and_then(|b| b["hash"].as_str()).unwrap_or_default();
            assert_eq!(got, hash, "seed {seed}: node {i} lost finalized block {h}");
        }
    }
    for n in nodes.iter_mut() {
        drop(n.0.stdin.take());
    }
}
