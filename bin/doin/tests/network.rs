//! Multi-process network test: five `doin node` processes on loopback TCP, each told only of
//! the one before it (0 ← 1 ← 2 ← 3 ← 4); they find the rest (kademlia), produce blocks by
//! heartbeat-leader slots, and every node ends on one tip past height 20.

mod common;

use std::{
    collections::BTreeMap,
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{devnet_setup, doin, rewrite_config, serial, spawn_lines};

const NODES: usize = 5;

#[test]
fn five_processes_converge_on_one_tip() {
    let _slot = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_, configs) = devnet_setup(dir.path(), NODES, 300, &["--base-port", "18610"]);
    let (tx, rx) = sync_channel(1 << 16);
    let mut children = Vec::new();
    let mut previous: Option<String> = None;
    for (i, path) in configs.iter().enumerate() {
        rewrite_config(path, |c| c["bootstrap_peers"] = previous.iter().cloned().collect());
        children.push(spawn_lines(doin().arg("node").arg("--config").arg(path), i, &tx, false));
        // Wait for this node's listen address before starting the next one.
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let (who, line, _) = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("node starts listening");
            if who == i
                && let Some(a) = line.strip_prefix("listening ")
            {
                break a.to_owned();
            }
        };
        assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{addr}");
        previous = Some(addr);
    }
    // (height, hash) → the nodes that printed that block.
    let mut seen: BTreeMap<(u64, String), Vec<usize>> = BTreeMap::new();
    let mut tips = vec![0u64; NODES];
    let deadline = Instant::now() + Duration::from_secs(90);
    let common = loop {
        let (who, line, _) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no common block past height 20 within 90 s; tips {tips:?}"));
        let Some(rest) = line.strip_prefix("block ") else { continue };
        let mut parts = rest.split(' ');
        let (Some(Ok(h)), Some(hash)) = (parts.next().map(str::parse::<u64>), parts.next()) else { continue };
        tips[who] = h;
        let nodes = seen.entry((h, hash.to_owned())).or_default();
        if !nodes.contains(&who) {
            nodes.push(who);
        }
        if h >= 20 && nodes.len() == NODES {
            break (h, hash.to_owned());
        }
    };
    eprintln!("all five nodes printed block {} {}", common.0, common.1);
}
