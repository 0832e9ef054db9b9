//! The DOIN node (DESIGN §4, §5, §8): configuration in the Python system's format, the node
//! key, built-in and plugin domains, the optimizer loops, the Proof-of-Optimization pipeline,
//! block production, the mempool and chain sync.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod adversary;
pub mod artifacts;
pub mod channels;
pub mod config;
pub mod domains;
pub mod federated;
pub mod files;
pub mod finality;
pub mod following;
pub mod genesis;
pub mod gossip_check;
pub mod identity;
pub mod intake;
pub mod join;
pub mod market;
pub mod mempool;
pub mod models;
pub mod node;
pub mod optimizer;
pub mod own_claims;
pub mod participation;
pub mod production;
pub mod serving;
pub mod snapshots;
pub mod store;
pub mod tally;
pub mod trials;
pub mod verification;

pub use config::{ConfigError, DomainConfig, Loaded, NodeConfig};
pub use node::{ADVERSARIES, Adversary, NodeError, RunLimits, run};
