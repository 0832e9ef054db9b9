//! `doin infer`: predictions from a domain's verified champion model, asked of one or more
//! nodes. Every answer's receipt is checked here: signed by the node, over exactly the rows
//! sent and the outputs received. With `--held-out` (built-in `mlp_digits`) the domain's
//! held-out rows are sent and the answers' accuracy is set beside the quality the quorum
//! measured for the model. With `--check-with NODE` a random fraction of the answers is
//! re-executed on another node: the built-in models are deterministic, so an answer whose
//! outputs differ from the same model's elsewhere is wrong, and the two signed receipts with
//! the inputs and both answers are the evidence (`--evidence FILE`), which `doin dispute send`
//! takes on chain. One JSON line per node.

use anyhow::{Context, bail};
use clap::Args;
use doin_primitives::{InferenceReceipt, answers_root};
use serde_json::{Value, json};

use crate::{
    channel::{Payer, header, parse_channel},
    wallet::http_with,
};

/// Rows per request (the node takes at most 64 KiB of inputs).
const BATCH: usize = 128;

#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    /// The nodes' HTTP addresses (comma-separated): each is asked.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8470")]
    node: Vec<String>,
    /// The domain.
    #[arg(long)]
    domain: String,
    /// Input rows as JSON: one row (`[1, 2, …]`) or rows (`[[…], […]]`).
    #[arg(long, conflicts_with = "held_out")]
    inputs: Option<String>,
    /// Send the domain's held-out rows (`mlp_digits`) and report the answers' accuracy.
    #[arg(long)]
    held_out: bool,
    /// Pay through this channel (each request adds the node's price to its total; the price
    /// comes from the node's `402`). With one node only.
    #[arg(long, requires = "key")]
    channel: Option<String>,
    /// The payer's key file (with `--channel`).
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// Re-execute a sampled fraction of the answers on this other node and compare: the models
    /// are deterministic, so an honest server's outputs match bit for bit.
    #[arg(long)]
    check_with: Option<String>,
    /// The fraction of answers re-executed (drawn from this machine's randomness, so a server
    /// cannot tell which answers will be checked).
    #[arg(long, default_value_t = 0.1)]
    check_fraction: f64,
    /// Where to write the evidence of wrong answers (both receipts, the inputs, both outputs):
    /// `doin dispute send --evidence FILE` disputes it on chain.
    #[arg(long)]
    evidence: Option<std::path::PathBuf>,
}

/// What re-executing one answer on another node showed.
enum Check {
    /// The same outputs.
    Agrees,
    /// The checker ran another model (the champion changed between the two requests).
    OtherModel,
    /// Other outputs from the same model: the server's answer is wrong.
    Disagrees(Value),
}

/// Re-executes `rows` on `checker` and compares with `answer`'s receipt.
fn check(checker: &str, domain: &str, rows: &[Vec<f64>], answer: &Answer) -> anyhow::Result<Check> {
    let again = ask(checker, domain, rows, &mut None)?;
    let (ours, theirs) = (&answer.body["receipt"], &again.body["receipt"]);
    if ours["artifact"] != theirs["artifact"] {
        return Ok(Check::OtherModel);
    }
    // The same inputs under both roots: equal roots are equal outputs, bit for bit.
    if ours["answers"] == theirs["answers"] {
        return Ok(Check::Agrees);
    }
    // A domain whose inference is not bit-deterministic (a plugin's declared
    // `inference_tolerance`; the smaller of the two nodes' word, so a server cannot widen it).
    let tolerance = |b: &Value| b["inference_tolerance"].as_f64().filter(|t| *t >= 0.0).unwrap_or(0.0);
    let tolerance = tolerance(&answer.body).min(tolerance(&again.body));
    if tolerance > 0.0
        && answer.outputs.len() == again.outputs.len()
        && answer
            .outputs
            .iter()
            .zip(&again.outputs)
            .all(|(a, b)| doin_primitives::same_output(a, b, tolerance))
    {
        return Ok(Check::Agrees);
    }
    Ok(Check::Disagrees(json!({
        "receipt": ours,
        "checker_receipt": theirs,
        "inputs": rows,
        "outputs": answer.outputs,
        "checker_outputs": again.outputs,
    })))
}

