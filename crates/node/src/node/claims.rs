//! This node's own claims: optimizer reports committed (or held behind better claims in
//! flight), reveals released once sealed, claims settled.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Judges an optimizer's report ([`OwnClaims::judge`]; `held_since`: it was held behind
    /// others' claims since then) and publishes the commit, or tells the loop it settled.
    pub(super) async fn on_found(&mut self, f: Found, held_since: Option<Instant>) {
        let Some(rt) = self.domains.get_mut(&f.domain) else { return };
        let target_reached = rt.target_reached;
        if held_since.is_none() {
            rt.last_found = Some(json!({
                "performance": f.measurement.performance,
                "metrics": f.measurement.metrics,
                "evaluations": f.evaluations,
                "timestamp": doin_api::rfc3339(now_ms()),
            }));
        }
        if target_reached {
            self.settle(&f.domain);
            return;
        }
        let Some(rt) = self.domains.get(&f.domain) else { return };
        let params = BoundedVec::try_from_vec(rt.domain.space().to_params(&f.values)).ok();
        let experiment = poo::ExperimentMeta {
            experiment_id: doin_primitives::BoundedString::new(rt.experiment.0.as_str()).unwrap_or_default(),
            round: 0,
            config_hash: rt.experiment.1,
        };
        let state = self.tip_state();
        let id = Self::domain_id(&f.domain);
        let Some(spec) = state.domain(&id).map(|d| d.spec.clone()) else {
            self.settle(&f.domain);
            return;
        };
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let (domain, evaluations) = (f.domain.clone(), f.evaluations);
        // The judge asks the engine (intake, certificates, gossip checks) while the record
        // changes: it is taken out for the call (`standing_of` does not read it).
        let mut claims = std::mem::replace(&mut self.claims, OwnClaims::new(0));
        let decision = claims.judge(
            f,
            held_since,
            Judge {
                state: &state,
                key: &self.key,
                domain: &id,
                params,
                experiment,
                salt,
                taken: &|h| self.verification.intake().first_of(h).is_some(),
                standing: &|claimed| self.standing_of(&id, &spec, claimed),
                hold_cap: hold_cap(self.quorum_timeout, &spec),
            },
            Instant::now(),
        );
        self.claims = claims;
        match decision {
            Decision::Settled(why) => {
                tracing::debug!(domain, why, "report not committed");
                self.settle(&domain);
            }
            Decision::Held { first, claimed } => {
                if first {
                    self.emit("held", Some(domain.as_str()), json!({ "claimed": claimed.to_f64() }));
                }
                tracing::debug!(
                    domain,
                    claimed = claimed.to_f64(),
                    "a better claim is in verification; holding this one"
                );
            }
            Decision::Committed { commit, claimed, dropped, artifact } => {
                // The model the reveal names is served before the reveal is out (it waits for
                // the commit's seal): the quorum fetches it from here.
                if let Some(bytes) = artifact {
                    match self.models.put(bytes).await {
                        Ok(hash) => println!("model {domain} {hash} for commit {}", commit.id()),
                        Err(e) => tracing::warn!(domain, error = %e, "keeping the claim's model failed"),
                    }
                }
                println!(
                    "commit {domain} {} claimed {} after {evaluations} evaluations",
                    commit.id(),
                    claimed.to_f64()
                );
                for d in dropped {
                    self.settle(&d);
                }
                self.publish_commit(*commit).await;
            }
        }
    }

    /// Gossips our commit for inclusion (on the blocks topic: any seal leader may include it);
    /// its reveal waits in [`OwnClaims`] until the commit is sealed on our chain.
    pub(super) async fn publish_commit(&mut self, commit: Commit) {
        self.pool_commit(&commit);
        self.on_commit(commit.clone());
        self.publish(Topic::Blocks, GossipMessage::Commit(Box::new(commit))).await;
        self.poked = true;
    }

    /// Where `claimed` stands against the claims of `domain` this node knows ([`standing`]).
    /// In verification: another optimizer's commit with no certificate here yet, revealed less
    /// than [`hold_cap`] ago (and not a copy), or not yet revealed but still due.
    pub(super) fn standing_of(
        &self,
        domain: &doin_primitives::DomainId,
        spec: &doin_primitives::DomainSpec,
        claimed: Metric,
    ) -> Standing {
        let certified = self
            .production
            .certs()
            .filter(|c| c.cert.commit.body.domain == *domain && c.cert.outcome == Outcome::Accept)
            .map(|c| c.median);
        let cap = hold_cap(self.quorum_timeout, spec);
        let state = self.tip_state();
        let in_flight = self
            .verification
            .intake()
            .commits()
            .filter(|(id, seen)| {
                let body = &seen.commit.body;
                body.domain == *domain
                    && body.optimizer != self.me
                    // Only behind optimizers whose claims have verified (reputation left after
                    // their rejects): a stream of inflated claims from a liar or a newcomer
                    // holds no one.
                    && state.reputation(&body.optimizer, domain) > 0
                    && !self.production.has_cert(id)
                    && match self.verification.intake().reveal_of(id) {
                        Some((_, at)) => at.elapsed() < cap && !self.verification.intake().is_copy(id),
                        None => seen.at.elapsed() < self.seal_wait,
                    }
                    // Nor claims whose quorum lost too many members to ever decide.
                    && !self.verification.undecidable(&state, id)
            })
            .map(|(_, seen)| seen.commit.body.claimed);
        match standing(spec.direction, claimed, certified, in_flight) {
            // Our peers forward at most PER_ACCOUNT pending commits of ours: wait for one to
            // settle rather than commit one they would drop.
            Standing::Clear if self.gossip.pending_by(&self.me) >= crate::gossip_check::PER_ACCOUNT => {
                Standing::Behind
            }
            other => other,
        }
    }

    /// Starts `domain`'s optimizer loop if it was waiting for peers (`peer`: the one that
    /// subscribed to the domain's topic; `None`: the wait ran out).
    pub(super) fn stop_waiting(&mut self, domain: &str, peer: Option<PeerId>) {
        let Some(rt) = self.domains.get_mut(domain) else { return };
        if rt.waiting_for_peers.take().is_none() {
            return;
        }
        match peer {
            Some(peer) => {
                tracing::info!(domain, %peer, "enough peers listen on the domain's topic; optimizing")
            }
            None => tracing::warn!(
                domain,
                waited_s = PEER_WAIT.as_secs(),
                "no peer listens on the domain's topic; optimizing alone (claims may find no quorum)"
            ),
        }
        rt.sync_pause();
    }

    /// Tells `domain`'s optimizer loop that a claim of ours settled.
    pub(super) fn settle(&self, domain: &str) {
        if let Some(ctl) = self.domains.get(domain).and_then(|rt| rt.control.as_ref()) {
            let _ = ctl.try_send(Control::Settled);
        }
    }

    /// Gossips our reveals whose commits are sealed on our chain (their quorums are drawn);
    /// those whose commits never were within the claim deadline are dropped.
    pub(super) async fn release_reveals(&mut self, state: &State) {
        for reveal in self.claims.due_reveals(state, Instant::now(), self.claim_deadline) {
            // A commit forgotten meanwhile (certified, or its reference aged out) is not revealed.
            let Some(domain) = self.domain_of(&reveal.body.commit) else { continue };
            self.publish(Topic::Optimae(domain), GossipMessage::Reveal(Box::new(reveal.clone()))).await;
            self.on_reveal(reveal, Instant::now());
        }
    }
}
