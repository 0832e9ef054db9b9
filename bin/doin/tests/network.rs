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

/// `doin network init` as its README recipe: one command writes the genesis and three configs,
/// three `doin node --config` processes form a network and reach the quadratic target with
/// verification on (every node ends with the same champion). A node started from another
/// genesis and pointed at them is named by the network's `/status` and `/health`, and says so
/// itself. `init` refuses what cannot form a network, naming it.
#[test]
fn network_init_writes_a_network_that_reaches_its_target_and_names_a_foreign_genesis() {
    let _slot = serial();
    const P: u16 = 19240;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("net");
    let init = |args: &[&str]| doin().args(["network", "init"]).args(args).output().unwrap();
    let out = init(&[
        "--machines",
        "3",
        "--host",
        "127.0.0.1",
        "--base-port",
        &P.to_string(),
        "--dir",
        d.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(written["configs"].as_array().unwrap().len(), 3, "{written}");
    let genesis: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("genesis.json")).unwrap()).unwrap();
    assert_eq!(genesis["stakes"].as_array().unwrap().len(), 3);
    assert_eq!(genesis["chain_id"], 7070);
    let node1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("node1.json")).unwrap()).unwrap();
    assert_eq!(node1["port"], P + 2);
    assert_eq!(
        node1["bootstrap_peers"],
        serde_json::json!([format!("127.0.0.1:{}", P + 1), format!("127.0.0.1:{}", P + 5)])
    );
    assert_eq!(node1["quorum_min_evaluators"], 2, "quorums from the machines there are");

    // Refused by name: nothing is written over an existing network, and machines that cannot
    // form one.
    let refused = |args: &[&str], why: &str| {
        let out = init(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    };
    refused(&["--machines", "3", "--dir", d.to_str().unwrap()], "genesis.json exists");
    let other = dir.path().join("other");
    let o = other.to_str().unwrap();
    refused(&["--machines", "0", "--dir", o], "between 1 and 256");
    refused(&["--machines", "3", "--hosts", "10.0.0.1,10.0.0.2", "--dir", o], "names 2 hosts for 3 machines");
    let file = dir.path().join("machines.json");
    std::fs::write(&file, r#"{"machines": [{"host": "127.0.0.1", "roles": ["miner"]}]}"#).unwrap();
    refused(&["--machines", file.to_str().unwrap(), "--dir", o], "role \"miner\"");
    std::fs::write(&file, r#"{"machines": [{"host": "127.0.0.1", "roles": ["evaluator"]}]}"#).unwrap();
    refused(&["--machines", file.to_str().unwrap(), "--dir", o], "no machine optimizes");
    assert!(!other.join("genesis.json").exists());

    let (tx, rx) = sync_channel(1 << 16);
    let _nodes: Vec<_> = (0..3)
        .map(|i| {
            spawn_lines(
                doin().arg("node").arg("--config").arg(d.join(format!("node{i}.json"))),
                i,
                &tx,
                false,
            )
        })
        .collect();
    // The target (−100 on quadratic), verified, and the same champion on every node.
    let deadline = Instant::now() + Duration::from_secs(150);
    let champion = loop {
        let cs: Vec<serde_json::Value> = (0..3)
            .filter_map(|i| common::http_json(P + 2 * i, "/domains"))
            .map(|v| v["domains"][0]["champion"].clone())
            .collect();
        if cs.len() == 3
            && cs[0]["performance"].as_f64().is_some_and(|p| p >= -100.0)
            && cs.iter().all(|c| c["commit"] == cs[0]["commit"])
        {
            break cs[0].clone();
        }
        assert!(Instant::now() < deadline, "the network did not reach its target within 150 s: {cs:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("champion {champion}");
    let cert = common::http_json(P, "/api/chain?limit=50").unwrap();
    assert!(
        cert["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["certificates"].as_array().unwrap())
            .any(|c| c["outcome"] == "Accept"),
        "champions come from certificates a quorum signed: {cert}"
    );

    // A node of another network (its own genesis), told of node 0: both sides name it.
    let out = init(&["--machines", "1", "--base-port", &(P + 20).to_string(), "--dir", o]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _stranger = spawn_lines(
        doin()
            .arg("node")
            .arg("--config")
            .arg(other.join("node0.json"))
            .args(["--peers", &format!("127.0.0.1:{}", P + 1)]),
        9,
        &tx,
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut said, mut named) = (false, None);
    while !(said && named.is_some()) {
        assert!(
            Instant::now() < deadline,
            "the foreign genesis was not named within 60 s (said {said}, named {named:?})"
        );
        while let Ok((who, line, _)) = rx.try_recv() {
            said |= who == 9 && line.contains("is on another network");
        }
        let s = common::http_json(P, "/status").unwrap();
        if s["peers_on_other_genesis"].as_array().is_some_and(|a| !a.is_empty()) {
            named = Some(s);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = named.unwrap();
    let theirs = common::http_json(P + 20, "/status").unwrap()["genesis"].clone();
    assert_ne!(theirs, s["genesis"]);
    assert_eq!(s["peers_on_other_genesis"][0]["genesis"], theirs, "{s}");
    assert_eq!(s["status"], "degraded", "{s}");
    assert!(s["health_reasons"].to_string().contains("another network"), "{s}");
}

/// Joining late: three nodes keep only 16 bodies behind finality, so block 1's body is gone
/// and nobody could replay the chain from genesis. A fresh node given a checkpoint it trusts
/// (node 0's finalized block) fetches the peers' snapshot, ties it to the checkpoint by headers,
/// imports it and syncs the rest: it ends on the network's tip and state root. A node that
/// trusts another block at that height refuses the peers' snapshot, naming both.
#[test]
fn a_late_node_joins_from_a_snapshot_checked_against_its_trusted_checkpoint() {
    let _slot = serial();
    const P: u16 = 19260;
    let dir = tempfile::tempdir().unwrap();
    let (_, configs) = devnet_setup(dir.path(), 3, 300, &["--base-port", &P.to_string()]);
    for c in &configs {
        rewrite_config(c, |v| v["keep_bodies"] = 16.into());
    }
    // Node 1 is an archive (`--archive`): it keeps every body whatever `keep_bodies` says.
    // Anchor checkpoints every 10 blocks (the default 100 is minutes of a test).
    rewrite_config(&dir.path().join("genesis.json"), |g| g["params"]["anchor_interval"] = 10.into());
    let (tx, rx) = sync_channel(1 << 16);
    let _nodes: Vec<_> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut cmd = doin();
            cmd.arg("node").arg("--config").arg(c);
            if i == 1 {
                cmd.arg("--archive");
            }
            spawn_lines(&mut cmd, i, &tx, false)
        })
        .collect();
    // Finality far enough that the first bodies are pruned, a snapshot served, and an anchor
    // checkpoint recorded on chain by its block's generator (published at GET /anchors).
    let deadline = Instant::now() + Duration::from_secs(180);
    let (status, anchor) = loop {
        let s = common::http_json(P, "/chain/status");
        let anchored = common::http_json(P, "/anchors").and_then(|a| {
            a["checkpoints"]
                .as_array()?
                .iter()
                .find(|c| !c["anchor"].is_null() && c["height"].as_u64() >= Some(20))
                .cloned()
        });
        if let (Some(s), Some(a)) =
            (s.filter(|s| s["finalized_height"].as_u64().is_some_and(|f| f >= 30)), anchored)
            && dir.path().join("node0/snapshot/manifest.json").exists()
        {
            break (s, a);
        }
        assert!(Instant::now() < deadline, "no finality at 30 with a snapshot and an anchor within 180 s");
        std::thread::sleep(Duration::from_millis(300));
    };
    let pruned = common::http_json(P, "/chain/block/1").unwrap();
    assert_eq!(pruned["error"], "not_found", "block 1's body is pruned: {pruned}");
    let archived = common::http_json(P + 2, "/chain/block/1").unwrap();
    assert_eq!(archived["header"]["index"], 1, "the archive node keeps block 1: {archived}");
    let addresses: Vec<serde_json::Value> =
        (0..3).map(|i| common::http_json(P + 2 * i, "/status").unwrap()["address"].clone()).collect();
    assert!(addresses.contains(&anchor["anchor"]["by"]), "anchored by a node of the network: {anchor}");
    assert!(anchor["anchor"]["external_ref"].as_str().unwrap().ends_with("/anchors"), "{anchor}");
    // The joiner trusts that anchor.
    let checkpoint = format!("{}:{}", anchor["height"], anchor["hash"].as_str().unwrap());

    // A fresh follower: no chain, no stake, the network's genesis, node 0 as its peer.
    let late = |name: &str, port: u16| {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::copy(&configs[2], &path).unwrap();
        rewrite_config(&path, |v| {
            v["port"] = port.into();
            v["data_dir"] = dir.path().join(name).to_str().unwrap().into();
            v["identity"] = dir.path().join(format!("{name}.key")).to_str().unwrap().into();
            v["domains"] = serde_json::json!([]);
            v["bootstrap_peers"] = serde_json::json!([format!("127.0.0.1:{}", P + 1)]);
        });
        path
    };
    // Trusting another block at that height: refused by name, nothing written.
    let wrong = format!("{}:{}", status["finalized_height"], "ab".repeat(32));
    let out = doin()
        .arg("node")
        .arg("--config")
        .arg(late("liar_trust", P + 30))
        .args(["--checkpoint", &wrong, "--duration", "60"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("contradicts the trusted checkpoint") && text.contains(&"ab".repeat(32)), "{text}");
    assert!(!dir.path().join("liar_trust/chain.redb").exists(), "nothing imported");

    let started = Instant::now();
    let _late = spawn_lines(
        doin()
            .arg("node")
            .arg("--config")
            .arg(late("late", P + 20))
            .args(["--checkpoint-from", &format!("127.0.0.1:{P}")]),
        7,
        &tx,
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut joined, mut trusted) = (None, None);
    while joined.is_none() {
        let (who, line, _) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the late node says it joined from a snapshot within 60 s");
        if who == 7 && line.starts_with("joined from snapshot height") {
            joined = Some(line);
        } else if who == 7 && line.starts_with("trusting checkpoint ") {
            trusted = Some(line);
        }
    }
    let joined = joined.unwrap();
    eprintln!("{joined} ({:.1} s after start)", started.elapsed().as_secs_f64());
    // `--checkpoint-from` took node 0's finalized checkpoint, at or past the anchor above.
    let trusted = trusted.expect("the late node names the checkpoint it trusts");
    let h: u64 = trusted.split_whitespace().nth(2).and_then(|c| c.split(':').next()?.parse().ok()).unwrap();
    assert!(h >= anchor["height"].as_u64().unwrap(), "{trusted} vs {checkpoint}");
    let height: u64 = joined.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(height >= 14, "the snapshot is of a finalized checkpoint past the pruned bodies: {joined}");
    // Then it follows the chain: the same tip and state root as node 0 at one moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (common::http_json(P + 20, "/chain/status"), common::http_json(P, "/chain/status"));
        if let (Some(a), Some(b)) = (&a, &b)
            && a["tip_hash"] == b["tip_hash"]
            && a["state_root"] == b["state_root"]
            && a["chain_height"].as_u64() > status["chain_height"].as_u64()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the late node did not reach the network's tip: {a:?} vs {b:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The seed's own workflow on three loopback nodes: every node searches with an external
/// Python optimizer (the DEAP example, `optimization_plugin: "plugin:…"`) on an external Python
/// domain (the SDK's NumPy/PyTorch regressor, `domain_plugin`). Claims are verified by quorums
/// measuring through the plugin, and verified champions migrate between the nodes' optimizers:
/// every champion reaches (`inject`) the DEAP processes of the two nodes that did not find it
/// (both ways when two nodes find champions within 120 s), and none of their calls failed.
#[test]
fn deap_optimizers_on_a_python_domain_exchange_champions_across_three_nodes() {
    if common::python_with(&["numpy", "deap"]).is_none() {
        return;
    }
    let _slot = serial();
    const P: u16 = 19340;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/python/examples");
    let domain = format!("python3 {}", examples.join("numpy_domain.py").display());
    let optimizer = format!("plugin:python3 {}", examples.join("deap_optimizer.py").display());
    let dir = tempfile::tempdir().unwrap();
    // A target no model reaches: the search goes on, so champions keep changing hands.
    let (_, configs) = devnet_setup(
        dir.path(),
        3,
        500,
        &[
            "--base-port",
            &P.to_string(),
            "--domain",
            "regressor",
            "--domain-plugin",
            &domain,
            "--optimizer",
            &optimizer,
            "--target",
            "-0.000001",
            "--optimization",
            "population=8",
        ],
    );
    let (tx, rx) = sync_channel(1 << 16);
    let _children: Vec<_> = configs
        .iter()
        .enumerate()
        .map(|(i, path)| spawn_lines(doin().arg("node").arg("--config").arg(path), i, &tx, false))
        .collect();
    let mut addresses: BTreeMap<usize, String> = BTreeMap::new();
    // Per node: the nodes whose champions migrated into its optimizer.
    let mut migrants: BTreeMap<usize, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut champions: Vec<(usize, String)> = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    // Which node finds the next champion is luck: one node may find every one. So the test
    // waits until every champion found by a node has reached the other two nodes' optimizers,
    // and, for up to 120 s, until every node has also been handed another node's champion
    // (champions from two finders travel both ways). After 120 s, one finder whose champions
    // reached both others suffices.
    let done = |addresses: &BTreeMap<usize, String>,
                migrants: &BTreeMap<usize, std::collections::BTreeSet<String>>,
                authors: &std::collections::BTreeSet<String>| {
        let foreign =
            |i: usize| migrants.get(&i).is_some_and(|from| from.iter().any(|a| Some(a) != addresses.get(&i)));
        addresses.len() == 3
            && !authors.is_empty()
            && (0..3).all(|i| {
                authors
                    .iter()
                    .filter(|a| Some(*a) != addresses.get(&i))
                    .all(|a| migrants.get(&i).is_some_and(|from| from.contains(a)))
            })
            && ((0..3).all(foreign) || started.elapsed() > Duration::from_secs(120))
    };
    let mut authors = std::collections::BTreeSet::new();
    while !done(&addresses, &migrants, &authors) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((who, line, _)) = rx.recv_timeout(left.min(Duration::from_secs(1))) else {
            assert!(
                Instant::now() < deadline,
                "within 300 s every champion reaches the other nodes' optimizers: migrants {migrants:?}, \
                 champions {champions:?}"
            );
            continue;
        };
        if let Some(a) = line.strip_prefix("address ") {
            addresses.insert(who, a.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("migrant regressor from ") {
            let mut words = rest.split(' ');
            let by = words.next().unwrap_or_default().to_owned();
            assert_eq!(words.next(), Some("into"), "{line}");
            assert_eq!(words.next(), Some("plugin"), "the DEAP plugin is the optimizer: {line}");
            migrants.entry(who).or_default().insert(by);
        } else if line.starts_with("champion regressor ") {
            if let Some(by) = line.split(" by ").nth(1).and_then(|r| r.split(' ').next()) {
                authors.insert(by.to_owned());
            }
            champions.push((who, line));
        }
    }
    eprintln!("migrants {migrants:?}\nchampions {champions:?}");
    // Migrants came from the network, not from the node itself, and every node's DEAP process
    // answered every call (inject included) without a failure.
    for i in 0..3u16 {
        let from = migrants.get(&usize::from(i)).cloned().unwrap_or_default();
        assert!(!from.contains(&addresses[&usize::from(i)]), "node {i} got its own champion as a migrant");
        let plugins = common::http_json(P + 2 * i, "/api/plugins").expect("/api/plugins answers");
        let deap = plugins["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str().is_some_and(|n| n.contains("optimizer")))
            .unwrap_or_else(|| panic!("node {i}: no optimizer process: {plugins}"))
            .clone();
        assert!(deap["calls"].as_u64() > Some(3) && deap["errors"] == 0, "node {i}: {deap}");
    }
}
