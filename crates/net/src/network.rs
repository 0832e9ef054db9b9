//! The network actor: owns the swarm, takes [`Command`]s from [`NetworkHandle`]s, validates
//! every gossip message before it is forwarded, answers sync requests through a
//! [`SyncProvider`], and emits [`NetworkEvent`]s. All queues are bounded.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use doin_primitives::{BlockBody, BlockHeader, Hash, Keypair};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, dcutr, gossipsub, identify, identity, kad, mdns, request_response,
    swarm::SwarmEvent,
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{
    behaviour::{Behaviour, BehaviourEvent, build_swarm, topic_params},
    config::Config,
    error::NetError,
    gossip::{GossipMessage, Topic},
    protocol::{MAX_BODIES, MAX_HEADERS, Status, SyncRequest, SyncResponse},
};

/// Chain data the node serves to peers. Implementations must be cheap (store reads). Every
/// method defaults to "nothing to serve", so a peer without a chain (a bench node, an artifact
/// host) implements only what it has.
pub trait SyncProvider: Send + Sync + 'static {
    /// Our chain status.
    fn status(&self) -> Option<Status> {
        None
    }
    /// Canonical headers from `from`, at most `count`.
    fn headers(&self, _from: u64, _count: u32) -> Vec<BlockHeader> {
        Vec::new()
    }
    /// Canonical bodies from `from`, at most `count`, with their block hashes.
    fn bodies(&self, _from: u64, _count: u32) -> Vec<(Hash, BlockBody)> {
        Vec::new()
    }
    /// Transactions by id from the mempool or recent blocks (missing ones are skipped).
    fn transactions(&self, _ids: &[Hash]) -> Vec<doin_primitives::Transaction> {
        Vec::new()
    }
    /// A block body by block hash.
    fn body(&self, _hash: &Hash) -> Option<BlockBody> {
        None
    }
    /// The snapshot manifest, if one is published.
    fn snapshot_manifest(&self) -> Option<Vec<u8>> {
        None
    }
    /// One snapshot chunk.
    fn snapshot_chunk(&self, _index: u32) -> Option<Vec<u8>> {
        None
    }
    /// One artifact chunk: (total chunks, bytes).
    fn artifact_chunk(&self, _hash: &Hash, _chunk: u32) -> Option<(u32, Vec<u8>)> {
        None
    }
}

/// Why the caller's state checks refused a gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not forwarded and not delivered, without penalty: the message may be honest but this
    /// node cannot use it now (its commit not seen yet, a duplicate).
    Ignore(String),
    /// Invalid against the state: not forwarded, and the forwarding peer's score is charged
    /// (gossipsub graylists a peer that keeps sending such messages).
    Reject(String),
}

/// The caller's cheap state checks on gossip (nonce not stale, commit references a known
/// block, …), run after bounds and signatures and before forwarding.
pub trait GossipValidator: Send + Sync + 'static {
    /// `Err` refuses the message; a [`Refusal::Reject`] penalizes the peer that sent it.
    fn check(&self, topic: &Topic, message: &GossipMessage) -> Result<(), Refusal>;
}

/// A peer with no chain to serve (a flooder, a gossip benchmark node): answers no sync request.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoChain;

impl SyncProvider for NoChain {}

/// Accepts everything that passes bounds and signatures.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStateChecks;

impl GossipValidator for NoStateChecks {
    fn check(&self, _: &Topic, _: &GossipMessage) -> Result<(), Refusal> {
        Ok(())
    }
}

/// What the network reports.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    /// A validated gossip message (already accepted for forwarding).
    Gossip {
        /// Topic.
        topic: Topic,
        /// The message.
        message: GossipMessage,
        /// Content id.
        id: Hash,
        /// The peer that forwarded it.
        from: PeerId,
    },
    /// A gossip message failed validation; the forwarding peer was penalized.
    Rejected {
        /// The peer.
        from: PeerId,
        /// Why.
        reason: String,
    },
    /// A connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer subscribed to a topic.
    Subscribed {
        /// Peer.
        peer: PeerId,
        /// Topic name.
        topic: String,
    },
    /// Now listening on an address.
    Listening(Multiaddr),
    /// A hole punch (DCUtR) through a relayed connection ended: `Ok` when a direct connection
    /// to the peer now stands beside the relayed one.
    HolePunch {
        /// The peer on the other side of the relay.
        peer: PeerId,
        /// Why it failed, if it did.
        result: Result<(), String>,
    },
}

