//! Evaluator quorums: who may vote on an optimae, drawn from the evaluators eligible at the
//! block that included its commit, with the beacon of the block after it (DESIGN §4.1 step 3).

use borsh::{BorshDeserialize, BorshSerialize};
use doin_primitives::{Address, DomainId, Hash, domain::QuorumRule};

use crate::{
    fixed,
    state::{RecentBlock, State},
};

/// One eligible evaluator and its draw weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Candidate {
    /// Evaluator.
    pub address: Address,
    /// `stake × (1 + rep_factor(reputation))`, in base units.
    pub weight: u128,
}

/// The evaluators among `members` eligible for `domain` in `state`, in address order: staked as
/// evaluator for the domain with at least `min_evaluator_stake` and reputation (decayed to the
/// state's height) at least `min_reputation`. Recorded for every block (`RecentBlock`).
pub fn eligible_at<'a>(
    state: &State,
    domain: &DomainId,
    members: impl Iterator<Item = &'a Address>,
) -> Vec<Candidate> {
    let params = state.params();
    members
        .filter_map(|a| {
            let stake = state.stake(a)?;
            if !stake.evaluates(domain) || stake.amount < params.min_evaluator_stake {
                return None;
            }
            let rep = state.reputation(a, domain);
            if rep < params.min_reputation {
                return None;
            }
            // Newcomers weigh their stake; reputation adds up to the same again.
            let factor = fixed::rep_factor(rep, 0) as u128;
            let weight = stake.amount.0.checked_mul(1_000_000_000 + factor)? / 1_000_000_000;
            Some(Candidate { address: *a, weight: weight.max(1) })
        })
        .collect()
}

/// The candidates for a commit by `optimizer`: the reference block's eligible evaluators of the
/// domain, never the optimizer itself.
pub fn eligible(reference: &RecentBlock, domain: &DomainId, optimizer: &Address) -> Vec<Candidate> {
    reference.eligible(domain).iter().filter(|c| c.address != *optimizer).copied().collect()
}

/// First-round quorum size: `min(N, clamp(max(quorum_min, ceil(sqrt(N))), 1, quorum_max))`.
pub fn quorum_size(eligible: usize, rule: &QuorumRule) -> usize {
    let n = eligible as u64;
    let wanted = (rule.min as u64).max(fixed::ceil_sqrt(n)).clamp(1, rule.max.max(1) as u64);
    wanted.min(n) as usize
}

/// Escalation quorum size: `min(2k + 1, N)`.
pub fn escalation_size(first_round: usize, eligible: usize) -> usize {
    (2 * first_round + 1).min(eligible)
}

/// The first-round seed `H("doin/quorum" || beacon || commit)`, where `beacon` is the chain's
/// beacon after the block that sealed the commit (the one after its inclusion).
pub fn seed(beacon: &Hash, commit: &Hash) -> Hash {
    Hash::of_parts(&[b"doin/quorum", &beacon.0, &commit.0])
}

/// The escalation seed `H("doin/quorum" || beacon || commit || "escalate")`.
pub fn escalation_seed(beacon: &Hash, commit: &Hash) -> Hash {
    Hash::of_parts(&[b"doin/quorum", &beacon.0, &commit.0, b"escalate"])
}

/// The seed group of position `i` in a drawn list of `k` members: (0, 1), (2, 3), …, the last
/// three together when `k` is odd (`k = 1`: one group of one).
pub fn group_of(i: usize, k: usize) -> usize {
    (i / 2).min((k / 2).saturating_sub(1))
}

/// The data seed of a quorum group: `H("doin/evaluator" || beacon || commit || round || group)`.
/// Members of one group measure on the same data, so their figures must agree when the domain's
/// evaluations are reproducible.
pub fn group_seed(beacon: &Hash, commit: &Hash, round: u8, group: usize) -> Hash {
    Hash::of_parts(&[b"doin/evaluator", &beacon.0, &commit.0, &[round], &(group as u64).to_le_bytes()])
}

impl Quorums {
    /// The members of round `round` (0: first, else escalation).
    pub fn members(&self, round: u8) -> &[Address] {
        if round == 0 { &self.first } else { &self.escalation }
    }

    /// The data seed of `member` in round `round`, if it is a member.
    pub fn seed_of(&self, beacon: &Hash, commit: &Hash, round: u8, member: &Address) -> Option<Hash> {
        let list = self.members(round);
        let i = list.iter().position(|a| a == member)?;
        Some(group_seed(beacon, commit, round.min(1), group_of(i, list.len())))
    }
}

