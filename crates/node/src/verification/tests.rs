use std::time::{Duration, Instant};

use doin_consensus::testkit::TestNet;
use doin_primitives::{Metric, Signed};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(8);

fn m(v: f64) -> Metric {
    Metric::from_f64(v).unwrap()
}

/// A test network with 7 staked evaluators and one optimizer (account 7); the domain is
/// minimized, with four parameters.
fn net() -> TestNet {
    TestNet::new(8, 7, 1)
}

/// The verification pipeline of account `i` of `net`.
fn at(net: &TestNet, i: usize) -> Verification {
    Verification::new(net.addr(i), TIMEOUT, 64)
}

/// A claim by the optimizer (account 7) with `params`, included and sealed on `net`'s chain.
fn sealed_claim(net: &mut TestNet, params: Vec<i64>, claimed: f64) -> (Commit, Reveal) {
    let (commit, reveal) = net.commit_reveal(7, params, m(claimed));
    net.include(vec![commit.clone()]).unwrap();
    (commit, reveal)
}

/// The first-round members of `commit` are asked to evaluate it, each once, on its seed
/// group's data; others are not; a reveal arriving before its sealing block waits for it.
#[test]
fn members_evaluate_a_sealed_reveal_once_and_others_do_not() {
    let mut net = net();
    let t0 = Instant::now();
    let (commit, reveal) = net.commit_reveal(7, vec![1, 2, 3, 4], m(1.0));
    let id = commit.id();
    // Not sealed yet: the reveal waits for its seal, once.
    let mut early = at(&net, 0);
    early.commit(commit.clone(), t0);
    assert_eq!(early.reveal(reveal.clone(), t0), RevealIn::Ready);
    assert_eq!(early.consider(&net.state, &id), Considered::AwaitingSeal { first: true });
    assert_eq!(early.consider(&net.state, &id), Considered::AwaitingSeal { first: false });
    net.include(vec![commit.clone()]).unwrap();
    assert_eq!(early.take_awaiting(), vec![id]);
    let q = net.quorums(&commit);
    for i in 0..7 {
        let mut v = at(&net, i);
        v.commit(commit.clone(), t0);
        v.reveal(reveal.clone(), t0);
        let member = q.first.contains(&net.addr(i));
        assert_eq!(v.consider(&net.state, &id), Considered::Checked { evaluate: member });
        let e = v.evaluation(&net.state, &id, 0);
        assert_eq!(e.is_some(), member, "account {i}");
        if let Some(e) = e {
            assert_eq!(e.params, reveal.body.params);
            assert_eq!(Some(e.seed), member_seed(&net.state, &commit, 0, &net.addr(i)));
            assert!(v.evaluation(&net.state, &id, 0).is_none(), "a second evaluation of one round");
            assert_eq!(v.evaluating().count(), 1);
        }
    }
}

/// A reveal that does not open its commit, a copy of parameters another commit revealed
/// first, and parameters out of the domain's bounds are never evaluated or certified.
#[test]
fn reveals_that_do_not_open_copy_or_leave_the_bounds_are_ignored() {
    let mut net = net();
    let t0 = Instant::now();
    let (commit, reveal) = sealed_claim(&mut net, vec![1, 2, 3, 4], 1.0);
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    // A reveal signed by the optimizer but with other parameters: its hash does not match.
    let mut forged = reveal.body.clone();
    forged.params = doin_primitives::BoundedVec::try_from_vec(vec![3, 4, 5, 6]).unwrap();
    v.reveal(Signed::sign(forged, &net.keys[7]), t0);
    assert_eq!(v.consider(&net.state, &commit.id()), Considered::Ignored(Ignored::NotOpening));
    let everyone = |_: &Hash| false;
    assert!(matches!(v.certify(&net.state, &commit.id(), t0, everyone), Verdict::Wait));

    // A copy: account 6 (an optimizer too, in this test's eyes) commits parameters [5, 6]
    // revealed first under the optimizer's commit.
    let mut net = TestNet::new(8, 6, 2);
    let (first, first_reveal) = sealed_claim(&mut net, vec![5, 6, 7, 8], 1.0);
    let (copy, copy_reveal) = net.commit_reveal(6, vec![5, 6, 7, 8], m(0.5));
    net.include(vec![copy.clone()]).unwrap();
    let mut v = Verification::new(net.addr(0), TIMEOUT, 64);
    v.commit(first.clone(), t0);
    v.commit(copy.clone(), t0);
    v.reveal(first_reveal, t0);
    v.reveal(copy_reveal, t0);
    assert_eq!(v.consider(&net.state, &copy.id()), Considered::Ignored(Ignored::Copy { first: first.id() }));
    assert!(matches!(v.certify(&net.state, &copy.id(), t0, everyone), Verdict::Wait));
    for i in 0..6 {
        let mut v2 = Verification::new(net.addr(i), TIMEOUT, 64);
        for (c, r) in [
            (&first, &v.intake().reveal_of(&first.id()).unwrap().0),
            (&copy, &v.intake().reveal_of(&copy.id()).unwrap().0),
        ] {
            v2.commit(c.clone(), t0);
            v2.reveal(r.clone(), t0);
        }
        assert!(v2.evaluation(&net.state, &copy.id(), 0).is_none(), "account {i} evaluates a copy");
        assert!(v2.evaluation(&net.state, &copy.id(), 1).is_none(), "account {i} evaluates a copy");
    }

    // Out of bounds: a parameter far outside the domain's range.
    let mut net = self::net();
    let (commit, reveal) = sealed_claim(&mut net, vec![i64::MAX / 2, 0, 0, 0], 1.0);
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    v.reveal(reveal, t0);
    assert!(matches!(v.consider(&net.state, &commit.id()), Considered::Ignored(Ignored::OutOfBounds(_))));
}

