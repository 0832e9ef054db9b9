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
