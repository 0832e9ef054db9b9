//! Header-first sync: ask a peer for its status; if it has more work, find the last common
//! block (never below our finalized checkpoint), fetch and verify headers (heights, parent
//! links, signatures), then fetch bodies in batches of at most 50, check them against their
//! headers' roots, and hand complete blocks to the importer.

use doin_primitives::{Block, BlockHeader, Hash};
use libp2p::PeerId;

use crate::{
    network::NetworkHandle,
    protocol::{MAX_BODIES, MAX_HEADERS, Status, SyncRequest, SyncResponse},
};

/// Where synced blocks go (the chain store, through the node).
pub trait BlockSink {
    /// Our chain status.
    fn status(&self) -> Status;
    /// Our canonical block hash at `height`.
    fn hash_at(&self, height: u64) -> Option<Hash>;
    /// Validates and imports a block; `Err` stops the sync.
    fn import(&mut self, block: Block) -> Result<(), String>;
}

/// What a sync run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Blocks imported.
    pub imported: u64,
    /// Height of the last common block.
    pub common: u64,
}

/// A sync run failed; the peer should be scored down if it lied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Network failure.
    #[error(transparent)]
    Net(#[from] crate::NetError),
    /// The peer answered with something other than what was asked, or refused.
    #[error("peer {peer} answered badly: {reason}")]
    BadPeer {
        /// Peer.
        peer: PeerId,
        /// What was wrong.
        reason: String,
    },
    /// The peer is on another chain.
    #[error("peer {0} is on another chain (different genesis)")]
    WrongChain(PeerId),
    /// The peer's chain leaves ours below our finalized checkpoint.
    #[error("peer {0} forks below our finalized checkpoint")]
    BelowFinality(PeerId),
    /// Our importer refused a block.
    #[error("importing block {height}: {reason}")]
    Import {
        /// Height.
        height: u64,
        /// Why.
        reason: String,
    },
}

/// Canonical headers from `from` (at most `count`) of `peer`'s chain.
pub async fn headers(
    handle: &NetworkHandle,
    peer: PeerId,
    from: u64,
    count: u32,
) -> Result<Vec<BlockHeader>, SyncError> {
    match handle.request(peer, SyncRequest::Headers { from, count }).await? {
        SyncResponse::Headers(h) => Ok(h),
        SyncResponse::Error(e) => Err(SyncError::BadPeer { peer, reason: e }),
        _ => Err(SyncError::BadPeer { peer, reason: "expected headers".into() }),
    }
}

/// Asks `peers` for their status and returns the one whose chain fork choice prefers (higher
/// justified checkpoint, then cumulative work, then height) on our genesis, and the peers that
/// answered from another genesis (another network: with their genesis); peers that do not
/// answer within `timeout` are skipped. All are asked at once: a peer that never answers (a
/// flooder, a client that speaks gossip only) costs the poll nothing beyond `timeout` — asked
/// one after the other, each silent peer added its whole timeout to every poll, and a node that
/// missed a block waited that much longer to sync it.
pub async fn best_peer(
    handle: &NetworkHandle,
    peers: &[PeerId],
    genesis: Hash,
    timeout: std::time::Duration,
) -> (Option<(PeerId, Status)>, Vec<(PeerId, Hash)>) {
    let mut best: Option<(PeerId, Status)> = None;
    let mut other = Vec::new();
    for (peer, s) in statuses(handle, peers, timeout).await {
        if s.genesis != genesis {
            other.push((peer, s.genesis));
            continue;
        }
        let better = best.as_ref().is_none_or(|(_, b)| is_ahead(&s, b));
        if better {
            best = Some((peer, s));
        }
    }
    (best, other)
}

/// The statuses of `peers`, all asked at once; peers that do not answer within `timeout` are
/// left out.
pub async fn statuses(
    handle: &NetworkHandle,
    peers: &[PeerId],
    timeout: std::time::Duration,
) -> Vec<(PeerId, Status)> {
    let asked = peers.iter().map(|peer| async move {
        let answer = tokio::time::timeout(timeout, handle.request(*peer, SyncRequest::Status)).await;
        (*peer, answer)
    });
    futures::future::join_all(asked)
        .await
        .into_iter()
        .filter_map(|(peer, answer)| match answer {
            Ok(Ok(SyncResponse::Status(s))) => Some((peer, s)),
            _ => None,
        })
        .collect()
}

