//! Block production as a sans-I/O state machine: what this node may put in its next block (the
//! commits it pooled, the certificates it assembled, slashing evidence) and whether it may
//! produce one now — as the seal leader of the slot, with ready certificates, or as the
//! heartbeat leader of an idle chain. The chain state, the time and the node's key in; a block
//! (or none) and the commits whose certificates can never land out. No store, clock or network
//! inside: the engine (`node/produce.rs`) imports and announces what comes out, and `doin sim`
//! runs the same code for its producers.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use doin_consensus::{BlockError, BlockTemplate, CertError, State, build_block, certs, commits};
use doin_primitives::{
    Address, Block, BlockBody, BlockKind, BoundedVec, Certificate, Commit, DoubleVoteEvidence,
    FinalityEvidence, FinalityVote, Hash, Keypair, Metric, Outcome, Transaction,
};

use crate::mempool::Mempool;

/// A certificate assembled here, waiting for a block.
#[derive(Clone, Debug)]
pub struct ReadyCert {
    /// The certificate.
    pub cert: Certificate,
    /// When a producer that does not lead the seal slot may carry it (the leader carries it
    /// at once).
    pub ready_at: Instant,
    /// The decisive median (trusted domains: the claim).
    pub median: Metric,
}

/// What a production step made.
#[derive(Debug, Default)]
pub struct Produced {
    /// The block, if this node may produce one now and one could be built.
    pub block: Option<Block>,
    /// Commits whose certificates were refused for good (parameters taken, commit certified
    /// already, …): the pipeline forgets them, or the next step would assemble them again.
    pub forgotten: Vec<Hash>,
}

/// The pools a producer draws from, bounded.
#[derive(Debug)]
pub struct Production {
    /// Commits to include when this node leads a seal slot, with when each arrived; a full
    /// pool refuses newcomers rather than evicting.
    commit_pool: BTreeMap<Hash, (Commit, Instant)>,
    certs: HashMap<Hash, ReadyCert>,
    evidence: Vec<DoubleVoteEvidence>,
    finality_evidence: Vec<FinalityEvidence>,
    max_pending: usize,
}

/// Tries at building one block, each dropping what the rules refused.
const BUILD_TRIES: usize = 8;

impl Production {
    /// Empty pools, at most `max_pending` commits and as many certificates.
    pub fn new(max_pending: usize) -> Self {
        Self {
            commit_pool: BTreeMap::new(),
            certs: HashMap::new(),
            evidence: Vec::new(),
            finality_evidence: Vec::new(),
            max_pending,
        }
    }

    /// Keeps a commit (admitted by the gossip checks, or ours) for inclusion; `settled`
    /// commits (certified or refused for good) are not kept.
    pub fn pool_commit(&mut self, commit: &Commit, now: Instant, settled: bool) {
        if self.commit_pool.len() < self.max_pending && !settled {
            self.commit_pool.entry(commit.id()).or_insert_with(|| (commit.clone(), now));
        }
    }

    /// A pooled commit (to rebuild compact blocks).
    pub fn pooled_commit(&self, id: &Hash) -> Option<&Commit> {
        self.commit_pool.get(id).map(|(c, _)| c)
    }

    /// Commits pooled.
    pub fn pooled_commits(&self) -> usize {
        self.commit_pool.len()
    }

    /// Keeps a certificate assembled here (one per commit; a newer one replaces the older). A
    /// full pool refuses certificates for other commits: their claims escalate or time out.
    pub fn add_cert(&mut self, commit: Hash, cert: ReadyCert) {
        if self.certs.len() < self.max_pending || self.certs.contains_key(&commit) {
            self.certs.insert(commit, cert);
        }
    }

    /// The certificate assembled for `commit`, if any.
    pub fn cert(&self, commit: &Hash) -> Option<&ReadyCert> {
        self.certs.get(commit)
    }

    /// Whether a certificate for `commit` waits here.
    pub fn has_cert(&self, commit: &Hash) -> bool {
        self.certs.contains_key(commit)
    }

    /// The certificates waiting.
    pub fn certs(&self) -> impl Iterator<Item = &ReadyCert> {
        self.certs.values()
    }

    /// Keeps only the certificates `keep` says yes to.
    pub fn retain_certs(&mut self, mut keep: impl FnMut(&ReadyCert) -> bool) {
        self.certs.retain(|_, c| keep(c));
    }

    /// Double-vote evidence to include (one per offence, bounded by what a block carries).
    pub fn add_evidence(&mut self, evidence: DoubleVoteEvidence) {
        let id = evidence.id();
        if self.evidence.len() < doin_primitives::block::MAX_BLOCK_EVIDENCE
            && !self.evidence.iter().any(|e| e.id() == id)
        {
            self.evidence.push(evidence);
        }
    }

