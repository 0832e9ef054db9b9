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
//!
//! This module holds the engine's state; its behaviour is split by responsibility:
//! [`start`] (wiring and the event loop), [`follow`] (network routing, sync, and the shell of
//! [`crate::following`]),
//! [`pipeline`] (verification), [`claims`] (this node's own claims: the shell of
//! [`crate::own_claims`]), [`produce`] (blocks: the shell of [`crate::production`]),
//! [`timers`] (the periodic step), [`finality_votes`], [`participate`] (quorum seats),
//! [`rounds`] (federated rounds: the shell of [`crate::federated`]), [`disputes`] (inference
//! disputes this node's quorum seats re-execute),
//! [`status`] (API, events, tracking) and [`adversaries`] (test-only misbehaviour).

#[cfg(feature = "adversary")]
mod adversaries;
mod anchors;
mod claims;
mod disputes;
mod finality_votes;
mod follow;
mod optimizers;
mod participate;
mod payments;
mod pipeline;
mod produce;
mod rounds;
mod share;
mod start;
mod status;
mod timers;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use doin_consensus::{GenesisSpec, State};
use doin_net::{
    CompactBlock, GossipMessage, Multiaddr, NetworkEvent, NetworkHandle, PeerId, Topic,
    sync::{BlockSink, best_peer, sync_from},
};
use doin_optimize::{domain::Budget, driver::RunConfig};
use doin_primitives::{
    Address, Block, BoundedVec, Certificate, Commit, Hash, Keypair, Metric, Outcome, Reveal, Signed, Vote,
    VoteBody, poo,
};
use doin_storage::{ChainStore, StoreOptions};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    config::{DomainConfig, NodeConfig},
    domains,
    following::{Following, commit_alive},
    genesis,
    gossip_check::GossipCheck,
    intake::RevealIn,
    mempool::Mempool,
    optimizer::{self, Control, Found},
    own_claims::{Decision, Judge, OwnClaims, Standing, hold_cap, standing},
    participation::{self, EvalHealth, Participation},
    production::{Production, ReadyCert},
    store::SharedStore,
    tally,
    verification::{Considered, Evaluation, Ignored, Verdict, Verification, member_seed},
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

/// Whether this build carries the test-only adversaries (the `adversary` feature); without it
/// [`RunLimits::adversary`] is refused.
pub const ADVERSARIES: bool = cfg!(feature = "adversary");

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
    /// Publish its trials with inflated figures (every loss claimed 1 000 better than
    /// measured: a liar steering the other nodes' model-based optimizers).
    InflateTrials,
    /// As a federated supervisor, record every round with a model that is not the aggregate of
    /// its updates (a supervisor steering the job's model).
    TamperRoundModel,
    /// As an inference server, answer with altered outputs (the two largest swapped in every
    /// row) under an honestly signed receipt (a server saving work or steering its clients).
    WrongAnswers,
    /// As a marketplace provider, answer capability challenges without doing the work (one
    /// honest unit, the rest made up: a machine posing as faster than it is).
    FakeCapability,
}

struct DomainRt {
    domain: Arc<dyn doin_optimize::domain::Domain>,
    config: DomainConfig,
    control: Option<std::sync::mpsc::SyncSender<Control>>,
    /// The optimizer loop's pause flag ([`optimizer::LoopIo::paused`]).
    paused: Arc<AtomicBool>,
    /// Whether the champion reaches the target ([`crate::following`] says when it changes).
    target_reached: bool,
    /// Until when the optimizer loop waits for a peer subscribed to the domain's topic (`None`:
    /// not waiting). A commit gossiped to no one is lost, and the evaluators who missed it can
    /// never vote, so its quorum never completes.
    waiting_for_peers: Option<Instant>,
    /// Peers on the domain's topic the wait ends at: the other staked evaluators, at most
    /// [`PEERS_ENOUGH`] (a commit published to them directly reaches every quorum member that
    /// is up; one published to a single relay misses the peers that relay has not meshed yet).
    peers_needed: usize,
    /// Evaluations the optimizer loop ran, by purpose.
    evaluations: Arc<crate::optimizer::Spent>,
    /// The evaluations bought and done when the domain is optimized only on hire
    /// (`optimize_on_hire`).
    hired: Option<Arc<crate::market::hire::Allowance>>,
    /// What the optimizer runs now (`auto` says what it chose), once its loop started.
    running: optimizer::Running,
    /// The optimizer's latest report (for `/api/training`).
    last_found: Option<serde_json::Value>,
    /// This run's experiment id (32 hex) and the hash of the domain's configuration.
    experiment: (String, Hash),
    /// Outcomes of this node's evaluations of the domain (optimizer loop and quorums).
    health: Arc<EvalHealth>,
    /// Whether the node can evaluate the domain, and its stake saying so.
    participation: Participation,
    /// The latest probe's outcome, once it finished.
    probe: participation::ProbeSlot,
    /// Our latest stake transaction for the domain (leaving or rejoining its quorums).
    stake_tx: Option<Hash>,
    /// The verified champion's values (the probe's known-good point).
    champion_values: Option<Vec<doin_optimize::Value>>,
    /// Other nodes' trial batches to the optimizer loop (none: the domain does not share).
    trials_in: Option<std::sync::mpsc::SyncSender<crate::trials::Incoming>>,
    /// What the loop made of shared trials.
    sharing: Arc<crate::trials::share::SharingCounters>,
    /// The `seq` of this node's last trial batch for the domain.
    trial_seq: u64,
    /// Candidates the loop had evaluated when each of the domain's latest commits was first
    /// seen here (at most [`MAX_SEEN_CLAIMS`], oldest dropped): "evaluations to the claim" of
    /// the one that becomes the champion, printed beside the evaluations to its certificate.
    claims_seen_at: std::collections::VecDeque<(Hash, u64)>,
}

