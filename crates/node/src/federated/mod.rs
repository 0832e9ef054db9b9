//! The node's federated jobs (`federated_jobs[]`, `docs/design.md` §21b): the registered
//! domain a job becomes, and [`Jobs`] — the supervisor's jobs shared between the HTTP edge
//! (QuackMesh's `/api/job*`, `/api/cluster`) and the engine's periodic step, which closes due
//! rounds into [`FederatedRound`] records to sign and follows the chain to adopt recorded
//! models.
//!
//! Every closed round's model is written to `DATA_DIR/federated/JOB/MODEL_HASH.f32` before
//! its record is submitted, so whatever the chain records is checkpointed (a supervisor killed
//! between the block and its next step loses nothing): a restarted supervisor resumes at the
//! chain's round from the file named by the chain's model hash (checked); one that lacks the
//! chain's model says so and fetches it: every recorded model is served as an artifact
//! ([`crate::artifacts`], content address = the hash the chain records) and announced in the
//! DHT, so a standby supervisor follows the job round by round and can take it over (consensus
//! lets it once the job's supervisor has recorded nothing for three rounds' length).
//!
//! This file holds the jobs' runtime and the periodic step; `spec` the registered domain and
//! the supervisor's spec, `files` what a job keeps on disk, `standings` the contributors'
//! standings a supervisor publishes and a standby restores, `http` the job API, `audit`
//! round audits, `serve` the verified model served for inference.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use doin_api::{
    events::EventBus,
    jobs::{JobApi, JobError},
};
use doin_consensus::State;
use doin_federated::{
    Rule,
    supervisor::{Job, JobSpec, Saved, Standing, from_bytes, to_bytes, weights_hash},
};
use doin_ml::data::Tabular;
use doin_primitives::{
    Amount, BoundedString, BoundedVec, DomainId, DomainSpec, FIXED_ONE, FederatedRound, Hash, Metric,
    SignedUpdate,
    domain::{
        DataSource, Direction, DomainKind, EvaluationSpec, ParamKind, ParamSpec, QuorumRule, ResourceLimits,
    },
};
use serde_json::{Value, json};

use crate::{artifacts::Artifacts, config::FederatedJobConfig, store::SharedStore};

pub mod audit;
mod files;
mod http;
pub mod serve;
mod spec;
mod standings;

pub use files::MAX_STANDING_BYTES;
use files::*;
use spec::*;
pub use spec::{bounty_of, initial_hash, spec_of};

/// One job and what the node knows about its data and chain standing.
#[derive(Debug)]
struct Runtime {
    job: Job,
    /// Who created it over HTTP (`None`: the config file's).
    owner: Option<String>,
    domain: DomainId,
    /// Training rows the supervisor scores on, and the held-out test rows.
    train: Vec<usize>,
    test: Vec<usize>,
    /// A round recorded on chain this job cannot continue from (the model hash it lacks).
    behind: Option<Hash>,
    /// Payouts of the last recorded round (contributor → amount), and all rounds' totals.
    last_payouts: Vec<(String, Amount)>,
    earned: BTreeMap<String, Amount>,
    /// Accepted rounds' accuracy on the test rows.
    history: Vec<(u64, f64)>,
    /// The chain's count of settled rounds when last looked at.
    settled_seen: u64,
    /// Why its registration could not be submitted (a job created over HTTP).
    problem: Option<String>,
    /// Registered contributors heard from: when (node clock, ms), the last heartbeat's own
    /// time, and whether they count as online.
    seen: BTreeMap<doin_primitives::Address, Seen>,
    /// The job's verified model as the inference server runs it, and its price (`None`:
    /// `serve_inference` off).
    served: Option<crate::serving::Served>,
    /// The recorded standings (`FederatedState.standing`) last restored or published here, and
    /// the ones to fetch (a standby follows the supervisor's).
    standing_seen: Hash,
    standing_wanted: Option<Hash>,
    /// Whether this node records the job's rounds now (its lease; a standby does not): what
    /// contributors read to find the supervisor.
    supervising: bool,
}

/// A contributor's liveness as the supervisor sees it.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    at_ms: u64,
    last_sent_ms: u64,
    online: bool,
}

/// Heartbeats from further than this from the supervisor's clock are refused, ms.
const HEARTBEAT_SKEW_MS: u64 = 120_000;

