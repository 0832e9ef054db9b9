//! `doin bench join`: a late joiner's whole path on loopback — a serving node's snapshot of a
//! large state (its finalized checkpoint, exported as a node exports it), served over libp2p by
//! the node's own provider, fetched, tied to the trusted checkpoint, verified and imported by
//! the node's join ([`doin_node::join`]).

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use doin_consensus::{Allocation, testkit::TestNet};
use doin_node::{
    artifacts::{Artifacts, Provider},
    join::{Join, Trusted},
    snapshots::Snapshots,
    store::SharedStore,
};
use doin_primitives::{Address, Amount, Hash, Keypair};
use doin_storage::{ChainStore, StoreOptions};

pub(super) fn join(accounts: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let work = tempfile::tempdir_in(dir)
        .with_context(|| format!("creating a work directory in {}", dir.display()))?;
    let mut spec = TestNet::new(4, 0, 0).spec;
    spec.allocations.extend((0..accounts).map(|i| Allocation {
        address: Address(*Hash::of(&(i as u64).to_le_bytes()).as_bytes()),
        balance: Amount(1 + i as u128),
    }));
    let serving = work.path().join("serving");
    std::fs::create_dir_all(&serving)?;
    let store = ChainStore::open(&serving.join("chain.redb"), &spec, StoreOptions::default())?;
    let (root, genesis) = (store.tip().root(), store.genesis_hash());
    let store = SharedStore::new(store);
    let snapshots = Arc::new(Snapshots::new(&serving, Some(10_000)));
    let started = Instant::now();
    let manifest = snapshots.export(&store).map_err(anyhow::Error::msg)?;
    let export_s = started.elapsed().as_secs_f64();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (joined, imported_root) = runtime.block_on(async {
        let provider = Provider { store: store.clone(), artifacts: Arc::new(Artifacts::new()), snapshots };
        let server_key = Keypair::from_seed([1; 32]);
        let config = doin_net::Config {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            enable_mdns: false,
            ..doin_net::Config::default()
        };
        let mut server =
            doin_net::start(&server_key, config, Arc::new(provider), Arc::new(doin_net::NoStateChecks))
                .await?;
        let addr = loop {
            match server.events.recv().await {
                Some(doin_net::NetworkEvent::Listening(a)) => break a,
                Some(_) => {}
                None => anyhow::bail!("the serving node stopped"),
            }
        };
        tokio::spawn(async move { while server.events.recv().await.is_some() {} });
        let joiner = work.path().join("joiner");
        std::fs::create_dir_all(&joiner)?;
        let store_path = joiner.join("chain.redb");
        let joined = Join {
            key: &Keypair::from_seed([2; 32]),
            host: "127.0.0.1",
            bootstrap: &[addr],
            spec: &spec,
            trusted: Trusted { height: 0, hash: genesis },
            data_dir: &joiner,
            store_path: &store_path,
            options: StoreOptions::default(),
            peer_wait: doin_node::join::PEER_WAIT,
        }
        .run()
        .await
        .map_err(anyhow::Error::msg)?;
        let imported = ChainStore::open(&store_path, &spec, StoreOptions::default())?;
        anyhow::Ok((joined, imported.tip().root()))
    })?;
    anyhow::ensure!(imported_root == root, "the joiner's state root differs from the server's");
    let line = serde_json::json!({
        "bench": "join",
        "accounts": accounts,
        "records": joined.import.records,
        "snapshot_mb": super::round3(manifest.chunks.iter().map(|c| c.bytes).sum::<u64>() as f64 / 1e6),
        "chunks": manifest.chunks.len(),
        "export_s": super::round3(export_s),
        "join_s": super::round3(joined.seconds),
        "fetch_mb": super::round3(joined.fetched.1 as f64 / 1e6),
        "import_s": super::round3(joined.import.seconds),
        "same_state_root": true,
    });
    println!("{line}");
    Ok(())
}