/// Pays requests through one channel.
pub(crate) struct Paying {
    payer: Payer,
    channel: doin_primitives::Hash,
    /// The node's price, once a `402` said it.
    price: Option<doin_primitives::Amount>,
    /// Base units paid by this run.
    spent: u128,
}

impl Paying {
    /// Pays through `channel` with `payer`'s updates (the price learnt from the first `402`).
    pub(crate) fn new(payer: Payer, channel: doin_primitives::Hash) -> Self {
        Self { payer, channel, price: None, spent: 0 }
    }
}

/// One answer, its receipt checked.
pub(crate) struct Answer {
    pub(crate) body: Value,
    outputs: Vec<Vec<f64>>,
    predictions: Option<Vec<i64>>,
}

pub(crate) fn ask(
    node: &str,
    domain: &str,
    rows: &[Vec<f64>],
    paying: &mut Option<Paying>,
) -> anyhow::Result<Answer> {
    let request = json!({ "domain_id": domain, "inputs": rows }).to_string();
    let (mut status, mut body) = match paying.as_mut() {
        Some(p) if p.price.is_some() => {
            let price = p.price.unwrap_or_default();
            let update = p.payer.pay(p.channel, price)?;
            p.spent += price.0;
            http_with(node, "POST", "/inference", Some(&request), &[("x-doin-payment", &header(&update))])?
        }
        _ => http_with(node, "POST", "/inference", Some(&request), &[])?,
    };
    // Unpaid, and the node charges: pay its price and ask again.
    if status == 402
        && body["error"] == "payment_required"
        && let Some(p) = paying.as_mut()
    {
        let price = doin_primitives::Amount(
            body["price"].as_str().and_then(|v| v.parse().ok()).context("a 402 without a price")?,
        );
        p.price = Some(price);
        let update = p.payer.pay(p.channel, price)?;
        p.spent += price.0;
        (status, body) =
            http_with(node, "POST", "/inference", Some(&request), &[("x-doin-payment", &header(&update))])?;
    }
    // Our record is behind what the payee holds (lost or restored from an old copy): go on from
    // the payee's best update, once.
    if status == 402
        && body["error"] == "stale_payment"
        && let (Some(p), Some(nonce), Some(total)) = (
            paying.as_mut(),
            body["held"]["nonce"].as_u64(),
            body["held"]["paid_total"].as_str().and_then(|t| t.parse::<u128>().ok()),
        )
        && p.payer.resume(p.channel, nonce, total)?
    {
        // The stale update was not charged.
        let price = p.price.unwrap_or_default();
        p.spent = p.spent.saturating_sub(price.0);
        let update = p.payer.pay(p.channel, price)?;
        p.spent += price.0;
        (status, body) =
            http_with(node, "POST", "/inference", Some(&request), &[("x-doin-payment", &header(&update))])?;
    }
    if status != 200 {
        bail!("{node}: HTTP {status}: {body}");
    }
    let outputs: Vec<Vec<f64>> =
        serde_json::from_value(body["outputs"].clone()).context("the answer has no outputs")?;
    let receipt: InferenceReceipt =
        serde_json::from_value(body["receipt"].clone()).context("the answer has no receipt")?;
    if !receipt.verify() {
        bail!("{node}: the receipt's signature does not verify");
    }
    if receipt.body.rows as usize != rows.len() || receipt.body.answers != answers_root(rows, &outputs) {
        bail!("{node}: the receipt is for other inputs or outputs than were sent and received");
    }
    if body["optimae"].as_str() != Some(receipt.body.optimae.to_string().as_str())
        || body["artifact"].as_str() != Some(receipt.body.artifact.to_string().as_str())
    {
        bail!("{node}: the receipt names another model than the answer");
    }
    let predictions = serde_json::from_value(body["predictions"].clone()).ok();
    Ok(Answer { body, outputs, predictions })
}

/// `--inputs` JSON as rows: one row (`[1, 2, …]`) or rows (`[[…], […]]`).
pub(crate) fn parse_rows(text: &str) -> anyhow::Result<Vec<Vec<f64>>> {
    let v: Value = serde_json::from_str(text).context("--inputs is not JSON")?;
    match serde_json::from_value::<Vec<Vec<f64>>>(v.clone()) {
        Ok(rows) => Ok(rows),
        Err(_) => {
            Ok(vec![serde_json::from_value::<Vec<f64>>(v).context("--inputs: a row or rows of numbers")?])
        }
    }
}

