//! Gossip checked against chain state before it is forwarded (design §9 "Gossip admission").
//!
//! The network actor runs [`GossipCheck::check`] on every optimae message after its bounds and
//! signature, and before gossipsub forwards it. A message that is invalid against the tip's
//! state is *rejected* (not forwarded, and the forwarding peer's gossipsub score is charged, so
//! a flooding peer is graylisted); one that may be honest but is of no use yet (a vote or a
//! reveal for a commit this node has not seen) is *ignored* (not forwarded, no penalty).
//!
//! - A commit (on the blocks topic: producers include it) only from an account staked with the
//!   optimizer role for its domain and at least the optimae bond. Its reference block must not
//!   be out of the window; one not seen here yet may be on its way. Its quorums are filled in
//!   once it is sealed on our chain (until then only the domain's staked evaluators may vote
//!   on it). At most
//!   [`PER_ACCOUNT`] unrevealed and [`PER_ACCOUNT_TOTAL`] pending commits of one optimizer and
//!   [`PER_DOMAIN`] of one domain: a full map refuses newcomers instead of evicting, so a flood
//!   can never push an honest entry out. Quotas depend on what this node has seen, so going
//!   over one is ignored, not charged to the forwarding peer (an honest relay saw fewer).
//! - A reveal only for a pending commit, signed by its optimizer and opening it; once (a second
//!   opening is ignored: a relay that saw it first forwarded it in good faith).
//! - A vote only from a member of the commit's quorum for its round (0: first, 1: escalation),
//!   once per (commit, round, evaluator). A *different* second vote is not forwarded and
//!   becomes [`DoubleVoteEvidence`] for the node to gossip and include in its blocks.
//! - Evidence only against an account with something to slash, not slashed before.
//! - Finality votes only from staked accounts, for checkpoint links within the recent window,
//!   once per (voter, height); a conflicting second vote becomes finality evidence
//!   ([`crate::finality::FinalityPool`]).
//!
//! Entries leave when their commit is settled on chain ([`GossipCheck::settle`]) or their
//! reference block leaves the window ([`GossipCheck::set_state`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use doin_consensus::{CertError, State, certs, quorum};
use doin_net::{GossipMessage, GossipValidator, Refusal, Topic};
use doin_primitives::{
    Address, DoubleVoteEvidence, FinalityEvidence, FinalityVote, Hash, Vote, poo, trials::MIN_BATCH_GAP_MS,
};

use crate::finality::{self, FinalityPool};

/// Commits one optimizer may have pending and not yet revealed at once.
pub const PER_ACCOUNT: usize = 16;
/// Commits one optimizer may have pending at once, revealed or not (a revealed commit that is
/// never certified — a copy, a quorum that never formed — stays until its reference block
/// leaves the window).
pub const PER_ACCOUNT_TOTAL: usize = 128;
/// Pending commits one domain may have at once.
pub const PER_DOMAIN: usize = 1024;
/// Double-vote evidence held for the node at most.
pub const MAX_EVIDENCE: usize = 64;

/// The quorums of a commit by `optimizer`, once it is sealed on `state`'s chain (a trusted
/// domain has none: nobody votes).
fn quorums_of(
    state: &State,
    domain: &str,
    optimizer: &Address,
    commit: Hash,
) -> Option<(Vec<Address>, Vec<Address>)> {
    let id = doin_primitives::DomainId::new(domain).ok()?;
    if state.domain(&id)?.spec.trusted() {
        return Some((Vec::new(), Vec::new()));
    }
    let q = quorum::quorums_for(state, &id, optimizer, &commit)?;
    Some((q.first, q.escalation))
}

