//! Federated rounds as consensus state: who may record a round, what each contribution must
//! carry, and the payout of the round's pool by [`crate::payout`] from exactly the published
//! inputs (so any node, or a test, recomputes every payout from the transaction alone).
//!
//! Rules (`docs/design.md` §21b), each refused with its reason:
//! - the domain is federated; the sender is staked as its supervisor;
//! - rounds are numbered from 0 without gaps, each starts from the domain's current model, and
//!   a domain records at most one round per block;
//! - every contribution is signed by its contributor (checked with the block's signatures), is
//!   for this domain, round and base model, comes from an account staked as a contributor to
//!   the domain, never from the supervisor itself, once per contributor, with rows > 0,
//!   uptime ≤ 100 % and a bounded quality;
//! - declared compute is capped at the domain's `max_wall_ms`; an update the rule did not keep
//!   counts with a quality of at most 0 (so it earns nothing);
//! - the pool is the domain's `bounty_per_accept`, capped by the escrow left; what the formula
//!   pays leaves the escrow, so coins are conserved;
//! - with evaluators staked for the domain, the round waits for its audit ([`audit`]): paid by
//!   the quorum's measurements, or rejected; the next round waits for it until its deadline.

use doin_primitives::{
    Address, Amount, FederatedRound, Hash, domain::DomainKind, federated::RoundContribution,
};

use crate::{
    error::TxError,
    payout::{Inputs, PPM},
    state::{FederatedState, PendingRound, State},
};

pub mod audit;

pub use audit::{RoundOutcome, Settled};

/// Largest quality a contribution may record, micro units (10⁶ nats of loss change: far past any
/// real model's).
pub const MAX_QUALITY_MICRO: i64 = 1_000_000_000_000;

pub(crate) fn rejected(msg: impl Into<String>) -> TxError {
    TxError::Rejected(msg.into())
}

/// The least say (ppm) a contribution needs to be paid: a contributor the rule weighs less (on
/// probation after a quarantine, or after dropped updates) earns nothing until it has rebuilt
/// its standing, whoever measured its quality.
pub const PAID_SAY_PPM: u32 = 500_000;

/// The payout inputs consensus uses for one recorded contribution (compute capped at
/// `max_wall_ms`, quality at most 0 when the rule did not keep it or its say is below
/// [`PAID_SAY_PPM`]).
pub fn inputs_of(c: &RoundContribution, max_wall_ms: u64) -> Inputs {
    let u = &c.update.body;
    let paid = c.kept && c.say_ppm >= PAID_SAY_PPM;
    Inputs {
        contributor: u.contributor,
        compute_ms: u.compute_ms.min(max_wall_ms),
        quality_micro: if paid { c.quality_micro } else { c.quality_micro.min(0) },
        bytes: u.bytes,
        uptime_ppm: u64::from(c.uptime_ppm),
    }
}

/// Blocks after a job's last recorded round during which only the supervisor that recorded it
/// may record the next: three rounds' length (`round_blocks`), at least 3. Another staked
/// supervisor takes over a job whose supervisor stopped — not one that is running.
pub fn takeover_blocks(spec: &doin_primitives::DomainSpec) -> u64 {
    match spec.kind {
        DomainKind::Federated { round_blocks, .. } => u64::from(round_blocks).saturating_mul(3).max(3),
        _ => 3,
    }
}

/// Who may record a job's next round alone, and until which height (exclusive): the supervisor
/// of its last round, for [`takeover_blocks`] after it. `None` before the first round.
pub fn lease(spec: &doin_primitives::DomainSpec, fed: &FederatedState) -> Option<(Address, u64)> {
    (fed.rounds > 0).then(|| (fed.supervisor, fed.height.saturating_add(takeover_blocks(spec))))
}

