//! The node's configuration file: any text either loads or is refused naming a key and a
//! problem, never panics.

use doin_node::NodeConfig;

/// Any bytes as a config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match NodeConfig::from_json(text) {
        Ok(loaded) => {
            for d in &loaded.config.domains {
                assert!(!d.domain_id.is_empty(), "a loaded domain has an id");
            }
        }
        Err(e) => {
            assert!(!e.key.is_empty() && !e.problem.is_empty(), "a refusal names a key and a problem: {e}")
        }
    }
}

pub(crate) fn seeds() -> Vec<Vec<u8>> {
    [
        r#"{"host": "127.0.0.1", "port": 8470, "data_dir": "./d", "bootstrap_peers": ["127.0.0.1:8471"],
            "quorum_min_evaluators": 2, "http_rate_limit": 10, "cors_origins": ["http://a"],
            "domains": [{"domain_id": "quadratic", "optimize": true, "evaluate": true,
              "optimization_plugin": "ga", "target_performance": -1.0,
              "optimization_config": {"population_size": 10, "n_params": 4},
              "param_bounds": {"p0": [0, 1]},
              "resource_limits": {"max_training_seconds": 30, "max_memory_mb": 512, "max_epochs": 5}}]}"#,
        r#"{"domains": [{"domain_id": "mlp_digits", "synthetic_data_validation": false}], "fee_market_enabled": false}"#,
        r#"{"genesis": "g.json", "seal_slot": 0.3, "max_block_interval": 5, "quorum_timeout": 8}"#,
        r#"{"domain": []}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
