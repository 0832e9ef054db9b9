//! `doin analytics sync` against a real PostgreSQL server (`.ci/run` starts one on loopback
//! with `scripts/pg_test_server.sh` and sets `DOIN_TEST_POSTGRES`): every table round-trips, a
//! second run changes nothing, a reorg's orphaned chain rows are deleted, and the acceptance
//! queries answer the same in both databases.

use std::{collections::BTreeMap, process::Command};

use doin_tracking::{
    ChainContribution, ChainOptimae, Experiment, Olap, PriorSource, Round, Tracker, WarmSeed,
    olap::TABLES,
    rusqlite::{self, types::ValueRef},
};

fn postgres_url() -> Option<String> {
    match std::env::var("DOIN_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("DOIN_REQUIRE_POSTGRES").is_err(),
                "DOIN_REQUIRE_POSTGRES is set but DOIN_TEST_POSTGRES is not"
            );
            eprintln!("skipped: set DOIN_TEST_POSTGRES (scripts/pg_test_server.sh prints one)");
            None
        }
    }
}

fn cert(height: u64, hash: &str, optimizer: &str, outcome: &str) -> ChainOptimae {
    ChainOptimae {
        block_height: height,
        block_hash: hash.into(),
        cert_index: 0,
        timestamp_ms: 1_795_000_000_000 + height * 1000,
        commit_id: format!("c-{hash}"),
        domain_id: "quadratic".into(),
        optimizer: optimizer.into(),
        outcome: outcome.into(),
        reported_performance: -40.0 - height as f64,
        verified_performance: -41.125 - height as f64,
        improved: outcome == "Accept",
        effective_increment: 0.1 / 3.0,
        quorum_agreement: 2.0 / 3.0,
        reward: 32.5,
        experiment_id: "e1".into(),
        config_hash: "cafe".into(),
        parameters: format!("[{height}.5, 2]"),
    }
}

/// A cube with two experiments, their rounds and a short chain.
fn source(dir: &std::path::Path) -> std::path::PathBuf {
    let db = dir.join("olap.db");
    let (t, problems) = Tracker::start(None, Some(db.clone()));
    assert!(problems.is_empty());
    for (id, node) in [("e1", "alice"), ("e2", "bob")] {
        t.experiment(Experiment {
            experiment_id: id.into(),
            domain_id: "quadratic".into(),
            node_id: node.into(),
            hostname: "h".into(),
            optimizer_plugin: "shade".into(),
            performance_metric: "performance".into(),
            higher_is_better: true,
            optimization_config: "{\"population_size\": 8}".into(),
            param_bounds: "{}".into(),
            target_performance: Some(-100.0),
            started_ms: 1_795_000_000_000,
            doin_version: "0.1.0".into(),
            config_hash: "cafe".into(),
        });
        for n in 1..=30u64 {
            t.round(Round {
                experiment_id: id.into(),
                round_number: n,
                timestamp_ms: 1_795_000_000_000 + n * 333,
                performance: Some(-1000.0 / n as f64),
                best_performance: Some(-1000.0 / n as f64),
                parameters: format!("[{n}.5, \"x,y\"]"),
                best_parameters: "[]".into(),
                chain_height: n,
                peers_count: 3,
                block_reward_earned: n as f64 * 0.1,
                population_size: 4,
                metrics: BTreeMap::from([("val_mae".to_owned(), 1.0 / n as f64)]),
                ..Round::default()
            });
        }
    }
    t.flush();
    drop(t);
    let mut o = Olap::open(&db).unwrap();
    o.apply_chain(
        0,
        &[cert(1, "a1", "alice", "Accept"), cert(2, "a2", "bob", "Accept"), cert(3, "a3", "bob", "Reject")],
        &[contribution(1, "a1", 0, "dan"), contribution(1, "a1", 1, "eve"), contribution(2, "a2", 0, "dan")],
    )
    .unwrap();
    // e2's optimizer was seeded by e1's rounds and alice's certificate.
    let seeds = [
        WarmSeed { source: PriorSource::Round, source_id: "e1".into(), trials: 30 },
        WarmSeed { source: PriorSource::Chain, source_id: "alice".into(), trials: 1 },
    ];
    o.record_warm_start("e2", &seeds).unwrap();
    db
}

/// A contribution to a federated round recorded at `height`.
fn contribution(height: u64, hash: &str, i: u32, who: &str) -> ChainContribution {
    ChainContribution {
        block_height: height,
        block_hash: hash.into(),
        contribution_index: i,
        timestamp_ms: 1_795_000_000_000 + height * 1000,
        domain_id: "fl_digits".into(),
        round: height - 1,
        contributor: who.into(),
        quality: 0.0125,
        kept: true,
        compute_ms: 90,
        samples: 140,
        bytes: 36_136,
        uptime: 0.9,
        payout: 0.5,
        ..ChainContribution::default()
    }
}

fn sync(url: &str, db: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["analytics", "sync", "--postgres", url, "--source"])
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn total(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_object().unwrap().values().map(|x| x.as_u64().unwrap()).sum()
}

