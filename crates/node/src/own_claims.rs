//! This node's own claims as a sans-I/O state machine: an optimizer's report is committed, held
//! behind a better claim in verification, or settled at once; a commit's reveal waits until the
//! commit is sealed on our chain; a claim settles when its certificate lands, when its quorum
//! can no longer decide, or at the claim deadline. The chain state, the time, the node's key and
//! the salt (randomness is an input) in; commits and reveals to publish, and the domains whose
//! optimizer loops may go on, out. The engine (`node/claims.rs`) publishes and tells the loops.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use doin_consensus::{State, certs, quorum};
use doin_primitives::{
    Commit, CommitBody, DomainId, DomainSpec, Hash, Keypair, Metric, Reveal, RevealBody, Signed,
    domain::Direction, poo,
};

use crate::{intake::params_hash, optimizer::Found, tally};

/// Where a claim stands against the other claims of its domain that this node knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Nothing known beats it: commit it.
    Clear,
    /// A certificate assembled here accepts a median at least as good: it would land late.
    Beaten,
    /// Another optimizer's better claim is in verification: wait for its outcome.
    Behind,
}

/// The standing of `claimed` given the medians of accepting certificates assembled here
/// (`certified`) and the claims of other optimizers still in verification (`in_flight`).
pub fn standing(
    direction: Direction,
    claimed: Metric,
    certified: impl IntoIterator<Item = Metric>,
    in_flight: impl IntoIterator<Item = Metric>,
) -> Standing {
    if certified.into_iter().any(|m| direction.gain(m, claimed).is_some_and(|g| g >= 0)) {
        Standing::Beaten
    } else if in_flight.into_iter().any(|c| direction.gain(c, claimed).is_some_and(|g| g > 0)) {
        Standing::Behind
    } else {
        Standing::Clear
    }
}

/// How long an optimizer holds a claim behind others' claims in verification, at most: a
/// quorum's window and an escalation's.
pub fn hold_cap(quorum_timeout: Duration, spec: &DomainSpec) -> Duration {
    2 * tally::window(quorum_timeout, spec)
}

/// What became of a report.
#[derive(Debug)]
pub enum Decision {
    /// Not committed; its loop may go on (why, for the log).
    Settled(&'static str),
    /// Held behind a better claim in verification (`first`: it was not held before).
    Held { first: bool, claimed: Metric },
    /// Committed: publish the commit; the reveal waits for the seal here. `dropped`: domains
    /// whose claims left a full record (their loops go on); `artifact`: the model the reveal
    /// names, for the engine to serve to the quorum.
    Committed { commit: Box<Commit>, claimed: Metric, dropped: Vec<String>, artifact: Option<Vec<u8>> },
}

/// What a report is judged with, besides the record here.
#[allow(missing_debug_implementations)]
pub struct Judge<'a> {
    /// Our chain's tip state.
    pub state: &'a State,
    /// The node's key (the optimizer).
    pub key: &'a Keypair,
    /// The report's on-chain domain.
    pub domain: &'a DomainId,
    /// The report's candidate as on-chain parameters (`None`: it cannot be one).
    pub params: Option<poo::Params>,
    /// The experiment the report belongs to (its round is the report's evaluations).
    pub experiment: poo::ExperimentMeta,
    /// The commitment's salt: fresh randomness from the caller.
    pub salt: [u8; 32],
    /// Whether anyone revealed these parameters already (by their [`params_hash`]).
    pub taken: &'a dyn Fn(&Hash) -> bool,
    /// Where a claimed figure stands ([`standing`] over what the node knows).
    pub standing: &'a dyn Fn(Metric) -> Standing,
    /// How long a report may be held ([`hold_cap`]).
    pub hold_cap: Duration,
}

/// The claims of this node not settled yet, bounded.
#[derive(Debug)]
pub struct OwnClaims {
    /// Commit → (config domain, when committed).
    claims: HashMap<Hash, (String, Instant)>,
    /// Per domain, the report held and since when the domain has held one.
    held: HashMap<String, (Found, Instant)>,
    /// Reveals waiting for their commits' seal, with when committed.
    reveals: Vec<(Instant, Reveal)>,
    max_pending: usize,
}

impl OwnClaims {
    /// No claims; at most `max_pending` unsettled.
    pub fn new(max_pending: usize) -> Self {
        Self { claims: HashMap::new(), held: HashMap::new(), reveals: Vec::new(), max_pending }
    }

