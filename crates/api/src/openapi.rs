//! `GET /openapi.json`: an OpenAPI 3.0 description of every endpoint. The conformance test
//! calls each documented operation and checks the status against the documented ones and the
//! body against the documented required fields.

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};

use crate::ApiState;

/// One operation: method, path, summary, required top-level fields of the 200 body (or a
/// content type for non-JSON bodies), parameters and the error statuses it may answer.
#[derive(Debug)]
pub struct Operation {
    /// `get` or `post`.
    pub method: &'static str,
    /// Path with `{param}` segments.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Success status.
    pub ok: u16,
    /// Required fields of the success body; `None`: not JSON.
    pub required: Option<&'static [&'static str]>,
    /// Content type of a non-JSON success body.
    pub content_type: &'static str,
    /// Query parameters.
    pub query: &'static [&'static str],
    /// Error statuses besides 414, 429 and 500, which every operation may answer.
    pub errors: &'static [u16],
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    required: &'static [&'static str],
) -> Operation {
    Operation {
        method,
        path,
        summary,
        ok: 200,
        required: Some(required),
        content_type: "application/json",
        query: &[],
        errors: &[],
    }
}

/// Every operation the router serves.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        errors: &[503],
        ..op(
            "get",
            "/health",
            "healthy | degraded (200) or unhealthy (503), with the measured reasons.",
            &["status", "reasons", "port", "chain_height", "peers", "last_block_age_s"],
        )
    },
    op(
        "get",
        "/status",
        "Node status in the Python system's shape, DOIN's fields added.",
        &["status", "peer_id", "chain_height", "domains", "peers", "coin", "difficulty"],
    ),
    op(
        "get",
        "/chain/status",
        "Tip, block count and state root.",
        &["chain_height", "tip_index", "tip_hash", "state_root", "finalized_height"],
    ),
    Operation {
        query: &["from", "to"],
        errors: &[400],
        ..op("get", "/chain/blocks", "Blocks from..to inclusive, at most 50.", &["blocks", "has_more"])
    },
    Operation {
        errors: &[400, 404],
        ..op(
            "get",
            "/chain/block/{index}",
            "A canonical block by height.",
            &["header", "hash", "transactions", "certificates"],
        )
    },
    Operation {
        errors: &[400, 404],
        ..op("get", "/chain/block/hash/{hash}", "A block by hash.", &["header", "hash", "canonical"])
    },
    Operation {
        errors: &[400, 404],
        ..op(
            "get",
            "/certificates/{commit}",
            "A certificate with its receipt.",
            &["commit", "outcome", "claimed", "verified", "votes"],
        )
    },
    Operation {
        errors: &[400, 404],
        ..op("get", "/channels/{id}", "An open payment channel.", &["id", "payer", "payee", "deposit"])
    },
    op(
        "get",
        "/disputes",
        "Disputes of inference answers: pending (quorum, votes, deadline), the latest settled, and the evaluators left out of a domain's dispute quorums for a missed deadline.",
        &["pending", "settled", "absent", "params"],
    ),
    Operation {
        errors: &[400, 404],
        ..op(
            "get",
            "/disputes/{id}",
            "One dispute of an inference receipt: server, disputer, quorum, votes, outcome.",
            &["id", "server", "disputer", "domain", "quorum", "votes", "outcome", "deadline"],
        )
    },
    Operation {
        errors: &[503],
        ..op(
            "get",
            "/api/market",
            "The marketplace: offers with what this node's challenges measured, recent matches, the score's weights.",
            &["market", "reference_hashes_per_s", "offers", "tasks", "weights"],
        )
    },
    Operation {
        errors: &[400, 403, 409, 422, 503],
        ..op(
            "post",
            "/api/market/offer",
            "A staked provider's signed offer; admitted once this node's challenge measured it.",
            &["provider", "status"],
        )
    },
    Operation {
        errors: &[400, 403, 429, 503],
        ..op(
            "post",
            "/api/market/challenge",
            "Answers a capability challenge with this node's signed work (one at a time).",
            &["provider", "challenge", "units", "memory", "signature"],
        )
    },
    Operation {
        errors: &[400, 404, 409, 422, 503],
        ..op(
            "post",
            "/api/market/task",
            "Matches a job (PoUW submit_task: kind, domain, minimums, fee) to the best-scoring provider.",
            &["task_id", "provider", "api", "score", "candidates", "refused"],
        )
    },
    Operation {
        errors: &[400, 404, 503],
        ..op("get", "/api/market/task/{n}", "A matched task.", &["task_id", "provider", "score"])
    },
    Operation {
        errors: &[503],
        ..op(
            "get",
            "/api/market/hire",
            "The domains this node optimizes on hire (price per evaluation, bought, evaluated) and the latest hires.",
            &["domains", "hires"],
        )
    },
    Operation {
        errors: &[400, 402, 404, 422, 429, 503],
        ..op(
            "post",
            "/api/market/hire",
            "Buys evaluations of this node's search of a domain it optimizes on hire (paid by x-doin-payment).",
            &["hire_id", "domain_id", "evaluations", "evaluated", "state", "charged"],
        )
    },
    Operation {
        errors: &[400, 404, 503],
        ..op(
            "get",
            "/api/market/hire/{n}",
            "One hire's progress: evaluated, queued, running or done.",
            &["hire_id", "domain_id", "evaluations", "evaluated", "state"],
        )
    },
    Operation {
        required: None,
        content_type: "application/octet-stream",
        errors: &[400, 404],
        ..op("get", "/api/model/{artifact}", "A model artifact this node holds (bytes; check the hash).", &[])
    },
    op("get", "/fees", "Fee market.", &["enabled", "base_fee"]),
    op("get", "/peers", "Connected peers.", &["self", "peers"]),
    Operation {
        query: &["proof"],
        errors: &[400],
        ..op(
            "get",
            "/accounts/{address}",
            "Balance, nonce, stake, reputation; a state proof with proof=true.",
            &["address", "balance", "nonce", "reputation", "height"],
        )
    },
    op("get", "/domains", "Registered domains and champions.", &["domains"]),
    Operation {
        ok: 202,
        errors: &[400, 413, 415, 422, 503],
        ..op("post", "/tx", "Submit a signed transaction.", &["id"])
    },
    op("get", "/tasks/pending", "Pending external-evaluator tasks.", &["tasks", "total_pending"]),
    Operation {
        errors: &[400, 401, 403],
        ..op("post", "/tasks/claim", "Claim a task (x-api-key).", &["task"])
    },
    Operation {
        errors: &[400, 401, 403, 404, 409, 503],
        ..op("post", "/tasks/complete", "Complete a claimed task (x-api-key).", &["accepted", "task_id"])
    },
    Operation {
        ok: 202,
        errors: &[400, 401, 403, 404, 409, 413, 422, 503],
        ..op(
            "post",
            "/inference",
            "Inference from the domain's champion: answered here (200, with a signed receipt) for a \
             domain this node serves, or 202 with a task_id for an asynchronous request (\"async\": \
             true); otherwise queued for a worker (202, x-api-key).",
            &["task_id", "status", "champion"],
        )
    },
    Operation {
        errors: &[404],
        ..op(
            "get",
            "/inference/{task_id}",
            "An inference request's status and result.",
            &["task_id", "status", "result"],
        )
    },
    Operation {
        errors: &[404, 503],
        ..op("get", "/stats", "Experiment summaries per domain (the OLAP cube).", &["olap_summaries"])
    },
    Operation {
        errors: &[404, 503],
        ..op("get", "/stats/experiments", "Experiments and their summaries.", &["experiments", "summaries"])
    },
    Operation {
        query: &["experiment_id", "limit"],
        errors: &[400, 404, 503],
        ..op("get", "/stats/rounds", "Rounds, newest first.", &["rounds"])
    },
    Operation {
        query: &["domain_id"],
        errors: &[400, 404, 503],
        ..op(
            "get",
            "/stats/chain-metrics",
            "Accepted results per optimizer, recent certificates, federated contributions per contributor.",
            &["per_optimizer", "recent", "per_contributor"],
        )
    },
    Operation {
        required: None,
        content_type: "application/vnd.sqlite3",
        errors: &[404, 503],
        ..op("get", "/stats/export", "A consistent copy of the OLAP database.", &[])
    },
    Operation {
        required: None,
        content_type: "text/event-stream",
        query: &["type"],
        ..op(
            "get",
            "/events",
            "Server-Sent Events: blocks, commits, reveals, votes, certificates, champions, peers.",
            &[],
        )
    },
    Operation {
        required: None,
        content_type: "text/plain",
        ..op("get", "/metrics", "Prometheus metrics.", &[])
    },
    op("get", "/openapi.json", "This document.", &["openapi", "info", "paths"]),
    Operation {
        required: None,
        content_type: "text/html",
        ..op("get", "/dashboard", "The web dashboard.", &[])
    },
    op(
        "get",
        "/api/node",
        "Node identity, domains and roles.",
        &["node_label", "peer_id", "port", "uptime_s", "domains", "chain_height"],
    ),
    op("get", "/api/peers", "Peers for the dashboard.", &["connected_count", "known_count", "peers"]),
    op("get", "/api/optimization", "Per domain: champion, target, convergence series.", &["domains"]),
    op("get", "/api/training", "Latest candidate each optimizing domain measured.", &["active", "domains"]),
    op(
        "get",
        "/api/evaluations",
        "Quorum evaluations here and votes cast.",
        &["pending_count", "completed_count", "pending", "completed"],
    ),
    op("get", "/api/metrics", "One row per verified champion change.", &["metrics"]),
    Operation {
        query: &["type", "limit"],
        errors: &[400],
        ..op("get", "/api/events", "Recent events, newest first.", &["events", "counts"])
    },
    Operation {
        query: &["limit"],
        errors: &[400],
        ..op("get", "/api/chain", "Newest blocks with receipts.", &["height", "tip_index", "blocks"])
    },
    op("get", "/api/plugins", "Optimizers, evaluators and plugin processes.", &["plugins", "processes"]),
    op(
        "get",
        "/api/economics",
        "Supply, fees, balances, stakes, rewards, bounties, channels.",
        &["supply", "base_fee", "top_balances", "rewards", "bounties", "channels"],
    ),
    op("get", "/api/jobs", "Federated jobs this node supervises (QuackMesh).", &["jobs"]),
    Operation {
        ok: 202,
        errors: &[400, 401, 403, 422, 503],
        ..op(
            "post",
            "/api/job",
            "Create a federated job (x-api-key of a user with create_jobs, or the node's api_key): registered with its escrow, supervised here.",
            &["job", "owner", "status"],
        )
    },
    op(
        "get",
        "/anchors",
        "The finalized checkpoint, the finalized anchor checkpoints (latest 100) and their on-chain anchor records: a joining node's trusted checkpoint.",
        &["finalized", "anchor_interval", "checkpoints"],
    ),
    op(
        "get",
        "/pouw/status",
        "PoUW get_status: role (the seed's names mapped from the on-chain stake), is_running / is_mining / is_training, blockchain height, mempool, peers, security alerts and the node's own work in the scanned blocks.",
        &[
            "node_id",
            "role",
            "roles",
            "is_running",
            "is_mining",
            "blockchain_height",
            "mempool_size",
            "peer_count",
            "security_alerts",
            "stats",
        ],
    ),
    op(
        "get",
        "/pouw/health_metrics",
        "PoUW get_health_metrics: CPU use (percent of one core over the window since the previous call), memory use, the success rate of the node's claims and quorum votes, and the health verdict with its reasons.",
        &["status", "reasons", "cpu_usage", "memory_mb", "success_rate", "peer_count"],
    ),
    Operation {
        query: &["address"],
        errors: &[400],
        ..op(
            "get",
            "/pouw/economic_status",
            "PoUW get_economic_status: balance, stake and its ticket, unbonding, reputation and rewards earned in the scanned blocks — of this node's account or of `address`.",
            &["address", "balance", "is_staked", "stake", "unbonding", "rewards", "slashed"],
        )
    },
    Operation {
        ok: 202,
        errors: &[400, 413, 415, 422, 503],
        ..op(
            "post",
            "/pouw/stake_and_register",
            "PoUW stake_and_register: a signed Stake transaction naming at least one role; answers the pending ticket.",
            &["ticket_id", "status", "staker", "roles"],
        )
    },
    Operation {
        errors: &[400, 404],
        ..op(
            "get",
            "/pouw/ticket/{ticket_id}",
            "A staking ticket: active, superseded (a later stake replaced it) or ended (unstaked); 404 while no block holds it.",
            &["ticket_id", "status"],
        )
    },
    op(
        "get",
        "/api/inference",
        "The domains this node serves (price per request, base units) and its inference queue: waiting, passes run, requests answered, expired, refused, asynchronous jobs.",
        &["serving", "prices", "queue"],
    ),
    op(
        "get",
        "/api/channels",
        "The payment channels paying this node for inference: best update held, earnings, prices.",
        &["payee", "prices", "channels", "earned_open", "earned_settled"],
    ),
    Operation {
        ok: 202,
        errors: &[400, 401, 403, 404],
        ..op(
            "post",
            "/api/channel/{id}/close",
            "Closes a channel paying this node (x-api-key) with the best update held.",
            &["channel"],
        )
    },
    Operation {
        errors: &[404],
        ..op(
            "get",
            "/api/job/{id}/model",
            "The open round's global model (hex little-endian f32) and training recipe.",
            &["job", "round", "model_hash", "sizes", "weights", "lr", "batch"],
        )
    },
    Operation {
        errors: &[400, 404, 413, 422],
        ..op(
            "post",
            "/api/job/{id}/model",
            "A recorded model this node lacks, offered by a holder {weights}; installed only if it hashes to the chain's.",
            &["job", "installed"],
        )
    },
    Operation {
        errors: &[400, 404, 422],
        ..op(
            "post",
            "/api/job/{id}/heartbeat",
            "A registered contributor's signed heartbeat {domain, contributor, sent_ms, signature}.",
            &["job", "online"],
        )
    },
    Operation {
        ok: 202,
        errors: &[400, 404, 413, 422],
        ..op(
            "post",
            "/api/job/{id}/update",
            "A contributor's signed update {update, weights}; refusals are named.",
            &["job", "round", "admitted"],
        )
    },
    Operation {
        errors: &[404],
        ..op(
            "get",
            "/api/cluster/{id}",
            "The round, its deadline, contributors' standing, reputation, quarantine and payouts.",
            &["job", "round", "contributors"],
        )
    },
];

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        202 => "Accepted",
        400 => "Malformed request",
        401 => "Missing or wrong API key",
        403 => "Not allowed on this node",
        404 => "Not found",
        409 => "Conflict (lease expired or task gone)",
        413 => "Body too large",
        414 => "Query string too long",
        415 => "Body is not JSON (Content-Type)",
        422 => "Rejected by the node's rules",
        429 => "Rate limited (see Retry-After)",
        500 => "Internal error",
        _ => "Unavailable",
    }
}

