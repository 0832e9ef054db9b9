//! Federated rounds: the shell of [`crate::federated`]. Each tick the supervisor's jobs adopt
//! what the chain recorded and close due rounds; each closed round's record goes out as a
//! signed `FederatedRound` transaction through our own mempool and the transactions topic.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) async fn rounds_step(&mut self, state: &State) {
        let Some(jobs) = self.jobs.clone() else { return };
        let stake = state.stake(&self.me).cloned();
        let records = jobs.step(state, |d| stake.as_ref().is_some_and(|s| s.supervises(d)));
        for record in records {
            let (domain, round) = (record.domain.to_string(), record.round);
            let contributions = record.contributions.len();
            let tx = self.own_tx(state, doin_primitives::TxKind::FederatedRound { round: Box::new(record) });
            let id = tx.id();
            if let Err(e) = self.mempool.insert(tx.clone(), state) {
                tracing::warn!(job = domain, round, error = %e, "federated round refused by our own mempool");
                continue;
            }
            tracing::info!(job = domain, round, contributions, tx = %id, "federated round closed");
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        }
    }
}
