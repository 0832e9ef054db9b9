//! Test-only misbehaviour (`--adversary`), for the end-to-end attack tests: compiled only with
//! the `adversary` feature (test builds), never into a shipped binary.

#[allow(clippy::wildcard_imports)]
use super::*;
use doin_primitives::{CommitBody, RevealBody};

impl Engine {
    /// The double voter: a second, different vote for the same commit and round, published
    /// without going through our own gossip check (which would refuse it).
    pub(super) async fn double_vote(&self, vote: &Vote, domain: String) {
        let mut other = vote.body.clone();
        other.measured = Metric(vote.body.measured.0 / 2);
        let other = Signed::sign(other, &self.key);
        let _ = self.net.publish(Topic::Optimae(domain), GossipMessage::Vote(Box::new(other))).await;
    }

    /// The equivocating staker: its due finality vote and a second one for another block at the
    /// same height.
    pub(super) async fn equivocate_finality(&mut self, state: &State) {
        for vote in crate::finality::equivocate(state, &self.key, &mut self.voter).into_iter().flatten() {
            self.publish(Topic::Blocks, GossipMessage::FinalityVote(Box::new(vote))).await;
        }
    }

    /// The copying adversary: commits someone else's revealed parameters as its own.
    pub(super) async fn copy_reveal(&mut self, original: &Reveal) {
        let body = &original.body;
        if body.optimizer == self.me || !self.copied.insert(body.commit) || self.copied.len() > MAX_PENDING {
            return;
        }
        let Some(seen) = self.verification.intake().commit_of(&body.commit) else { return };
        let (domain, claimed) = (seen.commit.body.domain.clone(), seen.commit.body.claimed);
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let commit = Signed::sign(
            CommitBody {
                domain: domain.clone(),
                optimizer: self.me,
                optimae_hash: poo::optimae_hash(&body.params, &salt, &self.me),
                claimed,
                reference_block: self.tip_state().tip().hash,
            },
            &self.key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: self.me,
                params: body.params.clone(),
                salt,
                artifact: None,
                experiment: Default::default(),
            },
            &self.key,
        );
        println!("copy {domain} {} of {}", commit.id(), body.commit);
        self.claims.await_seal(reveal, Instant::now());
        self.publish_commit(commit).await;
    }
}
