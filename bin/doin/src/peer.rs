//! `doin net-peer` (hidden): a minimal chain peer — a chain store on the network that follows
//! the heaviest chain by gossip and header-first sync, and optionally produces heartbeat blocks.
//! Used by the multi-process network tests until the full node lands.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Args;
use doin_consensus::{BlockTemplate, GenesisSpec, build_block, testkit};
use doin_net::{
    CompactBlock, Config, GossipMessage, Multiaddr, NetworkEvent, NetworkHandle, NoStateChecks, PeerId,
    Topic,
    sync::{BlockSink, best_peer, sync_from},
};
use doin_node::store::SharedStore;
use doin_primitives::{BlockBody, BlockKind, Hash};
use doin_storage::{ChainStore, StoreOptions};

#[derive(Debug, Args)]
pub(crate) struct PeerArgs {
    /// Data directory (chain.redb inside).
    #[arg(long)]
    data_dir: PathBuf,
    /// Genesis spec JSON file.
    #[arg(long)]
    genesis: PathBuf,
    /// Listen addresses (a `…/p2p/<relay>/p2p-circuit` address listens through a relay).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// Serve as a relay for peers that cannot reach each other.
    #[arg(long)]
    relay_server: bool,
    /// Peers to dial.
    #[arg(long = "peer")]
    peers: Vec<Multiaddr>,
    /// Produce heartbeat blocks with test key N.
    #[arg(long)]
    produce: Option<usize>,
    /// Milliseconds between produced blocks.
    #[arg(long, default_value_t = 150)]
    interval_ms: u64,
    /// Stop producing after this many milliseconds (keep following).
    #[arg(long)]
    produce_for_ms: Option<u64>,
    /// Stop once the tip reaches this height.
    #[arg(long)]
    until_height: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

/// Syncs from `peer` in the background (at most one run per peer at a time, bounded in
/// time), so an unreachable peer never stalls production or gossip handling.
fn spawn_sync(
    handle: &NetworkHandle,
    peer: PeerId,
    sink: &SharedStore,
    in_flight: &Arc<Mutex<HashSet<PeerId>>>,
) {
    if !in_flight.lock().map(|mut s| s.insert(peer)).unwrap_or(false) {
        return;
    }
    let (handle, mut sink, in_flight) = (handle.clone(), sink.clone(), in_flight.clone());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), sync_from(&handle, peer, &mut sink)).await;
        if let Ok(mut s) = in_flight.lock() {
            s.remove(&peer);
        }
    });
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn run(args: PeerArgs) -> anyhow::Result<()> {
    let spec: GenesisSpec =
        serde_json::from_slice(&std::fs::read(&args.genesis).context("reading the genesis file")?)
            .context("parsing the genesis file")?;
    let store = ChainStore::open(&args.data_dir.join("chain.redb"), &spec, StoreOptions::default())?;
    let store = SharedStore::new(store);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(peer_loop(args, store))
}

async fn peer_loop(args: PeerArgs, store: SharedStore) -> anyhow::Result<()> {
    // A network identity of its own per data directory.
    let seed = Hash::of(args.data_dir.to_string_lossy().as_bytes());
    let key = doin_primitives::Keypair::from_seed(seed.0);
    let config = Config {
        listen: args.listen.clone(),
        relay_server: args.relay_server,
        bootstrap: args.peers.clone(),
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let mut net = doin_net::start(&key, config, Arc::new(store.clone()), Arc::new(NoStateChecks)).await?;
    let producer = args.produce.map(testkit::key);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let produce_until = args.produce_for_ms.map(|ms| started + Duration::from_millis(ms));
    let mut produce = tokio::time::interval(Duration::from_millis(args.interval_ms));
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut last_tip = Hash::ZERO;
    let mut last_height = 0u64;
    let mut last_finalized = 0u64;
    let mut sink = store.clone();
    let in_flight: Arc<Mutex<HashSet<PeerId>>> = Arc::default();
    loop {
        let (height, tip) = {
            let s = store.lock();
            (s.tip().height(), s.tip().tip().hash)
        };
        let finalized = store.lock().finalized();
        if finalized.height > last_finalized {
            println!("finalized {} {}", finalized.height, finalized.hash);
            last_finalized = finalized.height;
        }
        if tip != last_tip {
            // The old tip is no longer canonical: a reorg.
            let still = store.lock().canonical_hash(last_height).ok().flatten();
            if last_tip != Hash::ZERO && still != Some(last_tip) {
                println!("reorg {last_height} {last_tip}");
            }
            println!("tip {height} {tip}");
            last_tip = tip;
            last_height = height;
        }
        if height >= args.until_height {
            println!("done {height} {tip}");
            // Keep serving a little so slower peers can finish syncing from us.
            tokio::time::sleep(Duration::from_secs(2)).await;
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out at height {height}");
        }
        tokio::select! {
            ev = net.events.recv() => match ev {
                Some(NetworkEvent::Listening(addr)) => {
                    let me = net.handle.peer_id();
                    if matches!(addr.iter().last(), Some(doin_net::Protocol::P2p(p)) if p == me) {
                        println!("listening {addr}");
                    } else {
                        println!("listening {addr}/p2p/{me}");
                    }
                }
                Some(NetworkEvent::PeerConnected(peer)) => println!("connected {peer}"),
                Some(NetworkEvent::Gossip { message: GossipMessage::Block(compact), from, .. }) => {
                    // This peer keeps no mempool: a block it cannot rebuild alone is synced.
                    match compact.rebuild(|_| None, |_| None, |_| None) {
                        Ok(block) if compact.header.parent_hash == tip => {
                            let _ = sink.import(block);
                        }
                        _ if compact.header.height > height => spawn_sync(&net.handle, from, &sink, &in_flight),
                        _ => {}
                    }
                }
                Some(_) => {}
                None => anyhow::bail!("network stopped"),
            },
            _ = produce.tick(), if producer.is_some() && produce_until.is_none_or(|t| Instant::now() < t) => {
                let Some(k) = producer.as_ref() else { continue };
                let state = store.lock().tip().clone();
                let ts = now_ms().max(state.meta().timestamp_ms + state.params().max_block_interval_ms);
                let template = BlockTemplate { key: k, timestamp_ms: ts, kind: BlockKind::Heartbeat, body: BlockBody::default() };
                let (block, _, _) = build_block(&state, template)?;
                store.lock().import(&block)?;
                let compact = CompactBlock::of(&block);
                let _ = net.handle.publish(Topic::Blocks, GossipMessage::Block(Box::new(compact))).await;
            }
            _ = poll.tick() => {
                // Catch up from the peer with the most work (late joiners, missed announcements),
                // in the background.
                let (handle, sink2, in_flight2) = (net.handle.clone(), sink.clone(), in_flight.clone());
                let genesis = store.lock().genesis_hash();
                tokio::spawn(async move {
                    let peers = handle.peers().await.unwrap_or_default();
                    if let Some((peer, _)) = best_peer(&handle, &peers, genesis, Duration::from_secs(2)).await {
                        spawn_sync(&handle, peer, &sink2, &in_flight2);
                    }
                });
            }
        }
    }
    net.handle.shutdown().await;
    Ok(())
}
