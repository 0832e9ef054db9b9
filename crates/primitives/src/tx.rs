//! Transactions: every way an account changes chain state outside of Proof of Optimization.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::{BoundedBytes, BoundedString, BoundedVec, encode},
    crypto::{Address, Hash, SigTag},
    domain::{DomainId, DomainSpec},
    federated::{FederatedRound, RoundVote},
    inference::InferenceDispute,
    signed::{Signable, Signed},
    units::Amount,
};

/// Largest encoded transaction accepted from anywhere.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Most domains one stake may name.
pub const MAX_STAKE_DOMAINS: usize = 32;

/// A signed transaction.
pub type Transaction = Signed<TxBody>;

/// The signed content of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TxBody {
    /// The chain this transaction is for (replay protection across chains).
    pub chain_id: u64,
    /// The paying, signing account.
    pub sender: Address,
    /// Must equal the sender's account nonce; increments by one.
    pub nonce: u64,
    /// Highest total fee per weight unit the sender pays (base fee + tip).
    pub max_fee: Amount,
    /// Tip per weight unit to the block generator, on top of the base fee.
    pub priority_fee: Amount,
    /// What the transaction does.
    pub kind: TxKind,
}

impl Signable for TxBody {
    const TAG: SigTag = SigTag::Transaction;
    fn signer(&self) -> &Address {
        &self.sender
    }
}

impl TxBody {
    /// The weight ("gas") this transaction uses: a per-kind base cost plus its encoded size.
    /// Base fee, tips and the per-block limit are all counted in weight units.
    pub fn weight(&self) -> u64 {
        Self::weight_for(&self.kind, encode(self).len())
    }

    /// [`TxBody::weight`] when the encoded length is already known.
    pub fn weight_for(kind: &TxKind, encoded_len: usize) -> u64 {
        let base = match kind {
            TxKind::Transfer { .. } => 1_000,
            TxKind::Stake { .. } => 5_000,
            TxKind::Unstake { .. } => 2_000,
            TxKind::RegisterDomain { .. } => 50_000,
            TxKind::OpenChannel { .. } | TxKind::CloseChannel { .. } | TxKind::ChallengeChannel { .. } => {
                3_000
            }
            TxKind::Anchor { .. } => 2_000,
            // Consensus checks a signature per contribution and pays each.
            TxKind::FederatedRound { round } => 10_000 + 2_000 * round.contributions.len() as u64,
            TxKind::FederatedVote { vote } => 5_000 + 100 * vote.qualities.len() as u64,
            // Consensus checks the receipt's signature and the row's Merkle path.
            TxKind::DisputeInference { .. } => 20_000,
            TxKind::DisputeVote { .. } => 3_000,
        };
        // The signature's 64 bytes count too.
        base + encoded_len as u64 + 64
    }
}

/// The operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxKind {
    /// Moves coins.
    Transfer {
        /// Recipient.
        to: Address,
        /// Amount.
        amount: Amount,
    },
    /// Adds `amount` to the sender's stake and sets its roles, domains and advertised
    /// capabilities (the "staking ticket" is this transaction's id).
    Stake {
        /// Added stake.
        amount: Amount,
        /// Roles served.
        roles: Roles,
        /// Domains served.
        domains: BoundedVec<DomainId, MAX_STAKE_DOMAINS>,
        /// Advertised capabilities and price.
        preferences: Capabilities,
    },
    /// Moves `amount` of stake into the unbonding queue; it becomes spendable after
    /// `unbonding_blocks`.
    Unstake {
        /// Amount to unbond.
        amount: Amount,
    },
    /// Registers a new domain, escrowing `bounty` for its accepted improvements.
    RegisterDomain {
        /// The domain.
        spec: Box<DomainSpec>,
        /// Escrowed bounty.
        bounty: Amount,
    },
    /// Opens a unidirectional payment channel from the sender to `payee`.
    OpenChannel {
        /// Who gets paid.
        payee: Address,
        /// Locked deposit.
        deposit: Amount,
        /// After this height the channel closes with the last posted update.
        expiry_height: u64,
    },
    /// Closes a channel with the payer's signed update. From the payee it settles at once; from
    /// the payer it opens the challenge window.
    CloseChannel {
        /// The payer's latest update.
        final_update: ChannelUpdate,
    },
    /// During the challenge window, the payee posts a newer update than the payer's.
    ChallengeChannel {
        /// A higher-nonce update.
        newer_update: ChannelUpdate,
    },
    /// Records that a finality checkpoint was published outside the chain.
    Anchor {
        /// Checkpoint height.
        height: u64,
        /// Checkpoint hash.
        block_hash: Hash,
        /// Where it was published (URL, file, foreign transaction id).
        external_ref: BoundedBytes<256>,
    },
    /// A supervisor's record of a finished federated round; pays the round's pool to its
    /// contributors by the published formula.
    FederatedRound {
        /// The round.
        round: Box<FederatedRound>,
    },
    /// An evaluator of a recorded round's audit quorum reports its re-measurement; the round's
    /// pool is paid by the quorum's median qualities once a majority agrees.
    FederatedVote {
        /// The re-measurement.
        vote: Box<RoundVote>,
    },
    /// Disputes one row of an answer a staked server signed a receipt for: locks the sender's
    /// `dispute_bond` until a quorum of the domain's evaluators has re-executed the row.
    DisputeInference {
        /// The receipt, the row and its Merkle path.
        dispute: Box<InferenceDispute>,
    },
    /// A member of a dispute's quorum reports its re-execution of the disputed row.
    DisputeVote {
        /// The dispute's id ([`InferenceDispute::id`]).
        dispute: Hash,
        /// Whether the model's output differs from the server's.
        wrong: bool,
    },
}

