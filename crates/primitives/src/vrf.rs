//! ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381): a verifiable random function keyed by the node's
//! ed25519 key. For one key and one input there is exactly one valid output, which nobody
//! without the secret key can compute before the key's owner publishes its proof. Block
//! producers prove one over their parent's beacon, so the chain's randomness cannot be ground
//! by choosing salts, transactions or timestamps (design §3 "Unpredictable quorums").
//!
//! Checked against the RFC's test vectors (Appendix B.3).

use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::{EdwardsPoint, Scalar, edwards::CompressedEdwardsY, scalar::clamp_integer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::crypto::{Address, Hash, Keypair};

/// `suite_string` of ECVRF-EDWARDS25519-SHA512-TAI.
const SUITE: u8 = 0x03;
/// Challenge length in bytes.
const C_LEN: usize = 16;

/// A VRF proof: `Gamma (32) || c (16) || s (32)`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct VrfProof(#[serde(with = "proof_hex")] pub [u8; 80]);

impl Default for VrfProof {
    fn default() -> Self {
        Self([0; 80])
    }
}

mod proof_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 80], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 80], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(D::Error::custom)?;
        bytes.try_into().map_err(|_| D::Error::custom("a VRF proof is 80 bytes"))
    }
}

fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The secret scalar and nonce key of an ed25519 seed (RFC 8032 §5.1.5).
fn expand(seed: &[u8; 32]) -> (Scalar, [u8; 32]) {
    let h = sha512(&[seed]);
    let mut lower = [0u8; 32];
    let mut upper = [0u8; 32];
    lower.copy_from_slice(&h[..32]);
    upper.copy_from_slice(&h[32..]);
    (Scalar::from_bytes_mod_order(clamp_integer(lower)), upper)
}

/// `ECVRF_encode_to_curve_try_and_increment` (§5.4.1.1).
fn encode_to_curve(public: &[u8; 32], alpha: &[u8]) -> Option<EdwardsPoint> {
    for ctr in 0u8..=255 {
        let hash = sha512(&[&[SUITE, 0x01], public, alpha, &[ctr, 0x00]]);
        let mut candidate = [0u8; 32];
        candidate.copy_from_slice(&hash[..32]);
        if let Some(point) = CompressedEdwardsY(candidate).decompress() {
            return Some(point.mul_by_cofactor());
        }
    }
    None
}

/// `ECVRF_challenge_generation` (§5.4.3): the first 16 bytes of the hash of five points.
fn challenge(points: [&EdwardsPoint; 5]) -> [u8; C_LEN] {
    let mut h = Sha512::new();
    h.update([SUITE, 0x02]);
    for p in points {
        h.update(p.compress().as_bytes());
    }
    h.update([0x00]);
    let digest: [u8; 64] = h.finalize().into();
    let mut c = [0u8; C_LEN];
    c.copy_from_slice(&digest[..C_LEN]);
    c
}

fn scalar_of_challenge(c: &[u8; C_LEN]) -> Scalar {
    let mut wide = [0u8; 32];
    wide[..C_LEN].copy_from_slice(c);
    Scalar::from_bytes_mod_order(wide)
}

/// `ECVRF_proof_to_hash` (§5.2): the 64-byte output `beta`.
fn proof_to_hash(gamma: &EdwardsPoint) -> [u8; 64] {
    sha512(&[&[SUITE, 0x03], gamma.mul_by_cofactor().compress().as_bytes(), &[0x00]])
}

/// `ECVRF_prove(SK, alpha)` with the ed25519 `seed` as SK. `None` only if encoding to the curve
/// fails 256 times (probability 2^-256).
pub fn prove_seed(seed: &[u8; 32], alpha: &[u8]) -> Option<VrfProof> {
    let (x, nonce_key) = expand(seed);
    let y = EdwardsPoint::mul_base(&x);
    let public = y.compress().to_bytes();
    let h = encode_to_curve(&public, alpha)?;
    let gamma = x * h;
    let k = Scalar::from_bytes_mod_order_wide(&sha512(&[&nonce_key, h.compress().as_bytes()]));
    let c = challenge([&y, &h, &gamma, &EdwardsPoint::mul_base(&k), &(k * h)]);
    let s = k + scalar_of_challenge(&c) * x;
    let mut pi = [0u8; 80];
    pi[..32].copy_from_slice(gamma.compress().as_bytes());
    pi[32..48].copy_from_slice(&c);
    pi[48..].copy_from_slice(s.as_bytes());
    Some(VrfProof(pi))
}