/// Whether a chain with status `remote` is worth syncing from for a node at `local`, in fork
/// choice's order: a higher justified checkpoint, or as high and more cumulative work, or as
/// much and a greater height (heartbeat blocks add no work, so comparing work alone left a node
/// that missed one behind until the next work block).
pub fn is_ahead(remote: &Status, local: &Status) -> bool {
    (remote.justified, remote.cumulative_work, remote.height)
        > (local.justified, local.cumulative_work, local.height)
}

/// Syncs from `peer` into `sink` if the peer's chain is ahead ([`is_ahead`]).
pub async fn sync_from(
    handle: &NetworkHandle,
    peer: PeerId,
    sink: &mut impl BlockSink,
) -> Result<SyncReport, SyncError> {
    let remote = match handle.request(peer, SyncRequest::Status).await? {
        SyncResponse::Status(s) => s,
        SyncResponse::Error(e) => return Err(SyncError::BadPeer { peer, reason: e }),
        _ => return Err(SyncError::BadPeer { peer, reason: "expected a status".into() }),
    };
    let local = sink.status();
    if remote.genesis != local.genesis {
        return Err(SyncError::WrongChain(peer));
    }
    if !is_ahead(&remote, &local) {
        return Ok(SyncReport { imported: 0, common: local.height });
    }
    // Find the last common block: step back from our tip until the peer's header matches.
    let mut probe = local.height.min(remote.height);
    let common = loop {
        let theirs = headers(handle, peer, probe, 1).await?;
        let ours = sink.hash_at(probe);
        if let (Some(h), Some(o)) = (theirs.first(), ours)
            && h.id() == o
        {
            break probe;
        }
        if probe <= local.finalized {
            return Err(SyncError::BelowFinality(peer));
        }
        probe = probe.saturating_sub(32).max(local.finalized);
    };
    let mut report = SyncReport { imported: 0, common };
    let mut parent =
        sink.hash_at(common).ok_or(SyncError::BadPeer { peer, reason: "lost common block".into() })?;
    let mut next = common + 1;
    while next <= remote.height {
        let count = (remote.height - next + 1).min(MAX_HEADERS as u64) as u32;
        let batch = headers(handle, peer, next, count).await?;
        if batch.is_empty() {
            break;
        }
        // Verify the header chain before fetching any body.
        for (i, h) in batch.iter().enumerate() {
            let bad = |reason: String| SyncError::BadPeer { peer, reason };
            if h.height != next + i as u64 {
                return Err(bad(format!("header {i} has height {}, expected {}", h.height, next + i as u64)));
            }
            if h.parent_hash != parent {
                return Err(bad(format!("header at {} does not link to its parent", h.height)));
            }
            if !h.verify() {
                return Err(bad(format!("header at {} has a bad signature", h.height)));
            }
            parent = h.id();
        }
        for chunk in batch.chunks(MAX_BODIES as usize) {
            let from = chunk[0].height;
            let bodies =
                match handle.request(peer, SyncRequest::Bodies { from, count: chunk.len() as u32 }).await? {
                    SyncResponse::Bodies(b) => b,
                    other => {
                        return Err(SyncError::BadPeer {
                            peer,
                            reason: format!("expected bodies, got {other:?}"),
                        });
                    }
                };
            if bodies.len() != chunk.len() {
                return Err(SyncError::BadPeer {
                    peer,
                    reason: format!("{} bodies for {} headers", bodies.len(), chunk.len()),
                });
            }
            for (header, (hash, body)) in chunk.iter().zip(bodies) {
                if hash != header.id()
                    || body.tx_root() != header.tx_root
                    || body.cert_root() != header.cert_root
                {
                    return Err(SyncError::BadPeer {
                        peer,
                        reason: format!("body at {} does not match its header", header.height),
                    });
                }
                let height = header.height;
                sink.import(Block { header: header.clone(), body })
                    .map_err(|reason| SyncError::Import { height, reason })?;
                report.imported += 1;
            }
        }
        next += batch.len() as u64;
    }
    Ok(report)
}

