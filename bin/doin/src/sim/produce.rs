//! The staked nodes' part: finality votes, and blocks from the node's own producer
//! (`doin_node::production::Production`), with the slot rules checked on their own and every
//! block applied by the consensus rules.

use doin_consensus::{apply_block, heartbeat_leader, heartbeat_slot};
use doin_primitives::{BlockKind, Checkpoint, FinalityVoteBody, Signed};

use super::{Blk, Sim};

impl Sim {
    /// Staker `n`'s finality vote on its tip, if one is due (the node's `Voter`: once its chain
    /// is 2 blocks past a checkpoint, from the justified checkpoint, never twice for a target).
    /// Under the `equivocate` fault, the first 40 % of the producers vote on every producer's
    /// tip, conflicting targets included (no slashing protection).
    pub(super) fn vote(&mut self, n: usize) {
        let producers = self.args.producers.clamp(1, self.nodes.len());
        if self.args.fault.as_deref() == Some("equivocate") && n * 5 < producers * 2 {
            let mut tips: Vec<usize> = (0..producers).map(|p| self.nodes[p].tip).collect();
            tips.sort_unstable();
            tips.dedup();
            for tip in tips {
                self.vote_on(n, tip, true);
            }
            return;
        }
        self.vote_on(n, self.nodes[n].tip, false);
    }

    pub(super) fn vote_on(&mut self, n: usize, tip: usize, equivocate: bool) {
        let state = &self.blocks[tip].state;
        let Some(target) = doin_consensus::finality::checkpoint_below(state, state.height(), 2) else {
            return;
        };
        let source = state.meta().justified;
        if target == 0 || target <= source.height || (!equivocate && target <= self.nodes[n].voted) {
            return;
        }
        let Some(hash) = state.recent_hash_at(target) else { return };
        let body = FinalityVoteBody {
            chain_id: state.meta().chain_id,
            voter: self.keys[n].address(),
            source,
            target: Checkpoint { height: target, hash },
        };
        if equivocate && self.votes.iter().any(|v| v.body == body) {
            return;
        }
        self.nodes[n].voted = self.nodes[n].voted.max(target);
        if self.votes.len() >= 4096 {
            self.votes.pop_front();
        }
        self.votes.push_back(Signed::sign(body, &self.keys[n]));
    }

    /// A producer's slot timer: a heartbeat if the chain at its tip is idle long enough and it
    /// leads the slot; with claims on the chain, every half second (as the node's producer is
    /// poked), blocks that include and seal commits or carry certificates too.
    pub(super) fn tick(&mut self, now: u64, n: usize) {
        let chain = self.search.as_ref().is_some_and(|s| s.chain.is_some());
        let slot_ms = if chain { 500 } else { self.blocks[0].state.params().heartbeat_slot_ms.max(1) };
        self.push(now + slot_ms, 1, n as u32, 0);
        if !self.nodes[n].up {
            return;
        }
        self.vote(n);
        let tip = self.nodes[n].tip;
        let ts = (self.genesis_ms + now).saturating_add_signed(self.nodes[n].skew_ms);
        let idle = {
            let state = &self.blocks[tip].state;
            ts >= state.meta().timestamp_ms + state.params().max_block_interval_ms
        };
        if !idle && !chain {
            return;
        }
        let state = &self.blocks[tip].state;
        // The node's own producer decides and builds; the slot rules, checked here on their
        // own, say whether it had to.
        let leads = idle
            && heartbeat_slot(state, ts)
                .is_some_and(|slot| heartbeat_leader(state, slot) == Some(self.keys[n].address()));
        let instant = self.epoch + std::time::Duration::from_millis(now);
        // The `eager-producer` fault: node 0's producer believes it leads every slot (it
        // produces with the slot leader's key, as a producer with a broken slot rule would).
        let key = match heartbeat_slot(state, ts).and_then(|slot| heartbeat_leader(state, slot)) {
            Some(leader) if n == 0 && self.args.fault.as_deref() == Some("eager-producer") => {
                self.keys.iter().find(|k| k.address() == leader).unwrap_or(&self.keys[n])
            }
            _ => &self.keys[n],
        };
        let votes = self.votes.make_contiguous();
        let node = &mut self.nodes[n];
        let produced = node.production.produce(state, key, ts, instant, &mut node.mempool, votes);
        let sealing = state.meta().commits_in_tip > 0;
        let block = match produced.block {
            Some(block) => {
                let body = &block.body;
                let plain = body.commits.is_empty() && body.certificates.is_empty() && !sealing;
                if plain && !leads {
                    self.violations
                        .push(format!("node {n} produced {} out of its slot at {now} ms", block.hash()));
                    return;
                }
                if (!body.commits.is_empty() || sealing)
                    && !doin_consensus::commits::may_seal(
                        state,
                        &self.keys[n].address(),
                        ts,
                        body.commits.len(),
                    )
                {
                    self.violations.push(format!(
                        "node {n} included or sealed commits out of its seal slot at {now} ms"
                    ));
                    return;
                }
                block
            }
            None if leads && !sealing => {
                self.violations.push(format!("node {n} led its slot at {now} ms and produced nothing"));
                return;
            }
            None => {
                if chain {
                    self.chain_forget(n, &produced.forgotten);
                }
                return;
            }
        };
        // What every validator does with it.
        let next = match apply_block(state, &block) {
            Ok((next, _)) if chain || block.header.body.kind == BlockKind::Heartbeat => next,
            Ok(_) => {
                self.violations.push(format!("block {} of an idle chain is not a heartbeat", block.hash()));
                return;
            }
            Err(e) => {
                self.violations.push(format!("an honest block was refused: {e}"));
                return;
            }
        };
        if next.accounted_supply() != Some(next.meta().supply.minted.0) {
            self.violations.push(format!("coins not conserved at height {}", next.height()));
        }
        let fin = next.meta().finalized;
        if fin.height > 0 {
            match self.finalized.get(&fin.height) {
                Some(h) if *h != fin.hash => {
                    self.violations.push(format!("conflicting finalized blocks at height {}", fin.height));
                }
                _ => {
                    self.finalized.insert(fin.height, fin.hash);
                }
            }
        }
        self.lags.push(next.height().saturating_sub(fin.height));
        if chain {
            self.chain_forget(n, &produced.forgotten);
            self.chain_on_block(now, &block, &next);
        }
        let hash = block.hash();
        let b = self.blocks.len();
        self.index.insert(hash, b);
        self.blocks.push(Blk {
            hash,
            parent: tip,
            height: block.header.body.height,
            work: block.header.body.cumulative_work,
            produced_ms: now,
            state: next,
        });
        self.receive(now, n, b, None);
    }
}
