//! Block application: `apply_block(state, block) -> (state, receipt)` and its mirror image
//! `build_block`, which runs the same transition to fill in a header.

use doin_primitives::{
    Address, Amount, Block, BlockBody, BlockKind, Hash, HeaderBody, Keypair, SigTag, Signable, SignatureItem,
    Signed, TxBody, TxKind, block::HEADER_VERSION, encode, verify_batch,
};
use serde::{Deserialize, Serialize};

use crate::{
    certs::{self, CertReceipt},
    commits, economics,
    error::BlockError,
    finality, quorum,
    state::{Checkpoint, Closing, State},
    txs::{self, BlockCtx, TxReceipt},
};

/// What applying a block did, for the node, the API and analytics.
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, borsh::BorshSerialize, borsh::BorshDeserialize,
)]
pub struct Receipt {
    /// Block hash.
    pub block_hash: Hash,
    /// Height.
    pub height: u64,
    /// Kind.
    pub kind: BlockKind,
    /// Generator.
    pub generator: Address,
    /// Per-transaction results.
    pub transactions: Vec<TxReceipt>,
    /// Per-certificate results.
    pub certificates: Vec<CertReceipt>,
    /// Keys slashed for double votes or conflicting finality votes, with the amount burned.
    pub slashes: Vec<(Address, Amount)>,
    /// Work carried.
    pub work: u128,
    /// Block reward minted (0 for heartbeats).
    pub reward: Amount,
    /// What the generator received (its reward share, rounding and tips).
    pub generator_reward: Amount,
    /// Base fees burned.
    pub fees_burned: Amount,
    /// Tips paid to the generator.
    pub tips: Amount,
    /// Weight used.
    pub weight_used: u64,
    /// Base fee of the next block.
    pub next_base_fee: Amount,
    /// Threshold of the next work block.
    pub next_threshold: u128,
    /// Finality checkpoint after this block.
    pub finalized: Checkpoint,
    /// State root after this block.
    pub state_root: Hash,
}

/// Everything `build_block` needs besides the state.
#[derive(Debug)]
pub struct BlockTemplate<'a> {
    /// The generator's key.
    pub key: &'a Keypair,
    /// Timestamp, ms; must be after the parent's.
    pub timestamp_ms: u64,
    /// Work or heartbeat.
    pub kind: BlockKind,
    /// The body.
    pub body: BlockBody,
}

/// Per-transaction data computed once: id and weight.
struct TxInfo {
    id: Hash,
    weight: u64,
}

/// Applies `block` on top of `state`. Pure: the input state is untouched; on success the new
/// state and a receipt are returned, on any rule violation a [`BlockError`] naming it.
pub fn apply_block(state: &State, block: &Block) -> Result<(State, Receipt), BlockError> {
    let header = &block.header.body;
    check_header(state, header, block.body.commits.len())?;
    let beacon = check_vrf(state, header)?;
    check_limits(state, &block.body)?;
    let infos = tx_infos(&block.body);
    let tx_ids: Vec<Hash> = infos.iter().map(|i| i.id).collect();
    if doin_primitives::merkle::merkle_root(&tx_ids) != header.tx_root {
        return Err(mismatch("tx_root", header.tx_root, doin_primitives::merkle::merkle_root(&tx_ids)));
    }
    if block.body.cert_root() != header.cert_root {
        return Err(mismatch("cert_root", header.cert_root, block.body.cert_root()));
    }
    verify_signatures(Some(&block.header), &block.body, &infos)?;
    let (mut next, mut receipt) = execute(state, header, &block.body, &infos, beacon)?;
    if receipt.work != header.work {
        return Err(mismatch("work", header.work, receipt.work));
    }
    if next.meta.cumulative_work != header.cumulative_work {
        return Err(mismatch("cumulative_work", header.cumulative_work, next.meta.cumulative_work));
    }
    if next.root != header.state_root {
        return Err(mismatch("state_root", header.state_root, next.root));
    }
    let hash = block.hash();
    seal(&mut next, &mut receipt, hash);
    Ok((next, receipt))
}

