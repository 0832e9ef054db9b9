//! End-to-end: the resource marketplace. Node 0 is the market; nodes 1 – 3 offer themselves.
//! Node 1 gives the market one thread, node 2 two; node 3 answers challenges without doing the
//! work (and asks the lowest price). The market measures each with its own challenges, fails the
//! liar, and matches jobs by the measured figures: a job needing more cores than the smaller
//! machine measured lands on the larger one, a job whose fee excludes the dearer provider lands
//! on the cheaper honest one, the liar is never matched; `doin task submit` runs the job on the
//! matched provider and checks its receipt.

mod common;

use std::{
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{doin, spawn_lines};
use serde_json::Value;

const BASE: u16 = 19020;

fn doin_out(args: &[&str]) -> (bool, String) {
    let out = doin().args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// `doin market offer` of node `i` of the devnet in `dir` (its key, its API) to `market`.
fn offer_node(
    dir: &std::path::Path,
    market: &str,
    base: u16,
    i: u16,
    price: &str,
    domain: &str,
) -> (bool, String) {
    let key = dir.join(format!("node{i}/node.key"));
    let api = format!("127.0.0.1:{}", base + 2 * i);
    doin_out(&[
        "market",
        "offer",
        "--node",
        market,
        "--key",
        key.to_str().unwrap(),
        "--api",
        &api,
        "--price",
        price,
        "--domains",
        domain,
    ])
}

fn submit(args: &[&str]) -> Value {
    let (ok, out) = doin_out(args);
    assert!(ok, "doin {args:?}:\n{out}");
    serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap()
}

#[test]
fn jobs_land_where_the_measured_score_says_and_a_lying_provider_is_never_matched() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = sync_channel(4096);
    let mut cmd = doin();
    cmd.args(["devnet", "--nodes", "4", "--domain", "mlp_digits", "--target", "0.5"])
        .args(["--adversary", "3=fake-capability", "--market-threads", "1=1", "--market-threads", "2=2"])
        .args(["--market-check-mem-mb", "24"])
        .args(["--duration", "240", "--base-port"])
        .arg(BASE.to_string())
        .arg("--dir")
        .arg(dir.path());
    let _devnet = spawn_lines(&mut cmd, 0, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some());
    let deadline = Instant::now() + Duration::from_secs(180);
    while common::http_json(BASE, "/domains")
        .is_none_or(|d| !d["domains"][0]["champion"]["model_quality"].is_number())
    {
        assert!(Instant::now() < deadline, "no champion with a model within 180 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    let market = format!("127.0.0.1:{BASE}");
    let addr =
        |i: u16| common::http_json(BASE + 2 * i, "/status").unwrap()["address"].as_str().unwrap().to_owned();
    let (one, two, liar) = (addr(1), addr(2), addr(3));
    // A stranger's offer (unsigned by the provider it names) and an unstaked key are refused.
    let stranger = dir.path().join("stranger.key");
    assert!(doin().args(["keygen", "--out"]).arg(&stranger).output().unwrap().status.success());
    let (ok, out) = doin_out(&[
        "market",
        "offer",
        "--node",
        &market,
        "--key",
        stranger.to_str().unwrap(),
        "--api",
        "127.0.0.1:9",
        "--domains",
        "mlp_digits",
    ]);
    assert!(!ok && out.contains("not_staked"), "{out}");
    for (i, price) in [(1u16, "0.002"), (2, "0.001"), (3, "0.0001")] {
        let (ok, out) = offer_node(dir.path(), &market, BASE, i, price, "mlp_digits");
        assert!(ok, "{out}");
    }
    // Every offer checked: the two honest providers measured, the liar failed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let v = common::http_json(BASE, "/api/market").unwrap();
        if v["offers"].as_array().unwrap().iter().all(|o| o["status"] != "unchecked") {
            break v;
        }
        assert!(Instant::now() < deadline, "offers not checked within 60 s: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("market {view}");
    let offer =
        |a: &str| view["offers"].as_array().unwrap().iter().find(|o| o["provider"] == a).unwrap().clone();
    let (o1, o2, o3) = (offer(&one), offer(&two), offer(&liar));
    assert_eq!((o1["status"].as_str(), o2["status"].as_str()), (Some("passed"), Some("passed")), "{view}");
    assert_eq!(o3["status"], "failed", "{o3}");
    assert!(o3["failure"].as_str().unwrap().contains("the work was not done"), "{o3}");
    assert!(o3["measured"].is_null());
    let cores = |o: &Value| o["measured"]["cores"].as_f64().unwrap();
    let (c1, c2) = (cores(&o1), cores(&o2));
    assert!(c1 > 0.2 && c2 > 0.2, "{c1} {c2}");
    // The memory each check proves is the checking node's `market_check_mem_mb`.
    assert_eq!((o1["measured"]["mem_mb"].as_u64(), o2["measured"]["mem_mb"].as_u64()), (Some(24), Some(24)));
    assert_eq!(view["check_mem_mb"], 24, "{view}");
    // `--market-threads N=T` reaches node N's config (it was dropped when the devnet wrote
    // the configs: every node used all cores).
    for (i, threads) in [(1u16, 1), (2, 2)] {
        let own = common::http_json(BASE + 2 * i, "/api/market").unwrap();
        assert_eq!(own["market_threads"], threads, "node {i}: {own}");
    }
    assert_eq!(o1["cached_models"].as_array().unwrap().len(), 1, "it serves the champion's model: {o1}");
    let metrics = common::http_text(BASE, "/metrics").unwrap();
    for line in ["doin_market_offers{status=\"passed\"} 2", "doin_market_offers{status=\"failed\"} 1"] {
        assert!(metrics.contains(line), "{line} not in /metrics");
    }
    let metrics = common::http_text(BASE, "/metrics").unwrap();
    for line in ["doin_market_offers{status=\"passed\"} 2", "doin_market_offers{status=\"failed\"} 1"] {
        assert!(metrics.contains(line), "{line} not in /metrics");
    }

    // A job needing more cores than the smaller machine measured lands on the larger one.
    let (big, small, more) =
        if c2 > c1 { (&two, &one, (c1 + c2) / 2.0) } else { (&one, &two, (c1 + c2) / 2.0) };
    let row = format!("[{}]", vec!["3"; 64].join(","));
    let more = format!("{more:.4}");
    let m = submit(&[
        "task",
        "submit",
        "--node",
        &market,
        "--domain",
        "mlp_digits",
        "--inputs",
        &row,
        "--fee",
        "0.01",
        "--min-cores",
        &more,
        "--match-only",
    ]);
    assert_eq!(m["provider"].as_str(), Some(big.as_str()), "{m}");
    let refused: Vec<&Value> = m["refused"].as_array().unwrap().iter().collect();
    assert!(
        refused
            .iter()
            .any(|r| r["provider"] == small.as_str() && r["why"].as_str().unwrap().contains("cores")),
        "{m}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["provider"] == liar.as_str() && r["why"].as_str().unwrap().contains("failed")),
        "{m}"
    );
    // A fee below node 1's price: node 2 (the liar asks less, but failed its challenge).
    let m = submit(&[
        "task",
        "submit",
        "--node",
        &market,
        "--domain",
        "mlp_digits",
        "--inputs",
        &row,
        "--fee",
        "0.0015",
        "--match-only",
    ]);
    assert_eq!(m["provider"].as_str(), Some(two.as_str()), "{m}");
    assert_eq!(m["candidates"].as_array().unwrap().len(), 1, "only node 2 is eligible: {m}");
    // Nothing fits: the refusal names each provider's reason.
    let (ok, out) = doin_out(&[
        "task",
        "submit",
        "--node",
        &market,
        "--domain",
        "mlp_digits",
        "--inputs",
        &row,
        "--fee",
        "0.01",
        "--min-cores",
        "64",
    ]);
    assert!(!ok && out.contains("no_provider") && out.contains("the job needs 64.00"), "{out}");
    let (ok, out) = doin_out(&[
        "task",
        "submit",
        "--node",
        &market,
        "--kind",
        "evaluation",
        "--domain",
        "mlp_digits",
        "--inputs",
        &row,
        "--fee",
        "0.01",
    ]);
    assert!(!ok && out.contains("unsupported_kind"), "{out}");
    // The job runs on the matched provider; its receipt is checked and names it.
    let ran = submit(&[
        "task",
        "submit",
        "--node",
        &market,
        "--domain",
        "mlp_digits",
        "--inputs",
        &row,
        "--fee",
        "0.0015",
    ]);
    assert_eq!(ran["provider"].as_str(), Some(two.as_str()), "{ran}");
    assert_eq!(ran["receipt_checked"], true);
    assert!(ran["predictions"][0].as_u64().unwrap() < 10, "{ran}");
    let task = common::http_json(BASE, &format!("/api/market/task/{}", ran["task"])).unwrap();
    assert_eq!(task["provider"].as_str(), Some(two.as_str()), "{task}");
    // Its load counts: node 2 has had jobs matched.
    let v = common::http_json(BASE, "/api/market").unwrap();
    let o2 = v["offers"].as_array().unwrap().iter().find(|o| o["provider"] == two.as_str()).unwrap().clone();
    assert!(o2["recent_jobs"].as_u64().unwrap() >= 2, "{o2}");

    // Offers refused by name: a forged signature (the price changed after signing), a stale
    // one, an older one than the market holds, an API that is not host:port.
    use doin_primitives::{Amount, BoundedString, BoundedVec, DomainId, Signed, market::MarketOfferBody};
    let key1 = doin_node::identity::load_or_create(&dir.path().join("node1/node.key")).unwrap().0;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let offer = |api: &str, issued_ms: u64| {
        let body = MarketOfferBody {
            provider: key1.address(),
            api: BoundedString::new(api).unwrap(),
            price: Amount(2_000_000),
            domains: BoundedVec::try_from_vec(vec![DomainId::new("mlp_digits").unwrap()]).unwrap(),
            issued_ms,
        };
        serde_json::to_value(Signed::sign(body, &key1)).unwrap()
    };
    let send = |v: &Value| common::http_post(BASE, "/api/market/offer", &v.to_string());
    let api1 = format!("127.0.0.1:{}", BASE + 2);
    let mut forged = offer(&api1, now_ms);
    forged["price"] = serde_json::json!("1");
    let (status, v) = send(&forged);
    assert_eq!((status, v["error"].as_str()), (403, Some("bad_signature")), "{v}");
    let (status, v) = send(&offer(&api1, now_ms - 11 * 60 * 1000));
    assert_eq!((status, v["error"].as_str()), (400, Some("stale_offer")), "{v}");
    let held = common::http_json(BASE, "/api/market").unwrap()["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["provider"] == one.as_str())
        .unwrap()
        .clone();
    assert_eq!(held["status"], "passed");
    let (status, v) = send(&offer(&api1, now_ms - 9 * 60 * 1000));
    assert_eq!((status, v["error"].as_str()), (409, Some("stale_offer")), "an older offer than held: {v}");
    let (status, v) = send(&offer("http://127.0.0.1", now_ms + 1));
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_offer")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("host:port"), "{v}");
    let after = common::http_json(BASE, "/api/market").unwrap();
    let o1 =
        after["offers"].as_array().unwrap().iter().find(|o| o["provider"] == one.as_str()).unwrap().clone();
    assert_eq!(
        (o1["status"].as_str(), &o1["api"]),
        (Some("passed"), &held["api"]),
        "the refusals left it as it was"
    );

    // A provider answers at most 6 challenges a minute, whoever asks: a stranger cannot keep
    // its market threads busy (the market's own checks count too).
    let tiny = r#"{"seed": "0101010101010101010101010101010101010101010101010101010101010101", "units": 1, "iterations": 1, "mem_mb": 0}"#;
    let statuses: Vec<(u16, Value)> =
        (0..7).map(|_| common::http_post(BASE + 2, "/api/market/challenge", tiny)).collect();
    let limited: Vec<&(u16, Value)> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{statuses:?}");
    assert!(limited.iter().all(|(_, v)| v["error"] == "challenge_rate"), "{statuses:?}");
    assert!(statuses.iter().all(|(s, _)| *s == 200 || *s == 429), "{statuses:?}");
    let answered = statuses.iter().find(|(s, _)| *s == 200);
    if let Some((_, v)) = answered {
        assert_eq!(v["provider"], one.as_str(), "answered and signed by the provider: {v}");
    }
}

/// `POST path` with a JSON `body` and an `x-doin-payment` header: the status and JSON body.
fn post_paid(port: u16, path: &str, body: &str, payment: &str) -> (u16, Value) {
    common::http_request_with(port, "POST", path, body, &[("x-doin-payment", payment)])
}

/// `doin task submit --kind optimize` of `evaluations` of `quadratic` at the market, with `fee`
/// and `extra` arguments.
fn optimize_task<'a>(market: &'a str, evaluations: &'a str, fee: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "task",
        "submit",
        "--node",
        market,
        "--kind",
        "optimize",
        "--domain",
        "quadratic",
        "--evaluations",
        evaluations,
        "--fee",
        fee,
    ];
    args.extend_from_slice(extra);
    args
}

/// Optimization on hire end to end: nodes 1 and 2 optimize `quadratic` only for those who hire
/// them (1 000 and 2 000 base units an evaluation). Their loops wait until a hire buys
/// evaluations; the market probes their prices at its checks and matches an `optimize` task by
/// the price its evaluations cost against the fee (and by measured cores); `doin task submit
/// --kind optimize` pays the matched provider through a channel, and the provider runs exactly
/// the evaluations bought. Unpaid, underpaid, replayed, malformed and misdirected hires are
/// refused by name, and nothing is charged twice.
#[test]
fn a_hired_optimizer_runs_the_evaluations_bought_and_is_matched_by_their_price() {
    const BASE: u16 = 19060;
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = sync_channel(4096);
    let mut cmd = doin();
    cmd.args(["devnet", "--nodes", "4", "--domain", "quadratic"])
        .args(["--on-hire", "1=0.000001", "--on-hire", "2=0.000002"])
        .args(["--market-threads", "1=1", "--market-threads", "2=2", "--market-check-mem-mb", "16"])
        .args(["--duration", "240", "--base-port"])
        .arg(BASE.to_string())
        .arg("--dir")
        .arg(dir.path());
    let _devnet = spawn_lines(&mut cmd, 0, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some());
    let api = |i: u16| format!("127.0.0.1:{}", BASE + 2 * i);
    let domain_status =
        |i: u16| common::http_json(BASE + 2 * i, "/status").map(|s| s["domains"]["quadratic"].clone());
    // Nodes 1 and 2 wait for a hire: nothing bought, nothing evaluated by their search.
    let deadline = Instant::now() + Duration::from_secs(90);
    while ![1, 2].iter().all(|i| domain_status(*i).is_some_and(|d| d["running"] == "waiting for a hire")) {
        assert!(Instant::now() < deadline, "nodes 1 and 2 never waited for a hire: {:?}", domain_status(1));
        std::thread::sleep(Duration::from_millis(300));
    }
    let on_hire = common::http_json(BASE + 2, "/api/market/hire").unwrap();
    assert_eq!(on_hire["domains"][0]["domain_id"], "quadratic", "{on_hire}");
    assert_eq!(on_hire["domains"][0]["price_per_evaluation"], "1000", "{on_hire}");
    assert_eq!(
        (&on_hire["domains"][0]["bought"], &on_hire["domains"][0]["evaluated"]),
        (&0.into(), &0.into())
    );
    let none = common::http_json(BASE + 6, "/api/market/hire").unwrap();
    assert_eq!(none["domains"], serde_json::json!([]), "node 3 optimizes as usual: {none}");

    // Misdirected and malformed hires, each refused by name; nothing bought.
    let (status, v) =
        common::http_post(BASE + 6, "/api/market/hire", r#"{"domain_id": "quadratic", "evaluations": 5}"#);
    assert_eq!((status, v["error"].as_str()), (404, Some("not_on_hire")), "{v}");
    let (status, v) =
        common::http_post(BASE + 2, "/api/market/hire", r#"{"domain_id": "quadratic", "evaluations": 0}"#);
    assert_eq!((status, v["error"].as_str()), (422, Some("bad_evaluations")), "{v}");
    let (status, v) = common::http_post(
        BASE + 2,
        "/api/market/hire",
        r#"{"domain_id": "quadratic", "evaluations": 5, "x": 1}"#,
    );
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_hire")), "{v}");
    let (status, v) =
        common::http_post(BASE + 2, "/api/market/hire", r#"{"domain_id": "quadratic", "evaluations": 5}"#);
    assert_eq!((status, v["error"].as_str()), (402, Some("payment_required")), "{v}");
    let (status, v) =
        post_paid(BASE + 2, "/api/market/hire", r#"{"domain_id": "quadratic", "evaluations": 5}"#, "zz");
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_payment")), "{v}");

    // The market (node 0) measures both and probes their prices.
    let market = api(0);
    for i in [1u16, 2] {
        let (ok, out) = offer_node(dir.path(), &market, BASE, i, "0.001", "quadratic");
        assert!(ok, "{out}");
        let out: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        assert_eq!(out["status"], "checking", "{out}");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let view = loop {
        let v = common::http_json(BASE, "/api/market").unwrap();
        if v["offers"].as_array().unwrap().iter().all(|o| o["status"] == "passed") {
            break v;
        }
        assert!(Instant::now() < deadline, "offers not passed within 90 s: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let addr =
        |i: u16| common::http_json(BASE + 2 * i, "/status").unwrap()["address"].as_str().unwrap().to_owned();
    let (one, two) = (addr(1), addr(2));
    let offer =
        |a: &str| view["offers"].as_array().unwrap().iter().find(|o| o["provider"] == a).unwrap().clone();
    let (o1, o2) = (offer(&one), offer(&two));
    assert_eq!(
        (&o1["on_hire"]["quadratic"], &o2["on_hire"]["quadratic"]),
        (&"1000".into(), &"2000".into()),
        "{view}"
    );

    // By cores: a task needing more than the smaller machine lands on the larger one.
    let cores = |o: &Value| o["measured"]["cores"].as_f64().unwrap();
    let (c1, c2) = (cores(&o1), cores(&o2));
    let big = if c2 > c1 { &two } else { &one };
    let between = format!("{:.4}", (c1 + c2) / 2.0);
    let m = submit(&optimize_task(&market, "50", "1", &["--min-cores", &between, "--match-only"]));
    assert_eq!(m["provider"].as_str(), Some(big.as_str()), "{m}");
    // By price: 100 evaluations cost 100 000 at node 1 and 200 000 at node 2; a fee of 150 000
    // excludes node 2, by name.
    let m = submit(&optimize_task(&market, "100", "0.00015", &["--match-only"]));
    assert_eq!(m["provider"].as_str(), Some(one.as_str()), "{m}");
    assert_eq!(m["price"], "100000", "{m}");
    assert!(m["refused"].to_string().contains(&two), "node 2 refused for its price: {m}");
    // An optimize task without evaluations, and a kind the market does not match.
    let (status, v) = common::http_post(
        BASE,
        "/api/market/task",
        r#"{"kind": "optimize", "domain_id": "quadratic", "fee": 1}"#,
    );
    assert_eq!((status, v["error"].as_str()), (422, Some("bad_evaluations")), "{v}");
    let (status, v) = common::http_post(
        BASE,
        "/api/market/task",
        r#"{"kind": "evaluate", "domain_id": "quadratic", "fee": 1}"#,
    );
    assert_eq!((status, v["error"].as_str()), (422, Some("unsupported_kind")), "{v}");

    // Paid through a channel from node 3's key to node 1.
    let payer = dir.path().join("node3/node.key");
    let payer = payer.to_str().unwrap();
    let unpaid = doin_out(&optimize_task(&market, "100", "0.00015", &[]));
    assert!(!unpaid.0 && unpaid.1.contains("--channel"), "a priced hire without a channel: {}", unpaid.1);
    let opened =
        submit(&["channel", "open", "--node", &api(3), "--key", payer, "--payee", &one, "--deposit", "1"]);
    let channel = opened["channel"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::http_json(BASE + 2, &format!("/channels/{channel}")).is_none_or(|c| c["id"].is_null()) {
        assert!(Instant::now() < deadline, "the channel never opened");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ran = submit(&optimize_task(&market, "100", "0.00015", &["--channel", &channel, "--key", payer]));
    assert_eq!(ran["provider"].as_str(), Some(one.as_str()), "{ran}");
    let hire = &ran["hire"];
    assert_eq!((&hire["evaluations"], &hire["charged"]), (&100.into(), &"100000".into()), "{ran}");
    assert_eq!(hire["paid"]["paid_total"], "100000", "{ran}");
    assert_eq!(hire["task_id"], ran["task"], "{ran}");
    // It runs exactly the evaluations bought, then waits again.
    let id = hire["hire_id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let h = submit(&["task", "hire", &id.to_string(), "--node", &api(1)]);
        if h["state"] == "done" {
            break h;
        }
        assert!(Instant::now() < deadline, "the hire did not finish within 60 s: {h}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(done["evaluated"], 100, "{done}");
    std::thread::sleep(Duration::from_secs(2));
    let after = common::http_json(BASE + 2, "/api/market/hire").unwrap();
    let d = &after["domains"][0];
    assert_eq!(
        (&d["bought"], &d["evaluated"], &d["waiting"]),
        (&100.into(), &100.into(), &true.into()),
        "{after}"
    );
    assert_eq!(domain_status(1).unwrap()["running"], "waiting for a hire");

    // Payments refused by name, nothing taken twice: the update the CLI sent, replayed; one
    // that adds less than 5 evaluations cost; then one that pays them.
    let body = r#"{"domain_id": "quadratic", "evaluations": 5}"#;
    let pay =
        |amount: &str| submit(&["channel", "pay", "--key", payer, "--channel", &channel, "--amount", amount]);
    let replay = {
        // The CLI's own record holds the update it sent (nonce 1): sign it again.
        let p = pay("0.0000001");
        assert_eq!(p["nonce"], 2, "{p}");
        p
    };
    let (status, v) = post_paid(BASE + 2, "/api/market/hire", body, replay["header"].as_str().unwrap());
    assert_eq!((status, v["error"].as_str()), (402, Some("underpaid")), "100 base units for 5 000: {v}");
    let good = pay("0.000005");
    let (status, v) = post_paid(BASE + 2, "/api/market/hire", body, good["header"].as_str().unwrap());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["charged"], "5000", "{v}");
    let (status, v) = post_paid(BASE + 2, "/api/market/hire", body, good["header"].as_str().unwrap());
    assert_eq!((status, v["error"].as_str()), (402, Some("stale_payment")), "a replay: {v}");
    let book = common::http_json(BASE + 2, "/api/channels").unwrap();
    assert!(book.to_string().contains("105100"), "node 1 holds the highest update (105 100): {book}");
    let metrics = common::http_text(BASE + 2, "/metrics").unwrap();
    assert!(metrics.contains("doin_hire_evaluations_bought 105"), "{metrics}");
}
