//! Tracking from round one into the CSV and the cube, chain rows across a reorg, and databases
//! that cannot be written.

use std::collections::BTreeMap;

use doin_tracking::{
    ChainContribution, ChainOptimae, Experiment, Olap, PriorSource, Round, Tracker, WarmSeed, csv::COLUMNS,
    olap::StatsReader,
};

fn experiment() -> Experiment {
    Experiment {
        experiment_id: "e1".into(),
        domain_id: "quadratic".into(),
        node_id: "n1".into(),
        hostname: "h".into(),
        optimizer_plugin: "shade".into(),
        performance_metric: "performance".into(),
        higher_is_better: true,
        optimization_config: "{}".into(),
        param_bounds: "{\"x\": [-20, 20]}".into(),
        target_performance: Some(-100.0),
        started_ms: 1_000_000,
        doin_version: "0.1.0".into(),
        config_hash: "ab".into(),
    }
}

fn round(n: u64, perf: f64) -> Round {
    Round {
        experiment_id: "e1".into(),
        round_number: n,
        timestamp_ms: 1_000_000 + n * 500,
        performance: Some(perf),
        best_performance: Some(perf),
        parameters: "[1.5, \"a,b\"]".into(),
        best_parameters: "[1.5]".into(),
        chain_height: n,
        peers_count: 2,
        population_size: 4,
        metrics: BTreeMap::from([("test_mae".to_owned(), 0.25)]),
        ..Round::default()
    }
}

fn cert(height: u64, hash: &str, i: u32, optimizer: &str, outcome: &str) -> ChainOptimae {
    ChainOptimae {
        block_height: height,
        block_hash: hash.into(),
        cert_index: i,
        timestamp_ms: 1_000_000 + height,
        commit_id: format!("c{height}{i}"),
        domain_id: "quadratic".into(),
        optimizer: optimizer.into(),
        outcome: outcome.into(),
        reported_performance: -50.0,
        verified_performance: -51.0,
        improved: outcome == "Accept",
        effective_increment: 0.1,
        quorum_agreement: 1.0,
        reward: 3.25,
        experiment_id: "e1".into(),
        config_hash: "ab".into(),
        parameters: if outcome == "Accept" { format!("[{height}.5, 1]") } else { String::new() },
    }
}

#[test]
fn rounds_are_written_from_round_one_to_csv_and_cube() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, db) = (dir.path().join("out/stats.csv"), dir.path().join("olap.db"));
    let (t, problems) = Tracker::start(Some(csv.clone()), Some(db.clone()));
    assert!(problems.is_empty());
    t.experiment(experiment());
    for (n, p) in [(1, -900.0), (2, -400.0), (3, -120.0), (4, -90.0), (5, -95.0)] {
        t.round(round(n, p));
    }
    t.flush();

    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], COLUMNS.join(","), "header");
    assert_eq!(lines.len(), 6, "header and five rounds");
    assert!(lines[1].starts_with("e1,e1-1,quadratic,n1,"), "{}", lines[1]);
    assert!(lines[1].contains("\"[1.5, \"\"a,b\"\"]\""), "quoted: {}", lines[1]);

    let r = StatsReader::new(db.clone());
    let rounds = r.rounds(Some("e1"), 10).unwrap();
    let rows = rounds["rounds"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[4]["round_number"], 1, "round one is there (newest first)");
    assert_eq!(rows[4]["test_mae"], 0.25);
    let s = r.summary().unwrap();
    let q = &s["quadratic"];
    assert_eq!(q["total_rounds"], 5);
    assert_eq!(q["best_performance"], -90.0);
    assert_eq!(q["time_to_target_seconds"], 2.0, "round 4 at +2 s reached -100");
    assert_eq!(q["converged"], 1);
    let exps = r.experiments().unwrap();
    assert_eq!(exps["experiments"][0]["experiment_id"], "e1");
    assert_eq!(exps["experiments"][0]["param_bounds"], "{\"x\": [-20, 20]}");

    // A consistent copy opens as a database with the same rows.
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, b"an older copy, replaced").unwrap();
    r.export_to(&copy, |_| {}).unwrap();
    let c = rusqlite::Connection::open(&copy).unwrap();
    let n: i64 = c.query_row("SELECT COUNT(*) FROM fact_round", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 5);
    let v: i64 = c.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, doin_tracking::SCHEMA_VERSION);
}

