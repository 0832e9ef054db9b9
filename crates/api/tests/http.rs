//! Every endpoint without a socket (tower `oneshot`): shapes, status codes, bad input; and
//! the server's connection handling (cap, idle eviction, header timeout) over loopback.

use std::sync::{Arc, Mutex, RwLock};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use doin_api::{
    ApiState, DomainStatus, LiveStatus, Submission,
    events::EventBus,
    guard::{Guard, Limits},
    router,
    tasks::{Completion, Task, TaskKind, TaskQueue},
};
use doin_consensus::testkit::TestNet;
use doin_primitives::{Amount, TxKind};
use doin_storage::{ChainStore, StoreOptions};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    chain: TestNet,
    state: ApiState,
    done: tokio::sync::mpsc::Receiver<(Task, Completion)>,
}

/// A stored chain of 20 blocks (work blocks with certificates, each after the two blocks that
/// include and seal its commit, and heartbeats with transfers; the first work block is
/// `blocks[2]`, height 3) and
/// a stand-in for the node's submission handler that admits transactions with a valid signature.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = TestNet::new(10, 5, 2);
    for i in 0..12 {
        if i % 3 == 0 {
            chain.improve(9, 5 + i % 2, 80.0 / (1.0 + i as f64)).unwrap();
        } else {
            let tx = chain.tx(7, TxKind::Transfer { to: chain.addr(8), amount: Amount(3) });
            chain.heartbeat(vec![tx]).unwrap();
        }
    }
    let mut store =
        ChainStore::open(&dir.path().join("chain.redb"), &chain.spec, StoreOptions::default()).unwrap();
    store.import_many(&chain.blocks, 8).unwrap();
    let (submit, mut rx) = tokio::sync::mpsc::channel::<Submission>(8);
    std::thread::spawn(move || {
        while let Some(s) = rx.blocking_recv() {
            let verdict = if s.tx.verify() { Ok(s.tx.id()) } else { Err("bad signature".to_owned()) };
            let _ = s.reply.send(verdict);
        }
    });
    let mut live = LiveStatus { peers: vec!["12D3KooWpeer".into()], ..LiveStatus::default() };
    live.domains.insert(
        "quadratic".into(),
        DomainStatus {
            optimize: true,
            evaluate: true,
            synthetic: true,
            trusted: false,
            target_performance: Some(-100.0),
            ..Default::default()
        },
    );
    let (completions, done) = tokio::sync::mpsc::channel(8);
    let state = ApiState {
        store: Arc::new(Mutex::new(store)),
        live: Arc::new(RwLock::new(live)),
        submit,
        address: chain.addr(0),
        peer_id: "12D3KooWself".into(),
        port: 8470,
        tasks: Arc::new(Mutex::new(TaskQueue::new(16, std::time::Duration::from_secs(60)))),
        completions,
        api_key: Some("sesame".into()),
        events: Arc::new(EventBus::new()),
        guard: Arc::new(Guard::new(Limits::default())),
        started: std::time::Instant::now(),
        stats: Some(doin_api::stats::Stats::new(stats_db(dir.path())).unwrap()),
        chain_cache: Arc::default(),
        jobs: None,
        inference: None,
        market: None,
    };
    Fixture { _dir: dir, chain, state, done }
}

/// A tracking database with one experiment, two rounds and a certificate.
fn stats_db(dir: &std::path::Path) -> doin_tracking::olap::StatsReader {
    let path = dir.join("olap.db");
    let mut o = doin_tracking::Olap::open(&path).unwrap();
    let e = doin_tracking::Experiment {
        experiment_id: "e1".into(),
        domain_id: "quadratic".into(),
        higher_is_better: true,
        target_performance: Some(-100.0),
        ..Default::default()
    };
    o.record_experiment(&e).unwrap();
    for n in 1..=2 {
        let r = doin_tracking::Round {
            experiment_id: "e1".into(),
            round_number: n,
            timestamp_ms: 1000 * n,
            best_performance: Some(-50.0 * n as f64),
            ..Default::default()
        };
        o.record_round(&e, &r).unwrap();
    }
    let c = doin_tracking::ChainOptimae {
        block_height: 1,
        block_hash: "b1".into(),
        domain_id: "quadratic".into(),
        optimizer: "alice".into(),
        outcome: "Accept".into(),
        ..Default::default()
    };
    o.apply_chain(0, &[c], &[]).unwrap();
    doin_tracking::olap::StatsReader::new(path)
}

