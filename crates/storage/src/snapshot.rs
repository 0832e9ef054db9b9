//! State snapshots at finality checkpoints: the state's records in hashed chunks plus a
//! manifest naming the block, its header and the state root. Import verifies every chunk and
//! the rebuilt root against the header before anything is written.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use doin_consensus::{GenesisSpec, RecentBlock, State, StateKey, Tip};
use doin_primitives::{BlockHeader, Hash, encode};
use redb::Durability;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{
    error::StorageError,
    store::{ChainStore, StoreOptions, open_db},
    tables::{CANONICAL, HEADERS, META, RECENT, SCHEMA_VERSION, STATE},
};

/// Snapshot format version.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Target size of one chunk file.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// One chunk file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// File name inside the snapshot directory.
    pub file: String,
    /// BLAKE3 of the file.
    pub hash: Hash,
    /// Records in it.
    pub records: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// `manifest.json` of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// Chain id.
    pub chain_id: u64,
    /// The chain's genesis hash.
    pub genesis: Hash,
    /// The chain's genesis spec.
    pub genesis_spec: GenesisSpec,
    /// Checkpoint height.
    pub height: u64,
    /// Checkpoint block hash.
    pub block_hash: Hash,
    /// Checkpoint header, hex of its canonical encoding.
    pub header: String,
    /// State root (equals the header's).
    pub state_root: Hash,
    /// Total records.
    pub records: u64,
    /// Chunk files in order.
    pub chunks: Vec<ChunkInfo>,
    /// The quorum views of the blocks before the checkpoint (hex of their encoding).
    pub recent: String,
}

/// A snapshot failed to export, verify or import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// File system error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest or a chunk is malformed.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// A chunk's hash differs from the manifest.
    #[error("chunk {file} is corrupted: its hash is {got}, the manifest says {expected}")]
    ChunkHash {
        /// File.
        file: String,
        /// Computed.
        got: Hash,
        /// Expected.
        expected: Hash,
    },
    /// The snapshot is not for the block the caller trusts.
    #[error("snapshot is of block {got}, but {expected} was expected")]
    WrongBlock {
        /// In the snapshot.
        got: Hash,
        /// Expected.
        expected: Hash,
    },
    /// The rebuilt state does not match the header.
    #[error("snapshot state does not match its header: {0}")]
    Root(String),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { what, source }
}

/// Writes `state` (the post-state of `header`) as a snapshot into `dir`.
pub fn export_state(
    state: &State,
    header: &BlockHeader,
    genesis: Hash,
    genesis_spec: &GenesisSpec,
    dir: &Path,
) -> Result<Manifest, SnapshotError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut chunks = Vec::new();
    let mut current: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut current_bytes = 0usize;
    let mut total = 0u64;
    let mut flush = |records: &mut Vec<(Vec<u8>, Vec<u8>)>, bytes: &mut usize| -> Result<(), SnapshotError> {
        if records.is_empty() {
            return Ok(());
        }
        let data = encode(records);
        let file = format!("chunk-{:05}.bin", chunks.len());
        fs::write(dir.join(&file), &data).map_err(io(format!("writing {file}")))?;
        chunks.push(ChunkInfo {
            file,
            hash: Hash::of(&data),
            records: records.len() as u64,
            bytes: data.len() as u64,
        });
        records.clear();
        *bytes = 0;
        Ok(())
    };
    for key in state.keys() {
        let Some(value) = state.record(&key) else { continue };
        let k = encode(&key);
        current_bytes += k.len() + value.len() + 8;
        current.push((k, value));
        total += 1;
        if current_bytes >= CHUNK_BYTES {
            flush(&mut current, &mut current_bytes)?;
        }
    }
    flush(&mut current, &mut current_bytes)?;
    let recent: Vec<RecentBlock> = state.recent().cloned().collect();
    let manifest = Manifest {
        format: SNAPSHOT_FORMAT,
        chain_id: state.meta().chain_id,
        genesis,
        genesis_spec: genesis_spec.clone(),
        height: header.height,
        block_hash: header.id(),
        header: hex::encode(encode(header)),
        state_root: state.root(),
        records: total,
        chunks,
        recent: hex::encode(encode(&recent)),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    fs::write(dir.join("manifest.json"), json).map_err(io("writing manifest.json".into()))?;
    info!(target: "storage::snapshot", height = header.height, records = total, chunks = manifest.chunks.len(), "snapshot exported");
    Ok(manifest)
}

