//! `doin network init`: a network for several machines — one genesis that funds and stakes
//! every machine with the roles it was given, one config per machine (its address, its peers,
//! its domains), and a key per machine unless the machine brought its own address (a key made
//! there with `doin keygen` never has to travel). Every node checks at run time that its peers
//! share its genesis (`/status` `peers_on_other_genesis`; `/health` degraded while one does not).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use doin_node::{DomainConfig, NodeConfig, domains, genesis, identity};
use doin_primitives::{Address, Amount, Roles};
use serde::Deserialize;
use serde_json::json;

/// `doin network …`
#[derive(Debug, Subcommand)]
pub(crate) enum Network {
    /// Writes a genesis and one config per machine (keys, stakes, roles, domains, peers).
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// How many machines (all optimizers and evaluators), or a JSON file describing each:
    /// `{"machines": [{"host", "port", "roles": ["optimizer", "evaluator"], "stake", "balance",
    /// "workers", "address"}]}` (all but `host` optional; `address`: the machine's own key's,
    /// from `doin keygen` there).
    #[arg(long)]
    machines: String,
    /// Where to write `genesis.json`, `node0.json` … and the keys (`node0/node.key` …).
    #[arg(long)]
    dir: PathBuf,
    /// Every machine is this one host (a network on one machine: ports `--base-port`,
    /// `--base-port` + 2, …). Default, unless `--hosts` or the machines file names hosts:
    /// 127.0.0.1.
    #[arg(long, conflicts_with = "hosts")]
    host: Option<String>,
    /// The machines' addresses in order, comma-separated (each listens on `--base-port`).
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// The HTTP port (the p2p port is the next one).
    #[arg(long, default_value_t = 8470)]
    base_port: u16,
    /// A domain every machine runs (built-in: quadratic, sphere, rastrigin, rosenbrock,
    /// ackley, mlp_digits, co2_forecast); repeatable. Default: quadratic.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// The domains' target performance (default: each domain's demo target).
    #[arg(long)]
    target: Option<f64>,
    /// Target seconds between blocks (a consensus parameter, written to the genesis).
    #[arg(long, default_value_t = 10.0)]
    block_time: f64,
    /// The chain id (replay protection between networks).
    #[arg(long, default_value_t = 7070)]
    chain_id: u64,
}

/// One machine of a machines file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Machine {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default = "default_roles")]
    roles: Vec<String>,
    /// DOIN staked at genesis.
    #[serde(default = "default_stake")]
    stake: f64,
    /// DOIN on its account besides the stake.
    #[serde(default = "default_balance")]
    balance: f64,
    #[serde(default = "default_workers")]
    workers: usize,
    /// Its own key's address (no key is written for it).
    #[serde(default)]
    address: Option<String>,
}

fn default_roles() -> Vec<String> {
    vec!["optimizer".into(), "evaluator".into()]
}
fn default_stake() -> f64 {
    100.0
}
fn default_balance() -> f64 {
    1000.0
}
fn default_workers() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachinesFile {
    machines: Vec<Machine>,
}

/// Most machines one `init` writes.
const MAX_MACHINES: usize = 256;

/// The machines `--machines` and `--host`/`--hosts` describe, each with its port.
fn machines_of(a: &InitArgs) -> anyhow::Result<Vec<Machine>> {
    let mut machines = match a.machines.parse::<usize>() {
        Ok(n) => {
            if !(1..=MAX_MACHINES).contains(&n) {
                bail!("--machines {n}: between 1 and {MAX_MACHINES}");
            }
            (0..n)
                .map(|_| Machine {
                    host: String::new(),
                    port: None,
                    roles: default_roles(),
                    stake: default_stake(),
                    balance: default_balance(),
                    workers: default_workers(),
                    address: None,
                })
                .collect::<Vec<_>>()
        }
        Err(_) => {
            let text = std::fs::read_to_string(&a.machines).with_context(|| {
                format!("--machines {}: not a number, and not a readable file", a.machines)
            })?;
            let file: MachinesFile =
                serde_json::from_str(&text).with_context(|| format!("--machines {}", a.machines))?;
            if !(1..=MAX_MACHINES).contains(&file.machines.len()) {
                bail!("--machines {}: {} machines (1 to {MAX_MACHINES})", a.machines, file.machines.len());
            }
            file.machines
        }
    };
    if !a.hosts.is_empty() {
        if a.hosts.len() != machines.len() {
            bail!("--hosts names {} hosts for {} machines", a.hosts.len(), machines.len());
        }
        for (m, h) in machines.iter_mut().zip(&a.hosts) {
            m.host = h.trim().to_owned();
        }
    } else if let Some(h) = &a.host {
        for m in &mut machines {
            m.host = h.trim().to_owned();
        }
    }
    for m in &mut machines {
        if m.host.is_empty() {
            m.host = "127.0.0.1".into();
        }
    }
    // One host: ports spaced by two (HTTP, then p2p); several: each its base port.
    let one_host = machines.iter().all(|m| m.host == machines[0].host);
    for (i, m) in machines.iter_mut().enumerate() {
        if m.port.is_none() {
            let offset = if one_host { 2 * i } else { 0 };
            let port = usize::from(a.base_port) + offset;
            m.port =
                Some(u16::try_from(port).ok().filter(|p| *p < u16::MAX).with_context(|| {
                    format!("machine {i}: port {port} is out of range (lower --base-port)")
                })?);
        }
    }
    check(&machines)?;
    Ok(machines)
}

