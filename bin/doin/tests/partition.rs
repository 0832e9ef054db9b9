//! Partitions of six real `doin node` processes in network namespaces the test creates itself:
//! six hosts, two bridges joined by one link. While the link is down (three finality periods,
//! and until the first side has built four checkpoint intervals past the cut), a side with two thirds of the stake keeps finalizing and a side with less does not
//! (3 | 3: neither; 4 | 2: only the four); after the link heals every node ends on one tip, and
//! no node ever finalized a block that is not on it.
//!
//! Needs root for `ip netns`. Under CI (`CI=true`) or as root a lab that cannot be built fails
//! the test; elsewhere (a developer's laptop) the test says why it skipped.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    sync::mpsc::sync_channel,
    time::{Duration, Instant},
};

use common::{collect, devnet_setup, ip, lab_missing, rewrite_config, serial, spawn_lines};
use doin_consensus::GenesisSpec;
use doin_storage::{ChainStore, StoreOptions};

const HOSTS: usize = 6;

/// The namespaces; removed on drop.
struct Lab {
    prefix: String,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Hosts `0..side_a` hang off one bridge, the rest off the other.
    fn build(tag: &str, side_a: usize) -> Result<Self, String> {
        let lab = Self { prefix: format!("doin{tag}{}", std::process::id() % 100_000) };
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
            let br = if i < side_a { "bra" } else { "brb" };
            ip(&["-n", &sw, "link", "set", &outer, "master", br, "up"])?;
            ip(&["-n", &host, "addr", "add", &format!("{}/24", addr(i)), "dev", &inner])?;
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

fn addr(i: usize) -> String {
    format!("10.77.0.{}", 10 + i)
}

/// One line a node printed: (node, line, when).
type Line = (usize, String, Instant);

/// `(height, hash)` of a `justified`/`finalized`/`block` line.
fn checkpoint(line: &str, word: &str) -> Option<(u64, String)> {
    let mut parts = line.strip_prefix(word)?.strip_prefix(' ')?.split(' ');
    Some((parts.next()?.parse().ok()?, parts.next()?.to_owned()))
}

/// Keys, genesis and configs for six staked nodes (one per host), blocks at least every
/// 0.5 s so that checkpoints come every few seconds.
fn setup(dir: &Path) -> (GenesisSpec, Vec<std::path::PathBuf>) {
    let (spec, configs) = devnet_setup(dir, HOSTS, 500, &[]);
    for (i, path) in configs.iter().enumerate() {
        rewrite_config(path, |c| {
            c["host"] = addr(i).into();
            c["port"] = 4100.into();
            c["bootstrap_peers"] =
                (0..HOSTS).filter(|j| *j != i).map(|j| format!("{}:4101", addr(j))).collect();
        });
    }
    (spec, configs)
}

/// The newest finalized height each node printed (by `at`, if given).
fn finalized_heights(lines: &[Line], at: Option<Instant>) -> Vec<u64> {
    let mut out = vec![0; HOSTS];
    for (node, line, when) in lines {
        if at.is_some_and(|t| *when > t) {
            continue;
        }
        if let Some((h, _)) = checkpoint(line, "finalized") {
            out[*node] = out[*node].max(h);
        }
    }
    out
}

/// The newest tip each node printed.
fn tips(lines: &[Line]) -> Vec<Option<(u64, String)>> {
    let mut out = vec![None; HOSTS];
    for (node, line, _) in lines {
        if let Some(t) = checkpoint(line, "block") {
            out[*node] = Some(t);
        }
    }
    out
}

/// Runs the six nodes with hosts `0..side_a` on one side; returns every line, the heights
/// the nodes had reached at the cut, and the instants of cut and heal.
fn run_partition(
    tag: &str,
    side_a: usize,
) -> Option<(Vec<Line>, u64, Instant, Instant, GenesisSpec, tempfile::TempDir)> {
    let lab = match Lab::build(tag, side_a) {
        Ok(l) => l,
        Err(e) => {
            lab_missing("the partition test", &e);
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (spec, configs) = setup(dir.path());
    let (tx, rx) = sync_channel(1 << 16);
    let mut children = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &lab.ns(&format!("h{i}")),
            env!("CARGO_BIN_EXE_doin"),
            "node",
            "--config",
        ])
        .arg(config);
        children.push(spawn_lines(&mut cmd, i, &tx, std::env::var_os("DOIN_DEBUG_LINES").is_some()));
    }
    let mut lines: Vec<Line> = Vec::new();
    // Connected: every node finalizes a checkpoint three times; the time between node 0's
    // second and third finalizations is the finality period (the first may come in a burst
    // while it syncs).
    let started = Instant::now();
    let thrice = |lines: &[Line]| {
        (0..HOSTS)
            .all(|n| lines.iter().filter(|(m, l, _)| *m == n && l.starts_with("finalized ")).count() >= 3)
    };
    assert!(
        collect(&rx, &mut lines, started + Duration::from_secs(90), thrice),
        "the connected network did not finalize three times within 90 s: {:?}",
        finalized_heights(&lines, None)
    );
    let finals: Vec<Instant> =
        lines.iter().filter(|(n, l, _)| *n == 0 && l.starts_with("finalized ")).map(|(_, _, t)| *t).collect();
    let period = finals[2] - finals[1];
    let cut_height = tips(&lines).iter().flatten().map(|(h, _)| *h).max().unwrap();
    lab.link(false);
    let cut = Instant::now();
    // Three finality periods, and long enough for the idle-connection checks to notice; and
    // until side A has built four checkpoint intervals past the cut (a side missing producers
    // builds slower than the connected network's period says, and a vote lost in the cut can
    // cost a checkpoint), so that a side able to finalize a block above the cut has done so.
    let partition = (period * 3).clamp(Duration::from_secs(15), Duration::from_secs(45));
    let built = cut_height + 4 * spec.params.finality_depth;
    let long_enough = |lines: &[Line]| {
        Instant::now() >= cut + partition
            && tips(lines)[..side_a].iter().all(|t| t.as_ref().is_some_and(|(h, _)| *h >= built))
    };
    let held = collect(&rx, &mut lines, cut + Duration::from_secs(120), long_enough);
    eprintln!(
        "{tag}: finality period {period:?}, partition from height {cut_height} held {:?} (side A at {built}: {held})",
        cut.elapsed()
    );
    eprintln!("{tag}: at the heal: tips {:?}, finalized {:?}", tips(&lines), finalized_heights(&lines, None));
    lab.link(true);
    let healed = Instant::now();
    // Healed: every node on one tip, finalizing past everything finalized before.
    let before = finalized_heights(&lines, Some(healed)).into_iter().max().unwrap();
    let converged = |lines: &[Line]| {
        let t = tips(lines);
        let after = finalized_heights(lines, None);
        t.iter().all(|x| x.is_some() && *x == t[0]) && after.iter().all(|h| *h > before)
    };
    let ok = collect(&rx, &mut lines, healed + Duration::from_secs(90), converged);
    drop(children);
    assert!(
        ok,
        "after the heal the nodes did not converge: tips {:?}, finalized {:?}",
        tips(&lines),
        finalized_heights(&lines, None)
    );
    drop(lab);
    Some((lines, cut_height, cut, healed, spec, dir))
}

/// No node ever finalized a block off the final chain, nor moved its finalized checkpoint back.
fn check_finalized_on_final_chain(lines: &[Line], spec: &GenesisSpec, dir: &Path) {
    let store = ChainStore::open(&dir.join("node0/chain.redb"), spec, StoreOptions::default()).unwrap();
    let mut last: BTreeMap<usize, u64> = BTreeMap::new();
    for (node, line, _) in lines {
        let Some((h, hash)) = checkpoint(line, "finalized") else { continue };
        let on_chain = store.canonical_hash(h).unwrap().map(|x| x.to_string());
        assert_eq!(
            on_chain.as_deref(),
            Some(hash.as_str()),
            "node {node} finalized {h} {hash} off the final chain"
        );
        let prev = last.insert(*node, h).unwrap_or(0);
        assert!(h >= prev, "node {node} moved its finalized checkpoint back from {prev} to {h}");
    }
}

/// Finalized checkpoints above the cut height, per node, printed during the partition.
fn finalized_during(lines: &[Line], cut_height: u64, cut: Instant, healed: Instant) -> Vec<u64> {
    let mut out = vec![0; HOSTS];
    for (node, line, t) in lines {
        if *t <= cut || *t >= healed {
            continue;
        }
        if let Some((h, _)) = checkpoint(line, "finalized")
            && h > cut_height
        {
            out[*node] = out[*node].max(h);
        }
    }
    out
}

#[test]
fn an_even_split_finalizes_on_neither_side_and_converges_after_healing() {
    let _serial = serial();
    let Some((lines, cut_height, cut, healed, spec, dir)) = run_partition("e", 3) else { return };
    let during = finalized_during(&lines, cut_height, cut, healed);
    assert!(during.iter().all(|h| *h == 0), "a half of the stake finalized during the partition: {during:?}");
    check_finalized_on_final_chain(&lines, &spec, dir.path());
}

#[test]
fn only_the_two_thirds_side_finalizes_and_the_other_follows_it_after_healing() {
    let _serial = serial();
    let Some((lines, cut_height, cut, healed, spec, dir)) = run_partition("m", 4) else { return };
    let during = finalized_during(&lines, cut_height, cut, healed);
    assert!(during[..4].iter().all(|h| *h > cut_height), "the 4 side kept finalizing: {during:?}");
    assert!(during[4..].iter().all(|h| *h == 0), "the 2 side finalized without two thirds: {during:?}");
    check_finalized_on_final_chain(&lines, &spec, dir.path());
}