fn contribution(height: u64, hash: &str, i: u32, who: &str, payout: f64) -> ChainContribution {
    ChainContribution {
        block_height: height,
        block_hash: hash.into(),
        contribution_index: i,
        domain_id: "fl_digits".into(),
        round: height,
        contributor: who.into(),
        quality: 0.01,
        kept: payout > 0.0,
        compute_ms: 100,
        samples: 50,
        bytes: 36_136,
        uptime: 1.0,
        payout,
        ..ChainContribution::default()
    }
}

#[test]
fn a_reorg_removes_the_orphaned_chain_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("olap.db");
    let mut o = Olap::open(&db).unwrap();
    o.apply_chain(
        0,
        &[cert(1, "a1", 0, "alice", "Accept"), cert(2, "a2", 0, "bob", "Accept")],
        &[
            contribution(1, "a1", 0, "dan", 0.6),
            contribution(1, "a1", 1, "eve", 0.0),
            contribution(2, "a2", 0, "dan", 0.5),
        ],
    )
    .unwrap();
    o.apply_chain(3, &[cert(3, "a3", 0, "alice", "Reject")], &[]).unwrap();
    // A fork from height 2: a2 and a3 are orphaned, b2 and b3 replace them.
    let fork = [contribution(2, "b2", 0, "dan", 0.25), contribution(3, "b3", 0, "fay", 1.0)];
    o.apply_chain(2, &[cert(2, "b2", 0, "carol", "Accept"), cert(3, "b3", 0, "carol", "Accept")], &fork)
        .unwrap();
    // Re-applying the same rows changes nothing.
    o.apply_chain(2, &[cert(2, "b2", 0, "carol", "Accept"), cert(3, "b3", 0, "carol", "Accept")], &fork)
        .unwrap();
    let r = StatsReader::new(db);
    let m = r.chain_metrics(Some("quadratic")).unwrap();
    let hashes: Vec<&str> =
        m["recent"].as_array().unwrap().iter().map(|x| x["block_hash"].as_str().unwrap()).collect();
    assert_eq!(hashes, ["b3", "b2", "a1"]);
    let per: BTreeMap<String, i64> = m["per_optimizer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["optimizer"].as_str().unwrap().to_owned(), x["accepted"].as_i64().unwrap()))
        .collect();
    assert_eq!(per, BTreeMap::from([("alice".to_owned(), 1), ("carol".to_owned(), 2)]));
    // Federated contributions: a2's is gone, b2's and b3's counted once.
    let m = r.chain_metrics(Some("fl_digits")).unwrap();
    let paid: BTreeMap<String, (i64, f64)> = m["per_contributor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["contributor"].as_str().unwrap().to_owned(),
                (x["rounds"].as_i64().unwrap(), x["payouts"].as_f64().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        paid,
        BTreeMap::from([
            ("dan".to_owned(), (2, 0.85)),
            ("eve".to_owned(), (1, 0.0)),
            ("fay".to_owned(), (1, 1.0))
        ])
    );
}

#[test]
fn unusable_databases_are_reported_and_tracking_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be: cannot be opened.
    let bad = dir.path().join("olap.db");
    std::fs::create_dir_all(&bad).unwrap();
    let csv = dir.path().join("stats.csv");
    let (t, problems) = Tracker::start(Some(csv.clone()), Some(bad.clone()));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].to_string().contains("olap.db"), "{}", problems[0]);
    t.experiment(experiment());
    t.round(round(1, -5.0));
    t.flush();
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 2, "the CSV still gets its row");

    // A database locked by another writer: the write fails, is counted, and nothing is lost
    // from what was stored before.
    let db = dir.path().join("locked.db");
    let (t, problems) = Tracker::start(None, Some(db.clone()));
    assert!(problems.is_empty());
    t.experiment(experiment());
    t.round(round(1, -5.0));
    t.flush();
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    t.round(round(2, -4.0));
    t.flush();
    assert!(t.stats.errors.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    locker.execute_batch("COMMIT").unwrap();
    t.round(round(3, -3.0));
    t.flush();
    let r = StatsReader::new(db);
    let numbers: Vec<i64> = r.rounds(Some("e1"), 10).unwrap()["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["round_number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 1], "round 2 was refused while locked; 1 and 3 are intact");
}

