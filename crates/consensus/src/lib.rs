//! The DOIN state-transition function: Proof of Optimization, fees, rewards, difficulty,
//! reputation, payment channels and fork choice.
//!
//! Data flow: a [`GenesisSpec`] builds the first [`State`] and block; [`apply_block`] takes a
//! state and a block and returns the next state and a [`Receipt`], or a [`BlockError`] that names
//! the broken rule. [`build_block`] runs the same transition to produce a block. A `State` is a
//! set of persistent maps (cheap to clone: keep one per recent block for reorgs) mirrored into an
//! authenticated Jellyfish Merkle tree whose root is the header's `state_root`.
//!
//! This crate is deterministic and I/O-free: no clock, no randomness, no floats, no threads, no
//! hash-map iteration. Time and seeds come in through block contents. Arithmetic is checked and
//! an overflow is an invalid block, never a panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod block;
pub mod certs;
pub mod commits;
pub mod disputes;
pub mod economics;
pub mod error;
pub mod federated;
pub mod finality;
pub mod fixed;
pub mod fork_choice;
pub mod genesis;
pub mod params;
pub mod payout;
pub mod quorum;
pub mod state;
pub mod testkit;
pub mod tree;
mod txs;

pub use block::{BlockTemplate, Receipt, apply_block, build_block, heartbeat_leader, heartbeat_slot};
pub use certs::CertReceipt;
pub use commits::{check_commit, seal_leader, seal_slot};
pub use error::{BlockError, CertError, TxError};
pub use finality::FinalityError;
pub use fork_choice::ChainTip;
pub use genesis::{Allocation, GenesisDomain, GenesisSpec, GenesisStake};
pub use params::ProtocolParams;
pub use state::{RecentBlock, RecordChange, RecordError, State, StateKey, Tip};
pub use txs::TxReceipt;