/// The schema of a path or query parameter, by its name: what the handlers parse.
fn param_schema(name: &str) -> Value {
    match name {
        "index" | "from" | "to" | "n" => json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX }),
        // Clamped by each handler to what it serves.
        "limit" => json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX }),
        "proof" => json!({ "type": "boolean" }),
        "hash" | "commit" | "id" | "address" | "artifact" | "ticket_id" => {
            json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" })
        }
        // Ids and filters: any string (an unknown one matches nothing).
        _ => json!({ "type": "string" }),
    }
}

/// The request body of a `post` operation.
fn request_body(path: &str) -> Value {
    let object = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties });
    let closed = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties, "additionalProperties": false });
    let (required, schema) = match path {
        // A signed transaction (`doin wallet` builds them); the node checks the kind, signature,
        // nonce and fees and answers 400 or 422 with the reason.
        "/tx" | "/pouw/stake_and_register" => (
            true,
            object(
                &["chain_id", "sender", "nonce", "max_fee", "priority_fee", "kind", "signature"],
                json!({
                    "chain_id": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                    "sender": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                    "nonce": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                    "max_fee": {},
                    "priority_fee": {},
                    "kind": { "type": "object" },
                    "signature": { "type": "string", "pattern": "^[0-9a-f]{128}$" },
                }),
            ),
        ),
        // A job: `federated_jobs[]`' fields (the node checks each and refuses unknown ones).
        "/api/job" => {
            let number = |lo: f64, hi: f64| json!({ "type": "number", "minimum": lo, "maximum": hi });
            let int = |lo: u64, hi: u64| json!({ "type": "integer", "minimum": lo, "maximum": hi });
            let mut schema = object(
                &["job_id"],
                json!({
                    "job_id": { "type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$" },
                    "model": { "type": "string", "enum": ["mlp_digits"] },
                    "hidden": { "type": "array", "maxItems": 4, "items": int(1, 1024) },
                    "aggregation": {
                        "type": "string",
                        "enum": ["fed_avg", "trimmed_mean", "coordinate_median", "krum", "multi_krum", "loss_scored"],
                    },
                    "min_updates": int(1, 128),
                    "max_updates": int(1, 128),
                    "deadline_k": number(0.0, 100.0),
                    "min_wait": number(0.01, 86_400.0),
                    "max_wait": number(0.01, 86_400.0),
                    "pool_per_round": number(0.0, 1e9),
                    "bounty": number(0.0, 1e9),
                    "lr": number(1e-6, 10.0),
                    "batch": int(1, 1024),
                    "seed": int(0, u64::MAX),
                }),
            );
            schema["additionalProperties"] = json!(false);
            (true, schema)
        }
        // A recorded model offered to a supervisor that lacks it (unknown fields refused).
        "/api/job/{id}/model" => {
            let mut schema = object(
                &["weights"],
                json!({ "weights": { "type": "string", "pattern": "^([0-9a-f]{2})*$" } }),
            );
            schema["additionalProperties"] = json!(false);
            (true, schema)
        }
        // A contributor's signed heartbeat.
        "/api/job/{id}/heartbeat" => (
            true,
            object(
                &["domain", "contributor", "sent_ms", "signature"],
                json!({
                    "domain": { "type": "string", "pattern": "^[a-z0-9_.-]{1,64}$" },
                    "contributor": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                    "sent_ms": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                    "signature": { "type": "string", "pattern": "^[0-9a-f]{128}$" },
                }),
            ),
        ),
        // A contributor's signed update and its weights (`doin fl join` builds them).
        "/api/job/{id}/update" => {
            let hex64 = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
            let count = json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX });
            let mut schema = object(
                &["update", "weights"],
                json!({
                    "update": object(
                        &["domain", "round", "base", "weights", "contributor", "samples", "compute_ms", "bytes", "signature"],
                        json!({
                            "domain": { "type": "string", "pattern": "^[a-z0-9_.-]{1,64}$" },
                            "round": count,
                            "base": hex64,
                            "weights": hex64,
                            "contributor": hex64,
                            "samples": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 },
                            "compute_ms": count,
                            "bytes": count,
                            "signature": { "type": "string", "pattern": "^[0-9a-f]{128}$" },
                        }),
                    ),
                    "weights": { "type": "string", "pattern": "^([0-9a-f]{2})*$" },
                }),
            );
            // The envelope's unknown fields are refused (the signed statement's are not read).
            schema["additionalProperties"] = json!(false);
            (true, schema)
        }
        "/tasks/claim" => (
            false,
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": { "kinds": {
                    "type": "array", "nullable": true,
                    "items": { "type": "string", "enum": ["verification", "inference"] },
                } },
            }),
        ),
        "/tasks/complete" => (
            true,
            object(
                &["task_id", "lease"],
                json!({
                    "task_id": { "type": "string" },
                    "lease": { "type": "string" },
                    "performance": { "type": "number" },
                    "result": {},
                }),
            ),
        ),
        "/api/market/offer" => (
            true,
            object(
                &["provider", "api", "price", "domains", "issued_ms", "signature"],
                json!({
                    "provider": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                    "api": { "type": "string", "maxLength": 128 },
                    "price": { "type": "string", "pattern": "^[0-9]{1,30}$" },
                    "domains": { "type": "array", "maxItems": 32, "items": {
                        "type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$",
                    } },
                    "issued_ms": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                    "signature": { "type": "string", "pattern": "^[0-9a-f]{128}$" },
                }),
            ),
        ),
        "/api/market/challenge" => (
            true,
            object(
                &["seed", "units", "iterations", "mem_mb"],
                json!({
                    "seed": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                    "units": { "type": "integer", "minimum": 0, "maximum": 64 },
                    "iterations": { "type": "integer", "minimum": 0, "maximum": 1_048_576 },
                    "mem_mb": { "type": "integer", "minimum": 0, "maximum": 256 },
                }),
            ),
        ),
        "/api/market/task" => (
            true,
            closed(
                &["kind", "domain_id", "fee"],
                json!({
                    "kind": { "type": "string", "enum": ["inference", "optimize"] },
                    "evaluations": { "type": "integer", "minimum": 0, "maximum": 1_000_000 },
                    "domain_id": { "type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$" },
                    "min_cores": { "type": "number", "minimum": 0, "maximum": 1024 },
                    "min_mem_mb": { "type": "integer", "minimum": 0, "maximum": u32::MAX },
                    "fee": { "type": "number", "minimum": 0, "maximum": 1e12 },
                }),
            ),
        ),
        "/api/market/hire" => (
            true,
            closed(
                &["domain_id", "evaluations"],
                json!({
                    "domain_id": { "type": "string", "maxLength": 64 },
                    "evaluations": { "type": "integer", "minimum": 1, "maximum": 1_000_000 },
                    "task_id": { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                }),
            ),
        ),
        "/inference" => (
            true,
            object(
                &["domain_id"],
                json!({
                    "domain_id": { "type": "string" },
                    "inputs": {},
                    "async": { "type": "boolean" },
                    "expires_in_ms": { "type": "integer", "minimum": 1, "maximum": 600000 },
                }),
            ),
        ),
        _ => (false, json!({ "type": "object" })),
    };
    json!({ "required": required, "content": { "application/json": { "schema": schema } } })
}

