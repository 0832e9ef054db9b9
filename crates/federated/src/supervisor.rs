//! A supervisor's job, sans-I/O: the open round, what it admits, when it closes, and the round
//! record it hands the node to sign and put on chain (`docs/design.md` §21b).
//!
//! - **Admission** ([`Job::submit`]): the contributor's signature over its [`UpdateBody`], this
//!   job, the open round, the current model as base, the weights' hash and byte count, a
//!   registered contributor (the shell asks the chain), not quarantined, then the shape, finite
//!   weights, rows and capacity checks of [`Admission`]. Every refusal is named; a refused
//!   update leaves nothing behind. A signed update that fails a check is a strike against its
//!   contributor (the sender is scored down); an unsigned one cannot be blamed on anyone.
//! - **Deadline** ([`Job::deadline_ms`]): the round closes once `min_updates` arrived and the
//!   adaptive deadline passed — the median plus `k` MADs of past rounds' arrival times of the
//!   `min_updates`-th update after opening (no history: `min_wait`), clamped to
//!   `[min_wait, max_wait]` — or when `max_updates` arrived, or at
//!   `max_wait` with whatever came (stragglers miss the round).
//! - **Close** ([`Job::close`]): the domain's rule aggregates (weights: rows × reputation), each
//!   contribution's quality is its score on the round's seeded scoring rows (leave-one-out for
//!   the loss-scored rule, its own loss change for the others; recorded as at most 0 for a
//!   contributor whose reputation is below [`PAID_REPUTATION`]: probation earns nothing),
//!   reputation records it, and the
//!   [`FederatedRound`] names the new model's hash. The model is adopted only when the chain has
//!   recorded the round ([`Job::recorded`]), so a round the chain refuses changes nothing.

use std::collections::{BTreeMap, VecDeque};

use doin_consensus::payout::PPM;
use doin_ml::data::Tabular;
use doin_primitives::{
    Address, BoundedVec, DomainId, FederatedRound, Hash, RoundContribution, SignedUpdate,
    federated::MAX_ROUND_CONTRIBUTIONS,
};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    aggregate::{Contribution, Reputation, Rule, aggregate},
    model::Mlp,
    update::{Admission, Update, UpdateError},
};

/// Rounds of arrival history the adaptive deadline looks at.
const HISTORY: usize = 16;
/// Rounds the uptime share looks back over.
const UPTIME_ROUNDS: u64 = 10;
/// Reputation a contributor needs for its contributions to be paid.
pub const PAID_REPUTATION: f64 = 0.5;
/// Scoring rows drawn per round.
const SCORING_ROWS: usize = 200;

/// A job's settings.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// The federated domain.
    pub domain: DomainId,
    /// Aggregation rule.
    pub rule: Rule,
    /// The model's layer sizes.
    pub sizes: Vec<usize>,
    /// Updates needed before the adaptive deadline may close a round (k of n).
    pub min_updates: usize,
    /// Updates that close a round at once (and the most it admits).
    pub max_updates: usize,
    /// Declared rows are capped at this.
    pub max_samples: u32,
    /// The deadline's MAD multiplier.
    pub deadline_k: f64,
    /// Shortest and longest wait after a round opens, ms.
    pub min_wait_ms: u64,
    /// See `min_wait_ms`.
    pub max_wait_ms: u64,
    /// Contributors' local SGD learning rate and batch (published with the model).
    pub lr: f32,
    /// See `lr`.
    pub batch: usize,
    /// Seeds the initial model.
    pub seed: u64,
}

/// Why an update is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The signature does not verify.
    #[error("the update's signature does not verify")]
    Signature,
    /// Admission's own checks.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// Signed for another domain.
    #[error("update for job {got:?}, this job is {expected:?}")]
    WrongJob {
        /// This job.
        expected: String,
        /// The update's.
        got: String,
    },
    /// Trained from another model than the round's.
    #[error("update trained from model {got}, round {round} starts from {expected}")]
    WrongBase {
        /// The round.
        round: u64,
        /// The round's model.
        expected: Hash,
        /// The update's.
        got: Hash,
    },
    /// The weights sent are not the ones signed.
    #[error("the weights sent hash to {got}, the update signs {signed}")]
    WeightsHash {
        /// Signed.
        signed: Hash,
        /// Sent.
        got: Hash,
    },
    /// Declared bytes differ from what arrived, or the bytes are not whole `f32`s.
    #[error("{got} bytes arrived, the update declares {declared} (4 bytes per weight)")]
    Bytes {
        /// Declared.
        declared: u64,
        /// Arrived.
        got: u64,
    },
    /// Not staked as a contributor to the domain.
    #[error("{0:?} is not registered (staked) as a contributor to this job")]
    NotRegistered(Address),
    /// Quarantined.
    #[error("{0:?} is quarantined until round {1}")]
    Quarantined(Address, u64),
    /// The round is closed and waits for the chain.
    #[error("round {0} is closed and waits for the chain; retry for the next round")]
    Closed(u64),
}

