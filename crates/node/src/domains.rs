//! Built-in domains by name, external domain plugins, and the on-chain [`DomainSpec`] a domain
//! registers with (its parameter space in the chain's integer units, direction, tolerances,
//! quorum rule and resource limits).

use std::{sync::Arc, time::Duration};

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

/// How a domain plugin is supervised: its command, and the domain's own limits — a plugin may
/// train as long and use as much memory (its whole process group) as `resource_limits` allow
/// (`max_training_seconds`, default 60; `max_memory_mb`, default 2048), plus 10 s for the
/// handshake and the evaluation data.
pub fn plugin_spec(config: &DomainConfig, command: Vec<String>) -> PluginSpec {
    let mut spec = PluginSpec::new(config.domain_id.as_str(), command);
    let limits = &config.resource_limits;
    spec.limits.call_timeout = Duration::from_secs_f64(num(limits, "max_training_seconds", 60.0) + 10.0);
    spec.limits.max_rss_bytes = (num(limits, "max_memory_mb", 2048.0) * 1048576.0) as u64;
    spec
}

/// Builds the domain a config entry names.
pub fn build(config: &DomainConfig) -> Result<Arc<dyn Domain>, String> {
    let c = &config.optimization_config;
    let id = config.domain_id.as_str();
    if let Some(cmd) = config.domain_plugin.as_deref() {
        let spec = plugin_spec(config, plugin_command(cmd)?);
        let d = PluginDomain::start(spec, id, Json::Object(c.clone().into_iter().collect()))
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(d));
    }
    let dims = num(c, "n_params", 10.0).clamp(1.0, 256.0) as usize;
    let domain: Arc<dyn Domain> = match id {
        // The Python system's example: 10 parameters in ±20; evaluators weigh each coordinate's
        // error by 1 ± noise drawn from their seed.
        "quadratic" => Arc::new(Quadratic::new(
            dims,
            num(c, "bound", 20.0).abs().max(1e-3),
            0x0d01,
            num(c, "noise", default_noise(id)),
        )),
        "sphere" | "rastrigin" | "rosenbrock" | "ackley" => {
            let function = match id {
                "sphere" => Function::Sphere,
                "rastrigin" => Function::Rastrigin,
                "rosenbrock" => Function::Rosenbrock,
                _ => Function::Ackley,
            };
            Arc::new(Benchmark::new(function, dims, 0x0d01).with_noise(num(c, "noise", default_noise(id))))
        }
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

/// `quorum_fraction` as the simplest fraction `n/d` (d ≤ 1 000) within 1e-9 of it, else the
/// nearest thousandth. 2/3 must stay 2/3: as 667/1000 an escalation of 3 needed
/// `ceil(3 × 0.667)` = 3 agreeing votes instead of 2, so one garbage voter blocked every
/// escalation it sat in (the 4-node garbage-voter devnet stalled below its target).
pub fn fraction(f: f64) -> (u16, u16) {
    for d in 1..=1000u16 {
        let n = (f * f64::from(d)).round();
        if (n / f64::from(d) - f).abs() < 1e-9 && n >= 1.0 {
            return (n as u16, d);
        }
    }
    (((f * 1000.0).round() as u16).max(1), 1000)
}

/// The evaluator noise a built-in synthetic domain measures with unless `noise` is set.
fn default_noise(id: &str) -> f64 {
    if id == "quadratic" { Quadratic::NOISE } else { Benchmark::NOISE }
}

/// How closely a domain's evaluators agree: the vote and over-claim tolerance is
/// `absolute + relative × |median|`; a verified gain must exceed `acceptance × |champion|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute part, in the metric's units.
    pub absolute: f64,
    /// Relative part, a fraction of the median.
    pub relative: f64,
    /// Relative acceptance margin, a fraction of the champion.
    pub acceptance: f64,
}

/// The built-in domains' tolerances, from their evaluators' noise. `quadratic` and the benchmark
/// functions measure with a relative noise (weights or a scale of `1 ± noise`), so their
/// tolerance is relative (2.5 × the noise) with a floor of 1e-9 near the optimum, and gains
/// within a tenth of the noise earn nothing: a claim off by a constant factor is refused at any
/// scale. The ML domains' metrics are bounded (accuracy, MAE in ppm), their noise is the data
/// split's, measured absolute. `None` for plugins: `quorum_tolerance` applies.
pub fn tolerance_profile(id: &str, noise: f64) -> Option<Tolerance> {
    match id {
        "quadratic" | "sphere" | "rastrigin" | "rosenbrock" | "ackley" => {
            Some(Tolerance { absolute: 1e-9, relative: (2.5 * noise).min(1.0), acceptance: noise / 10.0 })
        }
        MlpClassifier::ID => Some(Tolerance { absolute: 0.05, relative: 0.0, acceptance: 0.0 }),
        Co2Forecaster::ID => Some(Tolerance { absolute: 0.1, relative: 0.0, acceptance: 0.0 }),
        _ => None,
    }
}

