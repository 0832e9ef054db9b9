//! End-to-end: real node processes on loopback (`doin devnet`, `doin node`), bounded in time.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::mpsc::{Receiver, sync_channel},
    time::{Duration, Instant},
};

use common::{Killed, doin, http_request as http, serial, spawn_lines};

/// A port range per test so tests in parallel do not collide.
fn base_port(offset: u16) -> u16 {
    20_000 + (std::process::id() % 1000) as u16 * 20 + offset
}

fn devnet(args: &[&str]) -> serde_json::Value {
    let out = doin().arg("devnet").args(args).stderr(Stdio::inherit()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "devnet failed:\n{stdout}");
    let last =
        stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    serde_json::from_str(last).unwrap()
}

#[test]
fn four_nodes_reach_the_quadratic_target_with_verification_and_agree() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(0).to_string();
    let d = dir.path().to_str().unwrap();
    let s = devnet(&[
        "--nodes",
        "4",
        "--domain",
        "quadratic",
        "--until-target",
        "--duration",
        "90",
        "--base-port",
        &port,
        "--dir",
        d,
    ]);
    eprintln!("{s}");
    assert_eq!(s["stopped_by"], "target", "{s}");
    assert!(s["time_to_target_s"].as_f64().is_some());
    assert!(s["blocks"].as_u64().unwrap() >= 1);
    assert!(s["accepted"].as_u64().unwrap() >= 1, "certificates were accepted: {s}");
    assert!(s["votes"].as_u64().unwrap() >= 2, "evaluators voted: {s}");
    assert_eq!(s["same_tip"], true, "{s}");
    assert_eq!(s["same_root"], true, "{s}");
    // Rewards: someone ends above the 1 000 DOIN every node was funded with.
    let initial: u128 = 1_000 * 1_000_000_000;
    let balances: Vec<u128> =
        s["balances"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(balances.len(), 4);
    assert!(balances.iter().any(|b| *b > initial), "{balances:?}");
    // Every node wrote a config in the user format and an owner-only key.
    for i in 0..4 {
        assert!(dir.path().join(format!("node{i}.json")).exists());
        let key = dir.path().join(format!("node{i}/node.key"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}

fn node(dir: &Path, i: usize, tx: &std::sync::mpsc::SyncSender<(usize, String, Instant)>) -> Killed {
    let mut cmd = doin();
    cmd.args(["node", "--config"])
        .arg(dir.join(format!("node{i}.json")))
        .arg("--stop-on-stdin-eof")
        .stdin(Stdio::piped());
    spawn_lines(&mut cmd, i, tx, std::env::var_os("DOIN_DEBUG_LINES").is_some())
}

/// Waits for a line from node `who` matching `pred`; returns it.
fn wait_for(
    rx: &Receiver<(usize, String, Instant)>,
    who: Option<usize>,
    within: Duration,
    mut pred: impl FnMut(&str) -> bool,
    tips: &mut [String],
) -> Option<String> {
    let deadline = Instant::now() + within;
    let echo = std::env::var_os("DOIN_DEBUG_LINES").is_some();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok((i, line, _)) = rx.recv_timeout(left) else { break };
        if echo {
            let t = std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_millis() % 1_000_000;
            eprintln!("{:.3} [{i}] {line}", t as f64 / 1000.0);
        }
        if let Some(tip) = line.strip_prefix("block ").and_then(|l| l.split_whitespace().nth(1)) {
            tips[i] = tip.to_owned();
        }
        if who.is_none_or(|w| w == i) && pred(&line) {
            return Some(line);
        }
    }
    None
}

#[test]
fn a_node_killed_mid_run_restarts_catches_up_and_rejoins() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(10).to_string();
    let d = dir.path().to_str().unwrap();
    // Set up three nodes (keys, genesis, configs) with a target they keep chasing, so blocks
    // keep coming.
    let s = devnet(&["--nodes", "3", "--target", "0.5", "--duration", "3", "--base-port", &port, "--dir", d]);
    assert_eq!(s["stopped_by"], "duration");

    let (tx, rx) = sync_channel(4096);
    let mut nodes: Vec<Killed> = (0..3).map(|i| node(dir.path(), i, &tx)).collect();
    let mut tips = vec![String::new(); 3];
    assert!(
        wait_for(&rx, Some(2), Duration::from_secs(30), |l| l.starts_with("connected"), &mut tips).is_some()
    );
    let before =
        wait_for(&rx, Some(2), Duration::from_secs(30), |l| l.starts_with("block"), &mut tips).unwrap();
    let height_of = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    let killed_at = height_of(&before);

    // SIGKILL node 2 while the others keep producing.
    nodes[2].0.kill().unwrap();
    nodes[2].0.wait().unwrap();
    let progressed = wait_for(
        &rx,
        Some(0),
        Duration::from_secs(60),
        |l| l.starts_with("block") && height_of(l) >= killed_at + 3,
        &mut tips,
    );
    assert!(progressed.is_some(), "the others kept producing while node 2 was down");

    // Restart: it reopens its store, syncs, and follows the same tip as the others.
    nodes[2] = node(dir.path(), 2, &tx);
    let caught = wait_for(
        &rx,
        Some(2),
        Duration::from_secs(60),
        |l| l.starts_with("block") && height_of(l) >= killed_at + 3,
        &mut tips,
    );
    assert!(caught.is_some(), "node 2 caught up after the restart");

    // Stop all cleanly: every node reports the same tip and root.
    for n in nodes.iter_mut() {
        drop(n.0.stdin.take());
    }
    let mut finals = vec![None; 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    while finals.iter().any(Option::is_none) && Instant::now() < deadline {
        if let Ok((i, line, _)) = rx.recv_timeout(Duration::from_secs(1))
            && line.starts_with("stopped")
        {
            let w: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            finals[i] = Some((w[2].clone(), w[4].clone(), w[6].clone()));
        }
    }
    let finals: Vec<_> = finals.into_iter().map(|f| f.expect("every node stops cleanly")).collect();
    eprintln!("{finals:?}");
    // Heights may differ by the blocks in flight at the stop (the nodes read their closed stdin
    // at slightly different moments, and with claims in flight the seal leaders produce a block
    // every few hundred ms); the node that restarted must be within three blocks of the others.
    let heights: Vec<u64> = finals.iter().map(|f| f.0.parse().unwrap()).collect();
    let max = *heights.iter().max().unwrap();
    assert!(heights.iter().all(|h| h + 3 >= max), "{heights:?}");
    assert!(heights[2] > killed_at, "{heights:?} vs killed at {killed_at}");
}

fn fixture(name: &str) -> String {
    // cargo's runtime value first: a binary built in another checkout embeds that path.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    format!("python3 {dir}/tests/fixtures/{name}")
}

fn python_ok() -> bool {
    let ok = Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var_os("CI").is_none(), "CI must provide python3");
    ok
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap_or_default().to_owned()).collect()
}

