//! The verification pipeline as a sans-I/O state machine: other optimizers' commits and reveals
//! in (through the claim intake, [`crate::intake`]), what to evaluate and with which data seed
//! out; votes in (through each commit's quorum tally, [`crate::tally`]), certificates,
//! escalations and lost claims out. No clock, network, store or worker pool here: the time and
//! the tip's state are inputs; the node's shell (`node/pipeline.rs`) runs the evaluations,
//! signs and gossips the votes, prints and hands certificates to the block producer; tests and
//! the simulator feed it directly.
//!
//! The rules (DESIGN §4.1):
//! - A reveal is considered once its commit is here and sealed on this node's chain (its quorums
//!   are drawn with the sealing block's beacon), opens its commit, is the first reveal of its
//!   parameters, and lies in the domain's bounds. Otherwise it is ignored, or waits for the
//!   seal (looked at again on the next tip).
//! - A member of a round's quorum evaluates a commit once per round, on its seed group's data
//!   for that round ([`member_seed`]).
//! - Every node assembles the certificate from the votes: at once in trusted mode (the claim
//!   is the figure), when every first-round vote agrees, or by the escalation's
//!   `quorum_fraction`; a copy of parameters revealed first under another commit is never
//!   certified here.
//! - Bounded: the intake's limit for commits and reveals, as many tallies (a vote for an
//!   unknown commit past that is dropped) and evaluations in flight.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use doin_consensus::{State, certs, quorum};
use doin_primitives::{
    Address, BoundedVec, Certificate, Commit, DomainId, Hash, Metric, Outcome, Reveal, Vote, poo,
};

use crate::{
    intake::{Intake, Opening, RevealIn},
    tally::{self, Tally, Why},
};

/// The quorums of a commit sealed on `state`'s chain.
pub fn quorums_of(state: &State, commit: &Commit) -> Option<quorum::Quorums> {
    let b = &commit.body;
    quorum::quorums_for(state, &b.domain, &b.optimizer, &commit.id())
}

/// `me`'s data seed for round `round` of a commit sealed on `state`'s chain: its seed group's
/// ([`quorum::group_seed`]), if it is a member of that round's quorum.
pub fn member_seed(state: &State, commit: &Commit, round: u8, me: &Address) -> Option<Hash> {
    let id = commit.id();
    let beacon = quorum::sealed(state, &id)?.beacon;
    quorums_of(state, commit)?.seed_of(&beacon, &id, round, me)
}

/// Whether `member` is still staked as an evaluator of `domain` on `state`.
pub fn evaluates(state: &State, member: &Address, domain: &DomainId) -> bool {
    state.stake(member).is_some_and(|s| s.evaluates(domain))
}

/// Why a reveal is not evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Its commit or the reveal is not here (any more).
    Missing,
    /// Signed by another optimizer, or it does not hash to its commitment.
    NotOpening,
    /// Its parameters were revealed first under `first`.
    Copy {
        /// The first reveal's commit.
        first: Hash,
    },
    /// Its domain is not on this node's chain.
    UnknownDomain,
    /// A parameter lies outside the domain's bounds.
    OutOfBounds(String),
}

/// What considering a reveal calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Considered {
    /// Not evaluated, and never certified here.
    Ignored(Ignored),
    /// Its commit is not sealed on this node's chain yet: considered again on the next tip
    /// (`first`: it started waiting now).
    AwaitingSeal {
        /// Whether it started waiting now (false: it waited already, or too many wait).
        first: bool,
    },
    /// No staked evaluator can evaluate its domain: it cannot be verified.
    NoEvaluators,
    /// Checked: this node evaluates it when `evaluate` (a first-round member, or a trusted
    /// domain's claim needs no one), then tries to certify it.
    Checked {
        /// Whether this node is in its first-round quorum.
        evaluate: bool,
    },
}

/// An evaluation this node owes: `params` of `commit`, measured on the data of `seed`.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The commit evaluated.
    pub commit: Commit,
    /// The revealed parameters.
    pub params: poo::Params,
    /// 0: first round; 1: escalation.
    pub round: u8,
    /// This node's seed group's data seed for that round.
    pub seed: Hash,
    /// The model artifact the reveal attaches, to measure too.
    pub artifact: Option<Hash>,
}

