//! Disputes of served inference answers: a receipt's row disputed with its Merkle path, a quorum
//! of the domain's evaluators drawn after inclusion, the server slashed on a majority finding the
//! row wrong, the disputer's bond paid to the server on a majority finding it right, returned
//! when undecided; every abuse refused by name with the state untouched; coins conserved.

use doin_consensus::{
    disputes::DisputeOutcome,
    testkit::{TestNet, domain_id},
};
use doin_primitives::{
    Amount, BoundedVec, FIXED_ONE, Hash, InferenceDispute, InferenceReceipt, InferenceReceiptBody, Metric,
    Signed, TxKind, answers_root, row_bits,
};

/// Staked optimizer that serves the answers.
const SERVER: usize = 5;
/// The champion's optimizer.
const CHAMPION: usize = 6;
/// A funded, unstaked client.
const CLIENT: usize = 8;

fn model() -> Hash {
    Hash::of(b"the champion's model")
}

/// Five staked evaluators (0–4), two optimizers (5, 6), funded clients; optimizer 6's claim
/// is the champion with a model the quorum measured at 0.9.
fn net() -> TestNet {
    let mut net = TestNet::new(10, 5, 2);
    net.model_champion(0, CHAMPION, 4.0, model(), Metric(9 * FIXED_ONE / 10)).unwrap();
    net
}

fn champion(net: &TestNet) -> Hash {
    net.state.domain(&domain_id()).unwrap().champion.as_ref().unwrap().commit
}

fn rows() -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let inputs: Vec<Vec<f64>> = (0..5).map(|i| vec![f64::from(i), 0.5, -1.0]).collect();
    let outputs: Vec<Vec<f64>> = (0..5).map(|i| vec![0.1 * f64::from(i), 0.9]).collect();
    (inputs, outputs)
}

/// `server`'s receipt for [`rows`] from the model `artifact` of champion `optimae`.
fn receipt(net: &TestNet, server: usize, optimae: Hash, artifact: Hash) -> InferenceReceipt {
    let (inputs, outputs) = rows();
    Signed::sign(
        InferenceReceiptBody {
            server: net.addr(server),
            domain: domain_id(),
            optimae,
            artifact,
            rows: inputs.len() as u32,
            answers: answers_root(&inputs, &outputs),
            height: 1,
            issued_ms: 1,
            payment: None,
        },
        &net.keys[server],
    )
}

fn dispute_of(receipt: InferenceReceipt, row: usize) -> InferenceDispute {
    let (inputs, outputs) = rows();
    InferenceDispute::new(receipt, &inputs, &outputs, row).unwrap()
}

fn send(net: &mut TestNet, from: usize, kind: TxKind) -> Result<(), String> {
    let tx = net.tx(from, kind);
    net.heartbeat(vec![tx]).map(|_| ()).map_err(|e| format!("{e} {e:?}"))
}

fn dispute(net: &mut TestNet, from: usize, d: InferenceDispute) -> Result<(), String> {
    send(net, from, TxKind::DisputeInference { dispute: Box::new(d) })
}

fn vote(net: &mut TestNet, from: usize, id: Hash, wrong: bool) -> Result<(), String> {
    send(net, from, TxKind::DisputeVote { dispute: id, wrong })
}

/// Asserts `result` was refused naming `why`, and the state root is untouched.
fn refused(net: &TestNet, root: Hash, result: Result<(), String>, why: &str) {
    let err = result.expect_err("refused");
    assert!(err.contains(why), "{err} lacks {why:?}");
    assert_eq!(net.state.root(), root, "a refused transaction changed the state");
}

fn conserved(net: &TestNet) {
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0), "coins conserved");
}

/// Sends a dispute of row 2 of the server's receipt from the client, and two empty blocks so
/// its quorum is drawn. Returns its id and quorum.
fn disputed(net: &mut TestNet) -> (Hash, Vec<usize>) {
    let r = receipt(net, SERVER, champion(net), model());
    let d = dispute_of(r, 2);
    let id = d.id();
    dispute(net, CLIENT, d).unwrap();
    let pending = net.state.dispute(&id).unwrap().clone();
    assert!(pending.quorum.is_empty() && pending.outcome.is_none());
    assert_eq!(pending.input, row_bits(&rows().0[2]));
    net.heartbeat(vec![]).unwrap();
    net.heartbeat(vec![]).unwrap();
    let quorum = net.state.dispute(&id).unwrap().quorum.clone();
    assert!(!quorum.is_empty(), "drawn two blocks after inclusion");
    let members: Vec<usize> = quorum.iter().map(|a| (0..10).find(|i| net.addr(*i) == *a).unwrap()).collect();
    assert!(members.iter().all(|m| *m < 5), "evaluators only: {members:?}");
    (id, members)
}