/// Builds and signs a block from a body, running the same transition as [`apply_block`].
pub fn build_block(
    state: &State,
    template: BlockTemplate<'_>,
) -> Result<(Block, State, Receipt), BlockError> {
    let body = template.body;
    let infos = tx_infos(&body);
    let tx_ids: Vec<Hash> = infos.iter().map(|i| i.id).collect();
    let mut header = HeaderBody {
        version: HEADER_VERSION,
        chain_id: state.meta.chain_id,
        height: state.meta.height.saturating_add(1),
        parent_hash: state.tip.hash,
        timestamp_ms: template.timestamp_ms,
        generator: template.key.address(),
        tx_root: doin_primitives::merkle::merkle_root(&tx_ids),
        cert_root: body.cert_root(),
        state_root: Hash::ZERO,
        work: 0,
        threshold: state.meta.difficulty.threshold,
        cumulative_work: 0,
        base_fee: state.meta.base_fee,
        kind: template.kind,
        vrf: template.key.vrf_prove(&doin_primitives::vrf::beacon_input(
            &state.meta.beacon,
            state.meta.height.saturating_add(1),
        )),
    };
    check_header(state, &header, body.commits.len())?;
    let beacon = check_vrf(state, &header)?;
    check_limits(state, &body)?;
    verify_signatures(None, &body, &infos)?;
    let (mut next, mut receipt) = execute(state, &header, &body, &infos, beacon)?;
    header.work = receipt.work;
    header.cumulative_work = next.meta.cumulative_work;
    header.state_root = next.root;
    let block = Block { header: Signed::sign(header, template.key), body };
    seal(&mut next, &mut receipt, block.hash());
    Ok((block, next, receipt))
}

/// The generator's VRF proof over the parent's beacon and the height must verify; returns the
/// beacon after this block.
fn check_vrf(state: &State, h: &HeaderBody) -> Result<Hash, BlockError> {
    let input = doin_primitives::vrf::beacon_input(&state.meta.beacon, h.height);
    let output = h
        .generator
        .vrf_verify(&input, &h.vrf)
        .ok_or_else(|| BlockError::Header("the generator's VRF proof does not verify".into()))?;
    Ok(doin_primitives::vrf::next_beacon(&state.meta.beacon, &output))
}

/// The stake-weighted heartbeat leader of `slot` after the state's tip; `None` when nobody is
/// staked (then anyone may produce heartbeats). Seeded by the tip's beacon, which its producer
/// could not choose (a seed from the parent's hash let a producer grind its block's contents
/// until it led the next slot).
pub fn heartbeat_leader(state: &State, slot: u64) -> Option<Address> {
    slot_leader(state, b"doin/heartbeat-leader", slot)
}

/// The stake-weighted draw over all validators (stakers other than contributors only) with
/// seed `H(tag ‖ tip beacon ‖ slot)`; `None` when nobody is staked.
pub(crate) fn slot_leader(state: &State, tag: &[u8], slot: u64) -> Option<Address> {
    let candidates: Vec<quorum::Candidate> = state
        .stakes
        .iter()
        .filter(|(_, s)| s.validates())
        .map(|(a, s)| quorum::Candidate { address: *a, weight: s.amount.0 })
        .collect();
    let seed = Hash::of_parts(&[tag, &state.meta.beacon.0, &slot.to_le_bytes()]);
    quorum::draw(&candidates, 1, &seed).first().copied()
}

/// The heartbeat slot a timestamp falls in after a parent, or `None` before
/// `max_block_interval` has passed.
pub fn heartbeat_slot(state: &State, timestamp_ms: u64) -> Option<u64> {
    let p = &state.params;
    let earliest = state.meta.timestamp_ms.checked_add(p.max_block_interval_ms)?;
    let since = timestamp_ms.checked_sub(earliest)?;
    Some(since / p.heartbeat_slot_ms.max(1))
}

fn mismatch(field: &'static str, got: impl std::fmt::Debug, expected: impl std::fmt::Debug) -> BlockError {
    BlockError::Mismatch { field, got: format!("{got:?}"), expected: format!("{expected:?}") }
}

fn seal(next: &mut State, receipt: &mut Receipt, hash: Hash) {
    next.tip = crate::state::Tip { hash, height: next.meta.height };
    next.snapshot_recent(hash);
    receipt.block_hash = hash;
}

