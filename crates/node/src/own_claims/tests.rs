use doin_consensus::testkit::{TestNet, domain_id};
use doin_optimize::domain::Measurement;
use doin_primitives::{BoundedVec, FIXED_ONE};

use super::*;

const CAP: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(60);

fn found(domain: &str, performance: f64, evaluations: u64) -> Found {
    Found {
        domain: domain.to_owned(),
        values: Vec::new(),
        measurement: Measurement { performance, metrics: Default::default() },
        evaluations,
        artifact: None,
    }
}

fn params(p: &[i64]) -> Option<poo::Params> {
    BoundedVec::try_from_vec(p.to_vec()).ok()
}

/// Judges `f` as optimizer 4 of `net` would, with `p` as its parameters.
fn judge(
    claims: &mut OwnClaims,
    net: &TestNet,
    f: Found,
    p: &[i64],
    held_since: Option<Instant>,
    standing: Standing,
    now: Instant,
) -> Decision {
    let salt = *Hash::of_encoded(&(p, f.evaluations)).as_bytes();
    let judge = Judge {
        state: &net.state,
        key: &net.keys[4],
        domain: &domain_id(),
        params: params(p),
        experiment: poo::ExperimentMeta::default(),
        salt,
        taken: &|_| false,
        standing: &move |_| standing,
        hold_cap: CAP,
    };
    claims.judge(f, held_since, judge, now)
}

/// A report is committed unless an accepted median already matches it (it would land late)
/// or another optimizer's better claim is in verification (held until that settles).
#[test]
fn a_claim_waits_only_behind_better_claims() {
    use doin_primitives::domain::Direction::{Maximize, Minimize};
    let m = |x: i64| Metric(x);
    assert_eq!(standing(Maximize, m(90), [], []), Standing::Clear);
    assert_eq!(standing(Maximize, m(90), [m(80)], [m(85), m(90)]), Standing::Clear);
    assert_eq!(standing(Maximize, m(90), [m(80)], [m(91)]), Standing::Behind);
    assert_eq!(standing(Maximize, m(90), [m(90)], [m(95)]), Standing::Beaten);
    assert_eq!(standing(Minimize, m(90), [], [m(91), m(95)]), Standing::Clear);
    assert_eq!(standing(Minimize, m(90), [m(95)], [m(89)]), Standing::Behind);
    assert_eq!(standing(Minimize, m(90), [m(89)], []), Standing::Beaten);
}

/// An improving report becomes a signed commit whose reveal opens it; the reveal is released
/// only once the commit is sealed on the chain, and the claim settles when told.
#[test]
fn a_commit_is_revealed_only_once_sealed() {
    let mut net = TestNet::new(8, 4, 3);
    let mut claims = OwnClaims::new(16);
    let now = Instant::now();
    let Decision::Committed { commit, claimed, dropped, .. } =
        judge(&mut claims, &net, found("quad", 2.0, 7), &[1, 2, 3, 4], None, Standing::Clear, now)
    else {
        panic!("an improvement on the baseline is committed")
    };
    assert!(dropped.is_empty());
    assert_eq!(claimed, Metric(2 * FIXED_ONE));
    assert_eq!(commit.body.optimizer, net.keys[4].address());
    assert_eq!(commit.body.reference_block, net.state.tip().hash);
    assert!(commit.verify(), "signed by the node's key");
    assert_eq!(claims.committed_at(&commit.id()), Some(now));
    assert!(claims.due_reveals(&net.state, now, DEADLINE).is_empty(), "not sealed: nothing revealed");
    net.include(vec![(*commit).clone()]).expect("the commit is included and sealed");
    let due = claims.due_reveals(&net.state, now, DEADLINE);
    assert_eq!(due.len(), 1);
    let reveal = &due[0];
    assert_eq!(reveal.body.commit, commit.id());
    assert_eq!(reveal.body.experiment.round, 7);
    assert_eq!(
        poo::optimae_hash(&reveal.body.params, &reveal.body.salt, &reveal.body.optimizer),
        commit.body.optimae_hash,
        "the reveal opens the commit"
    );
    assert!(claims.due_reveals(&net.state, now, DEADLINE).is_empty(), "revealed once");
    assert_eq!(claims.settled(&commit.id()).as_deref(), Some("quad"));
    assert_eq!(claims.settled(&commit.id()), None);
}

