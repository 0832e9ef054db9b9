//! The checks of a parsed configuration: every key typed and in range, unknown keys refused
//! with the closest known one, keys of the Python system that DOIN cannot honour refused with
//! the reason.

use std::net::IpAddr;

use serde_json::Value as Json;

use super::{ConfigError, DomainConfig, Loaded, NodeConfig, bad};

impl NodeConfig {
    /// Validates a configuration (also after CLI overrides).
    pub fn validated(self) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        if let Some(k) = self.unknown.keys().find(|k| k.as_str() != "reveal_delay") {
            return Err(unknown_key(k, k, TOP_LEVEL_KEYS));
        }
        self.host
            .parse::<IpAddr>()
            .map_err(|_| bad("host", format!("{:?} is not an IP address", self.host)))?;
        if self.port == 0 {
            return Err(bad("port", "must be 1..=65535"));
        }
        if self.p2p_port == Some(0) {
            return Err(bad("p2p_port", "must be 1..=65535"));
        }
        if self.p2p_port.is_none() && self.port == u16::MAX {
            return Err(bad("port", "must be below 65535 unless p2p_port is set (P2P uses port + 1)"));
        }
        if self.network_protocol != "gossipsub" {
            return Err(bad(
                "network_protocol",
                format!(
                    "{:?} is not supported; DOIN uses \"gossipsub\" (flooding was measured 4x costlier)",
                    self.network_protocol
                ),
            ));
        }
        let positive = |key: &str, v: f64, max: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(bad(key, format!("{v} must be in (0, {max}]")))
            }
        };
        positive("initial_threshold", self.initial_threshold, 1e6)?;
        positive("target_block_time", self.target_block_time, 86_400.0)?;
        positive("max_block_interval", self.max_block_interval, 86_400.0)?;
        positive("quorum_fraction", self.quorum_fraction, 1.0)?;
        if let Some(t) = self.quorum_tolerance {
            positive("quorum_tolerance", t, 1e9)?;
        }
        positive("quorum_timeout", self.quorum_timeout, 86_400.0)?;
        positive("http_rate_limit", self.http_rate_limit, 1e6)?;
        positive("http_burst", self.http_burst, 1e6)?;
        if self.http_burst < 1.0 {
            return Err(bad("http_burst", format!("{} must be at least 1", self.http_burst)));
        }
        for (i, u) in self.api_users.iter().enumerate() {
            let key = |k: &str| format!("api_users[{i}].{k}");
            if u.user.is_empty() || u.user.len() > 64 {
                return Err(bad(key("user"), "must be 1-64 characters"));
            }
            if u.key.len() < 16 || u.key.len() > 256 || !u.key.is_ascii() {
                return Err(bad(key("key"), "must be 16-256 ASCII characters"));
            }
            if self.api_users[..i].iter().any(|o| o.user == u.user) {
                return Err(bad(key("user"), format!("{:?} is listed twice", u.user)));
            }
            if self.api_users[..i].iter().any(|o| o.key == u.key) || self.api_key.as_deref() == Some(&u.key) {
                return Err(bad(key("key"), "is another user's key or the node's api_key"));
            }
            positive(&key("rate_per_s"), u.rate_per_s, 1e6)?;
            positive(&key("burst"), u.burst, 1e6)?;
            if u.burst < 1.0 {
                return Err(bad(key("burst"), format!("{} must be at least 1", u.burst)));
            }
        }
        positive("seal_slot", self.seal_slot, 3600.0)?;
        if self.unknown.contains_key("reveal_delay") {
            return Err(bad(
                "reveal_delay",
                "was replaced by on-chain commits: a reveal goes out once its commit is included and \
                 sealed by the next block (tune `seal_slot` instead)",
            ));
        }
        if !(1..=64).contains(&self.quorum_min_evaluators) {
            return Err(bad("quorum_min_evaluators", "must be in 1..=64"));
        }
        if !(self.quorum_min_evaluators..=64).contains(&self.quorum_max_evaluators) {
            return Err(bad("quorum_max_evaluators", "must be in quorum_min_evaluators..=64"));
        }
        if !(1..=64).contains(&self.workers) {
            return Err(bad("workers", "must be in 1..=64"));
        }
        if self.market_threads > 256 {
            return Err(bad("market_threads", "must be in 0..=256"));
        }
        if !(1..=doin_primitives::market::MAX_MEM_MB).contains(&self.market_check_mem_mb) {
            return Err(bad("market_check_mem_mb", "must be in 1..=256"));
        }
        if let Some(c) = &self.checkpoint {
            c.parse::<crate::join::Trusted>().map_err(|e| bad("checkpoint", e))?;
            if self.genesis.is_none() {
                return Err(bad("checkpoint", "joining from a snapshot needs the network's `genesis` file"));
            }
        }
        for (i, text) in self.listen_addresses.iter().enumerate() {
            text.parse::<doin_net::Multiaddr>().map_err(|e| {
                bad(format!("listen_addresses[{i}]"), format!("{text:?} is not a multiaddr: {e}"))
            })?;
        }
        for (i, text) in self.external_addresses.iter().enumerate() {
            let key = format!("external_addresses[{i}]");
            let addr = text
                .parse::<doin_net::Multiaddr>()
                .map_err(|e| bad(&key, format!("{text:?} is not a multiaddr: {e}")))?;
            if addr.iter().any(|p| matches!(p, doin_net::Protocol::P2pCircuit)) {
                return Err(bad(
                    key,
                    "goes through a relay: put a relay's circuit in `listen_addresses` instead",
                ));
            }
            if !addr.iter().any(|p| matches!(p, doin_net::Protocol::Tcp(_) | doin_net::Protocol::QuicV1)) {
                return Err(bad(key, format!("{text:?} names no TCP port or QUIC endpoint")));
            }
        }
        if self.keep_bodies < 16 {
            return Err(bad(
                "keep_bodies",
                "must be at least 16 (the blocks a reorg below finality cannot need)",
            ));
        }
        if !self.fee_market_enabled {
            // A chain parameter: it sets the development chain this node creates, and a chain
            // of a genesis file has its own.
            warnings.push(if self.genesis.is_some() {
                "fee_market_enabled: false is ignored with a genesis file; the fee market is the \
                 chain's parameter (`params.fee_market_enabled` in the genesis)"
                    .into()
            } else {
                "fee_market_enabled: false fixes this development chain's base fee at its initial value"
                    .into()
            });
        }
        if let Some(b) = &self.storage_backend {
            warnings.push(format!("storage_backend {b:?} ignored; DOIN uses its embedded crash-safe store"));
        }
        if self.discovery_enabled && self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            warnings.push("discovery_enabled ignored: LAN discovery needs a non-loopback host".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, d) in self.domains.iter().enumerate() {
            check_domain(i, d, self.api_key.as_deref(), &mut warnings)?;
            if !seen.insert(d.domain_id.clone()) {
                return Err(bad(
                    format!("domains[{i}].domain_id"),
                    format!("{:?} is listed twice", d.domain_id),
                ));
            }
        }
        for (i, j) in self.federated_jobs.iter().enumerate() {
            check_job(i, j)?;
            if seen.contains(&j.job_id) || self.federated_jobs[..i].iter().any(|o| o.job_id == j.job_id) {
                return Err(bad(
                    format!("federated_jobs[{i}].job_id"),
                    format!("{:?} is already a domain or job of this config", j.job_id),
                ));
            }
        }
        Ok(Loaded { config: self, warnings })
    }
}

