//! This node's own claims: optimizer reports committed (or held behind better claims in
//! flight), reveals released once sealed, claims settled.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Commits an optimizer's report (`held_since`: it was held behind others' claims since
    /// then), holds it, or settles it when it cannot be committed.
    pub(super) async fn on_found(&mut self, f: Found, held_since: Option<Instant>) {
        // A newer report replaces the one held: the loop only reports improvements on it.
        let held_since = held_since.or_else(|| self.held.remove(&f.domain).map(|(_, since)| since));
        if let Some(rt) = self.domains.get_mut(&f.domain)
            && held_since.is_none()
        {
            rt.last_found = Some(json!({
                "performance": f.measurement.performance,
                "metrics": f.measurement.metrics,
                "evaluations": f.evaluations,
                "timestamp": doin_api::rfc3339(now_ms()),
            }));
        }
        let Some(rt) = self.domains.get(&f.domain) else { return };
        if rt.target_reached {
            self.settle(&f.domain);
            return;
        }
        let state = self.tip_state();
        let id = Self::domain_id(&f.domain);
        let Some(spec) = state.domain(&id).map(|d| d.spec.clone()) else {
            self.settle(&f.domain);
            return;
        };
        // Only commit what beats the verified champion (or the baseline); a report that is not
        // committed settles at once, so it does not bar the loop's next ones.
        let current = state
            .domain(&id)
            .and_then(|d| d.champion.as_ref().map(|c| c.performance))
            .unwrap_or(spec.baseline);
        let claimed = Metric::from_f64(f.measurement.performance)
            .filter(|c| certs::improves(&spec, current, *c, 0).unwrap_or(false));
        let params: Option<poo::Params> =
            BoundedVec::try_from_vec(rt.domain.space().to_params(&f.values)).ok();
        let (Some(claimed), Some(params)) = (claimed, params) else {
            self.settle(&f.domain);
            return;
        };
        // Near the optimum distinct candidates round to the same on-chain parameters. Those
        // already revealed (by anyone), or in a commit of ours not revealed yet, are never
        // committed again: evaluators evaluate only the first reveal of a parameter set, in
        // the order each saw them, so two commits of one set split the quorums between them
        // and neither completes (a 4-node devnet stalled on such a pair, everyone holding
        // behind it).
        let params_hash = crate::intake::params_hash(&params);
        if self.intake.first_of(&params_hash).is_some()
            || self.my_reveals.iter().any(|(_, r)| crate::intake::params_hash(&r.body.params) == params_hash)
        {
            tracing::debug!(
                domain = f.domain,
                "these parameters were committed already; not committed again"
            );
            self.settle(&f.domain);
            return;
        }
        // Verification is the network's cost of a claim: one that another optimizer's better
        // claim, now in verification, would likely make late waits for that claim's outcome
        // (bounded by `hold_cap`, so a claim that never settles holds no one for long).
        match self.standing_of(&id, &spec, claimed) {
            Standing::Clear => {}
            Standing::Beaten => {
                tracing::debug!(
                    domain = f.domain,
                    claimed = claimed.to_f64(),
                    "an accepted claim beats this report; not committed"
                );
                self.settle(&f.domain);
                return;
            }
            Standing::Behind => {
                let since = held_since.unwrap_or_else(Instant::now);
                if since.elapsed() < hold_cap(self.quorum_timeout, &spec) {
                    if held_since.is_none() {
                        self.emit("held", Some(f.domain.as_str()), json!({ "claimed": claimed.to_f64() }));
                    }
                    tracing::debug!(
                        domain = f.domain,
                        claimed = claimed.to_f64(),
                        "a better claim is in verification; holding this one"
                    );
                    self.held.insert(f.domain.clone(), (f, since));
                    return;
                }
                tracing::info!(
                    domain = f.domain,
                    held_s = since.elapsed().as_secs(),
                    "claim held past the cap; committing it"
                );
            }
        }
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let commit = Signed::sign(
            CommitBody {
                domain: id.clone(),
                optimizer: self.me,
                optimae_hash: poo::optimae_hash(&params, &salt, &self.me),
                claimed,
                reference_block: state.tip().hash,
            },
            &self.key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: self.me,
                params,
                salt,
                artifact: None,
                experiment: poo::ExperimentMeta {
                    experiment_id: doin_primitives::BoundedString::new(rt.experiment.0.as_str())
                        .unwrap_or_default(),
                    round: f.evaluations,
                    config_hash: rt.experiment.1,
                },
            },
            &self.key,
        );
        println!(
            "commit {} {} claimed {} after {} evaluations",
            f.domain,
            commit.id(),
            claimed.to_f64(),
            f.evaluations
        );
        if self.my_claims.len() >= MAX_PENDING {
            // Claims dropped from the record settle now (nothing would settle them later).
            let domains: HashSet<String> = self.my_claims.drain().map(|(_, (d, _))| d).collect();
            for d in domains {
                self.settle(&d);
            }
        }
        self.my_claims.insert(commit.id(), (f.domain.clone(), Instant::now()));
        self.publish_commit(commit, reveal).await;
    }

    /// Gossips our commit for inclusion (on the blocks topic: any seal leader may include it)
    /// and keeps its reveal until the commit is sealed on our chain.
    pub(super) async fn publish_commit(&mut self, commit: Commit, reveal: Reveal) {
        self.pool_commit(&commit);
        self.on_commit(commit.clone());
        self.publish(Topic::Blocks, GossipMessage::Commit(Box::new(commit))).await;
        self.my_reveals.push((Instant::now(), reveal));
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
            .intake
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
                    && match self.intake.reveal_of(id) {
                        Some((_, at)) => at.elapsed() < cap && !self.intake.is_copy(id),
                        None => seen.at.elapsed() < self.seal_wait,
                    }
                    // Nor claims whose quorum lost too many members to ever decide.
                    && !quorums_of(&state, &seen.commit).is_some_and(|q| self.undecidable(&state, id, &q, spec))
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

    /// Gossips our reveals whose commits are sealed on our chain (their quorums are drawn).
    pub(super) async fn release_reveals(&mut self, state: &State) {
        // Reveals whose commits are sealed on our chain (their quorums are drawn); those whose
        // commits never were within the claim deadline are dropped.
        let deadline = self.claim_deadline;
        let due: Vec<Reveal> = {
            let (due, keep): (Vec<_>, Vec<_>) =
                self.my_reveals.drain(..).partition(|(_, r)| quorum::sealed(state, &r.body.commit).is_some());
            self.my_reveals = keep.into_iter().filter(|(at, _)| at.elapsed() < deadline).collect();
            due.into_iter().map(|(_, r)| r).collect()
        };
        for reveal in due {
            let domain = self.domain_of(&reveal.body.commit);
            // A commit forgotten meanwhile (certified, or its reference aged out) is not revealed.
            let Some(domain) = domain else { continue };
            self.publish(Topic::Optimae(domain), GossipMessage::Reveal(Box::new(reveal.clone()))).await;
            self.on_reveal(reveal, Instant::now());
        }
    }
}
