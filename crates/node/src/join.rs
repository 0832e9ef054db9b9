//! Joining late: a node whose data directory has no chain, given a checkpoint it trusts
//! (`checkpoint: "HEIGHT:HASH"`, from a node or person it trusts), fetches the newest snapshot
//! its peers serve ([`crate::snapshots`]) instead of replaying a history they may have pruned.
//!
//! 1. A short-lived network session (the node's key, an ephemeral port, no gossip) dials the
//!    bootstrap peers and keeps those on this genesis.
//! 2. The snapshot is downloaded from all of them (`doin_net::sync::fetch_snapshot`: chunks
//!    spread over the peers, each checked against the manifest).
//! 3. The snapshot's block is tied to the trusted checkpoint by headers fetched between the two
//!    heights: each signed by its generator and naming the previous one's hash. With the
//!    checkpoint at or above the snapshot this proves the snapshot's block is its ancestor; a
//!    header chain that does not reach the trusted hash refuses the snapshot by name.
//! 4. `doin_storage::snapshot::import` checks every chunk and the rebuilt state root against the
//!    header and writes the store; the node then starts on it and syncs the rest as usual.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use doin_consensus::GenesisSpec;
use doin_net::{Multiaddr, PeerId, protocol::MAX_HEADERS};
use doin_primitives::{BlockHeader, Hash, Keypair};
use doin_storage::{
    StoreOptions,
    snapshot::{ImportReport, Manifest},
};

/// How long the join waits for peers on this genesis.
pub const PEER_WAIT: Duration = Duration::from_secs(60);
/// Most headers between the trusted checkpoint and the snapshot.
pub const MAX_SPAN: u64 = 200_000;

/// A checkpoint the operator trusts: `HEIGHT:HASH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    /// Its height.
    pub height: u64,
    /// Its block hash.
    pub hash: Hash,
}

impl std::str::FromStr for Trusted {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (h, hash) = s.split_once(':').ok_or("expected HEIGHT:HASH")?;
        let height = h.trim().parse().map_err(|_| format!("height {h:?} is not a number"))?;
        let hash =
            hash.trim().parse().map_err(|_| format!("{hash:?} is not a block hash (64 hex digits)"))?;
        Ok(Self { height, hash })
    }
}

/// What joining did.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The import.
    pub import: ImportReport,
    /// Peers the snapshot came from.
    pub peers: usize,
    /// Chunks downloaded and their bytes.
    pub fetched: (usize, u64),
    /// Seconds from start to imported.
    pub seconds: f64,
}

/// Headers `[from, to]` from `peer`, checked: consecutive heights, each signed by its
/// generator (the unsigned genesis header: equal to ours) and naming the previous one's hash.
async fn linked_headers(
    handle: &doin_net::NetworkHandle,
    peer: PeerId,
    (from, to): (u64, u64),
    genesis: Hash,
) -> Result<Vec<BlockHeader>, String> {
    let mut out: Vec<BlockHeader> = Vec::new();
    let mut next = from;
    while next <= to {
        let count = (to - next + 1).min(u64::from(MAX_HEADERS)) as u32;
        let page = doin_net::sync::headers(handle, peer, next, count)
            .await
            .map_err(|e| format!("peer {peer}: headers from {next}: {e}"))?;
        if page.is_empty() {
            return Err(format!("peer {peer} has no block at height {next}"));
        }
        for h in page {
            let height = h.body.height;
            if height != next {
                return Err(format!("peer {peer} sent height {height} for {next}"));
            }
            let genuine = if height == 0 { h.id() == genesis } else { h.verify() };
            if !genuine {
                return Err(format!("peer {peer}: the header at {height} is not signed by its generator"));
            }
            if let Some(prev) = out.last()
                && h.body.parent_hash != prev.id()
            {
                return Err(format!("peer {peer}: the header at {height} does not follow the one before"));
            }
            out.push(h);
            next += 1;
            if next > to {
                break;
            }
        }
    }
    Ok(out)
}

/// A join to run: where the chain goes and what to trust.
#[derive(Debug)]
pub struct Join<'a> {
    /// The node's key (the short-lived session's identity).
    pub key: &'a Keypair,
    /// The address to listen on (an ephemeral port).
    pub host: &'a str,
    /// Peers to fetch from.
    pub bootstrap: &'a [Multiaddr],
    /// The network's genesis.
    pub spec: &'a GenesisSpec,
    /// The checkpoint trusted.
    pub trusted: Trusted,
    /// The node's data directory (the download goes to `snapshot.fetch` in it).
    pub data_dir: &'a Path,
    /// The chain store to create (must not exist).
    pub store_path: &'a Path,
    /// Its options.
    pub options: StoreOptions,
    /// How long to wait for a peer on this genesis ([`PEER_WAIT`] for a node).
    pub peer_wait: Duration,
}

