//! Leaving and rejoining the quorums of domains this node cannot (or can again) evaluate: the
//! probes and the stake transactions (`crate::participation` decides).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Leaves the quorums of domains this node cannot evaluate, rejoins them once it can, and
    /// runs the probes that tell ([`participation`]).
    pub(super) async fn participation_step(&mut self, state: &State) {
        // While syncing, the tip says nothing about our stake now (nor our next nonce).
        if self.syncing.lock().is_ok_and(|s| !s.is_empty()) {
            return;
        }
        let now = Instant::now();
        let stake = state.stake(&self.me);
        let mut record = false;
        let mut actions = Vec::new();
        for (id, rt) in &mut self.domains {
            if !rt.config.evaluate || rt.config.external_evaluation {
                continue;
            }
            if let Some(outcome) = rt.probe.lock().ok().and_then(|mut p| p.take()) {
                rt.participation.probed(now, outcome);
            }
            let on_chain = stake.is_some_and(|s| s.evaluates(&Self::domain_id(id)));
            let pending = rt.stake_tx.is_some_and(|t| self.mempool.get(&t).is_some());
            let left = rt.participation.left();
            if let Some(action) = rt.participation.step(now, rt.health.counts(), on_chain, pending) {
                actions.push((id.clone(), action));
            }
            record |= left != rt.participation.left();
            // Out of the domain (our stake no longer names it, for optimizing either): the
            // optimizer loop rests; the probes go on.
            rt.sync_pause();
        }
        for (id, action) in actions {
            match action {
                participation::Action::Probe => self.probe(&id, state),
                participation::Action::Withdraw | participation::Action::Rejoin => {
                    self.restake(&id, action, state).await
                }
            }
        }
        if record {
            let left =
                self.domains.iter().filter(|(_, rt)| rt.participation.left()).map(|(id, _)| id.clone());
            if let Err(e) = participation::save_left(&self.data_dir, &left.collect()) {
                tracing::warn!(error = %e, "could not record the quorums this node left");
            }
        }
    }

    /// Evaluates a known-good point of `domain` (the verified champion, or the centre of the
    /// space): can the domain evaluate at all?
    pub(super) fn probe(&self, domain: &str, state: &State) {
        let Some(rt) = self.domains.get(domain) else { return };
        let Some(spec) = state.domain(&Self::domain_id(domain)).map(|d| d.spec.clone()) else {
            // Not on chain (yet): nothing to evaluate for, nothing to leave.
            if let Ok(mut p) = rt.probe.lock() {
                *p = Some(Ok(()));
            }
            return;
        };
        let d = rt.domain.clone();
        let values =
            rt.champion_values.clone().unwrap_or_else(|| d.space().decode(&vec![0.5; d.space().len()]));
        let (done, health, name) = (rt.probe.clone(), rt.health.clone(), domain.to_owned());
        // Not behind the worker pool (`eval_slots`): the probe judges the quorum evaluations
        // queued there, and waiting behind dozens of them (each restarting a dying plugin)
        // delayed the verdict past their own timeouts. One probe per domain runs at a time
        // (`Participation` waits for its outcome), so this adds one evaluation per domain.
        tokio::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || {
                let budget = Budget {
                    // Room for an evaluation already holding the plugin (our own optimizer's)
                    // before ours: a probe that timed out waiting proves nothing.
                    deadline: Instant::now()
                        + Duration::from_millis(spec.limits.max_wall_ms.saturating_mul(2))
                        + Duration::from_secs(10),
                    max_epochs: spec.limits.max_epochs,
                    max_memory_bytes: u64::from(spec.limits.max_memory_mb) << 20,
                };
                // On evaluator data (a seed), the path quorum seats need.
                match d.evaluate(&values, Some(&Hash::of(b"doin/probe")), budget) {
                    Ok(m) if m.performance.is_finite() => Ok(()),
                    Ok(m) => {
                        Err((None, format!("probe measured a non-finite performance ({})", m.performance)))
                    }
                    Err(doin_optimize::domain::EvalError::Unavailable(wait, why)) => Err((Some(wait), why)),
                    Err(e) => Err((None, e.to_string())),
                }
            })
            .await
            .unwrap_or_else(|e| Err((None, format!("probe panicked: {e}"))));
            let outcome = outcome.map_err(|(wait, error)| {
                tracing::warn!(domain = %name, error = %error, "probe of a known-good point failed");
                health.failed(&error);
                wait
            });
            if let Ok(mut p) = done.lock() {
                *p = Some(outcome);
            }
        });
    }

    /// Stakes again (a zero top-up: the bond stays) with the domains this node can evaluate:
    /// `action` leaves or rejoins `domain`'s quorums.
    pub(super) async fn restake(&mut self, domain: &str, action: participation::Action, state: &State) {
        let Some(stake) = state.stake(&self.me) else { return };
        let mut domains: Vec<doin_primitives::DomainId> = stake
            .domains
            .iter()
            .filter(|d| self.domains.get(d.as_str()).is_none_or(|rt| rt.participation.in_stake()))
            .cloned()
            .collect();
        for (id, rt) in &self.domains {
            let id = Self::domain_id(id);
            if rt.participation.rejoining() && !domains.contains(&id) {
                domains.push(id);
            }
        }
        let Ok(domains) = BoundedVec::try_from_vec(domains) else {
            tracing::warn!(domain, "cannot rejoin: the stake names the most domains it may");
            return;
        };
        let kind = doin_primitives::TxKind::Stake {
            amount: doin_primitives::Amount::ZERO,
            roles: stake.roles,
            domains,
            preferences: stake.capabilities.clone(),
        };
        let tx = self.own_tx(state, kind);
        let id = tx.id();
        if let Err(e) = self.mempool.insert(tx.clone(), state) {
            tracing::warn!(domain, error = %e, "stake transaction refused by our own mempool");
            return;
        }
        self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        let Some(rt) = self.domains.get_mut(domain) else { return };
        rt.stake_tx = Some(id);
        let error = rt.health.last_error().unwrap_or_default();
        if action == participation::Action::Withdraw {
            tracing::warn!(domain, tx = %id, error = %error, "cannot evaluate the domain: leaving its quorums");
            println!("left quorums {domain}: {error}");
            self.emit("quorums_left", Some(domain), json!({ "tx": id.to_string(), "error": error }));
        } else {
            tracing::info!(domain, tx = %id, "evaluates the domain again: rejoining its quorums");
            println!("rejoined quorums {domain}");
            self.emit("quorums_rejoined", Some(domain), json!({ "tx": id.to_string() }));
        }
    }
}
