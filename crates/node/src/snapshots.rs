//! The snapshot this node serves to late joiners: the state at its finalized checkpoint, written
//! as hashed chunks plus a manifest (`doin_storage::snapshot`) under `DATA_DIR/snapshot`, and
//! refreshed as finality moves — at most every [`MIN_INTERVAL`] and [`MIN_BLOCKS`] finalized
//! blocks, but always before finality has moved half of `keep_bodies` past the served one (a
//! joiner syncs on from the snapshot's height, so the bodies above it must still be there), one
//! export at a time, off the node's loop (the state is cloned under the store's lock
//! and written outside it). A new export is written beside the served one and swapped in by a
//! rename, so a peer never reads a half-written snapshot (one fetching across the swap gets a
//! chunk that no longer matches its manifest, and retries). Peers ask for the manifest and
//! chunks over the sync protocol (`SnapshotManifest`, `SnapshotChunk`).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use doin_storage::snapshot::{Manifest, export_state};

use crate::store::SharedStore;

/// Least time between two exports.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Least finalized blocks between two exports.
pub const MIN_BLOCKS: u64 = 16;

/// The served snapshot.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    /// Bodies the store keeps behind finality (`None`: an archive keeps all).
    keep_bodies: Option<u64>,
    exporting: AtomicBool,
    /// The height and time of the last export.
    last: Mutex<Option<(u64, Instant)>>,
    /// The served snapshot's chunk files in manifest order (read from its manifest once: the
    /// manifest carries the genesis spec and can be megabytes).
    files: Mutex<Option<Vec<String>>>,
}

impl Snapshots {
    /// Serves `data_dir/snapshot` (what a previous run exported, until the next export) for a
    /// store that keeps `keep_bodies` bodies behind finality (`None`: all).
    pub fn new(data_dir: &std::path::Path, keep_bodies: Option<u64>) -> Self {
        Self {
            dir: doin_storage::snapshot::default_dir(data_dir),
            keep_bodies,
            exporting: AtomicBool::new(false),
            last: Mutex::new(None),
            files: Mutex::new(None),
        }
    }