/// What cannot be a claim settles at once: no gain on the champion, parameters someone
/// revealed, parameters in a commit of ours, a report an accepted median beats.
#[test]
fn reports_that_cannot_win_are_settled_not_committed() {
    let net = TestNet::new(8, 4, 3);
    let mut claims = OwnClaims::new(16);
    let now = Instant::now();
    let baseline = net.state.domain(&domain_id()).map(|d| d.spec.baseline.to_f64()).expect("domain");
    assert!(matches!(
        judge(&mut claims, &net, found("quad", baseline + 1.0, 1), &[1, 2, 3, 4], None, Standing::Clear, now),
        Decision::Settled(_)
    ));
    let taken = Judge {
        state: &net.state,
        key: &net.keys[4],
        domain: &domain_id(),
        params: params(&[1, 2, 3, 4]),
        experiment: poo::ExperimentMeta::default(),
        salt: [1; 32],
        taken: &|h| *h == params_hash(&params(&[1, 2, 3, 4]).expect("params")),
        standing: &|_| Standing::Clear,
        hold_cap: CAP,
    };
    assert!(matches!(claims.judge(found("quad", 2.0, 2), None, taken, now), Decision::Settled(_)));
    assert!(matches!(
        judge(&mut claims, &net, found("quad", 2.0, 3), &[5, 6, 7, 8], None, Standing::Clear, now),
        Decision::Committed { .. }
    ));
    assert!(
        matches!(
            judge(&mut claims, &net, found("quad", 1.5, 4), &[5, 6, 7, 8], None, Standing::Clear, now),
            Decision::Settled(_)
        ),
        "the same parameters are never committed twice"
    );
    assert!(matches!(
        judge(&mut claims, &net, found("quad", 1.5, 5), &[9, 9, 9, 9], None, Standing::Beaten, now),
        Decision::Settled(_)
    ));
    assert_eq!(claims.pending().count(), 1);
}

/// Behind a better claim, a report is held — a newer one replaces it and keeps the older
/// "since" — and committed once held for the cap, even while the rival is still pending.
#[test]
fn a_report_behind_a_better_claim_is_held_up_to_the_cap() {
    let net = TestNet::new(8, 4, 3);
    let mut claims = OwnClaims::new(16);
    let t0 = Instant::now();
    let d = judge(&mut claims, &net, found("quad", 2.0, 1), &[1, 2, 3, 4], None, Standing::Behind, t0);
    assert!(matches!(d, Decision::Held { first: true, .. }), "{d:?}");
    let t1 = t0 + CAP / 2;
    let d = judge(&mut claims, &net, found("quad", 1.9, 2), &[1, 2, 3, 5], None, Standing::Behind, t1);
    assert!(matches!(d, Decision::Held { first: false, .. }), "replaces the held one, no new event: {d:?}");
    assert_eq!(claims.held(), 1);
    // Not released while the rival is pending and the cap has not passed.
    let t2 = t0 + CAP - Duration::from_millis(1);
    assert!(claims.release_held(|_, _, since| t2.saturating_duration_since(since) >= CAP).is_empty());
    let t3 = t0 + CAP;
    let released = claims.release_held(|_, _, since| t3.saturating_duration_since(since) >= CAP);
    assert_eq!(released.len(), 1);
    let (f, since) = released.into_iter().next().expect("one");
    assert_eq!((f.evaluations, since), (2, t0), "the newer report, held since the first");
    let d = judge(&mut claims, &net, f, &[1, 2, 3, 5], Some(since), Standing::Behind, t3);
    assert!(matches!(d, Decision::Committed { .. }), "held for the cap: committed: {d:?}");
    assert_eq!(claims.held(), 0);
}

/// Claims unsettled past the deadline settle, unsealed reveals are dropped with them, and a
/// full record settles every claim it drops.
#[test]
fn claims_expire_and_a_full_record_settles_what_it_drops() {
    let net = TestNet::new(8, 4, 3);
    let mut claims = OwnClaims::new(2);
    let t0 = Instant::now();
    for (i, domain) in ["a", "b"].into_iter().enumerate() {
        let p = [i as i64, 1, 2, 3];
        assert!(matches!(
            judge(&mut claims, &net, found(domain, 2.0, 1), &p, None, Standing::Clear, t0),
            Decision::Committed { .. }
        ));
    }
    let Decision::Committed { dropped, commit, .. } =
        judge(&mut claims, &net, found("c", 2.0, 1), &[9, 1, 2, 3], None, Standing::Clear, t0 + DEADLINE / 2)
    else {
        panic!("committed")
    };
    assert_eq!(dropped, vec!["a".to_owned(), "b".to_owned()]);
    assert!(claims.expire(t0 + DEADLINE, DEADLINE).is_empty(), "c is younger than the deadline");
    assert_eq!(claims.expire(t0 + DEADLINE + DEADLINE / 2, DEADLINE), vec![(commit.id(), "c".to_owned())]);
    assert_eq!(claims.pending().count(), 0);
    // Reveals never sealed go at the deadline too.
    assert!(claims.due_reveals(&net.state, t0 + 2 * DEADLINE, DEADLINE).is_empty());
    assert!(claims.reveals.is_empty());
}