/// The checks of a job created over HTTP (`POST /api/job`): those of a `federated_jobs[]`
/// entry, naming the field.
pub fn check_job_request(j: &super::FederatedJobConfig) -> Result<(), String> {
    check_job(0, j).map_err(|e| format!("{}: {}", e.key.trim_start_matches("federated_jobs[0]."), e.problem))
}

/// The checks of `federated_jobs[i]`.
fn check_job(i: usize, j: &super::FederatedJobConfig) -> Result<(), ConfigError> {
    let key = |k: &str| format!("federated_jobs[{i}].{k}");
    // It names the job's directory under `DATA_DIR/federated`: no leading dot (`..`).
    let id_ok = j.job_id.len() <= 64
        && j.job_id.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && j.job_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !id_ok {
        return Err(bad(
            key("job_id"),
            format!("{:?} must be 1-64 characters of [a-z0-9_.-], starting with a letter or digit", j.job_id),
        ));
    }
    if j.model != "mlp_digits" {
        return Err(bad(
            key("model"),
            format!(
                "{:?} is not available to federated jobs: the built-in \"mlp_digits\" (digits, 64 inputs, \
                 10 classes) is",
                j.model
            ),
        ));
    }
    if j.hidden.len() > 4 || j.hidden.iter().any(|h| !(1..=1024).contains(h)) {
        return Err(bad(key("hidden"), "at most 4 layers of 1..=1024 units"));
    }
    if !(1..=128).contains(&j.min_updates) {
        return Err(bad(key("min_updates"), "must be in 1..=128"));
    }
    if !(j.min_updates..=128).contains(&j.max_updates) {
        return Err(bad(key("max_updates"), "must be in min_updates..=128 (a round records 128 at most)"));
    }
    let range = |k: &str, v: f64, lo: f64, hi: f64| {
        if v.is_finite() && v >= lo && v <= hi {
            Ok(())
        } else {
            Err(bad(key(k), format!("{v} must be in [{lo}, {hi}]")))
        }
    };
    range("deadline_k", j.deadline_k, 0.0, 100.0)?;
    range("min_wait", j.min_wait, 0.01, 86_400.0)?;
    range("max_wait", j.max_wait, j.min_wait, 86_400.0)?;
    range("pool_per_round", j.pool_per_round, 0.0, 1e9)?;
    range("bounty", j.bounty, j.pool_per_round, 1e9)?;
    range("lr", j.lr, 1e-6, 10.0)?;
    if !(1..=1024).contains(&j.batch) {
        return Err(bad(key("batch"), "must be in 1..=1024"));
    }
    range("inference_price", j.inference_price, 0.0, 1e9)?;
    if j.inference_price > 0.0 && !j.serve_inference {
        return Err(bad(
            key("inference_price"),
            "a price needs serve_inference: true (this node would not serve the job's model)",
        ));
    }
    Ok(())
}

