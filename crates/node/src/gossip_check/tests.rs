use doin_consensus::testkit::TestNet;
use doin_primitives::{FIXED_ONE, Keypair, Metric, Signed, VoteBody};

use super::*;

fn topic() -> Topic {
    Topic::Optimae("quadratic".into())
}

/// 5 evaluators (0-4), 2 optimizers (5, 6), 3 unstaked accounts.
fn setup() -> (TestNet, GossipCheck) {
    let net = TestNet::new(10, 5, 2);
    let check = GossipCheck::new();
    check.set_state(net.state.clone());
    (net, check)
}

fn commit_msg(net: &TestNet, who: usize, n: i64) -> (poo::Commit, poo::Reveal) {
    net.commit_reveal(who, vec![n * FIXED_ONE / 100, 0, 0, 0], Metric(FIXED_ONE))
}

fn is_reject(r: Result<(), Refusal>) -> bool {
    matches!(r, Err(Refusal::Reject(_)))
}

fn is_ignore(r: Result<(), Refusal>) -> bool {
    matches!(r, Err(Refusal::Ignore(_)))
}

#[test]
fn commits_only_from_bonded_optimizers_of_the_domain_within_quota() {
    let (net, check) = setup();
    let send = |c: &poo::Commit| check.check(&topic(), &GossipMessage::Commit(Box::new(c.clone())));
    // An unstaked account, and an evaluator without the optimizer role.
    assert!(is_reject(send(&commit_msg(&net, 8, 1).0)));
    assert!(is_reject(send(&commit_msg(&net, 0, 2).0)));
    let (c, _) = commit_msg(&net, 5, 3);
    assert_eq!(send(&c), Ok(()));
    assert!(is_ignore(send(&c)), "a duplicate is not forwarded again");
    // A reference block not known here may still be on its way: admitted, its quorum
    // unknown until the block arrives (then only the domain's evaluators may vote).
    let (early, _) = net.commit_reveal_at(6, vec![7, 0, 0, 0], Metric(FIXED_ONE), Hash::of(b"not yet here"));
    assert_eq!(send(&early), Ok(()));
    // The quota: PER_ACCOUNT pending commits per optimizer, then refused (not evicting).
    for n in 1..PER_ACCOUNT as i64 {
        assert_eq!(send(&commit_msg(&net, 5, 100 + n).0), Ok(()), "commit {n}");
    }
    assert!(is_ignore(send(&commit_msg(&net, 5, 999).0)), "over quota: dropped, no penalty");
    assert_eq!(check.pending_by(&net.addr(5)), PER_ACCOUNT);
    assert_eq!(send(&commit_msg(&net, 6, 1).0), Ok(()), "another optimizer is not crowded out");
    // Settling one frees its slot; so does revealing one (revealed commits count only
    // against the larger PER_ACCOUNT_TOTAL).
    check.settle(&c.id());
    assert_eq!(send(&commit_msg(&net, 5, 999).0), Ok(()));
    assert_eq!(check.pending(), PER_ACCOUNT + 2);
    let (_, reveal) = commit_msg(&net, 5, 101);
    check.check(&topic(), &GossipMessage::Reveal(Box::new(reveal))).unwrap();
    assert_eq!(check.pending_by(&net.addr(5)), PER_ACCOUNT - 1);
    assert_eq!(send(&commit_msg(&net, 5, 1000).0), Ok(()));
}

#[test]
fn reveals_must_open_a_pending_commit_once() {
    let (net, check) = setup();
    let send = |m: GossipMessage| check.check(&topic(), &m);
    let (c, r) = commit_msg(&net, 5, 1);
    assert!(is_ignore(send(GossipMessage::Reveal(Box::new(r.clone())))), "commit not seen yet");
    let (_, throwaway) = commit_msg(&net, 8, 1);
    assert!(is_reject(send(GossipMessage::Reveal(Box::new(throwaway)))));
    send(GossipMessage::Commit(Box::new(c.clone()))).unwrap();
    let mut forged = r.body.clone();
    forged.salt = [9; 32];
    let forged = Signed::sign(forged, &net.keys[5]);
    assert!(is_reject(send(GossipMessage::Reveal(Box::new(forged)))));
    assert_eq!(send(GossipMessage::Reveal(Box::new(r.clone()))), Ok(()));
    let mut again = r.body.clone();
    again.experiment.round = 7;
    let again = Signed::sign(again, &net.keys[5]);
    assert!(is_ignore(send(GossipMessage::Reveal(Box::new(again)))), "one reveal per commit");
}