/// Commits a node remembers its evaluation count at for each domain.
const MAX_SEEN_CLAIMS: usize = 64;

struct Measured {
    commit: Hash,
    round: u8,
    seed: Hash,
    result: Result<Metric, String>,
    /// The reveal's model artifact measured on the domain's held-out data, if it attaches one
    /// and it could be fetched and run.
    artifact: Option<Metric>,
}

impl DomainRt {
    /// The optimizer loop searches unless the domain reached its target or the node still
    /// waits for peers on its topic. A domain on hire runs the evaluations bought past the
    /// target too (the client asked for them).
    fn sync_pause(&self) {
        let withdrawn = self.participation.standing() == crate::participation::Standing::Withdrawn;
        let target = self.target_reached && self.hired.is_none();
        self.paused.store(target || self.waiting_for_peers.is_some() || withdrawn, Ordering::Relaxed);
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
    /// Other optimizers' claims in verification: commits and reveals seen, who revealed each
    /// parameter set first, votes, evaluations owed ([`crate::verification`]).
    verification: Verification,
    quorum_timeout: Duration,
    /// This node's claims not yet settled, reports held and reveals waiting for their seal
    /// ([`crate::own_claims`]).
    claims: OwnClaims,
    /// How long a commitment of ours may stay unsettled before its optimizer loop stops
    /// waiting for it (lost reveal, quorum that never formed, orphaned reference).
    claim_deadline: Duration,
    /// What our blocks may carry (pooled commits, certificates assembled here, evidence) and
    /// when we may produce ([`crate::production`]).
    production: Production,
    mempool: Mempool,
    eval_slots: Arc<Semaphore>,
    measured_tx: mpsc::Sender<Measured>,
    /// How long a commit may take to be included and sealed (a few seal slots): another
    /// optimizer's unrevealed commit holds our claims this long at most.
    seal_wait: Duration,
    /// The tip, finality and champions last seen ([`crate::following`]).
    following: Following,
    /// The tip moved since the last tick: pending first-round quorums are looked at again (a
    /// member that left the domain's quorums on the new tip will not vote; `try_certify`
    /// escalates without waiting for the timeout).
    recheck_quorums: bool,
    syncing: Arc<Mutex<HashSet<PeerId>>>,
    bootstrap: Vec<Multiaddr>,
    #[cfg(feature = "adversary")]
    adversary: Option<Adversary>,
    /// Reveals the copying adversary copied.
    #[cfg(feature = "adversary")]
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
    /// Milliseconds from our commits to their certificates (the latest 4 096).
    cert_latency_ms: std::collections::VecDeque<u64>,
    /// When each repeating warning (by key) was last logged, and how many were held back since.
    warned: HashMap<String, (Instant, u64)>,
    /// A block or a commit arrived: react before the next tick (seal slots are short; a
    /// 100 ms tick per step added up to 300 ms to every claim).
    poked: bool,
    /// This node's finality votes, with their slashing protection record.
    voter: crate::finality::Voter,
    /// Peer polls so far.
    polls: u64,
    /// The node's data directory (the record of quorums it left).
    data_dir: std::path::PathBuf,
    /// The snapshot served to late joiners, refreshed as finality moves.
    snapshots: Arc<crate::snapshots::Snapshots>,
    /// The highest anchor checkpoint this node recorded on chain, and where it publishes them
    /// (its `GET /anchors`).
    anchored: (u64, String),
    /// Federated jobs this node supervises ([`crate::federated`]), shared with the HTTP API.
    jobs: Option<Arc<crate::federated::Jobs>>,
    /// Recorded models being fetched (or last tried), by hash: one download at a time each,
    /// retried after a backoff.
    fl_fetches: Arc<std::sync::Mutex<std::collections::BTreeMap<Hash, std::time::Instant>>>,
    /// Trained model artifacts: our claims', those measured here, the champions served.
    models: Arc<crate::models::Models>,
    /// The inference server and the channels paying it, if this node serves a domain.
    serving: Option<crate::serving::Serving>,
    /// Disputes of inference answers this node re-executes as a quorum member.
    arbiter: disputes::Arbiter,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs a node until Ctrl-C or the run limit.
pub fn run(config: NodeConfig, limits: RunLimits) -> Result<(), NodeError> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(other)?;
    runtime.block_on(start::run_async(config, limits))
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
    /// A transaction of this node's account with its next nonce, offering twice the base fee
    /// and a tip of 1.
    fn own_tx(&self, state: &State, kind: doin_primitives::TxKind) -> doin_primitives::Transaction {
        let base = state.meta().base_fee.0;
        let body = doin_primitives::TxBody {
            chain_id: state.meta().chain_id,
            sender: self.me,
            nonce: self.mempool.next_nonce(&self.me, state),
            max_fee: doin_primitives::Amount(base.saturating_mul(2).max(base + 2)),
            priority_fee: doin_primitives::Amount(1),
            kind,
        };
        Signed::sign(body, &self.key)
    }

    fn tip_state(&self) -> State {
        self.store.lock().tip().clone()
    }

    fn domain_id(id: &str) -> doin_primitives::DomainId {
        doin_primitives::DomainId::new(id).unwrap_or_default()
    }
}
