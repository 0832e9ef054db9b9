//! `doin bench gossip`: N in-process nodes over libp2p's memory transport on one random
//! topology, messages published from random nodes, once with DOIN's gossipsub and once with
//! plain flooding (libp2p floodsub) as the baseline.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use doin_primitives::{Amount, Hash, Keypair, Signed, TxBody, TxKind};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Transport,
    core::transport::MemoryTransport,
    core::upgrade::Version,
    floodsub, noise,
    swarm::{NetworkBehaviour, SwarmEvent},
    yamux,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::mpsc;

use crate::{Config, GossipMessage, NetworkEvent, NoChain, NoStateChecks, Topic, start};

/// Connections each node opens to earlier nodes (about twice that per node on average):
/// a node keeps a few dozen peers, as public networks do.
pub const DEGREE: usize = 12;

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Deliveries / (messages × (nodes − 1)).
    pub delivery_ratio: f64,
    /// Median publish-to-delivery latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Message transmissions between nodes per delivery.
    pub transmissions_per_delivery: f64,
}

/// A random connected topology: node i dials `degree` earlier nodes (fewer at the start).
pub fn topology(nodes: usize, degree: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..nodes)
        .map(|i| {
            let mut links: Vec<usize> = Vec::new();
            while links.len() < degree.min(i) {
                let j = rng.random_range(0..i);
                if !links.contains(&j) {
                    links.push(j);
                }
            }
            links
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summarize(latencies: &mut [f64], deliveries: usize, expected: usize, transmissions: f64) -> RunResult {
    latencies.sort_by(|a, b| a.total_cmp(b));
    RunResult {
        delivery_ratio: deliveries as f64 / expected.max(1) as f64,
        p50_ms: percentile(latencies, 0.5),
        p99_ms: percentile(latencies, 0.99),
        transmissions_per_delivery: transmissions / deliveries.max(1) as f64,
    }
}

/// Receipt times per message content hash.
type Receipts = Arc<Mutex<HashMap<Hash, Vec<Instant>>>>;

fn record(received: &Receipts, data: &[u8]) {
    if let Ok(mut r) = received.lock() {
        r.entry(Hash::of(data)).or_default().push(Instant::now());
    }
}

/// Publishes `messages` signed transactions from random nodes through `publish`, waits (at
/// most 15 s) for every other node to receive each, and returns (latencies in ms, deliveries,
/// expected deliveries).
async fn drive(
    nodes: usize,
    messages: usize,
    seed: u64,
    received: &Receipts,
    mut publish: impl AsyncFnMut(usize, Vec<u8>) -> Result<(), String>,
) -> Result<(Vec<f64>, usize, usize), String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let key = Keypair::from_seed([7; 32]);
    let mut sent: HashMap<Hash, Instant> = HashMap::new();
    for m in 0..messages {
        let from = rng.random_range(0..nodes);
        let bytes = payload(&key, m as u64);
        sent.insert(Hash::of(&bytes), Instant::now());
        publish(from, bytes).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expected = messages * (nodes - 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: usize = received.lock().map(|r| r.values().map(Vec::len).sum()).unwrap_or(0);
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::new();
    let mut deliveries = 0;
    if let Ok(r) = received.lock() {
        for (id, times) in r.iter() {
            if let Some(start) = sent.get(id) {
                deliveries += times.len();
                latencies.extend(times.iter().map(|t| t.duration_since(*start).as_secs_f64() * 1000.0));
            }
        }
    }
    Ok((latencies, deliveries, expected))
}

/// The memory transport with noise and yamux, as every in-process node uses it.
pub(crate) fn memory_transport(
    key: &libp2p::identity::Keypair,
) -> Result<
    libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    Ok(MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .boxed())
}

fn payload(key: &Keypair, n: u64) -> Vec<u8> {
    let body = TxBody {
        chain_id: 1,
        sender: key.address(),
        nonce: n,
        max_fee: Amount(10),
        priority_fee: Amount(1),
        kind: TxKind::Transfer { to: key.address(), amount: Amount(1) },
    };
    GossipMessage::Transaction(Box::new(Signed::sign(body, key))).encode()
}

fn memory_addr(base: u64, i: usize) -> Multiaddr {
    format!("/memory/{}", base + i as u64).parse().unwrap_or_else(|_| Multiaddr::empty())
}

/// Runs DOIN's gossipsub network.
pub async fn run_gossipsub(nodes: usize, messages: usize, seed: u64) -> Result<RunResult, String> {
    let topo = topology(nodes, DEGREE, seed);
    let base = 1_000_000 + (std::process::id() as u64 % 1000) * 10_000;
    let mut nets = Vec::with_capacity(nodes);
    for (i, links) in topo.iter().enumerate() {
        let config = Config {
            listen: vec![memory_addr(base, i)],
            bootstrap: links.iter().map(|j| memory_addr(base, *j)).collect(),
            ip_colocation_penalty: false,
            gossip_heartbeat: Duration::from_millis(200),
            max_connections: 64,
            queue: 4096,
            ..Config::default()
        };
        let key = Keypair::from_seed(*Hash::of(&(i as u64).to_le_bytes()).as_bytes());
        nets.push(
            start(&key, config, Arc::new(NoChain), Arc::new(NoStateChecks))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    // Ready when every node knows at least one subscribed peer; then let meshes form.
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in &nets {
        while n.handle.topic_peers(Topic::Txs).await.map_err(|e| e.to_string())?.is_empty() {
            if Instant::now() > deadline {
                return Err("gossip topology did not form within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received: Receipts = Arc::default();
    let mut handles = Vec::new();
    let mut collectors = Vec::new();
    for mut n in nets {
        handles.push(n.handle.clone());
        let received = received.clone();
        collectors.push(tokio::spawn(async move {
            while let Some(ev) = n.events.recv().await {
                if let NetworkEvent::Gossip { message, .. } = ev {
                    record(&received, &message.encode());
                }
            }
        }));
    }
    let (mut latencies, deliveries, expected) =
        drive(nodes, messages, seed, &received, async |from, bytes| {
            handles[from].publish_raw(Topic::Txs, bytes).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await?;
    // Every copy a node received, duplicates included, is one transmission.
    let mut transmissions = 0.0;
    for h in &handles {
        let text = h.metrics().await.map_err(|e| e.to_string())?;
        transmissions += text
            .lines()
            .filter(|l| l.starts_with("doin_net_gossipsub_topic_msg_recv_counts_unfiltered_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    for h in &handles {
        h.shutdown().await;
    }
    for c in collectors {
        c.abort();
    }
    Ok(summarize(&mut latencies, deliveries, expected, transmissions))
}

#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
struct Flood {
    floodsub: floodsub::Behaviour,
}

/// Runs the flooding baseline (libp2p floodsub: every node forwards each new message to every
/// neighbour but the one it came from) on the same topology.
pub async fn run_flooding(nodes: usize, messages: usize, seed: u64) -> Result<RunResult, String> {
    let topo = topology(nodes, DEGREE, seed);
    let base = 5_000_000 + (std::process::id() as u64 % 1000) * 10_000;
    let topic = floodsub::Topic::new("doin/flood/1");
    let received: Receipts = Arc::default();
    let transmissions: Arc<Mutex<f64>> = Arc::default();
    let mut publishers = Vec::new();
    for (i, links) in topo.iter().enumerate() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(memory_transport)
            .map_err(|e| e.to_string())?
            .with_behaviour(|key| Flood { floodsub: floodsub::Behaviour::new(key.public().to_peer_id()) })
            .map_err(|e| e.to_string())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.behaviour_mut().floodsub.subscribe(topic.clone());
        swarm.listen_on(memory_addr(base, i)).map_err(|e| e.to_string())?;
        for j in links {
            swarm.dial(memory_addr(base, *j)).map_err(|e| e.to_string())?;
        }
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        publishers.push(tx);
        let received = received.clone();
        let transmissions = transmissions.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut peers: Vec<PeerId> = Vec::new();
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(data) => {
                            if let Ok(mut t) = transmissions.lock() { *t += peers.len() as f64; }
                            swarm.behaviour_mut().floodsub.publish(topic.clone(), data);
                        }
                        None => break,
                    },
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } if !peers.contains(&peer_id) => {
                            peers.push(peer_id);
                            swarm.behaviour_mut().floodsub.add_node_to_partial_view(peer_id);
                        }
                        SwarmEvent::Behaviour(FloodEvent::Floodsub(floodsub::Event::Message(m))) => {
                            // Floodsub forwards a new message to every neighbour but its source.
                            if let Ok(mut t) = transmissions.lock() { *t += peers.len().saturating_sub(1) as f64; }
                            record(&received, &m.data);
                        }
                        _ => {}
                    },
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut latencies, deliveries, expected) =
        drive(nodes, messages, seed, &received, async |from, bytes| {
            publishers[from].send(bytes).await.map_err(|e| e.to_string())
        })
        .await?;
    drop(publishers);
    let t = transmissions.lock().map(|t| *t).unwrap_or(0.0);
    Ok(summarize(&mut latencies, deliveries, expected, t))
}
