//! `doin sim`: a deterministic, discrete-event simulation of N nodes following and producing one
//! chain over a simulated gossip network, in simulated time. Each producer's blocks come from
//! the node's own block producer (`doin_node::production::Production`, the engine's sans-I/O
//! core) and every block is applied by the real consensus code (`apply_block`); the slot rule
//! is checked on its own (a producer that produces out of its slot, or not in it, is a
//! violation). The network is a random mesh of degree `--mesh` (gossipsub's D) with
//! log-normal link latency and loss; perturbations crash and restart nodes (their chain kept),
//! partition and heal the network, slow a node's links tenfold, and skew clocks. Prints one
//! JSON line.
//!
//! What it models of a node is the chain-following core: fork choice, catching up on missing
//! ancestors from the peer that sent a block, block production, finality votes. With
//! `--optimizers K` it also runs the search (`search.rs`): K staked nodes optimize a built-in
//! domain registered at genesis with the node's own optimizer, and their claims ride the
//! simulated chain (`search/chain.rs`): the node's own claims core commits, the producers
//! include and seal the commits, every evaluator node runs the node's verification pipeline
//! (`doin_node::verification`) on its own tip, votes cross the mesh, certificates ride blocks,
//! and optimizers take the chain's champion in from their own tips.
//!
//! Everything comes from `--seed`: a run repeats bit for bit, and `digest` (of every block and
//! every node's final tip) is equal across two runs of one seed.
//!
//! Layout: this file holds the arguments, the state and the event loop; [`network`] the mesh,
//! block delivery and the perturbations; [`produce`] finality votes and block production;
//! [`search`] the optimizers and their shared trials; `search/chain.rs` the claims on chain.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    time::Instant,
};

use anyhow::Context;
use clap::Args;
use doin_consensus::{Allocation, GenesisSpec, GenesisStake, ProtocolParams, State, testkit};
use doin_node::{mempool::Mempool, production::Production};
use doin_primitives::{Amount, Checkpoint, FinalityVote, Hash, Keypair, Roles};

mod network;
use network::mesh;
mod produce;
mod search;

#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Staked nodes that produce blocks (the first ones).
    #[arg(long, default_value_t = 32)]
    producers: usize,
    /// Seed of everything random.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated seconds.
    #[arg(long, default_value_t = 600.0)]
    sim_seconds: f64,
    /// Mesh degree (gossipsub's D).
    #[arg(long, default_value_t = 6)]
    mesh: usize,
    /// Median one-way link latency, ms (log-normal, σ = 0.5).
    #[arg(long, default_value_t = 50.0)]
    latency_ms: f64,
    /// Share of transmissions lost.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Mean seconds between perturbations (0: none). The last 20 % of the run is calm, so that
    /// the network can settle before it is judged.
    #[arg(long, default_value_t = 10.0)]
    perturb_every_s: f64,
    /// The chain's `max_block_interval`, s (a heartbeat at most this long after its parent).
    #[arg(long, default_value_t = 5.0)]
    block_interval_s: f64,
    /// Optimizers and their verification (`--optimizers K` turns the search on).
    #[command(flatten)]
    search: search::SearchArgs,
    /// A deliberate defect, to show the safety checks catch it (tests of the checker):
    /// `rubber-stamp` (evaluators accept every claim unmeasured), `deaf-node` (node 0 ignores
    /// every block from others), `equivocate` (40 % of the producers vote finality on every
    /// branch, as if without slashing protection), `eager-producer` (node 0's producer acts as
    /// if it led every heartbeat slot).
    #[arg(long, hide = true, value_parser = ["rubber-stamp", "deaf-node", "equivocate", "eager-producer"])]
    fault: Option<String>,
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Log-normal with this median and σ (Box–Muller).
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }
}

struct Blk {
    hash: Hash,
    parent: usize,
    height: u64,
    work: u128,
    produced_ms: u64,
    state: State,
}

struct Node {
    tip: usize,
    seen: Vec<u64>,
    up: bool,
    skew_ms: i64,
    /// The newest finalized checkpoint this node's tip has seen (it must never be reverted).
    finalized: Checkpoint,
    /// The newest checkpoint this node voted for (its slashing protection: it never votes for
    /// a target again, nor for a lower one).
    voted: u64,
    /// Until when (sim ms) this node's links are 10× slower (a congested or distant node).
    slow_until: u64,
    side: u8,
    peers: Vec<u32>,
    /// The node's block producer ([`Production`]: the engine's own) and its mempool.
    production: Production,
    mempool: Mempool,
}