/// A verified snapshot: its manifest, header and rebuilt state.
#[derive(Debug)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// The checkpoint header.
    pub header: BlockHeader,
    /// The rebuilt, root-checked state.
    pub state: State,
    /// Bytes of chunk data read.
    pub bytes: u64,
}

/// Reads and verifies the snapshot in `dir`: every chunk's hash, the header's hash (against
/// `expect` when given), and the state rebuilt from the records against the header's root.
pub fn verify(dir: &Path, expect: Option<Hash>) -> Result<Verified, SnapshotError> {
    let manifest_path = dir.join("manifest.json");
    let text = fs::read(&manifest_path).map_err(io(format!("reading {}", manifest_path.display())))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| SnapshotError::Malformed(format!("manifest.json: {e}")))?;
    if manifest.format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::Malformed(format!(
            "format {} is not the supported {SNAPSHOT_FORMAT}",
            manifest.format
        )));
    }
    let header_bytes =
        hex::decode(&manifest.header).map_err(|e| SnapshotError::Malformed(format!("header: {e}")))?;
    let header: BlockHeader = doin_primitives::decode(&header_bytes, 64 * 1024, "header")
        .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    let hash = header.id();
    if hash != manifest.block_hash {
        return Err(SnapshotError::WrongBlock { got: hash, expected: manifest.block_hash });
    }
    if let Some(expected) = expect.filter(|e| *e != hash) {
        return Err(SnapshotError::WrongBlock { got: hash, expected });
    }
    if header.state_root != manifest.state_root || header.height != manifest.height {
        return Err(SnapshotError::Root("the manifest's root or height differs from its header".into()));
    }
    let mut records = Vec::with_capacity(manifest.records as usize);
    let mut bytes = 0u64;
    for chunk in &manifest.chunks {
        if chunk.file.contains('/') || chunk.file.contains("..") {
            return Err(SnapshotError::Malformed(format!("chunk name {:?}", chunk.file)));
        }
        let data = fs::read(dir.join(&chunk.file)).map_err(io(format!("reading {}", chunk.file)))?;
        let got = Hash::of(&data);
        if got != chunk.hash {
            return Err(SnapshotError::ChunkHash { file: chunk.file.clone(), got, expected: chunk.hash });
        }
        bytes += data.len() as u64;
        let items: Vec<(Vec<u8>, Vec<u8>)> =
            borsh::from_slice(&data).map_err(|e| SnapshotError::Malformed(format!("{}: {e}", chunk.file)))?;
        for (k, v) in items {
            let key: StateKey = borsh::from_slice(&k)
                .map_err(|e| SnapshotError::Malformed(format!("{}: key: {e}", chunk.file)))?;
            records.push((key, v));
        }
    }
    if records.len() as u64 != manifest.records {
        return Err(SnapshotError::Malformed(format!(
            "{} records, the manifest says {}",
            records.len(),
            manifest.records
        )));
    }
    let recent_bytes =
        hex::decode(&manifest.recent).map_err(|e| SnapshotError::Malformed(format!("recent: {e}")))?;
    let recent: Vec<RecentBlock> =
        borsh::from_slice(&recent_bytes).map_err(|e| SnapshotError::Malformed(format!("recent: {e}")))?;
    let tip = Tip { hash, height: header.height };
    let state = State::from_records(records, tip, recent, &header.state_root)
        .map_err(|e| SnapshotError::Root(e.to_string()))?;
    Ok(Verified { manifest, header, state, bytes })
}

/// What importing a snapshot measured.
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// Checkpoint height.
    pub height: u64,
    /// Records restored.
    pub records: u64,
    /// Chunk bytes read.
    pub bytes: u64,
    /// Seconds spent, verification included.
    pub seconds: f64,
}

