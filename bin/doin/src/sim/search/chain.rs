//! Claims on the simulated chain (`--claims chain`): what the node does with a claim, run by the
//! node's own sans-I/O cores over the simulated network. An optimizer's report is judged by its
//! node's own claims (`doin_node::own_claims`: a signed commit against its tip's champion);
//! the commit reaches every staked node, whose block producer (`doin_node::production`)
//! includes it when it leads the seal slot and seals it with the block after; once the
//! optimizer's own tip has it sealed, its reveal goes out; every evaluator node runs the node's
//! verification pipeline (`doin_node::verification`): it considers the reveal on its own tip,
//! measures it when it is a member of the quorum the sealing block's beacon drew, on its seed
//! group's data, signs and gossips its vote, tallies every vote, escalates, and hands the
//! certificate to its producer; the block that carries it is applied by the consensus rules
//! like any other, and optimizers take the chain's champion in from their own tips.
//!
//! Messages other than blocks cross the mesh as one delay (a link latency times about
//! log_D(N) hops); a message to a node that is down is lost.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use doin_consensus::{State, StateKey};
use doin_node::{
    optimizer::Found,
    own_claims::{Decision, Judge, Standing},
    production::{Production, ReadyCert},
    tally,
    verification::{Considered, Evaluation, Verdict, Verification},
};
use doin_optimize::{Evaluated, domain::Measurement};
use doin_primitives::{
    Block, BoundedVec, Commit, DomainId, Hash, Outcome, Reveal, Signed, Vote, VoteBody, poo,
};

use super::{Search, opt_address};
use crate::sim::Sim;

/// A commit reaches a staked node: `a` the commit, `b` the node.
pub(crate) const COMMIT_AT: u8 = 10;
/// A reveal reaches an evaluator node: `a` the reveal, `b` the node.
pub(crate) const REVEAL_AT: u8 = 11;
/// An evaluator node finished measuring: `a` the evaluation.
pub(crate) const MEASURED: u8 = 12;
/// A vote reaches an evaluator node: `a` the vote, `b` the node.
pub(crate) const VOTE_AT: u8 = 13;
/// An evaluator node looks at its claims whose votes may be overdue: `a` the node.
pub(crate) const DUE: u8 = 14;

/// Grace before a producer that does not lead the seal slot carries a certificate (the node's
/// `OTHERS_GRACE`).
const OTHERS_GRACE: Duration = Duration::from_millis(1500);

/// A claim's point, by commit: who claimed it, where, and whether the figure was made up.
struct Point {
    opt: usize,
    x: Vec<f64>,
    fake: bool,
}

/// The claims' messages on the wire and each node's pipeline state.
pub(crate) struct Chain {
    domain_id: DomainId,
    commits: Vec<Commit>,
    reveals: Vec<Reveal>,
    votes: Vec<Vote>,
    evals: Vec<(usize, Evaluation)>,
    points: std::collections::HashMap<Hash, Point>,
    /// The evaluator nodes' verification pipelines (node `i` for `i < producers`).
    verifiers: Vec<Verification>,
    /// Certificates counted (once, whichever branch carried them first), and escalated
    /// commits.
    counted: HashSet<Hash>,
    escalated: HashSet<Hash>,
    /// Commits some block included (once each).
    included: HashSet<Hash>,
    /// The parameter sets revealed so far (by hash): what an optimizer node's intake knows is
    /// taken (first revealer wins, so a commit of them would never be evaluated).
    revealed: HashSet<Hash>,
    /// The node's claim deadline.
    deadline: Duration,
    /// Staked nodes (producers, then optimizers).
    staked: usize,
}

impl Chain {
    pub(crate) fn new(
        domain_id: DomainId,
        evaluators: &[doin_primitives::Address],
        staked: usize,
        block_interval: Duration,
        s: &Search,
    ) -> Self {
        let timeout = s.quorum_timeout();
        Self {
            domain_id,
            commits: Vec::new(),
            reveals: Vec::new(),
            votes: Vec::new(),
            evals: Vec::new(),
            points: std::collections::HashMap::new(),
            verifiers: evaluators.iter().map(|a| Verification::new(*a, timeout, 256)).collect(),
            counted: HashSet::new(),
            included: HashSet::new(),
            revealed: HashSet::new(),
            escalated: HashSet::new(),
            deadline: 2 * (timeout + block_interval),
            staked,
        }
    }
}