/// Refuses machines that cannot form a network, naming the first problem.
fn check(machines: &[Machine]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in machines.iter().enumerate() {
        let port = m.port.unwrap_or(0);
        if m.host.contains(char::is_whitespace) || (m.host.contains(':') && !m.host.starts_with('[')) {
            bail!("machine {i}: host {:?} is not a host name or address (IPv6 in brackets)", m.host);
        }
        if port == 0 || port == u16::MAX {
            bail!("machine {i}: port {port} (1 to 65534: the p2p port is the next one)");
        }
        for p in [port, port + 1] {
            if !seen.insert((m.host.clone(), p)) {
                bail!("machine {i}: {}:{p} is already another machine's port", m.host);
            }
        }
        for r in &m.roles {
            if !matches!(r.as_str(), "optimizer" | "evaluator") {
                bail!("machine {i}: role {r:?} (roles: optimizer, evaluator)");
            }
        }
        if m.roles.is_empty() {
            bail!("machine {i}: no role (roles: optimizer, evaluator)");
        }
        if !(m.stake.is_finite() && m.stake >= 1.0) {
            bail!(
                "machine {i}: stake {} DOIN (at least 1: a machine without stake cannot evaluate)",
                m.stake
            );
        }
        if !(m.balance.is_finite() && m.balance >= 0.0) {
            bail!("machine {i}: balance {} DOIN", m.balance);
        }
        if !(1..=256).contains(&m.workers) {
            bail!("machine {i}: workers {} (1 to 256)", m.workers);
        }
    }
    let has = |role: &str| machines.iter().filter(|m| m.roles.iter().any(|r| r == role)).count();
    if has("optimizer") == 0 {
        bail!("no machine optimizes: give at least one the role \"optimizer\"");
    }
    // A claim is verified by evaluators other than its optimizer.
    if machines.len() > 1 && machines.iter().all(|m| m.roles == ["optimizer"]) {
        bail!("no machine evaluates: claims could never be verified");
    }
    if machines.len() == 1 {
        eprintln!("note: one machine: its claims have no one else to verify them until others join");
    }
    Ok(())
}

fn amount(doin: f64) -> Amount {
    Amount((doin * 1e9).round() as u128)
}