/// Checks `round` against `state` at `height` (after settling an expired pending round, as
/// applying it would). Signatures are the block's to check.
pub fn check_round(
    state: &State,
    supervisor: Address,
    round: &FederatedRound,
    height: u64,
) -> Result<(), TxError> {
    let domain = state
        .domain(&round.domain)
        .ok_or_else(|| rejected(format!("domain {:?} is not registered", round.domain)))?;
    if !matches!(domain.spec.kind, DomainKind::Federated { .. }) {
        return Err(rejected(format!("domain {:?} is not a federated domain", round.domain)));
    }
    if !state.stake(&supervisor).is_some_and(|s| s.supervises(&round.domain)) {
        return Err(rejected(format!("sender is not staked as a supervisor of {:?}", round.domain)));
    }
    // A takeover may record the last round again from its base when nobody verified it
    // (`audit::takeover_rewind`): its model may have vanished with its supervisor.
    let recorded = domain.federated.clone().unwrap_or_default();
    let fed = match audit::takeover_rewind(&domain.spec, &recorded, height, supervisor) {
        Some(rewound) if round.round == rewound.rounds => rewound,
        _ => audit::after_expiry(&domain.spec, &recorded, height)?,
    };
    if round.round != fed.rounds {
        return Err(rejected(format!(
            "round {} recorded, the domain's next round is {}",
            round.round, fed.rounds
        )));
    }
    // The first round starts from the initial model the domain registered; once a model is
    // recorded — even by a round 0 that was then rejected — rounds start there.
    let start = match (fed.model, &domain.spec.kind) {
        (Hash::ZERO, DomainKind::Federated { initial_model, .. }) => *initial_model,
        (model, _) => model,
    };
    if round.base != start {
        return Err(rejected(format!(
            "round starts from model {}, the domain's model is {start}",
            round.base
        )));
    }
    if fed.rounds > 0 && height <= fed.height {
        return Err(rejected(format!(
            "a round of {:?} was already recorded at height {}",
            round.domain, fed.height
        )));
    }
    if let Some((holder, until)) = lease(&domain.spec, &fed)
        && holder != supervisor
        && height < until
    {
        return Err(rejected(format!(
            "supervisor {holder} holds {:?} (round {} at height {}); another may take over from height {until}",
            round.domain,
            fed.rounds - 1,
            fed.height
        )));
    }
    if round.model == Hash::ZERO || round.model == round.base {
        return Err(rejected("the round's model must be a new, non-zero hash"));
    }
    if round.contributions.is_empty() {
        return Err(rejected("a round records at least one contribution"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in round.contributions.iter().enumerate() {
        let u = &c.update.body;
        let refuse = |why: String| rejected(format!("contribution {i} ({:?}): {why}", u.contributor));
        if u.domain != round.domain || u.round != round.round || u.base != round.base {
            return Err(refuse(format!(
                "signed for {:?} round {} from model {}, not this round",
                u.domain, u.round, u.base
            )));
        }
        if u.contributor == supervisor {
            return Err(refuse("the supervisor cannot be paid as a contributor of its own round".into()));
        }
        if !seen.insert(u.contributor) {
            return Err(refuse("a second contribution from one contributor".into()));
        }
        if u.samples == 0 {
            return Err(refuse("declares 0 training rows".into()));
        }
        if u64::from(c.uptime_ppm) > PPM {
            return Err(refuse(format!("uptime {} ppm is above 10^6", c.uptime_ppm)));
        }
        if c.quality_micro.unsigned_abs() > MAX_QUALITY_MICRO as u64 {
            return Err(refuse(format!("quality {} is out of range", c.quality_micro)));
        }
        if u64::from(c.say_ppm) > PPM {
            return Err(refuse(format!("say {} ppm is above 10^6", c.say_ppm)));
        }
    }
    Ok(())
}

/// What applying a round transaction did: the rounds it settled (an expired pending one, and
/// itself when nobody can audit it) and what they paid.
#[derive(Debug, Default)]
pub struct Applied {
    /// Rounds settled, in order.
    pub settled: Vec<Settled>,
    /// Payouts, in order.
    pub paid: Vec<(Address, Amount)>,
}

/// Applies a round: settles an expired pending round of the domain first, records the new
/// model, and either holds the round for its audit quorum or — no evaluator eligible — pays it
/// by the supervisor's measurements at once.
pub(crate) fn apply_round(
    state: &mut State,
    supervisor: Address,
    round: &FederatedRound,
    height: u64,
) -> Result<Applied, TxError> {
    check_round(state, supervisor, round, height)?;
    let mut applied = Applied::default();
    let domain = state
        .domain(&round.domain)
        .cloned()
        .ok_or_else(|| rejected(format!("domain {:?} is not registered", round.domain)))?;
    // A round recorded again (a takeover from the base of a round nobody verified) builds on
    // that base's quality; a rejected round's settlement restores the same figure.
    let mut redone_quality = None;
    if let Some(p) = domain.federated.as_ref().and_then(|f| f.pending.clone()) {
        if p.record.round == round.round {
            redone_quality = Some(p.previous_quality_micro);
        }
        // Expired (check_round refuses otherwise): settled by the votes in hand.
        let verdict = audit::decide(&p, usize::MAX, true).unwrap_or(audit::Verdict::Unpaid);
        let mut cleared = domain.clone();
        if let Some(f) = cleared.federated.as_mut() {
            // Members that let it expire are not drawn for a while (a stopped node).
            audit::mark_absent(state, &round.domain, f, height);
            f.pending = None;
        }
        state.set_domain(round.domain.clone(), cleared);
        let PendingRound { record, supervisor, previous_quality_micro, .. } = *p;
        let (s, paid) = audit::settle(state, record, supervisor, previous_quality_micro, verdict, height)?;
        applied.settled.push(s);
        applied.paid.extend(paid);
    }
    let auditors = audit::candidates(state, round, &supervisor);
    let mut domain = state
        .domain(&round.domain)
        .cloned()
        .ok_or_else(|| rejected(format!("domain {:?} is not registered", round.domain)))?;
    let before = domain.federated.clone().unwrap_or_default();
    let previous_quality_micro = redone_quality.unwrap_or(before.model_quality_micro);
    domain.federated = Some(FederatedState {
        rounds: round.round + 1,
        model: round.model,
        model_quality_micro: round.model_quality_micro,
        supervisor,
        height,
        standing: round.standing,
        pending: (!auditors.is_empty()).then(|| {
            Box::new(PendingRound {
                record: round.clone(),
                supervisor,
                height,
                previous_quality_micro,
                votes: Vec::new(),
            })
        }),
        ..before
    });
    state.set_domain(round.domain.clone(), domain);
    if auditors.is_empty() {
        let verdict = audit::Verdict::Paid {
            qualities: round.contributions.iter().map(|c| c.quality_micro).collect(),
            model_quality_micro: round.model_quality_micro,
            outcome: RoundOutcome::Unaudited,
        };
        let (s, paid) =
            audit::settle(state, round.clone(), supervisor, previous_quality_micro, verdict, height)?;
        applied.settled.push(s);
        applied.paid.extend(paid);
    }
    Ok(applied)
}
