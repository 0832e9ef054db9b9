//! The node's HTTP API (DESIGN §8): the Python system's endpoints with their JSON shapes
//! (`/health`, `/status`, `/chain/*`, `/tasks/*`, `/fees`, `/peers`, the dashboard's `/api/*`),
//! DOIN's own (accounts with state proofs, `POST /tx`, domains, certificates, channels, the SSE
//! event stream `/events`, Prometheus `/metrics`, `/openapi.json`) and the dashboard at
//! `/dashboard`. Every request passes [`guard`] (rate limits, sizes, timeout, CORS). Errors are
//! JSON `{error, detail}` with a 4xx status; internal failures are an opaque 500, logged.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod dashboard;
pub mod events;
pub mod guard;
pub mod inference;
pub mod jobs;
pub mod market;
pub mod metrics;
pub mod openapi;
pub mod pouw;
pub mod server;
pub mod stats;
pub mod tasks;
pub mod views;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use doin_primitives::{Address, Block, FIXED_ONE, Hash, Transaction};
use doin_storage::ChainStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Most blocks one `/chain/blocks` request returns.
pub const MAX_BLOCKS_PER_REQUEST: u64 = 50;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What [`DomainStatus::running`] says of a domain optimized on hire while nothing is bought.
pub const WAITING_FOR_HIRE: &str = "waiting for a hire";

/// One configured domain as the status endpoints show it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DomainStatus {
    /// Runs the optimizer loop.
    pub optimize: bool,
    /// Takes part in quorums.
    pub evaluate: bool,
    /// Synthetic evaluation data.
    pub synthetic: bool,
    /// Trusted mode (`synthetic_data_validation: false`): claims are accepted unverified.
    pub trusted: bool,
    /// `target_performance`.
    pub target_performance: Option<f64>,
    /// The verified champion's performance.
    pub best_performance: Option<f64>,
    /// Whether the champion reached the target.
    pub converged: bool,
    /// Evaluations this node's optimizer loop ran (the sum of `evaluations_by_purpose`).
    pub evaluations: u64,
    /// Those evaluations by what they were for: `candidates` (the optimizer's own proposals),
    /// `checks` (other nodes' claims measured before their trials are trusted), `champions`
    /// (verified champions measured on this node's data), `second_opinions` (a candidate
    /// measured on other data before it is claimed).
    pub evaluations_by_purpose: std::collections::BTreeMap<String, u64>,
    /// The optimizer (built-in name or plugin command).
    pub optimizer: String,
    /// What it runs now (`auto: tpe` once `auto` chose; empty until the optimizer starts).
    pub running: String,
    /// The external domain plugin, if any.
    pub domain_plugin: Option<String>,
    /// The optimizer's latest reported candidate: its metrics, evaluations and time.
    pub training: Option<Value>,
    /// `serving`, `probing` (an evaluation failed; a known-good point is being evaluated) or
    /// `withdrawn` (cannot evaluate: the node left the domain's quorums).
    pub standing: String,
    /// The latest failure of this node's evaluations of the domain.
    pub evaluation_error: Option<String>,
    /// What this node's optimizer made of other nodes' trials.
    pub shared_trials: SharedTrials,
}

/// Shared search history of one domain, as this node's optimizer loop counted it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SharedTrials {
    /// `share_trials` is on for the domain.
    pub enabled: bool,
    /// Trials received from other nodes (in admitted batches).
    pub received: u64,
    /// Trials the optimizer learned (from senders whose claims agreed with its checks).
    pub used: u64,
    /// Spot checks of other nodes' claims that agreed with this node's measurement.
    pub checks_passed: u64,
    /// Senders caught by a check: every trial of theirs forgotten.
    pub senders_banned: u64,
    /// Other nodes' claims measured here (at most a fifth of the evaluations, past two).
    pub checks: u64,
    /// Senders trusted without a check of ours: the chain certified one of their claims.
    pub vouched_senders: u64,
    /// Senders whose trials are used now.
    pub trusted_senders: u64,
    /// This node's own trials sent.
    pub published: u64,
}