/// One admitted update.
#[derive(Clone, Debug)]
struct Pending {
    update: SignedUpdate,
    delta: Vec<f32>,
    rows: u32,
    arrived_ms: u64,
}

/// A round closed by the supervisor, waiting for the chain to record it.
#[derive(Clone, Debug)]
pub struct Closed {
    /// The record to sign and submit.
    pub record: FederatedRound,
    /// The new global model.
    pub model: Vec<f32>,
    /// Its accuracy on the job's test rows.
    pub accuracy: f64,
    /// When it closed.
    pub at_ms: u64,
}

/// Per contributor, what the job knows (for `/api/cluster`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Standing {
    /// Rounds it contributed to (admitted).
    pub rounds: u64,
    /// Of those, kept by the rule.
    pub kept: u64,
    /// Refused signed updates.
    pub strikes: u32,
    /// Last quality recorded, micro-nats.
    pub last_quality_micro: i64,
    /// Rounds of its last admitted updates (the last [`UPTIME_ROUNDS`] at most).
    pub recent: VecDeque<u64>,
}

/// One contributor as a supervisor saves it across restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    /// The contributor.
    pub address: Address,
    /// Its reputation.
    pub reputation: f64,
    /// The round its quarantine ends.
    pub until: u64,
    /// Quarantines it has had.
    pub quarantines: u32,
    /// Its standing.
    pub standing: Standing,
}

/// A supervisor's job.
#[derive(Debug)]
pub struct Job {
    spec: JobSpec,
    mlp: Mlp,
    model: Vec<f32>,
    model_hash: Hash,
    round: u64,
    opened_ms: u64,
    admission: Admission,
    pending: Vec<Pending>,
    closed: Option<Closed>,
    arrivals: VecDeque<u64>,
    reputation: Reputation,
    standing: BTreeMap<Address, Standing>,
    accuracy: Option<f64>,
}

/// The hash of a weight vector as sent: its little-endian `f32`s as an artifact
/// ([`Hash::of_artifact`]: what the chain records and providers serve it by).
pub fn weights_hash(w: &[f32]) -> Hash {
    Hash::of_artifact(&to_bytes(w))
}

