//! Shared trial history: what a node believes of other nodes' trials, as a sans-I/O state
//! machine (batches and check results in, effects on the optimizer out; no clock, no I/O).
//!
//! Nodes optimizing one domain publish their evaluated trials (point, loss on their own data)
//! and the points they are measuring now, signed, on the domain's topic. Trials are untrusted
//! input — a liar's inflated figures would pull every model-based optimizer towards its bad
//! points — so a sender's trials reach the optimizer only as far as they agree with what this
//! node measures itself:
//!
//! - **Standing**: the node's shell admits batches only from accounts staked for the domain or
//!   with reputation in it, and passes their standing (reputation-weighted, in `(0, 1]`).
//!   Strangers cannot fill the book: at most [`MAX_SENDERS`] senders, replays (a sequence
//!   number not above the last) dropped.
//! - **Quarantine**: a sender's trials are held (the newest [`MAX_QUARANTINE`]) until one of
//!   them passed a spot check: this node measures the sender's best-claimed trial on its own
//!   data, as one of its own candidates (a promising point is worth measuring anyway), and the
//!   claim must not beat the measurement by more than the domain's quorum tolerance.
//! - **Weight**: a trusted sender's trials are weighted `standing × passes / (passes + ¼)`.
//! - **Surprises wait**: a trial claiming a loss better than this node's best beyond the
//!   tolerance — the lie that would steer a model-based optimizer most, since it samples around
//!   its best points — is held until the best such claim is checked; the others are used at
//!   once, and one batch in [`RECHECK_ONE_IN`] has a random trial checked (drawn from this
//!   node's own seed, which senders do not know), so lies hidden behind honest figures are
//!   caught too.
//! - **A failed check** forgets every trial of the sender (trust 0) and ignores it from then on.
//! - **The chain vouches too**: a sender whose claim a quorum certified (the champion this node
//!   was told of) counts as checked once — the quorum measured more than one spot check does —
//!   and the certified figure is a bar like this node's own best: claims within the tolerance of
//!   what the network verified are not surprising. With many nodes this is what keeps checks
//!   from eating the search (each node would otherwise check every sender, and every claim
//!   beating its own lagging best).
//!
//! Points in flight of trusted senders go to the optimizer so that nodes do not propose one
//! region twice.

pub mod share;

#[cfg(test)]
mod network_tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use doin_optimize::Evaluated;
use doin_primitives::Address;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Senders tracked at most (a full book ignores new ones).
pub const MAX_SENDERS: usize = 256;
/// Trials held per untrusted sender (the newest).
pub const MAX_QUARANTINE: usize = 64;
/// Spot checks waiting at most (one per sender at a time).
pub const MAX_CHECKS: usize = 16;
/// A trusted sender's batch is re-checked with probability 1 in this.
pub const RECHECK_ONE_IN: u32 = 8;
/// Checks handed out before any own measurement.
pub const CHECK_ALLOWANCE: u64 = 2;
/// Own measurements per further check (at most a fifth of the evaluations are checks, past the
/// allowance). Measured in `doin sim` (Ackley 4-d ≤ 5, TPE, seeds 1–7, evaluations per optimizer
/// for 8 / 16 / 32 optimizers): no budget 42–49 / 38–45 / 52–62 (checks were ~90 % of the work
/// at 32); one per 2: 42 / 33 / 26; one per 4: 36 / 29 / 23.
pub const OWN_PER_CHECK: u64 = 4;

/// A batch of trials from another node, already signature-checked by the shell.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The signer.
    pub sender: Address,
    /// Its standing in `(0, 1]` (from stake and reputation on chain).
    pub standing: f64,
    /// The batch's sequence number (increasing per sender).
    pub seq: u64,
    /// Trials: points of the unit cube and the sender's loss.
    pub trials: Vec<Evaluated>,
    /// Points the sender is measuring now.
    pub pending: Vec<Vec<f64>>,
}

/// A sender's claim this node measures itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Whose claim.
    pub sender: Address,
    /// The point.
    pub x: Vec<f64>,
    /// The loss it claimed.
    pub claimed: f64,
}