enum Command {
    Publish { topic: Topic, message: GossipMessage, reply: oneshot::Sender<Result<Hash, NetError>> },
    PublishRaw { topic: Topic, bytes: Vec<u8>, reply: oneshot::Sender<Result<Hash, NetError>> },
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<(), NetError>> },
    Request { peer: PeerId, request: SyncRequest, reply: oneshot::Sender<Result<SyncResponse, NetError>> },
    Peers { reply: oneshot::Sender<Vec<PeerId>> },
    TopicPeers { topic: Topic, reply: oneshot::Sender<Vec<PeerId>> },
    Score { peer: PeerId, reply: oneshot::Sender<Option<f64>> },
    Banned { reply: oneshot::Sender<Vec<PeerId>> },
    Listeners { reply: oneshot::Sender<Vec<Multiaddr>> },
    Metrics { reply: oneshot::Sender<String> },
    Provide { hash: Hash, reply: oneshot::Sender<Result<(), NetError>> },
    Providers { hash: Hash, reply: oneshot::Sender<Vec<PeerId>> },
    Shutdown,
}

/// The cloneable sender side of the network actor.
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl NetworkHandle {
    /// Our peer id (the node key's `PeerId`).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Publishes a message on a topic; returns its id.
    pub async fn publish(&self, topic: Topic, message: GossipMessage) -> Result<Hash, NetError> {
        self.ask(|reply| Command::Publish { topic, message, reply }).await?
    }

    /// Publishes raw bytes (tests of invalid traffic, benchmarks).
    pub async fn publish_raw(&self, topic: Topic, bytes: Vec<u8>) -> Result<Hash, NetError> {
        self.ask(|reply| Command::PublishRaw { topic, bytes, reply }).await?
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Sends a sync request and waits for the response.
    pub async fn request(&self, peer: PeerId, request: SyncRequest) -> Result<SyncResponse, NetError> {
        self.ask(|reply| Command::Request { peer, request, reply }).await?
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Peers known to be subscribed to `topic`.
    pub async fn topic_peers(&self, topic: Topic) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::TopicPeers { topic, reply }).await
    }

    /// A peer's gossip score.
    pub async fn score(&self, peer: PeerId) -> Result<Option<f64>, NetError> {
        self.ask(|reply| Command::Score { peer, reply }).await
    }

    /// Peers banned now (their gossip score fell below the graylist), at most 4 096.
    pub async fn banned(&self) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::Banned { reply }).await
    }

    /// Addresses we listen on.
    pub async fn listeners(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(|reply| Command::Listeners { reply }).await
    }

    /// Announces in the DHT that we hold the artifact `hash` (a kademlia provider record).
    pub async fn provide(&self, hash: Hash) -> Result<(), NetError> {
        self.ask(|reply| Command::Provide { hash, reply }).await?
    }

    /// Peers that announced holding the artifact `hash` (kademlia provider records).
    pub async fn providers(&self, hash: Hash) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::Providers { hash, reply }).await
    }

    /// The network's metrics in Prometheus text format.
    pub async fn metrics(&self) -> Result<String, NetError> {
        self.ask(|reply| Command::Metrics { reply }).await
    }

    /// Stops the network task.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// A running network: its handle, its event stream and its task.
