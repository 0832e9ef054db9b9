use doin_consensus::testkit::TestNet;
use doin_storage::{ChainStore, StoreOptions};

use super::*;

const JOB: &str = "digits";

fn jobs(dir: &Path) -> Jobs {
    let net = TestNet::new(4, 2, 2);
    let store = ChainStore::open(&dir.join("chain.redb"), &net.spec, StoreOptions::default()).unwrap();
    let config = FederatedJobConfig { job_id: JOB.into(), ..Default::default() };
    Jobs::new(&[config], SharedStore::new(store), Arc::new(EventBus::new()), dir, Arc::new(Artifacts::new()))
        .unwrap()
}

/// What `step` does when the chain names a supervisor's published standings.
fn want(jobs: &Jobs, hash: Hash) {
    lock(&jobs.jobs).get_mut(JOB).unwrap().standing_wanted = Some(hash);
}

fn err(r: Result<usize, String>) -> String {
    r.expect_err("refused")
}

#[test]
fn a_standby_restores_only_the_standings_the_chain_names_bounded_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = jobs(dir.path());
    let quarantined = doin_primitives::Address([7; 32]);
    // A hostile supervisor's file: a `recent` of a thousand rounds, and a reputation that is
    // not a number for a second contributor.
    let entries = json!([
        { "address": quarantined.to_string(), "reputation": 0.1, "until": 50, "quarantines": 1,
          "rounds": 3, "kept": 1, "strikes": 2, "last_quality_micro": -5,
          "recent": (0..1_000u64).rev().collect::<Vec<_>>() },
        { "address": doin_primitives::Address([8; 32]).to_string(), "reputation": "NaN", "until": 0,
          "quarantines": 0, "rounds": 1, "kept": 1, "strikes": 0, "last_quality_micro": 3, "recent": [4] },
    ]);
    let bytes = entries.to_string().into_bytes();
    let hash = Hash::of_artifact(&bytes);
    // Not named by the chain (or named and restored already): refused.
    assert!(err(jobs.install_standing(JOB, &hash, &bytes)).contains("no longer wanted"));
    want(&jobs, hash);
    assert!(err(jobs.install_standing("another", &hash, &bytes)).contains("no job"));
    let mut tampered = bytes.clone();
    tampered[bytes.len() / 2] ^= 1;
    assert!(err(jobs.install_standing(JOB, &hash, &tampered)).contains("hash to"));
    let huge = vec![b' '; MAX_STANDING_BYTES + 1];
    assert!(err(jobs.install_standing(JOB, &Hash::of_artifact(&huge), &huge)).contains("over"));
    let junk = b"[{\"address\": 1,".to_vec();
    want(&jobs, Hash::of_artifact(&junk));
    assert!(err(jobs.install_standing(JOB, &Hash::of_artifact(&junk), &junk)).contains("not JSON"));
    // Nothing refused touched the job.
    assert!(lock(&jobs.jobs)[JOB].job.saved().is_empty());

    want(&jobs, hash);
    // The entry whose reputation is not a number does not parse: one contributor restored.
    assert_eq!(jobs.install_standing(JOB, &hash, &bytes), Ok(1));
    let saved = lock(&jobs.jobs)[JOB].job.saved();
    assert_eq!(saved.len(), 1);
    let s = &saved[0];
    assert_eq!((s.address, s.until, s.quarantines, s.standing.strikes), (quarantined, 50, 1, 2));
    assert_eq!(s.standing.recent.iter().copied().collect::<Vec<_>>(), (990..1_000).collect::<Vec<_>>());
    // Restored once: a replay of the same artifact is no longer wanted.
    assert!(err(jobs.install_standing(JOB, &hash, &bytes)).contains("no longer wanted"));
    // What a restart reads back holds the quarantine.
    let file = std::fs::read_to_string(standing_path(&jobs.dir, JOB)).unwrap();
    let back = saved_from(&serde_json::from_str(&file).unwrap());
    assert_eq!(back, saved);
}

#[test]
fn a_jobs_inference_settings_have_their_effect() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new(4, 2, 2);
    let store = ChainStore::open(&dir.path().join("chain.redb"), &net.spec, StoreOptions::default()).unwrap();
    let configs = [
        FederatedJobConfig { job_id: "priced".into(), inference_price: 0.25, ..Default::default() },
        FederatedJobConfig { job_id: "unserved".into(), serve_inference: false, ..Default::default() },
        FederatedJobConfig { job_id: "free".into(), ..Default::default() },
    ];
    let jobs = Jobs::new(
        &configs,
        SharedStore::new(store),
        Arc::new(EventBus::new()),
        dir.path(),
        Arc::new(Artifacts::new()),
    )
    .unwrap();
    // The price, in base units, is what the serving path charges (402 below it).
    assert_eq!(
        jobs.prices(),
        vec![("free".to_owned(), Amount::ZERO), ("priced".to_owned(), Amount(250_000_000))]
    );
    assert_eq!(jobs.served("priced").map(|s| s.price), Some(Amount(250_000_000)));
    // Not served, but still runnable by a dispute quorum member re-executing a receipt.
    assert!(jobs.served("unserved").is_none());
    assert!(jobs.model_of("unserved").is_some());
    assert!(jobs.served("none").is_none() && jobs.model_of("none").is_none());
}
