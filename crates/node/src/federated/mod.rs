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
pub mod serve;

/// DOIN as an amount (rounded down to base units).
fn doin(v: f64) -> Amount {
    Amount((v * 1e9).max(0.0) as u128)
}

/// The federated domain a job registers: the training recipe as its parameters (the learning
/// rate and batch contributors use), accuracy as its metric, the job's rule and round length,
/// `pool_per_round` paid per round, declared compute capped at `max_wait`.
pub fn spec_of(job: &FederatedJobConfig, target_block_time_s: f64) -> Result<DomainSpec, String> {
    let name = |s: &str| BoundedString::new(s).map_err(|e| e.to_string());
    let metric = |v: f64| Metric::from_f64(v).ok_or_else(|| format!("{v} is out of range"));
    let round_blocks = (job.max_wait / target_block_time_s.max(0.001)).ceil().clamp(1.0, 1e6) as u32;
    let spec = DomainSpec {
        id: name(&job.job_id)?,
        metric: name("accuracy")?,
        direction: Direction::Maximize,
        params: BoundedVec::try_from_vec(vec![
            ParamSpec {
                name: name("lr")?,
                kind: ParamKind::LogContinuous { min: metric(1e-6)?, max: metric(10.0)? },
            },
            ParamSpec { name: name("batch")?, kind: ParamKind::Integer { min: 1, max: 1024 } },
        ])
        .map_err(|e| e.to_string())?,
        evaluation: EvaluationSpec {
            data: DataSource::HeldOut,
            recipe: BoundedString::new(format!("federated:{}", job.model)).map_err(|e| e.to_string())?,
            retrain: true,
        },
        tolerance: metric(0.01)?,
        acceptance_tolerance: Metric(0),
        relative_tolerance_ppm: 0,
        relative_acceptance_ppm: 0,
        scale: Metric(FIXED_ONE),
        baseline: Metric(0),
        weight: FIXED_ONE as u64,
        quorum: QuorumRule::default(),
        target: None,
        limits: ResourceLimits {
            max_wall_ms: (job.max_wait * 1000.0) as u64,
            max_epochs: 1,
            max_memory_mb: 2048,
        },
        bounty_per_accept: doin(job.pool_per_round),
        kind: DomainKind::Federated {
            aggregation: job.aggregation,
            round_blocks,
            initial_model: initial_hash(job)?,
        },
        reproducibility: None,
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The escrow a job registers with (DOIN → amount).
pub fn bounty_of(job: &FederatedJobConfig) -> Amount {
    doin(job.bounty)
}

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

fn created_path(dir: &Path) -> PathBuf {
    dir.join("jobs.json")
}

/// The jobs created over HTTP, as saved; an unreadable file is reported and ignored.
fn created_from(dir: &Path) -> Vec<(FederatedJobConfig, String)> {
    let Ok(text) = std::fs::read(created_path(dir)) else { return Vec::new() };
    match serde_json::from_slice::<Vec<(FederatedJobConfig, String)>>(&text) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "federated/jobs.json does not parse; jobs created over HTTP are not resumed");
            Vec::new()
        }
    }
}

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
            price: Amount((c.inference_price * 1e9).round() as u128),
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

fn standing_path(dir: &Path, job: &str) -> PathBuf {
    dir.join(job).join("standing.json")
}

