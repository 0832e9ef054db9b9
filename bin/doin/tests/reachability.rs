//! Reachability of real `doin node` processes in network namespaces the test builds itself,
//! with routers and NATs (nftables) between the hosts:
//!
//! - **Kademlia discovery and `external_addresses`**: four hosts on four networks joined by a
//!   router, and a fifth behind a NAT that forwards one public port to it and lets it open
//!   connections only to the seed. Every node is told only the seed; the one that joins last
//!   finds all the others through it, and reaches the NATed host, which nothing but that host's
//!   configured external address names.
//! - **Hole punching**: two hosts, each behind its own NAT (masquerade, nothing forwarded),
//!   reach each other through a relay on the public side and then punch a direct connection
//!   (DCUtR over QUIC).
//!
//! Needs root for `ip netns` and `nft`. Under CI (`CI=true`) or as root a lab that cannot be
//! built fails the test; elsewhere (a developer's laptop) the test says why it skipped.

mod common;

use std::{
    path::Path,
    process::Command,
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{
    Killed, collect, configure_lab_node, devnet_setup, ip, lab_missing, peer_id_of, serial, spawn_lines,
};

/// The namespaces; removed on drop.
struct Lab {
    prefix: String,
    hosts: Vec<String>,
}

impl Lab {
    fn new(tag: &str) -> Self {
        Self { prefix: format!("doin{tag}{}", std::process::id() % 100_000), hosts: Vec::new() }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// A host (namespace) with its loopback up.
    fn host(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", &self.ns(name)])?;
        self.hosts.push(self.ns(name));
        ip(&["-n", &self.ns(name), "link", "set", "lo", "up"])
    }

    /// A cable between `a` and `b` (interfaces `to-B` in `a` and `to-A` in `b`), with the
    /// addresses `a_ip` and `b_ip` on one /24.
    fn wire(&self, a: &str, a_ip: &str, b: &str, b_ip: &str) -> Result<(), String> {
        let (ia, ib) = (format!("to-{b}"), format!("to-{a}"));
        ip(&["-n", &self.ns(a), "link", "add", &ia, "type", "veth", "peer", "name", &ib])?;
        ip(&["-n", &self.ns(a), "link", "set", &ib, "netns", &self.ns(b)])?;
        for (ns, iface, addr) in [(a, &ia, a_ip), (b, &ib, b_ip)] {
            ip(&["-n", &self.ns(ns), "addr", "add", &format!("{addr}/24"), "dev", iface])?;
            ip(&["-n", &self.ns(ns), "link", "set", iface, "up"])?;
        }
        Ok(())
    }

    fn default_route(&self, host: &str, via: &str) -> Result<(), String> {
        ip(&["-n", &self.ns(host), "route", "add", "default", "via", via])
    }

    /// Runs `program args` in `host`.
    fn run(&self, host: &str, program: &str, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .output()
            .map_err(|e| format!("{program} in {host}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{program} {args:?} in {host}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Makes `host` a router.
    fn forward(&self, host: &str) -> Result<(), String> {
        self.run(host, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
    }

    /// Loads an nftables ruleset into `host`.
    fn nft(&self, host: &str, rules: &str) -> Result<(), String> {
        let file = std::env::temp_dir().join(format!("{}-{host}.nft", self.prefix));
        std::fs::write(&file, rules).map_err(|e| e.to_string())?;
        let r = self.run(host, "nft", &["-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        r
    }

    /// Whether `host` can ping `addr` (one try, one second).
    fn pings(&self, host: &str, addr: &str) -> bool {
        self.run(host, "ping", &["-c1", "-W1", addr]).is_ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// One line a node printed: (node, line, when).
type Line = (char, String, Instant);

/// Real node processes in a lab, their printed lines collected.
struct Nodes {
    tx: std::sync::mpsc::SyncSender<Line>,
    rx: std::sync::mpsc::Receiver<Line>,
    lines: Vec<Line>,
    children: Vec<Killed>,
}

impl Nodes {
    fn new() -> Self {
        let (tx, rx) = sync_channel(65_536);
        Self { tx, rx, lines: Vec::new(), children: Vec::new() }
    }

    /// Starts `doin node --config config` in `lab`'s `host`, as node `name`; returns its peer id.
    fn start(&mut self, lab: &Lab, host: &str, name: char, config: &Path) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.ns(host), env!("CARGO_BIN_EXE_doin"), "node", "--config"])
            .arg(config);
        let debug = std::env::var_os("DOIN_DEBUG_LINES").is_some();
        self.children.push(spawn_lines(&mut cmd, name, &self.tx, debug));
        let listened = collect(&self.rx, &mut self.lines, Instant::now() + Duration::from_secs(30), |l| {
            peer_id_of(l, name).is_some()
        });
        assert!(listened, "{name} did not listen:\n{}", self.tails());
        peer_id_of(&self.lines, name).unwrap()
    }

    /// Waits up to `secs` for `done`.
    fn wait(&mut self, secs: u64, done: impl Fn(&[Line]) -> bool) -> bool {
        collect(&self.rx, &mut self.lines, Instant::now() + Duration::from_secs(secs), done)
    }

    /// The last lines each node printed, for a failure message.
    fn tails(&self) -> String {
        let mut names: Vec<char> = self.lines.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        names
            .iter()
            .map(|n| {
                let mine: Vec<&str> =
                    self.lines.iter().filter(|(w, _, _)| w == n).map(|(_, l, _)| l.as_str()).collect();
                format!("--- {n}: {}", mine[mine.len().saturating_sub(15)..].join("\n    "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether `who` printed `word ID` (`connected`, `hole punched`) for the peer `id`.
fn printed(lines: &[Line], who: char, word: &str, id: &str) -> bool {
    lines.iter().any(|(w, x, _)| *w == who && x.strip_prefix(word).is_some_and(|r| r.trim_start() == id))
}

/// Seed S, hosts B, C, D on networks 10.81–84 joined by router W; host E on 192.168.85.2
/// behind NAT router NE (public 10.85.0.2), which forwards public TCP port 4999 to E's 4101
/// and lets E open connections to S only.
fn discovery_lab() -> Result<Lab, String> {
    let mut lab = Lab::new("k");
    for h in ["w", "s", "b", "c", "d", "ne", "e"] {
        lab.host(h)?;
    }
    for (i, h) in ["s", "b", "c", "d", "ne"].iter().enumerate() {
        let net = 81 + i;
        lab.wire("w", &format!("10.{net}.0.1"), h, &format!("10.{net}.0.2"))?;
        lab.default_route(h, &format!("10.{net}.0.1"))?;
    }
    lab.forward("w")?;
    lab.wire("ne", "192.168.85.1", "e", "192.168.85.2")?;
    lab.default_route("e", "192.168.85.1")?;
    lab.forward("ne")?;
    lab.nft(
        "ne",
        r#"
table ip nat {
    chain pre { type nat hook prerouting priority -100; iifname "to-w" tcp dport 4999 dnat to 192.168.85.2:4101; }
    chain post { type nat hook postrouting priority 100; oifname "to-w" masquerade; }
}
table ip filter {
    chain through {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "to-e" ip daddr 10.81.0.2 accept
        iifname "to-w" ct status dnat accept
    }
}
"#,
    )?;
    Ok(lab)
}

#[test]
fn a_node_told_one_peer_finds_the_rest_and_reaches_a_nated_host_at_its_external_address() {
    let _serial = serial();
    let lab = match discovery_lab() {
        Ok(l) => l,
        Err(e) => return lab_missing("the kademlia discovery test", &e),
    };
    // The lab holds: D cannot route to E's own address, and E cannot open a connection to D.
    assert!(lab.pings("d", "10.81.0.2") && lab.pings("e", "10.81.0.2"), "the lab's routes do not work");
    assert!(!lab.pings("d", "192.168.85.2"), "D must not reach E's own address");
    assert!(!lab.pings("e", "10.84.0.2"), "E must not open connections to D");

    let dir = tempfile::tempdir().unwrap();
    let (_, configs) = devnet_setup(dir.path(), 5, 500, &[]);
    let mut nodes = Nodes::new();
    configure_lab_node(&configs[0], "10.81.0.2", serde_json::json!({}));
    let s = nodes.start(&lab, "s", 's', &configs[0]);
    let seed = format!("/ip4/10.81.0.2/tcp/4101/p2p/{s}");
    let told_seed = serde_json::json!({ "bootstrap_peers": [seed] });
    let mut ids = Vec::new();
    for (i, (host, name)) in [("b", 'b'), ("c", 'c')].into_iter().enumerate() {
        configure_lab_node(&configs[1 + i], &format!("10.{}.0.2", 82 + i), told_seed.clone());
        ids.push(nodes.start(&lab, host, name, &configs[1 + i]));
    }
    let mut e_config = told_seed.clone();
    e_config["external_addresses"] = serde_json::json!(["/ip4/10.85.0.2/tcp/4999"]);
    configure_lab_node(&configs[4], "192.168.85.2", e_config);
    let e = nodes.start(&lab, "e", 'e', &configs[4]);
    assert!(nodes.wait(30, |l| printed(l, 's', "connected", &e)), "E did not reach S:\n{}", nodes.tails());
    configure_lab_node(&configs[3], "10.84.0.2", told_seed);
    nodes.start(&lab, "d", 'd', &configs[3]);

    let (b, c) = (ids[0].clone(), ids[1].clone());
    let found = |l: &[Line]| [&s, &b, &c, &e].iter().all(|id| printed(l, 'd', "connected", id));
    assert!(
        nodes.wait(60, found),
        "D, told only S, within 60 s: S {} B {} C {} E (behind the NAT) {}\n{}",
        printed(&nodes.lines, 'd', "connected", &s),
        printed(&nodes.lines, 'd', "connected", &b),
        printed(&nodes.lines, 'd', "connected", &c),
        printed(&nodes.lines, 'd', "connected", &e),
        nodes.tails()
    );
}

/// Relay R on the public side (10.91.0.1 and 10.92.0.1, forwarding between them); A on
/// 192.168.91.2 behind NAT NA (public 10.91.0.2), C on 192.168.92.2 behind NAT NC (public
/// 10.92.0.2); both NATs masquerade and drop whatever comes in unasked, as home routers do (a
/// dropped packet leaves no conntrack entry behind: one answered by the router itself would,
/// and would take the port its NAT mapping needs).
fn nat_lab() -> Result<Lab, String> {
    let mut lab = Lab::new("h");
    for h in ["r", "na", "nc", "a", "c"] {
        lab.host(h)?;
    }
    for (nat, host, net) in [("na", "a", 91), ("nc", "c", 92)] {
        lab.wire("r", &format!("10.{net}.0.1"), nat, &format!("10.{net}.0.2"))?;
        lab.default_route(nat, &format!("10.{net}.0.1"))?;
        lab.wire(nat, &format!("192.168.{net}.1"), host, &format!("192.168.{net}.2"))?;
        lab.default_route(host, &format!("192.168.{net}.1"))?;
        lab.forward(nat)?;
        lab.nft(
            nat,
            r#"
table ip nat {
    chain post { type nat hook postrouting priority 100; oifname "to-r" masquerade; }
}
table ip filter {
    chain through {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        oifname "to-r" accept
    }
    chain inbound {
        type filter hook input priority 0; policy accept;
        iifname "to-r" ct state new drop
    }
}
"#,
        )?;
    }
    lab.forward("r")?;
    Ok(lab)
}

#[test]
fn hosts_behind_two_nats_punch_a_direct_connection_through_a_relay() {
    let _serial = serial();
    let lab = match nat_lab() {
        Ok(l) => l,
        Err(e) => return lab_missing("the hole punching test", &e),
    };
    assert!(lab.pings("a", "10.91.0.1") && lab.pings("c", "10.92.0.1"), "the lab's routes do not work");
    assert!(!lab.pings("a", "192.168.92.2"), "A must not reach C's own address");

    let dir = tempfile::tempdir().unwrap();
    let (_, configs) = devnet_setup(dir.path(), 3, 500, &[]);
    let mut nodes = Nodes::new();
    configure_lab_node(
        &configs[0],
        "10.91.0.1",
        serde_json::json!({
            "relay_server": true,
            "quic": true,
            "listen_addresses": ["/ip4/10.92.0.1/tcp/4101", "/ip4/10.92.0.1/udp/4101/quic-v1"],
        }),
    );
    let r = nodes.start(&lab, "r", 'r', &configs[0]);
    // `quic: true`: R also listens on QUIC at its host address and P2P port.
    let quic = |l: &[Line]| {
        l.iter().any(|(w, x, _)| *w == 'r' && x.starts_with("listening /ip4/10.91.0.1/udp/4101/quic-v1"))
    };
    assert!(nodes.wait(10, quic), "R does not listen on QUIC:\n{}", nodes.tails());
    // A reaches R over TCP and QUIC (R tells it the public address and port its NAT gives
    // each) and listens through R.
    configure_lab_node(
        &configs[1],
        "192.168.91.2",
        serde_json::json!({
            "quic": true,
            "listen_addresses": [format!("/ip4/10.91.0.1/tcp/4101/p2p/{r}/p2p-circuit")],
            "bootstrap_peers": [
                format!("/ip4/10.91.0.1/tcp/4101/p2p/{r}"),
                format!("/ip4/10.91.0.1/udp/4101/quic-v1/p2p/{r}"),
            ],
        }),
    );
    let a = nodes.start(&lab, "a", 'a', &configs[1]);
    let reserved = |l: &[Line]| {
        l.iter().any(|(w, x, _)| *w == 'a' && x.starts_with("listening ") && x.contains("p2p-circuit"))
    };
    assert!(nodes.wait(30, reserved), "A got no reservation at R:\n{}", nodes.tails());
    configure_lab_node(
        &configs[2],
        "192.168.92.2",
        serde_json::json!({
            "quic": true,
            "bootstrap_peers": [
                format!("/ip4/10.92.0.1/tcp/4101/p2p/{r}"),
                format!("/ip4/10.92.0.1/udp/4101/quic-v1/p2p/{r}"),
                format!("/ip4/10.92.0.1/tcp/4101/p2p/{r}/p2p-circuit/p2p/{a}"),
            ],
        }),
    );
    let c = nodes.start(&lab, "c", 'c', &configs[2]);
    let punched = |l: &[Line]| printed(l, 'a', "hole punched", &c) || printed(l, 'c', "hole punched", &a);
    assert!(
        nodes.wait(60, punched),
        "no direct connection between A and C within 60 s (connected through R: C {} A {})\n{}",
        printed(&nodes.lines, 'c', "connected", &a),
        printed(&nodes.lines, 'a', "connected", &c),
        nodes.tails()
    );
}
