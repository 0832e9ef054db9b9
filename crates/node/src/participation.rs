//! Whether this node can evaluate each of its domains, and its stake saying so.
//!
//! An evaluator whose domain cannot evaluate (a dead plugin, a broken environment) still holds
//! seats in the quorums drawn from its stake, and every quorum it sits in waits out its
//! timeout and escalates. So a node that finds it cannot evaluate leaves the domain's quorums
//! on chain: it stakes again with the domain removed (a zero top-up, which keeps the bond and
//! re-sets roles and domains), and rejoins the same way once it can evaluate again.
//!
//! Failures alone do not decide it: an optimizer can reveal parameters that make evaluations
//! fail (or even crash a plugin), and honest evaluators must not leave because of it. A failure
//! of any kind (a quorum evaluation, a whole failed batch of the optimizer loop, a plugin
//! waiting out its restart backoff) starts a *probe*: an evaluation of a known-good point (the
//! verified champion's parameters, or the centre of the space). The node leaves after
//! [`WITHDRAW_AFTER`] failed probes in a row, keeps probing while out, and rejoins after a
//! probe, or any evaluation of its own, succeeds.
//!
//! The decisions here are a pure state machine ([`Participation::step`]); the node runs the
//! probes and submits the stake transactions.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Failed probes in a row after which the node leaves the domain's quorums.
pub const WITHDRAW_AFTER: u32 = 2;
/// Wait between probes while the node still serves the domain.
pub const PROBE_RETRY: Duration = Duration::from_secs(2);
/// Wait between probes once the node has left the domain's quorums.
pub const PROBE_WHILE_OUT: Duration = Duration::from_secs(30);
/// How long a stake transaction of ours may stay pending before it is sent again.
pub const TX_PATIENCE: Duration = Duration::from_secs(30);
/// Probes in a row that found the domain waiting out a plugin's restart backoff before that
/// counts as a failure. A backoff alone proves little — an attacker's candidates can crash a
/// plugin into one — but a plugin that never leaves its backoff cannot evaluate.
pub const INCONCLUSIVE_LIMIT: u32 = 5;

/// Outcomes of one domain's evaluations on this node, shared with the optimizer loop and the
/// evaluation tasks (counters only: they never block an evaluation).
#[derive(Debug, Default)]
pub struct EvalHealth {
    failures: AtomicU64,
    successes: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl EvalHealth {
    /// An evaluation that produced a figure.
    pub fn ok(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
    }

    /// An evaluation that failed, and why.
    pub fn failed(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.chars().take(300).collect());
        }
    }

    /// Failures and successes so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.failures.load(Ordering::Relaxed), self.successes.load(Ordering::Relaxed))
    }

    /// The latest failure's message.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// How a probe ended: `Ok`, or failed with the wait the domain asked for (a plugin's backoff).
pub type ProbeOutcome = Result<(), Option<Duration>>;

/// Where a running probe leaves its outcome for the node's next step.
pub type ProbeSlot = std::sync::Arc<Mutex<Option<ProbeOutcome>>>;

/// What the node should do for a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Evaluate a known-good point and report with [`Participation::probed`].
    Probe,
    /// Stake with the domain removed: leave its quorums.
    Withdraw,
    /// Stake with the domain added back.
    Rejoin,
}

/// Where the node stands in a domain's quorums, as the status endpoints show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Evaluates (or has seen no reason to doubt it can).
    Serving,
    /// An evaluation failed; known-good points are being evaluated to tell whether the domain
    /// or the candidate is broken.
    Probing,
    /// Cannot evaluate: left (or is leaving) the domain's quorums.
    Withdrawn,
}