/// Contributors' reputation, quarantines and standing as saved (`standing.json`).
fn saved_json(saved: &[Saved]) -> Value {
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
fn saved_from(v: &Value) -> Vec<Saved> {
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

/// The supervisor's spec of job `c` on `data`.
fn job_spec(c: &FederatedJobConfig, data: &Tabular, domain: DomainId) -> JobSpec {
    let mut sizes = vec![data.features];
    sizes.extend(&c.hidden);
    sizes.push(data.classes);
    JobSpec {
        domain,
        rule: Rule::from(c.aggregation),
        sizes,
        min_updates: c.min_updates,
        max_updates: c.max_updates,
        max_samples: data.rows() as u32,
        deadline_k: c.deadline_k,
        min_wait_ms: (c.min_wait * 1000.0) as u64,
        max_wait_ms: (c.max_wait * 1000.0) as u64,
        lr: c.lr as f32,
        batch: c.batch,
        seed: c.seed,
    }
}

/// The hash of job `c`'s initial model (its model's shape on the digits data, seeded by
/// `seed`): registered with the domain, so round 0 starts from it whoever supervises.
pub fn initial_hash(c: &FederatedJobConfig) -> Result<Hash, String> {
    let domain = DomainId::new(c.job_id.clone()).map_err(|e| e.to_string())?;
    let spec = job_spec(c, &doin_ml::data::digits()?, domain);
    Ok(Job::new(spec, 0, None, 0)?.model().2)
}

/// The job's initial model (round 0's base, seeded by its spec).
fn initial_model(spec: &JobSpec) -> Option<Vec<f32>> {
    Job::new(spec.clone(), 0, None, 0).ok().map(|j| j.model().1.to_vec())
}

/// Published standings are at most this large (a standby refuses more).
pub const MAX_STANDING_BYTES: usize = 4 << 20;

/// Published standings kept per job.
const KEPT_STANDINGS: usize = 4;

fn standing_artifact_path(dir: &Path, job: &str, hash: &Hash) -> PathBuf {
    dir.join(job).join("standing").join(format!("{hash}.json"))
}

fn checkpoint_path(dir: &Path, job: &str, model: &Hash) -> PathBuf {
    dir.join(job).join(format!("{model}.f32"))
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

    /// Publishes job `job`'s contributor standings as an artifact (kept, served, announced; the
    /// oldest beyond [`KEPT_STANDINGS`] dropped) and returns its content address, zero when it
    /// cannot be written.
    fn publish_standing(&self, job: &str, saved: &[Saved]) -> Hash {
        let bytes = saved_json(saved).to_string().into_bytes();
        let hash = Hash::of_artifact(&bytes);
        let path = standing_artifact_path(&self.dir, job, &hash);
        if let Err(e) = write_durably(&path, &bytes) {
            tracing::warn!(job, error = %e, "cannot publish the contributors' standing");
            return Hash::ZERO;
        }
        self.artifacts.add(&path, &bytes);
        lock(&self.announce).push(hash);
        if let Some(dir) = path.parent()
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
                .flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            files.sort();
            let excess = files.len().saturating_sub(KEPT_STANDINGS);
            for (_, old) in files.into_iter().take(excess) {
                let _ = std::fs::remove_file(old);
            }
        }
        hash
    }

    /// Standings the chain recorded for jobs this node follows (not supervises) that it has not
    /// restored yet: (job, content address).
    pub fn standings_behind(&self) -> Vec<(String, Hash)> {
        lock(&self.jobs).iter().filter_map(|(id, rt)| rt.standing_wanted.map(|h| (id.clone(), h))).collect()
    }

    /// Restores the standings `hash` names (fetched: `bytes`) into job `job`, as the supervisor
    /// that recorded them had them: a contributor quarantined there stays quarantined here when
    /// this node takes the job over. Returns how many contributors it names.
    pub fn install_standing(&self, job: &str, hash: &Hash, bytes: &[u8]) -> Result<usize, String> {
        if bytes.len() > MAX_STANDING_BYTES {
            return Err(format!("{} bytes, over {MAX_STANDING_BYTES}", bytes.len()));
        }
        if Hash::of_artifact(bytes) != *hash {
            return Err(format!("the bytes hash to {}, not {hash}", Hash::of_artifact(bytes)));
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let saved = saved_from(&v);
        let mut jobs = lock(&self.jobs);
        let rt = jobs.get_mut(job).ok_or_else(|| format!("no job {job:?}"))?;
        if rt.standing_wanted != Some(*hash) {
            return Err("no longer wanted (a newer round, or this node supervises now)".into());
        }
        let n = saved.len();
        rt.job.restore(saved);
        rt.standing_seen = *hash;
        rt.standing_wanted = None;
        let text = saved_json(&rt.job.saved()).to_string();
        if let Err(e) = write_durably(&standing_path(&self.dir, job), text.as_bytes()) {
            tracing::error!(job, error = %e, "cannot save the contributors' standing");
        }
        Ok(n)
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
                    if rt.behind != Some(model) {
                        tracing::info!(job = %id, rounds = fed.rounds, model = %model, supervisor = %fed.supervisor, "the chain recorded a round this node has no model for; fetching it");
                        println!("fl behind {id}: the chain is at round {} with model {model}", fed.rounds);
                    }
                    rt.behind = Some(model);
                    continue;
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

/// Writes a file through a synced temporary and a rename (never half-written).
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Jobs {
    /// Marks `who` heard from now; `node:joined` when it was not online.
    fn seen(&self, job: &str, rt: &mut Runtime, who: doin_primitives::Address, sent_ms: Option<u64>) {
        let now = self.now_ms();
        let entry = rt.seen.entry(who).or_default();
        entry.at_ms = now;
        if let Some(t) = sent_ms {
            entry.last_sent_ms = t;
        }
        if !entry.online {
            entry.online = true;
            let capabilities = self
                .store
                .lock()
                .tip()
                .stake(&who)
                .map(|s| (s.capabilities.cpu_cores, s.capabilities.bandwidth_mbps));
            self.events.emit(
                "node:joined",
                Some(job),
                json!({
                    "contributor": who.to_string(),
                    "cpu_cores": capabilities.map(|c| c.0),
                    "bandwidth_mbps": capabilities.map(|c| c.1),
                }),
            );
        }
    }

    /// Jobs created over HTTP whose domain and supervisor stake are to be submitted.
    pub fn take_creations(&self) -> Vec<FederatedJobConfig> {
        std::mem::take(&mut *lock(&self.creations))
    }

    /// A created job whose registration could not be submitted: said in `/api/jobs`.
    pub fn creation_failed(&self, job: &str, why: String) {
        tracing::warn!(job, error = %why, "cannot register a job created over HTTP");
        if let Some(rt) = lock(&self.jobs).get_mut(job) {
            rt.problem = Some(why);
        }
    }
}

impl JobApi for Jobs {
    fn heartbeat(&self, job: &str, beat: doin_primitives::SignedHeartbeat) -> Result<Value, JobError> {
        let mut jobs = lock(&self.jobs);
        let rt = jobs.get_mut(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let refuse = |why: &str| Err(JobError::Refused(why.to_owned()));
        if !beat.verify() {
            return refuse("the heartbeat's signature does not verify");
        }
        if beat.domain != rt.domain {
            return Err(JobError::Refused(format!(
                "a heartbeat for {:?}, this job is {job:?}",
                beat.domain.as_str()
            )));
        }
        // Only registered contributors are tracked: strangers cannot fill the map.
        if !self.registered(&rt.domain, &beat.contributor) {
            return refuse(
                "the sender is not registered as a contributor of this job (a stake with the role)",
            );
        }
        let wall = doin_api::now_ms();
        if beat.sent_ms.abs_diff(wall) > HEARTBEAT_SKEW_MS {
            return Err(JobError::Refused(format!(
                "sent_ms {} is more than {} s from this node's clock ({wall})",
                beat.sent_ms,
                HEARTBEAT_SKEW_MS / 1000
            )));
        }
        if rt.seen.get(&beat.contributor).is_some_and(|s| beat.sent_ms <= s.last_sent_ms) {
            return refuse("not newer than the contributor's last heartbeat (a replay)");
        }
        self.seen(job, rt, beat.contributor, Some(beat.sent_ms));
        let online = rt.seen.values().filter(|s| s.online).count();
        Ok(json!({ "job": job, "round": rt.job.model().0, "online": online }))
    }

    fn create(&self, owner: &str, config: Value) -> Result<Value, JobError> {
        let c: FederatedJobConfig =
            serde_json::from_value(config).map_err(|e| JobError::Invalid(format!("the job: {e}")))?;
        crate::config::check_job_request(&c).map_err(JobError::Invalid)?;
        let domain =
            DomainId::new(c.job_id.clone()).map_err(|e| JobError::Invalid(format!("job_id: {e}")))?;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&c.job_id) {
            return Err(JobError::Refused(format!("job {:?} already runs on this node", c.job_id)));
        }
        let mut created = lock(&self.created);
        if created.len() >= MAX_CREATED {
            return Err(JobError::Refused(format!(
                "this node already runs {MAX_CREATED} jobs created over HTTP"
            )));
        }
        if self.store.lock().tip().domain(&domain).is_some() {
            return Err(JobError::Refused(format!(
                "a domain {:?} is already registered on the chain",
                c.job_id
            )));
        }
        let rt = runtime(&c, Some(owner.to_owned()), &self.data, &self.dir, &self.store, self.now_ms())
            .map_err(JobError::Invalid)?;
        created.push((c.clone(), owner.to_owned()));
        let text = serde_json::to_vec_pretty(&*created).unwrap_or_default();
        if let Err(e) = write_durably(&created_path(&self.dir), &text) {
            created.pop();
            return Err(JobError::Refused(format!("cannot save the job: {e}")));
        }
        jobs.insert(c.job_id.clone(), rt);
        lock(&self.creations).push(c.clone());
        self.events.emit("job:created", Some(&c.job_id), json!({ "owner": owner, "bounty": c.bounty }));
        tracing::info!(job = %c.job_id, owner, bounty = c.bounty, "federated job created over HTTP");
        Ok(json!({ "job": c.job_id, "owner": owner, "status": "registering" }))
    }

    fn offer_model(&self, job: &str, weights: Vec<u8>) -> Result<Value, JobError> {
        let behind = lock(&self.jobs).get(job).ok_or_else(|| JobError::NotFound(job.into()))?.behind;
        let Some(model) = behind else {
            return Err(JobError::Refused("this node lacks no recorded model of the job".into()));
        };
        self.install(job, &model, &weights)
            .map_err(|e| JobError::Refused(format!("not model {model}: {e}")))?;
        tracing::info!(job, %model, "installed a recorded model a holder offered");
        Ok(json!({ "job": job, "installed": model.to_string() }))
    }

    fn exists(&self, job: &str) -> bool {
        lock(&self.jobs).contains_key(job)
    }

    fn list(&self) -> Value {
        let jobs = lock(&self.jobs);
        let store = self.store.lock();
        let tip = store.tip();
        json!({
            "jobs": jobs.iter().map(|(id, rt)| {
                let (round, _, hash) = rt.job.model();
                // Who records the job's rounds now (the chain's last recorder), and until which
                // height no other supervisor may.
                let lease = tip.domain(&rt.domain).and_then(|d| {
                    doin_consensus::federated::lease(&d.spec, &d.federated.clone().unwrap_or_default())
                });
                json!({
                    "job": id,
                    "round": round,
                    "model_hash": hash.to_string(),
                    "admitted": rt.job.admitted(),
                    "closed": rt.job.closed().is_some(),
                    // When the open round opened (node clock): a round reopened over the same
                    // model — its record not taken, or rejected by its audit — is new to
                    // contributors that sent for it before.
                    "opened_ms": rt.job.opened_ms(),
                    "accuracy": rt.job.accuracy(),
                    "rule": rt.job.spec().rule.name(),
                    "behind": rt.behind.map(|h| h.to_string()),
                    // This node records the job's rounds now (a standby does not).
                    "supervising": rt.supervising,
                    "supervisor": lease.map(|l| l.0.to_string()),
                    "takeover_height": lease.map(|l| l.1),
                    "owner": rt.owner,
                    // Not on chain yet (a job created over HTTP), or why it could not be.
                    "registered": tip.domain(&rt.domain).is_some(),
                    "problem": rt.problem,
                    // How the chain settled the job's rounds (docs/design.md §21c).
                    "audit": tip.domain(&rt.domain).and_then(|d| d.federated.as_ref()).map(|f| json!({
                        "audited": f.audited,
                        "unaudited": f.unaudited,
                        "unpaid": f.unpaid,
                        "rejected": f.rejected,
                        "pending": f.pending.as_ref().map(|p| json!({
                            "round": p.record.round,
                            "height": p.height,
                            "votes": p.votes.len(),
                        })),
                    })),
                    // The model served for inference: the newest audited round's (§22g).
                    "verified": tip.domain(&rt.domain).and_then(|d| d.federated.as_ref()).and_then(|f| f.verified.as_ref()).map(|v| json!({
                        "model_hash": v.model.to_string(),
                        "round": v.round,
                        "quality": v.quality_micro as f64 / 1e6,
                        "height": v.height,
                    })),
                    "serve_inference": rt.served.is_some(),
                    "inference_price": rt.served.as_ref().map(|s| s.price.0.to_string()),
                })
            }).collect::<Vec<_>>(),
        })
    }

    fn model(&self, job: &str) -> Result<Value, JobError> {
        let jobs = lock(&self.jobs);
        let rt = jobs.get(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let (round, weights, hash) = rt.job.model();
        let spec = rt.job.spec();
        Ok(json!({
            "job": job,
            "round": round,
            "model_hash": hash.to_string(),
            "sizes": spec.sizes,
            "lr": spec.lr,
            "batch": spec.batch,
            "closed": rt.job.closed().is_some(),
            "weights": hex::encode(to_bytes(weights)),
        }))
    }

    fn submit(&self, job: &str, update: SignedUpdate, weights: Vec<u8>) -> Result<Value, JobError> {
        let now = self.now_ms();
        let mut jobs = lock(&self.jobs);
        let rt = jobs.get_mut(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let who = update.contributor;
        let round = update.round;
        let registered = self.registered(&rt.domain, &who);
        match rt.job.submit(update, &weights, registered, now) {
            Ok(admitted) => {
                self.seen(job, rt, who, None);
                self.keep_update(job, round, &weights);
                self.events.emit(
                    "gradient:received",
                    Some(job),
                    json!({ "contributor": who.to_string(), "round": round, "bytes": weights.len(), "admitted": admitted }),
                );
                Ok(json!({ "job": job, "round": round, "admitted": admitted }))
            }
            Err(e) => {
                tracing::info!(job, contributor = %who, error = %e, "federated update refused");
                self.events.emit(
                    "gradient:refused",
                    Some(job),
                    json!({ "contributor": who.to_string(), "round": round, "reason": e.to_string() }),
                );
                Err(JobError::Refused(e.to_string()))
            }
        }
    }

    fn cluster(&self, job: &str) -> Result<Value, JobError> {
        let jobs = lock(&self.jobs);
        let rt = jobs.get(job).ok_or_else(|| JobError::NotFound(job.into()))?;
        let (round, _, hash) = rt.job.model();
        let now = self.now_ms();
        let store = self.store.lock();
        let stakes = store.tip();
        let contributors: Vec<Value> = rt
            .job
            .standings()
            .map(|(a, s, reputation, quarantined)| {
                let capabilities = stakes.stake(a).map(|st| &st.capabilities);
                json!({
                    "contributor": a.to_string(),
                    "rounds": s.rounds,
                    "kept": s.kept,
                    "strikes": s.strikes,
                    "last_quality": s.last_quality_micro as f64 / 1e6,
                    "reputation": reputation,
                    "quarantined": quarantined,
                    "quarantines": rt.job.quarantines(a),
                    "earned": rt.earned.get(&a.to_string()).map_or(0.0, |x| x.0 as f64 / 1e9),
                    "online": rt.seen.get(a).is_some_and(|s| s.online),
                    "last_seen_s": rt.seen.get(a).map(|s| now.saturating_sub(s.at_ms) as f64 / 1000.0),
                    "cpu_cores": capabilities.map(|c| c.cpu_cores),
                    "bandwidth_mbps": capabilities.map(|c| c.bandwidth_mbps),
                })
            })
            .collect();
        Ok(json!({
            "job": job,
            "round": round,
            "model_hash": hash.to_string(),
            "admitted": rt.job.admitted(),
            "deadline_in_s": (rt.job.deadline_ms() as f64 - now as f64) / 1000.0,
            "accuracy": rt.job.accuracy(),
            "history": rt.history.iter().map(|(r, a)| json!({ "round": r, "accuracy": a })).collect::<Vec<_>>(),
            "last_payouts": rt.last_payouts.iter().map(|(a, x)| json!({ "contributor": a, "amount": x.0 as f64 / 1e9 })).collect::<Vec<_>>(),
            "behind": rt.behind.map(|h| h.to_string()),
            "contributors": contributors,
        }))
    }
}
