//! Table layout and schema version.

use redb::TableDefinition;

/// Schema version this build writes. Bump with a migration in `migrate`. Version 2
/// (2026-12-02): block headers carry a VRF proof, the chain meta a beacon and domain specs
/// relative tolerances (issue 17); version-1 chains cannot be read or continued. Version 3:
/// commits bound on chain. Version 4: finality by stake (votes and evidence in block bodies,
/// justified checkpoint in the chain meta, finality records in the state). Version 5: federated
/// rounds (round transactions, the contributor role, domains' federated state, receipts with
/// the payouts a transaction made). Version 6: audited rounds (pending rounds and their votes
/// in the federated state, contributions' say, receipts with the rounds a transaction settled).
/// Version 7: champions' models (votes measure a reveal's model artifact; a champion records
/// the quorum's measured model quality). Version 8: inference disputes (disputes in the state,
/// receipts committing per row). Version 9: domains record the evaluators absent from their
/// disputes' quorums; federated domains register their initial model. Version 10: federated
/// domains record their verified model (the newest audited round's, served for inference) and
/// round records name the supervisor's published contributor standings.
pub const SCHEMA_VERSION: u32 = 10;

/// `schema_version`, `genesis`, `genesis_spec`, `tip`, `base` (lowest stored state height).
pub(crate) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Block hash → encoded header.
pub(crate) const HEADERS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("headers");
/// Block hash → encoded body (pruned behind finality in non-archive mode).
pub(crate) const BODIES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("bodies");
/// Canonical height → block hash.
pub(crate) const CANONICAL: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("canonical");
/// Transaction id → block hash (32) ‖ index (u32 LE), canonical blocks only.
pub(crate) const TX_INDEX: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("tx_index");
/// Commit id → block hash (32) ‖ index (u32 LE), canonical blocks only.
pub(crate) const CERT_INDEX: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("cert_index");
/// Block hash → encoded receipt.
pub(crate) const RECEIPTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("receipts");
/// Encoded state key → encoded record, at the canonical tip.
pub(crate) const STATE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("state");
/// Canonical height → the previous values of the records that block wrote (for reorgs and
/// reconstructing recent states), kept above the finalized checkpoint.
pub(crate) const UNDO: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("undo");
/// Canonical height → encoded `RecentBlock` (the block's quorum view).
pub(crate) const RECENT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("recent");
