//! `doin bench optimize`: CEC-style runs, optimizer overhead and the island comparison.

use std::time::Instant;

use crate::{CmaEs, Evaluated, Ga, GaConfig, Optimizer, Shade, domain::Benchmark, functions::Function};

/// Solved means an error below this (CEC convention).
pub const SOLVED: f64 = 1e-8;

/// The optimizers the benchmark compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Success-history adaptive differential evolution.
    Shade,
    /// CMA-ES with increasing-population restarts.
    IpopCmaEs,
}

impl Algorithm {
    /// All of them.
    pub const ALL: [Self; 2] = [Self::Shade, Self::IpopCmaEs];

    /// The name in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shade => "shade",
            Self::IpopCmaEs => "ipop-cma-es",
        }
    }

    /// A fresh optimizer for `d` dimensions.
    pub fn build(self, d: usize, seed: u64) -> Box<dyn Optimizer> {
        match self {
            Self::Shade => Box::new(Shade::new(d, Shade::default_population(d), seed)),
            Self::IpopCmaEs => Box::new(CmaEs::new(d, 0, seed)),
        }
    }
}

/// One CEC-style run: `algorithm` on `f` in `d` dimensions shifted by `seed`, at most `budget`
/// evaluations, stopping once solved. Returns the best error and the evaluations used.
pub fn cec_run(algorithm: Algorithm, f: Function, d: usize, budget: usize, seed: u64) -> (f64, usize) {
    let problem = Benchmark::new(f, d, seed);
    let mut opt = algorithm.build(d, seed);
    let mut used = 0;
    let mut best = f64::INFINITY;
    while used < budget && best >= SOLVED {
        let results = problem.evaluate_unit(opt.ask(64.min(budget - used)));
        if results.is_empty() {
            break;
        }
        used += results.len();
        opt.tell(&results);
        best = opt.best().map_or(f64::INFINITY, |b| b.loss);
    }
    (best, used)
}

/// Errors of `seeds` runs (seeds `0..seeds`) spread over `threads` threads, in seed order.
pub fn cec_runs(
    algorithm: Algorithm,
    f: Function,
    d: usize,
    budget: usize,
    seeds: u64,
    threads: usize,
) -> Vec<f64> {
    let next = std::sync::atomic::AtomicU64::new(0);
    let out = std::sync::Mutex::new(vec![f64::INFINITY; seeds as usize]);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= seeds {
                        break;
                    }
                    let (err, _) = cec_run(algorithm, f, d, budget, seed);
                    if let Ok(mut o) = out.lock() {
                        o[seed as usize] = err;
                    }
                }
            });
        }
    });
    out.into_inner().unwrap_or_default()
}

/// Nanoseconds of GA bookkeeping per evaluation of a trivial objective.
pub fn overhead_ns_per_eval(evals: usize) -> f64 {
    let mut ga = Ga::new(10, GaConfig { population: 100, ..GaConfig::default() }, 1);
    let start = Instant::now();
    let mut used = 0;
    while used < evals {
        let xs = ga.ask(100);
        let results: Vec<Evaluated> = xs.into_iter().map(|x| Evaluated { loss: x[0], x }).collect();
        used += results.len();
        ga.tell(&results);
    }
    start.elapsed().as_nanos() as f64 / used.max(1) as f64
}

/// The model-based optimizer's own cost: nanoseconds per proposal (one `ask(1)` and its
/// `tell`) of TPE in `dim` dimensions whose history holds `history` evaluations already (a
/// proposal costs `candidates × history × dim` kernel evaluations: linear in the history, which
/// is bounded at [`crate::tpe::MAX_HISTORY`]).
pub fn tpe_ns_per_proposal(dim: usize, history: usize, proposals: usize) -> f64 {
    let mut tpe = crate::Tpe::new(dim, 2, 1);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
    for _ in 0..history {
        let x: Vec<f64> = (0..dim).map(|_| rand::Rng::random::<f64>(&mut rng)).collect();
        tpe.inject(Evaluated { loss: x.iter().map(|v| v * v).sum(), x });
    }
    let start = Instant::now();
    for _ in 0..proposals {
        let x = tpe.ask(1).remove(0);
        // Told with the worst loss yet: the history grows, and the bound keeps it.
        tpe.tell(&[Evaluated { loss: f64::MAX, x }]);
    }
    start.elapsed().as_nanos() as f64 / proposals.max(1) as f64
}

/// An island run's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IslandRun {
    /// Evaluations by all islands together until one reached the target.
    pub total: usize,
    /// Evaluations by each island until then: the wall time when every island has its machine.
    pub per_island: usize,
}

/// Migration interval of the island model, in generations.
pub const MIGRATION_INTERVAL: u64 = 5;

/// `islands` SHADE populations of the usual size for `d` (each as one node would run it) on `f`
/// shifted by `seed`, sharing `budget` evaluations in total. Every [`MIGRATION_INTERVAL`]
/// generations each island receives its ring neighbour's best member (injected: it replaces the
/// worst member). `None` when no island reaches [`SOLVED`] within the budget.
pub fn islands_to_target(
    f: Function,
    d: usize,
    islands: usize,
    budget: usize,
    seed: u64,
) -> Option<IslandRun> {
    let problem = Benchmark::new(f, d, seed);
    let np = Shade::default_population(d);
    let islands = islands.max(1);
    let mut opts: Vec<Shade> =
        (0..islands).map(|i| Shade::new(d, np, seed.wrapping_mul(31).wrapping_add(i as u64))).collect();
    let mut used = 0;
    let mut generation = 0u64;
    while used < budget {
        for o in opts.iter_mut() {
            let results = problem.evaluate_unit(o.ask(np));
            used += results.len();
            o.tell(&results);
            if o.best().is_some_and(|b| b.loss < SOLVED) {
                return Some(IslandRun { total: used, per_island: used.div_ceil(islands) });
            }
        }
        generation += 1;
        if islands > 1 && generation.is_multiple_of(MIGRATION_INTERVAL) {
            let bests: Vec<Option<Evaluated>> = opts.iter().map(|o| o.best().cloned()).collect();
            for (i, o) in opts.iter_mut().enumerate() {
                if let Some(b) = &bests[(i + islands - 1) % islands] {
                    o.inject(b.clone());
                }
            }
        }
    }
    None
}
