//! Experiment tracking (DESIGN §8): every optimization round becomes a CSV row (the Python
//! system's columns) and a `fact_round` row in a SQLite OLAP star schema, from round one; every
//! certificate on the canonical chain becomes a `fact_chain_optimae` row and every contribution
//! to a federated round a `fact_federated_contribution` row, kept right across reorgs. Writing happens on the tracker's own thread behind a bounded queue, so a slow,
//! missing or locked database is reported and never stalls the node's consensus work.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod csv;
pub mod olap;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
};

use serde::{Deserialize, Serialize};

pub use olap::{Olap, SCHEMA_VERSION};
pub use rusqlite;

/// Why tracking failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// SQLite.
    #[error("olap database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// The CSV file.
    #[error("stats file {path}: {source}")]
    Csv {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// One experiment: an optimizer run of one domain on one node (`dim_experiment`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Random id, 32 hex characters.
    pub experiment_id: String,
    /// Domain.
    pub domain_id: String,
    /// The node's account address.
    pub node_id: String,
    /// Host name.
    pub hostname: String,
    /// Optimizer name or plugin command.
    pub optimizer_plugin: String,
    /// `performance` or `loss`.
    pub performance_metric: String,
    /// Direction.
    pub higher_is_better: bool,
    /// The domain's `optimization_config` as JSON.
    pub optimization_config: String,
    /// The domain's `param_bounds` as JSON.
    pub param_bounds: String,
    /// `target_performance`.
    pub target_performance: Option<f64>,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// DOIN version.
    pub doin_version: String,
    /// Hash of the optimizer configuration (hex), as revealed on chain.
    pub config_hash: String,
}

/// One optimization round (one generation of the optimizer) — a CSV row and a `fact_round` row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Experiment.
    pub experiment_id: String,
    /// Round number, from 1.
    pub round_number: u64,
    /// Time, Unix ms.
    pub timestamp_ms: u64,
    /// This round's best performance.
    pub performance: Option<f64>,
    /// The experiment's best so far (local figures).
    pub best_performance: Option<f64>,
    /// This round's best parameters (JSON).
    pub parameters: String,
    /// The experiment's best parameters (JSON).
    pub best_parameters: String,
    /// Whether the verified champion reached the target.
    pub converged: bool,
    /// Canonical height.
    pub chain_height: u64,
    /// Connected peers.
    pub peers_count: u64,
    /// DOIN this node earned from accepted optimae so far.
    pub block_reward_earned: f64,
    /// Generation (ask/tell cycles).
    pub generation: u64,
    /// Optimizer stage.
    pub stage: u64,
    /// Population size.
    pub population_size: u64,
    /// Rounds since the best improved.
    pub no_improve_counter: u64,
    /// Patience configured (`optimization_patience`), 0 if none.
    pub optimization_patience: u64,
    /// Mean performance of the round's candidates that evaluated.
    pub avg_fitness: Option<f64>,
    /// The round's best candidate's metrics (train/val/test MAE and others).
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// One certificate on the canonical chain (`fact_chain_optimae`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainOptimae {
    /// Block height.
    pub block_height: u64,
    /// Block hash (hex).
    pub block_hash: String,
    /// Position in the block.
    pub cert_index: u32,
    /// Block time, Unix ms.
    pub timestamp_ms: u64,
    /// Commit id (hex).
    pub commit_id: String,
    /// Domain.
    pub domain_id: String,
    /// Optimizer address.
    pub optimizer: String,
    /// `Accept` or `Reject`.
    pub outcome: String,
    /// The claim.
    pub reported_performance: f64,
    /// The decisive median.
    pub verified_performance: f64,
    /// Whether it replaced the champion.
    pub improved: bool,
    /// Effective increment (work).
    pub effective_increment: f64,
    /// Agreeing votes over all votes (1.0 without votes: trusted domains).
    pub quorum_agreement: f64,
    /// Optimizer reward plus bounty, DOIN.
    pub reward: f64,
    /// Experiment id from the reveal.
    pub experiment_id: String,
    /// Config hash from the reveal (hex).
    pub config_hash: String,
    /// The revealed parameters, decoded by the domain's space (JSON, as `fact_round`'s).
    pub parameters: String,
}

