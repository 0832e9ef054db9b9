//! Inference receipts: what a serving node signs for each answer it gives from a domain's
//! verified champion model (DESIGN §6). A receipt names the model (the champion's optimae and
//! its artifact hash, at a chain height) and binds the exact inputs to the exact outputs, so a
//! client can have another node re-execute the request and, for deterministic models, prove a
//! wrong answer with the receipt alone: the receipt commits to every (input row, output row)
//! pair as a leaf of a Merkle tree ([`answers_root`]), so an [`InferenceDispute`] carries just
//! the one disputed row and its path, whatever the request's size.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::BoundedVec,
    crypto::{Address, Hash, SigTag},
    domain::DomainId,
    merkle::{merkle_path, merkle_root, root_from_path},
    signed::{Signable, Signed},
};

/// Most values in one disputed row (input or output).
pub const MAX_ROW_VALUES: usize = 4096;
/// Longest Merkle path a dispute may carry (2^32 rows).
pub const MAX_PATH: usize = 32;

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
    /// How many rows were answered.
    pub rows: u32,
    /// [`answers_root`] of the input rows and the output rows: one leaf per row.
    pub answers: Hash,
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

/// A row of numbers as a model's `f32` arithmetic sees them: each value rounded to `f32`, as its
/// bit pattern (so `-0.0` and `0.0` differ). Hashing the `f32`s makes a receipt survive a trip
/// through JSON text: a parser off by an `f64` ulp still reads back the same `f32`.
pub fn row_bits(row: &[f64]) -> Vec<u32> {
    row.iter().map(|v| (*v as f32).to_bits()).collect()
}

/// The numbers of a row given as `f32` bits ([`row_bits`]'s inverse).
pub fn row_values(bits: &[u32]) -> Vec<f64> {
    bits.iter().map(|b| f64::from(f32::from_bits(*b))).collect()
}

/// Whether `a` and `b` are the same answer to one row: equal as `f32` (what receipts commit
/// to), or, for a domain whose inference is not bit-deterministic, every number within
/// `tolerance` of the other's.
pub fn same_output(a: &[f64], b: &[f64], tolerance: f64) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (x, y) = (*x as f32, *y as f32);
            x.to_bits() == y.to_bits() || (f64::from(x) - f64::from(y)).abs() <= tolerance
        })
}

/// The leaf of one answered row: the input's length and bits, then the output's.
pub fn answer_leaf(input: &[u32], output: &[u32]) -> Hash {
    let mut bytes = Vec::with_capacity(16 + 4 * (input.len() + output.len()));
    for part in [input, output] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        for v in part {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    Hash::of(&bytes)
}

fn leaves(inputs: &[Vec<f64>], outputs: &[Vec<f64>]) -> Vec<Hash> {
    let empty = Vec::new();
    (0..inputs.len().max(outputs.len()))
        .map(|i| {
            let (x, y) = (inputs.get(i).unwrap_or(&empty), outputs.get(i).unwrap_or(&empty));
            answer_leaf(&row_bits(x), &row_bits(y))
        })
        .collect()
}

/// The Merkle root over the answered rows' leaves ([`answer_leaf`]), in order. Rows are framed:
/// a split of the same numbers gives another root.
pub fn answers_root(inputs: &[Vec<f64>], outputs: &[Vec<f64>]) -> Hash {
    merkle_root(&leaves(inputs, outputs))
}

/// A signed receipt's claim that one row was answered wrongly: the row's input and output as
/// the receipt committed to them, and the Merkle path from the row's leaf to the receipt's
/// `answers`. Consensus checks the path and the server's signature; the domain's evaluators
/// re-execute the row on the named model and vote.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct InferenceDispute {
    /// The server's receipt.
    pub receipt: InferenceReceipt,
    /// The disputed row's index.
    pub row: u32,
    /// Its input as `f32` bits ([`row_bits`]).
    pub input: BoundedVec<u32, MAX_ROW_VALUES>,
    /// Its output as the server gave it, `f32` bits.
    pub output: BoundedVec<u32, MAX_ROW_VALUES>,
    /// The row leaf's Merkle path to `receipt.answers`.
    pub path: BoundedVec<Hash, MAX_PATH>,
}

impl InferenceDispute {
    /// A dispute of row `row` of an answer: `None` when the row is not there or too wide.
    pub fn new(
        receipt: InferenceReceipt,
        inputs: &[Vec<f64>],
        outputs: &[Vec<f64>],
        row: usize,
    ) -> Option<Self> {
        let path = merkle_path(&leaves(inputs, outputs), row)?;
        Some(Self {
            receipt,
            row: u32::try_from(row).ok()?,
            input: BoundedVec::try_from_vec(row_bits(inputs.get(row)?)).ok()?,
            output: BoundedVec::try_from_vec(row_bits(outputs.get(row)?)).ok()?,
            path: BoundedVec::try_from_vec(path).ok()?,
        })
    }

