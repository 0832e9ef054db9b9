//! Late joining refused by name: a node serving a real chain and its snapshot over loopback
//! libp2p (the node's own provider), and a joiner that trusts a checkpoint. Each lie or
//! mismatch — a trusted hash the peers' chain contradicts, a manifest naming a block its
//! headers do not link, a manifest of another genesis, a checkpoint too far from the snapshot,
//! no peer on the joiner's genesis — is refused with its reason and leaves no chain behind;
//! the honest case joins on the served state root.

use std::{path::Path, sync::Arc, time::Duration};

use doin_consensus::{GenesisSpec, testkit::TestNet};
use doin_net::{Multiaddr, Status, SyncProvider};
use doin_node::{
    artifacts::{Artifacts, Provider},
    join::{Join, MAX_SPAN, Trusted},
    snapshots::Snapshots,
    store::SharedStore,
};
use doin_primitives::{Amount, BlockBody, BlockHeader, Hash, Keypair, TxKind};
use doin_storage::{ChainStore, StoreOptions, snapshot::Manifest};

/// The node's provider, with the snapshot manifest it serves rewritten by `edit`.
struct Lying {
    inner: Provider,
    edit: fn(&mut Manifest),
}

impl SyncProvider for Lying {
    fn status(&self) -> Option<Status> {
        self.inner.status()
    }
    fn headers(&self, from: u64, count: u32) -> Vec<BlockHeader> {
        self.inner.headers(from, count)
    }
    fn bodies(&self, from: u64, count: u32) -> Vec<(Hash, BlockBody)> {
        self.inner.bodies(from, count)
    }
    fn snapshot_manifest(&self) -> Option<Vec<u8>> {
        let mut m: Manifest = serde_json::from_slice(&self.inner.snapshot_manifest()?).ok()?;
        (self.edit)(&mut m);
        serde_json::to_vec(&m).ok()
    }
    fn snapshot_chunk(&self, index: u32) -> Option<Vec<u8>> {
        self.inner.snapshot_chunk(index)
    }
}

/// A chain of 30 blocks with claims and finality votes (finalized at 18), its store and the
/// snapshot its node exports.
fn served_chain(dir: &Path) -> (TestNet, SharedStore, Arc<Snapshots>) {
    let mut chain = TestNet::new(10, 5, 2);
    let mut i = 0;
    while chain.blocks.len() < 30 {
        if i % 5 == 0 && chain.blocks.len() + 3 <= 30 {
            chain.improve(9, 5 + i % 2, 80.0 / (1.0 + i as f64)).unwrap();
        } else {
            let tx = chain.tx(7, TxKind::Transfer { to: chain.addr(8), amount: Amount(3) });
            chain.voting_heartbeat(vec![tx]).unwrap();
        }
        i += 1;
    }
    let mut store = ChainStore::open(&dir.join("chain.redb"), &chain.spec, StoreOptions::default()).unwrap();
    store.import_many(&chain.blocks, 8).unwrap();
    assert_eq!(store.finalized().height, 18);
    let store = SharedStore::new(store);
    let snapshots = Arc::new(Snapshots::new(dir, Some(10_000)));
    snapshots.export(&store).unwrap();
    (chain, store, snapshots)
}

/// Starts a node serving `provider` on loopback TCP: its address, and its handle (the node
/// stops when the last handle is dropped).
async fn serve(seed: u8, provider: Arc<dyn SyncProvider>) -> (Multiaddr, doin_net::NetworkHandle) {
    let config = doin_net::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        enable_mdns: false,
        ..doin_net::Config::default()
    };
    let mut server =
        doin_net::start(&Keypair::from_seed([seed; 32]), config, provider, Arc::new(doin_net::NoStateChecks))
            .await
            .unwrap();
    let addr = loop {
        if let Some(doin_net::NetworkEvent::Listening(a)) = server.events.recv().await {
            break a;
        }
    };
    let handle = server.handle.clone();
    let mut events = server.events;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (addr, handle)
}

