//! Blocks and transactions: decoding arbitrary bytes, and applying blocks that start valid and
//! are then mutated the way an attacker would (transactions, certificates, votes, evidence,
//! commits, finality votes and the header), re-signed with the test keys so that the mutations
//! reach the rules behind the signature checks.

use std::sync::OnceLock;

use doin_consensus::{
    BlockTemplate, State, build_block,
    testkit::{TestNet, reseal},
};
use doin_primitives::{
    Amount, Block, BlockBody, BlockKind, BoundedVec, Certificate, ChannelUpdate, DoubleVoteEvidence, Metric,
    Outcome, Signed, Transaction, TxKind, decode, encode, tx::MAX_TX_BYTES,
};

use crate::Choices;

/// Any bytes: decoding a block returns `Ok` or `Err`, never panics; `Ok` round-trips.
pub fn decode_block(data: &[u8]) {
    if let Ok(block) = Block::decode(data) {
        assert_eq!(encode(&block), data, "a decoded block re-encodes to its bytes");
    }
}

/// Any bytes: decoding transactions, certificates and channel updates never panics.
pub fn decode_tx(data: &[u8]) {
    if let Ok(tx) = decode::<Transaction>(data, MAX_TX_BYTES, "transaction") {
        let _ = tx.verify();
        let _ = tx.weight();
        assert_eq!(encode(&tx), data);
    }
    let _ = decode::<Certificate>(data, 1 << 20, "certificate");
    let _ = decode::<ChannelUpdate>(data, 1 << 10, "channel update");
}

/// A staked test chain with one improving certificate applied, and a valid next block: a work
/// block with a new improving certificate and two transfers.
struct Base {
    net: TestNet,
    body: BlockBody,
    block: Block,
    producer: usize,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut net = TestNet::new(10, 5, 2);
        let first = net.improving_certificate(5, 50.0);
        net.work_block(9, vec![first]).unwrap_or_else(|e| panic!("seed block: {e}"));
        let cert = net.improving_certificate(6, 20.0);
        let body = BlockBody {
            transactions: BoundedVec::try_from_vec(vec![
                net.transfer(7, net.addr(8), Amount::doin(5), 0),
                net.transfer(8, net.addr(7), Amount::doin(1), 0),
            ])
            .unwrap_or_default(),
            certificates: BoundedVec::try_from_vec(vec![cert]).unwrap_or_default(),
            ..BlockBody::default()
        };
        let producer = 9;
        let (block, _, _) = build_block(
            &net.state,
            BlockTemplate {
                key: &net.keys[producer],
                timestamp_ms: net.now_ms,
                kind: BlockKind::Work,
                body: body.clone(),
            },
        )
        .unwrap_or_else(|e| panic!("base block: {e}"));
        Base { net, body, block, producer }
    })
}

/// What every applied block must leave: coins conserved, a root that matches the records, and
/// the same result when applied again.
fn check_applied(input: &State, block: &Block, out: &State) {
    assert_eq!(out.accounted_supply(), Some(out.meta().supply.minted.0), "coins are conserved");
    assert_eq!(out.recompute_root().ok(), Some(out.root()), "the root commits to the records");
    let again = doin_consensus::apply_block(input, block).map(|(s, _)| s.root());
    assert_eq!(again.ok(), Some(out.root()), "application is deterministic");
}

/// Applies `block` to `state`: never panics, never changes `state`; a block it accepts passes
/// [`check_applied`].
fn apply_checked(state: &State, block: &Block) {
    let root = state.root();
    if let Ok((out, _)) = doin_consensus::apply_block(state, block) {
        check_applied(state, block, &out);
    }
    assert_eq!(state.root(), root, "applying a block never changes its input state");
}

/// Re-signs `vote`-like content with the test key of its author.
fn resign<T: doin_primitives::signed::Signable + Clone>(
    net: &TestNet,
    s: &Signed<T>,
    edit: impl FnOnce(&mut T),
) -> Signed<T> {
    let mut body = s.body.clone();
    edit(&mut body);
    match net.key_of(body.signer()) {
        Some(key) => Signed::sign(body, key),
        None => Signed { body, signature: s.signature },
    }
}

