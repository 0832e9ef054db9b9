//! `doin devnet`: N real node processes on loopback with their own keys, ports and data
//! directories, and a genesis that funds and stakes every node as optimizer and evaluator of the
//! devnet's domain. Prints progress (height, champions, peers); stops on Ctrl-C, after
//! `--duration`, or with `--until-target` once the target is reached and every node has the
//! same tip, then prints one JSON summary line.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use doin_node::{DomainConfig, NodeConfig, domains, genesis, identity};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

#[derive(Debug, Args)]
pub(crate) struct DevnetArgs {
    /// Node processes.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Domain (a built-in one: quadratic, sphere, rastrigin, rosenbrock, ackley, mlp_digits,
    /// co2_forecast).
    #[arg(long, default_value = "quadratic")]
    domain: String,
    /// Target performance (default: the domain's demo target).
    #[arg(long, allow_hyphen_values = true)]
    target: Option<f64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop once the target is reached and all nodes agree on the tip.
    #[arg(long)]
    pub(crate) until_target: bool,
    /// Contributors training the federated job `fl_digits` (supervised by node 0) beside the
    /// optimization domain: each a `doin fl join` process with its own key, funded and
    /// registered in the genesis, on its own label-skewed digits shard.
    #[arg(long, default_value_t = 0)]
    pub(crate) fl_contributors: usize,
    /// Nodes that only evaluate (the first `nodes - evaluators_only` optimize too).
    #[arg(long, default_value_t = 0)]
    evaluators_only: usize,
    /// First port; node i uses `base_port + 2i` (HTTP) and `+1` (P2P).
    #[arg(long, default_value_t = 8470)]
    base_port: u16,
    /// Directory for the nodes' data (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `KEY=VALUE`: an `optimization_config` entry for every node's domain (VALUE as JSON, or
    /// as a string), e.g. `n_params=30`. Repeatable.
    #[arg(long = "optimization", value_name = "KEY=VALUE")]
    pub(crate) optimization: Vec<String>,
    /// Every optimizing node's optimizer (`optimization_plugin`: shade, tpe, auto, cma-es, ga,
    /// or `plugin:COMMAND`; default: the node's default).
    #[arg(long)]
    pub(crate) optimizer: Option<String>,
    /// DOIN every node charges per inference request on the domain (`inference_price`; the
    /// domain must have a model, e.g. mlp_digits). Requests then carry channel updates.
    #[arg(long)]
    pub(crate) inference_price: Option<f64>,
    /// Do not share evaluated trials between the nodes (`share_trials: false`).
    #[arg(long)]
    pub(crate) no_share_trials: bool,
    /// Seconds after which an idle chain gets a heartbeat block (`max_block_interval`); a
    /// converged domain adds one block per interval.
    #[arg(long, default_value_t = 5.0)]
    max_block_interval: f64,
    /// Evaluation workers per node.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Print every line the nodes print.
    #[arg(long)]
    verbose: bool,
    /// Leave experiment tracking off (by default every node writes `stats.csv` and `olap.db`
    /// in its data directory).
    #[arg(long)]
    no_tracking: bool,
    /// `N=COMMAND`: node N runs its domain as this external plugin instead of the built-in one
    /// (for example a plugin that lies, in tests). Repeatable.
    #[arg(long = "plugin", value_name = "N=COMMAND")]
    plugins: Vec<String>,
    /// Every node runs `--domain` as this external domain plugin (`domain_plugin`), for a
    /// domain that is not built in: for example `--domain regressor --domain-plugin "python3
    /// plugins/python/examples/numpy_domain.py" --target -0.03`.
    #[arg(long, value_name = "COMMAND")]
    domain_plugin: Option<String>,
    /// Node N hands its quorum assignments to external evaluators (`/tasks/*`, API key
    /// `devnet`) instead of evaluating in-process. Repeatable.
    #[arg(long = "external")]
    external: Vec<usize>,
    /// `N=THREADS`: node N gives the marketplace's capability challenges this many threads
    /// (`market_threads`; default: the machine's cores). Repeatable.
    #[arg(long = "market-threads", value_name = "N=THREADS")]
    market_threads: Vec<String>,
    /// `N=PRICE`: node N optimizes the domain only on hire (`optimize_on_hire`), at PRICE DOIN
    /// per evaluation (`hire_price`). Repeatable.
    #[arg(long = "on-hire", value_name = "N=PRICE")]
    on_hire: Vec<String>,
    /// Memory, MiB, each node's capability check makes a provider prove
    /// (`market_check_mem_mb`; default 64).
    #[arg(long)]
    market_check_mem_mb: Option<u32>,
    /// `N=BEHAVIOUR`: node N acts as an adversary (`copy-reveals`, `double-vote`,
    /// `double-finality-vote`), for tests.
    #[arg(long = "adversary", value_name = "N=BEHAVIOUR", hide = true)]
    adversaries: Vec<String>,
    /// Write the keys, the genesis and one config per node into `--dir`, print them as one
    /// JSON line and exit without starting anything (to run the nodes elsewhere, e.g. in
    /// network namespaces, after editing their addresses).
    #[arg(long, requires = "dir")]
    setup_only: bool,
}