    /// Judges an optimizer's report `f` at `now` (`held_since`: it was held since then; a
    /// newer report of a domain replaces the one it held). Only what beats the verified
    /// champion (or the baseline) is committed, never parameters revealed already (by anyone)
    /// or in a commit of ours not revealed yet, and not while another optimizer's better claim
    /// is in verification (for at most `hold_cap`).
    pub fn judge(&mut self, f: Found, held_since: Option<Instant>, j: Judge<'_>, now: Instant) -> Decision {
        let held_since = held_since.or_else(|| self.held.remove(&f.domain).map(|(_, since)| since));
        let Some(d) = j.state.domain(j.domain) else {
            return Decision::Settled("domain not on chain");
        };
        let spec = &d.spec;
        let current = d.champion.as_ref().map_or(spec.baseline, |c| c.performance);
        let claimed = Metric::from_f64(f.measurement.performance)
            .filter(|c| certs::improves(spec, current, *c, 0).unwrap_or(false));
        let (Some(claimed), Some(params)) = (claimed, j.params) else {
            return Decision::Settled("no improvement on the champion");
        };
        // Near the optimum distinct candidates round to the same on-chain parameters:
        // evaluators evaluate only the first reveal of a parameter set, in the order each saw
        // them, so two commits of one set split the quorums between them and neither completes
        // (a 4-node devnet stalled on such a pair, everyone holding behind it).
        let hash = params_hash(&params);
        if (j.taken)(&hash) || self.reveals.iter().any(|(_, r)| params_hash(&r.body.params) == hash) {
            return Decision::Settled("these parameters were committed already");
        }
        // Verification is the network's cost of a claim: one that another optimizer's better
        // claim, now in verification, would likely make late waits for that claim's outcome
        // (bounded by the hold cap, so a claim that never settles holds no one for long).
        match (j.standing)(claimed) {
            Standing::Clear => {}
            Standing::Beaten => return Decision::Settled("an accepted claim beats this report"),
            Standing::Behind => {
                let since = held_since.unwrap_or(now);
                if now.saturating_duration_since(since) < j.hold_cap {
                    self.held.insert(f.domain.clone(), (f, since));
                    return Decision::Held { first: held_since.is_none(), claimed };
                }
                tracing::info!(domain = f.domain, "claim held past the cap; committing it");
            }
        }
        let me = j.key.address();
        let commit = Signed::sign(
            CommitBody {
                domain: j.domain.clone(),
                optimizer: me,
                optimae_hash: poo::optimae_hash(&params, &j.salt, &me),
                claimed,
                reference_block: j.state.tip().hash,
            },
            j.key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: me,
                params,
                salt: j.salt,
                artifact: f.artifact.as_deref().map(Hash::of_artifact),
                experiment: poo::ExperimentMeta { round: f.evaluations, ..j.experiment },
            },
            j.key,
        );
        let mut dropped = Vec::new();
        if self.claims.len() >= self.max_pending {
            // Claims dropped from the record settle now (nothing would settle them later).
            let domains: HashSet<String> = self.claims.drain().map(|(_, (d, _))| d).collect();
            dropped.extend(domains);
            dropped.sort();
        }
        self.claims.insert(commit.id(), (f.domain, now));
        self.await_seal(reveal, now);
        Decision::Committed { commit: Box::new(commit), claimed, dropped, artifact: f.artifact }
    }

    /// Keeps a reveal of ours until its commit is sealed on our chain.
    pub fn await_seal(&mut self, reveal: Reveal, now: Instant) {
        if self.reveals.len() >= self.max_pending {
            self.reveals.remove(0);
        }
        self.reveals.push((now, reveal));
    }

    /// The reveals whose commits are sealed on `state`'s chain (their quorums are drawn), to
    /// publish now; those whose commits were not sealed within `deadline` are dropped.
    pub fn due_reveals(&mut self, state: &State, now: Instant, deadline: Duration) -> Vec<Reveal> {
        let (due, keep): (Vec<_>, Vec<_>) =
            self.reveals.drain(..).partition(|(_, r)| quorum::sealed(state, &r.body.commit).is_some());
        self.reveals =
            keep.into_iter().filter(|(at, _)| now.saturating_duration_since(*at) < deadline).collect();
        due.into_iter().map(|(_, r)| r).collect()
    }

    /// Our claim `commit` settled (certified, or lost): its domain, if it was ours.
    pub fn settled(&mut self, commit: &Hash) -> Option<String> {
        self.claims.remove(commit).map(|(d, _)| d)
    }

    /// When our claim `commit` was committed, if it is ours and unsettled.
    pub fn committed_at(&self, commit: &Hash) -> Option<Instant> {
        self.claims.get(commit).map(|(_, at)| *at)
    }

    /// Our unsettled claims.
    pub fn pending(&self) -> impl Iterator<Item = &Hash> {
        self.claims.keys()
    }

    /// Our claims unsettled past `deadline` at `now` (lost, or their certificate refused): they
    /// settle, with their domains.
    pub fn expire(&mut self, now: Instant, deadline: Duration) -> Vec<(Hash, String)> {
        let expired: Vec<Hash> = self
            .claims
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= deadline)
            .map(|(k, _)| *k)
            .collect();
        let mut out: Vec<(Hash, String)> =
            expired.into_iter().filter_map(|id| self.claims.remove(&id).map(|(d, _)| (id, d))).collect();
        out.sort();
        out
    }

    /// The held reports `release` says may be judged again (their rival settled, or they were
    /// held long enough), taken out with since when each was held.
    pub fn release_held(
        &mut self,
        mut release: impl FnMut(&str, &Found, Instant) -> bool,
    ) -> Vec<(Found, Instant)> {
        let mut domains: Vec<String> = self
            .held
            .iter()
            .filter(|(d, (f, since))| release(d, f, *since))
            .map(|(d, _)| d.clone())
            .collect();
        domains.sort();
        domains.into_iter().filter_map(|d| self.held.remove(&d)).collect()
    }

    /// Reports held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests;