impl Node {
    fn has(&self, b: usize) -> bool {
        self.seen.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0)
    }
    fn mark(&mut self, b: usize) {
        if self.seen.len() <= b / 64 {
            self.seen.resize(b / 64 + 1, 0);
        }
        self.seen[b / 64] |= 1 << (b % 64);
    }
}

/// Events: (time, sequence, kind, a, b, c). Kinds: 0 deliver block `b` to node `a` from node `c`
/// (`u32::MAX`: from no one in particular); 1 a producer's
/// slot timer; 2 restart node `a`; 3 heal; 4 a perturbation; 5 optimizer `a` finished an
/// evaluation; 6 a vote on claim `a` reaches its optimizer; 7 champion `b` reaches optimizer
/// `a`; 8 claim `a`'s quorum timer.
type Event = Reverse<(u64, u64, u8, u32, u32, u32)>;

struct Sim {
    args: SimArgs,
    rng: Rng,
    keys: Vec<Keypair>,
    blocks: Vec<Blk>,
    index: HashMap<Hash, usize>,
    nodes: Vec<Node>,
    queue: BinaryHeap<Event>,
    seq: u64,
    genesis_ms: u64,
    partitioned: bool,
    transmissions: u64,
    deliveries: u64,
    /// First-receipt delays, ms, in 1 ms buckets (the last bucket holds everything above).
    propagation: Vec<u64>,
    latencies: Vec<u64>,
    reorgs: u64,
    max_reorg: u64,
    perturbations: [u64; 6],
    violations: Vec<String>,
    /// Finality votes gossiped so far (the newest, bounded); producers include what the
    /// consensus inclusion rule takes for their chain.
    votes: std::collections::VecDeque<FinalityVote>,
    /// Every finalized checkpoint any block's state claims, by height: two hashes at one height
    /// are conflicting finality.
    finalized: HashMap<u64, Hash>,
    /// Better tips refused because they fork below the node's finalized checkpoint.
    below_finality: u64,
    /// Finality lag samples (tip height − finalized height of the producing node's new block).
    lags: Vec<u64>,
    /// Optimizers, claims and their verification (with `--optimizers`).
    search: Option<search::Search>,
    /// The instant that stands for simulated time 0 (producers take an `Instant`; only
    /// differences between them matter, so runs repeat).
    epoch: Instant,
}

const PROPAGATION_BUCKETS: usize = 60_000;

impl Sim {
    fn push(&mut self, at: u64, kind: u8, a: u32, b: u32) {
        self.push_from(at, kind, a, b, u32::MAX);
    }