/// Every node certifies from the same votes: agreeing first-round votes certify with their
/// median and the outcome the consensus rules give; the certificate is one `apply_block`
/// accepts.
#[test]
fn agreeing_votes_certify_a_certificate_the_chain_accepts() {
    let mut net = net();
    let t0 = Instant::now();
    let (commit, reveal) = sealed_claim(&mut net, vec![1, 2, 3, 4], 1.0);
    let id = commit.id();
    let q = net.quorums(&commit);
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    v.reveal(reveal, t0);
    let none = |_: &Hash| false;
    for (n, a) in q.first.iter().enumerate() {
        assert!(matches!(v.certify(&net.state, &id, t0, none), Verdict::Wait), "{n} votes in");
        assert!(v.vote(net.vote(a, id, 0, m(1.0)), t0));
        assert!(!v.vote(net.vote(a, id, 0, m(1.0)), t0), "a member's second vote is not new");
    }
    let Verdict::Certified { cert, median } = v.certify(&net.state, &id, t0, none) else {
        panic!("every first-round vote agrees")
    };
    assert_eq!(median, m(1.0));
    assert_eq!(cert.outcome, doin_consensus::testkit::outcome_for(&net.state, &commit, &cert.votes));
    // Already handed to the producer: nothing more to do.
    assert!(matches!(v.certify(&net.state, &id, t0, |_| true), Verdict::Wait));
    net.work_block(0, vec![cert.clone()]).expect("the chain accepts the certificate the pipeline assembled");
    v.certified(id, &cert.reveal.body.params);
    assert!(v.intake().is_settled(&id));
    assert!(v.evaluating().next().is_none());
}

/// A member's measurement of a model the reveal does not attach is dropped (it would make the
/// certificate invalid); with a model attached, the figures travel into a certificate the chain
/// accepts, and the champion's model gets their median.
#[test]
fn model_figures_are_taken_only_for_reveals_that_attach_a_model() {
    let with_figure = |net: &TestNet, a: &doin_primitives::Address, id: Hash, figure: f64| {
        let body = doin_primitives::VoteBody {
            artifact_measured: Some(m(figure)),
            ..net.vote(a, id, 0, m(1.0)).body
        };
        Signed::sign(body, net.key_of(a).unwrap())
    };
    let t0 = Instant::now();
    let none = |_: &Hash| false;
    // No model: every vote carrying a figure is refused; plain votes certify.
    let mut net = net();
    let (commit, reveal) = sealed_claim(&mut net, vec![1, 2, 3, 4], 1.0);
    let (id, q) = (commit.id(), net.quorums(&commit));
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    assert!(!v.vote(with_figure(&net, &q.first[0], id, 0.9), t0), "a figure before the reveal");
    v.reveal(reveal, t0);
    for a in &q.first {
        assert!(!v.vote(with_figure(&net, a, id, 0.9), t0), "a figure for no model");
        assert!(v.vote(net.vote(a, id, 0, m(1.0)), t0));
    }
    let Verdict::Certified { cert, .. } = v.certify(&net.state, &id, t0, none) else {
        panic!("plain votes certify")
    };
    net.work_block(0, vec![cert]).expect("the chain accepts it");

    // A model attached: the figures are kept and the chain records their median.
    let mut net = self::net();
    let (commit, reveal) = net.commit_reveal(7, vec![1, 2, 3, 4], m(1.0));
    let model = Hash::of(b"model");
    let reveal =
        Signed::sign(doin_primitives::RevealBody { artifact: Some(model), ..reveal.body }, &net.keys[7]);
    net.include(vec![commit.clone()]).unwrap();
    let (id, q) = (commit.id(), net.quorums(&commit));
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    v.reveal(reveal, t0);
    for (n, a) in q.first.iter().enumerate() {
        assert!(v.vote(with_figure(&net, a, id, 0.9 + n as f64 / 100.0), t0));
    }
    let Verdict::Certified { cert, .. } = v.certify(&net.state, &id, t0, none) else {
        panic!("the votes agree")
    };
    net.work_block(0, vec![cert]).expect("the chain accepts it");
    let champion = net.state.domain(&doin_consensus::testkit::domain_id()).unwrap().champion.clone().unwrap();
    let mut figures: Vec<Metric> = (0..q.first.len()).map(|n| m(0.9 + n as f64 / 100.0)).collect();
    figures.sort();
    assert_eq!(champion.model_quality, Some(figures[(figures.len() - 1) / 2]));
    assert_eq!(champion.artifact, Some(model));
}