/// The checks of `domains[i]` (`api_key` is the top-level key external evaluation needs).
fn check_domain(
    i: usize,
    d: &DomainConfig,
    api_key: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("domains[{i}].{k}");
    if d.domain_id.is_empty() {
        return Err(bad(key("domain_id"), "missing"));
    }
    if let Some(k) = d.unknown.keys().next() {
        return Err(unknown_key(&key(k), k, DOMAIN_KEYS));
    }
    if !d.optimize && !d.evaluate {
        return Err(bad(
            key("optimize"),
            "optimize and evaluate are both false: this domain entry would do nothing (remove it, or turn one on)",
        ));
    }
    if d.optimization_plugin.as_deref() == Some("predictor") {
        return Err(bad(
            key("optimization_plugin"),
            "\"predictor\" is the Python system's in-process predictor plugin, which DOIN does not \
             embed: run the predictor as a domain plugin (`domain_plugin: \"plugin:python3 \
             your_domain.py\"`, see docs/plugins.md) and choose \"shade\", \"ga\", \"cma-es\" or \
             \"plugin:COMMAND\" as optimizer",
        ));
    }
    if d.inference_plugin.is_some() {
        return Err(bad(
            key("inference_plugin"),
            "not supported yet: DOIN serves inference from the verified champion, not from a \
             per-node plugin (remove the key)",
        ));
    }
    if d.synthetic_data_plugin.is_some() {
        return Err(bad(
            key("synthetic_data_plugin"),
            "evaluation data come from the domain itself (a built-in's generator, or the domain \
             plugin's `evaluate` with the evaluator's seed); a separate data plugin would not be \
             used (remove the key)",
        ));
    }
    check_optimization_config(d, &key)?;
    if !d.inference_price.is_finite() || d.inference_price < 0.0 || d.inference_price > 1e9 {
        return Err(bad(key("inference_price"), "a price in DOIN from 0 to 1e9 per request"));
    }
    if d.inference_price > 0.0 && !d.serve_inference {
        return Err(bad(
            key("inference_price"),
            "a price needs serve_inference: true (this node would not serve the domain)",
        ));
    }
    if d.optimize_on_hire && !d.optimize {
        return Err(bad(
            key("optimize_on_hire"),
            "needs optimize: true (the hired work is this node's optimizer)",
        ));
    }
    if !d.hire_price.is_finite() || d.hire_price < 0.0 || d.hire_price > 1e9 {
        return Err(bad(key("hire_price"), "a price in DOIN from 0 to 1e9 per evaluation"));
    }
    if d.hire_price > 0.0 && !d.optimize_on_hire {
        return Err(bad(
            key("hire_price"),
            "a price needs optimize_on_hire: true (nothing here is hired otherwise)",
        ));
    }
    if d.warm_start_from.len() > MAX_WARM_START_FROM {
        return Err(bad(key("warm_start_from"), format!("at most {MAX_WARM_START_FROM} domains")));
    }
    let mut similar = std::collections::BTreeSet::new();
    for from in &d.warm_start_from {
        let why = if from.is_empty() {
            "an empty domain id"
        } else if *from == d.domain_id {
            "names the domain itself (its own history seeds it anyway)"
        } else if !similar.insert(from) {
            "names a domain twice"
        } else {
            continue;
        };
        return Err(bad(key("warm_start_from"), format!("{from:?}: {why}")));
    }
    if let Some(t) = d.target_performance
        && !t.is_finite()
    {
        return Err(bad(key("target_performance"), "must be a finite number"));
    }
    for (k, v) in &d.resource_limits {
        let ok = match k.as_str() {
            "max_training_seconds" | "max_memory_mb" | "max_epochs" => {
                v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)
            }
            other => {
                return Err(unknown_key(
                    &key(&format!("resource_limits.{other}")),
                    other,
                    &["max_training_seconds", "max_memory_mb", "max_epochs"],
                ));
            }
        };
        if !ok {
            return Err(bad(key(&format!("resource_limits.{k}")), "must be a positive number"));
        }
    }
    // Their names and ranges are checked against the domain's parameters once it is
    // built (`domains::search_domain`).
    for (k, v) in &d.param_bounds {
        let ok = v.as_array().is_some_and(|a| match a.as_slice() {
            [lo, hi] => lo
                .as_f64()
                .zip(hi.as_f64())
                .is_some_and(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi),
            _ => false,
        });
        if !ok {
            return Err(bad(
                key(&format!("param_bounds.{k}")),
                format!("{v}: must be [low, high], two finite numbers with low < high"),
            ));
        }
    }
    if let Some(p) = &d.optimization_plugin
        && !matches!(p.as_str(), "auto" | "tpe" | "ga" | "shade" | "cma-es")
        && !p.starts_with("plugin:")
    {
        return Err(bad(
            key("optimization_plugin"),
            format!("{p:?}: use \"auto\", \"tpe\", \"shade\", \"cma-es\", \"ga\" or \"plugin:COMMAND ARGS\""),
        ));
    }
    if d.external_evaluation && api_key.is_none_or(str::is_empty) {
        return Err(bad(
            key("external_evaluation"),
            "needs a top-level api_key for the evaluators to claim tasks",
        ));
    }
    if !d.synthetic_data_validation {
        warnings.push(format!(
            "domain {}: synthetic_data_validation is false — TRUSTED MODE: optimae are not verified by a quorum",
            d.domain_id
        ));
    }
    Ok(())
}

