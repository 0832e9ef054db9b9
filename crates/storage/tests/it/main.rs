//! Chain store tests: import, lookups, reorgs, finality, snapshots, pruning, schema and damage.

use doin_consensus::testkit::TestNet;
use doin_primitives::Amount;
use doin_storage::{ChainStore, ImportError, Imported, StorageError, StoreOptions, snapshot};
use redb::ReadableTable;

fn archive() -> StoreOptions {
    StoreOptions { archive: true, ..StoreOptions::default() }
}

/// A chain of `n` heartbeat blocks with a transfer each.
fn heartbeats(net: &mut TestNet, n: usize) {
    for _ in 0..n {
        let tx = net.tx(1, doin_primitives::TxKind::Transfer { to: net.addr(2), amount: Amount(7) });
        net.voting_heartbeat(vec![tx]).unwrap();
    }
}

#[test]
fn imports_persist_and_reopen_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let mut net = TestNet::new(10, 5, 2);
    net.improve(9, 5, 50.0).unwrap();
    heartbeats(&mut net, 5);
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    assert_eq!(store.tip().root(), net.genesis.header.state_root);
    for (i, block) in net.blocks.iter().enumerate() {
        assert_eq!(store.import(block).unwrap(), Imported::Extended { height: i as u64 + 1 });
    }
    assert_eq!(store.import(&net.blocks[2]).unwrap(), Imported::Known);
    assert_eq!(store.tip().root(), net.state.root());
    // Lookups.
    let b3 = &net.blocks[3];
    assert_eq!(store.canonical_hash(4).unwrap(), Some(b3.hash()));
    assert_eq!(store.block(&b3.hash()).unwrap().as_ref(), Some(b3));
    let tx = &b3.body.transactions[0];
    assert_eq!(store.transaction_location(&tx.id()).unwrap(), Some((b3.hash(), 0)));
    // Blocks 1 and 2 include and seal the commit; block 3 carries its certificate.
    let cert = &net.blocks[2].body.certificates[0];
    assert_eq!(store.certificate_location(&cert.commit.id()).unwrap(), Some((net.blocks[2].hash(), 0)));
    let receipt = store.receipt(&net.blocks[2].hash()).unwrap().unwrap();
    assert_eq!(receipt.certificates.len(), 1);
    drop(store);
    let store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    assert_eq!(store.tip().root(), net.state.root());
    assert_eq!(store.tip().tip(), net.state.tip());
    // The reopened state validates the next block exactly like the in-memory one.
    let mut store = store;
    let before = net.blocks.len();
    net.improve(9, 6, 40.0).unwrap();
    for block in &net.blocks[before..] {
        store.import(block).unwrap();
    }
    assert_eq!(store.tip().root(), net.state.root());
}

#[test]
fn invalid_blocks_and_orphans_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = TestNet::new(6, 3, 1);
    heartbeats(&mut net, 2);
    let mut store = ChainStore::open(&dir.path().join("c.redb"), &net.spec, archive()).unwrap();
    let mut bad = net.blocks[0].clone();
    bad.header.body.state_root = doin_primitives::Hash::of(b"x");
    assert!(matches!(store.import(&bad), Err(ImportError::Invalid { height: 1, .. })));
    assert!(matches!(store.import(&net.blocks[1]), Err(ImportError::UnknownParent { .. })));
    assert_eq!(store.tip().height(), 0);
    assert!(store.header(&bad.hash()).unwrap().is_none());
}

