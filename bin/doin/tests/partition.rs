//! Partition test in network namespaces the test creates itself: six hosts, two bridges joined
//! by one link; the link goes down (3 | 3), each side keeps producing and following its own
//! chain, the link heals, and every host converges on the longer chain without reorging past
//! finality. Needs root for `ip netns`; elsewhere it prints why it skipped.

mod common;

use std::{
    process::Command,
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{ip, spawn_lines};
use doin_consensus::testkit::TestNet;

const HOSTS: usize = 6;

/// The namespaces; removed on drop.
struct Lab {
    prefix: String,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn build() -> Result<Self, String> {
        let lab = Self { prefix: format!("doin{}", std::process::id() % 100_000) };
        let sw = lab.ns("sw");
        ip(&["netns", "add", &sw])?;
        for br in ["bra", "brb"] {
            ip(&["-n", &sw, "link", "add", br, "type", "bridge"])?;
            ip(&["-n", &sw, "link", "set", br, "up"])?;
        }
        // The link between the two sides.
        ip(&["-n", &sw, "link", "add", "la", "type", "veth", "peer", "name", "lb"])?;
        ip(&["-n", &sw, "link", "set", "la", "master", "bra", "up"])?;
        ip(&["-n", &sw, "link", "set", "lb", "master", "brb", "up"])?;
        for i in 0..HOSTS {
            let host = lab.ns(&format!("h{i}"));
            ip(&["netns", "add", &host])?;
            let (inner, outer) = (format!("e{i}"), format!("p{i}"));
            ip(&["-n", &sw, "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            ip(&["-n", &sw, "link", "set", &inner, "netns", &host])?;
            let br = if i < HOSTS / 2 { "bra" } else { "brb" };
            ip(&["-n", &sw, "link", "set", &outer, "master", br, "up"])?;
            ip(&["-n", &host, "addr", "add", &format!("10.77.0.{}/24", 10 + i), "dev", &inner])?;
            ip(&["-n", &host, "link", "set", &inner, "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn link(&self, up: bool) {
        let sw = self.ns("sw");
        ip(&["-n", &sw, "link", "set", "la", if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..HOSTS {
            let _ = ip(&["netns", "del", &self.ns(&format!("h{i}"))]);
        }
        let _ = ip(&["netns", "del", &self.ns("sw")]);
    }
}

#[test]
fn partitioned_sides_keep_working_and_converge_after_healing() {
    let lab = match Lab::build() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipping the partition test: cannot create network namespaces ({e})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TestNet::new(3, 0, 0).spec;
    spec.params.max_block_interval_ms = 20;
    spec.params.finality_depth = 20;
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, serde_json::to_vec(&spec).unwrap()).unwrap();
    let addr = |i: usize| format!("/ip4/10.77.0.{}/tcp/4100", 10 + i);
    let (tx, rx) = sync_channel(65_536);
    let mut children = Vec::new();
    let mut ids = vec![String::new(); HOSTS];
    for i in 0..HOSTS {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &lab.ns(&format!("h{i}")),
            env!("CARGO_BIN_EXE_doin"),
            "net-peer",
            "--data-dir",
        ])
        .arg(dir.path().join(format!("n{i}")))
        .arg("--genesis")
        .arg(&genesis)
        .args(["--listen", &addr(i), "--until-height", "100", "--timeout-s", "60"]);
        // Side A's producer is three times faster; side B's stops when the link heals.
        if i == 0 {
            cmd.args(["--produce", "0", "--interval-ms", "100"]);
        }
        if i == 3 {
            cmd.args(["--produce", "1", "--interval-ms", "300", "--produce-for-ms", "4500"]);
        }
        for j in [0, 3] {
            if j != i && !ids[j].is_empty() {
                cmd.args(["--peer", &format!("{}/p2p/{}", addr(j), ids[j])]);
            }
        }
        children.push(spawn_lines(&mut cmd, i, &tx, false));
        let id = loop {
            let (who, line, _) = rx.recv_timeout(Duration::from_secs(30)).expect("peer listens");
            if who == i
                && let Some(a) = line.strip_prefix("listening ")
            {
                break a.rsplit('/').next().unwrap().to_owned();
            }
        };
        ids[i] = id;
    }
    let mut lines: Vec<(usize, String, Instant)> = Vec::new();
    let collect = |until: Instant, lines: &mut Vec<(usize, String, Instant)>| {
        while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            lines.push(l);
            if Instant::now() >= until {
                break;
            }
        }
    };
    // Connected phase, then the partition.
    collect(Instant::now() + Duration::from_millis(1200), &mut lines);
    lab.link(false);
    let cut = Instant::now();
    collect(cut + Duration::from_millis(3000), &mut lines);
    lab.link(true);
    let healed = Instant::now();
    // Until every host is done.
    let deadline = healed + Duration::from_secs(45);
    let mut done = vec![None; HOSTS];
    for l in &lines {
        if let Some(rest) = l.1.strip_prefix("done ") {
            done[l.0] = Some(rest.to_owned());
        }
    }
    while done.iter().any(Option::is_none) {
        let l =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("every host finishes");
        if let Some(rest) = l.1.strip_prefix("done ") {
            done[l.0] = Some(rest.to_owned());
        }
        lines.push(l);
    }
    if std::env::var_os("DOIN_DEBUG_PARTITION").is_some() {
        for (h, l, t) in &lines {
            let rel = match t.checked_duration_since(cut) {
                Some(d) => d.as_millis() as i64,
                None => -(cut.duration_since(*t).as_millis() as i64),
            };
            eprintln!("{rel:>6} [{h}] {l}");
        }
    }
    // Each side kept working during the partition: both sides' followers advanced.
    let advanced = |host: usize| {
        let heights: Vec<u64> = lines
            .iter()
            .filter(|(h, l, t)| *h == host && *t > cut && *t < healed && l.starts_with("tip "))
            .filter_map(|(_, l, _)| l.split(' ').nth(1)?.parse().ok())
            .collect();
        heights.len() >= 2
    };
    assert!(advanced(1) && advanced(2), "side A stalled during the partition");
    assert!(advanced(4) && advanced(5), "side B stalled during the partition");
    // Side B reorganized onto side A's longer chain after healing.
    assert!(
        lines.iter().any(|(h, l, t)| *h >= 3 && *t >= healed && l.starts_with("reorg ")),
        "side B never switched to the heavier chain"
    );
    // No host ever finalized a block that is not on the final chain (host 0's blocks).
    let mut final_chain = std::collections::HashMap::new();
    for (h, l, _) in &lines {
        let mut parts = l.split(' ');
        if *h == 0
            && parts.next() == Some("tip")
            && let (Some(height), Some(hash)) = (parts.next(), parts.next())
        {
            final_chain.insert(height.to_owned(), hash.to_owned());
        }
    }
    let finalized: Vec<_> = lines.iter().filter(|(_, l, _)| l.starts_with("finalized ")).collect();
    assert!(finalized.iter().any(|(h, _, _)| *h >= 3), "side B never finalized anything");
    for (h, l, _) in finalized {
        let mut parts = l.split(' ').skip(1);
        let (height, hash) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            final_chain.get(height).map(String::as_str),
            Some(hash),
            "host {h} finalized {height} off the final chain"
        );
    }
    // Everyone ends on one tip.
    let first = done[0].clone().unwrap();
    for (i, d) in done.iter().enumerate() {
        assert_eq!(d.as_ref(), Some(&first), "host {i} ended on another tip");
    }
}