pub(crate) fn demo_target(domain: &str) -> f64 {
    match domain {
        "quadratic" => -100.0,
        "mlp_digits" => 0.95,
        "co2_forecast" => -0.45,
        _ => 1e-3,
    }
}

struct Line {
    node: usize,
    text: String,
}

#[derive(Default, Clone)]
struct NodeView {
    height: u64,
    tip: String,
    peers: usize,
    stopped: Option<String>,
    usage: Option<(f64, f64, f64, f64)>,
    evaluations_at_target: Option<u64>,
    /// Candidates it had evaluated when the claim that became the target champion reached it.
    evaluations_at_claim: Option<u64>,
    /// Those evaluations at the target by purpose (`candidates`, `checks`, `champions`,
    /// `second_opinions`), and the shared trials received, used and published by then.
    spent_at_target: Vec<(String, u64)>,
    /// `latency claims N claim_to_cert_p50_ms X gossip_rejected R gossip_ignored I`.
    latency: Option<Vec<String>>,
}

impl NodeView {
    /// `target D reached P at height H claimed_after C evaluations E candidates N checks K
    /// champions M second_opinions S shared_received R shared_used U shared_published P` (C is
    /// `-` when the winning commit was never seen here).
    fn note_target(&mut self, text: &str) {
        let w: Vec<&str> = text.split_whitespace().collect();
        let after = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1)?.parse().ok());
        self.evaluations_at_target = after("evaluations");
        self.evaluations_at_claim = after("claimed_after");
        self.spent_at_target = [
            "candidates",
            "checks",
            "champions",
            "second_opinions",
            "shared_received",
            "shared_used",
            "shared_published",
        ]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), after(k)?)))
        .collect();
    }
}

/// `usage cpu_s C eval_s E rss_mb R tracking_s T`.
fn parse_usage(text: &str) -> Option<(f64, f64, f64, f64)> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let tracking = w.get(8).and_then(|t| t.parse().ok()).unwrap_or(0.0);
    Some((w.get(2)?.parse().ok()?, w.get(4)?.parse().ok()?, w.get(6)?.parse().ok()?, tracking))
}

pub(crate) fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let summary = run_summary(args)?;
    println!("{summary}");
    Ok(())
}

