//! A commit's quorum tally: the decisions of the verification pipeline as a pure state machine.
//!
//! Votes and the current time go in; a [`Decision`] comes out — wait, escalate (and why),
//! certify with these votes, or give up because too few escalation members are left. No
//! clock, network, store or signature is touched here: the node feeds it gossiped votes and its
//! tick (`node/pipeline.rs`, `node/timers.rs`), `doin sim` feeds it simulated votes in
//! simulated time (an `Instant` offset from the run's start), and both run the same rules.
//!
//! The rules (DESIGN §4.4): the first-round quorum's votes all agreeing within the domain's
//! tolerance certify at their median; a disagreeing complete round, a vote still missing
//! `quorum_timeout` after the first one came (or, with none at all, after the quorum's window
//! from the reveal), or a missing member that has left the domain's quorums (it will not vote)
//! escalates; the escalation certifies once `quorum_fraction` of its members agree with the
//! median of the votes it has.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use doin_consensus::certs;
use doin_primitives::{Address, DomainSpec, Metric};

/// Votes kept per commit at most (both rounds; a quorum is far smaller).
pub const MAX_VOTES: usize = 256;

/// Why a first round escalated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Every member voted; the figures do not agree.
    Disagreeing,
    /// A member whose vote is missing left the domain's quorums.
    MemberLeft,
    /// A vote is still missing past the timeout.
    TimedOut,
}

impl Why {
    /// How the node says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disagreeing => "disagreeing votes",
            Self::MemberLeft => "a member left the domain's quorums",
            Self::TimedOut => "quorum timed out",
        }
    }
}

/// What to do about a commit now.
#[derive(Debug, PartialEq)]
pub enum Decision<V> {
    /// Votes are still expected.
    Wait,
    /// The first round cannot decide: the escalation quorum measures (members start
    /// evaluating). Returned once.
    Escalate(Why),
    /// Enough agreeing votes: the certificate's median, its first-round votes and (when it
    /// escalated) its escalation votes.
    Certify { median: Metric, first: Vec<V>, escalation: Vec<V> },
    /// Escalated, and fewer escalation members have voted or can still vote than the agreeing
    /// votes it needs.
    Undecidable,
}

/// The quorum a commit is judged by and the timing it runs under.
#[derive(Clone, Copy, Debug)]
pub struct Round<'a> {
    /// First-round members.
    pub first: &'a [Address],
    /// Escalation members.
    pub escalation: &'a [Address],
    /// The domain's tolerance, quorum fraction and limits.
    pub spec: &'a DomainSpec,
    /// When the reveal arrived.
    pub revealed_at: Instant,
    /// How long after the first vote the missing ones count as missing.
    pub quorum_timeout: Duration,
}

impl Round<'_> {
    /// How long a first round with no vote at all may take: the timeout and the domain's
    /// evaluation limit (timing out from the reveal escalated `mlp_digits` claims whose training
    /// outlasted the 8 s devnet timeout).
    pub fn window(&self) -> Duration {
        window(self.quorum_timeout, self.spec)
    }
}

/// The first round's window with no vote at all: the timeout and the domain's evaluation limit.
pub fn window(quorum_timeout: Duration, spec: &DomainSpec) -> Duration {
    quorum_timeout + Duration::from_millis(spec.limits.max_wall_ms)
}

/// Agreeing escalation votes needed out of `size` members: `quorum_fraction` of them, rounded up.
pub fn escalation_needed(size: usize, spec: &DomainSpec) -> usize {
    (size * spec.quorum.fraction_num as usize).div_ceil((spec.quorum.fraction_den as usize).max(1))
}

/// One commit's votes (`V`: the signed vote the certificate carries; the simulator's own).
#[derive(Clone, Debug)]
pub struct Tally<V> {
    votes: BTreeMap<(u8, Address), (Metric, V)>,
    first_vote_at: Option<Instant>,
    escalated: bool,
}

impl<V> Default for Tally<V> {
    fn default() -> Self {
        Self { votes: BTreeMap::new(), first_vote_at: None, escalated: false }
    }
}

impl<V: Clone> Tally<V> {
    /// Records `evaluator`'s vote of round `round` (escalation rounds count as 1) at `now`;
    /// whether it is new (a second vote of one member and round, or one past [`MAX_VOTES`], is
    /// dropped).
    pub fn add(&mut self, round: u8, evaluator: Address, measured: Metric, vote: V, now: Instant) -> bool {
        let key = (round.min(1), evaluator);
        if self.votes.len() >= MAX_VOTES || self.votes.contains_key(&key) {
            return false;
        }
        if key.0 == 0 {
            self.first_vote_at.get_or_insert(now);
        }
        self.votes.insert(key, (measured, vote));
        true
    }

