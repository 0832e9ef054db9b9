//! The composed libp2p behaviour and the swarm it runs in.

use std::{collections::HashMap, time::Duration};

use libp2p::{
    Swarm, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify, identity, kad, mdns,
    noise, ping, relay, request_response, swarm::NetworkBehaviour, swarm::behaviour::toggle::Toggle, tcp,
    yamux,
};

use crate::{
    config::Config,
    error::NetError,
    gossip::{GossipMessage, Topic},
    protocol::{SYNC_PROTOCOL, SyncCodec},
};

/// Everything a DOIN node speaks.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)] // not every libp2p behaviour implements Debug
pub struct Behaviour {
    /// Connection caps.
    pub limits: connection_limits::Behaviour,
    /// Peers banned for falling below the graylist: their connections are closed and refused.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Gossip with validation before forwarding and peer scoring.
    pub gossip: gossipsub::Behaviour,
    /// `/doin/sync/1`.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Peer discovery and provider records.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Listen addresses and protocols of peers.
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// LAN discovery, only when configured.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Reaching peers behind NAT through relays.
    pub relay_client: relay::client::Behaviour,
    /// Serving as a relay for others, when configured.
    pub relay_server: Toggle<relay::Behaviour>,
    /// Hole punching through relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// Learning whether we are reachable.
    pub autonat: autonat::Behaviour,
}

/// The gossip score below which a peer is graylisted (its RPCs ignored; the score decays back).
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

/// The gossip score below which a peer is also disconnected and banned for `ban_duration`:
/// far below the graylist (invalid messages cost `-10 × n²` per topic, so about ten in a row),
/// so that an honest peer caught once or twice on the wrong side of a fork is only graylisted
/// for a moment, while a flooder (thousands below zero after a few dozen messages) is cut off.
pub const BAN_THRESHOLD: f64 = -1000.0;

/// Peer-score thresholds: a peer whose invalid messages drive its score below
/// `graylist_threshold` is ignored.
pub(crate) fn thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Score parameters of one topic: invalid messages cost `-10 × n²` (graylisted at the 3rd).
pub(crate) fn topic_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    }
}

fn score_params(config: &Config, topics: &[Topic]) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams { topics: HashMap::new(), ..Default::default() };
    if !config.ip_colocation_penalty {
        params.ip_colocation_factor_weight = 0.0;
    }
    for t in topics {
        params.topics.insert(t.ident().hash(), topic_params());
    }
    params
}

fn gossip(
    key: &identity::Keypair,
    config: &Config,
    registry: Option<&mut prometheus_client::registry::Registry>,
) -> Result<gossipsub::Behaviour, NetError> {
    // Peer exchange: a peer pruned from a full mesh is handed others to connect to (dialed by
    // id; their addresses come from kademlia), accepted only from peers scoring
    // `accept_px_threshold` or more.
    let gconfig = gossipsub::ConfigBuilder::default()
        .do_px()
        .heartbeat_interval(config.gossip_heartbeat)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(crate::gossip::MAX_GOSSIP_BYTES)
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(GossipMessage::id(&m.data).0.to_vec())
        })
        .mesh_n(config.mesh_n)
        .mesh_n_low(config.mesh_n.saturating_sub(2).max(1))
        .mesh_n_high(config.mesh_n * 2)
        .mesh_outbound_min(1)
        .flood_publish(false)
        .build()
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gconfig)
            .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    behaviour
        .with_peer_score(score_params(config, &config.topics()), thresholds())
        .map_err(|e| NetError::Config(format!("peer score: {e}")))?;
    Ok(match registry {
        Some(r) => behaviour.with_metrics(r.sub_registry_with_prefix("gossipsub"), Default::default()),
        None => behaviour,
    })
}

impl Behaviour {
    fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        config: &Config,
        registry: Option<&mut prometheus_client::registry::Registry>,
    ) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(config.max_connections / 2 + 1));
        let mut kad_config = kad::Config::new(kad::PROTOCOL_NAME);
        kad_config.set_query_timeout(Duration::from_secs(30));
        let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Loopback and test namespaces never confirm an external address: serve anyway.
        kad.set_mode(Some(kad::Mode::Server));
        let mdns = if config.enable_mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| NetError::Config(format!("mdns: {e}")))?,
            )
        } else {
            None
        };
        let sync = request_response::Behaviour::with_codec(
            SyncCodec,
            [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(64),
        );
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            blocked: allow_block_list::Behaviour::default(),
            gossip: gossip(key, config, registry)?,
            sync,
            kad,
            identify: identify::Behaviour::new(identify::Config::new("/doin/1.0.0".into(), key.public())),
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: mdns.into(),
            relay_client,
            relay_server: config.relay_server.then(|| relay::Behaviour::new(peer_id, relay_config())).into(),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
        })
    }
}

/// Builds the swarm: TCP and QUIC (noise + yamux over TCP), an in-process memory transport for
/// tests and benchmarks, and the relay client transport.
pub(crate) fn build_swarm(
    key: identity::Keypair,
    config: &Config,
    registry: Option<&mut prometheus_client::registry::Registry>,
) -> Result<Swarm<Behaviour>, NetError> {
    let err = |e: &dyn std::fmt::Display| NetError::Config(format!("transport: {e}"));
    let idle = config.idle_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| err(&e))?
        .with_quic()
        .with_other_transport(crate::bench::memory_transport)
        .map_err(|e| err(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| err(&e))?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, config, registry)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// Circuit relay limits. libp2p's defaults (2 minutes and 128 KiB per circuit) are made for
/// hole punching; a DOIN node behind a NAT syncs and gossips through its relay for as long as
/// it runs, so a circuit may carry 64 MiB for an hour, with
/// libp2p's default caps on reservations (128) and circuits (16) bounding what a relay gives.
fn relay_config() -> relay::Config {
    relay::Config {
        max_circuit_duration: std::time::Duration::from_secs(3600),
        max_circuit_bytes: 64 << 20,
        ..relay::Config::default()
    }
}