pub(crate) fn run(a: InferArgs) -> anyhow::Result<()> {
    let (rows, labels): (Vec<Vec<f64>>, Option<Vec<i64>>) = if a.held_out {
        if a.domain != doin_ml::MlpClassifier::ID {
            bail!("--held-out needs the built-in {} domain", doin_ml::MlpClassifier::ID);
        }
        let (rows, labels) = doin_ml::MlpClassifier::new(1).map_err(anyhow::Error::msg)?.held_out();
        (rows, Some(labels))
    } else {
        (parse_rows(a.inputs.as_deref().context("give --inputs JSON or --held-out")?)?, None)
    };
    let mut paying = match (&a.channel, &a.key) {
        (Some(c), Some(k)) => {
            if a.node.len() != 1 {
                bail!("--channel pays one node: give one --node");
            }
            Some(Paying::new(Payer::open(k)?, parse_channel(c)?))
        }
        _ => None,
    };
    if !(0.0..=1.0).contains(&a.check_fraction) {
        bail!("--check-fraction {} is not between 0 and 1", a.check_fraction);
    }
    let (mut failed, mut wrong_total) = (0, 0);
    for node in &a.node {
        let mut answers = Vec::new();
        let mut error = None;
        let (mut checked, mut other_model, mut wrong) = (0, 0, Vec::new());
        for batch in rows.chunks(BATCH) {
            match ask(node, &a.domain, batch, &mut paying) {
                Ok(answer) => {
                    if let Some(checker) = &a.check_with
                        && rand::random::<f64>() < a.check_fraction
                    {
                        match check(checker, &a.domain, batch, &answer) {
                            Ok(Check::Agrees) => checked += 1,
                            Ok(Check::OtherModel) => other_model += 1,
                            Ok(Check::Disagrees(evidence)) => {
                                checked += 1;
                                wrong.push(evidence);
                            }
                            Err(e) => eprintln!("re-execution on {checker} failed: {e}"),
                        }
                    }
                    answers.push(answer);
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = error {
            failed += 1;
            println!("{}", json!({ "node": node, "error": e }));
            continue;
        }
        let first = &answers[0].body;
        let same_model = answers.iter().all(|x| x.body["artifact"] == first["artifact"]);
        let predictions: Vec<i64> =
            answers.iter().flat_map(|x| x.predictions.clone().unwrap_or_default()).collect();
        let mut line = json!({
            "node": node,
            "domain_id": a.domain,
            "optimae": first["optimae"],
            "artifact": first["artifact"],
            "model_quality": first["model_quality"],
            "height": first["height"],
            "rows": rows.len(),
            "receipts_checked": answers.len(),
            "one_model": same_model,
        });
        if let Some(checker) = &a.check_with {
            line["checked"] = json!({ "with": checker, "answers": checked, "other_model": other_model, "wrong": wrong.len() });
            if !wrong.is_empty() {
                wrong_total += wrong.len();
                if let Some(path) = &a.evidence {
                    std::fs::write(
                        path,
                        serde_json::to_vec_pretty(&json!({ "server": node, "wrong": wrong }))?,
                    )?;
                }
            }
        }
        if let Some(p) = &paying {
            line["paid"] = json!({ "channel": p.channel.to_string(), "spent": p.spent.to_string(), "price": p.price.map(|x| x.0.to_string()) });
        }
        match &labels {
            Some(labels) => {
                let correct = predictions.iter().zip(labels).filter(|(p, y)| p == y).count();
                line["accuracy"] = json!(correct as f64 / labels.len().max(1) as f64);
            }
            None => {
                line["outputs"] = json!(answers.iter().flat_map(|x| x.outputs.clone()).collect::<Vec<_>>());
                if !predictions.is_empty() {
                    line["predictions"] = json!(predictions);
                }
            }
        }
        println!("{line}");
    }
    if failed > 0 {
        bail!("{failed} of {} nodes did not answer", a.node.len());
    }
    if wrong_total > 0 {
        bail!("{wrong_total} re-executed answers differ from what their server signed: wrong answers");
    }
    Ok(())
}
