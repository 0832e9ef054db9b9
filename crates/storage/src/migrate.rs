//! Schema migrations. Each step rewrites a store from one schema version to the next inside
//! one write transaction; versions without a path stop with instructions.

use redb::Database;

use crate::{error::StorageError, tables::SCHEMA_VERSION};

/// Brings a store at `version` up to [`SCHEMA_VERSION`], or explains what to do.
pub(crate) fn migrate(_db: &Database, version: u32, path: &str) -> Result<(), StorageError> {
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(StorageError::Schema(format!(
            "the chain store at {path} has schema version {version}, written by a newer doin; this build \
             reads up to version {SCHEMA_VERSION}: upgrade doin, or use another --data-dir"
        )));
    }
    // Steps from older versions go here as `(from, fn(&WriteTransaction))`, applied in order.
    // Versions 1 and 2 predate consensus changes (1: VRF headers, beacon, relative tolerances;
    // 2: commits bound on chain, seal leaders, quorums from the sealing block's beacon; 3: finality
    // by stake, votes and evidence in block bodies): their
    // blocks and state records no longer decode and their chains are not this protocol's, so
    // they have no path; anything older is a pre-release layout.
    Err(StorageError::Schema(format!(
        "the chain store at {path} has schema version {version}, from an earlier protocol that cannot be \
         migrated to {SCHEMA_VERSION}: move it aside and re-sync (doin node --reset-chain) or restore a \
         snapshot (doin snapshot import)"
    )))
}
