//! Disputes of inference answers, as a member of their quorum (`docs/design.md` §22d): for
//! every pending dispute on the tip whose quorum drew this node, the disputed row is
//! re-executed on the named model off the engine's task — fetched from its providers if not
//! held; a federated job's model through the job's forward pass — and the finding goes out as
//! a signed `DisputeVote`. The built-in models' forward pass
//! is deterministic, so the server's output must match ours bit for bit; a row the model cannot
//! take (its width) is an answer the server could not have given: wrong. A model this node
//! cannot fetch or run gets no vote now; the member tries again [`RETRY_BLOCKS`] blocks after
//! an attempt ended while its vote is not on chain (a fetch that failed, a vote lost on the
//! way), until the dispute settles — a member silent at the deadline is not drawn for the
//! domain's disputes for a while (`doin_consensus::disputes::ABSENCE_WINDOWS`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How long a member tries to fetch a disputed model.
const FETCH: Duration = Duration::from_secs(30);

/// A finished attempt: the dispute and the finding (`Some(wrong)`; `None`: the model could not
/// be fetched or run).
type Finding = (Hash, Option<bool>);

/// Blocks after an attempt ended before a member whose vote is not on chain tries again.
pub(super) const RETRY_BLOCKS: u64 = 5;

/// Disputes this node re-executes or voted on, and the findings waiting to be sent.
#[derive(Default)]
pub(super) struct Arbiter {
    /// Dispute ids attempted here (pruned to those still pending on chain): `None` while the
    /// attempt runs, then the height it ended at.
    started: HashMap<Hash, Option<u64>>,
    /// Finished attempts.
    found: Arc<Mutex<Vec<Finding>>>,
}

impl Arbiter {
    /// Whether a re-execution of dispute `id` should start at `height` (this node is a member
    /// and its vote is not on chain): never tried, or the last attempt ended [`RETRY_BLOCKS`]
    /// ago — never while one runs.
    fn due(&self, id: &Hash, height: u64) -> bool {
        match self.started.get(id) {
            None => true,
            Some(None) => false,
            Some(Some(ended)) => height >= ended.saturating_add(RETRY_BLOCKS),
        }
    }
}

impl Engine {
    pub(super) async fn disputes_step(&mut self, state: &State) {
        let found = std::mem::take(
            &mut *self.arbiter.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let height = state.height();
        for (id, wrong) in found {
            self.arbiter.started.insert(id, Some(height));
            let Some(wrong) = wrong else { continue };
            let tx = self.own_tx(state, doin_primitives::TxKind::DisputeVote { dispute: id, wrong });
            if let Err(e) = self.mempool.insert(tx.clone(), state) {
                tracing::warn!(dispute = %id, error = %e, "dispute vote refused by our own mempool");
                continue;
            }
            println!("dispute vote {id} wrong {wrong} tx {}", tx.id());
            tracing::info!(dispute = %id, wrong, tx = %tx.id(), "dispute: re-executed the row, voting");
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        }
        let me = self.me;
        self.arbiter.started.retain(|id, _| state.dispute(id).is_some_and(|d| d.outcome.is_none()));
        let arbiter = &self.arbiter;
        let due: Vec<(Hash, doin_consensus::disputes::Dispute)> = state
            .disputes()
            .filter(|(id, d)| {
                d.outcome.is_none()
                    && d.quorum.contains(&me)
                    && !d.votes.iter().any(|(a, _)| *a == me)
                    && arbiter.due(id, height)
            })
            .map(|(id, d)| (*id, d.clone()))
            .collect();
        for (id, d) in due {
            // A domain this node runs, or a federated job's model (§22g).
            let domain =
                self.domains.get(d.domain.as_str()).map(|rt| rt.domain.clone()).or_else(|| {
                    self.jobs.as_ref().and_then(|j| j.model_of(d.domain.as_str())).map(|s| s.domain)
                });
            let Some(domain) = domain else {
                tracing::warn!(dispute = %id, domain = %d.domain, "drawn for a dispute of a domain this node does not run");
                // Nothing will change that: no retry.
                self.arbiter.started.insert(id, None);
                continue;
            };
            if self.arbiter.started.insert(id, None).is_some() {
                tracing::info!(dispute = %id, "dispute: no vote of ours on chain yet, trying again");
            }
            let (models, found) = (self.models.clone(), self.arbiter.found.clone());
            tokio::spawn(async move {
                let bytes = match models.fetch_within(d.artifact, FETCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(dispute = %id, model = %d.artifact, error = %e, "cannot fetch a disputed model: not voting now");
                        found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, None));
                        return;
                    }
                };
                let input = doin_primitives::row_values(&d.input);
                let tolerance = domain.inference_tolerance();
                let out =
                    tokio::task::spawn_blocking(move || domain.infer_known(&d.artifact, &bytes, &[input]))
                        .await;
                let wrong = match out {
                    Ok(Ok(answer)) => Some(!answer.outputs.first().is_some_and(|o| {
                        doin_primitives::same_output(o, &doin_primitives::row_values(&d.output), tolerance)
                    })),
                    Ok(Err(doin_optimize::domain::EvalError::BadParams(why))) => {
                        tracing::info!(dispute = %id, why, "the disputed row does not fit the model");
                        Some(true)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(dispute = %id, error = %e, "cannot run a disputed model: not voting now");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(dispute = %id, error = %e, "re-execution panicked: not voting now");
                        None
                    }
                };
                found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, wrong));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member tries a dispute once, not again while the attempt runs, and again
    /// `RETRY_BLOCKS` after an attempt ended without its vote reaching the chain.
    #[test]
    fn a_failed_attempt_is_retried_after_the_retry_blocks_only() {
        let mut a = Arbiter::default();
        let id = Hash::of(b"dispute");
        assert!(a.due(&id, 10), "never tried");
        a.started.insert(id, None);
        assert!(!a.due(&id, 10) && !a.due(&id, 1_000), "an attempt runs");
        a.started.insert(id, Some(12));
        assert!(!a.due(&id, 12 + RETRY_BLOCKS - 1));
        assert!(a.due(&id, 12 + RETRY_BLOCKS), "ended without a vote on chain: again");
    }
}