pub(crate) fn run(n: Network) -> anyhow::Result<()> {
    match n {
        Network::Init(a) => init(a),
    }
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let machines = machines_of(&a)?;
    if !(a.block_time.is_finite() && (1.0..=3600.0).contains(&a.block_time)) {
        bail!("--block-time {} s: 1 to 3600", a.block_time);
    }
    let domain_ids = if a.domains.is_empty() { vec!["quadratic".to_owned()] } else { a.domains.clone() };
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let genesis_path = a.dir.join("genesis.json");
    if genesis_path.exists() {
        bail!(
            "{} exists: a new genesis is a new network its nodes' chains would refuse; remove the \
             directory or pick another --dir",
            genesis_path.display()
        );
    }
    // One host: absolute paths, so `doin node --config D/nodeI.json` works from anywhere. Several
    // hosts: paths relative to the directory each machine gets a copy of (run from there).
    let one_host = machines.iter().all(|m| m.host == machines[0].host);
    let base: PathBuf = if one_host {
        std::fs::canonicalize(&a.dir).with_context(|| format!("resolving {}", a.dir.display()))?
    } else {
        PathBuf::from(".")
    };
    let p2p = |m: &Machine| format!("{}:{}", m.host, m.port.unwrap_or(0) + 1);
    let n = machines.len();
    let configs: Vec<NodeConfig> = machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let optimize = m.roles.iter().any(|r| r == "optimizer");
            let evaluate = m.roles.iter().any(|r| r == "evaluator");
            NodeConfig {
                host: m.host.trim_start_matches('[').trim_end_matches(']').to_owned(),
                port: m.port.unwrap_or(0),
                data_dir: base.join(format!("node{i}")),
                genesis: Some(base.join("genesis.json")),
                bootstrap_peers: machines
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, o)| p2p(o))
                    .collect(),
                domains: domain_ids
                    .iter()
                    .map(|d| DomainConfig {
                        domain_id: d.clone(),
                        optimize,
                        evaluate,
                        target_performance: Some(a.target.unwrap_or_else(|| crate::devnet::demo_target(d))),
                        ..DomainConfig::default()
                    })
                    .collect(),
                target_block_time: a.block_time,
                max_block_interval: (a.block_time * 6.0).min(1800.0),
                seal_slot: (a.block_time / 10.0).clamp(0.3, 2.0),
                quorum_timeout: (a.block_time * 3.0).clamp(10.0, 120.0),
                // Quorums drawn from the machines there are (a claim's optimizer never
                // verifies it).
                quorum_min_evaluators: u16::try_from((n - 1).clamp(1, 3)).unwrap_or(3),
                quorum_max_evaluators: u16::try_from((n - 1).clamp(1, 7)).unwrap_or(7),
                workers: m.workers,
                ..NodeConfig::default()
            }
        })
        .collect();
    // Keys (unless a machine brought its address), then the genesis.
    let mut addresses = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let address = match &m.address {
            Some(text) => {
                text.parse::<Address>().map_err(|e| anyhow::anyhow!("machine {i}: address {text:?}: {e}"))?
            }
            None => {
                let path = a.dir.join(format!("node{i}/node.key"));
                identity::load_or_create(&path)
                    .with_context(|| format!("writing {}", path.display()))?
                    .0
                    .address()
            }
        };
        if addresses.contains(&address) {
            bail!("machine {i}: address {address} is another machine's");
        }
        addresses.push(address);
    }
    let mut built = Vec::new();
    for d in &configs[0].domains {
        built.push((
            domains::build(d).map_err(|e| anyhow::anyhow!("--domain {}: {e}", d.domain_id))?,
            d.clone(),
        ));
    }
    let mut spec = genesis::devnet(&configs[0], &addresses, n, &built, 0).map_err(anyhow::Error::msg)?;
    spec.chain_id = a.chain_id;
    for (i, m) in machines.iter().enumerate() {
        spec.allocations[i].balance = amount(m.balance);
        let stake = &mut spec.stakes[i];
        stake.amount = amount(m.stake);
        stake.roles = m.roles.iter().fold(Roles(0), |r, name| {
            r.with(if name == "optimizer" { Roles::OPTIMIZER } else { Roles::EVALUATOR })
        });
    }
    let (_, block) = spec.build().map_err(|e| anyhow::anyhow!("the genesis does not build: {e}"))?;
    std::fs::write(&genesis_path, serde_json::to_vec_pretty(&spec)?)?;
    let mut paths = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let path = a.dir.join(format!("node{i}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&crate::devnet::config_json(c))?)?;
        paths.push(path);
    }
    let commands: Vec<String> = paths
        .iter()
        .map(|p| {
            if one_host {
                format!("doin node --config {}", p.display())
            } else {
                format!("cd <copy of {}> && doin node --config {}", a.dir.display(), file_name(p))
            }
        })
        .collect();
    println!(
        "{}",
        json!({
            "genesis": genesis_path,
            "genesis_hash": block.hash().to_string(),
            "chain_id": a.chain_id,
            "configs": paths,
            "addresses": addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "keys_written": machines.iter().enumerate().filter(|(_, m)| m.address.is_none()).map(|(i, _)| a.dir.join(format!("node{i}/node.key"))).collect::<Vec<_>>(),
            "run": commands,
        })
    );
    if !one_host {
        eprintln!(
            "Copy {dir}/genesis.json and {dir}/nodeI.json (and {dir}/nodeI/node.key, unless machine I \
             brought its own key: put it there) to machine I, then run the command from that copy.",
            dir = a.dir.display()
        );
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}