#[test]
fn a_wrong_answer_upheld_by_the_quorum_slashes_the_server_and_pays_the_disputer() {
    let mut net = net();
    let stake = net.state.stake(&net.addr(SERVER)).unwrap().amount;
    let client = net.state.account(&net.addr(CLIENT)).balance;
    let (id, members) = disputed(&mut net);
    conserved(&net);
    let need = members.len() / 2 + 1;
    for m in &members[..need] {
        vote(&mut net, *m, id, true).unwrap();
    }
    let d = net.state.dispute(&id).unwrap();
    let slashed = Amount(stake.0 / 10);
    assert_eq!(d.outcome, Some(DisputeOutcome::Upheld { slashed, rewarded: Amount(slashed.0 / 2) }));
    assert!(d.input.is_empty() && d.output.is_empty(), "a settled dispute drops its rows");
    assert_eq!(net.state.stake(&net.addr(SERVER)).unwrap().amount, Amount(stake.0 - slashed.0));
    // Bond back and half the slash, less the dispute transaction's fee.
    let after = net.state.account(&net.addr(CLIENT)).balance;
    let fee = Amount(client.0 + slashed.0 / 2 - after.0);
    assert!(fee.0 > 0 && fee.0 < Amount::doin(1).0 / 100, "only the fee was spent: {fee:?}");
    conserved(&net);
    // Late votes, and the same receipt disputed again, are refused.
    let root = net.state.root();
    if let Some(late) = members.get(need) {
        let r = vote(&mut net, *late, id, true);
        refused(&net, root, r, "is settled");
    }
    let again = dispute_of(receipt(&net, SERVER, champion(&net), model()), 3);
    assert_eq!(again.id(), id, "one dispute per receipt, whichever row");
    let r = dispute(&mut net, 9, again);
    refused(&net, root, r, "was disputed and settled");
}

#[test]
fn an_honest_answer_is_never_slashed_and_the_false_accuser_pays_the_server() {
    let mut net = net();
    let stake = net.state.stake(&net.addr(SERVER)).unwrap().amount;
    let server = net.state.account(&net.addr(SERVER)).balance;
    let (id, members) = disputed(&mut net);
    let need = members.len() / 2 + 1;
    // A lying member votes "wrong"; the rest re-executed and found the answer right.
    vote(&mut net, members[0], id, true).unwrap();
    for m in &members[1..] {
        if net.state.dispute(&id).unwrap().outcome.is_some() {
            break;
        }
        vote(&mut net, *m, id, false).unwrap();
    }
    assert!(members.len() > need, "honest members are the majority");
    assert_eq!(net.state.dispute(&id).unwrap().outcome, Some(DisputeOutcome::Refused));
    assert_eq!(net.state.stake(&net.addr(SERVER)).unwrap().amount, stake, "not slashed");
    assert_eq!(
        net.state.account(&net.addr(SERVER)).balance,
        Amount(server.0 + net.state.params().dispute_bond.0),
        "the bond paid the server"
    );
    conserved(&net);
}

#[test]
fn a_quorum_that_does_not_decide_returns_the_bond_at_the_deadline() {
    let mut net = net();
    let client = net.state.account(&net.addr(CLIENT)).balance;
    let (id, _) = disputed(&mut net);
    let window = net.state.params().dispute_window_blocks;
    let height = net.state.dispute(&id).unwrap().height;
    while net.state.height() < height + window {
        let d = net.state.dispute(&id).unwrap();
        assert!(d.outcome.is_none(), "{} {height} {d:?}", net.state.height());
        net.heartbeat(vec![]).unwrap();
    }
    assert_eq!(net.state.dispute(&id).unwrap().outcome, Some(DisputeOutcome::Undecided));
    let after = net.state.account(&net.addr(CLIENT)).balance;
    assert!(client.0 - after.0 < Amount::doin(1).0 / 100, "bond back, only the fee spent");
    conserved(&net);
    // An undecided receipt may be disputed again.
    let again = dispute_of(receipt(&net, SERVER, champion(&net), model()), 1);
    dispute(&mut net, CLIENT, again).unwrap();
    assert!(net.state.dispute(&id).unwrap().outcome.is_none());
}