/// What the optimizer must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Set a source's weight (0: forget its trials).
    Trust(u32, f64),
    /// Learn a source's trials.
    Observe(u32, Vec<Evaluated>),
    /// A source's points in flight.
    Pending(u32, Vec<Vec<f64>>),
}

/// How a check compares a claim with this node's measurement: a claim may beat the measurement
/// by at most `absolute + relative × |measured|` (the domain's quorum tolerance, in loss).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Absolute part.
    pub absolute: f64,
    /// Relative part.
    pub relative: f64,
}

impl Agreement {
    /// Whether a `claimed` loss agrees with the `measured` one.
    pub fn holds(&self, claimed: f64, measured: f64) -> bool {
        claimed.is_finite() && measured - claimed <= self.absolute + self.relative * measured.abs()
    }
}

#[derive(Debug)]
struct Sender {
    source: u32,
    last_seq: u64,
    standing: f64,
    passes: u32,
    banned: bool,
    checking: bool,
    held: VecDeque<Evaluated>,
}

impl Sender {
    fn weight(&self) -> f64 {
        self.standing * f64::from(self.passes) / (f64::from(self.passes) + 0.25)
    }
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BookStats {
    /// Trials received in admitted batches.
    pub received: u64,
    /// Trials handed to the optimizer.
    pub used: u64,
    /// Spot checks that agreed.
    pub checks_passed: u64,
    /// Senders caught by a check (their trials forgotten).
    pub senders_banned: u64,
    /// Checks asked of a sender not trusted yet (its best claim).
    pub checks_quarantine: u64,
    /// Checks of a trusted sender's claim beating the bar.
    pub checks_surprise: u64,
    /// Random re-checks of a trusted sender's ordinary trials.
    pub checks_random: u64,
    /// Senders trusted because the chain certified one of their claims (no check of ours).
    pub vouched: u64,
    /// Batches ignored (replayed, banned sender, full book).
    pub ignored: u64,
}

/// The trial book of one domain.
#[derive(Debug)]
pub struct TrialBook {
    senders: BTreeMap<Address, Sender>,
    checks: VecDeque<Check>,
    agreement: Agreement,
    rng: ChaCha8Rng,
    next_source: u32,
    /// The best loss this node measured itself or the chain verified: a claim beyond it by
    /// more than the tolerance is surprising.
    best_own: f64,
    /// Senders the chain vouched for before their first batch (at most [`MAX_SENDERS`]).
    vouched: BTreeSet<Address>,
    /// Own measurements told, and checks handed out (the check budget).
    own: u64,
    handed: u64,
    stats: BookStats,
}

impl TrialBook {
    /// A book whose checks compare with `agreement`; `seed` is this node's secret draw (the
    /// re-check schedule must not be predictable by senders).
    pub fn new(agreement: Agreement, seed: u64) -> Self {
        Self {
            senders: BTreeMap::new(),
            checks: VecDeque::new(),
            agreement,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_source: 1,
            best_own: f64::INFINITY,
            vouched: BTreeSet::new(),
            own: 0,
            handed: 0,
            stats: BookStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> BookStats {
        self.stats
    }

    /// Checks handed out to be measured.
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Senders whose trials the optimizer uses now.
    pub fn trusted(&self) -> usize {
        self.senders.values().filter(|s| !s.banned && s.passes > 0).count()
    }

    /// This node measured `loss` itself (its best is what a claim must not beat unchecked).
    pub fn measured(&mut self, loss: f64) {
        self.own = self.own.saturating_add(1);
        self.lower_bar(loss);
    }

    fn lower_bar(&mut self, loss: f64) {
        if loss < self.best_own {
            self.best_own = loss;
        }
    }

    /// The chain certified `sender`'s claim at `loss` (the verified champion this node was told
    /// of): the figure is a bar like this node's own best, and the sender counts as checked once
    /// (its held trials that no longer surprise are used). A sender this node caught lying stays
    /// ignored: its own measurement contradicted it.
    pub fn certified(&mut self, sender: Address, loss: f64) -> Vec<Effect> {
        if loss.is_finite() {
            self.lower_bar(loss);
        }
        let Some(s) = self.senders.get_mut(&sender) else {
            if self.vouched.len() < MAX_SENDERS {
                self.vouched.insert(sender);
            }
            return Vec::new();
        };
        if s.banned || s.passes > 0 {
            return Vec::new();
        }
        s.passes = 1;
        self.stats.vouched += 1;
        // Its quarantine check is moot now; surprising claims get their own below.
        if s.checking {
            s.checking = false;
            self.checks.retain(|c| c.sender != sender);
        }
        let mut out = vec![Effect::Trust(s.source, s.weight())];
        out.extend(self.release(sender, None));
        out
    }

    /// Uses the trials `sender` holds that no longer beat the bar beyond the tolerance (and the
    /// one just checked, `checked`); the best of the rest is checked next.
    fn release(&mut self, sender: Address, checked: Option<&Check>) -> Vec<Effect> {
        let Some(s) = self.senders.get_mut(&sender) else { return Vec::new() };
        let (still, released): (Vec<Evaluated>, Vec<Evaluated>) = s.held.drain(..).partition(|t| {
            !self.agreement.holds(t.loss, self.best_own)
                && checked.is_none_or(|c| *t != Evaluated { x: c.x.clone(), loss: c.claimed })
        });
        if !s.checking
            && let Some(t) = still.iter().min_by(|a, b| a.loss.total_cmp(&b.loss))
            && self.checks.len() < MAX_CHECKS
        {
            s.checking = true;
            self.stats.checks_surprise += 1;
            self.checks.push_back(Check { sender, x: t.x.clone(), claimed: t.loss });
        }
        s.held = still.into();
        if released.is_empty() {
            return Vec::new();
        }
        self.stats.used += released.len() as u64;
        vec![Effect::Observe(s.source, released)]
    }

    /// A batch arrived.
    pub fn on_batch(&mut self, b: Incoming) -> Vec<Effect> {
        if !self.senders.contains_key(&b.sender) {
            if self.senders.len() >= MAX_SENDERS || b.standing.is_nan() || b.standing <= 0.0 {
                self.stats.ignored += 1;
                return Vec::new();
            }
            let source = self.next_source;
            self.next_source += 1;
            let vouched = self.vouched.remove(&b.sender);
            self.stats.vouched += u64::from(vouched);
            self.senders.insert(
                b.sender,
                Sender {
                    source,
                    last_seq: 0,
                    standing: 0.0,
                    passes: u32::from(vouched),
                    banned: false,
                    checking: false,
                    held: VecDeque::new(),
                },
            );
        }
        let Some(s) = self.senders.get_mut(&b.sender) else { return Vec::new() };
        if s.banned || b.seq <= s.last_seq {
            self.stats.ignored += 1;
            return Vec::new();
        }
        s.last_seq = b.seq;
        s.standing = b.standing.clamp(0.0, 1.0);
        let trials: Vec<Evaluated> = b
            .trials
            .into_iter()
            .filter(|t| t.loss.is_finite() && t.x.iter().all(|v| v.is_finite()))
            .collect();
        self.stats.received += trials.len() as u64;
        let mut out = Vec::new();
        if s.passes == 0 {
            for t in trials {
                if s.held.len() >= MAX_QUARANTINE {
                    s.held.pop_front();
                }
                s.held.push_back(t);
            }
            // Check the best claim held so far (one check at a time per sender).
            if !s.checking
                && let Some(t) = s.held.iter().min_by(|a, b| a.loss.total_cmp(&b.loss))
                && self.checks.len() < MAX_CHECKS
            {
                s.checking = true;
                self.stats.checks_quarantine += 1;
                self.checks.push_back(Check { sender: b.sender, x: t.x.clone(), claimed: t.loss });
            }
            return out;
        }
        // A claim beating this node's best beyond the tolerance is the lie that would steer
        // most (a model-based optimizer samples around its best points): such trials wait until
        // the best of them is checked. Others are used at once, and one batch in
        // RECHECK_ONE_IN has a random trial checked: a liar whose lies hide behind honest
        // figures is caught too.
        let (surprising, plain): (Vec<Evaluated>, Vec<Evaluated>) =
            trials.into_iter().partition(|t| !self.agreement.holds(t.loss, self.best_own));
        for t in surprising {
            if s.held.len() >= MAX_QUARANTINE {
                s.held.pop_front();
            }
            s.held.push_back(t);
        }
        let pick = if let Some(t) = s.held.iter().min_by(|a, b| a.loss.total_cmp(&b.loss)) {
            Some((t.clone(), true))
        } else if !plain.is_empty() && self.rng.random_range(0..RECHECK_ONE_IN) == 0 {
            Some((plain[self.rng.random_range(0..plain.len())].clone(), false))
        } else {
            None
        };
        if let Some((t, surprise)) = pick
            && !s.checking
            && self.checks.len() < MAX_CHECKS
        {
            s.checking = true;
            if surprise {
                self.stats.checks_surprise += 1;
            } else {
                self.stats.checks_random += 1;
            }
            self.checks.push_back(Check { sender: b.sender, x: t.x, claimed: t.loss });
        }
        let trials = plain;
        out.push(Effect::Trust(s.source, s.weight()));
        if !trials.is_empty() {
            self.stats.used += trials.len() as u64;
            out.push(Effect::Observe(s.source, trials));
        }
        out.push(Effect::Pending(s.source, b.pending));
        out
    }

    /// The next claim to measure (the caller measures it as one of its candidates and reports
    /// with [`Self::on_checked`]).
    ///
    /// None while the checks handed out would exceed [`CHECK_ALLOWANCE`] + the own
    /// measurements / [`OWN_PER_CHECK`]: with many senders, checking each of them (and each
    /// claim beating this node's best) would otherwise be most of the work. The checks wait.
    pub fn next_check(&mut self) -> Option<Check> {
        if self.handed >= CHECK_ALLOWANCE + self.own / OWN_PER_CHECK {
            return None;
        }
        let c = self.checks.pop_front()?;
        self.handed += 1;
        Some(c)
    }

    /// This node measured a checked claim: `measured` is its loss here (`None`: the
    /// measurement failed, which proves nothing; the sender may be checked again).
    pub fn on_checked(&mut self, check: &Check, measured: Option<f64>) -> Vec<Effect> {
        let Some(s) = self.senders.get_mut(&check.sender) else { return Vec::new() };
        s.checking = false;
        let Some(measured) = measured else { return Vec::new() };
        if measured < self.best_own {
            self.best_own = measured;
        }
        if s.banned {
            return Vec::new();
        }
        if !self.agreement.holds(check.claimed, measured) {
            s.banned = true;
            s.held.clear();
            self.stats.senders_banned += 1;
            tracing::warn!(
                sender = %check.sender,
                claimed = check.claimed,
                measured,
                "a shared trial failed its check; the sender's trials are forgotten"
            );
            return vec![Effect::Trust(s.source, 0.0)];
        }
        s.passes = s.passes.saturating_add(1);
        self.stats.checks_passed += 1;
        let mut out = vec![Effect::Trust(s.source, s.weight())];
        // What no longer beats this node's best (now at least the verified figure) beyond the
        // tolerance is used; claims better still wait for their own check.
        out.extend(self.release(check.sender, Some(check)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> Address {
        Address([i; 32])
    }

    fn batch(sender: u8, seq: u64, trials: &[(f64, f64)]) -> Incoming {
        Incoming {
            sender: addr(sender),
            standing: 1.0,
            seq,
            trials: trials.iter().map(|(x, loss)| Evaluated { x: vec![*x], loss: *loss }).collect(),
            pending: vec![vec![0.5]],
        }
    }

    fn book() -> TrialBook {
        TrialBook::new(Agreement { absolute: 0.05, relative: 0.0 }, 7)
    }

    #[test]
    fn trials_wait_in_quarantine_until_their_best_claim_is_confirmed() {
        let mut b = book();
        assert!(b.on_batch(batch(1, 1, &[(0.1, 0.4), (0.2, 0.3)])).is_empty(), "held, nothing used");
        let check = b.next_check().expect("the best claim is checked");
        assert_eq!((check.x.clone(), check.claimed), (vec![0.2], 0.3));
        assert!(b.next_check().is_none(), "one check per sender at a time");
        let effects = b.on_checked(&check, Some(0.32));
        assert_eq!(effects[0], Effect::Trust(1, 0.8), "weight: standing × passes / (passes + 1/4)");
        assert!(matches!(&effects[1], Effect::Observe(1, t) if t.len() == 2));
        // Trusted now: later batches are used at once, weighted by the passes.
        let effects = b.on_batch(batch(1, 2, &[(0.3, 0.5)]));
        assert!(effects.contains(&Effect::Observe(1, vec![Evaluated { x: vec![0.3], loss: 0.5 }])));
        assert!(effects.contains(&Effect::Pending(1, vec![vec![0.5]])));
        assert_eq!(b.stats().used, 3);
    }

    #[test]
    fn an_inflated_claim_is_caught_and_every_trial_of_its_sender_forgotten() {
        let mut b = book();
        b.on_batch(batch(2, 1, &[(0.9, 0.01)]));
        let check = b.next_check().unwrap();
        // Measured here at 0.6: the claim 0.01 beats it far beyond the tolerance.
        assert_eq!(b.on_checked(&check, Some(0.6)), vec![Effect::Trust(1, 0.0)]);
        assert!(b.on_batch(batch(2, 2, &[(0.9, 0.01)])).is_empty(), "a caught sender is ignored");
        assert!(b.next_check().is_none());
        assert_eq!((b.stats().senders_banned, b.trusted()), (1, 0));
    }

    #[test]
    fn a_trusted_senders_claim_beating_ours_waits_for_its_check() {
        let mut b = book();
        b.measured(0.3);
        b.on_batch(batch(3, 1, &[(0.2, 0.31)]));
        let c = b.next_check().unwrap();
        b.on_checked(&c, Some(0.3));
        // Honest for a while, then a claim better than anything measured here: held, checked.
        let lie = b.on_batch(batch(3, 2, &[(0.8, 0.001), (0.5, 0.6)]));
        assert!(
            lie.contains(&Effect::Observe(1, vec![Evaluated { x: vec![0.5], loss: 0.6 }])),
            "the unsurprising trial is used at once, the surprising one is not: {lie:?}"
        );
        let c = b.next_check().expect("a claim beating our best is checked before it is used");
        assert_eq!(c.claimed, 0.001);
        assert_eq!(
            b.on_checked(&c, Some(0.7)),
            vec![Effect::Trust(1, 0.0)],
            "forgotten, the earlier trials too"
        );
    }

    #[test]
    fn replays_strangers_and_a_full_book_are_ignored() {
        let mut b = book();
        b.on_batch(batch(1, 5, &[(0.1, 0.5)]));
        assert!(b.on_batch(batch(1, 5, &[(0.1, 0.5)])).is_empty());
        assert!(b.on_batch(batch(1, 4, &[(0.1, 0.5)])).is_empty());
        let mut stranger = batch(9, 1, &[(0.1, 0.5)]);
        stranger.standing = 0.0;
        assert!(b.on_batch(stranger).is_empty());
        for i in 0..(MAX_SENDERS + 10) {
            let mut x = batch(0, 1, &[(0.1, 0.5)]);
            x.sender = Address(Hash32::from(i).0);
            b.on_batch(x);
        }
        assert_eq!(b.senders.len(), MAX_SENDERS);
        assert!(b.checks.len() <= MAX_CHECKS);
        // Quarantine is bounded per sender.
        let mut b = book();
        for seq in 1..200 {
            b.on_batch(batch(1, seq, &[(0.1, 0.5)]));
        }
        assert_eq!(b.senders[&addr(1)].held.len(), MAX_QUARANTINE);
    }

    #[test]
    fn a_failed_measurement_proves_nothing() {
        let mut b = book();
        b.on_batch(batch(1, 1, &[(0.1, 0.5)]));
        let c = b.next_check().unwrap();
        assert!(b.on_checked(&c, None).is_empty());
        b.on_batch(batch(1, 2, &[(0.2, 0.4)]));
        assert!(b.next_check().is_some(), "checked again with the next batch");
    }

    /// A sender whose claim the chain certified counts as checked: its held trials are used
    /// without a check of ours (before or after its first batch), the certified figure is a bar
    /// for surprises, and a sender this node caught stays ignored.
    #[test]
    fn the_chain_vouches_for_a_certified_claimer() {
        let mut b = book();
        b.on_batch(batch(1, 1, &[(0.1, 0.5), (0.2, 0.45)]));
        let effects = b.certified(addr(1), 0.44);
        assert_eq!(effects[0], Effect::Trust(1, 0.8));
        assert!(matches!(&effects[1], Effect::Observe(1, t) if t.len() == 2), "{effects:?}");
        assert!(b.next_check().is_none(), "its quarantine check is moot");
        // Vouched before its first batch: used at once; the bar is the certified figure, so a
        // claim within the tolerance of it is no surprise, one far beyond it is.
        b.certified(addr(2), 0.3);
        let effects = b.on_batch(batch(2, 1, &[(0.3, 0.27), (0.4, 0.01)]));
        assert!(
            effects.contains(&Effect::Observe(2, vec![Evaluated { x: vec![0.3], loss: 0.27 }])),
            "{effects:?}"
        );
        assert_eq!(b.next_check().map(|c| c.claimed), Some(0.01), "the surprise waits for its check");
        assert_eq!(b.stats().vouched, 2);
        // Caught here first: the chain's word does not bring it back.
        let mut b = book();
        b.on_batch(batch(3, 1, &[(0.9, 0.01)]));
        let c = b.next_check().unwrap();
        b.on_checked(&c, Some(0.6));
        assert!(b.certified(addr(3), 0.5).is_empty());
        assert!(b.on_batch(batch(3, 2, &[(0.9, 0.5)])).is_empty());
        // Vouched senders not seen yet are bounded like the senders.
        let mut b = book();
        for i in 0..(MAX_SENDERS + 10) {
            b.certified(Address(Hash32::from(i).0), 0.5);
        }
        assert_eq!(b.vouched.len(), MAX_SENDERS);
    }

    /// Checks are budgeted: [`CHECK_ALLOWANCE`] at first, then one per [`OWN_PER_CHECK`] own
    /// measurements; the rest wait (their trials stay held, nothing is used unchecked).
    #[test]
    fn checks_wait_for_their_budget() {
        let mut b = book();
        for i in 0..6u8 {
            assert!(b.on_batch(batch(10 + i, 1, &[(0.1, 0.5)])).is_empty(), "held until checked");
        }
        let handed: Vec<Check> = std::iter::from_fn(|| b.next_check()).collect();
        assert_eq!(handed.len() as u64, CHECK_ALLOWANCE);
        for _ in 0..OWN_PER_CHECK - 1 {
            b.measured(0.9);
        }
        assert!(b.next_check().is_none());
        b.measured(0.9);
        assert!(b.next_check().is_some(), "one more after {OWN_PER_CHECK} own measurements");
        assert_eq!(b.handed(), CHECK_ALLOWANCE + 1);
        assert_eq!(b.stats().checks_quarantine, 6);
    }

    /// Distinct addresses for the full-book test.
    struct Hash32([u8; 32]);
    impl From<usize> for Hash32 {
        fn from(i: usize) -> Self {
            let mut a = [1u8; 32];
            a[..8].copy_from_slice(&(i as u64 + 1000).to_le_bytes());
            Self(a)
        }
    }
}