/// Verifies the snapshot in `dir` and creates a new store at `path` whose base is the
/// snapshot's checkpoint. Refuses to overwrite an existing store.
pub fn import(
    dir: &Path,
    path: &Path,
    expect: Option<Hash>,
    opts: StoreOptions,
) -> Result<(ChainStore, ImportReport), SnapshotError> {
    let start = Instant::now();
    if path.exists() {
        return Err(SnapshotError::Io {
            what: format!("importing into {}", path.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a chain store already exists there; choose an empty --data-dir",
            ),
        });
    }
    let v = verify(dir, expect)?;
    let db = open_db(path)?;
    let mut txn = db.begin_write().map_err(StorageError::from)?;
    txn.set_durability(Durability::Immediate).map_err(StorageError::from)?;
    {
        let spec = serde_json::to_vec(&v.manifest.genesis_spec)
            .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let mut meta = txn.open_table(META).map_err(StorageError::from)?;
        let put =
            |meta: &mut redb::Table<'_, &str, &[u8]>, k: &str, val: &[u8]| -> Result<(), StorageError> {
                meta.insert(k, val)?;
                Ok(())
            };
        put(&mut meta, "schema_version", &SCHEMA_VERSION.to_le_bytes())?;
        put(&mut meta, "genesis", &v.manifest.genesis.0)?;
        put(&mut meta, "genesis_spec", &spec)?;
        put(&mut meta, "base", &v.header.height.to_le_bytes())?;
        put(&mut meta, "tip", &v.manifest.block_hash.0)?;
        let hash = v.manifest.block_hash;
        txn.open_table(HEADERS)
            .map_err(StorageError::from)?
            .insert(hash.0.as_slice(), encode(&v.header).as_slice())
            .map_err(StorageError::from)?;
        txn.open_table(CANONICAL)
            .map_err(StorageError::from)?
            .insert(v.header.height, hash.0.as_slice())
            .map_err(StorageError::from)?;
        let mut st = txn.open_table(STATE).map_err(StorageError::from)?;
        for key in v.state.keys() {
            if let Some(val) = v.state.record(&key) {
                st.insert(encode(&key).as_slice(), val.as_slice()).map_err(StorageError::from)?;
            }
        }
        let mut recent = txn.open_table(RECENT).map_err(StorageError::from)?;
        for r in v.state.recent() {
            recent.insert(r.height, encode(r).as_slice()).map_err(StorageError::from)?;
        }
    }
    txn.commit().map_err(StorageError::from)?;
    let report = ImportReport {
        height: v.header.height,
        records: v.manifest.records,
        bytes: v.bytes,
        seconds: start.elapsed().as_secs_f64(),
    };
    let store = ChainStore::from_written(db, path, opts, v.manifest.genesis, v.state);
    info!(target: "storage::snapshot", height = report.height, records = report.records, seconds = report.seconds, "snapshot imported");
    Ok((store, report))
}

impl ChainStore {
    /// Exports the state at the finalized checkpoint (the genesis while nothing is final) into
    /// `dir`.
    pub fn export_snapshot(&self, dir: &Path) -> Result<Manifest, SnapshotError> {
        let checkpoint = self.finalized();
        let hash = if checkpoint.height == 0 && checkpoint.hash == Hash::ZERO {
            self.canonical_hash(0)?
                .ok_or_else(|| SnapshotError::Malformed("no genesis in the store".into()))?
        } else {
            checkpoint.hash
        };
        let header = self
            .header(&hash)?
            .ok_or_else(|| SnapshotError::Malformed(format!("checkpoint header {hash} missing")))?;
        let state = self.state_for(&hash)?.ok_or_else(|| {
            SnapshotError::Malformed(format!("state at checkpoint {} is not available", header.height))
        })?;
        let spec = self
            .genesis_spec()?
            .ok_or_else(|| SnapshotError::Malformed("the store has no genesis spec".into()))?;
        export_state(&state, &header, self.genesis_hash(), &spec, dir)
    }
}

/// The default snapshot directory for a data directory.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshot")
}