/// Little-endian bytes of `w`.
pub fn to_bytes(w: &[f32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `f32`s of little-endian bytes (`None` unless whole).
pub fn from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    b.len()
        .is_multiple_of(4)
        .then(|| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The rows a round is scored on: `SCORING_ROWS` of `train` drawn by `seed`.
pub fn scoring_rows(train: &[usize], seed: u64) -> Vec<usize> {
    let mut scoring = train.to_vec();
    scoring.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    scoring.truncate(SCORING_ROWS);
    scoring
}

/// A reputation as the say a record carries, ppm.
pub fn say_ppm(reputation: f64) -> u32 {
    (reputation.clamp(0.0, 1.0) * PPM as f64).round() as u32
}

/// A contribution's weight in the rule: its (capped) rows times its recorded say.
pub fn weight_of(rows: u32, say_ppm: u32) -> f64 {
    f64::from(rows) * (f64::from(say_ppm) / PPM as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Job {
    /// A job at `round` from `model` (a fresh job: round 0 from the spec's seeded
    /// initialization; a resumed one: the last recorded round's checkpoint).
    pub fn new(spec: JobSpec, round: u64, model: Option<Vec<f32>>, now_ms: u64) -> Result<Self, String> {
        let mlp = Mlp::new(&spec.sizes)?;
        let model = model.unwrap_or_else(|| mlp.init(spec.seed));
        if model.len() != mlp.params() {
            return Err(format!(
                "model has {} weights, layers {:?} need {}",
                model.len(),
                spec.sizes,
                mlp.params()
            ));
        }
        let model_hash = weights_hash(&model);
        let admission = Admission::new(
            Hash::of_encoded(&spec.domain),
            round,
            model.len(),
            spec.max_samples,
            spec.max_updates,
        );
        Ok(Self {
            spec,
            mlp,
            model,
            model_hash,
            round,
            opened_ms: now_ms,
            admission,
            pending: Vec::new(),
            closed: None,
            arrivals: VecDeque::new(),
            reputation: Reputation::new(5),
            standing: BTreeMap::new(),
            accuracy: None,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The open round, its model and the model's hash.
    pub fn model(&self) -> (u64, &[f32], Hash) {
        (self.round, &self.model, self.model_hash)
    }

    /// Updates admitted to the open round.
    pub fn admitted(&self) -> usize {
        self.pending.len()
    }

    /// The round waiting for the chain, if any.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// When the open round opened (the caller's clock, ms).
    pub fn opened_ms(&self) -> u64 {
        self.opened_ms
    }

    /// Accuracy of the current model on the test rows (after the first recorded round).
    pub fn accuracy(&self) -> Option<f64> {
        self.accuracy
    }

    /// Contributors' standing and reputation.
    pub fn standings(&self) -> impl Iterator<Item = (&Address, &Standing, f64, bool)> {
        self.standing
            .iter()
            .map(|(a, s)| (a, s, self.reputation.of(a), self.reputation.quarantined(a, self.round)))
    }

    /// Quarantines `who` has had.
    pub fn quarantines(&self, who: &Address) -> u32 {
        self.reputation.quarantines(who)
    }

    /// What a restarted supervisor must not forget: every contributor's reputation, quarantine
    /// and standing.
    pub fn saved(&self) -> Vec<Saved> {
        let reputation: BTreeMap<Address, (f64, u64, u32)> =
            self.reputation.entries().into_iter().map(|(a, r, u, q)| (a, (r, u, q))).collect();
        let mut who: Vec<Address> = reputation.keys().chain(self.standing.keys()).copied().collect();
        who.sort();
        who.dedup();
        who.into_iter()
            .map(|address| {
                let (reputation, until, quarantines) =
                    reputation.get(&address).copied().unwrap_or((1.0, 0, 0));
                let standing = self.standing.get(&address).cloned().unwrap_or_default();
                Saved { address, reputation, until, quarantines, standing }
            })
            .collect()
    }

    /// Restores what [`Job::saved`] returned — this node's own file, or the standings another
    /// supervisor published (a standby taking the job over): only the last [`UPTIME_ROUNDS`]
    /// distinct rounds of each `recent` are kept, whatever the file held.
    pub fn restore(&mut self, saved: Vec<Saved>) {
        for mut s in saved {
            if s.quarantines > 0 || s.reputation.is_nan() || s.reputation < 1.0 {
                self.reputation.restore([(s.address, s.reputation, s.until, s.quarantines)]);
            }
            let mut recent: Vec<u64> = s.standing.recent.into_iter().collect();
            recent.sort_unstable();
            recent.dedup();
            let keep = recent.len().saturating_sub(UPTIME_ROUNDS as usize);
            s.standing.recent = recent.into_iter().skip(keep).collect();
            self.standing.insert(s.address, s.standing);
        }
    }

    /// Takes in `update` with `weights` (its bytes as sent) at `now_ms`; `registered` says
    /// whether the chain has the contributor staked for the domain. Returns the updates
    /// admitted so far.
    pub fn submit(
        &mut self,
        update: SignedUpdate,
        weights: &[u8],
        registered: bool,
        now_ms: u64,
    ) -> Result<usize, Refusal> {
        if !update.verify() {
            return Err(Refusal::Signature);
        }
        let result = self.check(&update, weights, registered);
        let who = update.contributor;
        match result {
            Ok(delta) => {
                let rows = self.admission.admit(&Update {
                    job: Hash::of_encoded(&self.spec.domain),
                    round: update.round,
                    contributor: who,
                    samples: update.samples,
                    delta: delta.clone(),
                });
                match rows {
                    Ok(rows) => {
                        self.pending.push(Pending { update, delta, rows, arrived_ms: now_ms });
                        Ok(self.pending.len())
                    }
                    Err(e) => Err(self.strike(who, e.into())),
                }
            }
            Err(e) => Err(self.strike(who, e)),
        }
    }

    /// Scores a signed refusal against its contributor (a wrong job, a closed round or a
    /// quarantined sender costs nothing more; a malformed, replayed or mismatched update does).
    fn strike(&mut self, who: Address, e: Refusal) -> Refusal {
        let blameworthy = !matches!(
            e,
            Refusal::WrongJob { .. }
                | Refusal::Closed(_)
                | Refusal::Quarantined(..)
                | Refusal::NotRegistered(_)
                | Refusal::Update(UpdateError::Full(_))
        );
        if blameworthy {
            self.standing.entry(who).or_default().strikes += 1;
            self.reputation.record(who, self.round, false, None);
        }
        e
    }

    fn check(&self, u: &SignedUpdate, weights: &[u8], registered: bool) -> Result<Vec<f32>, Refusal> {
        // First: a sender the chain does not know leaves no trace (strangers cannot fill the
        // standing map with fresh keys).
        if !registered {
            return Err(Refusal::NotRegistered(u.contributor));
        }
        if u.domain != self.spec.domain {
            return Err(Refusal::WrongJob {
                expected: self.spec.domain.to_string(),
                got: u.domain.to_string(),
            });
        }
        if self.closed.is_some() && u.round == self.round {
            return Err(Refusal::Closed(self.round));
        }
        if u.round != self.round {
            return Err(UpdateError::WrongRound { expected: self.round, got: u.round }.into());
        }
        if u.base != self.model_hash {
            return Err(Refusal::WrongBase { round: self.round, expected: self.model_hash, got: u.base });
        }
        if let Some(until) = self.reputation.quarantined_until(&u.contributor, self.round) {
            return Err(Refusal::Quarantined(u.contributor, until));
        }
        if u.bytes != weights.len() as u64 || !weights.len().is_multiple_of(4) {
            return Err(Refusal::Bytes { declared: u.bytes, got: weights.len() as u64 });
        }
        let got = Hash::of_artifact(weights);
        if got != u.weights {
            return Err(Refusal::WeightsHash { signed: u.weights, got });
        }
        // Whole f32s: checked above.
        Ok(from_bytes(weights).unwrap_or_default())
    }

    /// When the open round's adaptive deadline falls, ms.
    pub fn deadline_ms(&self) -> u64 {
        let mut past: Vec<f64> = self.arrivals.iter().map(|v| *v as f64).collect();
        let wait = if past.is_empty() {
            self.spec.min_wait_ms as f64
        } else {
            let m = median(&mut past);
            let mut dev: Vec<f64> = past.iter().map(|v| (v - m).abs()).collect();
            m + self.spec.deadline_k * median(&mut dev)
        };
        let wait = (wait as u64).clamp(self.spec.min_wait_ms, self.spec.max_wait_ms);
        self.opened_ms.saturating_add(wait)
    }

    /// Whether the open round should close at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        if self.closed.is_some() || self.pending.is_empty() {
            return false;
        }
        let n = self.pending.len();
        n >= self.spec.max_updates
            || (n >= self.spec.min_updates && now_ms >= self.deadline_ms())
            || now_ms >= self.opened_ms.saturating_add(self.spec.max_wait_ms)
    }

    /// Closes the open round: aggregates, scores each contribution on 200 rows of `data`'s
    /// `train` rows drawn from `seed`, measures the new model on `test`, and returns the record
    /// to put on chain. Uptime is the share of the last rounds a contributor took part in.
    pub fn close(
        &mut self,
        seed: u64,
        data: &Tabular,
        train: &[usize],
        test: &[usize],
        now_ms: u64,
    ) -> Option<&Closed> {
        if self.pending.is_empty() || self.closed.is_some() {
            return None;
        }
        self.pending.sort_by_key(|p| p.update.contributor);
        self.pending.truncate(MAX_ROUND_CONTRIBUTIONS);
        let scoring = scoring_rows(train, seed);
        let (mlp, global) = (&self.mlp, &self.model);
        let mut loss = |d: &[f32]| -> f64 {
            let w: Vec<f32> = global.iter().zip(d).map(|(g, x)| g + x).collect();
            mlp.quality(&w, data, &scoring).loss
        };
        // The say is recorded in ppm and the weight computed from the recorded value, so an
        // auditor recomputes the aggregate bit for bit.
        let says: Vec<u32> =
            self.pending.iter().map(|p| say_ppm(self.reputation.of(&p.update.contributor))).collect();
        let contributions: Vec<Contribution<'_>> = self
            .pending
            .iter()
            .zip(&says)
            .map(|(p, say)| Contribution { delta: &p.delta, weight: weight_of(p.rows, *say) })
            .collect();
        let result = aggregate(self.spec.rule, &contributions, global.len(), &mut loss);
        let base_loss = loss(&vec![0.0; global.len()]);
        let mut recorded = Vec::with_capacity(self.pending.len());
        for (k, p) in self.pending.iter().enumerate() {
            let who = p.update.contributor;
            let score = result.scores[k].unwrap_or_else(|| base_loss - loss(&p.delta));
            let kept = result.kept[k];
            // A contributor below `PAID_REPUTATION` (on probation after a quarantine, or after
            // dropped updates) is scored but recorded with a quality of at most 0: it earns
            // nothing until it has rebuilt its standing.
            let paid = self.reputation.of(&who) >= PAID_REPUTATION;
            self.reputation.record(who, self.round, kept, Some(score));
            let measured = ((score * 1e6).round() as i64).clamp(-1_000_000_000_000, 1_000_000_000_000);
            let quality_micro = if paid { measured } else { measured.min(0) };
            let s = self.standing.entry(who).or_default();
            s.rounds += 1;
            s.kept += u64::from(kept);
            s.last_quality_micro = measured;
            s.recent.push_back(self.round);
            let since = self.round.saturating_sub(UPTIME_ROUNDS - 1);
            s.recent.retain(|r| *r >= since);
            let window = self.round - since + 1;
            let present = s.recent.len() as u64;
            recorded.push(RoundContribution {
                update: p.update.clone(),
                quality_micro,
                uptime_ppm: (present.min(window) * PPM / window) as u32,
                kept,
                say_ppm: says[k],
            });
        }
        let model: Vec<f32> = global.iter().zip(&result.delta).map(|(g, d)| g + d).collect();
        let accuracy = self.mlp.quality(&model, data, test).accuracy;
        let model_loss = self.mlp.quality(&model, data, &scoring).loss;
        let mut history: Vec<u64> =
            self.pending.iter().map(|p| p.arrived_ms.saturating_sub(self.opened_ms)).collect();
        history.sort_unstable();
        if let Some(last_needed) = history.get(self.spec.min_updates.saturating_sub(1).min(history.len() - 1))
        {
            self.arrivals.push_back(*last_needed);
            if self.arrivals.len() > HISTORY {
                self.arrivals.pop_front();
            }
        }
        let record = FederatedRound {
            domain: self.spec.domain.clone(),
            round: self.round,
            base: self.model_hash,
            model: weights_hash(&model),
            model_quality_micro: (-model_loss * 1e6).round() as i64,
            contributions: BoundedVec::try_from_vec(recorded).unwrap_or_default(),
            standing: Hash::ZERO,
        };
        self.closed = Some(Closed { record, model, accuracy, at_ms: now_ms });
        self.closed.as_ref()
    }

    /// The chain has recorded `rounds` rounds with model `model`: adopts the closed round's
    /// model when it is the one recorded and opens the next round. Returns the adopted round's
    /// record. A chain that recorded someone else's round (another supervisor) leaves this job
    /// behind: `Err` names the model it lacks.
    pub fn recorded(&mut self, rounds: u64, model: Hash, now_ms: u64) -> Result<Option<Closed>, Hash> {
        // Behind the job: the chain's audit rejected a round this job had adopted (the model
        // rewound to that round's base).
        let fresh = rounds == 0 && model == Hash::ZERO;
        if rounds < self.round || (rounds == self.round && model != self.model_hash && !fresh) {
            self.closed = None;
            return Err(model);
        }
        if rounds == self.round {
            return Ok(None);
        }
        match self.closed.take() {
            Some(c) if rounds == self.round + 1 && c.record.model == model => {
                self.open(rounds, c.model.clone(), now_ms);
                self.accuracy = Some(c.accuracy);
                Ok(Some(c))
            }
            other => {
                self.closed = other;
                Err(model)
            }
        }
    }

    /// Drops a closed round the chain did not take (the open round starts over).
    pub fn reopen(&mut self, now_ms: u64) {
        if self.closed.take().is_some() {
            let model = self.model.clone();
            self.open(self.round, model, now_ms);
        }
    }

    fn open(&mut self, round: u64, model: Vec<f32>, now_ms: u64) {
        self.model_hash = weights_hash(&model);
        self.model = model;
        self.round = round;
        self.opened_ms = now_ms;
        self.pending.clear();
        self.admission = Admission::new(
            Hash::of_encoded(&self.spec.domain),
            round,
            self.model.len(),
            self.spec.max_samples,
            self.spec.max_updates,
        );
    }
}

#[cfg(test)]
mod tests;