fn check_header(state: &State, h: &HeaderBody, commits: usize) -> Result<(), BlockError> {
    let bad = |m: String| Err(BlockError::Header(m));
    if h.version != HEADER_VERSION {
        return bad(format!("version {} is not {HEADER_VERSION}", h.version));
    }
    if h.chain_id != state.meta.chain_id {
        return bad(format!("chain id {} is not {}", h.chain_id, state.meta.chain_id));
    }
    if Some(h.height) != state.meta.height.checked_add(1) {
        return bad(format!("height {} does not follow {}", h.height, state.meta.height));
    }
    if h.parent_hash != state.tip.hash {
        return bad(format!("parent {} is not the tip {}", h.parent_hash, state.tip.hash));
    }
    if h.timestamp_ms <= state.meta.timestamp_ms {
        return bad(format!(
            "timestamp {} is not after the parent's {}",
            h.timestamp_ms, state.meta.timestamp_ms
        ));
    }
    if h.threshold != state.meta.difficulty.threshold {
        return Err(mismatch("threshold", h.threshold, state.meta.difficulty.threshold));
    }
    if h.base_fee != state.meta.base_fee {
        return Err(mismatch("base_fee", h.base_fee, state.meta.base_fee));
    }
    // Blocks that include commits, and the block after them, come from the seal leader of their
    // slot; such a heartbeat may come early.
    if commits::needs_seal_leader(state, commits) {
        if !commits::may_seal(state, &h.generator, h.timestamp_ms, commits) {
            let slot = commits::seal_slot(state, h.timestamp_ms).unwrap_or_default();
            return bad(format!(
                "generator {:?} is not the seal leader of slot {slot} ({:?}); a block that includes or \
                 seals commits must come from it",
                h.generator,
                commits::seal_leader(state, slot)
            ));
        }
    } else if h.kind == BlockKind::Heartbeat {
        let Some(slot) = heartbeat_slot(state, h.timestamp_ms) else {
            return bad(format!(
                "heartbeat at {} comes before max_block_interval ({} ms) has passed since the parent",
                h.timestamp_ms, state.params.max_block_interval_ms
            ));
        };
        if let Some(leader) = heartbeat_leader(state, slot)
            && leader != h.generator
        {
            return bad(format!(
                "heartbeat generator {:?} is not the slot {slot} leader {leader:?}",
                h.generator
            ));
        }
    }
    Ok(())
}

fn check_limits(state: &State, body: &BlockBody) -> Result<(), BlockError> {
    let p = &state.params;
    if body.transactions.len() > p.max_block_txs as usize {
        return Err(BlockError::Limit(format!(
            "{} transactions, at most {}",
            body.transactions.len(),
            p.max_block_txs
        )));
    }
    if body.commits.len() > p.max_block_commits as usize {
        return Err(BlockError::Limit(format!(
            "{} commits, at most {}",
            body.commits.len(),
            p.max_block_commits
        )));
    }
    if body.certificates.len() > p.max_block_certs as usize {
        return Err(BlockError::Limit(format!(
            "{} certificates, at most {}",
            body.certificates.len(),
            p.max_block_certs
        )));
    }
    let size = borsh::object_length(body).unwrap_or(usize::MAX);
    if size > p.max_block_bytes as usize {
        return Err(BlockError::Limit(format!("body of {size} bytes, at most {}", p.max_block_bytes)));
    }
    Ok(())
}

fn tx_infos(body: &BlockBody) -> Vec<TxInfo> {
    body.transactions
        .iter()
        .map(|tx| {
            let bytes = encode(&tx.body);
            TxInfo { id: Hash::of(&bytes), weight: TxBody::weight_for(&tx.kind, bytes.len()) }
        })
        .collect()
}

