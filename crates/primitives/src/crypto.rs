//! Keys, addresses, hashes and domain-tagged signatures.
//!
//! An account is an ed25519 key pair; its 32-byte public key *is* the [`Address`]. The same key
//! identifies the node on the network: [`Address::peer_id_bytes`] is exactly the libp2p `PeerId`
//! multihash of that key. Every signature covers `tag || hash`, where the tag names the kind of
//! object ([`SigTag`]), so a signature over one kind can never be replayed as another.

use std::{fmt, str::FromStr};

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A BLAKE3-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize)]
pub struct Hash(pub [u8; 32]);

/// Chunk size of content-addressed artifacts.
pub const ARTIFACT_CHUNK_BYTES: usize = 1024 * 1024;

impl Hash {
    /// The all-zero hash (parent of genesis, "none").
    pub const ZERO: Self = Self([0u8; 32]);

    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The content address of an artifact (a model, an update): `bytes` in chunks of
    /// [`ARTIFACT_CHUNK_BYTES`], hashed over the concatenation of the chunks' hashes (the
    /// artifact's manifest), so a downloader checks every chunk on arrival.
    pub fn of_artifact(bytes: &[u8]) -> Self {
        let mut manifest = blake3::Hasher::new();
        for chunk in bytes.chunks(ARTIFACT_CHUNK_BYTES) {
            manifest.update(blake3::hash(chunk).as_bytes());
        }
        Self(*manifest.finalize().as_bytes())
    }

    /// Hashes the concatenation of `parts` (no separators: callers pass fixed-size parts or
    /// length-prefixed encodings).
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Self(*hasher.finalize().as_bytes())
    }

    /// Hashes the canonical encoding of `value`.
    pub fn of_encoded<T: BorshSerialize + ?Sized>(value: &T) -> Self {
        let mut hasher = blake3::Hasher::new();
        // Writing into a hasher cannot fail.
        let _ = borsh::to_writer(&mut HashWriter(&mut hasher), value);
        Self(*hasher.finalize().as_bytes())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An account address: the ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The zero address (genesis generator; never a valid key holder).
    pub const ZERO: Self = Self([0u8; 32]);

    /// The libp2p `PeerId` of this key, as bytes: the identity multihash (code 0x00, length 36)
    /// of the protobuf `PublicKey { Type: Ed25519 (1), Data: key }`.
    pub fn peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// The libp2p `PeerId` of this key in its usual base58 text form (`12D3KooW…`).
    pub fn peer_id_string(&self) -> String {
        bs58::encode(self.peer_id_bytes()).into_string()
    }

    /// Recovers the address from `PeerId` bytes, if they hold an ed25519 key.
    pub fn from_peer_id_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 38 || bytes[..6] != [0x00, 0x24, 0x08, 0x01, 0x12, 0x20] {
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[6..]);
        Some(Self(key))
    }

    /// The decompressed verifying key, or `None` if the bytes are not a curve point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Self([0u8; 64])
    }
}

/// What a signature is for. The tag is prepended to the signed hash, so each kind of object has
/// its own signing domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigTag {
    /// A transaction.
    Transaction,
    /// A block header.
    BlockHeader,
    /// An optimae commit.
    Commit,
    /// An optimae reveal.
    Reveal,
    /// An evaluator vote.
    Vote,
    /// An off-chain payment-channel update.
    ChannelUpdate,
    /// A gossip envelope (network layer).
    Gossip,
    /// A finality (checkpoint) vote.
    FinalityVote,
    /// A batch of shared trials (off chain, gossip only).
    Trials,
    /// A contributor's federated update receipt.
    FederatedUpdate,
    /// A contributor's heartbeat to a job's supervisor (off chain).
    FederatedHeartbeat,
    /// A serving node's inference receipt (off chain; evidence when it lies).
    InferenceReceipt,
    /// A provider's answer to a capability challenge (off chain, the resource marketplace).
    CapabilityAnswer,
    /// A provider's offer to a marketplace (off chain).
    MarketOffer,
}

