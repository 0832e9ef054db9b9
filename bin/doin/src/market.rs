//! `doin market` and `doin task`: the resource marketplace from the command line
//! (`docs/design.md` §22e). A provider offers itself to a market node (signed with its node
//! key; the market then measures it with challenges); a client submits a job with its fee
//! (PoUW's `submit_task(task, fee)`), the market names the provider by its score, and the job
//! runs there — for inference, the request goes to the provider and its receipt is checked.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use doin_primitives::{BoundedString, BoundedVec, DomainId, Signed, market::MarketOfferBody};
use serde_json::json;

use crate::{
    channel::{Payer, parse_channel},
    infer::{Paying, ask, parse_rows},
    wallet::{get, http, http_with, key_of, parse_amount},
};

/// `doin market …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Market {
    /// Offers this node to a market: signed with the node key (which must be staked).
    Offer {
        /// The market node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8470")]
        node: String,
        /// This node's key file.
        #[arg(long)]
        key: std::path::PathBuf,
        /// This node's HTTP address, where the market sends challenges and clients send jobs.
        #[arg(long)]
        api: String,
        /// Price per job, DOIN.
        #[arg(long, default_value = "0")]
        price: String,
        /// Domains served (comma-separated).
        #[arg(long, value_delimiter = ',')]
        domains: Vec<String>,
    },
    /// The market's offers with what its challenges measured, and the latest matches.
    Status {
        /// The market node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8470")]
        node: String,
    },
}

/// `doin task …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Task {
    /// Submits a job with its fee: the market matches it to a provider, and it runs there.
    Submit(SubmitArgs),
    /// A matched task.
    Status {
        /// The task id.
        id: u64,
        /// The market node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8470")]
        node: String,
    },
    /// A hire's progress on the provider that took it (`--kind optimize`).
    Hire {
        /// The hire id.
        id: u64,
        /// The provider's HTTP address (the `api` the match named).
        #[arg(long)]
        node: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The market node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8470")]
    node: String,
    /// The job kind: `inference` (rows answered by the provider's model) or `optimize`
    /// (evaluations of the domain's search bought from a provider that optimizes it on hire).
    #[arg(long, default_value = "inference")]
    kind: String,
    /// The domain.
    #[arg(long)]
    domain: String,
    /// Input rows as JSON: one row or rows (`inference`).
    #[arg(long)]
    inputs: Option<String>,
    /// Evaluations to buy (`optimize`).
    #[arg(long, default_value_t = 0)]
    evaluations: u64,
    /// Most the job pays, DOIN (the provider's price must be within it).
    #[arg(long)]
    fee: String,
    /// Cores the provider must have been measured at.
    #[arg(long, default_value_t = 0.0)]
    min_cores: f64,
    /// Memory the provider must have proved, MiB.
    #[arg(long, default_value_t = 0)]
    min_mem_mb: u32,
    /// Match only: print the market's answer and run nothing.
    #[arg(long)]
    match_only: bool,
    /// Pay the provider through this channel (when it charges).
    #[arg(long, requires = "key")]
    channel: Option<String>,
    /// The payer's key file (with `--channel`).
    #[arg(long)]
    key: Option<std::path::PathBuf>,
}

pub(crate) fn market(m: Market) -> anyhow::Result<()> {
    match m {
        Market::Offer { node, key, api, price, domains } => {
            let key = key_of(&key)?;
            let domains: Vec<DomainId> = domains
                .iter()
                .map(|d| DomainId::new(d.as_str()).map_err(|e| anyhow::anyhow!("domain {d:?}: {e}")))
                .collect::<anyhow::Result<_>>()?;
            let body = MarketOfferBody {
                provider: key.address(),
                api: BoundedString::new(api.as_str()).map_err(|e| anyhow::anyhow!("--api: {e}"))?,
                price: parse_amount(&price)?,
                domains: BoundedVec::try_from_vec(domains).map_err(|e| anyhow::anyhow!("--domains: {e}"))?,
                issued_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            };
            let offer = Signed::sign(body, &key);
            let (status, v) =
                http(&node, "POST", "/api/market/offer", Some(&serde_json::to_string(&offer)?))?;
            if status != 200 {
                bail!("the market refused the offer (HTTP {status}): {v}");
            }
            println!("{v}");
            Ok(())
        }
        Market::Status { node } => {
            println!("{}", get(&node, "/api/market")?);
            Ok(())
        }
    }
}

