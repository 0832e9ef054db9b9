//! Every endpoint without a socket (tower `oneshot`): shapes, status codes, bad input.

use std::sync::{Arc, Mutex, RwLock};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use doin_api::{
    ApiState, DomainStatus, LiveStatus, Submission, router,
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

/// A stored chain of 12 blocks (work blocks with certificates and heartbeats with transfers) and
/// a stand-in for the node's submission handler that admits transactions with a valid signature.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = TestNet::new(10, 5, 2);
    for i in 0..12 {
        if i % 3 == 0 {
            chain
                .work_block(9, vec![chain.improving_certificate(5 + i % 2, 80.0 / (1.0 + i as f64))])
                .unwrap();
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
    };
    Fixture { _dir: dir, chain, state, done }
}

async fn call(state: &ApiState, method: &str, uri: &str, body: Option<String>) -> (StatusCode, Value) {
    call_with_key(state, method, uri, body, None).await
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
    let (s, v) = call(&f.state, "GET", "/health", None).await;
    assert_eq!((s, v["status"].as_str(), v["port"].as_u64()), (StatusCode::OK, Some("healthy"), Some(8470)));

    let (s, v) = call(&f.state, "GET", "/chain/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["chain_height"], 13, "a block count: genesis + 12");
    assert_eq!(v["tip_index"], 12);
    assert_eq!(v["tip_hash"], f.chain.blocks[11].hash().to_string());

    let (s, v) = call(&f.state, "GET", "/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["chain_height"], 13);
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
    let (s, v) = call(&f.state, "GET", "/chain/blocks?from=0&to=12", None).await;
    assert_eq!(s, StatusCode::OK);
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 13);
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
    assert_eq!(v["blocks"].as_array().unwrap().len(), 13);
    let (_, v) = call(&f.state, "GET", "/chain/blocks?from=20&to=30", None).await;
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
    assert_eq!((task.commit.as_str(), completion.performance), ("c1", -1.5));
    let (s, _) =
        call_with_key(&f.state, "POST", "/tasks/complete", Some(done(&lease, "-1.5")), Some("sesame")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a task completes once");

    // A node without an api_key hands out nothing.
    let mut open = f.state.clone();
    open.api_key = None;
    let (s, v) = call_with_key(&open, "POST", "/tasks/claim", None, Some("sesame")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("no_api_key")));
}
