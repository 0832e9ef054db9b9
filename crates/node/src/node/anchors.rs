//! Anchors: every finalized anchor checkpoint (a multiple of `anchor_interval`) is recorded on
//! chain once, by the node that generated its block (one sender per checkpoint, so nodes do not
//! pay twice for one record), with an `Anchor` transaction naming where the node publishes its
//! checkpoints (`GET /anchors`). A joiner can take its trusted checkpoint from there.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Records the newest anchor checkpoint without an on-chain anchor, if this node generated
    /// its block.
    pub(super) async fn anchor(&mut self, state: &State) {
        let Some((&height, &hash)) = state.checkpoints().next_back() else { return };
        if height <= self.anchored.0 || state.anchors().any(|(h, _)| *h == height) {
            return;
        }
        let generator = self.store.lock().header(&hash).ok().flatten().map(|h| h.body.generator);
        if generator != Some(self.me) {
            return;
        }
        self.anchored.0 = height;
        let Ok(external_ref) =
            doin_primitives::BoundedBytes::try_from_vec(self.anchored.1.as_bytes().to_vec())
        else {
            return;
        };
        let tx =
            self.own_tx(state, doin_primitives::TxKind::Anchor { height, block_hash: hash, external_ref });
        let id = tx.id();
        if let Err(e) = self.mempool.insert(tx.clone(), state) {
            tracing::warn!(height, error = %e, "anchor transaction refused by our own mempool");
            return;
        }
        self.publish(Topic::Txs, GossipMessage::Transaction(Box::new(tx))).await;
        tracing::info!(height, %hash, tx = %id, "anchoring a finalized checkpoint");
        println!("anchor {height} {hash}");
    }
}