    /// Conflicting finality votes to include (one per offence, bounded like a block).
    pub fn add_finality_evidence(&mut self, evidence: FinalityEvidence) {
        let offence = evidence.offence();
        if self.finality_evidence.len() < doin_primitives::finality::MAX_BLOCK_FINALITY_EVIDENCE
            && !self.finality_evidence.iter().any(|e| e.offence() == offence)
        {
            self.finality_evidence.push(evidence);
        }
    }

    /// Evidence of both kinds waiting for a block.
    pub fn evidence_pending(&self) -> usize {
        self.evidence.len() + self.finality_evidence.len()
    }

    /// A new tip: evidence the chain used (or can no longer use) leaves; pooled commits leave
    /// once certified, or once they can never be included (reference older than the window; a
    /// reference not on this chain, after `grace`: it may be a block still on its way). An included commit stays
    /// while its reference is recent: a reorg to a branch without its block must find it
    /// pooled again (dropped at inclusion, the optimizer's claim was lost to every reorg).
    pub fn on_tip(&mut self, state: &State, now: Instant, grace: std::time::Duration) {
        self.evidence.retain(|e| certs::check_evidence(state, e).is_ok());
        self.finality_evidence.retain(|e| doin_consensus::finality::check_evidence(state, e).is_ok());
        let (window, height) = (state.params().max_reference_age, state.height());
        self.commit_pool.retain(|id, (c, at)| {
            state.record(&doin_consensus::StateKey::Certified(*id)).is_none()
                && match state.recent_block(&c.body.reference_block) {
                    Some(r) => height.saturating_sub(r.height) < window,
                    None => now.saturating_duration_since(*at) < grace,
                }
        });
    }

    /// Pooled commits the next block may include: valid against `state`, at most
    /// `max_block_commits`, `max_account_commits` per optimizer, in id order. Those the rules
    /// refuse for good leave the pool; those whose reference is not on this chain stay.
    pub fn includable_commits(&mut self, state: &State) -> Vec<Commit> {
        let p = state.params();
        let mut refused = Vec::new();
        let mut per_account: HashMap<Address, u32> = HashMap::new();
        let mut out = Vec::new();
        for (id, (c, _)) in &self.commit_pool {
            if out.len() >= p.max_block_commits as usize {
                break;
            }
            match commits::check_commit(state, c) {
                Ok(()) => {
                    let n = per_account.entry(c.body.optimizer).or_default();
                    if *n < p.max_account_commits {
                        *n += 1;
                        out.push(c.clone());
                    }
                }
                // A reference not on our chain may be a block still on its way (or on a fork
                // we may reorg to), and a commit this chain includes may be needed again after
                // a reorg: kept until `on_tip` ages them out.
                Err(CertError::Reference(_) | CertError::Duplicate("commit already included")) => {}
                Err(e) => {
                    tracing::debug!(commit = %id, error = %e, "pooled commit cannot be included; dropped");
                    refused.push(*id);
                }
            }
        }
        for id in refused {
            self.commit_pool.remove(&id);
        }
        out
    }

