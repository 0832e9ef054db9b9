//! Built-in domains by name, external domain plugins, and the on-chain [`DomainSpec`] a domain
//! registers with (its parameter space in the chain's integer units, direction, tolerances,
//! quorum rule and resource limits).

use std::sync::Arc;

use doin_ml::{Co2Forecaster, MlpClassifier};
use doin_optimize::{
    Dim, Space,
    domain::{Benchmark, Domain, Quadratic},
    functions::Function,
};
use doin_plugin::{PluginDomain, PluginSpec};
use doin_primitives::{
    BoundedString, BoundedVec, DomainSpec, FIXED_ONE, Metric,
    domain::{
        DataSource, Direction, DomainKind, EvaluationSpec, ParamKind, ParamSpec, QuorumRule, ResourceLimits,
    },
};
use serde_json::Value as Json;

use crate::config::{DomainConfig, NodeConfig};

/// Built-in domain names.
pub const BUILT_IN: [&str; 7] =
    ["quadratic", "sphere", "rastrigin", "rosenbrock", "ackley", MlpClassifier::ID, Co2Forecaster::ID];

fn num(map: &std::collections::BTreeMap<String, Json>, key: &str, default: f64) -> f64 {
    map.get(key).and_then(Json::as_f64).unwrap_or(default)
}

/// Builds the domain a config entry names.
pub fn build(config: &DomainConfig) -> Result<Arc<dyn Domain>, String> {
    let c = &config.optimization_config;
    let id = config.domain_id.as_str();
    if let Some(cmd) = config.domain_plugin.as_deref() {
        let command = plugin_command(cmd)?;
        let spec = PluginSpec::new(id, command);
        let d = PluginDomain::start(spec, id, Json::Object(c.clone().into_iter().collect()))
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(d));
    }
    let dims = num(c, "n_params", 10.0).clamp(1.0, 256.0) as usize;
    let domain: Arc<dyn Domain> = match id {
        // The Python system's example: 10 parameters in ±20; evaluators perturb the target.
        "quadratic" => Arc::new(Quadratic::new(
            dims,
            num(c, "bound", 20.0).abs().max(1e-3),
            0x0d01,
            num(c, "noise", 0.01),
        )),
        "sphere" => Arc::new(Benchmark::new(Function::Sphere, dims, 0x0d01)),
        "rastrigin" => Arc::new(Benchmark::new(Function::Rastrigin, dims, 0x0d01)),
        "rosenbrock" => Arc::new(Benchmark::new(Function::Rosenbrock, dims, 0x0d01)),
        "ackley" => Arc::new(Benchmark::new(Function::Ackley, dims, 0x0d01)),
        MlpClassifier::ID => Arc::new(MlpClassifier::new(num(c, "early_patience", 5.0) as u32)?),
        Co2Forecaster::ID => Arc::new(Co2Forecaster::new(num(c, "early_patience", 5.0) as u32)?),
        other => {
            return Err(format!(
                "unknown domain {other:?}: built-in domains are {BUILT_IN:?}; others need `domain_plugin`"
            ));
        }
    };
    Ok(domain)
}

/// `plugin:python3 path/to/plugin.py` → the command words.
pub fn plugin_command(text: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> =
        text.strip_prefix("plugin:").unwrap_or(text).split_whitespace().map(str::to_owned).collect();
    if words.is_empty() {
        return Err("empty plugin command".into());
    }
    Ok(words)
}

/// The chain's description of `domain` as configured.
pub fn spec_of(domain: &dyn Domain, config: &DomainConfig, node: &NodeConfig) -> Result<DomainSpec, String> {
    let metric =
        |v: f64, what: &str| Metric::from_f64(v).ok_or_else(|| format!("{what} {v} is out of range"));
    let space: &Space = domain.space();
    let mut params = Vec::with_capacity(space.len());
    for (i, d) in space.dims.iter().enumerate() {
        let kind = match *d {
            Dim::Continuous { lo, hi } => {
                ParamKind::Continuous { min: metric(lo, "bound")?, max: metric(hi, "bound")? }
            }
            Dim::Log { lo, hi } => {
                ParamKind::LogContinuous { min: metric(lo, "bound")?, max: metric(hi, "bound")? }
            }
            Dim::Integer { lo, hi } => ParamKind::Integer { min: lo, max: hi },
            Dim::Categorical { n } => ParamKind::Categorical {
                choices: BoundedVec::try_from_vec(
                    (0..n.min(64)).map(|c| BoundedString::new(c.to_string()).unwrap_or_default()).collect(),
                )
                .map_err(|e| e.to_string())?,
            },
        };
        params.push(ParamSpec { name: BoundedString::new(format!("p{i}")).unwrap_or_default(), kind });
    }
    let direction = if domain.higher_is_better() { Direction::Maximize } else { Direction::Minimize };
    let limits = &config.resource_limits;
    Ok(DomainSpec {
        id: BoundedString::new(domain.id()).map_err(|e| e.to_string())?,
        metric: BoundedString::new(if domain.higher_is_better() { "performance" } else { "loss" })
            .unwrap_or_default(),
        direction,
        params: BoundedVec::try_from_vec(params).map_err(|e| e.to_string())?,
        evaluation: EvaluationSpec {
            data: if !config.synthetic_data_validation {
                DataSource::Trusted
            } else if config.has_synthetic_data {
                DataSource::Synthetic
            } else {
                DataSource::HeldOut
            },
            recipe: BoundedString::new(domain.id()).unwrap_or_default(),
            retrain: true,
        },
        tolerance: metric(num(&config.optimization_config, "tolerance", node.quorum_tolerance), "tolerance")?,
        acceptance_tolerance: Metric(0),
        scale: Metric(FIXED_ONE),
        baseline: metric(
            num(&config.optimization_config, "baseline", if domain.higher_is_better() { -1e6 } else { 1e6 }),
            "baseline",
        )?,
        weight: FIXED_ONE as u64,
        quorum: QuorumRule {
            min: node.quorum_min_evaluators,
            max: node.quorum_max_evaluators,
            fraction_num: (node.quorum_fraction * 1000.0).round() as u16,
            fraction_den: 1000,
        },
        target: match config.target_performance {
            Some(t) => Some(metric(t, "target_performance")?),
            None => None,
        },
        limits: ResourceLimits {
            max_wall_ms: (num(limits, "max_training_seconds", 60.0) * 1000.0) as u64,
            max_epochs: num(limits, "max_epochs", 100.0) as u32,
            max_memory_mb: num(limits, "max_memory_mb", 2048.0) as u32,
        },
        bounty_per_accept: doin_primitives::Amount::ZERO,
        kind: DomainKind::Optimization,
    })
}
