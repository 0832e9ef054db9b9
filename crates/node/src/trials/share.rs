//! The optimizer loop's side of shared trials: batches from other nodes through the
//! [`TrialBook`] into the optimizer, the book's spot checks measured with the loop's own
//! candidates, and this node's trials queued for the node to sign and publish.
//!
//! Points travel in the domain's own unit cube (every node knows the domain's space by its id);
//! the loop searches its `param_bounds`-narrowed cube, so points are converted both ways, and
//! trials outside this node's bounds are not learned.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::Receiver,
    },
    time::{Duration, Instant},
};

use doin_optimize::{Evaluated, Optimizer, Space};

use super::{Check, Effect, Incoming, TrialBook};

/// Own trials queued before a batch is sent at the latest.
pub const FLUSH_TRIALS: usize = 16;
/// A batch is sent at least this often while trials are queued (and never more often than the
/// receivers' gap allows).
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Batches taken from the channel per loop turn at most.
const RECEIVE_PER_TURN: usize = 64;

/// This node's trials for the node to sign and publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The domain.
    pub domain: String,
    /// (point in the domain's cube, loss, cost in ms).
    pub trials: Vec<(Vec<f64>, f64, u32)>,
    /// Points in flight, in the domain's cube.
    pub pending: Vec<Vec<f64>>,
}

/// Counters for status and metrics (the loop writes, the node reads).
#[derive(Debug, Default)]
pub struct SharingCounters {
    /// Trials received in admitted batches.
    pub received: AtomicU64,
    /// Trials handed to the optimizer.
    pub used: AtomicU64,
    /// Spot checks that agreed.
    pub checks_passed: AtomicU64,
    /// Senders caught by a check.
    pub senders_banned: AtomicU64,
    /// Checks of other nodes' claims measured here (passed or not).
    pub checks: AtomicU64,
    /// Senders trusted because the chain certified one of their claims.
    pub vouched: AtomicU64,
    /// Senders whose trials are used now.
    pub trusted: AtomicU64,
    /// Own trials sent.
    pub published: AtomicU64,
}

/// The loop's sharing state.
pub struct Sharing {
    book: TrialBook,
    incoming: Receiver<Incoming>,
    outgoing: tokio::sync::mpsc::Sender<Outgoing>,
    domain: String,
    /// The domain's own space (what points travel in).
    full: Space,
    counters: Arc<SharingCounters>,
    outbox: Vec<(Vec<f64>, f64, u32)>,
    last_flush: Instant,
    check: Option<Check>,
    /// Senders whose trials are for this node's population (`None`: every sender's).
    island: Option<std::collections::BTreeSet<doin_primitives::Address>>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing").field("domain", &self.domain).field("queued", &self.outbox.len()).finish()
    }
}

/// A point of the search cube in the domain's own cube.
pub fn to_shared(search: &Space, full: &Space, x: &[f64]) -> Vec<f64> {
    full.encode(&search.decode(x))
}

/// A point of the domain's own cube in the search cube, unless it lies outside the search's
/// bounds (then `None`: encoding would clamp it onto the bounds, a point no one measured).
pub fn from_shared(search: &Space, full: &Space, x: &[f64]) -> Option<Vec<f64>> {
    if x.len() != full.len() || x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let values = full.decode(x);
    let y = search.encode(&values);
    let (a, b) = (full.encode(&values), full.encode(&search.decode(&y)));
    a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6).then_some(y)
}

impl Sharing {
    /// Sharing for `domain` (whose own space is `full`).
    pub fn new(
        book: TrialBook,
        incoming: Receiver<Incoming>,
        outgoing: tokio::sync::mpsc::Sender<Outgoing>,
        domain: String,
        full: Space,
        counters: Arc<SharingCounters>,
    ) -> Self {
        Self {
            book,
            incoming,
            outgoing,
            domain,
            full,
            counters,
            outbox: Vec::new(),
            last_flush: Instant::now(),
            check: None,
            island: None,
        }
    }

    /// Takes trials only from these senders (the optimizers of this node's island of a split
    /// population, `optimizer::Place::islands`); the others' batches are dropped unread.
    pub fn only_from(mut self, senders: std::collections::BTreeSet<doin_primitives::Address>) -> Self {
        self.island = Some(senders);
        self
    }

    /// Takes the batches that arrived and applies what the book makes of them. An optimizer
    /// that does not learn from other nodes' trials gets none, and no checks are spent on them.
    pub fn receive(&mut self, search: &Space, opt: &mut dyn Optimizer) {
        for _ in 0..RECEIVE_PER_TURN {
            let Ok(mut batch) = self.incoming.try_recv() else { break };
            if !opt.learns_shared() || self.island.as_ref().is_some_and(|s| !s.contains(&batch.sender)) {
                continue;
            }
            batch.trials = batch
                .trials
                .into_iter()
                .filter_map(|t| Some(Evaluated { x: from_shared(search, &self.full, &t.x)?, loss: t.loss }))
                .collect();
            batch.pending = batch.pending.iter().filter_map(|p| from_shared(search, &self.full, p)).collect();
            let effects = self.book.on_batch(batch);
            apply(opt, effects);
        }
        self.publish_counters();
    }