fn certified_on(state: &State, id: &Hash) -> bool {
    state.record(&StateKey::Certified(*id)).is_some()
}

/// Whether a certificate for a commit waits in `production` or landed on `state`'s chain.
fn landed<'a>(production: &'a Production, state: &'a State) -> impl Fn(&Hash) -> bool + 'a {
    move |id| production.has_cert(id) || certified_on(state, id)
}

impl Sim {
    fn instant(&self, now: u64) -> Instant {
        self.epoch + Duration::from_millis(now)
    }

    /// One message's way across the mesh.
    fn hop_ms(&mut self) -> u64 {
        self.search.as_ref().map_or(0, |s| s.hop(&mut self.rng))
    }

    /// Optimizers that asked to claim (after an evaluation) claim through their nodes' own
    /// claims, one claim in flight each.
    pub(crate) fn chain_claims(&mut self, now: u64) {
        let Some(s) = self.search.as_mut() else { return };
        let wanted = std::mem::take(&mut s.wanted);
        for i in wanted {
            self.chain_claim(now, i);
        }
    }

    fn chain_claim(&mut self, now: u64, i: usize) {
        let at = self.instant(now);
        let Some(s) = self.search.as_mut() else { return };
        let Some(chain) = s.chain.as_ref() else { return };
        let (domain_id, deadline, staked) = (chain.domain_id.clone(), chain.deadline, chain.staked);
        let node = s.opts[i].node;
        if !self.nodes[node].up {
            return;
        }
        // Claims unsettled past the deadline (lost, or never sealed) stop barring: given up.
        let expired = s.opts[i].own.expire(at, deadline);
        s.figures.undecided += expired.len() as u64;
        if s.opts[i].own.pending().next().is_some() {
            return;
        }
        let state = &self.blocks[self.nodes[node].tip].state;
        let (x, performance, fake) = if s.opts[i].liar {
            // A made-up figure far better than the chain's champion, for a random point.
            let d = s.domain.space().len();
            let x: Vec<f64> = (0..d).map(|_| self.rng.unit()).collect();
            let champion = state
                .domain(&domain_id)
                .and_then(|d| d.champion.as_ref())
                .map_or(s.spec.baseline, |c| c.performance);
            (x, s.performance_of(s.loss_of(champion) / 10.0), true)
        } else {
            let Some((_, x, metric)) = s.opts[i].unclaimed.clone() else { return };
            (x, metric.to_f64(), false)
        };
        let values = s.domain.space().decode(&x);
        let params = BoundedVec::try_from_vec(s.domain.space().to_params(&values)).ok();
        let mut salt = [0u8; 32];
        for chunk in salt.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next().to_le_bytes());
        }
        let found = Found {
            domain: s.args.domain.clone(),
            values,
            measurement: Measurement { performance, metrics: Default::default() },
            evaluations: s.figures.evaluations,
            artifact: None,
        };
        let judge = Judge {
            state,
            key: &self.keys[node],
            domain: &domain_id,
            params,
            experiment: poo::ExperimentMeta::default(),
            salt,
            taken: &|h| s.chain.as_ref().is_some_and(|c| c.revealed.contains(h)),
            standing: &|_| Standing::Clear,
            hold_cap: Duration::ZERO,
        };
        let decision = s.opts[i].own.judge(found, None, judge, at);
        // Committed or settled (no gain on the tip's champion, or parameters taken), the
        // report is done with, as the node's loop is told.
        if !fake {
            s.opts[i].unclaimed = None;
        }
        let Decision::Committed { commit, .. } = decision else { return };
        s.figures.claims += 1;
        s.figures.fake_claims += u64::from(fake);
        let Some(chain) = s.chain.as_mut() else { return };
        chain.points.insert(commit.id(), Point { opt: i, x, fake });
        let c = chain.commits.len() as u32;
        chain.commits.push(*commit);
        for m in 0..staked {
            let delay = if m == node { 0 } else { self.hop_ms() };
            self.push(now + delay, COMMIT_AT, c, m as u32);
        }
    }

    /// A chain-claim event (kinds [`COMMIT_AT`] … [`DUE`]).
    pub(crate) fn chain_event(&mut self, now: u64, kind: u8, a: usize, b: usize) {
        match kind {
            COMMIT_AT => self.commit_at(now, a, b),
            REVEAL_AT => self.reveal_at(now, a, b),
            MEASURED => self.measured(now, a),
            VOTE_AT => self.vote_at(now, a, b),
            _ => self.due(now, a),
        }
    }

    fn commit_at(&mut self, now: u64, c: usize, m: usize) {
        if !self.nodes[m].up {
            return;
        }
        let at = self.instant(now);
        let Some(chain) = self.search.as_mut().and_then(|s| s.chain.as_mut()) else { return };
        let commit = chain.commits[c].clone();
        let id = commit.id();
        let settled = chain.verifiers.get(m).is_some_and(|v| v.intake().is_settled(&id));
        self.nodes[m].production.pool_commit(&commit, at, settled);
        let Some(v) = chain.verifiers.get_mut(m) else { return };
        if let Some(Some(_)) = v.commit(commit, at) {
            self.consider(now, m, id);
        }
    }

    fn reveal_at(&mut self, now: u64, r: usize, m: usize) {
        if !self.nodes[m].up {
            return;
        }
        let at = self.instant(now);
        let Some(chain) = self.search.as_mut().and_then(|s| s.chain.as_mut()) else { return };
        let reveal = chain.reveals[r].clone();
        let id = reveal.body.commit;
        if chain.verifiers[m].reveal(reveal, at) == doin_node::intake::RevealIn::Ready {
            self.consider(now, m, id);
        }
    }

    /// Evaluator `m` considers `id`'s reveal on its tip, measures it if it is a member, and
    /// looks again once the first round may have timed out.
    fn consider(&mut self, now: u64, m: usize, id: Hash) {
        let Some(s) = self.search.as_mut() else { return };
        let window = tally::window(s.quorum_timeout(), &s.spec).as_millis() as u64;
        let Some(chain) = s.chain.as_mut() else { return };
        let state = &self.blocks[self.nodes[m].tip].state;
        // Anything else is looked at again on a new tip (waiting for its seal) or never
        // measured (not opening, a copy, out of bounds).
        if let Considered::Checked { evaluate } = chain.verifiers[m].consider(state, &id) {
            if evaluate {
                self.evaluate(now, m, id, 0);
            }
            self.push(now + window, DUE, m as u32, 0);
            self.certify(now, m, id);
        }
    }

    fn evaluate(&mut self, now: u64, m: usize, id: Hash, round: u8) {
        let Some(s) = self.search.as_mut() else { return };
        let eval_ms = s.args.eval_ms;
        let Some(chain) = s.chain.as_mut() else { return };
        let state = &self.blocks[self.nodes[m].tip].state;
        let Some(e) = chain.verifiers[m].evaluation(state, &id, round) else { return };
        let k = chain.evals.len() as u32;
        chain.evals.push((m, e));
        self.push(now + eval_ms, MEASURED, k, 0);
    }

    /// Evaluation `k` is done: its node signs its vote and gossips it (lost if it is down).
    fn measured(&mut self, now: u64, k: usize) {
        let Some(s) = self.search.as_mut() else { return };
        let Some(chain) = s.chain.as_ref() else { return };
        let (m, e) = &chain.evals[k];
        let m = *m;
        if !self.nodes[m].up {
            return;
        }
        let measured = if s.rubber_stamp {
            Some(e.commit.body.claimed)
        } else {
            super::measure(s.domain.as_ref(), &s.domain.space().from_params(&e.params), Some(&e.seed))
                .map(|(_, m)| m)
        };
        s.figures.verify_evaluations += 1;
        let Some(measured) = measured else { return };
        let body = VoteBody {
            commit: e.commit.id(),
            evaluator: self.keys[m].address(),
            round: e.round,
            measured,
            data_hash: Hash::of(&e.seed.0),
            artifact_measured: None,
        };
        let vote = Signed::sign(body, &self.keys[m]);
        let Some(chain) = self.search.as_mut().and_then(|s| s.chain.as_mut()) else { return };
        let v = chain.votes.len() as u32;
        chain.votes.push(vote);
        let evaluators = chain.verifiers.len();
        for n in 0..evaluators {
            let delay = if n == m { 0 } else { self.hop_ms() };
            self.push(now + delay, VOTE_AT, v, n as u32);
        }
    }

    fn vote_at(&mut self, now: u64, v: usize, m: usize) {
        if !self.nodes[m].up {
            return;
        }
        let at = self.instant(now);
        let Some(s) = self.search.as_mut() else { return };
        let timeout = s.quorum_timeout().as_millis() as u64;
        let Some(chain) = s.chain.as_mut() else { return };
        let vote = chain.votes[v].clone();
        let id = vote.body.commit;
        if chain.verifiers[m].vote(vote, at) {
            self.push(now + timeout, DUE, m as u32, 0);
            self.certify(now, m, id);
        }
    }

    /// Evaluator `m`'s claims whose first round may have timed out.
    fn due(&mut self, now: u64, m: usize) {
        if !self.nodes[m].up {
            return;
        }
        let at = self.instant(now);
        let Some(chain) = self.search.as_mut().and_then(|s| s.chain.as_mut()) else { return };
        let state = &self.blocks[self.nodes[m].tip].state;
        let landed = landed(&self.nodes[m].production, state);
        let due = chain.verifiers[m].due(state, false, at, landed, std::iter::empty());
        for id in due {
            self.certify(now, m, id);
        }
    }

    /// Evaluator `m` tries to certify `id` ([`Verification::certify`]).
    fn certify(&mut self, now: u64, m: usize, id: Hash) {
        let at = self.instant(now);
        let Some(chain) = self.search.as_mut().and_then(|s| s.chain.as_mut()) else { return };
        let state = &self.blocks[self.nodes[m].tip].state;
        let verdict = chain.verifiers[m].certify(state, &id, at, landed(&self.nodes[m].production, state));
        match verdict {
            Verdict::Certified { cert, median } => {
                let ready = ReadyCert { cert, ready_at: at + OTHERS_GRACE, median };
                self.nodes[m].production.add_cert(id, ready);
            }
            Verdict::Trusted { cert } => {
                let median = cert.commit.body.claimed;
                self.nodes[m].production.add_cert(id, ReadyCert { cert, ready_at: at, median });
            }
            Verdict::Escalated { evaluate, .. } => {
                chain.escalated.insert(id);
                if evaluate {
                    self.evaluate(now, m, id, 1);
                }
            }
            // An escalation that can no longer decide: its optimizer gives the claim up at its
            // deadline (the members here do nothing more for it).
            Verdict::Undecidable | Verdict::Wait => {}
        }
    }

    /// Commits a producer forgot (their certificates landed, or were refused for good).
    pub(crate) fn chain_forget(&mut self, n: usize, forgotten: &[Hash]) {
        if let Some(v) =
            self.search.as_mut().and_then(|s| s.chain.as_mut()).and_then(|c| c.verifiers.get_mut(n))
        {
            for id in forgotten {
                v.forget(*id);
            }
        }
    }

    /// Node `n` moved to a new tip: its producer's pool ages, its pipeline forgets what landed
    /// and looks again at reveals that waited for their seal; an optimizer's node releases its
    /// sealed reveals, settles its claims that landed, and takes a new champion in.
    pub(crate) fn chain_on_tip(&mut self, now: u64, n: usize) {
        let at = self.instant(now);
        let Some(s) = self.search.as_mut() else { return };
        let Some(chain) = s.chain.as_mut() else { return };
        if n >= chain.staked {
            return;
        }
        let state = &self.blocks[self.nodes[n].tip].state;
        self.nodes[n].production.on_tip(state, at, chain.deadline);
        let mut waiting = Vec::new();
        if let Some(v) = chain.verifiers.get_mut(n) {
            let landed: Vec<(Hash, poo::Params)> = v
                .intake()
                .reveals()
                .filter(|(id, _)| certified_on(state, id))
                .map(|(id, (r, _))| (*id, r.body.params.clone()))
                .collect();
            for (id, params) in landed {
                v.certified(id, &params);
            }
            let (alive_state, grace) = (state, chain.deadline);
            v.retain(|id, c, seen| doin_node::following::commit_alive(alive_state, id, c, seen, at, grace));
            waiting = v.take_awaiting();
        }
        let Some(i) = s.opts.iter().position(|o| o.node == n) else {
            for id in waiting {
                self.consider(now, n, id);
            }
            return;
        };
        let o = &mut s.opts[i];
        let reveals = o.own.due_reveals(state, at, chain.deadline);
        let settled: Vec<Hash> = o.own.pending().filter(|id| certified_on(state, id)).copied().collect();
        for id in settled {
            o.own.settled(&id);
        }
        // The chain's champion: a migrant for the optimizer, and the bar for its claims.
        let champion = state.domain(&chain.domain_id).and_then(|d| d.champion.clone());
        if let Some(c) = champion.filter(|c| o.chain_champion != Some(c.commit)) {
            o.chain_champion = Some(c.commit);
            if let Some(p) = chain.points.get(&c.commit) {
                let loss = super::loss_of(s.domain.as_ref(), c.performance);
                let x = s.domain.space().encode(&s.domain.space().decode(&p.x));
                o.optimizer.inject(Evaluated { x, loss });
                if p.opt != i
                    && let Some(book) = o.book.as_mut()
                {
                    let effects = book.certified(opt_address(p.opt), loss);
                    super::share::apply(o.optimizer.as_mut(), effects);
                }
            }
        }
        let evaluators = chain.verifiers.len();
        let first = chain.reveals.len() as u32;
        let count = reveals.len() as u32;
        chain.revealed.extend(reveals.iter().map(|r| doin_node::intake::params_hash(&r.body.params)));
        chain.reveals.extend(reveals);
        for r in first..first + count {
            for m in 0..evaluators {
                let delay = self.hop_ms();
                self.push(now + delay, REVEAL_AT, r, m as u32);
            }
        }
        for id in waiting {
            self.consider(now, n, id);
        }
    }

    /// A block made at `now` with state `next`: its certificates are counted (once), a fake
    /// that landed accepted is a safety violation, and the champion may be at the target.
    pub(crate) fn chain_on_block(&mut self, now: u64, block: &Block, next: &State) {
        let Some(s) = self.search.as_mut() else { return };
        let Some(chain) = s.chain.as_mut() else { return };
        chain.included.extend(block.body.commits.iter().map(|c| c.id()));
        for cert in block.body.certificates.iter() {
            let id = cert.commit.id();
            if !chain.counted.insert(id) {
                continue;
            }
            s.digest.update(&id.0);
            s.digest.update(&[u8::from(cert.outcome == Outcome::Accept)]);
            if cert.outcome != Outcome::Accept {
                s.figures.rejected += 1;
                continue;
            }
            // Accepted and the champion now (a late accept, honest but no gain, counts with
            // the rejects, as in the modelled path).
            let champion = next.domain(&chain.domain_id).and_then(|d| d.champion.as_ref()).map(|c| c.commit);
            if champion == Some(id) {
                s.figures.accepted += 1;
            } else {
                s.figures.rejected += 1;
            }
            // A lie is a claim its point does not live up to (on the noise-free figure).
            if chain.points.get(&id).is_some_and(|p| p.fake) {
                let values = s.domain.space().from_params(&cert.reveal.body.params);
                let truth = super::measure(s.domain.as_ref(), &values, None).map(|(_, m)| m);
                let claimed = cert.commit.body.claimed;
                if truth.is_none_or(|t| {
                    doin_consensus::certs::outcome(&s.spec, claimed, t) != Some(Outcome::Accept)
                }) {
                    s.figures.accepted_fakes += 1;
                }
            }
        }
        s.figures.escalations = chain.escalated.len() as u64;
        let Some(c) = next.domain(&chain.domain_id).and_then(|d| d.champion.as_ref()) else { return };
        let loss = s.loss_of(c.performance);
        if s.figures.champion_loss.is_none_or(|l| loss < l) {
            s.figures.champion_loss = Some(loss);
        }
        if loss <= s.args.target_loss && !s.done {
            s.done = true;
            s.figures.time_to_target_ms = Some(now);
            s.figures.evaluations_to_target = Some(s.figures.evaluations);
        }
    }
}

impl Chain {
    /// What went over the simulated wire and onto the chain, as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "commits": self.commits.len(),
            "commits_included": self.included.len(),
            "reveals": self.reveals.len(),
            "evaluations": self.evals.len(),
            "votes": self.votes.len(),
            "certificates": self.counted.len(),
        })
    }
}