    /// The dispute's id: the receipt's hash (one dispute per receipt).
    pub fn id(&self) -> Hash {
        Hash::of_encoded(&self.receipt)
    }

    /// Whether the row is the receipt's: its leaf with the path gives the receipt's `answers`.
    pub fn proves(&self) -> bool {
        let leaf = answer_leaf(&self.input, &self.output);
        let body = &self.receipt.body;
        root_from_path(&leaf, u64::from(self.row), u64::from(body.rows), &self.path) == Some(body.answers)
    }

    /// The disputed input as numbers.
    pub fn input_row(&self) -> Vec<f64> {
        row_values(&self.input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn outputs_are_the_same_as_f32_or_within_the_domains_tolerance() {
        let a = [0.1, 2.0];
        assert!(same_output(&a, &[0.1 + 1e-12, 2.0], 0.0), "equal as f32");
        assert!(!same_output(&a, &[0.1001, 2.0], 0.0));
        assert!(same_output(&a, &[0.1001, 2.0], 1e-3));
        assert!(!same_output(&a, &[0.102, 2.0], 1e-3));
        assert!(!same_output(&a, &[0.1], 1.0), "another width is another answer");
        assert!(!same_output(&[f64::NAN], &[0.0], 1.0));
    }

    #[test]
    fn a_receipt_binds_inputs_to_outputs_under_the_servers_key() {
        let key = Keypair::from_seed([7; 32]);
        let body = InferenceReceiptBody {
            server: key.address(),
            domain: DomainId::new("mlp_digits").unwrap(),
            optimae: Hash::of(b"commit"),
            artifact: Hash::of(b"model"),
            rows: 1,
            answers: answers_root(&[vec![1.0, 2.0]], &[vec![0.5]]),
            height: 9,
            issued_ms: 1,
            payment: None,
        };
        let r = Signed::sign(body.clone(), &key);
        assert!(r.verify());
        // Rows are framed: a split of the same numbers hashes differently.
        let y = [vec![0.5], vec![0.5]];
        assert_ne!(answers_root(&[vec![1.0, 2.0]], &y[..1]), answers_root(&[vec![1.0], vec![2.0]], &y));
        assert_ne!(answers_root(&[vec![0.0]], &y[..1]), answers_root(&[vec![-0.0]], &y[..1]));
        // A JSON parser an f64 ulp off reads back the same f32 the model used.
        let f = 153.2268829345703_f64;
        assert_eq!(
            answers_root(&[vec![f]], &y[..1]),
            answers_root(&[vec![f64::from_bits(f.to_bits() + 1)]], &y[..1])
        );
        let forged = Signed {
            body: InferenceReceiptBody { answers: answers_root(&[vec![1.0, 2.0]], &[vec![0.6]]), ..body },
            ..r
        };
        assert!(!forged.verify());
    }

    #[test]
    fn a_dispute_carries_one_row_the_receipt_committed_to() {
        let key = Keypair::from_seed([8; 32]);
        let inputs: Vec<Vec<f64>> = (0..5).map(|i| vec![f64::from(i), 1.0]).collect();
        let outputs: Vec<Vec<f64>> = (0..5).map(|i| vec![f64::from(i) * 0.5]).collect();
        let body = InferenceReceiptBody {
            server: key.address(),
            domain: DomainId::new("mlp_digits").unwrap(),
            optimae: Hash::of(b"commit"),
            artifact: Hash::of(b"model"),
            rows: 5,
            answers: answers_root(&inputs, &outputs),
            height: 3,
            issued_ms: 1,
            payment: None,
        };
        let receipt = Signed::sign(body, &key);
        for row in 0..5 {
            let d = InferenceDispute::new(receipt.clone(), &inputs, &outputs, row).unwrap();
            assert!(d.proves(), "row {row}");
            assert_eq!(d.input_row(), inputs[row]);
            assert_eq!(d.id(), Hash::of_encoded(&receipt));
            // The disputer cannot change what the server answered, nor which input it was.
            let mut other = d.clone();
            other.output = BoundedVec::try_from_vec(row_bits(&[9.0])).unwrap();
            assert!(!other.proves());
            let mut other = d.clone();
            other.input = BoundedVec::try_from_vec(row_bits(&[7.0, 1.0])).unwrap();
            assert!(!other.proves());
            let mut other = d.clone();
            other.row = (d.row + 1) % 5;
            assert!(!other.proves());
        }
        assert!(InferenceDispute::new(receipt, &inputs, &outputs, 5).is_none());
    }
}
