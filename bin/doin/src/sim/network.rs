//! The simulated network: gossip over the mesh, what a node does with a block (fork choice,
//! catching up on ancestors, never reverting finality), and the perturbations (crashes and
//! restarts with the chain kept, partitions and heals, slowed links, clock skew).

use super::{Checkpoint, PROPAGATION_BUCKETS, Rng, Sim};

impl Sim {
    /// Sends block `b` from node `from` to its mesh peers (but `except`).
    pub(super) fn gossip(&mut self, now: u64, from: usize, b: usize, except: Option<usize>) {
        let peers = self.nodes[from].peers.clone();
        for p in peers {
            let p = p as usize;
            if Some(p) == except {
                continue;
            }
            self.transmissions += 1;
            if self.rng.unit() < self.args.loss
                || (self.partitioned && self.nodes[p].side != self.nodes[from].side)
            {
                continue;
            }
            let mut ms = self.rng.lognormal(self.args.latency_ms, 0.5).max(1.0) as u64;
            if self.nodes[p].slow_until > now || self.nodes[from].slow_until > now {
                ms *= 10;
            }
            if self.latencies.len() < 100_000 {
                self.latencies.push(ms);
            }
            self.push_from(now + ms, 0, p as u32, b as u32, from as u32);
        }
    }

    /// Node `n` receives block `b` at `now` (from `from`): catch up on its ancestors, adopt it
    /// if it is the better tip, forward it.
    pub(super) fn receive(&mut self, now: u64, n: usize, b: usize, from: Option<usize>) {
        if !self.nodes[n].up || self.nodes[n].has(b) {
            return;
        }
        if n == 0 && from.is_some() && self.args.fault.as_deref() == Some("deaf-node") {
            return;
        }
        self.deliveries += 1;
        let delay = now.saturating_sub(self.blocks[b].produced_ms) as usize;
        self.propagation[delay.min(PROPAGATION_BUCKETS - 1)] += 1;
        // Missing ancestors come from the sender (sync), all at once.
        let mut x = b;
        while x != usize::MAX && !self.nodes[n].has(x) {
            self.nodes[n].mark(x);
            x = self.blocks[x].parent;
        }
        let old = self.nodes[n].tip;
        // Like the chain store, never move to a chain that forks below the finalized checkpoint.
        if self.better(b, old) && !self.on_chain(b, self.nodes[n].finalized) {
            self.below_finality += 1;
        } else if self.better(b, old) {
            // A switch that does not extend the old tip is a reorg of its depth.
            let ancestor = self.common_ancestor(old, b);
            let depth = self.blocks[old].height - self.blocks[ancestor].height;
            if depth > 0 {
                self.reorgs += 1;
                self.max_reorg = self.max_reorg.max(depth);
            }
            self.nodes[n].tip = b;
            self.follow_finality(n, b);
            self.chain_on_tip(now, n);
        }
        self.gossip(now, n, b, from);
    }

    /// Whether checkpoint `c` is on the chain of block `b`.
    pub(super) fn on_chain(&self, b: usize, c: Checkpoint) -> bool {
        let mut x = b;
        while x != usize::MAX && self.blocks[x].height > c.height {
            x = self.blocks[x].parent;
        }
        c.height == 0 || (x != usize::MAX && self.blocks[x].hash == c.hash)
    }

    /// Node `n` moved to tip `b` (which `receive` checked holds its finalized checkpoint).
    pub(super) fn follow_finality(&mut self, n: usize, b: usize) {
        let old = self.nodes[n].finalized;
        let new = self.blocks[b].state.meta().finalized;
        if new.height > old.height {
            self.nodes[n].finalized = new;
        }
    }

    pub(super) fn common_ancestor(&self, mut a: usize, mut b: usize) -> usize {
        while a != b {
            if self.blocks[a].height >= self.blocks[b].height {
                a = self.blocks[a].parent;
            } else {
                b = self.blocks[b].parent;
            }
            if a == usize::MAX || b == usize::MAX {
                return 0;
            }
        }
        a
    }

    /// A random perturbation at `now` (none in the calm last 20 % of the run).
    pub(super) fn perturb(&mut self, now: u64, end: u64) {
        let mean = (self.args.perturb_every_s * 1000.0) as u64;
        let next = now + (self.rng.unit() * 2.0 * mean as f64) as u64 + 1;
        // The last perturbation's heal (≤ 60 s) and restart (≤ 30 s) also come before the calm.
        if next + 60_000 < end * 4 / 5 {
            self.push(next, 4, 0, 0);
        }
        let n = self.rng.below(self.nodes.len());
        match self.rng.below(4) {
            0 if self.nodes[n].up => {
                self.nodes[n].up = false;
                self.perturbations[0] += 1;
                let back = now + 5_000 + self.rng.below(25_000) as u64;
                self.push(back, 2, n as u32, 0);
            }
            1 if !self.partitioned => {
                self.partitioned = true;
                self.perturbations[2] += 1;
                let share = 2 + self.rng.below(2) as u64; // a half or a third on one side
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    node.side = u8::from((i as u64 * 7919 + now).is_multiple_of(share));
                }
                let heal = now + 10_000 + self.rng.below(50_000) as u64;
                self.push(heal, 3, 0, 0);
            }
            2 => {
                self.nodes[n].slow_until = now + 5_000 + self.rng.below(25_000) as u64;
                self.perturbations[5] += 1;
            }
            _ => {
                self.nodes[n].skew_ms = self.rng.below(4_001) as i64 - 2_000;
                self.perturbations[4] += 1;
            }
        }
    }

    /// A restarted node asks its peers for their tips (what `poll_peers` does).
    pub(super) fn restart(&mut self, now: u64, n: usize) {
        self.nodes[n].up = true;
        self.perturbations[1] += 1;
        let peers = self.nodes[n].peers.clone();
        for p in peers {
            let tip = self.nodes[p as usize].tip;
            if self.nodes[p as usize].up {
                let rtt = self.rng.lognormal(self.args.latency_ms, 0.5) as u64 * 2;
                self.push(now + rtt, 0, n as u32, tip as u32);
            }
        }
    }

    pub(super) fn heal(&mut self, now: u64) {
        self.partitioned = false;
        self.perturbations[3] += 1;
        // Peers exchange tips after a heal (their status polls).
        for n in 0..self.nodes.len() {
            let tip = self.nodes[n].tip;
            self.gossip(now, n, tip, None);
        }
    }
}

/// A random mesh where every node has at least `d` peers (links are both ways; a node takes
/// no new link past `2d`).
pub(super) fn mesh(n: usize, d: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let mut peers: Vec<Vec<u32>> = vec![Vec::new(); n];
    for i in 0..n {
        let mut tries = 0;
        while peers[i].len() < d.min(n - 1) && tries < 100 {
            tries += 1;
            let j = rng.below(n);
            if j != i && !peers[i].contains(&(j as u32)) && peers[j].len() < d * 2 {
                peers[i].push(j as u32);
                peers[j].push(i as u32);
            }
        }
    }
    peers
}
