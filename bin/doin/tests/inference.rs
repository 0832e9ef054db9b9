//! End-to-end: a devnet on `mlp_digits` finds a verified champion whose model the quorum
//! measured, and every node serves predictions from that model (the optimizer's node trained
//! it; the others fetched it by hash), each answer with a receipt the client checks.

mod common;

use std::{
    io::{Read, Write},
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{doin, spawn_lines};
use serde_json::Value;

const BASE: u16 = 18960;

/// `POST /inference` with `body` on node port `port`: status and JSON body.
fn post(port: u16, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        serde_json::from_str(out.split_once("\r\n\r\n").map_or("", |x| x.1).trim()).unwrap_or(Value::Null),
    )
}

#[test]
fn every_node_serves_the_verified_champions_model_with_checked_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = sync_channel(4096);
    let mut cmd = doin();
    cmd.args(["devnet", "--nodes", "3", "--domain", "mlp_digits", "--duration", "300", "--base-port"])
        .arg(BASE.to_string())
        .arg("--dir")
        .arg(dir.path());
    let _devnet = spawn_lines(&mut cmd, 0, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some());
    // The first champion, with the quorum's measurement of its model (`/domains` on node 0).
    let deadline = Instant::now() + Duration::from_secs(240);
    let champion = loop {
        let c = common::http_json(BASE, "/domains").map(|d| d["domains"][0]["champion"].clone());
        if let Some(c) = c.filter(|c| c["model_quality"].is_number()) {
            break c;
        }
        assert!(Instant::now() < deadline, "no champion with a measured model within 240 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("champion {champion}");

    let nodes: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", BASE + 2 * i)).collect();
    let out = doin()
        .args(["infer", "--held-out", "--domain", "mlp_digits", "--node", &nodes.join(",")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doin infer failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    for a in &answers {
        eprintln!("{a}");
        // One model everywhere: the same optimae and artifact from every node.
        assert_eq!(a["optimae"], answers[0]["optimae"], "{stdout}");
        assert_eq!(a["artifact"], answers[0]["artifact"], "{stdout}");
        assert_eq!(a["artifact"], champion["artifact"], "the champion's model: {champion}");
        assert_eq!(a["receipts_checked"], 3, "359 rows in batches of 128, every receipt checked");
        assert_eq!(a["one_model"], true);
        // The answers are exactly as accurate as the quorum measured (to the chain's 1e-9).
        let (accuracy, quality) = (a["accuracy"].as_f64().unwrap(), a["model_quality"].as_f64().unwrap());
        assert!((accuracy - quality).abs() <= 5e-10, "accuracy {accuracy} vs quorum {quality}");
        assert!(accuracy > 0.9, "{accuracy}");
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