/// What a non-transaction signature in a block belongs to (named only when it fails).
#[derive(Clone, Copy)]
enum Signer {
    Header,
    ChannelUpdate(Hash),
    Contribution(Hash, usize),
    Commit(usize),
    Reveal(usize),
    Vote(usize, usize, Address),
    Evidence(usize, &'static str),
    BlockCommit(usize),
    FinalityVote(usize),
    FinalityEvidence(usize, &'static str),
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header => write!(f, "the block header"),
            Self::ChannelUpdate(tx) => write!(f, "the channel update in transaction {tx}"),
            Self::Contribution(tx, j) => {
                write!(f, "contribution {j} of the federated round in transaction {tx}")
            }
            Self::Commit(i) => write!(f, "certificate {i} commit"),
            Self::Reveal(i) => write!(f, "certificate {i} reveal"),
            Self::Vote(i, j, who) => write!(f, "certificate {i} vote {j} by {who:?}"),
            Self::Evidence(i, which) => write!(f, "evidence {i} {which} vote"),
            Self::BlockCommit(i) => write!(f, "commit {i}"),
            Self::FinalityVote(i) => write!(f, "finality vote {i}"),
            Self::FinalityEvidence(i, which) => write!(f, "finality evidence {i} {which} vote"),
        }
    }
}

/// Verifies every signature in the block in one batch; on failure names the culprit.
fn verify_signatures(
    header: Option<&doin_primitives::BlockHeader>,
    body: &BlockBody,
    infos: &[TxInfo],
) -> Result<(), BlockError> {
    let mut items: Vec<SignatureItem> = Vec::with_capacity(body.transactions.len() + 1);
    // Positions of the items that are not plain transaction signatures.
    let mut named: Vec<(usize, Signer)> = Vec::new();
    let mut push = |items: &mut Vec<SignatureItem>, item: SignatureItem, who: Signer| {
        named.push((items.len(), who));
        items.push(item);
    };
    if let Some(h) = header {
        push(&mut items, h.signature_item(), Signer::Header);
    }
    for (tx, info) in body.transactions.iter().zip(infos) {
        items.push(SignatureItem {
            signer: tx.sender,
            message: SigTag::Transaction.message(&info.id),
            signature: tx.signature,
        });
        if let TxKind::CloseChannel { final_update: u } | TxKind::ChallengeChannel { newer_update: u } =
            &tx.kind
        {
            push(&mut items, u.signature_item(), Signer::ChannelUpdate(info.id));
        }
        if let TxKind::FederatedRound { round } = &tx.kind {
            for (j, c) in round.contributions.iter().enumerate() {
                push(&mut items, c.update.signature_item(), Signer::Contribution(info.id, j));
            }
        }
    }
    for (i, c) in body.certificates.iter().enumerate() {
        push(&mut items, c.commit.signature_item(), Signer::Commit(i));
        push(&mut items, c.reveal.signature_item(), Signer::Reveal(i));
        for (j, v) in c.votes.iter().chain(c.escalation.iter()).enumerate() {
            push(&mut items, v.signature_item(), Signer::Vote(i, j, *v.signer()));
        }
    }
    for (i, e) in body.evidence.iter().enumerate() {
        push(&mut items, e.first.signature_item(), Signer::Evidence(i, "first"));
        push(&mut items, e.second.signature_item(), Signer::Evidence(i, "second"));
    }
    for (i, c) in body.commits.iter().enumerate() {
        push(&mut items, c.signature_item(), Signer::BlockCommit(i));
    }
    for (i, v) in body.finality_votes.iter().enumerate() {
        push(&mut items, v.signature_item(), Signer::FinalityVote(i));
    }
    for (i, e) in body.finality_evidence.iter().enumerate() {
        push(&mut items, e.first.signature_item(), Signer::FinalityEvidence(i, "first"));
        push(&mut items, e.second.signature_item(), Signer::FinalityEvidence(i, "second"));
    }
    verify_batch(&items).map_err(|index| {
        let what = match named.iter().find(|(at, _)| *at == index) {
            Some((_, who)) => who.to_string(),
            None => match items.get(index) {
                Some(item) => format!("a transaction from {:?}", item.signer),
                None => "an item".to_owned(),
            },
        };
        BlockError::Signature(what)
    })
}