fn numbers(v: &serde_json::Value) -> Vec<u128> {
    strings(v).iter().map(|x| x.parse().unwrap()).collect()
}

#[test]
fn an_optimizer_that_inflates_its_claims_is_rejected_and_loses_bond_and_reputation() {
    let _serial = serial();
    if !python_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(30).to_string();
    let d = dir.path().to_str().unwrap();
    let liar = format!("3={}", fixture("liar.py"));
    // An unreachable target keeps everyone committing for the whole run.
    let s = devnet(&[
        "--nodes",
        "4",
        "--target",
        "0.5",
        "--duration",
        "20",
        "--base-port",
        &port,
        "--dir",
        d,
        "--plugin",
        &liar,
    ]);
    eprintln!("{s}");
    // (A run stopped at a fixed time may leave a block in flight, so tips are not compared.)
    assert_eq!(s["stopped_by"], "duration", "{s}");
    assert!(s["accepted"].as_u64().unwrap() >= 1, "honest work is accepted: {s}");
    assert!(s["rejected"].as_u64().unwrap() >= 1, "the liar's certificates are rejects: {s}");
    let addresses = strings(&s["addresses"]);
    let liar = &addresses[3];
    // No champion ever came from the liar: nobody adopted its parameters.
    assert!(!strings(&s["champions_by"]).contains(liar), "{s}");
    let stakes = numbers(&s["stakes"]);
    let initial_stake: u128 = 100 * 1_000_000_000;
    assert!(stakes[3] < initial_stake, "the liar's bond was burned: {stakes:?}");
    assert!(stakes[..3].iter().all(|s| *s == initial_stake), "honest optimizers keep their bond: {stakes:?}");
    let reputations = numbers(&s["reputations"]);
    assert_eq!(reputations[3], 0, "{reputations:?}");
    assert!(reputations[..3].iter().all(|r| *r > 0), "{reputations:?}");
}

