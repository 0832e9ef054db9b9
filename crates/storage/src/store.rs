//! [`ChainStore`]: blocks, receipts, indexes and the canonical state in one redb file; every
//! imported block and its state changes are committed in one write transaction.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use borsh::BorshDeserialize;
use doin_consensus::{
    GenesisSpec, RecentBlock, RecordChange, State, StateKey, Tip, apply_block,
    fork_choice::{self, ChainTip},
    state::Checkpoint,
};
use doin_primitives::{Block, BlockBody, BlockHeader, Hash, encode};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use tracing::{debug, info, warn};

use crate::{
    error::{ImportError, StorageError},
    tables::{
        BODIES, CANONICAL, CERT_INDEX, HEADERS, META, RECEIPTS, RECENT, SCHEMA_VERSION, STATE, TX_INDEX, UNDO,
    },
};

/// Side-branch blocks applied again at most to rebuild a post-state a restart forgot.
pub(crate) const MAX_REPLAY: usize = 512;

/// How a store keeps history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Keep every block body forever.
    pub archive: bool,
    /// In non-archive mode: bodies kept behind the finalized checkpoint.
    pub keep_bodies: u64,
    /// Post-states kept in memory for side branches and recent canonical blocks.
    pub max_states: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { archive: false, keep_bodies: 10_000, max_states: 256 }
    }
}

/// What importing a block did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    /// Already stored.
    Known,
    /// Extended the canonical chain to `height`.
    Extended {
        /// New tip height.
        height: u64,
    },
    /// Stored on a side branch that does not (yet) outweigh the canonical chain.
    Side {
        /// Its height.
        height: u64,
    },
    /// The block's branch became canonical.
    Reorg {
        /// Common ancestor height.
        ancestor: u64,
        /// Canonical blocks reverted.
        reverted: u64,
        /// Blocks of the new branch applied.
        applied: u64,
    },
}

/// The chain store. See the crate docs.
pub struct ChainStore {
    db: Database,
    path: PathBuf,
    opts: StoreOptions,
    genesis: Hash,
    /// Lowest height whose state the store can rebuild (0, or a snapshot's height).
    base: u64,
    tip: State,
    /// The newest finalized checkpoint any canonical tip of this store has carried. A reorg
    /// onto a heavier branch (a higher justified checkpoint) may carry an older finalized one
    /// in its state — that branch still holds this checkpoint — but the store's own never
    /// moves back: what it pruned and which forks it refuses follow this one (persisted).
    finalized: Checkpoint,
    /// Post-states of recent canonical blocks and side branches, by block hash.
    states: HashMap<Hash, State>,
}

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore").field("path", &self.path).field("tip", &self.tip.tip()).finish()
    }
}

fn key_bytes(key: &StateKey) -> Vec<u8> {
    encode(key)
}

fn decode<T: BorshDeserialize>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    borsh::from_slice(bytes).map_err(|e| StorageError::Inconsistent(format!("{what} does not decode: {e}")))
}

fn hash_of(bytes: &[u8]) -> Result<Hash, StorageError> {
    let arr: [u8; 32] =
        bytes.try_into().map_err(|_| StorageError::Inconsistent("a stored hash is not 32 bytes".into()))?;
    Ok(Hash(arr))
}

pub(crate) fn open_db(path: &Path) -> Result<Database, StorageError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| StorageError::Io { what: format!("creating {}", parent.display()), source })?;
    }
    Database::create(path).map_err(|e| {
        let shown = path.display().to_string();
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked(shown),
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                StorageError::Corrupted { path: shown, detail }
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                StorageError::Corrupted { path: shown, detail: source.to_string() }
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(source)) => {
                StorageError::Io { what: format!("opening {shown}"), source }
            }
            other => StorageError::Corrupted { path: shown, detail: other.to_string() },
        }
    })
}