/// Every row of `table` in both databases, typed by the PostgreSQL column types, in key order.
async fn both(
    pg: &tokio_postgres::Client,
    lite: &rusqlite::Connection,
    table: &str,
) -> (Vec<String>, Vec<String>) {
    let cols: Vec<(String, String)> = pg
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let order = (1..=names.len()).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let q = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
    let mut from_pg = Vec::new();
    for r in pg.query(q.as_str(), &[]).await.unwrap() {
        let cells: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, (_, t))| match t.as_str() {
                "bigint" => format!("{:?}", r.get::<_, Option<i64>>(i)),
                "integer" => format!("{:?}", r.get::<_, Option<i32>>(i).map(i64::from)),
                "double precision" => format!("{:?}", r.get::<_, Option<f64>>(i)),
                _ => format!("{:?}", r.get::<_, Option<String>>(i)),
            })
            .collect();
        from_pg.push(cells.join("|"));
    }
    let mut stmt = lite.prepare(&q).unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut from_lite = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let cells: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                let v = r.get_ref(i).unwrap();
                match (t.as_str(), v) {
                    (_, ValueRef::Null) => "None".to_owned(),
                    ("double precision", ValueRef::Integer(x)) => format!("{:?}", Some(x as f64)),
                    ("double precision", ValueRef::Real(x)) => format!("{:?}", Some(x)),
                    (_, ValueRef::Integer(x)) => format!("{:?}", Some(x)),
                    (_, ValueRef::Text(s)) => format!("{:?}", Some(String::from_utf8_lossy(s))),
                    (_, other) => format!("{other:?}"),
                }
            })
            .collect();
        from_lite.push(cells.join("|"));
    }
    (from_pg, from_lite)
}

#[test]
fn sync_round_trips_every_table_idempotently_and_follows_reorgs() {
    let Some(url) = postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path());
    let schema = format!("doin_test_{}", std::process::id());
    let scoped =
        format!("{url}{}options=-csearch_path%3D{schema}", if url.contains('?') { "&" } else { "?" });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pg = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&scoped, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        // A database an older DOIN synced (schema version 1: chain optimae without parameters):
        // the sync upgrades it.
        c.batch_execute(
            &doin_tracking::olap::SCHEMA.replace("    parameters TEXT NOT NULL DEFAULT '',\n", ""),
        )
        .await
        .unwrap();
        c
    });

    let first = sync(&scoped, &db);
    assert_eq!(first["written"]["fact_round"], 60, "{first}");
    assert_eq!(first["written"]["fact_chain_optimae"], 3);
    let second = sync(&scoped, &db);
    assert_eq!(
        (total(&second, "written"), total(&second, "deleted")),
        (0, 0),
        "a second run changes nothing: {second}"
    );

    let lite = rusqlite::Connection::open(&db).unwrap();
    let check = |label: &str| {
        for table in TABLES {
            let (p, l) = rt.block_on(both(&pg, &lite, table));
            assert!(!l.is_empty(), "{table} has rows");
            assert_eq!(p, l, "{label}: {table} differs");
        }
    };
    check("after the first sync");
    let params: Vec<String> = rt.block_on(async {
        let rows =
            pg.query("SELECT parameters FROM fact_chain_optimae ORDER BY block_height", &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    });
    assert_eq!(params, ["[1.5, 2]", "[2.5, 2]", "[3.5, 2]"], "the upgraded table holds the parameters");

    // A reorg at height 2: a2 and a3 are orphaned, b2 replaces them.
    let mut o = Olap::open(&db).unwrap();
    o.apply_chain(2, &[cert(2, "b2", "carol", "Accept")], &[contribution(2, "b2", 0, "fay")]).unwrap();
    drop(o);
    let third = sync(&scoped, &db);
    assert_eq!(third["deleted"]["fact_chain_optimae"], 2, "{third}");
    assert_eq!(third["written"]["fact_chain_optimae"], 1, "{third}");
    assert_eq!(third["deleted"]["fact_federated_contribution"], 1, "{third}");
    assert_eq!(third["written"]["fact_federated_contribution"], 1, "{third}");
    check("after the reorg");

    // The acceptance questions answer alike.
    let q1 = "SELECT domain_id, node_id, time_to_target_seconds FROM fact_experiment_summary ORDER BY 1, 2";
    let q2 = "SELECT optimizer, SUM(CASE WHEN outcome = 'Accept' THEN 1 ELSE 0 END) FROM fact_chain_optimae GROUP BY optimizer ORDER BY 1";
    let lite_q1: Vec<(String, String, Option<f64>)> = lite
        .prepare(q1)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lite_q2: Vec<(String, i64)> = lite
        .prepare(q2)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (pg_q1, pg_q2) = rt.block_on(async {
        let a: Vec<(String, String, Option<f64>)> =
            pg.query(q1, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let b: Vec<(String, i64)> =
            pg.query(q2, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
        (a, b)
    });
    assert_eq!(lite_q1, pg_q1);
    assert_eq!(lite_q2, pg_q2);
    assert_eq!(lite_q2, [("alice".to_owned(), 1), ("carol".to_owned(), 1)]);
    assert_eq!(pg_q1.len(), 2);
    assert!(pg_q1.iter().all(|(_, _, t)| t.is_some()), "both experiments reached -100");
    // The sync state records each table.
    let states: i64 = rt
        .block_on(async { pg.query_one("SELECT COUNT(*) FROM doin_sync_state", &[]).await.unwrap().get(0) });
    assert_eq!(states, TABLES.len() as i64);
    rt.block_on(async { pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap() });
}

#[test]
fn a_missing_source_or_server_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args([
            "analytics",
            "sync",
            "--postgres",
            "postgres://doin@127.0.0.1:1/x",
            "--source",
            "/nonexistent/olap.db",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such database"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("olap.db");
    Olap::open(&db).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["analytics", "sync", "--postgres", "postgres://doin@127.0.0.1:1/x", "--source"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to PostgreSQL at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