/// Completes a compact block announced by `peer`: transactions we hold come from `lookup`,
/// only the missing ones are requested; a block with certificates or evidence we cannot
/// rebuild is fetched whole. The result is checked against the header's roots.
pub async fn complete_block(
    handle: &NetworkHandle,
    peer: PeerId,
    compact: &crate::CompactBlock,
    lookup: impl Fn(&Hash) -> Option<doin_primitives::Transaction>,
) -> Result<(Block, usize), SyncError> {
    let bad = |reason: String| SyncError::BadPeer { peer, reason };
    let (block, fetched) = match compact.rebuild(&lookup, |_| None, |_| None) {
        Ok(block) => (block, 0),
        Err(missing)
            if !missing.is_empty()
                && compact.cert_ids.is_empty()
                && compact.evidence_ids.is_empty()
                && compact.commit_ids.is_empty() =>
        {
            let got = match handle.request(peer, SyncRequest::Transactions { ids: missing.clone() }).await? {
                SyncResponse::Transactions(t) => t,
                other => return Err(bad(format!("expected transactions, got {other:?}"))),
            };
            let by_id: std::collections::HashMap<Hash, doin_primitives::Transaction> =
                got.into_iter().map(|t| (t.id(), t)).collect();
            let block = compact
                .rebuild(|id| lookup(id).or_else(|| by_id.get(id).cloned()), |_| None, |_| None)
                .map_err(|still| bad(format!("{} transactions still missing", still.len())))?;
            (block, missing.len())
        }
        Err(_) => {
            let hash = compact.header.id();
            let body = match handle.request(peer, SyncRequest::Body { hash }).await? {
                SyncResponse::Body(Some(b)) => b,
                other => return Err(bad(format!("expected the body of {hash}, got {other:?}"))),
            };
            let n =
                body.transactions.len() + body.certificates.len() + body.evidence.len() + body.commits.len();
            (Block { header: compact.header.clone(), body }, n)
        }
    };
    if block.body.tx_root() != block.header.tx_root || block.body.cert_root() != block.header.cert_root {
        return Err(bad("the completed body does not match the header".into()));
    }
    Ok((block, fetched))
}

/// What a snapshot download did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFetch {
    /// Chunks in the snapshot.
    pub chunks: usize,
    /// Chunks downloaded now (the rest were already present and verified).
    pub fetched: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// Peers asked for their snapshot manifest at most (a manifest can be megabytes).
pub const MANIFEST_PEERS: usize = 8;

/// A manifest some peers serve: its height, bytes, chunk list and the peers serving it.
type Offer = (u64, Vec<u8>, Vec<(String, Hash)>, Vec<PeerId>);

