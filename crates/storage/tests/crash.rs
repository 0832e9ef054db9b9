//! Crash safety: an importer child process is killed with SIGKILL at random moments (at least
//! 50 times); after each kill the store must open, its tip state must equal a fresh replay of
//! its stored canonical blocks, and every block the child reported as committed must be there.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use doin_consensus::{GenesisSpec, apply_block, testkit::TestNet};
use doin_primitives::{Amount, Block, Hash, TxKind, encode};
use doin_storage::{ChainStore, StoreOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CHILD: &str = "DOIN_CRASH_CHILD";
const KILLS: usize = 60;
const BLOCKS: usize = 480;

fn opts() -> StoreOptions {
    StoreOptions { archive: true, ..StoreOptions::default() }
}

fn chain() -> (GenesisSpec, Vec<Block>) {
    let mut net = TestNet::new(12, 5, 2);
    for i in 0..BLOCKS {
        if i % 10 == 3 {
            let loss = 90.0 / (1.0 + i as f64 / 10.0);
            net.improve(11, 5 + i % 2, loss).unwrap();
        } else {
            let txs = (7..10)
                .map(|s| {
                    net.tx(s, TxKind::Transfer { to: net.addr((s + i) % 12), amount: Amount(1 + i as u128) })
                })
                .collect();
            net.heartbeat(txs).unwrap();
        }
    }
    (net.spec, net.blocks)
}

/// The importer run by the child process (a no-op in a normal test run).
#[test]
fn crash_child_importer() {
    let Ok(dir) = std::env::var(CHILD) else { return };
    let dir = PathBuf::from(dir);
    let spec: GenesisSpec =
        serde_json::from_slice(&std::fs::read(dir.join("genesis.json")).unwrap()).unwrap();
    let blocks: Vec<Block> = borsh::from_slice(&std::fs::read(dir.join("blocks.bin")).unwrap()).unwrap();
    let seed: u64 = std::env::var("DOIN_CRASH_SEED").unwrap().parse().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut store = ChainStore::open(&dir.join("chain.redb"), &spec, opts()).unwrap();
    let mut out = std::io::stdout().lock();
    // A fresh line: libtest has printed "test crash_child_importer ... " without one.
    writeln!(out, "\nready {}", store.tip().height()).unwrap();
    out.flush().unwrap();
    let mut next = store.tip().height() as usize;
    while next < blocks.len() {
        let group = rng.random_range(1..=4usize).min(blocks.len() - next);
        let slice = &blocks[next..next + group];
        store.import_many(slice, group).unwrap();
        for b in slice {
            writeln!(out, "committed {} {}", b.header.height, b.hash()).unwrap();
        }
        out.flush().unwrap();
        next += group;
    }
    writeln!(out, "done").unwrap();
}

/// Opens the store and checks it against a fresh replay of its own canonical blocks.
fn check(dir: &Path, spec: &GenesisSpec, reported: &BTreeMap<u64, Hash>) -> u64 {
    let store =
        ChainStore::open(&dir.join("chain.redb"), spec, opts()).expect("the store opens after SIGKILL");
    let tip = store.tip().height();
    let (mut state, _) = spec.build().unwrap();
    for h in 1..=tip {
        let hash = store.canonical_hash(h).unwrap().expect("canonical block present");
        let block = store.block(&hash).unwrap().expect("canonical body present");
        state = apply_block(&state, &block).expect("stored blocks replay").0;
    }
    assert_eq!(store.tip().root(), state.root(), "tip state equals a fresh replay");
    for (h, hash) in reported {
        assert!(*h <= tip, "reported block {h} is above the tip {tip}");
        assert_eq!(store.canonical_hash(*h).unwrap(), Some(*hash), "reported block {h} present");
    }
    tip
}

#[test]
fn store_survives_sigkill_at_random_moments() {
    // On the build disk rather than a tmpfs /tmp, so commits really reach a disk.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (spec, blocks) = chain();
    std::fs::write(work.path().join("genesis.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    std::fs::write(work.path().join("blocks.bin"), encode(&blocks)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xd01e);
    let mut reported: BTreeMap<u64, Hash> = BTreeMap::new();
    let (mut kills, mut rounds, mut mid_import) = (0usize, 0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while kills < KILLS {
        assert!(Instant::now() < deadline, "crash test exceeded its time bound");
        let mut child = Command::new(&exe)
            .args(["crash_child_importer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, work.path())
            .env("DOIN_CRASH_SEED", rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = sync_channel::<String>(4096);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has opened the store, then let it import for a random while.
        // (libtest prints its own lines first.)
        while !rx.recv_timeout(Duration::from_secs(60)).expect("child ready").starts_with("ready") {}
        std::thread::sleep(Duration::from_millis(rng.random_range(1..80)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        reader.join().unwrap();
        let mut done = false;
        let before = reported.len();
        for line in rx.try_iter() {
            let mut parts = line.split_whitespace();
            match parts.next() {
                Some("committed") => {
                    let h: u64 = parts.next().unwrap().parse().unwrap();
                    let hash: Hash = parts.next().unwrap().parse().unwrap();
                    reported.insert(h, hash);
                }
                Some("done") => done = true,
                _ => {}
            }
        }
        if reported.len() > before && !done {
            mid_import += 1;
        }
        let tip = check(work.path(), &spec, &reported);
        if done || tip as usize == blocks.len() {
            // Start a new round from an empty store.
            std::fs::remove_file(work.path().join("chain.redb")).unwrap();
            reported.clear();
            rounds += 1;
        }
    }
    eprintln!("crash test: {kills} kills, {mid_import} during imports, {rounds} completed rounds");
    assert!(mid_import >= KILLS / 2, "most kills must land while blocks are being committed ({mid_import})");
}
