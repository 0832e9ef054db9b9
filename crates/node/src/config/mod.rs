//! The node's configuration: the Python system's JSON format (`host`, `port`, `data_dir`,
//! `bootstrap_peers`, `domains[]`, `quorum_*`, …) plus DOIN's own keys. Every key is typed
//! strictly: an unknown key, a value of the wrong type or out of range, and a key the Python
//! system had that DOIN cannot honour stop the node with a message naming the key and what is
//! allowed (a typo must not leave a node running without its domains).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    /// The key (dotted path, e.g. `domains[0].target_performance`).
    pub key: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

fn bad(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.into() }
}

/// One domain this node works on.
/// `quorum_tolerance` for a domain with no noise profile of its own (plugins), absolute.
pub const DEFAULT_QUORUM_TOLERANCE: f64 = 0.1;

#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct DomainConfig {
    /// The domain id (a built-in domain name, or a domain registered on chain).
    pub domain_id: String,
    /// Run the optimizer loop.
    pub optimize: bool,
    /// Take part in evaluator quorums.
    pub evaluate: bool,
    /// The Python system's key: whether the domain generates synthetic evaluation data.
    pub has_synthetic_data: bool,
    /// `false` = the Python system's trusted auto-accept mode (no quorum; private clusters).
    pub synthetic_data_validation: bool,
    /// Optimizer: `ga`, `shade`, `cma-es`, or an external plugin command (`plugin:CMD ARGS`).
    pub optimization_plugin: Option<String>,
    /// A domain plugin command (`plugin:CMD ARGS`) instead of a built-in domain.
    pub domain_plugin: Option<String>,
    /// Accepted for compatibility (synthetic data comes from the domain itself).
    pub synthetic_data_plugin: Option<String>,
    /// Accepted for compatibility (inference is served from the champion).
    pub inference_plugin: Option<String>,
    /// Optimizer settings (`population_size`, `optimization_patience`, `early_patience`, …).
    pub optimization_config: BTreeMap<String, Json>,
    /// Parameter bounds by name (`[low, high]`, inside the parameter's own range): this node's
    /// optimizer searches within them (evaluators, and the chain, keep the domain's space).
    pub param_bounds: BTreeMap<String, Json>,
    /// Stop optimizing once the verified champion reaches this.
    pub target_performance: Option<f64>,
    /// Hand this node's quorum assignments to external evaluators through `/tasks/*` instead of
    /// evaluating in-process (needs `api_key`).
    pub external_evaluation: bool,
    /// `max_training_seconds`, `max_memory_mb`, `max_epochs`.
    pub resource_limits: BTreeMap<String, Json>,
    /// Share this node's evaluated trials with the other nodes optimizing the domain, and learn
    /// from theirs (model-based optimizers; checked against this node's own measurements).
    pub share_trials: bool,
    /// Domains declared similar to this one (the same parameters: an earlier version of it, the
    /// same model on other data): their history in the experiment cube (this node's rounds and
    /// the chain's optimae) seeds this domain's warm start too. Needs `olap_db_path`.
    pub warm_start_from: Vec<String>,
    /// Keys this version does not know (reported, then ignored).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            domain_id: String::new(),
            optimize: true,
            evaluate: true,
            has_synthetic_data: true,
            synthetic_data_validation: true,
            optimization_plugin: None,
            domain_plugin: None,
            synthetic_data_plugin: None,
            inference_plugin: None,
            optimization_config: BTreeMap::new(),
            param_bounds: BTreeMap::new(),
            target_performance: None,
            external_evaluation: false,
            resource_limits: BTreeMap::new(),
            share_trials: true,
            warm_start_from: Vec::new(),
            unknown: BTreeMap::new(),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Bind address.
    pub host: String,
    /// HTTP port (the P2P port is `p2p_port`, default `port + 1`).
    pub port: u16,
    /// P2P port.
    pub p2p_port: Option<u16>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Peers to dial: multiaddrs, or `host:port` (their P2P port).
    pub bootstrap_peers: Vec<String>,
    /// Genesis spec file; absent: a single-node development chain staked to this node.
    pub genesis: Option<PathBuf>,
    /// Node key file; default `<data_dir>/node.key`.
    pub identity: Option<PathBuf>,
    /// Domains.
    pub domains: Vec<DomainConfig>,
    /// Experiment CSV.
    pub experiment_stats_file: Option<PathBuf>,
    /// SQLite OLAP cube.
    pub olap_db_path: Option<PathBuf>,
    /// `gossipsub` (only this is supported; `flooding` is refused with a reason).
    pub network_protocol: String,
    /// LAN discovery (mDNS) — only on a non-loopback `host`.
    pub discovery_enabled: bool,
    /// More P2P listen addresses (multiaddrs) besides `host`:`p2p_port`: a second interface,
    /// or a relay's circuit (`/ip4/R/tcp/P/p2p/RELAY_ID/p2p-circuit`) to be reachable through
    /// a relay from behind a NAT.
    pub listen_addresses: Vec<String>,
    /// Serve as a circuit relay (v2) for peers that cannot be reached directly.
    pub relay_server: bool,
    /// Development-chain parameters (used when this node creates the genesis).
    pub initial_threshold: f64,
    /// Target block time in seconds (development chain).
    pub target_block_time: f64,
    /// Quorum rule (development chain's domains).
    pub quorum_min_evaluators: u16,
    /// Largest first-round quorum.
    pub quorum_max_evaluators: u16,
    /// Escalation fraction.
    pub quorum_fraction: f64,
    /// Vote tolerance (absolute, in the metric's units) for every domain; unset, each built-in
    /// domain uses its own noise profile (`domains::tolerance_profile`) and plugins
    /// [`DEFAULT_QUORUM_TOLERANCE`].
    pub quorum_tolerance: Option<f64>,
    /// EIP-1559 fees (always on in DOIN; `false` is accepted and reported).
    pub fee_market_enabled: bool,
    /// Storage backend: DOIN always uses its embedded store.
    pub storage_backend: Option<String>,
    /// Delete the chain data before starting.
    pub reset_chain: bool,
    /// Log filter (`info`, `debug`, …).
    pub log_level: String,
    /// Heartbeat interval in seconds (development chain).
    pub max_block_interval: f64,
    /// Length of one seal-leader slot in seconds (development chain): commits are included and
    /// sealed by the stake-weighted leader of each slot, so a claim waits about two slots
    /// before its reveal.
    pub seal_slot: f64,
    /// Seconds a first-round quorum may take before it escalates (development chain).
    pub quorum_timeout: f64,
    /// Candidates evaluated in parallel.
    pub workers: usize,
    /// Key for API writes other than signed transactions (task claims), sent as `x-api-key`.
    pub api_key: Option<String>,
    /// HTTP requests per second one client IP may make (sustained).
    pub http_rate_limit: f64,
    /// HTTP requests one client may make at once before the rate applies.
    pub http_burst: f64,
    /// Origins allowed to call the API from a browser (CORS); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Keys this version does not know (reported, then ignored).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Json>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8470,
            p2p_port: None,
            data_dir: PathBuf::from("./doin-data"),
            bootstrap_peers: Vec::new(),
            genesis: None,
            identity: None,
            domains: Vec::new(),
            experiment_stats_file: None,
            olap_db_path: None,
            network_protocol: "gossipsub".into(),
            discovery_enabled: false,
            listen_addresses: Vec::new(),
            relay_server: false,
            initial_threshold: 1e-6,
            target_block_time: 600.0,
            quorum_min_evaluators: 3,
            quorum_max_evaluators: 7,
            quorum_fraction: 2.0 / 3.0,
            quorum_tolerance: None,
            fee_market_enabled: true,
            storage_backend: None,
            reset_chain: false,
            log_level: "info".into(),
            max_block_interval: 1800.0,
            seal_slot: 2.0,
            quorum_timeout: 120.0,
            workers: 1,
            api_key: None,
            http_rate_limit: 50.0,
            http_burst: 100.0,
            cors_origins: Vec::new(),
            unknown: BTreeMap::new(),
        }
    }
}

