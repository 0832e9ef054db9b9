//! The authenticated state tree: a Jellyfish Merkle Tree (the `jmt` crate, as used by Penumbra
//! and Sovereign) over BLAKE3, kept in a persistent in-memory node map so that cloning a state
//! is O(1) and each block updates the root in O(changes · log n).
//!
//! Every state record is a leaf: key `H(encode(StateKey))`, value `encode(record)`. Version `h`
//! of the tree is the state after block `h`; nodes made stale by a block are dropped from the
//! new state's map (older states keep their own copies through structural sharing).

use doin_primitives::Hash;
use jmt::{
    JellyfishMerkleTree, KeyHash, OwnedValue, SimpleHasher, Version,
    proof::SparseMerkleProof,
    storage::{LeafNode, Node, NodeKey, TreeReader},
};

/// BLAKE3 for the tree's inner hashing.
#[derive(Debug)]
pub struct TreeHasher(blake3::Hasher);

impl SimpleHasher for TreeHasher {
    fn new() -> Self {
        Self(blake3::Hasher::new())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// A membership or non-membership proof of one state record against a state root.
pub type StateProof = SparseMerkleProof<TreeHasher>;

/// The tree's nodes, shared structurally between states.
#[derive(Clone, Default)]
pub(crate) struct NodeStore {
    nodes: imbl::GenericHashMap<NodeKey, Node, rustc_hash::FxBuildHasher, imbl::shared_ptr::DefaultSharedPtr>,
    /// The tree's internal version: node hashes (and so the root) do not depend on it, so it
    /// simply counts updates.
    version: Option<Version>,
    /// A value the proof reader should return (set only on a temporary copy while proving).
    proving: Option<(KeyHash, Option<OwnedValue>)>,
}

impl std::fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStore").field("nodes", &self.nodes.len()).finish()
    }
}

impl TreeReader for NodeStore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.nodes.get(node_key).cloned())
    }

    fn get_value_option(
        &self,
        _max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(match &self.proving {
            Some((k, v)) if *k == key_hash => v.clone(),
            _ => None,
        })
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Ok(None)
    }
}

/// A tree operation failed: the node map lacks a node it should have (a bug, never input).
#[derive(Debug, thiserror::Error)]
#[error("state tree error: {0}")]
pub struct TreeError(pub String);

impl NodeStore {
    /// Applies `changes` and returns the new root. Deletions go through jmt's per-key path;
    /// upserts through its batch insertion, which hashes each touched node once.
    pub(crate) fn update(&mut self, changes: Vec<(KeyHash, Option<OwnedValue>)>) -> Result<Hash, TreeError> {
        let (upserts, deletes): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, v)| v.is_some());
        let mut root = None;
        if !deletes.is_empty() || (upserts.is_empty() && self.version.is_none()) {
            root = Some(self.apply(|tree, version| tree.put_value_set(deletes, version))?);
        }
        if !upserts.is_empty() {
            let upserts: Vec<(KeyHash, OwnedValue)> =
                upserts.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
            root = Some(self.apply(|tree, version| {
                tree.batch_put_value_sets(vec![upserts], None, version)
                    .map(|(roots, batch)| (roots.first().copied().unwrap_or(jmt::RootHash([0; 32])), batch))
            })?);
        }
        match root {
            Some(r) => Ok(r),
            None => self.root(),
        }
    }

    fn apply(
        &mut self,
        op: impl FnOnce(
            &JellyfishMerkleTree<'_, NodeStore, TreeHasher>,
            Version,
        ) -> anyhow::Result<(jmt::RootHash, jmt::storage::TreeUpdateBatch)>,
    ) -> Result<Hash, TreeError> {
        let version = self.version.map_or(0, |v| v + 1);
        let (root, batch) = {
            let tree = JellyfishMerkleTree::<_, TreeHasher>::new(&*self);
            op(&tree, version).map_err(|e| TreeError(format!("{e:#}")))?
        };
        for (key, node) in batch.node_batch.nodes() {
            self.nodes.insert(key.clone(), node.clone());
        }
        for stale in &batch.stale_node_index_batch {
            self.nodes.remove(&stale.node_key);
        }
        self.version = Some(version);
        Ok(Hash(root.0))
    }

    /// The current root.
    pub(crate) fn root(&self) -> Result<Hash, TreeError> {
        let version = self.version.ok_or_else(|| TreeError("the tree is empty".into()))?;
        let tree = JellyfishMerkleTree::<_, TreeHasher>::new(self);
        tree.get_root_hash(version).map(|r| Hash(r.0)).map_err(|e| TreeError(format!("{e:#}")))
    }

    /// Proves the value under `key` at `version`; `value` is the record the caller read from the
    /// typed state.
    pub(crate) fn prove(&self, key: KeyHash, value: Option<OwnedValue>) -> Result<StateProof, TreeError> {
        let version = self.version.ok_or_else(|| TreeError("the tree is empty".into()))?;
        let mut reader = self.clone();
        reader.proving = Some((key, value));
        let tree = JellyfishMerkleTree::<_, TreeHasher>::new(&reader);
        let (_, proof) = tree.get_with_proof(key, version).map_err(|e| TreeError(format!("{e:#}")))?;
        Ok(proof)
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Checks `proof` for `key` having `value` (or being absent) under `root`.
pub fn verify_proof(root: &Hash, key: KeyHash, value: Option<&[u8]>, proof: &StateProof) -> bool {
    proof.verify(jmt::RootHash(root.0), key, value).is_ok()
}
