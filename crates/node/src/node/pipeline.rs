//! The verification pipeline: commits and reveals seen, quorum evaluations run, votes
//! gathered, certificates assembled (with escalation), double votes caught.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) fn on_commit(&mut self, commit: Commit) {
        if !self.domains.contains_key(commit.body.domain.as_str()) {
            return;
        }
        let id = commit.id();
        let (domain, optimizer, claimed) =
            (commit.body.domain.to_string(), commit.body.optimizer, commit.body.claimed);
        // Seen before or settled: nothing new.
        let Some(overtaken) = self.intake.commit(commit, Instant::now()) else { return };
        self.note_claim_seen(&domain, id);
        self.emit(
            "commit",
            Some(domain.as_str()),
            json!({ "commit": id.to_string(), "optimizer": optimizer.to_string(), "claimed": claimed.to_f64() }),
        );
        // A reveal that overtook its commit waited for it.
        if let Some(reveal) = overtaken {
            self.consider(reveal);
        }
    }

    /// Remembers how many candidates our loop had evaluated when a commit first reached us
    /// (bounded; the count at the claim, not at its certificate).
    fn note_claim_seen(&mut self, domain: &str, id: Hash) {
        let Some(rt) = self.domains.get_mut(domain) else { return };
        if rt.claims_seen_at.len() >= MAX_SEEN_CLAIMS {
            rt.claims_seen_at.pop_front();
        }
        rt.claims_seen_at.push_back((id, rt.evaluations.load(Ordering::Relaxed)));
    }

    pub(super) fn on_reveal(&mut self, reveal: Reveal, at: Instant) {
        let commit = reveal.body.commit;
        let optimizer = reveal.body.optimizer;
        // First revealer wins: the intake records the first reveal to carry these parameters,
        // in arrival order, even before its commit is here or its timing checked (and even
        // when its certificate overtook it), so a later copy never gets evaluated.
        let ready = match self.intake.reveal(reveal.clone(), at) {
            RevealIn::Old => return,
            RevealIn::Waiting => false,
            RevealIn::Ready => true,
        };
        let domain = self.domain_of(&commit);
        self.emit(
            "reveal",
            domain.as_deref(),
            json!({ "commit": commit.to_string(), "optimizer": optimizer.to_string() }),
        );
        if ready {
            self.consider(reveal);
        }
    }

    /// The domain of a commit pending here or admitted by the gossip checks.
    pub(super) fn domain_of(&self, commit: &Hash) -> Option<String> {
        self.intake
            .commit_of(commit)
            .map(|c| c.commit.body.domain.to_string())
            .or_else(|| self.gossip.domain_of(commit))
    }

    /// Checks a reveal and, when this node is in the quorum, starts evaluating it.
    pub(super) fn consider(&mut self, reveal: Reveal) {
        let commit_id = reveal.body.commit;
        match self.intake.opening(&commit_id) {
            Opening::Missing => return,
            Opening::NotOpening => {
                tracing::info!(commit = %commit_id, "reveal does not open its commit; ignored");
                return;
            }
            Opening::Copy { first } => {
                tracing::info!(commit = %commit_id, first = %first, "parameters already revealed by an earlier commit; not evaluated");
                return;
            }
            Opening::Open => {}
        }
        let Some(commit) = self.intake.commit_of(&commit_id).map(|s| s.commit.clone()) else { return };
        let body = &reveal.body;
        let domain = commit.body.domain.to_string();
        let state = self.tip_state();
        let Some(spec) = state.domain(&commit.body.domain).map(|d| d.spec.clone()) else { return };
        if let Err(e) = certs::check_params(&spec, &body.params) {
            tracing::info!(commit = %commit_id, error = %e, "reveal out of bounds; ignored");
            return;
        }
        if spec.trusted() {
            self.try_certify(commit_id);
            return;
        }
        let Some(q) = quorums_of(&state, &commit) else {
            // The optimizer reveals once its commit is sealed on its chain; the sealing block
            // may not have reached us yet: look again when our tip moves (the reveal is already
            // recorded as the first of its parameters, so a copy cannot jump the queue).
            if self.intake.await_seal(commit_id) {
                tracing::debug!(commit = %commit_id, "commit not sealed on our chain yet; waiting for it");
            }
            return;
        };
        if q.first.is_empty() {
            if self.warn_once_a_minute(&format!("no-evaluators/{domain}")) {
                tracing::warn!(domain, "no eligible evaluators: this domain cannot accept optimae");
            }
            return;
        }
        if q.first.contains(&self.me) {
            self.start_evaluation(&commit, &reveal, 0, &spec);
        }
        self.try_certify(commit_id);
    }

    /// Evaluates a revealed candidate in the worker pool (round 0: first quorum; 1: escalation).
    pub(super) fn start_evaluation(
        &mut self,
        commit: &Commit,
        reveal: &Reveal,
        round: u8,
        spec: &doin_primitives::DomainSpec,
    ) {
        let commit_id = commit.id();
        let Some(rt) = self.domains.get(commit.body.domain.as_str()) else { return };
        if !rt.config.evaluate || !self.evaluating.insert((commit_id, round)) {
            return;
        }
        // The round's seed group's data: a member drawn again for the escalation measures on
        // its escalation group's data (shared with other members, so that they check it).
        let Some(seed) = member_seed(&self.tip_state(), commit, round, &self.me) else { return };
        let domain_impl = rt.domain.clone();
        let values = domain_impl.space().from_params(&reveal.body.params);
        let limits = spec.limits;
        if rt.config.external_evaluation {
            let task = doin_api::tasks::Task {
                task_id: format!("{commit_id}:{round}"),
                kind: doin_api::tasks::TaskKind::Verification,
                domain: commit.body.domain.to_string(),
                commit: commit_id.to_string(),
                round,
                params: values.iter().map(|v| v.as_f64()).collect(),
                seed: hex::encode(seed.0),
                limits: serde_json::json!({
                    "max_wall_s": limits.max_wall_ms as f64 / 1000.0,
                    "max_epochs": limits.max_epochs,
                    "max_memory_mb": limits.max_memory_mb,
                }),
                lease_s: None,
                inputs: None,
            };
            if let Ok(mut q) = self.tasks.lock()
                && q.push(task).is_err()
            {
                tracing::warn!(commit = %commit_id, "task queue full; assignment dropped");
            }
            return;
        }
        let (slots, tx, nanos, health) =
            (self.eval_slots.clone(), self.measured_tx.clone(), self.eval_nanos.clone(), rt.health.clone());
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else { return };
            let result = tokio::task::spawn_blocking(move || {
                // CPU time of this thread, not wall time: on a busy machine an evaluation waits
                // for the CPU, and wall time would overstate verification's share.
                let started = doin_tracking::thread_cpu_nanos();
                let _account = Defer(move || {
                    nanos.fetch_add(
                        doin_tracking::thread_cpu_nanos().saturating_sub(started),
                        Ordering::Relaxed,
                    );
                });
                let budget = Budget {
                    deadline: Instant::now() + Duration::from_millis(limits.max_wall_ms),
                    max_epochs: limits.max_epochs,
                    max_memory_bytes: u64::from(limits.max_memory_mb) << 20,
                };
                domain_impl.evaluate(&values, Some(&seed), budget).map_err(|e| e.to_string()).and_then(|m| {
                    Metric::from_f64(m.performance).ok_or_else(|| "performance out of range".to_owned())
                })
            })
            .await
            .unwrap_or_else(|e| Err(format!("evaluation panicked: {e}")));
            match &result {
                Ok(_) => health.ok(),
                Err(e) => health.failed(e),
            }
            let _ = tx.send(Measured { commit: commit_id, round, seed, result }).await;
        });
    }

    pub(super) async fn on_measured(&mut self, m: Measured) {
        match m.result {
            Ok(measured) => {
                let vote = Signed::sign(
                    VoteBody {
                        commit: m.commit,
                        evaluator: self.me,
                        round: m.round,
                        measured,
                        data_hash: Hash::of(&m.seed.0),
                    },
                    &self.key,
                );
                let domain = self
                    .intake
                    .commit_of(&m.commit)
                    .map(|c| c.commit.body.domain.to_string())
                    .unwrap_or_default();
                println!("vote {domain} {} {} round {}", m.commit, measured.to_f64(), m.round);
                self.publish(Topic::Optimae(domain.clone()), GossipMessage::Vote(Box::new(vote.clone())))
                    .await;
                #[cfg(feature = "adversary")]
                if self.adversary == Some(Adversary::DoubleVote) {
                    self.double_vote(&vote, domain).await;
                }
                self.on_vote(vote);
            }
            Err(e) => {
                tracing::warn!(commit = %m.commit, round = m.round, error = %e, "evaluation failed; no vote");
            }
        }
    }

    pub(super) fn on_vote(&mut self, vote: Vote) {
        let commit = vote.body.commit;
        if !self.tallies.contains_key(&commit) && self.tallies.len() >= MAX_PENDING {
            return;
        }
        let b = &vote.body;
        let (round, evaluator, measured) = (b.round, b.evaluator, b.measured);
        let event = json!({
            "commit": commit.to_string(),
            "evaluator": evaluator.to_string(),
            "measured": measured.to_f64(),
            "round": round,
        });
        if !self.tallies.entry(commit).or_default().add(round, evaluator, measured, vote, Instant::now()) {
            return;
        }
        let domain = self.domain_of(&commit);
        self.events.emit("vote", domain.as_deref(), event);
        self.try_certify(commit);
    }

    /// Assembles the certificate once every first-round vote is in.
    pub(super) fn try_certify(&mut self, commit_id: Hash) {
        // In-memory checks first: a reveal without its commit (anyone can gossip one) costs a
        // map lookup, not a store read, each time the pending reveals are looked at again.
        let (Some(seen), Some((reveal, revealed_at))) =
            (self.intake.commit_of(&commit_id), self.intake.reveal_of(&commit_id))
        else {
            return;
        };
        if self.production.has_cert(&commit_id)
            || self.store.lock().certificate_location(&commit_id).ok().flatten().is_some()
        {
            return;
        }
        let revealed_at = *revealed_at;
        // A copy (these parameters were revealed first under another commit) is never
        // certified by this node, in the first round or in an escalation.
        if self.intake.is_copy(&commit_id) {
            return;
        }
        let commit = seen.commit.clone();
        let state = self.tip_state();
        let Some(spec) = state.domain(&commit.body.domain).map(|d| d.spec.clone()) else { return };
        if spec.trusted() {
            // Trusted mode: the claim is the certificate's figure, no quorum is asked.
            let cert = Certificate {
                commit: commit.clone(),
                reveal: reveal.clone(),
                votes: BoundedVec::default(),
                escalation: BoundedVec::default(),
                outcome: Outcome::Accept,
            };
            println!(
                "certificate {} {commit_id} Accept trusted {}",
                commit.body.domain,
                commit.body.claimed.to_f64()
            );
            // Pending trusted claims this one matches or beats would only land as late: drop them.
            let domain = commit.body.domain.clone();
            let claimed = commit.body.claimed;
            self.production.retain_certs(|c| {
                c.cert.commit.body.domain != domain
                    || spec.direction.gain(claimed, c.cert.commit.body.claimed).is_none_or(|g| g < 0)
            });
            self.emit_certificate(&cert, claimed, true);
            self.production
                .add_cert(commit_id, ReadyCert { cert, ready_at: Instant::now(), median: claimed });
            self.poked = true;
            return;
        }
        let Some(q) = quorums_of(&state, &commit) else { return };
        let round = tally::Round {
            first: &q.first,
            escalation: &q.escalation,
            spec: &spec,
            revealed_at,
            quorum_timeout: self.quorum_timeout,
        };
        let domain = commit.body.domain.clone();
        let tally = self.tallies.entry(commit_id).or_default();
        let (median, votes, escalation) =
            match tally.decide(&round, Instant::now(), |a| evaluates(&state, a, &domain)) {
                tally::Decision::Wait => return,
                tally::Decision::Certify { median, first, escalation } => (median, first, escalation),
                tally::Decision::Escalate(why) => {
                    // Disagreement or a missing vote: a larger quorum decides by quorum_fraction.
                    let voted = q.first.iter().filter(|a| tally.voted(0, a)).count();
                    let text = match why {
                        tally::Why::Disagreeing => "disagreeing",
                        tally::Why::MemberLeft => "a member left the domain's quorums",
                        tally::Why::TimedOut => "timed out",
                    };
                    println!(
                        "escalate {domain} {commit_id} ({voted} of {} first-round votes, {text})",
                        q.first.len()
                    );
                    self.emit(
                        "escalation",
                        Some(domain.as_str()),
                        json!({
                            "commit": commit_id.to_string(),
                            "votes": voted,
                            "quorum": q.first.len(),
                            "reason": why.as_str(),
                        }),
                    );
                    if q.escalation.contains(&self.me) {
                        let reveal = reveal.clone();
                        self.start_evaluation(&commit, &reveal, 1, &spec);
                    }
                    return;
                }
                tally::Decision::Undecidable => {
                    // Too few members are left to decide: our own claim is lost now rather than
                    // at the claim deadline, and the optimizer claims again — other parameters:
                    // these were revealed, and a parameter set belongs to its first revealer (a
                    // new commit draws its quorum from evaluators that can evaluate).
                    if let Some(domain) = self.claims.settled(&commit_id) {
                        println!(
                            "claim lost {domain} {commit_id} (escalation members left the domain's quorums)"
                        );
                        self.settle(&domain);
                    }
                    return;
                }
            };
        let outcome = certs::outcome(&spec, commit.body.claimed, median).unwrap_or(Outcome::Reject);
        let cert = Certificate {
            commit: commit.clone(),
            reveal: reveal.clone(),
            votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
            escalation: BoundedVec::try_from_vec(escalation).unwrap_or_default(),
            outcome,
        };
        let mine = commit.body.optimizer == self.me;
        if let Some(at) = self.claims.committed_at(&commit_id).filter(|_| mine) {
            if self.cert_latency_ms.len() >= 4096 {
                self.cert_latency_ms.pop_front();
            }
            self.cert_latency_ms.push_back(at.elapsed().as_millis() as u64);
        }
        println!("certificate {} {commit_id} {outcome:?} median {}", commit.body.domain, median.to_f64());
        self.emit_certificate(&cert, median, false);
        let ready_at = Instant::now() + OTHERS_GRACE;
        self.production.add_cert(commit_id, ReadyCert { cert, ready_at, median });
        self.poked = true;
        if let Ok(mut q) = self.tasks.lock() {
            q.remove(&format!("{commit_id}:0"));
            q.remove(&format!("{commit_id}:1"));
        }
    }

    /// Whether the escalation of `commit` could no longer decide (at `state`): fewer of its
    /// members have voted or are still staked evaluators of the domain than it needs.
    pub(super) fn undecidable(
        &self,
        state: &State,
        commit: &Hash,
        q: &quorum::Quorums,
        spec: &DomainSpec,
    ) -> bool {
        let Some(domain) = self.intake.commit_of(commit).map(|c| c.commit.body.domain.clone()) else {
            return false;
        };
        let round = tally::Round {
            first: &q.first,
            escalation: &q.escalation,
            spec,
            revealed_at: Instant::now(),
            quorum_timeout: self.quorum_timeout,
        };
        let none = tally::Tally::default();
        self.tallies.get(commit).unwrap_or(&none).undecidable(&round, |a| evaluates(state, a, &domain))
    }

    /// Whether the first round of `commit` (revealed at `revealed_at`) timed out.
    pub(super) fn votes_missing(&self, commit: &Hash, revealed_at: Instant, spec: &DomainSpec) -> bool {
        let round = tally::Round {
            first: &[],
            escalation: &[],
            spec,
            revealed_at,
            quorum_timeout: self.quorum_timeout,
        };
        let none = tally::Tally::default();
        self.tallies.get(commit).unwrap_or(&none).timed_out(&round, Instant::now())
    }
}