/// `ECVRF_verify(PK, alpha, pi)`: the output `beta` if `proof` is `public`'s proof for `alpha`.
/// Refuses small-order keys and non-canonical `s`.
pub fn verify_key(public: &[u8; 32], alpha: &[u8], proof: &VrfProof) -> Option<[u8; 64]> {
    let y = CompressedEdwardsY(*public).decompress()?;
    if y.is_small_order() {
        return None;
    }
    let mut gamma_bytes = [0u8; 32];
    gamma_bytes.copy_from_slice(&proof.0[..32]);
    let gamma = CompressedEdwardsY(gamma_bytes).decompress()?;
    let mut c = [0u8; C_LEN];
    c.copy_from_slice(&proof.0[32..48]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&proof.0[48..]);
    let s: Scalar = Option::from(Scalar::from_canonical_bytes(s_bytes))?;
    let h = encode_to_curve(public, alpha)?;
    let c_scalar = scalar_of_challenge(&c);
    let u = EdwardsPoint::mul_base(&s) - c_scalar * y;
    let v = s * h - c_scalar * gamma;
    (challenge([&y, &h, &gamma, &u, &v]) == c).then(|| proof_to_hash(&gamma))
}

/// The VRF input of the block at `height` after a parent whose beacon is `parent_beacon`.
pub fn beacon_input(parent_beacon: &Hash, height: u64) -> Vec<u8> {
    [b"doin/beacon/v1".as_slice(), &parent_beacon.0, &height.to_le_bytes()].concat()
}

/// The beacon after a block whose VRF output is `output`: `H(parent_beacon ‖ output)`.
pub fn next_beacon(parent_beacon: &Hash, output: &Hash) -> Hash {
    Hash::of_parts(&[b"doin/beacon/next", &parent_beacon.0, &output.0])
}

impl Keypair {
    /// This key's VRF proof for `alpha`.
    pub fn vrf_prove(&self, alpha: &[u8]) -> VrfProof {
        // Encoding fails with probability 2^-256; an all-zero proof then simply fails to verify.
        prove_seed(&self.seed(), alpha).unwrap_or_default()
    }
}

impl Address {
    /// The VRF output of `proof` by this address for `alpha`, hashed to 32 bytes, if valid.
    pub fn vrf_verify(&self, alpha: &[u8], proof: &VrfProof) -> Option<Hash> {
        verify_key(&self.0, alpha, proof).map(|beta| Hash::of(&beta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<const N: usize>(text: &str) -> [u8; N] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// RFC 9381 Appendix B.3, Example 16 (SK, PK, alpha = "", pi, beta).
    #[test]
    fn rfc_9381_vector() {
        let sk: [u8; 32] = bytes("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let pk: [u8; 32] = bytes("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let pi: [u8; 80] = bytes(
            "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f479d97\
             27d2d0f9b005a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805",
        );
        let beta: [u8; 64] = bytes(
            "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af02679\
             8e8f81cd2e333de5cdf4f3e140fdd8ae",
        );
        assert_eq!(Keypair::from_seed(sk).address().0, pk);
        let proof = prove_seed(&sk, b"").unwrap();
        assert_eq!(proof.0, pi);
        assert_eq!(verify_key(&pk, b"", &proof), Some(beta));
    }

    #[test]
    fn a_proof_verifies_only_for_its_key_and_input() {
        let key = Keypair::from_seed([7; 32]);
        let other = Keypair::from_seed([8; 32]);
        let proof = key.vrf_prove(b"parent beacon");
        let out = key.address().vrf_verify(b"parent beacon", &proof).unwrap();
        assert_eq!(key.address().vrf_verify(b"parent beacon", &key.vrf_prove(b"parent beacon")), Some(out));
        assert_eq!(key.address().vrf_verify(b"another input", &proof), None);
        assert_eq!(other.address().vrf_verify(b"parent beacon", &proof), None);
        let mut tampered = proof;
        tampered.0[40] ^= 1;
        assert_eq!(key.address().vrf_verify(b"parent beacon", &tampered), None);
        assert_eq!(key.address().vrf_verify(b"parent beacon", &VrfProof::default()), None);
        assert_ne!(key.address().vrf_verify(b"x", &key.vrf_prove(b"x")), Some(out));
    }
}
