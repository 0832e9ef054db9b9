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

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    time::Instant,
};

use anyhow::Context;
use clap::Args;
use doin_consensus::{
    Allocation, GenesisSpec, GenesisStake, ProtocolParams, State, apply_block, heartbeat_leader,
    heartbeat_slot, testkit,
};
use doin_node::{mempool::Mempool, production::Production};
use doin_primitives::{
    Amount, BlockKind, Checkpoint, FinalityVote, FinalityVoteBody, Hash, Keypair, Roles, Signed,
};

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

    /// Sends block `b` from node `from` to its mesh peers (but `except`).
    fn gossip(&mut self, now: u64, from: usize, b: usize, except: Option<usize>) {
        let peers = self.nodes[from].peers.clone();
        for p in peers {
            let p = p as usize;
            if Some(p) == except {
                continue;
            }
            self.transmissions += 1;
            if self.rng.unit() < self.args.loss
                || (self.partitioned && self.nodes[p].side != self.nodes[from].side)
            {
                continue;
            }
            let mut ms = self.rng.lognormal(self.args.latency_ms, 0.5).max(1.0) as u64;
            if self.nodes[p].slow_until > now || self.nodes[from].slow_until > now {
                ms *= 10;
            }
            if self.latencies.len() < 100_000 {
                self.latencies.push(ms);
            }
            self.push_from(now + ms, 0, p as u32, b as u32, from as u32);
        }
    }

    /// Node `n` receives block `b` at `now` (from `from`): catch up on its ancestors, adopt it
    /// if it is the better tip, forward it.
    fn receive(&mut self, now: u64, n: usize, b: usize, from: Option<usize>) {
        if !self.nodes[n].up || self.nodes[n].has(b) {
            return;
        }
        if n == 0 && from.is_some() && self.args.fault.as_deref() == Some("deaf-node") {
            return;
        }
        self.deliveries += 1;
        let delay = now.saturating_sub(self.blocks[b].produced_ms) as usize;
        self.propagation[delay.min(PROPAGATION_BUCKETS - 1)] += 1;
        // Missing ancestors come from the sender (sync), all at once.
        let mut x = b;
        while x != usize::MAX && !self.nodes[n].has(x) {
            self.nodes[n].mark(x);
            x = self.blocks[x].parent;
        }
        let old = self.nodes[n].tip;
        // Like the chain store, never move to a chain that forks below the finalized checkpoint.
        if self.better(b, old) && !self.on_chain(b, self.nodes[n].finalized) {
            self.below_finality += 1;
        } else if self.better(b, old) {
            // A switch that does not extend the old tip is a reorg of its depth.
            let ancestor = self.common_ancestor(old, b);
            let depth = self.blocks[old].height - self.blocks[ancestor].height;
            if depth > 0 {
                self.reorgs += 1;
                self.max_reorg = self.max_reorg.max(depth);
            }
            self.nodes[n].tip = b;
            self.follow_finality(n, b);
            self.chain_on_tip(now, n);
        }
        self.gossip(now, n, b, from);
    }

    /// Whether checkpoint `c` is on the chain of block `b`.
    fn on_chain(&self, b: usize, c: Checkpoint) -> bool {
        let mut x = b;
        while x != usize::MAX && self.blocks[x].height > c.height {
            x = self.blocks[x].parent;
        }
        c.height == 0 || (x != usize::MAX && self.blocks[x].hash == c.hash)
    }

    /// Node `n` moved to tip `b` (which `receive` checked holds its finalized checkpoint).
    fn follow_finality(&mut self, n: usize, b: usize) {
        let old = self.nodes[n].finalized;
        let new = self.blocks[b].state.meta().finalized;
        if new.height > old.height {
            self.nodes[n].finalized = new;
        }
    }

    /// Staker `n`'s finality vote on its tip, if one is due (the node's `Voter`: once its chain
    /// is 2 blocks past a checkpoint, from the justified checkpoint, never twice for a target).
    /// Under the `equivocate` fault, the first 40 % of the producers vote on every producer's
    /// tip, conflicting targets included (no slashing protection).
    fn vote(&mut self, n: usize) {
        let producers = self.args.producers.clamp(1, self.nodes.len());
        if self.args.fault.as_deref() == Some("equivocate") && n * 5 < producers * 2 {
            let mut tips: Vec<usize> = (0..producers).map(|p| self.nodes[p].tip).collect();
            tips.sort_unstable();
            tips.dedup();
            for tip in tips {
                self.vote_on(n, tip, true);
            }
            return;
        }
        self.vote_on(n, self.nodes[n].tip, false);
    }

    fn vote_on(&mut self, n: usize, tip: usize, equivocate: bool) {
        let state = &self.blocks[tip].state;
        let Some(target) = doin_consensus::finality::checkpoint_below(state, state.height(), 2) else {
            return;
        };
        let source = state.meta().justified;
        if target == 0 || target <= source.height || (!equivocate && target <= self.nodes[n].voted) {
            return;
        }
        let Some(hash) = state.recent_hash_at(target) else { return };
        let body = FinalityVoteBody {
            chain_id: state.meta().chain_id,
            voter: self.keys[n].address(),
            source,
            target: Checkpoint { height: target, hash },
        };
        if equivocate && self.votes.iter().any(|v| v.body == body) {
            return;
        }
        self.nodes[n].voted = self.nodes[n].voted.max(target);
        if self.votes.len() >= 4096 {
            self.votes.pop_front();
        }
        self.votes.push_back(Signed::sign(body, &self.keys[n]));
    }

    fn common_ancestor(&self, mut a: usize, mut b: usize) -> usize {
        while a != b {
            if self.blocks[a].height >= self.blocks[b].height {
                a = self.blocks[a].parent;
            } else {
                b = self.blocks[b].parent;
            }
            if a == usize::MAX || b == usize::MAX {
                return 0;
            }
        }
        a
    }

    /// A producer's slot timer: a heartbeat if the chain at its tip is idle long enough and it
    /// leads the slot; with claims on the chain, every half second (as the node's producer is
    /// poked), blocks that include and seal commits or carry certificates too.
    fn tick(&mut self, now: u64, n: usize) {
        let chain = self.search.as_ref().is_some_and(|s| s.chain.is_some());
        let slot_ms = if chain { 500 } else { self.blocks[0].state.params().heartbeat_slot_ms.max(1) };
        self.push(now + slot_ms, 1, n as u32, 0);
        if !self.nodes[n].up {
            return;
        }
        self.vote(n);
        let tip = self.nodes[n].tip;
        let ts = (self.genesis_ms + now).saturating_add_signed(self.nodes[n].skew_ms);
        let idle = {
            let state = &self.blocks[tip].state;
            ts >= state.meta().timestamp_ms + state.params().max_block_interval_ms
        };
        if !idle && !chain {
            return;
        }
        if chain {
            self.chain_before_produce(n);
        }
        let state = &self.blocks[tip].state;
        // The node's own producer decides and builds; the slot rules, checked here on their
        // own, say whether it had to.
        let leads = idle
            && heartbeat_slot(state, ts)
                .is_some_and(|slot| heartbeat_leader(state, slot) == Some(self.keys[n].address()));
        let instant = self.epoch + std::time::Duration::from_millis(now);
        // The `eager-producer` fault: node 0's producer believes it leads every slot (it
        // produces with the slot leader's key, as a producer with a broken slot rule would).
        let key = match heartbeat_slot(state, ts).and_then(|slot| heartbeat_leader(state, slot)) {
            Some(leader) if n == 0 && self.args.fault.as_deref() == Some("eager-producer") => {
                self.keys.iter().find(|k| k.address() == leader).unwrap_or(&self.keys[n])
            }
            _ => &self.keys[n],
        };
        let votes = self.votes.make_contiguous();
        let node = &mut self.nodes[n];
        let produced = node.production.produce(state, key, ts, instant, &mut node.mempool, votes);
        let sealing = state.meta().commits_in_tip > 0;
        let block = match produced.block {
            Some(block) => {
                let body = &block.body;
                let plain = body.commits.is_empty() && body.certificates.is_empty() && !sealing;
                if plain && !leads {
                    self.violations
                        .push(format!("node {n} produced {} out of its slot at {now} ms", block.hash()));
                    return;
                }
                if (!body.commits.is_empty() || sealing)
                    && !doin_consensus::commits::may_seal(
                        state,
                        &self.keys[n].address(),
                        ts,
                        body.commits.len(),
                    )
                {
                    self.violations.push(format!(
                        "node {n} included or sealed commits out of its seal slot at {now} ms"
                    ));
                    return;
                }
                block
            }
            None if leads && !sealing => {
                self.violations.push(format!("node {n} led its slot at {now} ms and produced nothing"));
                return;
            }
            None => {
                if chain {
                    self.chain_forget(n, &produced.forgotten);
                }
                return;
            }
        };
        // What every validator does with it.
        let next = match apply_block(state, &block) {
            Ok((next, _)) if chain || block.header.body.kind == BlockKind::Heartbeat => next,
            Ok(_) => {
                self.violations.push(format!("block {} of an idle chain is not a heartbeat", block.hash()));
                return;
            }
            Err(e) => {
                self.violations.push(format!("an honest block was refused: {e}"));
                return;
            }
        };
        if next.accounted_supply() != Some(next.meta().supply.minted.0) {
            self.violations.push(format!("coins not conserved at height {}", next.height()));
        }
        let fin = next.meta().finalized;
        if fin.height > 0 {
            match self.finalized.get(&fin.height) {
                Some(h) if *h != fin.hash => {
                    self.violations.push(format!("conflicting finalized blocks at height {}", fin.height));
                }
                _ => {
                    self.finalized.insert(fin.height, fin.hash);
                }
            }
        }
        self.lags.push(next.height().saturating_sub(fin.height));
        if chain {
            self.chain_forget(n, &produced.forgotten);
            self.chain_on_block(now, &block, &next);
        }
        let hash = block.hash();
        let b = self.blocks.len();
        self.index.insert(hash, b);
        self.blocks.push(Blk {
            hash,
            parent: tip,
            height: block.header.body.height,
            work: block.header.body.cumulative_work,
            produced_ms: now,
            state: next,
        });
        self.receive(now, n, b, None);
    }

    /// A random perturbation at `now` (none in the calm last 20 % of the run).
    fn perturb(&mut self, now: u64, end: u64) {
        let mean = (self.args.perturb_every_s * 1000.0) as u64;
        let next = now + (self.rng.unit() * 2.0 * mean as f64) as u64 + 1;
        // The last perturbation's heal (≤ 60 s) and restart (≤ 30 s) also come before the calm.
        if next + 60_000 < end * 4 / 5 {
            self.push(next, 4, 0, 0);
        }
        let n = self.rng.below(self.nodes.len());
        match self.rng.below(4) {
            0 if self.nodes[n].up => {
                self.nodes[n].up = false;
                self.perturbations[0] += 1;
                let back = now + 5_000 + self.rng.below(25_000) as u64;
                self.push(back, 2, n as u32, 0);
            }
            1 if !self.partitioned => {
                self.partitioned = true;
                self.perturbations[2] += 1;
                let share = 2 + self.rng.below(2) as u64; // a half or a third on one side
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    node.side = u8::from((i as u64 * 7919 + now).is_multiple_of(share));
                }
                let heal = now + 10_000 + self.rng.below(50_000) as u64;
                self.push(heal, 3, 0, 0);
            }
            2 => {
                self.nodes[n].slow_until = now + 5_000 + self.rng.below(25_000) as u64;
                self.perturbations[5] += 1;
            }
            _ => {
                self.nodes[n].skew_ms = self.rng.below(4_001) as i64 - 2_000;
                self.perturbations[4] += 1;
            }
        }
    }

    /// A restarted node asks its peers for their tips (what `poll_peers` does).
    fn restart(&mut self, now: u64, n: usize) {
        self.nodes[n].up = true;
        self.perturbations[1] += 1;
        let peers = self.nodes[n].peers.clone();
        for p in peers {
            let tip = self.nodes[p as usize].tip;
            if self.nodes[p as usize].up {
                let rtt = self.rng.lognormal(self.args.latency_ms, 0.5) as u64 * 2;
                self.push(now + rtt, 0, n as u32, tip as u32);
            }
        }
    }

    fn heal(&mut self, now: u64) {
        self.partitioned = false;
        self.perturbations[3] += 1;
        // Peers exchange tips after a heal (their status polls).
        for n in 0..self.nodes.len() {
            let tip = self.nodes[n].tip;
            self.gossip(now, n, tip, None);
        }
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

/// A random mesh where every node has at least `d` peers (links are both ways; a node takes
/// no new link past `2d`).
fn mesh(n: usize, d: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let mut peers: Vec<Vec<u32>> = vec![Vec::new(); n];
    for i in 0..n {
        let mut tries = 0;
        while peers[i].len() < d.min(n - 1) && tries < 100 {
            tries += 1;
            let j = rng.below(n);
            if j != i && !peers[i].contains(&(j as u32)) && peers[j].len() < d * 2 {
                peers[i].push(j as u32);
                peers[j].push(i as u32);
            }
        }
    }
    peers
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