/// A domain's recorded rounds come back as prior trials, newest first, bounded, only the
/// domain asked for and only rounds that measured something.
#[test]
fn prior_trials_are_the_domains_measured_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cube.db");
    let mut olap = Olap::open(&path).unwrap();
    let x = experiment();
    for n in 1..=5 {
        olap.record_round(&x, &round(n, n as f64)).unwrap();
    }
    olap.record_round(&x, &Round { performance: None, ..round(6, 0.0) }).unwrap();
    let mut other = experiment();
    (other.experiment_id, other.domain_id) = ("e2".into(), "sphere".into());
    olap.record_experiment(&other).unwrap();
    olap.record_round(&other, &Round { experiment_id: "e2".into(), ..round(7, 9.0) }).unwrap();
    // The chain's optimae with their parameters (a row recorded before the column: none).
    olap.apply_chain(
        1,
        &[
            cert(1, "h1", 0, "a1", "Accept"),
            cert(2, "h2", 0, "a2", "Reject"),
            cert(3, "h3", 0, "a3", "Accept"),
        ],
        &[],
    )
    .unwrap();
    let trials = Olap::prior_trials(&path, "quadratic", 3).unwrap();
    let got: Vec<(f64, PriorSource, &str)> =
        trials.iter().map(|t| (t.performance, t.source, t.source_id.as_str())).collect();
    assert_eq!(
        got,
        [
            (5.0, PriorSource::Round, "e1"),
            (4.0, PriorSource::Round, "e1"),
            (3.0, PriorSource::Round, "e1"),
            (-51.0, PriorSource::Chain, "a3"),
            (-51.0, PriorSource::Chain, "a1"),
        ]
    );
    assert_eq!(trials[0].parameters, "[1.5, \"a,b\"]");
    assert_eq!(trials[3].parameters, "[3.5, 1]");
    assert!(Olap::prior_trials(&path, "none", 3).unwrap().is_empty());
    // What seeded a run is recorded and read back by experiment.
    let seeds = [
        WarmSeed { source: PriorSource::Round, source_id: "e1".into(), trials: 3 },
        WarmSeed { source: PriorSource::Chain, source_id: "a3".into(), trials: 1 },
    ];
    olap.record_warm_start("e9", &seeds).unwrap();
    let rows = Olap::warm_starts(&path, Some("e9")).unwrap();
    let sources: Vec<(&str, &str, i64)> = rows
        .iter()
        .map(|r| {
            (r["source"].as_str().unwrap(), r["source_id"].as_str().unwrap(), r["trials"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(sources, [("chain", "a3", 1), ("round", "e1", 3)]);
    assert!(Olap::warm_starts(&path, Some("e1")).unwrap().is_empty());
}

/// A cube of schema version 1 (chain optimae without parameters) is upgraded in place when a
/// node opens it: its rows stay, the column is added, the version recorded.
#[test]
fn a_version_one_cube_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cube.db");
    {
        let conn = doin_tracking::rusqlite::Connection::open(&path).unwrap();
        let v1 = doin_tracking::olap::SCHEMA
            .replace("    parameters TEXT NOT NULL DEFAULT '',\n", "")
            .replace("CREATE TABLE IF NOT EXISTS schema_version", "CREATE TABLE schema_version");
        conn.execute_batch(&v1).unwrap();
        conn.execute("INSERT INTO schema_version (version) VALUES (1)", []).unwrap();
        conn.execute(
            "INSERT INTO fact_chain_optimae VALUES ('h', 0, 1, 't', 'c', 'quadratic', 'a', 'Accept', 1, 1, 1, 0, 1, 0, 'e', 'x')",
            [],
        )
        .unwrap();
    }
    let mut olap = Olap::open(&path).unwrap();
    olap.apply_chain(2, &[cert(2, "h2", 0, "a2", "Accept")], &[]).unwrap();
    drop(olap);
    let conn = doin_tracking::rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, doin_tracking::olap::SCHEMA_VERSION);
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT block_height, parameters FROM fact_chain_optimae ORDER BY block_height")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(1, String::new()), (2, "[2.5, 1]".into())]);
}
