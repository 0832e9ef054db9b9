//! `doin bench …`: system benchmarks, each printing one JSON line of results.

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use doin_consensus::{BlockTemplate, apply_block, build_block, testkit::TestNet};
use doin_primitives::{Amount, Block, BlockBody, BlockKind, BoundedVec, SigTag, SignatureItem, verify_batch};

#[derive(Debug, Subcommand)]
pub(crate) enum Bench {
    /// Applies blocks of signed transfers on one core (signature checks, state updates and
    /// state-root computation included) and measures raw ed25519 batch verification alongside.
    Ledger {
        /// Blocks to apply.
        #[arg(long, default_value_t = 20)]
        blocks: usize,
        /// Transfers per block.
        #[arg(long, default_value_t = 2_000)]
        txs_per_block: usize,
        /// Distinct sending accounts.
        #[arg(long, default_value_t = 4_000)]
        accounts: usize,
    },
}

pub(crate) fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Ledger { blocks, txs_per_block, accounts } => ledger(blocks, txs_per_block, accounts),
    }
}

fn ledger(blocks: usize, txs_per_block: usize, accounts: usize) -> anyhow::Result<()> {
    if blocks == 0 || txs_per_block == 0 || accounts < 2 {
        bail!("--blocks and --txs-per-block must be at least 1 and --accounts at least 2");
    }
    // No stakers: anyone may produce heartbeat blocks, so the chain is only transfers.
    let mut net = TestNet::new(accounts, 0, 0);
    let genesis_state = net.state.clone();
    let mut nonces = vec![0u64; accounts];
    let mut chain: Vec<Block> = Vec::with_capacity(blocks);
    let mut next_sender = 0usize;
    for _ in 0..blocks {
        let mut txs = Vec::with_capacity(txs_per_block);
        for _ in 0..txs_per_block {
            let from = next_sender % accounts;
            let to = net.addr((from * 7 + 13) % accounts);
            next_sender += 1;
            txs.push(net.transfer(from, to, Amount(1_000 + from as u128), nonces[from]));
            nonces[from] += 1;
        }
        let timestamp_ms = net.state.meta().timestamp_ms + net.spec.params.max_block_interval_ms;
        let body = BlockBody { transactions: BoundedVec::try_from_vec(txs)?, ..Default::default() };
        let template = BlockTemplate { key: &net.keys[0], timestamp_ms, kind: BlockKind::Heartbeat, body };
        let (block, state, _) = build_block(&net.state, template).context("building a benchmark block")?;
        net.state = state;
        chain.push(block);
    }

    // Measured: full validation and application, one thread.
    let mut state = genesis_state;
    let start = Instant::now();
    for block in &chain {
        let (next, _) = apply_block(&state, block).context("applying a benchmark block")?;
        state = next;
    }
    let apply_s = start.elapsed().as_secs_f64();
    let txs = blocks * txs_per_block;

    // Raw batch verification of the same signatures, in the same batch sizes.
    let batches: Vec<Vec<SignatureItem>> = chain
        .iter()
        .map(|b| {
            b.body
                .transactions
                .iter()
                .map(|tx| SignatureItem {
                    signer: tx.sender,
                    message: SigTag::Transaction.message(&tx.id()),
                    signature: tx.signature,
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in &batches {
        verify_batch(batch).map_err(|i| anyhow::anyhow!("signature {i} failed in the benchmark"))?;
    }
    let verify_s = start.elapsed().as_secs_f64();

    let tx_per_s = txs as f64 / apply_s;
    let verify_batch_per_s = txs as f64 / verify_s;
    let line = serde_json::json!({
        "bench": "ledger",
        "blocks": blocks,
        "txs": txs,
        "txs_per_block": txs_per_block,
        "accounts": accounts,
        "tx_per_s": tx_per_s.round(),
        "verify_batch_per_s": verify_batch_per_s.round(),
        "ratio_to_verify": (tx_per_s / verify_batch_per_s * 1000.0).round() / 1000.0,
        "apply_s": (apply_s * 1000.0).round() / 1000.0,
        "state_root": state.root().to_string(),
        "tree_nodes": state.tree_nodes(),
    });
    println!("{line}");
    Ok(())
}