impl SigTag {
    /// The tag bytes.
    pub const fn bytes(self) -> &'static [u8] {
        match self {
            Self::Transaction => b"doin/tx/v1",
            Self::BlockHeader => b"doin/header/v1",
            Self::Commit => b"doin/commit/v1",
            Self::Reveal => b"doin/reveal/v1",
            Self::Vote => b"doin/vote/v1",
            Self::ChannelUpdate => b"doin/channel-update/v1",
            Self::Gossip => b"doin/gossip/v1",
            Self::FinalityVote => b"doin/finality-vote/v1",
            Self::Trials => b"doin/trials/v1",
            Self::FederatedUpdate => b"doin/federated-update/v1",
            Self::FederatedHeartbeat => b"doin/federated-heartbeat/v1",
            Self::InferenceReceipt => b"doin/inference-receipt/v1",
            Self::CapabilityAnswer => b"doin/capability-answer/v1",
            Self::MarketOffer => b"doin/market-offer/v1",
        }
    }

    /// The exact message that is signed: `tag || hash`.
    pub fn message(self, hash: &Hash) -> Vec<u8> {
        let tag = self.bytes();
        let mut msg = Vec::with_capacity(tag.len() + 32);
        msg.extend_from_slice(tag);
        msg.extend_from_slice(&hash.0);
        msg
    }
}

/// A signing key pair. The secret never leaves it; `Debug` shows only the address.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// The key pair for a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte secret seed (for persisting the node key).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The account address.
    pub fn address(&self) -> Address {
        Address(self.0.verifying_key().to_bytes())
    }

    /// Signs `hash` under `tag`.
    pub fn sign(&self, tag: SigTag, hash: &Hash) -> Signature {
        Signature(self.0.sign(&tag.message(hash)).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keypair").field(&self.address()).finish()
    }
}

/// Verifies one signature strictly (rejects small-order keys and non-canonical encodings).
pub fn verify(signer: &Address, tag: SigTag, hash: &Hash, signature: &Signature) -> bool {
    let Some(key) = signer.verifying_key() else { return false };
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(&tag.message(hash), &sig).is_ok()
}

/// Error for a malformed hex value in JSON or on the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex characters, got {got:?}")]
pub struct ParseHexError {
    expected: usize,
    got: String,
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], ParseHexError> {
    let text = text.trim_start_matches("0x");
    let err = || ParseHexError { expected: N * 2, got: text.chars().take(140).collect() };
    let bytes = hex::decode(text).map_err(|_| err())?;
    bytes.try_into().map_err(|_| err())
}

macro_rules! hex_newtype {
    ($ty:ident, $n:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short form keeps logs readable; Display has the full value.
                write!(f, "{}({}…)", stringify!($ty), &hex::encode(self.0)[..12])
            }
        }
        impl FromStr for $ty {
            type Err = ParseHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex::<$n>(s).map(Self)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&hex::encode(self.0))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_newtype!(Hash, 32);
hex_newtype!(Address, 32);
hex_newtype!(Signature, 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_is_the_libp2p_peer_id_of_the_same_key() {
        let kp = Keypair::from_seed([7u8; 32]);
        let lp = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        let peer = lp.public().to_peer_id();
        assert_eq!(kp.address().peer_id_bytes().to_vec(), peer.to_bytes());
        assert_eq!(kp.address().peer_id_string(), peer.to_base58());
        assert_eq!(Address::from_peer_id_bytes(&peer.to_bytes()), Some(kp.address()));
    }

    #[test]
    fn signature_is_bound_to_its_tag() {
        let kp = Keypair::from_seed([1u8; 32]);
        let h = Hash::of(b"object");
        let sig = kp.sign(SigTag::Vote, &h);
        assert!(verify(&kp.address(), SigTag::Vote, &h, &sig));
        assert!(!verify(&kp.address(), SigTag::Transaction, &h, &sig));
        assert!(!verify(&kp.address(), SigTag::Vote, &Hash::of(b"other"), &sig));
        assert!(!verify(&Keypair::from_seed([2u8; 32]).address(), SigTag::Vote, &h, &sig));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash::of(b"x");
        assert_eq!(h.to_string().parse::<Hash>().unwrap(), h);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
        let err = "abc".parse::<Address>().unwrap_err();
        assert!(err.to_string().contains("expected 64 hex characters"));
    }
}