/// The state transition proper (signatures already checked).
fn execute(
    state: &State,
    header: &HeaderBody,
    body: &BlockBody,
    infos: &[TxInfo],
    beacon: Hash,
) -> Result<(State, Receipt), BlockError> {
    let mut s = state.clone();
    let height = header.height;
    let params = s.params.clone();
    let base_fee = s.meta.base_fee;
    s.meta.height = height;
    s.meta.parent_hash = header.parent_hash;
    s.meta.timestamp_ms = header.timestamp_ms;
    s.meta.beacon = beacon;

    begin_block(&mut s, height)?;

    // Transactions.
    let ctx = BlockCtx { height, base_fee };
    let mut weight_used = 0u64;
    let mut tx_receipts = Vec::with_capacity(body.transactions.len());
    let (mut fees_burned, mut tips) = (Amount::ZERO, Amount::ZERO);
    for (index, (tx, info)) in body.transactions.iter().zip(infos).enumerate() {
        weight_used = weight_used.saturating_add(info.weight);
        if weight_used > params.max_block_weight {
            return Err(BlockError::Limit(format!(
                "transaction {index} brings the block weight to {weight_used}, above {}",
                params.max_block_weight
            )));
        }
        let r = txs::apply_tx(&mut s, tx, info.id, info.weight, ctx)
            .map_err(|source| BlockError::Transaction { index, id: info.id, source })?;
        fees_burned = fees_burned.checked_add(r.burned).ok_or(BlockError::Overflow("fees"))?;
        tips = tips.checked_add(r.tip).ok_or(BlockError::Overflow("tips"))?;
        tx_receipts.push(r);
    }

    // Certificates.
    let mut cert_receipts = Vec::with_capacity(body.certificates.len());
    let mut work = 0u128;
    for (index, cert) in body.certificates.iter().enumerate() {
        let r = certs::apply_certificate(&mut s, cert, height).map_err(|source| BlockError::Certificate {
            index,
            commit: cert.commit.id(),
            source,
        })?;
        work = work.checked_add(r.increment).ok_or(BlockError::Overflow("work"))?;
        cert_receipts.push(r);
    }

    // Evidence.
    let mut slashes = Vec::new();
    for (index, e) in body.evidence.iter().enumerate() {
        let slash =
            certs::apply_evidence(&mut s, e).map_err(|reason| BlockError::Evidence { index, reason })?;
        slashes.push(slash);
    }

    // Commits, bound on chain for the quorum the next block's beacon draws.
    commits::apply_commits(&mut s, &body.commits, height).map_err(|(index, source)| BlockError::Commit {
        index,
        commit: body.commits.get(index).map(|c| c.id()).unwrap_or_default(),
        source,
    })?;

    // Finality votes (justifying and finalizing checkpoints), then finality evidence.
    finality::apply_votes(&mut s, &body.finality_votes)
        .map_err(|(index, source)| BlockError::FinalityVote { index, source })?;
    for (index, e) in body.finality_evidence.iter().enumerate() {
        let slash = finality::apply_evidence(&mut s, e)
            .map_err(|source| BlockError::FinalityEvidence { index, source })?;
        slashes.push(slash);
    }

    // Work threshold. A heartbeat may carry certificates that add no work (rejects, late
    // accepts), so penalties land even while no improvement does.
    if header.kind == BlockKind::Heartbeat && work > 0 {
        return Err(BlockError::Header(format!(
            "a heartbeat block carries only certificates that add no work; work {work} needs a work block"
        )));
    }
    let threshold = s.meta.difficulty.threshold;
    if header.kind == BlockKind::Work && work < threshold {
        return Err(BlockError::BelowThreshold { work, threshold });
    }

    // Rewards.
    let reward =
        if header.kind == BlockKind::Work { economics::block_reward(&params, height) } else { Amount::ZERO };
    let generator_reward = distribute(&mut s, reward, work, &mut cert_receipts)?;
    let generator_total = generator_reward.checked_add(tips).ok_or(BlockError::Overflow("tips"))?;
    s.credit(header.generator, generator_total).ok_or(BlockError::Overflow("generator balance"))?;
    s.meta.supply.minted = s.meta.supply.minted.checked_add(reward).ok_or(BlockError::Overflow("supply"))?;

    // Difficulty, fees, work, finality.
    if header.kind == BlockKind::Work {
        s.meta.difficulty = economics::next_difficulty(&params, &s.meta.difficulty, header.timestamp_ms);
    }
    s.meta.base_fee = economics::next_base_fee(&params, base_fee, weight_used);
    s.meta.cumulative_work =
        s.meta.cumulative_work.checked_add(work).ok_or(BlockError::Overflow("cumulative work"))?;
    s.touch(crate::state::StateKey::Meta);
    let state_root = s.commit_tree()?;

    let receipt = Receipt {
        block_hash: Hash::ZERO,
        height,
        kind: header.kind,
        generator: header.generator,
        transactions: tx_receipts,
        certificates: cert_receipts,
        slashes,
        work,
        reward,
        generator_reward: generator_total,
        fees_burned,
        tips,
        weight_used,
        next_base_fee: s.meta.base_fee,
        next_threshold: s.meta.difficulty.threshold,
        finalized: s.meta.finalized,
        state_root,
    };
    Ok((s, receipt))
}

