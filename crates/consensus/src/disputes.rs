//! Disputes of served inference answers (`docs/design.md` §22d).
//!
//! A serving node signs a receipt binding each input row to the output it gave, under a Merkle
//! root ([`doin_primitives::InferenceDispute`]). Anyone holding such a receipt whose answer it
//! believes wrong posts a [`TxKind::DisputeInference`](doin_primitives::TxKind) with the one
//! row and its path, locking `dispute_bond`. Consensus cannot run the model, so it checks what
//! it can — the server's signature, the row's path to the receipt's root, the model being one
//! the chain certified for the domain recently, the server staked — and draws a quorum from the
//! domain's evaluators (never the server nor the disputer) with the beacon after the block that
//! follows the dispute's inclusion, which nobody knew when the dispute was sent. Each member
//! re-executes the row on the named artifact (the built-in models are deterministic: an honest
//! answer matches bit for bit) and votes.
//!
//! - A majority of the quorum finding the output wrong **upholds** the dispute: the server's
//!   stake (then its unbonding coins) is slashed by `dispute_slash_ppm`; half of it goes to the
//!   disputer with its bond back, the rest is burned.
//! - A majority finding it right **refuses** it: the bond goes to the server, paid for the
//!   false accusation.
//! - Undecided after `dispute_window_blocks` (no majority of the votes in hand; ties; no vote):
//!   the bond goes back to the disputer and nobody is slashed.
//!
//! One dispute per receipt: a receipt whose dispute was upheld or refused cannot be disputed
//! again (an undecided one can). Settled disputes stay in the state without their rows.

use borsh::{BorshDeserialize, BorshSerialize};
use doin_primitives::{Address, Amount, DomainId, Hash, InferenceDispute};
use serde::{Deserialize, Serialize};

use crate::{
    error::TxError,
    quorum::{self, Candidate},
    state::State,
};

fn rejected(msg: impl Into<String>) -> TxError {
    TxError::Rejected(msg.into())
}

/// How a dispute ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum DisputeOutcome {
    /// The quorum found the answer wrong: the server was slashed.
    Upheld {
        /// Taken from the server's stake.
        slashed: Amount,
        /// Of it, paid to the disputer.
        rewarded: Amount,
    },
    /// The quorum found the answer right: the bond went to the server.
    Refused,
    /// No majority by the deadline: the bond went back.
    Undecided,
}

/// A dispute in the state.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Dispute {
    /// Who disputed (locked the bond).
    pub disputer: Address,
    /// The server whose receipt it is.
    pub server: Address,
    /// The domain.
    pub domain: DomainId,
    /// The champion (commit id) whose model answered.
    pub optimae: Hash,
    /// The model artifact.
    pub artifact: Hash,
    /// The disputed row's input, `f32` bits (emptied once settled).
    pub input: Vec<u32>,
    /// The server's output for it, `f32` bits (emptied once settled).
    pub output: Vec<u32>,
    /// The bond locked.
    pub bond: Amount,
    /// The inclusion height.
    pub height: u64,
    /// The quorum, drawn two blocks after inclusion (empty before).
    pub quorum: Vec<Address>,
    /// Members' votes: `true` = the output is wrong.
    pub votes: Vec<(Address, bool)>,
    /// Set once settled.
    pub outcome: Option<DisputeOutcome>,
    /// The settlement height (0 while pending).
    pub settled_at: u64,
}

impl Dispute {
    /// The height from which the quorum can be drawn (the beacon after the block following the
    /// inclusion exists).
    pub fn draw_height(&self) -> u64 {
        self.height.saturating_add(2)
    }
    /// The height at which a dispute still pending settles by the votes in hand.
    pub fn deadline(&self, window: u64) -> u64 {
        self.height.saturating_add(window)
    }
}

/// The draw seed: `H("doin/inference-dispute" || beacon || id)`.
pub fn seed(beacon: &Hash, id: &Hash) -> Hash {
    Hash::of_parts(&[b"doin/inference-dispute", &beacon.0, &id.0])
}

/// Whether `optimae`'s model `artifact` is one the chain certified for the domain and still
/// disputable: the champion's (with a measured quality), a federated job's verified model
/// (named as its own optimae), or one either displaced within the window.
pub fn disputable_model(state: &State, domain: &DomainId, optimae: &Hash, artifact: &Hash) -> bool {
    let Some(d) = state.domain(domain) else { return false };
    let current = d.champion.as_ref().is_some_and(|c| {
        c.commit == *optimae && c.artifact.as_ref() == Some(artifact) && c.model_quality.is_some()
    });
    // A federated job's verified model: its receipts name the model as their optimae too.
    let verified = d
        .federated
        .as_ref()
        .and_then(|f| f.verified.as_ref())
        .is_some_and(|v| v.model == *artifact && *optimae == *artifact);
    current
        || verified
        || d.past_models
            .iter()
            .any(|m| m.optimae == *optimae && m.artifact == *artifact && m.until >= state.height())
}