async fn call(state: &ApiState, method: &str, uri: &str, body: Option<String>) -> (StatusCode, Value) {
    call_with_key(state, method, uri, body, None).await
}

/// A GET from the client at `ip`: status, `Retry-After`, content type and raw body.
async fn raw(state: &ApiState, uri: &str, ip: [u8; 4]) -> (StatusCode, Option<String>, String, Vec<u8>) {
    let mut req = Request::builder().method("GET").uri(uri).body(Body::empty()).unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let header =
        |h| resp.headers().get(h).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::to_owned);
    let (retry, ctype) = (header("retry-after"), header("content-type").unwrap_or_default());
    // Streams (SSE) never end: read what is there within a moment.
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), body.frame()).await
    {
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    (status, retry, ctype, bytes)
}

async fn call_with_key(
    state: &ApiState,
    method: &str,
    uri: &str,
    body: Option<String>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn seed_endpoints_have_the_familiar_shapes() {
    let f = fixture();
    // The fixture's chain was last extended in 2023: measured, that is a node following no chain.
    let (s, v) = call(&f.state, "GET", "/health", None).await;
    assert_eq!(
        (s, v["status"].as_str(), v["port"].as_u64()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unhealthy"), Some(8470))
    );
    assert!(v["reasons"][0].as_str().unwrap().starts_with("no block for"), "{v}");

    let (s, v) = call(&f.state, "GET", "/chain/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["chain_height"], 21, "a block count: genesis + 20");
    assert_eq!(v["tip_index"], 20);
    assert_eq!(v["tip_hash"], f.chain.blocks[19].hash().to_string());

    let (s, v) = call(&f.state, "GET", "/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["chain_height"], 21);
    assert_eq!(v["domains"]["quadratic"]["target_performance"], -100.0);
    assert_eq!(v["peers"], 1);
    for k in ["task_queue", "security", "coin", "difficulty", "storage", "optimizer_domains"] {
        assert!(!v[k].is_null(), "{k} missing");
    }

    let (s, v) = call(&f.state, "GET", "/fees", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["enabled"], true);
    let (_, v) = call(&f.state, "GET", "/peers", None).await;
    assert_eq!(v["self"]["peer_id"], "12D3KooWself");
    assert_eq!(v["peers"][0]["peer_id"], "12D3KooWpeer");
}

#[tokio::test]
async fn blocks_link_and_ranges_are_bounded() {
    let f = fixture();
    let (s, v) = call(&f.state, "GET", "/chain/blocks?from=0&to=20", None).await;
    assert_eq!(s, StatusCode::OK);
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 21);
    assert_eq!(v["has_more"], false);
    assert_eq!(blocks[0]["header"]["generator_id"], "genesis");
    for w in blocks.windows(2) {
        assert_eq!(w[1]["header"]["previous_hash"], w[0]["hash"], "every block links to the one before");
        assert_eq!(w[1]["header"]["index"].as_u64().unwrap(), w[0]["header"]["index"].as_u64().unwrap() + 1);
    }
    assert!(blocks.iter().any(|b| !b["certificates"].as_array().unwrap().is_empty()));
    assert!(blocks.iter().any(|b| b["transactions"][0]["id"].is_string()));
    assert!(blocks[1]["header"]["timestamp"].as_str().unwrap().ends_with('Z'));

    // At most 50 per request, with has_more.
    let (_, v) = call(&f.state, "GET", "/chain/blocks?from=0&to=1000", None).await;
    assert_eq!(v["blocks"].as_array().unwrap().len(), 21);
    let (_, v) = call(&f.state, "GET", "/chain/blocks?from=30&to=40", None).await;
    assert_eq!(v["blocks"].as_array().unwrap().len(), 0);
    let (s, v) = call(&f.state, "GET", "/chain/blocks?from=5&to=2", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_range")));
    let (s, _) = call(&f.state, "GET", "/chain/blocks?from=x", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, v) = call(&f.state, "GET", "/chain/block/3", None).await;
    assert_eq!(
        (s, v["hash"].as_str().map(str::to_owned)),
        (StatusCode::OK, Some(f.chain.blocks[2].hash().to_string()))
    );
    let (s, v) = call(&f.state, "GET", "/chain/block/99", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, _) = call(&f.state, "GET", "/chain/block/-1", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call(&f.state, "GET", "/nope", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn accounts_and_transaction_submission() {
    let f = fixture();
    let addr = f.chain.addr(8);
    let (s, v) = call(&f.state, "GET", &format!("/accounts/{addr}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let expected = f.chain.state.account(&addr);
    assert_eq!(v["balance"], expected.balance.0.to_string());
    assert_eq!(v["nonce"], expected.nonce);
    let (s, v) = call(&f.state, "GET", "/accounts/zz", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_address")));

    let tx = f.chain.tx(3, TxKind::Transfer { to: addr, amount: Amount(5) });
    let (s, v) = call(&f.state, "POST", "/tx", Some(serde_json::to_string(&tx).unwrap())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["id"], tx.id().to_string());
    // A tampered transaction is refused with the node's reason.
    let mut bad = tx.clone();
    bad.body.nonce += 1;
    let (s, v) = call(&f.state, "POST", "/tx", Some(serde_json::to_string(&bad).unwrap())).await;
    assert_eq!((s, v["detail"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("bad signature")));
    let (s, v) = call(&f.state, "POST", "/tx", Some("{\"not\": \"a tx\"}".into())).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_transaction")));
    let huge = "x".repeat(doin_api::MAX_BODY_BYTES + 10);
    let (s, _) = call(&f.state, "POST", "/tx", Some(huge)).await;
    assert!(s == StatusCode::PAYLOAD_TOO_LARGE || s == StatusCode::BAD_REQUEST, "{s}");
}

#[tokio::test]
async fn external_evaluators_pull_tasks_with_the_api_key() {
    let mut f = fixture();
    let (s, v) = call(&f.state, "GET", "/tasks/pending", None).await;
    assert_eq!((s, v["total_pending"].as_u64()), (StatusCode::OK, Some(0)));
    for (id, kind) in [("c1:0", TaskKind::Verification), ("i1", TaskKind::Inference)] {
        f.state
            .tasks
            .lock()
            .unwrap()
            .push(Task {
                task_id: id.into(),
                kind,
                domain: "quadratic".into(),
                commit: "c1".into(),
                round: 0,
                params: vec![0.5; 3],
                seed: "ab".repeat(32),
                limits: Value::Null,
                lease_s: None,
                inputs: None,
            })
            .unwrap();
    }
    let (_, v) = call(&f.state, "GET", "/tasks/pending", None).await;
    assert_eq!(v["tasks"][0]["kind"], "verification", "verification before inference: {v}");

    // Claiming needs the key.
    let (s, _) = call(&f.state, "POST", "/tasks/claim", Some("{}".into())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call_with_key(&f.state, "POST", "/tasks/claim", Some("{}".into()), Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call_with_key(&f.state, "POST", "/tasks/claim", Some("{}".into()), Some("sesame")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["task"]["task_id"], "c1:0");
    let lease = v["lease"].as_str().unwrap().to_owned();
    let (_, v) = call(&f.state, "GET", "/status", None).await;
    assert_eq!(v["task_queue"]["claimed"], 1);

    // Completion: wrong lease, bad body, then the real one reaches the node.
    let done =
        |lease: &str, perf: &str| format!(r#"{{"task_id":"c1:0","lease":"{lease}","performance":{perf}}}"#);
    let (s, _) =
        call_with_key(&f.state, "POST", "/tasks/complete", Some(done("nope", "1.5")), Some("sesame")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call_with_key(&f.state, "POST", "/tasks/complete", Some("{}".into()), Some("sesame")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) =
        call_with_key(&f.state, "POST", "/tasks/complete", Some(done(&lease, "-1.5")), Some("sesame")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (task, completion) = f.done.recv().await.unwrap();
    assert_eq!((task.commit.as_str(), completion.performance), ("c1", Some(-1.5)));
    let (s, _) =
        call_with_key(&f.state, "POST", "/tasks/complete", Some(done(&lease, "-1.5")), Some("sesame")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a task completes once");

    // A node without an api_key hands out nothing.
    let mut open = f.state.clone();
    open.api_key = None;
    let (s, v) = call_with_key(&open, "POST", "/tasks/claim", None, Some("sesame")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("no_api_key")));
}

/// Every operation `/openapi.json` documents answers with a documented status and, for JSON
/// success bodies, the documented required fields; every documented path is routed (none falls
/// through to the 404 fallback with `not_found` for a valid id).
#[tokio::test]
async fn openapi_document_matches_the_server() {
    let f = fixture();
    let (s, doc) = call(&f.state, "GET", "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let block = f.chain.blocks[2].hash().to_string();
    let cert = f.chain.blocks[2].body.certificates[0].commit.id().to_string();
    let addr = f.chain.addr(8).to_string();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let uri = path
                .replace("{index}", "3")
                .replace("{hash}", &block)
                .replace("{commit}", &cert)
                .replace("{address}", &addr)
                .replace("{id}", &"ab".repeat(32))
                .replace("{task_id}", "inference-unknown");
            let documented: Vec<u16> =
                op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
            let (status, body) = if method == "get" {
                let (s, _, ctype, bytes) = raw(&f.state, &uri, [127, 0, 0, 9]).await;
                let ok = op["responses"][s.as_str()]["content"].as_object().cloned().unwrap_or_default();
                if let Some(expected) = ok.keys().next() {
                    assert!(
                        ctype.starts_with(expected.as_str()),
                        "{uri}: content type {ctype}, documented {expected}"
                    );
                }
                (s, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            } else {
                call_with_key(&f.state, "POST", &uri, Some("{}".into()), Some("sesame")).await
            };
            assert!(
                documented.contains(&status.as_u16()),
                "{method} {uri}: {status} is not documented ({documented:?})"
            );
            let schema = &op["responses"][status.as_str()]["content"]["application/json"]["schema"];
            if status.is_success() && !schema.is_null() {
                for field in schema["required"].as_array().unwrap() {
                    let field = field.as_str().unwrap();
                    assert!(body.get(field).is_some(), "{method} {uri}: missing {field} in {body}");
                }
            }
            if !status.is_success() {
                assert!(body["error"].is_string() && body["detail"].is_string(), "{method} {uri}: {body}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 30);
    // Channels: the documented 404 for an unknown one names it.
    let (s, v) = call(&f.state, "GET", &format!("/channels/{}", "cd".repeat(32)), None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn dashboard_views_reflect_the_chain() {
    let f = fixture();
    // Certificates: found by commit, with the verified median and the receipt.
    let cert = &f.chain.blocks[2].body.certificates[0];
    let (s, v) = call(&f.state, "GET", &format!("/certificates/{}", cert.commit.id()), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["block_index"], 3);
    assert_eq!(v["outcome"], "Accept");
    assert_eq!(v["votes"].as_array().unwrap().len(), cert.votes.len());
    let (s, _) = call(&f.state, "GET", &format!("/certificates/{}", "00".repeat(32)), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(&f.state, "GET", "/certificates/xyz", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_hash")));

    // Blocks by hash, canonical.
    let b = &f.chain.blocks[4];
    let (_, v) = call(&f.state, "GET", &format!("/chain/block/hash/{}", b.hash()), None).await;
    assert_eq!((v["header"]["index"].as_u64(), v["canonical"].as_bool()), (Some(5), Some(true)));

    // Convergence and metrics rows: one per champion change, as the chain recorded them.
    let (_, v) = call(&f.state, "GET", "/api/optimization", None).await;
    let d = &v["domains"][0];
    let series = d["convergence"].as_array().unwrap();
    let champion =
        f.chain.state.domain(&doin_consensus::testkit::domain_id()).unwrap().champion.clone().unwrap();
    assert_eq!(series.len(), 4, "4 improving work blocks: {v}");
    assert_eq!(series.last().unwrap()[1].as_f64().unwrap(), champion.performance.to_f64());
    assert_eq!(d["best_performance"].as_f64().unwrap(), champion.performance.to_f64());
    // A new improving block: the cached views pick it up.
    let mut f = f;
    let before = f.chain.blocks.len();
    f.chain.improve(9, 5, 1.0).unwrap();
    for block in &f.chain.blocks[before..] {
        f.state.store.lock().unwrap().import(block).unwrap();
    }
    let (_, v) = call(&f.state, "GET", "/api/optimization", None).await;
    assert_eq!(v["domains"][0]["convergence"].as_array().unwrap().len(), 5, "{v}");
    let (_, v) = call(&f.state, "GET", "/api/metrics", None).await;
    let rows = v["metrics"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let rows = &rows[..4];
    assert_eq!(rows[3]["champion_num"], 4);
    assert_eq!(rows[3]["previous_best_performance"], rows[2]["performance"]);

    // The chain view: newest first, linked.
    let (_, v) = call(&f.state, "GET", "/api/chain?limit=5", None).await;
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!((blocks.len(), blocks[0]["index"].as_u64()), (5, Some(23)));
    for w in blocks.windows(2) {
        assert_eq!(w[0]["previous_hash"], w[1]["hash"]);
    }
    let (s, _) = call(&f.state, "GET", "/api/chain?limit=abc", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Economics: supply and rewards agree with the chain.
    let (_, v) = call(&f.state, "GET", "/api/economics", None).await;
    let minted = f.chain.state.meta().supply.minted.0 as f64 / 1e9;
    assert_eq!(v["supply"]["minted"].as_f64().unwrap(), minted);
    assert!(v["rewards"]["to_optimizers"].as_f64().unwrap() > 0.0);

    // Accounts with a state proof that verifies against the root.
    let addr = f.chain.addr(8);
    let (_, v) = call(&f.state, "GET", &format!("/accounts/{addr}?proof=true"), None).await;
    assert_eq!(v["proof"]["state_root"], f.chain.state.root().to_string());
    let rec = &v["proof"]["records"]["account"];
    let proof: doin_consensus::tree::StateProof =
        doin_primitives::decode(&hex::decode(rec["proof"].as_str().unwrap()).unwrap(), 1 << 20, "proof")
            .unwrap();
    let value = rec["value"].as_str().map(|h| hex::decode(h).unwrap());
    let key = doin_consensus::StateKey::Account(addr).key_hash();
    assert!(doin_consensus::tree::verify_proof(&f.chain.state.root(), key, value.as_deref(), &proof));
    let (_, v) = call(&f.state, "GET", &format!("/accounts/{addr}"), None).await;
    assert!(v["proof"].is_null());
}

#[tokio::test]
async fn events_stream_and_metrics() {
    let f = fixture();
    f.state.events.emit("block", None, serde_json::json!({ "height": 12 }));
    f.state.events.emit("champion", Some("quadratic"), serde_json::json!({ "performance": -1.0 }));
    let (_, v) = call(&f.state, "GET", "/api/events?limit=10", None).await;
    let events = v["events"].as_array().unwrap();
    assert_eq!((events.len(), events[0]["type"].as_str()), (2, Some("champion")), "newest first");
    assert_eq!(v["counts"]["block"], 1);
    let (_, v) = call(&f.state, "GET", "/api/events?type=block", None).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);

    // The SSE stream delivers what is emitted after subscribing.
    let state = f.state.clone();
    let emitter = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state.events.emit("certificate", Some("quadratic"), serde_json::json!({ "outcome": "Accept" }));
    });
    let (s, _, ctype, bytes) = raw(&f.state, "/events", [127, 0, 0, 3]).await;
    emitter.await.unwrap();
    assert_eq!((s, ctype.as_str()), (StatusCode::OK, "text/event-stream"));
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("event: certificate"), "{text}");
    assert!(text.contains("\"outcome\":\"Accept\""), "{text}");

    // Prometheus text with chain, HTTP and event figures.
    let (s, _, ctype, bytes) = raw(&f.state, "/metrics", [127, 0, 0, 3]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(bytes).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("doin_chain_height "), 20.0);
    assert_eq!(value("doin_peers "), 1.0);
    assert_eq!(value("doin_events_total{type=\"block\"}"), 1.0);
    assert!(value("doin_http_responses_total{class=\"2xx\"}") >= 3.0);
    assert!(text.contains("# TYPE doin_domain_champion_performance gauge"));
}

/// A flood from one client is throttled with 429 and `Retry-After` while another client is
/// served; oversized queries are refused.
#[tokio::test]
async fn a_flooding_client_is_throttled_while_others_are_served() {
    let mut f = fixture();
    f.state.guard = Arc::new(Guard::new(Limits { rate_per_s: 5.0, burst: 20.0, ..Limits::default() }));
    let mut limited = 0;
    let mut retry = None;
    for _ in 0..60 {
        let (s, r, _, body) = raw(&f.state, "/health", [127, 0, 0, 66]).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            retry = r;
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], "rate_limited");
        }
    }
    assert!(limited >= 35, "{limited} of 60 throttled (burst 20)");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    let (s, _, _, _) = raw(&f.state, "/health", [127, 0, 0, 67]).await;
    assert_ne!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "another client is served (its verdict on the fixture's old chain: 503)"
    );
    let (_, v) = call(&f.state, "GET", "/metrics", None).await;
    assert!(v.is_null(), "metrics are text");
    let long = format!("/chain/blocks?from=0&x={}", "a".repeat(doin_api::guard::MAX_QUERY_BYTES));
    let (s, _, _, _) = raw(&f.state, &long, [127, 0, 0, 68]).await;
    assert_eq!(s, StatusCode::URI_TOO_LONG);
    assert!(f.state.guard.rate_limited.load(std::sync::atomic::Ordering::Relaxed) >= 35);
}

#[tokio::test]
async fn the_dashboard_is_served_self_contained() {
    let f = fixture();
    let (s, _, ctype, bytes) = raw(&f.state, "/dashboard", [127, 0, 0, 5]).await;
    assert_eq!((s, ctype.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
    let page = String::from_utf8(bytes).unwrap();
    assert!(page.contains("new EventSource(\"/events\")"));
    for view in ["/api/node", "/api/optimization", "/api/chain", "/api/economics", "/api/peers"] {
        assert!(page.contains(view), "{view} not used");
    }
    assert!(!page.contains("http://") && !page.contains("https://"), "no external fetches");
}

#[tokio::test]
async fn stats_endpoints_read_the_tracking_cube() {
    let mut f = fixture();
    let (s, v) = call(&f.state, "GET", "/stats", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["quadratic"]["total_rounds"], 2);
    let (_, v) = call(&f.state, "GET", "/stats/rounds?experiment_id=e1&limit=1", None).await;
    assert_eq!(v["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(v["rounds"][0]["round_number"], 2);
    let (_, v) = call(&f.state, "GET", "/stats/chain-metrics?domain_id=quadratic", None).await;
    assert_eq!(v["per_optimizer"][0]["optimizer"], "alice");
    assert_eq!(v["per_optimizer"][0]["accepted"], 1);
    let (s, _) = call(&f.state, "GET", "/stats/rounds?limit=x", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, ctype, bytes) = raw(&f.state, "/stats/export", [127, 0, 0, 4]).await;
    assert_eq!((s, ctype.as_str()), (StatusCode::OK, "application/vnd.sqlite3"));
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    // Without a database: a clear 404 naming the config key.
    f.state.stats = None;
    let (s, v) = call(&f.state, "GET", "/stats", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("no_olap")));
    assert!(v["detail"].as_str().unwrap().contains("olap_db_path"));
}

/// Inference from the champion: queued with the champion's parameters and the inputs, served
/// to a worker after verification work, answered through the task queue.
#[tokio::test]
async fn inference_requests_go_through_the_task_queue() {
    let f = fixture();
    let body = serde_json::json!({ "domain_id": "quadratic", "inputs": [[1.0, 2.0]] }).to_string();
    let (s, _) = call(&f.state, "POST", "/inference", Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a write needs the API key");
    let (s, v) = call_with_key(&f.state, "POST", "/inference", Some(body.clone()), Some("sesame")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["task_id"].as_str().unwrap().to_owned();
    let champion =
        f.chain.state.domain(&doin_consensus::testkit::domain_id()).unwrap().champion.clone().unwrap();
    assert_eq!(v["champion"]["commit"], champion.commit.to_string());
    let (_, v) = call(&f.state, "GET", &format!("/inference/{id}"), None).await;
    assert_eq!(v["status"], "pending");

    let claim = serde_json::json!({ "kinds": ["inference"] }).to_string();
    let (_, v) = call_with_key(&f.state, "POST", "/tasks/claim", Some(claim), Some("sesame")).await;
    assert_eq!(v["task"]["task_id"], id.as_str());
    assert_eq!(v["task"]["inputs"], serde_json::json!([[1.0, 2.0]]));
    assert_eq!(v["task"]["params"].as_array().unwrap().len(), 4, "the champion's parameters");
    let lease = v["lease"].as_str().unwrap().to_owned();
    let (_, v) = call(&f.state, "GET", &format!("/inference/{id}"), None).await;
    assert_eq!(v["status"], "claimed");
    // A completion without a result is refused; with one, the requester reads it.
    let bad = serde_json::json!({ "task_id": id, "lease": lease }).to_string();
    let (s, _) = call_with_key(&f.state, "POST", "/tasks/complete", Some(bad), Some("sesame")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let done =
        serde_json::json!({ "task_id": id, "lease": lease, "result": { "predictions": [7] } }).to_string();
    let (s, _) = call_with_key(&f.state, "POST", "/tasks/complete", Some(done), Some("sesame")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = call(&f.state, "GET", &format!("/inference/{id}"), None).await;
    assert_eq!((v["status"].as_str(), &v["result"]["predictions"][0]), (Some("done"), &serde_json::json!(7)));

    let unknown = serde_json::json!({ "domain_id": "nope", "inputs": [] }).to_string();
    let (s, v) = call_with_key(&f.state, "POST", "/inference", Some(unknown), Some("sesame")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_domain")));
    let (s, _) = call(&f.state, "GET", "/inference/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Serves the fixture's router on a loopback port within `limits`.
async fn listen(state: &ApiState, limits: doin_api::server::ConnLimits) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(doin_api::server::run(listener, router(state.clone()), limits, state.guard.clone()));
    addr
}

/// A GET over a fresh connection: the status line and body (a 10 s read timeout).
async fn get_over_tcp(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// 2 000 connections that never send a byte (more than the server keeps open) do not stop a
/// fresh client: the longest-idle ones are closed to make room and the client is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_clients_out() {
    let f = fixture();
    let limits = doin_api::server::ConnLimits::for_this_process();
    let addr = listen(&f.state, limits).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The server has accepted what it will (the rest wait in the backlog or were closed).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let answer = get_over_tcp(addr, "/chain/status").await;
    eprintln!(
        "answered in {:?} beside 2 000 idle connections (cap {})",
        started.elapsed(),
        limits.max_connections
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"chain_height\":21"), "{answer}");
    let c = &f.state.guard.connections;
    let open = c.open.load(std::sync::atomic::Ordering::Relaxed);
    assert!(open <= limits.max_connections, "{open} open, cap {}", limits.max_connections);
    assert!(
        c.evicted.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "idle connections were closed for room"
    );
    drop(idle);
}

/// A connection that sends nothing is closed after the header-read timeout, and so is a
/// kept-alive one that stays idle after its response.
#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let limits = doin_api::server::ConnLimits {
        max_connections: 16,
        header_read_timeout: std::time::Duration::from_millis(300),
    };
    let addr = listen(&f.state, limits).await;
    let read_to_close = |mut s: tokio::net::TcpStream| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("the server closed the connection")
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    };
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = read_to_close(silent).await;
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /chain/status HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let text = read_to_close(kept).await;
    assert!(text.starts_with("HTTP/1.1 200"), "answered, then closed when idle: {text}");
}

/// When room is made, a response still streaming (`/events`) keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_keeps_its_connection_when_room_is_made() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let limits = doin_api::server::ConnLimits {
        max_connections: 8,
        header_read_timeout: std::time::Duration::from_secs(30),
    };
    let addr = listen(&f.state, limits).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    f.state.events.emit("champion", Some("quadratic"), serde_json::json!({ "performance": -2.0 }));
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("event: champion") && std::time::Instant::now() < deadline {
        match tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the event stream was closed to make room: {seen}"),
            Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("the event stream failed: {e}"),
            Err(_) => {}
        }
    }
    assert!(seen.contains("event: champion"), "{seen}");
    assert!(f.state.guard.connections.evicted.load(std::sync::atomic::Ordering::Relaxed) >= 30);
}

/// Peak resident memory of this process, MiB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// 50 concurrent exports of a 40 MB cube while it is written to: every client gets the whole
/// database, one snapshot serves them all, and the process's memory stays far below the
/// 2 GB that copies per request would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exports_share_one_snapshot_and_stream_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let db = f._dir.path().join("olap.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE padding (b BLOB)").unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..40 {
            c.execute("INSERT INTO padding VALUES (?1)", [&chunk]).unwrap();
        }
    }
    let size = std::fs::metadata(&db).unwrap().len()
        + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    assert!(size >= 40 << 20, "a 40 MB cube: {size} bytes");
    // A writer keeps writing meanwhile.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (db, writing) = (db.clone(), writing.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut n = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                c.execute("INSERT INTO padding VALUES (x'00')", []).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            n
        })
    };
    let before = peak_rss_mb();
    let addr = listen(&f.state, doin_api::server::ConnLimits::for_this_process()).await;
    let clients: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /stats/export HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let (mut total, mut head) = (0usize, Vec::new());
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = tokio::time::timeout(std::time::Duration::from_secs(60), s.read(&mut buf))
                        .await
                        .expect("the export streams")
                        .unwrap();
                    if n == 0 {
                        break;
                    }
                    if head.len() < 4096 {
                        head.extend_from_slice(&buf[..n.min(4096)]);
                    }
                    total += n;
                }
                (total, String::from_utf8_lossy(&head).into_owned())
            })
        })
        .collect();
    for c in clients {
        let (total, head) = c.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{}", &head[..head.len().min(300)]);
        assert!(head.contains("SQLite format 3"), "a database file");
        assert!(total >= 40 << 20, "the whole cube: {total} bytes");
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let peak = peak_rss_mb();
    eprintln!("50 exports: peak RSS {before:.0} → {peak:.0} MiB; {writes} writes meanwhile");
    assert!(peak < 200.0, "peak RSS {peak:.0} MiB");
    assert!(writes > 0, "the writer was not blocked");
}

/// Every error is `{error, detail}` JSON with its documented status, the framework's own
/// answers (405, a bad query, an oversized body) included.
#[tokio::test]
async fn every_error_is_json_with_its_status() {
    let f = fixture();
    let is_error = |v: &Value| v["error"].is_string() && v["detail"].as_str().is_some_and(|d| !d.is_empty());
    let (s, v) = call(&f.state, "DELETE", "/status", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_error(&v) && v["error"] == "method_not_allowed", "{v}");
    let (s, v) = call(&f.state, "GET", "/api/events?limit=x", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(is_error(&v), "{v}");
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(doin_api::MAX_BODY_BYTES + 1));
    let (s, v) = call(&f.state, "POST", "/tx", Some(big.clone())).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(is_error(&v), "{v}");
    let (s, v) = call_with_key(&f.state, "POST", "/tasks/claim", Some(big), Some("sesame")).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(is_error(&v), "{v}");
    // A claim body must be an object with known keys.
    for body in ["[[\"verification\"]]", "{\"kind\": [\"verification\"]}", "7"] {
        let (s, v) = call_with_key(&f.state, "POST", "/tasks/claim", Some(body.into()), Some("sesame")).await;
        assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_claim")), "{body}: {v}");
    }
    let (s, v) = call(&f.state, "GET", "/no/such/thing", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

/// `/api/peers` tells connected peers from banned ones (known, cut off), with their scores;
/// `/api/node` names the discovery mechanisms running.
#[tokio::test]
async fn peers_and_discovery_are_reported_as_measured() {
    let f = fixture();
    {
        let mut l = f.state.live.write().unwrap();
        l.peer_scores.insert("12D3KooWpeer".into(), 3.5);
        l.banned_peers = vec!["12D3KooWflooder".into()];
        l.discovery = vec!["kademlia".into()];
    }
    let (_, v) = call(&f.state, "GET", "/api/peers", None).await;
    assert_eq!(
        (v["connected_count"].as_u64(), v["known_count"].as_u64(), v["banned_count"].as_u64()),
        (Some(1), Some(2), Some(1))
    );
    let peers = v["peers"].as_array().unwrap();
    assert_eq!((peers[0]["connected"].as_bool(), peers[0]["score"].as_f64()), (Some(true), Some(3.5)));
    assert_eq!(
        (peers[1]["peer_id"].as_str(), peers[1]["connected"].as_bool()),
        (Some("12D3KooWflooder"), Some(false))
    );
    let (_, v) = call(&f.state, "GET", "/status", None).await;
    assert_eq!(v["security"]["banned_peers"], 1);
    let (_, v) = call(&f.state, "GET", "/api/node", None).await;
    assert_eq!(
        (v["discovery_enabled"].as_bool(), v["discovery"][0].as_str()),
        (Some(true), Some("kademlia"))
    );
    f.state.live.write().unwrap().discovery.clear();
    let (_, v) = call(&f.state, "GET", "/api/node", None).await;
    assert_eq!(v["discovery_enabled"], false);
}

/// `/status` and `/metrics` report the justified checkpoint of the stored chain (stake-signed
/// finality votes carried in its blocks) and the finality votes the node holds.
#[tokio::test]
async fn finality_is_reported_from_the_chain_and_the_vote_pool() {
    let f = fixture();
    let mut chain = TestNet::new(10, 5, 2);
    while chain.state.meta().justified.height == 0 && chain.state.height() < 40 {
        chain.voting_heartbeat(Vec::new()).unwrap();
    }
    let justified = chain.state.meta().justified.height;
    assert!(justified > 0, "the votes justified a checkpoint");
    let mut store =
        ChainStore::open(&f._dir.path().join("voted.redb"), &chain.spec, StoreOptions::default()).unwrap();
    store.import_many(&chain.blocks, 8).unwrap();
    let state = ApiState { store: Arc::new(Mutex::new(store)), ..f.state.clone() };
    state.live.write().unwrap().finality_votes_pending = 3;
    let (_, v) = call(&state, "GET", "/status", None).await;
    assert_eq!(v["security"]["justified_height"], justified, "{v}");
    assert_eq!(v["security"]["finality_votes_pending"], 3);
    let (_, _, _, bytes) = raw(&state, "/metrics", [127, 0, 0, 8]).await;
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(&format!("doin_chain_justified_height {justified}\n")), "{text}");
    assert!(text.contains("doin_finality_votes_pending 3\n"));
}
