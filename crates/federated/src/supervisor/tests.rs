use doin_primitives::{Keypair, Signed, UpdateBody, tx::string};

use super::*;
use crate::split;

fn spec() -> JobSpec {
    JobSpec {
        domain: string("fl_digits"),
        rule: Rule::DEFAULT,
        sizes: vec![64, 32, 10],
        min_updates: 4,
        max_updates: 16,
        max_samples: 10_000,
        deadline_k: 3.0,
        min_wait_ms: 100,
        max_wait_ms: 10_000,
        lr: 0.2,
        batch: 16,
        seed: 1,
    }
}

fn key(i: u8) -> Keypair {
    Keypair::from_seed([i + 1; 32])
}

/// `key`'s signed update of `delta` for `job`'s open round, and its bytes.
fn update_of(job: &Job, key: &Keypair, delta: &[f32], samples: u32) -> (SignedUpdate, Vec<u8>) {
    let bytes = to_bytes(delta);
    let (round, _, base) = job.model();
    let body = UpdateBody {
        domain: job.spec().domain.clone(),
        round,
        base,
        weights: Hash::of_artifact(&bytes),
        contributor: key.address(),
        samples,
        compute_ms: 50,
        bytes: bytes.len() as u64,
    };
    (Signed::sign(body, key), bytes)
}

fn train(job: &Job, data: &Tabular, rows: &[usize], seed: u64) -> Vec<f32> {
    let mlp = Mlp::new(&job.spec().sizes).unwrap();
    let (_, global, _) = job.model();
    let mut w = global.to_vec();
    mlp.sgd_epoch(&mut w, data, rows, 0.2, 16, &mut ChaCha8Rng::seed_from_u64(seed));
    w.iter().zip(global).map(|(a, b)| a - b).collect()
}

#[test]
fn every_bad_update_is_refused_by_name_and_nothing_is_kept() {
    let mut job = Job::new(spec(), 0, None, 0).unwrap();
    let n = job.model().1.len();
    let good = vec![0.01f32; n];
    // Each refusal from a fresh contributor (two strikes quarantine one, checked at the end).
    let mut fresh = 10u8;
    let mut next_key = || {
        fresh += 1;
        key(fresh)
    };
    let refuse = |job: &mut Job, u: (SignedUpdate, Vec<u8>), registered: bool, what: &str| {
        let err = job.submit(u.0, &u.1, registered, 10).unwrap_err();
        assert!(err.to_string().contains(what), "{err} lacks {what:?}");
        assert_eq!(job.admitted(), 0, "a refused update was kept");
    };
    // Unsigned (signed by another key than the contributor it names).
    let (mut u, b) = update_of(&job, &next_key(), &good, 10);
    u.body.contributor = key(2).address();
    refuse(&mut job, (u, b), true, "signature");
    // Another job, another round (an old one replayed), another base model.
    let k = next_key();
    let (u, b) = update_of(&job, &k, &good, 10);
    let mut other = u.body.clone();
    other.domain = string("other");
    refuse(&mut job, (Signed::sign(other, &k), b.clone()), true, "this job is");
    let k = next_key();
    let (u, b) = update_of(&job, &k, &good, 10);
    let mut old = u.body.clone();
    old.round = 7;
    refuse(&mut job, (Signed::sign(old, &k), b.clone()), true, "the open round is 0");
    let mut stale = update_of(&job, &next_key(), &good, 10);
    stale.0.body.base = Hash([3; 32]);
    let k = next_key();
    stale.0 = Signed::sign(UpdateBody { contributor: k.address(), ..stale.0.body }, &k);
    refuse(&mut job, stale, true, "trained from model");
    // Weights not the ones signed; bytes not as declared; wrong shape (oversized); NaN; no rows.
    let (u, mut b) = update_of(&job, &next_key(), &good, 10);
    b[0] ^= 1;
    refuse(&mut job, (u, b), true, "hash to");
    let (u, b) = update_of(&job, &next_key(), &good, 10);
    refuse(&mut job, (u, b[..b.len() - 4].to_vec()), true, "bytes arrived");
    let u = update_of(&job, &next_key(), &vec![0.0; n + 1], 10);
    refuse(&mut job, u, true, "weights, the model has");
    let mut nan = good.clone();
    nan[5] = f32::NAN;
    let u = update_of(&job, &next_key(), &nan, 10);
    refuse(&mut job, u, true, "weight 5 is not finite");
    let u = update_of(&job, &next_key(), &good, 0);
    refuse(&mut job, u, true, "0 training rows");
    // Not registered on chain.
    let u = update_of(&job, &next_key(), &good, 10);
    refuse(&mut job, u, false, "not registered");
    // A contributor: admitted once; its replay refused and scored down; a second malformed
    // update quarantines it, and then even a good one is refused.
    let k = key(3);
    let u = update_of(&job, &k, &good, 10);
    assert_eq!(job.submit(u.0.clone(), &u.1, true, 10), Ok(1));
    let err = job.submit(u.0, &u.1, true, 10).unwrap_err();
    assert!(err.to_string().contains("second update"), "{err}");
    let u = update_of(&job, &k, &nan, 10);
    assert!(job.submit(u.0, &u.1, true, 10).is_err());
    assert_eq!(job.quarantines(&k.address()), 1);
    assert_eq!(job.admitted(), 1);
    let u = update_of(&job, &key(3), &good, 10);
    let err = job.submit(u.0, &u.1, true, 10).unwrap_err();
    assert!(err.to_string().contains("quarantined until round"), "{err}");
    // A restarted supervisor restores what it saved: the quarantine holds.
    let mut restarted = Job::new(spec(), 0, None, 0).unwrap();
    restarted.restore(job.saved());
    assert_eq!(restarted.saved(), job.saved());
    let u = update_of(&restarted, &key(3), &good, 10);
    let err = restarted.submit(u.0, &u.1, true, 10).unwrap_err();
    assert!(err.to_string().contains("quarantined until round"), "{err}");
}