#[test]
fn an_evaluator_voting_garbage_is_outvoted_and_the_honest_result_lands() {
    let _serial = serial();
    if !python_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(40).to_string();
    let d = dir.path().to_str().unwrap();
    let garbage = format!("3={}", fixture("garbage.py"));
    // A fixed run past the quorum timeout (8 s), so quorums with the garbage voter escalate
    // even when its plugin is slow to start and the honest quorums reach the target first.
    let s = devnet(&[
        "--nodes",
        "4",
        "--target",
        "-0.5",
        "--duration",
        "14",
        "--base-port",
        &port,
        "--dir",
        d,
        "--plugin",
        &garbage,
    ]);
    eprintln!("{s}");
    assert!(s["time_to_target_s"].as_f64().is_some(), "the honest result landed: {s}");
    assert_eq!(s["same_tip"], true);
    assert!(s["escalations"].as_u64().unwrap() >= 1, "garbage votes forced escalations: {s}");
    assert!(s["accepted"].as_u64().unwrap() >= 1);
    let addresses = strings(&s["addresses"]);
    assert!(!strings(&s["champions_by"]).contains(&addresses[3]));
    // Honest evaluators earned rewards and reputation; the garbage voter neither.
    let balances = numbers(&s["balances"]);
    let reputations = numbers(&s["reputations"]);
    let initial: u128 = 1_000 * 1_000_000_000;
    // (Any node may produce a work block from certificates it assembled, the garbage voter too:
    // a producer's share, never an evaluator's reward. With many escalations an honest
    // evaluator may earn about a producer's share too — a CI run ended at 1 037.5 DOIN for the
    // garbage voter against 1 037.4999999998 and 1 045 — so the garbage voter is compared with
    // the better honest evaluator.)
    assert!(balances[1] > initial && balances[2] > initial, "{balances:?}");
    assert!(balances[3] < balances[1].max(balances[2]), "{balances:?}");
    assert_eq!(reputations[3], 0, "{reputations:?}");
    assert!(reputations[1] > 0 && reputations[2] > 0, "{reputations:?}");
}

#[test]
fn a_copied_reveal_is_not_credited_to_the_copier() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(50).to_string();
    let d = dir.path().to_str().unwrap();
    // Node 3 does not optimize; it re-commits every parameter set others reveal.
    let s = devnet(&[
        "--nodes",
        "4",
        "--evaluators-only",
        "1",
        "--target",
        "0.5",
        "--duration",
        "12",
        "--base-port",
        &port,
        "--dir",
        d,
        "--adversary",
        "3=copy-reveals",
    ]);
    eprintln!("{s}");
    assert!(s["copies"].as_u64().unwrap() >= 3, "the copier copied: {s}");
    assert!(s["accepted"].as_u64().unwrap() >= 1);
    let addresses = strings(&s["addresses"]);
    let champions = strings(&s["champions_by"]);
    assert!(!champions.is_empty());
    assert!(!champions.contains(&addresses[3]), "a copy never became the champion: {s}");
}

