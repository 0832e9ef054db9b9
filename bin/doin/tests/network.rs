//! Multi-process network test: five `doin net-peer` processes on loopback TCP, chained
//! 0 ← 1 ← 2 ← 3 ← 4; peer 0 produces blocks; every peer must converge on the same tip through
//! gossip relayed across the chain and header-first sync.

mod common;

use std::{process::Command, sync::mpsc::sync_channel, time::Duration};

use common::spawn_lines;
use doin_consensus::testkit::TestNet;

#[test]
fn five_processes_converge_on_one_tip() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TestNet::new(3, 0, 0).spec;
    spec.params.max_block_interval_ms = 50;
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (tx, rx) = sync_channel(4096);
    let mut children = Vec::new();
    let mut previous: Option<String> = None;
    for i in 0..5 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doin"));
        cmd.args(["net-peer", "--data-dir"])
            .arg(dir.path().join(format!("n{i}")))
            .arg("--genesis")
            .arg(&genesis)
            .args(["--until-height", "20", "--timeout-s", "90"]);
        if i == 0 {
            cmd.args(["--produce", "0", "--interval-ms", "150"]);
        }
        if let Some(p) = &previous {
            cmd.args(["--peer", p]);
        }
        children.push(spawn_lines(&mut cmd, i, &tx, false));
        // Wait for this peer's listen address before starting the next one.
        let addr = loop {
            let (who, line, _) = rx.recv_timeout(Duration::from_secs(30)).expect("peer starts listening");
            if who == i
                && let Some(a) = line.strip_prefix("listening ")
            {
                break a.to_owned();
            }
        };
        assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{addr}");
        previous = Some(addr);
    }
    let mut done: Vec<Option<String>> = vec![None; 5];
    while done.iter().any(Option::is_none) {
        let (who, line, _) = rx.recv_timeout(Duration::from_secs(90)).expect("every peer reaches height 20");
        if let Some(rest) = line.strip_prefix("done ") {
            done[who] = Some(rest.to_owned());
        }
    }
    let first = done[0].clone().unwrap();
    assert!(first.starts_with("20 "), "{first}");
    for (i, d) in done.iter().enumerate() {
        assert_eq!(d.as_ref(), Some(&first), "peer {i} converged on another tip");
    }
}