/// The digits with 360 test rows, the rest split over ten label-skewed contributors (and their
/// keys).
struct Digits {
    data: Tabular,
    test: Vec<usize>,
    train: Vec<usize>,
    parts: Vec<Vec<usize>>,
    keys: Vec<Keypair>,
}

fn digits() -> Digits {
    let data = doin_ml::data::digits().unwrap();
    let rows: Vec<usize> = (0..data.rows()).collect();
    let (test, train) = rows.split_at(360);
    let parts = split::dirichlet(train, &data.y, 10, 0.5, 10, 7);
    Digits { test: test.to_vec(), train: train.to_vec(), parts, keys: (0..10).map(key).collect(), data }
}

/// Ten contributors with label-skewed digits, two of them sending their update sign-flipped
/// × 5: the records put the attackers' contributions as dropped and non-positive, the honest
/// ones kept; the model improves; the attackers end quarantined; the chain's adoption opens the
/// next round, and a round the chain did not take leaves the model as it was.
#[test]
fn rounds_drop_sign_flippers_and_advance_only_when_recorded() {
    let Digits { data, test, train: train_rows, parts, keys } = digits();
    let (test, train_rows) = (&test[..], &train_rows[..]);
    let mut job = Job::new(spec(), 0, None, 0).unwrap();
    let mut now = 0;
    let mut first_accuracy = None;
    for iteration in 0..7u64 {
        let round = job.model().0;
        for (i, k) in keys.iter().enumerate() {
            let mut delta = train(&job, &data, &parts[i], iteration * 100 + i as u64);
            if i < 2 {
                delta.iter_mut().for_each(|v| *v *= -5.0);
            }
            let (u, b) = update_of(&job, k, &delta, parts[i].len() as u32);
            match job.submit(u, &b, true, now + 10 * i as u64) {
                Ok(_) => {}
                Err(Refusal::Quarantined(who, _)) => assert!(i < 2, "honest {who:?} quarantined"),
                Err(e) => panic!("contributor {i}: {e}"),
            }
        }
        now += 500;
        assert!(job.due(now), "round {round} with every update in is due");
        let closed = job.close(round, &data, train_rows, test, now).unwrap().clone();
        assert_eq!(closed.record.round, round);
        for c in closed.record.contributions.iter() {
            assert!(c.update.verify());
            let attacker = keys[..2].iter().any(|k| k.address() == c.update.contributor);
            if attacker {
                assert!(!c.kept && c.quality_micro <= 0, "round {round}: attacker kept {c:?}");
            } else {
                assert!(c.kept, "round {round}: honest dropped");
            }
            assert!(c.uptime_ppm > 0 && c.uptime_ppm <= 1_000_000);
        }
        // Submissions to a closed round wait for the next.
        let (u, b) = update_of(&job, &keys[5], &vec![0.0; job.model().1.len()], 5);
        assert!(matches!(job.submit(u, &b, true, now), Err(Refusal::Closed(_))));
        if iteration == 2 {
            // The chain did not take it: the round starts over from the same model.
            let before = job.model().2;
            job.reopen(now);
            assert_eq!((job.model().0, job.model().2), (round, before));
            let again = job.close(round, &data, train_rows, test, now);
            assert!(again.is_none(), "nothing admitted after reopening");
            continue;
        }
        assert!(
            matches!(job.recorded(round + 1, Hash([9; 32]), now), Err(h) if h == Hash([9; 32])),
            "another model"
        );
        let adopted = job.recorded(round + 1, closed.record.model, now).unwrap().unwrap();
        assert_eq!(adopted.record.model, job.model().2);
        first_accuracy.get_or_insert(adopted.accuracy);
    }
    let accuracy = job.accuracy().unwrap();
    assert!(accuracy > 0.8 && accuracy >= first_accuracy.unwrap(), "{accuracy}");
    assert!(keys[..2].iter().all(|k| job.quarantines(&k.address()) >= 1), "attackers not quarantined");
    assert!(
        keys[2..].iter().all(|k| job.quarantines(&k.address()) == 0),
        "an honest contributor quarantined"
    );
}

