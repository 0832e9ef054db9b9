use super::*;

#[test]
fn the_python_example_config_loads_with_warnings_for_what_doin_ignores() {
    let text = r#"{
      "host": "0.0.0.0", "port": 8470, "data_dir": "./doin-data-predictor",
      "bootstrap_peers": [], "network_protocol": "gossipsub", "discovery_enabled": true,
      "initial_threshold": 1e-6, "quorum_min_evaluators": 1, "storage_backend": "sqlite",
      "fee_market_enabled": false,
      "domains": [{
        "domain_id": "quadratic", "optimize": true, "evaluate": true,
        "optimization_plugin": "ga", "has_synthetic_data": true,
        "synthetic_data_validation": false, "target_performance": 999.0,
        "optimization_config": {"population_size": 10, "early_patience": 15},
        "resource_limits": {"max_training_seconds": 3600, "max_memory_mb": 14000, "max_epochs": 2000}
      }],
      "experiment_stats_file": "./predictor_stats.csv"
    }"#;
    let loaded = NodeConfig::from_json(text).unwrap();
    assert_eq!(loaded.config.port, 8470);
    assert_eq!(loaded.config.p2p_port(), 8471);
    assert_eq!(loaded.config.domains[0].target_performance, Some(999.0));
    let w = loaded.warnings.join("\n");
    for expected in ["TRUSTED MODE", "storage_backend", "fee_market_enabled"] {
        assert!(w.contains(expected), "{expected} missing from {w}");
    }
}

/// Every field of a domain entry is among the keys a typo's hint lists (a key missing there
/// would be accepted but never suggested).
#[test]
fn the_domain_keys_hint_lists_every_field() {
    let entry = serde_json::to_value(DomainConfig::default()).unwrap();
    for k in entry.as_object().unwrap().keys() {
        assert!(super::validate::DOMAIN_KEYS.contains(&k.as_str()), "{k} is not in DOMAIN_KEYS");
    }
    let err =
        NodeConfig::from_json(r#"{"domains": [{"domain_id": "a", "share_trial": false}]}"#).unwrap_err();
    assert!(err.to_string().contains("did you mean `share_trials`"), "{err}");
}

/// Unknown keys, wrong types and the Python keys DOIN cannot honour stop the load, naming
/// the key; a likely typo gets its correction.
#[test]
fn every_key_is_typed_strictly() {
    let cases = [
        (r#"{"favourite_colour": "blue"}"#, "favourite_colour", "the keys here are"),
        (r#"{"domain": []}"#, "domain", "did you mean `domains`"),
        (r#"{"domains": [{"domain_id": "a", "mystery": 1}]}"#, "domains[0].mystery", "unknown key"),
        (
            r#"{"domains": [{"domain_id": "a", "resource_limits": {"max_gpus": 1}}]}"#,
            "domains[0].resource_limits.max_gpus",
            "max_training_seconds",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "optimization_config": {"population_size": 3.5}}]}"#,
            "domains[0].optimization_config.population_size",
            "an integer in 4..=10000",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "optimization_config": {"noise": 2}}]}"#,
            "domains[0].optimization_config.noise",
            "[0, 1]",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "optimization_config": {"epochs": 5}}]}"#,
            "domains[0].optimization_config.epochs",
            "unknown key",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "optimization_plugin": "predictor"}]}"#,
            "domains[0].optimization_plugin",
            "domain plugin",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "evaluate": false, "optimize": false}]}"#,
            "domains[0].optimize",
            "nothing",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "warm_start_from": ["a"]}]}"#,
            "domains[0].warm_start_from",
            "the domain itself",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "warm_start_from": ["b", "b"]}]}"#,
            "domains[0].warm_start_from",
            "twice",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "warm_start_from": [""]}]}"#,
            "domains[0].warm_start_from",
            "empty",
        ),
    ];
    for (text, key, hint) in cases {
        let e = NodeConfig::from_json(text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(e.problem.contains(hint), "{text}: {e}");
    }
    // With a domain plugin, other optimization_config keys are the plugin's.
    let plugin = r#"{"domains": [{"domain_id": "p", "domain_plugin": "plugin:python3 p.py",
                      "optimization_config": {"epochs": 5, "population_size": 8}}]}"#;
    NodeConfig::from_json(plugin).unwrap();
}

