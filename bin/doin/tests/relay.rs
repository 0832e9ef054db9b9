//! Relay test on real `doin node` processes, in network namespaces the test creates itself:
//! hosts A and C sit on two separate networks that only host R joins; R runs as a relay
//! (`relay_server`), A listens through it (`listen_addresses` with R's circuit), C dials A
//! through it; A and C connect and C follows the chain the three produce.
//!
//! Needs root for `ip netns`. Under CI (`CI=true`) or as root a lab that cannot be built fails
//! the test; elsewhere (a developer's laptop) the test says why it skipped.

mod common;

use std::{
    path::Path,
    process::Command,
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{Killed, collect, configure_lab_node, devnet_setup, ip, lab_missing, peer_id_of, spawn_lines};

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

/// One line a node printed: (node, line, when).
type Line = (char, String, Instant);

/// The last lines each node printed, for a failure message.
fn tails(lines: &[Line]) -> String {
    ['r', 'a', 'c']
        .iter()
        .map(|n| {
            let mine: Vec<&str> =
                lines.iter().filter(|(w, _, _)| w == n).map(|(_, l, _)| l.as_str()).collect();
            format!("--- {n}: {}", mine[mine.len().saturating_sub(15)..].join("\n    "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn hosts_without_a_route_connect_through_a_relay() {
    let lab = match Lab::build() {
        Ok(l) => l,
        Err(e) => return lab_missing("the relay test", &e),
    };
    // A and C really cannot reach each other (while each reaches R).
    let pings = |from: &str, to: &str| {
        Command::new("ip")
            .args(["netns", "exec", &lab.ns(from), "ping", "-c1", "-W1", to])
            .output()
            .expect("ping runs")
            .status
            .success()
    };
    assert!(pings("c", "10.78.2.1") && pings("a", "10.78.1.1"), "A and C must reach R (is ping installed?)");
    assert!(!pings("c", "10.78.1.2"), "C must not be able to reach A directly");
    let dir = tempfile::tempdir().unwrap();
    let (_, configs) = devnet_setup(dir.path(), 3, 500, &[]);
    let (r_conf, a_conf, c_conf) = (&configs[0], &configs[1], &configs[2]);
    let (tx, rx) = sync_channel(65_536);
    let mut children: Vec<Killed> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    let debug = std::env::var_os("DOIN_DEBUG_LINES").is_some();
    let mut spawn = |name: char, config: &Path| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &lab.ns(&name.to_string()),
            env!("CARGO_BIN_EXE_doin"),
            "node",
            "--config",
        ])
        .arg(config);
        children.push(spawn_lines(&mut cmd, name, &tx, debug));
    };
    let deadline = |s| Instant::now() + Duration::from_secs(s);

    configure_lab_node(
        r_conf,
        "10.78.1.1",
        serde_json::json!({"relay_server": true, "listen_addresses": ["/ip4/10.78.2.1/tcp/4101"]}),
    );
    spawn('r', r_conf);
    assert!(
        collect(&rx, &mut lines, deadline(30), |l| peer_id_of(l, 'r').is_some()),
        "R did not listen:\n{}",
        tails(&lines)
    );
    let r_id = peer_id_of(&lines, 'r').unwrap();

    let circuit = format!("/ip4/10.78.1.1/tcp/4101/p2p/{r_id}/p2p-circuit");
    configure_lab_node(
        a_conf,
        "10.78.1.2",
        serde_json::json!({"listen_addresses": [circuit], "bootstrap_peers": [format!("/ip4/10.78.1.1/tcp/4101/p2p/{r_id}")]}),
    );
    spawn('a', a_conf);
    assert!(
        collect(&rx, &mut lines, deadline(30), |l| peer_id_of(l, 'a').is_some()),
        "A did not listen:\n{}",
        tails(&lines)
    );
    let a_id = peer_id_of(&lines, 'a').unwrap();
    // A's reservation at R must be in place before C dials A through R.
    let reserved = |l: &[Line]| {
        l.iter().any(|(w, x, _)| *w == 'a' && x.starts_with("listening ") && x.contains("p2p-circuit"))
    };
    assert!(
        collect(&rx, &mut lines, deadline(30), reserved),
        "A got no reservation at R:\n{}",
        tails(&lines)
    );

    let via_relay = format!("/ip4/10.78.2.1/tcp/4101/p2p/{r_id}/p2p-circuit/p2p/{a_id}");
    configure_lab_node(c_conf, "10.78.2.2", serde_json::json!({"bootstrap_peers": [via_relay]}));
    spawn('c', c_conf);
    assert!(
        collect(&rx, &mut lines, deadline(30), |l| peer_id_of(l, 'c').is_some()),
        "C did not listen:\n{}",
        tails(&lines)
    );
    let c_id = peer_id_of(&lines, 'c').unwrap();

    // C connects to A (through R: there is no other route), A sees C, and C ends on a tip A
    // printed too, at height 15 or more.
    let printed = |l: &[Line], who: char, word: &str, what: &str| {
        l.iter().any(|(w, x, _)| *w == who && x.strip_prefix(word).is_some_and(|r| r.trim_start() == what))
    };
    let common_tip = |l: &[Line]| {
        l.iter().any(|(w, x, _)| {
            *w == 'c'
                && x.strip_prefix("block ").is_some_and(|rest| {
                    let mut p = rest.split(' ');
                    let (h, hash) = (p.next().and_then(|h| h.parse::<u64>().ok()), p.next());
                    h.is_some_and(|h| h >= 15)
                        && hash.is_some_and(|hash| {
                            l.iter().any(|(w2, y, _)| {
                                *w2 == 'a' && y.starts_with(&format!("block {} {hash} ", h.unwrap()))
                            })
                        })
                })
        })
    };
    let done = |l: &[Line]| {
        printed(l, 'c', "connected", &a_id) && printed(l, 'a', "connected", &c_id) && common_tip(l)
    };
    assert!(
        collect(&rx, &mut lines, deadline(60), done),
        "through the relay within 60 s: C connected to A {}, A connected to C {}, a common tip at 15+ {}\n{}",
        printed(&lines, 'c', "connected", &a_id),
        printed(&lines, 'a', "connected", &c_id),
        common_tip(&lines),
        tails(&lines)
    );
}
