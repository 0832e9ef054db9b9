//! [`Signed`]: an object body plus its author's signature over `tag || H(body)`.

use std::ops::Deref;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Address, Hash, Keypair, SigTag, Signature};

/// A body that can be signed: it names its signer and its signing domain.
pub trait Signable: BorshSerialize {
    /// The signing domain of this kind of object.
    const TAG: SigTag;
    /// The account whose signature the object must carry.
    fn signer(&self) -> &Address;
}

/// A signed object. Its id is the hash of the body alone, so a second signature over the same
/// body (signature malleability) never yields a second id.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The signed content.
    #[serde(flatten)]
    pub body: T,
    /// The signer's signature over `T::TAG || H(body)`.
    pub signature: Signature,
}

impl<T: Signable> Signed<T> {
    /// Signs `body` with `key`. The key should be the body's signer; if it is not, the object
    /// simply fails verification.
    pub fn sign(body: T, key: &Keypair) -> Self {
        let signature = key.sign(T::TAG, &Hash::of_encoded(&body));
        Self { body, signature }
    }

    /// The object id: the hash of the body.
    pub fn id(&self) -> Hash {
        Hash::of_encoded(&self.body)
    }

    /// Checks the signature on its own (prefer batch verification for many objects).
    pub fn verify(&self) -> bool {
        crypto::verify(self.body.signer(), T::TAG, &self.id(), &self.signature)
    }

    /// The `(signer, message, signature)` triple for batch verification.
    pub fn signature_item(&self) -> SignatureItem {
        SignatureItem {
            signer: *self.body.signer(),
            message: T::TAG.message(&self.id()),
            signature: self.signature,
        }
    }
}

impl<T> Deref for Signed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.body
    }
}

/// One signature to check, with the exact message that was signed.
#[derive(Clone, Debug)]
pub struct SignatureItem {
    /// Who must have signed.
    pub signer: Address,
    /// `tag || hash`.
    pub message: Vec<u8>,
    /// The signature.
    pub signature: Signature,
}

/// Verifies many signatures at once (ed25519 batch verification, about twice as fast as one by
/// one). On failure, finds the first bad item by checking each one strictly and returns its
/// index.
pub fn verify_batch(items: &[SignatureItem]) -> Result<(), usize> {
    if items.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        keys.push(item.signer.verifying_key().ok_or(i)?);
    }
    let messages: Vec<&[u8]> = items.iter().map(|i| i.message.as_slice()).collect();
    let sigs: Vec<ed25519_dalek::Signature> =
        items.iter().map(|i| ed25519_dalek::Signature::from_bytes(&i.signature.0)).collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
        // Batch acceptance is slightly laxer than strict verification for adversarial
        // small-order components; strict per-item checks run only when the batch fails, and
        // keys are validated as curve points above.
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if keys[i].verify_strict(&item.message, &sigs[i]).is_err() {
            return Err(i);
        }
    }
    // The batch failed but every item verifies alone: treat the whole set as invalid.
    Err(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poo::VoteBody;
    use crate::units::Metric;

    fn vote(seed: u8, measured: i64) -> Signed<VoteBody> {
        let kp = Keypair::from_seed([seed; 32]);
        Signed::sign(
            VoteBody {
                commit: Hash::of(b"c"),
                evaluator: kp.address(),
                round: 0,
                measured: Metric(measured),
                data_hash: Hash::ZERO,
                artifact_measured: None,
            },
            &kp,
        )
    }

    #[test]
    fn batch_finds_the_forged_item() {
        let mut votes: Vec<_> = (1..=8).map(|i| vote(i, i as i64)).collect();
        let items: Vec<_> = votes.iter().map(Signed::signature_item).collect();
        assert_eq!(verify_batch(&items), Ok(()));
        votes[5].body.measured = Metric(999);
        let items: Vec<_> = votes.iter().map(Signed::signature_item).collect();
        assert_eq!(verify_batch(&items), Err(5));
        assert!(!votes[5].verify());
        assert!(votes[4].verify());
    }
}
