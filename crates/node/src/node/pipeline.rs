//! The verification pipeline's shell: the decisions are [`crate::verification`]'s; here
//! commits, reveals and votes from gossip go in with the time, evaluations run in the worker
//! pool (or go to external evaluators as tasks), votes are signed and gossiped, certificates
//! go to the block producer, and everything is printed and emitted as events.

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
        let Some(overtaken) = self.verification.commit(commit, Instant::now()) else { return };
        self.note_claim_seen(&domain, id);
        self.emit(
            "commit",
            Some(domain.as_str()),
            json!({ "commit": id.to_string(), "optimizer": optimizer.to_string(), "claimed": claimed.to_f64() }),
        );
        // A reveal that overtook its commit waited for it.
        if overtaken.is_some() {
            self.consider(id);
        }
    }

    /// Remembers how many candidates our loop had evaluated when a commit first reached us
    /// (bounded; the count at the claim, not at its certificate).
    fn note_claim_seen(&mut self, domain: &str, id: Hash) {
        let Some(rt) = self.domains.get_mut(domain) else { return };
        if rt.claims_seen_at.len() >= MAX_SEEN_CLAIMS {
            rt.claims_seen_at.pop_front();
        }
        rt.claims_seen_at.push_back((id, rt.evaluations.total()));
    }

    pub(super) fn on_reveal(&mut self, reveal: Reveal, at: Instant) {
        let commit = reveal.body.commit;
        let optimizer = reveal.body.optimizer;
        // First revealer wins: the intake records the first reveal to carry these parameters,
        // in arrival order, even before its commit is here or its timing checked (and even
        // when its certificate overtook it), so a later copy never gets evaluated.
        let ready = match self.verification.reveal(reveal, at) {
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
            self.consider(commit);
        }
    }

    /// The domain of a commit pending here or admitted by the gossip checks.
    pub(super) fn domain_of(&self, commit: &Hash) -> Option<String> {
        self.verification
            .intake()
            .commit_of(commit)
            .map(|c| c.commit.body.domain.to_string())
            .or_else(|| self.gossip.domain_of(commit))
    }

    /// Considers a reveal ([`Verification::consider`]) and, when this node is in its quorum,
    /// starts evaluating it.
    pub(super) fn consider(&mut self, commit_id: Hash) {
        let state = self.tip_state();
        match self.verification.consider(&state, &commit_id) {
            Considered::Ignored(Ignored::Missing | Ignored::UnknownDomain) => {}
            Considered::Ignored(Ignored::NotOpening) => {
                tracing::info!(commit = %commit_id, "reveal does not open its commit; ignored");
            }
            Considered::Ignored(Ignored::Copy { first }) => {
                tracing::info!(commit = %commit_id, first = %first, "parameters already revealed by an earlier commit; not evaluated");
            }
            Considered::Ignored(Ignored::OutOfBounds(error)) => {
                tracing::info!(commit = %commit_id, error, "reveal out of bounds; ignored");
            }
            Considered::AwaitingSeal { first } => {
                if first {
                    tracing::debug!(commit = %commit_id, "commit not sealed on our chain yet; waiting for it");
                }
            }
            Considered::NoEvaluators => {
                let domain = self.domain_of(&commit_id).unwrap_or_default();
                if self.warn_once_a_minute(&format!("no-evaluators/{domain}")) {
                    tracing::warn!(domain, "no eligible evaluators: this domain cannot accept optimae");
                }
            }
            Considered::Checked { evaluate } => {
                if evaluate {
                    self.start_evaluation(&commit_id, 0);
                }
                self.try_certify(commit_id);
            }
        }
    }

    /// Evaluates a revealed candidate in the worker pool (round 0: first quorum; 1: escalation).
    pub(super) fn start_evaluation(&mut self, commit_id: &Hash, round: u8) {
        let state = self.tip_state();
        let Some(domain) = self.domain_of(commit_id) else { return };
        let Some(rt) = self.domains.get(domain.as_str()) else { return };
        let Some(limits) = state.domain(&Self::domain_id(&domain)).map(|d| d.spec.limits) else { return };
        if !rt.config.evaluate {
            return;
        }
        // The round's seed group's data: a member drawn again for the escalation measures on
        // its escalation group's data (shared with other members, so that they check it).
        let Some(Evaluation { commit, params, seed, artifact, .. }) =
            self.verification.evaluation(&state, commit_id, round)
        else {
            return;
        };
        let commit_id = *commit_id;
        let domain_impl = rt.domain.clone();
        let values = domain_impl.space().from_params(&params);
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
        let measure_with = domain_impl.clone();
        // The reveal's model is fetched while the parameters are measured, outside the
        // evaluation slots: a claimer naming a model nobody serves costs a vote its figure for
        // the model after [`MEASURE_FETCH`], never an evaluation slot.
        let prefetch = artifact.filter(|_| measure_with.has_model()).map(|hash| {
            let models = self.models.clone();
            tokio::spawn(async move { (hash, models.fetch_within(hash, MEASURE_FETCH).await) })
        });
        tokio::spawn(async move {
            let Ok(permit) = slots.acquire_owned().await else { return };
            let measured_nanos = nanos.clone();
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
            drop(permit);
            match &result {
                Ok(_) => health.ok(),
                Err(e) => health.failed(e),
            }
            let artifact = match prefetch {
                Some(fetch) if result.is_ok() => match fetch.await {
                    Ok((hash, fetched)) => {
                        measure_artifact(fetched, measure_with, hash, measured_nanos).await
                    }
                    Err(_) => None,
                },
                _ => None,
            };
            let _ = tx.send(Measured { commit: commit_id, round, seed, result, artifact }).await;
        });
    }

    pub(super) async fn on_measured(&mut self, m: Measured) {
        if let Some(a) = m.artifact {
            tracing::debug!(commit = %m.commit, quality = a.to_f64(), "measured the reveal's model");
        }
        match m.result {
            Ok(measured) => {
                let vote = Signed::sign(
                    VoteBody {
                        commit: m.commit,
                        evaluator: self.me,
                        round: m.round,
                        measured,
                        data_hash: Hash::of(&m.seed.0),
                        artifact_measured: m.artifact,
                    },
                    &self.key,
                );
                let domain = self.domain_of(&m.commit).unwrap_or_default();
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
        let b = &vote.body;
        let event = json!({
            "commit": commit.to_string(),
            "evaluator": b.evaluator.to_string(),
            "measured": b.measured.to_f64(),
            "round": b.round,
        });
        if !self.verification.vote(vote, Instant::now()) {
            return;
        }
        let domain = self.domain_of(&commit);
        self.events.emit("vote", domain.as_deref(), event);
        self.try_certify(commit);
    }

    /// Assembles the certificate once the votes allow ([`Verification::certify`]) and hands it
    /// to the block producer; says so when the claim escalates or is lost.
    pub(super) fn try_certify(&mut self, commit_id: Hash) {
        let state = self.tip_state();
        let verdict = {
            let (production, store) = (&self.production, &self.store);
            let landed = |id: &Hash| {
                production.has_cert(id) || store.lock().certificate_location(id).ok().flatten().is_some()
            };
            self.verification.certify(&state, &commit_id, Instant::now(), landed)
        };
        match verdict {
            Verdict::Wait => {}
            Verdict::Trusted { cert } => {
                let (domain, claimed) = (cert.commit.body.domain.clone(), cert.commit.body.claimed);
                println!("certificate {domain} {commit_id} Accept trusted {}", claimed.to_f64());
                // Pending trusted claims this one matches or beats would only land as late: drop them.
                if let Some(spec) = state.domain(&domain).map(|d| &d.spec) {
                    self.production.retain_certs(|c| {
                        c.cert.commit.body.domain != domain
                            || spec.direction.gain(claimed, c.cert.commit.body.claimed).is_none_or(|g| g < 0)
                    });
                }
                self.emit_certificate(&cert, claimed, true);
                self.production
                    .add_cert(commit_id, ReadyCert { cert, ready_at: Instant::now(), median: claimed });
                self.poked = true;
            }
            Verdict::Escalated { why, voted, quorum, evaluate } => {
                // Disagreement or a missing vote: a larger quorum decides by quorum_fraction.
                let domain = self.domain_of(&commit_id).unwrap_or_default();
                let text = match why {
                    tally::Why::Disagreeing => "disagreeing",
                    tally::Why::MemberLeft => "a member left the domain's quorums",
                    tally::Why::TimedOut => "timed out",
                };
                println!("escalate {domain} {commit_id} ({voted} of {quorum} first-round votes, {text})");
                self.emit(
                    "escalation",
                    Some(domain.as_str()),
                    json!({
                        "commit": commit_id.to_string(),
                        "votes": voted,
                        "quorum": quorum,
                        "reason": why.as_str(),
                    }),
                );
                if evaluate {
                    self.start_evaluation(&commit_id, 1);
                }
            }
            Verdict::Undecidable => {
                // Too few members are left to decide: our own claim is lost now rather than at
                // the claim deadline, and the optimizer claims again — other parameters: these
                // were revealed, and a parameter set belongs to its first revealer (a new commit
                // draws its quorum from evaluators that can evaluate).
                if let Some(domain) = self.claims.settled(&commit_id) {
                    println!(
                        "claim lost {domain} {commit_id} (escalation members left the domain's quorums)"
                    );
                    self.settle(&domain);
                }
            }
            Verdict::Certified { cert, median } => {
                let mine = cert.commit.body.optimizer == self.me;
                if let Some(at) = self.claims.committed_at(&commit_id).filter(|_| mine) {
                    if self.cert_latency_ms.len() >= 4096 {
                        self.cert_latency_ms.pop_front();
                    }
                    self.cert_latency_ms.push_back(at.elapsed().as_millis() as u64);
                }
                println!(
                    "certificate {} {commit_id} {:?} median {}",
                    cert.commit.body.domain,
                    cert.outcome,
                    median.to_f64()
                );
                self.emit_certificate(&cert, median, false);
                let ready_at = Instant::now() + OTHERS_GRACE;
                self.production.add_cert(commit_id, ReadyCert { cert, ready_at, median });
                self.poked = true;
                if let Ok(mut q) = self.tasks.lock() {
                    q.remove(&format!("{commit_id}:0"));
                    q.remove(&format!("{commit_id}:1"));
                }
            }
        }
    }
}

/// How long an evaluator waits for a reveal's model before voting without a figure for it.
const MEASURE_FETCH: Duration = Duration::from_secs(10);

/// A reveal's model artifact (fetched from its providers, and then kept and served here)
/// measured on its domain's held-out data on a blocking thread; `None` when it could not be
/// fetched or is not a model of the domain (the vote then says nothing about it).
async fn measure_artifact(
    fetched: Result<Arc<Vec<u8>>, String>,
    domain: Arc<dyn doin_optimize::domain::Domain>,
    hash: Hash,
    nanos: Arc<std::sync::atomic::AtomicU64>,
) -> Option<Metric> {
    let bytes = match fetched {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(artifact = %hash, error = %e, "the reveal's model could not be fetched; voting without it");
            return None;
        }
    };
    let measured = tokio::task::spawn_blocking(move || {
        let started = doin_tracking::thread_cpu_nanos();
        let r = domain.measure_artifact(&bytes);
        nanos.fetch_add(doin_tracking::thread_cpu_nanos().saturating_sub(started), Ordering::Relaxed);
        r
    })
    .await;
    match measured {
        Ok(Ok(q)) => Metric::from_f64(q),
        Ok(Err(e)) => {
            tracing::warn!(artifact = %hash, error = %e, "the reveal's model does not run; voting without it");
            None
        }
        Err(e) => {
            tracing::warn!(artifact = %hash, error = %e, "measuring the reveal's model panicked");
            None
        }
    }
}