#[test]
fn the_deadline_adapts_to_past_arrivals() {
    let mut job = Job::new(spec(), 0, None, 1_000).unwrap();
    assert_eq!(job.deadline_ms(), 1_000 + 100, "no history: the shortest wait");
    let n = job.model().1.len();
    let data = doin_ml::data::digits().unwrap();
    let rows: Vec<usize> = (0..data.rows()).collect();
    for round in 0..3u64 {
        let opened = 1_000 + round * 10_000;
        for i in 0..4u8 {
            let (u, b) = update_of(&job, &key(i), &vec![0.001 * f32::from(i + 1); n], 10);
            job.submit(u, &b, true, opened + 200 * u64::from(i) + 100).unwrap();
        }
        assert!(!job.due(opened + 50), "k of n arrived but the deadline has not passed");
        let model = job.close(round, &data, &rows, &rows, opened + 2_000).unwrap().record.model;
        job.recorded(round + 1, model, opened + 10_000).unwrap();
    }
    // The 4th update came 700 ms after opening every round: median 700, MAD 0.
    assert_eq!(job.deadline_ms(), 31_000 + 700);
}

/// An auditor with the round's artifacts reproduces an honest supervisor's model bit for bit
/// and scores the sign-flippers negative and the honest contributors positive on rows of its
/// own seed; a record whose model, kept flags or say differ from the aggregate fails.
#[test]
fn an_auditor_reproduces_honest_rounds_and_catches_a_changed_record() {
    let Digits { data, test, train: train_rows, parts, keys } = digits();
    let (test, train_rows) = (&test[..], &train_rows[..]);
    let mut job = Job::new(spec(), 0, None, 0).unwrap();
    let mlp = Mlp::new(&job.spec().sizes).unwrap();
    let mut now = 0;
    for iteration in 0..3u64 {
        let (round, base, _) = job.model();
        let base = base.to_vec();
        let mut deltas = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let mut delta = train(&job, &data, &parts[i], iteration * 100 + i as u64);
            if i < 2 {
                delta.iter_mut().for_each(|v| *v *= -5.0);
            }
            let (u, b) = update_of(&job, k, &delta, parts[i].len() as u32);
            if job.submit(u, &b, true, now).is_ok() {
                deltas.insert(k.address(), delta);
            }
        }
        now += 500;
        let record = job.close(round, &data, train_rows, test, now).unwrap().record.clone();
        let updates: Vec<Vec<f32>> =
            record.contributions.iter().map(|c| deltas[&c.update.body.contributor].clone()).collect();
        let audit = |r: &FederatedRound| {
            crate::audit::audit(
                job.spec().rule,
                &mlp,
                10_000,
                &base,
                r,
                &updates,
                &data,
                train_rows,
                99 + iteration,
            )
        };
        let a = audit(&record);
        assert!(a.aggregate_ok, "round {round}: an honest aggregate did not reproduce");
        let honest: i64 = record
            .contributions
            .iter()
            .zip(&a.qualities)
            .filter(|(c, _)| keys[2..].iter().any(|k| k.address() == c.update.body.contributor))
            .map(|(_, q)| *q)
            .sum();
        assert!(honest > 0, "round {round}: honest contributions scored {honest} in all");
        for (c, q) in record.contributions.iter().zip(&a.qualities) {
            if keys[..2].iter().any(|k| k.address() == c.update.body.contributor) {
                assert!(*q < 0, "round {round}: a sign-flipper scored {q}");
            }
        }
        // A record that is not the aggregate of its updates.
        let mut other = record.clone();
        other.model = Hash([7; 32]);
        assert!(!audit(&other).aggregate_ok, "another model passed");
        let mut flags = record.contributions.clone().into_inner();
        flags[0].kept = !flags[0].kept;
        let mut other = record.clone();
        other.contributions = BoundedVec::try_from_vec(flags).unwrap();
        assert!(!audit(&other).aggregate_ok, "a changed kept flag passed");
        let mut says = record.contributions.clone().into_inner();
        let last = says.len() - 1;
        says[last].say_ppm /= 2;
        let mut other = record.clone();
        other.contributions = BoundedVec::try_from_vec(says).unwrap();
        assert!(!audit(&other).aggregate_ok, "a changed say passed");
        job.recorded(round + 1, record.model, now).unwrap();
    }
}