#[test]
fn heavier_fork_reorgs_atomically_and_finality_is_never_reverted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut net = TestNet::new(10, 5, 2);
    // A transfer at height 1, then two claims included and sealed (heights 2-5) on the common
    // chain: the fork base is height 5.
    heartbeats(&mut net, 1);
    let c1 = net.improving_certificate(5, 50.0);
    let c2 = net.improving_certificate(6, 40.0);
    let fork_base = (net.state.clone(), net.blocks.clone(), net.now_ms);
    // Branch A: three heartbeats without finality votes (a justified checkpoint would outrank
    // any amount of work).
    for _ in 0..3 {
        let tx = net.tx(1, doin_primitives::TxKind::Transfer { to: net.addr(2), amount: Amount(7) });
        net.heartbeat(vec![tx]).unwrap();
    }
    let chain_a = net.blocks.clone();
    let state_a = net.state.clone();
    // Branch B from height 5: two work blocks outweigh three heartbeats.
    net.state = fork_base.0.clone();
    net.blocks = fork_base.1.clone();
    net.now_ms = fork_base.2 + 500;
    net.work_block(9, vec![c1]).unwrap();
    net.work_block(9, vec![c2]).unwrap();
    let chain_b = net.blocks[5..].to_vec();
    let state_b = net.state.clone();

    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for b in &chain_a {
        store.import(b).unwrap();
    }
    assert_eq!(store.tip().root(), state_a.root());
    assert_eq!(store.import(&chain_b[0]).unwrap(), Imported::Reorg { ancestor: 5, reverted: 3, applied: 1 });
    assert_eq!(store.import(&chain_b[1]).unwrap(), Imported::Extended { height: 7 });
    assert_eq!(store.tip().root(), state_b.root());
    assert_eq!(store.canonical_hash(6).unwrap(), Some(chain_b[0].hash()));
    assert_eq!(store.canonical_hash(8).unwrap(), None);
    // Transactions of the reverted blocks are no longer indexed; the ones below the fork are.
    assert_eq!(store.transaction_location(&chain_a[5].body.transactions[0].id()).unwrap(), None);
    assert!(store.transaction_location(&chain_a[0].body.transactions[0].id()).unwrap().is_some());
    drop(store);
    let store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    assert_eq!(store.tip().root(), state_b.root(), "the reorg is durable");
    drop(store);

    // Finality: grow B past 13 blocks with its stakers voting (6 justified at 8, 12 at 13,
    // finalizing 6), then offer a fork from height 5.
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    heartbeats(&mut net, 9);
    for b in &net.blocks[5..] {
        store.import(b).unwrap();
    }
    assert_eq!(store.finalized().height, 6);
    let tip_before = store.tip().root();
    let mut fork = TestNet::new(10, 5, 2);
    fork.state = fork_base.0;
    fork.now_ms = fork_base.2 + 333;
    for loss in [30.0, 20.0, 10.0] {
        fork.improve(9, 5, loss).unwrap();
    }
    let err = store.import(&fork.blocks[0]).unwrap_err();
    assert!(matches!(err, ImportError::BelowFinality { finalized: 6, .. }), "{err}");
    assert_eq!(store.tip().root(), tip_before);
}

#[test]
fn canonical_states_below_the_tip_are_rebuilt_from_undo_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = TestNet::new(10, 5, 2);
    for i in 0..5 {
        if i % 2 == 0 {
            net.improve(9, 5 + i % 2, 50.0 - i as f64).unwrap();
        } else {
            heartbeats(&mut net, 1);
        }
    }
    // The post-state root of every block, replayed from genesis.
    let (mut state, _) = net.spec.build().unwrap();
    let mut roots = vec![state.root()];
    for b in &net.blocks {
        state = doin_consensus::apply_block(&state, b).unwrap().0;
        roots.push(state.root());
    }
    let path = dir.path().join("c.redb");
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for b in &net.blocks {
        store.import(b).unwrap();
    }
    drop(store);
    // After a restart nothing is in memory: states come from undo records.
    let store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for (h, block) in net.blocks.iter().enumerate() {
        let s = store.state_for(&block.hash()).unwrap().unwrap();
        assert_eq!(s.root(), roots[h + 1], "height {}", h + 1);
    }
}