    /// Whether `evaluator` voted in `round`.
    pub fn voted(&self, round: u8, evaluator: &Address) -> bool {
        self.votes.contains_key(&(round.min(1), *evaluator))
    }

    /// Whether the first round escalated.
    pub fn escalated(&self) -> bool {
        self.escalated
    }

    /// Whether the first round's missing votes count as missing at `now`: `quorum_timeout`
    /// after its first vote (the others had as long as that evaluator to finish) or, with no
    /// vote at all, once the round's window has passed.
    pub fn timed_out(&self, round: &Round<'_>, now: Instant) -> bool {
        match self.first_vote_at {
            Some(t) => now.saturating_duration_since(t) >= round.quorum_timeout,
            None => now.saturating_duration_since(round.revealed_at) >= round.window(),
        }
    }

    /// The votes of `members` in `round`, in member order.
    fn of(&self, round: u8, members: &[Address]) -> Vec<(Metric, V)> {
        members.iter().filter_map(|a| self.votes.get(&(round, *a)).cloned()).collect()
    }

    /// Whether an escalation could no longer decide: fewer of its members have voted or are
    /// still staked evaluators of the domain (`evaluates`) than the agreeing votes it needs.
    pub fn undecidable(&self, round: &Round<'_>, evaluates: impl Fn(&Address) -> bool) -> bool {
        let able = round.escalation.iter().filter(|a| self.voted(1, a) || evaluates(a)).count();
        able < escalation_needed(round.escalation.len(), round.spec)
    }

    /// What to do at `now`; `evaluates(member)`: whether a member is still staked as an
    /// evaluator of the domain (on the node's tip).
    pub fn decide(
        &mut self,
        round: &Round<'_>,
        now: Instant,
        evaluates: impl Fn(&Address) -> bool,
    ) -> Decision<V> {
        let spec = round.spec;
        let agree =
            |values: &[Metric], m: Metric| values.iter().filter(|v| certs::agrees(spec, **v, m)).count();
        let first = self.of(0, round.first);
        let first_values: Vec<Metric> = first.iter().map(|(m, _)| *m).collect();
        let strip = |votes: Vec<(Metric, V)>| votes.into_iter().map(|(_, v)| v).collect::<Vec<V>>();
        if !self.escalated {
            let median = certs::median(&first_values);
            let complete = !first.is_empty() && first.len() == round.first.len();
            if complete && agree(&first_values, median) == first_values.len() {
                return Decision::Certify { median, first: strip(first), escalation: Vec::new() };
            }
            let member_left = round.first.iter().any(|a| !self.voted(0, a) && !evaluates(a));
            let why = if complete {
                Why::Disagreeing
            } else if member_left {
                Why::MemberLeft
            } else if self.timed_out(round, now) {
                Why::TimedOut
            } else {
                return Decision::Wait;
            };
            self.escalated = true;
            return Decision::Escalate(why);
        }
        if self.undecidable(round, &evaluates) {
            return Decision::Undecidable;
        }
        let second = self.of(1, round.escalation);
        let needed = escalation_needed(round.escalation.len(), spec);
        let values: Vec<Metric> = second.iter().map(|(m, _)| *m).collect();
        if values.is_empty() {
            return Decision::Wait;
        }
        let median = certs::median(&values);
        if agree(&values, median) < needed {
            return Decision::Wait;
        }
        Decision::Certify { median, first: strip(first), escalation: strip(second) }
    }
}

#[cfg(test)]
mod tests {
    use doin_primitives::{Hash, domain::Direction};

    use super::*;

    fn spec() -> DomainSpec {
        use doin_consensus::testkit::{TestNet, domain_id};
        let net = TestNet::new(4, 3, 1);
        let mut s = net.state.domain(&domain_id()).expect("the test domain").spec.clone();
        s.direction = Direction::Minimize;
        s
    }

    fn who(i: u8) -> Address {
        Address(Hash::of(&[i]).0)
    }

    fn m(v: f64) -> Metric {
        Metric::from_f64(v).unwrap()
    }

    struct Case {
        spec: DomainSpec,
        first: Vec<Address>,
        escalation: Vec<Address>,
        t0: Instant,
    }