#[derive(Debug)]
pub struct Network {
    /// Commands in.
    pub handle: NetworkHandle,
    /// Events out.
    pub events: mpsc::Receiver<NetworkEvent>,
    /// The actor task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the network for the node key `key`: builds the swarm, listens, dials the bootstrap
/// peers and spawns the actor.
pub async fn start(
    key: &Keypair,
    config: Config,
    provider: Arc<dyn SyncProvider>,
    validator: Arc<dyn GossipValidator>,
) -> Result<Network, NetError> {
    let id_key =
        identity::Keypair::ed25519_from_bytes(key.seed()).map_err(|e| NetError::Config(e.to_string()))?;
    let peer_id = id_key.public().to_peer_id();
    let mut config = config;
    if config.enable_mdns && !config.mdns_allowed() {
        warn!(target: "net", "mdns requested but no non-loopback listen address is configured: mdns stays off");
        config.enable_mdns = false;
    }
    let mut registry = prometheus_client::registry::Registry::with_prefix("doin_net");
    let mut swarm = build_swarm(id_key, &config, config.metrics.then_some(&mut registry))?;
    for topic in config.topics() {
        swarm
            .behaviour_mut()
            .gossip
            .subscribe(&topic.ident())
            .map_err(|e| NetError::Config(format!("subscribing to {}: {e}", topic.name())))?;
    }
    for addr in &config.external {
        if is_circuit(addr) {
            return Err(NetError::Config(format!(
                "external address {addr} goes through a relay: listen through it instead"
            )));
        }
        swarm.add_external_address(addr.clone());
    }
    let hole_punches = Family::<Vec<(String, String)>, Counter>::default();
    registry.register(
        "hole_punches",
        "Hole punches (DCUtR) through relayed connections, by result",
        hole_punches.clone(),
    );
    let mut circuits = HashMap::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen { addr: addr.to_string(), reason: e.to_string() })?;
        if is_circuit(addr) {
            circuits.insert(id, (addr.clone(), 0));
        }
    }
    for addr in &config.bootstrap {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(target: "net", %addr, error = %e, "bootstrap dial failed");
        }
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(config.queue);
    let (ev_tx, ev_rx) = mpsc::channel(config.queue);
    let actor = Actor {
        swarm,
        commands: cmd_rx,
        events: ev_tx,
        provider,
        validator,
        pending: HashMap::new(),
        buckets: HashMap::new(),
        rate: config.requests_per_second.max(1),
        relay_server: config.relay_server,
        connected: HashSet::new(),
        outbound_groups: HashMap::new(),
        counted: HashMap::new(),
        max_outbound_per_group: config.max_outbound_per_group,
        registry,
        provider_queries: HashMap::new(),
        banned: HashMap::new(),
        ban_duration: config.ban_duration,
        circuits,
        relisten: Vec::new(),
        hole_punches,
    };
    let task = tokio::spawn(actor.run());
    Ok(Network { handle: NetworkHandle { commands: cmd_tx, peer_id }, events: ev_rx, task })
}

struct Actor {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    provider: Arc<dyn SyncProvider>,
    validator: Arc<dyn GossipValidator>,
    pending: HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<SyncResponse, NetError>>>,
    /// Per-peer token buckets for inbound requests: (tokens, last refill).
    buckets: HashMap<PeerId, (f64, Instant)>,
    rate: u32,
    relay_server: bool,
    connected: HashSet<PeerId>,
    /// Outbound connections per address group (eclipse resistance).
    outbound_groups: HashMap<String, usize>,
    counted: HashMap<libp2p::swarm::ConnectionId, String>,
    max_outbound_per_group: usize,
    registry: prometheus_client::registry::Registry,
    provider_queries: HashMap<kad::QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    /// Banned peers and when their ban ends (at most [`MAX_BANNED`]).
    banned: HashMap<PeerId, Instant>,
    ban_duration: std::time::Duration,
    /// Listens through a relay (circuit addresses) and how many times each failed in a row.
    circuits: HashMap<libp2p::core::transport::ListenerId, (Multiaddr, u32)>,
    /// Circuit listens to try again, and when: a reservation is lost when the relay restarts
    /// or the connection to it races another dial, and a node behind a NAT must not stay
    /// unreachable for it.
    relisten: Vec<(Instant, Multiaddr, u32)>,
    /// `doin_net_hole_punches_total{result}`.
    hole_punches: Family<Vec<(String, String)>, Counter>,
}

/// Whether `addr` listens or dials through a relay.
fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

/// Banned peers remembered at once; beyond it the ban that ends first is lifted early.
const MAX_BANNED: usize = 4096;