/// Top-level keys (for "did you mean" hints).
const TOP_LEVEL_KEYS: &[&str] = &[
    "host",
    "port",
    "p2p_port",
    "data_dir",
    "bootstrap_peers",
    "genesis",
    "identity",
    "domains",
    "experiment_stats_file",
    "olap_db_path",
    "network_protocol",
    "discovery_enabled",
    "listen_addresses",
    "relay_server",
    "quic",
    "external_addresses",
    "initial_threshold",
    "target_block_time",
    "quorum_min_evaluators",
    "quorum_max_evaluators",
    "quorum_fraction",
    "quorum_tolerance",
    "fee_market_enabled",
    "storage_backend",
    "reset_chain",
    "log_level",
    "max_block_interval",
    "seal_slot",
    "quorum_timeout",
    "workers",
    "api_key",
    "http_rate_limit",
    "http_burst",
    "cors_origins",
    "federated_jobs",
    "api_users",
    "market_threads",
    "market_check_mem_mb",
    "archive",
    "keep_bodies",
    "checkpoint",
];
/// Keys of a `domains[]` entry.
pub(super) const DOMAIN_KEYS: &[&str] = &[
    "domain_id",
    "optimize",
    "evaluate",
    "has_synthetic_data",
    "synthetic_data_validation",
    "optimization_plugin",
    "domain_plugin",
    "synthetic_data_plugin",
    "inference_plugin",
    "optimization_config",
    "param_bounds",
    "target_performance",
    "external_evaluation",
    "resource_limits",
    "share_trials",
    "warm_start_from",
    "serve_inference",
    "inference_price",
    "optimize_on_hire",
    "hire_price",
];
/// Domains one `warm_start_from` names at most.
pub const MAX_WARM_START_FROM: usize = 16;
/// A check of one config value.
type ValueCheck = fn(&Json) -> bool;

