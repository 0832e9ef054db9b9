//! `doin dispute`: turns the evidence `doin infer --check-with` wrote into a dispute on chain.
//! The two receipts of an answer disagree, so one server lied; this command settles which by
//! running the model itself — downloaded from a node (`GET /api/model/{artifact}`), checked
//! against the hash both receipts name — with the domain's deterministic forward pass, and
//! disputes the first row whose signed output differs from the model's (a federated job's
//! model runs through the job's forward pass; a plugin domain's through `--domain-plugin`) —
//! the receipt, the row
//! and its Merkle path: `DisputeInference`, locking the chain's `dispute_bond`). A quorum of
//! the domain's evaluators re-executes the row; `doin dispute status` follows it.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use doin_primitives::{Hash, InferenceDispute, InferenceReceipt, TxKind, answers_root, same_output};
use serde_json::{Value, json};

use crate::wallet::{get, http_raw, key_of, submit_tx_at};

/// `doin dispute …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Dispute {
    /// Disputes the wrong answers in an evidence file (`doin infer --evidence`).
    Send(SendArgs),
    /// A dispute's state on chain (pending with its quorum and votes, or its outcome).
    Status {
        /// The dispute id (printed by `send`).
        id: String,
        /// The node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8470")]
        node: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The evidence file.
    #[arg(long)]
    evidence: std::path::PathBuf,
    /// The disputer's key file (pays the fee and locks the bond).
    #[arg(long)]
    key: std::path::PathBuf,
    /// The node to download the model from and submit through.
    #[arg(long, default_value = "127.0.0.1:8470")]
    node: String,
    /// Dispute this row of the server's receipt without running the model here (when it cannot
    /// be downloaded): the bond is lost to the server if its answer was right.
    #[arg(long)]
    row: Option<usize>,
    /// Dispute every wrong answer in the evidence (each slashes the server again); by default
    /// the first.
    #[arg(long)]
    all: bool,
    /// The domain's plugin command, to run a plugin domain's model here (`domain_plugin` in a
    /// node config); built-in domains and federated jobs need none.
    #[arg(long)]
    domain_plugin: Option<String>,
}

/// The domain whose model the evidence names, to run here: a federated job's model (its layer
/// sizes from the node: `GET /api/job/{id}/model`), the plugin `plugin` names, or a built-in
/// domain.
fn domain_of(
    node: &str,
    domain: &str,
    plugin: Option<&str>,
) -> anyhow::Result<std::sync::Arc<dyn doin_optimize::domain::Domain>> {
    if let Some(cmd) = plugin {
        let config = doin_node::config::DomainConfig {
            domain_id: domain.to_owned(),
            domain_plugin: Some(cmd.to_owned()),
            ..Default::default()
        };
        return doin_node::domains::build(&config).map_err(anyhow::Error::msg);
    }
    if let Ok(job) = get(node, &format!("/api/job/{domain}/model"))
        && let Some(sizes) = job["sizes"].as_array()
    {
        let sizes: Vec<usize> = sizes.iter().filter_map(|v| v.as_u64().map(|n| n as usize)).collect();
        let model = doin_node::federated::serve::JobModel::new(domain, &sizes).map_err(anyhow::Error::msg)?;
        return Ok(std::sync::Arc::new(model));
    }
    let config = doin_node::config::DomainConfig { domain_id: domain.to_owned(), ..Default::default() };
    doin_node::domains::build(&config)
        .map_err(|e| anyhow::anyhow!("{e} (a plugin domain's model runs here with --domain-plugin CMD)"))
}

/// The first row of `outputs` that differs from the model's own `expected` (as `f32`, or beyond
/// the domain's `tolerance`).
fn first_wrong(outputs: &[Vec<f64>], expected: &[Vec<f64>], tolerance: f64) -> Option<usize> {
    (0..outputs.len()).find(|&i| !expected.get(i).is_some_and(|e| same_output(e, &outputs[i], tolerance)))
}

