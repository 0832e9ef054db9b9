//! End-to-end: a devnet on `mlp_digits` finds a verified champion whose model the quorum
//! measured, and every node serves predictions from that model (the optimizer's node trained
//! it; the others fetched it by hash), each answer with a receipt the client checks.

mod common;

use std::{
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{doin, spawn_lines};
use serde_json::Value;

const BASE: u16 = 18960;

/// `POST /inference` with `body` on node port `port`: status and JSON body.
fn post(port: u16, body: &str) -> (u16, Value) {
    common::http_post(port, "/inference", body)
}

#[test]
fn every_node_serves_the_verified_champions_model_with_checked_receipts() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = sync_channel(4096);
    let mut cmd = doin();
    // Node 3 lies: it answers with altered outputs under honestly signed receipts.
    cmd.args(["devnet", "--nodes", "4", "--adversary", "3=wrong-answers", "--domain", "mlp_digits"])
        .args(["--duration", "300", "--base-port"])
        .arg(BASE.to_string())
        .arg("--dir")
        .arg(dir.path());
    let _devnet = spawn_lines(&mut cmd, 0, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some());
    // A champion whose model the quorum measured at `TRAINED` or better (`/domains` on node 0):
    // the first champions may be barely trained (0.476 and 0.877 seen), and the lying node's
    // swapped answers below must be told from a weak model's.
    const TRAINED: f64 = 0.9;
    let deadline = Instant::now() + Duration::from_secs(240);
    let trained_champion = || loop {
        let c = common::http_json(BASE, "/domains").map(|d| d["domains"][0]["champion"].clone());
        if let Some(c) = c.filter(|c| c["model_quality"].as_f64().is_some_and(|q| q >= TRAINED)) {
            break c;
        }
        assert!(Instant::now() < deadline, "no champion with a model measured at {TRAINED} within 240 s");
        std::thread::sleep(Duration::from_millis(500));
    };

    let nodes: Vec<String> = (0..4).map(|i| format!("127.0.0.1:{}", BASE + 2 * i)).collect();
    // The honest nodes, every answer re-executed on node 1: none is flagged. A better champion
    // recorded while `doin infer` ran is served from then on: then the nodes are asked again.
    let mut tries = 0;
    let (champion, answers) = loop {
        let champion = trained_champion();
        eprintln!("champion {champion}");
        let answers = doin_lines(&[
            "infer",
            "--held-out",
            "--domain",
            "mlp_digits",
            "--node",
            &nodes[..3].join(","),
            "--check-with",
            &nodes[1],
            "--check-fraction",
            "1",
        ]);
        tries += 1;
        if tries == 3 || answers.iter().all(|a| a["artifact"] == champion["artifact"]) {
            break (champion, answers);
        }
    };
    assert_eq!(answers.len(), 3, "{answers:?}");
    for a in &answers {
        eprintln!("{a}");
        // One model everywhere: the same optimae and artifact from every node.
        assert_eq!(a["optimae"], answers[0]["optimae"], "{answers:?}");
        assert_eq!(a["artifact"], answers[0]["artifact"], "{answers:?}");
        assert_eq!(a["artifact"], champion["artifact"], "the champion's model: {champion}");
        assert_eq!(a["receipts_checked"], 3, "359 rows in batches of 128, every receipt checked");
        assert_eq!(a["one_model"], true);
        // The answers are exactly as accurate as the quorum measured (to the chain's 1e-9).
        let (accuracy, quality) = (a["accuracy"].as_f64().unwrap(), a["model_quality"].as_f64().unwrap());
        assert!((accuracy - quality).abs() <= 5e-10, "accuracy {accuracy} vs quorum {quality}");
        assert!(accuracy >= TRAINED, "{accuracy}");
        assert_eq!(a["checked"]["answers"], 3, "{a}");
        assert_eq!(a["checked"]["wrong"], 0, "an honest server is never flagged: {a}");
    }

    // The lying node: every answer re-executed on node 0 differs from what it signed, and the
    // two receipts with the inputs are written as evidence.
    let evidence = dir.path().join("evidence.json");
    let out = doin()
        .args(["infer", "--held-out", "--domain", "mlp_digits", "--node", &nodes[3]])
        .args(["--check-with", &nodes[0], "--check-fraction", "1", "--evidence"])
        .arg(&evidence)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "wrong answers make `doin infer` fail:\n{stdout}");
    let liar: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(liar["checked"]["wrong"], 3, "{liar}");
    assert!(liar["accuracy"].as_f64().unwrap() < 0.2, "the top two classes swapped: {liar}");
    let evidence: Value = serde_json::from_slice(&std::fs::read(&evidence).unwrap()).unwrap();
    let first = &evidence["wrong"][0];
    let liar_key = common::http_json(BASE + 6, "/status").unwrap()["address"].clone();
    assert_eq!(first["receipt"]["server"], liar_key, "{first}");
    assert_eq!(first["receipt"]["artifact"], first["checker_receipt"]["artifact"]);
    assert_ne!(first["receipt"]["answers"], first["checker_receipt"]["answers"]);

    // The evidence goes on chain. Node 2's operator runs the model itself (downloaded from node
    // 0), finds node 3's receipt wrong and disputes its first wrong row; the quorum (nodes 0 and
    // 1: never the server or the disputer) re-executes it and node 3 is slashed.
    let disputer = dir.path().join("node2/node.key");
    let disputer = disputer.to_str().unwrap();
    let evidence_path = dir.path().join("evidence.json");
    let account = |addr: &str| common::http_json(BASE, &format!("/accounts/{addr}")).unwrap();
    let units = |v: &Value| v.as_str().unwrap().parse::<u128>().unwrap();
    let liar_addr = liar_key.as_str().unwrap().to_owned();
    let liar_stake = units(&account(&liar_addr)["stake"]);
    let sent = doin_json(&[
        "dispute",
        "send",
        "--evidence",
        evidence_path.to_str().unwrap(),
        "--key",
        disputer,
        "--node",
        &nodes[0],
    ]);
    assert_eq!(
        (sent["lied"].as_str(), sent["server"].as_str()),
        (Some("server"), Some(liar_addr.as_str())),
        "{sent}"
    );
    let upheld = settled(sent["dispute"].as_str().unwrap());
    eprintln!("dispute {upheld}");
    assert_eq!(upheld["outcome"]["outcome"], "upheld", "{upheld}");
    let slashed = units(&upheld["outcome"]["slashed"]);
    assert_eq!(slashed, liar_stake / 10, "10 % of the liar's stake");
    assert_eq!(units(&account(&liar_addr)["stake"]), liar_stake - slashed);
    let quorum: Vec<&str> =
        upheld["quorum"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(!quorum.contains(&liar_addr.as_str()), "the server is never in its own quorum");
    assert!(upheld["votes"].as_array().unwrap().iter().all(|v| v["wrong"] == true), "{upheld}");

    // An honest server is never slashed: a client that disputes node 1's right answer anyway
    // (`--row`, without running the model) loses its bond to node 1.
    let row = format!("[{}]", vec!["3"; 64].join(","));
    let (status, honest) = post(BASE + 2, &format!(r#"{{"domain_id": "mlp_digits", "inputs": [{row}]}}"#));
    assert_eq!(status, 200, "{honest}");
    let false_claim = dir.path().join("false.json");
    let entry = serde_json::json!({
        "receipt": honest["receipt"], "checker_receipt": honest["receipt"],
        "inputs": [serde_json::from_str::<Value>(&row).unwrap()],
        "outputs": honest["outputs"], "checker_outputs": honest["outputs"],
    });
    std::fs::write(&false_claim, serde_json::json!({ "wrong": [entry] }).to_string()).unwrap();
    let honest_addr = common::http_json(BASE + 2, "/status").unwrap()["address"].as_str().unwrap().to_owned();
    let (honest_stake, honest_balance) =
        (units(&account(&honest_addr)["stake"]), units(&account(&honest_addr)["balance"]));
    let out = doin()
        .args(["dispute", "send", "--evidence", false_claim.to_str().unwrap(), "--key", disputer])
        .args(["--node", &nodes[0]])
        .output()
        .unwrap();
    assert!(!out.status.success(), "run locally, the model agrees with the answer: nothing is disputed");
    let forced = doin_json(&[
        "dispute",
        "send",
        "--evidence",
        false_claim.to_str().unwrap(),
        "--key",
        disputer,
        "--node",
        &nodes[0],
        "--row",
        "0",
    ]);
    let refused = settled(forced["dispute"].as_str().unwrap());
    eprintln!("dispute {refused}");
    assert_eq!(refused["outcome"]["outcome"], "refused", "{refused}");
    assert_eq!(units(&account(&honest_addr)["stake"]), honest_stake, "the honest server keeps its stake");
    let listed = common::http_json(BASE, "/disputes").unwrap();
    let bond = (listed["params"]["dispute_bond"].as_f64().unwrap() * 1e9) as u128;
    // Both disputes were decided by a majority before their deadline: nobody is absent.
    assert_eq!(listed["absent"], serde_json::json!([]), "{listed}");
    assert!(
        units(&account(&honest_addr)["balance"]) >= honest_balance + bond,
        "the bond paid the honest server"
    );
    let metrics = common::http_text(BASE, "/metrics").unwrap();
    for line in
        ["doin_inference_disputes{outcome=\"upheld\"} 1", "doin_inference_disputes{outcome=\"refused\"} 1"]
    {
        assert!(metrics.contains(line), "{line} not in /metrics");
    }

    // Bad requests are refused by name, and nothing is served for them.
    let (status, body) = post(BASE, r#"{"domain_id": "mlp_digits", "inputs": [1, 2, 3]}"#);
    assert_eq!((status, body["error"].as_str()), (422, Some("bad_inputs")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("takes 64"), "{body}");
    let (status, body) = post(BASE, r#"{"domain_id": "mlp_digits", "inputs": "seven"}"#);
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_inputs")), "{body}");
    let rows = format!("[{}]", vec!["[0]"; 1025].join(","));
    let (status, body) = post(BASE, &format!(r#"{{"domain_id": "mlp_digits", "inputs": {rows}}}"#));
    assert_eq!((status, body["error"].as_str()), (413, Some("inputs_too_large")), "{body}");
    // One row answered, with its prediction.
    let row = format!("[{}]", vec!["0"; 64].join(","));
    let (status, body) = post(BASE + 2, &format!(r#"{{"domain_id": "mlp_digits", "inputs": {row}}}"#));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0].as_array().unwrap().len(), 10);
    assert!(body["predictions"][0].as_u64().unwrap() < 10);
}

/// Waits (at most 120 s) until dispute `id` on node 0 is settled; its JSON.
fn settled(id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(d) =
            common::http_json(BASE, &format!("/disputes/{id}")).filter(|d| !d["outcome"].is_null())
        {
            return d;
        }
        assert!(Instant::now() < deadline, "dispute {id} not settled within 120 s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `doin ARGS`, asserting success; its stdout lines as JSON.
fn doin_lines(args: &[&str]) -> Vec<Value> {
    let out = doin().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doin {args:?}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs `doin ARGS`, asserting success; its last stdout line as JSON.
fn doin_json(args: &[&str]) -> Value {
    doin_lines(args).pop().unwrap()
}

/// The payer pays for three answers, loses its record and resumes from the update the payee
/// holds for a fourth, then — while the payee is down — posts a close with its first, cheapest
/// update. The payee comes back within the challenge
/// window, finds its best update in its log (kept across the restart) and challenges: the
/// channel settles at that update (4 000 000, not 1 000 000), long before the payer's close
/// would have.
#[test]
fn a_payee_down_during_a_payers_stale_close_still_settles_at_its_best_update() {
    use doin_primitives::{Amount, ChannelUpdateBody, Signed, TxBody, TxKind};
    let _serial = common::serial();
    const P: u16 = 18980;
    let dir = tempfile::tempdir().unwrap();
    let (_, configs) = common::devnet_setup(
        dir.path(),
        3,
        2_000,
        &["--domain", "mlp_digits", "--inference-price", "0.001", "--base-port", &P.to_string()],
    );
    let (tx, rx) = sync_channel(8192);
    let node = |i: usize| {
        let mut cmd = doin();
        cmd.args(["node", "--config"])
            .arg(&configs[i])
            .arg("--stop-on-stdin-eof")
            .stdin(std::process::Stdio::piped());
        spawn_lines(&mut cmd, i, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some())
    };
    let mut nodes: Vec<Option<common::Killed>> = (0..3).map(|i| Some(node(i))).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !common::http_json(P, "/domains")
        .is_some_and(|d| d["domains"][0]["champion"]["model_quality"].is_number())
    {
        assert!(Instant::now() < deadline, "no champion with a measured model within 240 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The payer (node 2's account) opens a channel to node 0 and pays for three answers.
    let payee = common::http_json(P, "/api/channels").unwrap()["payee"].as_str().unwrap().to_owned();
    let key = dir.path().join("node2/node.key");
    let key = key.to_str().unwrap();
    let (n0, n2) = (format!("127.0.0.1:{P}"), format!("127.0.0.1:{}", P + 4));
    let opened =
        doin_json(&["channel", "open", "--node", &n2, "--key", key, "--payee", &payee, "--deposit", "1"]);
    let channel = opened["channel"].as_str().unwrap().to_owned();
    while common::http_json(P, &format!("/channels/{channel}")).is_none_or(|c| c["id"].is_null()) {
        assert!(Instant::now() < deadline + Duration::from_secs(60), "the channel never opened");
        std::thread::sleep(Duration::from_millis(500));
    }
    let paid = doin_json(&[
        "infer",
        "--held-out",
        "--domain",
        "mlp_digits",
        "--node",
        &n0,
        "--channel",
        &channel,
        "--key",
        key,
    ]);
    assert_eq!(paid["paid"]["spent"], "3000000", "{paid}");
    assert_eq!(paid["receipts_checked"], 3);
    let book = common::http_json(P, "/api/channels").unwrap();
    assert_eq!(book["channels"][0]["best_nonce"], 3, "{book}");
    assert_eq!(book["earned_open"], "3000000", "{book}");
    // The payer loses its record: its next update (nonce 1 again) is stale, the 402 names the
    // update held, and `doin infer` goes on from it — one more answer, paid once.
    std::fs::remove_file(format!("{key}.channels.json")).unwrap();
    let row = format!("[{}]", vec!["0"; 64].join(","));
    let again = doin_json(&[
        "infer",
        "--domain",
        "mlp_digits",
        "--node",
        &n0,
        "--inputs",
        &row,
        "--channel",
        &channel,
        "--key",
        key,
    ]);
    assert_eq!(again["paid"]["spent"], "1000000", "{again}");
    let book = common::http_json(P, "/api/channels").unwrap();
    assert_eq!(
        (&book["channels"][0]["best_nonce"], &book["earned_open"]),
        (&4.into(), &"4000000".into()),
        "{book}"
    );

    // The payee goes down; the payer closes with its first update.
    nodes[0] = None;
    let payer = doin_node::identity::load_or_create(std::path::Path::new(key)).unwrap().0;
    let update = Signed::sign(
        ChannelUpdateBody {
            channel: channel.parse().unwrap(),
            payer: payer.address(),
            nonce: 1,
            paid_total: Amount(1_000_000),
        },
        &payer,
    );
    let get = |path: &str| common::http_json(P + 2, path).unwrap();
    let account = get(&format!("/accounts/{}", payer.address()));
    let base: u128 = get("/fees")["base_fee"].as_str().unwrap().parse().unwrap();
    let body = TxBody {
        chain_id: get("/chain/status")["chain_id"].as_u64().unwrap(),
        sender: payer.address(),
        nonce: account["nonce"].as_u64().unwrap(),
        max_fee: Amount(base * 2 + 2),
        priority_fee: Amount(1),
        kind: TxKind::CloseChannel { final_update: update },
    };
    let close = serde_json::to_string(&Signed::sign(body, &payer)).unwrap();
    let (status, answer) = common::http_post(P + 2, "/tx", &close);
    assert_eq!(status, 202, "{answer}");
    let closing_deadline = loop {
        let c = get(&format!("/channels/{channel}"));
        if let Some(d) = c["closing"]["deadline"].as_u64() {
            break d;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(120), "the payer's close never landed: {c}");
        std::thread::sleep(Duration::from_millis(500));
    };
    // Back within the window: the payee challenges from its log, and the channel settles.
    nodes[0] = Some(node(0));
    let mut lines = Vec::new();
    let challenged = common::collect(&rx, &mut lines, Instant::now() + Duration::from_secs(90), |ls| {
        ls.iter().any(|(i, l, _)| *i == 0 && l.starts_with(&format!("channel challenge {channel}")))
    });
    assert!(challenged, "the restarted payee never challenged");
    let settled_at = loop {
        let height = get("/chain/status")["tip_index"].as_u64().unwrap();
        if common::http_json(P + 2, &format!("/channels/{channel}")).is_none_or(|c| c["id"].is_null()) {
            break height;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(240),
            "the challenge never settled the channel"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        settled_at < closing_deadline,
        "settled by the challenge ({settled_at}), not the window ({closing_deadline})"
    );
    let book = loop {
        let b = common::http_json(P, "/api/channels").unwrap();
        if b["settled"] == 1 {
            break b;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(book["earned_settled"], "4000000", "settled at the best update, not the payer's: {book}");
    drop(nodes);
}

/// A counter or gauge without labels from `/metrics`.
fn metric(port: u16, name: &str) -> f64 {
    let text = common::http_text(port, "/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// A domain that is not built in: every node runs the Python SDK's NumPy regressor plugin, whose
/// `train` returns the model, `measure` scores it on held-out rows and `infer` runs it. The
/// network's champion is such a model, measured by the quorum through the plugin; every node
/// serves it through the plugin's `infer`, synchronously, asynchronously (`GET
/// /inference/{task_id}`) and to many clients at once through the batching queue.
#[test]
fn a_plugin_domains_champion_is_a_model_every_node_serves_through_the_plugin() {
    if common::python_with(&["numpy"]).is_none() {
        return;
    }
    let _serial = common::serial();
    const P: u16 = 19100;
    let dir = tempfile::tempdir().unwrap();
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/python/examples/numpy_domain.py");
    let (tx, _rx) = sync_channel(4096);
    let mut cmd = doin();
    // Optimizers pause once the champion reaches the target, so the model stays put while the
    // test asks for answers.
    cmd.args(["devnet", "--nodes", "3", "--domain", "regressor", "--target", "-0.05"])
        .arg("--domain-plugin")
        .arg(format!("python3 {}", plugin.display()))
        .args(["--duration", "300", "--base-port", &P.to_string()])
        .arg("--dir")
        .arg(dir.path());
    let _devnet = spawn_lines(&mut cmd, 0, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some());
    // The champion at the target with a measured model, the same on all three nodes for 3 s
    // (claims in flight when the target was reached may still land; forks resolve).
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut since: Option<(Value, Instant)> = None;
    let champion = loop {
        let cs: Vec<Value> = (0..3)
            .filter_map(|i| common::http_json(P + 2 * i, "/domains"))
            .map(|d| d["domains"][0]["champion"].clone())
            .collect();
        let agreed = cs.len() == 3
            && cs.iter().all(|c| {
                c["model_quality"].is_number()
                    && c["performance"].as_f64().is_some_and(|p| p >= -0.05)
                    && c["artifact"] == cs[0]["artifact"]
            });
        since = match (agreed, since) {
            (false, _) => None,
            (true, Some((c, t))) if c["artifact"] == cs[0]["artifact"] => Some((c, t)),
            (true, _) => Some((cs[0].clone(), Instant::now())),
        };
        if let Some((c, t)) = &since
            && t.elapsed() >= Duration::from_secs(3)
        {
            break c.clone();
        }
        assert!(Instant::now() < deadline, "no settled plugin champion with a measured model within 240 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("champion {champion}");
    // The quorum's figure is the plugin's held-out −MSE of a model that learnt something (a
    // constant predictor scores about −0.6).
    let quality = champion["model_quality"].as_f64().unwrap();
    assert!(quality > -0.3 && quality < 0.0, "{champion}");

    // Every node answers through the plugin, from the same model, and a re-execution on node 1
    // agrees (within the plugin's declared tolerance).
    let nodes: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", P + 2 * i)).collect();
    let rows = "[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8],[0,0,0,0,0,0,0,0],[-0.5,0.5,-0.5,0.5,0,0,0,0]]";
    let answers = doin_lines(&[
        "infer",
        "--domain",
        "regressor",
        "--inputs",
        rows,
        "--node",
        &nodes.join(","),
        "--check-with",
        &nodes[1],
        "--check-fraction",
        "1",
    ]);
    assert_eq!(answers.len(), 3, "{answers:?}");
    for a in &answers {
        assert_eq!(a["artifact"], champion["artifact"], "{a}");
        assert_eq!(a["outputs"], answers[0]["outputs"], "one model, one answer: {a}");
        assert_eq!(a["outputs"].as_array().unwrap().len(), 3, "{a}");
        assert_eq!(a["checked"]["wrong"], 0, "{a}");
    }
    // The model learnt the task: y = sin(3 x0) + x1 x2 − 0.5 x3² is 0 at the origin.
    let at_origin = answers[0]["outputs"][1][0].as_f64().unwrap();
    assert!(at_origin.abs() < 0.3, "{at_origin}");

    // Asynchronously: 202 and a task id at once, the same answer at GET /inference/{task_id}.
    let one = r#""inputs": [[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]]"#;
    let (status, job) = post(P + 4, &format!(r#"{{"domain_id": "regressor", {one}, "async": true}}"#));
    assert_eq!(status, 202, "{job}");
    let task = job["task_id"].as_str().unwrap().to_owned();
    assert!(task.starts_with("job-") && task.len() == 36, "an unguessable id: {task}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let v = common::http_json(P + 4, &format!("/inference/{task}")).unwrap();
        if v["status"] != "pending" {
            break v;
        }
        assert!(Instant::now() < deadline, "the job stayed pending: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["status"], "done", "{done}");
    // The same answer up to the plugin's declared tolerance (NumPy's matrix product of one row
    // and of three may differ in the last bits).
    let (a, b) =
        (done["result"]["outputs"][0][0].as_f64().unwrap(), answers[0]["outputs"][0][0].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    assert!(done["result"]["receipt"]["signature"].is_string(), "{done}");
    let unknown = common::http_json(P + 4, "/inference/job-00000000000000000000000000000000").unwrap();
    assert_eq!(unknown["error"], "not_found", "{unknown}");

    // Refused by name: a row the model cannot take (the plugin's BadInput), an expiry out of range.
    let (status, v) = post(P, r#"{"domain_id": "regressor", "inputs": [[0.1, 0.2]]}"#);
    assert_eq!((status, v["error"].as_str()), (422, Some("bad_inputs")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("8 inputs"), "{v}");
    let (status, v) = post(P, &format!(r#"{{"domain_id": "regressor", {one}, "expires_in_ms": 0}}"#));
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")), "{v}");

    // Many clients at once: every request answered with its own rows' answer, counted by the
    // queue (requests that wait together share one pass through the plugin).
    let (batches, requests) = (metric(P, "doin_inference_batches"), metric(P, "doin_inference_requests"));
    let clients: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let x = f64::from(i) / 12.0 - 0.5;
                let row = format!("[{x},0,0,0,0,0,0,0]");
                let (status, v) =
                    post(P, &format!(r#"{{"domain_id": "regressor", "inputs": [{row},{row}]}}"#));
                assert_eq!(status, 200, "{v}");
                assert_eq!(v["outputs"][0], v["outputs"][1], "{v}");
                v["outputs"][0][0].as_f64().unwrap()
            })
        })
        .collect();
    let outs: Vec<f64> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(outs.windows(2).any(|w| w[0] != w[1]), "each client got its own rows' answer: {outs:?}");
    let (batches, requests) =
        (metric(P, "doin_inference_batches") - batches, metric(P, "doin_inference_requests") - requests);
    assert_eq!(requests, 12.0);
    assert!((1.0..=12.0).contains(&batches), "{batches} passes");
    eprintln!("12 concurrent requests answered in {batches} passes through the plugin");
}

/// `serve_inference` per domain has its effect: a node configured with `serve_inference: false`
/// for `mlp_digits` does not answer it itself — the request takes the operator's task-queue
/// path (`401` without the node's key) — while `co2_forecast`, served by default, is answered
/// by the node without a key (`200`, or `409 no_model` before its first champion) and listed
/// with its price; only the served domain's price shows in `/api/economics`.
#[test]
fn a_domain_not_served_takes_the_queued_path_and_a_served_one_is_answered() {
    let _serial = common::serial();
    const P: u16 = 19_460;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "port": P,
            "data_dir": dir.path().join("node"),
            "api_key": "operator-key-0123456789",
            "domains": [
                { "domain_id": "mlp_digits", "serve_inference": false },
                { "domain_id": "co2_forecast", "inference_price": 0.25 },
            ],
        })
        .to_string(),
    )
    .unwrap();
    let _node = common::Killed(
        doin()
            .args(["node", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::http_json(P, "/status").is_none() {
        assert!(Instant::now() < deadline, "the node's API did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let row = format!("[{}]", vec!["0.5"; 64].join(","));
    let (status, body) = post(P, &format!(r#"{{"domain_id": "mlp_digits", "inputs": [{row}]}}"#));
    assert_eq!(status, 401, "not served here: the queued path needs the operator's key: {body}");
    let (status, body) = common::http_request(
        P,
        "POST",
        "/inference",
        &format!(r#"{{"domain_id": "mlp_digits", "inputs": [{row}]}}"#),
        Some("operator-key-0123456789"),
    );
    assert!(
        status == 202 || (status == 409 && body["error"] == "no_champion"),
        "the operator's request is queued for a worker (or waits for a champion): {status} {body}"
    );
    let week = format!("[{}]", ["0.1"; 8].join(","));
    let (status, body) = post(P, &format!(r#"{{"domain_id": "co2_forecast", "inputs": [{week}]}}"#));
    assert!(
        [200, 402, 422].contains(&status) || (status == 409 && body["error"] == "no_model"),
        "served without a key: {status} {body}"
    );
    assert_ne!(status, 401, "{body}");
    let economics = common::http_json(P, "/api/economics").unwrap();
    let prices = &economics["inference"]["prices"];
    assert_eq!(prices["co2_forecast"], "250000000", "{economics}");
    assert!(prices.get("mlp_digits").is_none(), "a domain not served has no price: {prices}");
}