/// What trying to certify a commit came to.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Nothing yet: votes missing, or nothing here to certify (not revealed, a copy, already
    /// certified).
    Wait,
    /// A trusted domain's claim: the certificate carries the claimed figure, no quorum.
    Trusted {
        /// The certificate.
        cert: Certificate,
    },
    /// Certified by its quorum with this `median`.
    Certified {
        /// The certificate.
        cert: Certificate,
        /// The median the quorum measured.
        median: Metric,
    },
    /// The first round escalated now (`voted` of `quorum` first-round votes in); this node
    /// evaluates for the escalation when `evaluate`.
    Escalated {
        /// Why.
        why: Why,
        /// First-round votes in.
        voted: usize,
        /// First-round members.
        quorum: usize,
        /// Whether this node is an escalation member.
        evaluate: bool,
    },
    /// Too few escalation members are left to decide: the claim is lost.
    Undecidable,
}

/// The verification pipeline's state at one node.
#[derive(Debug)]
pub struct Verification {
    me: Address,
    quorum_timeout: Duration,
    limit: usize,
    intake: Intake,
    tallies: HashMap<Hash, Tally<Vote>>,
    evaluating: HashSet<(Hash, u8)>,
}

impl Verification {
    /// The pipeline of node `me`, keeping at most `limit` commits, reveals and tallies; a
    /// first round's missing votes count as missing `quorum_timeout` after its first vote.
    pub fn new(me: Address, quorum_timeout: Duration, limit: usize) -> Self {
        Self {
            me,
            quorum_timeout,
            limit: limit.max(1),
            intake: Intake::new(limit),
            tallies: HashMap::new(),
            evaluating: HashSet::new(),
        }
    }

    /// The claim intake (commits and reveals seen).
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    /// A commit arrived at `now`. `None`: seen before or settled; otherwise the reveal that
    /// overtook it, if one did (consider it now).
    pub fn commit(&mut self, commit: Commit, now: Instant) -> Option<Option<Reveal>> {
        self.intake.commit(commit, now)
    }

    /// A reveal arrived at `now` ([`Intake::reveal`]).
    pub fn reveal(&mut self, reveal: Reveal, now: Instant) -> RevealIn {
        self.intake.reveal(reveal, now)
    }

    /// Considers `commit`'s reveal on the tip `state`.
    pub fn consider(&mut self, state: &State, commit: &Hash) -> Considered {
        match self.intake.opening(commit) {
            Opening::Missing => return Considered::Ignored(Ignored::Missing),
            Opening::NotOpening => return Considered::Ignored(Ignored::NotOpening),
            Opening::Copy { first } => return Considered::Ignored(Ignored::Copy { first }),
            Opening::Open => {}
        }
        let (Some(seen), Some((reveal, _))) = (self.intake.commit_of(commit), self.intake.reveal_of(commit))
        else {
            return Considered::Ignored(Ignored::Missing);
        };
        let Some(spec) = state.domain(&seen.commit.body.domain).map(|d| &d.spec) else {
            return Considered::Ignored(Ignored::UnknownDomain);
        };
        if let Err(e) = certs::check_params(spec, &reveal.body.params) {
            return Considered::Ignored(Ignored::OutOfBounds(e.to_string()));
        }
        if spec.trusted() {
            return Considered::Checked { evaluate: false };
        }
        let Some(q) = quorums_of(state, &seen.commit) else {
            // The optimizer reveals once its commit is sealed on its chain; the sealing block
            // may not have reached us yet (the reveal is already recorded as the first of its
            // parameters, so a copy cannot jump the queue).
            return Considered::AwaitingSeal { first: self.intake.await_seal(*commit) };
        };
        if q.first.is_empty() {
            return Considered::NoEvaluators;
        }
        Considered::Checked { evaluate: q.first.contains(&self.me) }
    }

