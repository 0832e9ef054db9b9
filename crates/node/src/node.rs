//! The node: one event loop that ties the chain store, the network, the optimizer loops and the
//! evaluators together through the Proof-of-Optimization pipeline (DESIGN §4.1):
//!
//! 1. an optimizer loop reports a candidate that beats the verified champion → the node signs
//!    and gossips a `Commit` (reference block = its tip) on the blocks topic; the seal leader
//!    of the next slot includes it in a block, the next slot's leader seals it with the block
//!    after, and only then does the optimizer gossip the `Reveal`;
//! 2. every node records commits with the time it first saw them; on a reveal it checks that it
//!    opens the commit, that the commit is sealed on its chain, is the first reveal of these
//!    parameters and lies in the domain's bounds; if this node is in the commit's first-round
//!    quorum (drawn with the sealing block's beacon) it evaluates the parameters on data
//!    derived from its own seed, in the bounded worker pool, and gossips a signed `Vote`;
//! 3. when every first-round vote is in, every node assembles the `Certificate`; the leader of
//!    the current seal slot carries it in its next block at once (others only after a grace
//!    period, so one node produces per slot); the slot leader produces heartbeat blocks when
//!    the chain is idle;
//! 4. new tips are imported from gossip (compact blocks) or synced from the best peer, and the
//!    verified champion of each domain is injected into the local optimizer.
//!
//! Progress goes to stdout as one line per event (`listening`, `block`, `champion`, `target`)
//! for the devnet and tests; diagnostics go to the log.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use doin_consensus::{
    BlockError, BlockTemplate, GenesisSpec, State, build_block, certs, commits, heartbeat_leader,
    heartbeat_slot, quorum,
};
use doin_net::{
    CompactBlock, GossipMessage, Multiaddr, NetworkEvent, NetworkHandle, PeerId, Topic,
    sync::{BlockSink, best_peer, sync_from},
};
use doin_optimize::{domain::Budget, driver::RunConfig};
use doin_primitives::{
    Address, Block, BlockBody, BlockKind, BoundedVec, Certificate, Commit, CommitBody, DoubleVoteEvidence,
    FinalityEvidence, Hash, Keypair, Metric, Outcome, Reveal, RevealBody, Signed, Transaction, Vote,
    VoteBody, encode, poo,
};
use doin_storage::{ChainStore, StoreOptions};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    config::{DomainConfig, NodeConfig},
    domains, genesis,
    gossip_check::GossipCheck,
    mempool::Mempool,
    optimizer::{self, Control, Found},
    store::SharedStore,
};

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node key.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Something else, described.
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> NodeError {
    NodeError::Other(e.to_string())
}

/// How long a run lasts.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunLimits {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop cleanly when standard input closes (how `doin devnet` stops its nodes).
    pub stop_on_stdin_eof: bool,
    /// Fault injection for end-to-end tests: behave as an adversary.
    pub adversary: Option<Adversary>,
}

/// Dishonest behaviours a node can be told to show, so tests can check the network resists
/// them with real processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adversary {
    /// Re-commit every parameter set another optimizer reveals, claiming its value, and reveal
    /// it as its own (copying a published solution).
    CopyReveals,
    /// Sign a second, different vote (the measurement halved) after every honest one, sent
    /// straight to the network (a double voter hoping peers keep whichever suits it).
    DoubleVote,
    /// Sign two finality votes for every checkpoint, for different blocks at its height (an
    /// equivocating staker backing two forks at once).
    DoubleFinalityVote,
}

struct DomainRt {
    domain: Arc<dyn doin_optimize::domain::Domain>,
    config: DomainConfig,
    control: Option<std::sync::mpsc::SyncSender<Control>>,
    /// The optimizer loop's pause flag ([`optimizer::LoopIo::paused`]).
    paused: Arc<AtomicBool>,
    champion: Option<Hash>,
    target_reached: bool,
    /// Until when the optimizer loop waits for a peer subscribed to the domain's topic (`None`:
    /// not waiting). A commit gossiped to no one is lost, and the evaluators who missed it can
    /// never vote, so its quorum never completes.
    waiting_for_peers: Option<Instant>,
    /// Peers on the domain's topic the wait ends at: the other staked evaluators, at most
    /// [`PEERS_ENOUGH`] (a commit published to them directly reaches every quorum member that
    /// is up; one published to a single relay misses the peers that relay has not meshed yet).
    peers_needed: usize,
    /// Candidates the optimizer loop evaluated.
    evaluations: Arc<std::sync::atomic::AtomicU64>,
    /// The optimizer's latest report (for `/api/training`).
    last_found: Option<serde_json::Value>,
    /// This run's experiment id (32 hex) and the hash of the domain's configuration.
    experiment: (String, Hash),
}

struct SeenCommit {
    commit: Commit,
    at: Instant,
}

struct ReadyCert {
    cert: Certificate,
    ready_at: Instant,
    /// The decisive median (trusted: the claim).
    median: Metric,
}

struct Measured {
    commit: Hash,
    round: u8,
    seed: Hash,
    result: Result<Metric, String>,
}

impl DomainRt {
    /// The optimizer loop searches unless the domain reached its target or the node still
    /// waits for peers on its topic.
    fn sync_pause(&self) {
        self.paused.store(self.target_reached || self.waiting_for_peers.is_some(), Ordering::Relaxed);
    }
}

/// Grace period before a node that does not lead the current seal slot produces a work block
/// for a certificate (the leader carries it at once). One producer per slot: when the
/// optimizer produced its own work block at once, it raced the seal leader's block of commits,
/// the loser's commits were included again at another height with another quorum, and the
/// members that had voted under the first one timed out the claim (10 escalations in a 15 s
/// 4-node devnet).
const OTHERS_GRACE: Duration = Duration::from_millis(1500);
/// Peer polls (one a second) between redials of bootstrap peers while fewer peers than bootstrap
/// addresses are connected.
const REDIAL_POLLS: u64 = 5;
/// Commits and reveals kept at most (oldest dropped).
const MAX_PENDING: usize = 4096;
/// How long an optimizer loop waits for a peer on its domain's topic before it starts alone.
const PEER_WAIT: Duration = Duration::from_secs(10);
/// Peers on a domain's topic that are enough to start optimizing (gossipsub's lower mesh
/// bound): with fewer staked evaluators, all of them.
const PEERS_ENOUGH: usize = 4;

struct Engine {
    key: Keypair,
    me: Address,
    store: SharedStore,
    net: NetworkHandle,
    domains: BTreeMap<String, DomainRt>,
    commits: HashMap<Hash, SeenCommit>,
    reveals: HashMap<Hash, (Reveal, Instant)>,
    /// The commit of the first reveal that carried each parameter set (by parameters hash).
    params_first: HashMap<Hash, Hash>,
    votes: HashMap<Hash, BTreeMap<(u8, Address), Vote>>,
    evaluating: HashSet<(Hash, u8)>,
    /// When the first first-round vote of a commit arrived: the quorum's missing votes count as
    /// missing `quorum_timeout` after it (DESIGN §4.4: reveal + evaluation time + timeout).
    first_vote_at: HashMap<Hash, Instant>,
    escalated: HashSet<Hash>,
    /// Commits certified on chain recently (bounded; cleared when full).
    done: HashSet<Hash>,
    quorum_timeout: Duration,
    /// This node's commitments not yet settled: domain and when committed.
    my_claims: HashMap<Hash, (String, Instant)>,
    /// Per domain, the optimizer's report held back while another optimizer's better claim is
    /// verified, and since when this domain has held one ([`Standing::Behind`]).
    held: HashMap<String, (Found, Instant)>,
    /// How long a commitment of ours may stay unsettled before its optimizer loop stops
    /// waiting for it (lost reveal, quorum that never formed, orphaned reference).
    claim_deadline: Duration,
    /// Our reveals, each held until its commit is sealed on our chain (with when committed).
    my_reveals: Vec<(Instant, Reveal)>,
    /// Commits to include in our blocks when we lead a seal slot (any domain), bounded; a full
    /// pool refuses newcomers rather than evicting.
    commit_pool: BTreeMap<Hash, (Commit, Instant)>,
    certs: HashMap<Hash, ReadyCert>,
    mempool: Mempool,
    eval_slots: Arc<Semaphore>,
    measured_tx: mpsc::Sender<Measured>,
    /// How long a commit may take to be included and sealed (a few seal slots): another
    /// optimizer's unrevealed commit holds our claims this long at most.
    seal_wait: Duration,
    last_tip: Hash,
    syncing: Arc<Mutex<HashSet<PeerId>>>,
    bootstrap: Vec<Multiaddr>,
    adversary: Option<Adversary>,
    copied: HashSet<Hash>,
    /// Nanoseconds spent evaluating other optimizers' candidates.
    eval_nanos: Arc<std::sync::atomic::AtomicU64>,
    /// What the HTTP API shows.
    live: Arc<std::sync::RwLock<doin_api::LiveStatus>>,
    /// Quorum assignments for external evaluators.
    tasks: Arc<Mutex<doin_api::tasks::TaskQueue>>,
    /// Live events for `/events` and the dashboard.
    events: Arc<doin_api::events::EventBus>,
    /// Experiment tracking, if configured.
    tracker: Option<Arc<doin_tracking::Tracker>>,
    /// This node's balance when it started (rewards earned are measured from it).
    start_balance: u128,
    /// Canonical block hashes whose certificates tracking has recorded, by height (recent).
    tracked: BTreeMap<u64, Hash>,
    /// The gossip state checks (the network actor runs them; the loop keeps their state).
    gossip: Arc<GossipCheck>,
    /// Double-vote evidence to include in our blocks (found here or gossiped), bounded.
    evidence: Vec<DoubleVoteEvidence>,
    /// Milliseconds from our commits to their certificates (the latest 4 096).
    cert_latency_ms: std::collections::VecDeque<u64>,
    /// When each repeating warning (by key) was last logged, and how many were held back since.
    warned: HashMap<String, (Instant, u64)>,
    /// Revealed commits not sealed on this node's chain yet.
    awaiting_seal: HashSet<Hash>,
    /// A block or a commit arrived: react before the next tick (seal slots are short; a
    /// 100 ms tick per step added up to 300 ms to every claim).
    poked: bool,
    /// This node's finality votes, with their slashing protection record.
    voter: crate::finality::Voter,
    /// Conflicting finality votes to include in our blocks (found here or gossiped), bounded.
    finality_evidence: Vec<FinalityEvidence>,
    /// The justified and finalized heights last printed.
    finality_shown: (u64, u64),
    /// Peer polls so far.
    polls: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs a node until Ctrl-C or the run limit.
pub fn run(config: NodeConfig, limits: RunLimits) -> Result<(), NodeError> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(other)?;
    runtime.block_on(run_async(config, limits))
}