/// What the check keeps of an admitted commit.
#[derive(Clone, Debug)]
struct Pending {
    domain: String,
    optimizer: Address,
    optimae_hash: Hash,
    reference: Hash,
    /// Height of the reference block (or of our tip when the commit came, while the reference
    /// is not known here), then of the block that included the commit: the commit is useless
    /// once it leaves the window.
    reference_height: u64,
    /// The first-round and escalation quorums, once the commit is sealed on our chain.
    quorums: Option<(Vec<Address>, Vec<Address>)>,
    revealed: bool,
    /// The first vote of each (round, evaluator).
    votes: BTreeMap<(u8, Address), Vote>,
}

#[derive(Default)]
struct View {
    state: Option<State>,
    pending: HashMap<Hash, Pending>,
    /// Unrevealed pending commits per optimizer.
    per_account: HashMap<Address, usize>,
    /// All pending commits per optimizer.
    per_account_total: HashMap<Address, usize>,
    per_domain: HashMap<String, usize>,
    evidence: Vec<DoubleVoteEvidence>,
    /// Evidence ids already handed out (bounded like `evidence`'s producers: cleared when full).
    evidence_seen: HashSet<Hash>,
    /// Finality votes and evidence for our blocks.
    finality: FinalityPool,
    /// The last trial batch `seq` forwarded per (sender, domain): bounded by the staked
    /// accounts that may send them ([`MAX_TRIAL_SENDERS`]).
    trial_seq: HashMap<(Address, String), u64>,
}

/// (Sender, domain) pairs whose trial batches are tracked at most; a full map forwards no new
/// sender's batches until it empties (rebuilt from scratch when full, like the evidence ids).
pub const MAX_TRIAL_SENDERS: usize = 4_096;

/// Counters of what the check refused, for metrics and the adversary benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Rejected (peer penalized).
    pub rejected: u64,
    /// Ignored (no penalty).
    pub ignored: u64,
}

/// The node's [`GossipValidator`]: state checks shared between the network actor and the
/// event loop (which refreshes the state and settles commits).
#[derive(Default)]
pub struct GossipCheck {
    view: RwLock<View>,
    rejected: AtomicU64,
    ignored: AtomicU64,
}

fn reject(reason: impl Into<String>) -> Refusal {
    Refusal::Reject(reason.into())
}

fn ignore(reason: impl Into<String>) -> Refusal {
    Refusal::Ignore(reason.into())
}

impl std::fmt::Debug for GossipCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipCheck")
            .field("pending", &self.pending())
            .field("refused", &self.refused())
            .finish()
    }
}

