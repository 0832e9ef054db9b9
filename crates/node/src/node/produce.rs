//! Block production: pooled commits, certificates and transactions into work, seal and
//! heartbeat blocks, dropping what the rules refuse.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Keeps a commit (admitted by the gossip checks, or ours) for inclusion in our blocks.
    pub(super) fn pool_commit(&mut self, commit: &Commit) {
        if self.commit_pool.len() < MAX_PENDING && !self.intake.is_settled(&commit.id()) {
            self.commit_pool.entry(commit.id()).or_insert_with(|| (commit.clone(), Instant::now()));
        }
    }

    /// Pooled commits our next block may include: valid against `state`, at most
    /// `max_block_commits`, `max_account_commits` per optimizer, in id order.
    pub(super) fn includable_commits(&mut self, state: &State) -> Vec<Commit> {
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
                // we may reorg to): kept until `on_tip` ages it out.
                Err(doin_consensus::CertError::Reference(_)) => {}
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

    /// Produces a block when this node may: a work block from ready certificates; as the seal
    /// leader of the current slot, a block that includes pooled commits or seals the tip's; or
    /// a heartbeat when it leads an idle chain's slot.
    pub(super) async fn produce(&mut self) {
        let state = self.tip_state();
        let now = Instant::now();
        {
            let s = self.store.lock();
            self.certs.retain(|id, _| s.certificate_location(id).ok().flatten().is_none());
        }
        let ts = now_ms().max(state.meta().timestamp_ms + 1);
        // The seal leader of this slot: the only one who may include commits, or produce the
        // block after a block that included some (which it does at once). It produces only in
        // the first half of its slot, so that its block reaches the next slot's leader before
        // that one starts: leaders producing at a slot's boundary forked the chain, and a commit
        // included on both branches at different heights drew two different quorums.
        let slot_ms = state.params().seal_slot_ms.max(1);
        let early = ts.saturating_sub(state.meta().timestamp_ms + 1) % slot_ms < slot_ms.div_ceil(2);
        let seal_leader = early
            && commits::seal_slot(&state, ts)
                .is_some_and(|slot| commits::seal_leader(&state, slot).is_none_or(|l| l == self.me));
        let sealing = state.meta().commits_in_tip > 0;
        if sealing && !seal_leader {
            return;
        }
        let mut commits = if seal_leader { self.includable_commits(&state) } else { Vec::new() };
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
        let mut txs = self.mempool.select(&state, (state.params().max_block_txs as usize).min(1000));
        if !ready.is_empty()
            && let Some(block) = self.build(&state, ts, BlockKind::Work, &mut txs, &mut ready, &mut commits)
        {
            self.import_and_announce(block).await;
            return;
        }
        // Rejects, trusted-domain accepts and late accepts (honest, but no gain over the champion)
        // add no work: a heartbeat carries them, so penalties, unverified champions and returned
        // bonds land while nothing verified improves.
        let mut zero_work: Vec<Hash> = ready
            .iter()
            .filter(|id| self.certs.get(*id).is_some_and(|c| adds_no_work(&state, c)))
            .copied()
            .collect();
        let seal_block = seal_leader && (sealing || !commits.is_empty());
        if !seal_block {
            // Heartbeat by the slot leader once the chain has been idle long enough.
            if ts < state.meta().timestamp_ms + state.params().max_block_interval_ms {
                return;
            }
            let Some(slot) = heartbeat_slot(&state, ts) else { return };
            if heartbeat_leader(&state, slot).is_some_and(|l| l != self.me) {
                return;
            }
        }
        let carried = !zero_work.is_empty();
        let mut block = self.build(&state, ts, BlockKind::Heartbeat, &mut txs, &mut zero_work, &mut commits);
        if block.is_none() && carried {
            // Whatever the rules found wrong with carrying them, the block itself must land.
            block = self.build(&state, ts, BlockKind::Heartbeat, &mut txs, &mut Vec::new(), &mut commits);
        }
        if let Some(block) = block {
            self.import_and_announce(block).await;
        }
    }

    /// Builds a block of `kind` with transactions `txs`, the certificates `certs` names and
    /// `commits`, dropping (from the pools, too) whichever item the rules refuse, up to 8 tries.
    /// `None` when no block can be built now (for work blocks: the certificates do not reach
    /// the threshold).
    pub(super) fn build(
        &mut self,
        state: &State,
        timestamp_ms: u64,
        kind: BlockKind,
        txs: &mut Vec<Transaction>,
        certs: &mut Vec<Hash>,
        commits: &mut Vec<Commit>,
    ) -> Option<Block> {
        let max_votes = doin_primitives::finality::MAX_BLOCK_FINALITY_VOTES;
        let mut finality_votes =
            doin_consensus::finality::includable(state, &self.gossip.finality_votes(), max_votes);
        for _ in 0..8 {
            let finality_evidence: Vec<FinalityEvidence> = self
                .finality_evidence
                .iter()
                .filter(|e| doin_consensus::finality::check_evidence(state, e).is_ok())
                .cloned()
                .collect();
            let evidence: Vec<DoubleVoteEvidence> = self
                .evidence
                .iter()
                .filter(|e| doin_consensus::certs::check_evidence(state, e).is_ok())
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
            match build_block(state, BlockTemplate { key: &self.key, timestamp_ms, kind, body }) {
                Ok((block, _, _)) => return Some(block),
                Err(BlockError::Certificate { index, source, .. }) if index < certs.len() => {
                    let id = certs.remove(index);
                    self.certs.remove(&id);
                    if refused_for_good(&source) {
                        // Parameters taken, commit certified, …: forget the commit, or the
                        // next tick would assemble it again.
                        tracing::info!(commit = %id, error = %source, "certificate dropped");
                        self.forget(id);
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
                    self.mempool.remove(&txs.remove(index).id());
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
                    return None;
                }
            }
        }
        None
    }
}