/// Start-of-block housekeeping: expired commit records, matured unbonding, channel expiries and
/// challenge deadlines, dispute quorums and deadlines.
fn begin_block(s: &mut State, height: u64) -> Result<(), BlockError> {
    s.prune_expired(height);
    while let Some((key, amount)) = s.unbonding.get_min().map(|(k, v)| (*k, *v)) {
        if key.0 > height {
            break;
        }
        s.unbonding.remove(&key);
        s.touch(crate::state::StateKey::Unbonding(key.0, key.1));
        s.credit(key.1, amount).ok_or(BlockError::Overflow("unbonding release"))?;
    }
    while let Some((expiry, id)) = s.channel_expiries.get_min().copied() {
        if expiry > height {
            break;
        }
        let Some(channel) = s.channel(&id).cloned() else {
            s.channel_expiries.remove(&(expiry, id));
            continue;
        };
        let closing = Closing {
            nonce: 0,
            paid_total: Amount::ZERO,
            deadline: height.saturating_add(s.params.challenge_window_blocks),
        };
        s.set_channel(id, Some(crate::state::Channel { closing: Some(closing), ..channel }));
    }
    while let Some((deadline, id)) = s.channel_deadlines.get_min().copied() {
        if deadline > height {
            break;
        }
        let Some(channel) = s.channel(&id).cloned() else {
            s.channel_deadlines.remove(&(deadline, id));
            continue;
        };
        let paid = channel.closing.as_ref().map_or(Amount::ZERO, |c| c.paid_total);
        txs::settle(s, id, &channel, paid).map_err(|_| BlockError::Overflow("channel settlement"))?;
    }
    crate::disputes::begin_block(s, height).map_err(|_| BlockError::Overflow("dispute settlement"))?;
    Ok(())
}

/// Splits a work block's reward 65 / 30 / 5: optimizers ∝ increment, each certificate's
/// evaluator share equally among its agreeing votes (to the generator if none agreed), the rest
/// and all rounding to the generator. Returns the generator's share.
fn distribute(
    s: &mut State,
    reward: Amount,
    work: u128,
    receipts: &mut [CertReceipt],
) -> Result<Amount, BlockError> {
    if reward == Amount::ZERO || work == 0 {
        return Ok(reward);
    }
    let (pool_o, pool_e, _) = economics::split_reward(reward);
    let mut paid = Amount::ZERO;
    let overflow = || BlockError::Overflow("reward");
    for r in receipts.iter_mut().filter(|r| r.increment > 0) {
        let o = pool_o.mul_div(r.increment, work).ok_or_else(overflow)?;
        s.credit(r.optimizer, o).ok_or_else(overflow)?;
        r.optimizer_reward = o;
        paid = paid.checked_add(o).ok_or_else(overflow)?;
        let e = pool_e.mul_div(r.increment, work).ok_or_else(overflow)?;
        if !r.agreeing.is_empty() {
            let each = Amount(e.0 / r.agreeing.len() as u128);
            for a in r.agreeing.clone() {
                s.credit(a, each).ok_or_else(overflow)?;
                r.evaluator_rewards.push((a, each));
                paid = paid.checked_add(each).ok_or_else(overflow)?;
            }
        }
    }
    reward.checked_sub(paid).ok_or_else(overflow)
}