#[test]
fn snapshots_verify_chunks_and_root_and_restore_a_working_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = TestNet::new(10, 5, 2);
    net.improve(9, 5, 50.0).unwrap();
    heartbeats(&mut net, 17);
    let mut store = ChainStore::open(&dir.path().join("a.redb"), &net.spec, archive()).unwrap();
    store.import_many(&net.blocks, 4).unwrap();
    let checkpoint = store.finalized();
    assert_eq!(checkpoint.height, 12);
    let snap = dir.path().join("snap");
    let manifest = store.export_snapshot(&snap).unwrap();
    assert_eq!(manifest.block_hash, checkpoint.hash);
    let verified = snapshot::verify(&snap, Some(checkpoint.hash)).unwrap();
    assert_eq!(verified.state.root(), net.blocks[11].header.state_root);
    let err = snapshot::verify(&snap, Some(doin_primitives::Hash::of(b"other"))).unwrap_err();
    assert!(matches!(err, snapshot::SnapshotError::WrongBlock { .. }), "{err}");

    // Restore into a fresh store and continue from the checkpoint.
    let (mut restored, report) =
        snapshot::import(&snap, &dir.path().join("b.redb"), Some(checkpoint.hash), archive()).unwrap();
    assert_eq!(report.height, 12);
    assert_eq!(restored.tip().root(), net.blocks[11].header.state_root);
    for b in &net.blocks[12..] {
        restored.import(b).unwrap();
    }
    assert_eq!(restored.tip().root(), net.state.root());
    // Importing over an existing store is refused.
    assert!(snapshot::import(&snap, &dir.path().join("b.redb"), None, archive()).is_err());

    // A flipped byte in a chunk is caught by its hash.
    let chunk = snap.join(&manifest.chunks[0].file);
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&chunk, bytes).unwrap();
    let err = snapshot::verify(&snap, None).unwrap_err();
    assert!(matches!(err, snapshot::SnapshotError::ChunkHash { .. }), "{err}");
}

#[test]
fn non_archive_stores_prune_old_bodies_but_keep_headers_and_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = TestNet::new(6, 3, 0);
    heartbeats(&mut net, 30);
    let opts = StoreOptions { archive: false, keep_bodies: 4, max_states: 64 };
    let mut store = ChainStore::open(&dir.path().join("c.redb"), &net.spec, opts).unwrap();
    store.import_many(&net.blocks, 8).unwrap();
    // Stakers vote each checkpoint in the block after it: 30 justified 24, finalized 18.
    let finalized = store.finalized().height;
    assert_eq!(finalized, 18);
    // Bodies below finalized − keep_bodies are gone.
    let first = &net.blocks[0];
    assert!(store.block(&first.hash()).unwrap().is_none());
    assert!(store.header(&first.hash()).unwrap().is_some());
    assert!(store.receipt(&first.hash()).unwrap().is_some());
    let kept = &net.blocks[(finalized - 4) as usize - 1 + 1];
    assert!(store.block(&kept.hash()).unwrap().is_some());
    assert_eq!(store.body_count().unwrap(), 31 - (finalized - 4));
}

fn set_schema(path: &std::path::Path, version: u32) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
        meta.insert("schema_version", version.to_le_bytes().as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn schema_versions_chain_identity_and_damage_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new(4, 0, 0);
    let path = dir.path().join("c.redb");
    drop(ChainStore::open(&path, &net.spec, archive()).unwrap());

    let other = TestNet::new(5, 0, 0);
    let err = ChainStore::open(&path, &other.spec, archive()).unwrap_err();
    assert!(matches!(err, StorageError::WrongChain { .. }), "{err}");

    set_schema(&path, 99);
    let err = ChainStore::open(&path, &net.spec, archive()).unwrap_err().to_string();
    assert!(err.contains("newer doin"), "{err}");
    // Version 1 is the protocol before VRF headers and relative tolerances; 0 a pre-release.
    for old in [0, 1] {
        set_schema(&path, old);
        let err = ChainStore::open(&path, &net.spec, archive()).unwrap_err().to_string();
        assert!(err.contains("--reset-chain") && err.contains("snapshot import"), "{err}");
    }

    // A truncated (torn) file is reported, never half-read.
    let good = dir.path().join("good.redb");
    let mut net = TestNet::new(4, 0, 0);
    heartbeats(&mut net, 5);
    let mut store = ChainStore::open(&good, &net.spec, archive()).unwrap();
    store.import_many(&net.blocks, 1).unwrap();
    drop(store);
    let len = std::fs::metadata(&good).unwrap().len();
    for cut in [len / 2, len - 1, 600] {
        let torn = dir.path().join(format!("torn-{cut}.redb"));
        std::fs::copy(&good, &torn).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&torn).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let err = ChainStore::open(&torn, &net.spec, archive()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupted { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("--reset-chain"), "{err}");
    }
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    let err = ChainStore::open(&garbage, &net.spec, archive()).unwrap_err();
    assert!(matches!(err, StorageError::Corrupted { .. }), "{err}");
}

