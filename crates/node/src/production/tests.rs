use std::time::Duration;

use doin_consensus::{apply_block, quorum, testkit::TestNet};
use doin_primitives::FIXED_ONE;

use super::*;

fn m(x: f64) -> Metric {
    Metric((x * FIXED_ONE as f64) as i64)
}

fn ready(cert: Certificate, ready_at: Instant) -> ReadyCert {
    let median = certs::median(&cert.votes.iter().map(|v| v.measured).collect::<Vec<_>>());
    ReadyCert { cert, ready_at, median }
}

/// What each of the net's keys produces at `ts` with a copy of `pools`.
fn each_produces(net: &TestNet, pools: &Production, ts: u64, now: Instant) -> Vec<(usize, Produced)> {
    net.keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut p = pools.clone_pools();
            let mut mempool = Mempool::new(16, 16);
            (i, p.produce(&net.state, key, ts, now, &mut mempool, &[]))
        })
        .filter(|(_, out)| out.block.is_some())
        .collect()
}

impl Production {
    fn clone_pools(&self) -> Production {
        Production {
            commit_pool: self.commit_pool.clone(),
            certs: self.certs.clone(),
            evidence: self.evidence.clone(),
            finality_evidence: self.finality_evidence.clone(),
            max_pending: self.max_pending,
        }
    }
}

/// Applies the one block produced, as every validator would.
fn apply(net: &mut TestNet, produced: Vec<(usize, Produced)>) -> Block {
    assert_eq!(
        produced.len(),
        1,
        "exactly one producer: {:?}",
        produced.iter().map(|(i, _)| i).collect::<Vec<_>>()
    );
    let block = produced.into_iter().next().and_then(|(_, p)| p.block).expect("a block");
    let (state, _) = apply_block(&net.state, &block).expect("the produced block is valid");
    net.state = state;
    net.blocks.push(block.clone());
    block
}

/// An idle chain gets a heartbeat only once `max_block_interval_ms` passed, and only from the
/// slot's leader.
#[test]
fn only_the_slot_leader_beats_an_idle_chain() {
    let net = TestNet::new(8, 4, 3);
    let tip = net.state.meta().timestamp_ms;
    let now = Instant::now();
    let empty = Production::new(16);
    assert!(each_produces(&net, &empty, tip + 1_000, now).is_empty(), "the chain is not idle yet");
    let produced = each_produces(&net, &empty, tip + net.spec.params.max_block_interval_ms, now);
    let mut net = net;
    let block = apply(&mut net, produced);
    assert_eq!(block.header.body.kind, BlockKind::Heartbeat);
}

/// A pooled commit is included by the seal leader of the slot (in the first half of its slot
/// only), and the block after it, sealing it, comes from the next leader at once; nobody else
/// produces while the tip's commits wait for their seal.
#[test]
fn the_seal_leader_includes_and_seals_pooled_commits() {
    let mut net = TestNet::new(8, 4, 3);
    let (commit, _) = net.commit_reveal(4, vec![1, 2, 3, 4], m(2.0));
    let now = Instant::now();
    let mut pools = Production::new(16);
    pools.pool_commit(&commit, now, false);
    let slot = net.state.params().seal_slot_ms;
    let tip = net.state.meta().timestamp_ms;
    assert!(each_produces(&net, &pools, tip + 1 + slot / 2 + 1, now).is_empty(), "late in its slot: none");
    let produced = each_produces(&net, &pools, tip + 1, now);
    let block = apply(&mut net, produced);
    assert_eq!(block.body.commits.len(), 1);
    assert!(net.state.meta().commits_in_tip > 0);
    let leader = commits::seal_leader(&net.state, 0).expect("a seal leader");
    assert!(
        each_produces(&net, &Production::new(16), net.state.meta().timestamp_ms + 1 + slot / 2 + 1, now)
            .is_empty(),
        "no one else may produce while the tip's commits wait"
    );
    let produced = each_produces(&net, &Production::new(16), net.state.meta().timestamp_ms + 1, now);
    let block = apply(&mut net, produced);
    assert_eq!(block.header.body.generator, leader);
    assert!(quorum::sealed(&net.state, &commit.id()).is_some(), "sealed: its quorums are drawn");
    // A settled commit is not pooled; a full pool refuses newcomers.
    let (other, _) = net.commit_reveal(5, vec![4, 3, 2, 1], m(2.0));
    let mut full = Production::new(1);
    full.pool_commit(&commit, now, true);
    assert_eq!(full.pooled_commits(), 0);
    full.pool_commit(&commit, now, false);
    full.pool_commit(&other, now, false);
    assert_eq!(full.pooled_commits(), 1);
    assert!(full.pooled_commit(&other.id()).is_none());
}

