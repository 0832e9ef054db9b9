//! Bridges to the outside: what the HTTP API shows, live events, experiment tracking, and
//! submissions from the API.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Whether a warning that may repeat many times a second (keyed by `key`) is logged now:
    /// once a minute per key, saying how many were held back meanwhile. At most 1 024 keys.
    pub(super) fn warn_once_a_minute(&mut self, key: &str) -> bool {
        let now = Instant::now();
        if self.warned.len() >= 1024 && !self.warned.contains_key(key) {
            self.warned.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(60));
        }
        match self.warned.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < Duration::from_secs(60) => {
                *held += 1;
                false
            }
            Some((at, held)) => {
                if *held > 0 {
                    tracing::warn!(key, held_back = *held, "repeated warnings held back in the last minute");
                }
                *at = now;
                *held = 0;
                true
            }
            None => {
                self.warned.insert(key.to_owned(), (now, 0));
                true
            }
        }
    }

    pub(super) fn emit(&self, kind: &str, domain: Option<&str>, data: serde_json::Value) {
        self.events.emit(kind, domain, data);
    }

    /// The `certificate` event of an assembled certificate, decided by `verified`.
    pub(super) fn emit_certificate(&self, cert: &Certificate, verified: Metric, trusted: bool) {
        let commit = &cert.commit.body;
        self.emit(
            "certificate",
            Some(commit.domain.as_str()),
            json!({
                "commit": cert.commit.id().to_string(),
                "optimizer": commit.optimizer.to_string(),
                "outcome": format!("{:?}", cert.outcome),
                "claimed": commit.claimed.to_f64(),
                "verified": verified.to_f64(),
                "escalated": !cert.escalation.is_empty(),
                "trusted": trusted,
            }),
        );
    }

    /// A transaction from the HTTP API: admitted to the mempool and gossiped, or refused with
    /// the reason.
    pub(super) async fn on_submission(&mut self, sub: doin_api::Submission) {
        let state = self.tip_state();
        let id = sub.tx.id();
        let verdict = self.mempool.insert(sub.tx.clone(), &state).map(|()| id);
        if verdict.is_ok() {
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(sub.tx))).await;
        }
        let _ = sub.reply.send(verdict);
    }

    /// An external evaluator finished a task: the node signs the vote for its own account.
    pub(super) async fn on_completion(
        &mut self,
        task: doin_api::tasks::Task,
        done: doin_api::tasks::Completion,
    ) {
        let Some(commit) =
            self.verification.intake().commit_of(&hex_hash(&task.commit)).map(|c| c.commit.clone())
        else {
            tracing::info!(task = %task.task_id, "completed task's commit is gone; no vote");
            return;
        };
        let Some(seed) = member_seed(&self.tip_state(), &commit, task.round, &self.me) else {
            tracing::info!(task = %task.task_id, "completed task's commit is not sealed on our chain; no vote");
            return;
        };
        let performance = done.performance.unwrap_or(f64::NAN);
        let result = Metric::from_f64(performance).ok_or_else(|| "performance out of range".to_owned());
        tracing::info!(task = %task.task_id, performance, "external evaluation completed");
        self.on_measured(Measured { commit: commit.id(), round: task.round, seed, result, artifact: None })
            .await;
    }

    /// Refreshes what the HTTP API shows.
    pub(super) fn refresh_live(&self, state: &State) {
        let Ok(mut live) = self.live.write() else { return };
        live.refreshed_ms = doin_api::now_ms();
        live.mempool = self.mempool.len();
        live.pending_commitments =
            self.verification.intake().len().saturating_sub(self.production.certs().count());
        live.pending_quorums = self.verification.evaluating().count() + self.verification.escalations();
        let refused = self.gossip.refused();
        live.gossip_refused = (refused.rejected, refused.ignored);
        live.gossip_pending = self.gossip.pending();
        live.evidence_pending = self.production.evidence_pending();
        live.finality_votes_pending = self.gossip.finality_pooled();
        for (id, rt) in &self.domains {
            let ds = state.domain(&Self::domain_id(id));
            let best = ds.and_then(|d| d.champion.as_ref()).map(|c| c.performance.to_f64());
            live.domains.insert(
                id.clone(),
                doin_api::DomainStatus {
                    optimize: rt.config.optimize,
                    evaluate: rt.config.evaluate,
                    synthetic: rt.config.has_synthetic_data,
                    trusted: !rt.config.synthetic_data_validation,
                    target_performance: rt.config.target_performance,
                    best_performance: best,
                    converged: rt.target_reached,
                    evaluations: rt.evaluations.total(),
                    evaluations_by_purpose: rt
                        .evaluations
                        .by_purpose()
                        .iter()
                        .map(|(k, n)| ((*k).to_owned(), *n))
                        .collect(),
                    optimizer: rt
                        .config
                        .optimization_plugin
                        .clone()
                        .unwrap_or_else(|| crate::optimizer::DEFAULT_OPTIMIZER.into()),
                    running: rt.running.lock().map(|r| r.to_string()).unwrap_or_default(),
                    domain_plugin: rt.config.domain_plugin.clone(),
                    training: rt.last_found.clone(),
                    standing: rt.participation.standing().as_str().to_owned(),
                    evaluation_error: rt.health.last_error(),
                    shared_trials: {
                        let c = &rt.sharing;
                        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                        doin_api::SharedTrials {
                            enabled: rt.trials_in.is_some(),
                            received: n(&c.received),
                            used: n(&c.used),
                            checks_passed: n(&c.checks_passed),
                            senders_banned: n(&c.senders_banned),
                            checks: n(&c.checks),
                            vouched_senders: n(&c.vouched),
                            trusted_senders: n(&c.trusted),
                            published: n(&c.published),
                        }
                    },
                },
            );
        }
        live.evaluating = self
            .verification
            .evaluating()
            .map(|(commit, round)| {
                json!({
                    "commit": commit.to_string(),
                    "round": round,
                    "domain_id": self.verification.intake().commit_of(commit).map(|c| c.commit.body.domain.to_string()),
                })
            })
            .collect();
        let (cpu, rss) = process_usage();
        live.usage = (cpu, self.eval_nanos.load(Ordering::Relaxed) as f64 / 1e9, rss);
        live.plugins = doin_plugin::host::stats()
            .into_iter()
            .map(|(name, st)| {
                let mut v = serde_json::to_value(&st).unwrap_or_default();
                v["name"] = name.into();
                v
            })
            .collect();
    }

    /// A finished optimizer round: one tracking row, with the chain's view added.
    pub(super) fn on_round(&mut self, r: optimizer::RoundInfo) {
        let (Some(t), Some(rt)) = (&self.tracker, self.domains.get(&r.domain)) else { return };
        let state = self.tip_state();
        let peers = self.live.read().map(|l| l.peers.len()).unwrap_or(0);
        let earned = state.account(&self.me).balance.0.saturating_sub(self.start_balance) as f64 / 1e9;
        let json_values = |v: &[doin_optimize::Value]| doin_plugin::adapters::values_to_json(v).to_string();
        t.round(doin_tracking::Round {
            experiment_id: rt.experiment.0.clone(),
            round_number: r.round,
            timestamp_ms: now_ms(),
            performance: r.best.as_ref().map(|(_, m)| m.performance),
            best_performance: r.best_so_far.as_ref().map(|(_, p)| *p),
            parameters: r.best.as_ref().map(|(v, _)| json_values(v)).unwrap_or_default(),
            best_parameters: r.best_so_far.as_ref().map(|(v, _)| json_values(v)).unwrap_or_default(),
            converged: rt.target_reached,
            chain_height: state.height(),
            peers_count: peers as u64,
            block_reward_earned: earned,
            generation: r.round,
            stage: u64::from(r.stage),
            population_size: r.population as u64,
            no_improve_counter: r.no_improve,
            optimization_patience: rt
                .config
                .optimization_config
                .get("optimization_patience")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            avg_fitness: r.avg_performance,
            metrics: r.best.map(|(_, m)| m.metrics).unwrap_or_default(),
        });
    }

    /// Sends tracking the canonical chain's certificates from the first height whose block
    /// differs from what it recorded (a reorg replaces the orphaned rows).
    pub(super) fn track_chain(&mut self, tip_height: u64) {
        let Some(t) = &self.tracker else { return };
        let s = self.store.lock();
        let canonical = |h: u64| s.canonical_hash(h).ok().flatten();
        // At start: the last 2000 blocks (rows from earlier runs stay; these are rewritten).
        let mut from = self
            .tracked
            .last_key_value()
            .map_or(tip_height.saturating_sub(2000), |(h, _)| h + 1)
            .min(tip_height + 1);
        // Walk back over recorded blocks that are no longer canonical.
        while from > 0 {
            match self.tracked.get(&(from - 1)) {
                Some(hash) if canonical(from - 1) != Some(*hash) => from -= 1,
                _ => break,
            }
        }
        let mut rows = Vec::new();
        let mut contributions = Vec::new();
        let mut recorded = Vec::new();
        for h in from..=tip_height {
            let Some(hash) = canonical(h) else { break };
            recorded.push((h, hash));
            // Genesis (and a block whose receipt is pruned) has no certificates to record.
            let (Ok(Some(block)), Ok(Some(receipt))) = (s.block(&hash), s.receipt(&hash)) else { continue };
            contributions.extend(federated_rows(&s, h, &block, &receipt));
            for (i, (c, r)) in block.body.certificates.iter().zip(&receipt.certificates).enumerate() {
                let voters = r.agreeing.len() + r.outliers.len();
                rows.push(doin_tracking::ChainOptimae {
                    block_height: h,
                    block_hash: hash.to_string(),
                    cert_index: i as u32,
                    timestamp_ms: block.header.body.timestamp_ms,
                    commit_id: r.commit.to_string(),
                    domain_id: r.domain.clone(),
                    optimizer: r.optimizer.to_string(),
                    outcome: format!("{:?}", r.outcome),
                    reported_performance: r.claimed.to_f64(),
                    verified_performance: r.median.to_f64(),
                    improved: r.improved,
                    effective_increment: r.increment as f64 / doin_primitives::FIXED_ONE as f64,
                    quorum_agreement: if voters == 0 { 1.0 } else { r.agreeing.len() as f64 / voters as f64 },
                    reward: (r.optimizer_reward.0 + r.bounty_paid.0) as f64 / 1e9,
                    experiment_id: c.reveal.body.experiment.experiment_id.to_string(),
                    config_hash: c.reveal.body.experiment.config_hash.to_string(),
                    // As the cube's rounds hold them: decoded by the domain's space on chain.
                    parameters: s
                        .tip()
                        .domain(&Self::domain_id(&r.domain))
                        .map(|d| doin_optimize::Space::of(&d.spec))
                        .filter(|space| space.len() == c.reveal.body.params.len())
                        .map(|space| {
                            doin_plugin::adapters::values_to_json(&space.from_params(&c.reveal.body.params))
                                .to_string()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        drop(s);
        self.tracked.retain(|h, _| *h < from);
        self.tracked.extend(recorded);
        while self.tracked.len() > 256 {
            self.tracked.pop_first();
        }
        t.chain(from, rows, contributions);
    }
}

/// The `fact_federated_contribution` rows of a block: every contribution of each federated
/// round its transactions settled (a record paid at once, an audit vote that decided a round,
/// a record that settled an expired one), with the quality it was paid by and its payout.
fn federated_rows(
    s: &doin_storage::ChainStore,
    height: u64,
    block: &doin_primitives::Block,
    receipt: &doin_consensus::Receipt,
) -> Vec<doin_tracking::ChainContribution> {
    let mut out = Vec::new();
    for (i, r) in receipt.transactions.iter().enumerate() {
        for (k, settled) in r.settled.iter().enumerate() {
            let round = &settled.record;
            let max_wall_ms = s.tip().domain(&round.domain).map_or(u64::MAX, |d| d.spec.limits.max_wall_ms);
            for (j, c) in round.contributions.iter().enumerate() {
                let u = &c.update.body;
                // A contributor appears once in a round (consensus refuses a second receipt).
                let payout = settled.paid.iter().find(|(a, _)| *a == u.contributor).map_or(0, |(_, x)| x.0);
                out.push(doin_tracking::ChainContribution {
                    block_height: height,
                    block_hash: block.hash().to_string(),
                    tx_index: i as u32,
                    contribution_index: (k * doin_primitives::federated::MAX_ROUND_CONTRIBUTIONS + j) as u32,
                    timestamp_ms: block.header.body.timestamp_ms,
                    domain_id: round.domain.as_str().to_owned(),
                    round: round.round,
                    supervisor: settled.supervisor.to_string(),
                    contributor: u.contributor.to_string(),
                    quality: c.quality_micro as f64 / 1e6,
                    kept: c.kept,
                    compute_declared_ms: u.compute_ms,
                    compute_ms: u.compute_ms.min(max_wall_ms),
                    samples: u64::from(u.samples),
                    bytes: u.bytes,
                    uptime: f64::from(c.uptime_ppm) / 1e6,
                    payout: payout as f64 / 1e9,
                    model_hash: round.model.to_string(),
                });
            }
        }
    }
    out
}
