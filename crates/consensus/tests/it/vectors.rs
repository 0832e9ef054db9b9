//! Consensus test vectors: files of (genesis, blocks, expected post-state root or error) under
//! `testing/vectors/`, and their runner. The files pin the protocol: any change to a rule that
//! alters a root or an outcome fails here until the vectors are regenerated on purpose with
//! `DOIN_WRITE_VECTORS=1 cargo test -p doin-consensus --test it vectors`.

use std::path::PathBuf;

use doin_consensus::{
    GenesisSpec, apply_block,
    testkit::{self, TestNet},
};
use doin_primitives::{
    Amount, Block, BlockBody, BoundedVec, DoubleVoteEvidence, FIXED_ONE, Metric, Signed, TxKind, VoteBody,
    encode,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Vector {
    name: String,
    description: String,
    genesis: GenesisSpec,
    /// Hex of each block's canonical encoding, applied in order.
    blocks: Vec<String>,
    /// `state_root` after the last block, when all apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state_root: Option<String>,
    /// Otherwise: the last block fails with an error containing this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// This package's directory: cargo's runtime `CARGO_MANIFEST_DIR` first (a test binary built in
/// another checkout of a shared target directory embeds that checkout's path), the build-time
/// one otherwise.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn dir() -> PathBuf {
    manifest_dir().join("../../testing/vectors")
}

fn m(x: f64) -> Metric {
    Metric((x * FIXED_ONE as f64) as i64)
}

fn valid(name: &str, description: &str, net: &TestNet) -> Vector {
    Vector {
        name: name.into(),
        description: description.into(),
        genesis: net.spec.clone(),
        blocks: net.blocks.iter().map(|b| hex::encode(encode(b))).collect(),
        state_root: Some(net.state.root().to_string()),
        error: None,
    }
}

fn invalid(name: &str, description: &str, net: &TestNet, bad: Block, error: &str) -> Vector {
    let mut blocks: Vec<String> = net.blocks.iter().map(|b| hex::encode(encode(b))).collect();
    blocks.push(hex::encode(encode(&bad)));
    Vector {
        name: name.into(),
        description: description.into(),
        genesis: net.spec.clone(),
        blocks,
        state_root: None,
        error: Some(error.into()),
    }
}

/// Edits the votes of the block's first certificate.
fn edit_votes(body: &mut BlockBody, edit: impl FnOnce(&mut Vec<doin_primitives::Vote>)) {
    let mut c = body.certificates[0].clone();
    let mut votes = c.votes.clone().into_inner();
    edit(&mut votes);
    c.votes = BoundedVec::try_from_vec(votes).unwrap();
    body.certificates = BoundedVec::try_from_vec(vec![c]).unwrap();
}

/// A valid work block with `cert`, then a copy with `edit` applied to its body, re-sealed.
fn tamper(net: &mut TestNet, cert: doin_primitives::Certificate, edit: impl FnOnce(&mut BlockBody)) -> Block {
    let snapshot = net.state.clone();
    net.work_block(9, vec![cert]).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let mut body = good.body.clone();
    edit(&mut body);
    testkit::reseal(&good, body, &net.keys[9], |_| {})
}

/// The seal-leader block that would include a valid commit next, re-sealed around `commits`
/// without validation.
fn forced_seal(net: &mut TestNet, commits: Vec<doin_primitives::Commit>) -> Block {
    let (valid, _) = net.commit_reveal(5, vec![7 * FIXED_ONE, 0, 0, 0], m(45.0));
    let snapshot = net.state.clone();
    net.seal_block(BlockBody {
        commits: BoundedVec::try_from_vec(vec![valid]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let leader = net.key_of(&good.header.generator).unwrap().clone();
    let body = BlockBody { commits: BoundedVec::try_from_vec(commits).unwrap(), ..Default::default() };
    testkit::reseal(&good, body, &leader, |_| {})
}

/// The heartbeat the slot leader would produce next, re-sealed around `txs` without validation.
fn forced_heartbeat(net: &mut TestNet, txs: Vec<doin_primitives::Transaction>) -> Block {
    let snapshot = net.state.clone();
    net.heartbeat(vec![]).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let leader = net.key_of(&good.header.generator).unwrap().clone();
    let body = BlockBody { transactions: BoundedVec::try_from_vec(txs).unwrap(), ..Default::default() };
    testkit::reseal(&good, body, &leader, |_| {})
}

fn generate() -> Vec<Vector> {
    let mut out = Vec::new();

    let mut net = TestNet::new(10, 5, 2);
    for n in 0..3 {
        let txs = (0..4).map(|i| net.transfer(i, net.addr(9), Amount::doin(1 + i as u64), n)).collect();
        net.heartbeat(txs).unwrap();
    }
    out.push(valid("transfers", "three heartbeat blocks of signed transfers", &net));

    let mut net = TestNet::new(10, 5, 2);
    net.improve(9, 5, 50.0).unwrap();
    net.improve(9, 6, 40.0).unwrap();
    let reject = net.certificate(5, vec![3 * FIXED_ONE, 0, 0, 0], m(1.0), |_| m(60.0));
    {
        let c = net.improving_certificate(6, 30.0);
        net.work_block(9, vec![reject, c])
    }
    .unwrap();
    out.push(valid(
        "poo-accept-reject",
        "two accepted improvements, then an inflated claim rejected beside an improvement",
        &net,
    ));

    let mut net = TestNet::new(10, 5, 2);
    let key = net.keys[1].clone();
    let vote = |x| {
        Signed::sign(
            VoteBody {
                commit: doin_primitives::Hash::of(b"c"),
                evaluator: key.address(),
                round: 0,
                measured: m(x),
                data_hash: doin_primitives::Hash::ZERO,
                artifact_measured: None,
            },
            &key,
        )
    };
    let ev = DoubleVoteEvidence { first: vote(1.0), second: vote(2.0) };
    net.heartbeat_with(BlockBody {
        evidence: BoundedVec::try_from_vec(vec![ev]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    out.push(valid(
        "double-vote-slash",
        "an evaluator's two different votes for one commit slash 10 % of its stake",
        &net,
    ));

    let mut net = TestNet::new(10, 5, 2);
    let cert = net.improving_certificate(5, 50.0);
    let bad = tamper(&mut net, cert, |b| edit_votes(b, |votes| votes[0].body.measured = m(10.0)));
    out.push(invalid(
        "forged-vote",
        "a vote's measurement altered after signing",
        &net,
        bad,
        "invalid signature on certificate 0 vote 0",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let cert = net.improving_certificate(5, 50.0);
    let members: Vec<_> = cert.votes.iter().map(|v| v.evaluator).collect();
    let outsider = (0..5).map(|i| net.addr(i)).find(|a| !members.contains(a)).unwrap();
    let stranger_vote = net.vote(&outsider, cert.commit.id(), 0, m(50.0));
    let bad = tamper(&mut net, cert, |b| edit_votes(b, |votes| votes[0] = stranger_vote));
    out.push(invalid(
        "non-member-vote",
        "a vote from a staked evaluator outside the drawn quorum",
        &net,
        bad,
        "not a member of the quorum",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let cert = net.improving_certificate(5, 50.0);
    let bad = tamper(&mut net, cert, |b| {
        edit_votes(b, |votes| {
            votes.pop();
        })
    });
    out.push(invalid(
        "too-few-votes",
        "a first-round certificate missing one member's vote",
        &net,
        bad,
        "quorum not met",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let good = net.improving_certificate(6, 50.0);
    let mut inflated = net.certificate(5, vec![2 * FIXED_ONE, 0, 0, 0], m(1.0), |_| m(60.0));
    inflated.outcome = doin_primitives::Outcome::Accept;
    let bad = tamper(&mut net, good, |b| {
        let mut certs = b.certificates.clone().into_inner();
        certs.insert(0, inflated);
        b.certificates = BoundedVec::try_from_vec(certs).unwrap();
    });
    out.push(invalid(
        "inflated-claim-declared-accept",
        "a claim of 1.0 measured at 60.0 declared accepted",
        &net,
        bad,
        "declared outcome Accept, but the votes give Reject",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let tx = net.transfer(1, net.addr(2), Amount(5), 0);
    net.heartbeat(vec![tx.clone()]).unwrap();
    let bad = forced_heartbeat(&mut net, vec![tx]);
    out.push(invalid(
        "replayed-transaction",
        "the same signed transfer included a second time",
        &net,
        bad,
        "nonce 0 is not the sender's next nonce 1",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let mut body = net.transfer(1, net.addr(2), Amount(1), 0).body;
    body.max_fee = Amount(u128::MAX);
    body.priority_fee = Amount(u128::MAX);
    let overflow = Signed::sign(body, &net.keys[1]);
    let bad = forced_heartbeat(&mut net, vec![overflow]);
    out.push(invalid("amount-overflow", "a fee of weight × u128::MAX", &net, bad, "amount overflow in fee"));

    let mut net = TestNet::new(10, 5, 2);
    let cert = net.improving_certificate(5, 50.0);
    let snapshot = net.state.clone();
    net.work_block(9, vec![cert]).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let bad = testkit::reseal(&good, good.body.clone(), &net.keys[9], |h| h.threshold *= 2);
    out.push(invalid(
        "wrong-threshold",
        "a work block whose header claims a different threshold",
        &net,
        bad,
        "header threshold is",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let snapshot = net.state.clone();
    net.heartbeat(vec![]).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let other = net.keys.iter().find(|k| k.address() != good.header.generator).unwrap().clone();
    let bad = testkit::reseal(&good, good.body.clone(), &other, |h| h.generator = other.address());
    out.push(invalid(
        "heartbeat-non-leader",
        "a heartbeat signed by an account that is not the slot leader",
        &net,
        bad,
        "is not the slot 0 leader",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let stake = TxKind::Stake {
        amount: Amount::doin(3),
        roles: doin_primitives::Roles::EVALUATOR,
        domains: BoundedVec::try_from_vec(vec![testkit::domain_id()]).unwrap(),
        preferences: Default::default(),
    };
    let open =
        net.tx(8, TxKind::OpenChannel { payee: net.addr(7), deposit: Amount::doin(2), expiry_height: 50 });
    net.heartbeat(vec![net.tx(7, stake), open]).unwrap();
    net.heartbeat(vec![net.tx(7, TxKind::Unstake { amount: Amount::doin(1) })]).unwrap();
    for _ in 0..4 {
        net.heartbeat(vec![]).unwrap();
    }
    out.push(valid("stake-unbond-channel", "stake, channel open, partial unstake and its release", &net));

    let mut spec = doin_primitives::DomainSpec::example("quadratic", 4);
    spec.tolerance = Metric(1);
    spec.relative_tolerance_ppm = 250_000;
    spec.relative_acceptance_ppm = 10_000;
    let mut net = TestNet::with_domain(10, 5, 2, TestNet::new(1, 0, 0).spec.params, spec);
    let honest =
        net.certificate(5, vec![FIXED_ONE, 0, 0, 0], m(0.0098), |i| m([0.01, 0.0103, 0.0097][i % 3]));
    net.work_block(9, vec![honest]).unwrap();
    let liar = net.certificate(6, vec![2 * FIXED_ONE, 0, 0, 0], m(0.0005), |_| m(0.005));
    let late = net.certificate(5, vec![3 * FIXED_ONE, 0, 0, 0], m(0.0099), |_| m(0.00995));
    let r = net
        .heartbeat_with(BlockBody {
            certificates: BoundedVec::try_from_vec(vec![liar, late]).unwrap(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.certificates[0].outcome, doin_primitives::Outcome::Reject);
    assert!(r.certificates[0].bond_burned > Amount::ZERO);
    assert_eq!(
        (r.certificates[1].outcome, r.certificates[1].improved),
        (doin_primitives::Outcome::Accept, false)
    );
    out.push(valid(
        "relative-tolerance",
        "a 25 % relative tolerance: an honest claim at loss 0.01 accepted, a 10x liar at loss 0.005 \
         rejected (its bond burned), a 0.5 % gain inside the 1 % margin late",
        &net,
    ));

    let mut net = TestNet::new(10, 5, 2);
    let (evaluator_commit, _) = net.commit_reveal(0, vec![FIXED_ONE, 0, 0, 0], m(40.0));
    let bad = forced_seal(&mut net, vec![evaluator_commit]);
    out.push(invalid(
        "wrong-role",
        "a commit by an account staked as evaluator only, included by the seal leader",
        &net,
        bad,
        "is not staked as an optimizer of domain quadratic",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let (commit, _) = net.commit_reveal(5, vec![FIXED_ONE, 0, 0, 0], m(40.0));
    let good = forced_seal(&mut net, vec![commit]);
    let other = net.keys.iter().find(|k| k.address() != good.header.generator).unwrap().clone();
    let bad = testkit::reseal(&good, good.body.clone(), &other, |h| h.generator = other.address());
    out.push(invalid(
        "commit-non-leader",
        "a block including a commit signed by an account that is not the seal leader of its slot",
        &net,
        bad,
        "is not the seal leader of slot 0",
    ));

    let mut net = TestNet::new(10, 5, 2);
    let (commit, reveal) = net.commit_reveal(5, vec![FIXED_ONE, 0, 0, 0], m(40.0));
    net.seal_block(BlockBody {
        commits: BoundedVec::try_from_vec(vec![commit.clone()]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let certificate = doin_primitives::Certificate {
        commit,
        reveal,
        votes: BoundedVec::new(),
        escalation: BoundedVec::new(),
        outcome: doin_primitives::Outcome::Accept,
    };
    let snapshot = net.state.clone();
    net.seal_block(BlockBody::default()).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let leader = net.key_of(&good.header.generator).unwrap().clone();
    let body = BlockBody {
        certificates: BoundedVec::try_from_vec(vec![certificate]).unwrap(),
        ..Default::default()
    };
    let bad = testkit::reseal(&good, body, &leader, |_| {});
    out.push(invalid(
        "certificate-before-seal",
        "a certificate in the block right after its commit's inclusion, before its quorum is drawn",
        &net,
        bad,
        "is not sealed yet",
    ));

    // Finality by stake: six stakers vote each checkpoint in the block after it; then one of
    // them is slashed for a double finality vote.
    let mut net = TestNet::new(8, 6, 0);
    for _ in 0..14 {
        net.voting_heartbeat(vec![]).unwrap();
    }
    assert_eq!((net.state.meta().justified.height, net.state.meta().finalized.height), (12, 6));
    let vote = net.finality_vote(0, 12);
    let mut body = vote.body.clone();
    body.target.hash = doin_primitives::Hash([9; 32]);
    let evidence =
        doin_primitives::FinalityEvidence { first: vote, second: Signed::sign(body, &net.keys[0]) };
    net.heartbeat_with(BlockBody {
        finality_evidence: BoundedVec::try_from_vec(vec![evidence]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    out.push(valid(
        "finality-stake-votes",
        "stakers' finality votes justify checkpoints 6 and 12 and finalize 6; a double finality vote is slashed",
        &net,
    ));
    while net.state.height() < 19 {
        net.heartbeat(vec![]).unwrap();
    }
    let snapshot = net.state.clone();
    net.heartbeat(vec![]).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let producer = net.key_of(&good.header.generator).unwrap().clone();
    let unstaked = net.finality_vote(7, 18);
    let bad_body =
        BlockBody { finality_votes: BoundedVec::try_from_vec(vec![unstaked]).unwrap(), ..Default::default() };
    out.push(invalid(
        "finality-vote-unstaked",
        "a finality vote signed by an account without stake",
        &net,
        testkit::reseal(&good, bad_body, &producer, |_| {}),
        "holds no stake",
    ));
    out
}

#[test]
fn consensus_vectors() {
    let dir = dir();
    if std::env::var_os("DOIN_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for v in generate() {
            let path = dir.join(format!("{}.json", v.name));
            std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    assert!(files.len() >= 14, "expected the committed vectors in {}", dir.display());
    for path in files {
        let v: Vector = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (mut state, _) = v.genesis.build().unwrap();
        let last = v.blocks.len() - 1;
        for (i, hex_block) in v.blocks.iter().enumerate() {
            let block = Block::decode(&hex::decode(hex_block).unwrap()).unwrap();
            match (apply_block(&state, &block), &v.error) {
                (Ok((next, _)), None) => state = next,
                (Ok((next, _)), Some(_)) if i < last => state = next,
                (Err(e), Some(expected)) if i == last => {
                    assert!(
                        e.to_string().contains(expected.as_str()),
                        "{}: got {e}, expected {expected:?}",
                        v.name
                    )
                }
                (Ok(_), Some(expected)) => {
                    panic!("{}: block {i} applied, expected error {expected:?}", v.name)
                }
                (Err(e), _) => panic!("{}: block {i} failed: {e}", v.name),
            }
        }
        if let Some(root) = &v.state_root {
            assert_eq!(&state.root().to_string(), root, "{}: post-state root", v.name);
        }
    }
}
