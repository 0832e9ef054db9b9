//! Genesis specs the node builds itself: a single-node development chain, and the devnet's
//! chain that funds and stakes every node as optimizer and evaluator of the devnet's domains.

use std::sync::Arc;

use doin_consensus::{Allocation, GenesisDomain, GenesisSpec, GenesisStake, ProtocolParams};
use doin_optimize::domain::Domain;
use doin_primitives::{Address, Amount, DomainId, FIXED_ONE, Roles};

use crate::{
    config::{DomainConfig, NodeConfig},
    domains,
};

/// Chain parameters from the config's development keys.
pub fn params(config: &NodeConfig) -> ProtocolParams {
    let ms = |s: f64| (s * 1000.0).round().max(1.0) as u64;
    let max_block_interval_ms = ms(config.max_block_interval);
    ProtocolParams {
        target_block_time_ms: ms(config.target_block_time),
        initial_threshold: (config.initial_threshold * FIXED_ONE as f64).round().max(1.0) as u128,
        max_block_interval_ms,
        heartbeat_slot_ms: (max_block_interval_ms / 2).max(500),
        seal_slot_ms: ms(config.seal_slot).min(3_600_000),
        quorum_timeout_ms: ms(config.quorum_timeout),
        fee_market_enabled: config.fee_market_enabled,
        ..ProtocolParams::default()
    }
}

fn genesis_domains(
    config: &NodeConfig,
    domains: &[(Arc<dyn Domain>, DomainConfig)],
) -> Result<Vec<GenesisDomain>, String> {
    domains
        .iter()
        .map(|(d, c)| {
            Ok(GenesisDomain { spec: domains::spec_of(d.as_ref(), c, config)?, bounty: Amount::ZERO })
        })
        .collect()
}

/// A chain of one node that funds and stakes itself for its domains. With verification on,
/// such a node produces heartbeat blocks but cannot accept optimae: it is never in its own
/// quorum (DESIGN §4.1); `status` says so. A trusted domain (`synthetic_data_validation:
/// false`) needs no quorum, so its champions land in heartbeat blocks.
pub fn single_node(
    config: &NodeConfig,
    me: &Address,
    domains: &[(Arc<dyn Domain>, DomainConfig)],
) -> Result<GenesisSpec, String> {
    devnet(config, &[*me], 1, domains, 0)
}

/// Devnet nodes staked as supervisors of the federated jobs: node 0 runs them, node 1 follows
/// each recorded round (fetching its model) and takes a job over when node 0 stops.
pub const SUPERVISORS: usize = 2;

/// A chain that funds and stakes `nodes`: the first `optimizers` as optimizers and evaluators,
/// the rest as evaluators only; `timestamp_ms = 0` means now.
pub fn devnet(
    config: &NodeConfig,
    nodes: &[Address],
    optimizers: usize,
    domains: &[(Arc<dyn Domain>, DomainConfig)],
    timestamp_ms: u64,
) -> Result<GenesisSpec, String> {
    let ids: Vec<DomainId> = domains.iter().map(|(d, _)| DomainId::new(d.id()).unwrap_or_default()).collect();
    let ts = if timestamp_ms == 0 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    } else {
        timestamp_ms
    };
    let params = params(config);
    // Federated jobs: registered with their escrow; the first node supervises them, the second
    // (if any) stands by to take a stalled job over.
    let mut registered = genesis_domains(config, domains)?;
    let mut jobs = Vec::new();
    for job in &config.federated_jobs {
        let spec = crate::federated::spec_of(job, params.target_block_time_ms as f64 / 1000.0)
            .map_err(|e| format!("federated_jobs {:?}: {e}", job.job_id))?;
        jobs.push(spec.id.clone());
        registered.push(GenesisDomain { spec, bounty: crate::federated::bounty_of(job) });
    }
    Ok(GenesisSpec {
        chain_id: 1337,
        timestamp_ms: ts,
        params,
        allocations: nodes.iter().map(|a| Allocation { address: *a, balance: Amount::doin(1_000) }).collect(),
        stakes: nodes
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let roles = if i < optimizers {
                    Roles(Roles::OPTIMIZER.0 | Roles::EVALUATOR.0)
                } else {
                    Roles::EVALUATOR
                };
                let mut domains = ids.clone();
                let supervises = i < SUPERVISORS && !jobs.is_empty();
                if supervises {
                    domains.extend(jobs.iter().cloned());
                }
                GenesisStake {
                    address: *a,
                    amount: Amount::doin(100),
                    roles: if supervises { roles.with(Roles::SUPERVISOR) } else { roles },
                    domains,
                }
            })
            .collect(),
        domains: registered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluator-only devnet nodes are staked as evaluators only, so optimizers count right.
    #[test]
    fn devnet_stakes_the_first_nodes_as_optimizers_and_the_rest_as_evaluators() {
        let nodes: Vec<Address> = (0..4u8).map(|i| Address([i; 32])).collect();
        let g = devnet(&NodeConfig::default(), &nodes, 1, &[], 1).expect("genesis");
        let roles: Vec<Roles> = g.stakes.iter().map(|s| s.roles).collect();
        assert!(roles[0].contains(Roles::OPTIMIZER) && roles[0].contains(Roles::EVALUATOR));
        assert!(roles[1..].iter().all(|r| *r == Roles::EVALUATOR), "{roles:?}");
    }
}
