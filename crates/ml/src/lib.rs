//! Built-in machine-learning domains (DESIGN §5), trained with burn's flex backend on the CPU on
//! real data that ships with this crate (`data/README.md`): an MLP classifier on the UCI optical
//! digits set ([`MlpClassifier`]) and an MLP forecaster on the weekly Mauna Loa CO₂ series
//! ([`Co2Forecaster`]). Evaluators train and measure on data their seed selects.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod classifier;
pub mod data;
pub mod forecaster;
pub mod model;
pub mod net;
mod params;

pub use classifier::MlpClassifier;
pub use forecaster::Co2Forecaster;

use doin_primitives::Hash;

/// The training seed: fixed for the optimizer, the evaluator's seed otherwise.
pub(crate) fn seed_u64(seed: Option<&Hash>) -> u64 {
    seed.map_or(0x5eed, |s| u64::from_le_bytes(s.0[..8].try_into().unwrap_or_default()))
}
