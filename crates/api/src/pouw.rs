//! The PoUW seed's operator surface (`../shared/seeds/pouw-node.md`: `stake_and_register`
//! returning a ticket, `get_status`, `get_health_metrics`, `get_economic_status`) under
//! `/pouw/*`, with the seed's field names, measured from the chain and the running node. The
//! seed's roles map onto DOIN's by [`doin_primitives::tx::POUW_ROLES`].

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use doin_primitives::{Address, Roles, Transaction, TxKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    ApiError, ApiResult, ApiState, LiveStatus, doin, hand_over, health_of, live, now_ms, reputation_of,
    signed_tx, store,
    views::{Work, inference_earnings, parse_hash, work_of},
};

/// The event loop refreshes the live status every second or so; this long without a refresh
/// and the node is not running (its loop is stuck or gone).
const RUNNING_WITHIN_MS: u64 = 10_000;

/// `POST /pouw/stake_and_register`: a signed `Stake` transaction (built and signed by the
/// staker: `doin pouw stake-and-register`), handed to the node like `POST /tx`; answers 202 with
/// the ticket, pending until a block includes it (`GET /pouw/ticket/{ticket_id}`).
pub(crate) async fn stake_and_register(
    State(s): State<ApiState>,
    body: Result<Json<Transaction>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = async {
        let tx = signed_tx(body)?;
        let TxKind::Stake { amount, roles, domains, preferences } = &tx.body.kind else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "not_a_stake",
                "stake_and_register takes a signed Stake transaction (`doin pouw stake-and-register` builds \
                 one); other transactions go to POST /tx",
            ));
        };
        if roles.0 == 0 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "no_role",
                "the stake names no role: MINER, SUPERVISOR, VERIFIER or EVALUATOR (or a DOIN role); a \
                 PEER needs no stake — every running node follows the chain and relays gossip",
            ));
        }
        let mut ticket = json!({
            "staker": tx.body.sender.to_string(),
            "stake_amount": doin(amount.0),
            "roles": roles.pouw_names(),
            "doin_roles": roles,
            "domains": domains.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "preferences": preferences,
        });
        let id = hand_over(&s, tx).await?;
        ticket["ticket_id"] = id.to_string().into();
        ticket["status"] = "pending".into();
        Ok(ticket)
    }
    .await;
    match result {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /pouw/ticket/{ticket_id}`: a staking ticket — `active` (the staker's stake is this
/// ticket's), `superseded` (a later stake of the same staker replaced it), `ended` (unstaked);
/// 404 while no block of this node's chain holds it.
pub(crate) async fn ticket(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let hash = parse_hash(&id, "ticket id")?;
    let st = store(&s);
    let state = st.tip();
    if let Some((staker, record)) = state.stakes().find(|(_, r)| r.ticket == hash) {
        let included = st
            .transaction_location(&hash)
            .ok()
            .flatten()
            .and_then(|(block, _)| st.header(&block).ok().flatten())
            .map(|h| h.body.height);
        return Ok(Json(json!({
            "ticket_id": id,
            "status": "active",
            "staker": staker.to_string(),
            "stake_amount": doin(record.amount.0),
            "roles": record.roles.pouw_names(),
            "doin_roles": record.roles,
            "domains": record.domains.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "preferences": record.capabilities,
            "block_height": included,
            "staked_since": record.since,
        })));
    }
    let location = st.transaction_location(&hash).map_err(ApiError::internal)?;
    let canonical = location.and_then(|(block, index)| {
        let height = st.header(&block).ok().flatten()?.body.height;
        (st.canonical_hash(height).ok().flatten() == Some(block)).then_some((block, index, height))
    });
    let Some((block, index, height)) = canonical else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "ticket {id} is in no block of this node's chain (still pending in a mempool, or never accepted)"
            ),
        ));
    };
    // The body may have been pruned: then only the block is known.
    let staker = st
        .block(&block)
        .ok()
        .flatten()
        .and_then(|b| b.body.transactions.get(index as usize).map(|t| t.body.sender));
    let (status, now) = match staker.map(|a| (a, state.stake(&a))) {
        Some((_, Some(current))) => ("superseded", Some(current.ticket.to_string())),
        Some((_, None)) => ("ended", None),
        None => ("superseded or ended", None),
    };
    Ok(Json(json!({
        "ticket_id": id,
        "status": status,
        "staker": staker.map(|a| a.to_string()),
        "block_height": height,
        "current_ticket": now,
    })))
}

/// What the node's roles are on chain: the PoUW names and DOIN's.
fn roles_of(s: &ApiState, st: &doin_storage::ChainStore) -> Roles {
    st.tip().stake(&s.address).map_or(Roles(0), |r| r.roles)
}

/// `GET /pouw/status` (`get_status`): identification and role, runtime status, chain, network
/// and the node's own work in the scanned blocks.
pub(crate) async fn status(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let st = store(&s);
    let roles = roles_of(&s, &st);
    let w = work_of(&s, &st, &s.address);
    let state = st.tip();
    let pouw = roles.pouw_names();
    let alerts = alerts(&l);
    Ok(Json(json!({
        "node_id": s.address.to_string(),
        "peer_id": s.peer_id,
        "role": pouw[0],
        "roles": pouw,
        "doin_roles": roles,
        "is_running": is_running(&l),
        "is_mining": l.domains.values().any(|d| {
            d.optimize && !d.converged && !d.running.is_empty() && d.running != crate::WAITING_FOR_HIRE
        }),
        "is_training": !l.evaluating.is_empty(),
        "blockchain_height": state.height(),
        "mempool_size": l.mempool,
        "peer_count": l.peers.len(),
        "security_alerts": alerts.values().filter_map(Value::as_u64).sum::<u64>(),
        "security": alerts,
        "stats": {
            "blocks_mined": w.blocks_generated,
            "claims_accepted": w.claims_accepted,
            "claims_rejected": w.claims_rejected,
            "votes": w.votes_agreeing + w.votes_outlying,
            "evaluations": l.domains.values().map(|d| d.evaluations).sum::<u64>(),
            "blocks_scanned": w.blocks,
        },
        "uptime_s": s.started.elapsed().as_secs(),
    })))
}

fn is_running(l: &LiveStatus) -> bool {
    l.refreshed_ms > 0 && now_ms().saturating_sub(l.refreshed_ms) < RUNNING_WITHIN_MS
}

/// Security alerts by kind: gossip the checks rejected, banned peers, peers on another genesis,
/// double-vote evidence waiting for a block.
fn alerts(l: &LiveStatus) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("gossip_rejected".into(), l.gossip_refused.0.into());
    m.insert("banned_peers".into(), (l.banned_peers.len() as u64).into());
    m.insert("peers_on_other_genesis".into(), (l.other_genesis.len() as u64).into());
    m.insert("evidence_pending".into(), (l.evidence_pending as u64).into());
    m
}

/// The process's CPU seconds at the previous `health_metrics` call, for a rate.
static CPU_SAMPLE: Mutex<Option<(Instant, f64)>> = Mutex::new(None);

/// CPU use in percent of one core and the window it was measured over: since the previous
/// call (at least a second ago; a call sooner reuses that window), since start at the first.
fn cpu_usage(cpu_seconds: f64, started: Instant) -> (f64, f64) {
    let now = Instant::now();
    let mut last = CPU_SAMPLE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (from, cpu_then) = match *last {
        Some((t, c)) if now.duration_since(t) >= Duration::from_secs(1) && cpu_seconds >= c => (t, c),
        Some((t, c)) if cpu_seconds >= c => {
            // Too soon for a new window: keep the previous sample.
            let window = now.duration_since(t).as_secs_f64().max(1e-3);
            return (100.0 * (cpu_seconds - c) / window, window);
        }
        _ => (started, 0.0),
    };
    *last = Some((now, cpu_seconds));
    let window = now.duration_since(from).as_secs_f64().max(1e-3);
    (100.0 * (cpu_seconds - cpu_then) / window, window)
}

/// Total memory of the machine in MiB (`/proc/meminfo`), if readable.
fn total_memory_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 =
        text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The share of this node's verified work that held: claims accepted and quorum votes within
/// tolerance, of all its claims and votes in the scanned blocks (`None` without any).
fn success_rate(w: &Work) -> Option<f64> {
    let total = w.claims_accepted + w.claims_rejected + w.votes_agreeing + w.votes_outlying;
    (total > 0).then(|| (w.claims_accepted + w.votes_agreeing) as f64 / total as f64)
}

/// `GET /pouw/health_metrics` (`get_health_metrics`): CPU and memory use, the success rate of
/// the node's verified work, and the health verdict with its reasons.
pub(crate) async fn health_metrics(State(s): State<ApiState>) -> ApiResult {
    let l = live(&s);
    let st = store(&s);
    let w = work_of(&s, &st, &s.address);
    let state = st.tip();
    let health = health_of(
        &l,
        state.height(),
        state.meta().timestamp_ms,
        state.params().max_block_interval_ms,
        state.stakes().count(),
        now_ms(),
    );
    let (cpu, window) = cpu_usage(l.usage.0, s.started);
    let memory_mb = l.usage.2;
    Ok(Json(json!({
        "node_id": s.address.to_string(),
        "status": health["status"],
        "reasons": health["reasons"],
        "is_running": is_running(&l),
        "cpu_usage": cpu,
        "cpu_window_s": window,
        "memory_usage": total_memory_mb().map(|t| 100.0 * memory_mb / t),
        "memory_mb": memory_mb,
        "success_rate": success_rate(&w),
        "claims": { "accepted": w.claims_accepted, "rejected": w.claims_rejected },
        "votes": { "agreeing": w.votes_agreeing, "outlying": w.votes_outlying },
        "blocks_scanned": w.blocks,
        "peer_count": l.peers.len(),
        "blockchain_height": state.height(),
        "network_height": l.network_height,
        "last_block_age_s": now_ms().saturating_sub(state.meta().timestamp_ms) as f64 / 1000.0,
        "uptime_s": s.started.elapsed().as_secs(),
    })))
}

/// `?address=` of [`economic_status`].
#[derive(Debug, Deserialize)]
pub(crate) struct Account {
    address: Option<String>,
}

/// `GET /pouw/economic_status[?address=A]` (`get_economic_status`): the balance, the stake and
/// its ticket, unbonding, reputation, and the rewards earned in the scanned blocks — of this
/// node's account, or of `address`.
pub(crate) async fn economic_status(
    State(s): State<ApiState>,
    query: Result<Query<Account>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let who: Address = match &q.address {
        Some(a) => crate::parse_address(a)?,
        None => s.address,
    };
    // Before the store's lock is taken here: the inference server reads the store itself.
    let inference = (who == s.address).then(|| inference_earnings(&s)).flatten();
    let st = store(&s);
    let w = work_of(&s, &st, &who);
    let state = st.tip();
    let stake = state.stake(&who).map(|r| {
        json!({
            "amount": doin(r.amount.0),
            "roles": r.roles.pouw_names(),
            "doin_roles": r.roles,
            "domains": r.domains.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "preferences": r.capabilities,
            "ticket_id": r.ticket.to_string(),
            "staked_since": r.since,
        })
    });
    let unbonding: Vec<Value> = state
        .unbonding()
        .filter(|((_, a), _)| *a == who)
        .map(|((release, _), amount)| json!({ "release_height": release, "amount": doin(amount.0) }))
        .collect();
    let total = w.as_generator + w.as_optimizer + w.as_evaluator;
    Ok(Json(json!({
        "address": who.to_string(),
        "balance": doin(state.account(&who).balance.0),
        "is_staked": stake.is_some(),
        "stake": stake,
        "unbonding": unbonding,
        "reputation": reputation_of(state, &who),
        "rewards": {
            "blocks_scanned": w.blocks,
            "as_block_generator": doin(w.as_generator),
            "as_miner": doin(w.as_optimizer),
            "as_evaluator": doin(w.as_evaluator),
            "total": doin(total),
        },
        "slashed": doin(w.slashed),
        "inference": inference,
        "blockchain_height": state.height(),
    })))
}
