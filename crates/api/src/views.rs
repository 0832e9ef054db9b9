//! The dashboard's `/api/*` views (the Python system's shapes, DOIN's fields added) and DOIN's
//! lookups by hash: blocks, certificates, payment channels.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use doin_consensus::Receipt;
use doin_primitives::{Address, Block, Hash, Outcome};
use doin_storage::ChainStore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, ApiResult, ApiState, block_json, doin, fixed, live, rfc3339, store};

/// Blocks the chain views scan back from the tip at most.
pub const SCAN_BLOCKS: u64 = 2000;

pub(crate) fn parse_hash(text: &str, what: &'static str) -> Result<Hash, ApiError> {
    let bytes = hex::decode(text).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_hash", format!("a {what} is 64 hex characters"))
    })?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_hash", format!("a {what} is 32 bytes")))?;
    Ok(Hash(arr))
}

/// `GET /chain/block/hash/{hash}`: a block by its hash, canonical or not.
pub(crate) async fn block_by_hash(State(s): State<ApiState>, Path(hash): Path<String>) -> ApiResult {
    let hash = parse_hash(&hash, "block hash")?;
    let st = store(&s);
    let block = st.block(&hash).map_err(ApiError::internal)?;
    let Some(block) = block else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no block {hash}")));
    };
    let canonical = st.canonical_hash(block.header.body.height).ok().flatten() == Some(hash);
    let mut v = block_json(&block);
    v["canonical"] = canonical.into();
    Ok(Json(v))
}

