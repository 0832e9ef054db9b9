//! The optimizer loop of one domain, on its own thread: ask a batch, evaluate it on the bounded
//! worker pool under the domain's limits, tell, and report candidates that beat the network's
//! verified champion. Champions from the chain arrive as migrants and are injected at the next
//! generation boundary. The loop pauses while the domain's target is reached.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, TryRecvError},
    },
    time::Duration,
};

use doin_optimize::{
    Evaluated, Hook, Optimizer, Value,
    domain::{Budget, Domain, EvalError, Measurement},
    driver::{RunConfig, evaluate_batch, evaluate_one},
};
use tokio::sync::mpsc::Sender;

/// The smallest improvement worth a commitment: one unit of the chain's fixed-point metric.
const MIN_GAIN: f64 = 1.0 / doin_primitives::FIXED_ONE as f64;

/// What the loop reports to the node.
#[derive(Debug)]
pub struct Found {
    /// Domain id.
    pub domain: String,
    /// The candidate.
    pub values: Vec<Value>,
    /// Its measurement on the optimizer's own data.
    pub measurement: Measurement,
    /// Candidates evaluated so far by this loop.
    pub evaluations: u64,
    /// The model these parameters train ([`Domain::train`]), for domains that have one: the
    /// reveal attaches its hash, evaluators measure it, and the champion's is served.
    pub artifact: Option<Vec<u8>>,
}

/// One round (a generation: one ask/evaluate/tell) of the loop, for experiment tracking.
#[derive(Debug)]
pub struct RoundInfo {
    /// Domain id.
    pub domain: String,
    /// Round number, from 1.
    pub round: u64,
    /// Candidates evaluated so far.
    pub evaluations: u64,
    /// The optimizer's stage.
    pub stage: u32,
    /// Candidates in the round.
    pub population: usize,
    /// The round's best candidate and its measurement.
    pub best: Option<(Vec<Value>, Measurement)>,
    /// The loop's best so far (own data): values and performance.
    pub best_so_far: Option<(Vec<Value>, f64)>,
    /// Mean performance of the round's successful candidates.
    pub avg_performance: Option<f64>,
    /// Rounds since the best so far improved.
    pub no_improve: u64,
}

/// The round being gathered.
#[derive(Default)]
struct RoundAcc {
    size: usize,
    ok: usize,
    sum: f64,
    best: Option<(Vec<Value>, Measurement)>,
}

/// What the node tells the loop.
#[derive(Debug)]
pub enum Control {
    /// The verified champion: inject it, and only report better ones.
    Champion {
        /// Its parameters.
        values: Vec<Value>,
        /// Its loss as the quorum verified it.
        verified: f64,
        /// Who claimed it (`None`: this node): the trial book vouches for that sender.
        by: Option<doin_primitives::Address>,
    },
    /// This node's claim in flight settled (certified as champion, late or rejected, not
    /// committed, or lost): it no longer bars smaller improvements over the champion.
    Settled,
}

/// How the loop talks to the node.
#[derive(Debug)]
pub struct LoopIo {
    /// Champions and settlements from the node.
    pub control: Receiver<Control>,
    /// Set while the loop must not search (the domain reached its target, or the node waits
    /// for peers). A flag, not a message: a message the full channel refused would have left
    /// the loop paused, or searching, for good.
    pub paused: Arc<AtomicBool>,
    /// Candidates to commit.
    pub found: Sender<Found>,
    /// Finished rounds, for tracking (none: not tracked).
    pub rounds: Option<Sender<RoundInfo>>,
    /// Candidates per round (the optimizer's population).
    pub round_size: usize,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Evaluations run, by what for (status, the target line, metrics).
    pub spent: Arc<super::Spent>,
    /// Whether the domain evaluates at all: a batch that failed whole, or a domain that cannot
    /// evaluate now, counts as a failure; a batch with a figure as a success.
    pub health: Arc<crate::participation::EvalHealth>,
    /// Shared trials with the other nodes searching the domain (none: not shared).
    pub sharing: Option<crate::trials::share::Sharing>,
    /// Set to what the optimizer runs (its `kind`), at the start and when `auto` chooses.
    pub running: Running,
    /// A domain optimized on hire: the loop evaluates only the candidates bought and waits
    /// otherwise (none: it searches whenever not paused).
    pub hired: Option<Arc<crate::market::hire::Allowance>>,
}