/// Runs a join into `dir/name` against `server`, trusting `trusted`.
async fn join(
    dir: &Path,
    name: &str,
    spec: &GenesisSpec,
    server: &Multiaddr,
    trusted: Trusted,
    peer_wait: Duration,
) -> (Result<doin_node::join::Joined, String>, std::path::PathBuf) {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let store_path = data.join("chain.redb");
    let key = Keypair::from_seed([200; 32]);
    let result = Join {
        key: &key,
        host: "127.0.0.1",
        bootstrap: std::slice::from_ref(server),
        spec,
        trusted,
        data_dir: &data,
        store_path: &store_path,
        options: StoreOptions::default(),
        peer_wait,
    }
    .run();
    let result = tokio::time::timeout(Duration::from_secs(60), result)
        .await
        .unwrap_or_else(|_| panic!("join {name} did not end within 60 s"));
    (result, store_path)
}

/// Runs [`join`] and asserts it was refused naming `why`, with no chain written.
async fn refused(
    dir: &Path,
    name: &str,
    spec: &GenesisSpec,
    server: &Multiaddr,
    trusted: Trusted,
    peer_wait: Duration,
    why: &str,
) {
    let (r, path) = join(dir, name, spec, server, trusted, peer_wait).await;
    let e = r.map(|_| ()).unwrap_err();
    assert!(e.contains(why), "{e}");
    assert!(!path.exists(), "a refused join leaves no chain");
}

#[test]
fn a_join_refuses_each_lie_by_name_and_joins_the_honest_snapshot() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (chain, store, snapshots) = served_chain(dir.path());
    let spec = chain.spec.clone();
    let at = |h: u64| store.lock().canonical_hash(h).unwrap().unwrap();
    let provider = |edit: fn(&mut Manifest)| -> Arc<dyn SyncProvider> {
        Arc::new(Lying {
            inner: Provider {
                store: store.clone(),
                artifacts: Arc::new(Artifacts::new()),
                snapshots: snapshots.clone(),
            },
            edit,
        })
    };
    let wait = Duration::from_secs(10);
    runtime.block_on(async {
        let (honest, _h1) = serve(1, provider(|_| {})).await;

        // The peers' chain has another block at the trusted height.
        let wrong = Trusted { height: 10, hash: Hash([7; 32]) };
        refused(
            dir.path(),
            "a",
            &spec,
            &honest,
            wrong,
            wait,
            "the snapshot contradicts the trusted checkpoint",
        )
        .await;

        // A checkpoint further from the snapshot than a join checks.
        let far = Trusted { height: 18 + MAX_SPAN + 1, hash: Hash([7; 32]) };
        refused(dir.path(), "b", &spec, &honest, far, wait, &format!("at most {MAX_SPAN}")).await;

        // A manifest naming a block its headers do not link to the checkpoint.
        let (unlinked, _h2) = serve(2, provider(|m| m.block_hash = Hash([9; 32]))).await;
        let ten = Trusted { height: 10, hash: at(10) };
        let why = "not the block their headers link to the checkpoint";
        refused(dir.path(), "c", &spec, &unlinked, ten, wait, why).await;

        // A manifest of another genesis from a peer on ours.
        let (foreign, _h3) = serve(3, provider(|m| m.genesis = Hash([5; 32]))).await;
        refused(dir.path(), "d", &spec, &foreign, ten, wait, "the peers' snapshot is of another chain").await;

        // A joiner on another genesis finds no peer to fetch from.
        let mut other = spec.clone();
        other.chain_id += 1;
        let genesis = Trusted { height: 0, hash: Hash([1; 32]) };
        refused(dir.path(), "e", &other, &honest, genesis, Duration::from_secs(3), "no peer on this genesis")
            .await;

        // The honest snapshot, tied to a checkpoint below it and to one above it.
        for (name, h) in [("f", 10), ("g", 25)] {
            let (r, path) =
                join(dir.path(), name, &spec, &honest, Trusted { height: h, hash: at(h) }, wait).await;
            let joined = r.unwrap_or_else(|e| panic!("trusting height {h}: {e}"));
            assert_eq!(joined.import.height, 18);
            let imported = ChainStore::open(&path, &spec, StoreOptions::default()).unwrap();
            let snapshot_block = at(18);
            let header = store.lock().header(&snapshot_block).unwrap().unwrap();
            assert_eq!(imported.tip().root(), header.body.state_root, "trusting height {h}");
        }
    });
}