    /// The evaluation this node owes for round `round` of `commit` on `state`, once: `None` when
    /// it is not a member of that round, its reveal is not here or does not open it (or is a
    /// copy), or it was handed out before.
    pub fn evaluation(&mut self, state: &State, commit: &Hash, round: u8) -> Option<Evaluation> {
        // Only the first reveal of its parameters, opening its commit, is ever measured.
        if self.intake.opening(commit) != Opening::Open {
            return None;
        }
        let (seen, (reveal, _)) = (self.intake.commit_of(commit)?, self.intake.reveal_of(commit)?);
        // A trusted domain's claim stands as its figure: no one measures it, quorum or not.
        if state.domain(&seen.commit.body.domain).is_none_or(|d| d.spec.trusted()) {
            return None;
        }
        let seed = member_seed(state, &seen.commit, round, &self.me)?;
        if !self.evaluating.insert((*commit, round)) {
            return None;
        }
        Some(Evaluation {
            commit: seen.commit.clone(),
            params: reveal.body.params.clone(),
            round,
            seed,
            artifact: reveal.body.artifact,
        })
    }

    /// A vote arrived at `now` (signature and membership checked by the shell's gossip
    /// admission); whether it is new. Votes for commits past the limit of tallies are dropped.
    pub fn vote(&mut self, vote: Vote, now: Instant) -> bool {
        let commit = vote.body.commit;
        if !self.tallies.contains_key(&commit) && self.tallies.len() >= self.limit {
            return false;
        }
        // A measurement of a model the reveal does not attach would make the certificate invalid
        // (consensus refuses it): such a vote is dropped, as is one with a figure for a reveal
        // not seen yet (honest members vote only after the reveal reached them).
        if vote.body.artifact_measured.is_some()
            && self.intake.reveal_of(&commit).is_none_or(|(r, _)| r.body.artifact.is_none())
        {
            return false;
        }
        let (round, evaluator, measured) = (vote.body.round, vote.body.evaluator, vote.body.measured);
        self.tallies.entry(commit).or_default().add(round, evaluator, measured, vote, now)
    }

    /// Tries to certify `commit` on the tip `state` at `now`; `landed(id)`: whether a
    /// certificate for it is already waiting to be produced or on chain (nothing to do).
    pub fn certify(
        &mut self,
        state: &State,
        commit: &Hash,
        now: Instant,
        landed: impl Fn(&Hash) -> bool,
    ) -> Verdict {
        // In-memory checks first: a reveal without its commit (anyone can gossip one) costs a
        // map lookup each time the pending reveals are looked at again.
        let (Some(seen), Some((reveal, revealed_at))) =
            (self.intake.commit_of(commit), self.intake.reveal_of(commit))
        else {
            return Verdict::Wait;
        };
        // A copy (these parameters were revealed first under another commit) is never
        // certified here, in the first round or in an escalation.
        if landed(commit) || self.intake.is_copy(commit) {
            return Verdict::Wait;
        }
        let (commit_body, revealed_at) = (&seen.commit.body, *revealed_at);
        let Some(spec) = state.domain(&commit_body.domain).map(|d| &d.spec) else { return Verdict::Wait };
        if spec.trusted() {
            let cert = Certificate {
                commit: seen.commit.clone(),
                reveal: reveal.clone(),
                votes: BoundedVec::default(),
                escalation: BoundedVec::default(),
                outcome: Outcome::Accept,
            };
            return Verdict::Trusted { cert };
        }
        let Some(q) = quorums_of(state, &seen.commit) else { return Verdict::Wait };
        let round = tally::Round {
            first: &q.first,
            escalation: &q.escalation,
            spec,
            revealed_at,
            quorum_timeout: self.quorum_timeout,
        };
        let domain = &commit_body.domain;
        let tally = self.tallies.entry(*commit).or_default();
        match tally.decide(&round, now, |a| evaluates(state, a, domain)) {
            tally::Decision::Wait => Verdict::Wait,
            tally::Decision::Escalate(why) => Verdict::Escalated {
                why,
                voted: q.first.iter().filter(|a| tally.voted(0, a)).count(),
                quorum: q.first.len(),
                evaluate: q.escalation.contains(&self.me),
            },
            tally::Decision::Undecidable => Verdict::Undecidable,
            tally::Decision::Certify { median, first, escalation } => {
                let outcome = certs::outcome(spec, commit_body.claimed, median).unwrap_or(Outcome::Reject);
                let cert = Certificate {
                    commit: seen.commit.clone(),
                    reveal: reveal.clone(),
                    votes: BoundedVec::try_from_vec(first).unwrap_or_default(),
                    escalation: BoundedVec::try_from_vec(escalation).unwrap_or_default(),
                    outcome,
                };
                Verdict::Certified { cert, median }
            }
        }
    }

