//! Network configuration.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::gossip::Topic;

/// How a node joins the network. Defaults are safe for any machine: nothing listens beyond what
/// is configured, mDNS is off, and peers are only those configured or learned from peers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0`, `/ip4/…/udp/…/quic-v1`, `/memory/N`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Domains whose optimae topic this node subscribes to (domain sharding).
    pub domains: Vec<String>,
    /// LAN discovery. Only honoured when a non-loopback listen address is configured.
    pub enable_mdns: bool,
    /// Act as a relay for peers behind NAT.
    pub relay_server: bool,
    /// Addresses at which others reach this node although it does not listen on them itself (a
    /// public address forwarded to it, a port mapping): announced to peers (identify, kademlia)
    /// as confirmed external addresses.
    pub external: Vec<Multiaddr>,
    /// Penalize many peers sharing one IP (off for loopback networks and tests).
    pub ip_colocation_penalty: bool,
    /// Established connections at most.
    pub max_connections: u32,
    /// Outbound connections per address group (/16 IPv4, /32 IPv6) at most, so that one
    /// network operator cannot take all our outbound slots (eclipse resistance).
    pub max_outbound_per_group: usize,
    /// Idle connections close after this long.
    pub idle_timeout: Duration,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat: Duration,
    /// Target gossip mesh degree.
    pub mesh_n: usize,
    /// Sync request timeout.
    pub request_timeout: Duration,
    /// Inbound sync requests per peer per second (burst twice that).
    pub requests_per_second: u32,
    /// Capacity of the command and event queues.
    pub queue: usize,
    /// Record gossipsub metrics (Prometheus text through `NetworkHandle::metrics`).
    pub metrics: bool,
    /// How long a peer whose gossip score fell below the ban threshold stays disconnected and
    /// refused.
    pub ban_duration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            domains: Vec::new(),
            enable_mdns: false,
            relay_server: false,
            external: Vec::new(),
            ip_colocation_penalty: true,
            max_connections: 128,
            max_outbound_per_group: 2,
            idle_timeout: Duration::from_secs(120),
            gossip_heartbeat: Duration::from_millis(700),
            mesh_n: 6,
            request_timeout: Duration::from_secs(20),
            requests_per_second: 20,
            queue: 1024,
            metrics: true,
            ban_duration: Duration::from_secs(120),
        }
    }
}

impl Config {
    /// The topics this node subscribes to.
    pub fn topics(&self) -> Vec<Topic> {
        let mut topics = vec![Topic::Blocks, Topic::Txs];
        topics.extend(self.domains.iter().map(|d| Topic::Optimae(d.clone())));
        topics
    }

    /// mDNS is allowed only on a non-loopback listen address, and only when enabled.
    pub fn mdns_allowed(&self) -> bool {
        self.enable_mdns
            && self.listen.iter().any(|a| {
                a.iter().any(|p| match p {
                    libp2p::multiaddr::Protocol::Ip4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
                    libp2p::multiaddr::Protocol::Ip6(ip) => !ip.is_loopback() && !ip.is_unspecified(),
                    _ => false,
                })
            })
    }
}
