//! Stake-signed finality (Casper FFG): checkpoint votes, and the evidence that convicts a key
//! that signed two votes no honest voter signs.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    crypto::{Address, Hash, SigTag},
    signed::{Signable, Signed},
};

/// Hard bound on finality votes per block (the votes of 1 024 stakers; more wait for the next
/// block while their target is within the recent window).
pub const MAX_BLOCK_FINALITY_VOTES: usize = 1024;
/// Hard bound on finality evidence items per block.
pub const MAX_BLOCK_FINALITY_EVIDENCE: usize = 16;

/// A block of the chain named by height and hash: a finality checkpoint when its height is a
/// multiple of the chain's `finality_depth`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct Checkpoint {
    /// Height.
    pub height: u64,
    /// Block hash.
    pub hash: Hash,
}

/// A signed finality vote: "the link from justified checkpoint `source` to checkpoint `target`".
pub type FinalityVote = Signed<FinalityVoteBody>;

/// The body of a finality vote.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct FinalityVoteBody {
    /// Chain id (a vote never counts on another chain).
    pub chain_id: u64,
    /// The staker voting (signer).
    pub voter: Address,
    /// The justified checkpoint the link starts from.
    pub source: Checkpoint,
    /// The checkpoint voted for.
    pub target: Checkpoint,
}

impl Signable for FinalityVoteBody {
    const TAG: SigTag = SigTag::FinalityVote;
    fn signer(&self) -> &Address {
        &self.voter
    }
}

/// How two votes by one key conflict (Casper FFG's two slashing conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Two different votes for checkpoints of the same height.
    Double,
    /// One vote's link surrounds the other's (`s1 < s2 < t2 < t1`).
    Surround,
}

/// Whether two finality vote bodies of one voter conflict, and how.
pub fn conflict(a: &FinalityVoteBody, b: &FinalityVoteBody) -> Option<Conflict> {
    if a.voter != b.voter || a.chain_id != b.chain_id || a == b {
        return None;
    }
    if a.target.height == b.target.height {
        return Some(Conflict::Double);
    }
    let surrounds = |x: &FinalityVoteBody, y: &FinalityVoteBody| {
        x.source.height < y.source.height && y.target.height < x.target.height
    };
    (surrounds(a, b) || surrounds(b, a)).then_some(Conflict::Surround)
}

/// Two conflicting finality votes signed by one key: enough, with the signatures, to slash it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct FinalityEvidence {
    /// One vote.
    pub first: FinalityVote,
    /// A conflicting vote by the same key.
    pub second: FinalityVote,
}

impl FinalityEvidence {
    /// Evidence id.
    pub fn id(&self) -> Hash {
        Hash::of_encoded(self)
    }

    /// The offence, independent of the order of the two votes: one slash per pair.
    pub fn offence(&self) -> Hash {
        let (a, b) = (Hash::of_encoded(&self.first.body), Hash::of_encoded(&self.second.body));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Hash::of_parts(&[b"doin/finality-offence", &lo.0, &hi.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(source: u64, target: u64, hash: u8) -> FinalityVoteBody {
        FinalityVoteBody {
            chain_id: 1,
            voter: Address([1; 32]),
            source: Checkpoint { height: source, hash: Hash([0; 32]) },
            target: Checkpoint { height: target, hash: Hash([hash; 32]) },
        }
    }

    #[test]
    fn double_and_surround_votes_conflict_and_honest_sequences_do_not() {
        assert_eq!(conflict(&body(0, 6, 1), &body(0, 6, 2)), Some(Conflict::Double));
        assert_eq!(conflict(&body(0, 18, 1), &body(6, 12, 1)), Some(Conflict::Surround));
        assert_eq!(conflict(&body(6, 12, 1), &body(0, 18, 1)), Some(Conflict::Surround));
        // An honest voter's votes: later targets, sources that never go back.
        assert_eq!(conflict(&body(0, 6, 1), &body(6, 12, 1)), None);
        assert_eq!(conflict(&body(0, 6, 1), &body(0, 12, 1)), None);
        assert_eq!(conflict(&body(0, 6, 1), &body(0, 6, 1)), None, "the same vote twice is no offence");
        let mut other = body(0, 6, 2);
        other.voter = Address([2; 32]);
        assert_eq!(conflict(&body(0, 6, 1), &other), None, "two voters never conflict");
    }
}