/// The document.
pub fn document_value() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let mut params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                // A federated job's id is a domain id, not a hash.
                let schema = if o.path.starts_with("/api/job/") || o.path.starts_with("/api/cluster/") {
                    json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$" })
                } else {
                    param_schema(name)
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        params.extend(
            o.query
                .iter()
                .map(|q| json!({ "name": q, "in": "query", "required": false, "schema": param_schema(q) })),
        );
        let ok_content = match o.required {
            Some(req) => json!({ "application/json": { "schema": {
                "type": "object", "required": req,
                "properties": req.iter().map(|f| (f.to_string(), json!({}))).collect::<Map<String, Value>>(),
            } } }),
            // An event stream is a sequence of events, not one string: no schema to hold it to.
            None if o.content_type == "text/event-stream" => json!({ o.content_type: { "schema": {} } }),
            None => json!({ o.content_type: { "schema": { "type": "string" } } }),
        };
        let mut responses = Map::new();
        responses.insert(o.ok.to_string(), json!({ "description": reason(o.ok), "content": ok_content }));
        // Any operation may answer 414 (query string over 2 KiB), 429 and 500.
        for code in o.errors.iter().chain(&[414, 429, 500]) {
            responses.insert(
                code.to_string(),
                json!({
                    "description": reason(*code),
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                }),
            );
        }
        let mut operation = json!({ "summary": o.summary, "parameters": params, "responses": responses });
        if o.method == "post" {
            operation["requestBody"] = request_body(o.path);
        }
        let entry = paths.entry(o.path.to_owned()).or_insert_with(|| json!({}));
        entry[o.method] = operation;
    }
    // `POST /inference` also answers 200: a domain this node serves is answered at once.
    paths["/inference"]["post"]["responses"]["200"] = json!({
        "description": reason(200),
        "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["domain_id", "optimae", "artifact", "model_quality", "height", "outputs", "receipt"],
        } } },
    });
    json!({
        "openapi": "3.0.3",
        "info": { "title": "DOIN node API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": { "schemas": { "Error": {
            "type": "object", "required": ["error", "detail"],
            "properties": { "error": { "type": "string" }, "detail": { "type": "string" } },
        } } },
    })
}

/// The handler.
pub(crate) async fn document(State(_): State<ApiState>) -> Json<Value> {
    Json(document_value())
}