    /// A claim to measure with this batch (a point of the search cube), if one waits.
    pub fn take_check(&mut self) -> Option<Vec<f64>> {
        if self.check.is_some() {
            return None;
        }
        let c = self.book.next_check()?;
        let x = c.x.clone();
        self.check = Some(c);
        Some(x)
    }

    /// The outcome of the check taken last: its loss here (`None`: the measurement failed).
    pub fn checked(&mut self, loss: Option<f64>, opt: &mut dyn Optimizer) {
        if let Some(c) = self.check.take() {
            let effects = self.book.on_checked(&c, loss.filter(|l| l.is_finite()));
            apply(opt, effects);
            self.publish_counters();
        }
    }

    /// The chain certified `by`'s claim at `loss` (a verified champion this node was told of):
    /// the book vouches for the sender and takes the figure as a bar. (An optimizer that does
    /// not learn other nodes' trials gets none, so its book is left alone.)
    pub fn certified(&mut self, by: doin_primitives::Address, loss: f64, opt: &mut dyn Optimizer) {
        if !opt.learns_shared() {
            return;
        }
        let effects = self.book.certified(by, loss);
        apply(opt, effects);
        self.publish_counters();
    }

    /// This node's own results: the book learns its best, and they wait for the next batch.
    pub fn record(&mut self, search: &Space, told: &[Evaluated], cost_ms: u32) {
        for e in told.iter().filter(|e| e.loss.is_finite()) {
            self.book.measured(e.loss);
            if self.outbox.len() >= FLUSH_TRIALS * 4 {
                self.outbox.remove(0);
            }
            self.outbox.push((to_shared(search, &self.full, &e.x), e.loss, cost_ms));
        }
    }

    /// Sends the queued trials with the points in flight once [`FLUSH_TRIALS`] wait or
    /// [`FLUSH_EVERY`] passed (with something to say); a full channel keeps them for the next
    /// try. The loop calls it right after asking a batch, so the points in flight are that
    /// batch: the other nodes' next proposals stay away from them while they are measured here.
    /// (Called after telling, it would find nothing in flight: the next batch is not asked yet.)
    /// Only a node whose optimizer learns from shared trials publishes its own (TPE, SHADE
    /// islands run together): an optimizer of its own (CMA-ES, GA, a lone SHADE) gossips
    /// nothing extra.
    pub fn flush(&mut self, search: &Space, opt: &dyn Optimizer, now: Instant) {
        if !opt.learns_shared() {
            self.outbox.clear();
            return;
        }
        let since = now.duration_since(self.last_flush);
        if since < Duration::from_millis(1_100) {
            return;
        }
        let in_flight = opt.in_flight();
        let due = self.outbox.len() >= FLUSH_TRIALS
            || ((!self.outbox.is_empty() || !in_flight.is_empty()) && since >= FLUSH_EVERY);
        if !due {
            return;
        }
        let take = self.outbox.len().min(doin_primitives::trials::MAX_BATCH_TRIALS);
        let trials: Vec<(Vec<f64>, f64, u32)> = self.outbox.drain(..take).collect();
        let pending: Vec<Vec<f64>> = in_flight
            .iter()
            .take(doin_primitives::trials::MAX_BATCH_PENDING)
            .map(|x| to_shared(search, &self.full, x))
            .collect();
        let n = trials.len() as u64;
        match self.outgoing.try_send(Outgoing { domain: self.domain.clone(), trials, pending }) {
            Ok(()) => {
                self.counters.published.fetch_add(n, Ordering::Relaxed);
                self.last_flush = now;
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                // Put them back in front: they go with the next batch.
                let mut again = back.trials;
                again.append(&mut self.outbox);
                self.outbox = again;
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn publish_counters(&self) {
        let s = self.book.stats();
        let c = &self.counters;
        c.received.store(s.received, Ordering::Relaxed);
        c.used.store(s.used, Ordering::Relaxed);
        c.checks_passed.store(s.checks_passed, Ordering::Relaxed);
        c.senders_banned.store(s.senders_banned, Ordering::Relaxed);
        c.checks.store(self.book.handed(), Ordering::Relaxed);
        c.vouched.store(s.vouched, Ordering::Relaxed);
        c.trusted.store(self.book.trusted() as u64, Ordering::Relaxed);
    }
}

/// Applies the book's effects to the optimizer.
pub fn apply(opt: &mut dyn Optimizer, effects: Vec<Effect>) {
    for e in effects {
        match e {
            Effect::Trust(source, w) => opt.trust(source, w),
            Effect::Observe(source, trials) => opt.observe(source, &trials),
            Effect::Pending(source, points) => opt.pending_elsewhere(source, &points),
        }
    }
}