/// The domain's tolerance as configured: `optimization_config.tolerance`,
/// `relative_tolerance` and `relative_acceptance` win; then the top-level `quorum_tolerance` if
/// the config set it; then the built-in profile; then `quorum_tolerance`'s default.
pub fn tolerance_of(config: &DomainConfig, node: &NodeConfig) -> Result<Tolerance, String> {
    let c = &config.optimization_config;
    let profile = tolerance_profile(
        &config.domain_id,
        num(c, "noise", default_noise(&config.domain_id)).clamp(0.0, 1.0),
    );
    let base = match (node.quorum_tolerance, profile) {
        (Some(absolute), _) => Tolerance { absolute, relative: 0.0, acceptance: 0.0 },
        (None, Some(p)) => p,
        (None, None) => {
            Tolerance { absolute: crate::config::DEFAULT_QUORUM_TOLERANCE, relative: 0.0, acceptance: 0.0 }
        }
    };
    let t = Tolerance {
        absolute: num(c, "tolerance", base.absolute),
        relative: num(c, "relative_tolerance", base.relative),
        acceptance: num(c, "relative_acceptance", base.acceptance),
    };
    let fraction = |v: f64, key: &str| {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("domain {}: optimization_config.{key} = {v} must be in [0, 1]", config.domain_id))
        }
    };
    fraction(t.relative, "relative_tolerance")?;
    fraction(t.acceptance, "relative_acceptance")?;
    if !(0.0..=1e9).contains(&t.absolute) {
        return Err(format!("domain {}: tolerance {} must be in [0, 1e9]", config.domain_id, t.absolute));
    }
    Ok(t)
}

/// How far two evaluations of the same parameters on the same seed may differ
/// (`DomainSpec::reproducibility`): `optimization_config.reproducibility` (a number ≥ 0 in the
/// metric's units, or `false` for none); by default 2e-9 for the built-in domains, which
/// evaluate deterministically per (parameters, seed), and none for plugins.
pub fn reproducibility_of(config: &DomainConfig) -> Result<Option<f64>, String> {
    let built_in = config.domain_plugin.is_none() && tolerance_profile(&config.domain_id, 0.0).is_some();
    match config.optimization_config.get("reproducibility") {
        None => Ok(built_in.then_some(2e-9)),
        Some(Json::Bool(false)) | Some(Json::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=1e9).contains(&t) => Ok(Some(t)),
            _ => Err(format!(
                "domain {}: optimization_config.reproducibility = {v} must be a number in [0, 1e9] or false",
                config.domain_id
            )),
        },
    }
}

/// What the optimizer searches for a configured domain: the domain itself, or the domain within
/// its `param_bounds` (checked against the domain's parameters here; their shape was checked
/// with the rest of the config).
pub fn search_domain(domain: Arc<dyn Domain>, config: &DomainConfig) -> Result<Arc<dyn Domain>, String> {
    if config.param_bounds.is_empty() {
        return Ok(domain);
    }
    let mut bounds = std::collections::BTreeMap::new();
    for (name, range) in &config.param_bounds {
        let pair = range.as_array().and_then(|a| match a.as_slice() {
            [lo, hi] => Some((lo.as_f64()?, hi.as_f64()?)),
            _ => None,
        });
        let pair = pair.ok_or_else(|| format!("param_bounds.{name}: must be [low, high]"))?;
        bounds.insert(name.clone(), pair);
    }
    let narrowed =
        doin_optimize::narrowed::Narrowed::new(domain, &bounds).map_err(|e| format!("param_bounds.{e}"))?;
    Ok(Arc::new(narrowed))
}