/// `seal_slot` sets the development chain's seal slots; the replaced `reveal_delay` is
/// refused with the reason.
#[test]
fn seal_slot_reaches_the_chain_and_reveal_delay_is_refused() {
    let loaded = NodeConfig::from_json(r#"{"seal_slot": 0.25}"#).unwrap();
    assert_eq!(crate::genesis::params(&loaded.config).seal_slot_ms, 250);
    // The other development-chain keys, each to its chain parameter.
    let loaded = NodeConfig::from_json(
        r#"{"initial_threshold": 0.5, "target_block_time": 3, "max_block_interval": 4,
            "quorum_timeout": 9.5, "fee_market_enabled": false}"#,
    )
    .unwrap();
    let p = crate::genesis::params(&loaded.config);
    assert_eq!(p.initial_threshold, doin_primitives::FIXED_ONE as u128 / 2);
    assert_eq!((p.target_block_time_ms, p.max_block_interval_ms, p.heartbeat_slot_ms), (3_000, 4_000, 2_000));
    assert_eq!(p.quorum_timeout_ms, 9_500);
    assert!(!p.fee_market_enabled);
    assert!(loaded.warnings.join("\n").contains("fixes this development chain's base fee"));
    let with_genesis =
        NodeConfig::from_json(r#"{"genesis": "g.json", "fee_market_enabled": false}"#).unwrap();
    assert!(with_genesis.warnings.join("\n").contains("ignored with a genesis file"));
    let e = NodeConfig::from_json(r#"{"reveal_delay": 0.3}"#).unwrap_err();
    assert!(e.problem.contains("seal_slot"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (r#"{"port": 0}"#, "port"),
        (r#"{"": 8}"#, "\"\""),
        (r#"{"domains": [{"domain_id": "a", "": 1}]}"#, "domains[0].\"\""),
        (r#"{"port": "x"}"#, "port"),
        (r#"{"domains": [{"domain_id": "a", "optimize": "yes"}]}"#, "domains[0].optimize"),
        (r#"{"host": "not an ip"}"#, "host"),
        (r#"{"initial_threshold": -1}"#, "initial_threshold"),
        (r#"{"quorum_min_evaluators": 0}"#, "quorum_min_evaluators"),
        (r#"{"network_protocol": "flooding"}"#, "network_protocol"),
        (r#"{"domains": [{"optimize": true}]}"#, "domains[0].domain_id"),
        (r#"{"domains": [{"domain_id": "a"}, {"domain_id": "a"}]}"#, "domains[1].domain_id"),
        (
            r#"{"domains": [{"domain_id": "a", "resource_limits": {"max_epochs": -3}}]}"#,
            "domains[0].resource_limits.max_epochs",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "param_bounds": {"lr": [1, 0]}}]}"#,
            "domains[0].param_bounds.lr",
        ),
        (r#"{"domains": [{"domain_id": "a", "param_bounds": {"lr": [1]}}]}"#, "domains[0].param_bounds.lr"),
        (
            r#"{"domains": [{"domain_id": "a", "param_bounds": {"lr": "wide"}}]}"#,
            "domains[0].param_bounds.lr",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "optimization_plugin": "magic"}]}"#,
            "domains[0].optimization_plugin",
        ),
        ("[1, 2]", "(file)"),
        ("{", "(file)"),
        (r#"{"seal_slot": 0}"#, "seal_slot"),
        (r#"{"keep_bodies": 8}"#, "keep_bodies"),
        (r#"{"listen_addresses": ["10.0.0.1:4001"]}"#, "listen_addresses[0]"),
        (r#"{"external_addresses": ["/ip4/203.0.113.5"]}"#, "external_addresses[0]"),
        (
            r#"{"external_addresses": ["/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"]}"#,
            "external_addresses[0]",
        ),
        (r#"{"quic": "on"}"#, "quic"),
        (r#"{"archive": "yes"}"#, "archive"),
        (r#"{"reveal_delay": 2.0}"#, "reveal_delay"),
        (r#"{"api_users": [{"user": "a", "key": "short"}]}"#, "api_users[0].key"),
        (r#"{"federated_jobs": [{"job_id": ".."}]}"#, "federated_jobs[0].job_id"),
        (
            r#"{"federated_jobs": [{"job_id": "fl", "serve_inference": false, "inference_price": 0.5}]}"#,
            "federated_jobs[0].inference_price",
        ),
        (
            r#"{"federated_jobs": [{"job_id": "fl", "inference_price": -1}]}"#,
            "federated_jobs[0].inference_price",
        ),
        (
            r#"{"domains": [{"domain_id": "a", "optimize": false, "optimize_on_hire": true}]}"#,
            "domains[0].optimize_on_hire",
        ),
        (r#"{"domains": [{"domain_id": "a", "hire_price": 0.1}]}"#, "domains[0].hire_price"),
        (
            r#"{"domains": [{"domain_id": "a", "optimize_on_hire": true, "hire_price": -1}]}"#,
            "domains[0].hire_price",
        ),
        (r#"{"api_users": [{"user": "", "key": "0123456789abcdef"}]}"#, "api_users[0].user"),
        (
            r#"{"api_users": [{"user": "a", "key": "0123456789abcdef"}, {"user": "b", "key": "0123456789abcdef"}]}"#,
            "api_users[1].key",
        ),
        (
            r#"{"api_key": "0123456789abcdef", "api_users": [{"user": "a", "key": "0123456789abcdef"}]}"#,
            "api_users[0].key",
        ),
        (
            r#"{"api_users": [{"user": "a", "key": "0123456789abcdef", "rate_per_s": 0}]}"#,
            "api_users[0].rate_per_s",
        ),
    ];
    for (text, key) in cases {
        let e = NodeConfig::from_json(text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(!e.problem.is_empty());
    }
}
