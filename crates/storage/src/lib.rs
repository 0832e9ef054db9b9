//! DOIN chain storage: one redb file holding headers, bodies, the canonical index, transaction
//! and certificate lookups, receipts, and the canonical tip's state records.
//!
//! - [`ChainStore::open`] creates a store from a genesis spec or opens one, checks its schema
//!   version and chain, and rebuilds the tip state from its records, verified against the tip
//!   header's state root.
//! - [`ChainStore::import`] validates a block against its parent's state (`apply_block`) and
//!   commits the block, its receipt, its indexes and its state changes in **one** write
//!   transaction; [`ChainStore::import_many`] groups canonical extensions into fewer durable
//!   commits for sync.
//! - Every canonical block keeps an undo record (the previous values of the records it wrote)
//!   until it is final, so a heavier fork is switched to atomically — revert to the common
//!   ancestor, apply the branch — and recent states can be rebuilt; nothing below the finalized
//!   checkpoint is ever reverted.
//! - [`snapshot`] exports the state at the finalized checkpoint as hashed chunks and imports it
//!   only after every chunk and the rebuilt root match the header.
//! - Non-archive stores drop block bodies `keep_bodies` blocks behind finality; headers,
//!   receipts, indexes and state stay.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod error;
mod migrate;
pub mod snapshot;
mod store;
mod tables;

pub use error::{ImportError, StorageError};
pub use store::{ChainStore, Imported, StoreOptions};
pub use tables::SCHEMA_VERSION;