    fn push_from(&mut self, at: u64, kind: u8, a: u32, b: u32, c: u32) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, kind, a, b, c)));
    }

    /// Whether `a` is a better tip than `b` (more work, then higher, then lower hash).
    fn better(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.blocks[a], &self.blocks[b]);
        (x.work, x.height, Reverse(x.hash)) > (y.work, y.height, Reverse(y.hash))
    }

    /// A search event (kinds 5–7) at `now`; what it asks for goes into the queue.
    fn search_event(&mut self, now: u64, kind: u8, a: usize, b: usize) {
        if (search::chain::COMMIT_AT..=search::chain::DUE).contains(&kind) {
            self.chain_event(now, kind, a, b);
            return;
        }
        let Some(s) = self.search.as_mut() else { return };
        let schedule = match kind {
            search::EVALUATED => {
                let up = self.nodes[s.node_of(a)].up;
                s.evaluated(a, now, up, &mut self.rng)
            }
            _ => {
                let up = self.nodes[s.node_of(b)].up;
                s.trials_reach(a as u32, b, up);
                Vec::new()
            }
        };
        for (delay, kind, a, b) in schedule {
            self.push(now + delay, kind, a, b);
        }
        if kind == search::EVALUATED {
            self.chain_claims(now);
        }
    }

    fn percentile(&self, q: f64) -> u64 {
        let total: u64 = self.propagation.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (ms, count) in self.propagation.iter().enumerate() {
            seen += count;
            if seen >= want.max(1) {
                return ms as u64;
            }
        }
        0
    }
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(args.mesh >= 2, "--mesh must be at least 2");
    let producers = args.producers.clamp(1, args.nodes);
    anyhow::ensure!(
        args.search.optimizers == 0 || producers + args.search.optimizers <= args.nodes,
        "--optimizers {} do not fit beside {producers} producers in {} nodes",
        args.search.optimizers,
        args.nodes
    );
    let search = if args.search.optimizers > 0 {
        let rubber_stamp = args.fault.as_deref() == Some("rubber-stamp");
        Some(search::Search::new(
            args.search.clone(),
            producers,
            producers,
            args.seed,
            rubber_stamp,
            // A message crosses the mesh in about log_D(N) hops.
            (args.latency_ms, ((args.nodes as f64).ln() / (args.mesh as f64).ln()).ceil().max(1.0)),
        )?)
    } else {
        None
    };
    let wall = Instant::now();
    let mut rng = Rng(args.seed);
    let keys: Vec<Keypair> = (0..args.nodes).map(testkit::key).collect();
    let interval_ms = (args.block_interval_s * 1000.0) as u64;
    // With claims on the chain, the domain is registered at genesis, the producers evaluate it
    // and the optimizers are staked to optimize it (they produce blocks when they lead a slot).
    let domain = search
        .as_ref()
        .map(|s| -> anyhow::Result<_> {
            let id = doin_primitives::DomainId::new(&args.search.domain).map_err(anyhow::Error::msg)?;
            Ok((id.clone(), doin_primitives::DomainSpec { id, ..s.spec.clone() }))
        })
        .transpose()?;
    let staked = producers + if domain.is_some() { args.search.optimizers } else { 0 };
    let spec = GenesisSpec {
        chain_id: 99,
        timestamp_ms: 1_700_000_000_000,
        params: ProtocolParams {
            max_block_interval_ms: interval_ms,
            heartbeat_slot_ms: (interval_ms / 2).max(500),
            ..ProtocolParams::default()
        },
        allocations: keys
            .iter()
            .take(staked)
            .map(|k| Allocation { address: k.address(), balance: Amount::doin(1_000) })
            .collect(),
        stakes: keys
            .iter()
            .take(staked)
            .enumerate()
            .map(|(i, k)| GenesisStake {
                address: k.address(),
                amount: Amount::doin(if i < producers { 100 } else { 10 }),
                roles: if i < producers { Roles::EVALUATOR } else { Roles::OPTIMIZER },
                domains: domain.iter().map(|(id, _)| id.clone()).collect(),
            })
            .collect(),
        domains: domain
            .iter()
            .map(|(_, spec)| doin_consensus::GenesisDomain {
                spec: spec.clone(),
                bounty: Amount::doin(1_000),
            })
            .collect(),
    };
    let (state, genesis) = spec.build().context("the simulation's genesis")?;
    let peers = mesh(args.nodes, args.mesh, &mut rng);
    let end = (args.sim_seconds * 1000.0) as u64;
    let mut sim = Sim {
        rng,
        keys,
        blocks: vec![Blk {
            hash: genesis.hash(),
            parent: usize::MAX,
            height: 0,
            work: 0,
            produced_ms: 0,
            state,
        }],
        index: HashMap::new(),
        nodes: peers
            .into_iter()
            .map(|peers| Node {
                tip: 0,
                seen: vec![1],
                up: true,
                skew_ms: 0,
                finalized: Checkpoint::default(),
                voted: 0,
                slow_until: 0,
                side: 0,
                peers,
                production: Production::new(64),
                mempool: Mempool::new(64, 16),
            })
            .collect(),
        queue: BinaryHeap::new(),
        seq: 0,
        genesis_ms: spec.timestamp_ms,
        partitioned: false,
        transmissions: 0,
        deliveries: 0,
        propagation: vec![0; PROPAGATION_BUCKETS],
        latencies: Vec::new(),
        reorgs: 0,
        max_reorg: 0,
        perturbations: [0; 6],
        violations: Vec::new(),
        votes: std::collections::VecDeque::new(),
        finalized: HashMap::new(),
        lags: Vec::new(),
        below_finality: 0,
        search,
        epoch: Instant::now(),
        args,
    };
    if let Some((id, _)) = domain {
        let evaluators: Vec<doin_primitives::Address> =
            sim.keys.iter().take(producers).map(|k| k.address()).collect();
        let interval = std::time::Duration::from_millis(interval_ms);
        if let Some(s) = sim.search.as_mut() {
            s.chain = Some(search::chain::Chain::new(id, &evaluators, staked, interval, s));
        }
    }
    if let Some(s) = &sim.search {
        for (delay, kind, a, b) in s.start(&mut sim.rng) {
            sim.push(delay, kind, a, b);
        }
    }
    for n in 0..staked {
        let first = sim.rng.below(1000) as u64;
        sim.push(first, 1, n as u32, 0);
    }
    if sim.args.perturb_every_s > 0.0 {
        sim.push((sim.args.perturb_every_s * 1000.0) as u64, 4, 0, 0);
    }
    let (mut end, mut settling) = (end, false);
    while let Some(Reverse((at, _, kind, a, b, c))) = sim.queue.pop() {
        if at > end {
            break;
        }
        // At the target (with `--until-target`), one calm minute more: restarts and heals
        // still happen, no new perturbation, and the network settles before it is judged.
        if sim.args.search.until_target && !settling && sim.search.as_ref().is_some_and(|s| s.done) {
            settling = true;
            end = end.min(at + 60_000);
        }
        match kind {
            0 => sim.receive(at, a as usize, b as usize, (c != u32::MAX).then_some(c as usize)),
            1 => sim.tick(at, a as usize),
            2 => sim.restart(at, a as usize),
            3 => sim.heal(at),
            4 if !settling => sim.perturb(at, end),
            4 => {}
            _ => sim.search_event(at, kind, a as usize, b as usize),
        }
    }
    // Blocks already on the wire land (within 10 s; nothing new is produced): a block made a
    // moment before the end is not a divergence.
    while let Some(Reverse((at, _, kind, a, b, c))) = sim.queue.pop() {
        if kind == 0 && at <= end + 10_000 {
            sim.receive(at, a as usize, b as usize, (c != u32::MAX).then_some(c as usize));
        }
    }
    // Judged after the calm: every node that is up on one tip.
    let up: Vec<usize> = (0..sim.nodes.len()).filter(|n| sim.nodes[*n].up).collect();
    let tips: std::collections::BTreeSet<usize> = up.iter().map(|n| sim.nodes[*n].tip).collect();
    if tips.len() > 1 {
        let heights: Vec<u64> = tips.iter().map(|t| sim.blocks[*t].height).collect();
        sim.violations.push(format!("{} tips at the end (heights {heights:?})", tips.len()));
    }
    let best = (0..sim.blocks.len()).fold(0, |best, b| if sim.better(b, best) { b } else { best });
    let mut canonical = 0;
    let mut x = best;
    while x != usize::MAX {
        canonical += 1;
        x = sim.blocks[x].parent;
    }
    let mut digest = blake3::Hasher::new();
    for b in &sim.blocks {
        digest.update(&b.hash.0);
    }
    for n in &sim.nodes {
        digest.update(&(n.tip as u64).to_le_bytes());
    }
    if let Some(s) = &sim.search {
        digest.update(s.digest.finalize().as_bytes());
        if s.figures.accepted_fakes > 0 {
            sim.violations.push(format!("{} fake claims accepted", s.figures.accepted_fakes));
        }
    }
    let mut lags = sim.lags.clone();
    lags.sort_unstable();
    let mut lat = sim.latencies.clone();
    lat.sort_unstable();
    let p = sim.perturbations;
    let expected = (sim.blocks.len() as u64).saturating_sub(1) * sim.nodes.len() as u64;
    println!(
        "{}",
        serde_json::json!({
            "sim": true,
            "nodes": sim.nodes.len(),
            "producers": producers,
            "seed": sim.args.seed,
            "sim_s": end as f64 / 1000.0,
            "wall_s": wall.elapsed().as_secs_f64(),
            "blocks": sim.blocks.len() - 1,
            "canonical_height": canonical - 1,
            "forks": sim.blocks.len() - canonical,
            "reorgs": sim.reorgs,
            "max_reorg_depth": sim.max_reorg,
            "delivery_ratio": if expected == 0 { 1.0 } else { sim.deliveries as f64 / expected as f64 },
            "transmissions_per_delivery": sim.transmissions as f64 / sim.deliveries.max(1) as f64,
            "p50_propagation_ms": sim.percentile(0.5),
            "p99_propagation_ms": sim.percentile(0.99),
            "link_latency_median_ms": lat.get(lat.len() / 2).copied().unwrap_or(0),
            "perturbations": p.iter().sum::<u64>(),
            "perturbations_by_kind": { "crash": p[0], "restart": p[1], "partition": p[2], "heal": p[3], "clock_skew": p[4], "delay": p[5] },
            "finalized_height": sim.blocks[best].state.meta().finalized.height,
            "finality_lag_blocks": { "median": lags.get(lags.len() / 2).copied().unwrap_or(0), "max": lags.last().copied().unwrap_or(0) },
            "refused_below_finality": sim.below_finality,
            "safety_violations": sim.violations.len(),
            "violations": sim.violations.iter().take(5).collect::<Vec<_>>(),
            "digest": digest.finalize().to_hex().to_string(),
            "search": sim.search.as_ref().map(|s| s.json(end)),
            "modelled": "chain following and finality votes with the real consensus code, block production by the node's own producer (finality votes reach producers at once); optimizers with the node's optimizer and trial book; claims by the node's own claims, production and verification cores and the consensus rules, their messages other than blocks as one delay across the mesh",
        })
    );
    Ok(())
}
