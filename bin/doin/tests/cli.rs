//! The `doin` binary as a user runs it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

#[test]
fn bench_ledger_prints_one_json_line_with_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "ledger", "--blocks", "2", "--txs-per-block", "40", "--accounts", "30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bench"], "ledger");
    assert_eq!(v["blocks"], 2);
    assert_eq!(v["txs"], 80);
    assert!(v["tx_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["verify_batch_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["state_root"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_bench_arguments_are_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "ledger", "--accounts", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accounts at least 2"));
}

#[test]
fn snapshot_export_verify_import_round_trip() {
    use doin_consensus::testkit::TestNet;
    use doin_storage::{ChainStore, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut net = TestNet::new(6, 3, 1);
    for _ in 0..14 {
        net.voting_heartbeat(vec![]).unwrap();
    }
    let mut store = ChainStore::open(&data.join("chain.redb"), &net.spec, StoreOptions::default()).unwrap();
    store.import_many(&net.blocks, 4).unwrap();
    let checkpoint = store.finalized();
    assert_eq!(checkpoint.height, 6, "the stakers' votes finalized checkpoint 6");
    drop(store);
    let doin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_doin")).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let snap = dir.path().join("snap");
    let (ok, out, err) =
        doin(&["snapshot", "export", "--data-dir", data.to_str().unwrap(), "--out", snap.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["height"], checkpoint.height);
    assert_eq!(v["block_hash"], checkpoint.hash.to_string());
    let hash = checkpoint.hash.to_string();
    let (ok, out, err) =
        doin(&["snapshot", "verify", "--from", snap.to_str().unwrap(), "--expect-hash", &hash]);
    assert!(ok, "{err}");
    assert!(out.contains("\"verified\":true"));
    let fresh = dir.path().join("fresh");
    let (ok, out, err) = doin(&[
        "snapshot",
        "import",
        "--data-dir",
        fresh.to_str().unwrap(),
        "--from",
        snap.to_str().unwrap(),
        "--expect-hash",
        &hash,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&net.blocks[checkpoint.height as usize - 1].header.state_root.to_string()));
    // Importing again over the new store is refused with a reason.
    let (ok, _, err) = doin(&[
        "snapshot",
        "import",
        "--data-dir",
        fresh.to_str().unwrap(),
        "--from",
        snap.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    // A wrong trusted hash is refused.
    let (ok, _, err) =
        doin(&["snapshot", "verify", "--from", snap.to_str().unwrap(), "--expect-hash", &"ab".repeat(32)]);
    assert!(!ok);
    assert!(err.contains("was expected"), "{err}");
}

#[test]
fn bench_storage_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args([
            "bench",
            "storage",
            "--blocks",
            "3",
            "--txs-per-block",
            "20",
            "--group",
            "2",
            "--snapshot-accounts",
            "500",
        ])
        .args(["--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    for key in [
        "import_tx_per_s",
        "import_blocks_per_s",
        "snapshot_accounts",
        "snapshot_restore_s",
        "snapshot_restore_mb_per_s",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert_eq!(v["snapshot_accounts"], 500);
    assert_eq!(v["txs"], 60);
}

/// The late joiner's path over loopback libp2p: the joined store has the server's state root.
#[test]
fn bench_join_fetches_ties_and_imports_a_served_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "join", "--accounts", "500", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(v["same_state_root"], true, "{v}");
    assert!(v["records"].as_u64().unwrap() >= 500, "{v}");
    assert!(v["fetch_mb"].as_f64().unwrap() > 0.0 && v["join_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn bench_optimize_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "optimize", "--seeds", "1", "--dim", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(v["runs"], 1);
    assert_eq!(v["sphere_solved"], 1, "{v}");
    for key in ["ackley_solved", "rastrigin_solved", "rosenbrock_solved", "island_success", "single_success"]
    {
        assert!(v[key].is_u64(), "{key}: {v}");
    }
    assert!(v["overhead_ns_per_eval"].as_f64().unwrap() > 0.0);
    for history in [100, 300, 1_000] {
        assert!(v[format!("tpe_us_per_proposal_h{history}")].as_f64().is_some_and(|t| t > 0.0), "{v}");
    }
}

/// `doin bench search` runs the node's domain and optimizer to a target, per seed: on a coarse
/// 4-d Ackley target both optimizers get there, and the line says which ran; an unknown
/// optimizer is refused by name.
#[test]
fn bench_search_counts_evaluations_to_the_target() {
    let search = |optimizer: &str| {
        Command::new(env!("CARGO_BIN_EXE_doin"))
            .args([
                "bench", "search", "--domain", "ackley", "--dims", "4", "--target", "10", "--seeds", "2",
                "--budget", "2000",
            ])
            .args(["--optimizer", optimizer])
            .output()
            .unwrap()
    };
    for optimizer in ["tpe", "shade"] {
        let out = search(optimizer);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(v["ran"], optimizer, "{v}");
        assert_eq!(v["reached"], 2, "{v}");
        let median = v["median_evaluations_to_target"].as_u64().unwrap();
        assert!(median > 0 && median < 2000, "{v}");
        assert!(v["runs"].as_array().unwrap().iter().all(|r| r["best"].as_f64().unwrap() <= 10.0), "{v}");
    }
    let out = search("magic");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("magic"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A devnet on a directory that holds a previous devnet's chain is refused by name (its new
/// genesis would make the old nodes' stores refuse to start), and the old chain is untouched.
#[test]
fn a_devnet_refuses_a_directory_with_a_previous_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_doin"))
            .args([
                "devnet",
                "--nodes",
                "1",
                "--duration",
                "1",
                "--base-port",
                "23950",
                "--no-tracking",
                "--dir",
                d,
            ])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let genesis = std::fs::read(dir.path().join("genesis.json")).unwrap();
    let second = run();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("node0/chain.redb") && err.contains("previous devnet"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("genesis.json")).unwrap(), genesis, "the old genesis is kept");
}

#[test]
fn keygen_writes_an_owner_only_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.key");
    let run =
        || Command::new(env!("CARGO_BIN_EXE_doin")).args(["keygen", "--out"]).arg(&path).output().unwrap();
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["address"].as_str().unwrap().len(), 64);
    assert!(v["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn a_bad_node_config_stops_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (r#"{"port": 0}"#, "`port`"),
        (r#"{"quorum_min_evaluators": 99}"#, "`quorum_min_evaluators`"),
        (
            r#"{"domains": [{"domain_id": "quadratic", "target_performance": "high"}]}"#,
            "`domains[0].target_performance`",
        ),
        (
            r#"{"domains": [{"domain_id": "no_such_domain"}], "data_dir": "DATA"}"#,
            "unknown domain \"no_such_domain\"",
        ),
        // A top-level typo: it would have left the node without domains.
        (r#"{"domain": [{"domain_id": "quadratic"}]}"#, "`domain`: unknown key; did you mean `domains`?"),
        (
            r#"{"domains": [{"domain_id": "quadratic", "optimization_config": {"population_size": -50}}]}"#,
            "`domains[0].optimization_config.population_size`: -50 must be an integer in 4..=10000",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "optimization_config": {"population_size": "lots"}}]}"#,
            "`domains[0].optimization_config.population_size`",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "optimization_config": {"populaton_size": 10}}]}"#,
            "did you mean `population_size`?",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "optimization_plugin": "predictor"}]}"#,
            "Python system's in-process predictor plugin",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "inference_plugin": "x"}]}"#,
            "`domains[0].inference_plugin`",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "synthetic_data_plugin": "x"}]}"#,
            "`domains[0].synthetic_data_plugin`",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "param_bounds": {"lr": [0, 1]}}], "data_dir": "DATA"}"#,
            "param_bounds.\"lr\" is not a parameter of quadratic",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "param_bounds": {"p0": [-30, 0]}}], "data_dir": "DATA"}"#,
            "param_bounds.p0: [-30, 0] is outside the parameter's range [-20, 20]",
        ),
        (
            r#"{"domains": [{"domain_id": "mlp_digits", "param_bounds": {"hidden_units": [16.5, 64]}}], "data_dir": "DATA"}"#,
            "param_bounds.hidden_units: [16.5, 64]: an integer parameter takes integer bounds",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "param_bounds": {"p0": [1]}}]}"#,
            "`domains[0].param_bounds.p0`: [1]: must be [low, high]",
        ),
        (
            r#"{"domains": [{"domain_id": "quadratic", "optimize": false, "evaluate": false}]}"#,
            "would do nothing",
        ),
        (r#"{"data_dir": "DATA"}"#, "nothing to do"),
        (
            r#"{"domains": [{"domain_id": "quadratic"}], "listen_addresses": ["10.0.0.1:4001"], "port": 18790, "data_dir": "DATA"}"#,
            "`listen_addresses[0]`: \"10.0.0.1:4001\" is not a multiaddr",
        ),
        (r#"{"domains": [{"domain_id": "quadratic"}], "relay_server": "yes"}"#, "`relay_server`"),
        (r#"{"domains": [{"domain_id": "quadratic"}], "market_threads": 999}"#, "`market_threads`"),
        (r#"{"domains": [{"domain_id": "quadratic"}], "market_check_mem_mb": 0}"#, "`market_check_mem_mb`"),
        // A price on a domain without a model to serve: refused, not silently free.
        (
            r#"{"domains": [{"domain_id": "quadratic", "inference_price": 0.01}], "port": 18792, "data_dir": "DATA"}"#,
            "inference_price is set, but quadratic has no model",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.json"));
        std::fs::write(&path, text.replace("DATA", &dir.path().join("d").display().to_string())).unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_doin")).args(["node", "--config"]).arg(&path).output().unwrap();
        assert!(!out.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
    // `--reset-chain` with a config that fails later (an unknown domain) deletes nothing.
    let data = dir.path().join("kept");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("chain.redb"), b"a chain").unwrap();
    let path = dir.path().join("reset.json");
    let text =
        format!(r#"{{"data_dir": {:?}, "domains": [{{"domain_id": "no_such_domain"}}]}}"#, data.display());
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["node", "--reset-chain", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read(data.join("chain.redb")).unwrap(),
        b"a chain",
        "the chain survived the refused start"
    );
}

/// `param_bounds` narrows what the optimizer searches: every round's best candidate (recorded
/// in the experiment CSV with the bounds) lies inside them, where the domain's own range is
/// [-20, 20] in every parameter; the claims are committed and certified as usual.
#[test]
fn param_bounds_narrow_what_the_optimizer_searches() {
    let node = TrustedNode::with_domain(serde_json::json!({
        "param_bounds": { "p0": [5, 6], "p3": [-1, -0.5] },
        "target_performance": -1e-9,
        // Rounds of 8 candidates: many recorded before the fifth certificate.
        "optimization_config": { "population_size": 8 },
    }));
    let stats = node.dir.path().join("stats.csv");
    let (lines, csv) = node.run(
        certificates(5),
        // Rounds are recorded off the node's loop: wait for a few.
        || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let csv = std::fs::read_to_string(&stats).unwrap_or_default();
                if csv.lines().count() > 5 || Instant::now() > deadline {
                    return csv;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        },
    );
    assert!(certified(&lines) >= 5, "claims are certified: {lines:?}");
    let mut rows = 0;
    // The tracker appends while the file is read: only whole rows (up to the last newline) count.
    let whole = &csv[..csv.rfind('\n').map_or(0, |i| i + 1)];
    for line in whole.lines().skip(1) {
        // The first JSON array of a row is its `parameters` column (the round's best).
        let Some(start) = line.find("\"[") else { continue };
        let end = start + line[start..].find("]\"").unwrap();
        let params: Vec<f64> = serde_json::from_str(&line[start + 1..=end]).unwrap();
        assert!((5.0..=6.0).contains(&params[0]) && (-1.0..=-0.5).contains(&params[3]), "{params:?}");
        assert!(line.contains(r#""{""p0"":[5,6],""p3"":[-1,-0.5]}""#), "the bounds are recorded: {line}");
        rows += 1;
    }
    assert!(rows >= 3, "rounds were recorded: {csv}");
}

/// The command-line flags take effect over the config's values: `--port` (HTTP), `--data-dir`,
/// `--identity`, `--stats-file`, `--olap-db` and `--log-level`; an explicit `p2p_port` (not
/// `port + 1`) is where P2P listens, and a second node given it with `--peers` connects there to
/// the identity's peer id. A restart with `--log-level warn` on the same data dir logs no
/// debug or info lines and comes back on the same chain.
#[test]
fn command_line_flags_and_p2p_port_take_effect_over_the_config() {
    let p2p = free_port();
    let node = TrustedNode::with(|_, c| c["p2p_port"] = p2p.into());
    let d = node.dir.path();
    let key = d.join("flag.key");
    let out = Command::new(env!("CARGO_BIN_EXE_doin")).args(["keygen", "--out"]).arg(&key).output().unwrap();
    let identity: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (address, peer_id) = (identity["address"].as_str().unwrap(), identity["peer_id"].as_str().unwrap());
    let http = free_port();
    let (data, csv, cube) = (d.join("flag-data"), d.join("flag.csv"), d.join("flag.db"));
    let (http_s, data_s, key_s, csv_s, cube_s) = (
        http.to_string(),
        data.display().to_string(),
        key.display().to_string(),
        csv.display().to_string(),
        cube.display().to_string(),
    );
    let flags = [
        "--port",
        &http_s,
        "--data-dir",
        &data_s,
        "--identity",
        &key_s,
        "--stats-file",
        &csv_s,
        "--olap-db",
        &cube_s,
    ];
    let (lines, (status, dialer_peers)) =
        node.run_with(&[&flags[..], &["--log-level", "debug"]].concat(), certificates(3), || {
            let status = http_get(http, "/status");
            // A second node that knows the first only through `--peers HOST:P2P_PORT`.
            let dialer = TrustedNode::new();
            let peer = format!("127.0.0.1:{p2p}");
            let (_, peers) = dialer.run_with(
                &["--peers", &peer],
                |l| l.starts_with("http "),
                || {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        let peers = http_get(dialer.port, "/peers");
                        if peers.contains(peer_id) || Instant::now() > deadline {
                            return peers;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                },
            );
            (status, peers)
        });
    assert!(certified(&lines) >= 3, "{lines:?}");
    assert!(lines.contains(&format!("address {address}")), "--identity is the node's key: {lines:?}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["domains"]["quadratic"]["converged"], false, "--port serves the API: {status}");
    assert!(dialer_peers.contains(peer_id), "--peers reached p2p_port {p2p}: {dialer_peers}");
    assert!(data.join("genesis.json").is_file() && !d.join("data").exists(), "--data-dir holds the chain");
    assert!(std::fs::read_to_string(&csv).unwrap().lines().count() > 1, "--stats-file records rounds");
    assert!(std::fs::metadata(&cube).unwrap().len() > 0, "--olap-db holds the cube");
    let log = std::fs::read_to_string(node.stderr_path()).unwrap();
    assert!(log.contains(" DEBUG "), "--log-level debug: {}", &log[..log.len().min(2000)]);
    // Again on the same data dir, at `warn`: the same chain, and the log says no more than warnings.
    std::fs::write(node.stderr_path(), "").unwrap();
    let (again, ()) =
        node.run_with(&[&flags[..], &["--log-level", "warn"]].concat(), |l| l.starts_with("http "), || ());
    let genesis = |ls: &[String]| ls.iter().find(|l| l.starts_with("genesis ")).cloned();
    assert_eq!(genesis(&again), genesis(&lines), "the restart is on the same chain");
    let log = std::fs::read_to_string(node.stderr_path()).unwrap();
    assert!(!log.contains(" DEBUG ") && !log.contains(" INFO "), "--log-level warn: {log}");
}

/// `share_trials`: a TPE node publishes its trials on the domain's topic (counted in `/status`
/// even with no one listening); with `share_trials: false` it publishes none and takes none.
#[test]
fn share_trials_false_publishes_and_receives_nothing() {
    let shared = |share: bool| {
        // A target it never reaches: the optimizer (and what it publishes) keeps going.
        let node = TrustedNode::with_domain(serde_json::json!({
            "optimization_plugin": "tpe", "share_trials": share, "target_performance": -1e-9,
        }));
        let (lines, status) = node.run(certificates(3), || {
            // Batches leave at most once a second: wait for the first.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s: serde_json::Value = serde_json::from_str(&http_get(node.port, "/status")).unwrap();
                let t = s["domains"]["quadratic"]["shared_trials"].clone();
                if t["published"].as_u64() > Some(0) || Instant::now() > deadline {
                    return t;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        assert!(certified(&lines) >= 3, "{lines:?}");
        status
    };
    let on = shared(true);
    assert_eq!(on["enabled"], true, "{on}");
    assert!(on["published"].as_u64() > Some(0), "{on}");
    let off = shared(false);
    assert_eq!(off["enabled"], false, "{off}");
    assert_eq!((off["published"].as_u64(), off["received"].as_u64()), (Some(0), Some(0)), "{off}");
}

/// The default optimizer, `auto`, times its first evaluations and says what it chose (its log,
/// and `running` in `/status`): the quadratic domain's microsecond evaluations get SHADE (TPE
/// is for evaluations of 10 ms and more).
#[test]
fn auto_says_which_optimizer_it_chose() {
    let node = TrustedNode::new();
    // `/status` is refreshed by the node's periodic step: read it until the choice shows (10 s).
    let chosen_status = || {
        let mut status = String::new();
        for _ in 0..100 {
            status = http_get(node.port, "/status");
            if status.contains("\"running\":\"auto: ") && !status.contains("timing the first batch") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        status
    };
    let (lines, status) = node.run_with(&["--log-level", "info"], certificates(3), chosen_status);
    assert!(lines.iter().any(|l| l.starts_with("certificate quadratic")), "{lines:?}");
    let log = std::fs::read_to_string(node.stderr_path()).unwrap();
    let chosen = log.lines().find(|l| l.contains("optimizer chosen"));
    assert!(chosen.is_some_and(|l| l.contains("shade")), "{log}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let quadratic = &status["domains"]["quadratic"];
    assert_eq!(
        (&quadratic["optimizer"], &quadratic["running"]),
        (&"auto".into(), &"auto: shade".into()),
        "{status}"
    );
}

/// `optimization_plugin: "plugin:COMMAND"` runs the optimizer as a supervised plugin process:
/// the DEAP example optimizes the domain (its claims are certified) through the node's calls.
#[test]
fn an_optimizer_plugin_named_in_the_config_runs_the_search() {
    let probe = Command::new("python3").args(["-c", "import deap"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI must provide python3 with deap");
        eprintln!("skipping on this machine: python3 with deap not available");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/python/examples/deap_optimizer.py");
    let name = format!("plugin:python3 {}", script.display());
    let node = TrustedNode::with_domain(serde_json::json!({ "optimization_plugin": name }));
    let (lines, optimizer) = node.run(certificates(3), || {
        // The view is refreshed once a second: wait for a few generations' calls.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let plugins: serde_json::Value =
                serde_json::from_str(&http_get(node.port, "/api/plugins")).unwrap();
            let optimizer = plugins["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"].as_str().is_some_and(|n| n.contains("optimizer")))
                .cloned();
            if optimizer.as_ref().is_some_and(|o| o["calls"].as_u64() > Some(3)) || Instant::now() > deadline
            {
                return optimizer.unwrap_or_else(|| panic!("no optimizer process: {plugins}"));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert!(certified(&lines) >= 3, "{lines:?}");
    assert!(optimizer["calls"].as_u64() > Some(3) && optimizer["errors"] == 0, "{optimizer}");
}

/// `olap_db_path`: a node restarted with the cube its first run recorded starts its optimizer
/// from those rounds and the chain's optimae (the L3 warm start), says how many it learned, and
/// `doin analytics seeds` names that history; a first run has none.
#[test]
fn a_restarted_node_warm_starts_from_its_cube() {
    let node = TrustedNode::with(|d, c| {
        c["olap_db_path"] = d.join("cube.db").display().to_string().into();
        c["domains"][0]["target_performance"] = (-1e-9).into();
    });
    let (first, ()) = node.run(
        certificates(3),
        // Rounds reach the cube off the node's loop: give them a moment.
        || std::thread::sleep(Duration::from_secs(2)),
    );
    assert!(!first.iter().any(|l| l.starts_with("warm start")), "a first run has no history: {first:?}");
    // A moment after the warm start: its tracker writes what seeded the run.
    let (again, ()) =
        node.run(|l| l.starts_with("warm start"), || std::thread::sleep(Duration::from_secs(1)));
    let line = again.iter().find_map(|l| l.strip_prefix("warm start quadratic: ")).unwrap_or_default();
    let numbers: Vec<u64> =
        line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    // "N prior trials (R recorded rounds, C chain optimae)": both kinds of history taught.
    assert!(
        matches!(numbers[..], [n, r, c] if n == r + c && r > 0 && c > 0),
        "rounds and the chain's optimae seed the run: {again:?}"
    );
    // `doin analytics seeds` names the history that seeded the second run.
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["analytics", "seeds", "--source"])
        .arg(node.dir.path().join("cube.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["warm_starts"].as_array().unwrap();
    let of = |source: &str| -> u64 {
        rows.iter().filter(|r| r["source"] == source).map(|r| r["trials"].as_u64().unwrap()).sum()
    };
    assert_eq!((of("round"), of("chain")), (numbers[1], numbers[2]), "{v}");
    assert!(rows.iter().all(|r| r["domain_id"] == "quadratic"), "{v}");
}

/// `warm_start_from`: a domain declared similar seeds the warm start — a node whose first run
/// optimized `quadratic` (10 parameters in ±20), restarted on a new chain for `sphere` (10 in
/// ±100) with `warm_start_from: ["quadratic"]`, starts from quadratic's rounds; without a cube
/// the key is refused at start, naming it.
#[test]
fn a_declared_similar_domain_seeds_the_warm_start() {
    let node = TrustedNode::with(|d, c| {
        c["olap_db_path"] = d.join("cube.db").display().to_string().into();
        c["domains"][0]["target_performance"] = (-1e-9).into();
    });
    let config = node.dir.path().join("node.json");
    node.run(certificates(2), || std::thread::sleep(Duration::from_secs(2)));
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["domains"][0]["domain_id"] = "sphere".into();
    c["domains"][0]["warm_start_from"] = serde_json::json!(["quadratic"]);
    std::fs::write(&config, c.to_string()).unwrap();
    let (lines, ()) = node.run_with(&["--reset-chain"], |l| l.starts_with("warm start"), || ());
    let line = lines.iter().find_map(|l| l.strip_prefix("warm start sphere: ")).unwrap_or_default();
    let rounds: u64 = line
        .split_once(" recorded rounds")
        .and_then(|(head, _)| head.rsplit('(').next()?.parse().ok())
        .unwrap_or(0);
    assert!(rounds > 0 && line.ends_with("with quadratic)"), "quadratic's rounds seed sphere: {lines:?}");
    // The same key without a cube has nothing to read: refused, by name.
    c.as_object_mut().unwrap().remove("olap_db_path");
    std::fs::write(&config, c.to_string()).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_doin")).args(["node", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warm_start_from") && stderr.contains("olap_db_path"), "{stderr}");
}

/// `optimize: false`: the node follows its chain (heartbeats) but runs no optimizer — no
/// candidate evaluated, nothing committed (the same node optimizing commits within a second:
/// `a_single_trusted_node_records_unverified_champions`).
#[test]
fn a_domain_with_optimize_false_is_never_searched() {
    let node = TrustedNode::with_domain(serde_json::json!({ "optimize": false, "evaluate": true }));
    let (lines, status) = node.run(|l| l.starts_with("block 4 "), || http_get(node.port, "/status"));
    assert!(lines.iter().any(|l| l.starts_with("block 4 ")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("commit")), "{lines:?}");
    // Its development chain stakes it as the domain's evaluator: `evaluate: true` raises no warning.
    assert!(!lines.iter().any(|l| l.starts_with("warning")), "{lines:?}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["domains"]["quadratic"]["optimize"], false, "{status}");
    assert_eq!(status["domains"]["quadratic"]["evaluations"], 0, "{status}");
}

/// `evaluate: false` on a chain that stakes the node as the evaluator of a verified domain: the
/// node says that its quorums will wait for it (a trusted domain draws none: no warning).
#[test]
fn evaluate_false_while_staked_as_evaluator_is_reported() {
    let verified = serde_json::json!({ "evaluate": false, "synthetic_data_validation": true });
    let node = TrustedNode::with_domain(verified);
    let (lines, _) = node.run(|l| l.starts_with("block 1 "), || ());
    assert!(
        lines.iter().any(|l| l == "warning quadratic: staked as an evaluator but evaluate is false"),
        "{lines:?}"
    );
}

/// The whole response to `GET path` with extra request header lines.
fn http_raw(port: u16, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The HTTP and tracking keys take effect on a running node: past `http_burst` requests a
/// client is throttled (429) at `http_rate_limit`; `cors_origins` allows a listed origin and no
/// other; `olap_db_path` has the node write the cube that `/stats` serves.
#[test]
fn http_and_tracking_keys_take_effect_on_a_running_node() {
    let node = TrustedNode::with(|dir, config| {
        config["http_rate_limit"] = 1.into();
        config["http_burst"] = 20.into();
        config["cors_origins"] = serde_json::json!(["http://lab.example"]);
        config["olap_db_path"] = dir.join("olap.db").display().to_string().into();
    });
    let (_, (statuses, allowed, other, stats)) = node.run(
        |l| l.starts_with("certificate quadratic"),
        || {
            std::thread::sleep(Duration::from_secs(2));
            let stats = http_raw(node.port, "/stats", "");
            let allowed = http_raw(node.port, "/health", "Origin: http://lab.example\r\n");
            let other = http_raw(node.port, "/health", "Origin: http://elsewhere.example\r\n");
            let statuses: Vec<String> = (0..40)
                .map(|_| {
                    http_raw(node.port, "/health", "").split_whitespace().nth(1).unwrap_or("").to_owned()
                })
                .collect();
            (statuses, allowed, other, stats)
        },
    );
    let throttled = statuses.iter().filter(|s| *s == "429").count();
    assert!(throttled >= 15, "a burst of 20 at 1/s lets about 20 of 43 through: {statuses:?}");
    assert!(statuses[..10].iter().all(|s| s == "200"), "{statuses:?}");
    let allowed = allowed.to_ascii_lowercase();
    assert!(allowed.contains("access-control-allow-origin: http://lab.example"), "{allowed}");
    assert!(!other.to_ascii_lowercase().contains("access-control-allow-origin"), "{other}");
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    assert!(node.dir.path().join("olap.db").exists());
}

/// A single node in trusted mode (`synthetic_data_validation: false`, target −100) on a free
/// port, without a genesis file: its own development chain.
struct TrustedNode {
    dir: tempfile::TempDir,
    port: u16,
}

impl TrustedNode {
    fn new() -> Self {
        Self::with_domain(serde_json::json!({}))
    }

    /// [`TrustedNode::new`] with these keys set in its domain's entry, and the experiment
    /// recorded to `stats.csv`.
    fn with_domain(keys: serde_json::Value) -> Self {
        Self::with(|_, config| {
            for (k, v) in keys.as_object().unwrap() {
                config["domains"][0][k] = v.clone();
            }
        })
    }

    /// [`TrustedNode::new`] with its config (recording the experiment to `stats.csv`) edited
    /// by `edit`, which gets the node's directory.
    fn with(edit: impl FnOnce(&std::path::Path, &mut serde_json::Value)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = serde_json::json!({
            "host": "127.0.0.1", "port": port, "p2p_port": port + 1, "data_dir": dir.path().join("data"),
            "max_block_interval": 0.5, "seal_slot": 0.2,
            "domains": [{ "domain_id": "quadratic", "optimize": true, "evaluate": false,
                          "synthetic_data_validation": false, "target_performance": -100.0 }]
        });
        let mut config = config;
        config["experiment_stats_file"] = dir.path().join("stats.csv").display().to_string().into();
        edit(dir.path(), &mut config);
        std::fs::write(dir.path().join("node.json"), config.to_string()).unwrap();
        Self { dir, port }
    }

    /// Where [`TrustedNode::run_with`] writes the node's log (appended run after run).
    fn stderr_path(&self) -> std::path::PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Runs the node until `until` matches a line (at most 60 s); returns its lines, and what
    /// `query` read just before the node was stopped.
    fn run<T>(&self, until: impl Fn(&str) -> bool, query: impl FnOnce() -> T) -> (Vec<String>, T) {
        self.run_with(&[], until, query)
    }

    /// [`TrustedNode::run`] with extra `doin node` arguments.
    fn run_with<T>(
        &self,
        extra: &[&str],
        until: impl Fn(&str) -> bool,
        query: impl FnOnce() -> T,
    ) -> (Vec<String>, T) {
        use std::io::{BufRead, BufReader};
        // The node's log goes to `stderr.log` in its directory (`warn` unless `extra` says).
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.stderr_path()).unwrap();
        let level: &[&str] = if extra.contains(&"--log-level") { &[] } else { &["--log-level", "warn"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_doin"))
            .args(["node", "--duration", "60"])
            .args(level)
            .args(extra)
            .arg("--config")
            .arg(self.dir.path().join("node.json"))
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // Read on a thread that keeps draining: a closed pipe would kill the node at its next line.
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.try_send(line);
            }
        });
        let mut lines = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
            let done = until(&line);
            lines.push(line);
            if done {
                break;
            }
        }
        // A node that exited on its own (its output closed before `until` matched) failed: say
        // why, from its log, rather than letting `query` read a node that is gone.
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            panic!(
                "the node exited ({status}) before the test was done\nstdout: {lines:?}\nlog:\n{}",
                tail.join("\n")
            );
        }
        let answer = query();
        let _ = child.kill();
        let _ = child.wait();
        (lines, answer)
    }
}

/// `synthetic_data_validation: false` on a single node: no quorum exists, yet claims become
/// champions through heartbeat blocks, marked trusted in the output and in `/domains`, and earn
/// nothing.
#[test]
fn a_single_trusted_node_records_unverified_champions() {
    let node = TrustedNode::new();
    let (lines, domains) =
        node.run(|l| l.starts_with("target quadratic reached"), || http_get(node.port, "/domains"));
    let text = lines.join("\n");
    assert!(text.contains("target quadratic reached"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("trusted quadratic")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("warning")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("certificate quadratic") && l.contains("Accept trusted")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("vote")), "no quorum votes: {text}");
    // The target line says after how many evaluations the winning claim was seen: at least the
    // count its commit was made after, at most the count when the target was reached.
    let target = text.lines().find(|l| l.starts_with("target quadratic reached")).unwrap();
    let field = |line: &str, key: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == key).unwrap_or_else(|| panic!("no {key}: {line}"));
        words[at + 1].parse().unwrap_or_else(|_| panic!("{key} is not a count: {line}"))
    };
    let (claimed_after, evaluations) = (field(target, "claimed_after"), field(target, "evaluations"));
    let winner = text
        .lines()
        .take_while(|l| !l.starts_with("target quadratic reached"))
        .filter(|l| l.starts_with("champion quadratic "))
        .last()
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no champion line: {text}"));
    // Trusted: the champion's figure is its claim.
    let commit = text
        .lines()
        .find(|l| l.starts_with("commit quadratic ") && l.contains(&format!(" claimed {winner} ")))
        .unwrap_or_else(|| panic!("no commit claiming {winner}: {text}"));
    let committed_after = field(commit, "after");
    assert!(
        (1..=evaluations).contains(&claimed_after) && committed_after <= claimed_after,
        "commit after {committed_after}, claimed_after {claimed_after}, evaluations {evaluations}: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&domains).unwrap();
    let d = &v["domains"][0];
    assert_eq!(d["verification"], "trusted", "{v}");
    assert!(d["champion"]["performance"].as_f64().unwrap() >= -100.0, "{v}");
}

/// Without a `genesis` file the node writes its development genesis to the data directory and
/// reads it back: restarted, it is on the same chain, further along; restarted with
/// `--reset-chain`, on a new development chain, which later restarts keep. Once the verified champion
/// reaches `target_performance` the optimizer stops evaluating.
#[test]
fn a_node_without_genesis_restarts_on_its_chain_and_stops_at_its_target() {
    let node = TrustedNode::new();
    let port = node.port;
    let evaluations = || -> u64 {
        let v: serde_json::Value = serde_json::from_str(&http_get(port, "/status")).unwrap();
        v["domains"]["quadratic"]["evaluations"].as_u64().unwrap()
    };
    let tip = || -> Option<u64> {
        let h: serde_json::Value = serde_json::from_str(&http_get(port, "/chain/status")).unwrap_or_default();
        h["tip_index"].as_u64()
    };
    let (first, (before, after, height)) = node.run(
        |l| l.starts_with("target quadratic reached"),
        || {
            // After the target: the optimizer is paused, its evaluation count frozen.
            std::thread::sleep(Duration::from_millis(1500));
            let a = evaluations();
            std::thread::sleep(Duration::from_millis(1500));
            (a, evaluations(), tip().unwrap())
        },
    );
    let genesis = |lines: &[String]| lines.iter().find_map(|l| l.strip_prefix("genesis ").map(str::to_owned));
    let g1 = genesis(&first).expect("the node printed its genesis");
    assert!(before > 0, "it evaluated before the target");
    assert_eq!(before, after, "no evaluations after the target");
    assert!(node.dir.path().join("data/genesis.json").exists());
    // Restarted on its data directory: the same chain, from where it stopped.
    let grown = |l: &str| {
        l.strip_prefix("block ")
            .and_then(|r| r.split(' ').next()?.parse::<u64>().ok())
            .is_some_and(|h| h > height)
    };
    let (second, now) = node.run(grown, tip);
    assert_eq!(genesis(&second).as_deref(), Some(g1.as_str()), "restarted on another chain: {second:?}");
    assert!(now.is_some_and(|t| t > height), "the chain continued from {height}: {now:?} {second:?}");
    // `--reset-chain` throws the chain away: a new development genesis (written over the old
    // one, so a later restart stays on it), from block 0.
    let (third, ()) = node.run_with(&["--reset-chain"], |l| l.starts_with("block "), || ());
    let g3 = genesis(&third).expect("the node printed its genesis");
    assert_ne!(g3, g1, "a new chain: {third:?}");
    assert!(
        third.iter().any(|l| l.starts_with(&format!("block 0 {g3}"))),
        "from its genesis block: {third:?}"
    );
    let (fourth, ()) = node.run(|l| l.starts_with("block "), || ());
    assert_eq!(genesis(&fourth), Some(g3), "restarted on the reset chain: {fourth:?}");
}

/// A stop condition for [`TrustedNode::run`]: the `n`th certificate of the quadratic domain.
fn certificates(n: usize) -> impl Fn(&str) -> bool {
    let seen = std::cell::Cell::new(0);
    move |l| {
        seen.set(seen.get() + usize::from(l.starts_with("certificate quadratic")));
        seen.get() >= n
    }
}

/// The certificate lines among a run's `lines`.
fn certified(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.starts_with("certificate quadratic")).count()
}

/// A loopback port free right now, whose next port is free too (a node's `p2p_port` defaults
/// to `port + 1`), and never handed out twice in this process: the tests run in parallel, and a
/// port another test's node was given but has not bound yet looks free.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        // Neither it nor its neighbours were given (each given port holds its `+ 1` too).
        let taken = given.iter().any(|g| g.abs_diff(port) <= 1);
        if port == u16::MAX || taken || std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    panic!("no free pair of loopback ports in 1000 tries");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// `doin devnet --optimization KEY=VALUE` reaches every node's config file (the genesis and
/// the nodes must agree on the domain's dimensions), and a malformed one is refused first.
#[test]
fn devnet_optimization_settings_reach_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["devnet", "--nodes", "2", "--domain", "rastrigin", "--optimization", "n_params=7"])
        .args(["--setup-only", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..2 {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("node{i}.json"))).unwrap())
                .unwrap();
        assert_eq!(config["domains"][0]["optimization_config"]["n_params"], 7, "node {i}: {config}");
    }
    let genesis = std::fs::read_to_string(dir.path().join("genesis.json")).unwrap();
    assert_eq!(genesis.matches("\"continuous\"").count(), 7, "a 7-dimensional domain on chain: {genesis}");
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["devnet", "--optimization", "n_params", "--setup-only", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--optimization \"n_params\": expected KEY=VALUE"));
}

/// `doin plugin-guard` (how a node starts its plugins) kills the plugin's whole group when the
/// node dies by `kill -9`, a wrapper's background children included.
#[test]
fn a_plugin_group_dies_with_its_node() {
    use std::io::BufRead;
    let doin = env!("CARGO_BIN_EXE_doin");
    // The shell stands in for the node: it starts the guard as a group leader (setsid), as
    // the node does, prints its pid and waits.
    let script = format!(
        "setsid {doin} plugin-guard --parent $$ -- sh -c 'sleep 300 & exec sleep 301' & echo $!; wait"
    );
    let mut node =
        Command::new("sh").args(["-c", &script]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(node.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let group: u32 = line.trim().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while doin_plugin::host::group_members(group).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(doin_plugin::host::group_members(group).len(), 3, "guard, sleep and its sibling");
    node.kill().unwrap();
    node.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !doin_plugin::host::group_members(group).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        doin_plugin::host::group_members(group).is_empty(),
        "left behind: {:?}",
        doin_plugin::host::group_members(group)
    );
}

/// `doin bench fl` prints one JSON line with the figures issue 21 names, every rule's row, and
/// the default rule outlasting FedAvg under the sign-flip attack (a short run: 6 rounds, one
/// seed, 1 MB updates for the timing).
#[test]
fn bench_fl_prints_every_rule_and_the_default_outlasts_fedavg_under_attack() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "fl", "--seeds", "1", "--rounds", "6", "--update-mb", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap()).unwrap();
    for key in ["clean_accuracy", "attacked_accuracy", "alie_accuracy", "round_overhead_ms"] {
        assert!(v[key].as_f64().is_some(), "{key}: {v}");
    }
    for rule in ["fedavg", "coordinate_median", "trimmed_mean", "krum", "multikrum", "loss_scored"] {
        assert!(v["rules"][rule]["sign_flip"].as_f64().is_some(), "{rule}: {v}");
    }
    let (ours, fedavg) =
        (v["attacked_accuracy"].as_f64().unwrap(), v["rules"]["fedavg"]["sign_flip"].as_f64().unwrap());
    assert!(ours > fedavg + 0.3, "loss-scored {ours} vs FedAvg {fedavg} under attack: {v}");
    assert!(v["aggregate_100_updates"]["loss_scored_s"].as_f64().unwrap() > 0.0, "{v}");
    let bad =
        Command::new(env!("CARGO_BIN_EXE_doin")).args(["bench", "fl", "--rounds", "0"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--rounds"));
}
