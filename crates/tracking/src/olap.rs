//! The SQLite OLAP star schema: `dim_experiment`, `dim_domain`, `fact_round`,
//! `fact_experiment_summary`, `fact_chain_optimae`, `fact_federated_contribution`, with a schema
//! version and indexes. WAL mode,
//! so readers (`/stats`, exports) never block the writer.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Value, json};

use crate::{
    ChainContribution, ChainOptimae, Experiment, PriorSource, PriorTrial, Round, TrackingError, WarmSeed,
    csv::Progress, rfc3339,
};

/// Schema version stored in `schema_version`.
pub const SCHEMA_VERSION: i64 = 3;

/// The tables, in creation order (also the order sync copies them).
pub const TABLES: &[&str] = &[
    "dim_domain",
    "dim_experiment",
    "fact_round",
    "fact_experiment_summary",
    "fact_chain_optimae",
    "fact_warm_start",
    "fact_federated_contribution",
];

/// The schema (SQLite and PostgreSQL both accept it).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dim_domain (
    domain_id TEXT PRIMARY KEY,
    performance_metric TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    target_performance DOUBLE PRECISION,
    param_bounds TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dim_experiment (
    experiment_id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    optimizer_plugin TEXT NOT NULL,
    performance_metric TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    optimization_config TEXT NOT NULL,
    param_bounds TEXT NOT NULL,
    target_performance DOUBLE PRECISION,
    started_at TEXT NOT NULL,
    doin_version TEXT NOT NULL,
    config_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fact_round (
    experiment_id TEXT NOT NULL,
    round_number BIGINT NOT NULL,
    domain_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    timestamp_utc TEXT NOT NULL,
    wall_clock_seconds DOUBLE PRECISION NOT NULL,
    performance DOUBLE PRECISION,
    best_performance DOUBLE PRECISION,
    performance_delta DOUBLE PRECISION,
    converged INTEGER NOT NULL,
    chain_height BIGINT NOT NULL,
    peers_count BIGINT NOT NULL,
    block_reward_earned DOUBLE PRECISION NOT NULL,
    generation BIGINT NOT NULL,
    stage BIGINT NOT NULL,
    population_size BIGINT NOT NULL,
    no_improve_counter BIGINT NOT NULL,
    avg_fitness DOUBLE PRECISION,
    parameters TEXT NOT NULL,
    best_parameters TEXT NOT NULL,
    train_mae DOUBLE PRECISION,
    val_mae DOUBLE PRECISION,
    test_mae DOUBLE PRECISION,
    naive_mae DOUBLE PRECISION,
    metrics TEXT NOT NULL,
    PRIMARY KEY (experiment_id, round_number)
);
CREATE INDEX IF NOT EXISTS fact_round_domain ON fact_round (domain_id, timestamp_utc);
CREATE TABLE IF NOT EXISTS fact_experiment_summary (
    experiment_id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    total_rounds BIGINT NOT NULL,
    best_performance DOUBLE PRECISION,
    target_performance DOUBLE PRECISION,
    converged INTEGER NOT NULL,
    time_to_target_seconds DOUBLE PRECISION,
    time_to_current_best_seconds DOUBLE PRECISION,
    wall_clock_seconds DOUBLE PRECISION NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fact_experiment_summary_domain ON fact_experiment_summary (domain_id, node_id);
CREATE TABLE IF NOT EXISTS fact_chain_optimae (
    block_hash TEXT NOT NULL,
    cert_index BIGINT NOT NULL,
    block_height BIGINT NOT NULL,
    timestamp_utc TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reported_performance DOUBLE PRECISION NOT NULL,
    verified_performance DOUBLE PRECISION NOT NULL,
    improved INTEGER NOT NULL,
    effective_increment DOUBLE PRECISION NOT NULL,
    quorum_agreement DOUBLE PRECISION NOT NULL,
    reward DOUBLE PRECISION NOT NULL,
    experiment_id TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    parameters TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (block_hash, cert_index)
);
CREATE INDEX IF NOT EXISTS fact_chain_optimae_height ON fact_chain_optimae (block_height);
CREATE INDEX IF NOT EXISTS fact_chain_optimae_optimizer ON fact_chain_optimae (domain_id, optimizer);
CREATE TABLE IF NOT EXISTS fact_warm_start (
    experiment_id TEXT NOT NULL,
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    trials BIGINT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (experiment_id, source, source_id)
);
CREATE TABLE IF NOT EXISTS fact_federated_contribution (
    block_hash TEXT NOT NULL,
    tx_index BIGINT NOT NULL,
    contribution_index BIGINT NOT NULL,
    block_height BIGINT NOT NULL,
    timestamp_utc TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    round BIGINT NOT NULL,
    supervisor TEXT NOT NULL,
    contributor TEXT NOT NULL,
    quality DOUBLE PRECISION NOT NULL,
    kept INTEGER NOT NULL,
    compute_declared_ms BIGINT NOT NULL,
    compute_ms BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    uptime DOUBLE PRECISION NOT NULL,
    payout DOUBLE PRECISION NOT NULL,
    model_hash TEXT NOT NULL,
    PRIMARY KEY (block_hash, tx_index, contribution_index)
);
CREATE INDEX IF NOT EXISTS fact_federated_contribution_height ON fact_federated_contribution (block_height);
CREATE INDEX IF NOT EXISTS fact_federated_contribution_contributor ON fact_federated_contribution (domain_id, contributor);
";

/// What a database of schema version 1 lacks (PostgreSQL takes `IF NOT EXISTS`; SQLite's
/// column is added by [`Olap::open`] when missing).
pub const UPGRADE_PG: &str =
    "ALTER TABLE fact_chain_optimae ADD COLUMN IF NOT EXISTS parameters TEXT NOT NULL DEFAULT '';";

/// The database.
#[derive(Debug)]
pub struct Olap {
    path: PathBuf,
    conn: Connection,
    progress: std::collections::HashMap<String, Progress>,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> TrackingError + '_ {
    move |source| TrackingError::Sqlite { path: path.display().to_string(), source }
}

impl Olap {
    /// Opens or creates the database and its schema.
    pub fn open(path: &Path) -> Result<Self, TrackingError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let e = sql(path);
        let conn = Connection::open(path).map_err(&e)?;
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(&e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&e)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(&e)?;
        // A small page cache: the node's memory matters more than query speed here.
        conn.pragma_update(None, "cache_size", -512).map_err(&e)?;
        conn.execute_batch(SCHEMA).map_err(&e)?;
        let version: Option<i64> =
            conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0)).map_err(&e)?;
        match version {
            None => {
                conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])
                    .map_err(&e)?;
            }
            Some(v) if v < SCHEMA_VERSION => {
                // Version 2 lacks fact_federated_contribution (created above). Version 1: chain
                // optimae without their parameters (old rows keep '').
                let has: bool = conn
                    .query_row(
                        "SELECT COUNT(*) FROM pragma_table_info('fact_chain_optimae') WHERE name = 'parameters'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(&e)?
                    > 0;
                if !has {
                    conn.execute_batch(
                        "ALTER TABLE fact_chain_optimae ADD COLUMN parameters TEXT NOT NULL DEFAULT ''",
                    )
                    .map_err(&e)?;
                }
                conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])
                    .map_err(&e)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(TrackingError::Sqlite {
                    path: path.display().to_string(),
                    source: rusqlite::Error::InvalidParameterName(format!(
                        "schema version {v} is newer than this node's {SCHEMA_VERSION}"
                    )),
                });
            }
            Some(_) => {}
        }
        Ok(Self { path: path.to_owned(), conn, progress: Default::default() })
    }

    /// A read-only connection (for queries and exports while the tracker writes).
    pub fn reader(path: &Path) -> Result<Connection, TrackingError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(sql(path))?;
        Ok(conn)
    }

    /// The newest `limit` recorded rounds of `domain` that measured a performance, as
    /// (parameters JSON, performance): the prior trials a run of the same domain starts from
    /// (the seed's L3 warm start).
    pub fn prior_trials(path: &Path, domain: &str, limit: usize) -> Result<Vec<PriorTrial>, TrackingError> {
        let conn = Self::reader(path)?;
        let e = sql(path);
        let mut out = Vec::new();
        // The rounds this node measured (newest first), then the chain's verified optimae of
        // every participant (their quorum's median on evaluator data), newest first.
        let queries = [
            (
                "SELECT parameters, performance, experiment_id FROM fact_round \
                 WHERE domain_id = ?1 AND performance IS NOT NULL \
                 ORDER BY timestamp_utc DESC, round_number DESC LIMIT ?2",
                PriorSource::Round,
            ),
            (
                "SELECT parameters, verified_performance, optimizer FROM fact_chain_optimae \
                 WHERE domain_id = ?1 AND parameters != '' ORDER BY block_height DESC, cert_index LIMIT ?2",
                PriorSource::Chain,
            ),
        ];
        for (query, source) in queries {
            let mut q = conn.prepare(query).map_err(&e)?;
            let rows = q
                .query_map(rusqlite::params![domain, limit as i64], |r| {
                    Ok(PriorTrial {
                        parameters: r.get(0)?,
                        performance: r.get(1)?,
                        source,
                        source_id: r.get(2)?,
                    })
                })
                .map_err(&e)?;
            out.extend(rows.collect::<Result<Vec<_>, _>>().map_err(&e)?);
        }
        Ok(out)
    }

    /// Records which history seeded `experiment`: trials taught per source.
    pub fn record_warm_start(&mut self, experiment: &str, seeds: &[WarmSeed]) -> Result<(), TrackingError> {
        let e = sql(&self.path);
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut ins = tx
                .prepare(
                    "INSERT OR REPLACE INTO fact_warm_start (experiment_id, source, source_id, trials, recorded_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&e)?;
            let now = rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            );
            for s in seeds {
                ins.execute(params![experiment, s.source.as_str(), s.source_id, s.trials as i64, now])
                    .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    /// The history that seeded each experiment (of `experiment`, or all): JSON rows.
    pub fn warm_starts(path: &Path, experiment: Option<&str>) -> Result<Vec<Value>, TrackingError> {
        let conn = Self::reader(path)?;
        let e = sql(path);
        let mut q = conn
            .prepare(
                "SELECT w.experiment_id, x.domain_id, w.source, w.source_id, w.trials, w.recorded_at \
                 FROM fact_warm_start w LEFT JOIN dim_experiment x ON x.experiment_id = w.experiment_id \
                 WHERE ?1 IS NULL OR w.experiment_id = ?1 ORDER BY w.recorded_at, w.experiment_id, w.source, w.trials DESC",
            )
            .map_err(&e)?;
        let rows = q
            .query_map([experiment], |r| {
                Ok(json!({
                    "experiment_id": r.get::<_, String>(0)?,
                    "domain_id": r.get::<_, Option<String>>(1)?,
                    "source": r.get::<_, String>(2)?,
                    "source_id": r.get::<_, String>(3)?,
                    "trials": r.get::<_, i64>(4)?,
                    "recorded_at": r.get::<_, String>(5)?,
                }))
            })
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    /// Records an experiment and its domain.
    pub fn record_experiment(&mut self, x: &Experiment) -> Result<(), TrackingError> {
        let e = sql(&self.path);
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute(
            "INSERT INTO dim_domain (domain_id, performance_metric, higher_is_better, target_performance, param_bounds)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (domain_id) DO UPDATE SET performance_metric = excluded.performance_metric,
               higher_is_better = excluded.higher_is_better, target_performance = excluded.target_performance,
               param_bounds = excluded.param_bounds",
            params![x.domain_id, x.performance_metric, x.higher_is_better, x.target_performance, x.param_bounds],
        )
        .map_err(&e)?;
        tx.execute(
            "INSERT OR REPLACE INTO dim_experiment VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                x.experiment_id,
                x.domain_id,
                x.node_id,
                x.hostname,
                x.optimizer_plugin,
                x.performance_metric,
                x.higher_is_better,
                x.optimization_config,
                x.param_bounds,
                x.target_performance,
                rfc3339(x.started_ms),
                x.doin_version,
                x.config_hash,
            ],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }

    /// Records a round and updates its experiment's summary, in one transaction.
    pub fn record_round(&mut self, x: &Experiment, r: &Round) -> Result<(), TrackingError> {
        self.record_rounds(&[(x, r)])
    }

    /// Records rounds and updates their experiments' summaries, all in one transaction (the
    /// tracker groups what queued up while it was writing).
    pub fn record_rounds(&mut self, rounds: &[(&Experiment, &Round)]) -> Result<(), TrackingError> {
        let e = sql(&self.path);
        let tx = self.conn.transaction().map_err(&e)?;
        for (x, r) in rounds {
            round_in(&tx, &mut self.progress, x, r).map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Replaces the chain rows from `from_height` on with `rows` (a reorg removes the orphaned
    /// rows; re-applying the same rows changes nothing).
    pub fn apply_chain(
        &mut self,
        from_height: u64,
        rows: &[ChainOptimae],
        contributions: &[ChainContribution],
    ) -> Result<(), TrackingError> {
        let e = sql(&self.path);
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute("DELETE FROM fact_chain_optimae WHERE block_height >= ?1", [from_height as i64])
            .map_err(&e)?;
        tx.execute("DELETE FROM fact_federated_contribution WHERE block_height >= ?1", [from_height as i64])
            .map_err(&e)?;
        {
            let mut ins = tx
                .prepare(
                    "INSERT OR REPLACE INTO fact_federated_contribution (block_hash, tx_index, contribution_index, \
                     block_height, timestamp_utc, domain_id, round, supervisor, contributor, quality, kept, \
                     compute_declared_ms, compute_ms, samples, bytes, uptime, payout, model_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )
                .map_err(&e)?;
            for c in contributions {
                ins.execute(params![
                    c.block_hash,
                    c.tx_index,
                    c.contribution_index,
                    c.block_height as i64,
                    rfc3339(c.timestamp_ms),
                    c.domain_id,
                    c.round as i64,
                    c.supervisor,
                    c.contributor,
                    c.quality,
                    c.kept,
                    c.compute_declared_ms as i64,
                    c.compute_ms as i64,
                    c.samples as i64,
                    c.bytes as i64,
                    c.uptime,
                    c.payout,
                    c.model_hash,
                ])
                .map_err(&e)?;
            }
        }
        {
            let mut ins = tx
                .prepare(
                    "INSERT OR REPLACE INTO fact_chain_optimae (block_hash, cert_index, block_height, timestamp_utc, \
                     commit_id, domain_id, optimizer, outcome, reported_performance, verified_performance, improved, \
                     effective_increment, quorum_agreement, reward, experiment_id, config_hash, parameters) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                )
                .map_err(&e)?;
            for c in rows {
                ins.execute(params![
                    c.block_hash,
                    c.cert_index,
                    c.block_height as i64,
                    rfc3339(c.timestamp_ms),
                    c.commit_id,
                    c.domain_id,
                    c.optimizer,
                    c.outcome,
                    c.reported_performance,
                    c.verified_performance,
                    c.improved,
                    c.effective_increment,
                    c.quorum_agreement,
                    c.reward,
                    c.experiment_id,
                    c.config_hash,
                    c.parameters,
                ])
                .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }
}

fn round_in(
    tx: &rusqlite::Transaction<'_>,
    progress: &mut std::collections::HashMap<String, Progress>,
    x: &Experiment,
    r: &Round,
) -> Result<(), rusqlite::Error> {
    let p = progress.entry(x.experiment_id.clone()).or_default();
    let (to_best, to_target, delta) = p.update(x, r);
    let (rounds, best) = (p.rounds, p.best.map(|b| b.0));
    let wall = r.timestamp_ms.saturating_sub(x.started_ms) as f64 / 1000.0;
    let m = |k: &str| r.metrics.get(k).copied();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO fact_round VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
           ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
    )?
    .execute(params![
        x.experiment_id,
        r.round_number as i64,
        x.domain_id,
        x.node_id,
        rfc3339(r.timestamp_ms),
        wall,
        r.performance,
        r.best_performance,
        delta,
        r.converged,
        r.chain_height as i64,
        r.peers_count as i64,
        r.block_reward_earned,
        r.generation as i64,
        r.stage as i64,
        r.population_size as i64,
        r.no_improve_counter as i64,
        r.avg_fitness,
        r.parameters,
        r.best_parameters,
        m("train_mae"),
        m("val_mae"),
        m("test_mae"),
        m("naive_mae"),
        serde_json::to_string(&r.metrics).unwrap_or_default(),
    ])?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO fact_experiment_summary VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        x.experiment_id,
        x.domain_id,
        x.node_id,
        rounds as i64,
        best,
        x.target_performance,
        r.converged || to_target.is_some(),
        to_target,
        to_best,
        wall,
        rfc3339(r.timestamp_ms),
    ])?;
    Ok(())
}

/// Runs `query` and returns every row as a JSON object (column name → value).
pub fn rows(
    conn: &Connection,
    query: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Value>, rusqlite::Error> {
    let mut stmt = conn.prepare(query)?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mapped = stmt.query_map(args, |row| {
        let mut obj = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(x) => json!(x),
                rusqlite::types::ValueRef::Real(x) => json!(x),
                rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                rusqlite::types::ValueRef::Blob(b) => json!(b.len()),
            };
            obj.insert(n.clone(), v);
        }
        Ok(Value::Object(obj))
    })?;
    mapped.collect()
}

/// What `/stats*` serve, read from the database file.
#[derive(Debug, Clone)]
pub struct StatsReader {
    path: PathBuf,
}

impl StatsReader {
    /// A reader of the database at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn conn(&self) -> Result<Connection, String> {
        Olap::reader(&self.path).map_err(|e| e.to_string())
    }

    /// `/stats`: per domain the newest experiment's summary, plus every experiment's.
    pub fn summary(&self) -> Result<Value, String> {
        let c = self.conn()?;
        let all = rows(
            &c,
            "SELECT s.*, e.optimizer_plugin, e.performance_metric, e.higher_is_better, e.started_at
             FROM fact_experiment_summary s JOIN dim_experiment e USING (experiment_id)
             ORDER BY e.started_at",
            &[],
        )
        .map_err(|e| e.to_string())?;
        let mut out = serde_json::Map::new();
        for s in &all {
            if let Some(d) = s["domain_id"].as_str() {
                let mut v = s.clone();
                v["rounds"] = s["total_rounds"].clone();
                v["elapsed_seconds"] = s["wall_clock_seconds"].clone();
                out.insert(d.to_owned(), v);
            }
        }
        out.insert("olap_summaries".into(), Value::Array(all));
        Ok(Value::Object(out))
    }

    /// `/stats/experiments`.
    pub fn experiments(&self) -> Result<Value, String> {
        let c = self.conn()?;
        let exps =
            rows(&c, "SELECT * FROM dim_experiment ORDER BY started_at", &[]).map_err(|e| e.to_string())?;
        let sums = rows(&c, "SELECT * FROM fact_experiment_summary ORDER BY experiment_id", &[])
            .map_err(|e| e.to_string())?;
        Ok(json!({ "experiments": exps, "summaries": sums }))
    }

    /// `/stats/rounds?experiment_id=&limit=`: newest first.
    pub fn rounds(&self, experiment: Option<&str>, limit: u64) -> Result<Value, String> {
        let c = self.conn()?;
        let limit = limit.clamp(1, 10_000) as i64;
        let r = match experiment {
            Some(x) => rows(
                &c,
                "SELECT * FROM fact_round WHERE experiment_id = ?1 ORDER BY round_number DESC LIMIT ?2",
                &[&x, &limit],
            ),
            None => rows(&c, "SELECT * FROM fact_round ORDER BY timestamp_utc DESC LIMIT ?1", &[&limit]),
        }
        .map_err(|e| e.to_string())?;
        Ok(json!({ "rounds": r }))
    }

    /// `/stats/chain-metrics?domain_id=`: accepted results per optimizer and the certificates;
    /// federated contributions per contributor.
    pub fn chain_metrics(&self, domain: Option<&str>) -> Result<Value, String> {
        let c = self.conn()?;
        let d = domain.unwrap_or("%");
        let per = rows(
            &c,
            "SELECT domain_id, optimizer,
                    SUM(outcome = 'Accept') AS accepted, SUM(outcome = 'Reject') AS rejected,
                    SUM(improved) AS improvements, MAX(verified_performance) AS best_verified,
                    MIN(verified_performance) AS min_verified, SUM(reward) AS rewards,
                    SUM(effective_increment) AS work
             FROM fact_chain_optimae WHERE domain_id LIKE ?1 GROUP BY domain_id, optimizer ORDER BY domain_id, accepted DESC",
            &[&d],
        )
        .map_err(|e| e.to_string())?;
        let recent = rows(
            &c,
            "SELECT * FROM fact_chain_optimae WHERE domain_id LIKE ?1 ORDER BY block_height DESC, cert_index LIMIT 100",
            &[&d],
        )
        .map_err(|e| e.to_string())?;
        // Federated jobs: each contributor's rounds, kept updates, inputs and payouts.
        let per_contributor = rows(
            &c,
            "SELECT domain_id, contributor, COUNT(*) AS rounds, SUM(kept) AS kept,
                    AVG(quality) AS mean_quality, SUM(compute_ms) AS compute_ms, SUM(samples) AS samples,
                    SUM(bytes) AS bytes, AVG(uptime) AS mean_uptime, SUM(payout) AS payouts
             FROM fact_federated_contribution WHERE domain_id LIKE ?1
             GROUP BY domain_id, contributor ORDER BY domain_id, payouts DESC",
            &[&d],
        )
        .map_err(|e| e.to_string())?;
        Ok(json!({ "per_optimizer": per, "recent": recent, "per_contributor": per_contributor }))
    }

    /// `/stats/export`: writes a consistent copy of the database to `dest` (`VACUUM INTO`: one
    /// read transaction, so writers go on meanwhile and the copy is never restarted by them),
    /// replacing it. `started` receives a handle that interrupts the copy from another thread
    /// (the client went away).
    pub fn export_to(&self, dest: &Path, started: impl FnOnce(ExportInterrupt)) -> Result<(), String> {
        let c = self.conn()?;
        started(ExportInterrupt(c.get_interrupt_handle()));
        match std::fs::remove_file(dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
            _ => {}
        }
        let dest = dest.to_str().ok_or("the export path is not UTF-8")?;
        c.execute("VACUUM INTO ?1", [dest]).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Interrupts a running [`StatsReader::export_to`].
pub struct ExportInterrupt(rusqlite::InterruptHandle);

impl std::fmt::Debug for ExportInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportInterrupt")
    }
}

impl ExportInterrupt {
    /// Stops the copy (it fails with "interrupted").
    pub fn interrupt(&self) {
        self.0.interrupt();
    }
}
