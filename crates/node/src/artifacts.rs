//! Artifacts this node serves to peers (`SyncRequest::Artifact`: chunked, each chunk checked
//! against the manifest by the downloader): files on disk by content address — today the
//! federated jobs' model checkpoints, so a standby supervisor or a restarted one fetches a
//! recorded model from whoever holds it. Bounded: the newest [`MAX_HELD`] files.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use doin_net::{
    Status, SyncProvider,
    artifact::{Artifact, CHUNK_BYTES, MANIFEST_CHUNK},
};
use doin_primitives::{BlockBody, BlockHeader, Hash, Transaction};

use crate::store::SharedStore;

/// Files served at most (the oldest are forgotten first).
pub const MAX_HELD: usize = 1024;

#[derive(Debug)]
struct Held {
    path: PathBuf,
    len: u64,
    manifest: Vec<u8>,
}

/// The artifacts this node holds.
#[derive(Debug, Default)]
pub struct Artifacts {
    held: Mutex<(BTreeMap<Hash, Held>, VecDeque<Hash>)>,
}

impl Artifacts {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves the file at `path`, whose bytes are `bytes`; returns its content address.
    pub fn add(&self, path: &Path, bytes: &[u8]) -> Hash {
        let manifest = Artifact::manifest_of(bytes);
        let hash = Hash::of(&manifest);
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *held;
        if map.insert(hash, Held { path: path.to_owned(), len: bytes.len() as u64, manifest }).is_none() {
            order.push_back(hash);
        }
        while order.len() > MAX_HELD {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        hash
    }

    /// Whether `hash` is served here.
    pub fn holds(&self, hash: &Hash) -> bool {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.contains_key(hash)
    }

    /// Chunk `chunk` of `hash` (the manifest for [`MANIFEST_CHUNK`]) with the chunk count; read
    /// from disk, so a file changed or removed since is not served.
    pub fn chunk(&self, hash: &Hash, chunk: u32) -> Option<(u32, Vec<u8>)> {
        let (path, len, manifest) = {
            let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let h = held.0.get(hash)?;
            (h.path.clone(), h.len, h.manifest.clone())
        };
        let total = (manifest.len() / 32) as u32;
        if chunk == MANIFEST_CHUNK {
            return Some((total, manifest));
        }
        if chunk >= total {
            return None;
        }
        let start = u64::from(chunk) * CHUNK_BYTES as u64;
        let size = (len - start).min(CHUNK_BYTES as u64) as usize;
        let mut file = std::fs::File::open(path).ok()?;
        file.seek(SeekFrom::Start(start)).ok()?;
        let mut data = vec![0; size];
        file.read_exact(&mut data).ok()?;
        (Hash::of(&data).0[..] == manifest[chunk as usize * 32..chunk as usize * 32 + 32])
            .then_some((total, data))
    }
}

/// What the network layer asks: the chain from the store, artifacts from [`Artifacts`].
#[derive(Clone, Debug)]
pub struct Provider {
    /// The chain.
    pub store: SharedStore,
    /// Files served.
    pub artifacts: Arc<Artifacts>,
    /// The state snapshot served to late joiners.
    pub snapshots: Arc<crate::snapshots::Snapshots>,
}

impl SyncProvider for Provider {
    fn status(&self) -> Option<Status> {
        SyncProvider::status(&self.store)
    }
    fn headers(&self, from: u64, count: u32) -> Vec<BlockHeader> {
        self.store.headers(from, count)
    }
    fn bodies(&self, from: u64, count: u32) -> Vec<(Hash, BlockBody)> {
        self.store.bodies(from, count)
    }
    fn transactions(&self, ids: &[Hash]) -> Vec<Transaction> {
        self.store.transactions(ids)
    }
    fn body(&self, hash: &Hash) -> Option<BlockBody> {
        self.store.body(hash)
    }
    fn snapshot_manifest(&self) -> Option<Vec<u8>> {
        self.snapshots.manifest()
    }
    fn snapshot_chunk(&self, index: u32) -> Option<Vec<u8>> {
        self.snapshots.chunk(index)
    }
    fn artifact_chunk(&self, hash: &Hash, chunk: u32) -> Option<(u32, Vec<u8>)> {
        self.artifacts.chunk(hash, chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_what_it_holds_by_content_address_and_nothing_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(CHUNK_BYTES + 777) as u32).map(|i| ((i * 31) >> 3) as u8).collect();
        let path = dir.path().join("m.f32");
        std::fs::write(&path, &bytes).unwrap();
        let a = Artifacts::new();
        let hash = a.add(&path, &bytes);
        assert_eq!(hash, Hash::of_artifact(&bytes));
        let (total, manifest) = a.chunk(&hash, MANIFEST_CHUNK).unwrap();
        assert_eq!((total, Hash::of(&manifest)), (2, hash));
        let (_, first) = a.chunk(&hash, 0).unwrap();
        let (_, second) = a.chunk(&hash, 1).unwrap();
        assert_eq!([first, second].concat(), bytes);
        assert!(a.chunk(&hash, 2).is_none());
        assert!(a.chunk(&Hash::of(b"other"), 0).is_none());
        // A file overwritten since is not served as the artifact it was.
        std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
        assert!(a.chunk(&hash, 0).is_none());
    }

    #[test]
    fn holds_a_bounded_number() {
        let a = Artifacts::new();
        for i in 0..MAX_HELD + 10 {
            a.add(Path::new("/nonexistent"), &(i as u64).to_le_bytes());
        }
        assert!(!a.holds(&Hash::of_artifact(&0u64.to_le_bytes())));
        assert!(a.holds(&Hash::of_artifact(&((MAX_HELD + 9) as u64).to_le_bytes())));
    }
}
