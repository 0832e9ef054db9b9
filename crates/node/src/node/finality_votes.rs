//! This node's finality votes (with slashing protection) and the finality offences it
//! includes.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) async fn finality_step(&mut self, state: &State) {
        for evidence in self.gossip.take_finality_evidence() {
            let voter = evidence.first.body.voter;
            println!(
                "finality offence by {voter} targets {} {}",
                evidence.first.body.target.height, evidence.second.body.target.height
            );
            self.emit("finality_offence", None, json!({ "voter": voter.to_string() }));
            self.production.add_finality_evidence(evidence.clone());
            self.publish(Topic::Blocks, GossipMessage::FinalityEvidence(Box::new(evidence))).await;
        }
        #[cfg(feature = "adversary")]
        if self.adversary == Some(Adversary::DoubleFinalityVote) {
            self.equivocate_finality(state).await;
            return;
        }
        match self.voter.next_vote(state, &self.key) {
            Ok(Some(vote)) => {
                let b = &vote.body;
                tracing::debug!(source = b.source.height, target = b.target.height, "finality vote");
                let message = GossipMessage::FinalityVote(Box::new(vote));
                self.gossip.admit_own(&message);
                self.publish(Topic::Blocks, message).await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot vote for finality"),
        }
    }
}