#[test]
fn a_damaged_state_record_is_caught_by_the_root_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut net = TestNet::new(4, 0, 0);
    heartbeats(&mut net, 3);
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    store.import_many(&net.blocks, 2).unwrap();
    // Values are provable at the tip and at recent canonical blocks.
    let key = doin_consensus::StateKey::Account(net.addr(2));
    let (value, proof) = store.prove(&net.blocks[1].hash(), &key).unwrap().unwrap();
    let root = net.blocks[1].header.state_root;
    assert!(doin_consensus::tree::verify_proof(&root, key.key_hash(), value.as_deref(), &proof));
    drop(store);
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut st = txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("state")).unwrap();
        let k = doin_primitives::encode(&key);
        let mut v = st.get(k.as_slice()).unwrap().unwrap().value().to_vec();
        v[0] ^= 1;
        st.insert(k.as_slice(), v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    drop(db);
    let err = ChainStore::open(&path, &net.spec, archive()).unwrap_err();
    assert!(matches!(err, StorageError::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains("differs from the expected"), "{err}");
}

/// A heavier branch (higher justified checkpoint) may carry an older finalized checkpoint in its
/// state than the branch it replaces — honest stakers who voted 12 → 18 on one branch vote
/// 12 → 24 on the other — and still hold the store's finalized block. The store's finalized
/// checkpoint must not move back with it: undo records below it are gone, so a fork below it
/// could never be applied (the churn soak found a node stuck on such a fork for good).
#[test]
fn a_reorg_onto_a_branch_that_finalized_less_keeps_the_finalized_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut net = TestNet::new(6, 3, 0);
    // Common chain to height 18: 6 and 12 justified, 6 finalized; checkpoint 18 not voted yet.
    heartbeats(&mut net, 17);
    net.heartbeat(vec![]).unwrap();
    assert_eq!((net.state.meta().justified.height, net.state.meta().finalized.height), (12, 6));
    let base = (net.state.clone(), net.blocks.clone(), net.now_ms);
    // Branch A: the votes for 18 are included: 18 justified, 12 finalized.
    heartbeats(&mut net, 3);
    assert_eq!((net.state.meta().justified.height, net.state.meta().finalized.height), (18, 12));
    let chain_a = net.blocks.clone();
    // Branch B from 18: no votes for 18; at 24 the stakers vote 12 → 24: 24 justified, 6
    // still finalized on this branch.
    net.state = base.0;
    net.blocks = base.1;
    net.now_ms = base.2 + 250;
    for _ in 0..6 {
        net.heartbeat(vec![]).unwrap();
    }
    heartbeats(&mut net, 2);
    assert_eq!((net.state.meta().justified.height, net.state.meta().finalized.height), (24, 6));
    let chain_b = net.blocks[18..].to_vec();

    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for b in &chain_a {
        store.import(b).unwrap();
    }
    assert_eq!(store.finalized().height, 12);
    for b in &chain_b {
        store.import(b).unwrap();
    }
    assert_eq!(store.tip().root(), net.state.root(), "the store moved to the heavier branch");
    assert_eq!(store.tip().meta().finalized.height, 6, "the branch's own state finalized only 6");
    assert_eq!(store.finalized().height, 12, "the store's finalized checkpoint did not move back");
    // The canonical states above it can still be rebuilt from undo records.
    assert!(store.state_for(&chain_a[12].hash()).unwrap().is_some());
    // A fork below 12 is refused as below finality, not taken for an unknown parent.
    let mut fork = TestNet::new(6, 3, 0);
    heartbeats(&mut fork, 9);
    fork.now_ms += 777;
    fork.heartbeat(vec![]).unwrap();
    let err = store.import(fork.blocks.last().unwrap()).unwrap_err();
    assert!(matches!(err, ImportError::BelowFinality { finalized: 12, .. }), "{err}");
    drop(store);
    let store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    assert_eq!(store.finalized().height, 12, "and it survives a restart");
}

