//! A domain's optimizer: which one runs (`optimization_plugin`, the default `auto`), the
//! population of this node's island, the warm start from the experiment cube, and the loop
//! that runs it ([`search_loop`]).

use doin_optimize::{
    CmaEs, Evaluated, Ga, GaConfig, Optimizer, Shade,
    domain::{Domain, Measurement},
};
use serde_json::Value as Json;

use crate::{config::DomainConfig, domains::plugin_command};

mod search_loop;
#[cfg(test)]
mod tests;

pub use search_loop::{Control, Found, LoopIo, RoundInfo, Running, run_loop};

/// What a domain's optimizer loop spent its evaluations on (each one a run of the domain's
/// evaluation on this node): the optimizer's own candidates, and the rest — the overhead of
/// searching in a network, which does not shrink as more nodes search.
#[derive(Debug, Default)]
pub struct Spent {
    /// The optimizer's own proposals.
    pub candidates: std::sync::atomic::AtomicU64,
    /// Other nodes' claims measured before their shared trials are trusted (the trial book's
    /// checks).
    pub checks: std::sync::atomic::AtomicU64,
    /// Verified champions measured on this node's data before the optimizer learns them.
    pub champions: std::sync::atomic::AtomicU64,
    /// Second measurements of a candidate, on other data, before it is claimed.
    pub second_opinions: std::sync::atomic::AtomicU64,
}

impl Spent {
    /// Every evaluation the loop ran.
    pub fn total(&self) -> u64 {
        self.by_purpose().iter().map(|(_, n)| n).sum()
    }

    /// (purpose, evaluations), in a fixed order: `candidates`, `checks`, `champions`,
    /// `second_opinions`.
    pub fn by_purpose(&self) -> [(&'static str, u64); 4] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            ("candidates", self.candidates.load(Relaxed)),
            ("checks", self.checks.load(Relaxed)),
            ("champions", self.champions.load(Relaxed)),
            ("second_opinions", self.second_opinions.load(Relaxed)),
        ]
    }
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

/// Where a node stands among the accounts staked to optimize a domain: how many there are, and
/// its `rank` in the order of their addresses (the chain's stake table: every node computes the
/// same ranks). Population-based optimizers split the domain's population by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Optimizers staked for the domain (at least this node).
    pub optimizers: usize,
    /// This node's rank among them (`0..optimizers`).
    pub rank: usize,
}

impl Place {
    /// The only optimizer.
    pub const ALONE: Self = Self { optimizers: 1, rank: 0 };

    /// `rank` of `optimizers` (a rank past the end is taken as the last).
    pub fn new(optimizers: usize, rank: usize) -> Self {
        let optimizers = optimizers.max(1);
        Self { optimizers, rank: rank.min(optimizers - 1) }
    }

    /// How shared trials split a population of `population`: into `islands` of the
    /// [`MIN_ISLAND`] members or more each (one per optimizer while there are few), the
    /// optimizers of an island running its population together. Returns (islands, this node's
    /// island).
    pub fn islands(&self, population: usize) -> (usize, usize) {
        let islands = self.optimizers.min((population / MIN_ISLAND).max(1));
        (islands, self.rank % islands)
    }

    /// Whether the optimizer ranked `other` searches the same island as this node (its shared
    /// trials are for this node's population).
    pub fn same_island(&self, population: usize, other: usize) -> bool {
        let (islands, mine) = self.islands(population);
        other % islands == mine
    }

    /// (The island's population, the optimizers sharing it.)
    fn island(&self, population: usize) -> (usize, usize) {
        let (islands, mine) = self.islands(population);
        let peers = (self.optimizers - 1 - mine) / islands + 1;
        (population.div_ceil(islands), peers)
    }
}

/// `optimization_config.population_size`, within 4 ..= 10 000.
fn configured_population(config: &DomainConfig) -> Option<usize> {
    let p = config.optimization_config.get("population_size").and_then(Json::as_f64)?;
    Some(p.clamp(4.0, 10_000.0) as usize)
}