/// What a domain's optimizer runs now, for status (empty until its loop starts).
pub type Running = Arc<std::sync::Mutex<&'static str>>;

/// The data draw a candidate's second opinion is measured on (beyond the optimizer's own data,
/// `None`): derived from the candidate, so a measurement repeats.
fn second_opinion_seed(x: &[f64]) -> doin_primitives::Hash {
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    doin_primitives::Hash::of_parts(&[b"doin-second-opinion", &bytes, &0u64.to_le_bytes()])
}

/// Two measurements of one candidate averaged (performance and every metric both report).
fn mean_of(a: &Measurement, b: &Measurement) -> Measurement {
    Measurement {
        performance: (a.performance + b.performance) / 2.0,
        metrics: a
            .metrics
            .iter()
            .filter_map(|(k, v)| b.metrics.get(k).map(|w| (k.clone(), (v + w) / 2.0)))
            .collect(),
    }
}

/// Sleeps `d` in short steps, returning early once `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Runs the loop until `stop` is set. Blocks the calling thread.
/// The model `values` train, if the domain has one (its failure costs the claim only its model).
fn train_artifact(domain: &dyn Domain, values: &[Value], run: RunConfig) -> Option<Vec<u8>> {
    let budget = Budget {
        deadline: std::time::Instant::now() + run.max_wall,
        max_epochs: run.max_epochs,
        max_memory_bytes: run.max_memory_bytes,
    };
    match domain.train(values, None, budget) {
        Ok(bytes) => Some(bytes),
        Err(EvalError::Unsupported(_)) => None,
        Err(e) => {
            tracing::warn!(domain = domain.id(), error = %e, "training the claim's model failed; claiming without one");
            None
        }
    }
}