    /// One production step at block timestamp `ts` (ms; after the tip's) and instant `now`:
    /// a work block from ready certificates; as the seal leader of the current slot, a block
    /// that includes pooled commits or seals the tip's; or a heartbeat when this node leads an
    /// idle chain's slot. Transactions come from `mempool` (refused ones leave it), finality
    /// votes from `votes` (what the consensus inclusion rule takes).
    pub fn produce(
        &mut self,
        state: &State,
        key: &Keypair,
        ts: u64,
        now: Instant,
        mempool: &mut Mempool,
        votes: &[FinalityVote],
    ) -> Produced {
        let me = key.address();
        let mut out = Produced::default();
        // Certificates this chain has landed are done with (the pipeline forgets them).
        self.certs.retain(|id, _| {
            let landed = state.record(&doin_consensus::StateKey::Certified(*id)).is_some();
            if landed {
                out.forgotten.push(*id);
            }
            !landed
        });
        // The seal leader of this slot: the only one who may include commits, or produce the
        // block after a block that included some (which it does at once). It produces only in
        // the first half of its slot, so that its block reaches the next slot's leader before
        // that one starts: leaders producing at a slot's boundary forked the chain, and a commit
        // included on both branches at different heights drew two different quorums.
        let slot_ms = state.params().seal_slot_ms.max(1);
        let early = ts.saturating_sub(state.meta().timestamp_ms + 1) % slot_ms < slot_ms.div_ceil(2);
        let seal_leader = early
            && commits::seal_slot(state, ts)
                .is_some_and(|slot| commits::seal_leader(state, slot).is_none_or(|l| l == me));
        let sealing = state.meta().commits_in_tip > 0;
        if sealing && !seal_leader {
            return out;
        }
        let mut commits = if seal_leader { self.includable_commits(state) } else { Vec::new() };
        // Oldest first: when more are ready than a block carries, certificates assembled earlier
        // (originals before any later copy of their parameters) go first. The seal leader
        // carries every certificate it holds: nobody else may produce now.
        let mut ready: Vec<(Instant, Hash)> = self
            .certs
            .iter()
            .filter(|(_, c)| seal_leader || c.ready_at <= now)
            .map(|(k, c)| (c.ready_at, *k))
            .collect();
        ready.sort();
        let mut ready: Vec<Hash> = ready.into_iter().map(|(_, k)| k).collect();
        ready.truncate(state.params().max_block_certs as usize);
        let mut txs = mempool.select(state, (state.params().max_block_txs as usize).min(1000));
        if !ready.is_empty() {
            let work = self.build(
                state,
                key,
                ts,
                BlockKind::Work,
                (&mut txs, &mut ready, &mut commits),
                votes,
                mempool,
            );
            out.forgotten.extend(work.forgotten);
            if work.block.is_some() {
                out.block = work.block;
                return out;
            }
        }
        // Rejects, trusted-domain accepts and late accepts (honest, but no gain over the champion)
        // add no work: a heartbeat carries them, so penalties, unverified champions and returned
        // bonds land while nothing verified improves.
        let mut zero_work: Vec<Hash> = ready
            .iter()
            .filter(|id| self.certs.get(*id).is_some_and(|c| adds_no_work(state, c)))
            .copied()
            .collect();
        let seal_block = seal_leader && (sealing || !commits.is_empty());
        if !seal_block && !leads_idle_slot(state, ts, &me) {
            return out;
        }
        let carried = !zero_work.is_empty();
        let mut built = self.build(
            state,
            key,
            ts,
            BlockKind::Heartbeat,
            (&mut txs, &mut zero_work, &mut commits),
            votes,
            mempool,
        );
        if built.block.is_none() && carried {
            // Whatever the rules found wrong with carrying them, the block itself must land.
            out.forgotten.append(&mut built.forgotten);
            built = self.build(
                state,
                key,
                ts,
                BlockKind::Heartbeat,
                (&mut txs, &mut Vec::new(), &mut commits),
                votes,
                mempool,
            );
        }
        out.forgotten.append(&mut built.forgotten);
        out.block = built.block;
        out
    }

