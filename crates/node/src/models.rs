//! Trained model artifacts this node holds: the models its own claims attach (served to their
//! quorums), the ones it measured as an evaluator, and the champions it serves inference from.
//! Fetched from their providers by hash (every chunk checked), kept on disk under `models/`
//! (so a restarted node serves them again without a download), announced as a provider, and the
//! recent ones kept in memory. Bounded: [`MAX_FILES`] files of at most [`MAX_MODEL_BYTES`].

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use doin_net::NetworkHandle;
use doin_primitives::Hash;

use crate::artifacts::Artifacts;

/// Largest model fetched or kept.
pub const MAX_MODEL_BYTES: u64 = 64 << 20;
/// Model files kept on disk (the oldest are removed first).
pub const MAX_FILES: usize = 64;
/// Models kept in memory.
const IN_MEMORY: usize = 8;
/// How long one download may take (serving; an evaluator gives a reveal's model less).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Downloads at once.
const DOWNLOADS: usize = 4;

/// The node's model artifacts.
#[derive(Debug)]
pub struct Models {
    dir: PathBuf,
    artifacts: Arc<Artifacts>,
    net: NetworkHandle,
    memory: Mutex<VecDeque<(Hash, Arc<Vec<u8>>)>>,
    /// Downloads at once, bounded (one slow or unserved model does not hold up the others).
    downloading: tokio::sync::Semaphore,
}

fn file_of(dir: &Path, hash: &Hash) -> PathBuf {
    dir.join(format!("{hash}.bin"))
}

impl Models {
    /// The models under `data_dir/models`, served through `artifacts`; files whose bytes do not
    /// hash to their name are removed.
    pub fn open(data_dir: &Path, artifacts: Arc<Artifacts>, net: NetworkHandle) -> std::io::Result<Self> {
        let dir = data_dir.join("models");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".bin"))
            else {
                continue;
            };
            match std::fs::read(&path) {
                Ok(bytes) if Hash::of_artifact(&bytes).to_string() == name => {
                    artifacts.add(&path, &bytes);
                }
                _ => {
                    tracing::warn!(path = %path.display(), "model file does not match its hash; removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(Self {
            dir,
            artifacts,
            net,
            memory: Mutex::default(),
            downloading: tokio::sync::Semaphore::new(DOWNLOADS),
        })
    }

    /// Announces every model held (after a start: the DHT forgot us).
    pub async fn announce(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hash) =
                name.to_str().and_then(|n| n.strip_suffix(".bin")).and_then(|n| n.parse::<Hash>().ok())
            else {
                continue;
            };
            if let Err(e) = self.net.provide(hash).await {
                tracing::debug!(%hash, error = %e, "could not announce a model");
            }
        }
    }

    fn remember(&self, hash: Hash, bytes: Arc<Vec<u8>>) {
        let mut memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        memory.retain(|(h, _)| *h != hash);
        memory.push_back((hash, bytes));
        while memory.len() > IN_MEMORY {
            memory.pop_front();
        }
    }

    /// Keeps `bytes` (written to disk, served and announced); returns its hash.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<Hash, String> {
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(format!("a model of {} bytes is over the limit of {MAX_MODEL_BYTES}", bytes.len()));
        }
        let hash = Hash::of_artifact(&bytes);
        let path = file_of(&self.dir, &hash);
        let tmp = self.dir.join(format!("{hash}.tmp"));
        let write = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        write.map_err(|e| format!("writing model {hash}: {e}"))?;
        self.artifacts.add(&path, &bytes);
        self.prune();
        self.remember(hash, Arc::new(bytes));
        if let Err(e) = self.net.provide(hash).await {
            tracing::debug!(%hash, error = %e, "could not announce a model");
        }
        Ok(hash)
    }

    /// Removes the oldest files beyond [`MAX_FILES`].
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".bin")))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= MAX_FILES {
            return;
        }
        files.sort();
        for (_, path) in &files[..files.len() - MAX_FILES] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The model `hash`, if held here.
    pub fn get(&self, hash: &Hash) -> Option<Arc<Vec<u8>>> {
        {
            let memory = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, b)) = memory.iter().find(|(h, _)| h == hash) {
                return Some(b.clone());
            }
        }
        let bytes = std::fs::read(file_of(&self.dir, hash)).ok()?;
        if Hash::of_artifact(&bytes) != *hash {
            return None;
        }
        let bytes = Arc::new(bytes);
        self.remember(*hash, bytes.clone());
        Some(bytes)
    }

    /// The model `hash`: held here, or downloaded from its providers (and then held).
    pub async fn fetch(&self, hash: Hash) -> Result<Arc<Vec<u8>>, String> {
        self.fetch_within(hash, FETCH_TIMEOUT).await
    }

    /// [`Models::fetch`], giving up after `timeout` (waiting for a download slot included).
    pub async fn fetch_within(&self, hash: Hash, timeout: Duration) -> Result<Arc<Vec<u8>>, String> {
        tokio::time::timeout(timeout, self.download(hash))
            .await
            .map_err(|_| format!("fetching model {hash} took over {} s", timeout.as_secs()))?
    }

    async fn download(&self, hash: Hash) -> Result<Arc<Vec<u8>>, String> {
        if let Some(b) = self.get(&hash) {
            return Ok(b);
        }
        let _slot = self.downloading.acquire().await.map_err(|_| "the node is stopping".to_owned())?;
        if let Some(b) = self.get(&hash) {
            return Ok(b);
        }
        let dir = self.dir.join("downloads");
        let download = doin_net::artifact::fetch_bounded(&self.net, hash, &dir, &[], MAX_MODEL_BYTES);
        let d = download.await.map_err(|e| format!("fetching model {hash}: {e}"))?;
        let bytes = tokio::fs::read(&d.path).await.map_err(|e| format!("reading the download: {e}"));
        let _ = tokio::fs::remove_file(&d.path).await;
        let _ = tokio::fs::remove_dir_all(dir.join(format!("{hash}.parts"))).await;
        let bytes = bytes?;
        if Hash::of_artifact(&bytes) != hash {
            return Err(format!("the download of model {hash} does not hash to it"));
        }
        self.put(bytes).await?;
        self.get(&hash).ok_or_else(|| format!("model {hash} vanished after its download"))
    }
}
