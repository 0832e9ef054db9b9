//! Channel updates' signatures checked in batches: every paid request's update goes to one
//! verifier task, which takes whatever is queued (up to [`MAX_BATCH`]) and checks the lot with
//! ed25519 batch verification (about twice the rate of one by one on this machine's cores); a
//! lone request is checked alone, so batching adds no wait. A batch that fails is checked item
//! by item, so one forged update fails only its own request.

use doin_primitives::{ChannelUpdate, verify_batch};
use tokio::sync::{mpsc, oneshot};

use super::{ChannelBook, PayError};

/// Updates checked together at most.
pub const MAX_BATCH: usize = 64;
/// Updates waiting for the verifier at most (a request beyond waits to enqueue).
const QUEUE: usize = 4096;

type Job = (Vec<u8>, oneshot::Sender<Result<ChannelUpdate, PayError>>);

/// Decodes and verifies `items` together.
pub fn verify_all(items: &[Vec<u8>]) -> Vec<Result<ChannelUpdate, PayError>> {
    let decoded: Vec<Result<ChannelUpdate, PayError>> =
        items.iter().map(|b| ChannelBook::decode_unverified(b)).collect();
    let signed: Vec<_> = decoded.iter().filter_map(|d| d.as_ref().ok().map(|u| u.signature_item())).collect();
    if verify_batch(&signed).is_ok() {
        return decoded;
    }
    decoded
        .into_iter()
        .map(|d| {
            d.and_then(|u| {
                if u.verify() {
                    Ok(u)
                } else {
                    Err(PayError::Malformed("the update's signature does not verify".into()))
                }
            })
        })
        .collect()
}

/// The verifier task's handle.
#[derive(Debug, Clone)]
pub struct Verifier {
    tx: mpsc::Sender<Job>,
}

impl Verifier {
    /// Starts the verifier task (on the current tokio runtime).
    pub fn start() -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (bytes, replies): (Vec<Vec<u8>>, Vec<_>) = jobs.into_iter().unzip();
                let results = tokio::task::spawn_blocking(move || verify_all(&bytes)).await;
                let Ok(results) = results else { continue };
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
        });
        Self { tx }
    }

    /// Decodes and verifies one update (batched with whatever else is waiting).
    pub async fn verify(&self, bytes: Vec<u8>) -> Result<ChannelUpdate, PayError> {
        if bytes.len() > super::MAX_UPDATE_BYTES {
            return Err(PayError::Malformed(format!(
                "an update of {} bytes (at most {})",
                bytes.len(),
                super::MAX_UPDATE_BYTES
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.tx.send((bytes, reply)).await.map_err(|_| PayError::Malformed("the node is stopping".into()))?;
        answer.await.map_err(|_| PayError::Malformed("the node is stopping".into()))?
    }
}

#[cfg(test)]
mod tests {
    use doin_primitives::{Amount, ChannelUpdateBody, Hash, Keypair, Signed};

    use super::*;

    #[test]
    fn a_forged_update_in_a_batch_fails_alone() {
        let key = Keypair::from_seed([3; 32]);
        let update = |nonce| {
            doin_primitives::encode(&Signed::sign(
                ChannelUpdateBody {
                    channel: Hash::of(b"c"),
                    payer: key.address(),
                    nonce,
                    paid_total: Amount(nonce.into()),
                },
                &key,
            ))
        };
        let mut items: Vec<Vec<u8>> = (1..=10).map(update).collect();
        let mut forged: ChannelUpdate = doin_primitives::decode(&items[4], 512, "update").unwrap();
        forged.body.paid_total = Amount(1_000_000);
        items[4] = doin_primitives::encode(&forged);
        items[7] = b"junk".to_vec();
        let results = verify_all(&items);
        for (i, r) in results.iter().enumerate() {
            match i {
                4 => assert!(matches!(r, Err(PayError::Malformed(w)) if w.contains("signature")), "{r:?}"),
                7 => assert!(
                    matches!(r, Err(PayError::Malformed(w)) if w.contains("not a channel update")),
                    "{r:?}"
                ),
                _ => assert_eq!(r.as_ref().unwrap().body.nonce, i as u64 + 1),
            }
        }
        assert!(verify_all(&items[..4]).iter().all(Result::is_ok), "an honest batch passes whole");
    }
}
