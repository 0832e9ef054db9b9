//! The CSV tracker: one row per round with the Python system's columns, appended (a header is
//! written when the file is new or empty).

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::{Experiment, Round, TrackingError, rfc3339};

/// The columns, in order.
pub const COLUMNS: &[&str] = &[
    "experiment_id",
    "round_id",
    "domain_id",
    "node_id",
    "timestamp_utc",
    "wall_clock_seconds",
    "experiment_start_utc",
    "time_to_current_best_seconds",
    "time_to_target_seconds",
    "total_rounds",
    "round_number",
    "performance",
    "best_performance",
    "target_performance",
    "performance_delta",
    "converged",
    "parameters",
    "best_parameters",
    "optimization_config",
    "param_bounds",
    "hostname",
    "optimizer_plugin",
    "performance_metric",
    "higher_is_better",
    "doin_version",
    "chain_height",
    "peers_count",
    "block_reward_earned",
    "train_mae",
    "val_mae",
    "test_mae",
    "naive_mae",
    "generation",
    "stage",
    "population_size",
    "no_improve_counter",
    "optimization_patience",
    "avg_fitness",
    "metrics",
];

/// Per-experiment running figures the derived columns need.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// Best so far and when it was reached (ms).
    pub best: Option<(f64, u64)>,
    /// When the target was first reached (ms).
    pub target_at: Option<u64>,
    /// Rounds recorded.
    pub rounds: u64,
    /// The previous round's best.
    pub last_best: Option<f64>,
}

impl Progress {
    /// Updates with `r` and returns (time to current best s, time to target s, delta).
    pub fn update(&mut self, e: &Experiment, r: &Round) -> (Option<f64>, Option<f64>, Option<f64>) {
        self.rounds += 1;
        let better = |a: f64, b: f64| if e.higher_is_better { a > b } else { a < b };
        if let Some(b) = r.best_performance
            && self.best.is_none_or(|(old, _)| better(b, old))
        {
            self.best = Some((b, r.timestamp_ms));
        }
        if self.target_at.is_none()
            && let (Some(t), Some(b)) = (e.target_performance, r.best_performance)
            && (b == t || better(b, t))
        {
            self.target_at = Some(r.timestamp_ms);
        }
        let delta = match (r.best_performance, self.last_best) {
            (Some(b), Some(l)) => Some(b - l),
            _ => None,
        };
        self.last_best = r.best_performance.or(self.last_best);
        let secs = |t: u64| t.saturating_sub(e.started_ms) as f64 / 1000.0;
        (self.best.map(|(_, t)| secs(t)), self.target_at.map(secs), delta)
    }
}

/// Appends rows to the stats file.
#[derive(Debug)]
pub struct CsvWriter {
    path: PathBuf,
    out: BufWriter<File>,
    progress: std::collections::HashMap<String, Progress>,
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl CsvWriter {
    /// Opens (creating directories and the header as needed).
    pub fn open(path: &Path) -> Result<Self, TrackingError> {
        let err = |source| TrackingError::Csv { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
        let empty = file.metadata().map_err(err)?.len() == 0;
        let mut out = BufWriter::new(file);
        if empty {
            writeln!(out, "{}", COLUMNS.join(",")).map_err(err)?;
            out.flush().map_err(err)?;
        }
        Ok(Self { path: path.to_owned(), out, progress: Default::default() })
    }

    /// Writes one round and flushes (a reader sees whole rows).
    pub fn write(&mut self, e: &Experiment, r: &Round) -> Result<(), TrackingError> {
        self.write_row(e, r)?;
        let path = self.path.display().to_string();
        self.out.flush().map_err(|source| TrackingError::Csv { path, source })
    }

    /// Writes one round into the buffer (see [`CsvWriter::flush`]).
    pub fn write_row(&mut self, e: &Experiment, r: &Round) -> Result<(), TrackingError> {
        let (to_best, to_target, delta) =
            self.progress.entry(e.experiment_id.clone()).or_default().update(e, r);
        let total = self.progress.get(&e.experiment_id).map_or(0, |p| p.rounds);
        let m = |k: &str| opt(r.metrics.get(k).copied());
        let row = [
            field(&e.experiment_id),
            format!("{}-{}", e.experiment_id, r.round_number),
            field(&e.domain_id),
            field(&e.node_id),
            rfc3339(r.timestamp_ms),
            (r.timestamp_ms.saturating_sub(e.started_ms) as f64 / 1000.0).to_string(),
            rfc3339(e.started_ms),
            opt(to_best),
            opt(to_target),
            total.to_string(),
            r.round_number.to_string(),
            opt(r.performance),
            opt(r.best_performance),
            opt(e.target_performance),
            opt(delta),
            u8::from(r.converged).to_string(),
            field(&r.parameters),
            field(&r.best_parameters),
            field(&e.optimization_config),
            field(&e.param_bounds),
            field(&e.hostname),
            field(&e.optimizer_plugin),
            field(&e.performance_metric),
            u8::from(e.higher_is_better).to_string(),
            field(&e.doin_version),
            r.chain_height.to_string(),
            r.peers_count.to_string(),
            r.block_reward_earned.to_string(),
            m("train_mae"),
            m("val_mae"),
            m("test_mae"),
            m("naive_mae"),
            r.generation.to_string(),
            r.stage.to_string(),
            r.population_size.to_string(),
            r.no_improve_counter.to_string(),
            r.optimization_patience.to_string(),
            opt(r.avg_fitness),
            field(&serde_json::to_string(&r.metrics).unwrap_or_default()),
        ];
        // One write per row, newline included: a flush never ends between a row and its newline.
        let mut line = row.join(",");
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .map_err(|source| TrackingError::Csv { path: self.path.display().to_string(), source })
    }

    /// Flushes buffered rows.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
