//! Inference receipts: what a serving node signs for each answer it gives from a domain's
//! verified champion model (DESIGN §6). A receipt names the model (the champion's optimae and
//! its artifact hash, at a chain height) and binds the exact inputs to the exact outputs, so a
//! client can have another node re-execute the request and, for deterministic models, prove a
//! wrong answer with the receipt alone.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    crypto::{Address, Hash, SigTag},
    domain::DomainId,
    signed::{Signable, Signed},
};

/// A serving node's signed answer receipt.
pub type InferenceReceipt = Signed<InferenceReceiptBody>;

/// What a serving node signs for one answer.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct InferenceReceiptBody {
    /// The serving node (signer).
    pub server: Address,
    /// The domain whose champion answered.
    pub domain: DomainId,
    /// The champion's commit id (the optimae).
    pub optimae: Hash,
    /// The model artifact that ran ([`Hash::of_artifact`] of its bytes).
    pub artifact: Hash,
    /// [`rows_hash`] of the request's input rows.
    pub inputs: Hash,
    /// [`rows_hash`] of the answer's output rows.
    pub outputs: Hash,
    /// The chain height whose champion this was.
    pub height: u64,
    /// When the answer was given (ms since the Unix epoch, the server's clock).
    pub issued_ms: u64,
    /// The id of the channel update that paid for the answer, if it was paid.
    pub payment: Option<Hash>,
}

impl Signable for InferenceReceiptBody {
    const TAG: SigTag = SigTag::InferenceReceipt;
    fn signer(&self) -> &Address {
        &self.server
    }
}

/// The hash of rows of numbers as a model's `f32` arithmetic sees them: the row count, then each
/// row's length and its values rounded to `f32`, as little-endian bit patterns (so `-0.0` and
/// `0.0` differ). Hashing the `f32`s makes the hash survive a trip through JSON text: a parser
/// off by an `f64` ulp still reads back the same `f32`.
pub fn rows_hash(rows: &[Vec<f64>]) -> Hash {
    let mut bytes = Vec::with_capacity(8 + rows.iter().map(|r| 8 + 4 * r.len()).sum::<usize>());
    bytes.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        bytes.extend_from_slice(&(r.len() as u64).to_le_bytes());
        for v in r {
            bytes.extend_from_slice(&(*v as f32).to_bits().to_le_bytes());
        }
    }
    Hash::of(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn a_receipt_binds_inputs_to_outputs_under_the_servers_key() {
        let key = Keypair::from_seed([7; 32]);
        let body = InferenceReceiptBody {
            server: key.address(),
            domain: DomainId::new("mlp_digits").unwrap(),
            optimae: Hash::of(b"commit"),
            artifact: Hash::of(b"model"),
            inputs: rows_hash(&[vec![1.0, 2.0]]),
            outputs: rows_hash(&[vec![0.5]]),
            height: 9,
            issued_ms: 1,
            payment: None,
        };
        let r = Signed::sign(body.clone(), &key);
        assert!(r.verify());
        // Rows are framed: a split of the same numbers hashes differently.
        assert_ne!(rows_hash(&[vec![1.0, 2.0]]), rows_hash(&[vec![1.0], vec![2.0]]));
        assert_ne!(rows_hash(&[vec![0.0]]), rows_hash(&[vec![-0.0]]));
        // A JSON parser an f64 ulp off reads back the same f32 the model used.
        let f = 153.2268829345703_f64;
        assert_eq!(rows_hash(&[vec![f]]), rows_hash(&[vec![f64::from_bits(f.to_bits() + 1)]]));
        let forged = Signed { body: InferenceReceiptBody { outputs: rows_hash(&[vec![0.6]]), ..body }, ..r };
        assert!(!forged.verify());
    }
}