/// The roles a staked account serves, as bit flags.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize)]
pub struct Roles(pub u8);

impl Roles {
    /// Searches for better optimae.
    pub const OPTIMIZER: Self = Self(1);
    /// Re-measures revealed optimae in quorums.
    pub const EVALUATOR: Self = Self(2);
    /// Aggregates federated rounds.
    pub const SUPERVISOR: Self = Self(4);
    /// Serves inference.
    pub const INFERENCE: Self = Self(8);
    /// Relays only.
    pub const RELAY: Self = Self(16);
    /// Trains federated rounds on its own data (the Co-Train seed's registered node).
    pub const CONTRIBUTOR: Self = Self(32);

    const NAMES: [(Self, &'static str); 6] = [
        (Self::OPTIMIZER, "optimizer"),
        (Self::EVALUATOR, "evaluator"),
        (Self::SUPERVISOR, "supervisor"),
        (Self::INFERENCE, "inference"),
        (Self::RELAY, "relay"),
        (Self::CONTRIBUTOR, "contributor"),
    ];

    /// Whether every role of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The PoUW seed's roles (`../shared/seeds/pouw-node.md`) and the DOIN roles each stands for:
/// a MINER searches and claims (optimizer); a SUPERVISOR coordinates federated training and
/// mines too (supervisor + optimizer); a VERIFIER validates others' work and an EVALUATOR
/// measures model quality — in DOIN both are the evaluator quorum's re-measurement (every
/// node checks signatures and blocks whatever its role); a PEER needs no stake: any running
/// node follows the chain and relays gossip.
pub const POUW_ROLES: [(&str, Roles); 5] = [
    ("MINER", Roles::OPTIMIZER),
    ("SUPERVISOR", Roles(Roles::SUPERVISOR.0 | Roles::OPTIMIZER.0)),
    ("VERIFIER", Roles::EVALUATOR),
    ("EVALUATOR", Roles::EVALUATOR),
    ("PEER", Roles(0)),
];

impl Roles {
    /// A role by its PoUW name in capitals (`MINER`, `SUPERVISOR`, …), its DOIN name
    /// (`optimizer`, `supervisor`, …, any case), or a PoUW name DOIN does not use in any case
    /// (`miner`, `verifier`, `peer`).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        let pouw = |n: &str| POUW_ROLES.iter().find(|(p, _)| *p == n).map(|(_, r)| *r);
        let lower = name.to_ascii_lowercase();
        pouw(name)
            .or_else(|| Self::NAMES.iter().find(|(_, n)| *n == lower).map(|(r, _)| *r))
            .or_else(|| pouw(&name.to_ascii_uppercase()))
    }

    /// The PoUW roles these DOIN roles fill (`PEER` alone for none).
    pub fn pouw_names(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        if self.contains(Self::SUPERVISOR) {
            names.push("SUPERVISOR");
        }
        if self.contains(Self::OPTIMIZER) {
            names.push("MINER");
        }
        if self.contains(Self::EVALUATOR) {
            names.extend(["VERIFIER", "EVALUATOR"]);
        }
        if names.is_empty() {
            names.push("PEER");
        }
        names
    }
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = Self::NAMES.iter().filter(|(r, _)| self.contains(*r)).map(|(_, n)| *n).collect();
        write!(f, "{names:?}")
    }
}