impl ChainStore {
    /// Opens the store at `path`, creating it from `genesis` if it is new. Checks the schema
    /// version and the chain, rebuilds the tip state from its records and verifies it against the
    /// tip header's state root.
    pub fn open(path: &Path, genesis: &GenesisSpec, opts: StoreOptions) -> Result<Self, StorageError> {
        let (genesis_state, genesis_block) =
            genesis.build().map_err(|e| StorageError::Inconsistent(format!("genesis spec: {e}")))?;
        let db = open_db(path)?;
        let version = read_meta(&db, "schema_version")?;
        if version.is_none() {
            info!(target: "storage", path = %path.display(), "creating chain store");
            let spec = serde_json::to_vec(genesis).map_err(|e| StorageError::Inconsistent(e.to_string()))?;
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                meta.insert("genesis", genesis_block.hash().0.as_slice())?;
                meta.insert("genesis_spec", spec.as_slice())?;
                meta.insert("base", 0u64.to_le_bytes().as_slice())?;
                let mut st = txn.open_table(STATE)?;
                for key in genesis_state.keys() {
                    if let Some(v) = genesis_state.record(&key) {
                        st.insert(key_bytes(&key).as_slice(), v.as_slice())?;
                    }
                }
            }
            write_block(&txn, &genesis_block, None)?;
            set_canonical(&txn, &genesis_block, &genesis_state)?;
            txn.commit()?;
        }
        let store = Self::load(db, path, opts)?;
        if store.genesis != genesis_block.hash() {
            return Err(StorageError::WrongChain { found: store.genesis, expected: genesis_block.hash() });
        }
        Ok(store)
    }

    /// Opens an existing store with the genesis it was created with (tools, snapshots).
    pub fn open_existing(path: &Path, opts: StoreOptions) -> Result<Self, StorageError> {
        if !path.exists() {
            return Err(StorageError::Io {
                what: format!("opening {}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no chain store there"),
            });
        }
        Self::load(open_db(path)?, path, opts)
    }

    /// The genesis spec stored at creation.
    pub fn genesis_spec(&self) -> Result<Option<GenesisSpec>, StorageError> {
        read_meta(&self.db, "genesis_spec")?
            .map(|b| serde_json::from_slice(&b).map_err(|e| StorageError::Inconsistent(e.to_string())))
            .transpose()
    }

    /// A store whose records were just written from `state` (snapshot import): no reload.
    pub(crate) fn from_written(
        db: Database,
        path: &Path,
        opts: StoreOptions,
        genesis: Hash,
        state: State,
    ) -> Self {
        let base = state.height();
        let finalized = state.meta().finalized;
        Self {
            db,
            path: path.to_path_buf(),
            opts,
            genesis,
            base,
            tip: state,
            finalized,
            states: HashMap::new(),
        }
    }

    fn load(db: Database, path: &Path, opts: StoreOptions) -> Result<Self, StorageError> {
        let shown = path.display().to_string();
        let version = read_meta(&db, "schema_version")?.ok_or_else(|| {
            StorageError::Schema(format!("{shown} has no schema version: not a DOIN chain store"))
        })?;
        let version = u32::from_le_bytes(version.as_slice().try_into().unwrap_or([0; 4]));
        crate::migrate::migrate(&db, version, &shown)?;
        let genesis = hash_of(
            &read_meta(&db, "genesis")?.ok_or_else(|| StorageError::Inconsistent("no genesis".into()))?,
        )?;
        let base = read_meta(&db, "base")?
            .and_then(|b| b.as_slice().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0);
        let tip_hash =
            hash_of(&read_meta(&db, "tip")?.ok_or_else(|| StorageError::Inconsistent("no tip".into()))?)?;
        let read = db.begin_read()?;
        let header = read_header(&read, &tip_hash)?
            .ok_or_else(|| StorageError::Inconsistent(format!("tip header {tip_hash} is missing")))?;
        let mut records = Vec::new();
        for item in read.open_table(STATE)?.iter()? {
            let (k, v) = item?;
            let key: StateKey = decode(k.value(), "a state key")?;
            records.push((key, v.value().to_vec()));
        }
        let recent = read_recent(&read, header.height)?;
        let tip_info = Tip { hash: tip_hash, height: header.height };
        let tip = State::from_records(records, tip_info, recent, &header.state_root).map_err(|e| {
            StorageError::Corrupted { path: shown.clone(), detail: format!("tip state: {e}") }
        })?;
        drop(read);
        let stored: Option<Checkpoint> =
            read_meta(&db, "finalized")?.map(|v| decode(&v, "the finalized checkpoint")).transpose()?;
        let finalized = match stored {
            Some(f) if f.height > tip.meta().finalized.height => f,
            _ => tip.meta().finalized,
        };
        info!(target: "storage", path = %shown, height = header.height, root = %tip.root(), finalized = finalized.height, "chain store open");
        Ok(Self { db, path: path.to_path_buf(), opts, genesis, base, tip, finalized, states: HashMap::new() })
    }

    /// The canonical tip state.
    pub fn tip(&self) -> &State {
        &self.tip
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The finalized checkpoint of the canonical chain: the newest the store's canonical tip
    /// has ever carried (never moves back, not even in a reorg onto a branch whose state
    /// finalized less).
    pub fn finalized(&self) -> Checkpoint {
        self.finalized
    }

    /// A stored header.
    pub fn header(&self, hash: &Hash) -> Result<Option<BlockHeader>, StorageError> {
        read_header(&self.db.begin_read()?, hash)
    }

    /// A stored block (`None` if unknown or its body was pruned).
    pub fn block(&self, hash: &Hash) -> Result<Option<Block>, StorageError> {
        let read = self.db.begin_read()?;
        let Some(header) = read_header(&read, hash)? else { return Ok(None) };
        let bodies = read.open_table(BODIES)?;
        let Some(body) = bodies.get(hash.0.as_slice())? else { return Ok(None) };
        Ok(Some(Block { header, body: decode::<BlockBody>(body.value(), "a block body")? }))
    }

    /// The canonical block hash at `height`.
    pub fn canonical_hash(&self, height: u64) -> Result<Option<Hash>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(CANONICAL)?;
        table.get(height)?.map(|v| hash_of(v.value())).transpose()
    }

    /// The stored receipt of a block.
    pub fn receipt(&self, hash: &Hash) -> Result<Option<doin_consensus::Receipt>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECEIPTS)?;
        table.get(hash.0.as_slice())?.map(|v| decode(v.value(), "a receipt")).transpose()
    }

    /// Where a canonical transaction is: (block hash, index in the block).
    pub fn transaction_location(&self, id: &Hash) -> Result<Option<(Hash, u32)>, StorageError> {
        location(&self.db, TX_INDEX, id)
    }

    /// Where a canonical certificate is, by commit id: (block hash, index in the block).
    pub fn certificate_location(&self, commit: &Hash) -> Result<Option<(Hash, u32)>, StorageError> {
        location(&self.db, CERT_INDEX, commit)
    }

    /// Number of stored block bodies (for pruning checks and metrics).
    pub fn body_count(&self) -> Result<u64, StorageError> {
        Ok(self.db.begin_read()?.open_table(BODIES)?.len()?)
    }

    /// Imports one block: validates it against its parent's state, stores it, and follows fork
    /// choice (extending the canonical chain, keeping a side branch, or reorganizing).
    pub fn import(&mut self, block: &Block) -> Result<Imported, ImportError> {
        let mut batch = Batch::default();
        let result = self.import_into(block, &mut batch);
        self.commit_batch(batch)?;
        result
    }

    /// Imports blocks in order, committing canonical extensions in groups of `group` blocks (one
    /// durable commit per group). On error, the blocks before the failing one stay imported.
    pub fn import_many(&mut self, blocks: &[Block], group: usize) -> Result<Vec<Imported>, ImportError> {
        let mut out = Vec::with_capacity(blocks.len());
        let mut batch = Batch::default();
        for block in blocks {
            match self.import_into(block, &mut batch) {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.commit_batch(batch)?;
                    return Err(e);
                }
            }
            if batch.blocks >= group.max(1) {
                self.commit_batch(std::mem::take(&mut batch))?;
            }
        }
        self.commit_batch(batch)?;
        Ok(out)
    }

    fn commit_batch(&mut self, batch: Batch) -> Result<(), StorageError> {
        if let Some(txn) = batch.txn {
            txn.commit()?;
            debug!(target: "storage", blocks = batch.blocks, height = self.tip.height(), "committed");
        }
        Ok(())
    }

    fn import_into(&mut self, block: &Block, batch: &mut Batch) -> Result<Imported, ImportError> {
        let hash = block.hash();
        let height = block.header.height;
        if self.states.contains_key(&hash) || hash == self.tip.tip().hash {
            return Ok(Imported::Known);
        }
        let parent = block.header.parent_hash;
        let extends_tip = parent == self.tip.tip().hash;
        if !extends_tip {
            // Side blocks and reorgs commit on their own, after what is pending.
            if let Some(txn) = batch.txn.take() {
                txn.commit().map_err(StorageError::from)?;
                batch.blocks = 0;
            }
            if self.header(&hash)?.is_some() {
                return Ok(Imported::Known);
            }
        }
        if !extends_tip {
            // Never build on a branch that leaves the chain below the finalized checkpoint.
            let finalized = self.finalized();
            let (fork_height, _) =
                self.fork_point(&parent)?.ok_or(ImportError::UnknownParent { hash, parent })?;
            if fork_height < finalized.height {
                return Err(ImportError::BelowFinality { hash, finalized: finalized.height });
            }
        }
        let parent_state = if extends_tip {
            self.tip.clone()
        } else {
            match self.state_for(&parent)? {
                Some(s) => s,
                None => {
                    warn!(target: "storage", %parent, why = %self.why_no_state(&parent), "no post-state for a parent");
                    return Err(ImportError::UnknownParent { hash, parent });
                }
            }
        };
        let (state, receipt) = apply_block(&parent_state, block).map_err(|source| ImportError::Invalid {
            hash,
            height,
            source: Box::new(source),
        })?;

        if extends_tip {
            let txn = batch.txn(&self.db)?;
            write_block(txn, block, Some(&receipt))?;
            set_canonical(txn, block, &state)?;
            self.after_finality(txn, &state)?;
            batch.blocks += 1;
            let previous = std::mem::replace(&mut self.tip, state);
            self.remember(previous);
            return Ok(Imported::Extended { height });
        }

        let mut txn = self.db.begin_write().map_err(StorageError::from)?;
        txn.set_durability(Durability::Immediate).map_err(StorageError::from)?;
        write_block(&txn, block, Some(&receipt))?;
        let candidate = ChainTip::of(&block.header, hash, state.meta().justified.height);
        let current =
            ChainTip::of(&self.tip_header()?, self.tip.tip().hash, self.tip.meta().justified.height);
        if !fork_choice::should_switch(&current, &candidate) {
            txn.commit().map_err(StorageError::from)?;
            self.remember(state);
            return Ok(Imported::Side { height });
        }
        self.states.insert(hash, state);
        let outcome = self.reorg(&txn, hash)?;
        txn.commit().map_err(StorageError::from)?;
        if let Some(new_tip) = self.states.remove(&hash) {
            let previous = std::mem::replace(&mut self.tip, new_tip);
            self.remember(previous);
        }
        Ok(outcome)
    }

    /// Makes `new_tip`'s branch canonical inside `txn`: reverts canonical blocks down to the
    /// common ancestor and applies the branch, whose post-states are in memory.
    fn reorg(&mut self, txn: &WriteTransaction, new_tip: Hash) -> Result<Imported, ImportError> {
        let mut branch = Vec::new();
        let mut cursor = new_tip;
        let ancestor = loop {
            let header = read_header_w(txn, &cursor)?
                .ok_or_else(|| StorageError::Inconsistent(format!("branch header {cursor} missing")))?;
            if canonical_w(txn, header.height)? == Some(cursor) {
                break header.height;
            }
            branch.push(cursor);
            cursor = header.parent_hash;
        };
        let finalized = self.finalized().height;
        if ancestor < finalized {
            return Err(ImportError::BelowFinality { hash: new_tip, finalized });
        }
        let old_tip = self.tip.height();
        for height in (ancestor + 1..=old_tip).rev() {
            unset_canonical(txn, height)?;
        }
        branch.reverse();
        // Each branch block writes its own changes. A post-state rebuilt from records (the tip a
        // restart loaded, kept for a switch back) does not know them — written as they were, its
        // block's deletions were lost and the next restart found the store corrupted — so the
        // block is applied again on its parent's state.
        let mut parent: Option<State> = None;
        for hash in &branch {
            let block = read_block_w(txn, hash)?;
            let state = match self.states.get(hash) {
                Some(s) if s.has_block_diff() => s.clone(),
                _ => {
                    let base = match parent.take() {
                        Some(p) => p,
                        None => {
                            // `cursor` is the fork point (committed: the read sees it whole).
                            self.state_for(&cursor)?.ok_or_else(|| {
                                StorageError::Inconsistent(format!(
                                    "the state at the fork point {ancestor} is gone"
                                ))
                            })?
                        }
                    };
                    apply_block(&base, &block)
                        .map_err(|source| ImportError::Invalid {
                            hash: *hash,
                            height: block.header.height,
                            source: Box::new(source),
                        })?
                        .0
                }
            };
            set_canonical(txn, &block, &state)?;
            parent = Some(state);
        }
        if let Some(state) = self.states.get(&new_tip).cloned() {
            self.after_finality(txn, &state)?;
        }
        // Keep the reverted canonical states for a switch back.
        warn!(target: "storage", ancestor, reverted = old_tip - ancestor, applied = branch.len(), "reorg");
        Ok(Imported::Reorg { ancestor, reverted: old_tip - ancestor, applied: branch.len() as u64 })
    }

    /// The nearest canonical ancestor (height, hash) of `hash`, following stored headers.
    fn fork_point(&self, hash: &Hash) -> Result<Option<(u64, Hash)>, StorageError> {
        let read = self.db.begin_read()?;
        let canonical = read.open_table(CANONICAL)?;
        let mut cursor = *hash;
        loop {
            let Some(header) = read_header(&read, &cursor)? else { return Ok(None) };
            if let Some(h) = canonical.get(header.height)?
                && hash_of(h.value())? == cursor
            {
                return Ok(Some((header.height, cursor)));
            }
            if header.height == 0 {
                return Ok(None);
            }
            cursor = header.parent_hash;
        }
    }

    fn tip_header(&self) -> Result<doin_primitives::HeaderBody, StorageError> {
        let hash = self.tip.tip().hash;
        Ok(self
            .header(&hash)?
            .ok_or_else(|| StorageError::Inconsistent(format!("tip header {hash} missing")))?
            .body)
    }

    /// Keeps a post-state in memory, bounded, dropping states at or below finality first.
    fn remember(&mut self, state: State) {
        let finalized = self.finalized().height;
        self.states.retain(|_, s| s.height() > finalized);
        if self.states.len() >= self.opts.max_states
            && let Some(oldest) = self.states.iter().min_by_key(|(_, s)| s.height()).map(|(h, _)| *h)
        {
            self.states.remove(&oldest);
        }
        self.states.insert(state.tip().hash, state);
    }

    /// Why [`Self::state_for`] has no state for `hash` (for the log).
    fn why_no_state(&self, hash: &Hash) -> String {
        let detail = || -> Result<String, StorageError> {
            let read = self.db.begin_read()?;
            let Some(header) = read_header(&read, hash)? else { return Ok("no header".into()) };
            let canonical =
                read.open_table(CANONICAL)?.get(header.height)?.map(|v| hash_of(v.value())).transpose()?;
            let undo = read.open_table(UNDO)?;
            let missing: Vec<u64> = (header.height + 1..=self.tip.height())
                .filter(|h| undo.get(*h).ok().flatten().is_none())
                .collect();
            Ok(format!(
                "height {} canonical {} base {} tip {} finalized {} undo missing at {:?}",
                header.height,
                canonical == Some(*hash),
                self.base,
                self.tip.height(),
                self.finalized().height,
                &missing[..missing.len().min(20)]
            ))
        };
        detail().unwrap_or_else(|e| e.to_string())
    }

    /// The post-state of a known block: in memory, or rebuilt for a canonical block above the
    /// store's base by undoing the later canonical blocks' changes from the tip.
    pub fn state_for(&self, hash: &Hash) -> Result<Option<State>, StorageError> {
        if *hash == self.tip.tip().hash {
            return Ok(Some(self.tip.clone()));
        }
        if let Some(s) = self.states.get(hash) {
            return Ok(Some(s.clone()));
        }
        let read = self.db.begin_read()?;
        let Some(header) = read_header(&read, hash)? else { return Ok(None) };
        let canonical = read.open_table(CANONICAL)?;
        let is_canonical =
            canonical.get(header.height)?.map(|v| hash_of(v.value())).transpose()? == Some(*hash);
        if !is_canonical {
            drop((canonical, read));
            return self.replay_side_branch(hash);
        }
        if header.height < self.base || header.height > self.tip.height() {
            return Ok(None);
        }
        let undo = read.open_table(UNDO)?;
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for height in (header.height + 1..=self.tip.height()).rev() {
            let Some(row) = undo.get(height)? else { return Ok(None) };
            let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = decode(row.value(), "an undo record")?;
            for (k, v) in changes {
                merged.insert(k, v);
            }
        }
        let mut changes: Vec<RecordChange> = Vec::with_capacity(merged.len());
        for (k, v) in merged {
            changes.push((decode(&k, "a state key")?, v));
        }
        let recent = read_recent(&read, header.height)?;
        let tip = Tip { hash: *hash, height: header.height };
        self.tip.with_records(&changes, tip, recent, &header.state_root).map(Some).map_err(|e| {
            StorageError::Inconsistent(format!("rebuilding the state at {}: {e}", header.height))
        })
    }

    /// The post-state of a stored side block whose state is not in memory (a restart forgot
    /// it): its branch is applied again from the nearest block whose state is known — one in
    /// memory, or the canonical block it forks from. Branches below the finalized checkpoint,
    /// or longer than [`MAX_REPLAY`] blocks, have none.
    fn replay_side_branch(&self, hash: &Hash) -> Result<Option<State>, StorageError> {
        let finalized = self.finalized().height;
        let mut branch = Vec::new();
        let mut cursor = *hash;
        let base = loop {
            if let Some(s) = self.states.get(&cursor) {
                break s.clone();
            }
            let Some(header) = self.header(&cursor)? else { return Ok(None) };
            if self.canonical_hash(header.height)? == Some(cursor) {
                match self.state_for(&cursor)? {
                    Some(s) => break s,
                    None => return Ok(None),
                }
            }
            if header.height <= finalized || branch.len() >= MAX_REPLAY {
                return Ok(None);
            }
            branch.push(cursor);
            cursor = header.parent_hash;
        };
        let mut state = base;
        for h in branch.iter().rev() {
            let Some(block) = self.block(h)? else { return Ok(None) };
            match apply_block(&state, &block) {
                Ok((next, _)) => state = next,
                Err(e) => {
                    warn!(target: "storage", block = %h, error = %e, "a stored side block does not apply");
                    return Ok(None);
                }
            }
        }
        Ok(Some(state))
    }

    /// The record under `key` in the post-state of block `hash`, with its proof against that
    /// block's state root. `None` when the state is no longer available (below finality on a
    /// non-tip block, or unknown).
    pub fn prove(
        &self,
        hash: &Hash,
        key: &StateKey,
    ) -> Result<Option<doin_consensus::state::ProvenRecord>, StorageError> {
        let Some(state) = self.state_for(hash)? else { return Ok(None) };
        state.prove(key).map(Some).map_err(|e| StorageError::Inconsistent(e.to_string()))
    }

    /// After a canonical change: drop undo records at or below finality and, in non-archive
    /// mode, bodies more than `keep_bodies` behind it.
    fn after_finality(&mut self, txn: &WriteTransaction, state: &State) -> Result<(), StorageError> {
        if state.meta().finalized.height > self.finalized.height {
            self.finalized = state.meta().finalized;
            txn.open_table(META)?.insert("finalized", encode(&self.finalized).as_slice())?;
        }
        let finalized = self.finalized.height;
        let history = state.params().history_len();
        let mut undo = txn.open_table(UNDO)?;
        undo.retain_in(..=finalized, |_, _| false)?;
        let mut recent = txn.open_table(RECENT)?;
        let keep_recent_from = finalized.saturating_sub(history);
        recent.retain_in(..keep_recent_from, |_, _| false)?;
        if !self.opts.archive {
            let prune_below = finalized.saturating_sub(self.opts.keep_bodies);
            let mut meta = txn.open_table(META)?;
            let pruned_to = meta
                .get("pruned_to")?
                .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
                .unwrap_or(0);
            if prune_below > pruned_to {
                let canonical = txn.open_table(CANONICAL)?;
                let mut bodies = txn.open_table(BODIES)?;
                for item in canonical.range(pruned_to..prune_below)? {
                    let (_, hash) = item?;
                    bodies.remove(hash.value())?;
                }
                meta.insert("pruned_to", prune_below.to_le_bytes().as_slice())?;
            }
        }
        Ok(())
    }
}