/// A configuration that loaded, with what was reported about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: NodeConfig,
    /// Keys that were ignored, and other notices.
    pub warnings: Vec<String>,
}

impl NodeConfig {
    /// Parses and validates the JSON text of a config file.
    pub fn from_json(text: &str) -> Result<Loaded, ConfigError> {
        let value: Json =
            serde_json::from_str(text).map_err(|e| bad("(file)", format!("not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(bad("(file)", "must be a JSON object"));
        }
        let config: NodeConfig =
            serde_json::from_value(value.clone()).map_err(|e| bad(failing_key(&value), e.to_string()))?;
        config.validated()
    }

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
            let key = |k: &str| format!("domains[{i}].{k}");
            if d.domain_id.is_empty() {
                return Err(bad(key("domain_id"), "missing"));
            }
            if !seen.insert(d.domain_id.clone()) {
                return Err(bad(key("domain_id"), format!("{:?} is listed twice", d.domain_id)));
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
                    format!(
                        "{p:?}: use \"auto\", \"tpe\", \"shade\", \"cma-es\", \"ga\" or \"plugin:COMMAND ARGS\""
                    ),
                ));
            }
            if d.external_evaluation && self.api_key.as_deref().is_none_or(str::is_empty) {
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
        }
        Ok(Loaded { config: self, warnings })
    }

    /// The P2P port.
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port.unwrap_or(self.port.saturating_add(1))
    }

    /// The key file.
    pub fn identity_path(&self) -> PathBuf {
        self.identity.clone().unwrap_or_else(|| self.data_dir.join("node.key"))
    }
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
];
/// Keys of a `domains[]` entry.
const DOMAIN_KEYS: &[&str] = &[
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
fn failing_key(value: &Json) -> String {
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

#[cfg(test)]
mod tests;
