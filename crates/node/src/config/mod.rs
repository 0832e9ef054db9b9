//! The node's configuration: the Python system's JSON format (`host`, `port`, `data_dir`,
//! `bootstrap_peers`, `domains[]`, `quorum_*`, …) plus DOIN's own keys. Every key is typed
//! strictly: an unknown key, a value of the wrong type or out of range, and a key the Python
//! system had that DOIN cannot honour stop the node with a message naming the key and what is
//! allowed (a typo must not leave a node running without its domains).

use std::{collections::BTreeMap, path::PathBuf};

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

/// A price the config gives in DOIN (validated finite and ≥ 0), in base units, rounded.
pub fn price_units(doin: f64) -> doin_primitives::Amount {
    doin_primitives::Amount((doin * 1e9).round() as u128)
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
    /// Answer `POST /inference` for this domain from its verified champion's model (built-in
    /// domains with a model; the model is fetched from its providers and kept under
    /// `models/`). Off: requests become tasks for external workers (`/tasks/*`).
    pub serve_inference: bool,
    /// DOIN charged per served inference request (each request carries a payment-channel update
    /// adding at least this to the channel's total; `0`: free).
    pub inference_price: f64,
    /// Optimize this domain only for those who hire it: the optimizer runs the evaluations a
    /// client bought through the marketplace (`POST /api/market/hire`, `doin task submit --kind
    /// optimize`) and waits otherwise. Needs `optimize`.
    pub optimize_on_hire: bool,
    /// DOIN per evaluation a hire pays (`optimize_on_hire`; `0`: hires are free).
    pub hire_price: f64,
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
            serve_inference: true,
            inference_price: 0.0,
            optimize_on_hire: false,
            hire_price: 0.0,
            unknown: BTreeMap::new(),
        }
    }
}

/// A user of the HTTP API (`api_users[]`): its own `x-api-key`, rate limit and rights.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiUserConfig {
    /// Name (a job's owner).
    pub user: String,
    /// The key it sends as `x-api-key` (16 characters at least).
    pub key: String,
    /// Sustained requests per second (default 10).
    #[serde(default = "ApiUserConfig::default_rate")]
    pub rate_per_s: f64,
    /// Burst (default 20).
    #[serde(default = "ApiUserConfig::default_burst")]
    pub burst: f64,
    /// May create federated jobs (`POST /api/job`).
    #[serde(default)]
    pub create_jobs: bool,
}

impl ApiUserConfig {
    fn default_rate() -> f64 {
        10.0
    }
    fn default_burst() -> f64 {
        20.0
    }
}

/// A federated training job this node supervises (`federated_jobs[]`): registered as a
/// federated domain on the development chain this node creates (with a genesis file, the
/// domain and this node's supervisor stake must be in it).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederatedJobConfig {
    /// The job's domain id.
    pub job_id: String,
    /// The model: `mlp_digits` (the built-in digits MLP).
    pub model: String,
    /// Hidden layer sizes.
    pub hidden: Vec<usize>,
    /// `fed_avg`, `trimmed_mean`, `coordinate_median`, `krum`, `multi_krum` or `loss_scored`.
    pub aggregation: doin_primitives::domain::Aggregation,
    /// Updates a round needs before its adaptive deadline may close it (k of n).
    pub min_updates: usize,
    /// Updates that close a round at once.
    pub max_updates: usize,
    /// The adaptive deadline's MAD multiplier.
    pub deadline_k: f64,
    /// Shortest wait after a round opens, seconds.
    pub min_wait: f64,
    /// Longest wait (stragglers miss the round), seconds; also the cap on declared compute.
    pub max_wait: f64,
    /// DOIN paid to a round's contributors (from the escrow).
    pub pool_per_round: f64,
    /// DOIN escrowed for the job's rounds at registration.
    pub bounty: f64,
    /// Contributors' local SGD learning rate.
    pub lr: f64,
    /// Contributors' local SGD batch.
    pub batch: usize,
    /// Seeds the initial model and the test split.
    pub seed: u64,
    /// Whether this node answers `POST /inference` for the job's verified model (the newest
    /// round its audit quorum settled; `docs/design.md` §22g).
    pub serve_inference: bool,
    /// DOIN per inference request (0: free), paid over a payment channel.
    pub inference_price: f64,
}

impl Default for FederatedJobConfig {
    fn default() -> Self {
        Self {
            job_id: String::new(),
            model: "mlp_digits".into(),
            hidden: vec![64],
            aggregation: doin_primitives::domain::Aggregation::LossScored,
            min_updates: 8,
            max_updates: 64,
            deadline_k: 3.0,
            min_wait: 1.0,
            max_wait: 60.0,
            pool_per_round: 1.0,
            bounty: 100.0,
            lr: 0.2,
            batch: 16,
            seed: 1,
            serve_inference: true,
            inference_price: 0.0,
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
    /// Also listen on QUIC (`/ip4/host/udp/p2p_port/quic-v1`) beside TCP: one UDP socket for
    /// every connection, so hole punching through NATs works far more often than with TCP.
    pub quic: bool,
    /// Addresses at which others reach this node although it does not listen on them (a
    /// public IP forwarded to `host`, a port mapping): announced to peers as its own.
    pub external_addresses: Vec<String>,
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
    /// Federated training jobs this node supervises.
    pub federated_jobs: Vec<FederatedJobConfig>,
    /// Users of the HTTP API with their own keys and limits.
    pub api_users: Vec<ApiUserConfig>,
    /// Threads this node gives a marketplace's capability challenge (what it offers; 0: it
    /// answers none and cannot be matched). Default: the machine's cores.
    pub market_threads: usize,
    /// Memory (MiB) this node's market proves of each provider it admits (it recomputes the
    /// table itself). Default 64.
    pub market_check_mem_mb: u32,
    /// Keep every block body (an archive node); otherwise bodies more than `keep_bodies`
    /// blocks behind finality are dropped (headers, the state and receipts stay).
    pub archive: bool,
    /// Bodies kept behind the finalized checkpoint (default 10 000; at least 16).
    pub keep_bodies: u64,
    /// A checkpoint this node trusts, `HEIGHT:HASH`: with no chain in `data_dir` yet, the node
    /// joins from its peers' snapshot checked against it ([`crate::join`]).
    pub checkpoint: Option<String>,
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
            quic: false,
            external_addresses: Vec::new(),
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
            federated_jobs: Vec::new(),
            api_users: Vec::new(),
            market_threads: std::thread::available_parallelism().map_or(1, usize::from),
            market_check_mem_mb: 64,
            archive: false,
            keep_bodies: 10_000,
            checkpoint: None,
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

    /// The P2P port.
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port.unwrap_or(self.port.saturating_add(1))
    }

    /// The key file.
    pub fn identity_path(&self) -> PathBuf {
        self.identity.clone().unwrap_or_else(|| self.data_dir.join("node.key"))
    }
}

mod validate;
pub use validate::check_job_request;

pub use validate::MAX_WARM_START_FROM;
use validate::failing_key;

#[cfg(test)]
mod tests;