/// An open write transaction that groups several canonical extensions.
#[derive(Default)]
struct Batch {
    txn: Option<WriteTransaction>,
    blocks: usize,
}

impl Batch {
    fn txn(&mut self, db: &Database) -> Result<&WriteTransaction, StorageError> {
        if self.txn.is_none() {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            self.txn = Some(txn);
        }
        self.txn.as_ref().ok_or_else(|| StorageError::Inconsistent("no write transaction".into()))
    }
}

fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let read = db.begin_read()?;
    let table = match read.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

fn read_header(read: &redb::ReadTransaction, hash: &Hash) -> Result<Option<BlockHeader>, StorageError> {
    let table = read.open_table(HEADERS)?;
    table.get(hash.0.as_slice())?.map(|v| decode(v.value(), "a header")).transpose()
}

fn read_header_w(
    txn: &WriteTransaction,
    hash: &Hash,
) -> Result<Option<doin_primitives::HeaderBody>, StorageError> {
    let table = txn.open_table(HEADERS)?;
    let header: Option<BlockHeader> =
        table.get(hash.0.as_slice())?.map(|v| decode(v.value(), "a header")).transpose()?;
    Ok(header.map(|h| h.body))
}

fn read_block_w(txn: &WriteTransaction, hash: &Hash) -> Result<Block, StorageError> {
    let headers = txn.open_table(HEADERS)?;
    let bodies = txn.open_table(BODIES)?;
    let header = headers
        .get(hash.0.as_slice())?
        .ok_or_else(|| StorageError::Inconsistent(format!("header {hash} missing")))?;
    let body = bodies
        .get(hash.0.as_slice())?
        .ok_or_else(|| StorageError::Inconsistent(format!("body {hash} missing")))?;
    Ok(Block { header: decode(header.value(), "a header")?, body: decode(body.value(), "a body")? })
}

