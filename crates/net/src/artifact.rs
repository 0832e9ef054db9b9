//! Content-addressed artifacts (model weights, federated updates): split into 1 MiB chunks; the
//! artifact hash is BLAKE3 over the concatenated chunk hashes (its "manifest"), so every chunk
//! is verified on arrival. Holders announce kademlia provider records; a download asks several
//! providers, spreads chunks over them, retries a failed chunk on the next one, and resumes from
//! the chunks already on disk.

use std::path::{Path, PathBuf};

use doin_primitives::Hash;
use libp2p::PeerId;

use crate::{NetworkHandle, SyncRequest, SyncResponse, sync::SyncError};

/// Chunk size.
pub const CHUNK_BYTES: usize = doin_primitives::ARTIFACT_CHUNK_BYTES;
/// The chunk index that asks for the manifest (the list of chunk hashes).
pub const MANIFEST_CHUNK: u32 = u32::MAX;

/// An artifact split for serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The artifact hash.
    pub hash: Hash,
    /// Concatenated chunk hashes.
    pub manifest: Vec<u8>,
    /// The chunks.
    pub chunks: Vec<Vec<u8>>,
}

impl Artifact {
    /// Splits `bytes` into chunks and computes the hash ([`Hash::of_artifact`]).
    pub fn new(bytes: &[u8]) -> Self {
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
        let manifest: Vec<u8> = chunks.iter().flat_map(|c| Hash::of(c).0).collect();
        Self { hash: Hash::of(&manifest), manifest, chunks }
    }

    /// The manifest of `bytes` (what [`Artifact::new`] computes, without copying the chunks).
    pub fn manifest_of(bytes: &[u8]) -> Vec<u8> {
        bytes.chunks(CHUNK_BYTES).flat_map(|c| Hash::of(c).0).collect()
    }

    /// What a provider answers for `chunk` (the manifest for [`MANIFEST_CHUNK`]).
    pub fn serve(&self, chunk: u32) -> Option<(u32, Vec<u8>)> {
        let total = self.chunks.len() as u32;
        if chunk == MANIFEST_CHUNK {
            return Some((total, self.manifest.clone()));
        }
        self.chunks.get(chunk as usize).map(|c| (total, c.clone()))
    }
}

/// What a download did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// The assembled file.
    pub path: PathBuf,
    /// Chunks in the artifact.
    pub chunks: usize,
    /// Chunks fetched now (the rest were on disk already).
    pub fetched: usize,
    /// Providers used.
    pub providers: usize,
}

async fn chunk(handle: &NetworkHandle, peer: PeerId, hash: Hash, index: u32) -> Result<Vec<u8>, SyncError> {
    match handle.request(peer, SyncRequest::Artifact { hash, chunk: index }).await? {
        SyncResponse::ArtifactChunk { data, .. } => Ok(data),
        SyncResponse::Error(e) => Err(SyncError::BadPeer { peer, reason: e }),
        other => {
            Err(SyncError::BadPeer { peer, reason: format!("expected an artifact chunk, got {other:?}") })
        }
    }
}

/// Largest artifact [`fetch`] downloads.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Downloads artifact `hash` into `dir/<hash>` (chunks in `dir/<hash>.parts/`), from the
/// providers found in the DHT plus `extra` peers; at most [`MAX_ARTIFACT_BYTES`].
pub async fn fetch(
    handle: &NetworkHandle,
    hash: Hash,
    dir: &Path,
    extra: &[PeerId],
) -> Result<Download, SyncError> {
    fetch_bounded(handle, hash, dir, extra, MAX_ARTIFACT_BYTES).await
}

/// [`fetch`], refusing (before downloading a chunk) an artifact whose manifest names more than
/// `max_bytes` of chunks.
pub async fn fetch_bounded(
    handle: &NetworkHandle,
    hash: Hash,
    dir: &Path,
    extra: &[PeerId],
    max_bytes: u64,
) -> Result<Download, SyncError> {
    let io = |what: &str, e: std::io::Error| SyncError::Import { height: 0, reason: format!("{what}: {e}") };
    let mut providers = handle.providers(hash).await?;
    for p in extra {
        if !providers.contains(p) {
            providers.push(*p);
        }
    }
    providers.retain(|p| *p != handle.peer_id());
    if providers.is_empty() {
        return Err(SyncError::Import { height: 0, reason: format!("no provider holds artifact {hash}") });
    }
    // The manifest, verified against the artifact hash.
    let mut manifest = None;
    for p in &providers {
        if let Ok(m) = chunk(handle, *p, hash, MANIFEST_CHUNK).await
            && Hash::of(&m) == hash
            && m.len() % 32 == 0
        {
            manifest = Some(m);
            break;
        }
    }
    let manifest = manifest.ok_or_else(|| SyncError::Import {
        height: 0,
        reason: format!("no provider served artifact {hash}'s manifest"),
    })?;
    if (manifest.len() / 32) as u64 * CHUNK_BYTES as u64 > max_bytes.next_multiple_of(CHUNK_BYTES as u64) {
        return Err(SyncError::Import {
            height: 0,
            reason: format!(
                "artifact {hash} has {} chunks, over the limit of {max_bytes} bytes",
                manifest.len() / 32
            ),
        });
    }
    let hashes: Vec<Hash> = manifest.chunks(32).map(|c| Hash(c.try_into().unwrap_or([0; 32]))).collect();
    let parts = dir.join(format!("{hash}.parts"));
    tokio::fs::create_dir_all(&parts).await.map_err(|e| io("creating the download directory", e))?;
    let mut fetched = 0;
    for (index, expected) in hashes.iter().enumerate() {
        let path = parts.join(format!("{index:06}"));
        if let Ok(existing) = tokio::fs::read(&path).await
            && Hash::of(&existing) == *expected
        {
            continue;
        }
        let mut got = None;
        for attempt in 0..providers.len() {
            let peer = providers[(index + attempt) % providers.len()];
            if let Ok(data) = chunk(handle, peer, hash, index as u32).await
                && Hash::of(&data) == *expected
            {
                got = Some(data);
                break;
            }
        }
        let data = got.ok_or_else(|| SyncError::Import {
            height: 0,
            reason: format!("no provider served chunk {index} of {hash}"),
        })?;
        tokio::fs::write(&path, &data).await.map_err(|e| io("writing a chunk", e))?;
        fetched += 1;
    }
    let mut whole = Vec::new();
    for index in 0..hashes.len() {
        whole.extend(
            tokio::fs::read(parts.join(format!("{index:06}"))).await.map_err(|e| io("reading a chunk", e))?,
        );
    }
    let path = dir.join(hash.to_string());
    tokio::fs::write(&path, &whole).await.map_err(|e| io("writing the artifact", e))?;
    Ok(Download { path, chunks: hashes.len(), fetched, providers: providers.len() })
}