/// Downloads the newest snapshot the peers serve into `dir`: the manifests of up to
/// [`MANIFEST_PEERS`] peers are read (`read` gives a manifest's height and its chunk list: file
/// name, BLAKE3), the highest wins (a peer that exported less recently — an archive node
/// exports once a minute at most — would otherwise hand a joiner an older state than its
/// neighbours have), and its manifest is written as `manifest.json` once every chunk, spread
/// over the peers serving that same manifest and retried on the next of them on failure, is
/// verified against it and written; chunks already present with the right hash are kept
/// (resumable). The caller then verifies the whole snapshot against a trusted header before
/// using it.
pub async fn fetch_snapshot(
    handle: &NetworkHandle,
    peers: &[PeerId],
    dir: &std::path::Path,
    read: impl Fn(&[u8]) -> Result<(u64, Vec<(String, Hash)>), String>,
) -> Result<SnapshotFetch, SyncError> {
    let io = |what: &str, e: std::io::Error| SyncError::Import { height: 0, reason: format!("{what}: {e}") };
    // The newest first once sorted (then the most served).
    let mut offers: Vec<Offer> = Vec::new();
    let mut last_error = None;
    for peer in peers.iter().take(MANIFEST_PEERS) {
        let bytes = match handle.request(*peer, SyncRequest::SnapshotManifest).await {
            Ok(SyncResponse::Bytes(b)) => b,
            Ok(SyncResponse::Error(e)) => {
                last_error = Some(SyncError::BadPeer { peer: *peer, reason: e });
                continue;
            }
            Ok(_) => {
                last_error =
                    Some(SyncError::BadPeer { peer: *peer, reason: "expected a snapshot manifest".into() });
                continue;
            }
            Err(e) => {
                last_error = Some(SyncError::Net(e));
                continue;
            }
        };
        if let Some(offer) = offers.iter_mut().find(|o| o.1 == bytes) {
            offer.3.push(*peer);
            continue;
        }
        match read(&bytes) {
            Ok((height, chunks)) => offers.push((height, bytes, chunks, vec![*peer])),
            Err(reason) => last_error = Some(SyncError::BadPeer { peer: *peer, reason }),
        }
    }
    offers.sort_by(|a, b| b.0.cmp(&a.0).then(b.3.len().cmp(&a.3.len())));
    let Some((_, manifest, chunks, peers)) = offers.into_iter().next() else {
        return Err(last_error
            .unwrap_or(SyncError::Import { height: 0, reason: "no peer to fetch a snapshot from".into() }));
    };
    let first = peers[0];
    let peers = peers.as_slice();
    tokio::fs::create_dir_all(dir).await.map_err(|e| io("creating the snapshot directory", e))?;
    let mut report = SnapshotFetch { chunks: chunks.len(), ..SnapshotFetch::default() };
    for (index, (file, hash)) in chunks.iter().enumerate() {
        if file.is_empty() || file.contains('/') || file.contains("..") || file == "manifest.json" {
            return Err(SyncError::BadPeer { peer: first, reason: format!("chunk name {file:?}") });
        }
        let path = dir.join(file);
        if let Ok(existing) = tokio::fs::read(&path).await
            && Hash::of(&existing) == *hash
        {
            continue;
        }
        let mut last_error = None;
        let mut done = false;
        for attempt in 0..peers.len() {
            let peer = peers[(index + attempt) % peers.len()];
            match handle.request(peer, SyncRequest::SnapshotChunk { index: index as u32 }).await {
                Ok(SyncResponse::Bytes(data)) if Hash::of(&data) == *hash => {
                    tokio::fs::write(&path, &data).await.map_err(|e| io("writing a snapshot chunk", e))?;
                    report.fetched += 1;
                    report.bytes += data.len() as u64;
                    done = true;
                    break;
                }
                Ok(SyncResponse::Bytes(_)) => {
                    last_error = Some(SyncError::BadPeer {
                        peer,
                        reason: format!("chunk {index} does not match the manifest"),
                    })
                }
                Ok(other) => {
                    last_error =
                        Some(SyncError::BadPeer { peer, reason: format!("chunk {index}: {other:?}") })
                }
                Err(e) => last_error = Some(SyncError::Net(e)),
            }
        }
        if !done {
            return Err(last_error
                .unwrap_or(SyncError::Import { height: 0, reason: format!("chunk {index} unavailable") }));
        }
    }
    tokio::fs::write(dir.join("manifest.json"), &manifest)
        .await
        .map_err(|e| io("writing the manifest", e))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(cumulative_work: u128, height: u64) -> Status {
        Status { genesis: Hash::ZERO, tip: Hash::ZERO, height, cumulative_work, finalized: 0, justified: 0 }
    }

    #[test]
    fn a_peer_is_ahead_with_more_work_or_as_much_and_more_height() {
        assert!(is_ahead(&status(10, 3), &status(9, 8)), "more work wins over height");
        assert!(is_ahead(&status(10, 4), &status(10, 3)), "a heartbeat on the same work is ahead");
        assert!(!is_ahead(&status(10, 3), &status(10, 3)));
        assert!(!is_ahead(&status(10, 9), &status(11, 3)));
    }
}
