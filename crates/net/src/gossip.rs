//! Gossip topics and messages. Every payload is one [`GossipMessage`] in borsh; its id is its
//! BLAKE3 hash; it is validated (bounds, signatures, caller checks) before it is forwarded.

use borsh::{BorshDeserialize, BorshSerialize};
use doin_primitives::{
    BlockHeader, Commit, DoubleVoteEvidence, FinalityEvidence, FinalityVote, Hash, Reveal, Transaction,
    TrialBatch, Vote, decode, encode,
};

/// Largest gossip payload.
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Most ids in a compact block announcement.
pub const MAX_ANNOUNCED_IDS: usize = 16_384 + 256 + 64;

/// A gossip topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Block announcements.
    Blocks,
    /// Transactions.
    Txs,
    /// Commits, reveals and votes of one domain.
    Optimae(String),
}

impl Topic {
    /// The wire name (`doin/blocks/1`, `doin/txs/1`, `doin/optimae/<domain>/1`).
    pub fn name(&self) -> String {
        match self {
            Self::Blocks => "doin/blocks/1".into(),
            Self::Txs => "doin/txs/1".into(),
            Self::Optimae(d) => format!("doin/optimae/{d}/1"),
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "doin/blocks/1" => Some(Self::Blocks),
            "doin/txs/1" => Some(Self::Txs),
            _ => name.strip_prefix("doin/optimae/")?.strip_suffix("/1").map(|d| Self::Optimae(d.to_owned())),
        }
    }

    /// The gossipsub topic.
    pub fn ident(&self) -> libp2p::gossipsub::IdentTopic {
        libp2p::gossipsub::IdentTopic::new(self.name())
    }
}

/// A compact block announcement: the header plus the ids of the body's items; receivers rebuild
/// the body from their mempool and fetch only what they lack. Finality votes travel whole (a
/// node that missed one's gossip could not rebuild the block, and they are small).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CompactBlock {
    /// The signed header.
    pub header: BlockHeader,
    /// Transaction ids in order.
    pub tx_ids: Vec<Hash>,
    /// Certificate ids in order.
    pub cert_ids: Vec<Hash>,
    /// Evidence ids in order.
    pub evidence_ids: Vec<Hash>,
    /// Commit ids in order.
    pub commit_ids: Vec<Hash>,
    /// The finality votes, whole.
    pub finality_votes: Vec<FinalityVote>,
    /// Finality evidence ids in order.
    pub finality_evidence_ids: Vec<Hash>,
}

impl CompactBlock {
    /// The announcement of `block`.
    pub fn of(block: &doin_primitives::Block) -> Self {
        Self {
            header: block.header.clone(),
            tx_ids: block.body.transactions.iter().map(|t| t.id()).collect(),
            cert_ids: block.body.certificates.iter().map(doin_primitives::Certificate::id).collect(),
            evidence_ids: block.body.evidence.iter().map(doin_primitives::DoubleVoteEvidence::id).collect(),
            commit_ids: block.body.commits.iter().map(Commit::id).collect(),
            finality_votes: block.body.finality_votes.to_vec(),
            finality_evidence_ids: block.body.finality_evidence.iter().map(FinalityEvidence::id).collect(),
        }
    }

    /// Rebuilds the block from transactions (`lookup`), commits (`commits`) and certificates
    /// (`certs`, by certificate id) we hold, or returns the transaction ids we lack. Evidence is
    /// rare: any of it, or a commit or certificate we do not hold, makes the caller fetch the
    /// body.
    pub fn rebuild(
        &self,
        lookup: impl Fn(&Hash) -> Option<Transaction>,
        commits: impl Fn(&Hash) -> Option<Commit>,
        certs: impl Fn(&Hash) -> Option<doin_primitives::Certificate>,
    ) -> Result<doin_primitives::Block, Vec<Hash>> {
        let mut missing = Vec::new();
        let mut txs = Vec::with_capacity(self.tx_ids.len());
        for id in &self.tx_ids {
            match lookup(id) {
                Some(tx) if tx.id() == *id => txs.push(tx),
                _ => missing.push(*id),
            }
        }
        if !missing.is_empty() || !self.evidence_ids.is_empty() || !self.finality_evidence_ids.is_empty() {
            return Err(missing);
        }
        let mut certificates = Vec::with_capacity(self.cert_ids.len());
        for id in &self.cert_ids {
            match certs(id) {
                Some(c) if c.id() == *id => certificates.push(c),
                _ => return Err(missing),
            }
        }
        let mut held = Vec::with_capacity(self.commit_ids.len());
        for id in &self.commit_ids {
            match commits(id) {
                Some(c) if c.id() == *id => held.push(c),
                _ => return Err(missing),
            }
        }
        let body = doin_primitives::BlockBody {
            transactions: doin_primitives::BoundedVec::try_from_vec(txs).map_err(|_| Vec::new())?,
            commits: doin_primitives::BoundedVec::try_from_vec(held).map_err(|_| Vec::new())?,
            certificates: doin_primitives::BoundedVec::try_from_vec(certificates).map_err(|_| Vec::new())?,
            finality_votes: doin_primitives::BoundedVec::try_from_vec(self.finality_votes.clone())
                .map_err(|_| Vec::new())?,
            ..Default::default()
        };
        Ok(doin_primitives::Block { header: self.header.clone(), body })
    }
}

