//! The payee's side of payment channels on chain: on each new tip, the challenges and closes the
//! channel book asks for ([`crate::channels::ChannelBook::due`]) are signed with the node's key
//! and sent like any transaction of ours.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) async fn channels_step(&mut self, state: &State) {
        let Some(serving) = &self.serving else { return };
        for due in serving.channels_due(state) {
            let what = match &due.kind {
                doin_primitives::TxKind::ChallengeChannel { .. } => "challenge",
                _ => "close",
            };
            let tx = self.own_tx(state, due.kind);
            if let Err(e) = self.mempool.insert(tx.clone(), state) {
                tracing::warn!(channel = %due.channel, what, error = %e, "channel transaction refused by our own mempool");
                continue;
            }
            println!("channel {what} {} tx {}", due.channel, tx.id());
            tracing::info!(channel = %due.channel, what, tx = %tx.id(), "payment channel: sending our best update");
            self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        }
    }
}
