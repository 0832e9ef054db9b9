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
    CmaEs, Evaluated, Ga, GaConfig, Hook, Optimizer, Shade, Value,
    domain::{Domain, EvalError, Measurement},
    driver::{RunConfig, evaluate_batch, evaluate_one},
};
use serde_json::Value as Json;
use tokio::sync::mpsc::Sender;

use crate::{config::DomainConfig, domains::plugin_command};

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

/// The niceness of a built-in domain's optimizer loop thread (and of the evaluation threads it
/// starts, which inherit it): a node's own search is background work. Verification, gossip and
/// block production run at the node's priority, so on a machine the optimizers saturate a
/// quorum's votes still come in milliseconds. (A plugin domain's process also serves
/// verification, so its loop keeps the node's priority.)
pub const OPTIMIZER_NICENESS: i32 = 10;

/// Lowers the calling thread's priority to [`OPTIMIZER_NICENESS`] (Linux: per thread). A
/// failure is logged and otherwise harmless.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, OPTIMIZER_NICENESS) {
        tracing::warn!(error = %e, "could not lower the optimizer thread's priority");
    }
}

/// The smallest island a split population leaves one node: SHADE's own smallest population
/// (`Shade::default_population` clamps to 20). `doin sim` measured islands of 8 on
/// 10-dimensional Rastrigin that stalled for good once 16 – 32 optimizers shared verified
/// champions (2 of 5 and 5 of 5 runs never reached the target); islands of 20 reached it in
/// every run.
const MIN_ISLAND: usize = 20;

/// The optimizer when `optimization_plugin` names none: `auto` times the domain's first
/// evaluations and runs TPE on expensive ones, SHADE on cheap ones. Measured against Optuna's
/// TPE (`doin bench search`, one worker, budget 250): `mlp_digits` to 0.97, 43 evaluations
/// median against Optuna's 69; `co2_forecast` to an MAE of 0.39 ppm, 70 against 88 — and
/// SHADE still solves the cheap benchmark functions (`doin bench optimize`).
pub const DEFAULT_OPTIMIZER: &str = "auto";

/// Candidates per generation of the optimizer `config` builds for `domain` (a round in the
/// experiment record), on a node that is one of `optimizers` staked for the domain.
///
/// `population_size` (or the optimizer's usual size) is the domain's population across the
/// network: a population-based optimizer (SHADE, GA) runs an island of `1 / optimizers` of it
/// (at least [`MIN_ISLAND`]), and the islands share their best through the chain's champions.
/// So a generation costs the network the same evaluations however many optimizers share it,
/// and each optimizer's part shrinks as optimizers join. CMA-ES keeps its λ; TPE proposes a
/// few points at a time; `auto` and a plugin size their own rounds (`batch`).
pub fn population_of(domain: &dyn Domain, config: &DomainConfig, batch: usize, optimizers: usize) -> usize {
    let d = domain.space().len();
    let configured = config.optimization_config.get("population_size").and_then(Json::as_f64);
    let configured = configured.map(|p| p.clamp(4.0, 10_000.0) as usize);
    let island = |p: usize| p.div_ceil(optimizers.max(1)).max(MIN_ISLAND.min(p));
    match config.optimization_plugin.as_deref().unwrap_or(DEFAULT_OPTIMIZER) {
        "shade" => island(configured.unwrap_or_else(|| Shade::default_population(d))),
        "tpe" => batch.clamp(1, doin_optimize::tpe::MAX_BATCH),
        "cma-es" => configured.unwrap_or(4 + (3.0 * (d.max(1) as f64).ln()).floor() as usize),
        "ga" | "predictor" => island(configured.unwrap_or(GaConfig::default().population as usize)),
        _ => batch,
    }
}

/// What the node tells the loop.
#[derive(Debug)]
pub enum Control {
    /// The verified champion (values and its loss): inject it, and only report better ones.
    Champion(Vec<Value>, f64),
    /// This node's claim in flight settled (certified as champion, late or rejected, not
    /// committed, or lost): it no longer bars smaller improvements over the champion.
    Settled,
}