pub fn run_loop(domain: Arc<dyn Domain>, mut optimizer: Box<dyn Optimizer>, run: RunConfig, io: LoopIo) {
    let LoopIo {
        control,
        paused,
        found,
        rounds,
        round_size,
        stop,
        spent,
        health,
        mut sharing,
        running,
        hired,
    } = io;
    let say = |kind: &'static str| {
        if let Ok(mut r) = running.lock() {
            *r = kind;
        }
    };
    say(optimizer.kind());
    let mut acc = RoundAcc::default();
    let mut round = 0u64;
    let mut best_so_far: Option<(Vec<Value>, f64)> = None;
    let mut no_improve = 0u64;
    let mut champion_loss = f64::INFINITY;
    // The loss of our claim in flight: until it settles, only better candidates are reported.
    let mut pending: Option<f64> = None;
    let mut failed_batches = 0u32;
    // Batches asked and evaluated (the hooks' generations).
    let mut batches = 0u64;
    while !stop.load(Ordering::Relaxed) {
        loop {
            match control.try_recv() {
                Ok(Control::Champion { values, verified, by }) => {
                    // The bar is the verified figure: it is what the chain knows and what the
                    // node's commit rule tests. (A bar measured here instead, like with like,
                    // stalled whole networks: a champion verified low by its quorum's draws but
                    // scoring 0.972 here let no one claim for 400 s.)
                    champion_loss = verified;
                    let x = domain.space().encode(&values);
                    if let (Some(s), Some(by)) = (&mut sharing, by) {
                        // Vouched for first: its trials (the champion's among them) are trusted
                        // now, so the optimizer knows the champion already if it was shared.
                        s.certified(by, verified, optimizer.as_mut());
                    }
                    // This node's own claim was measured here when it was found: it is taught
                    // again at its verified figure, which keeps this node searching around its
                    // certified point, while the other nodes do not copy it (TPE learns a
                    // migrant a trusted node shared only once) and search elsewhere
                    // (docs/design.md §20c). An optimizer of its own (an island, CMA-ES, GA)
                    // learns another node's champion on the data it searches on: its figures
                    // are all this node's. One that learns other nodes' trials (TPE) already
                    // weighs figures measured elsewhere, and the quorum's is the best of them:
                    // measuring it again would spend an evaluation of an expensive domain per
                    // champion on every node — a cost that does not shrink as more nodes search.
                    let own_claim = by.is_none() && optimizer.best().is_some();
                    let loss = if own_claim || (sharing.is_some() && optimizer.learns_shared()) {
                        verified
                    } else {
                        let own = evaluate_one(domain.as_ref(), &x, None, run);
                        spent.champions.fetch_add(1, Ordering::Relaxed);
                        own.map_or(verified, |m| domain.loss(&m))
                    };
                    optimizer.inject(Evaluated { x: x.clone(), loss });
                    if let Some(by) = by {
                        // Another node's champion migrated into this node's optimizer.
                        println!("migrant {} from {by} into {} loss {loss}", domain.id(), optimizer.kind());
                    }
                    optimizer.hook(&Hook::ChampionFound { x, loss });
                }
                Ok(Control::Settled) => pending = None,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Some(s) = &mut sharing {
            s.receive(domain.space(), optimizer.as_mut());
        }
        if paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // On hire: no more candidates than were bought.
        let batch = match &hired {
            Some(h) => {
                let left = h.remaining();
                if left == 0 {
                    say(crate::market::hire::WAITING);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                say(optimizer.kind());
                run.batch.min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => run.batch,
        };
        // A model-based optimizer is asked one point per worker (it learns from each result).
        let batch = if optimizer.sequential() { batch.min(run.workers.max(1)) } else { batch };
        let xs = optimizer.ask(batch);
        if let Some(h) = &hired {
            h.asked(xs.len() as u64);
        }
        if xs.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        batches += 1;
        optimizer.hook(&Hook::GenerationStart { generation: batches });
        if let Some(s) = &mut sharing {
            // The last batch's results and this batch, in flight.
            s.flush(domain.space(), optimizer.as_ref(), std::time::Instant::now());
        }
        // Another node's claim the shared-trial book wants measured here rides with the batch.
        let check = sharing.as_mut().and_then(crate::trials::share::Sharing::take_check);
        let started = std::time::Instant::now();
        let mut outcomes = match &check {
            Some(c) => {
                evaluate_batch(domain.as_ref(), &[xs.as_slice(), std::slice::from_ref(c)].concat(), run)
            }
            None => evaluate_batch(domain.as_ref(), &xs, run),
        };
        if let Some(h) = &hired {
            h.evaluated(xs.len() as u64);
        }
        let cost_ms =
            (started.elapsed().as_millis() / outcomes.len().max(1) as u128).min(u128::from(u32::MAX)) as u32;
        if let (Some(_), Some(s)) = (&check, &mut sharing) {
            // A check verifies a claim; if it holds, the claim is in the model already.
            let loss = outcomes.pop().and_then(|o| o.ok()).map(|m| domain.loss(&m));
            spent.checks.fetch_add(1, Ordering::Relaxed);
            s.checked(loss, optimizer.as_mut());
        }
        match outcomes.iter().find_map(|o| o.as_ref().err()) {
            Some(e) if outcomes.iter().all(Result::is_err) => health.failed(&e.to_string()),
            _ => health.ok(),
        }
        // A domain that cannot evaluate now (its plugin waits out a restart backoff) is waited
        // for, and its refusals are not candidates: the optimizer learns nothing from them.
        if let Some(wait) = outcomes
            .iter()
            .map(|o| match o {
                Err(EvalError::Unavailable(wait, _)) => Some(*wait),
                _ => None,
            })
            .collect::<Option<Vec<Duration>>>()
            .and_then(|w| w.into_iter().max())
        {
            sleep_unless_stopped(wait.clamp(Duration::from_millis(50), Duration::from_secs(1)), &stop);
            continue;
        }
        // A batch that failed whole (a broken plugin that answers garbage) slows the loop down
        // exponentially, up to 2 s a batch, instead of spinning through failures.
        if outcomes.iter().all(Result::is_err) {
            failed_batches = failed_batches.saturating_add(1);
            let ms = 10u64.saturating_mul(1 << failed_batches.min(8)).min(2_000);
            if failed_batches == 1 || failed_batches.is_power_of_two() {
                let error = outcomes.iter().find_map(|o| o.as_ref().err().map(ToString::to_string));
                tracing::warn!(
                    domain = domain.id(),
                    failed_batches,
                    error = error.as_deref().unwrap_or_default(),
                    "every candidate of a batch failed; slowing down"
                );
            }
            sleep_unless_stopped(Duration::from_millis(ms), &stop);
        } else {
            failed_batches = 0;
        }
        let mut told = Vec::with_capacity(xs.len());
        let mut best: Option<(usize, f64)> = None;
        for (i, (x, outcome)) in xs.into_iter().zip(&outcomes).enumerate() {
            let loss = match outcome {
                Ok(m) => domain.loss(m),
                Err(e) => {
                    tracing::debug!(domain = domain.id(), error = %e, "candidate failed");
                    f64::INFINITY
                }
            };
            if loss.is_finite() && best.is_none_or(|(_, b)| loss < b) {
                best = Some((i, loss));
            }
            told.push(Evaluated { x, loss });
        }
        spent.candidates.fetch_add(told.len() as u64, Ordering::Relaxed);
        if let Some(tx) = &rounds {
            // A round is a generation: `round_size` candidates (the population), told in batches.
            for (x, outcome) in told.iter().zip(&outcomes) {
                let Ok(m) = outcome else { continue };
                acc.sum += m.performance;
                acc.ok += 1;
                let better = acc.best.as_ref().is_none_or(|(_, b)| {
                    if domain.higher_is_better() {
                        m.performance > b.performance
                    } else {
                        m.performance < b.performance
                    }
                });
                if better {
                    acc.best = Some((domain.space().decode(&x.x), m.clone()));
                }
            }
            acc.size += told.len();
            if acc.size >= round_size.max(1) {
                round += 1;
                let improved = acc.best.as_ref().is_some_and(|(v, m)| {
                    let better = best_so_far.as_ref().is_none_or(|(_, b)| {
                        if domain.higher_is_better() { m.performance > *b } else { m.performance < *b }
                    });
                    if better {
                        best_so_far = Some((v.clone(), m.performance));
                    }
                    better
                });
                no_improve = if improved { 0 } else { no_improve + 1 };
                let done = std::mem::take(&mut acc);
                // Tracking must never hold the optimizer up: a full queue drops the round.
                let _ = tx.try_send(RoundInfo {
                    domain: domain.id().to_owned(),
                    round,
                    evaluations: spent.total(),
                    stage: optimizer.stage(),
                    population: done.size,
                    best: done.best,
                    best_so_far: best_so_far.clone(),
                    avg_performance: (done.ok > 0).then(|| done.sum / done.ok as f64),
                    no_improve,
                });
            }
        }
        // A gain below the chain's metric resolution is no gain: the claim would read the same
        // (a champion re-learned from its on-chain, rounded parameters scores a hair apart).
        if let Some((i, loss)) = best
            && loss < champion_loss - MIN_GAIN
            && pending.is_none_or(|p| loss < p - MIN_GAIN)
            && let Ok(first) = &outcomes[i]
        {
            // A second opinion before committing: the best of many candidates on one draw of
            // data is the luckiest on it, and evaluators use other draws. The claim is the mean
            // of both, so claims land near what the quorum measures and a lucky score alone
            // neither wins a commitment nor sets the bar for the next one.
            // A domain that cannot measure on other data (it failed there) is claimed on its
            // own figure, as before.
            let second =
                evaluate_one(domain.as_ref(), &told[i].x, Some(&second_opinion_seed(&told[i].x)), run);
            spent.second_opinions.fetch_add(1, Ordering::Relaxed);
            let m = second.map_or_else(|_| first.clone(), |second| mean_of(first, &second));
            let estimate = domain.loss(&m);
            if estimate < champion_loss - MIN_GAIN && pending.is_none_or(|p| estimate < p - MIN_GAIN) {
                pending = Some(estimate);
                let values = domain.space().decode(&told[i].x);
                let artifact = train_artifact(domain.as_ref(), &values, run);
                let msg = Found {
                    domain: domain.id().to_owned(),
                    values,
                    measurement: m,
                    evaluations: spent.total(),
                    artifact,
                };
                if found.try_send(msg).is_err() {
                    // The node is busy; the next improvement will be reported.
                    pending = None;
                }
            }
        }
        let total = told.len();
        for done in 1..=total {
            optimizer.hook(&Hook::BetweenCandidates { done, total });
        }
        let kind = optimizer.kind();
        optimizer.tell(&told);
        if let Some(s) = &mut sharing {
            s.record(domain.space(), &told, cost_ms);
        }
        let best_loss = optimizer.best().map(|b| b.loss);
        optimizer.hook(&Hook::GenerationEnd { generation: batches, best_loss });
        if optimizer.kind() != kind {
            say(optimizer.kind());
            tracing::info!(
                domain = domain.id(),
                optimizer = optimizer.kind(),
                dims = domain.space().len(),
                "optimizer chosen"
            );
        }
    }
}
