//! What peers send: gossip messages on every topic (decoded and checked as the network actor
//! does, then compact blocks rebuilt as the node does) and sync requests and responses.

use doin_net::{CompactBlock, GossipMessage, SyncRequest, SyncResponse, Topic};
use doin_primitives::{Block, encode};

/// The gossip topics a message may arrive on.
fn topics() -> [Topic; 3] {
    [Topic::Blocks, Topic::Txs, Topic::Optimae(doin_consensus::testkit::domain_id().to_string())]
}

/// Any bytes on any topic: decoding and the stateless checks never panic; a message that passes
/// re-encodes to its bytes, and a compact block rebuilds (or names what is missing) from the
/// pieces of the block it was made from without panicking.
pub fn gossip(data: &[u8]) {
    for topic in topics() {
        let Ok(msg) = GossipMessage::decode_and_check(&topic, data) else { continue };
        assert_eq!(msg.encode(), data, "a checked gossip message re-encodes to its bytes");
        if let GossipMessage::Block(compact) = msg {
            let _ = compact.rebuild(|_| None, |_| None, |_| None);
        }
    }
}

/// Any bytes as a sync request or response (what `SyncCodec` decodes from a frame): never
/// panics, and what decodes re-encodes to the same bytes.
pub fn sync(data: &[u8]) {
    if let Ok(req) = borsh::from_slice::<SyncRequest>(data) {
        assert_eq!(borsh::to_vec(&req).ok().as_deref(), Some(data));
    }
    if let Ok(res) = borsh::from_slice::<SyncResponse>(data) {
        assert_eq!(borsh::to_vec(&res).ok().as_deref(), Some(data));
    }
}

/// The base chain's blocks as compact-block announcements, and its genesis.
pub(crate) fn gossip_seeds() -> Vec<Vec<u8>> {
    let blocks: Vec<Block> =
        crate::chain::block_seeds().iter().filter_map(|b| Block::decode(b).ok()).collect();
    let mut seeds: Vec<Vec<u8>> =
        blocks.iter().map(|b| GossipMessage::Block(Box::new(CompactBlock::of(b))).encode()).collect();
    for b in &blocks {
        seeds.extend(
            b.body.transactions.iter().map(|t| GossipMessage::Transaction(Box::new(t.clone())).encode()),
        );
        for c in b.body.certificates.iter() {
            seeds.push(GossipMessage::Reveal(Box::new(c.reveal.clone())).encode());
            seeds.extend(c.votes.iter().map(|v| GossipMessage::Vote(Box::new(v.clone())).encode()));
        }
        seeds.extend(b.body.commits.iter().map(|c| GossipMessage::Commit(Box::new(c.clone())).encode()));
    }
    seeds
}

/// Requests of every kind, and responses carrying the base chain's headers and bodies.
pub(crate) fn sync_seeds() -> Vec<Vec<u8>> {
    let blocks: Vec<Block> =
        crate::chain::block_seeds().iter().filter_map(|b| Block::decode(b).ok()).collect();
    let requests = [
        SyncRequest::Status,
        SyncRequest::Headers { from: 1, count: 512 },
        SyncRequest::Bodies { from: 1, count: 50 },
        SyncRequest::SnapshotManifest,
        SyncRequest::SnapshotChunk { index: 3 },
    ];
    let mut seeds: Vec<Vec<u8>> = requests.iter().filter_map(|r| borsh::to_vec(r).ok()).collect();
    let headers = SyncResponse::Headers(blocks.iter().map(|b| b.header.clone()).collect());
    let bodies = SyncResponse::Bodies(blocks.iter().map(|b| (b.hash(), b.body.clone())).collect());
    seeds.extend(
        [headers, bodies, SyncResponse::Error("busy".into())].iter().filter_map(|r| borsh::to_vec(r).ok()),
    );
    seeds.push(encode(&blocks.len()));
    seeds
}