fn canonical_w(txn: &WriteTransaction, height: u64) -> Result<Option<Hash>, StorageError> {
    let table = txn.open_table(CANONICAL)?;
    table.get(height)?.map(|v| hash_of(v.value())).transpose()
}

fn read_recent(read: &redb::ReadTransaction, height: u64) -> Result<Vec<RecentBlock>, StorageError> {
    let table = read.open_table(RECENT)?;
    let mut out = Vec::new();
    for item in table.range(..=height)? {
        let (_, v) = item?;
        out.push(decode::<RecentBlock>(v.value(), "a recent-block record")?);
    }
    // The consensus window is bounded; the table may hold a few more rows.
    Ok(out)
}

fn location(
    db: &Database,
    table: redb::TableDefinition<'_, &[u8], &[u8]>,
    id: &Hash,
) -> Result<Option<(Hash, u32)>, StorageError> {
    let read = db.begin_read()?;
    let table = read.open_table(table)?;
    let Some(v) = table.get(id.0.as_slice())? else { return Ok(None) };
    let v = v.value();
    if v.len() != 36 {
        return Err(StorageError::Inconsistent("an index entry is not 36 bytes".into()));
    }
    Ok(Some((hash_of(&v[..32])?, u32::from_le_bytes([v[32], v[33], v[34], v[35]]))))
}