/// Builds the configured optimizer for `domain` on a node that is one of `optimizers` staked
/// for it (the island's population: [`population_of`]).
pub fn build_optimizer(
    domain: &dyn Domain,
    config: &DomainConfig,
    seed: u64,
    optimizers: usize,
) -> Result<Box<dyn Optimizer>, String> {
    let d = domain.space().len();
    let c = &config.optimization_config;
    let get = |k: &str| c.get(k).and_then(Json::as_f64);
    let population = get("population_size").map(|p| p.clamp(4.0, 10_000.0) as usize);
    let island = population_of(domain, config, 0, optimizers);
    Ok(match config.optimization_plugin.as_deref().unwrap_or(DEFAULT_OPTIMIZER) {
        "auto" => {
            let shade = DomainConfig { optimization_plugin: Some("shade".into()), ..config.clone() };
            Box::new(doin_optimize::Auto::new(d, population_of(domain, &shade, 0, optimizers), seed))
        }
        "tpe" => Box::new(doin_optimize::Tpe::new(d, doin_optimize::Tpe::default_startup(d), seed)),
        "shade" => Box::new(Shade::new(d, island, seed)),
        "cma-es" => Box::new(CmaEs::new(d, population.unwrap_or(0), seed)),
        "ga" | "predictor" => Box::new(Ga::new(
            d,
            GaConfig {
                population: island as u32,
                patience: get("optimization_patience").map_or(GaConfig::default().patience, |p| p as u32),
                ..GaConfig::default()
            },
            seed,
        )),
        other => {
            let command = plugin_command(other)?;
            let spec = doin_plugin::PluginSpec::new(format!("{}-optimizer", config.domain_id), command);
            let cfg = Json::Object(c.clone().into_iter().collect());
            Box::new(
                doin_plugin::PluginOptimizer::start(spec, domain.space().clone(), cfg, seed)
                    .map_err(|e| e.to_string())?,
            )
        }
    })
}

/// Prior trials a run of a domain starts from at most (the newest recorded rounds).
pub const WARM_START_TRIALS: usize = 500;