impl Standing {
    /// The name in `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Probing => "probing",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// One domain's participation state.
#[derive(Debug)]
pub struct Participation {
    /// Evaluation outcomes seen so far (failures, successes).
    seen: (u64, u64),
    probing: bool,
    failed_probes: u32,
    next_probe: Option<Instant>,
    /// Cannot evaluate (probes failed).
    withdrawn: bool,
    /// We removed the domain from our stake (so we add it back once we can evaluate).
    left: bool,
    /// We staked the domain back; not on chain yet.
    rejoining: bool,
    /// When our latest stake transaction for this domain was sent.
    sent: Option<Instant>,
    /// Probes in a row that found the domain unavailable (a plugin's backoff).
    inconclusive: u32,
    /// After a successful probe, failures start no new probe until then.
    quiet_until: Option<Instant>,
    /// A domain left before a restart: probe before anything else.
    probe_first: bool,
}

impl Participation {
    /// A domain this node serves, or one it `left` before a restart: that one is probed at once
    /// and rejoined if the probe succeeds.
    pub fn new(left: bool) -> Self {
        Self {
            seen: (0, 0),
            probing: false,
            failed_probes: if left { WITHDRAW_AFTER - 1 } else { 0 },
            next_probe: None,
            withdrawn: left,
            left,
            rejoining: false,
            sent: None,
            inconclusive: 0,
            quiet_until: None,
            probe_first: left,
        }
    }

    /// Whether we removed the domain from our stake (remembered across restarts).
    pub fn left(&self) -> bool {
        self.left
    }

    /// Whether the domain belongs in our stake: not if we left its quorums, unless we are
    /// rejoining them. (A domain the operator never staked stays out: `Rejoin` only undoes our
    /// own `Withdraw`.)
    pub fn in_stake(&self) -> bool {
        !self.left || self.rejoining
    }

    /// Whether we are staking the domain back.
    pub fn rejoining(&self) -> bool {
        self.rejoining
    }

    /// Where the node stands.
    pub fn standing(&self) -> Standing {
        if self.withdrawn {
            Standing::Withdrawn
        } else if self.probing || self.failed_probes > 0 {
            Standing::Probing
        } else {
            Standing::Serving
        }
    }

    /// The next action at `now`, given the domain's evaluation outcomes so far, whether the
    /// chain (at our tip) has us staked as an evaluator of the domain, and whether a stake
    /// transaction of ours is pending in the mempool.
    pub fn step(
        &mut self,
        now: Instant,
        counts: (u64, u64),
        on_chain: bool,
        tx_pending: bool,
    ) -> Option<Action> {
        let (failures, successes) = counts;
        let new_failures = failures > self.seen.0;
        let new_successes = successes > self.seen.1;
        self.seen = counts;
        let may_send = !tx_pending && self.sent.is_none_or(|t| now.duration_since(t) >= TX_PATIENCE);
        if self.probe_first {
            // Restarted out of the quorums: the domain may work again (or the chain may have
            // moved on without us); a probe decides before any transaction.
            if !self.probing {
                (self.probing, self.probe_first) = (true, false);
                return Some(Action::Probe);
            }
            return None;
        }
        // Any evaluation of our own that worked while out (the optimizer loop keeps trying
        // after a plugin's backoff) is as good as a probe.
        if self.withdrawn && new_successes && !new_failures {
            self.failed_probes = 0;
        }
        let can_evaluate = self.failed_probes == 0 && !self.probing;
        if self.withdrawn && can_evaluate {
            if self.left && !on_chain {
                if may_send {
                    (self.rejoining, self.sent) = (true, Some(now));
                    return Some(Action::Rejoin);
                }
                return None;
            }
            if !tx_pending {
                (self.withdrawn, self.left, self.rejoining, self.sent) = (false, false, false, None);
            }
            return None;
        }
        if !self.withdrawn && self.failed_probes >= WITHDRAW_AFTER && !self.probing {
            self.withdrawn = true;
        }
        if self.withdrawn && on_chain && may_send {
            // Leave; or our withdrawal never made it, or the operator staked the domain again
            // while it still cannot evaluate: leave again.
            (self.left, self.rejoining, self.sent) = (true, false, Some(now));
            return Some(Action::Withdraw);
        }
        if self.probing {
            return None;
        }
        let due = self.next_probe.is_some_and(|t| now >= t);
        let quiet = self.quiet_until.is_some_and(|t| now < t);
        let first = self.next_probe.is_none() && !quiet && (new_failures || self.withdrawn);
        if due || first {
            self.probing = true;
            self.next_probe = None;
            return Some(Action::Probe);
        }
        None
    }

