//! Binary Merkle roots over ordered lists of ids (transaction and certificate roots).
//! Leaves and inner nodes are hashed under different prefixes, an odd node is carried up
//! unchanged, and the empty list has the zero root.

use crate::crypto::Hash;

/// The Merkle root of `leaves` in order.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::ZERO;
    }
    let mut level = leaf_level(leaves);
    while level.len() > 1 {
        level = parents(&level);
    }
    level[0]
}

/// The leaves hashed under the leaf prefix.
fn leaf_level(leaves: &[Hash]) -> Vec<Hash> {
    leaves.iter().map(|l| Hash::of_parts(&[&[0u8], &l.0])).collect()
}

/// The level above `level`: pairs hashed under the inner prefix, an odd last node carried up.
fn parents(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => Hash::of_parts(&[&[1u8], &a.0, &b.0]),
            [a] => *a,
            _ => Hash::ZERO,
        })
        .collect()
}

/// The path proving `leaves[index]` under [`merkle_root`]: the sibling at each level where
/// the node has one (an odd last node is carried up without one). `None`: no such leaf.
pub fn merkle_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut level = leaf_level(leaves);
    let (mut i, mut path) = (index, Vec::new());
    while level.len() > 1 {
        if let Some(sibling) = level.get(i ^ 1) {
            path.push(*sibling);
        }
        level = parents(&level);
        i /= 2;
    }
    Some(path)
}

/// The root a leaf at `index` of `count` leaves gives with `path` ([`merkle_path`]); `None`
/// when the path's length does not fit the position (too short or too long).
pub fn root_from_path(leaf: &Hash, index: u64, count: u64, path: &[Hash]) -> Option<Hash> {
    if index >= count {
        return None;
    }
    let mut node = Hash::of_parts(&[&[0u8], &leaf.0]);
    let (mut i, mut width, mut used) = (index, count, 0usize);
    while width > 1 {
        let sibling = i ^ 1;
        if sibling < width {
            let s = path.get(used)?;
            used += 1;
            node = if i % 2 == 0 {
                Hash::of_parts(&[&[1u8], &node.0, &s.0])
            } else {
                Hash::of_parts(&[&[1u8], &s.0, &node.0])
            };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    (used == path.len()).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_proves_itself_and_nothing_else_does() {
        for n in 1..=17usize {
            let leaves: Vec<Hash> = (0..n).map(|i| Hash::of(&(i as u64).to_le_bytes())).collect();
            let root = merkle_root(&leaves);
            for i in 0..n {
                let path = merkle_path(&leaves, i).unwrap();
                assert_eq!(root_from_path(&leaves[i], i as u64, n as u64, &path), Some(root), "{n}/{i}");
                // Another leaf, another position, a trimmed or padded path: not the root.
                let other = Hash::of(b"other");
                assert_ne!(root_from_path(&other, i as u64, n as u64, &path), Some(root));
                if n > 1 {
                    let j = (i + 1) % n;
                    assert_ne!(root_from_path(&leaves[i], j as u64, n as u64, &path), Some(root));
                }
                if !path.is_empty() {
                    assert_eq!(root_from_path(&leaves[i], i as u64, n as u64, &path[1..]), None);
                }
                let mut long = path.clone();
                long.push(other);
                assert_eq!(root_from_path(&leaves[i], i as u64, n as u64, &long), None);
            }
            assert_eq!(merkle_path(&leaves, n), None);
            assert_eq!(root_from_path(&leaves[0], n as u64, n as u64, &[]), None);
        }
    }

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