/// What the node reports about itself, refreshed by its event loop.
#[derive(Clone, Debug, Default)]
pub struct LiveStatus {
    /// Connected peers (libp2p ids).
    pub peers: Vec<String>,
    /// Domains by id.
    pub domains: BTreeMap<String, DomainStatus>,
    /// Commits seen whose certificate is not assembled yet.
    pub pending_commitments: usize,
    /// Quorums evaluating or escalated.
    pub pending_quorums: usize,
    /// Transactions in the mempool.
    pub mempool: usize,
    /// Evaluations this node is running for quorums (commit, domain, round, since).
    pub evaluating: Vec<Value>,
    /// The network's own metrics (libp2p, gossipsub), Prometheus text.
    pub net_metrics: String,
    /// Plugins this node runs and their counters.
    pub plugins: Vec<Value>,
    /// CPU seconds of the process and of evaluations, resident memory in MiB.
    pub usage: (f64, f64, f64),
    /// Optimae gossip refused by the state checks: rejected (peer penalized) and ignored.
    pub gossip_refused: (u64, u64),
    /// Commits the gossip checks hold as pending (forwarded, not settled).
    pub gossip_pending: usize,
    /// Double-vote and finality evidence waiting for a block.
    pub evidence_pending: usize,
    /// Finality votes held for blocks (own and gossiped).
    pub finality_votes_pending: usize,
    /// The tip height of the best peer at the last poll (`None`: no peer answered).
    pub network_height: Option<u64>,
    /// Connected peers that answered from another genesis at the last poll (another network):
    /// their libp2p id and genesis hash (at most 64).
    pub other_genesis: Vec<(String, String)>,
    /// Gossip scores of connected peers (libp2p id → score; below −80 a peer is graylisted:
    /// its gossip is ignored).
    pub peer_scores: BTreeMap<String, f64>,
    /// Peers banned now (at most 256 listed): their gossip score fell far below the graylist, so
    /// they were disconnected and are refused for `ban_duration`.
    pub banned_peers: Vec<String>,
    /// Peer discovery mechanisms running (kademlia always; mDNS when configured and allowed).
    pub discovery: Vec<String>,
    /// When the node's event loop last refreshed this (ms since the epoch; 0: never).
    pub refreshed_ms: u64,
}

/// Gossipsub's graylist threshold (`doin_net`'s peer-score parameters).
pub const GRAYLIST_SCORE: f64 = -80.0;

/// A transaction handed to the node, with the channel for its verdict.
#[derive(Debug)]
pub struct Submission {
    /// The transaction.
    pub tx: Transaction,
    /// The node's answer: the id, or why it was refused.
    pub reply: oneshot::Sender<Result<Hash, String>>,
}

/// Everything the handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The chain store.
    pub store: Arc<Mutex<ChainStore>>,
    /// Live status from the node's event loop.
    pub live: Arc<RwLock<LiveStatus>>,
    /// Where submitted transactions go.
    pub submit: mpsc::Sender<Submission>,
    /// The node's account address.
    pub address: Address,
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// The HTTP port.
    pub port: u16,
    /// Quorum assignments for external evaluators.
    pub tasks: Arc<Mutex<tasks::TaskQueue>>,
    /// Finished tasks go to the node, which signs the votes.
    pub completions: mpsc::Sender<(tasks::Task, tasks::Completion)>,
    /// The key writes other than signed transactions need (`x-api-key`); none: refused.
    pub api_key: Option<String>,
    /// Live events.
    pub events: Arc<events::EventBus>,
    /// Rate limits and HTTP counters.
    pub guard: Arc<guard::Guard>,
    /// When the node started.
    pub started: std::time::Instant,
    /// The experiment-tracking database `/stats*` read, if configured.
    pub stats: Option<stats::Stats>,
    /// The chain views' summaries of recent blocks.
    pub chain_cache: Arc<Mutex<views::ChainCache>>,
    /// The federated jobs this node supervises (`/api/job*`, `/api/cluster`), if any.
    pub jobs: Option<Arc<dyn jobs::JobApi>>,
    /// The node's inference server (`POST /inference` for the domains it serves), if any.
    pub inference: Option<Arc<dyn inference::InferenceApi>>,
    /// The node's marketplace (`/api/market*`), if any.
    pub market: Option<Arc<dyn market::MarketApi>>,
}

