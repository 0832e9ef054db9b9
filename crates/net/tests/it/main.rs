//! In-process network tests over libp2p's memory transport: gossip delivery and validation,
//! spam graylisting, header-first sync between two chain stores, request rate limits.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use doin_consensus::testkit::TestNet;
use doin_net::{
    Config, GossipMessage, Multiaddr, Network, NetworkEvent, NoChain, NoStateChecks, Status, SyncProvider,
    SyncRequest, SyncResponse, Topic, start,
    sync::{BlockSink, sync_from},
};
use doin_primitives::{Amount, Block, BlockBody, BlockHeader, Hash, Keypair, TxKind};
use doin_storage::{ChainStore, StoreOptions};
use tokio::time::timeout;

static PORT: AtomicU64 = AtomicU64::new(0);

fn memory_addr() -> Multiaddr {
    let base = (std::process::id() as u64) << 16;
    format!("/memory/{}", base + PORT.fetch_add(1, Ordering::Relaxed) + 1).parse().unwrap()
}

fn config(bootstrap: Vec<Multiaddr>) -> Config {
    Config {
        listen: vec![memory_addr()],
        bootstrap,
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(100),
        ..Config::default()
    }
}

async fn node(seed: u8, bootstrap: Vec<Multiaddr>, provider: Arc<dyn SyncProvider>) -> (Network, Multiaddr) {
    let cfg = config(bootstrap);
    let addr = cfg.listen[0].clone();
    let net = start(&Keypair::from_seed([seed; 32]), cfg, provider, Arc::new(NoStateChecks)).await.unwrap();
    (net, addr)
}

