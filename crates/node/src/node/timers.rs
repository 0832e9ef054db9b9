//! The periodic step: evidence, finality votes, quorum participation, reveals, deadlines and
//! escalations, then block production.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) async fn on_tick(&mut self) {
        let state = self.tip_state();
        self.refresh_live(&state);

        // Double votes the gossip checks caught: slash them through our blocks and gossip the
        // evidence so that every producer can.
        for evidence in self.gossip.take_evidence() {
            let e = &evidence.first.body;
            println!("double vote by {} on {} round {}", e.evaluator, e.commit, e.round);
            self.emit(
                "double_vote",
                None,
                json!({ "evaluator": e.evaluator.to_string(), "commit": e.commit.to_string(), "round": e.round }),
            );
            self.production.add_evidence(evidence.clone());
            self.publish(Topic::Blocks, GossipMessage::Evidence(Box::new(evidence))).await;
        }

        self.finality_step(&state).await;
        self.participation_step(&state).await;
        self.release_reveals(&state).await;
        let now = Instant::now();
        // Optimizer loops that waited long enough for peers start alone.
        let expired: Vec<String> = self
            .domains
            .iter()
            .filter(|(_, rt)| rt.waiting_for_peers.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for domain in expired {
            self.stop_waiting(&domain, None);
        }
        // Our claims that never settled (lost, or their certificate refused) stop barring.
        for (id, domain) in self.claims.expire(Instant::now(), self.claim_deadline) {
            tracing::info!(commit = %id, domain, "own claim unsettled past the deadline");
            self.settle(&domain);
        }
        // Held reports whose rival settled (or that were held long enough) are looked at again.
        // The record is taken out while the engine answers for each report (`standing_of`
        // does not read it).
        let mut claims = std::mem::replace(&mut self.claims, OwnClaims::new(0));
        let release = claims.release_held(|domain, f, since| {
            let id = Self::domain_id(domain);
            let Some(spec) = state.domain(&id).map(|d| &d.spec) else { return true };
            since.elapsed() >= hold_cap(self.quorum_timeout, spec)
                || Metric::from_f64(f.measurement.performance)
                    .is_none_or(|c| self.standing_of(&id, spec, c) != Standing::Behind)
        });
        self.claims = claims;
        for (f, since) in release {
            self.on_found(f, Some(since)).await;
        }
        // Quorums that ran out of time escalate; on a new tip, every pending one is looked at
        // (a member may have left the domain's quorums).
        let recheck = std::mem::take(&mut self.recheck_quorums);
        // Our escalated claims: lost once too few of their members are left to decide.
        let due = self.verification.due(
            &state,
            recheck,
            Instant::now(),
            |k| self.production.has_cert(k),
            self.claims.pending().copied(),
        );
        for commit in due {
            self.try_certify(commit);
        }
        self.rounds_step(&state).await;
        self.channels_step(&state).await;
        self.disputes_step(&state).await;
        self.produce().await;
    }
}