/// Keeps a displaced model (a champion's, or a federated job's verified one) disputable until
/// `until`; forgets those whose window ended before `height`; at most
/// [`crate::state::MAX_PAST_MODELS`], newest last.
pub(crate) fn keep_disputable(
    domain: &mut crate::state::DomainState,
    optimae: Hash,
    artifact: Hash,
    until: u64,
    height: u64,
) {
    domain.past_models.retain(|m| m.until >= height);
    domain.past_models.push(crate::state::PastModel { optimae, artifact, until });
    let excess = domain.past_models.len().saturating_sub(crate::state::MAX_PAST_MODELS);
    domain.past_models.drain(..excess);
}

fn excluded(d: &Dispute, a: &Address) -> bool {
    *a == d.server || *a == d.disputer
}

/// Dispute windows a member that let a dispute reach its deadline without its vote is not
/// drawn for the domain's disputes (a stopped or withholding evaluator stops being drawn; the
/// federated audits' rule, §21c).
pub const ABSENCE_WINDOWS: u64 = 10;

/// Whether `a` is absent from `domain`'s dispute quorums at `height`.
pub fn absent(state: &State, domain: &DomainId, a: &Address, height: u64) -> bool {
    state
        .domain(domain)
        .is_some_and(|d| d.dispute_absent.iter().any(|(who, until)| who == a && *until > height))
}

/// Marks the members of `d`'s quorum that did not vote as absent until `height` + the
/// absence; forgets absences that are over.
fn mark_absent(state: &mut State, d: &Dispute, height: u64) {
    let until = height.saturating_add(state.params.dispute_window_blocks.saturating_mul(ABSENCE_WINDOWS));
    let silent: Vec<Address> =
        d.quorum.iter().filter(|m| !d.votes.iter().any(|(a, _)| a == *m)).copied().collect();
    let Some(mut ds) = state.domain(&d.domain).cloned() else { return };
    if silent.is_empty() && ds.dispute_absent.iter().all(|(_, u)| *u > height) {
        return;
    }
    ds.dispute_absent.retain(|(a, u)| *u > height && !silent.contains(a));
    ds.dispute_absent.extend(silent.into_iter().map(|a| (a, until)));
    state.set_domain(d.domain.clone(), ds);
}

/// Applies a `DisputeInference` from `sender` at `height`.
pub(crate) fn apply_dispute(
    state: &mut State,
    sender: Address,
    dispute: &InferenceDispute,
    height: u64,
) -> Result<(), TxError> {
    let body = &dispute.receipt.body;
    if !dispute.receipt.verify() {
        return Err(rejected("the receipt's signature does not verify"));
    }
    if !dispute.proves() {
        return Err(rejected(format!(
            "row {} with its path does not give the receipt's answers root",
            dispute.row
        )));
    }
    if body.server == sender {
        return Err(rejected("a server cannot dispute its own receipt"));
    }
    if state.domain(&body.domain).is_none() {
        return Err(rejected(format!("domain {:?} is not registered", body.domain)));
    }
    if !disputable_model(state, &body.domain, &body.optimae, &body.artifact) {
        return Err(rejected(format!(
            "the receipt's model {} (optimae {}) is not a champion model of {:?} within the last {} blocks",
            body.artifact, body.optimae, body.domain, state.params.dispute_window_blocks
        )));
    }
    if state.slashable(&body.server) == 0 {
        return Err(rejected(format!("the server {} has no stake to answer for its receipts", body.server)));
    }
    let id = dispute.id();
    if let Some(d) = state.dispute(&id) {
        match d.outcome {
            None => return Err(rejected(format!("receipt {id} is already disputed"))),
            Some(DisputeOutcome::Undecided) => {}
            Some(_) => return Err(rejected(format!("receipt {id} was disputed and settled"))),
        }
    }
    let record = Dispute {
        disputer: sender,
        server: body.server,
        domain: body.domain.clone(),
        optimae: body.optimae,
        artifact: body.artifact,
        input: dispute.input.to_vec(),
        output: dispute.output.to_vec(),
        bond: state.params.dispute_bond,
        height,
        quorum: Vec::new(),
        votes: Vec::new(),
        outcome: None,
        settled_at: 0,
    };
    let candidates = quorum::eligible_at(state, &body.domain, state.evaluators(&body.domain).iter())
        .into_iter()
        .filter(|c| !excluded(&record, &c.address))
        .count();
    if candidates == 0 {
        return Err(rejected(format!(
            "no evaluator of {:?} other than the server and the disputer can re-execute the row",
            body.domain
        )));
    }
    let mut acc = state.account(&sender);
    acc.balance = acc.balance.checked_sub(record.bond).ok_or(TxError::InsufficientBalance {
        sender,
        balance: acc.balance,
        needed: record.bond,
    })?;
    state.set_account(sender, acc);
    state.set_dispute(id, Some(record));
    Ok(())
}