/// Everything that travels by gossip.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum GossipMessage {
    /// A new block.
    Block(Box<CompactBlock>),
    /// A transaction.
    Transaction(Box<Transaction>),
    /// An optimae commit.
    Commit(Box<Commit>),
    /// An optimae reveal.
    Reveal(Box<Reveal>),
    /// An evaluator vote.
    Vote(Box<Vote>),
    /// Two different votes by one evaluator for one commit and round (on the blocks topic:
    /// every block producer needs it).
    Evidence(Box<DoubleVoteEvidence>),
    /// A staker's checkpoint vote (blocks topic: producers include them).
    FinalityVote(Box<FinalityVote>),
    /// Two conflicting finality votes by one key (blocks topic).
    FinalityEvidence(Box<FinalityEvidence>),
    /// A node's evaluated trials of a domain (its optimae topic): shared search history.
    Trials(Box<TrialBatch>),
}

/// Why a gossip message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// Does not decode within bounds.
    #[error("undecodable gossip message: {0}")]
    Decode(String),
    /// A signature does not verify.
    #[error("bad signature on a gossiped {0}")]
    Signature(&'static str),
    /// Sent on a topic it does not belong to.
    #[error("a {kind} does not belong on topic {topic}")]
    WrongTopic {
        /// Message kind.
        kind: &'static str,
        /// Topic name.
        topic: String,
    },
    /// Too many ids in an announcement.
    #[error("block announcement lists too many ids")]
    TooLarge,
    /// The caller's state checks refused it.
    #[error("refused: {0}")]
    Refused(String),
}

impl GossipMessage {
    /// Encodes for publishing.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// The message's content id.
    pub fn id(bytes: &[u8]) -> Hash {
        Hash::of(bytes)
    }

    /// Decodes and checks what can be checked without chain state: size bounds, the author's
    /// signature, and that the message belongs on `topic`.
    pub fn decode_and_check(topic: &Topic, bytes: &[u8]) -> Result<Self, GossipError> {
        let msg: Self = decode(bytes, MAX_GOSSIP_BYTES, "gossip message")
            .map_err(|e| GossipError::Decode(e.to_string()))?;
        let wrong = |kind| GossipError::WrongTopic { kind, topic: topic.name() };
        match (&msg, topic) {
            (Self::Block(b), Topic::Blocks) => {
                if b.tx_ids.len() + b.cert_ids.len() + b.evidence_ids.len() + b.commit_ids.len()
                    > MAX_ANNOUNCED_IDS
                    || b.finality_votes.len() > doin_primitives::finality::MAX_BLOCK_FINALITY_VOTES
                    || b.finality_evidence_ids.len() > doin_primitives::finality::MAX_BLOCK_FINALITY_EVIDENCE
                {
                    return Err(GossipError::TooLarge);
                }
                // Genesis is never announced; every other header is signed by its generator.
                if !b.header.verify() {
                    return Err(GossipError::Signature("block header"));
                }
            }
            (Self::Transaction(t), Topic::Txs) => {
                if !t.verify() {
                    return Err(GossipError::Signature("transaction"));
                }
            }
            // Commits travel on the blocks topic: every block producer may have to include them.
            (Self::Commit(c), Topic::Blocks) => {
                if !c.verify() {
                    return Err(GossipError::Signature("commit"));
                }
            }
            (Self::Reveal(r), Topic::Optimae(_)) => {
                if !r.verify() {
                    return Err(GossipError::Signature("reveal"));
                }
            }
            (Self::Vote(v), Topic::Optimae(_)) => {
                if !v.verify() {
                    return Err(GossipError::Signature("vote"));
                }
            }
            (Self::Evidence(e), Topic::Blocks) => {
                if !e.first.verify() || !e.second.verify() {
                    return Err(GossipError::Signature("double-vote evidence"));
                }
            }
            (Self::FinalityVote(v), Topic::Blocks) => {
                if !v.verify() {
                    return Err(GossipError::Signature("finality vote"));
                }
            }
            (Self::FinalityEvidence(e), Topic::Blocks) => {
                if !e.first.verify() || !e.second.verify() {
                    return Err(GossipError::Signature("finality evidence"));
                }
            }
            (Self::Trials(t), Topic::Optimae(domain)) => {
                if t.body.domain.as_str() != domain {
                    return Err(wrong("trial batch of another domain"));
                }
                if t.body.check_shape().is_err() {
                    return Err(GossipError::TooLarge);
                }
                if !t.verify() {
                    return Err(GossipError::Signature("trial batch"));
                }
            }
            (Self::Trials(_), _) => return Err(wrong("trial batch")),
            (Self::FinalityVote(_), _) => return Err(wrong("finality vote")),
            (Self::FinalityEvidence(_), _) => return Err(wrong("finality evidence")),
            (Self::Evidence(_), _) => return Err(wrong("evidence")),
            (Self::Commit(_), _) => return Err(wrong("commit")),
            (Self::Block(_), _) => return Err(wrong("block")),
            (Self::Transaction(_), _) => return Err(wrong("transaction")),
            (_, _) => return Err(wrong("optimae message")),
        }
        Ok(msg)
    }
}
