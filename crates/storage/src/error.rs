//! Storage errors: each says what failed and what to do about it.

use doin_primitives::Hash;

/// Opening, reading or writing the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database file is damaged (torn write, truncation, bit rot). Nothing was read from it.
    #[error(
        "the chain store at {path} is corrupted ({detail}); move it aside and re-sync \
         (doin node --reset-chain) or restore a snapshot (doin snapshot import)"
    )]
    Corrupted {
        /// Store path.
        path: String,
        /// What redb or the consistency check reported.
        detail: String,
    },
    /// The store was written by a schema this build cannot read.
    #[error("{0}")]
    Schema(String),
    /// The store belongs to another chain.
    #[error(
        "the chain store holds genesis {found}, but this node's genesis is {expected}; use another --data-dir or --reset-chain"
    )]
    WrongChain {
        /// Genesis in the store.
        found: Hash,
        /// Genesis expected.
        expected: Hash,
    },
    /// Another process has the store open.
    #[error("the chain store at {0} is in use by another process; stop it or choose another --data-dir")]
    Locked(String),
    /// The underlying database failed.
    #[error("chain store error: {0}")]
    Db(#[from] redb::Error),
    /// File system error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A stored value does not decode or does not match its neighbours.
    #[error("inconsistent chain store: {0}")]
    Inconsistent(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Importing a block failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The block breaks a consensus rule; nothing was stored.
    #[error("block {hash} at height {height} is invalid: {source}")]
    Invalid {
        /// Block hash.
        hash: Hash,
        /// Height.
        height: u64,
        /// The rule.
        source: Box<doin_consensus::BlockError>,
    },
    /// The parent is unknown (fetch it first) or its state is no longer available.
    #[error("parent {parent} of block {hash} is unknown or below the finalized checkpoint")]
    UnknownParent {
        /// Block hash.
        hash: Hash,
        /// Parent hash.
        parent: Hash,
    },
    /// Switching to the block's branch would revert a finalized block.
    #[error("block {hash} forks below the finalized checkpoint at height {finalized}")]
    BelowFinality {
        /// Block hash.
        hash: Hash,
        /// Finalized height.
        finalized: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<redb::Error> for ImportError {
    fn from(e: redb::Error) -> Self {
        Self::Storage(StorageError::Db(e))
    }
}