/// The supervisor's jobs.
#[derive(Debug)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Runtime>>,
    data: Arc<Tabular>,
    store: SharedStore,
    events: Arc<EventBus>,
    dir: PathBuf,
    started: std::time::Instant,
    /// Recorded models served to peers.
    artifacts: Arc<Artifacts>,
    /// Served models not yet announced in the DHT (the engine's shell announces them).
    announce: Mutex<Vec<Hash>>,
    /// Jobs created over HTTP whose domain and stake the engine has yet to submit.
    creations: Mutex<Vec<FederatedJobConfig>>,
    /// Every job created over HTTP, with its owner (`DATA_DIR/federated/jobs.json`).
    created: Mutex<Vec<(FederatedJobConfig, String)>>,
    /// Round audits this node started ([`audit`]).
    audits: Mutex<audit::AuditLog>,
    /// Audit votes to submit.
    votes: Mutex<Vec<doin_primitives::RoundVote>>,
}

/// Jobs created over HTTP at most (a node supervises a bounded number).
pub const MAX_CREATED: usize = 64;

/// A job's runtime, resumed at the chain's round from `dir`'s checkpoint when there is one.
fn runtime(
    c: &FederatedJobConfig,
    owner: Option<String>,
    data: &Tabular,
    dir: &Path,
    store: &SharedStore,
    now: u64,
) -> Result<Runtime, String> {
    let domain = DomainId::new(c.job_id.clone()).map_err(|e| e.to_string())?;
    let spec = job_spec(c, data, domain.clone());
    let served = match c.serve_inference {
        false => None,
        true => Some(crate::serving::Served {
            domain: Arc::new(serve::JobModel::new(&c.job_id, &spec.sizes)?),
            price: crate::config::price_units(c.inference_price),
        }),
    };
    let (test, train) = doin_federated::split::holdout(data.rows(), c.seed);
    // Resume from the chain's round when its model is checkpointed here.
    let fed = store.lock().tip().domain(&domain).and_then(|d| d.federated.clone()).unwrap_or_default();
    let (mut job, behind) = if fed.rounds == 0 {
        (Job::new(spec, 0, None, now)?, None)
    } else {
        let path = checkpoint_path(dir, &c.job_id, &fed.model);
        let model = std::fs::read(&path).ok().and_then(|b| from_bytes(&b));
        match model {
            Some(m) if weights_hash(&m) == fed.model => (Job::new(spec, fed.rounds, Some(m), now)?, None),
            _ => (Job::new(spec, 0, None, now)?, Some(fed.model)),
        }
    };
    // Reputation and quarantines survive a restart.
    if let Ok(text) = std::fs::read(standing_path(dir, &c.job_id)) {
        match serde_json::from_slice::<Value>(&text) {
            Ok(v) => job.restore(saved_from(&v)),
            Err(e) => {
                tracing::warn!(job = %c.job_id, error = %e, "standing.json is not JSON; starting without it");
            }
        }
    }
    Ok(Runtime {
        job,
        domain,
        train,
        test,
        behind,
        last_payouts: Vec::new(),
        earned: BTreeMap::new(),
        history: Vec::new(),
        settled_seen: fed.settled,
        owner,
        problem: None,
        seen: BTreeMap::new(),
        served,
        standing_seen: fed.standing,
        standing_wanted: None,
        supervising: false,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Jobs {
    /// The jobs of `configs`, resumed at the chain's round from the data directory's
    /// checkpoints (`data_dir/federated`).
    pub fn new(
        configs: &[FederatedJobConfig],
        store: SharedStore,
        events: Arc<EventBus>,
        data_dir: &Path,
        artifacts: Arc<Artifacts>,
    ) -> Result<Self, String> {
        let data = Arc::new(doin_ml::data::digits()?);
        let dir = data_dir.join("federated");
        let started = std::time::Instant::now();
        let now = 0;
        let mut jobs = BTreeMap::new();
        // Jobs created over HTTP, kept across restarts (a config file entry of the same id wins).
        let created = created_from(&dir);
        for (c, owner) in
            configs.iter().map(|c| (c, None)).chain(created.iter().map(|(c, o)| (c, Some(o.clone()))))
        {
            if jobs.contains_key(&c.job_id) {
                continue;
            }
            let rt = runtime(c, owner, &data, &dir, &store, now)?;
            jobs.insert(c.job_id.clone(), rt);
        }
        let jobs = Self {
            jobs: Mutex::new(jobs),
            data,
            store,
            events,
            dir,
            started,
            artifacts,
            announce: Mutex::new(Vec::new()),
            creations: Mutex::new(Vec::new()),
            created: Mutex::new(created),
            audits: Mutex::new(Default::default()),
            votes: Mutex::new(Vec::new()),
        };
        let resumed: Vec<(String, Hash)> = lock(&jobs.jobs)
            .iter()
            .filter(|(_, rt)| rt.job.model().0 > 0)
            .map(|(id, rt)| (id.clone(), rt.job.model().2))
            .collect();
        for (id, model) in resumed {
            jobs.serve(&id, &model);
        }
        Ok(jobs)
    }

    /// Serves the checkpoint of `model` to peers and queues its announcement.
    fn serve(&self, job: &str, model: &Hash) {
        let path = checkpoint_path(&self.dir, job, model);
        match std::fs::read(&path) {
            Ok(bytes) => {
                if self.artifacts.add(&path, &bytes) == *model {
                    lock(&self.announce).push(*model);
                } else {
                    tracing::error!(job, %model, "a checkpoint's content differs from its name; not served");
                }
            }
            Err(e) => tracing::warn!(job, %model, error = %e, "cannot serve a checkpoint"),
        }
    }

    /// How this node serves job `job`'s verified model for inference (`None`: no such job here,
    /// or `serve_inference` off for it).
    pub fn served(&self, job: &str) -> Option<crate::serving::Served> {
        lock(&self.jobs).get(job).and_then(|rt| rt.served.clone())
    }

    /// Job `job`'s model as something to run (whether or not this node serves it): what a
    /// dispute quorum member re-executes a receipt's row on.
    pub fn model_of(&self, job: &str) -> Option<crate::serving::Served> {
        let jobs = lock(&self.jobs);
        let rt = jobs.get(job)?;
        rt.served.clone().or_else(|| {
            let sizes = rt.job.spec().sizes.clone();
            serve::JobModel::new(job, &sizes)
                .ok()
                .map(|m| crate::serving::Served { domain: Arc::new(m), price: Amount::ZERO })
        })
    }

    /// The prices of the jobs whose models this node serves (job → base units per request).
    pub fn prices(&self) -> Vec<(String, Amount)> {
        lock(&self.jobs)
            .iter()
            .filter_map(|(id, rt)| rt.served.as_ref().map(|s| (id.clone(), s.price)))
            .collect()
    }

    /// Models served since the last call, to announce as provider records.
    pub fn take_announcements(&self) -> Vec<Hash> {
        std::mem::take(&mut *lock(&self.announce))
    }

    /// Whether `model` of `job` is checkpointed here (`None`: no such job).
    pub fn holds(&self, job: &str, model: &Hash) -> Option<bool> {
        lock(&self.jobs).contains_key(job).then(|| checkpoint_path(&self.dir, job, model).exists())
    }

    /// Where fetched models are assembled.
    pub fn download_dir(&self) -> PathBuf {
        self.dir.join("downloads")
    }

    /// Installs a fetched model of `job` as its checkpoint, if it is the model `model` names
    /// (whole `f32`s of the job's size, hashing to it); the next step resumes from it.
    pub fn install(&self, job: &str, model: &Hash, bytes: &[u8]) -> Result<(), String> {
        let params = {
            let jobs = lock(&self.jobs);
            let rt = jobs.get(job).ok_or_else(|| format!("no job {job:?}"))?;
            rt.job.model().1.len()
        };
        let weights = from_bytes(bytes).ok_or("not whole f32s")?;
        if weights.len() != params {
            return Err(format!("{} weights, the job's model has {params}", weights.len()));
        }
        if weights_hash(&weights) != *model {
            return Err(format!("the bytes hash to {}, not {model}", weights_hash(&weights)));
        }
        self.checkpoint(job, model, &weights).map_err(|e| format!("writing the checkpoint: {e}"))
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether this node runs no job (most nodes: the engine's step skips the federated work).
    pub fn is_empty(&self) -> bool {
        lock(&self.jobs).is_empty()
    }

    /// Jobs whose chain round is ahead of this node's checkpoints.
    pub fn behind(&self) -> Vec<(String, Hash)> {
        lock(&self.jobs).iter().filter_map(|(id, rt)| rt.behind.map(|h| (id.clone(), h))).collect()
    }

    /// The periodic step on the tip `state`: adopts rounds the chain recorded (checkpoint,
    /// payouts, events) and closes due rounds this node may supervise, returning their records
    /// to sign and submit. `supervises(domain)`: whether this node (`me`) may record now.
    pub fn step(
        &self,
        state: &State,
        me: doin_primitives::Address,
        supervises: impl Fn(&DomainId) -> bool,
    ) -> Vec<FederatedRound> {
        let now = self.now_ms();
        let mut out = Vec::new();
        let mut jobs = lock(&self.jobs);
        for (id, rt) in jobs.iter_mut() {
            // Contributors not heard from for three rounds' wait (at least 30 s) have left.
            let quiet = rt.job.spec().max_wait_ms.saturating_mul(3).max(30_000);
            for (who, s) in
                rt.seen.iter_mut().filter(|(_, s)| s.online && now.saturating_sub(s.at_ms) > quiet)
            {
                s.online = false;
                self.events.emit(
                    "node:left",
                    Some(id),
                    json!({ "contributor": who.to_string(), "silent_s": now.saturating_sub(s.at_ms) / 1000 }),
                );
            }
            let Some(d) = state.domain(&rt.domain) else { continue };
            let fed = d.federated.clone().unwrap_or_default();
            let mine = supervises(&rt.domain);
            // Taking the job over at the base of a round nobody verified (consensus lets this
            // node record that round again): the base is this job's open model.
            let rewind = mine
                .then(|| {
                    doin_consensus::federated::audit::takeover_rewind(&d.spec, &fed, state.height() + 1, me)
                })
                .flatten()
                .filter(|r| {
                    let (round, _, model) = rt.job.model();
                    (round, model) == (r.rounds, r.model)
                });
            // Recording now, or the last round's recorder (its audit may hold the next round).
            rt.supervising = mine || fed.supervisor == me;
            // A follower restores the supervisor's standings as they are recorded.
            rt.standing_wanted = (!mine && fed.standing != Hash::ZERO && fed.standing != rt.standing_seen)
                .then_some(fed.standing);
            match rt.job.recorded(fed.rounds, fed.model, now) {
                Ok(Some(closed)) => {
                    rt.behind = None;
                    let round = closed.record.round;
                    rt.history.push((round, closed.accuracy));
                    self.serve(id, &closed.record.model);
                    self.prune_updates(id, round);
                    let saved = saved_json(&rt.job.saved());
                    if let Err(e) = write_durably(&standing_path(&self.dir, id), saved.to_string().as_bytes())
                    {
                        tracing::error!(job = %id, error = %e, "cannot save the contributors' standing");
                    }
                    if rt.history.len() > 1_000 {
                        rt.history.remove(0);
                    }
                    println!(
                        "fl round {id} {round} accuracy {:.4} contributors {}",
                        closed.accuracy,
                        closed.record.contributions.len()
                    );
                    self.events.emit(
                        "checkpoint:created",
                        Some(id),
                        json!({ "round": round, "model_hash": closed.record.model.to_string(), "accuracy": closed.accuracy }),
                    );
                }
                // The chain no longer names a model this job lacks (a rejected round rewound it).
                Ok(None) => rt.behind = None,
                Err(model) => {
                    // The chain recorded a model this node closed earlier (its record included
                    // after the round was reopened): resume from its checkpoint.
                    if let Some(job) = self.resume(rt, fed.rounds, &model, now) {
                        rt.job = job;
                        rt.behind = None;
                        self.serve(id, &model);
                        println!("fl resumed {id} at round {} from checkpoint {model}", fed.rounds);
                        continue;
                    }
                    if let Some(base) = &rewind {
                        // The last round's model is nowhere to be fetched (recorded just before
                        // its supervisor vanished): its round is recorded again from its base.
                        if rt.behind.is_some() {
                            tracing::warn!(job = %id, round = base.rounds, lost = %model, base = %base.model, "taking the job over from the base of a round nobody verified, whose model is lost");
                            println!(
                                "fl takeover {id}: round {} again from its base {}",
                                base.rounds, base.model
                            );
                        }
                        rt.behind = None;
                    } else {
                        if rt.behind != Some(model) {
                            tracing::info!(job = %id, rounds = fed.rounds, model = %model, supervisor = %fed.supervisor, "the chain recorded a round this node has no model for; fetching it");
                            println!(
                                "fl behind {id}: the chain is at round {} with model {model}",
                                fed.rounds
                            );
                        }
                        rt.behind = Some(model);
                        continue;
                    }
                }
            }
            // Rounds settle when recorded (no auditor), or when their audit quorum decides.
            if fed.settled != rt.settled_seen {
                rt.settled_seen = fed.settled;
                rt.last_payouts = fed.last_paid.iter().map(|(a, x)| (a.to_string(), *x)).collect();
                for (a, x) in &fed.last_paid {
                    let e = rt.earned.entry(a.to_string()).or_default();
                    *e = e.checked_add(*x).unwrap_or(*e);
                }
                self.events.emit(
                    "rewards:distributed",
                    Some(id),
                    json!({
                        "round": fed.last_settled_round,
                        "audited": fed.audited,
                        "unaudited": fed.unaudited,
                        "unpaid": fed.unpaid,
                        "rejected": fed.rejected,
                        "payouts": fed.last_paid.iter().map(|(a, x)| json!({
                            "contributor": a.to_string(),
                            "amount": x.0 as f64 / 1e9,
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
            // A closed round the chain has not taken within the longest wait starts over.
            if let Some(c) = rt.job.closed()
                && now.saturating_sub(c.at_ms) > rt.job.spec().max_wait_ms
            {
                // Its checkpoint stays: the record may still be included later.
                tracing::warn!(job = %id, round = c.record.round, "the chain did not record the closed round; reopening");
                rt.job.reopen(now);
            }
            if !mine || rt.behind.is_some() || !rt.job.due(now) {
                continue;
            }
            // The scoring rows come from the tip's beacon, unknown to contributors when they sent.
            let seed = u64::from_le_bytes(state.meta().beacon.0[..8].try_into().unwrap_or_default());
            let (train, test) = (rt.train.clone(), rt.test.clone());
            if let Some(closed) = rt.job.close(seed, &self.data, &train, &test, now) {
                let r = &closed.record;
                if let Err(e) = self.checkpoint(id, &r.model, &closed.model) {
                    // Without its checkpoint a recorded round could not be resumed: not submitted.
                    tracing::error!(job = %id, round = r.round, error = %e, "cannot write the round's checkpoint; reopening");
                    rt.job.reopen(now);
                    continue;
                }
                // Served before its record goes out: a standby fetches it while the record
                // waits for a block, so the model outlives this node.
                self.serve(id, &r.model);
                let kept = r.contributions.iter().filter(|c| c.kept).count();
                self.events.emit(
                    "training:metrics_update",
                    Some(id),
                    json!({
                        "round": r.round,
                        "accuracy": closed.accuracy,
                        "loss": -(r.model_quality_micro as f64) / 1e6,
                        "contributors": r.contributions.len(),
                        "kept": kept,
                    }),
                );
                let mut record = r.clone();
                record.standing = self.publish_standing(id, &rt.job.saved());
                rt.standing_seen = record.standing;
                out.push(record);
            }
        }
        out
    }

    /// A job at the chain's `rounds` from the checkpoint of `model`, with `rt`'s contributors'
    /// standing, if that checkpoint is here and hashes right.
    fn resume(&self, rt: &Runtime, rounds: u64, model: &Hash, now: u64) -> Option<Job> {
        let path = checkpoint_path(&self.dir, rt.domain.as_str(), model);
        let weights = if rounds == 0 {
            // A rejected first round: back to the job's initial model.
            initial_model(rt.job.spec())?
        } else {
            std::fs::read(path).ok().and_then(|b| from_bytes(&b))?
        };
        if weights_hash(&weights) != *model {
            return None;
        }
        let mut job = Job::new(rt.job.spec().clone(), rounds, Some(weights), now).ok()?;
        job.restore(rt.job.saved());
        Some(job)
    }

    /// Writes `model` (hash `hash`) durably.
    fn checkpoint(&self, job: &str, hash: &Hash, model: &[f32]) -> std::io::Result<()> {
        write_durably(&checkpoint_path(&self.dir, job, hash), &to_bytes(model))
    }

    fn registered(&self, domain: &DomainId, who: &doin_primitives::Address) -> bool {
        self.store.lock().tip().stake(who).is_some_and(|s| s.contributes(domain))
    }
}

#[cfg(test)]
mod tests;