/// One mutation of `body` chosen by the input.
fn mutate(net: &TestNet, body: &mut BlockBody, c: &mut Choices<'_>) {
    let mut txs = body.transactions.to_vec();
    let mut certs = body.certificates.to_vec();
    let mut evidence = body.evidence.to_vec();
    let mut commits = body.commits.to_vec();
    let mut finality = body.finality_votes.to_vec();
    match c.below(13) {
        0 if !txs.is_empty() => {
            let i = c.below(txs.len());
            // Mostly amounts the accounts hold (up to 2 000 DOIN) and their next nonce.
            let (amount, nonce) = ((c.u64() % 2_000_000) * 1_000_000, u64::from(c.byte() % 3));
            let to = net.addr(c.below(10));
            let kind = match c.below(4) {
                0 => TxKind::Transfer { to, amount: Amount(u128::from(amount)) },
                1 => TxKind::Unstake { amount: Amount(u128::from(amount)) },
                2 => TxKind::Stake {
                    amount: Amount(u128::from(amount)),
                    roles: doin_primitives::Roles(c.byte()),
                    domains: BoundedVec::try_from_vec(vec![doin_consensus::testkit::domain_id()])
                        .unwrap_or_default(),
                    preferences: Default::default(),
                },
                _ => TxKind::Transfer { to, amount: Amount(u128::MAX - u128::from(amount)) },
            };
            // Mostly fees above the base fee.
            let fee = (u128::from(c.byte()) * 10).saturating_sub(100);
            txs[i] = resign(net, &txs[i], |b| {
                b.kind = kind;
                b.nonce = nonce;
                b.max_fee = Amount(fee);
                b.priority_fee = Amount(fee / 2);
            });
        }
        1 if !txs.is_empty() => {
            let i = c.below(txs.len());
            txs.push(txs[i].clone());
        }
        2 if !txs.is_empty() => {
            txs.remove(c.below(txs.len()));
        }
        3 if !certs.is_empty() => {
            let i = c.below(certs.len());
            certs.push(certs[i].clone());
        }
        4 if !certs.is_empty() => {
            let i = c.below(certs.len());
            let votes = certs[i].votes.to_vec();
            if !votes.is_empty() {
                let j = c.below(votes.len());
                let m = Metric(c.u64() as i64);
                let mut votes = votes;
                votes[j] = resign(net, &votes[j], |v| v.measured = m);
                certs[i].votes = BoundedVec::try_from_vec(votes).unwrap_or_default();
            }
        }
        5 if !certs.is_empty() => {
            let i = c.below(certs.len());
            certs[i].outcome =
                if certs[i].outcome == Outcome::Accept { Outcome::Reject } else { Outcome::Accept };
        }
        6 if !certs.is_empty() => {
            let i = c.below(certs.len());
            let mut votes = certs[i].votes.to_vec();
            if !votes.is_empty() {
                let j = c.below(votes.len());
                if c.byte().is_multiple_of(2) {
                    votes.remove(j);
                } else {
                    // The vote again as an escalation vote.
                    let v = resign(net, &votes[j], |v| v.round = 1);
                    certs[i].escalation = BoundedVec::try_from_vec(vec![v]).unwrap_or_default();
                }
                certs[i].votes = BoundedVec::try_from_vec(votes).unwrap_or_default();
            }
        }
        7 if !certs.is_empty() => {
            // A double vote: a quorum member's vote and a second one for the same commit.
            let i = c.below(certs.len());
            if let Some(first) = certs[i].votes.first().cloned() {
                let m = Metric(first.body.measured.0.wrapping_add(1 + i64::from(c.byte())));
                let second = resign(net, &first, |v| v.measured = m);
                evidence.push(DoubleVoteEvidence { first, second });
            }
        }
        8 if !evidence.is_empty() => {
            let i = c.below(evidence.len());
            evidence.push(evidence[i].clone());
        }
        9 => {
            let params = (0..4).map(|_| c.u64() as i64 % 1_000_000_000_000).collect();
            let (commit, _) = net.commit_reveal(5 + c.below(2), params, Metric(c.u64() as i64));
            commits.push(commit);
        }
        10 => finality.push(net.finality_vote(c.below(10), c.u64() % 8)),
        11 if !certs.is_empty() => {
            let i = c.below(certs.len());
            let p = c.u64() as i64;
            certs[i].reveal = resign(net, &certs[i].reveal, |r| {
                let mut params = r.params.to_vec();
                if let Some(x) = params.first_mut() {
                    *x = p;
                }
                r.params = BoundedVec::try_from_vec(params).unwrap_or_default();
            });
        }
        _ if !certs.is_empty() => {
            certs.remove(c.below(certs.len()));
        }
        _ => {}
    }
    body.transactions = BoundedVec::try_from_vec(txs).unwrap_or_default();
    body.certificates = BoundedVec::try_from_vec(certs).unwrap_or_default();
    body.evidence = BoundedVec::try_from_vec(evidence).unwrap_or_default();
    body.commits = BoundedVec::try_from_vec(commits).unwrap_or_default();
    body.finality_votes = BoundedVec::try_from_vec(finality).unwrap_or_default();
}