async fn run_async(config: NodeConfig, limits: RunLimits) -> Result<(), NodeError> {
    if config.genesis.is_none() && config.domains.is_empty() {
        return Err(other(
            "nothing to do: without a `genesis` file this node starts its own development chain, and \
             with no `domains` it would neither optimize nor evaluate (add a domain, or a genesis to join)",
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| other(format!("data_dir {}: {e}", config.data_dir.display())))?;
    let (key, created) = crate::identity::load_or_create(&config.identity_path())?;
    let me = key.address();
    if created {
        tracing::info!(address = %me, path = %config.identity_path().display(), "created node key");
    }

    // Domains this node works on.
    let mut rts = BTreeMap::new();
    for d in &config.domains {
        let domain = domains::build(d).map_err(|e| other(format!("domain {}: {e}", d.domain_id)))?;
        if !d.synthetic_data_validation {
            tracing::warn!(
                domain = %d.domain_id,
                "TRUSTED MODE: synthetic_data_validation is false; claims are accepted unverified and earn nothing"
            );
            println!("trusted {}: claims are accepted without verification and earn nothing", d.domain_id);
        }
        rts.insert(
            d.domain_id.clone(),
            DomainRt {
                domain,
                config: d.clone(),
                control: None,
                paused: Arc::default(),
                champion: None,
                target_reached: false,
                waiting_for_peers: None,
                peers_needed: 1,
                evaluations: Arc::default(),
                last_found: None,
                experiment: (
                    {
                        let mut id = [0u8; 16];
                        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
                        hex::encode(id)
                    },
                    Hash::of(serde_json::to_string(d).unwrap_or_default().as_bytes()),
                ),
            },
        );
    }

    // The development genesis (no `genesis` file) is written to the data directory on the first
    // start and read back on every later one: rebuilt, it would carry a new timestamp and name
    // another chain than the one stored.
    let dev_genesis = config.data_dir.join("genesis.json");
    let read_spec = |path: &std::path::Path| -> Result<GenesisSpec, NodeError> {
        let text = std::fs::read(path).map_err(|e| other(format!("genesis {}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| other(format!("genesis {}: {e}", path.display())))
    };
    let spec: GenesisSpec = match &config.genesis {
        Some(path) => read_spec(path)?,
        None if dev_genesis.exists() && !config.reset_chain => read_spec(&dev_genesis)?,
        None => genesis::single_node(
            &config,
            &me,
            &rts.values().map(|r| (r.domain.clone(), r.config.clone())).collect::<Vec<_>>(),
        )
        .map_err(other)?,
    };
    // Destructive steps only once everything above (config, domains, genesis) checked out.
    if config.reset_chain {
        let _ = std::fs::remove_file(config.data_dir.join("chain.redb"));
    }
    if config.genesis.is_none() {
        let text = serde_json::to_vec_pretty(&spec).map_err(other)?;
        std::fs::write(&dev_genesis, text)
            .map_err(|e| other(format!("writing the development genesis {}: {e}", dev_genesis.display())))?;
    }
    let store = ChainStore::open(&config.data_dir.join("chain.redb"), &spec, StoreOptions::default())
        .map_err(other)?;
    let store = SharedStore::new(store);
    println!("address {me}");
    println!("genesis {}", store.lock().genesis_hash());

    let listen: Multiaddr =
        format!("/ip4/{}/tcp/{}", config.host, config.p2p_port()).parse().map_err(other)?;
    let bootstrap: Vec<Multiaddr> = config
        .bootstrap_peers
        .iter()
        .map(|p| parse_peer(p).map_err(|e| other(format!("bootstrap_peers: {p:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    let net_config = doin_net::Config {
        listen: vec![listen],
        bootstrap: bootstrap.clone(),
        domains: rts.keys().cloned().collect(),
        enable_mdns: config.discovery_enabled && !config.host.starts_with("127."),
        ip_colocation_penalty: false,
        gossip_heartbeat: Duration::from_millis(200),
        request_timeout: Duration::from_secs(3),
        ..doin_net::Config::default()
    };
    // Optimae gossip is checked against the tip's state before it is forwarded.
    let gossip = Arc::new(GossipCheck::new());
    gossip.set_state(store.lock().tip().clone());
    let net_config_mdns = net_config.mdns_allowed();
    let mut network =
        doin_net::start(&key, net_config, Arc::new(store.clone()), gossip.clone()).await.map_err(other)?;

    // The HTTP API on the node's port.
    let discovery =
        std::iter::once("kademlia".to_owned()).chain(net_config_mdns.then(|| "mdns".to_owned())).collect();
    let live = Arc::new(std::sync::RwLock::new(doin_api::LiveStatus { discovery, ..Default::default() }));
    let (submit_tx, mut submit_rx) = mpsc::channel::<doin_api::Submission>(64);
    let tasks = Arc::new(Mutex::new(doin_api::tasks::TaskQueue::new(1024, Duration::from_secs(120))));
    let (completions_tx, mut completions_rx) =
        mpsc::channel::<(doin_api::tasks::Task, doin_api::tasks::Completion)>(64);
    let events = Arc::new(doin_api::events::EventBus::new());
    let http_addr: std::net::SocketAddr =
        format!("{}:{}", config.host, config.port).parse().map_err(other)?;
    let api = doin_api::ApiState {
        store: store.0.clone(),
        live: live.clone(),
        submit: submit_tx,
        address: me,
        peer_id: network.handle.peer_id().to_string(),
        port: config.port,
        tasks: tasks.clone(),
        completions: completions_tx,
        api_key: config.api_key.clone(),
        events: events.clone(),
        guard: Arc::new(doin_api::guard::Guard::new(doin_api::guard::Limits {
            rate_per_s: config.http_rate_limit,
            burst: config.http_burst,
            cors_origins: config.cors_origins.clone(),
        })),
        started: Instant::now(),
        stats: config
            .olap_db_path
            .clone()
            .map(|p| doin_api::stats::Stats::new(doin_tracking::olap::StatsReader::new(p)))
            .transpose()
            .map_err(|e| other(format!("olap_db_path: no temporary directory for exports: {e}")))?,
        chain_cache: Arc::default(),
    };
    let _http = doin_api::serve(http_addr, api)
        .await
        .map_err(|e| other(format!("port {}: cannot serve HTTP on {http_addr}: {e}", config.port)))?;
    println!("http http://{http_addr}");

    // Experiment tracking (CSV and the SQLite cube) on its own thread; a database that cannot be
    // opened is reported and the node goes on without it.
    let tracker = if config.experiment_stats_file.is_some() || config.olap_db_path.is_some() {
        let (t, problems) =
            doin_tracking::Tracker::start(config.experiment_stats_file.clone(), config.olap_db_path.clone());
        for p in problems {
            tracing::error!(error = %p, "experiment tracking unavailable; the node continues without it");
            println!("tracking error: {p}");
        }
        Some(Arc::new(t))
    } else {
        None
    };
    let (rounds_tx, mut rounds_rx) = mpsc::channel::<optimizer::RoundInfo>(256);
    let (found_tx, mut found_rx) = mpsc::channel::<Found>(16);
    let (measured_tx, mut measured_rx) = mpsc::channel::<Measured>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let params = store.lock().tip().params().clone();
    // (A lock taken inside the struct literal below would be held to its end.)
    let genesis_hash = store.lock().genesis_hash();
    let voter = crate::finality::Voter::load(&config.data_dir.join("finality-votes.json"), genesis_hash)
        .map_err(NodeError::Other)?;
    let mut engine = Engine {
        key: key.clone(),
        me,
        store: store.clone(),
        net: network.handle.clone(),
        domains: rts,
        commits: HashMap::new(),
        reveals: HashMap::new(),
        params_first: HashMap::new(),
        votes: HashMap::new(),
        evaluating: HashSet::new(),
        first_vote_at: HashMap::new(),
        escalated: HashSet::new(),
        done: HashSet::new(),
        quorum_timeout: Duration::from_millis(params.quorum_timeout_ms),
        my_claims: HashMap::new(),
        held: HashMap::new(),
        claim_deadline: Duration::from_millis(
            2 * params.quorum_timeout_ms.saturating_add(params.max_block_interval_ms),
        ),
        my_reveals: Vec::new(),
        commit_pool: BTreeMap::new(),
        certs: HashMap::new(),
        mempool: Mempool::new(10_000, 64),
        eval_slots: Arc::new(Semaphore::new(config.workers)),
        measured_tx,
        seal_wait: Duration::from_millis(params.seal_slot_ms.saturating_mul(4)) + Duration::from_secs(1),
        last_tip: Hash::ZERO,
        syncing: Arc::default(),
        bootstrap,
        adversary: limits.adversary,
        copied: HashSet::new(),
        eval_nanos: Arc::default(),
        live: live.clone(),
        tasks: tasks.clone(),
        events,
        tracker: tracker.clone(),
        start_balance: store.lock().tip().account(&me).balance.0,
        tracked: BTreeMap::new(),
        gossip,
        evidence: Vec::new(),
        cert_latency_ms: std::collections::VecDeque::new(),
        warned: HashMap::new(),
        awaiting_seal: HashSet::new(),
        poked: false,
        voter,
        finality_evidence: Vec::new(),
        finality_shown: (0, 0),
        polls: 0,
    };
    if let Some(t) = &tracker {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        for (id, rt) in &engine.domains {
            if !rt.config.optimize {
                continue;
            }
            let c = &rt.config;
            t.experiment(doin_tracking::Experiment {
                experiment_id: rt.experiment.0.clone(),
                domain_id: id.clone(),
                node_id: me.to_string(),
                hostname: hostname.clone(),
                optimizer_plugin: c.optimization_plugin.clone().unwrap_or_else(|| "shade".into()),
                performance_metric: if rt.domain.higher_is_better() { "performance" } else { "loss" }.into(),
                higher_is_better: rt.domain.higher_is_better(),
                optimization_config: serde_json::to_string(&c.optimization_config).unwrap_or_default(),
                param_bounds: serde_json::to_string(&c.param_bounds).unwrap_or_default(),
                target_performance: c.target_performance,
                started_ms: now_ms(),
                doin_version: env!("CARGO_PKG_VERSION").into(),
                config_hash: rt.experiment.1.to_string(),
            });
        }
    }
    // The network's metrics, copied for `/metrics` off the event loop: asking the network task
    // from the loop could wait on a task that is itself waiting for the loop to take its events.
    {
        let (net, live) = (network.handle.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Ok(text) = net.metrics().await else { break };
                // Connected peers' gossip scores (a flooding peer's falls below the graylist).
                let mut scores = BTreeMap::new();
                for peer in net.peers().await.unwrap_or_default().into_iter().take(256) {
                    if let Ok(Some(score)) = net.score(peer).await {
                        scores.insert(peer.to_string(), score);
                    }
                }
                let banned: Vec<String> = net
                    .banned()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .take(256)
                    .map(ToString::to_string)
                    .collect();
                if let Ok(mut l) = live.write() {
                    l.net_metrics = text;
                    l.peer_scores = scores;
                    l.banned_peers = banned;
                }
            }
        });
    }

    // Optimizer loops.
    let mut threads = Vec::new();
    for (id, rt) in engine.domains.iter_mut() {
        if !rt.config.optimize {
            continue;
        }
        let seed =
            u64::from_le_bytes(Hash::of_encoded(&(me, id.as_str())).0[..8].try_into().unwrap_or_default());
        let domain_id = doin_primitives::DomainId::new(id.as_str()).unwrap_or_default();
        let (limits, optimizers, other_evaluators) = {
            let s = store.lock();
            let tip = s.tip();
            // Accounts staked to optimize this domain: the network's population is split
            // among them (at least this node).
            let optimizers = tip.stakes().filter(|(_, st)| st.optimizes(&domain_id)).count().max(1);
            let others = tip.stakes().filter(|(a, st)| **a != me && st.evaluates(&domain_id)).count();
            (tip.domain(&domain_id).map(|d| d.spec.limits).unwrap_or_default(), optimizers, others)
        };
        let opt = optimizer::build_optimizer(rt.domain.as_ref(), &rt.config, seed, optimizers)
            .map_err(|e| other(format!("domain {id}: {e}")))?;
        let (ctl_tx, ctl_rx) = std::sync::mpsc::sync_channel(8);
        // Claims need their quorum to hear them: with other evaluators on chain, or peers to
        // join, the loop starts once enough peers listen on the domain's topic (or after
        // PEER_WAIT, alone). A lone node with no bootstrap peers optimizes at once.
        if other_evaluators > 0 || !engine.bootstrap.is_empty() {
            rt.waiting_for_peers = Some(Instant::now() + PEER_WAIT);
            rt.peers_needed = other_evaluators.clamp(1, PEERS_ENOUGH);
            rt.sync_pause();
            tracing::info!(
                domain = %id,
                other_evaluators,
                peers_needed = rt.peers_needed,
                "optimizer waits for a peer on the domain's topic"
            );
        }
        rt.control = Some(ctl_tx);
        let run = RunConfig {
            batch: config.workers.max(1) * 4,
            workers: config.workers,
            max_wall: Duration::from_millis(limits.max_wall_ms),
            max_epochs: limits.max_epochs,
            max_memory_bytes: u64::from(limits.max_memory_mb) << 20,
            ..RunConfig::default()
        };
        let (domain, found, stop, counter, paused) =
            (rt.domain.clone(), found_tx.clone(), stop.clone(), rt.evaluations.clone(), rt.paused.clone());
        // A plugin domain's process serves verification too, and a process inherits the
        // niceness of the thread that starts it: its optimizer thread keeps the node's.
        let shares_process = rt.config.domain_plugin.is_some();
        let rounds = tracker.is_some().then(|| rounds_tx.clone());
        let round_size = optimizer::population_of(rt.domain.as_ref(), &rt.config, run.batch, optimizers);
        tracing::info!(domain = %id, optimizers, population = round_size, "optimizer island");
        threads.push(
            std::thread::Builder::new()
                .name(format!("optimize-{id}"))
                .spawn(move || {
                    if !shares_process {
                        optimizer::lower_priority();
                    }
                    let io = optimizer::LoopIo {
                        control: ctl_rx,
                        paused,
                        found,
                        rounds,
                        round_size,
                        stop,
                        counter,
                    };
                    optimizer::run_loop(domain, opt, run, io)
                })
                .map_err(other)?,
        );
    }
    drop(found_tx);

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut poll = tokio::time::interval(Duration::from_millis(1000));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let (eof_tx, mut eof_rx) = mpsc::channel::<()>(1);
    if limits.stop_on_stdin_eof {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = eof_tx.send(()).await;
        });
    }
    engine.on_tip();
    loop {
        if limits.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        tokio::select! {
            _ = &mut ctrl_c => {
                println!("stopping");
                break;
            }
            Some(()) = eof_rx.recv() => {
                println!("stopping");
                break;
            }
            ev = network.events.recv() => match ev {
                Some(ev) => engine.on_network(ev).await,
                None => return Err(other("network stopped")),
            },
            Some(f) = found_rx.recv() => engine.on_found(f, None).await,
            Some(r) = rounds_rx.recv() => engine.on_round(r),
            Some(m) = measured_rx.recv() => engine.on_measured(m).await,
            Some(sub) = submit_rx.recv() => engine.on_submission(sub).await,
            Some((task, done)) = completions_rx.recv() => engine.on_completion(task, done).await,
            _ = tick.tick() => {
                engine.on_tick().await;
                engine.on_tip();
            }
            _ = poll.tick() => engine.poll_peers(),
        }
        if std::mem::take(&mut engine.poked) {
            engine.react().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let eval_s = engine.eval_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let (cpu_s, rss_mb) = process_usage();
    let tracking_s = engine.tracker.as_ref().map_or(0.0, |t| {
        t.flush();
        t.stats.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9
    });
    println!("usage cpu_s {cpu_s:.3} eval_s {eval_s:.3} rss_mb {rss_mb:.1} tracking_s {tracking_s:.3}");
    let refused = engine.gossip.refused();
    let mut latencies: Vec<u64> = engine.cert_latency_ms.iter().copied().collect();
    latencies.sort_unstable();
    println!(
        "latency claims {} claim_to_cert_p50_ms {} gossip_rejected {} gossip_ignored {}",
        latencies.len(),
        latencies.get(latencies.len().saturating_sub(1) / 2).copied().unwrap_or(0),
        refused.rejected,
        refused.ignored
    );
    network.handle.shutdown().await;
    // The final state is printed before the optimizer threads are joined: one may be in the
    // middle of a candidate's training (seconds on a busy machine), and the chain no longer
    // changes once the event loop and the network stopped.
    {
        let s = store.lock();
        let state = s.tip();
        println!(
            "stopped height {} tip {} root {} balance {} reputation {} stake {}",
            state.height(),
            state.tip().hash,
            state.root(),
            state.account(&me).balance.0,
            config
                .domains
                .iter()
                .map(|d| state.reputation(&me, &Engine::domain_id(&d.domain_id)))
                .sum::<u64>(),
            state.stake(&me).map_or(0, |s| s.amount.0)
        );
    }
    // Optimizer threads finish their candidate and stop; one stuck in a plugin call (a hung
    // plugin may have minutes left of its time limit) is freed by killing every plugin's
    // process group after 3 s: the node stops within seconds whatever its plugins do.
    let deadline = Instant::now() + Duration::from_secs(3);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if threads.iter().any(|t| !t.is_finished()) {
        tracing::warn!("plugins still busy at shutdown; killing their process groups");
    }
    doin_plugin::host::kill_all();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Whether a ready certificate adds no work on `state`: a reject, a trusted domain's accept, or
/// an accept whose median does not beat the champion by more than the acceptance tolerance
/// (consensus counts it late). Such certificates ride heartbeat blocks.
fn adds_no_work(state: &State, c: &ReadyCert) -> bool {
    let Some(d) = state.domain(&c.cert.commit.body.domain) else { return false };
    if c.cert.outcome == Outcome::Reject || d.spec.trusted() {
        return true;
    }
    let old = d.champion.as_ref().map_or(d.spec.baseline, |ch| ch.performance);
    let noise = certs::certificate_noise(&d.spec, &c.cert, c.median);
    !certs::improves(&d.spec, old, c.median, noise).unwrap_or(false)
}

/// Where a claim stands against the other claims of its domain that this node knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// Nothing known beats it: commit it.
    Clear,
    /// A certificate assembled here accepts a median at least as good: it would land late.
    Beaten,
    /// Another optimizer's better claim is in verification: wait for its outcome.
    Behind,
}

/// The standing of `claimed` given the medians of accepting certificates assembled here
/// (`certified`) and the claims of other optimizers still in verification (`in_flight`).
fn standing(
    direction: doin_primitives::domain::Direction,
    claimed: Metric,
    certified: impl IntoIterator<Item = Metric>,
    in_flight: impl IntoIterator<Item = Metric>,
) -> Standing {
    if certified.into_iter().any(|m| direction.gain(m, claimed).is_some_and(|g| g >= 0)) {
        Standing::Beaten
    } else if in_flight.into_iter().any(|c| direction.gain(c, claimed).is_some_and(|g| g > 0)) {
        Standing::Behind
    } else {
        Standing::Clear
    }
}

/// How long a revealed claim's quorum may take before its missing votes count as missing, when
/// no vote came at all: the domain's evaluation limit plus `quorum_timeout`.
fn quorum_window(quorum_timeout: Duration, spec: &doin_primitives::DomainSpec) -> Duration {
    quorum_timeout + Duration::from_millis(spec.limits.max_wall_ms)
}

/// How long an optimizer holds a claim behind others' claims in verification, at most: a
/// quorum's window and an escalation's.
fn hold_cap(quorum_timeout: Duration, spec: &doin_primitives::DomainSpec) -> Duration {
    2 * quorum_window(quorum_timeout, spec)
}

/// The quorums of `commit` from its reference block, if that block is still recent.
fn quorums_of(state: &State, commit: &Commit) -> Option<quorum::Quorums> {
    let b = &commit.body;
    quorum::quorums_for(state, &b.domain, &b.optimizer, &commit.id())
}

/// Whether a certificate refused with `e` can never become valid (then its commit is forgotten);
/// the others depend on which chain the commit is sealed on.
fn refused_for_good(e: &doin_consensus::CertError) -> bool {
    use doin_consensus::CertError as E;
    matches!(
        e,
        E::Opening(_)
            | E::UnknownDomain(_)
            | E::ParamOutOfBounds { .. }
            | E::ParamCount { .. }
            | E::Duplicate(_)
            | E::Overflow(_)
    )
}

/// This node's data seed for round `round` of a commit sealed on `state`'s chain: its seed
/// group's ([`quorum::group_seed`]), if it is a member of that round's quorum.
fn member_seed(state: &State, commit: &Commit, round: u8, me: &Address) -> Option<Hash> {
    let id = commit.id();
    let beacon = quorum::sealed(state, &id)?.beacon;
    quorums_of(state, commit)?.seed_of(&beacon, &id, round, me)
}

fn hex_hash(text: &str) -> Hash {
    hex::decode(text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).map_or(Hash::ZERO, Hash)
}

/// Runs a closure when dropped.
struct Defer<F: FnMut()>(F);
impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// This process's CPU seconds (user + system) and resident memory in MiB (Linux `/proc`).
pub fn process_usage() -> (f64, f64) {
    let cpu = doin_tracking::stat_cpu_seconds("/proc/self/stat");
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb / 1024.0)
    });
    (cpu.unwrap_or(0.0), rss.unwrap_or(0.0))
}

/// A peer address as users write it: a multiaddr, or `HOST:PORT` of its P2P (TCP) port.
pub fn parse_peer(text: &str) -> Result<Multiaddr, String> {
    if text.starts_with('/') {
        return text.parse::<Multiaddr>().map_err(|e| e.to_string());
    }
    let (host, port) = text.rsplit_once(':').ok_or("expected a multiaddr or host:port")?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let proto = if host.parse::<std::net::Ipv4Addr>().is_ok() { "ip4" } else { "dns" };
    format!("/{proto}/{host}/tcp/{port}").parse::<Multiaddr>().map_err(|e| e.to_string())
}

impl Engine {
    /// Whether a warning that may repeat many times a second (keyed by `key`) is logged now:
    /// once a minute per key, saying how many were held back meanwhile. At most 1 024 keys.
    fn warn_once_a_minute(&mut self, key: &str) -> bool {
        let now = Instant::now();
        if self.warned.len() >= 1024 && !self.warned.contains_key(key) {
            self.warned.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(60));
        }
        match self.warned.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < Duration::from_secs(60) => {
                *held += 1;
                false
            }
            Some((at, held)) => {
                if *held > 0 {
                    tracing::warn!(key, held_back = *held, "repeated warnings held back in the last minute");
                }
                *at = now;
                *held = 0;
                true
            }
            None => {
                self.warned.insert(key.to_owned(), (now, 0));
                true
            }
        }
    }

    fn tip_state(&self) -> State {
        self.store.lock().tip().clone()
    }

    fn domain_id(id: &str) -> doin_primitives::DomainId {
        doin_primitives::DomainId::new(id).unwrap_or_default()
    }

    fn emit(&self, kind: &str, domain: Option<&str>, data: serde_json::Value) {
        self.events.emit(kind, domain, data);
    }

    /// The `certificate` event of an assembled certificate, decided by `verified`.
    fn emit_certificate(&self, cert: &Certificate, verified: Metric, trusted: bool) {
        let commit = &cert.commit.body;
        self.emit(
            "certificate",
            Some(commit.domain.as_str()),
            json!({
                "commit": cert.commit.id().to_string(),
                "optimizer": commit.optimizer.to_string(),
                "outcome": format!("{:?}", cert.outcome),
                "claimed": commit.claimed.to_f64(),
                "verified": verified.to_f64(),
                "escalated": !cert.escalation.is_empty(),
                "trusted": trusted,
            }),
        );
    }

    async fn publish(&self, topic: Topic, msg: GossipMessage) {
        // Our own messages never pass our validator: admit them, or the votes our commit draws
        // would be ignored as votes on an unknown commit.
        self.gossip.admit_own(&msg);
        let name = topic.name();
        if let Err(e) = self.net.publish(topic, msg).await {
            tracing::debug!(topic = name, error = %e, "publish failed (no peers yet?)");
        }
    }

    async fn on_network(&mut self, ev: NetworkEvent) {
        match ev {
            NetworkEvent::Listening(addr) => {
                let me = self.net.peer_id();
                if matches!(addr.iter().last(), Some(doin_net::Protocol::P2p(p)) if p == me) {
                    println!("listening {addr}");
                } else {
                    println!("listening {addr}/p2p/{me}");
                }
            }
            NetworkEvent::PeerConnected(peer) => {
                println!("connected {peer}");
                self.emit("peer_joined", None, json!({ "peer_id": peer.to_string() }));
            }
            NetworkEvent::PeerDisconnected(peer) => {
                self.emit("peer_left", None, json!({ "peer_id": peer.to_string() }));
            }
            NetworkEvent::Subscribed { peer, topic } => {
                if let Some(Topic::Optimae(domain)) = Topic::parse(&topic)
                    && let Some(needed) = self
                        .domains
                        .get(&domain)
                        .filter(|rt| rt.waiting_for_peers.is_some())
                        .map(|rt| rt.peers_needed)
                {
                    let listening =
                        self.net.topic_peers(Topic::Optimae(domain.clone())).await.map_or(0, |p| p.len());
                    if listening >= needed {
                        self.stop_waiting(&domain, Some(peer));
                    }
                }
            }
            NetworkEvent::Gossip { message, from, .. } => match message {
                GossipMessage::Block(compact) => {
                    self.on_block(*compact, from);
                    self.poked = true;
                }
                GossipMessage::Transaction(tx) => {
                    let state = self.tip_state();
                    if let Err(e) = self.mempool.insert(*tx, &state) {
                        tracing::debug!(error = %e, "transaction refused");
                    }
                }
                GossipMessage::Commit(c) => {
                    self.pool_commit(&c);
                    self.on_commit(*c);
                    self.poked = true;
                }
                GossipMessage::Reveal(r) => {
                    if self.adversary == Some(Adversary::CopyReveals) {
                        self.copy_reveal(&r).await;
                    }
                    self.on_reveal(*r, Instant::now());
                }
                GossipMessage::Vote(v) => self.on_vote(*v),
                GossipMessage::Evidence(e) => self.add_evidence(*e),
                // Admitted into the pool by the gossip check; included by our blocks.
                GossipMessage::FinalityVote(_) => {}
                GossipMessage::FinalityEvidence(e) => self.add_finality_evidence(*e),
            },
            _ => {}
        }
    }

    fn on_block(&mut self, compact: CompactBlock, from: PeerId) {
        let (tip, height) = {
            let s = self.store.lock();
            (s.tip().tip().hash, s.tip().height())
        };
        let mempool = &self.mempool;
        let pool = &self.commit_pool;
        // Certificates we assembled ourselves from the same votes have the same id: most work
        // blocks rebuild without fetching their bodies.
        let certs: HashMap<Hash, &Certificate> = if compact.cert_ids.is_empty() {
            HashMap::new()
        } else {
            self.certs.values().map(|c| (c.cert.id(), &c.cert)).collect()
        };
        match compact.rebuild(
            |id| mempool.get(id),
            |id| pool.get(id).map(|(c, _)| c.clone()),
            |id| certs.get(id).map(|c| (*c).clone()),
        ) {
            Ok(block) if compact.header.parent_hash == tip => {
                let mut sink = self.store.clone();
                if let Err(e) = sink.import(block) {
                    tracing::debug!(error = %e, "gossiped block refused");
                }
            }
            _ if compact.header.height > height || compact.header.parent_hash == tip => self.spawn_sync(from),
            _ => {}
        }
    }

    fn spawn_sync(&self, peer: PeerId) {
        if !self.syncing.lock().map(|mut s| s.insert(peer)).unwrap_or(false) {
            return;
        }
        let (handle, mut sink, syncing) = (self.net.clone(), self.store.clone(), self.syncing.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), sync_from(&handle, peer, &mut sink)).await;
            if let Ok(mut s) = syncing.lock() {
                s.remove(&peer);
            }
        });
    }

    fn poll_peers(&mut self) {
        let (handle, genesis) = (self.net.clone(), self.store.lock().genesis_hash());
        let (sink, syncing, bootstrap) = (self.store.clone(), self.syncing.clone(), self.bootstrap.clone());
        let live = self.live.clone();
        self.polls = self.polls.wrapping_add(1);
        let redial_due = self.polls.is_multiple_of(REDIAL_POLLS);
        tokio::spawn(async move {
            let peers = handle.peers().await.unwrap_or_default();
            if let Ok(mut l) = live.write() {
                l.peers = peers.iter().map(ToString::to_string).collect();
            }
            // Bootstrap peers that were not up when we started, or whose connections a network
            // partition closed (the rest of the network stays connected, so waiting for zero
            // peers would keep the two sides apart after the link heals): dial them again.
            if peers.is_empty() || (redial_due && peers.len() < bootstrap.len()) {
                for addr in bootstrap {
                    let _ = handle.dial(addr).await;
                }
                if peers.is_empty() {
                    return;
                }
            }
            let best = best_peer(&handle, &peers, genesis, Duration::from_secs(2)).await;
            if let Ok(mut l) = live.write() {
                l.network_height = best.as_ref().map(|(_, s)| s.height);
            }
            let Some((peer, status)) = best else {
                return;
            };
            if !doin_net::sync::is_ahead(&status, &BlockSink::status(&sink)) {
                return;
            }
            if !syncing.lock().map(|mut s| s.insert(peer)).unwrap_or(false) {
                return;
            }
            let mut sink = sink;
            let _ = tokio::time::timeout(Duration::from_secs(10), sync_from(&handle, peer, &mut sink)).await;
            if let Ok(mut s) = syncing.lock() {
                s.remove(&peer);
            }
        });
    }

    fn on_commit(&mut self, commit: Commit) {
        let id = commit.id();
        if !self.domains.contains_key(commit.body.domain.as_str())
            || self.commits.contains_key(&id)
            || self.done.contains(&id)
        {
            return;
        }
        if self.commits.len() >= MAX_PENDING
            && let Some(oldest) = self.commits.iter().min_by_key(|(_, c)| c.at).map(|(k, _)| *k)
        {
            self.commits.remove(&oldest);
        }
        self.emit(
            "commit",
            Some(commit.body.domain.as_str()),
            json!({ "commit": id.to_string(), "optimizer": commit.body.optimizer.to_string(), "claimed": commit.body.claimed.to_f64() }),
        );
        self.commits.insert(id, SeenCommit { commit, at: Instant::now() });
        // A reveal that overtook its commit waits here.
        if let Some((reveal, _)) = self.reveals.get(&id).cloned() {
            self.consider(reveal);
        }
    }

    fn on_reveal(&mut self, reveal: Reveal, at: Instant) {
        let commit = reveal.body.commit;
        // First revealer wins: the first reveal to carry these parameters, in arrival order, even
        // before its commit is here or its timing checked (and even when its certificate
        // overtook it), so a later copy never gets evaluated.
        if self.params_first.len() >= MAX_PENDING * 4 {
            self.params_first.clear();
        }
        self.params_first.entry(Hash::of(&encode(&reveal.body.params))).or_insert(commit);
        if self.reveals.contains_key(&commit) || self.done.contains(&commit) {
            return;
        }
        if self.reveals.len() >= MAX_PENDING {
            self.reveals.clear();
        }
        let domain = self
            .commits
            .get(&commit)
            .map(|c| c.commit.body.domain.to_string())
            .or_else(|| self.gossip.domain_of(&commit));
        self.emit(
            "reveal",
            domain.as_deref(),
            json!({ "commit": commit.to_string(), "optimizer": reveal.body.optimizer.to_string() }),
        );
        self.reveals.insert(commit, (reveal.clone(), at));
        if self.commits.contains_key(&commit) {
            self.consider(reveal);
        }
    }

    /// Checks a reveal and, when this node is in the quorum, starts evaluating it.
    fn consider(&mut self, reveal: Reveal) {
        let commit_id = reveal.body.commit;
        let Some(seen) = self.commits.get(&commit_id) else { return };
        let commit = seen.commit.clone();
        let body = &reveal.body;
        if body.optimizer != commit.body.optimizer
            || poo::optimae_hash(&body.params, &body.salt, &body.optimizer) != commit.body.optimae_hash
        {
            tracing::info!(commit = %commit_id, "reveal does not open its commit; ignored");
            return;
        }
        let domain = commit.body.domain.to_string();
        let params_hash = Hash::of(&encode(&body.params));
        let first = self.params_first.get(&params_hash).copied().unwrap_or(commit_id);
        if first != commit_id {
            tracing::info!(commit = %commit_id, first = %first, "parameters already revealed by an earlier commit; not evaluated");
            return;
        }
        let state = self.tip_state();
        let Some(spec) = state.domain(&commit.body.domain).map(|d| d.spec.clone()) else { return };
        if let Err(e) = certs::check_params(&spec, &body.params) {
            tracing::info!(commit = %commit_id, error = %e, "reveal out of bounds; ignored");
            return;
        }
        if spec.trusted() {
            self.try_certify(commit_id);
            return;
        }
        let Some(q) = quorums_of(&state, &commit) else {
            // The optimizer reveals once its commit is sealed on its chain; the sealing block
            // may not have reached us yet: look again when our tip moves (the reveal is already
            // recorded as the first of its parameters, so a copy cannot jump the queue).
            if self.awaiting_seal.insert(commit_id) {
                tracing::debug!(commit = %commit_id, "commit not sealed on our chain yet; waiting for it");
            }
            if self.awaiting_seal.len() > MAX_PENDING {
                self.awaiting_seal.remove(&commit_id);
            }
            return;
        };
        if q.first.is_empty() {
            if self.warn_once_a_minute(&format!("no-evaluators/{domain}")) {
                tracing::warn!(domain, "no eligible evaluators: this domain cannot accept optimae");
            }
            return;
        }
        if q.first.contains(&self.me) {
            self.start_evaluation(&commit, &reveal, 0, &spec);
        }
        self.try_certify(commit_id);
    }

    /// Evaluates a revealed candidate in the worker pool (round 0: first quorum; 1: escalation).
    fn start_evaluation(
        &mut self,
        commit: &Commit,
        reveal: &Reveal,
        round: u8,
        spec: &doin_primitives::DomainSpec,
    ) {
        let commit_id = commit.id();
        let Some(rt) = self.domains.get(commit.body.domain.as_str()) else { return };
        if !rt.config.evaluate || !self.evaluating.insert((commit_id, round)) {
            return;
        }
        // The round's seed group's data: a member drawn again for the escalation measures on
        // its escalation group's data (shared with other members, so that they check it).
        let Some(seed) = member_seed(&self.tip_state(), commit, round, &self.me) else { return };
        let domain_impl = rt.domain.clone();
        let values = domain_impl.space().from_params(&reveal.body.params);
        let limits = spec.limits;
        if rt.config.external_evaluation {
            let task = doin_api::tasks::Task {
                task_id: format!("{commit_id}:{round}"),
                kind: doin_api::tasks::TaskKind::Verification,
                domain: commit.body.domain.to_string(),
                commit: commit_id.to_string(),
                round,
                params: values.iter().map(|v| v.as_f64()).collect(),
                seed: hex::encode(seed.0),
                limits: serde_json::json!({
                    "max_wall_s": limits.max_wall_ms as f64 / 1000.0,
                    "max_epochs": limits.max_epochs,
                    "max_memory_mb": limits.max_memory_mb,
                }),
                lease_s: None,
                inputs: None,
            };
            if let Ok(mut q) = self.tasks.lock()
                && q.push(task).is_err()
            {
                tracing::warn!(commit = %commit_id, "task queue full; assignment dropped");
            }
            return;
        }
        let (slots, tx, nanos) = (self.eval_slots.clone(), self.measured_tx.clone(), self.eval_nanos.clone());
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else { return };
            let result = tokio::task::spawn_blocking(move || {
                // CPU time of this thread, not wall time: on a busy machine an evaluation waits
                // for the CPU, and wall time would overstate verification's share.
                let started = doin_tracking::thread_cpu_nanos();
                let _account = Defer(move || {
                    nanos.fetch_add(
                        doin_tracking::thread_cpu_nanos().saturating_sub(started),
                        Ordering::Relaxed,
                    );
                });
                let budget = Budget {
                    deadline: Instant::now() + Duration::from_millis(limits.max_wall_ms),
                    max_epochs: limits.max_epochs,
                    max_memory_bytes: u64::from(limits.max_memory_mb) << 20,
                };
                domain_impl.evaluate(&values, Some(&seed), budget).map_err(|e| e.to_string()).and_then(|m| {
                    Metric::from_f64(m.performance).ok_or_else(|| "performance out of range".to_owned())
                })
            })
            .await
            .unwrap_or_else(|e| Err(format!("evaluation panicked: {e}")));
            let _ = tx.send(Measured { commit: commit_id, round, seed, result }).await;
        });
    }

    /// A transaction from the HTTP API: admitted to the mempool and gossiped, or refused with
    /// the reason.
    async fn on_submission(&mut self, sub: doin_api::Submission) {
        let state = self.tip_state();
        let id = sub.tx.id();
        let verdict = self.mempool.insert(sub.tx.clone(), &state).map(|()| id);
        if verdict.is_ok() {
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(sub.tx))).await;
        }
        let _ = sub.reply.send(verdict);
    }

    /// An external evaluator finished a task: the node signs the vote for its own account.
    async fn on_completion(&mut self, task: doin_api::tasks::Task, done: doin_api::tasks::Completion) {
        let Some(commit) = self.commits.get(&hex_hash(&task.commit)).map(|c| c.commit.clone()) else {
            tracing::info!(task = %task.task_id, "completed task's commit is gone; no vote");
            return;
        };
        let Some(seed) = member_seed(&self.tip_state(), &commit, task.round, &self.me) else {
            tracing::info!(task = %task.task_id, "completed task's commit is not sealed on our chain; no vote");
            return;
        };
        let performance = done.performance.unwrap_or(f64::NAN);
        let result = Metric::from_f64(performance).ok_or_else(|| "performance out of range".to_owned());
        tracing::info!(task = %task.task_id, performance, "external evaluation completed");
        self.on_measured(Measured { commit: commit.id(), round: task.round, seed, result }).await;
    }

    /// Refreshes what the HTTP API shows.
    fn refresh_live(&self, state: &State) {
        let Ok(mut live) = self.live.write() else { return };
        live.mempool = self.mempool.len();
        live.pending_commitments = self.commits.len().saturating_sub(self.certs.len());
        live.pending_quorums = self.evaluating.len() + self.escalated.len();
        let refused = self.gossip.refused();
        live.gossip_refused = (refused.rejected, refused.ignored);
        live.gossip_pending = self.gossip.pending();
        live.evidence_pending = self.evidence.len() + self.finality_evidence.len();
        live.finality_votes_pending = self.gossip.finality_pooled();
        for (id, rt) in &self.domains {
            let ds = state.domain(&Self::domain_id(id));
            let best = ds.and_then(|d| d.champion.as_ref()).map(|c| c.performance.to_f64());
            live.domains.insert(
                id.clone(),
                doin_api::DomainStatus {
                    optimize: rt.config.optimize,
                    evaluate: rt.config.evaluate,
                    synthetic: rt.config.has_synthetic_data,
                    trusted: !rt.config.synthetic_data_validation,
                    target_performance: rt.config.target_performance,
                    best_performance: best,
                    converged: rt.target_reached,
                    evaluations: rt.evaluations.load(Ordering::Relaxed),
                    optimizer: rt.config.optimization_plugin.clone().unwrap_or_else(|| "shade".into()),
                    domain_plugin: rt.config.domain_plugin.clone(),
                    training: rt.last_found.clone(),
                },
            );
        }
        live.evaluating = self
            .evaluating
            .iter()
            .map(|(commit, round)| {
                json!({
                    "commit": commit.to_string(),
                    "round": round,
                    "domain_id": self.commits.get(commit).map(|c| c.commit.body.domain.to_string()),
                })
            })
            .collect();
        let (cpu, rss) = process_usage();
        live.usage = (cpu, self.eval_nanos.load(Ordering::Relaxed) as f64 / 1e9, rss);
        live.plugins = doin_plugin::host::stats()
            .into_iter()
            .map(|(name, st)| {
                let mut v = serde_json::to_value(&st).unwrap_or_default();
                v["name"] = name.into();
                v
            })
            .collect();
    }

    async fn on_measured(&mut self, m: Measured) {
        match m.result {
            Ok(measured) => {
                let vote = Signed::sign(
                    VoteBody {
                        commit: m.commit,
                        evaluator: self.me,
                        round: m.round,
                        measured,
                        data_hash: Hash::of(&m.seed.0),
                    },
                    &self.key,
                );
                let domain =
                    self.commits.get(&m.commit).map(|c| c.commit.body.domain.to_string()).unwrap_or_default();
                println!("vote {domain} {} {} round {}", m.commit, measured.to_f64(), m.round);
                self.publish(Topic::Optimae(domain.clone()), GossipMessage::Vote(Box::new(vote.clone())))
                    .await;
                if self.adversary == Some(Adversary::DoubleVote) {
                    let mut other = vote.body.clone();
                    other.measured = Metric(measured.0 / 2);
                    let other = Signed::sign(other, &self.key);
                    // Not through `publish`: the adversary does not admit its own double vote.
                    let _ =
                        self.net.publish(Topic::Optimae(domain), GossipMessage::Vote(Box::new(other))).await;
                }
                self.on_vote(vote);
            }
            Err(e) => {
                tracing::warn!(commit = %m.commit, round = m.round, error = %e, "evaluation failed; no vote");
            }
        }
    }

    fn on_vote(&mut self, vote: Vote) {
        let commit = vote.body.commit;
        let votes = self.votes.entry(commit).or_default();
        if votes.len() >= 256 {
            return;
        }
        let key = (vote.body.round.min(1), vote.body.evaluator);
        if !votes.contains_key(&key) {
            let domain = self
                .commits
                .get(&commit)
                .map(|c| c.commit.body.domain.to_string())
                .or_else(|| self.gossip.domain_of(&commit));
            self.events.emit(
                "vote",
                domain.as_deref(),
                json!({
                    "commit": commit.to_string(),
                    "evaluator": vote.body.evaluator.to_string(),
                    "measured": vote.body.measured.to_f64(),
                    "round": vote.body.round,
                }),
            );
        }
        if key.0 == 0 && self.first_vote_at.len() < MAX_PENDING {
            self.first_vote_at.entry(commit).or_insert_with(Instant::now);
        }
        self.votes.entry(commit).or_default().entry(key).or_insert(vote);
        self.try_certify(commit);
    }

    /// Assembles the certificate once every first-round vote is in.
    fn try_certify(&mut self, commit_id: Hash) {
        if self.certs.contains_key(&commit_id)
            || self.store.lock().certificate_location(&commit_id).ok().flatten().is_some()
        {
            return;
        }
        let (Some(seen), Some((reveal, revealed_at))) =
            (self.commits.get(&commit_id), self.reveals.get(&commit_id))
        else {
            return;
        };
        let revealed_at = *revealed_at;
        // A copy (these parameters were revealed first under another commit) is never
        // certified by this node, in the first round or in an escalation.
        let params_hash = Hash::of(&encode(&reveal.body.params));
        if self.params_first.get(&params_hash).is_some_and(|first| *first != commit_id) {
            return;
        }
        let commit = seen.commit.clone();
        let state = self.tip_state();
        let Some(spec) = state.domain(&commit.body.domain).map(|d| d.spec.clone()) else { return };
        if spec.trusted() {
            // Trusted mode: the claim is the certificate's figure, no quorum is asked.
            let cert = Certificate {
                commit: commit.clone(),
                reveal: reveal.clone(),
                votes: BoundedVec::default(),
                escalation: BoundedVec::default(),
                outcome: Outcome::Accept,
            };
            println!(
                "certificate {} {commit_id} Accept trusted {}",
                commit.body.domain,
                commit.body.claimed.to_f64()
            );
            // Pending trusted claims this one matches or beats would only land as late: drop them.
            let domain = commit.body.domain.clone();
            let claimed = commit.body.claimed;
            self.certs.retain(|_, c| {
                c.cert.commit.body.domain != domain
                    || spec.direction.gain(claimed, c.cert.commit.body.claimed).is_none_or(|g| g < 0)
            });
            self.emit_certificate(&cert, claimed, true);
            self.certs.insert(commit_id, ReadyCert { cert, ready_at: Instant::now(), median: claimed });
            self.poked = true;
            return;
        }
        let Some(q) = quorums_of(&state, &commit) else { return };
        let empty = BTreeMap::new();
        let all = self.votes.get(&commit_id).unwrap_or(&empty);
        let first: Vec<Vote> = q.first.iter().filter_map(|a| all.get(&(0, *a)).cloned()).collect();
        let agree =
            |values: &[Metric], m: Metric| values.iter().filter(|v| certs::agrees(&spec, **v, m)).count();
        let (median, escalation) = if !self.escalated.contains(&commit_id) {
            let values: Vec<Metric> = first.iter().map(|v| v.measured).collect();
            let median = certs::median(&values);
            let complete = !first.is_empty() && first.len() == q.first.len();
            let timed_out = self.votes_missing(&commit_id, revealed_at, &spec);
            if complete && agree(&values, median) == values.len() {
                (median, Vec::new())
            } else {
                if complete || timed_out {
                    // Disagreement or a missing vote: a larger quorum decides by quorum_fraction.
                    self.escalated.insert(commit_id);
                    println!(
                        "escalate {} {commit_id} ({} of {} first-round votes, {})",
                        commit.body.domain,
                        first.len(),
                        q.first.len(),
                        if complete { "disagreeing" } else { "timed out" }
                    );
                    self.emit(
                        "escalation",
                        Some(commit.body.domain.as_str()),
                        json!({
                            "commit": commit_id.to_string(),
                            "votes": first.len(),
                            "quorum": q.first.len(),
                            "reason": if complete { "disagreeing votes" } else { "quorum timed out" },
                        }),
                    );
                    if q.escalation.contains(&self.me) {
                        let reveal = reveal.clone();
                        self.start_evaluation(&commit, &reveal, 1, &spec);
                    }
                }
                return;
            }
        } else {
            let second: Vec<Vote> = q.escalation.iter().filter_map(|a| all.get(&(1, *a)).cloned()).collect();
            let values: Vec<Metric> = second.iter().map(|v| v.measured).collect();
            if values.is_empty() {
                return;
            }
            let median = certs::median(&values);
            let size = q.escalation.len() as u128;
            let needed = (size * u128::from(spec.quorum.fraction_num))
                .div_ceil(u128::from(spec.quorum.fraction_den.max(1)));
            if (agree(&values, median) as u128) < needed {
                return;
            }
            (median, second)
        };
        let votes = first;
        let outcome = certs::outcome(&spec, commit.body.claimed, median).unwrap_or(Outcome::Reject);
        let cert = Certificate {
            commit: commit.clone(),
            reveal: reveal.clone(),
            votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
            escalation: BoundedVec::try_from_vec(escalation).unwrap_or_default(),
            outcome,
        };
        let mine = commit.body.optimizer == self.me;
        if let Some((_, at)) = self.my_claims.get(&commit_id).filter(|_| mine) {
            if self.cert_latency_ms.len() >= 4096 {
                self.cert_latency_ms.pop_front();
            }
            self.cert_latency_ms.push_back(at.elapsed().as_millis() as u64);
        }
        println!("certificate {} {commit_id} {outcome:?} median {}", commit.body.domain, median.to_f64());
        self.emit_certificate(&cert, median, false);
        let ready_at = Instant::now() + OTHERS_GRACE;
        self.certs.insert(commit_id, ReadyCert { cert, ready_at, median });
        self.poked = true;
        if let Ok(mut q) = self.tasks.lock() {
            q.remove(&format!("{commit_id}:0"));
            q.remove(&format!("{commit_id}:1"));
        }
    }

    /// Whether the first-round votes of `commit` (revealed at `revealed_at`) that have not come
    /// count as missing: `quorum_timeout` after its first vote (the others had as long as that
    /// evaluator to finish) or, with no vote at all, once the domain's evaluation limit has
    /// passed too. Timing out from the reveal escalated `mlp_digits` claims whose training
    /// outlasted the 8 s devnet timeout.
    fn votes_missing(&self, commit: &Hash, revealed_at: Instant, spec: &doin_primitives::DomainSpec) -> bool {
        match self.first_vote_at.get(commit) {
            Some(t) => t.elapsed() >= self.quorum_timeout,
            None => revealed_at.elapsed() >= quorum_window(self.quorum_timeout, spec),
        }
    }

    /// The copying adversary: commits someone else's revealed parameters as its own.
    async fn copy_reveal(&mut self, original: &Reveal) {
        let body = &original.body;
        if body.optimizer == self.me || !self.copied.insert(body.commit) || self.copied.len() > MAX_PENDING {
            return;
        }
        let Some(seen) = self.commits.get(&body.commit) else { return };
        let (domain, claimed) = (seen.commit.body.domain.clone(), seen.commit.body.claimed);
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let commit = Signed::sign(
            CommitBody {
                domain: domain.clone(),
                optimizer: self.me,
                optimae_hash: poo::optimae_hash(&body.params, &salt, &self.me),
                claimed,
                reference_block: self.tip_state().tip().hash,
            },
            &self.key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: self.me,
                params: body.params.clone(),
                salt,
                artifact: None,
                experiment: Default::default(),
            },
            &self.key,
        );
        println!("copy {domain} {} of {}", commit.id(), body.commit);
        self.publish_commit(commit, reveal).await;
    }

    /// A finished optimizer round: one tracking row, with the chain's view added.
    fn on_round(&mut self, r: optimizer::RoundInfo) {
        let (Some(t), Some(rt)) = (&self.tracker, self.domains.get(&r.domain)) else { return };
        let state = self.tip_state();
        let peers = self.live.read().map(|l| l.peers.len()).unwrap_or(0);
        let earned = state.account(&self.me).balance.0.saturating_sub(self.start_balance) as f64 / 1e9;
        let json_values = |v: &[doin_optimize::Value]| doin_plugin::adapters::values_to_json(v).to_string();
        t.round(doin_tracking::Round {
            experiment_id: rt.experiment.0.clone(),
            round_number: r.round,
            timestamp_ms: now_ms(),
            performance: r.best.as_ref().map(|(_, m)| m.performance),
            best_performance: r.best_so_far.as_ref().map(|(_, p)| *p),
            parameters: r.best.as_ref().map(|(v, _)| json_values(v)).unwrap_or_default(),
            best_parameters: r.best_so_far.as_ref().map(|(v, _)| json_values(v)).unwrap_or_default(),
            converged: rt.target_reached,
            chain_height: state.height(),
            peers_count: peers as u64,
            block_reward_earned: earned,
            generation: r.round,
            stage: u64::from(r.stage),
            population_size: r.population as u64,
            no_improve_counter: r.no_improve,
            optimization_patience: rt
                .config
                .optimization_config
                .get("optimization_patience")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            avg_fitness: r.avg_performance,
            metrics: r.best.map(|(_, m)| m.metrics).unwrap_or_default(),
        });
    }

    /// Sends tracking the canonical chain's certificates from the first height whose block
    /// differs from what it recorded (a reorg replaces the orphaned rows).
    fn track_chain(&mut self, tip_height: u64) {
        let Some(t) = &self.tracker else { return };
        let s = self.store.lock();
        let canonical = |h: u64| s.canonical_hash(h).ok().flatten();
        // At start: the last 2000 blocks (rows from earlier runs stay; these are rewritten).
        let mut from = self
            .tracked
            .last_key_value()
            .map_or(tip_height.saturating_sub(2000), |(h, _)| h + 1)
            .min(tip_height + 1);
        // Walk back over recorded blocks that are no longer canonical.
        while from > 0 {
            match self.tracked.get(&(from - 1)) {
                Some(hash) if canonical(from - 1) != Some(*hash) => from -= 1,
                _ => break,
            }
        }
        let mut rows = Vec::new();
        let mut recorded = Vec::new();
        for h in from..=tip_height {
            let Some(hash) = canonical(h) else { break };
            recorded.push((h, hash));
            // Genesis (and a block whose receipt is pruned) has no certificates to record.
            let (Ok(Some(block)), Ok(Some(receipt))) = (s.block(&hash), s.receipt(&hash)) else { continue };
            for (i, (c, r)) in block.body.certificates.iter().zip(&receipt.certificates).enumerate() {
                let voters = r.agreeing.len() + r.outliers.len();
                rows.push(doin_tracking::ChainOptimae {
                    block_height: h,
                    block_hash: hash.to_string(),
                    cert_index: i as u32,
                    timestamp_ms: block.header.body.timestamp_ms,
                    commit_id: r.commit.to_string(),
                    domain_id: r.domain.clone(),
                    optimizer: r.optimizer.to_string(),
                    outcome: format!("{:?}", r.outcome),
                    reported_performance: r.claimed.to_f64(),
                    verified_performance: r.median.to_f64(),
                    improved: r.improved,
                    effective_increment: r.increment as f64 / doin_primitives::FIXED_ONE as f64,
                    quorum_agreement: if voters == 0 { 1.0 } else { r.agreeing.len() as f64 / voters as f64 },
                    reward: (r.optimizer_reward.0 + r.bounty_paid.0) as f64 / 1e9,
                    experiment_id: c.reveal.body.experiment.experiment_id.to_string(),
                    config_hash: c.reveal.body.experiment.config_hash.to_string(),
                });
            }
        }
        drop(s);
        self.tracked.retain(|h, _| *h < from);
        self.tracked.extend(recorded);
        while self.tracked.len() > 256 {
            self.tracked.pop_first();
        }
        t.chain(from, rows);
    }

    /// Commits an optimizer's report (`held_since`: it was held behind others' claims since
    /// then), holds it, or settles it when it cannot be committed.
    async fn on_found(&mut self, f: Found, held_since: Option<Instant>) {
        // A newer report replaces the one held: the loop only reports improvements on it.
        let held_since = held_since.or_else(|| self.held.remove(&f.domain).map(|(_, since)| since));
        if let Some(rt) = self.domains.get_mut(&f.domain)
            && held_since.is_none()
        {
            rt.last_found = Some(json!({
                "performance": f.measurement.performance,
                "metrics": f.measurement.metrics,
                "evaluations": f.evaluations,
                "timestamp": doin_api::rfc3339(now_ms()),
            }));
        }
        let Some(rt) = self.domains.get(&f.domain) else { return };
        if rt.target_reached {
            self.settle(&f.domain);
            return;
        }
        let state = self.tip_state();
        let id = Self::domain_id(&f.domain);
        let Some(spec) = state.domain(&id).map(|d| d.spec.clone()) else {
            self.settle(&f.domain);
            return;
        };
        // Only commit what beats the verified champion (or the baseline); a report that is not
        // committed settles at once, so it does not bar the loop's next ones.
        let current = state
            .domain(&id)
            .and_then(|d| d.champion.as_ref().map(|c| c.performance))
            .unwrap_or(spec.baseline);
        let claimed = Metric::from_f64(f.measurement.performance)
            .filter(|c| certs::improves(&spec, current, *c, 0).unwrap_or(false));
        let params: Option<poo::Params> =
            BoundedVec::try_from_vec(rt.domain.space().to_params(&f.values)).ok();
        let (Some(claimed), Some(params)) = (claimed, params) else {
            self.settle(&f.domain);
            return;
        };
        // Near the optimum distinct candidates round to the same on-chain parameters. Those
        // already revealed (by anyone), or in a commit of ours not revealed yet, are never
        // committed again: evaluators evaluate only the first reveal of a parameter set, in
        // the order each saw them, so two commits of one set split the quorums between them
        // and neither completes (a 4-node devnet stalled on such a pair, everyone holding
        // behind it).
        let params_hash = Hash::of(&encode(&params));
        if self.params_first.contains_key(&params_hash)
            || self.my_reveals.iter().any(|(_, r)| Hash::of(&encode(&r.body.params)) == params_hash)
        {
            tracing::debug!(
                domain = f.domain,
                "these parameters were committed already; not committed again"
            );
            self.settle(&f.domain);
            return;
        }
        // Verification is the network's cost of a claim: one that another optimizer's better
        // claim, now in verification, would likely make late waits for that claim's outcome
        // (bounded by `hold_cap`, so a claim that never settles holds no one for long).
        match self.standing_of(&id, &spec, claimed) {
            Standing::Clear => {}
            Standing::Beaten => {
                tracing::debug!(
                    domain = f.domain,
                    claimed = claimed.to_f64(),
                    "an accepted claim beats this report; not committed"
                );
                self.settle(&f.domain);
                return;
            }
            Standing::Behind => {
                let since = held_since.unwrap_or_else(Instant::now);
                if since.elapsed() < hold_cap(self.quorum_timeout, &spec) {
                    if held_since.is_none() {
                        self.emit("held", Some(f.domain.as_str()), json!({ "claimed": claimed.to_f64() }));
                    }
                    tracing::debug!(
                        domain = f.domain,
                        claimed = claimed.to_f64(),
                        "a better claim is in verification; holding this one"
                    );
                    self.held.insert(f.domain.clone(), (f, since));
                    return;
                }
                tracing::info!(
                    domain = f.domain,
                    held_s = since.elapsed().as_secs(),
                    "claim held past the cap; committing it"
                );
            }
        }
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let commit = Signed::sign(
            CommitBody {
                domain: id.clone(),
                optimizer: self.me,
                optimae_hash: poo::optimae_hash(&params, &salt, &self.me),
                claimed,
                reference_block: state.tip().hash,
            },
            &self.key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: self.me,
                params,
                salt,
                artifact: None,
                experiment: poo::ExperimentMeta {
                    experiment_id: doin_primitives::BoundedString::new(rt.experiment.0.as_str())
                        .unwrap_or_default(),
                    round: f.evaluations,
                    config_hash: rt.experiment.1,
                },
            },
            &self.key,
        );
        println!(
            "commit {} {} claimed {} after {} evaluations",
            f.domain,
            commit.id(),
            claimed.to_f64(),
            f.evaluations
        );
        if self.my_claims.len() >= MAX_PENDING {
            // Claims dropped from the record settle now (nothing would settle them later).
            let domains: HashSet<String> = self.my_claims.drain().map(|(_, (d, _))| d).collect();
            for d in domains {
                self.settle(&d);
            }
        }
        self.my_claims.insert(commit.id(), (f.domain.clone(), Instant::now()));
        self.publish_commit(commit, reveal).await;
    }

    /// Gossips our commit for inclusion (on the blocks topic: any seal leader may include it)
    /// and keeps its reveal until the commit is sealed on our chain.
    async fn publish_commit(&mut self, commit: Commit, reveal: Reveal) {
        self.pool_commit(&commit);
        self.on_commit(commit.clone());
        self.publish(Topic::Blocks, GossipMessage::Commit(Box::new(commit))).await;
        self.my_reveals.push((Instant::now(), reveal));
        self.poked = true;
    }

    /// Keeps a commit (admitted by the gossip checks, or ours) for inclusion in our blocks.
    fn pool_commit(&mut self, commit: &Commit) {
        if self.commit_pool.len() < MAX_PENDING && !self.done.contains(&commit.id()) {
            self.commit_pool.entry(commit.id()).or_insert_with(|| (commit.clone(), Instant::now()));
        }
    }

    /// Pooled commits our next block may include: valid against `state`, at most
    /// `max_block_commits`, `max_account_commits` per optimizer, in id order.
    fn includable_commits(&mut self, state: &State) -> Vec<Commit> {
        let p = state.params();
        let mut refused = Vec::new();
        let mut per_account: HashMap<Address, u32> = HashMap::new();
        let mut out = Vec::new();
        for (id, (c, _)) in &self.commit_pool {
            if out.len() >= p.max_block_commits as usize {
                break;
            }
            match commits::check_commit(state, c) {
                Ok(()) => {
                    let n = per_account.entry(c.body.optimizer).or_default();
                    if *n < p.max_account_commits {
                        *n += 1;
                        out.push(c.clone());
                    }
                }
                // A reference not on our chain may be a block still on its way (or on a fork
                // we may reorg to): kept until `on_tip` ages it out.
                Err(doin_consensus::CertError::Reference(_)) => {}
                Err(e) => {
                    tracing::debug!(commit = %id, error = %e, "pooled commit cannot be included; dropped");
                    refused.push(*id);
                }
            }
        }
        for id in refused {
            self.commit_pool.remove(&id);
        }
        out
    }

    /// Where `claimed` stands against the claims of `domain` this node knows ([`standing`]).
    /// In verification: another optimizer's commit with no certificate here yet, revealed less
    /// than [`hold_cap`] ago (and not a copy), or not yet revealed but still due.
    fn standing_of(
        &self,
        domain: &doin_primitives::DomainId,
        spec: &doin_primitives::DomainSpec,
        claimed: Metric,
    ) -> Standing {
        let certified = self
            .certs
            .values()
            .filter(|c| c.cert.commit.body.domain == *domain && c.cert.outcome == Outcome::Accept)
            .map(|c| c.median);
        let cap = hold_cap(self.quorum_timeout, spec);
        let state = self.tip_state();
        let in_flight = self
            .commits
            .iter()
            .filter(|(id, seen)| {
                let body = &seen.commit.body;
                body.domain == *domain
                    && body.optimizer != self.me
                    // Only behind optimizers whose claims have verified (reputation left after
                    // their rejects): a stream of inflated claims from a liar or a newcomer
                    // holds no one.
                    && state.reputation(&body.optimizer, domain) > 0
                    && !self.certs.contains_key(*id)
                    && match self.reveals.get(*id) {
                        Some((reveal, at)) => {
                            at.elapsed() < cap
                                && self
                                    .params_first
                                    .get(&Hash::of(&encode(&reveal.body.params)))
                                    .is_none_or(|first| first == *id)
                        }
                        None => seen.at.elapsed() < self.seal_wait,
                    }
            })
            .map(|(_, seen)| seen.commit.body.claimed);
        match standing(spec.direction, claimed, certified, in_flight) {
            // Our peers forward at most PER_ACCOUNT pending commits of ours: wait for one to
            // settle rather than commit one they would drop.
            Standing::Clear if self.gossip.pending_by(&self.me) >= crate::gossip_check::PER_ACCOUNT => {
                Standing::Behind
            }
            other => other,
        }
    }

    /// Starts `domain`'s optimizer loop if it was waiting for peers (`peer`: the one that
    /// subscribed to the domain's topic; `None`: the wait ran out).
    fn stop_waiting(&mut self, domain: &str, peer: Option<PeerId>) {
        let Some(rt) = self.domains.get_mut(domain) else { return };
        if rt.waiting_for_peers.take().is_none() {
            return;
        }
        match peer {
            Some(peer) => {
                tracing::info!(domain, %peer, "enough peers listen on the domain's topic; optimizing")
            }
            None => tracing::warn!(
                domain,
                waited_s = PEER_WAIT.as_secs(),
                "no peer listens on the domain's topic; optimizing alone (claims may find no quorum)"
            ),
        }
        rt.sync_pause();
    }

    /// Tells `domain`'s optimizer loop that a claim of ours settled.
    fn settle(&self, domain: &str) {
        if let Some(ctl) = self.domains.get(domain).and_then(|rt| rt.control.as_ref()) {
            let _ = ctl.try_send(Control::Settled);
        }
    }

    /// What a block or a commit may call for at once: the new tip's consequences, our reveals
    /// whose commits it sealed, and a block if we lead the seal slot.
    async fn react(&mut self) {
        self.on_tip();
        let state = self.tip_state();
        self.release_reveals(&state).await;
        self.produce().await;
    }

    /// Gossips our reveals whose commits are sealed on our chain (their quorums are drawn).
    async fn release_reveals(&mut self, state: &State) {
        // Reveals whose commits are sealed on our chain (their quorums are drawn); those whose
        // commits never were within the claim deadline are dropped.
        let deadline = self.claim_deadline;
        let due: Vec<Reveal> = {
            let (due, keep): (Vec<_>, Vec<_>) =
                self.my_reveals.drain(..).partition(|(_, r)| quorum::sealed(state, &r.body.commit).is_some());
            self.my_reveals = keep.into_iter().filter(|(at, _)| at.elapsed() < deadline).collect();
            due.into_iter().map(|(_, r)| r).collect()
        };
        for reveal in due {
            let domain = self
                .commits
                .get(&reveal.body.commit)
                .map(|c| c.commit.body.domain.to_string())
                .or_else(|| self.gossip.domain_of(&reveal.body.commit));
            // A commit forgotten meanwhile (certified, or its reference aged out) is not revealed.
            let Some(domain) = domain else { continue };
            self.publish(Topic::Optimae(domain), GossipMessage::Reveal(Box::new(reveal.clone()))).await;
            self.on_reveal(reveal, Instant::now());
        }
    }

    async fn on_tick(&mut self) {
        let state = self.tip_state();
        self.refresh_live(&state);

        // Double votes the gossip checks caught: slash them through our blocks and gossip the
        // evidence so that every producer can.
        for evidence in self.gossip.take_evidence() {
            let e = &evidence.first.body;
            println!("double vote by {} on {} round {}", e.evaluator, e.commit, e.round);
            self.emit(
                "double_vote",
                None,
                json!({ "evaluator": e.evaluator.to_string(), "commit": e.commit.to_string(), "round": e.round }),
            );
            self.add_evidence(evidence.clone());
            self.publish(Topic::Blocks, GossipMessage::Evidence(Box::new(evidence))).await;
        }

        self.finality_step(&state).await;
        self.release_reveals(&state).await;
        let now = Instant::now();
        // Optimizer loops that waited long enough for peers start alone.
        let expired: Vec<String> = self
            .domains
            .iter()
            .filter(|(_, rt)| rt.waiting_for_peers.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for domain in expired {
            self.stop_waiting(&domain, None);
        }
        // Our claims that never settled (lost, or their certificate refused) stop barring.
        let deadline = self.claim_deadline;
        let expired: Vec<Hash> =
            self.my_claims.iter().filter(|(_, (_, at))| at.elapsed() >= deadline).map(|(k, _)| *k).collect();
        for id in expired {
            if let Some((domain, _)) = self.my_claims.remove(&id) {
                tracing::info!(commit = %id, domain, "own claim unsettled past the deadline");
                self.settle(&domain);
            }
        }
        // Held reports whose rival settled (or that were held long enough) are looked at again.
        let release: Vec<String> = self
            .held
            .iter()
            .filter(|(domain, (f, since))| {
                let id = Self::domain_id(domain);
                let Some(spec) = state.domain(&id).map(|d| &d.spec) else { return true };
                since.elapsed() >= hold_cap(self.quorum_timeout, spec)
                    || Metric::from_f64(f.measurement.performance)
                        .is_none_or(|c| self.standing_of(&id, spec, c) != Standing::Behind)
            })
            .map(|(domain, _)| domain.clone())
            .collect();
        for domain in release {
            if let Some((f, since)) = self.held.remove(&domain) {
                self.on_found(f, Some(since)).await;
            }
        }
        // Quorums that ran out of time escalate.
        let waiting: Vec<Hash> = self
            .reveals
            .iter()
            .filter(|(k, (_, at))| {
                !self.certs.contains_key(*k)
                    && !self.escalated.contains(*k)
                    && self
                        .commits
                        .get(*k)
                        .and_then(|seen| state.domain(&seen.commit.body.domain))
                        .is_some_and(|d| self.votes_missing(k, *at, &d.spec))
            })
            .map(|(k, _)| *k)
            .collect();
        for commit in waiting {
            self.try_certify(commit);
        }
        self.produce().await;
    }

    /// Produces a block when this node may: a work block from ready certificates; as the seal
    /// leader of the current slot, a block that includes pooled commits or seals the tip's; or
    /// a heartbeat when it leads an idle chain's slot.
    async fn produce(&mut self) {
        let state = self.tip_state();
        let now = Instant::now();
        {
            let s = self.store.lock();
            self.certs.retain(|id, _| s.certificate_location(id).ok().flatten().is_none());
        }
        let ts = now_ms().max(state.meta().timestamp_ms + 1);
        // The seal leader of this slot: the only one who may include commits, or produce the
        // block after a block that included some (which it does at once). It produces only in
        // the first half of its slot, so that its block reaches the next slot's leader before
        // that one starts: leaders producing at a slot's boundary forked the chain, and a commit
        // included on both branches at different heights drew two different quorums.
        let slot_ms = state.params().seal_slot_ms.max(1);
        let early = ts.saturating_sub(state.meta().timestamp_ms + 1) % slot_ms < slot_ms.div_ceil(2);
        let seal_leader = early
            && commits::seal_slot(&state, ts)
                .is_some_and(|slot| commits::seal_leader(&state, slot).is_none_or(|l| l == self.me));
        let sealing = state.meta().commits_in_tip > 0;
        if sealing && !seal_leader {
            return;
        }
        let mut commits = if seal_leader { self.includable_commits(&state) } else { Vec::new() };
        // Oldest first: when more are ready than a block carries, certificates assembled earlier
        // (originals before any later copy of their parameters) go first. The seal leader
        // carries every certificate it holds: nobody else may produce now.
        let mut ready: Vec<(Instant, Hash)> = self
            .certs
            .iter()
            .filter(|(_, c)| seal_leader || c.ready_at <= now)
            .map(|(k, c)| (c.ready_at, *k))
            .collect();
        ready.sort();
        let mut ready: Vec<Hash> = ready.into_iter().map(|(_, k)| k).collect();
        ready.truncate(state.params().max_block_certs as usize);
        let mut txs = self.mempool.select(&state, (state.params().max_block_txs as usize).min(1000));
        if !ready.is_empty()
            && let Some(block) = self.build(&state, ts, BlockKind::Work, &mut txs, &mut ready, &mut commits)
        {
            self.import_and_announce(block).await;
            return;
        }
        // Rejects, trusted-domain accepts and late accepts (honest, but no gain over the champion)
        // add no work: a heartbeat carries them, so penalties, unverified champions and returned
        // bonds land while nothing verified improves.
        let mut zero_work: Vec<Hash> = ready
            .iter()
            .filter(|id| self.certs.get(*id).is_some_and(|c| adds_no_work(&state, c)))
            .copied()
            .collect();
        let seal_block = seal_leader && (sealing || !commits.is_empty());
        if !seal_block {
            // Heartbeat by the slot leader once the chain has been idle long enough.
            if ts < state.meta().timestamp_ms + state.params().max_block_interval_ms {
                return;
            }
            let Some(slot) = heartbeat_slot(&state, ts) else { return };
            if heartbeat_leader(&state, slot).is_some_and(|l| l != self.me) {
                return;
            }
        }
        let carried = !zero_work.is_empty();
        let mut block = self.build(&state, ts, BlockKind::Heartbeat, &mut txs, &mut zero_work, &mut commits);
        if block.is_none() && carried {
            // Whatever the rules found wrong with carrying them, the block itself must land.
            block = self.build(&state, ts, BlockKind::Heartbeat, &mut txs, &mut Vec::new(), &mut commits);
        }
        if let Some(block) = block {
            self.import_and_announce(block).await;
        }
    }

    /// Builds a block of `kind` with transactions `txs`, the certificates `certs` names and
    /// `commits`, dropping (from the pools, too) whichever item the rules refuse, up to 8 tries.
    /// `None` when no block can be built now (for work blocks: the certificates do not reach
    /// the threshold).
    fn build(
        &mut self,
        state: &State,
        timestamp_ms: u64,
        kind: BlockKind,
        txs: &mut Vec<Transaction>,
        certs: &mut Vec<Hash>,
        commits: &mut Vec<Commit>,
    ) -> Option<Block> {
        let max_votes = doin_primitives::finality::MAX_BLOCK_FINALITY_VOTES;
        let mut finality_votes =
            doin_consensus::finality::includable(state, &self.gossip.finality_votes(), max_votes);
        for _ in 0..8 {
            let finality_evidence: Vec<FinalityEvidence> = self
                .finality_evidence
                .iter()
                .filter(|e| doin_consensus::finality::check_evidence(state, e).is_ok())
                .cloned()
                .collect();
            let evidence: Vec<DoubleVoteEvidence> = self
                .evidence
                .iter()
                .filter(|e| doin_consensus::certs::check_evidence(state, e).is_ok())
                .take(doin_primitives::block::MAX_BLOCK_EVIDENCE)
                .cloned()
                .collect();
            let evidence_ids: Vec<Hash> = evidence.iter().map(DoubleVoteEvidence::id).collect();
            let body = BlockBody {
                transactions: BoundedVec::try_from_vec(txs.clone()).unwrap_or_default(),
                certificates: BoundedVec::try_from_vec(
                    certs.iter().filter_map(|id| self.certs.get(id).map(|c| c.cert.clone())).collect(),
                )
                .unwrap_or_default(),
                evidence: BoundedVec::try_from_vec(evidence).unwrap_or_default(),
                commits: BoundedVec::try_from_vec(commits.clone()).unwrap_or_default(),
                finality_votes: BoundedVec::try_from_vec(finality_votes.clone()).unwrap_or_default(),
                finality_evidence: BoundedVec::try_from_vec(finality_evidence.clone()).unwrap_or_default(),
            };
            match build_block(state, BlockTemplate { key: &self.key, timestamp_ms, kind, body }) {
                Ok((block, _, _)) => return Some(block),
                Err(BlockError::Certificate { index, source, .. }) if index < certs.len() => {
                    let id = certs.remove(index);
                    self.certs.remove(&id);
                    if refused_for_good(&source) {
                        // Parameters taken, commit certified, …: forget the commit, or the
                        // next tick would assemble it again.
                        tracing::info!(commit = %id, error = %source, "certificate dropped");
                        self.forget(id);
                    } else {
                        // Its commit is not sealed on this chain (yet), or sealed at another
                        // height than where its votes were drawn (a reorg): assembled again
                        // from the votes of the quorum this chain draws.
                        tracing::debug!(commit = %id, error = %source, "certificate set aside");
                    }
                }
                Err(BlockError::Commit { index, source, .. }) if index < commits.len() => {
                    let c = commits.remove(index);
                    tracing::info!(commit = %c.id(), error = %source, "commit dropped");
                    self.commit_pool.remove(&c.id());
                }
                // The block's own transactions or certificates changed what the vote rests on
                // (a stake): it waits for the next block.
                Err(BlockError::FinalityVote { index, source }) if index < finality_votes.len() => {
                    tracing::debug!(error = %source, "finality vote left out");
                    finality_votes.remove(index);
                }
                Err(BlockError::FinalityEvidence { index, source }) => {
                    tracing::info!(error = %source, "finality evidence dropped");
                    if let Some(e) = finality_evidence.get(index) {
                        let offence = e.offence();
                        self.finality_evidence.retain(|x| x.offence() != offence);
                    }
                }
                Err(BlockError::Evidence { index, reason }) => {
                    tracing::info!(%reason, "evidence dropped");
                    let id = evidence_ids.get(index).copied();
                    self.evidence.retain(|e| Some(e.id()) != id);
                }
                Err(BlockError::Transaction { index, source, .. }) if index < txs.len() => {
                    tracing::info!(error = %source, "transaction dropped");
                    self.mempool.remove(&txs.remove(index).id());
                }
                // Too big in bytes: carry less, the rest waits for the next block.
                Err(BlockError::Limit(_)) if certs.len() + txs.len() + commits.len() > 1 => {
                    if certs.len() > 1 {
                        certs.truncate(certs.len() / 2);
                    } else if commits.len() > 1 {
                        commits.truncate(commits.len() / 2);
                    } else {
                        txs.truncate(txs.len() / 2);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?kind, "block not built");
                    return None;
                }
            }
        }
        None
    }

    /// Finality: votes this node owes (signed after their slashing-protection record is on
    /// disk) and conflicting votes the gossip checks caught, gossiped for every producer.
    async fn finality_step(&mut self, state: &State) {
        for evidence in self.gossip.take_finality_evidence() {
            let voter = evidence.first.body.voter;
            println!(
                "finality offence by {voter} targets {} {}",
                evidence.first.body.target.height, evidence.second.body.target.height
            );
            self.emit("finality_offence", None, json!({ "voter": voter.to_string() }));
            self.add_finality_evidence(evidence.clone());
            self.publish(Topic::Blocks, GossipMessage::FinalityEvidence(Box::new(evidence))).await;
        }
        if self.adversary == Some(Adversary::DoubleFinalityVote) {
            for vote in crate::finality::equivocate(state, &self.key, &mut self.voter).into_iter().flatten() {
                self.publish(Topic::Blocks, GossipMessage::FinalityVote(Box::new(vote))).await;
            }
            return;
        }
        match self.voter.next_vote(state, &self.key) {
            Ok(Some(vote)) => {
                let b = &vote.body;
                tracing::debug!(source = b.source.height, target = b.target.height, "finality vote");
                let message = GossipMessage::FinalityVote(Box::new(vote));
                self.gossip.admit_own(&message);
                self.publish(Topic::Blocks, message).await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot vote for finality"),
        }
    }

    /// Keeps finality evidence for our blocks (once each, at most a block's worth).
    fn add_finality_evidence(&mut self, evidence: FinalityEvidence) {
        let offence = evidence.offence();
        if self.finality_evidence.len() < doin_primitives::finality::MAX_BLOCK_FINALITY_EVIDENCE
            && !self.finality_evidence.iter().any(|e| e.offence() == offence)
        {
            self.finality_evidence.push(evidence);
        }
    }

    /// Keeps double-vote evidence for our blocks (once each, at most a block's worth).
    fn add_evidence(&mut self, evidence: DoubleVoteEvidence) {
        let id = evidence.id();
        if self.evidence.len() < doin_primitives::block::MAX_BLOCK_EVIDENCE
            && !self.evidence.iter().any(|e| e.id() == id)
        {
            self.evidence.push(evidence);
        }
    }

    /// A commit is done (certified, or its certificate refused for good): forget its pipeline
    /// state, and remember it so a late copy of its messages is not processed again.
    fn forget(&mut self, id: Hash) {
        self.gossip.settle(&id);
        if self.done.len() >= MAX_PENDING * 4 {
            self.done.clear();
        }
        self.escalated.remove(&id);
        self.first_vote_at.remove(&id);
        self.votes.remove(&id);
        self.reveals.remove(&id);
        self.commits.remove(&id);
        self.done.insert(id);
    }

    async fn import_and_announce(&mut self, block: Block) {
        let h = &block.header.body;
        tracing::debug!(
            height = h.height,
            kind = ?h.kind,
            since_parent_ms = h.timestamp_ms.saturating_sub(self.tip_state().meta().timestamp_ms),
            commits = block.body.commits.len(),
            certificates = block.body.certificates.len(),
            "producing a block"
        );
        if let Err(e) = self.store.lock().import(&block) {
            tracing::warn!(error = %e, "own block refused by the store");
            return;
        }
        let compact = CompactBlock::of(&block);
        self.publish(Topic::Blocks, GossipMessage::Block(Box::new(compact))).await;
        self.on_tip();
    }

    /// Reacts to a new tip: prints it, injects new champions, pauses domains at their target.
    fn on_tip(&mut self) {
        let (state, tip) = {
            let s = self.store.lock();
            (s.tip().clone(), s.tip().tip().hash)
        };
        if tip == self.last_tip {
            return;
        }
        self.last_tip = tip;
        self.gossip.set_state(state.clone());
        // Evidence the chain has used (or can no longer use) leaves the pool.
        self.evidence.retain(|e| certs::check_evidence(&state, e).is_ok());
        self.finality_evidence.retain(|e| doin_consensus::finality::check_evidence(&state, e).is_ok());
        let (justified, finalized) = (state.meta().justified, state.meta().finalized);
        if (justified.height, finalized.height) != self.finality_shown {
            if justified.height != self.finality_shown.0 {
                println!("justified {} {}", justified.height, justified.hash);
            }
            if finalized.height != self.finality_shown.1 {
                println!("finalized {} {}", finalized.height, finalized.hash);
                self.emit(
                    "finalized",
                    None,
                    json!({ "height": finalized.height, "hash": finalized.hash.to_string() }),
                );
            }
            self.finality_shown = (justified.height, finalized.height);
        }
        let block = self.store.lock().block(&tip).ok().flatten();
        let certs = block.as_ref().map_or(0, |b| b.body.certificates.len());
        println!("block {} {} work {} certs {certs}", state.height(), tip, state.meta().cumulative_work);
        self.emit(
            "block",
            None,
            json!({
                "height": state.height(),
                "hash": tip.to_string(),
                "kind": block.as_ref().map(|b| format!("{:?}", b.header.body.kind).to_lowercase()),
                "generator": block.as_ref().map(|b| b.header.body.generator.to_string()),
                "certificates": certs,
                "transactions": block.as_ref().map_or(0, |b| b.body.transactions.len()),
                "cumulative_work": state.meta().cumulative_work as f64 / doin_primitives::FIXED_ONE as f64,
            }),
        );
        self.track_chain(state.height());
        if let Some(block) = block {
            for t in block.body.transactions.iter() {
                self.mempool.remove(&t.id());
            }
            for c in block.body.certificates.iter() {
                let id = c.commit.id();
                // A certificate is a reveal, too: its parameters are taken.
                self.params_first.entry(Hash::of(&encode(&c.reveal.body.params))).or_insert(id);
                self.forget(id);
                // Our claim settled (champion or not): it stops barring the loop's next
                // candidates, whose bar is the champion again (a lucky measurement here must
                // not stall our optimizer).
                if self.my_claims.remove(&id).is_some() {
                    self.settle(c.commit.body.domain.as_str());
                }
            }
        }
        for (id, rt) in self.domains.iter_mut() {
            let Some(ds) = state.domain(&Self::domain_id(id)) else { continue };
            let Some(champion) = &ds.champion else { continue };
            if rt.champion == Some(champion.commit) {
                continue;
            }
            rt.champion = Some(champion.commit);
            println!(
                "champion {id} {} by {} at {}",
                champion.performance.to_f64(),
                champion.optimizer,
                champion.height
            );
            self.events.emit(
                "champion",
                Some(id.as_str()),
                json!({
                    "performance": champion.performance.to_f64(),
                    "optimizer": champion.optimizer.to_string(),
                    "commit": champion.commit.to_string(),
                    "height": champion.height,
                }),
            );
            // The champion's parameters, from its certificate on chain.
            let params = {
                let s = self.store.lock();
                s.certificate_location(&champion.commit).ok().flatten().and_then(|(block, i)| {
                    s.block(&block).ok().flatten().and_then(|b| {
                        b.body.certificates.get(i as usize).map(|c| c.reveal.body.params.to_vec())
                    })
                })
            };
            let perf = champion.performance.to_f64();
            let loss = if rt.domain.higher_is_better() { -perf } else { perf };
            if let (Some(params), Some(ctl)) = (params, &rt.control) {
                let values = rt.domain.space().from_params(&params);
                let _ = ctl.try_send(Control::Champion(values, loss));
            }
            let reached = ds
                .spec
                .target
                .is_some_and(|t| ds.spec.direction.gain(champion.performance, t).is_some_and(|g| g >= 0));
            if reached && !rt.target_reached {
                println!(
                    "target {id} reached {perf} at height {} evaluations {}",
                    state.height(),
                    rt.evaluations.load(Ordering::Relaxed)
                );
                self.events.emit(
                    "target",
                    Some(id.as_str()),
                    json!({
                        "performance": perf,
                        "height": state.height(),
                        "evaluations": rt.evaluations.load(Ordering::Relaxed),
                    }),
                );
            }
            if reached != rt.target_reached {
                rt.target_reached = reached;
                rt.sync_pause();
            }
        }
        // Reveals that waited for their commit's seal: look again now it may be here.
        let waiting: Vec<Hash> = std::mem::take(&mut self.awaiting_seal).into_iter().collect();
        for id in waiting {
            if let Some((reveal, _)) = self.reveals.get(&id).cloned() {
                self.consider(reveal);
            }
        }
        // Forget pipeline state of commits whose reference block left the window. One whose
        // reference is not on our chain (a block still on its way, or on a fork we may yet
        // reorg to) stays as long as a claim may wait for its certificate: dropping it at the
        // first tip change left a quorum member that later reorged to the optimizer's chain
        // unable to vote, and the claim waited out `quorum_timeout` to escalate.
        let (window, height, grace) = (state.params().max_reference_age, state.height(), self.claim_deadline);
        let alive = |id: &Hash, c: &Commit, at: Instant| match state.committed_at(id) {
            // Included: its certificate window is open.
            Some(_) => true,
            None => match state.recent_block(&c.body.reference_block) {
                Some(r) => height.saturating_sub(r.height) <= window,
                None => at.elapsed() < grace,
            },
        };
        self.commits.retain(|id, c| alive(id, &c.commit, c.at));
        // Pooled commits leave once included on our chain, or once they can never be.
        self.commit_pool.retain(|id, (c, at)| {
            state.committed_at(id).is_none()
                && match state.recent_block(&c.body.reference_block) {
                    Some(r) => height.saturating_sub(r.height) < window,
                    None => at.elapsed() < grace,
                }
        });
        let commits = &self.commits;
        self.reveals.retain(|k, _| commits.contains_key(k));
        self.votes.retain(|k, _| commits.contains_key(k));
        self.evaluating.retain(|(k, _)| commits.contains_key(k));
        self.escalated.retain(|k| commits.contains_key(k));
        self.first_vote_at.retain(|k, _| commits.contains_key(k));
        self.awaiting_seal.retain(|k| commits.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use doin_consensus::{certs, testkit::TestNet};
    use doin_primitives::{BlockBody, BoundedVec, FIXED_ONE, Metric};

    use super::*;

    fn ready(cert: Certificate) -> ReadyCert {
        let median = certs::median(&cert.votes.iter().map(|v| v.measured).collect::<Vec<_>>());
        ReadyCert { cert, ready_at: Instant::now(), median }
    }

    /// A report is committed unless an accepted median already matches it (it would land late)
    /// or another optimizer's better claim is in verification (held until that settles).
    #[test]
    fn a_claim_waits_only_behind_better_claims() {
        use doin_primitives::domain::Direction::{Maximize, Minimize};
        let m = |x: i64| Metric(x);
        assert_eq!(standing(Maximize, m(90), [], []), Standing::Clear);
        assert_eq!(standing(Maximize, m(90), [m(80)], [m(85), m(90)]), Standing::Clear);
        assert_eq!(standing(Maximize, m(90), [m(80)], [m(91)]), Standing::Behind);
        assert_eq!(standing(Maximize, m(90), [m(90)], [m(95)]), Standing::Beaten);
        assert_eq!(standing(Minimize, m(90), [], [m(91), m(95)]), Standing::Clear);
        assert_eq!(standing(Minimize, m(90), [m(95)], [m(89)]), Standing::Behind);
        assert_eq!(standing(Minimize, m(90), [m(89)], []), Standing::Beaten);
    }

    /// The node's heartbeat filter agrees with consensus: a late accept and a reject ride a
    /// heartbeat, an improvement needs a work block.
    #[test]
    fn late_accepts_and_rejects_ride_heartbeats_improvements_do_not() {
        let mut net = TestNet::new(8, 4, 3);
        let first = net.improving_certificate(4, 2.0);
        net.work_block(4, vec![first]).expect("the first improvement lands");
        let m = |x: f64| Metric((x * FIXED_ONE as f64) as i64);
        // Honest (measured as claimed) but worse than the champion: late.
        let late = ready(net.certificate(5, vec![7, 7, 7, 7], m(3.0), |_| m(3.0)));
        assert_eq!(late.cert.outcome, Outcome::Accept);
        // Claims 1.0, measured 5.0: rejected.
        let reject = ready(net.certificate(6, vec![9, 9, 9, 9], m(1.0), |_| m(5.0)));
        assert_eq!(reject.cert.outcome, Outcome::Reject);
        let better = ready(net.improving_certificate(5, 1.0));
        assert!(adds_no_work(&net.state, &late));
        assert!(adds_no_work(&net.state, &reject));
        assert!(!adds_no_work(&net.state, &better));
        let body = |c: Vec<Certificate>| BlockBody {
            certificates: BoundedVec::try_from_vec(c).expect("few certificates"),
            ..Default::default()
        };
        let before = net.state.clone();
        net.heartbeat_with(body(vec![better.cert.clone()])).expect_err("an improvement is work");
        net.state = before;
        let receipt = net.heartbeat_with(body(vec![late.cert, reject.cert])).expect("zero-work certificates");
        assert_eq!(receipt.certificates.len(), 2);
        assert!(receipt.certificates.iter().all(|r| r.increment == 0));
    }
}