impl GossipCheck {
    /// A check that refuses optimae messages until it has a state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tip's state changed: commits whose reference block left the window are dropped.
    pub fn set_state(&self, state: State) {
        let Ok(mut v) = self.view.write() else { return };
        let height = state.height();
        let window = state.params().max_reference_age;
        let stale: Vec<Hash> = v
            .pending
            .iter()
            .filter(|(_, p)| height.saturating_sub(p.reference_height) > window)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            v.remove(&id);
        }
        v.finality.prune(&state);
        // Commits sealed since: their quorums are drawn now.
        for (id, p) in v.pending.iter_mut().filter(|(_, p)| p.quorums.is_none()) {
            p.quorums = quorums_of(&state, &p.domain, &p.optimizer, *id);
            if let Some(h) = state.committed_at(id) {
                p.reference_height = h;
            } else if let Some(r) = state.recent_block(&p.reference) {
                p.reference_height = r.height;
            }
        }
        v.state = Some(state);
    }

    /// The commit is settled (certified on chain, or its certificate refused for good): its
    /// quota is free again. Later messages about it are ignored.
    pub fn settle(&self, commit: &Hash) {
        if let Ok(mut v) = self.view.write() {
            v.remove(commit);
        }
    }

    /// Records one of this node's own messages (which never pass its validator) as if it had
    /// been received, so that what it draws (votes on our commit) is not ignored.
    pub fn admit_own(&self, message: &GossipMessage) {
        let _ = self.check_message(message);
    }

    /// Double-vote evidence found since the last call.
    pub fn take_evidence(&self) -> Vec<DoubleVoteEvidence> {
        self.view.write().map(|mut v| std::mem::take(&mut v.evidence)).unwrap_or_default()
    }

    /// The finality votes held for our blocks.
    pub fn finality_votes(&self) -> Vec<FinalityVote> {
        self.view.read().map(|v| v.finality.votes()).unwrap_or_default()
    }

    /// Finality votes held.
    pub fn finality_pooled(&self) -> usize {
        self.view.read().map_or(0, |v| v.finality.len())
    }

    /// Conflicting finality votes found since the last call.
    pub fn take_finality_evidence(&self) -> Vec<FinalityEvidence> {
        self.view.write().map(|mut v| v.finality.take_evidence()).unwrap_or_default()
    }

    /// Unrevealed commits of `optimizer` pending here (at most [`PER_ACCOUNT`] are forwarded).
    pub fn pending_by(&self, optimizer: &Address) -> usize {
        self.view.read().map_or(0, |v| v.per_account.get(optimizer).copied().unwrap_or(0))
    }

    /// The domain of a pending commit (its gossip may have reached the check before the
    /// event loop took the commit).
    pub fn domain_of(&self, commit: &Hash) -> Option<String> {
        self.view.read().ok()?.pending.get(commit).map(|p| p.domain.clone())
    }

    /// Commits pending (admitted, not settled).
    pub fn pending(&self) -> usize {
        self.view.read().map_or(0, |v| v.pending.len())
    }

    /// What was refused so far.
    pub fn refused(&self) -> Refused {
        Refused {
            rejected: self.rejected.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
        }
    }

    fn check_message(&self, message: &GossipMessage) -> Result<(), Refusal> {
        match message {
            GossipMessage::Commit(c) => self.write(|v| v.commit(c)),
            GossipMessage::Reveal(r) => self.write(|v| v.reveal(r)),
            GossipMessage::Vote(vote) => self.write(|v| v.vote(vote)),
            GossipMessage::Evidence(e) => {
                let v = self.view.read().map_err(|_| ignore("state lock poisoned"))?;
                let state = v.state.as_ref().ok_or_else(|| ignore("no chain state yet"))?;
                if certs::already_slashed(state, e) {
                    return Err(ignore("this double vote was slashed already"));
                }
                certs::check_evidence(state, e).map(|_| ()).map_err(reject)
            }
            GossipMessage::FinalityVote(vote) => self.write(|v| {
                let View { state, finality, .. } = v;
                let state = state.as_ref().ok_or_else(|| ignore("no chain state yet"))?;
                finality.admit(state, vote).map_err(|r| match r {
                    finality::Refused::Invalid(why) => reject(why),
                    finality::Refused::Useless(why) => ignore(why),
                })
            }),
            GossipMessage::FinalityEvidence(e) => {
                let v = self.view.read().map_err(|_| ignore("state lock poisoned"))?;
                let state = v.state.as_ref().ok_or_else(|| ignore("no chain state yet"))?;
                match doin_consensus::finality::check_evidence(state, e) {
                    Ok(_) => Ok(()),
                    Err(doin_consensus::FinalityError::AlreadySlashed) => {
                        Err(ignore("offence slashed already"))
                    }
                    Err(err) => Err(reject(err.to_string())),
                }
            }
            GossipMessage::Trials(t) => self.write(|v| v.trials(t)),
            GossipMessage::Block(_) | GossipMessage::Transaction(_) => Ok(()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut View) -> Result<(), Refusal>) -> Result<(), Refusal> {
        let mut v = self.view.write().map_err(|_| ignore("state lock poisoned"))?;
        f(&mut v)
    }
}

