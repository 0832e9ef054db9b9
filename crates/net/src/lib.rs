//! DOIN networking on rust-libp2p (no home-made transport or gossip).
//!
//! - [`behaviour`]: TCP + QUIC (+ an in-process memory transport for tests and benchmarks),
//!   noise, yamux, identify, ping, kademlia (server mode), gossipsub with validation before
//!   forwarding and peer scoring, `/doin/sync/1` request-response, relay v2 client (and server
//!   when configured), dcutr, autonat, connection limits, and mDNS only when configured on a
//!   non-loopback address.
//! - [`gossip`]: topics `doin/blocks/1`, `doin/txs/1`, `doin/optimae/<domain>/1` (a node
//!   subscribes only to the domains it serves) and the [`GossipMessage`] payloads with their
//!   bound, signature and topic checks. Message ids are content hashes.
//! - [`protocol`]: sync requests (status, headers by range, bodies by range ≤ 50, snapshot
//!   manifest and chunks, artifact chunks) with size limits on both sides.
//! - [`network`]: the actor that owns the swarm, the [`NetworkHandle`] that drives it through a
//!   bounded queue, and the events it emits.
//! - [`sync`]: header-first sync from the peer with the most work into a [`sync::BlockSink`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod artifact;
pub mod behaviour;
pub mod bench;
pub mod config;
pub mod error;
pub mod gossip;
pub mod network;
pub mod protocol;
pub mod sync;

pub use config::Config;
pub use error::NetError;
pub use gossip::{CompactBlock, GossipMessage, Topic};
pub use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
pub use network::{
    GossipValidator, Network, NetworkEvent, NetworkHandle, NoChain, NoStateChecks, Refusal, SyncProvider,
    start,
};
pub use protocol::{Status, SyncRequest, SyncResponse};
