//! The resource marketplace's signed objects (off chain; `docs/design.md` §22e): a provider's
//! offer to a market node, a capability challenge, and the provider's signed answer. A
//! challenge is a timed benchmark whose work can be checked by sampling: `units` independent
//! BLAKE3 chains of `iterations` steps each (spread over the provider's cores), and a
//! memory-hard pass over a `mem_mb` table (ROMix-like: filled in sequence, then read at
//! data-dependent positions, so it cannot be answered without holding the table).

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::{BoundedString, BoundedVec},
    crypto::{Address, Hash, SigTag},
    domain::DomainId,
    signed::{Signable, Signed},
    units::Amount,
};

/// Most work units in one challenge (with [`MAX_ITERATIONS`]: at most 2^26 steps, a few
/// seconds of one core).
pub const MAX_UNITS: u32 = 64;
/// Most hashing steps per unit.
pub const MAX_ITERATIONS: u32 = 1 << 20;
/// Largest memory table, MiB (the checker recomputes it).
pub const MAX_MEM_MB: u32 = 256;

/// A capability challenge: fresh randomness from the checker, and how much work to do.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Challenge {
    /// The checker's fresh random seed (the provider cannot have computed anything before).
    pub seed: Hash,
    /// Independent hash chains to compute (in parallel on the provider's cores).
    pub units: u32,
    /// Steps per chain.
    pub iterations: u32,
    /// Memory table size, MiB (0: none).
    pub mem_mb: u32,
}

impl Challenge {
    /// Checks the bounds: `Err` names the one exceeded.
    pub fn check(&self) -> Result<(), String> {
        if self.units > MAX_UNITS {
            return Err(format!("units {} over {MAX_UNITS}", self.units));
        }
        if self.iterations > MAX_ITERATIONS {
            return Err(format!("iterations {} over {MAX_ITERATIONS}", self.iterations));
        }
        if self.mem_mb > MAX_MEM_MB {
            return Err(format!("mem_mb {} over {MAX_MEM_MB}", self.mem_mb));
        }
        Ok(())
    }
}

/// One work unit: `iterations` BLAKE3 steps from `H(tag ‖ seed ‖ i)`.
pub fn unit(seed: &Hash, i: u32, iterations: u32) -> Hash {
    let mut h = Hash::of_parts(&[b"doin/capability-unit", &seed.0, &i.to_le_bytes()]);
    for _ in 0..iterations {
        h = Hash::of(&h.0);
    }
    h
}

/// The memory pass: a table of `mem_mb` MiB of 32-byte entries filled as a hash chain from the
/// seed, then as many reads at positions the running value picks (each read's value feeds the
/// next position). `Hash::ZERO` for 0 MiB.
pub fn memory(seed: &Hash, mem_mb: u32) -> Hash {
    let n = (mem_mb as usize) << 15; // 1 MiB / 32 bytes
    if n == 0 {
        return Hash::ZERO;
    }
    let mut table: Vec<[u8; 32]> = Vec::with_capacity(n);
    let mut h = Hash::of_parts(&[b"doin/capability-memory", &seed.0]);
    for _ in 0..n {
        table.push(h.0);
        h = Hash::of(&h.0);
    }
    let mut x = h;
    for _ in 0..n {
        let mut pos = [0u8; 8];
        pos.copy_from_slice(&x.0[..8]);
        let j = (u64::from_le_bytes(pos) % n as u64) as usize;
        x = Hash::of_parts(&[&x.0, &table[j]]);
    }
    x
}

/// A provider's signed answer.
pub type CapabilityAnswer = Signed<CapabilityAnswerBody>;

/// What a provider signs: the challenge, every unit's result, the memory result.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CapabilityAnswerBody {
    /// The provider (signer).
    pub provider: Address,
    /// The challenge answered.
    pub challenge: Challenge,
    /// Each unit's result, in order.
    pub units: BoundedVec<Hash, { MAX_UNITS as usize }>,
    /// The memory pass's result.
    pub memory: Hash,
}

impl Signable for CapabilityAnswerBody {
    const TAG: SigTag = SigTag::CapabilityAnswer;
    fn signer(&self) -> &Address {
        &self.provider
    }
}

