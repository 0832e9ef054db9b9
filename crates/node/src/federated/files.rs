//! What a federated job keeps in the data directory: jobs created over HTTP, contributors'
//! standings (this node's `standing.json` and the published artifacts a standby restores), and
//! checkpoints, each written through a synced temporary.

use super::*;

pub(super) fn created_path(dir: &Path) -> PathBuf {
    dir.join("jobs.json")
}

/// The jobs created over HTTP, as saved; an unreadable file is reported and ignored.
pub(super) fn created_from(dir: &Path) -> Vec<(FederatedJobConfig, String)> {
    let Ok(text) = std::fs::read(created_path(dir)) else { return Vec::new() };
    match serde_json::from_slice::<Vec<(FederatedJobConfig, String)>>(&text) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "federated/jobs.json does not parse; jobs created over HTTP are not resumed");
            Vec::new()
        }
    }
}

pub(super) fn standing_path(dir: &Path, job: &str) -> PathBuf {
    dir.join(job).join("standing.json")
}

/// Contributors' reputation, quarantines and standing as saved (`standing.json`).
pub(super) fn saved_json(saved: &[Saved]) -> Value {
    Value::Array(
        saved
            .iter()
            .map(|s| {
                json!({
                    "address": s.address.to_string(),
                    "reputation": s.reputation,
                    "until": s.until,
                    "quarantines": s.quarantines,
                    "rounds": s.standing.rounds,
                    "kept": s.standing.kept,
                    "strikes": s.standing.strikes,
                    "last_quality_micro": s.standing.last_quality_micro,
                    "recent": s.standing.recent,
                })
            })
            .collect(),
    )
}

/// Reads `standing.json` back; entries that do not parse are skipped (logged).
pub(super) fn saved_from(v: &Value) -> Vec<Saved> {
    let entry = |e: &Value| -> Option<Saved> {
        let address = doin_primitives::Address(hex::decode(e["address"].as_str()?).ok()?.try_into().ok()?);
        Some(Saved {
            address,
            reputation: e["reputation"].as_f64()?,
            until: e["until"].as_u64()?,
            quarantines: u32::try_from(e["quarantines"].as_u64()?).ok()?,
            standing: Standing {
                rounds: e["rounds"].as_u64()?,
                kept: e["kept"].as_u64()?,
                strikes: u32::try_from(e["strikes"].as_u64()?).ok()?,
                last_quality_micro: e["last_quality_micro"].as_i64()?,
                recent: e["recent"].as_array()?.iter().filter_map(Value::as_u64).collect(),
            },
        })
    };
    let all = v.as_array().map(Vec::as_slice).unwrap_or_default();
    let parsed: Vec<Saved> = all.iter().filter_map(entry).collect();
    if parsed.len() != all.len() {
        tracing::warn!(
            skipped = all.len() - parsed.len(),
            "standing.json entries that do not parse were skipped"
        );
    }
    parsed
}

/// Published standings are at most this large (a standby refuses more).
pub const MAX_STANDING_BYTES: usize = 4 << 20;

/// Published standings kept per job.
pub(super) const KEPT_STANDINGS: usize = 4;

pub(super) fn standing_artifact_path(dir: &Path, job: &str, hash: &Hash) -> PathBuf {
    dir.join(job).join("standing").join(format!("{hash}.json"))
}

pub(super) fn checkpoint_path(dir: &Path, job: &str, model: &Hash) -> PathBuf {
    dir.join(job).join(format!("{model}.f32"))
}

pub(super) use crate::files::write_durably;
