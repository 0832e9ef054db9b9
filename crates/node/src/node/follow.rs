//! Chain following and network routing: gossip in, blocks imported and announced, syncs
//! with peers, and what a new tip means for the pipeline (champions, targets, settled claims).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) async fn publish(&self, topic: Topic, msg: GossipMessage) {
        // Our own messages never pass our validator: admit them, or the votes our commit draws
        // would be ignored as votes on an unknown commit.
        self.gossip.admit_own(&msg);
        let name = topic.name();
        if let Err(e) = self.net.publish(topic, msg).await {
            tracing::debug!(topic = name, error = %e, "publish failed (no peers yet?)");
        }
    }

    pub(super) async fn on_network(&mut self, ev: NetworkEvent) {
        match ev {
            NetworkEvent::Listening(addr) => {
                let me = self.net.peer_id();
                if matches!(addr.iter().last(), Some(doin_net::Protocol::P2p(p)) if p == me) {
                    println!("listening {addr}");
                } else {
                    println!("listening {addr}/p2p/{me}");
                }
            }
            NetworkEvent::PeerConnected(peer) => {
                println!("connected {peer}");
                self.emit("peer_joined", None, json!({ "peer_id": peer.to_string() }));
            }
            NetworkEvent::HolePunch { peer, result } => match result {
                Ok(()) => println!("hole punched {peer}"),
                Err(e) => println!("hole punching with {peer} failed: {e}"),
            },
            NetworkEvent::PeerDisconnected(peer) => {
                self.emit("peer_left", None, json!({ "peer_id": peer.to_string() }));
            }
            NetworkEvent::Subscribed { peer, topic } => {
                if let Some(Topic::Optimae(domain)) = Topic::parse(&topic)
                    && let Some(needed) = self
                        .domains
                        .get(&domain)
                        .filter(|rt| rt.waiting_for_peers.is_some())
                        .map(|rt| rt.peers_needed)
                {
                    let listening =
                        self.net.topic_peers(Topic::Optimae(domain.clone())).await.map_or(0, |p| p.len());
                    if listening >= needed {
                        self.stop_waiting(&domain, Some(peer));
                    }
                }
            }
            NetworkEvent::Gossip { message, from, .. } => match message {
                GossipMessage::Block(compact) => {
                    self.on_block(*compact, from);
                    self.poked = true;
                }
                GossipMessage::Transaction(tx) => {
                    let state = self.tip_state();
                    if let Err(e) = self.mempool.insert(*tx, &state) {
                        tracing::debug!(error = %e, "transaction refused");
                    }
                }
                GossipMessage::Commit(c) => {
                    self.pool_commit(&c);
                    self.on_commit(*c);
                    self.poked = true;
                }
                GossipMessage::Trials(t) => self.on_trials(*t),
                GossipMessage::Reveal(r) => {
                    #[cfg(feature = "adversary")]
                    if self.adversary == Some(Adversary::CopyReveals) {
                        self.copy_reveal(&r).await;
                    }
                    self.on_reveal(*r, Instant::now());
                }
                GossipMessage::Vote(v) => self.on_vote(*v),
                GossipMessage::Evidence(e) => self.production.add_evidence(*e),
                // Admitted into the pool by the gossip check; included by our blocks.
                GossipMessage::FinalityVote(_) => {}
                GossipMessage::FinalityEvidence(e) => self.production.add_finality_evidence(*e),
            },
            _ => {}
        }
    }

    pub(super) fn on_block(&mut self, compact: CompactBlock, from: PeerId) {
        let (tip, height) = {
            let s = self.store.lock();
            (s.tip().tip().hash, s.tip().height())
        };
        let mempool = &self.mempool;
        let production = &self.production;
        // Certificates we assembled ourselves from the same votes have the same id: most work
        // blocks rebuild without fetching their bodies.
        let certs: HashMap<Hash, &Certificate> = if compact.cert_ids.is_empty() {
            HashMap::new()
        } else {
            production.certs().map(|c| (c.cert.id(), &c.cert)).collect()
        };
        match compact.rebuild(
            |id| mempool.get(id),
            |id| production.pooled_commit(id).cloned(),
            |id| certs.get(id).map(|c| (*c).clone()),
        ) {
            Ok(block) if compact.header.parent_hash == tip => {
                let mut sink = self.store.clone();
                if let Err(e) = sink.import(block) {
                    tracing::debug!(error = %e, "gossiped block refused");
                }
            }
            _ if compact.header.height > height || compact.header.parent_hash == tip => self.spawn_sync(from),
            _ => {}
        }
    }

    pub(super) fn spawn_sync(&self, peer: PeerId) {
        if !self.syncing.lock().map(|mut s| s.insert(peer)).unwrap_or(false) {
            return;
        }
        let (handle, mut sink, syncing) = (self.net.clone(), self.store.clone(), self.syncing.clone());
        tokio::spawn(async move {
            sync_logged(&handle, peer, &mut sink).await;
            if let Ok(mut s) = syncing.lock() {
                s.remove(&peer);
            }
        });
    }

    pub(super) fn poll_peers(&mut self) {
        let (handle, genesis) = (self.net.clone(), self.store.lock().genesis_hash());
        let (sink, syncing, bootstrap) = (self.store.clone(), self.syncing.clone(), self.bootstrap.clone());
        let live = self.live.clone();
        self.polls = self.polls.wrapping_add(1);
        let redial_due = self.polls.is_multiple_of(REDIAL_POLLS);
        tokio::spawn(async move {
            let peers = handle.peers().await.unwrap_or_default();
            if let Ok(mut l) = live.write() {
                l.peers = peers.iter().map(ToString::to_string).collect();
            }
            // Bootstrap peers that were not up when we started, or whose connections a network
            // partition closed (the rest of the network stays connected, so waiting for zero
            // peers would keep the two sides apart after the link heals): dial them again.
            if peers.is_empty() || (redial_due && peers.len() < bootstrap.len()) {
                for addr in bootstrap {
                    let _ = handle.dial(addr).await;
                }
                if peers.is_empty() {
                    return;
                }
            }
            let (best, mut other) = best_peer(&handle, &peers, genesis, Duration::from_secs(2)).await;
            other.truncate(64);
            if let Ok(mut l) = live.write() {
                l.network_height = best.as_ref().map(|(_, s)| s.height);
                for (peer, theirs) in &other {
                    if !l.other_genesis.iter().any(|(p, _)| *p == peer.to_string()) {
                        tracing::warn!(%peer, genesis = %theirs, ours = %genesis, "a peer is on another network: every machine must start from the same genesis.json");
                        println!("peer {peer} is on another network: its genesis {theirs}, ours {genesis}");
                    }
                }
                l.other_genesis = other.iter().map(|(p, g)| (p.to_string(), g.to_string())).collect();
            }
            let Some((peer, status)) = best else {
                return;
            };
            if !doin_net::sync::is_ahead(&status, &BlockSink::status(&sink)) {
                return;
            }
            if !syncing.lock().map(|mut s| s.insert(peer)).unwrap_or(false) {
                return;
            }
            let mut sink = sink;
            sync_logged(&handle, peer, &mut sink).await;
            if let Ok(mut s) = syncing.lock() {
                s.remove(&peer);
            }
        });
    }

    /// What a block or a commit may call for at once: the new tip's consequences, our reveals
    /// whose commits it sealed, and a block if we lead the seal slot.
    pub(super) async fn react(&mut self) {
        self.on_tip();
        let state = self.tip_state();
        self.anchor(&state).await;
        self.release_reveals(&state).await;
        self.produce().await;
    }

    /// A commit is done (certified, or its certificate refused for good): forget its pipeline
    /// state, and remember it so a late copy of its messages is not processed again.
    pub(super) fn forget(&mut self, id: Hash) {
        self.gossip.settle(&id);
        self.verification.forget(id);
    }

    pub(super) async fn import_and_announce(&mut self, block: Block) {
        let h = &block.header.body;
        tracing::debug!(
            height = h.height,
            kind = ?h.kind,
            since_parent_ms = h.timestamp_ms.saturating_sub(self.tip_state().meta().timestamp_ms),
            commits = block.body.commits.len(),
            certificates = block.body.certificates.len(),
            "producing a block"
        );
        if let Err(e) = self.store.lock().import(&block) {
            tracing::warn!(error = %e, "own block refused by the store");
            return;
        }
        let compact = CompactBlock::of(&block);
        self.publish(Topic::Blocks, GossipMessage::Block(Box::new(compact))).await;
        self.on_tip();
    }

    /// Reacts to a new tip ([`Following::on_tip`]): prints it, injects new champions, pauses
    /// domains at their target.
    pub(super) fn on_tip(&mut self) {
        let (state, finalized) = {
            let s = self.store.lock();
            (s.tip().clone(), s.finalized())
        };
        let Some(news) = self.following.on_tip(&state, finalized) else { return };
        let tip = news.hash;
        self.recheck_quorums = true;
        self.gossip.set_state(state.clone());
        // Evidence the chain has used (or can no longer use) leaves the pool, and so do pooled
        // commits included on our chain or that never can be.
        self.production.on_tip(&state, Instant::now(), self.claim_deadline);
        if let Some(j) = news.justified {
            println!("justified {} {}", j.height, j.hash);
        }
        if let Some(f) = news.finalized {
            println!("finalized {} {}", f.height, f.hash);
            self.snapshots.on_finalized(&self.store, f.height);
            self.emit("finalized", None, json!({ "height": f.height, "hash": f.hash.to_string() }));
        }
        let block = self.store.lock().block(&tip).ok().flatten();
        let certs = block.as_ref().map_or(0, |b| b.body.certificates.len());
        println!("block {} {} work {} certs {certs}", state.height(), tip, state.meta().cumulative_work);
        self.emit(
            "block",
            None,
            json!({
                "height": state.height(),
                "hash": tip.to_string(),
                "kind": block.as_ref().map(|b| format!("{:?}", b.header.body.kind).to_lowercase()),
                "generator": block.as_ref().map(|b| b.header.body.generator.to_string()),
                "certificates": certs,
                "transactions": block.as_ref().map_or(0, |b| b.body.transactions.len()),
                "cumulative_work": state.meta().cumulative_work as f64 / doin_primitives::FIXED_ONE as f64,
            }),
        );
        self.track_chain(state.height());
        if let Some(block) = block {
            for t in block.body.transactions.iter() {
                self.mempool.remove(&t.id());
            }
            for c in block.body.certificates.iter() {
                let id = c.commit.id();
                // A certificate is a reveal, too: its parameters are taken.
                self.verification.certified(id, &c.reveal.body.params);
                self.gossip.settle(&id);
                // Our claim settled (champion or not): it stops barring the loop's next
                // candidates, whose bar is the champion again (a lucky measurement here must
                // not stall our optimizer).
                if self.claims.settled(&id).is_some() {
                    self.settle(c.commit.body.domain.as_str());
                }
            }
        }
        let targets: HashMap<doin_primitives::DomainId, bool> = news.targets.into_iter().collect();
        for (did, champion) in news.champions {
            let id = did.as_str().to_owned();
            let Some(rt) = self.domains.get_mut(&id) else { continue };
            let perf = champion.performance.to_f64();
            let model = match (champion.artifact, champion.model_quality) {
                (Some(a), Some(q)) => format!(" model {a} quality {}", q.to_f64()),
                (Some(a), None) => format!(" model {a} unmeasured"),
                _ => String::new(),
            };
            println!("champion {id} {perf} by {} at {}{model}", champion.optimizer, champion.height);
            self.events.emit(
                "champion",
                Some(id.as_str()),
                json!({
                    "performance": perf,
                    "optimizer": champion.optimizer.to_string(),
                    "commit": champion.commit.to_string(),
                    "height": champion.height,
                    "artifact": champion.artifact.map(|a| a.to_string()),
                    "model_quality": champion.model_quality.map(|q| q.to_f64()),
                }),
            );
            // A model this node serves is fetched now, not on the first request.
            if let (Some(artifact), Some(_)) = (champion.artifact, champion.model_quality)
                && rt.config.serve_inference
                && rt.domain.has_model()
            {
                let models = self.models.clone();
                tokio::spawn(async move {
                    if let Err(e) = models.fetch(artifact).await {
                        tracing::warn!(%artifact, error = %e, "could not fetch the champion's model yet");
                    }
                });
            }
            // The champion's parameters, from its certificate on chain.
            let params = {
                let s = self.store.lock();
                s.certificate_location(&champion.commit).ok().flatten().and_then(|(block, i)| {
                    s.block(&block).ok().flatten().and_then(|b| {
                        b.body.certificates.get(i as usize).map(|c| c.reveal.body.params.to_vec())
                    })
                })
            };
            let loss = if rt.domain.higher_is_better() { -perf } else { perf };
            if let Some(params) = params {
                let values = rt.domain.space().from_params(&params);
                rt.champion_values = Some(values.clone());
                if let Some(ctl) = &rt.control {
                    let by = (champion.optimizer != self.me).then_some(champion.optimizer);
                    let _ = ctl.try_send(Control::Champion { values, verified: loss, by });
                }
            }
            let Some(&reached) = targets.get(&did) else { continue };
            if reached {
                let claimed_after =
                    rt.claims_seen_at.iter().find(|(c, _)| *c == champion.commit).map(|(_, n)| *n);
                let spent = rt.evaluations.by_purpose();
                let shared = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                println!(
                    "target {id} reached {perf} at height {} claimed_after {} evaluations {} {} \
                     shared_received {} shared_used {} shared_published {}",
                    state.height(),
                    claimed_after.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    rt.evaluations.total(),
                    spent.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(" "),
                    shared(&rt.sharing.received),
                    shared(&rt.sharing.used),
                    shared(&rt.sharing.published),
                );
                self.events.emit(
                    "target",
                    Some(id.as_str()),
                    json!({
                        "performance": perf,
                        "height": state.height(),
                        "evaluations": rt.evaluations.total(),
                        "spent": spent.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                        "claimed_after": claimed_after,
                    }),
                );
            }
            rt.target_reached = reached;
            rt.sync_pause();
        }
        // Reveals that waited for their commit's seal: look again now it may be here.
        for commit in self.verification.take_awaiting() {
            self.consider(commit);
        }
        // Forget pipeline state of commits whose reference block left the window
        // ([`commit_alive`]).
        let (now, grace) = (Instant::now(), self.claim_deadline);
        let alive = |id: &Hash, c: &Commit, at: Instant| commit_alive(&state, id, c, at, now, grace);
        self.verification.retain(alive);
    }
}

/// One bounded sync from `peer`; a failure is logged with its reason (a node that stays behind
/// while connected must say why).
async fn sync_logged(handle: &doin_net::NetworkHandle, peer: PeerId, sink: &mut SharedStore) {
    match tokio::time::timeout(Duration::from_secs(10), sync_from(handle, peer, sink)).await {
        Ok(Ok(report)) if report.imported > 0 => {
            tracing::debug!(%peer, imported = report.imported, common = report.common, "synced");
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%peer, %error, "sync failed"),
        Err(_) => tracing::warn!(%peer, "sync timed out after 10 s"),
    }
}