/// A restart rebuilds the tip's state from records, and such a state does not know the changes
/// of the block that made it. Kept for a switch back, it was written as that block's changes
/// when a reorg returned to its branch: the block's deletions were lost, and the next restart
/// found the store corrupted (the churn soak did, with expired records). The block must be
/// applied again instead.
#[test]
fn a_reorg_back_onto_the_block_a_restart_loaded_writes_that_blocks_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut net = TestNet::new(6, 3, 0);
    heartbeats(&mut net, 14);
    // Plain heartbeats until one deletes a record (an expired finality record).
    let mut before = (net.state.clone(), net.blocks.clone(), net.now_ms);
    for _ in 0..60 {
        before = (net.state.clone(), net.blocks.clone(), net.now_ms);
        net.heartbeat(vec![]).unwrap();
        if net.state.last_changes().iter().any(|(_, v)| v.is_none()) {
            break;
        }
    }
    assert!(net.state.last_changes().iter().any(|(_, v)| v.is_none()), "no block deleted a record");
    // `blocks[i]` is the block at height i + 1: block n is A's last.
    let a = net.blocks.clone();
    let n = a.len();
    let at_a = (net.state.clone(), net.blocks.clone(), net.now_ms);
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for b in &a {
        store.import(b).unwrap();
    }
    drop(store);
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    assert!(!store.tip().has_block_diff(), "a loaded tip knows no block's changes");
    // Branch B from block n - 1, longer: the store leaves A's tip (the loaded state).
    let later = net.spec.params.max_block_interval_ms + 250;
    (net.state, net.blocks, net.now_ms) = (before.0, before.1, before.2 + later);
    net.heartbeat(vec![]).unwrap();
    net.heartbeat(vec![]).unwrap();
    assert_ne!(net.blocks[n - 1].hash(), a[n - 1].hash(), "B forks at n");
    for b in &net.blocks[n - 1..] {
        store.import(b).unwrap();
    }
    assert_eq!(store.tip().height() as usize, n + 1);
    // A grows longer again: the store returns to it, through block n.
    (net.state, net.blocks, net.now_ms) = at_a;
    for _ in 0..3 {
        net.heartbeat(vec![]).unwrap();
    }
    for b in &net.blocks[n..] {
        store.import(b).unwrap();
    }
    assert_eq!(store.tip().root(), net.state.root());
    drop(store);
    let store = ChainStore::open(&path, &net.spec, archive()).expect("the store reopens whole");
    assert_eq!(store.tip().root(), net.state.root());
}

/// After a restart a stored side branch has no post-state in memory; a block building on it
/// (the next block of a branch the node was syncing when it was killed) is applied on the
/// branch replayed from its fork point, not refused as an orphan forever.
#[test]
fn a_side_branch_stored_before_a_restart_can_still_be_extended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut net = TestNet::new(6, 3, 0);
    heartbeats(&mut net, 4);
    let fork = (net.state.clone(), net.blocks.clone(), net.now_ms);
    for _ in 0..3 {
        net.heartbeat(vec![]).unwrap();
    }
    let a = net.blocks.clone();
    let later = net.spec.params.max_block_interval_ms + 250;
    (net.state, net.blocks, net.now_ms) = (fork.0, fork.1, fork.2 + later);
    for _ in 0..4 {
        net.heartbeat(vec![]).unwrap();
    }
    let b = net.blocks.clone();
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for blk in &a {
        store.import(blk).unwrap();
    }
    // B's first blocks (heights 5 and 6) arrive: a shorter side branch, stored.
    for blk in &b[4..6] {
        let got = store.import(blk).unwrap();
        assert!(matches!(got, Imported::Side { .. }), "{got:?} at {}", blk.header.height);
    }
    drop(store);
    let mut store = ChainStore::open(&path, &net.spec, archive()).unwrap();
    for blk in &b[6..] {
        store.import(blk).expect("the side branch is replayed from its fork point");
    }
    assert_eq!(store.tip().root(), net.state.root(), "and it became canonical");
}