impl Serialize for Roles {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names: Vec<_> = Self::NAMES.iter().filter(|(r, _)| self.contains(*r)).map(|(_, n)| *n).collect();
        Serialize::serialize(&names, serializer)
    }
}

impl<'de> Deserialize<'de> for Roles {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = <Vec<String> as Deserialize>::deserialize(deserializer)?;
        let mut roles = Self::default();
        for name in names {
            let role = Self::NAMES.iter().find(|(_, n)| *n == name).map(|(r, _)| *r).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown role {name:?}: expected optimizer, evaluator, supervisor, inference, relay or contributor"
                ))
            })?;
            roles = roles.with(role);
        }
        Ok(roles)
    }
}

/// Capabilities and price a staker advertises for the resource marketplace.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// CPU cores offered.
    pub cpu_cores: u32,
    /// RAM offered, MiB.
    pub ram_mb: u64,
    /// GPUs offered.
    pub gpus: u32,
    /// GPU model name.
    pub gpu_model: BoundedString<64>,
    /// GPU memory per device, MiB.
    pub gpu_mem_mb: u64,
    /// Bandwidth, Mbit/s.
    pub bandwidth_mbps: u32,
    /// Region label.
    pub region: BoundedString<32>,
    /// Asking price per evaluation.
    pub price: Amount,
}

/// A signed off-chain payment-channel update.
pub type ChannelUpdate = Signed<ChannelUpdateBody>;

/// The content of a channel update: "I have paid `paid_total` so far".
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ChannelUpdateBody {
    /// Channel id (the opening transaction's id).
    pub channel: Hash,
    /// The payer (signer).
    pub payer: Address,
    /// Strictly increasing per update.
    pub nonce: u64,
    /// Cumulative amount paid to the payee.
    pub paid_total: Amount,
}

impl Signable for ChannelUpdateBody {
    const TAG: SigTag = SigTag::ChannelUpdate;
    fn signer(&self) -> &Address {
        &self.payer
    }
}

/// Shorthand used by tests and tools.
pub fn string<const N: usize>(text: &str) -> BoundedString<N> {
    BoundedString::new(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_json() {
        let r = Roles::OPTIMIZER.with(Roles::EVALUATOR);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"["optimizer","evaluator"]"#);
        assert_eq!(serde_json::from_str::<Roles>(&json).unwrap(), r);
        let err = serde_json::from_str::<Roles>(r#"["miner"]"#).unwrap_err();
        assert!(err.to_string().contains("unknown role \"miner\""));
    }

    #[test]
    fn pouw_roles_map_to_doin_roles_and_back() {
        assert_eq!(Roles::parse("miner"), Some(Roles::OPTIMIZER));
        assert_eq!(Roles::parse("VERIFIER"), Some(Roles::EVALUATOR));
        assert_eq!(Roles::parse("SUPERVISOR"), Some(Roles::SUPERVISOR.with(Roles::OPTIMIZER)));
        assert_eq!(Roles::parse("supervisor"), Some(Roles::SUPERVISOR));
        assert_eq!(Roles::parse("evaluator"), Some(Roles::EVALUATOR));
        assert_eq!(Roles::parse("peer"), Some(Roles(0)));
        assert_eq!(Roles::parse("inference"), Some(Roles::INFERENCE));
        assert_eq!(Roles::parse("oracle"), None);
        assert_eq!(Roles::OPTIMIZER.with(Roles::EVALUATOR).pouw_names(), ["MINER", "VERIFIER", "EVALUATOR"]);
        assert_eq!(Roles::SUPERVISOR.pouw_names(), ["SUPERVISOR"]);
        assert_eq!(Roles::INFERENCE.pouw_names(), ["PEER"]);
        assert_eq!(Roles(0).pouw_names(), ["PEER"]);
    }
}