    /// Whether `commit`'s escalation could no longer decide on `state` (fewer of its members
    /// have voted or are still staked evaluators of the domain than it needs; asked before an
    /// escalation too: such a claim can only be lost).
    pub fn undecidable(&self, state: &State, commit: &Hash) -> bool {
        let Some(seen) = self.intake.commit_of(commit) else { return false };
        let (Some(q), Some(spec)) =
            (quorums_of(state, &seen.commit), state.domain(&seen.commit.body.domain).map(|d| &d.spec))
        else {
            return false;
        };
        let round = tally::Round {
            first: &q.first,
            escalation: &q.escalation,
            spec,
            revealed_at: seen.at,
            quorum_timeout: self.quorum_timeout,
        };
        let domain = &seen.commit.body.domain;
        self.tallies
            .get(commit)
            .unwrap_or(&Tally::default())
            .undecidable(&round, |a| evaluates(state, a, domain))
    }

    /// Whether `commit`'s first round escalated.
    pub fn escalated(&self, commit: &Hash) -> bool {
        self.tallies.get(commit).is_some_and(Tally::escalated)
    }

    /// The commits worth trying to certify again at `now` (`recheck`: all revealed ones not
    /// escalated, as after a new tip, where a member may have left the domain's quorums;
    /// otherwise those whose first round timed out), and the escalated ones among `own`
    /// (this node's claims: lost once too few members are left). `landed` as for
    /// [`Self::certify`].
    pub fn due(
        &self,
        state: &State,
        recheck: bool,
        now: Instant,
        landed: impl Fn(&Hash) -> bool,
        own: impl Iterator<Item = Hash>,
    ) -> Vec<Hash> {
        let waiting = self.intake.reveals().filter(|(k, (_, at))| {
            let Some(seen) = self.intake.commit_of(k) else { return false };
            !landed(k)
                && !self.escalated(k)
                && (recheck
                    || state.domain(&seen.commit.body.domain).is_some_and(|d| {
                        let round = tally::Round {
                            first: &[],
                            escalation: &[],
                            spec: &d.spec,
                            revealed_at: *at,
                            quorum_timeout: self.quorum_timeout,
                        };
                        self.tallies.get(*k).unwrap_or(&Tally::default()).timed_out(&round, now)
                    }))
        });
        let mut due: Vec<Hash> = waiting.map(|(k, _)| *k).collect();
        due.extend(own.filter(|k| self.escalated(k)));
        due
    }

    /// The reveals that waited for their commit's seal (consider them again on a new tip).
    pub fn take_awaiting(&mut self) -> Vec<Hash> {
        self.intake.take_awaiting().into_iter().map(|r| r.body.commit).collect()
    }

    /// A certificate for `id` revealing `params` reached the chain: its parameters are taken
    /// and everything about it is forgotten (a late copy of its messages is not taken in).
    pub fn certified(&mut self, id: Hash, params: &poo::Params) {
        self.intake.certified(id, params);
        self.forget(id);
    }

    /// `id` is done (certified, or refused for good): forget its state and remember it settled.
    pub fn forget(&mut self, id: Hash) {
        self.tallies.remove(&id);
        self.intake.settle(id);
        self.evaluating.retain(|(k, _)| *k != id);
    }

    /// Keeps the commits `alive` says may still be certified; the rest leave with their
    /// reveals, tallies and evaluations.
    pub fn retain(&mut self, alive: impl FnMut(&Hash, &Commit, Instant) -> bool) {
        self.intake.retain(alive);
        let intake = &self.intake;
        self.tallies.retain(|k, _| intake.has_commit(k));
        self.evaluating.retain(|(k, _)| intake.has_commit(k));
    }

    /// The evaluations handed out and not forgotten (commit, round).
    pub fn evaluating(&self) -> impl Iterator<Item = &(Hash, u8)> {
        self.evaluating.iter()
    }

    /// Tallies whose first round escalated.
    pub fn escalations(&self) -> usize {
        self.tallies.values().filter(|t| t.escalated()).count()
    }
}

#[cfg(test)]
mod tests;