/// Stores header, body and receipt (any branch).
fn write_block(
    txn: &WriteTransaction,
    block: &Block,
    receipt: Option<&doin_consensus::Receipt>,
) -> Result<(), StorageError> {
    let hash = block.hash();
    txn.open_table(HEADERS)?.insert(hash.0.as_slice(), encode(&block.header).as_slice())?;
    txn.open_table(BODIES)?.insert(hash.0.as_slice(), encode(&block.body).as_slice())?;
    if let Some(r) = receipt {
        txn.open_table(RECEIPTS)?.insert(hash.0.as_slice(), encode(r).as_slice())?;
    }
    Ok(())
}

/// Makes a stored block canonical at its height: index entries, state records (saving the
/// previous values as the undo record), its quorum view and the tip pointer.
fn set_canonical(txn: &WriteTransaction, block: &Block, state: &State) -> Result<(), StorageError> {
    let hash = block.hash();
    let height = block.header.height;
    txn.open_table(CANONICAL)?.insert(height, hash.0.as_slice())?;
    {
        let mut txs = txn.open_table(TX_INDEX)?;
        for (i, tx) in block.body.transactions.iter().enumerate() {
            let mut loc = hash.0.to_vec();
            loc.extend_from_slice(&(i as u32).to_le_bytes());
            txs.insert(tx.id().0.as_slice(), loc.as_slice())?;
        }
        let mut certs = txn.open_table(CERT_INDEX)?;
        for (i, c) in block.body.certificates.iter().enumerate() {
            let mut loc = hash.0.to_vec();
            loc.extend_from_slice(&(i as u32).to_le_bytes());
            certs.insert(c.commit.id().0.as_slice(), loc.as_slice())?;
        }
    }
    if height > 0 {
        let mut table = txn.open_table(STATE)?;
        let mut undo: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(state.last_changes().len());
        for (key, value) in state.last_changes() {
            let k = key_bytes(key);
            let old = match value {
                Some(v) => table.insert(k.as_slice(), v.as_slice())?.map(|g| g.value().to_vec()),
                None => table.remove(k.as_slice())?.map(|g| g.value().to_vec()),
            };
            undo.push((k, old));
        }
        txn.open_table(UNDO)?.insert(height, encode(&undo).as_slice())?;
    }
    if let Some(recent) = state.recent().last() {
        txn.open_table(RECENT)?.insert(height, encode(recent).as_slice())?;
    }
    txn.open_table(META)?.insert("tip", hash.0.as_slice())?;
    Ok(())
}