#[test]
fn votes_only_from_quorum_members_once_and_a_double_vote_becomes_evidence() {
    let (mut net, check) = setup();
    let (c, _) = commit_msg(&net, 5, 1);
    check.check(&Topic::Blocks, &GossipMessage::Commit(Box::new(c.clone()))).unwrap();
    // The quorum is drawn once the commit is sealed on chain.
    net.include(vec![c.clone()]).unwrap();
    check.set_state(net.state.clone());
    let send = |m: GossipMessage| check.check(&topic(), &m);
    let q = net.quorums(&c);
    let member = q.first[0];
    let outsider = (0..5).map(|i| net.addr(i)).find(|a| !q.first.contains(a)).unwrap();
    let vote = |who: &Address, round: u8, x: i64| {
        GossipMessage::Vote(Box::new(net.vote(who, c.id(), round, Metric(x))))
    };
    assert!(is_reject(send(vote(&outsider, 0, 1))), "not a member");
    assert!(is_reject(send(vote(&member, 2, 1))), "no round 2");
    assert_eq!(send(vote(&member, 0, 1)), Ok(()));
    assert!(is_ignore(send(vote(&member, 0, 1))));
    assert!(check.take_evidence().is_empty());
    assert!(is_ignore(send(vote(&member, 0, 2))), "a different second vote is not forwarded");
    let evidence = check.take_evidence();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].first.body.evaluator, member);
    // Evidence checks against state: slashable, so it is forwarded.
    assert_eq!(check.check(&Topic::Blocks, &GossipMessage::Evidence(Box::new(evidence[0].clone()))), Ok(()));
    // A throwaway key's vote on an unknown commit is penalized; a staked one's is not.
    let stranger = Keypair::from_seed([42; 32]);
    let body = VoteBody {
        commit: Hash::of(b"made up"),
        evaluator: stranger.address(),
        round: 0,
        measured: Metric(0),
        data_hash: Hash::ZERO,
        artifact_measured: None,
    };
    assert!(is_reject(send(GossipMessage::Vote(Box::new(Signed::sign(body, &stranger))))));
    let unknown = GossipMessage::Vote(Box::new(net.vote(&member, Hash::of(b"made up"), 0, Metric(0))));
    assert!(is_ignore(send(unknown)));
}

/// 10 000 signed bogus commits, reveals and votes from 1 000 throwaway keys: every one is
/// refused with a penalty, nothing is admitted, and an honest commit still gets in.
#[test]
fn a_flood_from_throwaway_keys_is_refused_and_evicts_nothing() {
    let (net, check) = setup();
    let (honest, _) = commit_msg(&net, 5, 1);
    check.check(&topic(), &GossipMessage::Commit(Box::new(honest.clone()))).unwrap();
    let tip = net.state.tip().hash;
    for i in 0..10_000u32 {
        let key = Keypair::from_seed(*Hash::of(&(i % 1000).to_le_bytes()).as_bytes());
        let commit = Signed::sign(
            poo::CommitBody {
                domain: doin_consensus::testkit::domain_id(),
                optimizer: key.address(),
                optimae_hash: Hash::of(&i.to_le_bytes()),
                claimed: Metric(-1),
                reference_block: tip,
            },
            &key,
        );
        let message = match i % 3 {
            0 => GossipMessage::Commit(Box::new(commit)),
            1 => GossipMessage::Reveal(Box::new(Signed::sign(
                poo::RevealBody {
                    commit: honest.id(),
                    optimizer: key.address(),
                    params: Default::default(),
                    salt: [0; 32],
                    artifact: None,
                    experiment: Default::default(),
                },
                &key,
            ))),
            _ => GossipMessage::Vote(Box::new(Signed::sign(
                VoteBody {
                    commit: honest.id(),
                    evaluator: key.address(),
                    round: 0,
                    measured: Metric(0),
                    data_hash: Hash::ZERO,
                    artifact_measured: None,
                },
                &key,
            ))),
        };
        assert!(is_reject(check.check(&topic(), &message)), "bogus message {i} admitted");
    }
    assert_eq!(check.refused().rejected, 10_000);
    assert_eq!(check.pending(), 1, "the honest commit is still pending, nothing else");
    let (_, reveal) = commit_msg(&net, 5, 1);
    assert_eq!(check.check(&topic(), &GossipMessage::Reveal(Box::new(reveal))), Ok(()));
}

/// Trial batches: only from an account with stake (or reputation) in the domain — a stranger's
/// are spam — and at most one per second of the sender's clock, never replayed.
#[test]
fn trial_batches_only_from_staked_accounts_and_not_too_often() {
    let (net, check) = setup();
    let batch = |who: usize, seq: u64| {
        let body = doin_primitives::TrialBatchBody {
            domain: doin_primitives::DomainId::new("quadratic").unwrap(),
            sender: net.addr(who),
            seq,
            trials: vec![doin_primitives::SharedTrial { x: vec![1, 2, 3, 4], loss: Metric(5), cost_ms: 1 }],
            pending: Vec::new(),
        };
        let key = net.key_of(&net.addr(who)).unwrap();
        GossipMessage::Trials(Box::new(Signed::sign(body, key)))
    };
    assert!(is_reject(check.check(&topic(), &batch(8, 1_000))), "an unstaked account's trials are spam");
    assert_eq!(check.check(&topic(), &batch(5, 10_000)), Ok(()));
    assert!(is_ignore(check.check(&topic(), &batch(5, 10_000))), "a replay");
    assert!(is_ignore(check.check(&topic(), &batch(5, 10_500))), "half a second later");
    assert_eq!(check.check(&topic(), &batch(5, 11_000)), Ok(()));
    assert_eq!(check.check(&topic(), &batch(0, 10_000)), Ok(()), "an evaluator's own clock");
}