impl GossipValidator for GossipCheck {
    fn check(&self, _: &Topic, message: &GossipMessage) -> Result<(), Refusal> {
        let verdict = self.check_message(message);
        match &verdict {
            Err(Refusal::Reject(_)) => self.rejected.fetch_add(1, Ordering::Relaxed),
            Err(Refusal::Ignore(_)) => self.ignored.fetch_add(1, Ordering::Relaxed),
            Ok(()) => 0,
        };
        verdict
    }
}

/// One less in a counting map (the key leaves at zero).
fn decrement<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl View {
    /// A trial batch is forwarded only from an account with stake or reputation in the domain
    /// (a throwaway key's is spam: rejected), at most one per [`MIN_BATCH_GAP_MS`] of its own
    /// clock, never replayed.
    fn trials(&mut self, t: &doin_primitives::TrialBatch) -> Result<(), Refusal> {
        let state = self.state.as_ref().ok_or_else(|| ignore("no chain state yet"))?;
        let sender = t.body.sender;
        let domain = t.body.domain.clone();
        let staked = state.stake(&sender).is_some_and(|s| s.amount.0 > 0);
        if !staked && state.reputation(&sender, &domain) == 0 {
            return Err(reject("trials from an account with no stake or reputation"));
        }
        let key = (sender, domain.as_str().to_owned());
        if let Some(last) = self.trial_seq.get(&key)
            && t.body.seq < last.saturating_add(MIN_BATCH_GAP_MS)
        {
            return Err(ignore("a trial batch too soon after the sender's last (or replayed)"));
        }
        if self.trial_seq.len() >= MAX_TRIAL_SENDERS && !self.trial_seq.contains_key(&key) {
            self.trial_seq.clear();
        }
        self.trial_seq.insert(key, t.body.seq);
        Ok(())
    }

    /// The refusal of a `what` by `signer` about a commit not pending here: a staked account's
    /// may have overtaken its commit (ignored); a throwaway key's is spam (rejected, penalized).
    fn unknown_commit(&self, what: &str, signer: &Address) -> Refusal {
        if self.state.as_ref().is_some_and(|s| s.stake(signer).is_some()) {
            ignore(format!("{what} on a commit not seen here"))
        } else {
            reject(format!("{what} by an unstaked account"))
        }
    }

    fn remove(&mut self, id: &Hash) {
        if let Some(p) = self.pending.remove(id) {
            if !p.revealed {
                decrement(&mut self.per_account, &p.optimizer);
            }
            decrement(&mut self.per_account_total, &p.optimizer);
            decrement(&mut self.per_domain, &p.domain);
        }
    }

    fn commit(&mut self, commit: &poo::Commit) -> Result<(), Refusal> {
        let id = commit.id();
        if self.pending.contains_key(&id) {
            return Err(ignore("commit seen already"));
        }
        let state = self.state.as_ref().ok_or_else(|| ignore("no chain state yet"))?;
        let body = &commit.body;
        // The inclusion rules on domain, role and bond (a commit already on chain, or whose
        // reference is not here, is judged below: it may still draw votes).
        match doin_consensus::check_commit(state, commit) {
            Ok(()) | Err(CertError::Reference(_)) | Err(CertError::Duplicate(_)) => {}
            Err(e) => return Err(reject(format!("commit cannot be included: {e}"))),
        }
        // A reference this node has not imported yet may be a block still on its way: the
        // commit is admitted (its quorums are filled in when the block arrives); one that is
        // known but out of the window is stale.
        let reference_height = match state.recent_block(&body.reference_block) {
            Some(r) if state.height().saturating_sub(r.height) > state.params().max_reference_age => {
                return Err(ignore("reference block too old"));
            }
            Some(r) => r.height,
            None => state.height(),
        };
        // Quotas depend on what this node has seen, which differs between nodes: refusing
        // over them must not charge the forwarding peer (an honest relay that saw fewer).
        if self.per_account.get(&body.optimizer).copied().unwrap_or(0) >= PER_ACCOUNT {
            return Err(ignore(format!("optimizer has {PER_ACCOUNT} unrevealed commits pending already")));
        }
        if self.per_account_total.get(&body.optimizer).copied().unwrap_or(0) >= PER_ACCOUNT_TOTAL {
            return Err(ignore(format!("optimizer has {PER_ACCOUNT_TOTAL} commits pending already")));
        }
        if self.per_domain.get(body.domain.as_str()).copied().unwrap_or(0) >= PER_DOMAIN {
            return Err(ignore(format!("domain has {PER_DOMAIN} commits pending")));
        }
        let quorums = quorums_of(state, body.domain.as_str(), &body.optimizer, id);
        *self.per_account.entry(body.optimizer).or_default() += 1;
        *self.per_account_total.entry(body.optimizer).or_default() += 1;
        *self.per_domain.entry(body.domain.to_string()).or_default() += 1;
        self.pending.insert(
            id,
            Pending {
                domain: body.domain.to_string(),
                optimizer: body.optimizer,
                optimae_hash: body.optimae_hash,
                reference: body.reference_block,
                reference_height,
                quorums,
                revealed: false,
                votes: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn reveal(&mut self, reveal: &poo::Reveal) -> Result<(), Refusal> {
        let body = &reveal.body;
        let Some(p) = self.pending.get_mut(&body.commit) else {
            return Err(self.unknown_commit("reveal", &body.optimizer));
        };
        if body.optimizer != p.optimizer {
            return Err(reject("reveal signed by someone other than the committer"));
        }
        if poo::optimae_hash(&body.params, &body.salt, &body.optimizer) != p.optimae_hash {
            return Err(reject("reveal does not open its commit"));
        }
        if p.revealed {
            // A relay that saw another opening first forwarded this one in good faith.
            return Err(ignore("the commit was revealed already"));
        }
        p.revealed = true;
        let optimizer = p.optimizer;
        decrement(&mut self.per_account, &optimizer);
        Ok(())
    }

    fn vote(&mut self, vote: &Vote) -> Result<(), Refusal> {
        let body = &vote.body;
        let Some(p) = self.pending.get_mut(&body.commit) else {
            return Err(self.unknown_commit("vote", &body.evaluator));
        };
        if body.round > 1 {
            return Err(reject(format!("vote round {}", body.round)));
        }
        match &p.quorums {
            Some((first, escalation)) => {
                let members = if body.round == 0 { first } else { escalation };
                if !members.contains(&body.evaluator) {
                    return Err(reject("voter is not a member of the commit's quorum for this round"));
                }
            }
            // Not sealed on our chain yet (a block still on its way): only the domain's
            // staked evaluators.
            None => {
                let domain = doin_primitives::DomainId::new(p.domain.as_str()).unwrap_or_default();
                let evaluates = self
                    .state
                    .as_ref()
                    .is_some_and(|s| s.stake(&body.evaluator).is_some_and(|st| st.evaluates(&domain)));
                if !evaluates {
                    return Err(reject("voter is not staked as an evaluator of the domain"));
                }
            }
        }
        match p.votes.get(&(body.round, body.evaluator)) {
            // The same vote again (re-signed copies have other bytes): nothing new.
            Some(earlier) if earlier.body == *body => Err(ignore("vote seen already")),
            Some(earlier) => {
                let evidence = DoubleVoteEvidence { first: earlier.clone(), second: vote.clone() };
                let id = evidence.id();
                if self.evidence_seen.len() >= MAX_EVIDENCE * 16 {
                    self.evidence_seen.clear();
                }
                if self.evidence.len() < MAX_EVIDENCE && self.evidence_seen.insert(id) {
                    self.evidence.push(evidence);
                }
                // Not charged to the forwarder: a relay that saw this vote first forwarded it
                // in good faith. The evidence slashes the voter.
                Err(ignore("a second, different vote for the same commit and round"))
            }
            None => {
                p.votes.insert((body.round, body.evaluator), vote.clone());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
