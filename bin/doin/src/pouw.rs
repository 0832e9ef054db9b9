//! `doin pouw`: the PoUW seed's operator surface (`stake_and_register` → ticket, `get_status`,
//! `get_health_metrics`, `get_economic_status`) over a node's `/pouw/*` endpoints. The seed's
//! roles (MINER, SUPERVISOR, VERIFIER, EVALUATOR, PEER) map onto DOIN's
//! ([`doin_primitives::tx::POUW_ROLES`]).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Subcommand;
use doin_primitives::{BoundedString, BoundedVec, DomainId, Roles, TxKind, tx::Capabilities};
use serde_json::Value;

use crate::wallet::{NodeUrl, get, http, key_of, parse_amount, sign_tx};

#[derive(Debug, Subcommand)]
pub(crate) enum Pouw {
    /// Stakes coins and registers the roles (`stake_and_register`): prints the ticket once a
    /// block holds it.
    StakeAndRegister {
        #[command(flatten)]
        node: NodeUrl,
        /// The staker's key file (a node stakes with its own: `DATA_DIR/node.key` or
        /// `identity`).
        #[arg(long)]
        key: PathBuf,
        /// Stake in DOIN (added to any stake the account has).
        #[arg(long)]
        amount: String,
        /// Roles: the seed's MINER, SUPERVISOR, VERIFIER, EVALUATOR, or DOIN's optimizer,
        /// evaluator, supervisor, inference, contributor, relay (comma-separated or repeated).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Domains served (comma-separated; default: every domain registered on chain).
        #[arg(long, value_delimiter = ',')]
        domains: Vec<String>,
        /// Preferences as a JSON object: what the marketplace matches on — `cpu_cores`,
        /// `ram_mb`, `gpus`, `gpu_model`, `gpu_mem_mb`, `bandwidth_mbps`, `region`, `price`
        /// (DOIN), or the seed's `gpu_available`, `gpu_memory` ("32GB"), `bandwidth` ("10Gbps").
        #[arg(long)]
        preferences: Option<String>,
        /// Seconds to wait for a block to hold the ticket (0: print it pending).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// `get_status`: role, running / mining / training, height, mempool, peers, alerts, work.
    Status {
        #[command(flatten)]
        node: NodeUrl,
    },
    /// `get_health_metrics`: CPU and memory use, success rate, health and its reasons.
    HealthMetrics {
        #[command(flatten)]
        node: NodeUrl,
    },
    /// `get_economic_status`: balance, stake and ticket, unbonding, reputation, rewards.
    EconomicStatus {
        #[command(flatten)]
        node: NodeUrl,
        /// Another account (hex) than the node's.
        #[arg(long)]
        address: Option<String>,
    },
    /// A staking ticket: active, superseded or ended.
    Ticket {
        #[command(flatten)]
        node: NodeUrl,
        /// The ticket id (the stake transaction's id).
        ticket_id: String,
    },
}

pub(crate) fn run(cmd: Pouw) -> anyhow::Result<()> {
    match cmd {
        Pouw::Status { node } => print(&get(&node.node, "/pouw/status")?),
        Pouw::HealthMetrics { node } => print(&get(&node.node, "/pouw/health_metrics")?),
        Pouw::EconomicStatus { node, address } => {
            let path = match address {
                Some(a) => format!("/pouw/economic_status?address={}", crate::wallet::address(&a)?),
                None => "/pouw/economic_status".to_owned(),
            };
            print(&get(&node.node, &path)?)
        }
        Pouw::Ticket { node, ticket_id } => print(&get(&node.node, &format!("/pouw/ticket/{ticket_id}"))?),
        Pouw::StakeAndRegister { node, key, amount, roles, domains, preferences, wait } => {
            let roles = parse_roles(&roles)?;
            let domains = if domains.is_empty() {
                let listed = get(&node.node, "/domains")?;
                listed["domains"]
                    .as_array()
                    .map(|d| d.iter().filter_map(|d| d["domain_id"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            } else {
                domains
            };
            let ids: Vec<DomainId> = domains
                .iter()
                .map(|d| DomainId::new(d.as_str()).map_err(|e| anyhow::anyhow!("domain {d:?}: {e}")))
                .collect::<Result<_, _>>()?;
            let kind = TxKind::Stake {
                amount: parse_amount(&amount)?,
                roles,
                domains: BoundedVec::try_from_vec(ids).map_err(|e| anyhow::anyhow!("--domains: {e}"))?,
                preferences: match preferences {
                    Some(text) => parse_preferences(&text)?,
                    None => Capabilities::default(),
                },
            };
            let tx = sign_tx(&node.node, &key_of(&key)?, kind, 0)?;
            let (code, ticket) =
                http(&node.node, "POST", "/pouw/stake_and_register", Some(&serde_json::to_string(&tx)?))?;
            if code != 202 {
                bail!(
                    "the node refused the stake (HTTP {code}): {}",
                    ticket["detail"].as_str().unwrap_or(&ticket.to_string())
                );
            }
            let id = ticket["ticket_id"].as_str().context("the node's answer names no ticket")?.to_owned();
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                if wait == 0 {
                    return print(&ticket);
                }
                let (code, v) = http(&node.node, "GET", &format!("/pouw/ticket/{id}"), None)?;
                if code == 200 {
                    return print(&v);
                }
                if Instant::now() >= deadline {
                    bail!("ticket {id} is still pending after {wait} s (see `doin pouw ticket {id}`)");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{v}");
    Ok(())
}

/// Roles by the seed's or DOIN's names; `PEER` alone is refused (it needs no stake).
fn parse_roles(names: &[String]) -> anyhow::Result<Roles> {
    let mut roles = Roles(0);
    for name in names.iter().filter(|n| !n.trim().is_empty()) {
        let role = Roles::parse(name).with_context(|| {
            format!(
                "role {name:?}: expected MINER, SUPERVISOR, VERIFIER, EVALUATOR, PEER or optimizer, evaluator, \
                 supervisor, inference, contributor, relay"
            )
        })?;
        roles = roles.with(role);
    }
    if roles.0 == 0 {
        bail!(
            "a PEER needs no stake: every running `doin node` follows the chain and relays gossip; stake \
             for MINER, SUPERVISOR, VERIFIER or EVALUATOR"
        );
    }
    Ok(roles)
}

/// `"32GB"`, `"512MB"`, `"1TB"` or a number of MiB.
fn mib(v: &Value, key: &str) -> anyhow::Result<u64> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let text =
        v.as_str().with_context(|| format!("preferences.{key}: a number of MiB or a size like \"32GB\""))?;
    let t = text.trim().to_ascii_uppercase();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let n: f64 = num.trim().parse().with_context(|| format!("preferences.{key}: {text:?}"))?;
    let factor = match unit.trim() {
        "" | "M" | "MB" | "MIB" => 1.0,
        "G" | "GB" | "GIB" => 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0,
        other => bail!("preferences.{key}: unit {other:?} (MB, GB or TB)"),
    };
    Ok((n * factor).round() as u64)
}

/// `"10Gbps"`, `"100Mbps"` or a number of Mbit/s.
fn mbps(v: &Value, key: &str) -> anyhow::Result<u32> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).with_context(|| format!("preferences.{key}: too large"));
    }
    let text = v.as_str().with_context(|| format!("preferences.{key}: a number of Mbit/s or \"10Gbps\""))?;
    let t = text.trim().to_ascii_lowercase();
    let (num, factor) = if let Some(n) = t.strip_suffix("gbps") {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix("mbps") {
        (n, 1.0)
    } else {
        (t.as_str(), 1.0)
    };
    let n: f64 = num.trim().parse().with_context(|| format!("preferences.{key}: {text:?}"))?;
    Ok((n * factor).round().min(f64::from(u32::MAX)) as u32)
}

/// Preferences (the marketplace's capabilities) from a JSON object, with the seed's names too;
/// anything else is refused by name.
fn parse_preferences(text: &str) -> anyhow::Result<Capabilities> {
    let v: Value = serde_json::from_str(text).context("--preferences: not JSON")?;
    let obj = v.as_object().context("--preferences: a JSON object")?;
    let mut c = Capabilities::default();
    let int = |v: &Value, key: &str| v.as_u64().with_context(|| format!("preferences.{key}: a whole number"));
    let text_of = |v: &Value, key: &str| {
        v.as_str().map(str::to_owned).with_context(|| format!("preferences.{key}: a string"))
    };
    for (key, value) in obj {
        match key.as_str() {
            "cpu_cores" => c.cpu_cores = u32::try_from(int(value, key)?).context("preferences.cpu_cores")?,
            "ram_mb" | "ram" | "memory" => c.ram_mb = mib(value, key)?,
            "gpus" => c.gpus = u32::try_from(int(value, key)?).context("preferences.gpus")?,
            "gpu_available" => {
                let yes = value.as_bool().context("preferences.gpu_available: true or false")?;
                c.gpus = if yes { c.gpus.max(1) } else { 0 };
            }
            "gpu_model" => {
                c.gpu_model = BoundedString::new(text_of(value, key)?)
                    .map_err(|e| anyhow::anyhow!("preferences.gpu_model: {e:?}"))?;
            }
            "gpu_mem_mb" | "gpu_memory" => c.gpu_mem_mb = mib(value, key)?,
            "bandwidth_mbps" | "bandwidth" => c.bandwidth_mbps = mbps(value, key)?,
            "region" => {
                c.region = BoundedString::new(text_of(value, key)?)
                    .map_err(|e| anyhow::anyhow!("preferences.region: {e:?}"))?;
            }
            "price" => {
                let p = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => bail!("preferences.price: DOIN as a number or string"),
                };
                c.price = parse_amount(&p)?;
            }
            other => bail!(
                "preferences.{other}: not a capability DOIN records (the marketplace matches on cpu_cores, \
                 ram_mb, gpus, gpu_model, gpu_mem_mb, bandwidth_mbps, region, price; the seed's gpu_available, \
                 gpu_memory and bandwidth are read too)"
            ),
        }
    }
    if c.gpus == 0 && c.gpu_mem_mb > 0 {
        c.gpus = 1;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_preferences_become_capabilities_and_others_are_refused() {
        let c = parse_preferences(
            r#"{"gpu_memory": "32GB", "cpu_cores": 64, "bandwidth": "10Gbps", "gpu_available": true, "region": "eu"}"#,
        )
        .unwrap();
        assert_eq!((c.gpu_mem_mb, c.cpu_cores, c.bandwidth_mbps, c.gpus), (32 * 1024, 64, 10_000, 1));
        assert_eq!(c.region.as_str(), "eu");
        let err = parse_preferences(r#"{"uptime_guarantee": 0.99}"#).unwrap_err().to_string();
        assert!(err.contains("preferences.uptime_guarantee"), "{err}");
        assert!(parse_preferences(r#"{"gpu_memory": "32 furlongs"}"#).is_err());
        assert!(parse_preferences("[1]").is_err());
    }

    #[test]
    fn roles_by_either_name_and_a_stake_for_peer_alone_is_refused() {
        let r = parse_roles(&["MINER".into(), "verifier".into()]).unwrap();
        assert_eq!(r, Roles::OPTIMIZER.with(Roles::EVALUATOR));
        assert!(parse_roles(&["PEER".into()]).unwrap_err().to_string().contains("needs no stake"));
        assert!(parse_roles(&["oracle".into()]).unwrap_err().to_string().contains("role \"oracle\""));
    }
}