/// A commit stays pooled once its block is in: after a reorg to a branch without that block,
/// the seal leader includes it again (it was dropped at inclusion, and the claim was lost to
/// every reorg); on the including branch it is not included twice; once its certificate
/// landed it leaves.
#[test]
fn an_included_commit_survives_a_reorg_that_orphans_its_block() {
    let mut net = TestNet::new(8, 4, 3);
    let (commit, reveal) = net.commit_reveal(4, vec![1, 2, 3, 4], m(2.0));
    let now = Instant::now();
    let mut pools = Production::new(16);
    pools.pool_commit(&commit, now, false);
    let before = net.state.clone();
    let ts = net.state.meta().timestamp_ms + 1;
    let produced = each_produces(&net, &pools, ts, now);
    let block = apply(&mut net, produced);
    assert_eq!(block.body.commits.len(), 1);
    pools.on_tip(&net.state, now, Duration::from_secs(60));
    assert_eq!(pools.pooled_commits(), 1, "kept while its reference is recent");
    // On the including branch: sealed by the next leader, never included twice.
    let sealing = each_produces(&net, &pools, net.state.meta().timestamp_ms + 1, now);
    assert!(sealing.iter().all(|(_, p)| p.block.as_ref().is_some_and(|b| b.body.commits.is_empty())));
    assert_eq!(pools.includable_commits(&net.state).len(), 0);
    assert_eq!(pools.pooled_commits(), 1, "a commit this chain includes is skipped, not dropped");
    // The reorg: back on the parent, the seal leader includes it again.
    let mut fork = TestNet::new(8, 4, 3);
    fork.state = before;
    pools.on_tip(&fork.state, now, Duration::from_secs(60));
    let produced = each_produces(&fork, &pools, ts + 7, now);
    let again = apply(&mut fork, produced);
    assert_eq!(again.body.commits.iter().map(|c| c.id()).collect::<Vec<_>>(), vec![commit.id()]);
    // Certified on the first branch: it leaves the pool.
    apply(&mut net, sealing);
    let cert = net.sealed_certificate(commit.clone(), reveal, |_| m(2.0));
    net.work_block(0, vec![cert]).expect("the certificate lands");
    pools.on_tip(&net.state, now, Duration::from_secs(60));
    assert_eq!(pools.pooled_commits(), 0, "certified: it leaves");
}

/// A certificate assembled here rides the seal leader's block at once and anyone else's once
/// it is ready; a work block carries it and the champion moves.
#[test]
fn ready_certificates_wait_their_grace_unless_the_producer_leads_the_seal_slot() {
    let mut net = TestNet::new(8, 4, 3);
    let cert = net.improving_certificate(4, 2.0);
    let id = cert.commit.id();
    let now = Instant::now();
    let mut pools = Production::new(16);
    pools.add_cert(id, ready(cert, now + Duration::from_millis(1500)));
    let ts = net.state.meta().timestamp_ms + 1;
    let leader = commits::seal_leader(&net.state, 0).expect("a seal leader");
    let early = each_produces(&net, &pools, ts, now);
    assert_eq!(early.len(), 1, "only the seal leader before the grace");
    assert_eq!(net.keys[early[0].0].address(), leader);
    let late = each_produces(&net, &pools, ts, now + Duration::from_secs(2));
    assert!(late.len() > 1, "anyone once ready: {}", late.len());
    let block = apply(&mut net, late.into_iter().take(1).collect());
    assert_eq!(block.header.body.kind, BlockKind::Work);
    let champion = net.state.domain(&doin_consensus::testkit::domain_id()).and_then(|d| d.champion.clone());
    assert_eq!(champion.map(|c| c.commit), Some(id));
    // The same certificate again can never land: it is forgotten, and no work block comes.
    let produced = pools.produce(
        &net.state,
        &net.keys[0],
        net.state.meta().timestamp_ms + 1,
        now + Duration::from_secs(2),
        &mut Mempool::new(16, 16),
        &[],
    );
    assert_eq!(produced.forgotten, vec![id]);
    assert!(produced.block.is_none_or(|b| b.header.body.kind == BlockKind::Heartbeat));
    assert!(!pools.has_cert(&id));
}

/// The heartbeat filter agrees with consensus: a late accept and a reject ride a heartbeat,
/// an improvement needs a work block.
#[test]
fn late_accepts_and_rejects_ride_heartbeats_improvements_do_not() {
    let mut net = TestNet::new(8, 4, 3);
    let first = net.improving_certificate(4, 2.0);
    net.work_block(4, vec![first]).expect("the first improvement lands");
    let now = Instant::now();
    // Honest (measured as claimed) but worse than the champion: late.
    let late = ready(net.certificate(5, vec![7, 7, 7, 7], m(3.0), |_| m(3.0)), now);
    assert_eq!(late.cert.outcome, Outcome::Accept);
    // Claims 1.0, measured 5.0: rejected.
    let reject = ready(net.certificate(6, vec![9, 9, 9, 9], m(1.0), |_| m(5.0)), now);
    assert_eq!(reject.cert.outcome, Outcome::Reject);
    let better = ready(net.improving_certificate(5, 1.0), now);
    assert!(adds_no_work(&net.state, &late));
    assert!(adds_no_work(&net.state, &reject));
    assert!(!adds_no_work(&net.state, &better));
    // Through the producer: the idle chain's leader carries both in its heartbeat.
    let mut pools = Production::new(16);
    pools.add_cert(late.cert.commit.id(), late);
    pools.add_cert(reject.cert.commit.id(), reject);
    let ts = net.state.meta().timestamp_ms + net.spec.params.max_block_interval_ms;
    let produced = each_produces(&net, &pools, ts, now);
    let block = apply(&mut net, produced);
    assert_eq!(block.header.body.kind, BlockKind::Heartbeat);
    assert_eq!(block.body.certificates.len(), 2);
}