/// Runs the devnet and returns its summary.
pub(crate) fn run_summary(args: DevnetArgs) -> anyhow::Result<serde_json::Value> {
    if args.nodes == 0 || args.nodes > 64 {
        bail!("--nodes must be in 1..=64");
    }
    for p in &args.plugins {
        match p.split_once('=') {
            Some((n, cmd))
                if n.trim().parse::<usize>().is_ok_and(|n| n < args.nodes) && !cmd.trim().is_empty() => {}
            _ => bail!("--plugin {p:?}: expected N=COMMAND with N < --nodes"),
        }
    }
    let per_node = |flag: &str, values: &[String], value_ok: &dyn Fn(&str) -> bool| -> anyhow::Result<()> {
        for p in values {
            match p.split_once('=') {
                Some((n, v))
                    if n.trim().parse::<usize>().is_ok_and(|n| n < args.nodes) && value_ok(v.trim()) => {}
                _ => bail!("{flag} {p:?}: expected N=VALUE with N < --nodes"),
            }
        }
        Ok(())
    };
    per_node("--on-hire", &args.on_hire, &|v| v.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0))?;
    per_node("--market-threads", &args.market_threads, &|v| v.parse::<usize>().is_ok())?;
    if let Some(o) =
        args.optimization.iter().find(|o| o.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()))
    {
        bail!("--optimization {o:?}: expected KEY=VALUE");
    }
    if args.plugins.iter().any(|p| p.starts_with("0=")) {
        bail!(
            "--plugin: node 0 defines the devnet's domain and must run the built-in one (or --domain-plugin)"
        );
    }
    if args.domain_plugin.as_deref().is_some_and(|c| c.trim().is_empty()) {
        bail!("--domain-plugin: the command is empty");
    }
    if args.evaluators_only >= args.nodes {
        bail!("--evaluators-only must leave at least one optimizing node");
    }
    if usize::from(args.base_port) + 2 * args.nodes > 65_535 {
        bail!("--base-port too high for {} nodes", args.nodes);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(devnet(args))
}

impl DevnetArgs {
    /// The arguments `doin bench devnet` runs with.
    pub(crate) fn for_bench(
        nodes: usize,
        domain: String,
        evaluators_only: usize,
        target: Option<f64>,
        timeout_s: f64,
        base_port: u16,
    ) -> Self {
        Self {
            nodes,
            domain,
            target,
            duration: Some(timeout_s),
            until_target: true,
            evaluators_only,
            fl_contributors: 0,
            base_port,
            dir: None,
            max_block_interval: 5.0,
            workers: 1,
            verbose: false,
            no_tracking: false,
            plugins: Vec::new(),
            domain_plugin: None,
            optimization: Vec::new(),
            optimizer: None,
            no_share_trials: false,
            inference_price: None,
            external: Vec::new(),
            adversaries: Vec::new(),
            market_threads: Vec::new(),
            on_hire: Vec::new(),
            market_check_mem_mb: None,
            setup_only: false,
        }
    }
}

