//! Runs an optimizer against a domain: asks candidates, evaluates them on a bounded pool of
//! worker threads under the evaluation budget, tells the results, and calls the hooks users of
//! the Python system know.

use std::time::{Duration, Instant};

use crate::{
    Evaluated, Optimizer,
    domain::{Budget, Domain, EvalError, Measurement},
};

/// Callbacks during a run (all optional).
pub trait Hooks {
    /// A batch ("generation") is about to be evaluated.
    fn generation_start(&mut self, _generation: u64) {}
    /// Between two candidates of a batch.
    fn between_candidates(&mut self, _done: usize, _total: usize) {}
    /// A batch finished.
    fn generation_end(&mut self, _generation: u64, _best_loss: f64) {}
    /// A new best candidate was found.
    fn champion_found(&mut self, _x: &[f64], _measurement: &Measurement) {}
    /// A candidate failed (time limit, bad parameters, domain error).
    fn evaluation_failed(&mut self, _error: &EvalError) {}
    /// A search stage begins (stage 0 when the run starts).
    fn stage_start(&mut self, _stage: u32) {}
    /// A search stage ended (patience ran out, or the run ended).
    fn stage_end(&mut self, _stage: u32) {}
}

/// No callbacks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Run settings.
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    /// Evaluations in total.
    pub budget: usize,
    /// Candidates per batch.
    pub batch: usize,
    /// Worker threads (≥ 1).
    pub workers: usize,
    /// Wall-clock limit per evaluation.
    pub max_wall: Duration,
    /// Epoch limit per evaluation.
    pub max_epochs: u32,
    /// Memory estimate limit per evaluation, in bytes.
    pub max_memory_bytes: u64,
    /// Stop once the loss is at or below this.
    pub target_loss: Option<f64>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            budget: 1000,
            batch: 32,
            workers: 1,
            max_wall: Duration::from_secs(60),
            max_epochs: 100,
            max_memory_bytes: u64::MAX,
            target_loss: None,
        }
    }
}

/// What a run achieved.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// Evaluations done.
    pub evaluations: usize,
    /// Failed evaluations.
    pub failures: usize,
    /// Best loss.
    pub best_loss: f64,
    /// Best point.
    pub best_x: Vec<f64>,
}

/// Optimizes `domain` with `optimizer` within `config`.
pub fn run(
    domain: &dyn Domain,
    optimizer: &mut dyn Optimizer,
    config: RunConfig,
    hooks: &mut dyn Hooks,
) -> RunResult {
    let mut result = RunResult { evaluations: 0, failures: 0, best_loss: f64::INFINITY, best_x: Vec::new() };
    let mut generation = 0u64;
    let mut stage = optimizer.stage();
    hooks.stage_start(stage);
    while result.evaluations < config.budget
        && result.best_loss > config.target_loss.unwrap_or(f64::NEG_INFINITY)
    {
        let want = config.batch.min(config.budget - result.evaluations).max(1);
        let xs = optimizer.ask(want);
        if xs.is_empty() {
            break;
        }
        hooks.generation_start(generation);
        let outcomes = evaluate_batch(domain, &xs, config);
        let mut told = Vec::with_capacity(xs.len());
        for (i, (x, outcome)) in xs.into_iter().zip(outcomes).enumerate() {
            hooks.between_candidates(i, want);
            let loss = match &outcome {
                Ok(m) => domain.loss(m),
                Err(e) => {
                    hooks.evaluation_failed(e);
                    result.failures += 1;
                    f64::INFINITY
                }
            };
            if loss < result.best_loss
                && let Ok(m) = &outcome
            {
                result.best_loss = loss;
                result.best_x = x.clone();
                hooks.champion_found(&x, m);
            }
            told.push(Evaluated { x, loss });
        }
        result.evaluations += told.len();
        optimizer.tell(&told);
        hooks.generation_end(generation, result.best_loss);
        if optimizer.stage() != stage {
            hooks.stage_end(stage);
            stage = optimizer.stage();
            hooks.stage_start(stage);
        }
        generation += 1;
    }
    hooks.stage_end(stage);
    result
}

/// Evaluates the candidate `x` (unit cube) on the data `seed` derives (`None`: the optimizer's
/// own data) under `config`'s limits, on the calling thread.
pub fn evaluate_one(
    domain: &dyn Domain,
    x: &[f64],
    seed: Option<&doin_primitives::Hash>,
    config: RunConfig,
) -> Result<Measurement, EvalError> {
    let budget = Budget {
        deadline: Instant::now() + config.max_wall,
        max_epochs: config.max_epochs,
        max_memory_bytes: config.max_memory_bytes,
    };
    let values = domain.space().decode(x);
    let started = Instant::now();
    let r = domain.evaluate(&values, seed, budget);
    if r.is_ok() && started.elapsed() > config.max_wall {
        return Err(EvalError::Timeout);
    }
    r
}

