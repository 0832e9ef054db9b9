//! The chain store shared between the network (serving sync requests) and the node (importing).

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use doin_net::{Status, SyncProvider, sync::BlockSink};
use doin_primitives::{Block, BlockBody, BlockHeader, Hash};
use doin_storage::ChainStore;

/// A chain store behind a mutex, cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedStore(pub Arc<Mutex<ChainStore>>, Arc<AtomicBool>);

impl SharedStore {
    /// Wraps a store.
    pub fn new(store: ChainStore) -> Self {
        Self(Arc::new(Mutex::new(store)), Arc::new(AtomicBool::new(false)))
    }

    /// Refuses further imports through [`BlockSink`]: a stopping node's background syncs must
    /// not move its chain after it reported its final state.
    pub fn close(&self) {
        self.1.store(true, Ordering::Relaxed);
    }

    /// Locks the store (a panic while holding it does not make it unusable: every write is one
    /// atomic transaction).
    pub fn lock(&self) -> MutexGuard<'_, ChainStore> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sync status of a store.
pub fn status_of(store: &ChainStore) -> Status {
    let tip = store.tip();
    Status {
        genesis: store.genesis_hash(),
        tip: tip.tip().hash,
        height: tip.height(),
        cumulative_work: tip.meta().cumulative_work,
        // The store's own finalized checkpoint: it never moves back in a reorg, and sync must
        // not look for a common block below it.
        finalized: store.finalized().height,
        justified: tip.meta().justified.height,
    }
}

impl SyncProvider for SharedStore {
    fn status(&self) -> Option<Status> {
        Some(status_of(&self.lock()))
    }
    fn headers(&self, from: u64, count: u32) -> Vec<BlockHeader> {
        let s = self.lock();
        (from..from.saturating_add(count as u64))
            .map_while(|h| s.canonical_hash(h).ok().flatten().and_then(|hash| s.header(&hash).ok().flatten()))
            .collect()
    }
    fn bodies(&self, from: u64, count: u32) -> Vec<(Hash, BlockBody)> {
        let s = self.lock();
        (from..from.saturating_add(count as u64))
            .map_while(|h| s.canonical_hash(h).ok().flatten().and_then(|hash| s.block(&hash).ok().flatten()))
            .map(|b| (b.hash(), b.body))
            .collect()
    }
    fn body(&self, hash: &Hash) -> Option<BlockBody> {
        self.lock().block(hash).ok().flatten().map(|b| b.body)
    }
}

impl BlockSink for SharedStore {
    fn status(&self) -> Status {
        status_of(&self.lock())
    }
    fn hash_at(&self, height: u64) -> Option<Hash> {
        self.lock().canonical_hash(height).ok().flatten()
    }
    fn import(&mut self, block: Block) -> Result<(), String> {
        if self.1.load(Ordering::Relaxed) {
            return Err("the node is stopping".into());
        }
        self.lock().import(&block).map(|_| ()).map_err(|e| e.to_string())
    }
}