/// `optimization_config` keys the built-in domains and optimizers read: name, what it takes,
/// and the check of a value.
const OPTIMIZATION_KEYS: &[(&str, &str, ValueCheck)] = &[
    ("population_size", "an integer in 4..=10000", |v| int_in(v, 4, 10_000)),
    ("optimization_patience", "an integer in 1..=1000000", |v| int_in(v, 1, 1_000_000)),
    ("n_params", "an integer in 1..=256", |v| int_in(v, 1, 256)),
    ("early_patience", "an integer in 1..=10000", |v| int_in(v, 1, 10_000)),
    ("bound", "a number > 0", |v| num(v, |x| x > 0.0)),
    ("noise", "a number in [0, 1]", |v| num(v, |x| (0.0..=1.0).contains(&x))),
    ("baseline", "a finite number", |v| num(v, |_| true)),
    ("tolerance", "a number > 0", |v| num(v, |x| x > 0.0)),
    ("relative_tolerance", "a number in [0, 1]", |v| num(v, |x| (0.0..=1.0).contains(&x))),
    ("relative_acceptance", "a number in [0, 1]", |v| num(v, |x| (0.0..=1.0).contains(&x))),
    ("reproducibility", "a number in [0, 1e9] or false", |v| {
        v.as_bool() == Some(false) || num(v, |x| (0.0..=1e9).contains(&x))
    }),
];

fn int_in(v: &Json, lo: i64, hi: i64) -> bool {
    v.as_i64().is_some_and(|x| (lo..=hi).contains(&x))
}

fn num(v: &Json, ok: impl Fn(f64) -> bool) -> bool {
    v.as_f64().is_some_and(|x| x.is_finite() && ok(x))
}

/// An unknown key, with the closest known one when there is a likely typo.
fn unknown_key(path: &str, name: &str, known: &[&str]) -> ConfigError {
    if name.is_empty() {
        // (Found by fuzzing: the refusal named the key ``.)
        return bad(format!("{path}\"\""), "an empty key name");
    }
    let distance = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut prev = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let cur = row[j];
                row[j] = (row[j] + 1).min(row[j - 1] + 1).min(prev + usize::from(a[i - 1] != b[j - 1]));
                prev = cur;
            }
        }
        row[b.len()]
    };
    let near = known.iter().map(|k| (distance(name, k), *k)).min().filter(|(d, k)| *d <= 2.max(k.len() / 4));
    let hint = match near {
        Some((_, k)) => format!("unknown key; did you mean `{k}`?"),
        None => format!("unknown key; the keys here are {}", known.join(", ")),
    };
    bad(path, hint)
}

/// Strict types for the `optimization_config` keys DOIN reads. With a domain or optimizer
/// plugin every other key goes to the plugin; without one an unknown key is refused.
fn check_optimization_config(d: &DomainConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let plugin = d.domain_plugin.is_some()
        || d.optimization_plugin.as_deref().is_some_and(|p| p.starts_with("plugin:"));
    for (k, v) in &d.optimization_config {
        let path = key(&format!("optimization_config.{k}"));
        match OPTIMIZATION_KEYS.iter().find(|(name, _, _)| name == k) {
            Some((_, what, check)) if !check(v) => return Err(bad(path, format!("{v} must be {what}"))),
            Some(_) => {}
            None if plugin => {}
            None => {
                let names: Vec<&str> = OPTIMIZATION_KEYS.iter().map(|(n, _, _)| *n).collect();
                return Err(unknown_key(&path, k, &names));
            }
        }
    }
    Ok(())
}

/// The first key whose value alone fails to deserialize (serde's messages do not name it).
pub(super) fn failing_key(value: &Json) -> String {
    let Some(obj) = value.as_object() else { return "(file)".into() };
    for (k, v) in obj {
        let alone = Json::Object([(k.clone(), v.clone())].into_iter().collect());
        if serde_json::from_value::<NodeConfig>(alone).is_ok() {
            continue;
        }
        if k == "domains"
            && let Some(items) = v.as_array()
        {
            for (i, d) in items.iter().enumerate() {
                if serde_json::from_value::<DomainConfig>(d.clone()).is_err() {
                    let inner = d.as_object().and_then(|o| {
                        o.iter().find(|(dk, dv)| {
                            let one = Json::Object([((*dk).clone(), (*dv).clone())].into_iter().collect());
                            serde_json::from_value::<DomainConfig>(one).is_err()
                        })
                    });
                    return match inner {
                        Some((dk, _)) => format!("domains[{i}].{dk}"),
                        None => format!("domains[{i}]"),
                    };
                }
            }
        }
        return k.clone();
    }
    "(file)".into()
}