/// The chain's description of `domain` as configured.
pub fn spec_of(domain: &dyn Domain, config: &DomainConfig, node: &NodeConfig) -> Result<DomainSpec, String> {
    let metric =
        |v: f64, what: &str| Metric::from_f64(v).ok_or_else(|| format!("{what} {v} is out of range"));
    let space: &Space = domain.space();
    let names = domain.param_names();
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
        let name = names.get(i).cloned().unwrap_or_else(|| format!("p{i}"));
        params.push(ParamSpec {
            name: BoundedString::new(name).map_err(|e| format!("parameter {i}: {e}"))?,
            kind,
        });
    }
    let tolerance = tolerance_of(config, node)?;
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
        tolerance: metric(tolerance.absolute, "tolerance")?,
        acceptance_tolerance: Metric(0),
        relative_tolerance_ppm: (tolerance.relative * 1e6).round() as u32,
        relative_acceptance_ppm: (tolerance.acceptance * 1e6).round() as u32,
        scale: Metric(FIXED_ONE),
        baseline: metric(
            num(&config.optimization_config, "baseline", if domain.higher_is_better() { -1e6 } else { 1e6 }),
            "baseline",
        )?,
        weight: FIXED_ONE as u64,
        quorum: {
            let (fraction_num, fraction_den) = fraction(node.quorum_fraction);
            QuorumRule {
                min: node.quorum_min_evaluators,
                max: node.quorum_max_evaluators,
                fraction_num,
                fraction_den,
            }
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
        reproducibility: reproducibility_of(config)?.map(|t| metric(t, "reproducibility")).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_limits_set_the_plugins_supervision_and_the_registered_limits() {
        let mut c = DomainConfig { domain_id: "quadratic".into(), ..DomainConfig::default() };
        let spec = plugin_spec(&c, vec!["true".into()]);
        assert_eq!(
            (spec.limits.call_timeout, spec.limits.max_rss_bytes),
            (Duration::from_secs(70), 2048 << 20)
        );
        c.resource_limits.insert("max_training_seconds".into(), 3600.into());
        c.resource_limits.insert("max_memory_mb".into(), 512.into());
        c.resource_limits.insert("max_epochs".into(), 40.into());
        let spec = plugin_spec(&c, vec!["true".into()]);
        assert_eq!(spec.limits.call_timeout, Duration::from_secs(3610), "a plugin may train for an hour");
        assert_eq!(spec.limits.max_rss_bytes, 512 << 20);
        let registered = spec_of(build(&c).unwrap().as_ref(), &c, &NodeConfig::default()).unwrap().limits;
        assert_eq!(
            (registered.max_wall_ms, registered.max_memory_mb, registered.max_epochs),
            (3_600_000, 512, 40),
            "evaluators get the same budget"
        );
    }

    /// The node's quorum keys and the domain's `bound`, `baseline` and data keys reach the
    /// spec the domain registers on chain.
    #[test]
    fn quorum_bound_baseline_and_data_keys_shape_the_registered_spec() {
        let mut c = DomainConfig { domain_id: "quadratic".into(), ..DomainConfig::default() };
        c.optimization_config.insert("bound".into(), 3.5.into());
        c.optimization_config.insert("baseline".into(), (-250.0).into());
        let node = NodeConfig {
            quorum_min_evaluators: 2,
            quorum_max_evaluators: 5,
            quorum_fraction: 0.75,
            ..NodeConfig::default()
        };
        let spec = spec_of(build(&c).unwrap().as_ref(), &c, &node).unwrap();
        assert_eq!(
            (spec.quorum.min, spec.quorum.max, spec.quorum.fraction_num, spec.quorum.fraction_den),
            (2, 5, 3, 4)
        );
        assert_eq!(
            spec.params[0].kind,
            doin_primitives::domain::ParamKind::Continuous {
                min: Metric::from_f64(-3.5).unwrap(),
                max: Metric::from_f64(3.5).unwrap()
            }
        );
        assert_eq!(spec.baseline, Metric::from_f64(-250.0).unwrap());
        assert_eq!(spec.evaluation.data, DataSource::Synthetic);
        c.has_synthetic_data = false;
        let spec = spec_of(build(&c).unwrap().as_ref(), &c, &node).unwrap();
        assert_eq!(spec.evaluation.data, DataSource::HeldOut);
        c.synthetic_data_validation = false;
        let spec = spec_of(build(&c).unwrap().as_ref(), &c, &node).unwrap();
        assert_eq!(spec.evaluation.data, DataSource::Trusted);
        // A built-in model names its parameters on chain (what `param_bounds` takes).
        let mlp = DomainConfig { domain_id: "mlp_digits".into(), ..DomainConfig::default() };
        let spec = spec_of(build(&mlp).unwrap().as_ref(), &mlp, &node).unwrap();
        assert_eq!(spec.params[2].name.as_str(), "learning_rate");
    }

    /// `early_patience` reaches the built-in models: a candidate's training stops after that
    /// many epochs without a better validation score.
    #[test]
    fn early_patience_stops_a_candidates_training() {
        use doin_optimize::{Value, domain::Budget};
        let epochs_with = |patience: u32| {
            let mut c = DomainConfig { domain_id: "mlp_digits".into(), ..DomainConfig::default() };
            c.optimization_config.insert("early_patience".into(), patience.into());
            let d = build(&c).unwrap();
            // One small layer, a high learning rate: validation stops improving early.
            let params = [
                Value::Int(1),
                Value::Int(16),
                Value::Real(0.03),
                Value::Real(1e-6),
                Value::Real(0.0),
                Value::Int(256),
                Value::Int(60),
            ];
            let budget = Budget {
                deadline: std::time::Instant::now() + Duration::from_secs(120),
                max_epochs: 100,
                max_memory_bytes: 1 << 30,
            };
            d.evaluate(&params, None, budget).unwrap().metrics["epochs"]
        };
        let (short, long) = (epochs_with(1), epochs_with(60));
        assert!(short < long, "patience 1 trained {short} epochs, patience 60 {long}");
        assert_eq!(long, 60.0, "with patience past the epoch count the candidate trains them all");
    }

    #[test]
    fn quorum_fractions_stay_exact() {
        assert_eq!(fraction(2.0 / 3.0), (2, 3));
        assert_eq!(fraction(0.5), (1, 2));
        assert_eq!(fraction(1.0), (1, 1));
        assert_eq!(fraction(0.75), (3, 4));
        assert_eq!(fraction(0.6667), (667, 1000), "no small fraction: the nearest thousandth");
        // An escalation of 3 with 2/3 needs 2 agreeing votes.
        let (n, d) = fraction(2.0 / 3.0);
        assert_eq!((3 * u32::from(n)).div_ceil(u32::from(d)), 2);
    }

    /// `reproducibility`: 2e-9 for built-ins by default, none for plugins or with `false`, a
    /// number as given, anything else refused naming the key.
    #[test]
    fn reproducibility_key_shapes_the_registered_spec() {
        let mut c = DomainConfig { domain_id: "quadratic".into(), ..DomainConfig::default() };
        let spec = |c: &DomainConfig| spec_of(build(c).unwrap().as_ref(), c, &NodeConfig::default());
        assert_eq!(spec(&c).unwrap().reproducibility, Some(Metric(2)));
        c.optimization_config.insert("reproducibility".into(), serde_json::json!(0.001));
        assert_eq!(spec(&c).unwrap().reproducibility, Some(Metric(1_000_000)));
        c.optimization_config.insert("reproducibility".into(), serde_json::json!(false));
        assert_eq!(spec(&c).unwrap().reproducibility, None);
        c.optimization_config.insert("reproducibility".into(), serde_json::json!("exact"));
        let err = spec(&c).unwrap_err();
        assert!(err.contains("optimization_config.reproducibility"), "{err}");
        c.optimization_config.insert("reproducibility".into(), serde_json::json!(-1.0));
        assert!(spec(&c).is_err());
        let plugin = DomainConfig {
            domain_id: "quadratic".into(),
            domain_plugin: Some("python3 plugin.py".into()),
            ..DomainConfig::default()
        };
        assert_eq!(reproducibility_of(&plugin).unwrap(), None);
    }

    /// The tolerance keys take effect in the registered spec, in their order of precedence,
    /// and a bad value is refused naming its key.
    #[test]
    fn tolerance_keys_shape_the_registered_spec() {
        let spec = |c: &DomainConfig, n: &NodeConfig| {
            let d = build(c).unwrap();
            spec_of(d.as_ref(), c, n)
        };
        let node = NodeConfig::default();
        let mut quadratic = DomainConfig { domain_id: "quadratic".into(), ..DomainConfig::default() };
        // The built-in profile: noise 0.1 → 25 % relative, 1 % acceptance, 1e-9 absolute.
        let s = spec(&quadratic, &node).unwrap();
        assert_eq!(
            (s.tolerance.0, s.relative_tolerance_ppm, s.relative_acceptance_ppm),
            (1, 250_000, 10_000)
        );
        // `noise` moves the profile with it.
        quadratic.optimization_config.insert("noise".into(), Json::from(0.2));
        let s = spec(&quadratic, &node).unwrap();
        assert_eq!((s.relative_tolerance_ppm, s.relative_acceptance_ppm), (500_000, 20_000));
        // The domain's own keys win.
        quadratic.optimization_config.insert("relative_tolerance".into(), Json::from(0.3));
        quadratic.optimization_config.insert("relative_acceptance".into(), Json::from(0.0));
        quadratic.optimization_config.insert("tolerance".into(), Json::from(0.5));
        let s = spec(&quadratic, &node).unwrap();
        assert_eq!(
            (s.tolerance.0, s.relative_tolerance_ppm, s.relative_acceptance_ppm),
            (500_000_000, 300_000, 0)
        );
        // A top-level quorum_tolerance is every domain's absolute tolerance, without a relative part.
        let plain = DomainConfig { domain_id: "sphere".into(), ..DomainConfig::default() };
        let set = NodeConfig { quorum_tolerance: Some(2.0), ..NodeConfig::default() };
        let s = spec(&plain, &set).unwrap();
        assert_eq!((s.tolerance.0, s.relative_tolerance_ppm), (2_000_000_000, 0));
        // Out of range: refused, naming the key.
        quadratic.optimization_config.insert("relative_tolerance".into(), Json::from(2.0));
        let err = spec(&quadratic, &node).unwrap_err();
        assert!(err.contains("relative_tolerance"), "{err}");
    }
}
