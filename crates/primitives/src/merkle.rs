//! Binary Merkle roots over ordered lists of ids (transaction and certificate roots).
//! Leaves and inner nodes are hashed under different prefixes, an odd node is carried up
//! unchanged, and the empty list has the zero root.

use crate::crypto::Hash;

/// The Merkle root of `leaves` in order.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::ZERO;
    }
    let mut level: Vec<Hash> = leaves.iter().map(|l| Hash::of_parts(&[&[0u8], &l.0])).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => Hash::of_parts(&[&[1u8], &a.0, &b.0]),
                [a] => *a,
                _ => Hash::ZERO,
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_matter() {
        let a = Hash::of(b"a");
        let b = Hash::of(b"b");
        let c = Hash::of(b"c");
        assert_eq!(merkle_root(&[]), Hash::ZERO);
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]));
        assert_ne!(merkle_root(&[a, b, c]), merkle_root(&[a, b]));
        assert_ne!(merkle_root(&[a]), a, "a single leaf is still hashed as a leaf");
    }
}
