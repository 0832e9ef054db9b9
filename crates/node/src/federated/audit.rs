//! The evaluator's side of a round's audit (`docs/design.md` §21c): a node that runs a job and
//! is drawn into the audit quorum of its pending round re-measures the round from its
//! artifacts — the base model (a checkpoint here, fetched, or the job's initial model for
//! round 0) and every update its receipts name, fetched from the supervisor and the DHT and
//! checked against the hash its contributor signed — and queues a [`RoundVote`] for the
//! engine to submit. The supervisor's side: every admitted update is kept as an artifact
//! (`DATA_DIR/federated/JOB/updates/ROUND/HASH.f32`, the newest [`KEPT_ROUNDS`] rounds).

use std::time::{Duration, Instant};

use doin_consensus::{State, federated::audit::quorum_of};
use doin_federated::supervisor::{from_bytes, weights_hash};
use doin_primitives::{Address, BoundedVec, FederatedRound, Hash, RoundVote};

use super::{Jobs, checkpoint_path, lock, write_durably};

/// Rounds of updates a supervisor keeps for auditors.
pub const KEPT_ROUNDS: u64 = 8;

/// A failed audit (an artifact not found yet) is tried again after this.
const RETRY: Duration = Duration::from_secs(5);

/// A pending round this node is to audit.
#[derive(Clone, Debug)]
pub struct AuditTask {
    /// The job.
    pub job: String,
    /// The round's record.
    pub record: FederatedRound,
    /// Its supervisor (holds the updates).
    pub supervisor: Address,
    /// The audit seed (draws the scoring rows).
    pub seed: Hash,
    /// The base model when held here.
    pub base: Option<Vec<f32>>,
    /// The record's inclusion height.
    pub height: u64,
}

/// Audits under way or done: (job, round, inclusion height) → when started, and whether its
/// vote is queued (a round rejected and recorded again — even with the same record — is a new
/// audit).
pub type AuditLog = std::collections::BTreeMap<(String, u64, u64), (Instant, bool)>;

impl Jobs {
    /// Keeps an admitted update as an artifact for the round's auditors and queues its
    /// announcement.
    pub(super) fn keep_update(&self, job: &str, round: u64, weights: &[u8]) {
        let hash = Hash::of_artifact(weights);
        let path = self.dir.join(job).join("updates").join(round.to_string()).join(format!("{hash}.f32"));
        match write_durably(&path, weights) {
            Ok(()) => {
                self.artifacts.add(&path, weights);
                lock(&self.announce).push(hash);
            }
            Err(e) => tracing::warn!(job, round, error = %e, "cannot keep an update for auditors"),
        }
    }

    /// Drops the kept updates of rounds more than [`KEPT_ROUNDS`] before `round`.
    pub(super) fn prune_updates(&self, job: &str, round: u64) {
        let dir = self.dir.join(job).join("updates");
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            let old = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|r| r + KEPT_ROUNDS < round);
            if old {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Pending rounds of this node's jobs whose audit quorum holds `me`, not voted on chain, not
    /// audited here already, and not tried within the last [`RETRY`].
    pub fn audits_due(&self, state: &State, me: &Address) -> Vec<AuditTask> {
        let jobs = lock(&self.jobs);
        let mut log = lock(&self.audits);
        let mut out = Vec::new();
        for (id, rt) in jobs.iter() {
            let Some(p) =
                state.domain(&rt.domain).and_then(|d| d.federated.as_ref()).and_then(|f| f.pending.as_ref())
            else {
                continue;
            };
            if p.votes.iter().any(|(a, _)| a == me) {
                continue;
            }
            let Some((members, seed)) = quorum_of(state, &rt.domain) else { continue };
            if !members.contains(me) {
                continue;
            }
            let key = (id.clone(), p.record.round, p.height);
            if log.get(&key).is_some_and(|(at, done)| *done || at.elapsed() < RETRY) {
                continue;
            }
            log.insert(key, (Instant::now(), false));
            let base = if p.record.round == 0 {
                super::initial_model(rt.job.spec())
            } else {
                std::fs::read(checkpoint_path(&self.dir, id, &p.record.base))
                    .ok()
                    .and_then(|b| from_bytes(&b))
            }
            .filter(|m| weights_hash(m) == p.record.base);
            out.push(AuditTask {
                job: id.clone(),
                record: p.record.clone(),
                supervisor: p.supervisor,
                seed,
                base,
                height: p.height,
            });
        }
        // Bounded: audits of rounds long settled are forgotten.
        while log.len() > 256 {
            log.pop_first();
        }
        out
    }

    /// Audits `task` from its base model and the updates' bytes (record order): each must hash
    /// to what its contributor signed. Queues the vote.
    pub fn audit(&self, task: &AuditTask, base: &[f32], updates: &[Vec<u8>]) -> Result<RoundVote, String> {
        if weights_hash(base) != task.record.base {
            return Err(format!("the base model does not hash to {}", task.record.base));
        }
        let mut deltas = Vec::with_capacity(updates.len());
        for (c, bytes) in task.record.contributions.iter().zip(updates) {
            if Hash::of_artifact(bytes) != c.update.body.weights {
                return Err(format!(
                    "the update of {} does not hash to its receipt",
                    c.update.body.contributor
                ));
            }
            deltas.push(from_bytes(bytes).ok_or("an update is not whole f32s")?);
        }
        let (rule, mlp, max_samples, train) = {
            let jobs = lock(&self.jobs);
            let rt = jobs.get(&task.job).ok_or_else(|| format!("no job {:?}", task.job))?;
            let spec = rt.job.spec();
            (spec.rule, doin_federated::Mlp::new(&spec.sizes)?, spec.max_samples, rt.train.clone())
        };
        let seed = u64::from_le_bytes(task.seed.0[..8].try_into().unwrap_or_default());
        let a = doin_federated::audit::audit(
            rule,
            &mlp,
            max_samples,
            base,
            &task.record,
            &deltas,
            &self.data,
            &train,
            seed,
        );
        let vote = RoundVote {
            domain: task.record.domain.clone(),
            round: task.record.round,
            model: task.record.model,
            aggregate_ok: a.aggregate_ok,
            model_quality_micro: a.model_quality_micro,
            qualities: BoundedVec::try_from_vec(a.qualities).map_err(|e| e.to_string())?,
        };
        if let Some(e) = lock(&self.audits).get_mut(&(task.job.clone(), task.record.round, task.height)) {
            e.1 = true;
        }
        self.events.emit(
            "round:audited",
            Some(&task.job),
            serde_json::json!({
                "round": task.record.round,
                "aggregate_ok": vote.aggregate_ok,
                "loss": -(vote.model_quality_micro as f64) / 1e6,
            }),
        );
        lock(&self.votes).push(vote.clone());
        Ok(vote)
    }

    /// Votes audited since the last call, to submit.
    pub fn take_votes(&self) -> Vec<RoundVote> {
        std::mem::take(&mut *lock(&self.votes))
    }
}