/// The address group of a multiaddr: /16 for IPv4, /32 for IPv6. Loopback, memory and relayed
/// addresses have none (never limited).
pub fn address_group(addr: &Multiaddr) -> Option<String> {
    if is_circuit(addr) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) if !ip.is_loopback() => {
            let o = ip.octets();
            Some(format!("{}.{}", o[0], o[1]))
        }
        libp2p::multiaddr::Protocol::Ip6(ip) if !ip.is_loopback() => {
            let s = ip.segments();
            Some(format!("{:x}:{:x}", s[0], s[1]))
        }
        _ => None,
    })
}

impl Actor {
    async fn run(mut self) {
        // Random walks keep the routing table fresh and find new peers.
        let mut walk = tokio::time::interval(std::time::Duration::from_secs(30));
        // Graylisted peers are cut off: gossipsub only ignores their RPCs, and a connection that
        // keeps delivering a flood still costs every node decryption, framing and wake-ups.
        let mut bans = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = bans.tick() => {
                    self.ban_graylisted();
                    self.relisten_circuits();
                }
                _ = walk.tick() => {
                    if !self.connected.is_empty() {
                        self.swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.command(c),
                },
                event = self.swarm.select_next_some() => self.swarm_event(event),
            }
        }
        debug!(target: "net", "network task stopped");
    }

    /// Listens again through relays whose reservation ended, after a backoff of 2, 4, 8, …
    /// 60 s (reset once a listen through the relay succeeds).
    fn relisten_circuits(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) = self.relisten.drain(..).partition(|(at, _, _)| *at <= now);
        self.relisten = wait;
        for (_, addr, failures) in due {
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    info!(target: "net::relay", %addr, failures, "listening through the relay again");
                    self.circuits.insert(id, (addr, failures));
                }
                Err(error) => {
                    warn!(target: "net::relay", %addr, %error, "cannot listen through the relay");
                    self.schedule_relisten(addr, failures + 1);
                }
            }
        }
    }

    fn schedule_relisten(&mut self, addr: Multiaddr, failures: u32) {
        let backoff =
            std::time::Duration::from_secs(1u64 << failures.min(6)).min(std::time::Duration::from_secs(60));
        self.relisten.push((Instant::now() + backoff, addr, failures));
    }

    /// Bans (disconnects and refuses) connected peers whose gossip score is below
    /// [`crate::behaviour::BAN_THRESHOLD`], and lifts bans that ended.
    fn ban_graylisted(&mut self) {
        let now = Instant::now();
        let ended: Vec<PeerId> =
            self.banned.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for peer in ended {
            self.banned.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        let low: Vec<(PeerId, f64)> = self
            .connected
            .iter()
            .filter_map(|p| self.swarm.behaviour().gossip.peer_score(p).map(|s| (*p, s)))
            .filter(|(p, s)| *s < crate::behaviour::BAN_THRESHOLD && !self.banned.contains_key(p))
            .collect();
        for (peer, score) in low {
            if self.banned.len() >= MAX_BANNED
                && let Some(first) = self.banned.iter().min_by_key(|(_, until)| **until).map(|(p, _)| *p)
            {
                self.banned.remove(&first);
                self.swarm.behaviour_mut().blocked.unblock_peer(first);
            }
            self.banned.insert(peer, now + self.ban_duration);
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            warn!(
                target: "net",
                %peer,
                score,
                ban_s = self.ban_duration.as_secs(),
                "gossip score far below the graylist: peer disconnected and banned"
            );
        }
    }

    fn emit(&self, event: NetworkEvent) {
        // A full event queue drops events rather than stalling the swarm; the node resyncs.
        if self.events.try_send(event).is_err() {
            debug!(target: "net", "event queue full: event dropped");
        }
    }

    fn publish(&mut self, topic: &Topic, bytes: Vec<u8>) -> Result<Hash, NetError> {
        let id = GossipMessage::id(&bytes);
        self.swarm
            .behaviour_mut()
            .gossip
            .publish(topic.ident(), bytes)
            .map_err(|e| NetError::Publish(e.to_string()))?;
        Ok(id)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, message, reply } => {
                let _ = reply.send(self.publish(&topic, message.encode()));
            }
            Command::PublishRaw { topic, bytes, reply } => {
                let _ = reply.send(self.publish(&topic, bytes));
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(
                    self.swarm
                        .dial(addr.clone())
                        .map_err(|e| NetError::Request { peer: addr.to_string(), reason: e.to_string() }),
                );
            }
            Command::Request { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::TopicPeers { topic, reply } => {
                let hash = topic.ident().hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossip
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(p, _)| *p)
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Score { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossip.peer_score(&peer));
            }
            Command::Banned { reply } => {
                let _ = reply.send(self.banned.keys().copied().collect());
            }
            Command::Listeners { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Metrics { reply } => {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
                let _ = reply.send(text);
            }
            Command::Provide { hash, reply } => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(kad::RecordKey::new(&hash.0))
                    .map(|_| ())
                    .map_err(|e| NetError::Publish(format!("provider record: {e}")));
                let _ = reply.send(r);
            }
            Command::Providers { hash, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&hash.0));
                self.provider_queries.insert(id, (HashSet::new(), reply));
            }
            Command::Shutdown => {}
        }
    }

    fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, listener_id } => {
                info!(target: "net", %address, "listening");
                if let Some((_, failures)) = self.circuits.get_mut(&listener_id) {
                    *failures = 0;
                }
                // A relay hands its addresses to the peers it reserves slots for, so a node
                // configured as relay treats its own listen addresses as reachable.
                if self.relay_server
                    && !address.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
                {
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(NetworkEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                if endpoint.is_dialer()
                    && let Some(group) = address_group(endpoint.get_remote_address())
                {
                    let count = self.outbound_groups.entry(group.clone()).or_default();
                    if *count >= self.max_outbound_per_group {
                        debug!(target: "net", %peer_id, %group, "outbound address group full: closing");
                        self.swarm.close_connection(connection_id);
                        return;
                    }
                    *count += 1;
                    self.counted.insert(connection_id, group);
                }
                if self.connected.insert(peer_id) {
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                if let Some(group) = self.counted.remove(&connection_id)
                    && let Some(count) = self.outbound_groups.get_mut(&group)
                {
                    *count = count.saturating_sub(1);
                }
                if num_established > 0 {
                    return;
                }
                self.connected.remove(&peer_id);
                self.buckets.remove(&peer_id);
                self.emit(NetworkEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(event)) => self.gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.sync_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // kad does not learn addresses from identify by itself.
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                let result = result.map(|_| ()).map_err(|e| e.to_string());
                match &result {
                    Ok(()) => {
                        info!(target: "net::relay", peer = %remote_peer_id, "hole punched: direct connection")
                    }
                    Err(error) => {
                        info!(target: "net::relay", peer = %remote_peer_id, %error, "hole punching failed")
                    }
                }
                let label = if result.is_ok() { "direct" } else { "failed" };
                self.hole_punches.get_or_create(&vec![("result".to_owned(), label.to_owned())]).inc();
                self.emit(NetworkEvent::HolePunch { peer: remote_peer_id, result });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. })) => {
                debug!(target: "net::kad", %peer, "routing updated");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            })) => {
                if let Some((found, _)) = self.provider_queries.get_mut(&id)
                    && let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                {
                    found.extend(providers);
                }
                if step.last
                    && let Some((found, reply)) = self.provider_queries.remove(&id)
                {
                    let _ = reply.send(found.into_iter().collect());
                }
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                if let Err(error) = &reason {
                    warn!(target: "net", ?addresses, %error, "listener closed");
                }
                if let Some((addr, failures)) = self.circuits.remove(&listener_id) {
                    warn!(target: "net::relay", %addr, failures, "reservation at the relay ended; listening again");
                    self.schedule_relisten(addr, failures + 1);
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(target: "net", %error, "listener error"),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                info!(target: "net::relay", ?event, "relay client");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(target: "net", ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    fn gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let verdict = Topic::parse(message.topic.as_str())
                    .ok_or_else(|| Refusal::Reject(format!("unknown topic {}", message.topic)))
                    .and_then(|topic| {
                        let msg = GossipMessage::decode_and_check(&topic, &message.data)
                            .map_err(|e| Refusal::Reject(e.to_string()))?;
                        self.validator.check(&topic, &msg)?;
                        Ok((topic, msg))
                    });
                let acceptance = match verdict {
                    Ok((topic, msg)) => {
                        let id = GossipMessage::id(&message.data);
                        self.emit(NetworkEvent::Gossip { topic, message: msg, id, from: propagation_source });
                        gossipsub::MessageAcceptance::Accept
                    }
                    Err(Refusal::Ignore(reason)) => {
                        debug!(target: "net::gossip", peer = %propagation_source, %reason, "ignored gossip");
                        gossipsub::MessageAcceptance::Ignore
                    }
                    Err(Refusal::Reject(reason)) => {
                        debug!(target: "net::gossip", peer = %propagation_source, %reason, "rejected gossip");
                        self.emit(NetworkEvent::Rejected { from: propagation_source, reason });
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                self.swarm.behaviour_mut().gossip.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                // Score every domain topic a peer uses, so spam on any of them counts.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .set_topic_params(gossipsub::IdentTopic::new(topic.as_str()), topic_params());
                self.emit(NetworkEvent::Subscribed { peer: peer_id, topic: topic.into_string() });
            }
            _ => {}
        }
    }

    /// Token bucket: `rate` per second, burst `2 × rate`.
    fn allow_request(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let rate = self.rate as f64;
        let (tokens, last) = self.buckets.entry(peer).or_insert((2.0 * rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(2.0 * rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn answer(&self, request: SyncRequest) -> SyncResponse {
        let p = &self.provider;
        match request {
            SyncRequest::Status => {
                p.status().map_or_else(|| SyncResponse::Error("no chain".into()), SyncResponse::Status)
            }
            SyncRequest::Headers { from, count } => {
                SyncResponse::Headers(p.headers(from, count.min(MAX_HEADERS)))
            }
            SyncRequest::Bodies { from, count } => {
                // Bounded by count and by bytes: stop before the response limit.
                let mut bytes = 0usize;
                let bodies = p
                    .bodies(from, count.min(MAX_BODIES))
                    .into_iter()
                    .take_while(|(_, b)| {
                        bytes = bytes.saturating_add(borsh::object_length(b).unwrap_or(usize::MAX));
                        bytes <= crate::protocol::MAX_RESPONSE_BYTES - 64 * 1024
                    })
                    .collect();
                SyncResponse::Bodies(bodies)
            }
            SyncRequest::Transactions { ids } => {
                SyncResponse::Transactions(p.transactions(&ids[..ids.len().min(crate::protocol::MAX_TX_IDS)]))
            }
            SyncRequest::Body { hash } => SyncResponse::Body(p.body(&hash)),
            SyncRequest::SnapshotManifest => p
                .snapshot_manifest()
                .map_or_else(|| SyncResponse::Error("no snapshot".into()), SyncResponse::Bytes),
            SyncRequest::SnapshotChunk { index } => p.snapshot_chunk(index).map_or_else(
                || SyncResponse::Error(format!("no snapshot chunk {index}")),
                SyncResponse::Bytes,
            ),
            SyncRequest::Artifact { hash, chunk } => match p.artifact_chunk(&hash, chunk) {
                Some((total, data)) => SyncResponse::ArtifactChunk { total, hash: Hash::of(&data), data },
                None => SyncResponse::Error(format!("artifact {hash} chunk {chunk} not held")),
            },
        }
    }

    fn sync_event(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let response = if self.allow_request(peer) {
                        self.answer(request)
                    } else {
                        warn!(target: "net::sync", %peer, "request rate limit hit");
                        SyncResponse::Error("rate limited: slow down".into())
                    };
                    let _ = self.swarm.behaviour_mut().sync.send_response(channel, response);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply
                        .send(Err(NetError::Request { peer: peer.to_string(), reason: error.to_string() }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(target: "net::sync", %peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