/// A valid next block mutated as the input says, applied two ways: resealed around the
/// mutated body with the original header (every rule up to the state root runs), and built
/// afresh by the block builder (which drops nothing: a block it builds must apply and pass
/// [`check_applied`]). A first byte divisible by 4 instead flips raw bytes of the encoded block.
pub fn apply_block(data: &[u8]) {
    let _ = apply_block_reached(data);
}

/// [`apply_block`], saying whether the block builder built (and so the node would apply) the
/// mutated block: mutation that never gets past the builder would test little.
fn apply_block_reached(data: &[u8]) -> bool {
    let b = base();
    let state = &b.net.state;
    let mut c = Choices::new(data);
    if c.byte().is_multiple_of(4) {
        let mut bytes = encode(&b.block);
        while c.more() {
            let i = c.below(bytes.len());
            bytes[i] ^= c.byte().max(1);
        }
        if let Ok(block) = Block::decode(&bytes) {
            apply_checked(state, &block);
        }
        return false;
    }
    let mut body = b.body.clone();
    let mutations = 1 + c.below(6);
    for _ in 0..mutations {
        mutate(&b.net, &mut body, &mut c);
    }
    let key = &b.net.keys[b.producer];
    let (dt, kind_flip) = (i64::from(c.byte() as i8) * 100, c.byte().is_multiple_of(5));
    let resealed = reseal(&b.block, body.clone(), key, |h| {
        h.timestamp_ms = h.timestamp_ms.saturating_add_signed(dt);
        if kind_flip {
            h.kind = BlockKind::Heartbeat;
        }
    });
    apply_checked(state, &resealed);
    // Built by whoever may produce it: a block with commits by the seal leader at once, a
    // heartbeat by the heartbeat leader once the chain has been idle long enough, a work block
    // by anyone.
    let parent_ms = state.meta().timestamp_ms;
    let leader = |who: Option<doin_primitives::Address>| who.and_then(|a| b.net.key_of(&a)).unwrap_or(key);
    let (kind, ts, key) = if !body.commits.is_empty() {
        (BlockKind::Heartbeat, parent_ms + 1, leader(doin_consensus::seal_leader(state, 0)))
    } else if kind_flip {
        let ts = parent_ms + state.params().max_block_interval_ms + dt.unsigned_abs();
        let slot = doin_consensus::heartbeat_slot(state, ts).unwrap_or(0);
        (BlockKind::Heartbeat, ts, leader(doin_consensus::heartbeat_leader(state, slot)))
    } else {
        (BlockKind::Work, b.net.now_ms.saturating_add_signed(dt), key)
    };
    if let Ok((built, out, _)) = build_block(state, BlockTemplate { key, timestamp_ms: ts, kind, body }) {
        check_applied(state, &built, &out);
        let (applied, _) = doin_consensus::apply_block(state, &built)
            .unwrap_or_else(|e| panic!("a built block applies: {e}"));
        assert_eq!(applied.root(), out.root());
        return true;
    }
    false
}

/// Encoded blocks: genesis and the base chain's blocks.
pub(crate) fn block_seeds() -> Vec<Vec<u8>> {
    let b = base();
    let mut seeds = vec![encode(&b.net.genesis), encode(&b.block)];
    seeds.extend(b.net.blocks.iter().map(encode));
    seeds
}

/// Encoded transactions and a certificate.
pub(crate) fn tx_seeds() -> Vec<Vec<u8>> {
    let b = base();
    let mut seeds: Vec<Vec<u8>> = b.body.transactions.iter().map(encode).collect();
    seeds.extend(b.body.certificates.iter().map(encode));
    seeds
}

/// Choices that exercise each mutation once, and a raw flip.
pub(crate) fn apply_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> =
        (0u8..13).map(|op| vec![1, 0, 0, op, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).collect();
    seeds.push(vec![0, 40, 0, 7]);
    seeds.push(vec![1]);
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutated_blocks_reach_the_builder_and_application() {
        // 400 inputs of 24 pseudo-random bytes (a fixed stream): some of the mutated blocks
        // must be buildable (most mutations break a rule, as they should), or the target would
        // only exercise refusals; cargo-fuzz's coverage guidance finds more.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let built = (0..400)
            .filter(|_| {
                let input: Vec<u8> = (0..24)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        (x >> 56) as u8
                    })
                    .collect();
                apply_block_reached(&input)
            })
            .count();
        assert!(built >= 10, "only {built} of 400 mutated blocks were built and applied");
        let raw = base();
        let (out, _) = doin_consensus::apply_block(&raw.net.state, &raw.block).unwrap();
        check_applied(&raw.net.state, &raw.block, &out);
    }
}