/// Diagnosis of a store whose tip state fails its root check (`DOIN_INSPECT_DB=path`): replays
/// the canonical chain from the genesis and prints the state records that differ.
#[test]
#[ignore = "a diagnosis tool: DOIN_INSPECT_DB=chain.redb"]
fn inspect_a_store() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let path = std::env::var_os("DOIN_INSPECT_DB").expect("set DOIN_INSPECT_DB to the chain.redb to inspect");
    let db = redb::Database::open(&path).unwrap();
    let read = db.begin_read().unwrap();
    let meta = read.open_table(TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
    let spec: doin_consensus::GenesisSpec =
        serde_json::from_slice(meta.get("genesis_spec").unwrap().unwrap().value()).unwrap();
    let tip = meta.get("tip").unwrap().unwrap().value().to_vec();
    let finalized = meta.get("finalized").unwrap().map(|v| v.value().to_vec());
    eprintln!("tip {} finalized {:?}", hex(&tip), finalized.as_deref().map(hex));
    let canonical = read.open_table(TableDefinition::<u64, &[u8]>::new("canonical")).unwrap();
    let headers = read.open_table(TableDefinition::<&[u8], &[u8]>::new("headers")).unwrap();
    let bodies = read.open_table(TableDefinition::<&[u8], &[u8]>::new("bodies")).unwrap();
    let undo = read.open_table(TableDefinition::<u64, &[u8]>::new("undo")).unwrap();
    let (mut state, _) = spec.build().unwrap();
    let mut changed_at: std::collections::BTreeMap<Vec<u8>, Vec<u64>> = Default::default();
    let top = canonical.last().unwrap().unwrap().0.value();
    eprintln!(
        "canonical rows up to {top}; undo rows {:?}",
        undo.iter().unwrap().map(|r| r.unwrap().0.value()).collect::<Vec<_>>()
    );
    for h in 1..=top {
        let hash = canonical.get(h).unwrap().unwrap().value().to_vec();
        let header: doin_primitives::BlockHeader =
            borsh::from_slice(headers.get(hash.as_slice()).unwrap().unwrap().value()).unwrap();
        let Some(body) = bodies.get(hash.as_slice()).unwrap() else {
            eprintln!("body {h} pruned; stop");
            return;
        };
        let body: doin_primitives::BlockBody = borsh::from_slice(body.value()).unwrap();
        let block = doin_primitives::Block { header, body };
        match doin_consensus::apply_block(&state, &block) {
            Ok((next, _)) => {
                for (k, _) in next.last_changes() {
                    changed_at.entry(doin_primitives::encode(k)).or_default().push(h);
                }
                state = next;
            }
            Err(e) => {
                eprintln!("block {h} does not apply on the replayed state: {e}");
                return;
            }
        }
        if hash == tip {
            eprintln!("the tip is canonical at {h}");
        }
    }
    let table = read.open_table(TableDefinition::<&[u8], &[u8]>::new("state")).unwrap();
    let mut stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    for r in table.iter().unwrap() {
        let (k, v) = r.unwrap();
        stored.insert(k.value().to_vec(), v.value().to_vec());
    }
    let mut replayed: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    for key in state.keys() {
        if let Some(v) = state.record(&key) {
            replayed.insert(doin_primitives::encode(&key), v);
        }
    }
    for (k, v) in &replayed {
        if stored.get(k) != Some(v) {
            let key: doin_consensus::StateKey = borsh::from_slice(k).unwrap();
            eprintln!(
                "differs: {key:?} (stored: {}) changed at {:?}",
                stored.contains_key(k),
                changed_at.get(k)
            );
        }
    }
    for k in stored.keys() {
        if !replayed.contains_key(k) {
            let key: doin_consensus::StateKey = borsh::from_slice(k).unwrap();
            eprintln!("stored only: {key:?} changed at {:?}", changed_at.get(k));
        }
    }
    eprintln!("replayed root {}", state.root());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