/// Evaluates `xs` on at most `config.workers` threads; each evaluation gets its own deadline.
pub fn evaluate_batch(
    domain: &dyn Domain,
    xs: &[Vec<f64>],
    config: RunConfig,
) -> Vec<Result<Measurement, EvalError>> {
    let workers = config.workers.max(1).min(xs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<Measurement, EvalError>>>> =
        (0..xs.len()).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(x) = xs.get(i) else { break };
                    let r = evaluate_one(domain, x, None, config);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().ok().flatten().unwrap_or(Err(EvalError::Failed("no result".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Shade,
        domain::{Benchmark, Quadratic},
        functions::Function,
    };

    struct Count {
        generations: u64,
        champions: usize,
    }
    impl Hooks for Count {
        fn generation_end(&mut self, _: u64, _: f64) {
            self.generations += 1;
        }
        fn champion_found(&mut self, _: &[f64], _: &Measurement) {
            self.champions += 1;
        }
    }

    fn config(budget: usize) -> RunConfig {
        RunConfig {
            budget,
            batch: 20,
            workers: 2,
            max_wall: Duration::from_secs(5),
            max_epochs: 0,
            max_memory_bytes: u64::MAX,
            target_loss: None,
        }
    }

    #[test]
    fn quadratic_is_solved_and_hooks_fire() {
        let domain = Quadratic::new(5, 10.0, 3, 0.01);
        let mut opt = Shade::new(5, 50, 1);
        let mut hooks = Count { generations: 0, champions: 0 };
        let r = run(&domain, &mut opt, RunConfig { target_loss: Some(1e-10), ..config(40_000) }, &mut hooks);
        assert!(r.best_loss <= 1e-10, "{r:?}");
        assert!(r.evaluations < 40_000, "the target stops the run early");
        assert!(hooks.generations > 10 && hooks.champions > 3);
        // An evaluator's seeded data differs a little from the optimizer's.
        let values = domain.space().decode(&r.best_x);
        let budget = Budget::new(Duration::from_secs(1), 0);
        let own = domain.evaluate(&values, None, budget).unwrap().performance;
        let theirs = domain
            .evaluate(&values, Some(&doin_primitives::Hash::of(b"evaluator")), budget)
            .unwrap()
            .performance;
        assert!(own > theirs && theirs > -0.01 * 0.01 * 5.0 - 1e-6, "{own} vs {theirs}");
    }

    #[test]
    fn failures_are_reported_not_fatal() {
        struct Slow;
        impl Domain for Slow {
            fn id(&self) -> &str {
                "slow"
            }
            fn space(&self) -> &crate::Space {
                static S: std::sync::OnceLock<crate::Space> = std::sync::OnceLock::new();
                S.get_or_init(|| crate::Space::cube(2, 1.0))
            }
            fn higher_is_better(&self) -> bool {
                false
            }
            fn evaluate(
                &self,
                p: &[crate::Value],
                _: Option<&doin_primitives::Hash>,
                b: Budget,
            ) -> Result<Measurement, EvalError> {
                if p[0].as_f64() > 0.0 {
                    std::thread::sleep(Duration::from_millis(30));
                    if Instant::now() > b.deadline {
                        return Err(EvalError::Timeout);
                    }
                }
                Ok(Measurement { performance: p[1].as_f64().abs(), metrics: Default::default() })
            }
        }
        let mut opt = Shade::new(2, 20, 4);
        let cfg = RunConfig { max_wall: Duration::from_millis(10), ..config(200) };
        let r = run(&Slow, &mut opt, cfg, &mut NoHooks);
        assert_eq!(r.evaluations, 200);
        assert!(r.failures > 0 && r.failures < 200, "{r:?}");
        assert!(r.best_loss.is_finite());
        // Benchmarks are domains too.
        let d = Benchmark::new(Function::Sphere, 4, 1);
        let mut opt = Shade::new(4, 40, 2);
        assert!(run(&d, &mut opt, config(20_000), &mut NoHooks).best_loss < 1e-6);
    }

    /// `workers` (the node's key) bounds how many evaluations of a batch run at once, and more
    /// than one do run together.
    #[test]
    fn workers_bound_how_many_evaluations_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Default)]
        struct Gauge {
            now: AtomicUsize,
            most: AtomicUsize,
        }
        impl Domain for Gauge {
            fn id(&self) -> &str {
                "gauge"
            }
            fn space(&self) -> &crate::Space {
                static S: std::sync::OnceLock<crate::Space> = std::sync::OnceLock::new();
                S.get_or_init(|| crate::Space::cube(1, 1.0))
            }
            fn higher_is_better(&self) -> bool {
                false
            }
            fn evaluate(
                &self,
                _: &[crate::Value],
                _: Option<&doin_primitives::Hash>,
                _: Budget,
            ) -> Result<Measurement, EvalError> {
                let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                self.now.fetch_sub(1, Ordering::SeqCst);
                Ok(Measurement { performance: 0.0, metrics: Default::default() })
            }
        }
        for workers in [1, 3] {
            let gauge = Gauge::default();
            let xs = vec![vec![0.5]; 9];
            let out = evaluate_batch(&gauge, &xs, RunConfig { workers, ..config(9) });
            assert!(out.iter().all(Result::is_ok));
            let most = gauge.most.load(Ordering::SeqCst);
            assert!(most <= workers && (workers == 1 || most >= 2), "{workers} workers: {most} at once");
        }
    }
}