impl Join<'_> {
    /// Joins from the peers' snapshot.
    pub async fn run(self) -> Result<Joined, String> {
        let started = Instant::now();
        if self.bootstrap.is_empty() {
            return Err("checkpoint: joining from a snapshot needs bootstrap_peers to fetch it from".into());
        }
        let genesis = self.spec.build().map_err(|e| format!("genesis: {e}"))?.1.hash();
        let host = self.host;
        let listen: Multiaddr =
            format!("/ip4/{host}/tcp/0").parse().map_err(|e| format!("host {host:?}: {e}"))?;
        let config = doin_net::Config {
            listen: vec![listen],
            bootstrap: self.bootstrap.to_vec(),
            enable_mdns: false,
            request_timeout: Duration::from_secs(10),
            ..doin_net::Config::default()
        };
        let mut net =
            doin_net::start(self.key, config, Arc::new(doin_net::NoChain), Arc::new(doin_net::NoStateChecks))
                .await
                .map_err(|e| format!("starting the network to join: {e}"))?;
        let handle = net.handle.clone();
        // Events are not needed; drained so the network never waits on them.
        let drain = tokio::spawn(async move { while net.events.recv().await.is_some() {} });
        let result = fetch_and_import(&handle, &self, genesis).await;
        handle.shutdown().await;
        drain.abort();
        let (import, peers, fetched) = result?;
        Ok(Joined { import, peers, fetched, seconds: started.elapsed().as_secs_f64() })
    }
}

async fn fetch_and_import(
    handle: &doin_net::NetworkHandle,
    join: &Join<'_>,
    genesis: Hash,
) -> Result<(ImportReport, usize, (usize, u64)), String> {
    let (bootstrap, trusted) = (join.bootstrap, join.trusted);
    // Peers on this genesis (others are named and left alone).
    let deadline = Instant::now() + join.peer_wait;
    let peers: Vec<PeerId> = loop {
        for addr in bootstrap {
            let _ = handle.dial(addr.clone()).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let connected = handle.peers().await.unwrap_or_default();
        let mut ours = Vec::new();
        for (peer, s) in doin_net::sync::statuses(handle, &connected, Duration::from_secs(3)).await {
            if s.genesis == genesis {
                ours.push(peer);
            } else {
                tracing::warn!(%peer, theirs = %s.genesis, ours = %genesis, "a bootstrap peer is on another network");
            }
        }
        if !ours.is_empty() {
            break ours;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no peer on this genesis ({genesis}) answered within {} s: cannot fetch a snapshot",
                join.peer_wait.as_secs()
            ));
        }
    };
    let dir = join.data_dir.join("snapshot.fetch");
    let chunks_of = |bytes: &[u8]| -> Result<(u64, Vec<(String, Hash)>), String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a snapshot manifest: {e}"))?;
        Ok((m.height, m.chunks.into_iter().map(|c| (c.file, c.hash)).collect()))
    };
    let fetch = doin_net::sync::fetch_snapshot(handle, &peers, &dir, chunks_of)
        .await
        .map_err(|e| format!("fetching the snapshot: {e}"))?;
    let manifest: Manifest = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the fetched manifest is unreadable")?;
    if manifest.genesis != genesis {
        return Err(format!("the peers' snapshot is of another chain (genesis {})", manifest.genesis));
    }
    // Tie the snapshot's block to the trusted checkpoint.
    let (lo, hi) = (trusted.height.min(manifest.height), trusted.height.max(manifest.height));
    if hi - lo > MAX_SPAN {
        return Err(format!(
            "the checkpoint (height {}) is {} blocks from the peers' snapshot (height {}): at most {MAX_SPAN}",
            trusted.height,
            hi - lo,
            manifest.height
        ));
    }
    let headers = linked_headers(handle, peers[0], (lo, hi), genesis).await?;
    let at = |h: u64| headers.get((h - lo) as usize).map(|x| x.id());
    if at(trusted.height) != Some(trusted.hash) {
        return Err(format!(
            "the snapshot contradicts the trusted checkpoint: the peers' chain has block {} at height {}, \
             you trust {}; refusing it",
            at(trusted.height).map_or_else(|| "none".into(), |h| h.to_string()),
            trusted.height,
            trusted.hash
        ));
    }
    if at(manifest.height) != Some(manifest.block_hash) {
        return Err(format!(
            "the peers' snapshot names block {} at height {}, not the block their headers link to the \
             checkpoint",
            manifest.block_hash, manifest.height
        ));
    }
    let (_, report) =
        doin_storage::snapshot::import(&dir, join.store_path, Some(manifest.block_hash), join.options)
            .map_err(|e| format!("importing the snapshot: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((report, peers.len(), (fetch.fetched, fetch.bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_height_colon_hash() {
        let h = "ab".repeat(32);
        let t: Trusted = format!("42:{h}").parse().unwrap();
        assert_eq!((t.height, t.hash.to_string()), (42, h.clone()));
        assert!("42".parse::<Trusted>().unwrap_err().contains("HEIGHT:HASH"));
        assert!(format!("x:{h}").parse::<Trusted>().unwrap_err().contains("not a number"));
        assert!("3:abc".parse::<Trusted>().unwrap_err().contains("64 hex"));
    }
}
