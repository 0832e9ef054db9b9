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
    wallet::{get, http, key_of, parse_amount},
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
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The market node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8470")]
    node: String,
    /// The job kind (`inference`).
    #[arg(long, default_value = "inference")]
    kind: String,
    /// The domain.
    #[arg(long)]
    domain: String,
    /// Input rows as JSON: one row or rows.
    #[arg(long)]
    inputs: String,
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
        Task::Submit(a) => {
            let rows = parse_rows(&a.inputs)?;
            let fee: f64 =
                a.fee.parse().with_context(|| format!("--fee {:?} is not a number of DOIN", a.fee))?;
            let request = json!({
                "kind": a.kind, "domain_id": a.domain, "fee": fee,
                "min_cores": a.min_cores, "min_mem_mb": a.min_mem_mb,
            });
            let (status, matched) = http(&a.node, "POST", "/api/market/task", Some(&request.to_string()))?;
            if status != 200 {
                bail!("the market matched nothing (HTTP {status}): {matched}");
            }
            if a.match_only {
                println!("{matched}");
                return Ok(());
            }
            let api = matched["api"].as_str().context("the match names no api")?.to_owned();
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