    /// Builds a block of `kind` with the transactions, the certificates named and the commits
    /// in `items`, dropping (from the pools, too) whichever item the rules refuse, up to
    /// [`BUILD_TRIES`] tries. No block when none can be built now (for work blocks: the
    /// certificates do not reach the threshold).
    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        state: &State,
        key: &Keypair,
        timestamp_ms: u64,
        kind: BlockKind,
        (txs, certs, commits): (&mut Vec<Transaction>, &mut Vec<Hash>, &mut Vec<Commit>),
        votes: &[FinalityVote],
        mempool: &mut Mempool,
    ) -> Produced {
        let mut out = Produced::default();
        let max_votes = doin_primitives::finality::MAX_BLOCK_FINALITY_VOTES;
        let mut finality_votes = doin_consensus::finality::includable(state, votes, max_votes);
        for _ in 0..BUILD_TRIES {
            let finality_evidence: Vec<FinalityEvidence> = self
                .finality_evidence
                .iter()
                .filter(|e| doin_consensus::finality::check_evidence(state, e).is_ok())
                .cloned()
                .collect();
            let evidence: Vec<DoubleVoteEvidence> = self
                .evidence
                .iter()
                .filter(|e| certs::check_evidence(state, e).is_ok())
                .take(doin_primitives::block::MAX_BLOCK_EVIDENCE)
                .cloned()
                .collect();
            let evidence_ids: Vec<Hash> = evidence.iter().map(DoubleVoteEvidence::id).collect();
            let body = BlockBody {
                transactions: BoundedVec::try_from_vec(txs.clone()).unwrap_or_default(),
                certificates: BoundedVec::try_from_vec(
                    certs.iter().filter_map(|id| self.certs.get(id).map(|c| c.cert.clone())).collect(),
                )
                .unwrap_or_default(),
                evidence: BoundedVec::try_from_vec(evidence).unwrap_or_default(),
                commits: BoundedVec::try_from_vec(commits.clone()).unwrap_or_default(),
                finality_votes: BoundedVec::try_from_vec(finality_votes.clone()).unwrap_or_default(),
                finality_evidence: BoundedVec::try_from_vec(finality_evidence.clone()).unwrap_or_default(),
            };
            match build_block(state, BlockTemplate { key, timestamp_ms, kind, body }) {
                Ok((block, _, _)) => {
                    out.block = Some(block);
                    return out;
                }
                Err(BlockError::Certificate { index, source, .. }) if index < certs.len() => {
                    let id = certs.remove(index);
                    self.certs.remove(&id);
                    if refused_for_good(&source) {
                        tracing::info!(commit = %id, error = %source, "certificate dropped");
                        out.forgotten.push(id);
                    } else {
                        // Its commit is not sealed on this chain (yet), or sealed at another
                        // height than where its votes were drawn (a reorg): assembled again
                        // from the votes of the quorum this chain draws.
                        tracing::debug!(commit = %id, error = %source, "certificate set aside");
                    }
                }
                Err(BlockError::Commit { index, source, .. }) if index < commits.len() => {
                    let c = commits.remove(index);
                    tracing::info!(commit = %c.id(), error = %source, "commit dropped");
                    self.commit_pool.remove(&c.id());
                }
                // The block's own transactions or certificates changed what the vote rests on
                // (a stake): it waits for the next block.
                Err(BlockError::FinalityVote { index, source }) if index < finality_votes.len() => {
                    tracing::debug!(error = %source, "finality vote left out");
                    finality_votes.remove(index);
                }
                Err(BlockError::FinalityEvidence { index, source }) => {
                    tracing::info!(error = %source, "finality evidence dropped");
                    if let Some(e) = finality_evidence.get(index) {
                        let offence = e.offence();
                        self.finality_evidence.retain(|x| x.offence() != offence);
                    }
                }
                Err(BlockError::Evidence { index, reason }) => {
                    tracing::info!(%reason, "evidence dropped");
                    let id = evidence_ids.get(index).copied();
                    self.evidence.retain(|e| Some(e.id()) != id);
                }
                Err(BlockError::Transaction { index, source, .. }) if index < txs.len() => {
                    tracing::info!(error = %source, "transaction dropped");
                    mempool.remove(&txs.remove(index).id());
                }
                // Too big in bytes: carry less, the rest waits for the next block.
                Err(BlockError::Limit(_)) if certs.len() + txs.len() + commits.len() > 1 => {
                    if certs.len() > 1 {
                        certs.truncate(certs.len() / 2);
                    } else if commits.len() > 1 {
                        commits.truncate(commits.len() / 2);
                    } else {
                        txs.truncate(txs.len() / 2);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?kind, "block not built");
                    return out;
                }
            }
        }
        out
    }
}

/// Whether `me` leads the heartbeat slot at `ts` of a chain idle since its tip for at least
/// `max_block_interval_ms`.
fn leads_idle_slot(state: &State, ts: u64, me: &Address) -> bool {
    if ts < state.meta().timestamp_ms + state.params().max_block_interval_ms {
        return false;
    }
    doin_consensus::heartbeat_slot(state, ts)
        .is_some_and(|slot| doin_consensus::heartbeat_leader(state, slot).is_none_or(|l| l == *me))
}

/// Whether a ready certificate adds no work on `state`: a reject, a trusted domain's accept, or
/// an accept whose median does not beat the champion by more than the acceptance tolerance
/// (consensus counts it late). Such certificates ride heartbeat blocks.
fn adds_no_work(state: &State, c: &ReadyCert) -> bool {
    let Some(d) = state.domain(&c.cert.commit.body.domain) else { return false };
    if c.cert.outcome == Outcome::Reject || d.spec.trusted() {
        return true;
    }
    let old = d.champion.as_ref().map_or(d.spec.baseline, |ch| ch.performance);
    let noise = certs::certificate_noise(&d.spec, &c.cert, c.median);
    !certs::improves(&d.spec, old, c.median, noise).unwrap_or(false)
}

/// Whether a certificate refused with `e` can never become valid (then its commit is forgotten);
/// the others depend on which chain the commit is sealed on.
fn refused_for_good(e: &CertError) -> bool {
    matches!(
        e,
        CertError::Opening(_)
            | CertError::UnknownDomain(_)
            | CertError::ParamOutOfBounds { .. }
            | CertError::ParamCount { .. }
            | CertError::Duplicate(_)
            | CertError::Overflow(_)
    )
}

#[cfg(test)]
mod tests;
