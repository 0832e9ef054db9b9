//! Block production's shell: the pools and the decision are [`crate::production`]'s; here the
//! store says which certificates landed already, and a block made is imported and announced.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Keeps a commit (admitted by the gossip checks, or ours) for inclusion in our blocks.
    pub(super) fn pool_commit(&mut self, commit: &Commit) {
        let settled = self.verification.intake().is_settled(&commit.id());
        self.production.pool_commit(commit, Instant::now(), settled);
    }

    /// Produces a block when this node may ([`Production::produce`]) and announces it.
    pub(super) async fn produce(&mut self) {
        let state = self.tip_state();
        {
            let s = self.store.lock();
            self.production
                .retain_certs(|c| s.certificate_location(&c.cert.commit.id()).ok().flatten().is_none());
        }
        let ts = now_ms().max(state.meta().timestamp_ms + 1);
        let votes = self.gossip.finality_votes();
        let produced =
            self.production.produce(&state, &self.key, ts, Instant::now(), &mut self.mempool, &votes);
        for id in produced.forgotten {
            self.forget(id);
        }
        if let Some(block) = produced.block {
            self.import_and_announce(block).await;
        }
    }
}