/// The population a population-based optimizer `config` names for `domain` (the network's,
/// before any split): `population_size`, or the optimizer's usual size.
pub fn network_population(domain: &dyn Domain, config: &DomainConfig) -> Option<usize> {
    let d = domain.space().len();
    let configured = configured_population(config);
    match config.optimization_plugin.as_deref().unwrap_or(DEFAULT_OPTIMIZER) {
        "shade" => Some(configured.unwrap_or_else(|| Shade::default_population(d))),
        "ga" | "predictor" => Some(configured.unwrap_or(GaConfig::default().population as usize)),
        _ => None,
    }
}

/// Candidates per generation of the optimizer `config` builds for `domain` (a round in the
/// experiment record), on a node at `place` among the domain's optimizers.
///
/// `population_size` (or the optimizer's usual size) is the domain's population across the
/// network, so a generation costs the network the same evaluations however many optimizers
/// share it, and each optimizer's part shrinks as optimizers join:
/// - a GA, or SHADE without `share_trials`, runs an island of `1 / optimizers` of it (at least
///   [`MIN_ISLAND`]), the islands sharing their best through the chain's champions;
/// - SHADE with `share_trials` splits it into at most `population / MIN_ISLAND` islands
///   ([`Place::islands`]) whose optimizers run the island's population together
///   ([`Shade::shared`]: each measures its share of a generation, and their shared trials
///   enter the population). Measured in `doin sim` (10-dimensional Rastrigin, docs/design.md
///   §12d): independent islands are what makes 2 – 4 optimizers better than one by more than
///   their number; sharing within islands is what keeps it so at 8 – 32, where islands of
///   their own would each need [`MIN_ISLAND`] members and the network's population would grow
///   with the optimizers.
///
/// CMA-ES keeps its λ; TPE proposes a few points at a time; `auto` and a plugin size their own
/// rounds (`batch`).
pub fn population_of(domain: &dyn Domain, config: &DomainConfig, batch: usize, place: Place) -> usize {
    let d = domain.space().len();
    let island = |p: usize| p.div_ceil(place.optimizers).max(MIN_ISLAND.min(p));
    let population = network_population(domain, config);
    match (config.optimization_plugin.as_deref().unwrap_or(DEFAULT_OPTIMIZER), population) {
        ("shade", Some(p)) if config.share_trials => {
            let (island, peers) = place.island(p);
            island.div_ceil(peers)
        }
        ("shade" | "ga" | "predictor", Some(p)) => island(p),
        ("tpe", _) => batch.clamp(1, doin_optimize::tpe::MAX_BATCH),
        ("cma-es", _) => {
            configured_population(config).unwrap_or(4 + (3.0 * (d.max(1) as f64).ln()).floor() as usize)
        }
        _ => batch,
    }
}

/// Builds the configured optimizer for `domain` on a node at `place` among the domain's
/// optimizers (the island's population: [`population_of`]).
pub fn build_optimizer(
    domain: &dyn Domain,
    config: &DomainConfig,
    seed: u64,
    place: Place,
) -> Result<Box<dyn Optimizer>, String> {
    let d = domain.space().len();
    let c = &config.optimization_config;
    let get = |k: &str| c.get(k).and_then(Json::as_f64);
    let island = population_of(domain, config, 0, place);
    Ok(match config.optimization_plugin.as_deref().unwrap_or(DEFAULT_OPTIMIZER) {
        "auto" => {
            // Its SHADE is an island of its own (it shares no trials with other nodes' SHADE).
            let shade = DomainConfig {
                optimization_plugin: Some("shade".into()),
                share_trials: false,
                ..config.clone()
            };
            Box::new(doin_optimize::Auto::new(d, population_of(domain, &shade, 0, place), seed))
        }
        "tpe" => Box::new(doin_optimize::Tpe::new(d, doin_optimize::Tpe::default_startup(d), seed)),
        "shade" if config.share_trials => {
            let (island, peers) =
                place.island(configured_population(config).unwrap_or(Shade::default_population(d)));
            Box::new(Shade::new(d, island, seed).shared(peers))
        }
        "shade" => Box::new(Shade::new(d, island, seed)),
        "cma-es" => Box::new(CmaEs::new(d, configured_population(config).unwrap_or(0), seed)),
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
