//! The `doin` binary as a user runs it.

use std::process::Command;

#[test]
fn bench_ledger_prints_one_json_line_with_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "ledger", "--blocks", "2", "--txs-per-block", "40", "--accounts", "30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bench"], "ledger");
    assert_eq!(v["blocks"], 2);
    assert_eq!(v["txs"], 80);
    assert!(v["tx_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["verify_batch_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["state_root"].as_str().unwrap().len(), 64);
}

#[test]
fn bad_bench_arguments_are_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_doin"))
        .args(["bench", "ledger", "--accounts", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accounts at least 2"));
}