/// A disagreeing first round escalates once, and the escalation decides by its quorum
/// fraction; a first round missing a vote escalates only once the timeout has passed, and is
/// due for a look at that point.
#[test]
fn disagreement_and_silence_escalate_and_the_escalation_decides() {
    let mut net = net();
    let t0 = Instant::now();
    let (commit, reveal) = sealed_claim(&mut net, vec![1, 2, 3, 4], 1.0);
    let id = commit.id();
    let q = net.quorums(&commit);
    let none = |_: &Hash| false;
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    v.reveal(reveal.clone(), t0);
    for (n, a) in q.first.iter().enumerate() {
        v.vote(net.vote(a, id, 0, m(if n == 0 { 50.0 } else { 1.0 })), t0);
    }
    let Verdict::Escalated { why, voted, quorum, evaluate } = v.certify(&net.state, &id, t0, none) else {
        panic!("a disagreeing first round escalates")
    };
    assert_eq!((why, voted, quorum), (Why::Disagreeing, q.first.len(), q.first.len()));
    assert_eq!(evaluate, q.escalation.contains(&net.addr(0)));
    assert!(v.escalated(&id));
    assert!(matches!(v.certify(&net.state, &id, t0, none), Verdict::Wait));
    for a in &q.escalation {
        v.vote(net.vote(a, id, 1, m(1.0)), t0);
    }
    let Verdict::Certified { cert, median } = v.certify(&net.state, &id, t0, none) else {
        panic!("the escalation agrees")
    };
    assert_eq!(median, m(1.0));
    assert!(!cert.escalation.is_empty());
    net.work_block(0, vec![cert]).expect("the chain accepts the escalated certificate");

    // Silence: one first-round vote missing.
    let (commit, reveal) = sealed_claim(&mut net, vec![3, 4, 5, 6], 1.0);
    let id = commit.id();
    let q = net.quorums(&commit);
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    v.reveal(reveal, t0);
    for a in q.first.iter().skip(1) {
        v.vote(net.vote(a, id, 0, m(1.0)), t0);
    }
    assert!(matches!(v.certify(&net.state, &id, t0, none), Verdict::Wait));
    assert!(v.due(&net.state, false, t0, none, std::iter::empty()).is_empty(), "not timed out yet");
    let late = t0 + TIMEOUT;
    assert_eq!(v.due(&net.state, false, late, none, std::iter::empty()), vec![id]);
    assert!(matches!(v.certify(&net.state, &id, late, none), Verdict::Escalated { why: Why::TimedOut, .. }));
    assert_eq!(v.due(&net.state, true, late, none, std::iter::empty()), Vec::<Hash>::new());
    assert_eq!(v.due(&net.state, false, late, none, std::iter::once(id)), vec![id], "own escalated claims");
}

/// Trusted domains certify the claim as its figure without a quorum.
#[test]
fn a_trusted_domain_certifies_the_claim_itself() {
    let mut spec = doin_primitives::DomainSpec::example("trusted", 4);
    spec.evaluation.data = doin_primitives::domain::DataSource::Trusted;
    let params = TestNet::new(1, 0, 0).spec.params;
    let mut net = TestNet::with_domain(8, 7, 1, params, spec);
    assert!(net.state.domain(&doin_consensus::testkit::domain_id()).is_some_and(|d| d.spec.trusted()));
    let t0 = Instant::now();
    let (commit, reveal) = sealed_claim(&mut net, vec![1, 2, 3, 4], 1.0);
    let mut v = at(&net, 0);
    v.commit(commit.clone(), t0);
    v.reveal(reveal, t0);
    assert_eq!(v.consider(&net.state, &commit.id()), Considered::Checked { evaluate: false });
    assert!(v.evaluation(&net.state, &commit.id(), 0).is_none(), "no one evaluates a trusted claim");
    let Verdict::Trusted { cert } = v.certify(&net.state, &commit.id(), t0, |_| false) else {
        panic!("a trusted claim is certified at once")
    };
    assert_eq!((cert.outcome, cert.votes.len()), (Outcome::Accept, 0));
    // A trusted certificate earns no work: it rides a heartbeat.
    let body = doin_primitives::BlockBody {
        certificates: doin_primitives::BoundedVec::try_from_vec(vec![cert]).unwrap(),
        ..Default::default()
    };
    net.heartbeat_with(body).expect("the chain accepts a trusted certificate");
    assert_eq!(net.blocks.last().map(|b| b.body.certificates.len()), Some(1));
}

/// Votes for more commits than the limit are dropped (a stranger cannot grow the tallies).
#[test]
fn tallies_are_bounded() {
    let net = net();
    let t0 = Instant::now();
    let mut v = Verification::new(net.addr(0), TIMEOUT, 4);
    for i in 0..10u8 {
        let new = v.vote(net.vote(&net.addr(1), Hash::of(&[i]), 0, m(1.0)), t0);
        assert_eq!(new, i < 4, "vote {i}");
    }
}