    /// A probe finished at `now`: `Ok`, or failed — with the wait the domain asked for when it
    /// was unavailable (a plugin's backoff), which is inconclusive up to
    /// [`INCONCLUSIVE_LIMIT`] times in a row.
    pub fn probed(&mut self, now: Instant, outcome: ProbeOutcome) {
        self.probing = false;
        match outcome {
            Ok(()) => {
                (self.failed_probes, self.inconclusive) = (0, 0);
                self.next_probe = None;
                self.quiet_until = Some(now + PROBE_WHILE_OUT);
            }
            Err(Some(wait)) if self.inconclusive + 1 < INCONCLUSIVE_LIMIT => {
                self.inconclusive += 1;
                self.next_probe = Some(now + wait.clamp(PROBE_RETRY, PROBE_WHILE_OUT));
            }
            Err(_) => {
                self.inconclusive = 0;
                self.failed_probes = self.failed_probes.saturating_add(1);
                let pause = if self.withdrawn || self.failed_probes >= WITHDRAW_AFTER {
                    PROBE_WHILE_OUT
                } else {
                    PROBE_RETRY
                };
                self.next_probe = Some(now + pause);
            }
        }
    }
}

/// The file in the data directory that names the domains whose quorums this node left.
const LEFT_FILE: &str = "left_quorums.json";

/// The domains whose quorums this node left before it stopped (an unreadable record reads as
/// none: the node then serves, and leaves again if it still cannot evaluate).
pub fn load_left(data_dir: &Path) -> BTreeSet<String> {
    std::fs::read(data_dir.join(LEFT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Forgets which quorums this node left (its chain is being reset).
pub fn forget_left(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(LEFT_FILE));
}

/// Records the domains whose quorums this node left (written whole, then renamed).
pub fn save_left(data_dir: &Path, left: &BTreeSet<String>) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{LEFT_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(left)?)?;
    std::fs::rename(tmp, data_dir.join(LEFT_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_probe(p: &mut Participation, now: Instant, counts: (u64, u64), ok: bool) {
        assert_eq!(p.step(now, counts, true, false), Some(Action::Probe));
        assert_eq!(p.standing(), Standing::Probing);
        p.probed(now, if ok { Ok(()) } else { Err(None) });
    }

    #[test]
    fn failures_the_probe_contradicts_change_nothing() {
        // A candidate that breaks evaluations (an optimizer's trap) fails; the champion's
        // point does not: the node keeps its seats.
        let now = Instant::now();
        let mut p = Participation::new(false);
        assert_eq!(p.step(now, (0, 5), true, false), None);
        for round in 1..=10u64 {
            let t = now + PROBE_WHILE_OUT * round as u32;
            run_probe(&mut p, t, (round, 5), true);
            assert_eq!(p.standing(), Standing::Serving);
            assert_eq!(p.step(t, (round, 5), true, false), None);
        }
    }

    #[test]
    fn a_domain_that_cannot_evaluate_is_left_and_rejoined_once_it_can() {
        let now = Instant::now();
        let mut p = Participation::new(false);
        run_probe(&mut p, now, (1, 0), false);
        // Not yet: one failed probe may be bad luck; the next comes after PROBE_RETRY.
        assert_eq!(p.step(now, (2, 0), true, false), None);
        let t = now + PROBE_RETRY;
        run_probe(&mut p, t, (3, 0), false);
        assert_eq!(p.step(t, (3, 0), true, false), Some(Action::Withdraw));
        assert_eq!(p.standing(), Standing::Withdrawn);
        // The withdrawal pending: nothing is sent twice; once on chain, nothing either.
        assert_eq!(p.step(t, (3, 0), true, true), None);
        assert_eq!(p.step(t, (3, 0), false, false), None);
        // Probes continue while out, at the slower pace.
        assert_eq!(p.step(t + PROBE_RETRY, (3, 0), false, false), None);
        let t = t + PROBE_WHILE_OUT;
        assert_eq!(p.step(t, (4, 0), false, false), Some(Action::Probe));
        p.probed(t, Err(None));
        assert_eq!(p.step(t + PROBE_WHILE_OUT, (4, 0), false, false), Some(Action::Probe));
        p.probed(t + PROBE_WHILE_OUT, Ok(()));
        let t = t + PROBE_WHILE_OUT;
        assert!(!p.in_stake());
        assert_eq!(p.step(t, (4, 0), false, false), Some(Action::Rejoin));
        assert!(p.in_stake());
        assert_eq!(p.step(t, (4, 0), false, true), None, "the rejoin is pending");
        assert_eq!(p.standing(), Standing::Withdrawn);
        assert_eq!(p.step(t, (4, 0), true, false), None);
        assert_eq!(p.standing(), Standing::Serving);
    }

    #[test]
    fn an_own_success_rejoins_without_waiting_for_a_probe() {
        let now = Instant::now();
        let mut p = Participation::new(true);
        assert_eq!(p.step(now, (0, 0), false, false), Some(Action::Probe), "a restarted node probes at once");
        p.probed(now, Err(None));
        assert_eq!(p.step(now, (0, 1), false, false), Some(Action::Rejoin));
    }

    #[test]
    fn a_backoff_is_inconclusive_until_it_lasts() {
        // An attacker's candidates crash the plugin into a backoff: the probes that meet it
        // decide nothing, and the one after it succeeds.
        let now = Instant::now();
        let wait = Err(Some(Duration::from_secs(4)));
        let mut p = Participation::new(false);
        let mut t = now;
        for _ in 0..INCONCLUSIVE_LIMIT - 1 {
            assert_eq!(p.step(t, (p.seen.0 + 1, 0), true, false), Some(Action::Probe));
            p.probed(t, wait);
            t += Duration::from_secs(4);
        }
        assert_eq!(p.standing(), Standing::Serving, "no failure counted");
        assert_eq!(p.step(t, (p.seen.0, 0), true, false), Some(Action::Probe));
        p.probed(t, Ok(()));
        // A plugin that never leaves its backoff: the fifth counts, and so on.
        let mut p = Participation::new(false);
        let mut t = now;
        let mut left = false;
        for _ in 0..4 * INCONCLUSIVE_LIMIT {
            match p.step(t, (p.seen.0 + 1, 0), true, false) {
                Some(Action::Probe) => p.probed(t, wait),
                Some(Action::Withdraw) => left = true,
                _ => {}
            }
            t += PROBE_WHILE_OUT;
        }
        assert!(left, "a domain stuck in its backoff is left");
    }

    #[test]
    fn failures_right_after_a_good_probe_start_no_new_probe() {
        let now = Instant::now();
        let mut p = Participation::new(false);
        run_probe(&mut p, now, (1, 0), true);
        assert_eq!(p.step(now + PROBE_RETRY, (50, 0), true, false), None, "quiet");
        assert_eq!(p.step(now + PROBE_WHILE_OUT, (51, 0), true, false), Some(Action::Probe));
    }

    #[test]
    fn a_lost_withdrawal_is_sent_again_after_its_patience() {
        let now = Instant::now();
        let mut p = Participation::new(false);
        run_probe(&mut p, now, (1, 0), false);
        run_probe(&mut p, now + PROBE_RETRY, (1, 0), false);
        assert_eq!(p.step(now + PROBE_RETRY, (1, 0), true, false), Some(Action::Withdraw));
        // Never included, and gone from the mempool.
        assert_eq!(p.step(now + PROBE_RETRY * 2, (1, 0), true, false), None);
        let later = now + PROBE_RETRY + TX_PATIENCE;
        assert_eq!(p.step(later, (1, 0), true, false), Some(Action::Withdraw));
    }
}