/// Checks `answer` to `challenge` from `provider`: signed, for this challenge, the units at
/// `samples` recomputed equal, the memory pass recomputed equal. `Err` says what was wrong.
pub fn check_answer(
    answer: &CapabilityAnswer,
    provider: &Address,
    challenge: &Challenge,
    samples: &[u32],
) -> Result<(), String> {
    let body = &answer.body;
    if body.provider != *provider || !answer.verify() {
        return Err("the answer is not signed by the provider".into());
    }
    if body.challenge != *challenge {
        return Err("the answer is for another challenge".into());
    }
    if body.units.len() != challenge.units as usize {
        return Err(format!("{} unit results for {} units", body.units.len(), challenge.units));
    }
    for &i in samples {
        let got = body.units.get(i as usize).ok_or_else(|| format!("no unit {i}"))?;
        if *got != unit(&challenge.seed, i, challenge.iterations) {
            return Err(format!("unit {i} is wrong: the work was not done"));
        }
    }
    if body.memory != memory(&challenge.seed, challenge.mem_mb) {
        return Err("the memory pass is wrong".into());
    }
    Ok(())
}

/// A provider's signed offer to a market node.
pub type MarketOffer = Signed<MarketOfferBody>;

/// What a provider offers: where to reach it, its price per job, the domains it serves.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct MarketOfferBody {
    /// The provider (signer; must be staked).
    pub provider: Address,
    /// Its HTTP API, `host:port` (challenges and jobs go there).
    pub api: BoundedString<128>,
    /// Price per job, base units.
    pub price: Amount,
    /// Domains it serves (inference).
    pub domains: BoundedVec<DomainId, 32>,
    /// When it was signed, ms since the Unix epoch (offers older than ten minutes are refused).
    pub issued_ms: u64,
}

impl Signable for MarketOfferBody {
    const TAG: SigTag = SigTag::MarketOffer;
    fn signer(&self) -> &Address {
        &self.provider
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn answer(key: &Keypair, c: &Challenge, lie_from: u32) -> CapabilityAnswer {
        let units = (0..c.units)
            .map(|i| if i < lie_from { unit(&c.seed, i, c.iterations) } else { Hash::of(&i.to_le_bytes()) })
            .collect();
        Signed::sign(
            CapabilityAnswerBody {
                provider: key.address(),
                challenge: c.clone(),
                units: BoundedVec::try_from_vec(units).unwrap(),
                memory: memory(&c.seed, c.mem_mb),
            },
            key,
        )
    }

    #[test]
    fn the_work_is_checked_by_samples_and_the_memory_pass_in_full() {
        let key = Keypair::from_seed([3; 32]);
        let c = Challenge { seed: Hash::of(b"fresh"), units: 8, iterations: 100, mem_mb: 1 };
        c.check().unwrap();
        let honest = answer(&key, &c, 8);
        check_answer(&honest, &key.address(), &c, &[0, 3, 7]).unwrap();
        // Half the units made up: a sample among them fails.
        let liar = answer(&key, &c, 4);
        assert!(check_answer(&liar, &key.address(), &c, &[5]).unwrap_err().contains("unit 5 is wrong"));
        // Another seed, another signer, a memory pass left out.
        let other = Challenge { seed: Hash::of(b"other"), ..c.clone() };
        assert!(
            check_answer(&honest, &key.address(), &other, &[0]).unwrap_err().contains("another challenge")
        );
        let stranger = Keypair::from_seed([4; 32]).address();
        assert!(check_answer(&honest, &stranger, &c, &[0]).unwrap_err().contains("not signed"));
        let mut lazy = honest.clone();
        lazy.body.memory = Hash::ZERO;
        let lazy = Signed::sign(lazy.body, &key);
        assert!(check_answer(&lazy, &key.address(), &c, &[0]).unwrap_err().contains("memory"));
        // The memory result depends on every entry: another seed, another result.
        assert_ne!(memory(&c.seed, 1), memory(&other.seed, 1));
        assert_eq!(memory(&c.seed, 0), Hash::ZERO);
        assert!(Challenge { units: MAX_UNITS + 1, ..c.clone() }.check().is_err());
        assert!(Challenge { mem_mb: MAX_MEM_MB + 1, ..c }.check().is_err());
    }
}
