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
use doin_net::{Config, GossipMessage, NoChain, NoStateChecks, Topic};
use doin_primitives::{
    DomainId, Hash, Keypair, Metric, Signed, VoteBody,
    poo::{CommitBody, RevealBody},
};

#[derive(Debug, Args)]
pub(crate) struct FloodArgs {
    /// The node to flood (multiaddr, or HOST:PORT of its P2P port).
    #[arg(long)]
    peer: String,
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
                    },
                    key,
                ))),
            }
        })
        .collect()
}

pub(crate) fn run(args: FloodArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(flood(args))
}

async fn flood(args: FloodArgs) -> anyhow::Result<()> {
    let domain = DomainId::new(args.domain.as_str()).map_err(|e| anyhow::anyhow!("domain: {e}"))?;
    let messages = bogus(&domain, args.messages, args.keys);
    let key = Keypair::from_seed(Hash::of(b"doin flood peer").0);
    let config = Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: vec![doin_node::node::parse_peer(&args.peer).map_err(|e| anyhow::anyhow!("--peer: {e}"))?],
        domains: vec![args.domain.clone()],
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(200),
        ..Config::default()
    };
    let net = doin_net::start(&key, config, Arc::new(NoChain), Arc::new(NoStateChecks)).await?;
    let handle = net.handle.clone();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
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