/// Reverts the canonical block at `height` (the current tip of the table): restores the
/// previous record values and removes its index entries.
fn unset_canonical(txn: &WriteTransaction, height: u64) -> Result<(), StorageError> {
    let hash = canonical_w(txn, height)?
        .ok_or_else(|| StorageError::Inconsistent(format!("no canonical block at {height}")))?;
    let block = read_block_w(txn, &hash)?;
    let undo_row = txn
        .open_table(UNDO)?
        .remove(height)?
        .map(|g| g.value().to_vec())
        .ok_or_else(|| StorageError::Inconsistent(format!("undo record of height {height} missing")))?;
    let undo: Vec<(Vec<u8>, Option<Vec<u8>>)> = decode(&undo_row, "an undo record")?;
    {
        let mut table = txn.open_table(STATE)?;
        for (k, old) in undo {
            match old {
                Some(v) => {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
                None => {
                    table.remove(k.as_slice())?;
                }
            }
        }
    }
    let mut txs = txn.open_table(TX_INDEX)?;
    for tx in block.body.transactions.iter() {
        txs.remove(tx.id().0.as_slice())?;
    }
    let mut certs = txn.open_table(CERT_INDEX)?;
    for c in block.body.certificates.iter() {
        certs.remove(c.commit.id().0.as_slice())?;
    }
    txn.open_table(CANONICAL)?.remove(height)?;
    txn.open_table(RECENT)?.remove(height)?;
    txn.open_table(META)?.insert("tip", block.header.parent_hash.0.as_slice())?;
    Ok(())
}