fn run_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let out = doin().args(args).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn wallet_and_status_work_against_a_running_devnet() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(60);
    let (port, d) = (base.to_string(), dir.path().to_str().unwrap().to_owned());
    let mut devnet = Killed(
        doin()
            .args([
                "devnet",
                "--nodes",
                "2",
                "--target",
                "0.5",
                "--duration",
                "40",
                "--base-port",
                &port,
                "--dir",
                &d,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node = format!("127.0.0.1:{base}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(v) = run_json(&["status", "--node", &node])
            && v["peers"].as_u64().unwrap_or(0) >= 1
        {
            break v;
        }
        assert!(Instant::now() < deadline, "the node's API never answered with a peer");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(status["status"], "healthy");
    assert_eq!(status["domains"]["quadratic"]["optimize"], true);

    // A new account receives 5 DOIN from node 1's account.
    let key = dir.path().join("new.key");
    let k = run_json(&["keygen", "--out", key.to_str().unwrap()]).unwrap();
    let to = k["address"].as_str().unwrap().to_owned();
    let from_key = dir.path().join("node1/node.key");
    let sent = run_json(&[
        "wallet",
        "transfer",
        "--node",
        &node,
        "--key",
        from_key.to_str().unwrap(),
        "--to",
        &to,
        "--amount",
        "5",
    ])
    .unwrap();
    assert_eq!(sent["submitted"].as_str().unwrap().len(), 64);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = run_json(&["wallet", "balance", "--node", &node, "--address", &to]).unwrap();
        if b["balance"] == "5000000000" {
            break;
        }
        assert!(Instant::now() < deadline, "the transfer never landed: {b}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Posting an optimization task: node 1 registers `sphere` with a 10 DOIN bounty.
    let reg = run_json(&[
        "domain",
        "register",
        "--node",
        &node,
        "--key",
        from_key.to_str().unwrap(),
        "--domain",
        "sphere",
        "--bounty",
        "10",
        "--bounty-per-accept",
        "1",
    ])
    .unwrap();
    assert_eq!(reg["submitted"].as_str().unwrap().len(), 64);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = run_json(&["domain", "list", "--node", &node]).unwrap();
        let sphere = list["domains"].as_array().unwrap().iter().find(|d| d["domain_id"] == "sphere").cloned();
        if let Some(d) = sphere {
            assert_eq!(d["bounty_left"], "10000000000");
            break;
        }
        assert!(Instant::now() < deadline, "the domain was never registered: {list}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A transfer signed by a key that has nothing is refused by the chain rules only when
    // mined; a malformed one is refused at once.
    let e = run_json(&[
        "wallet",
        "transfer",
        "--node",
        &node,
        "--key",
        key.to_str().unwrap(),
        "--to",
        "zz",
        "--amount",
        "1",
    ])
    .unwrap_err();
    assert!(e.contains("not hex"), "{e}");
    let _ = devnet.0.kill();
}

#[test]
fn an_external_evaluator_takes_a_nodes_quorum_assignments_through_the_task_queue() {
    let _serial = serial();
    use doin_optimize::{
        Value,
        domain::{Budget, Domain, Quadratic},
    };
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(70);
    let (port, d) = (base.to_string(), dir.path().to_str().unwrap().to_owned());
    // Three nodes; node 2 evaluates through /tasks. Quorums of 2 out of 2 eligible mean node 2
    // is in every quorum of the other two, so nothing is accepted unless its tasks are done.
    let mut devnet = Killed(
        doin()
            .args([
                "devnet",
                "--nodes",
                "3",
                "--target",
                "-1",
                "--duration",
                "60",
                "--base-port",
                &port,
                "--dir",
                &d,
            ])
            .args(["--external", "2", "--evaluators-only", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node2 = base + 4;
    // The test plays the external evaluator with the same built-in domain the nodes run.
    let domain = Quadratic::new(10, 20.0, 0x0d01, 0.1);
    // Serve tasks (first-round and escalation) until the network accepts a certificate.
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut completed = 0;
    loop {
        assert!(Instant::now() < deadline, "{completed} tasks completed and no certificate accepted");
        let Ok(_) = std::net::TcpStream::connect(("127.0.0.1", node2)) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let (_, st) = http(base, "GET", "/status", "", None);
        if completed > 0 && st["domains"]["quadratic"]["best_performance"].as_f64().is_some() {
            break;
        }
        if completed == 0 {
            let (s, v) = http(node2, "POST", "/tasks/claim", "{}", Some("wrong"));
            assert_eq!(s, 401, "{v}");
        }
        let (s, v) = http(node2, "POST", "/tasks/claim", "{\"kinds\":[\"verification\"]}", Some("devnet"));
        if s == 429 {
            // A well-behaved evaluator backs off when the node's rate limit says so.
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        assert_eq!(s, 200, "{v}");
        if v["task"].is_null() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let task = &v["task"];
        let values: Vec<Value> =
            task["params"].as_array().unwrap().iter().map(|p| Value::Real(p.as_f64().unwrap())).collect();
        let seed_bytes: [u8; 32] = hex::decode(task["seed"].as_str().unwrap()).unwrap().try_into().unwrap();
        let m = domain
            .evaluate(
                &values,
                Some(&doin_primitives::Hash(seed_bytes)),
                Budget::new(Duration::from_secs(5), 0),
            )
            .unwrap();
        let body = serde_json::json!({ "task_id": task["task_id"], "lease": v["lease"], "performance": m.performance });
        // The lease (120 s) outlives a back-off on the rate limit.
        let (s, r) = loop {
            match http(node2, "POST", "/tasks/complete", &body.to_string(), Some("devnet")) {
                (429, _) => std::thread::sleep(Duration::from_secs(1)),
                done => break done,
            }
        };
        assert_eq!(s, 200, "{r}");
        completed += 1;
    }
    let (_, st) = http(node2, "GET", "/status", "", None);
    assert!(st["task_queue"]["completed"].as_u64().unwrap() >= 1, "{st}");
    let _ = devnet.0.kill();
}

/// Polls `GET path` on `port` until `pred` holds (30 s at most); the last answer.
fn poll(port: u16, path: &str, mut pred: impl FnMut(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = http(port, "GET", path, "", None);
        if pred(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An evaluator whose plugin dies on every evaluation (3 nodes, quorums of 2, so every claim
/// of the others needs it) finds out by probing a known-good point, leaves the domain's
/// quorums on chain (its bond stays), says so in `/status` and `/health`, and the others reach
/// a champion without it. Restarted with a domain that works, it rejoins on chain.
#[test]
fn an_evaluator_that_cannot_evaluate_leaves_its_quorums_and_rejoins_once_it_can() {
    let _serial = serial();
    if !python_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = base_port(60);
    let d = dir.path().to_str().unwrap();
    let dead = format!("2={}", fixture("dead.py"));
    let setup = devnet(&[
        "--nodes",
        "3",
        "--setup-only",
        "--base-port",
        &port.to_string(),
        "--dir",
        d,
        "--plugin",
        &dead,
    ]);
    let addresses = strings(&setup["addresses"]);
    let (tx, rx) = sync_channel(4096);
    let mut nodes: Vec<Killed> = (0..3).map(|i| node(dir.path(), i, &tx)).collect();
    let mut tips = vec![String::new(); 3];
    let left = wait_for(
        &rx,
        Some(2),
        Duration::from_secs(30),
        |l| l.starts_with("left quorums quadratic"),
        &mut tips,
    );
    assert!(
        left.as_deref().is_some_and(|l| l.contains("exit status: 3")),
        "node 2 left, naming the fault: {left:?}"
    );
    // (Read from node 0's chain, not its output: the champion may land before node 2 says it
    // left, and the target stops the search after it.)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, d) = http(port, "GET", "/domains", "", None);
        let quadratic =
            d["domains"].as_array().and_then(|ds| ds.iter().find(|x| x["domain_id"] == "quadratic").cloned());
        if quadratic.as_ref().is_some_and(|q| !q["champion"].is_null()) {
            break;
        }
        assert!(Instant::now() < deadline, "the others reached no champion without node 2 within 60 s: {d}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // On chain: node 2 is no longer an evaluator of the domain, and kept its bond.
    let account = format!("/accounts/{}", addresses[2]);
    let no_domain = |v: &serde_json::Value| v["domains"].as_array().is_some_and(|d| d.is_empty());
    let a = poll(port, &account, no_domain);
    assert!(no_domain(&a), "{a}");
    assert_eq!(a["stake"], "100000000000", "{a}");
    // It says so.
    let (_, status) = http(port + 4, "GET", "/status", "", None);
    assert_eq!(status["domains"]["quadratic"]["standing"], "withdrawn", "{status}");
    let (_, health) = http(port + 4, "GET", "/health", "", None);
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["reasons"].to_string().contains("cannot evaluate quadratic"), "{health}");

    // Restarted with the built-in domain: the probe succeeds and it rejoins.
    drop(nodes.remove(2));
    let config = dir.path().join("node2.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["domains"][0]["domain_plugin"] = serde_json::Value::Null;
    std::fs::write(&config, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    nodes.push(node(dir.path(), 2, &tx));
    let back = wait_for(
        &rx,
        Some(2),
        Duration::from_secs(30),
        |l| l.starts_with("rejoined quorums quadratic"),
        &mut tips,
    );
    assert!(back.is_some(), "node 2 rejoined after its restart");
    let has_domain = |v: &serde_json::Value| v["domains"].as_array().is_some_and(|d| d.len() == 1);
    let a = poll(port, &account, has_domain);
    assert!(has_domain(&a), "{a}");
    let status = poll(port + 4, "/status", |s| s["domains"]["quadratic"]["standing"] == "serving");
    assert_eq!(status["domains"]["quadratic"]["standing"], "serving", "{status}");
}

/// Three TPE nodes share their evaluated trials; the third publishes its trials with every
/// loss inflated by 1 000. The honest nodes learn each other's trials (their spot checks
/// agree, or the chain certified the sender's claim), catch the liar at its first check, and
/// use none of what it sent.
#[test]
fn nodes_learn_each_others_trials_and_catch_a_node_that_inflates_them() {
    let _serial = serial();
    let base = base_port(80);
    let port = base.to_string();
    let mut devnet = Killed(
        doin()
            .args(["devnet", "--nodes", "3", "--optimizer", "tpe", "--target", "-0.000001"])
            .args(["--duration", "60", "--base-port", &port, "--adversary", "2=inflate-trials"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", base + 2)).is_err() {
        assert!(Instant::now() < up, "the nodes' APIs never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..2u16 {
        let status = poll(base + 2 * i, "/status", |v| {
            let t = &v["domains"]["quadratic"]["shared_trials"];
            t["senders_banned"].as_u64() >= Some(1)
                && t["trusted_senders"].as_u64() >= Some(1)
                && t["used"].as_u64() > Some(0)
        });
        let t = &status["domains"]["quadratic"]["shared_trials"];
        assert_eq!(t["enabled"], true, "node {i}: {t}");
        assert_eq!(t["senders_banned"], 1, "node {i} caught the liar: {t}");
        assert_eq!(t["trusted_senders"], 1, "node {i} trusts the other honest node: {t}");
        // Trust comes from a spot check that agreed or from the chain (a certified claim of the
        // sender's); the liar may be vouched for too — its claims are honest, its trials are
        // not — and a check of its trials still catches it.
        assert!(t["used"].as_u64() > Some(0), "node {i}: {t}");
        assert!(
            t["checks_passed"].as_u64() >= Some(1) || t["vouched_senders"].as_u64() >= Some(1),
            "node {i}: {t}"
        );
        assert!(t["checks"].as_u64() >= Some(1), "node {i} measured the liar's claim: {t}");
        assert!(t["published"].as_u64() > Some(0), "node {i} shared its own: {t}");
        let (_, metrics) = http_text(base + 2 * i, "/metrics");
        assert!(
            metrics.contains("doin_shared_trial_senders{domain=\"quadratic\",state=\"banned\"} 1"),
            "{metrics}"
        );
    }
    let _ = devnet.0.kill();
}

/// Four SHADE nodes with a population of 40 run two islands of 20, two optimizers each (ranks
/// by address, docs/design.md §12d): every node shares trials with its island mate only — it
/// trusts or bans exactly one sender, never the other island's — and the node publishing
/// inflated trials is banned by its island mate alone.
#[test]
fn shade_islands_run_together_share_trials_within_the_island_only() {
    let _serial = serial();
    let base = base_port(100);
    let port = base.to_string();
    let mut devnet = Killed(
        doin()
            .args(["devnet", "--nodes", "4", "--optimizer", "shade", "--optimization", "population_size=40"])
            // A target no loss reaches (the quadratic's performance is at most 0): the loops
            // run the whole time (SHADE reaches any finite target in half a second).
            .args(["--target", "1", "--duration", "60", "--base-port", &port])
            .args(["--adversary", "2=inflate-trials"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", base + 6)).is_err() {
        assert!(Instant::now() < up, "the nodes' APIs never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The liar's mate may first trust it (the chain certifies its honest claims) and ban it at
    // a later check: wait for the settled picture.
    let honest = [0u16, 1, 3];
    let deadline = Instant::now() + Duration::from_secs(45);
    let seen = loop {
        let seen: Vec<serde_json::Value> = honest
            .iter()
            .map(|i| {
                http(base + 2 * i, "GET", "/status", "", None).1["domains"]["quadratic"]["shared_trials"]
                    .clone()
            })
            .collect();
        let count = |t: &serde_json::Value, k: &str| t[k].as_u64().unwrap_or(0);
        let settled = seen.iter().all(|t| {
            count(t, "published") > 0 && count(t, "trusted_senders") + count(t, "senders_banned") == 1
        }) && seen.iter().map(|t| count(t, "senders_banned")).sum::<u64>() == 1;
        if settled || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for (i, t) in honest.iter().zip(&seen) {
        assert!(t["published"].as_u64() > Some(0), "node {i} shares its own trials: {t}");
        let (trusted, ban) = (t["trusted_senders"].as_u64().unwrap(), t["senders_banned"].as_u64().unwrap());
        assert_eq!(trusted + ban, 1, "node {i} reads its island mate only: {seen:?}");
    }
    let banned: u64 = seen.iter().map(|t| t["senders_banned"].as_u64().unwrap()).sum();
    assert_eq!(banned, 1, "the liar's island mate bans it; the other island never reads it: {seen:?}");
    // Ten seconds on, the population converged (to the wire's grid): the honest mates' checks
    // of each other still agree, and they still learn each other's trials.
    std::thread::sleep(Duration::from_secs(10));
    let later: Vec<serde_json::Value> = honest
        .iter()
        .map(|i| {
            http(base + 2 * i, "GET", "/status", "", None).1["domains"]["quadratic"]["shared_trials"].clone()
        })
        .collect();
    let banned: u64 = later.iter().map(|t| t["senders_banned"].as_u64().unwrap()).sum();
    assert_eq!(banned, 1, "no honest node is banned at convergence: {later:?}");
    assert!(
        later.iter().zip(&seen).any(|(l, s)| l["used"].as_u64() > s["used"].as_u64()),
        "the honest island keeps learning: {later:?}"
    );
    let _ = devnet.0.kill();
}

fn http_text(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned()))
}

/// The PoUW seed's operator surface on a running devnet: `doin pouw stake-and-register` stakes
/// a new account as MINER + VERIFIER with the seed's preferences and prints the ticket once a
/// block holds it; a second stake supersedes it; `economic-status` shows the stake, its ticket
/// and preferences; `status` and `health-metrics` of a working node report measured figures;
/// a PEER-only stake, a non-stake transaction and an unknown ticket are refused by name.
#[test]
fn pouw_stake_and_register_returns_a_ticket_and_status_health_and_economics_are_measured() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(90);
    let (port, d) = (base.to_string(), dir.path().to_str().unwrap().to_owned());
    let mut devnet = Killed(
        doin()
            .args(["devnet", "--nodes", "2", "--target", "0.5", "--duration", "90", "--base-port", &port])
            .args(["--dir", &d])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node = format!("127.0.0.1:{base}");
    // node 0 mines: it claims, votes and generates blocks; wait for some of each.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(v) = run_json(&["pouw", "status", "--node", &node])
            && v["stats"]["blocks_mined"].as_u64() > Some(0)
            && v["stats"]["claims_accepted"].as_u64() > Some(0)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "node 0 mined nothing within 60 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status["role"], "MINER", "{status}");
    assert_eq!(status["roles"], serde_json::json!(["MINER", "VERIFIER", "EVALUATOR"]), "{status}");
    assert_eq!((status["is_running"].as_bool(), status["is_mining"].as_bool()), (Some(true), Some(true)));
    assert!(status["blockchain_height"].as_u64() > Some(0) && status["peer_count"].is_u64(), "{status}");
    let health = run_json(&["pouw", "health-metrics", "--node", &node]).unwrap();
    let rate = health["success_rate"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&rate), "{health}");
    assert!(health["cpu_usage"].as_f64() > Some(0.0) && health["memory_mb"].as_f64() > Some(1.0), "{health}");
    assert!(health["memory_usage"].as_f64().is_some_and(|m| m > 0.0 && m < 100.0), "{health}");
    assert!(["healthy", "degraded"].contains(&health["status"].as_str().unwrap()), "{health}");
    let mine = run_json(&["pouw", "economic-status", "--node", &node]).unwrap();
    assert_eq!(mine["is_staked"], true, "{mine}");
    assert!(mine["rewards"]["total"].as_f64() > Some(0.0), "node 0 earned rewards: {mine}");

    // A new account, funded by node 1, stakes as MINER and VERIFIER.
    let key = dir.path().join("miner.key");
    let k = run_json(&["keygen", "--out", key.to_str().unwrap()]).unwrap();
    let who = k["address"].as_str().unwrap().to_owned();
    let funder = dir.path().join("node1/node.key");
    let funder = funder.to_str().unwrap();
    run_json(&["wallet", "transfer", "--node", &node, "--key", funder, "--to", &who, "--amount", "20"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_json(&["wallet", "balance", "--node", &node, "--address", &who]).unwrap()["balance"]
        != "20000000000"
    {
        assert!(Instant::now() < deadline, "the funding transfer never landed");
        std::thread::sleep(Duration::from_millis(300));
    }
    let key = key.to_str().unwrap();
    let stake = |amount: &str, roles: &str, extra: &[&str]| {
        let mut args = vec![
            "pouw",
            "stake-and-register",
            "--node",
            &node,
            "--key",
            key,
            "--amount",
            amount,
            "--role",
            roles,
        ];
        args.extend_from_slice(extra);
        run_json(&args)
    };
    let ticket = stake(
        "5",
        "MINER,VERIFIER",
        &["--preferences", r#"{"gpu_memory": "8GB", "cpu_cores": 4, "bandwidth": "1Gbps"}"#],
    )
    .unwrap();
    assert_eq!(ticket["status"], "active", "{ticket}");
    assert_eq!(ticket["staker"], who.as_str());
    assert_eq!(ticket["roles"], serde_json::json!(["MINER", "VERIFIER", "EVALUATOR"]), "{ticket}");
    assert_eq!(ticket["stake_amount"], 5.0);
    assert!(ticket["block_height"].as_u64() > Some(0), "{ticket}");
    assert_eq!(ticket["preferences"]["gpu_mem_mb"], 8192, "{ticket}");
    assert_eq!(ticket["preferences"]["bandwidth_mbps"], 1000, "{ticket}");
    let first = ticket["ticket_id"].as_str().unwrap().to_owned();
    let econ = run_json(&["pouw", "economic-status", "--node", &node, "--address", &who]).unwrap();
    assert_eq!(
        (econ["is_staked"].as_bool(), econ["stake"]["ticket_id"].as_str()),
        (Some(true), Some(first.as_str()))
    );
    assert!(econ["balance"].as_f64().is_some_and(|b| b < 15.0 && b > 14.0), "20 − 5 − fees: {econ}");

    // A second stake adds to the first and takes over its ticket.
    let second = stake("1", "SUPERVISOR", &[]).unwrap();
    assert_eq!((second["status"].as_str(), second["stake_amount"].as_f64()), (Some("active"), Some(6.0)));
    assert_eq!(second["roles"], serde_json::json!(["SUPERVISOR", "MINER"]), "{second}");
    let old = run_json(&["pouw", "ticket", "--node", &node, &first]).unwrap();
    assert_eq!(old["status"], "superseded", "{old}");
    assert_eq!(old["current_ticket"], second["ticket_id"], "{old}");

    // Unstaking all of it ends the ticket.
    run_json(&["wallet", "unstake", "--node", &node, "--key", key, "--amount", "6"]).unwrap();
    let current = second["ticket_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = run_json(&["pouw", "ticket", "--node", &node, current]).unwrap();
        if t["status"] == "ended" {
            break;
        }
        assert!(Instant::now() < deadline, "the unstake never ended the ticket: {t}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let econ = run_json(&["pouw", "economic-status", "--node", &node, "--address", &who]).unwrap();
    assert_eq!(econ["is_staked"], false, "{econ}");
    assert!(econ["unbonding"][0]["amount"] == 6.0, "the stake unbonds: {econ}");

    // Refusals, by name.
    let e = stake("1", "PEER", &[]).unwrap_err();
    assert!(e.contains("needs no stake"), "{e}");
    let e = stake("1", "MINER", &["--preferences", r#"{"uptime_guarantee": 0.99}"#]).unwrap_err();
    assert!(e.contains("preferences.uptime_guarantee"), "{e}");
    let (code, body) = http(base, "GET", &format!("/pouw/ticket/{}", "ab".repeat(32)), "", None);
    assert_eq!((code, body["error"].as_str()), (404, Some("not_found")), "{body}");
    // A transaction of another kind is not a stake (refused before it reaches the mempool).
    let transfer = serde_json::json!({
        "chain_id": 1337, "sender": who, "nonce": 0, "max_fee": "20", "priority_fee": "1",
        "kind": {"type": "transfer", "to": who, "amount": "1"}, "signature": "00".repeat(64),
    });
    let (code, body) = http(base, "POST", "/pouw/stake_and_register", &transfer.to_string(), None);
    assert_eq!((code, body["error"].as_str()), (400, Some("not_a_stake")), "{body}");
    let _ = devnet.0.kill();
}