    impl Case {
        fn new() -> Self {
            Self {
                spec: spec(),
                first: (0..3).map(who).collect(),
                escalation: (0..7).map(who).collect(),
                t0: Instant::now(),
            }
        }
        fn round(&self) -> Round<'_> {
            Round {
                first: &self.first,
                escalation: &self.escalation,
                spec: &self.spec,
                revealed_at: self.t0,
                quorum_timeout: Duration::from_secs(8),
            }
        }
        fn at(&self, s: u64) -> Instant {
            self.t0 + Duration::from_secs(s)
        }
    }

    #[test]
    fn agreeing_first_round_certifies_at_its_median() {
        let c = Case::new();
        let mut t: Tally<u8> = Tally::default();
        for i in 0..3 {
            assert!(t.add(0, who(i), m(1.0 + f64::from(i) * 1e-9), i, c.at(1)));
            let d = t.decide(&c.round(), c.at(1), |_| true);
            if i < 2 {
                assert_eq!(d, Decision::Wait);
            } else {
                assert_eq!(
                    d,
                    Decision::Certify { median: m(1.0 + 1e-9), first: vec![0, 1, 2], escalation: vec![] }
                );
            }
        }
    }

    #[test]
    fn a_member_cannot_vote_twice_nor_a_stranger_fill_the_tally() {
        let c = Case::new();
        let mut t: Tally<u8> = Tally::default();
        assert!(t.add(0, who(0), m(1.0), 0, c.at(1)));
        assert!(!t.add(0, who(0), m(9.0), 1, c.at(1)), "a second first-round vote is dropped");
        for i in 0..=255u8 {
            t.add(1, Address(Hash::of(&[i, 1]).0), m(1.0), i, c.at(1));
        }
        assert!(!t.add(0, who(1), m(1.0), 1, c.at(1)), "bounded at {MAX_VOTES}");
    }

    #[test]
    fn disagreement_escalates_once_and_the_escalation_decides_by_its_fraction() {
        let c = Case::new();
        let mut t: Tally<u8> = Tally::default();
        t.add(0, who(0), m(1.0), 0, c.at(1));
        t.add(0, who(1), m(1.0), 1, c.at(1));
        t.add(0, who(2), m(5.0), 2, c.at(1));
        assert_eq!(t.decide(&c.round(), c.at(1), |_| true), Decision::Escalate(Why::Disagreeing));
        assert!(t.escalated());
        assert_eq!(t.decide(&c.round(), c.at(1), |_| true), Decision::Wait, "escalates once");
        let needed = escalation_needed(7, &c.spec);
        for i in 0..needed as u8 {
            assert_eq!(t.decide(&c.round(), c.at(2), |_| true), Decision::Wait);
            t.add(1, who(i), m(1.0), 10 + i, c.at(2));
        }
        match t.decide(&c.round(), c.at(2), |_| true) {
            Decision::Certify { median, first, escalation } => {
                assert_eq!(median, m(1.0));
                assert_eq!(first, vec![0, 1, 2]);
                assert_eq!(escalation.len(), needed);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_missing_vote_escalates_after_the_timeout_from_the_first_vote_or_the_window() {
        let c = Case::new();
        let mut t: Tally<u8> = Tally::default();
        assert_eq!(t.decide(&c.round(), c.at(8), |_| true), Decision::Wait, "no vote: the window is longer");
        let window = c.round().window();
        assert_eq!(t.clone().decide(&c.round(), c.t0 + window, |_| true), Decision::Escalate(Why::TimedOut));
        t.add(0, who(0), m(1.0), 0, c.at(3));
        t.add(0, who(1), m(1.0), 1, c.at(4));
        assert_eq!(t.decide(&c.round(), c.at(10), |_| true), Decision::Wait, "8 s after the first vote");
        assert_eq!(t.decide(&c.round(), c.at(11), |_| true), Decision::Escalate(Why::TimedOut));
    }

    #[test]
    fn a_missing_member_that_left_escalates_at_once() {
        let c = Case::new();
        let mut t: Tally<u8> = Tally::default();
        t.add(0, who(0), m(1.0), 0, c.at(1));
        // Member 1 voted and left since: its vote still counts; member 2 left without voting.
        t.add(0, who(1), m(1.0), 1, c.at(1));
        let left = |a: &Address| *a != who(1) && *a != who(2);
        assert_eq!(t.decide(&c.round(), c.at(1), left), Decision::Escalate(Why::MemberLeft));
    }

    #[test]
    fn an_escalation_too_few_members_can_still_vote_in_is_undecidable() {
        let c = Case::new();
        let mut t: Tally<u8> = Tally::default();
        t.add(0, who(0), m(1.0), 0, c.at(1));
        assert_eq!(t.decide(&c.round(), c.at(9), |_| true), Decision::Escalate(Why::TimedOut));
        let needed = escalation_needed(7, &c.spec);
        // Members 0..needed-1 voted; every other one left: one vote short for good.
        for i in 0..(needed - 1) as u8 {
            t.add(1, who(i), m(1.0), i, c.at(10));
        }
        let staying = |a: &Address| (0..(needed - 1) as u8).any(|i| who(i) == *a);
        assert_eq!(t.decide(&c.round(), c.at(10), staying), Decision::Undecidable);
        assert_eq!(t.decide(&c.round(), c.at(10), |_| true), Decision::Wait, "all staying: wait for them");
    }
}