    /// Exports the finalized checkpoint's state when it is due (see the module's rule); the
    /// export runs on a blocking thread.
    pub fn on_finalized(self: &Arc<Self>, store: &SharedStore, height: u64) {
        let due =
            self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none_or(|(h, at)| {
                (height >= h + MIN_BLOCKS && at.elapsed() >= MIN_INTERVAL)
                    || self.keep_bodies.is_some_and(|k| height >= h + (k / 2).max(1))
            });
        if !due || self.exporting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, store) = (self.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            match me.export(&store) {
                Ok(m) => tracing::info!(
                    height = m.height,
                    records = m.records,
                    "snapshot exported for late joiners"
                ),
                Err(e) if e.contains("below this store's first block") => {
                    tracing::info!(reason = %e, "no snapshot to export yet")
                }
                Err(e) => tracing::warn!(error = %e, "snapshot export failed"),
            }
            me.exporting.store(false, Ordering::Release);
        });
    }

    /// Exports the finalized checkpoint's state now and swaps it in.
    pub fn export(&self, store: &SharedStore) -> Result<Manifest, String> {
        let (state, header, genesis, spec) = {
            let s = store.lock();
            let checkpoint = s.finalized();
            let hash = if checkpoint.height == 0 {
                s.canonical_hash(0).map_err(|e| e.to_string())?.ok_or("no genesis in the store")?
            } else {
                checkpoint.hash
            };
            // A node that joined from a snapshot may hold a finalized checkpoint below its base
            // until finality moves on: nothing to export yet.
            let header = s.header(&hash).map_err(|e| e.to_string())?.ok_or(format!(
                "the finalized checkpoint {} is below this store's first block",
                checkpoint.height
            ))?;
            let state = s
                .state_for(&hash)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the state at checkpoint {} is not available", header.height))?;
            let spec = s.genesis_spec().map_err(|e| e.to_string())?.ok_or("no genesis spec")?;
            (state, header, s.genesis_hash(), spec)
        };
        let fresh = self.dir.with_extension("new");
        let _ = std::fs::remove_dir_all(&fresh);
        let manifest = export_state(&state, &header, genesis, &spec, &fresh).map_err(|e| e.to_string())?;
        let old = self.dir.with_extension("old");
        let _ = std::fs::remove_dir_all(&old);
        if self.dir.exists() {
            std::fs::rename(&self.dir, &old).map_err(|e| format!("moving the old snapshot aside: {e}"))?;
        }
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::fs::rename(&fresh, &self.dir).map_err(|e| format!("swapping the snapshot in: {e}"))?;
        *files = Some(manifest.chunks.iter().map(|c| c.file.clone()).collect());
        drop(files);
        let _ = std::fs::remove_dir_all(&old);
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((manifest.height, Instant::now()));
        Ok(manifest)
    }

    /// The served manifest's bytes.
    pub fn manifest(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join("manifest.json")).ok()
    }

    /// Chunk `index` of the served snapshot (as its manifest names it).
    pub fn chunk(&self, index: u32) -> Option<Vec<u8>> {
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if files.is_none() {
            // A previous run's export: its manifest read once.
            let manifest: Manifest = serde_json::from_slice(&self.manifest()?).ok()?;
            *files = Some(manifest.chunks.into_iter().map(|c| c.file).collect());
        }
        let file = files.as_ref()?.get(usize::try_from(index).ok()?)?.clone();
        drop(files);
        if file.contains('/') || file.contains("..") {
            return None;
        }
        std::fs::read(self.dir.join(file)).ok()
    }

    /// The served snapshot's height, if one is served.
    pub fn height(&self) -> Option<u64> {
        serde_json::from_slice::<Manifest>(&self.manifest()?).ok().map(|m| m.height)
    }
}

#[cfg(test)]
mod tests {
    use doin_consensus::testkit::TestNet;
    use doin_primitives::Hash;
    use doin_storage::{ChainStore, StoreOptions, snapshot};

    use super::*;

    #[test]
    fn the_finalized_state_is_served_in_chunks_that_verify_and_a_new_export_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4, 2, 2);
        let store =
            ChainStore::open(&dir.path().join("chain.redb"), &net.spec, StoreOptions::default()).unwrap();
        let genesis = store.genesis_hash();
        let store = SharedStore::new(store);
        let snaps = Snapshots::new(dir.path(), Some(16));
        assert!(snaps.manifest().is_none() && snaps.chunk(0).is_none(), "nothing exported yet");
        let m = snaps.export(&store).unwrap();
        assert_eq!((m.height, m.block_hash), (0, genesis));
        // What a peer downloads, chunk by chunk, verifies against the checkpoint it trusts.
        let fetched = dir.path().join("fetched");
        std::fs::create_dir_all(&fetched).unwrap();
        std::fs::write(fetched.join("manifest.json"), snaps.manifest().unwrap()).unwrap();
        for (i, c) in m.chunks.iter().enumerate() {
            let bytes = snaps.chunk(i as u32).unwrap();
            assert_eq!(Hash::of(&bytes), c.hash);
            std::fs::write(fetched.join(&c.file), bytes).unwrap();
        }
        assert!(snaps.chunk(m.chunks.len() as u32).is_none());
        let v = snapshot::verify(&fetched, Some(genesis)).unwrap();
        assert_eq!(v.state.root(), store.lock().tip().root());
        assert!(snapshot::verify(&fetched, Some(Hash([7; 32]))).is_err(), "another checkpoint is refused");
        // Exported again: swapped in whole, no leftovers beside it.
        snaps.export(&store).unwrap();
        assert_eq!(snaps.height(), Some(0));
        assert!(!dir.path().join("snapshot.new").exists() && !dir.path().join("snapshot.old").exists());
    }
}