/// Publishes until some peer is subscribed (gossipsub refuses before), bounded.
async fn publish_when_ready(net: &Network, topic: Topic, bytes: Vec<u8>) -> Hash {
    for _ in 0..200 {
        if let Ok(id) = net.handle.publish_raw(topic.clone(), bytes.clone()).await {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no peer subscribed within 5 s");
}

/// Waits for the first gossip event matching `pred`, bounded.
async fn next_gossip(
    net: &mut Network,
    secs: u64,
    mut pred: impl FnMut(&NetworkEvent) -> bool,
) -> Option<NetworkEvent> {
    timeout(Duration::from_secs(secs), async {
        while let Some(ev) = net.events.recv().await {
            if pred(&ev) {
                return Some(ev);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

fn signed_tx(net: &TestNet, from: usize, amount: u128) -> GossipMessage {
    GossipMessage::Transaction(Box::new(
        net.tx(from, TxKind::Transfer { to: net.addr(0), amount: Amount(amount) }),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_crosses_a_relaying_node_after_validation() {
    let (a, a_addr) = node(1, vec![], Arc::new(NoChain)).await;
    let (b, b_addr) = node(2, vec![a_addr], Arc::new(NoChain)).await;
    let (mut c, _) = node(3, vec![b_addr], Arc::new(NoChain)).await;
    let chain = TestNet::new(3, 0, 0);
    let msg = signed_tx(&chain, 1, 5);
    // Wait for the topology: B must know both A and C as subscribers of the topic.
    let (a_id, c_id) = (a.handle.peer_id(), c.handle.peer_id());
    let mut ready = false;
    for _ in 0..500 {
        let peers = b.handle.topic_peers(Topic::Txs).await.unwrap();
        if peers.contains(&a_id) && peers.contains(&c_id) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "B did not see both subscriptions within 5 s");
    let id = publish_when_ready(&a, Topic::Txs, msg.encode()).await;
    let got = next_gossip(&mut c, 10, |e| matches!(e, NetworkEvent::Gossip { .. })).await;
    match got {
        Some(NetworkEvent::Gossip { topic, message, id: got_id, .. }) => {
            assert_eq!(topic, Topic::Txs);
            assert_eq!(message, msg);
            assert_eq!(got_id, id, "message ids are content hashes");
        }
        other => panic!("C did not receive A's transaction through B: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spammer_is_graylisted_within_ten_messages_and_honest_traffic_flows() {
    let (mut hub, hub_addr) = node(10, vec![], Arc::new(NoChain)).await;
    let (spammer, _) = node(11, vec![hub_addr.clone()], Arc::new(NoChain)).await;
    let (honest, _) = node(12, vec![hub_addr], Arc::new(NoChain)).await;
    let chain = TestNet::new(3, 0, 0);
    let spammer_id = spammer.handle.peer_id();
    // Invalid messages: garbage, and a transaction whose signature was broken.
    let mut forged = chain.tx(1, TxKind::Transfer { to: chain.addr(0), amount: Amount(1) });
    forged.body.nonce = 99;
    let mut sent = 0;
    let mut graylisted_after = None;
    for i in 0..10u8 {
        let bytes = if i % 2 == 0 {
            vec![0xff, i, 1, 2, 3]
        } else {
            GossipMessage::Transaction(Box::new(forged.clone())).encode()
        };
        let bytes = if i % 2 == 1 {
            let mut b = bytes;
            b.push(i);
            b
        } else {
            bytes
        };
        publish_when_ready(&spammer, Topic::Txs, bytes).await;
        sent += 1;
        let rejected = next_gossip(
            &mut hub,
            5,
            |e| matches!(e, NetworkEvent::Rejected { from, .. } if *from == spammer_id),
        )
        .await;
        assert!(rejected.is_some(), "message {i} was not rejected");
        let score = hub.handle.score(spammer_id).await.unwrap().unwrap_or(0.0);
        if score < -80.0 {
            graylisted_after = Some(sent);
            break;
        }
    }
    let n = graylisted_after.expect("spammer not graylisted within 10 messages");
    eprintln!("spammer graylisted after {n} invalid messages");
    assert!(n <= 10, "graylisted after {n}");
    // Honest traffic still arrives.
    let honest_msg = signed_tx(&chain, 2, 9);
    publish_when_ready(&honest, Topic::Txs, honest_msg.encode()).await;
    let got = next_gossip(&mut hub, 10, |e| matches!(e, NetworkEvent::Gossip { .. })).await;
    assert!(matches!(got, Some(NetworkEvent::Gossip { message, .. }) if message == honest_msg));
}

/// A chain store served to peers and filled by sync, optionally with a snapshot directory.
struct Store(Arc<Mutex<ChainStore>>, Option<std::path::PathBuf>);

fn chunk_list(manifest: &[u8]) -> Result<(u64, Vec<(String, Hash)>), String> {
    let m: doin_storage::snapshot::Manifest = serde_json::from_slice(manifest).map_err(|e| e.to_string())?;
    Ok((m.height, m.chunks.into_iter().map(|c| (c.file, c.hash)).collect()))
}

fn status_of(store: &ChainStore) -> Status {
    let tip = store.tip();
    Status {
        genesis: store.genesis_hash(),
        tip: tip.tip().hash,
        height: tip.height(),
        cumulative_work: tip.meta().cumulative_work,
        finalized: tip.meta().finalized.height,
        justified: tip.meta().justified.height,
    }
}

impl SyncProvider for Store {
    fn status(&self) -> Option<Status> {
        Some(status_of(&self.0.lock().unwrap()))
    }
    fn headers(&self, from: u64, count: u32) -> Vec<BlockHeader> {
        let s = self.0.lock().unwrap();
        (from..from + count as u64)
            .map_while(|h| s.canonical_hash(h).ok().flatten().and_then(|hash| s.header(&hash).ok().flatten()))
            .collect()
    }
    fn bodies(&self, from: u64, count: u32) -> Vec<(Hash, BlockBody)> {
        let s = self.0.lock().unwrap();
        (from..from + count as u64)
            .map_while(|h| s.canonical_hash(h).ok().flatten().and_then(|hash| s.block(&hash).ok().flatten()))
            .map(|b| (b.hash(), b.body))
            .collect()
    }
    fn snapshot_manifest(&self) -> Option<Vec<u8>> {
        std::fs::read(self.1.as_ref()?.join("manifest.json")).ok()
    }
    fn snapshot_chunk(&self, index: u32) -> Option<Vec<u8>> {
        let dir = self.1.as_ref()?;
        let (_, list) = chunk_list(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
        std::fs::read(dir.join(&list.get(index as usize)?.0)).ok()
    }
}

impl BlockSink for Store {
    fn status(&self) -> Status {
        status_of(&self.0.lock().unwrap())
    }
    fn hash_at(&self, height: u64) -> Option<Hash> {
        self.0.lock().unwrap().canonical_hash(height).ok().flatten()
    }
    fn import(&mut self, block: Block) -> Result<(), String> {
        self.0.lock().unwrap().import(&block).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// A chain of `n` blocks (every `every`-th step a claim: the blocks including and sealing its
/// commit, then its work block; transfers otherwise) stored at `path`.
fn stored_chain(n: usize, every: usize, path: &std::path::Path) -> (TestNet, ChainStore) {
    let mut chain = TestNet::new(10, 5, 2);
    let mut i = 0;
    while chain.blocks.len() < n {
        i += 1;
        let i = i - 1;
        if i % every == 0 && chain.blocks.len() + 3 <= n {
            chain.improve(9, 5 + i % 2, 80.0 / (1.0 + i as f64)).unwrap();
        } else {
            let tx = chain.tx(7, TxKind::Transfer { to: chain.addr(8), amount: Amount(3) });
            chain.voting_heartbeat(vec![tx]).unwrap();
        }
    }
    let mut store = ChainStore::open(path, &chain.spec, StoreOptions::default()).unwrap();
    store.import_many(&chain.blocks, 8).unwrap();
    (chain, store)
}

/// Waits (bounded) until `client` is connected to `server`.
async fn connected(client: &Network, server: &Network) {
    for _ in 0..300 {
        if client.handle.peers().await.unwrap().contains(&server.handle.peer_id()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no connection within 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_first_sync_brings_an_empty_node_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, full) = stored_chain(70, 7, &dir.path().join("a.redb"));
    let full = Arc::new(Mutex::new(full));
    let (server, server_addr) = node(20, vec![], Arc::new(Store(full.clone(), None))).await;
    let empty = ChainStore::open(&dir.path().join("b.redb"), &chain.spec, StoreOptions::default()).unwrap();
    let mut sink = Store(Arc::new(Mutex::new(empty)), None);
    let (client, _) = node(21, vec![server_addr], Arc::new(NoChain)).await;
    // Wait for the connection.
    connected(&client, &server).await;
    let report = sync_from(&client.handle, server.handle.peer_id(), &mut sink).await.unwrap();
    assert_eq!(report.imported, 70);
    assert_eq!(report.common, 0);
    let a = full.lock().unwrap().tip().root();
    let b = sink.0.lock().unwrap().tip().root();
    assert_eq!(a, b, "synced node has the same state root");
    // A second run finds nothing to do.
    assert_eq!(sync_from(&client.handle, server.handle.peer_id(), &mut sink).await.unwrap().imported, 0);
    // Requests are rate limited per peer.
    let mut limited = 0;
    for _ in 0..60 {
        if let SyncResponse::Error(e) =
            client.handle.request(server.handle.peer_id(), SyncRequest::Status).await.unwrap()
        {
            assert!(e.contains("rate limited"));
            limited += 1;
        }
    }
    assert!(limited > 0, "60 requests in a burst must hit the 20/s limit");
}

#[test]
fn mdns_stays_off_on_loopback_and_memory() {
    let mut cfg = Config { enable_mdns: true, ..Config::default() };
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap(), "/memory/5".parse().unwrap()];
    assert!(!cfg.mdns_allowed());
    cfg.listen.push("/ip4/0.0.0.0/tcp/0".parse().unwrap());
    assert!(!cfg.mdns_allowed(), "unspecified addresses are not a chosen interface");
    cfg.listen.push("/ip4/10.1.2.3/tcp/4000".parse().unwrap());
    assert!(cfg.mdns_allowed());
    cfg.enable_mdns = false;
    assert!(!cfg.mdns_allowed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossipsub_delivers_everything_with_far_fewer_transmissions_than_flooding() {
    let g = doin_net::bench::run_gossipsub(30, 10, 3).await.unwrap();
    let f = doin_net::bench::run_flooding(30, 10, 3).await.unwrap();
    assert_eq!(g.delivery_ratio, 1.0, "{g:?}");
    assert_eq!(f.delivery_ratio, 1.0, "{f:?}");
    assert!(
        g.transmissions_per_delivery < 0.6 * f.transmissions_per_delivery,
        "gossip {g:?} vs flooding {f:?}"
    );
}

#[test]
fn address_groups_bound_outbound_peers_per_network_but_not_loopback() {
    use doin_net::network::address_group;
    let g = |s: &str| address_group(&s.parse().unwrap());
    assert_eq!(g("/ip4/203.0.113.7/tcp/1"), g("/ip4/203.0.9.9/udp/2/quic-v1"));
    assert_ne!(g("/ip4/203.0.113.7/tcp/1"), g("/ip4/198.51.100.7/tcp/1"));
    assert_eq!(g("/ip4/127.0.0.1/tcp/1"), None);
    assert_eq!(g("/memory/7"), None);
    assert_eq!(g("/ip4/203.0.113.7/tcp/1/p2p-circuit"), None);
    assert!(g("/ip6/2001:db8::1/tcp/1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_restores_a_peers_snapshot_then_replays_recent_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (_, full) = stored_chain(30, 5, &dir.path().join("a.redb"));
    let checkpoint = full.finalized();
    assert_eq!(checkpoint.height, 18, "stakers vote each checkpoint in the block after it");
    let served = dir.path().join("served");
    full.export_snapshot(&served).unwrap();
    // Another peer of the same chain exported earlier (at its checkpoint of block 20's chain):
    // asked first, it still loses to the newer snapshot.
    let (_, older) = stored_chain(20, 5, &dir.path().join("old.redb"));
    assert_eq!(older.genesis_hash(), full.genesis_hash());
    assert!(older.finalized().height < checkpoint.height);
    let stale = dir.path().join("stale");
    older.export_snapshot(&stale).unwrap();
    let (old_server, old_addr) =
        node(32, vec![], Arc::new(Store(Arc::new(Mutex::new(older)), Some(stale)))).await;
    let full = Arc::new(Mutex::new(full));
    let (server, server_addr) = node(30, vec![], Arc::new(Store(full.clone(), Some(served.clone())))).await;
    let (client, _) = node(31, vec![server_addr, old_addr], Arc::new(NoChain)).await;
    connected(&client, &server).await;
    connected(&client, &old_server).await;
    let fetched = dir.path().join("fetched");
    let both = [old_server.handle.peer_id(), server.handle.peer_id()];
    let report = doin_net::sync::fetch_snapshot(&client.handle, &both, &fetched, chunk_list).await.unwrap();
    assert_eq!(report.fetched, report.chunks);
    assert!(report.bytes > 0);
    let got = chunk_list(&std::fs::read(fetched.join("manifest.json")).unwrap()).unwrap().0;
    assert_eq!(got, checkpoint.height, "the newest snapshot the peers serve");
    let peers = [server.handle.peer_id()];
    // Resumable: a second run finds every chunk present and verified.
    let again = doin_net::sync::fetch_snapshot(&client.handle, &peers, &fetched, chunk_list).await.unwrap();
    assert_eq!(again.fetched, 0);
    // Verify against the checkpoint we trust, restore, then replay the blocks after it.
    let (restored, _) = doin_storage::snapshot::import(
        &fetched,
        &dir.path().join("b.redb"),
        Some(checkpoint.hash),
        StoreOptions::default(),
    )
    .unwrap();
    assert_eq!(restored.tip().height(), checkpoint.height);
    let mut sink = Store(Arc::new(Mutex::new(restored)), None);
    let replay = sync_from(&client.handle, server.handle.peer_id(), &mut sink).await.unwrap();
    assert_eq!((replay.common, replay.imported), (18, 12));
    assert_eq!(sink.0.lock().unwrap().tip().root(), full.lock().unwrap().tip().root());
    // A peer serving a damaged chunk is caught before anything is written.
    let (_, m) = chunk_list(&std::fs::read(served.join("manifest.json")).unwrap()).unwrap();
    let mut bytes = std::fs::read(served.join(&m[0].0)).unwrap();
    bytes[10] ^= 1;
    std::fs::write(served.join(&m[0].0), bytes).unwrap();
    let err = doin_net::sync::fetch_snapshot(&client.handle, &peers, &dir.path().join("bad"), chunk_list)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match the manifest"), "{err}");
}

struct Holder(doin_net::artifact::Artifact);
impl SyncProvider for Holder {
    fn artifact_chunk(&self, hash: &Hash, chunk: u32) -> Option<(u32, Vec<u8>)> {
        (*hash == self.0.hash).then(|| self.0.serve(chunk)).flatten()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_found_through_provider_records_and_fetched_from_several_holders() {
    let bytes: Vec<u8> =
        (0..(3 * 1024 * 1024 + 12_345u32)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let artifact = doin_net::artifact::Artifact::new(&bytes);
    assert_eq!(artifact.chunks.len(), 4);
    // The content address the chain records (a federated model) is the artifact's.
    assert_eq!(artifact.hash, Hash::of_artifact(&bytes));
    assert_eq!(artifact.manifest, doin_net::artifact::Artifact::manifest_of(&bytes));
    let (a, a_addr) = node(40, vec![], Arc::new(Holder(artifact.clone()))).await;
    let (b, b_addr) = node(41, vec![a_addr.clone()], Arc::new(Holder(artifact.clone()))).await;
    let (c, _) = node(42, vec![a_addr, b_addr], Arc::new(NoChain)).await;
    for _ in 0..300 {
        if c.handle.peers().await.unwrap().len() >= 2 && a.handle.peers().await.unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.handle.provide(artifact.hash).await.unwrap();
    b.handle.provide(artifact.hash).await.unwrap();
    let mut providers = Vec::new();
    for _ in 0..50 {
        providers = c.handle.providers(artifact.hash).await.unwrap();
        if providers.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        providers.contains(&a.handle.peer_id()) && providers.contains(&b.handle.peer_id()),
        "{providers:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let got = doin_net::artifact::fetch(&c.handle, artifact.hash, dir.path(), &[]).await.unwrap();
    assert_eq!((got.chunks, got.fetched, got.providers), (4, 4, 2));
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    // Resumable: only the missing chunk is fetched again.
    std::fs::remove_file(dir.path().join(format!("{}.parts/000002", artifact.hash))).unwrap();
    let again = doin_net::artifact::fetch(&c.handle, artifact.hash, dir.path(), &[]).await.unwrap();
    assert_eq!(again.fetched, 1);
    assert_eq!(std::fs::read(&again.path).unwrap(), bytes);
    // An unknown artifact has no provider.
    let err = doin_net::artifact::fetch(&c.handle, Hash::of(b"nothing"), dir.path(), &[]).await.unwrap_err();
    assert!(err.to_string().contains("no provider"), "{err}");
    // A caller's bound (a node's 64 MiB model cap) refuses a larger artifact from its manifest,
    // before any chunk is fetched.
    let small = tempfile::tempdir().unwrap();
    let err = doin_net::artifact::fetch_bounded(&c.handle, artifact.hash, small.path(), &[], 1 << 20)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("over the limit of 1048576 bytes"), "{err}");
    assert!(
        std::fs::read_dir(small.path()).unwrap().flatten().all(|e| !e
            .file_name()
            .to_string_lossy()
            .ends_with(".parts")
            || std::fs::read_dir(e.path()).unwrap().next().is_none()),
        "no chunk was fetched"
    );
}

struct Blocks(Vec<Block>);
impl SyncProvider for Blocks {
    fn transactions(&self, ids: &[Hash]) -> Vec<doin_primitives::Transaction> {
        self.0
            .iter()
            .flat_map(|b| b.body.transactions.iter())
            .filter(|t| ids.contains(&t.id()))
            .cloned()
            .collect()
    }
    fn body(&self, hash: &Hash) -> Option<BlockBody> {
        self.0.iter().find(|b| b.hash() == *hash).map(|b| b.body.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_blocks_are_completed_from_the_mempool_fetching_only_what_is_missing() {
    let mut chain = TestNet::new(10, 5, 2);
    let txs: Vec<_> =
        (0..5).map(|i| chain.tx(i + 2, TxKind::Transfer { to: chain.addr(0), amount: Amount(1) })).collect();
    chain.heartbeat(txs.clone()).unwrap();
    chain.improve(9, 5, 50.0).unwrap();
    let (plain, with_cert) = (chain.blocks[0].clone(), chain.blocks[1].clone());
    let (a, a_addr) = node(50, vec![], Arc::new(Blocks(chain.blocks.clone()))).await;
    let (b, _) = node(51, vec![a_addr], Arc::new(NoChain)).await;
    connected(&b, &a).await;
    // B's mempool holds 3 of the 5 transactions.
    let mempool: std::collections::HashMap<Hash, _> = txs[..3].iter().map(|t| (t.id(), t.clone())).collect();
    let compact = doin_net::CompactBlock::of(&plain);
    let (block, fetched) = doin_net::sync::complete_block(&b.handle, a.handle.peer_id(), &compact, |id| {
        mempool.get(id).cloned()
    })
    .await
    .unwrap();
    assert_eq!(fetched, 2, "only the two missing transactions travel");
    assert_eq!(block, plain);
    // With everything in the mempool nothing is fetched.
    let all: std::collections::HashMap<Hash, _> = txs.iter().map(|t| (t.id(), t.clone())).collect();
    let (_, none) =
        doin_net::sync::complete_block(&b.handle, a.handle.peer_id(), &compact, |id| all.get(id).cloned())
            .await
            .unwrap();
    assert_eq!(none, 0);
    // A block with a certificate is fetched whole and checked against its header.
    let (block, _) = doin_net::sync::complete_block(
        &b.handle,
        a.handle.peer_id(),
        &doin_net::CompactBlock::of(&with_cert),
        |_| None,
    )
    .await
    .unwrap();
    assert_eq!(block, with_cert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_on_loopback_carries_requests_and_gossip() {
    let quic = |bootstrap: Vec<Multiaddr>| Config {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(100),
        ..Config::default()
    };
    let mut a =
        start(&Keypair::from_seed([60; 32]), quic(vec![]), Arc::new(NoChain), Arc::new(NoStateChecks))
            .await
            .unwrap();
    let addr = match next_gossip(&mut a, 10, |e| matches!(e, NetworkEvent::Listening(_))).await {
        Some(NetworkEvent::Listening(addr)) => addr,
        other => panic!("no QUIC listen address: {other:?}"),
    };
    assert!(addr.to_string().contains("/quic-v1"), "{addr}");
    let mut b =
        start(&Keypair::from_seed([61; 32]), quic(vec![addr]), Arc::new(NoChain), Arc::new(NoStateChecks))
            .await
            .unwrap();
    connected(&b, &a).await;
    // A request over QUIC: A has no chain and says so.
    let r = b.handle.request(a.handle.peer_id(), SyncRequest::Status).await.unwrap();
    assert!(matches!(r, SyncResponse::Error(ref e) if e == "no chain"), "{r:?}");
    // Gossip over QUIC.
    let chain = TestNet::new(3, 0, 0);
    let msg = signed_tx(&chain, 1, 11);
    publish_when_ready(&a, Topic::Txs, msg.encode()).await;
    let got = next_gossip(&mut b, 10, |e| matches!(e, NetworkEvent::Gossip { .. })).await;
    assert!(matches!(got, Some(NetworkEvent::Gossip { message, .. }) if message == msg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_one_peer_finds_the_others_through_it() {
    let (a, a_addr) = node(61, vec![], Arc::new(NoChain)).await;
    let (b, _) = node(62, vec![a_addr.clone()], Arc::new(NoChain)).await;
    connected(&b, &a).await;
    // C knows only A; kademlia's walk through A's routing table finds B.
    let (c, _) = node(63, vec![a_addr], Arc::new(NoChain)).await;
    let mut met = false;
    for _ in 0..200 {
        met = c.handle.peers().await.unwrap().contains(&b.handle.peer_id());
        if met {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(met, "C did not find B through A within 10 s");
    for n in [a, b, c] {
        n.handle.shutdown().await;
    }
}