/// `GET /certificates/{commit}`: a certificate on the canonical chain with its receipt.
pub(crate) async fn certificate(State(s): State<ApiState>, Path(commit): Path<String>) -> ApiResult {
    let commit = parse_hash(&commit, "commit id")?;
    let st = store(&s);
    let Some((block_hash, index)) = st.certificate_location(&commit).map_err(ApiError::internal)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("commit {commit} is not certified"),
        ));
    };
    let block = st.block(&block_hash).map_err(ApiError::internal)?;
    let receipt = st.receipt(&block_hash).map_err(ApiError::internal)?;
    let (Some(block), Some(receipt)) = (block, receipt) else {
        return Err(ApiError::internal(format!("block {block_hash} of certificate {commit} is missing")));
    };
    let i = index as usize;
    let (Some(cert), Some(r)) = (block.body.certificates.get(i), receipt.certificates.get(i)) else {
        return Err(ApiError::internal(format!("certificate {i} of block {block_hash} is missing")));
    };
    Ok(Json(json!({
        "commit": commit.to_string(),
        "block_hash": block_hash.to_string(),
        "block_index": block.header.body.height,
        "domain_id": r.domain,
        "optimizer": r.optimizer.to_string(),
        "outcome": format!("{:?}", r.outcome),
        "escalated": r.escalated,
        "claimed": r.claimed.to_f64(),
        "verified": r.median.to_f64(),
        "previous": r.previous.map(|m| m.to_f64()),
        "improved": r.improved,
        "increment": fixed(r.increment),
        "reward_fraction": fixed(u128::from(r.reward_fraction)),
        "optimizer_reward": doin(r.optimizer_reward.0),
        "bounty_paid": doin(r.bounty_paid.0),
        "bond_burned": doin(r.bond_burned.0),
        "agreeing": r.agreeing.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "outliers": r.outliers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "params": cert.reveal.body.params.to_vec(),
        "votes": cert.votes.iter().chain(cert.escalation.iter()).map(|v| json!({
            "evaluator": v.body.evaluator.to_string(),
            "round": v.body.round,
            "measured": v.body.measured.to_f64(),
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /channels/{id}`: a payment channel.
pub(crate) async fn channel(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_hash(&id, "channel id")?;
    let st = store(&s);
    match st.tip().channel(&id) {
        Some(c) => Ok(Json(json!({
            "id": id.to_string(),
            "payer": c.payer.to_string(),
            "payee": c.payee.to_string(),
            "deposit": doin(c.deposit.0),
            "expiry_height": c.expiry_height,
            "opened_at": c.opened_at,
            "closing": c.closing,
        }))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no open channel {id}"))),
    }
}

fn dispute_json(state: &doin_consensus::State, id: &Hash, d: &doin_consensus::disputes::Dispute) -> Value {
    let window = state.params().dispute_window_blocks;
    json!({
        "id": id.to_string(),
        "server": d.server.to_string(),
        "disputer": d.disputer.to_string(),
        "domain": d.domain.to_string(),
        "optimae": d.optimae.to_string(),
        "artifact": d.artifact.to_string(),
        "bond": doin(d.bond.0),
        "height": d.height,
        "quorum_drawn_at": d.draw_height(),
        "deadline": d.deadline(window),
        "quorum": d.quorum.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "votes": d.votes.iter().map(|(a, wrong)| json!({ "member": a.to_string(), "wrong": wrong })).collect::<Vec<_>>(),
        "outcome": d.outcome,
        "settled_at": (d.settled_at > 0).then_some(d.settled_at),
    })
}

/// Settled disputes `GET /disputes` lists (the latest by settlement height).
const SETTLED_SHOWN: usize = 100;

/// `GET /disputes`: pending disputes of inference receipts and the latest settled.
pub(crate) async fn disputes(State(s): State<ApiState>) -> ApiResult {
    let st = store(&s);
    let tip = st.tip();
    let pending: Vec<Value> =
        tip.disputes().filter(|(_, d)| d.outcome.is_none()).map(|(id, d)| dispute_json(tip, id, d)).collect();
    let mut settled: Vec<_> = tip.disputes().filter(|(_, d)| d.outcome.is_some()).collect();
    settled.sort_by_key(|(_, d)| std::cmp::Reverse(d.settled_at));
    let settled: Vec<Value> =
        settled.into_iter().take(SETTLED_SHOWN).map(|(id, d)| dispute_json(tip, id, d)).collect();
    let p = tip.params();
    // Evaluators left out of a domain's dispute quorums for letting one reach its deadline
    // without their vote (`doin_consensus::disputes::ABSENCE_WINDOWS`).
    let height = tip.height();
    let absent: Vec<Value> = tip
        .domains()
        .flat_map(|(id, d)| {
            d.dispute_absent.iter().filter(|(_, until)| *until > height).map(move |(a, until)| {
                json!({ "domain": id.to_string(), "evaluator": a.to_string(), "until": until })
            })
        })
        .collect();
    Ok(Json(json!({
        "pending": pending,
        "settled": settled,
        "absent": absent,
        "params": {
            "dispute_bond": doin(p.dispute_bond.0),
            "dispute_slash_ppm": p.dispute_slash_ppm,
            "dispute_window_blocks": p.dispute_window_blocks,
        },
    })))
}

/// `GET /disputes/{id}`.
pub(crate) async fn dispute(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_hash(&id, "dispute id")?;
    let st = store(&s);
    let tip = st.tip();
    match tip.dispute(&id) {
        Some(d) => Ok(Json(dispute_json(tip, &id, d))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no dispute {id}"))),
    }
}

/// `GET /api/node`.
pub(crate) async fn node(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let height = store(&s).tip().height();
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    Ok(Json(json!({
        "node_label": format!("{hostname}:{}", s.port),
        "hostname": hostname,
        "peer_id": s.peer_id,
        "address": s.address.to_string(),
        "port": s.port,
        "uptime_s": (s.uptime_s() * 10.0).round() / 10.0,
        "domains": l.domains.iter().map(|(id, d)| json!({
            "domain_id": id,
            "optimize": d.optimize,
            "evaluate": d.evaluate,
            "synthetic": d.synthetic,
            "trusted": d.trusted,
            "optimizer_plugin": d.optimizer,
            "predictor_plugin": d.domain_plugin.clone().unwrap_or_default(),
        })).collect::<Vec<_>>(),
        "chain_height": height + 1,
        "discovery_enabled": !l.discovery.is_empty(),
        "discovery": l.discovery,
        "dashboard_enabled": true,
        "versions": { "doin": env!("CARGO_PKG_VERSION") },
        "usage": { "cpu_s": l.usage.0, "eval_cpu_s": l.usage.1, "rss_mb": l.usage.2 },
    })))
}

/// `GET /api/peers`.
pub(crate) async fn peers(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    // Connected peers with their gossip score, then banned ones (known, not connected).
    let connected = l
        .peers
        .iter()
        .map(|p| json!({ "peer_id": p, "connected": true, "banned": false, "score": l.peer_scores.get(p) }));
    let banned =
        l.banned_peers.iter().filter(|p| !l.peers.contains(p)).map(
            |p| json!({ "peer_id": p, "connected": false, "banned": true, "score": l.peer_scores.get(p) }),
        );
    let peers: Vec<Value> = connected.chain(banned).collect();
    Ok(Json(json!({
        "connected_count": l.peers.len(),
        "known_count": peers.len(),
        "banned_count": l.banned_peers.len(),
        "peers": peers,
        "self": { "peer_id": s.peer_id, "address": s.address.to_string(), "port": s.port },
    })))
}

/// One verified champion change, from block receipts.
#[derive(Clone, Debug)]
pub struct ChampionChange {
    /// Domain.
    pub domain: String,
    /// Block height and hash, generator and time.
    pub height: u64,
    /// Block hash.
    pub block: Hash,
    /// Block generator.
    pub generator: String,
    /// Block time, ms.
    pub timestamp_ms: u64,
    /// The verified (median) performance.
    pub performance: f64,
    /// The champion it replaced.
    pub previous: Option<f64>,
    /// Optimizer.
    pub optimizer: String,
    /// Commit id.
    pub commit: Hash,
    /// Effective increment.
    pub increment: f64,
    /// Optimizer's reward.
    pub reward: f64,
}

/// Canonical blocks with their receipts from `from` to the tip.
fn canonical_range(st: &ChainStore, from: u64) -> Vec<(Block, Receipt)> {
    let tip = st.tip().height();
    (from..=tip)
        .filter_map(|h| {
            let hash = st.canonical_hash(h).ok().flatten()?;
            Some((st.block(&hash).ok().flatten()?, st.receipt(&hash).ok().flatten()?))
        })
        .collect()
}

/// What the chain views need from one block's receipt.
#[derive(Clone, Debug)]
struct BlockSummary {
    height: u64,
    hash: Hash,
    champions: Vec<ChampionChange>,
    minted: u128,
    burned: u128,
    to_optimizers: u128,
    to_evaluators: u128,
    /// Who generated the block and what it received.
    generator: (Address, u128),
    /// Certificates: the optimizer, whether its claim was accepted, its reward.
    claims: Vec<(Address, bool, u128)>,
    /// Quorum votes: the evaluator, whether it agreed with the median, its reward.
    votes: Vec<(Address, bool, u128)>,
    /// Keys slashed and the amount burned.
    slashes: Vec<(Address, u128)>,
}

/// One account's part in the scanned blocks (PoUW's economic status and success rate).
#[derive(Debug, Default, Clone, Copy)]
pub struct Work {
    /// Blocks scanned.
    pub blocks: u64,
    /// Blocks this account generated, and what they paid it.
    pub blocks_generated: u64,
    /// Reward as block generator.
    pub as_generator: u128,
    /// Its claims accepted and rejected by their quorums.
    pub claims_accepted: u64,
    /// See [`Work::claims_accepted`].
    pub claims_rejected: u64,
    /// Reward for accepted claims.
    pub as_optimizer: u128,
    /// Its quorum votes within tolerance of the median, and the outliers.
    pub votes_agreeing: u64,
    /// See [`Work::votes_agreeing`].
    pub votes_outlying: u64,
    /// Reward for votes.
    pub as_evaluator: u128,
    /// Burned from its stake for double votes.
    pub slashed: u128,
}

/// Summaries of the last [`SCAN_BLOCKS`] canonical blocks, brought up to date per request by
/// reading only the blocks added since (a reorg drops the orphaned tail first), so the views
/// never rescan the window under the store lock.
#[derive(Debug, Default)]
pub struct ChainCache {
    blocks: std::collections::VecDeque<BlockSummary>,
}

impl ChainCache {
    fn update(&mut self, st: &ChainStore) {
        // The newest cached block still canonical means all older ones are, too.
        while let Some(last) = self.blocks.back() {
            if st.canonical_hash(last.height).ok().flatten() == Some(last.hash) {
                break;
            }
            self.blocks.pop_back();
        }
        let tip = st.tip().height();
        let from = self.blocks.back().map_or(tip.saturating_sub(SCAN_BLOCKS), |b| b.height + 1);
        for (block, receipt) in canonical_range(st, from) {
            let mut b = BlockSummary {
                height: receipt.height,
                hash: receipt.block_hash,
                champions: Vec::new(),
                minted: receipt.reward.0,
                burned: receipt.fees_burned.0,
                to_optimizers: 0,
                to_evaluators: 0,
                generator: (receipt.generator, receipt.generator_reward.0),
                claims: Vec::new(),
                votes: Vec::new(),
                slashes: receipt.slashes.iter().map(|(a, m)| (*a, m.0)).collect(),
            };
            for r in &receipt.certificates {
                b.to_optimizers += r.optimizer_reward.0;
                b.to_evaluators += r.evaluator_rewards.iter().map(|(_, a)| a.0).sum::<u128>();
                b.claims.push((r.optimizer, r.outcome == Outcome::Accept, r.optimizer_reward.0));
                let reward_of = |a: &Address| {
                    r.evaluator_rewards.iter().filter(|(e, _)| e == a).map(|(_, m)| m.0).sum::<u128>()
                };
                b.votes.extend(r.agreeing.iter().map(|a| (*a, true, reward_of(a))));
                b.votes.extend(r.outliers.iter().map(|a| (*a, false, reward_of(a))));
                if r.outcome == Outcome::Accept && r.improved {
                    b.champions.push(ChampionChange {
                        domain: r.domain.clone(),
                        height: receipt.height,
                        block: receipt.block_hash,
                        generator: receipt.generator.to_string(),
                        timestamp_ms: block.header.body.timestamp_ms,
                        performance: r.median.to_f64(),
                        previous: r.previous.map(|m| m.to_f64()),
                        optimizer: r.optimizer.to_string(),
                        commit: r.commit,
                        increment: fixed(r.increment),
                        reward: doin(r.optimizer_reward.0),
                    });
                }
            }
            self.blocks.push_back(b);
        }
        while self.blocks.len() as u64 > SCAN_BLOCKS + 1 {
            self.blocks.pop_front();
        }
    }
}

/// Adds `who`'s entries of `entries` (address, held, reward) to the held / not-held counts and
/// the reward.
fn tally(entries: &[(Address, bool, u128)], who: &Address, counts: (&mut u64, &mut u64), reward: &mut u128) {
    for (_, held, r) in entries.iter().filter(|(a, _, _)| a == who) {
        if *held {
            *counts.0 += 1;
        } else {
            *counts.1 += 1;
        }
        *reward += r;
    }
}

/// What `who` did and earned in the last [`SCAN_BLOCKS`] blocks.
pub fn work_of(s: &ApiState, st: &ChainStore, who: &Address) -> Work {
    let Ok(mut cache) = s.chain_cache.lock() else { return Work::default() };
    cache.update(st);
    let mut w = Work { blocks: cache.blocks.len() as u64, ..Work::default() };
    for b in &cache.blocks {
        if b.generator.0 == *who {
            w.blocks_generated += 1;
            w.as_generator += b.generator.1;
        }
        tally(&b.claims, who, (&mut w.claims_accepted, &mut w.claims_rejected), &mut w.as_optimizer);
        tally(&b.votes, who, (&mut w.votes_agreeing, &mut w.votes_outlying), &mut w.as_evaluator);
        w.slashed += b.slashes.iter().filter(|(a, _)| a == who).map(|(_, m)| m).sum::<u128>();
    }
    w
}

/// Champion changes in the last [`SCAN_BLOCKS`] blocks, oldest first.
pub fn champion_history(s: &ApiState, st: &ChainStore) -> Vec<ChampionChange> {
    let Ok(mut cache) = s.chain_cache.lock() else { return Vec::new() };
    cache.update(st);
    cache.blocks.iter().flat_map(|b| b.champions.iter().cloned()).collect()
}

/// `GET /api/optimization`: per domain the champion, the target, this node's optimizer and the
/// verified convergence series (`[timestamp_ms, performance, height]` per champion change).
pub(crate) async fn optimization(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let st = store(&s);
    let history = champion_history(&s, &st);
    let state = st.tip();
    let domains: Vec<Value> = state
        .domains()
        .map(|(id, d)| {
            let id = id.to_string();
            let mine = l.domains.get(&id);
            let series: Vec<Value> = history
                .iter()
                .filter(|c| c.domain == id)
                .map(|c| json!([c.timestamp_ms, c.performance, c.height]))
                .collect();
            json!({
                "domain_id": id,
                "round": mine.map_or(0, |m| m.evaluations),
                "best_performance": d.champion.as_ref().map(|c| c.performance.to_f64()),
                "target_performance": d.spec.target.map(|t| t.to_f64()),
                "converged": mine.is_some_and(|m| m.converged),
                "higher_is_better": d.spec.direction == doin_primitives::domain::Direction::Maximize,
                "verification": d.spec.evaluation.data,
                "optimizer_plugin": mine.map(|m| m.optimizer.clone()),
                "champion": d.champion.as_ref().map(|c| json!({
                    "source": "blockchain",
                    "block_index": c.height,
                    "optimizer": c.optimizer.to_string(),
                    "commit": c.commit.to_string(),
                    "performance": c.performance.to_f64(),
                    "artifact": c.artifact.map(|a| a.to_string()),
                    "model_quality": c.model_quality.map(|q| q.to_f64()),
                })),
                "improvements": d.stats.improvements,
                "rejected": d.stats.rejected,
                "convergence": series,
            })
        })
        .collect();
    Ok(Json(json!({ "domains": domains, "tolerance_margin": null })))
}

/// `GET /api/training`: what each optimizing domain's latest reported candidate measured.
pub(crate) async fn training(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let domains: Vec<Value> = l
        .domains
        .iter()
        .filter(|(_, d)| d.optimize)
        .map(|(id, d)| {
            json!({
                "domain_id": id,
                "active": d.optimize && !d.converged,
                "round": d.evaluations,
                "latest": d.training,
            })
        })
        .collect();
    let first = domains.first().cloned().unwrap_or(Value::Null);
    Ok(Json(json!({
        "active": domains.iter().any(|d| d["active"] == true),
        "domain_id": first["domain_id"].clone(),
        "round": first["round"].clone(),
        "domains": domains,
    })))
}

/// `GET /api/evaluations`: quorum evaluations running here and the votes this node cast.
pub(crate) async fn evaluations(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let me = s.address.to_string();
    let completed: Vec<Value> = s
        .events
        .recent(crate::events::RECENT, Some("vote"))
        .into_iter()
        .filter(|e| e.data["evaluator"] == me.as_str())
        .map(|e| {
            let mut v = e.data.clone();
            v["timestamp"] = rfc3339(e.timestamp_ms).into();
            v["domain_id"] = e.domain_id.clone().into();
            v
        })
        .collect();
    Ok(Json(json!({
        "pending_count": l.evaluating.len(),
        "completed_count": completed.len(),
        "pending": l.evaluating,
        "completed": completed,
        "task_queue": crate::task_counts(&s),
    })))
}

/// `GET /api/metrics`: one row per verified champion change (the Python dashboard's metrics
/// table), numbered per domain.
pub(crate) async fn metrics(State(s): State<ApiState>) -> ApiResult {
    let st = store(&s);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let rows: Vec<Value> = champion_history(&s, &st)
        .into_iter()
        .map(|c| {
            let n = counts.entry(c.domain.clone()).or_default();
            *n += 1;
            json!({
                "champion_num": *n,
                "acceptance_num": *n,
                "improvement_num": *n,
                "block_index": c.height,
                "block_hash": c.block.to_string(),
                "transaction_id": c.commit.to_string(),
                "domain_id": c.domain,
                "performance": c.performance,
                "best_performance": c.performance,
                "previous_best_performance": c.previous,
                "is_improvement": true,
                "peer_id": c.optimizer,
                "generator_id": c.generator,
                "timestamp": rfc3339(c.timestamp_ms),
                "increment": c.increment,
                "optimizer_reward": c.reward,
            })
        })
        .collect();
    Ok(Json(json!({ "metrics": rows })))
}

/// `?limit=`.
#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    limit: Option<u64>,
}

/// `GET /api/chain`: the newest blocks (default 20, at most 50), newest first.
pub(crate) async fn chain(
    State(s): State<ApiState>,
    q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let n = q.limit.unwrap_or(20).clamp(1, crate::MAX_BLOCKS_PER_REQUEST);
    let st = store(&s);
    let tip = st.tip().height();
    let blocks: Vec<Value> = canonical_range(&st, tip.saturating_sub(n - 1))
        .into_iter()
        .rev()
        .map(|(b, r)| {
            let h = &b.header.body;
            json!({
                "index": h.height,
                "hash": r.block_hash.to_string(),
                "previous_hash": h.parent_hash.to_string(),
                "timestamp": rfc3339(h.timestamp_ms),
                "generator_id": if h.height == 0 { "genesis".to_owned() } else { h.generator.to_string() },
                "kind": format!("{:?}", h.kind).to_lowercase(),
                "weighted_sum": fixed(h.work),
                "threshold": fixed(h.threshold),
                "tx_count": b.body.transactions.len(),
                "cert_count": b.body.certificates.len(),
                "reward": doin(r.reward.0),
                "fees_burned": doin(r.fees_burned.0),
                "transactions": b.body.transactions.iter().map(|tx| json!({
                    "id": tx.id().to_string(),
                    "tx_type": serde_json::to_value(&tx.body.kind).ok().and_then(|k| k.get("type").cloned()),
                    "sender": tx.sender.to_string(),
                })).collect::<Vec<_>>(),
                "certificates": r.certificates.iter().map(|c| json!({
                    "commit": c.commit.to_string(),
                    "domain_id": c.domain,
                    "optimizer": c.optimizer.to_string(),
                    "outcome": format!("{:?}", c.outcome),
                    "claimed": c.claimed.to_f64(),
                    "verified": c.median.to_f64(),
                    "improved": c.improved,
                    "escalated": c.escalated,
                    "voters": c.agreeing.len() + c.outliers.len(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "height": tip + 1, "tip_index": tip, "blocks": blocks })))
}

/// `GET /api/plugins`: per domain the optimizer and evaluator this node runs, and the counters
/// of every plugin process.
pub(crate) async fn plugins(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let per_domain: Vec<Value> = l
        .domains
        .iter()
        .map(|(id, d)| {
            json!({
                "domain_id": id,
                "optimizer": { "name": d.optimizer },
                "evaluator": { "name": d.domain_plugin.clone().unwrap_or_else(|| id.clone()) },
                "synthetic": { "name": if d.synthetic { "seeded" } else { "held-out folds" } },
            })
        })
        .collect();
    Ok(Json(json!({ "plugins": per_domain, "processes": l.plugins })))
}

/// What this node earned serving inference (prices, DOIN in open and settled channels, paying
/// channels); `None` when it serves none. Call it before taking the store's lock: the inference
/// server reads the store itself.
pub(crate) fn inference_earnings(s: &ApiState) -> Option<Value> {
    s.inference.as_ref().map(|i| {
        let c = i.channels();
        let amount = |k: &str| doin(c[k].as_str().and_then(|v| v.parse().ok()).unwrap_or(0));
        json!({
            "prices": c["prices"],
            "earned_open": amount("earned_open"),
            "earned_settled": amount("earned_settled"),
            "paying_channels": c["channels"].as_array().map_or(0, Vec::len),
        })
    })
}

/// `GET /api/economics`: supply, fees, the largest balances and stakes, bounties, channels and
/// the rewards paid in the scanned blocks.
pub(crate) async fn economics(State(s): State<ApiState>) -> ApiResult {
    // Before the store's lock is taken here: the inference server reads the store itself.
    let inference = inference_earnings(&s);
    let st = store(&s);
    let state = st.tip();
    let meta = state.meta();
    let mut balances: Vec<(String, f64)> =
        state.accounts().map(|(a, acc)| (a.to_string(), doin(acc.balance.0))).collect();
    balances.sort_by(|a, b| b.1.total_cmp(&a.1));
    balances.truncate(10);
    let mut stakes: Vec<(String, f64)> =
        state.stakes().map(|(a, r)| (a.to_string(), doin(r.amount.0))).collect();
    stakes.sort_by(|a, b| b.1.total_cmp(&a.1));
    stakes.truncate(10);
    let (mut minted, mut optimizers, mut evaluators, mut burned) = (0u128, 0u128, 0u128, 0u128);
    if let Ok(mut cache) = s.chain_cache.lock() {
        cache.update(&st);
        for b in &cache.blocks {
            minted += b.minted;
            burned += b.burned;
            optimizers += b.to_optimizers;
            evaluators += b.to_evaluators;
        }
    }
    let channels: Vec<Value> = state
        .channels()
        .take(50)
        .map(|(id, c)| json!({ "id": id.to_string(), "payer": c.payer.to_string(), "payee": c.payee.to_string(), "deposit": doin(c.deposit.0) }))
        .collect();
    Ok(Json(json!({
        "supply": {
            "minted": doin(meta.supply.minted.0),
            "burned": doin(meta.supply.burned.0),
            "circulating": doin(meta.supply.minted.0.saturating_sub(meta.supply.burned.0)),
        },
        "base_fee": state.meta().base_fee.0.to_string(),
        "top_balances": balances,
        "top_stakes": stakes,
        "rewards": {
            "blocks_scanned": SCAN_BLOCKS.min(state.height() + 1),
            "minted": doin(minted),
            "to_optimizers": doin(optimizers),
            "to_evaluators": doin(evaluators),
            "fees_burned": doin(burned),
        },
        "bounties": state.domains().map(|(id, d)| json!({
            "domain_id": id.to_string(),
            "bounty_left": doin(d.bounty_left.0),
            "bounty_per_accept": doin(d.spec.bounty_per_accept.0),
        })).collect::<Vec<_>>(),
        "channels": channels,
        "inference": inference,
    })))
}

/// `GET /api/channels`: the channels paying this node for inference and what they paid.
pub(crate) async fn channels(State(s): State<ApiState>) -> ApiResult {
    Ok(Json(match &s.inference {
        Some(i) => i.channels(),
        None => json!({
            "payee": s.address.to_string(), "prices": {}, "channels": [],
            "earned_open": "0", "earned_settled": "0", "settled": 0,
        }),
    }))
}

/// `GET /anchors`: the finalized checkpoint, the finalized anchor checkpoints (the latest 100)
/// and their on-chain anchor records — what a joining node may take as its trusted checkpoint.
pub(crate) async fn anchors(State(s): State<ApiState>) -> ApiResult {
    let st = store(&s);
    let tip = st.tip();
    let finalized = st.finalized();
    let anchored: std::collections::BTreeMap<u64, Value> = tip
        .anchors()
        .map(|(h, a)| {
            let external = String::from_utf8_lossy(a.external_ref.as_bytes()).into_owned();
            (*h, json!({ "by": a.by.to_string(), "external_ref": external, "recorded_at": a.recorded_at }))
        })
        .collect();
    let checkpoints: Vec<Value> = tip
        .checkpoints()
        .rev()
        .take(100)
        .map(|(h, hash)| json!({ "height": h, "hash": hash.to_string(), "anchor": anchored.get(h) }))
        .collect();
    Ok(Json(json!({
        "finalized": { "height": finalized.height, "hash": finalized.hash.to_string() },
        "anchor_interval": tip.params().anchor_interval,
        "checkpoints": checkpoints,
    })))
}

/// `GET /api/inference`: what this node serves (domain → price, base units) and its inference
/// queue's counters (zeros when it serves nothing).
pub(crate) async fn inference(State(s): State<ApiState>) -> ApiResult {
    Ok(Json(match &s.inference {
        Some(i) => json!({ "serving": true, "prices": i.prices(), "queue": i.queue() }),
        None => json!({
            "serving": false, "prices": {},
            "queue": { "waiting": 0, "batches": 0, "requests": 0, "expired": 0, "refused": 0, "jobs": 0, "jobs_pending": 0 },
        }),
    }))
}

/// `POST /api/channel/{id}/close` (`x-api-key`): this node, as the channel's payee, closes it
/// with the best update it holds (settled at once on chain).
pub(crate) async fn close_channel(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = (|| -> Result<Value, ApiError> {
        crate::check_key(&s, &headers)?;
        parse_hash(&id, "channel id")?;
        let i = s.inference.as_ref().ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "this node is paid through no channel")
        })?;
        i.close_channel(&id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e))
    })();
    match result {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}