/// One contribution to a federated round on the canonical chain (`fact_federated_contribution`):
/// the inputs the payout formula took from the round record and what it paid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainContribution {
    /// Block height.
    pub block_height: u64,
    /// Block hash (hex).
    pub block_hash: String,
    /// The round transaction's position in the block.
    pub tx_index: u32,
    /// The contribution's position in the round.
    pub contribution_index: u32,
    /// Block time, Unix ms.
    pub timestamp_ms: u64,
    /// The job (federated domain).
    pub domain_id: String,
    /// Round number.
    pub round: u64,
    /// The supervisor that recorded it.
    pub supervisor: String,
    /// The contributor.
    pub contributor: String,
    /// Measured quality (loss change it caused), the supervisor's measurement.
    pub quality: f64,
    /// Whether the aggregate kept it.
    pub kept: bool,
    /// Compute the contributor declared, ms.
    pub compute_declared_ms: u64,
    /// Compute the formula counted (capped at the domain's `max_wall_ms`), ms.
    pub compute_ms: u64,
    /// Rows it declared training on.
    pub samples: u64,
    /// Bytes of its update.
    pub bytes: u64,
    /// Uptime over recent rounds, 0..1.
    pub uptime: f64,
    /// What the round paid it, DOIN.
    pub payout: f64,
    /// The round's new model hash (hex).
    pub model_hash: String,
}

/// Where a prior trial of a warm start comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PriorSource {
    /// A round this node recorded (`fact_round`; the id is its experiment).
    Round,
    /// A certificate on the chain (`fact_chain_optimae`; the id is the optimizer's address).
    Chain,
}

impl PriorSource {
    /// The name recorded in `fact_warm_start.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Round => "round",
            Self::Chain => "chain",
        }
    }
}

/// One prior trial from the cube: parameters (JSON), the figure, and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorTrial {
    /// Parameters (JSON object by name).
    pub parameters: String,
    /// Performance (the domain's own direction).
    pub performance: f64,
    /// The table it comes from.
    pub source: PriorSource,
    /// The experiment (rounds) or the optimizer's address (chain optimae).
    pub source_id: String,
}

/// Trials a warm start took from one source (`fact_warm_start`).
#[derive(Clone, Debug, PartialEq)]
pub struct WarmSeed {
    /// The table.
    pub source: PriorSource,
    /// The experiment or the optimizer.
    pub source_id: String,
    /// Trials taught from it.
    pub trials: u64,
}

enum Msg {
    Experiment(Experiment),
    Round(Round),
    /// Canonical chain from `from_height` on replaces what was recorded there.
    Chain {
        from_height: u64,
        rows: Vec<ChainOptimae>,
        contributions: Vec<ChainContribution>,
    },
    /// The history that seeded an experiment.
    WarmStart {
        experiment_id: String,
        seeds: Vec<WarmSeed>,
    },
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Counters of the tracker.
#[derive(Debug, Default)]
pub struct TrackerStats {
    /// Rounds written.
    pub rounds: AtomicU64,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Write errors.
    pub errors: AtomicU64,
    /// Wall time spent writing, nanoseconds.
    pub write_nanos: AtomicU64,
    /// CPU time of the tracker thread, nanoseconds (updated every 64 messages and at the end).
    pub cpu_nanos: AtomicU64,
}

/// User + system CPU seconds from a Linux `stat` file (`/proc/self/stat` for the process,
/// `/proc/thread-self/stat` for the calling thread), clock-tick resolution.
pub fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU time of the calling thread in nanoseconds; 0 where unavailable.
pub fn thread_cpu_nanos() -> u64 {
    stat_cpu_seconds("/proc/thread-self/stat").map_or(0, |s| (s * 1e9) as u64)
}

/// The tracker: a thread that owns the CSV file and the SQLite database.
#[derive(Debug)]
pub struct Tracker {
    tx: SyncSender<Msg>,
    /// Counters.
    pub stats: Arc<TrackerStats>,
    olap_path: Option<PathBuf>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tracking message")
    }
}

/// Messages waiting for the tracker thread at most.
pub const QUEUE: usize = 4096;