/// Members that let a dispute reach its deadline without voting are not drawn for the domain's
/// disputes for `ABSENCE_WINDOWS` windows (a stopped or withholding evaluator stops stalling
/// them); a member that voted is not marked.
#[test]
fn members_silent_until_the_deadline_are_not_drawn_again_for_a_while() {
    use doin_consensus::disputes::{ABSENCE_WINDOWS, absent};
    let mut net = net();
    let (id, members) = disputed(&mut net);
    assert!(members.len() >= 2, "a quorum of two or more: {members:?}");
    // One member votes (its finding alone decides nothing), the others stay silent.
    vote(&mut net, members[0], id, false).unwrap();
    let window = net.state.params().dispute_window_blocks;
    let height = net.state.dispute(&id).unwrap().height;
    while net.state.height() < height + window {
        net.heartbeat(vec![]).unwrap();
    }
    let d = net.state.dispute(&id).unwrap();
    assert!(d.outcome.is_some(), "settled at the deadline: {d:?}");
    let now = net.state.height();
    let silent: Vec<usize> = members[1..].to_vec();
    for m in &silent {
        assert!(absent(&net.state, &domain_id(), &net.addr(*m), now), "member {m} did not vote");
        assert!(!absent(&net.state, &domain_id(), &net.addr(*m), now + window * ABSENCE_WINDOWS));
    }
    assert!(!absent(&net.state, &domain_id(), &net.addr(members[0]), now), "the voter is not absent");
    // The next dispute's quorum leaves the silent members out.
    let other = dispute_of(receipt(&net, CHAMPION, champion(&net), model()), 1);
    let next = other.id();
    dispute(&mut net, CLIENT, other).unwrap();
    net.heartbeat(vec![]).unwrap();
    net.heartbeat(vec![]).unwrap();
    let d = net.state.dispute(&next).unwrap();
    let drawn: Vec<usize> = d.quorum.iter().map(|a| (0..10).find(|i| net.addr(*i) == *a).unwrap()).collect();
    assert!(drawn.iter().all(|m| !silent.contains(m)), "absent members drawn: {drawn:?} (silent {silent:?})");
    assert!(!drawn.is_empty() || d.outcome.is_some(), "drawn from the others, or undecided with none: {d:?}");
    conserved(&net);
}

#[test]
fn every_abuse_of_a_dispute_is_refused_by_name() {
    let mut net = net();
    let champ = champion(&net);
    let root = net.state.root();
    // The disputer cannot change the server's output.
    let mut d = dispute_of(receipt(&net, SERVER, champ, model()), 2);
    d.output = BoundedVec::try_from_vec(row_bits(&[0.5, 0.5])).unwrap();
    let r = dispute(&mut net, CLIENT, d);
    refused(&net, root, r, "does not give the receipt's answers root");
    // Nor forge the server's receipt.
    let mut forged = receipt(&net, SERVER, champ, model());
    forged.body.rows = 4;
    let r = dispute(&mut net, CLIENT, dispute_of(forged, 1));
    refused(&net, root, r, "signature does not verify");
    // A model the chain never certified for the domain.
    let d = dispute_of(receipt(&net, SERVER, champ, Hash::of(b"other")), 0);
    let r = dispute(&mut net, CLIENT, d);
    refused(&net, root, r, "is not a champion model");
    // A server with no stake to answer with (account 9 never staked).
    let d = dispute_of(receipt(&net, 9, champ, model()), 0);
    let r = dispute(&mut net, CLIENT, d);
    refused(&net, root, r, "has no stake");
    // Its own receipt.
    let d = dispute_of(receipt(&net, SERVER, champ, model()), 0);
    let r = dispute(&mut net, SERVER, d);
    refused(&net, root, r, "cannot dispute its own receipt");
    // Votes on a dispute that does not exist.
    let r = vote(&mut net, 0, Hash::of(b"nothing"), true);
    refused(&net, root, r, "no dispute");

    let r = receipt(&net, SERVER, champ, model());
    let d = dispute_of(r, 2);
    let id = d.id();
    dispute(&mut net, CLIENT, d.clone()).unwrap();
    let root = net.state.root();
    let r = dispute(&mut net, 9, d);
    refused(&net, root, r, "already disputed");
    let r = vote(&mut net, 0, id, true);
    refused(&net, root, r, "not yet");
    net.heartbeat(vec![]).unwrap();
    net.heartbeat(vec![]).unwrap();
    let quorum = net.state.dispute(&id).unwrap().quorum.clone();
    let outsider = (0..5).find(|i| !quorum.contains(&net.addr(*i)));
    let root = net.state.root();
    for who in [SERVER, CLIENT].into_iter().chain(outsider) {
        let r = vote(&mut net, who, id, true);
        refused(&net, root, r, "is not in dispute");
    }
    if quorum.len() >= 3 {
        let member = (0..5).find(|i| quorum.contains(&net.addr(*i))).unwrap();
        vote(&mut net, member, id, true).unwrap();
        let root = net.state.root();
        let r = vote(&mut net, member, id, false);
        refused(&net, root, r, "already voted");
    }
    conserved(&net);
}

#[test]
fn a_displaced_model_stays_disputable_for_the_window_only() {
    let mut net = net();
    let old = champion(&net);
    let r = receipt(&net, SERVER, old, model());
    // A better champion with another model displaces it.
    net.model_champion(0, CHAMPION, 1.0, Hash::of(b"newer"), Metric(FIXED_ONE * 95 / 100)).unwrap();
    assert_ne!(champion(&net), old);
    let past = &net.state.domain(&domain_id()).unwrap().past_models;
    assert_eq!(past.len(), 1);
    let until = past[0].until;
    let mut late = net.clone();
    dispute(&mut net, CLIENT, dispute_of(r.clone(), 0)).unwrap();
    while late.state.height() < until {
        late.heartbeat(vec![]).unwrap();
    }
    let root = late.state.root();
    let res = dispute(&mut late, CLIENT, dispute_of(r, 0));
    refused(&late, root, res, "is not a champion model");
}