fn node_config(args: &DevnetArgs, i: usize, dir: &Path, target: f64) -> NodeConfig {
    let plugin = args
        .plugins
        .iter()
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim().parse::<usize>().ok() == Some(i))
        .map(|(_, cmd)| format!("plugin:{}", cmd.trim()))
        .or_else(|| args.domain_plugin.as_ref().map(|cmd| format!("plugin:{}", cmd.trim())));
    let hire_price = args
        .on_hire
        .iter()
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim().parse::<usize>().ok() == Some(i))
        .and_then(|(_, price)| price.trim().parse::<f64>().ok());
    let domain = DomainConfig {
        domain_id: args.domain.clone(),
        optimize: i < args.nodes - args.evaluators_only || hire_price.is_some(),
        optimize_on_hire: hire_price.is_some(),
        hire_price: hire_price.unwrap_or(0.0),
        evaluate: true,
        target_performance: Some(target),
        domain_plugin: plugin,
        external_evaluation: args.external.contains(&i),
        optimization_plugin: args.optimizer.clone(),
        share_trials: !args.no_share_trials,
        inference_price: args.inference_price.unwrap_or(0.0),
        optimization_config: args
            .optimization
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                let v = v.trim();
                (k.trim().to_owned(), serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v)))
            })
            .collect(),
        ..DomainConfig::default()
    };
    NodeConfig {
        host: "127.0.0.1".into(),
        port: args.base_port + 2 * i as u16,
        data_dir: dir.join(format!("node{i}")),
        bootstrap_peers: if i == 0 { Vec::new() } else { vec![format!("127.0.0.1:{}", args.base_port + 1)] },
        genesis: Some(dir.join("genesis.json")),
        domains: vec![domain],
        // Demo tuning (DESIGN §8): blocks every couple of seconds, short seal slots, quorums of 2.
        target_block_time: 2.0,
        max_block_interval: args.max_block_interval,
        seal_slot: 0.3,
        quorum_timeout: 8.0,
        quorum_min_evaluators: 2,
        quorum_max_evaluators: 7,
        // Tolerances: each built-in domain's noise profile (`domains::tolerance_profile`).
        workers: args.workers,
        api_key: args.external.contains(&i).then(|| "devnet".to_owned()),
        experiment_stats_file: (!args.no_tracking).then(|| dir.join(format!("node{i}/stats.csv"))),
        olap_db_path: (!args.no_tracking).then(|| dir.join(format!("node{i}/olap.db"))),
        market_threads: args
            .market_threads
            .iter()
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| n.trim().parse::<usize>().ok() == Some(i))
            .and_then(|(_, t)| t.trim().parse().ok())
            .unwrap_or_else(|| NodeConfig::default().market_threads),
        market_check_mem_mb: args
            .market_check_mem_mb
            .unwrap_or_else(|| NodeConfig::default().market_check_mem_mb),
        federated_jobs: if i < genesis::SUPERVISORS && args.fl_contributors > 0 {
            vec![doin_node::config::FederatedJobConfig {
                job_id: FL_JOB.into(),
                min_updates: (args.fl_contributors * 8 / 10).max(1),
                max_updates: args.fl_contributors.min(128),
                max_wait: 20.0,
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..NodeConfig::default()
    }
}

/// The devnet's federated job.
const FL_JOB: &str = "fl_digits";

async fn devnet(args: DevnetArgs) -> anyhow::Result<serde_json::Value> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("doin-devnet-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    // A devnet writes a new genesis; nodes on a previous devnet's chain would refuse it and
    // exit (a second run on one `--dir` printed a summary of nodes that never ran).
    if let Some(old) = (0..args.nodes).map(|i| dir.join(format!("node{i}/chain.redb"))).find(|p| p.exists()) {
        bail!(
            "--dir {}: {} is a previous devnet's chain, and a new devnet writes a new genesis its \
             nodes would refuse; remove the directory or pick another (to run the old network again: \
             `doin node --config {}` per node)",
            dir.display(),
            old.display(),
            dir.join("node0.json").display()
        );
    }
    let target = args.target.unwrap_or_else(|| demo_target(&args.domain));
    let configs: Vec<NodeConfig> = (0..args.nodes).map(|i| node_config(&args, i, &dir, target)).collect();

    // Keys, then one genesis that funds and stakes every node.
    let mut addresses = Vec::new();
    for c in &configs {
        let (key, _) = identity::load_or_create(&c.identity_path()).context("node key")?;
        addresses.push(key.address());
    }
    let d = &configs[0].domains[0];
    let domain = domains::build(d).map_err(anyhow::Error::msg)?;
    let spec = genesis::devnet(
        &configs[0],
        &addresses,
        args.nodes - args.evaluators_only,
        &[(domain, d.clone())],
        0,
    )
    .map_err(anyhow::Error::msg)?;
    // Federated contributors: keys, funds and their registration (a contributor stake) at genesis.
    let mut spec = spec;
    let mut fl_keys = Vec::new();
    if args.fl_contributors > 0 {
        let fl_dir = dir.join("fl");
        crate::fl::split_to(args.fl_contributors, 0.5, 1, &fl_dir.join("data"))?;
        for i in 0..args.fl_contributors {
            let path = fl_dir.join(format!("contributor{i}.key"));
            let (key, _) = identity::load_or_create(&path).context("contributor key")?;
            spec.allocations.push(doin_consensus::Allocation {
                address: key.address(),
                balance: doin_primitives::Amount::doin(5),
            });
            spec.stakes.push(doin_consensus::GenesisStake {
                address: key.address(),
                amount: doin_primitives::Amount::doin(1),
                roles: doin_primitives::Roles::CONTRIBUTOR,
                domains: vec![doin_primitives::DomainId::new(FL_JOB).map_err(|e| anyhow::anyhow!("{e}"))?],
            });
            fl_keys.push((path, fl_dir.join("data").join(format!("client-{i}.csv"))));
        }
    }
    std::fs::write(dir.join("genesis.json"), serde_json::to_vec_pretty(&spec)?)?;
    let config_paths: Vec<PathBuf> = (0..args.nodes).map(|i| dir.join(format!("node{i}.json"))).collect();
    for (c, path) in configs.iter().zip(&config_paths) {
        std::fs::write(path, serde_json::to_vec_pretty(&config_json(c))?)?;
    }
    if args.setup_only {
        return Ok(serde_json::json!({
            "genesis": dir.join("genesis.json"),
            "configs": config_paths,
            "addresses": addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        }));
    }

    let exe = std::env::current_exe()?;
    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let mut children: Vec<Child> = Vec::new();
    for (i, path) in config_paths.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.args(["node", "--config"]).arg(path).arg("--stop-on-stdin-eof");
        for a in &args.adversaries {
            if let Some((n, behaviour)) = a.split_once('=')
                && n.trim().parse::<usize>().ok() == Some(i)
            {
                cmd.args(["--adversary", behaviour.trim()]);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.join(format!("node{i}.log")))?))
            .kill_on_drop(true)
            .spawn()
            .context("starting a node process")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(text)) = lines.next_line().await {
                if tx.send(Line { node: i, text }).await.is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let mut fl_children = Vec::new();
    for (i, (key, data)) in fl_keys.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("fl/contributor{i}.log")))?;
        // Under `doin plugin-guard` (its own process group): killed with the group however the
        // devnet ends, SIGTERM and SIGKILL included, where `kill_on_drop` runs only on a clean exit.
        let mut cmd = Command::new(&exe);
        cmd.arg("plugin-guard")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--")
            .arg(&exe)
            .args([
                "fl",
                "join",
                "--node",
                &format!("127.0.0.1:{}", args.base_port),
                "--job",
                FL_JOB,
                "--key",
            ])
            .arg(key)
            .arg("--data")
            .arg(data)
            .args(["--rounds", "1000000", "--timeout", "31536000"]);
        // Node 1 stands by as the job's second supervisor.
        if args.nodes > 1 {
            cmd.args(["--fallback", &format!("127.0.0.1:{}", args.base_port + 2)]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .context("starting a contributor")?;
        fl_children.push(Group(child));
    }
    if !fl_children.is_empty() {
        eprintln!(
            "devnet: federated job {FL_JOB}: {} contributors, supervised by node 0 (http://127.0.0.1:{}/api/cluster/{FL_JOB}); logs in {}/fl",
            fl_children.len(),
            args.base_port,
            dir.display()
        );
    }
    let mut fl_round: Option<(u64, f64)> = None;
    eprintln!(
        "devnet: {} nodes, domain {} (target {target}), data in {}",
        args.nodes,
        args.domain,
        dir.display()
    );
    eprintln!("devnet: node logs in {}/node*.log; Ctrl-C stops", dir.display());
    for i in 0..args.nodes {
        let port = args.base_port + 2 * i as u16;
        if i == 0 {
            eprintln!("devnet: dashboard http://127.0.0.1:{port}/dashboard");
        }
        eprintln!("devnet: node {i} API http://127.0.0.1:{port}/status");
    }

    let started = Instant::now();
    let mut views = vec![NodeView::default(); args.nodes];
    let mut target_at: Option<f64> = None;
    let mut champion: Option<String> = None;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut evaluations: BTreeMap<usize, u64> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, bool> = BTreeMap::new();
    let mut champions_by: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let stopped_by;
    // When the last block line came: at the target the nodes pause, but the blocks that seal
    // and certify the claims in flight still come for a moment.
    let mut last_block = Instant::now();
    loop {
        let agreed = views.iter().all(|v| v.tip == views[0].tip && !v.tip.is_empty());
        if args.until_target
            && target_at.is_some()
            && agreed
            && last_block.elapsed() >= Duration::from_secs(1)
        {
            stopped_by = "target";
            break;
        }
        // At the stop a block may be in flight: the tips get up to 10 s more to agree.
        if args.duration.is_some_and(|d| {
            let t = started.elapsed().as_secs_f64();
            t >= d && (agreed || t >= d + 10.0)
        }) {
            stopped_by = "duration";
            break;
        }
        tokio::select! {
            _ = &mut ctrl_c => { stopped_by = "ctrl-c"; break; }
            line = rx.recv() => {
                let Some(Line { node, text }) = line else { stopped_by = "nodes exited"; break };
                if args.verbose {
                    eprintln!("[node{node}] {text}");
                }
                let mut words = text.split_whitespace();
                match words.next() {
                    Some("block") => {
                        last_block = Instant::now();
                        views[node].height = words.next().and_then(|h| h.parse().ok()).unwrap_or(0);
                        views[node].tip = words.next().unwrap_or_default().to_owned();
                    }
                    Some("connected") => views[node].peers += 1,
                    Some("champion") => {
                        if let Some(by) = text.split_whitespace().nth(4) {
                            champions_by.insert(by.to_owned());
                        }
                        let c = text.split_once(' ').map(|x| x.1).unwrap_or_default().to_owned();
                        if champion.as_ref() != Some(&c) {
                            eprintln!("devnet: t={:.1}s champion {c}", started.elapsed().as_secs_f64());
                            champion = Some(c);
                        }
                    }
                    Some("fl") => {
                        // `fl round JOB N accuracy A contributors K`
                        let w: Vec<&str> = text.split_whitespace().collect();
                        if let (Some(r), Some(a)) = (w.get(3).and_then(|x| x.parse().ok()), w.get(5).and_then(|x| x.parse().ok())) {
                            fl_round = Some((r, a));
                            eprintln!("devnet: t={:.1}s {text}", started.elapsed().as_secs_f64());
                        }
                    }
                    Some("target") => {
                        views[node].note_target(&text);
                        if target_at.is_some() {
                            continue;
                        }
                        target_at = Some(started.elapsed().as_secs_f64());
                        eprintln!("devnet: t={:.1}s target reached ({text})", started.elapsed().as_secs_f64());
                    }
                    Some("certificate") => {
                        // Every node assembles the certificates it sees: count each commit once.
                        let w: Vec<&str> = text.split_whitespace().collect();
                        if let (Some(id), Some(outcome)) = (w.get(2), w.get(3)) {
                            outcomes.insert((*id).to_owned(), *outcome == "Accept");
                        }
                    }
                    Some("commit") => {
                        *counts.entry("commits").or_default() += 1;
                        if target_at.is_none()
                            && let Some(n) = text.split_whitespace().nth(6).and_then(|n| n.parse().ok())
                        {
                            evaluations.insert(node, n);
                        }
                    }
                    Some("vote") => *counts.entry("votes").or_default() += 1,
                    Some("escalate") => *counts.entry("escalations").or_default() += 1,
                    Some("copy") => *counts.entry("copies").or_default() += 1,
                    Some("stopped") => views[node].stopped = Some(text.clone()),
                    Some("usage") => views[node].usage = parse_usage(&text),
                    Some("latency") => views[node].latency = Some(text.split_whitespace().map(str::to_owned).collect()),
                    _ => {}
                }
            }
            _ = progress.tick() => {
                let heights: Vec<String> = views.iter().map(|v| v.height.to_string()).collect();
                eprintln!(
                    "devnet: t={:.0}s heights [{}] peers [{}]",
                    started.elapsed().as_secs_f64(),
                    heights.join(", "),
                    views.iter().map(|v| v.peers.to_string()).collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
    // Stop every node cleanly (closing stdin) and collect their final lines.
    for c in children.iter_mut() {
        drop(c.stdin.take());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while views.iter().any(|v| v.stopped.is_none()) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(Line { node, text })) if text.starts_with("stopped") => views[node].stopped = Some(text),
            Ok(Some(Line { node, text })) if text.starts_with("usage") => {
                views[node].usage = parse_usage(&text)
            }
            Ok(Some(Line { node, text })) if text.starts_with("latency") => {
                views[node].latency = Some(text.split_whitespace().map(str::to_owned).collect())
            }
            // A node that saw the target just as the others agreed on the tip.
            Ok(Some(Line { node, text }))
                if text.starts_with("target ") && views[node].evaluations_at_target.is_none() =>
            {
                views[node].note_target(&text);
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => break,
        }
    }
    for c in children.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
    }
    let finals: Vec<Vec<String>> = views
        .iter()
        .map(|v| v.stopped.clone().unwrap_or_default().split_whitespace().map(str::to_owned).collect())
        .collect();
    let field = |f: &Vec<String>, k: &str| f.iter().position(|w| w == k).and_then(|i| f.get(i + 1)).cloned();
    let tips: Vec<Option<String>> = finals.iter().map(|f| field(f, "tip")).collect();
    let roots: Vec<Option<String>> = finals.iter().map(|f| field(f, "root")).collect();
    let same = |v: &[Option<String>]| v.iter().all(|x| x.is_some() && x == &v[0]);
    let same_chain = same_chain(&configs, &spec, &finals);
    // Candidate evaluations each optimizing node performed until the network's champion reached
    // the target (as each node saw it), averaged over the optimizing nodes.
    // Only optimizing nodes (the first `nodes - evaluators_only`) count, a node that had not
    // finished a candidate yet with 0.
    let optimizing = &views[..args.nodes - args.evaluators_only];
    let at: Vec<u64> = optimizing.iter().filter_map(|v| v.evaluations_at_target).collect();
    // The same at the winning claim (its commit first seen), before its verification: the
    // figure a single node's search reports ("evaluations to the first claim at the target").
    let at_claim: Vec<u64> = optimizing.iter().filter_map(|v| v.evaluations_at_claim).collect();
    let evals_to_claim = (!at_claim.is_empty() && at_claim.len() == at.len())
        .then(|| at_claim.iter().sum::<u64>() as f64 / at_claim.len() as f64);
    // The same by purpose, averaged over the nodes that saw the target.
    let mut spent_per_node = serde_json::Map::new();
    for v in optimizing.iter().filter(|v| v.evaluations_at_target.is_some()) {
        for (k, n) in &v.spent_at_target {
            let sum = spent_per_node.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
            spent_per_node.insert(k.clone(), (sum + *n as f64 / at.len() as f64).into());
        }
    }
    let evals_per_node = if !at.is_empty() {
        Some(at.iter().sum::<u64>() as f64 / at.len() as f64)
    } else if !evaluations.is_empty() {
        Some(evaluations.values().sum::<u64>() as f64 / evaluations.len() as f64)
    } else {
        None
    };
    // Claim-to-certificate latency: each node's median over its own claims; the network's
    // figure is the median of those (nodes without a certified claim left out).
    let latency = |v: &NodeView, k: &str| {
        v.latency.as_ref().and_then(|f| field(f, k)).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
    };
    let mut p50s: Vec<u64> = views
        .iter()
        .filter(|v| latency(v, "claims") > 0)
        .map(|v| latency(v, "claim_to_cert_p50_ms"))
        .collect();
    p50s.sort_unstable();
    let summary = serde_json::json!({
        "devnet": true,
        "claim_to_certificate_ms": p50s.get(p50s.len().saturating_sub(1) / 2),
        "certified_claims": views.iter().map(|v| latency(v, "claims")).sum::<u64>(),
        "gossip_rejected": views.iter().map(|v| latency(v, "gossip_rejected")).collect::<Vec<_>>(),
        "gossip_ignored": views.iter().map(|v| latency(v, "gossip_ignored")).collect::<Vec<_>>(),
        "nodes": args.nodes,
        "domain": args.domain,
        "target": target,
        "stopped_by": stopped_by,
        "time_to_target_s": target_at,
        "blocks": finals.iter().filter_map(|f| field(f, "height")?.parse::<u64>().ok()).max(),
        "same_tip": same(&tips),
        "same_root": same(&roots),
        "same_chain": same_chain,
        "accepted": outcomes.values().filter(|a| **a).count(),
        "rejected": outcomes.values().filter(|a| !**a).count(),
        "commits": counts.get("commits").copied().unwrap_or(0),
        "votes": counts.get("votes").copied().unwrap_or(0),
        "balances": finals.iter().map(|f| field(f, "balance")).collect::<Vec<_>>(),
        "reputations": finals.iter().map(|f| field(f, "reputation")).collect::<Vec<_>>(),
        "stakes": finals.iter().map(|f| field(f, "stake")).collect::<Vec<_>>(),
        "addresses": addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "champions_by": champions_by,
        "escalations": counts.get("escalations").copied().unwrap_or(0),
        "copies": counts.get("copies").copied().unwrap_or(0),
        // Candidate evaluations each optimizing node performed until the network's champion
        // reached the target (as each node saw it), averaged over the optimizing nodes.
        "evals_per_node_to_target": evals_per_node,
        "evals_by_node": at,
        "spent_per_node_to_target": spent_per_node,
        "evals_per_node_to_claim": evals_to_claim,
        "claim_evals_by_node": at_claim,
        "cpu_s": views.iter().map(|v| v.usage.map(|u| u.0)).collect::<Vec<_>>(),
        "eval_s": views.iter().map(|v| v.usage.map(|u| u.1)).collect::<Vec<_>>(),
        "rss_mb": views.iter().map(|v| v.usage.map(|u| u.2)).collect::<Vec<_>>(),
        "tracking_s": views.iter().map(|v| v.usage.map(|u| u.3)).collect::<Vec<_>>(),
        "federated": (args.fl_contributors > 0).then(|| serde_json::json!({
            "job": FL_JOB,
            "contributors": args.fl_contributors,
            "rounds": fl_round.map(|r| r.0 + 1),
            "accuracy": fl_round.map(|r| r.1),
        })),
    });
    drop(fl_children);
    Ok(summary)
}

/// A child leading its own process group, killed with the group when dropped (the devnet
/// returning or failing); when the devnet process itself dies, the guard at its head does it.
struct Group(tokio::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The config file a devnet node reads (the same format users write).
pub(crate) fn config_json(c: &NodeConfig) -> serde_json::Value {
    serde_json::json!({
        "host": c.host,
        "port": c.port,
        "data_dir": c.data_dir,
        "bootstrap_peers": c.bootstrap_peers,
        "genesis": c.genesis,
        "target_block_time": c.target_block_time,
        "max_block_interval": c.max_block_interval,
        "seal_slot": c.seal_slot,
        "quorum_min_evaluators": c.quorum_min_evaluators,
        "quorum_max_evaluators": c.quorum_max_evaluators,
        "quorum_tolerance": c.quorum_tolerance,
        "quorum_timeout": c.quorum_timeout,
        "workers": c.workers,
        "api_key": c.api_key,
        "experiment_stats_file": c.experiment_stats_file,
        "olap_db_path": c.olap_db_path,
        "log_level": "info",
        "market_threads": c.market_threads,
        "market_check_mem_mb": c.market_check_mem_mb,
        "federated_jobs": c.federated_jobs,
        "domains": c.domains.iter().map(|d| serde_json::json!({
            "domain_id": d.domain_id,
            "optimize": d.optimize,
            "evaluate": d.evaluate,
            "target_performance": d.target_performance,
            "domain_plugin": d.domain_plugin,
            "external_evaluation": d.external_evaluation,
            "optimization_config": d.optimization_config,
            "optimization_plugin": d.optimization_plugin,
            "share_trials": d.share_trials,
            "serve_inference": d.serve_inference,
            "inference_price": d.inference_price,
            "optimize_on_hire": d.optimize_on_hire,
            "hire_price": d.hire_price,
        })).collect::<Vec<_>>(),
    })
}

/// Whether the stopped nodes hold one chain: every node's chain has the same block at the
/// lowest final height, and no node ended more than 3 blocks behind the highest. (Nodes of a
/// live chain read the stop at slightly different moments, so their final tips can differ
/// by the block or two produced meanwhile; `same_tip` says whether they did.)
fn same_chain(configs: &[NodeConfig], spec: &doin_consensus::GenesisSpec, finals: &[Vec<String>]) -> bool {
    let heights: Vec<Option<u64>> = finals
        .iter()
        .map(|f| f.iter().position(|w| w == "height").and_then(|i| f.get(i + 1)).and_then(|h| h.parse().ok()))
        .collect();
    let (Some(low), Some(high)) = (heights.iter().flatten().min(), heights.iter().flatten().max()) else {
        return false;
    };
    if heights.iter().any(Option::is_none) || high - low > 3 {
        return false;
    }
    let mut hashes = configs.iter().map(|c| {
        let store = doin_storage::ChainStore::open(
            &c.data_dir.join("chain.redb"),
            spec,
            doin_storage::StoreOptions::default(),
        );
        store.ok().and_then(|s| s.canonical_hash(*low).ok().flatten())
    });
    let first = hashes.next().flatten();
    first.is_some() && hashes.all(|h| h == first)
}