impl Tracker {
    /// Starts tracking into `csv` and/or `olap`. A database that cannot be opened is reported
    /// (returned as the second value) and tracking continues with what works.
    pub fn start(csv: Option<PathBuf>, olap: Option<PathBuf>) -> (Self, Vec<TrackingError>) {
        let mut problems = Vec::new();
        let mut csv_writer = None;
        if let Some(p) = &csv {
            match csv::CsvWriter::open(p) {
                Ok(w) => csv_writer = Some(w),
                Err(e) => problems.push(e),
            }
        }
        let mut db = None;
        if let Some(p) = &olap {
            match Olap::open(p) {
                Ok(o) => db = Some(o),
                Err(e) => problems.push(e),
            }
        }
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let stats = Arc::new(TrackerStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("tracking".into())
            .spawn(move || {
                let mut experiments = std::collections::HashMap::<String, Experiment>::new();
                let mut failures = 0u64;
                let mut report = |what: &str, e: &TrackingError| {
                    failures += 1;
                    st.errors.fetch_add(1, Ordering::Relaxed);
                    // The first few in full, then every hundredth.
                    if failures <= 3 || failures.is_multiple_of(100) {
                        tracing::warn!(error = %e, failures, "experiment tracking: {what} not written");
                    }
                };
                let mut handled = 0u64;
                while let Ok(first) = rx.recv() {
                    // Everything that queued up while the last batch was written goes in one
                    // transaction and one CSV flush.
                    let mut batch = vec![first];
                    while batch.len() < 1024
                        && let Ok(m) = rx.try_recv()
                    {
                        batch.push(m);
                    }
                    handled += batch.len() as u64;
                    let started = std::time::Instant::now();
                    let mut rounds: Vec<Round> = Vec::new();
                    for msg in batch {
                        if !matches!(msg, Msg::Round(_)) && !rounds.is_empty() {
                            write_rounds(&mut csv_writer, &mut db, &experiments, &mut rounds, &mut report);
                        }
                        match msg {
                            Msg::Round(r) => rounds.push(r),
                            Msg::Experiment(e) => {
                                if let Some(db) = &mut db
                                    && let Err(err) = db.record_experiment(&e)
                                {
                                    report("experiment", &err);
                                }
                                experiments.insert(e.experiment_id.clone(), e);
                            }
                            Msg::Chain { from_height, rows, contributions } => {
                                if let Some(db) = &mut db
                                    && let Err(err) = db.apply_chain(from_height, &rows, &contributions)
                                {
                                    report("chain rows", &err);
                                }
                            }
                            Msg::WarmStart { experiment_id, seeds } => {
                                if let Some(db) = &mut db
                                    && let Err(err) = db.record_warm_start(&experiment_id, &seeds)
                                {
                                    report("warm start", &err);
                                }
                            }
                            Msg::Flush(done) => {
                                if let Some(w) = &mut csv_writer {
                                    let _ = w.flush();
                                }
                                st.cpu_nanos.store(thread_cpu_nanos(), Ordering::Relaxed);
                                let _ = done.send(());
                            }
                        }
                    }
                    let n = rounds.len() as u64;
                    write_rounds(&mut csv_writer, &mut db, &experiments, &mut rounds, &mut report);
                    st.rounds.fetch_add(n, Ordering::Relaxed);
                    st.write_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    if handled >= 64 {
                        handled = 0;
                        st.cpu_nanos.store(thread_cpu_nanos(), Ordering::Relaxed);
                    }
                }
                if let Some(w) = &mut csv_writer {
                    let _ = w.flush();
                }
            })
            .ok();
        (Self { tx, stats, olap_path: olap, thread }, problems)
    }

    fn send(&self, msg: Msg) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(msg) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an experiment (before its rounds).
    pub fn experiment(&self, e: Experiment) {
        self.send(Msg::Experiment(e));
    }

    /// Records the history that seeded an experiment's optimizer (its warm start).
    pub fn warm_start(&self, experiment_id: String, seeds: Vec<WarmSeed>) {
        self.send(Msg::WarmStart { experiment_id, seeds });
    }

    /// Records a round.
    pub fn round(&self, r: Round) {
        self.send(Msg::Round(r));
    }

    /// The canonical chain's certificates and federated contributions from `from_height` on
    /// (replacing what was recorded from there: a reorg).
    pub fn chain(&self, from_height: u64, rows: Vec<ChainOptimae>, contributions: Vec<ChainContribution>) {
        self.send(Msg::Chain { from_height, rows, contributions });
    }

    /// Waits until everything queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
        }
    }

    /// The OLAP database path, if configured.
    pub fn olap_path(&self) -> Option<&std::path::Path> {
        self.olap_path.as_deref()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let (tx, _) = sync_channel(1);
        // Closing: replace the sender so the thread's receiver ends once the queue drains.
        let old = std::mem::replace(&mut self.tx, tx);
        drop(old);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `rounds` (of known experiments) to the CSV file and the cube, and empties it.
fn write_rounds(
    csv: &mut Option<csv::CsvWriter>,
    db: &mut Option<Olap>,
    experiments: &std::collections::HashMap<String, Experiment>,
    rounds: &mut Vec<Round>,
    report: &mut impl FnMut(&str, &TrackingError),
) {
    let known: Vec<(&Experiment, &Round)> =
        rounds.iter().filter_map(|r| experiments.get(&r.experiment_id).map(|e| (e, r))).collect();
    if let Some(w) = csv {
        for (e, r) in &known {
            if let Err(err) = w.write_row(e, r) {
                report("csv row", &err);
                break;
            }
        }
        if let Err(source) = w.flush() {
            report("csv rows", &TrackingError::Csv { path: "stats file".into(), source });
        }
    }
    if let Some(db) = db
        && let Err(err) = db.record_rounds(&known)
    {
        report("rounds", &err);
    }
    rounds.clear();
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}
