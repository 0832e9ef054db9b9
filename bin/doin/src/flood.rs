//! `doin flood` (hidden): an attacker's gossip flood for the adversary tests. A libp2p peer
//! of its own dials a node, subscribes to a domain's optimae topic and publishes signed bogus
//! commits, reveals and votes from throwaway keys (none staked), as fast as it is allowed, for
//! a bounded time. Prints one JSON line: messages published, publish errors, and the node's
//! peers as it saw them at the end. Loopback only in tests; every loop is bounded.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use doin_net::{Config, GossipMessage, GossipValidator, NoChain, NoStateChecks, Refusal, Topic};
use doin_primitives::{
    DomainId, Hash, Keypair, Metric, Signed, VoteBody,
    poo::{CommitBody, RevealBody},
};

#[derive(Debug, Args)]
pub(crate) struct FloodArgs {
    /// The node to flood (multiaddr, or HOST:PORT of its P2P port).
    #[arg(long, required_unless_present = "sink")]
    peer: Option<String>,
    /// Instead of flooding: be a bystander that listens on this loopback port, subscribes to
    /// the domain and refuses every message with a penalty (graylisting its sender as a node
    /// does), until `--timeout-s`. A flood aimed at it costs the machine what a flood costs
    /// without touching the devnet: the control group of the flood test.
    #[arg(long, conflicts_with = "peer")]
    sink: Option<u16>,
    /// The domain whose optimae topic is flooded.
    #[arg(long, default_value = "quadratic")]
    domain: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Throwaway keys signing them.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Messages per second at most.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

/// The bogus messages: commits for the domain, reveals and votes on made-up commits, each
/// signed (validly) by one of `keys` throwaway keys.
fn bogus(domain: &DomainId, messages: usize, keys: usize) -> Vec<GossipMessage> {
    let keys: Vec<Keypair> = (0..keys.max(1))
        .map(|i| Keypair::from_seed(Hash::of_parts(&[b"flood", &(i as u64).to_le_bytes()]).0))
        .collect();
    (0..messages)
        .map(|i| {
            let key = &keys[i % keys.len()];
            let n = (i as u64).to_le_bytes();
            let commit = Hash::of_parts(&[b"commit", &n]);
            match i % 3 {
                0 => GossipMessage::Commit(Box::new(Signed::sign(
                    CommitBody {
                        domain: domain.clone(),
                        optimizer: key.address(),
                        optimae_hash: Hash::of(&n),
                        claimed: Metric(0),
                        reference_block: Hash::of_parts(&[b"reference", &n]),
                    },
                    key,
                ))),
                1 => GossipMessage::Reveal(Box::new(Signed::sign(
                    RevealBody {
                        commit,
                        optimizer: key.address(),
                        params: Default::default(),
                        salt: [0; 32],
                        artifact: None,
                        experiment: Default::default(),
                    },
                    key,
                ))),
                _ => GossipMessage::Vote(Box::new(Signed::sign(
                    VoteBody {
                        commit,
                        evaluator: key.address(),
                        round: 0,
                        measured: Metric(0),
                        data_hash: Hash::ZERO,
                        artifact_measured: None,
                    },
                    key,
                ))),
            }
        })
        .collect()
}

/// The TCP address of an `/ip4/…/tcp/…` multiaddr.
fn socket_of(addr: &doin_net::Multiaddr) -> Option<std::net::SocketAddr> {
    use doin_net::Protocol;
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| std::net::SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

pub(crate) fn run(args: FloodArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    match args.sink {
        Some(port) => runtime.block_on(sink(&args, port)),
        None => runtime.block_on(flood(args)),
    }
}

/// Refuses every gossip message with a penalty.
struct RejectAll;

impl GossipValidator for RejectAll {
    fn check(&self, _: &Topic, _: &GossipMessage) -> Result<(), Refusal> {
        Err(Refusal::Reject("a flood sink accepts nothing".into()))
    }
}

async fn sink(args: &FloodArgs, port: u16) -> anyhow::Result<()> {
    let key = Keypair::from_seed(Hash::of(b"doin flood sink").0);
    let config = Config {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse()?],
        domains: vec![args.domain.clone()],
        ip_colocation_penalty: false,
        ..Config::default()
    };
    let mut net = doin_net::start(&key, config, Arc::new(NoChain), Arc::new(RejectAll)).await?;
    let end = tokio::time::sleep(Duration::from_secs(args.timeout_s));
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            event = net.events.recv() => if event.is_none() { break },
        }
    }
    let peers = net.handle.peers().await.map(|p| p.len()).unwrap_or(0);
    println!("{}", serde_json::json!({"sink": true, "connected_peers_at_end": peers}));
    net.handle.shutdown().await;
    Ok(())
}

async fn flood(args: FloodArgs) -> anyhow::Result<()> {
    let domain = DomainId::new(args.domain.as_str()).map_err(|e| anyhow::anyhow!("domain: {e}"))?;
    let messages = bogus(&domain, args.messages, args.keys);
    let key = Keypair::from_seed(Hash::of(b"doin flood peer").0);
    let peer = doin_node::node::parse_peer(args.peer.as_deref().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("--peer: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    // The messages are signed before the node is up (the flooder may start first, so that
    // the flood meets the node from its first claims): wait until its port accepts.
    if let Some(addr) = socket_of(&peer) {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "{addr} never accepted a connection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let config = Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: vec![peer],
        domains: vec![args.domain.clone()],
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(200),
        ..Config::default()
    };
    let net = doin_net::start(&key, config, Arc::new(NoChain), Arc::new(NoStateChecks)).await?;
    let handle = net.handle.clone();
    let topic = Topic::Optimae(args.domain.clone());
    // Wait until the node is in our mesh for the topic.
    while handle.topic_peers(topic.clone()).await.map(|p| p.is_empty()).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < deadline, "the node never joined topic {}", topic.name());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let (mut published, mut errors) = (0u64, 0u64);
    let gap = Duration::from_micros(1_000_000 / args.rate.max(1));
    for (i, m) in messages.into_iter().enumerate() {
        if Instant::now() >= deadline {
            break;
        }
        // Commits travel on the blocks topic (block producers include them), the rest on the
        // domain's.
        let to = if matches!(m, GossipMessage::Commit(_)) { Topic::Blocks } else { topic.clone() };
        match handle.publish(to, m).await {
            Ok(_) => published += 1,
            Err(_) => errors += 1,
        }
        let due = started + gap * (i as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let peers = handle.peers().await.map(|p| p.len()).unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "flood": true,
            "peer_id": handle.peer_id().to_string(),
            "published": published,
            "publish_errors": errors,
            "wall_s": wall,
            "connected_peers_at_end": peers,
        })
    );
    handle.shutdown().await;
    Ok(())
}