/// Draws `k` candidates without replacement, weighted, from a BLAKE3 stream seeded by `seed`.
pub fn draw(candidates: &[Candidate], k: usize, seed: &Hash) -> Vec<Address> {
    let mut pool: Vec<Candidate> = candidates.to_vec();
    let mut stream = blake3::Hasher::new_keyed(&seed.0).finalize_xof();
    let mut picked = Vec::with_capacity(k.min(pool.len()));
    while picked.len() < k && !pool.is_empty() {
        let total: u128 = pool.iter().map(|c| c.weight).fold(0u128, u128::saturating_add);
        let mut buf = [0u8; 16];
        stream.fill(&mut buf);
        // Modulo bias is below 2^-64 for any realistic total stake.
        let mut r = u128::from_le_bytes(buf) % total.max(1);
        let mut index = pool.len() - 1;
        for (i, c) in pool.iter().enumerate() {
            if r < c.weight {
                index = i;
                break;
            }
            r -= c.weight;
        }
        picked.push(pool.remove(index).address);
    }
    picked
}

/// The first-round and escalation quorums of one commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// Number of eligible evaluators.
    pub eligible: usize,
    /// First-round members.
    pub first: Vec<Address>,
    /// Escalation members.
    pub escalation: Vec<Address>,
}

/// Where a commit's quorum comes from: the block that included it (its eligible evaluators)
/// and the beacon after the next block, which nobody knew when the commit was included.
#[derive(Clone, Copy, Debug)]
pub struct Sealed<'a> {
    /// The inclusion block.
    pub inclusion: &'a RecentBlock,
    /// The beacon after the sealing block.
    pub beacon: Hash,
}

/// The seal of a commit on the state's chain: `None` until the block after its inclusion
/// exists (or once its window has closed).
pub fn sealed<'a>(state: &'a State, commit: &Hash) -> Option<Sealed<'a>> {
    let height = state.committed_at(commit)?;
    let inclusion = state.recent_at(height)?;
    let beacon = state.recent_at(height.checked_add(1)?)?.beacon;
    Some(Sealed { inclusion, beacon })
}

/// Computes both quorums for a commit from its seal.
pub fn quorums(
    sealed: &Sealed<'_>,
    rule: &QuorumRule,
    domain: &DomainId,
    optimizer: &Address,
    commit: &Hash,
) -> Quorums {
    let candidates = eligible(sealed.inclusion, domain, optimizer);
    let k = quorum_size(candidates.len(), rule);
    let first = draw(&candidates, k, &seed(&sealed.beacon, commit));
    let escalation =
        draw(&candidates, escalation_size(k, candidates.len()), &escalation_seed(&sealed.beacon, commit));
    Quorums { eligible: candidates.len(), first, escalation }
}

/// Quorums for a commit on a state's chain, for nodes deciding whether they must evaluate.
/// `None` if the commit is not sealed on this chain or the domain is unknown.
pub fn quorums_for(state: &State, domain: &DomainId, optimizer: &Address, commit: &Hash) -> Option<Quorums> {
    let sealed = sealed(state, commit)?;
    let spec = &state.domain(domain)?.spec;
    Some(quorums(&sealed, &spec.quorum, domain, optimizer, commit))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_pairs_with_a_last_triple() {
        let groups = |k: usize| (0..k).map(|i| group_of(i, k)).collect::<Vec<_>>();
        assert_eq!(groups(1), [0]);
        assert_eq!(groups(2), [0, 0]);
        assert_eq!(groups(3), [0, 0, 0]);
        assert_eq!(groups(4), [0, 0, 1, 1]);
        assert_eq!(groups(5), [0, 0, 1, 1, 1]);
        assert_eq!(groups(7), [0, 0, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn sizes() {
        let rule = QuorumRule { min: 3, max: 7, fraction_num: 2, fraction_den: 3 };
        assert_eq!(quorum_size(0, &rule), 0);
        assert_eq!(quorum_size(1, &rule), 1);
        assert_eq!(quorum_size(5, &rule), 3);
        assert_eq!(quorum_size(16, &rule), 4);
        assert_eq!(quorum_size(1000, &rule), 7);
        assert_eq!(escalation_size(3, 5), 5);
        assert_eq!(escalation_size(3, 50), 7);
    }

    #[test]
    fn draw_is_deterministic_weighted_and_without_replacement() {
        let cands: Vec<_> = (0..20u8)
            .map(|i| Candidate { address: Address([i; 32]), weight: if i == 0 { 1_000_000 } else { 1 } })
            .collect();
        let s = Hash::of(b"seed");
        let a = draw(&cands, 5, &s);
        assert_eq!(a, draw(&cands, 5, &s));
        let mut dedup = a.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 5);
        // The heavy candidate is drawn in almost every quorum.
        let hits = (0..100u32)
            .filter(|i| draw(&cands, 1, &Hash::of(&i.to_le_bytes())).contains(&Address([0; 32])))
            .count();
        assert!(hits > 95, "{hits}");
        assert_ne!(draw(&cands, 5, &Hash::of(b"other")), a);
    }
}
