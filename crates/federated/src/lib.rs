//! Federated training (DESIGN §6): what a contributor may send ([`update`]: shape, finite
//! weights, size, the job and round it belongs to, replays — each refusal named), how a
//! supervisor combines the updates of a round ([`aggregate`]: FedAvg weighted by samples,
//! coordinate-wise trimmed mean and median, Krum, MultiKrum, and the loss-scored rule that
//! scores each contribution by the loss change it causes on seeded data), the model of the
//! built-in federated domain ([`model`]: an MLP whose parameters are one flat vector, trained
//! by SGD), how a round's pool is split among its contributors ([`payout`]: the seed's
//! 40/35/15/10 score, 80 % base and 20 % bonuses, integer only) and the label-skewed split
//! federated benchmarks use ([`split`]).
//!
//! Everything here is sans-I/O and deterministic for a given seed: the node's shell moves the
//! artifacts, signs and schedules.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod aggregate;
pub mod audit;
pub mod experiment;
pub mod model;
pub mod split;
pub mod supervisor;
pub mod update;

pub use aggregate::{Aggregated, Rule, aggregate};
/// How a round's pool is split: consensus owns the formula (`doin_consensus::payout`).
pub use doin_consensus::payout;
pub use model::Mlp;
pub use update::{Admission, Update, UpdateError};
