//! `doin snapshot export|import|verify`: state snapshots at finality checkpoints.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use doin_primitives::Hash;
use doin_storage::{ChainStore, StoreOptions, snapshot};

/// The chain store file inside a data directory.
pub(crate) fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("chain.redb")
}

#[derive(Debug, Subcommand)]
pub(crate) enum Snapshot {
    /// Writes the state at the store's finalized checkpoint as hashed chunks plus a manifest.
    Export {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Output directory (default: DATA_DIR/snapshot).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verifies a snapshot and creates a new chain store from it.
    Import {
        /// Data directory for the new store (must not hold one yet).
        #[arg(long)]
        data_dir: PathBuf,
        /// Snapshot directory.
        #[arg(long)]
        from: PathBuf,
        /// The checkpoint block hash you trust (from a peer you trust or an anchor).
        #[arg(long)]
        expect_hash: Option<Hash>,
    },
    /// Checks every chunk and the rebuilt state root against the snapshot's header.
    Verify {
        /// Snapshot directory.
        #[arg(long)]
        from: PathBuf,
        /// The checkpoint block hash you trust.
        #[arg(long)]
        expect_hash: Option<Hash>,
    },
}

pub(crate) fn run(cmd: Snapshot) -> anyhow::Result<()> {
    match cmd {
        Snapshot::Export { data_dir, out } => {
            let store = ChainStore::open_existing(&store_path(&data_dir), StoreOptions::default())?;
            let out = out.unwrap_or_else(|| snapshot::default_dir(&data_dir));
            let m = store.export_snapshot(&out).with_context(|| format!("exporting to {}", out.display()))?;
            let line = serde_json::json!({
                "snapshot": out.display().to_string(),
                "height": m.height,
                "block_hash": m.block_hash.to_string(),
                "state_root": m.state_root.to_string(),
                "records": m.records,
                "chunks": m.chunks.len(),
            });
            println!("{line}");
        }
        Snapshot::Import { data_dir, from, expect_hash } => {
            if expect_hash.is_none() {
                eprintln!("warning: no --expect-hash: the snapshot is only checked against its own header");
            }
            let (store, report) =
                snapshot::import(&from, &store_path(&data_dir), expect_hash, StoreOptions::default())?;
            let line = serde_json::json!({
                "imported": store.path().display().to_string(),
                "height": report.height,
                "records": report.records,
                "bytes": report.bytes,
                "seconds": report.seconds,
                "state_root": store.tip().root().to_string(),
            });
            println!("{line}");
        }
        Snapshot::Verify { from, expect_hash } => {
            let v = snapshot::verify(&from, expect_hash)?;
            let line = serde_json::json!({
                "verified": true,
                "height": v.manifest.height,
                "block_hash": v.manifest.block_hash.to_string(),
                "state_root": v.state.root().to_string(),
                "records": v.manifest.records,
            });
            println!("{line}");
        }
    }
    Ok(())
}
