//! The optimization engine (DESIGN §5), first part: mixed parameter spaces searched in a unit
//! cube, the [`Optimizer`] ask/tell interface with island migration and snapshots, SHADE
//! (success-history adaptive differential evolution), and the benchmark functions.
//!
//! Convention: optimizers minimize a loss; domains that maximize report `-performance`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auto;
pub mod bench;
pub mod cmaes;
pub mod domain;
pub mod driver;
pub mod functions;
pub mod ga;
pub mod narrowed;
pub mod shade;
pub mod space;
pub mod tpe;

pub use auto::Auto;
pub use cmaes::CmaEs;
pub use ga::{Ga, GaConfig};
pub use shade::Shade;
pub use space::{Dim, Space, Value};
pub use tpe::Tpe;

/// One evaluated candidate: its point in the unit cube and its loss (lower is better;
/// `f64::INFINITY` for a failed evaluation).
#[derive(Clone, Debug, PartialEq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct Evaluated {
    /// Point in `[0, 1]^d`.
    pub x: Vec<f64>,
    /// Loss.
    pub loss: f64,
}

/// An ask/tell optimizer over the unit cube.
pub trait Optimizer: Send {
    /// Up to `n` new candidates to evaluate.
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>>;
    /// Results of evaluated candidates (in any order, any subset of what was asked).
    fn tell(&mut self, results: &[Evaluated]);
    /// A migrant (for example the chain's verified champion): replaces the worst member at the
    /// next generation boundary.
    fn inject(&mut self, migrant: Evaluated);
    /// The best candidate seen.
    fn best(&self) -> Option<&Evaluated>;
    /// The search stage (staged optimizers advance it after `optimization_patience`
    /// generations without improvement; others stay at 0).
    fn stage(&self) -> u32 {
        0
    }
    /// The full state, to resume after a restart.
    fn snapshot(&self) -> Vec<u8>;
    /// What runs, for logs and status (`auto` says what it chose).
    fn kind(&self) -> &'static str {
        "plugin"
    }
    /// A moment of the search the node's loop reports (the seed's optimizer hooks); built-in
    /// optimizers ignore them, a plugin receives those it declared.
    fn hook(&mut self, _event: &Hook) {}
    /// Restores a snapshot taken by the same optimizer kind.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError>;
    /// Trials another node measured (`source` names it): a model-based optimizer learns them,
    /// weighted by [`Self::trust`]; others ignore them (they learn other nodes' results from
    /// the chain's champions).
    fn observe(&mut self, _source: u32, _trials: &[Evaluated]) {}
    /// How far `source`'s trials are believed, in `[0, 1]`; 0 forgets them all.
    fn trust(&mut self, _source: u32, _weight: f64) {}
    /// Points `source` is measuring now (they replace its previous ones): proposals avoid them.
    fn pending_elsewhere(&mut self, _source: u32, _points: &[Vec<f64>]) {}
    /// Whether [`Self::observe`] teaches it anything (a model-based optimizer): a node spends
    /// no checks on other nodes' trials for an optimizer that ignores them.
    fn learns_shared(&self) -> bool {
        false
    }
    /// Points asked and not told yet (what this node is measuring now, for other nodes).
    fn in_flight(&self) -> Vec<Vec<f64>> {
        Vec::new()
    }
    /// Whether each result improves its next proposal (a model-based optimizer): it is asked
    /// no more points than the workers measure at once, since a point asked before the
    /// results it could have learned from is a worse point, and a batch bigger than the
    /// workers buys no speed. Population-based optimizers are asked whole batches (their
    /// proposals cost nothing and a cheap domain's loop must not turn per point).
    fn sequential(&self) -> bool {
        false
    }
}

/// The optimizer hooks the node's loop calls (`on_generation_start`, `on_between_candidates`,
/// `on_generation_end`, `on_champion_found`: the Python system's names).
#[derive(Clone, Debug, PartialEq)]
pub enum Hook {
    /// A batch (a "generation" of the loop) is about to be evaluated.
    GenerationStart {
        /// Batches so far.
        generation: u64,
    },
    /// One candidate of the batch was measured.
    BetweenCandidates {
        /// Candidates of the batch measured so far.
        done: usize,
        /// Candidates in the batch.
        total: usize,
    },
    /// The batch was measured and told.
    GenerationEnd {
        /// Batches so far.
        generation: u64,
        /// The best loss the optimizer has seen.
        best_loss: Option<f64>,
    },
    /// The network verified a new champion (its point and the loss this node measured for it).
    ChampionFound {
        /// Its point in the unit cube.
        x: Vec<f64>,
        /// Its loss.
        loss: f64,
    },
}

impl Hook {
    /// The method a plugin implements for it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::GenerationStart { .. } => "on_generation_start",
            Self::BetweenCandidates { .. } => "on_between_candidates",
            Self::GenerationEnd { .. } => "on_generation_end",
            Self::ChampionFound { .. } => "on_champion_found",
        }
    }
}

/// Keeps the better of a pending migrant and a new one (injection happens at the next
/// generation boundary).
pub(crate) fn keep_better_migrant(slot: &mut Option<(Vec<f64>, f64)>, migrant: Evaluated) {
    if slot.as_ref().is_none_or(|(_, l)| migrant.loss < *l) {
        *slot = Some((migrant.x, migrant.loss));
    }
}

/// Records `(x, loss)` in `best` if it beats what is there.
pub(crate) fn note_best(best: &mut Option<Evaluated>, x: &[f64], loss: f64) {
    if best.as_ref().is_none_or(|b| loss < b.loss) {
        *best = Some(Evaluated { x: x.to_vec(), loss });
    }
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut rand_chacha::ChaCha8Rng) -> f64 {
    use rand::Rng;
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A snapshot does not decode.
#[derive(Debug, thiserror::Error)]
#[error("optimizer snapshot does not decode: {0}")]
pub struct SnapshotError(pub String);