/// Teaches `optimizer` the prior trials of `domain` (parameters JSON and performance, as the
/// experiment cube holds them: this node's rounds and the chain's verified optimae,
/// [`doin_tracking::olap::Olap::prior_trials`]) — the seed's L3 warm start. Rows whose
/// parameters do not fit the domain's space (another version of the domain, other
/// `param_bounds`) or whose figure is not finite are skipped. Returns what was taught from
/// each source (an experiment's rounds, an optimizer's certificates), most first.
pub fn warm_start(
    optimizer: &mut dyn Optimizer,
    domain: &dyn Domain,
    rows: &[doin_tracking::PriorTrial],
) -> Vec<doin_tracking::WarmSeed> {
    let mut taught: std::collections::BTreeMap<(doin_tracking::PriorSource, &str), u64> = Default::default();
    for row in rows {
        let Ok(json) = serde_json::from_str::<Json>(&row.parameters) else { continue };
        let Ok(values) = doin_plugin::adapters::values_from_json(domain.space(), &json) else { continue };
        if !row.performance.is_finite() {
            continue;
        }
        let loss = domain.loss(&Measurement { performance: row.performance, metrics: Default::default() });
        optimizer.inject(Evaluated { x: domain.space().encode(&values), loss });
        *taught.entry((row.source, row.source_id.as_str())).or_default() += 1;
    }
    let mut seeds: Vec<doin_tracking::WarmSeed> = taught
        .into_iter()
        .map(|((source, id), trials)| doin_tracking::WarmSeed { source, source_id: id.to_owned(), trials })
        .collect();
    seeds.sort_by(|a, b| b.trials.cmp(&a.trials).then(a.source.cmp(&b.source)));
    seeds
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
    /// Candidates evaluated, for status.
    pub counter: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the domain evaluates at all: a batch that failed whole, or a domain that cannot
    /// evaluate now, counts as a failure; a batch with a figure as a success.
    pub health: Arc<crate::participation::EvalHealth>,
    /// Shared trials with the other nodes searching the domain (none: not shared).
    pub sharing: Option<crate::trials::share::Sharing>,
}

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
pub fn run_loop(domain: Arc<dyn Domain>, mut optimizer: Box<dyn Optimizer>, run: RunConfig, io: LoopIo) {
    let LoopIo { control, paused, found, rounds, round_size, stop, counter, health, mut sharing } = io;
    let mut acc = RoundAcc::default();
    let mut round = 0u64;
    let mut best_so_far: Option<(Vec<Value>, f64)> = None;
    let mut no_improve = 0u64;
    let mut champion_loss = f64::INFINITY;
    // The loss of our claim in flight: until it settles, only better candidates are reported.
    let mut pending: Option<f64> = None;
    let mut evaluations = 0u64;
    let mut failed_batches = 0u32;
    // Batches asked and evaluated (the hooks' generations).
    let mut batches = 0u64;
    while !stop.load(Ordering::Relaxed) {
        loop {
            match control.try_recv() {
                Ok(Control::Champion(values, verified)) => {
                    // The bar is the verified figure: it is what the chain knows and what the
                    // node's commit rule tests. (A bar measured here instead, like with like,
                    // stalled whole networks: a champion verified low by its quorum's draws but
                    // scoring 0.972 here let no one claim for 400 s.) The optimizer learns the
                    // migrant on the data it searches on.
                    champion_loss = verified;
                    let x = domain.space().encode(&values);
                    let own = evaluate_one(domain.as_ref(), &x, None, run);
                    evaluations += 1;
                    let loss = own.map_or(verified, |m| domain.loss(&m));
                    optimizer.inject(Evaluated { x: x.clone(), loss });
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
        let xs = optimizer.ask(run.batch);
        if xs.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        batches += 1;
        optimizer.hook(&Hook::GenerationStart { generation: batches });
        // Another node's claim the shared-trial book wants measured here rides with the batch.
        let check = sharing.as_mut().and_then(crate::trials::share::Sharing::take_check);
        let started = std::time::Instant::now();
        let mut outcomes = match &check {
            Some(c) => {
                evaluate_batch(domain.as_ref(), &[xs.as_slice(), std::slice::from_ref(c)].concat(), run)
            }
            None => evaluate_batch(domain.as_ref(), &xs, run),
        };
        let cost_ms =
            (started.elapsed().as_millis() / outcomes.len().max(1) as u128).min(u128::from(u32::MAX)) as u32;
        if let (Some(_), Some(s)) = (&check, &mut sharing) {
            // A check verifies a claim; if it holds, the claim is in the model already.
            let loss = outcomes.pop().and_then(|o| o.ok()).map(|m| domain.loss(&m));
            evaluations += 1;
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
        evaluations += told.len() as u64;
        counter.store(evaluations, Ordering::Relaxed);
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
                    evaluations,
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
            evaluations += 1;
            counter.store(evaluations, Ordering::Relaxed);
            let m = second.map_or_else(|_| first.clone(), |second| mean_of(first, &second));
            let estimate = domain.loss(&m);
            if estimate < champion_loss - MIN_GAIN && pending.is_none_or(|p| estimate < p - MIN_GAIN) {
                pending = Some(estimate);
                let values = domain.space().decode(&told[i].x);
                let msg = Found { domain: domain.id().to_owned(), values, measurement: m, evaluations };
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
            s.flush(domain.space(), optimizer.as_ref(), std::time::Instant::now());
        }
        let best_loss = optimizer.best().map(|b| b.loss);
        optimizer.hook(&Hook::GenerationEnd { generation: batches, best_loss });
        if optimizer.kind() != kind {
            tracing::info!(
                domain = domain.id(),
                optimizer = optimizer.kind(),
                dims = domain.space().len(),
                "optimizer chosen"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        mpsc::{Receiver as StdReceiver, SyncSender, sync_channel},
    };

    use doin_optimize::{
        Dim, SnapshotError, Space,
        domain::{Budget, EvalError},
    };
    use doin_primitives::Hash;

    use super::*;

    /// Performance is the single parameter itself (in [0, 1]), plus `luck` on the optimizer's
    /// own data.
    struct Identity(Space, f64);
    impl Domain for Identity {
        fn id(&self) -> &str {
            "identity"
        }
        fn space(&self) -> &Space {
            &self.0
        }
        fn higher_is_better(&self) -> bool {
            true
        }
        fn evaluate(
            &self,
            params: &[Value],
            seed: Option<&Hash>,
            _: Budget,
        ) -> Result<Measurement, EvalError> {
            let luck = if seed.is_none() { self.1 } else { 0.0 };
            Ok(Measurement { performance: params[0].as_f64() + luck, metrics: Default::default() })
        }
    }

    /// Asks exactly the points the test feeds, one per batch; records the hooks it gets.
    struct Scripted(StdReceiver<f64>, Arc<Mutex<Vec<Hook>>>);
    impl Optimizer for Scripted {
        fn ask(&mut self, _: usize) -> Vec<Vec<f64>> {
            self.0.recv().map(|x| vec![vec![x]]).unwrap_or_default()
        }
        fn hook(&mut self, event: &Hook) {
            self.1.lock().unwrap().push(event.clone());
        }
        fn tell(&mut self, _: &[Evaluated]) {}
        fn inject(&mut self, _: Evaluated) {}
        fn best(&self) -> Option<&Evaluated> {
            None
        }
        fn snapshot(&self) -> Vec<u8> {
            Vec::new()
        }
        fn restore(&mut self, _: &[u8]) -> Result<(), SnapshotError> {
            Ok(())
        }
    }

    struct Harness {
        feed: SyncSender<f64>,
        ctl: SyncSender<Control>,
        paused: Arc<AtomicBool>,
        found: tokio::sync::mpsc::Receiver<Found>,
        stop: Arc<AtomicBool>,
        handle: std::thread::JoinHandle<()>,
        hooks: Arc<Mutex<Vec<Hook>>>,
    }

    impl Harness {
        fn start(luck: f64) -> Self {
            let (feed, asked) = sync_channel(0);
            let (ctl, control) = sync_channel(16);
            let (found_tx, found) = tokio::sync::mpsc::channel(16);
            let stop = Arc::new(AtomicBool::new(false));
            let paused = Arc::new(AtomicBool::new(false));
            let io = LoopIo {
                sharing: None,
                control,
                paused: paused.clone(),
                found: found_tx,
                rounds: None,
                round_size: 1,
                stop: stop.clone(),
                counter: Default::default(),
                health: Default::default(),
            };
            let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }] };
            let domain: Arc<dyn Domain> = Arc::new(Identity(space, luck));
            let run = RunConfig { batch: 1, ..RunConfig::default() };
            let hooks = Arc::new(Mutex::new(Vec::new()));
            let log = hooks.clone();
            let handle =
                std::thread::spawn(move || run_loop(domain, Box::new(Scripted(asked, log)), run, io));
            Self { feed, ctl, paused, found, stop, handle, hooks }
        }

        /// Hands `x` over when the loop asks (so the round before it is done).
        fn round(&mut self, x: f64) {
            self.feed.send(x).expect("the loop asks");
        }

        /// Evaluates `x` and returns the performance claimed for it, if it was reported.
        fn try_point(&mut self, x: f64) -> Option<f64> {
            self.round(x);
            self.round(0.0);
            self.found.try_recv().ok().map(|f| f.measurement.performance)
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            drop(self.feed);
            self.handle.join().expect("the loop stops");
        }
    }

    /// A paused loop asks for no candidate, however many messages the node sent meanwhile
    /// (the control channel full), and searches again once the flag clears.
    #[test]
    fn a_paused_loop_does_not_search_and_resumes_when_unpaused() {
        // Feeds a candidate if the loop asks within `wait`.
        fn offer(h: &Harness, wait: Duration) -> bool {
            let until = std::time::Instant::now() + wait;
            while std::time::Instant::now() < until {
                if h.feed.try_send(0.5).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        }
        let h = Harness::start(0.0);
        assert!(offer(&h, Duration::from_secs(5)), "a running loop asks");
        h.paused.store(true, Ordering::Relaxed);
        // A round already asked for may still be answered; after it, no more asking.
        let _ = offer(&h, Duration::from_millis(300));
        while h.ctl.try_send(Control::Settled).is_ok() {}
        assert!(!offer(&h, Duration::from_millis(500)), "a paused loop asked for a candidate");
        h.paused.store(false, Ordering::Relaxed);
        assert!(offer(&h, Duration::from_secs(5)), "the loop searches again once unpaused");
        h.stop();
    }

    /// Every `optimization_plugin` name builds that optimizer; TPE proposes a few points at a
    /// time, `auto` decides after timing its first batch (a cheap domain: SHADE).
    #[test]
    fn each_optimizer_name_builds_that_optimizer() {
        let domain = Identity(Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 3] }, 0.0);
        let named = |name: Option<&str>| DomainConfig {
            optimization_plugin: name.map(str::to_owned),
            ..DomainConfig::default()
        };
        for (name, kind) in [
            (None, "auto"),
            (Some("shade"), "shade"),
            (Some("tpe"), "tpe"),
            (Some("cma-es"), "cma-es"),
            (Some("ga"), "ga"),
        ] {
            let opt = build_optimizer(&domain, &named(name), 1, 1).unwrap();
            // `auto` names its state after the colon (timing, then its choice).
            assert_eq!(opt.kind().split(':').next(), Some(kind), "{name:?}");
        }
        assert_eq!(population_of(&domain, &named(Some("tpe")), 8, 1), doin_optimize::tpe::MAX_BATCH);
        let mut auto = build_optimizer(&domain, &named(Some("auto")), 1, 1).unwrap();
        // It times a few evaluations (two batches of 4 here) before it chooses.
        for _ in 0..2 {
            let xs = auto.ask(4);
            auto.tell(&xs.into_iter().map(|x| Evaluated { loss: x[0], x }).collect::<Vec<_>>());
        }
        assert_eq!(auto.kind(), "auto: shade", "microsecond evaluations: SHADE");
    }

    /// A warm start teaches the optimizer the recorded rounds that fit the domain (others
    /// skipped); TPE then proposes near the best of them.
    #[test]
    fn a_warm_start_teaches_the_rounds_that_fit() {
        let domain = Identity(Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 2] }, 0.0);
        use doin_tracking::{PriorSource, PriorTrial, WarmSeed};
        let row = |p: &str, performance: f64, source: PriorSource, id: &str| PriorTrial {
            parameters: p.into(),
            performance,
            source,
            source_id: id.into(),
        };
        let rows = vec![
            row("[0.9, 0.9]", 1.8, PriorSource::Round, "e1"),
            row("[0.1, 0.2]", 0.3, PriorSource::Round, "e1"),
            row("[0.5]", 0.5, PriorSource::Round, "e1"), // another space
            row("[2.0, 0.5]", 2.5, PriorSource::Chain, "a1"), // out of bounds
            row("not json", 1.0, PriorSource::Chain, "a1"),
            row("[0.4, 0.4]", f64::NAN, PriorSource::Chain, "a1"),
            row("[0.3, 0.3]", 0.6, PriorSource::Chain, "a2"),
        ];
        let mut tpe = doin_optimize::Tpe::new(2, 2, 1);
        assert_eq!(
            warm_start(&mut tpe, &domain, &rows),
            vec![
                WarmSeed { source: PriorSource::Round, source_id: "e1".into(), trials: 2 },
                WarmSeed { source: PriorSource::Chain, source_id: "a2".into(), trials: 1 },
            ],
            "what was taught, by source"
        );
        assert_eq!(tpe.history_len(), 3);
        // The best prior is the round recorded at 1.8 (Identity maximizes: loss −1.8).
        assert_eq!(tpe.best().map(|b| b.loss), Some(-1.8));
    }

    /// The domain's population is split among its optimizers, down to a smallest island;
    /// CMA-ES keeps its λ and a plugin its batch.
    #[test]
    fn the_population_is_split_among_the_domains_optimizers() {
        let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 7] };
        let domain = Identity(space, 0.0);
        let shade = DomainConfig { optimization_plugin: Some("shade".into()), ..DomainConfig::default() };
        let sizes: Vec<usize> =
            [1, 2, 4, 100].iter().map(|k| population_of(&domain, &shade, 4, *k)).collect();
        // 4 optimizers: 18 of 70 would be below the floor; 100: the floor.
        assert_eq!(sizes, [70, 35, MIN_ISLAND, MIN_ISLAND]);
        let mut small = shade.clone();
        small.optimization_config.insert("population_size".into(), serde_json::json!(6));
        assert_eq!(population_of(&domain, &small, 4, 4), 6, "an island is never below a small population");
        let mut ga = DomainConfig { optimization_plugin: Some("ga".into()), ..DomainConfig::default() };
        ga.optimization_config.insert("population_size".into(), serde_json::json!(40));
        assert_eq!(population_of(&domain, &ga, 4, 2), 20);
        let cma = DomainConfig { optimization_plugin: Some("cma-es".into()), ..DomainConfig::default() };
        assert_eq!(population_of(&domain, &cma, 4, 1), population_of(&domain, &cma, 4, 4));
        let mut opt = build_optimizer(&domain, &ga, 1, 2).expect("GA builds");
        assert_eq!(opt.ask(100).len(), 20, "the GA's first generation is the island");
    }

    /// `optimization_patience` reaches the GA: after that many generations without improvement
    /// it moves to its next, finer stage (the default waits 8).
    #[test]
    fn optimization_patience_sets_when_the_ga_moves_on() {
        let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 3] };
        let domain = Identity(space, 0.0);
        let stage_after = |patience: Option<u32>, generations: usize| {
            let mut ga = DomainConfig { optimization_plugin: Some("ga".into()), ..DomainConfig::default() };
            ga.optimization_config.insert("population_size".into(), serde_json::json!(8));
            if let Some(p) = patience {
                ga.optimization_config.insert("optimization_patience".into(), serde_json::json!(p));
            }
            let mut opt = build_optimizer(&domain, &ga, 1, 1).expect("GA builds");
            for _ in 0..generations {
                // A flat landscape: nothing ever improves.
                let told: Vec<Evaluated> =
                    opt.ask(8).into_iter().map(|x| Evaluated { x, loss: 1.0 }).collect();
                opt.tell(&told);
            }
            opt.stage()
        };
        assert!(stage_after(Some(2), 5) >= 1, "patience 2: a new stage within 5 flat generations");
        assert_eq!(stage_after(None, 5), 0, "the default patience (8) is still waiting");
    }

    /// A candidate lucky on the optimizer's own data is claimed at the mean of its two
    /// measurements, and only if that mean beats the champion's verified figure.
    #[test]
    fn claims_are_the_mean_of_own_data_and_a_second_draw() {
        let mut h = Harness::start(0.05);
        h.ctl.send(Control::Champion(vec![Value::Real(0.6)], -0.6)).expect("loop listens");
        assert_eq!(h.try_point(0.54), None, "0.59 here does not beat 0.6");
        assert_eq!(h.try_point(0.56), None, "0.61 here, but 0.585 on both draws");
        let claimed = h.try_point(0.64).expect("0.64 beats the champion on both draws");
        assert!((claimed - 0.665).abs() < 1e-9, "claimed {claimed}");
        h.stop();
    }

    /// The loop reports each batch's start, its candidates and its end, and every verified
    /// champion, to the optimizer's hooks, in that order.
    #[test]
    fn the_loop_calls_the_optimizer_hooks() {
        let mut h = Harness::start(0.0);
        h.round(0.3);
        h.round(0.4);
        h.ctl.send(Control::Champion(vec![Value::Real(0.5)], -0.5)).expect("loop listens");
        // The loop may already wait in `ask` for this round; it reads the control channel
        // before asking for the next one, so the second hand-over proves the champion was read.
        h.round(0.45);
        h.round(0.46);
        let hooks = h.hooks.clone();
        h.stop();
        let log = hooks.lock().unwrap().clone();
        let batch = |g: u64| {
            vec![
                Hook::GenerationStart { generation: g },
                Hook::BetweenCandidates { done: 1, total: 1 },
                Hook::GenerationEnd { generation: g, best_loss: None },
            ]
        };
        assert_eq!(log[..6], [batch(1), batch(2)].concat(), "{log:?}");
        assert!(
            log.iter()
                .any(|e| matches!(e, Hook::ChampionFound { x, loss } if x == &vec![0.5] && *loss == -0.5)),
            "the champion, measured here at 0.5: {log:?}"
        );
    }

    /// The bar is the champion's verified figure, not what it scores here: a champion that
    /// scores 0.75 here but was verified at 0.6 does not bar a candidate worth 0.62.
    #[test]
    fn the_bar_is_the_verified_figure() {
        let mut h = Harness::start(0.05);
        h.ctl.send(Control::Champion(vec![Value::Real(0.7)], -0.6)).expect("loop listens");
        let claimed = h.try_point(0.62).expect("0.645 on both draws beats the verified 0.6");
        assert!((claimed - 0.645).abs() < 1e-9, "claimed {claimed}");
        h.stop();
    }

    /// A claim that settled without becoming champion stops barring candidates between the
    /// champion and that claim; before it settles, only better ones are reported.
    #[test]
    fn a_settled_claim_lowers_the_bar_back_to_the_champion() {
        let mut h = Harness::start(0.0);
        h.ctl.send(Control::Champion(vec![Value::Real(0.6)], -0.6)).expect("loop listens");
        assert_eq!(h.try_point(0.9), Some(0.9));
        assert_eq!(h.try_point(0.7), None, "0.7 does not beat the pending claim 0.9");
        h.ctl.send(Control::Settled).expect("loop listens");
        h.round(0.0);
        assert_eq!(h.try_point(0.8), Some(0.8), "0.8 beats the champion once 0.9 settled");
        h.ctl.send(Control::Settled).expect("loop listens");
        h.round(0.0);
        assert_eq!(h.try_point(0.6 + 1e-12), None, "a gain below the chain's resolution is not reported");
        assert_eq!(h.try_point(0.6 + 1e-6), Some(0.6 + 1e-6));
        h.stop();
    }
}