/// Applies a `DisputeVote` from `sender`.
pub(crate) fn apply_vote(
    state: &mut State,
    sender: Address,
    id: &Hash,
    wrong: bool,
    height: u64,
) -> Result<(), TxError> {
    let mut d = state.dispute(id).cloned().ok_or_else(|| rejected(format!("no dispute {id}")))?;
    if d.outcome.is_some() {
        return Err(rejected(format!("dispute {id} is settled")));
    }
    if d.quorum.is_empty() {
        return Err(rejected(format!(
            "dispute {id}'s quorum is drawn at height {}, not yet",
            d.draw_height()
        )));
    }
    if !d.quorum.contains(&sender) {
        return Err(rejected(format!("{sender} is not in dispute {id}'s quorum")));
    }
    if d.votes.iter().any(|(a, _)| *a == sender) {
        return Err(rejected(format!("{sender} already voted on dispute {id}")));
    }
    d.votes.push((sender, wrong));
    let need = d.quorum.len() / 2 + 1;
    let against = d.votes.iter().filter(|(_, w)| *w).count();
    if against >= need {
        settle(state, *id, d, true, height)
    } else if d.votes.len() - against >= need {
        settle(state, *id, d, false, height)
    } else {
        state.set_dispute(*id, Some(d));
        Ok(())
    }
}

/// Settles `d`: upheld (`wrong`) or refused.
fn settle(state: &mut State, id: Hash, d: Dispute, wrong: bool, height: u64) -> Result<(), TxError> {
    let overflow = || TxError::Overflow("dispute settlement");
    let outcome = if wrong {
        let stake = state.slashable(&d.server);
        let slash = Amount(
            stake.checked_mul(u128::from(state.params.dispute_slash_ppm)).ok_or_else(overflow)? / 1_000_000,
        );
        // Burned in full, then half re-minted to the disputer: supply stays accounted.
        let slashed = state.burn_stake(d.server, slash).ok_or_else(overflow)?;
        let rewarded = Amount(slashed.0 / 2);
        state.meta.supply.burned = state.meta.supply.burned.checked_sub(rewarded).ok_or_else(overflow)?;
        state.credit(d.disputer, rewarded.checked_add(d.bond).ok_or_else(overflow)?).ok_or_else(overflow)?;
        DisputeOutcome::Upheld { slashed, rewarded }
    } else {
        state.credit(d.server, d.bond).ok_or_else(overflow)?;
        DisputeOutcome::Refused
    };
    close(state, id, d, outcome, height);
    Ok(())
}

/// Records `outcome` at `height` and drops the rows (kept for good, so a receipt is punished at
/// most once).
fn close(state: &mut State, id: Hash, mut d: Dispute, outcome: DisputeOutcome, height: u64) {
    d.outcome = Some(outcome);
    d.settled_at = height;
    d.input = Vec::new();
    d.output = Vec::new();
    state.set_dispute(id, Some(d));
}

/// Start of block `height`: draws the quorums now drawable, and settles the disputes whose
/// deadline came by the votes in hand (a majority of the votes cast decides; otherwise the
/// bond goes back).
pub(crate) fn begin_block(state: &mut State, height: u64) -> Result<(), TxError> {
    while let Some((at, id)) = state.dispute_draws.get_min().copied() {
        if at > height {
            break;
        }
        state.dispute_draws.remove(&(at, id));
        let Some(mut d) = state.dispute(&id).cloned() else { continue };
        if d.outcome.is_some() || !d.quorum.is_empty() {
            continue;
        }
        let drawn = (|| {
            let inclusion = state.recent_at(d.height)?;
            let beacon = state.recent_at(d.height.checked_add(1)?)?.beacon;
            let candidates: Vec<Candidate> = inclusion
                .eligible(&d.domain)
                .iter()
                .filter(|c| !excluded(&d, &c.address) && !absent(state, &d.domain, &c.address, height))
                .copied()
                .collect();
            let spec = &state.domain(&d.domain)?.spec;
            let k = quorum::quorum_size(candidates.len(), &spec.quorum);
            Some(quorum::draw(&candidates, k, &seed(&beacon, &id)))
        })()
        .unwrap_or_default();
        if drawn.is_empty() {
            // Nobody can re-execute it (the evaluators left): the bond goes back.
            undecided(state, id, d, height)?;
            continue;
        }
        d.quorum = drawn;
        state.set_dispute(id, Some(d));
    }
    let window = state.params.dispute_window_blocks;
    while let Some((at, id)) = state.dispute_deadlines.get_min().copied() {
        if at > height {
            break;
        }
        state.dispute_deadlines.remove(&(at, id));
        let Some(d) = state.dispute(&id).cloned() else { continue };
        if d.outcome.is_some() || d.deadline(window) != at {
            continue;
        }
        mark_absent(state, &d, height);
        let against = d.votes.iter().filter(|(_, w)| *w).count();
        let cast = d.votes.len();
        match against.cmp(&(cast - against)) {
            std::cmp::Ordering::Greater => settle(state, id, d, true, height)?,
            std::cmp::Ordering::Less => settle(state, id, d, false, height)?,
            std::cmp::Ordering::Equal => undecided(state, id, d, height)?,
        }
    }
    Ok(())
}

fn undecided(state: &mut State, id: Hash, d: Dispute, height: u64) -> Result<(), TxError> {
    state.credit(d.disputer, d.bond).ok_or(TxError::Overflow("dispute bond"))?;
    close(state, id, d, DisputeOutcome::Undecided, height);
    Ok(())
}
