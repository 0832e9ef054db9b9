//! Relay test in network namespaces the test creates itself: hosts A and C sit on two
//! separate networks that only host R joins; R runs as a relay, A listens through it, C dials A
//! through it; A and C connect and C follows A's chain. Needs root for `ip netns`; elsewhere it
//! prints why it skipped.

mod common;

use std::{
    process::Command,
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{Killed, ip, spawn_lines};
use doin_consensus::testkit::TestNet;

struct Lab(String);

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.0)
    }
    fn build() -> Result<Self, String> {
        let lab = Self(format!("doinr{}", std::process::id() % 100_000));
        for n in ["a", "r", "c"] {
            ip(&["netns", "add", &lab.ns(n)])?;
            ip(&["-n", &lab.ns(n), "link", "set", "lo", "up"])?;
        }
        for (side, net) in [("a", 1), ("c", 2)] {
            let (outer, inner) = (format!("r{net}"), format!("x{net}"));
            ip(&["-n", &lab.ns("r"), "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            ip(&["-n", &lab.ns("r"), "link", "set", &inner, "netns", &lab.ns(side)])?;
            ip(&["-n", &lab.ns("r"), "addr", "add", &format!("10.78.{net}.1/24"), "dev", &outer])?;
            ip(&["-n", &lab.ns("r"), "link", "set", &outer, "up"])?;
            ip(&["-n", &lab.ns(side), "addr", "add", &format!("10.78.{net}.2/24"), "dev", &inner])?;
            ip(&["-n", &lab.ns(side), "link", "set", &inner, "up"])?;
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in ["a", "r", "c"] {
            let _ = ip(&["netns", "del", &self.ns(n)]);
        }
    }
}

#[test]
fn hosts_without_a_route_connect_through_a_relay() {
    let lab = match Lab::build() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipping the relay test: cannot create network namespaces ({e})");
            return;
        }
    };
    // A and C really cannot reach each other.
    let ping =
        Command::new("ip").args(["netns", "exec", &lab.ns("c"), "ping", "-c1", "-W1", "10.78.1.2"]).output();
    if let Ok(out) = ping {
        assert!(!out.status.success(), "C must not be able to reach A directly");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TestNet::new(3, 0, 0).spec;
    spec.params.max_block_interval_ms = 20;
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (tx, rx) = sync_channel(65_536);
    let mut children = Vec::new();
    let spawn = |name: char, extra: Vec<String>, children: &mut Vec<Killed>| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &lab.ns(&name.to_string()),
            env!("CARGO_BIN_EXE_doin"),
            "net-peer",
            "--data-dir",
        ])
        .arg(dir.path().join(name.to_string()))
        .arg("--genesis")
        .arg(&genesis)
        .args(["--until-height", "15", "--timeout-s", "60"])
        .args(extra);
        children.push(spawn_lines(&mut cmd, name, &tx, std::env::var_os("DOIN_DEBUG_RELAY").is_some()));
    };
    let wait_for = |who: char, prefix: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (w, line, _) =
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("peer output");
            if std::env::var_os("DOIN_DEBUG_RELAY").is_some() {
                eprintln!("[{w}] {line}");
            }
            if w == who
                && let Some(rest) = line.strip_prefix(prefix)
            {
                return rest.to_owned();
            }
        }
    };
    spawn(
        'r',
        vec![
            "--relay-server".into(),
            "--listen".into(),
            "/ip4/10.78.1.1/tcp/4200".into(),
            "--listen".into(),
            "/ip4/10.78.2.1/tcp/4200".into(),
        ],
        &mut children,
    );
    let r_id = wait_for('r', "listening ").rsplit('/').next().unwrap().to_owned();
    let circuit_a = format!("/ip4/10.78.1.1/tcp/4200/p2p/{r_id}/p2p-circuit");
    spawn(
        'a',
        vec![
            "--produce".into(),
            "0".into(),
            "--interval-ms".into(),
            "100".into(),
            "--listen".into(),
            "/ip4/10.78.1.2/tcp/4200".into(),
            "--listen".into(),
            circuit_a,
        ],
        &mut children,
    );
    let a_id = wait_for('a', "listening ").rsplit('/').next().unwrap().to_owned();
    let via_relay = format!("/ip4/10.78.2.1/tcp/4200/p2p/{r_id}/p2p-circuit/p2p/{a_id}");
    spawn(
        'c',
        vec!["--listen".into(), "/ip4/10.78.2.2/tcp/4200".into(), "--peer".into(), via_relay],
        &mut children,
    );
    let c_id = wait_for('c', "listening ").rsplit('/').next().unwrap().to_owned();
    // C connects to A (through R) and A sees C.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut c_sees_a, mut a_sees_c, mut c_done) = (false, false, false);
    while !(c_sees_a && a_sees_c && c_done) {
        let (who, line, _) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("relay connection and sync");
        if std::env::var_os("DOIN_DEBUG_RELAY").is_some() {
            eprintln!("[{who}] {line}");
        }
        match (who, line.split_once(' ')) {
            ('c', Some(("connected", p))) if p == a_id => c_sees_a = true,
            ('a', Some(("connected", p))) if p == c_id => a_sees_c = true,
            ('c', Some(("done", _))) => c_done = true,
            _ => {}
        }
    }
}