pub(crate) fn task(t: Task) -> anyhow::Result<()> {
    match t {
        Task::Status { id, node } => {
            println!("{}", get(&node, &format!("/api/market/task/{id}"))?);
            Ok(())
        }
        Task::Hire { id, node } => {
            println!("{}", get(&node, &format!("/api/market/hire/{id}"))?);
            Ok(())
        }
        Task::Submit(a) => {
            let rows = match (a.kind.as_str(), &a.inputs) {
                ("inference", Some(inputs)) => parse_rows(inputs)?,
                ("inference", None) => bail!("--kind inference needs --inputs"),
                ("optimize", _) if a.evaluations == 0 => bail!("--kind optimize needs --evaluations N"),
                _ => Vec::new(),
            };
            let fee: f64 =
                a.fee.parse().with_context(|| format!("--fee {:?} is not a number of DOIN", a.fee))?;
            let mut request = json!({
                "kind": a.kind, "domain_id": a.domain, "fee": fee,
                "min_cores": a.min_cores, "min_mem_mb": a.min_mem_mb,
            });
            if a.kind == "optimize" {
                request["evaluations"] = a.evaluations.into();
            }
            let (status, matched) = http(&a.node, "POST", "/api/market/task", Some(&request.to_string()))?;
            if status != 200 {
                bail!("the market matched nothing (HTTP {status}): {matched}");
            }
            if a.match_only {
                println!("{matched}");
                return Ok(());
            }
            let api = matched["api"].as_str().context("the match names no api")?.to_owned();
            if a.kind == "optimize" {
                return hire(&a, &matched, &api);
            }
            let mut paying = match (&a.channel, &a.key) {
                (Some(c), Some(k)) => Some(Paying::new(Payer::open(k)?, parse_channel(c)?)),
                _ => None,
            };
            let answer = ask(&api, &a.domain, &rows, &mut paying)?;
            let provider = matched["provider"].as_str().unwrap_or_default();
            if answer.body["receipt"]["server"].as_str() != Some(provider) {
                bail!("{api} answered with another key than the provider matched ({provider})");
            }
            println!(
                "{}",
                json!({
                    "task": matched["task_id"], "provider": provider, "api": api, "score": matched["score"],
                    "optimae": answer.body["optimae"], "artifact": answer.body["artifact"],
                    "outputs": answer.body["outputs"], "predictions": answer.body["predictions"],
                    "receipt_checked": true,
                })
            );
            Ok(())
        }
    }
}

/// Buys `--evaluations` of the matched provider's search of the domain: its price read from the
/// provider (`GET /api/market/hire`), paid through `--channel` when it charges.
fn hire(a: &SubmitArgs, matched: &serde_json::Value, api: &str) -> anyhow::Result<()> {
    let on_hire = get(api, "/api/market/hire")?;
    let per = on_hire["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["domain_id"] == a.domain.as_str())
        .and_then(|d| d["price_per_evaluation"].as_str()?.parse::<u128>().ok())
        .with_context(|| format!("{api} does not optimize {} on hire", a.domain))?;
    let price =
        doin_primitives::Amount(per.checked_mul(u128::from(a.evaluations)).context("price overflows")?);
    // The market matched on the price its last check read; the provider may have raised it since.
    let fee = parse_amount(&a.fee)?;
    if price > fee {
        bail!(
            "{api} now asks {} base units for {} evaluations, over the fee ({} base units): nothing paid",
            price.0,
            a.evaluations,
            fee.0
        );
    }
    let body = json!({ "domain_id": a.domain, "evaluations": a.evaluations, "task_id": matched["task_id"] });
    let payment = if price.0 > 0 {
        let (Some(c), Some(k)) = (&a.channel, &a.key) else {
            bail!(
                "{api} charges {} base units for {} evaluations: pass --channel and --key",
                price.0,
                a.evaluations
            );
        };
        let update = Payer::open(k)?.pay(parse_channel(c)?, price)?;
        Some(crate::channel::header(&update))
    } else {
        None
    };
    let headers: Vec<(&str, &str)> = payment.iter().map(|h| ("x-doin-payment", h.as_str())).collect();
    let (status, taken) = http_with(api, "POST", "/api/market/hire", Some(&body.to_string()), &headers)?;
    if status != 200 {
        bail!("{api} refused the hire (HTTP {status}): {taken}");
    }
    println!(
        "{}",
        json!({
            "task": matched["task_id"], "provider": matched["provider"], "api": api, "score": matched["score"],
            "hire": taken,
        })
    );
    Ok(())
}