/// One disagreeing answer of the evidence: the receipt to dispute, with its inputs and outputs
/// (`row`: that row of the server's receipt, unchecked).
fn dispute_of(
    entry: &Value,
    node: &str,
    row: Option<usize>,
    plugin: Option<&str>,
) -> anyhow::Result<Option<(InferenceDispute, &'static str)>> {
    let inputs: Vec<Vec<f64>> =
        serde_json::from_value(entry["inputs"].clone()).context("evidence: inputs")?;
    let mut sides = Vec::new();
    for (r, o, who) in [("receipt", "outputs", "server"), ("checker_receipt", "checker_outputs", "checker")] {
        let receipt: InferenceReceipt =
            serde_json::from_value(entry[r].clone()).with_context(|| format!("evidence: {r}"))?;
        let outputs: Vec<Vec<f64>> =
            serde_json::from_value(entry[o].clone()).with_context(|| format!("evidence: {o}"))?;
        if !receipt.verify() || receipt.body.answers != answers_root(&inputs, &outputs) {
            bail!("evidence: the {who}'s receipt does not sign these inputs and outputs");
        }
        sides.push((receipt, outputs, who));
    }
    if let Some(row) = row {
        let (receipt, outputs, who) = sides.swap_remove(0);
        let d = InferenceDispute::new(receipt, &inputs, &outputs, row)
            .with_context(|| format!("the answer has no row {row} (or it is too wide)"))?;
        return Ok(Some((d, who)));
    }
    let body = &sides[0].0.body;
    if sides[1].0.body.artifact != body.artifact {
        bail!("evidence: the two receipts name different models; nothing to compare");
    }
    let (status, bytes) = http_raw(node, &format!("/api/model/{}", body.artifact))?;
    if status != 200 {
        bail!("{node} does not serve model {} (HTTP {status})", body.artifact);
    }
    if Hash::of_artifact(&bytes) != body.artifact {
        bail!("{node} sent other bytes than model {}", body.artifact);
    }
    let domain = domain_of(node, body.domain.as_str(), plugin)?;
    let expected =
        domain.infer(&bytes, &inputs).map_err(|e| anyhow::anyhow!("running the model: {e}"))?.outputs;
    for (receipt, outputs, who) in sides {
        if let Some(row) = first_wrong(&outputs, &expected, domain.inference_tolerance()) {
            let d = InferenceDispute::new(receipt, &inputs, &outputs, row)
                .context("the row is too wide for a dispute")?;
            return Ok(Some((d, who)));
        }
    }
    Ok(None)
}

pub(crate) fn run(d: Dispute) -> anyhow::Result<()> {
    match d {
        Dispute::Send(a) => {
            let key = key_of(&a.key)?;
            let evidence: Value = serde_json::from_slice(
                &std::fs::read(&a.evidence).with_context(|| format!("reading {}", a.evidence.display()))?,
            )
            .context("the evidence is not JSON")?;
            let entries = evidence["wrong"].as_array().context("evidence: no `wrong` answers")?;
            let mut sent = 0;
            for entry in entries {
                if sent > 0 && !a.all {
                    break;
                }
                match dispute_of(entry, &a.node, a.row, a.domain_plugin.as_deref())? {
                    Some((d, who)) => {
                        let (id, row, server) = (d.id(), d.row, d.receipt.body.server);
                        let kind = TxKind::DisputeInference { dispute: Box::new(d) };
                        let (tx, _) = submit_tx_at(&a.node, &key, kind, sent)?;
                        sent += 1;
                        println!(
                            "{}",
                            json!({ "dispute": id.to_string(), "tx": tx.to_string(), "server": server.to_string(), "lied": who, "row": row })
                        );
                    }
                    None => {
                        println!("{}", json!({ "dispute": null, "detail": "both answers match the model" }))
                    }
                }
            }
            if sent == 0 {
                bail!("nothing to dispute: every answer in the evidence matches the model");
            }
            Ok(())
        }
        Dispute::Status { id, node } => {
            let id: Hash = id.parse().map_err(|e| anyhow::anyhow!("dispute id: {e}"))?;
            println!("{}", get(&node, &format!("/disputes/{id}"))?);
            Ok(())
        }
    }
}
