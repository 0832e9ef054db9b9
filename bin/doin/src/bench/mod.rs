//! `doin bench …`: system benchmarks, each printing one JSON line of results.

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use doin_consensus::{Allocation, BlockTemplate, apply_block, build_block, testkit::TestNet};
use doin_primitives::{
    Address, Amount, Block, BlockBody, BlockKind, BoundedVec, Hash, SigTag, SignatureItem, verify_batch,
};
use doin_storage::{ChainStore, StoreOptions, snapshot};

mod fl;
mod inference;
mod join;

#[derive(Debug, Subcommand)]
pub(crate) enum Bench {
    /// Applies blocks of signed transfers on one core (signature checks, state updates and
    /// state-root computation included) and measures raw ed25519 batch verification alongside.
    Ledger {
        /// Blocks to apply.
        #[arg(long, default_value_t = 20)]
        blocks: usize,
        /// Transfers per block.
        #[arg(long, default_value_t = 2_000)]
        txs_per_block: usize,
        /// Distinct sending accounts.
        #[arg(long, default_value_t = 4_000)]
        accounts: usize,
    },
    /// A late joiner on loopback: a snapshot of a state with `--accounts` accounts served by a
    /// node's provider over libp2p, fetched, tied to the trusted checkpoint, verified, imported.
    Join {
        /// Accounts in the state.
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Work directory (a temporary directory inside it is used and removed).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Imports a chain of signed-transfer blocks into a fresh store (validation and durable
    /// group commits included), then restores a verified snapshot of a large state.
    Storage {
        /// Blocks to import.
        #[arg(long, default_value_t = 100)]
        blocks: usize,
        /// Transfers per block.
        #[arg(long, default_value_t = 2_000)]
        txs_per_block: usize,
        /// Blocks per durable commit.
        #[arg(long, default_value_t = 16)]
        group: usize,
        /// Accounts in the snapshot state.
        #[arg(long, default_value_t = 1_000_000)]
        snapshot_accounts: usize,
        /// Work directory (a temporary directory inside it is used and removed).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Federated training on the Flower digits setup, in one process: every aggregation rule
    /// clean and under two attacks, the default rule's overhead per round, and the time to
    /// aggregate 100 updates of 10 MB.
    Fl {
        /// Seeds (medians over 1..=seeds).
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Rounds per run (the Flower setup: 20).
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        /// Size of each of the 100 updates the aggregation timing combines, MB.
        #[arg(long, default_value_t = 10)]
        update_mb: usize,
    },
    /// Runs a devnet to the domain's target and reports time, blocks, verification CPU share,
    /// idle memory and evaluations per optimizing node.
    Devnet {
        /// Node processes in all.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Of them, nodes that only evaluate.
        #[arg(long, default_value_t = 0)]
        evaluators_only: usize,
        /// Domain.
        #[arg(long, default_value = "quadratic")]
        domain: String,
        /// Target (default: the domain's demo target).
        #[arg(long, allow_hyphen_values = true)]
        target: Option<f64>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout_s: f64,
        /// First port.
        #[arg(long, default_value_t = 18470)]
        base_port: u16,
        /// Independent devnets (fresh keys, so fresh optimizer seeds); figures are medians and
        /// the per-run values are listed.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Every optimizing node's `optimization_plugin` (default: the node's, `auto`).
        #[arg(long)]
        optimizer: Option<String>,
    },
    /// The node's inference serving pipeline for the `mlp_digits` model (one row per request,
    /// one thread): bare forward pass, free and paid requests (payment checked, taken and
    /// logged; receipt signed), and channel updates taken per second on one core.
    Inference {
        /// Requests of each kind.
        #[arg(long, default_value_t = 5_000)]
        requests: usize,
        /// Channel updates for the per-core rate.
        #[arg(long, default_value_t = 50_000)]
        updates: u64,
    },
    /// CEC-style optimizer runs (shifted 30-D functions, 10 000 × D evaluations), optimizer
    /// overhead per evaluation, and islands with migration against one population.
    Optimize {
        /// Runs per function.
        #[arg(long, default_value_t = 51)]
        seeds: u64,
        /// Dimensions.
        #[arg(long, default_value_t = 30)]
        dim: usize,
    },
    /// The adversary suite: fake and abusive submissions of many kinds (over-claims,
    /// constant-factor liars, replays, copies, forged signatures, wrong roles, colluders, double
    /// votes, gossip floods from throwaway keys, vote copying, quorum grinding) through the
    /// chain's and the node's real rules, with each kind's outcome.
    Adversary {
        /// Over-claims (other per-certificate kinds run a tenth of this).
        #[arg(long, default_value_t = 200)]
        claims: usize,
        /// Bogus gossip messages in the flood.
        #[arg(long, default_value_t = 10_000)]
        flood: usize,
        /// Throwaway keys sending them.
        #[arg(long, default_value_t = 1_000)]
        flood_keys: usize,
        /// Commits of the grinding test.
        #[arg(long, default_value_t = 200)]
        grind_commits: usize,
        /// Salts/references the grinding optimizer tries per commit.
        #[arg(long, default_value_t = 10_000)]
        grind_tries: usize,
    },
    /// Median claim-to-certificate time of 4-node devnets under a gossip flood of 10 000 signed
    /// bogus messages, against the same flood aimed at a bystander (one JSON line).
    Flood {
        /// Rounds (one control and one flooded devnet of 10 s each).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// First port (each devnet uses 10 from here).
        #[arg(long, default_value_t = 8570)]
        base_port: u16,
    },
    /// One node's search without a network: the node's domain (built-in or `--domain-plugin`)
    /// and optimizer (`--optimizer`, as `optimization_plugin`), evaluated as the node's loop
    /// does (a batch on the worker pool), until the first figure at or past the target; the
    /// evaluations each seed needed and their median (one JSON line).
    Search {
        /// The domain id (a built-in: `mlp_digits`, `co2_forecast`, a benchmark function, or
        /// any id with `--domain-plugin`).
        #[arg(long, default_value = "mlp_digits")]
        domain: String,
        /// A domain plugin command (`plugin:COMMAND`), as `domain_plugin`.
        #[arg(long)]
        domain_plugin: Option<String>,
        /// `n_params` of a benchmark function (its dimension).
        #[arg(long)]
        dims: Option<usize>,
        /// `optimization_plugin`: `auto` (the node's default), `shade`, `tpe`, `cma-es`, `ga` or
        /// `plugin:COMMAND`.
        #[arg(long, default_value = "auto")]
        optimizer: String,
        /// The target performance (the domain's own direction: accuracy up, loss down).
        #[arg(long, default_value_t = 0.97)]
        target: f64,
        /// Seeds (runs).
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// The first seed (runs use `first-seed .. first-seed + seeds`).
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        /// Evaluations per run at most.
        #[arg(long, default_value_t = 500)]
        budget: usize,
        /// Worker threads evaluating a batch.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// After each seed's (cold) run, a second run of the domain (another optimizer seed)
        /// warm-started from an experiment cube holding the first run's rounds, as a node
        /// restarted with `olap_db_path` starts: the evaluations both needed.
        #[arg(long)]
        warm_start: bool,
    },
    /// Runs N in-process nodes over libp2p's memory transport and publishes messages from
    /// random nodes: DOIN's gossipsub, then a flooding baseline on the same topology.
    Gossip {
        /// Nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Messages.
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// Topology and publisher seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// `doin bench flood`: what a gossip flood costs honest claims. Each round runs two 4-node
/// devnets (rastrigin in 40 dimensions, an unreachable target, 10 s: hundreds of claims spread
/// over every seal slot) with `doin flood` running from their start — 10 000 signed bogus
/// messages from 1 000 throwaway keys at 1 000/s — aimed once at a bystander (`doin flood
/// --sink`, the control) and once at node 0. On a machine with two cores or more the nodes run
/// on the first core and the attacker on the last (`taskset`): a real attacker's CPU is not
/// the nodes', and on a shared core its signing and encryption slow the nodes' optimizers,
/// which changes how many claims are in flight and so the very time measured.
fn flood(rounds: usize, base_port: u16) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // This process (and the node processes it starts) on core 0.
    let pinned = cores >= 2
        && std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let attacker_core = (cores - 1).to_string();
    let spawn = |args: &[&str], out: std::process::Stdio| {
        let mut c = if pinned {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &attacker_core]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        c.args(args).stdout(out).stderr(std::process::Stdio::null()).spawn()
    };
    let (mut control, mut flooded) = (Vec::new(), Vec::new());
    let (mut claims, mut rejected, mut rss, mut cpu) = ([0u64; 2], 0u64, 0f64, [0f64; 2]);
    for round in 0..rounds {
        // The order alternates, so that whatever a first run leaves behind counts for both.
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for flood in order {
            let port = base_port + if flood { 10 } else { 0 };
            let sink_port = (port + 9).to_string();
            let mut sink = if flood {
                None
            } else {
                let args = ["flood", "--domain", "rastrigin", "--sink", &sink_port, "--timeout-s", "40"];
                Some(spawn(&args, std::process::Stdio::null())?)
            };
            let target = format!("127.0.0.1:{}", if flood { port + 1 } else { port + 9 });
            let mut flooder = spawn(
                &["flood", "--domain", "rastrigin", "--peer", &target, "--rate", "1000", "--timeout-s", "40"],
                std::process::Stdio::null(),
            )?;
            let mut args =
                crate::devnet::DevnetArgs::for_bench(4, "rastrigin".into(), 0, Some(-1.0), 10.0, port);
            args.until_target = false;
            args.optimization = vec!["n_params=40".into()];
            let s = crate::devnet::run_summary(args);
            let _ = flooder.wait();
            if let Some(sink) = sink.as_mut() {
                let _ = sink.kill();
                let _ = sink.wait();
            }
            let s = s?;
            let ms = s["claim_to_certificate_ms"]
                .as_f64()
                .ok_or_else(|| anyhow::anyhow!("no certified claim: {s}"))?;
            claims[usize::from(flood)] += s["certified_claims"].as_u64().unwrap_or(0);
            cpu[usize::from(flood)] +=
                s["cpu_s"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).sum::<f64>();
            if flood {
                flooded.push(ms);
                rejected +=
                    s["gossip_rejected"].as_array().map_or(0, |a| a.iter().filter_map(|v| v.as_u64()).sum());
                rss = s["rss_mb"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_f64())
                    .fold(rss, f64::max);
            } else {
                control.push(ms);
            }
            eprintln!(
                "bench flood: round {} of {rounds}, flood {}: {ms} ms",
                round + 1,
                if flood { "on the devnet" } else { "elsewhere" }
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (before, after) = (mean(&control), mean(&flooded));
    println!(
        "{}",
        serde_json::json!({
            "bench": "flood",
            "rounds": rounds,
            "attacker_on_its_own_core": pinned,
            "control_claim_to_certificate_ms": control,
            "flooded_claim_to_certificate_ms": flooded,
            "control_mean_ms": round3(before),
            "flooded_mean_ms": round3(after),
            "growth_pct": round3((after / before - 1.0) * 100.0),
            "certified_claims": {"control": claims[0], "flooded": claims[1]},
            // The nodes' CPU seconds, all rounds: what the flood costs them in work.
            "node_cpu_s": {"control": round3(cpu[0]), "flooded": round3(cpu[1])},
            "flood_rejected_by_nodes": rejected,
            "max_rss_mb_flooded": rss,
        })
    );
    Ok(())
}

pub(crate) fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Ledger { blocks, txs_per_block, accounts } => ledger(blocks, txs_per_block, accounts),
        Bench::Fl { seeds, rounds, update_mb } => fl::run(seeds, rounds, update_mb),
        Bench::Storage { blocks, txs_per_block, group, snapshot_accounts, dir } => {
            storage(blocks, txs_per_block, group, snapshot_accounts, &dir)
        }
        Bench::Gossip { nodes, messages, seed } => gossip(nodes, messages, seed),
        Bench::Join { accounts, dir } => join::join(accounts, &dir),
        Bench::Flood { rounds, base_port } => {
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            flood(rounds, base_port)
        }
        Bench::Optimize { seeds, dim } => optimize(seeds, dim),
        Bench::Inference { requests, updates } => inference::run(requests.max(1), updates.max(1)),
        Bench::Search {
            domain,
            domain_plugin,
            dims,
            optimizer,
            target,
            seeds,
            first_seed,
            budget,
            workers,
            warm_start,
        } => search(
            &domain,
            domain_plugin,
            dims,
            &optimizer,
            target,
            (first_seed, seeds, budget, workers),
            warm_start,
        ),
        Bench::Adversary { claims, flood, flood_keys, grind_commits, grind_tries } => {
            let started = std::time::Instant::now();
            let scale = doin_node::adversary::Scale { claims, flood, flood_keys, grind_commits, grind_tries };
            let report = doin_node::adversary::run(scale).map_err(anyhow::Error::msg)?;
            let mut line = report.json();
            line["wall_s"] = serde_json::json!(started.elapsed().as_secs_f64());
            println!("{line}");
            Ok(())
        }
        Bench::Devnet { nodes, evaluators_only, domain, target, timeout_s, base_port, runs, optimizer } => {
            if runs == 0 {
                bail!("--runs must be at least 1");
            }
            devnet(
                || {
                    let mut args = crate::devnet::DevnetArgs::for_bench(
                        nodes,
                        domain.clone(),
                        evaluators_only,
                        target,
                        timeout_s,
                        base_port,
                    );
                    args.optimizer.clone_from(&optimizer);
                    args
                },
                runs,
            )
        }
    }
}

/// A chain of `blocks` heartbeat blocks of `txs_per_block` signed transfers each, from `net`'s
/// genesis (not timed by callers).
fn transfer_chain(net: &mut TestNet, blocks: usize, txs_per_block: usize) -> anyhow::Result<Vec<Block>> {
    let accounts = net.keys.len();
    let mut nonces = vec![0u64; accounts];
    let mut chain: Vec<Block> = Vec::with_capacity(blocks);
    let mut next_sender = 0usize;
    for _ in 0..blocks {
        let mut txs = Vec::with_capacity(txs_per_block);
        for _ in 0..txs_per_block {
            let from = next_sender % accounts;
            let to = net.addr((from * 7 + 13) % accounts);
            next_sender += 1;
            txs.push(net.transfer(from, to, Amount(1_000 + from as u128), nonces[from]));
            nonces[from] += 1;
        }
        let timestamp_ms = net.state.meta().timestamp_ms + net.spec.params.max_block_interval_ms;
        let body = BlockBody { transactions: BoundedVec::try_from_vec(txs)?, ..Default::default() };
        let template = BlockTemplate { key: &net.keys[0], timestamp_ms, kind: BlockKind::Heartbeat, body };
        let (block, state, _) = build_block(&net.state, template).context("building a benchmark block")?;
        net.state = state;
        chain.push(block);
    }
    Ok(chain)
}

fn storage(
    blocks: usize,
    txs_per_block: usize,
    group: usize,
    snapshot_accounts: usize,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    if blocks == 0 || txs_per_block == 0 || group == 0 {
        bail!("--blocks, --txs-per-block and --group must be at least 1");
    }
    let work = tempfile::tempdir_in(dir)
        .with_context(|| format!("creating a work directory in {}", dir.display()))?;
    // Import: validation (signatures, state root) and durable group commits, from scratch.
    let mut net = TestNet::new(4_000, 0, 0);
    let chain = transfer_chain(&mut net, blocks, txs_per_block)?;
    let start = Instant::now();
    let mut store = ChainStore::open(&work.path().join("import.redb"), &net.spec, StoreOptions::default())?;
    store.import_many(&chain, group)?;
    let import_s = start.elapsed().as_secs_f64();
    anyhow::ensure!(store.tip().root() == net.state.root(), "imported state differs from the built chain");
    drop(store);

    // Snapshot of a large state: genesis with `snapshot_accounts` funded accounts.
    let mut spec = net.spec.clone();
    spec.allocations = (0..snapshot_accounts)
        .map(|i| Allocation {
            address: Address(*Hash::of(&(i as u64).to_le_bytes()).as_bytes()),
            balance: Amount(1 + i as u128),
        })
        .collect();
    let (state, genesis) = spec.build().map_err(|e| anyhow::anyhow!("{e}"))?;
    let snap = work.path().join("snapshot");
    let start = Instant::now();
    snapshot::export_state(&state, &genesis.header, genesis.hash(), &spec, &snap)?;
    let export_s = start.elapsed().as_secs_f64();
    drop(state);
    let (restored, report) = snapshot::import(
        &snap,
        &work.path().join("restored.redb"),
        Some(genesis.hash()),
        StoreOptions::default(),
    )?;
    anyhow::ensure!(restored.tip().root() == genesis.header.state_root, "restored root differs");
    let txs = (blocks * txs_per_block) as f64;
    let line = serde_json::json!({
        "bench": "storage",
        "blocks": blocks,
        "txs": blocks * txs_per_block,
        "group": group,
        "import_s": round3(import_s),
        "import_tx_per_s": (txs / import_s).round(),
        "import_blocks_per_s": round3(blocks as f64 / import_s),
        "snapshot_accounts": snapshot_accounts,
        "snapshot_records": report.records,
        "snapshot_mb": round3(report.bytes as f64 / 1e6),
        "snapshot_export_s": round3(export_s),
        "snapshot_restore_s": round3(report.seconds),
        "snapshot_restore_mb_per_s": round3(report.bytes as f64 / 1e6 / report.seconds),
    });
    println!("{line}");
    Ok(())
}

fn gossip(nodes: usize, messages: usize, seed: u64) -> anyhow::Result<()> {
    if nodes < 2 || messages == 0 {
        bail!("--nodes must be at least 2 and --messages at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (g, f) = runtime.block_on(async {
        let g = doin_net::bench::run_gossipsub(nodes, messages, seed).await.map_err(anyhow::Error::msg)?;
        let f = doin_net::bench::run_flooding(nodes, messages, seed).await.map_err(anyhow::Error::msg)?;
        anyhow::Ok((g, f))
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    let line = serde_json::json!({
        "bench": "gossip",
        "nodes": nodes,
        "messages": messages,
        "delivery_ratio": round3(g.delivery_ratio),
        "p50_ms": round3(g.p50_ms),
        "p99_ms": round3(g.p99_ms),
        "transmissions_per_delivery": round3(g.transmissions_per_delivery),
        "flooding": {
            "delivery_ratio": round3(f.delivery_ratio),
            "p50_ms": round3(f.p50_ms),
            "p99_ms": round3(f.p99_ms),
            "transmissions_per_delivery": round3(f.transmissions_per_delivery),
        },
    });
    println!("{line}");
    Ok(())
}

/// `doin bench search`: evaluations to a target, one node, no network.
fn search(
    domain_id: &str,
    domain_plugin: Option<String>,
    dims: Option<usize>,
    optimizer: &str,
    target: f64,
    (first_seed, seeds, budget, workers): (u64, u64, usize, usize),
    warm_start: bool,
) -> anyhow::Result<()> {
    use doin_node::config::DomainConfig;
    use doin_optimize::driver::{NoHooks, RunConfig, run};
    if seeds == 0 || budget == 0 || workers == 0 {
        bail!("--seeds, --budget and --workers must be at least 1");
    }
    let mut config = DomainConfig {
        domain_id: domain_id.to_owned(),
        domain_plugin,
        optimization_plugin: Some(optimizer.to_owned()),
        ..DomainConfig::default()
    };
    if let Some(d) = dims {
        config.optimization_config.insert("n_params".into(), serde_json::json!(d));
    }
    let domain = doin_node::domains::build(&config).map_err(anyhow::Error::msg)?;
    // The optimizer minimizes the domain's loss; the target in the domain's own terms.
    let target_loss = if domain.higher_is_better() { -target } else { target };
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    // Evaluations to the target per seed (`usize::MAX`: not reached), for the medians.
    let (mut reached, mut warm_reached): (Vec<usize>, Vec<usize>) = Default::default();
    let mut kind = String::new();
    let Some(end) = first_seed.checked_add(seeds) else { bail!("--first-seed + --seeds overflows") };
    let cubes = tempfile::tempdir()?;
    // One run: the evaluations it needed (`usize::MAX`: missed), and its record.
    let mut one =
        |seed: u64, priors: &[doin_tracking::PriorTrial], record: Option<&mut Vec<doin_tracking::Round>>| {
            let mut opt = doin_node::optimizer::build_optimizer(
                domain.as_ref(),
                &config,
                seed,
                doin_node::optimizer::Place::ALONE,
            )
            .map_err(anyhow::Error::msg)?;
            let taught: u64 = doin_node::optimizer::warm_start(opt.as_mut(), domain.as_ref(), priors)
                .iter()
                .map(|w| w.trials)
                .sum();
            let batch = doin_node::optimizer::population_of(
                domain.as_ref(),
                &config,
                workers,
                doin_node::optimizer::Place::ALONE,
            )
            .clamp(1, workers);
            let mut recorder = Recorder { inner: opt.as_mut(), rounds: Vec::new() };
            let r = run(
                domain.as_ref(),
                &mut recorder,
                RunConfig { budget, batch, workers, target_loss: Some(target_loss), ..RunConfig::default() },
                &mut NoHooks,
            );
            if let Some(record) = record {
                *record = recorder.rounds(domain.as_ref());
            }
            kind = opt.kind().to_owned();
            let hit = r.best_loss <= target_loss;
            let line = serde_json::json!({
                "seed": seed,
                "ran": opt.kind(),
                "evaluations": r.evaluations,
                "reached": hit,
                "best": if domain.higher_is_better() { -r.best_loss } else { r.best_loss },
                "prior_trials": taught,
            });
            anyhow::Ok((if hit { r.evaluations } else { usize::MAX }, line))
        };
    for seed in first_seed..end {
        let mut rounds = Vec::new();
        let (evaluations, mut line) = one(seed, &[], warm_start.then_some(&mut rounds))?;
        // Progress on stderr (a run of mlp_digits takes a minute): the JSON line comes at the end.
        let said = |e: usize| if e == usize::MAX { "missed".to_owned() } else { format!("{e} evaluations") };
        eprint!("seed {seed}: {}", said(evaluations));
        reached.push(evaluations);
        if warm_start {
            // The node's path: the rounds go into a cube, a restarted node's warm start reads
            // them back (`Olap::prior_trials`) and teaches its optimizer.
            let cube = cubes.path().join(format!("seed-{seed}.db"));
            let priors = record_cube(&cube, domain_id, optimizer, &rounds)?;
            let (warm, warm_line) = one(seed.wrapping_add(1 << 32), &priors, None)?;
            eprint!(", warm-started from its {} rounds: {}", priors.len(), said(warm));
            warm_reached.push(warm);
            line["warm"] = warm_line;
        }
        eprintln!();
        runs.push(line);
    }
    let median = |v: &mut Vec<usize>| {
        v.sort_unstable();
        let m = v.get(v.len() / 2).copied().filter(|e| *e != usize::MAX);
        (m, v.iter().filter(|e| **e != usize::MAX).count())
    };
    let ((cold, cold_n), (warm, warm_n)) = (median(&mut reached), median(&mut warm_reached));
    let mut line = serde_json::json!({
        "bench": "search",
        "domain": domain_id,
        "optimizer": optimizer,
        "ran": kind,
        "target": target,
        "budget": budget,
        "workers": workers,
        "median_evaluations_to_target": cold,
        "reached": cold_n,
        "runs": runs,
        "wall_s": round3(started.elapsed().as_secs_f64()),
    });
    if warm_start {
        line["warm_median_evaluations_to_target"] = warm.into();
        line["warm_reached"] = warm_n.into();
    }
    println!("{line}");
    Ok(())
}

/// Writes `rounds` of one experiment into a fresh cube at `path` and reads back the prior
/// trials a node restarted on it would start `domain` from.
fn record_cube(
    path: &std::path::Path,
    domain: &str,
    optimizer: &str,
    rounds: &[doin_tracking::Round],
) -> anyhow::Result<Vec<doin_tracking::PriorTrial>> {
    use doin_tracking::olap::Olap;
    let experiment = doin_tracking::Experiment {
        experiment_id: "bench-cold-run".into(),
        domain_id: domain.into(),
        optimizer_plugin: optimizer.into(),
        ..Default::default()
    };
    let mut olap = Olap::open(path)?;
    olap.record_experiment(&experiment)?;
    let rows: Vec<_> = rounds.iter().map(|r| (&experiment, r)).collect();
    olap.record_rounds(&rows)?;
    drop(olap);
    Ok(Olap::prior_trials(path, domain, doin_node::optimizer::WARM_START_TRIALS)?)
}

/// An optimizer that remembers each told batch's best, as the node's loop records one round
/// per batch in the experiment cube.
struct Recorder<'a> {
    inner: &'a mut dyn doin_optimize::Optimizer,
    rounds: Vec<doin_optimize::Evaluated>,
}

impl Recorder<'_> {
    /// The recorded batches as the cube's rounds (parameters by the domain's space, the
    /// performance in the domain's direction).
    fn rounds(&self, domain: &dyn doin_optimize::domain::Domain) -> Vec<doin_tracking::Round> {
        let sign = if domain.higher_is_better() { -1.0 } else { 1.0 };
        (1..)
            .zip(&self.rounds)
            .map(|(n, e)| doin_tracking::Round {
                experiment_id: "bench-cold-run".into(),
                round_number: n,
                timestamp_ms: n,
                performance: Some(sign * e.loss),
                parameters: doin_plugin::adapters::values_to_json(&domain.space().decode(&e.x)).to_string(),
                ..Default::default()
            })
            .collect()
    }
}

impl doin_optimize::Optimizer for Recorder<'_> {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        self.inner.ask(n)
    }
    fn tell(&mut self, results: &[doin_optimize::Evaluated]) {
        if let Some(best) =
            results.iter().filter(|e| e.loss.is_finite()).min_by(|a, b| a.loss.total_cmp(&b.loss))
        {
            self.rounds.push(best.clone());
        }
        self.inner.tell(results);
    }
    fn inject(&mut self, migrant: doin_optimize::Evaluated) {
        self.inner.inject(migrant);
    }
    fn best(&self) -> Option<&doin_optimize::Evaluated> {
        self.inner.best()
    }
    fn stage(&self) -> u32 {
        self.inner.stage()
    }
    fn hook(&mut self, event: &doin_optimize::Hook) {
        self.inner.hook(event);
    }
    fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), doin_optimize::SnapshotError> {
        self.inner.restore(bytes)
    }
}

fn optimize(seeds: u64, dim: usize) -> anyhow::Result<()> {
    use doin_optimize::{
        bench::{self, Algorithm},
        functions::Function,
    };
    if seeds == 0 || dim < 2 {
        bail!("--seeds must be at least 1 and --dim at least 2");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut line =
        serde_json::json!({ "bench": "optimize", "dim": dim, "runs": seeds, "budget": 10_000 * dim });
    for f in [Function::Sphere, Function::Ackley, Function::Rastrigin, Function::Rosenbrock] {
        let mut by = serde_json::Map::new();
        let mut best = (0usize, "");
        for a in Algorithm::ALL {
            let errors = bench::cec_runs(a, f, dim, 10_000 * dim, seeds, threads);
            let solved = errors.iter().filter(|e| **e < bench::SOLVED).count();
            by.insert(a.name().to_owned(), solved.into());
            if solved > best.0 || best.1.is_empty() {
                best = (solved, a.name());
            }
        }
        line[format!("{}_solved", f.name())] = best.0.into();
        line[format!("{}_best", f.name())] = best.1.into();
        line[format!("{}_by_optimizer", f.name())] = by.into();
    }
    line["overhead_ns_per_eval"] = round3(bench::overhead_ns_per_eval(1_000_000)).into();
    // The model-based optimizer's cost per proposal against its history (7 dimensions, as
    // mlp_digits): linear in the history, bounded by its cap.
    for history in [100, 300, 1_000] {
        line[format!("tpe_us_per_proposal_h{history}")] =
            round3(bench::tpe_ns_per_proposal(7, history, 200) / 1_000.0).into();
    }
    // Islands: 4 SHADE populations with ring migration vs one, the same total budget
    // (4 × 10 000 × D), 10-D Rastrigin.
    let (budget, runs) = (4 * 10_000 * 10, seeds.min(20));
    let single: Vec<_> =
        (0..runs).map(|s| bench::islands_to_target(Function::Rastrigin, 10, 1, budget, s)).collect();
    let island: Vec<_> =
        (0..runs).map(|s| bench::islands_to_target(Function::Rastrigin, 10, 4, budget, s)).collect();
    let mean = |v: &[Option<bench::IslandRun>]| {
        let ok: Vec<f64> = v.iter().flatten().map(|r| r.per_island as f64).collect();
        if ok.is_empty() { f64::INFINITY } else { ok.iter().sum::<f64>() / ok.len() as f64 }
    };
    line["island_success"] = island.iter().flatten().count().into();
    line["single_success"] = single.iter().flatten().count().into();
    line["island_runs"] = runs.into();
    // Evaluations each island performs before the archipelago is solved, against one
    // population's: the wall-clock gain when every island has its own machine.
    line["island_speedup"] = round3(mean(&single) / mean(&island)).into();
    // The MLP domain's training speed: 64-128-128-10 on the digits set, batch 64.
    let mlp = doin_ml::MlpClassifier::new(5).map_err(anyhow::Error::msg)?;
    let config = doin_ml::net::TrainConfig {
        hidden: vec![128, 128],
        dropout: 0.0,
        learning_rate: 1e-3,
        weight_decay: 1e-4,
        batch_size: 64,
        epochs: 10,
        early_patience: u32::MAX,
        seed: 1,
    };
    line["mlp_train_samples_per_s"] = mlp.throughput(&config)?.round().into();
    println!("{line}");
    Ok(())
}

fn devnet(args: impl Fn() -> crate::devnet::DevnetArgs, runs: usize) -> anyhow::Result<()> {
    let mut lines = Vec::with_capacity(runs);
    for run in 0..runs {
        let a = args();
        let optimizer = a.optimizer.clone().unwrap_or_else(|| doin_node::optimizer::DEFAULT_OPTIMIZER.into());
        let s = crate::devnet::run_summary(a)?;
        let nums = |k: &str| -> Vec<f64> {
            s[k].as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default()
        };
        let (cpu, eval, mut rss, tracking) =
            (nums("cpu_s"), nums("eval_s"), nums("rss_mb"), nums("tracking_s"));
        rss.sort_by(f64::total_cmp);
        let total: f64 = cpu.iter().sum();
        let line = serde_json::json!({
            "bench": "devnet",
            "nodes": s["nodes"],
            "domain": s["domain"],
            "optimizer": optimizer,
            "target": s["target"],
            "time_to_target_s": s["time_to_target_s"],
            "blocks": s["blocks"],
            "accepted": s["accepted"],
            "rejected": s["rejected"],
            "same_tip": s["same_tip"],
            "verification_cpu_fraction": if total > 0.0 { Some(round3(eval.iter().sum::<f64>() / total)) } else { None },
            "idle_rss_mb": rss.get(rss.len() / 2).copied(),
            "evals_per_node_to_target": s["evals_per_node_to_target"],
            "evals_by_node": s["evals_by_node"],
            "spent_per_node_to_target": s["spent_per_node_to_target"],
            "evals_per_node_to_claim": s["evals_per_node_to_claim"],
            "claim_evals_by_node": s["claim_evals_by_node"],
            "commits": s["commits"],
            "votes": s["votes"],
            "escalations": s["escalations"],
            // Experiment tracking's thread CPU over all node CPU (CSV + SQLite, every round).
            "tracking_cpu_fraction": if total > 0.0 { Some(round4(tracking.iter().sum::<f64>() / total)) } else { None },
        });
        if runs > 1 {
            eprintln!("bench devnet: run {} of {runs}: {line}", run + 1);
        }
        lines.push(line);
    }
    let Some(first) = lines.first() else { bail!("no runs") };
    let mut out = first.clone();
    if runs > 1 {
        // Medians over the runs and every run's own figure. A run that missed the target has no
        // time (counted as the worst); its evaluations are those made by the stop (a lower bound).
        out["runs"] = runs.into();
        for key in [
            "time_to_target_s",
            "evals_per_node_to_target",
            "evals_per_node_to_claim",
            "verification_cpu_fraction",
            "idle_rss_mb",
            "tracking_cpu_fraction",
        ] {
            let per_run: Vec<serde_json::Value> = lines.iter().map(|l| l[key].clone()).collect();
            let mut values: Vec<f64> = per_run.iter().map(|v| v.as_f64().unwrap_or(f64::INFINITY)).collect();
            values.sort_by(f64::total_cmp);
            let median = values[values.len() / 2];
            out[key] = if median.is_finite() { round3(median).into() } else { serde_json::Value::Null };
            out[format!("{key}_runs")] = per_run.into();
        }
        for key in [
            "blocks",
            "accepted",
            "rejected",
            "evals_by_node",
            "claim_evals_by_node",
            "spent_per_node_to_target",
        ] {
            out[key] = lines.iter().map(|l| l[key].clone()).collect::<Vec<_>>().into();
        }
        out["same_tip"] = lines.iter().all(|l| l["same_tip"] == true).into();
    }
    println!("{out}");
    Ok(())
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ledger(blocks: usize, txs_per_block: usize, accounts: usize) -> anyhow::Result<()> {
    if blocks == 0 || txs_per_block == 0 || accounts < 2 {
        bail!("--blocks and --txs-per-block must be at least 1 and --accounts at least 2");
    }
    // No stakers: anyone may produce heartbeat blocks, so the chain is only transfers.
    let mut net = TestNet::new(accounts, 0, 0);
    let genesis_state = net.state.clone();
    let chain = transfer_chain(&mut net, blocks, txs_per_block)?;

    // Measured: full validation and application, one thread.
    let mut state = genesis_state;
    let start = Instant::now();
    for block in &chain {
        let (next, _) = apply_block(&state, block).context("applying a benchmark block")?;
        state = next;
    }
    let apply_s = start.elapsed().as_secs_f64();
    let txs = blocks * txs_per_block;

    // Raw batch verification of the same signatures, in the same batch sizes.
    let batches: Vec<Vec<SignatureItem>> = chain
        .iter()
        .map(|b| {
            b.body
                .transactions
                .iter()
                .map(|tx| SignatureItem {
                    signer: tx.sender,
                    message: SigTag::Transaction.message(&tx.id()),
                    signature: tx.signature,
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in &batches {
        verify_batch(batch).map_err(|i| anyhow::anyhow!("signature {i} failed in the benchmark"))?;
    }
    let verify_s = start.elapsed().as_secs_f64();

    let tx_per_s = txs as f64 / apply_s;
    let verify_batch_per_s = txs as f64 / verify_s;
    let line = serde_json::json!({
        "bench": "ledger",
        "blocks": blocks,
        "txs": txs,
        "txs_per_block": txs_per_block,
        "accounts": accounts,
        "tx_per_s": tx_per_s.round(),
        "verify_batch_per_s": verify_batch_per_s.round(),
        "ratio_to_verify": (tx_per_s / verify_batch_per_s * 1000.0).round() / 1000.0,
        "apply_s": (apply_s * 1000.0).round() / 1000.0,
        "state_root": state.root().to_string(),
        "tree_nodes": state.tree_nodes(),
    });
    println!("{line}");
    Ok(())
}