impl ApiState {
    /// Seconds since the node started.
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An API error: a status and a JSON body `{error, detail}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self { status, error, detail: detail.into() }
    }

    /// An opaque 500; the cause goes to the log only.
    fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "HTTP handler failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the node's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.error, "detail": self.detail }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/chain/status", get(chain_status))
        .route("/chain/blocks", get(chain_blocks))
        .route("/chain/block/{index}", get(chain_block))
        .route("/chain/block/hash/{hash}", get(views::block_by_hash))
        .route("/certificates/{commit}", get(views::certificate))
        .route("/channels/{id}", get(views::channel))
        .route("/disputes", get(views::disputes))
        .route("/disputes/{id}", get(views::dispute))
        .route("/api/model/{artifact}", get(inference::model))
        .route("/fees", get(fees))
        .route("/peers", get(peers))
        .route("/accounts/{address}", get(account))
        .route("/domains", get(domains))
        .route("/tx", post(submit_tx))
        .route("/tasks/pending", get(tasks_pending))
        .route("/tasks/claim", post(tasks_claim))
        .route("/tasks/complete", post(tasks_complete))
        .route("/stats", get(stats::summary))
        .route("/stats/experiments", get(stats::experiments))
        .route("/stats/rounds", get(stats::rounds))
        .route("/stats/chain-metrics", get(stats::chain_metrics))
        .route("/stats/export", get(stats::export))
        .route("/inference", post(inference::submit))
        .route("/inference/{task_id}", get(inference::status))
        .route("/events", get(events::stream))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::document))
        .route("/dashboard", get(dashboard::page))
        .route("/api/node", get(views::node))
        .route("/api/peers", get(views::peers))
        .route("/api/optimization", get(views::optimization))
        .route("/api/training", get(views::training))
        .route("/api/evaluations", get(views::evaluations))
        .route("/api/metrics", get(views::metrics))
        .route("/api/events", get(events::recent))
        .route("/api/chain", get(views::chain))
        .route("/api/plugins", get(views::plugins))
        .route("/api/economics", get(views::economics))
        .route("/api/channels", get(views::channels))
        .route("/api/inference", get(views::inference))
        .route("/anchors", get(views::anchors))
        .route("/pouw/status", get(pouw::status))
        .route("/pouw/health_metrics", get(pouw::health_metrics))
        .route("/pouw/economic_status", get(pouw::economic_status))
        .route("/pouw/stake_and_register", post(pouw::stake_and_register))
        .route("/pouw/ticket/{ticket_id}", get(pouw::ticket))
        .route("/api/channel/{id}/close", post(views::close_channel))
        .route("/api/jobs", get(jobs::list))
        .route("/api/job", post(jobs::create))
        .route("/api/job/{id}/model", get(jobs::model).post(jobs::offer_model))
        .route("/api/job/{id}/update", post(jobs::update))
        .route("/api/job/{id}/heartbeat", post(jobs::heartbeat))
        .route("/api/cluster/{id}", get(jobs::cluster))
        .route("/api/market", get(market::view))
        .route("/api/market/offer", post(market::offer))
        .route("/api/market/challenge", post(market::challenge))
        .route("/api/market/task", post(market::submit))
        .route("/api/market/task/{n}", get(market::task))
        .route("/api/market/hire", get(market::hires).post(market::hire))
        .route("/api/market/hire/{n}", get(market::hire_status))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
}

fn store(s: &ApiState) -> std::sync::MutexGuard<'_, ChainStore> {
    s.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn live(s: &ApiState) -> LiveStatus {
    s.live.read().map(|l| l.clone()).unwrap_or_default()
}

fn fixed(v: u128) -> f64 {
    v as f64 / FIXED_ONE as f64
}

fn doin(v: u128) -> f64 {
    v as f64 / 1e9
}

/// `healthy`, `degraded` or `unhealthy` (HTTP 503), with the measured reasons.
async fn health(State(s): State<ApiState>) -> Response {
    let l = live(&s);
    let (height, tip_ms, interval_ms, stakers) = {
        let st = store(&s);
        let state = st.tip();
        (
            state.height(),
            state.meta().timestamp_ms,
            state.params().max_block_interval_ms,
            state.stakes().count(),
        )
    };
    let report = health_of(&l, height, tip_ms, interval_ms, stakers, now_ms());
    let code = if report["status"] == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let mut body = report;
    body["port"] = s.port.into();
    if code != StatusCode::OK {
        // Like every error answer: `{error, detail}`, here beside the report.
        body["error"] = "unhealthy".into();
        body["detail"] = body["reasons"]
            .as_array()
            .map_or(String::new(), |r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .into();
    }
    (code, Json(body)).into_response()
}

/// Blocks behind the best peer that make a node degraded, and unhealthy.
const BEHIND_DEGRADED: u64 = 3;
const BEHIND_UNHEALTHY: u64 = 100;

/// The health verdict from what the node measured: peers (when others are staked), distance to
/// the best peer's tip, the age of the tip against `max_block_interval`, and plugin faults.
pub fn health_of(
    l: &LiveStatus,
    height: u64,
    tip_ms: u64,
    interval_ms: u64,
    stakers: usize,
    now_ms: u64,
) -> Value {
    let mut degraded: Vec<String> = Vec::new();
    let mut unhealthy: Vec<String> = Vec::new();
    if l.peers.is_empty() && stakers > 1 {
        degraded.push(format!("no peers ({stakers} accounts are staked on this chain)"));
    }
    if let Some((peer, genesis)) = l.other_genesis.first() {
        degraded.push(format!(
            "{} connected peers are on another network (peer {peer} has genesis {genesis}): every \
             machine must start from the same genesis.json",
            l.other_genesis.len()
        ));
    }
    let behind = l.network_height.map_or(0, |n| n.saturating_sub(height));
    if behind > BEHIND_UNHEALTHY {
        unhealthy.push(format!("{behind} blocks behind the network"));
    } else if behind > BEHIND_DEGRADED {
        degraded.push(format!("{behind} blocks behind the network"));
    }
    let idle_ms = now_ms.saturating_sub(tip_ms);
    if idle_ms > interval_ms.saturating_mul(10).max(60_000) {
        unhealthy.push(format!(
            "no block for {} s (max_block_interval {} s)",
            idle_ms / 1000,
            interval_ms / 1000
        ));
    } else if idle_ms > interval_ms.saturating_mul(3).max(10_000) {
        degraded.push(format!(
            "no block for {} s (max_block_interval {} s)",
            idle_ms / 1000,
            interval_ms / 1000
        ));
    }
    for p in &l.plugins {
        let name = p["name"].as_str().unwrap_or("plugin");
        let (calls, errors) = (p["calls"].as_u64().unwrap_or(0), p["errors"].as_u64().unwrap_or(0));
        if p["disabled"] == true {
            degraded.push(format!(
                "plugin {name} restarting with a backoff after {} faults in a row: {}",
                p["faults_in_row"], p["last_error"]
            ));
        } else if calls >= 10 && errors * 2 > calls {
            degraded.push(format!("plugin {name} failing: {errors} of {calls} calls"));
        }
    }
    for (id, d) in &l.domains {
        if d.standing == "withdrawn" {
            degraded.push(format!(
                "cannot evaluate {id}, left its quorums: {}",
                d.evaluation_error.as_deref().unwrap_or("probes failed")
            ));
        }
    }
    let status = if !unhealthy.is_empty() {
        "unhealthy"
    } else if !degraded.is_empty() {
        "degraded"
    } else {
        "healthy"
    };
    let reasons: Vec<String> = unhealthy.into_iter().chain(degraded).collect();
    json!({
        "status": status,
        "reasons": reasons,
        "chain_height": height + 1,
        "network_height": l.network_height.map(|h| h + 1),
        "peers": l.peers.len(),
        "last_block_age_s": idle_ms as f64 / 1000.0,
    })
}

async fn status(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let st = store(&s);
    let state = st.tip();
    let meta = state.meta();
    let balance = state.account(&s.address).balance.0;
    let mut holders: Vec<(String, f64)> =
        state.accounts().map(|(a, acc)| (a.to_string(), doin(acc.balance.0))).collect();
    holders.sort_by(|a, b| b.1.total_cmp(&a.1));
    holders.truncate(10);
    let optimizer: Vec<&String> = l.domains.iter().filter(|(_, d)| d.optimize).map(|(k, _)| k).collect();
    let evaluator: Vec<&String> = l.domains.iter().filter(|(_, d)| d.evaluate).map(|(k, _)| k).collect();
    let health = health_of(
        &l,
        state.height(),
        meta.timestamp_ms,
        state.params().max_block_interval_ms,
        state.stakes().count(),
        now_ms(),
    );
    Ok(Json(json!({
        "status": health["status"],
        "health_reasons": health["reasons"],
        "peer_id": s.peer_id,
        "address": s.address.to_string(),
        "port": s.port,
        "chain_height": state.height() + 1,
        "storage_backend": "redb",
        "network_protocol": "gossipsub",
        "domains": l.domains,
        "peers": l.peers.len(),
        "task_queue": task_counts(&s),
        "security": {
            "finalized_height": meta.finalized.height,
            "justified_height": meta.justified.height,
            "finality_votes_pending": l.finality_votes_pending,
            "pending_commitments": l.pending_commitments,
            "pending_quorums": l.pending_quorums,
            "gossip_rejected": l.gossip_refused.0,
            "gossip_ignored": l.gossip_refused.1,
            "evidence_pending": l.evidence_pending,
            "graylisted_peers": l.peer_scores.values().filter(|v| **v < GRAYLIST_SCORE).count(),
            "banned_peers": l.banned_peers.len(),
        },
        "optimizer_domains": optimizer,
        "evaluator_domains": evaluator,
        "coin": {
            "total_supply": doin(meta.supply.minted.0.saturating_sub(meta.supply.burned.0)),
            "my_balance": doin(balance),
            "top_holders": holders,
        },
        "difficulty": {
            "threshold": fixed(meta.difficulty.threshold),
            "target_block_time": state.params().target_block_time_ms as f64 / 1000.0,
            "ema_block_time": meta.difficulty.ema_block_time_ms as f64 / 1000.0,
            "work_blocks": meta.difficulty.work_blocks,
            "epoch_length": state.params().epoch_blocks,
        },
        "storage": {
            "height": state.height(),
            "tip_hash": state.tip().hash.to_string(),
            "state_root": state.root().to_string(),
        },
        "genesis": st.genesis_hash().to_string(),
        "peers_on_other_genesis": l.other_genesis.iter().map(|(p, g)| json!({ "peer_id": p, "genesis": g })).collect::<Vec<_>>(),
        "mempool": l.mempool,
    })))
}

async fn chain_status(State(s): State<ApiState>) -> ApiResult {
    let st = store(&s);
    let state = st.tip();
    Ok(Json(json!({
        "chain_height": state.height() + 1,
        "chain_id": state.meta().chain_id,
        "tip_hash": state.tip().hash.to_string(),
        "tip_index": state.height(),
        "finalized_height": state.meta().finalized.height,
        "finalized_hash": state.meta().finalized.hash.to_string(),
        "justified_height": state.meta().justified.height,
        "state_root": state.root().to_string(),
        "cumulative_work": fixed(state.meta().cumulative_work),
        "component_versions": { "doin": env!("CARGO_PKG_VERSION") },
    })))
}

pub use doin_tracking::rfc3339;

/// A block in the Python system's shape, with DOIN's fields added.
pub fn block_json(block: &Block) -> Value {
    let h = &block.header.body;
    json!({
        "header": {
            "index": h.height,
            "previous_hash": h.parent_hash.to_string(),
            "timestamp": rfc3339(h.timestamp_ms),
            "merkle_root": h.tx_root.to_string(),
            "generator_id": if h.height == 0 { "genesis".to_owned() } else { h.generator.to_string() },
            "weighted_performance_sum": fixed(h.work),
            "threshold": fixed(h.threshold),
            "kind": format!("{:?}", h.kind).to_lowercase(),
            "cert_root": h.cert_root.to_string(),
            "state_root": h.state_root.to_string(),
            "cumulative_work": fixed(h.cumulative_work),
            "base_fee": h.base_fee.0.to_string(),
            "signature": hex::encode(block.header.signature.0),
        },
        "transactions": block.body.transactions.iter().map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), json!(t.id().to_string()));
            }
            v
        }).collect::<Vec<_>>(),
        "certificates": block.body.certificates.iter().map(|c| json!({
            "commit": c.commit.id().to_string(),
            "domain": c.commit.body.domain.to_string(),
            "optimizer": c.commit.body.optimizer.to_string(),
            "claimed": c.commit.body.claimed.to_f64(),
            "outcome": format!("{:?}", c.outcome),
            "votes": c.votes.iter().map(|v| json!({ "evaluator": v.body.evaluator.to_string(), "measured": v.body.measured.to_f64() })).collect::<Vec<_>>(),
            "escalation_votes": c.escalation.len(),
        })).collect::<Vec<_>>(),
        "hash": block.hash().to_string(),
    })
}

/// `?from=X&to=Y`.
#[derive(Debug, Deserialize)]
pub struct Range {
    from: Option<u64>,
    to: Option<u64>,
}

async fn chain_blocks(
    State(s): State<ApiState>,
    range: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(r) = range.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let st = store(&s);
    let tip = st.tip().height();
    let from = r.from.unwrap_or(0);
    let to = r.to.unwrap_or(from.saturating_add(MAX_BLOCKS_PER_REQUEST - 1)).min(tip);
    if from > to && from <= tip {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_range",
            format!("from {from} is after to {to}"),
        ));
    }
    let last = to.min(from.saturating_add(MAX_BLOCKS_PER_REQUEST - 1));
    let mut blocks = Vec::new();
    if from <= tip {
        for i in from..=last {
            let Some(b) = st.canonical_hash(i).ok().flatten().and_then(|h| st.block(&h).ok().flatten())
            else {
                break;
            };
            blocks.push(block_json(&b));
        }
    }
    Ok(Json(json!({ "request_id": "", "blocks": blocks, "has_more": last < to })))
}

async fn chain_block(State(s): State<ApiState>, Path(index): Path<String>) -> ApiResult {
    let index: u64 = index.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_index", format!("{index:?} is not a block index"))
    })?;
    let st = store(&s);
    let block = st.canonical_hash(index).ok().flatten().and_then(|h| st.block(&h).ok().flatten());
    match block {
        Some(b) => Ok(Json(block_json(&b))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no block {index}; the tip is {}", st.tip().height()),
        )),
    }
}

async fn fees(State(s): State<ApiState>) -> ApiResult {
    let st = store(&s);
    let state = st.tip();
    Ok(Json(json!({
        "enabled": state.params().fee_market_enabled,
        "base_fee": state.meta().base_fee.0.to_string(),
        "min_base_fee": state.params().min_base_fee.0.to_string(),
        "max_block_weight": state.params().max_block_weight,
    })))
}

async fn peers(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    Ok(Json(json!({
        "self": { "peer_id": s.peer_id, "port": s.port, "address": s.address.to_string() },
        "peers": l
            .peers
            .iter()
            .map(|p| {
                let score = l.peer_scores.get(p).copied();
                json!({ "peer_id": p, "score": score, "graylisted": score.is_some_and(|v| v < GRAYLIST_SCORE) })
            })
            .collect::<Vec<_>>(),
    })))
}

fn parse_address(text: &str) -> Result<Address, ApiError> {
    let bytes = hex::decode(text).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_address", "an address is 64 hex characters")
    })?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_address", "an address is 32 bytes"))?;
    Ok(Address(arr))
}

/// `?proof=true`.
#[derive(Debug, Default, Deserialize)]
pub struct ProofQuery {
    proof: Option<bool>,
}

async fn account(
    State(s): State<ApiState>,
    Path(address): Path<String>,
    query: Result<Query<ProofQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let address = parse_address(&address)?;
    let st = store(&s);
    let state = st.tip();
    let proof = if q.proof.unwrap_or(false) {
        use doin_consensus::StateKey;
        let mut proofs = serde_json::Map::new();
        for (name, key) in [("account", StateKey::Account(address)), ("stake", StateKey::Stake(address))] {
            let (value, proof) = state.prove(&key).map_err(ApiError::internal)?;
            proofs.insert(
                name.into(),
                json!({
                    "key_hash": hex::encode(key.key_hash().0),
                    "value": value.map(hex::encode),
                    "proof": hex::encode(doin_primitives::encode(&proof)),
                }),
            );
        }
        Some(json!({ "state_root": state.root().to_string(), "height": state.height(), "records": proofs }))
    } else {
        None
    };
    let acc = state.account(&address);
    let stake = state.stake(&address);
    let reputation = reputation_of(state, &address);
    Ok(Json(json!({
        "address": address.to_string(),
        "balance": acc.balance.0.to_string(),
        "nonce": acc.nonce,
        "stake": stake.map(|s| s.amount.0.to_string()),
        "roles": stake.map(|s| s.roles.0),
        "domains": stake.map(|s| s.domains.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "reputation": reputation,
        "height": state.height(),
        "proof": proof,
    })))
}

/// An account's reputation per domain (those above zero).
fn reputation_of(state: &doin_consensus::State, who: &Address) -> BTreeMap<String, f64> {
    state
        .domains()
        .map(|(id, _)| (id.to_string(), fixed(u128::from(state.reputation(who, id)))))
        .filter(|(_, r)| *r > 0.0)
        .collect()
}

async fn domains(State(s): State<ApiState>) -> ApiResult {
    let st = store(&s);
    let state = st.tip();
    let list: Vec<Value> = state
        .domains()
        .map(|(id, d)| {
            json!({
                "domain_id": id.to_string(),
                "direction": d.spec.direction,
                "params": d.spec.params.len(),
                "verification": d.spec.evaluation.data,
                "target": d.spec.target.map(|t| t.to_f64()),
                "bounty_left": d.bounty_left.0.to_string(),
                "bounty_per_accept": d.spec.bounty_per_accept.0.to_string(),
                "registered_by": d.registered_by.to_string(),
                "registered_at": d.registered_at,
                "champion": d.champion.as_ref().map(|c| json!({
                    "performance": c.performance.to_f64(),
                    "optimizer": c.optimizer.to_string(),
                    "commit": c.commit.to_string(),
                    "height": c.height,
                    "artifact": c.artifact.map(|a| a.to_string()),
                    "model_quality": c.model_quality.map(|q| q.to_f64()),
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "domains": list })))
}

async fn submit_tx(
    State(s): State<ApiState>,
    body: Result<Json<Transaction>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = async { hand_over(&s, signed_tx(body)?).await }.await;
    match result {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id.to_string() }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A signed transaction from a request body, or why the body is not one.
pub(crate) fn signed_tx(
    body: Result<Json<Transaction>, axum::extract::rejection::JsonRejection>,
) -> Result<Transaction, ApiError> {
    match body {
        Ok(Json(tx)) => Ok(tx),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        )),
        Err(e) if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Err(ApiError::new(e.status(), "bad_content_type", e.body_text()))
        }
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_transaction", e.body_text())),
    }
}

/// Hands a signed transaction to the node (mempool checks, then gossip): its id, or why not.
pub(crate) async fn hand_over(s: &ApiState, tx: Transaction) -> Result<Hash, ApiError> {
    let (reply, answer) = oneshot::channel();
    if s.submit.try_send(Submission { tx, reply }).is_err() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the node's submission queue is full",
        ));
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), answer).await {
        Ok(Ok(Ok(id))) => Ok(id),
        Ok(Ok(Err(reason))) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", reason)),
        _ => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the node did not answer in time")),
    }
}

pub(crate) fn task_counts(s: &ApiState) -> Value {
    let (pending, claimed, completed) = s.tasks.lock().map(|mut q| q.counts()).unwrap_or((0, 0, 0));
    json!({ "pending": pending, "claimed": claimed, "completed": completed })
}

fn check_key(s: &ApiState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &s.api_key else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_api_key",
            "this node has no api_key configured: what needs the operator's key (tasks for external evaluators, queued inference, closing a channel) is refused",
        ));
    };
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(given) if given == key => Ok(()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_api_key", "missing or wrong x-api-key header")),
    }
}

async fn tasks_pending(State(s): State<ApiState>) -> ApiResult {
    let pending = s.tasks.lock().map(|mut q| q.pending()).unwrap_or_default();
    Ok(Json(json!({ "tasks": pending, "total_pending": pending.len() })))
}

/// `POST /tasks/claim` body: `{"kinds": ["verification"]}` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    kinds: Option<Vec<tasks::TaskKind>>,
}

async fn tasks_claim(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    check_key(&s, &headers)?;
    let req: ClaimRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimRequest::default()
    } else {
        let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_claim", e);
        // An object only (serde would read a struct from an array too).
        let v: Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        if !v.is_object() {
            return Err(bad("expected a JSON object such as {\"kinds\": [\"verification\"]}".into()));
        }
        serde_json::from_value(v).map_err(|e| bad(e.to_string()))?
    };
    let claimed = s.tasks.lock().ok().and_then(|mut q| q.claim(req.kinds.as_deref()));
    Ok(Json(match claimed {
        Some((task, lease)) => json!({ "task": task, "lease": lease }),
        None => json!({ "task": null }),
    }))
}

async fn tasks_complete(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Json<tasks::Completion>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    check_key(&s, &headers)?;
    let Json(done) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_completion", e.body_text()))?;
    let kind = s.tasks.lock().ok().and_then(|q| q.kind_of(&done.task_id));
    if kind.is_none() {
        // An unknown task is that, whatever the body says.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("no claimed task {}", done.task_id),
        ));
    }
    if kind == Some(tasks::TaskKind::Inference) {
        if done.result.is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_completion",
                "an inference task needs a result",
            ));
        }
    } else if !done.performance.is_some_and(f64::is_finite) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_completion",
            "performance must be a finite number",
        ));
    }
    let task = s
        .tasks
        .lock()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "task queue unavailable"))?
        .complete(&done.task_id, &done.lease)
        .map_err(|e| match e {
            tasks::TaskError::Unknown(t) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_task", format!("no claimed task {t}"))
            }
            tasks::TaskError::Lease(m) => ApiError::new(StatusCode::CONFLICT, "lease", m),
            tasks::TaskError::Full => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "queue full"),
        })?;
    let id = task.task_id.clone();
    if task.kind == tasks::TaskKind::Inference {
        // The answer waits for the requester; nothing goes on chain.
        if let Ok(mut q) = s.tasks.lock() {
            q.store_result(&id, done.result.unwrap_or(Value::Null));
        }
        return Ok(Json(json!({ "accepted": true, "task_id": id })));
    }
    s.completions.try_send((task, done)).map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the node's completion queue is full")
    })?;
    Ok(Json(json!({ "accepted": true, "task_id": id })))
}

/// Serves the API on `addr` until the returned task is dropped or the process ends.
pub async fn serve(
    addr: std::net::SocketAddr,
    state: ApiState,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let guard = state.guard.clone();
    Ok(tokio::spawn(server::run(listener, router(state), server::ConnLimits::for_this_process(), guard)))
}

#[cfg(test)]
mod tests {

    #[test]
    fn health_is_measured_and_names_its_reasons() {
        let now = 1_000_000_000;
        let fresh = now - 1_000;
        let mut l = LiveStatus { peers: vec!["p".into()], network_height: Some(50), ..LiveStatus::default() };
        let h = |l: &LiveStatus, height, tip_ms, stakers| health_of(l, height, tip_ms, 5_000, stakers, now);
        assert_eq!(h(&l, 50, fresh, 3)["status"], "healthy");
        let v = h(&l, 40, fresh, 3);
        assert_eq!(
            (v["status"].as_str(), v["reasons"][0].as_str()),
            (Some("degraded"), Some("10 blocks behind the network"))
        );
        assert_eq!(h(&l, 5, fresh, 3)["status"], "degraded", "45 behind");
        l.network_height = Some(200);
        assert_eq!(h(&l, 5, fresh, 3)["status"], "unhealthy", "195 behind");
        l.network_height = Some(50);
        assert_eq!(h(&l, 50, now - 20_000, 3)["status"], "degraded", "idle for 4 intervals");
        assert_eq!(h(&l, 50, now - 120_000, 3)["status"], "unhealthy", "idle for 24 intervals");
        l.plugins = vec![
            json!({"name": "quadratic-domain", "calls": 7, "errors": 7, "disabled": true, "faults_in_row": 3, "last_error": "crashed"}),
        ];
        let v = h(&l, 50, fresh, 3);
        assert!(
            v["reasons"][0]
                .as_str()
                .unwrap()
                .contains("plugin quadratic-domain restarting with a backoff after 3 faults"),
            "{v}"
        );
        l.plugins.clear();
        let withdrawn = DomainStatus {
            evaluate: true,
            standing: "withdrawn".into(),
            evaluation_error: Some("process exited".into()),
            ..DomainStatus::default()
        };
        l.domains.insert("quadratic".into(), withdrawn);
        let v = h(&l, 50, fresh, 3);
        assert_eq!(v["reasons"][0], "cannot evaluate quadratic, left its quorums: process exited", "{v}");
        l.domains.get_mut("quadratic").unwrap().standing = "probing".into();
        assert_eq!(
            h(&l, 50, fresh, 3)["status"],
            "healthy",
            "a probe alone (a candidate that failed) is no fault"
        );
        l.peers.clear();
        l.network_height = None;
        assert_eq!(h(&l, 50, fresh, 3)["status"], "degraded", "alone among three stakers");
        assert_eq!(h(&l, 50, fresh, 1)["status"], "healthy", "a single-node chain needs no peers");
    }

    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_365_083_910), "2026-11-22T16:31:23.910Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
